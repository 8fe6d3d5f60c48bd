/* Audit handlers: the Audit rows of the RPC table. */
#ifndef KMS_HANDLERS_AUDIT_H
#define KMS_HANDLERS_AUDIT_H

#include "kmsd/server/rpc.h"

/* Audit.ReadAuditLog: records from_seq.. of the log (audit_reader.h), at
 * most limit (0: KMS_AUDIT_READ_DEFAULT; over KMS_AUDIT_READ_MAX:
 * KMS_EINVAL), none past the last durable record, and fewer when the reply
 * would pass READ_REPLY_MAX bytes. KMS_EPRECOND when this kmsd keeps no
 * audit log. The wrapper has checked that the caller is an auditor. */
int kms_handlers_read_audit_log(kms_rpc_call *c, const ProtobufCMessage *req,
                                ProtobufCMessage **resp) KMS_MUST_CHECK;

#endif
