/* The TPM2 backend on a real swtpm: both modes create, open, wrap and
 * unwrap; tampering and the wrong version fail; a sealed key bound to a PCR
 * is refused once the PCR changes (and names it) while other keys keep
 * working (PCR 17 changed through swtpm's control channel while kms holds
 * the TPM, PCR 16 through tpm2_pcrextend); a TPM reset and a
 * stopped/restarted TPM are recovered from; the resident mode's loaded-key
 * cache survives slot pressure, release, destroy and concurrent callers;
 * a second process cannot open a TPM kms holds; and references made on one
 * TPM do not open on another. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/rand.h>

#include "group_run.h"
#include "kms/error.h"
#include "swtpm_fixture.h"
#include "tpm2/kms_tpm2.h"

static kms_test_swtpm T;
static kms_backend *SEALED, *RESIDENT;
static const uint8_t KEY_ID[16] = {0x71, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

static int group_setup(void **state)
{
    (void)state;
    setenv("TSS2_LOG", "all+none", 1);
    kms_test_swtpm_start(&T);
    kms_tpm2_config c = {.tcti = T.tcti, .lock_dir = T.dir};
    assert_int_equal(kms_tpm2_open(&c, &SEALED, &RESIDENT), KMS_EPRECOND); /* not provisioned */
    assert_int_equal(kms_tpm2_provision(&c), 0);
    assert_int_equal(kms_tpm2_provision(&c), 0); /* idempotent */
    assert_int_equal(kms_tpm2_open(&c, &SEALED, &RESIDENT), 0);
    assert_string_equal(SEALED->ops->name, "tpm2");
    assert_string_equal(kms_backend_mode_of(SEALED).name, "sealed");
    assert_string_equal(RESIDENT->ops->name, "tpm2");
    assert_string_equal(kms_backend_mode_of(RESIDENT).name, "resident");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    SEALED->ops->close(SEALED);
    RESIDENT->ops->close(RESIDENT);
    kms_test_swtpm_destroy(&T);
    return 0;
}

static void round_trips(kms_backend *b, const kms_backend_ref *ref)
{
    kms_backend_key *k = NULL;
    assert_int_equal(b->ops->open_version(b, ref, &k), 0);
    static const size_t sizes[] = {1, 16, 32, 33, 1000, 4096};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        uint8_t pt[4096], ct[4096], back[4096], aad[40];
        RAND_bytes(pt, (int)sizes[s]);
        RAND_bytes(aad, sizeof(aad));
        kms_aead_io w = {
            .aad = aad, .aad_len = sizeof(aad), .in = pt, .in_len = sizes[s], .out = ct};
        assert_int_equal(b->ops->wrap(b, k, &w), 0);
        if (sizes[s] >= 16) /* a 1-byte ciphertext equals its plaintext 1 time in 256 */
            assert_memory_not_equal(ct, pt, 16);
        kms_aead_io u = {
            .aad = aad, .aad_len = sizeof(aad), .in = ct, .in_len = sizes[s], .out = back};
        memcpy(u.iv, w.iv, sizeof(u.iv));
        memcpy(u.tag, w.tag, sizeof(u.tag));
        assert_int_equal(b->ops->unwrap(b, k, &u), 0);
        assert_memory_equal(back, pt, sizes[s]);
        /* Tampering: ciphertext, tag, IV, AAD: KMS_EAUTH, output wiped. */
        for (int what = 0; what < 4; what++) {
            kms_aead_io t = u;
            uint8_t ct2[4096], aad2[40];
            memcpy(ct2, ct, sizes[s]);
            memcpy(aad2, aad, sizeof(aad));
            t.in = ct2;
            t.aad = aad2;
            if (what == 0)
                ct2[sizes[s] - 1] ^= 1;
            else if (what == 1)
                t.tag[0] ^= 1;
            else if (what == 2)
                t.iv[5] ^= 1;
            else
                aad2[7] ^= 1;
            memset(back, 0x5a, sizes[s]);
            assert_int_equal(b->ops->unwrap(b, k, &t), KMS_EAUTH);
            for (size_t i = 0; i < sizes[s]; i++)
                assert_int_equal(back[i], 0); /* wiped, never partial plaintext */
        }
    }
    /* An empty message (out may be NULL): the tag still binds the AAD. */
    uint8_t aad0[3] = {1, 2, 3};
    kms_aead_io e = {.aad = aad0, .aad_len = sizeof(aad0)};
    assert_int_equal(b->ops->wrap(b, k, &e), 0);
    assert_int_equal(b->ops->unwrap(b, k, &e), 0);
    aad0[0] ^= 1;
    assert_int_equal(b->ops->unwrap(b, k, &e), KMS_EAUTH);
    b->ops->release_version(b, k);
}

static void both_modes_round_trip(void **state)
{
    (void)state;
    kms_backend_ref rs, rr;
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 1, &rs), 0);
    assert_int_equal(RESIDENT->ops->create_version(RESIDENT, KEY_ID, 2, &rr), 0);
    round_trips(SEALED, &rs);
    round_trips(RESIDENT, &rr);
    /* A reference of the other mode is refused, not misused. */
    kms_backend_key *k = NULL;
    assert_int_equal(SEALED->ops->open_version(SEALED, &rr, &k), KMS_EKEYCHECK);
    assert_int_equal(RESIDENT->ops->open_version(RESIDENT, &rs, &k), KMS_EKEYCHECK);
    /* A malformed reference. */
    kms_backend_ref bad = rs;
    bad.len -= 3;
    assert_int_equal(SEALED->ops->open_version(SEALED, &bad, &k), KMS_ENOTFOUND);
    bad = rs;
    bad.bytes[bad.len - 5] ^= 1; /* inside the TPM-encrypted private part */
    assert_int_not_equal(SEALED->ops->open_version(SEALED, &bad, &k), 0);
    uint8_t rnd[100];
    assert_int_equal(SEALED->ops->random(SEALED, rnd, sizeof(rnd)), 0);
    assert_int_equal(SEALED->ops->health(SEALED), 0);
}

/* Each version is its own key: a blob of one does not open under another. */
static void versions_are_distinct(void **state)
{
    (void)state;
    kms_backend *bs[2] = {SEALED, RESIDENT};
    for (int i = 0; i < 2; i++) {
        kms_backend *b = bs[i];
        kms_backend_ref r1, r2;
        kms_backend_key *k1, *k2;
        assert_int_equal(b->ops->create_version(b, KEY_ID, 7, &r1), 0);
        assert_int_equal(b->ops->create_version(b, KEY_ID, 8, &r2), 0);
        assert_int_equal(b->ops->open_version(b, &r1, &k1), 0);
        assert_int_equal(b->ops->open_version(b, &r2, &k2), 0);
        uint8_t pt[32] = {1}, ct[32], back[32];
        kms_aead_io w = {.in = pt, .in_len = 32, .out = ct};
        assert_int_equal(b->ops->wrap(b, k1, &w), 0);
        kms_aead_io u = {.in = ct, .in_len = 32, .out = back};
        memcpy(u.iv, w.iv, 12);
        memcpy(u.tag, w.tag, 16);
        assert_int_equal(b->ops->unwrap(b, k2, &u), KMS_EAUTH);
        b->ops->release_version(b, k1);
        b->ops->release_version(b, k2);
    }
}

static void pcr_policy(void **state)
{
    (void)state;
    kms_tpm2_config c = {.tcti = T.tcti, .lock_dir = T.dir, .pcr_mask = 1u << 17};
    kms_backend *bound = NULL;
    /* A second owner on the same TPM would collide: close ours first. */
    SEALED->ops->close(SEALED);
    RESIDENT->ops->close(RESIDENT);
    assert_int_equal(kms_tpm2_open(&c, &bound, NULL), 0);
    kms_backend_ref ref, free_ref;
    assert_int_equal(bound->ops->create_version(bound, KEY_ID, 20, &ref), 0);
    kms_backend_key *k = NULL;
    assert_int_equal(bound->ops->open_version(bound, &ref, &k), 0);
    bound->ops->release_version(bound, k);
    bound->ops->close(bound);
    /* An unbound key made before the change keeps working after it. */
    kms_tpm2_config plain = {.tcti = T.tcti, .lock_dir = T.dir};
    assert_int_equal(kms_tpm2_open(&plain, &SEALED, &RESIDENT), 0);
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 21, &free_ref), 0);

    assert_int_equal(kms_test_swtpm_extend17(&T), 0);
    k = NULL;
    assert_int_equal(SEALED->ops->open_version(SEALED, &ref, &k), KMS_EPRECOND);
    assert_null(k);
    assert_non_null(strstr(kms_error_detail(), "PCRs 17"));
    assert_int_equal(SEALED->ops->open_version(SEALED, &free_ref, &k), 0);
    SEALED->ops->release_version(SEALED, k);
    assert_int_equal(SEALED->ops->health(SEALED), 0);
}

/* One 32-byte wrap and its unwrap; returns the unwrap's result. */
static int wrap_unwrap(kms_backend *b, kms_backend_key *wk, kms_backend_key *uk)
{
    uint8_t pt[32], ct[32], back[32];
    RAND_bytes(pt, sizeof(pt));
    kms_aead_io w = {.in = pt, .in_len = 32, .out = ct};
    int r = b->ops->wrap(b, wk, &w);
    if (r != 0)
        return r;
    kms_aead_io u = {.in = ct, .in_len = 32, .out = back};
    memcpy(u.iv, w.iv, 12);
    memcpy(u.tag, w.tag, 16);
    r = b->ops->unwrap(b, uk, &u);
    if (r == 0 && memcmp(back, pt, 32) != 0)
        r = KMS_EINTERNAL;
    return r;
}

static void close_all(void)
{
    SEALED->ops->close(SEALED);
    RESIDENT->ops->close(RESIDENT);
    SEALED = RESIDENT = NULL;
}

/* PCR 16 changed with tpm2_pcrextend, another client of the TPM, while kms
 * holds it (the swtpm TCTI connects per command): the key bound to it is
 * refused naming PCR 16, everything else keeps being served. */
static void pcr16_policy(void **state)
{
    (void)state;
    kms_tpm2_config c16 = {.tcti = T.tcti, .lock_dir = T.dir, .pcr_mask = 1u << 16};
    kms_backend_ref bound_ref, bound2_ref, free_ref, res_ref, now;
    kms_backend_key *k = NULL, *open_bound = NULL, *kr = NULL;
    /* An unbound sealed key, made by the plain backend. */
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 51, &free_ref), 0);
    close_all();
    assert_int_equal(kms_tpm2_open(&c16, &SEALED, &RESIDENT), 0);
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 50, &bound_ref), 0);
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 54, &bound2_ref), 0);
    assert_int_equal(SEALED->ops->open_version(SEALED, &bound2_ref, &open_bound), 0);
    assert_int_equal(RESIDENT->ops->create_version(RESIDENT, KEY_ID, 52, &res_ref), 0);
    assert_int_equal(RESIDENT->ops->open_version(RESIDENT, &res_ref, &kr), 0);

    assert_int_equal(kms_test_swtpm_pcrextend(&T, 16), 0);

    kms_error_clear();
    assert_int_equal(SEALED->ops->open_version(SEALED, &bound_ref, &k), KMS_EPRECOND);
    assert_null(k);
    assert_non_null(strstr(kms_error_detail(), "PCRs 16:"));
    /* Everything else is still served: an unbound key, a bound key opened
     * before the change (from memory), a resident key, new keys. */
    assert_int_equal(SEALED->ops->open_version(SEALED, &free_ref, &k), 0);
    assert_int_equal(wrap_unwrap(SEALED, k, k), 0);
    SEALED->ops->release_version(SEALED, k);
    assert_int_equal(wrap_unwrap(SEALED, open_bound, open_bound), 0);
    assert_int_equal(wrap_unwrap(RESIDENT, kr, kr), 0);
    assert_int_equal(SEALED->ops->health(SEALED), 0);
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 53, &now), 0);
    assert_int_equal(SEALED->ops->open_version(SEALED, &now, &k), 0);
    SEALED->ops->release_version(SEALED, k);
    /* Still refused on a second attempt (no state kept from the first). */
    assert_int_equal(SEALED->ops->open_version(SEALED, &bound_ref, &k), KMS_EPRECOND);
    SEALED->ops->release_version(SEALED, open_bound);
    RESIDENT->ops->release_version(RESIDENT, kr);
    close_all();
    kms_tpm2_config plain = {.tcti = T.tcti, .lock_dir = T.dir};
    assert_int_equal(kms_tpm2_open(&plain, &SEALED, &RESIDENT), 0);
}

/* Resident keys: the last used one stays loaded. Alternating versions,
 * unsealing beside a loaded key (swtpm: three object slots), releasing and
 * destroying the cached one all keep working. */
static void resident_cache(void **state)
{
    (void)state;
    kms_backend_ref ra, rb, rs;
    kms_backend_key *ka, *kb, *ks, *ka2;
    assert_int_equal(RESIDENT->ops->create_version(RESIDENT, KEY_ID, 60, &ra), 0);
    assert_int_equal(RESIDENT->ops->create_version(RESIDENT, KEY_ID, 61, &rb), 0);
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 62, &rs), 0);
    assert_int_equal(RESIDENT->ops->open_version(RESIDENT, &ra, &ka), 0);
    assert_int_equal(RESIDENT->ops->open_version(RESIDENT, &rb, &kb), 0);
    assert_int_equal(RESIDENT->ops->open_version(RESIDENT, &ra, &ka2), 0);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(wrap_unwrap(RESIDENT, ka, ka), 0);
        assert_int_equal(wrap_unwrap(RESIDENT, kb, kb), 0);
        assert_int_equal(wrap_unwrap(RESIDENT, ka, ka2), 0); /* two openings, one key */
        assert_int_equal(wrap_unwrap(RESIDENT, ka, kb), KMS_EAUTH);
    }
    /* Unseal while a resident key is loaded. */
    assert_int_equal(SEALED->ops->open_version(SEALED, &rs, &ks), 0);
    assert_int_equal(wrap_unwrap(SEALED, ks, ks), 0);
    SEALED->ops->release_version(SEALED, ks);
    /* Someone else flushed every transient object (the loaded key too):
     * the stale handle is noticed, the key loaded again, the call works. */
    assert_int_equal(wrap_unwrap(RESIDENT, kb, kb), 0);
    assert_int_equal(kms_test_swtpm_tool(&T, "flushcontext -t"), 0);
    assert_int_equal(wrap_unwrap(RESIDENT, kb, kb), 0);
    /* Release the cached opening; the other still works. */
    assert_int_equal(wrap_unwrap(RESIDENT, kb, kb), 0);
    RESIDENT->ops->release_version(RESIDENT, kb);
    assert_int_equal(wrap_unwrap(RESIDENT, ka, ka), 0);
    /* destroy: nothing on the chip; the cached handle goes; 0. */
    assert_int_equal(RESIDENT->ops->destroy_version(RESIDENT, &ra), 0);
    assert_int_equal(SEALED->ops->destroy_version(SEALED, &rs), 0);
    kms_backend_ref junk = {.len = 5};
    assert_int_equal(SEALED->ops->destroy_version(SEALED, &junk), KMS_ENOTFOUND);
    RESIDENT->ops->release_version(RESIDENT, ka);
    RESIDENT->ops->release_version(RESIDENT, ka2);
}

struct worker {
    kms_backend_key *keys[3];
    kms_backend *backends[3];
    int failures;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 150; i++) {
        int j = i % 3;
        if (wrap_unwrap(w->backends[j], w->keys[j], w->keys[j]) != 0)
            w->failures++;
    }
    return NULL;
}

/* Several threads on one backend pair: the TPM is used by one at a time. */
static void concurrent_callers(void **state)
{
    (void)state;
    kms_backend_ref r[3];
    struct worker w = {.backends = {RESIDENT, RESIDENT, SEALED}};
    assert_int_equal(RESIDENT->ops->create_version(RESIDENT, KEY_ID, 70, &r[0]), 0);
    assert_int_equal(RESIDENT->ops->create_version(RESIDENT, KEY_ID, 71, &r[1]), 0);
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 72, &r[2]), 0);
    for (int j = 0; j < 3; j++)
        assert_int_equal(w.backends[j]->ops->open_version(w.backends[j], &r[j], &w.keys[j]), 0);
    struct worker ws[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        ws[i] = w;
        assert_int_equal(pthread_create(&th[i], NULL, work, &ws[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(ws[i].failures, 0);
    }
    for (int j = 0; j < 3; j++)
        w.backends[j]->ops->release_version(w.backends[j], w.keys[j]);
}

static void reset_and_restart(void **state)
{
    (void)state;
    kms_backend_ref rs, rr;
    kms_backend_key *ks, *kr;
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 30, &rs), 0);
    assert_int_equal(RESIDENT->ops->create_version(RESIDENT, KEY_ID, 31, &rr), 0);
    assert_int_equal(SEALED->ops->open_version(SEALED, &rs, &ks), 0);
    assert_int_equal(RESIDENT->ops->open_version(RESIDENT, &rr, &kr), 0);
    uint8_t pt[32] = {9}, ct[32], back[32];

    /* A TPM reset: the next command restarts it and carries on, whether
     * it unseals or uses the (now gone) loaded resident key. */
    kms_backend_ref rs2;
    kms_backend_key *ks2;
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 32, &rs2), 0);
    assert_int_equal(wrap_unwrap(RESIDENT, kr, kr), 0);
    kms_test_swtpm_reset(&T);
    assert_int_equal(SEALED->ops->open_version(SEALED, &rs2, &ks2), 0);
    assert_int_equal(wrap_unwrap(SEALED, ks2, ks2), 0);
    SEALED->ops->release_version(SEALED, ks2);
    assert_int_equal(wrap_unwrap(RESIDENT, kr, kr), 0);
    kms_test_swtpm_reset(&T);
    kms_aead_io w = {.in = pt, .in_len = 32, .out = ct};
    assert_int_equal(RESIDENT->ops->wrap(RESIDENT, kr, &w), 0);
    kms_aead_io u = {.in = ct, .in_len = 32, .out = back};
    memcpy(u.iv, w.iv, 12);
    memcpy(u.tag, w.tag, 16);
    assert_int_equal(RESIDENT->ops->unwrap(RESIDENT, kr, &u), 0);
    assert_memory_equal(back, pt, 32);

    /* Stopped: unavailable (sealed keys already open keep working). */
    kms_test_swtpm_stop(&T);
    assert_int_equal(SEALED->ops->health(SEALED), KMS_EUNAVAIL);
    assert_int_equal(RESIDENT->ops->wrap(RESIDENT, kr, &w), KMS_EUNAVAIL);
    kms_aead_io ws = {.in = pt, .in_len = 32, .out = ct};
    assert_int_equal(SEALED->ops->wrap(SEALED, ks, &ws), 0);
    /* Restarted on the same state: serving again, without reopening. */
    kms_test_swtpm_resume(&T);
    int ok = 0;
    for (int i = 0; i < 50 && !ok; i++) {
        ok = SEALED->ops->health(SEALED) == 0;
        if (!ok)
            usleep(100 * 1000);
    }
    assert_true(ok);
    assert_int_equal(RESIDENT->ops->wrap(RESIDENT, kr, &w), 0);
    /* The TPM went away and came back between two calls (it needs a
     * Startup again): the first call after it succeeds. */
    kms_test_swtpm_stop(&T);
    kms_test_swtpm_resume(&T);
    assert_int_equal(wrap_unwrap(RESIDENT, kr, kr), 0);
    kms_test_swtpm_stop(&T);
    kms_test_swtpm_resume(&T);
    assert_int_equal(SEALED->ops->health(SEALED), 0);
    SEALED->ops->release_version(SEALED, ks);
    RESIDENT->ops->release_version(RESIDENT, kr);
}

/* References are bound to their TPM: another one cannot open them. */
/* One kms process per TPM: while this process has the TPM open, another
 * process (a forked child here) cannot open or provision it, and is told
 * who holds it; once closed, it can. */
static int child_open(const kms_tpm2_config *c, int provision)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        kms_backend *s = NULL, *r = NULL;
        kms_error_clear();
        int rc = provision ? kms_tpm2_provision(c) : kms_tpm2_open(c, &s, &r);
        char holder[64];
        snprintf(holder, sizeof(holder), "(pid %ld,", (long)getppid());
        if (rc == 0) {
            s->ops->close(s);
            r->ops->close(r);
            _exit(0);
        }
        _exit(rc == KMS_EPRECOND && strstr(kms_error_detail(), holder) != NULL ? 10 : 20);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void one_process_per_tpm(void **state)
{
    (void)state;
    kms_tpm2_config c = {.tcti = T.tcti, .lock_dir = T.dir};
    assert_int_equal(child_open(&c, 0), 10); /* refused, naming this process */
    assert_int_equal(child_open(&c, 1), 10);
    /* In this process too: a second opening would flush the first's keys. */
    kms_backend *s2 = NULL;
    kms_error_clear();
    assert_int_equal(kms_tpm2_open(&c, &s2, NULL), KMS_EPRECOND);
    assert_null(s2);
    assert_non_null(strstr(kms_error_detail(), "one kms process per TPM"));
    /* Ours keeps working. */
    assert_int_equal(SEALED->ops->health(SEALED), 0);
    /* Closed: the child can open it. */
    close_all();
    assert_int_equal(child_open(&c, 0), 0);
    assert_int_equal(kms_tpm2_open(&c, &SEALED, &RESIDENT), 0);
}

static void other_tpm_refuses(void **state)
{
    (void)state;
    kms_backend_ref rs, rr;
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 40, &rs), 0);
    assert_int_equal(RESIDENT->ops->create_version(RESIDENT, KEY_ID, 41, &rr), 0);
    kms_test_swtpm other;
    kms_test_swtpm_start(&other);
    kms_tpm2_config c = {.tcti = other.tcti, .lock_dir = other.dir};
    kms_backend *s2, *r2;
    assert_int_equal(kms_tpm2_provision(&c), 0);
    assert_int_equal(kms_tpm2_open(&c, &s2, &r2), 0);
    kms_backend_key *k = NULL;
    assert_int_equal(s2->ops->open_version(s2, &rs, &k), KMS_EKEYCHECK);
    assert_null(k);
    assert_int_equal(r2->ops->open_version(r2, &rr, &k), KMS_EKEYCHECK);
    assert_null(k);
    s2->ops->close(s2);
    r2->ops->close(r2);
    kms_test_swtpm_destroy(&other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(both_modes_round_trip),
        cmocka_unit_test(versions_are_distinct),
        cmocka_unit_test(pcr_policy),
        cmocka_unit_test(pcr16_policy),
        cmocka_unit_test(resident_cache),
        cmocka_unit_test(concurrent_callers),
        cmocka_unit_test(reset_and_restart),
        cmocka_unit_test(one_process_per_tpm),
        cmocka_unit_test(other_tpm_refuses),
    };
    return KMS_RUN_GROUP(tests, group_setup, group_teardown);
}
