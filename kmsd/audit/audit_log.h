/* The audit log writer: appends records to the hash-chained JSON Lines
 * files of audit.dir and answers only once they are durable.
 *
 * Files are named audit-<first seq, 20 digits>.jsonl, so their names sort
 * in chain order. The chain runs across files: the first record of a new
 * file carries the last hash of the previous one.
 *
 * Group commit: callers encode their record under a lock (which fixes its
 * sequence number and chain position) and wait; one writer thread writes
 * everything queued with one write and one fdatasync, then wakes them all.
 *
 * Fail closed: a failed write, fdatasync, or a file that was removed under
 * us fails every record of the batch (and those queued behind it, which
 * chain on it) with KMS_EUNAVAIL; the chain rolls back to the last durable
 * record and the next batch starts a new file. kms_audit_ready reports the
 * failure until a batch is durable again; the failure is logged once and
 * the recovery once.
 *
 * Checkpoints: a signed checkpoint record (audit_checkpoint.h) is written
 * after every checkpoint_records records, checkpoint_seconds after the
 * first record no checkpoint covers, as the last record of every file (a
 * file is rotated only after its checkpoint is durable) and at close. It
 * is signed under the log's lock, so it fixes its place in the chain like
 * any record. A signature that fails (the device is down) is logged once
 * and retried after a second; the records stay durable, only the
 * unverified tail grows until a checkpoint succeeds. */
#ifndef KMS_AUDIT_LOG_H
#define KMS_AUDIT_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "kms/error.h"
#include "kmsd/audit/audit_checkpoint.h"
#include "kmsd/audit/audit_record.h"

#define KMS_AUDIT_DEFAULT_MAX_BYTES (64u * 1024u * 1024u)
#define KMS_AUDIT_DEFAULT_MAX_AGE 86400u
#define KMS_AUDIT_DEFAULT_CHECKPOINT_RECORDS 1000u
#define KMS_AUDIT_DEFAULT_CHECKPOINT_SECONDS 60u

typedef struct kms_audit_config {
    const char *dir;    /* created 0700 if missing */
    uint64_t max_bytes; /* rotate before a file would grow past this (0: default) */
    unsigned max_age;   /* rotate a file this many seconds old (0: default) */
    /* Signed checkpoints (audit_checkpoint.h): with sign set, a checkpoint
     * record follows every checkpoint_records records, ends a quiet
     * checkpoint_seconds, ends every file and ends the log at close. sign
     * NULL: no checkpoints (the caller has said why). */
    kms_audit_sign_fn sign;
    void *sign_ctx;
    const char *log_id;          /* KMS_AUDIT_LOG_ID_HEX hex digits */
    unsigned checkpoint_records; /* 0: default */
    unsigned checkpoint_seconds; /* 0: default */
} kms_audit_config;

typedef struct kms_audit kms_audit;

/* Opens the log: finds the newest file, drops a partial last line (a
 * record that was never acknowledged: the sync comes after the write) and
 * continues its chain. A last line that does not parse is KMS_ESTORE (the
 * log must be looked at before kmsd writes after it); an unusable
 * directory is KMS_EUNAVAIL. Starts the writer thread. */
int kms_audit_open(const kms_audit_config *cfg, kms_audit **out) KMS_MUST_CHECK;

/* Appends one record: rec's seq, prev, time and instance are filled here
 * (its other fields are copied into the line). Returns once the record is
 * durable (0), or KMS_EUNAVAIL if it is not and never will be, KMS_EINVAL
 * for a field too long. Thread-safe. */
int kms_audit_append(kms_audit *a, const kms_audit_rec *rec) KMS_MUST_CHECK;

/* 1 while the last batch was durable, 0 after a failure until one is. */
int kms_audit_ready(kms_audit *a) KMS_MUST_CHECK;

/* The instance id written into every record (16 hex digits). */
const char *kms_audit_instance(const kms_audit *a);

/* The sequence number of the last durable record (0: none yet), for
 * readers (audit_reader.h): a record past it may still be rolled back by a
 * failed batch, so it is never returned. */
uint64_t kms_audit_durable_seq(kms_audit *a) KMS_MUST_CHECK;
/* The log's directory (audit.dir), as opened. */
const char *kms_audit_dir(const kms_audit *a);

/* Counters for benchmarks: records made durable and fdatasync calls. */
void kms_audit_stats(kms_audit *a, uint64_t *records, uint64_t *syncs);

/* Writes a checkpoint now if records were appended since the last one (and
 * checkpoints are on) and waits until it is durable. KMS_EUNAVAIL if it is
 * not. For tests and for kmsd's stop. */
int kms_audit_checkpoint_now(kms_audit *a) KMS_MUST_CHECK;

/* Drains the queue (after a last checkpoint), stops the writer, closes the
 * file. NULL-safe. */
void kms_audit_close(kms_audit *a);

#endif
