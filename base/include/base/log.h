/* Server log: one line per event to stderr. Never pass key material. */
#ifndef KMS_LOG_H
#define KMS_LOG_H

#include "kms/error.h"

typedef enum kms_log_level {
    KMS_LOG_DEBUG = 0,
    KMS_LOG_INFO = 1,
    KMS_LOG_WARN = 2,
    KMS_LOG_ERROR = 3
} kms_log_level;

void kms_log_set_level(kms_log_level level);
void kms_log(kms_log_level level, const char *fmt, ...) KMS_PRINTF(2, 3);

#define kms_log_debug(...) kms_log(KMS_LOG_DEBUG, __VA_ARGS__)
#define kms_log_info(...) kms_log(KMS_LOG_INFO, __VA_ARGS__)
#define kms_log_warn(...) kms_log(KMS_LOG_WARN, __VA_ARGS__)
#define kms_log_error(...) kms_log(KMS_LOG_ERROR, __VA_ARGS__)

#endif
