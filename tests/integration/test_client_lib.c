/* libkmsclient against a real kmsd (mutual TLS on a free loopback port,
 * SoftHSM2 token and SQLite file in a temp dir): every call round trips,
 * every negative gives its status and changes nothing, and one client is
 * shared by many threads. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <grpc/grpc.h>

#include "group_run.h"
#include "kms/client.h"
#include "kmsd_fixture.h"

struct fx {
    kms_test_kmsd k;
    kms_client *app, *bob, *officer;
};

static struct fx *F;

static const kms_client_context_entry CTX[] = {{"app", "billing"}, {"tenant", "42"}};
static const kms_client_context_entry CTX_SWAPPED[] = {{"tenant", "42"}, {"app", "billing"}};
static const kms_client_context_entry CTX_OTHER[] = {{"app", "billing"}, {"tenant", "43"}};

static int open_as(const char *name, kms_client **out, kms_client_error *err)
{
    kms_test_creds cr;
    kms_test_kmsd_creds(&F->k, name, &cr);
    kms_client_options o = {.target = F->k.target,
                            .ca_file = cr.ca,
                            .cert_file = cr.cert,
                            .key_file = cr.key,
                            .timeout_ms = 20000};
    return kms_client_open(&o, out, err);
}

static kms_client *must_open(const char *name)
{
    kms_client *c = NULL;
    kms_client_error err;
    int r = open_as(name, &c, &err);
    if (r != 0)
        fail_msg("open %s: %s", name, err.message);
    return c;
}

static int group_setup(void **state)
{
    (void)state;
    F = calloc(1, sizeof(*F));
    kms_test_kmsd_setup(&F->k);
    kms_test_kmsd_start(&F->k, NULL);
    F->app = must_open("app");
    F->bob = must_open("bob");
    F->officer = must_open("officer1");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    kms_client_close(F->app);
    kms_client_close(F->bob);
    kms_client_close(F->officer);
    assert_int_equal(kms_test_kmsd_stop(&F->k, SIGTERM), 0);
    kms_test_kmsd_teardown(&F->k);
    free(F);
    return 0;
}

/* usage count of the key's primary version: the observable state. */
static uint64_t usage(const char *key)
{
    kms_client_key k;
    kms_client_error err;
    assert_int_equal(kms_client_describe_key(F->app, key, &k, &err), 0);
    uint64_t u = 0;
    for (size_t i = 0; i < k.n_versions; i++)
        u += k.versions[i].usage_count;
    kms_client_key_free(&k);
    return u;
}

static void health(void **state)
{
    (void)state;
    kms_client_error err;
    assert_int_equal(kms_client_health(F->app, "", &err), KMS_CLIENT_OK);
    assert_int_equal(kms_client_health(F->app, "kms.v1.KeyManagement", &err), KMS_CLIENT_OK);
}

static void generate_data_key_round_trip(void **state)
{
    (void)state;
    kms_client_result dk, pt, bare, dk128;
    kms_client_error err;
    assert_int_equal(
        kms_client_generate_data_key(F->app, "demo", KMS_CLIENT_AES_256, CTX, 2, 0, &dk, &err), 0);
    assert_int_equal(dk.plaintext_len, 32);
    assert_non_null(dk.blob);
    assert_string_equal(dk.key_name, "demo");
    assert_int_equal(dk.key_version, 1);
    /* Context order does not matter. */
    assert_int_equal(kms_client_decrypt(F->app, dk.blob, dk.blob_len, CTX_SWAPPED, 2, &pt, &err),
                     0);
    assert_int_equal(pt.plaintext_len, 32);
    assert_memory_equal(pt.plaintext, dk.plaintext, 32);
    assert_string_equal(pt.key_name, "demo");

    assert_int_equal(
        kms_client_generate_data_key(F->app, "demo", KMS_CLIENT_AES_256, NULL, 0, 1, &bare, &err),
        0);
    assert_null(bare.plaintext);
    assert_non_null(bare.blob);
    assert_int_equal(
        kms_client_generate_data_key(F->app, "demo", KMS_CLIENT_AES_128, NULL, 0, 0, &dk128, &err),
        0);
    assert_int_equal(dk128.plaintext_len, 16);
    kms_client_result_free(&dk);
    kms_client_result_free(&pt);
    kms_client_result_free(&bare);
    kms_client_result_free(&dk128);
    assert_null(dk.plaintext); /* free leaves it zeroed */
}

static void encrypt_decrypt_sizes(void **state)
{
    (void)state;
    static const size_t sizes[] = {1, 2, 31, 32, 33, 1000, 4095, 4096};
    uint8_t msg[4096];
    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (uint8_t)(i * 7 + 3);
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        kms_client_result ct, pt;
        kms_client_error err;
        assert_int_equal(kms_client_encrypt(F->app, "demo", msg, sizes[s], CTX, 2, &ct, &err), 0);
        assert_int_equal(ct.blob_len, 22 + 12 + sizes[s] + 16);
        assert_int_equal(kms_client_decrypt(F->app, ct.blob, ct.blob_len, CTX, 2, &pt, &err), 0);
        assert_int_equal(pt.plaintext_len, sizes[s]);
        assert_memory_equal(pt.plaintext, msg, sizes[s]);
        kms_client_result_free(&ct);
        kms_client_result_free(&pt);
    }
}

static void reencrypt_result_decrypts(void **state)
{
    (void)state;
    kms_client_result ct, moved, pt;
    kms_client_error err;
    const uint8_t msg[] = "move me";
    assert_int_equal(kms_client_encrypt(F->app, "demo", msg, sizeof(msg), CTX, 2, &ct, &err), 0);
    assert_int_equal(kms_client_reencrypt(F->app, ct.blob, ct.blob_len, CTX, 2, "second", CTX_OTHER,
                                          2, &moved, &err),
                     0);
    assert_string_equal(moved.source_key_name, "demo");
    assert_int_equal(moved.source_key_version, 1);
    assert_string_equal(moved.key_name, "second");
    assert_int_equal(moved.key_version, 1);
    assert_null(moved.plaintext);
    /* The new blob needs the destination context. */
    assert_int_equal(kms_client_decrypt(F->app, moved.blob, moved.blob_len, CTX, 2, &pt, &err),
                     KMS_CLIENT_INVALID_ARGUMENT);
    assert_int_equal(
        kms_client_decrypt(F->app, moved.blob, moved.blob_len, CTX_OTHER, 2, &pt, &err), 0);
    assert_string_equal(pt.key_name, "second");
    assert_memory_equal(pt.plaintext, msg, sizeof(msg));
    kms_client_result_free(&ct);
    kms_client_result_free(&moved);
    kms_client_result_free(&pt);
}

static void describe_and_list(void **state)
{
    (void)state;
    kms_client_key k;
    kms_client_key_list l;
    kms_client_error err;
    assert_int_equal(kms_client_describe_key(F->app, "demo", &k, &err), 0);
    assert_string_equal(k.name, "demo");
    assert_string_equal(k.backend, "pkcs11");
    assert_int_equal(k.primary_version, 1);
    assert_int_equal(k.n_versions, 1);
    assert_int_equal(k.versions[0].state, KMS_CLIENT_VERSION_ENABLED);
    assert_true(k.versions[0].usage_count > 0);
    assert_int_equal(k.encrypt.n, 0);    /* a policy's identities go only to officers */
    assert_int_equal(k.policy_shown, 0); /* withheld, which is not "nobody" */
    assert_true(k.created_at > 1700000000);
    kms_client_key_free(&k);
    assert_int_equal(kms_client_describe_key(F->officer, "demo", &k, &err), 0);
    assert_int_equal(k.policy_shown, 1);
    assert_true(k.encrypt.n > 0);
    assert_int_equal(kms_client_list_keys(F->app, &l, &err), 0);
    int seen = 0;
    for (size_t i = 0; i < l.n; i++)
        if (strcmp(l.keys[i].name, "demo") == 0) {
            seen++;
            assert_memory_equal(l.keys[i].key_id, k.key_id, 16);
        }
    assert_int_equal(seen, 1);
    /* Callers see the keys whose policy names them; officers see all. */
    assert_int_equal(l.n, 2);
    assert_string_equal(l.keys[0].name, "demo");
    assert_string_equal(l.keys[1].name, "second");
    kms_client_key_list_free(&l);
    assert_int_equal(kms_client_list_keys(F->officer, &l, &err), 0);
    assert_int_equal(l.n, 4); /* cnkey, demo, locked, second */
    kms_client_key_free(&k);
    kms_client_key_list_free(&l);
}

static void negatives_change_nothing(void **state)
{
    (void)state;
    kms_client_result ct, out;
    kms_client_error err;
    const uint8_t msg[] = "secret";
    assert_int_equal(kms_client_encrypt(F->app, "demo", msg, sizeof(msg), CTX, 2, &ct, &err), 0);
    uint64_t before = usage("demo");

    memset(&out, 0x5a, sizeof(out));
    /* No such key: the answer for a key the caller has no rights on. */
    assert_int_equal(kms_client_encrypt(F->app, "nope", msg, sizeof(msg), CTX, 2, &out, &err),
                     KMS_CLIENT_PERMISSION_DENIED);
    assert_int_equal(err.code, KMS_CLIENT_PERMISSION_DENIED);
    assert_true(strlen(err.message) > 0);
    assert_int_equal(out.blob_len, 0x5a5a5a5a5a5a5a5aull); /* untouched on failure */
    assert_int_equal(kms_client_describe_key(F->app, "nope", &(kms_client_key){0}, &err),
                     KMS_CLIENT_PERMISSION_DENIED);
    assert_int_equal(kms_client_decrypt(F->app, ct.blob, ct.blob_len, CTX_OTHER, 2, &out, &err),
                     KMS_CLIENT_INVALID_ARGUMENT);
    assert_int_equal(kms_client_decrypt(F->app, ct.blob, ct.blob_len, NULL, 0, &out, &err),
                     KMS_CLIENT_INVALID_ARGUMENT);
    /* Every byte flipped, and every truncation, is refused. */
    uint8_t *bad = malloc(ct.blob_len);
    for (size_t i = 0; i < ct.blob_len; i++) {
        memcpy(bad, ct.blob, ct.blob_len);
        bad[i] ^= 0x01;
        int r = kms_client_decrypt(F->app, bad, ct.blob_len, CTX, 2, &out, &err);
        /* A flipped key id names another (unknown) key: denied, as a key
         * the caller has no rights on; a flipped version of the caller's
         * own key is not found. */
        if (r != KMS_CLIENT_INVALID_ARGUMENT &&
            !(r == KMS_CLIENT_PERMISSION_DENIED && i >= 1 && i < 17) &&
            !(r == KMS_CLIENT_NOT_FOUND && i >= 17 && i < 21))
            fail_msg("byte %zu flipped: %d", i, r);
    }
    for (size_t n = 1; n < ct.blob_len; n++)
        assert_int_equal(kms_client_decrypt(F->app, ct.blob, n, CTX, 2, &out, &err),
                         KMS_CLIENT_INVALID_ARGUMENT);
    free(bad);
    /* Identities outside the policy, and officers on the data plane. */
    assert_int_equal(kms_client_decrypt(F->bob, ct.blob, ct.blob_len, CTX, 2, &out, &err),
                     KMS_CLIENT_PERMISSION_DENIED);
    assert_int_equal(kms_client_encrypt(F->bob, "demo", msg, sizeof(msg), CTX, 2, &out, &err),
                     KMS_CLIENT_PERMISSION_DENIED);
    assert_int_equal(kms_client_decrypt(F->officer, ct.blob, ct.blob_len, CTX, 2, &out, &err),
                     KMS_CLIENT_PERMISSION_DENIED);
    assert_int_equal(
        kms_client_generate_data_key(F->app, "locked", KMS_CLIENT_AES_256, NULL, 0, 0, &out, &err),
        KMS_CLIENT_PERMISSION_DENIED);
    /* Local argument checks never reach the server. */
    uint8_t big[4097] = {0};
    assert_int_equal(kms_client_encrypt(F->app, "demo", big, sizeof(big), NULL, 0, &out, &err),
                     KMS_CLIENT_EARG);
    assert_int_equal(kms_client_encrypt(F->app, "", msg, 1, NULL, 0, &out, &err), KMS_CLIENT_EARG);
    assert_int_equal(kms_client_generate_data_key(F->app, "demo", 7, NULL, 0, 0, &out, &err),
                     KMS_CLIENT_EARG);

    assert_int_equal(usage("demo"), before);
    kms_client_result_free(&ct);
}

static void tls_refusals(void **state)
{
    (void)state;
    kms_client *c;
    kms_client_error err;
    /* Another CA's certificate and an expired one: the handshake fails. */
    const char *names[] = {"stranger", "expired"};
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(open_as(names[i], &c, &err), 0);
        assert_int_equal(kms_client_health(c, "", &err), KMS_CLIENT_UNAVAILABLE);
        kms_client_close(c);
    }
    /* Missing files are refused before any connection. */
    char ca[400];
    kms_client_options o = {.target = F->k.target,
                            .ca_file = kms_test_kmsd_pki(&F->k, "ca.pem", ca, sizeof(ca)),
                            .cert_file = "/nonexistent/app.pem",
                            .key_file = "/nonexistent/app-key.pem"};
    assert_int_equal(kms_client_open(&o, &c, &err), KMS_CLIENT_EFILE);
    assert_non_null(strstr(err.message, "/nonexistent/app.pem"));
    o.cert_file = NULL;
    assert_int_equal(kms_client_open(&o, &c, &err), KMS_CLIENT_EARG);
    /* A server that is not there. */
    o.target = "127.0.0.1:1";
    o.cert_file = ca;
    o.key_file = kms_test_kmsd_pki(&F->k, "app-key.pem", (char[400]){0}, 400);
    char cert[400];
    o.cert_file = kms_test_kmsd_pki(&F->k, "app.pem", cert, sizeof(cert));
    o.timeout_ms = 2000;
    assert_int_equal(kms_client_open(&o, &c, &err), 0);
    int r = kms_client_health(c, "", &err);
    assert_true(r == KMS_CLIENT_UNAVAILABLE || r == KMS_CLIENT_DEADLINE_EXCEEDED);
    kms_client_close(c);
}

#define THREADS 16
#define CALLS 100

static void *worker(void *arg)
{
    uintptr_t id = (uintptr_t)arg, bad = 0;
    for (int i = 0; i < CALLS; i++) {
        uint8_t msg[64];
        for (size_t j = 0; j < sizeof(msg); j++)
            msg[j] = (uint8_t)(id * 31 + (uintptr_t)i + j);
        kms_client_result ct, pt;
        kms_client_error err;
        if (kms_client_encrypt(F->app, i % 2 ? "demo" : "second", msg, sizeof(msg), CTX, 2, &ct,
                               &err) != 0) {
            bad++;
            continue;
        }
        if (kms_client_decrypt(F->app, ct.blob, ct.blob_len, CTX, 2, &pt, &err) != 0 ||
            pt.plaintext_len != sizeof(msg) || memcmp(pt.plaintext, msg, sizeof(msg)) != 0)
            bad++;
        else
            kms_client_result_free(&pt);
        kms_client_result_free(&ct);
    }
    return (void *)bad;
}

static void one_client_many_threads(void **state)
{
    (void)state;
    pthread_t t[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker, (void *)i), 0);
    uintptr_t bad = 0;
    for (int i = 0; i < THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        bad += (uintptr_t)r;
    }
    assert_int_equal(bad, 0);
}

/* Runs last. The library started gRPC (this program does not use it
 * directly), so closing its last client returns only once gRPC has cleaned
 * up, and a program may exit right after: even with a refused handshake
 * (a connection still closing) just before. */
static void last_close_ends_grpc(void **state)
{
    (void)state;
    kms_client *c;
    kms_client_error err;
    assert_int_equal(open_as("stranger", &c, &err), 0);
    assert_int_equal(kms_client_health(c, "", &err), KMS_CLIENT_UNAVAILABLE);
    kms_client_close(c);
    assert_true(grpc_is_initialized()); /* the group's clients are still open */
    kms_client_close(F->app);
    kms_client_close(F->bob);
    kms_client_close(F->officer);
    F->app = F->bob = F->officer = NULL;
    assert_false(grpc_is_initialized());
}

static void status_names(void **state)
{
    (void)state;
    assert_string_equal(kms_client_status_name(KMS_CLIENT_PERMISSION_DENIED), "PERMISSION_DENIED");
    assert_string_equal(kms_client_status_name(KMS_CLIENT_EFILE), "EFILE");
    assert_string_equal(kms_client_status_name(99), "UNKNOWN_STATUS");
}

/* Context entries are checked before anything is sent: an empty key and
 * over-long keys or values are refused locally (KMS_CLIENT_EARG). */
static void context_checked_before_sending(void **state)
{
    (void)state;
    kms_client_result out;
    kms_client_error err;
    const uint8_t msg[] = "secret";
    static char longk[258], longv[1026];
    memset(longk, 'k', sizeof(longk) - 1);
    memset(longv, 'v', sizeof(longv) - 1);
    const kms_client_context_entry bad[][1] = {{{"", "x"}}, {{longk, "x"}}, {{"k", longv}}};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(
            kms_client_encrypt(F->app, "demo", msg, sizeof(msg), bad[i], 1, &out, &err),
            KMS_CLIENT_EARG);
        assert_non_null(strstr(err.message, "encryption context"));
    }
    longk[256] = '\0';
    longv[1024] = '\0';
    const kms_client_context_entry edge[] = {{longk, longv}};
    assert_int_equal(kms_client_encrypt(F->app, "demo", msg, sizeof(msg), edge, 1, &out, &err), 0);
    kms_client_result_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(status_names),
        cmocka_unit_test(health),
        cmocka_unit_test(generate_data_key_round_trip),
        cmocka_unit_test(encrypt_decrypt_sizes),
        cmocka_unit_test(reencrypt_result_decrypts),
        cmocka_unit_test(describe_and_list),
        cmocka_unit_test(negatives_change_nothing),
        cmocka_unit_test(context_checked_before_sending),
        cmocka_unit_test(tls_refusals),
        cmocka_unit_test(one_client_many_threads),
        cmocka_unit_test(last_close_ends_grpc),
    };
    return KMS_RUN_GROUP(tests, group_setup, group_teardown);
}
