/* Tampered state on a stopped kmsd, against real parts (kmsd over mutual
 * TLS, SoftHSM2 token, SQLite file): an action put in the EXECUTING state
 * with `sqlite3`-style writes, or given approvals copied from another
 * officer or another action, is not executed when kmsd starts; it fails
 * with a message naming the action and the check, and the token's objects
 * (pkcs11-tool) and the key's versions are unchanged. The legitimate
 * flow, approved and executed, still works. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <grpc/grpc.h>
#include <grpc/status.h>
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

/* Starts kmsd on the tampered database and checks the action failed, not
 * executed, with a message naming it and the check (why), and nothing
 * changed on the token or among demo's versions. */
static void expect_not_executed(const Kms__V1__Action *a, int objects, int versions,
                                const char *why)
{
    start();
    Kms__V1__Action *now = get_action(&a->id);
    if (now->state != KMS__V1__ACTION_STATE__FAILED ||
        strstr(now->result, "not executed") == NULL || strstr(now->result, why) == NULL)
        fail_msg("tampered action: state %d, result \"%s\" (want FAILED, \"%s\")", now->state,
                 now->result, why);
    free_action(now);
    assert_int_equal(token_objects(), objects);
    assert_int_equal(count_rows(DEMO_VERSIONS), versions);
}

/* ---- the tests ------------------------------------------------------------------------------ */

/* A pending action put in the EXECUTING state, with no approval at all. */
static void executing_action_without_approvals(void **state)
{
    (void)state;
    Kms__V1__Action *a = propose_rotation("demo");
    stop();
    int objects = token_objects(), versions = count_rows(DEMO_VERSIONS);
    tamper("UPDATE actions SET state = 6 WHERE id = ?1", &a->id, NULL);
    expect_not_executed(a, objects, versions, "0 valid approvals");
    free_action(a);
}

/* One real approval, and officer2's row copied as officer3's: a signature
 * that does not verify under officer3's key (the same as an officer
 * removed and re-added with a new key, whose old approvals stay). */
static void approval_copied_to_another_officer(void **state)
{
    (void)state;
    Kms__V1__Action *a = propose_rotation("demo");
    approve(O2, "officer2", a);
    stop();
    int objects = token_objects(), versions = count_rows(DEMO_VERSIONS);
    tamper("INSERT INTO approvals (action_id, officer_id, signature, approved_at)"
           " SELECT action_id, 'officer3', signature, approved_at + 1 FROM approvals"
           " WHERE action_id = ?1 AND officer_id = 'officer2'",
           &a->id, NULL);
    tamper("UPDATE actions SET state = 6 WHERE id = ?1", &a->id, NULL);
    expect_not_executed(a, objects, versions, "1 valid approvals");
    free_action(a);
}

/* One real approval, and officer3's real approval of another action copied
 * onto it: signed over the other action's digest. */
static void approval_copied_from_another_action(void **state)
{
    (void)state;
    Kms__V1__Action *a = propose_rotation("demo");
    Kms__V1__Action *other = propose_rotation("second");
    approve(O2, "officer2", a);
    approve(O3, "officer3", other);
    stop();
    int objects = token_objects(), versions = count_rows(DEMO_VERSIONS);
    tamper("INSERT INTO approvals (action_id, officer_id, signature, approved_at)"
           " SELECT ?1, officer_id, signature, approved_at FROM approvals"
           " WHERE action_id = ?2 AND officer_id = 'officer3'",
           &a->id, &other->id);
    tamper("UPDATE actions SET state = 6 WHERE id = ?1", &a->id, NULL);
    expect_not_executed(a, objects, versions, "1 valid approvals");
    free_action(a);
    free_action(other);
}

/* An action whose stored digest no longer matches its stored body. */
static void digest_that_does_not_match(void **state)
{
    (void)state;
    Kms__V1__Action *a = propose_rotation("demo");
    approve(O2, "officer2", a);
    approve(O3, "officer3", a); /* executes: a new version of demo */
    Kms__V1__Action *b = propose_rotation("demo");
    stop();
    int objects = token_objects(), versions = count_rows(DEMO_VERSIONS);
    tamper("UPDATE actions SET digest = zeroblob(32), state = 6 WHERE id = ?1", &b->id, NULL);
    expect_not_executed(b, objects, versions, "digest does not match");
    free_action(a);
    free_action(b);
}

/* Two valid approvals, kmsd killed once the second committed (the action
 * is EXECUTING); then officer2 re-enrolled after approving (its
 * created_at moved past its approval, as a RemoveOfficer and AddOfficer
 * with the same key would leave it). The resumed action must not count the
 * old approval. Without the change, the same crash resumes and executes. */
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
    int objects = token_objects(), versions = count_rows(DEMO_VERSIONS);
    tamper("UPDATE officers SET created_at = (SELECT approved_at + 1 FROM approvals"
           " WHERE action_id = ?1 AND officer_id = 'officer2') WHERE id = 'officer2'",
           &a->id, NULL);
    expect_not_executed(a, objects, versions, "1 valid approvals");
    free_action(a);
}

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
    };
    return KMS_RUN_GROUP(tests, group_setup, group_teardown);
}
