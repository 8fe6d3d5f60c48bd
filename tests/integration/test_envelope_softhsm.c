/* The envelope core end to end on real parts: keyring + SQLite file +
 * PKCS#11 backend on a SoftHSM2 token made in a temp dir. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/rand.h>

#include "kmsd/keyring/blob.h"
#include "kmsd/keyring/keyring.h"
#include "pkcs11/kms_p11.h"
#include "softhsm_fixture.h"

struct fx {
    kms_test_token token;
    char db[512];
    kms_backend *backend;
    kms_store *store;
    kms_keyring *kr;
};

static void fx_open(struct fx *f, const kms_keyring_config *cfg)
{
    kms_p11_config pc = {.module_path = f->token.module,
                         .token_label = f->token.label,
                         .pin_file = f->token.pin_file,
                         .sessions = 4};
    assert_int_equal(kms_p11_open(&pc, &f->backend), KMS_OK);
    assert_int_equal(kms_store_sqlite_open(f->db, &f->store), KMS_OK);
    assert_int_equal(kms_keyring_open(f->store, cfg, &f->kr), KMS_OK);
    assert_int_equal(kms_keyring_add_backend(f->kr, f->backend), KMS_OK);
}

static void fx_close(struct fx *f)
{
    kms_keyring_close(f->kr);
    f->store->ops->close(f->store);
    f->backend->ops->close(f->backend);
    f->kr = NULL;
    f->store = NULL;
    f->backend = NULL;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_int_equal(kms_test_token_create(&f->token, "kms-envelope"), 0);
    snprintf(f->db, sizeof(f->db), "%s/kms.db", f->token.dir);
    fx_open(f, NULL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    if (f->kr)
        fx_close(f);
    kms_test_token_destroy(&f->token);
    free(f);
    return 0;
}

static const kms_context_pair pairs[] = {{"purpose", 7, "backup", 6}, {"host", 4, "db-1", 4}};
static const kms_context ctx = {pairs, 2};

static size_t wrap(struct fx *f, const char *key, const uint8_t *pt, size_t n, uint8_t *blob,
                   uint32_t *version)
{
    size_t len = 0;
    int r = kms_keyring_wrap(f->kr, key, &ctx, pt, n, blob, KMS_BLOB_MAX, &len, version);
    if (r != KMS_OK)
        fail_msg("wrap failed: %s (%s)", kms_error_name(r), kms_error_detail());
    return len;
}

static void round_trip_every_size(void **state)
{
    struct fx *f = *state;
    assert_int_equal(kms_keyring_create_key(f->kr, "backup", "pkcs11", NULL), KMS_OK);
    static uint8_t pt[KMS_BLOB_MAX_PLAINTEXT], blob[KMS_BLOB_MAX];
    assert_int_equal(RAND_bytes(pt, sizeof(pt)), 1);
    for (size_t n = 1; n <= KMS_BLOB_MAX_PLAINTEXT; n++) {
        uint32_t v = 0;
        size_t len = wrap(f, "backup", pt, n, blob, &v);
        assert_int_equal(len, n + KMS_BLOB_OVERHEAD);
        assert_int_equal(v, 1);
        /* The master key really encrypts: the ciphertext is not the plaintext. */
        if (n >= 16)
            assert_memory_not_equal(blob + KMS_BLOB_HEADER_LEN, pt, n);
        kms_secret *out = NULL;
        uint32_t got_v = 0;
        kms_key_rec key;
        assert_int_equal(kms_keyring_unwrap(f->kr, blob, len, &ctx, &out, &key, &got_v), KMS_OK);
        assert_int_equal(out->len, n);
        assert_memory_equal(out->data, pt, n);
        assert_string_equal(key.name, "backup");
        assert_int_equal(got_v, 1);
        kms_secret_free(out);
    }
}

static void negatives_give_clear_errors_and_no_plaintext(void **state)
{
    struct fx *f = *state;
    kms_key_rec a, b;
    assert_int_equal(kms_keyring_create_key(f->kr, "a", "pkcs11", &a), KMS_OK);
    assert_int_equal(kms_keyring_create_key(f->kr, "b", "pkcs11", &b), KMS_OK);
    uint8_t pt[32], blob[KMS_BLOB_MAX];
    assert_int_equal(RAND_bytes(pt, sizeof(pt)), 1);
    size_t len = wrap(f, "a", pt, sizeof(pt), blob, NULL);
    kms_secret *out = NULL;

    /* Wrong context: a changed value, a missing pair, an extra pair. */
    kms_context_pair changed[] = {{"purpose", 7, "backup", 6}, {"host", 4, "db-2", 4}};
    kms_context_pair extra[] = {
        {"purpose", 7, "backup", 6}, {"host", 4, "db-1", 4}, {"x", 1, "", 0}};
    kms_context c1 = {changed, 2}, c2 = {pairs, 1}, c3 = {extra, 3};
    assert_int_equal(kms_keyring_unwrap(f->kr, blob, len, &c1, &out, NULL, NULL), KMS_EAUTH);
    assert_int_equal(kms_keyring_unwrap(f->kr, blob, len, &c2, &out, NULL, NULL), KMS_EAUTH);
    assert_int_equal(kms_keyring_unwrap(f->kr, blob, len, &c3, &out, NULL, NULL), KMS_EAUTH);
    assert_null(out);

    /* A flipped bit in any byte of the blob. */
    for (size_t i = 0; i < len; i++) {
        blob[i] ^= 0x10;
        int r = kms_keyring_unwrap(f->kr, blob, len, &ctx, &out, NULL, NULL);
        if (r != KMS_EAUTH && r != KMS_EBADBLOB && r != KMS_ENOTFOUND)
            fail_msg("byte %zu flipped gave %s", i, kms_error_name(r));
        assert_null(out);
        blob[i] ^= 0x10;
    }
    /* Every truncation. */
    /* A cut inside the fixed fields is malformed; a cut that leaves a
     * shorter but well-formed blob fails authentication. Never plaintext. */
    for (size_t n = 0; n < len; n++) {
        int r = kms_keyring_unwrap(f->kr, blob, n, &ctx, &out, NULL, NULL);
        assert_int_equal(r, n < KMS_BLOB_OVERHEAD + 1 ? KMS_EBADBLOB : KMS_EAUTH);
        assert_null(out);
    }
    /* The same blob relabelled as key b's. */
    uint8_t other[KMS_BLOB_MAX];
    memcpy(other, blob, len);
    memcpy(other + 1, b.id, KMS_KEY_ID_LEN);
    assert_int_equal(kms_keyring_unwrap(f->kr, other, len, &ctx, &out, NULL, NULL), KMS_EAUTH);
    /* Wrong key version: after a rotation, claim version 2 for a v1 blob. */
    memcpy(other, blob, len);
    other[20] = 2;
    assert_int_equal(kms_keyring_unwrap(f->kr, other, len, &ctx, &out, NULL, NULL), KMS_ENOTFOUND);
    assert_int_equal(kms_keyring_rotate(f->kr, "a", NULL), KMS_OK);
    assert_int_equal(kms_keyring_unwrap(f->kr, other, len, &ctx, &out, NULL, NULL), KMS_EAUTH);
    assert_null(out);

    /* And the original still decrypts: nothing above changed any state. */
    assert_int_equal(kms_keyring_unwrap(f->kr, blob, len, &ctx, &out, NULL, NULL), KMS_OK);
    assert_memory_equal(out->data, pt, sizeof(pt));
    kms_secret_free(out);
}

static void rotation_keeps_old_blobs(void **state)
{
    struct fx *f = *state;
    assert_int_equal(kms_keyring_create_key(f->kr, "k", "pkcs11", NULL), KMS_OK);
    uint8_t pt[32] = {42}, b1[KMS_BLOB_MAX], b2[KMS_BLOB_MAX];
    uint32_t v = 0;
    size_t l1 = wrap(f, "k", pt, sizeof(pt), b1, &v);
    assert_int_equal(v, 1);
    uint32_t nv = 0;
    assert_int_equal(kms_keyring_rotate(f->kr, "k", &nv), KMS_OK);
    assert_int_equal(nv, 2);
    size_t l2 = wrap(f, "k", pt, sizeof(pt), b2, &v);
    assert_int_equal(v, 2);
    kms_secret *out = NULL;
    assert_int_equal(kms_keyring_unwrap(f->kr, b1, l1, &ctx, &out, NULL, &v), KMS_OK);
    assert_int_equal(v, 1);
    kms_secret_free(out);
    assert_int_equal(kms_keyring_unwrap(f->kr, b2, l2, &ctx, &out, NULL, &v), KMS_OK);
    assert_int_equal(v, 2);
    kms_secret_free(out);
}

static uint64_t usage(struct fx *f, const char *name, uint32_t version)
{
    kms_key_rec k;
    kms_version_rec v;
    assert_int_equal(f->store->ops->key_get_by_name(f->store, name, &k), KMS_OK);
    assert_int_equal(f->store->ops->version_get(f->store, k.id, version, &v), KMS_OK);
    return v.usage_count;
}

static void usage_counter_persists_across_reopen(void **state)
{
    struct fx *f = *state;
    fx_close(f);
    kms_keyring_config cfg = {.lease = 100};
    fx_open(f, &cfg);
    assert_int_equal(kms_keyring_create_key(f->kr, "k", "pkcs11", NULL), KMS_OK);
    uint8_t pt[32] = {1}, blob[KMS_BLOB_MAX];
    for (int i = 0; i < 250; i++)
        wrap(f, "k", pt, sizeof(pt), blob, NULL);
    size_t len = wrap(f, "k", pt, sizeof(pt), blob, NULL); /* the 251st use */
    assert_int_equal(usage(f, "k", 1), 300);

    /* Everything closed and reopened, as after a restart (or a crash: the
     * count was durable before the IVs were used). */
    fx_close(f);
    fx_open(f, &cfg);
    assert_int_equal(usage(f, "k", 1), 300);
    kms_secret *out = NULL;
    assert_int_equal(kms_keyring_unwrap(f->kr, blob, len, &ctx, &out, NULL, NULL), KMS_OK);
    kms_secret_free(out);
    wrap(f, "k", pt, sizeof(pt), blob, NULL);
    assert_int_equal(usage(f, "k", 1), 400); /* a fresh lease, never reusing the old range */
}

/* A version record that points at a token key which is extractable (or not
 * sensitive) is refused on first use, with the attribute named. */
static void unsafe_token_key_refused(void **state)
{
    struct fx *f = *state;
    static const char *const which[] = {"extractable", "not-sensitive"};
    for (int w = 0; w < 2; w++) {
        char name[32];
        snprintf(name, sizeof(name), "bad-%d", w);
        kms_key_rec k;
        memset(&k, 0, sizeof(k));
        assert_int_equal(RAND_bytes(k.id, sizeof(k.id)), 1);
        memcpy(k.name, name, strlen(name) + 1);
        memcpy(k.backend, "pkcs11", 7);
        k.min_decrypt_version = 1;
        assert_int_equal(f->store->ops->key_create(f->store, &k), KMS_OK);
        kms_version_rec v;
        memset(&v, 0, sizeof(v));
        memcpy(v.key_id, k.id, sizeof(k.id));
        v.version = 1;
        v.state = KMS_VERSION_ENABLED;
        assert_int_equal(
            kms_test_token_make_unsafe_key(&f->token, k.id, 1, which[w], v.ref.bytes, &v.ref.len),
            0);
        assert_int_equal(f->store->ops->version_add(f->store, &v, 1), KMS_OK);

        uint8_t pt[16] = {1}, blob[KMS_BLOB_MAX];
        size_t len = 0;
        int r = kms_keyring_wrap(f->kr, name, &ctx, pt, sizeof(pt), blob, sizeof(blob), &len, NULL);
        assert_int_equal(r, KMS_EKEYCHECK);
        const char *attr = w == 0 ? "CKA_EXTRACTABLE" : "SENSITIVE";
        if (strstr(kms_error_detail(), attr) == NULL)
            fail_msg("detail does not name %s: %s", attr, kms_error_detail());
    }
}

/* The start-up check opens every version of every key, not only those
 * used: a modifiable token key recorded for a version nobody has used yet
 * (a disabled old version) is found before kmsd serves, naming key,
 * version and attribute; the good key's versions pass. */
static void start_up_check_finds_every_unsafe_version(void **state)
{
    struct fx *f = *state;
    size_t checked = 0;
    assert_int_equal(kms_keyring_check_all(f->kr, &checked), KMS_OK);
    assert_int_equal(checked, 0);
    kms_key_rec good;
    assert_int_equal(kms_keyring_create_key(f->kr, "good", "pkcs11", &good), KMS_OK);
    uint32_t v2 = 0;
    assert_int_equal(kms_keyring_rotate(f->kr, "good", &v2), KMS_OK);
    assert_int_equal(kms_keyring_check_all(f->kr, &checked), KMS_OK);
    assert_int_equal(checked, 2);

    kms_key_rec k;
    memset(&k, 0, sizeof(k));
    assert_int_equal(RAND_bytes(k.id, sizeof(k.id)), 1);
    memcpy(k.name, "old", 4);
    memcpy(k.backend, "pkcs11", 7);
    k.min_decrypt_version = 1;
    assert_int_equal(f->store->ops->key_create(f->store, &k), KMS_OK);
    for (uint32_t ver = 1; ver <= 2; ver++) {
        kms_version_rec v;
        memset(&v, 0, sizeof(v));
        memcpy(v.key_id, k.id, sizeof(k.id));
        v.version = ver;
        v.state = ver == 1 ? KMS_VERSION_DISABLED : KMS_VERSION_ENABLED;
        assert_int_equal(kms_test_token_make_key(&f->token, k.id, ver,
                                                 ver == 1 ? "modifiable" : "safe", v.ref.bytes,
                                                 &v.ref.len),
                         0);
        assert_int_equal(f->store->ops->version_add(f->store, &v, ver == 2), KMS_OK);
    }
    /* The primary (version 2) is fine, so wraps would succeed and version 1
     * would only be refused the day a blob under it comes back. */
    assert_int_equal(kms_keyring_check_all(f->kr, &checked), KMS_EKEYCHECK);
    const char *d = kms_error_detail();
    if (strstr(d, "key old version 1") == NULL || strstr(d, "CKA_MODIFIABLE is TRUE") == NULL)
        fail_msg("detail does not name key, version and attribute: %s", d);
}

#define THREADS 4
#define PER_THREAD 25000

struct worker {
    struct fx *f;
    uint8_t (*ivs)[KMS_GCM_IV_LEN];
    int errors;
};

static void *wrap_worker(void *arg)
{
    struct worker *w = arg;
    uint8_t pt[32] = {3}, blob[KMS_BLOB_MAX];
    for (int i = 0; i < PER_THREAD; i++) {
        size_t len = 0;
        if (kms_keyring_wrap(w->f->kr, "busy", &ctx, pt, sizeof(pt), blob, sizeof(blob), &len,
                             NULL) != KMS_OK) {
            w->errors++;
            continue;
        }
        memcpy(w->ivs[i], blob + KMS_BLOB_AAD_HEADER_LEN, KMS_GCM_IV_LEN);
    }
    return NULL;
}

static int iv_cmp(const void *a, const void *b)
{
    return memcmp(a, b, KMS_GCM_IV_LEN);
}

static void concurrent_wraps_through_the_keyring(void **state)
{
    struct fx *f = *state;
    assert_int_equal(kms_keyring_create_key(f->kr, "busy", "pkcs11", NULL), KMS_OK);
    uint8_t(*ivs)[KMS_GCM_IV_LEN] = calloc((size_t)THREADS * PER_THREAD, KMS_GCM_IV_LEN);
    assert_non_null(ivs);
    pthread_t t[THREADS];
    struct worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){f, ivs + (size_t)i * PER_THREAD, 0};
        assert_int_equal(pthread_create(&t[i], NULL, wrap_worker, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].errors, 0);
    }
    size_t n = (size_t)THREADS * PER_THREAD;
    qsort(ivs, n, KMS_GCM_IV_LEN, iv_cmp);
    for (size_t i = 1; i < n; i++)
        assert_memory_not_equal(ivs[i - 1], ivs[i], KMS_GCM_IV_LEN);
    free(ivs);
    assert_true(usage(f, "busy", 1) >= n); /* every use was reserved */
}

/* ---- two writers on one database and token ------------------------------------------------- */

/* A store shim over a second connection to the file: its version_add, once
 * armed, blocks before it writes, as a writer between its token object and
 * its commit. Every other op is the real store's (the shim shares its
 * impl). */
struct shim {
    kms_store base; /* first: the ops get &base */
    kms_store_ops ops;
    const kms_store_ops *real;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int armed, blocked, go;
};

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
};

static void *rotate_backup(void *arg)
{
    struct racing_rotate *w = arg;
    w->r = kms_keyring_rotate(w->kr, "backup", NULL);
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

static size_t wrap_on(kms_keyring *kr, const uint8_t *pt, size_t n, uint8_t *blob, uint32_t *v)
{
    size_t len = 0;
    int r = kms_keyring_wrap(kr, "backup", &ctx, pt, n, blob, KMS_BLOB_MAX, &len, v);
    if (r != KMS_OK)
        fail_msg("wrap failed: %s (%s)", kms_error_name(r), kms_error_detail());
    return len;
}

/* The version-destruction sequence of two kmsd on one database and token
 * (the writer lock refuses that; the keyring must not rely on it), with
 * two keyrings, each on its own connection to the SQLite file, over the
 * real token. Both cached key backup at version 1.
 *
 * 1. B rotates to 2 and wraps under it; A, whose cache ends at 1, rotates:
 *    version 2's token object is recorded, so A keeps it (and fails).
 * 2. B rotates to 3 and is held between its token object and its commit;
 *    a fresh A rotates to 3 meanwhile (no committed row: the object is
 *    replaced, under the store's write lock), commits and wraps under 3.
 *    B's commit then fails and its clean-up, finding 3 recorded, keeps the
 *    token object.
 * Every blob still opens, through either keyring and a fresh one (except
 * blob 3 through B, whose cache, stale across writers by design, does not
 * know version 3: "no such version", not a lost key). */
static void two_writers_never_lose_a_blob(void **state)
{
    struct fx *f = *state;
    assert_int_equal(kms_keyring_create_key(f->kr, "backup", "pkcs11", NULL), KMS_OK);
    struct shim sh;
    memset(&sh, 0, sizeof(sh));
    kms_store *other = NULL;
    assert_int_equal(kms_store_sqlite_open(f->db, &other), KMS_OK);
    sh.real = other->ops;
    sh.ops = *other->ops;
    sh.ops.version_add = shim_version_add;
    sh.base.ops = &sh.ops;
    sh.base.impl = other->impl;
    pthread_mutex_init(&sh.mu, NULL);
    pthread_cond_init(&sh.cv, NULL);
    kms_keyring *b = NULL;
    assert_int_equal(kms_keyring_open(&sh.base, NULL, &b), KMS_OK);
    assert_int_equal(kms_keyring_add_backend(b, f->backend), KMS_OK);
    uint8_t pt[48], blob1[KMS_BLOB_MAX], blob2[KMS_BLOB_MAX], blob3[KMS_BLOB_MAX];
    assert_int_equal(RAND_bytes(pt, sizeof(pt)), 1);
    uint32_t v = 0;
    size_t len1 = wrap_on(f->kr, pt, sizeof(pt), blob1, &v);
    (void)wrap_on(b, pt, sizeof(pt), blob2, &v);

    /* 1. */
    assert_int_equal(kms_keyring_rotate(b, "backup", &v), KMS_OK);
    assert_int_equal(v, 2);
    size_t len2 = wrap_on(b, pt, sizeof(pt), blob2, &v);
    assert_int_equal(v, 2);
    assert_int_equal(kms_keyring_rotate(f->kr, "backup", &v), KMS_EEXISTS);
    assert_true(opens(b, blob2, len2, pt, sizeof(pt)));

    /* 2. */
    sh.armed = 1;
    struct racing_rotate w = {b, -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, rotate_backup, &w), 0);
    pthread_mutex_lock(&sh.mu);
    while (!sh.blocked)
        pthread_cond_wait(&sh.cv, &sh.mu);
    pthread_mutex_unlock(&sh.mu);
    kms_keyring_close(f->kr); /* A afresh, as after a restart: its next version is 3 */
    assert_int_equal(kms_keyring_open(f->store, NULL, &f->kr), KMS_OK);
    assert_int_equal(kms_keyring_add_backend(f->kr, f->backend), KMS_OK);
    assert_int_equal(kms_keyring_rotate(f->kr, "backup", &v), KMS_OK);
    assert_int_equal(v, 3);
    size_t len3 = wrap_on(f->kr, pt, sizeof(pt), blob3, &v);
    assert_int_equal(v, 3);
    pthread_mutex_lock(&sh.mu);
    sh.go = 1;
    pthread_cond_broadcast(&sh.cv);
    pthread_mutex_unlock(&sh.mu);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_not_equal(w.r, KMS_OK); /* B's commit of version 3 failed */

    kms_keyring *fresh = NULL;
    assert_int_equal(kms_keyring_open(f->store, NULL, &fresh), KMS_OK);
    assert_int_equal(kms_keyring_add_backend(fresh, f->backend), KMS_OK);
    kms_keyring *all[] = {f->kr, b, fresh};
    for (int i = 0; i < 3; i++) {
        if (!opens(all[i], blob1, len1, pt, sizeof(pt)) ||
            !opens(all[i], blob2, len2, pt, sizeof(pt)))
            fail_msg("keyring %d: %s", i, kms_error_detail());
        if (i != 1 && !opens(all[i], blob3, len3, pt, sizeof(pt)))
            fail_msg("keyring %d: blob 3: %s", i, kms_error_detail());
    }
    kms_keyring_close(fresh);
    kms_keyring_close(b);
    other->ops->close(other);
    pthread_cond_destroy(&sh.cv);
    pthread_mutex_destroy(&sh.mu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(round_trip_every_size, setup, teardown),
        cmocka_unit_test_setup_teardown(negatives_give_clear_errors_and_no_plaintext, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(rotation_keeps_old_blobs, setup, teardown),
        cmocka_unit_test_setup_teardown(usage_counter_persists_across_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(unsafe_token_key_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(start_up_check_finds_every_unsafe_version, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_wraps_through_the_keyring, setup, teardown),
        cmocka_unit_test_setup_teardown(two_writers_never_lose_a_blob, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
