/* kmsd's mutual TLS and caller identity, against a real kmsd process:
 * callers without a certificate, with one from another CA, with an expired
 * one, over plaintext, or with an ambiguous identity are all refused with
 * nothing changed; a certificate without a URI SAN is refused unless
 * tls.cn_identities is on, and then it is "cn:CN", never the URI its CN
 * spells, and a subject with two CNs is refused; with tls.crl a revoked
 * certificate fails the handshake, SIGHUP reloads the CRLs without
 * closing open channels, and an expired CRL refuses everyone unless
 * tls.crl_allow_expired; connections that never finish their handshake
 * (idle or slowloris) are closed after limits.handshake_timeout_ms, so
 * kmsd's fd count falls back while they stay open on the client side; the
 * --insecure-dev listener is plaintext with one fixed identity, and only
 * on a loopback address; a release kmsd refuses test-only settings;
 * GRPC_TRACE and GRPC_VERBOSITY=debug are cleared with a warning. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <grpc/grpc.h>
#include <grpc/status.h>

#include "group_run.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc_test_client.h"
#include "kms/v1/kms.pb-c.h"
#include "kmsd_fixture.h"

#define KM "/kms.v1.KeyManagement/"
#define HEALTH "/grpc.health.v1.Health/Check"

static kms_test_kmsd K;

static int group_setup(void **state)
{
    (void)state;
    grpc_init();
    kms_test_kmsd_setup(&K);
    kms_test_kmsd_start(&K, NULL);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int st = K.pid > 0 ? kms_test_kmsd_stop(&K, SIGTERM) : 0;
    kms_test_kmsd_teardown(&K);
    kms_tc_grpc_shutdown();
    return st == 0 ? 0 : -1;
}

/* A channel as NAME (NULL: no client certificate), trusting our CA. */
static kms_tc *open_as(const char *name)
{
    kms_tc *c = kms_test_kmsd_open_as(&K, name);
    kms_tc_set_timeout(c, 5000);
    return c;
}

static int health(kms_tc *c)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    return kms_tc_call(c, HEALTH, &req.base, NULL, NULL, NULL, 0);
}

static int encrypt(kms_tc *c, const char *key)
{
    Kms__V1__EncryptRequest req = KMS__V1__ENCRYPT_REQUEST__INIT;
    req.key_name = (char *)key;
    req.plaintext.data = (uint8_t *)"payload";
    req.plaintext.len = 7;
    return kms_tc_call(c, KM "Encrypt", &req.base, NULL, NULL, NULL, 0);
}

static size_t snapshot(uint8_t *buf, size_t cap)
{
    kms_tc *o = open_as("officer1");
    uint8_t *out = NULL;
    size_t len = 0;
    assert_int_equal(kms_tc_call_raw(o, KM "ListKeys", (const uint8_t *)"", 0, &out, &len, NULL, 0),
                     GRPC_STATUS_OK);
    assert_true(len <= cap);
    memcpy(buf, out, len);
    free(out);
    kms_tc_close(o);
    return len;
}

/* Every refused caller: the handshake or the identity fails, no method
 * runs, the server stays up and nothing changes. */
static void refused_callers(void **state)
{
    (void)state;
    static uint8_t before[1 << 16], after[1 << 16];
    size_t n = snapshot(before, sizeof(before));

    const struct {
        const char *what;
        const char *cert; /* NULL: no client certificate */
        int plaintext;
        int status;
    } cases[] = {
        {"no client certificate", NULL, 0, GRPC_STATUS_UNAVAILABLE},
        {"certificate from another CA", "stranger", 0, GRPC_STATUS_UNAVAILABLE},
        {"expired certificate", "expired", 0, GRPC_STATUS_UNAVAILABLE},
        {"plaintext", NULL, 1, GRPC_STATUS_UNAVAILABLE},
        {"two URI identities", "twouri", 0, GRPC_STATUS_UNAUTHENTICATED},
        {"no URI SAN (CN identities off)", "cnonly", 0, GRPC_STATUS_UNAUTHENTICATED},
        {"a CN spelling an officer's URI", "cnspoof", 0, GRPC_STATUS_UNAUTHENTICATED},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kms_tc *c = NULL;
        if (cases[i].plaintext)
            assert_int_equal(kms_tc_open(K.target, NULL, NULL, NULL, &c), 0);
        else
            c = open_as(cases[i].cert);
        kms_tc_set_timeout(c, 5000);
        int h = health(c), e = encrypt(c, "demo");
        if (h != cases[i].status || e != cases[i].status)
            fail_msg("%s: Health %d, Encrypt %d, expected %d", cases[i].what, h, e,
                     cases[i].status);
        kms_tc_close(c);
    }

    kms_tc *app = open_as("app");
    assert_int_equal(health(app), GRPC_STATUS_OK); /* still serving */
    kms_tc_close(app);
    assert_int_equal(snapshot(after, sizeof(after)), n);
    assert_memory_equal(after, before, n);
}

/* kmsd restarted with its config changed: `from` replaced by `to` (NULL:
 * restore the original). */
static void restart_with(const char *from, const char *to)
{
    static char orig[16384];
    static size_t orig_len;
    char text[16384];
    FILE *f;
    assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
    if (orig_len == 0) {
        assert_non_null(f = fopen(K.config, "r"));
        orig_len = fread(orig, 1, sizeof(orig) - 1, f);
        fclose(f);
        assert_true(orig_len > 0 && orig_len < sizeof(orig) - 1);
    }
    orig[orig_len] = '\0';
    if (from != NULL) {
        const char *at = strstr(orig, from);
        assert_non_null(at);
        int n =
            snprintf(text, sizeof(text), "%.*s%s%s", (int)(at - orig), orig, to, at + strlen(from));
        assert_true(n > 0 && (size_t)n < sizeof(text));
    } else {
        memcpy(text, orig, orig_len + 1);
    }
    assert_non_null(f = fopen(K.config, "w"));
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    kms_test_kmsd_start(&K, NULL);
}

/* How many keys ListKeys shows the caller (officers see every key, others
 * only those their policy names); -1 if the call fails. */
static int keys_listed(kms_tc *c)
{
    Kms__V1__ListKeysRequest req = KMS__V1__LIST_KEYS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    if (kms_tc_call(c, KM "ListKeys", &req.base, &kms__v1__list_keys_response__descriptor, &resp,
                    NULL, 0) != GRPC_STATUS_OK)
        return -1;
    int n = (int)((Kms__V1__ListKeysResponse *)resp)->n_keys;
    protobuf_c_message_free_unpacked(resp, NULL);
    return n;
}

/* With tls.cn_identities: a certificate without a URI SAN is "cn:" + its
 * CN (the policy of cnkey grants cn:cnonly); a CN that spells officer1's
 * URI is not officer1; two CNs are refused; a URI SAN still wins. */
static void cn_identity(void **state)
{
    (void)state;
    restart_with("tls:\n", "tls:\n  cn_identities: true\n");
    kms_tc *c = open_as("cnspoof");
    assert_int_equal(keys_listed(c), 0); /* not an officer */
    assert_int_equal(encrypt(c, "cnkey"), GRPC_STATUS_PERMISSION_DENIED);
    kms_tc_close(c);
    c = open_as("officer1");
    assert_int_equal(keys_listed(c), 4);
    kms_tc_close(c);
    c = open_as("twocn"); /* its first CN is cnonly */
    assert_int_equal(health(c), GRPC_STATUS_UNAUTHENTICATED);
    assert_int_equal(encrypt(c, "cnkey"), GRPC_STATUS_UNAUTHENTICATED);
    kms_tc_close(c);
    c = open_as("cnonly");
    assert_int_equal(encrypt(c, "cnkey"), GRPC_STATUS_OK);
    assert_int_equal(encrypt(c, "demo"), GRPC_STATUS_PERMISSION_DENIED);
    kms_tc_close(c);
    /* The app's certificate has CN=app: its URI wins, "app" has no rights. */
    c = open_as("app");
    assert_int_equal(encrypt(c, "cnkey"), GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(encrypt(c, "demo"), GRPC_STATUS_OK);
    kms_tc_close(c);
    restart_with(NULL, NULL);
    c = open_as("cnonly"); /* off again */
    assert_int_equal(encrypt(c, "cnkey"), GRPC_STATUS_UNAUTHENTICATED);
    kms_tc_close(c);
}

/* scripts/dev-pki PKI CMD NAME [CERT] into the fixture's PKI. */
static void dev_pki(const char *cmd, const char *name, const char *cert)
{
    char *argv[] = {getenv("KMS_DEV_PKI"), K.pki, (char *)cmd, (char *)name, (char *)cert, NULL};
    char out[4096];
    assert_non_null(argv[0]);
    if (kms_test_run(argv, out, sizeof(out)) != 0)
        fail_msg("dev-pki %s: %s", cmd, out);
}

/* Health as `name` on a fresh channel. */
static int health_as(const char *name)
{
    kms_tc *c = open_as(name);
    int st = health(c);
    kms_tc_close(c);
    return st;
}

/* Waits (up to 10 s) until a fresh channel as `name` gets `want`. */
static int wait_health_as(const char *name, int want)
{
    int st = -1;
    for (int i = 0; i < 100 && (st = health_as(name)) != want; i++) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return st;
}

/* tls.crl: bob's certificate is revoked; the handshake refuses him
 * (UNAVAILABLE, as for any failed handshake), not the others. SIGHUP loads
 * the file again: a CRL that revokes no one lets bob in, and a channel
 * opened before the reload keeps working; a file that no longer holds a
 * CRL leaves the previous CRL in force. An expired CRL refuses everyone,
 * unless tls.crl_allow_expired. */
static void revocation(void **state)
{
    (void)state;
    dev_pki("crl", "crl", "bob");
    dev_pki("crl-expired", "crl-old", NULL);
    restart_with("tls:\n", "tls:\n  crl: pki/crl.pem\n");
    assert_int_equal(health_as("bob"), GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(health_as("app"), GRPC_STATUS_OK);
    /* The listener's other credentials still verify the chain. */
    assert_int_equal(health_as("stranger"), GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(health_as("expired"), GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(health_as(NULL), GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(health_as("twouri"), GRPC_STATUS_UNAUTHENTICATED);
    kms_tc *open = open_as("app");
    assert_int_equal(encrypt(open, "demo"), GRPC_STATUS_OK);

    dev_pki("crl", "crl", NULL); /* revokes no one */
    assert_int_equal(kill(K.pid, SIGHUP), 0);
    assert_int_equal(wait_health_as("bob", GRPC_STATUS_OK), GRPC_STATUS_OK);
    assert_int_equal(encrypt(open, "demo"), GRPC_STATUS_OK); /* not dropped */

    dev_pki("crl", "crl", "bob");
    assert_int_equal(kill(K.pid, SIGHUP), 0);
    assert_int_equal(wait_health_as("bob", GRPC_STATUS_UNAVAILABLE), GRPC_STATUS_UNAVAILABLE);
    char path[400];
    FILE *f = fopen(kms_test_kmsd_pki(&K, "crl.pem", path, sizeof(path)), "w");
    assert_non_null(f);
    fputs("not a CRL\n", f);
    fclose(f);
    assert_int_equal(kill(K.pid, SIGHUP), 0);
    struct timespec ts = {1, 0};
    nanosleep(&ts, NULL);
    assert_int_equal(health_as("bob"), GRPC_STATUS_UNAVAILABLE); /* the previous CRL */
    assert_int_equal(health_as("app"), GRPC_STATUS_OK);
    assert_int_equal(encrypt(open, "demo"), GRPC_STATUS_OK);
    kms_tc_close(open);

    restart_with("tls:\n", "tls:\n  crl: pki/crl-old.pem\n");
    assert_int_equal(health_as("app"), GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(health_as("officer1"), GRPC_STATUS_UNAVAILABLE);
    restart_with("tls:\n", "tls:\n  crl: pki/crl-old.pem\n  crl_allow_expired: true\n");
    assert_int_equal(health_as("app"), GRPC_STATUS_OK);
    restart_with(NULL, NULL);
}

/* kmsd's open file descriptors. */
static int kmsd_fds(void)
{
    char path[64];
    int n = 0;
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)K.pid);
    DIR *d = opendir(path);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

#define HOSTILE 300

/* 300 TCP connections to kmsd that never finish a TLS handshake: half send
 * nothing, half one byte of a ClientHello every 200 ms (slowloris). kmsd
 * accepts them all, keeps serving a legitimate client meanwhile, and with
 * limits.handshake_timeout_ms 1000 closes every one of them within a few
 * seconds though the clients keep them open: its fd count returns to
 * where it was. (gRPC's default is 120 s: on the old code the count stays
 * up.) */
static void handshake_timeout_bounds_fds(void **state)
{
    (void)state;
    static int fds[HOSTILE];
    restart_with("listen:", "limits:\n  handshake_timeout_ms: 1000\nlisten:");
    assert_int_equal(health_as("app"), GRPC_STATUS_OK);
    int base = kmsd_fds();

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)K.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < HOSTILE; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(fds[i] >= 0);
        assert_int_equal(connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)), 0);
    }
    int peak = 0;
    static const unsigned char hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};
    for (int tick = 0; tick < 20; tick++) { /* 4 s */
        for (int i = 0; i < HOSTILE; i += 2)
            (void)!send(fds[i], &hello[tick % sizeof(hello)], 1, MSG_NOSIGNAL);
        int now = kmsd_fds();
        peak = now > peak ? now : peak;
        if (tick == 2)
            assert_int_equal(health_as("app"), GRPC_STATUS_OK);
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    int after = kmsd_fds();
    print_message("kmsd fds: %d before, %d at the peak, %d after 4 s (limit 1 s)\n", base, peak,
                  after);
    assert_true(peak >= base + HOSTILE / 2); /* they were accepted */
    assert_true(after <= base + 10);
    assert_int_equal(health_as("app"), GRPC_STATUS_OK);
    for (int i = 0; i < HOSTILE; i++)
        close(fds[i]);
    restart_with(NULL, NULL);
}

/* --insecure-dev: plaintext only, every caller is "insecure-dev", which no
 * policy names here. */
static void insecure_dev_listener(void **state)
{
    (void)state;
    assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
    const char *extra[] = {"--insecure-dev", NULL};
    kms_test_kmsd_start(&K, extra);

    kms_tc *c = NULL;
    assert_int_equal(kms_tc_open(K.target, NULL, NULL, NULL, &c), 0);
    assert_int_equal(health(c), GRPC_STATUS_OK);
    assert_int_equal(encrypt(c, "demo"), GRPC_STATUS_PERMISSION_DENIED);
    kms_tc_close(c);
    c = open_as("app"); /* TLS to a plaintext listener */
    assert_int_equal(health(c), GRPC_STATUS_UNAVAILABLE);
    kms_tc_close(c);

    assert_int_equal(kms_test_kmsd_stop(&K, SIGINT), 0);
}

/* What a kmsd binary prints for argv (NULL-terminated, after argv[0]);
 * returns its exit status. */
static int run_kmsd(const char *binary_env, const char *const *args, char *out, size_t cap)
{
    char *argv[16];
    size_t n = 0;
    argv[n++] = getenv(binary_env);
    assert_non_null(argv[0]);
    for (size_t i = 0; args[i] != NULL && n < 15; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    return kms_test_run(argv, out, cap);
}

/* A release kmsd (built without KMS_TEST_HOOKS) knows no --test-* flag and
 * refuses test_clock_file and test_crash_at in its file; the test build
 * takes them (test_kmsd_quorum runs on them). --insecure-dev is refused
 * on a non-loopback address. GRPC_TRACE and GRPC_VERBOSITY=debug are
 * cleared at start, with a warning. */
static void unsafe_settings_refused(void **state)
{
    (void)state;
    char out[16384], cfg[400], dir[320];
    const char *flag[] = {"--config", K.config, "--test-clock", "/nonexistent", "run", NULL};
    assert_int_equal(run_kmsd("KMS_KMSD_RELEASE", flag, out, sizeof(out)), 2);
    assert_non_null(strstr(out, "test-clock"));

    snprintf(cfg, sizeof(cfg), "%s/release.yaml", kms_test_kmsd_dir(&K, dir, sizeof(dir)));
    static const char *const lines[] = {"test_clock_file: clock\n", "test_crash_at: x\n"};
    for (size_t i = 0; i < 2; i++) {
        char text[16384];
        FILE *f = fopen(K.config, "r");
        assert_non_null(f);
        size_t n = fread(text, 1, sizeof(text) - 1, f);
        fclose(f);
        text[n] = '\0';
        assert_non_null(f = fopen(cfg, "w"));
        fputs(text, f);
        fputs(lines[i], f);
        fclose(f);
        const char *file[] = {"--config", cfg, "run", NULL};
        assert_int_equal(run_kmsd("KMS_KMSD_RELEASE", file, out, sizeof(out)), 2);
        assert_non_null(strstr(out, "test-only setting"));
    }

    const char *wild[] = {"--config",       K.config, "--listen", "0.0.0.0:0",
                          "--insecure-dev", "run",    NULL};
    assert_int_equal(setenv("GRPC_TRACE", "all", 1), 0);
    assert_int_equal(setenv("GRPC_VERBOSITY", "DEBUG", 1), 0);
    int st = run_kmsd("KMS_KMSD", wild, out, sizeof(out));
    unsetenv("GRPC_TRACE");
    unsetenv("GRPC_VERBOSITY");
    assert_int_equal(st, 2);
    assert_non_null(strstr(out, "only on a loopback listen address"));
    assert_non_null(strstr(out, "GRPC_TRACE is set: cleared"));
    assert_non_null(strstr(out, "GRPC_VERBOSITY=debug: cleared"));
}

/* ---- rotating the server certificate on SIGHUP --------------------------------------- */

/* The first certificate block of a PEM file. */
static void first_cert(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, cap - 1, f);
    fclose(f);
    out[n] = '\0';
    char *end = strstr(out, "-----END CERTIFICATE-----");
    assert_non_null(end);
    end[strlen("-----END CERTIFICATE-----")] = '\0';
}

/* 1 if a fresh TLS connection (openssl s_client, as app) is served `pem`. */
static int served_cert_is(const char *pem)
{
    char cmd[2048], cert[400], key[400], ca[400];
    kms_test_kmsd_pki(&K, "app.pem", cert, sizeof(cert));
    kms_test_kmsd_pki(&K, "app-key.pem", key, sizeof(key));
    kms_test_kmsd_pki(&K, "ca.pem", ca, sizeof(ca));
    snprintf(cmd, sizeof(cmd),
             "openssl s_client -connect %s -cert %s -key %s -CAfile %s -alpn h2 </dev/null "
             "2>/dev/null",
             K.target, cert, key, ca);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    static char out[65536];
    (void)kms_test_run(argv, out, sizeof(out));
    return strstr(out, pem) != NULL;
}

struct looper {
    volatile int stop;
    unsigned calls, failed;
    int last_failure;
};

/* Health on one long-lived channel and on a fresh channel (a new
 * handshake) in turn, until told to stop. */
static void *loop_calls(void *arg)
{
    struct looper *l = arg;
    kms_tc *kept = open_as("app");
    while (!l->stop) {
        int st = health(kept);
        kms_tc *fresh = open_as("app");
        int st2 = health(fresh);
        kms_tc_close(fresh);
        l->calls += 2;
        if (st != GRPC_STATUS_OK || st2 != GRPC_STATUS_OK) {
            l->failed++;
            l->last_failure = st != GRPC_STATUS_OK ? st : st2;
        }
    }
    kms_tc_close(kept);
    return NULL;
}

/* SIGHUP replaces the server certificate and key while a client loops on a
 * kept channel and on fresh ones: no call fails, and a new connection is
 * served the new certificate. A key that does not match the certificate
 * (a half-done rotation) keeps the old pair, and kmsd says why. The old
 * code loaded the certificate once, at start. */
static void server_certificate_rotation(void **state)
{
    (void)state;
    static char before[8192], after[8192], path[400];
    dev_pki("crl", "crl", "bob"); /* the CRLs are reloaded with the rest */
    restart_with("tls:\n", "tls:\n  crl: pki/crl.pem\n");
    first_cert(kms_test_kmsd_pki(&K, "server.pem", path, sizeof(path)), before, sizeof(before));
    assert_true(served_cert_is(before));

    struct looper l = {0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, loop_calls, &l), 0);
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    dev_pki("server", NULL, NULL); /* a new key and certificate, same CA */
    first_cert(path, after, sizeof(after));
    assert_string_not_equal(before, after);
    assert_int_equal(kill(K.pid, SIGHUP), 0);
    int seen = 0;
    for (int i = 0; i < 50 && !(seen = served_cert_is(after)); i++)
        nanosleep(&ts, NULL);
    nanosleep(&ts, NULL);
    l.stop = 1;
    assert_int_equal(pthread_join(t, NULL), 0);
    print_message("certificate rotation: %u calls while rotating, %u failed\n", l.calls, l.failed);
    assert_true(seen);
    assert_true(l.calls > 0);
    if (l.failed != 0)
        fail_msg("%u of %u calls failed (last status %d)", l.failed, l.calls, l.last_failure);
    assert_int_equal(health_as("app"), GRPC_STATUS_OK);

    /* A key of another certificate: refused, the current pair stays. */
    char key[400], other[400], cmd[1000];
    snprintf(cmd, sizeof(cmd), "cp %s %s",
             kms_test_kmsd_pki(&K, "app-key.pem", other, sizeof(other)),
             kms_test_kmsd_pki(&K, "server-key.pem", key, sizeof(key)));
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    assert_int_equal(kms_test_run(argv, NULL, 0), 0);
    assert_int_equal(kill(K.pid, SIGHUP), 0);
    struct timespec two = {2, 0};
    nanosleep(&two, NULL);
    assert_true(served_cert_is(after));
    assert_int_equal(health_as("app"), GRPC_STATUS_OK);
    dev_pki("server", NULL, NULL);
    restart_with(NULL, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(refused_callers),
        cmocka_unit_test(cn_identity),
        cmocka_unit_test(revocation),
        cmocka_unit_test(server_certificate_rotation),
        cmocka_unit_test(handshake_timeout_bounds_fds),
        cmocka_unit_test(unsafe_settings_refused),
        cmocka_unit_test(insecure_dev_listener),
    };
    return KMS_RUN_GROUP(tests, group_setup, group_teardown);
}
