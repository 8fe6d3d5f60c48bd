/* The SQLite store, on a real file in a fresh temp dir per test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_util.h"
#include "kmsd/store/store.h"
#include "kmsd/store/store_sqlite_query.h"

struct fx {
    char dir[256];
    char db[300];
    kms_store *s;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    kms_test_tmpdir("kms-store", f->dir, sizeof(f->dir));
    kms_test_path(f->db, sizeof(f->db), f->dir, "kms.db");
    assert_int_equal(kms_store_sqlite_open(f->db, &f->s), KMS_OK);
    *state = f;
    return 0;
}

static void close_store(struct fx *f)
{
    if (f->s)
        f->s->ops->close(f->s);
    f->s = NULL;
}

static void remove_db(struct fx *f)
{
    char path[320];
    const char *suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        snprintf(path, sizeof(path), "%s%s", f->db, suffixes[i]);
        unlink(path);
    }
}

static int teardown(void **state)
{
    struct fx *f = *state;
    close_store(f);
    remove_db(f);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void reopen(struct fx *f)
{
    close_store(f);
    assert_int_equal(kms_store_sqlite_open(f->db, &f->s), KMS_OK);
}

/* A second, plain connection to the file, as an operator (or attacker)
 * would have. */
static sqlite3 *raw_open(struct fx *f)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static void raw_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("%s: %s", sql, msg ? msg : "?");
    sqlite3_free(msg);
}

static long long raw_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void raw_text(sqlite3 *db, const char *sql, char *out, size_t cap)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    const unsigned char *t = sqlite3_column_text(st, 0);
    assert_non_null(t);
    snprintf(out, cap, "%s", (const char *)t);
    sqlite3_finalize(st);
}

static kms_key_rec key(const char *name, uint8_t idbyte)
{
    kms_key_rec k;
    memset(&k, 0, sizeof(k));
    memset(k.id, idbyte, sizeof(k.id));
    snprintf(k.name, sizeof(k.name), "%s", name);
    snprintf(k.backend, sizeof(k.backend), "pkcs11");
    k.min_decrypt_version = 1;
    k.created_at = 1700000000;
    return k;
}

static kms_version_rec version(const uint8_t *id, uint32_t v)
{
    kms_version_rec r;
    memset(&r, 0, sizeof(r));
    memcpy(r.key_id, id, KMS_KEY_ID_LEN);
    r.version = v;
    r.state = KMS_VERSION_ENABLED;
    r.created_at = 1700000000 + v;
    r.ref.len = 20 + v;
    memset(r.ref.bytes, (int)(v & 0xff), r.ref.len);
    return r;
}

/* A store holding key "alpha" (id 01..01) with versions 1..n, 1 primary. */
static kms_key_rec add_alpha(kms_store *s, uint32_t n)
{
    kms_key_rec a = key("alpha", 1);
    assert_int_equal(s->ops->key_create(s, &a), KMS_OK);
    for (uint32_t v = 1; v <= n; v++) {
        kms_version_rec r = version(a.id, v);
        assert_int_equal(s->ops->version_add(s, &r, v == 1), KMS_OK);
    }
    return a;
}

/* ---- keys --------------------------------------------------------------------- */

static void keys_create_and_get(void **state)
{
    struct fx *f = *state;
    kms_store *s = f->s;
    kms_key_rec a = key("alpha", 1), got;
    a.min_decrypt_version = 3;
    assert_int_equal(s->ops->key_create(s, &a), KMS_OK);

    memset(&got, 0x5a, sizeof(got));
    assert_int_equal(s->ops->key_get_by_name(s, "alpha", &got), KMS_OK);
    assert_memory_equal(got.id, a.id, KMS_KEY_ID_LEN);
    assert_string_equal(got.name, "alpha");
    assert_string_equal(got.backend, "pkcs11");
    assert_int_equal(got.primary_version, 0);
    assert_int_equal(got.min_decrypt_version, 3);
    assert_int_equal(got.created_at, 1700000000);

    memset(&got, 0x5a, sizeof(got));
    assert_int_equal(s->ops->key_get_by_id(s, a.id, &got), KMS_OK);
    assert_string_equal(got.name, "alpha");
    assert_memory_equal(got.id, a.id, KMS_KEY_ID_LEN);

    /* min_decrypt_version 0 means the default, 1. */
    kms_key_rec b = key("bravo", 2);
    b.min_decrypt_version = 0;
    assert_int_equal(s->ops->key_create(s, &b), KMS_OK);
    assert_int_equal(s->ops->key_get_by_name(s, "bravo", &got), KMS_OK);
    assert_int_equal(got.min_decrypt_version, 1);

    /* A name of exactly KMS_KEY_NAME_MAX bytes round-trips. */
    kms_key_rec longest = key("", 3);
    memset(longest.name, 'x', KMS_KEY_NAME_MAX);
    longest.name[KMS_KEY_NAME_MAX] = '\0';
    snprintf(longest.backend, sizeof(longest.backend), "%s", "abcdefghijklmno"); /* 15 */
    assert_int_equal(s->ops->key_create(s, &longest), KMS_OK);
    assert_int_equal(s->ops->key_get_by_id(s, longest.id, &got), KMS_OK);
    assert_string_equal(got.name, longest.name);
    assert_string_equal(got.backend, "abcdefghijklmno");
}

static void keys_duplicates_and_unknown(void **state)
{
    struct fx *f = *state;
    kms_store *s = f->s;
    kms_key_rec a = key("alpha", 1), got;
    assert_int_equal(s->ops->key_create(s, &a), KMS_OK);

    kms_key_rec dup_name = key("alpha", 2), dup_id = key("beta", 1);
    assert_int_equal(s->ops->key_create(s, &dup_name), KMS_EEXISTS);
    assert_int_equal(s->ops->key_create(s, &dup_id), KMS_EEXISTS);
    /* Neither failed create left a row. */
    assert_int_equal(s->ops->key_get_by_name(s, "beta", &got), KMS_ENOTFOUND);
    assert_int_equal(s->ops->key_get_by_id(s, dup_name.id, &got), KMS_ENOTFOUND);

    memset(&got, 0x5a, sizeof(got));
    kms_key_rec before = got;
    uint8_t unknown[KMS_KEY_ID_LEN] = {9};
    assert_int_equal(s->ops->key_get_by_name(s, "nope", &got), KMS_ENOTFOUND);
    assert_int_equal(s->ops->key_get_by_id(s, unknown, &got), KMS_ENOTFOUND);
    assert_memory_equal(&got, &before, sizeof(got)); /* untouched on failure */
}

static void keys_bad_records_refused(void **state)
{
    struct fx *f = *state;
    kms_store *s = f->s;
    kms_key_rec k = key("", 1), got;
    assert_int_equal(s->ops->key_create(s, &k), KMS_EINVAL); /* empty name */

    k = key("x", 1);
    memset(k.name, 'n', sizeof(k.name)); /* unterminated */
    assert_int_equal(s->ops->key_create(s, &k), KMS_EINVAL);

    k = key("x", 1);
    k.backend[0] = '\0';
    assert_int_equal(s->ops->key_create(s, &k), KMS_EINVAL);
    memset(k.backend, 'b', sizeof(k.backend)); /* unterminated */
    assert_int_equal(s->ops->key_create(s, &k), KMS_EINVAL);

    k = key("x", 1);
    k.primary_version = 2; /* no version exists yet */
    assert_int_equal(s->ops->key_create(s, &k), KMS_EINVAL);

    assert_int_equal(s->ops->key_create(s, NULL), KMS_EINVAL);
    assert_int_equal(s->ops->key_get_by_name(s, NULL, &got), KMS_EINVAL);
    assert_int_equal(s->ops->key_get_by_name(s, "", &got), KMS_EINVAL);
    char toolong[KMS_KEY_NAME_MAX + 2];
    memset(toolong, 'x', sizeof(toolong) - 1);
    toolong[sizeof(toolong) - 1] = '\0';
    assert_int_equal(s->ops->key_get_by_name(s, toolong, &got), KMS_EINVAL);
    assert_int_equal(s->ops->key_get_by_id(s, NULL, &got), KMS_EINVAL);
    assert_int_equal(s->ops->key_list(s, NULL, NULL), KMS_EINVAL);

    /* Nothing was stored. */
    sqlite3 *db = raw_open(f);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM keys"), 0);
    sqlite3_close(db);
}

struct key_walk {
    kms_store *s;
    char names[200][KMS_KEY_NAME_MAX + 1];
    int n, stop_at;
};

static int walk_key(void *ctx, const kms_key_rec *k)
{
    struct key_walk *w = ctx;
    /* The store lock is not held here: calling back into the store works. */
    kms_key_rec again;
    if (w->s->ops->key_get_by_id(w->s, k->id, &again) != KMS_OK)
        return KMS_EINTERNAL;
    snprintf(w->names[w->n++], sizeof(w->names[0]), "%s", k->name);
    return w->n == w->stop_at ? 42 : 0;
}

static void key_list_walks_in_name_order(void **state)
{
    struct fx *f = *state;
    kms_store *s = f->s;
    /* 150 keys (more than two pages of 64), created out of order. */
    enum { N = 150 };
    for (int i = 0; i < N; i++) {
        int j = (i * 7) % N;
        char name[32];
        snprintf(name, sizeof(name), "key-%03d", j);
        kms_key_rec k = key(name, 0);
        k.id[0] = (uint8_t)(j & 0xff);
        k.id[1] = (uint8_t)(j >> 8);
        assert_int_equal(s->ops->key_create(s, &k), KMS_OK);
    }
    struct key_walk *w = calloc(1, sizeof(*w));
    assert_non_null(w);
    w->s = s;
    assert_int_equal(s->ops->key_list(s, walk_key, w), KMS_OK);
    assert_int_equal(w->n, N);
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof(name), "key-%03d", i);
        assert_string_equal(w->names[i], name);
    }

    /* Early stop, past a page boundary: the callback's value comes back. */
    memset(w, 0, sizeof(*w));
    w->s = s;
    w->stop_at = 70;
    assert_int_equal(s->ops->key_list(s, walk_key, w), 42);
    assert_int_equal(w->n, 70);
    assert_string_equal(w->names[69], "key-069");

    /* An empty store walks nothing. */
    close_store(f);
    remove_db(f);
    assert_int_equal(kms_store_sqlite_open(f->db, &f->s), KMS_OK);
    memset(w, 0, sizeof(*w));
    w->s = f->s;
    assert_int_equal(f->s->ops->key_list(f->s, walk_key, w), KMS_OK);
    assert_int_equal(w->n, 0);
    free(w);
}

/* ---- versions ---------------------------------------------------------------- */

static void versions_add_get_and_primary(void **state)
{
    struct fx *f = *state;
    kms_store *s = f->s;
    kms_key_rec a = key("alpha", 1), got;
    assert_int_equal(s->ops->key_create(s, &a), KMS_OK);

    kms_version_rec v1 = version(a.id, 1), v2 = version(a.id, 2), v3 = version(a.id, 3), gv;
    assert_int_equal(s->ops->version_add(s, &v1, 1), KMS_OK);
    assert_int_equal(s->ops->key_get_by_name(s, "alpha", &got), KMS_OK);
    assert_int_equal(got.primary_version, 1);

    assert_int_equal(s->ops->version_add(s, &v2, 0), KMS_OK);
    assert_int_equal(s->ops->key_get_by_name(s, "alpha", &got), KMS_OK);
    assert_int_equal(got.primary_version, 1); /* added, not made primary */

    v3.state = KMS_VERSION_DISABLED;
    v3.usage_count = 77;
    v3.ref.len = KMS_BACKEND_REF_MAX; /* the largest reference fits */
    memset(v3.ref.bytes, 0xc3, KMS_BACKEND_REF_MAX);
    assert_int_equal(s->ops->version_add(s, &v3, 1), KMS_OK);
    assert_int_equal(s->ops->key_get_by_name(s, "alpha", &got), KMS_OK);
    assert_int_equal(got.primary_version, 3);

    memset(&gv, 0x5a, sizeof(gv));
    assert_int_equal(s->ops->version_get(s, a.id, 2, &gv), KMS_OK);
    assert_memory_equal(gv.key_id, a.id, KMS_KEY_ID_LEN);
    assert_int_equal(gv.version, 2);
    assert_int_equal(gv.state, KMS_VERSION_ENABLED);
    assert_int_equal(gv.created_at, 1700000002);
    assert_int_equal(gv.usage_count, 0);
    assert_int_equal(gv.ref.len, 22);
    assert_memory_equal(gv.ref.bytes, v2.ref.bytes, 22);

    assert_int_equal(s->ops->version_get(s, a.id, 3, &gv), KMS_OK);
    assert_int_equal(gv.state, KMS_VERSION_DISABLED);
    assert_int_equal(gv.usage_count, 77);
    assert_int_equal(gv.ref.len, KMS_BACKEND_REF_MAX);
    assert_memory_equal(gv.ref.bytes, v3.ref.bytes, KMS_BACKEND_REF_MAX);

    kms_version_rec before;
    memset(&gv, 0x5a, sizeof(gv));
    before = gv;
    assert_int_equal(s->ops->version_get(s, a.id, 4, &gv), KMS_ENOTFOUND);
    uint8_t unknown[KMS_KEY_ID_LEN] = {7};
    assert_int_equal(s->ops->version_get(s, unknown, 1, &gv), KMS_ENOTFOUND);
    assert_memory_equal(&gv, &before, sizeof(gv));
}

static void versions_duplicate_and_unknown_key(void **state)
{
    struct fx *f = *state;
    kms_store *s = f->s;
    kms_key_rec a = add_alpha(s, 2), got;

    /* A duplicate with make_primary changes nothing, primary included. */
    kms_version_rec dup = version(a.id, 2);
    dup.ref.bytes[0] = 0xee;
    assert_int_equal(s->ops->version_add(s, &dup, 1), KMS_EEXISTS);
    assert_int_equal(s->ops->key_get_by_name(s, "alpha", &got), KMS_OK);
    assert_int_equal(got.primary_version, 1);
    kms_version_rec gv;
    assert_int_equal(s->ops->version_get(s, a.id, 2, &gv), KMS_OK);
    assert_int_equal(gv.ref.bytes[0], 2);

    uint8_t unknown[KMS_KEY_ID_LEN] = {7};
    kms_version_rec orphan = version(unknown, 1);
    assert_int_equal(s->ops->version_add(s, &orphan, 1), KMS_ENOTFOUND);
    assert_int_equal(s->ops->version_add(s, &orphan, 0), KMS_ENOTFOUND);
    sqlite3 *db = raw_open(f);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM key_versions"), 2);
    sqlite3_close(db);

    /* Bad records are refused before SQL. */
    kms_version_rec bad = version(a.id, 0);
    assert_int_equal(s->ops->version_add(s, &bad, 0), KMS_EINVAL);
    bad = version(a.id, 5);
    bad.state = (kms_version_state)0;
    assert_int_equal(s->ops->version_add(s, &bad, 0), KMS_EINVAL);
    bad = version(a.id, 5);
    bad.ref.len = 0;
    assert_int_equal(s->ops->version_add(s, &bad, 0), KMS_EINVAL);
    bad.ref.len = KMS_BACKEND_REF_MAX + 1;
    assert_int_equal(s->ops->version_add(s, &bad, 0), KMS_EINVAL);
    bad = version(a.id, 5);
    bad.usage_count = (uint64_t)INT64_MAX + 1;
    assert_int_equal(s->ops->version_add(s, &bad, 0), KMS_EINVAL);
    assert_int_equal(s->ops->version_add(s, NULL, 0), KMS_EINVAL);
    assert_int_equal(s->ops->version_get(s, a.id, 5, &gv), KMS_ENOTFOUND);

    /* The store is still usable: no transaction was left open. */
    kms_version_rec v3 = version(a.id, 3);
    assert_int_equal(s->ops->version_add(s, &v3, 1), KMS_OK);
}

/* The insert and the primary update commit together or not at all: a
 * trigger makes the update fail after the insert succeeded. */
static void version_add_with_primary_is_atomic(void **state)
{
    struct fx *f = *state;
    kms_store *s = f->s;
    kms_key_rec a = add_alpha(s, 1), got;
    sqlite3 *db = raw_open(f);
    raw_exec(db, "CREATE TRIGGER fail_primary BEFORE UPDATE OF primary_version ON keys"
                 " WHEN NEW.primary_version = 2 BEGIN SELECT RAISE(ABORT, 'injected'); END;");

    kms_version_rec v2 = version(a.id, 2), gv;
    assert_int_equal(s->ops->version_add(s, &v2, 1), KMS_ESTORE);
    assert_int_equal(s->ops->version_get(s, a.id, 2, &gv), KMS_ENOTFOUND); /* insert undone */
    assert_int_equal(s->ops->key_get_by_name(s, "alpha", &got), KMS_OK);
    assert_int_equal(got.primary_version, 1);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM key_versions"), 1);

    /* Without make_primary the same insert goes through. */
    assert_int_equal(s->ops->version_add(s, &v2, 0), KMS_OK);
    assert_int_equal(s->ops->version_get(s, a.id, 2, &gv), KMS_OK);
    raw_exec(db, "DROP TRIGGER fail_primary");
    sqlite3_close(db);
    kms_version_rec v3 = version(a.id, 3);
    assert_int_equal(s->ops->version_add(s, &v3, 1), KMS_OK);
    assert_int_equal(s->ops->key_get_by_name(s, "alpha", &got), KMS_OK);
    assert_int_equal(got.primary_version, 3);
}

struct version_walk {
    uint32_t seen[64];
    int n, stop_at;
};

static int walk_version(void *ctx, const kms_version_rec *v)
{
    struct version_walk *w = ctx;
    if (v->ref.len != 20 + v->version || v->ref.bytes[0] != (uint8_t)v->version)
        return KMS_EINTERNAL;
    w->seen[w->n++] = v->version;
    return w->n == w->stop_at ? KMS_EEXHAUSTED : 0;
}

static void version_list_in_version_order(void **state)
{
    struct fx *f = *state;
    kms_store *s = f->s;
    kms_key_rec a = key("alpha", 1), b = key("bravo", 2);
    assert_int_equal(s->ops->key_create(s, &a), KMS_OK);
    assert_int_equal(s->ops->key_create(s, &b), KMS_OK);
    /* 40 versions (more than two pages of 16), added newest first, and a
     * version of another key that must not show up. */
    for (uint32_t v = 40; v >= 1; v--) {
        kms_version_rec r = version(a.id, v);
        assert_int_equal(s->ops->version_add(s, &r, 0), KMS_OK);
    }
    kms_version_rec other = version(b.id, 5);
    assert_int_equal(s->ops->version_add(s, &other, 1), KMS_OK);

    struct version_walk w = {{0}, 0, 0};
    assert_int_equal(s->ops->version_list(s, a.id, walk_version, &w), KMS_OK);
    assert_int_equal(w.n, 40);
    for (int i = 0; i < 40; i++)
        assert_int_equal(w.seen[i], i + 1);

    w = (struct version_walk){{0}, 0, 20};
    assert_int_equal(s->ops->version_list(s, a.id, walk_version, &w), KMS_EEXHAUSTED);
    assert_int_equal(w.n, 20);

    w = (struct version_walk){{0}, 0, 0};
    assert_int_equal(s->ops->version_list(s, b.id, walk_version, &w), KMS_OK);
    assert_int_equal(w.n, 1);
    assert_int_equal(w.seen[0], 5);

    uint8_t unknown[KMS_KEY_ID_LEN] = {7};
    w = (struct version_walk){{0}, 0, 0};
    assert_int_equal(s->ops->version_list(s, unknown, walk_version, &w), KMS_OK);
    assert_int_equal(w.n, 0);
    assert_int_equal(s->ops->version_list(s, a.id, NULL, NULL), KMS_EINVAL);
}

static void version_set_state_persists(void **state)
{
    struct fx *f = *state;
    kms_store *s = f->s;
    kms_key_rec a = add_alpha(s, 2);
    kms_version_rec gv;

    assert_int_equal(s->ops->version_set_state(s, a.id, 2, KMS_VERSION_DISABLED), KMS_OK);
    assert_int_equal(s->ops->version_get(s, a.id, 2, &gv), KMS_OK);
    assert_int_equal(gv.state, KMS_VERSION_DISABLED);
    assert_int_equal(s->ops->version_set_state(s, a.id, 2, KMS_VERSION_PENDING_DELETION), KMS_OK);
    assert_int_equal(s->ops->version_set_state(s, a.id, 1, KMS_VERSION_DESTROYED), KMS_OK);
    assert_int_equal(s->ops->version_set_state(s, a.id, 9, KMS_VERSION_DISABLED), KMS_ENOTFOUND);
    uint8_t unknown[KMS_KEY_ID_LEN] = {7};
    assert_int_equal(s->ops->version_set_state(s, unknown, 1, KMS_VERSION_DISABLED), KMS_ENOTFOUND);
    assert_int_equal(s->ops->version_set_state(s, a.id, 1, (kms_version_state)0), KMS_EINVAL);
    assert_int_equal(s->ops->version_set_state(s, a.id, 1, (kms_version_state)5), KMS_EINVAL);

    reopen(f);
    s = f->s;
    assert_int_equal(s->ops->version_get(s, a.id, 1, &gv), KMS_OK);
    assert_int_equal(gv.state, KMS_VERSION_DESTROYED);
    assert_int_equal(s->ops->version_get(s, a.id, 2, &gv), KMS_OK);
    assert_int_equal(gv.state, KMS_VERSION_PENDING_DELETION);
}

/* ---- usage counters --------------------------------------------------------------- */

static void usage_reserve_counts_and_refuses(void **state)
{
    struct fx *f = *state;
    kms_store *s = f->s;
    kms_key_rec a = add_alpha(s, 1);
    kms_version_rec gv;
    uint64_t total = 0;

    assert_int_equal(s->ops->usage_reserve(s, a.id, 1, 40, 100, &total), KMS_OK);
    assert_int_equal(total, 40);
    assert_int_equal(s->ops->usage_reserve(s, a.id, 1, 60, 100, &total), KMS_OK);
    assert_int_equal(total, 100); /* exactly at the limit is allowed */

    total = 12345;
    assert_int_equal(s->ops->usage_reserve(s, a.id, 1, 1, 100, &total), KMS_EEXHAUSTED);
    assert_int_equal(total, 12345); /* untouched on failure */
    assert_int_equal(s->ops->usage_reserve(s, a.id, 1, 200, 150, &total), KMS_EEXHAUSTED);
    assert_int_equal(s->ops->version_get(s, a.id, 1, &gv), KMS_OK);
    assert_int_equal(gv.usage_count, 100); /* refusals changed nothing */

    assert_int_equal(s->ops->usage_reserve(s, a.id, 2, 1, 100, &total), KMS_ENOTFOUND);
    uint8_t unknown[KMS_KEY_ID_LEN] = {7};
    assert_int_equal(s->ops->usage_reserve(s, unknown, 1, 1, 100, &total), KMS_ENOTFOUND);
    assert_int_equal(total, 12345);

    assert_int_equal(s->ops->usage_reserve(s, a.id, 1, 0, 100, &total), KMS_EINVAL);
    assert_int_equal(s->ops->usage_reserve(s, a.id, 1, 1, UINT64_MAX, &total), KMS_EINVAL);
    assert_int_equal(s->ops->usage_reserve(s, a.id, 1, (uint64_t)INT64_MAX + 1, INT64_MAX, &total),
                     KMS_EINVAL);
    assert_int_equal(s->ops->usage_reserve(s, a.id, 1, 1, 100, NULL), KMS_EINVAL);

    /* The service's limit, 2^32, is representable. */
    assert_int_equal(s->ops->usage_reserve(s, a.id, 1, 1, UINT64_C(1) << 32, &total), KMS_OK);
    assert_int_equal(total, 101);
}

/* Near INT64_MAX the comparison must not overflow (into a REAL, in SQLite). */
static void usage_reserve_no_overflow(void **state)
{
    struct fx *f = *state;
    kms_store *s = f->s;
    kms_key_rec a = key("alpha", 1);
    assert_int_equal(s->ops->key_create(s, &a), KMS_OK);
    kms_version_rec v1 = version(a.id, 1), gv;
    v1.usage_count = INT64_MAX - 1;
    assert_int_equal(s->ops->version_add(s, &v1, 1), KMS_OK);
    uint64_t total = 0;
    assert_int_equal(s->ops->usage_reserve(s, a.id, 1, INT64_MAX, INT64_MAX, &total),
                     KMS_EEXHAUSTED);
    assert_int_equal(s->ops->usage_reserve(s, a.id, 1, 2, INT64_MAX, &total), KMS_EEXHAUSTED);
    assert_int_equal(s->ops->usage_reserve(s, a.id, 1, 1, INT64_MAX, &total), KMS_OK);
    assert_int_equal(total, (uint64_t)INT64_MAX);
    assert_int_equal(s->ops->usage_reserve(s, a.id, 1, 1, INT64_MAX, &total), KMS_EEXHAUSTED);
    assert_int_equal(s->ops->version_get(s, a.id, 1, &gv), KMS_OK);
    assert_int_equal(gv.usage_count, (uint64_t)INT64_MAX);
}

static void usage_persists_across_reopen(void **state)
{
    struct fx *f = *state;
    kms_store *s = f->s;
    kms_key_rec a = add_alpha(s, 1);
    kms_version_rec gv;
    uint64_t total = 0;
    assert_int_equal(s->ops->usage_reserve(s, a.id, 1, 1000, UINT64_C(1) << 32, &total), KMS_OK);
    assert_int_equal(s->ops->usage_reserve(s, a.id, 1, 24, 1024, &total), KMS_OK);
    assert_int_equal(s->ops->usage_reserve(s, a.id, 1, 1, 1024, &total), KMS_EEXHAUSTED);

    reopen(f);
    s = f->s;
    assert_int_equal(s->ops->version_get(s, a.id, 1, &gv), KMS_OK);
    assert_int_equal(gv.usage_count, 1024);
    assert_int_equal(s->ops->usage_reserve(s, a.id, 1, 1, 1025, &total), KMS_OK);
    assert_int_equal(total, 1025);

    /* And another process reading the file sees it. */
    sqlite3 *db = raw_open(f);
    assert_int_equal(raw_int(db, "SELECT usage_count FROM key_versions"), 1025);
    sqlite3_close(db);
}

struct racer {
    kms_store *s;
    const uint8_t *id;
    int errors;
    uint64_t totals[1000];
};

static void *reserve_loop(void *arg)
{
    struct racer *r = arg;
    for (int i = 0; i < 1000; i++) {
        if (r->s->ops->usage_reserve(r->s, r->id, 1, 1, 1000000, &r->totals[i]) != KMS_OK)
            r->errors++;
    }
    return NULL;
}

static void usage_reserve_concurrent(void **state)
{
    struct fx *f = *state;
    kms_store *s = f->s;
    kms_key_rec a = add_alpha(s, 1);
    kms_version_rec gv;
    enum { THREADS = 4 };
    pthread_t t[THREADS];
    struct racer *r = calloc(THREADS, sizeof(*r));
    assert_non_null(r);
    for (int i = 0; i < THREADS; i++) {
        r[i].s = s;
        r[i].id = a.id;
        assert_int_equal(pthread_create(&t[i], NULL, reserve_loop, &r[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);

    /* Every call got a distinct total: each read-back saw its own add. */
    uint8_t *seen = calloc(THREADS * 1000 + 1, 1);
    assert_non_null(seen);
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(r[i].errors, 0);
        for (int j = 0; j < 1000; j++) {
            assert_in_range(r[i].totals[j], 1, THREADS * 1000);
            assert_int_equal(seen[r[i].totals[j]]++, 0);
            if (j > 0)
                assert_true(r[i].totals[j] > r[i].totals[j - 1]);
        }
    }
    free(seen);
    free(r);
    assert_int_equal(s->ops->version_get(s, a.id, 1, &gv), KMS_OK);
    assert_int_equal(gv.usage_count, THREADS * 1000);
}

/* ---- the file --------------------------------------------------------------------- */

static void reopen_keeps_data(void **state)
{
    struct fx *f = *state;
    kms_key_rec a = add_alpha(f->s, 3), b = key("bravo", 2), got;
    assert_int_equal(f->s->ops->key_create(f->s, &b), KMS_OK);
    reopen(f);
    reopen(f); /* a second open of a current file migrates nothing */
    kms_store *s = f->s;
    assert_int_equal(s->ops->key_get_by_name(s, "alpha", &got), KMS_OK);
    assert_memory_equal(got.id, a.id, KMS_KEY_ID_LEN);
    assert_int_equal(got.primary_version, 1);
    assert_int_equal(s->ops->key_get_by_id(s, b.id, &got), KMS_OK);
    assert_string_equal(got.name, "bravo");
    struct version_walk w = {{0}, 0, 0};
    assert_int_equal(s->ops->version_list(s, a.id, walk_version, &w), KMS_OK);
    assert_int_equal(w.n, 3);
    kms_key_rec dup = key("alpha", 9);
    assert_int_equal(s->ops->key_create(s, &dup), KMS_EEXISTS); /* indexes survived too */
}

static sqlite3 *captured_db;

/* Called by SQLite for every new connection while registered: how the test
 * reaches the store's own connection, whose per-connection settings
 * (synchronous, foreign_keys) another connection cannot see. */
static int capture_db(sqlite3 *db, const char **err, const struct sqlite3_api_routines *api)
{
    (void)err;
    (void)api;
    if (captured_db == NULL)
        captured_db = db;
    return SQLITE_OK;
}

static void pragmas_on_the_store_connection(void **state)
{
    struct fx *f = *state;
    close_store(f);
    captured_db = NULL;
    assert_int_equal(sqlite3_auto_extension((void (*)(void))capture_db), SQLITE_OK);
    int r = kms_store_sqlite_open(f->db, &f->s);
    sqlite3_cancel_auto_extension((void (*)(void))capture_db);
    assert_int_equal(r, KMS_OK);
    assert_non_null(captured_db);

    char mode[16];
    raw_text(captured_db, "PRAGMA journal_mode", mode, sizeof(mode));
    assert_string_equal(mode, "wal");
    assert_int_equal(raw_int(captured_db, "PRAGMA synchronous"), 2); /* FULL */
    assert_int_equal(raw_int(captured_db, "PRAGMA foreign_keys"), 1);
    assert_true(raw_int(captured_db, "PRAGMA busy_timeout") > 0);
    assert_int_equal(raw_int(captured_db, "PRAGMA trusted_schema"), 0);
    assert_int_equal(raw_int(captured_db, "PRAGMA secure_delete"), 1);
    captured_db = NULL;
}

static void file_schema_and_integrity(void **state)
{
    struct fx *f = *state;
    add_alpha(f->s, 2);
    sqlite3 *db = raw_open(f);
    char text[64];
    raw_text(db, "PRAGMA journal_mode", text, sizeof(text));
    assert_string_equal(text, "wal"); /* WAL is a property of the file */
    raw_text(db, "PRAGMA integrity_check", text, sizeof(text));
    assert_string_equal(text, "ok");
    raw_exec(db, "PRAGMA foreign_keys=ON");
    assert_int_equal(raw_int(db, "SELECT count(*) FROM pragma_foreign_key_check"), 0);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM schema_version"), 1);
    assert_int_equal(raw_int(db, "SELECT version FROM schema_version"),
                     kms_store_sqlite_schema_version());
    assert_true(kms_store_sqlite_schema_version() >= 1);

    /* The CHECKs hold even against a writer that bypasses the store. */
    assert_int_not_equal(sqlite3_exec(db,
                                      "INSERT INTO keys (id, name, backend, created_at)"
                                      " VALUES (x'0102', 'short-id', 'pkcs11', 0)",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
    assert_int_not_equal(sqlite3_exec(db, "UPDATE key_versions SET state = 5", NULL, NULL, NULL),
                         SQLITE_OK);
    assert_int_not_equal(
        sqlite3_exec(db, "UPDATE key_versions SET usage_count = -1", NULL, NULL, NULL), SQLITE_OK);
    assert_int_not_equal(
        sqlite3_exec(db, "UPDATE key_versions SET usage_count = 'many'", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
}

static void file_mode_is_0600(void **state)
{
    struct fx *f = *state;
    close_store(f);
    remove_db(f);
    /* With a permissive umask, SQLite alone would create 0666. */
    mode_t old = umask(0);
    int r = kms_store_sqlite_open(f->db, &f->s);
    umask(old);
    assert_int_equal(r, KMS_OK);
    add_alpha(f->s, 1); /* a write, so the -wal file exists */

    struct stat sb;
    char path[320];
    assert_int_equal(stat(f->db, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    snprintf(path, sizeof(path), "%s-wal", f->db);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    snprintf(path, sizeof(path), "%s-shm", f->db);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
}

static void future_schema_refused(void **state)
{
    struct fx *f = *state;
    close_store(f);
    sqlite3 *db = raw_open(f);
    char sql[96];
    snprintf(sql, sizeof(sql), "UPDATE schema_version SET version = %d",
             kms_store_sqlite_schema_version() + 1);
    raw_exec(db, sql);
    sqlite3_close(db);

    kms_store *s = (kms_store *)0x1;
    assert_int_equal(kms_store_sqlite_open(f->db, &s), KMS_EUNSUPPORTED);
    assert_ptr_equal(s, (kms_store *)0x1); /* untouched on failure */
    assert_non_null(strstr(kms_error_detail(), "newer"));

    /* The refused open changed nothing. */
    db = raw_open(f);
    assert_int_equal(raw_int(db, "SELECT version FROM schema_version"),
                     kms_store_sqlite_schema_version() + 1);
    sqlite3_close(db);
}

static void bad_schema_version_table_refused(void **state)
{
    struct fx *f = *state;
    close_store(f);
    sqlite3 *db = raw_open(f);
    raw_exec(db, "INSERT INTO schema_version VALUES (1)"); /* two rows */
    sqlite3_close(db);
    kms_store *s = NULL;
    assert_int_equal(kms_store_sqlite_open(f->db, &s), KMS_ESTORE);
    assert_null(s);

    db = raw_open(f);
    raw_exec(db, "DELETE FROM schema_version"); /* no row */
    sqlite3_close(db);
    assert_int_equal(kms_store_sqlite_open(f->db, &s), KMS_ESTORE);
    assert_null(s);
}

/* A database that is someone else's (tables, no schema_version) is left
 * alone. */
static void foreign_database_refused(void **state)
{
    struct fx *f = *state;
    close_store(f);
    remove_db(f);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    raw_exec(db, "CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hello');");
    sqlite3_close(db);

    kms_store *s = NULL;
    assert_int_equal(kms_store_sqlite_open(f->db, &s), KMS_ESTORE);
    assert_null(s);
    db = raw_open(f);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'keys'"), 0);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM notes"), 1);
    sqlite3_close(db);
}

/* A migration that fails half-way leaves the file as it was: the step and
 * the version bump share one transaction. */
static void failed_migration_rolls_back(void **state)
{
    struct fx *f = *state;
    close_store(f);
    remove_db(f);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    /* Version 0 with a table in the way of the second CREATE of step 1. */
    raw_exec(db, "CREATE TABLE schema_version (version INTEGER NOT NULL);"
                 "INSERT INTO schema_version VALUES (0);"
                 "CREATE TABLE key_versions (x);");
    sqlite3_close(db);

    kms_store *s = NULL;
    assert_int_equal(kms_store_sqlite_open(f->db, &s), KMS_ESTORE);
    assert_null(s);
    db = raw_open(f);
    assert_int_equal(raw_int(db, "SELECT version FROM schema_version"), 0);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'keys'"), 0);
    /* Once the obstacle is gone, the same file migrates. */
    raw_exec(db, "DROP TABLE key_versions");
    sqlite3_close(db);
    assert_int_equal(kms_store_sqlite_open(f->db, &f->s), KMS_OK);
    db = raw_open(f);
    assert_int_equal(raw_int(db, "SELECT version FROM schema_version"),
                     kms_store_sqlite_schema_version());
    sqlite3_close(db);
}

static void write_noise(const char *path, long offset, int len, uint32_t seed)
{
    FILE *fp = fopen(path, offset == 0 ? "wb" : "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, offset, SEEK_SET), 0);
    uint32_t x = seed;
    for (int i = 0; i < len; i++) {
        x = x * 1664525u + 1013904223u;
        fputc((int)(x >> 24), fp);
    }
    assert_int_equal(fclose(fp), 0);
}

static void corrupt_file_refused(void **state)
{
    struct fx *f = *state;
    close_store(f);
    remove_db(f);
    write_noise(f->db, 0, 8192, 1);
    kms_store *s = NULL;
    assert_int_equal(kms_store_sqlite_open(f->db, &s), KMS_ESTORE);
    assert_null(s);

    /* A real store whose pages after the first are overwritten. */
    remove_db(f);
    assert_int_equal(kms_store_sqlite_open(f->db, &f->s), KMS_OK);
    add_alpha(f->s, 3);
    close_store(f); /* checkpoints: everything is in the main file now */
    sqlite3 *db = raw_open(f);
    long page = (long)raw_int(db, "PRAGMA page_size");
    long pages = (long)raw_int(db, "PRAGMA page_count");
    sqlite3_close(db);
    assert_true(pages > 1);
    write_noise(f->db, page, (int)(page * (pages - 1)), 2);
    assert_int_equal(kms_store_sqlite_open(f->db, &s), KMS_ESTORE);
    assert_null(s);

    /* Neither a directory nor a path in a missing directory opens. */
    assert_int_equal(kms_store_sqlite_open(f->dir, &s), KMS_ESTORE);
    char missing[320];
    snprintf(missing, sizeof(missing), "%s/no/such/dir/kms.db", f->dir);
    assert_int_equal(kms_store_sqlite_open(missing, &s), KMS_ESTORE);
    assert_int_equal(kms_store_sqlite_open(NULL, &s), KMS_EINVAL);
    assert_int_equal(kms_store_sqlite_open(f->db, NULL), KMS_EINVAL);
    assert_null(s);
}

/* Rows edited behind the store's back (CHECKs switched off) are refused on
 * read, never copied past a buffer or passed on with an unknown state. */
static void bad_rows_refused(void **state)
{
    struct fx *f = *state;
    kms_store *s = f->s;
    kms_key_rec a = add_alpha(s, 3), b = key("bravo", 2), c = key("charlie", 3), got;
    assert_int_equal(s->ops->key_create(s, &b), KMS_OK);
    assert_int_equal(s->ops->key_create(s, &c), KMS_OK);

    sqlite3 *db = raw_open(f);
    raw_exec(db, "PRAGMA ignore_check_constraints=ON;"
                 "UPDATE key_versions SET backend_ref = zeroblob(2049) WHERE version = 1;"
                 "UPDATE key_versions SET state = 9 WHERE version = 2;"
                 "UPDATE key_versions SET usage_count = -5 WHERE version = 3;"
                 "UPDATE keys SET name = replace(hex(zeroblob(100)), '0', 'n')"
                 " WHERE name = 'bravo';"
                 "UPDATE keys SET backend = 'abcdefghijklmnop' WHERE name = 'charlie';");
    sqlite3_close(db);

    kms_version_rec gv, before;
    memset(&gv, 0x5a, sizeof(gv));
    before = gv;
    assert_int_equal(s->ops->version_get(s, a.id, 1, &gv), KMS_ESTORE); /* ref too long */
    assert_int_equal(s->ops->version_get(s, a.id, 2, &gv), KMS_ESTORE); /* unknown state */
    assert_int_equal(s->ops->version_get(s, a.id, 3, &gv), KMS_ESTORE); /* negative count */
    assert_memory_equal(&gv, &before, sizeof(gv));
    uint64_t total = 0;
    assert_int_equal(s->ops->usage_reserve(s, a.id, 3, 1, 100, &total), KMS_ESTORE);

    struct version_walk w = {{0}, 0, 0};
    assert_int_equal(s->ops->version_list(s, a.id, walk_version, &w), KMS_ESTORE);
    assert_int_equal(w.n, 0);

    memset(&got, 0x5a, sizeof(got));
    kms_key_rec kbefore = got;
    assert_int_equal(s->ops->key_get_by_id(s, b.id, &got), KMS_ESTORE); /* 200-byte name */
    assert_int_equal(s->ops->key_get_by_id(s, c.id, &got), KMS_ESTORE); /* 16-byte backend */
    assert_memory_equal(&got, &kbefore, sizeof(got));
    assert_int_equal(s->ops->key_get_by_name(s, "alpha", &got), KMS_OK);

    struct key_walk *kw = calloc(1, sizeof(*kw));
    assert_non_null(kw);
    kw->s = s;
    assert_int_equal(s->ops->key_list(s, walk_key, kw), KMS_ESTORE);
    free(kw);
}

static void close_is_null_safe(void **state)
{
    struct fx *f = *state;
    f->s->ops->close(NULL);
    assert_string_equal(f->s->ops->name, "sqlite");
}

/* ---- schema 2: key policies, officers, thresholds ----------------------------- */

struct grants_seen {
    kms_key_action action[64];
    char identity[64][64];
    size_t n;
};

static int collect_grant(void *ctx, const kms_grant_rec *g)
{
    struct grants_seen *gs = ctx;
    assert_true(gs->n < 64);
    gs->action[gs->n] = g->action;
    snprintf(gs->identity[gs->n], sizeof(gs->identity[0]), "%s", g->identity);
    gs->n++;
    return 0;
}

static void policy_set_replaces_and_lists_in_order(void **state)
{
    struct fx *f = *state;
    kms_key_rec a = add_alpha(f->s, 1);
    const kms_grant_rec grants[] = {
        {KMS_ACTION_DECRYPT, "spiffe://kms.local/b"},
        {KMS_ACTION_ENCRYPT, "spiffe://kms.local/b"},
        {KMS_ACTION_ENCRYPT, "spiffe://kms.local/a"},
        {KMS_ACTION_REENCRYPT, "spiffe://kms.local/a"},
    };
    assert_int_equal(f->s->ops->policy_set(f->s, a.id, grants, 4), KMS_OK);
    struct grants_seen gs = {0};
    assert_int_equal(f->s->ops->policy_list(f->s, a.id, collect_grant, &gs), KMS_OK);
    assert_int_equal(gs.n, 4);
    assert_int_equal(gs.action[0], KMS_ACTION_ENCRYPT);
    assert_string_equal(gs.identity[0], "spiffe://kms.local/a");
    assert_int_equal(gs.action[1], KMS_ACTION_ENCRYPT);
    assert_string_equal(gs.identity[1], "spiffe://kms.local/b");
    assert_int_equal(gs.action[2], KMS_ACTION_DECRYPT);
    assert_int_equal(gs.action[3], KMS_ACTION_REENCRYPT);

    /* A second set replaces the whole policy; it survives a reopen. */
    const kms_grant_rec only[] = {{KMS_ACTION_DECRYPT, "CN-only"}};
    assert_int_equal(f->s->ops->policy_set(f->s, a.id, only, 1), KMS_OK);
    reopen(f);
    memset(&gs, 0, sizeof(gs));
    assert_int_equal(f->s->ops->policy_list(f->s, a.id, collect_grant, &gs), KMS_OK);
    assert_int_equal(gs.n, 1);
    assert_string_equal(gs.identity[0], "CN-only");

    /* An empty set clears it; an unknown key has no grants. */
    assert_int_equal(f->s->ops->policy_set(f->s, a.id, NULL, 0), KMS_OK);
    memset(&gs, 0, sizeof(gs));
    assert_int_equal(f->s->ops->policy_list(f->s, a.id, collect_grant, &gs), KMS_OK);
    assert_int_equal(gs.n, 0);
    uint8_t other[KMS_KEY_ID_LEN];
    memset(other, 0x77, sizeof(other));
    assert_int_equal(f->s->ops->policy_list(f->s, other, collect_grant, &gs), KMS_OK);
    assert_int_equal(gs.n, 0);
}

static void policy_set_refuses_bad_grants_atomically(void **state)
{
    struct fx *f = *state;
    kms_key_rec a = add_alpha(f->s, 1);
    const kms_grant_rec good[] = {{KMS_ACTION_ENCRYPT, "app"}};
    assert_int_equal(f->s->ops->policy_set(f->s, a.id, good, 1), KMS_OK);

    const kms_grant_rec twice[] = {{KMS_ACTION_DECRYPT, "x"}, {KMS_ACTION_DECRYPT, "x"}};
    assert_int_equal(f->s->ops->policy_set(f->s, a.id, twice, 2), KMS_EINVAL);
    const kms_grant_rec bad_action[] = {{(kms_key_action)9, "x"}};
    assert_int_equal(f->s->ops->policy_set(f->s, a.id, bad_action, 1), KMS_EINVAL);
    const kms_grant_rec empty[] = {{KMS_ACTION_DECRYPT, ""}};
    assert_int_equal(f->s->ops->policy_set(f->s, a.id, empty, 1), KMS_EINVAL);
    const kms_grant_rec null_id[] = {{KMS_ACTION_DECRYPT, NULL}};
    assert_int_equal(f->s->ops->policy_set(f->s, a.id, null_id, 1), KMS_EINVAL);
    char *longid = malloc(KMS_IDENTITY_MAX + 2);
    assert_non_null(longid);
    memset(longid, 'a', KMS_IDENTITY_MAX + 1);
    longid[KMS_IDENTITY_MAX + 1] = '\0';
    const kms_grant_rec too_long[] = {{KMS_ACTION_DECRYPT, longid}};
    assert_int_equal(f->s->ops->policy_set(f->s, a.id, too_long, 1), KMS_EINVAL);
    longid[KMS_IDENTITY_MAX] = '\0'; /* exactly the limit is fine */
    const kms_grant_rec at_limit[] = {{KMS_ACTION_DECRYPT, longid}};
    assert_int_equal(f->s->ops->policy_set(f->s, a.id, at_limit, 1), KMS_OK);
    free(longid);
    assert_int_equal(f->s->ops->policy_set(f->s, a.id, good, 1), KMS_OK);

    uint8_t other[KMS_KEY_ID_LEN];
    memset(other, 0x77, sizeof(other));
    assert_int_equal(f->s->ops->policy_set(f->s, other, good, 1), KMS_ENOTFOUND);

    /* Nothing above changed the good policy. */
    struct grants_seen gs = {0};
    assert_int_equal(f->s->ops->policy_list(f->s, a.id, collect_grant, &gs), KMS_OK);
    assert_int_equal(gs.n, 1);
    assert_string_equal(gs.identity[0], "app");
}

static void policy_list_pages_through_many_grants(void **state)
{
    struct fx *f = *state;
    kms_key_rec a = add_alpha(f->s, 1);
    enum { N = 60 };
    kms_grant_rec grants[N];
    char ids[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof(ids[i]), "id-%03d", i);
        grants[i].action = (kms_key_action)(1 + i % 3);
        grants[i].identity = ids[i];
    }
    assert_int_equal(f->s->ops->policy_set(f->s, a.id, grants, N), KMS_OK);
    struct grants_seen gs = {0};
    assert_int_equal(f->s->ops->policy_list(f->s, a.id, collect_grant, &gs), KMS_OK);
    assert_int_equal(gs.n, N);
    for (size_t i = 1; i < gs.n; i++) /* strictly ordered: no repeats across pages */
        assert_true(
            gs.action[i - 1] < gs.action[i] ||
            (gs.action[i - 1] == gs.action[i] && strcmp(gs.identity[i - 1], gs.identity[i]) < 0));
}

static kms_officer_rec officer(const char *id, const char *identity)
{
    kms_officer_rec o;
    memset(&o, 0, sizeof(o));
    snprintf(o.id, sizeof(o.id), "%s", id);
    snprintf(o.identity, sizeof(o.identity), "%s", identity);
    snprintf(o.signing_key_pem, sizeof(o.signing_key_pem),
             "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA%s\n-----END PUBLIC KEY-----\n", id);
    o.created_at = 1700000000;
    return o;
}

struct officers_seen {
    char id[40][KMS_OFFICER_ID_MAX + 1];
    char identity[40][64];
    size_t n;
};

static int collect_officer(void *ctx, const kms_officer_rec *o)
{
    struct officers_seen *os = ctx;
    assert_true(os->n < 40);
    int n = snprintf(os->id[os->n], sizeof(os->id[0]), "%s", o->id);
    assert_true(n > 0 && (size_t)n < sizeof(os->id[0]));
    n = snprintf(os->identity[os->n], sizeof(os->identity[0]), "%s", o->identity);
    assert_true(n > 0 && (size_t)n < sizeof(os->identity[0]));
    assert_non_null(strstr(o->signing_key_pem, "BEGIN PUBLIC KEY"));
    assert_int_equal(o->created_at, 1700000000);
    os->n++;
    return 0;
}

static void officers_add_list_remove(void **state)
{
    struct fx *f = *state;
    kms_officer_rec o2 = officer("officer2", "spiffe://kms.local/officer2");
    kms_officer_rec o1 = officer("officer1", "spiffe://kms.local/officer1");
    assert_int_equal(f->s->ops->officer_add(f->s, &o2), KMS_OK);
    assert_int_equal(f->s->ops->officer_add(f->s, &o1), KMS_OK);

    /* The id and the identity are each unique. */
    kms_officer_rec same_id = officer("officer1", "spiffe://kms.local/other");
    assert_int_equal(f->s->ops->officer_add(f->s, &same_id), KMS_EEXISTS);
    kms_officer_rec same_identity = officer("officer9", "spiffe://kms.local/officer2");
    assert_int_equal(f->s->ops->officer_add(f->s, &same_identity), KMS_EEXISTS);
    kms_officer_rec blank = officer("", "x");
    assert_int_equal(f->s->ops->officer_add(f->s, &blank), KMS_EINVAL);
    kms_officer_rec nokey = officer("officer7", "y");
    nokey.signing_key_pem[0] = '\0';
    assert_int_equal(f->s->ops->officer_add(f->s, &nokey), KMS_EINVAL);
    kms_officer_rec unterminated = officer("officer8", "z");
    memset(unterminated.identity, 'z', sizeof(unterminated.identity));
    assert_int_equal(f->s->ops->officer_add(f->s, &unterminated), KMS_EINVAL);

    reopen(f);
    struct officers_seen os = {0};
    assert_int_equal(f->s->ops->officer_list(f->s, collect_officer, &os), KMS_OK);
    assert_int_equal(os.n, 2);
    assert_string_equal(os.id[0], "officer1"); /* id order */
    assert_string_equal(os.identity[0], "spiffe://kms.local/officer1");
    assert_string_equal(os.id[1], "officer2");

    assert_int_equal(f->s->ops->officer_remove(f->s, "officer1"), KMS_OK);
    assert_int_equal(f->s->ops->officer_remove(f->s, "officer1"), KMS_ENOTFOUND);
    memset(&os, 0, sizeof(os));
    assert_int_equal(f->s->ops->officer_list(f->s, collect_officer, &os), KMS_OK);
    assert_int_equal(os.n, 1);
    assert_string_equal(os.id[0], "officer2");
}

static void officer_list_pages(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 35; i++) {
        char id[16], identity[48];
        snprintf(id, sizeof(id), "o%02d", i);
        snprintf(identity, sizeof(identity), "spiffe://kms.local/o%02d", i);
        kms_officer_rec o = officer(id, identity);
        assert_int_equal(f->s->ops->officer_add(f->s, &o), KMS_OK);
    }
    struct officers_seen os = {0};
    assert_int_equal(f->s->ops->officer_list(f->s, collect_officer, &os), KMS_OK);
    assert_int_equal(os.n, 35);
    for (size_t i = 1; i < os.n; i++)
        assert_true(strcmp(os.id[i - 1], os.id[i]) < 0);
}

struct thresholds_seen {
    char action[16][KMS_ACTION_TYPE_MAX + 1];
    uint32_t threshold[16];
    size_t n;
};

static int collect_threshold(void *ctx, const char *action, uint32_t threshold)
{
    struct thresholds_seen *ts = ctx;
    assert_true(ts->n < 16);
    snprintf(ts->action[ts->n], sizeof(ts->action[0]), "%s", action);
    ts->threshold[ts->n++] = threshold;
    return 0;
}

static void thresholds_set_get_list(void **state)
{
    struct fx *f = *state;
    uint32_t t = 0;
    assert_int_equal(f->s->ops->threshold_get(f->s, "RotateKey", &t), KMS_ENOTFOUND);
    assert_int_equal(f->s->ops->threshold_set(f->s, "RotateKey", 2), KMS_OK);
    assert_int_equal(f->s->ops->threshold_set(f->s, "CreateKey", 3), KMS_OK);
    assert_int_equal(f->s->ops->threshold_set(f->s, "RotateKey", 4), KMS_OK); /* replaces */
    /* No officer ever acts alone: 0 and 1 are refused and change nothing. */
    assert_int_equal(f->s->ops->threshold_set(f->s, "RotateKey", 1), KMS_EINVAL);
    assert_non_null(strstr(kms_error_detail(), "alone"));
    assert_int_equal(f->s->ops->threshold_set(f->s, "RotateKey", 0), KMS_EINVAL);
    assert_int_equal(f->s->ops->threshold_set(f->s, "", 2), KMS_EINVAL);
    assert_int_equal(f->s->ops->threshold_set(f->s, NULL, 2), KMS_EINVAL);

    reopen(f);
    assert_int_equal(f->s->ops->threshold_get(f->s, "RotateKey", &t), KMS_OK);
    assert_int_equal(t, 4);
    struct thresholds_seen ts = {0};
    assert_int_equal(f->s->ops->threshold_list(f->s, collect_threshold, &ts), KMS_OK);
    assert_int_equal(ts.n, 2);
    assert_string_equal(ts.action[0], "CreateKey");
    assert_int_equal(ts.threshold[0], 3);
    assert_string_equal(ts.action[1], "RotateKey");
    assert_int_equal(ts.threshold[1], 4);
}

/* The schema-2 CHECKs hold against a writer that bypasses the store. */
static void authorization_checks_in_the_file(void **state)
{
    struct fx *f = *state;
    kms_key_rec a = add_alpha(f->s, 1);
    (void)a;
    sqlite3 *db = raw_open(f);
    raw_exec(db, "PRAGMA foreign_keys=ON");
    assert_int_not_equal(
        sqlite3_exec(db, "INSERT INTO thresholds VALUES ('RotateKey', 1)", NULL, NULL, NULL),
        SQLITE_OK);
    assert_int_not_equal(
        sqlite3_exec(db, "INSERT INTO thresholds VALUES ('RotateKey', 'two')", NULL, NULL, NULL),
        SQLITE_OK);
    assert_int_not_equal(sqlite3_exec(db,
                                      "INSERT INTO key_policies VALUES"
                                      " (x'01010101010101010101010101010101', 4, 'x')",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
    assert_int_not_equal(sqlite3_exec(db,
                                      "INSERT INTO key_policies VALUES"
                                      " (x'09090909090909090909090909090909', 1, 'x')",
                                      NULL, NULL, NULL),
                         SQLITE_OK); /* no such key */
    assert_int_not_equal(
        sqlite3_exec(db, "INSERT INTO officers VALUES ('', 'i', 'k', 0)", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
}

struct auditor_names {
    char v[8][64];
    size_t n;
};

static int collect_auditor(void *ctx, const kms_auditor_rec *a)
{
    struct auditor_names *l = ctx;
    assert_true(l->n < 8);
    snprintf(l->v[l->n++], sizeof(l->v[0]), "%.63s", a->identity);
    return 0;
}

/* Auditors (the audit-reader migration): add, list in identity order,
 * remove; duplicates, unknown and empty identities refused; the file's
 * CHECKs hold against a writer that bypasses the store. */
static void auditors_add_list_remove(void **state)
{
    struct fx *f = *state;
    kms_auditor_rec a = {.identity = "spiffe://t/b", .created_at = 7};
    struct auditor_names l = {0};
    assert_int_equal(f->s->ops->auditor_add(f->s, &a), KMS_OK);
    assert_int_equal(f->s->ops->auditor_add(f->s, &a), KMS_EEXISTS);
    snprintf(a.identity, sizeof(a.identity), "spiffe://t/a");
    assert_int_equal(f->s->ops->auditor_add(f->s, &a), KMS_OK);
    a.identity[0] = '\0';
    assert_int_equal(f->s->ops->auditor_add(f->s, &a), KMS_EINVAL);
    assert_int_equal(f->s->ops->auditor_list(f->s, collect_auditor, &l), KMS_OK);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.v[0], "spiffe://t/a");
    assert_string_equal(l.v[1], "spiffe://t/b");
    assert_int_equal(f->s->ops->auditor_remove(f->s, "spiffe://t/a"), KMS_OK);
    assert_int_equal(f->s->ops->auditor_remove(f->s, "spiffe://t/a"), KMS_ENOTFOUND);
    assert_int_equal(f->s->ops->auditor_remove(f->s, ""), KMS_EINVAL);
    memset(&l, 0, sizeof(l));
    assert_int_equal(f->s->ops->auditor_list(f->s, collect_auditor, &l), KMS_OK);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.v[0], "spiffe://t/b");
    sqlite3 *db = raw_open(f);
    assert_int_not_equal(sqlite3_exec(db, "INSERT INTO auditors VALUES ('', 0)", NULL, NULL, NULL),
                         SQLITE_OK);
    assert_int_not_equal(
        sqlite3_exec(db, "INSERT INTO auditors VALUES ('x', 'soon')", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* A file at schema 1 (keys only) migrates to the current schema with its
 * keys intact. */
static void schema_1_file_migrates(void **state)
{
    struct fx *f = *state;
    kms_key_rec a = add_alpha(f->s, 2);
    close_store(f);
    sqlite3 *db = raw_open(f);
    raw_exec(db, "DROP TABLE state_digest;"
                 "ALTER TABLE keys DROP COLUMN mac; ALTER TABLE key_versions DROP COLUMN mac;"
                 "DROP TABLE approvals; DROP TABLE actions; DROP TABLE instance;"
                 "ALTER TABLE keys DROP COLUMN rotation_period_days;"
                 "ALTER TABLE keys DROP COLUMN deletion_at;"
                 "DROP TABLE key_policies; DROP TABLE officers; DROP TABLE thresholds;"
                 "DROP TABLE auditors;"
                 "UPDATE schema_version SET version = 1;");
    sqlite3_close(db);

    assert_int_equal(kms_store_sqlite_open(f->db, &f->s), KMS_OK);
    kms_key_rec got;
    assert_int_equal(f->s->ops->key_get_by_name(f->s, "alpha", &got), KMS_OK);
    assert_memory_equal(got.id, a.id, KMS_KEY_ID_LEN);
    assert_int_equal(got.primary_version, 1);
    const kms_grant_rec g[] = {{KMS_ACTION_ENCRYPT, "app"}};
    assert_int_equal(f->s->ops->policy_set(f->s, a.id, g, 1), KMS_OK);
    db = raw_open(f);
    assert_int_equal(raw_int(db, "SELECT version FROM schema_version"),
                     kms_store_sqlite_schema_version());
    assert_true(kms_store_sqlite_schema_version() >= 2);
    sqlite3_close(db);
}

static void authorization_ops_refuse_bad_arguments(void **state)
{
    struct fx *f = *state;
    uint8_t id[KMS_KEY_ID_LEN] = {0};
    uint32_t t = 0;
    assert_int_equal(f->s->ops->policy_set(NULL, id, NULL, 0), KMS_EINVAL);
    assert_int_equal(f->s->ops->policy_set(f->s, NULL, NULL, 0), KMS_EINVAL);
    assert_int_equal(f->s->ops->policy_set(f->s, id, NULL, 1), KMS_EINVAL);
    assert_int_equal(f->s->ops->policy_list(f->s, id, NULL, NULL), KMS_EINVAL);
    assert_int_equal(f->s->ops->officer_add(f->s, NULL), KMS_EINVAL);
    assert_int_equal(f->s->ops->officer_remove(f->s, NULL), KMS_EINVAL);
    assert_int_equal(f->s->ops->officer_list(f->s, NULL, NULL), KMS_EINVAL);
    assert_int_equal(f->s->ops->threshold_get(f->s, "x", NULL), KMS_EINVAL);
    assert_int_equal(f->s->ops->threshold_get(f->s, NULL, &t), KMS_EINVAL);
    assert_int_equal(f->s->ops->threshold_list(f->s, NULL, NULL), KMS_EINVAL);
}

/* ---- schema 3: lifecycle settings and quorum actions ---- */

static void enrol(kms_store *s, const char *id)
{
    kms_officer_rec o;
    memset(&o, 0, sizeof(o));
    snprintf(o.id, sizeof(o.id), "%s", id);
    snprintf(o.identity, sizeof(o.identity), "spiffe://x/%s", id);
    snprintf(o.signing_key_pem, sizeof(o.signing_key_pem), "PEM %s", id);
    assert_int_equal(s->ops->officer_add(s, &o), KMS_OK);
}

static kms_action_rec *new_action(uint8_t tag, uint32_t threshold, int64_t expires_at)
{
    kms_action_rec *a = calloc(1, sizeof(*a));
    memset(a->id, tag, sizeof(a->id));
    snprintf(a->type, sizeof(a->type), "RotateKey");
    a->bytes[0] = 0x12;
    a->bytes_len = 1;
    memset(a->digest, tag, sizeof(a->digest));
    snprintf(a->proposer, sizeof(a->proposer), "o1");
    a->state = KMS_ACTION_PENDING;
    a->threshold = threshold;
    a->created_at = 100 + tag;
    a->expires_at = expires_at;
    return a;
}

/* An automatic rotation's version and its record commit together or not
 * at all; only an executed kmsd action is accepted as the record. */
static void version_add_recorded_is_atomic(void **state)
{
    struct fx *f = *state;
    kms_store *s = f->s;
    kms_key_rec a = add_alpha(s, 1), got;
    kms_version_rec v2 = version(a.id, 2), v3 = version(a.id, 3), gv;
    kms_action_rec *rec = new_action(7, 0, 0), *back = calloc(1, sizeof(*back));
    snprintf(rec->proposer, sizeof(rec->proposer), "%s", KMS_SYSTEM_PROPOSER);
    rec->state = KMS_ACTION_EXECUTED;
    snprintf(rec->result, sizeof(rec->result), "key alpha rotated automatically");

    assert_int_equal(s->ops->version_add_recorded(s, &v2, rec), KMS_OK);
    assert_int_equal(s->ops->key_get_by_name(s, "alpha", &got), KMS_OK);
    assert_int_equal(got.primary_version, 2);
    assert_int_equal(s->ops->action_get(s, rec->id, back), KMS_OK);
    assert_int_equal(back->state, KMS_ACTION_EXECUTED);
    assert_string_equal(back->result, "key alpha rotated automatically");

    /* The record cannot be stored (its id is taken): no version either. */
    assert_int_equal(s->ops->version_add_recorded(s, &v3, rec), KMS_EEXISTS);
    assert_int_equal(s->ops->version_get(s, a.id, 3, &gv), KMS_ENOTFOUND);
    assert_int_equal(s->ops->key_get_by_name(s, "alpha", &got), KMS_OK);
    assert_int_equal(got.primary_version, 2);

    /* Not a kmsd record, or none: refused, nothing written. */
    memset(rec->id, 8, sizeof(rec->id));
    snprintf(rec->proposer, sizeof(rec->proposer), "o1");
    assert_int_equal(s->ops->version_add_recorded(s, &v3, rec), KMS_EINVAL);
    assert_int_equal(s->ops->version_add_recorded(s, &v3, NULL), KMS_EINVAL);
    assert_int_equal(s->ops->version_get(s, a.id, 3, &gv), KMS_ENOTFOUND);
    assert_int_equal(s->ops->action_get(s, rec->id, back), KMS_ENOTFOUND);
    free(rec);
    free(back);
}

static void lifecycle_settings(void **state)
{
    struct fx *f = *state;
    kms_key_rec a = add_alpha(f->s, 1), got;
    uint8_t inst[KMS_INSTANCE_ID_LEN], inst2[KMS_INSTANCE_ID_LEN], zero[KMS_INSTANCE_ID_LEN] = {0};
    assert_int_equal(f->s->ops->instance_id(f->s, inst), KMS_OK);
    assert_memory_not_equal(inst, zero, sizeof(inst));
    assert_int_equal(f->s->ops->key_set_min_decrypt(f->s, a.id, 1), KMS_OK);
    assert_int_equal(f->s->ops->key_set_rotation(f->s, a.id, 90), KMS_OK);
    assert_int_equal(f->s->ops->key_set_deletion(f->s, a.id, 12345), KMS_OK);
    assert_int_equal(f->s->ops->key_get_by_id(f->s, a.id, &got), KMS_OK);
    assert_int_equal(got.rotation_period_days, 90);
    assert_int_equal(got.deletion_at, 12345);
    assert_int_equal(f->s->ops->key_set_min_decrypt(f->s, a.id, 0), KMS_EINVAL);
    assert_int_equal(f->s->ops->key_set_rotation(f->s, a.id, 40000), KMS_EINVAL);
    uint8_t nope[KMS_KEY_ID_LEN] = {9};
    assert_int_equal(f->s->ops->key_set_deletion(f->s, nope, 1), KMS_ENOTFOUND);
    /* Destroying a version overwrites its reference. */
    kms_version_rec v;
    assert_int_equal(f->s->ops->version_destroy(f->s, a.id, 1), KMS_OK);
    assert_int_equal(f->s->ops->version_get(f->s, a.id, 1, &v), KMS_OK);
    assert_int_equal(v.state, KMS_VERSION_DESTROYED);
    assert_int_equal(v.ref.len, 1);
    assert_int_equal(v.ref.bytes[0], 0);
    assert_int_equal(f->s->ops->version_destroy(f->s, a.id, 9), KMS_ENOTFOUND);
    /* The instance id survives a reopen. */
    close_store(f);
    assert_int_equal(kms_store_sqlite_open(f->db, &f->s), KMS_OK);
    assert_int_equal(f->s->ops->instance_id(f->s, inst2), KMS_OK);
    assert_memory_equal(inst, inst2, sizeof(inst));
}

static void actions_approve_to_threshold(void **state)
{
    struct fx *f = *state;
    enrol(f->s, "o1");
    enrol(f->s, "o2");
    enrol(f->s, "o3");
    kms_action_rec *a = new_action(1, 2, 1000), *got = calloc(1, sizeof(*got));
    const uint8_t sig[] = {1, 2, 3};
    int reached = -1;
    assert_int_equal(f->s->ops->action_create(f->s, a), KMS_OK);
    assert_int_equal(f->s->ops->action_create(f->s, a), KMS_EEXISTS);
    assert_int_equal(f->s->ops->action_approve(f->s, a->id, "o1", sig, 3, 500, &reached), KMS_OK);
    assert_int_equal(reached, 0);
    /* The same officer twice: refused, nothing changes. */
    assert_int_equal(f->s->ops->action_approve(f->s, a->id, "o1", sig, 3, 501, &reached),
                     KMS_EEXISTS);
    assert_int_equal(f->s->ops->action_get(f->s, a->id, got), KMS_OK);
    assert_int_equal(got->n_approvals, 1);
    assert_int_equal(got->state, KMS_ACTION_PENDING);
    /* A removed officer's approval stops counting. */
    assert_int_equal(f->s->ops->officer_remove(f->s, "o1"), KMS_OK);
    assert_int_equal(f->s->ops->action_approve(f->s, a->id, "o2", sig, 3, 502, &reached), KMS_OK);
    assert_int_equal(reached, 0);
    assert_int_equal(f->s->ops->action_approve(f->s, a->id, "o3", sig, 3, 503, &reached), KMS_OK);
    assert_int_equal(reached, 1);
    assert_int_equal(f->s->ops->action_get(f->s, a->id, got), KMS_OK);
    assert_int_equal(got->state, KMS_ACTION_EXECUTING);
    assert_int_equal(got->n_approvals, 2);
    assert_string_equal(got->approvals[0].officer_id, "o2");
    /* Executing: no more approvals or cancel; plan and finish once. */
    assert_int_equal(f->s->ops->action_cancel(f->s, a->id), KMS_EPRECOND);
    const uint8_t plan[] = {7, 7};
    assert_int_equal(f->s->ops->action_set_plan(f->s, a->id, plan, 2), KMS_OK);
    assert_int_equal(f->s->ops->action_finish(f->s, a->id, KMS_ACTION_EXECUTED, "version 2"),
                     KMS_OK);
    assert_int_equal(f->s->ops->action_finish(f->s, a->id, KMS_ACTION_EXECUTED, "again"),
                     KMS_EPRECOND);
    assert_int_equal(f->s->ops->action_get(f->s, a->id, got), KMS_OK);
    assert_int_equal(got->state, KMS_ACTION_EXECUTED);
    assert_string_equal(got->result, "version 2");
    assert_int_equal(got->plan_len, 2);
    enrol(f->s, "o4");
    assert_int_equal(f->s->ops->action_approve(f->s, a->id, "o4", sig, 3, 504, &reached),
                     KMS_EPRECOND);
    free(a);
    free(got);
}

static void actions_expire_cancel_list(void **state)
{
    struct fx *f = *state;
    enrol(f->s, "o1");
    kms_action_rec *a = new_action(1, 2, 1000), *b = new_action(2, 2, 2000),
                   *got = calloc(1, sizeof(*got));
    const uint8_t sig[] = {1};
    int reached;
    assert_int_equal(f->s->ops->action_create(f->s, a), KMS_OK);
    assert_int_equal(f->s->ops->action_create(f->s, b), KMS_OK);
    /* Open proposals per proposer: pending and not expired at now. */
    uint32_t open_n;
    assert_int_equal(f->s->ops->action_count_pending(f->s, "o1", 500, &open_n), KMS_OK);
    assert_int_equal(open_n, 2);
    assert_int_equal(f->s->ops->action_count_pending(f->s, "o1", 1000, &open_n), KMS_OK);
    assert_int_equal(open_n, 1);
    assert_int_equal(f->s->ops->action_count_pending(f->s, "o2", 500, &open_n), KMS_OK);
    assert_int_equal(open_n, 0);
    /* Approving at or after expires_at: refused, and the action is EXPIRED. */
    assert_int_equal(f->s->ops->action_approve(f->s, a->id, "o1", sig, 1, 1000, &reached),
                     KMS_EPRECOND);
    assert_int_equal(f->s->ops->action_get(f->s, a->id, got), KMS_OK);
    assert_int_equal(got->state, KMS_ACTION_EXPIRED);
    assert_int_equal(got->n_approvals, 0);
    uint8_t ids[8][KMS_ACTION_ID_LEN];
    size_t n;
    assert_int_equal(f->s->ops->action_ids(f->s, 1, ids, 8, &n), KMS_OK);
    assert_int_equal(n, 1);
    assert_memory_equal(ids[0], b->id, KMS_ACTION_ID_LEN);
    assert_int_equal(f->s->ops->action_ids(f->s, 0, ids, 8, &n), KMS_OK);
    assert_int_equal(n, 2);
    assert_memory_equal(ids[0], b->id, KMS_ACTION_ID_LEN); /* newest first */
    assert_int_equal(f->s->ops->action_cancel(f->s, b->id), KMS_OK);
    assert_int_equal(f->s->ops->action_cancel(f->s, b->id), KMS_EPRECOND);
    assert_int_equal(f->s->ops->action_count_pending(f->s, "o1", 500, &open_n), KMS_OK);
    assert_int_equal(open_n, 0); /* one expired, one cancelled */
    kms_action_rec *c = new_action(3, 2, 3000);
    assert_int_equal(f->s->ops->action_create(f->s, c), KMS_OK);
    assert_int_equal(f->s->ops->action_expire(f->s, 2999, &n), KMS_OK);
    assert_int_equal(n, 0);
    assert_int_equal(f->s->ops->action_expire(f->s, 3000, &n), KMS_OK);
    assert_int_equal(n, 1);
    uint8_t unknown[KMS_ACTION_ID_LEN] = {0x77};
    assert_int_equal(f->s->ops->action_get(f->s, unknown, got), KMS_ENOTFOUND);
    assert_int_equal(f->s->ops->action_approve(f->s, unknown, "o1", sig, 1, 1, &reached),
                     KMS_ENOTFOUND);
    free(a);
    free(b);
    free(c);
    free(got);
}

/* ---- the statement helper (store_sqlite_query.h): its error paths ---------------- */

static sqlite3 *memdb(void)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    sqlite3_extended_result_codes(db, 1);
    assert_int_equal(kms_sq_script(db,
                                   "CREATE TABLE t (k INTEGER PRIMARY KEY, s TEXT, b BLOB);"
                                   "INSERT INTO t VALUES (1, 'one', x'0102');"
                                   "INSERT INTO t VALUES (2, '', NULL);"
                                   "INSERT INTO t VALUES (3, NULL, x'');",
                                   "test table"),
                     KMS_OK);
    return db;
}

static void query_helper_refuses_bad_statements(void **state)
{
    (void)state;
    sqlite3 *db = memdb();
    kms_sq q;
    int changes = -1;

    /* SQL that does not prepare, or is no statement at all. */
    assert_int_equal(kms_sq_open_once(&q, db, "SELEC nothing", KMS_SQ_NO_ARGS), KMS_ESTORE);
    assert_null(q.st);
    assert_int_equal(kms_sq_open_once(&q, db, "  -- only a comment", KMS_SQ_NO_ARGS), KMS_ESTORE);
    /* Too few, too many parameters; a NULL text. */
    assert_int_equal(kms_sq_open_once(&q, db, "SELECT s FROM t WHERE k = ?1", KMS_SQ_NO_ARGS),
                     KMS_ESTORE);
    assert_int_equal(kms_sq_open_once(&q, db, "SELECT s FROM t WHERE k = ?1",
                                      KMS_SQ_ARGS(KMS_SQ_INT(1), KMS_SQ_INT(2))),
                     KMS_ESTORE);
    assert_int_equal(
        kms_sq_open_once(&q, db, "SELECT s FROM t WHERE s = ?1", KMS_SQ_ARGS(KMS_SQ_TEXT(NULL))),
        KMS_ESTORE);
    assert_int_equal(
        kms_sq_open_once(&q, db, "SELECT s FROM t WHERE b = ?1", KMS_SQ_ARGS(KMS_SQ_BLOB(NULL, 4))),
        KMS_ESTORE);
    kms_sq_close(&q); /* closing a failed open is harmless */

    /* exec on a statement that returns a row; step after close. */
    assert_int_equal(kms_sq_open_once(&q, db, "SELECT 1", KMS_SQ_NO_ARGS), KMS_OK);
    assert_int_equal(kms_sq_exec(&q, &changes), KMS_ESTORE);
    assert_int_equal(changes, -1);
    kms_sq_close(&q);
    kms_sq_close(&q);
    assert_int_equal(kms_sq_step(&q), KMS_ESTORE);

    /* No row: KMS_ENOTFOUND with the caller's detail. */
    assert_int_equal(
        kms_sq_open_once(&q, db, "SELECT s FROM t WHERE k = ?1", KMS_SQ_ARGS(KMS_SQ_INT(99))),
        KMS_OK);
    assert_int_equal(kms_sq_one(&q, "no such row"), KMS_ENOTFOUND);
    assert_string_equal(kms_error_detail(), "no such row");
    kms_sq_close(&q);

    /* Constraint failures map to kms errors. */
    assert_int_equal(kms_sq_open_once(&q, db, "INSERT INTO t (k, s) VALUES (?1, ?2)",
                                      KMS_SQ_ARGS(KMS_SQ_INT(1), KMS_SQ_TEXT("dup"))),
                     KMS_OK);
    assert_int_equal(kms_sq_exec(&q, NULL), KMS_EEXISTS);
    kms_sq_close(&q);
    assert_int_equal(kms_sq_open_once(&q, db, "UPDATE t SET s = ?1 WHERE k > ?2",
                                      KMS_SQ_ARGS(KMS_SQ_TEXT("x"), KMS_SQ_INT(1))),
                     KMS_OK);
    assert_int_equal(kms_sq_exec(&q, &changes), KMS_OK);
    assert_int_equal(changes, 2);
    kms_sq_close(&q);
    assert_int_equal(kms_sq_script(db, "NOT SQL", "bad script"), KMS_ESTORE);
    assert_non_null(strstr(kms_error_detail(), "bad script"));
    sqlite3_close(db);
}

static void query_helper_columns_check_type_and_range(void **state)
{
    (void)state;
    sqlite3 *db = memdb();
    kms_sq q;
    char text[4] = "old";
    uint8_t blob[4] = {9, 9, 9, 9}, id[KMS_KEY_ID_LEN];
    size_t len = 77;
    sqlite3_int64 v = 77;

    /* Row 1: k = 1, s = 'one', b = 0102. */
    assert_int_equal(kms_sq_open_once(&q, db, "SELECT k, s, b FROM t WHERE k = 1", KMS_SQ_NO_ARGS),
                     KMS_OK);
    assert_int_equal(kms_sq_one(&q, "row 1"), KMS_OK);
    assert_int_equal(kms_sq_int(&q, 0, 2, 10, &v, "k"), KMS_ESTORE);                /* below min */
    assert_int_equal(kms_sq_int(&q, 0, -5, 0, &v, "k"), KMS_ESTORE);                /* above max */
    assert_int_equal(kms_sq_int(&q, 1, INT64_MIN, INT64_MAX, &v, "s"), KMS_ESTORE); /* text */
    assert_int_equal(v, 77);
    assert_int_equal(kms_sq_int(&q, 0, 1, 1, &v, "k"), KMS_OK);
    assert_int_equal(v, 1);
    char small[3] = "ab";
    assert_int_equal(kms_sq_text(&q, 1, small, sizeof(small), "s"), KMS_ESTORE); /* no room */
    assert_string_equal(small, "ab");
    assert_int_equal(kms_sq_text(&q, 0, text, sizeof(text), "k"), KMS_ESTORE); /* integer */
    assert_int_equal(kms_sq_text(&q, 1, text, sizeof(text), "s"), KMS_OK);
    assert_string_equal(text, "one");
    assert_int_equal(kms_sq_blob(&q, 2, 3, blob, sizeof(blob), &len, "b"), KMS_ESTORE); /* short */
    assert_int_equal(kms_sq_blob(&q, 2, 0, blob, 1, &len, "b"), KMS_ESTORE);            /* long */
    assert_int_equal(kms_sq_blob(&q, 1, 0, blob, sizeof(blob), &len, "s"), KMS_ESTORE); /* text */
    assert_int_equal(len, 77);
    assert_int_equal(blob[0], 9);
    assert_int_equal(kms_sq_blob(&q, 2, 2, blob, sizeof(blob), &len, "b"), KMS_OK);
    assert_int_equal(len, 2);
    assert_int_equal(blob[1], 2);
    assert_int_equal(kms_sq_id(&q, 2, id), KMS_ESTORE); /* 2 bytes, not 16 */
    assert_int_equal(kms_sq_step(&q), 0);
    kms_sq_close(&q);

    /* Row 2: s = '' (empty text refused, or read as ""), b = NULL. */
    assert_int_equal(kms_sq_open_once(&q, db, "SELECT s, b FROM t WHERE k = 2", KMS_SQ_NO_ARGS),
                     KMS_OK);
    assert_int_equal(kms_sq_one(&q, "row 2"), KMS_OK);
    assert_int_equal(kms_sq_text(&q, 0, text, sizeof(text), "s"), KMS_ESTORE);
    assert_int_equal(kms_sq_text_or_empty(&q, 0, text, sizeof(text), "s"), KMS_OK);
    assert_string_equal(text, "");
    assert_int_equal(kms_sq_blob(&q, 1, 1, blob, sizeof(blob), &len, "b"), KMS_ESTORE);
    assert_int_equal(kms_sq_blob(&q, 1, 0, blob, sizeof(blob), &len, "b"), KMS_OK);
    assert_int_equal(len, 0);
    kms_sq_close(&q);

    /* Row 3: s = NULL reads as "" only where allowed; b = x'' (0 bytes). */
    assert_int_equal(kms_sq_open_once(&q, db, "SELECT s, b FROM t WHERE k = 3", KMS_SQ_NO_ARGS),
                     KMS_OK);
    assert_int_equal(kms_sq_one(&q, "row 3"), KMS_OK);
    memcpy(text, "old", 4);
    assert_int_equal(kms_sq_text(&q, 0, text, sizeof(text), "s"), KMS_ESTORE);
    assert_string_equal(text, "old");
    assert_int_equal(kms_sq_text_or_empty(&q, 0, text, sizeof(text), "s"), KMS_OK);
    assert_string_equal(text, "");
    assert_int_equal(kms_sq_blob(&q, 1, 1, blob, sizeof(blob), &len, "b"), KMS_ESTORE);
    kms_sq_close(&q);
    sqlite3_close(db);
}

/* A store statement id outside the table, or not prepared, is refused. */
static void query_helper_refuses_unknown_statement_ids(void **state)
{
    struct fx *f = *state;
    struct sqlite_store *s = kms_sqlite_impl(f->s);
    kms_sq q;
    int changes = 0;
    assert_int_equal(kms_sq_open(&q, s, ST_COUNT, KMS_SQ_NO_ARGS), KMS_ESTORE);
    assert_int_equal(kms_sq_open(&q, s, (enum stmt_id) - 1, KMS_SQ_NO_ARGS), KMS_ESTORE);
    /* Wrong parameter count for a real statement. */
    kms_sqlite_lock(s);
    assert_int_equal(kms_sq_run(s, ST_KEY_EXISTS, KMS_SQ_NO_ARGS, &changes), KMS_ESTORE);
    kms_sqlite_unlock(s);
    /* And the store still works afterwards. */
    uint32_t t = 0;
    assert_int_equal(f->s->ops->threshold_get(f->s, "RotateKey", &t), KMS_ENOTFOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(keys_create_and_get, setup, teardown),
        cmocka_unit_test_setup_teardown(lifecycle_settings, setup, teardown),
        cmocka_unit_test_setup_teardown(actions_approve_to_threshold, setup, teardown),
        cmocka_unit_test_setup_teardown(actions_expire_cancel_list, setup, teardown),
        cmocka_unit_test_setup_teardown(keys_duplicates_and_unknown, setup, teardown),
        cmocka_unit_test_setup_teardown(keys_bad_records_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(key_list_walks_in_name_order, setup, teardown),
        cmocka_unit_test_setup_teardown(versions_add_get_and_primary, setup, teardown),
        cmocka_unit_test_setup_teardown(versions_duplicate_and_unknown_key, setup, teardown),
        cmocka_unit_test_setup_teardown(version_add_with_primary_is_atomic, setup, teardown),
        cmocka_unit_test_setup_teardown(version_list_in_version_order, setup, teardown),
        cmocka_unit_test_setup_teardown(version_set_state_persists, setup, teardown),
        cmocka_unit_test_setup_teardown(usage_reserve_counts_and_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(usage_reserve_no_overflow, setup, teardown),
        cmocka_unit_test_setup_teardown(usage_persists_across_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(usage_reserve_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(reopen_keeps_data, setup, teardown),
        cmocka_unit_test_setup_teardown(pragmas_on_the_store_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(file_schema_and_integrity, setup, teardown),
        cmocka_unit_test_setup_teardown(file_mode_is_0600, setup, teardown),
        cmocka_unit_test_setup_teardown(future_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_schema_version_table_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(foreign_database_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(failed_migration_rolls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(corrupt_file_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_rows_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(close_is_null_safe, setup, teardown),
        cmocka_unit_test_setup_teardown(policy_set_replaces_and_lists_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(policy_set_refuses_bad_grants_atomically, setup, teardown),
        cmocka_unit_test_setup_teardown(policy_list_pages_through_many_grants, setup, teardown),
        cmocka_unit_test_setup_teardown(officers_add_list_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(officer_list_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(thresholds_set_get_list, setup, teardown),
        cmocka_unit_test_setup_teardown(authorization_checks_in_the_file, setup, teardown),
        cmocka_unit_test_setup_teardown(auditors_add_list_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(schema_1_file_migrates, setup, teardown),
        cmocka_unit_test_setup_teardown(authorization_ops_refuse_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(version_add_recorded_is_atomic, setup, teardown),
        cmocka_unit_test(query_helper_refuses_bad_statements),
        cmocka_unit_test(query_helper_columns_check_type_and_range),
        cmocka_unit_test_setup_teardown(query_helper_refuses_unknown_statement_ids, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
