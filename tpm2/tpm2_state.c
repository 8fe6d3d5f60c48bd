/* TPM2 backend: the state-integrity key (kms_backend_ops.state_key_create
 * and state_mac; docs/tpm2.md, "State-integrity key").
 *
 * One HMAC-SHA256 keyed-hash object per TPM, generated inside it under the
 * storage primary and made persistent at the handle after the primary's
 * (primary_handle + 1), in both modes: its sensitive part never leaves the
 * TPM, and nothing about it is in the database. Every MAC is one TPM2_HMAC
 * (or an HMAC sequence for inputs above one TPM buffer) authorized by the
 * salted, parameter-encrypting session; the object's authValue is derived
 * from the object auth secret like a key version's (key id all zero,
 * version 0, which no key version has), or empty without one.
 *
 * Before each use the object at the handle is checked: a keyed-hash
 * HMAC-SHA256 signing key that the TPM generated (sensitiveDataOrigin) and
 * that cannot leave it (fixedTPM, fixedParent), not restricted, not a
 * decryption key. Anything else there is KMS_EKEYCHECK, never used. */
#include <string.h>

#include <openssl/crypto.h>

#include "base/log.h"
#include "tpm2_internal.h"

#define STATE_REQUIRED                                                                             \
    (TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |            \
     TPMA_OBJECT_SIGN_ENCRYPT)
#define STATE_FORBIDDEN (TPMA_OBJECT_DECRYPT | TPMA_OBJECT_RESTRICTED)

static int state_handle(const tpm2_device *d, TPM2_HANDLE *h)
{
    uint32_t p = d->cfg.primary_handle;
    if (p < KMS_TPM2_PERSISTENT_FIRST || p >= KMS_TPM2_PERSISTENT_LAST)
        return kms_error_set(KMS_EINVAL,
                             "tpm2: no persistent handle after the primary 0x%08x for the "
                             "state-integrity key",
                             p);
    *h = p + 1;
    return KMS_OK;
}

/* The state key's authValue (see above). The caller wipes *out. */
static int state_auth(tpm2_device *d, TPM2B_AUTH *out)
{
    tpm2_ref r;
    memset(&r, 0, sizeof(r));
    r.auth = d->auth_key != NULL;
    return kms_tpm2_object_auth(d, &r, out);
}

/* Finds the object at h: *tr set on success; KMS_ENOTFOUND if the handle
 * is empty (TPM_RC_HANDLE), KMS_EUNAVAIL if the TPM does not answer. */
static int find_state_key(tpm2_device *d, TPM2_HANDLE h, ESYS_TR *tr)
{
    TSS2_RC rc;
    TPM2_RUN(d, rc,
             Esys_TR_FromTPMPublic(d->esys, h, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, tr));
    if (rc == TSS2_RC_SUCCESS)
        return KMS_OK;
    *tr = ESYS_TR_NONE;
    if (kms_tpm2_rc_from_tpm(rc) && kms_tpm2_rc_base(rc) == TPM2_RC_HANDLE)
        return kms_error_set(KMS_ENOTFOUND, "tpm2: no state-integrity key at 0x%08x", h);
    return kms_tpm2_error(d, rc, "state-integrity key");
}

/* NULL if pub is a safe state key, else what is wrong with it. */
static const char *unsafe_state_key(const TPM2B_PUBLIC *pub)
{
    const TPMT_PUBLIC *p = &pub->publicArea;
    if (p->type != TPM2_ALG_KEYEDHASH)
        return "it is not a keyed-hash object";
    if (p->parameters.keyedHashDetail.scheme.scheme != TPM2_ALG_HMAC ||
        p->parameters.keyedHashDetail.scheme.details.hmac.hashAlg != TPM2_ALG_SHA256)
        return "its scheme is not HMAC-SHA256";
    if ((p->objectAttributes & STATE_REQUIRED) != STATE_REQUIRED)
        return "it may leave the TPM or was not generated in it (fixedTPM, fixedParent, "
               "sensitiveDataOrigin, sign)";
    if ((p->objectAttributes & STATE_FORBIDDEN) != 0)
        return "it is a restricted or decryption key";
    return NULL;
}

int kms_tpm2_state_create(tpm2_device *d)
{
    TPM2_HANDLE h = 0;
    KMS_GUARD(state_handle(d, &h));
    ESYS_TR tr = ESYS_TR_NONE;
    int r = find_state_key(d, h, &tr);
    if (r == 0) {
        (void)Esys_TR_Close(d->esys, &tr);
        return kms_error_set(KMS_EEXISTS, "tpm2: a state-integrity key is already at 0x%08x", h);
    }
    if (r != KMS_ENOTFOUND)
        return r;
    TPM2B_SENSITIVE_CREATE sens;
    memset(&sens, 0, sizeof(sens));
    TPM2B_PUBLIC tmpl = {.publicArea = {.type = TPM2_ALG_KEYEDHASH, .nameAlg = TPM2_ALG_SHA256}};
    tmpl.publicArea.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                       TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                                       TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_NODA;
    tmpl.publicArea.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_HMAC;
    tmpl.publicArea.parameters.keyedHashDetail.scheme.details.hmac.hashAlg = TPM2_ALG_SHA256;
    KMS_GUARD(state_auth(d, &sens.sensitive.userAuth));
    TSS2_RC rc;
    TPM2_RUN(d, rc, kms_tpm2_make_persistent(d, &sens, &tmpl, h));
    OPENSSL_cleanse(&sens, sizeof(sens));
    if (rc != TSS2_RC_SUCCESS)
        return kms_tpm2_error(d, rc, "create the state-integrity key");
    kms_log_info("tpm2: state-integrity key created at 0x%08x", h);
    return KMS_OK;
}

/* One MAC: TPM2_HMAC for what fits one buffer, else an HMAC sequence. */
static TSS2_RC mac_once(tpm2_device *d, ESYS_TR key, const uint8_t *in, size_t len,
                        TPM2B_DIGEST **mac)
{
    ESYS_TR session = ESYS_TR_NONE;
    TSS2_RC rc = kms_tpm2_session(d, &session);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    TPM2B_MAX_BUFFER buf;
    if (len <= sizeof(buf.buffer)) {
        buf.size = (UINT16)len;
        if (len > 0)
            memcpy(buf.buffer, in, len);
        rc = Esys_HMAC(d->esys, key, session, ESYS_TR_NONE, ESYS_TR_NONE, &buf, TPM2_ALG_SHA256,
                       mac);
        if (rc != TSS2_RC_SUCCESS)
            kms_tpm2_drop_session(d);
        return rc;
    }
    TPM2B_AUTH none = {0};
    ESYS_TR seq = ESYS_TR_NONE;
    rc = Esys_HMAC_Start(d->esys, key, session, ESYS_TR_NONE, ESYS_TR_NONE, &none, TPM2_ALG_SHA256,
                         &seq);
    if (rc != TSS2_RC_SUCCESS) {
        kms_tpm2_drop_session(d);
        return rc;
    }
    size_t off = 0;
    /* The sequence's own authValue is empty: the input is not secret. */
    while (rc == TSS2_RC_SUCCESS && len - off > sizeof(buf.buffer)) {
        buf.size = (UINT16)sizeof(buf.buffer);
        memcpy(buf.buffer, in + off, sizeof(buf.buffer));
        off += sizeof(buf.buffer);
        rc = Esys_SequenceUpdate(d->esys, seq, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &buf);
    }
    if (rc == TSS2_RC_SUCCESS) {
        buf.size = (UINT16)(len - off);
        memcpy(buf.buffer, in + off, len - off);
        TPMT_TK_HASHCHECK *ticket = NULL;
        rc = Esys_SequenceComplete(d->esys, seq, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &buf,
                                   ESYS_TR_RH_NULL, mac, &ticket);
        Esys_Free(ticket);
        if (rc == TSS2_RC_SUCCESS)
            return rc; /* the sequence object is gone with it */
    }
    (void)Esys_FlushContext(d->esys, seq);
    return rc;
}

/* Why a try stopped short of the TPM's answer to the MAC itself. */
struct state_try {
    int err;   /* a kms error found on our side (unsafe object, no secret) */
    int found; /* the handle held an object */
    TPM2B_DIGEST *mac;
};

/* Everything one MAC needs, from looking up the handle on: TPM2_RUN may
 * reconnect (a new ESYS context), so no handle outlives one try. */
static TSS2_RC state_try(tpm2_device *d, TPM2_HANDLE h, const uint8_t *in, size_t len,
                         struct state_try *t)
{
    t->err = 0;
    t->found = 0;
    ESYS_TR tr = ESYS_TR_NONE;
    TSS2_RC rc = Esys_TR_FromTPMPublic(d->esys, h, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &tr);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    t->found = 1;
    TPM2B_PUBLIC *pub = NULL;
    rc = Esys_ReadPublic(d->esys, tr, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL, NULL);
    const char *bad = rc == TSS2_RC_SUCCESS ? unsafe_state_key(pub) : NULL;
    Esys_Free(pub);
    if (bad != NULL)
        t->err = kms_error_set(KMS_EKEYCHECK,
                               "tpm2: the object at 0x%08x is not a safe state-integrity key: %s",
                               h, bad);
    TPM2B_AUTH auth;
    memset(&auth, 0, sizeof(auth));
    if (rc == TSS2_RC_SUCCESS && t->err == 0)
        t->err = state_auth(d, &auth);
    if (rc == TSS2_RC_SUCCESS && t->err == 0)
        rc = Esys_TR_SetAuth(d->esys, tr, &auth);
    OPENSSL_cleanse(&auth, sizeof(auth));
    if (rc == TSS2_RC_SUCCESS && t->err == 0)
        rc = mac_once(d, tr, in, len, &t->mac);
    (void)Esys_TR_Close(d->esys, &tr);
    return t->err != 0 ? TSS2_ESYS_RC_BAD_VALUE : rc;
}

int kms_tpm2_state_mac(tpm2_device *d, const uint8_t *in, size_t len, uint8_t out[32])
{
    TPM2_HANDLE h = 0;
    KMS_GUARD(state_handle(d, &h));
    struct state_try t = {0, 0, NULL};
    TSS2_RC rc;
    TPM2_RUN(d, rc, state_try(d, h, in, len, &t));
    int r = KMS_OK;
    if (t.err != 0)
        r = t.err;
    else if (rc != TSS2_RC_SUCCESS && !t.found && kms_tpm2_rc_from_tpm(rc) &&
             kms_tpm2_rc_base(rc) == TPM2_RC_HANDLE)
        r = kms_error_set(KMS_ENOTFOUND, "tpm2: no state-integrity key at 0x%08x", h);
    else if (rc != TSS2_RC_SUCCESS)
        r = kms_tpm2_error(d, rc, "state MAC");
    else if (t.mac->size != 32)
        r = kms_error_set(KMS_EINTERNAL, "tpm2: state MAC is not 32 bytes");
    else
        memcpy(out, t.mac->buffer, 32);
    if (t.mac != NULL) {
        OPENSSL_cleanse(t.mac, sizeof(*t.mac));
        Esys_Free(t.mac);
    }
    return r;
}
