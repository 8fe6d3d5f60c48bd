/* The SQLite store, schema 3: the instance id, key lifecycle settings
 * (minimum decryption version, rotation period, scheduled deletion) and
 * quorum actions with their approvals (contract: store.h). These are
 * admin-plane writes, rare by nature, so statements are prepared per call. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "kmsd/store/store_sqlite_internal.h"

/* Prepares sql (constant text from this file); NULL with the error set. */
static sqlite3_stmt *prepare(struct sqlite_store *s, const char *sql, int *r)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        *r = kms_sqlite_error(s->db, rc, "prepare");
        return NULL;
    }
    return st;
}

int kms_sqlite_instance_id(kms_store *store, uint8_t out[KMS_INSTANCE_ID_LEN])
{
    struct sqlite_store *s = kms_sqlite_impl(store);
    int r = KMS_OK;
    kms_sqlite_lock(s);
    sqlite3_stmt *st = prepare(s, "SELECT id FROM instance", &r);
    if (st != NULL) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            r = kms_sqlite_copy_id(st, 0, out);
        else if (rc == SQLITE_DONE)
            r = kms_error_set(KMS_ESTORE, "store: no instance id");
        else
            r = kms_sqlite_error(s->db, rc, "instance id");
    }
    sqlite3_finalize(st);
    kms_sqlite_unlock(s);
    return r;
}

/* UPDATE keys SET <column> = ?1 WHERE id = ?2; KMS_ENOTFOUND if no row. */
static int key_set(kms_store *store, const char *sql, const uint8_t id[KMS_KEY_ID_LEN],
                   sqlite3_int64 value)
{
    struct sqlite_store *s = kms_sqlite_impl(store);
    int r = KMS_OK, rc;
    kms_sqlite_lock(s);
    sqlite3_stmt *st = prepare(s, sql, &r);
    if (st != NULL) {
        if ((rc = sqlite3_bind_int64(st, 1, value)) != SQLITE_OK ||
            (rc = sqlite3_bind_blob(st, 2, id, KMS_KEY_ID_LEN, SQLITE_STATIC)) != SQLITE_OK ||
            (rc = sqlite3_step(st)) != SQLITE_DONE)
            r = kms_sqlite_error(s->db, rc, "key update");
        else if (sqlite3_changes(s->db) != 1)
            r = kms_error_set(KMS_ENOTFOUND, "store: no such key");
    }
    sqlite3_finalize(st);
    kms_sqlite_unlock(s);
    return r;
}

int kms_sqlite_key_set_min_decrypt(kms_store *store, const uint8_t id[KMS_KEY_ID_LEN],
                                   uint32_t version)
{
    if (version < 1)
        return kms_error_set(KMS_EINVAL, "store: minimum decryption version must be >= 1");
    return key_set(store, "UPDATE keys SET min_decrypt_version = ?1 WHERE id = ?2", id, version);
}

int kms_sqlite_key_set_rotation(kms_store *store, const uint8_t id[KMS_KEY_ID_LEN], uint32_t days)
{
    if (days > 36500)
        return kms_error_set(KMS_EINVAL, "store: rotation period over 100 years");
    return key_set(store, "UPDATE keys SET rotation_period_days = ?1 WHERE id = ?2", id, days);
}

int kms_sqlite_key_set_deletion(kms_store *store, const uint8_t id[KMS_KEY_ID_LEN],
                                int64_t deletion_at)
{
    if (deletion_at < 0)
        return kms_error_set(KMS_EINVAL, "store: negative deletion time");
    return key_set(store, "UPDATE keys SET deletion_at = ?1 WHERE id = ?2", id, deletion_at);
}

int kms_sqlite_version_destroy(kms_store *store, const uint8_t key_id[KMS_KEY_ID_LEN],
                               uint32_t version)
{
    struct sqlite_store *s = kms_sqlite_impl(store);
    int r = KMS_OK, rc;
    kms_sqlite_lock(s);
    sqlite3_stmt *st = prepare(s,
                               "UPDATE key_versions SET state = 4, backend_ref = x'00'"
                               " WHERE key_id = ?1 AND version = ?2",
                               &r);
    if (st != NULL) {
        if ((rc = sqlite3_bind_blob(st, 1, key_id, KMS_KEY_ID_LEN, SQLITE_STATIC)) != SQLITE_OK ||
            (rc = sqlite3_bind_int64(st, 2, version)) != SQLITE_OK ||
            (rc = sqlite3_step(st)) != SQLITE_DONE)
            r = kms_sqlite_error(s->db, rc, "version destroy");
        else if (sqlite3_changes(s->db) != 1)
            r = kms_error_set(KMS_ENOTFOUND, "store: no such key version");
    }
    sqlite3_finalize(st);
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
    int r = KMS_OK, rc;
    sqlite3_stmt *st = prepare(s,
                               "INSERT INTO actions (id, type, body, digest, proposer, state,"
                               " threshold, created_at, expires_at, result)"
                               " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                               &r);
    if (st != NULL &&
        ((rc = sqlite3_bind_blob(st, 1, a->id, KMS_ACTION_ID_LEN, SQLITE_STATIC)) != SQLITE_OK ||
         (rc = sqlite3_bind_text(st, 2, a->type, -1, SQLITE_STATIC)) != SQLITE_OK ||
         (rc = sqlite3_bind_blob(st, 3, a->bytes, (int)a->bytes_len, SQLITE_STATIC)) != SQLITE_OK ||
         (rc = sqlite3_bind_blob(st, 4, a->digest, 32, SQLITE_STATIC)) != SQLITE_OK ||
         (rc = sqlite3_bind_text(st, 5, a->proposer, -1, SQLITE_STATIC)) != SQLITE_OK ||
         (rc = sqlite3_bind_int(st, 6, (int)a->state)) != SQLITE_OK ||
         (rc = sqlite3_bind_int64(st, 7, a->threshold)) != SQLITE_OK ||
         (rc = sqlite3_bind_int64(st, 8, a->created_at)) != SQLITE_OK ||
         (rc = sqlite3_bind_int64(st, 9, a->expires_at)) != SQLITE_OK ||
         (rc = sqlite3_bind_text(st, 10, a->result, -1, SQLITE_STATIC)) != SQLITE_OK ||
         (rc = sqlite3_step(st)) != SQLITE_DONE))
        r = kms_sqlite_error(s->db, rc, "action create");
    sqlite3_finalize(st);
    return r;
}

int kms_sqlite_action_create(kms_store *store, const kms_action_rec *a)
{
    struct sqlite_store *s = kms_sqlite_impl(store);
    kms_sqlite_lock(s);
    int r = kms_sqlite_action_insert(s, a);
    kms_sqlite_unlock(s);
    return r;
}

static int copy_blob(sqlite3_stmt *st, int col, uint8_t *out, size_t cap, size_t *len,
                     const char *what)
{
    int type = sqlite3_column_type(st, col);
    if (type == SQLITE_NULL) {
        *len = 0;
        return KMS_OK;
    }
    int n = sqlite3_column_bytes(st, col);
    const void *b = sqlite3_column_blob(st, col);
    if (type != SQLITE_BLOB || n < 0 || (size_t)n > cap || (n > 0 && b == NULL))
        return kms_error_set(KMS_ESTORE, "store: %s unreadable", what);
    if (n > 0)
        memcpy(out, b, (size_t)n);
    *len = (size_t)n;
    return KMS_OK;
}

/* Reads the action row and its approvals; lock held. */
static int action_read(struct sqlite_store *s, const uint8_t id[KMS_ACTION_ID_LEN],
                       kms_action_rec *a)
{
    int r = KMS_OK, rc;
    sqlite3_int64 state = 0, threshold = 0, created = 0, expires = 0;
    size_t digest_len = 0;
    sqlite3_stmt *st = prepare(s,
                               "SELECT type, body, digest, proposer, state, threshold, created_at,"
                               " expires_at, result, plan FROM actions WHERE id = ?1",
                               &r);
    if (st == NULL)
        return r;
    memset(a, 0, sizeof(*a));
    memcpy(a->id, id, KMS_ACTION_ID_LEN);
    if ((rc = sqlite3_bind_blob(st, 1, id, KMS_ACTION_ID_LEN, SQLITE_STATIC)) != SQLITE_OK) {
        r = kms_sqlite_error(s->db, rc, "action get");
    } else if ((rc = sqlite3_step(st)) == SQLITE_DONE) {
        r = kms_error_set(KMS_ENOTFOUND, "store: no such action");
    } else if (rc != SQLITE_ROW) {
        r = kms_sqlite_error(s->db, rc, "action get");
    } else if ((r = kms_sqlite_copy_text(st, 0, a->type, sizeof(a->type), "action type")) != 0 ||
               (r = copy_blob(st, 1, a->bytes, sizeof(a->bytes), &a->bytes_len, "action body")) !=
                   0 ||
               (r = copy_blob(st, 2, a->digest, sizeof(a->digest), &digest_len, "action digest")) !=
                   0 ||
               (r = kms_sqlite_copy_text(st, 3, a->proposer, sizeof(a->proposer), "proposer")) !=
                   0 ||
               (r = kms_sqlite_int_column(st, 4, 1, 6, &state, "action state")) != 0 ||
               (r = kms_sqlite_int_column(st, 5, 0, UINT32_MAX, &threshold, "threshold")) != 0 ||
               (r = kms_sqlite_int_column(st, 6, INT64_MIN, INT64_MAX, &created, "created_at")) !=
                   0 ||
               (r = kms_sqlite_int_column(st, 7, INT64_MIN, INT64_MAX, &expires, "expires_at")) !=
                   0 ||
               (r = copy_blob(st, 9, a->plan, sizeof(a->plan), &a->plan_len, "action plan")) != 0) {
        /* r set */
    } else {
        const unsigned char *res = sqlite3_column_text(st, 8);
        if (res != NULL)
            snprintf(a->result, sizeof(a->result), "%s", (const char *)res);
        a->state = (kms_action_state)state;
        a->threshold = (uint32_t)threshold;
        a->created_at = created;
        a->expires_at = expires;
        if (digest_len != 32)
            r = kms_error_set(KMS_ESTORE, "store: action digest unreadable");
    }
    sqlite3_finalize(st);
    if (r != 0)
        return r;

    st = prepare(s,
                 "SELECT a.officer_id, a.approved_at FROM approvals a"
                 " JOIN officers o ON o.id = a.officer_id"
                 " WHERE a.action_id = ?1 ORDER BY a.approved_at, a.officer_id",
                 &r);
    if (st == NULL)
        return r;
    if ((rc = sqlite3_bind_blob(st, 1, id, KMS_ACTION_ID_LEN, SQLITE_STATIC)) != SQLITE_OK)
        r = kms_sqlite_error(s->db, rc, "approvals");
    while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW && a->n_approvals < KMS_APPROVALS_MAX) {
        kms_approval_rec *ap = &a->approvals[a->n_approvals];
        sqlite3_int64 at = 0;
        if ((r = kms_sqlite_copy_text(st, 0, ap->officer_id, sizeof(ap->officer_id),
                                      "approval officer")) == 0 &&
            (r = kms_sqlite_int_column(st, 1, INT64_MIN, INT64_MAX, &at, "approved_at")) == 0) {
            ap->approved_at = at;
            a->n_approvals++;
        }
    }
    if (r == 0 && rc != SQLITE_DONE && rc != SQLITE_ROW)
        r = kms_sqlite_error(s->db, rc, "approvals");
    sqlite3_finalize(st);
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
    int r = KMS_OK, rc;
    *n = 0;
    kms_sqlite_lock(s);
    sqlite3_stmt *st = prepare(s,
                               pending_only ? "SELECT id FROM actions WHERE state IN (1, 6)"
                                              " ORDER BY created_at DESC, id LIMIT ?1"
                                            : "SELECT id FROM actions"
                                              " ORDER BY created_at DESC, id LIMIT ?1",
                               &r);
    if (st != NULL) {
        if ((rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)cap)) != SQLITE_OK)
            r = kms_sqlite_error(s->db, rc, "action list");
        while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW && *n < cap)
            if ((r = kms_sqlite_copy_id(st, 0, ids[*n])) == 0)
                (*n)++;
        if (r == 0 && rc != SQLITE_DONE && rc != SQLITE_ROW)
            r = kms_sqlite_error(s->db, rc, "action list");
    }
    sqlite3_finalize(st);
    kms_sqlite_unlock(s);
    return r;
}

/* Runs one UPDATE/INSERT with the id as ?1 and extra int/text bindings. */
static int exec_on_action(struct sqlite_store *s, const char *sql,
                          const uint8_t id[KMS_ACTION_ID_LEN], int *changes)
{
    int r = KMS_OK, rc;
    sqlite3_stmt *st = prepare(s, sql, &r);
    if (st != NULL) {
        if ((rc = sqlite3_bind_blob(st, 1, id, KMS_ACTION_ID_LEN, SQLITE_STATIC)) != SQLITE_OK ||
            (rc = sqlite3_step(st)) != SQLITE_DONE)
            r = kms_sqlite_error(s->db, rc, sql);
        else if (changes != NULL)
            *changes = sqlite3_changes(s->db);
    }
    sqlite3_finalize(st);
    return r;
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
    int r, rc;
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
        /* Record the expiry (a state change the caller may see), then refuse. */
        r = exec_on_action(s, "UPDATE actions SET state = 4 WHERE id = ?1 AND state = 1", id, NULL);
        r = kms_sqlite_tx_end(s, r);
        kms_sqlite_unlock(s);
        free(a);
        return r != 0 ? r : kms_error_set_public(KMS_EPRECOND, "action expired");
    }
    sqlite3_stmt *st = prepare(s,
                               "INSERT INTO approvals (action_id, officer_id, signature,"
                               " approved_at) VALUES (?1, ?2, ?3, ?4)",
                               &r);
    if (st == NULL)
        goto end;
    if ((rc = sqlite3_bind_blob(st, 1, id, KMS_ACTION_ID_LEN, SQLITE_STATIC)) != SQLITE_OK ||
        (rc = sqlite3_bind_text(st, 2, officer_id, -1, SQLITE_STATIC)) != SQLITE_OK ||
        (rc = sqlite3_bind_blob(st, 3, sig, (int)sig_len, SQLITE_STATIC)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(st, 4, now)) != SQLITE_OK ||
        (rc = sqlite3_step(st)) != SQLITE_DONE)
        r = kms_sqlite_error(s->db, rc, "approval");
    sqlite3_finalize(st);
    if (r == KMS_EEXISTS)
        r = kms_error_set(KMS_EEXISTS, "officer %s has approved this action already", officer_id);
    if (r != 0)
        goto end;
    /* Count again from the table: only officers still enrolled count. */
    if ((r = action_read(s, id, a)) != 0)
        goto end;
    if (a->n_approvals >= a->threshold) {
        r = exec_on_action(s, "UPDATE actions SET state = 6 WHERE id = ?1 AND state = 1", id, NULL);
        if (r == 0)
            *reached = 1;
    }
end:
    r = kms_sqlite_tx_end(s, r);
    if (r != 0)
        *reached = 0;
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
    int r = KMS_OK, rc;
    kms_sqlite_lock(s);
    sqlite3_stmt *st = prepare(s, "UPDATE actions SET plan = ?2 WHERE id = ?1 AND state = 6", &r);
    if (st != NULL) {
        if ((rc = sqlite3_bind_blob(st, 1, id, KMS_ACTION_ID_LEN, SQLITE_STATIC)) != SQLITE_OK ||
            (rc = sqlite3_bind_blob(st, 2, plan, (int)len, SQLITE_STATIC)) != SQLITE_OK ||
            (rc = sqlite3_step(st)) != SQLITE_DONE)
            r = kms_sqlite_error(s->db, rc, "action plan");
        else if (sqlite3_changes(s->db) != 1)
            r = kms_error_set(KMS_EPRECOND, "action is not executing");
    }
    sqlite3_finalize(st);
    kms_sqlite_unlock(s);
    return r;
}

int kms_sqlite_action_finish(kms_store *store, const uint8_t id[KMS_ACTION_ID_LEN],
                             kms_action_state state, const char *result)
{
    if ((state != KMS_ACTION_EXECUTED && state != KMS_ACTION_FAILED) || result == NULL)
        return kms_error_set(KMS_EINVAL, "store: bad final state");
    struct sqlite_store *s = kms_sqlite_impl(store);
    int r = KMS_OK, rc;
    char text[KMS_ACTION_RESULT_MAX + 1];
    snprintf(text, sizeof(text), "%s", result);
    kms_sqlite_lock(s);
    sqlite3_stmt *st =
        prepare(s, "UPDATE actions SET state = ?2, result = ?3 WHERE id = ?1 AND state = 6", &r);
    if (st != NULL) {
        if ((rc = sqlite3_bind_blob(st, 1, id, KMS_ACTION_ID_LEN, SQLITE_STATIC)) != SQLITE_OK ||
            (rc = sqlite3_bind_int(st, 2, (int)state)) != SQLITE_OK ||
            (rc = sqlite3_bind_text(st, 3, text, -1, SQLITE_STATIC)) != SQLITE_OK ||
            (rc = sqlite3_step(st)) != SQLITE_DONE)
            r = kms_sqlite_error(s->db, rc, "action finish");
        else if (sqlite3_changes(s->db) != 1)
            r = kms_error_set(KMS_EPRECOND, "action is not executing");
    }
    sqlite3_finalize(st);
    kms_sqlite_unlock(s);
    return r;
}

int kms_sqlite_action_cancel(kms_store *store, const uint8_t id[KMS_ACTION_ID_LEN])
{
    struct sqlite_store *s = kms_sqlite_impl(store);
    int changes = 0;
    kms_sqlite_lock(s);
    int r =
        exec_on_action(s, "UPDATE actions SET state = 3 WHERE id = ?1 AND state = 1", id, &changes);
    kms_sqlite_unlock(s);
    if (r == 0 && changes != 1)
        return kms_error_set(KMS_EPRECOND, "action is not pending");
    return r;
}

int kms_sqlite_action_expire(kms_store *store, int64_t now, size_t *n)
{
    struct sqlite_store *s = kms_sqlite_impl(store);
    int r = KMS_OK, rc;
    *n = 0;
    kms_sqlite_lock(s);
    sqlite3_stmt *st =
        prepare(s, "UPDATE actions SET state = 4 WHERE state = 1 AND expires_at <= ?1", &r);
    if (st != NULL) {
        if ((rc = sqlite3_bind_int64(st, 1, now)) != SQLITE_OK ||
            (rc = sqlite3_step(st)) != SQLITE_DONE)
            r = kms_sqlite_error(s->db, rc, "action expiry");
        else
            *n = (size_t)sqlite3_changes(s->db);
    }
    sqlite3_finalize(st);
    kms_sqlite_unlock(s);
    return r;
}

int kms_sqlite_action_count_pending(kms_store *store, const char *proposer, int64_t now,
                                    uint32_t *n)
{
    struct sqlite_store *s = kms_sqlite_impl(store);
    int r = KMS_OK, rc;
    sqlite3_int64 count = 0;
    *n = 0;
    kms_sqlite_lock(s);
    sqlite3_stmt *st = prepare(s,
                               "SELECT count(*) FROM actions"
                               " WHERE state = 1 AND proposer = ?1 AND expires_at > ?2",
                               &r);
    if (st != NULL) {
        if ((rc = sqlite3_bind_text(st, 1, proposer, -1, SQLITE_STATIC)) != SQLITE_OK ||
            (rc = sqlite3_bind_int64(st, 2, now)) != SQLITE_OK ||
            (rc = sqlite3_step(st)) != SQLITE_ROW)
            r = kms_sqlite_error(s->db, rc, "pending action count");
        else if ((r = kms_sqlite_int_column(st, 0, 0, UINT32_MAX, &count, "count")) == KMS_OK)
            *n = (uint32_t)count;
    }
    sqlite3_finalize(st);
    kms_sqlite_unlock(s);
    return r;
}
