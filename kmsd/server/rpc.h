/* The RPC table and its one wrapper.
 *
 * Every method kmsd serves is one row {full method path, required
 * permission, request type, targets, handler} in kmsd/rpc_table.c. One
 * wrapper, kms_rpc_dispatch, runs every call the same way:
 *
 *   1. authenticate: the identity is the client certificate's SAN URI (the
 *      single URI entry), else its CN, read from the call's auth context;
 *      the peer must be authenticated (except with --insecure-dev, where
 *      every caller is KMS_RPC_INSECURE_IDENTITY);
 *   2. methods without a handler answer UNIMPLEMENTED;
 *   3. the request is unpacked with an allocator that wipes on free;
 *   4. authorize: the method-level permission (officer, auditor), then every
 *      key the request names (its `targets`) against that key's policy;
 *   5. the handler runs and fills a response allocated from the call's
 *      arena; the wrapper packs it into the reply buffer;
 *   6. the audit hook (if any) sees the outcome before the reply leaves; if
 *      it fails, the reply is dropped and the caller gets UNAVAILABLE;
 *   7. kms errors map to gRPC status through kms_error_grpc_status with the
 *      fixed kms_strerror message; details go to the log only.
 *
 * Secrets: plaintext data keys live in kms_secret; everything the call
 * allocates (arena, unpacked request, reply buffer) is wiped when freed.
 * Key bytes never reach a log line or a status message. */
#ifndef KMS_RPC_H
#define KMS_RPC_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "kms/backend.h"
#include "kmsd/policy/policy.h"
#include "kmsd/server/identity.h"
#include "base/secret.h"
#include "kmsd/server/server.h"
#include "kmsd/store/store.h"

/* The planes the handlers reach through the env (kmsd.c wires them). */
typedef struct kms_keyring kms_keyring;
typedef struct kms_quorum kms_quorum;

#define KMS_RPC_MAX_TARGETS 3

#define KMS_RPC_CONTEXT_MAC_LEN 32
#define KMS_RPC_MAX_CONTEXTS 2 /* ReEncrypt: source and destination */

/* What the audit hook sees of a finished call (never key bytes, never the
 * encryption context: only its MAC under the audit context key). */
typedef struct kms_rpc_audit_record {
    const char *identity; /* "" if the caller was not authenticated */
    const char *peer;     /* gRPC's peer address ("ipv4:127.0.0.1:5555"), "" if unknown */
    const char *method;   /* full path */
    const char *key_name; /* "" if the call named no key */
    uint32_t key_version; /* 0 if none */
    int status;           /* the gRPC status about to be sent */
    int error;            /* the kms error behind it (0 on success) */
    uint64_t duration_us; /* from the call's arrival to now */
    /* MACs of the contexts the call named, in request order */
    uint8_t context_mac[KMS_RPC_MAX_CONTEXTS][KMS_RPC_CONTEXT_MAC_LEN];
    size_t n_context_macs;
} kms_rpc_audit_record;

/* MAC of a context's canonical encoding (kmsd/keyring/context.h) under the
 * audit context key. 0 or a negative kms error (the call then fails). */
typedef int (*kms_rpc_context_mac_fn)(void *ctx, const uint8_t *enc, size_t len,
                                      uint8_t mac[KMS_RPC_CONTEXT_MAC_LEN]) KMS_MUST_CHECK;

/* Method flag: a health probe. Its audit record is written like any
 * other, but a failure to write it does not turn the answer into
 * UNAVAILABLE: the probe reports the audit log's state (NOT_SERVING) and
 * carries no key material. */
#define KMS_RPC_HEALTH_PROBE 0x100u

/* Returns 0 if the record is durable; anything else fails the call closed
 * (UNAVAILABLE, no reply body). Called on worker threads, concurrently. */
typedef int (*kms_rpc_audit_fn)(void *ctx, const kms_rpc_audit_record *rec) KMS_MUST_CHECK;

typedef struct kms_rpc_method kms_rpc_method;

/* Everything the handlers use; borrowed, must outlive the server. */
typedef struct kms_rpc_env {
    const kms_rpc_method *methods; /* the RPC table (kmsd/rpc_table.c) */
    size_t n_methods;
    kms_keyring *keyring;
    kms_store *store;
    kms_policy *policy;
    kms_quorum *quorum;
    int insecure_dev;
    int cn_identities;      /* tls.cn_identities: certificates without a URI SAN are "cn:CN" */
    kms_rpc_audit_fn audit; /* NULL: no audit log */
    void *audit_ctx;
    kms_rpc_context_mac_fn audit_context_mac;           /* NULL: contexts are not recorded */
    int (*audit_ready)(void *audit_ctx) KMS_MUST_CHECK; /* 1 if the log is writable (Health) */
} kms_rpc_env;

/* One call in progress, as a handler sees it (opaque). */
typedef struct kms_rpc_call kms_rpc_call;

/* A key a request names and the permission it needs on that key. */
typedef struct kms_rpc_target {
    const char *key_name; /* by name, or NULL: by key_id */
    uint8_t key_id[KMS_KEY_ID_LEN];
    kms_perm perm;
} kms_rpc_target;

typedef int (*kms_rpc_targets_fn)(kms_rpc_call *c, const ProtobufCMessage *req, kms_rpc_target *t,
                                  size_t *n) KMS_MUST_CHECK;
typedef int (*kms_rpc_handler_fn)(kms_rpc_call *c, const ProtobufCMessage *req,
                                  ProtobufCMessage **resp) KMS_MUST_CHECK;

struct kms_rpc_method {
    const char *path;
    kms_perm perm; /* method-level: what the table requires */
    const ProtobufCMessageDescriptor *request;
    kms_rpc_targets_fn targets; /* NULL: the request names no key */
    kms_rpc_handler_fn handler; /* NULL: UNIMPLEMENTED */
    unsigned flags;             /* KMS_SERVER_SECRET_REQUEST, KMS_RPC_HEALTH_PROBE */
};

/* The wrapper: a kms_server_dispatch_fn whose app is a kms_rpc_env. */
void kms_rpc_dispatch(void *app, const kms_server_call *call, kms_server_reply *reply);

/* ---- for handlers ---------------------------------------------------------------- */

const kms_rpc_env *kms_rpc_env_of(const kms_rpc_call *c);
const kms_rpc_method *kms_rpc_method_of(const kms_rpc_call *c);
const char *kms_rpc_identity(const kms_rpc_call *c);
/* The key record of target i as authorized (name, id, backend exact). */
const kms_key_rec *kms_rpc_target_key(const kms_rpc_call *c, size_t i);

/* n zeroed bytes that live until the reply is packed, then are wiped and
 * freed. NULL on out of memory (then return KMS_ENOMEM). */
void *kms_rpc_alloc(kms_rpc_call *c, size_t n);
/* A NUL-terminated arena copy of s (NULL on out of memory). */
char *kms_rpc_strdup(kms_rpc_call *c, const char *s);
/* Hands s to the call: freed (wiped) after the reply is packed, so a
 * response may point at s->data. On failure s is freed and KMS_ENOMEM
 * returned. */
int kms_rpc_keep_secret(kms_rpc_call *c, kms_secret *s) KMS_MUST_CHECK;
/* Records the MAC of an encryption context the call names (its canonical
 * encoding, enc/len) for the audit record; at most KMS_RPC_MAX_CONTEXTS.
 * A no-op without an audit log. */
int kms_rpc_note_context(kms_rpc_call *c, const uint8_t *enc, size_t len) KMS_MUST_CHECK;
/* Records the key and version the call used, for the log and the audit. */
void kms_rpc_note_key(kms_rpc_call *c, const char *key_name, uint32_t version);
/* Answers with this status and fixed message instead of mapping the
 * handler's kms error (for protocols with their own codes, e.g. Health). */
void kms_rpc_set_status(kms_rpc_call *c, int grpc_status, const char *static_message);

#endif
