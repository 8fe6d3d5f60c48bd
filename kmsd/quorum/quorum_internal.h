/* Internals shared by quorum.c (proposals, approvals) and quorum_exec.c
 * (executing, resuming, sweeping). Both sit on quorum_actions.h; quorum.c
 * calls into quorum_exec.c, never the other way. Not a public header. */
#ifndef KMS_QUORUM_INTERNAL_H
#define KMS_QUORUM_INTERNAL_H

#include <pthread.h>

#include "kmsd/quorum/quorum.h"
#include "kmsd/quorum/quorum_actions.h"

struct kms_quorum {
    kms_store *store;
    kms_keyring *kr;
    kms_policy *policy;
    kms_quorum_config cfg;
    uint8_t instance_id[KMS_INSTANCE_ID_LEN];
    pthread_mutex_t exec_mu;    /* one execution at a time */
    pthread_mutex_t propose_mu; /* counts and creates a proposal as one step */
};

/* What the actions of the table see: q's store, keyring and policy, and
 * the time now. */
static inline kms_action_env kms_quorum_env(const kms_quorum *q)
{
    kms_action_env env = {q->store, q->kr, q->policy, kms_clock_now(&q->cfg.clock)};
    return env;
}

/* Hands ev to the audit hook, if any (kms_quorum_event). */
static inline int kms_quorum_record(const kms_quorum *q, const kms_quorum_event *ev)
{
    return q->cfg.event != NULL ? q->cfg.event(q->cfg.event_ctx, ev) : KMS_OK;
}

/* "officer=ID type=TYPE digest=HEX" (digest NULL: without it) into out. */
void kms_quorum_event_detail(char *out, size_t cap, const char *officer, const char *type,
                             const uint8_t *digest);

/* Takes exec_mu, reads the action afresh into *a and, if it is still
 * EXECUTING, runs it to EXECUTED or FAILED. Non-zero only for a store
 * failure or a transient failure that leaves it EXECUTING (retried by the
 * next sweep). */
int kms_quorum_execute_id(kms_quorum *q, const uint8_t id[KMS_ACTION_ID_LEN],
                          kms_action_rec *a) KMS_MUST_CHECK;

#endif
