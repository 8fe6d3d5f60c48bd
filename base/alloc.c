/* The allocation entry point (base/alloc.h). */
#include "base/alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"

/* Countdown to the failing allocation (0: unarmed), and whether it fired. */
static _Thread_local unsigned long countdown;
static _Thread_local int fired;
static _Thread_local unsigned long armed_n;
static char control[512];

/* 1 if this allocation is the one the test asked to fail. */
static int fail_now(void)
{
    if (countdown == 0)
        return 0;
    if (--countdown != 0)
        return 0;
    fired = 1;
    errno = ENOMEM;
    return 1;
}

void *kms_malloc(size_t n)
{
    return fail_now() ? NULL : malloc(n);
}

void *kms_calloc(size_t n, size_t size)
{
    return fail_now() ? NULL : calloc(n, size);
}

void *kms_realloc(void *p, size_t n)
{
    return fail_now() ? NULL : realloc(p, n);
}

void *kms_reallocarray(void *p, size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size) {
        errno = ENOMEM;
        return NULL;
    }
    return kms_realloc(p, n * size);
}

void kms_free(void *p)
{
    free(p);
}

void kms_alloc_test_fail_nth(unsigned long n)
{
    countdown = n;
    armed_n = n;
    fired = 0;
}

int kms_alloc_test_fired(void)
{
    return fired;
}

void kms_alloc_test_control(const char *path)
{
    snprintf(control, sizeof(control), "%s", path != NULL ? path : "");
}

void kms_alloc_request_begin(void)
{
    if (control[0] == '\0')
        return;
    char buf[32];
    int fd = open(control, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return;
    ssize_t got = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (unlink(control) != 0 || got <= 0)
        return;
    buf[got] = '\0';
    char *end = NULL;
    unsigned long n = strtoul(buf, &end, 10);
    if (end == buf || n == 0)
        return;
    kms_log_debug("TEST allocation failure armed: allocation %lu of this request fails", n);
    kms_alloc_test_fail_nth(n);
}

void kms_alloc_request_end(void)
{
    if (control[0] == '\0' || armed_n == 0)
        return;
    char path[600], tmp[610], line[64];
    snprintf(path, sizeof(path), "%s.result", control);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int len = snprintf(line, sizeof(line), "%lu %s\n", armed_n, fired ? "fired" : "unfired");
    kms_alloc_test_fail_nth(0);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return;
    int ok = write(fd, line, (size_t)len) == len;
    close(fd);
    if (ok)
        (void)rename(tmp, path);
}
