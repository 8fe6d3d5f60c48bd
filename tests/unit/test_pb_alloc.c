/* The wiping protobuf-c allocator: blocks of any size (0 included),
 * aligned, refused when the size would overflow, and a message carrying
 * plaintext unpacks and frees through it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/pb_alloc.h"
#include "kms/v1/kms.pb-c.h"

static void blocks_are_usable_and_aligned(void **state)
{
    (void)state;
    size_t sizes[] = {0, 1, 7, 16, 4096, 100000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        unsigned char *p = kms_pb_wiping_alloc(sizes[i]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % _Alignof(max_align_t), 0);
        memset(p, 0x5A, sizes[i]);
        kms_pb_wiping_free(p);
    }
    kms_pb_wiping_free(NULL); /* no-op */
}

static void overflowing_sizes_are_refused(void **state)
{
    (void)state;
    assert_null(kms_pb_wiping_alloc(SIZE_MAX));
    assert_null(kms_pb_wiping_alloc(SIZE_MAX - 8));
    ProtobufCAllocator *a = kms_pb_wiping_allocator();
    assert_null(a->alloc(a->allocator_data, SIZE_MAX));
}

static void message_round_trip_through_the_allocator(void **state)
{
    (void)state;
    uint8_t secret[32];
    memset(secret, 0xC3, sizeof(secret));
    Kms__V1__EncryptRequest req = KMS__V1__ENCRYPT_REQUEST__INIT;
    req.key_name = "k";
    req.plaintext.data = secret;
    req.plaintext.len = sizeof(secret);
    uint8_t wire[128];
    size_t n = kms__v1__encrypt_request__pack(&req, wire);
    assert_true(n > sizeof(secret) && n < sizeof(wire));

    ProtobufCAllocator *a = kms_pb_wiping_allocator();
    assert_ptr_equal(a, kms_pb_wiping_allocator()); /* one shared instance */
    Kms__V1__EncryptRequest *m = kms__v1__encrypt_request__unpack(a, n, wire);
    assert_non_null(m);
    assert_string_equal(m->key_name, "k");
    assert_int_equal(m->plaintext.len, sizeof(secret));
    assert_memory_equal(m->plaintext.data, secret, sizeof(secret));
    kms__v1__encrypt_request__free_unpacked(m, a);

    /* Malformed bytes: unpack fails and frees what it had through a. */
    wire[1] = 0x7F; /* key_name claims more bytes than there are */
    assert_null(kms__v1__encrypt_request__unpack(a, n, wire));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(blocks_are_usable_and_aligned),
        cmocka_unit_test(overflowing_sizes_are_refused),
        cmocka_unit_test(message_round_trip_through_the_allocator),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
