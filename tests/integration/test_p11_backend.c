/* The PKCS#11 backend alone, against a real SoftHSM2 token. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/rand.h>

#include "pkcs11/kms_p11.h"
#include "softhsm_fixture.h"

struct fx {
    kms_test_token token;
    kms_backend *b;
};

static kms_p11_config config(const kms_test_token *t)
{
    return (kms_p11_config){
        .module_path = t->module, .token_label = t->label, .pin_file = t->pin_file, .sessions = 4};
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_int_equal(kms_test_token_create(&f->token, "kms-p11"), 0);
    kms_p11_config c = config(&f->token);
    assert_int_equal(kms_p11_open(&c, &f->b), KMS_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    if (f->b)
        f->b->ops->close(f->b);
    kms_test_token_destroy(&f->token);
    free(f);
    return 0;
}

static kms_backend_key *new_version(struct fx *f, uint8_t id[16], uint32_t v, kms_backend_ref *ref)
{
    kms_backend_key *k = NULL;
    assert_int_equal(f->b->ops->create_version(f->b, id, v, ref), KMS_OK);
    assert_int_equal(ref->len, 20);
    assert_int_equal(f->b->ops->open_version(f->b, ref, &k), KMS_OK);
    return k;
}

static void open_errors_are_clear(void **state)
{
    struct fx *f = *state;
    /* Login state is per process: with another backend open, the token
     * would not check the PIN again. */
    f->b->ops->close(f->b);
    f->b = NULL;
    kms_backend *b = (kms_backend *)0x1;
    kms_p11_config c = config(&f->token);

    c.module_path = "/nonexistent/libnothing.so";
    assert_int_equal(kms_p11_open(&c, &b), KMS_EUNAVAIL);
    assert_non_null(strstr(kms_error_detail(), "cannot load module"));

    c = config(&f->token);
    c.token_label = "no-such-token";
    assert_int_equal(kms_p11_open(&c, &b), KMS_ENOTFOUND);
    assert_non_null(strstr(kms_error_detail(), "no-such-token"));

    c = config(&f->token);
    c.pin_file = "/nonexistent/pin";
    assert_int_equal(kms_p11_open(&c, &b), KMS_EINVAL);
    assert_non_null(strstr(kms_error_detail(), "PIN file"));

    char path[400];
    snprintf(path, sizeof(path), "%s/wrong-pin", f->token.dir);
    FILE *p = fopen(path, "w");
    fputs("99999999\n", p);
    fclose(p);
    chmod(path, 0600);
    c.pin_file = path;
    assert_int_equal(kms_p11_open(&c, &b), KMS_EDENIED);
    assert_non_null(strstr(kms_error_detail(), "CKR_PIN_INCORRECT"));
    assert_null(strstr(kms_error_detail(), "99999999")); /* never the PIN itself */

    chmod(path, 0644);
    assert_int_equal(kms_p11_open(&c, &b), KMS_EPRECOND);
    assert_non_null(strstr(kms_error_detail(), "readable by others"));
    assert_ptr_equal(b, (kms_backend *)0x1); /* untouched on failure */
}

static void round_trip_sizes(void **state)
{
    struct fx *f = *state;
    uint8_t id[16];
    assert_int_equal(RAND_bytes(id, 16), 1);
    kms_backend_ref ref;
    kms_backend_key *k = new_version(f, id, 1, &ref);
    static uint8_t pt[4096], ct[4096], back[4096];
    assert_int_equal(RAND_bytes(pt, sizeof(pt)), 1);
    const uint8_t aad[] = "header and context";
    for (size_t n = 1; n <= 4096; n += (n < 20 || n > 4080) ? 1 : 97) {
        kms_aead_io w = {.aad = aad, .aad_len = sizeof(aad), .in = pt, .in_len = n, .out = ct};
        assert_int_equal(f->b->ops->wrap(f->b, k, &w), KMS_OK);
        kms_aead_io u = {.aad = aad, .aad_len = sizeof(aad), .in = ct, .in_len = n, .out = back};
        memcpy(u.iv, w.iv, 12);
        memcpy(u.tag, w.tag, 16);
        assert_int_equal(f->b->ops->unwrap(f->b, k, &u), KMS_OK);
        assert_memory_equal(back, pt, n);
    }
    kms_aead_io big = {.aad = aad, .aad_len = sizeof(aad), .in = pt, .in_len = 4097, .out = ct};
    assert_int_equal(f->b->ops->wrap(f->b, k, &big), KMS_ETOOBIG);
    f->b->ops->release_version(f->b, k);
}

static void tampering_fails_and_wipes(void **state)
{
    struct fx *f = *state;
    uint8_t id[16];
    assert_int_equal(RAND_bytes(id, 16), 1);
    kms_backend_ref r1, r2;
    kms_backend_key *k1 = new_version(f, id, 1, &r1);
    kms_backend_key *k2 = new_version(f, id, 2, &r2);
    uint8_t pt[64], ct[64], back[64];
    assert_int_equal(RAND_bytes(pt, sizeof(pt)), 1);
    uint8_t aad[8] = "aad-1234";
    kms_aead_io w = {.aad = aad, .aad_len = sizeof(aad), .in = pt, .in_len = 64, .out = ct};
    assert_int_equal(f->b->ops->wrap(f->b, k1, &w), KMS_OK);

    for (int what = 0; what < 5; what++) {
        kms_aead_io u = {.aad = aad, .aad_len = sizeof(aad), .in = ct, .in_len = 64, .out = back};
        memcpy(u.iv, w.iv, 12);
        memcpy(u.tag, w.tag, 16);
        kms_backend_key *k = k1;
        uint8_t ct2[64];
        memcpy(ct2, ct, 64);
        switch (what) {
        case 0:
            aad[0] ^= 1;
            break;
        case 1:
            ct2[10] ^= 1;
            u.in = ct2;
            break;
        case 2:
            u.tag[15] ^= 1;
            break;
        case 3:
            u.iv[0] ^= 1;
            break;
        default:
            k = k2; /* another version's key */
            break;
        }
        memset(back, 0xEE, sizeof(back));
        assert_int_equal(f->b->ops->unwrap(f->b, k, &u), KMS_EAUTH);
        for (size_t i = 0; i < sizeof(back); i++)
            assert_int_equal(back[i], 0); /* output wiped */
        if (what == 0)
            aad[0] ^= 1;
    }
    f->b->ops->release_version(f->b, k1);
    f->b->ops->release_version(f->b, k2);
}

static void create_twice_and_destroy(void **state)
{
    struct fx *f = *state;
    uint8_t id[16];
    assert_int_equal(RAND_bytes(id, 16), 1);
    kms_backend_ref ref, again;
    kms_backend_key *k = new_version(f, id, 7, &ref);
    f->b->ops->release_version(f->b, k);
    again.len = 0;
    assert_int_equal(f->b->ops->create_version(f->b, id, 7, &again), KMS_EEXISTS);
    assert_int_equal(again.len, 20);
    assert_memory_equal(again.bytes, ref.bytes, 20); /* names the existing object */

    /* The token's own view, through pkcs11-tool. */
    static char out[65536];
    assert_int_equal(kms_test_token_list_objects(&f->token, out, sizeof(out)), 0);
    char label[80];
    static const char hex[] = "0123456789abcdef";
    char idhex[33];
    for (int i = 0; i < 16; i++) {
        idhex[2 * i] = hex[id[i] >> 4];
        idhex[2 * i + 1] = hex[id[i] & 15];
    }
    idhex[32] = '\0';
    snprintf(label, sizeof(label), "kms:%s:v7", idhex);
    char *entry = strstr(out, label);
    if (entry == NULL)
        fail_msg("pkcs11-tool does not list %s:\n%s", label, out);
    char *flags = strstr(entry, "Access:");
    assert_non_null(flags);
    char *eol = strchr(flags, '\n');
    if (eol)
        *eol = '\0';
    assert_non_null(strstr(flags, "always sensitive"));
    assert_non_null(strstr(flags, "never extractable"));
    assert_non_null(strstr(flags, "local"));
    if (eol)
        *eol = '\n';

    assert_int_equal(f->b->ops->destroy_version(f->b, &ref), KMS_OK);
    assert_int_equal(f->b->ops->destroy_version(f->b, &ref), KMS_ENOTFOUND);
    assert_int_equal(f->b->ops->open_version(f->b, &ref, &k), KMS_ENOTFOUND);
    assert_int_equal(kms_test_token_list_objects(&f->token, out, sizeof(out)), 0);
    assert_null(strstr(out, label)); /* really gone from the token */
}

static void unsafe_keys_refused(void **state)
{
    struct fx *f = *state;
    const char *which[] = {"extractable", "not-sensitive"};
    const char *attr[] = {"CKA_EXTRACTABLE is TRUE", "CKA_SENSITIVE is FALSE"};
    for (int i = 0; i < 2; i++) {
        uint8_t id[16];
        assert_int_equal(RAND_bytes(id, 16), 1);
        kms_backend_ref ref;
        assert_int_equal(
            kms_test_token_make_unsafe_key(&f->token, id, 1, which[i], ref.bytes, &ref.len), 0);
        kms_backend_key *k = (kms_backend_key *)0x1;
        assert_int_equal(f->b->ops->open_version(f->b, &ref, &k), KMS_EKEYCHECK);
        if (strstr(kms_error_detail(), attr[i]) == NULL)
            fail_msg("detail does not name %s: %s", attr[i], kms_error_detail());
        assert_ptr_equal(k, (kms_backend_key *)0x1);
    }
}

static void heals_after_session_loss(void **state)
{
    struct fx *f = *state;
    uint8_t id[16];
    assert_int_equal(RAND_bytes(id, 16), 1);
    kms_backend_ref ref;
    kms_backend_key *k = new_version(f, id, 1, &ref);
    uint8_t pt[32] = {1}, ct[32], back[32];
    kms_aead_io w = {.in = pt, .in_len = 32, .out = ct};
    assert_int_equal(f->b->ops->wrap(f->b, k, &w), KMS_OK);

    /* Every session closed (and so logged out) behind the backend's back. */
    assert_int_equal(kms_test_token_close_all_sessions(&f->token), 0);
    assert_int_equal(f->b->ops->wrap(f->b, k, &w), KMS_OK); /* healed and retried */
    kms_aead_io u = {.in = ct, .in_len = 32, .out = back};
    memcpy(u.iv, w.iv, 12);
    memcpy(u.tag, w.tag, 16);
    assert_int_equal(f->b->ops->unwrap(f->b, k, &u), KMS_OK);
    assert_memory_equal(back, pt, 32);
    assert_int_equal(f->b->ops->health(f->b), KMS_OK);

    assert_int_equal(kms_test_token_close_all_sessions(&f->token), 0);
    assert_int_equal(f->b->ops->health(f->b), KMS_OK);
    uint8_t rnd[32];
    assert_int_equal(f->b->ops->random(f->b, rnd, sizeof(rnd)), KMS_OK);
    f->b->ops->release_version(f->b, k);
}

#define IV_THREADS 4

static size_t iv_count(void)
{
    const char *e = getenv("KMS_TEST_IV_COUNT");
    size_t n = e ? strtoul(e, NULL, 10) : 1000000;
    return n < IV_THREADS ? IV_THREADS : n;
}

struct iv_worker {
    kms_backend *b;
    kms_backend_key *k;
    uint8_t (*ivs)[12];
    size_t n;
    size_t errors;
};

static void *iv_loop(void *arg)
{
    struct iv_worker *w = arg;
    uint8_t pt[32] = {5}, ct[32];
    for (size_t i = 0; i < w->n; i++) {
        kms_aead_io io = {.in = pt, .in_len = 32, .out = ct};
        if (w->b->ops->wrap(w->b, w->k, &io) != KMS_OK) {
            w->errors++;
            continue;
        }
        memcpy(w->ivs[i], io.iv, 12);
    }
    return NULL;
}

static int iv_cmp(const void *a, const void *b)
{
    return memcmp(a, b, 12);
}

static void concurrent_wraps_never_reuse_an_iv(void **state)
{
    struct fx *f = *state;
    uint8_t id[16];
    assert_int_equal(RAND_bytes(id, 16), 1);
    kms_backend_ref ref;
    kms_backend_key *k = new_version(f, id, 1, &ref);
    size_t total = iv_count(), per = total / IV_THREADS;
    total = per * IV_THREADS;
    uint8_t(*ivs)[12] = calloc(total, 12);
    assert_non_null(ivs);
    pthread_t t[IV_THREADS];
    struct iv_worker w[IV_THREADS];
    for (int i = 0; i < IV_THREADS; i++) {
        w[i] = (struct iv_worker){f->b, k, ivs + (size_t)i * per, per, 0};
        assert_int_equal(pthread_create(&t[i], NULL, iv_loop, &w[i]), 0);
    }
    for (int i = 0; i < IV_THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].errors, 0);
    }
    qsort(ivs, total, 12, iv_cmp);
    size_t dups = 0;
    for (size_t i = 1; i < total; i++)
        dups += memcmp(ivs[i - 1], ivs[i], 12) == 0;
    free(ivs);
    printf("%zu IVs from %d threads, %zu repeated\n", total, IV_THREADS, dups);
    assert_int_equal(dups, 0);
    f->b->ops->release_version(f->b, k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(open_errors_are_clear, setup, teardown),
        cmocka_unit_test_setup_teardown(round_trip_sizes, setup, teardown),
        cmocka_unit_test_setup_teardown(tampering_fails_and_wipes, setup, teardown),
        cmocka_unit_test_setup_teardown(create_twice_and_destroy, setup, teardown),
        cmocka_unit_test_setup_teardown(unsafe_keys_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(heals_after_session_loss, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_wraps_never_reuse_an_iv, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
