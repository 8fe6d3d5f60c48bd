/* TPM2 backend: crypto-shredding. Each key version made since reference
 * format 3 has its own NV index on the chip holding 32 random bytes (the
 * shred secret), and the version's object authValue is derived from them:
 *
 *   authValue = HMAC-SHA256(shred secret, "kms-tpm2-auth-v2" || key id ||
 *                           version (u32 BE) || [format-2 authValue])
 *
 * (the bracketed part when the auth secret is configured: format 4).
 * Destroying the version undefines the index, so the secret is gone from
 * the chip and no copy of the reference (a database backup, a WAL file)
 * can derive the authValue again: the sealed key no longer unseals, the
 * resident key no longer answers. The secret crosses the bus only inside
 * the salted session (NV_Write's data and NV_Read's answer are the
 * commands' first parameters); the index's own authValue is derived from
 * the auth secret (empty without one: test harnesses). */
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <tss2/tss2_rc.h>

#include "base/log.h"
#include "tpm2_internal.h"

#define NV_AUTH_LABEL "kms-tpm2-nv-v1"
#define SHRED_AUTH_LABEL "kms-tpm2-auth-v2"
/* Attempts at a free random handle before giving up. */
#define HANDLE_TRIES 8

/* What kms asks for an index; what ReadPublic shows must match it
 * (TPMA_NV_WRITTEN aside) before kms reads or undefines one. */
/* An ordinary index (type 0), read and written with its own authValue. */
#define NV_ATTRS ((TPMA_NV)(TPMA_NV_AUTHREAD | TPMA_NV_AUTHWRITE | TPMA_NV_NO_DA))

static void version_msg(const char *label, size_t label_len, const tpm2_ref *r, uint8_t *msg)
{
    memcpy(msg, label, label_len);
    memcpy(msg + label_len, r->key_id, KMS_KEY_ID_LEN);
    for (int i = 0; i < 4; i++)
        msg[label_len + KMS_KEY_ID_LEN + i] = (uint8_t)(r->version >> (24 - 8 * i));
}

/* The index's authValue: HMAC(auth secret, "kms-tpm2-nv-v1" || key id ||
 * version), or empty without an auth secret. */
static int nv_auth(tpm2_device *d, const tpm2_ref *r, TPM2B_AUTH *out)
{
    memset(out, 0, sizeof(*out));
    if (!r->auth)
        return KMS_OK;
    if (d->auth_key == NULL)
        return kms_error_set(KMS_EPRECOND,
                             "tpm2: key version needs the object auth secret, and none is "
                             "configured");
    uint8_t msg[sizeof(NV_AUTH_LABEL) - 1 + KMS_KEY_ID_LEN + 4];
    version_msg(NV_AUTH_LABEL, sizeof(NV_AUTH_LABEL) - 1, r, msg);
    unsigned int len = 0;
    if (HMAC(EVP_sha256(), d->auth_key->data, (int)d->auth_key->len, msg, sizeof(msg), out->buffer,
             &len) == NULL ||
        len != 32) {
        OPENSSL_cleanse(out, sizeof(*out));
        return kms_error_set(KMS_EINTERNAL, "tpm2: cannot derive an index's authValue");
    }
    out->size = 32;
    return KMS_OK;
}

int kms_tpm2_version_auth(tpm2_device *d, const tpm2_ref *r, const uint8_t *shred, TPM2B_AUTH *out)
{
    if (r->nv_index == 0)
        return kms_tpm2_object_auth(d, r, out);
    if (shred == NULL)
        return kms_error_set(KMS_EINTERNAL, "tpm2: no shred secret for a format-3 version");
    TPM2B_AUTH inner;
    KMS_GUARD(kms_tpm2_object_auth(d, r, &inner)); /* empty unless r->auth */
    uint8_t msg[sizeof(SHRED_AUTH_LABEL) - 1 + KMS_KEY_ID_LEN + 4 + sizeof(inner.buffer)];
    size_t n = sizeof(SHRED_AUTH_LABEL) - 1 + KMS_KEY_ID_LEN + 4;
    version_msg(SHRED_AUTH_LABEL, sizeof(SHRED_AUTH_LABEL) - 1, r, msg);
    memcpy(msg + n, inner.buffer, inner.size);
    n += inner.size;
    unsigned int len = 0;
    memset(out, 0, sizeof(*out));
    int ok =
        HMAC(EVP_sha256(), shred, TPM2_SHRED_LEN, msg, n, out->buffer, &len) != NULL && len == 32;
    OPENSSL_cleanse(&inner, sizeof(inner));
    OPENSSL_cleanse(msg, sizeof(msg));
    if (!ok) {
        OPENSSL_cleanse(out, sizeof(*out));
        return kms_error_set(KMS_EINTERNAL, "tpm2: cannot derive an object's authValue");
    }
    out->size = 32;
    return KMS_OK;
}

static int is_ours(const TPM2B_NV_PUBLIC *p, TPM2_HANDLE index)
{
    return p->nvPublic.nvIndex == index && p->nvPublic.nameAlg == TPM2_ALG_SHA256 &&
           (p->nvPublic.attributes & ~(TPMA_NV)TPMA_NV_WRITTEN) == NV_ATTRS &&
           p->nvPublic.authPolicy.size == 0 && p->nvPublic.dataSize == TPM2_SHRED_LEN;
}

/* An ESYS handle for the index if it is one kms made (*h = ESYS_TR_NONE
 * and success if it is absent or someone else's). */
static TSS2_RC find_index(tpm2_device *d, TPM2_HANDLE index, ESYS_TR *h)
{
    TPM2B_NV_PUBLIC *pub = NULL;
    *h = ESYS_TR_NONE;
    TSS2_RC rc = Esys_TR_FromTPMPublic(d->esys, index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, h);
    if (rc != TSS2_RC_SUCCESS) {
        *h = ESYS_TR_NONE;
        return kms_tpm2_rc_base(rc) == TPM2_RC_HANDLE ? TSS2_RC_SUCCESS : rc;
    }
    rc = Esys_NV_ReadPublic(d->esys, *h, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL);
    if (rc == TSS2_RC_SUCCESS && !is_ours(pub, index))
        (void)Esys_TR_Close(d->esys, h);
    else if (rc != TSS2_RC_SUCCESS)
        (void)Esys_TR_Close(d->esys, h);
    if (*h == ESYS_TR_NONE && rc == TSS2_RC_SUCCESS)
        kms_log_warn("tpm2: NV index 0x%08x is not a kms shred index", index);
    Esys_Free(pub);
    return rc;
}

static TSS2_RC undefine(tpm2_device *d, TPM2_HANDLE index, int *gone)
{
    ESYS_TR h;
    *gone = 0;
    TSS2_RC rc = find_index(d, index, &h);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    if (h == ESYS_TR_NONE) {
        *gone = 1;
        return TSS2_RC_SUCCESS;
    }
    /* Nothing secret in this command: the owner's password session. On
     * success ESYS forgets h itself. */
    rc = Esys_NV_UndefineSpace(d->esys, ESYS_TR_RH_OWNER, h, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                               ESYS_TR_NONE);
    if (rc != TSS2_RC_SUCCESS)
        (void)Esys_TR_Close(d->esys, &h);
    return rc;
}

/* Defines the index and writes the secret (both under the salted session,
 * so the index's authValue and the secret cross the bus encrypted). */
static TSS2_RC define_and_write(tpm2_device *d, TPM2_HANDLE index, const TPM2B_AUTH *auth,
                                const uint8_t *secret)
{
    TPM2B_NV_PUBLIC pub = {.nvPublic = {.nvIndex = index,
                                        .nameAlg = TPM2_ALG_SHA256,
                                        .attributes = NV_ATTRS,
                                        .dataSize = TPM2_SHRED_LEN}};
    TPM2B_MAX_NV_BUFFER data = {.size = TPM2_SHRED_LEN};
    ESYS_TR session = ESYS_TR_NONE, h = ESYS_TR_NONE;
    TSS2_RC rc = kms_tpm2_session(d, &session);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    rc = Esys_NV_DefineSpace(d->esys, ESYS_TR_RH_OWNER, session, ESYS_TR_NONE, ESYS_TR_NONE, auth,
                             &pub, &h);
    if (rc != TSS2_RC_SUCCESS) {
        kms_tpm2_drop_session(d);
        return rc;
    }
    memcpy(data.buffer, secret, TPM2_SHRED_LEN);
    rc = Esys_TR_SetAuth(d->esys, h, auth);
    if (rc == TSS2_RC_SUCCESS)
        rc = Esys_NV_Write(d->esys, h, h, session, ESYS_TR_NONE, ESYS_TR_NONE, &data, 0);
    OPENSSL_cleanse(&data, sizeof(data));
    if (rc != TSS2_RC_SUCCESS) {
        kms_tpm2_drop_session(d);
        /* No half-made index left behind. */
        if (Esys_NV_UndefineSpace(d->esys, ESYS_TR_RH_OWNER, h, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                  ESYS_TR_NONE) != TSS2_RC_SUCCESS)
            (void)Esys_TR_Close(d->esys, &h);
        return rc;
    }
    (void)Esys_TR_Close(d->esys, &h); /* the index stays; ESYS forgets it */
    return TSS2_RC_SUCCESS;
}

static int nv_full(tpm2_device *d, TSS2_RC rc)
{
    (void)d;
    return kms_error_set_public(
        KMS_EEXHAUSTED,
        "tpm2: the TPM's NV memory is full (%s): every TPM key version holds one NV index until "
        "it is destroyed; destroy keys no longer needed, or create keys on another backend",
        Tss2_RC_Decode(rc));
}

int kms_tpm2_shred_create(tpm2_device *d, tpm2_ref *r, kms_secret **secret)
{
    kms_secret *s = NULL;
    TPM2B_AUTH auth;
    uint8_t pick[4];
    TSS2_RC rc = TSS2_RC_SUCCESS;
    KMS_GUARD(nv_auth(d, r, &auth));
    int ret = kms_secret_new(TPM2_SHRED_LEN, &s);
    if (ret == 0 && RAND_priv_bytes(s->data, TPM2_SHRED_LEN) != 1)
        ret = kms_error_set(KMS_EINTERNAL, "tpm2: no random bytes for a shred secret");
    for (int i = 0; ret == 0 && i < HANDLE_TRIES; i++) {
        if (RAND_bytes(pick, sizeof(pick)) != 1) {
            ret = kms_error_set(KMS_EINTERNAL, "tpm2: no random bytes for an NV handle");
            break;
        }
        TPM2_HANDLE index =
            TPM2_SHRED_NV_FIRST + (((uint32_t)pick[0] << 8 | pick[1]) % TPM2_SHRED_NV_COUNT);
        TPM2_RUN(d, rc, define_and_write(d, index, &auth, s->data));
        if (rc == TSS2_RC_SUCCESS) {
            r->nv_index = index;
            break;
        }
        TSS2_RC b = kms_tpm2_rc_base(rc);
        if (b == TPM2_RC_NV_DEFINED)
            continue; /* taken: another random one */
        if (b == TPM2_RC_NV_SPACE)
            ret = nv_full(d, rc);
        else
            ret = kms_tpm2_error(d, rc, "define shred index");
    }
    if (ret == 0 && r->nv_index == 0)
        ret = kms_error_set(KMS_EEXHAUSTED, "tpm2: no free NV handle for a shred index");
    OPENSSL_cleanse(&auth, sizeof(auth));
    if (ret != 0) {
        kms_secret_free(s);
        return ret;
    }
    *secret = s;
    return KMS_OK;
}

static TSS2_RC read_index(tpm2_device *d, TPM2_HANDLE index, const TPM2B_AUTH *auth,
                          TPM2B_MAX_NV_BUFFER **out, int *gone)
{
    ESYS_TR h, session = ESYS_TR_NONE;
    *gone = 0;
    TSS2_RC rc = find_index(d, index, &h);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    if (h == ESYS_TR_NONE) {
        *gone = 1;
        return TSS2_RC_SUCCESS;
    }
    rc = Esys_TR_SetAuth(d->esys, h, auth);
    if (rc == TSS2_RC_SUCCESS)
        rc = kms_tpm2_session(d, &session);
    if (rc == TSS2_RC_SUCCESS) {
        rc = Esys_NV_Read(d->esys, h, h, session, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_SHRED_LEN, 0,
                          out);
        if (rc != TSS2_RC_SUCCESS)
            kms_tpm2_drop_session(d);
    }
    (void)Esys_TR_Close(d->esys, &h);
    return rc;
}

/* Whether r's object loads under this TPM's primary (then flushed): a
 * reference from another TPM is KMS_EKEYCHECK, whatever its index. */
static int loads_here(tpm2_device *d, const tpm2_ref *r)
{
    ESYS_TR h = ESYS_TR_NONE;
    TSS2_RC rc;
    TPM2_RUN(d, rc, kms_tpm2_load(d, &r->pub, &r->priv, &h));
    if (rc != TSS2_RC_SUCCESS)
        return kms_tpm2_error(d, rc, "load");
    (void)Esys_FlushContext(d->esys, h);
    return KMS_OK;
}

int kms_tpm2_shred_read(tpm2_device *d, const tpm2_ref *r, kms_secret **secret)
{
    TPM2B_AUTH auth;
    TPM2B_MAX_NV_BUFFER *data = NULL;
    TSS2_RC rc;
    int gone = 0, ret = KMS_OK;
    KMS_GUARD(nv_auth(d, r, &auth));
    TPM2_RUN(d, rc, read_index(d, r->nv_index, &auth, &data, &gone));
    OPENSSL_cleanse(&auth, sizeof(auth));
    if (rc != TSS2_RC_SUCCESS) {
        ret = kms_tpm2_error(d, rc, "read shred index");
    } else if (gone) {
        /* Destroyed, or a reference of another TPM (KMS_EKEYCHECK). */
        ret = loads_here(d, r);
        if (ret == 0)
            ret = kms_error_set(KMS_ENOTFOUND,
                                "tpm2: key version destroyed (its NV index 0x%08x is gone from "
                                "the TPM)",
                                r->nv_index);
    } else if (data->size != TPM2_SHRED_LEN) {
        ret = kms_error_set(KMS_EKEYCHECK, "tpm2: shred index 0x%08x does not hold 32 bytes",
                            r->nv_index);
    } else if ((ret = kms_secret_new(TPM2_SHRED_LEN, secret)) == 0) {
        memcpy((*secret)->data, data->buffer, TPM2_SHRED_LEN);
    }
    if (data != NULL) {
        OPENSSL_cleanse(data, sizeof(*data));
        Esys_Free(data);
    }
    return ret;
}

int kms_tpm2_shred_destroy(tpm2_device *d, const tpm2_ref *r)
{
    TSS2_RC rc;
    int gone = 0;
    TPM2_RUN(d, rc, undefine(d, r->nv_index, &gone));
    if (rc != TSS2_RC_SUCCESS)
        return kms_tpm2_error(d, rc, "undefine shred index");
    if (gone)
        return kms_error_set(KMS_ENOTFOUND, "tpm2: key version already destroyed");
    return KMS_OK;
}
