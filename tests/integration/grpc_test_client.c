/* gRPC C-core unary client for the integration tests (grpc_test_client.h). */
#include "grpc_test_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

struct kms_tc {
    grpc_channel *channel;
    int timeout_ms;
};

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = calloc(1, 65537);
    size_t n = buf ? fread(buf, 1, 65536, f) : 0;
    fclose(f);
    if (buf && n == 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

int kms_tc_open(const char *target, const char *ca_file, const char *cert_file,
                const char *key_file, kms_tc **out)
{
    kms_tc *c = calloc(1, sizeof(*c));
    char *ca = NULL, *cert = NULL, *key = NULL;
    grpc_channel_credentials *creds = NULL;
    int r = -1;

    if (c == NULL)
        return -1;
    c->timeout_ms = 10000;
    if (ca_file != NULL) {
        if ((ca = read_file(ca_file)) == NULL)
            goto out;
        if (cert_file != NULL &&
            ((cert = read_file(cert_file)) == NULL || (key = read_file(key_file)) == NULL))
            goto out;
        grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
        creds = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
    } else {
        creds = grpc_insecure_credentials_create();
    }
    if (creds == NULL)
        goto out;
    grpc_arg args[3];
    memset(args, 0, sizeof(args));
    args[0].type = GRPC_ARG_STRING;
    args[0].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
    args[0].value.string = (char *)"localhost";
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
    args[1].value.integer = 1;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[2].value.integer = 16 << 20;
    grpc_channel_args chargs = {.num_args = 3, .args = args};
    c->channel = grpc_channel_create(target, creds, &chargs);
    grpc_channel_credentials_release(creds);
    if (c->channel == NULL)
        goto out;
    r = 0;
out:
    free(ca);
    free(cert);
    free(key);
    if (r != 0) {
        free(c);
        return r;
    }
    *out = c;
    return 0;
}

void kms_tc_grpc_shutdown(void)
{
    grpc_shutdown();
    for (int i = 0; i < 500 && grpc_is_initialized(); i++)
        usleep(10 * 1000);
}

void kms_tc_close(kms_tc *c)
{
    if (c == NULL)
        return;
    grpc_channel_destroy(c->channel);
    free(c);
}

void kms_tc_set_timeout(kms_tc *c, int ms)
{
    c->timeout_ms = ms;
}

int kms_tc_call_raw(kms_tc *c, const char *method, const uint8_t *req, size_t len, uint8_t **out,
                    size_t *out_len, char *details, size_t cap)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                         gpr_time_from_millis(c->timeout_ms, GPR_TIMESPAN));
    grpc_slice path = grpc_slice_from_copied_string(method);
    grpc_call *call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq, path,
                                               NULL, deadline, NULL);
    grpc_slice_unref(path);

    grpc_slice body = grpc_slice_from_copied_buffer((const char *)req, len);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);
    grpc_byte_buffer *recv = NULL;
    grpc_metadata_array initial, trailing;
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice status_details = grpc_empty_slice();
    int result = KMS_TC_LOCAL_FAILURE;

    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &status_details;

    if (out)
        *out = NULL;
    if (out_len)
        *out_len = 0;
    if (call != NULL && grpc_call_start_batch(call, ops, 6, (void *)1, NULL) == GRPC_CALL_OK) {
        grpc_event ev =
            grpc_completion_queue_pluck(cq, (void *)1, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            result = (int)status;
            if (details && cap) {
                size_t n = GRPC_SLICE_LENGTH(status_details);
                if (n >= cap)
                    n = cap - 1;
                memcpy(details, GRPC_SLICE_START_PTR(status_details), n);
                details[n] = '\0';
            }
            if (recv != NULL && out != NULL) {
                grpc_byte_buffer_reader rd;
                if (grpc_byte_buffer_reader_init(&rd, recv)) {
                    grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
                    size_t n = GRPC_SLICE_LENGTH(all);
                    *out = malloc(n ? n : 1);
                    if (*out)
                        memcpy(*out, GRPC_SLICE_START_PTR(all), n);
                    if (out_len)
                        *out_len = n;
                    grpc_slice_unref(all);
                    grpc_byte_buffer_reader_destroy(&rd);
                }
            }
        }
    }
    if (recv)
        grpc_byte_buffer_destroy(recv);
    grpc_byte_buffer_destroy(send);
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailing);
    grpc_slice_unref(status_details);
    if (call)
        grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    return result;
}

int kms_tc_call(kms_tc *c, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, char *details,
                size_t cap)
{
    size_t n = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(n ? n : 1);
    uint8_t *reply = NULL;
    size_t reply_len = 0;
    if (resp)
        *resp = NULL;
    if (buf == NULL)
        return KMS_TC_LOCAL_FAILURE;
    protobuf_c_message_pack(req, buf);
    int status = kms_tc_call_raw(c, method, buf, n, &reply, &reply_len, details, cap);
    free(buf);
    if (status == GRPC_STATUS_OK && resp_desc && resp) {
        static const uint8_t empty[1];
        *resp = protobuf_c_message_unpack(resp_desc, NULL, reply_len, reply ? reply : empty);
        if (*resp == NULL)
            status = KMS_TC_LOCAL_FAILURE;
    }
    free(reply);
    return status;
}
