/* Offline verification of the audit chain (contract in audit_verify.h). */
#include "kmsd/audit/audit_verify.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "kmsd/audit/audit_checkpoint.h"
#include "kmsd/audit/audit_record.h"

/* One line of one file, kept so the verifier can look one record ahead. */
struct line {
    char *bytes;
    size_t len;
    size_t file, lineno;
};

struct lines {
    struct line *v;
    size_t n, cap;
};

static void lines_free(struct lines *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].bytes);
    free(l->v);
}

static int lines_push(struct lines *l, const char *b, size_t len, size_t file, size_t lineno)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        struct line *v = realloc(l->v, cap * sizeof(*v));
        if (v == NULL)
            return kms_error_set(KMS_ENOMEM, "out of memory");
        l->v = v;
        l->cap = cap;
    }
    char *copy = malloc(len ? len : 1);
    if (copy == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    memcpy(copy, b, len);
    l->v[l->n++] = (struct line){copy, len, file, lineno};
    return KMS_OK;
}

/* Reads a file's lines; an unterminated or over-long last line is kept as
 * it is (it will not parse, and is reported). */
static int read_lines(const char *path, size_t file, struct lines *l)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return kms_error_set(KMS_ENOTFOUND, "cannot read %s", path);
    char *buf = malloc(KMS_AUDIT_LINE_MAX + 1);
    size_t len = 0, lineno = 1;
    int r = buf ? KMS_OK : kms_error_set(KMS_ENOMEM, "out of memory");
    int c;
    while (r == 0 && (c = getc(f)) != EOF) {
        if (len < KMS_AUDIT_LINE_MAX + 1)
            buf[len] = (char)c;
        len++;
        if (c == '\n') {
            r = lines_push(l, buf, len <= KMS_AUDIT_LINE_MAX + 1 ? len : KMS_AUDIT_LINE_MAX + 1,
                           file, lineno++);
            len = 0;
        }
    }
    if (r == 0 && ferror(f))
        r = kms_error_set(KMS_ENOTFOUND, "cannot read %s", path);
    if (r == 0 && len > 0)
        r = lines_push(l, buf, len <= KMS_AUDIT_LINE_MAX ? len : KMS_AUDIT_LINE_MAX, file, lineno);
    free(buf);
    fclose(f);
    return r;
}

/* The first seq a file's name announces, if it is audit-<20 digits>.jsonl. */
static int name_seq(const char *path, uint64_t *seq)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strlen(base) != 6 + 20 + 6 || strncmp(base, "audit-", 6) != 0 ||
        strcmp(base + 26, ".jsonl") != 0)
        return -1;
    uint64_t v = 0;
    for (size_t i = 6; i < 26; i++) {
        if (base[i] < '0' || base[i] > '9' || v > (UINT64_MAX - (uint64_t)(base[i] - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(base[i] - '0');
    }
    *seq = v;
    return 0;
}

static void bad(kms_audit_verify_result *res, uint64_t seq, const char *const *paths,
                const struct line *at, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void bad(kms_audit_verify_result *res, uint64_t seq, const char *const *paths,
                const struct line *at, const char *fmt, ...)
{
    char what[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    res->intact = 0;
    res->bad_seq = seq;
    if (at != NULL)
        snprintf(res->reason, sizeof(res->reason), "%s (%s line %zu)", what, paths[at->file],
                 at->lineno);
    else
        snprintf(res->reason, sizeof(res->reason), "%s", what);
}

int kms_audit_verify_files(const char *const *paths, size_t n, kms_audit_verify_result *res)
{
    return kms_audit_verify_files_signed(paths, n, NULL, res);
}

int kms_audit_verify_files_signed(const char *const *paths, size_t n, const uint8_t *pub,
                                  kms_audit_verify_result *res)
{
    struct lines l = {0};
    kms_audit_parsed *p = NULL, *ahead = NULL;
    uint8_t hash[KMS_AUDIT_HASH_LEN] = {0};
    uint64_t expect = 1;
    int r = KMS_OK;

    memset(res, 0, sizeof(*res));
    res->intact = 1;
    for (size_t i = 0; i < n && r == 0; i++)
        r = read_lines(paths[i], i, &l);
    if (r != 0)
        goto out;
    if ((p = malloc(sizeof(*p))) == NULL || (ahead = malloc(sizeof(*ahead))) == NULL) {
        r = kms_error_set(KMS_ENOMEM, "out of memory");
        goto out;
    }

    size_t file_of_prev = (size_t)-1;
    for (size_t i = 0; i < l.n; i++) {
        const struct line *ln = &l.v[i];
        int first_of_file = ln->file != file_of_prev;
        file_of_prev = ln->file;
        if (kms_audit_rec_parse(ln->bytes, ln->len, p) != 0) {
            bad(res, expect, paths, ln, "record %llu does not parse (changed, cut or not a record)",
                (unsigned long long)expect);
            goto out;
        }
        uint64_t seq = p->rec.seq;
        if (seq != expect) {
            if (seq > expect && first_of_file)
                bad(res, expect, paths, ln,
                    "records %llu to %llu are missing: a file before this one is missing or "
                    "was cut",
                    (unsigned long long)expect, (unsigned long long)(seq - 1));
            else if (seq > expect)
                bad(res, expect, paths, ln, "record %llu is missing (deleted or moved); found %llu",
                    (unsigned long long)expect, (unsigned long long)seq);
            else
                bad(res, expect, paths, ln,
                    "record %llu expected, found %llu: a record was inserted, repeated or "
                    "reordered",
                    (unsigned long long)expect, (unsigned long long)seq);
            goto out;
        }
        uint64_t named;
        if (first_of_file && name_seq(paths[ln->file], &named) == 0 && named != seq) {
            bad(res, seq, paths, ln, "the file is named for record %llu but starts with %llu",
                (unsigned long long)named, (unsigned long long)seq);
            goto out;
        }
        if (CRYPTO_memcmp(p->rec.prev, hash, KMS_AUDIT_HASH_LEN) != 0) {
            /* Either the record before was changed, or this one's "prev".
             * If this record still links to the next, it is intact. */
            uint8_t mine[KMS_AUDIT_HASH_LEN];
            int this_ok = 0;
            if (i + 1 < l.n && kms_audit_rec_parse(l.v[i + 1].bytes, l.v[i + 1].len, ahead) == 0 &&
                kms_audit_chain_next(p->rec.prev, ln->bytes, ln->len, mine) == 0)
                this_ok = CRYPTO_memcmp(mine, ahead->rec.prev, KMS_AUDIT_HASH_LEN) == 0;
            kms_error_clear();
            if (this_ok && seq > 1)
                bad(res, seq - 1, paths, i > 0 ? &l.v[i - 1] : ln,
                    "record %llu was changed: its hash is not the \"prev\" of record %llu",
                    (unsigned long long)(seq - 1), (unsigned long long)seq);
            else if (i + 1 < l.n || seq == 1)
                bad(res, seq, paths, ln,
                    "record %llu was changed: its \"prev\" is not the hash of the record before",
                    (unsigned long long)seq);
            else /* the last record: nothing after it tells which of the two changed */
                bad(res, seq - 1, paths, ln,
                    "record %llu (or the \"prev\" of the last record, %llu) was changed",
                    (unsigned long long)(seq - 1), (unsigned long long)seq);
            goto out;
        }
        if (strcmp(p->rec.type, KMS_AUDIT_CHECKPOINT_TYPE) == 0) {
            res->checkpoints++;
            /* In the chain, but forged or signed by another key: it vouches
             * for nothing, and whoever could write it could rewrite what it
             * claims to cover. */
            if (pub != NULL && kms_audit_checkpoint_verify(p, pub) != 0) {
                bad(res, seq, paths, ln, "checkpoint %llu is not valid: %s",
                    (unsigned long long)seq, kms_error_detail());
                kms_error_clear();
                goto out;
            }
            if (pub != NULL) {
                res->checkpoints_verified++;
                res->covered_seq = seq;
            }
        }
        if ((r = kms_audit_chain_next(hash, ln->bytes, ln->len, hash)) != 0)
            goto out;
        res->records++;
        res->last_seq = seq;
        expect = seq + 1;
    }
out:
    /* Records after the last verified checkpoint (all of them without a
     * key): chained, but nothing signed vouches for them. */
    res->unverified = res->records - (res->covered_seq <= res->records ? res->covered_seq : 0);
    free(p);
    free(ahead);
    lines_free(&l);
    return r;
}
