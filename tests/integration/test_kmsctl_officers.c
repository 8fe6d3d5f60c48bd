/* kmsctl's officer commands against a real kmsd (mutual TLS, SoftHSM2,
 * SQLite): keygen, propose, show-action, approve (with --yes, refused
 * without a terminal), actions, cancel; the digest is recomputed before
 * signing; exit codes for a second approval, another officer's key and a
 * non-officer; and an officer whose signing key lives on a PKCS#11 token
 * (SoftHSM2, through OpenSSL's pkcs11 engine). */
#include <fcntl.h>
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

#include "group_run.h"
#include "kmsctl_runner.h"
#include "kmsd_fixture.h"
#include "test_util.h"

static kms_test_kmsd K;
static char DIR_[320];
static char OUT[65536], ERR[65536];
static const kms_test_kmsctl_io IO = {DIR_, OUT, ERR, sizeof(OUT), sizeof(ERR)};
static char O1[400], O2[400], O3[400], APP[400], BOB[400];

static int group_setup(void **state)
{
    (void)state;
    kms_test_kmsd_setup(&K);
    kms_test_kmsd_start(&K, NULL);
    kms_test_kmsd_dir(&K, DIR_, sizeof(DIR_));
    char k1[400], k2[400], k3[400];
    kms_test_kmsctl_conf(&K, kms_test_path(O1, sizeof(O1), DIR_, "officer1.conf"), "officer1", NULL,
                         kms_test_kmsd_pki(&K, "officer1-signing-key.pem", k1, sizeof(k1)));
    kms_test_kmsctl_conf(&K, kms_test_path(O2, sizeof(O2), DIR_, "officer2.conf"), "officer2", NULL,
                         kms_test_kmsd_pki(&K, "officer2-signing-key.pem", k2, sizeof(k2)));
    /* officer3's file names officer1's key: a signature by the wrong key. */
    kms_test_kmsctl_conf(&K, kms_test_path(O3, sizeof(O3), DIR_, "officer3.conf"), "officer3", NULL,
                         kms_test_kmsd_pki(&K, "officer1-signing-key.pem", k3, sizeof(k3)));
    kms_test_kmsctl_conf(&K, kms_test_path(APP, sizeof(APP), DIR_, "app.conf"), "app", NULL, NULL);
    kms_test_kmsctl_conf(&K, kms_test_path(BOB, sizeof(BOB), DIR_, "bob.conf"), "bob", NULL, NULL);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
    kms_test_kmsd_teardown(&K);
    return 0;
}

static void keygen(void **state)
{
    (void)state;
    char priv[400], pub[400];
    kms_test_path(priv, sizeof(priv), DIR_, "ed.pem");
    kms_test_path(pub, sizeof(pub), DIR_, "ed.pub");
    assert_int_equal(kms_test_kmsctl_l(&IO, "officer", "keygen", "--type", "ed25519", "--out", priv,
                                       "--pub-out", pub, NULL),
                     0);
    struct stat st;
    assert_int_equal(stat(priv, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    kms_test_read_file(pub, OUT, sizeof(OUT));
    assert_non_null(strstr(OUT, "BEGIN PUBLIC KEY"));
    /* Never overwrites a key. */
    assert_int_equal(
        kms_test_kmsctl_l(&IO, "officer", "keygen", "--out", priv, "--pub-out", pub, NULL), 2);
    assert_int_equal(kms_test_kmsctl_l(&IO, "officer", "keygen", "--type", "rsa", "--out", "x",
                                       "--pub-out", "y", NULL),
                     6);
}

static void rotate_with_two_officers(void **state)
{
    (void)state;
    char id[64], v[64];
    assert_int_equal(
        kms_test_kmsctl_l(&IO, "--config", O1, "propose", "rotate-key", "--key", "demo", NULL), 0);
    kms_test_field(OUT, "action", 1, id, sizeof(id));
    assert_string_equal(kms_test_field(OUT, "type", 1, v, sizeof(v)), "RotateKey");
    assert_string_equal(kms_test_field(OUT, "key", 1, v, sizeof(v)), "demo");
    assert_string_equal(kms_test_field(OUT, "digest_check", 1, v, sizeof(v)), "verified");

    /* show-action decodes the canonical bytes. */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O2, "show-action", id, NULL), 0);
    assert_string_equal(kms_test_field(OUT, "state", 1, v, sizeof(v)), "PENDING");
    assert_string_equal(kms_test_field(OUT, "proposer", 1, v, sizeof(v)), "officer1");
    /* Without a terminal and without --yes: refused, nothing sent. */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "approve", id, NULL), 2);
    assert_non_null(strstr(ERR, "--yes"));
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "approve", id, "--yes", NULL), 0);
    assert_string_equal(kms_test_field(OUT, "approvals", 1, v, sizeof(v)), "1");
    /* A second approval by the same officer: 7, nothing changes. */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "approve", id, "--yes", NULL), 7);
    /* officer3 signing with officer1's key: the signature is refused (6). */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O3, "approve", id, "--yes", NULL), 6);
    /* Non-officers: denied (3). */
    assert_int_equal(
        kms_test_kmsctl_l(&IO, "--config", APP, "propose", "rotate-key", "--key", "demo", NULL), 3);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "show-action", id, NULL), 3);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O2, "show-action", id, NULL), 0);
    assert_string_equal(kms_test_field(OUT, "approvals", 1, v, sizeof(v)), "1");
    /* The second officer's approval executes it. */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O2, "--json", "approve", id, "--yes", NULL),
                     0);
    assert_non_null(strstr(OUT, "\"state\":\"EXECUTED\""));
    assert_non_null(strstr(OUT, "version 2 is primary"));
    assert_int_equal(
        kms_test_kmsctl_l(&IO, "--config", APP, "--json", "describe-key", "demo", NULL), 0);
    assert_non_null(strstr(OUT, "\"primary_version\":2"));
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O2, "actions", NULL), 0);
    assert_non_null(strstr(OUT, id));
    assert_non_null(strstr(OUT, "EXECUTED"));
}

static void propose_errors_and_cancel(void **state)
{
    (void)state;
    char id[64], v[64];
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "propose", "set-threshold", "--action",
                                       "RotateKey", "--threshold", "1", NULL),
                     6);
    assert_int_equal(
        kms_test_kmsctl_l(&IO, "--config", O1, "propose", "rotate-key", "--key", "nope", NULL), 4);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "propose", "frobnicate", NULL), 2);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "propose", "rotate-key", NULL), 2);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "show-action", "xyz", NULL), 2);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "show-action",
                                       "00000000000000000000000000000000", NULL),
                     4);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "propose", "schedule-key-deletion",
                                       "--key", "second", NULL),
                     0);
    kms_test_field(OUT, "action", 1, id, sizeof(id));
    assert_string_equal(kms_test_field(OUT, "pending_window_days", 1, v, sizeof(v)),
                        "30"); /* default filled */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O2, "cancel", id, NULL),
                     3); /* not the proposer */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "cancel", id, NULL), 0);
    assert_string_equal(kms_test_field(OUT, "state", 1, v, sizeof(v)), "CANCELLED");
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O2, "approve", id, "--yes", NULL), 7);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "actions", "--pending", NULL), 0);
    assert_null(strstr(OUT, id));
}

/* An officer whose signing key is on a PKCS#11 token. */
static void pkcs11_signing_key(void **state)
{
    (void)state;
    const char *tool = getenv("KMS_PKCS11_TOOL");
    assert_non_null(tool);
    char der[400], pem[400], out[8192], id[64], v[64];
    kms_test_path(der, sizeof(der), DIR_, "bob-pub.der");
    kms_test_path(pem, sizeof(pem), DIR_, "bob-pub.pem");
    char *gen[] = {(char *)tool,
                   "--module",
                   (char *)K.token.module,
                   "--token-label",
                   K.token.label,
                   "--login",
                   "--pin",
                   KMS_TEST_USER_PIN,
                   "--keypairgen",
                   "--key-type",
                   "EC:prime256v1",
                   "--label",
                   "bob-sign",
                   "--id",
                   "b0b0",
                   NULL};
    assert_int_equal(kms_test_run(gen, out, sizeof(out)), 0);
    char *rd[] = {(char *)tool,
                  "--module",
                  (char *)K.token.module,
                  "--token-label",
                  K.token.label,
                  "--read-object",
                  "--type",
                  "pubkey",
                  "--label",
                  "bob-sign",
                  "--output-file",
                  der,
                  NULL};
    assert_int_equal(kms_test_run(rd, out, sizeof(out)), 0);
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "openssl pkey -pubin -inform DER -in '%s' -out '%s'", der, pem);
    assert_int_equal(system(cmd), 0);

    /* Enrol bob with the token's public key (2 of 3). */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "propose", "add-officer", "--id", "bob",
                                       "--identity", KMS_TEST_BOB_ID, "--signing-key-pub", pem,
                                       NULL),
                     0);
    kms_test_field(OUT, "action", 1, id, sizeof(id));
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "approve", id, "--yes", NULL), 0);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O2, "approve", id, "--yes", NULL), 0);
    assert_string_equal(kms_test_field(OUT, "state", 1, v, sizeof(v)), "EXECUTED");

    /* bob proposes and approves with the key on the token, officer2 completes. */
    char uri[300];
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=bob-sign;type=private?pin-value=%s",
             K.token.label, KMS_TEST_USER_PIN);
    setenv("KMS_PKCS11_MODULE", K.token.module, 1);
    assert_int_equal(
        kms_test_kmsctl_l(&IO, "--config", BOB, "propose", "rotate-key", "--key", "second", NULL),
        0);
    kms_test_field(OUT, "action", 1, id, sizeof(id));
    assert_int_equal(
        kms_test_kmsctl_l(&IO, "--config", BOB, "approve", id, "--yes", "--signing-key", uri, NULL),
        0);
    assert_string_equal(kms_test_field(OUT, "approvals", 1, v, sizeof(v)), "1");
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O2, "approve", id, "--yes", NULL), 0);
    assert_string_equal(kms_test_field(OUT, "state", 1, v, sizeof(v)), "EXECUTED");
    /* A wrong PIN signs nothing. */
    assert_int_equal(
        kms_test_kmsctl_l(&IO, "--config", BOB, "propose", "rotate-key", "--key", "second", NULL),
        0);
    kms_test_field(OUT, "action", 1, id, sizeof(id));
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=bob-sign;type=private?pin-value=0000",
             K.token.label);
    assert_int_not_equal(
        kms_test_kmsctl_l(&IO, "--config", BOB, "approve", id, "--yes", "--signing-key", uri, NULL),
        0);
    unsetenv("KMS_PKCS11_MODULE");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keygen),
        cmocka_unit_test(rotate_with_two_officers),
        cmocka_unit_test(propose_errors_and_cancel),
        cmocka_unit_test(pkcs11_signing_key),
    };
    return KMS_RUN_GROUP(tests, group_setup, group_teardown);
}
