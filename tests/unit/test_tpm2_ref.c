/* TPM2 backend, no TPM needed: the stored reference format (round trip,
 * every truncation and a corrupted header refused) and the PCR list
 * parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tpm2/tpm2_internal.h"

static tpm2_ref sample(void)
{
    tpm2_ref r;
    memset(&r, 0, sizeof(r));
    r.kind = TPM2_REF_SEALED;
    for (int i = 0; i < 16; i++)
        r.key_id[i] = (uint8_t)(i * 3);
    r.version = 0x01020304;
    r.pcr_mask = (1u << 17) | (1u << 7);
    r.pub.publicArea.type = TPM2_ALG_KEYEDHASH;
    r.pub.publicArea.nameAlg = TPM2_ALG_SHA256;
    r.pub.publicArea.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_NODA;
    r.pub.publicArea.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_NULL;
    r.pub.publicArea.authPolicy.size = 32;
    memset(r.pub.publicArea.authPolicy.buffer, 0xab, 32);
    r.priv.size = 100;
    memset(r.priv.buffer, 0xcd, 100);
    return r;
}

static void round_trip(void **state)
{
    (void)state;
    tpm2_ref r = sample(), back;
    kms_backend_ref ref;
    assert_int_equal(kms_tpm2_ref_encode(&r, &ref), 0);
    assert_memory_equal(ref.bytes, "KT2\1\1", 5);
    assert_int_equal(kms_tpm2_ref_decode(&ref, &back), 0);
    assert_int_equal(back.kind, TPM2_REF_SEALED);
    assert_memory_equal(back.key_id, r.key_id, 16);
    assert_int_equal(back.version, r.version);
    assert_int_equal(back.pcr_mask, r.pcr_mask);
    assert_int_equal(back.pub.publicArea.authPolicy.size, 32);
    assert_int_equal(back.priv.size, 100);
    assert_memory_equal(back.priv.buffer, r.priv.buffer, 100);
    assert_int_equal(back.auth, 0);
    /* An object with a derived authValue: format 2, and back. */
    r.auth = 1;
    assert_int_equal(kms_tpm2_ref_encode(&r, &ref), 0);
    assert_memory_equal(ref.bytes, "KT2\2\1", 5);
    assert_int_equal(kms_tpm2_ref_decode(&ref, &back), 0);
    assert_int_equal(back.auth, 1);
    assert_int_equal(back.nv_index, 0);
    ref.bytes[3] = 5; /* no such format */
    assert_int_equal(kms_tpm2_ref_decode(&ref, &back), KMS_ENOTFOUND);
    /* With a shred index: format 4 (3 without the auth secret), the index
     * after the PCR mask, and back. */
    r.nv_index = TPM2_SHRED_NV_FIRST + 0x1234;
    assert_int_equal(kms_tpm2_ref_encode(&r, &ref), 0);
    assert_memory_equal(ref.bytes, "KT2\4\1", 5);
    assert_memory_equal(ref.bytes + 29, "\x01\x3b\x12\x34", 4);
    assert_int_equal(kms_tpm2_ref_decode(&ref, &back), 0);
    assert_int_equal(back.auth, 1);
    assert_int_equal(back.nv_index, r.nv_index);
    r.auth = 0;
    assert_int_equal(kms_tpm2_ref_encode(&r, &ref), 0);
    assert_memory_equal(ref.bytes, "KT2\3\1", 5);
    assert_int_equal(kms_tpm2_ref_decode(&ref, &back), 0);
    assert_int_equal(back.auth, 0);
    assert_int_equal(back.nv_index, r.nv_index);
    /* An index outside kms's range is no reference of ours. */
    ref.bytes[30] = 0x3c;
    assert_int_equal(kms_tpm2_ref_decode(&ref, &back), KMS_ENOTFOUND);
    ref.bytes[30] = 0x3a;
    assert_int_equal(kms_tpm2_ref_decode(&ref, &back), KMS_ENOTFOUND);
    ref.bytes[30] = 0x3b;
    assert_int_equal(kms_tpm2_ref_decode(&ref, &back), 0);
    /* Every truncation of a format-3 reference is refused too. */
    for (size_t n = 0; n < ref.len; n++) {
        kms_backend_ref cut = ref;
        cut.len = n;
        assert_int_equal(kms_tpm2_ref_decode(&cut, &back), KMS_ENOTFOUND);
    }
}

static void malformed_refused(void **state)
{
    (void)state;
    tpm2_ref r = sample(), back;
    kms_backend_ref ref, bad;
    assert_int_equal(kms_tpm2_ref_encode(&r, &ref), 0);
    for (size_t n = 0; n < ref.len; n++) {
        bad = ref;
        bad.len = n;
        assert_int_equal(kms_tpm2_ref_decode(&bad, &back), KMS_ENOTFOUND);
    }
    bad = ref;
    bad.len++; /* trailing garbage */
    assert_int_equal(kms_tpm2_ref_decode(&bad, &back), KMS_ENOTFOUND);
    for (size_t i = 0; i < 5; i++) {
        bad = ref;
        bad.bytes[i] ^= 0x40;
        assert_int_equal(kms_tpm2_ref_decode(&bad, &back), KMS_ENOTFOUND);
    }
    bad = ref;
    bad.bytes[29] = 0xff; /* public length beyond the reference */
    assert_int_equal(kms_tpm2_ref_decode(&bad, &back), KMS_ENOTFOUND);
    bad = ref;
    bad.bytes[25] = 0x01; /* PCR 24: there is none */
    assert_int_equal(kms_tpm2_ref_decode(&bad, &back), KMS_ENOTFOUND);
    /* The TPM2B_PUBLIC's own size field disagreeing with its contents
     * (Tss2_MU reads past it): not canonical, refused. */
    bad = ref;
    bad.bytes[32] ^= 0x01;
    assert_int_equal(kms_tpm2_ref_decode(&bad, &back), KMS_ENOTFOUND);
}

static void pcr_lists(void **state)
{
    (void)state;
    uint32_t m = 99;
    assert_int_equal(kms_tpm2_parse_pcrs("", &m), 0);
    assert_int_equal(m, 0);
    assert_int_equal(kms_tpm2_parse_pcrs(NULL, &m), 0);
    assert_int_equal(kms_tpm2_parse_pcrs("0,7,23", &m), 0);
    assert_int_equal(m, 1u | 1u << 7 | 1u << 23);
    static const char *const bad[] = {"24", "-1", "7,", ",7", "7;8", "x", "7,,8"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(kms_tpm2_parse_pcrs(bad[i], &m), KMS_EINVAL);
    TPML_PCR_SELECTION sel;
    kms_tpm2_pcr_selection(1u << 17 | 1u, &sel);
    assert_int_equal(sel.count, 1);
    assert_int_equal(sel.pcrSelections[0].hash, TPM2_ALG_SHA256);
    assert_int_equal(sel.pcrSelections[0].pcrSelect[0], 1);
    assert_int_equal(sel.pcrSelections[0].pcrSelect[2], 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip),
        cmocka_unit_test(malformed_refused),
        cmocka_unit_test(pcr_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
