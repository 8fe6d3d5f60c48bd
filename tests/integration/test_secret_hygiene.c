/* Secret hygiene of a real kmsd (mutual TLS, SoftHSM2 token, SQLite file,
 * audit log on, log level debug, test build): canaries go in through the
 * API and kmsctl (a data key the client supplies to Encrypt, a data key
 * kmsd generates, a context value) and are then looked for, raw, in hex
 * and in base64, everywhere they must not be:
 *   - kmsd's log (stderr, at debug level);
 *   - the database file and its WAL;
 *   - the audit files;
 *   - kmsctl's stdout and stderr;
 *   - a core dump of the running kmsd forced with gcore (the data keys only:
 *     the server freed them when their calls ended; the test build keeps the
 *     wiping allocator's freed blocks instead of reusing them,
 *     KMS_TEST_PB_QUARANTINE=1, so the core shows what free left in every
 *     block a request used).
 * Also: VmLck > 0 while kmsd holds keys, and the process is not dumpable
 * with a core limit of 0, both in the test build and in the release build
 * (kmsd reads PR_GET_DUMPABLE back and logs it; the limit is read from
 * /proc/PID/limits).
 *
 * gcore as root attaches to a non-dumpable process (PR_SET_DUMPABLE 0 only
 * stops ptrace by callers without CAP_SYS_PTRACE) and honours
 * MADV_DONTDUMP, so the test needs no hook that keeps kmsd dumpable. Where
 * gcore cannot attach (not root, ptrace forbidden) that case is skipped
 * with a message.
 *
 * Shown able to fail: before kmsd/heap_wipe.c, the core held all three
 * canary keys (raw, in heap blocks gRPC had freed: the decrypted HTTP/2
 * frames of the requests and the framed replies), and
 * core_dump_holds_no_freed_data_key failed with 3 hits; with the client's
 * connection still open it found 2 (the connection's live read buffer,
 * hence the close before the dump). With the OPENSSL_cleanse removed
 * from kms_pb_wiping_free (and the quarantine keeping those blocks), it
 * found 2 canary keys in the core. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>

#include <cmocka.h>
#include <grpc/grpc.h>
#include <grpc/status.h>
#include <openssl/evp.h>

#include "grpc_test_client.h"
#include "kms/v1/kms.pb-c.h"
#include "kmsctl_runner.h"
#include "kmsd_fixture.h"
#include "test_util.h"

#define KM "/kms.v1.KeyManagement/"
#define CANARY_CONTEXT "ctx-canary-5be1d0c7-hygiene"
#define KEY_LEN 32

typedef Kms__V1__EncryptRequest__EncryptionContextEntry EncCtx;
typedef Kms__V1__DecryptRequest__EncryptionContextEntry DecCtx;
typedef Kms__V1__GenerateDataKeyRequest__EncryptionContextEntry GdkCtx;

static kms_test_kmsd K;
static char DIR_[320], AUDIT[400], LOG[400], CTL_CONF[400];
static kms_tc *APP;
static char OUT[65536], ERR[65536];

/* The canaries: a data key the client sends (Encrypt), one for kmsctl's
 * encrypt, and the one kmsd generated (GenerateDataKey). */
static uint8_t SENT_KEY[KEY_LEN], CTL_KEY[KEY_LEN], GEN_KEY[KEY_LEN];
static int HAVE_GEN;
/* kmsctl's output of every call, for the output scan. */
static char CTL_OUT[4 * 65536];
static size_t CTL_OUT_LEN;

/* ---- searching ----------------------------------------------------------------------- */

/* The forms a key could take in text: raw, hex (both cases), base64. */
struct forms {
    char hex[2 * KEY_LEN + 1], HEX[2 * KEY_LEN + 1], b64[4 * KEY_LEN / 3 + 8];
};

static void forms_of(const uint8_t *k, struct forms *f)
{
    for (size_t i = 0; i < KEY_LEN; i++) {
        snprintf(f->hex + 2 * i, 3, "%02x", k[i]);
        snprintf(f->HEX + 2 * i, 3, "%02X", k[i]);
    }
    EVP_EncodeBlock((unsigned char *)f->b64, k, KEY_LEN);
}

/* 1 if buf holds key in any of its forms (a 16-byte prefix of the raw
 * bytes, or a 24-character prefix of a text form, counts: a partial
 * leak is a leak). */
static int holds_key(const uint8_t *buf, size_t len, const uint8_t *key, const char *where)
{
    struct forms f;
    forms_of(key, &f);
    const char *hit = NULL;
    if (memmem(buf, len, key, 16) != NULL)
        hit = "raw";
    else if (memmem(buf, len, f.hex, 24) != NULL || memmem(buf, len, f.HEX, 24) != NULL)
        hit = "hex";
    else if (memmem(buf, len, f.b64, 24) != NULL)
        hit = "base64";
    if (hit != NULL)
        print_message("%s holds a canary key (%s)\n", where, hit);
    return hit != NULL;
}

static int holds_context(const uint8_t *buf, size_t len, const char *where)
{
    int hit = memmem(buf, len, CANARY_CONTEXT, strlen(CANARY_CONTEXT)) != NULL;
    if (hit)
        print_message("%s holds the canary context value\n", where);
    return hit;
}

/* Maps a whole file read-only (NULL and *len 0 for a missing or empty file). */
static uint8_t *map_file(const char *path, size_t *len)
{
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    void *p = MAP_FAILED;
    if (fstat(fd, &st) == 0 && st.st_size > 0)
        p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return NULL;
    *len = (size_t)st.st_size;
    return p;
}

/* Number of canaries (the three keys, and with context the context value)
 * the file holds. */
static int scan_file(const char *path, int context)
{
    size_t len = 0;
    uint8_t *p = map_file(path, &len);
    if (p == NULL)
        return 0;
    int hits = holds_key(p, len, SENT_KEY, path) + holds_key(p, len, CTL_KEY, path) +
               (HAVE_GEN ? holds_key(p, len, GEN_KEY, path) : 0) +
               (context ? holds_context(p, len, path) : 0);
    munmap(p, len);
    return hits;
}

static void ctl(const char *const *args)
{
    int st = kms_test_kmsctl(DIR_, args, OUT, sizeof(OUT), ERR, sizeof(ERR));
    if (st != 0)
        print_message("kmsctl exited %d: %s\n", st, ERR);
    assert_int_equal(st, 0);
    size_t o = strlen(OUT), e = strlen(ERR);
    assert_true(CTL_OUT_LEN + o + e < sizeof(CTL_OUT));
    memcpy(CTL_OUT + CTL_OUT_LEN, OUT, o);
    memcpy(CTL_OUT + CTL_OUT_LEN + o, ERR, e);
    CTL_OUT_LEN += o + e;
}

/* ---- fixture ------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    for (size_t i = 0; i < KEY_LEN; i++) {
        SENT_KEY[i] = (uint8_t)(0x5C ^ (i * 29 + 11));
        CTL_KEY[i] = (uint8_t)(0xE1 ^ (i * 53 + 7));
    }
    grpc_init();
    kms_test_kmsd_setup(&K);
    kms_test_kmsd_dir(&K, DIR_, sizeof(DIR_));
    kms_test_path(AUDIT, sizeof(AUDIT), DIR_, "audit");
    kms_test_path(LOG, sizeof(LOG), DIR_, "kmsd.log");
    kms_test_path(CTL_CONF, sizeof(CTL_CONF), DIR_, "app.conf");
    if (mkdir(AUDIT, 0700) != 0)
        return -1;

    /* kmsd's stderr (its log) goes to LOG: the child inherits fd 2. */
    int saved = dup(2);
    int fd = open(LOG, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (saved < 0 || fd < 0 || dup2(fd, 2) < 0)
        return -1;
    close(fd);
    setenv("KMS_TEST_PB_QUARANTINE", "1", 1);
    const char *extra[] = {"--audit-dir", AUDIT, "--log-level", "debug", NULL};
    kms_test_kmsd_start(&K, extra);
    unsetenv("KMS_TEST_PB_QUARANTINE");
    dup2(saved, 2);
    close(saved);
    APP = kms_test_kmsd_open_as(&K, "app");
    kms_test_kmsctl_conf(&K, CTL_CONF, "app", NULL, NULL);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    kms_tc_close(APP);
    if (K.pid != 0)
        (void)kms_test_kmsd_stop(&K, SIGTERM);
    kms_test_kmsd_teardown(&K);
    kms_tc_grpc_shutdown();
    return 0;
}

/* ---- tests --------------------------------------------------------------------------- */

/* The canaries go through every path that carries a data key. */
static void seed_canaries(void **state)
{
    (void)state;
    EncCtx e = KMS__V1__ENCRYPT_REQUEST__ENCRYPTION_CONTEXT_ENTRY__INIT;
    EncCtx *ep = &e;
    e.key = "purpose";
    e.value = CANARY_CONTEXT;
    Kms__V1__EncryptRequest enc = KMS__V1__ENCRYPT_REQUEST__INIT;
    enc.key_name = "demo";
    enc.plaintext.data = SENT_KEY;
    enc.plaintext.len = KEY_LEN;
    enc.encryption_context = &ep;
    enc.n_encryption_context = 1;
    ProtobufCMessage *m = NULL;
    assert_int_equal(kms_tc_call(APP, KM "Encrypt", &enc.base,
                                 &kms__v1__encrypt_response__descriptor, &m, NULL, 0),
                     GRPC_STATUS_OK);
    Kms__V1__EncryptResponse *er = (Kms__V1__EncryptResponse *)m;
    uint8_t blob[512];
    size_t blob_len = er->ciphertext_blob.len;
    assert_true(blob_len <= sizeof(blob));
    memcpy(blob, er->ciphertext_blob.data, blob_len);
    protobuf_c_message_free_unpacked(m, NULL);

    /* Decrypt it back: the key is in a reply too */
    DecCtx d = KMS__V1__DECRYPT_REQUEST__ENCRYPTION_CONTEXT_ENTRY__INIT;
    DecCtx *dp = &d;
    d.key = "purpose";
    d.value = CANARY_CONTEXT;
    Kms__V1__DecryptRequest dec = KMS__V1__DECRYPT_REQUEST__INIT;
    dec.ciphertext_blob.data = blob;
    dec.ciphertext_blob.len = blob_len;
    dec.encryption_context = &dp;
    dec.n_encryption_context = 1;
    m = NULL;
    assert_int_equal(kms_tc_call(APP, KM "Decrypt", &dec.base,
                                 &kms__v1__decrypt_response__descriptor, &m, NULL, 0),
                     GRPC_STATUS_OK);
    Kms__V1__DecryptResponse *dr = (Kms__V1__DecryptResponse *)m;
    assert_int_equal(dr->plaintext.len, KEY_LEN);
    assert_memory_equal(dr->plaintext.data, SENT_KEY, KEY_LEN);
    protobuf_c_message_free_unpacked(m, NULL);

    /* a data key kmsd generates */
    GdkCtx g = KMS__V1__GENERATE_DATA_KEY_REQUEST__ENCRYPTION_CONTEXT_ENTRY__INIT;
    GdkCtx *gp = &g;
    g.key = "purpose";
    g.value = CANARY_CONTEXT;
    Kms__V1__GenerateDataKeyRequest gdk = KMS__V1__GENERATE_DATA_KEY_REQUEST__INIT;
    gdk.key_name = "demo";
    gdk.key_spec = KMS__V1__KEY_SPEC__AES_256;
    gdk.encryption_context = &gp;
    gdk.n_encryption_context = 1;
    m = NULL;
    assert_int_equal(kms_tc_call(APP, KM "GenerateDataKey", &gdk.base,
                                 &kms__v1__generate_data_key_response__descriptor, &m, NULL, 0),
                     GRPC_STATUS_OK);
    Kms__V1__GenerateDataKeyResponse *gr = (Kms__V1__GenerateDataKeyResponse *)m;
    assert_int_equal(gr->plaintext.len, KEY_LEN);
    memcpy(GEN_KEY, gr->plaintext.data, KEY_LEN);
    HAVE_GEN = 1;
    protobuf_c_message_free_unpacked(m, NULL);

    /* kmsctl: encrypt a key file and decrypt it to a file (no plaintext on
     * stdout), context on the command line */
    char in[400], blob_file[400], out[400];
    kms_test_path(in, sizeof(in), DIR_, "ctl-key.bin");
    kms_test_path(blob_file, sizeof(blob_file), DIR_, "ctl-key.blob");
    kms_test_path(out, sizeof(out), DIR_, "ctl-key.out");
    int fd = open(in, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, CTL_KEY, KEY_LEN), KEY_LEN);
    close(fd);
    const char *ctx = "purpose=" CANARY_CONTEXT;
    const char *c1[] = {"--config", CTL_CONF, "encrypt", "--key",     "demo", "--in",
                        in,         "--out",  blob_file, "--context", ctx,    NULL};
    ctl(c1);
    const char *c2[] = {"--config", CTL_CONF, "decrypt",   "--in", blob_file,
                        "--out",    out,      "--context", ctx,    NULL};
    ctl(c2);
    uint8_t back[64];
    fd = open(out, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, back, sizeof(back)), KEY_LEN);
    close(fd);
    assert_memory_equal(back, CTL_KEY, KEY_LEN);
    unlink(in); /* the test's own plaintext files are not what is scanned */
    unlink(out);
}

/* VmLck > 0 while kmsd holds keys: its secrets (the TLS key, the state
 * and audit keys, the per-thread secret pages) are locked. */
static void locked_memory_while_keys_are_held(void **state)
{
    (void)state;
    long lck = kms_test_proc_kib(K.pid, "VmLck:");
    print_message("kmsd VmLck: %ld kB\n", lck);
    assert_true(lck > 0);
}

/* 1 if PATH's log says the process gave up core dumps (kmsd reads the
 * kernel's state back with PR_GET_DUMPABLE and getrlimit after setting it,
 * and stops if it did not hold). */
static int log_says_hardened(const char *path)
{
    static char text[1 << 20];
    kms_test_read_file(path, text, sizeof(text));
    return strstr(text, "process hardened: dumpable=0 core_limit=0") != NULL;
}

/* The core file size limit of pid, soft and hard, from /proc/PID/limits
 * (-1 for "unlimited"). */
static void core_limit(pid_t pid, long *soft, long *hard)
{
    char lim[4096], path[64];
    snprintf(path, sizeof(path), "/proc/%d/limits", (int)pid);
    kms_test_read_file(path, lim, sizeof(lim));
    const char *p = strstr(lim, "Max core file size");
    assert_non_null(p);
    p += strlen("Max core file size");
    long *v[2] = {soft, hard};
    for (int i = 0; i < 2; i++) {
        while (*p == ' ')
            p++;
        char *end = NULL;
        *v[i] = strncmp(p, "unlimited", 9) == 0 ? -1 : strtol(p, &end, 10);
        assert_true(*v[i] == -1 || end != p);
        p = *v[i] == -1 ? p + 9 : end;
    }
}

/* The test kmsd and the release kmsd (no test hooks, as shipped) both
 * run not dumpable, with a core limit of 0. gcore still works on the test
 * kmsd because the test runs as root (CAP_SYS_PTRACE); an unprivileged
 * process cannot attach or read /proc/PID/mem. */
static void process_is_not_dumpable(void **state)
{
    (void)state;
    long soft = -1, hard = -1;
    core_limit(K.pid, &soft, &hard);
    assert_int_equal(soft, 0);
    assert_int_equal(hard, 0);
    assert_true(log_says_hardened(LOG));

    /* our own process is dumpable with a core limit: the checks can fail */
    assert_false(log_says_hardened(K.config));
    core_limit(getpid(), &soft, &hard);
    assert_true(hard != 0); /* ctest's soft limit may be 0; the hard one is not */

    /* the release build, on a copy of the database (the writer lock) */
    const char *release = getenv("KMS_KMSD_RELEASE");
    assert_non_null(release);
    kms_test_kmsd r = K;
    char rlog[420], rconf[420], rdb[420], cmd[2048], out[256];
    snprintf(rlog, sizeof(rlog), "%s/release.log", DIR_);
    snprintf(rdb, sizeof(rdb), "%s/release.db", DIR_);
    snprintf(rconf, sizeof(rconf), "%s/release.yaml", DIR_);
    snprintf(
        cmd, sizeof(cmd),
        "sqlite3 '%s' \".backup '%s'\" && sed 's|^database: .*|database: release.db|' '%s' > '%s'",
        K.db, rdb, K.config, rconf);
    char *sh[] = {"/bin/sh", "-c", cmd, NULL};
    assert_int_equal(kms_test_run(sh, out, sizeof(out)), 0);
    assert_true(strlen(rconf) < sizeof(r.config));
    memcpy(r.config, rconf, strlen(rconf) + 1);
    r.pid = 0;
    const char *kmsd = getenv("KMS_KMSD");
    char saved_kmsd[512];
    snprintf(saved_kmsd, sizeof(saved_kmsd), "%s", kmsd);
    setenv("KMS_KMSD", release, 1);
    int saved = dup(2);
    int fd = open(rlog, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(saved >= 0 && fd >= 0 && dup2(fd, 2) >= 0);
    close(fd);
    const char *extra[] = {"--log-level", "debug", NULL};
    kms_test_kmsd_start(&r, extra);
    dup2(saved, 2);
    close(saved);
    setenv("KMS_KMSD", saved_kmsd, 1);
    core_limit(r.pid, &soft, &hard);
    int hardened = log_says_hardened(rlog);
    assert_int_equal(kms_test_kmsd_stop(&r, SIGTERM), 0);
    assert_int_equal(soft, 0);
    assert_int_equal(hard, 0);
    assert_true(hardened);
}

/* gcore the running kmsd; no freed data key in the core. */
static void core_dump_holds_no_freed_data_key(void **state)
{
    (void)state;
#ifdef KMS_SANITIZED
    /* The sanitizers own free: kmsd/heap_wipe.c is not linked there, and
     * the core of a process with shadow memory is huge. The release-like
     * build runs this case. */
    print_message("sanitizer build: kmsd does not wipe freed heap blocks here: skipped\n");
    skip();
#endif
    char prefix[400], core[420], pid[16], out[8192];
    kms_test_path(prefix, sizeof(prefix), DIR_, "core");
    snprintf(pid, sizeof(pid), "%d", (int)K.pid);
    snprintf(core, sizeof(core), "%s.%s", prefix, pid);
    /* The calls are over and the client's connection is closed: what its
     * buffers held in kmsd is freed too (a live connection's read buffer
     * keeps the last request's bytes until the next read overwrites it:
     * docs/design.md). */
    kms_tc_close(APP);
    APP = NULL;
    /* kmsd frees (and wipes) a closed connection's buffers once gRPC has
     * processed the close, which on a loaded machine can take a while: a
     * core is taken again, up to 5 times over about 10 s, until it holds
     * no canary. A block freed without being wiped stays in every core, so
     * the last one still fails. */
    int hits = -1;
    for (int attempt = 0; attempt < 5 && hits != 0; attempt++) {
        usleep(attempt == 0 ? 1000 * 1000 : 2000 * 1000);
        char *argv[] = {"/usr/bin/gcore", "-o", prefix, pid, NULL};
        out[0] = '\0';
        int st = kms_test_run(argv, out, sizeof(out));
        size_t len = 0;
        uint8_t *p = st == 0 ? map_file(core, &len) : NULL;
        if (p == NULL) {
            print_message("gcore could not dump kmsd (exit %d; needs gdb and CAP_SYS_PTRACE): "
                          "skipped\n%s\n",
                          st, out);
            skip();
        }
        print_message("core of kmsd (attempt %d): %zu bytes\n", attempt + 1, len);
        /* the scan reads a real core of this kmsd: its argv (the config
         * path) is there */
        assert_non_null(memmem(p, len, K.config, strlen(K.config)));
        hits = holds_key(p, len, SENT_KEY, "core (client's Encrypt key)") +
               holds_key(p, len, CTL_KEY, "core (kmsctl's key)") +
               holds_key(p, len, GEN_KEY, "core (GenerateDataKey's key)");
        munmap(p, len);
        unlink(core);
    }
    assert_int_equal(hits, 0);
}

static void log_holds_no_canary(void **state)
{
    (void)state;
    char text[1 << 16];
    size_t n = kms_test_read_file(LOG, text, sizeof(text));
    /* the log is kmsd's and at debug level: it recorded the calls */
    assert_true(n > 0);
    assert_non_null(strstr(text, "rpc /kms.v1.KeyManagement/Encrypt"));
    assert_int_equal(scan_file(LOG, 1), 0);
}

static void database_and_wal_hold_no_canary(void **state)
{
    (void)state;
    char wal[420];
    snprintf(wal, sizeof(wal), "%s-wal", K.db);
    struct stat st;
    assert_int_equal(stat(K.db, &st), 0);
    assert_int_equal(scan_file(K.db, 1), 0);
    assert_int_equal(scan_file(wal, 1), 0);
}

static void audit_files_hold_no_canary(void **state)
{
    (void)state;
    DIR *d = opendir(AUDIT);
    assert_non_null(d);
    int files = 0, hits = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        char path[700];
        snprintf(path, sizeof(path), "%s/%s", AUDIT, e->d_name);
        hits += scan_file(path, 1);
        files++;
    }
    closedir(d);
    assert_true(files > 0);
    assert_int_equal(hits, 0);
}

static void kmsctl_output_holds_no_canary(void **state)
{
    (void)state;
    assert_true(CTL_OUT_LEN > 0);
    const uint8_t *p = (const uint8_t *)CTL_OUT;
    assert_int_equal(holds_key(p, CTL_OUT_LEN, CTL_KEY, "kmsctl output") +
                         holds_key(p, CTL_OUT_LEN, SENT_KEY, "kmsctl output") +
                         holds_context(p, CTL_OUT_LEN, "kmsctl output"),
                     0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(seed_canaries),
        cmocka_unit_test(locked_memory_while_keys_are_held),
        cmocka_unit_test(process_is_not_dumpable),
        cmocka_unit_test(core_dump_holds_no_freed_data_key),
        cmocka_unit_test(log_holds_no_canary),
        cmocka_unit_test(database_and_wal_hold_no_canary),
        cmocka_unit_test(audit_files_hold_no_canary),
        cmocka_unit_test(kmsctl_output_holds_no_canary),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
