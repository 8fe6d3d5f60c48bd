/* The SQLite store (see store.h and docs/storage.md).
 *
 * One connection, one mutex, every statement prepared once at open. WAL +
 * synchronous=FULL: a write is on disk when its call returns. The schema is
 * versioned; migrations run in order, each in its own transaction together
 * with the version bump. */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kms/log.h"
#include "kms/store.h"

/* Each step takes the schema from version i to i+1. Append, never edit. */
static const char *const migrations[] = {
    /* 0 -> 1: keys and versions */
    "CREATE TABLE keys ("
    "  id BLOB PRIMARY KEY CHECK (typeof(id) = 'blob' AND length(id) = 16),"
    "  name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),"
    "  backend TEXT NOT NULL CHECK (length(backend) BETWEEN 1 AND 15),"
    "  primary_version INTEGER NOT NULL DEFAULT 0 CHECK (primary_version >= 0),"
    "  min_decrypt_version INTEGER NOT NULL DEFAULT 1 CHECK (min_decrypt_version >= 1),"
    "  created_at INTEGER NOT NULL"
    ") STRICT;"
    "CREATE TABLE key_versions ("
    "  key_id BLOB NOT NULL REFERENCES keys(id),"
    "  version INTEGER NOT NULL CHECK (version BETWEEN 1 AND 4294967295),"
    "  state INTEGER NOT NULL CHECK (state BETWEEN 1 AND 4),"
    "  created_at INTEGER NOT NULL,"
    "  usage_count INTEGER NOT NULL DEFAULT 0 CHECK (usage_count >= 0),"
    "  backend_ref BLOB NOT NULL CHECK (length(backend_ref) BETWEEN 1 AND 2048),"
    "  PRIMARY KEY (key_id, version)"
    ") STRICT;",
};

#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

enum stmt_id {
    ST_KEY_INSERT,
    ST_KEY_BY_NAME,
    ST_KEY_BY_ID,
    ST_KEY_LIST,
    ST_KEY_EXISTS,
    ST_VERSION_INSERT,
    ST_SET_PRIMARY,
    ST_VERSION_GET,
    ST_VERSION_LIST,
    ST_VERSION_STATE,
    ST_USAGE_ADD,
    ST_USAGE_GET,
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_COUNT
};

#define KEY_COLUMNS "id, name, backend, primary_version, min_decrypt_version, created_at"
#define VERSION_COLUMNS "key_id, version, state, created_at, usage_count, backend_ref"

static const char *const stmt_sql[ST_COUNT] = {
    [ST_KEY_INSERT] = "INSERT INTO keys (" KEY_COLUMNS ") VALUES (?, ?, ?, ?, ?, ?)",
    [ST_KEY_BY_NAME] = "SELECT " KEY_COLUMNS " FROM keys WHERE name = ?",
    [ST_KEY_BY_ID] = "SELECT " KEY_COLUMNS " FROM keys WHERE id = ?",
    [ST_KEY_LIST] = "SELECT " KEY_COLUMNS " FROM keys ORDER BY name",
    [ST_KEY_EXISTS] = "SELECT 1 FROM keys WHERE id = ?",
    [ST_VERSION_INSERT] =
        "INSERT INTO key_versions (" VERSION_COLUMNS ") VALUES (?, ?, ?, ?, ?, ?)",
    [ST_SET_PRIMARY] = "UPDATE keys SET primary_version = ? WHERE id = ?",
    [ST_VERSION_GET] =
        "SELECT " VERSION_COLUMNS " FROM key_versions WHERE key_id = ? AND version = ?",
    [ST_VERSION_LIST] =
        "SELECT " VERSION_COLUMNS " FROM key_versions WHERE key_id = ? ORDER BY version",
    [ST_VERSION_STATE] = "UPDATE key_versions SET state = ? WHERE key_id = ? AND version = ?",
    [ST_USAGE_ADD] = "UPDATE key_versions SET usage_count = usage_count + ?1"
                     " WHERE key_id = ?2 AND version = ?3 AND usage_count + ?1 <= ?4",
    [ST_USAGE_GET] = "SELECT usage_count FROM key_versions WHERE key_id = ? AND version = ?",
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
};

struct sqlite_store {
    kms_store base;
    sqlite3 *db;
    pthread_mutex_t mu;
    sqlite3_stmt *st[ST_COUNT];
};

static struct sqlite_store *impl(kms_store *s)
{
    return (struct sqlite_store *)s;
}

/* Maps an SQLite result to a kms error, recording the detail. */
static int db_error(struct sqlite_store *s, int rc, const char *what)
{
    int base = rc & 0xff;
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
        return kms_error_set(KMS_ENOTFOUND, "%s: no such key", what);
    if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
        return kms_error_set(KMS_EEXISTS, "%s: already exists", what);
    if (base == SQLITE_CONSTRAINT)
        return kms_error_set(KMS_EINVAL, "%s: %s", what, sqlite3_errmsg(s->db));
    if (base == SQLITE_BUSY || base == SQLITE_LOCKED)
        return kms_error_set(KMS_EUNAVAIL, "%s: database busy", what);
    return kms_error_set(KMS_ESTORE, "%s: %s", what, sqlite3_errmsg(s->db));
}

static sqlite3_stmt *stmt(struct sqlite_store *s, enum stmt_id id)
{
    sqlite3_stmt *st = s->st[id];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

static void done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

static int exec_simple(struct sqlite_store *s, enum stmt_id id)
{
    sqlite3_stmt *st = stmt(s, id);
    int rc = sqlite3_step(st);
    done(st);
    return rc == SQLITE_DONE ? KMS_OK : db_error(s, rc, stmt_sql[id]);
}

static int begin(struct sqlite_store *s)
{
    return exec_simple(s, ST_BEGIN);
}

static int commit_or_rollback(struct sqlite_store *s, int r)
{
    if (r == 0)
        r = exec_simple(s, ST_COMMIT);
    if (r != 0 && !sqlite3_get_autocommit(s->db))
        (void)exec_simple(s, ST_ROLLBACK);
    return r;
}

/* ---- row decoding ------------------------------------------------------------ */

static int copy_text(sqlite3_stmt *st, int col, char *out, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    int n = sqlite3_column_bytes(st, col);
    if (t == NULL || n < 0 || (size_t)n >= cap)
        return kms_error_set(KMS_ESTORE, "store: text column %d out of range", col);
    memcpy(out, t, (size_t)n);
    out[n] = '\0';
    return KMS_OK;
}

static int copy_id(sqlite3_stmt *st, int col, uint8_t *out)
{
    const void *b = sqlite3_column_blob(st, col);
    if (b == NULL || sqlite3_column_bytes(st, col) != KMS_KEY_ID_LEN)
        return kms_error_set(KMS_ESTORE, "store: key id column has the wrong size");
    memcpy(out, b, KMS_KEY_ID_LEN);
    return KMS_OK;
}

static int u32_column(sqlite3_stmt *st, int col, uint32_t *out)
{
    sqlite3_int64 v = sqlite3_column_int64(st, col);
    if (v < 0 || v > (sqlite3_int64)UINT32_MAX)
        return kms_error_set(KMS_ESTORE, "store: column %d out of range", col);
    *out = (uint32_t)v;
    return KMS_OK;
}

static int read_key(sqlite3_stmt *st, kms_key_rec *out)
{
    kms_key_rec k;
    memset(&k, 0, sizeof(k));
    KMS_GUARD(copy_id(st, 0, k.id));
    KMS_GUARD(copy_text(st, 1, k.name, sizeof(k.name)));
    KMS_GUARD(copy_text(st, 2, k.backend, sizeof(k.backend)));
    KMS_GUARD(u32_column(st, 3, &k.primary_version));
    KMS_GUARD(u32_column(st, 4, &k.min_decrypt_version));
    k.created_at = sqlite3_column_int64(st, 5);
    *out = k;
    return KMS_OK;
}

static int read_version(sqlite3_stmt *st, kms_version_rec *out)
{
    kms_version_rec v;
    memset(&v, 0, sizeof(v));
    KMS_GUARD(copy_id(st, 0, v.key_id));
    KMS_GUARD(u32_column(st, 1, &v.version));
    sqlite3_int64 state = sqlite3_column_int64(st, 2);
    if (state < KMS_VERSION_ENABLED || state > KMS_VERSION_DESTROYED)
        return kms_error_set(KMS_ESTORE, "store: unknown version state %lld", (long long)state);
    v.state = (kms_version_state)state;
    v.created_at = sqlite3_column_int64(st, 3);
    sqlite3_int64 usage = sqlite3_column_int64(st, 4);
    if (usage < 0)
        return kms_error_set(KMS_ESTORE, "store: negative usage count");
    v.usage_count = (uint64_t)usage;
    const void *ref = sqlite3_column_blob(st, 5);
    int n = sqlite3_column_bytes(st, 5);
    if (ref == NULL || n <= 0 || n > KMS_BACKEND_REF_MAX)
        return kms_error_set(KMS_ESTORE, "store: backend reference has a bad size");
    memcpy(v.ref.bytes, ref, (size_t)n);
    v.ref.len = (size_t)n;
    *out = v;
    return KMS_OK;
}

/* ---- ops ----------------------------------------------------------------------- */

static int key_create(kms_store *store, const kms_key_rec *k)
{
    struct sqlite_store *s = impl(store);
    if (k == NULL || k->name[0] == '\0' || k->backend[0] == '\0')
        return kms_error_set(KMS_EINVAL, "store: key record incomplete");
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st = stmt(s, ST_KEY_INSERT);
    sqlite3_bind_blob(st, 1, k->id, KMS_KEY_ID_LEN, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, k->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, k->backend, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, k->primary_version);
    sqlite3_bind_int64(st, 5, k->min_decrypt_version ? k->min_decrypt_version : 1);
    sqlite3_bind_int64(st, 6, k->created_at);
    int rc = sqlite3_step(st);
    int r = rc == SQLITE_DONE ? KMS_OK : db_error(s, sqlite3_extended_errcode(s->db), "key create");
    done(st);
    pthread_mutex_unlock(&s->mu);
    return r;
}

static int key_get(struct sqlite_store *s, enum stmt_id id, const void *arg, kms_key_rec *out)
{
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st = stmt(s, id);
    if (id == ST_KEY_BY_NAME)
        sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
    else
        sqlite3_bind_blob(st, 1, arg, KMS_KEY_ID_LEN, SQLITE_STATIC);
    int rc = sqlite3_step(st), r;
    if (rc == SQLITE_ROW)
        r = read_key(st, out);
    else if (rc == SQLITE_DONE)
        r = kms_error_set(KMS_ENOTFOUND, "no such key");
    else
        r = db_error(s, rc, "key lookup");
    done(st);
    pthread_mutex_unlock(&s->mu);
    return r;
}

static int key_get_by_name(kms_store *store, const char *name, kms_key_rec *out)
{
    if (name == NULL || out == NULL)
        return kms_error_set(KMS_EINVAL, "store: no key name");
    return key_get(impl(store), ST_KEY_BY_NAME, name, out);
}

static int key_get_by_id(kms_store *store, const uint8_t id[KMS_KEY_ID_LEN], kms_key_rec *out)
{
    if (id == NULL || out == NULL)
        return kms_error_set(KMS_EINVAL, "store: no key id");
    return key_get(impl(store), ST_KEY_BY_ID, id, out);
}

/* Walks rows into a heap array first, so callbacks run without the store
 * lock (a callback may call the store again). */
static int key_list(kms_store *store, kms_store_key_cb cb, void *ctx)
{
    struct sqlite_store *s = impl(store);
    kms_key_rec *rows = NULL;
    size_t n = 0, cap = 0;
    int r = KMS_OK;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st = stmt(s, ST_KEY_LIST);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            kms_key_rec *grown = realloc(rows, ncap * sizeof(*grown));
            if (grown == NULL) {
                r = kms_error_set(KMS_ENOMEM, "out of memory");
                break;
            }
            rows = grown;
            cap = ncap;
        }
        if ((r = read_key(st, &rows[n])) != 0)
            break;
        n++;
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = db_error(s, rc, "key list");
    done(st);
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; r == 0 && i < n; i++)
        r = cb(ctx, &rows[i]);
    free(rows);
    return r;
}

static int version_add(kms_store *store, const kms_version_rec *v, int make_primary)
{
    struct sqlite_store *s = impl(store);
    if (v == NULL || v->version == 0 || v->ref.len == 0 || v->ref.len > KMS_BACKEND_REF_MAX)
        return kms_error_set(KMS_EINVAL, "store: version record incomplete");
    pthread_mutex_lock(&s->mu);
    int r = begin(s);
    if (r == 0) {
        sqlite3_stmt *st = stmt(s, ST_KEY_EXISTS);
        sqlite3_bind_blob(st, 1, v->key_id, KMS_KEY_ID_LEN, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
            r = kms_error_set(KMS_ENOTFOUND, "version add: no such key");
        else if (rc != SQLITE_ROW)
            r = db_error(s, rc, "version add");
        done(st);
    }
    if (r == 0) {
        sqlite3_stmt *st = stmt(s, ST_VERSION_INSERT);
        sqlite3_bind_blob(st, 1, v->key_id, KMS_KEY_ID_LEN, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, v->version);
        sqlite3_bind_int64(st, 3, v->state);
        sqlite3_bind_int64(st, 4, v->created_at);
        sqlite3_bind_int64(st, 5, (sqlite3_int64)v->usage_count);
        sqlite3_bind_blob(st, 6, v->ref.bytes, (int)v->ref.len, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            r = db_error(s, sqlite3_extended_errcode(s->db), "version add");
        done(st);
    }
    if (r == 0 && make_primary) {
        sqlite3_stmt *st = stmt(s, ST_SET_PRIMARY);
        sqlite3_bind_int64(st, 1, v->version);
        sqlite3_bind_blob(st, 2, v->key_id, KMS_KEY_ID_LEN, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            r = db_error(s, sqlite3_extended_errcode(s->db), "set primary");
        done(st);
    }
    r = commit_or_rollback(s, r);
    pthread_mutex_unlock(&s->mu);
    return r;
}

static int version_get(kms_store *store, const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t version,
                       kms_version_rec *out)
{
    struct sqlite_store *s = impl(store);
    if (key_id == NULL || out == NULL)
        return kms_error_set(KMS_EINVAL, "store: no key id");
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st = stmt(s, ST_VERSION_GET);
    sqlite3_bind_blob(st, 1, key_id, KMS_KEY_ID_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, version);
    int rc = sqlite3_step(st), r;
    if (rc == SQLITE_ROW)
        r = read_version(st, out);
    else if (rc == SQLITE_DONE)
        r = kms_error_set(KMS_ENOTFOUND, "no such key version");
    else
        r = db_error(s, rc, "version lookup");
    done(st);
    pthread_mutex_unlock(&s->mu);
    return r;
}

static int version_list(kms_store *store, const uint8_t key_id[KMS_KEY_ID_LEN],
                        kms_store_version_cb cb, void *ctx)
{
    struct sqlite_store *s = impl(store);
    kms_version_rec *rows = NULL;
    size_t n = 0, cap = 0;
    int r = KMS_OK, rc;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st = stmt(s, ST_VERSION_LIST);
    sqlite3_bind_blob(st, 1, key_id, KMS_KEY_ID_LEN, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 4;
            kms_version_rec *grown = realloc(rows, ncap * sizeof(*grown));
            if (grown == NULL) {
                r = kms_error_set(KMS_ENOMEM, "out of memory");
                break;
            }
            rows = grown;
            cap = ncap;
        }
        if ((r = read_version(st, &rows[n])) != 0)
            break;
        n++;
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = db_error(s, rc, "version list");
    done(st);
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; r == 0 && i < n; i++)
        r = cb(ctx, &rows[i]);
    free(rows);
    return r;
}

static int version_set_state(kms_store *store, const uint8_t key_id[KMS_KEY_ID_LEN],
                             uint32_t version, kms_version_state state)
{
    struct sqlite_store *s = impl(store);
    if (state < KMS_VERSION_ENABLED || state > KMS_VERSION_DESTROYED)
        return kms_error_set(KMS_EINVAL, "store: unknown version state");
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st = stmt(s, ST_VERSION_STATE);
    sqlite3_bind_int64(st, 1, state);
    sqlite3_bind_blob(st, 2, key_id, KMS_KEY_ID_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, version);
    int rc = sqlite3_step(st), r;
    if (rc != SQLITE_DONE)
        r = db_error(s, rc, "version state");
    else if (sqlite3_changes(s->db) == 0)
        r = kms_error_set(KMS_ENOTFOUND, "no such key version");
    else
        r = KMS_OK;
    done(st);
    pthread_mutex_unlock(&s->mu);
    return r;
}

static int usage_reserve(kms_store *store, const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t version,
                         uint64_t n, uint64_t limit, uint64_t *total)
{
    struct sqlite_store *s = impl(store);
    if (n == 0 || n > INT64_MAX || limit > INT64_MAX || total == NULL)
        return kms_error_set(KMS_EINVAL, "store: usage reservation out of range");
    pthread_mutex_lock(&s->mu);
    int r = begin(s);
    int changed = 0;
    if (r == 0) {
        sqlite3_stmt *st = stmt(s, ST_USAGE_ADD);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)n);
        sqlite3_bind_blob(st, 2, key_id, KMS_KEY_ID_LEN, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, version);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)limit);
        if (sqlite3_step(st) != SQLITE_DONE)
            r = db_error(s, sqlite3_extended_errcode(s->db), "usage reserve");
        else
            changed = sqlite3_changes(s->db);
        done(st);
    }
    uint64_t now = 0;
    if (r == 0) {
        sqlite3_stmt *st = stmt(s, ST_USAGE_GET);
        sqlite3_bind_blob(st, 1, key_id, KMS_KEY_ID_LEN, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, version);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            now = (uint64_t)sqlite3_column_int64(st, 0);
        else if (rc == SQLITE_DONE)
            r = kms_error_set(KMS_ENOTFOUND, "no such key version");
        else
            r = db_error(s, rc, "usage read");
        done(st);
    }
    if (r == 0 && !changed)
        r = kms_error_set(KMS_EEXHAUSTED, "usage count %llu + %llu would pass the limit %llu",
                          (unsigned long long)now, (unsigned long long)n,
                          (unsigned long long)limit);
    r = commit_or_rollback(s, r);
    if (r == 0)
        *total = now;
    pthread_mutex_unlock(&s->mu);
    return r;
}

static void store_close(kms_store *store)
{
    if (store == NULL)
        return;
    struct sqlite_store *s = impl(store);
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(s->st[i]);
    sqlite3_close(s->db);
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
    .version_get = version_get,
    .version_list = version_list,
    .version_set_state = version_set_state,
    .usage_reserve = usage_reserve,
    .close = store_close,
};

/* ---- open and migrate --------------------------------------------------------- */

static int exec_sql(sqlite3 *db, const char *sql, const char *what)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int r = kms_error_set(KMS_ESTORE, "%s: %s", what, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return r;
    }
    return KMS_OK;
}

static int read_schema_version(sqlite3 *db, int *version)
{
    sqlite3_stmt *st = NULL;
    int r = KMS_OK;
    if (sqlite3_prepare_v2(db, "SELECT version FROM schema_version", -1, &st, NULL) != SQLITE_OK)
        return kms_error_set(KMS_ESTORE, "schema version: %s", sqlite3_errmsg(db));
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *version = sqlite3_column_int(st, 0);
    else
        r = kms_error_set(KMS_ESTORE, "schema version row missing");
    sqlite3_finalize(st);
    return r;
}

static int migrate(sqlite3 *db)
{
    KMS_GUARD(exec_sql(db,
                       "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);"
                       "INSERT INTO schema_version SELECT 0"
                       " WHERE NOT EXISTS (SELECT 1 FROM schema_version);",
                       "schema version table"));
    int version = 0;
    KMS_GUARD(read_schema_version(db, &version));
    if (version > SCHEMA_VERSION)
        return kms_error_set(KMS_EUNSUPPORTED,
                             "database schema version %d is newer than this kmsd (%d)", version,
                             SCHEMA_VERSION);
    if (version < 0)
        return kms_error_set(KMS_ESTORE, "database schema version %d is invalid", version);
    for (int v = version; v < SCHEMA_VERSION; v++) {
        char bump[64];
        snprintf(bump, sizeof(bump), "UPDATE schema_version SET version = %d;", v + 1);
        int r = exec_sql(db, "BEGIN IMMEDIATE;", "migration");
        if (r == 0)
            r = exec_sql(db, migrations[v], "migration");
        if (r == 0)
            r = exec_sql(db, bump, "migration");
        if (r == 0)
            r = exec_sql(db, "COMMIT;", "migration");
        if (r != 0) {
            (void)exec_sql(db, "ROLLBACK;", "rollback");
            return r;
        }
        kms_log_info("database schema migrated to version %d", v + 1);
    }
    return KMS_OK;
}

int kms_store_sqlite_schema_version(void)
{
    return SCHEMA_VERSION;
}

int kms_store_sqlite_open(const char *path, kms_store **out)
{
    if (path == NULL || out == NULL)
        return kms_error_set(KMS_EINVAL, "store: no database path");
    struct sqlite_store *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    pthread_mutex_init(&s->mu, NULL);
    s->base.ops = &sqlite_ops;
    s->base.impl = s;
    int r = KMS_OK;

    /* The file holds no key material, but its metadata is nobody else's. */
    mode_t old = umask(077);
    int rc = sqlite3_open_v2(
        path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    umask(old);
    if (rc != SQLITE_OK) {
        r = kms_error_set(KMS_ESTORE, "cannot open database %s: %s", path,
                          s->db ? sqlite3_errmsg(s->db) : "out of memory");
        goto out;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, 5000);
    if ((r = exec_sql(s->db,
                      "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                      " PRAGMA foreign_keys=ON; PRAGMA secure_delete=ON;",
                      "database settings")) != 0)
        goto out;
    if ((r = migrate(s->db)) != 0)
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
        kms_log_error("store: %s", kms_error_detail());
        store_close(&s->base);
        return r;
    }
    *out = &s->base;
    return KMS_OK;
}
