/* The quorum action table: one row per kind of action an officer may
 * propose (the oneof of kms.v1.ActionBody), with its type name, how it is
 * checked, how its plan is recorded and how it is executed. Everything that
 * depends on the kind of action is a lookup here; a case with no row is
 * refused everywhere (fails closed).
 *
 * This is the layer below quorum.c: it knows nothing of proposals,
 * approvals or thresholds, and reaches the state only through the
 * kms_action_env it is given. Adding an action is one row here and one in
 * kmsctl's table (docs/officers.md, "Adding an action").
 *
 * Crash safety (the contract every row keeps): execution may stop at any
 * point and run again from the start. Every row records a plan in the
 * store before its first change; a run that finds one is a resumed run
 * (not validated again: it would be judged against its own change). A row
 * that changes a device or makes a change it cannot recognise afterwards
 * plans what "done" will look like and recognises work already done
 * instead of doing it twice; any other row records the one-byte "started"
 * plan and makes only changes that are idempotent as they stand (setting
 * a value). */
#ifndef KMS_QUORUM_ACTIONS_H
#define KMS_QUORUM_ACTIONS_H

#include <stddef.h>
#include <stdint.h>

#include "kmsd/keyring/keyring.h"
#include "kmsd/policy/policy.h"
#include "kmsd/store/store.h"
#include "kms/v1/kms.pb-c.h"

/* What an action may read and change. Borrowed: all outlive the call. */
typedef struct kms_action_env {
    kms_store *store;
    kms_keyring *kr;
    kms_policy *policy;
    int64_t now; /* unix seconds at the start of the call */
} kms_action_env;

/* One execution of one action. */
typedef struct kms_action_run {
    const uint8_t *plan; /* the recorded plan (plan_len 0: none) */
    size_t plan_len;
    int resumed;  /* the plan was recorded by an earlier, interrupted run */
    char *result; /* one line saying what was done, cap bytes with the NUL */
    size_t cap;
} kms_action_run;

/* One row. validate checks body against the current state and fills in
 * defaults in place (so that the canonical bytes say exactly what will
 * happen); it changes nothing else. plan (never NULL) writes
 * the plan, at most KMS_ACTION_PLAN_MAX bytes, from body and the current
 * state; it changes nothing. execute makes the change and writes the result
 * line. All return 0 or a negative KMS_E* code with a detail; the body they
 * get always has their own case set. */
typedef struct kms_quorum_action {
    Kms__V1__ActionBody__ActionCase action_case;
    const char *type; /* "RotateKey": the oneof member's message name, as thresholds name it */
    int (*validate)(const kms_action_env *env, Kms__V1__ActionBody *body) KMS_MUST_CHECK;
    int (*plan)(const kms_action_env *env, const Kms__V1__ActionBody *body, uint8_t *out,
                size_t *len) KMS_MUST_CHECK;
    int (*execute)(const kms_action_env *env, const Kms__V1__ActionBody *body,
                   const kms_action_run *run) KMS_MUST_CHECK;
} kms_quorum_action;

/* The rows, in oneof order. */
extern const kms_quorum_action kms_quorum_actions[];
extern const size_t kms_quorum_n_actions;

/* The row of body's case, or NULL (no row: unknown, or nothing set). */
const kms_quorum_action *kms_quorum_action_of(const Kms__V1__ActionBody *body);
/* The row whose type is type ("RotateKey"), or NULL. */
const kms_quorum_action *kms_quorum_action_by_type(const char *type);

/* Decodes an ActionBody (len bytes) into *out (free with
 * protobuf_c_message_free_unpacked(&(*out)->base, NULL)). KMS_EINVAL if
 * the bytes do not decode, carry fields this kmsd does not know (at any
 * depth: an officer's tool could not show them), or name no action with a
 * row. With canonical set, the bytes must also be exactly what encoding the
 * decoded body gives (stored actions, which kmsd encoded itself). */
int kms_quorum_action_decode(const uint8_t *bytes, size_t len, int canonical,
                             Kms__V1__ActionBody **out) KMS_MUST_CHECK;

/* The row's validate; KMS_EINVAL for a body without a row. */
int kms_quorum_action_validate(const kms_action_env *env, Kms__V1__ActionBody *body) KMS_MUST_CHECK;

/* Executes body as the action a (EXECUTING): records the row's plan in the
 * store first if a has none yet (and copies it into a), then runs the
 * row's execute. result receives the result line (cap bytes). KMS_EINVAL
 * for a body without a row, with nothing changed. */
int kms_quorum_action_execute(const kms_action_env *env, kms_action_rec *a,
                              const Kms__V1__ActionBody *body, char *result,
                              size_t cap) KMS_MUST_CHECK;

/* 1 if id is a valid officer id: 1..KMS_OFFICER_ID_MAX of [A-Za-z0-9._-],
 * not the reserved KMS_SYSTEM_PROPOSER. */
int kms_quorum_valid_officer_id(const char *id) KMS_MUST_CHECK;

/* Keyring backend name for (backend, mode): "pkcs11", "tpm2",
 * "tpm2-resident"; KMS_EINVAL for another pair. */
int kms_quorum_backend_name(const char *backend, const char *mode, char *out,
                            size_t cap) KMS_MUST_CHECK;

#endif
