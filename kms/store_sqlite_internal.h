/* Internals shared by the SQLite store's files: store_sqlite.c (open,
 * migrations, keys, versions, policies, officers, thresholds) and
 * store_sqlite_quorum.c (instance id, key lifecycle settings, quorum
 * actions and approvals). Not a public header. */
#ifndef KMS_STORE_SQLITE_INTERNAL_H
#define KMS_STORE_SQLITE_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>

#include "kms/store.h"

#define KMS_SQLITE_STMTS_MAX 64

struct sqlite_store {
    kms_store base; /* first: a kms_store * is a struct sqlite_store * */
    sqlite3 *db;
    pthread_mutex_t mu;
    int mu_ready;
    sqlite3_stmt *st[KMS_SQLITE_STMTS_MAX]; /* store_sqlite.c's prepared statements */
};

/* The one connection's mutex; aborts if it cannot be taken or released. */
void kms_sqlite_lock(struct sqlite_store *s);
void kms_sqlite_unlock(struct sqlite_store *s);

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

/* Quorum and lifecycle ops (store_sqlite_quorum.c), see store.h. */
int kms_sqlite_instance_id(kms_store *store, uint8_t out[KMS_INSTANCE_ID_LEN]);
int kms_sqlite_key_set_min_decrypt(kms_store *store, const uint8_t id[KMS_KEY_ID_LEN],
                                   uint32_t version);
int kms_sqlite_key_set_rotation(kms_store *store, const uint8_t id[KMS_KEY_ID_LEN], uint32_t days);
int kms_sqlite_key_set_deletion(kms_store *store, const uint8_t id[KMS_KEY_ID_LEN],
                                int64_t deletion_at);
int kms_sqlite_action_create(kms_store *store, const kms_action_rec *a);
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

#endif
