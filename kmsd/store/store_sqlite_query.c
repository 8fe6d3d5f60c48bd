/* The SQLite store's statement helper and shared plumbing
 * (store_sqlite_query.h). The store holds metadata and backend references
 * only, never key material, so nothing here is wiped. */
#include "kmsd/store/store_sqlite_query.h"

#include <stdlib.h>
#include <string.h>

#include "base/log.h"

struct sqlite_store *kms_sqlite_impl(kms_store *s)
{
    return (struct sqlite_store *)s->impl;
}

/* A mutex that cannot be taken or released is a broken invariant. */
void kms_sqlite_lock(struct sqlite_store *s)
{
    if (pthread_mutex_lock(&s->mu) != 0)
        abort();
}

void kms_sqlite_unlock(struct sqlite_store *s)
{
    if (pthread_mutex_unlock(&s->mu) != 0)
        abort();
}

/* sqlite3_errmsg names tables and constraints, never values. Busy
 * (another process held the write lock for longer than the busy timeout)
 * may succeed on retry, hence KMS_EUNAVAIL. */
int kms_sqlite_error(sqlite3 *db, int rc, const char *what)
{
    switch (rc) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
        return kms_error_set(KMS_EEXISTS, "%s: already exists", what);
    case SQLITE_CONSTRAINT_FOREIGNKEY:
        return kms_error_set(KMS_ENOTFOUND, "%s: no such key", what);
    default:
        break;
    }
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return kms_error_set(KMS_EUNAVAIL, "%s: database busy: %s", what, sqlite3_errmsg(db));
    case SQLITE_NOMEM:
        return kms_error_set(KMS_ENOMEM, "%s: sqlite out of memory", what);
    default:
        return kms_error_set(KMS_ESTORE, "%s: %s (sqlite %d)", what, sqlite3_errmsg(db), rc);
    }
}

void kms_sqlite_detail_save(struct kms_sqlite_detail *d)
{
    size_t n = strnlen(kms_error_detail(), sizeof(d->text) - 1);
    memcpy(d->text, kms_error_detail(), n);
    d->text[n] = '\0';
}

int kms_sqlite_detail_restore(const struct kms_sqlite_detail *d, int r)
{
    return kms_error_set(r, "%s", d->text);
}

int kms_sqlite_prepare_all(struct sqlite_store *s)
{
    for (int i = 0; i < ST_COUNT; i++) {
        if (sqlite3_prepare_v3(s->db, kms_sqlite_sql[i].text, -1, SQLITE_PREPARE_PERSISTENT,
                               &s->st[i], NULL) != SQLITE_OK)
            return kms_error_set(KMS_ESTORE, "prepare %s: %s", kms_sqlite_sql[i].what,
                                 sqlite3_errmsg(s->db));
    }
    return KMS_OK;
}

void kms_sqlite_finalize_all(struct sqlite_store *s)
{
    for (int i = 0; i < ST_COUNT; i++) {
        sqlite3_finalize(s->st[i]);
        s->st[i] = NULL;
    }
}

/* ---- statements ---------------------------------------------------------------------- */

static int bind_all(kms_sq *q, const kms_sq_param *params, size_t n)
{
    if (n > KMS_SQ_PARAMS_MAX || (params == NULL && n > 0) ||
        (int)n != sqlite3_bind_parameter_count(q->st))
        return kms_error_set(KMS_ESTORE, "%s: %zu parameters for %d placeholders", q->what, n,
                             sqlite3_bind_parameter_count(q->st));
    for (size_t i = 0; i < n; i++) {
        const kms_sq_param *p = &params[i];
        int col = (int)i + 1, rc;
        switch (p->type) {
        case KMS_SQ_T_INT:
            rc = sqlite3_bind_int64(q->st, col, p->i);
            break;
        case KMS_SQ_T_TEXT:
            rc = p->p == NULL ? SQLITE_MISUSE
                              : sqlite3_bind_text(q->st, col, p->p, -1, SQLITE_STATIC);
            break;
        case KMS_SQ_T_BLOB:
            rc = p->len > INT32_MAX || (p->p == NULL && p->len > 0)
                     ? SQLITE_TOOBIG
                     : sqlite3_bind_blob(q->st, col, p->p, (int)p->len, SQLITE_STATIC);
            break;
        default:
            return kms_error_set(KMS_ESTORE, "%s: parameter %d has an unknown type", q->what, col);
        }
        if (rc != SQLITE_OK)
            return kms_sqlite_error(q->db, rc, q->what);
    }
    return KMS_OK;
}

int kms_sq_open(kms_sq *q, struct sqlite_store *s, enum stmt_id id, const kms_sq_param *params,
                size_t n)
{
    int r;
    memset(q, 0, sizeof(*q));
    if ((unsigned)id >= ST_COUNT || s->st[id] == NULL)
        return kms_error_set(KMS_ESTORE, "store: statement %d is not prepared", (int)id);
    /* Every read and write of the state acts only on verified state. */
    if (id != ST_BEGIN && id != ST_COMMIT && id != ST_ROLLBACK &&
        (r = kms_sqlite_state_guard(s)) != 0)
        return r;
    q->db = s->db;
    q->st = s->st[id];
    q->what = kms_sqlite_sql[id].what;
    sqlite3_reset(q->st);
    sqlite3_clear_bindings(q->st);
    if ((r = bind_all(q, params, n)) != 0)
        kms_sq_close(q);
    return r;
}

int kms_sq_open_once(kms_sq *q, sqlite3 *db, const char *sql, const kms_sq_param *params, size_t n)
{
    int r, rc;
    memset(q, 0, sizeof(*q));
    q->db = db;
    q->what = sql;
    q->once = 1;
    if ((rc = sqlite3_prepare_v2(db, sql, -1, &q->st, NULL)) != SQLITE_OK)
        r = kms_sqlite_error(db, rc, sql);
    else if (q->st == NULL) /* only whitespace or a comment */
        r = kms_error_set(KMS_ESTORE, "%s: no statement", sql);
    else
        r = bind_all(q, params, n);
    if (r != 0)
        kms_sq_close(q);
    return r;
}

int kms_sq_step(kms_sq *q)
{
    if (q->st == NULL)
        return kms_error_set(KMS_ESTORE, "store: step on a closed statement");
    int rc = sqlite3_step(q->st);
    switch (rc) {
    case SQLITE_ROW:
        return 1;
    case SQLITE_DONE:
        return 0;
    default:
        return kms_sqlite_error(q->db, rc, q->what);
    }
}

int kms_sq_exec(kms_sq *q, int *changes)
{
    int r = kms_sq_step(q);
    if (r == 1)
        return kms_error_set(KMS_ESTORE, "%s: returned a row", q->what);
    if (r == 0 && changes != NULL)
        *changes = sqlite3_changes(q->db);
    return r;
}

int kms_sq_one(kms_sq *q, const char *missing)
{
    int r = kms_sq_step(q);
    if (r == 0)
        return kms_error_set(KMS_ENOTFOUND, "%s", missing);
    return r == 1 ? KMS_OK : r;
}

void kms_sq_close(kms_sq *q)
{
    if (q->st == NULL)
        return;
    if (q->once) {
        sqlite3_finalize(q->st);
    } else {
        /* Releases read locks and the bound buffers. */
        sqlite3_reset(q->st);
        sqlite3_clear_bindings(q->st);
    }
    q->st = NULL;
}

int kms_sq_run(struct sqlite_store *s, enum stmt_id id, const kms_sq_param *params, size_t n,
               int *changes)
{
    kms_sq q;
    /* A write outside a transaction gets one of its own when the state is
     * authenticated, so its row MACs and the digest commit with it. */
    int wrap = s->mac_fn != NULL && id != ST_BEGIN && id != ST_COMMIT && id != ST_ROLLBACK &&
               s->st[id] != NULL && !sqlite3_stmt_readonly(s->st[id]) &&
               sqlite3_get_autocommit(s->db);
    int r = wrap ? kms_sqlite_tx_begin(s) : KMS_OK;
    if (r != 0)
        return r;
    r = kms_sq_open(&q, s, id, params, n);
    if (r == 0)
        r = kms_sq_exec(&q, changes);
    kms_sq_close(&q);
    return wrap ? kms_sqlite_tx_end(s, r) : r;
}

int kms_sqlite_tx_begin(struct sqlite_store *s)
{
    return kms_sq_run(s, ST_BEGIN, KMS_SQ_NO_ARGS, NULL);
}

/* Commits if r is 0, else (or if the commit fails) rolls back. */
int kms_sqlite_tx_end(struct sqlite_store *s, int r)
{
    if (r == 0)
        r = kms_sqlite_state_seal(s);
    if (r == 0)
        r = kms_sq_run(s, ST_COMMIT, KMS_SQ_NO_ARGS, NULL);
    if (r != 0 && !sqlite3_get_autocommit(s->db)) {
        struct kms_sqlite_detail d;
        kms_sqlite_detail_save(&d);
        if (kms_sq_run(s, ST_ROLLBACK, KMS_SQ_NO_ARGS, NULL) != 0)
            kms_log_error("store: rollback failed: %s", kms_error_detail());
        r = kms_sqlite_detail_restore(&d, r);
    }
    return r;
}

int kms_sq_script(sqlite3 *db, const char *sql, const char *what)
{
    char *msg = NULL;
    int r = KMS_OK;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        r = kms_error_set(KMS_ESTORE, "%s: %s (sqlite %d)", what, msg ? msg : sqlite3_errmsg(db),
                          rc);
    sqlite3_free(msg);
    return r;
}

/* The foreign key would refuse a dependent row too; asking first gives the
 * same answer whatever the connection's foreign_keys setting. */
int kms_sqlite_key_exists(struct sqlite_store *s, const uint8_t id[KMS_KEY_ID_LEN],
                          const char *what)
{
    kms_sq q;
    int r = kms_sq_open(&q, s, ST_KEY_EXISTS, KMS_SQ_ARGS(KMS_SQ_ID(id)));
    if (r == 0 && (r = kms_sq_step(&q)) == 0)
        r = kms_error_set(KMS_ENOTFOUND, "%s: no such key", what);
    kms_sq_close(&q);
    return r < 0 ? r : KMS_OK;
}

/* ---- columns ------------------------------------------------------------------------- */

int kms_sq_text(kms_sq *q, int col, char *out, size_t cap, const char *what)
{
    if (sqlite3_column_type(q->st, col) != SQLITE_TEXT)
        return kms_error_set(KMS_ESTORE, "store: %s is not text", what);
    const unsigned char *t = sqlite3_column_text(q->st, col);
    int n = sqlite3_column_bytes(q->st, col);
    if (t == NULL || n <= 0 || (size_t)n >= cap)
        return kms_error_set(KMS_ESTORE, "store: %s has a bad length (%d)", what, n);
    memcpy(out, t, (size_t)n);
    out[n] = '\0';
    return KMS_OK;
}

int kms_sq_text_or_empty(kms_sq *q, int col, char *out, size_t cap, const char *what)
{
    int type = sqlite3_column_type(q->st, col);
    if (cap == 0)
        return kms_error_set(KMS_ESTORE, "store: no room for %s", what);
    if (type == SQLITE_NULL || (type == SQLITE_TEXT && sqlite3_column_bytes(q->st, col) == 0)) {
        out[0] = '\0';
        return KMS_OK;
    }
    return kms_sq_text(q, col, out, cap, what);
}

int kms_sq_id(kms_sq *q, int col, uint8_t *out)
{
    if (sqlite3_column_type(q->st, col) != SQLITE_BLOB ||
        sqlite3_column_bytes(q->st, col) != KMS_KEY_ID_LEN)
        return kms_error_set(KMS_ESTORE, "store: id is not a %d-byte blob", KMS_KEY_ID_LEN);
    const void *b = sqlite3_column_blob(q->st, col);
    if (b == NULL)
        return kms_error_set(KMS_ESTORE, "store: id unreadable");
    memcpy(out, b, KMS_KEY_ID_LEN);
    return KMS_OK;
}

int kms_sq_int(kms_sq *q, int col, sqlite3_int64 min, sqlite3_int64 max, sqlite3_int64 *out,
               const char *what)
{
    if (sqlite3_column_type(q->st, col) != SQLITE_INTEGER)
        return kms_error_set(KMS_ESTORE, "store: %s is not an integer", what);
    sqlite3_int64 v = sqlite3_column_int64(q->st, col);
    if (v < min || v > max)
        return kms_error_set(KMS_ESTORE, "store: %s out of range (%lld)", what, (long long)v);
    *out = v;
    return KMS_OK;
}

int kms_sq_blob(kms_sq *q, int col, size_t min, uint8_t *out, size_t cap, size_t *len,
                const char *what)
{
    int type = sqlite3_column_type(q->st, col);
    if (type == SQLITE_NULL && min == 0) {
        *len = 0;
        return KMS_OK;
    }
    if (type != SQLITE_BLOB)
        return kms_error_set(KMS_ESTORE, "store: %s is not a blob", what);
    const void *b = sqlite3_column_blob(q->st, col);
    int n = sqlite3_column_bytes(q->st, col);
    if (n < 0 || (size_t)n < min || (size_t)n > cap || (n > 0 && b == NULL))
        return kms_error_set(KMS_ESTORE, "store: %s has a bad size (%d)", what, n);
    if (n > 0)
        memcpy(out, b, (size_t)n);
    *len = (size_t)n;
    return KMS_OK;
}
