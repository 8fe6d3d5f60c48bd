/* kmsd with its TPM2 backend on a real swtpm (and SoftHSM2 beside it),
 * driven through libkmsclient: keys created by quorum in sealed and
 * resident mode, data-plane round trips and negatives, rotation, a TPM
 * reset, the TPM stopped and restarted (and Health following it), and a
 * PCR-bound sealed key refused after the PCR changed while kmsd stays up.
 * Then a TPM-only kmsd (no PKCS#11 section) on a second swtpm: init, serve,
 * Health; and a configuration naming no backend, refused. */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "group_run.h"
#include "kms/client.h"
#include "kms/v1/kms.pb-c.h"
#include "kmsd_fixture.h"
#include "swtpm_fixture.h"

static kms_test_kmsd K;
static kms_test_swtpm T;
static kms_client *APP, *O1, *O2;
static const kms_client_context_entry CTX[] = {{"purpose", "tpm-test"}};

static kms_client *open_on(const kms_test_kmsd *k, const char *name)
{
    kms_test_creds cr;
    kms_test_kmsd_creds(k, name, &cr);
    kms_client_options o = {.target = k->target,
                            .ca_file = cr.ca,
                            .cert_file = cr.cert,
                            .key_file = cr.key,
                            .timeout_ms = 20000};
    kms_client *c = NULL;
    kms_client_error err;
    assert_int_equal(kms_client_open(&o, &c, &err), 0);
    return c;
}

static kms_client *open_as(const char *name)
{
    return open_on(&K, name);
}

static void start_kmsd(void)
{
    const char *extra[] = {"--tpm2-tcti", T.tcti, "--tpm2-pcrs", "17", NULL};
    kms_test_kmsd_start(&K, extra);
    APP = open_as("app");
    O1 = open_as("officer1");
    O2 = open_as("officer2");
}

static void stop_kmsd(void)
{
    kms_client_close(APP);
    kms_client_close(O1);
    kms_client_close(O2);
    APP = O1 = O2 = NULL;
    assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
}

static int group_setup(void **state)
{
    (void)state;
    setenv("TSS2_LOG", "all+none", 1);
    kms_test_swtpm_start(&T);
    kms_test_kmsd_setup(&K);
    /* The TPM lock beside this test's swtpm, not in /run/lock. */
    FILE *f = fopen(K.config, "a");
    assert_non_null(f);
    fprintf(f, "tpm2:\n  lock_dir: %s\n", T.dir);
    fclose(f);
    /* The database was made without a TPM: provision it now. */
    char out[4096];
    const char *argv[] = {"--config", K.config, "--tpm2-tcti", T.tcti, "tpm2-provision", NULL};
    if (kms_test_kmsd_run(argv, out, sizeof(out)) != 0)
        fail_msg("tpm2-provision: %s", out);
    start_kmsd();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    stop_kmsd();
    kms_test_kmsd_teardown(&K);
    kms_test_swtpm_destroy(&T);
    return 0;
}

/* Signs and approves as officer (1 or 2). */
static kms_client_action approve_as(kms_client *c, int officer, const kms_client_action *a)
{
    char name[64], path[400];
    snprintf(name, sizeof(name), "officer%d-signing-key.pem", officer);
    uint8_t sig[256];
    size_t n = sizeof(sig);
    kms_client_error err;
    assert_int_equal(kms_client_action_verify_digest(a), 0);
    assert_int_equal(kms_client_sign_digest(kms_test_kmsd_pki(&K, name, path, sizeof(path)),
                                            a->digest, sig, &n, &err),
                     0);
    kms_client_action done;
    if (kms_client_approve(c, a->id, sig, n, &done, &err) != 0)
        fail_msg("approve: %s", err.message);
    return done;
}

/* Proposes body (packed here) and approves it 2 of 3; returns the result. */
static void pass(Kms__V1__ActionBody *b, char *result, size_t cap)
{
    size_t len = protobuf_c_message_get_packed_size(&b->base);
    uint8_t buf[4096];
    assert_true(len <= sizeof(buf));
    protobuf_c_message_pack(&b->base, buf);
    kms_client_action a, d1, d2;
    kms_client_error err;
    if (kms_client_propose(O1, buf, len, &a, &err) != 0)
        fail_msg("propose: %s", err.message);
    d1 = approve_as(O1, 1, &a);
    d2 = approve_as(O2, 2, &a);
    if (d2.state != KMS_CLIENT_ACTION_EXECUTED)
        fail_msg("not executed: %s", d2.result);
    snprintf(result, cap, "%s", d2.result);
    kms_client_action_free(&a);
    kms_client_action_free(&d1);
    kms_client_action_free(&d2);
}

static void create_key(const char *name, const char *mode)
{
    char *ids[] = {KMS_TEST_APP_ID};
    Kms__V1__KeyPolicy pol = KMS__V1__KEY_POLICY__INIT;
    Kms__V1__CreateKey ck = KMS__V1__CREATE_KEY__INIT;
    Kms__V1__ActionBody b = KMS__V1__ACTION_BODY__INIT;
    pol.encrypt = pol.decrypt = pol.reencrypt = ids;
    pol.n_encrypt = pol.n_decrypt = pol.n_reencrypt = 1;
    ck.key_name = (char *)name;
    ck.backend = "tpm2";
    ck.backend_mode = (char *)mode;
    ck.policy = &pol;
    b.action_case = KMS__V1__ACTION_BODY__ACTION_CREATE_KEY;
    b.create_key = &ck;
    char res[300];
    pass(&b, res, sizeof(res));
    assert_non_null(strstr(res, "created"));
}

static int enc(const char *key, kms_client_result *out)
{
    kms_client_error err;
    static const uint8_t msg[] = "bound to the chip";
    return kms_client_encrypt(APP, key, msg, sizeof(msg), CTX, 1, out, &err);
}

static int dec(const kms_client_result *ct)
{
    kms_client_result pt;
    kms_client_error err;
    int r = kms_client_decrypt(APP, ct->blob, ct->blob_len, CTX, 1, &pt, &err);
    if (r == 0) {
        assert_memory_equal(pt.plaintext, "bound to the chip", 18);
        kms_client_result_free(&pt);
    }
    return r;
}

static void keys_on_the_tpm(void **state)
{
    (void)state;
    create_key("tpm-sealed", "sealed");
    create_key("tpm-resident", "resident");
    const char *names[] = {"tpm-sealed", "tpm-resident"}, *modes[] = {"sealed", "resident"};
    for (int i = 0; i < 2; i++) {
        kms_client_key k;
        kms_client_error err;
        assert_int_equal(kms_client_describe_key(APP, names[i], &k, &err), 0);
        assert_string_equal(k.backend, "tpm2");
        assert_string_equal(k.backend_mode, modes[i]);
        kms_client_key_free(&k);
        kms_client_result ct, dk, pt;
        assert_int_equal(enc(names[i], &ct), 0);
        assert_int_equal(dec(&ct), 0);
        assert_int_equal(
            kms_client_generate_data_key(APP, names[i], KMS_CLIENT_AES_256, CTX, 1, 0, &dk, &err),
            0);
        assert_int_equal(kms_client_decrypt(APP, dk.blob, dk.blob_len, CTX, 1, &pt, &err), 0);
        assert_memory_equal(pt.plaintext, dk.plaintext, 32);
        /* Negatives: wrong context, tampered, another key's id. */
        assert_int_equal(kms_client_decrypt(APP, ct.blob, ct.blob_len, NULL, 0, &pt, &err),
                         KMS_CLIENT_INVALID_ARGUMENT);
        ct.blob[ct.blob_len - 3] ^= 1;
        assert_int_equal(dec(&ct), KMS_CLIENT_INVALID_ARGUMENT);
        ct.blob[ct.blob_len - 3] ^= 1;
        ct.blob[3] ^= 1; /* no such key: answered as a key the caller has no rights on */
        assert_int_equal(dec(&ct), KMS_CLIENT_PERMISSION_DENIED);
        ct.blob[3] ^= 1;
        /* ReEncrypt between the HSM and the TPM. */
        kms_client_result moved, back;
        assert_int_equal(
            kms_client_reencrypt(APP, ct.blob, ct.blob_len, CTX, 1, "demo", CTX, 1, &moved, &err),
            0);
        assert_int_equal(kms_client_reencrypt(APP, moved.blob, moved.blob_len, CTX, 1, names[i],
                                              CTX, 1, &back, &err),
                         0);
        assert_int_equal(dec(&back), 0);
        kms_client_result_free(&ct);
        kms_client_result_free(&dk);
        kms_client_result_free(&pt);
        kms_client_result_free(&moved);
        kms_client_result_free(&back);
    }
}

static void rotation(void **state)
{
    (void)state;
    const char *names[] = {"tpm-sealed", "tpm-resident"};
    for (int i = 0; i < 2; i++) {
        kms_client_result v1, v2;
        assert_int_equal(enc(names[i], &v1), 0);
        Kms__V1__RotateKey rk = KMS__V1__ROTATE_KEY__INIT;
        Kms__V1__ActionBody b = KMS__V1__ACTION_BODY__INIT;
        rk.key_name = (char *)names[i];
        b.action_case = KMS__V1__ACTION_BODY__ACTION_ROTATE_KEY;
        b.rotate_key = &rk;
        char res[300];
        pass(&b, res, sizeof(res));
        assert_non_null(strstr(res, "version 2"));
        assert_int_equal(enc(names[i], &v2), 0);
        assert_int_equal(v2.key_version, 2);
        assert_int_equal(dec(&v1), 0);
        assert_int_equal(dec(&v2), 0);
        kms_client_result_free(&v1);
        kms_client_result_free(&v2);
    }
}

static void reset_stop_restart(void **state)
{
    (void)state;
    kms_client_result ct, ct2;
    kms_client_error err;
    assert_int_equal(enc("tpm-resident", &ct), 0);
    kms_test_swtpm_reset(&T);
    assert_int_equal(dec(&ct), 0); /* recovered: Startup again, same primary */
    kms_test_swtpm_stop(&T);
    assert_int_equal(enc("tpm-resident", &ct2), KMS_CLIENT_UNAVAILABLE);
    assert_int_equal(dec(&ct), KMS_CLIENT_UNAVAILABLE);
    assert_int_equal(kms_client_health(APP, "", &err), 0); /* kmsd itself is up */
    kms_test_swtpm_resume(&T);
    int r = -1;
    for (int i = 0; i < 50 && r != 0; i++) {
        r = dec(&ct);
        if (r != 0)
            usleep(100 * 1000);
    }
    assert_int_equal(r, 0);
    kms_client_result_free(&ct);
}

/* Readiness follows every configured backend: while the swtpm is stopped,
 * Health for kms.v1.KeyManagement answers NOT_SERVING although PKCS#11 is
 * fine (and the server itself, "", stays SERVING); once the swtpm is back,
 * SERVING again without restarting kmsd (the TPM backend reconnects). */
static void health_follows_the_tpm(void **state)
{
    (void)state;
    kms_client_error err;
    kms_client_result ct;
    assert_int_equal(kms_client_health(APP, "kms.v1.KeyManagement", &err), 0);
    kms_test_swtpm_stop(&T);
    assert_int_equal(kms_client_health(APP, "kms.v1.KeyManagement", &err), KMS_CLIENT_UNAVAILABLE);
    assert_int_equal(kms_client_health(APP, "", &err), 0);
    assert_int_equal(enc("demo", &ct), 0); /* the HSM still serves its keys */
    kms_client_result_free(&ct);
    assert_int_equal(kms_client_health(APP, "kms.v1.KeyManagement", &err),
                     KMS_CLIENT_UNAVAILABLE); /* still down: not a one-off answer */
    kms_test_swtpm_resume(&T);
    int r = -1;
    for (int i = 0; i < 50 && r != 0; i++) {
        r = kms_client_health(APP, "kms.v1.KeyManagement", &err);
        if (r != 0)
            usleep(100 * 1000);
    }
    assert_int_equal(r, 0);
    assert_int_equal(enc("tpm-resident", &ct), 0);
    assert_int_equal(dec(&ct), 0);
    kms_client_result_free(&ct);
}

/* One kms process per TPM: while kmsd serves, `kmsd tpm2-provision` on the
 * same TPM is refused, naming the holder, also when the TCTI is spelt
 * another way; kmsd keeps serving. */
static void second_process_refused(void **state)
{
    (void)state;
    char out[4096], other[128];
    const char *argv[] = {"--config", K.config, "--tpm2-tcti", T.tcti, "tpm2-provision", NULL};
    assert_int_not_equal(kms_test_kmsd_run(argv, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "in use by another kms process (pid "));
    snprintf(other, sizeof(other), "mssim:port=%d,host=localhost", T.port);
    argv[3] = other;
    assert_int_not_equal(kms_test_kmsd_run(argv, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "in use by another kms process (pid "));
    kms_client_error err;
    assert_int_equal(kms_client_health(APP, "", &err), 0);
    kms_client_result r;
    assert_int_equal(enc("tpm-resident", &r), 0);
    assert_int_equal(dec(&r), 0);
    kms_client_result_free(&r);
}

static void pcr_bound_key(void **state)
{
    (void)state;
    kms_client_result sealed, resident;
    kms_client_error err;
    assert_int_equal(enc("tpm-sealed", &sealed), 0);
    assert_int_equal(enc("tpm-resident", &resident), 0);
    stop_kmsd();
    assert_int_equal(kms_test_swtpm_extend17(&T), 0);
    start_kmsd();
    /* The sealed key (bound to PCR 17) no longer unseals, and the caller is
     * told which PCRs; kmsd stays up. */
    kms_client_result pt;
    assert_int_equal(kms_client_decrypt(APP, sealed.blob, sealed.blob_len, CTX, 1, &pt, &err),
                     KMS_CLIENT_FAILED_PRECONDITION);
    assert_non_null(strstr(err.message, "PCRs 17:"));
    assert_int_equal(dec(&sealed), KMS_CLIENT_FAILED_PRECONDITION);
    assert_int_equal(enc("tpm-sealed", &sealed), KMS_CLIENT_FAILED_PRECONDITION);
    assert_int_equal(kms_client_health(APP, "", &err), 0);
    assert_int_equal(dec(&resident), 0);
    kms_client_result r2;
    assert_int_equal(enc("demo", &r2), 0);
    kms_client_result_free(&r2);
    kms_client_result_free(&sealed);
    kms_client_result_free(&resident);
}

/* Puts a RotateKey of key straight into db's actions table in the
 * EXECUTING state, with no approval (what someone who can write the file
 * can do to a stopped kmsd). */
static void insert_executing_rotation(const char *db_path, const char *key)
{
    Kms__V1__RotateKey rk = KMS__V1__ROTATE_KEY__INIT;
    Kms__V1__ActionBody b = KMS__V1__ACTION_BODY__INIT;
    rk.key_name = (char *)key;
    b.action_case = KMS__V1__ACTION_BODY__ACTION_ROTATE_KEY;
    b.rotate_key = &rk;
    uint8_t body[256], id[16], digest[32];
    size_t len = kms__v1__action_body__get_packed_size(&b);
    assert_true(len > 0 && len <= sizeof(body));
    kms__v1__action_body__pack(&b, body);
    memset(id, 0x5A, sizeof(id));
    memset(digest, 0xA5, sizeof(digest));
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO actions (id, type, body, digest, proposer, "
                                        "state, threshold, created_at, expires_at) VALUES (?1, "
                                        "'RotateKey', ?2, ?3, 'officer1', 6, 2, "
                                        "strftime('%s','now'), strftime('%s','now') + 3600)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_bind_blob(st, 1, id, sizeof(id), SQLITE_STATIC), SQLITE_OK);
    assert_int_equal(sqlite3_bind_blob(st, 2, body, (int)len, SQLITE_STATIC), SQLITE_OK);
    assert_int_equal(sqlite3_bind_blob(st, 3, digest, sizeof(digest), SQLITE_STATIC), SQLITE_OK);
    if (sqlite3_step(st) != SQLITE_DONE)
        fail_msg("insert action: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* Deletes every action row from db_path (undoing insert_executing_rotation). */
static void remove_actions(const char *db_path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "DELETE FROM actions", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* The first column of the first row of sql on db_path, as text, into out. */
static void query_text(const char *db_path, const char *sql, char *out, size_t cap)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    const unsigned char *t = sqlite3_column_text(st, 0);
    snprintf(out, cap, "%s", t != NULL ? (const char *)t : "");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* A TPM-only kmsd: a configuration without a pkcs11 section, on its own
 * swtpm. `kmsd init` provisions the TPM and creates the configured key on
 * it (TPM2 sealed, the only backend's default mode); `kmsd run` serves it,
 * and Health answers SERVING. The main kmsd's swtpm and token are not used. */
/* The TPM-only kmsd's log (tpm_only_kmsd, below), kmsd stopped: every
 * checkpoint signed in the TPM verifies with `kmsctl audit verify --pubkey`
 * (no unverified tail: the stop wrote the last checkpoint), and one of them
 * with the openssl command line alone, from the format in docs/audit.md;
 * the same message changed by one byte does not. */
static void tpm_signed_checkpoints(void)
{
    char audit[400], pub[400], sh[1400];
    static char out[65536], err[65536];
    snprintf(audit, sizeof(audit), "%s/tpm-audit", K.token.dir);
    snprintf(pub, sizeof(pub), "%s/tpm-audit-pub.pem", K.token.dir);
    snprintf(sh, sizeof(sh), "exec \"$KMS_KMSCTL\" audit verify %s/audit-*.jsonl --pubkey %s",
             audit, pub);
    char *verify[] = {"/bin/sh", "-c", sh, NULL};
    int st = kms_test_run(verify, out, sizeof(out));
    print_message("%s", out);
    assert_int_equal(st, 0);
    assert_non_null(strstr(out, "unverified_tail: 0"));
    assert_null(strstr(out, "checkpoints: 0\n"));
    (void)err;
    static const char script[] =
        "set -e\n"
        "line=$(cat \"$1\"/audit-*.jsonl | grep '\"type\":\"checkpoint\"' | sed -n 2p)\n"
        "get() { printf '%s' \"$line\" | sed -n \"s/$1/\\1/p\"; }\n"
        "seq=$(get '^{\"seq\":\\([0-9]*\\),.*')\n"
        "chain=$(get '.*,\"prev\":\"\\([0-9a-f]*\\)\",.*')\n"
        "time=$(get '.*,\"time\":\"\\([^\"]*\\)\",.*')\n"
        "instance=$(get '.*,\"instance\":\"\\([0-9a-f]*\\)\",.*')\n"
        "log=$(get '.*,\"detail\":\"log=\\([0-9a-f]*\\) sig=.*')\n"
        "sig=$(get '.*,\"detail\":\"log=[0-9a-f]* sig=\\([0-9a-f]*\\)\",.*')\n"
        "printf 'kms-audit-checkpoint-v1 log=%s seq=%s chain=%s time=%s instance=%s\\n' \\\n"
        "  \"$log\" \"$seq\" \"$chain\" \"$time\" \"$instance\" > \"$3/msg\"\n"
        "printf '%s' \"$sig\" | xxd -r -p > \"$3/sig.der\"\n"
        "openssl dgst -sha256 -verify \"$2\" -signature \"$3/sig.der\" \"$3/msg\"\n"
        "id=$(openssl pkey -pubin -in \"$2\" -outform DER | tail -c 65 | sha256sum | cut -c1-32)\n"
        "test \"$id\" = \"$log\" && echo \"log id matches\"\n"
        "printf 'x' >> \"$3/msg\"\n"
        "if openssl dgst -sha256 -verify \"$2\" -signature \"$3/sig.der\" \"$3/msg\"; then\n"
        "  echo 'a changed message verified'; exit 1; fi\n";
    char *argv[] = {"/bin/sh", "-c", (char *)script, "sh", audit, pub, K.token.dir, NULL};
    st = kms_test_run(argv, out, sizeof(out));
    print_message("%s", out);
    assert_int_equal(st, 0);
    assert_non_null(strstr(out, "Verified OK"));
    assert_non_null(strstr(out, "log id matches"));
    assert_non_null(strstr(out, "Verification failure"));
}

static void tpm_only_kmsd(void **state)
{
    (void)state;
    kms_test_swtpm T2;
    kms_test_kmsd K2 = K; /* same PKI; its own config and database */
    char out[16384];
    kms_test_swtpm_start(&T2);
    snprintf(K2.config, sizeof(K2.config), "%s/tpm-only.yaml", K.token.dir);
    snprintf(K2.db, sizeof(K2.db), "%s/tpm-only.db", K.token.dir);
    K2.pid = 0;
    FILE *f = fopen(K2.config, "w");
    assert_non_null(f);
    fprintf(f,
            "listen: 127.0.0.1:0\n"
            "tls: {cert: pki/server.pem, key: pki/server-key.pem, client_ca: pki/ca.pem}\n"
            "database: tpm-only.db\n"
            "tpm2: {tcti: \"%s\", lock_dir: %s}\n"
            "workers: 2\n"
            "log_level: warn\n"
            "audit: {dir: tpm-audit, pubkey_file: tpm-audit-pub.pem, checkpoint_records: 3, "
            "checkpoint_seconds: 1}\n"
            "init:\n"
            "  officers:\n"
            "    - {id: officer1, identity: \"spiffe://kms.local/officer1\", "
            "signing_key: pki/officer1-signing-pub.pem}\n"
            "    - {id: officer2, identity: \"spiffe://kms.local/officer2\", "
            "signing_key: pki/officer2-signing-pub.pem}\n"
            "  keys:\n"
            "    - name: on-tpm\n"
            "      encrypt: [\"" KMS_TEST_APP_ID "\"]\n"
            "      decrypt: [\"" KMS_TEST_APP_ID "\"]\n",
            T2.tcti, T2.dir);
    fclose(f);
    const char *init[] = {"--config", K2.config, "init", NULL};
    if (kms_test_kmsd_run(init, out, sizeof(out)) != 0)
        fail_msg("TPM-only init: %s", out);
    /* The TPM holds the state-integrity key (a keyed-hash object): init
     * makes it, so the state is authenticated, and seal-state refuses to
     * make another. */
    if (strstr(out, "NOT authenticated") != NULL ||
        strstr(out, "state-integrity key on tpm2") == NULL)
        fail_msg("TPM-only init: no state-integrity key on the TPM: %s", out);
    /* And the audit signing key (an ECC P-256 key made in the TPM): init
     * makes it and writes its public key. */
    if (strstr(out, "audit signing key on tpm2") == NULL || strstr(out, "NOT") != NULL)
        fail_msg("TPM-only init: no audit signing key on the TPM: %s", out);
    const char *seal[] = {"--config", K2.config, "seal-state", NULL};
    if (kms_test_kmsd_run(seal, out, sizeof(out)) != 1 || strstr(out, "already holds") == NULL)
        fail_msg("TPM-only seal-state: %s", out);
    kms_test_kmsd_start(&K2, NULL);
    kms_client *app = open_on(&K2, "app");
    kms_client_error err;
    kms_client_key k;
    assert_int_equal(kms_client_describe_key(app, "on-tpm", &k, &err), 0);
    assert_string_equal(k.backend, "tpm2");
    assert_string_equal(k.backend_mode, "sealed");
    kms_client_key_free(&k);
    static const uint8_t msg[] = "no HSM here";
    kms_client_result ct, pt;
    assert_int_equal(kms_client_encrypt(app, "on-tpm", msg, sizeof(msg), CTX, 1, &ct, &err), 0);
    assert_int_equal(kms_client_decrypt(app, ct.blob, ct.blob_len, CTX, 1, &pt, &err), 0);
    assert_int_equal(pt.plaintext_len, sizeof(msg));
    assert_memory_equal(pt.plaintext, msg, sizeof(msg));
    assert_int_equal(kms_client_health(app, "kms.v1.KeyManagement", &err), 0);
    /* Its only backend down: NOT_SERVING; back: SERVING. */
    kms_test_swtpm_stop(&T2);
    assert_int_equal(kms_client_health(app, "kms.v1.KeyManagement", &err), KMS_CLIENT_UNAVAILABLE);
    kms_test_swtpm_resume(&T2);
    int r = -1;
    for (int i = 0; i < 50 && r != 0; i++) {
        r = kms_client_health(app, "kms.v1.KeyManagement", &err);
        if (r != 0)
            usleep(100 * 1000);
    }
    assert_int_equal(r, 0);
    kms_client_result_free(&pt);
    kms_client_close(app);
    assert_int_equal(kms_test_kmsd_stop(&K2, SIGTERM), 0);
    tpm_signed_checkpoints();

    /* A tampered database: a RotateKey of on-tpm put straight into the
     * EXECUTING state with no approval (and a made-up digest). The row has
     * no MAC under the TPM's state key: verify-state names it, and `kmsd
     * run` refuses to start instead of serving (or executing it). */
    insert_executing_rotation(K2.db, "on-tpm");
    const char *verify[] = {"--config", K2.config, "verify-state", NULL};
    if (kms_test_kmsd_run(verify, out, sizeof(out)) == 0 ||
        strstr(out, "state: FAIL actions (id=5a5a5a5a") == NULL ||
        strstr(out, "row has no MAC") == NULL)
        fail_msg("verify-state on the tampered TPM-only database: %s", out);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, STDOUT_FILENO);
            dup2(devnull, STDERR_FILENO);
        }
        execl(getenv("KMS_KMSD"), "kmsd", "--config", K2.config, "run", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    pid_t done = 0;
    for (int i = 0; i < 600 && (done = waitpid(pid, &status, WNOHANG)) == 0; i++)
        usleep(100 * 1000);
    if (done == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("a TPM-only kmsd served the tampered database (still running after 60 s)");
    }
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    char got[512];
    query_text(K2.db,
               "SELECT count(*) FROM key_versions v JOIN keys k ON k.id = v.key_id "
               "WHERE k.name = 'on-tpm'",
               got, sizeof(got));
    assert_string_equal(got, "1");
    /* The forged row removed, the state verifies again and kmsd serves the
     * key as before: nothing was rotated. */
    remove_actions(K2.db);
    kms_test_kmsd_start(&K2, NULL);
    app = open_on(&K2, "app");
    assert_int_equal(kms_client_decrypt(app, ct.blob, ct.blob_len, CTX, 1, &pt, &err), 0);
    assert_memory_equal(pt.plaintext, msg, sizeof(msg));
    kms_client_result_free(&ct);
    kms_client_result_free(&pt);
    kms_client_close(app);
    assert_int_equal(kms_test_kmsd_stop(&K2, SIGTERM), 0);
    kms_test_swtpm_destroy(&T2);
}

/* Copies src to dst (dst replaced); a missing src removes dst: a -wal that
 * is not there is copied as "no -wal". */
static void copy_file(const char *src, const char *dst)
{
    FILE *in = fopen(src, "rb");
    if (in == NULL) {
        unlink(dst);
        return;
    }
    FILE *out = fopen(dst, "wb");
    assert_non_null(out);
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

/* The database file and its -wal, from -> to (suffixes added to both). */
static void copy_db(const char *from, const char *to)
{
    char s[450], d[450];
    copy_file(from, to);
    snprintf(s, sizeof(s), "%s-wal", from);
    snprintf(d, sizeof(d), "%s-wal", to);
    copy_file(s, d);
    snprintf(d, sizeof(d), "%s-shm", to);
    unlink(d);
}

/* Proposes body on kmsd k as officer1 and approves it 2 of 3 there. */
static void pass_on(const kms_test_kmsd *k, Kms__V1__ActionBody *b, char *result, size_t cap)
{
    kms_client *o1 = open_on(k, "officer1"), *o2 = open_on(k, "officer2");
    size_t len = protobuf_c_message_get_packed_size(&b->base);
    uint8_t buf[4096];
    assert_true(len <= sizeof(buf));
    protobuf_c_message_pack(&b->base, buf);
    kms_client_action a, d1, d2;
    kms_client_error err;
    if (kms_client_propose(o1, buf, len, &a, &err) != 0)
        fail_msg("propose: %s", err.message);
    d1 = approve_as(o1, 1, &a);
    d2 = approve_as(o2, 2, &a);
    if (d2.state != KMS_CLIENT_ACTION_EXECUTED)
        fail_msg("not executed: %s", d2.result);
    snprintf(result, cap, "%s", d2.result);
    kms_client_action_free(&a);
    kms_client_action_free(&d1);
    kms_client_action_free(&d2);
    kms_client_close(o1);
    kms_client_close(o2);
}

/* Writes t to the test clock file at path (aside, then renamed). */
static void set_clock_file(const char *path, int64_t t)
{
    char tmp[450];
    snprintf(tmp, sizeof(tmp), "%s.new", path);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    fprintf(f, "%lld\n", (long long)t);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, path), 0);
}

/* Crypto-shredding end to end on a TPM-only kmsd (own swtpm): two sealed
 * keys, a blob under each; the database file and its -wal copied aside (a
 * backup taken while kmsd runs); "doomed" scheduled for deletion through
 * the quorum and destroyed by the sweep once the test clock passes its
 * window. kmsd stopped, the old copy put back and kmsd started on it: the
 * copy is an older consistent state, so it verifies and kmsd serves, and
 * in it "doomed" is still enabled with its sealed object. Yet the blob
 * made under it no longer decrypts (its version's NV index is gone from
 * the TPM), while the blob under "kept" still does. */
static void shredding_beats_saved_copy(void **state)
{
    (void)state;
    kms_test_swtpm T3;
    kms_test_kmsd K3 = K;
    char out[16384], clock[400], saved[400];
    const int64_t now = 1900000000;
    kms_test_swtpm_start(&T3);
    snprintf(K3.config, sizeof(K3.config), "%s/shred.yaml", K.token.dir);
    snprintf(K3.db, sizeof(K3.db), "%s/shred.db", K.token.dir);
    snprintf(clock, sizeof(clock), "%s/shred.clock", K.token.dir);
    snprintf(saved, sizeof(saved), "%s/shred-saved.db", K.token.dir);
    K3.pid = 0;
    set_clock_file(clock, now);
    FILE *f = fopen(K3.config, "w");
    assert_non_null(f);
    fprintf(f,
            "listen: 127.0.0.1:0\n"
            "tls: {cert: pki/server.pem, key: pki/server-key.pem, client_ca: pki/ca.pem}\n"
            "database: shred.db\n"
            "tpm2: {tcti: \"%s\", lock_dir: %s}\n"
            "workers: 2\n"
            "log_level: warn\n"
            "quorum:\n"
            "  sweep_interval_ms: 50\n"
            "init:\n"
            "  officers:\n"
            "    - {id: officer1, identity: \"spiffe://kms.local/officer1\", "
            "signing_key: pki/officer1-signing-pub.pem}\n"
            "    - {id: officer2, identity: \"spiffe://kms.local/officer2\", "
            "signing_key: pki/officer2-signing-pub.pem}\n"
            "  keys:\n"
            "    - name: doomed\n"
            "      encrypt: [\"" KMS_TEST_APP_ID "\"]\n"
            "      decrypt: [\"" KMS_TEST_APP_ID "\"]\n"
            "    - name: kept\n"
            "      encrypt: [\"" KMS_TEST_APP_ID "\"]\n"
            "      decrypt: [\"" KMS_TEST_APP_ID "\"]\n",
            T3.tcti, T3.dir);
    fclose(f);
    const char *init[] = {"--config", K3.config, "init", NULL};
    if (kms_test_kmsd_run(init, out, sizeof(out)) != 0)
        fail_msg("init: %s", out);
    const char *extra[] = {"--test-clock", clock, NULL};
    kms_test_kmsd_start(&K3, extra);
    kms_client *app = open_on(&K3, "app");
    kms_client_error err;
    static const uint8_t msg[] = "shred me";
    kms_client_result doomed, kept, pt;
    assert_int_equal(kms_client_encrypt(app, "doomed", msg, sizeof(msg), CTX, 1, &doomed, &err), 0);
    assert_int_equal(kms_client_encrypt(app, "kept", msg, sizeof(msg), CTX, 1, &kept, &err), 0);

    /* The backup: the file and its -wal, kmsd still running. */
    copy_db(K3.db, saved);

    Kms__V1__ScheduleKeyDeletion sd = KMS__V1__SCHEDULE_KEY_DELETION__INIT;
    Kms__V1__ActionBody b = KMS__V1__ACTION_BODY__INIT;
    sd.key_name = "doomed";
    sd.pending_window_days = 7;
    b.action_case = KMS__V1__ACTION_BODY__ACTION_SCHEDULE_KEY_DELETION;
    b.schedule_key_deletion = &sd;
    char res[300];
    pass_on(&K3, &b, res, sizeof(res));
    set_clock_file(clock, now + 7 * 86400 + 60);
    kms_client_key k;
    int destroyed = 0;
    for (int i = 0; i < 200 && !destroyed; i++) {
        usleep(100 * 1000);
        assert_int_equal(kms_client_describe_key(app, "doomed", &k, &err), 0);
        destroyed = k.n_versions > 0 && k.versions[0].state == KMS_CLIENT_VERSION_DESTROYED;
        kms_client_key_free(&k);
    }
    if (!destroyed)
        fail_msg("the sweep did not destroy doomed within 20 s");
    assert_int_equal(kms_client_decrypt(app, kept.blob, kept.blob_len, CTX, 1, &pt, &err), 0);
    kms_client_result_free(&pt);
    kms_client_close(app);
    assert_int_equal(kms_test_kmsd_stop(&K3, SIGTERM), 0);

    /* The old copy back, the clock back to before the deletion was even
     * proposed: the copy verifies and kmsd serves from it. */
    copy_db(saved, K3.db);
    set_clock_file(clock, now);
    const char *verify[] = {"--config", K3.config, "verify-state", NULL};
    if (kms_test_kmsd_run(verify, out, sizeof(out)) != 0)
        fail_msg("verify-state on the saved copy: %s", out);
    kms_test_kmsd_start(&K3, extra);
    app = open_on(&K3, "app");
    assert_int_equal(kms_client_describe_key(app, "doomed", &k, &err), 0);
    assert_true(k.n_versions == 1 && k.versions[0].state == KMS_CLIENT_VERSION_ENABLED);
    kms_client_key_free(&k);
    /* The copy still holds doomed's sealed object; the chip does not hold
     * its NV index any more, so nothing unseals it. */
    int r = kms_client_decrypt(app, doomed.blob, doomed.blob_len, CTX, 1, &pt, &err);
    if (r == 0) {
        kms_client_result_free(&pt);
        (void)kms_test_kmsd_stop(&K3, SIGTERM);
        fail_msg("a blob under the destroyed key decrypted from the saved copy");
    }
    /* NOT_FOUND, as for any destroyed version (kmsd logs "its NV index ...
     * is gone from the TPM"). */
    if (r != KMS_CLIENT_NOT_FOUND) {
        (void)kms_test_kmsd_stop(&K3, SIGTERM);
        fail_msg("decrypt under the shredded key: %d %s", r, err.message);
    }
    /* The other key, untouched. */
    assert_int_equal(kms_client_decrypt(app, kept.blob, kept.blob_len, CTX, 1, &pt, &err), 0);
    assert_int_equal(pt.plaintext_len, sizeof(msg));
    assert_memory_equal(pt.plaintext, msg, sizeof(msg));
    kms_client_result_free(&pt);
    kms_client_result_free(&doomed);
    kms_client_result_free(&kept);
    kms_client_close(app);
    assert_int_equal(kms_test_kmsd_stop(&K3, SIGTERM), 0);
    kms_test_swtpm_destroy(&T3);
}

/* A configuration that names no backend at all is refused up front, by
 * init and by run, with a message that says what to set; no database is
 * made. */
static void no_backend_refused(void **state)
{
    (void)state;
    char cfg[400], db[400], out[16384];
    snprintf(cfg, sizeof(cfg), "%s/no-backend.yaml", K.token.dir);
    snprintf(db, sizeof(db), "%s/no-backend.db", K.token.dir);
    FILE *f = fopen(cfg, "w");
    assert_non_null(f);
    fprintf(f, "listen: 127.0.0.1:0\n"
               "tls: {cert: pki/server.pem, key: pki/server-key.pem, client_ca: pki/ca.pem}\n"
               "database: no-backend.db\n");
    fclose(f);
    const char *init[] = {"--config", cfg, "init", NULL};
    assert_int_equal(kms_test_kmsd_run(init, out, sizeof(out)), 2);
    assert_non_null(strstr(out, "no backend configured"));
    const char *run[] = {"--config", cfg, "run", NULL};
    assert_int_equal(kms_test_kmsd_run(run, out, sizeof(out)), 2);
    assert_non_null(strstr(out, "no backend configured"));
    assert_int_not_equal(access(db, F_OK), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keys_on_the_tpm),        cmocka_unit_test(rotation),
        cmocka_unit_test(reset_stop_restart),     cmocka_unit_test(health_follows_the_tpm),
        cmocka_unit_test(second_process_refused), cmocka_unit_test(pcr_bound_key),
        cmocka_unit_test(tpm_only_kmsd),          cmocka_unit_test(shredding_beats_saved_copy),
        cmocka_unit_test(no_backend_refused),
    };
    return KMS_RUN_GROUP(tests, group_setup, group_teardown);
}
