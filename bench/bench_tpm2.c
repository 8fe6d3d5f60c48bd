/* Wrap/unwrap through the TPM2 backend (sealed and resident mode, on a
 * swtpm) next to the PKCS#11 backend (SoftHSM2), in the same run, one
 * thread, 32-byte payloads. Then a version's life cycle, timed step by
 * step over LIFE_ROUNDS versions per backend: create_version (on the TPM:
 * define and write the version's shred NV index, then create the object),
 * its first open_version (NV read, derive, unseal or load) and
 * destroy_version (undefine the index); the NV index is what shredding
 * adds to each step.
 *
 *   bench_tpm2 [seconds-per-case]      (default 2)
 *
 * Target (docs/benchmarks.md): sealed mode within 10 % of the PKCS#11 path (it
 * should be faster: the TPM is off the per-request path). Resident mode
 * costs one TPM command per operation (TPM2_HMAC with the key kept loaded)
 * and is shown for what it is. Tests never assert timings. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pkcs11/kms_p11.h"
#include "softhsm_fixture.h"
#include "swtpm_fixture.h"
#include "tpm2/kms_tpm2.h"

#define MAX_SAMPLES 4000000
#define LIFE_ROUNDS 20

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

struct result {
    double rate, p50, p99;
};

static struct result run(kms_backend *b, kms_backend_key *k, int unwrap, double secs, uint32_t *lat)
{
    uint8_t pt[32] = {7}, ct[32], back[32], aad[22] = {1};
    kms_aead_io w = {.aad = aad, .aad_len = sizeof(aad), .in = pt, .in_len = 32, .out = ct};
    if (b->ops->wrap(b, k, &w) != 0) {
        fprintf(stderr, "bench_tpm2: wrap failed\n");
        exit(1);
    }
    size_t n = 0;
    uint64_t start = now_ns(), end = start + (uint64_t)(secs * 1e9), t = start;
    while (t < end && n < MAX_SAMPLES) {
        uint64_t t0 = now_ns();
        int r;
        if (unwrap) {
            kms_aead_io u = {
                .aad = aad, .aad_len = sizeof(aad), .in = ct, .in_len = 32, .out = back};
            memcpy(u.iv, w.iv, 12);
            memcpy(u.tag, w.tag, 16);
            r = b->ops->unwrap(b, k, &u);
        } else {
            kms_aead_io x = {.aad = aad, .aad_len = sizeof(aad), .in = pt, .in_len = 32, .out = ct};
            r = b->ops->wrap(b, k, &x);
        }
        if (r != 0) {
            fprintf(stderr, "bench_tpm2: operation failed\n");
            exit(1);
        }
        t = now_ns();
        lat[n++] = (uint32_t)((t - t0) / 100); /* 0.1 us */
    }
    qsort(lat, n, sizeof(*lat), cmp_u32);
    struct result res = {(double)n / ((double)(t - start) / 1e9), lat[n / 2] / 10.0,
                         lat[(size_t)((double)n * 0.99)] / 10.0};
    return res;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? strtod(argv[1], NULL) : 2.0;
    if (!(secs > 0 && secs < 3600)) {
        fprintf(stderr, "usage: bench_tpm2 [seconds-per-case]\n");
        return 2;
    }
    setenv("KMS_SOFTHSM_MODULE", KMS_SOFTHSM_MODULE_PATH, 0);
    setenv("KMS_SOFTHSM_UTIL", KMS_SOFTHSM_UTIL_PATH, 0);
    setenv("TSS2_LOG", "all+none", 1);
    static const uint8_t id[16] = {0xbe, 0xec};
    uint32_t *lat = malloc(sizeof(uint32_t) * MAX_SAMPLES);

    kms_test_token tok;
    kms_test_token_create(&tok, "bench-tpm2");
    kms_p11_config pc = kms_test_token_p11_config(&tok);
    kms_test_swtpm tpm;
    kms_test_swtpm_start(&tpm);
    kms_tpm2_config tc = {.tcti = tpm.tcti, .lock_dir = tpm.dir};
    kms_backend *p11 = NULL, *sealed = NULL, *resident = NULL;
    if (lat == NULL || kms_p11_open(&pc, &p11) != 0 || kms_tpm2_provision(&tc) != 0 ||
        kms_tpm2_open(&tc, &sealed, &resident) != 0) {
        fprintf(stderr, "bench_tpm2: set-up failed: %s\n", kms_error_detail());
        return 1;
    }
    kms_backend *bs[3] = {p11, sealed, resident};
    const char *names[3] = {"PKCS#11 (SoftHSM2)", "TPM2 sealed (swtpm)", "TPM2 resident (swtpm)"};
    struct result res[3][2];
    for (int i = 0; i < 3; i++) {
        kms_backend_ref ref;
        kms_backend_key *k = NULL;
        if (bs[i]->ops->create_version(bs[i], id, (uint32_t)i + 1, &ref) != 0 ||
            bs[i]->ops->open_version(bs[i], &ref, &k) != 0) {
            fprintf(stderr, "bench_tpm2: key set-up failed: %s\n", kms_error_detail());
            return 1;
        }
        for (int u = 0; u < 2; u++)
            res[i][u] = run(bs[i], k, u, secs, lat);
        bs[i]->ops->release_version(bs[i], k);
    }
    printf("bench_tpm2: 32-byte payloads, one thread, %.1f s per case\n\n", secs);
    printf("%-24s %-7s %12s %10s %10s %12s\n", "backend", "op", "ops/s", "p50 us", "p99 us",
           "vs PKCS#11");
    for (int i = 0; i < 3; i++)
        for (int u = 0; u < 2; u++)
            printf("%-24s %-7s %12.0f %10.1f %10.1f %11.0f%%\n", names[i], u ? "unwrap" : "wrap",
                   res[i][u].rate, res[i][u].p50, res[i][u].p99,
                   100.0 * res[i][u].rate / res[0][u].rate);
    /* Version life cycle: mean ms per step over LIFE_ROUNDS versions. */
    double life[3][3] = {{0}};
    for (int i = 0; i < 3; i++)
        for (uint32_t v = 0; v < LIFE_ROUNDS; v++) {
            kms_backend_ref ref;
            kms_backend_key *k = NULL;
            uint64_t t0 = now_ns();
            int r = bs[i]->ops->create_version(bs[i], id, 100 + v, &ref);
            uint64_t t1 = now_ns();
            if (r == 0)
                r = bs[i]->ops->open_version(bs[i], &ref, &k);
            uint64_t t2 = now_ns();
            if (r == 0) {
                bs[i]->ops->release_version(bs[i], k);
                t2 = now_ns();
                uint64_t t3 = now_ns();
                r = bs[i]->ops->destroy_version(bs[i], &ref);
                life[i][2] += (double)(now_ns() - t3) / 1e6 / LIFE_ROUNDS;
            }
            if (r != 0) {
                fprintf(stderr, "bench_tpm2: version life cycle failed: %s\n", kms_error_detail());
                return 1;
            }
            life[i][0] += (double)(t1 - t0) / 1e6 / LIFE_ROUNDS;
            life[i][1] += (double)(t2 - t1) / 1e6 / LIFE_ROUNDS;
        }
    printf("\nversion life cycle, mean ms over %d versions:\n", LIFE_ROUNDS);
    printf("%-24s %10s %12s %10s\n", "backend", "create", "first open", "destroy");
    for (int i = 0; i < 3; i++)
        printf("%-24s %10.2f %12.2f %10.2f\n", names[i], life[i][0], life[i][1], life[i][2]);
    printf("\ntarget: TPM2 sealed within 10 %% of the PKCS#11 path: wrap %s, "
           "unwrap %s\n",
           res[1][0].rate >= 0.9 * res[0][0].rate ? "met" : "NOT met",
           res[1][1].rate >= 0.9 * res[0][1].rate ? "met" : "NOT met");
    for (int i = 0; i < 3; i++)
        bs[i]->ops->close(bs[i]);
    kms_test_swtpm_destroy(&tpm);
    kms_test_token_destroy(&tok);
    free(lat);
    return 0;
}
