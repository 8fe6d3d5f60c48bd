/* Quorum: executing approved actions exactly once, resuming executions a
 * crash interrupted, and the periodic sweep (expiry, crypto-shredding of
 * keys whose deletion time has come, periodic rotation).
 *
 * Exactly once: the approval that reaches the threshold moves the action to
 * EXECUTING in its own transaction. The action's row in the table
 * (quorum_actions.h) records its plan before the first change and, when
 * run again after a crash, recognises work already done by that plan
 * instead of doing it twice. Only then is the action marked EXECUTED (or
 * FAILED). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/crashpoint.h"
#include "base/log.h"
#include "kmsd/quorum/quorum_internal.h"
#include "kmsd/quorum/quorum_verify.h"

#define DAY 86400

/* A failure that a retry may fix: leave the action EXECUTING. */
static int transient(int r)
{
    return r == KMS_EUNAVAIL || r == KMS_ESTORE || r == KMS_ENOMEM;
}

/* Runs an EXECUTING action to EXECUTED or FAILED; exec_mu must be held.
 * Returns non-zero only for a transient failure that leaves it EXECUTING. */
static int execute(kms_quorum *q, kms_action_rec *a)
{
    if (a->state != KMS_ACTION_EXECUTING)
        return KMS_OK;
    char res[KMS_ACTION_RESULT_MAX + 1] = "";
    kms_action_env env = kms_quorum_env(q);
    Kms__V1__ActionBody *b = NULL;
    /* The stored bytes are kmsd's own encoding: anything else (or a case
     * with no row in the table) fails the action, with nothing done. */
    int r = kms_quorum_action_decode(a->bytes, a->bytes_len, 1, &b);
    /* The EXECUTING state is not trusted: the approvals are checked again. */
    if (r == 0)
        r = kms_quorum_verify_approvals(q, a);
    if (r == 0 && a->plan_len == 0)
        /* The state may have changed since the proposal (e.g. the key is
         * gone): re-checked before anything is done. A recorded plan means
         * an earlier run passed this and may have made its change: it is
         * resumed, not judged against that change. */
        r = kms_quorum_action_validate(&env, b);
    if (r == 0)
        r = kms_quorum_action_execute(&env, a, b, res, sizeof(res));
    if (b != NULL)
        protobuf_c_message_free_unpacked(&b->base, NULL);
    if (r != 0 && transient(r))
        return r; /* stays EXECUTING; resumed by the next sweep */
    if (r != 0)
        snprintf(res, sizeof(res), "failed: %s: %.200s", kms_strerror(r), kms_error_detail());
    /* On record before it is marked done: without its record it stays
     * EXECUTING and is retried (a crash after the record repeats it). */
    char detail[KMS_ACTION_RESULT_MAX + 64];
    snprintf(detail, sizeof(detail), "type=%s result=%s", a->type, res);
    kms_quorum_event ev = {"quorum.execute", "", a->id, "", 0, r, detail};
    int ar = kms_quorum_record(q, &ev);
    if (ar != 0)
        return ar;
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
        r = execute(q, a);
    pthread_mutex_unlock(&q->exec_mu);
    return r;
}

int kms_quorum_resume(kms_quorum *q)
{
    uint8_t(*ids)[KMS_ACTION_ID_LEN] = kms_calloc(256, KMS_ACTION_ID_LEN);
    kms_action_rec *a = kms_malloc(sizeof(*a));
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
    kms_free(ids);
    kms_free(a);
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

/* One key's destruction or rotation failed in the sweep: logged, and put
 * on record with its error (after the fact: the failure changed nothing
 * that needs a record first). The next sweep retries it. */
static void sweep_failed(kms_quorum *q, const char *type, const char *key, int err)
{
    char detail[KMS_ACTION_RESULT_MAX + 64];
    snprintf(detail, sizeof(detail), "failed: %s: %.200s; retried at the next sweep",
             kms_strerror(err), kms_error_detail());
    kms_log_error("sweep: key %s: %s %s", key,
                  strcmp(type, "key.rotate") == 0 ? "rotation" : "destruction", detail);
    kms_quorum_event ev = {type, "", NULL, key, 0, err, detail};
    if (kms_quorum_record(q, &ev) != 0)
        kms_log_warn("audit: the failed sweep of key %s has no record: %s", key,
                     kms_error_detail());
}

int kms_quorum_sweep(kms_quorum *q)
{
    int64_t now = kms_clock_now(&q->cfg.clock);
    size_t expired = 0;
    int r = q->store->ops->action_expire(q->store, now, &expired);
    if (r == 0 && expired > 0) {
        kms_log_info("quorum: %zu action(s) expired unapproved", expired);
        char detail[64];
        snprintf(detail, sizeof(detail), "count=%zu", expired);
        kms_quorum_event ev = {"quorum.expire", "", NULL, "", 0, 0, detail};
        if (kms_quorum_record(q, &ev) != 0)
            kms_log_warn("audit: %zu expiries have no record: %s", expired, kms_error_detail());
    }
    if (r == 0)
        r = kms_quorum_resume(q);
    struct due d = {q, now, kms_calloc(64, KMS_KEY_NAME_MAX + 1), 0, 64, 0};
    if (d.names == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    /* Keys only once every execution has run (a resumed CancelKeyDeletion
     * comes before the destruction it cancels). One key that fails is
     * reported and retried at the next sweep; the others go on. */
    int first = 0;
    for (d.rotate = 0; r == 0 && d.rotate <= 1; d.rotate++) {
        d.n = 0;
        r = q->store->ops->key_list(q->store, collect_due, &d);
        for (size_t i = 0; r == 0 && i < d.n; i++) {
            pthread_mutex_lock(&q->exec_mu);
            int k;
            if (!d.rotate) {
                unsigned n = 0;
                kms_quorum_event ev = {
                    "key.destroy", "", NULL, d.names[i], 0, 0, "reason=deletion time reached"};
                k = kms_quorum_record(q, &ev); /* on record first, else not now */
                if (k == 0)
                    k = kms_keyring_destroy_key(q->kr, d.names[i], &n);
            } else {
                uint32_t v = 0;
                k = kms_keyring_rotate_automatic(q->kr, d.names[i], "rotation period", &v);
                if (k == 0)
                    kms_log_info("quorum: key %s rotated to version %u by its rotation period",
                                 d.names[i], v);
            }
            pthread_mutex_unlock(&q->exec_mu);
            if (k != 0) {
                sweep_failed(q, d.rotate ? "key.rotate" : "key.destroy", d.names[i], k);
                if (first == 0)
                    first = k;
            }
        }
    }
    kms_free(d.names);
    if (r == 0 && first != 0)
        r = kms_error_set(first, "sweep: at least one key failed (each is logged)");
    return r;
}
