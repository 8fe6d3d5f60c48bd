/* The backend contract suite: one list of cases, run against every
 * master-key backend.
 *
 * A backend implements include/kms/backend.h. It ships only if it passes
 * this suite: add a row to TARGETS (how to open it on a real device, how to
 * take that device away and give it back, and the few documented ways in
 * which backends may differ, as flags) and a ctest entry for it in
 * tests/CMakeLists.txt. No case knows which backend it runs on; the target
 * table is the only place that does. Cases that a backend cannot be made to
 * face (a device whose loss cannot be simulated) skip, visibly.
 *
 * Targets: PKCS#11 on a real SoftHSM2 token and on NSS softoken, TPM2 sealed and TPM2 resident
 * on a real swtpm, and an in-process fake backend (backend_fake.h) that
 * shows the suite passes a backend that keeps the contract.
 *
 * Cases: round trips of every size up to the limit, with and without AAD;
 * fresh IVs; random; every tampering (AAD, ciphertext, tag, IV, length,
 * another version's key) fails with KMS_EAUTH and wipes the output;
 * malformed and unknown references; creating an existing version;
 * destroy; a device that is reset between two calls (invisible to the
 * caller) and one that is gone for a while (KMS_EUNAVAIL, then healed);
 * concurrent callers; health.
 *
 * Where backends differ, on purpose:
 *  - ON_DEVICE: versions live on the device (PKCS#11): creating an existing
 *    (key_id, version) is KMS_EEXISTS naming the existing object.
 *    Otherwise (TPM2) the reference carries the version and the store is
 *    the authority: creating again makes an independent version.
 *  - KMS_BACKEND_CAP_SHRED, as the backend's mode declares it: destroy
 *    removes the version (opening a saved ref or destroying it again is
 *    KMS_ENOTFOUND). Every backend here declares it (TPM2: each version's
 *    NV index is undefined); without it destroy would have nothing to
 *    remove on the device (0, also the second time).
 *  - EMPTY_OK: an empty plaintext wraps (the tag still binds the AAD);
 *    otherwise wrap refuses it with KMS_EINVAL.
 *  - max_len / LIMIT: the largest plaintext the suite round-trips; with
 *    LIMIT, one byte more is KMS_ETOOBIG.
 *
 * Usage: test_backend_contract [target]; without a target, all of them. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "backend_fake.h"
#include "group_run.h"
#include "nss_fixture.h"
#include "p11_faults.h"
#include "pkcs11/kms_p11.h"
#include "softhsm_fixture.h"
#include "swtpm_fixture.h"
#include "tpm2/kms_tpm2.h"

/* ---- targets ------------------------------------------------------------------------------ */

#define ON_DEVICE 1u /* versions live on the device (see above) */
#define EMPTY_OK 2u  /* empty plaintexts wrap */
#define LIMIT 4u     /* max_len + 1 is KMS_ETOOBIG */

/* A target while it is open: the backend under test and its device. */
typedef struct env {
    kms_backend *b;
    kms_test_token token; /* PKCS#11 */
    kms_test_nss nss;     /* PKCS#11 on NSS softoken */
    int faults;           /* PKCS#11: fault injection installed */
    kms_test_swtpm tpm;   /* TPM2 */
} env;

typedef struct target {
    const char *name;
    unsigned flags;
    size_t max_len;
    void (*open)(env *e);
    void (*close)(env *e);
    /* The device goes away: 0, or -1 if this target cannot simulate it
     * (the case then skips). */
    int (*lose)(env *e);
    void (*restore)(env *e);
    /* The device is lost and back between two calls, variant `how`
     * (0, 1, ...): 0 done, 1 no such variant. */
    int (*disrupt)(env *e, int how);
    /* Closes the backend and opens it again on the same device (the
     * device's objects stay); NULL if the target cannot. */
    void (*reopen)(env *e);
} target;

static void p11_open(env *e)
{
    assert_int_equal(kms_test_token_create(&e->token, "kms-contract"), 0);
    kms_p11_config c = kms_test_token_p11_config(&e->token);
    assert_int_equal(kms_p11_open(&c, &e->b), KMS_OK);
    /* Pass-through until a fault is set. */
    e->faults = kms_p11_faults_install(&e->token) == 0;
}

static void p11_close(env *e)
{
    kms_p11_faults_remove();
    e->b->ops->close(e->b);
    kms_test_token_destroy(&e->token);
}

/* The token is unplugged: every session closed (as a token reset does) and
 * none can be opened until it is back. */
static void p11_reopen(env *e)
{
    kms_p11_faults_remove();
    e->b->ops->close(e->b);
    kms_p11_config c = kms_test_token_p11_config(&e->token);
    assert_int_equal(kms_p11_open(&c, &e->b), KMS_OK);
    e->faults = kms_p11_faults_install(&e->token) == 0;
}

static int p11_lose(env *e)
{
    if (!e->faults)
        return -1;
    atomic_store(&kms_p11_faults.open_rv, CKR_TOKEN_NOT_PRESENT);
    assert_int_equal(kms_test_token_close_all_sessions(&e->token), 0);
    return 0;
}

static void p11_restore(env *e)
{
    (void)e;
    atomic_store(&kms_p11_faults.open_rv, CKR_OK);
}

static int p11_disrupt(env *e, int how)
{
    if (how != 0)
        return 1;
    assert_int_equal(kms_test_token_close_all_sessions(&e->token), 0);
    return 0;
}

/* The same backend on NSS softoken, a second PKCS#11 implementation
 * (nss_fixture.h): what SoftHSM2 forgives and another module does not
 * shows here. Losing and disrupting the token use the same function-list
 * swaps as SoftHSM2 (the module's list is then the one the backend
 * initialized with its init_args). */
static void nss_open(env *e)
{
    assert_int_equal(kms_test_nss_create(&e->nss), 0);
    kms_p11_config c = kms_test_nss_p11_config(&e->nss);
    assert_int_equal(kms_p11_open(&c, &e->b), KMS_OK);
    e->token = e->nss.token;
    e->faults = kms_p11_faults_install(&e->token) == 0;
}

static void nss_close(env *e)
{
    kms_p11_faults_remove();
    e->b->ops->close(e->b);
    kms_test_nss_destroy(&e->nss);
}

static void nss_reopen(env *e)
{
    kms_p11_faults_remove();
    e->b->ops->close(e->b);
    kms_p11_config c = kms_test_nss_p11_config(&e->nss);
    assert_int_equal(kms_p11_open(&c, &e->b), KMS_OK);
    e->faults = kms_p11_faults_install(&e->token) == 0;
}

/* Both TPM2 modes share one device: open it, keep the mode under test. */
static void tpm2_open_mode(env *e, int resident)
{
    setenv("TSS2_LOG", "all+none", 1);
    kms_test_swtpm_start(&e->tpm);
    kms_tpm2_config c = {.tcti = e->tpm.tcti, .lock_dir = e->tpm.dir};
    assert_int_equal(kms_tpm2_provision(&c), 0);
    kms_backend *s = NULL, *r = NULL;
    assert_int_equal(kms_tpm2_open(&c, &s, resident ? &r : NULL), 0);
    if (resident) {
        s->ops->close(s); /* the device stays with the resident backend */
        e->b = r;
    } else {
        e->b = s;
    }
}

static void tpm2_reopen(env *e)
{
    int resident = kms_backend_mode_of(e->b).caps & KMS_BACKEND_CAP_KEY_NEVER_LEAVES;
    e->b->ops->close(e->b);
    kms_tpm2_config c = {.tcti = e->tpm.tcti, .lock_dir = e->tpm.dir};
    kms_backend *s = NULL, *r = NULL;
    assert_int_equal(kms_tpm2_open(&c, &s, resident ? &r : NULL), 0);
    if (resident) {
        s->ops->close(s);
        e->b = r;
    } else {
        e->b = s;
    }
}

static void tpm2_sealed_open(env *e)
{
    tpm2_open_mode(e, 0);
}

static void tpm2_resident_open(env *e)
{
    tpm2_open_mode(e, 1);
}

static void tpm2_close(env *e)
{
    e->b->ops->close(e->b);
    kms_test_swtpm_destroy(&e->tpm);
}

static int tpm2_lose(env *e)
{
    kms_test_swtpm_stop(&e->tpm);
    return 0;
}

static void tpm2_restore(env *e)
{
    kms_test_swtpm_resume(&e->tpm);
}

/* 0: a TPM reset; 1: stopped and restarted on the same state (it needs a
 * Startup again). */
static int tpm2_disrupt(env *e, int how)
{
    switch (how) {
    case 0:
        kms_test_swtpm_reset(&e->tpm);
        return 0;
    case 1:
        kms_test_swtpm_stop(&e->tpm);
        kms_test_swtpm_resume(&e->tpm);
        return 0;
    default:
        return 1;
    }
}

static void fake_open(env *e)
{
    assert_int_equal(kms_fake_backend_open(&e->b), KMS_OK);
}

static void fake_close(env *e)
{
    e->b->ops->close(e->b);
}

static int fake_lose(env *e)
{
    kms_fake_backend_set_down(e->b, 1);
    return 0;
}

static void fake_restore(env *e)
{
    kms_fake_backend_set_down(e->b, 0);
}

static int fake_disrupt(env *e, int how)
{
    if (how != 0)
        return 1;
    kms_fake_backend_set_down(e->b, 1);
    kms_fake_backend_set_down(e->b, 0);
    return 0;
}

/* The only place that knows how each backend is opened. TPM2 has no
 * plaintext limit of its own below 2^31: the suite goes to 64 KiB. */
static const target TARGETS[] = {
    {"pkcs11", ON_DEVICE | LIMIT, 4096, p11_open, p11_close, p11_lose, p11_restore, p11_disrupt,
     p11_reopen},
    {"pkcs11-nss", ON_DEVICE | LIMIT, 4096, nss_open, nss_close, p11_lose, p11_restore, p11_disrupt,
     nss_reopen},
    {"tpm2-sealed", EMPTY_OK, 65536, tpm2_sealed_open, tpm2_close, tpm2_lose, tpm2_restore,
     tpm2_disrupt, tpm2_reopen},
    {"tpm2-resident", EMPTY_OK, 65536, tpm2_resident_open, tpm2_close, tpm2_lose, tpm2_restore,
     tpm2_disrupt, tpm2_reopen},
    {"fake", ON_DEVICE | EMPTY_OK | LIMIT, KMS_FAKE_DATA_MAX, fake_open, fake_close, fake_lose,
     fake_restore, fake_disrupt, NULL},
};

static const target *T; /* the target under test */
static env E;

static int group_setup(void **state)
{
    (void)state;
    memset(&E, 0, sizeof(E));
    T->open(&E);
    assert_non_null(E.b);
    /* Every op is there: the core calls them without checking. */
    const kms_backend_ops *o = E.b->ops;
    assert_non_null(o);
    assert_true(o->name != NULL && o->name[0] != '\0');
    assert_true(o->create_version && o->open_version && o->release_version && o->wrap &&
                o->unwrap && o->destroy_version && o->random && o->health && o->close);
    /* The state-integrity ops are there exactly when the mode says so. */
    int state_mac = kms_backend_has_caps(E.b, KMS_BACKEND_CAP_STATE_MAC);
    assert_int_equal(o->state_key_create != NULL, state_mac);
    assert_int_equal(o->state_mac != NULL, state_mac);
    /* So are the audit-signing ops. */
    int audit_sign = kms_backend_has_caps(E.b, KMS_BACKEND_CAP_AUDIT_SIGN);
    assert_int_equal(o->audit_key_create != NULL, audit_sign);
    assert_int_equal(o->audit_key_public != NULL, audit_sign);
    assert_int_equal(o->audit_sign != NULL, audit_sign);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    T->close(&E);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return 0;
    return 1;
}

/* A new version (key_id fresh and random) on the target, opened. */
static kms_backend_key *new_version(uint8_t id[KMS_KEY_ID_LEN], uint32_t v, kms_backend_ref *ref)
{
    kms_backend *b = E.b;
    assert_int_equal(RAND_bytes(id, KMS_KEY_ID_LEN), 1);
    memset(ref, 0, sizeof(*ref));
    assert_int_equal(b->ops->create_version(b, id, v, ref), KMS_OK);
    assert_true(ref->len > 0 && ref->len <= KMS_BACKEND_REF_MAX);
    kms_backend_key *k = NULL;
    assert_int_equal(b->ops->open_version(b, ref, &k), KMS_OK);
    assert_non_null(k);
    return k;
}

static void release(kms_backend_key *k)
{
    E.b->ops->release_version(E.b, k);
}

/* Wraps n random bytes under wk and unwraps them under uk (AAD optional).
 * 0 if the plaintext comes back; the wrap's or unwrap's error; or
 * KMS_EINTERNAL if the ciphertext is the plaintext, an unwrap "succeeded"
 * with other bytes, or a failed one left plaintext in its output.
 * Thread-safe. */
static int round_trip(kms_backend *b, kms_backend_key *wk, kms_backend_key *uk, size_t n,
                      const uint8_t *aad, size_t aad_len, uint8_t iv_out[KMS_GCM_IV_LEN])
{
    uint8_t *pt = malloc(n), *ct = malloc(n), *back = malloc(n);
    int r = pt != NULL && ct != NULL && back != NULL && RAND_bytes(pt, (int)n) == 1 ? KMS_OK
                                                                                    : KMS_ENOMEM;
    kms_aead_io w = {.aad = aad, .aad_len = aad_len, .in = pt, .in_len = n, .out = ct};
    if (r == KMS_OK)
        r = b->ops->wrap(b, wk, &w);
    if (r == KMS_OK && n >= 16 && memcmp(ct, pt, n) == 0)
        r = KMS_EINTERNAL; /* not encrypted (1 byte would match 1 time in 256) */
    if (r == KMS_OK && iv_out != NULL)
        memcpy(iv_out, w.iv, KMS_GCM_IV_LEN);
    if (r == KMS_OK) {
        kms_aead_io u = {.aad = aad, .aad_len = aad_len, .in = ct, .in_len = n, .out = back};
        memcpy(u.iv, w.iv, KMS_GCM_IV_LEN);
        memcpy(u.tag, w.tag, KMS_GCM_TAG_LEN);
        memset(back, 0xEE, n);
        r = b->ops->unwrap(b, uk, &u);
        if (r == KMS_OK && memcmp(back, pt, n) != 0)
            r = KMS_EINTERNAL;
        if (r != KMS_OK && n >= 16 && memcmp(back, pt, n) == 0)
            r = KMS_EINTERNAL;
    }
    free(pt);
    free(ct);
    free(back);
    return r;
}

static int rt(kms_backend_key *k, size_t n)
{
    static const uint8_t aad[] = "contract aad";
    return round_trip(E.b, k, k, n, aad, sizeof(aad), NULL);
}

/* Waits (up to 15 s) until the target is healthy and k round-trips again. */
static void heals(kms_backend_key *k)
{
    uint64_t t0 = now_ms();
    int r = KMS_EUNAVAIL;
    while (r != KMS_OK && now_ms() - t0 < 15000) {
        r = E.b->ops->health(E.b);
        if (r == KMS_OK)
            r = rt(k, 32);
        if (r != KMS_OK)
            usleep(20 * 1000);
    }
    if (r != KMS_OK)
        fail_msg("%s: not healed after 15 s: %s (%s)", T->name, kms_error_name(r),
                 kms_error_detail());
    print_message("%s: healed %llu ms after the device came back\n", T->name,
                  (unsigned long long)(now_ms() - t0));
}

/* ---- round trips ------------------------------------------------------------------------ */

static void round_trips_every_size(void **state)
{
    (void)state;
    kms_backend *b = E.b;
    uint8_t id[16];
    kms_backend_ref ref;
    kms_backend_key *k = new_version(id, 1, &ref);
    size_t sweep = T->max_len < 4096 ? T->max_len : 4096;
    static const uint8_t aad[] = "header and context";
    /* Every size up to 4 KiB with AAD; sizes around the block size and
     * the largest without. */
    for (size_t n = 1; n <= sweep; n++) {
        int r = round_trip(b, k, k, n, aad, sizeof(aad), NULL);
        if (r != KMS_OK)
            fail_msg("%zu bytes with AAD: %s (%s)", n, kms_error_name(r), kms_error_detail());
    }
    static const size_t plain[] = {1, 15, 16, 17, 32, 1000};
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
        assert_int_equal(round_trip(b, k, k, plain[i], NULL, 0, NULL), KMS_OK);
    assert_int_equal(round_trip(b, k, k, T->max_len, NULL, 0, NULL), KMS_OK);
    assert_int_equal(round_trip(b, k, k, T->max_len, aad, sizeof(aad), NULL), KMS_OK);

    /* The ciphertext is not the plaintext. */
    uint8_t pt[64], ct[64];
    assert_int_equal(RAND_bytes(pt, sizeof(pt)), 1);
    kms_aead_io w = {.in = pt, .in_len = sizeof(pt), .out = ct};
    assert_int_equal(b->ops->wrap(b, k, &w), KMS_OK);
    assert_memory_not_equal(ct, pt, sizeof(pt));
    release(k);
}

/* An empty plaintext: it wraps and the tag still binds the AAD, or wrap
 * refuses it; never anything else. */
static void empty_plaintext(void **state)
{
    (void)state;
    kms_backend *b = E.b;
    uint8_t id[16], none[1] = {0}, out[1] = {0};
    kms_backend_ref ref;
    kms_backend_key *k = new_version(id, 1, &ref);
    uint8_t aad[3] = {1, 2, 3};
    kms_aead_io e = {.aad = aad, .aad_len = sizeof(aad), .in = none, .in_len = 0, .out = out};
    if (T->flags & EMPTY_OK) {
        assert_int_equal(b->ops->wrap(b, k, &e), KMS_OK);
        assert_int_equal(b->ops->unwrap(b, k, &e), KMS_OK);
        aad[0] ^= 1;
        assert_int_equal(b->ops->unwrap(b, k, &e), KMS_EAUTH);
        kms_aead_io bare = {.in = none, .in_len = 0, .out = out};
        assert_int_equal(b->ops->wrap(b, k, &bare), KMS_OK);
        assert_int_equal(b->ops->unwrap(b, k, &bare), KMS_OK);
        bare.tag[0] ^= 1;
        assert_int_equal(b->ops->unwrap(b, k, &bare), KMS_EAUTH);
    } else {
        assert_int_equal(b->ops->wrap(b, k, &e), KMS_EINVAL);
        assert_int_not_equal(b->ops->unwrap(b, k, &e), KMS_OK);
    }
    release(k);
}

static void size_limit(void **state)
{
    (void)state;
    if (!(T->flags & LIMIT))
        skip();
    kms_backend *b = E.b;
    uint8_t id[16];
    kms_backend_ref ref;
    kms_backend_key *k = new_version(id, 1, &ref);
    size_t n = T->max_len + 1;
    uint8_t *pt = calloc(1, n), *out = malloc(n);
    assert_non_null(pt);
    assert_non_null(out);
    kms_aead_io big = {.in = pt, .in_len = n, .out = out};
    assert_int_equal(b->ops->wrap(b, k, &big), KMS_ETOOBIG);
    memset(out, 0xEE, n);
    assert_int_equal(b->ops->unwrap(b, k, &big), KMS_ETOOBIG);
    free(pt);
    free(out);
    release(k);
}

static void ivs_are_fresh(void **state)
{
    (void)state;
    kms_backend *b = E.b;
    uint8_t id[16];
    kms_backend_ref ref;
    kms_backend_key *k = new_version(id, 1, &ref);
    uint8_t pt[32] = {7}, ct1[32], ct2[32];
    kms_aead_io w1 = {.in = pt, .in_len = 32, .out = ct1};
    kms_aead_io w2 = {.in = pt, .in_len = 32, .out = ct2};
    assert_int_equal(b->ops->wrap(b, k, &w1), KMS_OK);
    assert_int_equal(b->ops->wrap(b, k, &w2), KMS_OK);
    assert_memory_not_equal(w1.iv, w2.iv, KMS_GCM_IV_LEN);
    assert_memory_not_equal(ct1, ct2, 32);
    assert_memory_not_equal(w1.tag, w2.tag, KMS_GCM_TAG_LEN);
    release(k);
}

static void random_bytes(void **state)
{
    (void)state;
    kms_backend *b = E.b;
    static const size_t sizes[] = {1, 31, 32, 33, 256, 4096};
    static uint8_t buf[4096 + 1];
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];
        memset(buf, 0, sizeof(buf));
        buf[n] = 0xA5; /* exactly n bytes are written */
        assert_int_equal(b->ops->random(b, buf, n), KMS_OK);
        assert_int_equal(buf[n], 0xA5);
        if (n >= 16)
            assert_false(all_zero(buf, n));
    }
    uint8_t r1[32], r2[32];
    assert_int_equal(b->ops->random(b, r1, sizeof(r1)), KMS_OK);
    assert_int_equal(b->ops->random(b, r2, sizeof(r2)), KMS_OK);
    assert_memory_not_equal(r1, r2, sizeof(r1));
}

/* With KMS_BACKEND_CAP_STATE_MAC: the key is made once (then EEXISTS),
 * and its MAC is deterministic, input-bound and KMS_STATE_MAC_LEN long.
 * Without: nothing to check (group_setup saw both ops NULL). */
static void state_mac_when_capable(void **state)
{
    (void)state;
    kms_backend *b = E.b;
    if (!kms_backend_has_caps(b, KMS_BACKEND_CAP_STATE_MAC))
        return;
    int r = b->ops->state_key_create(b);
    assert_true(r == KMS_OK || r == KMS_EEXISTS);
    assert_int_equal(b->ops->state_key_create(b), KMS_EEXISTS);
    static const uint8_t m1[] = "state one", m2[] = "state two";
    uint8_t a[KMS_STATE_MAC_LEN + 1], c[KMS_STATE_MAC_LEN + 1], d[KMS_STATE_MAC_LEN];
    a[KMS_STATE_MAC_LEN] = c[KMS_STATE_MAC_LEN] = 0xA5;
    assert_int_equal(b->ops->state_mac(b, m1, sizeof(m1), a), KMS_OK);
    assert_int_equal(b->ops->state_mac(b, m1, sizeof(m1), c), KMS_OK);
    assert_int_equal(a[KMS_STATE_MAC_LEN], 0xA5); /* exactly KMS_STATE_MAC_LEN written */
    assert_memory_equal(a, c, KMS_STATE_MAC_LEN);
    assert_int_equal(b->ops->state_mac(b, m2, sizeof(m2), d), KMS_OK);
    assert_memory_not_equal(a, d, KMS_STATE_MAC_LEN);
}

/* With KMS_BACKEND_CAP_STATE_MAC: an input longer than one device buffer
 * (a TPM takes 1024 bytes per command) and an empty one are MACed too,
 * each bound to every byte; out of range is refused; and the key survives
 * closing and opening the backend again (same input, same MAC). */
static void state_mac_long_and_reopened(void **state)
{
    (void)state;
    if (!kms_backend_has_caps(E.b, KMS_BACKEND_CAP_STATE_MAC))
        return;
    int r = E.b->ops->state_key_create(E.b);
    assert_true(r == KMS_OK || r == KMS_EEXISTS);
    size_t n = 3 * 1024 + 17;
    uint8_t *big = malloc(n);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = (uint8_t)(i * 7);
    uint8_t a[KMS_STATE_MAC_LEN], c[KMS_STATE_MAC_LEN], e0[KMS_STATE_MAC_LEN],
        e1[KMS_STATE_MAC_LEN];
    assert_int_equal(E.b->ops->state_mac(E.b, big, n, a), KMS_OK);
    big[n - 1] ^= 1; /* the last byte, in the last chunk */
    assert_int_equal(E.b->ops->state_mac(E.b, big, n, c), KMS_OK);
    assert_memory_not_equal(a, c, KMS_STATE_MAC_LEN);
    big[n - 1] ^= 1;
    assert_int_equal(E.b->ops->state_mac(E.b, NULL, 0, e0), KMS_OK);
    assert_int_equal(E.b->ops->state_mac(E.b, NULL, 1, e1), KMS_EINVAL);
    uint8_t *huge = calloc(KMS_STATE_MAC_INPUT_MAX + 1, 1);
    assert_non_null(huge);
    assert_int_equal(E.b->ops->state_mac(E.b, huge, KMS_STATE_MAC_INPUT_MAX + 1, e1), KMS_ETOOBIG);
    free(huge);
    if (T->reopen == NULL) {
        free(big);
        return;
    }
    T->reopen(&E);
    assert_int_equal(E.b->ops->state_key_create(E.b), KMS_EEXISTS);
    assert_int_equal(E.b->ops->state_mac(E.b, big, n, c), KMS_OK);
    assert_memory_equal(a, c, KMS_STATE_MAC_LEN);
    assert_int_equal(E.b->ops->state_mac(E.b, NULL, 0, e1), KMS_OK);
    assert_memory_equal(e0, e1, KMS_STATE_MAC_LEN);
    free(big);
}

/* OpenSSL's own verdict on a raw r ‖ s signature of digest under the
 * uncompressed P-256 point pub: 1 valid, 0 not. */
static int openssl_verifies(const uint8_t *pub, const uint8_t *digest, const uint8_t *raw)
{
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *kctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"prime256v1", 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)pub, KMS_AUDIT_PUB_LEN),
        OSSL_PARAM_construct_end()};
    assert_true(kctx != NULL && EVP_PKEY_fromdata_init(kctx) == 1 &&
                EVP_PKEY_fromdata(kctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) == 1);
    ECDSA_SIG *sig = ECDSA_SIG_new();
    assert_int_equal(ECDSA_SIG_set0(sig, BN_bin2bn(raw, 32, NULL), BN_bin2bn(raw + 32, 32, NULL)),
                     1);
    uint8_t *der = NULL;
    int der_len = i2d_ECDSA_SIG(sig, &der);
    assert_true(der_len > 0);
    EVP_PKEY_CTX *vctx = EVP_PKEY_CTX_new(pkey, NULL);
    assert_true(vctx != NULL && EVP_PKEY_verify_init(vctx) == 1);
    int ok = EVP_PKEY_verify(vctx, der, (size_t)der_len, digest, 32) == 1;
    EVP_PKEY_CTX_free(vctx);
    OPENSSL_free(der);
    ECDSA_SIG_free(sig);
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(kctx);
    return ok;
}

/* With KMS_BACKEND_CAP_AUDIT_SIGN: the key pair is made once (then
 * EEXISTS), its public point is a stable uncompressed P-256 point, and a
 * signature is exactly KMS_AUDIT_SIG_LEN bytes that OpenSSL verifies under
 * it for that digest and no other. Without: nothing to check (group_setup
 * saw the three ops NULL). */
static void audit_sign_when_capable(void **state)
{
    (void)state;
    kms_backend *b = E.b;
    if (!kms_backend_has_caps(b, KMS_BACKEND_CAP_AUDIT_SIGN))
        return;
    int r = b->ops->audit_key_create(b);
    assert_true(r == KMS_OK || r == KMS_EEXISTS);
    assert_int_equal(b->ops->audit_key_create(b), KMS_EEXISTS);
    uint8_t pub[KMS_AUDIT_PUB_LEN], again[KMS_AUDIT_PUB_LEN];
    assert_int_equal(b->ops->audit_key_public(b, pub), KMS_OK);
    assert_int_equal(b->ops->audit_key_public(b, again), KMS_OK);
    assert_int_equal(pub[0], 0x04);
    assert_memory_equal(pub, again, KMS_AUDIT_PUB_LEN);

    uint8_t d1[KMS_AUDIT_DIGEST_LEN], d2[KMS_AUDIT_DIGEST_LEN];
    SHA256((const uint8_t *)"checkpoint one", 14, d1);
    SHA256((const uint8_t *)"checkpoint two", 14, d2);
    uint8_t s1[KMS_AUDIT_SIG_LEN + 1], s2[KMS_AUDIT_SIG_LEN];
    s1[KMS_AUDIT_SIG_LEN] = 0xA5;
    assert_int_equal(b->ops->audit_sign(b, d1, s1), KMS_OK);
    assert_int_equal(s1[KMS_AUDIT_SIG_LEN], 0xA5); /* exactly KMS_AUDIT_SIG_LEN written */
    assert_int_equal(b->ops->audit_sign(b, d1, s2), KMS_OK);
    assert_true(openssl_verifies(pub, d1, s1));
    assert_true(openssl_verifies(pub, d1, s2));
    assert_memory_not_equal(s1, s2, KMS_AUDIT_SIG_LEN); /* ECDSA: a fresh nonce each time */
    assert_false(openssl_verifies(pub, d2, s1));
}

static void health_while_up(void **state)
{
    (void)state;
    assert_int_equal(E.b->ops->health(E.b), KMS_OK);
    assert_int_equal(E.b->ops->health(E.b), KMS_OK);
}

/* ---- negatives -------------------------------------------------------------------------- */

/* Every way of tampering with a wrapped message, at 64 bytes and at 1:
 * KMS_EAUTH and the output wiped (never partial plaintext). */
static void tampering_fails_and_wipes(void **state)
{
    (void)state;
    kms_backend *b = E.b;
    uint8_t id[16], id2[16];
    kms_backend_ref r1, r2, r3;
    kms_backend_key *k1 = new_version(id, 1, &r1);
    kms_backend_key *k2 = NULL, *k3 = new_version(id2, 1, &r3);
    assert_int_equal(b->ops->create_version(b, id, 2, &r2), KMS_OK);
    assert_int_equal(b->ops->open_version(b, &r2, &k2), KMS_OK);
    static const char *const what[] = {"wrong AAD",
                                       "flipped ciphertext bit",
                                       "flipped tag bit",
                                       "flipped IV bit",
                                       "truncated ct",
                                       "shorter AAD",
                                       "no AAD",
                                       "longer AAD",
                                       "other version",
                                       "other key",
                                       "ciphertext one byte longer"};
    static const size_t lens[] = {64, 1};
    for (size_t s = 0; s < 2; s++) {
        size_t n = lens[s];
        uint8_t pt[65], ct[65], back[65], aad[8] = "aad-1234";
        assert_int_equal(RAND_bytes(pt, sizeof(pt)), 1);
        kms_aead_io w = {.aad = aad, .aad_len = sizeof(aad), .in = pt, .in_len = n, .out = ct};
        assert_int_equal(b->ops->wrap(b, k1, &w), KMS_OK);
        ct[n] = 0x42;
        for (int i = 0; i < (int)(sizeof(what) / sizeof(what[0])); i++) {
            uint8_t aad2[8], ct2[65];
            memcpy(aad2, aad, sizeof(aad));
            memcpy(ct2, ct, sizeof(ct));
            kms_aead_io u = {
                .aad = aad2, .aad_len = sizeof(aad2), .in = ct2, .in_len = n, .out = back};
            memcpy(u.iv, w.iv, KMS_GCM_IV_LEN);
            memcpy(u.tag, w.tag, KMS_GCM_TAG_LEN);
            kms_backend_key *k = k1;
            switch (i) {
            case 0:
                aad2[0] ^= 1;
                break;
            case 1:
                ct2[n - 1] ^= 0x80;
                break;
            case 2:
                u.tag[15] ^= 1;
                break;
            case 3:
                u.iv[0] ^= 1;
                break;
            case 4:
                if (n == 1)
                    continue; /* an empty ciphertext is the empty-plaintext case */
                u.in_len = n - 1;
                break;
            case 5:
                u.aad_len = 7;
                break;
            case 6:
                u.aad = NULL;
                u.aad_len = 0;
                break;
            case 7: {
                static const uint8_t more[9] = "aad-12345";
                u.aad = more;
                u.aad_len = sizeof(more);
                break;
            }
            case 8:
                k = k2;
                break;
            case 9:
                k = k3;
                break;
            case 10:
                u.in_len = n + 1;
                break;
            default:
                fail_msg("no such tampering %d", i);
            }
            memset(back, 0xEE, sizeof(back));
            int r = b->ops->unwrap(b, k, &u);
            if (r != KMS_EAUTH)
                fail_msg("%zu bytes, %s: got %s, want KMS_EAUTH", n, what[i], kms_error_name(r));
            if (!all_zero(back, u.in_len))
                fail_msg("%zu bytes, %s: output not wiped", n, what[i]);
        }
        /* The untampered message still opens, under its own key. */
        kms_aead_io u = {.aad = aad, .aad_len = sizeof(aad), .in = ct, .in_len = n, .out = back};
        memcpy(u.iv, w.iv, KMS_GCM_IV_LEN);
        memcpy(u.tag, w.tag, KMS_GCM_TAG_LEN);
        assert_int_equal(b->ops->unwrap(b, k1, &u), KMS_OK);
        assert_memory_equal(back, pt, n);
    }
    release(k1);
    release(k2);
    release(k3);
}

/* Each version is its own key, both ways. */
static void versions_are_distinct(void **state)
{
    (void)state;
    kms_backend *b = E.b;
    uint8_t id[16];
    kms_backend_ref r1, r2;
    kms_backend_key *k1 = new_version(id, 7, &r1), *k2 = NULL;
    assert_int_equal(b->ops->create_version(b, id, 8, &r2), KMS_OK);
    assert_int_equal(b->ops->open_version(b, &r2, &k2), KMS_OK);
    assert_false(r1.len == r2.len && memcmp(r1.bytes, r2.bytes, r1.len) == 0);
    assert_int_equal(round_trip(b, k1, k2, 32, NULL, 0, NULL), KMS_EAUTH);
    assert_int_equal(round_trip(b, k2, k1, 32, NULL, 0, NULL), KMS_EAUTH);
    assert_int_equal(round_trip(b, k2, k2, 32, NULL, 0, NULL), KMS_OK);
    release(k1);
    release(k2);
}

/* A reference that is not one: an error (never a crash, never a key), the
 * output untouched; destroying it touches nothing. */
static void malformed_refs_refused(void **state)
{
    (void)state;
    kms_backend *b = E.b;
    uint8_t id[16];
    kms_backend_ref good;
    kms_backend_key *k = new_version(id, 1, &good);
    release(k);
    static const char *const what[] = {
        "empty",           "one byte",         "truncated",
        "one byte longer", "longest possible", "longer than the struct"};
    for (int i = 0; i < (int)(sizeof(what) / sizeof(what[0])); i++) {
        kms_backend_ref bad = good;
        switch (i) {
        case 0:
            bad.len = 0;
            break;
        case 1:
            bad.len = 1;
            break;
        case 2:
            bad.len = good.len - 1;
            break;
        case 3:
            if (good.len == KMS_BACKEND_REF_MAX)
                continue;
            bad.bytes[good.len] = 0;
            bad.len = good.len + 1;
            break;
        case 4:
            memset(bad.bytes + good.len, 0xFF, KMS_BACKEND_REF_MAX - good.len);
            bad.len = KMS_BACKEND_REF_MAX;
            break;
        case 5:
            bad.len = KMS_BACKEND_REF_MAX + 1;
            break;
        default:
            fail_msg("no such reference %d", i);
        }
        kms_backend_key *got = (kms_backend_key *)0x1;
        int r = b->ops->open_version(b, &bad, &got);
        if (r != KMS_EINVAL && r != KMS_ENOTFOUND && r != KMS_EKEYCHECK)
            fail_msg("open of a %s reference: %s", what[i], kms_error_name(r));
        assert_ptr_equal(got, (kms_backend_key *)0x1);
        r = b->ops->destroy_version(b, &bad);
        if (r != KMS_EINVAL && r != KMS_ENOTFOUND && r != KMS_EKEYCHECK)
            fail_msg("destroy of a %s reference: %s", what[i], kms_error_name(r));
    }
    /* The real version is unharmed. */
    k = NULL;
    assert_int_equal(b->ops->open_version(b, &good, &k), KMS_OK);
    assert_int_equal(rt(k, 32), KMS_OK);
    release(k);
}

/* A well-formed-length reference to nothing this device made. */
static void unknown_ref_not_found(void **state)
{
    (void)state;
    kms_backend *b = E.b;
    uint8_t id[16];
    kms_backend_ref good, zero;
    kms_backend_key *k = new_version(id, 1, &good);
    release(k);
    memset(&zero, 0, sizeof(zero));
    zero.len = good.len;
    k = (kms_backend_key *)0x1;
    assert_int_equal(b->ops->open_version(b, &zero, &k), KMS_ENOTFOUND);
    assert_ptr_equal(k, (kms_backend_key *)0x1);
    assert_int_equal(b->ops->destroy_version(b, &zero), KMS_ENOTFOUND);
}

static void create_existing_version(void **state)
{
    (void)state;
    kms_backend *b = E.b;
    uint8_t id[16];
    kms_backend_ref ref, again;
    kms_backend_key *k = new_version(id, 7, &ref), *k2 = NULL;
    memset(&again, 0, sizeof(again));
    int r = b->ops->create_version(b, id, 7, &again);
    if (T->flags & ON_DEVICE) {
        /* The existing object is named, so an orphan can be removed. */
        assert_int_equal(r, KMS_EEXISTS);
        assert_int_equal(again.len, ref.len);
        assert_memory_equal(again.bytes, ref.bytes, ref.len);
        assert_int_equal(b->ops->open_version(b, &again, &k2), KMS_OK);
        assert_int_equal(round_trip(b, k, k2, 32, NULL, 0, NULL), KMS_OK); /* the same key */
    } else {
        /* The store is the authority: an independent new version. */
        assert_int_equal(r, KMS_OK);
        assert_false(again.len == ref.len && memcmp(again.bytes, ref.bytes, ref.len) == 0);
        assert_int_equal(b->ops->open_version(b, &again, &k2), KMS_OK);
        assert_int_equal(round_trip(b, k, k2, 32, NULL, 0, NULL), KMS_EAUTH);
        assert_int_equal(rt(k2, 32), KMS_OK);
    }
    assert_int_equal(rt(k, 32), KMS_OK);
    release(k);
    release(k2);
}

/* ---- destroy ------------------------------------------------------------------------------ */

static void destroy_leaves_other_versions(void **state)
{
    (void)state;
    kms_backend *b = E.b;
    uint8_t id[16], id2[16];
    kms_backend_ref r1, r2, r3;
    kms_backend_key *k1 = new_version(id, 1, &r1), *k2 = NULL;
    kms_backend_key *k3 = new_version(id2, 1, &r3);
    assert_int_equal(b->ops->create_version(b, id, 2, &r2), KMS_OK);
    assert_int_equal(b->ops->open_version(b, &r2, &k2), KMS_OK);
    assert_int_equal(rt(k1, 32), KMS_OK);

    assert_int_equal(b->ops->destroy_version(b, &r1), KMS_OK);
    /* What a backend claims with KMS_BACKEND_CAP_SHRED is held here: a
     * saved ref no longer opens, and a second destroy finds nothing. */
    if (kms_backend_has_caps(b, KMS_BACKEND_CAP_SHRED)) {
        kms_backend_key *k = (kms_backend_key *)0x1;
        assert_int_equal(b->ops->open_version(b, &r1, &k), KMS_ENOTFOUND);
        assert_ptr_equal(k, (kms_backend_key *)0x1);
        assert_int_equal(b->ops->destroy_version(b, &r1), KMS_ENOTFOUND);
        /* An opening from before is no key any more. */
        assert_int_equal(rt(k1, 32), KMS_ENOTFOUND);
    } else {
        assert_int_equal(b->ops->destroy_version(b, &r1), KMS_OK);
    }
    /* Other versions, of this key and another, still work. */
    assert_int_equal(rt(k2, 32), KMS_OK);
    assert_int_equal(rt(k3, 32), KMS_OK);
    kms_backend_key *k = NULL;
    assert_int_equal(b->ops->open_version(b, &r2, &k), KMS_OK);
    assert_int_equal(round_trip(b, k2, k, 32, NULL, 0, NULL), KMS_OK);
    release(k);
    release(k1);
    release(k2);
    release(k3);
}

/* ---- concurrency ---------------------------------------------------------------------- */

#define THREADS 4
#define ROUNDS 200

struct worker {
    kms_backend_key *keys[2];
    uint8_t (*ivs)[KMS_GCM_IV_LEN];
    unsigned ok, wrong_key_ok, failed;
    int first_error;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    uint8_t aad[16];
    if (RAND_bytes(aad, sizeof(aad)) != 1) {
        w->failed = ROUNDS;
        return NULL;
    }
    for (int i = 0; i < ROUNDS; i++) {
        size_t n = 1 + (size_t)(i * 37) % 256;
        kms_backend_key *k = w->keys[i % 2];
        int r = round_trip(E.b, k, k, n, aad, sizeof(aad), w->ivs[i]);
        if (r == KMS_OK) {
            w->ok++;
        } else {
            w->failed++;
            if (w->first_error == 0)
                w->first_error = r;
        }
        /* Every tenth: the other shared key must refuse it. */
        if (i % 10 == 0 &&
            round_trip(E.b, k, w->keys[(i + 1) % 2], n, aad, sizeof(aad), NULL) != KMS_EAUTH)
            w->wrong_key_ok++;
    }
    return NULL;
}

static int iv_cmp(const void *a, const void *b)
{
    return memcmp(a, b, KMS_GCM_IV_LEN);
}

static void concurrent_callers(void **state)
{
    (void)state;
    uint8_t id[16];
    kms_backend_ref r1, r2;
    kms_backend_key *k1 = new_version(id, 1, &r1);
    kms_backend_key *k2 = new_version(id, 2, &r2);
    uint8_t(*ivs)[KMS_GCM_IV_LEN] = calloc(THREADS * ROUNDS, KMS_GCM_IV_LEN);
    assert_non_null(ivs);
    pthread_t t[THREADS];
    struct worker w[THREADS];
    uint64_t t0 = now_ms();
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){.keys = {k1, k2}, .ivs = ivs + (size_t)i * ROUNDS};
        assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    unsigned ok = 0, failed = 0, wrong_key_ok = 0;
    int first_error = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        ok += w[i].ok;
        failed += w[i].failed;
        wrong_key_ok += w[i].wrong_key_ok;
        if (first_error == 0)
            first_error = w[i].first_error;
    }
    print_message("%s: %d threads x %d round trips in %llu ms: %u right, %u failed (%s), "
                  "%u opened under the wrong key\n",
                  T->name, THREADS, ROUNDS, (unsigned long long)(now_ms() - t0), ok, failed,
                  kms_error_name(first_error), wrong_key_ok);
    assert_int_equal(failed, 0);
    assert_int_equal(wrong_key_ok, 0);
    assert_int_equal(ok, THREADS * ROUNDS);
    qsort(ivs, THREADS * ROUNDS, KMS_GCM_IV_LEN, iv_cmp);
    for (size_t i = 1; i < THREADS * ROUNDS; i++)
        assert_memory_not_equal(ivs[i - 1], ivs[i], KMS_GCM_IV_LEN);
    free(ivs);
    release(k1);
    release(k2);
}

/* ---- loss and healing ------------------------------------------------------------------- */

enum op { OP_WRAP, OP_UNWRAP, OP_OPEN, OP_CREATE, OP_RANDOM, OP_HEALTH, OP_DESTROY, OP_COUNT };
static const char *const OP_NAME[OP_COUNT] = {"wrap",   "unwrap", "open",   "create",
                                              "random", "health", "destroy"};

/* Runs one op the way the keyring would. For unwrap, ct/iv/tag are a
 * message wrapped earlier from pt under k; a successful unwrap must give pt
 * back, a failed one must not leave it in the output. */
static int run_op(enum op op, kms_backend_key *k, const kms_backend_ref *spare,
                  const uint8_t pt[32], const kms_aead_io *wrapped)
{
    kms_backend *b = E.b;
    uint8_t id[16], buf[32];
    kms_backend_ref ref;
    kms_backend_key *opened = NULL;
    int r;
    switch (op) {
    case OP_WRAP:
        return rt(k, 32);
    case OP_UNWRAP: {
        kms_aead_io u = *wrapped; /* its iv, tag and AAD */
        u.in = wrapped->out;
        u.out = buf;
        memset(buf, 0xEE, sizeof(buf));
        r = b->ops->unwrap(b, k, &u);
        if (r == KMS_OK && memcmp(buf, pt, 32) != 0)
            return KMS_EINTERNAL;
        if (r != KMS_OK && memcmp(buf, pt, 32) == 0)
            return KMS_EINTERNAL;
        return r;
    }
    case OP_OPEN:
        r = b->ops->open_version(b, spare, &opened);
        if (r == KMS_OK) {
            r = rt(opened, 32);
            release(opened);
        }
        return r;
    case OP_CREATE:
        if (RAND_bytes(id, sizeof(id)) != 1)
            return KMS_EINTERNAL;
        r = b->ops->create_version(b, id, 1, &ref);
        if (r == KMS_OK && (r = b->ops->open_version(b, &ref, &opened)) == KMS_OK) {
            r = rt(opened, 32);
            release(opened);
        }
        return r;
    case OP_RANDOM:
        return b->ops->random(b, buf, sizeof(buf));
    case OP_HEALTH:
        return b->ops->health(b);
    case OP_DESTROY:
        /* A version made for this, destroyed after the disruption. */
        return b->ops->destroy_version(b, spare);
    default:
        return KMS_EINTERNAL;
    }
}

/* The device is lost and back between two calls (a PKCS#11 token closing
 * every session, a TPM reset or restart): whichever op comes next
 * succeeds, healing on the way. */
static void reset_between_calls_is_invisible(void **state)
{
    (void)state;
    kms_backend *b = E.b;
    uint8_t id[16], pt[32];
    kms_backend_ref ref, spare;
    kms_backend_key *k = new_version(id, 1, &ref);
    assert_int_equal(RAND_bytes(pt, sizeof(pt)), 1);
    uint8_t ct[32];
    kms_aead_io w = {.in = pt, .in_len = 32, .out = ct};
    assert_int_equal(b->ops->wrap(b, k, &w), KMS_OK);
    int variants = 0;
    for (int how = 0;; how++) {
        int done = 0;
        for (int op = 0; op < OP_COUNT; op++) {
            assert_int_equal(b->ops->create_version(b, id, 100 + (uint32_t)op, &spare), KMS_OK);
            assert_int_equal(rt(k, 32), KMS_OK); /* the device is in use */
            if (T->disrupt(&E, how) != 0) {
                done = 1;
                break;
            }
            int r = run_op((enum op)op, k, &spare, pt, &w);
            if (r != KMS_OK)
                fail_msg("%s, disruption %d, then %s: %s (%s)", T->name, how, OP_NAME[op],
                         kms_error_name(r), kms_error_detail());
            if (op != OP_DESTROY)
                assert_int_equal(b->ops->destroy_version(b, &spare), KMS_OK);
        }
        if (done)
            break;
        variants++;
    }
    assert_true(variants >= 1);
    assert_int_equal(rt(k, 32), KMS_OK);
    release(k);
}

/* The device is gone for a while: health says KMS_EUNAVAIL; every call
 * either fails with KMS_EUNAVAIL or succeeds with the right answer; once
 * the device is back, the backend heals without being reopened. */
static void device_loss_then_healing(void **state)
{
    (void)state;
    kms_backend *b = E.b;
    uint8_t id[16], pt[32];
    kms_backend_ref ref, spare;
    kms_backend_key *k = new_version(id, 1, &ref);
    assert_int_equal(b->ops->create_version(b, id, 2, &spare), KMS_OK);
    assert_int_equal(RAND_bytes(pt, sizeof(pt)), 1);
    uint8_t ct[32];
    kms_aead_io w = {.in = pt, .in_len = 32, .out = ct};
    assert_int_equal(b->ops->wrap(b, k, &w), KMS_OK);

    if (T->lose(&E) != 0) {
        release(k);
        print_message("%s: cannot take the device away here: skipped\n", T->name);
        skip();
    }
    assert_int_equal(b->ops->health(b), KMS_EUNAVAIL);
    unsigned answered = 0;
    for (int round = 0; round < 3; round++)
        for (int op = 0; op < OP_COUNT; op++) {
            if (op == OP_DESTROY)
                continue; /* spare is needed below */
            int r = run_op((enum op)op, k, &spare, pt, &w);
            if (r != KMS_OK && r != KMS_EUNAVAIL)
                fail_msg("%s while the device is gone: %s (%s)", OP_NAME[op], kms_error_name(r),
                         kms_error_detail());
            answered += r == KMS_OK;
        }
    assert_int_equal(b->ops->health(b), KMS_EUNAVAIL);
    print_message("%s: device gone: %u of %d calls still answered\n", T->name, answered,
                  3 * (OP_COUNT - 1));

    T->restore(&E);
    heals(k);
    for (int op = 0; op < OP_COUNT; op++) {
        int r = run_op((enum op)op, k, &spare, pt, &w);
        if (r != KMS_OK)
            fail_msg("%s after healing: %s (%s)", OP_NAME[op], kms_error_name(r),
                     kms_error_detail());
    }
    assert_int_equal(b->ops->health(b), KMS_OK);
    release(k);
}

/* ---- main ------------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    const struct CMUnitTest cases[] = {
        cmocka_unit_test(health_while_up),
        cmocka_unit_test(round_trips_every_size),
        cmocka_unit_test(empty_plaintext),
        cmocka_unit_test(size_limit),
        cmocka_unit_test(ivs_are_fresh),
        cmocka_unit_test(random_bytes),
        cmocka_unit_test(state_mac_when_capable),
        cmocka_unit_test(state_mac_long_and_reopened),
        cmocka_unit_test(audit_sign_when_capable),
        cmocka_unit_test(tampering_fails_and_wipes),
        cmocka_unit_test(versions_are_distinct),
        cmocka_unit_test(malformed_refs_refused),
        cmocka_unit_test(unknown_ref_not_found),
        cmocka_unit_test(create_existing_version),
        cmocka_unit_test(destroy_leaves_other_versions),
        cmocka_unit_test(concurrent_callers),
        cmocka_unit_test(reset_between_calls_is_invisible),
        cmocka_unit_test(device_loss_then_healing),
    };
    if (argc > 2) {
        fprintf(stderr, "usage: %s [target]\n", argv[0]);
        return 2;
    }
    int failed = 0, ran = 0;
    for (size_t i = 0; i < sizeof(TARGETS) / sizeof(TARGETS[0]); i++) {
        if (argc == 2 && strcmp(argv[1], TARGETS[i].name) != 0)
            continue;
        T = &TARGETS[i];
        ran++;
        failed += kms_run_group(T->name, cases, sizeof(cases) / sizeof(cases[0]), group_setup,
                                group_teardown);
    }
    if (ran == 0) {
        fprintf(stderr, "no target named \"%s\"\n", argv[1]);
        return 2;
    }
    return failed;
}
