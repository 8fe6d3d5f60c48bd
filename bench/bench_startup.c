/* kmsd start-up time with many keys: from spawning `kmsd run` to its
 * "kmsd ready on" line, first with the 4 keys of `kmsd init`, then with
 * 1000, 2000, 4000, ... more keys (each a SoftHSM2 token object and a
 * SQLite row), up to MAX.
 *
 *   bench_startup [MAX]   (default 2000)
 *
 * Making keys on SoftHSM2's file token slows down as the token grows: here
 * the first 1000 took 30-39 s, the next 1000 71 s, and 5000 about 11 min,
 * so the default stops at 2000; run `bench_startup 10000` for the target's
 * size if you have the time.
 *
 * The keys are created in process through the keyring (what kmsd's
 * CreateKey runs once the quorum approves), which is far quicker than
 * 2 approvals per key over RPC and gives the same token and database.
 * kmsd opens a key's token object on its first use, so start-up reads
 * the database and the token's object index, not every key.
 * Target (docs/benchmarks.md): start-up with 10,000 keys < 1 s to ready; kmsd's
 * RSS is printed beside the < 64 MiB target. Tests never assert timings. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include "kmsd/keyring/keyring.h"
#include "kmsd/state/state.h"
#include "base/log.h"
#include "kmsd/store/store.h"
#include "kmsd_fixture.h"
#include "pkcs11/kms_p11.h"

#define STARTS 3

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of STARTS start-ups (ms); *rss gets the RSS after the last. */
static double time_startups(kms_test_kmsd *k, long *rss)
{
    double t[STARTS];
    for (int i = 0; i < STARTS; i++) {
        double t0 = now_s();
        kms_test_kmsd_start(k, (const char *const[]){"--log-level", "warn", NULL});
        t[i] = (now_s() - t0) * 1000.0;
        *rss = kms_test_proc_kib(k->pid, "VmRSS:");
        if (kms_test_kmsd_stop(k, SIGTERM) != 0) {
            fprintf(stderr, "bench_startup: kmsd did not exit cleanly\n");
            exit(1);
        }
    }
    qsort(t, STARTS, sizeof(t[0]), cmp_double);
    return t[STARTS / 2];
}

static void add_keys(kms_test_kmsd *k, long from, long to)
{
    kms_p11_config pc = {.module_path = k->token.module,
                         .token_label = k->token.label,
                         .pin_file = k->token.pin_file};
    kms_backend *b = NULL;
    kms_store *s = NULL;
    kms_keyring *kr = NULL;
    /* the state MAC attached, as in kmsd: each key's rows and the digest
     * are MACed in its transaction */
    if (kms_p11_open(&pc, &b) != 0 || kms_store_sqlite_open(k->db, &s) != 0 ||
        kms_keyring_open(s, NULL, &kr) != 0 || kms_keyring_add_backend(kr, b) != 0 ||
        kms_state_attach(kr, s) != 0) {
        fprintf(stderr, "bench_startup: cannot open the token or database\n");
        exit(1);
    }
    double t0 = now_s();
    for (long i = from; i < to; i++) {
        char name[32];
        kms_key_rec rec;
        snprintf(name, sizeof(name), "bulk-%06ld", i);
        if (kms_keyring_create_key(kr, name, "pkcs11", &rec) != 0) {
            fprintf(stderr, "bench_startup: creating %s failed\n", name);
            exit(1);
        }
    }
    double secs = now_s() - t0;
    printf("created keys %ld..%ld in %.1f s (%.0f keys/s: token object + database row each)\n",
           from + 1, to, secs, (double)(to - from) / secs);
    kms_keyring_close(kr);
    s->ops->close(s);
    b->ops->close(b);
}

/* One admin write (a key's rotation setting, in its own transaction) on
 * the database as it is now: without the state MAC (before) and with it
 * (after: the changed row MACed on the token, the digest recomputed over
 * every row MAC, the state row MACed), interleaved, median of ADMIN_RUNS
 * each; and `kmsd verify-state` (every row MAC and the digest), median of
 * 3. */
#define ADMIN_RUNS 21
static void time_admin(kms_test_kmsd *k, double *plain_ms, double *sealed_ms, double *verify_ms)
{
    kms_p11_config pc = {.module_path = k->token.module,
                         .token_label = k->token.label,
                         .pin_file = k->token.pin_file};
    kms_backend *b = NULL;
    kms_store *plain = NULL, *sealed = NULL;
    kms_keyring *kr = NULL;
    kms_key_rec rec;
    double tp[ADMIN_RUNS], ts[ADMIN_RUNS], tv[3];
    if (kms_p11_open(&pc, &b) != 0 || kms_store_sqlite_open(k->db, &sealed) != 0 ||
        kms_store_sqlite_open(k->db, &plain) != 0 || kms_keyring_open(sealed, NULL, &kr) != 0 ||
        kms_keyring_add_backend(kr, b) != 0 || kms_state_attach(kr, sealed) != 0 ||
        sealed->ops->key_get_by_name(sealed, "demo", &rec) != 0) {
        fprintf(stderr, "bench_startup: cannot open the token or database\n");
        exit(1);
    }
    for (int i = 0; i < ADMIN_RUNS; i++) {
        /* the unMACed write is undone by the MACed one right after it, so
         * the state verifies at the end */
        double t0 = now_s();
        if (plain->ops->key_set_rotation(plain, rec.id, 30) != 0)
            exit(1);
        double t1 = now_s();
        if (sealed->ops->key_set_rotation(sealed, rec.id, (uint32_t)(31 + i % 2)) != 0 ||
            sealed->ops->key_set_rotation(sealed, rec.id, 0) != 0)
            exit(1);
        double t2 = now_s();
        tp[i] = (t1 - t0) * 1000.0;
        ts[i] = (t2 - t1) * 1000.0 / 2;
    }
    kms_keyring_close(kr);
    sealed->ops->close(sealed);
    plain->ops->close(plain);
    b->ops->close(b);
    for (int i = 0; i < 3; i++) {
        char out[4096];
        const char *argv[] = {"--config", k->config, "--log-level", "warn", "verify-state", NULL};
        double t0 = now_s();
        if (kms_test_kmsd_run(argv, out, sizeof(out)) != 0) {
            fprintf(stderr, "bench_startup: verify-state failed:\n%s", out);
            exit(1);
        }
        tv[i] = (now_s() - t0) * 1000.0;
    }
    qsort(tp, ADMIN_RUNS, sizeof(double), cmp_double);
    qsort(ts, ADMIN_RUNS, sizeof(double), cmp_double);
    qsort(tv, 3, sizeof(double), cmp_double);
    *plain_ms = tp[ADMIN_RUNS / 2];
    *sealed_ms = ts[ADMIN_RUNS / 2];
    *verify_ms = tv[1];
}

int main(int argc, char **argv)
{
    long max = argc > 1 ? strtol(argv[1], NULL, 10) : 2000;
    if (max < 1 || max > 1000000) {
        fprintf(stderr, "usage: bench_startup [max-keys]\n");
        return 2;
    }
    setenv("KMS_KMSD", KMS_BENCH_KMSD, 0);
    setenv("KMS_DEV_PKI", KMS_BENCH_DEV_PKI, 0);
    setenv("KMS_SOFTHSM_MODULE", KMS_SOFTHSM_MODULE_PATH, 0);
    setenv("KMS_SOFTHSM_UTIL", KMS_SOFTHSM_UTIL_PATH, 0);
    setvbuf(stdout, NULL, _IOLBF, 0);
    kms_log_set_level(KMS_LOG_WARN);

    static kms_test_kmsd k;
    kms_test_kmsd_setup(&k);
    printf("bench_startup: kmsd run to \"kmsd ready on\", median of %d starts, SoftHSM2 + "
           "SQLite\n\n",
           STARTS);
    enum { MAX_ROWS = 16 };
    long keys[MAX_ROWS], rss[MAX_ROWS];
    double ms[MAX_ROWS];
    size_t rows = 0;
    long have = 0;
    keys[rows] = 4;
    ms[rows] = time_startups(&k, &rss[rows]);
    rows++;
    for (long step = 1000; rows < MAX_ROWS; step *= 2) {
        long want = step < max ? step : max;
        add_keys(&k, have, want);
        have = want;
        keys[rows] = have + 4;
        ms[rows] = time_startups(&k, &rss[rows]);
        rows++;
        if (have == max)
            break;
    }

    printf("\n%-8s %10s %10s\n", "keys", "ready ms", "RSS MiB");
    for (size_t i = 0; i < rows; i++)
        printf("%-8ld %10.0f %10.1f\n", keys[i], ms[i], rss[i] / 1024.0);
    double last = ms[rows - 1];
    printf("\ntarget: start-up with 10,000 keys < 1000 ms; with %ld keys: %.0f ms "
           "(%s)%s\n",
           keys[rows - 1], last, last < 1000 ? "met" : "NOT met",
           have < 10000 ? ", fewer keys than the target's" : "");
    printf("RSS < 64 MiB: %.1f MiB with %ld keys (%s)\n", rss[rows - 1] / 1024.0, keys[rows - 1],
           rss[rows - 1] < 64 * 1024 ? "met" : "NOT met");
    double plain = 0, sealed = 0, verify = 0;
    time_admin(&k, &plain, &sealed, &verify);
    printf("\nstate integrity with %ld keys: one admin write %.2f ms without the state MAC, "
           "%.2f ms with it (row MAC + digest over every row MAC + state MAC); "
           "kmsd verify-state (process start to exit) %.0f ms\n",
           keys[rows - 1], plain, sealed, verify);
    kms_test_kmsd_teardown(&k);
    return 0;
}
