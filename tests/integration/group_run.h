/* Runs a cmocka group and counts a failing group setup or teardown.
 *
 * cmocka 1.1 prints "[  ERROR   ] tests" when a group fixture fails an
 * assertion, but cmocka_run_group_tests still returns 0 when every test
 * passed: a teardown that checks kmsd's clean exit (exit status 0, no
 * sanitizer report) would fail without failing the program. Integration
 * tests call KMS_RUN_GROUP instead; it fails unless both fixtures returned
 * 0. Header only: each test is its own program. */
#ifndef KMS_TEST_GROUP_RUN_H
#define KMS_TEST_GROUP_RUN_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

static CMFixtureFunction kms_group_setup_fn, kms_group_teardown_fn;
static int kms_group_setup_ok, kms_group_teardown_ok;

static inline int kms_group_setup(void **state)
{
    int r = kms_group_setup_fn != NULL ? kms_group_setup_fn(state) : 0;
    kms_group_setup_ok = r == 0;
    return r;
}

static inline int kms_group_teardown(void **state)
{
    int r = kms_group_teardown_fn != NULL ? kms_group_teardown_fn(state) : 0;
    kms_group_teardown_ok = r == 0;
    return r;
}

static inline int kms_run_group(const char *name, const struct CMUnitTest *tests, size_t n,
                                CMFixtureFunction setup, CMFixtureFunction teardown)
{
    kms_group_setup_fn = setup;
    kms_group_teardown_fn = teardown;
    int failed = _cmocka_run_group_tests(name, tests, n, kms_group_setup, kms_group_teardown);
    if (!kms_group_setup_ok || !kms_group_teardown_ok) {
        fprintf(stderr, "group %s failed (see the error above)\n",
                kms_group_setup_ok ? "teardown" : "setup");
        failed++;
    }
    return failed;
}

#define KMS_RUN_GROUP(tests, setup, teardown)                                                      \
    kms_run_group(#tests, tests, sizeof(tests) / sizeof((tests)[0]), setup, teardown)

#endif
