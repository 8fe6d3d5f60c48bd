/* The audit log end to end: a real kmsd (mutual TLS, SoftHSM2 token,
 * SQLite file) writing its audit log; the records read back from the
 * files, checked offline with kmsctl, and the log failing closed on a full
 * disk (a tiny tmpfs mounted by the test; skipped with a message where
 * mounting is not permitted) and recovering without a restart. */
#include <dirent.h>
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
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <grpc/grpc.h>
#include <grpc/status.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "group_run.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc_test_client.h"
#include "kms/v1/kms.pb-c.h"
#include "kmsctl_runner.h"
#include "kmsd_fixture.h"
#include "test_util.h"

#define KM "/kms.v1.KeyManagement/"
#define QU "/kms.v1.Quorum/"
#define CANARY_VALUE "canary-7f3a9c-context-value"
#define LOG_MAX (1u << 20)

typedef Kms__V1__GenerateDataKeyRequest__EncryptionContextEntry GdkCtx;

static kms_test_kmsd K;
static char DIR_[320], AUDIT[400], KEYFILE[400];
static int MOUNTED;
static kms_tc *APP, *BOB;
static char OUT[65536], ERR[65536];
static const kms_test_kmsctl_io IO = {DIR_, OUT, ERR, sizeof(OUT), sizeof(ERR)};

/* ---- helpers ------------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The audit files of dir in name order (paths malloc'ed; free with free_files). */
static size_t audit_files(const char *dir, char **paths, size_t cap)
{
    size_t n = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "audit-", 6) != 0 || n == cap)
            continue;
        char p[800];
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        paths[n++] = strdup(p);
    }
    closedir(d);
    qsort(paths, n, sizeof(paths[0]), cmp_str);
    return n;
}

static void free_files(char **paths, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
}

/* Every audit file of the log, concatenated in order. */
static size_t read_log(char *buf, size_t cap)
{
    char *paths[64];
    size_t n = audit_files(AUDIT, paths, 64), len = 0;
    for (size_t i = 0; i < n; i++)
        len += kms_test_read_file(paths[i], buf + len, cap - len);
    free_files(paths, n);
    buf[len < cap ? len : cap - 1] = '\0';
    return len;
}

/* The last line of the log that contains all of the given fragments
 * (NULL-terminated); NULL if none. Points into buf. */
static const char *find_record(char *buf, ...)
{
    const char *found = NULL;
    for (char *line = buf; *line != '\0';) {
        char *nl = strchr(line, '\n');
        if (nl == NULL)
            break;
        *nl = '\0';
        int all = 1;
        va_list ap;
        va_start(ap, buf);
        for (const char *f = va_arg(ap, const char *); f != NULL; f = va_arg(ap, const char *))
            all = all && strstr(line, f) != NULL;
        va_end(ap);
        if (all)
            found = line;
        line = nl + 1;
    }
    return found;
}

static int gdk(kms_tc *c, const char *key, Kms__V1__GenerateDataKeyResponse **out, char *msg,
               size_t cap)
{
    Kms__V1__GenerateDataKeyRequest req = KMS__V1__GENERATE_DATA_KEY_REQUEST__INIT;
    GdkCtx e = KMS__V1__GENERATE_DATA_KEY_REQUEST__ENCRYPTION_CONTEXT_ENTRY__INIT;
    GdkCtx *ep = &e;
    e.key = "tenant";
    e.value = CANARY_VALUE;
    req.key_name = (char *)key;
    req.key_spec = KMS__V1__KEY_SPEC__AES_256;
    req.encryption_context = &ep;
    req.n_encryption_context = 1;
    ProtobufCMessage *m = NULL;
    int st = kms_tc_call(c, KM "GenerateDataKey", &req.base,
                         &kms__v1__generate_data_key_response__descriptor, &m, msg, cap);
    if (out != NULL)
        *out = (Kms__V1__GenerateDataKeyResponse *)m;
    else if (m != NULL)
        protobuf_c_message_free_unpacked(m, NULL);
    return st;
}

static int health(void)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = "kms.v1.KeyManagement";
    ProtobufCMessage *m = NULL;
    assert_int_equal(kms_tc_call(APP, "/grpc.health.v1.Health/Check", &req.base,
                                 &grpc__health__v1__health_check_response__descriptor, &m, NULL, 0),
                     GRPC_STATUS_OK);
    int s = ((Grpc__Health__V1__HealthCheckResponse *)m)->status;
    protobuf_c_message_free_unpacked(m, NULL);
    return s;
}

static int contains_bytes(const char *hay, size_t n, const uint8_t *needle, size_t k)
{
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(hay + i, needle, k) == 0)
            return 1;
    return 0;
}

/* ---- quorum helpers (the approval digest of docs/approvals.md) ------------------------ */

static void digest_of(const Kms__V1__Action *a, uint8_t out[32])
{
    uint8_t msg[16 + 16 + 16 + 32 + 8], h[32];
    memcpy(msg, "kms.v1.approval", 16); /* 15 bytes and the 0x00 */
    assert_int_equal(a->instance_id.len, 16);
    assert_int_equal(a->id.len, 16);
    memcpy(msg + 16, a->instance_id.data, 16);
    memcpy(msg + 32, a->id.data, 16);
    SHA256(a->action_bytes.data, a->action_bytes.len, h);
    memcpy(msg + 48, h, 32);
    for (int i = 0; i < 8; i++)
        msg[80 + i] = (uint8_t)((uint64_t)a->expires_at >> (56 - 8 * i));
    SHA256(msg, sizeof(msg), out);
}

static int approve(kms_tc *c, const char *officer, const Kms__V1__Action *a)
{
    uint8_t d[32], sig[256];
    digest_of(a, d);
    size_t len = kms_test_kmsd_officer_sign(&K, officer, d, sig);
    Kms__V1__ApproveActionRequest req = KMS__V1__APPROVE_ACTION_REQUEST__INIT;
    req.action_id = a->id;
    req.signature.data = sig;
    req.signature.len = len;
    ProtobufCMessage *m = NULL;
    int st =
        kms_tc_call(c, QU "ApproveAction", &req.base, &kms__v1__action__descriptor, &m, NULL, 0);
    if (m != NULL)
        protobuf_c_message_free_unpacked(m, NULL);
    return st;
}

static Kms__V1__Action *propose_rotation(kms_tc *c, const char *key)
{
    Kms__V1__RotateKey rk = KMS__V1__ROTATE_KEY__INIT;
    Kms__V1__ActionBody b = KMS__V1__ACTION_BODY__INIT;
    rk.key_name = (char *)key;
    b.action_case = KMS__V1__ACTION_BODY__ACTION_ROTATE_KEY;
    b.rotate_key = &rk;
    Kms__V1__ProposeActionRequest req = KMS__V1__PROPOSE_ACTION_REQUEST__INIT;
    req.action = &b;
    ProtobufCMessage *m = NULL;
    assert_int_equal(
        kms_tc_call(c, QU "ProposeAction", &req.base, &kms__v1__action__descriptor, &m, NULL, 0),
        GRPC_STATUS_OK);
    return (Kms__V1__Action *)m;
}

static int action_state(kms_tc *c, const Kms__V1__Action *a)
{
    Kms__V1__GetActionRequest req = KMS__V1__GET_ACTION_REQUEST__INIT;
    req.action_id = a->id;
    ProtobufCMessage *m = NULL;
    assert_int_equal(
        kms_tc_call(c, QU "GetAction", &req.base, &kms__v1__action__descriptor, &m, NULL, 0),
        GRPC_STATUS_OK);
    int s = ((Kms__V1__Action *)m)->state;
    protobuf_c_message_free_unpacked(m, NULL);
    return s;
}

static void hex_of(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* ---- fixture ------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    grpc_init();
    kms_test_kmsd_setup(&K);
    kms_test_kmsd_dir(&K, DIR_, sizeof(DIR_));
    kms_test_path(AUDIT, sizeof(AUDIT), DIR_, "audit");
    kms_test_path(KEYFILE, sizeof(KEYFILE), DIR_, "audit-context.key");
    if (mkdir(AUDIT, 0700) != 0)
        return -1;
    /* A tiny filesystem of its own, so the full-disk test can fill it. */
    if (mount("tmpfs", AUDIT, "tmpfs", 0, "size=1m,mode=0700") == 0)
        MOUNTED = 1;
    else
        print_message("tmpfs mount not permitted (%s): the full-disk test will be skipped\n",
                      strerror(errno));
    const char *extra[] = {"--audit-dir", AUDIT, NULL};
    kms_test_kmsd_start(&K, extra);
    APP = kms_test_kmsd_open_as(&K, "app");
    BOB = kms_test_kmsd_open_as(&K, "bob");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    kms_tc_close(APP);
    kms_tc_close(BOB);
    if (K.pid != 0)
        (void)kms_test_kmsd_stop(&K, SIGTERM);
    if (MOUNTED)
        (void)umount2(AUDIT, MNT_DETACH);
    kms_test_kmsd_teardown(&K);
    kms_tc_grpc_shutdown();
    return 0;
}

/* ---- tests --------------------------------------------------------------------------- */

static void start_is_recorded_and_files_are_private(void **state)
{
    (void)state;
    static char log[LOG_MAX];
    /* the start record names the effective configuration by its digest:
     * the config file's bytes, then each argument NUL-terminated */
    static char conf[65536];
    size_t n = kms_test_read_file(K.config, conf, sizeof(conf));
    const char *args[] = {"--config", K.config, "--audit-dir", AUDIT, "run"};
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t h[32];
    unsigned hl = 0;
    assert_int_equal(EVP_DigestInit_ex(md, EVP_sha256(), NULL), 1);
    assert_int_equal(EVP_DigestUpdate(md, conf, n), 1);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(EVP_DigestUpdate(md, args[i], strlen(args[i]) + 1), 1);
    assert_int_equal(EVP_DigestFinal_ex(md, h, &hl), 1);
    EVP_MD_CTX_free(md);
    char want[100] = "config_sha256=";
    hex_of(h, 32, want + strlen(want));
    read_log(log, sizeof(log));
    assert_non_null(find_record(log, "{\"seq\":1,", "\"type\":\"start\"", want, NULL));
    struct stat st;
    assert_int_equal(stat(KEYFILE, &st), 0);
    assert_int_equal(st.st_mode & 0077, 0);
}

static void every_call_is_recorded_without_context_or_key(void **state)
{
    (void)state;
    static char log[LOG_MAX];
    Kms__V1__GenerateDataKeyResponse *dk = NULL;
    assert_int_equal(gdk(APP, "demo", &dk, NULL, 0), GRPC_STATUS_OK);
    assert_non_null(dk);
    assert_int_equal(dk->plaintext.len, 32);
    uint8_t plain[32];
    memcpy(plain, dk->plaintext.data, 32);
    uint8_t blob_head[24];
    memcpy(blob_head, dk->ciphertext_blob.data, sizeof(blob_head));
    protobuf_c_message_free_unpacked(&dk->base, NULL);
    /* refused by the key's policy: recorded too */
    assert_int_equal(gdk(BOB, "demo", NULL, NULL, 0), GRPC_STATUS_PERMISSION_DENIED);

    /* the MAC an auditor computes for the context, offline */
    assert_int_equal(kms_test_kmsctl_l(&IO, "audit", "hash-context", "--key-file", KEYFILE,
                                       "tenant=" CANARY_VALUE, NULL),
                     0);
    char mac[128], want[160];
    assert_non_null(kms_test_field(OUT, "context_hmac", 0, mac, sizeof(mac)));
    assert_int_equal(strlen(mac), 64);
    snprintf(want, sizeof(want), "\"context_hmac\":\"%s\"", mac);

    size_t len = read_log(log, sizeof(log));
    /* the canaries: never the context value, the data key or the blob */
    assert_null(strstr(log, CANARY_VALUE));
    assert_false(contains_bytes(log, len, plain, sizeof(plain)));
    char hex[65];
    for (size_t i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", plain[i]);
    assert_null(strstr(log, hex));
    assert_false(contains_bytes(log, len, blob_head, sizeof(blob_head)));

    assert_non_null(find_record(
        log, "\"type\":\"rpc\"", "\"identity\":\"spiffe://kms.local/app\"",
        "\"peer\":\"ipv4:127.0.0.1:", "\"method\":\"/kms.v1.KeyManagement/GenerateDataKey\"",
        "\"key\":\"demo\"", "\"version\":1,", want, "\"status\":0,", "\"error\":\"\"", NULL));
    /* a certificate with two URIs has no usable identity: recorded too */
    kms_tc *two = kms_test_kmsd_open_as(&K, "twouri");
    assert_int_equal(gdk(two, "demo", NULL, NULL, 0), GRPC_STATUS_UNAUTHENTICATED);
    kms_tc_close(two);
    read_log(log, sizeof(log));
    assert_non_null(find_record(log, "\"type\":\"rpc\"", "\"identity\":\"\"",
                                "\"method\":\"/kms.v1.KeyManagement/GenerateDataKey\"",
                                "\"status\":16,", NULL));
    read_log(log, sizeof(log));
    assert_non_null(find_record(log, "\"identity\":\"spiffe://kms.local/bob\"",
                                "\"method\":\"/kms.v1.KeyManagement/GenerateDataKey\"",
                                "\"key\":\"demo\"", "\"status\":7,", "\"error\":\"KMS_EDENIED\"",
                                NULL));
}

static void kmsctl_verifies_offline_and_names_a_changed_record(void **state)
{
    (void)state;
    char *paths[64];
    size_t n = audit_files(AUDIT, paths, 64);
    assert_true(n >= 1);
    const char *args[70] = {"audit", "verify"};
    for (size_t i = 0; i < n; i++)
        args[2 + i] = paths[i];
    args[2 + n] = NULL;
    /* intact, but nothing is signed yet: an unverified tail, exit 13 */
    assert_int_equal(kms_test_kmsctl(DIR_, args, OUT, sizeof(OUT), ERR, sizeof(ERR)), 13);
    assert_non_null(strstr(OUT, "chain: intact"));
    assert_non_null(strstr(ERR, "unverified tail of"));

    /* a copy with record 2's identity changed: named, exit 6 */
    char copy[400], line_buf[LOG_MAX];
    kms_test_path(copy, sizeof(copy), DIR_, "audit-copy.jsonl");
    size_t len = kms_test_read_file(paths[0], line_buf, sizeof(line_buf) - 1);
    line_buf[len] = '\0';
    char *second = strchr(line_buf, '\n') + 1;
    char *third = strchr(second, '\n');
    assert_non_null(third);
    char *id = strstr(second, "\"identity\":\"");
    assert_true(id != NULL && id < third);
    id[strlen("\"identity\":\"")] ^= 1; /* one byte of record 2 */
    kms_test_write_file(copy, line_buf, 0600);
    const char *bad[] = {"audit", "verify", copy, NULL};
    assert_int_equal(kms_test_kmsctl(DIR_, bad, OUT, sizeof(OUT), ERR, sizeof(ERR)), 6);
    assert_non_null(strstr(OUT, "first_bad_seq: 2"));
    free_files(paths, n);
}

static void full_disk_fails_closed_and_recovers(void **state)
{
    (void)state;
    if (!MOUNTED) {
        print_message("SKIPPED: mounting a tmpfs is not permitted here; the full-disk test "
                      "needs it (CI runs as root)\n");
        skip();
    }
    char filler[500];
    kms_test_path(filler, sizeof(filler), AUDIT, "filler");
    int fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    static char chunk[4096];
    memset(chunk, 'x', sizeof(chunk));
    while (write(fd, chunk, sizeof(chunk)) > 0) {
    }
    /* down to the last bytes: even a short record no longer fits */
    while (write(fd, chunk, 1) > 0) {
    }
    close(fd);

    /* The log file's last page may still have room for a few records;
     * once it is full, the call fails closed. */
    Kms__V1__GenerateDataKeyResponse *dk = NULL;
    char msg[128] = "";
    int st = GRPC_STATUS_OK, calls = 0;
    while (st == GRPC_STATUS_OK && calls++ < 64) {
        st = gdk(APP, "demo", &dk, msg, sizeof(msg));
        if (st == GRPC_STATUS_OK)
            protobuf_c_message_free_unpacked(&dk->base, NULL);
    }
    assert_int_equal(st, GRPC_STATUS_UNAVAILABLE);
    assert_null(dk); /* no plaintext, no blob */
    assert_string_equal(msg, "audit log unavailable");
    assert_int_equal(health(),
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
    assert_int_equal(gdk(APP, "demo", NULL, NULL, 0), GRPC_STATUS_UNAVAILABLE);

    /* space again: the next call succeeds, no restart */
    assert_int_equal(unlink(filler), 0);
    assert_int_equal(gdk(APP, "demo", &dk, NULL, 0), GRPC_STATUS_OK);
    assert_non_null(dk);
    protobuf_c_message_free_unpacked(&dk->base, NULL);
    assert_int_equal(health(), GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);

    /* nothing that failed left a trace in the chain: still intact */
    char *paths[64];
    size_t n = audit_files(AUDIT, paths, 64);
    const char *args[70] = {"audit", "verify"};
    for (size_t i = 0; i < n; i++)
        args[2 + i] = paths[i];
    args[2 + n] = NULL;
    assert_int_equal(kms_test_kmsctl(DIR_, args, OUT, sizeof(OUT), ERR, sizeof(ERR)), 13);
    free_files(paths, n);
}

/* kmsd kills itself at each crash point between the approval that reaches
 * the threshold and the EXECUTED mark; after a restart (which resumes the
 * execution) the action is EXECUTED and its execution has its record, as
 * do the proposal and both approvals (with the officer and the digest). */
static void every_executed_action_has_its_record_across_crashes(void **state)
{
    (void)state;
    static const char *const points[] = {"approval-committed", "execution-planned",
                                         "rotation-device-created", "execution-done"};
    static char log[LOG_MAX];
    for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
        kms_tc_close(APP);
        kms_tc_close(BOB);
        assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
        const char *crashing[] = {"--audit-dir", AUDIT, "--test-crash-at", points[i], NULL};
        kms_test_kmsd_start(&K, crashing);
        kms_tc *o1 = kms_test_kmsd_open_as(&K, "officer1");
        kms_tc *o2 = kms_test_kmsd_open_as(&K, "officer2");
        Kms__V1__Action *a = propose_rotation(o1, "second");
        assert_int_equal(approve(o1, "officer1", a), GRPC_STATUS_OK);
        assert_int_not_equal(approve(o2, "officer2", a), GRPC_STATUS_OK);
        assert_int_equal(kms_test_kmsd_stop(&K, 0), 137); /* its own SIGKILL */
        kms_tc_close(o1);
        kms_tc_close(o2);

        const char *extra[] = {"--audit-dir", AUDIT, NULL};
        kms_test_kmsd_start(&K, extra); /* resumes the execution before serving */
        APP = kms_test_kmsd_open_as(&K, "app");
        BOB = kms_test_kmsd_open_as(&K, "bob");
        kms_tc *o3 = kms_test_kmsd_open_as(&K, "officer3");
        assert_int_equal(action_state(o3, a), KMS__V1__ACTION_STATE__EXECUTED);
        kms_tc_close(o3);

        char id[33], action[64], digest[80];
        hex_of(a->id.data, 16, id);
        snprintf(action, sizeof(action), "\"action\":\"%s\"", id);
        char dg[65];
        hex_of(a->digest.data, 32, dg);
        snprintf(digest, sizeof(digest), "digest=%s", dg);
        read_log(log, sizeof(log));
        if (find_record(log, "\"type\":\"quorum.execute\"", action, "\"error\":\"\"",
                        "result=", NULL) == NULL)
            fail_msg("crash at %s: the executed action has no execute record", points[i]);
        read_log(log, sizeof(log));
        assert_non_null(
            find_record(log, "\"type\":\"quorum.propose\"", action, "officer=officer1", NULL));
        read_log(log, sizeof(log));
        assert_non_null(find_record(log, "\"type\":\"quorum.approve\"", action,
                                    "\"identity\":\"spiffe://kms.local/officer2\"",
                                    "officer=officer2", digest, NULL));
        protobuf_c_message_free_unpacked(&a->base, NULL);
    }
    /* and the chain is intact through every kill */
    char *paths[64];
    size_t n = audit_files(AUDIT, paths, 64);
    const char *args[70] = {"audit", "verify"};
    for (size_t i = 0; i < n; i++)
        args[2 + i] = paths[i];
    args[2 + n] = NULL;
    assert_int_equal(kms_test_kmsctl(DIR_, args, OUT, sizeof(OUT), ERR, sizeof(ERR)), 13);
    free_files(paths, n);
}

static void stop_is_recorded_and_restart_continues_the_chain(void **state)
{
    (void)state;
    static char log[LOG_MAX];
    kms_tc_close(APP);
    kms_tc_close(BOB);
    APP = BOB = NULL;
    assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
    size_t len = read_log(log, sizeof(log));
    assert_true(len > 0);
    char *last = log + len - 1;
    *last = '\0';
    char *start = strrchr(log, '\n');
    assert_non_null(start);
    /* the log ends with the checkpoint written at close, after the stop */
    assert_non_null(strstr(start + 1, "\"type\":\"checkpoint\""));
    *start = '\0';
    start = strrchr(log, '\n');
    start = start ? start + 1 : log;
    assert_non_null(strstr(start, "\"type\":\"stop\""));

    const char *extra[] = {"--audit-dir", AUDIT, NULL};
    kms_test_kmsd_start(&K, extra);
    assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
    char *paths[64];
    size_t n = audit_files(AUDIT, paths, 64);
    const char *args[70] = {"audit", "verify"};
    for (size_t i = 0; i < n; i++)
        args[2 + i] = paths[i];
    args[2 + n] = NULL;
    assert_int_equal(kms_test_kmsctl(DIR_, args, OUT, sizeof(OUT), ERR, sizeof(ERR)), 13);
    free_files(paths, n);
    read_log(log, sizeof(log));
    assert_non_null(find_record(log, "\"type\":\"start\"", NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(start_is_recorded_and_files_are_private),
        cmocka_unit_test(every_call_is_recorded_without_context_or_key),
        cmocka_unit_test(kmsctl_verifies_offline_and_names_a_changed_record),
        cmocka_unit_test(full_disk_fails_closed_and_recovers),
        cmocka_unit_test(every_executed_action_has_its_record_across_crashes),
        cmocka_unit_test(stop_is_recorded_and_restart_continues_the_chain),
    };
    return KMS_RUN_GROUP(tests, group_setup, group_teardown);
}
