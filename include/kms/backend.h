/* Master-key backend contract.
 *
 * A backend keeps master key versions (in an HSM through PKCS#11, or bound
 * to a TPM) and wraps/unwraps data with them using AES-256-GCM. The core
 * holds a kms_backend and calls through its ops; it never switches on the
 * backend type and never includes a backend's private header.
 *
 * Identity of a key version: the core gives (key_id, version) when it
 * creates a version; the backend returns an opaque reference (ref) that the
 * store keeps and hands back to open or destroy it. For PKCS#11 it is the
 * CKA_ID; for a TPM it holds the sealed object's blobs.
 *
 * Threading: every op may be called from several threads at once, except
 * close, which must be the last call. */
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

typedef struct kms_backend_ops {
    const char *name; /* "pkcs11", "tpm2" */

    /* Creates master key version (key_id, version) inside the device and
     * fills ref. KMS_EEXISTS if that version already exists on the device;
     * ref then names the existing object, so the caller can remove an
     * orphan that a crash left between device and store. */
    int (*create_version)(kms_backend *b, const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t version,
                          kms_backend_ref *ref);

    /* Finds the version named by ref and checks it is safe to use (for
     * PKCS#11: sensitive, never extractable, local, AES-256, value
     * unreadable). KMS_ENOTFOUND if absent; KMS_EKEYCHECK naming the failing
     * property in kms_error_detail() if unsafe. *out is set only on success
     * and released with release_version. */
    int (*open_version)(kms_backend *b, const kms_backend_ref *ref, kms_backend_key **out);
    void (*release_version)(kms_backend *b, kms_backend_key *k);

    /* AES-256-GCM with a fresh 96-bit IV chosen for this call (by the
     * backend or the device; written to io->iv). Output: io->out, io->tag. */
    int (*wrap)(kms_backend *b, kms_backend_key *k, kms_aead_io *io);

    /* Inverse of wrap. KMS_EAUTH if the tag does not verify (wrong key,
     * wrong AAD, tampered bytes); io->out is then wiped. */
    int (*unwrap)(kms_backend *b, kms_backend_key *k, kms_aead_io *io);

    /* Destroys the version on the device (crypto-shredding). KMS_ENOTFOUND
     * if it is already gone. */
    int (*destroy_version)(kms_backend *b, const kms_backend_ref *ref);

    /* n random bytes from the device's RNG. */
    int (*random)(kms_backend *b, uint8_t *out, size_t n);

    /* 0 if the device answers now, else KMS_EUNAVAIL. */
    int (*health)(kms_backend *b);

    /* Releases everything; b is invalid afterwards. NULL-safe. */
    void (*close)(kms_backend *b);
} kms_backend_ops;

struct kms_backend {
    const kms_backend_ops *ops;
    void *impl;
};

#endif
