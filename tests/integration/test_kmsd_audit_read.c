/* Reading the audit log through kmsd: the auditor role end to end. A real
 * kmsd (mutual TLS, SoftHSM2 token, SQLite file) writes its log in small
 * files (audit.max_bytes 4096, so it rotates); the auditor enrolled at
 * `kmsd init` reads it with Audit.ReadAuditLog and `kmsctl audit tail`,
 * and the records must be the files' lines. Auditors may call nothing
 * else; nobody else may read the log; a quorum action adds and removes an
 * auditor. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <grpc/grpc.h>
#include <grpc/status.h>
#include <openssl/sha.h>

#include "audit_record.h"
#include "group_run.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc_test_client.h"
#include "kms/v1/kms.pb-c.h"
#include "kmsctl_runner.h"
#include "kmsd_fixture.h"
#include "test_util.h"

#define KM "/kms.v1.KeyManagement/"
#define QU "/kms.v1.Quorum/"
#define READ "/kms.v1.Audit/ReadAuditLog"
#define LOG_MAX (4u << 20)

static kms_test_kmsd K;
static char DIR_[320], AUDIT[400];
static kms_tc *APP, *AUDITOR, *OFFICER, *BOB;
static char OUT[1 << 20], ERR[65536];
static const kms_test_kmsctl_io IO = {DIR_, OUT, ERR, sizeof(OUT), sizeof(ERR)};
static char AUDITOR_CONF[400], BOB_CONF[400], O1[400], O2[400], APP_CONF[400];

/* ---- helpers ------------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Every audit file, concatenated in name (= chain) order; how many files. */
static size_t read_log(char *buf, size_t cap, size_t *files)
{
    char *paths[256];
    size_t n = 0, len = 0;
    DIR *d = opendir(AUDIT);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 256) {
        if (strncmp(e->d_name, "audit-", 6) != 0)
            continue;
        char p[800];
        snprintf(p, sizeof(p), "%s/%s", AUDIT, e->d_name);
        paths[n++] = strdup(p);
    }
    closedir(d);
    qsort(paths, n, sizeof(paths[0]), cmp_str);
    for (size_t i = 0; i < n; i++) {
        len += kms_test_read_file(paths[i], buf + len, cap - len);
        free(paths[i]);
    }
    buf[len < cap ? len : cap - 1] = '\0';
    if (files != NULL)
        *files = n;
    return len;
}

/* The line of record seq in the concatenated log (without its LF) into
 * out; its length, or 0 if absent. */
static size_t line_of(const char *log, uint64_t seq, char *out, size_t cap)
{
    char want[40];
    snprintf(want, sizeof(want), "{\"seq\":%llu,", (unsigned long long)seq);
    for (const char *l = log; *l != '\0';) {
        const char *nl = strchr(l, '\n');
        if (nl == NULL)
            break;
        if (strncmp(l, want, strlen(want)) == 0) {
            size_t n = (size_t)(nl - l);
            assert_true(n < cap);
            memcpy(out, l, n);
            out[n] = '\0';
            return n;
        }
        l = nl + 1;
    }
    return 0;
}

/* ReadAuditLog as c; the status; *out the reply (free it) on OK. A request
 * with from_seq and limit 0 is sent with neither field on the wire. */
static int read_log_as(kms_tc *c, uint64_t from, uint32_t limit,
                       Kms__V1__ReadAuditLogResponse **out, char *msg, size_t cap)
{
    Kms__V1__ReadAuditLogRequest req = KMS__V1__READ_AUDIT_LOG_REQUEST__INIT;
    req.from_seq = from;
    req.limit = limit;
    ProtobufCMessage *m = NULL;
    int st = kms_tc_call(c, READ, &req.base, &kms__v1__read_audit_log_response__descriptor, &m, msg,
                         cap);
    if (out != NULL)
        *out = (Kms__V1__ReadAuditLogResponse *)m;
    else if (m != NULL)
        protobuf_c_message_free_unpacked(m, NULL);
    return st;
}

static int gdk(kms_tc *c, const char *key)
{
    Kms__V1__GenerateDataKeyRequest req = KMS__V1__GENERATE_DATA_KEY_REQUEST__INIT;
    req.key_name = (char *)key;
    req.key_spec = KMS__V1__KEY_SPEC__AES_256;
    ProtobufCMessage *m = NULL;
    int st = kms_tc_call(c, KM "GenerateDataKey", &req.base,
                         &kms__v1__generate_data_key_response__descriptor, &m, NULL, 0);
    if (m != NULL)
        protobuf_c_message_free_unpacked(m, NULL);
    return st;
}

static void free_resp(Kms__V1__ReadAuditLogResponse *r)
{
    if (r != NULL)
        protobuf_c_message_free_unpacked(&r->base, NULL);
}

/* Proposes with officer1 and approves with officer1 and officer2 (kmsctl);
 * the approval's exit code. */
static int propose_and_approve(const char *action, const char *identity)
{
    char id[64];
    assert_int_equal(
        kms_test_kmsctl_l(&IO, "--config", O1, "propose", action, "--identity", identity, NULL), 0);
    kms_test_field(OUT, "action", 1, id, sizeof(id));
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "approve", id, "--yes", NULL), 0);
    return kms_test_kmsctl_l(&IO, "--config", O2, "approve", id, "--yes", NULL);
}

static int group_setup(void **state)
{
    (void)state;
    grpc_init();
    kms_test_kmsd_setup(&K);
    kms_test_kmsd_dir(&K, DIR_, sizeof(DIR_));
    kms_test_path(AUDIT, sizeof(AUDIT), DIR_, "audit");
    const char *extra[] = {"--audit-dir", AUDIT, "--audit-max-bytes", "4096", NULL};
    kms_test_kmsd_start(&K, extra);
    APP = kms_test_kmsd_open_as(&K, "app");
    AUDITOR = kms_test_kmsd_open_as(&K, "auditor");
    OFFICER = kms_test_kmsd_open_as(&K, "officer1");
    BOB = kms_test_kmsd_open_as(&K, "bob");
    char k1[400], k2[400];
    kms_test_kmsctl_conf(&K, kms_test_path(O1, sizeof(O1), DIR_, "officer1.conf"), "officer1", NULL,
                         kms_test_kmsd_pki(&K, "officer1-signing-key.pem", k1, sizeof(k1)));
    kms_test_kmsctl_conf(&K, kms_test_path(O2, sizeof(O2), DIR_, "officer2.conf"), "officer2", NULL,
                         kms_test_kmsd_pki(&K, "officer2-signing-key.pem", k2, sizeof(k2)));
    kms_test_kmsctl_conf(&K,
                         kms_test_path(AUDITOR_CONF, sizeof(AUDITOR_CONF), DIR_, "auditor.conf"),
                         "auditor", NULL, NULL);
    kms_test_kmsctl_conf(&K, kms_test_path(BOB_CONF, sizeof(BOB_CONF), DIR_, "bob.conf"), "bob",
                         NULL, NULL);
    kms_test_kmsctl_conf(&K, kms_test_path(APP_CONF, sizeof(APP_CONF), DIR_, "app.conf"), "app",
                         NULL, NULL);
    /* Enough records for several files. */
    for (int i = 0; i < 40; i++)
        if (gdk(APP, "demo") != GRPC_STATUS_OK)
            return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    kms_tc_close(APP);
    kms_tc_close(AUDITOR);
    kms_tc_close(OFFICER);
    kms_tc_close(BOB);
    if (K.pid != 0)
        (void)kms_test_kmsd_stop(&K, SIGTERM);
    kms_test_kmsd_teardown(&K);
    kms_tc_grpc_shutdown();
    return 0;
}

/* ---- tests --------------------------------------------------------------------------- */

/* Every record read is its line in the files, byte for byte, with the
 * fields of that line and its chain hash; the log spans several files. */
static void an_auditor_reads_the_files_records(void **state)
{
    (void)state;
    static char log[LOG_MAX];
    char line[KMS_AUDIT_LINE_MAX + 1];
    static kms_audit_parsed p;
    Kms__V1__ReadAuditLogResponse *r = NULL;
    size_t files = 0;

    assert_int_equal(read_log_as(AUDITOR, 1, 1000, &r, NULL, 0), GRPC_STATUS_OK);
    read_log(log, sizeof(log), &files);
    assert_true(files >= 3); /* rotated at 4096 bytes */
    assert_true(r->n_records >= 40);
    assert_int_equal(r->last_seq, r->records[r->n_records - 1]->seq);
    for (size_t i = 0; i < r->n_records; i++) {
        const Kms__V1__AuditRecord *a = r->records[i];
        assert_int_equal(a->seq, i + 1);
        size_t n = line_of(log, a->seq, line, sizeof(line));
        assert_int_equal(a->line.len, n);
        assert_memory_equal(a->line.data, line, n);
        /* the fields are the line's */
        line[n] = '\n';
        assert_int_equal(kms_audit_rec_parse(line, n + 1, &p), KMS_OK);
        assert_int_equal(a->time, p.rec.time_us);
        assert_string_equal(a->type, p.rec.type);
        assert_string_equal(a->identity, p.rec.identity);
        assert_string_equal(a->method, p.rec.method);
        assert_string_equal(a->key_name, p.rec.key);
        assert_int_equal(a->key_version, p.rec.version);
        assert_int_equal(a->status, (int32_t)p.rec.status);
        assert_string_equal(a->instance, p.rec.instance);
        assert_int_equal(a->prev_hash.len, 32);
        assert_memory_equal(a->prev_hash.data, p.rec.prev, 32);
        /* hash = SHA-256(prev || line || LF), and it is the next one's prev */
        uint8_t h[SHA256_DIGEST_LENGTH], buf[32 + KMS_AUDIT_LINE_MAX + 1];
        memcpy(buf, p.rec.prev, 32);
        memcpy(buf + 32, line, n + 1);
        SHA256(buf, 32 + n + 1, h);
        assert_int_equal(a->hash.len, 32);
        assert_memory_equal(a->hash.data, h, 32);
        if (i + 1 < r->n_records)
            assert_memory_equal(r->records[i + 1]->prev_hash.data, h, 32);
    }
    /* a GenerateDataKey of the app is there with its key */
    int found = 0;
    for (size_t i = 0; i < r->n_records; i++)
        found |= strcmp(r->records[i]->method, KM "GenerateDataKey") == 0 &&
                 strcmp(r->records[i]->identity, KMS_TEST_APP_ID) == 0 &&
                 strcmp(r->records[i]->key_name, "demo") == 0 && r->records[i]->key_version == 1;
    assert_true(found);
    free_resp(r);
}

static void the_auditor_is_refused_every_other_method(void **state)
{
    (void)state;
    uint8_t empty[1] = {0};
    const char *methods[] = {KM "GenerateDataKey", KM "Encrypt",       KM "Decrypt",
                             KM "ReEncrypt",       KM "DescribeKey",   KM "ListKeys",
                             QU "ProposeAction",   QU "ApproveAction", QU "GetAction",
                             QU "ListActions",     QU "CancelAction"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        char msg[256] = "";
        int st = kms_tc_call_raw(AUDITOR, methods[i], empty, 0, NULL, NULL, msg, sizeof(msg));
        if (st != GRPC_STATUS_PERMISSION_DENIED)
            fail_msg("%s answered the auditor %d (%s)", methods[i], st, msg);
    }
    /* even a key whose policy names it gets nothing: the role decides */
    assert_int_equal(gdk(AUDITOR, "demo"), GRPC_STATUS_PERMISSION_DENIED);
    /* Health stays open to any peer */
    Grpc__Health__V1__HealthCheckRequest hr = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    assert_int_equal(kms_tc_call(AUDITOR, "/grpc.health.v1.Health/Check", &hr.base,
                                 &grpc__health__v1__health_check_response__descriptor, &m, NULL, 0),
                     GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void nobody_else_reads_the_log(void **state)
{
    (void)state;
    kms_tc *who[] = {APP, OFFICER, BOB};
    for (size_t i = 0; i < 3; i++) {
        Kms__V1__ReadAuditLogResponse *r = NULL;
        assert_int_equal(read_log_as(who[i], 1, 10, &r, NULL, 0), GRPC_STATUS_PERMISSION_DENIED);
        assert_null(r);
    }
    /* and the refusal is itself on record */
    static char log[LOG_MAX];
    read_log(log, sizeof(log), NULL);
    assert_non_null(strstr(log, "\"identity\":\"spiffe://kms.local/officer1\",\"peer\""));
    const char *l = strstr(log, "\"method\":\"" READ "\"");
    int denied = 0;
    for (; l != NULL; l = strstr(l + 1, "\"method\":\"" READ "\""))
        denied |= strncmp(strstr(l, "\"status\":"), "\"status\":7,", 11) == 0;
    assert_true(denied);
}

static void from_seq_and_limit_edges(void **state)
{
    (void)state;
    Kms__V1__ReadAuditLogResponse *r = NULL;
    char msg[256];

    /* an empty request (both fields omitted on the wire): from the first
     * record, the default limit of 100 */
    for (int i = 0; i < 70; i++)
        assert_int_equal(gdk(APP, "demo"), GRPC_STATUS_OK);
    uint8_t empty[1] = {0};
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    assert_int_equal(kms_tc_call_raw(AUDITOR, READ, empty, 0, &raw, &raw_len, NULL, 0),
                     GRPC_STATUS_OK);
    r = kms__v1__read_audit_log_response__unpack(NULL, raw_len, raw);
    free(raw);
    assert_non_null(r);
    assert_int_equal(r->n_records, 100);
    assert_int_equal(r->records[0]->seq, 1);
    assert_int_equal(r->records[99]->seq, 100);
    uint64_t last = r->last_seq;
    assert_true(last > 100);
    free_resp(r);
    /* the same with the zero values sent explicitly */
    assert_int_equal(read_log_as(AUDITOR, 0, 0, &r, NULL, 0), GRPC_STATUS_OK);
    assert_int_equal(r->n_records, 100);
    assert_int_equal(r->records[0]->seq, 1);
    free_resp(r);
    /* the last record exactly, and past the end: nothing, with last_seq */
    assert_int_equal(read_log_as(AUDITOR, last, 5, &r, NULL, 0), GRPC_STATUS_OK);
    assert_true(r->n_records >= 1);
    assert_int_equal(r->records[0]->seq, last);
    free_resp(r);
    assert_int_equal(read_log_as(AUDITOR, last + 1000, 5, &r, NULL, 0), GRPC_STATUS_OK);
    assert_int_equal(r->n_records, 0);
    assert_true(r->last_seq >= last);
    free_resp(r);
    /* limit 1 and the most, 1000 */
    assert_int_equal(read_log_as(AUDITOR, 7, 1, &r, NULL, 0), GRPC_STATUS_OK);
    assert_int_equal(r->n_records, 1);
    assert_int_equal(r->records[0]->seq, 7);
    free_resp(r);
    assert_int_equal(read_log_as(AUDITOR, 1, 1000, &r, NULL, 0), GRPC_STATUS_OK);
    assert_true(r->n_records >= last);
    free_resp(r);
    /* over the most: INVALID_ARGUMENT, with a message that says why */
    msg[0] = '\0';
    assert_int_equal(read_log_as(AUDITOR, 1, 1001, &r, msg, sizeof(msg)),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_null(r);
    assert_non_null(strstr(msg, "1000"));
    assert_int_equal(read_log_as(AUDITOR, 1, UINT32_MAX, &r, NULL, 0),
                     GRPC_STATUS_INVALID_ARGUMENT);
}

/* Records across rotated files: every file's records, from the middle of
 * one file into the next, with no gap or repeat. */
static void records_across_a_rotation(void **state)
{
    (void)state;
    static char log[LOG_MAX];
    size_t files = 0;
    read_log(log, sizeof(log), &files);
    assert_true(files >= 3);
    /* the second file's first seq, from its name */
    DIR *d = opendir(AUDIT);
    assert_non_null(d);
    struct dirent *e;
    uint64_t firsts[256];
    size_t n = 0;
    while ((e = readdir(d)) != NULL && n < 256)
        if (strncmp(e->d_name, "audit-", 6) == 0)
            firsts[n++] = strtoull(e->d_name + 6, NULL, 10);
    closedir(d);
    uint64_t second = UINT64_MAX;
    for (size_t i = 0; i < n; i++)
        if (firsts[i] > 1 && firsts[i] < second)
            second = firsts[i];
    assert_true(second > 3);
    Kms__V1__ReadAuditLogResponse *r = NULL;
    assert_int_equal(read_log_as(AUDITOR, second - 2, 5, &r, NULL, 0), GRPC_STATUS_OK);
    assert_int_equal(r->n_records, 5);
    char line[KMS_AUDIT_LINE_MAX + 1];
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(r->records[i]->seq, second - 2 + i);
        size_t len = line_of(log, r->records[i]->seq, line, sizeof(line));
        assert_int_equal(r->records[i]->line.len, len);
        assert_memory_equal(r->records[i]->line.data, line, len);
    }
    /* the chain runs over the file boundary */
    assert_memory_equal(r->records[2]->prev_hash.data, r->records[1]->hash.data, 32);
    free_resp(r);
}

static void a_quorum_action_adds_and_removes_an_auditor(void **state)
{
    (void)state;
    Kms__V1__ReadAuditLogResponse *r = NULL;
    assert_int_equal(read_log_as(BOB, 1, 1, &r, NULL, 0), GRPC_STATUS_PERMISSION_DENIED);
    /* an officer cannot be made an auditor, and one auditor is enough once */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "propose", "add-auditor", "--identity",
                                       "spiffe://kms.local/officer2", NULL),
                     6);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "propose", "add-auditor", "--identity",
                                       KMS_TEST_AUDITOR_ID, NULL),
                     7);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "propose", "remove-auditor",
                                       "--identity", KMS_TEST_BOB_ID, NULL),
                     4);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "propose", "add-auditor", NULL), 2);

    assert_int_equal(propose_and_approve("add-auditor", KMS_TEST_BOB_ID), 0);
    assert_int_equal(read_log_as(BOB, 1, 1, &r, NULL, 0), GRPC_STATUS_OK);
    assert_int_equal(r->n_records, 1);
    free_resp(r);
    /* bob is now only an auditor */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", BOB_CONF, "list-keys", NULL), 3);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", BOB_CONF, "audit", "tail", "-n", "1", NULL),
                     0);

    assert_int_equal(propose_and_approve("remove-auditor", KMS_TEST_BOB_ID), 0);
    assert_int_equal(read_log_as(BOB, 1, 1, &r, NULL, 0), GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", BOB_CONF, "audit", "tail", NULL), 3);
    /* the original auditor is untouched */
    assert_int_equal(read_log_as(AUDITOR, 1, 1, &r, NULL, 0), GRPC_STATUS_OK);
    free_resp(r);
}

/* tail --json: JSON Lines, each line exactly a record of the files. */
static void tail_json_is_the_records_lines(void **state)
{
    (void)state;
    static char log[LOG_MAX];
    static kms_audit_parsed p;
    char line[KMS_AUDIT_LINE_MAX + 1];
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", AUDITOR_CONF, "audit", "tail", "--json",
                                       "-n", "5", NULL),
                     0);
    read_log(log, sizeof(log), NULL);
    size_t lines = 0;
    uint64_t prev = 0;
    for (char *l = OUT; *l != '\0';) {
        char *nl = strchr(l, '\n');
        assert_non_null(nl);
        size_t n = (size_t)(nl - l) + 1;
        assert_int_equal(kms_audit_rec_parse(l, n, &p), KMS_OK); /* strict JSON of a record */
        assert_int_equal(line_of(log, p.rec.seq, line, sizeof(line)), n - 1);
        assert_memory_equal(line, l, n - 1);
        if (lines > 0)
            assert_int_equal(p.rec.seq, prev + 1);
        prev = p.rec.seq;
        lines++;
        l = nl + 1;
    }
    assert_int_equal(lines, 5);

    /* --from SEQ -n N, and the readable form */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", AUDITOR_CONF, "--json", "audit", "tail",
                                       "--from", "3", "-n", "2", NULL),
                     0);
    assert_int_equal(strncmp(OUT, "{\"seq\":3,", 9), 0);
    assert_non_null(strstr(OUT, "\n{\"seq\":4,"));
    assert_null(strstr(OUT, "{\"seq\":5,"));
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", AUDITOR_CONF, "audit", "tail", "--from",
                                       "1", "-n", "1", NULL),
                     0);
    assert_int_equal(strncmp(OUT, "1 ", 2), 0);
    assert_non_null(strstr(OUT, " start "));
    /* bad arguments */
    assert_int_equal(
        kms_test_kmsctl_l(&IO, "--config", AUDITOR_CONF, "audit", "tail", "--from", "0", NULL), 2);
    assert_int_equal(
        kms_test_kmsctl_l(&IO, "--config", AUDITOR_CONF, "audit", "tail", "-n", "x", NULL), 2);
    /* the app may not */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP_CONF, "audit", "tail", NULL), 3);
}

/* tail -f prints records made after it started, until it is stopped. */
static void tail_follow_prints_new_records(void **state)
{
    (void)state;
    char out_path[400], err_path[400];
    kms_test_path(out_path, sizeof(out_path), DIR_, "follow.out");
    kms_test_path(err_path, sizeof(err_path), DIR_, "follow.err");
    const char *kmsctl = getenv("KMS_KMSCTL");
    assert_non_null(kmsctl);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    /* From the record after the current end: the GenerateDataKey below
     * comes later, however long kmsctl takes to start. */
    Kms__V1__ReadAuditLogResponse *r = NULL;
    assert_int_equal(read_log_as(AUDITOR, UINT64_MAX, 1, &r, NULL, 0), GRPC_STATUS_OK);
    char from[32];
    snprintf(from, sizeof(from), "%llu", (unsigned long long)r->last_seq + 1);
    free_resp(r);
    char *argv[] = {(char *)kmsctl, "--config", AUDITOR_CONF, "--json", "audit",
                    "tail",         "-f",       "--from",     from,     NULL};
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, kmsctl, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    usleep(300 * 1000);
    assert_int_equal(gdk(APP, "second"), GRPC_STATUS_OK);
    static char got[65536];
    int seen = 0;
    for (int i = 0; i < 300 && !seen; i++) {
        usleep(100 * 1000);
        kms_test_read_file(out_path, got, sizeof(got));
        seen = strstr(got, "\"key\":\"second\"") != NULL;
    }
    kill(pid, SIGTERM);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(seen);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(an_auditor_reads_the_files_records),
        cmocka_unit_test(the_auditor_is_refused_every_other_method),
        cmocka_unit_test(nobody_else_reads_the_log),
        cmocka_unit_test(from_seq_and_limit_edges),
        cmocka_unit_test(records_across_a_rotation),
        cmocka_unit_test(a_quorum_action_adds_and_removes_an_auditor),
        cmocka_unit_test(tail_json_is_the_records_lines),
        cmocka_unit_test(tail_follow_prints_new_records),
    };
    return KMS_RUN_GROUP(tests, group_setup, group_teardown);
}
