/* What an officer may sign (base/pb_check.h): bytes with a field no
 * descriptor knows, at any depth, or bytes that do not encode back to
 * themselves, are not canonical; kmsd's own encoding is. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/pb_check.h"
#include "kms/v1/kms.pb-c.h"

/* 1 if bytes decode as an ActionBody that kms_pb_canonical accepts. */
static int canonical(const uint8_t *bytes, size_t len)
{
    Kms__V1__ActionBody *b = kms__v1__action_body__unpack(NULL, len, bytes);
    assert_non_null(b);
    int ok = kms_pb_canonical(&b->base, bytes, len);
    protobuf_c_message_free_unpacked(&b->base, NULL);
    return ok;
}

static void canonical_bytes(void **state)
{
    (void)state;
    /* RotateKey {key_name "k1"} as protobuf-c encodes it. */
    static const uint8_t rotate[] = {0x12, 0x04, 0x0a, 0x02, 'k', '1'};
    assert_true(canonical(rotate, sizeof(rotate)));
    /* UpdateKeyPolicy {key_name "k", policy {decrypt "a"}}. */
    static const uint8_t update[] = {0x3a, 0x08, 0x0a, 0x01, 'k', 0x12, 0x03, 0x12, 0x01, 'a'};
    assert_true(canonical(update, sizeof(update)));
}

static void unknown_fields_at_any_depth(void **state)
{
    (void)state;
    /* Top level: field 15 = 1 after the action. */
    static const uint8_t top[] = {0x12, 0x04, 0x0a, 0x02, 'k', '1', 0x78, 0x01};
    assert_false(canonical(top, sizeof(top)));
    /* In RotateKey: field 15 = 1 (re-encodes identically, still refused). */
    static const uint8_t one[] = {0x12, 0x06, 0x0a, 0x02, 'k', '1', 0x78, 0x01};
    Kms__V1__ActionBody *b = kms__v1__action_body__unpack(NULL, sizeof(one), one);
    assert_non_null(b);
    assert_true(kms_pb_encodes_to(&b->base, one, sizeof(one)));
    assert_true(kms_pb_has_unknown_fields(&b->base));
    protobuf_c_message_free_unpacked(&b->base, NULL);
    assert_false(canonical(one, sizeof(one)));
    /* Two levels down, in the KeyPolicy of an UpdateKeyPolicy: a hidden
     * string (field 9, "hidden"). */
    static const uint8_t two[] = {0x3a, 0x10, 0x0a, 0x01, 'k', 0x12, 0x0b, 0x12, 0x01,
                                  'a',  0x4a, 0x06, 'h',  'i', 'd',  'd',  'e',  'n'};
    assert_false(canonical(two, sizeof(two)));
}

static void bytes_that_do_not_encode_back(void **state)
{
    (void)state;
    /* A length written in two bytes (0x84 0x00 for 4). */
    static const uint8_t long_len[] = {0x12, 0x84, 0x00, 0x0a, 0x02, 'k', '1'};
    assert_false(canonical(long_len, sizeof(long_len)));
    /* key_name twice: the last one wins when decoding, the first is
     * signed but never shown. */
    static const uint8_t twice[] = {0x12, 0x08, 0x0a, 0x02, 'k', '1', 0x0a, 0x02, 'k', '2'};
    assert_false(canonical(twice, sizeof(twice)));
    /* A field at its default written out (SetMinDecryptionVersion version 0). */
    static const uint8_t zero[] = {0x22, 0x06, 0x0a, 0x02, 'k', '1', 0x10, 0x00};
    assert_false(canonical(zero, sizeof(zero)));
}

/* protobuf-c reads a string up to its first NUL: the wire scan finds a NUL
 * in any string field, at any depth, and in nothing else. */
static void nul_in_wire_strings(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *dec = &kms__v1__decrypt_request__descriptor;
    /* DecryptRequest {blob "\0\1", context {"k": "v"}}, then "v\0x". */
    static const uint8_t ok[] = {0x0a, 0x02, 0x00, 0x01, 0x12, 0x06,
                                 0x0a, 0x01, 'k',  0x12, 0x01, 'v'};
    static const uint8_t nul[] = {0x0a, 0x02, 0x00, 0x01, 0x12, 0x08, 0x0a,
                                  0x01, 'k',  0x12, 0x03, 'v',  0x00, 'x'};
    static const uint8_t nul_key[] = {0x12, 0x06, 0x0a, 0x02, 'k', 0x00, 0x12, 0x00};
    assert_false(kms_pb_wire_has_nul_string(dec, ok, sizeof(ok)));
    assert_true(kms_pb_wire_has_nul_string(dec, nul, sizeof(nul)));
    assert_true(kms_pb_wire_has_nul_string(dec, nul_key, sizeof(nul_key)));
    Kms__V1__DecryptRequest *r = kms__v1__decrypt_request__unpack(NULL, sizeof(nul), nul);
    assert_non_null(r);
    assert_string_equal(r->encryption_context[0]->value, "v"); /* what the scan prevents */
    protobuf_c_message_free_unpacked(&r->base, NULL);
    /* Two levels down: an UpdateKeyPolicy's identity. */
    static const uint8_t deep[] = {0x3a, 0x09, 0x0a, 0x01, 'k', 0x12, 0x04, 0x12, 0x02, 'a', 0x00};
    assert_true(kms_pb_wire_has_nul_string(&kms__v1__action_body__descriptor, deep, sizeof(deep)));
    /* Truncated or odd bytes: not this check's to refuse (the decoder does). */
    assert_false(kms_pb_wire_has_nul_string(dec, nul, 7));
    static const uint8_t group[] = {0x0b};
    assert_false(kms_pb_wire_has_nul_string(dec, group, sizeof(group)));
    assert_false(kms_pb_wire_has_nul_string(dec, NULL, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(canonical_bytes),
        cmocka_unit_test(unknown_fields_at_any_depth),
        cmocka_unit_test(bytes_that_do_not_encode_back),
        cmocka_unit_test(nul_in_wire_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
