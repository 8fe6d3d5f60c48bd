/* kmsd under concurrency: 32 client threads x 500 mixed calls, every answer
 * checked, the server still up afterwards; then SIGTERM while calls are in
 * flight: kmsd shuts down cleanly (exit 0; in the sanitizer build that
 * includes LeakSanitizer finding nothing). */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <grpc/grpc.h>
#include <grpc/status.h>

#include "group_run.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc_test_client.h"
#include "kms/v1/kms.pb-c.h"
#include "kmsd_fixture.h"

#define KM "/kms.v1.KeyManagement/"
#define THREADS 32
#define CALLS 500
#define CHANNELS 4

static kms_test_kmsd K;
static kms_tc *channels[CHANNELS];

typedef Kms__V1__EncryptRequest__EncryptionContextEntry EncCtx;
typedef Kms__V1__DecryptRequest__EncryptionContextEntry DecCtx;

static int group_setup(void **state)
{
    (void)state;
    grpc_init();
    kms_test_kmsd_setup(&K);
    const char *extra[] = {"--log-level", "error", NULL};
    kms_test_kmsd_start(&K, extra);
    char ca[400], cert[400], key[400];
    for (int i = 0; i < CHANNELS; i++)
        if (kms_tc_open(K.target, kms_test_kmsd_pki(&K, "ca.pem", ca, sizeof(ca)),
                        kms_test_kmsd_pki(&K, "app.pem", cert, sizeof(cert)),
                        kms_test_kmsd_pki(&K, "app-key.pem", key, sizeof(key)), &channels[i]) != 0)
            return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < CHANNELS; i++)
        kms_tc_close(channels[i]);
    kms_test_kmsd_teardown(&K);
    kms_tc_grpc_shutdown();
    return 0;
}

/* One thread's work: a mix of every data-plane method, each answer
 * checked. Returns the number of wrong answers; *calls counts RPCs. */
struct worker {
    int id;
    kms_tc *c;
    int calls;
    int wrong;
    char first_error[200];
    atomic_int *stop; /* phase 2: run until set, count nothing */
};

static void wrong(struct worker *w, const char *what, int status)
{
    if (w->wrong++ == 0)
        snprintf(w->first_error, sizeof(w->first_error), "thread %d: %s (status %d)", w->id, what,
                 status);
}

#define FAIL(what, st)                                                                             \
    do {                                                                                           \
        wrong(w, what, st);                                                                        \
        return;                                                                                    \
    } while (0)

static int do_encrypt(struct worker *w, const uint8_t *pt, size_t n, const char *purpose,
                      uint8_t *blob, size_t *blob_len)
{
    Kms__V1__EncryptRequest req = KMS__V1__ENCRYPT_REQUEST__INIT;
    EncCtx e = KMS__V1__ENCRYPT_REQUEST__ENCRYPTION_CONTEXT_ENTRY__INIT;
    EncCtx *ep = &e;
    e.key = "purpose";
    e.value = (char *)purpose;
    req.key_name = "demo";
    req.plaintext.data = (uint8_t *)pt;
    req.plaintext.len = n;
    req.encryption_context = &ep;
    req.n_encryption_context = 1;
    ProtobufCMessage *m = NULL;
    int st = kms_tc_call(w->c, KM "Encrypt", &req.base, &kms__v1__encrypt_response__descriptor, &m,
                         NULL, 0);
    w->calls++;
    if (st == GRPC_STATUS_OK) {
        Kms__V1__EncryptResponse *r = (Kms__V1__EncryptResponse *)m;
        memcpy(blob, r->ciphertext_blob.data, r->ciphertext_blob.len);
        *blob_len = r->ciphertext_blob.len;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return st;
}

static int do_decrypt(struct worker *w, const uint8_t *blob, size_t blob_len, const char *purpose,
                      uint8_t *pt, size_t *n)
{
    Kms__V1__DecryptRequest req = KMS__V1__DECRYPT_REQUEST__INIT;
    DecCtx e = KMS__V1__DECRYPT_REQUEST__ENCRYPTION_CONTEXT_ENTRY__INIT;
    DecCtx *ep = &e;
    e.key = "purpose";
    e.value = (char *)purpose;
    req.ciphertext_blob.data = (uint8_t *)blob;
    req.ciphertext_blob.len = blob_len;
    req.encryption_context = &ep;
    req.n_encryption_context = 1;
    ProtobufCMessage *m = NULL;
    int st = kms_tc_call(w->c, KM "Decrypt", &req.base, &kms__v1__decrypt_response__descriptor, &m,
                         NULL, 0);
    w->calls++;
    if (st == GRPC_STATUS_OK) {
        Kms__V1__DecryptResponse *r = (Kms__V1__DecryptResponse *)m;
        memcpy(pt, r->plaintext.data, r->plaintext.len);
        *n = r->plaintext.len;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return st;
}

static void step(struct worker *w, unsigned i)
{
    uint8_t pt[64], out[64], blob[256], blob2[256];
    size_t n = 0, blob_len = 0;
    int st;
    snprintf((char *)pt, sizeof(pt), "thread %d call %u", w->id, i);
    size_t pt_len = strlen((const char *)pt);

    switch (i % 6) {
    case 0: { /* GenerateDataKey, then Decrypt its blob */
        Kms__V1__GenerateDataKeyRequest req = KMS__V1__GENERATE_DATA_KEY_REQUEST__INIT;
        req.key_name = "demo";
        req.key_spec = i % 12 ? KMS__V1__KEY_SPEC__AES_256 : KMS__V1__KEY_SPEC__AES_128;
        ProtobufCMessage *m = NULL;
        st = kms_tc_call(w->c, KM "GenerateDataKey", &req.base,
                         &kms__v1__generate_data_key_response__descriptor, &m, NULL, 0);
        w->calls++;
        if (st != GRPC_STATUS_OK)
            FAIL("GenerateDataKey", st);
        Kms__V1__GenerateDataKeyResponse *r = (Kms__V1__GenerateDataKeyResponse *)m;
        Kms__V1__DecryptRequest dr = KMS__V1__DECRYPT_REQUEST__INIT;
        dr.ciphertext_blob = r->ciphertext_blob;
        ProtobufCMessage *dm = NULL;
        st = kms_tc_call(w->c, KM "Decrypt", &dr.base, &kms__v1__decrypt_response__descriptor, &dm,
                         NULL, 0);
        w->calls++;
        if (st != GRPC_STATUS_OK) {
            wrong(w, "Decrypt of a data key", st);
        } else {
            Kms__V1__DecryptResponse *d = (Kms__V1__DecryptResponse *)dm;
            if (d->plaintext.len != r->plaintext.len ||
                memcmp(d->plaintext.data, r->plaintext.data, d->plaintext.len) != 0 ||
                r->plaintext.len != (i % 12 ? 32u : 16u))
                wrong(w, "data key round trip differs", 0);
            protobuf_c_message_free_unpacked(dm, NULL);
        }
        protobuf_c_message_free_unpacked(m, NULL);
        return;
    }
    case 1: /* Encrypt, Decrypt */
        if ((st = do_encrypt(w, pt, pt_len, "load", blob, &blob_len)) != GRPC_STATUS_OK)
            FAIL("Encrypt", st);
        if ((st = do_decrypt(w, blob, blob_len, "load", out, &n)) != GRPC_STATUS_OK)
            FAIL("Decrypt", st);
        if (n != pt_len || memcmp(out, pt, n) != 0)
            wrong(w, "Encrypt/Decrypt round trip differs", 0);
        return;
    case 2: { /* Encrypt, ReEncrypt to `second`, Decrypt */
        if ((st = do_encrypt(w, pt, pt_len, "a", blob, &blob_len)) != GRPC_STATUS_OK)
            FAIL("Encrypt", st);
        Kms__V1__ReEncryptRequest req = KMS__V1__RE_ENCRYPT_REQUEST__INIT;
        Kms__V1__ReEncryptRequest__SourceEncryptionContextEntry s =
            KMS__V1__RE_ENCRYPT_REQUEST__SOURCE_ENCRYPTION_CONTEXT_ENTRY__INIT;
        Kms__V1__ReEncryptRequest__DestinationEncryptionContextEntry d =
            KMS__V1__RE_ENCRYPT_REQUEST__DESTINATION_ENCRYPTION_CONTEXT_ENTRY__INIT;
        Kms__V1__ReEncryptRequest__SourceEncryptionContextEntry *sp = &s;
        Kms__V1__ReEncryptRequest__DestinationEncryptionContextEntry *dp = &d;
        s.key = d.key = "purpose";
        s.value = "a";
        d.value = "b";
        req.ciphertext_blob.data = blob;
        req.ciphertext_blob.len = blob_len;
        req.source_encryption_context = &sp;
        req.n_source_encryption_context = 1;
        req.destination_key_name = "second";
        req.destination_encryption_context = &dp;
        req.n_destination_encryption_context = 1;
        ProtobufCMessage *m = NULL;
        st = kms_tc_call(w->c, KM "ReEncrypt", &req.base, &kms__v1__re_encrypt_response__descriptor,
                         &m, NULL, 0);
        w->calls++;
        if (st != GRPC_STATUS_OK)
            FAIL("ReEncrypt", st);
        Kms__V1__ReEncryptResponse *r = (Kms__V1__ReEncryptResponse *)m;
        size_t len2 = r->ciphertext_blob.len;
        memcpy(blob2, r->ciphertext_blob.data, len2);
        protobuf_c_message_free_unpacked(m, NULL);
        if ((st = do_decrypt(w, blob2, len2, "b", out, &n)) != GRPC_STATUS_OK)
            FAIL("Decrypt after ReEncrypt", st);
        if (n != pt_len || memcmp(out, pt, n) != 0)
            wrong(w, "ReEncrypt round trip differs", 0);
        return;
    }
    case 3: { /* Health */
        Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
        ProtobufCMessage *m = NULL;
        st = kms_tc_call(w->c, "/grpc.health.v1.Health/Check", &req.base,
                         &grpc__health__v1__health_check_response__descriptor, &m, NULL, 0);
        w->calls++;
        if (st != GRPC_STATUS_OK ||
            ((Grpc__Health__V1__HealthCheckResponse *)m)->status !=
                GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
            wrong(w, "Health", st);
        if (m)
            protobuf_c_message_free_unpacked(m, NULL);
        return;
    }
    case 4: { /* DescribeKey */
        Kms__V1__DescribeKeyRequest req = KMS__V1__DESCRIBE_KEY_REQUEST__INIT;
        req.key_name = "second";
        ProtobufCMessage *m = NULL;
        st = kms_tc_call(w->c, KM "DescribeKey", &req.base,
                         &kms__v1__describe_key_response__descriptor, &m, NULL, 0);
        w->calls++;
        if (st != GRPC_STATUS_OK ||
            strcmp(((Kms__V1__DescribeKeyResponse *)m)->key->key_name, "second") != 0)
            wrong(w, "DescribeKey", st);
        if (m)
            protobuf_c_message_free_unpacked(m, NULL);
        return;
    }
    default: /* a negative: the wrong context must fail, every time */
        if ((st = do_encrypt(w, pt, pt_len, "right", blob, &blob_len)) != GRPC_STATUS_OK)
            FAIL("Encrypt", st);
        if ((st = do_decrypt(w, blob, blob_len, "wrong", out, &n)) != GRPC_STATUS_INVALID_ARGUMENT)
            wrong(w, "Decrypt with a wrong context did not fail", st);
        return;
    }
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    for (unsigned i = (unsigned)w->id; w->calls < CALLS; i++)
        step(w, i);
    return NULL;
}

static void concurrent_mixed_calls(void **state)
{
    (void)state;
    pthread_t t[THREADS];
    struct worker *w = calloc(THREADS, sizeof(*w));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < THREADS; i++) {
        w[i].id = i;
        w[i].c = channels[i % CHANNELS];
        assert_int_equal(pthread_create(&t[i], NULL, run_worker, &w[i]), 0);
    }
    int calls = 0, bad = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        calls += w[i].calls;
        bad += w[i].wrong;
        if (w[i].wrong)
            fprintf(stderr, "%s (%d wrong)\n", w[i].first_error, w[i].wrong);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    fprintf(stderr, "%d calls from %d threads in %.2f s (%.0f calls/s), %d wrong\n", calls, THREADS,
            s, calls / s, bad);
    free(w);
    assert_int_equal(bad, 0);
    assert_true(calls >= THREADS * CALLS);

    /* Still serving. */
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    assert_int_equal(
        kms_tc_call(channels[0], "/grpc.health.v1.Health/Check", &req.base, NULL, NULL, NULL, 0),
        GRPC_STATUS_OK);
}

/* Phase 2: calls in flight until kmsd is gone. */
static atomic_int flood_steps;

static void *flood(void *arg)
{
    struct worker *w = arg;
    for (unsigned i = (unsigned)w->id; !atomic_load(w->stop); i++) {
        step(w, i);
        atomic_fetch_add(&flood_steps, 1);
    }
    return NULL;
}

static void sigterm_under_load_exits_cleanly(void **state)
{
    (void)state;
    enum { N = 16 };
    pthread_t t[N];
    struct worker w[N];
    atomic_int stop = 0;
    memset(w, 0, sizeof(w));
    for (int i = 0; i < N; i++) {
        w[i].id = i;
        w[i].c = channels[i % CHANNELS];
        w[i].stop = &stop;
        assert_int_equal(pthread_create(&t[i], NULL, flood, &w[i]), 0);
    }
    struct timespec ts = {0, 500 * 1000 * 1000};
    nanosleep(&ts, NULL);
    int before = atomic_load(&flood_steps);
    int status = kms_test_kmsd_stop(&K, SIGTERM);
    atomic_store(&stop, 1);
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    fprintf(stderr, "SIGTERM after %d mixed steps under load: kmsd exit status %d\n", before,
            status);
    assert_true(before > 0);
    assert_int_equal(status, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(concurrent_mixed_calls),
        cmocka_unit_test(sigterm_under_load_exits_cleanly),
    };
    return KMS_RUN_GROUP(tests, group_setup, group_teardown);
}
