/* Secret memory: locked, undumpable, wiped on free. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/secret.h"

/* Reads this process's smaps entry for addr and reports whether the
 * mapping is locked and marked "dd" (do not dump). */
static void mapping_flags(const void *addr, int *locked, int *dontdump)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    assert_non_null(f);
    char line[512];
    int in = 0;
    *locked = *dontdump = 0;
    uintptr_t a = (uintptr_t)addr;
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        char *dash = strchr(line, '-');
        if (dash && line[0] != ' ' && strchr(line, ':') > dash) {
            char *end;
            lo = strtoul(line, &end, 16);
            if (end == dash) {
                hi = strtoul(dash + 1, &end, 16);
                in = a >= lo && a < hi;
                continue;
            }
        }
        if (!in)
            continue;
        if (strncmp(line, "Locked:", 7) == 0)
            *locked = strtoul(line + 7, NULL, 10) > 0;
        if (strncmp(line, "VmFlags:", 8) == 0)
            *dontdump = strstr(line, " dd") != NULL;
    }
    fclose(f);
}

static void new_is_zeroed_locked_and_undumpable(void **state)
{
    (void)state;
    kms_secret *s = NULL;
    assert_int_equal(kms_secret_new(32, &s), KMS_OK);
    assert_int_equal(s->len, 32);
    for (size_t i = 0; i < 32; i++)
        assert_int_equal(s->data[i], 0);
    int locked, dd;
    mapping_flags(s->data, &locked, &dd);
    assert_true(locked);
    assert_true(dd);
    kms_secret_free(s);
}

static void large_secret_spans_pages(void **state)
{
    (void)state;
    kms_secret *s = NULL;
    assert_int_equal(kms_secret_new(3 * 4096 + 1, &s), KMS_OK);
    memset(s->data, 0xAB, s->len);
    int locked, dd;
    mapping_flags(s->data + 3 * 4096, &locked, &dd);
    assert_true(locked);
    assert_true(dd);
    kms_secret_free(s);
}

static void free_wipes_before_reuse(void **state)
{
    (void)state;
    kms_secret *s = NULL;
    assert_int_equal(kms_secret_new(64, &s), KMS_OK);
    uint8_t *p = s->data;
    memset(p, 0x5A, 64);
    kms_secret_free(s);
    /* The page went to the per-thread cache, still mapped: it must be wiped. */
    for (size_t i = 0; i < 64; i++)
        assert_int_equal(p[i], 0);
    kms_secret *t = NULL;
    assert_int_equal(kms_secret_new(64, &t), KMS_OK);
    assert_ptr_equal(t->data, p); /* reused from the cache */
    for (size_t i = 0; i < 64; i++)
        assert_int_equal(t->data[i], 0);
    kms_secret_free(t);
}

static void truncate_wipes_the_tail(void **state)
{
    (void)state;
    kms_secret *s = NULL;
    assert_int_equal(kms_secret_new(32, &s), KMS_OK);
    memset(s->data, 0x77, 32);
    kms_secret_truncate(s, 16);
    assert_int_equal(s->len, 16);
    for (size_t i = 16; i < 32; i++)
        assert_int_equal(s->data[i], 0);
    assert_int_equal(s->data[15], 0x77);
    kms_secret_free(s);
}

static void random_differs(void **state)
{
    (void)state;
    kms_secret *a = NULL, *b = NULL;
    assert_int_equal(kms_secret_random(32, &a), KMS_OK);
    assert_int_equal(kms_secret_random(32, &b), KMS_OK);
    assert_memory_not_equal(a->data, b->data, 32);
    kms_secret_free(a);
    kms_secret_free(b);
}

static void bad_lengths_refused(void **state)
{
    (void)state;
    kms_secret *s = (kms_secret *)0x1;
    assert_int_equal(kms_secret_new(0, &s), KMS_EINVAL);
    assert_int_equal(kms_secret_new(KMS_SECRET_MAX + 1, &s), KMS_EINVAL);
    assert_ptr_equal(s, (kms_secret *)0x1); /* untouched on failure */
    kms_secret_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(new_is_zeroed_locked_and_undumpable),
        cmocka_unit_test(large_secret_spans_pages),
        cmocka_unit_test(free_wipes_before_reuse),
        cmocka_unit_test(truncate_wipes_the_tail),
        cmocka_unit_test(random_differs),
        cmocka_unit_test(bad_lengths_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
