/* GenerateDataKey with the audit log off and on, in one run: 1, 16 and 64
 * calls in flight against a real kmsd over mutual TLS (SoftHSM2, SQLite,
 * dev PKI in a temp dir), first without audit.dir, then with it, on the
 * same token and database.
 *
 *   bench_audit [seconds-per-case [kmsd-workers]]   (default 3 s, kmsd's default workers)
 *
 * Group commit is the evidence: kmsd's stop record carries its counters
 * (records=N syncs=M), and the benchmark prints records per fdatasync,
 * and how many signed checkpoints (one ECDSA signature on the token each,
 * every audit.checkpoint_records records) the log holds.
 * Target (docs/benchmarks.md): at 64 in flight, audit on >= 80 % of audit
 * off. Tests never assert timings. */

/* The call loop of bench_rpc (open_channel, packed, run_case), compiled in
 * here with its main renamed, so both benchmarks measure the same way. */
#define main bench_rpc_main
#include "bench_rpc.c"
#undef main

#include <dirent.h>

/* records=N syncs=M from the last "stop" record of the log in dir, and the
 * number of checkpoint records in it. */
static int group_commit(const char *dir, unsigned long long *records, unsigned long long *syncs,
                        unsigned long long *checkpoints)
{
    char last[4096] = "", path[900], line[4096];
    DIR *d = opendir(dir);
    struct dirent *e;
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "audit-", 6) != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "r");
        while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
            if (strstr(line, "\"type\":\"stop\"") != NULL)
                snprintf(last, sizeof(last), "%s", line);
            if (strstr(line, "\"type\":\"checkpoint\"") != NULL)
                (*checkpoints)++;
        }
        if (f != NULL)
            fclose(f);
    }
    closedir(d);
    const char *r = strstr(last, "records="), *s = strstr(last, "syncs=");
    if (r == NULL || s == NULL)
        return -1;
    *records = strtoull(r + 8, NULL, 10);
    *syncs = strtoull(s + 6, NULL, 10);
    return 0;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? strtod(argv[1], NULL) : 3.0;
    if (!(seconds > 0 && seconds < 3600)) {
        fprintf(stderr, "usage: bench_audit [seconds-per-case [kmsd-workers]]\n");
        return 2;
    }
    setenv("KMS_KMSD", KMS_BENCH_KMSD, 0);
    setenv("KMS_DEV_PKI", KMS_BENCH_DEV_PKI, 0);
    setenv("KMS_SOFTHSM_MODULE", KMS_SOFTHSM_MODULE_PATH, 0);
    setenv("KMS_SOFTHSM_UTIL", KMS_SOFTHSM_UTIL_PATH, 0);

    static kms_test_kmsd k;
    char dir[320], audit[400];
    kms_test_kmsd_setup(&k);
    snprintf(audit, sizeof(audit), "%s/audit", kms_test_kmsd_dir(&k, dir, sizeof(dir)));
    grpc_init();
    Kms__V1__GenerateDataKeyRequest g = KMS__V1__GENERATE_DATA_KEY_REQUEST__INIT;
    g.key_name = "demo";
    grpc_byte_buffer *request = packed(&g.base);
    uint32_t *lat = malloc(sizeof(uint32_t) * MAX_SAMPLES);
    static const int inflight[] = {1, 16, 64};
    result res[2][3];

    const char *workers = argc > 2 ? argv[2] : "0";
    for (int on = 0; on <= 1; on++) {
        const char *extra[] = {
            "--log-level", "warn", "--workers", workers, on ? "--audit-dir" : NULL, audit, NULL};
        kms_test_kmsd_start(&k, extra);
        grpc_channel *ch = open_channel(&k);
        for (size_t i = 0; i < 3; i++)
            res[on][i] = run_case(ch, GENERATE_DATA_KEY, request, inflight[i], seconds, lat);
        grpc_channel_destroy(ch);
        kms_test_kmsd_stop(&k, SIGTERM);
    }

    printf("bench_audit: GenerateDataKey, kmsd over mutual TLS, SoftHSM2, %.1f s per case, "
           "workers %s\n\n",
           seconds, workers);
    printf("%-10s %9s %12s %10s %10s %7s\n", "audit", "in flight", "calls/s", "p50 us", "p99 us",
           "errors");
    for (size_t i = 0; i < 3; i++)
        for (int on = 0; on <= 1; on++)
            printf("%-10s %9d %12.0f %10.0f %10.0f %7lu\n", on ? "on" : "off", inflight[i],
                   res[on][i].rate, res[on][i].p50_us, res[on][i].p99_us, res[on][i].errors);
    double ratio = res[0][2].rate > 0 ? 100.0 * res[1][2].rate / res[0][2].rate : 0;
    printf("\ntarget, 64 in flight: audit on >= 80 %% of audit off: %.0f %% (%s)\n", ratio,
           ratio >= 80 ? "met" : "NOT met");
    unsigned long long records = 0, syncs = 0, checkpoints = 0;
    if (group_commit(audit, &records, &syncs, &checkpoints) == 0 && syncs > 0)
        printf("group commit: %llu records in %llu fdatasync calls, %.1f records per fsync "
               "(all cases together); %llu signed checkpoints among them\n",
               records, syncs, (double)records / (double)syncs, checkpoints);
    else
        printf("group commit: no counters found in the stop record\n");
    grpc_byte_buffer_destroy(request);
    free(lat);
    grpc_shutdown();
    kms_test_kmsd_teardown(&k);
    return 0;
}
