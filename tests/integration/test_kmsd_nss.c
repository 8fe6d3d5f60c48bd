/* kmsd end to end on NSS softoken, the second PKCS#11 implementation
 * (nss_fixture.h): `kmsd init` makes the keys on an NSS database named by
 * pkcs11.init_args, `kmsd run` serves them over mutual TLS, and a data key
 * comes back from Decrypt, also after a restart (the keys are found again
 * by CKA_ID in the database, and checked again). A tampered blob is
 * refused. Then the failures a new user met: without init_args kmsd does
 * not start, and without pkcs11.allow_nonlocal_keys `kmsd run` and `kmsd
 * init` refuse NSS's keys, naming CKA_LOCAL, instead of serving keys that
 * can never be used. */
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

#include "grpc/health/v1/health.pb-c.h"
#include "grpc_test_client.h"
#include "kms/v1/kms.pb-c.h"
#include "kmsd_fixture.h"

#define KM "/kms.v1.KeyManagement/"

typedef Kms__V1__GenerateDataKeyRequest__EncryptionContextEntry GdkCtx;
typedef Kms__V1__DecryptRequest__EncryptionContextEntry DecCtx;

struct blob {
    uint8_t b[1024];
    size_t len;
};

/* GenerateDataKey under key "demo" (context purpose=nss): the plaintext
 * data key and its blob. */
static void generate(kms_tc *c, uint8_t pt[32], struct blob *out)
{
    Kms__V1__GenerateDataKeyRequest req = KMS__V1__GENERATE_DATA_KEY_REQUEST__INIT;
    GdkCtx e = KMS__V1__GENERATE_DATA_KEY_REQUEST__ENCRYPTION_CONTEXT_ENTRY__INIT;
    GdkCtx *ep = &e;
    e.key = "purpose";
    e.value = "nss";
    req.key_name = "demo";
    req.key_spec = KMS__V1__KEY_SPEC__AES_256;
    req.encryption_context = &ep;
    req.n_encryption_context = 1;
    ProtobufCMessage *m = NULL;
    char msg[256] = "";
    assert_int_equal(kms_tc_call(c, KM "GenerateDataKey", &req.base,
                                 &kms__v1__generate_data_key_response__descriptor, &m, msg,
                                 sizeof(msg)),
                     GRPC_STATUS_OK);
    Kms__V1__GenerateDataKeyResponse *r = (Kms__V1__GenerateDataKeyResponse *)m;
    assert_int_equal(r->plaintext.len, 32);
    memcpy(pt, r->plaintext.data, 32);
    assert_true(r->ciphertext_blob.len <= sizeof(out->b));
    memcpy(out->b, r->ciphertext_blob.data, r->ciphertext_blob.len);
    out->len = r->ciphertext_blob.len;
    protobuf_c_message_free_unpacked(m, NULL);
}

/* Decrypt with context purpose=nss; the status, and the plaintext in pt. */
static int decrypt(kms_tc *c, const struct blob *b, uint8_t pt[32])
{
    Kms__V1__DecryptRequest req = KMS__V1__DECRYPT_REQUEST__INIT;
    DecCtx e = KMS__V1__DECRYPT_REQUEST__ENCRYPTION_CONTEXT_ENTRY__INIT;
    DecCtx *ep = &e;
    e.key = "purpose";
    e.value = "nss";
    req.ciphertext_blob.data = (uint8_t *)b->b;
    req.ciphertext_blob.len = b->len;
    req.encryption_context = &ep;
    req.n_encryption_context = 1;
    ProtobufCMessage *m = NULL;
    int st = kms_tc_call(c, KM "Decrypt", &req.base, &kms__v1__decrypt_response__descriptor, &m,
                         NULL, 0);
    if (st == GRPC_STATUS_OK) {
        Kms__V1__DecryptResponse *r = (Kms__V1__DecryptResponse *)m;
        assert_int_equal(r->plaintext.len, 32);
        memcpy(pt, r->plaintext.data, 32);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return st;
}

static void assert_serving(kms_tc *c)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = "kms.v1.KeyManagement";
    ProtobufCMessage *m = NULL;
    assert_int_equal(kms_tc_call(c, "/grpc.health.v1.Health/Check", &req.base,
                                 &grpc__health__v1__health_check_response__descriptor, &m, NULL, 0),
                     GRPC_STATUS_OK);
    assert_int_equal(((Grpc__Health__V1__HealthCheckResponse *)m)->status,
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* Rewrites kmsd.yaml without the lines containing `drop`. */
static void drop_config_line(const kms_test_kmsd *k, const char *drop)
{
    char text[8192];
    FILE *f = fopen(k->config, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    assert_true(n > 0 && n < sizeof(text) - 1);
    text[n] = '\0';
    f = fopen(k->config, "w");
    assert_non_null(f);
    int dropped = 0;
    for (char *line = text, *next; line != NULL && *line != '\0'; line = next) {
        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        if (strstr(line, drop) != NULL) {
            dropped++;
            continue;
        }
        fprintf(f, "%s\n", line);
    }
    fclose(f);
    assert_int_equal(dropped, 1);
}

static void round_trip_survives_restart(void **state)
{
    (void)state;
    kms_test_kmsd k;
    kms_test_kmsd_setup_nss(&k);
    kms_test_kmsd_start(&k, NULL);
    kms_tc *app = kms_test_kmsd_open_as(&k, "app");
    assert_serving(app);

    uint8_t key[32], back[32];
    struct blob b;
    generate(app, key, &b);
    memset(back, 0, sizeof(back));
    assert_int_equal(decrypt(app, &b, back), GRPC_STATUS_OK);
    assert_memory_equal(back, key, 32);

    /* A flipped bit in the sealed part: NSS reports the failed tag as
     * CKR_ENCRYPTED_DATA_INVALID (SoftHSM2: CKR_GENERAL_ERROR); either is a
     * refusal, never other bytes. */
    struct blob bad = b;
    bad.b[bad.len - 1] ^= 1;
    assert_int_not_equal(decrypt(app, &bad, back), GRPC_STATUS_OK);
    kms_tc_close(app);

    /* A restart: the module is initialized again from init_args and the
     * keys are found and checked again in the database. */
    assert_int_equal(kms_test_kmsd_stop(&k, SIGTERM), 0);
    kms_test_kmsd_start(&k, NULL);
    app = kms_test_kmsd_open_as(&k, "app");
    memset(back, 0, sizeof(back));
    assert_int_equal(decrypt(app, &b, back), GRPC_STATUS_OK);
    assert_memory_equal(back, key, 32);
    kms_tc_close(app);
    assert_int_equal(kms_test_kmsd_stop(&k, SIGTERM), 0);

    /* Without pkcs11.allow_nonlocal_keys the same database is refused at
     * start, naming the attribute: the keys NSS generated say CKA_LOCAL =
     * FALSE. (Before the rule, kmsd started and said SERVING, and every
     * request failed.) */
    drop_config_line(&k, "allow_nonlocal_keys");
    char out[16384];
    const char *run[] = {"--config", k.config, "run", NULL};
    assert_int_not_equal(kms_test_kmsd_run(run, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "CKA_LOCAL is FALSE"));

    /* Without init_args NSS finds no database: kmsd does not start either. */
    drop_config_line(&k, "init_args");
    assert_int_not_equal(kms_test_kmsd_run(run, out, sizeof(out)), 0);
    kms_test_kmsd_teardown(&k);
}

/* `kmsd init` on NSS without pkcs11.allow_nonlocal_keys fails, naming
 * CKA_LOCAL (the state-integrity key, made first, is refused by its check;
 * a master key version would be refused by its self-test, which
 * test_p11_backend covers), instead of recording keys no request could
 * use. */
static void init_without_the_rule_fails_clearly(void **state)
{
    (void)state;
    kms_test_nss nss;
    assert_int_equal(kms_test_nss_create(&nss), 0);
    /* Reuse the fixture's config, minus the rule, on a fresh database. */
    kms_test_kmsd k;
    kms_test_kmsd_setup_nss(&k);
    char cfg[8192];
    FILE *f = fopen(k.config, "r");
    assert_non_null(f);
    size_t n = fread(cfg, 1, sizeof(cfg) - 1, f);
    fclose(f);
    cfg[n] = '\0';
    /* Point the config at the new, empty database and drop the rule. */
    char *ia = strstr(cfg, "configdir='sql:");
    assert_non_null(ia);
    char *end = strchr(ia + 15, '\'');
    assert_non_null(end);
    char rewritten[8192];
    int w = snprintf(rewritten, sizeof(rewritten), "%.*sconfigdir='sql:%s%s", (int)(ia - cfg), cfg,
                     nss.db, end);
    assert_true(w > 0 && (size_t)w < sizeof(rewritten));
    f = fopen(k.config, "w");
    assert_non_null(f);
    fputs(rewritten, f);
    fclose(f);
    drop_config_line(&k, "allow_nonlocal_keys");
    char db[400];
    snprintf(db, sizeof(db), "%s", k.db);
    remove(db);
    char out[16384];
    const char *init[] = {"--config", k.config, "init", NULL};
    assert_int_not_equal(kms_test_kmsd_run(init, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "CKA_LOCAL is FALSE"));
    kms_test_kmsd_teardown(&k);
    kms_test_nss_destroy(&nss);
}

int main(void)
{
    grpc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip_survives_restart),
        cmocka_unit_test(init_without_the_rule_fails_clearly),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    kms_tc_grpc_shutdown();
    return r;
}
