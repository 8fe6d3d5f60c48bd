/* `kmsd init` (the key ceremony) and kmsd's command line, on real parts:
 * the SoftHSM2 token, the SQLite file, certificates from scripts/dev-pki.
 * Every refusal names its reason and writes nothing a later `run` would
 * serve; a ceremony made from flags alone serves its key. */
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

#include "group_run.h"
#include "grpc_test_client.h"
#include "kmsd/store/store.h"
#include "kms/v1/kms.pb-c.h"
#include "kmsd_fixture.h"

static kms_test_kmsd K;
static char out[65536];

static int group_setup(void **state)
{
    (void)state;
    grpc_init();
    kms_test_kmsd_setup(&K); /* token, PKI, config, and one init on kms.db */
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    kms_test_kmsd_teardown(&K);
    kms_tc_grpc_shutdown();
    return 0;
}

static char *path(const char *file)
{
    static char bufs[8][400];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof(bufs[0]), "%s/%s", K.token.dir, file);
    return b;
}

static char *pki(const char *file)
{
    static char bufs[8][400];
    static int next;
    char *b = bufs[next++ % 8];
    return (char *)kms_test_kmsd_pki(&K, file, b, sizeof(bufs[0]));
}

/* "officerI,spiffe://kms.local/officerI,PKI/officerI<suffix>" */
static char *officer(int i, const char *suffix)
{
    static char bufs[8][600];
    static int next;
    char *b = bufs[next++ % 8];
    char f[64];
    snprintf(f, sizeof(f), "officer%d%s", i, suffix);
    snprintf(b, sizeof(bufs[0]), "officer%d,spiffe://kms.local/officer%d,%s", i, i, pki(f));
    return b;
}

/* Runs kmsd --config CONFIG --database DB ARGS... init; returns its status. */
static int init_with(const char *db, const char *const *args)
{
    const char *argv[40];
    size_t n = 0;
    argv[n++] = "--config";
    argv[n++] = K.config;
    argv[n++] = "--database";
    argv[n++] = path(db);
    for (size_t i = 0; args && args[i]; i++)
        argv[n++] = args[i];
    argv[n++] = "init";
    argv[n] = NULL;
    return kms_test_kmsd_run(argv, out, sizeof(out));
}

static void expect_refused(const char *db, const char *const *args, const char *reason)
{
    int st = init_with(db, args);
    if (st == 0 || strstr(out, reason) == NULL)
        fail_msg("init should fail with \"%s\"; status %d, output:\n%s", reason, st, out);
}

static int count_officers(void *ctx, const kms_officer_rec *o)
{
    (void)o;
    (*(int *)ctx)++;
    return 0;
}

static int count_keys(void *ctx, const kms_key_rec *k)
{
    (void)k;
    (*(int *)ctx)++;
    return 0;
}

/* Officers and keys in a database file (0/0 if it was never created). */
static void contents(const char *db, int *officers, int *keys)
{
    kms_store *s = NULL;
    *officers = *keys = 0;
    if (access(path(db), F_OK) != 0)
        return;
    assert_int_equal(kms_store_sqlite_open(path(db), &s), KMS_OK);
    assert_int_equal(s->ops->officer_list(s, count_officers, officers), KMS_OK);
    assert_int_equal(s->ops->key_list(s, count_keys, keys), KMS_OK);
    s->ops->close(s);
}

static void ceremony_from_the_config_file(void **state)
{
    (void)state;
    int officers, keys;
    contents("kms.db", &officers, &keys);
    assert_int_equal(officers, 3);
    assert_int_equal(keys, 4);
    kms_store *s = NULL;
    uint32_t t = 0;
    assert_int_equal(kms_store_sqlite_open(K.db, &s), KMS_OK);
    assert_int_equal(s->ops->threshold_get(s, "RotateKey", &t), KMS_OK);
    assert_int_equal(t, 2); /* default */
    assert_int_equal(s->ops->threshold_get(s, "RemoveOfficer", &t), KMS_OK);
    assert_int_equal(t, 3); /* explicit */
    assert_int_equal(s->ops->threshold_get(s, "SetThreshold", &t), KMS_OK);
    s->ops->close(s);
}

static void init_runs_once(void **state)
{
    (void)state;
    expect_refused("kms.db", NULL, "already initialised");
    int officers, keys;
    contents("kms.db", &officers, &keys);
    assert_int_equal(officers, 3);
    assert_int_equal(keys, 4);
}

static void threshold_of_one_refused(void **state)
{
    (void)state;
    const char *a[] = {"--threshold", "1", NULL};
    expect_refused("t1.db", a, "threshold 1 for default refused");
    assert_non_null(strstr(out, "no officer ever acts alone"));
    const char *b[] = {"--threshold", "RotateKey=1", NULL};
    expect_refused("t1.db", b, "threshold 1 for RotateKey refused");
    const char *c[] = {"--threshold", "RotateKey=0", NULL};
    expect_refused("t1.db", c, "threshold 0 for RotateKey refused");
    int officers, keys;
    contents("t1.db", &officers, &keys);
    assert_int_equal(officers + keys, 0); /* nothing written */
}

static void impossible_thresholds_refused(void **state)
{
    (void)state;
    const char *a[] = {"--threshold", "RotateKey=4", NULL};
    expect_refused("t2.db", a, "more than the 3 officers");
    const char *b[] = {"--threshold", "Bogus=2", NULL};
    expect_refused("t2.db", b, "unknown action type Bogus");
    const char *c[] = {"--officer", officer(1, "-signing-pub.pem"), NULL};
    expect_refused("t2.db", c, "at least 2 officers");
    int officers, keys;
    contents("t2.db", &officers, &keys);
    assert_int_equal(officers + keys, 0);
}

static void bad_officers_refused(void **state)
{
    (void)state;
    /* Three officers each time, so the config's RemoveOfficer: 3 fits. */
    const char *priv[] = {
        "--officer", officer(1, "-signing-key.pem"), "--officer", officer(2, "-signing-pub.pem"),
        "--officer", officer(3, "-signing-pub.pem"), NULL};
    expect_refused("t3.db", priv, "holds a private key");
    const char *notkey[] = {"--officer", officer(1, ".pem"),
                            "--officer", officer(2, "-signing-pub.pem"),
                            "--officer", officer(3, "-signing-pub.pem"),
                            NULL};
    expect_refused("t3.db", notkey, "is not a PEM public key");
    const char *twice[] = {"--officer", officer(1, "-signing-pub.pem"), "--officer",
                           officer(1, "-signing-pub.pem"), NULL};
    expect_refused("t3.db", twice, "listed twice");
    const char *bad_spec[] = {"--officer", "only-an-id", NULL};
    assert_int_equal(init_with("t3.db", bad_spec), 2); /* a usage error */
    assert_non_null(strstr(out, "ID,IDENTITY,PUBLIC_KEY_PEM_FILE"));
    int officers, keys;
    contents("t3.db", &officers, &keys);
    assert_int_equal(officers + keys, 0);
}

static void officer_in_a_policy_refused(void **state)
{
    (void)state;
    const char *a[] = {"--create-key", "k", "--allow-decrypt", "spiffe://kms.local/officer2", NULL};
    expect_refused("t4.db", a, "separation of duties");
    const char *b[] = {"--create-key", "/bad", NULL};
    expect_refused("t4.db", b, "key name");
    const char *c[] = {"--allow-encrypt", "x", NULL};
    assert_int_equal(init_with("t4.db", c), 2);
    assert_non_null(strstr(out, "needs a --create-key before it"));
    int officers, keys;
    contents("t4.db", &officers, &keys);
    assert_int_equal(officers + keys, 0);
}

static int collect_auditor(void *ctx, const kms_auditor_rec *a)
{
    char *buf = ctx;
    size_t n = strlen(buf);
    snprintf(buf + n, 4096 - n, "%s;", a->identity);
    return 0;
}

/* The fixture's config names one auditor; --auditor replaces the list, and
 * an officer, a repeated identity or one a key grants is refused. */
static void auditors_at_init(void **state)
{
    (void)state;
    char got[4096] = "";
    kms_store *s = NULL;
    assert_int_equal(kms_store_sqlite_open(K.db, &s), KMS_OK);
    assert_int_equal(s->ops->auditor_list(s, collect_auditor, got), KMS_OK);
    s->ops->close(s);
    assert_string_equal(got, KMS_TEST_AUDITOR_ID ";");

    const char *officer_too[] = {"--auditor", "spiffe://kms.local/officer2", NULL};
    expect_refused("t6.db", officer_too, "the roles stay apart");
    const char *twice[] = {"--auditor", "spiffe://x/a", "--auditor", "spiffe://x/a", NULL};
    expect_refused("t6.db", twice, "auditor spiffe://x/a is listed twice");
    const char *granted[] = {
        "--auditor", "spiffe://x/a", "--create-key", "k", "--allow-encrypt", "spiffe://x/a", NULL};
    expect_refused("t6.db", granted, "key k grants auditor spiffe://x/a");
    int officers, keys;
    contents("t6.db", &officers, &keys);
    assert_int_equal(officers + keys, 0);

    const char *two[] = {"--auditor", "spiffe://x/a", "--auditor", "spiffe://x/b", NULL};
    assert_int_equal(init_with("t7.db", two), 0);
    assert_non_null(strstr(out, "auditor registered: spiffe://x/b"));
    got[0] = '\0';
    assert_int_equal(kms_store_sqlite_open(path("t7.db"), &s), KMS_OK);
    assert_int_equal(s->ops->auditor_list(s, collect_auditor, got), KMS_OK);
    s->ops->close(s);
    assert_string_equal(got, "spiffe://x/a;spiffe://x/b;"); /* the file's auditor replaced */
}

/* The ceremony from flags alone (what a client-library test would run),
 * then `kmsd run` on it serves the key to the granted identity only. */
static void ceremony_from_flags_serves_its_key(void **state)
{
    (void)state;
    const char *a[] = {"--officer",
                       officer(1, "-signing-pub.pem"),
                       "--officer",
                       officer(2, "-signing-pub.pem"),
                       "--threshold",
                       "2",
                       "--threshold",
                       "RemoveOfficer=2",
                       "--create-key",
                       "flagkey",
                       "--allow-encrypt",
                       KMS_TEST_APP_ID,
                       "--allow-decrypt",
                       KMS_TEST_APP_ID,
                       "--create-key",
                       "other",
                       NULL};
    int st = init_with("flags.db", a);
    if (st != 0)
        fail_msg("init from flags failed (%d):\n%s", st, out);
    assert_non_null(strstr(out, "key flagkey created"));
    assert_non_null(strstr(out, "officer officer2 registered"));
    int officers, keys;
    contents("flags.db", &officers, &keys);
    assert_int_equal(officers, 2);
    assert_int_equal(keys, 2);

    const char *extra[] = {"--database", path("flags.db"), "--listen", "127.0.0.1:0", NULL};
    kms_test_kmsd_start(&K, extra);
    kms_tc *c = NULL;
    assert_int_equal(kms_tc_open(K.target, pki("ca.pem"), pki("app.pem"), pki("app-key.pem"), &c),
                     0);
    Kms__V1__EncryptRequest req = KMS__V1__ENCRYPT_REQUEST__INIT;
    req.key_name = "flagkey";
    req.plaintext.data = (uint8_t *)"x";
    req.plaintext.len = 1;
    assert_int_equal(
        kms_tc_call(c, "/kms.v1.KeyManagement/Encrypt", &req.base, NULL, NULL, NULL, 0),
        GRPC_STATUS_OK);
    req.key_name = "other"; /* a key with an empty policy */
    assert_int_equal(
        kms_tc_call(c, "/kms.v1.KeyManagement/Encrypt", &req.base, NULL, NULL, NULL, 0),
        GRPC_STATUS_PERMISSION_DENIED);
    req.key_name = "demo"; /* not in this database: answered as a key with no rights */
    assert_int_equal(
        kms_tc_call(c, "/kms.v1.KeyManagement/Encrypt", &req.base, NULL, NULL, NULL, 0),
        GRPC_STATUS_PERMISSION_DENIED);
    kms_tc_close(c);
    assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
}

/* `run` refuses what it must not serve; the command line is checked. */
static void run_refusals_and_usage(void **state)
{
    (void)state;
    const char *missing[] = {"--config", K.config, "--database", path("absent.db"), "run", NULL};
    assert_int_equal(kms_test_kmsd_run(missing, out, sizeof(out)), 1);
    assert_non_null(strstr(out, "does not exist"));
    assert_int_equal(access(path("absent.db"), F_OK), -1); /* not created by run */

    /* t1.db exists (the refused inits opened it) but has no officers. */
    const char *uninit[] = {"--config", K.config, "--database", path("t1.db"), "run", NULL};
    assert_int_equal(kms_test_kmsd_run(uninit, out, sizeof(out)), 1);
    assert_non_null(strstr(out, "not initialised"));

    /* Mutual TLS is mandatory: no TLS settings, no run. */
    FILE *f = fopen(path("notls.yaml"), "w");
    assert_non_null(f);
    fprintf(f, "database: kms.db\npkcs11: {module: %s, token_label: %s, pin_file: pin}\n",
            K.token.module, K.token.label);
    fclose(f);
    const char *notls[] = {"--config", path("notls.yaml"), "run", NULL};
    assert_int_equal(kms_test_kmsd_run(notls, out, sizeof(out)), 2);
    assert_non_null(strstr(out, "mutual TLS is mandatory"));

    f = fopen(path("typo.yaml"), "w");
    assert_non_null(f);
    fprintf(f, "listen: 127.0.0.1:0\nworkerz: 4\n");
    fclose(f);
    const char *typo[] = {"--config", path("typo.yaml"), "run", NULL};
    assert_int_equal(kms_test_kmsd_run(typo, out, sizeof(out)), 2);
    assert_non_null(strstr(out, "line 2: unknown setting workerz"));

    const char *badnum[] = {"--config", K.config, "--workers", "lots", "run", NULL};
    assert_int_equal(kms_test_kmsd_run(badnum, out, sizeof(out)), 2);
    assert_non_null(strstr(out, "workers"));
    const char *nocmd[] = {"--config", K.config, NULL};
    assert_int_equal(kms_test_kmsd_run(nocmd, out, sizeof(out)), 2);
    assert_non_null(strstr(out, "usage: kmsd"));
    const char *unknown[] = {"--frobnicate", "run", NULL};
    assert_int_equal(kms_test_kmsd_run(unknown, out, sizeof(out)), 2);
    const char *help[] = {"--help", NULL};
    assert_int_equal(kms_test_kmsd_run(help, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "--allow-reencrypt"));
}

/* ---- the state-integrity key ---------------------------------------------------------- */

#define STATE_KEY_LABEL "kms-state-integrity"

/* How many objects on the token carry the state key's label, by the
 * token's own view (pkcs11-tool); *access gets the first one's "Access:"
 * line. */
static int state_keys_on_token(char *access, size_t cap)
{
    static char listing[1 << 16];
    assert_int_equal(kms_test_token_list_objects(&K.token, listing, sizeof(listing)), 0);
    int n = 0;
    for (const char *p = listing; (p = strstr(p, STATE_KEY_LABEL)) != NULL; p++)
        n++;
    const char *at = strstr(listing, STATE_KEY_LABEL);
    if (access != NULL && at != NULL && (at = strstr(at, "Access:")) != NULL) {
        at += strlen("Access:");
        while (*at == ' ')
            at++;
        size_t len = strcspn(at, "\n");
        snprintf(access, cap, "%.*s", (int)len, at);
    }
    return n;
}

/* A logged-in RW session on the test token, in this process. */
static CK_FUNCTION_LIST_PTR token_session(CK_SESSION_HANDLE *s)
{
    CK_SLOT_ID slot;
    CK_FUNCTION_LIST_PTR m = kms_test_token_functions(&K.token, &slot);
    assert_non_null(m);
    assert_int_equal(m->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, s),
                     CKR_OK);
    CK_RV rv =
        m->C_Login(*s, CKU_USER, (CK_UTF8CHAR_PTR)KMS_TEST_USER_PIN, strlen(KMS_TEST_USER_PIN));
    assert_true(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN);
    return m;
}

/* Removes the state key from the token, as on a token that predates it. */
static void remove_state_key(void)
{
    CK_SESSION_HANDLE s;
    CK_FUNCTION_LIST_PTR m = token_session(&s);
    static const char id[] = STATE_KEY_LABEL;
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_ID, (void *)id, sizeof(id) - 1}};
    CK_OBJECT_HANDLE h[4];
    CK_ULONG n = 0;
    assert_int_equal(m->C_FindObjectsInit(s, t, 2), CKR_OK);
    assert_int_equal(m->C_FindObjects(s, h, 4, &n), CKR_OK);
    assert_int_equal(m->C_FindObjectsFinal(s), CKR_OK);
    for (CK_ULONG i = 0; i < n; i++)
        assert_int_equal(m->C_DestroyObject(s, h[i]), CKR_OK);
    m->C_CloseSession(s);
}

/* Puts an extractable generic secret under the state key's id. */
static void plant_unsafe_state_key(void)
{
    CK_SESSION_HANDLE s;
    CK_FUNCTION_LIST_PTR m = token_session(&s);
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_GENERIC_SECRET;
    CK_ULONG len = 32;
    CK_BBOOL yes = CK_TRUE;
    static const char id[] = STATE_KEY_LABEL;
    CK_ATTRIBUTE t[] = {
        {CKA_CLASS, &cls, sizeof(cls)},       {CKA_KEY_TYPE, &type, sizeof(type)},
        {CKA_VALUE_LEN, &len, sizeof(len)},   {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_PRIVATE, &yes, sizeof(yes)},     {CKA_SENSITIVE, &yes, sizeof(yes)},
        {CKA_EXTRACTABLE, &yes, sizeof(yes)}, {CKA_SIGN, &yes, sizeof(yes)},
        {CKA_ID, (void *)id, sizeof(id) - 1}, {CKA_LABEL, (void *)id, sizeof(id) - 1},
    };
    CK_MECHANISM mech = {CKM_GENERIC_SECRET_KEY_GEN, NULL, 0};
    CK_OBJECT_HANDLE h;
    assert_int_equal(m->C_GenerateKey(s, &mech, t, sizeof(t) / sizeof(t[0]), &h), CKR_OK);
    m->C_CloseSession(s);
}

/* `kmsd init` made one safe state-integrity key on the token; `seal-state`
 * refuses to make a second; a token without one (a database from before)
 * is sealed once by `seal-state`, trust on first use; an unsafe object
 * under its id stops `run` before it serves, and is never replaced. */
static void state_integrity_key(void **state)
{
    (void)state;
    char access[200] = "";
    assert_int_equal(state_keys_on_token(access, sizeof(access)), 1);
    assert_string_equal(access, "sensitive, always sensitive, never extractable, local");

    const char *seal[] = {"--config", K.config, "seal-state", NULL};
    int st = kms_test_kmsd_run(seal, out, sizeof(out));
    if (st != 1 || strstr(out, "already holds a state-integrity key") == NULL)
        fail_msg("seal-state on a sealed token: status %d, output:\n%s", st, out);
    assert_int_equal(state_keys_on_token(NULL, 0), 1);

    /* Not on a database that was never initialised. */
    remove_state_key();
    const char *uninit[] = {"--config", K.config, "--database", path("t1.db"), "seal-state", NULL};
    assert_int_equal(kms_test_kmsd_run(uninit, out, sizeof(out)), 1);
    assert_non_null(strstr(out, "not initialised"));
    assert_int_equal(state_keys_on_token(NULL, 0), 0);

    st = kms_test_kmsd_run(seal, out, sizeof(out));
    if (st != 0 || strstr(out, "trust on first use") == NULL)
        fail_msg("seal-state on an unsealed database: status %d, output:\n%s", st, out);
    assert_int_equal(state_keys_on_token(access, sizeof(access)), 1);
    assert_string_equal(access, "sensitive, always sensitive, never extractable, local");
    assert_int_equal(kms_test_kmsd_run(seal, out, sizeof(out)), 1);

    /* An extractable object under the state key's id: run refuses to serve,
     * naming the attribute; seal-state does not replace it. */
    remove_state_key();
    plant_unsafe_state_key();
    const char *run[] = {"--config", K.config, "run", NULL};
    st = kms_test_kmsd_run(run, out, sizeof(out));
    if (st != 1 || strstr(out, "CKA_EXTRACTABLE is TRUE") == NULL)
        fail_msg("run with an unsafe state key: status %d, output:\n%s", st, out);
    assert_int_equal(kms_test_kmsd_run(seal, out, sizeof(out)), 1);
    assert_int_equal(state_keys_on_token(NULL, 0), 1);
    remove_state_key();
    assert_int_equal(kms_test_kmsd_run(seal, out, sizeof(out)), 0);
    assert_int_equal(state_keys_on_token(NULL, 0), 1);
}

/* ---- one kmsd per database, one per port ------------------------------------------- */

/* kmsd ARGS... under timeout(1), so that a kmsd that should have been
 * refused but serves ends the test (status 124) instead of hanging it. */
static int kmsd_bounded(const char *const *args)
{
    const char *kmsd = getenv("KMS_KMSD");
    assert_non_null(kmsd);
    char *argv[40];
    size_t n = 0;
    argv[n++] = "/usr/bin/timeout";
    argv[n++] = "20";
    argv[n++] = (char *)kmsd;
    for (size_t i = 0; args[i] != NULL && n < 39; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    return kms_test_run(argv, out, sizeof(out));
}

/* While a kmsd serves kms.db: a second `run` (another port), `init` and
 * `seal-state` on that file are refused, naming the first one's pid; a
 * second kmsd on its port (another database) fails to bind instead of
 * sharing the port. Once the first stops, the file is free again. */
static void one_kmsd_per_database_and_port(void **state)
{
    (void)state;
    assert_int_equal(init_with("second.db", NULL), 0);
    kms_test_kmsd_start(&K, NULL);
    char pid[64];
    snprintf(pid, sizeof(pid), "pid %ld", (long)K.pid);

    const char *again[] = {"--config", K.config, "--listen", "127.0.0.1:0", "run", NULL};
    int st = kmsd_bounded(again);
    if (st != 1 || strstr(out, "in use by another kmsd") == NULL || strstr(out, pid) == NULL)
        fail_msg("second kmsd on kms.db: status %d (want 1, naming %s), output:\n%s", st, pid, out);
    const char *seal[] = {"--config", K.config, "seal-state", NULL};
    st = kmsd_bounded(seal);
    if (st != 1 || strstr(out, pid) == NULL)
        fail_msg("seal-state on a served kms.db: status %d, output:\n%s", st, out);

    const char *port[] = {"--config", K.config, "--database", path("second.db"),
                          "--listen", K.target, "run",        NULL};
    st = kmsd_bounded(port);
    if (st != 1 || strstr(out, "cannot listen on") == NULL)
        fail_msg("second kmsd on port %d: status %d (want 1, cannot listen), output:\n%s", K.port,
                 st, out);

    assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
    kms_test_kmsd_start(&K, NULL); /* the lock went with the first one */
    assert_int_equal(kms_test_kmsd_stop(&K, SIGKILL), 128 + SIGKILL);
    kms_test_kmsd_start(&K, NULL); /* and with one that was killed */
    assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ceremony_from_the_config_file),
        cmocka_unit_test(init_runs_once),
        cmocka_unit_test(threshold_of_one_refused),
        cmocka_unit_test(impossible_thresholds_refused),
        cmocka_unit_test(bad_officers_refused),
        cmocka_unit_test(officer_in_a_policy_refused),
        cmocka_unit_test(auditors_at_init),
        cmocka_unit_test(ceremony_from_flags_serves_its_key),
        cmocka_unit_test(run_refusals_and_usage),
        cmocka_unit_test(state_integrity_key),
        cmocka_unit_test(one_kmsd_per_database_and_port),
    };
    return KMS_RUN_GROUP(tests, group_setup, group_teardown);
}
