/* The keyring: named master keys, their versions, and envelope wrap/unwrap.
 *
 * It ties the store (metadata, counters) to the backends (key material).
 * A key's versions live in the backend named by the key record; the keyring
 * looks it up by name among those registered and never switches on type.
 *
 * Nonce budget (docs/formats.md): each version's usage count is reserved in the
 * store in leases of `lease` IVs before they are used, so a crash can only
 * lose unused IVs, never reuse one. When a wrap finds the primary version's
 * count at or past rotate_at, the keyring rotates the key first; no
 * version ever exceeds nonce_limit (KMS_EEXHAUSTED). */
#ifndef KMS_KEYRING_H
#define KMS_KEYRING_H

#include <stddef.h>
#include <stdint.h>

#include "kms/backend.h"
#include "base/clock.h"
#include "kmsd/keyring/context.h"
#include "base/secret.h"
#include "kmsd/store/store.h"

#define KMS_NONCE_LIMIT (UINT64_C(1) << 32)

typedef struct kms_keyring_config {
    kms_clock clock;      /* for created_at of keys and versions (default: real time) */
    uint64_t nonce_limit; /* 0 = KMS_NONCE_LIMIT */
    uint64_t rotate_at;   /* 0 = 0.9 * nonce_limit */
    uint32_t lease;       /* 0 = 4096 */
} kms_keyring_config;

typedef struct kms_keyring kms_keyring;

/* The keyring borrows the store, which must outlive it. */
int kms_keyring_open(kms_store *store, const kms_keyring_config *cfg,
                     kms_keyring **out) KMS_MUST_CHECK;

/* Backends. Every backend instance serves one mode (kms/backend.h) and is
 * registered under the name key records store for its (backend, mode):
 * kms_keyring_backend_name. A backend that declares no modes (a test fake)
 * is registered under its ops->name. KMS_EEXISTS if that name is taken,
 * KMS_EINVAL for a (backend, mode) without a stored name.
 *
 * adopt: the keyring owns b from now on and closes it in
 * kms_keyring_close; on failure b is closed at once. add: b is borrowed and
 * must outlive the keyring. */
int kms_keyring_adopt_backend(kms_keyring *kr, kms_backend *b) KMS_MUST_CHECK;
int kms_keyring_add_backend(kms_keyring *kr, kms_backend *b) KMS_MUST_CHECK;
/* Releases opened backend keys, then closes the adopted backends. NULL-safe. */
void kms_keyring_close(kms_keyring *kr);

/* The name a key record stores for (backend, mode), e.g. ("tpm2",
 * "resident") -> "tpm2-resident"; a backend's only mode is "". *stored is
 * static. KMS_EINVAL (detail naming both) if there is no such pair. */
int kms_keyring_backend_name(const char *backend, const char *mode,
                             const char **stored) KMS_MUST_CHECK;
/* The inverse: (backend, mode) of a stored name. A name without a row (a
 * test fake's) is its own backend with mode "". The results are static or
 * point into stored. */
void kms_keyring_backend_of_name(const char *stored, const char **backend, const char **mode);

/* The stored name of the first backend registered (where `kmsd init`
 * creates its keys), NULL if none. */
const char *kms_keyring_default_backend(const kms_keyring *kr);

/* The first registered backend instance that holds a state-integrity key
 * (KMS_BACKEND_CAP_STATE_MAC), NULL if none can (a test fake). The
 * keyring keeps owning it. */
kms_backend *kms_keyring_state_backend(const kms_keyring *kr);

/* The first registered backend instance that can hold the audit signing
 * key (KMS_BACKEND_CAP_AUDIT_SIGN), NULL if none can (a TPM-only kmsd).
 * The keyring keeps owning it. */
kms_backend *kms_keyring_audit_backend(const kms_keyring *kr);

/* 0 if every registered backend answers now; else KMS_EUNAVAIL naming the
 * first that does not (each one down is logged). */
int kms_keyring_health(kms_keyring *kr) KMS_MUST_CHECK;

/* The start-up check: opens (so the backend checks) every version of every
 * complete key that is not destroyed, then releases what it opened (first
 * use opens and checks it again). Each version that fails is logged as an
 * error naming key and version. KMS_EKEYCHECK (detail: key, version and
 * the failing property) if any version is an unsafe key, so kmsd refuses
 * to start rather than serve a key it would refuse later; a version the
 * device cannot open now for another reason (PCRs changed, object gone,
 * device down) is only logged and answers its error on use. *checked
 * (optional) receives the number of versions that passed. */
int kms_keyring_check_all(kms_keyring *kr, size_t *checked) KMS_MUST_CHECK;

/* Makes the record of an automatic rotation (nonce budget, rotation
 * period) of key_name to version: an EXECUTED action of
 * KMS_SYSTEM_PROPOSER, which the keyring stores in the same transaction as
 * the new version (store version_add_recorded). Called with the key's lock
 * held: it must not call back into the keyring. A failure stops the
 * rotation. Set once, before the keyring serves; without one, automatic
 * rotations are not recorded. */
typedef int (*kms_keyring_rotation_recorder)(void *ctx, const char *key_name, uint32_t version,
                                             const char *reason,
                                             kms_action_rec *out) KMS_MUST_CHECK;
void kms_keyring_set_rotation_recorder(kms_keyring *kr, kms_keyring_rotation_recorder rec,
                                       void *ctx);

/* 1 if a backend of that name is registered. */
int kms_keyring_has_backend(const kms_keyring *kr, const char *name) KMS_MUST_CHECK;

/* Key names: 1..KMS_KEY_NAME_MAX of [A-Za-z0-9._/-], not starting with '/'. */
int kms_keyring_valid_name(const char *name) KMS_MUST_CHECK;

/* Creates key `name` in backend `backend` with version 1 as primary. */
int kms_keyring_create_key(kms_keyring *kr, const char *name, const char *backend,
                           kms_key_rec *out) KMS_MUST_CHECK;
/* Creates the next version on the device and makes it primary. */
int kms_keyring_rotate(kms_keyring *kr, const char *name, uint32_t *new_version) KMS_MUST_CHECK;
/* The same, as an automatic rotation for `reason` ("rotation period"),
 * recorded atomically with the new version (kms_keyring_rotation_recorder). */
int kms_keyring_rotate_automatic(kms_keyring *kr, const char *name, const char *reason,
                                 uint32_t *new_version) KMS_MUST_CHECK;
int kms_keyring_set_version_state(kms_keyring *kr, const char *name, uint32_t version,
                                  kms_version_state state) KMS_MUST_CHECK;

/* Re-reads a cached key's settings (minimum decryption version, rotation
 * period, scheduled deletion) and version states after a quorum action
 * changed them in the store. */
int kms_keyring_refresh(kms_keyring *kr, const uint8_t key_id[KMS_KEY_ID_LEN]) KMS_MUST_CHECK;

/* Crypto-shredding: destroys every version of a key scheduled for deletion
 * on its backend and marks it DESTROYED (KMS_EPRECOND if no deletion is
 * scheduled). Idempotent: a version already gone counts as destroyed. A
 * version that cannot be destroyed is logged and stays (the next call
 * retries it); the others are destroyed all the same, and the first
 * failure is returned. *destroyed counts the versions destroyed now. */
int kms_keyring_destroy_key(kms_keyring *kr, const char *name, unsigned *destroyed) KMS_MUST_CHECK;

/* A key scheduled for deletion wraps and unwraps nothing (KMS_EPRECOND). */

/* Encrypts pt (1..KMS_BLOB_MAX_PLAINTEXT bytes) under the key's primary
 * version, binding ctx. The blob goes to out (cap >= pt_len +
 * KMS_BLOB_OVERHEAD), its length to *blob_len, the version to *version. */
int kms_keyring_wrap(kms_keyring *kr, const char *name, const kms_context *ctx, const uint8_t *pt,
                     size_t pt_len, uint8_t *out, size_t cap, size_t *blob_len,
                     uint32_t *version) KMS_MUST_CHECK;

/* Decrypts a blob; the key comes from the blob. KMS_EBADBLOB (malformed),
 * KMS_ENOTFOUND (unknown key or version), KMS_EPRECOND (version not enabled
 * or below the key's minimum decryption version), KMS_EAUTH (wrong context,
 * tampered, other key). On success *pt is a new secret the caller frees;
 * key (optional) receives the key record and *version the version. */
int kms_keyring_unwrap(kms_keyring *kr, const uint8_t *blob, size_t blob_len,
                       const kms_context *ctx, kms_secret **pt, kms_key_rec *key,
                       uint32_t *version) KMS_MUST_CHECK;

#endif
