/* The SQLite store, schema 5: auditors, the identities that may read the
 * audit log (contract: store.h). */
#include <stdlib.h>
#include <string.h>

#include "kmsd/store/store_sqlite_internal.h"
#include "kmsd/store/store_sqlite_query.h"

#define AUDITOR_PAGE 16 /* auditors read per lock hold in auditor_list */

/* A NUL-terminated string of 1..max bytes within its buffer. */
static int valid_text(const char *t, size_t max)
{
    if (t == NULL)
        return 0;
    size_t n = strnlen(t, max + 1);
    return n >= 1 && n <= max;
}

int kms_sqlite_auditor_add(kms_store *store, const kms_auditor_rec *a)
{
    struct sqlite_store *s;
    int r;

    if (store == NULL || a == NULL || !valid_text(a->identity, KMS_IDENTITY_MAX))
        return kms_error_set(KMS_EINVAL, "store: auditor identity empty or unterminated");
    s = kms_sqlite_impl(store);

    kms_sqlite_lock(s);
    r = kms_sq_run(s, ST_AUDITOR_INSERT,
                   KMS_SQ_ARGS(KMS_SQ_TEXT(a->identity), KMS_SQ_INT(a->created_at)), NULL);
    kms_sqlite_unlock(s);
    return r;
}

int kms_sqlite_auditor_remove(kms_store *store, const char *identity)
{
    struct sqlite_store *s;
    int r, changes = 0;

    if (store == NULL || !valid_text(identity, KMS_IDENTITY_MAX))
        return kms_error_set(KMS_EINVAL, "store: no auditor identity");
    s = kms_sqlite_impl(store);

    kms_sqlite_lock(s);
    r = kms_sq_run(s, ST_AUDITOR_DELETE, KMS_SQ_ARGS(KMS_SQ_TEXT(identity)), &changes);
    if (r == 0 && changes == 0)
        r = kms_error_set(KMS_ENOTFOUND, "no such auditor");
    kms_sqlite_unlock(s);
    return r;
}

static int auditor_page(struct sqlite_store *s, const char *after, kms_auditor_rec *page, size_t *n)
{
    kms_sq q;
    sqlite3_int64 created = 0;
    size_t got = 0;
    int r;

    kms_sqlite_lock(s);
    if ((r = kms_sq_open(&q, s, ST_AUDITOR_PAGE,
                         KMS_SQ_ARGS(KMS_SQ_TEXT(after), KMS_SQ_INT(AUDITOR_PAGE)))) != 0)
        goto out;
    while (got < AUDITOR_PAGE && (r = kms_sq_step(&q)) == 1) {
        kms_auditor_rec *a = &page[got];
        memset(a, 0, sizeof(*a));
        if ((r = kms_sq_text(&q, 0, a->identity, sizeof(a->identity), "auditor identity")) != 0 ||
            (r = kms_sq_int(&q, 1, INT64_MIN, INT64_MAX, &created, "auditor created_at")) != 0)
            goto out;
        a->created_at = created;
        got++;
    }
    if (r < 0)
        goto out;
    r = KMS_OK;
    *n = got;
out:
    kms_sq_close(&q);
    kms_sqlite_unlock(s);
    return r;
}

int kms_sqlite_auditor_list(kms_store *store, kms_store_auditor_cb cb, void *ctx)
{
    char after[KMS_IDENTITY_MAX + 1] = ""; /* identities are non-empty: "" sorts first */
    kms_auditor_rec *page = NULL;
    size_t n = 0;
    int r = KMS_OK;

    if (store == NULL || cb == NULL)
        return kms_error_set(KMS_EINVAL, "store: no callback");
    if ((page = calloc(AUDITOR_PAGE, sizeof(*page))) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    do {
        if ((r = auditor_page(kms_sqlite_impl(store), after, page, &n)) != 0)
            goto out;
        for (size_t i = 0; i < n; i++)
            if ((r = cb(ctx, &page[i])) != 0)
                goto out;
        if (n > 0)
            memcpy(after, page[n - 1].identity, sizeof(after));
    } while (n == AUDITOR_PAGE);
out:
    free(page);
    return r;
}
