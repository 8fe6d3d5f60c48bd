/* The time kmsd acts on: real time, or (tests only) a time read from a
 * file, so that expiry, scheduled deletion and periodic rotation are tested
 * by moving a clock instead of sleeping. */
#ifndef KMS_CLOCK_H
#define KMS_CLOCK_H

#include <stdint.h>

typedef struct kms_clock {
    const char *file; /* NULL: real time; else a file holding unix seconds */
} kms_clock;

/* Unix seconds. A test clock file that cannot be read or parsed falls back
 * to real time (and says so in the log). c may be NULL (real time). */
int64_t kms_clock_now(const kms_clock *c);

#endif
