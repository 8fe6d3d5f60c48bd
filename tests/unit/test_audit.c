/* The audit log: the record line and its strict parser, the writer (group
 * commit, rotation, restart, a removed file) and the offline verifier
 * against every kind of tampering, on real files in a temp dir. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kmsd/audit/audit_log.h"
#include "kmsd/audit/audit_record.h"
#include "kmsd/audit/audit_verify.h"
#include "test_util.h"

#define MAX_FILES 64
#define MAX_LINES 512

/* ---- helpers ------------------------------------------------------------------------ */

struct files {
    char dir[256];
    char path[MAX_FILES][600];
    const char *p[MAX_FILES];
    size_t n;
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

/* The dir's audit files in name order (as a shell glob gives them). */
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
    snprintf(f->dir, sizeof(f->dir), "%.255s", dir);
    for (size_t i = 0; i < n; i++) {
        snprintf(f->path[i], sizeof(f->path[i]), "%.255s/%.255s", dir, names[i]);
        f->p[i] = f->path[i];
    }
    f->n = n;
}

static kms_audit_rec sample(const char *identity, const char *key, uint32_t status)
{
    kms_audit_rec r = {.type = "rpc",
                       .identity = identity,
                       .peer = "ipv4:127.0.0.1:40000",
                       .method = "/kms.v1.KeyManagement/GenerateDataKey",
                       .key = key,
                       .version = 1,
                       .action = "",
                       .context_hmac = "",
                       .status = status,
                       .error = status ? "KMS_EDENIED" : "",
                       .detail = "",
                       .duration_us = 123};
    return r;
}

/* A log of n records in a fresh dir (one file unless max_bytes is small). */
static void make_log(char *dir, size_t cap, size_t n, uint64_t max_bytes)
{
    kms_audit *a = NULL;
    assert_non_null(kms_test_tmpdir("audit", dir, cap));
    kms_audit_config cfg = {.dir = dir, .max_bytes = max_bytes};
    assert_int_equal(kms_audit_open(&cfg, &a), 0);
    for (size_t i = 0; i < n; i++) {
        char who[64];
        snprintf(who, sizeof(who), "spiffe://kms.local/app%zu", i);
        kms_audit_rec r = sample(who, "demo", 0);
        assert_int_equal(kms_audit_append(a, &r), 0);
    }
    kms_audit_close(a);
}

static kms_audit_verify_result verify_dir(const char *dir)
{
    struct files f;
    kms_audit_verify_result res;
    list_files(dir, &f);
    assert_int_equal(kms_audit_verify_files(f.p, f.n, &res), 0);
    return res;
}

struct lines {
    char *v[MAX_LINES];
    size_t n;
};

static void read_lines(const char *path, struct lines *l)
{
    static char buf[1 << 20];
    size_t len = kms_test_read_file(path, buf, sizeof(buf));
    l->n = 0;
    for (size_t i = 0, start = 0; i < len; i++) {
        if (buf[i] == '\n') {
            assert_true(l->n < MAX_LINES);
            l->v[l->n] = strndup(buf + start, i + 1 - start);
            l->n++;
            start = i + 1;
        }
    }
}

static void write_lines(const char *path, const struct lines *l)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (size_t i = 0; i < l->n; i++)
        fputs(l->v[i], f);
    fclose(f);
}

static void free_lines(struct lines *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    l->n = 0;
}

/* ---- the record --------------------------------------------------------------------- */

static void test_record_round_trip(void **state)
{
    (void)state;
    kms_audit_rec r = sample("spiffe://kms.local/a\"b\\c\x01\xe9", "demo", 7);
    r.seq = 42;
    memset(r.prev, 0xab, sizeof(r.prev));
    r.time_us = 1764684000123456;
    r.instance = "0123456789abcdef";
    char line[KMS_AUDIT_LINE_MAX];
    size_t len = 0;
    assert_int_equal(kms_audit_rec_encode(&r, line, sizeof(line), &len), 0);
    line[len] = '\0';
    const char *want =
        "{\"seq\":42,\"prev\":\"abababababababababababababababababababababababababababababababab\","
        "\"time\":\"2025-12-02T14:00:00.123456Z\",\"instance\":\"0123456789abcdef\",\"type\":"
        "\"rpc\","
        "\"identity\":\"spiffe://kms.local/a\\\"b\\\\c\\u0001\\u00e9\",\"peer\":\"ipv4:127.0.0.1:"
        "40000\",\"method\":\"/kms.v1.KeyManagement/GenerateDataKey\",\"key\":\"demo\","
        "\"version\":1,\"action\":\"\",\"context_hmac\":\"\",\"status\":7,\"error\":"
        "\"KMS_EDENIED\",\"detail\":\"\",\"duration_us\":123}\n";
    assert_string_equal(line, want);

    kms_audit_parsed *p = malloc(sizeof(*p));
    assert_int_equal(kms_audit_rec_parse(line, len, p), 0);
    assert_int_equal(p->rec.seq, 42);
    assert_int_equal(p->rec.status, 7);
    assert_string_equal(p->rec.identity, "spiffe://kms.local/a\"b\\c\x01\xe9");
    assert_true(p->rec.time_us == r.time_us);
    free(p);
}

static void test_record_parser_is_strict(void **state)
{
    (void)state;
    kms_audit_rec r = sample("app", "demo", 0);
    r.seq = 5;
    r.time_us = 1764684000000000;
    r.instance = "0123456789abcdef";
    char line[KMS_AUDIT_LINE_MAX];
    size_t len = 0;
    assert_int_equal(kms_audit_rec_encode(&r, line, sizeof(line), &len), 0);
    line[len] = '\0';
    kms_audit_parsed *p = malloc(sizeof(*p));
    /* each variant differs from the canonical line in one way */
    struct {
        const char *from, *to;
    } bad[] = {
        {"{\"seq\":5", "{\"seq\":05"},                    /* leading zero */
        {"{\"seq\":5", "{ \"seq\":5"},                    /* whitespace */
        {"\"key\":\"demo\"", "\"key\":\"d\\u0065mo\""},   /* printable escaped */
        {"\"key\":\"demo\"", "\"key\":\"DEMO\",\"x\":1"}, /* extra field */
        {"0123456789abcdef", "0123456789ABCDEF"},         /* uppercase hex */
        {"T14:00:00.000000Z", "T24:00:00.000000Z"},       /* a time that normalises */
        {"\"status\":0,", "\"status\":4294967296,"},      /* out of range */
        {"}\n", "}\n\n"},                                 /* trailing bytes */
        {"}\n", "}"},                                     /* no LF */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char mod[KMS_AUDIT_LINE_MAX + 16];
        const char *at = strstr(line, bad[i].from);
        assert_non_null(at);
        snprintf(mod, sizeof(mod), "%.*s%s%s", (int)(at - line), line, bad[i].to,
                 at + strlen(bad[i].from));
        assert_int_not_equal(kms_audit_rec_parse(mod, strlen(mod), p), 0);
    }
    assert_int_equal(kms_audit_rec_parse(line, len, p), 0);
    free(p);
}

/* ---- the writer --------------------------------------------------------------------- */

struct hammer {
    kms_audit *a;
    int fails;
};

static void *hammer(void *arg)
{
    struct hammer *h = arg;
    for (int i = 0; i < 50; i++) {
        kms_audit_rec r = sample("spiffe://kms.local/app", "demo", 0);
        if (kms_audit_append(h->a, &r) != 0)
            h->fails++;
    }
    return NULL;
}

static void test_group_commit_and_chain(void **state)
{
    (void)state;
    char dir[256];
    kms_audit *a = NULL;
    assert_non_null(kms_test_tmpdir("audit", dir, sizeof(dir)));
    kms_audit_config cfg = {.dir = dir};
    assert_int_equal(kms_audit_open(&cfg, &a), 0);
    pthread_t t[16];
    struct hammer h = {.a = a};
    for (size_t i = 0; i < 16; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &h), 0);
    for (size_t i = 0; i < 16; i++)
        pthread_join(t[i], NULL);
    uint64_t records = 0, syncs = 0;
    kms_audit_stats(a, &records, &syncs);
    kms_audit_close(a);
    assert_int_equal(h.fails, 0);
    assert_int_equal(records, 800);
    assert_true(syncs >= 1 && syncs <= records);
    print_message("group commit: %llu records in %llu fdatasync calls\n",
                  (unsigned long long)records, (unsigned long long)syncs);

    kms_audit_verify_result res = verify_dir(dir);
    assert_true(res.intact);
    assert_int_equal(res.records, 800);
    assert_int_equal(res.last_seq, 800);
    assert_int_equal(res.unverified, 800); /* no signed checkpoint covers them */
    kms_test_rmtree(dir);
}

static void test_restart_continues_chain_and_cuts_partial_line(void **state)
{
    (void)state;
    char dir[256];
    make_log(dir, sizeof(dir), 5, 0);
    struct files f;
    list_files(dir, &f);
    assert_int_equal(f.n, 1);
    /* a crash mid-write: half a record, never acknowledged */
    FILE *fp = fopen(f.path[0], "ab");
    fputs("{\"seq\":6,\"prev\":\"00", fp);
    fclose(fp);

    kms_audit *a = NULL;
    kms_audit_config cfg = {.dir = dir};
    assert_int_equal(kms_audit_open(&cfg, &a), 0);
    kms_audit_rec r = sample("app", "demo", 0);
    assert_int_equal(kms_audit_append(a, &r), 0);
    kms_audit_close(a);
    kms_audit_verify_result res = verify_dir(dir);
    assert_true(res.intact);
    assert_int_equal(res.last_seq, 6);
    kms_test_rmtree(dir);
}

static void test_rotation_chains_files(void **state)
{
    (void)state;
    char dir[256];
    make_log(dir, sizeof(dir), 40, 4096);
    struct files f;
    list_files(dir, &f);
    assert_true(f.n >= 3);
    kms_audit_verify_result res = verify_dir(dir);
    assert_true(res.intact);
    assert_int_equal(res.records, 40);
    kms_test_rmtree(dir);
}

static void test_removed_file_fails_closed_then_recovers(void **state)
{
    (void)state;
    char dir[256];
    kms_audit *a = NULL;
    assert_non_null(kms_test_tmpdir("audit", dir, sizeof(dir)));
    kms_audit_config cfg = {.dir = dir};
    assert_int_equal(kms_audit_open(&cfg, &a), 0);
    kms_audit_rec r = sample("app", "demo", 0);
    assert_int_equal(kms_audit_append(a, &r), 0);
    assert_true(kms_audit_ready(a));
    struct files f;
    list_files(dir, &f);
    assert_int_equal(f.n, 1);
    assert_int_equal(unlink(f.path[0]), 0);

    /* written into a file nobody can see: not durable, refused */
    assert_int_equal(kms_audit_append(a, &r), KMS_EUNAVAIL);
    assert_false(kms_audit_ready(a));
    /* the next record starts a new file and the log is back */
    assert_int_equal(kms_audit_append(a, &r), 0);
    assert_true(kms_audit_ready(a));
    kms_audit_close(a);

    /* the removed file is missing from the chain: named */
    kms_audit_verify_result res = verify_dir(dir);
    assert_false(res.intact);
    assert_int_equal(res.bad_seq, 1);
    assert_non_null(strstr(res.reason, "missing"));
    kms_test_rmtree(dir);
}

/* ---- the verifier against tampering -------------------------------------------------- */

/* Replaces the value of one field of line k (1-based seq) with a different
 * one of the same type, then expects verify to name k. */
static void tamper_field(const char *field, const char *replacement)
{
    char dir[256];
    make_log(dir, sizeof(dir), 10, 0);
    struct files f;
    list_files(dir, &f);
    struct lines l;
    read_lines(f.path[0], &l);
    assert_int_equal(l.n, 10);
    const size_t k = 5; /* seq 5, line index 4 */
    char key[64];
    snprintf(key, sizeof(key), "\"%s\":", field);
    char *line = l.v[k - 1];
    char *at = strstr(line, key);
    assert_non_null(at);
    char *val = at + strlen(key);
    char *end = val;
    if (*end == '"') {
        end++;
        while (*end != '"')
            end += *end == '\\' ? 2 : 1;
        end++;
    } else {
        while (*end >= '0' && *end <= '9')
            end++;
    }
    char mod[KMS_AUDIT_LINE_MAX];
    snprintf(mod, sizeof(mod), "%.*s%s%s", (int)(val - line), line, replacement, end);
    assert_string_not_equal(mod, line);
    free(l.v[k - 1]);
    l.v[k - 1] = strdup(mod);
    write_lines(f.path[0], &l);
    free_lines(&l);

    kms_audit_verify_result res = verify_dir(dir);
    if (res.intact || res.bad_seq != k)
        fail_msg("field %s: verify said intact=%d bad_seq=%llu (%s)", field, res.intact,
                 (unsigned long long)res.bad_seq, res.reason);
    kms_test_rmtree(dir);
}

static void test_tamper_every_field(void **state)
{
    (void)state;
    tamper_field("seq", "55");
    tamper_field("prev", "\"0000000000000000000000000000000000000000000000000000000000000000\"");
    tamper_field("time", "\"2020-01-01T00:00:00.000000Z\"");
    tamper_field("instance", "\"ffffffffffffffff\"");
    tamper_field("type", "\"start\"");
    tamper_field("identity", "\"spiffe://kms.local/mallory\"");
    tamper_field("peer", "\"ipv4:10.0.0.1:1\"");
    tamper_field("method", "\"/kms.v1.KeyManagement/ListKeys\"");
    tamper_field("key", "\"second\"");
    tamper_field("version", "2");
    tamper_field("action", "\"00\"");
    tamper_field("context_hmac", "\"ab\"");
    tamper_field("status", "7");
    tamper_field("error", "\"KMS_EAUTH\"");
    tamper_field("detail", "\"officer=officer9\"");
    tamper_field("duration_us", "124");
}

static void test_delete_swap_insert_truncate(void **state)
{
    (void)state;
    char dir[256];
    struct files f;
    struct lines l;
    kms_audit_verify_result res;

    /* delete seq 4 */
    make_log(dir, sizeof(dir), 10, 0);
    list_files(dir, &f);
    read_lines(f.path[0], &l);
    free(l.v[3]);
    memmove(&l.v[3], &l.v[4], (l.n - 4) * sizeof(l.v[0]));
    l.n--;
    write_lines(f.path[0], &l);
    free_lines(&l);
    res = verify_dir(dir);
    assert_false(res.intact);
    assert_int_equal(res.bad_seq, 4);
    kms_test_rmtree(dir);

    /* swap seq 6 and 7 */
    make_log(dir, sizeof(dir), 10, 0);
    list_files(dir, &f);
    read_lines(f.path[0], &l);
    char *t = l.v[5];
    l.v[5] = l.v[6];
    l.v[6] = t;
    write_lines(f.path[0], &l);
    free_lines(&l);
    res = verify_dir(dir);
    assert_false(res.intact);
    assert_int_equal(res.bad_seq, 6);
    kms_test_rmtree(dir);

    /* insert a copy of seq 2 after seq 7 */
    make_log(dir, sizeof(dir), 10, 0);
    list_files(dir, &f);
    read_lines(f.path[0], &l);
    memmove(&l.v[8], &l.v[7], (l.n - 7) * sizeof(l.v[0]));
    l.v[7] = strdup(l.v[1]);
    l.n++;
    write_lines(f.path[0], &l);
    free_lines(&l);
    res = verify_dir(dir);
    assert_false(res.intact);
    assert_int_equal(res.bad_seq, 8);
    kms_test_rmtree(dir);

    /* truncate a rotated file: cut its last record */
    make_log(dir, sizeof(dir), 40, 4096);
    list_files(dir, &f);
    assert_true(f.n >= 3);
    read_lines(f.path[0], &l);
    size_t kept = l.n - 1; /* seq kept+1 is cut */
    free(l.v[l.n - 1]);
    l.n--;
    write_lines(f.path[0], &l);
    free_lines(&l);
    res = verify_dir(dir);
    assert_false(res.intact);
    assert_int_equal(res.bad_seq, kept + 1);
    kms_test_rmtree(dir);

    /* truncate mid-line */
    make_log(dir, sizeof(dir), 10, 0);
    list_files(dir, &f);
    struct stat st;
    assert_int_equal(stat(f.path[0], &st), 0);
    assert_int_equal(truncate(f.path[0], st.st_size - 10), 0);
    res = verify_dir(dir);
    assert_false(res.intact);
    assert_int_equal(res.bad_seq, 10);
    kms_test_rmtree(dir);
}

static void test_missing_and_reordered_files(void **state)
{
    (void)state;
    char dir[256];
    struct files f;
    struct lines l;
    kms_audit_verify_result res;

    make_log(dir, sizeof(dir), 40, 4096);
    list_files(dir, &f);
    assert_true(f.n >= 3);
    read_lines(f.path[1], &l);
    kms_audit_parsed *p = malloc(sizeof(*p));
    assert_int_equal(kms_audit_rec_parse(l.v[0], strlen(l.v[0]), p), 0);
    uint64_t first_of_second = p->rec.seq;
    free(p);
    free_lines(&l);

    /* the second file left out */
    const char *without[MAX_FILES];
    size_t n = 0;
    for (size_t i = 0; i < f.n; i++)
        if (i != 1)
            without[n++] = f.p[i];
    assert_int_equal(kms_audit_verify_files(without, n, &res), 0);
    assert_false(res.intact);
    assert_int_equal(res.bad_seq, first_of_second);
    assert_non_null(strstr(res.reason, "file"));

    /* the first two files in the wrong order */
    const char *swapped[MAX_FILES];
    for (size_t i = 0; i < f.n; i++)
        swapped[i] = f.p[i];
    swapped[0] = f.p[1];
    swapped[1] = f.p[0];
    assert_int_equal(kms_audit_verify_files(swapped, f.n, &res), 0);
    assert_false(res.intact);
    assert_int_equal(res.bad_seq, 1);

    /* a file that cannot be read at all */
    const char *gone[] = {"/nonexistent/audit-00000000000000000001.jsonl"};
    assert_int_equal(kms_audit_verify_files(gone, 1, &res), KMS_ENOTFOUND);
    kms_test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_round_trip),
        cmocka_unit_test(test_record_parser_is_strict),
        cmocka_unit_test(test_group_commit_and_chain),
        cmocka_unit_test(test_restart_continues_chain_and_cuts_partial_line),
        cmocka_unit_test(test_rotation_chains_files),
        cmocka_unit_test(test_removed_file_fails_closed_then_recovers),
        cmocka_unit_test(test_tamper_every_field),
        cmocka_unit_test(test_delete_swap_insert_truncate),
        cmocka_unit_test(test_missing_and_reordered_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
