/* Quorum against a real kmsd (mutual TLS on loopback, SoftHSM2 token,
 * SQLite file): M-of-N rotation and its effect on blobs, every approval
 * negative with its status and no state change, scheduled deletion with a
 * test clock and the token checked with pkcs11-tool, an approval made with
 * the openssl command line from docs/approvals.md, and SIGKILL at random
 * points while approvals execute (KMS_CRASH_ITERATIONS, default 20). */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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
#include "test_util.h"

#define KM "/kms.v1.KeyManagement/"
#define QU "/kms.v1.Quorum/"
#define DAY 86400

static kms_test_kmsd K;
static char CLOCK[400];
static int64_t NOW = 1900000000;
static kms_tc *APP, *O1, *O2, *O3;

/* Moves the test clock. Written aside and renamed, so that kmsd never reads
 * a half-written file (it would fall back to real time). */
static void set_clock(int64_t t)
{
    char tmp[420];
    NOW = t;
    snprintf(tmp, sizeof(tmp), "%s.new", CLOCK);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    fprintf(f, "%lld\n", (long long)t);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, CLOCK), 0);
}

static void open_clients(void)
{
    APP = kms_test_kmsd_open_as(&K, "app");
    O1 = kms_test_kmsd_open_as(&K, "officer1");
    O2 = kms_test_kmsd_open_as(&K, "officer2");
    O3 = kms_test_kmsd_open_as(&K, "officer3");
}

static void close_clients(void)
{
    kms_tc_close(APP);
    kms_tc_close(O1);
    kms_tc_close(O2);
    kms_tc_close(O3);
    APP = O1 = O2 = O3 = NULL;
}

/* Starts kmsd on the test clock; with crash_at, armed to SIGKILL itself at
 * that crash point (base/crashpoint.h). */
static void start_crashing_at(const char *crash_at)
{
    const char *extra[] = {"--test-clock", CLOCK, crash_at ? "--test-crash-at" : NULL, crash_at,
                           NULL};
    kms_test_kmsd_start(&K, extra);
    open_clients();
}

static void start(void)
{
    start_crashing_at(NULL);
}

static int group_setup(void **state)
{
    (void)state;
    grpc_init();
    kms_test_kmsd_setup(&K);
    char dir[320];
    kms_test_path(CLOCK, sizeof(CLOCK), kms_test_kmsd_dir(&K, dir, sizeof(dir)), "clock");
    set_clock(NOW);
    FILE *f = fopen(K.config, "a");
    assert_non_null(f);
    fputs("quorum:\n  sweep_interval_ms: 50\n", f);
    fclose(f);
    start();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    close_clients();
    assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
    kms_test_kmsd_teardown(&K);
    kms_tc_grpc_shutdown();
    return 0;
}

/* ---- helpers: actions, digests, signatures --------------------------------------------- */

/* The status message of the last propose() or decrypt(): what the caller
 * is told (a public detail, or the fixed text of the code). */
static char said[256];

static int propose(kms_tc *c, Kms__V1__ActionBody *body, Kms__V1__Action **out)
{
    Kms__V1__ProposeActionRequest req = KMS__V1__PROPOSE_ACTION_REQUEST__INIT;
    req.action = body;
    return kms_tc_call(c, QU "ProposeAction", &req.base, &kms__v1__action__descriptor,
                       (ProtobufCMessage **)out, said, sizeof(said));
}

/* The digest, computed here from the documented format. */
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

static size_t sign_with(const char *officer, const uint8_t digest[32], uint8_t *sig)
{
    return kms_test_kmsd_officer_sign(&K, officer, digest, sig);
}

static int approve_raw(kms_tc *c, const uint8_t *id, size_t id_len, const uint8_t *sig,
                       size_t sig_len, Kms__V1__Action **out)
{
    Kms__V1__ApproveActionRequest req = KMS__V1__APPROVE_ACTION_REQUEST__INIT;
    req.action_id.data = (uint8_t *)id;
    req.action_id.len = id_len;
    req.signature.data = (uint8_t *)sig;
    req.signature.len = sig_len;
    return kms_tc_call(c, QU "ApproveAction", &req.base, &kms__v1__action__descriptor,
                       (ProtobufCMessage **)out, NULL, 0);
}

/* officer signs a's digest (checked here first) and sends it through c. */
static int approve(kms_tc *c, const char *officer, const Kms__V1__Action *a, Kms__V1__Action **out)
{
    uint8_t d[32], sig[256];
    digest_of(a, d);
    assert_int_equal(a->digest.len, 32);
    assert_memory_equal(d, a->digest.data, 32);
    size_t n = sign_with(officer, d, sig);
    Kms__V1__Action *tmp = NULL;
    int st = approve_raw(c, a->id.data, a->id.len, sig, n, out ? out : &tmp);
    if (tmp)
        protobuf_c_message_free_unpacked(&tmp->base, NULL);
    return st;
}

static Kms__V1__Action *get_action(const uint8_t *id)
{
    Kms__V1__GetActionRequest req = KMS__V1__GET_ACTION_REQUEST__INIT;
    req.action_id.data = (uint8_t *)id;
    req.action_id.len = 16;
    Kms__V1__Action *a = NULL;
    assert_int_equal(kms_tc_call(O3, QU "GetAction", &req.base, &kms__v1__action__descriptor,
                                 (ProtobufCMessage **)&a, NULL, 0),
                     GRPC_STATUS_OK);
    return a;
}

static void free_action(Kms__V1__Action *a)
{
    if (a)
        protobuf_c_message_free_unpacked(&a->base, NULL);
}

/* Cancels a through c; the action afterwards goes to *out when given (to
 * free with free_action). */
static int cancel(kms_tc *c, const Kms__V1__Action *a, Kms__V1__Action **out)
{
    Kms__V1__CancelActionRequest cr = KMS__V1__CANCEL_ACTION_REQUEST__INIT;
    cr.action_id = a->id;
    Kms__V1__Action *done = NULL;
    int st = kms_tc_call(c, QU "CancelAction", &cr.base, &kms__v1__action__descriptor,
                         (ProtobufCMessage **)&done, NULL, 0);
    if (out != NULL)
        *out = done;
    else
        free_action(done);
    return st;
}

/* Proposes body as officer1 and approves it by officer1 .. officer<n>. */
static void pass_n(Kms__V1__ActionBody *body, int n)
{
    Kms__V1__Action *a = NULL, *done = NULL;
    assert_int_equal(propose(O1, body, &a), GRPC_STATUS_OK);
    assert_int_equal(approve(O1, "officer1", a, NULL), GRPC_STATUS_OK);
    if (n == 3)
        assert_int_equal(approve(O3, "officer3", a, NULL), GRPC_STATUS_OK);
    assert_int_equal(approve(O2, "officer2", a, &done), GRPC_STATUS_OK);
    if (done->state != KMS__V1__ACTION_STATE__EXECUTED)
        fail_msg("action not executed: state %d, result %s", done->state, done->result);
    free_action(a);
    free_action(done);
}

static void pass(Kms__V1__ActionBody *body)
{
    pass_n(body, 2);
}

static Kms__V1__ActionBody *rotate_body(const char *key)
{
    static Kms__V1__RotateKey rk;
    static Kms__V1__ActionBody b;
    kms__v1__rotate_key__init(&rk);
    kms__v1__action_body__init(&b);
    rk.key_name = (char *)key;
    b.action_case = KMS__V1__ACTION_BODY__ACTION_ROTATE_KEY;
    b.rotate_key = &rk;
    return &b;
}

static Kms__V1__KeyMetadata *describe(const char *key)
{
    Kms__V1__DescribeKeyRequest req = KMS__V1__DESCRIBE_KEY_REQUEST__INIT;
    req.key_name = (char *)key;
    Kms__V1__DescribeKeyResponse *r = NULL;
    assert_int_equal(kms_tc_call(O1, KM "DescribeKey", &req.base,
                                 &kms__v1__describe_key_response__descriptor,
                                 (ProtobufCMessage **)&r, NULL, 0),
                     GRPC_STATUS_OK);
    Kms__V1__KeyMetadata *m = r->key;
    r->key = NULL;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return m;
}

static int encrypt(const char *key, uint8_t *blob, size_t *len, uint32_t *version)
{
    Kms__V1__EncryptRequest req = KMS__V1__ENCRYPT_REQUEST__INIT;
    req.key_name = (char *)key;
    req.plaintext.data = (uint8_t *)"quorum";
    req.plaintext.len = 6;
    Kms__V1__EncryptResponse *r = NULL;
    int st = kms_tc_call(APP, KM "Encrypt", &req.base, &kms__v1__encrypt_response__descriptor,
                         (ProtobufCMessage **)&r, NULL, 0);
    if (st == GRPC_STATUS_OK) {
        memcpy(blob, r->ciphertext_blob.data, r->ciphertext_blob.len);
        *len = r->ciphertext_blob.len;
        *version = r->key_version;
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    return st;
}

static int decrypt(const uint8_t *blob, size_t len)
{
    Kms__V1__DecryptRequest req = KMS__V1__DECRYPT_REQUEST__INIT;
    req.ciphertext_blob.data = (uint8_t *)blob;
    req.ciphertext_blob.len = len;
    Kms__V1__DecryptResponse *r = NULL;
    int st = kms_tc_call(APP, KM "Decrypt", &req.base, &kms__v1__decrypt_response__descriptor,
                         (ProtobufCMessage **)&r, said, sizeof(said));
    if (st == GRPC_STATUS_OK) {
        assert_int_equal(r->plaintext.len, 6);
        assert_memory_equal(r->plaintext.data, "quorum", 6);
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    return st;
}

/* ---- the 2-of-3 rotation -------------------------------------------------------------- */

static void rotation_two_of_three(void **state)
{
    (void)state;
    uint8_t v1[128], v2[128], moved[128];
    size_t v1_len, v2_len;
    uint32_t ver;
    assert_int_equal(encrypt("demo", v1, &v1_len, &ver), GRPC_STATUS_OK);
    assert_int_equal(ver, 1);

    Kms__V1__Action *a = NULL, *after = NULL;
    assert_int_equal(propose(O1, rotate_body("demo"), &a), GRPC_STATUS_OK);
    assert_int_equal(a->state, KMS__V1__ACTION_STATE__PENDING);
    assert_int_equal(a->threshold, 2);
    assert_string_equal(a->proposer, "officer1");
    assert_int_equal(a->expires_at, NOW + DAY);
    assert_int_equal(a->body->action_case, KMS__V1__ACTION_BODY__ACTION_ROTATE_KEY);
    /* M-1 approvals (the proposer's own) do nothing yet. */
    assert_int_equal(approve(O1, "officer1", a, &after), GRPC_STATUS_OK);
    assert_int_equal(after->state, KMS__V1__ACTION_STATE__PENDING);
    assert_int_equal(after->n_approvals, 1);
    free_action(after);
    Kms__V1__KeyMetadata *m = describe("demo");
    assert_int_equal(m->primary_version, 1);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    /* The second officer's approval executes it. */
    assert_int_equal(approve(O2, "officer2", a, &after), GRPC_STATUS_OK);
    assert_int_equal(after->state, KMS__V1__ACTION_STATE__EXECUTED);
    assert_non_null(strstr(after->result, "version 2"));
    free_action(after);
    m = describe("demo");
    assert_int_equal(m->primary_version, 2);
    assert_int_equal(m->n_versions, 2);
    protobuf_c_message_free_unpacked(&m->base, NULL);

    /* Old blobs still decrypt; new ones carry version 2. */
    assert_int_equal(decrypt(v1, v1_len), GRPC_STATUS_OK);
    assert_int_equal(encrypt("demo", v2, &v2_len, &ver), GRPC_STATUS_OK);
    assert_int_equal(ver, 2);
    /* ReEncrypt moves the v1 blob to v2. */
    Kms__V1__ReEncryptRequest rq = KMS__V1__RE_ENCRYPT_REQUEST__INIT;
    rq.ciphertext_blob.data = v1;
    rq.ciphertext_blob.len = v1_len;
    rq.destination_key_name = "demo";
    Kms__V1__ReEncryptResponse *rr = NULL;
    assert_int_equal(kms_tc_call(APP, KM "ReEncrypt", &rq.base,
                                 &kms__v1__re_encrypt_response__descriptor,
                                 (ProtobufCMessage **)&rr, NULL, 0),
                     GRPC_STATUS_OK);
    assert_int_equal(rr->source_key_version, 1);
    assert_int_equal(rr->key_version, 2);
    size_t moved_len = rr->ciphertext_blob.len;
    memcpy(moved, rr->ciphertext_blob.data, moved_len);
    protobuf_c_message_free_unpacked(&rr->base, NULL);

    /* Disabling version 1 stops its blobs (FAILED_PRECONDITION); the primary
     * cannot be disabled; enabling restores it. */
    Kms__V1__SetKeyVersionState sv = KMS__V1__SET_KEY_VERSION_STATE__INIT;
    Kms__V1__ActionBody vb = KMS__V1__ACTION_BODY__INIT;
    sv.key_name = "demo";
    sv.version = 1;
    sv.state = KMS__V1__KEY_VERSION_STATE__DISABLED;
    vb.action_case = KMS__V1__ACTION_BODY__ACTION_SET_KEY_VERSION_STATE;
    vb.set_key_version_state = &sv;
    pass(&vb);
    assert_int_equal(decrypt(v1, v1_len), GRPC_STATUS_FAILED_PRECONDITION);
    assert_string_equal(said, "key demo version 1 is not enabled"); /* the caller is told why */
    assert_int_equal(decrypt(v2, v2_len), GRPC_STATUS_OK);
    sv.version = 2;
    Kms__V1__Action *refused = NULL;
    assert_int_equal(propose(O1, &vb, &refused), GRPC_STATUS_FAILED_PRECONDITION);
    assert_string_equal(said, "version 2 is primary: rotate first");
    sv.version = 1;
    sv.state = KMS__V1__KEY_VERSION_STATE__ENABLED;
    pass(&vb);
    assert_int_equal(decrypt(v1, v1_len), GRPC_STATUS_OK);

    /* SetMinDecryptionVersion 2: the v1 blob is refused, v2 blobs are fine. */
    Kms__V1__SetMinDecryptionVersion smv = KMS__V1__SET_MIN_DECRYPTION_VERSION__INIT;
    Kms__V1__ActionBody b = KMS__V1__ACTION_BODY__INIT;
    smv.key_name = "demo";
    smv.version = 2;
    b.action_case = KMS__V1__ACTION_BODY__ACTION_SET_MIN_DECRYPTION_VERSION;
    b.set_min_decryption_version = &smv;
    pass(&b);
    assert_int_equal(decrypt(v1, v1_len), GRPC_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(said, "below the minimum decryption version 2"));
    assert_int_equal(decrypt(v2, v2_len), GRPC_STATUS_OK);
    assert_int_equal(decrypt(moved, moved_len), GRPC_STATUS_OK);
    free_action(a);
}

/* ---- negatives ------------------------------------------------------------------------ */

static void assert_pending_with(const uint8_t *id, size_t approvals)
{
    Kms__V1__Action *a = get_action(id);
    assert_int_equal(a->state, KMS__V1__ACTION_STATE__PENDING);
    assert_int_equal(a->n_approvals, approvals);
    free_action(a);
}

static void approval_negatives(void **state)
{
    (void)state;
    Kms__V1__Action *a = NULL, *b = NULL, *done = NULL;
    uint8_t d[32], sig[256];
    assert_int_equal(propose(O1, rotate_body("second"), &a), GRPC_STATUS_OK);
    assert_int_equal(propose(O2, rotate_body("second"), &b), GRPC_STATUS_OK);
    assert_memory_not_equal(a->id.data, b->id.data, 16);
    assert_memory_not_equal(a->digest.data, b->digest.data, 32);

    /* An approval signed over another action's digest. */
    digest_of(b, d);
    size_t n = sign_with("officer2", d, sig);
    assert_int_equal(approve_raw(O2, a->id.data, 16, sig, n, &done), GRPC_STATUS_INVALID_ARGUMENT);
    /* A signature by a key that is not the sender's (officer1's key from officer2). */
    digest_of(a, d);
    n = sign_with("officer1", d, sig);
    assert_int_equal(approve_raw(O2, a->id.data, 16, sig, n, &done), GRPC_STATUS_INVALID_ARGUMENT);
    /* A corrupted signature. */
    n = sign_with("officer2", d, sig);
    sig[n / 2] ^= 1;
    assert_int_equal(approve_raw(O2, a->id.data, 16, sig, n, &done), GRPC_STATUS_INVALID_ARGUMENT);
    /* A tampered action id: unknown (or malformed). */
    uint8_t bad_id[16];
    memcpy(bad_id, a->id.data, 16);
    bad_id[0] ^= 1;
    n = sign_with("officer2", d, sig);
    assert_int_equal(approve_raw(O2, bad_id, 16, sig, n, &done), GRPC_STATUS_NOT_FOUND);
    assert_int_equal(approve_raw(O2, bad_id, 15, sig, n, &done), GRPC_STATUS_INVALID_ARGUMENT);
    /* A non-officer cannot propose, approve or even read. */
    assert_int_equal(propose(APP, rotate_body("second"), &done), GRPC_STATUS_PERMISSION_DENIED);
    assert_string_equal(said, "permission denied"); /* denials say nothing more */
    assert_int_equal(approve_raw(APP, a->id.data, 16, sig, n, &done),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_pending_with(a->id.data, 0);

    /* The proposer approves once; a second approval by the same officer is refused. */
    assert_int_equal(approve(O1, "officer1", a, NULL), GRPC_STATUS_OK);
    assert_int_equal(approve(O1, "officer1", a, NULL), GRPC_STATUS_ALREADY_EXISTS);
    assert_pending_with(a->id.data, 1);
    Kms__V1__KeyMetadata *m = describe("second");
    assert_int_equal(m->primary_version, 1);
    protobuf_c_message_free_unpacked(&m->base, NULL);

    /* Executed; replaying a used approval is refused and changes nothing. */
    digest_of(a, d);
    size_t n2 = sign_with("officer2", d, sig);
    assert_int_equal(approve_raw(O2, a->id.data, 16, sig, n2, &done), GRPC_STATUS_OK);
    assert_int_equal(done->state, KMS__V1__ACTION_STATE__EXECUTED);
    free_action(done);
    assert_int_equal(approve_raw(O2, a->id.data, 16, sig, n2, &done),
                     GRPC_STATUS_FAILED_PRECONDITION);
    assert_int_equal(approve(O3, "officer3", a, NULL), GRPC_STATUS_FAILED_PRECONDITION);
    m = describe("second");
    assert_int_equal(m->primary_version, 2);
    protobuf_c_message_free_unpacked(&m->base, NULL);

    /* A threshold of 1 is refused at proposal. */
    Kms__V1__SetThreshold st = KMS__V1__SET_THRESHOLD__INIT;
    Kms__V1__ActionBody tb = KMS__V1__ACTION_BODY__INIT;
    st.action_type = "RotateKey";
    st.threshold = 1;
    tb.action_case = KMS__V1__ACTION_BODY__ACTION_SET_THRESHOLD;
    tb.set_threshold = &st;
    assert_int_equal(propose(O1, &tb, &done), GRPC_STATUS_INVALID_ARGUMENT);
    st.threshold = 4; /* more than the officers */
    assert_int_equal(propose(O1, &tb, &done), GRPC_STATUS_INVALID_ARGUMENT);

    /* Expiry: after 24 h (test clock) the other action takes no approval. */
    set_clock(NOW + DAY + 1);
    assert_int_equal(approve(O2, "officer2", b, NULL), GRPC_STATUS_FAILED_PRECONDITION);
    Kms__V1__Action *exp = get_action(b->id.data);
    assert_int_equal(exp->state, KMS__V1__ACTION_STATE__EXPIRED);
    assert_int_equal(exp->n_approvals, 0);
    free_action(exp);
    set_clock(NOW);

    /* Only the proposer cancels. */
    Kms__V1__Action *c = NULL;
    assert_int_equal(propose(O1, rotate_body("second"), &c), GRPC_STATUS_OK);
    assert_int_equal(cancel(O2, c, NULL), GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(cancel(O1, c, &done), GRPC_STATUS_OK);
    assert_int_equal(done->state, KMS__V1__ACTION_STATE__CANCELLED);
    free_action(done);
    assert_int_equal(approve(O2, "officer2", c, NULL), GRPC_STATUS_FAILED_PRECONDITION);
    free_action(a);
    free_action(b);
    free_action(c);
}

/* How many actions ListActions(pending_only) shows. */
static size_t count_pending(void)
{
    Kms__V1__ListActionsRequest lr = KMS__V1__LIST_ACTIONS_REQUEST__INIT;
    lr.pending_only = 1;
    Kms__V1__ListActionsResponse *l = NULL;
    assert_int_equal(kms_tc_call(O1, QU "ListActions", &lr.base,
                                 &kms__v1__list_actions_response__descriptor,
                                 (ProtobufCMessage **)&l, NULL, 0),
                     GRPC_STATUS_OK);
    size_t n = l->n_actions;
    protobuf_c_message_free_unpacked(&l->base, NULL);
    return n;
}

/* One officer cannot flood the queue: officer3 (who has nothing open yet)
 * gets KMS_QUORUM_DEFAULT_MAX_PENDING (16) open proposals, the next is
 * RESOURCE_EXHAUSTED and stores nothing; officer2 is not affected; a
 * cancelled or expired proposal frees its place. */
static void open_proposals_limited(void **state)
{
    (void)state;
    enum { MAX = 16 };
    Kms__V1__Action *open[MAX] = {NULL}, *x = NULL;
    for (int i = 0; i < MAX; i++)
        assert_int_equal(propose(O3, rotate_body("second"), &open[i]), GRPC_STATUS_OK);
    size_t listed = count_pending();
    assert_int_equal(propose(O3, rotate_body("second"), &x), GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(said, "officer3 already has 16 open proposals"));
    assert_int_equal(count_pending(), listed); /* nothing stored */
    assert_int_equal(propose(O2, rotate_body("second"), &x), GRPC_STATUS_OK);
    assert_int_equal(cancel(O2, x, NULL), GRPC_STATUS_OK);
    free_action(x);
    x = NULL;

    assert_int_equal(cancel(O3, open[0], NULL), GRPC_STATUS_OK);
    assert_int_equal(propose(O3, rotate_body("second"), &x), GRPC_STATUS_OK);
    assert_int_equal(cancel(O3, x, NULL), GRPC_STATUS_OK);
    free_action(x);
    x = NULL;

    /* After the actions' lifetime the open ones no longer count. */
    set_clock(NOW + DAY + 1);
    assert_int_equal(propose(O3, rotate_body("second"), &x), GRPC_STATUS_OK);
    assert_int_equal(cancel(O3, x, NULL), GRPC_STATUS_OK);
    free_action(x);
    set_clock(NOW);
    for (int i = 0; i < MAX; i++)
        free_action(open[i]);
}

/* An approval made with nothing but the openssl command line. */
static void openssl_cli_approval(void **state)
{
    (void)state;
    Kms__V1__Action *a = NULL, *done = NULL;
    assert_int_equal(propose(O1, rotate_body("second"), &a), GRPC_STATUS_OK);
    assert_int_equal(approve(O1, "officer1", a, NULL), GRPC_STATUS_OK);
    char dir[400], path[600], hex[80], cmd[4096], key[400];
    snprintf(dir, sizeof(dir), "%s", CLOCK);
    *strrchr(dir, '/') = '\0';
    const struct {
        const char *name;
        const ProtobufCBinaryData *b;
    } files[] = {
        {"id.bin", &a->id}, {"instance.bin", &a->instance_id}, {"action.bin", &a->action_bytes}};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i].name);
        FILE *f = fopen(path, "wb");
        assert_int_equal(fwrite(files[i].b->data, 1, files[i].b->len, f), files[i].b->len);
        fclose(f);
    }
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)a->expires_at);
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && { printf 'kms.v1.approval\\0'; cat instance.bin id.bin;"
             " openssl dgst -sha256 -binary action.bin;"
             " printf '%s' | xxd -r -p; } | openssl dgst -sha256 -binary > digest.bin &&"
             " openssl dgst -sha256 -sign '%s' -out sig.der digest.bin",
             dir, hex, kms_test_kmsd_pki(&K, "officer2-signing-key.pem", key, sizeof(key)));
    assert_int_equal(system(cmd), 0);
    uint8_t digest[64], sig[256];
    snprintf(path, sizeof(path), "%s/digest.bin", dir);
    FILE *f = fopen(path, "rb");
    assert_int_equal(fread(digest, 1, sizeof(digest), f), 32);
    fclose(f);
    assert_memory_equal(digest, a->digest.data, 32); /* the CLI agrees with the server */
    snprintf(path, sizeof(path), "%s/sig.der", dir);
    f = fopen(path, "rb");
    size_t n = fread(sig, 1, sizeof(sig), f);
    fclose(f);
    assert_int_equal(approve_raw(O2, a->id.data, 16, sig, n, &done), GRPC_STATUS_OK);
    assert_int_equal(done->state, KMS__V1__ACTION_STATE__EXECUTED);
    free_action(done);
    free_action(a);
}

/* ---- deletion ------------------------------------------------------------------------- */

static int objects_with_label(const char *label)
{
    static char out[1 << 16];
    assert_int_equal(kms_test_token_list_objects(&K.token, out, sizeof(out)), 0);
    int n = 0;
    for (const char *p = out; (p = strstr(p, label)) != NULL; p += strlen(label))
        n++;
    return n;
}

static void scheduled_deletion(void **state)
{
    (void)state;
    uint8_t blob[128];
    size_t len;
    uint32_t ver;
    Kms__V1__KeyMetadata *m = describe("locked");
    char label[64] = "kms:";
    for (int i = 0; i < 16; i++)
        snprintf(label + 4 + 2 * i, 3, "%02x", m->key_id.data[i]);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    assert_int_equal(objects_with_label(label), 1);
    assert_int_equal(encrypt("demo", blob, &len, &ver), GRPC_STATUS_OK);

    Kms__V1__ScheduleKeyDeletion sd = KMS__V1__SCHEDULE_KEY_DELETION__INIT;
    Kms__V1__ActionBody b = KMS__V1__ACTION_BODY__INIT;
    sd.key_name = "demo";
    sd.pending_window_days = 3; /* below 7: refused */
    b.action_case = KMS__V1__ACTION_BODY__ACTION_SCHEDULE_KEY_DELETION;
    b.schedule_key_deletion = &sd;
    Kms__V1__Action *a = NULL;
    assert_int_equal(propose(O1, &b, &a), GRPC_STATUS_INVALID_ARGUMENT);
    assert_string_equal(said, "deletion waits 7..30 days");
    sd.pending_window_days = 7;
    pass(&b);
    /* Unusable while pending; cancellable. */
    assert_int_equal(decrypt(blob, len), GRPC_STATUS_FAILED_PRECONDITION);
    assert_string_equal(said, "key demo is scheduled for deletion");
    assert_int_equal(encrypt("demo", blob + 64, &len, &ver), GRPC_STATUS_FAILED_PRECONDITION);
    m = describe("demo");
    assert_int_equal(m->deletion_at, NOW + 7 * DAY);
    assert_int_equal(m->versions[0]->state, KMS__V1__KEY_VERSION_STATE__PENDING_DELETION);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    Kms__V1__CancelKeyDeletion cd = KMS__V1__CANCEL_KEY_DELETION__INIT;
    Kms__V1__ActionBody cb = KMS__V1__ACTION_BODY__INIT;
    cd.key_name = "demo";
    cb.action_case = KMS__V1__ACTION_BODY__ACTION_CANCEL_KEY_DELETION;
    cb.cancel_key_deletion = &cd;
    pass(&cb);
    assert_int_equal(encrypt("demo", blob, &len, &ver), GRPC_STATUS_OK);
    assert_int_equal(decrypt(blob, len), GRPC_STATUS_OK);

    /* Schedule "locked" (default window 30 days) and let the time pass. */
    Kms__V1__ScheduleKeyDeletion sl = KMS__V1__SCHEDULE_KEY_DELETION__INIT;
    sl.key_name = "locked";
    b.schedule_key_deletion = &sl;
    pass(&b);
    set_clock(NOW + 29 * DAY);
    usleep(300 * 1000);
    assert_int_equal(objects_with_label(label), 1); /* not yet */
    set_clock(NOW + 30 * DAY);
    int gone = 0;
    for (int i = 0; i < 100 && !gone; i++) {
        usleep(100 * 1000);
        gone = objects_with_label(label) == 0;
    }
    assert_true(gone); /* crypto-shredded on the token */
    /* ... and the stored references are overwritten (for a TPM they are the
     * wrapped keys themselves). */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(K.db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT count(*), sum(state = 4 AND backend_ref = x'00')"
                                        " FROM key_versions v JOIN keys k ON k.id = v.key_id"
                                        " WHERE k.name = 'locked'",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_true(sqlite3_column_int(st, 0) >= 1);
    assert_int_equal(sqlite3_column_int(st, 0), sqlite3_column_int(st, 1));
    sqlite3_finalize(st);
    sqlite3_close(db);
    m = describe("locked");
    for (size_t i = 0; i < m->n_versions; i++)
        assert_int_equal(m->versions[i]->state, KMS__V1__KEY_VERSION_STATE__DESTROYED);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    /* Too late to cancel. */
    cd.key_name = "locked";
    assert_int_equal(propose(O1, &cb, &a), GRPC_STATUS_FAILED_PRECONDITION);
    set_clock(NOW);
}

/* ---- automatic rotation is recorded like any change -------------------------------- */

static uint32_t primary_of(const char *key)
{
    Kms__V1__KeyMetadata *m = describe(key);
    uint32_t v = m->primary_version;
    protobuf_c_message_free_unpacked(&m->base, NULL);
    return v;
}

/* Waits (up to 10 s) for the sweep to move key's primary past v. */
static uint32_t wait_primary_past(const char *key, uint32_t v)
{
    uint32_t now = v;
    for (int i = 0; i < 100 && now == v; i++) {
        usleep(100 * 1000);
        now = primary_of(key);
    }
    return now;
}

/* Executed rotations kmsd made by itself for key, for reason (any if NULL). */
static int automatic_rotations(const char *key, const char *reason)
{
    char want[160];
    snprintf(want, sizeof(want), "key %s rotated automatically%s%s%s", key, reason ? " (" : "",
             reason ? reason : "", reason ? ")" : "");
    Kms__V1__ListActionsRequest lr = KMS__V1__LIST_ACTIONS_REQUEST__INIT;
    Kms__V1__ListActionsResponse *l = NULL;
    assert_int_equal(kms_tc_call(O1, QU "ListActions", &lr.base,
                                 &kms__v1__list_actions_response__descriptor,
                                 (ProtobufCMessage **)&l, NULL, 0),
                     GRPC_STATUS_OK);
    int seen = 0;
    for (size_t i = 0; i < l->n_actions; i++)
        if (strcmp(l->actions[i]->proposer, "kmsd") == 0 &&
            l->actions[i]->state == KMS__V1__ACTION_STATE__EXECUTED &&
            strstr(l->actions[i]->result, want) != NULL)
            seen++;
    protobuf_c_message_free_unpacked(&l->base, NULL);
    return seen;
}

static void periodic_rotation_recorded(void **state)
{
    (void)state;
    uint32_t before = primary_of("cnkey");
    Kms__V1__SetRotationPolicy sr = KMS__V1__SET_ROTATION_POLICY__INIT;
    Kms__V1__RotationPolicy rp = KMS__V1__ROTATION_POLICY__INIT;
    Kms__V1__ActionBody b = KMS__V1__ACTION_BODY__INIT;
    sr.key_name = "cnkey";
    rp.rotation_period_days = 1;
    sr.rotation = &rp;
    b.action_case = KMS__V1__ACTION_BODY__ACTION_SET_ROTATION_POLICY;
    b.set_rotation_policy = &sr;
    pass(&b);
    Kms__V1__KeyMetadata *m = describe("cnkey");
    assert_int_equal(m->rotation->rotation_period_days, 1);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    /* Its version 1 was made by `kmsd init` in real time, long before the
     * test clock's NOW: it is overdue, so the next sweep rotates it. */
    assert_int_equal(wait_primary_past("cnkey", before), before + 1);
    assert_int_equal(automatic_rotations("cnkey", "rotation period"), 1);
    /* The next period counts from the new version: nothing more at NOW. */
    usleep(300 * 1000);
    assert_int_equal(primary_of("cnkey"), before + 1);
    /* One day later, exactly one more, recorded like the first. */
    set_clock(NOW + DAY + 60);
    assert_int_equal(wait_primary_past("cnkey", before + 1), before + 2);
    usleep(300 * 1000);
    assert_int_equal(primary_of("cnkey"), before + 2);
    assert_int_equal(automatic_rotations("cnkey", "rotation period"), 2);
    sr.rotation = NULL; /* back to never */
    pass(&b);
    set_clock(NOW);
}

/* An Ed25519 officer enrolled by quorum approves; once removed, cannot. */
static void ed25519_officer_enrolled_and_removed(void **state)
{
    (void)state;
    char dir[400], key[600], pub[600], cmd[2400];
    snprintf(dir, sizeof(dir), "%s", CLOCK);
    *strrchr(dir, '/') = '\0';
    snprintf(key, sizeof(key), "%s/bob-ed.pem", dir);
    snprintf(pub, sizeof(pub), "%s/bob-ed.pub", dir);
    snprintf(cmd, sizeof(cmd),
             "openssl genpkey -algorithm ed25519 -out '%s' && openssl pkey -in '%s' -pubout "
             "-out '%s'",
             key, key, pub);
    assert_int_equal(system(cmd), 0);
    char pem[1024] = "";
    FILE *f = fopen(pub, "r");
    assert_true(fread(pem, 1, sizeof(pem) - 1, f) > 0);
    fclose(f);

    Kms__V1__AddOfficer ao = KMS__V1__ADD_OFFICER__INIT;
    Kms__V1__ActionBody b = KMS__V1__ACTION_BODY__INIT;
    ao.officer_id = "kmsd"; /* reserved */
    ao.identity = KMS_TEST_BOB_ID;
    ao.signing_key_pem = pem;
    b.action_case = KMS__V1__ACTION_BODY__ACTION_ADD_OFFICER;
    b.add_officer = &ao;
    Kms__V1__Action *a = NULL;
    assert_int_equal(propose(O1, &b, &a), GRPC_STATUS_INVALID_ARGUMENT);
    ao.officer_id = "bob";
    pass(&b);

    /* bob (Ed25519) and officer1 rotate "second". */
    kms_tc *bob = kms_test_kmsd_open_as(&K, "bob");
    assert_int_equal(propose(bob, rotate_body("second"), &a), GRPC_STATUS_OK);
    uint8_t d[32], sig[128];
    digest_of(a, d);
    f = fopen(key, "r");
    EVP_PKEY *pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t n = sizeof(sig);
    assert_int_equal(EVP_DigestSignInit(md, NULL, NULL, NULL, pk), 1);
    assert_int_equal(EVP_DigestSign(md, sig, &n, d, 32), 1);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pk);
    assert_int_equal(n, 64);
    Kms__V1__Action *done = NULL;
    assert_int_equal(approve_raw(bob, a->id.data, 16, sig, n, &done), GRPC_STATUS_OK);
    assert_int_equal(done->n_approvals, 1);
    free_action(done);

    /* Remove bob: his approval stops counting, and he can approve nothing. */
    Kms__V1__RemoveOfficer ro = KMS__V1__REMOVE_OFFICER__INIT;
    Kms__V1__ActionBody rb = KMS__V1__ACTION_BODY__INIT;
    ro.officer_id = "bob";
    rb.action_case = KMS__V1__ACTION_BODY__ACTION_REMOVE_OFFICER;
    rb.remove_officer = &ro;
    pass_n(&rb, 3); /* the fixture sets RemoveOfficer to 3 of N */
    assert_pending_with(a->id.data, 0);
    Kms__V1__Action *c = NULL;
    assert_int_equal(propose(O1, rotate_body("second"), &c), GRPC_STATUS_OK);
    digest_of(c, d);
    assert_int_equal(approve_raw(bob, c->id.data, 16, sig, n, &done),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_pending_with(c->id.data, 0);
    /* Three officers are left and RemoveOfficer needs 3: removing another
     * would make removals unapprovable, so it is refused. */
    ro.officer_id = "officer3";
    assert_int_equal(propose(O1, &rb, &done), GRPC_STATUS_FAILED_PRECONDITION);
    kms_tc_close(bob);
    free_action(a);
    free_action(c);
}

/* ---- crashes while approvals execute ------------------------------------------------ */

struct approver {
    Kms__V1__Action *a;
    int status;
};

static void *approve_thread(void *arg)
{
    struct approver *ap = arg;
    kms_tc_set_timeout(O2, 5000);
    ap->status = approve(O2, "officer2", ap->a, NULL);
    return NULL;
}

static int count_rows(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n;
}

static int token_objects(void)
{
    return kms_test_kmsd_token_objects(&K);
}

/* The database passes SQLite's own check. */
static void assert_database_sound(void)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(K.db, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void sigkill_while_executing(void **state)
{
    (void)state;
    const char *env = getenv("KMS_CRASH_ITERATIONS");
    int iterations = env ? (int)strtol(env, NULL, 10) : 20;
    unsigned seed = (unsigned)time(NULL);
    printf("crash test: %d iterations, seed %u\n", iterations, seed);
    srand(seed);
    int replied = 0, lost = 0, survived = 0;
    for (int it = 0; it < iterations; it++) {
        Kms__V1__Action *a = NULL;
        assert_int_equal(propose(O1, rotate_body("second"), &a), GRPC_STATUS_OK);
        assert_int_equal(approve(O1, "officer1", a, NULL), GRPC_STATUS_OK);
        struct approver ap = {a, -1};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, approve_thread, &ap), 0);
        usleep((useconds_t)(rand() % 40000));
        kms_test_kmsd_stop(&K, SIGKILL);
        pthread_join(t, NULL);
        close_clients();

        assert_database_sound(); /* whatever the moment of the kill */

        start(); /* resumes an interrupted execution before serving */
        Kms__V1__Action *now = get_action(a->id.data);
        if (ap.status == GRPC_STATUS_OK)
            replied++;
        else if (now->state == KMS__V1__ACTION_STATE__PENDING)
            lost++;
        else
            survived++;
        if (now->state == KMS__V1__ACTION_STATE__PENDING) {
            /* Killed before the approval committed: it can still pass. */
            assert_int_equal(approve(O2, "officer2", a, NULL), GRPC_STATUS_OK);
            free_action(now);
            now = get_action(a->id.data);
        }
        assert_int_equal(now->state, KMS__V1__ACTION_STATE__EXECUTED);
        free_action(now);
        free_action(a);
    }
    printf("crash test: approval answered before the kill %d, killed before the approval "
           "committed %d, killed after it committed (finished or resumed) %d\n",
           replied, lost, survived);
    /* Every executed rotation made exactly one version, each on the token. */
    close_clients();
    assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(K.db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    int rotations = count_rows(db, "SELECT count(*) FROM actions WHERE type = 'RotateKey'"
                                   " AND state = 2 AND result LIKE 'key second rotated%'");
    int versions = count_rows(db, "SELECT count(*) FROM key_versions v JOIN keys k"
                                  " ON k.id = v.key_id WHERE k.name = 'second'");
    int primary = count_rows(db, "SELECT primary_version FROM keys WHERE name = 'second'");
    int executing = count_rows(db, "SELECT count(*) FROM actions WHERE state = 6");
    int live = count_rows(db, "SELECT count(*) FROM key_versions WHERE state != 4");
    sqlite3_close(db);
    assert_int_equal(executing, 0);
    assert_int_equal(versions, 1 + rotations);
    assert_int_equal(primary, versions);
    /* No orphan or missing object on the token: one per live version. */
    assert_int_equal(token_objects(), live);
    start();
}

/* The plan an interrupted rotation left in the database, byte for byte:
 * 'R' and the primary version before the rotation (u32 big-endian). A
 * restarted kmsd resumes from these bytes, so their format never changes. */
static void assert_rotation_plan(const uint8_t id[16], uint32_t before)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    const uint8_t want[5] = {'R', (uint8_t)(before >> 24), (uint8_t)(before >> 16),
                             (uint8_t)(before >> 8), (uint8_t)before};
    assert_int_equal(sqlite3_open_v2(K.db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT plan FROM actions WHERE id = ?1", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_bind_blob(st, 1, id, 16, SQLITE_STATIC), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_bytes(st, 0), sizeof(want));
    assert_memory_equal(sqlite3_column_blob(st, 0), want, sizeof(want));
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* The crash points between the approval that reaches the threshold and the
 * action's EXECUTED mark, each forced: kmsd kills itself there during a
 * 2-of-3 rotation, and after a restart (which resumes the execution) the
 * rotation has happened exactly once, with one new token object and no
 * orphan. */
static void crash_points_execute_exactly_once(void **state)
{
    (void)state;
    static const char *const points[] = {"approval-committed", "execution-planned",
                                         "rotation-device-created", "execution-done"};
    for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
        close_clients();
        assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
        start_crashing_at(points[i]);
        uint32_t before = primary_of("second");
        int objects = token_objects();

        Kms__V1__Action *a = NULL;
        assert_int_equal(propose(O1, rotate_body("second"), &a), GRPC_STATUS_OK);
        assert_int_equal(approve(O1, "officer1", a, NULL), GRPC_STATUS_OK);
        assert_int_not_equal(approve(O2, "officer2", a, NULL), GRPC_STATUS_OK);
        /* It died at the point, by its own SIGKILL (128 + 9). */
        assert_int_equal(kms_test_kmsd_stop(&K, 0), 137);
        close_clients();
        assert_database_sound();
        if (strcmp(points[i], "execution-planned") == 0)
            assert_rotation_plan(a->id.data, before);

        start(); /* not armed: resumes the execution before serving */
        Kms__V1__Action *now = get_action(a->id.data);
        assert_int_equal(now->state, KMS__V1__ACTION_STATE__EXECUTED);
        free_action(now);
        assert_int_equal(primary_of("second"), before + 1);
        assert_int_equal(token_objects(), objects + 1);
        /* Approving again changes nothing. */
        assert_int_not_equal(approve(O3, "officer3", a, NULL), GRPC_STATUS_OK);
        assert_int_equal(primary_of("second"), before + 1);
        free_action(a);
    }
}

/* An action without a device change, killed after its change but before
 * its EXECUTED mark: the resumed run must not be judged against the state
 * its own change left. A CancelKeyDeletion killed at execution-done used
 * to end FAILED ("not scheduled for deletion") with the deletion already
 * cancelled. */
static void cancel_killed_at_execution_done_is_executed(void **state)
{
    (void)state;
    Kms__V1__ScheduleKeyDeletion sd = KMS__V1__SCHEDULE_KEY_DELETION__INIT;
    Kms__V1__ActionBody b = KMS__V1__ACTION_BODY__INIT;
    sd.key_name = "second";
    sd.pending_window_days = 7;
    b.action_case = KMS__V1__ACTION_BODY__ACTION_SCHEDULE_KEY_DELETION;
    b.schedule_key_deletion = &sd;
    pass(&b);
    Kms__V1__KeyMetadata *m = describe("second");
    assert_int_not_equal(m->deletion_at, 0);
    protobuf_c_message_free_unpacked(&m->base, NULL);

    close_clients();
    assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
    start_crashing_at("execution-done");
    Kms__V1__CancelKeyDeletion cd = KMS__V1__CANCEL_KEY_DELETION__INIT;
    Kms__V1__ActionBody cb = KMS__V1__ACTION_BODY__INIT;
    cd.key_name = "second";
    cb.action_case = KMS__V1__ACTION_BODY__ACTION_CANCEL_KEY_DELETION;
    cb.cancel_key_deletion = &cd;
    Kms__V1__Action *a = NULL;
    assert_int_equal(propose(O1, &cb, &a), GRPC_STATUS_OK);
    assert_int_equal(approve(O1, "officer1", a, NULL), GRPC_STATUS_OK);
    assert_int_not_equal(approve(O2, "officer2", a, NULL), GRPC_STATUS_OK);
    assert_int_equal(kms_test_kmsd_stop(&K, 0), 137);
    close_clients();

    start(); /* resumes the execution before serving */
    Kms__V1__Action *now = get_action(a->id.data);
    assert_int_equal(now->state, KMS__V1__ACTION_STATE__EXECUTED);
    assert_string_equal(now->result, "key second: deletion cancelled");
    free_action(now);
    m = describe("second");
    assert_int_equal(m->deletion_at, 0);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    free_action(a);
}

/* The nonce budget (docs/formats.md): once a version's usage count reaches
 * 0.9 * 2^32, the next wrap first rotates the key, and that rotation is
 * recorded as an executed action by "kmsd", like a periodic one. The count
 * is set in the database while kmsd is stopped (the only way to reach it
 * in a test); kmsd reads it back at start. */
static void nonce_budget_rotation_recorded(void **state)
{
    (void)state;
    uint32_t before = primary_of("second");
    int recorded = automatic_rotations("second", NULL);
    close_clients();
    assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(K.db, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    char sql[256];
    /* One IV left below the rotation point 0.9 * 2^32 = 3865470561. */
    snprintf(sql, sizeof(sql),
             "UPDATE key_versions SET usage_count = 3865470560 WHERE version = %u"
             " AND key_id = (SELECT id FROM keys WHERE name = 'second')",
             before);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_changes(db), 1);
    sqlite3_close(db);
    start();

    uint8_t last_old[256], first_new[256];
    size_t old_len = 0, new_len = 0;
    uint32_t ver = 0;
    assert_int_equal(encrypt("second", last_old, &old_len, &ver), GRPC_STATUS_OK);
    assert_int_equal(ver, before); /* the last IV below the point */
    assert_int_equal(primary_of("second"), before);
    assert_int_equal(encrypt("second", first_new, &new_len, &ver), GRPC_STATUS_OK);
    assert_int_equal(ver, before + 1); /* rotated first, then wrapped */
    assert_int_equal(primary_of("second"), before + 1);
    assert_int_equal(automatic_rotations("second", NULL), recorded + 1);
    assert_int_equal(automatic_rotations("second", "nonce budget"), 1); /* with its reason */
    /* Both blobs still decrypt; the old version keeps decrypting. */
    Kms__V1__DecryptRequest req = KMS__V1__DECRYPT_REQUEST__INIT;
    Kms__V1__DecryptResponse *r = NULL;
    const uint8_t *blobs[] = {last_old, first_new};
    size_t lens[] = {old_len, new_len};
    for (int i = 0; i < 2; i++) {
        req.ciphertext_blob.data = (uint8_t *)blobs[i];
        req.ciphertext_blob.len = lens[i];
        assert_int_equal(kms_tc_call(APP, KM "Decrypt", &req.base,
                                     &kms__v1__decrypt_response__descriptor,
                                     (ProtobufCMessage **)&r, NULL, 0),
                         GRPC_STATUS_OK);
        assert_memory_equal(r->plaintext.data, "quorum", 6);
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
}

/* Every action with every optional field left out: an empty message of
 * each kind in ActionBody's oneof (read from the descriptor, so that a new
 * action is covered), then CreateKey with only what kmsctl requires (no
 * backend; tpm2 with no mode). kmsd once freed protobuf-c's shared empty
 * string here and aborted. Each proposal gets a clear status (accepted, or
 * refused with a reason), and kmsd keeps serving after each one. */
static int still_serving(void)
{
    Kms__V1__ListActionsRequest req = KMS__V1__LIST_ACTIONS_REQUEST__INIT;
    Kms__V1__ListActionsResponse *r = NULL;
    int st =
        kms_tc_call(O1, QU "ListActions", &req.base, &kms__v1__list_actions_response__descriptor,
                    (ProtobufCMessage **)&r, NULL, 0);
    if (r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    return st == GRPC_STATUS_OK;
}

static void propose_clearly(Kms__V1__ActionBody *body, const char *what)
{
    Kms__V1__Action *a = NULL;
    said[0] = '\0';
    int st = propose(O2, body, &a);
    if (st == GRPC_STATUS_OK) {
        assert_int_equal(cancel(O2, a, NULL), GRPC_STATUS_OK);
    } else if (st != GRPC_STATUS_INVALID_ARGUMENT && st != GRPC_STATUS_FAILED_PRECONDITION &&
               st != GRPC_STATUS_NOT_FOUND) {
        fail_msg("%s: status %d (%s)", what, st, said);
    } else if (said[0] == '\0') {
        fail_msg("%s: refused without a reason", what);
    }
    free_action(a);
    if (!still_serving())
        fail_msg("kmsd stopped serving after %s", what);
}

static void every_action_with_fields_left_out(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &kms__v1__action_body__descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        assert_int_equal(f->type, PROTOBUF_C_TYPE_MESSAGE);
        const ProtobufCMessageDescriptor *md = f->descriptor;
        ProtobufCMessage *m = calloc(1, md->sizeof_message);
        assert_non_null(m);
        md->message_init(m);
        Kms__V1__ActionBody body = KMS__V1__ACTION_BODY__INIT;
        body.action_case = (Kms__V1__ActionBody__ActionCase)f->id;
        *(ProtobufCMessage **)(void *)((char *)&body + f->offset) = m;
        propose_clearly(&body, md->short_name);
        free(m);
    }
    const char *backends[][2] = {{"", ""}, {"tpm2", ""}, {"pkcs11", ""}};
    for (size_t i = 0; i < 3; i++) {
        Kms__V1__CreateKey ck = KMS__V1__CREATE_KEY__INIT;
        Kms__V1__ActionBody body = KMS__V1__ACTION_BODY__INIT;
        ck.key_name = "bare";
        ck.backend = (char *)backends[i][0];
        ck.backend_mode = (char *)backends[i][1];
        body.action_case = KMS__V1__ACTION_BODY__ACTION_CREATE_KEY;
        body.create_key = &ck;
        propose_clearly(&body, ck.backend[0] ? ck.backend : "CreateKey with no backend");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rotation_two_of_three),
        cmocka_unit_test(approval_negatives),
        cmocka_unit_test(open_proposals_limited),
        cmocka_unit_test(openssl_cli_approval),
        cmocka_unit_test(scheduled_deletion),
        cmocka_unit_test(periodic_rotation_recorded),
        cmocka_unit_test(ed25519_officer_enrolled_and_removed),
        cmocka_unit_test(sigkill_while_executing),
        cmocka_unit_test(nonce_budget_rotation_recorded),
        cmocka_unit_test(crash_points_execute_exactly_once),
        cmocka_unit_test(cancel_killed_at_execution_done_is_executed),
        cmocka_unit_test(every_action_with_fields_left_out),
    };
    return KMS_RUN_GROUP(tests, group_setup, group_teardown);
}
