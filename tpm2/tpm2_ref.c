/* TPM2 backend: the reference the store keeps for a key version.
 *
 *   "KT2" | format 1 | kind (1 sealed, 2 resident) | key id (16) |
 *   version (u32 BE) | PCR mask (u32 BE) | u16 BE length | TPM2B_PUBLIC |
 *   u16 BE length | TPM2B_PRIVATE
 *
 * The public and private parts are TPM-marshalled (Tss2_MU); the private
 * part is encrypted by the TPM under the storage primary, so the reference
 * is useless without this TPM. */
#include <string.h>

#include <tss2/tss2_mu.h>

#include "tpm2_internal.h"

#define HEADER 29 /* magic 3, format 1, kind 1, key id 16, version 4, mask 4 */

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int kms_tpm2_ref_encode(const tpm2_ref *r, kms_backend_ref *out)
{
    uint8_t *b = out->bytes;
    memcpy(b, "KT2", 3);
    b[3] = 1;
    b[4] = (uint8_t)r->kind;
    memcpy(b + 5, r->key_id, KMS_KEY_ID_LEN);
    put32(b + 21, r->version);
    put32(b + 25, r->pcr_mask);
    size_t off = HEADER + 2, start = off;
    if (Tss2_MU_TPM2B_PUBLIC_Marshal(&r->pub, b, KMS_BACKEND_REF_MAX, &off) != TSS2_RC_SUCCESS)
        return kms_error_set(KMS_EINTERNAL, "tpm2: public part does not fit the reference");
    b[HEADER] = (uint8_t)((off - start) >> 8);
    b[HEADER + 1] = (uint8_t)(off - start);
    size_t len_at = off;
    off += 2;
    start = off;
    if (off > KMS_BACKEND_REF_MAX ||
        Tss2_MU_TPM2B_PRIVATE_Marshal(&r->priv, b, KMS_BACKEND_REF_MAX, &off) != TSS2_RC_SUCCESS)
        return kms_error_set(KMS_EINTERNAL, "tpm2: private part does not fit the reference");
    b[len_at] = (uint8_t)((off - start) >> 8);
    b[len_at + 1] = (uint8_t)(off - start);
    out->len = off;
    return KMS_OK;
}

int kms_tpm2_ref_decode(const kms_backend_ref *in, tpm2_ref *out)
{
    const uint8_t *b = in->bytes;
    tpm2_ref r;
    memset(&r, 0, sizeof(r));
    if (in->len < HEADER + 4 || in->len > KMS_BACKEND_REF_MAX || memcmp(b, "KT2", 3) != 0 ||
        b[3] != 1 || (b[4] != TPM2_REF_SEALED && b[4] != TPM2_REF_RESIDENT))
        return kms_error_set(KMS_ENOTFOUND, "tpm2: not a TPM2 key reference");
    r.kind = b[4];
    memcpy(r.key_id, b + 5, KMS_KEY_ID_LEN);
    r.version = get32(b + 21);
    r.pcr_mask = get32(b + 25);
    size_t off = HEADER;
    size_t pub_len = (size_t)b[off] << 8 | b[off + 1];
    off += 2;
    size_t pub_end = off + pub_len;
    if (pub_end + 2 > in->len ||
        Tss2_MU_TPM2B_PUBLIC_Unmarshal(b, pub_end, &off, &r.pub) != TSS2_RC_SUCCESS ||
        off != pub_end)
        return kms_error_set(KMS_ENOTFOUND, "tpm2: reference has a malformed public part");
    size_t priv_len = (size_t)b[off] << 8 | b[off + 1];
    off += 2;
    size_t priv_end = off + priv_len;
    if (priv_end != in->len ||
        Tss2_MU_TPM2B_PRIVATE_Unmarshal(b, priv_end, &off, &r.priv) != TSS2_RC_SUCCESS ||
        off != priv_end)
        return kms_error_set(KMS_ENOTFOUND, "tpm2: reference has a malformed private part");
    if (r.pcr_mask >> 24)
        return kms_error_set(KMS_ENOTFOUND, "tpm2: reference names PCRs beyond 23");
    /* Only the canonical encoding is a reference: Tss2_MU does not check a
     * TPM2B_PUBLIC's size field against the TPMT_PUBLIC it holds (found by
     * fuzz_tpm2_ref), so the parts are encoded again and compared. */
    kms_backend_ref again;
    if (kms_tpm2_ref_encode(&r, &again) != KMS_OK || again.len != in->len ||
        memcmp(again.bytes, b, in->len) != 0)
        return kms_error_set(KMS_ENOTFOUND, "tpm2: reference is not in canonical form");
    *out = r;
    return KMS_OK;
}
