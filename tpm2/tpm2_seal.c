/* TPM2 backend, sealed mode: each key version is a sealed data object
 * (keyed-hash, no scheme) under the storage primary holding 32 random bytes,
 * optionally bound to SHA-256 PCR values with a PolicyPCR auth policy. It is
 * unsealed once, when the version is first opened; the object is flushed
 * at once (swtpm has three object slots). */
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "tpm2_internal.h"

/* A policy (or trial) session with PolicyPCR over mask; *digest (optional)
 * receives the policy digest. On failure no session is left. A policy
 * session (the one that authorizes Unseal) is salted to the primary and
 * encrypts the response, so the unsealed key crosses the bus encrypted. */
static TSS2_RC pcr_session(tpm2_device *d, uint32_t mask, int with_auth, TPM2_SE type,
                           ESYS_TR *session, TPM2B_DIGEST **digest)
{
    TPMT_SYM_DEF sym = {.algorithm = TPM2_ALG_NULL};
    ESYS_TR salt_key = ESYS_TR_NONE;
    if (type == TPM2_SE_POLICY) {
        sym =
            (TPMT_SYM_DEF){.algorithm = TPM2_ALG_AES, .keyBits.aes = 128, .mode.aes = TPM2_ALG_CFB};
        salt_key = d->primary;
    }
    TPML_PCR_SELECTION sel;
    TPM2B_DIGEST empty = {0};
    kms_tpm2_pcr_selection(mask, &sel);
    TSS2_RC rc = Esys_StartAuthSession(d->esys, salt_key, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                       ESYS_TR_NONE, NULL, type, &sym, TPM2_ALG_SHA256, session);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    if (type == TPM2_SE_POLICY)
        rc = Esys_TRSess_SetAttributes(d->esys, *session, TPMA_SESSION_ENCRYPT,
                                       TPMA_SESSION_ENCRYPT | TPMA_SESSION_DECRYPT);
    if (rc != TSS2_RC_SUCCESS) {
        (void)Esys_FlushContext(d->esys, *session);
        *session = ESYS_TR_NONE;
        return rc;
    }
    rc = Esys_PolicyPCR(d->esys, *session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &empty, &sel);
    /* And the object's authValue: the PCRs alone would let anyone with the
     * blob unseal while they hold their values. */
    if (rc == TSS2_RC_SUCCESS && with_auth)
        rc = Esys_PolicyAuthValue(d->esys, *session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE);
    if (rc == TSS2_RC_SUCCESS && digest != NULL)
        rc = Esys_PolicyGetDigest(d->esys, *session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                  digest);
    if (rc != TSS2_RC_SUCCESS) {
        (void)Esys_FlushContext(d->esys, *session);
        *session = ESYS_TR_NONE;
    }
    return rc;
}

/* The policy digest of PolicyPCR over the PCRs' current values (trial). */
static TSS2_RC pcr_policy(tpm2_device *d, uint32_t mask, int with_auth, TPM2B_DIGEST *out)
{
    ESYS_TR trial = ESYS_TR_NONE;
    TPM2B_DIGEST *policy = NULL;
    TSS2_RC rc = pcr_session(d, mask, with_auth, TPM2_SE_TRIAL, &trial, &policy);
    if (rc == TSS2_RC_SUCCESS) {
        *out = *policy;
        Esys_Free(policy);
        (void)Esys_FlushContext(d->esys, trial);
    }
    return rc;
}

static void pcr_names(uint32_t mask, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < 24 && n < cap; i++)
        if (mask & (1u << i))
            n += (size_t)snprintf(out + n, cap - n, "%s%d", n ? "," : "", i);
}

int kms_tpm2_seal_create(tpm2_device *d, tpm2_ref *r, const TPM2B_AUTH *auth)
{
    TPM2B_SENSITIVE_CREATE sens;
    memset(&sens, 0, sizeof(sens));
    TPM2B_PUBLIC tmpl = {.publicArea = {.type = TPM2_ALG_KEYEDHASH, .nameAlg = TPM2_ALG_SHA256}};
    tmpl.publicArea.objectAttributes =
        TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_NODA;
    tmpl.publicArea.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_NULL;
    TSS2_RC rc = TSS2_RC_SUCCESS;
    int ret = KMS_OK;
    if (r->pcr_mask != 0) {
        /* Policy only: no USERWITHAUTH, so the empty password cannot unseal. */
        TPM2_RUN(d, rc,
                 pcr_policy(d, r->pcr_mask, kms_tpm2_ref_has_auth(r), &tmpl.publicArea.authPolicy));
        if (rc != TSS2_RC_SUCCESS)
            return kms_tpm2_error(d, rc, "PCR policy");
    } else {
        tmpl.publicArea.objectAttributes |= TPMA_OBJECT_USERWITHAUTH;
    }
    sens.sensitive.data.size = 32;
    sens.sensitive.userAuth = *auth;
    if (RAND_priv_bytes(sens.sensitive.data.buffer, 32) != 1) {
        ret = kms_error_set(KMS_EINTERNAL, "tpm2: no random bytes for a key");
    } else {
        TPM2_RUN(d, rc, kms_tpm2_create_object(d, &sens, &tmpl, &r->pub, &r->priv));
        if (rc != TSS2_RC_SUCCESS)
            ret = kms_tpm2_error(d, rc, "create sealed key version");
    }
    OPENSSL_cleanse(&sens, sizeof(sens));
    return ret;
}

/* Unseal is authorized by the salted session (or, for a PCR-bound key, by
 * a salted policy session): either way the response, the key, is
 * encrypted on the bus. */
static TSS2_RC unseal(tpm2_device *d, const tpm2_ref *r, const TPM2B_AUTH *auth,
                      TPM2B_SENSITIVE_DATA **out)
{
    ESYS_TR h = ESYS_TR_NONE, session = ESYS_TR_NONE, policy = ESYS_TR_NONE;
    TSS2_RC rc = kms_tpm2_load(d, &r->pub, &r->priv, &h);
    if (rc == TSS2_RC_SUCCESS && kms_tpm2_ref_has_auth(r))
        rc = Esys_TR_SetAuth(d->esys, h, auth);
    if (rc == TSS2_RC_SUCCESS && r->pcr_mask != 0) {
        rc = pcr_session(d, r->pcr_mask, kms_tpm2_ref_has_auth(r), TPM2_SE_POLICY, &policy, NULL);
        session = policy;
    } else if (rc == TSS2_RC_SUCCESS) {
        rc = kms_tpm2_session(d, &session);
    }
    if (rc == TSS2_RC_SUCCESS) {
        rc = Esys_Unseal(d->esys, h, session, ESYS_TR_NONE, ESYS_TR_NONE, out);
        if (rc != TSS2_RC_SUCCESS && policy == ESYS_TR_NONE)
            kms_tpm2_drop_session(d);
    }
    if (policy != ESYS_TR_NONE)
        (void)Esys_FlushContext(d->esys, policy);
    if (h != ESYS_TR_NONE)
        (void)Esys_FlushContext(d->esys, h);
    return rc;
}

int kms_tpm2_seal_open(tpm2_device *d, const tpm2_ref *r, const TPM2B_AUTH *auth, kms_secret **key)
{
    TPM2B_SENSITIVE_DATA *data = NULL;
    kms_secret *s = NULL;
    TSS2_RC rc;
    int ret;
    TPM2_RUN(d, rc, unseal(d, r, auth, &data));
    if (rc != TSS2_RC_SUCCESS) {
        ret = kms_tpm2_error(d, rc, "unseal");
        if (ret == KMS_EPRECOND) {
            char pcrs[80];
            pcr_names(r->pcr_mask, pcrs, sizeof(pcrs));
            ret = kms_error_set_public(
                KMS_EPRECOND,
                "tpm2: key bound to PCRs %s: their values changed since it was "
                "sealed, unseal refused",
                pcrs);
        }
    } else if (data->size != 32) {
        ret = kms_error_set(KMS_EKEYCHECK, "tpm2: sealed key is not 32 bytes");
    } else if ((ret = kms_secret_new(32, &s)) == 0) {
        memcpy(s->data, data->buffer, 32);
        *key = s;
    }
    if (data != NULL) {
        OPENSSL_cleanse(data, sizeof(*data));
        Esys_Free(data);
    }
    return ret;
}
