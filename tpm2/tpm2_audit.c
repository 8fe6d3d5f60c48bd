/* TPM2 backend: the audit signing key (kms_backend_ops.audit_key_create,
 * audit_key_public and audit_sign; docs/tpm2.md, "Audit signing key").
 *
 * One ECC P-256 signing key per TPM, generated inside it under the storage
 * primary and made persistent two handles after the primary's
 * (primary_handle + 2; the state-integrity key has + 1), shared by both
 * modes. Every signature is one TPM2_Sign (ECDSA, SHA-256) over the
 * caller's 32-byte digest, authorized by the salted session; the object's
 * authValue is derived from the object auth secret like a key version's
 * (key id all zero, version 0xFFFFFFFF, which no key version has), or empty
 * without one.
 *
 * Before each use the object at the handle is checked: an ECC P-256 ECDSA
 * SHA-256 signing key that the TPM generated (sensitiveDataOrigin) and that
 * cannot leave it (fixedTPM, fixedParent), not restricted, not a decryption
 * key. Anything else there is KMS_EKEYCHECK, never used. */
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/obj_mac.h>

#include "base/log.h"
#include "tpm2_internal.h"

#define AUDIT_REQUIRED                                                                             \
    (TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |            \
     TPMA_OBJECT_SIGN_ENCRYPT)
#define AUDIT_FORBIDDEN (TPMA_OBJECT_DECRYPT | TPMA_OBJECT_RESTRICTED)
/* The authValue's derivation input: no key version has this version. */
#define AUDIT_AUTH_VERSION 0xFFFFFFFFu
#define COORD_LEN 32

static int audit_handle(const tpm2_device *d, TPM2_HANDLE *h)
{
    uint32_t p = d->cfg.primary_handle;
    if (p < KMS_TPM2_PERSISTENT_FIRST || p + 2 > KMS_TPM2_PERSISTENT_LAST)
        return kms_error_set(KMS_EINVAL,
                             "tpm2: no persistent handle two after the primary 0x%08x for the "
                             "audit signing key",
                             p);
    *h = p + 2;
    return KMS_OK;
}

/* The audit key's authValue (see above). The caller wipes *out. */
static int audit_auth(tpm2_device *d, TPM2B_AUTH *out)
{
    tpm2_ref r;
    memset(&r, 0, sizeof(r));
    r.version = AUDIT_AUTH_VERSION;
    r.auth = d->auth_key != NULL;
    return kms_tpm2_object_auth(d, &r, out);
}

/* NULL if pub is a safe audit key, else what is wrong with it. */
static const char *unsafe_audit_key(const TPM2B_PUBLIC *pub)
{
    const TPMT_PUBLIC *p = &pub->publicArea;
    if (p->type != TPM2_ALG_ECC)
        return "it is not an ECC key";
    const TPMS_ECC_PARMS *e = &p->parameters.eccDetail;
    if (e->curveID != TPM2_ECC_NIST_P256)
        return "its curve is not P-256";
    if (e->scheme.scheme != TPM2_ALG_ECDSA || e->scheme.details.ecdsa.hashAlg != TPM2_ALG_SHA256)
        return "its scheme is not ECDSA with SHA-256";
    if ((p->objectAttributes & AUDIT_REQUIRED) != AUDIT_REQUIRED)
        return "it may leave the TPM or was not generated in it (fixedTPM, fixedParent, "
               "sensitiveDataOrigin, sign)";
    if ((p->objectAttributes & AUDIT_FORBIDDEN) != 0)
        return "it is a restricted or decryption key";
    return NULL;
}

/* The uncompressed point of pub (a safe audit key), each coordinate
 * left-padded to 32 bytes; KMS_EKEYCHECK if it is not a P-256 point. */
static int audit_point(const TPM2B_PUBLIC *pub, uint8_t out[KMS_AUDIT_PUB_LEN])
{
    const TPMS_ECC_POINT *q = &pub->publicArea.unique.ecc;
    if (q->x.size == 0 || q->x.size > COORD_LEN || q->y.size == 0 || q->y.size > COORD_LEN)
        return kms_error_set(KMS_EKEYCHECK,
                             "tpm2: the audit signing key's public point is not P-256 sized");
    uint8_t pt[KMS_AUDIT_PUB_LEN];
    memset(pt, 0, sizeof(pt));
    pt[0] = 0x04;
    memcpy(pt + 1 + COORD_LEN - q->x.size, q->x.buffer, q->x.size);
    memcpy(pt + 1 + 2 * COORD_LEN - q->y.size, q->y.buffer, q->y.size);
    EC_GROUP *g = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    EC_POINT *ep = g != NULL ? EC_POINT_new(g) : NULL;
    int ok = ep != NULL && EC_POINT_oct2point(g, ep, pt, sizeof(pt), NULL) == 1;
    EC_POINT_free(ep);
    EC_GROUP_free(g);
    if (!ok)
        return kms_error_set(KMS_EKEYCHECK,
                             "tpm2: the audit signing key's public point is not on P-256");
    memcpy(out, pt, sizeof(pt));
    return KMS_OK;
}

/* Why a try stopped short of the TPM's answer. */
struct audit_try {
    int err;               /* a kms error found on our side (unsafe object, no secret) */
    int found;             /* the handle held an object */
    const uint8_t *digest; /* NULL: only read the public point */
    uint8_t pub[KMS_AUDIT_PUB_LEN];
    TPMT_SIGNATURE *sig;
};

/* One signature over the digest with the key at tr. TPM2_Sign's response
 * starts with a TPMT_SIGNATURE, not a sized buffer, so the session may
 * encrypt the command's digest but not the response: ENCRYPT is cleared for
 * this command and set again after. */
static TSS2_RC sign_once(tpm2_device *d, ESYS_TR key, const uint8_t *digest, TPMT_SIGNATURE **sig)
{
    ESYS_TR session = ESYS_TR_NONE;
    TSS2_RC rc = kms_tpm2_session(d, &session);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    rc = Esys_TRSess_SetAttributes(d->esys, session, 0, TPMA_SESSION_ENCRYPT);
    if (rc != TSS2_RC_SUCCESS) {
        kms_tpm2_drop_session(d);
        return rc;
    }
    TPM2B_DIGEST dg = {.size = KMS_AUDIT_DIGEST_LEN};
    memcpy(dg.buffer, digest, KMS_AUDIT_DIGEST_LEN);
    TPMT_SIG_SCHEME scheme = {.scheme = TPM2_ALG_ECDSA};
    scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
    /* A null ticket: the key is not restricted, so the TPM need not have
     * hashed the message itself. */
    TPMT_TK_HASHCHECK none = {.tag = TPM2_ST_HASHCHECK, .hierarchy = TPM2_RH_NULL};
    rc = Esys_Sign(d->esys, key, session, ESYS_TR_NONE, ESYS_TR_NONE, &dg, &scheme, &none, sig);
    if (rc != TSS2_RC_SUCCESS) {
        kms_tpm2_drop_session(d);
        return rc;
    }
    TSS2_RC rc2 =
        Esys_TRSess_SetAttributes(d->esys, session, TPMA_SESSION_ENCRYPT, TPMA_SESSION_ENCRYPT);
    if (rc2 != TSS2_RC_SUCCESS)
        kms_tpm2_drop_session(d); /* the next command starts a fresh one */
    return rc;
}

/* Everything one use needs, from looking up the handle on: TPM2_RUN may
 * reconnect (a new ESYS context), so no handle outlives one try. */
static TSS2_RC audit_try(tpm2_device *d, TPM2_HANDLE h, struct audit_try *t)
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
    const char *bad = rc == TSS2_RC_SUCCESS ? unsafe_audit_key(pub) : NULL;
    if (bad != NULL)
        t->err =
            kms_error_set(KMS_EKEYCHECK,
                          "tpm2: the object at 0x%08x is not a safe audit signing key: %s", h, bad);
    if (rc == TSS2_RC_SUCCESS && t->err == 0)
        t->err = audit_point(pub, t->pub);
    Esys_Free(pub);
    if (rc == TSS2_RC_SUCCESS && t->err == 0 && t->digest != NULL) {
        TPM2B_AUTH auth;
        memset(&auth, 0, sizeof(auth));
        t->err = audit_auth(d, &auth);
        if (t->err == 0)
            rc = Esys_TR_SetAuth(d->esys, tr, &auth);
        OPENSSL_cleanse(&auth, sizeof(auth));
        if (rc == TSS2_RC_SUCCESS && t->err == 0)
            rc = sign_once(d, tr, t->digest, &t->sig);
    }
    (void)Esys_TR_Close(d->esys, &tr);
    return t->err != 0 ? TSS2_ESYS_RC_BAD_VALUE : rc;
}

/* Runs one try under TPM2_RUN and maps the outcome. */
static int audit_run(tpm2_device *d, struct audit_try *t)
{
    TPM2_HANDLE h = 0;
    KMS_GUARD(audit_handle(d, &h));
    TSS2_RC rc;
    TPM2_RUN(d, rc, audit_try(d, h, t));
    if (t->err != 0)
        return t->err;
    if (rc != TSS2_RC_SUCCESS && !t->found && kms_tpm2_rc_from_tpm(rc) &&
        kms_tpm2_rc_base(rc) == TPM2_RC_HANDLE)
        return kms_error_set(KMS_ENOTFOUND, "tpm2: no audit signing key at 0x%08x", h);
    if (rc != TSS2_RC_SUCCESS)
        return kms_tpm2_error(d, rc, t->digest != NULL ? "audit signature" : "audit public key");
    return KMS_OK;
}

int kms_tpm2_audit_create(tpm2_device *d)
{
    TPM2_HANDLE h = 0;
    KMS_GUARD(audit_handle(d, &h));
    struct audit_try t = {.digest = NULL};
    int r = audit_run(d, &t);
    if (r == 0 || r == KMS_EKEYCHECK) {
        /* Something is at the handle: never replaced, even if unsafe. */
        return kms_error_set(KMS_EEXISTS,
                             "tpm2: an object is already at 0x%08x (audit signing "
                             "key handle)",
                             h);
    }
    if (r != KMS_ENOTFOUND)
        return r;
    kms_error_clear();
    TPM2B_SENSITIVE_CREATE sens;
    memset(&sens, 0, sizeof(sens));
    TPM2B_PUBLIC tmpl = {.publicArea = {.type = TPM2_ALG_ECC, .nameAlg = TPM2_ALG_SHA256}};
    tmpl.publicArea.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                       TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                                       TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_NODA;
    TPMS_ECC_PARMS *e = &tmpl.publicArea.parameters.eccDetail;
    e->symmetric.algorithm = TPM2_ALG_NULL;
    e->scheme.scheme = TPM2_ALG_ECDSA;
    e->scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
    e->curveID = TPM2_ECC_NIST_P256;
    e->kdf.scheme = TPM2_ALG_NULL;
    KMS_GUARD(audit_auth(d, &sens.sensitive.userAuth));
    TSS2_RC rc;
    TPM2_RUN(d, rc, kms_tpm2_make_persistent(d, &sens, &tmpl, h));
    OPENSSL_cleanse(&sens, sizeof(sens));
    if (rc != TSS2_RC_SUCCESS)
        return kms_tpm2_error(d, rc, "create the audit signing key");
    kms_log_info("tpm2: audit signing key created at 0x%08x", h);
    return KMS_OK;
}

int kms_tpm2_audit_public(tpm2_device *d, uint8_t pub[KMS_AUDIT_PUB_LEN])
{
    struct audit_try t = {.digest = NULL};
    KMS_GUARD(audit_run(d, &t));
    memcpy(pub, t.pub, KMS_AUDIT_PUB_LEN);
    return KMS_OK;
}

/* x left-padded into out[COORD_LEN]; KMS_EINTERNAL if it is longer. */
static int pad_coord(const TPM2B_ECC_PARAMETER *x, uint8_t out[COORD_LEN])
{
    if (x->size > COORD_LEN)
        return kms_error_set(KMS_EINTERNAL, "tpm2: ECDSA signature half above 32 bytes");
    memset(out, 0, COORD_LEN);
    memcpy(out + COORD_LEN - x->size, x->buffer, x->size);
    return KMS_OK;
}

int kms_tpm2_audit_sign(tpm2_device *d, const uint8_t digest[KMS_AUDIT_DIGEST_LEN],
                        uint8_t sig[KMS_AUDIT_SIG_LEN])
{
    struct audit_try t = {.digest = digest};
    int r = audit_run(d, &t);
    uint8_t raw[KMS_AUDIT_SIG_LEN];
    if (r == 0 && (t.sig == NULL || t.sig->sigAlg != TPM2_ALG_ECDSA))
        r = kms_error_set(KMS_EINTERNAL, "tpm2: the TPM's audit signature is not ECDSA");
    if (r == 0)
        r = pad_coord(&t.sig->signature.ecdsa.signatureR, raw);
    if (r == 0)
        r = pad_coord(&t.sig->signature.ecdsa.signatureS, raw + COORD_LEN);
    if (r == 0)
        memcpy(sig, raw, KMS_AUDIT_SIG_LEN);
    Esys_Free(t.sig);
    return r;
}
