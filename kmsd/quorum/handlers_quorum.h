/* Quorum handlers: the Quorum rows of the RPC table. */
#ifndef KMS_HANDLERS_QUORUM_H
#define KMS_HANDLERS_QUORUM_H

#include "kmsd/server/rpc.h"

int kms_handlers_propose_action(kms_rpc_call *c, const ProtobufCMessage *req,
                                ProtobufCMessage **resp) KMS_MUST_CHECK;
int kms_handlers_approve_action(kms_rpc_call *c, const ProtobufCMessage *req,
                                ProtobufCMessage **resp) KMS_MUST_CHECK;
int kms_handlers_get_action(kms_rpc_call *c, const ProtobufCMessage *req,
                            ProtobufCMessage **resp) KMS_MUST_CHECK;
int kms_handlers_list_actions(kms_rpc_call *c, const ProtobufCMessage *req,
                              ProtobufCMessage **resp) KMS_MUST_CHECK;
int kms_handlers_cancel_action(kms_rpc_call *c, const ProtobufCMessage *req,
                               ProtobufCMessage **resp) KMS_MUST_CHECK;

#endif
