/* kmsd: the key management daemon.
 *
 *   kmsd [--config FILE] [options] run     serve the API over mutual TLS
 *   kmsd [--config FILE] [options] init    the key ceremony (once)
 *   kmsd [--config FILE] [options] tpm2-provision   make the TPM's storage primary
 *   kmsd [--config FILE] [options] seal-state   make the state-integrity key (once, for a
 *                                               database initialised without one)
 *   kmsd [--config FILE] [options] audit-key    make the audit signing key and write its
 *                                               public key (a database from before it)
 *   kmsd [--config FILE] [options] verify-state   verify the state's MACs without serving
 *
 * Exit status: 0 success (including a clean shutdown on SIGTERM/SIGINT),
 * 1 runtime failure, 2 usage or configuration error. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc.h>
#include <grpc/support/log.h>
#include <openssl/evp.h>

#include "kmsd/audit/audit_key.h"
#include "kmsd/audit/audit_rpc.h"
#include "kmsd/backends.h"
#include "kmsd/ceremony.h"
#include "kmsd/config.h"
#include "base/crashpoint.h"
#include "base/file.h"
#include "kmsd/keyring/keyring.h"
#include "base/log.h"
#include "kmsd/policy/policy.h"
#include "kmsd/quorum/quorum.h"
#include "kmsd/quorum/quorum_actions.h"
#include "kmsd/rpc_table.h"
#include "base/secret.h"
#include "base/alloc.h"
#include "base/pb_alloc.h"
#include "kmsd/server/crl.h"
#include "kmsd/metrics/metrics.h"
#include "kmsd/server/server.h"
#include "kmsd/state/state.h"
#include "kmsd/state/writer_lock.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
/* Test hooks (test_clock_file, test_crash_at, --test-*) exist only in a
 * build configured with -DKMS_TEST_HOOKS=ON (the test build); a release
 * kmsd refuses them. */
#ifdef KMS_TEST_HOOKS
#define TEST_HOOKS_BUILT 1
#else
#define TEST_HOOKS_BUILT 0
#endif
#define PEM_MAX (256 * 1024)
#define MAX_OPTS 1024

static const char usage_text[] =
    "usage: kmsd [--config FILE] [options] run|init|tpm2-provision|seal-state|audit-key|\n"
    "            verify-state\n"
    "\n"
    "  run    serve the kms API over mutual TLS (prints \"kmsd ready on HOST:PORT\")\n"
    "  init   the key ceremony: create the database, check the backends, register\n"
    "         the first officers and thresholds and create the first keys (once)\n"
    "  tpm2-provision   create the TPM's persistent storage primary (a TPM added\n"
    "         after init; init does it when tpm2.tcti is set)\n"
    "  seal-state   create the state-integrity key on the PKCS#11 token for a\n"
    "         database initialised before kmsd had one (once; trust on first use)\n"
    "  audit-key    create the audit signing key on the PKCS#11 token if it has\n"
    "         none, and write its public key to audit.pubkey_file\n"
    "  verify-state   check every row MAC and the state digest without serving:\n"
    "         one line per failure, exit 0 only if all verify\n"
    "\n"
    "settings (override the config file; docs/configuration.md). Backends: the\n"
    "pkcs11 settings, --tpm2-tcti, or both; at least one.\n"
    "  --config FILE              YAML configuration file\n"
    "  --listen HOST:PORT         listen address (default 127.0.0.1:7443; port 0 = any)\n"
    "  --tls-cert FILE            server certificate (PEM)\n"
    "  --tls-key FILE             server private key (PEM)\n"
    "  --tls-client-ca FILE       CA that signs client certificates (PEM)\n"
    "  --database FILE            SQLite database\n"
    "  --pkcs11-module FILE       PKCS#11 module (e.g. libsofthsm2.so)\n"
    "  --token-label LABEL        token label\n"
    "  --pin-file FILE            file holding the user PIN\n"
    "  --sessions N               PKCS#11 sessions (0 = as many as workers)\n"
    "  --workers N                worker threads (0 = automatic)\n"
    "  --log-level LEVEL          debug, info, warn or error\n"
    "  --max-message-size BYTES   largest request accepted (default 65536)\n"
    "  --max-send-message-size BYTES  largest reply sent (default 4194304)\n"
    "  --insecure-dev             plaintext listener without client identity (development\n"
    "                             only; every caller is \"" KMS_RPC_INSECURE_IDENTITY "\")\n"
#ifdef KMS_TEST_HOOKS
    "  --test-clock FILE          tests only: read the time (unix seconds) from FILE\n"
    "  --test-crash-at POINT      tests only: SIGKILL at a crash point (base/crashpoint.h)\n"
#endif
    "  --tpm2-tcti TCTI           serve keys on a TPM 2.0 (device:/dev/tpmrm0,\n"
    "                             swtpm:host=127.0.0.1,port=N), beside PKCS#11 or alone\n"
    "  --tpm2-pcrs LIST           bind new sealed TPM keys to these PCRs (\"16,17\")\n"
    "  --audit-dir DIR            write the audit log here (docs/audit.md)\n"
    "  --audit-max-bytes BYTES    rotate audit files at this size\n"
    "\n"
    "init only:\n"
    "  --officer ID,IDENTITY,PUBKEY_PEM   an officer (repeat; at least 2)\n"
    "  --threshold N | ACTION=N           approval threshold, N >= 2 (default 2)\n"
    "  --create-key NAME                  create a key now (repeat)\n"
    "  --allow-encrypt IDENTITY           grant on the last --create-key (repeat)\n"
    "  --allow-decrypt IDENTITY\n"
    "  --allow-reencrypt IDENTITY\n"
    "  --auditor IDENTITY                 may read the audit log, nothing else (repeat)\n";

enum {
    OPT_CONFIG = 256,
    OPT_LISTEN,
    OPT_TLS_CERT,
    OPT_TLS_KEY,
    OPT_TLS_CA,
    OPT_DATABASE,
    OPT_MODULE,
    OPT_LABEL,
    OPT_PIN,
    OPT_SESSIONS,
    OPT_WORKERS,
    OPT_LOG_LEVEL,
    OPT_MAX_MSG,
    OPT_MAX_SEND,
    OPT_INSECURE,
    OPT_OFFICER,
    OPT_THRESHOLD,
    OPT_CREATE_KEY,
    OPT_ALLOW_ENCRYPT,
    OPT_ALLOW_DECRYPT,
    OPT_ALLOW_REENCRYPT,
    OPT_TEST_CLOCK,
    OPT_TEST_CRASH,
    OPT_TPM2_TCTI,
    OPT_TPM2_PCRS,
    OPT_AUDIT_DIR,
    OPT_AUDIT_MAX_BYTES,
    OPT_AUDITOR,
    OPT_HELP,
};

static const struct option long_options[] = {
    {"config", required_argument, NULL, OPT_CONFIG},
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"tls-client-ca", required_argument, NULL, OPT_TLS_CA},
    {"database", required_argument, NULL, OPT_DATABASE},
    {"pkcs11-module", required_argument, NULL, OPT_MODULE},
    {"token-label", required_argument, NULL, OPT_LABEL},
    {"pin-file", required_argument, NULL, OPT_PIN},
    {"sessions", required_argument, NULL, OPT_SESSIONS},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"max-message-size", required_argument, NULL, OPT_MAX_MSG},
    {"max-send-message-size", required_argument, NULL, OPT_MAX_SEND},
    {"insecure-dev", no_argument, NULL, OPT_INSECURE},
    {"officer", required_argument, NULL, OPT_OFFICER},
    {"threshold", required_argument, NULL, OPT_THRESHOLD},
    {"create-key", required_argument, NULL, OPT_CREATE_KEY},
    {"allow-encrypt", required_argument, NULL, OPT_ALLOW_ENCRYPT},
    {"allow-decrypt", required_argument, NULL, OPT_ALLOW_DECRYPT},
    {"allow-reencrypt", required_argument, NULL, OPT_ALLOW_REENCRYPT},
#ifdef KMS_TEST_HOOKS
    {"test-clock", required_argument, NULL, OPT_TEST_CLOCK},
    {"test-crash-at", required_argument, NULL, OPT_TEST_CRASH},
#endif
    {"tpm2-tcti", required_argument, NULL, OPT_TPM2_TCTI},
    {"tpm2-pcrs", required_argument, NULL, OPT_TPM2_PCRS},
    {"audit-dir", required_argument, NULL, OPT_AUDIT_DIR},
    {"audit-max-bytes", required_argument, NULL, OPT_AUDIT_MAX_BYTES},
    {"auditor", required_argument, NULL, OPT_AUDITOR},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

/* The setting each scalar flag overrides. */
static const char *setting_of(int opt)
{
    switch (opt) {
    case OPT_LISTEN:
        return "listen";
    case OPT_TLS_CERT:
        return "tls.cert";
    case OPT_TLS_KEY:
        return "tls.key";
    case OPT_TLS_CA:
        return "tls.client_ca";
    case OPT_DATABASE:
        return "database";
    case OPT_MODULE:
        return "pkcs11.module";
    case OPT_LABEL:
        return "pkcs11.token_label";
    case OPT_PIN:
        return "pkcs11.pin_file";
    case OPT_SESSIONS:
        return "pkcs11.sessions";
    case OPT_WORKERS:
        return "workers";
    case OPT_LOG_LEVEL:
        return "log_level";
    case OPT_MAX_MSG:
        return "max_message_size";
    case OPT_MAX_SEND:
        return "max_send_message_size";
    case OPT_TEST_CLOCK:
        return "test_clock_file";
    case OPT_TEST_CRASH:
        return "test_crash_at";
    case OPT_TPM2_TCTI:
        return "tpm2.tcti";
    case OPT_TPM2_PCRS:
        return "tpm2.pcrs";
    case OPT_AUDIT_DIR:
        return "audit.dir";
    case OPT_AUDIT_MAX_BYTES:
        return "audit.max_bytes";
    default:
        return NULL;
    }
}

static int apply_option(kms_config *c, int opt, const char *arg)
{
    const char *setting = setting_of(opt);
    if (setting != NULL)
        return kms_config_set(c, setting, arg);
    switch (opt) {
    case OPT_INSECURE:
        return kms_config_set(c, "insecure_dev", "true");
    case OPT_OFFICER:
        return kms_config_add_officer(c, arg);
    case OPT_THRESHOLD:
        return kms_config_add_threshold(c, arg);
    case OPT_CREATE_KEY:
        return kms_config_add_key(c, arg);
    case OPT_ALLOW_ENCRYPT:
        return kms_config_add_grant(c, "encrypt", arg);
    case OPT_ALLOW_DECRYPT:
        return kms_config_add_grant(c, "decrypt", arg);
    case OPT_ALLOW_REENCRYPT:
        return kms_config_add_grant(c, "reencrypt", arg);
    case OPT_AUDITOR:
        return kms_config_add_auditor(c, arg);
    default:
        return kms_error_set(KMS_EINVAL, "unknown option");
    }
}

/* gRPC's tracers (GRPC_TRACE=http, secure_endpoint, tsi, all, ...) print
 * frames after decryption, and GRPC_VERBOSITY=debug lets them out: both
 * would put plaintext and data keys in the log. They are removed from the
 * environment before gRPC reads it, with a warning. */
static void clear_grpc_debug_env(void)
{
    const char *trace = getenv("GRPC_TRACE");
    const char *verbosity = getenv("GRPC_VERBOSITY");
    if (trace != NULL && trace[0] != '\0') {
        kms_log_warn("GRPC_TRACE is set: cleared (gRPC's tracers would log decrypted frames)");
        unsetenv("GRPC_TRACE");
    }
    if (verbosity != NULL && strcasecmp(verbosity, "debug") == 0) {
        kms_log_warn("GRPC_VERBOSITY=debug: cleared (it would log decrypted frames)");
        unsetenv("GRPC_VERBOSITY");
    }
}

/* No core files (they would hold key material) and no ptrace by others. */
static int harden_process(void)
{
    struct rlimit none = {0, 0};
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 || setrlimit(RLIMIT_CORE, &none) != 0)
        return kms_error_set(KMS_EINTERNAL, "cannot disable core dumps: %s", strerror(errno));
    /* Read back what the kernel now says, so the log states it (the
     * secret-hygiene test checks this line) and a kernel that ignored the
     * request stops kmsd instead of leaving it dumpable. */
    struct rlimit core = {1, 1};
    int dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    if (dumpable != 0 || getrlimit(RLIMIT_CORE, &core) != 0 || core.rlim_cur != 0 ||
        core.rlim_max != 0)
        return kms_error_set(KMS_EINTERNAL, "core dumps are still enabled (dumpable %d)", dumpable);
    kms_log_debug("process hardened: dumpable=0 core_limit=0");
    return KMS_OK;
}

#ifdef KMS_TEST_HOOKS
/* Test build only, from the environment (one test each; a release kmsd
 * does not know the names): KMS_TEST_ALLOC_FAIL_FILE names the control file
 * of the allocation-failure tests (base/alloc.h, kms_alloc_test_control);
 * KMS_TEST_PB_QUARANTINE=1 keeps the wiping allocator's freed blocks
 * instead of reusing them (pb_alloc.h), so the secret-hygiene test's core
 * dump shows what free left in every block a request used. */
static void test_hooks_from_env(void)
{
    const char *alloc_file = getenv("KMS_TEST_ALLOC_FAIL_FILE");
    if (alloc_file != NULL && alloc_file[0] != '\0') {
        kms_log_warn("TEST ALLOCATION FAILURES: controlled by %s; never use this outside tests",
                     alloc_file);
        kms_alloc_test_control(alloc_file);
    }
    const char *quarantine = getenv("KMS_TEST_PB_QUARANTINE");
    if (quarantine != NULL && strcmp(quarantine, "1") == 0) {
        kms_log_warn(
            "TEST QUARANTINE: freed request blocks are kept; never use this outside tests");
        kms_pb_wiping_test_quarantine(1);
    }
    const char *unguard = getenv("KMS_TEST_NO_STATE_GUARD");
    if (unguard != NULL && strcmp(unguard, "1") == 0) {
        kms_log_warn("TEST: rows changed under the running kmsd are not verified; never use this "
                     "outside tests");
        kms_store_sqlite_test_unguard();
    }
}
#endif

/* Reads a PEM file into a NUL-terminated buffer: the private key as a
 * secret file (a kms_secret: locked, wiped on free; 0600, not a symlink,
 * ours), the others as plain regular files. Empty files are refused. */
static int read_pem(const char *path, int secret, kms_secret **sout, char **pout)
{
    kms_secret *s = NULL;
    char *buf = NULL;
    size_t len = 0;
    if (secret) {
        KMS_GUARD(kms_file_read_secret(path, PEM_MAX, &s));
        len = s->len;
    } else {
        KMS_GUARD(kms_file_read(path, PEM_MAX, KMS_FILE_REGULAR, &buf, &len));
    }
    if (len == 0) {
        kms_secret_free(s);
        free(buf);
        return kms_error_set(KMS_EINVAL, "%s: not a PEM file of at most %d bytes", path, PEM_MAX);
    }
    if (secret)
        *sout = s;
    else
        *pout = buf;
    return KMS_OK;
}

/* gRPC's own diagnostics (handshake failures, for example) go through
 * kms_log so the log has one format; a client's failed handshake is a
 * warning for the server, not an error. GRPC_VERBOSITY still decides what
 * the core emits. */
static void grpc_log_line(gpr_log_func_args *a)
{
    kms_log_level level = a->severity == GPR_LOG_SEVERITY_DEBUG  ? KMS_LOG_DEBUG
                          : a->severity == GPR_LOG_SEVERITY_INFO ? KMS_LOG_INFO
                                                                 : KMS_LOG_WARN;
    const char *file = strrchr(a->file ? a->file : "", '/');
    kms_log(level, "grpc %s:%d: %s",
            file      ? file + 1
            : a->file ? a->file
                      : "?",
            a->line, a->message ? a->message : "");
}

/* With the audit log on, a worker waits for its record's group commit:
 * the calls one fdatasync can carry are at most the workers, so kmsd then
 * runs the most workers (idle ones cost a thread each, nothing more). */
static unsigned auto_workers(int audit)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    long w = audit ? 64 : cpus > 0 ? cpus * 2 : 4;
    return (unsigned)(w < 4 ? 4 : w > 64 ? 64 : w);
}

struct daemon {
    kms_config cfg;
    kms_store *store;
    kms_keyring *keyring;
    kms_policy *policy;
    kms_quorum *quorum;
    /* the sweeper thread (quorum expiry, scheduled deletion, rotation) */
    pthread_t sweeper;
    int sweeper_up, stopping;
    pthread_mutex_t sweep_mu;
    pthread_cond_t sweep_cv;
    int db_lock;               /* the writer lock's descriptor + 1; 0: not held */
    kms_audit_sink *audit;     /* NULL: no audit.dir */
    char config_digest[65];    /* for the start and init records (config_digest) */
    kms_audit_signer signer;   /* the audit key, when signer.b is set */
    uint64_t state_generation; /* verified at start; 0: state not authenticated */
    /* For SIGHUP: the configuration file (NULL: none) and whether
     * --log-level fixed the level (then the file's is not taken). */
    const char *config_path;
    int log_level_fixed;
};

static void *sweep_loop(void *arg)
{
    struct daemon *d = arg;
    unsigned ms = d->cfg.sweep_interval_ms ? d->cfg.sweep_interval_ms : 10000;
    pthread_mutex_lock(&d->sweep_mu);
    while (!d->stopping) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_sec += ms / 1000;
        t.tv_nsec += (long)(ms % 1000) * 1000000L;
        if (t.tv_nsec >= 1000000000L) {
            t.tv_sec++;
            t.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&d->sweep_cv, &d->sweep_mu, &t);
        if (d->stopping)
            break;
        pthread_mutex_unlock(&d->sweep_mu);
        if (kms_quorum_sweep(d->quorum) != 0)
            kms_log_warn("sweep: %s", kms_error_detail());
        pthread_mutex_lock(&d->sweep_mu);
    }
    pthread_mutex_unlock(&d->sweep_mu);
    return NULL;
}

static int start_quorum(struct daemon *d)
{
    kms_quorum_config qc = {.action_ttl = d->cfg.action_ttl,
                            .max_pending = d->cfg.max_pending,
                            .clock = {d->cfg.test_clock_file},
                            .event = d->audit != NULL ? kms_audit_sink_quorum : NULL,
                            .event_ctx = d->audit};
    if (d->cfg.test_clock_file != NULL)
        kms_log_warn("TEST CLOCK: time is read from %s; never use this outside tests",
                     d->cfg.test_clock_file);
    if (d->cfg.test_crash_at != NULL) {
        kms_log_warn("TEST CRASH POINT: kmsd kills itself at %s; never use this outside tests",
                     d->cfg.test_crash_at);
        kms_crash_point_arm(d->cfg.test_crash_at);
    }
    KMS_GUARD(kms_quorum_open(d->store, d->keyring, d->policy, &qc, &d->quorum));
    /* Finish whatever a crash interrupted before serving anything. */
    KMS_GUARD(kms_quorum_resume(d->quorum));
    pthread_mutex_init(&d->sweep_mu, NULL);
    pthread_cond_init(&d->sweep_cv, NULL);
    if (pthread_create(&d->sweeper, NULL, sweep_loop, d) != 0)
        return kms_error_set(KMS_ENOMEM, "cannot start the sweeper thread");
    d->sweeper_up = 1;
    return KMS_OK;
}

static void stop_quorum(struct daemon *d)
{
    if (d->sweeper_up) {
        pthread_mutex_lock(&d->sweep_mu);
        d->stopping = 1;
        pthread_cond_signal(&d->sweep_cv);
        pthread_mutex_unlock(&d->sweep_mu);
        pthread_join(d->sweeper, NULL);
        pthread_mutex_destroy(&d->sweep_mu);
        pthread_cond_destroy(&d->sweep_cv);
        d->sweeper_up = 0;
    }
    kms_quorum_close(d->quorum);
    d->quorum = NULL;
}

static int count_officer(void *ctx, const kms_officer_rec *o)
{
    (void)o;
    (*(size_t *)ctx)++;
    return KMS_OK;
}

/* Backends, store and keyring: what both commands need. The backends are
 * opened first (a wrong PIN or an absent TPM leaves no new database behind)
 * and handed to the keyring, which closes them. */
static int open_core(struct daemon *d, int must_exist)
{
    struct stat sb;
    kms_backend *backends[KMS_BACKENDS_MAX];
    size_t n = 0, given = 0;
    int r;
    if (must_exist && stat(d->cfg.database, &sb) != 0)
        return kms_error_set(KMS_EINVAL, "database %s does not exist: run `kmsd init` first",
                             d->cfg.database);
    /* One kmsd per database file, before anything reads it. */
    int lock = -1;
    KMS_GUARD(kms_writer_lock_acquire(d->cfg.database, &lock));
    d->db_lock = lock + 1;
    KMS_GUARD(kms_backends_open(&d->cfg, !must_exist, backends, &n));
    kms_keyring_config kc = {.clock = {d->cfg.test_clock_file}};
    if ((r = kms_store_sqlite_open(d->cfg.database, &d->store)) == 0 &&
        (r = kms_keyring_open(d->store, &kc, &d->keyring)) == 0)
        /* adopt closes the instance it fails on */
        while (r == 0 && given < n)
            r = kms_keyring_adopt_backend(d->keyring, backends[given++]);
    for (size_t i = given; i < n; i++)
        backends[i]->ops->close(backends[i]);
    return r;
}

static void close_core(struct daemon *d)
{
    stop_quorum(d);
    kms_policy_close(d->policy);
    kms_keyring_close(d->keyring); /* and the backends */
    if (d->store)
        d->store->ops->close(d->store);
    d->policy = NULL;
    d->keyring = NULL;
    d->store = NULL;
    kms_writer_lock_release(d->db_lock - 1);
    d->db_lock = 0;
}

/* Ends gRPC for good before kmsd exits. Connections still closing (a TLS
 * handshake cut short by the shutdown) hold references of their own: our
 * grpc_shutdown then only drops ours, and the last holder cleans up later,
 * on a detached thread of gRPC's, while main would already be exiting.
 * grpc_is_initialized() takes the lock that clean-up holds, so it answers 0
 * only once clean-up is done. Waits at most 5 s. */
static void grpc_stop(void)
{
    grpc_shutdown();
    for (int i = 0; i < 500 && grpc_is_initialized(); i++)
        usleep(10 * 1000);
    if (grpc_is_initialized())
        kms_log_warn("gRPC still shutting down after 5 s; exiting anyway");
}

/* Makes the TPM's storage primary for an existing database (a TPM added
 * after `kmsd init`). */
static int cmd_tpm2_provision(struct daemon *d)
{
    return kms_backends_provision(&d->cfg, "tpm2");
}

static int start_audit(struct daemon *d, const char *event);
static void stop_audit(struct daemon *d, const char *event);

static int audit_key_setup(struct daemon *d);

static int cmd_init(struct daemon *d)
{
    int r;
    if ((r = open_core(d, 0)) != 0)
        return r;
    r = kms_ceremony_run(&d->cfg, d->store, d->keyring, kms_keyring_default_backend(d->keyring));
    if (r == 0)
        r = audit_key_setup(d);
    /* With audit.dir set, the log starts with the ceremony's record. */
    if (r == 0 && d->cfg.audit_dir != NULL && (r = start_audit(d, "init")) != 0)
        kms_log_error("init: the ceremony is done but its audit record failed");
    stop_audit(d, NULL);
    return r;
}

/* The one-time state-integrity key for a database that predates it. */
static int cmd_seal_state(struct daemon *d)
{
    size_t officers = 0;
    KMS_GUARD(open_core(d, 1));
    KMS_GUARD(d->store->ops->officer_list(d->store, count_officer, &officers));
    if (officers == 0)
        return kms_error_set(KMS_EINVAL, "database %s is not initialised: run `kmsd init` first",
                             d->cfg.database);
    return kms_state_key_seal(d->keyring, d->store);
}

/* One failed state check, logged as an error (run) and printed on stdout
 * (verify-state) as "state: FAIL <table> (<row>): <check>". */
/* The first failed check of this process, for the audit record of a
 * refused start (record_state_failure). */
static char first_failure[768];

static int report_state_failure(void *ctx, const char *table, const char *row, const char *check)
{
    int *print = ctx;
    kms_log_error("state integrity: %s (%s): %s", table, row, check);
    if (first_failure[0] == '\0')
        snprintf(first_failure, sizeof(first_failure), "table=%s row=%s check=%s", table, row,
                 check);
    if (*print)
        printf("state: FAIL %s (%s): %s\n", table, row, check);
    return KMS_OK;
}

/* Every quorum action type has a threshold row: a missing one is refused,
 * never defaulted. */
static int check_thresholds(struct daemon *d, int print, size_t *failures)
{
    for (size_t a = 0; a < kms_quorum_n_actions; a++) {
        const char *type = kms_quorum_actions[a].type;
        uint32_t t = 0;
        int r = d->store->ops->threshold_get(d->store, type, &t);
        if (r == KMS_ENOTFOUND) {
            char row[KMS_ACTION_TYPE_MAX + 16];
            snprintf(row, sizeof(row), "action_type=%s", type);
            (*failures)++;
            KMS_GUARD(report_state_failure(&print, "thresholds", row,
                                           "missing: no threshold for this action type "
                                           "(refused, never a default)"));
        } else if (r != 0 && *failures == 0) {
            return r; /* with failures already listed, an unreadable row is one of them */
        }
    }
    return KMS_OK;
}

/* The state checks of `run` and `verify-state`: the state-integrity key,
 * then every row MAC, the digest and the thresholds. Without a backend that
 * can hold the key, or without a key (run `kmsd seal-state`), the state is
 * not authenticated: `run` warns and goes on, verify-state refuses. An
 * unsafe key, a device that does not answer or any failed check refuses. */
static int check_state(struct daemon *d, int print)
{
    size_t failures = 0;
    uint64_t generation = 0;
    int r = kms_state_key_check(d->keyring);
    if ((r == KMS_ENOTFOUND || r == KMS_EPRECOND) && !print) {
        kms_log_warn("state integrity: %s", kms_error_detail());
        return KMS_OK;
    }
    KMS_GUARD(r);
    KMS_GUARD(kms_state_attach(d->keyring, d->store));
    KMS_GUARD(kms_state_verify(d->store, report_state_failure, &print, &failures, &generation));
    KMS_GUARD(check_thresholds(d, print, &failures));
    if (failures > 0)
        return kms_error_set(KMS_EAUTH,
                             "state integrity: %zu check(s) failed (listed above); refusing to "
                             "act on unauthenticated state",
                             failures);
    kms_log_info("state integrity: every row and the state digest verify (generation %llu)",
                 (unsigned long long)generation);
    if (print)
        printf("state: ok, generation %llu\n", (unsigned long long)generation);
    d->state_generation = generation;
    return KMS_OK;
}

/* A start refused because the state does not verify leaves its record in
 * the audit log (with audit.dir set): `start`, then `state.fail` naming the
 * first failed check, then `stop` (docs/audit.md). The refusal stands
 * whatever the log does: returns why, with its error detail kept. */
static int record_state_failure(struct daemon *d, int why)
{
    if (why != KMS_EAUTH || d->cfg.audit_dir == NULL || first_failure[0] == '\0')
        return why;
    char err[512];
    snprintf(err, sizeof(err), "%s", kms_error_detail());
    if (start_audit(d, "start") != 0)
        kms_log_warn("audit: the state failure could not be recorded: %s", kms_error_detail());
    else if (kms_audit_sink_event(d->audit, "state.fail", first_failure) != 0)
        kms_log_warn("audit: the state failure record could not be written: %s",
                     kms_error_detail());
    stop_audit(d, "stop");
    return kms_error_set(why, "%s", err);
}

/* `kmsd verify-state`: the start-up checks without serving. */
static int cmd_verify_state(struct daemon *d)
{
    KMS_GUARD(open_core(d, 1));
    return check_state(d, 1);
}

/* The host part of "host:port" (what precedes the last ':'). */
static int host_len(const char *listen)
{
    const char *colon = strrchr(listen, ':');
    return colon ? (int)(colon - listen) : (int)strlen(listen);
}

/* ---- the audit log --------------------------------------------------------------------- */

/* audit.context_key, or audit-context.key beside the database. */
static int audit_key_path(const kms_config *c, char *out, size_t cap)
{
    if (c->audit_context_key != NULL) {
        if ((size_t)snprintf(out, cap, "%s", c->audit_context_key) >= cap)
            return kms_error_set(KMS_EINVAL, "audit.context_key: path too long");
        return KMS_OK;
    }
    const char *slash = strrchr(c->database, '/');
    int dir_len = slash ? (int)(slash - c->database) : 1;
    const char *dir = slash ? c->database : ".";
    if ((size_t)snprintf(out, cap, "%.*s/audit-context.key", dir_len, dir) >= cap)
        return kms_error_set(KMS_EINVAL, "database: path too long");
    return KMS_OK;
}

/* The effective configuration's digest for the audit log: SHA-256 of the
 * config file's bytes (none without --config) followed by every
 * command-line argument, each NUL-terminated, in lowercase hex:
 *   (cat kmsd.yaml; printf '%s\0' --config kmsd.yaml run) | sha256sum */
static int config_digest(const char *config, int argc, char **argv, char out[65])
{
    char *file = NULL;
    size_t len = 0;
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    if (config != NULL)
        KMS_GUARD(kms_file_read(config, KMS_CONFIG_FILE_MAX, KMS_FILE_REGULAR, &file, &len));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, file != NULL ? file : "", len) == 1;
    for (int i = 1; ok && i < argc; i++)
        ok = EVP_DigestUpdate(ctx, argv[i], strlen(argv[i]) + 1) == 1;
    ok = ok && EVP_DigestFinal_ex(ctx, md, &md_len) == 1 && md_len == 32;
    EVP_MD_CTX_free(ctx);
    free(file);
    if (!ok)
        return kms_error_set(KMS_EINTERNAL, "SHA-256 of the configuration failed");
    for (unsigned i = 0; i < md_len; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return KMS_OK;
}

/* audit.pubkey_file, or audit-signing-pub.pem beside the database. */
static int audit_pubkey_path(const kms_config *c, char *out, size_t cap)
{
    if (c->audit_pubkey_file != NULL) {
        if ((size_t)snprintf(out, cap, "%s", c->audit_pubkey_file) >= cap)
            return kms_error_set(KMS_EINVAL, "audit.pubkey_file: path too long");
        return KMS_OK;
    }
    const char *slash = strrchr(c->database, '/');
    int dir_len = slash ? (int)(slash - c->database) : 1;
    const char *dir = slash ? c->database : ".";
    if ((size_t)snprintf(out, cap, "%.*s/audit-signing-pub.pem", dir_len, dir) >= cap)
        return kms_error_set(KMS_EINVAL, "database: path too long");
    return KMS_OK;
}

/* At init and `kmsd audit-key`: the audit signing key and its public key
 * file. A kmsd without a backend that can sign (TPM only) says so. */
static int audit_key_setup(struct daemon *d)
{
    char path[4096];
    KMS_GUARD(audit_pubkey_path(&d->cfg, path, sizeof(path)));
    int r = kms_audit_key_setup(d->keyring, path);
    if (r == KMS_EPRECOND) {
        kms_log_warn("audit: checkpoints will NOT be signed: %s", kms_error_detail());
        kms_error_clear();
        return KMS_OK;
    }
    return r;
}

/* The audit signing key for a database made before kmsd had one. */
static int cmd_audit_key(struct daemon *d)
{
    size_t officers = 0;
    KMS_GUARD(open_core(d, 1));
    KMS_GUARD(d->store->ops->officer_list(d->store, count_officer, &officers));
    if (officers == 0)
        return kms_error_set(KMS_EINVAL, "database %s is not initialised: run `kmsd init` first",
                             d->cfg.database);
    return audit_key_setup(d);
}

/* With an audit log, the checkpoints' signer: the audit key must be there
 * (refuse to start otherwise, naming the step); only a kmsd without any
 * backend able to sign runs with unsigned checkpoints, and says so. */
static int audit_signer(struct daemon *d, kms_audit_config *ac)
{
    int r = kms_audit_key_load(d->keyring, &d->signer);
    if (r == KMS_EPRECOND) {
        kms_log_warn("audit: checkpoints are NOT signed: %s; `kmsctl audit verify` will report "
                     "every record as an unverified tail",
                     kms_error_detail());
        kms_error_clear();
        return KMS_OK;
    }
    KMS_GUARD(r);
    ac->sign = kms_audit_signer_sign;
    ac->sign_ctx = &d->signer;
    ac->log_id = d->signer.log_id;
    kms_log_info("audit: checkpoints signed on %s (log id %s)", d->signer.b->ops->name,
                 d->signer.log_id);
    return KMS_OK;
}

/* Opens the audit log (if audit.dir is set) and records event ("start",
 * "init"). Opened before the quorum, so that executions resumed after a
 * crash have their records too. */
static int start_audit(struct daemon *d, const char *event)
{
    char key_path[4096];
    if (d->cfg.audit_dir == NULL) {
        kms_log_warn("no audit log: audit.dir is not set, calls leave no record");
        return KMS_OK;
    }
    kms_audit_config ac = {.dir = d->cfg.audit_dir,
                           .max_bytes = d->cfg.audit_max_bytes,
                           .max_age = d->cfg.audit_max_age,
                           .checkpoint_records = d->cfg.audit_checkpoint_records,
                           .checkpoint_seconds = d->cfg.audit_checkpoint_seconds};
    KMS_GUARD(audit_signer(d, &ac));
    KMS_GUARD(audit_key_path(&d->cfg, key_path, sizeof(key_path)));
    KMS_GUARD(kms_audit_sink_open(&ac, key_path, &d->audit));
    char detail[160];
    /* The verified state generation ties the log to the database: a later
     * start with a lower one is a rollback of the whole file. */
    if (d->state_generation > 0)
        snprintf(detail, sizeof(detail), "config_sha256=%s state_generation=%llu", d->config_digest,
                 (unsigned long long)d->state_generation);
    else
        snprintf(detail, sizeof(detail), "config_sha256=%s", d->config_digest);
    KMS_GUARD(kms_audit_sink_event(d->audit, event, detail));
    kms_log_info("audit log in %s", d->cfg.audit_dir);
    return KMS_OK;
}

/* Every call is recorded before its answer leaves (kms_rpc_env.audit). */
static void audit_calls(struct daemon *d, kms_rpc_env *env)
{
    if (d->audit == NULL)
        return;
    env->audit = kms_audit_sink_rpc;
    env->audit_ctx = d->audit;
    env->audit_context_mac = kms_audit_sink_context_mac;
    env->audit_ready = kms_audit_sink_ready;
}

/* Records event (if not NULL) and closes the log: after the server and the
 * sweeper are gone, so that no call or sweep is in flight. The record
 * carries the group-commit counters (records and fdatasync calls so far). */
static void stop_audit(struct daemon *d, const char *event)
{
    char detail[96] = "";
    uint64_t records = 0, syncs = 0;
    if (d->audit != NULL) {
        kms_audit_stats(kms_audit_sink_log(d->audit), &records, &syncs);
        snprintf(detail, sizeof(detail), "records=%llu syncs=%llu", (unsigned long long)records,
                 (unsigned long long)syncs);
    }
    if (d->audit != NULL && event != NULL && kms_audit_sink_event(d->audit, event, detail) != 0)
        kms_log_warn("audit: the stop record could not be written: %s", kms_error_detail());
    kms_audit_sink_close(d->audit);
    d->audit = NULL;
}

/* ---- revocation (tls.crl): loaded at start, reloaded on SIGHUP ---------------- */

/* The CRL set the handshake verifier reads. A reload swaps the pointer
 * under the write lock; a handshake holds the read lock for one check, so
 * calls in flight and new handshakes never see a half-loaded set. */
struct revocation {
    pthread_rwlock_t lock;
    kms_crl_set *set;
    const kms_config *cfg;
    const char *ca_pem;
};

static int revocation_check(void *app, const char *leaf_pem)
{
    struct revocation *rv = app;
    pthread_rwlock_rdlock(&rv->lock);
    int r = kms_crl_check(rv->set, leaf_pem, time(NULL));
    pthread_rwlock_unlock(&rv->lock);
    if (r != 0)
        kms_log_warn("handshake refused: %s", kms_error_detail());
    return r;
}

/* Loads tls.crl (FILE[,FILE...]) into a new set; logs expired CRLs. */
static int revocation_load(struct revocation *rv, kms_crl_set **out)
{
    const char *paths[64];
    size_t n = 0;
    char *list = strdup(rv->cfg->tls_crl);
    if (list == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    for (char *p = list, *comma; p != NULL && n < 64; p = comma != NULL ? comma + 1 : NULL) {
        comma = strchr(p, ',');
        if (comma != NULL)
            *comma = '\0';
        paths[n++] = p;
    }
    int r = kms_crl_set_load(paths, n, rv->ca_pem, rv->cfg->tls_crl_allow_expired, out);
    free(list);
    if (r != 0)
        return r;
    size_t old = kms_crl_set_expired(*out, time(NULL));
    if (old > 0)
        kms_log_warn("tls.crl: %zu CRL(s) past their nextUpdate: %s", old,
                     rv->cfg->tls_crl_allow_expired
                         ? "still used (tls.crl_allow_expired)"
                         : "every client of those CAs is refused until a fresh CRL is loaded");
    return KMS_OK;
}

/* Every key version is checked by its backend before kmsd serves: a key
 * that would be refused at first use stops the start instead. */
static int check_keys(struct daemon *d)
{
    size_t checked = 0;
    int r = kms_keyring_check_all(d->keyring, &checked);
    if (r != 0)
        kms_log_error("refusing to start: %s", kms_error_detail());
    else
        kms_log_info("start-up key check: %zu key versions passed", checked);
    return r;
}

/* ---- SIGHUP: the log level, then the TLS material and CRLs together -------------- */

/* The configuration file's log_level (unless --log-level fixed it). A file
 * that does not parse changes nothing. */
static void reload_log_level(struct daemon *d)
{
    if (d->config_path == NULL || d->log_level_fixed)
        return;
    kms_config fresh;
    if (kms_config_init(&fresh) != 0 || kms_config_load_file(&fresh, d->config_path) != 0) {
        kms_log_error("SIGHUP: %s not read, the log level stays: %s", d->config_path,
                      kms_error_detail());
    } else if (fresh.log_level != d->cfg.log_level) {
        d->cfg.log_level = fresh.log_level;
        kms_log_set_level(fresh.log_level);
        kms_log_info("SIGHUP: log level now %s", fresh.log_level == KMS_LOG_DEBUG  ? "debug"
                                                 : fresh.log_level == KMS_LOG_INFO ? "info"
                                                 : fresh.log_level == KMS_LOG_WARN ? "warn"
                                                                                   : "error");
    }
    kms_config_free(&fresh);
}

/* tls.cert, tls.key, tls.client_ca and tls.crl are read again and replace
 * the old ones together, or not at all: a file that does not read, a key
 * that does not match, a CRL that does not load or verify under the new CA
 * keeps every old setting, and the log says why. New handshakes see the new
 * material within a second (gRPC's file watcher); connections already up
 * and their calls in flight keep theirs. */
static void reload_tls(struct daemon *d, kms_server *srv, struct revocation *rv, char **ca)
{
    kms_secret *key = NULL;
    char *cert = NULL, *new_ca = NULL;
    kms_crl_set *fresh = NULL, *old = NULL;
    const char *old_ca = rv->ca_pem;
    int r;
    if ((r = read_pem(d->cfg.tls_cert, 0, NULL, &cert)) == 0 &&
        (r = read_pem(d->cfg.tls_key, 1, &key, NULL)) == 0 &&
        (r = read_pem(d->cfg.tls_client_ca, 0, NULL, &new_ca)) == 0 && rv->set != NULL) {
        rv->ca_pem = new_ca; /* the CRLs are verified under the new CA */
        r = revocation_load(rv, &fresh);
        rv->ca_pem = old_ca;
    }
    if (r == 0)
        r = kms_server_reload_tls(srv, cert, (const char *)key->data, new_ca);
    if (r == 0 && d->cfg.metrics_listen != NULL) {
        kms_metrics_note_server_cert(cert);
        kms_metrics_note_crl_files(d->cfg.tls_crl);
    }
    kms_secret_free(key);
    free(cert);
    if (r != 0) {
        kms_log_error("SIGHUP: TLS not reloaded, the previous certificate, key, client CA and "
                      "CRLs stay: %s",
                      kms_error_detail());
        kms_crl_set_free(fresh);
        free(new_ca);
        return;
    }
    if (rv->set != NULL) {
        pthread_rwlock_wrlock(&rv->lock);
        old = rv->set;
        rv->set = fresh;
        rv->ca_pem = new_ca;
        pthread_rwlock_unlock(&rv->lock);
        kms_crl_set_free(old);
    }
    rv->ca_pem = new_ca;
    free(*ca);
    *ca = new_ca;
    kms_log_info("SIGHUP: TLS certificate, key and client CA reloaded%s",
                 fresh != NULL ? ", and tls.crl" : "");
}

/* metrics.listen: the call counters are named and the endpoint serves
 * before the first call; off, nothing listens and calls count nothing. */
static int start_metrics(struct daemon *d, const kms_rpc_env *env, const char *cert,
                         kms_metrics_http **out)
{
    int port = 0;
    if (d->cfg.metrics_listen == NULL)
        return KMS_OK;
    KMS_GUARD(kms_metrics_init(env->n_methods));
    for (size_t i = 0; i < env->n_methods; i++)
        kms_metrics_name_method(i, env->methods[i].path);
    kms_metrics_note_server_cert(cert);
    kms_metrics_note_crl_files(d->cfg.insecure_dev ? NULL : d->cfg.tls_crl);
    KMS_GUARD(
        kms_metrics_http_start(d->cfg.metrics_listen, d->cfg.metrics_allow_remote, out, &port));
    kms_log_info("metrics on http://%.*s:%d/metrics", host_len(d->cfg.metrics_listen),
                 d->cfg.metrics_listen, port);
    printf("kmsd metrics on http://%.*s:%d/metrics\n", host_len(d->cfg.metrics_listen),
           d->cfg.metrics_listen, port);
    return KMS_OK;
}

static int cmd_run(struct daemon *d, const sigset_t *stop)
{
    struct revocation rv = {.cfg = &d->cfg};
    kms_secret *key = NULL;
    char *cert = NULL, *ca = NULL;
    kms_server *srv = NULL;
    kms_metrics_http *metrics = NULL;
    size_t officers = 0;
    int r, port = 0, grpc_up = 0, sig = 0;

    pthread_rwlock_init(&rv.lock, NULL);
    if ((r = open_core(d, 1)) != 0 ||
        (r = d->store->ops->officer_list(d->store, count_officer, &officers)) != 0)
        goto out;
    if (officers == 0) {
        r = kms_error_set(KMS_EINVAL, "database %s is not initialised: run `kmsd init` first",
                          d->cfg.database);
        goto out;
    }
    /* The state is verified before anything reads it into a cache. */
    if ((r = check_state(d, 0)) != 0) {
        r = record_state_failure(d, r);
        goto out;
    }
    if ((r = kms_policy_open(d->store, &d->policy)) != 0)
        goto out;
    if ((r = check_keys(d)) != 0 || (r = start_audit(d, "start")) != 0 ||
        (r = start_quorum(d)) != 0)
        goto out;
    if (d->cfg.insecure_dev) {
        kms_log_warn("INSECURE: --insecure-dev serves plaintext gRPC without client "
                     "authentication; every caller is \"%s\". Never use it outside development.",
                     KMS_RPC_INSECURE_IDENTITY);
    } else if ((r = read_pem(d->cfg.tls_cert, 0, NULL, &cert)) != 0 ||
               (r = read_pem(d->cfg.tls_key, 1, &key, NULL)) != 0 ||
               (r = read_pem(d->cfg.tls_client_ca, 0, NULL, &ca)) != 0) {
        goto out;
    }

    rv.ca_pem = ca;
    if (d->cfg.tls_crl != NULL && !d->cfg.insecure_dev && (r = revocation_load(&rv, &rv.set)) != 0)
        goto out;

    kms_rpc_env env = {.keyring = d->keyring,
                       .store = d->store,
                       .policy = d->policy,
                       .quorum = d->quorum,
                       .insecure_dev = d->cfg.insecure_dev,
                       .cn_identities = d->cfg.tls_cn_identities};
    env.methods = kms_rpc_methods(&env.n_methods);
    audit_calls(d, &env);
    kms_server_config sc = {.listen = d->cfg.listen,
                            .cert_pem = cert,
                            .key_pem = key ? (const char *)key->data : NULL,
                            .client_ca_pem = ca,
                            .insecure = d->cfg.insecure_dev,
                            .workers = d->cfg.workers,
                            .max_recv = d->cfg.max_message_size,
                            .max_send = d->cfg.max_send_message_size,
                            .max_concurrent_streams = d->cfg.max_concurrent_streams,
                            .handshake_timeout_ms = d->cfg.handshake_timeout_ms,
                            .idle_timeout_ms = d->cfg.idle_timeout_ms,
                            .verify_peer = rv.set != NULL ? revocation_check : NULL,
                            .verify_app = &rv,
                            .dispatch = kms_rpc_dispatch,
                            .app = &env};
    sc.methods = kms_rpc_server_methods(&sc.n_methods);
    if ((r = start_metrics(d, &env, cert, &metrics)) != 0)
        goto out;

    gpr_set_log_function(grpc_log_line);
    grpc_init();
    grpc_up = 1;
    r = kms_server_start(&sc, &srv, &port);
    /* gRPC keeps its own copy of the key; ours is wiped now. */
    kms_secret_free(key);
    key = NULL;
    if (r != 0)
        goto out;

    kms_log_info("serving on %.*s:%d with %u workers%s", host_len(d->cfg.listen), d->cfg.listen,
                 port, d->cfg.workers, d->cfg.insecure_dev ? " (INSECURE)" : " (mutual TLS)");
    printf("kmsd ready on %.*s:%d\n", host_len(d->cfg.listen), d->cfg.listen, port);
    fflush(stdout);

    for (;;) {
        if (sigwait(stop, &sig) != 0)
            sig = 0;
        if (sig != SIGHUP)
            break;
        reload_log_level(d);
        if (!d->cfg.insecure_dev)
            reload_tls(d, srv, &rv, &ca);
    }
    kms_log_info("signal %d: shutting down", sig);
out:
    kms_server_destroy(srv);
    kms_metrics_http_stop(metrics);
    stop_quorum(d);
    stop_audit(d, "stop");
    if (grpc_up)
        grpc_stop();
    kms_secret_free(key);
    free(cert);
    free(ca);
    kms_crl_set_free(rv.set);
    pthread_rwlock_destroy(&rv.lock);
    close_core(d);
    if (r == 0)
        kms_log_info("stopped");
    return r;
}

int main(int argc, char **argv)
{
    struct daemon d;
    struct {
        int opt;
        const char *arg;
    } opts[MAX_OPTS];
    size_t n_opts = 0;
    const char *config = NULL;
    sigset_t stop;
    int r, c, status = EXIT_USAGE;

    memset(&d, 0, sizeof(d));
    /* Before any thread exists (gRPC starts its own): SIGTERM, SIGINT and
     * SIGHUP are taken only by sigwait in the main thread. SIGPIPE is ignored. */
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGHUP); /* reload (TLS, tls.crl, log level), taken by sigwait in run */
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    clear_grpc_debug_env();

    while ((c = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
        if (c == 'h' || c == OPT_HELP) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (c == '?' || c == ':') {
            fputs(usage_text, stderr);
            return EXIT_USAGE;
        }
        if (c == OPT_CONFIG) {
            config = optarg;
            continue;
        }
        if (n_opts == MAX_OPTS) {
            fprintf(stderr, "kmsd: too many options\n");
            return EXIT_USAGE;
        }
        opts[n_opts].opt = c;
        opts[n_opts].arg = optarg;
        n_opts++;
    }
    if (optind != argc - 1 ||
        (strcmp(argv[optind], "run") != 0 && strcmp(argv[optind], "init") != 0 &&
         strcmp(argv[optind], "tpm2-provision") != 0 && strcmp(argv[optind], "seal-state") != 0 &&
         strcmp(argv[optind], "audit-key") != 0 && strcmp(argv[optind], "verify-state") != 0)) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    int init = strcmp(argv[optind], "init") == 0;
    int provision = strcmp(argv[optind], "tpm2-provision") == 0;
    int seal = strcmp(argv[optind], "seal-state") == 0;
    int audit_key = strcmp(argv[optind], "audit-key") == 0;
    int verify = strcmp(argv[optind], "verify-state") == 0;

    if ((r = kms_config_init(&d.cfg)) != 0 ||
        (config != NULL && (r = kms_config_load_file(&d.cfg, config)) != 0))
        goto fail;
    for (size_t i = 0; i < n_opts; i++)
        if ((r = apply_option(&d.cfg, opts[i].opt, opts[i].arg)) != 0)
            goto fail;
    if ((r = kms_config_validate(&d.cfg, init ? KMS_CONFIG_INIT : KMS_CONFIG_RUN)) != 0 ||
        (r = kms_config_check_test_settings(&d.cfg, TEST_HOOKS_BUILT)) != 0)
        goto fail;
    if (d.cfg.workers == 0)
        d.cfg.workers = auto_workers(d.cfg.audit_dir != NULL);
    d.config_path = config;
    for (size_t i = 0; i < n_opts; i++)
        d.log_level_fixed |= opts[i].opt == OPT_LOG_LEVEL;
    if (d.cfg.audit_dir != NULL && (r = config_digest(config, argc, argv, d.config_digest)) != 0)
        goto fail;
    kms_log_set_level(d.cfg.log_level);

    status = EXIT_RUNTIME;
    if ((r = harden_process()) != 0)
        goto fail;
#ifdef KMS_TEST_HOOKS
    test_hooks_from_env();
#endif
    r = provision   ? cmd_tpm2_provision(&d)
        : init      ? cmd_init(&d)
        : seal      ? cmd_seal_state(&d)
        : audit_key ? cmd_audit_key(&d)
        : verify    ? cmd_verify_state(&d)
                    : cmd_run(&d, &stop);
    if (r != 0)
        goto fail;
    close_core(&d);
    kms_config_free(&d.cfg);
    return 0;
fail:
    kms_log_error("%s: %s",
                  init        ? "init"
                  : seal      ? "seal-state"
                  : audit_key ? "audit-key"
                  : verify    ? "verify-state"
                              : "run",
                  kms_error_detail()[0] ? kms_error_detail() : kms_strerror(r));
    close_core(&d);
    kms_config_free(&d.cfg);
    return r == KMS_EINVAL && status == EXIT_USAGE ? EXIT_USAGE : status;
}
