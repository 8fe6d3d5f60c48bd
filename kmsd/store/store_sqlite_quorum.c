/* The SQLite store, schema 3: the instance id, key lifecycle settings
 * (minimum decryption version, rotation period, scheduled deletion) and
 * quorum actions with their approvals (contract: store.h). States are the
 * enums of store.h, bound as parameters. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmsd/store/store_sqlite_internal.h"
#include "kmsd/store/store_sqlite_query.h"

int kms_sqlite_instance_id(kms_store *store, uint8_t out[KMS_INSTANCE_ID_LEN])
{
    struct sqlite_store *s = kms_sqlite_impl(store);
    kms_sq q;
    int r;
    kms_sqlite_lock(s);
    if ((r = kms_sq_open(&q, s, ST_INSTANCE_ID, KMS_SQ_NO_ARGS)) == 0 &&
        (r = kms_sq_one(&q, "store: no instance id")) == 0)
        r = kms_sq_id(&q, 0, out);
    /* A missing row is a damaged file, not an absent record. */
    if (r == KMS_ENOTFOUND)
        r = kms_error_set(KMS_ESTORE, "store: no instance id");
    kms_sq_close(&q);
    kms_sqlite_unlock(s);
    return r;
}

/* UPDATE keys SET <column> = value WHERE id = id; KMS_ENOTFOUND if no row. */
static int key_set(kms_store *store, enum stmt_id st, const uint8_t id[KMS_KEY_ID_LEN],
                   sqlite3_int64 value)
{
    struct sqlite_store *s = kms_sqlite_impl(store);
    int changes = 0;
    kms_sqlite_lock(s);
    int r = kms_sq_run(s, st, KMS_SQ_ARGS(KMS_SQ_INT(value), KMS_SQ_ID(id)), &changes);
    if (r == 0 && changes != 1)
        r = kms_error_set(KMS_ENOTFOUND, "store: no such key");
    kms_sqlite_unlock(s);
    return r;
}

int kms_sqlite_key_set_min_decrypt(kms_store *store, const uint8_t id[KMS_KEY_ID_LEN],
                                   uint32_t version)
{
    if (version < 1)
        return kms_error_set(KMS_EINVAL, "store: minimum decryption version must be >= 1");
    return key_set(store, ST_KEY_SET_MIN_DECRYPT, id, version);
}

int kms_sqlite_key_set_rotation(kms_store *store, const uint8_t id[KMS_KEY_ID_LEN], uint32_t days)
{
    if (days > 36500)
        return kms_error_set(KMS_EINVAL, "store: rotation period over 100 years");
    return key_set(store, ST_KEY_SET_ROTATION, id, days);
}

int kms_sqlite_key_set_deletion(kms_store *store, const uint8_t id[KMS_KEY_ID_LEN],
                                int64_t deletion_at)
{
    if (deletion_at < 0)
        return kms_error_set(KMS_EINVAL, "store: negative deletion time");
    return key_set(store, ST_KEY_SET_DELETION, id, deletion_at);
}

int kms_sqlite_version_destroy(kms_store *store, const uint8_t key_id[KMS_KEY_ID_LEN],
                               uint32_t version)
{
    struct sqlite_store *s = kms_sqlite_impl(store);
    int changes = 0;
    kms_sqlite_lock(s);
    int r = kms_sq_run(
        s, ST_VERSION_DESTROY,
        KMS_SQ_ARGS(KMS_SQ_ID(key_id), KMS_SQ_INT(version), KMS_SQ_INT(KMS_VERSION_DESTROYED)),
        &changes);
    if (r == 0 && changes != 1)
        r = kms_error_set(KMS_ENOTFOUND, "store: no such key version");
    kms_sqlite_unlock(s);
    return r;
}

/* ---- actions ------------------------------------------------------------------------ */

static int valid_text(const char *t, size_t max)
{
    size_t n = strnlen(t, max + 1);
    return n >= 1 && n <= max;
}

int kms_sqlite_action_insert(struct sqlite_store *s, const kms_action_rec *a)
{
    /* A proposal is PENDING with a threshold >= 2; kmsd records its own
     * automatic changes as EXECUTED actions of proposer "kmsd" without one. */
    int system = a != NULL && strcmp(a->proposer, KMS_SYSTEM_PROPOSER) == 0 &&
                 a->state == KMS_ACTION_EXECUTED && a->threshold == 0;
    if (a == NULL || !valid_text(a->type, KMS_ACTION_TYPE_MAX) ||
        !valid_text(a->proposer, KMS_OFFICER_ID_MAX) || a->bytes_len < 1 ||
        a->bytes_len > KMS_ACTION_BYTES_MAX ||
        (!system && (a->threshold < KMS_THRESHOLD_MIN || a->state != KMS_ACTION_PENDING)))
        return kms_error_set(KMS_EINVAL, "store: action record incomplete");
    return kms_sq_run(
        s, ST_ACTION_INSERT,
        KMS_SQ_ARGS(KMS_SQ_ID(a->id), KMS_SQ_TEXT(a->type), KMS_SQ_BLOB(a->bytes, a->bytes_len),
                    KMS_SQ_BLOB(a->digest, sizeof(a->digest)), KMS_SQ_TEXT(a->proposer),
                    KMS_SQ_INT(a->state), KMS_SQ_INT(a->threshold), KMS_SQ_INT(a->created_at),
                    KMS_SQ_INT(a->expires_at), KMS_SQ_TEXT(a->result)),
        NULL);
}

int kms_sqlite_action_create(kms_store *store, const kms_action_rec *a)
{
    struct sqlite_store *s = kms_sqlite_impl(store);
    kms_sqlite_lock(s);
    int r = kms_sqlite_action_insert(s, a);
    kms_sqlite_unlock(s);
    return r;
}

/* Decodes the current row of ST_ACTION_GET into a (id already set). */
static int read_action(kms_sq *q, kms_action_rec *a)
{
    sqlite3_int64 state = 0, threshold = 0, created = 0, expires = 0;
    size_t digest_len = 0;
    int r;
    if ((r = kms_sq_text(q, 0, a->type, sizeof(a->type), "action type")) != 0 ||
        (r = kms_sq_blob(q, 1, 0, a->bytes, sizeof(a->bytes), &a->bytes_len, "action body")) != 0 ||
        (r = kms_sq_blob(q, 2, sizeof(a->digest), a->digest, sizeof(a->digest), &digest_len,
                         "action digest")) != 0 ||
        (r = kms_sq_text(q, 3, a->proposer, sizeof(a->proposer), "proposer")) != 0 ||
        (r = kms_sq_int(q, 4, KMS_ACTION_PENDING, KMS_ACTION_EXECUTING, &state, "action state")) !=
            0 ||
        (r = kms_sq_int(q, 5, 0, UINT32_MAX, &threshold, "threshold")) != 0 ||
        (r = kms_sq_int(q, 6, INT64_MIN, INT64_MAX, &created, "created_at")) != 0 ||
        (r = kms_sq_int(q, 7, INT64_MIN, INT64_MAX, &expires, "expires_at")) != 0 ||
        (r = kms_sq_text_or_empty(q, 8, a->result, sizeof(a->result), "action result")) != 0 ||
        (r = kms_sq_blob(q, 9, 0, a->plan, sizeof(a->plan), &a->plan_len, "action plan")) != 0)
        return r;
    a->state = (kms_action_state)state;
    a->threshold = (uint32_t)threshold;
    a->created_at = created;
    a->expires_at = expires;
    return KMS_OK;
}

/* Reads the action row and its approvals; lock held. */
static int action_read(struct sqlite_store *s, const uint8_t id[KMS_ACTION_ID_LEN],
                       kms_action_rec *a)
{
    kms_sq q;
    int r;

    memset(a, 0, sizeof(*a));
    memcpy(a->id, id, KMS_ACTION_ID_LEN);
    if ((r = kms_sq_open(&q, s, ST_ACTION_GET, KMS_SQ_ARGS(KMS_SQ_ID(id)))) != 0 ||
        (r = kms_sq_one(&q, "store: no such action")) != 0 || (r = read_action(&q, a)) != 0)
        goto out;
    kms_sq_close(&q);

    if ((r = kms_sq_open(&q, s, ST_ACTION_APPROVALS, KMS_SQ_ARGS(KMS_SQ_ID(id)))) != 0)
        goto out;
    while (a->n_approvals < KMS_APPROVALS_MAX && (r = kms_sq_step(&q)) == 1) {
        kms_approval_rec *ap = &a->approvals[a->n_approvals];
        sqlite3_int64 at = 0;
        if ((r = kms_sq_text(&q, 0, ap->officer_id, sizeof(ap->officer_id), "approval officer")) !=
                0 ||
            (r = kms_sq_int(&q, 1, INT64_MIN, INT64_MAX, &at, "approved_at")) != 0 ||
            (r = kms_sq_blob(&q, 2, 1, ap->signature, sizeof(ap->signature), &ap->signature_len,
                             "approval signature")) != 0)
            goto out;
        ap->approved_at = at;
        a->n_approvals++;
    }
    if (r > 0)
        r = KMS_OK;
out:
    kms_sq_close(&q);
    return r;
}

int kms_sqlite_action_get(kms_store *store, const uint8_t id[KMS_ACTION_ID_LEN],
                          kms_action_rec *out)
{
    struct sqlite_store *s = kms_sqlite_impl(store);
    kms_sqlite_lock(s);
    int r = action_read(s, id, out);
    kms_sqlite_unlock(s);
    return r;
}

int kms_sqlite_action_ids(kms_store *store, int pending_only, uint8_t (*ids)[KMS_ACTION_ID_LEN],
                          size_t cap, size_t *n)
{
    struct sqlite_store *s = kms_sqlite_impl(store);
    kms_sq q;
    int r;
    *n = 0;
    kms_sqlite_lock(s);
    if (pending_only)
        r = kms_sq_open(&q, s, ST_ACTION_IDS_PENDING,
                        KMS_SQ_ARGS(KMS_SQ_INT(cap), KMS_SQ_INT(KMS_ACTION_PENDING),
                                    KMS_SQ_INT(KMS_ACTION_EXECUTING)));
    else
        r = kms_sq_open(&q, s, ST_ACTION_IDS_ALL, KMS_SQ_ARGS(KMS_SQ_INT(cap)));
    while (r == 0 && *n < cap && (r = kms_sq_step(&q)) == 1)
        if ((r = kms_sq_id(&q, 0, ids[*n])) == 0)
            (*n)++;
    if (r > 0)
        r = KMS_OK;
    kms_sq_close(&q);
    kms_sqlite_unlock(s);
    return r;
}

/* Moves action id from state `from` to `to`; *changes gets 0 if it was
 * not in `from`. Lock held. */
static int move_action(struct sqlite_store *s, const uint8_t id[KMS_ACTION_ID_LEN],
                       kms_action_state from, kms_action_state to, int *changes)
{
    return kms_sq_run(s, ST_ACTION_MOVE,
                      KMS_SQ_ARGS(KMS_SQ_ID(id), KMS_SQ_INT(to), KMS_SQ_INT(from)), changes);
}

int kms_sqlite_action_approve(kms_store *store, const uint8_t id[KMS_ACTION_ID_LEN],
                              const char *officer_id, const uint8_t *sig, size_t sig_len,
                              int64_t now, int *reached)
{
    if (!valid_text(officer_id, KMS_OFFICER_ID_MAX) || sig == NULL || sig_len < 1 ||
        sig_len > KMS_SIGNATURE_MAX)
        return kms_error_set(KMS_EINVAL, "store: approval incomplete");
    struct sqlite_store *s = kms_sqlite_impl(store);
    kms_action_rec *a = malloc(sizeof(*a));
    int r, expired = 0;
    *reached = 0;
    if (a == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    kms_sqlite_lock(s);
    if ((r = kms_sqlite_tx_begin(s)) != 0)
        goto out;
    if ((r = action_read(s, id, a)) != 0)
        goto end;
    if (a->state != KMS_ACTION_PENDING) {
        r = kms_error_set_public(KMS_EPRECOND, "action is no longer pending (state %d)",
                                 (int)a->state);
        goto end;
    }
    if (now >= a->expires_at) {
        /* Record the expiry (a state change the caller may see) and commit
         * it, then refuse. */
        r = move_action(s, id, KMS_ACTION_PENDING, KMS_ACTION_EXPIRED, NULL);
        expired = 1;
        goto end;
    }
    r = kms_sq_run(s, ST_ACTION_APPROVAL_INSERT,
                   KMS_SQ_ARGS(KMS_SQ_ID(id), KMS_SQ_TEXT(officer_id), KMS_SQ_BLOB(sig, sig_len),
                               KMS_SQ_INT(now)),
                   NULL);
    if (r == KMS_EEXISTS)
        r = kms_error_set(KMS_EEXISTS, "officer %s has approved this action already", officer_id);
    if (r != 0)
        goto end;
    /* Count again from the table: only officers still enrolled count. */
    if ((r = action_read(s, id, a)) != 0)
        goto end;
    if (a->n_approvals >= a->threshold) {
        r = move_action(s, id, KMS_ACTION_PENDING, KMS_ACTION_EXECUTING, NULL);
        if (r == 0)
            *reached = 1;
    }
end:
    r = kms_sqlite_tx_end(s, r);
    if (r != 0)
        *reached = 0;
    if (r == 0 && expired)
        r = kms_error_set_public(KMS_EPRECOND, "action expired");
out:
    kms_sqlite_unlock(s);
    free(a);
    return r;
}

int kms_sqlite_action_set_plan(kms_store *store, const uint8_t id[KMS_ACTION_ID_LEN],
                               const uint8_t *plan, size_t len)
{
    if (plan == NULL || len > KMS_ACTION_PLAN_MAX)
        return kms_error_set(KMS_EINVAL, "store: plan too large");
    struct sqlite_store *s = kms_sqlite_impl(store);
    int changes = 0;
    kms_sqlite_lock(s);
    int r = kms_sq_run(
        s, ST_ACTION_SET_PLAN,
        KMS_SQ_ARGS(KMS_SQ_ID(id), KMS_SQ_BLOB(plan, len), KMS_SQ_INT(KMS_ACTION_EXECUTING)),
        &changes);
    if (r == 0 && changes != 1)
        r = kms_error_set(KMS_EPRECOND, "action is not executing");
    kms_sqlite_unlock(s);
    return r;
}

int kms_sqlite_action_finish(kms_store *store, const uint8_t id[KMS_ACTION_ID_LEN],
                             kms_action_state state, const char *result)
{
    if ((state != KMS_ACTION_EXECUTED && state != KMS_ACTION_FAILED) || result == NULL)
        return kms_error_set(KMS_EINVAL, "store: bad final state");
    struct sqlite_store *s = kms_sqlite_impl(store);
    int changes = 0;
    char text[KMS_ACTION_RESULT_MAX + 1];
    snprintf(text, sizeof(text), "%s", result);
    kms_sqlite_lock(s);
    int r = kms_sq_run(s, ST_ACTION_FINISH,
                       KMS_SQ_ARGS(KMS_SQ_ID(id), KMS_SQ_INT(state), KMS_SQ_TEXT(text),
                                   KMS_SQ_INT(KMS_ACTION_EXECUTING)),
                       &changes);
    if (r == 0 && changes != 1)
        r = kms_error_set(KMS_EPRECOND, "action is not executing");
    kms_sqlite_unlock(s);
    return r;
}

int kms_sqlite_action_cancel(kms_store *store, const uint8_t id[KMS_ACTION_ID_LEN])
{
    struct sqlite_store *s = kms_sqlite_impl(store);
    int changes = 0;
    kms_sqlite_lock(s);
    int r = move_action(s, id, KMS_ACTION_PENDING, KMS_ACTION_CANCELLED, &changes);
    kms_sqlite_unlock(s);
    if (r == 0 && changes != 1)
        return kms_error_set(KMS_EPRECOND, "action is not pending");
    return r;
}

int kms_sqlite_action_expire(kms_store *store, int64_t now, size_t *n)
{
    struct sqlite_store *s = kms_sqlite_impl(store);
    int changes = 0;
    *n = 0;
    kms_sqlite_lock(s);
    int r = kms_sq_run(s, ST_ACTION_EXPIRE_DUE,
                       KMS_SQ_ARGS(KMS_SQ_INT(now), KMS_SQ_INT(KMS_ACTION_EXPIRED),
                                   KMS_SQ_INT(KMS_ACTION_PENDING)),
                       &changes);
    if (r == 0)
        *n = (size_t)changes;
    kms_sqlite_unlock(s);
    return r;
}

int kms_sqlite_action_count_pending(kms_store *store, const char *proposer, int64_t now,
                                    uint32_t *n)
{
    struct sqlite_store *s = kms_sqlite_impl(store);
    kms_sq q;
    sqlite3_int64 count = 0;
    int r;
    *n = 0;
    kms_sqlite_lock(s);
    if ((r = kms_sq_open(&q, s, ST_ACTION_COUNT_PENDING,
                         KMS_SQ_ARGS(KMS_SQ_TEXT(proposer), KMS_SQ_INT(now),
                                     KMS_SQ_INT(KMS_ACTION_PENDING)))) == 0 &&
        (r = kms_sq_one(&q, "pending action count: no row")) == 0 &&
        (r = kms_sq_int(&q, 0, 0, UINT32_MAX, &count, "count")) == 0)
        *n = (uint32_t)count;
    kms_sq_close(&q);
    kms_sqlite_unlock(s);
    return r;
}
