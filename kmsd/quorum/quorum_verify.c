/* Quorum re-verification before execution (contract: quorum_verify.h). */
#include "base/alloc.h"
#include "kmsd/quorum/quorum_verify.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "kmsd/quorum/signature.h"

struct officers {
    kms_officer_rec *v;
    size_t n, cap;
};

static int collect_officer(void *ctx, const kms_officer_rec *o)
{
    struct officers *l = ctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 8;
        kms_officer_rec *v = kms_realloc(l->v, cap * sizeof(*v));
        if (v == NULL)
            return kms_error_set(KMS_ENOMEM, "out of memory");
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = *o;
    return KMS_OK;
}

static const kms_officer_rec *enrolled(const struct officers *l, const char *id)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].id, id) == 0)
            return &l->v[i];
    return NULL;
}

/* The action's id in hex, for messages. */
static void id_hex(const uint8_t id[KMS_ACTION_ID_LEN], char out[2 * KMS_ACTION_ID_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < KMS_ACTION_ID_LEN; i++) {
        out[2 * i] = hex[id[i] >> 4];
        out[2 * i + 1] = hex[id[i] & 15];
    }
    out[2 * KMS_ACTION_ID_LEN] = '\0';
}

static int refuse(const kms_action_rec *a, const char *id, const char *why)
{
    int r = kms_error_set(KMS_EDENIED, "%s action %s not executed: %s", a->type, id, why);
    kms_log_error("quorum: %s action %s not executed: %s", a->type, id, why);
    return r;
}

int kms_quorum_verify_approvals(kms_quorum *q, const kms_action_rec *a)
{
    char id[2 * KMS_ACTION_ID_LEN + 1], why[256];
    struct officers l = {0};
    uint8_t digest[32];
    uint32_t now_threshold = 0;
    int r;

    id_hex(a->id, id);
    if (strcmp(a->proposer, KMS_SYSTEM_PROPOSER) == 0)
        return refuse(a, id, "kmsd's own records are never executed");
    if ((r = kms_quorum_digest(q->instance_id, a->id, a->bytes, a->bytes_len, a->expires_at,
                               digest)) != 0)
        return r;
    if (CRYPTO_memcmp(digest, a->digest, sizeof(digest)) != 0)
        return refuse(a, id, "the stored digest does not match the stored action");
    r = q->store->ops->threshold_get(q->store, a->type, &now_threshold);
    if (r == KMS_ENOTFOUND) {
        snprintf(why, sizeof(why), "no threshold row for %s (a missing row is never a default)",
                 a->type);
        return refuse(a, id, why);
    }
    if (r != 0)
        return r;
    uint32_t need = a->threshold > now_threshold ? a->threshold : now_threshold;
    if (need < KMS_THRESHOLD_MIN)
        need = KMS_THRESHOLD_MIN;

    if ((r = q->store->ops->officer_list(q->store, collect_officer, &l)) != 0)
        goto out;
    uint32_t valid = 0;
    for (size_t i = 0; i < a->n_approvals; i++) {
        const kms_approval_rec *ap = &a->approvals[i];
        const kms_officer_rec *o = enrolled(&l, ap->officer_id);
        int counted = 0;
        for (size_t j = 0; j < i; j++)
            counted |= strcmp(a->approvals[j].officer_id, ap->officer_id) == 0;
        if (o == NULL || counted) {
            kms_log_warn("quorum: action %s: approval of %s not counted (%s)", id, ap->officer_id,
                         o == NULL ? "not enrolled now" : "counted already");
            continue;
        }
        if (ap->approved_at < o->created_at) {
            kms_log_warn("quorum: action %s: the approval of %s was made before %s's current "
                         "enrollment",
                         id, ap->officer_id, ap->officer_id);
            continue;
        }
        if (kms_signature_verify(o->signing_key_pem, digest, ap->signature, ap->signature_len) !=
            0) {
            kms_log_warn("quorum: action %s: the approval of %s does not verify under the key "
                         "%s is enrolled with now",
                         id, ap->officer_id, ap->officer_id);
            continue;
        }
        valid++;
    }
    if (valid < need) {
        snprintf(why, sizeof(why),
                 "%u valid approvals from distinct enrolled officers, %u needed (threshold %u at "
                 "proposal, %u now)",
                 valid, need, a->threshold, now_threshold);
        r = refuse(a, id, why);
    }
out:
    kms_free(l.v);
    return r;
}
