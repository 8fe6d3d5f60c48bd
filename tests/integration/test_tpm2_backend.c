/* The TPM2 backend on a real swtpm: both modes create, open, wrap and
 * unwrap; tampering and the wrong version fail; a sealed key bound to a PCR
 * is refused once the PCR changes (and names it) while other keys keep
 * working; a TPM reset and a stopped/restarted TPM are recovered from; and
 * references made on one TPM do not open on another. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/rand.h>

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
    kms_tpm2_config c = {.tcti = T.tcti};
    assert_int_equal(kms_tpm2_open(&c, &SEALED, &RESIDENT), KMS_EPRECOND); /* not provisioned */
    assert_int_equal(kms_tpm2_provision(&c), 0);
    assert_int_equal(kms_tpm2_provision(&c), 0); /* idempotent */
    assert_int_equal(kms_tpm2_open(&c, &SEALED, &RESIDENT), 0);
    assert_string_equal(SEALED->ops->name, "tpm2");
    assert_string_equal(RESIDENT->ops->name, "tpm2-resident");
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
        assert_memory_not_equal(ct, pt, sizes[s] < 16 ? sizes[s] : 16);
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
    kms_tpm2_config c = {.tcti = T.tcti, .pcr_mask = 1u << 17};
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
    kms_tpm2_config plain = {.tcti = T.tcti};
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

    /* A TPM reset: the next command restarts it and carries on. */
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
    SEALED->ops->release_version(SEALED, ks);
    RESIDENT->ops->release_version(RESIDENT, kr);
}

/* References are bound to their TPM: another one cannot open them. */
static void other_tpm_refuses(void **state)
{
    (void)state;
    kms_backend_ref rs, rr;
    assert_int_equal(SEALED->ops->create_version(SEALED, KEY_ID, 40, &rs), 0);
    assert_int_equal(RESIDENT->ops->create_version(RESIDENT, KEY_ID, 41, &rr), 0);
    kms_test_swtpm other;
    kms_test_swtpm_start(&other);
    kms_tpm2_config c = {.tcti = other.tcti};
    kms_backend *s2, *r2;
    assert_int_equal(kms_tpm2_provision(&c), 0);
    assert_int_equal(kms_tpm2_open(&c, &s2, &r2), 0);
    kms_backend_key *k = NULL;
    assert_int_not_equal(s2->ops->open_version(s2, &rs, &k), 0);
    assert_null(k);
    assert_int_not_equal(r2->ops->open_version(r2, &rr, &k), 0);
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
        cmocka_unit_test(reset_and_restart),
        cmocka_unit_test(other_tpm_refuses),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
