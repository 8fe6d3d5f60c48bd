/* libkmsclient: the Quorum service (propose, approve, get, list, cancel)
 * and the local check of an action's digest (docs/approvals.md). */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "base/approval.h"
#include "client_internal.h"
#include "kms/v1/kms.pb-c.h"

#define QU "/kms.v1.Quorum/"

KMS_CLIENT_API void kms_client_action_free(kms_client_action *a)
{
    if (a == NULL)
        return;
    free(a->proposer);
    free(a->result);
    free(a->action_bytes);
    for (size_t i = 0; i < a->n_approvals; i++)
        free(a->approvals[i].officer_id);
    free(a->approvals);
    memset(a, 0, sizeof(*a));
}

KMS_CLIENT_API void kms_client_action_list_free(kms_client_action *a, size_t n)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        kms_client_action_free(&a[i]);
    free(a);
}

/* Copies a wire Action; on failure *out is left empty. */
static int action_copy(const Kms__V1__Action *w, kms_client_action *out)
{
    kms_client_action a;
    memset(&a, 0, sizeof(a));
    if (w->id.len != 16 || w->digest.len != 32 || w->instance_id.len != 16 ||
        w->action_bytes.len == 0)
        return KMS_CLIENT_EREPLY;
    memcpy(a.id, w->id.data, 16);
    memcpy(a.digest, w->digest.data, 32);
    memcpy(a.instance_id, w->instance_id.data, 16);
    a.state = (int)w->state;
    a.threshold = w->threshold;
    a.created_at = w->created_at;
    a.expires_at = w->expires_at;
    a.proposer = strdup(w->proposer);
    a.result = strdup(w->result);
    a.action_bytes = malloc(w->action_bytes.len);
    a.approvals = calloc(w->n_approvals ? w->n_approvals : 1, sizeof(*a.approvals));
    if (a.proposer == NULL || a.result == NULL || a.action_bytes == NULL || a.approvals == NULL) {
        kms_client_action_free(&a);
        return KMS_CLIENT_ENOMEM;
    }
    memcpy(a.action_bytes, w->action_bytes.data, w->action_bytes.len);
    a.action_bytes_len = w->action_bytes.len;
    for (size_t i = 0; i < w->n_approvals; i++) {
        if ((a.approvals[i].officer_id = strdup(w->approvals[i]->officer_id)) == NULL) {
            kms_client_action_free(&a);
            return KMS_CLIENT_ENOMEM;
        }
        a.approvals[i].approved_at = w->approvals[i]->approved_at;
        a.n_approvals++;
    }
    *out = a;
    return KMS_CLIENT_OK;
}

/* One call whose reply is an Action. */
static int action_call(kms_client *c, const char *method, const ProtobufCMessage *req,
                       kms_client_action *out, kms_client_error *err)
{
    ProtobufCMessage *m = NULL;
    if (c == NULL || out == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "NULL argument");
    int r = kms_client_call(c, method, req, &kms__v1__action__descriptor, NULL, &m, err);
    if (r != 0)
        return r;
    r = action_copy((const Kms__V1__Action *)m, out);
    protobuf_c_message_free_unpacked(m, NULL);
    if (r != 0)
        return kms_client_fail(err, r, "reply could not be decoded");
    return KMS_CLIENT_OK;
}

KMS_CLIENT_API int kms_client_propose(kms_client *c, const uint8_t *body, size_t len,
                                      kms_client_action *out, kms_client_error *err)
{
    if (body == NULL || len == 0 || len > 16384)
        return kms_client_fail(err, KMS_CLIENT_EARG, "action missing or too large");
    Kms__V1__ActionBody *b = kms__v1__action_body__unpack(NULL, len, body);
    if (b == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "action is not a kms.v1.ActionBody");
    Kms__V1__ProposeActionRequest req = KMS__V1__PROPOSE_ACTION_REQUEST__INIT;
    req.action = b;
    int r = action_call(c, QU "ProposeAction", &req.base, out, err);
    protobuf_c_message_free_unpacked(&b->base, NULL);
    return r;
}

KMS_CLIENT_API int kms_client_approve(kms_client *c, const uint8_t id[16], const uint8_t *sig,
                                      size_t sig_len, kms_client_action *out, kms_client_error *err)
{
    if (id == NULL || sig == NULL || sig_len == 0 || sig_len > 256)
        return kms_client_fail(err, KMS_CLIENT_EARG, "action id or signature missing");
    Kms__V1__ApproveActionRequest req = KMS__V1__APPROVE_ACTION_REQUEST__INIT;
    req.action_id.data = (uint8_t *)id;
    req.action_id.len = 16;
    req.signature.data = (uint8_t *)sig;
    req.signature.len = sig_len;
    return action_call(c, QU "ApproveAction", &req.base, out, err);
}

KMS_CLIENT_API int kms_client_get_action(kms_client *c, const uint8_t id[16],
                                         kms_client_action *out, kms_client_error *err)
{
    if (id == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "no action id");
    Kms__V1__GetActionRequest req = KMS__V1__GET_ACTION_REQUEST__INIT;
    req.action_id.data = (uint8_t *)id;
    req.action_id.len = 16;
    return action_call(c, QU "GetAction", &req.base, out, err);
}

KMS_CLIENT_API int kms_client_cancel_action(kms_client *c, const uint8_t id[16],
                                            kms_client_action *out, kms_client_error *err)
{
    if (id == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "no action id");
    Kms__V1__CancelActionRequest req = KMS__V1__CANCEL_ACTION_REQUEST__INIT;
    req.action_id.data = (uint8_t *)id;
    req.action_id.len = 16;
    return action_call(c, QU "CancelAction", &req.base, out, err);
}

KMS_CLIENT_API int kms_client_list_actions(kms_client *c, int pending_only, kms_client_action **out,
                                           size_t *n, kms_client_error *err)
{
    if (c == NULL || out == NULL || n == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "NULL argument");
    Kms__V1__ListActionsRequest req = KMS__V1__LIST_ACTIONS_REQUEST__INIT;
    req.pending_only = pending_only != 0;
    ProtobufCMessage *m = NULL;
    int r = kms_client_call(c, QU "ListActions", &req.base,
                            &kms__v1__list_actions_response__descriptor, NULL, &m, err);
    if (r != 0)
        return r;
    Kms__V1__ListActionsResponse *resp = (Kms__V1__ListActionsResponse *)m;
    kms_client_action *list = calloc(resp->n_actions ? resp->n_actions : 1, sizeof(*list));
    size_t got = 0;
    r = list != NULL ? KMS_CLIENT_OK : KMS_CLIENT_ENOMEM;
    for (size_t i = 0; r == 0 && i < resp->n_actions; i++)
        if ((r = action_copy(resp->actions[i], &list[i])) == 0)
            got++;
    protobuf_c_message_free_unpacked(m, NULL);
    if (r != 0) {
        kms_client_action_list_free(list, got);
        return kms_client_fail(err, r, "reply could not be decoded");
    }
    *out = list;
    *n = got;
    return KMS_CLIENT_OK;
}

KMS_CLIENT_API int kms_client_action_verify_digest(const kms_client_action *a)
{
    if (a == NULL || a->action_bytes == NULL)
        return KMS_CLIENT_EARG;
    uint8_t d[KMS_APPROVAL_DIGEST_LEN];
    if (kms_approval_digest(a->instance_id, a->id, a->action_bytes, a->action_bytes_len,
                            a->expires_at, d) != KMS_OK)
        return KMS_CLIENT_EREPLY;
    return CRYPTO_memcmp(d, a->digest, sizeof(d)) == 0 ? KMS_CLIENT_OK : KMS_CLIENT_EREPLY;
}
