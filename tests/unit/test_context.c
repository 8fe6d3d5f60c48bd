/* Canonical encryption-context encoding: order, framing, limits, strict decode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kmsd/keyring/context.h"

#define P(k, v)                                                                                    \
    {                                                                                              \
        k, sizeof(k) - 1, v, sizeof(v) - 1                                                         \
    }

static void empty_context(void **state)
{
    (void)state;
    uint8_t out[16];
    size_t len = 0;
    assert_int_equal(kms_context_encode(NULL, out, sizeof(out), &len), KMS_OK);
    assert_int_equal(len, 4);
    assert_memory_equal(out, "\0\0\0\0", 4);
    kms_context c = {NULL, 0};
    assert_int_equal(kms_context_encode(&c, out, sizeof(out), &len), KMS_OK);
    assert_int_equal(len, 4);
}

static void known_answer(void **state)
{
    (void)state;
    /* Given out of order; encoded sorted by key bytes, a prefix first. */
    kms_context_pair pairs[] = {P("b", "2"), P("ab", ""), P("a", "xyz")};
    kms_context c = {pairs, 3};
    const uint8_t expect[] = {0, 0, 0, 3,                                   /* count */
                              0, 0, 0, 1, 'a', 0,   0, 0, 3, 'x', 'y', 'z', /* a=xyz */
                              0, 0, 0, 2, 'a', 'b', 0, 0, 0, 0,             /* ab= */
                              0, 0, 0, 1, 'b', 0,   0, 0, 1, '2'};          /* b=2 */
    uint8_t out[64];
    size_t len = 0;
    assert_int_equal(kms_context_encode(&c, out, sizeof(out), &len), KMS_OK);
    assert_int_equal(len, sizeof(expect));
    assert_memory_equal(out, expect, sizeof(expect));
}

static void order_of_input_does_not_matter(void **state)
{
    (void)state;
    kms_context_pair p1[] = {P("tenant", "acme"), P("bucket", "logs"), P("k", "v")};
    kms_context_pair p2[] = {P("k", "v"), P("tenant", "acme"), P("bucket", "logs")};
    kms_context c1 = {p1, 3}, c2 = {p2, 3};
    uint8_t o1[128], o2[128];
    size_t l1, l2;
    assert_int_equal(kms_context_encode(&c1, o1, sizeof(o1), &l1), KMS_OK);
    assert_int_equal(kms_context_encode(&c2, o2, sizeof(o2), &l2), KMS_OK);
    assert_int_equal(l1, l2);
    assert_memory_equal(o1, o2, l1);
}

static void framing_prevents_ambiguity(void **state)
{
    (void)state;
    /* "a"+"bc" and "ab"+"c" must not encode alike. */
    kms_context_pair p1[] = {P("a", "bc")}, p2[] = {P("ab", "c")};
    kms_context c1 = {p1, 1}, c2 = {p2, 1};
    uint8_t o1[64], o2[64];
    size_t l1, l2;
    assert_int_equal(kms_context_encode(&c1, o1, sizeof(o1), &l1), KMS_OK);
    assert_int_equal(kms_context_encode(&c2, o2, sizeof(o2), &l2), KMS_OK);
    assert_int_equal(l1, l2);
    assert_memory_not_equal(o1, o2, l1);
}

static void invalid_contexts_refused(void **state)
{
    (void)state;
    uint8_t out[KMS_CONTEXT_MAX_ENCODED];
    size_t len = 12345;
    kms_context_pair dup[] = {P("a", "1"), P("a", "2")};
    kms_context c = {dup, 2};
    assert_int_equal(kms_context_encode(&c, out, sizeof(out), &len), KMS_EINVAL);
    kms_context_pair empty_key[] = {{"", 0, "v", 1}};
    c = (kms_context){empty_key, 1};
    assert_int_equal(kms_context_encode(&c, out, sizeof(out), &len), KMS_EINVAL);
    static char longk[KMS_CONTEXT_MAX_KEY + 1], longv[KMS_CONTEXT_MAX_VALUE + 1];
    memset(longk, 'k', sizeof(longk));
    memset(longv, 'v', sizeof(longv));
    kms_context_pair lk[] = {{longk, sizeof(longk), "v", 1}};
    c = (kms_context){lk, 1};
    assert_int_equal(kms_context_encode(&c, out, sizeof(out), &len), KMS_EINVAL);
    kms_context_pair okk[] = {{longk, KMS_CONTEXT_MAX_KEY, longv, KMS_CONTEXT_MAX_VALUE}};
    c = (kms_context){okk, 1};
    assert_int_equal(kms_context_encode(&c, out, sizeof(out), &len), KMS_OK);
    kms_context_pair lv[] = {{"k", 1, longv, sizeof(longv)}};
    c = (kms_context){lv, 1};
    assert_int_equal(kms_context_encode(&c, out, sizeof(out), &len), KMS_EINVAL);
    kms_context_pair many[KMS_CONTEXT_MAX_PAIRS + 1];
    char names[KMS_CONTEXT_MAX_PAIRS + 1][4];
    for (int i = 0; i <= KMS_CONTEXT_MAX_PAIRS; i++) {
        names[i][0] = (char)('A' + i / 26);
        names[i][1] = (char)('a' + i % 26);
        many[i] = (kms_context_pair){names[i], 2, "", 0};
    }
    c = (kms_context){many, KMS_CONTEXT_MAX_PAIRS + 1};
    assert_int_equal(kms_context_encode(&c, out, sizeof(out), &len), KMS_EINVAL);
    c.count = KMS_CONTEXT_MAX_PAIRS;
    assert_int_equal(kms_context_encode(&c, out, sizeof(out), &len), KMS_OK);
    assert_int_equal(kms_context_encode(&c, out, 10, &len), KMS_ETOOBIG);
    c = (kms_context){NULL, 1};
    assert_int_equal(kms_context_encode(&c, out, sizeof(out), &len), KMS_EINVAL);
    /* A NUL byte in a key or value: "v\0x" is not a second spelling of "v". */
    kms_context_pair nul_value[] = {{"k", 1, "v\0x", 3}};
    c = (kms_context){nul_value, 1};
    assert_int_equal(kms_context_encode(&c, out, sizeof(out), &len), KMS_EINVAL);
    kms_context_pair nul_key[] = {{"k\0j", 3, "v", 1}};
    c = (kms_context){nul_key, 1};
    assert_int_equal(kms_context_encode(&c, out, sizeof(out), &len), KMS_EINVAL);
    /* ... nor does decode take one: {"k": "v\0x"} framed by hand. */
    static const uint8_t framed[] = {0, 0, 0, 1, 0, 0, 0, 1, 'k', 0, 0, 0, 3, 'v', 0, 'x'};
    assert_int_equal(kms_context_decode(framed, sizeof(framed), NULL, NULL), KMS_EINVAL);
}

static int count_pairs(void *ctx, const kms_context_pair *p)
{
    (void)p;
    (*(int *)ctx)++;
    return 0;
}

static void decode_is_strict(void **state)
{
    (void)state;
    kms_context_pair pairs[] = {P("a", "1"), P("b", "2")};
    kms_context c = {pairs, 2};
    uint8_t enc[64];
    size_t len;
    assert_int_equal(kms_context_encode(&c, enc, sizeof(enc), &len), KMS_OK);
    int n = 0;
    assert_int_equal(kms_context_decode(enc, len, count_pairs, &n), KMS_OK);
    assert_int_equal(n, 2);
    for (size_t cut = 0; cut < len; cut++)
        assert_int_equal(kms_context_decode(enc, cut, NULL, NULL), KMS_EINVAL);
    uint8_t trailing[65];
    memcpy(trailing, enc, len);
    trailing[len] = 0;
    assert_int_equal(kms_context_decode(trailing, len + 1, NULL, NULL), KMS_EINVAL);
    uint8_t swapped[64];
    memcpy(swapped, enc, len);
    swapped[8] = 'b'; /* first key now "b": order b, b -> not ascending */
    assert_int_equal(kms_context_decode(swapped, len, NULL, NULL), KMS_EINVAL);
    uint8_t huge[8] = {0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(kms_context_decode(huge, sizeof(huge), NULL, NULL), KMS_EINVAL);
    uint8_t many[4] = {0, 0, 1, 0};
    assert_int_equal(kms_context_decode(many, sizeof(many), NULL, NULL), KMS_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(empty_context),
        cmocka_unit_test(known_answer),
        cmocka_unit_test(order_of_input_does_not_matter),
        cmocka_unit_test(framing_prevents_ambiguity),
        cmocka_unit_test(invalid_contexts_refused),
        cmocka_unit_test(decode_is_strict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
