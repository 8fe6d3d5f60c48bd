/* RPC throughput and latency of a real kmsd over mutual TLS on loopback:
 * grpc.health.v1.Health/Check (a no-op RPC: the ceiling), then
 * GenerateDataKey and Decrypt, with 1, 16 and 64 calls in flight on one
 * channel, in the same run against the same server.
 *
 *   bench_rpc [seconds-per-case [kmsd-workers]]   (default 3 s, kmsd's default workers)
 *
 * Every case runs twice, against a kmsd without and then with Prometheus
 * metrics (metrics.listen on loopback), and the rates are compared.
 *
 * Starts its own kmsd (SoftHSM2 token, SQLite file and dev PKI in a temp
 * dir, through the integration-test fixture). One client thread drives an
 * asynchronous completion queue, keeping exactly N calls outstanding: a
 * finished call is replaced at once. Each case first warms up for 0.5 s.
 * Latency is per call, from start to status. Client and server share the
 * machine's cores, as in docs/benchmarks.md.
 * Target (docs/benchmarks.md): GenerateDataKey and Decrypt >= 60 % of the no-op
 * rate at 64 in flight, p99 <= 5 ms. Tests never assert timings. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "grpc/health/v1/health.pb-c.h"
#include "grpc_test_client.h"
#include "kms/v1/kms.pb-c.h"
#include "kmsd_fixture.h"

#define MAX_INFLIGHT 64
#define MAX_SAMPLES 4000000

enum method { HEALTH, GENERATE_DATA_KEY, DECRYPT, N_METHODS };
static const char *const method_names[] = {"Health.Check (no-op)", "GenerateDataKey", "Decrypt"};
static const char *const method_paths[] = {"/grpc.health.v1.Health/Check",
                                           "/kms.v1.KeyManagement/GenerateDataKey",
                                           "/kms.v1.KeyManagement/Decrypt"};

typedef struct slot {
    grpc_call *call;
    grpc_byte_buffer *send, *recv;
    grpc_metadata_array initial, trailing;
    grpc_status_code status;
    grpc_slice details;
    uint64_t t0;
} slot;

typedef struct result {
    double rate;
    double p50_us, p99_us;
    unsigned long errors;
} result;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static grpc_channel *open_channel(const kms_test_kmsd *k)
{
    char path[400];
    char *pem[3] = {NULL, NULL, NULL};
    const char *files[3] = {"ca.pem", "app.pem", "app-key.pem"};
    for (int i = 0; i < 3; i++) {
        FILE *f = fopen(kms_test_kmsd_pki(k, files[i], path, sizeof(path)), "rb");
        pem[i] = calloc(1, 65536);
        if (f == NULL || pem[i] == NULL || fread(pem[i], 1, 65535, f) == 0) {
            fprintf(stderr, "bench_rpc: cannot read %s\n", path);
            exit(1);
        }
        fclose(f);
    }
    grpc_ssl_pem_key_cert_pair pair = {.private_key = pem[2], .cert_chain = pem[1]};
    grpc_channel_credentials *creds = grpc_ssl_credentials_create(pem[0], &pair, NULL, NULL);
    grpc_arg arg = {.type = GRPC_ARG_STRING,
                    .key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                    .value.string = (char *)"localhost"};
    grpc_channel_args args = {.num_args = 1, .args = &arg};
    grpc_channel *ch = grpc_channel_create(k->target, creds, &args);
    grpc_channel_credentials_release(creds);
    for (int i = 0; i < 3; i++)
        free(pem[i]);
    return ch;
}

static grpc_byte_buffer *packed(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    protobuf_c_message_pack(m, buf);
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)buf, n);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    free(buf);
    return bb;
}

static void start(grpc_channel *ch, grpc_completion_queue *cq, enum method m,
                  grpc_byte_buffer *request, slot *s)
{
    memset(s, 0, sizeof(*s));
    grpc_slice path = grpc_slice_from_static_string(method_paths[m]);
    s->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, path, NULL,
                                       gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    s->send = grpc_byte_buffer_copy(request);
    grpc_metadata_array_init(&s->initial);
    grpc_metadata_array_init(&s->trailing);
    s->details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = s->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &s->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &s->trailing;
    ops[5].data.recv_status_on_client.status = &s->status;
    ops[5].data.recv_status_on_client.status_details = &s->details;
    s->t0 = now_ns();
    if (grpc_call_start_batch(s->call, ops, 6, s, NULL) != GRPC_CALL_OK) {
        fprintf(stderr, "bench_rpc: start_batch failed\n");
        exit(1);
    }
}

static void finish(slot *s)
{
    grpc_byte_buffer_destroy(s->send);
    if (s->recv)
        grpc_byte_buffer_destroy(s->recv);
    grpc_metadata_array_destroy(&s->initial);
    grpc_metadata_array_destroy(&s->trailing);
    grpc_slice_unref(s->details);
    grpc_call_unref(s->call);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Keeps `inflight` calls outstanding for warm-up + seconds; measures the
 * calls that start after the warm-up and end before the stop. */
static result run_case(grpc_channel *ch, enum method m, grpc_byte_buffer *request, int inflight,
                       double seconds, uint32_t *lat)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    slot slots[MAX_INFLIGHT];
    size_t n = 0;
    unsigned long errors = 0;
    uint64_t t_start = now_ns(), t_measure = t_start + 500000000u;
    uint64_t t_stop = t_measure + (uint64_t)(seconds * 1e9);
    int outstanding = 0;
    for (int i = 0; i < inflight; i++, outstanding++)
        start(ch, cq, m, request, &slots[i]);
    while (outstanding > 0) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        slot *s = ev.tag;
        uint64_t t = now_ns();
        if (!ev.success || s->status != GRPC_STATUS_OK)
            errors++;
        else if (s->t0 >= t_measure && t <= t_stop && n < MAX_SAMPLES)
            lat[n++] =
                (uint32_t)((t - s->t0) / 1000u > UINT32_MAX ? UINT32_MAX : (t - s->t0) / 1000u);
        finish(s);
        outstanding--;
        if (t < t_stop) {
            start(ch, cq, m, request, s);
            outstanding++;
        }
    }
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    result r = {0, 0, 0, errors};
    if (n > 0) {
        qsort(lat, n, sizeof(*lat), cmp_u32);
        r.rate = (double)n / seconds;
        r.p50_us = lat[n / 2];
        r.p99_us = lat[(size_t)((double)n * 0.99)];
    }
    return r;
}

static grpc_byte_buffer *make_decrypt_request(const kms_test_kmsd *k)
{
    char ca[400], cert[400], key[400];
    kms_tc *c;
    if (kms_tc_open(k->target, kms_test_kmsd_pki(k, "ca.pem", ca, sizeof(ca)),
                    kms_test_kmsd_pki(k, "app.pem", cert, sizeof(cert)),
                    kms_test_kmsd_pki(k, "app-key.pem", key, sizeof(key)), &c) != 0)
        exit(1);
    Kms__V1__GenerateDataKeyRequest g = KMS__V1__GENERATE_DATA_KEY_REQUEST__INIT;
    g.key_name = "demo";
    g.without_plaintext = 1;
    ProtobufCMessage *resp = NULL;
    if (kms_tc_call(c, method_paths[GENERATE_DATA_KEY], &g.base,
                    &kms__v1__generate_data_key_response__descriptor, &resp, NULL, 0) != 0) {
        fprintf(stderr, "bench_rpc: GenerateDataKey failed\n");
        exit(1);
    }
    Kms__V1__DecryptRequest d = KMS__V1__DECRYPT_REQUEST__INIT;
    d.ciphertext_blob = ((Kms__V1__GenerateDataKeyResponse *)resp)->ciphertext_blob;
    grpc_byte_buffer *bb = packed(&d.base);
    protobuf_c_message_free_unpacked(resp, NULL);
    kms_tc_close(c);
    return bb;
}

/* One kmsd, every case; metrics: with metrics.listen on loopback (kmsd
 * refuses to start if the endpoint cannot listen). */
static void bench(int metrics, double seconds, const char *workers, result res[N_METHODS][3])
{
    static kms_test_kmsd k;
    kms_test_kmsd_setup(&k);
    if (metrics) {
        FILE *f = fopen(k.config, "a");
        if (f == NULL || fputs("metrics:\n  listen: 127.0.0.1:0\n", f) < 0 || fclose(f) != 0) {
            fprintf(stderr, "bench_rpc: cannot turn metrics on\n");
            exit(1);
        }
    }
    kms_test_kmsd_start(&k, (const char *const[]){"--log-level", "warn",
                                                  workers ? "--workers" : NULL, workers, NULL});
    grpc_init();
    grpc_channel *ch = open_channel(&k);

    Grpc__Health__V1__HealthCheckRequest h = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Kms__V1__GenerateDataKeyRequest g = KMS__V1__GENERATE_DATA_KEY_REQUEST__INIT;
    g.key_name = "demo";
    grpc_byte_buffer *requests[N_METHODS] = {packed(&h.base), packed(&g.base),
                                             make_decrypt_request(&k)};
    uint32_t *lat = malloc(sizeof(uint32_t) * MAX_SAMPLES);
    static const int inflight[] = {1, 16, 64};

    printf("\nbench_rpc: kmsd over mutual TLS on %s, SoftHSM2, %.1f s per case, workers %s, "
           "metrics %s\n",
           k.target, seconds, workers ? workers : "default", metrics ? "ON" : "off");
    for (size_t i = 0; i < 3; i++)
        for (int m = 0; m < N_METHODS; m++)
            res[m][i] = run_case(ch, (enum method)m, requests[m], inflight[i], seconds, lat);

    printf("\n%-22s %9s %12s %10s %10s %9s %7s\n", "call", "in flight", "calls/s", "p50 us",
           "p99 us", "vs no-op", "errors");
    for (size_t i = 0; i < 3; i++)
        for (int m = 0; m < N_METHODS; m++) {
            const result *r = &res[m][i];
            double ratio = res[HEALTH][i].rate > 0 ? 100.0 * r->rate / res[HEALTH][i].rate : 0;
            printf("%-22s %9d %12.0f %10.0f %10.0f %8.0f%% %7lu\n", method_names[m], inflight[i],
                   r->rate, r->p50_us, r->p99_us, ratio, r->errors);
        }
    printf("\ntarget, 64 in flight: >= 60 %% of the no-op rate, p99 <= 5000 us\n");
    for (int m = GENERATE_DATA_KEY; m < N_METHODS; m++) {
        const result *r = &res[m][2];
        double ratio = res[HEALTH][2].rate > 0 ? 100.0 * r->rate / res[HEALTH][2].rate : 0;
        printf("  %-16s %5.0f %% of no-op (%s), p99 %5.0f us (%s)\n", method_names[m], ratio,
               ratio >= 60 ? "met" : "NOT met", r->p99_us, r->p99_us <= 5000 ? "met" : "NOT met");
    }
    /* Little's law: with n calls always in flight, the mean latency is
     * n / rate, whatever the server does; it bounds what p99 can be. */
    printf("  (64 in flight: mean latency = 64 / rate; the no-op's is %.0f us)\n",
           res[HEALTH][2].rate > 0 ? 64e6 / res[HEALTH][2].rate : 0.0);
    long hwm = kms_test_proc_kib(k.pid, "VmHWM:"), rss = kms_test_proc_kib(k.pid, "VmRSS:");
    printf("\nkmsd memory after the runs: peak RSS %.1f MiB, now %.1f MiB; target "
           "RSS < 64 MiB under load: %s\n",
           hwm / 1024.0, rss / 1024.0, hwm > 0 && hwm < 64 * 1024 ? "met" : "NOT met");
    for (int m = 0; m < N_METHODS; m++)
        grpc_byte_buffer_destroy(requests[m]);
    free(lat);
    grpc_channel_destroy(ch);
    grpc_shutdown();
    kms_test_kmsd_stop(&k, SIGTERM);
    kms_test_kmsd_teardown(&k);
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? strtod(argv[1], NULL) : 3.0;
    if (!(seconds > 0 && seconds < 3600)) {
        fprintf(stderr, "usage: bench_rpc [seconds-per-case [kmsd-workers]]\n");
        return 2;
    }
    setenv("KMS_KMSD", KMS_BENCH_KMSD, 0);
    setenv("KMS_DEV_PKI", KMS_BENCH_DEV_PKI, 0);
    setenv("KMS_SOFTHSM_MODULE", KMS_SOFTHSM_MODULE_PATH, 0);
    setenv("KMS_SOFTHSM_UTIL", KMS_SOFTHSM_UTIL_PATH, 0);
    const char *workers = argc > 2 ? argv[2] : NULL;
    static result off[N_METHODS][3], on[N_METHODS][3];

    /* The same cases with metrics off, then on (docs/operations.md). */
    bench(0, seconds, workers, off);
    bench(1, seconds, workers, on);
    printf("\nmetrics on vs off (calls/s; target: within 3 %%)\n");
    static const int inflight[] = {1, 16, 64};
    for (size_t i = 0; i < 3; i++)
        for (int m = 0; m < N_METHODS; m++) {
            double d = off[m][i].rate > 0 ? 100.0 * (on[m][i].rate / off[m][i].rate - 1) : 0;
            printf("  %-22s %3d in flight: off %8.0f  on %8.0f  %+5.1f %%\n", method_names[m],
                   inflight[i], off[m][i].rate, on[m][i].rate, d);
        }
    return 0;
}
