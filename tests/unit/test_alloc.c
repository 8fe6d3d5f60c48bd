/* The allocation entry point (base/alloc.h): the Nth allocation of the
 * arming thread fails and no other; the control-file hook arms one request
 * and reports whether its failure fired; the wiping protobuf-c allocator's
 * freed blocks hold no byte of a request that carried a key (the
 * quarantine hook keeps them so the test can look; the same check runs
 * inside a real kmsd in test_secret_hygiene).
 *
 * Shown able to fail: with fail_now() in base/alloc.c returning 0 always,
 * the first five cases fail (the allocation meant to fail succeeded); with
 * the OPENSSL_cleanse removed from kms_pb_wiping_free,
 * freed_request_blocks_hold_no_key finds the key in 2 freed blocks.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "base/pb_alloc.h"
#include "base/secret.h"
#include "kms/v1/kms.pb-c.h"
#include "test_util.h"

static void nth_allocation_fails(void **state)
{
    (void)state;
    for (unsigned long n = 1; n <= 4; n++) {
        kms_alloc_test_fail_nth(n);
        void *p[4] = {NULL, NULL, NULL, NULL};
        for (unsigned long i = 1; i <= 4; i++) {
            p[i - 1] = i % 2 ? kms_malloc(16) : kms_calloc(2, 8);
            if (i == n)
                assert_null(p[i - 1]);
            else
                assert_non_null(p[i - 1]);
            assert_int_equal(kms_alloc_test_fired(), i >= n);
        }
        for (int i = 0; i < 4; i++)
            kms_free(p[i]);
    }
    /* once fired, unarmed: later allocations succeed */
    void *q = kms_malloc(8);
    assert_non_null(q);
    kms_free(q);
    kms_alloc_test_fail_nth(0);
    assert_int_equal(kms_alloc_test_fired(), 0);
}

static void realloc_failure_keeps_the_block(void **state)
{
    (void)state;
    char *p = kms_malloc(4);
    assert_non_null(p);
    memcpy(p, "abc", 4);
    kms_alloc_test_fail_nth(1);
    assert_null(kms_realloc(p, 64));
    assert_string_equal(p, "abc");
    assert_null(kms_reallocarray(p, SIZE_MAX / 2, 4)); /* overflow, not counted */
    char *q = kms_reallocarray(p, 16, 4);
    assert_non_null(q);
    kms_free(q);
    kms_free(NULL);
}

static void *other_thread(void *arg)
{
    void **out = arg;
    *out = kms_malloc(32); /* not armed on this thread */
    return NULL;
}

static void other_threads_are_not_affected(void **state)
{
    (void)state;
    kms_alloc_test_fail_nth(1);
    void *theirs = NULL;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, other_thread, &theirs), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_non_null(theirs);
    kms_free(theirs);
    assert_null(kms_malloc(32)); /* still armed here */
    kms_alloc_test_fail_nth(0);
}

/* kms_secret's bookkeeping goes through the entry point too: a failure
 * there is a clean KMS_ENOMEM, nothing allocated. */
static void secret_allocation_fails_cleanly(void **state)
{
    (void)state;
    kms_secret *s = NULL;
    kms_alloc_test_fail_nth(1);
    assert_int_equal(kms_secret_new(32, &s), KMS_ENOMEM);
    assert_null(s);
    assert_int_equal(kms_secret_new(32, &s), KMS_OK);
    kms_secret_free(s);
    kms_alloc_test_fail_nth(0);
}

static void control_file_arms_one_request(void **state)
{
    (void)state;
    char dir[256], ctl[320], result[400], buf[64];
    kms_test_tmpdir("alloc", dir, sizeof(dir));
    kms_test_path(ctl, sizeof(ctl), dir, "ctl");
    snprintf(result, sizeof(result), "%s.result", ctl);
    kms_alloc_test_control(ctl);
    kms_alloc_test_fail_nth(0);

    /* no file: nothing armed, no result */
    kms_alloc_request_begin();
    void *p = kms_malloc(8);
    assert_non_null(p);
    kms_free(p);
    kms_alloc_request_end();
    struct stat st;
    assert_int_not_equal(stat(result, &st), 0);

    /* "2": the second allocation of this request fails, reported fired;
     * the file is consumed */
    kms_test_write_file(ctl, "2\n", 0600);
    kms_alloc_request_begin();
    assert_int_not_equal(stat(ctl, &st), 0);
    void *a = kms_malloc(8), *b = kms_malloc(8);
    assert_non_null(a);
    assert_null(b);
    kms_free(a);
    kms_alloc_request_end();
    kms_test_read_file(result, buf, sizeof(buf));
    assert_string_equal(buf, "2 fired\n");

    /* "5" in a request of one allocation: unfired, and disarmed after */
    kms_test_write_file(ctl, "5", 0600);
    kms_alloc_request_begin();
    a = kms_malloc(8);
    assert_non_null(a);
    kms_free(a);
    kms_alloc_request_end();
    kms_test_read_file(result, buf, sizeof(buf));
    assert_string_equal(buf, "5 unfired\n");
    for (int i = 0; i < 8; i++) {
        a = kms_malloc(8);
        assert_non_null(a);
        kms_free(a);
    }

    /* garbage arms nothing */
    kms_test_write_file(ctl, "x", 0600);
    kms_alloc_request_begin();
    a = kms_malloc(8);
    assert_non_null(a);
    kms_free(a);
    kms_alloc_request_end();
    kms_test_read_file(result, buf, sizeof(buf));
    assert_string_equal(buf, "5 unfired\n"); /* not rewritten */

    kms_alloc_test_control(NULL);
    kms_test_rmtree(dir);
}

/* An Encrypt request carrying a data key, unpacked and freed through the
 * wiping allocator as kmsd's RPC wrapper does: none of the freed blocks
 * still holds the key, while the same scan finds it in a live block. */
static void freed_request_blocks_hold_no_key(void **state)
{
    (void)state;
    uint8_t key[32];
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (uint8_t)(0xA0 ^ (i * 7));
    Kms__V1__EncryptRequest req = KMS__V1__ENCRYPT_REQUEST__INIT;
    req.key_name = "demo";
    req.plaintext.data = key;
    req.plaintext.len = sizeof(key);
    uint8_t wire[128];
    size_t n = kms__v1__encrypt_request__pack(&req, wire);

    kms_pb_wiping_test_quarantine(1);
    ProtobufCAllocator *a = kms_pb_wiping_allocator();
    Kms__V1__EncryptRequest *m = kms__v1__encrypt_request__unpack(a, n, wire);
    assert_non_null(m);
    assert_memory_equal(m->plaintext.data, key, sizeof(key));
    /* a packed copy in a wiping block, as a reply body would be */
    uint8_t *copy = kms_pb_wiping_alloc(n);
    assert_non_null(copy);
    memcpy(copy, wire, n);
    kms__v1__encrypt_request__free_unpacked(m, a);
    kms_pb_wiping_free(copy);
    size_t blocks = 0;
    assert_int_equal(kms_pb_wiping_test_scan(key, sizeof(key), &blocks), 0);
    assert_true(blocks >= 2); /* the scan looked at the freed blocks */
    kms_pb_wiping_test_quarantine(0);
    assert_int_equal(kms_pb_wiping_test_scan(key, sizeof(key), &blocks), 0);
    assert_int_equal(blocks, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nth_allocation_fails),
        cmocka_unit_test(realloc_failure_keeps_the_block),
        cmocka_unit_test(other_threads_are_not_affected),
        cmocka_unit_test(secret_allocation_fails_cleanly),
        cmocka_unit_test(control_file_arms_one_request),
        cmocka_unit_test(freed_request_blocks_hold_no_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
