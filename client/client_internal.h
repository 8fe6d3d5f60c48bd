/* libkmsclient internals shared by its files; not installed. */
#ifndef KMS_CLIENT_INTERNAL_H
#define KMS_CLIENT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

#include "kms/error.h"
#include "kms/client.h"

struct kms_client {
    grpc_channel *channel;
    int timeout_ms;
};

/* Fills *err (when given) with code and a printf-style message; returns code. */
int kms_client_fail(kms_client_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4))) KMS_MUST_CHECK;

/* Sends req to method and waits for the status (at most the client's
 * timeout). On KMS_CLIENT_OK *resp is the reply unpacked with alloc (free it
 * with protobuf_c_message_free_unpacked(*resp, alloc)). The reply bytes are
 * wiped after unpacking. */
int kms_client_call(kms_client *c, const char *method, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *resp_desc, ProtobufCAllocator *alloc,
                    ProtobufCMessage **resp, kms_client_error *err) KMS_MUST_CHECK;

/* Locked (mlock), not dumped (MADV_DONTDUMP) memory for plaintext; NULL on
 * failure. kms_client_secure_free wipes it. n may be 0 (one byte is kept). */
uint8_t *kms_client_secure_alloc(size_t n);
void kms_client_secure_free(uint8_t *p);

/* The encryption-context map entries of any request message: every
 * map<string,string> entry type has the layout {base, key, value}. Builds n
 * entries of type desc in one allocation whose strings point into ctx (no
 * copies); *out is an array of n pointers, freed with free(). */
int kms_client_context_entries(const ProtobufCMessageDescriptor *desc,
                               const kms_client_context_entry *ctx, size_t n, void ***out,
                               kms_client_error *err) KMS_MUST_CHECK;

#endif
