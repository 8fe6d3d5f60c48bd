/* The metadata store: keys, their versions and counters.
 *
 * Behind an ops struct so PostgreSQL can join SQLite later. The store keeps
 * only metadata and backend references, never key material. Every write is
 * durable when the call returns (SQLite: WAL + synchronous=FULL). All ops
 * are safe to call from several threads. */
#ifndef KMS_STORE_H
#define KMS_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "kms/backend.h"
#include "kms/error.h"

#define KMS_KEY_NAME_MAX 128

typedef enum kms_version_state {
    KMS_VERSION_ENABLED = 1,
    KMS_VERSION_DISABLED = 2,
    KMS_VERSION_PENDING_DELETION = 3,
    KMS_VERSION_DESTROYED = 4
} kms_version_state;

typedef struct kms_key_rec {
    uint8_t id[KMS_KEY_ID_LEN];
    char name[KMS_KEY_NAME_MAX + 1];
    char backend[16];         /* backend name that holds its versions ("pkcs11") */
    uint32_t primary_version; /* 0 before the first version exists */
    uint32_t min_decrypt_version;
    int64_t created_at;            /* unix seconds */
    uint32_t rotation_period_days; /* 0: no periodic rotation (schema 3) */
    int64_t deletion_at;           /* 0, or when the key's versions are destroyed (schema 3) */
} kms_key_rec;

typedef struct kms_version_rec {
    uint8_t key_id[KMS_KEY_ID_LEN];
    uint32_t version;
    kms_version_state state;
    int64_t created_at;
    uint64_t usage_count; /* IVs reserved so far; never decreases */
    kms_backend_ref ref;
} kms_version_rec;

/* Authorization records (schema 2). Identities are mTLS identities: the
 * client certificate's SAN URI, else its CN. */
#define KMS_IDENTITY_MAX 1024        /* bytes */
#define KMS_OFFICER_ID_MAX 64        /* bytes */
#define KMS_ACTION_TYPE_MAX 64       /* bytes of a quorum action type name */
#define KMS_SIGNING_KEY_PEM_MAX 1024 /* bytes of a PEM public key */
#define KMS_THRESHOLD_MIN 2          /* no officer ever acts alone */

/* What a key policy grants to an identity. */
typedef enum kms_key_action {
    KMS_ACTION_ENCRYPT = 1,  /* GenerateDataKey, Encrypt */
    KMS_ACTION_DECRYPT = 2,  /* Decrypt */
    KMS_ACTION_REENCRYPT = 3 /* ReEncrypt (docs/api.md) */
} kms_key_action;

/* One grant of a key policy. identity: 1..KMS_IDENTITY_MAX bytes. */
typedef struct kms_grant_rec {
    kms_key_action action;
    const char *identity;
} kms_grant_rec;

/* A security officer (quorum member). */
typedef struct kms_officer_rec {
    char id[KMS_OFFICER_ID_MAX + 1];
    char identity[KMS_IDENTITY_MAX + 1];
    char signing_key_pem[KMS_SIGNING_KEY_PEM_MAX + 1]; /* public key, PEM */
    int64_t created_at;
} kms_officer_rec;

/* An auditor (schema 5): may read the audit log and nothing else. */
typedef struct kms_auditor_rec {
    char identity[KMS_IDENTITY_MAX + 1];
    int64_t created_at;
} kms_auditor_rec;

/* Quorum actions (schema 3, docs/approvals.md). */
#define KMS_INSTANCE_ID_LEN 16
#define KMS_ACTION_ID_LEN 16
#define KMS_ACTION_BYTES_MAX 16384 /* canonical ActionBody bytes */
#define KMS_ACTION_RESULT_MAX 256
#define KMS_ACTION_PLAN_MAX 64
#define KMS_APPROVALS_MAX 64 /* == KMS_CONFIG_MAX_OFFICERS */
#define KMS_SIGNATURE_MAX 256
/* Proposer of the changes kmsd makes by itself (automatic rotations). */
#define KMS_SYSTEM_PROPOSER "kmsd"

typedef enum kms_action_state {
    KMS_ACTION_PENDING = 1,
    KMS_ACTION_EXECUTED = 2,
    KMS_ACTION_CANCELLED = 3,
    KMS_ACTION_EXPIRED = 4,
    KMS_ACTION_FAILED = 5,
    /* The threshold was met and execution started; a crash leaves it here
     * and kmsd resumes it at start (kmsd/quorum/). Shown as PENDING. */
    KMS_ACTION_EXECUTING = 6
} kms_action_state;

typedef struct kms_approval_rec {
    char officer_id[KMS_OFFICER_ID_MAX + 1];
    int64_t approved_at;
    /* The signature as stored: kmsd verifies it again before executing. */
    uint8_t signature[KMS_SIGNATURE_MAX];
    size_t signature_len;
} kms_approval_rec;

/* One action with its approvals (about 20 KiB: allocate it). */
typedef struct kms_action_rec {
    uint8_t id[KMS_ACTION_ID_LEN];
    char type[KMS_ACTION_TYPE_MAX + 1];  /* "RotateKey" */
    uint8_t bytes[KMS_ACTION_BYTES_MAX]; /* canonical ActionBody */
    size_t bytes_len;
    uint8_t digest[32];
    char proposer[KMS_OFFICER_ID_MAX + 1];
    kms_action_state state;
    uint32_t threshold;
    int64_t created_at, expires_at;
    char result[KMS_ACTION_RESULT_MAX + 1];
    uint8_t plan[KMS_ACTION_PLAN_MAX]; /* executor's plan, set when execution starts */
    size_t plan_len;
    kms_approval_rec approvals[KMS_APPROVALS_MAX]; /* of officers still enrolled, by time */
    size_t n_approvals;
} kms_action_rec;

typedef struct kms_store kms_store;

/* The state-integrity MAC (HMAC-SHA-256 under a key the backend holds) of
 * in[0..len) into out; 0 or a negative KMS_E*. */
typedef int (*kms_store_mac_fn)(void *ctx, const uint8_t *in, size_t len,
                                uint8_t out[KMS_STATE_MAC_LEN]) KMS_MUST_CHECK;
/* One failed check of state_verify: the table, the row (its primary key,
 * printable) and the check. A non-zero return stops the walk. */
typedef int (*kms_store_state_failure_cb)(void *ctx, const char *table, const char *row,
                                          const char *check) KMS_MUST_CHECK;

typedef int (*kms_store_key_cb)(void *ctx, const kms_key_rec *k) KMS_MUST_CHECK;
typedef int (*kms_store_version_cb)(void *ctx, const kms_version_rec *v) KMS_MUST_CHECK;
typedef int (*kms_store_grant_cb)(void *ctx, const kms_grant_rec *g) KMS_MUST_CHECK;
typedef int (*kms_store_officer_cb)(void *ctx, const kms_officer_rec *o) KMS_MUST_CHECK;
typedef int (*kms_store_auditor_cb)(void *ctx, const kms_auditor_rec *a) KMS_MUST_CHECK;
typedef int (*kms_store_threshold_cb)(void *ctx, const char *action_type,
                                      uint32_t threshold) KMS_MUST_CHECK;

/* Every op returning int carries KMS_MUST_CHECK on its member: gcc and
 * clang both warn when a call through the member ignores the result
 * (test_must_check_store_ops proves it on each build). The callback
 * typedefs carry it too, though clang 14 ignores it on a typedef'd
 * function pointer and only gcc checks those calls. */
typedef struct kms_store_ops {
    const char *name; /* "sqlite" */

    /* KMS_EEXISTS if the name or id is taken. */
    int (*key_create)(kms_store *s, const kms_key_rec *k) KMS_MUST_CHECK;
    /* KMS_ENOTFOUND if absent. */
    int (*key_get_by_name)(kms_store *s, const char *name, kms_key_rec *out) KMS_MUST_CHECK;
    int (*key_get_by_id)(kms_store *s, const uint8_t id[KMS_KEY_ID_LEN],
                         kms_key_rec *out) KMS_MUST_CHECK;
    /* Calls cb for every key in name order; a non-zero return from cb stops
     * the walk and is returned. */
    int (*key_list)(kms_store *s, kms_store_key_cb cb, void *ctx) KMS_MUST_CHECK;

    /* Adds a version; if make_primary, sets it as the key's primary version
     * in the same transaction. KMS_EEXISTS if (key, version) exists,
     * KMS_ENOTFOUND if the key does not. */
    int (*version_add)(kms_store *s, const kms_version_rec *v, int make_primary) KMS_MUST_CHECK;
    /* An automatic rotation: adds v as the key's primary version and
     * records it (an action as for action_create, EXECUTED by
     * KMS_SYSTEM_PROPOSER) in one transaction, so no rotation is ever
     * unrecorded and no record names a rotation that did not happen. */
    int (*version_add_recorded)(kms_store *s, const kms_version_rec *v,
                                const kms_action_rec *record) KMS_MUST_CHECK;
    int (*version_get)(kms_store *s, const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t version,
                       kms_version_rec *out) KMS_MUST_CHECK;
    /* Runs fn(ctx) under the store's write lock (a write transaction that
     * no other writer, in this process or another, can interleave) only if
     * version (key_id, version) is not recorded; KMS_EEXISTS, without
     * running fn, if it is. For device objects the store has no committed
     * row for: destroying one then cannot race the commit of the row that
     * would make it live. fn must not call the store; its result is
     * returned, and nothing is written either way. */
    int (*version_unrecorded_do)(kms_store *s, const uint8_t key_id[KMS_KEY_ID_LEN],
                                 uint32_t version, int (*fn)(void *ctx), void *ctx) KMS_MUST_CHECK;
    /* In version order. */
    int (*version_list)(kms_store *s, const uint8_t key_id[KMS_KEY_ID_LEN], kms_store_version_cb cb,
                        void *ctx) KMS_MUST_CHECK;
    int (*version_set_state)(kms_store *s, const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t version,
                             kms_version_state state) KMS_MUST_CHECK;

    /* Atomically adds n to the version's usage count if the result stays
     * <= limit, and returns the new count in *total. KMS_EEXHAUSTED (and no
     * change) if it would exceed limit. */
    int (*usage_reserve)(kms_store *s, const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t version,
                         uint64_t n, uint64_t limit, uint64_t *total) KMS_MUST_CHECK;

    /* ---- authorization (schema 2) ---- */

    /* Replaces the key's whole policy with grants[0..n) in one transaction
     * (n == 0 clears it). KMS_ENOTFOUND if the key does not exist,
     * KMS_EINVAL for an unknown action, an empty or over-long identity or a
     * grant listed twice; nothing changes on failure. */
    int (*policy_set)(kms_store *s, const uint8_t key_id[KMS_KEY_ID_LEN],
                      const kms_grant_rec *grants, size_t n) KMS_MUST_CHECK;
    /* Calls cb for every grant of the key, by action then identity. An
     * unknown key has no grants: cb is not called and 0 is returned. The
     * record passed to cb is valid during the call only. */
    int (*policy_list)(kms_store *s, const uint8_t key_id[KMS_KEY_ID_LEN], kms_store_grant_cb cb,
                       void *ctx) KMS_MUST_CHECK;

    /* KMS_EEXISTS if the id or the identity is already an officer's;
     * KMS_EINVAL for empty or unterminated fields. */
    int (*officer_add)(kms_store *s, const kms_officer_rec *o) KMS_MUST_CHECK;
    /* KMS_ENOTFOUND if there is no such officer. */
    int (*officer_remove)(kms_store *s, const char *officer_id) KMS_MUST_CHECK;
    /* In id order. */
    int (*officer_list)(kms_store *s, kms_store_officer_cb cb, void *ctx) KMS_MUST_CHECK;

    /* ---- auditors (schema 5) ---- */

    /* KMS_EEXISTS if the identity is an auditor already; KMS_EINVAL for an
     * empty or unterminated identity. */
    int (*auditor_add)(kms_store *s, const kms_auditor_rec *a) KMS_MUST_CHECK;
    /* KMS_ENOTFOUND if there is no such auditor. */
    int (*auditor_remove)(kms_store *s, const char *identity) KMS_MUST_CHECK;
    /* In identity order. */
    int (*auditor_list)(kms_store *s, kms_store_auditor_cb cb, void *ctx) KMS_MUST_CHECK;

    /* Sets (inserts or replaces) the approval threshold of an action type.
     * KMS_EINVAL if threshold < KMS_THRESHOLD_MIN or the name is empty or
     * longer than KMS_ACTION_TYPE_MAX. */
    int (*threshold_set)(kms_store *s, const char *action_type, uint32_t threshold) KMS_MUST_CHECK;
    /* KMS_ENOTFOUND if the action type has no threshold. */
    int (*threshold_get)(kms_store *s, const char *action_type, uint32_t *threshold) KMS_MUST_CHECK;
    /* In action type order. */
    int (*threshold_list)(kms_store *s, kms_store_threshold_cb cb, void *ctx) KMS_MUST_CHECK;

    /* ---- key lifecycle and quorum (schema 3) ---- */

    /* This deployment's random id (made with the schema; never changes). */
    int (*instance_id)(kms_store *s, uint8_t out[KMS_INSTANCE_ID_LEN]) KMS_MUST_CHECK;
    /* KMS_ENOTFOUND if the key does not exist. deletion_at 0 cancels. */
    int (*key_set_min_decrypt)(kms_store *s, const uint8_t id[KMS_KEY_ID_LEN],
                               uint32_t version) KMS_MUST_CHECK;
    int (*key_set_rotation)(kms_store *s, const uint8_t id[KMS_KEY_ID_LEN],
                            uint32_t days) KMS_MUST_CHECK;
    int (*key_set_deletion)(kms_store *s, const uint8_t id[KMS_KEY_ID_LEN],
                            int64_t deletion_at) KMS_MUST_CHECK;

    /* Marks a version DESTROYED and overwrites its backend reference with a
     * one-byte tombstone in the same statement: for a TPM the reference is
     * the (TPM-wrapped) key itself, so this is the crypto-shredding. */
    int (*version_destroy)(kms_store *s, const uint8_t key_id[KMS_KEY_ID_LEN],
                           uint32_t version) KMS_MUST_CHECK;

    /* A new PENDING action without approvals (threshold >= 2), or a record
     * of an automatic change: EXECUTED, threshold 0, proposer
     * KMS_SYSTEM_PROPOSER. KMS_EEXISTS if the id is taken. */
    int (*action_create)(kms_store *s, const kms_action_rec *a) KMS_MUST_CHECK;
    /* KMS_ENOTFOUND if absent. Approvals listed are those of officers still
     * enrolled. */
    int (*action_get)(kms_store *s, const uint8_t id[KMS_ACTION_ID_LEN],
                      kms_action_rec *out) KMS_MUST_CHECK;
    /* Up to cap action ids, newest first (pending_only: PENDING and
     * EXECUTING only); *n gets how many were written. */
    int (*action_ids)(kms_store *s, int pending_only, uint8_t (*ids)[KMS_ACTION_ID_LEN], size_t cap,
                      size_t *n) KMS_MUST_CHECK;
    /* Records officer_id's approval, in one transaction: KMS_ENOTFOUND (no
     * action), KMS_EPRECOND (not PENDING, or expired at now: it is then
     * marked EXPIRED), KMS_EEXISTS (this officer approved already). When
     * the approvals of enrolled officers reach the threshold the action
     * becomes EXECUTING and *reached is 1. */
    int (*action_approve)(kms_store *s, const uint8_t id[KMS_ACTION_ID_LEN], const char *officer_id,
                          const uint8_t *sig, size_t sig_len, int64_t now,
                          int *reached) KMS_MUST_CHECK;
    /* EXECUTING only (KMS_EPRECOND otherwise). */
    int (*action_set_plan)(kms_store *s, const uint8_t id[KMS_ACTION_ID_LEN], const uint8_t *plan,
                           size_t len) KMS_MUST_CHECK;
    /* EXECUTING -> EXECUTED or FAILED with a result text. */
    int (*action_finish)(kms_store *s, const uint8_t id[KMS_ACTION_ID_LEN], kms_action_state state,
                         const char *result) KMS_MUST_CHECK;
    /* PENDING -> CANCELLED (KMS_EPRECOND otherwise). */
    int (*action_cancel)(kms_store *s, const uint8_t id[KMS_ACTION_ID_LEN]) KMS_MUST_CHECK;
    /* Every PENDING action with expires_at <= now becomes EXPIRED. */
    int (*action_expire)(kms_store *s, int64_t now, size_t *n) KMS_MUST_CHECK;
    /* How many of proposer's (an officer id) actions are PENDING and not
     * expired at now. */
    int (*action_count_pending)(kms_store *s, const char *proposer, int64_t now,
                                uint32_t *n) KMS_MUST_CHECK;

    /* ---- state integrity (schema 4, docs/storage.md "State integrity") ---- */

    /* From now on every write MACs the rows it changes (canonical row
     * encoding) and the state digest, with the next generation, in its own
     * transaction. On success the store owns ctx and calls ctx_free(ctx)
     * (if not NULL) when it closes; on failure the caller keeps it. */
    int (*state_attach)(kms_store *s, kms_store_mac_fn mac, void *ctx,
                        void (*ctx_free)(void *ctx)) KMS_MUST_CHECK;
    /* *sealed: 1 if the state digest row exists (the state was sealed). */
    int (*state_sealed)(kms_store *s, int *sealed) KMS_MUST_CHECK;
    /* Trust on first use: MACs every row as it is now and writes the digest,
     * in one transaction. Attached first (KMS_EPRECOND otherwise). */
    int (*state_seal_all)(kms_store *s) KMS_MUST_CHECK;
    /* Checks every row MAC, the digest's own MAC and the digest against the
     * rows; cb gets each failure; *failures how many; *generation the state
     * generation (0 if there is no digest row). Attached first. */
    int (*state_verify)(kms_store *s, kms_store_state_failure_cb cb, void *ctx, size_t *failures,
                        uint64_t *generation) KMS_MUST_CHECK;
    /* Right before destroying anything of key id: its row, its versions'
     * rows and the digest verify now. KMS_EAUTH (detail naming table, row
     * and check) otherwise; 0 when not attached (unauthenticated state). */
    int (*state_verify_key)(kms_store *s, const uint8_t id[KMS_KEY_ID_LEN]) KMS_MUST_CHECK;

    /* Releases everything. NULL-safe. */
    void (*close)(kms_store *s);
} kms_store_ops;

struct kms_store {
    const kms_store_ops *ops;
    void *impl;
};

/* Opens (creating if needed) the SQLite store at path and migrates its
 * schema to the current version. KMS_ESTORE with a detail on failure, and
 * KMS_EUNSUPPORTED if the file's schema is newer than this build knows. */
int kms_store_sqlite_open(const char *path, kms_store **out) KMS_MUST_CHECK;

/* For kmsd's test builds only (KMS_TEST_NO_STATE_GUARD): turns off the
 * run-time state guard of every store (rows changed by another connection
 * are then used unverified until the next start). A test plays a hostile
 * server this way; a release kmsd never calls it. */
void kms_store_sqlite_test_unguard(void);

/* Schema version this build writes. */
int kms_store_sqlite_schema_version(void) KMS_MUST_CHECK;

#endif
