/* The RPC table: one row per method kmsd serves (rpc.h says what a row
 * holds). Everything else about a call is done by the wrapper in
 * server/rpc.c; the handlers live with their plane (data/, quorum/). */
#include "kmsd/rpc_table.h"

#include <pthread.h>

#include "grpc/health/v1/health.pb-c.h"
#include "kms/v1/kms.pb-c.h"
#include "kmsd/audit/handlers_audit.h"
#include "kmsd/data/handlers_data.h"
#include "kmsd/quorum/handlers_quorum.h"

#define KM "/kms.v1.KeyManagement/"
#define QU "/kms.v1.Quorum/"

static const kms_rpc_method methods[] = {
    {KM "GenerateDataKey", KMS_PERM_ENCRYPT, &kms__v1__generate_data_key_request__descriptor,
     kms_handlers_targets_by_name, kms_handlers_generate_data_key, 0},
    {KM "Encrypt", KMS_PERM_ENCRYPT, &kms__v1__encrypt_request__descriptor,
     kms_handlers_targets_by_name, kms_handlers_encrypt, KMS_SERVER_SECRET_REQUEST},
    {KM "Decrypt", KMS_PERM_DECRYPT, &kms__v1__decrypt_request__descriptor,
     kms_handlers_targets_decrypt, kms_handlers_decrypt, 0},
    {KM "ReEncrypt", KMS_PERM_REENCRYPT, &kms__v1__re_encrypt_request__descriptor,
     kms_handlers_targets_reencrypt, kms_handlers_reencrypt, 0},
    {KM "DescribeKey", KMS_PERM_DESCRIBE, &kms__v1__describe_key_request__descriptor,
     kms_handlers_targets_by_name, kms_handlers_describe_key, 0},
    {KM "ListKeys", KMS_PERM_LIST, &kms__v1__list_keys_request__descriptor, NULL,
     kms_handlers_list_keys, 0},
    {QU "ProposeAction", KMS_PERM_OFFICER, &kms__v1__propose_action_request__descriptor, NULL,
     kms_handlers_propose_action, 0},
    {QU "ApproveAction", KMS_PERM_OFFICER, &kms__v1__approve_action_request__descriptor, NULL,
     kms_handlers_approve_action, 0},
    {QU "GetAction", KMS_PERM_OFFICER, &kms__v1__get_action_request__descriptor, NULL,
     kms_handlers_get_action, 0},
    {QU "ListActions", KMS_PERM_OFFICER, &kms__v1__list_actions_request__descriptor, NULL,
     kms_handlers_list_actions, 0},
    {QU "CancelAction", KMS_PERM_OFFICER, &kms__v1__cancel_action_request__descriptor, NULL,
     kms_handlers_cancel_action, 0},
    {"/kms.v1.Audit/ReadAuditLog", KMS_PERM_AUDITOR, &kms__v1__read_audit_log_request__descriptor,
     NULL, kms_handlers_read_audit_log, 0},
    {"/grpc.health.v1.Health/Check", KMS_PERM_PEER,
     &grpc__health__v1__health_check_request__descriptor, NULL, kms_handlers_health_check,
     KMS_RPC_HEALTH_PROBE},
    {"/grpc.health.v1.Health/Watch", KMS_PERM_PEER,
     &grpc__health__v1__health_check_request__descriptor, NULL, NULL, 0},
};

#define N_METHODS (sizeof(methods) / sizeof(methods[0]))

/* The server's view of the same table: paths and flags, derived once. */
static kms_server_method server_methods[N_METHODS];
static pthread_once_t server_methods_once = PTHREAD_ONCE_INIT;

static void derive_server_methods(void)
{
    for (size_t i = 0; i < N_METHODS; i++) {
        server_methods[i].path = methods[i].path;
        server_methods[i].flags = methods[i].flags;
    }
}

const kms_rpc_method *kms_rpc_methods(size_t *n)
{
    if (n)
        *n = N_METHODS;
    return methods;
}

const kms_server_method *kms_rpc_server_methods(size_t *n)
{
    pthread_once(&server_methods_once, derive_server_methods);
    if (n)
        *n = N_METHODS;
    return server_methods;
}
