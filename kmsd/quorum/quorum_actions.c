/* The quorum action table and each action's validate, plan and execute
 * (contract and crash-safety rules: quorum_actions.h). Grouped by action;
 * the table is at the end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/crashpoint.h"
#include "base/pb_check.h"
#include "base/text.h"
#include "kmsd/quorum/quorum_actions.h"
#include "kmsd/quorum/signature.h"

#define DAY 86400
#define DELETION_DAYS_MIN 7
#define DELETION_DAYS_MAX 30
#define ROTATION_DAYS_MAX 36500
#define POLICY_IDS_MAX 256 /* identities per list of a key policy */

/* Plans: one tag byte, then big-endian fields. These bytes are stored, so
 * they never change meaning. */
#define PLAN_STARTED 'S'  /* nothing more: "the action had started" */
#define PLAN_ROTATE 'R'   /* + the primary version before rotating (u32) */
#define PLAN_DELETION 'D' /* + the deletion time (int64) */

/* ---- shared checks ---------------------------------------------------------------------- */

int kms_quorum_valid_officer_id(const char *id)
{
    size_t n = id != NULL ? strlen(id) : 0;
    /* "kmsd" proposes the changes kmsd makes by itself: never an officer. */
    if (n == 0 || n > KMS_OFFICER_ID_MAX || strcmp(id, KMS_SYSTEM_PROPOSER) == 0)
        return 0;
    for (const char *p = id; *p; p++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

int kms_quorum_backend_name(const char *backend, const char *mode, char *out, size_t cap)
{
    const char *stored;
    if (kms_keyring_backend_name(backend, mode, &stored) != 0)
        return kms_error_set_public(KMS_EINVAL, "unknown backend/mode %.16s/%.16s", backend, mode);
    size_t n = strlen(stored);
    if (n >= cap)
        return kms_error_set_public(KMS_EINVAL, "backend name too long");
    memcpy(out, stored, n + 1);
    return KMS_OK;
}

/* The key an action names, which must exist and not be scheduled for
 * deletion (unless allow_deleting). */
static int key_named(const kms_action_env *env, const char *name, int allow_deleting,
                     kms_key_rec *rec)
{
    if (name == NULL || !kms_keyring_valid_name(name))
        return kms_error_set_public(KMS_EINVAL, "invalid key name");
    KMS_GUARD(env->store->ops->key_get_by_name(env->store, name, rec));
    if (rec->primary_version == 0)
        return kms_error_set_public(KMS_EPRECOND, "key %s is incomplete", name);
    if (!allow_deleting && rec->deletion_at != 0)
        return kms_error_set_public(KMS_EPRECOND, "key %s is scheduled for deletion", name);
    return KMS_OK;
}

static int valid_rotation(const Kms__V1__RotationPolicy *rot)
{
    if (rot != NULL && rot->rotation_period_days > ROTATION_DAYS_MAX)
        return kms_error_set_public(KMS_EINVAL, "rotation period over %d days", ROTATION_DAYS_MAX);
    return KMS_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts one identity list and refuses empty, over-long, duplicate or
 * officer identities (officers get no data-plane rights). */
static int normalize_ids(const kms_action_env *env, char **ids, size_t n, const char *what)
{
    if (n > POLICY_IDS_MAX)
        return kms_error_set_public(KMS_EINVAL, "policy %s lists more than %d identities", what,
                                    POLICY_IDS_MAX);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(ids[i]);
        if (len == 0 || len > KMS_IDENTITY_MAX)
            return kms_error_set_public(KMS_EINVAL, "policy %s: empty or over-long identity", what);
        if (kms_policy_is_officer(env->policy, ids[i]))
            return kms_error_set_public(KMS_EINVAL,
                                        "policy %s names officer identity %.128s: officers "
                                        "get no data-plane rights",
                                        what, ids[i]);
    }
    if (n > 1) /* an empty list may be NULL, which qsort must not get */
        qsort(ids, n, sizeof(char *), cmp_str);
    for (size_t i = 1; i < n; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            return kms_error_set_public(KMS_EINVAL, "policy %s lists %.128s twice", what, ids[i]);
    return KMS_OK;
}

static int normalize_policy(const kms_action_env *env, Kms__V1__KeyPolicy *p)
{
    if (p == NULL)
        return KMS_OK; /* an empty policy: nobody */
    KMS_GUARD(normalize_ids(env, p->encrypt, p->n_encrypt, "encrypt"));
    KMS_GUARD(normalize_ids(env, p->decrypt, p->n_decrypt, "decrypt"));
    return normalize_ids(env, p->reencrypt, p->n_reencrypt, "reencrypt");
}

/* Replaces the key's grants with those of p (NULL: none). */
static int set_policy(const kms_action_env *env, const uint8_t key_id[KMS_KEY_ID_LEN],
                      const Kms__V1__KeyPolicy *p)
{
    static const size_t cap = 3 * POLICY_IDS_MAX;
    kms_grant_rec *g = kms_calloc(cap, sizeof(*g));
    size_t n = 0;
    int r = KMS_OK;
    if (g == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    if (p != NULL) {
        struct {
            char **ids;
            size_t n;
            kms_key_action action;
        } lists[] = {{p->encrypt, p->n_encrypt, KMS_ACTION_ENCRYPT},
                     {p->decrypt, p->n_decrypt, KMS_ACTION_DECRYPT},
                     {p->reencrypt, p->n_reencrypt, KMS_ACTION_REENCRYPT}};
        for (size_t l = 0; r == 0 && l < 3; l++)
            for (size_t i = 0; r == 0 && i < lists[l].n; i++) {
                if (n == cap) {
                    r = kms_error_set(KMS_EINVAL, "policy too large");
                    break;
                }
                g[n].action = lists[l].action;
                g[n++].identity = lists[l].ids[i];
            }
    }
    if (r == 0)
        r = env->store->ops->policy_set(env->store, key_id, g, n);
    kms_free(g);
    if (r == 0)
        kms_policy_invalidate(env->policy, key_id);
    return r;
}

/* Replaces a string field of a decoded body. protobuf-c leaves an absent
 * string pointing at its shared empty string, which is not ours to free. */
static int set_string(char **field, const char *value)
{
    char *copy = strdup(value);
    if (copy == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    if (*field != protobuf_c_empty_string)
        kms_free(*field);
    *field = copy;
    return KMS_OK;
}

/* A plan that carries one value: the tag byte, then the value big-endian
 * in width (4 or 8) bytes. plan_decode refuses anything else (KMS_EINVAL). */
static int plan_encode(uint8_t tag, size_t width, uint64_t v, uint8_t *out, size_t *len)
{
    kms_buf_writer w;
    kms_buf_writer_init(&w, out, 1 + width);
    if (kms_buf_put_u8(&w, tag) != 0 ||
        (width == 4 ? kms_buf_put_u32be(&w, (uint32_t)v) : kms_buf_put_u64be(&w, v)) != 0)
        return kms_error_set(KMS_EINTERNAL, "quorum: plan encoding");
    *len = w.len;
    return KMS_OK;
}

static int plan_decode(const kms_action_run *run, uint8_t tag, size_t width, uint64_t *v)
{
    kms_buf_reader r;
    uint8_t t;
    uint32_t v32 = 0;
    uint64_t v64 = 0;
    kms_buf_reader_init(&r, run->plan, run->plan_len);
    if (kms_buf_get_u8(&r, &t) != 0 || t != tag)
        return KMS_EINVAL;
    if ((width == 4 ? kms_buf_get_u32be(&r, &v32) : kms_buf_get_u64be(&r, &v64)) != 0 ||
        kms_buf_expect_end(&r) != 0)
        return KMS_EINVAL;
    *v = width == 4 ? v32 : v64;
    return KMS_OK;
}

static int plan_started(const kms_action_env *env, const Kms__V1__ActionBody *b, uint8_t *out,
                        size_t *len)
{
    (void)env;
    (void)b;
    out[0] = PLAN_STARTED;
    *len = 1;
    return KMS_OK;
}

/* ---- CreateKey ------------------------------------------------------------------------- */

static int validate_create_key(const kms_action_env *env, Kms__V1__ActionBody *b)
{
    Kms__V1__CreateKey *a = b->create_key;
    if (a->key_name == NULL || !kms_keyring_valid_name(a->key_name))
        return kms_error_set_public(KMS_EINVAL, "invalid key name");
    kms_key_rec rec;
    int r = env->store->ops->key_get_by_name(env->store, a->key_name, &rec);
    if (r == 0)
        return kms_error_set_public(KMS_EEXISTS, "key %s exists", a->key_name);
    if (r != KMS_ENOTFOUND)
        return r;
    if (a->backend[0] == '\0')
        KMS_GUARD(set_string(&a->backend, "pkcs11"));
    if (strcmp(a->backend, "tpm2") == 0 && a->backend_mode[0] == '\0')
        KMS_GUARD(set_string(&a->backend_mode, "sealed"));
    char name[16];
    KMS_GUARD(kms_quorum_backend_name(a->backend, a->backend_mode, name, sizeof(name)));
    if (!kms_keyring_has_backend(env->kr, name))
        return kms_error_set_public(KMS_EPRECOND, "backend %s is not configured on this kmsd",
                                    name);
    KMS_GUARD(valid_rotation(a->rotation));
    return normalize_policy(env, a->policy);
}

static int execute_create_key(const kms_action_env *env, const Kms__V1__ActionBody *b,
                              const kms_action_run *run)
{
    const Kms__V1__CreateKey *c = b->create_key;
    char backend[16];
    kms_key_rec rec;
    KMS_GUARD(kms_quorum_backend_name(c->backend, c->backend_mode, backend, sizeof(backend)));
    int r = kms_keyring_create_key(env->kr, c->key_name, backend, &rec);
    if (r == KMS_EEXISTS && run->resumed) /* made by this action before a crash */
        r = env->store->ops->key_get_by_name(env->store, c->key_name, &rec);
    KMS_GUARD(r);
    KMS_GUARD(set_policy(env, rec.id, c->policy));
    if (c->rotation != NULL)
        KMS_GUARD(env->store->ops->key_set_rotation(env->store, rec.id,
                                                    c->rotation->rotation_period_days));
    KMS_GUARD(kms_keyring_refresh(env->kr, rec.id));
    snprintf(run->result, run->cap, "key %s created on %s, version 1", c->key_name, backend);
    return KMS_OK;
}

/* ---- RotateKey ------------------------------------------------------------------------- */

static int validate_rotate_key(const kms_action_env *env, Kms__V1__ActionBody *b)
{
    kms_key_rec rec;
    return key_named(env, b->rotate_key->key_name, 0, &rec);
}

static int plan_rotate_key(const kms_action_env *env, const Kms__V1__ActionBody *b, uint8_t *out,
                           size_t *len)
{
    kms_key_rec rec;
    KMS_GUARD(env->store->ops->key_get_by_name(env->store, b->rotate_key->key_name, &rec));
    return plan_encode(PLAN_ROTATE, 4, rec.primary_version, out, len);
}

static int execute_rotate_key(const kms_action_env *env, const Kms__V1__ActionBody *b,
                              const kms_action_run *run)
{
    const char *name = b->rotate_key->key_name;
    kms_key_rec rec;
    uint64_t before;
    if (plan_decode(run, PLAN_ROTATE, 4, &before) != 0)
        return kms_error_set(KMS_EINTERNAL, "rotation plan does not decode");
    KMS_GUARD(env->store->ops->key_get_by_name(env->store, name, &rec));
    uint32_t v = rec.primary_version;
    if (rec.primary_version == before) /* not rotated yet */
        KMS_GUARD(kms_keyring_rotate(env->kr, name, &v));
    snprintf(run->result, run->cap, "key %s rotated: version %u is primary", name, v);
    return KMS_OK;
}

/* ---- SetKeyVersionState ---------------------------------------------------------------- */

static int validate_set_key_version_state(const kms_action_env *env, Kms__V1__ActionBody *b)
{
    const Kms__V1__SetKeyVersionState *a = b->set_key_version_state;
    kms_key_rec rec;
    KMS_GUARD(key_named(env, a->key_name, 0, &rec));
    if (a->state != KMS__V1__KEY_VERSION_STATE__ENABLED &&
        a->state != KMS__V1__KEY_VERSION_STATE__DISABLED)
        return kms_error_set_public(KMS_EINVAL, "a version is set ENABLED or DISABLED");
    kms_version_rec v;
    KMS_GUARD(env->store->ops->version_get(env->store, rec.id, a->version, &v));
    if (v.state == KMS_VERSION_DESTROYED)
        return kms_error_set_public(KMS_EPRECOND, "version %u is destroyed", a->version);
    if (a->version == rec.primary_version && a->state == KMS__V1__KEY_VERSION_STATE__DISABLED)
        return kms_error_set_public(KMS_EPRECOND, "version %u is primary: rotate first",
                                    a->version);
    return KMS_OK;
}

static int execute_set_key_version_state(const kms_action_env *env, const Kms__V1__ActionBody *b,
                                         const kms_action_run *run)
{
    const Kms__V1__SetKeyVersionState *s = b->set_key_version_state;
    kms_key_rec rec;
    KMS_GUARD(env->store->ops->key_get_by_name(env->store, s->key_name, &rec));
    int en = s->state == KMS__V1__KEY_VERSION_STATE__ENABLED;
    KMS_GUARD(kms_keyring_set_version_state(env->kr, s->key_name, s->version,
                                            en ? KMS_VERSION_ENABLED : KMS_VERSION_DISABLED));
    snprintf(run->result, run->cap, "key %s version %u %s", s->key_name, s->version,
             en ? "enabled" : "disabled");
    return kms_keyring_refresh(env->kr, rec.id);
}

/* ---- SetMinDecryptionVersion ----------------------------------------------------------- */

static int validate_set_min_decryption_version(const kms_action_env *env, Kms__V1__ActionBody *b)
{
    const Kms__V1__SetMinDecryptionVersion *a = b->set_min_decryption_version;
    kms_key_rec rec;
    KMS_GUARD(key_named(env, a->key_name, 0, &rec));
    if (a->version < 1 || a->version > rec.primary_version)
        return kms_error_set_public(KMS_EINVAL, "minimum decryption version must be 1..%u",
                                    rec.primary_version);
    return KMS_OK;
}

static int execute_set_min_decryption_version(const kms_action_env *env,
                                              const Kms__V1__ActionBody *b,
                                              const kms_action_run *run)
{
    const Kms__V1__SetMinDecryptionVersion *a = b->set_min_decryption_version;
    kms_key_rec rec;
    KMS_GUARD(env->store->ops->key_get_by_name(env->store, a->key_name, &rec));
    KMS_GUARD(env->store->ops->key_set_min_decrypt(env->store, rec.id, a->version));
    snprintf(run->result, run->cap, "key %s: versions below %u no longer decrypt", a->key_name,
             a->version);
    return kms_keyring_refresh(env->kr, rec.id);
}

/* ---- ScheduleKeyDeletion --------------------------------------------------------------- */

static int validate_schedule_key_deletion(const kms_action_env *env, Kms__V1__ActionBody *b)
{
    Kms__V1__ScheduleKeyDeletion *a = b->schedule_key_deletion;
    kms_key_rec rec;
    KMS_GUARD(key_named(env, a->key_name, 0, &rec));
    if (a->pending_window_days == 0)
        a->pending_window_days = DELETION_DAYS_MAX;
    if (a->pending_window_days < DELETION_DAYS_MIN || a->pending_window_days > DELETION_DAYS_MAX)
        return kms_error_set_public(KMS_EINVAL, "deletion waits %d..%d days", DELETION_DAYS_MIN,
                                    DELETION_DAYS_MAX);
    return KMS_OK;
}

/* The deletion time is fixed once, so that a resumed run keeps it. */
static int plan_schedule_key_deletion(const kms_action_env *env, const Kms__V1__ActionBody *b,
                                      uint8_t *out, size_t *len)
{
    int64_t at = env->now + (int64_t)b->schedule_key_deletion->pending_window_days * DAY;
    return plan_encode(PLAN_DELETION, 8, (uint64_t)at, out, len);
}

static int execute_schedule_key_deletion(const kms_action_env *env, const Kms__V1__ActionBody *b,
                                         const kms_action_run *run)
{
    const char *name = b->schedule_key_deletion->key_name;
    kms_key_rec rec;
    uint64_t at;
    if (plan_decode(run, PLAN_DELETION, 8, &at) != 0)
        return kms_error_set(KMS_EINTERNAL, "deletion plan does not decode");
    KMS_GUARD(env->store->ops->key_get_by_name(env->store, name, &rec));
    KMS_GUARD(env->store->ops->key_set_deletion(env->store, rec.id, (int64_t)at));
    KMS_GUARD(kms_keyring_refresh(env->kr, rec.id));
    snprintf(run->result, run->cap, "key %s unusable; its versions are destroyed at %lld (unix)",
             name, (long long)at);
    return KMS_OK;
}

/* ---- CancelKeyDeletion ----------------------------------------------------------------- */

static int validate_cancel_key_deletion(const kms_action_env *env, Kms__V1__ActionBody *b)
{
    kms_key_rec rec;
    KMS_GUARD(key_named(env, b->cancel_key_deletion->key_name, 1, &rec));
    if (rec.deletion_at == 0)
        return kms_error_set_public(KMS_EPRECOND, "key %s is not scheduled for deletion", rec.name);
    if (rec.deletion_at <= env->now)
        return kms_error_set_public(KMS_EPRECOND, "key %s is already destroyed", rec.name);
    return KMS_OK;
}

static int execute_cancel_key_deletion(const kms_action_env *env, const Kms__V1__ActionBody *b,
                                       const kms_action_run *run)
{
    const char *name = b->cancel_key_deletion->key_name;
    kms_key_rec rec;
    KMS_GUARD(env->store->ops->key_get_by_name(env->store, name, &rec));
    KMS_GUARD(env->store->ops->key_set_deletion(env->store, rec.id, 0));
    snprintf(run->result, run->cap, "key %s: deletion cancelled", name);
    return kms_keyring_refresh(env->kr, rec.id);
}

/* ---- UpdateKeyPolicy ------------------------------------------------------------------- */

static int validate_update_key_policy(const kms_action_env *env, Kms__V1__ActionBody *b)
{
    kms_key_rec rec;
    KMS_GUARD(key_named(env, b->update_key_policy->key_name, 0, &rec));
    return normalize_policy(env, b->update_key_policy->policy);
}

static int execute_update_key_policy(const kms_action_env *env, const Kms__V1__ActionBody *b,
                                     const kms_action_run *run)
{
    const char *name = b->update_key_policy->key_name;
    kms_key_rec rec;
    KMS_GUARD(env->store->ops->key_get_by_name(env->store, name, &rec));
    KMS_GUARD(set_policy(env, rec.id, b->update_key_policy->policy));
    snprintf(run->result, run->cap, "key %s: policy replaced", name);
    return kms_keyring_refresh(env->kr, rec.id);
}

/* ---- SetRotationPolicy ----------------------------------------------------------------- */

static int validate_set_rotation_policy(const kms_action_env *env, Kms__V1__ActionBody *b)
{
    kms_key_rec rec;
    KMS_GUARD(key_named(env, b->set_rotation_policy->key_name, 0, &rec));
    return valid_rotation(b->set_rotation_policy->rotation);
}

static int execute_set_rotation_policy(const kms_action_env *env, const Kms__V1__ActionBody *b,
                                       const kms_action_run *run)
{
    const Kms__V1__SetRotationPolicy *s = b->set_rotation_policy;
    uint32_t days = s->rotation != NULL ? s->rotation->rotation_period_days : 0;
    kms_key_rec rec;
    KMS_GUARD(env->store->ops->key_get_by_name(env->store, s->key_name, &rec));
    KMS_GUARD(env->store->ops->key_set_rotation(env->store, rec.id, days));
    snprintf(run->result, run->cap, "key %s: rotation every %u days (0: never)", s->key_name, days);
    return kms_keyring_refresh(env->kr, rec.id);
}

/* ---- officers and thresholds ----------------------------------------------------------- */

static int count_officer(void *ctx, const kms_officer_rec *o)
{
    (void)o;
    (*(size_t *)ctx)++;
    return 0;
}

static int officer_count(const kms_action_env *env, size_t *n)
{
    *n = 0;
    return env->store->ops->officer_list(env->store, count_officer, n);
}

struct find_id {
    const char *id;
    int found;
};

static int match_id(void *ctx, const kms_officer_rec *o)
{
    struct find_id *f = ctx;
    f->found |= strcmp(o->id, f->id) == 0;
    return 0;
}

static int max_threshold(void *ctx, const char *type, uint32_t t)
{
    (void)type;
    uint32_t *m = ctx;
    if (t > *m)
        *m = t;
    return 0;
}

static int validate_add_officer(const kms_action_env *env, Kms__V1__ActionBody *b)
{
    Kms__V1__AddOfficer *a = b->add_officer;
    size_t officers = 0;
    KMS_GUARD(officer_count(env, &officers));
    if (!kms_quorum_valid_officer_id(a->officer_id))
        return kms_error_set_public(KMS_EINVAL,
                                    "officer id: 1..64 of [A-Za-z0-9._-], not \"kmsd\"");
    size_t n = strlen(a->identity);
    if (n == 0 || n > KMS_IDENTITY_MAX)
        return kms_error_set_public(KMS_EINVAL, "officer identity empty or too long");
    if (officers >= KMS_APPROVALS_MAX)
        return kms_error_set_public(KMS_EPRECOND, "at most %d officers", KMS_APPROVALS_MAX);
    char pem[KMS_SIGNING_KEY_PEM_MAX + 1];
    KMS_GUARD(kms_signature_key_normalize(a->signing_key_pem, strlen(a->signing_key_pem), pem,
                                          sizeof(pem)));
    KMS_GUARD(set_string(&a->signing_key_pem, pem));
    if (kms_policy_is_officer(env->policy, a->identity))
        return kms_error_set_public(KMS_EEXISTS, "identity %.128s is an officer already",
                                    a->identity);
    if (kms_policy_is_auditor(env->policy, a->identity))
        return kms_error_set_public(
            KMS_EINVAL, "identity %.128s is an auditor: remove it as auditor first", a->identity);
    return KMS_OK;
}

static int execute_add_officer(const kms_action_env *env, const Kms__V1__ActionBody *b,
                               const kms_action_run *run)
{
    const Kms__V1__AddOfficer *o = b->add_officer;
    kms_officer_rec rec;
    memset(&rec, 0, sizeof(rec));
    snprintf(rec.id, sizeof(rec.id), "%s", o->officer_id);
    snprintf(rec.identity, sizeof(rec.identity), "%s", o->identity);
    snprintf(rec.signing_key_pem, sizeof(rec.signing_key_pem), "%s", o->signing_key_pem);
    rec.created_at = env->now;
    int r = env->store->ops->officer_add(env->store, &rec);
    if (r == KMS_EEXISTS && run->resumed) /* added by this action before a crash */
        r = KMS_OK;
    KMS_GUARD(r);
    snprintf(run->result, run->cap, "officer %s (%.128s) enrolled", o->officer_id, o->identity);
    return kms_policy_reload_officers(env->policy);
}

static int validate_remove_officer(const kms_action_env *env, Kms__V1__ActionBody *b)
{
    const char *id = b->remove_officer->officer_id;
    size_t officers = 0;
    uint32_t m = KMS_THRESHOLD_MIN;
    KMS_GUARD(officer_count(env, &officers));
    KMS_GUARD(env->store->ops->threshold_list(env->store, max_threshold, &m));
    if (officers < (size_t)m + 1)
        return kms_error_set_public(KMS_EPRECOND,
                                    "removing an officer would leave %zu, fewer than the largest "
                                    "threshold (%u): lower it first",
                                    officers - 1, m);
    if (!kms_quorum_valid_officer_id(id))
        return kms_error_set_public(KMS_EINVAL, "invalid officer id");
    struct find_id f = {id, 0};
    KMS_GUARD(env->store->ops->officer_list(env->store, match_id, &f));
    return f.found ? KMS_OK : kms_error_set_public(KMS_ENOTFOUND, "no officer %.64s", id);
}

static int execute_remove_officer(const kms_action_env *env, const Kms__V1__ActionBody *b,
                                  const kms_action_run *run)
{
    const char *id = b->remove_officer->officer_id;
    int r = env->store->ops->officer_remove(env->store, id);
    if (r == KMS_ENOTFOUND && run->resumed) /* removed by this action before a crash */
        r = KMS_OK;
    KMS_GUARD(r);
    snprintf(run->result, run->cap, "officer %s removed", id);
    return kms_policy_reload_officers(env->policy);
}

static int validate_set_threshold(const kms_action_env *env, Kms__V1__ActionBody *b)
{
    const Kms__V1__SetThreshold *t = b->set_threshold;
    size_t officers = 0;
    KMS_GUARD(officer_count(env, &officers));
    if (kms_quorum_action_by_type(t->action_type) == NULL)
        return kms_error_set_public(KMS_EINVAL, "unknown action type %.64s", t->action_type);
    if (t->threshold < KMS_THRESHOLD_MIN)
        return kms_error_set_public(KMS_EINVAL,
                                    "threshold %u refused: every threshold is at least %d, so "
                                    "that no officer ever acts alone",
                                    t->threshold, KMS_THRESHOLD_MIN);
    if (t->threshold > officers)
        return kms_error_set_public(KMS_EINVAL, "threshold %u is more than the %zu officers",
                                    t->threshold, officers);
    return KMS_OK;
}

static int execute_set_threshold(const kms_action_env *env, const Kms__V1__ActionBody *b,
                                 const kms_action_run *run)
{
    const Kms__V1__SetThreshold *t = b->set_threshold;
    KMS_GUARD(env->store->ops->threshold_set(env->store, t->action_type, t->threshold));
    snprintf(run->result, run->cap, "%s now needs %u approvals", t->action_type, t->threshold);
    return kms_policy_reload_officers(env->policy);
}

/* ---- auditors ------------------------------------------------------------------------- */

/* An auditor reads the audit log and nothing else (the RPC wrapper refuses
 * it every other method), so an officer's identity is refused: it would
 * lose its officer rights, and the roles stay apart. */
static int validate_add_auditor(const kms_action_env *env, Kms__V1__ActionBody *b)
{
    const char *id = b->add_auditor->identity;
    size_t n = strlen(id);
    if (n == 0 || n > KMS_IDENTITY_MAX)
        return kms_error_set_public(KMS_EINVAL, "auditor identity empty or too long");
    if (kms_policy_is_officer(env->policy, id))
        return kms_error_set_public(KMS_EINVAL,
                                    "identity %.128s is an officer: an auditor may only read the "
                                    "audit log, so the roles stay apart",
                                    id);
    if (kms_policy_is_auditor(env->policy, id))
        return kms_error_set_public(KMS_EEXISTS, "identity %.128s is an auditor already", id);
    return KMS_OK;
}

static int execute_add_auditor(const kms_action_env *env, const Kms__V1__ActionBody *b,
                               const kms_action_run *run)
{
    kms_auditor_rec rec;
    memset(&rec, 0, sizeof(rec));
    snprintf(rec.identity, sizeof(rec.identity), "%s", b->add_auditor->identity);
    rec.created_at = env->now;
    int r = env->store->ops->auditor_add(env->store, &rec);
    if (r == KMS_EEXISTS && run->resumed) /* added by this action before a crash */
        r = KMS_OK;
    KMS_GUARD(r);
    snprintf(run->result, run->cap, "auditor %.128s enrolled", rec.identity);
    return kms_policy_reload_auditors(env->policy);
}

static int validate_remove_auditor(const kms_action_env *env, Kms__V1__ActionBody *b)
{
    const char *id = b->remove_auditor->identity;
    size_t n = strlen(id);
    if (n == 0 || n > KMS_IDENTITY_MAX)
        return kms_error_set_public(KMS_EINVAL, "auditor identity empty or too long");
    if (!kms_policy_is_auditor(env->policy, id))
        return kms_error_set_public(KMS_ENOTFOUND, "no auditor %.128s", id);
    return KMS_OK;
}

static int execute_remove_auditor(const kms_action_env *env, const Kms__V1__ActionBody *b,
                                  const kms_action_run *run)
{
    const char *id = b->remove_auditor->identity;
    int r = env->store->ops->auditor_remove(env->store, id);
    if (r == KMS_ENOTFOUND && run->resumed) /* removed by this action before a crash */
        r = KMS_OK;
    KMS_GUARD(r);
    snprintf(run->result, run->cap, "auditor %.128s removed", id);
    return kms_policy_reload_auditors(env->policy);
}

/* ---- the table ------------------------------------------------------------------------- */

#define ROW(CASE, type, name, plan)                                                                \
    {                                                                                              \
        KMS__V1__ACTION_BODY__ACTION_##CASE, type, validate_##name, plan, execute_##name           \
    }

const kms_quorum_action kms_quorum_actions[] = {
    ROW(CREATE_KEY, "CreateKey", create_key, plan_started),
    ROW(ROTATE_KEY, "RotateKey", rotate_key, plan_rotate_key),
    ROW(SET_KEY_VERSION_STATE, "SetKeyVersionState", set_key_version_state, plan_started),
    ROW(SET_MIN_DECRYPTION_VERSION, "SetMinDecryptionVersion", set_min_decryption_version,
        plan_started),
    ROW(SCHEDULE_KEY_DELETION, "ScheduleKeyDeletion", schedule_key_deletion,
        plan_schedule_key_deletion),
    ROW(CANCEL_KEY_DELETION, "CancelKeyDeletion", cancel_key_deletion, plan_started),
    ROW(UPDATE_KEY_POLICY, "UpdateKeyPolicy", update_key_policy, plan_started),
    ROW(SET_ROTATION_POLICY, "SetRotationPolicy", set_rotation_policy, plan_started),
    ROW(ADD_OFFICER, "AddOfficer", add_officer, plan_started),
    ROW(REMOVE_OFFICER, "RemoveOfficer", remove_officer, plan_started),
    ROW(SET_THRESHOLD, "SetThreshold", set_threshold, plan_started),
    ROW(ADD_AUDITOR, "AddAuditor", add_auditor, plan_started),
    ROW(REMOVE_AUDITOR, "RemoveAuditor", remove_auditor, plan_started),
};
const size_t kms_quorum_n_actions = sizeof(kms_quorum_actions) / sizeof(kms_quorum_actions[0]);

const kms_quorum_action *kms_quorum_action_of(const Kms__V1__ActionBody *body)
{
    if (body == NULL)
        return NULL;
    for (size_t i = 0; i < kms_quorum_n_actions; i++)
        if (kms_quorum_actions[i].action_case == body->action_case)
            return &kms_quorum_actions[i];
    return NULL;
}

const kms_quorum_action *kms_quorum_action_by_type(const char *type)
{
    for (size_t i = 0; type != NULL && i < kms_quorum_n_actions; i++)
        if (strcmp(kms_quorum_actions[i].type, type) == 0)
            return &kms_quorum_actions[i];
    return NULL;
}

int kms_quorum_action_decode(const uint8_t *bytes, size_t len, int canonical,
                             Kms__V1__ActionBody **out)
{
    if (bytes == NULL || len == 0 || len > KMS_ACTION_BYTES_MAX || out == NULL)
        return kms_error_set_public(KMS_EINVAL, "action missing or larger than %d bytes",
                                    KMS_ACTION_BYTES_MAX);
    Kms__V1__ActionBody *b = kms__v1__action_body__unpack(NULL, len, bytes);
    int r = KMS_OK;
    if (b == NULL)
        return kms_error_set_public(KMS_EINVAL, "action does not decode as kms.v1.ActionBody");
    if (kms_pb_has_unknown_fields(&b->base))
        r = kms_error_set_public(KMS_EINVAL, "action carries fields this kmsd does not know");
    else if (kms_quorum_action_of(b) == NULL)
        r = kms_error_set_public(KMS_EINVAL, "action names no operation");
    else if (canonical && !kms_pb_encodes_to(&b->base, bytes, len))
        r = kms_error_set(KMS_EINVAL, "action bytes are not canonical");
    if (r != 0) {
        protobuf_c_message_free_unpacked(&b->base, NULL);
        return r;
    }
    *out = b;
    return KMS_OK;
}

/* ---- every string of an action ---------------------------------------------------------- */

/* The string fields allowed to hold more than an identity or to span lines:
 * the officer's PEM public key (which validate_add_officer then parses and
 * re-encodes). Every other string field is one line of at most
 * KMS_IDENTITY_MAX bytes. */
static const struct {
    const ProtobufCMessageDescriptor *msg;
    const char *field;
    size_t max;
    unsigned flags;
} text_rules[] = {
    {&kms__v1__add_officer__descriptor, "signing_key_pem", KMS_SIGNING_KEY_PEM_MAX, KMS_TEXT_LINES},
};

static int text_ok(const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f,
                   const char *s)
{
    size_t max = KMS_IDENTITY_MAX;
    unsigned flags = 0;
    for (size_t i = 0; i < sizeof(text_rules) / sizeof(text_rules[0]); i++)
        if (text_rules[i].msg == d && strcmp(text_rules[i].field, f->name) == 0) {
            max = text_rules[i].max;
            flags = text_rules[i].flags;
        }
    return kms_text_valid_str(s, max, flags);
}

/* Every string field of m and of the messages inside it, found through the
 * descriptors (so a field added to the proto is covered without a change
 * here): printable text (base/text.h) of bounded length, or KMS_EINVAL
 * naming the field. Runs before any row's own checks. */
static int strings_printable(const ProtobufCMessage *m, int depth)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    if (depth > 8)
        return kms_error_set_public(KMS_EINVAL, "action nested too deeply");
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(const void *)(base + f->quantifier_offset) != f->id)
            continue; /* another member of the oneof */
        size_t n = 1;
        void *const *v = (void *const *)(const void *)(base + f->offset);
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)(const void *)(base + f->quantifier_offset);
            v = *(void *const *const *)(const void *)(base + f->offset);
        }
        for (size_t j = 0; j < n; j++) {
            if (v[j] == NULL)
                continue;
            if (f->type == PROTOBUF_C_TYPE_MESSAGE)
                KMS_GUARD(strings_printable(v[j], depth + 1));
            else if (!text_ok(d, f, v[j]))
                return kms_error_set_public(KMS_EINVAL,
                                            "%s.%s: not printable UTF-8 text (control or "
                                            "formatting characters) or too long",
                                            d->short_name, f->name);
        }
    }
    return KMS_OK;
}

int kms_quorum_action_validate(const kms_action_env *env, Kms__V1__ActionBody *body)
{
    const kms_quorum_action *row = kms_quorum_action_of(body);
    if (row == NULL)
        return kms_error_set_public(KMS_EINVAL, "unknown action");
    KMS_GUARD(strings_printable(&body->base, 0));
    return row->validate(env, body);
}

int kms_quorum_action_execute(const kms_action_env *env, kms_action_rec *a,
                              const Kms__V1__ActionBody *body, char *result, size_t cap)
{
    const kms_quorum_action *row = kms_quorum_action_of(body);
    if (row == NULL)
        return kms_error_set(KMS_EINVAL, "unknown action");
    if (row->plan == NULL) /* every row has one: a table bug, fail closed */
        return kms_error_set(KMS_EINTERNAL, "%s: no plan function", row->type);
    int resumed = a->plan_len > 0;
    if (!resumed) {
        uint8_t plan[KMS_ACTION_PLAN_MAX];
        size_t n = 0;
        KMS_GUARD(row->plan(env, body, plan, &n));
        if (n == 0 || n > sizeof(plan))
            return kms_error_set(KMS_EINTERNAL, "%s: plan of %zu bytes", row->type, n);
        /* Recorded before the first change: a run after a crash finds it. */
        KMS_GUARD(env->store->ops->action_set_plan(env->store, a->id, plan, n));
        kms_crash_point("execution-planned");
        memcpy(a->plan, plan, n);
        a->plan_len = n;
    }
    kms_action_run run = {a->plan, a->plan_len, resumed, result, cap};
    return row->execute(env, body, &run);
}
