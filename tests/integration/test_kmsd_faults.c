/* kmsd under token faults: a real kmsd whose pkcs11.module is the fault
 * module (tests/p11shim), forwarding to a real SoftHSM2 token, driven by 16
 * client threads doing GenerateDataKey + Decrypt (and Decrypt of blobs made
 * before the faults, whose plaintext is known).
 *
 * For each schedule: every answer is correct or a clean UNAVAILABLE (zero
 * wrong plaintexts, no other status, kmsd still running); after the fault
 * window kmsd serves again within 5 s on sessions opened after the window
 * (fresh handles); at the end C_OpenSession and C_CloseSession balance in
 * the module's own counts (no session leaked). The sticky device-error mode
 * (every call CKR_SESSION_HANDLE_INVALID after one CKR_DEVICE_ERROR until
 * the module is initialized again) recovers: kmsd re-initializes the
 * module. A module whose C_Initialize fails stops kmsd at start, naming it.
 *
 * Shown to fail: without the re-initialization in kms_p11_pool_heal
 * (pkcs11/p11_session.c), sticky_device_error_recovers fails (never
 * serving again: every heal's C_OpenSession keeps failing, 63 ok and 9260
 * UNAVAILABLE in the window); with the module's count skipping the
 * sessions C_CloseAllSessions ends, no_session_leaked fails (opens 614,
 * closes 0: kmsd closes its pool with C_CloseAllSessions). The workers'
 * wrong-plaintext check: with the PKCS#11 backend's unwrap passing on what
 * the token left in its output buffer when C_Decrypt returned
 * CKR_DEVICE_REMOVED (as if it had succeeded; unwrap_op in
 * pkcs11/p11_backend.c), session_loss_window fails with "thread 2: wrong
 * plaintext for a known blob" (3 wrong in 624 OK answers, 0x3 != 0). */
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
#include <unistd.h>

#include <cmocka.h>
#include <grpc/grpc.h>
#include <grpc/status.h>

#define THREADS 16
#include "group_run.h"
#include "grpc_test_client.h"
#include "kms/v1/kms.pb-c.h"
#include "kmsd_fixture.h"

#define KM "/kms.v1.KeyManagement/"
#define CHANNELS 4
#define KNOWN 8

static kms_test_kmsd K;
static kms_tc *channels[CHANNELS];
static char shim_conf[400], shim_stats[400];

/* Blobs made before any fault, and their plaintexts. */
static uint8_t known_blob[KNOWN][256];
static size_t known_blob_len[KNOWN];
static char known_pt[KNOWN][32];

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Replaces the module's schedule (a new file renamed over the old, so the
 * module never reads half of it) and waits until it has been read. */
static void schedule(const char *rules)
{
    char tmp[420];
    snprintf(tmp, sizeof(tmp), "%s.new", shim_conf);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    fprintf(f, "stats %s\n%s\n", shim_stats, rules);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, shim_conf), 0);
    sleep_ms(150); /* the module polls every 20 ms */
}

/* A counter from the module's stats file; -1 if absent. */
static long stat_of(const char *name)
{
    FILE *f = fopen(shim_stats, "r");
    if (f == NULL)
        return -1;
    char line[128];
    long v = -1;
    size_t n = strlen(name);
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, name, n) == 0 && line[n] == ' ') {
            char *end;
            v = strtol(line + n + 1, &end, 10);
            break;
        }
    fclose(f);
    return v;
}

static long fresh_stat(const char *name)
{
    sleep_ms(250); /* written every 100 ms */
    return stat_of(name);
}

/* Rewrites kmsd.yaml's module line to the fault module. */
static void use_shim(void)
{
    FILE *f = fopen(K.config, "r");
    assert_non_null(f);
    static char text[16384];
    size_t len = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[len] = '\0';
    const char *shim = getenv("KMS_P11SHIM");
    assert_non_null(shim);
    char *at = strstr(text, K.token.module);
    assert_non_null(at);
    f = fopen(K.config, "w");
    assert_non_null(f);
    fwrite(text, 1, (size_t)(at - text), f);
    fputs(shim, f);
    fputs(at + strlen(K.token.module), f);
    assert_int_equal(fclose(f), 0);
}

typedef Kms__V1__EncryptRequest__EncryptionContextEntry EncCtx;

static int group_setup(void **state)
{
    (void)state;
    grpc_init();
    kms_test_kmsd_setup(&K); /* `kmsd init` on SoftHSM2 itself */
    char dir[320];
    kms_test_kmsd_dir(&K, dir, sizeof(dir));
    snprintf(shim_conf, sizeof(shim_conf), "%s/p11shim.conf", dir);
    snprintf(shim_stats, sizeof(shim_stats), "%s/p11shim.stats", dir);
    setenv("KMS_P11SHIM_MODULE", K.token.module, 1);
    setenv("KMS_P11SHIM_CONFIG", shim_conf, 1);
    FILE *f = fopen(shim_conf, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "stats %s\n", shim_stats);
    fclose(f);
    use_shim();
    const char *extra[] = {"--log-level", "error", NULL};
    kms_test_kmsd_start(&K, extra);
    for (int i = 0; i < CHANNELS; i++) {
        kms_test_creds c;
        kms_test_kmsd_creds(&K, "app", &c);
        if (kms_tc_open(K.target, c.ca, c.cert, c.key, &channels[i]) != 0)
            return -1;
        kms_tc_set_timeout(channels[i], 20000);
    }
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

/* ---- the load --------------------------------------------------------------------------- */

struct worker {
    int id;
    kms_tc *c;
    atomic_int *stop;
    int ok, unavailable, internal, other, wrong;
    char first_error[200];
};

static void note(struct worker *w, int st, const char *what)
{
    if (st == GRPC_STATUS_UNAVAILABLE) {
        w->unavailable++;
        return;
    }
    if (st == GRPC_STATUS_INTERNAL)
        w->internal++;
    else
        w->other++;
    if (w->internal + w->other == 1)
        snprintf(w->first_error, sizeof(w->first_error), "thread %d: %s: status %d", w->id, what,
                 st);
}

static void wrong(struct worker *w, const char *what)
{
    if (w->wrong++ == 0)
        snprintf(w->first_error, sizeof(w->first_error), "thread %d: %s", w->id, what);
}

/* GenerateDataKey then Decrypt of its blob: the same key back, or a
 * failure status. */
static void gdk_round(struct worker *w)
{
    Kms__V1__GenerateDataKeyRequest req = KMS__V1__GENERATE_DATA_KEY_REQUEST__INIT;
    req.key_name = "demo";
    req.key_spec = KMS__V1__KEY_SPEC__AES_256;
    ProtobufCMessage *m = NULL;
    int st = kms_tc_call(w->c, KM "GenerateDataKey", &req.base,
                         &kms__v1__generate_data_key_response__descriptor, &m, NULL, 0);
    if (st != GRPC_STATUS_OK) {
        note(w, st, "GenerateDataKey");
        return;
    }
    w->ok++;
    Kms__V1__GenerateDataKeyResponse *r = (Kms__V1__GenerateDataKeyResponse *)m;
    if (r->plaintext.len != 32)
        wrong(w, "data key of the wrong length");
    Kms__V1__DecryptRequest dr = KMS__V1__DECRYPT_REQUEST__INIT;
    dr.ciphertext_blob = r->ciphertext_blob;
    ProtobufCMessage *dm = NULL;
    st = kms_tc_call(w->c, KM "Decrypt", &dr.base, &kms__v1__decrypt_response__descriptor, &dm,
                     NULL, 0);
    if (st != GRPC_STATUS_OK) {
        note(w, st, "Decrypt of a data key");
    } else {
        w->ok++;
        Kms__V1__DecryptResponse *d = (Kms__V1__DecryptResponse *)dm;
        if (d->plaintext.len != r->plaintext.len ||
            memcmp(d->plaintext.data, r->plaintext.data, d->plaintext.len) != 0)
            wrong(w, "wrong plaintext for a data key");
        protobuf_c_message_free_unpacked(dm, NULL);
    }
    protobuf_c_message_free_unpacked(m, NULL);
}

/* Decrypt of a blob made before the faults. */
static void known_round(struct worker *w, unsigned i)
{
    Kms__V1__DecryptRequest req = KMS__V1__DECRYPT_REQUEST__INIT;
    Kms__V1__DecryptRequest__EncryptionContextEntry e =
        KMS__V1__DECRYPT_REQUEST__ENCRYPTION_CONTEXT_ENTRY__INIT;
    Kms__V1__DecryptRequest__EncryptionContextEntry *ep = &e;
    e.key = "purpose";
    e.value = "faults";
    req.ciphertext_blob.data = known_blob[i % KNOWN];
    req.ciphertext_blob.len = known_blob_len[i % KNOWN];
    req.encryption_context = &ep;
    req.n_encryption_context = 1;
    ProtobufCMessage *m = NULL;
    int st = kms_tc_call(w->c, KM "Decrypt", &req.base, &kms__v1__decrypt_response__descriptor, &m,
                         NULL, 0);
    if (st != GRPC_STATUS_OK) {
        note(w, st, "Decrypt of a known blob");
        return;
    }
    w->ok++;
    Kms__V1__DecryptResponse *d = (Kms__V1__DecryptResponse *)m;
    const char *want = known_pt[i % KNOWN];
    if (d->plaintext.len != strlen(want) || memcmp(d->plaintext.data, want, d->plaintext.len) != 0)
        wrong(w, "wrong plaintext for a known blob");
    protobuf_c_message_free_unpacked(m, NULL);
}

static void *work(void *arg)
{
    struct worker *w = arg;
    for (unsigned i = (unsigned)w->id; !atomic_load(w->stop); i++) {
        if (i % 2)
            gdk_round(w);
        else
            known_round(w, i);
    }
    return NULL;
}

struct totals {
    int ok, unavailable, internal, other, wrong;
};

/* 16 threads for ms milliseconds. */
static struct totals load_for(unsigned ms)
{
    pthread_t t[THREADS];
    struct worker w[THREADS];
    atomic_int stop = 0;
    memset(w, 0, sizeof(w));
    for (int i = 0; i < THREADS; i++) {
        w[i].id = i;
        w[i].c = channels[i % CHANNELS];
        w[i].stop = &stop;
        assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    sleep_ms(ms);
    atomic_store(&stop, 1);
    struct totals s = {0};
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        s.ok += w[i].ok;
        s.unavailable += w[i].unavailable;
        s.internal += w[i].internal;
        s.other += w[i].other;
        s.wrong += w[i].wrong;
        if (w[i].first_error[0] != '\0')
            fprintf(stderr, "  %s\n", w[i].first_error);
    }
    fprintf(stderr,
            "  %u ms x %d threads: %d ok, %d UNAVAILABLE, %d INTERNAL, %d other, %d wrong\n", ms,
            THREADS, s.ok, s.unavailable, s.internal, s.other, s.wrong);
    return s;
}

/* Milliseconds until one GenerateDataKey + Decrypt succeeds (polling every
 * 50 ms), or UINT64_MAX after limit_ms. */
static uint64_t serving_again(uint64_t limit_ms)
{
    uint64_t t0 = now_ms();
    atomic_int stop = 0;
    while (now_ms() - t0 < limit_ms) {
        struct worker w;
        memset(&w, 0, sizeof(w));
        w.c = channels[0];
        w.stop = &stop;
        gdk_round(&w);
        if (w.ok == 2 && w.wrong == 0)
            return now_ms() - t0;
        sleep_ms(50);
    }
    return UINT64_MAX;
}

/* A fault window on the data path, then recovery. */
static void window(const char *rules, unsigned window_ms, int internal_is_clean)
{
    long opens_before = fresh_stat("opens");
    long injected_before = stat_of("injected");
    schedule(rules);
    struct totals s = load_for(window_ms + 500);
    assert_int_equal(s.wrong, 0);
    assert_int_equal(s.other, 0);
    if (!internal_is_clean)
        assert_int_equal(s.internal, 0);
    assert_true(s.unavailable + s.internal > 0); /* the faults reached clients */
    assert_true(fresh_stat("injected") > injected_before);
    schedule(""); /* the window is over in any case */
    uint64_t ms = serving_again(5000);
    fprintf(stderr, "  serving again %llu ms after the window\n", (unsigned long long)ms);
    assert_true(ms <= 5000);
    if (!internal_is_clean)
        assert_true(fresh_stat("opens") > opens_before); /* sessions were re-opened */
    s = load_for(500);
    assert_int_equal(s.wrong, 0);
    assert_int_equal(s.unavailable + s.internal + s.other, 0);
}

/* ---- the cases ---------------------------------------------------------------------------- */

static void baseline_without_faults(void **state)
{
    (void)state;
    for (int i = 0; i < KNOWN; i++) {
        snprintf(known_pt[i], sizeof(known_pt[i]), "known plaintext %d", i);
        Kms__V1__EncryptRequest req = KMS__V1__ENCRYPT_REQUEST__INIT;
        EncCtx e = KMS__V1__ENCRYPT_REQUEST__ENCRYPTION_CONTEXT_ENTRY__INIT;
        EncCtx *ep = &e;
        e.key = "purpose";
        e.value = "faults";
        req.key_name = "demo";
        req.plaintext.data = (uint8_t *)known_pt[i];
        req.plaintext.len = strlen(known_pt[i]);
        req.encryption_context = &ep;
        req.n_encryption_context = 1;
        ProtobufCMessage *m = NULL;
        assert_int_equal(kms_tc_call(channels[0], KM "Encrypt", &req.base,
                                     &kms__v1__encrypt_response__descriptor, &m, NULL, 0),
                         GRPC_STATUS_OK);
        Kms__V1__EncryptResponse *r = (Kms__V1__EncryptResponse *)m;
        assert_true(r->ciphertext_blob.len <= sizeof(known_blob[i]));
        memcpy(known_blob[i], r->ciphertext_blob.data, r->ciphertext_blob.len);
        known_blob_len[i] = r->ciphertext_blob.len;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    struct totals s = load_for(1000);
    assert_int_equal(s.wrong, 0);
    assert_int_equal(s.unavailable + s.internal + s.other, 0);
    assert_true(s.ok > 0);
    assert_true(fresh_stat("opens") > 0); /* kmsd does go through the module */
}

/* Sessions lost, the device removed, the token gone, delays: at a rate,
 * for a window of 2 s. */
static void session_loss_window(void **state)
{
    (void)state;
    window("fault C_Encrypt CKR_SESSION_HANDLE_INVALID rate=0.2 for=2000\n"
           "fault C_Decrypt CKR_DEVICE_REMOVED rate=0.2 for=2000\n"
           "fault C_DecryptInit CKR_TOKEN_NOT_PRESENT rate=0.05 for=2000\n"
           "fault C_OpenSession CKR_TOKEN_NOT_PRESENT rate=0.5 for=2000\n"
           "delay C_Encrypt 3 rate=0.1 for=2000\n",
           2000, 0);
}

/* The device fails outright: every call for 1.5 s, then it is back. */
static void device_error_window(void **state)
{
    (void)state;
    window("fault * CKR_DEVICE_ERROR after=200 for=1500\n", 1700, 0);
}

/* CKR_FUNCTION_FAILED is not a session loss: the call fails (INTERNAL, as
 * docs/pkcs11.md maps it), nothing is healed, no plaintext goes out. */
static void function_failed_every_nth(void **state)
{
    (void)state;
    window("fault C_Encrypt CKR_FUNCTION_FAILED every=7 for=1500\n"
           "fault C_Decrypt CKR_FUNCTION_FAILED every=11 for=1500\n",
           1500, 1);
}

/* After CKR_DEVICE_ERROR the module answers every call with
 * CKR_SESSION_HANDLE_INVALID until it is finalized and initialized again. */
static void sticky_device_error_recovers(void **state)
{
    (void)state;
    long inits = fresh_stat("initialize");
    assert_true(inits >= 1);
    schedule("sticky C_Decrypt nth=40\n");
    struct totals s = load_for(1500);
    assert_int_equal(s.wrong, 0);
    assert_int_equal(s.other + s.internal, 0);
    uint64_t ms = serving_again(5000);
    fprintf(stderr, "  serving again %llu ms after the sticky device error\n",
            (unsigned long long)ms);
    assert_true(ms <= 5000);
    assert_true(fresh_stat("initialize") > inits); /* kmsd initialized the module again */
    assert_int_equal(stat_of("sticky"), 0);
    s = load_for(500);
    assert_int_equal(s.wrong, 0);
    assert_int_equal(s.unavailable + s.internal + s.other, 0);
    schedule("");
}

/* kmsd stops cleanly; every session the module opened was closed before
 * C_Finalize. */
static void no_session_leaked(void **state)
{
    (void)state;
    assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
    long opens = stat_of("opens"), closes = stat_of("closes");
    fprintf(stderr, "  module counts: opens %ld, closes %ld, live %ld, dropped %ld, injected %ld\n",
            opens, closes, stat_of("live"), stat_of("dropped"), stat_of("injected"));
    assert_true(opens > 0);
    assert_int_equal(opens, closes);
    assert_int_equal(stat_of("live"), 0);
    assert_int_equal(stat_of("dropped"), 0);
    assert_int_equal(stat_of("finalize"), stat_of("initialize"));
}

/* A module whose C_Initialize fails: kmsd does not start, and says why. */
static void initialize_failure_refuses_start(void **state)
{
    (void)state;
    schedule("fault C_Initialize CKR_DEVICE_ERROR nth=1\n");
    const char *argv[] = {"--config", K.config, "run", NULL};
    static char out[16384];
    int st = kms_test_kmsd_run(argv, out, sizeof(out));
    fprintf(stderr, "  kmsd run: exit %d\n", st);
    assert_int_not_equal(st, 0);
    assert_non_null(strstr(out, "C_Initialize"));
    assert_non_null(strstr(out, "CKR_DEVICE_ERROR"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(baseline_without_faults),
        cmocka_unit_test(session_loss_window),
        cmocka_unit_test(device_error_window),
        cmocka_unit_test(function_failed_every_nth),
        cmocka_unit_test(sticky_device_error_recovers),
        cmocka_unit_test(no_session_leaked),
        cmocka_unit_test(initialize_failure_refuses_start),
    };
    return KMS_RUN_GROUP(tests, group_setup, group_teardown);
}
