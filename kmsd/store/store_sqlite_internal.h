/* What the lower files of the SQLite store give the top, store_sqlite.c,
 * which opens the store and builds the ops table: store_sqlite_schema.c
 * (migrations, connection set-up), store_sqlite_authz.c (policies,
 * officers, thresholds) and store_sqlite_quorum.c (instance id, key
 * lifecycle settings, quorum actions and approvals). Each lower file
 * includes it for its own prototypes and calls only store_sqlite_query.c
 * (the calls go one way: top -> lower -> query). Not a public header. */
#ifndef KMS_STORE_SQLITE_INTERNAL_H
#define KMS_STORE_SQLITE_INTERNAL_H

#include <sqlite3.h>

#include "kmsd/store/store.h"
#include "kmsd/store/store_sqlite_query.h"

/* Opening (store_sqlite_schema.c): creates the file 0600 if absent; sets
 * the connection's pragmas and checks each took; runs the migrations up to
 * kms_store_sqlite_schema_version(). */
int kms_sqlite_create_private(const char *path) KMS_MUST_CHECK;
int kms_sqlite_configure(sqlite3 *db) KMS_MUST_CHECK;
int kms_sqlite_migrate(sqlite3 *db) KMS_MUST_CHECK;

/* Authorization ops (store_sqlite_authz.c), see store.h. */
int kms_sqlite_policy_set(kms_store *store, const uint8_t key_id[KMS_KEY_ID_LEN],
                          const kms_grant_rec *grants, size_t n) KMS_MUST_CHECK;
int kms_sqlite_policy_list(kms_store *store, const uint8_t key_id[KMS_KEY_ID_LEN],
                           kms_store_grant_cb cb, void *ctx) KMS_MUST_CHECK;
int kms_sqlite_officer_add(kms_store *store, const kms_officer_rec *o) KMS_MUST_CHECK;
int kms_sqlite_officer_remove(kms_store *store, const char *officer_id) KMS_MUST_CHECK;
int kms_sqlite_officer_list(kms_store *store, kms_store_officer_cb cb, void *ctx) KMS_MUST_CHECK;
int kms_sqlite_threshold_set(kms_store *store, const char *action_type,
                             uint32_t threshold) KMS_MUST_CHECK;
int kms_sqlite_threshold_get(kms_store *store, const char *action_type,
                             uint32_t *threshold) KMS_MUST_CHECK;
int kms_sqlite_threshold_list(kms_store *store, kms_store_threshold_cb cb,
                              void *ctx) KMS_MUST_CHECK;

/* Auditor ops (store_sqlite_auditors.c), see store.h. */
int kms_sqlite_auditor_add(kms_store *store, const kms_auditor_rec *a) KMS_MUST_CHECK;
int kms_sqlite_auditor_remove(kms_store *store, const char *identity) KMS_MUST_CHECK;
int kms_sqlite_auditor_list(kms_store *store, kms_store_auditor_cb cb, void *ctx) KMS_MUST_CHECK;

/* Quorum and lifecycle ops (store_sqlite_quorum.c), see store.h. */
int kms_sqlite_instance_id(kms_store *store, uint8_t out[KMS_INSTANCE_ID_LEN]) KMS_MUST_CHECK;
int kms_sqlite_key_set_min_decrypt(kms_store *store, const uint8_t id[KMS_KEY_ID_LEN],
                                   uint32_t version) KMS_MUST_CHECK;
int kms_sqlite_key_set_rotation(kms_store *store, const uint8_t id[KMS_KEY_ID_LEN],
                                uint32_t days) KMS_MUST_CHECK;
int kms_sqlite_key_set_deletion(kms_store *store, const uint8_t id[KMS_KEY_ID_LEN],
                                int64_t deletion_at) KMS_MUST_CHECK;
int kms_sqlite_version_destroy(kms_store *store, const uint8_t key_id[KMS_KEY_ID_LEN],
                               uint32_t version) KMS_MUST_CHECK;
int kms_sqlite_action_create(kms_store *store, const kms_action_rec *a) KMS_MUST_CHECK;
/* The INSERT of action_create, for a caller holding the lock (inside its
 * own transaction or not). */
int kms_sqlite_action_insert(struct sqlite_store *s, const kms_action_rec *a) KMS_MUST_CHECK;
int kms_sqlite_action_get(kms_store *store, const uint8_t id[KMS_ACTION_ID_LEN],
                          kms_action_rec *out) KMS_MUST_CHECK;
int kms_sqlite_action_ids(kms_store *store, int pending_only, uint8_t (*ids)[KMS_ACTION_ID_LEN],
                          size_t cap, size_t *n) KMS_MUST_CHECK;
int kms_sqlite_action_approve(kms_store *store, const uint8_t id[KMS_ACTION_ID_LEN],
                              const char *officer_id, const uint8_t *sig, size_t sig_len,
                              int64_t now, int *reached) KMS_MUST_CHECK;
int kms_sqlite_action_set_plan(kms_store *store, const uint8_t id[KMS_ACTION_ID_LEN],
                               const uint8_t *plan, size_t len) KMS_MUST_CHECK;
int kms_sqlite_action_finish(kms_store *store, const uint8_t id[KMS_ACTION_ID_LEN],
                             kms_action_state state, const char *result) KMS_MUST_CHECK;
int kms_sqlite_action_cancel(kms_store *store, const uint8_t id[KMS_ACTION_ID_LEN]) KMS_MUST_CHECK;
int kms_sqlite_action_expire(kms_store *store, int64_t now, size_t *n) KMS_MUST_CHECK;
int kms_sqlite_action_count_pending(kms_store *store, const char *proposer, int64_t now,
                                    uint32_t *n) KMS_MUST_CHECK;

/* State integrity (store_sqlite_mac.c), see store.h. */
int kms_sqlite_state_attach(kms_store *store, kms_store_mac_fn mac, void *ctx,
                            void (*ctx_free)(void *ctx)) KMS_MUST_CHECK;
int kms_sqlite_state_sealed(kms_store *store, int *sealed) KMS_MUST_CHECK;
int kms_sqlite_state_seal_all(kms_store *store) KMS_MUST_CHECK;
int kms_sqlite_state_verify(kms_store *store, kms_store_state_failure_cb cb, void *ctx,
                            size_t *failures, uint64_t *generation) KMS_MUST_CHECK;
int kms_sqlite_state_verify_key(kms_store *store, const uint8_t id[KMS_KEY_ID_LEN]) KMS_MUST_CHECK;

#endif
