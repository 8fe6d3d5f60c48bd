/* The gRPC server loop on the gRPC C core: one completion queue, a fixed
 * pool of worker threads, registered methods whose request payload arrives
 * with the new-call event, and the shutdown order the core requires
 * (docs/api.md).
 *
 * The server knows nothing of protobuf or of kms semantics: for each call
 * it hands the method index, the call and the request bytes to a dispatch
 * function and sends back what that function answers, in one batch.
 *
 * Request bytes: the server reads the payload into one contiguous buffer
 * (a copy when gRPC delivered several slices). After dispatch it wipes that
 * copy and, for methods flagged KMS_SERVER_SECRET_REQUEST, the payload's own
 * slices too (OPENSSL_cleanse). Reply bytes: the dispatch function passes a
 * malloc'ed buffer that the server turns into a slice without copying
 * (grpc_slice_new_with_len); when gRPC releases the slice, the buffer is
 * wiped and freed. What gRPC and OpenSSL copy internally on the way (HTTP/2
 * frames, TLS records) cannot be wiped from here; kmsd keeps it out of core
 * files by disabling dumps. */
#ifndef KMS_SERVER_H
#define KMS_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "kms/error.h"

/* The request may carry plaintext (Encrypt): wipe gRPC's payload slices. */
#define KMS_SERVER_SECRET_REQUEST 0x1u

typedef struct kms_server_method {
    const char *path; /* "/kms.v1.KeyManagement/Encrypt" */
    unsigned flags;   /* KMS_SERVER_SECRET_REQUEST */
} kms_server_method;

/* One incoming call, as the dispatch function sees it. */
typedef struct kms_server_call {
    grpc_call *call;       /* borrowed: for the auth context */
    size_t method;         /* index into kms_server_config.methods */
    gpr_timespec deadline; /* the client's deadline (infinite if none) */
    const uint8_t *req;    /* request bytes; NULL if the client sent none */
    size_t req_len;
} kms_server_call;

/* What the dispatch function answers. status is a grpc_status_code;
 * message the status details, copied when the reply is sent (a static
 * string, or message_buf for one made for this call). body (malloc'ed,
 * body_len bytes, may be NULL for an empty message) is sent only when
 * status is GRPC_STATUS_OK; the server owns it from then on and wipes it
 * when gRPC is done with it, whatever the status. */
typedef struct kms_server_reply {
    grpc_status_code status;
    const char *message;
    char message_buf[256];
    uint8_t *body;
    size_t body_len;
} kms_server_reply;

typedef void (*kms_server_dispatch_fn)(void *app, const kms_server_call *call,
                                       kms_server_reply *reply);

typedef struct kms_server_config {
    const char *listen; /* "host:port"; port 0 picks a free port */
    /* mutual TLS: PEM strings, NUL-terminated; all NULL with insecure */
    const char *cert_pem;
    const char *key_pem;
    const char *client_ca_pem;
    int insecure; /* plaintext listener (--insecure-dev only) */
    /* Optional, with mutual TLS: called during every handshake, after the
     * chain verified against client_ca_pem, with the client's certificate
     * (PEM); nonzero refuses the handshake (the client sees UNAVAILABLE).
     * Called on gRPC's threads, concurrently. The listener uses gRPC's TLS
     * credentials (external verifier) with a file watcher over memory
     * files, so kms_server_reload_tls can replace the material. */
    int (*verify_peer)(void *verify_app, const char *leaf_pem) KMS_MUST_CHECK;
    void *verify_app;
    unsigned workers;
    size_t max_recv; /* bytes; larger requests get RESOURCE_EXHAUSTED from gRPC */
    size_t max_send;
    /* Limits on every connection, authenticated or not (0: gRPC's default). */
    unsigned max_concurrent_streams; /* GRPC_ARG_MAX_CONCURRENT_STREAMS */
    unsigned handshake_timeout_ms;   /* GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS */
    unsigned idle_timeout_ms;        /* GRPC_ARG_MAX_CONNECTION_IDLE_MS */
    const kms_server_method *methods;
    size_t n_methods;
    kms_server_dispatch_fn dispatch; /* called on worker threads, concurrently */
    void *app;
} kms_server_config;

typedef struct kms_server kms_server;

/* Creates the server, binds, starts the workers and begins serving.
 * grpc_init() must have been called. *port receives the bound port.
 * KMS_EINVAL for a bad configuration (with a detail), KMS_EUNAVAIL if the
 * address cannot be bound. The config (and the strings it points to, except
 * the PEM strings, which gRPC copies) must outlive the server. */
int kms_server_start(const kms_server_config *cfg, kms_server **out, int *port) KMS_MUST_CHECK;

/* Replaces the server certificate chain, its key and the client CA (PEM,
 * NUL-terminated) for new handshakes: gRPC's file watcher sees them within
 * a second; connections already up and their calls are untouched. They are
 * checked first (the key matches the certificate, the CA parses):
 * KMS_EINVAL with a detail, and the old material stays. KMS_EINVAL on an
 * insecure server. Not concurrently with itself. */
int kms_server_reload_tls(kms_server *s, const char *cert_pem, const char *key_pem,
                          const char *ca_pem) KMS_MUST_CHECK;

/* Graceful stop, in the order the core requires: no new requests are
 * posted, the server shuts down and cancels the calls in flight, the queue
 * is drained and the workers joined. Blocks until done. Idempotent; call
 * from one thread (not a worker). */
void kms_server_shutdown(kms_server *s);

/* Shuts down if needed and frees everything. NULL-safe. grpc_shutdown()
 * may be called afterwards. */
void kms_server_destroy(kms_server *s);

#endif
