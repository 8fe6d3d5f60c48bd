/* Signed checkpoints, in process: a checkpoint signed by the openssl
 * command line (an independent vector) verifies and any change to it does
 * not; the writer with a software signer puts a checkpoint every N records,
 * at the end of every file and at close; a signer that fails leaves the
 * records durable and the tail unverified until it works again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

#include "kmsd/audit/audit_checkpoint.h"
#include "kmsd/audit/audit_log.h"
#include "kmsd/audit/audit_record.h"
#include "kmsd/audit/audit_verify.h"
#include "test_util.h"

#define MAX_FILES 64

/* Made by `openssl dgst -sha256 -sign` over the documented message (see
 * tests/fuzz/corpus/audit_record/checkpoint), with this public point. */
static const uint8_t cli_pub[KMS_AUDIT_PUB_LEN] = {
    0x04, 0x58, 0xaf, 0x4c, 0x20, 0x10, 0x9a, 0xf7, 0x8d, 0x9c, 0xd4, 0xf7, 0x73,
    0x58, 0xbc, 0x52, 0xa8, 0xc9, 0x15, 0x56, 0x1e, 0x85, 0x75, 0x23, 0x2d, 0x8f,
    0x6a, 0x8f, 0x3b, 0x47, 0x6f, 0x70, 0x94, 0x85, 0x17, 0xce, 0xc0, 0xa7, 0x0b,
    0x5a, 0x77, 0x09, 0x55, 0xe6, 0x22, 0xe7, 0xe1, 0x3b, 0xc9, 0xcd, 0xd1, 0xfd,
    0x75, 0x2d, 0x1f, 0x71, 0x55, 0xe3, 0x1d, 0xaf, 0x17, 0x32, 0x1b, 0xf6, 0xe6};
static const char cli_line[] =
    "{\"seq\":2,\"prev\":\"2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881\","
    "\"time\":\"2026-12-02T16:00:00.000000Z\",\"instance\":\"0123456789abcdef\",\"type\":"
    "\"checkpoint\",\"identity\":\"\",\"peer\":\"\",\"method\":\"\",\"key\":\"\",\"version\":0,"
    "\"action\":\"\",\"context_hmac\":\"\",\"status\":0,\"error\":\"\",\"detail\":\"log="
    "b1ba9f4c02d9141214b8813f240586ab sig=3045022074cf3464b8927821ffae1e9b3f71940b1befaa06b9848a"
    "714e11b0a6acfd196702210082921ded41ab6f13d695529d55819585b503490e6d9c0058363eaa2e56f37f0b\","
    "\"duration_us\":0}\n";

static kms_audit_parsed P;

static int verify_text(const char *line, const uint8_t *pub)
{
    assert_int_equal(kms_audit_rec_parse(line, strlen(line), &P), 0);
    return kms_audit_checkpoint_verify(&P, pub);
}

/* A copy of cli_line with the first `from` replaced by `to` (same length). */
static const char *changed(const char *from, const char *to)
{
    static char buf[sizeof(cli_line)];
    memcpy(buf, cli_line, sizeof(cli_line));
    char *at = strstr(buf, from);
    assert_non_null(at);
    assert_int_equal(strlen(from), strlen(to));
    memcpy(at, to, strlen(to));
    return buf;
}

static void test_openssl_cli_vector(void **state)
{
    (void)state;
    char id[KMS_AUDIT_LOG_ID_HEX + 1];
    assert_int_equal(kms_audit_log_id(cli_pub, id), 0);
    assert_string_equal(id, "b1ba9f4c02d9141214b8813f240586ab");
    assert_int_equal(verify_text(cli_line, cli_pub), 0);
    /* every signed field, and the signature itself */
    assert_int_equal(verify_text(changed("\"seq\":2,", "\"seq\":3,"), cli_pub), KMS_EAUTH);
    assert_int_equal(verify_text(changed("2d7116", "2d7117"), cli_pub), KMS_EAUTH);
    assert_int_equal(verify_text(changed("16:00:00.000000Z", "16:00:00.000001Z"), cli_pub),
                     KMS_EAUTH);
    assert_int_equal(verify_text(changed("0123456789abcdef", "0123456789abcdee"), cli_pub),
                     KMS_EAUTH);
    assert_int_equal(verify_text(changed("56f37f0b", "56f37f0c"), cli_pub), KMS_EAUTH);
    /* the unsigned fields are fixed */
    assert_int_equal(verify_text(changed("\"status\":0,", "\"status\":1,"), cli_pub), KMS_EAUTH);
    assert_int_equal(
        verify_text(changed("\"type\":\"checkpoint\"", "\"type\":\"checkpoinu\""), cli_pub),
        KMS_EAUTH);
    /* another key: the log id says so */
    uint8_t other[KMS_AUDIT_PUB_LEN];
    memcpy(other, cli_pub, sizeof(other));
    other[64] ^= 1; /* not on the curve, or another point: refused either way */
    assert_int_not_equal(verify_text(cli_line, other), 0);
    kms_error_clear();
}

/* ---- the writer with a software signer ----------------------------------------------------- */

static EVP_PKEY *KEY;
static uint8_t KEY_PUB[KMS_AUDIT_PUB_LEN];
static int FAIL_SIGN;
static int SIGNS;

static int soft_sign(void *ctx, const uint8_t digest[KMS_AUDIT_DIGEST_LEN],
                     uint8_t sig[KMS_AUDIT_SIG_LEN])
{
    (void)ctx;
    SIGNS++;
    if (FAIL_SIGN)
        return kms_error_set(KMS_EUNAVAIL, "test: the signer is down");
    uint8_t der[80];
    size_t der_len = sizeof(der);
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(KEY, NULL);
    assert_true(c != NULL && EVP_PKEY_sign_init(c) == 1 &&
                EVP_PKEY_sign(c, der, &der_len, digest, KMS_AUDIT_DIGEST_LEN) == 1);
    EVP_PKEY_CTX_free(c);
    const uint8_t *p = der;
    ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    assert_non_null(s);
    assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(s), sig, 32), 32);
    assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(s), sig + 32, 32), 32);
    ECDSA_SIG_free(s);
    return 0;
}

static char LOG_ID[KMS_AUDIT_LOG_ID_HEX + 1];

static kms_audit *open_log(char *dir, size_t cap, uint64_t max_bytes, unsigned every)
{
    kms_audit *a = NULL;
    assert_non_null(kms_test_tmpdir("auditcp", dir, cap));
    kms_audit_config cfg = {.dir = dir,
                            .max_bytes = max_bytes,
                            .sign = soft_sign,
                            .log_id = LOG_ID,
                            .checkpoint_records = every,
                            .checkpoint_seconds = 3600};
    assert_int_equal(kms_audit_open(&cfg, &a), 0);
    return a;
}

static void append(kms_audit *a, int n)
{
    for (int i = 0; i < n; i++) {
        kms_audit_rec r = {.type = "rpc",
                           .identity = "spiffe://kms.local/app",
                           .peer = "ipv4:127.0.0.1:1",
                           .method = "/kms.v1.KeyManagement/Decrypt",
                           .key = "demo",
                           .version = 1,
                           .action = "",
                           .context_hmac = "",
                           .error = "",
                           .detail = ""};
        assert_int_equal(kms_audit_append(a, &r), 0);
    }
}

struct files {
    char path[MAX_FILES][600];
    const char *p[MAX_FILES];
    size_t n;
};

static int cmp_str(const void *x, const void *y)
{
    return strcmp((const char *)x, (const char *)y);
}

static void list_files(const char *dir, struct files *f)
{
    char names[MAX_FILES][256];
    size_t n = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, "audit-", 6) == 0 && n < MAX_FILES)
            snprintf(names[n++], sizeof(names[0]), "%s", e->d_name);
    closedir(d);
    qsort(names, n, sizeof(names[0]), cmp_str);
    for (size_t i = 0; i < n; i++) {
        snprintf(f->path[i], sizeof(f->path[i]), "%.255s/%.255s", dir, names[i]);
        f->p[i] = f->path[i];
    }
    f->n = n;
}

static void verify(const char *dir, kms_audit_verify_result *res)
{
    static struct files f;
    list_files(dir, &f);
    assert_int_equal(kms_audit_verify_files_signed(f.p, f.n, KEY_PUB, res), 0);
    assert_true(res->intact);
}

static void test_checkpoint_every_n_and_at_close(void **state)
{
    (void)state;
    char dir[256];
    kms_audit_verify_result res;
    kms_audit *a = open_log(dir, sizeof(dir), 0, 4);
    append(a, 10); /* checkpoints after 4 and 8 */
    kms_audit_close(a);
    verify(dir, &res);
    assert_int_equal(res.checkpoints, 3); /* + the one at close */
    assert_int_equal(res.checkpoints_verified, 3);
    assert_int_equal(res.records, 13);
    assert_int_equal(res.covered_seq, 13);
    assert_int_equal(res.unverified, 0);
    /* without the key: all of it is a tail */
    static struct files f;
    list_files(dir, &f);
    assert_int_equal(kms_audit_verify_files(f.p, f.n, &res), 0);
    assert_int_equal(res.unverified, 13);
    kms_test_rmtree(dir);
}

static void test_every_file_ends_with_a_checkpoint(void **state)
{
    (void)state;
    char dir[256];
    kms_audit_verify_result res;
    kms_audit *a = open_log(dir, sizeof(dir), 4096, 1000);
    append(a, 60);
    kms_audit_close(a);
    verify(dir, &res);
    assert_int_equal(res.unverified, 0);
    static struct files f;
    static char buf[8192];
    list_files(dir, &f);
    assert_true(f.n >= 3);
    for (size_t i = 0; i < f.n; i++) {
        size_t len = kms_test_read_file(f.p[i], buf, sizeof(buf) - 1);
        assert_true(len > 0 && len <= 4096);
        buf[len - 1] = '\0';
        char *last = strrchr(buf, '\n');
        assert_non_null(strstr(last ? last + 1 : buf, "\"type\":\"checkpoint\""));
    }
    kms_test_rmtree(dir);
}

static void test_failing_signer_keeps_records_and_recovers(void **state)
{
    (void)state;
    char dir[256];
    kms_audit_verify_result res;
    kms_audit *a = open_log(dir, sizeof(dir), 0, 2);
    FAIL_SIGN = 1;
    append(a, 5); /* durable, unsigned */
    assert_int_equal(kms_audit_ready(a), 1);
    verify(dir, &res);
    assert_int_equal(res.records, 5);
    assert_int_equal(res.checkpoints, 0);
    assert_int_equal(res.unverified, 5);
    assert_int_equal(kms_audit_checkpoint_now(a), KMS_EUNAVAIL);
    kms_error_clear();
    FAIL_SIGN = 0;
    assert_int_equal(kms_audit_checkpoint_now(a), 0);
    verify(dir, &res);
    assert_int_equal(res.checkpoints, 1);
    assert_int_equal(res.covered_seq, 6);
    assert_int_equal(res.unverified, 0);
    /* nothing new: no empty checkpoint */
    int signs = SIGNS;
    assert_int_equal(kms_audit_checkpoint_now(a), 0);
    assert_int_equal(SIGNS, signs);
    kms_audit_close(a);
    verify(dir, &res);
    assert_int_equal(res.records, 6);
    kms_test_rmtree(dir);
}

static int setup(void **state)
{
    (void)state;
    KEY = EVP_EC_gen("P-256");
    size_t n = 0;
    if (KEY == NULL ||
        EVP_PKEY_get_octet_string_param(KEY, "encoded-pub-key", KEY_PUB, sizeof(KEY_PUB), &n) !=
            1 ||
        n != KMS_AUDIT_PUB_LEN || kms_audit_log_id(KEY_PUB, LOG_ID) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(KEY);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openssl_cli_vector),
        cmocka_unit_test(test_checkpoint_every_n_and_at_close),
        cmocka_unit_test(test_every_file_ends_with_a_checkpoint),
        cmocka_unit_test(test_failing_signer_keeps_records_and_recovers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
