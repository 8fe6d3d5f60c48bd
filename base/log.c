#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static volatile int min_level = KMS_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void kms_log_set_level(kms_log_level level)
{
    min_level = (int)level;
}

void kms_log(kms_log_level level, const char *fmt, ...)
{
    if ((int)level < min_level || (int)level < 0 || (int)level > KMS_LOG_ERROR)
        return;
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line),
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ kmsd %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_names[level]);
    if (n < 0 || (size_t)n >= sizeof(line))
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    /* One fputs per line so concurrent lines do not interleave. */
    fprintf(stderr, "%s\n", line);
}
