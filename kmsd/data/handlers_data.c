/* Data-plane handlers: GenerateDataKey, Encrypt, Decrypt, ReEncrypt,
 * DescribeKey, ListKeys, and grpc.health.v1.Health/Check.
 *
 * Handlers run after the wrapper (kmsd/server/rpc.c) has authenticated the
 * caller and authorized every key their targets named. Responses and
 * everything they point to come from the call's arena or from kms_secret
 * values handed to the call; both are wiped after the reply is packed.
 * Failures return a kms error (the wrapper maps it to a gRPC status) with a
 * detail for the log that never holds key bytes. */
#include <stdlib.h>
#include <string.h>

#include <grpc/status.h>

#include "grpc/health/v1/health.pb-c.h"
#include "base/alloc.h"
#include "kmsd/keyring/blob.h"
#include "kmsd/data/handlers_data.h"
#include "kmsd/keyring/keyring.h"
#include "kms/v1/kms.pb-c.h"

#define DATA_KEY_256 32
#define DATA_KEY_128 16

/* ---- request helpers ------------------------------------------------------------------ */

/* The audit record carries a MAC of each context the call names (never
 * the context). A context that does not encode is refused later by the
 * keyring, with its own message; it has no MAC to record. */
static int note_context(kms_rpc_call *c, const kms_context *ctx)
{
    if (kms_rpc_env_of(c)->audit_context_mac == NULL)
        return KMS_OK;
    uint8_t *enc = kms_rpc_alloc(c, KMS_CONTEXT_MAX_ENCODED);
    size_t len = 0;
    if (enc == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    if (kms_context_encode(ctx, enc, KMS_CONTEXT_MAX_ENCODED, &len) != 0) {
        kms_error_clear();
        return KMS_OK;
    }
    return kms_rpc_note_context(c, enc, len);
}

/* Each map<string,string> field is its own entry type in protobuf-c; one
 * converter per type keeps the code free of casts between them. */
#define DEFINE_CONTEXT_FROM(fn, T)                                                                 \
    static int fn(kms_rpc_call *c, size_t n, T *const *e, kms_context *out)                        \
    {                                                                                              \
        kms_context_pair *p = NULL;                                                                \
        if (n > KMS_CONTEXT_MAX_PAIRS)                                                             \
            return kms_error_set(KMS_EINVAL, "encryption context has more than %d pairs",          \
                                 KMS_CONTEXT_MAX_PAIRS);                                           \
        if (n > 0 && (p = kms_rpc_alloc(c, n * sizeof(*p))) == NULL)                               \
            return kms_error_set(KMS_ENOMEM, "out of memory");                                     \
        for (size_t i = 0; i < n; i++) {                                                           \
            p[i].key = e[i]->key ? e[i]->key : "";                                                 \
            p[i].key_len = strlen(p[i].key);                                                       \
            p[i].value = e[i]->value ? e[i]->value : "";                                           \
            p[i].value_len = strlen(p[i].value);                                                   \
        }                                                                                          \
        out->pairs = p;                                                                            \
        out->count = n;                                                                            \
        return note_context(c, out);                                                               \
    }

DEFINE_CONTEXT_FROM(context_gdk, Kms__V1__GenerateDataKeyRequest__EncryptionContextEntry)
DEFINE_CONTEXT_FROM(context_encrypt, Kms__V1__EncryptRequest__EncryptionContextEntry)
DEFINE_CONTEXT_FROM(context_decrypt, Kms__V1__DecryptRequest__EncryptionContextEntry)
DEFINE_CONTEXT_FROM(context_re_source, Kms__V1__ReEncryptRequest__SourceEncryptionContextEntry)
DEFINE_CONTEXT_FROM(context_re_dest, Kms__V1__ReEncryptRequest__DestinationEncryptionContextEntry)

static int valid_key_name(const char *name)
{
    if (!kms_keyring_valid_name(name))
        return kms_error_set(KMS_EINVAL, "invalid key name");
    return KMS_OK;
}

/* The key id inside a blob (the blob is parsed strictly). */
static int blob_key(const ProtobufCBinaryData *blob, uint8_t key_id[KMS_KEY_ID_LEN])
{
    kms_blob_view bv;
    KMS_GUARD(kms_blob_parse(blob->data, blob->len, &bv));
    memcpy(key_id, bv.key_id, KMS_KEY_ID_LEN);
    return KMS_OK;
}

/* ---- targets -------------------------------------------------------------------------- */

int kms_handlers_targets_by_name(kms_rpc_call *c, const ProtobufCMessage *req, kms_rpc_target *t,
                                 size_t *n)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(req->descriptor, "key_name");
    if (f == NULL || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
        return kms_error_set(KMS_EINTERNAL, "%s has no key_name", req->descriptor->name);
    const char *name = *(char *const *)((const char *)req + f->offset);
    KMS_GUARD(valid_key_name(name));
    t[0].key_name = name;
    t[0].perm = kms_rpc_method_of(c)->perm;
    *n = 1;
    return KMS_OK;
}

int kms_handlers_targets_decrypt(kms_rpc_call *c, const ProtobufCMessage *msg, kms_rpc_target *t,
                                 size_t *n)
{
    (void)c;
    const Kms__V1__DecryptRequest *req = (const Kms__V1__DecryptRequest *)msg;
    KMS_GUARD(blob_key(&req->ciphertext_blob, t[0].key_id));
    t[0].perm = KMS_PERM_DECRYPT;
    *n = 1;
    return KMS_OK;
}

/* ReEncrypt moves a ciphertext from the blob's key to the destination key:
 * the caller needs decrypt and reencrypt on the source key, and reencrypt
 * on the destination key (docs/api.md). */
int kms_handlers_targets_reencrypt(kms_rpc_call *c, const ProtobufCMessage *msg, kms_rpc_target *t,
                                   size_t *n)
{
    (void)c;
    const Kms__V1__ReEncryptRequest *req = (const Kms__V1__ReEncryptRequest *)msg;
    KMS_GUARD(blob_key(&req->ciphertext_blob, t[0].key_id));
    t[0].perm = KMS_PERM_DECRYPT;
    memcpy(t[1].key_id, t[0].key_id, KMS_KEY_ID_LEN);
    t[1].perm = KMS_PERM_REENCRYPT;
    KMS_GUARD(valid_key_name(req->destination_key_name));
    t[2].key_name = req->destination_key_name;
    t[2].perm = KMS_PERM_REENCRYPT;
    *n = 3;
    return KMS_OK;
}

/* ---- data plane ----------------------------------------------------------------------- */

int kms_handlers_generate_data_key(kms_rpc_call *c, const ProtobufCMessage *msg,
                                   ProtobufCMessage **out)
{
    const Kms__V1__GenerateDataKeyRequest *req = (const Kms__V1__GenerateDataKeyRequest *)msg;
    Kms__V1__GenerateDataKeyResponse *resp = NULL;
    kms_secret *dk = NULL;
    kms_context ctx;
    uint8_t *blob = NULL;
    size_t blob_len = 0, klen;
    uint32_t version = 0;

    switch (req->key_spec) {
    case KMS__V1__KEY_SPEC__KEY_SPEC_UNSPECIFIED:
    case KMS__V1__KEY_SPEC__AES_256:
        klen = DATA_KEY_256;
        break;
    case KMS__V1__KEY_SPEC__AES_128:
        klen = DATA_KEY_128;
        break;
    default:
        return kms_error_set(KMS_EINVAL, "unknown key_spec %d", (int)req->key_spec);
    }
    KMS_GUARD(context_gdk(c, req->n_encryption_context, req->encryption_context, &ctx));
    /* The data key comes from OpenSSL's DRBG straight into locked memory. */
    KMS_GUARD(kms_secret_random(klen, &dk));
    KMS_GUARD(kms_rpc_keep_secret(c, dk));
    if ((blob = kms_rpc_alloc(c, KMS_BLOB_MAX)) == NULL ||
        (resp = kms_rpc_alloc(c, sizeof(*resp))) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    KMS_GUARD(kms_keyring_wrap(kms_rpc_env_of(c)->keyring, req->key_name, &ctx, dk->data, klen,
                               blob, KMS_BLOB_MAX, &blob_len, &version));
    kms__v1__generate_data_key_response__init(resp);
    if (!req->without_plaintext) {
        resp->plaintext.data = dk->data;
        resp->plaintext.len = klen;
    }
    resp->ciphertext_blob.data = blob;
    resp->ciphertext_blob.len = blob_len;
    if ((resp->key_name = kms_rpc_strdup(c, kms_rpc_target_key(c, 0)->name)) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    resp->key_version = version;
    kms_rpc_note_key(c, resp->key_name, version);
    *out = &resp->base;
    return KMS_OK;
}

int kms_handlers_encrypt(kms_rpc_call *c, const ProtobufCMessage *msg, ProtobufCMessage **out)
{
    const Kms__V1__EncryptRequest *req = (const Kms__V1__EncryptRequest *)msg;
    Kms__V1__EncryptResponse *resp = NULL;
    kms_context ctx;
    uint8_t *blob = NULL;
    size_t blob_len = 0;
    uint32_t version = 0;

    if (req->plaintext.len == 0 || req->plaintext.len > KMS_BLOB_MAX_PLAINTEXT)
        return kms_error_set(KMS_ETOOBIG, "plaintext must be 1..%d bytes", KMS_BLOB_MAX_PLAINTEXT);
    KMS_GUARD(context_encrypt(c, req->n_encryption_context, req->encryption_context, &ctx));
    if ((blob = kms_rpc_alloc(c, KMS_BLOB_MAX)) == NULL ||
        (resp = kms_rpc_alloc(c, sizeof(*resp))) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    KMS_GUARD(kms_keyring_wrap(kms_rpc_env_of(c)->keyring, req->key_name, &ctx, req->plaintext.data,
                               req->plaintext.len, blob, KMS_BLOB_MAX, &blob_len, &version));
    kms__v1__encrypt_response__init(resp);
    resp->ciphertext_blob.data = blob;
    resp->ciphertext_blob.len = blob_len;
    if ((resp->key_name = kms_rpc_strdup(c, kms_rpc_target_key(c, 0)->name)) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    resp->key_version = version;
    kms_rpc_note_key(c, resp->key_name, version);
    *out = &resp->base;
    return KMS_OK;
}

int kms_handlers_decrypt(kms_rpc_call *c, const ProtobufCMessage *msg, ProtobufCMessage **out)
{
    const Kms__V1__DecryptRequest *req = (const Kms__V1__DecryptRequest *)msg;
    Kms__V1__DecryptResponse *resp = NULL;
    kms_secret *pt = NULL;
    kms_context ctx;
    kms_key_rec rec;
    uint32_t version = 0;

    KMS_GUARD(context_decrypt(c, req->n_encryption_context, req->encryption_context, &ctx));
    if ((resp = kms_rpc_alloc(c, sizeof(*resp))) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    KMS_GUARD(kms_keyring_unwrap(kms_rpc_env_of(c)->keyring, req->ciphertext_blob.data,
                                 req->ciphertext_blob.len, &ctx, &pt, &rec, &version));
    KMS_GUARD(kms_rpc_keep_secret(c, pt));
    kms__v1__decrypt_response__init(resp);
    resp->plaintext.data = pt->data;
    resp->plaintext.len = pt->len;
    if ((resp->key_name = kms_rpc_strdup(c, rec.name)) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    resp->key_version = version;
    kms_rpc_note_key(c, rec.name, version);
    *out = &resp->base;
    return KMS_OK;
}

int kms_handlers_reencrypt(kms_rpc_call *c, const ProtobufCMessage *msg, ProtobufCMessage **out)
{
    const Kms__V1__ReEncryptRequest *req = (const Kms__V1__ReEncryptRequest *)msg;
    Kms__V1__ReEncryptResponse *resp = NULL;
    kms_keyring *kr = kms_rpc_env_of(c)->keyring;
    kms_secret *pt = NULL;
    kms_context src, dst;
    kms_key_rec rec;
    uint8_t *blob = NULL;
    size_t blob_len = 0;
    uint32_t src_version = 0, version = 0;

    KMS_GUARD(context_re_source(c, req->n_source_encryption_context, req->source_encryption_context,
                                &src));
    KMS_GUARD(context_re_dest(c, req->n_destination_encryption_context,
                              req->destination_encryption_context, &dst));
    if ((blob = kms_rpc_alloc(c, KMS_BLOB_MAX)) == NULL ||
        (resp = kms_rpc_alloc(c, sizeof(*resp))) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    /* The plaintext stays in locked memory and never leaves the server. */
    KMS_GUARD(kms_keyring_unwrap(kr, req->ciphertext_blob.data, req->ciphertext_blob.len, &src, &pt,
                                 &rec, &src_version));
    KMS_GUARD(kms_rpc_keep_secret(c, pt));
    KMS_GUARD(kms_keyring_wrap(kr, req->destination_key_name, &dst, pt->data, pt->len, blob,
                               KMS_BLOB_MAX, &blob_len, &version));
    kms__v1__re_encrypt_response__init(resp);
    resp->ciphertext_blob.data = blob;
    resp->ciphertext_blob.len = blob_len;
    resp->source_key_name = kms_rpc_strdup(c, rec.name);
    resp->source_key_version = src_version;
    resp->key_name = kms_rpc_strdup(c, kms_rpc_target_key(c, 2)->name);
    resp->key_version = version;
    if (resp->source_key_name == NULL || resp->key_name == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    kms_rpc_note_key(c, resp->key_name, version);
    *out = &resp->base;
    return KMS_OK;
}

/* ---- key metadata ----------------------------------------------------------------------- */

struct versions {
    kms_version_rec *v;
    size_t n, cap;
};

static int collect_version(void *ctx, const kms_version_rec *v)
{
    struct versions *vs = ctx;
    if (vs->n == vs->cap) {
        size_t cap = vs->cap ? vs->cap * 2 : 8;
        kms_version_rec *g = kms_realloc(vs->v, cap * sizeof(*g));
        if (g == NULL)
            return kms_error_set(KMS_ENOMEM, "out of memory");
        vs->v = g;
        vs->cap = cap;
    }
    vs->v[vs->n++] = *v;
    return KMS_OK;
}

static Kms__V1__KeyVersionState version_state(kms_version_state s)
{
    switch (s) {
    case KMS_VERSION_ENABLED:
        return KMS__V1__KEY_VERSION_STATE__ENABLED;
    case KMS_VERSION_DISABLED:
        return KMS__V1__KEY_VERSION_STATE__DISABLED;
    case KMS_VERSION_PENDING_DELETION:
        return KMS__V1__KEY_VERSION_STATE__PENDING_DELETION;
    case KMS_VERSION_DESTROYED:
        return KMS__V1__KEY_VERSION_STATE__DESTROYED;
    default:
        return KMS__V1__KEY_VERSION_STATE__KEY_VERSION_STATE_UNSPECIFIED;
    }
}

/* Arena copies of one policy list. */
static int policy_list(kms_rpc_call *c, char **ids, size_t n, char ***out, size_t *n_out)
{
    char **v = NULL;
    if (n > 0 && (v = kms_rpc_alloc(c, n * sizeof(*v))) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        if ((v[i] = kms_rpc_strdup(c, ids[i])) == NULL)
            return kms_error_set(KMS_ENOMEM, "out of memory");
    *out = v;
    *n_out = n;
    return KMS_OK;
}

/* Fills m (already initialized) for key rec: versions and usage from the
 * store, policy from the policy cache. The policy goes only to officers: a
 * caller with rights on a key learns which other services use it from
 * nobody but an officer. For anyone else the policy field is left out
 * (absent, not empty), so a client can tell "withheld" from "nobody". */
static int key_metadata(kms_rpc_call *c, const kms_key_rec *rec, int officer,
                        Kms__V1__KeyMetadata *m)
{
    const kms_rpc_env *env = kms_rpc_env_of(c);
    struct versions vs = {0};
    kms_key_policy kp;
    Kms__V1__KeyPolicy *pol = NULL;
    Kms__V1__RotationPolicy *rot = NULL;
    int r;

    memset(&kp, 0, sizeof(kp));
    if ((r = env->store->ops->version_list(env->store, rec->id, collect_version, &vs)) != 0 ||
        (r = kms_policy_get(env->policy, rec->id, &kp)) != 0)
        goto out;
    uint8_t *id = kms_rpc_alloc(c, KMS_KEY_ID_LEN);
    pol = kms_rpc_alloc(c, sizeof(*pol));
    rot = kms_rpc_alloc(c, sizeof(*rot));
    m->key_name = kms_rpc_strdup(c, rec->name);
    const char *backend, *mode;
    kms_keyring_backend_of_name(rec->backend, &backend, &mode);
    m->backend = kms_rpc_strdup(c, backend);
    m->backend_mode = kms_rpc_strdup(c, mode);
    if (id == NULL || pol == NULL || rot == NULL || m->key_name == NULL || m->backend == NULL ||
        m->backend_mode == NULL ||
        (vs.n > 0 && (m->versions = kms_rpc_alloc(c, vs.n * sizeof(*m->versions))) == NULL)) {
        r = kms_error_set(KMS_ENOMEM, "out of memory");
        goto out;
    }
    memcpy(id, rec->id, KMS_KEY_ID_LEN);
    m->key_id.data = id;
    m->key_id.len = KMS_KEY_ID_LEN;
    m->primary_version = rec->primary_version;
    m->min_decryption_version = rec->min_decrypt_version;
    m->created_at = rec->created_at;
    for (size_t i = 0; i < vs.n; i++) {
        Kms__V1__KeyVersion *kv = kms_rpc_alloc(c, sizeof(*kv));
        if (kv == NULL) {
            r = kms_error_set(KMS_ENOMEM, "out of memory");
            goto out;
        }
        kms__v1__key_version__init(kv);
        kv->version = vs.v[i].version;
        kv->state = version_state(vs.v[i].state);
        /* A key scheduled for deletion shows every live version as pending. */
        if (rec->deletion_at != 0 && vs.v[i].state != KMS_VERSION_DESTROYED)
            kv->state = KMS__V1__KEY_VERSION_STATE__PENDING_DELETION;
        kv->created_at = vs.v[i].created_at;
        kv->usage_count = vs.v[i].usage_count;
        m->versions[i] = kv;
    }
    m->n_versions = vs.n;
    kms__v1__key_policy__init(pol);
    if (officer &&
        ((r = policy_list(c, kp.ids[0], kp.n[0], &pol->encrypt, &pol->n_encrypt)) != 0 ||
         (r = policy_list(c, kp.ids[1], kp.n[1], &pol->decrypt, &pol->n_decrypt)) != 0 ||
         (r = policy_list(c, kp.ids[2], kp.n[2], &pol->reencrypt, &pol->n_reencrypt)) != 0))
        goto out;
    m->policy = officer ? pol : NULL;
    kms__v1__rotation_policy__init(rot);
    rot->rotation_period_days = rec->rotation_period_days;
    m->rotation = rot;
    m->deletion_at = rec->deletion_at;
out:
    kms_free(vs.v);
    kms_policy_clear(&kp);
    return r;
}

int kms_handlers_describe_key(kms_rpc_call *c, const ProtobufCMessage *msg, ProtobufCMessage **out)
{
    const Kms__V1__DescribeKeyRequest *req = (const Kms__V1__DescribeKeyRequest *)msg;
    const kms_rpc_env *env = kms_rpc_env_of(c);
    Kms__V1__DescribeKeyResponse *resp = kms_rpc_alloc(c, sizeof(*resp));
    Kms__V1__KeyMetadata *m = kms_rpc_alloc(c, sizeof(*m));
    kms_key_rec rec;

    if (resp == NULL || m == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    /* Fresh from the store: the primary version moves with rotations. */
    KMS_GUARD(env->store->ops->key_get_by_name(env->store, req->key_name, &rec));
    kms__v1__key_metadata__init(m);
    KMS_GUARD(key_metadata(c, &rec, kms_policy_is_officer(env->policy, kms_rpc_identity(c)), m));
    kms__v1__describe_key_response__init(resp);
    resp->key = m;
    kms_rpc_note_key(c, rec.name, rec.primary_version);
    *out = &resp->base;
    return KMS_OK;
}

struct list_ctx {
    kms_rpc_call *c;
    int officer;
    Kms__V1__KeyMetadata **keys;
    size_t n, cap;
};

static int list_one(void *arg, const kms_key_rec *rec)
{
    struct list_ctx *l = arg;
    const kms_rpc_env *env = kms_rpc_env_of(l->c);
    if (!l->officer) {
        int r = kms_policy_check(env->policy, kms_rpc_identity(l->c), NULL, rec->id,
                                 KMS_PERM_DESCRIBE, NULL);
        if (r == KMS_EDENIED || r == KMS_ENOTFOUND)
            return KMS_OK; /* not this caller's key (or deleted meanwhile) */
        KMS_GUARD(r);
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        Kms__V1__KeyMetadata **g = kms_rpc_alloc(l->c, cap * sizeof(*g));
        if (g == NULL)
            return kms_error_set(KMS_ENOMEM, "out of memory");
        if (l->n > 0)
            memcpy(g, l->keys, l->n * sizeof(*g));
        l->keys = g; /* the old array stays in the arena until the call ends */
        l->cap = cap;
    }
    Kms__V1__KeyMetadata *m = kms_rpc_alloc(l->c, sizeof(*m));
    if (m == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    kms__v1__key_metadata__init(m);
    KMS_GUARD(key_metadata(l->c, rec, l->officer, m));
    l->keys[l->n++] = m;
    return KMS_OK;
}

/* Officers see every key; anyone else sees the keys whose policy names
 * them (possibly none). */
int kms_handlers_list_keys(kms_rpc_call *c, const ProtobufCMessage *msg, ProtobufCMessage **out)
{
    (void)msg;
    const kms_rpc_env *env = kms_rpc_env_of(c);
    Kms__V1__ListKeysResponse *resp = kms_rpc_alloc(c, sizeof(*resp));
    if (resp == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    struct list_ctx l = {.c = c,
                         .officer = kms_policy_is_officer(env->policy, kms_rpc_identity(c))};
    KMS_GUARD(env->store->ops->key_list(env->store, list_one, &l));
    kms__v1__list_keys_response__init(resp);
    resp->keys = l.keys;
    resp->n_keys = l.n;
    *out = &resp->base;
    return KMS_OK;
}

/* ---- health --------------------------------------------------------------------------- */

/* "" is the server itself (no work: a load balancer's liveness probe and
 * the benchmark's no-op); "kms.v1.KeyManagement" also asks every configured
 * backend whether it answers now (readiness): NOT_SERVING while any one is
 * down. Other names are NOT_FOUND, as the health protocol specifies. */
int kms_handlers_health_check(kms_rpc_call *c, const ProtobufCMessage *msg, ProtobufCMessage **out)
{
    const Grpc__Health__V1__HealthCheckRequest *req =
        (const Grpc__Health__V1__HealthCheckRequest *)msg;
    Grpc__Health__V1__HealthCheckResponse *resp = kms_rpc_alloc(c, sizeof(*resp));
    if (resp == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    grpc__health__v1__health_check_response__init(resp);
    const char *service = req->service ? req->service : "";
    if (service[0] == '\0') {
        resp->status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    } else if (strcmp(service, "kms.v1.KeyManagement") == 0) {
        kms_keyring *kr = kms_rpc_env_of(c)->keyring;
        const kms_rpc_env *env = kms_rpc_env_of(c);
        int audit_ok = env->audit_ready == NULL || env->audit_ready(env->audit_ctx);
        resp->status = kr != NULL && kms_keyring_health(kr) == 0 && audit_ok
                           ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                           : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    } else {
        kms_rpc_set_status(c, GRPC_STATUS_NOT_FOUND, "unknown service");
        return kms_error_set(KMS_ENOTFOUND, "health: unknown service");
    }
    *out = &resp->base;
    return KMS_OK;
}
