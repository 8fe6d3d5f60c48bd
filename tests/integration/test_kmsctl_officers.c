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

static kms_test_kmsd K;
static char DIR_[320];
static char OUT[65536], ERR[65536];
static char O1[400], O2[400], O3[400], APP[400], BOB[400];

static void path_in(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", DIR_, name);
}

static void write_conf(char *path, size_t cap, const char *who, const char *signing_key)
{
    char ca[400], cert[400], key[400], f1[64], f2[64], name[64];
    snprintf(f1, sizeof(f1), "%s.pem", who);
    snprintf(f2, sizeof(f2), "%s-key.pem", who);
    snprintf(name, sizeof(name), "%s.conf", who);
    path_in(path, cap, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "server: %s\nca: %s\ncert: %s\nkey: %s\n", K.target,
            kms_test_kmsd_pki(&K, "ca.pem", ca, sizeof(ca)),
            kms_test_kmsd_pki(&K, f1, cert, sizeof(cert)),
            kms_test_kmsd_pki(&K, f2, key, sizeof(key)));
    if (signing_key != NULL)
        fprintf(f, "signing_key: %s\n", signing_key);
    fclose(f);
}

static void slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = '\0';
    if (f)
        fclose(f);
}

/* Runs kmsctl with args (NULL-terminated); stdout in OUT, stderr in ERR. */
static int kmsctl(const char *first, ...)
{
    const char *args[48];
    size_t n = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a != NULL && n < 47; a = va_arg(ap, const char *))
        args[n++] = a;
    va_end(ap);
    args[n] = NULL;
    return kms_test_kmsctl(DIR_, args, OUT, sizeof(OUT), ERR, sizeof(ERR));
}

/* The value of the last "name: value" line in OUT (approve prints the
 * action before and after). */
static const char *field(const char *name, char *buf, size_t cap)
{
    char key[64];
    snprintf(key, sizeof(key), "%s: ", name);
    const char *p = NULL;
    for (const char *q = OUT; (q = strstr(q, key)) != NULL; q++)
        if (q == OUT || q[-1] == '\n')
            p = q;
    if (p == NULL)
        fail_msg("no %s in output: %s", name, OUT);
    p += strlen(key);
    size_t n = strcspn(p, "\n");
    assert_true(n < cap);
    memcpy(buf, p, n);
    buf[n] = '\0';
    return buf;
}

static int group_setup(void **state)
{
    (void)state;
    kms_test_kmsd_setup(&K);
    kms_test_kmsd_start(&K, NULL);
    snprintf(DIR_, sizeof(DIR_), "%.*s", (int)(strrchr(K.config, '/') - K.config), K.config);
    char k1[400], k2[400], k3[400];
    write_conf(O1, sizeof(O1), "officer1",
               kms_test_kmsd_pki(&K, "officer1-signing-key.pem", k1, sizeof(k1)));
    write_conf(O2, sizeof(O2), "officer2",
               kms_test_kmsd_pki(&K, "officer2-signing-key.pem", k2, sizeof(k2)));
    /* officer3's file names officer1's key: a signature by the wrong key. */
    write_conf(O3, sizeof(O3), "officer3",
               kms_test_kmsd_pki(&K, "officer1-signing-key.pem", k3, sizeof(k3)));
    write_conf(APP, sizeof(APP), "app", NULL);
    write_conf(BOB, sizeof(BOB), "bob", NULL);
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
    path_in(priv, sizeof(priv), "ed.pem");
    path_in(pub, sizeof(pub), "ed.pub");
    assert_int_equal(
        kmsctl("officer", "keygen", "--type", "ed25519", "--out", priv, "--pub-out", pub, NULL), 0);
    struct stat st;
    assert_int_equal(stat(priv, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    slurp(pub, OUT, sizeof(OUT));
    assert_non_null(strstr(OUT, "BEGIN PUBLIC KEY"));
    /* Never overwrites a key. */
    assert_int_equal(kmsctl("officer", "keygen", "--out", priv, "--pub-out", pub, NULL), 2);
    assert_int_equal(
        kmsctl("officer", "keygen", "--type", "rsa", "--out", "x", "--pub-out", "y", NULL), 6);
}

static void rotate_with_two_officers(void **state)
{
    (void)state;
    char id[64], v[64];
    assert_int_equal(kmsctl("--config", O1, "propose", "rotate-key", "--key", "demo", NULL), 0);
    field("action", id, sizeof(id));
    assert_string_equal(field("type", v, sizeof(v)), "RotateKey");
    assert_string_equal(field("key", v, sizeof(v)), "demo");
    assert_string_equal(field("digest_check", v, sizeof(v)), "verified");

    /* show-action decodes the canonical bytes. */
    assert_int_equal(kmsctl("--config", O2, "show-action", id, NULL), 0);
    assert_string_equal(field("state", v, sizeof(v)), "PENDING");
    assert_string_equal(field("proposer", v, sizeof(v)), "officer1");
    /* Without a terminal and without --yes: refused, nothing sent. */
    assert_int_equal(kmsctl("--config", O1, "approve", id, NULL), 2);
    assert_non_null(strstr(ERR, "--yes"));
    assert_int_equal(kmsctl("--config", O1, "approve", id, "--yes", NULL), 0);
    assert_string_equal(field("approvals", v, sizeof(v)), "1");
    /* A second approval by the same officer: 7, nothing changes. */
    assert_int_equal(kmsctl("--config", O1, "approve", id, "--yes", NULL), 7);
    /* officer3 signing with officer1's key: the signature is refused (6). */
    assert_int_equal(kmsctl("--config", O3, "approve", id, "--yes", NULL), 6);
    /* Non-officers: denied (3). */
    assert_int_equal(kmsctl("--config", APP, "propose", "rotate-key", "--key", "demo", NULL), 3);
    assert_int_equal(kmsctl("--config", APP, "show-action", id, NULL), 3);
    assert_int_equal(kmsctl("--config", O2, "show-action", id, NULL), 0);
    assert_string_equal(field("approvals", v, sizeof(v)), "1");
    /* The second officer's approval executes it. */
    assert_int_equal(kmsctl("--config", O2, "--json", "approve", id, "--yes", NULL), 0);
    assert_non_null(strstr(OUT, "\"state\":\"EXECUTED\""));
    assert_non_null(strstr(OUT, "version 2 is primary"));
    assert_int_equal(kmsctl("--config", APP, "--json", "describe-key", "demo", NULL), 0);
    assert_non_null(strstr(OUT, "\"primary_version\":2"));
    assert_int_equal(kmsctl("--config", O2, "actions", NULL), 0);
    assert_non_null(strstr(OUT, id));
    assert_non_null(strstr(OUT, "EXECUTED"));
}

static void propose_errors_and_cancel(void **state)
{
    (void)state;
    char id[64], v[64];
    assert_int_equal(kmsctl("--config", O1, "propose", "set-threshold", "--action", "RotateKey",
                            "--threshold", "1", NULL),
                     6);
    assert_int_equal(kmsctl("--config", O1, "propose", "rotate-key", "--key", "nope", NULL), 4);
    assert_int_equal(kmsctl("--config", O1, "propose", "frobnicate", NULL), 2);
    assert_int_equal(kmsctl("--config", O1, "propose", "rotate-key", NULL), 2);
    assert_int_equal(kmsctl("--config", O1, "show-action", "xyz", NULL), 2);
    assert_int_equal(
        kmsctl("--config", O1, "show-action", "00000000000000000000000000000000", NULL), 4);
    assert_int_equal(
        kmsctl("--config", O1, "propose", "schedule-key-deletion", "--key", "second", NULL), 0);
    field("action", id, sizeof(id));
    assert_string_equal(field("pending_window_days", v, sizeof(v)), "30"); /* default filled */
    assert_int_equal(kmsctl("--config", O2, "cancel", id, NULL), 3);       /* not the proposer */
    assert_int_equal(kmsctl("--config", O1, "cancel", id, NULL), 0);
    assert_string_equal(field("state", v, sizeof(v)), "CANCELLED");
    assert_int_equal(kmsctl("--config", O2, "approve", id, "--yes", NULL), 7);
    assert_int_equal(kmsctl("--config", O1, "actions", "--pending", NULL), 0);
    assert_null(strstr(OUT, id));
}

/* An officer whose signing key is on a PKCS#11 token. */
static void pkcs11_signing_key(void **state)
{
    (void)state;
    const char *tool = getenv("KMS_PKCS11_TOOL");
    assert_non_null(tool);
    char der[400], pem[400], out[8192], id[64], v[64];
    path_in(der, sizeof(der), "bob-pub.der");
    path_in(pem, sizeof(pem), "bob-pub.pem");
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
    assert_int_equal(kmsctl("--config", O1, "propose", "add-officer", "--id", "bob", "--identity",
                            KMS_TEST_BOB_ID, "--signing-key-pub", pem, NULL),
                     0);
    field("action", id, sizeof(id));
    assert_int_equal(kmsctl("--config", O1, "approve", id, "--yes", NULL), 0);
    assert_int_equal(kmsctl("--config", O2, "approve", id, "--yes", NULL), 0);
    assert_string_equal(field("state", v, sizeof(v)), "EXECUTED");

    /* bob proposes and approves with the key on the token, officer2 completes. */
    char uri[300];
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=bob-sign;type=private?pin-value=%s",
             K.token.label, KMS_TEST_USER_PIN);
    setenv("KMS_PKCS11_MODULE", K.token.module, 1);
    assert_int_equal(kmsctl("--config", BOB, "propose", "rotate-key", "--key", "second", NULL), 0);
    field("action", id, sizeof(id));
    assert_int_equal(kmsctl("--config", BOB, "approve", id, "--yes", "--signing-key", uri, NULL),
                     0);
    assert_string_equal(field("approvals", v, sizeof(v)), "1");
    assert_int_equal(kmsctl("--config", O2, "approve", id, "--yes", NULL), 0);
    assert_string_equal(field("state", v, sizeof(v)), "EXECUTED");
    /* A wrong PIN signs nothing. */
    assert_int_equal(kmsctl("--config", BOB, "propose", "rotate-key", "--key", "second", NULL), 0);
    field("action", id, sizeof(id));
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=bob-sign;type=private?pin-value=0000",
             K.token.label);
    assert_int_not_equal(
        kmsctl("--config", BOB, "approve", id, "--yes", "--signing-key", uri, NULL), 0);
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
