/* The SQLite store, schema 2: key policies, officers and approval
 * thresholds (contract: store.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "kmsd/store/store_sqlite_internal.h"
#include "kmsd/store/store_sqlite_query.h"

#define OFFICER_PAGE 16   /* officers read per lock hold in officer_list */
#define THRESHOLD_PAGE 32 /* thresholds read per lock hold in threshold_list */
#define GRANT_PAGE 32     /* grants read per lock hold in policy_list */
/* ---- ops: authorization (schema 2) -------------------------------------------- */

/* A NUL-terminated string of 1..max bytes within its buffer. */
static int valid_text(const char *t, size_t max)
{
    if (t == NULL)
        return 0;
    size_t n = strnlen(t, max + 1);
    return n >= 1 && n <= max;
}

static int valid_action(kms_key_action a)
{
    switch (a) {
    case KMS_ACTION_ENCRYPT:
    case KMS_ACTION_DECRYPT:
    case KMS_ACTION_REENCRYPT:
        return 1;
    default:
        return 0;
    }
}

int kms_sqlite_policy_set(kms_store *store, const uint8_t key_id[KMS_KEY_ID_LEN],
                          const kms_grant_rec *grants, size_t n)
{
    struct sqlite_store *s;
    int r;

    if (store == NULL || key_id == NULL || (grants == NULL && n > 0))
        return kms_error_set(KMS_EINVAL, "store: no key id or grants");
    for (size_t i = 0; i < n; i++) {
        if (!valid_action(grants[i].action) || !valid_text(grants[i].identity, KMS_IDENTITY_MAX))
            return kms_error_set(KMS_EINVAL,
                                 "store: grant %zu has an unknown action or a bad "
                                 "identity",
                                 i);
        for (size_t j = 0; j < i; j++)
            if (grants[j].action == grants[i].action &&
                strcmp(grants[j].identity, grants[i].identity) == 0)
                return kms_error_set(KMS_EINVAL, "store: grant %zu is listed twice", i);
    }
    s = kms_sqlite_impl(store);

    kms_sqlite_lock(s);
    if ((r = kms_sqlite_tx_begin(s)) != 0)
        goto out;
    if ((r = kms_sqlite_key_exists(s, key_id, "policy set")) != 0 ||
        (r = kms_sq_run(s, ST_POLICY_DELETE, KMS_SQ_ARGS(KMS_SQ_ID(key_id)), NULL)) != 0)
        goto end;
    for (size_t i = 0; i < n && r == 0; i++)
        r = kms_sq_run(s, ST_POLICY_INSERT,
                       KMS_SQ_ARGS(KMS_SQ_ID(key_id), KMS_SQ_INT(grants[i].action),
                                   KMS_SQ_TEXT(grants[i].identity)),
                       NULL);
end:
    r = kms_sqlite_tx_end(s, r);
out:
    kms_sqlite_unlock(s);
    return r;
}

/* One grant read back; identity storage is owned by the page. */
struct grant_row {
    kms_key_action action;
    char identity[KMS_IDENTITY_MAX + 1];
};

/* Reads up to GRANT_PAGE grants after (after_action, after_identity). */
static int grant_page(struct sqlite_store *s, const uint8_t *key_id, kms_key_action after_action,
                      const char *after_identity, struct grant_row *page, size_t *n)
{
    kms_sq q;
    sqlite3_int64 action = 0;
    size_t got = 0;
    int r;

    kms_sqlite_lock(s);
    if ((r = kms_sq_open(&q, s, ST_POLICY_PAGE,
                         KMS_SQ_ARGS(KMS_SQ_ID(key_id), KMS_SQ_INT(after_action),
                                     KMS_SQ_TEXT(after_identity), KMS_SQ_INT(GRANT_PAGE)))) != 0)
        goto out;
    while (got < GRANT_PAGE && (r = kms_sq_step(&q)) == 1) {
        if ((r = kms_sq_int(&q, 0, KMS_ACTION_ENCRYPT, KMS_ACTION_REENCRYPT, &action,
                            "policy action")) != 0 ||
            (r = kms_sq_text(&q, 1, page[got].identity, sizeof(page[got].identity),
                             "policy identity")) != 0)
            goto out;
        page[got].action = (kms_key_action)action;
        got++;
    }
    if (r < 0)
        goto out;
    r = KMS_OK;
    *n = got;
out:
    kms_sq_close(&q);
    kms_sqlite_unlock(s);
    return r;
}

int kms_sqlite_policy_list(kms_store *store, const uint8_t key_id[KMS_KEY_ID_LEN],
                           kms_store_grant_cb cb, void *ctx)
{
    struct grant_row *page = NULL;
    char after[KMS_IDENTITY_MAX + 1] = ""; /* identities are non-empty: "" sorts first */
    kms_key_action after_action = 0;
    size_t n = 0;
    int r = KMS_OK;

    if (store == NULL || key_id == NULL || cb == NULL)
        return kms_error_set(KMS_EINVAL, "store: no key id or callback");
    if ((page = calloc(GRANT_PAGE, sizeof(*page))) == NULL) {
        r = kms_error_set(KMS_ENOMEM, "out of memory");
        goto out;
    }
    do {
        if ((r = grant_page(kms_sqlite_impl(store), key_id, after_action, after, page, &n)) != 0)
            goto out;
        for (size_t i = 0; i < n; i++) {
            kms_grant_rec g = {.action = page[i].action, .identity = page[i].identity};
            if ((r = cb(ctx, &g)) != 0)
                goto out;
        }
        if (n > 0) {
            after_action = page[n - 1].action;
            memcpy(after, page[n - 1].identity, sizeof(after));
        }
    } while (n == GRANT_PAGE);
out:
    free(page);
    return r;
}

int kms_sqlite_officer_add(kms_store *store, const kms_officer_rec *o)
{
    struct sqlite_store *s;
    int r;

    if (store == NULL || o == NULL || !valid_text(o->id, KMS_OFFICER_ID_MAX) ||
        !valid_text(o->identity, KMS_IDENTITY_MAX) ||
        !valid_text(o->signing_key_pem, KMS_SIGNING_KEY_PEM_MAX))
        return kms_error_set(KMS_EINVAL, "store: officer record incomplete or unterminated");
    s = kms_sqlite_impl(store);

    kms_sqlite_lock(s);
    r = kms_sq_run(s, ST_OFFICER_INSERT,
                   KMS_SQ_ARGS(KMS_SQ_TEXT(o->id), KMS_SQ_TEXT(o->identity),
                               KMS_SQ_TEXT(o->signing_key_pem), KMS_SQ_INT(o->created_at)),
                   NULL);
    kms_sqlite_unlock(s);
    return r;
}

int kms_sqlite_officer_remove(kms_store *store, const char *officer_id)
{
    struct sqlite_store *s;
    int r, changes = 0;

    if (store == NULL || !valid_text(officer_id, KMS_OFFICER_ID_MAX))
        return kms_error_set(KMS_EINVAL, "store: no officer id");
    s = kms_sqlite_impl(store);

    kms_sqlite_lock(s);
    r = kms_sq_run(s, ST_OFFICER_DELETE, KMS_SQ_ARGS(KMS_SQ_TEXT(officer_id)), &changes);
    if (r == 0 && changes == 0)
        r = kms_error_set(KMS_ENOTFOUND, "no such officer");
    kms_sqlite_unlock(s);
    return r;
}

static int officer_page(struct sqlite_store *s, const char *after, kms_officer_rec *page, size_t *n)
{
    kms_sq q;
    sqlite3_int64 created = 0;
    size_t got = 0;
    int r;

    kms_sqlite_lock(s);
    if ((r = kms_sq_open(&q, s, ST_OFFICER_PAGE,
                         KMS_SQ_ARGS(KMS_SQ_TEXT(after), KMS_SQ_INT(OFFICER_PAGE)))) != 0)
        goto out;
    while (got < OFFICER_PAGE && (r = kms_sq_step(&q)) == 1) {
        kms_officer_rec *o = &page[got];
        memset(o, 0, sizeof(*o));
        if ((r = kms_sq_text(&q, 0, o->id, sizeof(o->id), "officer id")) != 0 ||
            (r = kms_sq_text(&q, 1, o->identity, sizeof(o->identity), "officer identity")) != 0 ||
            (r = kms_sq_text(&q, 2, o->signing_key_pem, sizeof(o->signing_key_pem),
                             "officer signing key")) != 0 ||
            (r = kms_sq_int(&q, 3, INT64_MIN, INT64_MAX, &created, "officer created_at")) != 0)
            goto out;
        o->created_at = created;
        got++;
    }
    if (r < 0)
        goto out;
    r = KMS_OK;
    *n = got;
out:
    kms_sq_close(&q);
    kms_sqlite_unlock(s);
    return r;
}

int kms_sqlite_officer_list(kms_store *store, kms_store_officer_cb cb, void *ctx)
{
    char after[KMS_OFFICER_ID_MAX + 1] = "";
    kms_officer_rec *page = NULL;
    size_t n = 0;
    int r = KMS_OK;

    if (store == NULL || cb == NULL)
        return kms_error_set(KMS_EINVAL, "store: no callback");
    if ((page = calloc(OFFICER_PAGE, sizeof(*page))) == NULL) {
        r = kms_error_set(KMS_ENOMEM, "out of memory");
        goto out;
    }
    do {
        if ((r = officer_page(kms_sqlite_impl(store), after, page, &n)) != 0)
            goto out;
        for (size_t i = 0; i < n; i++)
            if ((r = cb(ctx, &page[i])) != 0)
                goto out;
        if (n > 0)
            memcpy(after, page[n - 1].id, sizeof(after));
    } while (n == OFFICER_PAGE);
out:
    free(page);
    return r;
}

int kms_sqlite_threshold_set(kms_store *store, const char *action_type, uint32_t threshold)
{
    struct sqlite_store *s;
    int r;

    if (store == NULL || !valid_text(action_type, KMS_ACTION_TYPE_MAX))
        return kms_error_set(KMS_EINVAL, "store: no action type");
    if (threshold < KMS_THRESHOLD_MIN)
        return kms_error_set(KMS_EINVAL,
                             "threshold %u for %s is below %d: no officer may act "
                             "alone",
                             threshold, action_type, KMS_THRESHOLD_MIN);
    s = kms_sqlite_impl(store);

    kms_sqlite_lock(s);
    r = kms_sq_run(s, ST_THRESHOLD_SET,
                   KMS_SQ_ARGS(KMS_SQ_TEXT(action_type), KMS_SQ_INT(threshold)), NULL);
    kms_sqlite_unlock(s);
    return r;
}

int kms_sqlite_threshold_get(kms_store *store, const char *action_type, uint32_t *threshold)
{
    struct sqlite_store *s;
    kms_sq q;
    sqlite3_int64 v = 0;
    int r;

    if (store == NULL || threshold == NULL || !valid_text(action_type, KMS_ACTION_TYPE_MAX))
        return kms_error_set(KMS_EINVAL, "store: no action type");
    s = kms_sqlite_impl(store);

    kms_sqlite_lock(s);
    if ((r = kms_sq_open(&q, s, ST_THRESHOLD_GET, KMS_SQ_ARGS(KMS_SQ_TEXT(action_type)))) != 0 ||
        (r = kms_sq_one(&q, "no threshold for this action type")) != 0 ||
        (r = kms_sq_int(&q, 0, KMS_THRESHOLD_MIN, UINT32_MAX, &v, "threshold")) != 0)
        goto out;
    *threshold = (uint32_t)v;
out:
    kms_sq_close(&q);
    kms_sqlite_unlock(s);
    return r;
}

struct threshold_row {
    char action_type[KMS_ACTION_TYPE_MAX + 1];
    uint32_t threshold;
};

static int threshold_page(struct sqlite_store *s, const char *after, struct threshold_row *page,
                          size_t *n)
{
    kms_sq q;
    sqlite3_int64 v = 0;
    size_t got = 0;
    int r;

    kms_sqlite_lock(s);
    if ((r = kms_sq_open(&q, s, ST_THRESHOLD_PAGE,
                         KMS_SQ_ARGS(KMS_SQ_TEXT(after), KMS_SQ_INT(THRESHOLD_PAGE)))) != 0)
        goto out;
    while (got < THRESHOLD_PAGE && (r = kms_sq_step(&q)) == 1) {
        if ((r = kms_sq_text(&q, 0, page[got].action_type, sizeof(page[got].action_type),
                             "action type")) != 0 ||
            (r = kms_sq_int(&q, 1, KMS_THRESHOLD_MIN, UINT32_MAX, &v, "threshold")) != 0)
            goto out;
        page[got].threshold = (uint32_t)v;
        got++;
    }
    if (r < 0)
        goto out;
    r = KMS_OK;
    *n = got;
out:
    kms_sq_close(&q);
    kms_sqlite_unlock(s);
    return r;
}

int kms_sqlite_threshold_list(kms_store *store, kms_store_threshold_cb cb, void *ctx)
{
    char after[KMS_ACTION_TYPE_MAX + 1] = "";
    struct threshold_row *page = NULL;
    size_t n = 0;
    int r = KMS_OK;

    if (store == NULL || cb == NULL)
        return kms_error_set(KMS_EINVAL, "store: no callback");
    if ((page = calloc(THRESHOLD_PAGE, sizeof(*page))) == NULL) {
        r = kms_error_set(KMS_ENOMEM, "out of memory");
        goto out;
    }
    do {
        if ((r = threshold_page(kms_sqlite_impl(store), after, page, &n)) != 0)
            goto out;
        for (size_t i = 0; i < n; i++)
            if ((r = cb(ctx, page[i].action_type, page[i].threshold)) != 0)
                goto out;
        if (n > 0)
            memcpy(after, page[n - 1].action_type, sizeof(after));
    } while (n == THRESHOLD_PAGE);
out:
    free(page);
    return r;
}
