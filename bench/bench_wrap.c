/* Wrap/unwrap throughput through the PKCS#11 backend (and through the
 * keyring, which adds the store's nonce leases), next to a raw C_Encrypt
 * loop on the same SoftHSM2 token, the same key and the same GCM
 * parameters, in the same run.
 *
 *   bench_wrap [seconds-per-case]      (default 2)
 *
 * Makes its own token in a temp dir (module and softhsm2-util paths are
 * compiled in from CMake; the environment may override them). The raw loop
 * gives each thread its own session and does nothing but C_EncryptInit +
 * C_Encrypt: it is the ceiling. The cases run in interleaved rounds (raw,
 * wrap, unwrap, ..., raw, wrap, ...) and each reports its median round, so
 * a burst of other work on a shared 2-core machine hits every case alike
 * instead of one; the min-max of the rounds shows how noisy the run was.
 * The seconds given are per case, split over the rounds.
 * Target (docs/benchmarks.md): backend wrap >= 80 % of the raw loop, with 1 and 2
 * threads. Tests never assert timings; this program only reports them. */
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kmsd/keyring/blob.h"
#include "kmsd/keyring/keyring.h"
#include "pkcs11/kms_p11.h"
#include "pkcs11/p11_pkcs11.h"
#include "softhsm_fixture.h"

#define PAYLOAD 32
#define MAX_THREADS 2
#define MAX_SAMPLES 2000000 /* per case, over all rounds */
#define ROUNDS 5

enum mode { RAW_ENCRYPT, BACKEND_WRAP, BACKEND_UNWRAP, KEYRING_WRAP, KEYRING_UNWRAP };

static const char *const mode_names[] = {"raw C_Encrypt loop", "backend wrap", "backend unwrap",
                                         "keyring wrap (+store)", "keyring unwrap"};

struct shared {
    double seconds;
    kms_test_token token;
    kms_backend *backend;
    kms_backend_key *key;
    kms_store *store;
    kms_keyring *kr;
    CK_FUNCTION_LIST_PTR f;
    CK_SLOT_ID slot;
    uint8_t cka_id[20];
    /* a wrapped sample for the unwrap cases */
    uint8_t ct[PAYLOAD];
    uint8_t iv[12], tag[16];
    uint8_t blob[KMS_BLOB_MAX];
    size_t blob_len;
};

struct worker {
    struct shared *sh;
    enum mode mode;
    int index;
    double seconds;
    uint32_t *lat_ns; /* this round's latency samples */
    size_t n, cap;
    int errors;
};

static const uint8_t aad[] = "bench aad";
static const kms_context_pair ctx_pairs[] = {{"purpose", 7, "bench", 5}};
static const kms_context ctx = {ctx_pairs, 1};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A session of this thread's own, and the key's handle in it. */
static CK_SESSION_HANDLE raw_session(struct shared *sh, CK_OBJECT_HANDLE *key)
{
    CK_SESSION_HANDLE s;
    if (sh->f->C_OpenSession(sh->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s) !=
        CKR_OK)
        return CK_INVALID_HANDLE;
    CK_ATTRIBUTE t[] = {{CKA_ID, sh->cka_id, sizeof(sh->cka_id)}};
    CK_ULONG n = 0;
    if (sh->f->C_FindObjectsInit(s, t, 1) != CKR_OK ||
        sh->f->C_FindObjects(s, key, 1, &n) != CKR_OK || sh->f->C_FindObjectsFinal(s) != CKR_OK ||
        n != 1) {
        sh->f->C_CloseSession(s);
        return CK_INVALID_HANDLE;
    }
    return s;
}

static void *run(void *arg)
{
    struct worker *w = arg;
    struct shared *sh = w->sh;
    uint8_t pt[PAYLOAD] = {1}, out[PAYLOAD + 16];
    /* The raw loop's IVs: thread index ‖ counter, never repeated under the
     * key (the bench key is a real key on the token). */
    uint8_t iv[12] = {(uint8_t)w->index};
    uint64_t counter = 0;
    CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
    CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
    if (w->mode == RAW_ENCRYPT && (s = raw_session(sh, &key)) == CK_INVALID_HANDLE) {
        w->errors++;
        return NULL;
    }
    uint64_t end = now_ns() + (uint64_t)(w->seconds * 1e9);
    for (;;) {
        uint64_t t0 = now_ns();
        if (t0 >= end)
            break;
        int ok = 0;
        switch (w->mode) {
        case RAW_ENCRYPT: {
            counter++;
            memcpy(iv + 4, &counter, sizeof(counter));
            CK_GCM_PARAMS g = {iv, 12, 96, (CK_BYTE_PTR)aad, sizeof(aad), 128};
            CK_MECHANISM m = {CKM_AES_GCM, &g, sizeof(g)};
            CK_ULONG n = sizeof(out);
            ok = sh->f->C_EncryptInit(s, &m, key) == CKR_OK &&
                 sh->f->C_Encrypt(s, pt, PAYLOAD, out, &n) == CKR_OK;
            break;
        }
        case BACKEND_WRAP: {
            kms_aead_io io = {
                .aad = aad, .aad_len = sizeof(aad), .in = pt, .in_len = PAYLOAD, .out = out};
            ok = sh->backend->ops->wrap(sh->backend, sh->key, &io) == KMS_OK;
            break;
        }
        case BACKEND_UNWRAP: {
            kms_aead_io io = {
                .aad = aad, .aad_len = sizeof(aad), .in = sh->ct, .in_len = PAYLOAD, .out = out};
            memcpy(io.iv, sh->iv, 12);
            memcpy(io.tag, sh->tag, 16);
            ok = sh->backend->ops->unwrap(sh->backend, sh->key, &io) == KMS_OK;
            break;
        }
        case KEYRING_WRAP: {
            uint8_t blob[KMS_BLOB_MAX];
            size_t len;
            ok = kms_keyring_wrap(sh->kr, "bench", &ctx, pt, PAYLOAD, blob, sizeof(blob), &len,
                                  NULL) == KMS_OK;
            break;
        }
        default: {
            kms_secret *p = NULL;
            ok = kms_keyring_unwrap(sh->kr, sh->blob, sh->blob_len, &ctx, &p, NULL, NULL) == KMS_OK;
            kms_secret_free(p);
            break;
        }
        }
        uint64_t dt = now_ns() - t0;
        if (!ok)
            w->errors++;
        else if (w->n < w->cap)
            w->lat_ns[w->n++] = dt > UINT32_MAX ? UINT32_MAX : (uint32_t)dt;
    }
    if (s != CK_INVALID_HANDLE)
        sh->f->C_CloseSession(s);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* One case (mode, thread count) over all rounds. */
struct result {
    double rates[ROUNDS]; /* ops/s of each round */
    uint32_t *lat_ns;     /* latency samples of all rounds */
    size_t n;
    int errors;
};

/* Runs one round of a case for `seconds` with `threads` threads and adds
 * its rate and samples to res. */
static int bench_round(struct shared *sh, enum mode mode, int threads, double seconds, int round,
                       struct result *res)
{
    struct worker w[MAX_THREADS];
    pthread_t t[MAX_THREADS];
    int started = 0, r = 0;
    for (int i = 0; i < threads; i++) {
        w[i] = (struct worker){sh, mode,        i, seconds, malloc(MAX_SAMPLES * sizeof(uint32_t)),
                               0,  MAX_SAMPLES, 0};
        if (w[i].lat_ns == NULL || pthread_create(&t[i], NULL, run, &w[i]) != 0) {
            free(w[i].lat_ns);
            r = -1;
            break;
        }
        started++;
    }
    size_t total = 0;
    for (int i = 0; i < started; i++) {
        pthread_join(t[i], NULL);
        total += w[i].n;
        res->errors += w[i].errors;
        size_t keep = w[i].n;
        if (keep > MAX_SAMPLES - res->n)
            keep = MAX_SAMPLES - res->n;
        memcpy(res->lat_ns + res->n, w[i].lat_ns, keep * sizeof(uint32_t));
        res->n += keep;
        free(w[i].lat_ns);
    }
    res->rates[round] = (double)total / seconds;
    if (r != 0)
        fprintf(stderr, "bench: cannot start a worker\n");
    return r;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median_rate(const struct result *r)
{
    double v[ROUNDS];
    memcpy(v, r->rates, sizeof(v));
    qsort(v, ROUNDS, sizeof(double), cmp_double);
    return ROUNDS % 2 ? v[ROUNDS / 2] : (v[ROUNDS / 2 - 1] + v[ROUNDS / 2]) / 2;
}

static void row(const char *name, int threads, struct result *r, double raw, int target)
{
    double rate = median_rate(r);
    qsort(r->lat_ns, r->n, sizeof(uint32_t), cmp_u32);
    double p50 = r->n ? r->lat_ns[r->n / 2] / 1000.0 : 0;
    double p99 = r->n ? r->lat_ns[r->n * 99 / 100] / 1000.0 : 0;
    double lo = r->rates[0], hi = r->rates[0];
    for (int i = 1; i < ROUNDS; i++) {
        lo = r->rates[i] < lo ? r->rates[i] : lo;
        hi = r->rates[i] > hi ? r->rates[i] : hi;
    }
    char vs[24] = "(reference)", goal[32] = "";
    if (raw > 0)
        snprintf(vs, sizeof(vs), "%6.1f %%", 100.0 * rate / raw);
    if (target)
        snprintf(goal, sizeof(goal), ">= 80 %%: %s", rate >= 0.8 * raw ? "met" : "MISSED");
    printf("%-22s %3d %9.0f  %7.0f-%-7.0f %8.1f %8.1f  %11s  %s%s\n", name, threads, rate, lo, hi,
           p50, p99, vs, goal, r->errors ? "  ERRORS" : "");
}

static int setup(struct shared *sh)
{
    kms_test_token_create(&sh->token, "kms-bench");
    kms_p11_config pc = kms_test_token_p11_config(&sh->token);
    char db[400];
    snprintf(db, sizeof(db), "%s/bench.db", sh->token.dir);
    kms_backend_ref ref;
    uint8_t key_id[16];
    if (RAND_bytes(key_id, sizeof(key_id)) != 1 || kms_p11_open(&pc, &sh->backend) != KMS_OK ||
        sh->backend->ops->create_version(sh->backend, key_id, 1, &ref) != KMS_OK ||
        sh->backend->ops->open_version(sh->backend, &ref, &sh->key) != KMS_OK ||
        kms_store_sqlite_open(db, &sh->store) != KMS_OK ||
        kms_keyring_open(sh->store, NULL, &sh->kr) != KMS_OK ||
        kms_keyring_add_backend(sh->kr, sh->backend) != KMS_OK ||
        kms_keyring_create_key(sh->kr, "bench", "pkcs11", NULL) != KMS_OK)
        return -1;
    memcpy(sh->cka_id, ref.bytes, 20);
    /* The module instance the backend loaded, for the raw loop. */
    if ((sh->f = kms_test_token_functions(&sh->token, &sh->slot)) == NULL)
        return -1;

    uint8_t pt[PAYLOAD] = {1};
    kms_aead_io io = {
        .in = pt, .in_len = PAYLOAD, .out = sh->ct, .aad = aad, .aad_len = sizeof(aad)};
    if (sh->backend->ops->wrap(sh->backend, sh->key, &io) != KMS_OK)
        return -1;
    memcpy(sh->iv, io.iv, 12);
    memcpy(sh->tag, io.tag, 16);
    if (kms_keyring_wrap(sh->kr, "bench", &ctx, pt, PAYLOAD, sh->blob, sizeof(sh->blob),
                         &sh->blob_len, NULL) != KMS_OK)
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    static struct shared sh;
    sh.seconds = 2.0;
    if (argc > 1) {
        char *end;
        sh.seconds = strtod(argv[1], &end);
        if (*end != '\0' || !(sh.seconds > 0 && sh.seconds <= 600)) {
            fprintf(stderr, "usage: bench_wrap [seconds-per-case (0..600], default 2]\n");
            return 2;
        }
    }
    setenv("KMS_SOFTHSM_MODULE", KMS_SOFTHSM_MODULE_PATH, 0);
    setenv("KMS_SOFTHSM_UTIL", KMS_SOFTHSM_UTIL_PATH, 0);
    if (setup(&sh) != 0) {
        fprintf(stderr, "bench: set-up failed: %s\n", kms_error_detail());
        return 1;
    }

    printf("kms bench_wrap: AES-256-GCM, %d-byte payloads, %zu-byte AAD, SoftHSM2 token, "
           "CKA_PRIVATE key\n"
           "%d interleaved rounds of %.2f s per case; ops/s is the median round "
           "(min-max beside it), latency over all rounds\n\n",
           PAYLOAD, sizeof(aad), ROUNDS, sh.seconds / ROUNDS);
    printf("%-22s %3s %9s  %-15s %8s %8s  %11s  %s\n", "case", "thr", "ops/s", "rounds min-max",
           "p50 us", "p99 us", "vs raw", "target");
    static struct result res[KEYRING_UNWRAP + 1];
    for (int m = 0; m <= KEYRING_UNWRAP; m++)
        if ((res[m].lat_ns = malloc(MAX_SAMPLES * sizeof(uint32_t))) == NULL)
            return 1;
    /* Warm-up (CPU frequency, SoftHSM's caches), not shown. */
    int failed = bench_round(&sh, RAW_ENCRYPT, 1, 0.25, 0, &res[RAW_ENCRYPT]);
    for (int threads = 1; threads <= MAX_THREADS && !failed; threads++) {
        for (int m = 0; m <= KEYRING_UNWRAP; m++) {
            free(res[m].lat_ns);
            memset(&res[m], 0, sizeof(res[m]));
            if ((res[m].lat_ns = malloc(MAX_SAMPLES * sizeof(uint32_t))) == NULL)
                return 1;
        }
        for (int round = 0; round < ROUNDS && !failed; round++)
            for (int m = 0; m <= KEYRING_UNWRAP && !failed; m++)
                failed |=
                    bench_round(&sh, (enum mode)m, threads, sh.seconds / ROUNDS, round, &res[m]);
        if (failed)
            break;
        double raw = median_rate(&res[RAW_ENCRYPT]);
        for (int m = 0; m <= KEYRING_UNWRAP; m++)
            row(mode_names[m], threads, &res[m], m == RAW_ENCRYPT ? 0 : raw, m == BACKEND_WRAP);
        printf("\n");
    }
    for (int m = 0; m <= KEYRING_UNWRAP; m++)
        free(res[m].lat_ns);
    sh.backend->ops->release_version(sh.backend, sh.key);
    kms_keyring_close(sh.kr);
    sh.store->ops->close(sh.store);
    sh.backend->ops->close(sh.backend);
    kms_test_token_destroy(&sh.token);
    return failed ? 1 : 0;
}
