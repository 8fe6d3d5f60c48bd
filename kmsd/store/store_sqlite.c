/* The SQLite store (contract: store.h; design notes: docs/storage.md):
 * open, keys, versions and nonce usage, and the ops table. The top of the
 * store: it calls the schema, authz and quorum files, which call only the
 * query helper (store_sqlite_query.h), never back up here.
 *
 * One connection guarded by one mutex. Every statement (text in
 * store_sqlite_stmt.c) is prepared once at open and runs through the query
 * helper. WAL + synchronous=FULL: a write is on disk when its call returns.
 * The store holds metadata and backend references only, never key
 * material, so nothing here is wiped. */
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "kmsd/store/store.h"
#include "kmsd/store/store_sqlite_internal.h"
#include "kmsd/store/store_sqlite_query.h"

#define KEY_PAGE 64     /* keys read per lock hold in key_list */
#define VERSION_PAGE 16 /* versions read per lock hold in version_list */

/* Decodes the current row (KEY_COLUMNS in store_sqlite_stmt.c); *out is written only if every
 * column is valid. */
static int read_key(kms_sq *q, kms_key_rec *out)
{
    kms_key_rec k;
    sqlite3_int64 primary = 0, min_decrypt = 0, created = 0, rotation = 0, deletion = 0;
    int r;

    memset(&k, 0, sizeof(k));
    if ((r = kms_sq_id(q, 0, k.id)) != 0 ||
        (r = kms_sq_text(q, 1, k.name, sizeof(k.name), "key name")) != 0 ||
        (r = kms_sq_text(q, 2, k.backend, sizeof(k.backend), "backend name")) != 0 ||
        (r = kms_sq_int(q, 3, 0, UINT32_MAX, &primary, "primary version")) != 0 ||
        (r = kms_sq_int(q, 4, 1, UINT32_MAX, &min_decrypt, "min decrypt version")) != 0 ||
        (r = kms_sq_int(q, 5, INT64_MIN, INT64_MAX, &created, "key created_at")) != 0 ||
        (r = kms_sq_int(q, 6, 0, 36500, &rotation, "rotation period")) != 0 ||
        (r = kms_sq_int(q, 7, 0, INT64_MAX, &deletion, "deletion_at")) != 0)
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

/* Decodes the current row (VERSION_COLUMNS in store_sqlite_stmt.c); *out is written only if every
 * column is valid. A reference longer than KMS_BACKEND_REF_MAX is refused,
 * never truncated. */
static int read_version(kms_sq *q, kms_version_rec *out)
{
    kms_version_rec v;
    sqlite3_int64 version = 0, state = 0, created = 0, usage = 0;
    int r;

    memset(&v, 0, sizeof(v));
    if ((r = kms_sq_id(q, 0, v.key_id)) != 0 ||
        (r = kms_sq_int(q, 1, 1, UINT32_MAX, &version, "version")) != 0 ||
        (r = kms_sq_int(q, 2, KMS_VERSION_ENABLED, KMS_VERSION_DESTROYED, &state,
                        "version state")) != 0 ||
        (r = kms_sq_int(q, 3, INT64_MIN, INT64_MAX, &created, "version created_at")) != 0 ||
        (r = kms_sq_int(q, 4, 0, INT64_MAX, &usage, "usage count")) != 0 ||
        (r = kms_sq_blob(q, 5, 1, v.ref.bytes, sizeof(v.ref.bytes), &v.ref.len,
                         "backend reference")) != 0)
        goto out;
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
    int r;

    if (store == NULL || k == NULL || !valid_name(k->name) ||
        strnlen(k->backend, sizeof(k->backend)) == 0 ||
        strnlen(k->backend, sizeof(k->backend)) > BACKEND_NAME_MAX)
        return kms_error_set(KMS_EINVAL, "store: key record incomplete or unterminated");
    if (k->primary_version != 0)
        return kms_error_set(KMS_EINVAL, "store: a new key has no primary version yet");
    s = kms_sqlite_impl(store);

    kms_sqlite_lock(s);
    r = kms_sq_run(s, ST_KEY_INSERT,
                   KMS_SQ_ARGS(KMS_SQ_ID(k->id), KMS_SQ_TEXT(k->name), KMS_SQ_TEXT(k->backend),
                               KMS_SQ_INT(0),
                               KMS_SQ_INT(k->min_decrypt_version ? k->min_decrypt_version : 1),
                               KMS_SQ_INT(k->created_at), KMS_SQ_INT(k->rotation_period_days),
                               KMS_SQ_INT(k->deletion_at)),
                   NULL);
    kms_sqlite_unlock(s);
    return r;
}

/* One-row lookup of a key by the statement id bound to key. */
static int key_get(struct sqlite_store *s, enum stmt_id id, kms_sq_param key, kms_key_rec *out)
{
    kms_sq q;
    int r;

    kms_sqlite_lock(s);
    if ((r = kms_sq_open(&q, s, id, KMS_SQ_ARGS(key))) != 0 ||
        (r = kms_sq_one(&q, "no such key")) != 0)
        goto out;
    r = read_key(&q, out);
out:
    kms_sq_close(&q);
    kms_sqlite_unlock(s);
    return r;
}

static int key_get_by_name(kms_store *store, const char *name, kms_key_rec *out)
{
    if (store == NULL || out == NULL || !valid_name(name))
        return kms_error_set(KMS_EINVAL, "store: key name missing or longer than %d bytes",
                             KMS_KEY_NAME_MAX);
    return key_get(kms_sqlite_impl(store), ST_KEY_BY_NAME, KMS_SQ_TEXT(name), out);
}

static int key_get_by_id(kms_store *store, const uint8_t id[KMS_KEY_ID_LEN], kms_key_rec *out)
{
    if (store == NULL || id == NULL || out == NULL)
        return kms_error_set(KMS_EINVAL, "store: no key id");
    return key_get(kms_sqlite_impl(store), ST_KEY_BY_ID, KMS_SQ_ID(id), out);
}

/* Reads up to KEY_PAGE keys named after `after` into page. */
static int key_page(struct sqlite_store *s, const char *after, kms_key_rec *page, size_t *n)
{
    kms_sq q;
    size_t got = 0;
    int r;

    kms_sqlite_lock(s);
    if ((r = kms_sq_open(&q, s, ST_KEY_PAGE,
                         KMS_SQ_ARGS(KMS_SQ_TEXT(after), KMS_SQ_INT(KEY_PAGE)))) != 0)
        goto out;
    while (got < KEY_PAGE && (r = kms_sq_step(&q)) == 1) {
        if ((r = read_key(&q, &page[got])) != 0)
            goto out;
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
    int r, changes = 0;

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
    if ((r = kms_sqlite_key_exists(s, v->key_id, "version add")) != 0 ||
        (r = kms_sq_run(s, ST_VERSION_INSERT,
                        KMS_SQ_ARGS(KMS_SQ_ID(v->key_id), KMS_SQ_INT(v->version),
                                    KMS_SQ_INT(v->state), KMS_SQ_INT(v->created_at),
                                    KMS_SQ_INT(v->usage_count),
                                    KMS_SQ_BLOB(v->ref.bytes, v->ref.len)),
                        NULL)) != 0)
        goto end;
    if (make_primary) {
        if ((r = kms_sq_run(s, ST_SET_PRIMARY,
                            KMS_SQ_ARGS(KMS_SQ_INT(v->version), KMS_SQ_ID(v->key_id)), &changes)) !=
            0)
            goto end;
        if (changes != 1) {
            r = kms_error_set(KMS_ESTORE, "set primary version: key row vanished");
            goto end;
        }
    }
    if (record != NULL)
        r = kms_sqlite_action_insert(s, record);
end:
    r = kms_sqlite_tx_end(s, r);
out:
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
    kms_sq q;
    int r;

    if (store == NULL || key_id == NULL || out == NULL)
        return kms_error_set(KMS_EINVAL, "store: no key id");
    s = kms_sqlite_impl(store);

    kms_sqlite_lock(s);
    if ((r = kms_sq_open(&q, s, ST_VERSION_GET,
                         KMS_SQ_ARGS(KMS_SQ_ID(key_id), KMS_SQ_INT(version)))) != 0 ||
        (r = kms_sq_one(&q, "no such key version")) != 0)
        goto out;
    r = read_version(&q, out);
out:
    kms_sq_close(&q);
    kms_sqlite_unlock(s);
    return r;
}

static int version_unrecorded_do(kms_store *store, const uint8_t key_id[KMS_KEY_ID_LEN],
                                 uint32_t version, int (*fn)(void *ctx), void *ctx)
{
    struct sqlite_store *s;
    kms_sq q;
    int r;

    if (store == NULL || key_id == NULL || fn == NULL)
        return kms_error_set(KMS_EINVAL, "store: no key id or function");
    s = kms_sqlite_impl(store);

    kms_sqlite_lock(s);
    if ((r = kms_sqlite_tx_begin(s)) != 0) {
        kms_sqlite_unlock(s);
        return r;
    }
    r = kms_sq_open(&q, s, ST_VERSION_GET, KMS_SQ_ARGS(KMS_SQ_ID(key_id), KMS_SQ_INT(version)));
    if (r == 0) {
        r = kms_sq_step(&q);
        if (r == 1)
            r = kms_error_set(KMS_EEXISTS, "store: version %u is recorded", version);
    }
    kms_sq_close(&q);
    if (r == 0)
        r = fn(ctx);
    /* Nothing was written: the end only releases the lock. */
    r = kms_sqlite_tx_end(s, r);
    kms_sqlite_unlock(s);
    return r;
}

/* Reads up to VERSION_PAGE versions of key_id after `after` into page. */
static int version_page(struct sqlite_store *s, const uint8_t *key_id, uint32_t after,
                        kms_version_rec *page, size_t *n)
{
    kms_sq q;
    size_t got = 0;
    int r;

    kms_sqlite_lock(s);
    if ((r = kms_sq_open(
             &q, s, ST_VERSION_PAGE,
             KMS_SQ_ARGS(KMS_SQ_ID(key_id), KMS_SQ_INT(after), KMS_SQ_INT(VERSION_PAGE)))) != 0)
        goto out;
    while (got < VERSION_PAGE && (r = kms_sq_step(&q)) == 1) {
        if ((r = read_version(&q, &page[got])) != 0)
            goto out;
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
    int r, changes = 0;

    if (store == NULL || key_id == NULL || !valid_state(state))
        return kms_error_set(KMS_EINVAL, "store: no key id or unknown version state");
    s = kms_sqlite_impl(store);

    kms_sqlite_lock(s);
    r = kms_sq_run(s, ST_VERSION_STATE,
                   KMS_SQ_ARGS(KMS_SQ_INT(state), KMS_SQ_ID(key_id), KMS_SQ_INT(version)),
                   &changes);
    if (r == 0 && changes == 0)
        r = kms_error_set(KMS_ENOTFOUND, "no such key version");
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
    kms_sq q = {0};
    sqlite3_int64 now = 0;
    int r, changed = 0;

    if (store == NULL || key_id == NULL || total == NULL || n == 0 || n > INT64_MAX ||
        limit > INT64_MAX)
        return kms_error_set(KMS_EINVAL, "store: usage reservation out of range");
    s = kms_sqlite_impl(store);

    kms_sqlite_lock(s);
    if ((r = kms_sqlite_tx_begin(s)) != 0)
        goto out;
    if ((r = kms_sq_run(
             s, ST_USAGE_ADD,
             KMS_SQ_ARGS(KMS_SQ_INT(n), KMS_SQ_ID(key_id), KMS_SQ_INT(version), KMS_SQ_INT(limit)),
             &changed)) != 0)
        goto end;
    /* Read back in the same transaction: the total includes exactly our n
     * and whatever came before, nothing after. */
    if ((r = kms_sq_open(&q, s, ST_USAGE_GET,
                         KMS_SQ_ARGS(KMS_SQ_ID(key_id), KMS_SQ_INT(version)))) != 0 ||
        (r = kms_sq_one(&q, "usage reserve: no such key version")) != 0 ||
        (r = kms_sq_int(&q, 0, 0, INT64_MAX, &now, "usage count")) != 0)
        goto end;
    if (!changed)
        r = kms_error_set(KMS_EEXHAUSTED, "usage count %lld + %llu would pass the limit %llu",
                          (long long)now, (unsigned long long)n, (unsigned long long)limit);
end:
    kms_sq_close(&q);
    r = kms_sqlite_tx_end(s, r);
out:
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
    kms_sqlite_finalize_all(s);
    sqlite3_finalize(s->dirty_st);
    sqlite3_finalize(s->data_version_st);
    if (s->mac_ctx_free != NULL)
        s->mac_ctx_free(s->mac_ctx); /* wipes the state subkey */
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
    .version_unrecorded_do = version_unrecorded_do,
    .version_list = version_list,
    .version_set_state = version_set_state,
    .usage_reserve = usage_reserve,
    .policy_set = kms_sqlite_policy_set,
    .policy_list = kms_sqlite_policy_list,
    .officer_add = kms_sqlite_officer_add,
    .officer_remove = kms_sqlite_officer_remove,
    .officer_list = kms_sqlite_officer_list,
    .auditor_add = kms_sqlite_auditor_add,
    .auditor_remove = kms_sqlite_auditor_remove,
    .auditor_list = kms_sqlite_auditor_list,
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
    .state_attach = kms_sqlite_state_attach,
    .state_sealed = kms_sqlite_state_sealed,
    .state_seal_all = kms_sqlite_state_seal_all,
    .state_verify = kms_sqlite_state_verify,
    .state_verify_key = kms_sqlite_state_verify_key,
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
    r = kms_sqlite_prepare_all(s);
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
