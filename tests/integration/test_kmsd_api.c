/* kmsd's data plane end to end: a real kmsd process (mutual TLS on a free
 * loopback port, SoftHSM2 token and SQLite file in a temp dir, certificates
 * from scripts/dev-pki) called through the gRPC C core. Round trips for
 * every method, then every negative with its status code and no state
 * change. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <grpc/grpc.h>
#include <grpc/status.h>

#include "group_run.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc_test_client.h"
#include "kms/v1/kms.pb-c.h"
#include "kmsd_fixture.h"

#define KM "/kms.v1.KeyManagement/"

struct fx {
    kms_test_kmsd k;
    kms_tc *app;     /* spiffe://kms.local/app */
    kms_tc *bob;     /* spiffe://kms.local/bob: in no policy */
    kms_tc *officer; /* spiffe://kms.local/officer1 */
};

static struct fx *F;

static int group_setup(void **state)
{
    (void)state;
    grpc_init();
    F = calloc(1, sizeof(*F));
    kms_test_kmsd_setup(&F->k);
    kms_test_kmsd_start(&F->k, NULL);
    F->app = kms_test_kmsd_open_as(&F->k, "app");
    F->bob = kms_test_kmsd_open_as(&F->k, "bob");
    F->officer = kms_test_kmsd_open_as(&F->k, "officer1");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    kms_tc_close(F->app);
    kms_tc_close(F->bob);
    kms_tc_close(F->officer);
    int st = kms_test_kmsd_stop(&F->k, SIGTERM);
    kms_test_kmsd_teardown(&F->k);
    free(F);
    kms_tc_grpc_shutdown();
    if (st != 0) {
        fprintf(stderr, "kmsd exited with %d after SIGTERM\n", st);
        return -1;
    }
    return 0;
}

/* ---- call helpers -------------------------------------------------------------------- */

typedef Kms__V1__GenerateDataKeyRequest__EncryptionContextEntry GdkCtx;
typedef Kms__V1__EncryptRequest__EncryptionContextEntry EncCtx;
typedef Kms__V1__DecryptRequest__EncryptionContextEntry DecCtx;

struct blob {
    uint8_t b[8192];
    size_t len;
};

/* Encrypt with context {purpose: P} (P NULL: no context). */
static int encrypt(kms_tc *c, const char *key, const uint8_t *pt, size_t n, const char *purpose,
                   struct blob *out, uint32_t *version)
{
    Kms__V1__EncryptRequest req = KMS__V1__ENCRYPT_REQUEST__INIT;
    EncCtx e = KMS__V1__ENCRYPT_REQUEST__ENCRYPTION_CONTEXT_ENTRY__INIT;
    EncCtx *ep = &e;
    req.key_name = (char *)key;
    req.plaintext.data = (uint8_t *)pt;
    req.plaintext.len = n;
    if (purpose) {
        e.key = "purpose";
        e.value = (char *)purpose;
        req.encryption_context = &ep;
        req.n_encryption_context = 1;
    }
    ProtobufCMessage *m = NULL;
    char msg[256];
    int st = kms_tc_call(c, KM "Encrypt", &req.base, &kms__v1__encrypt_response__descriptor, &m,
                         msg, sizeof(msg));
    if (st == GRPC_STATUS_OK) {
        Kms__V1__EncryptResponse *r = (Kms__V1__EncryptResponse *)m;
        assert_true(r->ciphertext_blob.len <= sizeof(out->b));
        memcpy(out->b, r->ciphertext_blob.data, r->ciphertext_blob.len);
        out->len = r->ciphertext_blob.len;
        assert_string_equal(r->key_name, key);
        if (version)
            *version = r->key_version;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return st;
}

/* Decrypt; the plaintext goes to pt (cap bytes), its length to *n. */
static int decrypt(kms_tc *c, const struct blob *b, const char *purpose, uint8_t *pt, size_t cap,
                   size_t *n, char *key_name)
{
    Kms__V1__DecryptRequest req = KMS__V1__DECRYPT_REQUEST__INIT;
    DecCtx e = KMS__V1__DECRYPT_REQUEST__ENCRYPTION_CONTEXT_ENTRY__INIT;
    DecCtx *ep = &e;
    req.ciphertext_blob.data = (uint8_t *)b->b;
    req.ciphertext_blob.len = b->len;
    if (purpose) {
        e.key = "purpose";
        e.value = (char *)purpose;
        req.encryption_context = &ep;
        req.n_encryption_context = 1;
    }
    ProtobufCMessage *m = NULL;
    int st = kms_tc_call(c, KM "Decrypt", &req.base, &kms__v1__decrypt_response__descriptor, &m,
                         NULL, 0);
    if (st == GRPC_STATUS_OK) {
        Kms__V1__DecryptResponse *r = (Kms__V1__DecryptResponse *)m;
        assert_true(r->plaintext.len <= cap);
        memcpy(pt, r->plaintext.data, r->plaintext.len);
        *n = r->plaintext.len;
        if (key_name)
            snprintf(key_name, 64, "%s", r->key_name);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return st;
}

static int generate(kms_tc *c, const char *key, Kms__V1__KeySpec spec, int without,
                    Kms__V1__GenerateDataKeyResponse **out)
{
    Kms__V1__GenerateDataKeyRequest req = KMS__V1__GENERATE_DATA_KEY_REQUEST__INIT;
    GdkCtx e = KMS__V1__GENERATE_DATA_KEY_REQUEST__ENCRYPTION_CONTEXT_ENTRY__INIT;
    GdkCtx *ep = &e;
    e.key = "purpose";
    e.value = "backup";
    req.key_name = (char *)key;
    req.key_spec = spec;
    req.without_plaintext = without;
    req.encryption_context = &ep;
    req.n_encryption_context = 1;
    ProtobufCMessage *m = NULL;
    int st = kms_tc_call(c, KM "GenerateDataKey", &req.base,
                         &kms__v1__generate_data_key_response__descriptor, &m, NULL, 0);
    if (out)
        *out = (Kms__V1__GenerateDataKeyResponse *)m;
    else if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    return st;
}

static int reencrypt(kms_tc *c, const struct blob *in, const char *src_purpose, const char *dest,
                     const char *dst_purpose, struct blob *out, Kms__V1__ReEncryptResponse **resp)
{
    Kms__V1__ReEncryptRequest req = KMS__V1__RE_ENCRYPT_REQUEST__INIT;
    Kms__V1__ReEncryptRequest__SourceEncryptionContextEntry s =
        KMS__V1__RE_ENCRYPT_REQUEST__SOURCE_ENCRYPTION_CONTEXT_ENTRY__INIT;
    Kms__V1__ReEncryptRequest__DestinationEncryptionContextEntry d =
        KMS__V1__RE_ENCRYPT_REQUEST__DESTINATION_ENCRYPTION_CONTEXT_ENTRY__INIT;
    Kms__V1__ReEncryptRequest__SourceEncryptionContextEntry *sp = &s;
    Kms__V1__ReEncryptRequest__DestinationEncryptionContextEntry *dp = &d;
    req.ciphertext_blob.data = (uint8_t *)in->b;
    req.ciphertext_blob.len = in->len;
    req.destination_key_name = (char *)dest;
    if (src_purpose) {
        s.key = "purpose";
        s.value = (char *)src_purpose;
        req.source_encryption_context = &sp;
        req.n_source_encryption_context = 1;
    }
    if (dst_purpose) {
        d.key = "purpose";
        d.value = (char *)dst_purpose;
        req.destination_encryption_context = &dp;
        req.n_destination_encryption_context = 1;
    }
    ProtobufCMessage *m = NULL;
    int st = kms_tc_call(c, KM "ReEncrypt", &req.base, &kms__v1__re_encrypt_response__descriptor,
                         &m, NULL, 0);
    if (st == GRPC_STATUS_OK) {
        Kms__V1__ReEncryptResponse *r = (Kms__V1__ReEncryptResponse *)m;
        memcpy(out->b, r->ciphertext_blob.data, r->ciphertext_blob.len);
        out->len = r->ciphertext_blob.len;
        if (resp)
            *resp = r;
        else
            protobuf_c_message_free_unpacked(m, NULL);
    }
    return st;
}

static int describe(kms_tc *c, const char *key, Kms__V1__DescribeKeyResponse **out)
{
    Kms__V1__DescribeKeyRequest req = KMS__V1__DESCRIBE_KEY_REQUEST__INIT;
    req.key_name = (char *)key;
    ProtobufCMessage *m = NULL;
    int st = kms_tc_call(c, KM "DescribeKey", &req.base,
                         &kms__v1__describe_key_response__descriptor, &m, NULL, 0);
    if (out)
        *out = (Kms__V1__DescribeKeyResponse *)m;
    else if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    return st;
}

/* Packed DescribeKey of every key, as seen by an officer: the state that
 * negative calls must not change. */
static size_t snapshot(uint8_t *buf, size_t cap)
{
    Kms__V1__ListKeysRequest req = KMS__V1__LIST_KEYS_REQUEST__INIT;
    uint8_t *out = NULL;
    size_t n = protobuf_c_message_get_packed_size(&req.base), len = 0;
    uint8_t in[8];
    protobuf_c_message_pack(&req.base, in);
    assert_int_equal(kms_tc_call_raw(F->officer, KM "ListKeys", in, n, &out, &len, NULL, 0),
                     GRPC_STATUS_OK);
    assert_true(len <= cap);
    memcpy(buf, out, len);
    free(out);
    return len;
}

static const uint8_t secret_pt[] = "attack at dawn";

/* ---- round trips ----------------------------------------------------------------------- */

static void health_check(void **state)
{
    (void)state;
    const char *services[] = {"", "kms.v1.KeyManagement"};
    for (size_t i = 0; i < 2; i++) {
        Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
        req.service = (char *)services[i];
        ProtobufCMessage *m = NULL;
        assert_int_equal(kms_tc_call(F->app, "/grpc.health.v1.Health/Check", &req.base,
                                     &grpc__health__v1__health_check_response__descriptor, &m, NULL,
                                     0),
                         GRPC_STATUS_OK);
        assert_int_equal(((Grpc__Health__V1__HealthCheckResponse *)m)->status,
                         GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = "no.such.Service";
    char msg[128];
    assert_int_equal(kms_tc_call(F->bob, "/grpc.health.v1.Health/Check", &req.base, NULL, NULL, msg,
                                 sizeof(msg)),
                     GRPC_STATUS_NOT_FOUND);
    assert_string_equal(msg, "unknown service");
    assert_int_equal(
        kms_tc_call(F->app, "/grpc.health.v1.Health/Watch", &req.base, NULL, NULL, NULL, 0),
        GRPC_STATUS_UNIMPLEMENTED);
}

static void generate_data_key_round_trip(void **state)
{
    (void)state;
    const struct {
        Kms__V1__KeySpec spec;
        size_t len;
    } specs[] = {{KMS__V1__KEY_SPEC__KEY_SPEC_UNSPECIFIED, 32},
                 {KMS__V1__KEY_SPEC__AES_256, 32},
                 {KMS__V1__KEY_SPEC__AES_128, 16}};
    for (size_t i = 0; i < 3; i++) {
        for (int without = 0; without <= 1; without++) {
            Kms__V1__GenerateDataKeyResponse *r = NULL;
            assert_int_equal(generate(F->app, "demo", specs[i].spec, without, &r), GRPC_STATUS_OK);
            assert_string_equal(r->key_name, "demo");
            assert_int_equal(r->key_version, 1);
            assert_int_equal(r->plaintext.len, without ? 0 : specs[i].len);
            struct blob b;
            memcpy(b.b, r->ciphertext_blob.data, r->ciphertext_blob.len);
            b.len = r->ciphertext_blob.len;
            uint8_t pt[64];
            size_t n = 0;
            char name[64];
            assert_int_equal(decrypt(F->app, &b, "backup", pt, sizeof(pt), &n, name),
                             GRPC_STATUS_OK);
            assert_int_equal(n, specs[i].len);
            assert_string_equal(name, "demo");
            if (!without)
                assert_memory_equal(pt, r->plaintext.data, n);
            protobuf_c_message_free_unpacked(&r->base, NULL);
        }
    }
}

static void encrypt_decrypt_round_trip(void **state)
{
    (void)state;
    static uint8_t big[4096];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7);
    struct blob b;
    uint8_t pt[4096];
    size_t n = 0;
    uint32_t v = 0;

    assert_int_equal(encrypt(F->app, "demo", secret_pt, sizeof(secret_pt), "test", &b, &v),
                     GRPC_STATUS_OK);
    assert_int_equal(v, 1);
    assert_int_equal(decrypt(F->app, &b, "test", pt, sizeof(pt), &n, NULL), GRPC_STATUS_OK);
    assert_int_equal(n, sizeof(secret_pt));
    assert_memory_equal(pt, secret_pt, n);

    /* The largest plaintext, without a context. */
    assert_int_equal(encrypt(F->app, "demo", big, sizeof(big), NULL, &b, NULL), GRPC_STATUS_OK);
    assert_int_equal(decrypt(F->app, &b, NULL, pt, sizeof(pt), &n, NULL), GRPC_STATUS_OK);
    assert_int_equal(n, sizeof(big));
    assert_memory_equal(pt, big, n);

    /* 1 byte. */
    assert_int_equal(encrypt(F->app, "demo", big, 1, NULL, &b, NULL), GRPC_STATUS_OK);
    assert_int_equal(decrypt(F->app, &b, NULL, pt, sizeof(pt), &n, NULL), GRPC_STATUS_OK);
    assert_int_equal(n, 1);
}

static void reencrypt_result_decrypts(void **state)
{
    (void)state;
    struct blob a, b;
    uint8_t pt[64];
    size_t n = 0;
    char name[64];
    assert_int_equal(encrypt(F->app, "demo", secret_pt, sizeof(secret_pt), "src", &a, NULL),
                     GRPC_STATUS_OK);
    Kms__V1__ReEncryptResponse *r = NULL;
    assert_int_equal(reencrypt(F->app, &a, "src", "second", "dst", &b, &r), GRPC_STATUS_OK);
    assert_string_equal(r->source_key_name, "demo");
    assert_int_equal(r->source_key_version, 1);
    assert_string_equal(r->key_name, "second");
    assert_int_equal(r->key_version, 1);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    assert_int_equal(decrypt(F->app, &b, "dst", pt, sizeof(pt), &n, name), GRPC_STATUS_OK);
    assert_int_equal(n, sizeof(secret_pt));
    assert_memory_equal(pt, secret_pt, n);
    assert_string_equal(name, "second");
    /* The new blob is bound to the new context, the old one still works. */
    assert_int_equal(decrypt(F->app, &b, "src", pt, sizeof(pt), &n, NULL),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_int_equal(decrypt(F->app, &a, "src", pt, sizeof(pt), &n, NULL), GRPC_STATUS_OK);
    /* Same key, new context. */
    assert_int_equal(reencrypt(F->app, &a, "src", "demo", NULL, &b, NULL), GRPC_STATUS_OK);
    assert_int_equal(decrypt(F->app, &b, NULL, pt, sizeof(pt), &n, name), GRPC_STATUS_OK);
    assert_string_equal(name, "demo");
}

static int has(char **v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return 1;
    return 0;
}

static void describe_and_list_keys(void **state)
{
    (void)state;
    Kms__V1__DescribeKeyResponse *d = NULL;
    assert_int_equal(describe(F->app, "demo", &d), GRPC_STATUS_OK);
    Kms__V1__KeyMetadata *m = d->key;
    assert_string_equal(m->key_name, "demo");
    assert_int_equal(m->key_id.len, 16);
    assert_string_equal(m->backend, "pkcs11");
    assert_int_equal(m->primary_version, 1);
    assert_int_equal(m->min_decryption_version, 1);
    assert_int_equal(m->n_versions, 1);
    assert_int_equal(m->versions[0]->version, 1);
    assert_int_equal(m->versions[0]->state, KMS__V1__KEY_VERSION_STATE__ENABLED);
    assert_true(m->versions[0]->usage_count >= 1); /* leases reserved by the round trips */
    assert_true(m->created_at > 1700000000);
    /* A policy goes only to officers: for anyone else it is absent (not
     * empty, which would read as "nobody"). */
    assert_null(m->policy);
    protobuf_c_message_free_unpacked(&d->base, NULL);

    /* Officers may describe any key (they administer them), with its policy. */
    assert_int_equal(describe(F->officer, "locked", NULL), GRPC_STATUS_OK);
    assert_int_equal(describe(F->officer, "demo", &d), GRPC_STATUS_OK);
    m = d->key;
    assert_non_null(m->policy);
    assert_true(has(m->policy->encrypt, m->policy->n_encrypt, KMS_TEST_APP_ID));
    assert_true(has(m->policy->decrypt, m->policy->n_decrypt, KMS_TEST_APP_ID));
    assert_true(has(m->policy->reencrypt, m->policy->n_reencrypt, KMS_TEST_APP_ID));
    protobuf_c_message_free_unpacked(&d->base, NULL);

    /* ListKeys: officers see all, others the keys whose policy names them. */
    Kms__V1__ListKeysRequest req = KMS__V1__LIST_KEYS_REQUEST__INIT;
    const struct {
        kms_tc *c;
        size_t n;
    } views[] = {{F->app, 2}, {F->officer, 4}, {F->bob, 0}};
    for (size_t i = 0; i < 3; i++) {
        ProtobufCMessage *lm = NULL;
        assert_int_equal(kms_tc_call(views[i].c, KM "ListKeys", &req.base,
                                     &kms__v1__list_keys_response__descriptor, &lm, NULL, 0),
                         GRPC_STATUS_OK);
        Kms__V1__ListKeysResponse *l = (Kms__V1__ListKeysResponse *)lm;
        assert_int_equal(l->n_keys, views[i].n);
        for (size_t j = 1; j < l->n_keys; j++) /* in name order */
            assert_true(strcmp(l->keys[j - 1]->key_name, l->keys[j]->key_name) < 0);
        if (views[i].c == F->app) {
            assert_string_equal(l->keys[0]->key_name, "demo");
            assert_string_equal(l->keys[1]->key_name, "second");
            assert_null(l->keys[0]->policy); /* officers only */
        }
        protobuf_c_message_free_unpacked(lm, NULL);
    }
}

static void unimplemented_and_unknown_methods(void **state)
{
    (void)state;
    uint8_t empty[1] = {0};
    const char *paths[] = {"/kms.v1.KeyManagement/Nope", "/no.Such/Method"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        assert_int_equal(kms_tc_call_raw(F->officer, paths[i], empty, 0, NULL, NULL, NULL, 0),
                         GRPC_STATUS_UNIMPLEMENTED);
        assert_int_equal(kms_tc_call_raw(F->app, paths[i], empty, 0, NULL, NULL, NULL, 0),
                         GRPC_STATUS_UNIMPLEMENTED);
    }
    /* The audit log is for auditors only (test_kmsd_audit_read). */
    assert_int_equal(
        kms_tc_call_raw(F->officer, "/kms.v1.Audit/ReadAuditLog", empty, 0, NULL, NULL, NULL, 0),
        GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(
        kms_tc_call_raw(F->app, "/kms.v1.Audit/ReadAuditLog", empty, 0, NULL, NULL, NULL, 0),
        GRPC_STATUS_PERMISSION_DENIED);
    /* Quorum is for officers only. */
    assert_int_equal(
        kms_tc_call_raw(F->app, "/kms.v1.Quorum/ListActions", empty, 0, NULL, NULL, NULL, 0),
        GRPC_STATUS_PERMISSION_DENIED);
}

/* ---- negatives: each with its status code and no state change ----------------------- */

static uint8_t before[1 << 16];
static size_t before_len;

static void take_snapshot(void)
{
    before_len = snapshot(before, sizeof(before));
}

static void assert_unchanged(void)
{
    static uint8_t after[1 << 16];
    size_t n = snapshot(after, sizeof(after));
    assert_int_equal(n, before_len);
    assert_memory_equal(after, before, n);
}

/* A caller with no rights on a key gets the same answer whether it exists
 * or not (PERMISSION_DENIED with the same message), so key names cannot be
 * probed; an officer, who may list every key, is told NOT_FOUND. */
static void unknown_key_not_found(void **state)
{
    (void)state;
    struct blob b;
    char missing[256], denied[256];
    take_snapshot();
    /* "locked" exists and names nobody; "no-such-key" does not exist. */
    assert_int_equal(encrypt(F->app, "no-such-key", secret_pt, 4, NULL, &b, NULL),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(generate(F->app, "no-such-key", KMS__V1__KEY_SPEC__AES_256, 0, NULL),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(describe(F->app, "no-such-key", NULL), GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(describe(F->bob, "locked", NULL), GRPC_STATUS_PERMISSION_DENIED);
    Kms__V1__DescribeKeyRequest dr = KMS__V1__DESCRIBE_KEY_REQUEST__INIT;
    dr.key_name = "no-such-key";
    assert_int_equal(
        kms_tc_call(F->bob, KM "DescribeKey", &dr.base, NULL, NULL, missing, sizeof(missing)),
        GRPC_STATUS_PERMISSION_DENIED);
    dr.key_name = "locked";
    assert_int_equal(
        kms_tc_call(F->bob, KM "DescribeKey", &dr.base, NULL, NULL, denied, sizeof(denied)),
        GRPC_STATUS_PERMISSION_DENIED);
    assert_string_equal(missing, denied);
    dr.key_name = "no-such-key";
    assert_int_equal(kms_tc_call(F->officer, KM "DescribeKey", &dr.base, NULL, NULL, NULL, 0),
                     GRPC_STATUS_NOT_FOUND);
    assert_int_equal(encrypt(F->officer, "no-such-key", secret_pt, 4, NULL, &b, NULL),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_unchanged();

    /* A well-formed blob naming a key id that does not exist. */
    assert_int_equal(encrypt(F->app, "demo", secret_pt, 4, NULL, &b, NULL), GRPC_STATUS_OK);
    take_snapshot();
    b.b[1] ^= 0xff; /* key id starts after the format byte */
    uint8_t pt[16];
    size_t n = 0;
    Kms__V1__DecryptRequest req = KMS__V1__DECRYPT_REQUEST__INIT;
    req.ciphertext_blob.data = b.b;
    req.ciphertext_blob.len = b.len;
    assert_int_equal(
        kms_tc_call(F->app, KM "Decrypt", &req.base, NULL, NULL, missing, sizeof(missing)),
        GRPC_STATUS_PERMISSION_DENIED);
    assert_string_equal(missing, denied);
    assert_int_equal(decrypt(F->app, &b, NULL, pt, sizeof(pt), &n, NULL),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(reencrypt(F->app, &b, NULL, "demo", NULL, &b, NULL),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_unchanged();
}

static void wrong_context_invalid_argument(void **state)
{
    (void)state;
    struct blob b, out;
    uint8_t pt[64];
    size_t n = 0;
    assert_int_equal(encrypt(F->app, "demo", secret_pt, sizeof(secret_pt), "right", &b, NULL),
                     GRPC_STATUS_OK);
    take_snapshot();
    char msg[256];
    Kms__V1__DecryptRequest req = KMS__V1__DECRYPT_REQUEST__INIT;
    req.ciphertext_blob.data = b.b;
    req.ciphertext_blob.len = b.len;
    assert_int_equal(kms_tc_call(F->app, KM "Decrypt", &req.base, NULL, NULL, msg, sizeof(msg)),
                     GRPC_STATUS_INVALID_ARGUMENT); /* no context at all */
    assert_non_null(strstr(msg, "wrong encryption context"));
    assert_int_equal(decrypt(F->app, &b, "wrong", pt, sizeof(pt), &n, NULL),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_int_equal(reencrypt(F->app, &b, "wrong", "second", NULL, &out, NULL),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_unchanged();
    assert_int_equal(decrypt(F->app, &b, "right", pt, sizeof(pt), &n, NULL), GRPC_STATUS_OK);

    /* A malformed context (an empty key) is refused before any work. */
    Kms__V1__EncryptRequest er = KMS__V1__ENCRYPT_REQUEST__INIT;
    EncCtx e = KMS__V1__ENCRYPT_REQUEST__ENCRYPTION_CONTEXT_ENTRY__INIT;
    EncCtx *ep = &e;
    e.key = "";
    e.value = "x";
    er.key_name = "demo";
    er.plaintext.data = (uint8_t *)secret_pt;
    er.plaintext.len = 4;
    er.encryption_context = &ep;
    er.n_encryption_context = 1;
    assert_int_equal(kms_tc_call(F->app, KM "Encrypt", &er.base, NULL, NULL, NULL, 0),
                     GRPC_STATUS_INVALID_ARGUMENT);
}

static void tampered_or_truncated_blob_invalid_argument(void **state)
{
    (void)state;
    struct blob good, bad;
    uint8_t pt[64];
    size_t n = 0;
    assert_int_equal(encrypt(F->app, "demo", secret_pt, sizeof(secret_pt), "t", &good, NULL),
                     GRPC_STATUS_OK);
    take_snapshot();
    /* Flip one bit in every position: header, IV, ciphertext, tag. The key
     * id bytes (1..16) make a different key: PERMISSION_DENIED, tested above. */
    for (size_t i = 0; i < good.len; i++) {
        if (i >= 1 && i <= 16)
            continue;
        bad = good;
        bad.b[i] ^= 0x01;
        int st = decrypt(F->app, &bad, "t", pt, sizeof(pt), &n, NULL);
        if (i >= 17 && i <= 20) /* version: another (unknown) version of the key */
            assert_true(st == GRPC_STATUS_NOT_FOUND || st == GRPC_STATUS_INVALID_ARGUMENT);
        else
            assert_int_equal(st, GRPC_STATUS_INVALID_ARGUMENT);
    }
    /* Truncations, an empty blob, trailing bytes. */
    size_t cuts[] = {0, 1, 21, 34, 50, good.len - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        bad = good;
        bad.len = cuts[i];
        assert_int_equal(decrypt(F->app, &bad, "t", pt, sizeof(pt), &n, NULL),
                         GRPC_STATUS_INVALID_ARGUMENT);
        assert_int_equal(reencrypt(F->app, &bad, "t", "demo", NULL, &bad, NULL),
                         GRPC_STATUS_INVALID_ARGUMENT);
    }
    bad = good;
    bad.b[bad.len++] = 0;
    assert_int_equal(decrypt(F->app, &bad, "t", pt, sizeof(pt), &n, NULL),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_unchanged();
}

static void bad_requests_invalid_argument(void **state)
{
    (void)state;
    struct blob b;
    static uint8_t big[4097];
    take_snapshot();
    assert_int_equal(encrypt(F->app, "demo", big, sizeof(big), NULL, &b, NULL),
                     GRPC_STATUS_INVALID_ARGUMENT); /* more than 4 KiB */
    assert_int_equal(encrypt(F->app, "demo", big, 0, NULL, &b, NULL),
                     GRPC_STATUS_INVALID_ARGUMENT); /* empty */
    assert_int_equal(encrypt(F->app, "", big, 4, NULL, &b, NULL), GRPC_STATUS_INVALID_ARGUMENT);
    assert_int_equal(encrypt(F->app, "/bad", big, 4, NULL, &b, NULL), GRPC_STATUS_INVALID_ARGUMENT);
    assert_int_equal(generate(F->app, "demo", (Kms__V1__KeySpec)7, 0, NULL),
                     GRPC_STATUS_INVALID_ARGUMENT);
    /* Bytes that are not a protobuf message. */
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    assert_int_equal(kms_tc_call_raw(F->app, KM "Encrypt", junk, sizeof(junk), NULL, NULL, NULL, 0),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_unchanged();
}

static void oversized_message_resource_exhausted(void **state)
{
    (void)state;
    struct blob b;
    size_t n = 100 * 1024;
    uint8_t *big = calloc(1, n);
    take_snapshot();
    assert_int_equal(encrypt(F->app, "demo", big, n, NULL, &b, NULL),
                     GRPC_STATUS_RESOURCE_EXHAUSTED);
    free(big);
    assert_unchanged();
    assert_int_equal(encrypt(F->app, "demo", secret_pt, 4, NULL, &b, NULL), GRPC_STATUS_OK);
}

static void identity_not_in_policy_permission_denied(void **state)
{
    (void)state;
    struct blob b, out;
    uint8_t pt[64];
    size_t n = 0;
    char msg[256];
    assert_int_equal(encrypt(F->app, "demo", secret_pt, sizeof(secret_pt), NULL, &b, NULL),
                     GRPC_STATUS_OK);
    take_snapshot();
    /* bob is in no policy. */
    assert_int_equal(encrypt(F->bob, "demo", secret_pt, 4, NULL, &out, NULL),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(generate(F->bob, "demo", KMS__V1__KEY_SPEC__AES_256, 0, NULL),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(decrypt(F->bob, &b, NULL, pt, sizeof(pt), &n, NULL),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(reencrypt(F->bob, &b, NULL, "demo", NULL, &out, NULL),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(describe(F->bob, "demo", NULL), GRPC_STATUS_PERMISSION_DENIED);
    /* app is not in locked's policy, in either direction of a ReEncrypt. */
    Kms__V1__EncryptRequest er = KMS__V1__ENCRYPT_REQUEST__INIT;
    er.key_name = "locked";
    er.plaintext.data = (uint8_t *)secret_pt;
    er.plaintext.len = 4;
    assert_int_equal(kms_tc_call(F->app, KM "Encrypt", &er.base, NULL, NULL, msg, sizeof(msg)),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_string_equal(msg, "permission denied");
    assert_int_equal(generate(F->app, "locked", KMS__V1__KEY_SPEC__AES_256, 0, NULL),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(describe(F->app, "locked", NULL), GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(reencrypt(F->app, &b, NULL, "locked", NULL, &out, NULL),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_unchanged();
}

static void officer_has_no_data_plane_rights(void **state)
{
    (void)state;
    struct blob b, out;
    uint8_t pt[64];
    size_t n = 0;
    assert_int_equal(encrypt(F->app, "demo", secret_pt, sizeof(secret_pt), NULL, &b, NULL),
                     GRPC_STATUS_OK);
    take_snapshot();
    assert_int_equal(decrypt(F->officer, &b, NULL, pt, sizeof(pt), &n, NULL),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(encrypt(F->officer, "demo", secret_pt, 4, NULL, &out, NULL),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(generate(F->officer, "demo", KMS__V1__KEY_SPEC__AES_256, 0, NULL),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(reencrypt(F->officer, &b, NULL, "demo", NULL, &out, NULL),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_unchanged();
}

/* An encryption context string with a NUL byte is refused (protobuf-c
 * would read {"purpose": "v\0x"} as {"purpose": "v"} and decrypt a blob
 * made under "v"); the same request without the NUL decrypts. */
static size_t put_varint(uint8_t *out, size_t v)
{
    size_t n = 0;
    for (; v >= 0x80; v >>= 7)
        out[n++] = (uint8_t)(v | 0x80);
    out[n++] = (uint8_t)v;
    return n;
}

static size_t decrypt_request_raw(const struct blob *b, const char *value, size_t value_len,
                                  uint8_t *out)
{
    uint8_t entry[64];
    size_t e = 0, n = 0;
    entry[e++] = 0x0a;
    entry[e++] = 7;
    memcpy(entry + e, "purpose", 7);
    e += 7;
    entry[e++] = 0x12;
    entry[e++] = (uint8_t)value_len;
    memcpy(entry + e, value, value_len);
    e += value_len;
    out[n++] = 0x0a; /* ciphertext_blob */
    n += put_varint(out + n, b->len);
    memcpy(out + n, b->b, b->len);
    n += b->len;
    out[n++] = 0x12; /* encryption_context entry */
    n += put_varint(out + n, e);
    memcpy(out + n, entry, e);
    return n + e;
}

static void context_with_nul_refused(void **state)
{
    (void)state;
    struct blob b;
    static uint8_t req[sizeof(b.b) + 128];
    char msg[256];
    assert_int_equal(encrypt(F->app, "demo", secret_pt, 4, "v", &b, NULL), GRPC_STATUS_OK);
    size_t n = decrypt_request_raw(&b, "v\0x", 3, req);
    assert_int_equal(kms_tc_call_raw(F->app, KM "Decrypt", req, n, NULL, NULL, msg, sizeof(msg)),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(msg, "NUL"));
    n = decrypt_request_raw(&b, "v", 1, req);
    assert_int_equal(kms_tc_call_raw(F->app, KM "Decrypt", req, n, NULL, NULL, NULL, 0),
                     GRPC_STATUS_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(health_check),
        cmocka_unit_test(generate_data_key_round_trip),
        cmocka_unit_test(encrypt_decrypt_round_trip),
        cmocka_unit_test(reencrypt_result_decrypts),
        cmocka_unit_test(describe_and_list_keys),
        cmocka_unit_test(unimplemented_and_unknown_methods),
        cmocka_unit_test(unknown_key_not_found),
        cmocka_unit_test(context_with_nul_refused),
        cmocka_unit_test(wrong_context_invalid_argument),
        cmocka_unit_test(tampered_or_truncated_blob_invalid_argument),
        cmocka_unit_test(bad_requests_invalid_argument),
        cmocka_unit_test(oversized_message_resource_exhausted),
        cmocka_unit_test(identity_not_in_policy_permission_denied),
        cmocka_unit_test(officer_has_no_data_plane_rights),
    };
    return KMS_RUN_GROUP(tests, group_setup, group_teardown);
}
