/* The ciphertext blob parser and writer, with every negative path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kmsd/keyring/blob.h"

static const uint8_t key_id[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/* Builds a valid blob with ct_len ciphertext bytes. */
static size_t make_blob(uint8_t *out, size_t cap, uint32_t version, size_t ct_len)
{
    uint8_t header[KMS_BLOB_AAD_HEADER_LEN], iv[12], tag[16], ct[KMS_BLOB_MAX_PLAINTEXT];
    memset(iv, 0xA1, sizeof(iv));
    memset(tag, 0xB2, sizeof(tag));
    memset(ct, 0xC3, sizeof(ct));
    kms_blob_aad_header(key_id, version, KMS_BLOB_ALG_AES256_GCM, header);
    size_t len = 0;
    assert_int_equal(kms_blob_write(header, iv, ct, ct_len, tag, out, cap, &len), KMS_OK);
    return len;
}

static void layout_is_as_documented(void **state)
{
    (void)state;
    uint8_t b[KMS_BLOB_MAX];
    size_t len = make_blob(b, sizeof(b), 0x01020304, 32);
    assert_int_equal(len, 1 + 16 + 4 + 1 + 12 + 32 + 16);
    assert_int_equal(b[0], 0x01);
    assert_memory_equal(b + 1, key_id, 16);
    assert_int_equal(b[17], 1);
    assert_int_equal(b[18], 2);
    assert_int_equal(b[19], 3);
    assert_int_equal(b[20], 4);
    assert_int_equal(b[21], KMS_BLOB_ALG_AES256_GCM);
    assert_int_equal(b[22], 0xA1);
    assert_int_equal(b[34], 0xC3);
    assert_int_equal(b[len - 1], 0xB2);
}

static void parse_round_trip(void **state)
{
    (void)state;
    uint8_t b[KMS_BLOB_MAX];
    for (size_t n = 1; n <= KMS_BLOB_MAX_PLAINTEXT; n = n < 64 ? n + 1 : n * 2) {
        size_t len = make_blob(b, sizeof(b), 7, n);
        kms_blob_view v;
        assert_int_equal(kms_blob_parse(b, len, &v), KMS_OK);
        assert_int_equal(v.format, KMS_BLOB_FORMAT_V1);
        assert_memory_equal(v.key_id, key_id, 16);
        assert_int_equal(v.key_version, 7);
        assert_int_equal(v.ciphertext_len, n);
        assert_ptr_equal(v.ciphertext, b + KMS_BLOB_HEADER_LEN);
        assert_ptr_equal(v.tag, b + len - 16);
        assert_ptr_equal(v.aad_header, b);
    }
}

static void every_truncation_is_refused(void **state)
{
    (void)state;
    uint8_t b[KMS_BLOB_MAX];
    size_t len = make_blob(b, sizeof(b), 1, 1); /* the shortest valid blob */
    kms_blob_view v;
    memset(&v, 0x5C, sizeof(v));
    kms_blob_view before = v;
    for (size_t n = 0; n < len; n++) {
        assert_int_equal(kms_blob_parse(b, n, &v), KMS_EBADBLOB);
        assert_memory_equal(&v, &before, sizeof(v)); /* out untouched */
    }
    assert_int_equal(kms_blob_parse(b, len, &v), KMS_OK);
}

static void oversized_is_refused(void **state)
{
    (void)state;
    static uint8_t b[KMS_BLOB_MAX + 64];
    size_t len = make_blob(b, sizeof(b), 1, KMS_BLOB_MAX_PLAINTEXT);
    kms_blob_view v;
    assert_int_equal(kms_blob_parse(b, len, &v), KMS_OK);
    assert_int_equal(kms_blob_parse(b, len + 1, &v), KMS_EBADBLOB);
    assert_int_equal(kms_blob_parse(b, SIZE_MAX, &v), KMS_EBADBLOB);
}

static void bad_header_fields_refused(void **state)
{
    (void)state;
    uint8_t b[KMS_BLOB_MAX];
    size_t len = make_blob(b, sizeof(b), 1, 16);
    kms_blob_view v;
    for (int f = 0; f < 256; f++) {
        b[0] = (uint8_t)f;
        assert_int_equal(kms_blob_parse(b, len, &v), f == 1 ? KMS_OK : KMS_EBADBLOB);
    }
    b[0] = 1;
    for (int a = 0; a < 256; a++) {
        b[21] = (uint8_t)a;
        assert_int_equal(kms_blob_parse(b, len, &v),
                         a == KMS_BLOB_ALG_AES256_GCM ? KMS_OK : KMS_EBADBLOB);
    }
    b[21] = KMS_BLOB_ALG_AES256_GCM;
    memset(b + 17, 0, 4); /* version 0 */
    assert_int_equal(kms_blob_parse(b, len, &v), KMS_EBADBLOB);
    assert_int_equal(kms_blob_parse(NULL, len, &v), KMS_EBADBLOB);
    assert_int_equal(kms_blob_parse(b, len, NULL), KMS_EBADBLOB);
}

static void write_refuses_bad_sizes(void **state)
{
    (void)state;
    uint8_t header[KMS_BLOB_AAD_HEADER_LEN] = {0}, iv[12] = {0}, tag[16] = {0}, ct[8] = {0};
    uint8_t out[64];
    size_t len = 99;
    assert_int_equal(kms_blob_write(header, iv, ct, 0, tag, out, sizeof(out), &len), KMS_ETOOBIG);
    assert_int_equal(kms_blob_write(header, iv, ct, 8, tag, out, KMS_BLOB_OVERHEAD + 7, &len),
                     KMS_ETOOBIG);
    assert_int_equal(len, 99);
    assert_int_equal(
        kms_blob_write(header, iv, ct, KMS_BLOB_MAX_PLAINTEXT + 1, tag, out, sizeof(out), &len),
        KMS_ETOOBIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(layout_is_as_documented),     cmocka_unit_test(parse_round_trip),
        cmocka_unit_test(every_truncation_is_refused), cmocka_unit_test(oversized_is_refused),
        cmocka_unit_test(bad_header_fields_refused),   cmocka_unit_test(write_refuses_bad_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
