/* TPM2 backend: the kms_backend ops for sealed and resident key versions
 * (kms_tpm2.h). The TPM is used to create versions, to unseal a sealed
 * version once when it is first opened, and (resident mode) to derive each
 * operation's key; sealed-mode wrap/unwrap never touch the TPM. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "kms/log.h"
#include "tpm2/tpm2_internal.h"

#define RESIDENT_LABEL "kms-tpm2-resident-v1"
#define MAX_TRIES 5

struct kms_backend_key {
    tpm2_ref ref;
    kms_secret *key; /* sealed: the unsealed AES-256 key, locked memory */
};

/* The sealed and the resident backend share one device (one connection:
 * a TPM has one owner). */
typedef struct tpm2_backend {
    kms_backend base;
    tpm2_device *dev;
    kms_tpm2_mode mode;
    EVP_CIPHER *gcm;
} tpm2_backend;

static tpm2_backend *impl(kms_backend *b)
{
    return (tpm2_backend *)b->impl;
}

/* Runs `call` (a TSS2_RC expression) with the lock held, retrying the
 * codes the TPM asks to retry and restarting once after a reset. */
#define TPM_RUN(d, rc, call)                                                                       \
    do {                                                                                           \
        int restarted_ = 0;                                                                        \
        for (int try_ = 0; try_ < MAX_TRIES; try_++) {                                             \
            (rc) = (call);                                                                         \
            int k_ = (rc) == TSS2_RC_SUCCESS ? 0 : kms_tpm2_retryable(rc);                         \
            if (k_ == 2 && !restarted_ && kms_tpm2_restart(d) == 0) {                              \
                restarted_ = 1;                                                                    \
                continue;                                                                          \
            }                                                                                      \
            if (k_ == 1) {                                                                         \
                usleep(2000u << try_);                                                             \
                continue;                                                                          \
            }                                                                                      \
            break;                                                                                 \
        }                                                                                          \
    } while (0)

/* ---- policy sessions ----------------------------------------------------------------- */

/* A policy (or trial) session with PolicyPCR over mask; *digest (optional)
 * receives the policy digest. */
static TSS2_RC pcr_session(tpm2_device *d, uint32_t mask, TPM2_SE type, ESYS_TR *session,
                           TPM2B_DIGEST **digest)
{
    TPMT_SYM_DEF sym = {.algorithm = TPM2_ALG_NULL};
    TPML_PCR_SELECTION sel;
    TPM2B_DIGEST empty = {0};
    kms_tpm2_pcr_selection(mask, &sel);
    TSS2_RC rc =
        Esys_StartAuthSession(d->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                              ESYS_TR_NONE, NULL, type, &sym, TPM2_ALG_SHA256, session);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    rc = Esys_PolicyPCR(d->esys, *session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &empty, &sel);
    if (rc == TSS2_RC_SUCCESS && digest != NULL)
        rc = Esys_PolicyGetDigest(d->esys, *session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                  digest);
    if (rc != TSS2_RC_SUCCESS) {
        (void)Esys_FlushContext(d->esys, *session);
        *session = ESYS_TR_NONE;
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

/* ---- create ------------------------------------------------------------------------------ */

static TSS2_RC create_object(tpm2_device *d, const TPM2B_SENSITIVE_CREATE *sens,
                             const TPM2B_PUBLIC *tmpl, tpm2_ref *r)
{
    TPM2B_DATA outside = {0};
    TPML_PCR_SELECTION none = {0};
    TPM2B_PRIVATE *priv = NULL;
    TPM2B_PUBLIC *pub = NULL;
    TSS2_RC rc = Esys_Create(d->esys, d->primary, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                             sens, tmpl, &outside, &none, &priv, &pub, NULL, NULL, NULL);
    if (rc == TSS2_RC_SUCCESS) {
        r->priv = *priv;
        r->pub = *pub;
    }
    Esys_Free(priv);
    Esys_Free(pub);
    return rc;
}

static int create_version(kms_backend *b, const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t version,
                          kms_backend_ref *ref)
{
    tpm2_backend *t = impl(b);
    tpm2_device *d = t->dev;
    tpm2_ref r;
    memset(&r, 0, sizeof(r));
    memcpy(r.key_id, key_id, KMS_KEY_ID_LEN);
    r.version = version;
    TPM2B_SENSITIVE_CREATE sens;
    memset(&sens, 0, sizeof(sens));
    TPM2B_PUBLIC tmpl = {.publicArea = {.type = TPM2_ALG_KEYEDHASH, .nameAlg = TPM2_ALG_SHA256}};
    int ret = KMS_OK;
    TSS2_RC rc = TSS2_RC_SUCCESS;

    pthread_mutex_lock(&d->mu);
    if ((ret = kms_tpm2_ready(d)) != 0)
        goto out;
    if (t->mode == KMS_TPM2_RESIDENT) {
        r.kind = TPM2_REF_RESIDENT;
        tmpl.publicArea.objectAttributes =
            TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
            TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_NODA;
        tmpl.publicArea.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_HMAC;
        tmpl.publicArea.parameters.keyedHashDetail.scheme.details.hmac.hashAlg = TPM2_ALG_SHA256;
    } else {
        r.kind = TPM2_REF_SEALED;
        r.pcr_mask = d->cfg.pcr_mask;
        tmpl.publicArea.objectAttributes =
            TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_NODA;
        tmpl.publicArea.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_NULL;
        if (r.pcr_mask != 0) {
            ESYS_TR trial = ESYS_TR_NONE;
            TPM2B_DIGEST *policy = NULL;
            TPM_RUN(d, rc, pcr_session(d, r.pcr_mask, TPM2_SE_TRIAL, &trial, &policy));
            if (rc != TSS2_RC_SUCCESS) {
                ret = kms_tpm2_error(d, rc, "PCR policy");
                goto out;
            }
            tmpl.publicArea.authPolicy = *policy;
            Esys_Free(policy);
            (void)Esys_FlushContext(d->esys, trial);
        } else {
            tmpl.publicArea.objectAttributes |= TPMA_OBJECT_USERWITHAUTH;
        }
        sens.sensitive.data.size = 32;
        if (RAND_priv_bytes(sens.sensitive.data.buffer, 32) != 1) {
            ret = kms_error_set(KMS_EINTERNAL, "tpm2: no random bytes for a key");
            goto out;
        }
    }
    TPM_RUN(d, rc, create_object(d, &sens, &tmpl, &r));
    if (rc != TSS2_RC_SUCCESS)
        ret = kms_tpm2_error(d, rc, "create key version");
    else
        ret = kms_tpm2_ref_encode(&r, ref);
out:
    pthread_mutex_unlock(&d->mu);
    OPENSSL_cleanse(&sens, sizeof(sens));
    return ret;
}

/* ---- open -------------------------------------------------------------------------------- */

static TSS2_RC load(tpm2_device *d, const tpm2_ref *r, ESYS_TR *h)
{
    return Esys_Load(d->esys, d->primary, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &r->priv,
                     &r->pub, h);
}

static TSS2_RC unseal(tpm2_device *d, const tpm2_ref *r, TPM2B_SENSITIVE_DATA **out)
{
    ESYS_TR h = ESYS_TR_NONE, session = ESYS_TR_PASSWORD;
    TSS2_RC rc = load(d, r, &h);
    if (rc == TSS2_RC_SUCCESS && r->pcr_mask != 0)
        rc = pcr_session(d, r->pcr_mask, TPM2_SE_POLICY, &session, NULL);
    if (rc == TSS2_RC_SUCCESS)
        rc = Esys_Unseal(d->esys, h, session, ESYS_TR_NONE, ESYS_TR_NONE, out);
    if (session != ESYS_TR_PASSWORD && session != ESYS_TR_NONE)
        (void)Esys_FlushContext(d->esys, session);
    if (h != ESYS_TR_NONE)
        (void)Esys_FlushContext(d->esys, h);
    return rc;
}

static TSS2_RC check_loadable(tpm2_device *d, const tpm2_ref *r)
{
    ESYS_TR h = ESYS_TR_NONE;
    TSS2_RC rc = load(d, r, &h);
    if (h != ESYS_TR_NONE)
        (void)Esys_FlushContext(d->esys, h);
    return rc;
}

static int open_version(kms_backend *b, const kms_backend_ref *ref, kms_backend_key **out)
{
    tpm2_backend *t = impl(b);
    tpm2_device *d = t->dev;
    kms_backend_key *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    int r = kms_tpm2_ref_decode(ref, &k->ref);
    int want = t->mode == KMS_TPM2_RESIDENT ? TPM2_REF_RESIDENT : TPM2_REF_SEALED;
    if (r == 0 && k->ref.kind != want)
        r = kms_error_set(KMS_EKEYCHECK, "tpm2: key version made in the other mode");
    TSS2_RC rc = TSS2_RC_SUCCESS;
    if (r == 0) {
        pthread_mutex_lock(&d->mu);
        if ((r = kms_tpm2_ready(d)) == 0) {
            if (want == TPM2_REF_SEALED) {
                TPM2B_SENSITIVE_DATA *data = NULL;
                TPM_RUN(d, rc, unseal(d, &k->ref, &data));
                if (rc != TSS2_RC_SUCCESS) {
                    char pcrs[80];
                    pcr_names(k->ref.pcr_mask, pcrs, sizeof(pcrs));
                    r = kms_tpm2_error(d, rc, "unseal");
                    if (r == KMS_EPRECOND)
                        r = kms_error_set(KMS_EPRECOND,
                                          "tpm2: key bound to PCRs %s: their values changed "
                                          "since it was sealed, unseal refused",
                                          pcrs);
                } else if (data->size != 32) {
                    r = kms_error_set(KMS_EKEYCHECK, "tpm2: sealed key is not 32 bytes");
                } else if ((r = kms_secret_new(32, &k->key)) == 0) {
                    memcpy(k->key->data, data->buffer, 32);
                }
                if (data != NULL) {
                    OPENSSL_cleanse(data, sizeof(*data));
                    Esys_Free(data);
                }
            } else {
                TPM_RUN(d, rc, check_loadable(d, &k->ref));
                if (rc != TSS2_RC_SUCCESS)
                    r = kms_tpm2_error(d, rc, "load resident key");
            }
        }
        pthread_mutex_unlock(&d->mu);
    }
    if (r != 0) {
        kms_secret_free(k->key);
        free(k);
        return r;
    }
    *out = k;
    return KMS_OK;
}

static void release_version(kms_backend *b, kms_backend_key *k)
{
    (void)b;
    if (k == NULL)
        return;
    kms_secret_free(k->key);
    OPENSSL_cleanse(k, sizeof(*k));
    free(k);
}

/* ---- wrap / unwrap ----------------------------------------------------------------------- */

/* Resident mode: key = HMAC_TPM(version key, label || key id || version || iv). */
static int derive(tpm2_backend *t, const kms_backend_key *k, const uint8_t iv[KMS_GCM_IV_LEN],
                  uint8_t key[32])
{
    tpm2_device *d = t->dev;
    TPM2B_MAX_BUFFER msg = {0};
    size_t n = 0;
    memcpy(msg.buffer, RESIDENT_LABEL, sizeof(RESIDENT_LABEL) - 1);
    n += sizeof(RESIDENT_LABEL) - 1;
    memcpy(msg.buffer + n, k->ref.key_id, KMS_KEY_ID_LEN);
    n += KMS_KEY_ID_LEN;
    for (int i = 0; i < 4; i++)
        msg.buffer[n++] = (uint8_t)(k->ref.version >> (24 - 8 * i));
    memcpy(msg.buffer + n, iv, KMS_GCM_IV_LEN);
    n += KMS_GCM_IV_LEN;
    msg.size = (UINT16)n;
    TPM2B_DIGEST *mac = NULL;
    ESYS_TR h = ESYS_TR_NONE;
    TSS2_RC rc;
    int r;
    pthread_mutex_lock(&d->mu);
    if ((r = kms_tpm2_ready(d)) == 0) {
        TPM_RUN(d, rc, load(d, &k->ref, &h));
        if (rc == TSS2_RC_SUCCESS)
            TPM_RUN(d, rc,
                    Esys_HMAC(d->esys, h, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &msg,
                              TPM2_ALG_SHA256, &mac));
        if (h != ESYS_TR_NONE && !d->broken)
            (void)Esys_FlushContext(d->esys, h);
        if (rc != TSS2_RC_SUCCESS)
            r = kms_tpm2_error(d, rc, "derive");
        else if (mac->size != 32)
            r = kms_error_set(KMS_EINTERNAL, "tpm2: HMAC is not 32 bytes");
        else
            memcpy(key, mac->buffer, 32);
    }
    pthread_mutex_unlock(&d->mu);
    if (mac != NULL) {
        OPENSSL_cleanse(mac, sizeof(*mac));
        Esys_Free(mac);
    }
    return r;
}

static int gcm(tpm2_backend *t, const uint8_t key[32], kms_aead_io *io, int enc)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len = 0, ok = c != NULL && EVP_CipherInit_ex2(c, t->gcm, key, io->iv, enc, NULL) == 1;
    if (ok && io->aad_len > 0)
        ok = EVP_CipherUpdate(c, NULL, &len, io->aad, (int)io->aad_len) == 1;
    if (ok)
        ok = EVP_CipherUpdate(c, io->out, &len, io->in, (int)io->in_len) == 1;
    if (ok && !enc)
        ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, KMS_GCM_TAG_LEN, io->tag) == 1;
    int fin = ok && EVP_CipherFinal_ex(c, io->out + len, &len) == 1;
    if (fin && enc)
        fin = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, KMS_GCM_TAG_LEN, io->tag) == 1;
    EVP_CIPHER_CTX_free(c);
    if (!fin) {
        OPENSSL_cleanse(io->out, io->in_len);
        return enc || !ok ? kms_error_set(KMS_EINTERNAL, "tpm2: AES-GCM failed")
                          : kms_error_set(KMS_EAUTH, "ciphertext does not authenticate");
    }
    return KMS_OK;
}

static int aead(kms_backend *b, kms_backend_key *k, kms_aead_io *io, int enc)
{
    tpm2_backend *t = impl(b);
    if (io->in_len > (size_t)INT32_MAX || io->aad_len > (size_t)INT32_MAX)
        return kms_error_set(KMS_ETOOBIG, "input too large");
    if (enc && RAND_bytes(io->iv, KMS_GCM_IV_LEN) != 1)
        return kms_error_set(KMS_EINTERNAL, "no random IV");
    if (k->key != NULL)
        return gcm(t, k->key->data, io, enc);
    uint8_t key[32];
    int r = derive(t, k, io->iv, key);
    if (r == 0)
        r = gcm(t, key, io, enc);
    else if (!enc)
        OPENSSL_cleanse(io->out, io->in_len);
    OPENSSL_cleanse(key, sizeof(key));
    return r;
}

static int wrap(kms_backend *b, kms_backend_key *k, kms_aead_io *io)
{
    return aead(b, k, io, 1);
}

static int unwrap(kms_backend *b, kms_backend_key *k, kms_aead_io *io)
{
    return aead(b, k, io, 0);
}

/* ---- the rest -------------------------------------------------------------------------- */

/* Versions live outside the TPM (their blobs are in the store): nothing to
 * destroy on the chip. Crypto-shredding is the store forgetting the blobs
 * (docs/tpm2.md). */
static int destroy_version(kms_backend *b, const kms_backend_ref *ref)
{
    (void)b;
    tpm2_ref r;
    return kms_tpm2_ref_decode(ref, &r);
}

static int tpm_random(kms_backend *b, uint8_t *out, size_t n)
{
    tpm2_device *d = impl(b)->dev;
    int r;
    pthread_mutex_lock(&d->mu);
    r = kms_tpm2_ready(d);
    for (size_t done = 0; r == 0 && done < n;) {
        TPM2B_DIGEST *rnd = NULL;
        UINT16 want = (UINT16)(n - done > 32 ? 32 : n - done);
        TSS2_RC rc;
        TPM_RUN(d, rc,
                Esys_GetRandom(d->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, want, &rnd));
        if (rc != TSS2_RC_SUCCESS) {
            r = kms_tpm2_error(d, rc, "random");
        } else {
            memcpy(out + done, rnd->buffer, rnd->size);
            done += rnd->size;
        }
        Esys_Free(rnd);
    }
    pthread_mutex_unlock(&d->mu);
    return r;
}

static int health(kms_backend *b)
{
    uint8_t byte;
    int r = tpm_random(b, &byte, 1);
    return r == 0 ? KMS_OK : kms_error_set(KMS_EUNAVAIL, "tpm2: not answering");
}

static void device_put(tpm2_device *d)
{
    pthread_mutex_lock(&d->mu);
    int last = --d->refs == 0;
    pthread_mutex_unlock(&d->mu);
    if (!last)
        return;
    kms_tpm2_disconnect(d);
    pthread_mutex_destroy(&d->mu);
    free(d->tcti_conf);
    free(d);
}

static void tpm_close(kms_backend *b)
{
    if (b == NULL)
        return;
    tpm2_backend *t = impl(b);
    if (t->dev != NULL)
        device_put(t->dev);
    EVP_CIPHER_free(t->gcm);
    free(t);
}

static const kms_backend_ops sealed_ops = {
    .name = "tpm2",
    .create_version = create_version,
    .open_version = open_version,
    .release_version = release_version,
    .wrap = wrap,
    .unwrap = unwrap,
    .destroy_version = destroy_version,
    .random = tpm_random,
    .health = health,
    .close = tpm_close,
};

static const kms_backend_ops resident_ops = {
    .name = "tpm2-resident",
    .create_version = create_version,
    .open_version = open_version,
    .release_version = release_version,
    .wrap = wrap,
    .unwrap = unwrap,
    .destroy_version = destroy_version,
    .random = tpm_random,
    .health = health,
    .close = tpm_close,
};

static int make_backend(tpm2_device *d, kms_tpm2_mode mode, kms_backend **out)
{
    tpm2_backend *t = calloc(1, sizeof(*t));
    if (t == NULL || (t->gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL)) == NULL) {
        free(t);
        return kms_error_set(KMS_ENOMEM, "out of memory");
    }
    t->dev = d;
    t->mode = mode;
    t->base.ops = mode == KMS_TPM2_RESIDENT ? &resident_ops : &sealed_ops;
    t->base.impl = t;
    pthread_mutex_lock(&d->mu);
    d->refs++;
    pthread_mutex_unlock(&d->mu);
    *out = &t->base;
    return KMS_OK;
}

int kms_tpm2_open(const kms_tpm2_config *cfg, kms_backend **sealed, kms_backend **resident)
{
    if (cfg == NULL || cfg->tcti == NULL || sealed == NULL)
        return kms_error_set(KMS_EINVAL, "tpm2: no TCTI configured");
    if (cfg->pcr_mask >> 24)
        return kms_error_set(KMS_EINVAL, "tpm2: PCRs are 0..23");
    tpm2_device *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    d->cfg = *cfg;
    if (d->cfg.primary_handle == 0)
        d->cfg.primary_handle = KMS_TPM2_DEFAULT_PRIMARY;
    d->primary = ESYS_TR_NONE;
    d->refs = 1; /* ours until both backends hold it */
    pthread_mutex_init(&d->mu, NULL);
    kms_backend *s = NULL, *r = NULL;
    int ret = (d->tcti_conf = strdup(cfg->tcti)) == NULL
                  ? kms_error_set(KMS_ENOMEM, "out of memory")
                  : kms_tpm2_connect(d, 1);
    if (ret == 0)
        ret = make_backend(d, KMS_TPM2_SEALED, &s);
    if (ret == 0 && resident != NULL)
        ret = make_backend(d, KMS_TPM2_RESIDENT, &r);
    device_put(d);
    if (ret != 0) {
        tpm_close(s);
        tpm_close(r);
        return ret;
    }
    kms_log_info("tpm2: %s ready (primary 0x%08x%s)", cfg->tcti, d->cfg.primary_handle,
                 cfg->pcr_mask ? ", sealed keys bound to PCRs" : "");
    *sealed = s;
    if (resident != NULL)
        *resident = r;
    return KMS_OK;
}
