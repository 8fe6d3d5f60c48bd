/* The TPM 2.0 backend (docs/tpm2.md): master key versions bound
 * to a TPM through tpm2-tss ESAPI.
 *
 *   sealed   (default) each version is a sealed data object under a
 *            persistent storage primary, optionally bound to PCRs; kmsd
 *            unseals it once into locked memory and wraps with AES-256-GCM
 *            in software. At rest the key is useless without this TPM.
 *   resident each version is an HMAC key that never leaves the TPM; every
 *            wrap/unwrap derives a one-time AES-256 key with TPM2_HMAC over
 *            the blob's random IV. One TPM command per operation: slow on
 *            real chips.
 *
 * Both are modes of one backend, "tpm2" (kms_backend_ops.modes: "sealed",
 * the default, and "resident"). kms_tpm2_open makes one instance per mode
 * over one connection (b->mode says which). Exactly one process may own the TPM (transient
 * objects are flushed at open): opening (and provisioning) takes a lock
 * per TCTI string, and a second opening fails with KMS_EPRECOND. */
#ifndef KMS_TPM2_H
#define KMS_TPM2_H

#include <stddef.h>
#include <stdint.h>

#include "kms/backend.h"

#define KMS_TPM2_DEFAULT_PRIMARY 0x81000101u
#define KMS_TPM2_DEFAULT_LOCK_DIR "/run/kms"

typedef enum kms_tpm2_mode { KMS_TPM2_SEALED = 0, KMS_TPM2_RESIDENT = 1 } kms_tpm2_mode;

typedef struct kms_tpm2_config {
    const char *tcti;        /* "device:/dev/tpmrm0", "swtpm:host=127.0.0.1,port=2321" */
    uint32_t primary_handle; /* persistent storage primary; 0: KMS_TPM2_DEFAULT_PRIMARY */
    uint32_t pcr_mask; /* sealed keys: SHA-256 PCRs (bit n = PCR n, 0..23) they are bound to */
    /* Where the one-process-per-TPM lock lives; NULL or "":
     * KMS_TPM2_DEFAULT_LOCK_DIR. It must be a directory of kmsd's user with
     * mode 0700 (created so if absent), else opening fails with KMS_EPRECOND. */
    const char *lock_dir;
    /* Where the storage primary's name (hex, one line) is recorded:
     * kms_tpm2_provision writes it (or checks it if present), and every open,
     * reconnect and restart compares the object at primary_handle with it
     * and refuses a different one (KMS_EPRECOND). NULL: no record (test
     * harnesses only; kmsd always sets it). */
    const char *primary_name_file;
    /* A 32-byte secret file (0600, kmsd's) from which every new object's
     * authValue is derived (per key version), so the blobs in the database
     * are useless to someone who can also talk to this TPM but lacks this
     * file. kms_tpm2_provision creates it if absent; open requires it
     * (KMS_EPRECOND). NULL: new objects get an empty authValue (test
     * harnesses only; kmsd always sets it). Objects made with an empty
     * authValue (older references) stay readable either way. */
    const char *auth_key_file;
} kms_tpm2_config;

/* Connects, starts the TPM if needed, flushes leftover transient objects
 * and finds the primary (KMS_EPRECOND if it was never provisioned). Makes
 * the sealed instance and (if resident is not NULL) the resident one; close
 * each with its ops->close (the connection goes with the last). */
int kms_tpm2_open(const kms_tpm2_config *cfg, kms_backend **sealed,
                  kms_backend **resident) KMS_MUST_CHECK;

/* Creates the persistent storage primary if absent (kmsd init). Idempotent. */
int kms_tpm2_provision(const kms_tpm2_config *cfg) KMS_MUST_CHECK;

/* Parses "16,23" (or "") into a PCR mask. KMS_EINVAL for anything else. */
int kms_tpm2_parse_pcrs(const char *list, uint32_t *mask) KMS_MUST_CHECK;

#endif
