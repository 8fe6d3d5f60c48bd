/* Reading the audit log back by sequence number (Audit.ReadAuditLog).
 *
 * The reader walks the files of the log's directory (audit-<first seq,
 * 20 digits>.jsonl, as audit_log.h names them) in chain order and hands
 * each record to a callback: parsed strictly (kms_audit_rec_parse), with
 * its exact line and its chain hash. It never hands over a partial line (a
 * write in progress, or one cut by a crash), nor a record past the bound
 * the caller gives (the writer's last durable record), nor a record of a
 * file that a later file supersedes (after a failed batch, the writer
 * starts a new file at the first record that was not durable, so an older
 * file may end with records that were never acknowledged).
 *
 * It does not verify the chain (that is `kmsctl audit verify`, offline),
 * but it refuses what it cannot read in order: a line that does not parse,
 * a missing or repeated sequence number (KMS_ESTORE, naming the file and
 * line). It opens files read-only and changes nothing. */
#ifndef KMS_AUDIT_READER_H
#define KMS_AUDIT_READER_H

#include <stddef.h>
#include <stdint.h>

#include "kms/error.h"
#include "kmsd/audit/audit_record.h"

#define KMS_AUDIT_READ_DEFAULT 100 /* records, when a request says 0 */
#define KMS_AUDIT_READ_MAX 1000    /* records one request may ask for */

/* One record as read: parsed (its strings valid during the call only),
 * its line (len bytes, the final LF included) and its chain hash,
 * SHA-256(prev || line). */
typedef struct kms_audit_read_rec {
    const kms_audit_parsed *parsed;
    const char *line;
    size_t len;
    uint8_t hash[KMS_AUDIT_HASH_LEN];
} kms_audit_read_rec;

/* Returns 0 to take the record and go on, KMS_AUDIT_READ_STOP to stop
 * before it (not taken), or a negative KMS_E* code, returned as is. */
#define KMS_AUDIT_READ_STOP 1
typedef int (*kms_audit_read_cb)(void *ctx, const kms_audit_read_rec *rec) KMS_MUST_CHECK;

/* Calls cb for the records from_seq, from_seq + 1, ... of the log in dir
 * (from_seq 0: from the oldest record kept), in order, for at most limit
 * records, none with a seq past last_seq. A from_seq older than the oldest
 * file starts at the oldest record kept; one past the end calls cb for
 * nothing. 0 on success (however many records were taken; *n, if not
 * NULL, gets how many), KMS_EUNAVAIL if dir or a file cannot be read,
 * KMS_ESTORE for a damaged log, KMS_ENOMEM, or cb's error. */
int kms_audit_read(const char *dir, uint64_t from_seq, uint64_t last_seq, size_t limit,
                   kms_audit_read_cb cb, void *ctx, size_t *n) KMS_MUST_CHECK;

#endif
