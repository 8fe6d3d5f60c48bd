/* kmsd's clock (clock.h). */
#include "base/clock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "base/log.h"

int64_t kms_clock_now(const kms_clock *c)
{
    if (c == NULL || c->file == NULL)
        return (int64_t)time(NULL);
    char buf[32] = "";
    FILE *f = fopen(c->file, "r");
    size_t n = f != NULL ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f != NULL)
        fclose(f);
    buf[n] = '\0';
    char *end = NULL;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (n == 0 || errno != 0 || end == buf || (*end != '\0' && *end != '\n') || v < 0) {
        kms_log_warn("test clock %s unreadable: using real time", c->file);
        return (int64_t)time(NULL);
    }
    return (int64_t)v;
}
