/* kmsd's audit signing key: the ECDSA P-256 key pair on the first backend
 * that can hold one (KMS_BACKEND_CAP_AUDIT_SIGN; the PKCS#11 token), which
 * signs the audit log's checkpoints (audit_checkpoint.h).
 *
 * `kmsd init` creates it and writes its public key (PEM) to
 * audit.pubkey_file; `kmsd audit-key` does the same for a database made
 * before checkpoints were signed. At start, a kmsd with an audit log loads
 * it and refuses to start if the backend has none (never silently
 * unsigned); only with no backend able to sign (TPM only) does it run with
 * unsigned checkpoints, and says so. */
#ifndef KMS_AUDIT_KEY_H
#define KMS_AUDIT_KEY_H

#include <stdint.h>

#include "kms/backend.h"
#include "kms/error.h"
#include "kmsd/audit/audit_checkpoint.h"
#include "kmsd/keyring/keyring.h"

typedef struct kms_audit_signer {
    kms_backend *b; /* owned by the keyring */
    uint8_t pub[KMS_AUDIT_PUB_LEN];
    char log_id[KMS_AUDIT_LOG_ID_HEX + 1];
} kms_audit_signer;

/* The kms_audit_sign_fn over a kms_audit_signer (ctx). */
int kms_audit_signer_sign(void *ctx, const uint8_t digest[KMS_AUDIT_DIGEST_LEN],
                          uint8_t sig[KMS_AUDIT_SIG_LEN]) KMS_MUST_CHECK;

/* Creates the audit key if the backend has none (an existing one is kept),
 * checks it signs under the public key it reports, and writes that public
 * key as PEM to pem_path (0644, replaced atomically). KMS_EPRECOND if no
 * backend can hold it (the caller warns); errors of the backend. Prints
 * where the key is and its log id. */
int kms_audit_key_setup(kms_keyring *kr, const char *pem_path) KMS_MUST_CHECK;

/* Loads the audit key at start: its public point, its log id, and a probe
 * signature checked under it. KMS_EPRECOND if no backend can hold it;
 * KMS_ENOTFOUND (detail naming `kmsd audit-key`) if the backend has none;
 * KMS_EKEYCHECK if it is unsafe or signs under another key. */
int kms_audit_key_load(kms_keyring *kr, kms_audit_signer *out) KMS_MUST_CHECK;

#endif
