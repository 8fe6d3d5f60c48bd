/* The one wrapper every call goes through (rpc.h). */
#include "base/alloc.h"
#include "kmsd/server/rpc.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/status.h>
#include <grpc/support/time.h>

#include "grpc/health/v1/health.pb-c.h"
#include "base/log.h"
#include "base/pb_alloc.h"
#include "base/pb_check.h"
#include "kms/v1/kms.pb-c.h"
#include "kmsd/metrics/metrics.h"

#define MAX_SECRETS 4
#define LOG_FIELD_MAX 160

/* ---- per-call memory: wiped when freed ---------------------------------------------- */

/* Header before each block; max_align_t keeps the payload aligned. */
struct block {
    struct block *next;
    size_t size;
    alignas(max_align_t) unsigned char data[];
};

struct kms_rpc_call {
    const kms_rpc_env *env;
    const kms_rpc_method *method;
    char identity[KMS_IDENTITY_MAX + 1];
    struct block *arena;
    kms_secret *secrets[MAX_SECRETS];
    size_t n_secrets;
    kms_key_rec keys[KMS_RPC_MAX_TARGETS];
    size_t n_keys;
    char key_name[KMS_KEY_NAME_MAX + 1];
    uint32_t key_version;
    uint8_t context_mac[KMS_RPC_MAX_CONTEXTS][KMS_RPC_CONTEXT_MAC_LEN];
    size_t n_context_macs;
    int status_set;
    int status;
    const char *status_message;
};

void *kms_rpc_alloc(kms_rpc_call *c, size_t n)
{
    if (c == NULL || n > SIZE_MAX - sizeof(struct block))
        return NULL;
    struct block *b = kms_calloc(1, sizeof(*b) + n);
    if (b == NULL)
        return NULL;
    b->size = n;
    b->next = c->arena;
    c->arena = b;
    return b->data;
}

char *kms_rpc_strdup(kms_rpc_call *c, const char *s)
{
    size_t n = strlen(s);
    char *p = kms_rpc_alloc(c, n + 1);
    if (p != NULL)
        memcpy(p, s, n);
    return p;
}

int kms_rpc_keep_secret(kms_rpc_call *c, kms_secret *s)
{
    if (c->n_secrets == MAX_SECRETS) {
        kms_secret_free(s);
        return kms_error_set(KMS_ENOMEM, "rpc: too many secrets in one call");
    }
    c->secrets[c->n_secrets++] = s;
    return KMS_OK;
}

static void call_release(kms_rpc_call *c)
{
    while (c->arena) {
        struct block *b = c->arena;
        c->arena = b->next;
        OPENSSL_cleanse(b->data, b->size);
        kms_free(b);
    }
    for (size_t i = 0; i < c->n_secrets; i++)
        kms_secret_free(c->secrets[i]);
    c->n_secrets = 0;
}

/* ---- accessors ----------------------------------------------------------------------- */

const kms_rpc_env *kms_rpc_env_of(const kms_rpc_call *c)
{
    return c->env;
}

const kms_rpc_method *kms_rpc_method_of(const kms_rpc_call *c)
{
    return c->method;
}

const char *kms_rpc_identity(const kms_rpc_call *c)
{
    return c->identity;
}

const kms_key_rec *kms_rpc_target_key(const kms_rpc_call *c, size_t i)
{
    return i < c->n_keys ? &c->keys[i] : NULL;
}

void kms_rpc_note_key(kms_rpc_call *c, const char *key_name, uint32_t version)
{
    if (key_name != NULL) {
        size_t n = strnlen(key_name, sizeof(c->key_name) - 1);
        memcpy(c->key_name, key_name, n);
        c->key_name[n] = '\0';
    }
    c->key_version = version;
}

int kms_rpc_note_context(kms_rpc_call *c, const uint8_t *enc, size_t len)
{
    if (c->env->audit_context_mac == NULL)
        return KMS_OK;
    if (c->n_context_macs >= KMS_RPC_MAX_CONTEXTS)
        return kms_error_set(KMS_EINTERNAL, "rpc: more contexts than the audit record holds");
    KMS_GUARD(
        c->env->audit_context_mac(c->env->audit_ctx, enc, len, c->context_mac[c->n_context_macs]));
    c->n_context_macs++;
    return KMS_OK;
}

void kms_rpc_set_status(kms_rpc_call *c, int grpc_status, const char *static_message)
{
    c->status_set = 1;
    c->status = grpc_status;
    c->status_message = static_message;
}

/* ---- authentication ---------------------------------------------------------------- */

/* The caller's identity (rules: identity.h). This part only reads the
 * call's auth context into a flat list; kms_identity_from_peer decides. */
static int authenticate(const kms_rpc_env *env, grpc_call *call, char *out, size_t cap)
{
    kms_peer_property *props = NULL;
    size_t n = 0, i = 0;
    int r;
    grpc_auth_context *ctx = grpc_call_auth_context(call);
    if (ctx == NULL)
        return kms_error_set(KMS_EDENIED, "no auth context");

    grpc_auth_property_iterator it = grpc_auth_context_property_iterator(ctx);
    while (grpc_auth_property_iterator_next(&it) != NULL)
        n++;
    if (n > 0 && (props = kms_calloc(n, sizeof(*props))) == NULL) {
        r = kms_error_set(KMS_ENOMEM, "out of memory");
        goto out;
    }
    it = grpc_auth_context_property_iterator(ctx);
    for (const grpc_auth_property *p; i < n && (p = grpc_auth_property_iterator_next(&it)) != NULL;
         i++) {
        props[i].name = p->name;
        props[i].value = p->value;
        props[i].value_len = p->value_length;
    }
    unsigned flags = (env->insecure_dev ? KMS_IDENTITY_INSECURE_DEV : 0u) |
                     (env->cn_identities ? KMS_IDENTITY_CN : 0u);
    r = kms_identity_from_peer(grpc_auth_context_peer_is_authenticated(ctx), flags, props, i, out,
                               cap);
out:
    kms_free(props);
    grpc_auth_context_release(ctx);
    return r;
}

/* ---- the wrapper ---------------------------------------------------------------------- */

/* A printable, bounded copy of s for a log line. */
static const char *log_safe(const char *s, char *buf, size_t cap)
{
    size_t i = 0;
    for (; s != NULL && s[i] != '\0' && i + 1 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        buf[i] = ch < 0x20 || ch >= 0x7f ? '?' : (char)ch;
    }
    buf[i] = '\0';
    return buf;
}

static int method_allowed(const kms_rpc_call *c)
{
    /* An auditor reads the log and does nothing else: not even the calls
     * any identity may make (ListKeys), whatever a key policy names. Only
     * Health, which any peer may ask, stays open to it. */
    if (c->method->perm != KMS_PERM_AUDITOR && c->method->perm != KMS_PERM_PEER &&
        kms_policy_is_auditor(c->env->policy, c->identity))
        return kms_error_set(KMS_EDENIED, "auditors may only read the audit log");
    switch (c->method->perm) {
    case KMS_PERM_PEER:
    case KMS_PERM_LIST:
    case KMS_PERM_ENCRYPT:
    case KMS_PERM_DECRYPT:
    case KMS_PERM_REENCRYPT:
    case KMS_PERM_DESCRIBE:
        return KMS_OK; /* per key, through targets */
    case KMS_PERM_OFFICER:
        if (kms_policy_is_officer(c->env->policy, c->identity))
            return KMS_OK;
        return kms_error_set(KMS_EDENIED, "not an officer");
    case KMS_PERM_AUDITOR:
        if (kms_policy_is_auditor(c->env->policy, c->identity))
            return KMS_OK;
        return kms_error_set(KMS_EDENIED, "not an auditor");
    default:
        return kms_error_set(KMS_EDENIED, "%s permission not granted",
                             kms_policy_perm_name(c->method->perm));
    }
}

static int authorize_targets(kms_rpc_call *c, const ProtobufCMessage *req)
{
    kms_rpc_target t[KMS_RPC_MAX_TARGETS];
    size_t n = 0;
    memset(t, 0, sizeof(t));
    if (c->method->targets == NULL)
        return KMS_OK;
    KMS_GUARD(c->method->targets(c, req, t, &n));
    if (n > KMS_RPC_MAX_TARGETS)
        return kms_error_set(KMS_EINTERNAL, "rpc: too many targets");
    for (size_t i = 0; i < n; i++) {
        if (c->key_name[0] == '\0' && t[i].key_name != NULL)
            kms_rpc_note_key(c, t[i].key_name, 0); /* logged and audited even if refused */
        KMS_GUARD(kms_policy_check(c->env->policy, c->identity, t[i].key_name,
                                   t[i].key_name ? NULL : t[i].key_id, t[i].perm, &c->keys[i]));
        c->n_keys = i + 1;
        if (c->key_name[0] == '\0')
            kms_rpc_note_key(c, c->keys[i].name, 0);
    }
    return KMS_OK;
}

/* Packs resp into a malloc'ed buffer for the reply. */
static int pack(const ProtobufCMessage *resp, uint8_t **body, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(resp);
    uint8_t *buf = kms_malloc(n ? n : 1);
    if (buf == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    if (protobuf_c_message_pack(resp, buf) != n) {
        OPENSSL_cleanse(buf, n);
        kms_free(buf);
        return kms_error_set(KMS_EINTERNAL, "rpc: packed size mismatch");
    }
    *body = buf;
    *len = n;
    return KMS_OK;
}

static int run(kms_rpc_call *c, const kms_server_call *in, uint8_t **body, size_t *len)
{
    ProtobufCMessage *req = NULL, *resp = NULL;
    int r;

    if (in->req == NULL) {
        r = kms_error_set(KMS_EINVAL, "request without a message");
        goto out;
    }
    /* protobuf-c would cut a string at its first NUL ({"k":"v\0x"} read as
     * {"k":"v"}): such a request is refused, whatever the field. */
    if (kms_pb_wire_has_nul_string(c->method->request, in->req, in->req_len)) {
        r = kms_error_set_public(KMS_EINVAL, "a string field holds a NUL byte");
        goto out;
    }
    (void)kms_pb_wiping_take_failure();
    req = protobuf_c_message_unpack(c->method->request, kms_pb_wiping_allocator(), in->req_len,
                                    in->req);
    if (req == NULL) {
        r = kms_pb_wiping_take_failure()
                ? kms_error_set(KMS_ENOMEM, "out of memory unpacking %s", c->method->request->name)
                : kms_error_set(KMS_EINVAL, "request does not parse as %s",
                                c->method->request->name);
        goto out;
    }
    if ((r = method_allowed(c)) != 0 || (r = authorize_targets(c, req)) != 0 ||
        (r = c->method->handler(c, req, &resp)) != 0)
        goto out;
    if (resp == NULL) {
        r = kms_error_set(KMS_EINTERNAL, "rpc: handler returned no response");
        goto out;
    }
    r = pack(resp, body, len);
out:
    if (req != NULL)
        protobuf_c_message_free_unpacked(req, kms_pb_wiping_allocator());
    return r;
}

void kms_rpc_dispatch(void *app, const kms_server_call *in, kms_server_reply *reply)
{
    const kms_rpc_env *env = app;
    kms_rpc_call *c = NULL;
    uint8_t *body = NULL;
    size_t body_len = 0;
    int r;
    gpr_timespec t0 = gpr_now(GPR_CLOCK_MONOTONIC);

    kms_alloc_request_begin(); /* a test build's allocation-failure hook */
    kms_error_clear();
    if (in->method >= env->n_methods) {
        r = kms_error_set(KMS_EINTERNAL, "rpc: method index out of range");
        goto out;
    }
    if ((c = kms_calloc(1, sizeof(*c))) == NULL) {
        r = kms_error_set(KMS_ENOMEM, "out of memory");
        goto out;
    }
    c->env = env;
    c->method = &env->methods[in->method];
    if ((r = authenticate(env, in->call, c->identity, sizeof(c->identity))) != 0) {
        /* Out of memory is not the client's fault: it keeps its own status
         * (RESOURCE_EXHAUSTED) so the client retries instead of giving up. */
        if (r != KMS_ENOMEM)
            kms_rpc_set_status(c, GRPC_STATUS_UNAUTHENTICATED,
                               "client certificate does not carry a usable identity");
        goto out;
    }
    if (c->method->handler == NULL) {
        r = kms_error_set(KMS_EUNSUPPORTED, "not implemented yet");
        kms_rpc_set_status(c, GRPC_STATUS_UNIMPLEMENTED, "not implemented yet");
        goto out;
    }
    r = run(c, in, &body, &body_len);
out:
    /* The reply body holds what the response pointed at; the arena and the
     * secrets it pointed into are no longer needed. */
    if (c != NULL)
        call_release(c);

    int status = c != NULL && c->status_set ? c->status : kms_error_grpc_status(r);
    const char *message =
        c != NULL && c->status_set ? c->status_message : (r == 0 ? "" : kms_strerror(r));
    if ((c == NULL || !c->status_set) && r != 0 && kms_error_public(r)[0] != '\0') {
        /* A detail meant for the caller (kms/error.h), copied: the
         * thread's detail changes with the next call. */
        snprintf(reply->message_buf, sizeof(reply->message_buf), "%s", kms_error_public(r));
        message = reply->message_buf;
    }
    if (status != GRPC_STATUS_OK && r == 0)
        r = KMS_EINVAL; /* a handler chose a failure status */

    if (env->audit != NULL) {
        char *peer = in->call != NULL ? grpc_call_get_peer(in->call) : NULL;
        kms_rpc_audit_record rec = {
            .identity = c ? c->identity : "",
            .peer = peer ? peer : "",
            .method = in->method < env->n_methods ? env->methods[in->method].path : "?",
            .key_name = c ? c->key_name : "",
            .key_version = c ? c->key_version : 0,
            .status = status,
            .error = r,
            .duration_us =
                (uint64_t)gpr_timespec_to_micros(gpr_time_sub(gpr_now(GPR_CLOCK_MONOTONIC), t0))};
        if (c != NULL) {
            memcpy(rec.context_mac, c->context_mac, sizeof(rec.context_mac));
            rec.n_context_macs = c->n_context_macs;
        }
        int probe = in->method < env->n_methods &&
                    (env->methods[in->method].flags & KMS_RPC_HEALTH_PROBE) != 0;
        if (env->audit(env->audit_ctx, &rec) != 0 && !probe) {
            /* The log reports its failure once (and its recovery); each
             * call refused meanwhile shows in the call's own line below. */
            kms_log_debug("rpc: audit record failed: the call fails closed");
            status = GRPC_STATUS_UNAVAILABLE;
            message = "audit log unavailable";
        }
        gpr_free(peer);
    }

    char id_buf[LOG_FIELD_MAX], key_buf[LOG_FIELD_MAX], detail_buf[LOG_FIELD_MAX * 2];
    const char *path = in->method < env->n_methods ? env->methods[in->method].path : "?";
    double ms = gpr_timespec_to_micros(gpr_time_sub(gpr_now(GPR_CLOCK_MONOTONIC), t0)) / 1000.0;
    if (status == GRPC_STATUS_OK)
        kms_log_debug("rpc %s identity=%s key=%s version=%u ok %.3f ms", path,
                      log_safe(c ? c->identity : "", id_buf, sizeof(id_buf)),
                      log_safe(c ? c->key_name : "", key_buf, sizeof(key_buf)),
                      c ? c->key_version : 0, ms);
    else
        kms_log_info("rpc %s identity=%s key=%s status=%d %s: %s", path,
                     log_safe(c ? c->identity : "", id_buf, sizeof(id_buf)),
                     log_safe(c ? c->key_name : "", key_buf, sizeof(key_buf)), status,
                     kms_error_name(r),
                     log_safe(kms_error_detail(), detail_buf, sizeof(detail_buf)));

    /* A few relaxed atomic adds: no lock, no allocation. */
    kms_metrics_rpc(
        in->method, status,
        (uint64_t)gpr_timespec_to_micros(gpr_time_sub(gpr_now(GPR_CLOCK_MONOTONIC), t0)));

    if (status == GRPC_STATUS_OK) {
        reply->body = body;
        reply->body_len = body_len;
    } else if (body != NULL) {
        OPENSSL_cleanse(body, body_len);
        kms_free(body);
    }
    reply->status = (grpc_status_code)status;
    reply->message = message;
    if (c != NULL) {
        OPENSSL_cleanse(c, sizeof(*c));
        kms_free(c);
    }
    kms_alloc_request_end();
}
