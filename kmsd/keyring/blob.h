/* The ciphertext blob (docs/formats.md): self-describing, versioned, parsed
 * only by the server.
 *
 *   format(1)=0x01 ‖ key_id(16) ‖ key_version(u32be) ‖ alg(1)=0x01 ‖ iv(12)
 *   ‖ ciphertext ‖ tag(16)
 *
 * AAD = the 22 header bytes before the IV ‖ canonical encryption context.
 * The IV is not in the AAD because a FIPS-mode HSM chooses it during the
 * encryption itself; GCM authenticates the IV anyway. */
#ifndef KMS_BLOB_H
#define KMS_BLOB_H

#include <stddef.h>
#include <stdint.h>

#include "kms/backend.h"
#include "kms/error.h"

#define KMS_BLOB_FORMAT_V1 0x01
#define KMS_BLOB_ALG_AES256_GCM 0x01
#define KMS_BLOB_AAD_HEADER_LEN 22 /* format, key id, version, alg */
#define KMS_BLOB_HEADER_LEN (KMS_BLOB_AAD_HEADER_LEN + KMS_GCM_IV_LEN)
#define KMS_BLOB_OVERHEAD (KMS_BLOB_HEADER_LEN + KMS_GCM_TAG_LEN)
/* Largest plaintext a blob may carry (Encrypt's 4 KiB, data keys are less). */
#define KMS_BLOB_MAX_PLAINTEXT 4096
#define KMS_BLOB_MAX (KMS_BLOB_OVERHEAD + KMS_BLOB_MAX_PLAINTEXT)

/* A parsed blob: pointers into the caller's buffer, valid while it lives. */
typedef struct kms_blob_view {
    uint8_t format;
    uint8_t key_id[KMS_KEY_ID_LEN];
    uint32_t key_version;
    uint8_t alg;
    uint8_t iv[KMS_GCM_IV_LEN];
    const uint8_t *aad_header; /* KMS_BLOB_AAD_HEADER_LEN bytes */
    const uint8_t *ciphertext;
    size_t ciphertext_len;
    const uint8_t *tag; /* KMS_GCM_TAG_LEN bytes */
} kms_blob_view;

/* Strict parse: known format and alg, version >= 1, ciphertext length
 * 1..KMS_BLOB_MAX_PLAINTEXT, nothing trusted beyond len. KMS_EBADBLOB for
 * anything else, with a detail saying what. *out is set only on success. */
int kms_blob_parse(const uint8_t *buf, size_t len, kms_blob_view *out) KMS_MUST_CHECK;

/* Writes the 22-byte AAD header for (key_id, version, alg) into out. */
void kms_blob_aad_header(const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t version, uint8_t alg,
                         uint8_t out[KMS_BLOB_AAD_HEADER_LEN]);

/* Assembles a blob into out (cap >= KMS_BLOB_OVERHEAD + ct_len). */
int kms_blob_write(const uint8_t aad_header[KMS_BLOB_AAD_HEADER_LEN],
                   const uint8_t iv[KMS_GCM_IV_LEN], const uint8_t *ct, size_t ct_len,
                   const uint8_t tag[KMS_GCM_TAG_LEN], uint8_t *out, size_t cap,
                   size_t *len) KMS_MUST_CHECK;

#endif
