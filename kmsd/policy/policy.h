/* Authorization: per-key policies and the officer set.
 *
 * A key's policy lists, per data-plane action, the identities allowed to
 * perform it (docs/api.md). Officers get no data-plane rights, whatever a
 * policy says (separation of duties); `kmsd init` also refuses to write an
 * officer into a policy. Everything not granted is KMS_EDENIED.
 *
 * A kms_policy caches key policies and the officer set in memory. They
 * change only through `kmsd init` now, and through quorum actions later,
 * which call kms_policy_invalidate / kms_policy_reload_officers after their
 * store write. All functions are safe to call from several threads.
 * Identities are compared byte for byte. */
#ifndef KMS_POLICY_H
#define KMS_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "kms/error.h"
#include "kmsd/store/store.h"

/* Permissions an RPC may require (the table in kmsd/rpc_table.c). */
typedef enum kms_perm {
    KMS_PERM_PEER = 0,      /* any caller that completed the handshake (Health) */
    KMS_PERM_ENCRYPT = 1,   /* policy `encrypt` on the key (== KMS_ACTION_ENCRYPT) */
    KMS_PERM_DECRYPT = 2,   /* policy `decrypt` on the key */
    KMS_PERM_REENCRYPT = 3, /* policy `reencrypt` on the key */
    KMS_PERM_DESCRIBE = 4,  /* any grant on the key, or an officer */
    KMS_PERM_LIST = 5,      /* any identity; the answer is filtered per key */
    KMS_PERM_OFFICER = 6,   /* a registered officer (Quorum) */
    KMS_PERM_AUDITOR = 7    /* a registered auditor (Audit.ReadAuditLog) */
} kms_perm;

/* Name of a permission for logs ("encrypt"); "?" for unknown values. */
const char *kms_policy_perm_name(kms_perm p);

/* One key's policy: identities per action (index action - 1). */
typedef struct kms_key_policy {
    char **ids[3];
    size_t n[3];
} kms_key_policy;

/* 1 if identity holds action in kp, else 0. Officers are not special here;
 * kms_policy_check applies the officer rule. */
int kms_policy_allows(const kms_key_policy *kp, kms_key_action action,
                      const char *identity) KMS_MUST_CHECK;
/* 1 if identity holds any action in kp. */
int kms_policy_names(const kms_key_policy *kp, const char *identity) KMS_MUST_CHECK;
/* Reads a key's policy from the store into *out (lists the caller frees
 * with kms_policy_clear); *out is set only on success. */
int kms_policy_load(kms_store *store, const uint8_t key_id[KMS_KEY_ID_LEN],
                    kms_key_policy *out) KMS_MUST_CHECK;
/* Frees the lists; kp is left empty. NULL-safe. */
void kms_policy_clear(kms_key_policy *kp);

typedef struct kms_policy kms_policy;

/* Borrows store (it must outlive the policy) and loads the officer set. */
int kms_policy_open(kms_store *store, kms_policy **out) KMS_MUST_CHECK;
/* NULL-safe. */
void kms_policy_close(kms_policy *p);

/* 1 if identity is a registered officer's mTLS identity. */
int kms_policy_is_officer(kms_policy *p, const char *identity) KMS_MUST_CHECK;

/* Finds the key by name (or, if key_name is NULL, by key_id) and checks
 * that identity holds perm on it (KMS_PERM_ENCRYPT, _DECRYPT, _REENCRYPT or
 * _DESCRIBE). KMS_EDENIED if the identity is an officer (for data-plane
 * permissions) or is not granted, and also if there is no such key, so
 * that nobody probes key names; KMS_ENOTFOUND for no such key only to an
 * officer asking _DESCRIBE (officers may list every key anyway);
 * KMS_EINVAL for any other perm. On success rec (optional) receives the
 * key record as cached: name, id and backend are exact, version fields may
 * be stale (read the store for those). */
int kms_policy_check(kms_policy *p, const char *identity, const char *key_name,
                     const uint8_t *key_id, kms_perm perm, kms_key_rec *rec) KMS_MUST_CHECK;

/* A copy of a key's policy (cached; loaded on first use). KMS_ENOTFOUND if
 * the key does not exist. */
int kms_policy_get(kms_policy *p, const uint8_t key_id[KMS_KEY_ID_LEN],
                   kms_key_policy *out) KMS_MUST_CHECK;

/* Forgets a key's cached policy (after it changed in the store). */
void kms_policy_invalidate(kms_policy *p, const uint8_t key_id[KMS_KEY_ID_LEN]);
/* Reloads the officer set from the store; on failure the old set stays. */
int kms_policy_reload_officers(kms_policy *p) KMS_MUST_CHECK;

/* 1 if identity is a registered auditor (schema 5). An auditor may read
 * the audit log and nothing else: the RPC wrapper refuses it every other
 * method, whatever a key policy or the officer set says. */
int kms_policy_is_auditor(kms_policy *p, const char *identity) KMS_MUST_CHECK;
/* Reloads the auditor set from the store (kms_policy_open loads it too);
 * on failure the old set stays. */
int kms_policy_reload_auditors(kms_policy *p) KMS_MUST_CHECK;

#endif
