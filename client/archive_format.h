/* The archive format (docs/archive-format.md): header encoding and parsing,
 * key derivation, and the sealing and opening of one segment. No I/O, no
 * threads, no gRPC; internal to libkmsclient (and linked into the unit
 * tests and the fuzz target). Functions return 0 or a negative
 * kms_client_status. */
#ifndef KMS_CLIENT_ARCHIVE_FORMAT_H
#define KMS_CLIENT_ARCHIVE_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "base/secret.h"
#include "kms/client.h"

#define KMS_ARCHIVE_MAGIC "KMSA"
#define KMS_ARCHIVE_VERSION 1
#define KMS_ARCHIVE_SALT_LEN 32
#define KMS_ARCHIVE_PREFIX_LEN 7
#define KMS_ARCHIVE_NONCE_LEN 12
#define KMS_ARCHIVE_TAG_LEN 16
#define KMS_ARCHIVE_COMMIT_LEN 32
#define KMS_ARCHIVE_MAC_LEN 32
#define KMS_ARCHIVE_DATA_KEY_LEN 32
/* Fixed bytes of a header: everything but the context, key name and blob. */
#define KMS_ARCHIVE_HEADER_FIXED 121
/* Bytes needed to read magic, version and header length. */
#define KMS_ARCHIVE_PEEK_LEN 9
#define KMS_ARCHIVE_SEGMENT_MIN 4096u
#define KMS_ARCHIVE_SEGMENT_MAX (8u << 20)
#define KMS_ARCHIVE_SEGMENT_DEFAULT (1u << 20)
#define KMS_ARCHIVE_CONTEXT_MAX 65535u
#define KMS_ARCHIVE_NAME_MAX 255u
#define KMS_ARCHIVE_BLOB_MIN 51u
#define KMS_ARCHIVE_BLOB_MAX 4146u
#define KMS_ARCHIVE_HEADER_MAX                                                                     \
    (KMS_ARCHIVE_HEADER_FIXED + KMS_ARCHIVE_CONTEXT_MAX + KMS_ARCHIVE_NAME_MAX +                   \
     KMS_ARCHIVE_BLOB_MAX)
/* Derived key bytes: segment key, commitment, MAC key. */
#define KMS_ARCHIVE_OKM_LEN 96

/* A parsed header; pointers point into the parsed buffer. */
typedef struct kms_archive_header {
    uint32_t version;
    uint32_t header_len;
    uint32_t segment_size;
    const uint8_t *salt;    /* KMS_ARCHIVE_SALT_LEN */
    const uint8_t *prefix;  /* KMS_ARCHIVE_PREFIX_LEN */
    const uint8_t *context; /* canonical encoding */
    size_t context_len;
    const uint8_t *commitment;
    const uint8_t *mac;
    const uint8_t *key_name; /* unauthenticated label, not NUL-terminated */
    size_t key_name_len;
    const uint8_t *blob; /* the wrapped data key */
    size_t blob_len;
    const uint8_t *bound; /* bytes [0, 54 + context_len): with the length field, see bound_copy */
    size_t bound_len;
} kms_archive_header;

/* From the first KMS_ARCHIVE_PEEK_LEN bytes (len may be less): the total
 * header length in *header_len. KMS_CLIENT_ENOTARCHIVE (magic), _EVERSION,
 * _ECORRUPT (length out of bounds), _ETRUNCATED (fewer bytes than needed). */
int kms_archive_peek(const uint8_t *buf, size_t len, size_t *header_len);

/* Parses exactly one header occupying buf[0, len). Checks every field and
 * the context encoding; authenticates nothing (see kms_archive_keys_check). */
int kms_archive_header_parse(const uint8_t *buf, size_t len, kms_archive_header *h);

/* Writes a header: malloc'ed into *out (*out_len bytes). keys: the
 * KMS_ARCHIVE_OKM_LEN bytes from kms_archive_derive over the same fields
 * (kms_archive_bound builds them first). */
int kms_archive_header_build(uint32_t segment_size, const uint8_t salt[KMS_ARCHIVE_SALT_LEN],
                             const uint8_t prefix[KMS_ARCHIVE_PREFIX_LEN], const uint8_t *context,
                             size_t context_len, const char *key_name, const uint8_t *blob,
                             size_t blob_len, const kms_secret *dk, uint8_t **out, size_t *out_len,
                             kms_secret **keys);

/* Replaces the key name and wrapped key of a parsed header: the bound part,
 * commitment and MAC are copied as they are (they do not depend on the
 * blob). malloc'ed into *out. */
int kms_archive_header_rewrap(const kms_archive_header *h, const char *key_name,
                              const uint8_t *blob, size_t blob_len, uint8_t **out, size_t *out_len);

/* HKDF-SHA-256 of the data key over the header's salt and bound bytes:
 * KMS_ARCHIVE_OKM_LEN bytes of locked memory in *keys; then checks the
 * commitment and the MAC (KMS_CLIENT_ECORRUPT when either differs: wrong
 * data key or tampered header). */
int kms_archive_keys_check(const kms_archive_header *h, const kms_secret *dk, kms_secret **keys);

/* HKDF-SHA-256 (RFC 5869), extract then expand, into out_len bytes of out:
 * the archive's key schedule, exposed for its known-answer test. */
int kms_archive_hkdf(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
                     const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len);

/* The canonical encoding of a context (docs/formats.md), malloc'ed. */
int kms_archive_context_encode(const kms_client_context_entry *ctx, size_t n, uint8_t **out,
                               size_t *out_len);
/* Checks a canonical encoding (sorted, distinct, bounded); with entries
 * non-NULL also decodes it into malloc'ed NUL-terminated strings (*entries
 * is one allocation freed with free()). */
int kms_archive_context_decode(const uint8_t *buf, size_t len, kms_client_context_entry **entries,
                               size_t *n);

/* One thread's cipher: an AES-256-GCM context keyed once with the segment
 * key. */
typedef struct kms_archive_cipher {
    EVP_CIPHER_CTX *ctx;
    int encrypt;
} kms_archive_cipher;

int kms_archive_cipher_init(kms_archive_cipher *c, const EVP_CIPHER *aes_gcm, const uint8_t key[32],
                            int encrypt);
void kms_archive_cipher_free(kms_archive_cipher *c);

/* Seals segment index (last: 0/1) of n plaintext bytes into out: n + 16
 * bytes (ciphertext then tag). */
int kms_archive_seal(kms_archive_cipher *c, const uint8_t prefix[KMS_ARCHIVE_PREFIX_LEN],
                     uint32_t index, int last, const uint8_t *in, size_t n, uint8_t *out);
/* Opens n >= 16 bytes of segment index into out (n - 16 bytes).
 * KMS_CLIENT_ECORRUPT if the tag does not verify; out is then wiped. */
int kms_archive_open(kms_archive_cipher *c, const uint8_t prefix[KMS_ARCHIVE_PREFIX_LEN],
                     uint32_t index, int last, const uint8_t *in, size_t n, uint8_t *out);

/* Big-endian helpers. */
static inline uint32_t kms_archive_get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void kms_archive_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

#endif
