/* The audit record's context MAC: HMAC-SHA-256 under the context key of
 * the context's canonical encoding (docs/formats.md), in lowercase hex.
 * kmsd computes it for every call that names a context; `kmsctl audit
 * hash-context` computes it for a known context so auditors can search
 * for it. */
#ifndef KMS_AUDIT_CONTEXT_H
#define KMS_AUDIT_CONTEXT_H

#include <stddef.h>
#include <stdint.h>

#include "kms/error.h"

#define KMS_AUDIT_CONTEXT_KEY_LEN 32
#define KMS_AUDIT_CONTEXT_MAC_LEN 32

typedef struct kms_audit_context_pair {
    const char *key;
    const char *value;
} kms_audit_context_pair;

/* HMAC-SHA-256(key, enc[0..len)) into mac. KMS_EINTERNAL if OpenSSL fails. */
int kms_audit_context_mac_bytes(const uint8_t *key, size_t key_len, const uint8_t *enc, size_t len,
                                uint8_t mac[KMS_AUDIT_CONTEXT_MAC_LEN]) KMS_MUST_CHECK;

/* The MAC of the context made of pairs (any order: the encoding sorts
 * them), as 64 hex digits and a NUL. KMS_EINVAL for a context kmsd would
 * refuse (empty or repeated key, limits). */
int kms_audit_context_mac_hex(const uint8_t *key, size_t key_len,
                              const kms_audit_context_pair *pairs, size_t n,
                              char hex[2 * KMS_AUDIT_CONTEXT_MAC_LEN + 1]) KMS_MUST_CHECK;

#endif
