/* Bounded byte reader/writer: exact bytes, and every short or overlong
 * case refused without moving the position. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/buf.h"

static void writer_puts_big_endian_bytes(void **state)
{
    (void)state;
    uint8_t out[64];
    kms_buf_writer w;
    kms_buf_writer_init(&w, out, sizeof(out));
    assert_int_equal(kms_buf_put_u8(&w, 0xA1), KMS_OK);
    assert_int_equal(kms_buf_put_u16be(&w, 0x0102), KMS_OK);
    assert_int_equal(kms_buf_put_u32be(&w, 0x03040506u), KMS_OK);
    assert_int_equal(kms_buf_put_u64be(&w, 0x0708090A0B0C0D0Eull), KMS_OK);
    assert_int_equal(kms_buf_put_bytes(&w, "xy", 2), KMS_OK);
    assert_int_equal(kms_buf_put_bytes(&w, NULL, 0), KMS_OK);
    assert_int_equal(kms_buf_put_lv16(&w, "abc", 3), KMS_OK);
    assert_int_equal(kms_buf_put_lv32(&w, "d", 1), KMS_OK);
    assert_int_equal(kms_buf_put_lv16(&w, NULL, 0), KMS_OK);
    static const uint8_t want[] = {0xA1, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09,
                                   0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 'x',  'y',  0x00, 0x03, 'a',
                                   'b',  'c',  0x00, 0x00, 0x00, 0x01, 'd',  0x00, 0x00};
    assert_int_equal(w.len, sizeof(want));
    assert_memory_equal(out, want, sizeof(want));
    assert_int_equal(kms_buf_writer_room(&w), sizeof(out) - sizeof(want));
}

static void writer_refuses_what_does_not_fit(void **state)
{
    (void)state;
    uint8_t out[8];
    memset(out, 0xEE, sizeof(out));
    kms_buf_writer w;
    kms_buf_writer_init(&w, out, 7);
    assert_int_equal(kms_buf_put_u64be(&w, 1), KMS_ETOOBIG);
    assert_int_equal(w.len, 0);
    assert_int_equal(kms_buf_put_u32be(&w, 0x11223344u), KMS_OK);
    assert_int_equal(kms_buf_put_u32be(&w, 1), KMS_ETOOBIG);
    assert_int_equal(kms_buf_put_bytes(&w, "abcd", 4), KMS_ETOOBIG);
    /* The length field fits, the bytes do not: nothing is written. */
    assert_int_equal(kms_buf_put_lv16(&w, "ab", 2), KMS_ETOOBIG);
    assert_int_equal(w.len, 4);
    assert_int_equal(kms_buf_put_lv16(&w, "a", 1), KMS_OK);
    assert_int_equal(w.len, 7);
    assert_int_equal(kms_buf_put_u8(&w, 0), KMS_ETOOBIG);
    assert_int_equal(out[7], 0xEE); /* never past cap */
    uint8_t *at = (uint8_t *)"unchanged";
    assert_int_equal(kms_buf_reserve(&w, 1, &at), KMS_ETOOBIG);
    assert_string_equal((const char *)at, "unchanged");
    /* A huge n must not wrap the room check. */
    assert_int_equal(kms_buf_reserve(&w, SIZE_MAX, &at), KMS_ETOOBIG);
    assert_int_equal(kms_buf_put_lv32(&w, "x", SIZE_MAX), KMS_ETOOBIG);
    assert_int_equal(w.len, 7);
}

static void writer_lv_refuses_length_beyond_its_field(void **state)
{
    (void)state;
    static uint8_t big[70000];
    static uint8_t out[70010];
    kms_buf_writer w;
    kms_buf_writer_init(&w, out, sizeof(out));
    assert_int_equal(kms_buf_put_lv16(&w, big, 65536), KMS_ETOOBIG);
    assert_int_equal(w.len, 0);
    assert_int_equal(kms_buf_put_lv16(&w, big, 65535), KMS_OK);
    assert_int_equal(w.len, 65537);
    assert_int_equal(out[0], 0xFF);
    assert_int_equal(out[1], 0xFF);
}

static void writer_reserve_and_null_buffer(void **state)
{
    (void)state;
    uint8_t out[4];
    kms_buf_writer w;
    kms_buf_writer_init(&w, out, sizeof(out));
    uint8_t *at = NULL;
    assert_int_equal(kms_buf_put_u8(&w, 9), KMS_OK);
    assert_int_equal(kms_buf_reserve(&w, 3, &at), KMS_OK);
    assert_ptr_equal(at, out + 1);
    assert_int_equal(kms_buf_writer_room(&w), 0);
    assert_int_equal(kms_buf_put_bytes(&w, NULL, 1), KMS_EINVAL);

    kms_buf_writer_init(&w, NULL, 100); /* no buffer: no room */
    assert_int_equal(kms_buf_put_u8(&w, 1), KMS_ETOOBIG);
    assert_int_equal(kms_buf_put_bytes(&w, NULL, 0), KMS_OK);
}

static void reader_reads_what_writer_wrote(void **state)
{
    (void)state;
    static const uint8_t in[] = {0xA1, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09,
                                 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 'x',  'y',  0x00, 0x03, 'a',
                                 'b',  'c',  0x00, 0x00, 0x00, 0x01, 'd',  'r',  's'};
    kms_buf_reader r;
    kms_buf_reader_init(&r, in, sizeof(in));
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    char two[2];
    const uint8_t *at;
    size_t n;
    assert_int_equal(kms_buf_get_u8(&r, &u8), KMS_OK);
    assert_int_equal(u8, 0xA1);
    assert_int_equal(kms_buf_get_u16be(&r, &u16), KMS_OK);
    assert_int_equal(u16, 0x0102);
    assert_int_equal(kms_buf_get_u32be(&r, &u32), KMS_OK);
    assert_int_equal(u32, 0x03040506u);
    assert_int_equal(kms_buf_get_u64be(&r, &u64), KMS_OK);
    assert_true(u64 == 0x0708090A0B0C0D0Eull);
    assert_int_equal(kms_buf_get_bytes(&r, two, 2), KMS_OK);
    assert_memory_equal(two, "xy", 2);
    assert_int_equal(kms_buf_get_lv16(&r, &at, &n), KMS_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(at, "abc", 3);
    assert_int_equal(kms_buf_get_lv32(&r, &at, &n), KMS_OK);
    assert_int_equal(n, 1);
    assert_ptr_equal(at, in + 26);
    assert_int_equal(kms_buf_expect_end(&r), KMS_EINVAL); /* "rs" left */
    assert_int_equal(kms_buf_remaining(&r), 2);
    kms_buf_get_rest(&r, &at, &n);
    assert_int_equal(n, 2);
    assert_memory_equal(at, "rs", 2);
    assert_int_equal(kms_buf_expect_end(&r), KMS_OK);
    kms_buf_get_rest(&r, &at, &n);
    assert_int_equal(n, 0);
}

static void reader_refuses_short_input_without_moving(void **state)
{
    (void)state;
    static const uint8_t in[] = {0x01, 0x02, 0x03};
    kms_buf_reader r;
    kms_buf_reader_init(&r, in, sizeof(in));
    uint16_t u16 = 0x5555;
    uint32_t u32 = 0x55555555u;
    uint64_t u64 = 7;
    uint8_t out[4] = {0};
    const uint8_t *at = NULL;
    assert_int_equal(kms_buf_get_u32be(&r, &u32), KMS_EINVAL);
    assert_int_equal(u32, 0x55555555u);
    assert_int_equal(kms_buf_get_u64be(&r, &u64), KMS_EINVAL);
    assert_true(u64 == 7);
    assert_int_equal(kms_buf_get_bytes(&r, out, 4), KMS_EINVAL);
    assert_int_equal(out[0], 0);
    assert_int_equal(kms_buf_get_view(&r, 4, &at), KMS_EINVAL);
    assert_null(at);
    assert_int_equal(kms_buf_get_view(&r, SIZE_MAX, &at), KMS_EINVAL);
    assert_int_equal(r.off, 0);
    assert_int_equal(kms_buf_get_u16be(&r, &u16), KMS_OK);
    assert_int_equal(kms_buf_get_u16be(&r, &u16), KMS_EINVAL);
    assert_int_equal(u16, 0x0102);
    assert_int_equal(r.off, 2);

    kms_buf_reader_init(&r, NULL, 5); /* no bytes at all */
    uint8_t u8;
    assert_int_equal(kms_buf_get_u8(&r, &u8), KMS_EINVAL);
    assert_int_equal(kms_buf_expect_end(&r), KMS_OK);
}

static void reader_never_trusts_a_length_prefix(void **state)
{
    (void)state;
    /* Claims 4 bytes, has 3. */
    static const uint8_t lv16[] = {0x00, 0x04, 'a', 'b', 'c'};
    /* Claims 4 GiB - 1. */
    static const uint8_t lv32[] = {0xFF, 0xFF, 0xFF, 0xFF, 'a'};
    /* A length field cut short. */
    static const uint8_t cut[] = {0x00};
    kms_buf_reader r;
    const uint8_t *at = NULL;
    size_t n = 99;
    kms_buf_reader_init(&r, lv16, sizeof(lv16));
    assert_int_equal(kms_buf_get_lv16(&r, &at, &n), KMS_EINVAL);
    assert_int_equal(r.off, 0);
    assert_null(at);
    assert_int_equal(n, 99);
    kms_buf_reader_init(&r, lv32, sizeof(lv32));
    assert_int_equal(kms_buf_get_lv32(&r, &at, &n), KMS_EINVAL);
    assert_int_equal(r.off, 0);
    kms_buf_reader_init(&r, cut, sizeof(cut));
    assert_int_equal(kms_buf_get_lv16(&r, &at, &n), KMS_EINVAL);
    assert_int_equal(kms_buf_get_lv32(&r, &at, &n), KMS_EINVAL);
    assert_int_equal(r.off, 0);
    assert_int_equal(n, 99);
    /* Exactly enough is fine. */
    static const uint8_t exact[] = {0x00, 0x03, 'a', 'b', 'c'};
    kms_buf_reader_init(&r, exact, sizeof(exact));
    assert_int_equal(kms_buf_get_lv16(&r, &at, &n), KMS_OK);
    assert_int_equal(n, 3);
    assert_int_equal(kms_buf_expect_end(&r), KMS_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(writer_puts_big_endian_bytes),
        cmocka_unit_test(writer_refuses_what_does_not_fit),
        cmocka_unit_test(writer_lv_refuses_length_beyond_its_field),
        cmocka_unit_test(writer_reserve_and_null_buffer),
        cmocka_unit_test(reader_reads_what_writer_wrote),
        cmocka_unit_test(reader_refuses_short_input_without_moving),
        cmocka_unit_test(reader_never_trusts_a_length_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
