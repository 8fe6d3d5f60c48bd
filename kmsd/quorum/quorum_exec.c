/* Quorum: executing approved actions exactly once, resuming executions a
 * crash interrupted, and the periodic sweep (expiry, crypto-shredding of
 * keys whose deletion time has come, periodic rotation).
 *
 * Exactly once: the approval that reaches the threshold moves the action to
 * EXECUTING in its own transaction. Each executor below is idempotent: it
 * first records a plan (what "done" will look like) and, when run again
 * after a crash, recognises work already done by that plan instead of
 * doing it twice. Only then is the action marked EXECUTED (or FAILED). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/crashpoint.h"
#include "base/log.h"
#include "kmsd/quorum/quorum_internal.h"

#define DAY 86400
#define PLAN_STARTED 'S'

/* A failure that a retry may fix: leave the action EXECUTING. */
static int transient(int r)
{
    return r == KMS_EUNAVAIL || r == KMS_ESTORE || r == KMS_ENOMEM;
}

static int plan_started(kms_quorum *q, kms_action_rec *a)
{
    if (a->plan_len > 0)
        return KMS_OK;
    const uint8_t p = PLAN_STARTED;
    KMS_GUARD(q->store->ops->action_set_plan(q->store, a->id, &p, 1));
    kms_crash_point("execution-planned");
    a->plan[0] = p;
    a->plan_len = 1;
    return KMS_OK;
}

static int policy_grants(const Kms__V1__KeyPolicy *p, kms_grant_rec *g, size_t cap, size_t *n)
{
    *n = 0;
    if (p == NULL)
        return KMS_OK;
    struct {
        char **ids;
        size_t n;
        kms_key_action action;
    } lists[] = {{p->encrypt, p->n_encrypt, KMS_ACTION_ENCRYPT},
                 {p->decrypt, p->n_decrypt, KMS_ACTION_DECRYPT},
                 {p->reencrypt, p->n_reencrypt, KMS_ACTION_REENCRYPT}};
    for (size_t l = 0; l < 3; l++)
        for (size_t i = 0; i < lists[l].n; i++) {
            if (*n == cap)
                return kms_error_set(KMS_EINVAL, "policy too large");
            g[*n].action = lists[l].action;
            g[(*n)++].identity = lists[l].ids[i];
        }
    return KMS_OK;
}

static int set_policy(kms_quorum *q, const uint8_t key_id[KMS_KEY_ID_LEN],
                      const Kms__V1__KeyPolicy *p)
{
    kms_grant_rec *g = calloc(3 * 256, sizeof(*g));
    size_t n = 0;
    if (g == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    int r = policy_grants(p, g, 3 * 256, &n);
    if (r == 0)
        r = q->store->ops->policy_set(q->store, key_id, g, n);
    free(g);
    if (r == 0)
        kms_policy_invalidate(q->policy, key_id);
    return r;
}

static int exec_create(kms_quorum *q, kms_action_rec *a, Kms__V1__CreateKey *c, char *res,
                       size_t cap)
{
    char backend[16];
    kms_key_rec rec;
    KMS_GUARD(kms_quorum_backend_name(c->backend, c->backend_mode, backend, sizeof(backend)));
    int resumed = a->plan_len > 0;
    KMS_GUARD(plan_started(q, a));
    int r = kms_keyring_create_key(q->kr, c->key_name, backend, &rec);
    if (r == KMS_EEXISTS && resumed) /* made by this action before a crash */
        r = q->store->ops->key_get_by_name(q->store, c->key_name, &rec);
    KMS_GUARD(r);
    KMS_GUARD(set_policy(q, rec.id, c->policy));
    if (c->rotation != NULL)
        KMS_GUARD(
            q->store->ops->key_set_rotation(q->store, rec.id, c->rotation->rotation_period_days));
    KMS_GUARD(kms_keyring_refresh(q->kr, rec.id));
    snprintf(res, cap, "key %s created on %s, version 1", c->key_name, backend);
    return KMS_OK;
}

/* A plan that carries a value: the tag byte, then the value big-endian in
 * width (4 or 8) bytes. plan_get answers 1 and sets *v if a's plan is
 * exactly that, else 0; plan_set records it. */
static int plan_get(const kms_action_rec *a, uint8_t tag, size_t width, uint64_t *v)
{
    kms_buf_reader r;
    uint8_t t;
    uint32_t v32;
    uint64_t v64;
    kms_buf_reader_init(&r, a->plan, a->plan_len);
    if (kms_buf_get_u8(&r, &t) != 0 || t != tag)
        return 0;
    if (width == 4 && kms_buf_get_u32be(&r, &v32) == 0 && kms_buf_expect_end(&r) == 0) {
        *v = v32;
        return 1;
    }
    if (width == 8 && kms_buf_get_u64be(&r, &v64) == 0 && kms_buf_expect_end(&r) == 0) {
        *v = v64;
        return 1;
    }
    return 0;
}

static int plan_set(kms_quorum *q, const kms_action_rec *a, uint8_t tag, size_t width, uint64_t v)
{
    uint8_t p[9];
    kms_buf_writer w;
    kms_buf_writer_init(&w, p, sizeof(p));
    if (kms_buf_put_u8(&w, tag) != 0 ||
        (width == 4 ? kms_buf_put_u32be(&w, (uint32_t)v) : kms_buf_put_u64be(&w, v)) != 0)
        return kms_error_set(KMS_EINTERNAL, "quorum: plan encoding");
    return q->store->ops->action_set_plan(q->store, a->id, p, w.len);
}

/* Plan: 'R' and the primary version before rotating (big-endian). */
static int exec_rotate(kms_quorum *q, kms_action_rec *a, const char *name, char *res, size_t cap)
{
    kms_key_rec rec;
    KMS_GUARD(q->store->ops->key_get_by_name(q->store, name, &rec));
    uint64_t planned;
    uint32_t before;
    if (plan_get(a, 'R', 4, &planned)) {
        before = (uint32_t)planned;
    } else {
        before = rec.primary_version;
        KMS_GUARD(plan_set(q, a, 'R', 4, before));
        kms_crash_point("execution-planned");
    }
    uint32_t v = rec.primary_version;
    if (rec.primary_version == before) /* not rotated yet */
        KMS_GUARD(kms_keyring_rotate(q->kr, name, &v));
    snprintf(res, cap, "key %s rotated: version %u is primary", name, v);
    return KMS_OK;
}

/* Plan: 'D' and the deletion time (big-endian int64). */
static int exec_schedule_deletion(kms_quorum *q, kms_action_rec *a, Kms__V1__ScheduleKeyDeletion *d,
                                  char *res, size_t cap)
{
    kms_key_rec rec;
    KMS_GUARD(q->store->ops->key_get_by_name(q->store, d->key_name, &rec));
    uint64_t planned;
    int64_t at = 0;
    if (plan_get(a, 'D', 8, &planned)) {
        at = (int64_t)planned;
    } else {
        at = kms_quorum_now(q) + (int64_t)d->pending_window_days * DAY;
        KMS_GUARD(plan_set(q, a, 'D', 8, (uint64_t)at));
    }
    KMS_GUARD(q->store->ops->key_set_deletion(q->store, rec.id, at));
    KMS_GUARD(kms_keyring_refresh(q->kr, rec.id));
    snprintf(res, cap, "key %s unusable; its versions are destroyed at %lld (unix)", d->key_name,
             (long long)at);
    return KMS_OK;
}

static int exec_key_setting(kms_quorum *q, Kms__V1__ActionBody *b, char *res, size_t cap)
{
    kms_key_rec rec;
    const char *name = NULL;
    switch (b->action_case) {
    case KMS__V1__ACTION_BODY__ACTION_SET_KEY_VERSION_STATE:
        name = b->set_key_version_state->key_name;
        break;
    case KMS__V1__ACTION_BODY__ACTION_SET_MIN_DECRYPTION_VERSION:
        name = b->set_min_decryption_version->key_name;
        break;
    case KMS__V1__ACTION_BODY__ACTION_CANCEL_KEY_DELETION:
        name = b->cancel_key_deletion->key_name;
        break;
    case KMS__V1__ACTION_BODY__ACTION_UPDATE_KEY_POLICY:
        name = b->update_key_policy->key_name;
        break;
    case KMS__V1__ACTION_BODY__ACTION_SET_ROTATION_POLICY:
        name = b->set_rotation_policy->key_name;
        break;
    default:
        return kms_error_set(KMS_EINTERNAL, "not a key setting");
    }
    KMS_GUARD(q->store->ops->key_get_by_name(q->store, name, &rec));
    switch (b->action_case) {
    case KMS__V1__ACTION_BODY__ACTION_SET_KEY_VERSION_STATE: {
        Kms__V1__SetKeyVersionState *s = b->set_key_version_state;
        int en = s->state == KMS__V1__KEY_VERSION_STATE__ENABLED;
        KMS_GUARD(kms_keyring_set_version_state(q->kr, name, s->version,
                                                en ? KMS_VERSION_ENABLED : KMS_VERSION_DISABLED));
        snprintf(res, cap, "key %s version %u %s", name, s->version, en ? "enabled" : "disabled");
        break;
    }
    case KMS__V1__ACTION_BODY__ACTION_SET_MIN_DECRYPTION_VERSION:
        KMS_GUARD(q->store->ops->key_set_min_decrypt(q->store, rec.id,
                                                     b->set_min_decryption_version->version));
        snprintf(res, cap, "key %s: versions below %u no longer decrypt", name,
                 b->set_min_decryption_version->version);
        break;
    case KMS__V1__ACTION_BODY__ACTION_CANCEL_KEY_DELETION:
        KMS_GUARD(q->store->ops->key_set_deletion(q->store, rec.id, 0));
        snprintf(res, cap, "key %s: deletion cancelled", name);
        break;
    case KMS__V1__ACTION_BODY__ACTION_UPDATE_KEY_POLICY:
        KMS_GUARD(set_policy(q, rec.id, b->update_key_policy->policy));
        snprintf(res, cap, "key %s: policy replaced", name);
        break;
    default: {
        uint32_t days = b->set_rotation_policy->rotation
                            ? b->set_rotation_policy->rotation->rotation_period_days
                            : 0;
        KMS_GUARD(q->store->ops->key_set_rotation(q->store, rec.id, days));
        snprintf(res, cap, "key %s: rotation every %u days (0: never)", name, days);
        break;
    }
    }
    return kms_keyring_refresh(q->kr, rec.id);
}

static int exec_officers(kms_quorum *q, kms_action_rec *a, Kms__V1__ActionBody *b, char *res,
                         size_t cap)
{
    int resumed = a->plan_len > 0;
    int r;
    KMS_GUARD(plan_started(q, a));
    if (b->action_case == KMS__V1__ACTION_BODY__ACTION_ADD_OFFICER) {
        Kms__V1__AddOfficer *o = b->add_officer;
        kms_officer_rec rec;
        memset(&rec, 0, sizeof(rec));
        snprintf(rec.id, sizeof(rec.id), "%s", o->officer_id);
        snprintf(rec.identity, sizeof(rec.identity), "%s", o->identity);
        snprintf(rec.signing_key_pem, sizeof(rec.signing_key_pem), "%s", o->signing_key_pem);
        rec.created_at = kms_quorum_now(q);
        r = q->store->ops->officer_add(q->store, &rec);
        if (r == KMS_EEXISTS && resumed)
            r = KMS_OK;
        snprintf(res, cap, "officer %s (%.128s) enrolled", o->officer_id, o->identity);
    } else if (b->action_case == KMS__V1__ACTION_BODY__ACTION_REMOVE_OFFICER) {
        r = q->store->ops->officer_remove(q->store, b->remove_officer->officer_id);
        if (r == KMS_ENOTFOUND && resumed)
            r = KMS_OK;
        snprintf(res, cap, "officer %s removed", b->remove_officer->officer_id);
    } else {
        r = q->store->ops->threshold_set(q->store, b->set_threshold->action_type,
                                         b->set_threshold->threshold);
        snprintf(res, cap, "%s now needs %u approvals", b->set_threshold->action_type,
                 b->set_threshold->threshold);
    }
    KMS_GUARD(r);
    return kms_policy_reload_officers(q->policy);
}

static int dispatch(kms_quorum *q, kms_action_rec *a, Kms__V1__ActionBody *b, char *res, size_t cap)
{
    switch (b->action_case) {
    case KMS__V1__ACTION_BODY__ACTION_CREATE_KEY:
        return exec_create(q, a, b->create_key, res, cap);
    case KMS__V1__ACTION_BODY__ACTION_ROTATE_KEY:
        return exec_rotate(q, a, b->rotate_key->key_name, res, cap);
    case KMS__V1__ACTION_BODY__ACTION_SCHEDULE_KEY_DELETION:
        return exec_schedule_deletion(q, a, b->schedule_key_deletion, res, cap);
    case KMS__V1__ACTION_BODY__ACTION_SET_KEY_VERSION_STATE:
    case KMS__V1__ACTION_BODY__ACTION_SET_MIN_DECRYPTION_VERSION:
    case KMS__V1__ACTION_BODY__ACTION_CANCEL_KEY_DELETION:
    case KMS__V1__ACTION_BODY__ACTION_UPDATE_KEY_POLICY:
    case KMS__V1__ACTION_BODY__ACTION_SET_ROTATION_POLICY:
        return exec_key_setting(q, b, res, cap);
    case KMS__V1__ACTION_BODY__ACTION_ADD_OFFICER:
    case KMS__V1__ACTION_BODY__ACTION_REMOVE_OFFICER:
    case KMS__V1__ACTION_BODY__ACTION_SET_THRESHOLD:
        return exec_officers(q, a, b, res, cap);
    default:
        return kms_error_set(KMS_EINVAL, "unknown action");
    }
}

int kms_quorum_execute(kms_quorum *q, kms_action_rec *a)
{
    if (a->state != KMS_ACTION_EXECUTING)
        return KMS_OK;
    char res[KMS_ACTION_RESULT_MAX + 1] = "";
    Kms__V1__ActionBody *b = kms__v1__action_body__unpack(NULL, a->bytes_len, a->bytes);
    int r;
    if (b == NULL) {
        r = kms_error_set(KMS_EINTERNAL, "stored action does not decode");
    } else if (a->plan_len == 0 && (r = kms_quorum_validate(q, b)) != 0) {
        /* The state changed since the proposal (e.g. the key is gone):
         * re-checked before anything is done. */
    } else {
        r = dispatch(q, a, b, res, sizeof(res));
    }
    if (b != NULL)
        protobuf_c_message_free_unpacked(&b->base, NULL);
    if (r != 0 && transient(r))
        return r; /* stays EXECUTING; resumed by the next sweep */
    if (r != 0)
        snprintf(res, sizeof(res), "failed: %s: %.200s", kms_strerror(r), kms_error_detail());
    kms_crash_point("execution-done");
    int f = q->store->ops->action_finish(q->store, a->id,
                                         r == 0 ? KMS_ACTION_EXECUTED : KMS_ACTION_FAILED, res);
    kms_log_info("quorum: %s action %s: %s", a->type, r == 0 ? "executed" : "failed", res);
    return f;
}

int kms_quorum_execute_id(kms_quorum *q, const uint8_t id[KMS_ACTION_ID_LEN], kms_action_rec *a)
{
    /* Read under the lock: the sweep may have finished it meanwhile. */
    pthread_mutex_lock(&q->exec_mu);
    int r = q->store->ops->action_get(q->store, id, a);
    if (r == 0)
        r = kms_quorum_execute(q, a);
    pthread_mutex_unlock(&q->exec_mu);
    return r;
}

int kms_quorum_resume(kms_quorum *q)
{
    uint8_t(*ids)[KMS_ACTION_ID_LEN] = calloc(256, KMS_ACTION_ID_LEN);
    kms_action_rec *a = malloc(sizeof(*a));
    size_t n = 0;
    int r = ids && a ? q->store->ops->action_ids(q->store, 1, ids, 256, &n)
                     : kms_error_set(KMS_ENOMEM, "out of memory");
    for (size_t i = 0; r == 0 && i < n; i++) {
        if ((r = q->store->ops->action_get(q->store, ids[i], a)) != 0)
            break;
        if (a->state != KMS_ACTION_EXECUTING)
            continue;
        kms_log_info("quorum: resuming an interrupted %s action", a->type);
        r = kms_quorum_execute_id(q, ids[i], a);
    }
    free(ids);
    free(a);
    return r;
}

struct due {
    kms_quorum *q;
    int64_t now;
    char (*names)[KMS_KEY_NAME_MAX + 1];
    size_t n, cap;
    int rotate; /* 0: keys due for destruction; 1: keys due for rotation */
};

static int primary_created(void *ctx, const kms_version_rec *v)
{
    int64_t *out = ctx;
    if (v->created_at > *out)
        *out = v->created_at;
    return 0;
}

static int collect_due(void *ctx, const kms_key_rec *k)
{
    struct due *d = ctx;
    int due = 0;
    if (!d->rotate) {
        due = k->deletion_at != 0 && k->deletion_at <= d->now;
    } else if (k->rotation_period_days > 0 && k->deletion_at == 0 && k->primary_version > 0) {
        int64_t newest = 0;
        KMS_GUARD(d->q->store->ops->version_list(d->q->store, k->id, primary_created, &newest));
        due = newest + (int64_t)k->rotation_period_days * DAY <= d->now;
    }
    if (due && d->n < d->cap)
        snprintf(d->names[d->n++], KMS_KEY_NAME_MAX + 1, "%s", k->name);
    return 0;
}

int kms_quorum_sweep(kms_quorum *q)
{
    int64_t now = kms_quorum_now(q);
    size_t expired = 0;
    int r = q->store->ops->action_expire(q->store, now, &expired);
    if (r == 0 && expired > 0)
        kms_log_info("quorum: %zu action(s) expired unapproved", expired);
    if (r == 0)
        r = kms_quorum_resume(q);
    struct due d = {q, now, calloc(64, KMS_KEY_NAME_MAX + 1), 0, 64, 0};
    if (d.names == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    for (d.rotate = 0; r == 0 && d.rotate <= 1; d.rotate++) {
        d.n = 0;
        r = q->store->ops->key_list(q->store, collect_due, &d);
        for (size_t i = 0; r == 0 && i < d.n; i++) {
            pthread_mutex_lock(&q->exec_mu);
            if (!d.rotate) {
                unsigned n = 0;
                r = kms_keyring_destroy_key(q->kr, d.names[i], &n);
            } else {
                uint32_t v = 0;
                r = kms_keyring_rotate_automatic(q->kr, d.names[i], "rotation period", &v);
                if (r == 0)
                    kms_log_info("quorum: key %s rotated to version %u by its rotation period",
                                 d.names[i], v);
            }
            pthread_mutex_unlock(&q->exec_mu);
        }
    }
    free(d.names);
    return r;
}
