/* Quorum: M-of-N approval of admin actions by security officers
 * (docs/approvals.md, docs/officers.md).
 *
 * An officer proposes an action; the server validates it against the
 * current state, fills in defaults, encodes it canonically, and fixes its
 * digest. Each officer approves by signing that digest with their enrolled
 * key. When the approvals of enrolled officers reach the action type's
 * threshold (always >= 2), the action executes once. Execution is
 * crash-safe: the approval that reaches the threshold moves the action to
 * EXECUTING in the same transaction; every executor step is idempotent
 * against a recorded plan, and kms_quorum_resume finishes any action a
 * crash left EXECUTING. Executions are serialized.
 *
 * Errors: KMS_EDENIED (caller is not an officer, or cancels another
 * officer's action), KMS_ENOTFOUND (no such action, key or officer),
 * KMS_EINVAL (malformed or invalid action), KMS_EAUTH (signature does not
 * verify under the sender's enrolled key), KMS_EEXISTS (this officer
 * approved already), KMS_EPRECOND (not pending, expired, wrong key state). */
#ifndef KMS_QUORUM_H
#define KMS_QUORUM_H

#include <stddef.h>
#include <stdint.h>

#include "base/clock.h"
#include "kmsd/keyring/keyring.h"
#include "kmsd/policy/policy.h"
#include "kmsd/store/store.h"

#define KMS_QUORUM_DEFAULT_TTL (24 * 3600)
/* Open (pending, unexpired) proposals one officer may have at a time. */
#define KMS_QUORUM_DEFAULT_MAX_PENDING 16

typedef struct kms_quorum kms_quorum;

/* A quorum or sweep event for the audit log (kmsd/audit/). The hook is
 * called before the change it describes is committed (proposal, approval,
 * cancel, automatic rotation, destruction) or, for an execution, after the
 * executor ran and before the action is marked EXECUTED/FAILED: if it
 * fails, the change is not made (an execution stays EXECUTING and is
 * retried), so every change has its record, even across a crash. Expiry
 * is recorded after the fact. */
typedef struct kms_quorum_event {
    const char *type;         /* "quorum.propose", "quorum.approve", "quorum.cancel",
                                 "quorum.execute", "quorum.expire", "key.rotate",
                                 "key.destroy" */
    const char *identity;     /* the officer's mTLS identity; "" for kmsd itself */
    const uint8_t *action_id; /* KMS_ACTION_ID_LEN bytes, NULL if none */
    const char *key_name;     /* "" if none */
    uint32_t version;         /* 0 if none */
    int error;                /* the outcome (executions), 0 otherwise */
    const char *detail;       /* "officer=... type=... digest=...", "" if none */
} kms_quorum_event;
typedef int (*kms_quorum_event_fn)(void *ctx, const kms_quorum_event *ev) KMS_MUST_CHECK;

typedef struct kms_quorum_config {
    int64_t action_ttl;   /* seconds an action stays open; 0: KMS_QUORUM_DEFAULT_TTL */
    uint32_t max_pending; /* per proposer; 0: KMS_QUORUM_DEFAULT_MAX_PENDING */
    kms_clock clock;
    kms_quorum_event_fn event; /* NULL: no audit log */
    void *event_ctx;
} kms_quorum_config;

/* Borrows store, keyring and policy (they must outlive it). */
int kms_quorum_open(kms_store *store, kms_keyring *kr, kms_policy *policy,
                    const kms_quorum_config *cfg, kms_quorum **out) KMS_MUST_CHECK;
void kms_quorum_close(kms_quorum *q);

int64_t kms_quorum_now(const kms_quorum *q);
/* This deployment's instance id (in every digest). */
const uint8_t *kms_quorum_instance_id(const kms_quorum *q);

/* body: packed kms.v1.ActionBody. *out (allocated by the caller) receives
 * the stored action. */
int kms_quorum_propose(kms_quorum *q, const char *identity, const uint8_t *body, size_t len,
                       kms_action_rec *out) KMS_MUST_CHECK;
/* Verifies sig under the sender's enrolled key, records the approval and,
 * at the threshold, executes. *out is the action afterwards. */
int kms_quorum_approve(kms_quorum *q, const char *identity, const uint8_t *id, size_t id_len,
                       const uint8_t *sig, size_t sig_len, kms_action_rec *out) KMS_MUST_CHECK;
/* Only the proposer cancels, and only while pending. */
int kms_quorum_cancel(kms_quorum *q, const char *identity, const uint8_t *id, size_t id_len,
                      kms_action_rec *out) KMS_MUST_CHECK;
int kms_quorum_get(kms_quorum *q, const uint8_t *id, size_t id_len,
                   kms_action_rec *out) KMS_MUST_CHECK;

/* Finishes every action a crash left EXECUTING. */
int kms_quorum_resume(kms_quorum *q) KMS_MUST_CHECK;
/* Background duties, called periodically: expire old actions, resume
 * stuck executions, destroy keys whose deletion time has come, rotate keys
 * whose rotation period has passed. */
int kms_quorum_sweep(kms_quorum *q) KMS_MUST_CHECK;

/* The digest of docs/approvals.md (kms_approval_digest, shared with
 * libkmsclient). KMS_EINTERNAL if SHA-256 fails; out is set only on success. */
int kms_quorum_digest(const uint8_t instance_id[KMS_INSTANCE_ID_LEN],
                      const uint8_t id[KMS_ACTION_ID_LEN], const uint8_t *bytes, size_t len,
                      int64_t expires_at, uint8_t out[32]) KMS_MUST_CHECK;

#endif
