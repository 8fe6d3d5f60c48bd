/* kmsctl's officer commands against a real kmsd (mutual TLS, SoftHSM2,
 * SQLite): keygen, propose, show-action, approve (with --yes, refused
 * without a terminal), actions, cancel; the digest is recomputed before
 * signing; exit codes for a second approval, another officer's key and a
 * non-officer; and an officer whose signing key lives on a PKCS#11 token
 * (SoftHSM2, through OpenSSL's pkcs11 engine). What an officer sees is what
 * they sign: approve shows the decoded action, the instance id and the
 * digest before signing (--json too, on stderr), refuses another kmsd's
 * instance id when one is pinned, and refuses bytes it cannot fully show
 * (unknown fields, non-canonical encodings: written into the database
 * here, with a matching digest, as a hostile server could serve them);
 * every string is shown escaped. */
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
#include <sqlite3.h>

#include "base/approval.h"
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
    /* serve_body plays a hostile server by rewriting an action's bytes
     * under the running kmsd, which a real kmsd refuses (its rows no longer
     * verify); a test kmsd lets it through so that kmsctl's own checks are
     * what is tested here. */
    setenv("KMS_TEST_NO_STATE_GUARD", "1", 1);
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

/* ---- what an officer sees is what they sign --------------------------------------------- */

static void unhex(const char *hex, uint8_t *out, size_t n)
{
    assert_int_equal(strlen(hex), 2 * n);
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        for (int j = 0; j < 2; j++) {
            char c = hex[2 * i + j];
            v = v * 16 + (unsigned)(c <= '9' ? c - '0' : c - 'a' + 10);
        }
        out[i] = (uint8_t)v;
    }
}

/* Proposes rotate-key demo as officer1; its id into id (33 bytes). */
static void propose_rotation(char *id)
{
    assert_int_equal(
        kms_test_kmsctl_l(&IO, "--config", O1, "propose", "rotate-key", "--key", "demo", NULL), 0);
    kms_test_field(OUT, "action", 1, id, 33);
}

/* Replaces the stored bytes of action id with body and stores their
 * digest, as a hostile or compromised server could serve them. */
static void serve_body(const char *id, const uint8_t *body, size_t len)
{
    char v[64];
    uint8_t aid[16], instance[16], digest[32];
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "show-action", id, NULL), 0);
    unhex(kms_test_field(OUT, "instance_id", 1, v, sizeof(v)), instance, 16);
    unhex(id, aid, 16);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(K.db, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT expires_at FROM actions WHERE id = ?", -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_blob(st, 1, aid, 16, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t expires = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    assert_int_equal(kms_approval_digest(instance, aid, body, len, expires, digest), 0);
    assert_int_equal(sqlite3_prepare_v2(db, "UPDATE actions SET body = ?, digest = ? WHERE id = ?",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_blob(st, 1, body, (int)len, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, digest, 32, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, aid, 16, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    assert_int_equal(sqlite3_changes(db), 1);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void approvals_are(const char *id, const char *n)
{
    char v[64];
    kms_test_kmsctl_l(&IO, "--config", O1, "show-action", id, NULL);
    assert_string_equal(kms_test_field(OUT, "approvals", 1, v, sizeof(v)), n);
}

static void approve_shows_and_pins_instance(void **state)
{
    (void)state;
    char id[33], instance[64], v[64], conf[400], text[2048];
    propose_rotation(id);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "show-action", id, NULL), 0);
    kms_test_field(OUT, "instance_id", 1, instance, sizeof(instance));
    assert_int_equal(strlen(instance), 32);

    /* --json: the review goes to stderr before signing, the result to stdout. */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O2, "--json", "approve", id, "--yes", NULL),
                     0);
    assert_string_equal(kms_test_field(ERR, "type", 0, v, sizeof(v)), "RotateKey");
    assert_string_equal(kms_test_field(ERR, "key", 0, v, sizeof(v)), "demo");
    assert_string_equal(kms_test_field(ERR, "instance_id", 0, v, sizeof(v)), instance);
    assert_string_equal(kms_test_field(ERR, "digest_check", 0, v, sizeof(v)), "verified");
    assert_non_null(strstr(OUT, "\"approvals\":1"));
    assert_int_equal(OUT[0], '{');

    /* Pinned to another instance: refused before signing, nothing sent. */
    kms_test_read_file(O1, text, sizeof(text));
    kms_test_path(conf, sizeof(conf), DIR_, "officer1-pinned.conf");
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f, "%sinstance_id: 0123456789abcdef0123456789abcdef\n", text);
    fclose(f);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", conf, "approve", id, "--yes", NULL), 1);
    assert_non_null(strstr(ERR, "instance_id"));
    assert_non_null(strstr(ERR, "refusing to sign"));
    approvals_are(id, "1");
    /* Not 32 hex digits: a configuration error. */
    f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f, "%sinstance_id: 0123\n", text);
    fclose(f);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", conf, "approve", id, "--yes", NULL), 2);
    /* Pinned to this one: signed, and the rotation executes. */
    f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f, "%sinstance_id: %s\n", text, instance);
    fclose(f);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", conf, "approve", id, "--yes", NULL), 0);
    assert_string_equal(kms_test_field(OUT, "state", 1, v, sizeof(v)), "EXECUTED");
}

static void approve_refuses_what_it_cannot_show(void **state)
{
    (void)state;
    /* RotateKey {key_name "demo", field 15 = 1}: re-encodes identically,
     * but carries a field no printer shows. */
    static const uint8_t unknown[] = {0x12, 0x08, 0x0a, 0x04, 'd', 'e', 'm', 'o', 0x78, 0x01};
    /* RotateKey with key_name twice: "evil" is signed, "demo" is shown. */
    static const uint8_t twice[] = {0x12, 0x0c, 0x0a, 0x04, 'e', 'v', 'i',
                                    'l',  0x0a, 0x04, 'd',  'e', 'm', 'o'};
    const struct {
        const uint8_t *b;
        size_t n;
    } bodies[] = {{unknown, sizeof(unknown)}, {twice, sizeof(twice)}};
    for (size_t i = 0; i < 2; i++) {
        char id[33];
        propose_rotation(id);
        serve_body(id, bodies[i].b, bodies[i].n);
        assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O2, "approve", id, "--yes", NULL), 1);
        assert_non_null(strstr(ERR, "refusing to sign"));
        assert_non_null(strstr(OUT, "UNDECODABLE"));
        approvals_are(id, "0");
        /* Cancelled (its bytes still shown as undecodable: exit 1). */
        assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "cancel", id, NULL), 1);
        assert_non_null(strstr(OUT, "CANCELLED"));
    }
}

static void strings_shown_escaped(void **state)
{
    (void)state;
    /* The server refuses control characters in any string of an action. */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "propose", "update-key-policy", "--key",
                                       "demo", "--decrypt", "spiffe://x/\x1b[2Kevil", NULL),
                     6);
    assert_non_null(strstr(ERR, "printable"));
    /* An action stored before that check (or served by a hostile kmsd):
     * UpdateKeyPolicy {key "demo", policy {decrypt [the identity]}}. */
    static const char hostile[] = "~\r\x1b[2Kpolicy.decrypt: spiffe://kms.local/app";
    uint8_t body[128];
    size_t h = sizeof(hostile) - 1, n = 0;
    body[n++] = 0x3a;
    body[n++] = (uint8_t)(6 + 4 + h);
    memcpy(body + n,
           "\x0a\x04"
           "demo",
           6);
    n += 6;
    body[n++] = 0x12;
    body[n++] = (uint8_t)(2 + h);
    body[n++] = 0x12;
    body[n++] = (uint8_t)h;
    memcpy(body + n, hostile, h);
    n += h;
    char id[33];
    propose_rotation(id);
    serve_body(id, body, n);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O2, "show-action", id, NULL), 0);
    assert_null(strchr(OUT, '\r'));
    assert_null(strchr(OUT, '\x1b'));
    assert_non_null(strstr(OUT, "policy.decrypt: ~\\x0d\\x1b[2Kpolicy.decrypt: spiffe://"));
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O2, "--json", "show-action", id, NULL), 0);
    assert_null(strchr(OUT, '\r'));
    assert_null(strchr(OUT, '\x1b'));
    assert_non_null(strstr(OUT, "~\\u000d\\u001b[2K"));
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", O1, "cancel", id, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keygen),
        cmocka_unit_test(rotate_with_two_officers),
        cmocka_unit_test(propose_errors_and_cancel),
        cmocka_unit_test(pkcs11_signing_key),
        cmocka_unit_test(approve_shows_and_pins_instance),
        cmocka_unit_test(approve_refuses_what_it_cannot_show),
        cmocka_unit_test(strings_shown_escaped),
    };
    return KMS_RUN_GROUP(tests, group_setup, group_teardown);
}
