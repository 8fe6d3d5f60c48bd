/* A real kmsd process for integration tests (kmsd_fixture.h). */
#include "kmsd_fixture.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "grpc_test_client.h"

extern char **environ;

/* Every kmsd this process started and has not reaped. A test that fails
 * where it would have stopped its kmsd (an assertion in a teardown, an
 * abort) must not leave kmsd running: it holds ctest's output pipe, and
 * ctest would wait for it until the test's timeout. */
#define MAX_LIVE 16
static pid_t live[MAX_LIVE];

static void live_add(pid_t pid)
{
    for (size_t i = 0; i < MAX_LIVE; i++)
        if (live[i] == 0) {
            live[i] = pid;
            return;
        }
}

static void live_remove(pid_t pid)
{
    for (size_t i = 0; i < MAX_LIVE; i++)
        if (live[i] == pid)
            live[i] = 0;
}

static void kill_live(void)
{
    for (size_t i = 0; i < MAX_LIVE; i++)
        if (live[i] > 0) {
            kill(live[i], SIGKILL);
            waitpid(live[i], NULL, 0);
            live[i] = 0;
        }
}

static void die(const char *what)
{
    fprintf(stderr, "kmsd fixture: %s\n", what);
    kill_live();
    abort();
}

static const char *env_or_die(const char *name)
{
    const char *v = getenv(name);
    if (v == NULL || v[0] == '\0') {
        fprintf(stderr, "kmsd fixture: %s must be set (run through ctest)\n", name);
        abort();
    }
    return v;
}

const char *kms_test_kmsd_pki(const kms_test_kmsd *k, const char *file, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s", k->pki, file);
    return buf;
}

static void pki(kms_test_kmsd *k, const char *const *args)
{
    char *argv[8];
    size_t n = 0;
    argv[n++] = (char *)env_or_die("KMS_DEV_PKI");
    argv[n++] = k->pki;
    for (; args[n - 2] != NULL && n < 7; n++)
        argv[n] = (char *)args[n - 2];
    argv[n] = NULL;
    char out[8192];
    if (kms_test_run(argv, out, sizeof(out)) != 0) {
        fprintf(stderr, "%s\n", out);
        die("scripts/dev-pki failed");
    }
}

static void write_config(kms_test_kmsd *k, const char *p11_extra)
{
    FILE *f = fopen(k->config, "w");
    if (f == NULL)
        die("write kmsd.yaml");
    /* Relative paths: relative to the config file's directory. */
    fprintf(f,
            "# written by tests/integration/kmsd_fixture.c\n"
            "listen: 127.0.0.1:0\n"
            "tls:\n"
            "  cert: pki/server.pem\n"
            "  key: pki/server-key.pem\n"
            "  client_ca: pki/ca.pem\n"
            "database: kms.db\n"
            "pkcs11:\n"
            "  module: %s\n"
            "  token_label: %s\n"
            "  pin_file: pin\n"
            "  sessions: 4\n"
            "%s"
            "workers: 4\n"
            "log_level: warn\n"
            "init:\n"
            "  officers:\n"
            "    - {id: officer1, identity: \"spiffe://kms.local/officer1\", "
            "signing_key: pki/officer1-signing-pub.pem}\n"
            "    - {id: officer2, identity: \"spiffe://kms.local/officer2\", "
            "signing_key: pki/officer2-signing-pub.pem}\n"
            "    - {id: officer3, identity: \"spiffe://kms.local/officer3\", "
            "signing_key: pki/officer3-signing-pub.pem}\n"
            "  auditors: [\"" KMS_TEST_AUDITOR_ID "\"]\n"
            "  thresholds:\n"
            "    default: 2\n"
            "    RemoveOfficer: 3\n"
            "  keys:\n"
            "    - name: demo\n"
            "      encrypt: [\"" KMS_TEST_APP_ID "\"]\n"
            "      decrypt: [\"" KMS_TEST_APP_ID "\"]\n"
            "      reencrypt: [\"" KMS_TEST_APP_ID "\"]\n"
            "    - name: second\n"
            "      encrypt: [\"" KMS_TEST_APP_ID "\"]\n"
            "      decrypt: [\"" KMS_TEST_APP_ID "\"]\n"
            "      reencrypt: [\"" KMS_TEST_APP_ID "\"]\n"
            "    - name: locked\n"
            "      encrypt: [\"spiffe://kms.local/someone-else\"]\n"
            "      decrypt: [\"spiffe://kms.local/someone-else\"]\n"
            "    - name: cnkey\n"
            "      encrypt: [\"cn:cnonly\"]\n"
            "      decrypt: [\"cn:cnonly\"]\n",
            k->token.module, k->token.label, p11_extra);
    fclose(f);
}

int kms_test_kmsd_run(const char *const *args, char *out, size_t cap)
{
    char *argv[64];
    size_t n = 0;
    argv[n++] = (char *)env_or_die("KMS_KMSD");
    for (size_t i = 0; args[i] != NULL && n < 63; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    return kms_test_run(argv, out, cap);
}

static void setup_in(kms_test_kmsd *k, const char *p11_extra);

void kms_test_kmsd_setup(kms_test_kmsd *k)
{
    memset(k, 0, sizeof(*k));
    if (kms_test_token_create(&k->token, "kmsd-test") != 0)
        die("token");
    setup_in(k, "");
}

void kms_test_kmsd_setup_nss(kms_test_kmsd *k)
{
    memset(k, 0, sizeof(*k));
    kms_test_nss nss;
    if (kms_test_nss_create(&nss) != 0)
        die("NSS database");
    k->token = nss.token;
    char extra[900];
    int n = snprintf(extra, sizeof(extra),
                     "  init_args: \"%s\"\n"
                     "  allow_nonlocal_keys: true\n",
                     nss.init_args);
    if (n < 0 || (size_t)n >= sizeof(extra))
        die("init_args too long");
    setup_in(k, extra);
}

/* The rest of the setup, once k->token is there. */
static void setup_in(kms_test_kmsd *k, const char *p11_extra)
{
    snprintf(k->pki, sizeof(k->pki), "%s/pki", k->token.dir);
    snprintf(k->db, sizeof(k->db), "%s/kms.db", k->token.dir);
    snprintf(k->config, sizeof(k->config), "%s/kmsd.yaml", k->token.dir);

    const char *all[] = {"all", NULL};
    const char *bob[] = {"client", "bob", KMS_TEST_BOB_ID, NULL};
    const char *cn[] = {"client-cn", "cnonly", NULL};
    const char *two[] = {"client", "twouri", KMS_TEST_APP_ID, KMS_TEST_BOB_ID, NULL};
    const char *two_cn[] = {"client-cn", "twocn", "cnonly", "other", NULL};
    const char *spoof[] = {"client-cn", "cnspoof", "spiffe://kms.local/officer1", NULL};
    const char *auditor[] = {"client", "auditor", KMS_TEST_AUDITOR_ID, NULL};
    pki(k, all);
    pki(k, bob);
    pki(k, cn);
    pki(k, two);
    pki(k, two_cn);
    pki(k, spoof);
    pki(k, auditor);
    write_config(k, p11_extra);

    const char *init[] = {"--config", k->config, "init", NULL};
    char out[16384];
    int st = kms_test_kmsd_run(init, out, sizeof(out));
    if (st != 0) {
        fprintf(stderr, "%s\n", out);
        die("kmsd init failed");
    }
}

void kms_test_kmsd_start(kms_test_kmsd *k, const char *const *extra)
{
    char *argv[64];
    size_t n = 0;
    argv[n++] = (char *)env_or_die("KMS_KMSD");
    argv[n++] = "--config";
    argv[n++] = k->config;
    for (size_t i = 0; extra != NULL && extra[i] != NULL && n < 62; i++)
        argv[n++] = (char *)extra[i];
    argv[n++] = "run";
    argv[n] = NULL;

    int pipefd[2];
    if (pipe(pipefd) != 0)
        die("pipe");
    /* fork + exec rather than posix_spawn: the child asks the kernel to
     * kill it when this test dies, so a crashed or aborted test never
     * leaves a kmsd holding ctest's output pipe open (ctest would wait for
     * it until the test's timeout). Only async-signal-safe calls run
     * between fork and exec. */
    pid_t parent = getpid();
    k->pid = fork();
    if (k->pid < 0)
        die("fork kmsd");
    if (k->pid == 0) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(127);
        if (dup2(pipefd[1], 1) < 0)
            _exit(127);
        close(pipefd[0]);
        close(pipefd[1]);
        execve(argv[0], argv, environ);
        _exit(127);
    }
    close(pipefd[1]);
    static int registered;
    if (!registered && atexit(kill_live) == 0)
        registered = 1;
    live_add(k->pid);

    /* Read stdout until the ready line: "kmsd ready on 127.0.0.1:PORT". */
    char buf[512];
    size_t used = 0;
    time_t until = time(NULL) + 60;
    const char *ready = NULL;
    while (ready == NULL) {
        struct pollfd p = {.fd = pipefd[0], .events = POLLIN};
        int left = (int)(until - time(NULL));
        if (left <= 0 || poll(&p, 1, left * 1000) <= 0)
            die("kmsd did not print its ready line within 60 s");
        ssize_t got = read(pipefd[0], buf + used, sizeof(buf) - 1 - used);
        if (got <= 0)
            die("kmsd exited before it was ready (see its log above)");
        used += (size_t)got;
        buf[used] = '\0';
        ready = strstr(buf, "kmsd ready on ");
        if (ready != NULL && strchr(ready, '\n') == NULL)
            ready = NULL; /* wait for the whole line */
        if (used == sizeof(buf) - 1)
            die("unexpected output from kmsd");
    }
    close(pipefd[0]);
    const char *colon = strrchr(ready, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (port <= 0 || port > 65535 || end == NULL || *end != '\n')
        die("cannot parse the ready line");
    k->port = (int)port;
    snprintf(k->target, sizeof(k->target), "127.0.0.1:%d", k->port);
}

int kms_test_kmsd_stop(kms_test_kmsd *k, int sig)
{
    if (k->pid <= 0)
        return -1;
    kill(k->pid, sig);
    int status = 0;
    for (int i = 0; i < 600; i++) {
        pid_t w = waitpid(k->pid, &status, WNOHANG);
        if (w == k->pid) {
            live_remove(k->pid);
            k->pid = 0;
            if (WIFEXITED(status))
                return WEXITSTATUS(status);
            return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(k->pid, SIGKILL);
    waitpid(k->pid, &status, 0);
    live_remove(k->pid);
    k->pid = 0;
    return -1;
}

void kms_test_kmsd_teardown(kms_test_kmsd *k)
{
    if (k->pid > 0) {
        kill(k->pid, SIGKILL);
        waitpid(k->pid, NULL, 0);
        live_remove(k->pid);
        k->pid = 0;
    }
    kms_test_token_destroy(&k->token);
}

long kms_test_proc_kib(pid_t pid, const char *name)
{
    char path[64], line[256];
    long v = -1;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, name, strlen(name)) == 0)
            v = strtol(line + strlen(name), NULL, 10);
    fclose(f);
    return v;
}

void kms_test_kmsd_creds(const kms_test_kmsd *k, const char *name, kms_test_creds *c)
{
    char f[64];
    memset(c, 0, sizeof(*c));
    kms_test_kmsd_pki(k, "ca.pem", c->ca, sizeof(c->ca));
    if (name == NULL)
        return;
    snprintf(f, sizeof(f), "%s.pem", name);
    kms_test_kmsd_pki(k, f, c->cert, sizeof(c->cert));
    snprintf(f, sizeof(f), "%s-key.pem", name);
    kms_test_kmsd_pki(k, f, c->key, sizeof(c->key));
}

kms_tc *kms_test_kmsd_open_as(const kms_test_kmsd *k, const char *name)
{
    kms_test_creds cr;
    kms_tc *c = NULL;
    kms_test_kmsd_creds(k, name, &cr);
    if (kms_tc_open(k->target, cr.ca, name ? cr.cert : NULL, name ? cr.key : NULL, &c) != 0 ||
        c == NULL)
        die("cannot open a test client");
    return c;
}

char *kms_test_kmsd_dir(const kms_test_kmsd *k, char *out, size_t cap)
{
    const char *slash = strrchr(k->config, '/');
    size_t n = slash != NULL ? (size_t)(slash - k->config) : 0;
    if (slash == NULL || n >= cap)
        die("fixture dir does not fit");
    memcpy(out, k->config, n);
    out[n] = '\0';
    return out;
}

size_t kms_test_kmsd_officer_sign(const kms_test_kmsd *k, const char *officer,
                                  const uint8_t digest[32], uint8_t sig[256])
{
    char name[64], path[400];
    snprintf(name, sizeof(name), "%s-signing-key.pem", officer);
    FILE *f = fopen(kms_test_kmsd_pki(k, name, path, sizeof(path)), "r");
    if (f == NULL)
        die("cannot open an officer's signing key");
    EVP_PKEY *pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t len = 256;
    int ok = pk != NULL && md != NULL &&
             EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pk) == 1 &&
             EVP_DigestSign(md, sig, &len, digest, 32) == 1;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pk);
    if (!ok)
        die("cannot sign with an officer's signing key");
    return len;
}

int kms_test_kmsd_token_objects(const kms_test_kmsd *k)
{
    static char out[1 << 16];
    if (kms_test_token_list_objects(&k->token, out, sizeof(out)) != 0)
        die("pkcs11-tool cannot list the token's objects");
    int n = 0;
    for (const char *p = out; (p = strstr(p, "kms:")) != NULL; p += 4)
        n++;
    return n;
}
