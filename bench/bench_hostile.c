/* A legitimate client's latency while hostile peers hold connections to
 * kmsd: 1,000 TLS connections that finish the TLS handshake with a valid
 * client certificate and then send nothing (not even the HTTP/2 preface),
 * plus 200 slowloris connections that send one byte of a ClientHello
 * every 2 s. Prints the legitimate client's p50/p99 (Health and Encrypt,
 * one call at a time) before and during the attack, the ratio against the
 * 2x target, and kmsd's open fd count before, at the peak and after the
 * handshake timeout.
 *
 *   bench_hostile [seconds-under-attack]   (default 5, at most 8: the
 *                                            hostile connections are closed
 *                                            by kmsd after its 10 s
 *                                            handshake timeout)
 *
 * Starts its own kmsd through the integration-test fixture. Tests never
 * assert timings; test_kmsd_tls asserts the fd bound. */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc.h>
#include <grpc/status.h>

#include "grpc/health/v1/health.pb-c.h"
#include "grpc_test_client.h"
#include "kms/v1/kms.pb-c.h"
#include "kmsd_fixture.h"

#define IDLE_TLS 1000
#define SLOWLORIS 200
#define MAX_SAMPLES 200000

static kms_test_kmsd K;
static int idle_fds[IDLE_TLS], slow_fds[SLOWLORIS];
static SSL *idle_ssl[IDLE_TLS];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int kmsd_fds(void)
{
    char path[64];
    int n = 0;
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)K.pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static int tcp_connect(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)K.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        perror("bench_hostile: connect");
        exit(1);
    }
    return fd;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One call at a time for `seconds`, alternating Health and Encrypt;
 * p50/p99 in microseconds. */
static void measure(kms_tc *c, double seconds, double *p50, double *p99, unsigned long *errors)
{
    static double lat[MAX_SAMPLES];
    size_t n = 0;
    *errors = 0;
    double until = now_s() + seconds;
    while (now_s() < until && n < MAX_SAMPLES) {
        double t0 = now_s();
        int st;
        if (n % 2 == 0) {
            Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
            st = kms_tc_call(c, "/grpc.health.v1.Health/Check", &req.base, NULL, NULL, NULL, 0);
        } else {
            Kms__V1__EncryptRequest req = KMS__V1__ENCRYPT_REQUEST__INIT;
            req.key_name = "demo";
            req.plaintext.data = (uint8_t *)"payload";
            req.plaintext.len = 7;
            st = kms_tc_call(c, "/kms.v1.KeyManagement/Encrypt", &req.base, NULL, NULL, NULL, 0);
        }
        lat[n++] = (now_s() - t0) * 1e6;
        *errors += st != GRPC_STATUS_OK;
    }
    qsort(lat, n, sizeof(lat[0]), cmp_double);
    *p50 = n ? lat[n / 2] : 0;
    *p99 = n ? lat[(n * 99) / 100] : 0;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? strtod(argv[1], NULL) : 5;
    if (seconds <= 0 || seconds > 8)
        seconds = 5;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max; /* kmsd inherits it */
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    setenv("KMS_KMSD", KMS_BENCH_KMSD, 0);
    setenv("KMS_DEV_PKI", KMS_BENCH_DEV_PKI, 0);
    setenv("KMS_SOFTHSM_MODULE", KMS_SOFTHSM_MODULE_PATH, 0);
    setenv("KMS_SOFTHSM_UTIL", KMS_SOFTHSM_UTIL_PATH, 0);
    grpc_init();
    kms_test_kmsd_setup(&K);
    kms_test_kmsd_start(&K, (const char *const[]){"--log-level", "error", NULL});

    kms_tc *c = kms_test_kmsd_open_as(&K, "app");
    kms_tc_set_timeout(c, 10000);
    double b50, b99, a50, a99;
    unsigned long berr, aerr;
    measure(c, 0.5, &b50, &b99, &berr); /* warm up */
    measure(c, seconds, &b50, &b99, &berr);
    int fds_before = kmsd_fds();

    /* The hostile peers. */
    kms_test_creds cr;
    kms_test_kmsd_creds(&K, "app", &cr);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || SSL_CTX_use_certificate_chain_file(ctx, cr.cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, cr.key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_load_verify_locations(ctx, cr.ca, NULL) != 1) {
        fprintf(stderr, "bench_hostile: TLS client set-up failed\n");
        return 1;
    }
    SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x02h2", 3);
    double t_open = now_s();
    int handshakes = 0;
    for (int i = 0; i < SLOWLORIS; i++)
        slow_fds[i] = tcp_connect();
    for (int i = 0; i < IDLE_TLS; i++) {
        idle_fds[i] = tcp_connect();
        idle_ssl[i] = SSL_new(ctx);
        SSL_set_fd(idle_ssl[i], idle_fds[i]);
        handshakes += SSL_connect(idle_ssl[i]) == 1;
    }
    double opened = now_s() - t_open;
    int fds_peak = kmsd_fds();

    /* Under attack: the slowloris peers send a byte every 2 s (from this
     * thread, between measurements of ~1 s). */
    static const unsigned char hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};
    double p50s = 0, p99s = 0;
    unsigned long errs = 0;
    int rounds = 0;
    for (double spent = 0; spent < seconds; spent += 1.0, rounds++) {
        if (rounds % 2 == 0)
            for (int i = 0; i < SLOWLORIS; i++)
                (void)!send(slow_fds[i], &hello[(rounds / 2) % sizeof(hello)], 1, MSG_NOSIGNAL);
        measure(c, 1.0, &a50, &a99, &aerr);
        p50s += a50;
        p99s = a99 > p99s ? a99 : p99s;
        errs += aerr;
        int f = kmsd_fds();
        fds_peak = f > fds_peak ? f : fds_peak;
    }
    /* Past the 10 s handshake timeout (counted from the first connect). */
    double wait = 12.0 - (now_s() - t_open);
    if (wait > 0) {
        struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
        nanosleep(&ts, NULL);
    }
    int fds_after = kmsd_fds();

    printf("bench_hostile: %d idle TLS connections (%d handshakes done, %.1f s to open) + %d "
           "slowloris\n",
           IDLE_TLS, handshakes, opened, SLOWLORIS);
    printf("  legitimate client, one call at a time (Health/Encrypt):\n");
    printf("    baseline        p50 %8.0f us  p99 %8.0f us  errors %lu\n", b50, b99, berr);
    printf("    under attack    p50 %8.0f us  p99 %8.0f us  errors %lu  (p99 worst 1-s window)\n",
           rounds ? p50s / rounds : 0, p99s, errs);
    printf("    p99 ratio %.2fx (target <= 2x)\n", b99 > 0 ? p99s / b99 : 0);
    printf("  kmsd open fds: %d before, %d at the peak, %d after the 10 s handshake timeout\n",
           fds_before, fds_peak, fds_after);

    for (int i = 0; i < IDLE_TLS; i++) {
        SSL_free(idle_ssl[i]);
        close(idle_fds[i]);
    }
    for (int i = 0; i < SLOWLORIS; i++)
        close(slow_fds[i]);
    SSL_CTX_free(ctx);
    kms_tc_close(c);
    kms_test_kmsd_stop(&K, SIGTERM);
    kms_test_kmsd_teardown(&K);
    kms_tc_grpc_shutdown();
    return 0;
}
