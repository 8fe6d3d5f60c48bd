/* Wrap/unwrap throughput through the PKCS#11 backend (and through the
 * keyring, which adds the store's nonce leases), next to a raw C_Encrypt
 * loop on the same SoftHSM2 token in the same run.
 *
 *   bench_wrap [seconds-per-case]      (default 2)
 *
 * Makes its own token in a temp dir. Target (DESIGN §10): backend wrap
 * >= 80 % of the raw loop, with 1 and 2 threads. */
#include <dlfcn.h>
#include <openssl/rand.h>
#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kms/blob.h"
#include "kms/keyring.h"
#include "pkcs11/kms_p11.h"
#include "softhsm_fixture.h"

#define PAYLOAD 32
#define MAX_SAMPLES 4000000

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
    uint32_t *lat_ns;
    size_t n, cap;
    int errors;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static CK_SESSION_HANDLE raw_session(struct shared *sh, CK_OBJECT_HANDLE *key)
{
    CK_SESSION_HANDLE s;
    if (sh->f->C_OpenSession(sh->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s) !=
        CKR_OK)
        return CK_INVALID_HANDLE;
    CK_ATTRIBUTE t[] = {{CKA_ID, sh->cka_id, sizeof(sh->cka_id)}};
    CK_ULONG n = 0;
    sh->f->C_FindObjectsInit(s, t, 1);
    sh->f->C_FindObjects(s, key, 1, &n);
    sh->f->C_FindObjectsFinal(s);
    return n == 1 ? s : CK_INVALID_HANDLE;
}

static const kms_context_pair ctx_pairs[] = {{"purpose", 7, "bench", 5}};
static const kms_context ctx = {ctx_pairs, 1};

static void *run(void *arg)
{
    struct worker *w = arg;
    struct shared *sh = w->sh;
    uint8_t pt[PAYLOAD] = {1}, out[PAYLOAD + 16], iv[12] = {0};
    CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
    CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
    if (w->mode == RAW_ENCRYPT && (s = raw_session(sh, &key)) == CK_INVALID_HANDLE) {
        w->errors++;
        return NULL;
    }
    uint64_t end = now_ns() + (uint64_t)(sh->seconds * 1e9);
    for (;;) {
        uint64_t t0 = now_ns();
        if (t0 >= end)
            break;
        int ok = 0;
        switch (w->mode) {
        case RAW_ENCRYPT: {
            CK_GCM_PARAMS g = {iv, 12, 96, (CK_BYTE_PTR) "aad", 3, 128};
            CK_MECHANISM m = {CKM_AES_GCM, &g, sizeof(g)};
            CK_ULONG n = sizeof(out);
            ok = sh->f->C_EncryptInit(s, &m, key) == CKR_OK &&
                 sh->f->C_Encrypt(s, pt, PAYLOAD, out, &n) == CKR_OK;
            iv[0]++; /* a different IV each call, as GCM requires */
            break;
        }
        case BACKEND_WRAP: {
            kms_aead_io io = {.aad = (const uint8_t *)"aad",
                              .aad_len = 3,
                              .in = pt,
                              .in_len = PAYLOAD,
                              .out = out};
            ok = sh->backend->ops->wrap(sh->backend, sh->key, &io) == KMS_OK;
            break;
        }
        case BACKEND_UNWRAP: {
            kms_aead_io io = {.aad = (const uint8_t *)"aad",
                              .aad_len = 3,
                              .in = sh->ct,
                              .in_len = PAYLOAD,
                              .out = out};
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

/* Runs one case; returns ops/s. */
static double bench_case(struct shared *sh, enum mode mode, int threads, double raw_rate)
{
    struct worker w[2];
    pthread_t t[2];
    for (int i = 0; i < threads; i++) {
        w[i] = (struct worker){sh, mode, malloc(MAX_SAMPLES * sizeof(uint32_t)), 0, MAX_SAMPLES, 0};
        pthread_create(&t[i], NULL, run, &w[i]);
    }
    size_t total = 0;
    int errors = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        total += w[i].n;
        errors += w[i].errors;
    }
    uint32_t *all = malloc((total ? total : 1) * sizeof(uint32_t));
    size_t k = 0;
    for (int i = 0; i < threads; i++) {
        memcpy(all + k, w[i].lat_ns, w[i].n * sizeof(uint32_t));
        k += w[i].n;
        free(w[i].lat_ns);
    }
    qsort(all, total, sizeof(uint32_t), cmp_u32);
    double rate = (double)total / sh->seconds;
    double p50 = total ? all[total / 2] / 1000.0 : 0,
           p99 = total ? all[total * 99 / 100] / 1000.0 : 0;
    free(all);
    char vs[48] = "(the limit)";
    if (mode != RAW_ENCRYPT && raw_rate > 0)
        snprintf(vs, sizeof(vs), "%5.1f %% of raw%s", 100.0 * rate / raw_rate,
                 mode == BACKEND_WRAP ? (rate >= 0.8 * raw_rate ? "  target >= 80 %: met"
                                                                : "  target >= 80 %: MISSED")
                                      : "");
    printf("%-24s %d thr %10.0f ops/s  p50 %7.1f us  p99 %7.1f us  %s%s\n", mode_names[mode],
           threads, rate, p50, p99, vs, errors ? "  ERRORS" : "");
    return rate;
}

int main(int argc, char **argv)
{
    static struct shared sh;
    sh.seconds = argc > 1 ? strtod(argv[1], NULL) : 2.0;
    if (sh.seconds <= 0)
        sh.seconds = 2.0;
    setenv("KMS_SOFTHSM_MODULE", KMS_SOFTHSM_MODULE_PATH, 0);
    setenv("KMS_SOFTHSM_UTIL", KMS_SOFTHSM_UTIL_PATH, 0);
    kms_test_token_create(&sh.token, "kms-bench");
    kms_p11_config pc = {.module_path = sh.token.module,
                         .token_label = sh.token.label,
                         .pin_file = sh.token.pin_file,
                         .sessions = 4};
    char db[400];
    snprintf(db, sizeof(db), "%s/bench.db", sh.token.dir);
    kms_backend_ref ref;
    uint8_t key_id[16];
    RAND_bytes(key_id, sizeof(key_id));
    if (kms_p11_open(&pc, &sh.backend) != KMS_OK ||
        sh.backend->ops->create_version(sh.backend, key_id, 1, &ref) != KMS_OK ||
        sh.backend->ops->open_version(sh.backend, &ref, &sh.key) != KMS_OK ||
        kms_store_sqlite_open(db, &sh.store) != KMS_OK ||
        kms_keyring_open(sh.store, NULL, &sh.kr) != KMS_OK ||
        kms_keyring_add_backend(sh.kr, sh.backend) != KMS_OK ||
        kms_keyring_create_key(sh.kr, "bench", "pkcs11", NULL) != KMS_OK) {
        fprintf(stderr, "bench: set-up failed: %s\n", kms_error_detail());
        return 1;
    }
    memcpy(sh.cka_id, ref.bytes, 20);
    /* The same module instance the backend loaded, for the raw loop. */
    void *dl = dlopen(sh.token.module, RTLD_NOW | RTLD_NODELETE);
    CK_C_GetFunctionList get;
    void *sym = dlsym(dl, "C_GetFunctionList");
    memcpy(&get, &sym, sizeof(get));
    get(&sh.f);
    CK_SLOT_ID slots[16];
    CK_ULONG nslots = 16;
    sh.f->C_GetSlotList(CK_TRUE, slots, &nslots);
    for (CK_ULONG i = 0; i < nslots; i++) {
        CK_TOKEN_INFO ti;
        if (sh.f->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
            memcmp(ti.label, "kms-bench ", 10) == 0)
            sh.slot = slots[i];
    }

    uint8_t pt[PAYLOAD] = {1};
    kms_aead_io io = {
        .in = pt, .in_len = PAYLOAD, .out = sh.ct, .aad = (const uint8_t *)"aad", .aad_len = 3};
    sh.backend->ops->wrap(sh.backend, sh.key, &io);
    memcpy(sh.iv, io.iv, 12);
    memcpy(sh.tag, io.tag, 16);
    if (kms_keyring_wrap(sh.kr, "bench", &ctx, pt, PAYLOAD, sh.blob, sizeof(sh.blob), &sh.blob_len,
                         NULL) != KMS_OK)
        return 1;

    printf("kms bench_wrap: AES-256-GCM, %d-byte payloads, SoftHSM2 token, %.1f s per case\n",
           PAYLOAD, sh.seconds);
    for (int threads = 1; threads <= 2; threads++) {
        double raw = bench_case(&sh, RAW_ENCRYPT, threads, 0);
        bench_case(&sh, BACKEND_WRAP, threads, raw);
        bench_case(&sh, BACKEND_UNWRAP, threads, raw);
        bench_case(&sh, KEYRING_WRAP, threads, raw);
        bench_case(&sh, KEYRING_UNWRAP, threads, raw);
    }
    sh.backend->ops->release_version(sh.backend, sh.key);
    kms_keyring_close(sh.kr);
    sh.store->ops->close(sh.store);
    sh.backend->ops->close(sh.backend);
    kms_test_token_destroy(&sh.token);
    return 0;
}
