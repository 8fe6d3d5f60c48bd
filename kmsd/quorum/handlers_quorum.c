/* Handlers of kms.v1.Quorum: ProposeAction, ApproveAction, GetAction,
 * ListActions, CancelAction. The wrapper (kmsd/server/rpc.c, with the rows
 * of kmsd/rpc_table.c) has checked that the caller is an enrolled officer;
 * kmsd/quorum/quorum.c does the rest. Replies are built in the call's
 * arena. */
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "kmsd/quorum/quorum.h"
#include "kmsd/quorum/handlers_quorum.h"
#include "kms/v1/kms.pb-c.h"

#define LIST_MAX 256

static Kms__V1__ActionState wire_state(kms_action_state s)
{
    switch (s) {
    case KMS_ACTION_PENDING:
    case KMS_ACTION_EXECUTING: /* approved, finishing: still shown as pending */
        return KMS__V1__ACTION_STATE__PENDING;
    case KMS_ACTION_EXECUTED:
        return KMS__V1__ACTION_STATE__EXECUTED;
    case KMS_ACTION_CANCELLED:
        return KMS__V1__ACTION_STATE__CANCELLED;
    case KMS_ACTION_EXPIRED:
        return KMS__V1__ACTION_STATE__EXPIRED;
    case KMS_ACTION_FAILED:
        return KMS__V1__ACTION_STATE__FAILED;
    default:
        return KMS__V1__ACTION_STATE__ACTION_STATE_UNSPECIFIED;
    }
}

/* protobuf-c allocations from the call's arena (freed with the call). */
static void *arena_alloc(void *data, size_t size)
{
    return kms_rpc_alloc(data, size ? size : 1);
}

static void arena_free(void *data, void *p)
{
    (void)data;
    (void)p;
}

static void *arena_copy(kms_rpc_call *c, const void *src, size_t n)
{
    void *p = kms_rpc_alloc(c, n ? n : 1);
    if (p != NULL && n > 0)
        memcpy(p, src, n);
    return p;
}

/* The wire form of a stored action, built in the arena. */
static int to_wire(kms_rpc_call *c, const kms_action_rec *a, Kms__V1__Action **out)
{
    Kms__V1__Action *w = kms_rpc_alloc(c, sizeof(*w));
    if (w == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    kms__v1__action__init(w);
    const kms_rpc_env *env = kms_rpc_env_of(c);
    ProtobufCAllocator alloc = {arena_alloc, arena_free, c};
    w->id.data = arena_copy(c, a->id, sizeof(a->id));
    w->id.len = sizeof(a->id);
    w->digest.data = arena_copy(c, a->digest, sizeof(a->digest));
    w->digest.len = sizeof(a->digest);
    w->action_bytes.data = arena_copy(c, a->bytes, a->bytes_len);
    w->action_bytes.len = a->bytes_len;
    w->instance_id.data = arena_copy(c, kms_quorum_instance_id(env->quorum), KMS_INSTANCE_ID_LEN);
    w->instance_id.len = KMS_INSTANCE_ID_LEN;
    w->state = wire_state(a->state);
    w->body = kms__v1__action_body__unpack(&alloc, a->bytes_len, a->bytes);
    w->proposer = kms_rpc_strdup(c, a->proposer);
    w->threshold = a->threshold;
    w->expires_at = a->expires_at;
    w->created_at = a->created_at;
    w->result = kms_rpc_strdup(c, a->state == KMS_ACTION_EXECUTING ? "executing" : a->result);
    if (w->id.data == NULL || w->digest.data == NULL || w->action_bytes.data == NULL ||
        w->instance_id.data == NULL || w->body == NULL || w->proposer == NULL || w->result == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    if (a->n_approvals > 0) {
        w->approvals = kms_rpc_alloc(c, a->n_approvals * sizeof(*w->approvals));
        if (w->approvals == NULL)
            return kms_error_set(KMS_ENOMEM, "out of memory");
        for (size_t i = 0; i < a->n_approvals; i++) {
            Kms__V1__Approval *ap = kms_rpc_alloc(c, sizeof(*ap));
            if (ap == NULL)
                return kms_error_set(KMS_ENOMEM, "out of memory");
            kms__v1__approval__init(ap);
            ap->officer_id = kms_rpc_strdup(c, a->approvals[i].officer_id);
            ap->approved_at = a->approvals[i].approved_at;
            if (ap->officer_id == NULL)
                return kms_error_set(KMS_ENOMEM, "out of memory");
            w->approvals[i] = ap;
        }
        w->n_approvals = a->n_approvals;
    }
    *out = w;
    return KMS_OK;
}

/* Runs f's result through to_wire as the reply. */
static int reply(kms_rpc_call *c, int r, const kms_action_rec *a, ProtobufCMessage **out)
{
    Kms__V1__Action *w = NULL;
    if (r == 0)
        r = to_wire(c, a, &w);
    if (r == 0)
        *out = &w->base;
    return r;
}

int kms_handlers_propose_action(kms_rpc_call *c, const ProtobufCMessage *msg,
                                ProtobufCMessage **out)
{
    const Kms__V1__ProposeActionRequest *req = (const Kms__V1__ProposeActionRequest *)msg;
    const kms_rpc_env *env = kms_rpc_env_of(c);
    if (req->action == NULL)
        return kms_error_set(KMS_EINVAL, "no action");
    size_t n = protobuf_c_message_get_packed_size(&req->action->base);
    if (n == 0 || n > KMS_ACTION_BYTES_MAX)
        return kms_error_set(KMS_EINVAL, "action empty or too large");
    uint8_t *bytes = kms_rpc_alloc(c, n);
    kms_action_rec *a = kms_rpc_alloc(c, sizeof(*a));
    if (bytes == NULL || a == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    protobuf_c_message_pack(&req->action->base, bytes);
    int r = kms_quorum_propose(env->quorum, kms_rpc_identity(c), bytes, n, a);
    return reply(c, r, a, out);
}

int kms_handlers_approve_action(kms_rpc_call *c, const ProtobufCMessage *msg,
                                ProtobufCMessage **out)
{
    const Kms__V1__ApproveActionRequest *req = (const Kms__V1__ApproveActionRequest *)msg;
    const kms_rpc_env *env = kms_rpc_env_of(c);
    kms_action_rec *a = kms_rpc_alloc(c, sizeof(*a));
    if (a == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    int r = kms_quorum_approve(env->quorum, kms_rpc_identity(c), req->action_id.data,
                               req->action_id.len, req->signature.data, req->signature.len, a);
    return reply(c, r, a, out);
}

int kms_handlers_get_action(kms_rpc_call *c, const ProtobufCMessage *msg, ProtobufCMessage **out)
{
    const Kms__V1__GetActionRequest *req = (const Kms__V1__GetActionRequest *)msg;
    kms_action_rec *a = kms_rpc_alloc(c, sizeof(*a));
    if (a == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    int r = kms_quorum_get(kms_rpc_env_of(c)->quorum, req->action_id.data, req->action_id.len, a);
    return reply(c, r, a, out);
}

int kms_handlers_cancel_action(kms_rpc_call *c, const ProtobufCMessage *msg, ProtobufCMessage **out)
{
    const Kms__V1__CancelActionRequest *req = (const Kms__V1__CancelActionRequest *)msg;
    kms_action_rec *a = kms_rpc_alloc(c, sizeof(*a));
    if (a == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    int r = kms_quorum_cancel(kms_rpc_env_of(c)->quorum, kms_rpc_identity(c), req->action_id.data,
                              req->action_id.len, a);
    return reply(c, r, a, out);
}

int kms_handlers_list_actions(kms_rpc_call *c, const ProtobufCMessage *msg, ProtobufCMessage **out)
{
    const Kms__V1__ListActionsRequest *req = (const Kms__V1__ListActionsRequest *)msg;
    const kms_rpc_env *env = kms_rpc_env_of(c);
    uint8_t(*ids)[KMS_ACTION_ID_LEN] = kms_rpc_alloc(c, LIST_MAX * KMS_ACTION_ID_LEN);
    Kms__V1__ListActionsResponse *resp = kms_rpc_alloc(c, sizeof(*resp));
    kms_action_rec *a = kms_malloc(sizeof(*a));
    size_t n = 0;
    int r = ids && resp && a
                ? env->store->ops->action_ids(env->store, req->pending_only != 0, ids, LIST_MAX, &n)
                : kms_error_set(KMS_ENOMEM, "out of memory");
    if (r == 0) {
        kms__v1__list_actions_response__init(resp);
        if (n > 0 && (resp->actions = kms_rpc_alloc(c, n * sizeof(*resp->actions))) == NULL)
            r = kms_error_set(KMS_ENOMEM, "out of memory");
    }
    for (size_t i = 0; r == 0 && i < n; i++) {
        if ((r = env->store->ops->action_get(env->store, ids[i], a)) == 0 &&
            (r = to_wire(c, a, &resp->actions[i])) == 0)
            resp->n_actions++;
    }
    kms_free(a);
    if (r == 0)
        *out = &resp->base;
    return r;
}
