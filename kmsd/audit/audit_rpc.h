/* kmsd's audit sink: the log (audit_log.h) plus the context key, as the
 * RPC wrapper's audit hook sees them.
 *
 * The context key is 32 random bytes in a secret file (0600), made the
 * first time kmsd runs with an audit log. It keys HMAC-SHA-256 over a
 * context's canonical encoding, so a record names a context without
 * showing it (contexts are often guessable: a plain hash would give them
 * away). Whoever holds the key can compute the MAC of a known context
 * (`kmsctl audit hash-context --key FILE k=v ...`) and search for it; keep
 * it apart from the log files and from whoever only ships them. */
#ifndef KMS_AUDIT_RPC_H
#define KMS_AUDIT_RPC_H

#include <stddef.h>
#include <stdint.h>

#include "kms/error.h"
#include "kmsd/audit/audit_log.h"
#include "kmsd/quorum/quorum.h"
#include "kmsd/server/rpc.h"

typedef struct kms_audit_sink kms_audit_sink;

/* Opens the log in cfg->dir and loads (or makes) the context key at
 * context_key_path. Errors of kms_audit_open; KMS_EINVAL for a key file
 * that is not 32 bytes or not a private regular file. */
int kms_audit_sink_open(const kms_audit_config *cfg, const char *context_key_path,
                        kms_audit_sink **out) KMS_MUST_CHECK;

/* Writes one record of a kmsd event ("start", "stop", ...) with detail
 * (NULL: "") and waits until it is durable. */
int kms_audit_sink_event(kms_audit_sink *s, const char *type, const char *detail) KMS_MUST_CHECK;

/* The RPC wrapper's hooks (kms_rpc_env.audit, .audit_context_mac,
 * .audit_ready); ctx is the sink. */
int kms_audit_sink_rpc(void *ctx, const kms_rpc_audit_record *rec) KMS_MUST_CHECK;
int kms_audit_sink_context_mac(void *ctx, const uint8_t *enc, size_t len,
                               uint8_t mac[KMS_RPC_CONTEXT_MAC_LEN]) KMS_MUST_CHECK;
int kms_audit_sink_ready(void *ctx) KMS_MUST_CHECK;

/* The quorum's hook (kms_quorum_config.event): one record per quorum or
 * sweep event, durable before the change it describes is committed. */
int kms_audit_sink_quorum(void *ctx, const kms_quorum_event *ev) KMS_MUST_CHECK;

/* The log (for counters). */
kms_audit *kms_audit_sink_log(kms_audit_sink *s);

/* Closes the log (after draining it) and wipes the key. NULL-safe. */
void kms_audit_sink_close(kms_audit_sink *s);

#endif
