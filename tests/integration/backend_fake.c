/* The fake backend (backend_fake.h). One mutex guards the version table;
 * a wrap or unwrap holds it while it uses the key, so destroy never frees
 * a key in use. Speed is not the point. */
#include "backend_fake.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "base/secret.h"

/* ref = "KFK1" ‖ key id ‖ version (big-endian) */
#define REF_MAGIC "KFK1"
#define REF_LEN (4 + KMS_KEY_ID_LEN + 4)

struct version {
    uint8_t ref[REF_LEN];
    kms_secret *key; /* 32 bytes */
    struct version *next;
};

typedef struct fake {
    kms_backend base;
    pthread_mutex_t mu;
    struct version *versions;
    atomic_int down;
    EVP_CIPHER *gcm;
} fake;

struct kms_backend_key {
    uint8_t ref[REF_LEN];
};

static fake *impl(kms_backend *b)
{
    return (fake *)b->impl;
}

static void make_ref(const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t version, uint8_t ref[REF_LEN])
{
    memcpy(ref, REF_MAGIC, 4);
    memcpy(ref + 4, key_id, KMS_KEY_ID_LEN);
    for (int i = 0; i < 4; i++)
        ref[4 + KMS_KEY_ID_LEN + i] = (uint8_t)(version >> (24 - 8 * i));
}

/* KMS_EINVAL for a reference of the wrong length, KMS_ENOTFOUND for one
 * this backend never makes. */
static int check_ref(const kms_backend_ref *ref)
{
    if (ref == NULL || ref->len != REF_LEN)
        return kms_error_set(KMS_EINVAL, "fake: bad key reference");
    if (memcmp(ref->bytes, REF_MAGIC, 4) != 0)
        return kms_error_set(KMS_ENOTFOUND, "fake: not a fake key reference");
    return KMS_OK;
}

static int unavailable(fake *f)
{
    return atomic_load(&f->down) ? kms_error_set(KMS_EUNAVAIL, "fake: device is down") : KMS_OK;
}

/* Caller holds f->mu. */
static struct version **find(fake *f, const uint8_t ref[REF_LEN])
{
    struct version **v = &f->versions;
    while (*v != NULL && memcmp((*v)->ref, ref, REF_LEN) != 0)
        v = &(*v)->next;
    return v;
}

static int create_version(kms_backend *b, const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t version,
                          kms_backend_ref *ref)
{
    fake *f = impl(b);
    if (key_id == NULL || ref == NULL)
        return kms_error_set(KMS_EINVAL, "fake: missing argument");
    KMS_GUARD(unavailable(f));
    uint8_t r[REF_LEN];
    make_ref(key_id, version, r);
    pthread_mutex_lock(&f->mu);
    int ret = KMS_OK;
    struct version **at = find(f, r);
    if (*at != NULL) {
        ret = kms_error_set(KMS_EEXISTS, "fake: version exists");
    } else {
        struct version *v = calloc(1, sizeof(*v));
        if (v == NULL || kms_secret_random(32, &v->key) != 0) {
            free(v);
            ret = kms_error_set(KMS_ENOMEM, "fake: out of memory");
        } else {
            memcpy(v->ref, r, REF_LEN);
            *at = v;
        }
    }
    pthread_mutex_unlock(&f->mu);
    if (ret == KMS_OK || ret == KMS_EEXISTS) {
        memcpy(ref->bytes, r, REF_LEN);
        ref->len = REF_LEN;
    }
    return ret;
}

static int open_version(kms_backend *b, const kms_backend_ref *ref, kms_backend_key **out)
{
    fake *f = impl(b);
    KMS_GUARD(check_ref(ref));
    if (out == NULL)
        return kms_error_set(KMS_EINVAL, "fake: missing argument");
    KMS_GUARD(unavailable(f));
    pthread_mutex_lock(&f->mu);
    int found = *find(f, ref->bytes) != NULL;
    pthread_mutex_unlock(&f->mu);
    if (!found)
        return kms_error_set(KMS_ENOTFOUND, "fake: no such version");
    kms_backend_key *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return kms_error_set(KMS_ENOMEM, "fake: out of memory");
    memcpy(k->ref, ref->bytes, REF_LEN);
    *out = k;
    return KMS_OK;
}

static void release_version(kms_backend *b, kms_backend_key *k)
{
    (void)b;
    free(k);
}

/* AES-256-GCM under the version's key; the caller holds f->mu. */
static int gcm(fake *f, const kms_secret *key, kms_aead_io *io, int enc)
{
    uint8_t none[1];
    uint8_t *out = io->out != NULL ? io->out : none;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len = 0, ok = c != NULL && EVP_CipherInit_ex2(c, f->gcm, key->data, io->iv, enc, NULL) == 1;
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
    if (fin)
        return KMS_OK;
    return enc || !ok ? kms_error_set(KMS_EINTERNAL, "fake: AES-GCM failed")
                      : kms_error_set(KMS_EAUTH, "ciphertext does not authenticate");
}

static int aead(kms_backend *b, kms_backend_key *k, kms_aead_io *io, int enc)
{
    fake *f = impl(b);
    if (k == NULL || io == NULL || (io->in == NULL && io->in_len > 0) ||
        (io->out == NULL && io->in_len > 0) || (io->aad == NULL && io->aad_len > 0))
        return kms_error_set(KMS_EINVAL, "fake: missing argument");
    if (io->in_len > KMS_FAKE_DATA_MAX || io->aad_len > (size_t)INT32_MAX)
        return kms_error_set(KMS_ETOOBIG, "fake: data must be 0..%d bytes", KMS_FAKE_DATA_MAX);
    int r = unavailable(f);
    if (r == KMS_OK && enc && RAND_bytes(io->iv, KMS_GCM_IV_LEN) != 1)
        r = kms_error_set(KMS_EINTERNAL, "fake: no random IV");
    if (r == KMS_OK) {
        pthread_mutex_lock(&f->mu);
        struct version *v = *find(f, k->ref);
        r = v == NULL ? kms_error_set(KMS_ENOTFOUND, "fake: version was destroyed")
                      : gcm(f, v->key, io, enc);
        pthread_mutex_unlock(&f->mu);
    }
    if (r != KMS_OK && !enc && io->in_len > 0)
        OPENSSL_cleanse(io->out, io->in_len);
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

static int destroy_version(kms_backend *b, const kms_backend_ref *ref)
{
    fake *f = impl(b);
    KMS_GUARD(check_ref(ref));
    KMS_GUARD(unavailable(f));
    pthread_mutex_lock(&f->mu);
    struct version **at = find(f, ref->bytes), *v = *at;
    if (v != NULL)
        *at = v->next;
    pthread_mutex_unlock(&f->mu);
    if (v == NULL)
        return kms_error_set(KMS_ENOTFOUND, "fake: no such version");
    kms_secret_free(v->key);
    free(v);
    return KMS_OK;
}

static int fake_random(kms_backend *b, uint8_t *out, size_t n)
{
    if (out == NULL || n == 0 || n > 4096)
        return kms_error_set(KMS_EINVAL, "fake: random length out of range");
    KMS_GUARD(unavailable(impl(b)));
    return RAND_bytes(out, (int)n) == 1 ? KMS_OK : kms_error_set(KMS_EINTERNAL, "fake: no random");
}

static int health(kms_backend *b)
{
    return unavailable(impl(b));
}

static void fake_close(kms_backend *b)
{
    if (b == NULL)
        return;
    fake *f = impl(b);
    while (f->versions != NULL) {
        struct version *v = f->versions;
        f->versions = v->next;
        kms_secret_free(v->key);
        free(v);
    }
    EVP_CIPHER_free(f->gcm);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

/* Destroy erases the in-process key: it shreds. Its keys live in kmsd's
 * memory, so KEY_NEVER_LEAVES is not claimed. */
static const kms_backend_mode fake_modes[] = {{"", KMS_BACKEND_CAP_SHRED}};

static const kms_backend_ops fake_ops = {
    .name = "fake",
    .modes = fake_modes,
    .n_modes = sizeof(fake_modes) / sizeof(fake_modes[0]),
    .create_version = create_version,
    .open_version = open_version,
    .release_version = release_version,
    .wrap = wrap,
    .unwrap = unwrap,
    .destroy_version = destroy_version,
    .random = fake_random,
    .health = health,
    .close = fake_close,
};

int kms_fake_backend_open(kms_backend **out)
{
    fake *f = calloc(1, sizeof(*f));
    if (f == NULL || (f->gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL)) == NULL) {
        free(f);
        return kms_error_set(KMS_ENOMEM, "fake: out of memory");
    }
    pthread_mutex_init(&f->mu, NULL);
    atomic_init(&f->down, 0);
    f->base.ops = &fake_ops;
    f->base.impl = f;
    *out = &f->base;
    return KMS_OK;
}

void kms_fake_backend_set_down(kms_backend *b, int down)
{
    atomic_store(&impl(b)->down, down != 0);
}
