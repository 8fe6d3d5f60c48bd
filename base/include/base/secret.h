/* Secret memory: the one type that holds key material.
 *
 * Backed by whole pages that are mlock'ed (never swapped) and marked
 * MADV_DONTDUMP (never in a core file). kms_secret_free wipes with
 * OPENSSL_cleanse before the pages are reused or unmapped, so no branch can
 * forget to wipe. Freed pages are kept in a small per-thread cache (still
 * locked, already wiped) to keep the hot path free of syscalls. */
#ifndef KMS_SECRET_H
#define KMS_SECRET_H

#include <stddef.h>
#include <stdint.h>

#include "kms/error.h"

#define KMS_SECRET_MAX (1u << 20)

typedef struct kms_secret {
    uint8_t *data;
    size_t len;
    size_t map_len; /* private: size of the locked mapping */
} kms_secret;

/* Allocates len (1..KMS_SECRET_MAX) zeroed, locked bytes. KMS_ENOMEM if the
 * pages cannot be mapped or locked (check RLIMIT_MEMLOCK), KMS_EINVAL for a
 * bad length. *out is set only on success. */
int kms_secret_new(size_t len, kms_secret **out) KMS_MUST_CHECK;

/* kms_secret_new filled from OpenSSL's DRBG. */
int kms_secret_random(size_t len, kms_secret **out) KMS_MUST_CHECK;

/* Shrinks the visible length (the mapping is unchanged); n <= len. */
void kms_secret_truncate(kms_secret *s, size_t n);

/* Wipes and releases. NULL-safe. */
void kms_secret_free(kms_secret *s);

#endif
