/* The approval digest: known answers computed with the shell recipe of
 * docs/approvals.md (printf, cat, openssl dgst, xxd), and every input
 * shown to matter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/approval.h"

static const uint8_t instance[16] = {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
                                     0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f};
static const uint8_t action_id[16] = {0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
                                      0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f};
static const uint8_t body[] = {0x0a, 0x03, 'a', 'b', 'c'};
#define EXPIRES 1767225600 /* 2026-01-01T00:00:00Z */

static void hex(const char *s, uint8_t out[32])
{
    for (size_t i = 0; i < 32; i++) {
        unsigned v = 0;
        for (int j = 0; j < 2; j++) {
            char ch = s[2 * i + (size_t)j];
            v = v << 4 | (unsigned)(ch <= '9' ? ch - '0' : ch - 'a' + 10);
        }
        out[i] = (uint8_t)v;
    }
}

/* { printf 'kms.v1.approval\0'; cat instance.bin id.bin;
 *   openssl dgst -sha256 -binary action.bin;
 *   printf '%016x' 1767225600 | xxd -r -p; } | openssl dgst -sha256 */
static void known_answer(void **state)
{
    (void)state;
    uint8_t want[32], got[32];
    hex("f191941ab6b86fd3875863a2cf1450b8be3cb18d0c020dccf4a55feb5f1bfbf3", want);
    assert_int_equal(kms_approval_digest(instance, action_id, body, sizeof(body), EXPIRES, got),
                     KMS_OK);
    assert_memory_equal(got, want, 32);
}

/* Empty action bytes, all-ones instance id, zero action id, the largest
 * expiry: the edges of every field. */
static void known_answer_edges(void **state)
{
    (void)state;
    uint8_t ones[16], zeros[16], want[32], got[32];
    memset(ones, 0xff, sizeof(ones));
    memset(zeros, 0, sizeof(zeros));
    hex("f055deb360f6c7b4b0290301f9ebf5a1e808496bf8c761c74c01b5b2f8a8cc07", want);
    assert_int_equal(kms_approval_digest(ones, zeros, NULL, 0, INT64_MAX, got), KMS_OK);
    assert_memory_equal(got, want, 32);
}

/* Changing any one input changes the digest. */
static void every_input_is_bound(void **state)
{
    (void)state;
    uint8_t base[32], d[32], inst2[16], id2[16], body2[sizeof(body)];
    assert_int_equal(kms_approval_digest(instance, action_id, body, sizeof(body), EXPIRES, base),
                     KMS_OK);
    memcpy(inst2, instance, 16);
    inst2[15] ^= 1;
    assert_int_equal(kms_approval_digest(inst2, action_id, body, sizeof(body), EXPIRES, d), KMS_OK);
    assert_memory_not_equal(d, base, 32);
    memcpy(id2, action_id, 16);
    id2[0] ^= 0x80;
    assert_int_equal(kms_approval_digest(instance, id2, body, sizeof(body), EXPIRES, d), KMS_OK);
    assert_memory_not_equal(d, base, 32);
    memcpy(body2, body, sizeof(body));
    body2[4] = 'd';
    assert_int_equal(kms_approval_digest(instance, action_id, body2, sizeof(body2), EXPIRES, d),
                     KMS_OK);
    assert_memory_not_equal(d, base, 32);
    assert_int_equal(kms_approval_digest(instance, action_id, body, sizeof(body) - 1, EXPIRES, d),
                     KMS_OK);
    assert_memory_not_equal(d, base, 32);
    assert_int_equal(kms_approval_digest(instance, action_id, body, sizeof(body), EXPIRES + 1, d),
                     KMS_OK);
    assert_memory_not_equal(d, base, 32);
}

static void refuses_missing_input_and_leaves_out_alone(void **state)
{
    (void)state;
    uint8_t d[32];
    memset(d, 0xAA, sizeof(d));
    assert_int_equal(kms_approval_digest(NULL, action_id, body, sizeof(body), EXPIRES, d),
                     KMS_EINVAL);
    assert_int_equal(kms_approval_digest(instance, NULL, body, sizeof(body), EXPIRES, d),
                     KMS_EINVAL);
    assert_int_equal(kms_approval_digest(instance, action_id, NULL, 1, EXPIRES, d), KMS_EINVAL);
    assert_int_equal(kms_approval_digest(instance, action_id, body, sizeof(body), EXPIRES, NULL),
                     KMS_EINVAL);
    for (size_t i = 0; i < sizeof(d); i++)
        assert_int_equal(d[i], 0xAA);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(known_answer),
        cmocka_unit_test(known_answer_edges),
        cmocka_unit_test(every_input_is_bound),
        cmocka_unit_test(refuses_missing_input_and_leaves_out_alone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
