/* The SQLite store (contract: store.h; design notes: docs/storage.md):
 * open, keys, versions and nonce usage.
 *
 * One connection guarded by one mutex. Every statement the ops use is
 * prepared once at open and reset, with its bindings cleared, after each
 * use. WAL + synchronous=FULL: a write is on disk when its call returns.
 * The schema and its migrations are in store_sqlite_schema.c. The store
 * holds metadata and backend references only, never key material, so
 * nothing here is wiped. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "kmsd/store/store.h"
#include "kmsd/store/store_sqlite_internal.h"

#define KEY_PAGE 64     /* keys read per lock hold in key_list */
#define VERSION_PAGE 16 /* versions read per lock hold in version_list */

_Static_assert(ST_COUNT <= KMS_SQLITE_STMTS_MAX, "room for the prepared statements");

#define KEY_COLUMNS                                                                                \
    "id, name, backend, primary_version, min_decrypt_version, created_at, rotation_period_days, "  \
    "deletion_at"
#define VERSION_COLUMNS "key_id, version, state, created_at, usage_count, backend_ref"

static const char *const stmt_sql[ST_COUNT] = {
    [ST_KEY_INSERT] = "INSERT INTO keys (" KEY_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [ST_KEY_BY_NAME] = "SELECT " KEY_COLUMNS " FROM keys WHERE name = ?1",
    [ST_KEY_BY_ID] = "SELECT " KEY_COLUMNS " FROM keys WHERE id = ?1",
    [ST_KEY_PAGE] = "SELECT " KEY_COLUMNS " FROM keys WHERE name > ?1 ORDER BY name LIMIT ?2",
    [ST_KEY_EXISTS] = "SELECT 1 FROM keys WHERE id = ?1",
    [ST_VERSION_INSERT] =
        "INSERT INTO key_versions (" VERSION_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_SET_PRIMARY] = "UPDATE keys SET primary_version = ?1 WHERE id = ?2",
    [ST_VERSION_GET] =
        "SELECT " VERSION_COLUMNS " FROM key_versions WHERE key_id = ?1 AND version = ?2",
    [ST_VERSION_PAGE] = ("SELECT " VERSION_COLUMNS " FROM key_versions"
                         " WHERE key_id = ?1 AND version > ?2 ORDER BY version LIMIT ?3"),
    [ST_VERSION_STATE] = "UPDATE key_versions SET state = ?1 WHERE key_id = ?2 AND version = ?3",
    /* "usage_count + n <= limit", written so that it cannot overflow:
     * 0 <= n, limit <= INT64_MAX, so limit - n never does. */
    [ST_USAGE_ADD] = ("UPDATE key_versions SET usage_count = usage_count + ?1"
                      " WHERE key_id = ?2 AND version = ?3 AND usage_count <= ?4 - ?1"),
    [ST_USAGE_GET] = "SELECT usage_count FROM key_versions WHERE key_id = ?1 AND version = ?2",
    [ST_POLICY_DELETE] = "DELETE FROM key_policies WHERE key_id = ?1",
    [ST_POLICY_INSERT] = "INSERT INTO key_policies (key_id, action, identity) VALUES (?1, ?2, ?3)",
    [ST_POLICY_PAGE] = ("SELECT action, identity FROM key_policies"
                        " WHERE key_id = ?1 AND (action, identity) > (?2, ?3)"
                        " ORDER BY action, identity LIMIT ?4"),
    [ST_OFFICER_INSERT] = ("INSERT INTO officers (id, identity, signing_key_pem, created_at)"
                           " VALUES (?1, ?2, ?3, ?4)"),
    [ST_OFFICER_DELETE] = "DELETE FROM officers WHERE id = ?1",
    [ST_OFFICER_PAGE] = ("SELECT id, identity, signing_key_pem, created_at FROM officers"
                         " WHERE id > ?1 ORDER BY id LIMIT ?2"),
    [ST_THRESHOLD_SET] =
        ("INSERT INTO thresholds (action_type, threshold) VALUES (?1, ?2)"
         " ON CONFLICT (action_type) DO UPDATE SET threshold = excluded.threshold"),
    [ST_THRESHOLD_GET] = "SELECT threshold FROM thresholds WHERE action_type = ?1",
    [ST_THRESHOLD_PAGE] = ("SELECT action_type, threshold FROM thresholds"
                           " WHERE action_type > ?1 ORDER BY action_type LIMIT ?2"),
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
};

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

/* Maps an SQLite result code (extended codes are on) to a kms error and
 * records the detail. sqlite3_errmsg names tables and constraints, never
 * values. Busy (another process held the write lock for longer than the
 * busy timeout) may succeed on retry, hence KMS_EUNAVAIL; anything else
 * unexpected is KMS_ESTORE. */
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

void kms_sqlite_detail_restore(const struct kms_sqlite_detail *d, int r)
{
    (void)kms_error_set(r, "%s", d->text);
}

/* Returns statement id reset and unbound, ready for binding. */
sqlite3_stmt *kms_sqlite_stmt(struct sqlite_store *s, enum stmt_id id)
{
    sqlite3_stmt *st = s->st[id];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

/* After every use: releases read locks and the bound buffers. NULL-safe. */
void kms_sqlite_done(sqlite3_stmt *st)
{
    if (st == NULL)
        return;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

int kms_sqlite_bind_id(sqlite3_stmt *st, int col, const uint8_t *id)
{
    return sqlite3_bind_blob(st, col, id, KMS_KEY_ID_LEN, SQLITE_STATIC);
}

/* Runs a statement that returns no rows (BEGIN, COMMIT, ROLLBACK). */
static int exec_stmt(struct sqlite_store *s, enum stmt_id id)
{
    sqlite3_stmt *st = kms_sqlite_stmt(s, id);
    int rc = sqlite3_step(st);
    int r = rc == SQLITE_DONE ? KMS_OK : kms_sqlite_error(s->db, rc, stmt_sql[id]);
    kms_sqlite_done(st);
    return r;
}

/* BEGIN IMMEDIATE takes the write lock now, so a transaction never fails
 * half-way because another writer got in first. */
int kms_sqlite_tx_begin(struct sqlite_store *s)
{
    return exec_stmt(s, ST_BEGIN);
}

/* Commits if r is 0, else (or if the commit fails) rolls back. Returns the
 * first failure. Statements must all be reset before. */
int kms_sqlite_tx_end(struct sqlite_store *s, int r)
{
    if (r == 0)
        r = exec_stmt(s, ST_COMMIT);
    if (r != 0 && !sqlite3_get_autocommit(s->db)) {
        struct kms_sqlite_detail d;
        kms_sqlite_detail_save(&d);
        if (exec_stmt(s, ST_ROLLBACK) != 0)
            kms_log_error("store: rollback failed: %s", kms_error_detail());
        kms_sqlite_detail_restore(&d, r);
    }
    return r;
}

/* ---- row decoding ------------------------------------------------------------ */

/* Text column into out (cap bytes with the NUL); 1 <= length < cap. */
int kms_sqlite_copy_text(sqlite3_stmt *st, int col, char *out, size_t cap, const char *what)
{
    if (sqlite3_column_type(st, col) != SQLITE_TEXT)
        return kms_error_set(KMS_ESTORE, "store: %s is not text", what);
    const unsigned char *t = sqlite3_column_text(st, col);
    int n = sqlite3_column_bytes(st, col);
    if (t == NULL || n <= 0 || (size_t)n >= cap)
        return kms_error_set(KMS_ESTORE, "store: %s has a bad length (%d)", what, n);
    memcpy(out, t, (size_t)n);
    out[n] = '\0';
    return KMS_OK;
}

int kms_sqlite_copy_id(sqlite3_stmt *st, int col, uint8_t *out)
{
    if (sqlite3_column_type(st, col) != SQLITE_BLOB ||
        sqlite3_column_bytes(st, col) != KMS_KEY_ID_LEN)
        return kms_error_set(KMS_ESTORE, "store: key id is not a %d-byte blob", KMS_KEY_ID_LEN);
    const void *b = sqlite3_column_blob(st, col);
    if (b == NULL)
        return kms_error_set(KMS_ESTORE, "store: key id unreadable");
    memcpy(out, b, KMS_KEY_ID_LEN);
    return KMS_OK;
}

int kms_sqlite_int_column(sqlite3_stmt *st, int col, sqlite3_int64 min, sqlite3_int64 max,
                          sqlite3_int64 *out, const char *what)
{
    if (sqlite3_column_type(st, col) != SQLITE_INTEGER)
        return kms_error_set(KMS_ESTORE, "store: %s is not an integer", what);
    sqlite3_int64 v = sqlite3_column_int64(st, col);
    if (v < min || v > max)
        return kms_error_set(KMS_ESTORE, "store: %s out of range (%lld)", what, (long long)v);
    *out = v;
    return KMS_OK;
}

/* Decodes the current row (KEY_COLUMNS); *out is written only if every
 * column is valid. */
static int read_key(sqlite3_stmt *st, kms_key_rec *out)
{
    kms_key_rec k;
    sqlite3_int64 primary = 0, min_decrypt = 0, created = 0, rotation = 0, deletion = 0;
    int r;

    memset(&k, 0, sizeof(k));
    if ((r = kms_sqlite_copy_id(st, 0, k.id)) != 0 ||
        (r = kms_sqlite_copy_text(st, 1, k.name, sizeof(k.name), "key name")) != 0 ||
        (r = kms_sqlite_copy_text(st, 2, k.backend, sizeof(k.backend), "backend name")) != 0 ||
        (r = kms_sqlite_int_column(st, 3, 0, UINT32_MAX, &primary, "primary version")) != 0 ||
        (r = kms_sqlite_int_column(st, 4, 1, UINT32_MAX, &min_decrypt, "min decrypt version")) !=
            0 ||
        (r = kms_sqlite_int_column(st, 5, INT64_MIN, INT64_MAX, &created, "key created_at")) != 0 ||
        (r = kms_sqlite_int_column(st, 6, 0, 36500, &rotation, "rotation period")) != 0 ||
        (r = kms_sqlite_int_column(st, 7, 0, INT64_MAX, &deletion, "deletion_at")) != 0)
        goto out;
    k.rotation_period_days = (uint32_t)rotation;
    k.deletion_at = deletion;
    k.primary_version = (uint32_t)primary;
    k.min_decrypt_version = (uint32_t)min_decrypt;
    k.created_at = created;
    *out = k;
out:
    return r;
}

/* Decodes the current row (VERSION_COLUMNS); *out is written only if every
 * column is valid. A reference longer than KMS_BACKEND_REF_MAX is refused,
 * never truncated. */
static int read_version(sqlite3_stmt *st, kms_version_rec *out)
{
    kms_version_rec v;
    sqlite3_int64 version = 0, state = 0, created = 0, usage = 0;
    int r;

    memset(&v, 0, sizeof(v));
    if ((r = kms_sqlite_copy_id(st, 0, v.key_id)) != 0 ||
        (r = kms_sqlite_int_column(st, 1, 1, UINT32_MAX, &version, "version")) != 0 ||
        (r = kms_sqlite_int_column(st, 2, KMS_VERSION_ENABLED, KMS_VERSION_DESTROYED, &state,
                                   "version state")) != 0 ||
        (r = kms_sqlite_int_column(st, 3, INT64_MIN, INT64_MAX, &created, "version created_at")) !=
            0 ||
        (r = kms_sqlite_int_column(st, 4, 0, INT64_MAX, &usage, "usage count")) != 0)
        goto out;
    if (sqlite3_column_type(st, 5) != SQLITE_BLOB) {
        r = kms_error_set(KMS_ESTORE, "store: backend reference is not a blob");
        goto out;
    }
    const void *ref = sqlite3_column_blob(st, 5);
    int n = sqlite3_column_bytes(st, 5);
    if (ref == NULL || n <= 0 || n > KMS_BACKEND_REF_MAX) {
        r = kms_error_set(KMS_ESTORE, "store: backend reference has a bad size (%d)", n);
        goto out;
    }
    memcpy(v.ref.bytes, ref, (size_t)n);
    v.ref.len = (size_t)n;
    v.version = (uint32_t)version;
    v.state = (kms_version_state)state;
    v.created_at = created;
    v.usage_count = (uint64_t)usage;
    *out = v;
out:
    return r;
}

/* ---- argument checks ----------------------------------------------------------- */

static int valid_name(const char *name)
{
    if (name == NULL)
        return 0;
    size_t n = strnlen(name, KMS_KEY_NAME_MAX + 1);
    return n >= 1 && n <= KMS_KEY_NAME_MAX;
}

static int valid_state(kms_version_state state)
{
    switch (state) {
    case KMS_VERSION_ENABLED:
    case KMS_VERSION_DISABLED:
    case KMS_VERSION_PENDING_DELETION:
    case KMS_VERSION_DESTROYED:
        return 1;
    default:
        return 0;
    }
}

/* ---- ops: keys ----------------------------------------------------------------- */

/* primary_version must be 0 (no version exists yet); min_decrypt_version 0
 * means the default, 1. */
static int key_create(kms_store *store, const kms_key_rec *k)
{
    struct sqlite_store *s;
    sqlite3_stmt *st = NULL;
    int r = KMS_OK, rc;

    if (store == NULL || k == NULL || !valid_name(k->name) ||
        strnlen(k->backend, sizeof(k->backend)) == 0 ||
        strnlen(k->backend, sizeof(k->backend)) > BACKEND_NAME_MAX)
        return kms_error_set(KMS_EINVAL, "store: key record incomplete or unterminated");
    if (k->primary_version != 0)
        return kms_error_set(KMS_EINVAL, "store: a new key has no primary version yet");
    s = kms_sqlite_impl(store);

    kms_sqlite_lock(s);
    st = kms_sqlite_stmt(s, ST_KEY_INSERT);
    if ((rc = kms_sqlite_bind_id(st, 1, k->id)) != SQLITE_OK ||
        (rc = sqlite3_bind_text(st, 2, k->name, -1, SQLITE_STATIC)) != SQLITE_OK ||
        (rc = sqlite3_bind_text(st, 3, k->backend, -1, SQLITE_STATIC)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 4, 0)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 5, k->min_decrypt_version ? k->min_decrypt_version : 1)) !=
            SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 6, k->created_at)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 7, k->rotation_period_days)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 8, k->deletion_at)) != SQLITE_OK ||
        (rc = sqlite3_step(st)) != SQLITE_DONE) {
        r = kms_sqlite_error(s->db, rc, "key create");
        goto out;
    }
out:
    kms_sqlite_done(st);
    kms_sqlite_unlock(s);
    return r;
}

/* One-row lookup through a prepared statement whose ?1 is already bound. */
static int key_get(struct sqlite_store *s, sqlite3_stmt *st, kms_key_rec *out)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        return read_key(st, out);
    if (rc == SQLITE_DONE)
        return kms_error_set(KMS_ENOTFOUND, "no such key");
    return kms_sqlite_error(s->db, rc, "key lookup");
}

static int key_get_by_name(kms_store *store, const char *name, kms_key_rec *out)
{
    struct sqlite_store *s;
    sqlite3_stmt *st = NULL;
    int r, rc;

    if (store == NULL || out == NULL || !valid_name(name))
        return kms_error_set(KMS_EINVAL, "store: key name missing or longer than %d bytes",
                             KMS_KEY_NAME_MAX);
    s = kms_sqlite_impl(store);

    kms_sqlite_lock(s);
    st = kms_sqlite_stmt(s, ST_KEY_BY_NAME);
    if ((rc = sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC)) != SQLITE_OK) {
        r = kms_sqlite_error(s->db, rc, "key lookup");
        goto out;
    }
    r = key_get(s, st, out);
out:
    kms_sqlite_done(st);
    kms_sqlite_unlock(s);
    return r;
}

static int key_get_by_id(kms_store *store, const uint8_t id[KMS_KEY_ID_LEN], kms_key_rec *out)
{
    struct sqlite_store *s;
    sqlite3_stmt *st = NULL;
    int r, rc;

    if (store == NULL || id == NULL || out == NULL)
        return kms_error_set(KMS_EINVAL, "store: no key id");
    s = kms_sqlite_impl(store);

    kms_sqlite_lock(s);
    st = kms_sqlite_stmt(s, ST_KEY_BY_ID);
    if ((rc = kms_sqlite_bind_id(st, 1, id)) != SQLITE_OK) {
        r = kms_sqlite_error(s->db, rc, "key lookup");
        goto out;
    }
    r = key_get(s, st, out);
out:
    kms_sqlite_done(st);
    kms_sqlite_unlock(s);
    return r;
}

/* Reads up to KEY_PAGE keys named after `after` into page. */
static int key_page(struct sqlite_store *s, const char *after, kms_key_rec *page, size_t *n)
{
    sqlite3_stmt *st = NULL;
    size_t got = 0;
    int r = KMS_OK, rc;

    kms_sqlite_lock(s);
    st = kms_sqlite_stmt(s, ST_KEY_PAGE);
    if ((rc = sqlite3_bind_text(st, 1, after, -1, SQLITE_STATIC)) != SQLITE_OK ||
        (rc = sqlite3_bind_int(st, 2, KEY_PAGE)) != SQLITE_OK) {
        r = kms_sqlite_error(s->db, rc, "key list");
        goto out;
    }
    while (got < KEY_PAGE && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((r = read_key(st, &page[got])) != 0)
            goto out;
        got++;
    }
    if (got < KEY_PAGE && rc != SQLITE_DONE) {
        r = kms_sqlite_error(s->db, rc, "key list");
        goto out;
    }
    *n = got;
out:
    kms_sqlite_done(st);
    kms_sqlite_unlock(s);
    return r;
}

/* Walks in pages (keyset pagination on name), so memory stays bounded and
 * callbacks run without the store lock: a callback may call the store. A
 * key created during the walk may or may not be seen. */
static int key_list(kms_store *store, kms_store_key_cb cb, void *ctx)
{
    char after[KMS_KEY_NAME_MAX + 1] = ""; /* names are non-empty: "" sorts first */
    kms_key_rec *page = NULL;
    size_t n = 0;
    int r = KMS_OK;

    if (store == NULL || cb == NULL)
        return kms_error_set(KMS_EINVAL, "store: no callback");
    if ((page = calloc(KEY_PAGE, sizeof(*page))) == NULL) {
        r = kms_error_set(KMS_ENOMEM, "out of memory");
        goto out;
    }
    do {
        if ((r = key_page(kms_sqlite_impl(store), after, page, &n)) != 0)
            goto out;
        for (size_t i = 0; i < n; i++)
            if ((r = cb(ctx, &page[i])) != 0)
                goto out;
        if (n > 0)
            memcpy(after, page[n - 1].name, sizeof(after));
    } while (n == KEY_PAGE);
out:
    free(page);
    return r;
}

/* ---- ops: versions --------------------------------------------------------------- */

/* version_add, and with record the automatic rotation's record, in one
 * transaction. */
static int add_version(kms_store *store, const kms_version_rec *v, int make_primary,
                       const kms_action_rec *record)
{
    struct sqlite_store *s;
    sqlite3_stmt *st = NULL;
    int r = KMS_OK, rc;

    if (store == NULL || v == NULL || v->version == 0 || !valid_state(v->state) ||
        v->usage_count > INT64_MAX || v->ref.len == 0 || v->ref.len > KMS_BACKEND_REF_MAX)
        return kms_error_set(KMS_EINVAL, "store: version record incomplete or out of range");
    if (record != NULL && (strcmp(record->proposer, KMS_SYSTEM_PROPOSER) != 0 ||
                           record->state != KMS_ACTION_EXECUTED || !make_primary))
        return kms_error_set(KMS_EINVAL, "store: a rotation record is an executed kmsd action");
    s = kms_sqlite_impl(store);

    kms_sqlite_lock(s);
    if ((r = kms_sqlite_tx_begin(s)) != 0)
        goto out;

    /* The foreign key would refuse it too; asking first gives the same
     * answer whatever the connection's foreign_keys setting. */
    st = kms_sqlite_stmt(s, ST_KEY_EXISTS);
    if ((rc = kms_sqlite_bind_id(st, 1, v->key_id)) != SQLITE_OK ||
        ((rc = sqlite3_step(st)) != SQLITE_ROW && rc != SQLITE_DONE)) {
        r = kms_sqlite_error(s->db, rc, "version add");
        goto out;
    }
    if (rc == SQLITE_DONE) {
        r = kms_error_set(KMS_ENOTFOUND, "version add: no such key");
        goto out;
    }
    kms_sqlite_done(st);

    st = kms_sqlite_stmt(s, ST_VERSION_INSERT);
    if ((rc = kms_sqlite_bind_id(st, 1, v->key_id)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 2, v->version)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 3, v->state)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 4, v->created_at)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 5, (sqlite3_int64)v->usage_count)) != SQLITE_OK ||
        (rc = sqlite3_bind_blob(st, 6, v->ref.bytes, (int)v->ref.len, SQLITE_STATIC)) !=
            SQLITE_OK ||
        (rc = sqlite3_step(st)) != SQLITE_DONE) {
        r = kms_sqlite_error(s->db, rc, "version add");
        goto out;
    }
    kms_sqlite_done(st);

    if (make_primary) {
        st = kms_sqlite_stmt(s, ST_SET_PRIMARY);
        if ((rc = sqlite3_bind_int64(st, 1, v->version)) != SQLITE_OK ||
            (rc = kms_sqlite_bind_id(st, 2, v->key_id)) != SQLITE_OK ||
            (rc = sqlite3_step(st)) != SQLITE_DONE) {
            r = kms_sqlite_error(s->db, rc, "set primary version");
            goto out;
        }
        if (sqlite3_changes(s->db) != 1) {
            r = kms_error_set(KMS_ESTORE, "set primary version: key row vanished");
            goto out;
        }
    }
    kms_sqlite_done(st);
    st = NULL;
    if (record != NULL)
        r = kms_sqlite_action_insert(s, record);
out:
    kms_sqlite_done(st);
    r = kms_sqlite_tx_end(s, r);
    kms_sqlite_unlock(s);
    return r;
}

static int version_add(kms_store *store, const kms_version_rec *v, int make_primary)
{
    return add_version(store, v, make_primary, NULL);
}

static int version_add_recorded(kms_store *store, const kms_version_rec *v,
                                const kms_action_rec *record)
{
    if (record == NULL)
        return kms_error_set(KMS_EINVAL, "store: no rotation record");
    return add_version(store, v, 1, record);
}

static int version_get(kms_store *store, const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t version,
                       kms_version_rec *out)
{
    struct sqlite_store *s;
    sqlite3_stmt *st = NULL;
    int r, rc;

    if (store == NULL || key_id == NULL || out == NULL)
        return kms_error_set(KMS_EINVAL, "store: no key id");
    s = kms_sqlite_impl(store);

    kms_sqlite_lock(s);
    st = kms_sqlite_stmt(s, ST_VERSION_GET);
    if ((rc = kms_sqlite_bind_id(st, 1, key_id)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 2, version)) != SQLITE_OK) {
        r = kms_sqlite_error(s->db, rc, "version lookup");
        goto out;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        r = read_version(st, out);
    else if (rc == SQLITE_DONE)
        r = kms_error_set(KMS_ENOTFOUND, "no such key version");
    else
        r = kms_sqlite_error(s->db, rc, "version lookup");
out:
    kms_sqlite_done(st);
    kms_sqlite_unlock(s);
    return r;
}

/* Reads up to VERSION_PAGE versions of key_id after `after` into page. */
static int version_page(struct sqlite_store *s, const uint8_t *key_id, uint32_t after,
                        kms_version_rec *page, size_t *n)
{
    sqlite3_stmt *st = NULL;
    size_t got = 0;
    int r = KMS_OK, rc;

    kms_sqlite_lock(s);
    st = kms_sqlite_stmt(s, ST_VERSION_PAGE);
    if ((rc = kms_sqlite_bind_id(st, 1, key_id)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 2, after)) != SQLITE_OK ||
        (rc = sqlite3_bind_int(st, 3, VERSION_PAGE)) != SQLITE_OK) {
        r = kms_sqlite_error(s->db, rc, "version list");
        goto out;
    }
    while (got < VERSION_PAGE && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((r = read_version(st, &page[got])) != 0)
            goto out;
        got++;
    }
    if (got < VERSION_PAGE && rc != SQLITE_DONE) {
        r = kms_sqlite_error(s->db, rc, "version list");
        goto out;
    }
    *n = got;
out:
    kms_sqlite_done(st);
    kms_sqlite_unlock(s);
    return r;
}

/* Like key_list: paged, callbacks without the lock. An unknown key has no
 * versions: the walk is empty and returns 0. */
static int version_list(kms_store *store, const uint8_t key_id[KMS_KEY_ID_LEN],
                        kms_store_version_cb cb, void *ctx)
{
    kms_version_rec *page = NULL;
    uint32_t after = 0;
    size_t n = 0;
    int r = KMS_OK;

    if (store == NULL || key_id == NULL || cb == NULL)
        return kms_error_set(KMS_EINVAL, "store: no key id or callback");
    if ((page = calloc(VERSION_PAGE, sizeof(*page))) == NULL) {
        r = kms_error_set(KMS_ENOMEM, "out of memory");
        goto out;
    }
    do {
        if ((r = version_page(kms_sqlite_impl(store), key_id, after, page, &n)) != 0)
            goto out;
        for (size_t i = 0; i < n; i++)
            if ((r = cb(ctx, &page[i])) != 0)
                goto out;
        if (n > 0)
            after = page[n - 1].version;
    } while (n == VERSION_PAGE);
out:
    free(page);
    return r;
}

/* Sets the state as asked; which transitions are allowed is the keyring's
 * business. */
static int version_set_state(kms_store *store, const uint8_t key_id[KMS_KEY_ID_LEN],
                             uint32_t version, kms_version_state state)
{
    struct sqlite_store *s;
    sqlite3_stmt *st = NULL;
    int r = KMS_OK, rc;

    if (store == NULL || key_id == NULL || !valid_state(state))
        return kms_error_set(KMS_EINVAL, "store: no key id or unknown version state");
    s = kms_sqlite_impl(store);

    kms_sqlite_lock(s);
    st = kms_sqlite_stmt(s, ST_VERSION_STATE);
    if ((rc = sqlite3_bind_int64(st, 1, state)) != SQLITE_OK ||
        (rc = kms_sqlite_bind_id(st, 2, key_id)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 3, version)) != SQLITE_OK ||
        (rc = sqlite3_step(st)) != SQLITE_DONE) {
        r = kms_sqlite_error(s->db, rc, "version state");
        goto out;
    }
    if (sqlite3_changes(s->db) == 0)
        r = kms_error_set(KMS_ENOTFOUND, "no such key version");
out:
    kms_sqlite_done(st);
    kms_sqlite_unlock(s);
    return r;
}

/* n == 0 is refused (KMS_EINVAL): reserving nothing is a caller bug. SQLite
 * integers are signed 64-bit, so n and limit above INT64_MAX are refused
 * too; the service's limit is 2^32. */
static int usage_reserve(kms_store *store, const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t version,
                         uint64_t n, uint64_t limit, uint64_t *total)
{
    struct sqlite_store *s;
    sqlite3_stmt *st = NULL;
    sqlite3_int64 now = 0;
    int r = KMS_OK, rc, changed = 0;

    if (store == NULL || key_id == NULL || total == NULL || n == 0 || n > INT64_MAX ||
        limit > INT64_MAX)
        return kms_error_set(KMS_EINVAL, "store: usage reservation out of range");
    s = kms_sqlite_impl(store);

    kms_sqlite_lock(s);
    if ((r = kms_sqlite_tx_begin(s)) != 0)
        goto out;

    st = kms_sqlite_stmt(s, ST_USAGE_ADD);
    if ((rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)n)) != SQLITE_OK ||
        (rc = kms_sqlite_bind_id(st, 2, key_id)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 3, version)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 4, (sqlite3_int64)limit)) != SQLITE_OK ||
        (rc = sqlite3_step(st)) != SQLITE_DONE) {
        r = kms_sqlite_error(s->db, rc, "usage reserve");
        goto out;
    }
    changed = sqlite3_changes(s->db);
    kms_sqlite_done(st);

    /* Read back in the same transaction: the total includes exactly our n
     * and whatever came before, nothing after. */
    st = kms_sqlite_stmt(s, ST_USAGE_GET);
    if ((rc = kms_sqlite_bind_id(st, 1, key_id)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 2, version)) != SQLITE_OK ||
        ((rc = sqlite3_step(st)) != SQLITE_ROW && rc != SQLITE_DONE)) {
        r = kms_sqlite_error(s->db, rc, "usage read");
        goto out;
    }
    if (rc == SQLITE_DONE) {
        r = kms_error_set(KMS_ENOTFOUND, "usage reserve: no such key version");
        goto out;
    }
    if ((r = kms_sqlite_int_column(st, 0, 0, INT64_MAX, &now, "usage count")) != 0)
        goto out;
    if (!changed) {
        r = kms_error_set(KMS_EEXHAUSTED, "usage count %lld + %llu would pass the limit %llu",
                          (long long)now, (unsigned long long)n, (unsigned long long)limit);
        goto out;
    }
out:
    kms_sqlite_done(st);
    r = kms_sqlite_tx_end(s, r);
    kms_sqlite_unlock(s);
    if (r == 0)
        *total = (uint64_t)now;
    return r;
}

static void store_close(kms_store *store)
{
    if (store == NULL)
        return;
    struct sqlite_store *s = kms_sqlite_impl(store);
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(s->st[i]);
    if (s->db != NULL && sqlite3_close(s->db) != SQLITE_OK)
        kms_log_error("store: close failed: %s", sqlite3_errmsg(s->db));
    if (s->mu_ready)
        pthread_mutex_destroy(&s->mu);
    free(s);
}

static const kms_store_ops sqlite_ops = {
    .name = "sqlite",
    .key_create = key_create,
    .key_get_by_name = key_get_by_name,
    .key_get_by_id = key_get_by_id,
    .key_list = key_list,
    .version_add = version_add,
    .version_add_recorded = version_add_recorded,
    .version_get = version_get,
    .version_list = version_list,
    .version_set_state = version_set_state,
    .usage_reserve = usage_reserve,
    .policy_set = kms_sqlite_policy_set,
    .policy_list = kms_sqlite_policy_list,
    .officer_add = kms_sqlite_officer_add,
    .officer_remove = kms_sqlite_officer_remove,
    .officer_list = kms_sqlite_officer_list,
    .threshold_set = kms_sqlite_threshold_set,
    .threshold_get = kms_sqlite_threshold_get,
    .threshold_list = kms_sqlite_threshold_list,
    .instance_id = kms_sqlite_instance_id,
    .key_set_min_decrypt = kms_sqlite_key_set_min_decrypt,
    .key_set_rotation = kms_sqlite_key_set_rotation,
    .key_set_deletion = kms_sqlite_key_set_deletion,
    .version_destroy = kms_sqlite_version_destroy,
    .action_create = kms_sqlite_action_create,
    .action_get = kms_sqlite_action_get,
    .action_ids = kms_sqlite_action_ids,
    .action_approve = kms_sqlite_action_approve,
    .action_set_plan = kms_sqlite_action_set_plan,
    .action_finish = kms_sqlite_action_finish,
    .action_cancel = kms_sqlite_action_cancel,
    .action_expire = kms_sqlite_action_expire,
    .action_count_pending = kms_sqlite_action_count_pending,
    .close = store_close,
};

int kms_store_sqlite_open(const char *path, kms_store **out)
{
    struct sqlite_store *s = NULL;
    int r = KMS_OK, rc;

    if (path == NULL || path[0] == '\0' || out == NULL)
        return kms_error_set(KMS_EINVAL, "store: no database path");
    if ((s = calloc(1, sizeof(*s))) == NULL) {
        r = kms_error_set(KMS_ENOMEM, "out of memory");
        goto out;
    }
    s->base.ops = &sqlite_ops;
    s->base.impl = s;
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        r = kms_error_set(KMS_ENOMEM, "store: cannot create mutex");
        goto out;
    }
    s->mu_ready = 1;

    if ((r = kms_sqlite_create_private(path)) != 0)
        goto out;
    /* NOMUTEX: the store's own mutex serializes every use. */
    rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        r = kms_error_set(KMS_ESTORE, "cannot open database %s: %s", path,
                          s->db ? sqlite3_errmsg(s->db) : "out of memory");
        goto out;
    }
    sqlite3_extended_result_codes(s->db, 1);
    if ((r = kms_sqlite_configure(s->db)) != 0 || (r = kms_sqlite_migrate(s->db)) != 0)
        goto out;
    for (int i = 0; i < ST_COUNT; i++) {
        if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
                               NULL) != SQLITE_OK) {
            r = kms_error_set(KMS_ESTORE, "prepare: %s", sqlite3_errmsg(s->db));
            goto out;
        }
    }
out:
    if (r != 0) {
        kms_log_error("store: %s: %s", path, kms_error_detail());
        if (s != NULL)
            store_close(&s->base);
        return r;
    }
    *out = &s->base;
    return KMS_OK;
}
