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
 * the recovery once. */
#ifndef KMS_AUDIT_LOG_H
#define KMS_AUDIT_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "kms/error.h"
#include "kmsd/audit/audit_record.h"

#define KMS_AUDIT_DEFAULT_MAX_BYTES (64u * 1024u * 1024u)
#define KMS_AUDIT_DEFAULT_MAX_AGE 86400u

typedef struct kms_audit_config {
    const char *dir;    /* created 0700 if missing */
    uint64_t max_bytes; /* rotate before a file would grow past this (0: default) */
    unsigned max_age;   /* rotate a file this many seconds old (0: default) */
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

/* Drains the queue, stops the writer, closes the file. NULL-safe. */
void kms_audit_close(kms_audit *a);

#endif
