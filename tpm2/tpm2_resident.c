/* TPM2 backend, resident mode: each key version is an HMAC-SHA256 key
 * generated inside the TPM that never leaves it. Each wrap/unwrap derives a
 * one-time AES-256 key from the blob's random IV (docs/tpm2.md):
 *
 *   k = TPM2_HMAC(version key, "kms-tpm2-resident-v1" || key id (16) ||
 *                 version (u32 BE) || iv (12))
 *
 * The last used key stays loaded (one object slot), so an operation on the
 * same version is one TPM command; another version flushes it and loads
 * its own. */
#include <string.h>

#include <openssl/crypto.h>

#include "tpm2_internal.h"

int kms_tpm2_resident_create(tpm2_device *d, tpm2_ref *r, const TPM2B_AUTH *auth)
{
    TPM2B_SENSITIVE_CREATE sens;
    memset(&sens, 0, sizeof(sens));
    TPM2B_PUBLIC tmpl = {.publicArea = {.type = TPM2_ALG_KEYEDHASH, .nameAlg = TPM2_ALG_SHA256}};
    tmpl.publicArea.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                       TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                                       TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_NODA;
    tmpl.publicArea.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_HMAC;
    tmpl.publicArea.parameters.keyedHashDetail.scheme.details.hmac.hashAlg = TPM2_ALG_SHA256;
    sens.sensitive.userAuth = *auth;
    TSS2_RC rc;
    TPM2_RUN(d, rc, kms_tpm2_create_object(d, &sens, &tmpl, &r->pub, &r->priv));
    OPENSSL_cleanse(&sens, sizeof(sens));
    if (rc != TSS2_RC_SUCCESS)
        return kms_tpm2_error(d, rc, "create resident key version");
    return KMS_OK;
}

/* Makes r's key (opened as owner) the loaded one. */
static TSS2_RC cache_load(tpm2_device *d, uint64_t owner, const tpm2_ref *r, const TPM2B_AUTH *auth)
{
    if (d->res_h != ESYS_TR_NONE && d->res_owner == owner)
        return TSS2_RC_SUCCESS;
    kms_tpm2_drop_cached(d);
    ESYS_TR h = ESYS_TR_NONE;
    TSS2_RC rc = kms_tpm2_load(d, &r->pub, &r->priv, &h);
    if (rc == TSS2_RC_SUCCESS && kms_tpm2_ref_has_auth(r)) {
        /* The authValue was derived when the version was opened. */
        rc = Esys_TR_SetAuth(d->esys, h, auth);
        if (rc != TSS2_RC_SUCCESS)
            (void)Esys_FlushContext(d->esys, h);
    }
    if (rc == TSS2_RC_SUCCESS) {
        d->res_h = h;
        d->res_owner = owner;
        memcpy(d->res_key_id, r->key_id, KMS_KEY_ID_LEN);
        d->res_version = r->version;
    }
    return rc;
}

int kms_tpm2_resident_load(tpm2_device *d, uint64_t owner, const tpm2_ref *r,
                           const TPM2B_AUTH *auth)
{
    TSS2_RC rc;
    TPM2_RUN(d, rc, cache_load(d, owner, r, auth));
    if (rc != TSS2_RC_SUCCESS)
        return kms_tpm2_error(d, rc, "load resident key");
    return KMS_OK;
}

void kms_tpm2_resident_forget(tpm2_device *d, const uint8_t key_id[KMS_KEY_ID_LEN],
                              uint32_t version)
{
    if (d->res_h != ESYS_TR_NONE && d->res_version == version &&
        memcmp(d->res_key_id, key_id, KMS_KEY_ID_LEN) == 0)
        kms_tpm2_drop_cached(d);
}

static TSS2_RC hmac_once(tpm2_device *d, uint64_t owner, const tpm2_ref *r, const TPM2B_AUTH *auth,
                         const TPM2B_MAX_BUFFER *msg, TPM2B_DIGEST **mac)
{
    TSS2_RC rc = TSS2_RC_SUCCESS;
    for (int fresh = 0; fresh < 2; fresh++) {
        int cached = d->res_h != ESYS_TR_NONE && d->res_owner == owner;
        rc = cache_load(d, owner, r, auth);
        if (rc != TSS2_RC_SUCCESS)
            return rc;
        /* Authorized by the salted session: the one-time key (the HMAC)
         * comes back encrypted. */
        ESYS_TR session = ESYS_TR_NONE;
        rc = kms_tpm2_session(d, &session);
        if (rc != TSS2_RC_SUCCESS)
            return rc;
        rc = Esys_HMAC(d->esys, d->res_h, session, ESYS_TR_NONE, ESYS_TR_NONE, msg, TPM2_ALG_SHA256,
                       mac);
        if (rc != TSS2_RC_SUCCESS)
            kms_tpm2_drop_session(d);
        /* A TPM answer we will not retry as is: the handle may be stale
         * (someone flushed it), so load afresh and try once more if it was
         * a cached one. A reset is handled by the restart, a broken
         * connection by the reconnect (TPM2_RUN). */
        if (rc == TSS2_RC_SUCCESS || !kms_tpm2_rc_from_tpm(rc) ||
            kms_tpm2_retryable(rc) != TPM2_RETRY_NO)
            return rc;
        kms_tpm2_drop_cached(d);
        if (!cached)
            return rc;
    }
    return rc;
}

int kms_tpm2_resident_derive(tpm2_device *d, uint64_t owner, const tpm2_ref *r,
                             const TPM2B_AUTH *auth, const uint8_t iv[KMS_GCM_IV_LEN],
                             uint8_t key[32])
{
    static const char label[] = TPM2_RESIDENT_LABEL;
    TPM2B_MAX_BUFFER msg;
    size_t n = 0;
    memcpy(msg.buffer, label, sizeof(label) - 1);
    n += sizeof(label) - 1;
    memcpy(msg.buffer + n, r->key_id, KMS_KEY_ID_LEN);
    n += KMS_KEY_ID_LEN;
    for (int i = 0; i < 4; i++)
        msg.buffer[n++] = (uint8_t)(r->version >> (24 - 8 * i));
    memcpy(msg.buffer + n, iv, KMS_GCM_IV_LEN);
    n += KMS_GCM_IV_LEN;
    msg.size = (UINT16)n;

    TPM2B_DIGEST *mac = NULL;
    TSS2_RC rc;
    int ret = KMS_OK;
    TPM2_RUN(d, rc, hmac_once(d, owner, r, auth, &msg, &mac));
    if (rc != TSS2_RC_SUCCESS)
        ret = kms_tpm2_error(d, rc, "derive");
    else if (mac->size != 32)
        ret = kms_error_set(KMS_EINTERNAL, "tpm2: HMAC is not 32 bytes");
    else
        memcpy(key, mac->buffer, 32);
    if (mac != NULL) {
        OPENSSL_cleanse(mac, sizeof(*mac));
        Esys_Free(mac);
    }
    return ret;
}
