/* A legitimate client's latency while hostile peers hold connections to
 * kmsd: 1,000 TLS connections that finish the TLS handshake with a valid
 * client certificate and then send nothing (not even the HTTP/2 preface),
 * plus 200 slowloris connections that send one byte of a ClientHello
 * every 2 s, opened from a second thread while the client measures. Prints the legitimate client's
 * p50/p99 (Health and Encrypt, one call at a time) before and during the attack, the ratio against
 * the 2x target, and kmsd's open fd count before, at the peak and after the handshake timeout.
 * Where the CPU went during the attack: kmsd's CPU time by thread name (from /proc/PID/task), the
 * attacker thread's and the rest of this process's (the legitimate client and its gRPC threads),
 * against the wall time and the machine's load average: on a 2-core machine that shares its cores
 * with the attacker, a p99 ratio above 2x is read against these.
 *
 *   bench_hostile [seconds]   (default 5, at most 8: the legitimate client
 *                              measures from the first hostile connect until
 *                              this long after the last, before kmsd's 10 s
 *                              handshake timeout closes them)
 *
 * Starts its own kmsd through the integration-test fixture. Tests never
 * assert timings; test_kmsd_tls asserts the fd bound. */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
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

/* kmsd's CPU time (clock ticks) per thread name: a snapshot of every
 * thread in /proc/PID/task, summed by comm. */
#define MAX_GROUPS 32
typedef struct cpu_groups {
    char name[MAX_GROUPS][20];
    long long ticks[MAX_GROUPS];
    int n;
} cpu_groups;

static void kmsd_cpu(cpu_groups *g)
{
    char path[320], buf[512];
    memset(g, 0, sizeof(*g));
    snprintf(path, sizeof(path), "/proc/%d/task", (int)K.pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/%d/task/%s/stat", (int)K.pid, e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        /* pid (comm) state ... field 14 utime, 15 stime */
        char *open = strchr(buf, '('), *close = strrchr(buf, ')');
        if (open == NULL || close == NULL || close < open)
            continue;
        char comm[20];
        size_t cl = (size_t)(close - open - 1) < sizeof(comm) - 1 ? (size_t)(close - open - 1)
                                                                  : sizeof(comm) - 1;
        memcpy(comm, open + 1, cl);
        comm[cl] = '\0';
        /* digits at the end of a name (worker threads numbered) do not split groups */
        while (cl > 0 && comm[cl - 1] >= '0' && comm[cl - 1] <= '9')
            comm[--cl] = '\0';
        long long field[16] = {0};
        char *p = close + 2;
        for (int i = 3; i <= 15 && p != NULL && *p != '\0'; i++) {
            field[i] = strtoll(p, &p, 10);
            if (i == 3) { /* state is a letter */
                while (*p == ' ')
                    p++;
                p++;
            }
        }
        int k = 0;
        while (k < g->n && strcmp(g->name[k], comm) != 0)
            k++;
        if (k == g->n) {
            if (g->n == MAX_GROUPS)
                continue;
            snprintf(g->name[g->n++], sizeof(g->name[0]), "%s", comm);
        }
        g->ticks[k] += field[14] + field[15];
    }
    closedir(d);
}

static double process_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
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

/* Latencies (microseconds) of one phase. */
typedef struct samples {
    double lat[MAX_SAMPLES];
    size_t n;
    unsigned long errors;
} samples;

static samples base_s, attack_s;

/* One call at a time for `seconds`, alternating Health and Encrypt,
 * appended to out. */
static void measure(kms_tc *c, double seconds, samples *out)
{
    double until = now_s() + seconds;
    while (now_s() < until && out->n < MAX_SAMPLES) {
        double t0 = now_s();
        int st;
        if (out->n % 2 == 0) {
            Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
            st = kms_tc_call(c, "/grpc.health.v1.Health/Check", &req.base, NULL, NULL, NULL, 0);
        } else {
            Kms__V1__EncryptRequest req = KMS__V1__ENCRYPT_REQUEST__INIT;
            req.key_name = "demo";
            req.plaintext.data = (uint8_t *)"payload";
            req.plaintext.len = 7;
            st = kms_tc_call(c, "/kms.v1.KeyManagement/Encrypt", &req.base, NULL, NULL, NULL, 0);
        }
        out->lat[out->n++] = (now_s() - t0) * 1e6;
        out->errors += st != GRPC_STATUS_OK;
    }
}

static double percentile(samples *s, int pct)
{
    if (s->n == 0)
        return 0;
    qsort(s->lat, s->n, sizeof(s->lat[0]), cmp_double);
    return s->lat[(s->n * (size_t)pct) / 100];
}

/* The attacker: 200 slowloris connections, then 1,000 TLS connections
 * (handshake done, then silence), then a slowloris byte every 2 s until
 * told to stop. */
struct attack {
    SSL_CTX *ctx;
    pthread_mutex_t mu; /* guards what follows */
    double opened_at;   /* when the last connection was open (0: not yet) */
    double cpu_s;       /* the attacker thread's CPU time, at stop */
    int handshakes;
    int stop;
};

static void *attack_run(void *arg)
{
    struct attack *a = arg;
    static const unsigned char hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};
    int handshakes = 0;
    for (int i = 0; i < SLOWLORIS; i++)
        slow_fds[i] = tcp_connect();
    for (int i = 0; i < IDLE_TLS; i++) {
        idle_fds[i] = tcp_connect();
        idle_ssl[i] = SSL_new(a->ctx);
        SSL_set_fd(idle_ssl[i], idle_fds[i]);
        handshakes += SSL_connect(idle_ssl[i]) == 1;
    }
    pthread_mutex_lock(&a->mu);
    a->opened_at = now_s();
    a->handshakes = handshakes;
    pthread_mutex_unlock(&a->mu);
    for (unsigned tick = 0;; tick++) {
        pthread_mutex_lock(&a->mu);
        int stop = a->stop;
        pthread_mutex_unlock(&a->mu);
        if (stop)
            break;
        if (tick % 20 == 0) /* every 2 s */
            for (int i = 0; i < SLOWLORIS; i++)
                (void)!send(slow_fds[i], &hello[(tick / 20) % sizeof(hello)], 1, MSG_NOSIGNAL);
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    pthread_mutex_lock(&a->mu);
    a->cpu_s = thread_cpu_s();
    pthread_mutex_unlock(&a->mu);
    return NULL;
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
    measure(c, 0.5, &base_s); /* warm up */
    base_s.n = 0;
    base_s.errors = 0;
    measure(c, seconds, &base_s);
    int fds_before = kmsd_fds();

    /* The hostile peers, from their own thread, while the legitimate
     * client measures: the attack's connect storm is part of the load. */
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
    struct attack a = {.ctx = ctx, .mu = PTHREAD_MUTEX_INITIALIZER};
    pthread_t attacker;
    cpu_groups cpu0, cpu1;
    kmsd_cpu(&cpu0);
    double self0 = process_cpu_s();
    double t_attack = now_s();
    if (pthread_create(&attacker, NULL, attack_run, &a) != 0) {
        fprintf(stderr, "bench_hostile: cannot start the attacker\n");
        return 1;
    }

    int rounds = 0, fds_peak = fds_before;
    /* Until every hostile connection is open, then `seconds` more. */
    for (;; rounds++) {
        measure(c, 1.0, &attack_s);
        int f = kmsd_fds();
        fds_peak = f > fds_peak ? f : fds_peak;
        pthread_mutex_lock(&a.mu);
        double open_at = a.opened_at;
        pthread_mutex_unlock(&a.mu);
        if (open_at > 0 && now_s() - open_at >= seconds)
            break;
    }
    pthread_mutex_lock(&a.mu);
    a.stop = 1;
    double opened = a.opened_at - t_attack, last_open = a.opened_at;
    pthread_mutex_unlock(&a.mu);
    pthread_join(attacker, NULL);
    double t_measured = now_s() - t_attack, self1 = process_cpu_s();
    kmsd_cpu(&cpu1);
    double loadavg[1] = {0};
    (void)getloadavg(loadavg, 1);
    /* Past the 10 s handshake timeout of the last connection opened. */
    double wait = last_open + 11.0 - now_s();
    if (wait > 0) {
        struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
        nanosleep(&ts, NULL);
    }
    int fds_after = kmsd_fds();
    int handshakes = a.handshakes;

    printf("bench_hostile: %d idle TLS connections (%d handshakes done, %.1f s to open) + %d "
           "slowloris\n",
           IDLE_TLS, handshakes, opened, SLOWLORIS);
    printf("  legitimate client, one call at a time (Health/Encrypt):\n");
    double b50 = percentile(&base_s, 50), b99 = percentile(&base_s, 99);
    double a50 = percentile(&attack_s, 50), a99 = percentile(&attack_s, 99);
    printf("    baseline        p50 %8.0f us  p99 %8.0f us  calls %zu  errors %lu\n", b50, b99,
           base_s.n, base_s.errors);
    printf("    under attack    p50 %8.0f us  p99 %8.0f us  calls %zu  errors %lu  (from the "
           "first connect to %.0f s after the last)\n",
           a50, a99, attack_s.n, attack_s.errors, seconds);
    printf("    p99 ratio %.2fx (target <= 2x)\n", b99 > 0 ? a99 / b99 : 0);
    printf("  kmsd open fds: %d before, %d at the peak (sampled each second), %d 11 s after the "
           "last connect (handshake timeout 10 s)\n",
           fds_before, fds_peak, fds_after);

    long hz = sysconf(_SC_CLK_TCK);
    double kmsd_total = 0;
    printf("  CPU during the attack (%.1f s wall, 2 cores = %.1f core-s; load average %.1f):\n",
           t_measured, 2 * t_measured, loadavg[0]);
    for (int i = 0; i < cpu1.n; i++) {
        long long before = 0;
        for (int j = 0; j < cpu0.n; j++)
            if (strcmp(cpu0.name[j], cpu1.name[i]) == 0)
                before = cpu0.ticks[j];
        double sec = (double)(cpu1.ticks[i] - before) / (double)hz;
        kmsd_total += sec;
        if (sec >= 0.01)
            printf("    kmsd thread %-16s %6.2f s\n", cpu1.name[i], sec);
    }
    printf("    kmsd total              %6.2f s\n", kmsd_total);
    printf("    attacker thread         %6.2f s (its TLS handshakes)\n", a.cpu_s);
    printf("    legitimate client       %6.2f s (the rest of this process)\n",
           self1 - self0 - a.cpu_s);

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
