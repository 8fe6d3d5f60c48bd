/* Keyring logic over a real SQLite file and an in-memory backend (AES-GCM
 * in OpenSSL) that can be told to fail. The real SoftHSM2 path is covered
 * by tests/integration/test_envelope_softhsm.c. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "test_util.h"
#include "kmsd/keyring/blob.h"
#include "kmsd/keyring/keyring.h"

/* ---- in-memory backend ---------------------------------------------------- */

#define FAKE_MAX 64

struct fake_key {
    int used;
    uint8_t id[20];
    uint8_t value[32];
};

struct fake {
    struct fake_key keys[FAKE_MAX];
    int fail_create; /* create_version returns KMS_EUNAVAIL */
    int fail_open;   /* open_version returns KMS_EKEYCHECK */
    int creates, destroys, opens;
};

struct kms_backend_key {
    struct fake_key *k;
};

static struct fake_key *fake_find(struct fake *f, const uint8_t *id, size_t len)
{
    for (int i = 0; i < FAKE_MAX; i++)
        if (f->keys[i].used && len == 20 && memcmp(f->keys[i].id, id, 20) == 0)
            return &f->keys[i];
    return NULL;
}

static int fake_create(kms_backend *b, const uint8_t key_id[16], uint32_t version,
                       kms_backend_ref *ref)
{
    struct fake *f = b->impl;
    uint8_t id[20];
    memcpy(id, key_id, 16);
    id[16] = (uint8_t)(version >> 24);
    id[17] = (uint8_t)(version >> 16);
    id[18] = (uint8_t)(version >> 8);
    id[19] = (uint8_t)version;
    if (fake_find(f, id, 20)) {
        memcpy(ref->bytes, id, 20);
        ref->len = 20;
        return KMS_EEXISTS;
    }
    if (f->fail_create)
        return KMS_EUNAVAIL;
    for (int i = 0; i < FAKE_MAX; i++) {
        if (!f->keys[i].used) {
            f->keys[i].used = 1;
            memcpy(f->keys[i].id, id, 20);
            assert_int_equal(RAND_bytes(f->keys[i].value, 32), 1);
            memcpy(ref->bytes, id, 20);
            ref->len = 20;
            f->creates++;
            return KMS_OK;
        }
    }
    return KMS_EEXHAUSTED;
}

static int fake_open(kms_backend *b, const kms_backend_ref *ref, kms_backend_key **out)
{
    struct fake *f = b->impl;
    if (f->fail_open)
        return kms_error_set(KMS_EKEYCHECK, "fake: CKA_EXTRACTABLE is TRUE");
    struct fake_key *k = fake_find(f, ref->bytes, ref->len);
    if (k == NULL)
        return KMS_ENOTFOUND;
    kms_backend_key *bk = malloc(sizeof(*bk));
    bk->k = k;
    f->opens++;
    *out = bk;
    return KMS_OK;
}

static void fake_release(kms_backend *b, kms_backend_key *k)
{
    (void)b;
    free(k);
}

static int fake_gcm(kms_backend_key *k, kms_aead_io *io, int enc)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int ok = 1, n = 0;
    if (enc)
        assert_int_equal(RAND_bytes(io->iv, 12), 1);
    ok &= EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, k->k->value, io->iv, enc);
    ok &= EVP_CipherUpdate(c, NULL, &n, io->aad, (int)io->aad_len);
    ok &= EVP_CipherUpdate(c, io->out, &n, io->in, (int)io->in_len);
    if (!enc)
        ok &= EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, io->tag);
    int fin = EVP_CipherFinal_ex(c, io->out + n, &n);
    if (enc)
        ok &= EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, io->tag);
    EVP_CIPHER_CTX_free(c);
    if (!ok)
        return KMS_EINTERNAL;
    if (!fin) {
        memset(io->out, 0, io->in_len);
        return KMS_EAUTH;
    }
    return KMS_OK;
}

static int fake_wrap(kms_backend *b, kms_backend_key *k, kms_aead_io *io)
{
    (void)b;
    return fake_gcm(k, io, 1);
}

static int fake_unwrap(kms_backend *b, kms_backend_key *k, kms_aead_io *io)
{
    (void)b;
    return fake_gcm(k, io, 0);
}

static int fake_destroy(kms_backend *b, const kms_backend_ref *ref)
{
    struct fake *f = b->impl;
    struct fake_key *k = fake_find(f, ref->bytes, ref->len);
    if (k == NULL)
        return KMS_ENOTFOUND;
    memset(k, 0, sizeof(*k));
    f->destroys++;
    return KMS_OK;
}

static int fake_random(kms_backend *b, uint8_t *out, size_t n)
{
    (void)b;
    return RAND_bytes(out, (int)n) == 1 ? KMS_OK : KMS_EUNAVAIL;
}

static int fake_health(kms_backend *b)
{
    (void)b;
    return KMS_OK;
}

static void fake_close(kms_backend *b)
{
    (void)b;
}

static const kms_backend_ops fake_ops = {
    .name = "fake",
    .create_version = fake_create,
    .open_version = fake_open,
    .release_version = fake_release,
    .wrap = fake_wrap,
    .unwrap = fake_unwrap,
    .destroy_version = fake_destroy,
    .random = fake_random,
    .health = fake_health,
    .close = fake_close,
};

/* ---- fixture --------------------------------------------------------------- */

struct fx {
    char dir[256];
    char db[320];
    struct fake fake;
    kms_backend backend;
    kms_store *store;
    kms_keyring *kr;
};

static void fx_open_keyring(struct fx *f, const kms_keyring_config *cfg)
{
    assert_int_equal(kms_store_sqlite_open(f->db, &f->store), KMS_OK);
    assert_int_equal(kms_keyring_open(f->store, cfg, &f->kr), KMS_OK);
    assert_int_equal(kms_keyring_add_backend(f->kr, &f->backend), KMS_OK);
}

static void fx_close_keyring(struct fx *f)
{
    kms_keyring_close(f->kr);
    f->store->ops->close(f->store);
    f->kr = NULL;
    f->store = NULL;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    kms_test_tmpdir("kms-keyring", f->dir, sizeof(f->dir));
    kms_test_path(f->db, sizeof(f->db), f->dir, "kms.db");
    f->backend.ops = &fake_ops;
    f->backend.impl = &f->fake;
    fx_open_keyring(f, NULL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    if (f->kr)
        fx_close_keyring(f);
    kms_test_rmtree(f->dir);
    free(f);
    return 0;
}

static const kms_context_pair ctx_pairs[] = {{"tenant", 6, "acme", 4}, {"file", 4, "a.tar", 5}};
static const kms_context ctx = {ctx_pairs, 2};

static size_t wrap_ok(struct fx *f, const char *name, const uint8_t *pt, size_t n, uint8_t *blob,
                      uint32_t *ver)
{
    size_t len = 0;
    assert_int_equal(kms_keyring_wrap(f->kr, name, &ctx, pt, n, blob, KMS_BLOB_MAX, &len, ver),
                     KMS_OK);
    return len;
}

/* ---- tests ----------------------------------------------------------------- */

static void round_trip_and_metadata(void **state)
{
    struct fx *f = *state;
    kms_key_rec rec;
    assert_int_equal(kms_keyring_create_key(f->kr, "app/data-1", "fake", &rec), KMS_OK);
    assert_int_equal(rec.primary_version, 1);
    assert_string_equal(rec.backend, "fake");

    uint8_t pt[32], blob[KMS_BLOB_MAX];
    assert_int_equal(RAND_bytes(pt, sizeof(pt)), 1);
    uint32_t ver = 0;
    size_t len = wrap_ok(f, "app/data-1", pt, sizeof(pt), blob, &ver);
    assert_int_equal(ver, 1);
    assert_int_equal(len, sizeof(pt) + KMS_BLOB_OVERHEAD);
    assert_memory_equal(blob + 1, rec.id, 16);

    kms_secret *out = NULL;
    kms_key_rec got;
    uint32_t got_ver = 0;
    assert_int_equal(kms_keyring_unwrap(f->kr, blob, len, &ctx, &out, &got, &got_ver), KMS_OK);
    assert_int_equal(out->len, sizeof(pt));
    assert_memory_equal(out->data, pt, sizeof(pt));
    assert_string_equal(got.name, "app/data-1");
    assert_int_equal(got_ver, 1);
    kms_secret_free(out);
}

static void names_and_backends_checked(void **state)
{
    struct fx *f = *state;
    const char *bad[] = {"", "/abs", "sp ace", "semi;colon", "ünï", NULL};
    for (int i = 0; bad[i]; i++)
        assert_int_equal(kms_keyring_create_key(f->kr, bad[i], "fake", NULL), KMS_EINVAL);
    char longname[KMS_KEY_NAME_MAX + 2];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(kms_keyring_create_key(f->kr, longname, "fake", NULL), KMS_EINVAL);
    longname[KMS_KEY_NAME_MAX] = '\0';
    assert_int_equal(kms_keyring_create_key(f->kr, longname, "fake", NULL), KMS_OK);
    assert_int_equal(kms_keyring_create_key(f->kr, "k", "nope", NULL), KMS_EINVAL);
    assert_int_equal(kms_keyring_create_key(f->kr, "k", "fake", NULL), KMS_OK);
    int creates = f->fake.creates;
    assert_int_equal(kms_keyring_create_key(f->kr, "k", "fake", NULL), KMS_EEXISTS);
    assert_int_equal(f->fake.creates, creates); /* nothing made on the device */
    assert_int_equal(kms_keyring_add_backend(f->kr, &f->backend), KMS_EEXISTS);
}

static void wrong_context_and_tampering(void **state)
{
    struct fx *f = *state;
    assert_int_equal(kms_keyring_create_key(f->kr, "k", "fake", NULL), KMS_OK);
    uint8_t pt[48] = {1, 2, 3}, blob[KMS_BLOB_MAX];
    size_t len = wrap_ok(f, "k", pt, sizeof(pt), blob, NULL);
    kms_secret *out = NULL;

    kms_context_pair other_pairs[] = {{"tenant", 6, "evil", 4}, {"file", 4, "a.tar", 5}};
    kms_context other = {other_pairs, 2};
    assert_int_equal(kms_keyring_unwrap(f->kr, blob, len, &other, &out, NULL, NULL), KMS_EAUTH);
    assert_int_equal(kms_keyring_unwrap(f->kr, blob, len, NULL, &out, NULL, NULL), KMS_EAUTH);
    assert_null(out);

    /* Flip every bit of every byte: each must fail, none may yield plaintext. */
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            blob[i] ^= (uint8_t)(1u << bit);
            int r = kms_keyring_unwrap(f->kr, blob, len, &ctx, &out, NULL, NULL);
            assert_true(r == KMS_EAUTH || r == KMS_EBADBLOB || r == KMS_ENOTFOUND);
            assert_null(out);
            blob[i] ^= (uint8_t)(1u << bit);
        }
    }
    /* A cut inside the fixed fields is malformed; a cut that leaves a
     * shorter but well-formed blob fails authentication. Never plaintext. */
    for (size_t n = 0; n < len; n++) {
        int r = kms_keyring_unwrap(f->kr, blob, n, &ctx, &out, NULL, NULL);
        assert_int_equal(r, n < KMS_BLOB_OVERHEAD + 1 ? KMS_EBADBLOB : KMS_EAUTH);
        assert_null(out);
    }
    assert_int_equal(kms_keyring_unwrap(f->kr, blob, len, &ctx, &out, NULL, NULL), KMS_OK);
    kms_secret_free(out);
}

static void blob_from_another_key(void **state)
{
    struct fx *f = *state;
    kms_key_rec a, b;
    assert_int_equal(kms_keyring_create_key(f->kr, "a", "fake", &a), KMS_OK);
    assert_int_equal(kms_keyring_create_key(f->kr, "b", "fake", &b), KMS_OK);
    uint8_t pt[16] = {9}, blob[KMS_BLOB_MAX];
    size_t len = wrap_ok(f, "a", pt, sizeof(pt), blob, NULL);
    memcpy(blob + 1, b.id, 16); /* claim key b */
    kms_secret *out = NULL;
    assert_int_equal(kms_keyring_unwrap(f->kr, blob, len, &ctx, &out, NULL, NULL), KMS_EAUTH);
    blob[1] ^= 0xff; /* a key id nobody has */
    assert_int_equal(kms_keyring_unwrap(f->kr, blob, len, &ctx, &out, NULL, NULL), KMS_ENOTFOUND);
    assert_null(out);
}

static void rotation_and_version_states(void **state)
{
    struct fx *f = *state;
    assert_int_equal(kms_keyring_create_key(f->kr, "k", "fake", NULL), KMS_OK);
    uint8_t pt[32] = {7}, b1[KMS_BLOB_MAX], b2[KMS_BLOB_MAX];
    uint32_t v = 0;
    size_t l1 = wrap_ok(f, "k", pt, sizeof(pt), b1, &v);
    assert_int_equal(v, 1);
    uint32_t nv = 0;
    assert_int_equal(kms_keyring_rotate(f->kr, "k", &nv), KMS_OK);
    assert_int_equal(nv, 2);
    size_t l2 = wrap_ok(f, "k", pt, sizeof(pt), b2, &v);
    assert_int_equal(v, 2);

    kms_secret *out = NULL;
    uint32_t got = 0;
    assert_int_equal(kms_keyring_unwrap(f->kr, b1, l1, &ctx, &out, NULL, &got), KMS_OK);
    assert_int_equal(got, 1);
    kms_secret_free(out);

    assert_int_equal(kms_keyring_set_version_state(f->kr, "k", 2, KMS_VERSION_DISABLED),
                     KMS_EPRECOND); /* primary */
    assert_int_equal(kms_keyring_set_version_state(f->kr, "k", 9, KMS_VERSION_DISABLED),
                     KMS_ENOTFOUND);
    assert_int_equal(kms_keyring_set_version_state(f->kr, "k", 1, KMS_VERSION_DESTROYED),
                     KMS_EINVAL);
    assert_int_equal(kms_keyring_set_version_state(f->kr, "k", 1, KMS_VERSION_DISABLED), KMS_OK);
    out = NULL;
    assert_int_equal(kms_keyring_unwrap(f->kr, b1, l1, &ctx, &out, NULL, NULL), KMS_EPRECOND);
    assert_null(out);
    assert_int_equal(kms_keyring_unwrap(f->kr, b2, l2, &ctx, &out, NULL, NULL), KMS_OK);
    kms_secret_free(out);

    /* The state survives a restart. */
    fx_close_keyring(f);
    fx_open_keyring(f, NULL);
    assert_int_equal(kms_keyring_unwrap(f->kr, b1, l1, &ctx, &out, NULL, NULL), KMS_EPRECOND);
    assert_int_equal(kms_keyring_set_version_state(f->kr, "k", 1, KMS_VERSION_ENABLED), KMS_OK);
    assert_int_equal(kms_keyring_unwrap(f->kr, b1, l1, &ctx, &out, NULL, NULL), KMS_OK);
    kms_secret_free(out);

    /* An unknown version of a known key. */
    b2[20] = 9;
    assert_int_equal(kms_keyring_unwrap(f->kr, b2, l2, &ctx, &out, NULL, NULL), KMS_ENOTFOUND);
}

static uint64_t stored_usage(struct fx *f, const char *name, uint32_t version)
{
    kms_key_rec k;
    kms_version_rec v;
    assert_int_equal(f->store->ops->key_get_by_name(f->store, name, &k), KMS_OK);
    assert_int_equal(f->store->ops->version_get(f->store, k.id, version, &v), KMS_OK);
    return v.usage_count;
}

static void nonce_budget_rotates_then_refuses(void **state)
{
    struct fx *f = *state;
    fx_close_keyring(f);
    kms_keyring_config cfg = {.nonce_limit = 100, .rotate_at = 90, .lease = 8};
    fx_open_keyring(f, &cfg);
    assert_int_equal(kms_keyring_create_key(f->kr, "k", "fake", NULL), KMS_OK);
    uint8_t pt[16] = {1}, blob[KMS_BLOB_MAX];
    uint32_t v = 0;
    for (int i = 0; i < 90; i++) {
        wrap_ok(f, "k", pt, sizeof(pt), blob, &v);
        assert_int_equal(v, 1);
        /* Reserved before use: the stored count never lags the uses. */
        assert_true(stored_usage(f, "k", 1) >= (uint64_t)i + 1);
    }
    /* Leases stop at rotate_at, so the 91st use is the new version's. */
    assert_int_equal(stored_usage(f, "k", 1), 90);
    wrap_ok(f, "k", pt, sizeof(pt), blob, &v);
    assert_int_equal(v, 2);
    assert_int_equal(stored_usage(f, "k", 1), 90);
    assert_int_equal(stored_usage(f, "k", 2), 8);

    /* If rotation cannot happen, the old version runs to the hard limit. */
    fx_close_keyring(f);
    fx_open_keyring(f, &cfg);
    assert_int_equal(kms_keyring_create_key(f->kr, "j", "fake", NULL), KMS_OK);
    f->fake.fail_create = 1;
    int ok = 0, r = 0;
    for (int i = 0; i < 200; i++) {
        size_t len = 0;
        r = kms_keyring_wrap(f->kr, "j", &ctx, pt, sizeof(pt), blob, sizeof(blob), &len, &v);
        if (r != KMS_OK)
            break;
        assert_int_equal(v, 1);
        ok++;
    }
    assert_int_equal(r, KMS_EEXHAUSTED);
    assert_int_equal(ok, 100);
    assert_int_equal(stored_usage(f, "j", 1), 100);
    f->fake.fail_create = 0;
    wrap_ok(f, "j", pt, sizeof(pt), blob, &v); /* rotation now works */
    assert_int_equal(v, 2);
}

/* The recorder's record is stored with the automatic rotation's version;
 * a recorder that fails stops the rotation before the device is touched. */
struct recorder {
    int calls, fail;
    char reason[64];
};

static int test_recorder(void *arg, const char *key_name, uint32_t version, const char *reason,
                         kms_action_rec *a)
{
    struct recorder *rc = arg;
    rc->calls++;
    snprintf(rc->reason, sizeof(rc->reason), "%s", reason);
    if (rc->fail)
        return kms_error_set(KMS_EINTERNAL, "recorder failed");
    memset(a, 0, sizeof(*a));
    memset(a->id, (int)version, sizeof(a->id));
    snprintf(a->type, sizeof(a->type), "RotateKey");
    a->bytes[0] = 0x12;
    a->bytes_len = 1;
    snprintf(a->proposer, sizeof(a->proposer), "%s", KMS_SYSTEM_PROPOSER);
    a->state = KMS_ACTION_EXECUTED;
    snprintf(a->result, sizeof(a->result), "%s v%u (%s)", key_name, version, reason);
    return KMS_OK;
}

static void automatic_rotations_recorded(void **state)
{
    struct fx *f = *state;
    fx_close_keyring(f);
    kms_keyring_config cfg = {.nonce_limit = 100, .rotate_at = 10, .lease = 10};
    fx_open_keyring(f, &cfg);
    struct recorder rc = {0};
    kms_keyring_set_rotation_recorder(f->kr, test_recorder, &rc);
    assert_int_equal(kms_keyring_create_key(f->kr, "k", "fake", NULL), KMS_OK);
    assert_int_equal(rc.calls, 0); /* creation is not a rotation */
    uint8_t pt[16] = {1}, blob[KMS_BLOB_MAX];
    uint32_t v = 0;
    for (int i = 0; i < 11; i++)
        wrap_ok(f, "k", pt, sizeof(pt), blob, &v);
    assert_int_equal(v, 2); /* the 11th use rotated first */
    assert_int_equal(rc.calls, 1);
    assert_string_equal(rc.reason, "nonce budget");
    kms_action_rec *a = calloc(1, sizeof(*a));
    uint8_t id[KMS_ACTION_ID_LEN];
    memset(id, 2, sizeof(id));
    assert_int_equal(f->store->ops->action_get(f->store, id, a), KMS_OK);
    assert_string_equal(a->result, "k v2 (nonce budget)");

    /* By period, through kms_keyring_rotate_automatic. */
    assert_int_equal(kms_keyring_rotate_automatic(f->kr, "k", "rotation period", &v), KMS_OK);
    assert_int_equal(v, 3);
    memset(id, 3, sizeof(id));
    assert_int_equal(f->store->ops->action_get(f->store, id, a), KMS_OK);
    assert_string_equal(a->result, "k v3 (rotation period)");
    /* An approved rotation is recorded by its own action: no call. */
    assert_int_equal(kms_keyring_rotate(f->kr, "k", &v), KMS_OK);
    assert_int_equal(rc.calls, 2);

    /* The recorder fails: no rotation, no device object. */
    rc.fail = 1;
    int creates = f->fake.creates;
    assert_int_equal(kms_keyring_rotate_automatic(f->kr, "k", "rotation period", &v),
                     KMS_EINTERNAL);
    assert_int_equal(f->fake.creates, creates);
    kms_key_rec rec;
    assert_int_equal(f->store->ops->key_get_by_name(f->store, "k", &rec), KMS_OK);
    assert_int_equal(rec.primary_version, 4);
    free(a);
}

static void usage_survives_restart(void **state)
{
    struct fx *f = *state;
    fx_close_keyring(f);
    kms_keyring_config cfg = {.lease = 10};
    fx_open_keyring(f, &cfg);
    assert_int_equal(kms_keyring_create_key(f->kr, "k", "fake", NULL), KMS_OK);
    uint8_t pt[16] = {1}, blob[KMS_BLOB_MAX];
    for (int i = 0; i < 3; i++)
        wrap_ok(f, "k", pt, sizeof(pt), blob, NULL);
    assert_int_equal(stored_usage(f, "k", 1), 10); /* one lease */
    /* A restart abandons the rest of the lease: counts only go forward. */
    fx_close_keyring(f);
    fx_open_keyring(f, &cfg);
    wrap_ok(f, "k", pt, sizeof(pt), blob, NULL);
    assert_int_equal(stored_usage(f, "k", 1), 20);
}

static void unsafe_key_refused(void **state)
{
    struct fx *f = *state;
    assert_int_equal(kms_keyring_create_key(f->kr, "k", "fake", NULL), KMS_OK);
    fx_close_keyring(f);
    fx_open_keyring(f, NULL);
    f->fake.fail_open = 1;
    uint8_t pt[16] = {1}, blob[KMS_BLOB_MAX];
    size_t len = 0;
    assert_int_equal(
        kms_keyring_wrap(f->kr, "k", &ctx, pt, sizeof(pt), blob, sizeof(blob), &len, NULL),
        KMS_EKEYCHECK);
    assert_non_null(strstr(kms_error_detail(), "CKA_EXTRACTABLE"));
}

/* A crash between the key record and its first version leaves a key with
 * no primary: unusable, and completed by creating it again. */
static void interrupted_creation_is_completed(void **state)
{
    struct fx *f = *state;
    kms_key_rec half;
    memset(&half, 0, sizeof(half));
    memset(half.id, 0x42, sizeof(half.id));
    memcpy(half.name, "half", 5);
    memcpy(half.backend, "fake", 5);
    half.min_decrypt_version = 1;
    assert_int_equal(f->store->ops->key_create(f->store, &half), KMS_OK);

    uint8_t pt[16] = {1}, blob[KMS_BLOB_MAX];
    size_t len = 0;
    assert_int_equal(
        kms_keyring_wrap(f->kr, "half", &ctx, pt, sizeof(pt), blob, sizeof(blob), &len, NULL),
        KMS_EPRECOND);
    assert_int_equal(kms_keyring_rotate(f->kr, "half", NULL), KMS_EPRECOND);

    kms_key_rec done;
    assert_int_equal(kms_keyring_create_key(f->kr, "half", "fake", &done), KMS_OK);
    assert_memory_equal(done.id, half.id, sizeof(half.id)); /* the same key, completed */
    assert_int_equal(done.primary_version, 1);
    uint32_t v = 0;
    wrap_ok(f, "half", pt, sizeof(pt), blob, &v);
    assert_int_equal(v, 1);
    assert_int_equal(kms_keyring_create_key(f->kr, "half", "fake", NULL), KMS_EEXISTS);
}

static void orphan_device_object_replaced(void **state)
{
    struct fx *f = *state;
    kms_key_rec k;
    assert_int_equal(kms_keyring_create_key(f->kr, "k", "fake", &k), KMS_OK);
    /* A crash after the device made version 2 but before the store knew. */
    kms_backend_ref ref;
    assert_int_equal(f->backend.ops->create_version(&f->backend, k.id, 2, &ref), KMS_OK);
    int destroys = f->fake.destroys;
    uint32_t nv = 0;
    assert_int_equal(kms_keyring_rotate(f->kr, "k", &nv), KMS_OK);
    assert_int_equal(nv, 2);
    assert_int_equal(f->fake.destroys, destroys + 1);
}

/* Another writer (a second store on the file, as a second kmsd would have)
 * committed version 2 behind this keyring's cache. The rotation goes past
 * it (version 3) and never destroys version 2's device object: its key
 * material is untouched. (The store is read at rotation, so the defensive
 * check in create_on_backend, a recorded version is never an orphan, is
 * not reached here; this pins the outcome.) */
static void recorded_device_object_never_destroyed(void **state)
{
    struct fx *f = *state;
    kms_key_rec k;
    assert_int_equal(kms_keyring_create_key(f->kr, "k", "fake", &k), KMS_OK);
    kms_version_rec v;
    memset(&v, 0, sizeof(v));
    memcpy(v.key_id, k.id, KMS_KEY_ID_LEN);
    v.version = 2;
    v.state = KMS_VERSION_ENABLED;
    v.created_at = k.created_at;
    assert_int_equal(f->backend.ops->create_version(&f->backend, k.id, 2, &v.ref), KMS_OK);
    struct fake_key *obj = fake_find(&f->fake, v.ref.bytes, v.ref.len);
    assert_non_null(obj);
    uint8_t value[32];
    memcpy(value, obj->value, sizeof(value));
    kms_store *other = NULL;
    assert_int_equal(kms_store_sqlite_open(f->db, &other), KMS_OK);
    assert_int_equal(other->ops->version_add(other, &v, 1), KMS_OK);
    other->ops->close(other);

    int destroys = f->fake.destroys;
    uint32_t nv = 0;
    assert_int_equal(kms_keyring_rotate(f->kr, "k", &nv), KMS_OK);
    assert_int_equal(nv, 3);
    assert_int_equal(f->fake.destroys, destroys);
    obj = fake_find(&f->fake, v.ref.bytes, v.ref.len);
    assert_non_null(obj);
    assert_memory_equal(obj->value, value, sizeof(value));
}

/* A store shim over the real store: its version_list, once armed, reads
 * the real store and then blocks until the test lets it go, so that a
 * change and its refresh run between a cache miss's store read and its
 * insert. Every other op is the real store's (the shim shares its impl). */
struct shim {
    kms_store base; /* first: the ops get &base */
    kms_store_ops ops;
    const kms_store_ops *real;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int armed, blocked, go;
};

static int shim_version_list(kms_store *s, const uint8_t key_id[KMS_KEY_ID_LEN],
                             kms_store_version_cb cb, void *cb_ctx)
{
    struct shim *sh = (struct shim *)s;
    int r = sh->real->version_list(s, key_id, cb, cb_ctx);
    pthread_mutex_lock(&sh->mu);
    if (sh->armed) {
        sh->armed = 0;
        sh->blocked = 1;
        pthread_cond_broadcast(&sh->cv);
        while (!sh->go)
            pthread_cond_wait(&sh->cv, &sh->mu);
    }
    pthread_mutex_unlock(&sh->mu);
    return r;
}

struct racing_wrap {
    kms_keyring *kr;
    int r;
};

static void *wrap_k(void *arg)
{
    struct racing_wrap *w = arg;
    uint8_t pt[16] = {1}, blob[KMS_BLOB_MAX];
    size_t len = 0;
    w->r = kms_keyring_wrap(w->kr, "k", &ctx, pt, sizeof(pt), blob, sizeof(blob), &len, NULL);
    return NULL;
}

/* The key's deletion is scheduled (store write, then refresh) while a
 * cache miss holds the store's answer from before: the entry it read must
 * not be cached, and the next wrap sees the deletion. */
static void deletion_during_a_load_is_not_lost(void **state)
{
    struct fx *f = *state;
    kms_key_rec k;
    assert_int_equal(kms_keyring_create_key(f->kr, "k", "fake", &k), KMS_OK);
    struct shim sh;
    memset(&sh, 0, sizeof(sh));
    sh.real = f->store->ops;
    sh.ops = *f->store->ops;
    sh.ops.version_list = shim_version_list;
    sh.base.ops = &sh.ops;
    sh.base.impl = f->store->impl;
    pthread_mutex_init(&sh.mu, NULL);
    pthread_cond_init(&sh.cv, NULL);
    kms_keyring *kr = NULL; /* a fresh cache on the shim */
    assert_int_equal(kms_keyring_open(&sh.base, NULL, &kr), KMS_OK);
    assert_int_equal(kms_keyring_add_backend(kr, &f->backend), KMS_OK);

    sh.armed = 1;
    struct racing_wrap w = {kr, -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, wrap_k, &w), 0);
    pthread_mutex_lock(&sh.mu);
    while (!sh.blocked)
        pthread_cond_wait(&sh.cv, &sh.mu);
    pthread_mutex_unlock(&sh.mu);

    /* The load has read the key with no deletion; now one is scheduled. */
    assert_int_equal(f->store->ops->key_set_deletion(f->store, k.id, 1000), KMS_OK);
    assert_int_equal(kms_keyring_refresh(kr, k.id), KMS_OK);

    pthread_mutex_lock(&sh.mu);
    sh.go = 1;
    pthread_cond_broadcast(&sh.cv);
    pthread_mutex_unlock(&sh.mu);
    assert_int_equal(pthread_join(t, NULL), 0);
    /* The racing wrap began before the change: either answer; every later
     * one must see it. */
    assert_true(w.r == KMS_OK || w.r == KMS_EPRECOND);
    wrap_k(&w);
    assert_int_equal(w.r, KMS_EPRECOND);
    kms_keyring_close(kr);
    pthread_cond_destroy(&sh.cv);
    pthread_mutex_destroy(&sh.mu);
}

/* The shim's version_add, once armed, blocks before it writes, as a
 * writer between its device object and its commit. */
static int shim_version_add(kms_store *s, const kms_version_rec *v, int make_primary)
{
    struct shim *sh = (struct shim *)s;
    pthread_mutex_lock(&sh->mu);
    if (sh->armed) {
        sh->armed = 0;
        sh->blocked = 1;
        pthread_cond_broadcast(&sh->cv);
        while (!sh->go)
            pthread_cond_wait(&sh->cv, &sh->mu);
    }
    pthread_mutex_unlock(&sh->mu);
    return sh->real->version_add(s, v, make_primary);
}

struct racing_rotate {
    kms_keyring *kr;
    int r;
    uint32_t v;
};

static void *rotate_k(void *arg)
{
    struct racing_rotate *w = arg;
    w->r = kms_keyring_rotate(w->kr, "k", &w->v);
    return NULL;
}

/* 1 if blob decrypts to pt through kr. */
static int opens(kms_keyring *kr, const uint8_t *blob, size_t len, const uint8_t *pt, size_t n)
{
    kms_secret *out = NULL;
    if (kms_keyring_unwrap(kr, blob, len, &ctx, &out, NULL, NULL) != KMS_OK)
        return 0;
    int ok = out->len == n && memcmp(out->data, pt, n) == 0;
    kms_secret_free(out);
    return ok;
}

/* Two keyrings on one database and one device, as two kmsd on one file
 * would be (the writer lock refuses that; the keyring must not rely on
 * it). Both have cached key k at version 1.
 *
 * 1. B rotates to 2 and wraps a blob under it. A, whose cache still ends
 *    at 1, rotates: version 2's device object is recorded, so A keeps it
 *    (and fails); B's blob still opens.
 * 2. B rotates to 3 and is held between its device object and its
 *    commit. A rotates to 3 meanwhile: the object has no committed row, so
 *    A replaces it (under the store's write lock), commits 3 and wraps a
 *    blob under it. B's commit then fails, and B's clean-up finds 3
 *    recorded and keeps the device object. A's blob opens, through A and
 *    through a fresh keyring. No blob is lost either way. */
static void two_writers_never_lose_a_blob(void **state)
{
    struct fx *f = *state;
    kms_key_rec k;
    assert_int_equal(kms_keyring_create_key(f->kr, "k", "fake", &k), KMS_OK);
    struct shim sh;
    memset(&sh, 0, sizeof(sh));
    sh.real = f->store->ops;
    sh.ops = *f->store->ops;
    sh.ops.version_add = shim_version_add;
    sh.base.ops = &sh.ops;
    kms_store *other = NULL; /* B's own connection to the file */
    assert_int_equal(kms_store_sqlite_open(f->db, &other), KMS_OK);
    sh.base.impl = other->impl;
    pthread_mutex_init(&sh.mu, NULL);
    pthread_cond_init(&sh.cv, NULL);
    kms_keyring *a = f->kr, *b = NULL;
    assert_int_equal(kms_keyring_open(&sh.base, NULL, &b), KMS_OK);
    assert_int_equal(kms_keyring_add_backend(b, &f->backend), KMS_OK);
    const uint8_t pt[24] = {7, 7, 7};
    uint8_t blob_a[KMS_BLOB_MAX], blob_b[KMS_BLOB_MAX];
    size_t len_a = 0, len_b = 0;
    uint32_t ver = 0;
    assert_int_equal(
        kms_keyring_wrap(a, "k", &ctx, pt, sizeof(pt), blob_a, sizeof(blob_a), &len_a, &ver),
        KMS_OK);
    assert_int_equal(
        kms_keyring_wrap(b, "k", &ctx, pt, sizeof(pt), blob_b, sizeof(blob_b), &len_b, &ver),
        KMS_OK);

    /* 1. a committed version behind A's cache. */
    uint32_t nv = 0;
    assert_int_equal(kms_keyring_rotate(b, "k", &nv), KMS_OK);
    assert_int_equal(nv, 2);
    assert_int_equal(
        kms_keyring_wrap(b, "k", &ctx, pt, sizeof(pt), blob_b, sizeof(blob_b), &len_b, &ver),
        KMS_OK);
    assert_int_equal(ver, 2);
    int destroys = f->fake.destroys;
    assert_int_equal(kms_keyring_rotate(a, "k", &nv), KMS_EEXISTS);
    assert_int_equal(f->fake.destroys, destroys);
    assert_true(opens(b, blob_b, len_b, pt, sizeof(pt)));

    /* 2. a creation in flight in B while A rotates. */
    sh.armed = 1;
    struct racing_rotate w = {b, -1, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, rotate_k, &w), 0);
    pthread_mutex_lock(&sh.mu);
    while (!sh.blocked)
        pthread_cond_wait(&sh.cv, &sh.mu);
    pthread_mutex_unlock(&sh.mu);
    kms_keyring_close(a); /* A starts afresh (as after a restart): its next version is 3 */
    assert_int_equal(kms_keyring_open(f->store, NULL, &f->kr), KMS_OK);
    a = f->kr;
    assert_int_equal(kms_keyring_add_backend(a, &f->backend), KMS_OK);
    assert_int_equal(kms_keyring_rotate(a, "k", &nv), KMS_OK);
    assert_int_equal(nv, 3);
    assert_int_equal(
        kms_keyring_wrap(a, "k", &ctx, pt, sizeof(pt), blob_a, sizeof(blob_a), &len_a, &ver),
        KMS_OK);
    assert_int_equal(ver, 3);
    pthread_mutex_lock(&sh.mu);
    sh.go = 1;
    pthread_cond_broadcast(&sh.cv);
    pthread_mutex_unlock(&sh.mu);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_not_equal(w.r, KMS_OK); /* B's commit of version 3 failed */

    assert_true(opens(a, blob_a, len_a, pt, sizeof(pt)));
    assert_true(opens(b, blob_b, len_b, pt, sizeof(pt)));
    kms_keyring *fresh = NULL;
    assert_int_equal(kms_keyring_open(f->store, NULL, &fresh), KMS_OK);
    assert_int_equal(kms_keyring_add_backend(fresh, &f->backend), KMS_OK);
    assert_true(opens(fresh, blob_a, len_a, pt, sizeof(pt)));
    assert_true(opens(fresh, blob_b, len_b, pt, sizeof(pt)));
    kms_keyring_close(fresh);
    kms_keyring_close(b);
    other->ops->close(other);
    pthread_cond_destroy(&sh.cv);
    pthread_mutex_destroy(&sh.mu);
}

static void bad_arguments(void **state)
{
    struct fx *f = *state;
    assert_int_equal(kms_keyring_create_key(f->kr, "k", "fake", NULL), KMS_OK);
    uint8_t pt[KMS_BLOB_MAX_PLAINTEXT + 1] = {0}, blob[KMS_BLOB_MAX + 1];
    size_t len = 0;
    assert_int_equal(kms_keyring_wrap(f->kr, "k", &ctx, pt, 0, blob, sizeof(blob), &len, NULL),
                     KMS_ETOOBIG);
    assert_int_equal(
        kms_keyring_wrap(f->kr, "k", &ctx, pt, sizeof(pt), blob, sizeof(blob), &len, NULL),
        KMS_ETOOBIG);
    assert_int_equal(kms_keyring_wrap(f->kr, "k", &ctx, pt, 16, blob, 16, &len, NULL), KMS_ETOOBIG);
    assert_int_equal(kms_keyring_wrap(f->kr, "nope", &ctx, pt, 16, blob, sizeof(blob), &len, NULL),
                     KMS_ENOTFOUND);
    kms_context_pair dup[] = {{"a", 1, "1", 1}, {"a", 1, "2", 1}};
    kms_context bad = {dup, 2};
    assert_int_equal(kms_keyring_wrap(f->kr, "k", &bad, pt, 16, blob, sizeof(blob), &len, NULL),
                     KMS_EINVAL);
    assert_int_equal(stored_usage(f, "k", 1), 0); /* no nonce spent on bad input */
    assert_int_equal(kms_keyring_rotate(f->kr, "nope", NULL), KMS_ENOTFOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(round_trip_and_metadata, setup, teardown),
        cmocka_unit_test_setup_teardown(names_and_backends_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(wrong_context_and_tampering, setup, teardown),
        cmocka_unit_test_setup_teardown(blob_from_another_key, setup, teardown),
        cmocka_unit_test_setup_teardown(rotation_and_version_states, setup, teardown),
        cmocka_unit_test_setup_teardown(nonce_budget_rotates_then_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(automatic_rotations_recorded, setup, teardown),
        cmocka_unit_test_setup_teardown(usage_survives_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(unsafe_key_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(interrupted_creation_is_completed, setup, teardown),
        cmocka_unit_test_setup_teardown(recorded_device_object_never_destroyed, setup, teardown),
        cmocka_unit_test_setup_teardown(deletion_during_a_load_is_not_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(two_writers_never_lose_a_blob, setup, teardown),
        cmocka_unit_test_setup_teardown(orphan_device_object_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_arguments, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
