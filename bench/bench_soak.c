/* Soak under token faults: a real kmsd on the fault module
 * (tests/p11shim) over a SoftHSM2 token, KMS_SOAK_SECONDS (default 600) of
 * mixed load from 8 client threads (GenerateDataKey + Decrypt, Encrypt +
 * Decrypt), each thread dropping its connection and dialling again every
 * 200 calls, while the module's schedule cycles every 10 s through a quiet
 * phase and fault phases (sessions lost at a rate, the device removed for a
 * window, delays, the sticky device error), and officer1 and officer2
 * rotate `demo` through the quorum every 15 s (blobs under older versions
 * keep decrypting).
 *
 * Reports kmsd's RSS after the warm-up (the first 10 %, at least 5 s) and
 * at the end (target: < 5 % growth), kmsd's open fds and the module's open
 * PKCS#11 sessions at the start and at the end (quiet, no client
 * connected), and the calls by status. Exits 1 on a wrong answer, a status
 * other than OK / UNAVAILABLE, no rotation executed (when rotating), kmsd not exiting 0 on SIGTERM,
 * or fds or sessions not back where they started; RSS growth is printed against its target, not
 * asserted (noisy in short runs).
 *
 * With KMS_SOAK_TRACE=1 it prints kmsd's RSS every 10 s, split into
 * anonymous memory (the heap and thread stacks) and file-backed pages
 * (code and libraries mapped in), and the rotations so far: growth that
 * follows the rotations is held state, growth without them is not.
 *
 *   KMS_SOAK_SECONDS=30 bench_soak
 *   KMS_SOAK_SECONDS=120 KMS_SOAK_ROTATE_MS=0 KMS_SOAK_TRACE=1 bench_soak
 * Needs what the kmsd tests need (run through scripts/test or ctest, which
 * set KMS_KMSD, KMS_DEV_PKI, KMS_SOFTHSM_*, KMS_P11SHIM). */
#include <dirent.h>
#include <signal.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/grpc.h>
#include <grpc/status.h>
#include <openssl/sha.h>

#include "grpc_test_client.h"
#include "kms/v1/kms.pb-c.h"
#include "kmsd_fixture.h"

#define KM "/kms.v1.KeyManagement/"
#define QU "/kms.v1.Quorum/"
#define ROTATE_EVERY_MS 15000 /* KMS_SOAK_ROTATE_MS changes it; 0: no rotation */
#define TRACE_EVERY_MS 10000
#define THREADS 8
#define RECONNECT_EVERY 200
#define NSTATUS 17

static kms_test_kmsd K;
static char shim_conf[400], shim_stats[400];
static atomic_long by_status[NSTATUS + 1]; /* [NSTATUS]: local failures */
static atomic_long wrong_answers;
static atomic_int stop;

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

static void schedule(const char *rules)
{
    char tmp[420];
    snprintf(tmp, sizeof(tmp), "%s.new", shim_conf);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return;
    fprintf(f, "stats %s\n%s\n", shim_stats, rules);
    fclose(f);
    rename(tmp, shim_conf);
}

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

static int open_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void count(int st)
{
    atomic_fetch_add(&by_status[st >= 0 && st < NSTATUS ? st : NSTATUS], 1);
}

static void round_trip(kms_tc *c, unsigned i)
{
    if (i % 2) {
        Kms__V1__GenerateDataKeyRequest req = KMS__V1__GENERATE_DATA_KEY_REQUEST__INIT;
        req.key_name = "demo";
        req.key_spec = KMS__V1__KEY_SPEC__AES_256;
        ProtobufCMessage *m = NULL;
        int st = kms_tc_call(c, KM "GenerateDataKey", &req.base,
                             &kms__v1__generate_data_key_response__descriptor, &m, NULL, 0);
        count(st);
        if (st != GRPC_STATUS_OK)
            return;
        Kms__V1__GenerateDataKeyResponse *r = (Kms__V1__GenerateDataKeyResponse *)m;
        Kms__V1__DecryptRequest dr = KMS__V1__DECRYPT_REQUEST__INIT;
        dr.ciphertext_blob = r->ciphertext_blob;
        ProtobufCMessage *dm = NULL;
        st = kms_tc_call(c, KM "Decrypt", &dr.base, &kms__v1__decrypt_response__descriptor, &dm,
                         NULL, 0);
        count(st);
        if (st == GRPC_STATUS_OK) {
            Kms__V1__DecryptResponse *d = (Kms__V1__DecryptResponse *)dm;
            if (d->plaintext.len != r->plaintext.len ||
                memcmp(d->plaintext.data, r->plaintext.data, d->plaintext.len) != 0)
                atomic_fetch_add(&wrong_answers, 1);
            protobuf_c_message_free_unpacked(dm, NULL);
        }
        protobuf_c_message_free_unpacked(m, NULL);
        return;
    }
    char pt[48];
    snprintf(pt, sizeof(pt), "soak call %u", i);
    Kms__V1__EncryptRequest req = KMS__V1__ENCRYPT_REQUEST__INIT;
    req.key_name = "second";
    req.plaintext.data = (uint8_t *)pt;
    req.plaintext.len = strlen(pt);
    ProtobufCMessage *m = NULL;
    int st = kms_tc_call(c, KM "Encrypt", &req.base, &kms__v1__encrypt_response__descriptor, &m,
                         NULL, 0);
    count(st);
    if (st != GRPC_STATUS_OK)
        return;
    Kms__V1__EncryptResponse *r = (Kms__V1__EncryptResponse *)m;
    Kms__V1__DecryptRequest dr = KMS__V1__DECRYPT_REQUEST__INIT;
    dr.ciphertext_blob = r->ciphertext_blob;
    ProtobufCMessage *dm = NULL;
    st = kms_tc_call(c, KM "Decrypt", &dr.base, &kms__v1__decrypt_response__descriptor, &dm, NULL,
                     0);
    count(st);
    if (st == GRPC_STATUS_OK) {
        Kms__V1__DecryptResponse *d = (Kms__V1__DecryptResponse *)dm;
        if (d->plaintext.len != strlen(pt) || memcmp(d->plaintext.data, pt, strlen(pt)) != 0)
            atomic_fetch_add(&wrong_answers, 1);
        protobuf_c_message_free_unpacked(dm, NULL);
    }
    protobuf_c_message_free_unpacked(m, NULL);
}

static void *client(void *arg)
{
    unsigned i = (unsigned)(uintptr_t)arg * 1000003u;
    kms_test_creds cr;
    kms_test_kmsd_creds(&K, "app", &cr);
    while (!atomic_load(&stop)) {
        kms_tc *c = NULL;
        if (kms_tc_open(K.target, cr.ca, cr.cert, cr.key, &c) != 0) {
            count(-1);
            sleep_ms(100);
            continue;
        }
        for (int n = 0; n < RECONNECT_EVERY && !atomic_load(&stop); n++)
            round_trip(c, i++);
        kms_tc_close(c);
    }
    return NULL;
}

/* ---- rotations through the quorum ------------------------------------------------------- */

/* The approval digest, from its documented format (docs/approvals.md). */
static void digest_of(const Kms__V1__Action *a, uint8_t out[32])
{
    uint8_t msg[16 + 16 + 16 + 32 + 8], h[32];
    memcpy(msg, "kms.v1.approval", 16); /* 15 bytes and the 0x00 */
    memcpy(msg + 16, a->instance_id.data, 16);
    memcpy(msg + 32, a->id.data, 16);
    SHA256(a->action_bytes.data, a->action_bytes.len, h);
    memcpy(msg + 48, h, 32);
    for (int i = 0; i < 8; i++)
        msg[80 + i] = (uint8_t)((uint64_t)a->expires_at >> (56 - 8 * i));
    SHA256(msg, sizeof(msg), out);
}

static int approve(kms_tc *c, const char *officer, const Kms__V1__Action *a, Kms__V1__Action **out)
{
    uint8_t d[32], sig[256];
    if (a->instance_id.len != 16 || a->id.len != 16)
        return -1;
    digest_of(a, d);
    size_t n = kms_test_kmsd_officer_sign(&K, officer, d, sig);
    Kms__V1__ApproveActionRequest req = KMS__V1__APPROVE_ACTION_REQUEST__INIT;
    req.action_id = a->id;
    req.signature.data = sig;
    req.signature.len = n;
    return kms_tc_call(c, QU "ApproveAction", &req.base, &kms__v1__action__descriptor,
                       (ProtobufCMessage **)out, NULL, 0);
}

/* Rotates `demo`: officer1 proposes and approves, officer2 approves (the
 * threshold is 2). 1 if the rotation executed. */
static int rotate(kms_tc *o1, kms_tc *o2)
{
    Kms__V1__RotateKey rk = KMS__V1__ROTATE_KEY__INIT;
    Kms__V1__ActionBody body = KMS__V1__ACTION_BODY__INIT;
    rk.key_name = "demo";
    body.action_case = KMS__V1__ACTION_BODY__ACTION_ROTATE_KEY;
    body.rotate_key = &rk;
    Kms__V1__ProposeActionRequest req = KMS__V1__PROPOSE_ACTION_REQUEST__INIT;
    req.action = &body;
    Kms__V1__Action *a = NULL, *mid = NULL, *done = NULL;
    int executed = 0;
    if (kms_tc_call(o1, QU "ProposeAction", &req.base, &kms__v1__action__descriptor,
                    (ProtobufCMessage **)&a, NULL, 0) == GRPC_STATUS_OK &&
        approve(o1, "officer1", a, &mid) == GRPC_STATUS_OK &&
        approve(o2, "officer2", a, &done) == GRPC_STATUS_OK)
        executed = done->state == KMS__V1__ACTION_STATE__EXECUTED;
    if (a)
        protobuf_c_message_free_unpacked(&a->base, NULL);
    if (mid)
        protobuf_c_message_free_unpacked(&mid->base, NULL);
    if (done)
        protobuf_c_message_free_unpacked(&done->base, NULL);
    return executed;
}

static const char *const phases[] = {
    "",
    "fault C_Encrypt CKR_SESSION_HANDLE_INVALID rate=0.05 for=4000\n"
    "fault C_Decrypt CKR_DEVICE_ERROR rate=0.02 for=4000\n"
    "delay * 1 rate=0.01 for=4000\n",
    "",
    "fault * CKR_DEVICE_REMOVED after=500 for=1500\n",
    "",
    "sticky C_Decrypt nth=200\n",
};

/* Rewrites kmsd.yaml's module line to the fault module. */
static int use_shim(const char *shim)
{
    static char text[16384];
    FILE *f = fopen(K.config, "r");
    if (f == NULL)
        return -1;
    size_t len = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[len] = '\0';
    char *at = strstr(text, K.token.module);
    if (at == NULL || (f = fopen(K.config, "w")) == NULL)
        return -1;
    fwrite(text, 1, (size_t)(at - text), f);
    fputs(shim, f);
    fputs(at + strlen(K.token.module), f);
    return fclose(f);
}

int main(void)
{
    const char *secs_env = getenv("KMS_SOAK_SECONDS");
    const char *shim = getenv("KMS_P11SHIM");
    char *end = NULL;
    unsigned long secs = secs_env ? strtoul(secs_env, &end, 10) : 600;
    if (secs_env != NULL && (end == secs_env || *end != '\0' || secs < 10)) {
        fprintf(stderr, "bench_soak: KMS_SOAK_SECONDS must be a number >= 10\n");
        return 2;
    }
    if (shim == NULL) {
        fprintf(stderr, "bench_soak: KMS_P11SHIM (the fault module) must be set\n");
        return 2;
    }
    const char *rot_env = getenv("KMS_SOAK_ROTATE_MS");
    unsigned long rotate_ms = rot_env ? strtoul(rot_env, &end, 10) : ROTATE_EVERY_MS;
    if (rot_env != NULL &&
        (end == rot_env || *end != '\0' || (rotate_ms != 0 && rotate_ms < 1000))) {
        fprintf(stderr, "bench_soak: KMS_SOAK_ROTATE_MS must be 0 or a number >= 1000\n");
        return 2;
    }
    int trace = getenv("KMS_SOAK_TRACE") != NULL && strcmp(getenv("KMS_SOAK_TRACE"), "1") == 0;
    grpc_init();
    kms_test_kmsd_setup(&K);
    char dir[320];
    kms_test_kmsd_dir(&K, dir, sizeof(dir));
    snprintf(shim_conf, sizeof(shim_conf), "%s/p11shim.conf", dir);
    snprintf(shim_stats, sizeof(shim_stats), "%s/p11shim.stats", dir);
    setenv("KMS_P11SHIM_MODULE", K.token.module, 1);
    setenv("KMS_P11SHIM_CONFIG", shim_conf, 1);
    schedule("");
    if (use_shim(shim) != 0) {
        fprintf(stderr, "bench_soak: cannot rewrite %s\n", K.config);
        return 2;
    }
    const char *extra[] = {"--log-level", "error", NULL};
    kms_test_kmsd_start(&K, extra);
    sleep_ms(500);
    int fds0 = open_fds(K.pid);
    long sess0 = stat_of("live");

    pthread_t t[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, client, (void *)i);
    uint64_t t0 = now_ms(), warm = secs * 100 > 5000 ? secs * 100 : 5000;
    long rss_warm = -1, anon_warm = -1;
    size_t phase = 0;
    uint64_t next_phase = t0 + 10000, next_rotation = t0 + 5000, next_trace = t0;
    kms_tc *o1 = kms_test_kmsd_open_as(&K, "officer1"), *o2 = kms_test_kmsd_open_as(&K, "officer2");
    int rotations = 0, rotations_failed = 0;
    while (now_ms() - t0 < secs * 1000) {
        if (rotate_ms != 0 && now_ms() >= next_rotation) {
            if (rotate(o1, o2))
                rotations++;
            else
                rotations_failed++;
            next_rotation += rotate_ms;
        }
        if (trace && now_ms() >= next_trace) {
            printf("  t=%3llu s: RSS %ld KiB (anon %ld, file %ld), %d rotations\n",
                   (unsigned long long)((now_ms() - t0) / 1000), kms_test_proc_kib(K.pid, "VmRSS:"),
                   kms_test_proc_kib(K.pid, "RssAnon:"), kms_test_proc_kib(K.pid, "RssFile:"),
                   rotations);
            fflush(stdout);
            next_trace += TRACE_EVERY_MS;
        }
        if (rss_warm < 0 && now_ms() - t0 >= warm) {
            rss_warm = kms_test_proc_kib(K.pid, "VmRSS:");
            anon_warm = kms_test_proc_kib(K.pid, "RssAnon:");
        }
        if (now_ms() >= next_phase) {
            phase = (phase + 1) % (sizeof(phases) / sizeof(phases[0]));
            schedule(phases[phase]);
            next_phase += 10000;
        }
        sleep_ms(100);
    }
    schedule("");
    long rss_end = kms_test_proc_kib(K.pid, "VmRSS:");
    long anon_end = kms_test_proc_kib(K.pid, "RssAnon:");
    atomic_store(&stop, 1);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    kms_tc_close(o1);
    kms_tc_close(o2);

    /* Quiet: no client, no fault. Connections close asynchronously. */
    int fds1 = -1;
    long sess1 = -1;
    for (int i = 0; i < 50; i++) {
        sleep_ms(200);
        fds1 = open_fds(K.pid);
        sess1 = stat_of("live");
        if (fds1 == fds0 && sess1 == sess0)
            break;
    }
    int exit_status = kms_test_kmsd_stop(&K, SIGTERM);

    double growth = rss_warm > 0 ? 100.0 * (double)(rss_end - rss_warm) / (double)rss_warm : 0;
    printf(
        "soak: %lu s, %d client threads reconnecting every %d calls, faults cycling every 10 s\n",
        secs, THREADS, RECONNECT_EVERY);
    printf("  kmsd RSS after warm-up %ld KiB, at the end %ld KiB: %+.2f %% (target < 5 %%); "
           "anonymous %ld -> %ld KiB\n",
           rss_warm, rss_end, growth, anon_warm, anon_end);
    printf("  rotations of demo through the quorum: %d executed, %d not (refused during "
           "faults)\n",
           rotations, rotations_failed);
    printf("  kmsd open fds: start %d, end %d\n", fds0, fds1);
    printf("  PKCS#11 sessions open: start %ld, end %ld (module: opens %ld, closes %ld, "
           "injected %ld)\n",
           sess0, sess1, stat_of("opens"), stat_of("closes"), stat_of("injected"));
    long other = 0;
    printf("  calls by status:");
    for (int i = 0; i <= NSTATUS; i++) {
        long n = atomic_load(&by_status[i]);
        if (n == 0)
            continue;
        printf(" %s=%ld",
               i == NSTATUS ? "local-failure"
               : i == 0     ? "OK"
               : i == 14    ? "UNAVAILABLE"
                            : "other",
               n);
        if (i != GRPC_STATUS_OK && i != GRPC_STATUS_UNAVAILABLE)
            other += n;
        if (i != 0 && i != 14 && i != NSTATUS)
            printf("(%d)", i);
    }
    printf("\n  wrong answers: %ld; kmsd exit status %d\n", atomic_load(&wrong_answers),
           exit_status);
    kms_test_kmsd_teardown(&K);
    kms_tc_grpc_shutdown();
    int bad = atomic_load(&wrong_answers) != 0 || other != 0 || exit_status != 0 || fds1 != fds0 ||
              sess1 != sess0 || atomic_load(&by_status[0]) == 0 ||
              (rotate_ms != 0 && rotations == 0);
    printf("soak: %s\n", bad ? "FAILED" : "ok");
    return bad ? 1 : 0;
}
