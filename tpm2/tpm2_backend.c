/* TPM2 backend: the kms_backend ops for sealed and resident key versions
 * (kms_tpm2.h). The TPM is used to create versions, to unseal a sealed
 * version once when it is first opened (tpm2_seal.c), and in resident mode
 * to derive each operation's key (tpm2_resident.c); sealed-mode wrap/unwrap
 * never touch the TPM. AES-256-GCM runs in software (OpenSSL). */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "base/log.h"
#include "tpm2_internal.h"

struct kms_backend_key {
    tpm2_ref ref;
    kms_secret *key;  /* sealed: the unsealed AES-256 key, locked memory */
    kms_secret *auth; /* resident: the object's TPM2B_AUTH (derived once, at open) */
    uint64_t owner;   /* resident: names this opening for the loaded-key cache */
    /* Set (under the device lock) when its version is destroyed: the
     * opening serves nothing more (KMS_ENOTFOUND). */
    int dead;
    kms_backend_key *next; /* the device's open versions (tpm2_device.open) */
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

/* ---- create ------------------------------------------------------------------------------ */

static int create_version(kms_backend *b, const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t version,
                          kms_backend_ref *ref)
{
    tpm2_backend *t = impl(b);
    tpm2_device *d = t->dev;
    tpm2_ref r;
    memset(&r, 0, sizeof(r));
    memcpy(r.key_id, key_id, KMS_KEY_ID_LEN);
    r.version = version;
    r.auth = d->auth_key != NULL; /* new objects: a derived authValue */
    kms_secret *shred = NULL;
    TPM2B_AUTH auth;
    memset(&auth, 0, sizeof(auth));
    int ret;
    pthread_mutex_lock(&d->mu);
    /* Every new version gets its shred index first: its object's
     * authValue is derived from the index's secret. */
    if ((ret = kms_tpm2_ready(d)) == 0 && (ret = kms_tpm2_shred_create(d, &r, &shred)) == 0 &&
        (ret = kms_tpm2_version_auth(d, &r, shred->data, &auth)) == 0) {
        if (t->mode == KMS_TPM2_RESIDENT) {
            r.kind = TPM2_REF_RESIDENT;
            ret = kms_tpm2_resident_create(d, &r, &auth);
        } else {
            r.kind = TPM2_REF_SEALED;
            r.pcr_mask = d->cfg.pcr_mask;
            ret = kms_tpm2_seal_create(d, &r, &auth);
        }
    }
    if (ret != 0 && r.nv_index != 0 && kms_tpm2_shred_destroy(d, &r) != 0)
        kms_log_warn("tpm2: the shred index of a version that failed to be made stays");
    pthread_mutex_unlock(&d->mu);
    OPENSSL_cleanse(&auth, sizeof(auth));
    kms_secret_free(shred);
    if (ret == 0)
        ret = kms_tpm2_ref_encode(&r, ref);
    return ret;
}

/* ---- open -------------------------------------------------------------------------------- */

/* The version's authValue (reading its shred index, if it has one:
 * KMS_ENOTFOUND once it is destroyed), then unseal or load. */
static int open_locked(tpm2_device *d, int want, kms_backend_key *k)
{
    kms_secret *shred = NULL;
    int r = KMS_OK;
    if (k->ref.nv_index != 0)
        r = kms_tpm2_shred_read(d, &k->ref, &shred);
    if (r == 0)
        r = kms_secret_new(sizeof(TPM2B_AUTH), &k->auth);
    TPM2B_AUTH *auth = r == 0 ? (TPM2B_AUTH *)(void *)k->auth->data : NULL;
    if (r == 0)
        r = kms_tpm2_version_auth(d, &k->ref, shred != NULL ? shred->data : NULL, auth);
    kms_secret_free(shred);
    if (r == 0 && want == TPM2_REF_SEALED) {
        r = kms_tpm2_seal_open(d, &k->ref, auth, &k->key);
        kms_secret_free(k->auth); /* unsealed: the authValue is not needed again */
        k->auth = NULL;
    } else if (r == 0) {
        k->owner = ++d->next_owner;
        r = kms_tpm2_resident_load(d, k->owner, &k->ref, auth);
    }
    return r;
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
    if (r == 0) {
        pthread_mutex_lock(&d->mu);
        if ((r = kms_tpm2_ready(d)) == 0)
            r = open_locked(d, want, k);
        if (r == 0) {
            k->next = d->open;
            d->open = k;
        }
        pthread_mutex_unlock(&d->mu);
    }
    if (r != 0) {
        kms_secret_free(k->key);
        kms_secret_free(k->auth);
        free(k);
        return r;
    }
    *out = k;
    return KMS_OK;
}

static void release_version(kms_backend *b, kms_backend_key *k)
{
    if (k == NULL)
        return;
    tpm2_device *d = impl(b)->dev;
    pthread_mutex_lock(&d->mu);
    if (k->owner != 0 && d->res_owner == k->owner)
        kms_tpm2_drop_cached(d);
    for (kms_backend_key **p = &d->open; *p != NULL; p = &(*p)->next)
        if (*p == k) {
            *p = k->next;
            break;
        }
    pthread_mutex_unlock(&d->mu);
    kms_secret_free(k->key);
    kms_secret_free(k->auth);
    OPENSSL_cleanse(k, sizeof(*k));
    free(k);
}

/* ---- wrap / unwrap ----------------------------------------------------------------------- */

int kms_tpm2_gcm(const EVP_CIPHER *aes_gcm, const uint8_t key[32], kms_aead_io *io, int enc)
{
    /* An empty message may come with out == NULL: never hand OpenSSL a NULL
     * output (that would mean "this is AAD"). */
    uint8_t none[1];
    uint8_t *out = io->out != NULL ? io->out : none;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len = 0, ok = c != NULL && EVP_CipherInit_ex2(c, aes_gcm, key, io->iv, enc, NULL) == 1;
    if (ok && io->aad_len > 0)
        ok = EVP_CipherUpdate(c, NULL, &len, io->aad, (int)io->aad_len) == 1;
    if (ok && io->in_len > 0)
        ok = EVP_CipherUpdate(c, out, &len, io->in, (int)io->in_len) == 1;
    if (ok && !enc)
        ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, KMS_GCM_TAG_LEN, io->tag) == 1;
    int fin = ok && EVP_CipherFinal_ex(c, out + len, &len) == 1;
    if (fin && enc)
        fin = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, KMS_GCM_TAG_LEN, io->tag) == 1;
    EVP_CIPHER_CTX_free(c);
    if (!fin) {
        if (io->in_len > 0)
            OPENSSL_cleanse(io->out, io->in_len);
        return enc || !ok ? kms_error_set(KMS_EINTERNAL, "tpm2: AES-GCM failed")
                          : kms_error_set(KMS_EAUTH, "ciphertext does not authenticate");
    }
    return KMS_OK;
}

static int gcm(tpm2_backend *t, const uint8_t key[32], kms_aead_io *io, int enc)
{
    return kms_tpm2_gcm(t->gcm, key, io, enc);
}

static int aead(kms_backend *b, kms_backend_key *k, kms_aead_io *io, int enc)
{
    tpm2_backend *t = impl(b);
    if (io->in_len > (size_t)INT32_MAX || io->aad_len > (size_t)INT32_MAX)
        return kms_error_set(KMS_ETOOBIG, "input too large");
    if (__atomic_load_n(&k->dead, __ATOMIC_ACQUIRE))
        return kms_error_set(KMS_ENOTFOUND, "tpm2: key version destroyed");
    if (enc && RAND_bytes(io->iv, KMS_GCM_IV_LEN) != 1)
        return kms_error_set(KMS_EINTERNAL, "no random IV");
    if (k->key != NULL)
        return gcm(t, k->key->data, io, enc);
    uint8_t key[32];
    tpm2_device *d = t->dev;
    pthread_mutex_lock(&d->mu);
    int r =
        k->dead ? kms_error_set(KMS_ENOTFOUND, "tpm2: key version destroyed") : kms_tpm2_ready(d);
    if (r == 0)
        r = kms_tpm2_resident_derive(d, k->owner, &k->ref,
                                     (const TPM2B_AUTH *)(const void *)k->auth->data, io->iv, key);
    pthread_mutex_unlock(&d->mu);
    if (r == 0)
        r = gcm(t, key, io, enc);
    else if (!enc && io->in_len > 0)
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

/* A version with a shred index (reference format 3 and 4) is shredded:
 * its index is undefined, so no copy of the reference can derive the
 * object's authValue again, and openings of it in this process serve
 * nothing more. Older versions have nothing on the chip: destroying one
 * only forgets what kmsd holds (docs/tpm2.md). */
static int destroy_version(kms_backend *b, const kms_backend_ref *ref)
{
    tpm2_device *d = impl(b)->dev;
    tpm2_ref r;
    KMS_GUARD(kms_tpm2_ref_decode(ref, &r));
    pthread_mutex_lock(&d->mu);
    kms_tpm2_resident_forget(d, r.key_id, r.version);
    int ret = r.nv_index != 0 ? kms_tpm2_ready(d) : KMS_OK;
    if (ret == 0 && r.nv_index != 0)
        ret = kms_tpm2_shred_destroy(d, &r);
    /* Gone from the chip (now or before): so are its openings. */
    if (r.nv_index != 0 && (ret == 0 || ret == KMS_ENOTFOUND))
        for (kms_backend_key *k = d->open; k != NULL; k = k->next)
            if (k->ref.nv_index == r.nv_index && k->ref.version == r.version &&
                memcmp(k->ref.key_id, r.key_id, KMS_KEY_ID_LEN) == 0)
                __atomic_store_n(&k->dead, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&d->mu);
    if (ret == 0 && r.nv_index == 0)
        kms_log_warn("tpm2: a key version made before shredding existed (reference format %d) "
                     "was destroyed: nothing on the TPM changes, and copies of the database "
                     "still open it",
                     r.auth ? 2 : 1);
    OPENSSL_cleanse(&r, sizeof(r));
    return ret;
}

static int tpm_random(kms_backend *b, uint8_t *out, size_t n)
{
    tpm2_device *d = impl(b)->dev;
    int r;
    if (out == NULL || n == 0 || n > 4096)
        return kms_error_set(KMS_EINVAL, "tpm2: random length out of range");
    pthread_mutex_lock(&d->mu);
    r = kms_tpm2_ready(d);
    for (size_t done = 0; r == 0 && done < n;) {
        TPM2B_DIGEST *rnd = NULL;
        UINT16 want = (UINT16)(n - done > 32 ? 32 : n - done);
        TSS2_RC rc;
        TPM2_RUN(d, rc,
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
    kms_tpm2_drop_cached(d);
    kms_tpm2_drop_session(d);
    kms_tpm2_disconnect(d);
    kms_tpm2_unlock(d->lock_fd);
    kms_secret_free(d->auth_key);
    pthread_mutex_destroy(&d->mu);
    free(d->tcti_conf);
    free(d->primary_name_file);
    free(d->auth_key_file);
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

/* ---- the state-integrity key (tpm2_state.c) --------------------------------------------- */

static int state_key_create(kms_backend *b)
{
    tpm2_device *d = impl(b)->dev;
    pthread_mutex_lock(&d->mu);
    int r = kms_tpm2_ready(d);
    if (r == 0)
        r = kms_tpm2_state_create(d);
    pthread_mutex_unlock(&d->mu);
    return r;
}

static int state_mac(kms_backend *b, const uint8_t *in, size_t len, uint8_t out[KMS_STATE_MAC_LEN])
{
    if (in == NULL && len > 0)
        return kms_error_set(KMS_EINVAL, "tpm2: state MAC of nothing");
    if (len > KMS_STATE_MAC_INPUT_MAX)
        return kms_error_set(KMS_ETOOBIG, "tpm2: state MAC input above %d bytes",
                             KMS_STATE_MAC_INPUT_MAX);
    tpm2_device *d = impl(b)->dev;
    pthread_mutex_lock(&d->mu);
    int r = kms_tpm2_ready(d);
    if (r == 0)
        r = kms_tpm2_state_mac(d, in, len, out);
    pthread_mutex_unlock(&d->mu);
    return r;
}

/* ---- the audit signing key (tpm2_audit.c) ------------------------------------------------ */

static int audit_key_create(kms_backend *b)
{
    tpm2_device *d = impl(b)->dev;
    pthread_mutex_lock(&d->mu);
    int r = kms_tpm2_ready(d);
    if (r == 0)
        r = kms_tpm2_audit_create(d);
    pthread_mutex_unlock(&d->mu);
    return r;
}

static int audit_key_public(kms_backend *b, uint8_t pub[KMS_AUDIT_PUB_LEN])
{
    tpm2_device *d = impl(b)->dev;
    pthread_mutex_lock(&d->mu);
    int r = kms_tpm2_ready(d);
    if (r == 0)
        r = kms_tpm2_audit_public(d, pub);
    pthread_mutex_unlock(&d->mu);
    return r;
}

static int audit_sign(kms_backend *b, const uint8_t digest[KMS_AUDIT_DIGEST_LEN],
                      uint8_t sig[KMS_AUDIT_SIG_LEN])
{
    tpm2_device *d = impl(b)->dev;
    pthread_mutex_lock(&d->mu);
    int r = kms_tpm2_ready(d);
    if (r == 0)
        r = kms_tpm2_audit_sign(d, digest, sig);
    pthread_mutex_unlock(&d->mu);
    return r;
}

/* Rows in kms_tpm2_mode order. Both modes shred: every new version's
 * authValue depends on its NV index, which destroying undefines
 * (versions from before shredding excepted: docs/tpm2.md). Both hold the
 * state-integrity key: one resident keyed-hash object per TPM, shared by
 * the two modes (tpm2_state.c), and so do they the audit signing key, one
 * persistent ECC P-256 key per TPM (tpm2_audit.c). */
static const kms_backend_mode tpm2_modes[] = {
    [KMS_TPM2_SEALED] = {"sealed", KMS_BACKEND_CAP_SHRED | KMS_BACKEND_CAP_STATE_MAC |
                                       KMS_BACKEND_CAP_AUDIT_SIGN},
    [KMS_TPM2_RESIDENT] = {"resident", KMS_BACKEND_CAP_KEY_NEVER_LEAVES | KMS_BACKEND_CAP_SHRED |
                                           KMS_BACKEND_CAP_STATE_MAC | KMS_BACKEND_CAP_AUDIT_SIGN},
};

static const kms_backend_ops tpm2_ops = {
    .name = "tpm2",
    .modes = tpm2_modes,
    .n_modes = sizeof(tpm2_modes) / sizeof(tpm2_modes[0]),
    .create_version = create_version,
    .open_version = open_version,
    .release_version = release_version,
    .wrap = wrap,
    .unwrap = unwrap,
    .destroy_version = destroy_version,
    .random = tpm_random,
    .health = health,
    .close = tpm_close,
    .state_key_create = state_key_create,
    .state_mac = state_mac,
    .audit_key_create = audit_key_create,
    .audit_key_public = audit_key_public,
    .audit_sign = audit_sign,
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
    t->base.ops = &tpm2_ops;
    t->base.mode = (size_t)mode;
    t->base.impl = t;
    pthread_mutex_lock(&d->mu);
    d->refs++;
    pthread_mutex_unlock(&d->mu);
    *out = &t->base;
    return KMS_OK;
}

/* The device keeps its own copies of the configured file paths: they are
 * read again on every reconnect and restart, long after open returned. */
static int own_paths(tpm2_device *d)
{
    if (d->cfg.primary_name_file != NULL &&
        (d->primary_name_file = strdup(d->cfg.primary_name_file)) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    if (d->cfg.auth_key_file != NULL && (d->auth_key_file = strdup(d->cfg.auth_key_file)) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    d->cfg.primary_name_file = d->primary_name_file;
    d->cfg.auth_key_file = d->auth_key_file;
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
    d->enc_session = ESYS_TR_NONE;
    d->res_h = ESYS_TR_NONE;
    d->refs = 1; /* ours until both backends hold it */
    d->lock_fd = -1;
    pthread_mutex_init(&d->mu, NULL);
    kms_backend *s = NULL, *r = NULL;
    int ret = (d->tcti_conf = strdup(cfg->tcti)) == NULL
                  ? kms_error_set(KMS_ENOMEM, "out of memory")
                  : own_paths(d);
    if (ret == 0)
        ret = kms_tpm2_lock(cfg, &d->lock_fd);
    if (ret == 0)
        ret = kms_tpm2_load_primary_name(d);
    if (ret == 0)
        ret = kms_tpm2_load_auth_key(d);
    if (ret == 0)
        ret = kms_tpm2_connect(d, 1);
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
