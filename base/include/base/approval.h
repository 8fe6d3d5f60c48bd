/* The approval digest: the 32 bytes an officer signs to approve a quorum
 * action, computed the same way by kmsd and by libkmsclient (which checks
 * it before an officer signs). The format is fixed by docs/approvals.md:
 *
 *   SHA-256( "kms.v1.approval" 0x00 | instance id (16) | action id (16) |
 *            SHA-256(canonical action bytes) (32) | expires_at (u64 BE) )
 *
 * 88 bytes are hashed. Changing any of it invalidates every approval ever
 * signed, so it never changes; the known-answer test in test_approval
 * pins it. */
#ifndef KMS_BASE_APPROVAL_H
#define KMS_BASE_APPROVAL_H

#include <stddef.h>
#include <stdint.h>

#include "kms/error.h"

#define KMS_APPROVAL_TAG "kms.v1.approval" /* hashed with its NUL, the 0x00 separator */
#define KMS_APPROVAL_INSTANCE_ID_LEN 16
#define KMS_APPROVAL_ACTION_ID_LEN 16
#define KMS_APPROVAL_DIGEST_LEN 32

/* Computes the digest of docs/approvals.md into out. action_bytes may be
 * NULL only if len is 0; expires_at is hashed as its two's-complement
 * 64-bit pattern (unix seconds, so non-negative in practice). KMS_EINVAL
 * for a NULL argument, KMS_EINTERNAL if SHA-256 fails (OpenSSL); out is
 * written only on success. */
int kms_approval_digest(const uint8_t instance_id[KMS_APPROVAL_INSTANCE_ID_LEN],
                        const uint8_t action_id[KMS_APPROVAL_ACTION_ID_LEN],
                        const uint8_t *action_bytes, size_t len, int64_t expires_at,
                        uint8_t out[KMS_APPROVAL_DIGEST_LEN]) KMS_MUST_CHECK;

#endif
