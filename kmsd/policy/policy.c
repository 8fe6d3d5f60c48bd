/* Authorization: key policies and the officer set, cached over the store.
 *
 * Locking: one rwlock guards the cache and the officer set. Readers decide
 * under the read lock and copy what they return, so no pointer into the
 * cache escapes it; that lets invalidation free entries. Store reads happen
 * outside the lock.
 *
 * Generations: a store read outside the lock may race with a change and its
 * invalidation. Every invalidation bumps `gen` under the write lock; a miss
 * notes `gen` before its store read and inserts what it read only if `gen`
 * is unchanged, else it reads again. An officer reload is numbered before
 * its read and installs its set only over an older reload's. So an
 * invalidation that runs between a read and its insert is never lost. */
#include "kmsd/policy/policy.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

#define NBUCKETS 256

struct entry {
    kms_key_rec rec;
    kms_key_policy policy;
    struct entry *next_by_id;
    struct entry *next_by_name;
};

struct kms_policy {
    kms_store *store;
    pthread_rwlock_t lock;
    struct entry *by_id[NBUCKETS];
    struct entry *by_name[NBUCKETS];
    char **officers; /* sorted */
    size_t n_officers;
    char **auditors; /* sorted */
    size_t n_auditors;
    atomic_uint_fast64_t auditor_reads; /* numbers auditor reloads */
    uint_fast64_t auditors_from;        /* the reload the set came from (under the lock) */
    atomic_uint_fast64_t gen;           /* bumped by every invalidation (under the lock) */
    atomic_uint_fast64_t officer_reads; /* numbers officer reloads */
    uint_fast64_t officers_from;        /* the reload the set came from (under the lock) */
};

/* Reads that lose the race this many times in a row are served uncached. */
#define LOAD_TRIES 8

const char *kms_policy_perm_name(kms_perm p)
{
    switch (p) {
    case KMS_PERM_PEER:
        return "peer";
    case KMS_PERM_ENCRYPT:
        return "encrypt";
    case KMS_PERM_DECRYPT:
        return "decrypt";
    case KMS_PERM_REENCRYPT:
        return "reencrypt";
    case KMS_PERM_DESCRIBE:
        return "describe";
    case KMS_PERM_LIST:
        return "list";
    case KMS_PERM_OFFICER:
        return "officer";
    case KMS_PERM_AUDITOR:
        return "auditor";
    default:
        return "?";
    }
}

/* ---- one key's policy ---------------------------------------------------------- */

static int valid_action(kms_key_action a)
{
    return a == KMS_ACTION_ENCRYPT || a == KMS_ACTION_DECRYPT || a == KMS_ACTION_REENCRYPT;
}

int kms_policy_allows(const kms_key_policy *kp, kms_key_action action, const char *identity)
{
    if (kp == NULL || identity == NULL || !valid_action(action))
        return 0;
    size_t i = (size_t)action - 1;
    for (size_t j = 0; j < kp->n[i]; j++)
        if (strcmp(kp->ids[i][j], identity) == 0)
            return 1;
    return 0;
}

int kms_policy_names(const kms_key_policy *kp, const char *identity)
{
    return kms_policy_allows(kp, KMS_ACTION_ENCRYPT, identity) ||
           kms_policy_allows(kp, KMS_ACTION_DECRYPT, identity) ||
           kms_policy_allows(kp, KMS_ACTION_REENCRYPT, identity);
}

void kms_policy_clear(kms_key_policy *kp)
{
    if (kp == NULL)
        return;
    for (size_t i = 0; i < 3; i++) {
        for (size_t j = 0; j < kp->n[i]; j++)
            free(kp->ids[i][j]);
        free(kp->ids[i]);
    }
    memset(kp, 0, sizeof(*kp));
}

static int policy_add(kms_key_policy *kp, kms_key_action action, const char *identity)
{
    if (!valid_action(action))
        return kms_error_set(KMS_ESTORE, "policy: unknown action %d", (int)action);
    size_t i = (size_t)action - 1;
    char **v = realloc(kp->ids[i], (kp->n[i] + 1) * sizeof(*v));
    if (v == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    kp->ids[i] = v;
    size_t len = strlen(identity);
    if ((v[kp->n[i]] = malloc(len + 1)) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    memcpy(v[kp->n[i]], identity, len + 1);
    kp->n[i]++;
    return KMS_OK;
}

static int collect_grant(void *ctx, const kms_grant_rec *g)
{
    return policy_add(ctx, g->action, g->identity);
}

int kms_policy_load(kms_store *store, const uint8_t key_id[KMS_KEY_ID_LEN], kms_key_policy *out)
{
    kms_key_policy kp;
    memset(&kp, 0, sizeof(kp));
    if (store == NULL || key_id == NULL || out == NULL)
        return kms_error_set(KMS_EINVAL, "policy: no store or key");
    int r = store->ops->policy_list(store, key_id, collect_grant, &kp);
    if (r != 0) {
        kms_policy_clear(&kp);
        return r;
    }
    *out = kp;
    return KMS_OK;
}

static int policy_copy(const kms_key_policy *kp, kms_key_policy *out)
{
    kms_key_policy c;
    memset(&c, 0, sizeof(c));
    for (size_t i = 0; i < 3; i++) {
        for (size_t j = 0; j < kp->n[i]; j++) {
            int r = policy_add(&c, (kms_key_action)(i + 1), kp->ids[i][j]);
            if (r != 0) {
                kms_policy_clear(&c);
                return r;
            }
        }
    }
    *out = c;
    return KMS_OK;
}

/* ---- cache --------------------------------------------------------------------- */

static size_t hash(const void *data, size_t len)
{
    const uint8_t *b = data;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ b[i]) * 1099511628211ULL;
    return (size_t)(h % NBUCKETS);
}

static struct entry *find_id(kms_policy *p, const uint8_t *id)
{
    for (struct entry *e = p->by_id[hash(id, KMS_KEY_ID_LEN)]; e; e = e->next_by_id)
        if (memcmp(e->rec.id, id, KMS_KEY_ID_LEN) == 0)
            return e;
    return NULL;
}

static struct entry *find_name(kms_policy *p, const char *name)
{
    for (struct entry *e = p->by_name[hash(name, strlen(name))]; e; e = e->next_by_name)
        if (strcmp(e->rec.name, name) == 0)
            return e;
    return NULL;
}

static void entry_free(struct entry *e)
{
    if (e == NULL)
        return;
    kms_policy_clear(&e->policy);
    free(e);
}

/* Loads key + policy from the store into a new entry (no lock held). */
static int load_entry(kms_policy *p, const char *name, const uint8_t *id, struct entry **out)
{
    struct entry *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    int r = name ? p->store->ops->key_get_by_name(p->store, name, &e->rec)
                 : p->store->ops->key_get_by_id(p->store, id, &e->rec);
    if (r == 0)
        r = kms_policy_load(p->store, e->rec.id, &e->policy);
    if (r != 0) {
        entry_free(e);
        return r;
    }
    *out = e;
    return KMS_OK;
}

/* Runs fn on the entry for (name | id) under the read lock, loading it into
 * the cache first if needed. */
typedef int (*entry_fn)(kms_policy *p, const struct entry *e, void *ctx);

static int with_entry(kms_policy *p, const char *name, const uint8_t *id, entry_fn fn, void *ctx)
{
    int r;
    pthread_rwlock_rdlock(&p->lock);
    struct entry *e = name ? find_name(p, name) : find_id(p, id);
    if (e != NULL) {
        r = fn(p, e, ctx);
        pthread_rwlock_unlock(&p->lock);
        return r;
    }
    pthread_rwlock_unlock(&p->lock);

    struct entry *fresh = NULL;
    int stale = 1;
    for (int tries = 0; stale; tries++) {
        uint_fast64_t g = atomic_load(&p->gen);
        KMS_GUARD(load_entry(p, name, id, &fresh));
        pthread_rwlock_wrlock(&p->lock);
        /* An invalidation ran since the read: what it read may be stale. */
        stale = atomic_load(&p->gen) != g;
        if (!stale || tries + 1 == LOAD_TRIES)
            break;
        pthread_rwlock_unlock(&p->lock);
        entry_free(fresh);
        fresh = NULL;
    }
    if (stale) {
        /* Changed under every read: answer from the newest read, cache none. */
        r = fn(p, fresh, ctx);
        pthread_rwlock_unlock(&p->lock);
        entry_free(fresh);
        return r;
    }
    e = find_id(p, fresh->rec.id); /* another thread may have loaded it */
    if (e == NULL) {
        size_t ib = hash(fresh->rec.id, KMS_KEY_ID_LEN);
        size_t nb = hash(fresh->rec.name, strlen(fresh->rec.name));
        fresh->next_by_id = p->by_id[ib];
        p->by_id[ib] = fresh;
        fresh->next_by_name = p->by_name[nb];
        p->by_name[nb] = fresh;
        e = fresh;
        fresh = NULL;
    }
    r = fn(p, e, ctx);
    pthread_rwlock_unlock(&p->lock);
    entry_free(fresh);
    return r;
}

/* ---- officers ------------------------------------------------------------------ */

struct officer_list {
    char **v;
    size_t n;
};

/* Appends a copy of identity (a bounded field of cap bytes) to l. */
static int collect_identity(struct officer_list *l, const char *identity, size_t cap)
{
    char **v = realloc(l->v, (l->n + 1) * sizeof(*v));
    if (v == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    l->v = v;
    size_t len = strnlen(identity, cap - 1);
    if ((v[l->n] = malloc(len + 1)) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    memcpy(v[l->n], identity, len);
    v[l->n][len] = '\0';
    l->n++;
    return KMS_OK;
}

static int collect_officer(void *ctx, const kms_officer_rec *o)
{
    return collect_identity(ctx, o->identity, sizeof(o->identity));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void officers_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* One identity set (officers, auditors) read afresh: l is what reload
 * number `mine` read, sorted here and installed under the lock unless a
 * later-started (so later-read) reload installed already. l is consumed. */
static int install_set(kms_policy *p, struct officer_list *l, uint_fast64_t mine, char ***set,
                       size_t *n, uint_fast64_t *from)
{
    if (l->n > 1)
        qsort(l->v, l->n, sizeof(*l->v), cmp_str);
    pthread_rwlock_wrlock(&p->lock);
    if (mine < *from) {
        pthread_rwlock_unlock(&p->lock);
        officers_free(l->v, l->n);
        return KMS_OK;
    }
    char **old = *set;
    size_t old_n = *n;
    *set = l->v;
    *n = l->n;
    *from = mine;
    atomic_fetch_add(&p->gen, 1);
    pthread_rwlock_unlock(&p->lock);
    officers_free(old, old_n);
    return KMS_OK;
}

int kms_policy_reload_officers(kms_policy *p)
{
    if (p == NULL)
        return kms_error_set(KMS_EINVAL, "no policy");
    struct officer_list l = {0};
    uint_fast64_t mine = atomic_fetch_add(&p->officer_reads, 1) + 1;
    int r = p->store->ops->officer_list(p->store, collect_officer, &l);
    if (r != 0) {
        officers_free(l.v, l.n);
        return r;
    }
    return install_set(p, &l, mine, &p->officers, &p->n_officers, &p->officers_from);
}

/* Caller holds the lock. */
static int is_officer_locked(const kms_policy *p, const char *identity)
{
    return p->n_officers > 0 &&
           bsearch(&identity, p->officers, p->n_officers, sizeof(*p->officers), cmp_str) != NULL;
}

int kms_policy_is_officer(kms_policy *p, const char *identity)
{
    if (p == NULL || identity == NULL)
        return 0;
    pthread_rwlock_rdlock(&p->lock);
    int r = is_officer_locked(p, identity);
    pthread_rwlock_unlock(&p->lock);
    return r;
}

/* ---- auditors ------------------------------------------------------------------ */

static int collect_auditor(void *ctx, const kms_auditor_rec *a)
{
    return collect_identity(ctx, a->identity, sizeof(a->identity));
}

int kms_policy_reload_auditors(kms_policy *p)
{
    if (p == NULL)
        return kms_error_set(KMS_EINVAL, "no policy");
    struct officer_list l = {0};
    uint_fast64_t mine = atomic_fetch_add(&p->auditor_reads, 1) + 1;
    int r = p->store->ops->auditor_list(p->store, collect_auditor, &l);
    if (r != 0) {
        officers_free(l.v, l.n);
        return r;
    }
    return install_set(p, &l, mine, &p->auditors, &p->n_auditors, &p->auditors_from);
}

int kms_policy_is_auditor(kms_policy *p, const char *identity)
{
    if (p == NULL || identity == NULL)
        return 0;
    pthread_rwlock_rdlock(&p->lock);
    int r = p->n_auditors > 0 &&
            bsearch(&identity, p->auditors, p->n_auditors, sizeof(*p->auditors), cmp_str) != NULL;
    pthread_rwlock_unlock(&p->lock);
    return r;
}

/* ---- public ----------------------------------------------------------------------- */

int kms_policy_open(kms_store *store, kms_policy **out)
{
    if (store == NULL || out == NULL)
        return kms_error_set(KMS_EINVAL, "policy needs a store");
    kms_policy *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    p->store = store;
    if (pthread_rwlock_init(&p->lock, NULL) != 0) {
        free(p);
        return kms_error_set(KMS_ENOMEM, "cannot create lock");
    }
    int r = kms_policy_reload_officers(p);
    if (r == 0)
        r = kms_policy_reload_auditors(p);
    if (r != 0) {
        kms_policy_close(p);
        return r;
    }
    *out = p;
    return KMS_OK;
}

void kms_policy_close(kms_policy *p)
{
    if (p == NULL)
        return;
    for (size_t b = 0; b < NBUCKETS; b++) {
        struct entry *e = p->by_id[b];
        while (e) {
            struct entry *next = e->next_by_id;
            entry_free(e);
            e = next;
        }
    }
    officers_free(p->officers, p->n_officers);
    officers_free(p->auditors, p->n_auditors);
    pthread_rwlock_destroy(&p->lock);
    free(p);
}

struct check_ctx {
    const char *identity;
    kms_perm perm;
    kms_key_rec *rec;
};

static int check_entry(kms_policy *p, const struct entry *e, void *ctx)
{
    struct check_ctx *c = ctx;
    int allowed;
    if (c->perm == KMS_PERM_DESCRIBE)
        allowed = is_officer_locked(p, c->identity) || kms_policy_names(&e->policy, c->identity);
    else
        allowed = !is_officer_locked(p, c->identity) &&
                  kms_policy_allows(&e->policy, (kms_key_action)c->perm, c->identity);
    if (!allowed)
        return kms_error_set(KMS_EDENIED, "%s on key %s not granted", kms_policy_perm_name(c->perm),
                             e->rec.name);
    if (c->rec)
        *c->rec = e->rec;
    return KMS_OK;
}

int kms_policy_check(kms_policy *p, const char *identity, const char *key_name,
                     const uint8_t *key_id, kms_perm perm, kms_key_rec *rec)
{
    if (p == NULL || identity == NULL || (key_name == NULL && key_id == NULL))
        return kms_error_set(KMS_EINVAL, "policy check: no identity or key");
    if (perm != KMS_PERM_ENCRYPT && perm != KMS_PERM_DECRYPT && perm != KMS_PERM_REENCRYPT &&
        perm != KMS_PERM_DESCRIBE)
        return kms_error_set(KMS_EINVAL, "policy check: %s is not a key permission",
                             kms_policy_perm_name(perm));
    struct check_ctx c = {.identity = identity, .perm = perm, .rec = rec};
    int r = KMS_ENOTFOUND;
    if (key_name == NULL || strnlen(key_name, KMS_KEY_NAME_MAX + 1) <= KMS_KEY_NAME_MAX)
        r = with_entry(p, key_name, key_id, check_entry, &c);
    if (r == KMS_EINVAL && key_name != NULL) /* the store refuses an empty name */
        r = KMS_ENOTFOUND;
    if (r != KMS_ENOTFOUND)
        return r;
    /* No such key. Only officers, who may list every key, learn that; anyone
     * else gets the answer for a key they have no rights on, so that key
     * names cannot be probed. */
    if (perm == KMS_PERM_DESCRIBE && kms_policy_is_officer(p, identity))
        return kms_error_set(KMS_ENOTFOUND, "no such key");
    return kms_error_set(KMS_EDENIED, "%s not granted: no such key", kms_policy_perm_name(perm));
}

static int copy_entry_policy(kms_policy *p, const struct entry *e, void *ctx)
{
    (void)p;
    return policy_copy(&e->policy, ctx);
}

int kms_policy_get(kms_policy *p, const uint8_t key_id[KMS_KEY_ID_LEN], kms_key_policy *out)
{
    if (p == NULL || key_id == NULL || out == NULL)
        return kms_error_set(KMS_EINVAL, "policy get: no key");
    return with_entry(p, NULL, key_id, copy_entry_policy, out);
}

void kms_policy_invalidate(kms_policy *p, const uint8_t key_id[KMS_KEY_ID_LEN])
{
    if (p == NULL || key_id == NULL)
        return;
    pthread_rwlock_wrlock(&p->lock);
    atomic_fetch_add(&p->gen, 1); /* a load in flight must not insert what it read */
    struct entry *e = find_id(p, key_id);
    if (e != NULL) {
        struct entry **pp = &p->by_id[hash(key_id, KMS_KEY_ID_LEN)];
        while (*pp != e)
            pp = &(*pp)->next_by_id;
        *pp = e->next_by_id;
        pp = &p->by_name[hash(e->rec.name, strlen(e->rec.name))];
        while (*pp != e)
            pp = &(*pp)->next_by_name;
        *pp = e->next_by_name;
    }
    pthread_rwlock_unlock(&p->lock);
    entry_free(e);
}
