/* Reading the audit log back by sequence number (contract in
 * audit_reader.h; file names and format in audit_log.h, audit_record.h). */
#include "kmsd/audit/audit_reader.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NAME_PREFIX "audit-"
#define NAME_SUFFIX ".jsonl"
#define SEQ_DIGITS 20
#define READ_BUF (64u * 1024u) /* > KMS_AUDIT_LINE_MAX: a whole line always fits */
#define SEQ_PREFIX "{\"seq\":"

/* ---- the files, in chain order ---------------------------------------------------- */

struct files {
    uint64_t *first; /* first seq of each file, ascending */
    size_t n, cap;
};

/* The first seq a file name stands for; -1 if the name is not a log file's. */
static int name_seq(const char *name, uint64_t *seq)
{
    size_t pl = strlen(NAME_PREFIX), sl = strlen(NAME_SUFFIX);
    if (strlen(name) != pl + SEQ_DIGITS + sl || memcmp(name, NAME_PREFIX, pl) != 0 ||
        strcmp(name + pl + SEQ_DIGITS, NAME_SUFFIX) != 0)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < SEQ_DIGITS; i++) {
        char c = name[pl + i];
        if (c < '0' || c > '9' || v > (UINT64_MAX - (uint64_t)(c - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(c - '0');
    }
    *seq = v;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int list_files(const char *dir, struct files *f)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return kms_error_set(KMS_EUNAVAIL, "audit: cannot open %s: %s", dir, strerror(errno));
    struct dirent *e;
    int r = KMS_OK;
    while ((e = readdir(d)) != NULL) {
        uint64_t s;
        if (name_seq(e->d_name, &s) != 0)
            continue;
        if (f->n == f->cap) {
            size_t cap = f->cap ? 2 * f->cap : 64;
            uint64_t *v = realloc(f->first, cap * sizeof(*v));
            if (v == NULL) {
                r = kms_error_set(KMS_ENOMEM, "out of memory");
                break;
            }
            f->first = v;
            f->cap = cap;
        }
        f->first[f->n++] = s;
    }
    closedir(d);
    if (r == 0 && f->n > 1)
        qsort(f->first, f->n, sizeof(*f->first), cmp_u64);
    return r;
}

/* ---- complete lines of one file ----------------------------------------------------- */

struct lines {
    int fd;
    char *buf; /* READ_BUF bytes */
    size_t start, end;
    int eof;
    size_t lineno;
};

/* The next complete line (LF included) into *line, *len: 1; 0 at the end
 * of the file, where a last line without its LF (a write in progress or
 * cut by a crash) is not returned; KMS_ESTORE for a line longer than a
 * record may be, KMS_EUNAVAIL for a read error. */
static int next_line(struct lines *l, const char *path, const char **line, size_t *len)
{
    for (;;) {
        char *lf = memchr(l->buf + l->start, '\n', l->end - l->start);
        if (lf != NULL) {
            *line = l->buf + l->start;
            *len = (size_t)(lf - *line) + 1;
            l->start += *len;
            l->lineno++;
            return 1;
        }
        if (l->end - l->start >= KMS_AUDIT_LINE_MAX)
            return kms_error_set(KMS_ESTORE, "audit: %s line %zu is longer than a record", path,
                                 l->lineno + 1);
        if (l->eof)
            return 0;
        memmove(l->buf, l->buf + l->start, l->end - l->start);
        l->end -= l->start;
        l->start = 0;
        ssize_t n = read(l->fd, l->buf + l->end, READ_BUF - l->end);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return kms_error_set(KMS_EUNAVAIL, "audit: cannot read %s: %s", path, strerror(errno));
        if (n == 0)
            l->eof = 1;
        l->end += (size_t)n;
    }
}

/* The seq at the start of a line, without parsing the rest: lines before
 * from_seq are skipped this way. KMS_ESTORE if the line does not start
 * like a record. */
static int line_seq(const char *line, size_t len, uint64_t *seq)
{
    size_t pl = strlen(SEQ_PREFIX), i = pl;
    uint64_t v = 0;
    if (len < pl + 1 || memcmp(line, SEQ_PREFIX, pl) != 0)
        return KMS_ESTORE;
    for (; i < len && line[i] >= '0' && line[i] <= '9'; i++) {
        if (v > (UINT64_MAX - (uint64_t)(line[i] - '0')) / 10)
            return KMS_ESTORE;
        v = v * 10 + (uint64_t)(line[i] - '0');
    }
    if (i == pl || i == len || line[i] != ',')
        return KMS_ESTORE;
    *seq = v;
    return KMS_OK;
}

/* ---- the walk ------------------------------------------------------------------------ */

struct walk {
    uint64_t expect;   /* the next seq to hand over */
    uint64_t last_seq; /* none past it */
    size_t limit, taken;
    int done;
    kms_audit_read_cb cb;
    void *ctx;
    kms_audit_parsed *parsed;
};

/* Hands over the records of one file with seq in [w->expect, end). */
static int read_file(struct walk *w, const char *path, uint64_t end)
{
    struct lines l = {.fd = -1};
    const char *line = NULL;
    size_t len = 0;
    int r;

    if ((l.buf = malloc(READ_BUF)) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    if ((l.fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0) {
        r = kms_error_set(KMS_EUNAVAIL, "audit: cannot open %s: %s", path, strerror(errno));
        goto out;
    }
    while ((r = next_line(&l, path, &line, &len)) == 1) {
        uint64_t seq = 0;
        if (line_seq(line, len, &seq) != 0) {
            r = kms_error_set(KMS_ESTORE, "audit: %s line %zu is not a record", path, l.lineno);
            goto out;
        }
        if (seq < w->expect)
            continue; /* before the range asked for */
        if (seq >= end)
            break; /* superseded by the next file */
        if (seq > w->last_seq) {
            w->done = 1; /* not durable yet */
            break;
        }
        if (seq != w->expect) {
            r = kms_error_set(KMS_ESTORE,
                              "audit: %s line %zu holds record %llu where %llu was expected: "
                              "run `kmsctl audit verify` on the files",
                              path, l.lineno, (unsigned long long)seq,
                              (unsigned long long)w->expect);
            goto out;
        }
        kms_audit_read_rec rec = {.parsed = w->parsed, .line = line, .len = len};
        if (kms_audit_rec_parse(line, len, w->parsed) != 0) {
            r = kms_error_set(KMS_ESTORE, "audit: %s line %zu (record %llu) does not parse", path,
                              l.lineno, (unsigned long long)seq);
            goto out;
        }
        if ((r = kms_audit_chain_next(w->parsed->rec.prev, line, len, rec.hash)) != 0)
            goto out;
        if ((r = w->cb(w->ctx, &rec)) != 0) {
            if (r == KMS_AUDIT_READ_STOP) {
                w->done = 1;
                r = KMS_OK;
            }
            goto out;
        }
        w->taken++;
        w->expect = seq + 1;
        if (w->taken == w->limit || seq == UINT64_MAX) {
            w->done = 1;
            break;
        }
    }
    if (r == 1 || r == 0)
        r = KMS_OK;
out:
    if (l.fd >= 0)
        close(l.fd);
    free(l.buf);
    return r;
}

int kms_audit_read(const char *dir, uint64_t from_seq, uint64_t last_seq, size_t limit,
                   kms_audit_read_cb cb, void *ctx, size_t *n)
{
    struct files f = {0};
    struct walk w = {.last_seq = last_seq, .limit = limit, .cb = cb, .ctx = ctx};
    char path[4096];
    int r;

    if (dir == NULL || cb == NULL)
        return kms_error_set(KMS_EINVAL, "audit: no directory or callback");
    if ((r = list_files(dir, &f)) != 0)
        goto out;
    if (f.n == 0 || limit == 0)
        goto out;
    /* The file holding from_seq: the last one starting at or before it. */
    size_t i = 0;
    while (i + 1 < f.n && f.first[i + 1] <= from_seq)
        i++;
    w.expect = from_seq > f.first[i] ? from_seq : f.first[i];
    if (w.expect == 0)
        w.expect = 1; /* records count from 1 */
    if ((w.parsed = malloc(sizeof(*w.parsed))) == NULL) {
        r = kms_error_set(KMS_ENOMEM, "out of memory");
        goto out;
    }
    for (; i < f.n && !w.done && w.expect <= last_seq; i++) {
        uint64_t end = i + 1 < f.n ? f.first[i + 1] : UINT64_MAX;
        if (w.expect >= end)
            continue;
        if (w.expect < f.first[i]) {
            r = kms_error_set(KMS_ESTORE,
                              "audit: records %llu..%llu are missing (no file holds them): run "
                              "`kmsctl audit verify` on the files",
                              (unsigned long long)w.expect, (unsigned long long)f.first[i] - 1);
            goto out;
        }
        int len = snprintf(path, sizeof(path), "%s/" NAME_PREFIX "%020llu" NAME_SUFFIX, dir,
                           (unsigned long long)f.first[i]);
        if (len <= 0 || (size_t)len >= sizeof(path)) {
            r = kms_error_set(KMS_EINVAL, "audit: directory path too long");
            goto out;
        }
        if ((r = read_file(&w, path, end)) != 0)
            goto out;
    }
out:
    if (r == 0 && n != NULL)
        *n = w.taken;
    free(w.parsed);
    free(f.first);
    return r;
}
