/* Internals shared by quorum.c (proposals, approvals), quorum_validate.c
 * (checking and canonicalizing actions) and quorum_exec.c (executing,
 * resuming, sweeping). Not a public header. */
#ifndef KMS_QUORUM_INTERNAL_H
#define KMS_QUORUM_INTERNAL_H

#include <pthread.h>

#include "kmsd/quorum/quorum.h"
#include "kms/v1/kms.pb-c.h"

struct kms_quorum {
    kms_store *store;
    kms_keyring *kr;
    kms_policy *policy;
    kms_quorum_config cfg;
    uint8_t instance_id[KMS_INSTANCE_ID_LEN];
    pthread_mutex_t exec_mu;    /* one execution at a time */
    pthread_mutex_t propose_mu; /* counts and creates a proposal as one step */
};

/* The oneof's type name ("RotateKey"), or NULL for an empty/unknown case. */
const char *kms_quorum_type_name(const Kms__V1__ActionBody *body);

/* Checks body against the current state and fills in defaults, in place
 * (KMS_EINVAL / KMS_ENOTFOUND / KMS_EEXISTS / KMS_EPRECOND with a detail).
 * Called at proposal and again just before execution. */
int kms_quorum_validate(kms_quorum *q, Kms__V1__ActionBody *body) KMS_MUST_CHECK;

/* Keyring backend name for (backend, mode): "pkcs11", "tpm2", "tpm2-resident". */
int kms_quorum_backend_name(const char *backend, const char *mode, char *out, size_t cap);

/* Runs an EXECUTING action to EXECUTED or FAILED; exec_mu must be held.
 * Returns non-zero only for a transient failure that leaves it EXECUTING. */
int kms_quorum_execute(kms_quorum *q, kms_action_rec *a);
/* Takes exec_mu, reads the action afresh into *a and executes it if it is
 * still EXECUTING. */
int kms_quorum_execute_id(kms_quorum *q, const uint8_t id[KMS_ACTION_ID_LEN], kms_action_rec *a);

#endif
