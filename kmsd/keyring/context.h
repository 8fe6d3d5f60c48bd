/* Encryption context: string pairs bound to a ciphertext as AAD.
 *
 * Canonical encoding (docs/formats.md):
 *   u32be count ‖ for each pair in ascending byte order of key:
 *     u32be key_len ‖ key ‖ u32be value_len ‖ value
 * Keys are non-empty and distinct; limits below keep the AAD bounded. */
#ifndef KMS_CONTEXT_H
#define KMS_CONTEXT_H

#include <stddef.h>
#include <stdint.h>

#include "kms/error.h"

#define KMS_CONTEXT_MAX_PAIRS 64
#define KMS_CONTEXT_MAX_KEY 256
#define KMS_CONTEXT_MAX_VALUE 1024
#define KMS_CONTEXT_MAX_ENCODED 16384

typedef struct kms_context_pair {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
} kms_context_pair;

typedef struct kms_context {
    const kms_context_pair *pairs;
    size_t count;
} kms_context;

/* Writes the canonical encoding of ctx (NULL = empty) into out (cap bytes)
 * and its length into *len. KMS_EINVAL for an empty or duplicate key, more
 * than KMS_CONTEXT_MAX_PAIRS pairs, an over-long key or value, or a NUL
 * byte in a key or value (C strings would read "v\0x" as "v");
 * KMS_ETOOBIG if cap is too small. Nothing is written to *len on failure. */
int kms_context_encode(const kms_context *ctx, uint8_t *out, size_t cap,
                       size_t *len) KMS_MUST_CHECK;

/* Parses a canonical encoding strictly (it must be exactly what encode
 * writes: sorted, no duplicates, no NUL bytes, no trailing bytes) and calls cb for each
 * pair; used by tests, the fuzzer and tools that display a context. */
typedef int (*kms_context_pair_cb)(void *cbctx, const kms_context_pair *p);
int kms_context_decode(const uint8_t *in, size_t len, kms_context_pair_cb cb,
                       void *cbctx) KMS_MUST_CHECK;

#endif
