/* TPM2 backend: the reference the store keeps for a key version.
 *
 *   "KT2" | format (1: empty authValue, 2: derived authValue, 3: shred
 *   index, 4: shred index and derived authValue) |
 *   kind (1 sealed, 2 resident) | key id (16) |
 *   version (u32 BE) | PCR mask (u32 BE) | [formats 3, 4: NV index (u32 BE)] |
 *   u16 BE length | TPM2B_PUBLIC | u16 BE length | TPM2B_PRIVATE
 *
 * The public and private parts are TPM-marshalled (Tss2_MU); the private
 * part is encrypted by the TPM under the storage primary, so the reference
 * is useless without this TPM. */
#include <string.h>

#include <tss2/tss2_mu.h>

#include "tpm2_internal.h"

#include "base/buf.h"

#define HEADER 29 /* magic 3, format 1, kind 1, key id 16, version 4, mask 4 */

static uint8_t format_of(const tpm2_ref *r)
{
    if (r->nv_index != 0)
        return r->auth ? 4 : 3;
    return r->auth ? 2 : 1;
}

int kms_tpm2_ref_encode(const tpm2_ref *r, kms_backend_ref *out)
{
    /* Each part is marshalled on its own, then written with its length. */
    uint8_t pub[sizeof(TPM2B_PUBLIC)], priv[sizeof(TPM2B_PRIVATE)];
    size_t pub_len = 0, priv_len = 0;
    if (Tss2_MU_TPM2B_PUBLIC_Marshal(&r->pub, pub, sizeof(pub), &pub_len) != TSS2_RC_SUCCESS)
        return kms_error_set(KMS_EINTERNAL, "tpm2: public part does not fit the reference");
    if (Tss2_MU_TPM2B_PRIVATE_Marshal(&r->priv, priv, sizeof(priv), &priv_len) != TSS2_RC_SUCCESS)
        return kms_error_set(KMS_EINTERNAL, "tpm2: private part does not fit the reference");
    kms_buf_writer w;
    kms_buf_writer_init(&w, out->bytes, KMS_BACKEND_REF_MAX);
    if (kms_buf_put_bytes(&w, "KT2", 3) != 0 || kms_buf_put_u8(&w, format_of(r)) != 0 ||
        kms_buf_put_u8(&w, (uint8_t)r->kind) != 0 ||
        kms_buf_put_bytes(&w, r->key_id, KMS_KEY_ID_LEN) != 0 ||
        kms_buf_put_u32be(&w, r->version) != 0 || kms_buf_put_u32be(&w, r->pcr_mask) != 0 ||
        w.len != HEADER || (r->nv_index != 0 && kms_buf_put_u32be(&w, r->nv_index) != 0) ||
        kms_buf_put_lv16(&w, pub, pub_len) != 0)
        return kms_error_set(KMS_EINTERNAL, "tpm2: public part does not fit the reference");
    if (kms_buf_put_lv16(&w, priv, priv_len) != 0)
        return kms_error_set(KMS_EINTERNAL, "tpm2: private part does not fit the reference");
    out->len = w.len;
    return KMS_OK;
}

int kms_tpm2_ref_decode(const kms_backend_ref *in, tpm2_ref *out)
{
    tpm2_ref r;
    memset(&r, 0, sizeof(r));
    kms_buf_reader rd;
    uint8_t magic[3], format, kind;
    const uint8_t *part;
    size_t part_len, off = 0;
    if (in->len < HEADER + 4 || in->len > KMS_BACKEND_REF_MAX)
        return kms_error_set(KMS_ENOTFOUND, "tpm2: not a TPM2 key reference");
    kms_buf_reader_init(&rd, in->bytes, in->len);
    if (kms_buf_get_bytes(&rd, magic, sizeof(magic)) != 0 || memcmp(magic, "KT2", 3) != 0 ||
        kms_buf_get_u8(&rd, &format) != 0 || format < 1 || format > 4 ||
        kms_buf_get_u8(&rd, &kind) != 0 || (kind != TPM2_REF_SEALED && kind != TPM2_REF_RESIDENT) ||
        kms_buf_get_bytes(&rd, r.key_id, KMS_KEY_ID_LEN) != 0 ||
        kms_buf_get_u32be(&rd, &r.version) != 0 || kms_buf_get_u32be(&rd, &r.pcr_mask) != 0)
        return kms_error_set(KMS_ENOTFOUND, "tpm2: not a TPM2 key reference");
    r.kind = kind;
    r.auth = format == 2 || format == 4;
    if (format >= 3 &&
        (kms_buf_get_u32be(&rd, &r.nv_index) != 0 || r.nv_index < TPM2_SHRED_NV_FIRST ||
         r.nv_index - TPM2_SHRED_NV_FIRST >= TPM2_SHRED_NV_COUNT))
        return kms_error_set(KMS_ENOTFOUND, "tpm2: reference names no kms shred index");
    /* The public part must be followed by at least a length for the private one. */
    if (kms_buf_get_lv16(&rd, &part, &part_len) != 0 || kms_buf_remaining(&rd) < 2 ||
        Tss2_MU_TPM2B_PUBLIC_Unmarshal(part, part_len, &off, &r.pub) != TSS2_RC_SUCCESS ||
        off != part_len)
        return kms_error_set(KMS_ENOTFOUND, "tpm2: reference has a malformed public part");
    off = 0;
    if (kms_buf_get_lv16(&rd, &part, &part_len) != 0 || kms_buf_expect_end(&rd) != 0 ||
        Tss2_MU_TPM2B_PRIVATE_Unmarshal(part, part_len, &off, &r.priv) != TSS2_RC_SUCCESS ||
        off != part_len)
        return kms_error_set(KMS_ENOTFOUND, "tpm2: reference has a malformed private part");
    if (r.pcr_mask >> 24)
        return kms_error_set(KMS_ENOTFOUND, "tpm2: reference names PCRs beyond 23");
    /* Only the canonical encoding is a reference: Tss2_MU does not check a
     * TPM2B_PUBLIC's size field against the TPMT_PUBLIC it holds (found by
     * fuzz_tpm2_ref), so the parts are encoded again and compared. */
    kms_backend_ref again;
    if (kms_tpm2_ref_encode(&r, &again) != KMS_OK || again.len != in->len ||
        memcmp(again.bytes, in->bytes, in->len) != 0)
        return kms_error_set(KMS_ENOTFOUND, "tpm2: reference is not in canonical form");
    *out = r;
    return KMS_OK;
}
