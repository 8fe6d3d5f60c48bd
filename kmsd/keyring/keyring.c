/* The keyring: named master keys over the store and the backends.
 *
 * Backends: the keyring holds every configured backend instance (one per
 * backend and mode), under the name a key record stores for it, and closes
 * those it adopted. Which stored name means which (backend, mode) is said
 * once, in stored_names below; nothing else builds or takes apart those
 * strings.
 *
 * Locking: `lock` (rwlock) guards the key index; each key entry has its own
 * mutex guarding its versions, leases and opened backend keys. Backend
 * wrap/unwrap run outside every keyring lock, so calls on one key proceed in
 * parallel. Opened backend keys live until the keyring closes.
 *
 * Generations: a key is loaded from the store outside the lock, so a change
 * committed between that read and the insert (a deletion scheduled, a
 * version disabled) would leave a stale entry. kms_keyring_refresh, called
 * after every such change, bumps `gen` first; a load notes `gen` before its
 * store read and inserts only if it is unchanged, else reads again. */
#include "base/alloc.h"
#include "kmsd/keyring/keyring.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kmsd/keyring/blob.h"
#include "base/crashpoint.h"
#include "base/log.h"

#define MAX_BACKENDS 4
#define LEASE_DEFAULT 4096
#define AAD_MAX (KMS_BLOB_AAD_HEADER_LEN + KMS_CONTEXT_MAX_ENCODED)

/* One version of a cached key. Its backend reference is kept at its own
 * length: a kms_backend_ref is 2 KiB (room for a TPM's sealed blobs), and
 * held in every slot it grew kmsd by 2 KiB a version, plus the heap holes
 * that moving an ever larger array leaves. */
struct version_slot {
    uint32_t version;
    kms_version_state state;
    uint8_t *ref; /* ref_len bytes of the backend's reference */
    size_t ref_len;
    kms_backend_key *bk; /* opened on first use */
    uint64_t reserved;   /* IVs reserved in the store (the stored usage count) */
    uint64_t used;       /* IVs handed out; used <= reserved */
};

struct key_entry {
    kms_key_rec rec;
    kms_backend *backend;
    pthread_mutex_t mu;
    struct version_slot *versions; /* sorted by version */
    size_t nversions;
    struct key_entry *next_by_name;
    struct key_entry *next_by_id;
};

/* A registered backend instance and the name key records store for it. */
struct backend_slot {
    kms_backend *b;
    const char *stored; /* a stored_names row, or b->ops->name for a modeless fake */
    int owned;          /* adopted: closed with the keyring */
};

struct kms_keyring {
    kms_store *store;
    uint64_t nonce_limit;
    uint64_t rotate_at;
    uint32_t lease;
    kms_clock clock;
    struct backend_slot backends[MAX_BACKENDS];
    size_t nbackends;
    kms_keyring_rotation_recorder recorder; /* records automatic rotations */
    void *recorder_ctx;

    pthread_rwlock_t lock;
    struct key_entry **by_name; /* hash buckets */
    struct key_entry **by_id;
    size_t nbuckets;
    size_t nkeys;
    atomic_uint_fast64_t gen; /* bumped by every refresh (see above) */
};

/* Loads that lose the race this many times in a row fail (KMS_EUNAVAIL). */
#define LOAD_TRIES 8

/* ---- index ---------------------------------------------------------------- */

static uint64_t fnv1a(const void *data, size_t len)
{
    const uint8_t *p = data;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static size_t name_bucket(const kms_keyring *kr, const char *name)
{
    return (size_t)(fnv1a(name, strlen(name)) % kr->nbuckets);
}

static size_t id_bucket(const kms_keyring *kr, const uint8_t *id)
{
    return (size_t)(fnv1a(id, KMS_KEY_ID_LEN) % kr->nbuckets);
}

static struct key_entry *find_by_name(const kms_keyring *kr, const char *name)
{
    for (struct key_entry *e = kr->by_name[name_bucket(kr, name)]; e; e = e->next_by_name)
        if (strcmp(e->rec.name, name) == 0)
            return e;
    return NULL;
}

static struct key_entry *find_by_id(const kms_keyring *kr, const uint8_t *id)
{
    for (struct key_entry *e = kr->by_id[id_bucket(kr, id)]; e; e = e->next_by_id)
        if (memcmp(e->rec.id, id, KMS_KEY_ID_LEN) == 0)
            return e;
    return NULL;
}

static void link_entry(kms_keyring *kr, struct key_entry *e)
{
    size_t nb = name_bucket(kr, e->rec.name), ib = id_bucket(kr, e->rec.id);
    e->next_by_name = kr->by_name[nb];
    kr->by_name[nb] = e;
    e->next_by_id = kr->by_id[ib];
    kr->by_id[ib] = e;
    kr->nkeys++;
}

/* Doubles the bucket arrays when the index is full; on allocation failure
 * the index simply stays denser. Caller holds the write lock. */
static void maybe_grow(kms_keyring *kr)
{
    if (kr->nkeys < kr->nbuckets)
        return;
    size_t old_n = kr->nbuckets;
    struct key_entry **old_name = kr->by_name;
    struct key_entry **nn = kms_calloc(old_n * 2, sizeof(*nn));
    struct key_entry **ni = kms_calloc(old_n * 2, sizeof(*ni));
    if (nn == NULL || ni == NULL) {
        kms_free(nn);
        kms_free(ni);
        return;
    }
    kms_free(kr->by_id);
    kr->by_name = nn;
    kr->by_id = ni;
    kr->nbuckets = old_n * 2;
    kr->nkeys = 0;
    for (size_t b = 0; b < old_n; b++) {
        struct key_entry *e = old_name[b];
        while (e) {
            struct key_entry *next = e->next_by_name;
            link_entry(kr, e);
            e = next;
        }
    }
    kms_free(old_name);
}

/* ---- backend names ---------------------------------------------------------- */

/* The one table of stored backend names. A key record keeps, in one string,
 * the backend and mode its versions live in; these strings are in every
 * existing database, so a row is never changed, only added. */
static const struct stored_name {
    const char *stored;
    const char *backend; /* kms_backend_ops.name */
    const char *mode;    /* kms_backend_mode.name */
} stored_names[] = {
    {"pkcs11", "pkcs11", ""},
    {"tpm2", "tpm2", "sealed"},
    {"tpm2-resident", "tpm2", "resident"},
};

#define N_STORED_NAMES (sizeof(stored_names) / sizeof(stored_names[0]))

int kms_keyring_backend_name(const char *backend, const char *mode, const char **stored)
{
    if (backend == NULL || mode == NULL || stored == NULL)
        return kms_error_set(KMS_EINVAL, "no backend");
    for (size_t i = 0; i < N_STORED_NAMES; i++)
        if (strcmp(stored_names[i].backend, backend) == 0 &&
            strcmp(stored_names[i].mode, mode) == 0) {
            *stored = stored_names[i].stored;
            return KMS_OK;
        }
    return kms_error_set(KMS_EINVAL, "unknown backend/mode %.16s/%.16s", backend, mode);
}

void kms_keyring_backend_of_name(const char *stored, const char **backend, const char **mode)
{
    for (size_t i = 0; i < N_STORED_NAMES; i++)
        if (strcmp(stored_names[i].stored, stored) == 0) {
            *backend = stored_names[i].backend;
            *mode = stored_names[i].mode;
            return;
        }
    *backend = stored;
    *mode = "";
}

static kms_backend *backend_named(const kms_keyring *kr, const char *stored)
{
    for (size_t i = 0; i < kr->nbackends; i++)
        if (strcmp(kr->backends[i].stored, stored) == 0)
            return kr->backends[i].b;
    return NULL;
}

/* The stored name of a registered instance. */
static const char *stored_name_of(const kms_keyring *kr, const kms_backend *b)
{
    for (size_t i = 0; i < kr->nbackends; i++)
        if (kr->backends[i].b == b)
            return kr->backends[i].stored;
    return "?";
}

/* Keeps a copy of ref in slot s (whose ref is empty). */
static int slot_set_ref(struct version_slot *s, const kms_backend_ref *ref)
{
    if (ref->len > sizeof(ref->bytes))
        return kms_error_set(KMS_EINVAL, "backend reference of %zu bytes", ref->len);
    s->ref = kms_malloc(ref->len ? ref->len : 1);
    if (s->ref == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    memcpy(s->ref, ref->bytes, ref->len);
    s->ref_len = ref->len;
    return KMS_OK;
}

/* The slot's reference as the backend ops take it. */
static void slot_ref(const struct version_slot *s, kms_backend_ref *out)
{
    memcpy(out->bytes, s->ref, s->ref_len);
    out->len = s->ref_len;
}

static void slot_clear_ref(struct version_slot *s)
{
    if (s->ref != NULL) {
        OPENSSL_cleanse(s->ref, s->ref_len);
        kms_free(s->ref);
    }
    s->ref = NULL;
    s->ref_len = 0;
}

static void slots_free(struct version_slot *v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        slot_clear_ref(&v[i]);
    kms_free(v);
}

static void entry_free(struct key_entry *e)
{
    if (e == NULL)
        return;
    for (size_t i = 0; i < e->nversions; i++)
        if (e->versions[i].bk)
            e->backend->ops->release_version(e->backend, e->versions[i].bk);
    slots_free(e->versions, e->nversions);
    pthread_mutex_destroy(&e->mu);
    kms_free(e);
}

/* ---- loading from the store ------------------------------------------------ */

struct version_list {
    struct version_slot *slots;
    size_t n, cap;
    int err;
};

static int collect_version(void *ctx, const kms_version_rec *v)
{
    struct version_list *l = ctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        struct version_slot *s = kms_realloc(l->slots, cap * sizeof(*s));
        if (s == NULL)
            return kms_error_set(KMS_ENOMEM, "out of memory");
        l->slots = s;
        l->cap = cap;
    }
    struct version_slot *slot = &l->slots[l->n];
    memset(slot, 0, sizeof(*slot));
    int r = slot_set_ref(slot, &v->ref);
    if (r != 0)
        return r;
    l->n++;
    slot->version = v->version;
    slot->state = v->state;
    slot->reserved = v->usage_count;
    slot->used = v->usage_count; /* IVs leased before a restart count as used */
    return KMS_OK;
}

/* Reads a key and its versions from the store into a new entry. */
static int load_entry(kms_keyring *kr, const kms_key_rec *rec, struct key_entry **out)
{
    kms_backend *b = backend_named(kr, rec->backend);
    if (b == NULL)
        return kms_error_set(KMS_EUNAVAIL, "key %s uses backend %s, which is not configured",
                             rec->name, rec->backend);
    struct key_entry *e = kms_calloc(1, sizeof(*e));
    if (e == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    struct version_list l = {0};
    int r = kr->store->ops->version_list(kr->store, rec->id, collect_version, &l);
    if (r != 0) {
        slots_free(l.slots, l.n);
        kms_free(e);
        return r;
    }
    e->rec = *rec;
    e->backend = b;
    e->versions = l.slots;
    e->nversions = l.n;
    pthread_mutex_init(&e->mu, NULL);
    *out = e;
    return KMS_OK;
}

/* Finds a key by name or id, loading it from the store on first use. */
static int get_entry(kms_keyring *kr, const char *name, const uint8_t *id, struct key_entry **out)
{
    pthread_rwlock_rdlock(&kr->lock);
    struct key_entry *e = name ? find_by_name(kr, name) : find_by_id(kr, id);
    pthread_rwlock_unlock(&kr->lock);
    if (e) {
        *out = e;
        return KMS_OK;
    }

    kms_key_rec rec;
    struct key_entry *fresh = NULL;
    for (int tries = 0;; tries++) {
        if (tries == LOAD_TRIES)
            return kms_error_set(KMS_EUNAVAIL, "key changed under every load: try again");
        uint_fast64_t g = atomic_load(&kr->gen);
        int r = name ? kr->store->ops->key_get_by_name(kr->store, name, &rec)
                     : kr->store->ops->key_get_by_id(kr->store, id, &rec);
        if (r != 0)
            return r;
        if (rec.primary_version == 0) /* not cached: creating it again completes it */
            return kms_error_set_public(
                KMS_EPRECOND, "key %s is incomplete: its creation was interrupted", rec.name);
        KMS_GUARD(load_entry(kr, &rec, &fresh));
        pthread_rwlock_wrlock(&kr->lock);
        if (atomic_load(&kr->gen) == g)
            break; /* with the lock held */
        /* A refresh ran since the read: what was read may be stale. */
        pthread_rwlock_unlock(&kr->lock);
        entry_free(fresh);
        fresh = NULL;
    }
    e = find_by_id(kr, rec.id); /* another thread may have loaded it meanwhile */
    if (e == NULL) {
        maybe_grow(kr);
        link_entry(kr, fresh);
        e = fresh;
        fresh = NULL;
    }
    pthread_rwlock_unlock(&kr->lock);
    entry_free(fresh);
    *out = e;
    return KMS_OK;
}

static struct version_slot *find_version(struct key_entry *e, uint32_t version)
{
    for (size_t i = 0; i < e->nversions; i++)
        if (e->versions[i].version == version)
            return &e->versions[i];
    return NULL;
}

/* Opens (and so checks) a version's backend key on first use. Entry locked. */
static int ensure_open(struct key_entry *e, struct version_slot *v)
{
    if (v->bk)
        return KMS_OK;
    kms_backend_ref ref;
    slot_ref(v, &ref);
    int r = e->backend->ops->open_version(e->backend, &ref, &v->bk);
    OPENSSL_cleanse(&ref, sizeof(ref));
    if (r != 0)
        kms_log_error("key %s version %u cannot be used: %s (%s)", e->rec.name, v->version,
                      kms_strerror(r), kms_error_detail());
    return r;
}

/* ---- public: lifecycle ------------------------------------------------------ */

int kms_keyring_open(kms_store *store, const kms_keyring_config *cfg, kms_keyring **out)
{
    if (store == NULL || out == NULL)
        return kms_error_set(KMS_EINVAL, "keyring needs a store");
    kms_keyring_config c = cfg ? *cfg : (kms_keyring_config){0};
    if (c.nonce_limit == 0)
        c.nonce_limit = KMS_NONCE_LIMIT;
    if (c.rotate_at == 0)
        c.rotate_at = c.nonce_limit / 10 * 9;
    if (c.lease == 0)
        c.lease = LEASE_DEFAULT;
    if (c.nonce_limit > KMS_NONCE_LIMIT || c.rotate_at > c.nonce_limit)
        return kms_error_set(KMS_EINVAL, "nonce limit above 2^32 or rotation point above it");

    kms_keyring *kr = kms_calloc(1, sizeof(*kr));
    if (kr == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    kr->nbuckets = 64;
    kr->by_name = kms_calloc(kr->nbuckets, sizeof(*kr->by_name));
    kr->by_id = kms_calloc(kr->nbuckets, sizeof(*kr->by_id));
    if (kr->by_name == NULL || kr->by_id == NULL) {
        kms_free(kr->by_name);
        kms_free(kr->by_id);
        kms_free(kr);
        return kms_error_set(KMS_ENOMEM, "out of memory");
    }
    kr->store = store;
    kr->nonce_limit = c.nonce_limit;
    kr->rotate_at = c.rotate_at;
    kr->clock = c.clock;
    kr->lease = c.lease;
    pthread_rwlock_init(&kr->lock, NULL);
    *out = kr;
    return KMS_OK;
}

static int register_backend(kms_keyring *kr, kms_backend *b, int owned)
{
    if (kr == NULL || b == NULL || b->ops == NULL || b->ops->name == NULL)
        return kms_error_set(KMS_EINVAL, "no backend");
    const char *stored = b->ops->name; /* a backend without modes: its name */
    if (b->ops->modes != NULL) {
        if (b->mode >= b->ops->n_modes)
            return kms_error_set(KMS_EINVAL, "backend %s: no mode %zu", b->ops->name, b->mode);
        KMS_GUARD(kms_keyring_backend_name(b->ops->name, b->ops->modes[b->mode].name, &stored));
    }
    if (backend_named(kr, stored))
        return kms_error_set(KMS_EEXISTS, "backend %s registered twice", stored);
    if (kr->nbackends == MAX_BACKENDS)
        return kms_error_set(KMS_EEXHAUSTED, "too many backends");
    kr->backends[kr->nbackends++] = (struct backend_slot){b, stored, owned};
    kms_backend_mode m = kms_backend_mode_of(b);
    kms_log_info("backend %s%s%s: %s, %s", b->ops->name, m.name[0] ? " mode " : "", m.name,
                 (m.caps & KMS_BACKEND_CAP_KEY_NEVER_LEAVES)
                     ? "keys never leave the device"
                     : "key material is in kmsd's memory while a version is open",
                 (m.caps & KMS_BACKEND_CAP_SHRED) ? "destroying a version shreds it"
                                                  : "destroyed versions stay in old backups");
    return KMS_OK;
}

int kms_keyring_add_backend(kms_keyring *kr, kms_backend *b)
{
    return register_backend(kr, b, 0);
}

int kms_keyring_adopt_backend(kms_keyring *kr, kms_backend *b)
{
    int r = register_backend(kr, b, 1);
    if (r != 0 && b != NULL && b->ops != NULL)
        b->ops->close(b);
    return r;
}

const char *kms_keyring_default_backend(const kms_keyring *kr)
{
    return kr->nbackends > 0 ? kr->backends[0].stored : NULL;
}

kms_backend *kms_keyring_state_backend(const kms_keyring *kr)
{
    for (size_t i = 0; i < kr->nbackends; i++)
        if (kms_backend_has_caps(kr->backends[i].b, KMS_BACKEND_CAP_STATE_MAC))
            return kr->backends[i].b;
    return NULL;
}

kms_backend *kms_keyring_audit_backend(const kms_keyring *kr)
{
    for (size_t i = 0; i < kr->nbackends; i++)
        if (kms_backend_has_caps(kr->backends[i].b, KMS_BACKEND_CAP_AUDIT_SIGN))
            return kr->backends[i].b;
    return NULL;
}

int kms_keyring_health(kms_keyring *kr)
{
    int r = KMS_OK;
    /* Every instance is asked, so each one down is logged, and a device
     * that came back is reconnected. */
    for (size_t i = 0; i < kr->nbackends; i++) {
        kms_backend *b = kr->backends[i].b;
        if (b->ops->health(b) != 0) {
            kms_log_warn("backend %s is not answering", kr->backends[i].stored);
            if (r == 0)
                r = kms_error_set(KMS_EUNAVAIL, "backend %s is not answering",
                                  kr->backends[i].stored);
        }
    }
    return r;
}

/* Key names gathered by kms_keyring_check_all before it opens anything (the
 * store's walk must not call back into the store). */
struct name_list {
    char (*names)[KMS_KEY_NAME_MAX + 1];
    size_t n, cap;
};

static int collect_name(void *ctx, const kms_key_rec *k)
{
    struct name_list *l = ctx;
    if (k->primary_version == 0) /* incomplete: nothing to check until it is created */
        return KMS_OK;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        char(*names)[KMS_KEY_NAME_MAX + 1] = kms_realloc(l->names, cap * sizeof(*names));
        if (names == NULL)
            return kms_error_set(KMS_ENOMEM, "out of memory");
        l->names = names;
        l->cap = cap;
    }
    memcpy(l->names[l->n++], k->name, sizeof(k->name));
    return KMS_OK;
}

/* Checks every version of one entry; the first failure is kept in *first. */
static void check_entry(struct key_entry *e, size_t *checked, int *first, char *why, size_t cap)
{
    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < e->nversions; i++) {
        struct version_slot *v = &e->versions[i];
        if (v->state == KMS_VERSION_DESTROYED)
            continue;
        int was_open = v->bk != NULL;
        int r = ensure_open(e, v); /* logs the failure with key and version */
        if (r != 0) {
            /* Only an unsafe key stops the start; a key the device cannot
             * open now (PCRs changed, object gone, device down) is logged
             * here and answers its error on use, as before. */
            if (r == KMS_EKEYCHECK && *first == 0) {
                *first = r;
                snprintf(why, cap, "key %s version %u: %s", e->rec.name, v->version,
                         kms_error_detail());
            }
            continue;
        }
        (*checked)++;
        if (!was_open) {
            e->backend->ops->release_version(e->backend, v->bk);
            v->bk = NULL;
        }
    }
    pthread_mutex_unlock(&e->mu);
}

int kms_keyring_check_all(kms_keyring *kr, size_t *checked)
{
    struct name_list l = {0};
    int r = kr->store->ops->key_list(kr->store, collect_name, &l);
    size_t ok = 0;
    int first = 0;
    char why[512] = "";
    for (size_t i = 0; r == 0 && i < l.n; i++) {
        struct key_entry *e = NULL;
        int g = get_entry(kr, l.names[i], NULL, &e);
        if (g != 0) { /* e.g. its backend is not configured: it answers so on use */
            kms_log_error("key %s cannot be loaded: %s (%s)", l.names[i], kms_strerror(g),
                          kms_error_detail());
            continue;
        }
        check_entry(e, &ok, &first, why, sizeof(why));
    }
    kms_free(l.names);
    if (r != 0)
        return r;
    if (first != 0)
        return kms_error_set(first, "start-up key check failed: %s", why);
    if (checked)
        *checked = ok;
    return KMS_OK;
}

void kms_keyring_close(kms_keyring *kr)
{
    if (kr == NULL)
        return;
    for (size_t b = 0; b < kr->nbuckets; b++) {
        struct key_entry *e = kr->by_name[b];
        while (e) {
            struct key_entry *next = e->next_by_name;
            entry_free(e);
            e = next;
        }
    }
    kms_free(kr->by_name);
    kms_free(kr->by_id);
    pthread_rwlock_destroy(&kr->lock);
    /* After the keys: their opened versions were released above. */
    for (size_t i = kr->nbackends; i-- > 0;)
        if (kr->backends[i].owned)
            kr->backends[i].b->ops->close(kr->backends[i].b);
    kms_free(kr);
}

void kms_keyring_set_rotation_recorder(kms_keyring *kr, kms_keyring_rotation_recorder rec,
                                       void *ctx)
{
    kr->recorder = rec;
    kr->recorder_ctx = ctx;
}

int kms_keyring_has_backend(const kms_keyring *kr, const char *name)
{
    return backend_named(kr, name) != NULL;
}

int kms_keyring_valid_name(const char *name)
{
    if (name == NULL || name[0] == '\0' || name[0] == '/')
        return 0;
    size_t n = 0;
    for (const char *p = name; *p; p++, n++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '/' || c == '-';
        if (!ok || n >= KMS_KEY_NAME_MAX)
            return 0;
    }
    return 1;
}

/* A device object the store has no row for, replaced or removed under
 * the store's write lock (store version_unrecorded_do). */
struct unrecorded {
    kms_backend *b;
    const uint8_t *id;
    uint32_t version;
    kms_backend_ref *ref;
    int recreate; /* 1: make it afresh after destroying it */
};

static int destroy_unrecorded(void *ctx)
{
    struct unrecorded *u = ctx;
    int r = u->b->ops->destroy_version(u->b, u->ref);
    if (r == KMS_ENOTFOUND)
        r = KMS_OK;
    if (r == 0 && u->recreate)
        r = u->b->ops->create_version(u->b, u->id, u->version, u->ref);
    return r;
}

/* Creates (key_id, version) on the backend. A device object that exists
 * but has no committed row in the store is an orphan of a crash between
 * the two writes (or a creation in flight in another process, whose
 * commit will then fail): it was never recorded, so it never wrapped
 * anything; it is destroyed and made afresh rather than adopted. The check
 * and the destruction run under the store's write lock, so no row for it
 * can be committed in between. One the store knows about (a committed row
 * this keyring's cache has not seen) is never destroyed: blobs may be
 * wrapped under it. */
static int create_on_backend(kms_store *store, kms_backend *b, const uint8_t *id, uint32_t version,
                             kms_backend_ref *ref)
{
    ref->len = 0;
    int r = b->ops->create_version(b, id, version, ref);
    if (r == KMS_EEXISTS && ref->len > 0) {
        /* Only on verified state: a version row deleted from the file
         * fails the state digest here. */
        KMS_GUARD(store->ops->state_verify_key(store, id));
        struct unrecorded u = {b, id, version, ref, 1};
        int g = store->ops->version_unrecorded_do(store, id, version, destroy_unrecorded, &u);
        if (g == KMS_EEXISTS)
            return kms_error_set(KMS_EEXISTS,
                                 "version %u is already recorded in the store: its device object "
                                 "is not an orphan and is kept (is another kmsd using this "
                                 "database?)",
                                 version);
        if (g == 0)
            kms_log_warn("replaced an orphan device object (version %u) left by a crash", version);
        return g;
    }
    return r;
}

/* Removes a device object that the store failed to record, unless a row
 * for its version was committed meanwhile (another writer's, naming the
 * same device object): checked under the store's write lock. If it stays,
 * it is an orphan that the next creation of that version removes
 * (create_on_backend). */
static void discard_on_backend(kms_store *store, kms_backend *b, const uint8_t *id,
                               uint32_t version, kms_backend_ref *ref)
{
    struct unrecorded u = {b, id, version, ref, 0};
    int r = store->ops->version_unrecorded_do(store, id, version, destroy_unrecorded, &u);
    if (r == KMS_EEXISTS)
        kms_log_warn("version %u: the store records it now (another writer): its device object "
                     "is kept",
                     version);
    else if (r != 0)
        kms_log_warn("an unrecorded device object stays until its version is created again");
}

int kms_keyring_create_key(kms_keyring *kr, const char *name, const char *backend, kms_key_rec *out)
{
    if (kr == NULL || !kms_keyring_valid_name(name))
        return kms_error_set(KMS_EINVAL, "invalid key name");
    kms_backend *b = backend_named(kr, backend ? backend : "");
    if (b == NULL)
        return kms_error_set(KMS_EINVAL, "unknown backend %s", backend ? backend : "(none)");

    kms_key_rec rec;
    int resume = 0;
    int r = kr->store->ops->key_get_by_name(kr->store, name, &rec);
    const char *stored = stored_name_of(kr, b);
    if (r == 0 && (rec.primary_version != 0 || strcmp(rec.backend, stored) != 0))
        return kms_error_set(KMS_EEXISTS, "key %s already exists", name);
    if (r == 0) {
        /* An earlier creation stopped between its two store writes: finish it. */
        resume = 1;
        kms_log_warn("key %s: completing an interrupted creation", name);
    } else if (r != KMS_ENOTFOUND) {
        return r;
    } else {
        memset(&rec, 0, sizeof(rec));
        if (RAND_bytes(rec.id, KMS_KEY_ID_LEN) != 1)
            return kms_error_set(KMS_EUNAVAIL, "OpenSSL DRBG failed");
        memcpy(rec.name, name, strlen(name) + 1);
        memcpy(rec.backend, stored, strnlen(stored, sizeof(rec.backend) - 1));
        rec.min_decrypt_version = 1;
        rec.created_at = kms_clock_now(&kr->clock);
    }

    kms_version_rec v;
    memset(&v, 0, sizeof(v));
    memcpy(v.key_id, rec.id, KMS_KEY_ID_LEN);
    v.version = 1;
    v.state = KMS_VERSION_ENABLED;
    v.created_at = rec.created_at;
    KMS_GUARD(create_on_backend(kr->store, b, rec.id, 1, &v.ref));

    /* Device object first, then the key record, then version 1 as primary.
     * A crash after the device write leaves an unreferenced object (made
     * afresh next time); a crash between the two store writes leaves a key
     * with no primary version, which is unusable and completed by the next
     * create of the same name. */
    r = resume ? 0 : kr->store->ops->key_create(kr->store, &rec);
    if (r == 0)
        r = kr->store->ops->version_add(kr->store, &v, 1);
    if (r != 0) {
        kms_log_error("key %s: store failed after the device object was made: %s", name,
                      kms_error_detail());
        discard_on_backend(kr->store, b, rec.id, 1, &v.ref);
        return r;
    }
    rec.primary_version = 1;
    if (out)
        *out = rec;
    kms_log_info("key %s created on backend %s", name, rec.backend);
    return KMS_OK;
}

/* Makes the next version primary; an automatic rotation (reason not NULL)
 * is recorded in the same store transaction. Caller holds e->mu. */
static int rotate_locked(kms_keyring *kr, struct key_entry *e, const char *reason,
                         uint32_t *new_version)
{
    uint32_t next = e->nversions ? e->versions[e->nversions - 1].version + 1 : 1;
    if (next == 0)
        return kms_error_set(KMS_EEXHAUSTED, "key %s has no version numbers left", e->rec.name);
    struct version_slot *grown = kms_realloc(e->versions, (e->nversions + 1) * sizeof(*grown));
    if (grown == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    e->versions = grown;

    kms_version_rec v;
    memset(&v, 0, sizeof(v));
    memcpy(v.key_id, e->rec.id, KMS_KEY_ID_LEN);
    v.version = next;
    v.state = KMS_VERSION_ENABLED;
    v.created_at = kms_clock_now(&kr->clock);
    /* Room for the reference before the store is written: once the version
     * is committed, caching it cannot fail. Shrunk to its length after. */
    uint8_t *ref_copy = kms_malloc(sizeof(v.ref.bytes));
    if (ref_copy == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    kms_action_rec *record = NULL;
    if (reason != NULL && kr->recorder != NULL) {
        int r = (record = kms_calloc(1, sizeof(*record))) == NULL
                    ? kms_error_set(KMS_ENOMEM, "out of memory")
                    : kr->recorder(kr->recorder_ctx, e->rec.name, next, reason, record);
        if (r != 0) {
            kms_free(record);
            kms_free(ref_copy);
            return r;
        }
    }
    int r = create_on_backend(kr->store, e->backend, e->rec.id, next, &v.ref);
    if (r == 0) {
        kms_crash_point("rotation-device-created");
        r = record != NULL ? kr->store->ops->version_add_recorded(kr->store, &v, record)
                           : kr->store->ops->version_add(kr->store, &v, 1);
        if (r != 0)
            discard_on_backend(kr->store, e->backend, e->rec.id, next, &v.ref);
    }
    kms_free(record);
    if (r != 0) {
        kms_free(ref_copy);
        OPENSSL_cleanse(&v.ref, sizeof(v.ref));
        return r;
    }
    memcpy(ref_copy, v.ref.bytes, v.ref.len);
    uint8_t *fitted = kms_realloc(ref_copy, v.ref.len ? v.ref.len : 1);
    if (fitted != NULL)
        ref_copy = fitted; /* else the larger block is kept */
    struct version_slot *slot = &e->versions[e->nversions++];
    memset(slot, 0, sizeof(*slot));
    slot->version = next;
    slot->state = KMS_VERSION_ENABLED;
    slot->ref = ref_copy;
    slot->ref_len = v.ref.len;
    OPENSSL_cleanse(&v.ref, sizeof(v.ref));
    e->rec.primary_version = next;
    kms_log_info("key %s rotated to version %u", e->rec.name, next);
    if (new_version)
        *new_version = next;
    return KMS_OK;
}

int kms_keyring_rotate(kms_keyring *kr, const char *name, uint32_t *new_version)
{
    if (kr == NULL || name == NULL)
        return kms_error_set(KMS_EINVAL, "no key name");
    struct key_entry *e;
    KMS_GUARD(get_entry(kr, name, NULL, &e));
    pthread_mutex_lock(&e->mu);
    int r = rotate_locked(kr, e, NULL, new_version);
    pthread_mutex_unlock(&e->mu);
    return r;
}

int kms_keyring_rotate_automatic(kms_keyring *kr, const char *name, const char *reason,
                                 uint32_t *new_version)
{
    if (kr == NULL || name == NULL || reason == NULL)
        return kms_error_set(KMS_EINVAL, "no key name or reason");
    struct key_entry *e;
    KMS_GUARD(get_entry(kr, name, NULL, &e));
    pthread_mutex_lock(&e->mu);
    int r = rotate_locked(kr, e, reason, new_version);
    pthread_mutex_unlock(&e->mu);
    return r;
}

int kms_keyring_set_version_state(kms_keyring *kr, const char *name, uint32_t version,
                                  kms_version_state state)
{
    if (kr == NULL || name == NULL)
        return kms_error_set(KMS_EINVAL, "no key name");
    if (state != KMS_VERSION_ENABLED && state != KMS_VERSION_DISABLED)
        return kms_error_set(KMS_EINVAL, "only enable and disable are direct state changes");
    struct key_entry *e;
    KMS_GUARD(get_entry(kr, name, NULL, &e));
    pthread_mutex_lock(&e->mu);
    int r;
    struct version_slot *v = find_version(e, version);
    if (v == NULL) {
        r = kms_error_set_public(KMS_ENOTFOUND, "key %s has no version %u", name, version);
    } else if (version == e->rec.primary_version && state != KMS_VERSION_ENABLED) {
        r = kms_error_set(KMS_EPRECOND, "version %u of %s is primary: rotate first", version, name);
    } else if (v->state != KMS_VERSION_ENABLED && v->state != KMS_VERSION_DISABLED) {
        r = kms_error_set(KMS_EPRECOND, "version %u of %s is being deleted", version, name);
    } else {
        r = kr->store->ops->version_set_state(kr->store, e->rec.id, version, state);
        if (r == 0)
            v->state = state;
    }
    pthread_mutex_unlock(&e->mu);
    return r;
}

/* ---- lifecycle: settings changed in the store, destruction ------------------ */

/* Copies the settings a quorum action may change from one version list. */
static int refresh_state(void *ctx, const kms_version_rec *v)
{
    struct key_entry *e = ctx;
    struct version_slot *slot = find_version(e, v->version);
    if (slot != NULL)
        slot->state = v->state;
    return KMS_OK;
}

int kms_keyring_refresh(kms_keyring *kr, const uint8_t key_id[KMS_KEY_ID_LEN])
{
    if (kr == NULL || key_id == NULL)
        return kms_error_set(KMS_EINVAL, "missing argument");
    pthread_rwlock_rdlock(&kr->lock);
    atomic_fetch_add(&kr->gen, 1); /* a load in flight must not insert what it read */
    struct key_entry *e = find_by_id(kr, key_id);
    pthread_rwlock_unlock(&kr->lock);
    if (e == NULL)
        return KMS_OK; /* not cached: the next use reads the store */
    kms_key_rec rec;
    KMS_GUARD(kr->store->ops->key_get_by_id(kr->store, key_id, &rec));
    pthread_mutex_lock(&e->mu);
    e->rec.min_decrypt_version = rec.min_decrypt_version;
    e->rec.rotation_period_days = rec.rotation_period_days;
    e->rec.deletion_at = rec.deletion_at;
    int r = kr->store->ops->version_list(kr->store, key_id, refresh_state, e);
    pthread_mutex_unlock(&e->mu);
    return r;
}

int kms_keyring_destroy_key(kms_keyring *kr, const char *name, unsigned *destroyed)
{
    if (kr == NULL || name == NULL)
        return kms_error_set(KMS_EINVAL, "no key name");
    struct key_entry *e;
    KMS_GUARD(get_entry(kr, name, NULL, &e));
    int r = KMS_OK;
    unsigned n = 0;
    pthread_mutex_lock(&e->mu);
    if (e->rec.deletion_at == 0)
        r = kms_error_set(KMS_EPRECOND, "key %s is not scheduled for deletion", name);
    else /* the rows right before destroying: a row changed under us is not acted on */
        r = kr->store->ops->state_verify_key(kr->store, e->rec.id);
    /* On verified rows only. A version that fails is logged and left for
     * the next sweep; the others are destroyed now. The first failure is
     * returned. */
    int verified = r == 0;
    for (size_t i = 0; verified && i < e->nversions; i++) {
        struct version_slot *v = &e->versions[i];
        if (v->state == KMS_VERSION_DESTROYED)
            continue;
        if (v->bk != NULL) {
            e->backend->ops->release_version(e->backend, v->bk);
            v->bk = NULL;
        }
        /* Device first, then the record: a crash in between leaves a
         * version the next sweep destroys again (already gone is fine). */
        kms_backend_ref ref;
        slot_ref(v, &ref);
        int k = e->backend->ops->destroy_version(e->backend, &ref);
        OPENSSL_cleanse(&ref, sizeof(ref));
        if (k == KMS_ENOTFOUND)
            k = KMS_OK;
        if (k == 0)
            k = kr->store->ops->version_destroy(kr->store, e->rec.id, v->version);
        if (k == 0) {
            v->state = KMS_VERSION_DESTROYED;
            slot_clear_ref(v);
            n++;
            continue;
        }
        char why[256];
        snprintf(why, sizeof(why), "%s", kms_error_detail());
        kms_log_error("key %s version %u could not be destroyed: %s (%s)", name, v->version,
                      kms_strerror(k), why);
        if (r == 0)
            r = kms_error_set(k, "key %s version %u could not be destroyed: %s", name, v->version,
                              why);
    }
    pthread_mutex_unlock(&e->mu);
    if (n > 0)
        kms_log_info("key %s: %u version(s) destroyed on backend %s%s", name, n, e->rec.backend,
                     kms_backend_has_caps(e->backend, KMS_BACKEND_CAP_SHRED)
                         ? ""
                         : " (this mode does not shred: a backup of the database still holds "
                           "versions that this device opens)");
    if (destroyed != NULL)
        *destroyed = n;
    return r;
}

/* A key whose deletion is scheduled (or done) serves nothing. e->mu held. */
static int key_usable(const struct key_entry *e)
{
    if (e->rec.deletion_at != 0)
        return kms_error_set_public(KMS_EPRECOND, "key %s is scheduled for deletion", e->rec.name);
    return KMS_OK;
}

/* ---- public: wrap / unwrap ------------------------------------------------- */

/* Takes one IV from the primary version's lease, reserving a new lease in
 * the store (and rotating first when the budget says so) as needed. On
 * success *slot is the primary version, opened. Caller holds e->mu. */
static int take_iv(kms_keyring *kr, struct key_entry *e, struct version_slot **slot)
{
    struct version_slot *v = find_version(e, e->rec.primary_version);
    if (v == NULL || v->state != KMS_VERSION_ENABLED)
        return kms_error_set_public(KMS_EPRECOND, "key %s has no enabled primary version",
                                    e->rec.name);
    if (v->used == v->reserved) {
        if (v->reserved >= kr->rotate_at) {
            uint32_t nv = 0;
            int r = rotate_locked(kr, e, "nonce budget", &nv);
            /* The versions array may have moved: find the primary again. */
            v = find_version(e, e->rec.primary_version);
            if (r != 0) {
                kms_log_error("key %s: automatic rotation at %llu uses failed: %s", e->rec.name,
                              (unsigned long long)v->reserved, kms_error_detail());
                if (v->reserved >= kr->nonce_limit)
                    return kms_error_set_public(KMS_EEXHAUSTED,
                                                "key %s version %u used its nonce budget",
                                                e->rec.name, v->version);
            }
        }
        /* A lease never crosses rotate_at (so rotation happens exactly
         * there) nor, if rotation failed, the hard limit. */
        uint64_t end = v->reserved < kr->rotate_at ? kr->rotate_at : kr->nonce_limit;
        uint64_t room = v->reserved < end ? end - v->reserved : 0;
        uint64_t n = room < kr->lease ? room : kr->lease;
        if (n == 0)
            return kms_error_set_public(KMS_EEXHAUSTED, "key %s version %u used its nonce budget",
                                        e->rec.name, v->version);
        uint64_t total = 0;
        KMS_GUARD(kr->store->ops->usage_reserve(kr->store, e->rec.id, v->version, n,
                                                kr->nonce_limit, &total));
        /* Another process sharing the store may have reserved too: our
         * lease is the n uses that end at total. */
        v->used = total - n;
        v->reserved = total;
    }
    KMS_GUARD(ensure_open(e, v));
    v->used++;
    *slot = v;
    return KMS_OK;
}

/* Writes header (if given) ‖ canonical context into aad. */
static int build_aad(const uint8_t *header, const kms_context *ctx, uint8_t *aad, size_t *aad_len)
{
    size_t clen = 0;
    if (header)
        memcpy(aad, header, KMS_BLOB_AAD_HEADER_LEN);
    KMS_GUARD(kms_context_encode(ctx, aad + KMS_BLOB_AAD_HEADER_LEN,
                                 AAD_MAX - KMS_BLOB_AAD_HEADER_LEN, &clen));
    *aad_len = KMS_BLOB_AAD_HEADER_LEN + clen;
    return KMS_OK;
}

int kms_keyring_wrap(kms_keyring *kr, const char *name, const kms_context *ctx, const uint8_t *pt,
                     size_t pt_len, uint8_t *out, size_t cap, size_t *blob_len, uint32_t *version)
{
    if (kr == NULL || name == NULL || pt == NULL || out == NULL || blob_len == NULL)
        return kms_error_set(KMS_EINVAL, "missing argument");
    if (pt_len == 0 || pt_len > KMS_BLOB_MAX_PLAINTEXT)
        return kms_error_set(KMS_ETOOBIG, "plaintext must be 1..%d bytes", KMS_BLOB_MAX_PLAINTEXT);
    if (cap < pt_len + KMS_BLOB_OVERHEAD)
        return kms_error_set(KMS_ETOOBIG, "blob buffer too small");

    /* AAD = header ‖ context. The context goes in first, so bad input is
     * refused before a nonce is spent; the header follows once the
     * version is known. */
    uint8_t aad[AAD_MAX];
    size_t aad_len = 0;
    KMS_GUARD(build_aad(NULL, ctx, aad, &aad_len));

    struct key_entry *e;
    KMS_GUARD(get_entry(kr, name, NULL, &e));
    pthread_mutex_lock(&e->mu);
    struct version_slot *v = NULL;
    int r = key_usable(e);
    if (r == 0)
        r = take_iv(kr, e, &v);
    kms_backend_key *bk = r == 0 ? v->bk : NULL;
    uint32_t ver = r == 0 ? v->version : 0;
    pthread_mutex_unlock(&e->mu);
    KMS_GUARD(r);
    kms_blob_aad_header(e->rec.id, ver, KMS_BLOB_ALG_AES256_GCM, aad);

    kms_aead_io io = {.aad = aad,
                      .aad_len = aad_len,
                      .in = pt,
                      .in_len = pt_len,
                      .out = out + KMS_BLOB_HEADER_LEN};
    KMS_GUARD(e->backend->ops->wrap(e->backend, bk, &io));
    memcpy(out, aad, KMS_BLOB_AAD_HEADER_LEN);
    memcpy(out + KMS_BLOB_AAD_HEADER_LEN, io.iv, KMS_GCM_IV_LEN);
    memcpy(out + KMS_BLOB_HEADER_LEN + pt_len, io.tag, KMS_GCM_TAG_LEN);
    *blob_len = pt_len + KMS_BLOB_OVERHEAD;
    if (version)
        *version = ver;
    return KMS_OK;
}

int kms_keyring_unwrap(kms_keyring *kr, const uint8_t *blob, size_t blob_len,
                       const kms_context *ctx, kms_secret **pt, kms_key_rec *key, uint32_t *version)
{
    if (kr == NULL || pt == NULL)
        return kms_error_set(KMS_EINVAL, "missing argument");
    kms_blob_view bv;
    KMS_GUARD(kms_blob_parse(blob, blob_len, &bv));
    uint8_t aad[AAD_MAX];
    size_t aad_len = 0;
    KMS_GUARD(build_aad(bv.aad_header, ctx, aad, &aad_len));

    struct key_entry *e;
    int r = get_entry(kr, NULL, bv.key_id, &e);
    if (r == KMS_ENOTFOUND)
        return kms_error_set(KMS_ENOTFOUND, "the blob's key is unknown");
    KMS_GUARD(r);

    pthread_mutex_lock(&e->mu);
    struct version_slot *v = find_version(e, bv.key_version);
    if ((r = key_usable(e)) != 0)
        ; /* r set */
    else if (v == NULL)
        r = kms_error_set(KMS_ENOTFOUND, "key %s has no version %u", e->rec.name, bv.key_version);
    else if (v->state != KMS_VERSION_ENABLED)
        r = kms_error_set_public(KMS_EPRECOND, "key %s version %u is not enabled", e->rec.name,
                                 bv.key_version);
    else if (bv.key_version < e->rec.min_decrypt_version)
        r = kms_error_set_public(KMS_EPRECOND,
                                 "key %s version %u is below the minimum decryption "
                                 "version %u",
                                 e->rec.name, bv.key_version, e->rec.min_decrypt_version);
    else
        r = ensure_open(e, v);
    kms_backend_key *bk = r == 0 ? v->bk : NULL;
    kms_key_rec rec = e->rec;
    pthread_mutex_unlock(&e->mu);
    KMS_GUARD(r);

    kms_secret *s = NULL;
    KMS_GUARD(kms_secret_new(bv.ciphertext_len, &s));
    kms_aead_io io = {.aad = aad,
                      .aad_len = aad_len,
                      .in = bv.ciphertext,
                      .in_len = bv.ciphertext_len,
                      .out = s->data};
    memcpy(io.iv, bv.iv, KMS_GCM_IV_LEN);
    memcpy(io.tag, bv.tag, KMS_GCM_TAG_LEN);
    r = e->backend->ops->unwrap(e->backend, bk, &io);
    if (r != 0) {
        kms_secret_free(s);
        return r;
    }
    *pt = s;
    if (key)
        *key = rec;
    if (version)
        *version = bv.key_version;
    return KMS_OK;
}
