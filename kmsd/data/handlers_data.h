/* Data-plane handlers: the KeyManagement and Health rows of the RPC table. */
#ifndef KMS_HANDLERS_DATA_H
#define KMS_HANDLERS_DATA_H

#include "kmsd/server/rpc.h"

/* Targets: by_name names the request's `key_name` field with the method's
 * permission; decrypt names the key inside the blob; reencrypt names the
 * blob's key (decrypt and reencrypt) and the destination (reencrypt). */

int kms_handlers_targets_by_name(kms_rpc_call *c, const ProtobufCMessage *req, kms_rpc_target *t,
                                 size_t *n) KMS_MUST_CHECK;
int kms_handlers_targets_decrypt(kms_rpc_call *c, const ProtobufCMessage *req, kms_rpc_target *t,
                                 size_t *n) KMS_MUST_CHECK;
int kms_handlers_targets_reencrypt(kms_rpc_call *c, const ProtobufCMessage *req, kms_rpc_target *t,
                                   size_t *n) KMS_MUST_CHECK;
int kms_handlers_generate_data_key(kms_rpc_call *c, const ProtobufCMessage *req,
                                   ProtobufCMessage **resp) KMS_MUST_CHECK;
int kms_handlers_encrypt(kms_rpc_call *c, const ProtobufCMessage *req,
                         ProtobufCMessage **resp) KMS_MUST_CHECK;
int kms_handlers_decrypt(kms_rpc_call *c, const ProtobufCMessage *req,
                         ProtobufCMessage **resp) KMS_MUST_CHECK;
int kms_handlers_reencrypt(kms_rpc_call *c, const ProtobufCMessage *req,
                           ProtobufCMessage **resp) KMS_MUST_CHECK;
int kms_handlers_describe_key(kms_rpc_call *c, const ProtobufCMessage *req,
                              ProtobufCMessage **resp) KMS_MUST_CHECK;
int kms_handlers_list_keys(kms_rpc_call *c, const ProtobufCMessage *req,
                           ProtobufCMessage **resp) KMS_MUST_CHECK;
int kms_handlers_health_check(kms_rpc_call *c, const ProtobufCMessage *req,
                              ProtobufCMessage **resp) KMS_MUST_CHECK;

#endif
