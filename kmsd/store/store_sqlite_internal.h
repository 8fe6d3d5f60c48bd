/* Internals shared by the SQLite store's files: store_sqlite.c (open,
 * keys, versions, nonce usage), store_sqlite_schema.c (migrations,
 * connection set-up), store_sqlite_authz.c (policies, officers,
 * thresholds) and store_sqlite_quorum.c (instance id, key lifecycle
 * settings, quorum actions and approvals). Not a public header. */
#ifndef KMS_STORE_SQLITE_INTERNAL_H
#define KMS_STORE_SQLITE_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>

#include "kmsd/store/store.h"

#define KMS_SQLITE_STMTS_MAX 64
#define BACKEND_NAME_MAX 15 /* bytes, without the NUL */

/* The statements prepared once at open (SQL text in store_sqlite.c). */
enum stmt_id {
    ST_KEY_INSERT,
    ST_KEY_BY_NAME,
    ST_KEY_BY_ID,
    ST_KEY_PAGE,
    ST_KEY_EXISTS,
    ST_VERSION_INSERT,
    ST_SET_PRIMARY,
    ST_VERSION_GET,
    ST_VERSION_PAGE,
    ST_VERSION_STATE,
    ST_USAGE_ADD,
    ST_USAGE_GET,
    ST_POLICY_DELETE,
    ST_POLICY_INSERT,
    ST_POLICY_PAGE,
    ST_OFFICER_INSERT,
    ST_OFFICER_DELETE,
    ST_OFFICER_PAGE,
    ST_THRESHOLD_SET,
    ST_THRESHOLD_GET,
    ST_THRESHOLD_PAGE,
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_COUNT
};

struct sqlite_store {
    kms_store base; /* first: a kms_store * is a struct sqlite_store * */
    sqlite3 *db;
    pthread_mutex_t mu;
    int mu_ready;
    sqlite3_stmt *st[KMS_SQLITE_STMTS_MAX]; /* store_sqlite.c's prepared statements */
};

struct sqlite_store *kms_sqlite_impl(kms_store *s);
/* Statement id, reset and unbound, ready for binding (lock held). */
sqlite3_stmt *kms_sqlite_stmt(struct sqlite_store *s, enum stmt_id id);
int kms_sqlite_bind_id(sqlite3_stmt *st, int col, const uint8_t *id);

/* The one connection's mutex; aborts if it cannot be taken or released. */
void kms_sqlite_lock(struct sqlite_store *s);
void kms_sqlite_unlock(struct sqlite_store *s);

/* Opening (store_sqlite_schema.c): creates the file 0600 if absent; sets
 * the connection's pragmas and checks each took; runs the migrations up to
 * kms_store_sqlite_schema_version(). */
int kms_sqlite_create_private(const char *path);
int kms_sqlite_configure(sqlite3 *db);
int kms_sqlite_migrate(sqlite3 *db);

/* A rollback after a failure must not replace the failure's detail (any
 * kms_error_set overwrites it), so callers save it around the rollback. */
struct kms_sqlite_detail {
    char text[256];
};
void kms_sqlite_detail_save(struct kms_sqlite_detail *d);
void kms_sqlite_detail_restore(const struct kms_sqlite_detail *d, int r);

/* Maps an SQLite result code to a kms error with a detail (never values). */
int kms_sqlite_error(sqlite3 *db, int rc, const char *what);

/* BEGIN IMMEDIATE; and commit if r is 0, else roll back (keeping r's
 * detail). Call with the lock held. */
int kms_sqlite_tx_begin(struct sqlite_store *s);
int kms_sqlite_tx_end(struct sqlite_store *s, int r);

/* Resets a statement and clears its bindings. NULL-safe. */
void kms_sqlite_done(sqlite3_stmt *st);

/* Column decoders that check type and range (KMS_ESTORE otherwise). */
int kms_sqlite_copy_text(sqlite3_stmt *st, int col, char *out, size_t cap, const char *what);
int kms_sqlite_copy_id(sqlite3_stmt *st, int col, uint8_t *out);
int kms_sqlite_int_column(sqlite3_stmt *st, int col, sqlite3_int64 min, sqlite3_int64 max,
                          sqlite3_int64 *out, const char *what);

/* Authorization ops (store_sqlite_authz.c), see store.h. */
int kms_sqlite_policy_set(kms_store *store, const uint8_t key_id[KMS_KEY_ID_LEN],
                          const kms_grant_rec *grants, size_t n);
int kms_sqlite_policy_list(kms_store *store, const uint8_t key_id[KMS_KEY_ID_LEN],
                           kms_store_grant_cb cb, void *ctx);
int kms_sqlite_officer_add(kms_store *store, const kms_officer_rec *o);
int kms_sqlite_officer_remove(kms_store *store, const char *officer_id);
int kms_sqlite_officer_list(kms_store *store, kms_store_officer_cb cb, void *ctx);
int kms_sqlite_threshold_set(kms_store *store, const char *action_type, uint32_t threshold);
int kms_sqlite_threshold_get(kms_store *store, const char *action_type, uint32_t *threshold);
int kms_sqlite_threshold_list(kms_store *store, kms_store_threshold_cb cb, void *ctx);

/* Quorum and lifecycle ops (store_sqlite_quorum.c), see store.h. */
int kms_sqlite_instance_id(kms_store *store, uint8_t out[KMS_INSTANCE_ID_LEN]);
int kms_sqlite_key_set_min_decrypt(kms_store *store, const uint8_t id[KMS_KEY_ID_LEN],
                                   uint32_t version);
int kms_sqlite_key_set_rotation(kms_store *store, const uint8_t id[KMS_KEY_ID_LEN], uint32_t days);
int kms_sqlite_key_set_deletion(kms_store *store, const uint8_t id[KMS_KEY_ID_LEN],
                                int64_t deletion_at);
int kms_sqlite_version_destroy(kms_store *store, const uint8_t key_id[KMS_KEY_ID_LEN],
                               uint32_t version);
int kms_sqlite_action_create(kms_store *store, const kms_action_rec *a);
/* The INSERT of action_create, for a caller holding the lock (inside its
 * own transaction or not). */
int kms_sqlite_action_insert(struct sqlite_store *s, const kms_action_rec *a);
int kms_sqlite_action_get(kms_store *store, const uint8_t id[KMS_ACTION_ID_LEN],
                          kms_action_rec *out);
int kms_sqlite_action_ids(kms_store *store, int pending_only, uint8_t (*ids)[KMS_ACTION_ID_LEN],
                          size_t cap, size_t *n);
int kms_sqlite_action_approve(kms_store *store, const uint8_t id[KMS_ACTION_ID_LEN],
                              const char *officer_id, const uint8_t *sig, size_t sig_len,
                              int64_t now, int *reached);
int kms_sqlite_action_set_plan(kms_store *store, const uint8_t id[KMS_ACTION_ID_LEN],
                               const uint8_t *plan, size_t len);
int kms_sqlite_action_finish(kms_store *store, const uint8_t id[KMS_ACTION_ID_LEN],
                             kms_action_state state, const char *result);
int kms_sqlite_action_cancel(kms_store *store, const uint8_t id[KMS_ACTION_ID_LEN]);
int kms_sqlite_action_expire(kms_store *store, int64_t now, size_t *n);
int kms_sqlite_action_count_pending(kms_store *store, const char *proposer, int64_t now,
                                    uint32_t *n);

#endif
