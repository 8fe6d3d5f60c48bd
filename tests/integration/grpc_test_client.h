/* A small gRPC C-core client for kmsd's integration tests: unary calls over
 * mutual TLS (or plaintext), with protobuf-c messages or raw bytes.
 *
 *   grpc_init();
 *   kms_tc *c;
 *   kms_tc_open("127.0.0.1:PORT", "pki/ca.pem", "pki/app.pem", "pki/app-key.pem", &c);
 *   int status = kms_tc_call(c, "/kms.v1.KeyManagement/Encrypt", &req.base,
 *                            &kms__v1__encrypt_response__descriptor, &resp, msg, sizeof(msg));
 *   protobuf_c_message_free_unpacked(resp, NULL);
 *   kms_tc_close(c);
 *   kms_tc_grpc_shutdown();
 *
 * The server certificate is for "localhost"; the channel overrides the
 * TLS target name accordingly. Each channel has its own subchannel pool, so
 * channels with different client certificates never share a connection. A
 * kms_tc may be used from several threads at once. */
#ifndef KMS_GRPC_TEST_CLIENT_H
#define KMS_GRPC_TEST_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#define KMS_TC_LOCAL_FAILURE (-1)

typedef struct kms_tc kms_tc;

/* ca_file NULL: a plaintext channel. cert_file/key_file NULL: TLS without
 * a client certificate. 0 on success. */
int kms_tc_open(const char *target, const char *ca_file, const char *cert_file,
                const char *key_file, kms_tc **out);
void kms_tc_close(kms_tc *c);

/* grpc_shutdown, then waits (at most 5 s) until gRPC has cleaned up: a
 * connection still closing holds a reference of its own and cleans up later
 * on a detached gRPC thread, which a test exiting right away would race
 * (ASan would report gRPC's OpenSSL state as leaked). */
void kms_tc_grpc_shutdown(void);

/* Per-call deadline in milliseconds (default 10000). */
void kms_tc_set_timeout(kms_tc *c, int ms);

/* Sends req (packed) to method and waits for the status. On GRPC_STATUS_OK
 * with a reply, *resp (if resp_desc and resp are given) is the unpacked
 * reply, to free with protobuf_c_message_free_unpacked(*resp, NULL); else
 * *resp is NULL. Returns the gRPC status, or KMS_TC_LOCAL_FAILURE. The
 * status details go to details (cap bytes) when given. */
int kms_tc_call(kms_tc *c, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, char *details,
                size_t cap);

/* The same with raw request bytes; the reply bytes (malloc'ed, may be NULL
 * for an empty reply) go to *out / *out_len when given. */
int kms_tc_call_raw(kms_tc *c, const char *method, const uint8_t *req, size_t len, uint8_t **out,
                    size_t *out_len, char *details, size_t cap);

#endif
