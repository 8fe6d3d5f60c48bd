/* The PKCS#11 backend: kms_backend_ops over any PKCS#11 module.
 *
 * Master key versions are AES-256 token objects generated on the token;
 * wrap/unwrap are single-part C_Encrypt/C_Decrypt with CKM_AES_GCM. Every
 * operation borrows one session from the pool; a session-loss code heals
 * the pool and the operation is tried once more. */
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/log.h"
#include "p11_internal.h"
#include "kms_p11.h"

static struct p11 *impl(kms_backend *b)
{
    return (struct p11 *)b;
}

/* CKA_ID of a key version: key id, then the version as a u32 big-endian. */
static int make_id(const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t version, uint8_t id[P11_ID_LEN])
{
    kms_buf_writer w;
    kms_buf_writer_init(&w, id, P11_ID_LEN);
    if (kms_buf_put_bytes(&w, key_id, KMS_KEY_ID_LEN) != 0 || kms_buf_put_u32be(&w, version) != 0 ||
        w.len != P11_ID_LEN)
        return kms_error_set(KMS_EINTERNAL, "pkcs11: object id layout");
    return KMS_OK;
}

/* Runs op with a pooled session; on session loss heals and runs it once
 * more. op returns a kms code and sets *lost when the session is gone (or
 * left in an unknown state); it must leave no partial output behind, since
 * it may run twice. */
typedef int (*session_op)(struct p11 *p, CK_SESSION_HANDLE s, unsigned gen, void *arg, int *lost);

static int with_session(struct p11 *p, session_op op, void *arg)
{
    for (int attempt = 0;; attempt++) {
        CK_SESSION_HANDLE s;
        int idx;
        unsigned gen;
        KMS_GUARD(kms_p11_pool_acquire(p, &s, &idx, &gen));
        int lost = 0;
        int r = op(p, s, gen, arg, &lost);
        kms_p11_pool_release(p, idx);
        if (!lost)
            return r;
        /* On failure the detail is the healing's (why the token is out) or,
         * after a second loss in a row, the operation's. */
        if (kms_p11_pool_heal(p, gen) != 0 || attempt == 1)
            return KMS_EUNAVAIL;
    }
}

/* The kms code for a failed call's rv, with the detail naming the call.
 * Sets *lost (never clears it) when the session is gone. */
static int rv_result(CK_RV rv, int *lost, const char *what)
{
    if (rv == CKR_OK)
        return KMS_OK;
    if (kms_p11_rv_session_lost(rv))
        *lost = 1;
    return kms_error_set(kms_p11_rv_to_error(rv), "pkcs11: %s: %s", what, kms_p11_rv_name(rv));
}

/* ---- create / destroy ---------------------------------------------------------- */

struct create_arg {
    uint8_t id[P11_ID_LEN];
};

static int create_op(struct p11 *p, CK_SESSION_HANDLE s, unsigned gen, void *arg, int *lost)
{
    (void)gen;
    struct create_arg *a = arg;
    CK_OBJECT_HANDLE h;
    int r = kms_p11_find_key(p, s, a->id, &h);
    if (r == 0 || r == KMS_EKEYCHECK)
        return kms_error_set(KMS_EEXISTS, "pkcs11: key version already on the token");
    if (r != KMS_ENOTFOUND) {
        *lost = r == KMS_EUNAVAIL;
        return r;
    }
    char label[P11_LABEL_MAX];
    kms_p11_label(a->id, label, sizeof(label));
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_AES;
    CK_ULONG len = 32;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},     {CKA_KEY_TYPE, &type, sizeof(type)},
        {CKA_VALUE_LEN, &len, sizeof(len)}, {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_PRIVATE, &yes, sizeof(yes)},   {CKA_SENSITIVE, &yes, sizeof(yes)},
        {CKA_EXTRACTABLE, &no, sizeof(no)}, {CKA_MODIFIABLE, &no, sizeof(no)},
        {CKA_ENCRYPT, &yes, sizeof(yes)},   {CKA_DECRYPT, &yes, sizeof(yes)},
        {CKA_WRAP, &no, sizeof(no)},        {CKA_UNWRAP, &no, sizeof(no)},
        {CKA_SIGN, &no, sizeof(no)},        {CKA_VERIFY, &no, sizeof(no)},
        {CKA_DERIVE, &no, sizeof(no)},      {CKA_ID, a->id, P11_ID_LEN},
        {CKA_LABEL, label, strlen(label)},
    };
    CK_MECHANISM mech = {CKM_AES_KEY_GEN, NULL, 0};
    CK_RV rv = p->f->C_GenerateKey(s, &mech, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &h);
    return rv_result(rv, lost, "C_GenerateKey");
}

static int p11_open_version(kms_backend *b, const kms_backend_ref *ref, kms_backend_key **out);
static void p11_release_version(kms_backend *b, kms_backend_key *k);
static int p11_wrap(kms_backend *b, kms_backend_key *k, kms_aead_io *io);
static int p11_unwrap(kms_backend *b, kms_backend_key *k, kms_aead_io *io);
static int p11_destroy_version(kms_backend *b, const kms_backend_ref *ref);

#define SELF_TEST_LEN 32

/* The new version, through the paths every request takes: opened (found
 * and checked), a random secret wrapped under random AAD and unwrapped
 * again, compared. 0, or the first failure with a detail naming it. */
static int self_test(kms_backend *b, const kms_backend_ref *ref)
{
    kms_backend_key *k = NULL;
    KMS_GUARD(p11_open_version(b, ref, &k));
    /* A random plaintext, wiped, so the test never handles a real secret
     * but treats its stand-in like one. */
    uint8_t pt[SELF_TEST_LEN], ct[SELF_TEST_LEN], back[SELF_TEST_LEN], aad[16];
    int r = KMS_OK;
    if (RAND_bytes(pt, sizeof(pt)) != 1 || RAND_bytes(aad, sizeof(aad)) != 1)
        r = kms_error_set(KMS_EUNAVAIL, "OpenSSL DRBG failed");
    kms_aead_io w = {.aad = aad, .aad_len = sizeof(aad), .in = pt, .in_len = sizeof(pt), .out = ct};
    if (r == 0)
        r = p11_wrap(b, k, &w);
    if (r == 0 && CRYPTO_memcmp(ct, pt, sizeof(pt)) == 0)
        r = kms_error_set(KMS_EKEYCHECK, "C_Encrypt returned the plaintext");
    if (r == 0) {
        kms_aead_io u = {
            .aad = aad, .aad_len = sizeof(aad), .in = ct, .in_len = sizeof(ct), .out = back};
        memcpy(u.iv, w.iv, KMS_GCM_IV_LEN);
        memcpy(u.tag, w.tag, KMS_GCM_TAG_LEN);
        r = p11_unwrap(b, k, &u);
        if (r == KMS_EAUTH)
            r = kms_error_set(KMS_EKEYCHECK, "C_Decrypt refused the tag C_Encrypt made");
        else if (r == 0 && CRYPTO_memcmp(back, pt, sizeof(pt)) != 0)
            r = kms_error_set(KMS_EKEYCHECK, "C_Decrypt returned other bytes than were encrypted");
    }
    OPENSSL_cleanse(pt, sizeof(pt));
    OPENSSL_cleanse(back, sizeof(back));
    p11_release_version(b, k);
    return r;
}

static int p11_create_version(kms_backend *b, const uint8_t key_id[KMS_KEY_ID_LEN],
                              uint32_t version, kms_backend_ref *ref)
{
    if (key_id == NULL || ref == NULL)
        return kms_error_set(KMS_EINVAL, "pkcs11: missing argument");
    struct create_arg a;
    KMS_GUARD(make_id(key_id, version, a.id));
    int r = with_session(impl(b), create_op, &a);
    if (r == 0 || r == KMS_EEXISTS) { /* on EEXISTS, ref names the existing object */
        memcpy(ref->bytes, a.id, P11_ID_LEN);
        ref->len = P11_ID_LEN;
    }
    if (r != 0)
        return r;
    char label[P11_LABEL_MAX];
    kms_p11_label(a.id, label, sizeof(label));
    /* Before the caller records the version: a key that cannot round-trip
     * (a module whose GCM is broken, a key the check refuses) would accept
     * data it can never give back, or none at all. It is destroyed and the
     * action fails with the reason. */
    r = self_test(b, ref);
    if (r != 0) {
        char why[256];
        snprintf(why, sizeof(why), "%s", kms_error_detail()); /* the detail buffer is reused */
        int d = p11_destroy_version(b, ref);
        memset(ref, 0, sizeof(*ref));
        kms_log_error("pkcs11: self-test of new %s failed: %s; %s", label, why,
                      d == 0 ? "object destroyed" : "could not destroy the object");
        return kms_error_set(r == KMS_EUNAVAIL ? KMS_EUNAVAIL : KMS_EKEYCHECK,
                             "pkcs11: self-test of new %s on token \"%s\" failed: %s (%s)", label,
                             impl(b)->label, why,
                             d == 0 ? "object destroyed" : "the object could not be destroyed");
    }
    kms_log_info("pkcs11: created %s on token \"%s\" (self-test passed)", label, impl(b)->label);
    return KMS_OK;
}

static int destroy_op(struct p11 *p, CK_SESSION_HANDLE s, unsigned gen, void *arg, int *lost)
{
    (void)gen;
    CK_OBJECT_HANDLE h;
    int r = kms_p11_find_key(p, s, arg, &h);
    if (r == KMS_EKEYCHECK)
        return r; /* two objects share the id: destroy neither */
    if (r != 0) {
        *lost = r == KMS_EUNAVAIL;
        return r;
    }
    return rv_result(p->f->C_DestroyObject(s, h), lost, "C_DestroyObject");
}

static int p11_destroy_version(kms_backend *b, const kms_backend_ref *ref)
{
    if (ref == NULL || ref->len != P11_ID_LEN)
        return kms_error_set(KMS_EINVAL, "pkcs11: bad key reference");
    uint8_t id[P11_ID_LEN];
    memcpy(id, ref->bytes, P11_ID_LEN);
    int r = with_session(impl(b), destroy_op, id);
    if (r == 0) {
        char label[P11_LABEL_MAX];
        kms_p11_label(id, label, sizeof(label));
        kms_log_info("pkcs11: destroyed %s", label);
    }
    return r;
}

/* ---- open / release --------------------------------------------------------------- */

/* The key's object handle for this pool generation. A handle found under
 * an older generation (a healing ran since) or forgotten after the token
 * called it invalid is looked up again by CKA_ID, and the object found is
 * checked again before it is used: whatever holds that CKA_ID now is not
 * trusted because an earlier object with the same id was. */
static int resolve(struct p11 *p, CK_SESSION_HANDLE s, unsigned gen, kms_backend_key *k,
                   CK_OBJECT_HANDLE *h)
{
    pthread_mutex_lock(&k->mu);
    int fresh = k->gen == gen && k->handle != CK_INVALID_HANDLE;
    *h = k->handle;
    pthread_mutex_unlock(&k->mu);
    if (fresh)
        return KMS_OK;
    CK_OBJECT_HANDLE found;
    KMS_GUARD(kms_p11_find_key(p, s, k->id, &found));
    KMS_GUARD(kms_p11_check_key(p, s, found, k->label));
    pthread_mutex_lock(&k->mu);
    k->handle = found;
    k->gen = gen;
    pthread_mutex_unlock(&k->mu);
    *h = found;
    return KMS_OK;
}

/* The token says handle h is no longer valid (object destroyed, or handles
 * renumbered): the next resolve looks the key up again. */
static void forget(kms_backend_key *k, CK_OBJECT_HANDLE h)
{
    pthread_mutex_lock(&k->mu);
    if (k->handle == h)
        k->handle = CK_INVALID_HANDLE;
    pthread_mutex_unlock(&k->mu);
}

static int open_op(struct p11 *p, CK_SESSION_HANDLE s, unsigned gen, void *arg, int *lost)
{
    CK_OBJECT_HANDLE h;
    int r = resolve(p, s, gen, arg, &h);
    *lost = r == KMS_EUNAVAIL;
    return r;
}

static int p11_open_version(kms_backend *b, const kms_backend_ref *ref, kms_backend_key **out)
{
    if (ref == NULL || ref->len != P11_ID_LEN || out == NULL)
        return kms_error_set(KMS_EINVAL, "pkcs11: bad key reference");
    kms_backend_key *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    memcpy(k->id, ref->bytes, P11_ID_LEN);
    kms_p11_label(k->id, k->label, sizeof(k->label));
    k->handle = CK_INVALID_HANDLE;
    pthread_mutex_init(&k->mu, NULL);
    int r = with_session(impl(b), open_op, k);
    if (r != 0) {
        pthread_mutex_destroy(&k->mu);
        free(k);
        return r;
    }
    *out = k;
    return KMS_OK;
}

static void p11_release_version(kms_backend *b, kms_backend_key *k)
{
    (void)b;
    if (k == NULL)
        return;
    pthread_mutex_destroy(&k->mu);
    free(k);
}

/* ---- wrap / unwrap ------------------------------------------------------------------ */

/* Wrap and unwrap take the data on the stack: no allocation per call. */
#define MAX_IO (P11_DATA_MAX + KMS_GCM_TAG_LEN)

struct aead_arg {
    kms_backend_key *k;
    kms_aead_io *io;
};

/* A call failed in a way that leaves the session's operation state unknown
 * (CKR_BUFFER_TOO_SMALL keeps the operation active by the standard;
 * CKR_OPERATION_ACTIVE means an earlier one never ended). Such a session
 * would fail every later call, so it is treated as lost: the pool heals. */
static int stuck(CK_RV rv)
{
    return rv == CKR_OPERATION_ACTIVE || rv == CKR_BUFFER_TOO_SMALL;
}

/* Resolves the key and starts an AES-GCM operation on session s. A stale
 * handle (the object was replaced on the token) is looked up and checked
 * again once. */
static int aead_init(struct p11 *p, CK_SESSION_HANDLE s, unsigned gen, kms_backend_key *k,
                     CK_MECHANISM *mech, int encrypt, int *lost)
{
    for (int attempt = 0;; attempt++) {
        CK_OBJECT_HANDLE h;
        int r = resolve(p, s, gen, k, &h);
        if (r != 0) {
            *lost = r == KMS_EUNAVAIL;
            return r;
        }
        CK_RV rv = encrypt ? p->f->C_EncryptInit(s, mech, h) : p->f->C_DecryptInit(s, mech, h);
        if (rv == CKR_OK)
            return KMS_OK;
        if ((rv == CKR_KEY_HANDLE_INVALID || rv == CKR_OBJECT_HANDLE_INVALID) && attempt == 0) {
            forget(k, h);
            continue;
        }
        if (stuck(rv))
            *lost = 1;
        return rv_result(rv, lost, encrypt ? "C_EncryptInit" : "C_DecryptInit");
    }
}

static int wrap_op(struct p11 *p, CK_SESSION_HANDLE s, unsigned gen, void *arg, int *lost)
{
    struct aead_arg *a = arg;
    kms_aead_io *io = a->io;
    /* A fresh random IV from OpenSSL's DRBG for every call (96 bits: at
     * most 2^32 calls per key version, counted by the keyring). An HSM in
     * FIPS mode may ignore it, generate its own and write it into the
     * parameters' IV buffer: pIv points at io->iv, so io->iv holds the IV
     * actually used after the call either way. */
    if (RAND_bytes(io->iv, KMS_GCM_IV_LEN) != 1)
        return kms_error_set(KMS_EUNAVAIL, "OpenSSL DRBG failed");
    CK_GCM_PARAMS gcm = {
        .pIv = io->iv,
        .ulIvLen = KMS_GCM_IV_LEN,
        .ulIvBits = KMS_GCM_IV_LEN * 8,
        .pAAD = (CK_BYTE_PTR)io->aad,
        .ulAADLen = io->aad_len,
        .ulTagBits = KMS_GCM_TAG_LEN * 8,
    };
    CK_MECHANISM mech = {CKM_AES_GCM, &gcm, sizeof(gcm)};
    KMS_GUARD(aead_init(p, s, gen, a->k, &mech, 1, lost));
    /* ciphertext ‖ tag; public data, so not wiped. */
    uint8_t buf[MAX_IO];
    CK_ULONG n = sizeof(buf);
    CK_RV rv = p->f->C_Encrypt(s, (CK_BYTE_PTR)io->in, io->in_len, buf, &n);
    if (rv == CKR_OK && n != io->in_len + KMS_GCM_TAG_LEN)
        return kms_error_set(KMS_EINTERNAL, "pkcs11: C_Encrypt returned %lu bytes", n);
    if (rv != CKR_OK) {
        if (stuck(rv))
            *lost = 1;
        return rv_result(rv, lost, "C_Encrypt");
    }
    memcpy(io->out, buf, io->in_len);
    memcpy(io->tag, buf + io->in_len, KMS_GCM_TAG_LEN);
    return KMS_OK;
}

static int unwrap_op(struct p11 *p, CK_SESSION_HANDLE s, unsigned gen, void *arg, int *lost)
{
    struct aead_arg *a = arg;
    kms_aead_io *io = a->io;
    uint8_t iv[KMS_GCM_IV_LEN]; /* a copy: the token must not change the caller's IV */
    memcpy(iv, io->iv, sizeof(iv));
    CK_GCM_PARAMS gcm = {
        .pIv = iv,
        .ulIvLen = KMS_GCM_IV_LEN,
        .ulIvBits = KMS_GCM_IV_LEN * 8,
        .pAAD = (CK_BYTE_PTR)io->aad,
        .ulAADLen = io->aad_len,
        .ulTagBits = KMS_GCM_TAG_LEN * 8,
    };
    CK_MECHANISM mech = {CKM_AES_GCM, &gcm, sizeof(gcm)};
    int r = aead_init(p, s, gen, a->k, &mech, 0, lost);
    if (r != 0)
        goto out;
    uint8_t in[MAX_IO], out[MAX_IO];
    size_t in_len = io->in_len + KMS_GCM_TAG_LEN;
    memcpy(in, io->in, io->in_len);
    memcpy(in + io->in_len, io->tag, KMS_GCM_TAG_LEN);
    CK_ULONG n = sizeof(out);
    CK_RV rv = p->f->C_Decrypt(s, in, in_len, out, &n);
    if (rv == CKR_OK && n == io->in_len) {
        memcpy(io->out, out, n);
    } else if (rv == CKR_OK) {
        r = kms_error_set(KMS_EINTERNAL, "pkcs11: C_Decrypt returned %lu bytes", n);
    } else if (kms_p11_decrypt_rv_to_error(rv) == KMS_EAUTH) {
        r = kms_error_set(KMS_EAUTH, "pkcs11: GCM tag check failed (%s)", kms_p11_rv_name(rv));
    } else {
        if (stuck(rv))
            *lost = 1;
        r = rv_result(rv, lost, "C_Decrypt");
    }
    /* Plaintext, or what a token might leave there on failure: no output
     * can be longer than the input. */
    OPENSSL_cleanse(out, in_len);
out:
    if (r != 0)
        OPENSSL_cleanse(io->out, io->in_len);
    return r;
}

static int check_io(const kms_backend_key *k, const kms_aead_io *io)
{
    if (k == NULL || io == NULL || io->in == NULL || io->out == NULL ||
        (io->aad == NULL && io->aad_len))
        return kms_error_set(KMS_EINVAL, "pkcs11: missing argument");
    if (io->in_len == 0)
        return kms_error_set(KMS_EINVAL, "pkcs11: no data");
    if (io->in_len > P11_DATA_MAX)
        return kms_error_set(KMS_ETOOBIG, "pkcs11: data must be 1..%d bytes", P11_DATA_MAX);
    return KMS_OK;
}

static int p11_wrap(kms_backend *b, kms_backend_key *k, kms_aead_io *io)
{
    KMS_GUARD(check_io(k, io));
    struct aead_arg a = {k, io};
    return with_session(impl(b), wrap_op, &a);
}

static int p11_unwrap(kms_backend *b, kms_backend_key *k, kms_aead_io *io)
{
    int r = check_io(k, io);
    if (r != 0) {
        if (io != NULL && io->out != NULL && io->in_len <= P11_DATA_MAX)
            OPENSSL_cleanse(io->out, io->in_len);
        return r;
    }
    struct aead_arg a = {k, io};
    return with_session(impl(b), unwrap_op, &a);
}

/* ---- the state-integrity key ------------------------------------------------------------ */

static int state_create_op(struct p11 *p, CK_SESSION_HANDLE s, unsigned gen, void *arg, int *lost)
{
    (void)gen;
    (void)arg;
    CK_OBJECT_HANDLE h;
    int r = kms_p11_find_state_key(p, s, &h);
    if (r == 0 || r == KMS_EKEYCHECK)
        return kms_error_set(KMS_EEXISTS,
                             "pkcs11: the state-integrity key is already on token "
                             "\"%s\"",
                             p->label);
    if (r != KMS_ENOTFOUND) {
        *lost = r == KMS_EUNAVAIL;
        return r;
    }
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_GENERIC_SECRET;
    CK_ULONG len = 32;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    static const char id[] = P11_STATE_KEY_ID, label[] = P11_STATE_KEY_LABEL;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_KEY_TYPE, &type, sizeof(type)},
        {CKA_VALUE_LEN, &len, sizeof(len)},
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_PRIVATE, &yes, sizeof(yes)},
        {CKA_SENSITIVE, &yes, sizeof(yes)},
        {CKA_EXTRACTABLE, &no, sizeof(no)},
        {CKA_MODIFIABLE, &no, sizeof(no)},
        {CKA_SIGN, &yes, sizeof(yes)},
        {CKA_VERIFY, &yes, sizeof(yes)},
        {CKA_ENCRYPT, &no, sizeof(no)},
        {CKA_DECRYPT, &no, sizeof(no)},
        {CKA_WRAP, &no, sizeof(no)},
        {CKA_UNWRAP, &no, sizeof(no)},
        {CKA_DERIVE, &no, sizeof(no)},
        {CKA_ID, (void *)id, sizeof(id) - 1},
        {CKA_LABEL, (void *)label, sizeof(label) - 1},
    };
    CK_MECHANISM mech = {CKM_GENERIC_SECRET_KEY_GEN, NULL, 0};
    CK_RV rv = p->f->C_GenerateKey(s, &mech, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &h);
    return rv_result(rv, lost, "C_GenerateKey (state-integrity key)");
}

static int p11_state_key_create(kms_backend *b)
{
    int r = with_session(impl(b), state_create_op, NULL);
    if (r == 0)
        kms_log_info("pkcs11: created %s on token \"%s\"", P11_STATE_KEY_LABEL, impl(b)->label);
    return r;
}

/* The state key's handle for this pool generation, found and checked again
 * after a healing or once the token called the handle invalid (the same
 * rule as resolve for versions). */
static int state_resolve(struct p11 *p, CK_SESSION_HANDLE s, unsigned gen, CK_OBJECT_HANDLE *h)
{
    pthread_mutex_lock(&p->state_mu);
    int fresh = p->state_gen == gen && p->state_handle != CK_INVALID_HANDLE;
    *h = p->state_handle;
    pthread_mutex_unlock(&p->state_mu);
    if (fresh)
        return KMS_OK;
    CK_OBJECT_HANDLE found;
    KMS_GUARD(kms_p11_find_state_key(p, s, &found));
    KMS_GUARD(kms_p11_check_state_key(p, s, found));
    pthread_mutex_lock(&p->state_mu);
    p->state_handle = found;
    p->state_gen = gen;
    pthread_mutex_unlock(&p->state_mu);
    *h = found;
    return KMS_OK;
}

struct mac_arg {
    const uint8_t *in;
    size_t len;
    uint8_t *out;
};

static int state_mac_op(struct p11 *p, CK_SESSION_HANDLE s, unsigned gen, void *arg, int *lost)
{
    struct mac_arg *a = arg;
    CK_MECHANISM mech = {CKM_SHA256_HMAC, NULL, 0};
    for (int attempt = 0;; attempt++) {
        CK_OBJECT_HANDLE h;
        int r = state_resolve(p, s, gen, &h);
        if (r != 0) {
            *lost = r == KMS_EUNAVAIL;
            return r;
        }
        CK_RV rv = p->f->C_SignInit(s, &mech, h);
        if ((rv == CKR_KEY_HANDLE_INVALID || rv == CKR_OBJECT_HANDLE_INVALID) && attempt == 0) {
            pthread_mutex_lock(&p->state_mu);
            if (p->state_handle == h)
                p->state_handle = CK_INVALID_HANDLE;
            pthread_mutex_unlock(&p->state_mu);
            continue;
        }
        if (rv != CKR_OK) {
            if (stuck(rv))
                *lost = 1;
            return rv_result(rv, lost, "C_SignInit (state-integrity key)");
        }
        uint8_t mac[KMS_STATE_MAC_LEN];
        CK_ULONG n = sizeof(mac);
        rv = p->f->C_Sign(s, (CK_BYTE_PTR)a->in, a->len, mac, &n);
        if (rv != CKR_OK) {
            if (stuck(rv))
                *lost = 1;
            return rv_result(rv, lost, "C_Sign (state-integrity key)");
        }
        if (n != KMS_STATE_MAC_LEN)
            return kms_error_set(KMS_EINTERNAL, "pkcs11: C_Sign returned %lu bytes", n);
        memcpy(a->out, mac, KMS_STATE_MAC_LEN);
        return KMS_OK;
    }
}

static int p11_state_mac(kms_backend *b, const uint8_t *in, size_t len,
                         uint8_t out[KMS_STATE_MAC_LEN])
{
    if (out == NULL || (in == NULL && len > 0))
        return kms_error_set(KMS_EINVAL, "pkcs11: missing argument");
    if (len > KMS_STATE_MAC_INPUT_MAX)
        return kms_error_set(KMS_ETOOBIG, "pkcs11: MAC input over %d bytes",
                             KMS_STATE_MAC_INPUT_MAX);
    static const uint8_t empty[1];
    struct mac_arg a = {in != NULL ? in : empty, len, out};
    return with_session(impl(b), state_mac_op, &a);
}

/* ---- the audit signing key ------------------------------------------------------------ */

static int audit_create_op(struct p11 *p, CK_SESSION_HANDLE s, unsigned gen, void *arg, int *lost)
{
    (void)gen;
    (void)arg;
    CK_OBJECT_HANDLE h, pub_h;
    for (int half = 0; half < 2; half++) {
        int r = kms_p11_find_audit_key(p, s, half, &h);
        if (r == 0 || r == KMS_EKEYCHECK)
            return kms_error_set(
                KMS_EEXISTS, "pkcs11: the audit signing key is already on token \"%s\"", p->label);
        if (r != KMS_ENOTFOUND) {
            *lost = r == KMS_EUNAVAIL;
            return r;
        }
    }
    kms_error_clear();
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    static const char id[] = P11_AUDIT_KEY_ID, label[] = P11_AUDIT_KEY_LABEL;
    CK_ATTRIBUTE pub_tmpl[] = {
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_PRIVATE, &no, sizeof(no)},
        {CKA_MODIFIABLE, &no, sizeof(no)},
        {CKA_VERIFY, &yes, sizeof(yes)},
        {CKA_ENCRYPT, &no, sizeof(no)},
        {CKA_WRAP, &no, sizeof(no)},
        {CKA_DERIVE, &no, sizeof(no)},
        {CKA_EC_PARAMS, (void *)kms_p11_p256_params, P11_P256_PARAMS_LEN},
        {CKA_ID, (void *)id, sizeof(id) - 1},
        {CKA_LABEL, (void *)label, sizeof(label) - 1},
    };
    CK_ATTRIBUTE priv_tmpl[] = {
        {CKA_TOKEN, &yes, sizeof(yes)},       {CKA_PRIVATE, &yes, sizeof(yes)},
        {CKA_SENSITIVE, &yes, sizeof(yes)},   {CKA_EXTRACTABLE, &no, sizeof(no)},
        {CKA_MODIFIABLE, &no, sizeof(no)},    {CKA_SIGN, &yes, sizeof(yes)},
        {CKA_SIGN_RECOVER, &no, sizeof(no)},  {CKA_DECRYPT, &no, sizeof(no)},
        {CKA_UNWRAP, &no, sizeof(no)},        {CKA_DERIVE, &no, sizeof(no)},
        {CKA_ID, (void *)id, sizeof(id) - 1}, {CKA_LABEL, (void *)label, sizeof(label) - 1},
    };
    CK_MECHANISM mech = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
    CK_RV rv =
        p->f->C_GenerateKeyPair(s, &mech, pub_tmpl, sizeof(pub_tmpl) / sizeof(pub_tmpl[0]),
                                priv_tmpl, sizeof(priv_tmpl) / sizeof(priv_tmpl[0]), &pub_h, &h);
    return rv_result(rv, lost, "C_GenerateKeyPair (audit signing key)");
}

static int p11_audit_key_create(kms_backend *b)
{
    int r = with_session(impl(b), audit_create_op, NULL);
    if (r == 0)
        kms_log_info("pkcs11: created %s on token \"%s\"", P11_AUDIT_KEY_LABEL, impl(b)->label);
    return r;
}

static int audit_public_op(struct p11 *p, CK_SESSION_HANDLE s, unsigned gen, void *arg, int *lost)
{
    (void)gen;
    CK_OBJECT_HANDLE priv, pub;
    int r;
    if ((r = kms_p11_find_audit_key(p, s, 0, &priv)) != 0 ||
        (r = kms_p11_check_audit_key(p, s, priv)) != 0 ||
        (r = kms_p11_find_audit_key(p, s, 1, &pub)) != 0 ||
        (r = kms_p11_audit_point(p, s, pub, arg)) != 0) {
        *lost = r == KMS_EUNAVAIL;
        return r;
    }
    return KMS_OK;
}

static int p11_audit_key_public(kms_backend *b, uint8_t pub[KMS_AUDIT_PUB_LEN])
{
    uint8_t got[KMS_AUDIT_PUB_LEN];
    if (pub == NULL)
        return kms_error_set(KMS_EINVAL, "pkcs11: missing argument");
    KMS_GUARD(with_session(impl(b), audit_public_op, got));
    memcpy(pub, got, KMS_AUDIT_PUB_LEN);
    return KMS_OK;
}

struct audit_sign_arg {
    const uint8_t *digest;
    uint8_t *sig;
};

/* Found and checked at every signature: a checkpoint is signed every
 * thousand records or so, and the check is a few attribute reads. */
static int audit_sign_op(struct p11 *p, CK_SESSION_HANDLE s, unsigned gen, void *arg, int *lost)
{
    (void)gen;
    struct audit_sign_arg *a = arg;
    CK_OBJECT_HANDLE h;
    int r;
    if ((r = kms_p11_find_audit_key(p, s, 0, &h)) != 0 ||
        (r = kms_p11_check_audit_key(p, s, h)) != 0) {
        *lost = r == KMS_EUNAVAIL;
        return r;
    }
    CK_MECHANISM mech = {CKM_ECDSA, NULL, 0};
    CK_RV rv = p->f->C_SignInit(s, &mech, h);
    if (rv != CKR_OK) {
        if (stuck(rv))
            *lost = 1;
        return rv_result(rv, lost, "C_SignInit (audit signing key)");
    }
    uint8_t sig[KMS_AUDIT_SIG_LEN + 8];
    CK_ULONG n = sizeof(sig);
    rv = p->f->C_Sign(s, (CK_BYTE_PTR)a->digest, KMS_AUDIT_DIGEST_LEN, sig, &n);
    if (rv != CKR_OK) {
        if (stuck(rv))
            *lost = 1;
        return rv_result(rv, lost, "C_Sign (audit signing key)");
    }
    if (n != KMS_AUDIT_SIG_LEN)
        return kms_error_set(KMS_EINTERNAL, "pkcs11: C_Sign (ECDSA) returned %lu bytes", n);
    memcpy(a->sig, sig, KMS_AUDIT_SIG_LEN);
    return KMS_OK;
}

static int p11_audit_sign(kms_backend *b, const uint8_t digest[KMS_AUDIT_DIGEST_LEN],
                          uint8_t sig[KMS_AUDIT_SIG_LEN])
{
    if (digest == NULL || sig == NULL)
        return kms_error_set(KMS_EINVAL, "pkcs11: missing argument");
    struct audit_sign_arg a = {digest, sig};
    return with_session(impl(b), audit_sign_op, &a);
}

/* ---- random / health / close -------------------------------------------------------- */

struct random_arg {
    uint8_t *out;
    size_t n;
};

static int random_op(struct p11 *p, CK_SESSION_HANDLE s, unsigned gen, void *arg, int *lost)
{
    (void)gen;
    struct random_arg *a = arg;
    return rv_result(p->f->C_GenerateRandom(s, a->out, a->n), lost, "C_GenerateRandom");
}

static int p11_random(kms_backend *b, uint8_t *out, size_t n)
{
    if (out == NULL || n == 0 || n > 4096)
        return kms_error_set(KMS_EINVAL, "pkcs11: random length out of range");
    struct random_arg a = {out, n};
    return with_session(impl(b), random_op, &a);
}

static int health_op(struct p11 *p, CK_SESSION_HANDLE s, unsigned gen, void *arg, int *lost)
{
    (void)gen;
    (void)arg;
    CK_SESSION_INFO info;
    CK_RV rv = p->f->C_GetSessionInfo(s, &info);
    int r = rv_result(rv, lost, "C_GetSessionInfo");
    if (r == 0 && info.state != CKS_RW_USER_FUNCTIONS && info.state != CKS_RO_USER_FUNCTIONS) {
        *lost = 1; /* logged out under us */
        r = kms_error_set(KMS_EUNAVAIL, "pkcs11: session not logged in");
    }
    return r;
}

static int p11_health(kms_backend *b)
{
    int r = with_session(impl(b), health_op, NULL);
    return r == 0 ? KMS_OK : KMS_EUNAVAIL;
}

static void p11_close(kms_backend *b)
{
    if (b == NULL)
        return;
    struct p11 *p = impl(b);
    kms_p11_pool_close(p);
    kms_p11_module_unload(p);
    kms_secret_free(p->pin);
    pthread_mutex_destroy(&p->state_mu);
    free(p);
}

/* One mode: a token object that never leaves the token and is deleted by
 * C_DestroyObject. */
static const kms_backend_mode p11_modes[] = {
    {"", KMS_BACKEND_CAP_KEY_NEVER_LEAVES | KMS_BACKEND_CAP_SHRED | KMS_BACKEND_CAP_STATE_MAC |
             KMS_BACKEND_CAP_AUDIT_SIGN},
};

static const kms_backend_ops p11_ops = {
    .name = "pkcs11",
    .modes = p11_modes,
    .n_modes = sizeof(p11_modes) / sizeof(p11_modes[0]),
    .create_version = p11_create_version,
    .open_version = p11_open_version,
    .release_version = p11_release_version,
    .wrap = p11_wrap,
    .unwrap = p11_unwrap,
    .destroy_version = p11_destroy_version,
    .random = p11_random,
    .health = p11_health,
    .close = p11_close,
    .state_key_create = p11_state_key_create,
    .state_mac = p11_state_mac,
    .audit_key_create = p11_audit_key_create,
    .audit_key_public = p11_audit_key_public,
    .audit_sign = p11_audit_sign,
};

int kms_p11_open(const kms_p11_config *cfg, kms_backend **out)
{
    if (cfg == NULL || out == NULL)
        return kms_error_set(KMS_EINVAL, "pkcs11: no configuration");
    struct p11 *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    p->base.ops = &p11_ops;
    p->base.impl = p;
    pthread_mutex_init(&p->state_mu, NULL);
    p->state_handle = CK_INVALID_HANDLE;
    int r;
    if ((r = kms_p11_read_pin(cfg->pin_file, &p->pin)) != 0)
        goto out;
    p->allow_nonlocal = cfg->allow_nonlocal_keys != 0;
    if ((r = kms_p11_module_load(p, cfg->module_path, cfg->init_args)) != 0)
        goto out;
    if ((r = kms_p11_find_slot(p, cfg->token_label)) != 0)
        goto out;
    /* A module without a mechanism the backend needs would start, report
     * SERVING and fail every request: refuse it now, naming what lacks. */
    if ((r = kms_p11_check_mechanisms(p)) != 0)
        goto out;
    if ((r = kms_p11_pool_open(p, cfg->sessions)) != 0)
        goto out;
out:
    if (r != 0) {
        kms_log_error("%s", kms_error_detail());
        p11_close(&p->base);
        return r;
    }
    kms_log_info("pkcs11: token \"%s\" ready (%u sessions)", p->label, p->pool.size);
    *out = &p->base;
    return KMS_OK;
}
