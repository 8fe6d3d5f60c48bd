/* Authenticated state, against real parts (kmsd over mutual TLS,
 * SoftHSM2 token, SQLite file). Each case tampers with the database of a
 * stopped kmsd, as `sqlite3` would: an action put in the EXECUTING state,
 * approvals copied from another officer or action, a digest that does not
 * match, an officer re-enrolled after approving, `deletion_at = 1` on every
 * key, an added policy identity, an added officer with a fresh key, a
 * lowered or deleted threshold, a key-version row rolled back to an older
 * valid copy, a deleted row. For each: `kmsd verify-state` names the table,
 * row and check and exits non-zero, `kmsd run` refuses to serve (it exits
 * with the same message instead of getting ready), and the token's kms
 * objects are unchanged. The database is then put back as it was and the
 * legitimate flows go on: approved actions execute, a crashed execution
 * resumes and executes exactly once, and verify-state passes. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <grpc/grpc.h>
#include <grpc/status.h>
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <sqlite3.h>

#include "group_run.h"
#include "grpc_test_client.h"
#include "kms/v1/kms.pb-c.h"
#include "kmsd_fixture.h"

#define QU "/kms.v1.Quorum/"

static kms_test_kmsd K;
static kms_tc *O1, *O2, *O3;

static void start(void)
{
    kms_test_kmsd_start(&K, NULL);
    O1 = kms_test_kmsd_open_as(&K, "officer1");
    O2 = kms_test_kmsd_open_as(&K, "officer2");
    O3 = kms_test_kmsd_open_as(&K, "officer3");
}

static void stop(void)
{
    kms_tc_close(O1);
    kms_tc_close(O2);
    kms_tc_close(O3);
    O1 = O2 = O3 = NULL;
    assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
}

static int group_setup(void **state)
{
    (void)state;
    grpc_init();
    kms_test_kmsd_setup(&K);
    start();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    stop();
    kms_test_kmsd_teardown(&K);
    kms_tc_grpc_shutdown();
    return 0;
}

/* ---- actions ------------------------------------------------------------------------------ */

static Kms__V1__Action *propose_rotation(const char *key)
{
    Kms__V1__RotateKey rk = KMS__V1__ROTATE_KEY__INIT;
    Kms__V1__ActionBody b = KMS__V1__ACTION_BODY__INIT;
    rk.key_name = (char *)key;
    b.action_case = KMS__V1__ACTION_BODY__ACTION_ROTATE_KEY;
    b.rotate_key = &rk;
    Kms__V1__ProposeActionRequest req = KMS__V1__PROPOSE_ACTION_REQUEST__INIT;
    req.action = &b;
    Kms__V1__Action *a = NULL;
    assert_int_equal(kms_tc_call(O1, QU "ProposeAction", &req.base, &kms__v1__action__descriptor,
                                 (ProtobufCMessage **)&a, NULL, 0),
                     GRPC_STATUS_OK);
    return a;
}

/* The digest, from the documented format (docs/approvals.md). */
static void digest_of(const Kms__V1__Action *a, uint8_t out[32])
{
    uint8_t msg[16 + 16 + 16 + 32 + 8], h[32];
    memcpy(msg, "kms.v1.approval", 16);
    memcpy(msg + 16, a->instance_id.data, 16);
    memcpy(msg + 32, a->id.data, 16);
    SHA256(a->action_bytes.data, a->action_bytes.len, h);
    memcpy(msg + 48, h, 32);
    for (int i = 0; i < 8; i++)
        msg[80 + i] = (uint8_t)((uint64_t)a->expires_at >> (56 - 8 * i));
    SHA256(msg, sizeof(msg), out);
}

/* officer signs a's digest and sends it through c; the gRPC status. */
static int approve_status(kms_tc *c, const char *officer, const Kms__V1__Action *a)
{
    uint8_t d[32], sig[256];
    digest_of(a, d);
    assert_memory_equal(d, a->digest.data, 32);
    size_t len = kms_test_kmsd_officer_sign(&K, officer, d, sig);
    Kms__V1__ApproveActionRequest req = KMS__V1__APPROVE_ACTION_REQUEST__INIT;
    req.action_id = a->id;
    req.signature.data = sig;
    req.signature.len = len;
    Kms__V1__Action *out = NULL;
    int st = kms_tc_call(c, QU "ApproveAction", &req.base, &kms__v1__action__descriptor,
                         (ProtobufCMessage **)&out, NULL, 0);
    if (out != NULL)
        protobuf_c_message_free_unpacked(&out->base, NULL);
    return st;
}

static void approve(kms_tc *c, const char *officer, const Kms__V1__Action *a)
{
    assert_int_equal(approve_status(c, officer, a), GRPC_STATUS_OK);
}

static Kms__V1__Action *get_action(const ProtobufCBinaryData *id)
{
    Kms__V1__GetActionRequest req = KMS__V1__GET_ACTION_REQUEST__INIT;
    req.action_id = *id;
    Kms__V1__Action *a = NULL;
    assert_int_equal(kms_tc_call(O3, QU "GetAction", &req.base, &kms__v1__action__descriptor,
                                 (ProtobufCMessage **)&a, NULL, 0),
                     GRPC_STATUS_OK);
    return a;
}

/* GetAction as officer3: the action, or NULL (status in *st if not NULL). */
static Kms__V1__Action *get_action_status(const ProtobufCBinaryData *id, int *st)
{
    Kms__V1__GetActionRequest req = KMS__V1__GET_ACTION_REQUEST__INIT;
    req.action_id = *id;
    Kms__V1__Action *a = NULL;
    int s = kms_tc_call(O3, QU "GetAction", &req.base, &kms__v1__action__descriptor,
                        (ProtobufCMessage **)&a, NULL, 0);
    if (st != NULL)
        *st = s;
    if (s != GRPC_STATUS_OK && a != NULL) {
        protobuf_c_message_free_unpacked(&a->base, NULL);
        a = NULL;
    }
    return a;
}

static void free_action(Kms__V1__Action *a)
{
    if (a != NULL)
        protobuf_c_message_free_unpacked(&a->base, NULL);
}

/* ---- the database and the token, from outside ------------------------------------------ */

/* Runs sql with ?1 bound to id (16 bytes) on the stopped kmsd's database. */
static void tamper(const char *sql, const ProtobufCBinaryData *id, const ProtobufCBinaryData *id2)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(K.db, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    assert_int_equal(sqlite3_bind_blob(st, 1, id->data, (int)id->len, SQLITE_TRANSIENT), SQLITE_OK);
    if (id2 != NULL)
        assert_int_equal(sqlite3_bind_blob(st, 2, id2->data, (int)id2->len, SQLITE_TRANSIENT),
                         SQLITE_OK);
    if (sqlite3_step(st) != SQLITE_DONE)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    assert_true(sqlite3_changes(db) >= 1);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static int count_rows(const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(K.db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static int token_objects(void)
{
    return kms_test_kmsd_token_objects(&K);
}

#define DEMO_VERSIONS                                                                              \
    "SELECT count(*) FROM key_versions v JOIN keys k ON k.id = v.key_id WHERE k.name = 'demo'"

/* ---- saving and restoring the database (kmsd stopped) -------------------------------- */

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = NULL;
    if (in == NULL) {
        unlink(to);
        return;
    }
    out = fopen(to, "wb");
    assert_non_null(out);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

static void db_files(const char *suffix_from, const char *suffix_to)
{
    static const char *const ext[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char a[400], b[400];
        snprintf(a, sizeof(a), "%s%s%s", K.db, ext[i], suffix_from);
        snprintf(b, sizeof(b), "%s%s%s", K.db, ext[i], suffix_to);
        copy_file(a, b);
    }
}

static void db_save(void)
{
    db_files("", ".saved");
}

static void db_restore(void)
{
    db_files(".saved", "");
}

/* ---- refusals ----------------------------------------------------------------------------- */

/* The audit log of the refused starts (run_must_refuse): each leaves a
 * `state.fail` record there. */
static const char *refused_audit_dir(void)
{
    static char dir[420];
    snprintf(dir, sizeof(dir), "%s.refused-audit", K.db);
    return dir;
}

/* Empties the refused starts' audit log, so that each start's record is
 * its own. */
static void clear_refused_audit(void)
{
    DIR *dir = opendir(refused_audit_dir());
    if (dir == NULL)
        return;
    struct dirent *e;
    char path[700];
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", refused_audit_dir(), e->d_name);
        unlink(path);
    }
    closedir(dir);
}

/* The last `state.fail` record in the refused starts' audit log, into out
 * ("" if there is none). */
static void last_state_failure(char *out, size_t cap)
{
    out[0] = '\0';
    DIR *dir = opendir(refused_audit_dir());
    if (dir == NULL)
        return;
    struct dirent *e;
    char newest[256] = "";
    while ((e = readdir(dir)) != NULL)
        if (e->d_name[0] != '.' && strcmp(e->d_name, newest) > 0)
            snprintf(newest, sizeof(newest), "%s", e->d_name);
    closedir(dir);
    char path[700], line[4096];
    snprintf(path, sizeof(path), "%s/%s", refused_audit_dir(), newest);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strstr(line, "\"type\":\"state.fail\"") != NULL)
            snprintf(out, cap, "%s", line);
    fclose(f);
}

/* `kmsd run` on the tampered database, its stdout and stderr into out:
 * it must exit (non-zero) on its own within 60 s instead of serving. */
static void run_must_refuse(char *out, size_t cap)
{
    char log[400];
    snprintf(log, sizeof(log), "%s.run.log", K.db);
    clear_refused_audit();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            _exit(127);
        execl(getenv("KMS_KMSD"), "kmsd", "--config", K.config, "--audit-dir", refused_audit_dir(),
              "run", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    pid_t done = 0;
    for (int i = 0; i < 600 && (done = waitpid(pid, &status, WNOHANG)) == 0; i++)
        usleep(100 * 1000);
    if (done == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("kmsd served the tampered database (still running after 60 s)");
    }
    FILE *f = fopen(log, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    fclose(f);
    if (!WIFEXITED(status) || WEXITSTATUS(status) == 0)
        fail_msg("kmsd run on the tampered database: status %d\n%s", status, out);
}

/* The tampered database is refused: verify-state prints a failure line
 * naming table and check (and row, if row is not NULL) and exits non-zero;
 * run logs the same and refuses to serve; the token's objects stay. Then
 * the database is restored and kmsd started again. */
static void expect_refused(const char *table, const char *row, const char *check, int objects)
{
    char out[16384], line[512];
    const char *verify[] = {"--config", K.config, "verify-state", NULL};
    int st = kms_test_kmsd_run(verify, out, sizeof(out));
    snprintf(line, sizeof(line), "state: FAIL %s (", table);
    const char *at = strstr(out, line);
    const char *eol = at ? strchr(at, '\n') : NULL;
    if (st == 0 || at == NULL || eol == NULL ||
        (row != NULL && (strstr(at, row) == NULL || strstr(at, row) > eol)) ||
        strstr(at, check) == NULL || strstr(at, check) > eol)
        fail_msg("verify-state: exit %d, want a line \"%s%s): ...%s\" in:\n%s", st, line,
                 row ? row : "", check, out);
    run_must_refuse(out, sizeof(out));
    snprintf(line, sizeof(line), "state integrity: %s (", table);
    if (strstr(out, line) == NULL || strstr(out, check) == NULL ||
        strstr(out, "refusing to act on unauthenticated state") == NULL)
        fail_msg("kmsd run: want \"%s...%s\" and the refusal in:\n%s", line, check, out);
    /* The refused start is on the audit record, naming a failed check (the
     * first one found, which need not be this one). */
    char rec[4096];
    last_state_failure(rec, sizeof(rec));
    if (strstr(rec, "table=") == NULL || strstr(rec, "check=") == NULL)
        fail_msg("no state.fail audit record for the refused start: \"%s\"", rec);
    assert_int_equal(token_objects(), objects);
    db_restore();
    start();
}

#define CHANGED "row MAC does not verify"
#define UNMACED "row has no MAC"
#define DIGEST "digest does not match the rows"

/* Stops kmsd and saves its database; the token's object count. */
static int stop_and_save(void)
{
    stop();
    db_save();
    return token_objects();
}

/* Runs a script of sqlite3 statements without parameters. */
static void tamper_script(const char *sql)
{
    sqlite3 *db = NULL;
    char *err = NULL;
    assert_int_equal(sqlite3_open_v2(K.db, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        fail_msg("%s: %s", sql, err);
    assert_true(sqlite3_changes(db) >= 1);
    sqlite3_close(db);
}

/* `kmsd verify-state` passes; the generation it prints (> 0). */
static unsigned long long verify_ok(void)
{
    char out[16384];
    const char *verify[] = {"--config", K.config, "verify-state", NULL};
    int st = kms_test_kmsd_run(verify, out, sizeof(out));
    const char *ok = strstr(out, "state: ok, generation ");
    if (st != 0 || ok == NULL)
        fail_msg("verify-state: exit %d:\n%s", st, out);
    unsigned long long g = strtoull(ok + strlen("state: ok, generation "), NULL, 10);
    assert_true(g > 0);
    return g;
}

static char *hex_id(const ProtobufCBinaryData *id, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < id->len; i++) {
        out[2 * i] = hex[id->data[i] >> 4];
        out[2 * i + 1] = hex[id->data[i] & 15];
    }
    out[2 * id->len] = '\0';
    return out;
}

/* ---- the tests ------------------------------------------------------------------------------ */

/* The legitimate flow: two approvals execute the rotation (once). */
static void approved_action_executes(void **state)
{
    (void)state;
    int versions = count_rows(DEMO_VERSIONS);
    Kms__V1__Action *a = propose_rotation("demo");
    approve(O1, "officer1", a);
    approve(O2, "officer2", a);
    Kms__V1__Action *now = get_action(&a->id);
    assert_int_equal(now->state, KMS__V1__ACTION_STATE__EXECUTED);
    assert_int_equal(count_rows(DEMO_VERSIONS), versions + 1);
    free_action(now);
    free_action(a);
}

/* A pending action put in the EXECUTING state, with no approval at all. */
static void executing_action_without_approvals(void **state)
{
    (void)state;
    char row[40];
    Kms__V1__Action *a = propose_rotation("demo");
    int objects = stop_and_save();
    tamper("UPDATE actions SET state = 6 WHERE id = ?1", &a->id, NULL);
    expect_refused("actions", hex_id(&a->id, row), CHANGED, objects);
    Kms__V1__Action *now = get_action(&a->id);
    assert_int_equal(now->state, KMS__V1__ACTION_STATE__PENDING);
    free_action(now);
    free_action(a);
}

/* One real approval, and officer2's row copied as officer3's. */
static void approval_copied_to_another_officer(void **state)
{
    (void)state;
    Kms__V1__Action *a = propose_rotation("demo");
    approve(O2, "officer2", a);
    int objects = stop_and_save();
    tamper("INSERT INTO approvals (action_id, officer_id, signature, approved_at, mac)"
           " SELECT action_id, 'officer3', signature, approved_at + 1, mac FROM approvals"
           " WHERE action_id = ?1 AND officer_id = 'officer2'",
           &a->id, NULL);
    tamper("UPDATE actions SET state = 6 WHERE id = ?1", &a->id, NULL);
    expect_refused("approvals", "officer_id=officer3", CHANGED, objects);
    free_action(a);
}

/* One real approval, and officer3's real approval of another action copied
 * onto it, its row MAC with it. */
static void approval_copied_from_another_action(void **state)
{
    (void)state;
    Kms__V1__Action *a = propose_rotation("demo");
    Kms__V1__Action *other = propose_rotation("second");
    approve(O2, "officer2", a);
    approve(O3, "officer3", other);
    int objects = stop_and_save();
    tamper("INSERT INTO approvals (action_id, officer_id, signature, approved_at, mac)"
           " SELECT ?1, officer_id, signature, approved_at, mac FROM approvals"
           " WHERE action_id = ?2 AND officer_id = 'officer3'",
           &a->id, &other->id);
    expect_refused("approvals", "officer_id=officer3", CHANGED, objects);
    free_action(a);
    free_action(other);
}

/* An action whose stored digest no longer matches its stored body. */
static void digest_that_does_not_match(void **state)
{
    (void)state;
    char row[40];
    Kms__V1__Action *b = propose_rotation("demo");
    int objects = stop_and_save();
    tamper("UPDATE actions SET digest = zeroblob(32), state = 6 WHERE id = ?1", &b->id, NULL);
    expect_refused("actions", hex_id(&b->id, row), CHANGED, objects);
    free_action(b);
}

/* Two valid approvals, kmsd killed once the second committed (the action
 * is EXECUTING); then officer2's enrollment moved past its approval. The
 * officer row is refused. Restored, the crashed execution resumes and
 * executes exactly once. */
static void approval_from_an_earlier_enrollment(void **state)
{
    (void)state;
    Kms__V1__Action *a = propose_rotation("demo");
    stop();
    const char *crash[] = {"--test-crash-at", "approval-committed", NULL};
    kms_test_kmsd_start(&K, crash);
    O1 = kms_test_kmsd_open_as(&K, "officer1");
    O2 = kms_test_kmsd_open_as(&K, "officer2");
    O3 = kms_test_kmsd_open_as(&K, "officer3");
    approve(O1, "officer1", a);
    assert_int_not_equal(approve_status(O2, "officer2", a), GRPC_STATUS_OK); /* killed */
    kms_tc_close(O1);
    kms_tc_close(O2);
    kms_tc_close(O3);
    assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 128 + SIGKILL);
    assert_int_equal(count_rows("SELECT count(*) FROM actions WHERE state = 6"), 1);
    db_save();
    int objects = token_objects(), versions = count_rows(DEMO_VERSIONS);
    tamper("UPDATE officers SET created_at = (SELECT approved_at + 1 FROM approvals"
           " WHERE action_id = ?1 AND officer_id = 'officer2') WHERE id = 'officer2'",
           &a->id, NULL);
    expect_refused("officers", "id=officer2", CHANGED, objects);
    /* restored: the resumed execution ran exactly once */
    Kms__V1__Action *now = get_action(&a->id);
    assert_int_equal(now->state, KMS__V1__ACTION_STATE__EXECUTED);
    assert_int_equal(count_rows(DEMO_VERSIONS), versions + 1);
    assert_int_equal(count_rows("SELECT count(*) FROM actions WHERE state = 6"), 0);
    free_action(now);
    free_action(a);
}

/* UPDATE keys SET deletion_at = 1: the sweep would shred every key. */
static void deletion_at_on_every_key(void **state)
{
    (void)state;
    int objects = stop_and_save();
    tamper_script("UPDATE keys SET deletion_at = 1");
    expect_refused("keys", "id=", CHANGED, objects);
    assert_int_equal(count_rows("SELECT count(*) FROM keys WHERE deletion_at != 0"), 0);
}

static void added_policy_identity(void **state)
{
    (void)state;
    int objects = stop_and_save();
    tamper_script("INSERT INTO key_policies (key_id, action, identity)"
                  " SELECT id, 2, 'spiffe://kms.local/intruder' FROM keys WHERE name = 'locked'");
    expect_refused("key_policies", "identity=spiffe://kms.local/intruder", UNMACED, objects);
}

/* An officer with a fresh P-256 key of the intruder's. */
static void added_officer_with_a_fresh_key(void **state)
{
    (void)state;
    EVP_PKEY *k = EVP_EC_gen("P-256");
    assert_non_null(k);
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(b, k), 1);
    char *pem = NULL;
    long n = BIO_get_mem_data(b, &pem);
    char sql[2048];
    snprintf(sql, sizeof(sql),
             "INSERT INTO officers (id, identity, signing_key_pem, created_at)"
             " VALUES ('intruder', 'spiffe://kms.local/intruder', '%.*s', 0)",
             (int)n, pem);
    BIO_free(b);
    EVP_PKEY_free(k);
    int objects = stop_and_save();
    tamper_script(sql);
    expect_refused("officers", "id=intruder", UNMACED, objects);
}

/* The CHECK constraint (threshold >= 2) is no obstacle to sqlite3. */
static void lowered_threshold(void **state)
{
    (void)state;
    int objects = stop_and_save();
    tamper_script("PRAGMA ignore_check_constraints = ON;"
                  " UPDATE thresholds SET threshold = 1 WHERE action_type = 'ScheduleKeyDeletion'");
    expect_refused("thresholds", "action_type=ScheduleKeyDeletion", CHANGED, objects);
}

/* A deleted threshold row: the digest fails and the missing row is named. */
static void deleted_threshold_row(void **state)
{
    (void)state;
    int objects = stop_and_save();
    tamper_script("DELETE FROM thresholds WHERE action_type = 'RemoveOfficer'");
    expect_refused("state_digest", "id=1", DIGEST, objects);
    stop();
    db_save();
    tamper_script("DELETE FROM thresholds WHERE action_type = 'RemoveOfficer'");
    expect_refused("thresholds", "action_type=RemoveOfficer", "missing", objects);
}

/* A deleted row of a table (a grant): only the digest sees it. */
static void deleted_row(void **state)
{
    (void)state;
    int objects = stop_and_save();
    tamper_script("DELETE FROM key_policies WHERE identity = 'spiffe://kms.local/someone-else'"
                  " AND action = 2");
    expect_refused("state_digest", "id=1", DIGEST, objects);
}

#define DEMO_V1 " JOIN keys k ON k.id = v.key_id WHERE k.name = 'demo' AND v.version = 1"

/* demo's version 1 disabled by an approved action, then its row put back
 * as it was before (ENABLED, with its then valid MAC). */
static void key_version_rolled_back(void **state)
{
    (void)state;
    Kms__V1__SetKeyVersionState sv = KMS__V1__SET_KEY_VERSION_STATE__INIT;
    Kms__V1__ActionBody body = KMS__V1__ACTION_BODY__INIT;
    sv.key_name = "demo";
    sv.version = 1;
    sv.state = KMS__V1__KEY_VERSION_STATE__DISABLED;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_SET_KEY_VERSION_STATE;
    body.set_key_version_state = &sv;
    Kms__V1__ProposeActionRequest req = KMS__V1__PROPOSE_ACTION_REQUEST__INIT;
    req.action = &body;
    Kms__V1__Action *a = NULL;
    assert_int_equal(kms_tc_call(O1, QU "ProposeAction", &req.base, &kms__v1__action__descriptor,
                                 (ProtobufCMessage **)&a, NULL, 0),
                     GRPC_STATUS_OK);
    /* the row before: ENABLED, its MAC valid */
    uint8_t old_mac[32];
    ProtobufCBinaryData mac = {sizeof(old_mac), old_mac};
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(K.db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT v.state, v.mac FROM key_versions v" DEMO_V1, -1, &st, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 1);
    assert_int_equal(sqlite3_column_bytes(st, 1), 32);
    memcpy(old_mac, sqlite3_column_blob(st, 1), 32);
    sqlite3_finalize(st);
    sqlite3_close(db);
    approve(O1, "officer1", a);
    approve(O2, "officer2", a);
    Kms__V1__Action *now = get_action(&a->id);
    assert_int_equal(now->state, KMS__V1__ACTION_STATE__EXECUTED);
    free_action(now);
    int objects = stop_and_save();
    assert_int_equal(count_rows("SELECT v.state FROM key_versions v" DEMO_V1), 2);
    tamper("UPDATE key_versions SET state = 1, mac = ?1"
           " WHERE rowid = (SELECT v.rowid FROM key_versions v" DEMO_V1 ")",
           &mac, NULL);
    expect_refused("state_digest", "id=1", DIGEST, objects);
    free_action(a);
}

/* ---- tampering under a running kmsd ------------------------------------------------------ */

#define KM "/kms.v1.KeyManagement/"

/* Runs a script of sqlite3 statements on the running kmsd's database, as
 * a second connection (waits out kmsd's write lock). */
static void live_script(const char *sql)
{
    sqlite3 *db = NULL;
    char *err = NULL;
    assert_int_equal(sqlite3_open_v2(K.db, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        fail_msg("%s: %s", sql, err);
    assert_true(sqlite3_changes(db) >= 1);
    sqlite3_close(db);
}

/* GenerateDataKey on key as c: the gRPC status. */
static int generate(kms_tc *c, const char *key)
{
    Kms__V1__GenerateDataKeyRequest req = KMS__V1__GENERATE_DATA_KEY_REQUEST__INIT;
    req.key_name = (char *)key;
    req.key_spec = KMS__V1__KEY_SPEC__AES_256;
    req.without_plaintext = 1;
    ProtobufCMessage *m = NULL;
    int st = kms_tc_call(c, KM "GenerateDataKey", &req.base,
                         &kms__v1__generate_data_key_response__descriptor, &m, NULL, 0);
    if (m != NULL)
        protobuf_c_message_free_unpacked(m, NULL);
    return st;
}

#define LIVE_GRANT                                                                                 \
    " key_policies (key_id, action, identity) SELECT id, 1, '" KMS_TEST_APP_ID "' FROM keys"       \
    " WHERE name = 'locked'"

/* app may not use "locked"; a grant inserted while kmsd runs is read on
 * the first load of locked's policy and must get app nothing. Removing it
 * puts the state back as sealed: kmsd serves again, without a restart. */
static void live_added_policy_identity(void **state)
{
    (void)state;
    kms_tc *app = kms_test_kmsd_open_as(&K, "app");
    assert_int_equal(generate(app, "demo"), GRPC_STATUS_OK);
    live_script("INSERT INTO" LIVE_GRANT);
    assert_int_not_equal(generate(app, "locked"), GRPC_STATUS_OK);
    live_script("DELETE FROM key_policies WHERE identity = '" KMS_TEST_APP_ID "'"
                " AND key_id = (SELECT id FROM keys WHERE name = 'locked')");
    assert_int_equal(generate(app, "demo"), GRPC_STATUS_OK);
    assert_int_equal(generate(app, "locked"), GRPC_STATUS_PERMISSION_DENIED);
    kms_tc_close(app);
}

/* An officers row for bob inserted while kmsd runs, then a legitimate
 * AddOfficer (which reloads the officer set when it executes): the
 * approval that would execute it is refused, and bob never becomes an
 * officer. */
static void live_added_officer(void **state)
{
    (void)state;
    char pem[1024], sql[2048];
    EVP_PKEY *k = EVP_EC_gen("P-256");
    assert_non_null(k);
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(b, k), 1);
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    assert_true(n > 0 && (size_t)n < sizeof(pem));
    memcpy(pem, p, (size_t)n);
    pem[n] = '\0';
    BIO_free(b);
    EVP_PKEY_free(k);

    Kms__V1__AddOfficer ao = KMS__V1__ADD_OFFICER__INIT;
    Kms__V1__ActionBody body = KMS__V1__ACTION_BODY__INIT;
    ao.officer_id = "officer4";
    ao.identity = "spiffe://kms.local/officer4";
    ao.signing_key_pem = pem;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_ADD_OFFICER;
    body.add_officer = &ao;
    Kms__V1__ProposeActionRequest req = KMS__V1__PROPOSE_ACTION_REQUEST__INIT;
    req.action = &body;
    Kms__V1__Action *a = NULL;
    assert_int_equal(kms_tc_call(O1, QU "ProposeAction", &req.base, &kms__v1__action__descriptor,
                                 (ProtobufCMessage **)&a, NULL, 0),
                     GRPC_STATUS_OK);
    approve(O1, "officer1", a);

    snprintf(sql, sizeof(sql),
             "INSERT INTO officers (id, identity, signing_key_pem, created_at)"
             " VALUES ('intruder', '" KMS_TEST_BOB_ID "', '%s', 0)",
             pem);
    live_script(sql);
    assert_int_not_equal(approve_status(O2, "officer2", a), GRPC_STATUS_OK);
    kms_tc *bob = kms_test_kmsd_open_as(&K, "bob");
    Kms__V1__Action *mine = NULL;
    assert_int_not_equal(kms_tc_call(bob, QU "ProposeAction", &req.base,
                                     &kms__v1__action__descriptor, (ProtobufCMessage **)&mine, NULL,
                                     0),
                         GRPC_STATUS_OK);
    free_action(mine);
    Kms__V1__Action *now = get_action_status(&a->id, NULL);
    assert_null(now);

    /* The intruder's row gone, the state verifies again; the legitimate
     * action is left pending (officer1's approval only). */
    live_script("DELETE FROM officers WHERE id = 'intruder'");
    now = get_action(&a->id);
    assert_int_equal(now->state, KMS__V1__ACTION_STATE__PENDING);
    free_action(now);
    mine = NULL;
    assert_int_equal(kms_tc_call(bob, QU "ProposeAction", &req.base, &kms__v1__action__descriptor,
                                 (ProtobufCMessage **)&mine, NULL, 0),
                     GRPC_STATUS_PERMISSION_DENIED);
    free_action(mine);
    kms_tc_close(bob);
    free_action(a);
}

/* RotateKey's threshold by an approved SetThreshold (officer1, officer2). */
static void set_rotate_threshold(uint32_t threshold)
{
    Kms__V1__SetThreshold th = KMS__V1__SET_THRESHOLD__INIT;
    Kms__V1__ActionBody body = KMS__V1__ACTION_BODY__INIT;
    th.action_type = "RotateKey";
    th.threshold = threshold;
    body.action_case = KMS__V1__ACTION_BODY__ACTION_SET_THRESHOLD;
    body.set_threshold = &th;
    Kms__V1__ProposeActionRequest req = KMS__V1__PROPOSE_ACTION_REQUEST__INIT;
    req.action = &body;
    Kms__V1__Action *a = NULL;
    assert_int_equal(kms_tc_call(O1, QU "ProposeAction", &req.base, &kms__v1__action__descriptor,
                                 (ProtobufCMessage **)&a, NULL, 0),
                     GRPC_STATUS_OK);
    approve(O1, "officer1", a);
    approve(O2, "officer2", a);
    Kms__V1__Action *now = get_action(&a->id);
    assert_int_equal(now->state, KMS__V1__ACTION_STATE__EXECUTED);
    free_action(now);
    free_action(a);
}

/* RotateKey's thresholds row: its threshold and MAC. */
static int rotate_threshold_row(uint8_t mac[32])
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(K.db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT threshold, mac FROM thresholds"
                                        " WHERE action_type = 'RotateKey'",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int threshold = sqlite3_column_int(st, 0);
    assert_int_equal(sqlite3_column_bytes(st, 1), 32);
    memcpy(mac, sqlite3_column_blob(st, 1), 32);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return threshold;
}

/* Puts RotateKey's row back to threshold with mac, under the running kmsd. */
static void live_set_rotate_row(int threshold, const uint8_t mac[32])
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(K.db, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "UPDATE thresholds SET threshold = ?1, mac = ?2"
                                        " WHERE action_type = 'RotateKey'",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_int(st, 1, threshold);
    sqlite3_bind_blob(st, 2, mac, 32, SQLITE_TRANSIENT);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    assert_int_equal(sqlite3_changes(db), 1);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* RotateKey's threshold raised to 3 by the quorum, then its old row (2,
 * with its then valid MAC) put back while kmsd runs: every row MAC
 * verifies, only the digest sees the replay, and a rotation proposed on
 * the old threshold is refused. The raised row put back, kmsd serves. */
static void live_replayed_threshold_row(void **state)
{
    (void)state;
    uint8_t old_mac[32], new_mac[32];
    int old = rotate_threshold_row(old_mac);
    assert_int_equal(old, 2);
    set_rotate_threshold(3);
    assert_int_equal(rotate_threshold_row(new_mac), 3);

    live_set_rotate_row(old, old_mac);
    Kms__V1__RotateKey rk = KMS__V1__ROTATE_KEY__INIT;
    Kms__V1__ActionBody b = KMS__V1__ACTION_BODY__INIT;
    rk.key_name = "second";
    b.action_case = KMS__V1__ACTION_BODY__ACTION_ROTATE_KEY;
    b.rotate_key = &rk;
    Kms__V1__ProposeActionRequest req = KMS__V1__PROPOSE_ACTION_REQUEST__INIT;
    req.action = &b;
    Kms__V1__Action *a = NULL;
    assert_int_not_equal(kms_tc_call(O1, QU "ProposeAction", &req.base,
                                     &kms__v1__action__descriptor, (ProtobufCMessage **)&a, NULL,
                                     0),
                         GRPC_STATUS_OK);
    free_action(a);

    live_set_rotate_row(3, new_mac);
    set_rotate_threshold(2);
}

/* After the legitimate changes above, the state verifies and each admin
 * change moved the generation on. */
static void legitimate_state_verifies(void **state)
{
    (void)state;
    stop();
    unsigned long long g = verify_ok();
    start();
    Kms__V1__Action *a = propose_rotation("second");
    approve(O1, "officer1", a);
    approve(O3, "officer3", a);
    free_action(a);
    stop();
    assert_true(verify_ok() > g);
    start();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* First: a later case moves officer2's enrollment a second past
         * its approval, and enrollments compare in whole seconds. */
        cmocka_unit_test(approved_action_executes),
        cmocka_unit_test(executing_action_without_approvals),
        cmocka_unit_test(approval_copied_to_another_officer),
        cmocka_unit_test(approval_copied_from_another_action),
        cmocka_unit_test(digest_that_does_not_match),
        cmocka_unit_test(approval_from_an_earlier_enrollment),
        cmocka_unit_test(deletion_at_on_every_key),
        cmocka_unit_test(added_policy_identity),
        cmocka_unit_test(added_officer_with_a_fresh_key),
        cmocka_unit_test(lowered_threshold),
        cmocka_unit_test(deleted_threshold_row),
        cmocka_unit_test(deleted_row),
        cmocka_unit_test(key_version_rolled_back),
        cmocka_unit_test(live_added_policy_identity),
        cmocka_unit_test(live_added_officer),
        cmocka_unit_test(live_replayed_threshold_row),
        cmocka_unit_test(legitimate_state_verifies),
    };
    return KMS_RUN_GROUP(tests, group_setup, group_teardown);
}
