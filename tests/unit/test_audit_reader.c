/* The audit log reader (kmsd/audit/audit_reader.h) on real files written
 * by the real writer: ranges, limits, the durable bound, files across a
 * rotation, a partial last line, a file superseded after a failed batch,
 * and a damaged or incomplete log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kmsd/audit/audit_log.h"
#include "kmsd/audit/audit_reader.h"
#include "kmsd/audit/audit_record.h"
#include "test_util.h"

#define MAX_RECS 2048

/* What the callback saw. */
struct seen {
    uint64_t seq[MAX_RECS];
    char *line[MAX_RECS];
    uint8_t prev[MAX_RECS][KMS_AUDIT_HASH_LEN], hash[MAX_RECS][KMS_AUDIT_HASH_LEN];
    size_t n;
    size_t stop_after; /* 0: never stop */
};

static int collect(void *ctx, const kms_audit_read_rec *r)
{
    struct seen *s = ctx;
    if (s->stop_after != 0 && s->n == s->stop_after)
        return KMS_AUDIT_READ_STOP;
    assert_true(s->n < MAX_RECS);
    assert_true(r->len > 0 && r->line[r->len - 1] == '\n');
    s->seq[s->n] = r->parsed->rec.seq;
    s->line[s->n] = strndup(r->line, r->len);
    memcpy(s->prev[s->n], r->parsed->rec.prev, KMS_AUDIT_HASH_LEN);
    memcpy(s->hash[s->n], r->hash, KMS_AUDIT_HASH_LEN);
    s->n++;
    return KMS_OK;
}

static void seen_clear(struct seen *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->line[i]);
    memset(s, 0, sizeof(*s));
}

static int fail_cb(void *ctx, const kms_audit_read_rec *r)
{
    (void)ctx;
    (void)r;
    return KMS_ENOMEM;
}

/* A fresh log dir with n records written by the real writer (files of at
 * most max_bytes: 0 for one file). */
static void make_log(char *dir, size_t cap, size_t n, uint64_t max_bytes)
{
    char tmpl[] = "/tmp/kms-audit-reader-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    snprintf(dir, cap, "%s", tmpl);
    kms_audit_config cfg = {.dir = dir, .max_bytes = max_bytes};
    kms_audit *a = NULL;
    assert_int_equal(kms_audit_open(&cfg, &a), KMS_OK);
    for (size_t i = 0; i < n; i++) {
        char detail[64];
        snprintf(detail, sizeof(detail), "n=%zu", i);
        kms_audit_rec rec = {.type = "rpc",
                             .identity = "spiffe://test/app",
                             .peer = "ipv4:127.0.0.1:1",
                             .method = "/kms.v1.KeyManagement/Encrypt",
                             .key = "demo",
                             .version = 1,
                             .action = "",
                             .context_hmac = "",
                             .error = "",
                             .detail = detail};
        assert_int_equal(kms_audit_append(a, &rec), KMS_OK);
    }
    assert_int_equal(kms_audit_durable_seq(a), n);
    kms_audit_close(a);
}

static void rm_log(const char *dir)
{
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            char p[600];
            if (e->d_name[0] == '.')
                continue;
            snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static size_t count_files(const char *dir)
{
    size_t n = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strncmp(e->d_name, "audit-", 6) == 0;
    closedir(d);
    return n;
}

static void file_of(const char *dir, uint64_t first, char *out, size_t cap)
{
    snprintf(out, cap, "%s/audit-%020llu.jsonl", dir, (unsigned long long)first);
}

static void append_bytes(const char *path, const char *bytes)
{
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, bytes, strlen(bytes)), (ssize_t)strlen(bytes));
    close(fd);
}

/* All the log's lines, in file order, concatenated. */
static size_t all_lines(const char *dir, char *buf, size_t cap)
{
    char names[64][64];
    size_t n = 0, len = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, "audit-", 6) == 0 && n < 64)
            snprintf(names[n++], sizeof(names[0]), "%.63s", e->d_name);
    closedir(d);
    qsort(names, n, sizeof(names[0]), (int (*)(const void *, const void *))strcmp);
    for (size_t i = 0; i < n; i++) {
        char p[600];
        snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
        len += kms_test_read_file(p, buf + len, cap - len);
    }
    buf[len < cap ? len : cap - 1] = '\0';
    return len;
}

/* ---- tests ------------------------------------------------------------------------- */

static void reads_every_record_as_written_and_chained(void **state)
{
    (void)state;
    char dir[128];
    static struct seen s;
    static char files[1 << 20];
    make_log(dir, sizeof(dir), 30, 0);
    size_t n = 0;
    assert_int_equal(kms_audit_read(dir, 0, UINT64_MAX, 1000, collect, &s, &n), KMS_OK);
    assert_int_equal(n, 30);
    assert_int_equal(s.n, 30);
    /* the lines, in order, are the files' bytes */
    size_t len = all_lines(dir, files, sizeof(files)), off = 0;
    for (size_t i = 0; i < s.n; i++) {
        assert_int_equal(s.seq[i], i + 1);
        size_t l = strlen(s.line[i]);
        assert_true(off + l <= len);
        assert_memory_equal(files + off, s.line[i], l);
        off += l;
        /* each record's hash is the next one's prev */
        if (i > 0)
            assert_memory_equal(s.prev[i], s.hash[i - 1], KMS_AUDIT_HASH_LEN);
    }
    assert_int_equal(off, len);
    seen_clear(&s);
    rm_log(dir);
}

static void ranges_limits_and_the_durable_bound(void **state)
{
    (void)state;
    char dir[128];
    static struct seen s;
    size_t n = 99;
    make_log(dir, sizeof(dir), 20, 0);

    /* from the middle, bounded by limit */
    assert_int_equal(kms_audit_read(dir, 5, UINT64_MAX, 3, collect, &s, &n), KMS_OK);
    assert_int_equal(n, 3);
    assert_int_equal(s.seq[0], 5);
    assert_int_equal(s.seq[2], 7);
    seen_clear(&s);
    /* the last record, exactly */
    assert_int_equal(kms_audit_read(dir, 20, UINT64_MAX, 10, collect, &s, &n), KMS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(s.seq[0], 20);
    seen_clear(&s);
    /* past the end: nothing, and no error */
    assert_int_equal(kms_audit_read(dir, 21, UINT64_MAX, 10, collect, &s, &n), KMS_OK);
    assert_int_equal(n, 0);
    assert_int_equal(kms_audit_read(dir, UINT64_MAX, UINT64_MAX, 10, collect, &s, &n), KMS_OK);
    assert_int_equal(n, 0);
    /* limit 0 reads nothing (the handler maps a request's 0 to the default) */
    assert_int_equal(kms_audit_read(dir, 1, UINT64_MAX, 0, collect, &s, &n), KMS_OK);
    assert_int_equal(n, 0);
    /* nothing past the durable bound */
    assert_int_equal(kms_audit_read(dir, 0, 12, 1000, collect, &s, &n), KMS_OK);
    assert_int_equal(n, 12);
    assert_int_equal(s.seq[11], 12);
    seen_clear(&s);
    assert_int_equal(kms_audit_read(dir, 0, 0, 1000, collect, &s, &n), KMS_OK);
    assert_int_equal(n, 0);
    /* the callback may stop early, or fail */
    s.stop_after = 4;
    assert_int_equal(kms_audit_read(dir, 0, UINT64_MAX, 1000, collect, &s, &n), KMS_OK);
    assert_int_equal(n, 4);
    seen_clear(&s);
    assert_int_equal(kms_audit_read(dir, 0, UINT64_MAX, 1000, fail_cb, NULL, &n), KMS_ENOMEM);
    /* no such directory */
    assert_int_equal(kms_audit_read("/nonexistent/kms-audit", 0, UINT64_MAX, 10, collect, &s, &n),
                     KMS_EUNAVAIL);
    rm_log(dir);
}

static void reads_across_rotated_files(void **state)
{
    (void)state;
    char dir[128];
    static struct seen s;
    size_t n = 0;
    make_log(dir, sizeof(dir), 200, 4096);
    assert_true(count_files(dir) >= 5);
    assert_int_equal(kms_audit_read(dir, 0, UINT64_MAX, 1000, collect, &s, &n), KMS_OK);
    assert_int_equal(n, 200);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(s.seq[i], i + 1);
        if (i > 0) /* the chain runs across files */
            assert_memory_equal(s.prev[i], s.hash[i - 1], KMS_AUDIT_HASH_LEN);
    }
    seen_clear(&s);
    /* from a record in the middle of some later file, across the next ones */
    assert_int_equal(kms_audit_read(dir, 77, UINT64_MAX, 100, collect, &s, &n), KMS_OK);
    assert_int_equal(n, 100);
    assert_int_equal(s.seq[0], 77);
    assert_int_equal(s.seq[99], 176);
    seen_clear(&s);
    rm_log(dir);
}

static void never_returns_a_partial_line(void **state)
{
    (void)state;
    char dir[128], path[300];
    static struct seen s;
    size_t n = 0;
    make_log(dir, sizeof(dir), 5, 0);
    file_of(dir, 1, path, sizeof(path));
    append_bytes(path, "{\"seq\":6,\"prev\":\"00"); /* a write in progress */
    assert_int_equal(kms_audit_read(dir, 0, UINT64_MAX, 1000, collect, &s, &n), KMS_OK);
    assert_int_equal(n, 5);
    assert_int_equal(s.seq[4], 5);
    seen_clear(&s);
    assert_int_equal(kms_audit_read(dir, 6, UINT64_MAX, 1000, collect, &s, &n), KMS_OK);
    assert_int_equal(n, 0);
    rm_log(dir);
}

/* After a failed batch the writer starts a new file at the first record
 * that was not durable: the older file's tail from there is not the log. */
static void a_superseded_tail_is_skipped(void **state)
{
    (void)state;
    char dir[128], a[300], b[300];
    static struct seen s;
    static char buf[65536];
    size_t n = 0;
    make_log(dir, sizeof(dir), 6, 0);
    file_of(dir, 1, a, sizeof(a));
    /* split: records 4..6 move to a file of their own; file 1 keeps a stale
     * copy of record 4 with a different detail after its record 3 */
    size_t len = kms_test_read_file(a, buf, sizeof(buf));
    char *l4 = buf;
    for (int i = 0; i < 3; i++)
        l4 = strchr(l4, '\n') + 1;
    file_of(dir, 4, b, sizeof(b));
    FILE *f = fopen(b, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(l4, 1, len - (size_t)(l4 - buf), f), len - (size_t)(l4 - buf));
    fclose(f);
    char *l5 = strchr(l4, '\n') + 1;
    char stale[8192];
    snprintf(stale, sizeof(stale), "%.*s", (int)(l5 - l4), l4);
    char *d = strstr(stale, "\"n=3\"");
    assert_non_null(d);
    d[3] = '9'; /* "n=9": not what file 4 holds */
    assert_int_equal(truncate(a, (off_t)(l4 - buf)), 0);
    append_bytes(a, stale);

    assert_int_equal(kms_audit_read(dir, 0, UINT64_MAX, 1000, collect, &s, &n), KMS_OK);
    assert_int_equal(n, 6);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(s.seq[i], i + 1);
    assert_null(strstr(s.line[3], "\"n=9\""));
    assert_non_null(strstr(s.line[3], "\"n=3\""));
    seen_clear(&s);
    rm_log(dir);
}

static void a_damaged_or_incomplete_log_is_refused(void **state)
{
    (void)state;
    char dir[128], path[300];
    static struct seen s;
    static char buf[65536];
    size_t n = 0;

    /* a line that is not a record */
    make_log(dir, sizeof(dir), 5, 0);
    file_of(dir, 1, path, sizeof(path));
    append_bytes(path, "hello\n");
    assert_int_equal(kms_audit_read(dir, 0, UINT64_MAX, 1000, collect, &s, &n), KMS_ESTORE);
    seen_clear(&s);
    rm_log(dir);

    /* a record whose fields were edited so that it no longer parses */
    make_log(dir, sizeof(dir), 5, 0);
    file_of(dir, 1, path, sizeof(path));
    size_t len = kms_test_read_file(path, buf, sizeof(buf));
    char *t = strstr(buf, "\"type\":\"rpc\"");
    assert_non_null(t);
    t[1] = 'T'; /* "Type": the field order and names are fixed */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    fclose(f);
    assert_int_equal(kms_audit_read(dir, 0, UINT64_MAX, 1000, collect, &s, &n), KMS_ESTORE);
    seen_clear(&s);
    rm_log(dir);

    /* a deleted line: a gap in the sequence */
    make_log(dir, sizeof(dir), 5, 0);
    file_of(dir, 1, path, sizeof(path));
    len = kms_test_read_file(path, buf, sizeof(buf));
    char *l2 = strchr(buf, '\n') + 1, *l3 = strchr(l2, '\n') + 1;
    memmove(l2, l3, len - (size_t)(l3 - buf));
    len -= (size_t)(l3 - l2);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    fclose(f);
    assert_int_equal(kms_audit_read(dir, 0, UINT64_MAX, 1000, collect, &s, &n), KMS_ESTORE);
    assert_int_equal(s.n, 1); /* record 1 was read before the gap */
    seen_clear(&s);
    rm_log(dir);

    /* a missing rotated file */
    make_log(dir, sizeof(dir), 100, 4096);
    assert_true(count_files(dir) >= 3);
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    uint64_t firsts[64];
    size_t nf = 0;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, "audit-", 6) == 0 && nf < 64)
            firsts[nf++] = strtoull(e->d_name + 6, NULL, 10);
    closedir(d);
    uint64_t second = UINT64_MAX, first = UINT64_MAX;
    for (size_t i = 0; i < nf; i++)
        if (firsts[i] < first)
            first = firsts[i];
    for (size_t i = 0; i < nf; i++)
        if (firsts[i] > first && firsts[i] < second)
            second = firsts[i];
    file_of(dir, second, path, sizeof(path));
    assert_int_equal(unlink(path), 0);
    assert_int_equal(kms_audit_read(dir, 0, UINT64_MAX, 1000, collect, &s, &n), KMS_ESTORE);
    assert_int_equal(s.n, second - 1);
    seen_clear(&s);
    rm_log(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reads_every_record_as_written_and_chained),
        cmocka_unit_test(ranges_limits_and_the_durable_bound),
        cmocka_unit_test(reads_across_rotated_files),
        cmocka_unit_test(never_returns_a_partial_line),
        cmocka_unit_test(a_superseded_tail_is_skipped),
        cmocka_unit_test(a_damaged_or_incomplete_log_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
