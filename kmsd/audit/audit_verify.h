/* Offline verification of audit files (kmsctl audit verify): no kmsd, no
 * key, only the files in chain order.
 *
 * It checks that every line parses strictly, that sequence numbers run
 * 1, 2, 3, ... without a gap or a repeat across all the files, that every
 * record's "prev" is the chain hash of the record before it, and that a
 * file named audit-<seq>.jsonl starts with record <seq>. The first failure
 * stops it and is named by a sequence number:
 *   - a changed record: the chain breaks at the link after it (or, if its
 *     own "prev" was changed, at the link before it); the verifier looks
 *     one record ahead to tell which of the two records was changed;
 *   - a deleted record, a missing or truncated file: the first missing seq;
 *   - an inserted, repeated or reordered record: the seq expected where
 *     the wrong one stands.
 * Given the audit key's public point, every checkpoint record is verified
 * too (audit_checkpoint.h): one that is not valid (forged, signed by
 * another key, a changed signed field) is a failure named by its seq.
 * Records after the last verified checkpoint, or all of them without a
 * key, are reported as an unverified tail: a rewrite of the log from some
 * record on, or a cut at its end, cannot be seen from the chain alone. */
#ifndef KMS_AUDIT_VERIFY_H
#define KMS_AUDIT_VERIFY_H

#include <stddef.h>
#include <stdint.h>

#include "kms/error.h"

typedef struct kms_audit_verify_result {
    int intact;                    /* 1: no break found */
    uint64_t records;              /* records read up to the break (or all) */
    uint64_t last_seq;             /* the last good seq */
    uint64_t bad_seq;              /* if !intact: the first bad sequence number */
    uint64_t unverified;           /* records no signed checkpoint covers */
    uint64_t checkpoints;          /* checkpoint records read */
    uint64_t checkpoints_verified; /* of those, verified under the key given */
    uint64_t covered_seq;          /* the last verified checkpoint's seq, 0 if none */
    char reason[512];              /* if !intact: what broke, where (file and line) */
} kms_audit_verify_result;

/* Verifies the n files in order. 0 with *res filled (intact or not);
 * KMS_ENOTFOUND if a file cannot be read (named in the detail), KMS_ENOMEM. */
int kms_audit_verify_files(const char *const *paths, size_t n,
                           kms_audit_verify_result *res) KMS_MUST_CHECK;

/* As kms_audit_verify_files, and verifies every checkpoint under pub
 * (KMS_AUDIT_PUB_LEN bytes: 0x04 ‖ X ‖ Y); pub NULL verifies none. */
int kms_audit_verify_files_signed(const char *const *paths, size_t n, const uint8_t *pub,
                                  kms_audit_verify_result *res) KMS_MUST_CHECK;

#endif
