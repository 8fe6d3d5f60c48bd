/* Allocation failure, curl "torture" style, in a real kmsd (mutual TLS,
 * SoftHSM2 token, SQLite file, audit log on): for N = 1, 2, ... the Nth
 * allocation of one request through kmsd's allocation entry point
 * (base/alloc.h: the RPC wrapper, protobuf via the wiping allocator, the
 * handlers, the keyring, the quorum) fails, armed over a control file
 * (KMS_TEST_ALLOC_FAIL_FILE, test build only). The requests: one
 * GenerateDataKey, one Decrypt, and two approvals: officer1's below the
 * threshold, and officer1's that reaches it and executes a rotation (the
 * rotation happens exactly once whatever fails). Every answer is correct or a clean error status,
 * kmsd stays up and serves the next call, and the loop ends when N passes the request's last
 * allocation (kmsd reports "N unfired"). At the end kmsd stops cleanly (exit 0): under ASan,
 * LeakSanitizer makes a leak on any failure path an exit status of 23.
 *
 * Shown able to fail (it found two bugs, fixed in kmsd/server/rpc.c): an
 * allocation failing while the caller's identity was read answered
 * UNAUTHENTICATED (N = 2 of every request), and one failing while
 * protobuf-c unpacked the request answered INVALID_ARGUMENT (N = 3); both
 * are RESOURCE_EXHAUSTED now. With an allocation failure in an execution
 * taken as final (KMS_ENOMEM dropped from transient() in
 * kmsd/quorum/quorum_exec.c), the threshold approval fails: "allocation 7:
 * the action ended in state 5 (failed: out of memory)", an approved
 * rotation lost to a passing shortage. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <grpc/grpc.h>
#include <grpc/status.h>
#include <openssl/sha.h>

#include "grpc_test_client.h"
#include "kms/v1/kms.pb-c.h"
#include "kmsd_fixture.h"
#include "test_util.h"

#define KM "/kms.v1.KeyManagement/"
#define QU "/kms.v1.Quorum/"
#define MAX_N 2000

typedef Kms__V1__GenerateDataKeyRequest__EncryptionContextEntry GdkCtx;
typedef Kms__V1__DecryptRequest__EncryptionContextEntry DecCtx;

static kms_test_kmsd K;
static char DIR_[320], AUDIT[400], CTL[400], RESULT[420];
static kms_tc *APP, *O1, *O2;

/* ---- the control file ------------------------------------------------------------------ */

static void arm(unsigned long n)
{
    char tmp[430], text[32];
    snprintf(tmp, sizeof(tmp), "%s.new", CTL);
    snprintf(text, sizeof(text), "%lu\n", n);
    unlink(RESULT);
    kms_test_write_file(tmp, text, 0600);
    assert_int_equal(rename(tmp, CTL), 0);
}

/* 1 fired, 0 unfired; fails the test if kmsd wrote nothing. */
static int fired(unsigned long n)
{
    char buf[64], want[64];
    kms_test_read_file(RESULT, buf, sizeof(buf));
    snprintf(want, sizeof(want), "%lu fired\n", n);
    if (strcmp(buf, want) == 0)
        return 1;
    snprintf(want, sizeof(want), "%lu unfired\n", n);
    if (strcmp(buf, want) == 0)
        return 0;
    fail_msg("kmsd reported \"%s\" for allocation %lu", buf, n);
    return -1;
}

static void kmsd_is_alive(unsigned long n, const char *what)
{
    int st = 0;
    if (waitpid(K.pid, &st, WNOHANG) == K.pid) {
        K.pid = 0;
        fail_msg("kmsd died on %s with allocation %lu failing (status 0x%x)", what, n, st);
    }
}

/* A failure the caller can act on: out of memory, or unavailable. */
static int clean_failure(int st)
{
    return st == GRPC_STATUS_RESOURCE_EXHAUSTED || st == GRPC_STATUS_UNAVAILABLE ||
           st == GRPC_STATUS_INTERNAL;
}

/* ---- the requests ---------------------------------------------------------------------- */

static int generate(Kms__V1__GenerateDataKeyResponse **out)
{
    GdkCtx e = KMS__V1__GENERATE_DATA_KEY_REQUEST__ENCRYPTION_CONTEXT_ENTRY__INIT;
    GdkCtx *ep = &e;
    e.key = "purpose";
    e.value = "torture";
    Kms__V1__GenerateDataKeyRequest req = KMS__V1__GENERATE_DATA_KEY_REQUEST__INIT;
    req.key_name = "demo";
    req.encryption_context = &ep;
    req.n_encryption_context = 1;
    *out = NULL;
    return kms_tc_call(APP, KM "GenerateDataKey", &req.base,
                       &kms__v1__generate_data_key_response__descriptor, (ProtobufCMessage **)out,
                       NULL, 0);
}

static int decrypt(const ProtobufCBinaryData *blob, Kms__V1__DecryptResponse **out)
{
    DecCtx e = KMS__V1__DECRYPT_REQUEST__ENCRYPTION_CONTEXT_ENTRY__INIT;
    DecCtx *ep = &e;
    e.key = "purpose";
    e.value = "torture";
    Kms__V1__DecryptRequest req = KMS__V1__DECRYPT_REQUEST__INIT;
    req.ciphertext_blob = *blob;
    req.encryption_context = &ep;
    req.n_encryption_context = 1;
    *out = NULL;
    return kms_tc_call(APP, KM "Decrypt", &req.base, &kms__v1__decrypt_response__descriptor,
                       (ProtobufCMessage **)out, NULL, 0);
}

static int propose_rotation(Kms__V1__Action **out)
{
    Kms__V1__RotateKey rk = KMS__V1__ROTATE_KEY__INIT;
    Kms__V1__ActionBody b = KMS__V1__ACTION_BODY__INIT;
    rk.key_name = "second";
    b.action_case = KMS__V1__ACTION_BODY__ACTION_ROTATE_KEY;
    b.rotate_key = &rk;
    Kms__V1__ProposeActionRequest req = KMS__V1__PROPOSE_ACTION_REQUEST__INIT;
    req.action = &b;
    *out = NULL;
    return kms_tc_call(O1, QU "ProposeAction", &req.base, &kms__v1__action__descriptor,
                       (ProtobufCMessage **)out, NULL, 0);
}

/* officer's signature over a's approval digest (docs/approvals.md). */
static size_t sign_action_as(const Kms__V1__Action *a, const char *officer, uint8_t sig[256])
{
    uint8_t msg[16 + 16 + 16 + 32 + 8], d[32];
    memcpy(msg, "kms.v1.approval", 16);
    assert_int_equal(a->instance_id.len, 16);
    assert_int_equal(a->id.len, 16);
    memcpy(msg + 16, a->instance_id.data, 16);
    memcpy(msg + 32, a->id.data, 16);
    SHA256(a->action_bytes.data, a->action_bytes.len, msg + 48);
    for (int i = 0; i < 8; i++)
        msg[80 + i] = (uint8_t)((uint64_t)a->expires_at >> (56 - 8 * i));
    SHA256(msg, sizeof(msg), d);
    assert_memory_equal(d, a->digest.data, 32);
    return kms_test_kmsd_officer_sign(&K, officer, d, sig);
}

static size_t sign_action(const Kms__V1__Action *a, uint8_t sig[256])
{
    return sign_action_as(a, "officer1", sig);
}

static int approve_as(kms_tc *who, const Kms__V1__Action *a, const uint8_t *sig, size_t sig_len,
                      Kms__V1__Action **out)
{
    Kms__V1__ApproveActionRequest req = KMS__V1__APPROVE_ACTION_REQUEST__INIT;
    req.action_id = a->id;
    req.signature.data = (uint8_t *)sig;
    req.signature.len = sig_len;
    *out = NULL;
    return kms_tc_call(who, QU "ApproveAction", &req.base, &kms__v1__action__descriptor,
                       (ProtobufCMessage **)out, NULL, 0);
}

static int approve(const Kms__V1__Action *a, const uint8_t *sig, size_t sig_len,
                   Kms__V1__Action **out)
{
    return approve_as(O1, a, sig, sig_len, out);
}

static Kms__V1__Action *get_action(const Kms__V1__Action *a)
{
    Kms__V1__GetActionRequest req = KMS__V1__GET_ACTION_REQUEST__INIT;
    req.action_id = a->id;
    Kms__V1__Action *out = NULL;
    assert_int_equal(kms_tc_call(O1, QU "GetAction", &req.base, &kms__v1__action__descriptor,
                                 (ProtobufCMessage **)&out, NULL, 0),
                     GRPC_STATUS_OK);
    return out;
}

/* The number of versions key "second" has. */
static size_t second_versions(void)
{
    Kms__V1__DescribeKeyRequest req = KMS__V1__DESCRIBE_KEY_REQUEST__INIT;
    req.key_name = "second";
    Kms__V1__DescribeKeyResponse *r = NULL;
    assert_int_equal(kms_tc_call(O1, KM "DescribeKey", &req.base,
                                 &kms__v1__describe_key_response__descriptor,
                                 (ProtobufCMessage **)&r, NULL, 0),
                     GRPC_STATUS_OK);
    size_t n = r->key->n_versions;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return n;
}

static int cancel(const Kms__V1__Action *a)
{
    Kms__V1__CancelActionRequest req = KMS__V1__CANCEL_ACTION_REQUEST__INIT;
    req.action_id = a->id;
    Kms__V1__Action *done = NULL;
    int st = kms_tc_call(O1, QU "CancelAction", &req.base, &kms__v1__action__descriptor,
                         (ProtobufCMessage **)&done, NULL, 0);
    if (done != NULL)
        protobuf_c_message_free_unpacked(&done->base, NULL);
    return st;
}

/* ---- fixture ------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    grpc_init();
    kms_test_kmsd_setup(&K);
    kms_test_kmsd_dir(&K, DIR_, sizeof(DIR_));
    kms_test_path(AUDIT, sizeof(AUDIT), DIR_, "audit");
    kms_test_path(CTL, sizeof(CTL), DIR_, "alloc-fail");
    snprintf(RESULT, sizeof(RESULT), "%s.result", CTL);
    if (mkdir(AUDIT, 0700) != 0)
        return -1;
    /* A quick sweep: it finishes an execution an allocation failure left
     * EXECUTING (the sweep's thread is not armed). */
    FILE *f = fopen(K.config, "a");
    if (f == NULL)
        return -1;
    fputs("quorum:\n  sweep_interval_ms: 50\n", f);
    fclose(f);
    setenv("KMS_TEST_ALLOC_FAIL_FILE", CTL, 1);
    const char *extra[] = {"--audit-dir", AUDIT, NULL};
    kms_test_kmsd_start(&K, extra);
    unsetenv("KMS_TEST_ALLOC_FAIL_FILE");
    APP = kms_test_kmsd_open_as(&K, "app");
    O1 = kms_test_kmsd_open_as(&K, "officer1");
    O2 = kms_test_kmsd_open_as(&K, "officer2");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    kms_tc_close(APP);
    kms_tc_close(O1);
    kms_tc_close(O2);
    int st = K.pid != 0 ? kms_test_kmsd_stop(&K, SIGTERM) : -1;
    kms_test_kmsd_teardown(&K);
    kms_tc_grpc_shutdown();
    return st == 0 ? 0 : -1;
}

/* ---- tests --------------------------------------------------------------------------- */

static void generate_data_key_under_failures(void **state)
{
    (void)state;
    unsigned long n = 1, failed = 0;
    for (; n <= MAX_N; n++) {
        Kms__V1__GenerateDataKeyResponse *g = NULL;
        arm(n);
        int st = generate(&g);
        kmsd_is_alive(n, "GenerateDataKey");
        int f = fired(n);
        if (st == GRPC_STATUS_OK) {
            /* a correct answer: the blob decrypts to the plaintext */
            assert_int_equal(g->plaintext.len, 32);
            Kms__V1__DecryptResponse *d = NULL;
            assert_int_equal(decrypt(&g->ciphertext_blob, &d), GRPC_STATUS_OK);
            assert_int_equal(d->plaintext.len, 32);
            assert_memory_equal(d->plaintext.data, g->plaintext.data, 32);
            protobuf_c_message_free_unpacked(&d->base, NULL);
            protobuf_c_message_free_unpacked(&g->base, NULL);
        } else {
            assert_true(f);
            if (!clean_failure(st))
                fail_msg("GenerateDataKey with allocation %lu failing: status %d", n, st);
            failed++;
        }
        if (!f)
            break;
    }
    print_message("GenerateDataKey: %lu allocations, %lu runs failed cleanly\n", n - 1, failed);
    assert_true(n > 1 && n <= MAX_N);
}

static void decrypt_under_failures(void **state)
{
    (void)state;
    Kms__V1__GenerateDataKeyResponse *g = NULL;
    assert_int_equal(generate(&g), GRPC_STATUS_OK);
    unsigned long n = 1, failed = 0;
    for (; n <= MAX_N; n++) {
        Kms__V1__DecryptResponse *d = NULL;
        arm(n);
        int st = decrypt(&g->ciphertext_blob, &d);
        kmsd_is_alive(n, "Decrypt");
        int f = fired(n);
        if (st == GRPC_STATUS_OK) {
            assert_int_equal(d->plaintext.len, 32);
            assert_memory_equal(d->plaintext.data, g->plaintext.data, 32);
            protobuf_c_message_free_unpacked(&d->base, NULL);
        } else {
            assert_true(f);
            if (!clean_failure(st))
                fail_msg("Decrypt with allocation %lu failing: status %d", n, st);
            failed++;
        }
        if (!f)
            break;
    }
    protobuf_c_message_free_unpacked(&g->base, NULL);
    print_message("Decrypt: %lu allocations, %lu runs failed cleanly\n", n - 1, failed);
    assert_true(n > 1 && n <= MAX_N);
}

/* officer1 approves a proposed rotation (one approval of two: the action
 * stays pending). A failed approval leaves it without the approval; an
 * answered one shows it. Each round's action is cancelled after. */
static void approval_under_failures(void **state)
{
    (void)state;
    unsigned long n = 1, failed = 0;
    for (; n <= MAX_N; n++) {
        Kms__V1__Action *a = NULL, *after = NULL;
        assert_int_equal(propose_rotation(&a), GRPC_STATUS_OK);
        uint8_t sig[256];
        size_t sig_len = sign_action(a, sig);
        arm(n);
        int st = approve(a, sig, sig_len, &after);
        kmsd_is_alive(n, "ApproveAction");
        int f = fired(n);
        if (st == GRPC_STATUS_OK) {
            assert_int_equal(after->n_approvals, 1);
            assert_string_equal(after->approvals[0]->officer_id, "officer1");
            assert_int_equal(after->state, KMS__V1__ACTION_STATE__PENDING);
            protobuf_c_message_free_unpacked(&after->base, NULL);
        } else {
            assert_true(f);
            if (!clean_failure(st))
                fail_msg("ApproveAction with allocation %lu failing: status %d", n, st);
            failed++;
        }
        assert_int_equal(cancel(a), GRPC_STATUS_OK);
        protobuf_c_message_free_unpacked(&a->base, NULL);
        if (!f)
            break;
    }
    print_message("ApproveAction: %lu allocations, %lu runs failed cleanly\n", n - 1, failed);
    assert_true(n > 1 && n <= MAX_N);
}

/* officer2 approves a proposed rotation, then officer1's approval reaches
 * the threshold (2 of 3) and executes it, with allocation N failing. The
 * answer is the executed action, or a clean error status; either way the
 * rotation happens exactly once: an approval that failed before it was
 * recorded is given again (without a failure) and executes it; an
 * execution the failure interrupted is left EXECUTING and the sweep
 * finishes it. Key "second" gains exactly one version each round, and the
 * action ends EXECUTED. */
static void threshold_approval_under_failures(void **state)
{
    (void)state;
    unsigned long n = 1, failed = 0, resumed = 0, again = 0;
    for (; n <= MAX_N; n++) {
        size_t before = second_versions();
        Kms__V1__Action *a = NULL, *after = NULL;
        assert_int_equal(propose_rotation(&a), GRPC_STATUS_OK);
        uint8_t sig[256];
        size_t sig_len = sign_action_as(a, "officer2", sig);
        assert_int_equal(approve_as(O2, a, sig, sig_len, &after), GRPC_STATUS_OK);
        assert_int_equal(after->state, KMS__V1__ACTION_STATE__PENDING);
        protobuf_c_message_free_unpacked(&after->base, NULL);
        after = NULL;
        sig_len = sign_action(a, sig);
        arm(n);
        int st = approve(a, sig, sig_len, &after);
        kmsd_is_alive(n, "ApproveAction at the threshold");
        int f = fired(n);
        if (st == GRPC_STATUS_OK) {
            assert_int_equal(after->n_approvals, 2);
            protobuf_c_message_free_unpacked(&after->base, NULL);
        } else {
            assert_true(f);
            if (!clean_failure(st))
                fail_msg("ApproveAction at the threshold with allocation %lu failing: status %d", n,
                         st);
            failed++;
        }
        /* Settle: EXECUTED (at once, or by the sweep), or still pending
         * with officer2's approval only (then officer1 approves again). */
        Kms__V1__Action *g = NULL;
        for (int tries = 0;; tries++) {
            g = get_action(a);
            if (g->state == KMS__V1__ACTION_STATE__EXECUTED)
                break;
            if (g->state != KMS__V1__ACTION_STATE__PENDING)
                fail_msg("allocation %lu: the action ended in state %d (%s)", n, g->state,
                         g->result != NULL ? g->result : "");
            if (g->n_approvals == 1) {
                assert_string_equal(g->approvals[0]->officer_id, "officer2");
                assert_int_equal(approve(a, sig, sig_len, &after), GRPC_STATUS_OK);
                protobuf_c_message_free_unpacked(&after->base, NULL);
                again++;
            } else {
                if (tries == 0)
                    resumed++;
                if (tries > 200)
                    fail_msg("allocation %lu: the action was not finished by the sweep", n);
                usleep(20000);
            }
            protobuf_c_message_free_unpacked(&g->base, NULL);
        }
        protobuf_c_message_free_unpacked(&g->base, NULL);
        protobuf_c_message_free_unpacked(&a->base, NULL);
        assert_int_equal(second_versions(), before + 1); /* executed exactly once */
        if (!f)
            break;
    }
    print_message("ApproveAction at the threshold: %lu allocations, %lu runs failed cleanly "
                  "(%lu approved again, %lu finished by the sweep)\n",
                  n - 1, failed, again, resumed);
    assert_true(n > 1 && n <= MAX_N);
}

/* After all that, kmsd serves as before. */
static void serves_after(void **state)
{
    (void)state;
    Kms__V1__GenerateDataKeyResponse *g = NULL;
    assert_int_equal(generate(&g), GRPC_STATUS_OK);
    Kms__V1__DecryptResponse *d = NULL;
    assert_int_equal(decrypt(&g->ciphertext_blob, &d), GRPC_STATUS_OK);
    assert_memory_equal(d->plaintext.data, g->plaintext.data, 32);
    protobuf_c_message_free_unpacked(&d->base, NULL);
    protobuf_c_message_free_unpacked(&g->base, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(generate_data_key_under_failures),
        cmocka_unit_test(decrypt_under_failures),
        cmocka_unit_test(approval_under_failures),
        cmocka_unit_test(threshold_approval_under_failures),
        cmocka_unit_test(serves_after),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
