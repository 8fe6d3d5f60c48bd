/* Quorum: proposals, approvals, cancellation and the digest (quorum.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "base/alloc.h"
#include "base/approval.h"
#include "base/crashpoint.h"
#include "base/log.h"
#include "kmsd/quorum/quorum_internal.h"
#include "kmsd/quorum/signature.h"

void kms_quorum_event_detail(char *out, size_t cap, const char *officer, const char *type,
                             const uint8_t *digest)
{
    char hex[65] = "";
    for (size_t i = 0; digest != NULL && i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    snprintf(out, cap, "officer=%s type=%s%s%s", officer, type, digest ? " digest=" : "", hex);
}

/* The keyring's recorder (kms_keyring_rotation_recorder): a rotation kmsd
 * makes by itself (nonce budget, rotation period) becomes an EXECUTED
 * RotateKey action of proposer KMS_SYSTEM_PROPOSER, stored with the new
 * version, so it shows in ListActions like any change. Runs under the
 * key's lock: it only fills *a. */
static int record_rotation(void *ctx, const char *key_name, uint32_t version, const char *reason,
                           kms_action_rec *a)
{
    kms_quorum *q = ctx;
    Kms__V1__RotateKey rk = KMS__V1__ROTATE_KEY__INIT;
    Kms__V1__ActionBody b = KMS__V1__ACTION_BODY__INIT;
    rk.key_name = (char *)key_name;
    b.action_case = KMS__V1__ACTION_BODY__ACTION_ROTATE_KEY;
    b.rotate_key = &rk;
    size_t n = protobuf_c_message_get_packed_size(&b.base);
    memset(a, 0, sizeof(*a));
    if (n == 0 || n > KMS_ACTION_BYTES_MAX || RAND_bytes(a->id, sizeof(a->id)) != 1)
        return kms_error_set(KMS_EINTERNAL, "cannot record an automatic rotation");
    protobuf_c_message_pack(&b.base, a->bytes);
    a->bytes_len = n;
    snprintf(a->type, sizeof(a->type), "%s", kms_quorum_action_of(&b)->type);
    snprintf(a->proposer, sizeof(a->proposer), "%s", KMS_SYSTEM_PROPOSER);
    a->state = KMS_ACTION_EXECUTED;
    a->threshold = 0;
    a->created_at = a->expires_at = kms_quorum_now(q);
    snprintf(a->result, sizeof(a->result),
             "key %.128s rotated automatically (%.40s): version %u is primary", key_name, reason,
             version);
    KMS_GUARD(
        kms_quorum_digest(q->instance_id, a->id, a->bytes, a->bytes_len, a->expires_at, a->digest));
    /* On record before it is committed: a failed record stops the rotation. */
    char detail[128];
    snprintf(detail, sizeof(detail), "reason=%.40s", reason);
    kms_quorum_event ev = {"key.rotate", "", a->id, key_name, version, 0, detail};
    return kms_quorum_record(q, &ev);
}

int kms_quorum_open(kms_store *store, kms_keyring *kr, kms_policy *policy,
                    const kms_quorum_config *cfg, kms_quorum **out)
{
    if (store == NULL || kr == NULL || policy == NULL || out == NULL)
        return kms_error_set(KMS_EINVAL, "missing argument");
    kms_quorum *q = kms_calloc(1, sizeof(*q));
    if (q == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    q->store = store;
    q->kr = kr;
    q->policy = policy;
    if (cfg != NULL)
        q->cfg = *cfg;
    if (q->cfg.action_ttl <= 0)
        q->cfg.action_ttl = KMS_QUORUM_DEFAULT_TTL;
    if (q->cfg.max_pending == 0)
        q->cfg.max_pending = KMS_QUORUM_DEFAULT_MAX_PENDING;
    int r = store->ops->instance_id(store, q->instance_id);
    if (r != 0) {
        kms_free(q);
        return r;
    }
    pthread_mutex_init(&q->exec_mu, NULL);
    pthread_mutex_init(&q->propose_mu, NULL);
    kms_keyring_set_rotation_recorder(kr, record_rotation, q);
    *out = q;
    return KMS_OK;
}

void kms_quorum_close(kms_quorum *q)
{
    if (q == NULL)
        return;
    pthread_mutex_destroy(&q->exec_mu);
    pthread_mutex_destroy(&q->propose_mu);
    kms_free(q);
}

int64_t kms_quorum_now(const kms_quorum *q)
{
    return kms_clock_now(&q->cfg.clock);
}

const uint8_t *kms_quorum_instance_id(const kms_quorum *q)
{
    return q->instance_id;
}

int kms_quorum_digest(const uint8_t instance_id[KMS_INSTANCE_ID_LEN],
                      const uint8_t id[KMS_ACTION_ID_LEN], const uint8_t *bytes, size_t len,
                      int64_t expires_at, uint8_t out[32])
{
    return kms_approval_digest(instance_id, id, bytes, len, expires_at, out);
}

struct find_officer {
    const char *identity;
    kms_officer_rec *out;
    int found;
};

static int match_officer(void *ctx, const kms_officer_rec *o)
{
    struct find_officer *f = ctx;
    if (!f->found && strcmp(o->identity, f->identity) == 0) {
        *f->out = *o;
        f->found = 1;
    }
    return 0;
}

/* The enrolled officer whose mTLS identity this is, else KMS_EDENIED. */
static int officer_of(kms_quorum *q, const char *identity, kms_officer_rec *out)
{
    struct find_officer f = {identity, out, 0};
    KMS_GUARD(q->store->ops->officer_list(q->store, match_officer, &f));
    if (!f.found)
        return kms_error_set(KMS_EDENIED, "%s is not an enrolled officer", identity);
    return KMS_OK;
}

static int check_id(const uint8_t *id, size_t len)
{
    if (id == NULL || len != KMS_ACTION_ID_LEN)
        return kms_error_set_public(KMS_EINVAL, "an action id is %d bytes", KMS_ACTION_ID_LEN);
    return KMS_OK;
}

/* Stores a new proposal unless its proposer already has max_pending open
 * ones: one officer cannot flood the queue the others review (or push older
 * proposals out of a listing). Expired, cancelled and finished actions do
 * not count. */
static int create_within_limit(kms_quorum *q, const kms_action_rec *a)
{
    uint32_t n_open = 0;
    pthread_mutex_lock(&q->propose_mu);
    int r = q->store->ops->action_count_pending(q->store, a->proposer, a->created_at, &n_open);
    if (r == 0 && n_open >= q->cfg.max_pending)
        r = kms_error_set_public(KMS_EEXHAUSTED,
                                 "%s already has %u open proposals, the most allowed: cancel one "
                                 "or let it expire",
                                 a->proposer, n_open);
    if (r == 0)
        r = q->store->ops->action_create(q->store, a);
    pthread_mutex_unlock(&q->propose_mu);
    return r;
}

int kms_quorum_propose(kms_quorum *q, const char *identity, const uint8_t *body, size_t len,
                       kms_action_rec *out)
{
    kms_officer_rec officer;
    KMS_GUARD(officer_of(q, identity, &officer));
    Kms__V1__ActionBody *b = NULL;
    KMS_GUARD(kms_quorum_action_decode(body, len, 0, &b));
    const char *type = kms_quorum_action_of(b)->type; /* decode found the row */
    kms_action_env env = kms_quorum_env(q);
    int r = kms_quorum_action_validate(&env, b);
    size_t n = r == 0 ? protobuf_c_message_get_packed_size(&b->base) : 0;
    if (r == 0 && (n == 0 || n > KMS_ACTION_BYTES_MAX))
        r = kms_error_set_public(KMS_EINVAL, "action larger than %d bytes", KMS_ACTION_BYTES_MAX);
    uint32_t threshold = 0;
    if (r == 0 && (r = q->store->ops->threshold_get(q->store, type, &threshold)) == KMS_ENOTFOUND)
        r = kms_error_set_public(KMS_EPRECOND, "no threshold is set for %s", type);
    if (r == 0 && threshold < KMS_THRESHOLD_MIN)
        r = kms_error_set(KMS_EINTERNAL, "threshold below %d", KMS_THRESHOLD_MIN);
    if (r == 0) {
        memset(out, 0, sizeof(*out));
        protobuf_c_message_pack(&b->base, out->bytes);
        out->bytes_len = n;
        snprintf(out->type, sizeof(out->type), "%s", type);
        snprintf(out->proposer, sizeof(out->proposer), "%s", officer.id);
        out->state = KMS_ACTION_PENDING;
        out->threshold = threshold;
        out->created_at = kms_quorum_now(q);
        out->expires_at = out->created_at + q->cfg.action_ttl;
        if (RAND_bytes(out->id, sizeof(out->id)) != 1)
            r = kms_error_set(KMS_EINTERNAL, "no random action id");
    }
    protobuf_c_message_free_unpacked(&b->base, NULL);
    if (r != 0)
        return r;
    KMS_GUARD(kms_quorum_digest(q->instance_id, out->id, out->bytes, out->bytes_len,
                                out->expires_at, out->digest));
    char detail[256];
    kms_quorum_event_detail(detail, sizeof(detail), officer.id, out->type, out->digest);
    kms_quorum_event ev = {"quorum.propose", identity, out->id, "", 0, 0, detail};
    KMS_GUARD(kms_quorum_record(q, &ev));
    KMS_GUARD(create_within_limit(q, out));
    kms_log_info("quorum: %s proposed %s (threshold %u)", officer.id, out->type, threshold);
    return KMS_OK;
}

int kms_quorum_approve(kms_quorum *q, const char *identity, const uint8_t *id, size_t id_len,
                       const uint8_t *sig, size_t sig_len, kms_action_rec *out)
{
    kms_officer_rec officer;
    KMS_GUARD(officer_of(q, identity, &officer));
    KMS_GUARD(check_id(id, id_len));
    KMS_GUARD(q->store->ops->action_get(q->store, id, out));
    if (out->state != KMS_ACTION_PENDING)
        return kms_error_set_public(KMS_EPRECOND, "action is not pending");
    /* The digest is recomputed from what is stored, never taken on trust. */
    uint8_t digest[32];
    KMS_GUARD(kms_quorum_digest(q->instance_id, out->id, out->bytes, out->bytes_len,
                                out->expires_at, digest));
    if (CRYPTO_memcmp(digest, out->digest, sizeof(digest)) != 0)
        return kms_error_set(KMS_EINTERNAL, "stored action digest does not match its content");
    KMS_GUARD(kms_signature_verify(officer.signing_key_pem, digest, sig, sig_len));
    char detail[256];
    kms_quorum_event_detail(detail, sizeof(detail), officer.id, out->type, digest);
    kms_quorum_event ev = {"quorum.approve", identity, out->id, "", 0, 0, detail};
    KMS_GUARD(kms_quorum_record(q, &ev));
    int reached = 0;
    KMS_GUARD(q->store->ops->action_approve(q->store, id, officer.id, sig, sig_len,
                                            kms_quorum_now(q), &reached));
    kms_log_info("quorum: %s approved a %s action%s", officer.id, out->type,
                 reached ? " (threshold reached)" : "");
    if (reached) {
        kms_crash_point("approval-committed");
        int r = kms_quorum_execute_id(q, id, out);
        if (r != 0)
            kms_log_warn("quorum: execution of a %s action will be retried: %s", out->type,
                         kms_error_detail());
    }
    return q->store->ops->action_get(q->store, id, out);
}

int kms_quorum_cancel(kms_quorum *q, const char *identity, const uint8_t *id, size_t id_len,
                      kms_action_rec *out)
{
    kms_officer_rec officer;
    KMS_GUARD(officer_of(q, identity, &officer));
    KMS_GUARD(check_id(id, id_len));
    KMS_GUARD(q->store->ops->action_get(q->store, id, out));
    if (strcmp(out->proposer, officer.id) != 0)
        return kms_error_set(KMS_EDENIED, "only the proposer cancels an action");
    char detail[256];
    kms_quorum_event_detail(detail, sizeof(detail), officer.id, out->type, NULL);
    kms_quorum_event ev = {"quorum.cancel", identity, out->id, "", 0, 0, detail};
    KMS_GUARD(kms_quorum_record(q, &ev));
    KMS_GUARD(q->store->ops->action_cancel(q->store, id));
    return q->store->ops->action_get(q->store, id, out);
}

int kms_quorum_get(kms_quorum *q, const uint8_t *id, size_t id_len, kms_action_rec *out)
{
    KMS_GUARD(check_id(id, id_len));
    return q->store->ops->action_get(q->store, id, out);
}
