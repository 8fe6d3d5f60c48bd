/* Master-key backend contract.
 *
 * A backend keeps master key versions (in an HSM through PKCS#11, or bound
 * to a TPM) and wraps/unwraps data with them using AES-256-GCM. The core
 * holds a kms_backend and calls through its ops; it never switches on the
 * backend type and never includes a backend's private header. What differs
 * between backends and is worth a decision in the core is said by data in
 * the ops: the backend's name, its modes and each mode's capability mask.
 *
 * Modes: one backend (one device, one connection) may keep key versions in
 * several ways; each way is a mode, one row of ops->modes (modes[0] is the
 * default). A kms_backend instance serves exactly one mode, b->mode; a
 * backend with two modes hands out two instances that share its device
 * (PKCS#11: one mode, ""; TPM2: "sealed" (default) and "resident"). So
 * every op below acts in the instance's mode and none takes a mode
 * argument: the signatures are the ones this contract always had.
 *
 * Identity of a key version: the core gives (key_id, version) when it
 * creates a version; the backend returns an opaque reference (ref) that the
 * store keeps and hands back to open or destroy it. For PKCS#11 it is the
 * CKA_ID; for a TPM it holds the sealed object's blobs.
 *
 * Errors: every int-returning op returns 0 or a negative KMS_E* code, sets
 * kms_error_detail() on failure and is KMS_MUST_CHECK (gcc and clang honour
 * warn_unused_result on function-pointer members). Output parameters are
 * written only on success unless the op says otherwise.
 *
 * Threading: every op may be called from several threads at once, except
 * close, which must be the last call on that instance. */
#ifndef KMS_BACKEND_H
#define KMS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "kms/error.h"

#define KMS_KEY_ID_LEN 16
#define KMS_GCM_IV_LEN 12
#define KMS_GCM_TAG_LEN 16
/* Largest reference a backend may return (TPM sealed blobs fit). */
#define KMS_BACKEND_REF_MAX 2048

typedef struct kms_backend kms_backend;
/* An opened key version: checked, ready to wrap/unwrap. Opaque. */
typedef struct kms_backend_key kms_backend_key;

typedef struct kms_backend_ref {
    uint8_t bytes[KMS_BACKEND_REF_MAX];
    size_t len;
} kms_backend_ref;

/* One wrap/unwrap request. aad is authenticated, not encrypted. */
typedef struct kms_aead_io {
    const uint8_t *aad;
    size_t aad_len;
    const uint8_t *in; /* plaintext for wrap, ciphertext (without tag) for unwrap */
    size_t in_len;
    uint8_t *out;                 /* in_len bytes */
    uint8_t iv[KMS_GCM_IV_LEN];   /* wrap: written by the backend; unwrap: read */
    uint8_t tag[KMS_GCM_TAG_LEN]; /* wrap: written; unwrap: read */
} kms_aead_io;

/* Capabilities of a mode: facts the core decides on (what it tells an
 * operator at start and at crypto-shredding; which contract cases apply).
 * A bit that is not set promises nothing. */
/* The version's master key never leaves the device: wrap and unwrap run on
 * it, or with a one-time key it derives for that one operation. Without
 * it, the master key itself is in kmsd's locked memory while the version
 * is open. */
#define KMS_BACKEND_CAP_KEY_NEVER_LEAVES (1u << 0)
/* destroy_version erases the version on the device: afterwards no copy of
 * its ref (a database backup) opens it again (open_version answers
 * KMS_ENOTFOUND). Without it, count on nothing. (TPM2 sets it; its
 * versions made before TPM shredding existed are the documented exception:
 * a saved ref of one still opens on that TPM.) */
#define KMS_BACKEND_CAP_SHRED (1u << 1)
/* The device holds a state-integrity key: state_key_create and state_mac
 * are implemented (never NULL). Without it both are NULL and the core must
 * not call them; kmsd then cannot authenticate its database on this
 * backend and says so. */
#define KMS_BACKEND_CAP_STATE_MAC (1u << 2)

/* The device holds the audit signing key, an ECDSA P-256 key pair whose
 * private half never leaves it: audit_key_create, audit_key_public and
 * audit_sign are implemented (never NULL). Without it all three are NULL
 * and the audit log's checkpoints cannot be signed on this backend. */
#define KMS_BACKEND_CAP_AUDIT_SIGN (1u << 3)

/* The audit key's public point, uncompressed (0x04 ‖ X ‖ Y), and a raw
 * ECDSA P-256 signature (r ‖ s, 32 bytes each, big-endian). */
#define KMS_AUDIT_PUB_LEN 65
#define KMS_AUDIT_SIG_LEN 64
#define KMS_AUDIT_DIGEST_LEN 32

/* Length of a state MAC (HMAC-SHA-256). */
#define KMS_STATE_MAC_LEN 32
/* Largest input state_mac takes. */
#define KMS_STATE_MAC_INPUT_MAX (1024 * 1024)

/* One mode of a backend. */
typedef struct kms_backend_mode {
    const char *name; /* "" for a backend's only mode; else e.g. "sealed", "resident" */
    unsigned caps;    /* KMS_BACKEND_CAP_* */
} kms_backend_mode;

typedef struct kms_backend_ops {
    /* The backend's name: "pkcs11", "tpm2". Lower case, [a-z0-9_], stable:
     * the name the configuration and the API use for it. */
    const char *name;
    /* Its modes, n_modes >= 1 rows; modes[0] is the default. A backend that
     * leaves them NULL/0 (a test fake) has one mode "" without capabilities. */
    const kms_backend_mode *modes;
    size_t n_modes;

    /* Creates master key version (key_id, version) inside the device, in
     * the instance's mode, and fills ref. KMS_EEXISTS if that version
     * already exists on the device; ref then names the existing object, so
     * the caller can remove an orphan that a crash left between device and
     * store. KMS_EUNAVAIL if the device does not answer. */
    int (*create_version)(kms_backend *b, const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t version,
                          kms_backend_ref *ref) KMS_MUST_CHECK;

    /* Finds the version named by ref and checks it is safe to use (for
     * PKCS#11: sensitive, never extractable, local, AES-256, value
     * unreadable). KMS_ENOTFOUND if absent; KMS_EKEYCHECK naming the failing
     * property in kms_error_detail() if unsafe; a ref this backend did not
     * make is KMS_EINVAL or KMS_ENOTFOUND. *out is set only on success and
     * released with release_version. */
    int (*open_version)(kms_backend *b, const kms_backend_ref *ref,
                        kms_backend_key **out) KMS_MUST_CHECK;
    /* Releases what open_version returned (its key material is wiped).
     * NULL-safe. */
    void (*release_version)(kms_backend *b, kms_backend_key *k);

    /* AES-256-GCM with a fresh 96-bit IV chosen for this call (by the
     * backend or the device; written to io->iv). Output: io->out, io->tag.
     * KMS_EINVAL for lengths the backend cannot take, KMS_EUNAVAIL if the
     * device does not answer. */
    int (*wrap)(kms_backend *b, kms_backend_key *k, kms_aead_io *io) KMS_MUST_CHECK;

    /* Inverse of wrap. KMS_EAUTH if the tag does not verify (wrong key,
     * wrong AAD, tampered bytes); io->out is then wiped. */
    int (*unwrap)(kms_backend *b, kms_backend_key *k, kms_aead_io *io) KMS_MUST_CHECK;

    /* Destroys the version (crypto-shredding where the mode has
     * KMS_BACKEND_CAP_SHRED; see there otherwise). KMS_ENOTFOUND if it is
     * already gone. */
    int (*destroy_version)(kms_backend *b, const kms_backend_ref *ref) KMS_MUST_CHECK;

    /* n random bytes from the device's RNG; KMS_EINVAL unless 1 <= n <=
     * 4096. */
    int (*random)(kms_backend *b, uint8_t *out, size_t n) KMS_MUST_CHECK;

    /* 0 if the device answers now, else KMS_EUNAVAIL. Cheap enough for a
     * readiness probe (one device round trip); it may reconnect a device
     * that came back. */
    int (*health)(kms_backend *b) KMS_MUST_CHECK;

    /* Releases everything; b is invalid afterwards. NULL-safe. */
    void (*close)(kms_backend *b);

    /* ---- state integrity: only with KMS_BACKEND_CAP_STATE_MAC, else NULL ---- */

    /* Creates the device's one state-integrity key: a 256-bit HMAC-SHA-256
     * key generated on the device, sensitive and never extractable (PKCS#11:
     * CKK_GENERIC_SECRET, usable only for C_Sign/C_Verify). KMS_EEXISTS if
     * it is already there (it is never replaced: every MAC made under it
     * would be lost). KMS_EUNAVAIL if the device does not answer. */
    int (*state_key_create)(kms_backend *b) KMS_MUST_CHECK;

    /* HMAC-SHA-256 of in[0..len) under the state-integrity key, computed on
     * the device, into out. KMS_ENOTFOUND if the device has no such key;
     * KMS_EKEYCHECK (naming the attribute) if the object found is not safe;
     * KMS_EINVAL if in is NULL with len > 0, KMS_ETOOBIG if len >
     * KMS_STATE_MAC_INPUT_MAX. out is written only on success. */
    int (*state_mac)(kms_backend *b, const uint8_t *in, size_t len,
                     uint8_t out[KMS_STATE_MAC_LEN]) KMS_MUST_CHECK;

    /* ---- audit signing: only with KMS_BACKEND_CAP_AUDIT_SIGN, else NULL ---- */

    /* Creates the device's one audit signing key: an ECDSA P-256 key pair
     * generated on the device whose private key is sensitive, never
     * extractable, not modifiable and may only sign. KMS_EEXISTS if it is
     * already there (it is never replaced: the public key is the auditors'
     * trust anchor). KMS_EUNAVAIL if the device does not answer. */
    int (*audit_key_create)(kms_backend *b) KMS_MUST_CHECK;

    /* The audit key's public point into pub. KMS_ENOTFOUND if the device has
     * no audit key; KMS_EKEYCHECK (naming the attribute) if the private key
     * found is not safe or the public half is not a P-256 point. */
    int (*audit_key_public)(kms_backend *b, uint8_t pub[KMS_AUDIT_PUB_LEN]) KMS_MUST_CHECK;

    /* ECDSA P-256 over a SHA-256 digest the caller computed, on the device:
     * the raw signature r ‖ s into sig. Errors as audit_key_public; sig is
     * written only on success. */
    int (*audit_sign)(kms_backend *b, const uint8_t digest[KMS_AUDIT_DIGEST_LEN],
                      uint8_t sig[KMS_AUDIT_SIG_LEN]) KMS_MUST_CHECK;
} kms_backend_ops;

struct kms_backend {
    const kms_backend_ops *ops;
    void *impl;
    size_t mode; /* the row of ops->modes this instance serves; 0 = default */
};

/* The mode row an instance serves (a fake without modes: "" and no caps). */
static inline kms_backend_mode kms_backend_mode_of(const kms_backend *b)
{
    if (b->ops->modes == NULL || b->mode >= b->ops->n_modes)
        return (kms_backend_mode){"", 0};
    return b->ops->modes[b->mode];
}

/* 1 if the instance's mode has every capability in caps. */
static inline int kms_backend_has_caps(const kms_backend *b, unsigned caps)
{
    return (kms_backend_mode_of(b).caps & caps) == caps;
}

#endif
