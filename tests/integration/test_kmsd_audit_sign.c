/* Signed checkpoints of the audit log, end to end: a real kmsd on a real
 * SoftHSM2 token signs them with the audit key `kmsd init` made; `openssl`
 * alone verifies one from the format in docs/audit.md; `kmsctl audit verify
 * --pubkey` verifies them all, names a forged one and counts the unverified
 * tail; kmsd without an audit key refuses to start until `kmsd audit-key`.
 *
 * kmsd runs with audit.checkpoint_records 5, audit.checkpoint_seconds 1
 * and audit.max_bytes 8192, so a short run has many checkpoints and files. */
#include <dirent.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include <grpc/grpc.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include "audit_checkpoint.h"
#include "audit_record.h"
#include "grpc_test_client.h"
#include "kms/v1/kms.pb-c.h"
#include "kmsctl_runner.h"
#include "kmsd_fixture.h"
#include "test_util.h"

#define KM "/kms.v1.KeyManagement/"
#define LOG_MAX (1u << 20)
#define MAX_LINES 4096

static kms_test_kmsd K;
static char DIR_[320], AUDIT[400], PUB[400];
static char OUT[65536], ERR[65536];

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The audit files of dir, sorted (the chain order). */
static size_t audit_files(const char *dir, char **paths, size_t cap)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    struct dirent *e;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL && n < cap) {
        if (strncmp(e->d_name, "audit-", 6) != 0)
            continue;
        char buf[800];
        paths[n++] = strdup(kms_test_path(buf, sizeof(buf), dir, e->d_name));
    }
    closedir(d);
    qsort(paths, n, sizeof(*paths), cmp_str);
    return n;
}

static void free_files(char **paths, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
}

/* Every line of the log, in order, each a malloc'ed copy with its LF. */
struct log {
    char *line[MAX_LINES];
    size_t n;
};

static void read_lines(const char *dir, struct log *l)
{
    static char buf[LOG_MAX];
    char *paths[256];
    size_t n = audit_files(dir, paths, 256);
    l->n = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = kms_test_read_file(paths[i], buf, sizeof(buf) - 1);
        buf[len] = '\0';
        for (char *p = buf; *p != '\0';) {
            char *nl = strchr(p, '\n');
            assert_non_null(nl);
            assert_true(l->n < MAX_LINES);
            l->line[l->n++] = strndup(p, (size_t)(nl - p + 1));
            p = nl + 1;
        }
    }
    free_files(paths, n);
}

static void free_lines(struct log *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->line[i]);
    l->n = 0;
}

static int is_checkpoint(const char *line)
{
    return strstr(line, "\"type\":\"checkpoint\"") != NULL;
}

static uint64_t seq_of(const char *line)
{
    return strtoull(line + strlen("{\"seq\":"), NULL, 10);
}

/* `kmsctl audit verify` over the files of dir (pub NULL: without --pubkey). */
static int verify_dir(const char *dir, const char *pub)
{
    char *paths[256];
    size_t n = audit_files(dir, paths, 256);
    const char *args[270] = {"audit", "verify"};
    size_t a = 2;
    for (size_t i = 0; i < n; i++)
        args[a++] = paths[i];
    if (pub != NULL) {
        args[a++] = "--pubkey";
        args[a++] = pub;
    }
    args[a] = NULL;
    int st = kms_test_kmsctl(DIR_, args, OUT, sizeof(OUT), ERR, sizeof(ERR));
    free_files(paths, n);
    return st;
}

static long long out_num(const char *name)
{
    char buf[64];
    assert_non_null(kms_test_field(OUT, name, 0, buf, sizeof(buf)));
    return atoll(buf);
}

static int health_call(kms_tc *c)
{
    Kms__V1__ListKeysRequest req = KMS__V1__LIST_KEYS_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    char msg[256];
    int st = kms_tc_call(c, KM "ListKeys", &req.base, &kms__v1__list_keys_response__descriptor, &m,
                         msg, sizeof(msg));
    if (m != NULL)
        protobuf_c_message_free_unpacked(m, NULL);
    return st;
}

static void start(void)
{
    const char *extra[] = {"--audit-dir", AUDIT, NULL};
    kms_test_kmsd_start(&K, extra);
}

/* Some calls, so the log has records between checkpoints. */
static void calls(int n)
{
    kms_tc *app = kms_test_kmsd_open_as(&K, "app");
    for (int i = 0; i < n; i++)
        (void)health_call(app);
    kms_tc_close(app);
}

/* ---- a second key, for forgeries --------------------------------------------------------- */

static EVP_PKEY *OTHER;

static int other_sign(void *ctx, const uint8_t digest[KMS_AUDIT_DIGEST_LEN],
                      uint8_t sig[KMS_AUDIT_SIG_LEN])
{
    (void)ctx;
    uint8_t der[80];
    size_t der_len = sizeof(der);
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(OTHER, NULL);
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

/* Writes the log l into a fresh dir as one file, with record `change`'s
 * identity replaced (0: none), the chain recomputed from there on (what
 * someone who can write the files can do), and, if resign, every
 * checkpoint signed again with OTHER under the log id it had. Returns the
 * dir (static). */
static const char *forge(const struct log *l, uint64_t change, int resign)
{
    static char dir[400];
    static kms_audit_parsed p;
    char path[600], line[KMS_AUDIT_LINE_MAX], detail[KMS_AUDIT_FIELD_MAX + 1];
    uint8_t hash[KMS_AUDIT_HASH_LEN] = {0};
    kms_test_path(dir, sizeof(dir), DIR_, "forged");
    kms_test_rmtree(dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    FILE *f =
        fopen(kms_test_path(path, sizeof(path), dir, "audit-00000000000000000001.jsonl"), "w");
    assert_non_null(f);
    for (size_t i = 0; i < l->n; i++) {
        assert_int_equal(kms_audit_rec_parse(l->line[i], strlen(l->line[i]), &p), 0);
        memcpy(p.rec.prev, hash, KMS_AUDIT_HASH_LEN);
        if (p.rec.seq == change)
            p.rec.identity = "spiffe://kms.local/mallory";
        if (resign && is_checkpoint(l->line[i])) {
            char log_id[KMS_AUDIT_LOG_ID_HEX + 1];
            memcpy(log_id, p.rec.detail + 4, KMS_AUDIT_LOG_ID_HEX);
            log_id[KMS_AUDIT_LOG_ID_HEX] = '\0';
            assert_int_equal(
                kms_audit_checkpoint_sign(&p.rec, log_id, other_sign, NULL, detail, sizeof(detail)),
                0);
            p.rec.detail = detail;
        }
        size_t len = 0;
        assert_int_equal(kms_audit_rec_encode(&p.rec, line, sizeof(line), &len), 0);
        assert_int_equal(kms_audit_chain_next(hash, line, len, hash), 0);
        assert_int_equal(fwrite(line, 1, len, f), len);
    }
    assert_int_equal(fclose(f), 0);
    return dir;
}

/* ---- tests ------------------------------------------------------------------------------- */

/* `kmsd init` wrote the public key; `kmsctl audit pubkey` prints it with
 * the log id every checkpoint names. */
static void init_wrote_the_public_key(void **state)
{
    (void)state;
    struct stat st;
    assert_int_equal(stat(PUB, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    const char *args[] = {"audit", "pubkey", PUB, NULL};
    assert_int_equal(kms_test_kmsctl(DIR_, args, OUT, sizeof(OUT), ERR, sizeof(ERR)), 0);
    assert_non_null(strstr(OUT, "-----BEGIN PUBLIC KEY-----"));
    char id[64];
    assert_non_null(kms_test_field(OUT, "log_id", 0, id, sizeof(id)));
    assert_int_equal(strlen(id), KMS_AUDIT_LOG_ID_HEX);

    struct log l;
    read_lines(AUDIT, &l);
    size_t cps = 0;
    for (size_t i = 0; i < l.n; i++)
        if (is_checkpoint(l.line[i])) {
            cps++;
            assert_non_null(strstr(l.line[i], id));
        }
    assert_true(cps > 0);
    free_lines(&l);

    /* not a key: refused */
    const char *bad[] = {"audit", "pubkey", K.config, NULL};
    assert_int_equal(kms_test_kmsctl(DIR_, bad, OUT, sizeof(OUT), ERR, sizeof(ERR)), 6);
}

/* Checkpoints: at most 5 records apart, the last record of every file but
 * the newest, and after a quiet second. */
static void checkpoints_every_n_records_at_rotation_and_when_quiet(void **state)
{
    (void)state;
    calls(40);
    sleep(3); /* audit.checkpoint_seconds is 1 */
    struct log l;
    read_lines(AUDIT, &l);
    size_t run = 0;
    for (size_t i = 0; i < l.n; i++) {
        run = is_checkpoint(l.line[i]) ? 0 : run + 1;
        assert_true(run <= 5);
    }
    /* the quiet second ended with a checkpoint, while kmsd runs */
    assert_true(is_checkpoint(l.line[l.n - 1]));
    free_lines(&l);

    char *paths[256];
    size_t n = audit_files(AUDIT, paths, 256);
    assert_true(n >= 2); /* audit.max_bytes 8192 */
    static char buf[LOG_MAX];
    for (size_t i = 0; i + 1 < n; i++) {
        size_t len = kms_test_read_file(paths[i], buf, sizeof(buf) - 1);
        buf[len] = '\0';
        assert_true(len > 0 && len <= 8192);
        buf[len - 1] = '\0';
        char *last = strrchr(buf, '\n');
        assert_true(is_checkpoint(last ? last + 1 : buf));
    }
    free_files(paths, n);
}

/* The signature of one checkpoint, checked with the openssl command line
 * and shell tools only, from the format in docs/audit.md. */
static void openssl_verifies_a_checkpoint(void **state)
{
    (void)state;
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
    char out[4096];
    char *argv[] = {"/bin/sh", "-c", (char *)script, "sh", AUDIT, PUB, DIR_, NULL};
    int st = kms_test_run(argv, out, sizeof(out));
    print_message("%s", out);
    assert_int_equal(st, 0);
    assert_non_null(strstr(out, "Verified OK"));
    assert_non_null(strstr(out, "log id matches"));
    assert_non_null(strstr(out, "Verification failure"));
}

/* A chain rewritten after a change verifies as a chain, but the next
 * checkpoint does not; checkpoints signed again by another key neither. */
static void forged_checkpoints_are_named(void **state)
{
    (void)state;
    struct log l;
    read_lines(AUDIT, &l);
    int live = verify_dir(AUDIT, PUB); /* kmsd runs: maybe a tail */
    assert_true(live == 0 || live == 13);
    /* the untouched copy is intact under the key */
    const char *dir = forge(&l, 0, 0);
    int st = verify_dir(dir, PUB);
    assert_true(st == 0 || st == 13);
    assert_non_null(strstr(OUT, "chain: intact"));

    /* record 7 changed, the chain recomputed: the first checkpoint after
     * it is named */
    uint64_t cp_after = 0, first_cp = 0;
    for (size_t i = 0; i < l.n; i++) {
        uint64_t s = seq_of(l.line[i]);
        if (is_checkpoint(l.line[i]) && first_cp == 0)
            first_cp = s;
        if (is_checkpoint(l.line[i]) && s > 7 && cp_after == 0)
            cp_after = s;
    }
    assert_true(first_cp > 0 && first_cp < 7 && cp_after > 7);
    dir = forge(&l, 7, 0);
    assert_int_equal(verify_dir(dir, NULL), 13); /* without the key: only a tail */
    assert_non_null(strstr(OUT, "chain: intact"));
    assert_int_equal(verify_dir(dir, PUB), 6);
    assert_int_equal(out_num("first_bad_seq"), (long long)cp_after);
    assert_non_null(strstr(OUT, "does not verify"));

    /* every checkpoint signed again with another key: the first is named */
    dir = forge(&l, 7, 1);
    assert_int_equal(verify_dir(dir, PUB), 6);
    assert_int_equal(out_num("first_bad_seq"), (long long)first_cp);

    /* verified under another key: the log id says it is not this log's */
    char other_pem[400];
    kms_test_path(other_pem, sizeof(other_pem), DIR_, "other-pub.pem");
    FILE *f = fopen(other_pem, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PUBKEY(f, OTHER), 1);
    fclose(f);
    assert_int_equal(verify_dir(AUDIT, other_pem), 6);
    assert_int_equal(out_num("first_bad_seq"), (long long)first_cp);
    assert_non_null(strstr(OUT, "names log"));
    free_lines(&l);
}

/* After a clean stop the log ends with a checkpoint: no unverified tail.
 * Cut that checkpoint off and the records after the one before are the
 * unverified tail, counted exactly. Without the key, every record is. */
static void shutdown_checkpoint_and_the_unverified_tail(void **state)
{
    (void)state;
    calls(3);
    assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
    struct log l;
    read_lines(AUDIT, &l);
    assert_true(is_checkpoint(l.line[l.n - 1]));
    assert_non_null(strstr(l.line[l.n - 2], "\"type\":\"stop\""));
    assert_int_equal(verify_dir(AUDIT, PUB), 0);
    assert_int_equal(out_num("unverified_tail"), 0);

    assert_int_equal(verify_dir(AUDIT, NULL), 13);
    assert_non_null(strstr(ERR, "checkpoints were not verified"));
    assert_int_equal(out_num("unverified_tail"), (long long)l.n);

    /* the last checkpoint cut off: stop and the records before it back to
     * the previous checkpoint */
    uint64_t last = seq_of(l.line[l.n - 2]), prev_cp = 0;
    for (size_t i = 0; i + 1 < l.n; i++)
        if (is_checkpoint(l.line[i]))
            prev_cp = seq_of(l.line[i]);
    free(l.line[--l.n]);
    const char *dir = forge(&l, 0, 0);
    assert_int_equal(verify_dir(dir, PUB), 13);
    assert_int_equal(out_num("unverified_tail"), (long long)(last - prev_cp));
    assert_int_equal(out_num("last_checkpoint_seq"), (long long)prev_cp);
    assert_non_null(strstr(ERR, "unverified tail of"));
    free_lines(&l);
}

/* A token without the audit key (a database from before): kmsd refuses to
 * start with an audit log and names the step; `kmsd audit-key` makes the
 * key, and kmsd starts. */
static void no_audit_key_refuses_start_until_audit_key(void **state)
{
    (void)state;
    const char *tool = getenv("KMS_PKCS11_TOOL");
    assert_non_null(tool);
    for (int i = 0; i < 2; i++) {
        char *argv[] = {(char *)tool,
                        "--module",
                        (char *)K.token.module,
                        "--token-label",
                        (char *)K.token.label,
                        "--login",
                        "--pin",
                        KMS_TEST_USER_PIN,
                        "--delete-object",
                        "--type",
                        i == 0 ? "privkey" : "pubkey",
                        "--label",
                        "kms-audit-signing",
                        NULL};
        char out[4096];
        assert_int_equal(kms_test_run(argv, out, sizeof(out)), 0);
    }
    static char out[65536];
    /* under timeout(1): a kmsd that wrongly started would serve forever */
    char *run[] = {"/usr/bin/timeout",
                   "20",
                   (char *)getenv("KMS_KMSD"),
                   "--config",
                   K.config,
                   "--audit-dir",
                   AUDIT,
                   "run",
                   NULL};
    assert_int_equal(kms_test_run(run, out, sizeof(out)), 1); /* refused, not 124: timed out */
    assert_null(strstr(out, "kmsd ready on"));
    assert_non_null(strstr(out, "holds no audit signing key"));
    assert_non_null(strstr(out, "kmsd audit-key"));

    assert_int_equal(unlink(PUB), 0);
    const char *mk[] = {"--config", K.config, "audit-key", NULL};
    assert_int_equal(kms_test_kmsd_run(mk, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "audit signing key on pkcs11"));
    struct stat st;
    assert_int_equal(stat(PUB, &st), 0);
    /* a second run keeps the key */
    char before[4096], after[4096];
    size_t n1 = kms_test_read_file(PUB, before, sizeof(before));
    assert_int_equal(kms_test_kmsd_run(mk, out, sizeof(out)), 0);
    size_t n2 = kms_test_read_file(PUB, after, sizeof(after));
    assert_true(n1 == n2 && memcmp(before, after, n1) == 0);

    start();
    calls(2);
    assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
    /* the old checkpoints were signed by the old key: the first is named */
    assert_int_equal(verify_dir(AUDIT, PUB), 6);
}

static int group_setup(void **state)
{
    (void)state;
    grpc_init();
    kms_test_kmsd_setup(&K);
    kms_test_kmsd_dir(&K, DIR_, sizeof(DIR_));
    kms_test_path(AUDIT, sizeof(AUDIT), DIR_, "audit");
    kms_test_path(PUB, sizeof(PUB), DIR_, "audit-signing-pub.pem");
    FILE *f = fopen(K.config, "a");
    if (f == NULL)
        return -1;
    fprintf(f, "audit:\n  checkpoint_records: 5\n  checkpoint_seconds: 1\n  max_bytes: 8192\n");
    fclose(f);
    OTHER = EVP_EC_gen("P-256");
    if (OTHER == NULL)
        return -1;
    start();
    calls(12);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (K.pid != 0)
        (void)kms_test_kmsd_stop(&K, SIGTERM);
    kms_test_kmsd_teardown(&K);
    EVP_PKEY_free(OTHER);
    grpc_shutdown();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(init_wrote_the_public_key),
        cmocka_unit_test(checkpoints_every_n_records_at_rotation_and_when_quiet),
        cmocka_unit_test(openssl_verifies_a_checkpoint),
        cmocka_unit_test(forged_checkpoints_are_named),
        cmocka_unit_test(shutdown_checkpoint_and_the_unverified_tail),
        cmocka_unit_test(no_audit_key_refuses_start_until_audit_key),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
