/* libkmsclient: one unary gRPC call, errors and status names. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <openssl/crypto.h>

#include "base/pb_alloc.h"
#include "client_internal.h"

int kms_client_fail(kms_client_error *err, int code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
    }
    return code;
}

static const char *const status_names[] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

KMS_CLIENT_API const char *kms_client_status_name(int status)
{
    switch (status) {
    case KMS_CLIENT_EARG:
        return "EARG";
    case KMS_CLIENT_EFILE:
        return "EFILE";
    case KMS_CLIENT_ENOMEM:
        return "ENOMEM";
    case KMS_CLIENT_EREPLY:
        return "EREPLY";
    case KMS_CLIENT_ENOTARCHIVE:
        return "ENOTARCHIVE";
    case KMS_CLIENT_EVERSION:
        return "EVERSION";
    case KMS_CLIENT_ECONTEXT:
        return "ECONTEXT";
    case KMS_CLIENT_ETRUNCATED:
        return "ETRUNCATED";
    case KMS_CLIENT_ECORRUPT:
        return "ECORRUPT";
    case KMS_CLIENT_EIO:
        return "EIO";
    default:
        if (status >= 0 && (size_t)status < sizeof(status_names) / sizeof(status_names[0]))
            return status_names[status];
        return "UNKNOWN_STATUS";
    }
}

/* Copies the reply into one wiped-on-free buffer; NULL for an empty reply. */
static int read_reply(grpc_byte_buffer *recv, uint8_t **out, size_t *out_len)
{
    grpc_byte_buffer_reader rd;
    *out = NULL;
    *out_len = 0;
    if (!grpc_byte_buffer_reader_init(&rd, recv))
        return KMS_CLIENT_EREPLY;
    grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    size_t n = GRPC_SLICE_LENGTH(all);
    int r = KMS_CLIENT_OK;
    if (n > 0) {
        *out = kms_pb_wiping_alloc(n);
        if (*out == NULL)
            r = KMS_CLIENT_ENOMEM;
        else
            memcpy(*out, GRPC_SLICE_START_PTR(all), n);
        /* The slice is ours alone after readall: wipe it too. */
        OPENSSL_cleanse(GRPC_SLICE_START_PTR(all), n);
    }
    grpc_slice_unref(all);
    if (r == KMS_CLIENT_OK)
        *out_len = n;
    return r;
}

/* Runs the whole unary batch on a private completion queue. */
static int unary(kms_client *c, const char *method, grpc_byte_buffer *send, grpc_byte_buffer **recv,
                 grpc_status_code *status, grpc_slice *details)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                         gpr_time_from_millis(c->timeout_ms, GPR_TIMESPAN));
    grpc_slice path = grpc_slice_from_copied_string(method);
    grpc_call *call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq, path,
                                               NULL, deadline, NULL);
    grpc_slice_unref(path);
    grpc_metadata_array initial, trailing;
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);
    int r = KMS_CLIENT_ENOMEM;

    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[5].data.recv_status_on_client.status = status;
    ops[5].data.recv_status_on_client.status_details = details;

    if (call != NULL && grpc_call_start_batch(call, ops, 6, (void *)1, NULL) == GRPC_CALL_OK) {
        grpc_event ev =
            grpc_completion_queue_pluck(cq, (void *)1, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        r = ev.type == GRPC_OP_COMPLETE && ev.success ? KMS_CLIENT_OK : KMS_CLIENT_UNAVAILABLE;
    }
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailing);
    if (call != NULL)
        grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    return r;
}

int kms_client_call(kms_client *c, const char *method, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *resp_desc, ProtobufCAllocator *alloc,
                    ProtobufCMessage **resp, kms_client_error *err)
{
    size_t n = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = kms_pb_wiping_alloc(n ? n : 1);
    if (buf == NULL)
        return kms_client_fail(err, KMS_CLIENT_ENOMEM, "out of memory");
    protobuf_c_message_pack(req, buf);
    grpc_slice body = grpc_slice_from_copied_buffer((const char *)buf, n);
    kms_pb_wiping_free(buf);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);

    grpc_byte_buffer *recv = NULL;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    int r = unary(c, method, send, &recv, &status, &details);
    grpc_byte_buffer_destroy(send);

    if (r != KMS_CLIENT_OK) {
        r = kms_client_fail(err, r, "call %s could not run", method);
    } else if (status != GRPC_STATUS_OK) {
        int len = (int)GRPC_SLICE_LENGTH(details);
        if (len > KMS_CLIENT_MESSAGE_MAX - 1)
            len = KMS_CLIENT_MESSAGE_MAX - 1;
        r = kms_client_fail(err, (int)status, "%.*s", len,
                            (const char *)GRPC_SLICE_START_PTR(details));
        if (len == 0)
            r = kms_client_fail(err, (int)status, "%s", kms_client_status_name((int)status));
    } else {
        uint8_t *reply = NULL;
        size_t reply_len = 0;
        static const uint8_t empty[1];
        if (recv == NULL) {
            r = kms_client_fail(err, KMS_CLIENT_EREPLY, "no reply message");
        } else if ((r = read_reply(recv, &reply, &reply_len)) != KMS_CLIENT_OK) {
            r = kms_client_fail(err, r, "reply could not be read");
        } else {
            *resp = protobuf_c_message_unpack(resp_desc, alloc, reply_len, reply ? reply : empty);
            if (*resp == NULL)
                r = kms_client_fail(err, KMS_CLIENT_EREPLY, "reply could not be decoded");
        }
        kms_pb_wiping_free(reply);
    }
    if (recv != NULL)
        grpc_byte_buffer_destroy(recv);
    grpc_slice_unref(details);
    return r;
}
