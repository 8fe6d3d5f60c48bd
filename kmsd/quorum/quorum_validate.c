/* Quorum: checking an action against the current state and filling in its
 * defaults, so that the canonical bytes say exactly what will happen. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmsd/ceremony.h"
#include "base/log.h"
#include "kmsd/quorum/quorum_internal.h"
#include "kmsd/quorum/signature.h"

#define DELETION_DAYS_MIN 7
#define DELETION_DAYS_MAX 30
#define ROTATION_DAYS_MAX 36500

const char *kms_quorum_type_name(const Kms__V1__ActionBody *b)
{
    /* The oneof member's message name ("RotateKey"), from the descriptor,
     * so that it cannot drift from the proto. */
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(
        &kms__v1__action_body__descriptor, (unsigned)b->action_case);
    if (f == NULL || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return NULL;
    return ((const ProtobufCMessageDescriptor *)f->descriptor)->short_name;
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
static int key_named(kms_quorum *q, const char *name, int allow_deleting, kms_key_rec *rec)
{
    if (name == NULL || !kms_keyring_valid_name(name))
        return kms_error_set_public(KMS_EINVAL, "invalid key name");
    KMS_GUARD(q->store->ops->key_get_by_name(q->store, name, rec));
    if (rec->primary_version == 0)
        return kms_error_set_public(KMS_EPRECOND, "key %s is incomplete", name);
    if (!allow_deleting && rec->deletion_at != 0)
        return kms_error_set_public(KMS_EPRECOND, "key %s is scheduled for deletion", name);
    return KMS_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts one identity list and refuses empty, over-long, duplicate or
 * officer identities (officers get no data-plane rights). */
static int normalize_ids(kms_quorum *q, char **ids, size_t n, const char *what)
{
    if (n > 256)
        return kms_error_set_public(KMS_EINVAL, "policy %s lists more than 256 identities", what);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(ids[i]);
        if (len == 0 || len > KMS_IDENTITY_MAX)
            return kms_error_set_public(KMS_EINVAL, "policy %s: empty or over-long identity", what);
        if (kms_policy_is_officer(q->policy, ids[i]))
            return kms_error_set_public(KMS_EINVAL,
                                        "policy %s names officer identity %.128s: officers "
                                        "get no data-plane rights",
                                        what, ids[i]);
    }
    qsort(ids, n, sizeof(char *), cmp_str);
    for (size_t i = 1; i < n; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            return kms_error_set_public(KMS_EINVAL, "policy %s lists %.128s twice", what, ids[i]);
    return KMS_OK;
}

static int normalize_policy(kms_quorum *q, Kms__V1__KeyPolicy *p)
{
    if (p == NULL)
        return KMS_OK; /* an empty policy: nobody */
    KMS_GUARD(normalize_ids(q, p->encrypt, p->n_encrypt, "encrypt"));
    KMS_GUARD(normalize_ids(q, p->decrypt, p->n_decrypt, "decrypt"));
    return normalize_ids(q, p->reencrypt, p->n_reencrypt, "reencrypt");
}

struct officer_count {
    size_t n;
};

static int count_officer(void *ctx, const kms_officer_rec *o)
{
    (void)o;
    ((struct officer_count *)ctx)->n++;
    return 0;
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

static int known_type(const char *t)
{
    for (size_t i = 0; i < kms_ceremony_n_action_types; i++)
        if (strcmp(t, kms_ceremony_action_types[i]) == 0)
            return 1;
    return 0;
}

static int validate_create(kms_quorum *q, Kms__V1__CreateKey *a)
{
    if (a->key_name == NULL || !kms_keyring_valid_name(a->key_name))
        return kms_error_set_public(KMS_EINVAL, "invalid key name");
    kms_key_rec rec;
    int r = q->store->ops->key_get_by_name(q->store, a->key_name, &rec);
    if (r == 0)
        return kms_error_set_public(KMS_EEXISTS, "key %s exists", a->key_name);
    if (r != KMS_ENOTFOUND)
        return r;
    if (a->backend[0] == '\0') {
        free(a->backend);
        a->backend = strdup("pkcs11");
    }
    if (a->backend != NULL && strcmp(a->backend, "tpm2") == 0 && a->backend_mode[0] == '\0') {
        free(a->backend_mode);
        a->backend_mode = strdup("sealed");
    }
    if (a->backend == NULL || a->backend_mode == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    char name[16];
    KMS_GUARD(kms_quorum_backend_name(a->backend, a->backend_mode, name, sizeof(name)));
    if (!kms_keyring_has_backend(q->kr, name))
        return kms_error_set_public(KMS_EPRECOND, "backend %s is not configured on this kmsd",
                                    name);
    if (a->rotation != NULL && a->rotation->rotation_period_days > ROTATION_DAYS_MAX)
        return kms_error_set_public(KMS_EINVAL, "rotation period over %d days", ROTATION_DAYS_MAX);
    return normalize_policy(q, a->policy);
}

static int validate_version_state(kms_quorum *q, Kms__V1__SetKeyVersionState *a)
{
    kms_key_rec rec;
    KMS_GUARD(key_named(q, a->key_name, 0, &rec));
    if (a->state != KMS__V1__KEY_VERSION_STATE__ENABLED &&
        a->state != KMS__V1__KEY_VERSION_STATE__DISABLED)
        return kms_error_set_public(KMS_EINVAL, "a version is set ENABLED or DISABLED");
    kms_version_rec v;
    KMS_GUARD(q->store->ops->version_get(q->store, rec.id, a->version, &v));
    if (v.state == KMS_VERSION_DESTROYED)
        return kms_error_set_public(KMS_EPRECOND, "version %u is destroyed", a->version);
    if (a->version == rec.primary_version && a->state == KMS__V1__KEY_VERSION_STATE__DISABLED)
        return kms_error_set_public(KMS_EPRECOND, "version %u is primary: rotate first",
                                    a->version);
    return KMS_OK;
}

static int validate_officers(kms_quorum *q, Kms__V1__ActionBody *b)
{
    struct officer_count c = {0};
    KMS_GUARD(q->store->ops->officer_list(q->store, count_officer, &c));
    if (b->action_case == KMS__V1__ACTION_BODY__ACTION_ADD_OFFICER) {
        Kms__V1__AddOfficer *a = b->add_officer;
        if (!kms_ceremony_valid_officer_id(a->officer_id))
            return kms_error_set_public(KMS_EINVAL,
                                        "officer id: 1..64 of [A-Za-z0-9._-], not \"kmsd\"");
        size_t n = strlen(a->identity);
        if (n == 0 || n > KMS_IDENTITY_MAX)
            return kms_error_set_public(KMS_EINVAL, "officer identity empty or too long");
        if (c.n >= KMS_APPROVALS_MAX)
            return kms_error_set_public(KMS_EPRECOND, "at most %d officers", KMS_APPROVALS_MAX);
        char pem[KMS_SIGNING_KEY_PEM_MAX + 1];
        KMS_GUARD(kms_signature_key_normalize(a->signing_key_pem, strlen(a->signing_key_pem), pem,
                                              sizeof(pem)));
        char *copy = strdup(pem);
        if (copy == NULL)
            return kms_error_set(KMS_ENOMEM, "out of memory");
        free(a->signing_key_pem);
        a->signing_key_pem = copy;
        if (kms_policy_is_officer(q->policy, a->identity))
            return kms_error_set_public(KMS_EEXISTS, "identity %.128s is an officer already",
                                        a->identity);
        return KMS_OK;
    }
    if (b->action_case == KMS__V1__ACTION_BODY__ACTION_REMOVE_OFFICER) {
        uint32_t m = KMS_THRESHOLD_MIN;
        KMS_GUARD(q->store->ops->threshold_list(q->store, max_threshold, &m));
        if (c.n < (size_t)m + 1)
            return kms_error_set_public(
                KMS_EPRECOND,
                "removing an officer would leave %zu, fewer than the largest "
                "threshold (%u): lower it first",
                c.n - 1, m);
        if (!kms_ceremony_valid_officer_id(b->remove_officer->officer_id))
            return kms_error_set_public(KMS_EINVAL, "invalid officer id");
        struct find_id f = {b->remove_officer->officer_id, 0};
        KMS_GUARD(q->store->ops->officer_list(q->store, match_id, &f));
        return f.found ? KMS_OK
                       : kms_error_set_public(KMS_ENOTFOUND, "no officer %.64s",
                                              b->remove_officer->officer_id);
    }
    Kms__V1__SetThreshold *t = b->set_threshold;
    if (!known_type(t->action_type))
        return kms_error_set_public(KMS_EINVAL, "unknown action type %.64s", t->action_type);
    if (t->threshold < KMS_THRESHOLD_MIN)
        return kms_error_set_public(
            KMS_EINVAL,
            "threshold %u refused: every threshold is at least %d, so that no "
            "officer ever acts alone",
            t->threshold, KMS_THRESHOLD_MIN);
    if (t->threshold > c.n)
        return kms_error_set_public(KMS_EINVAL, "threshold %u is more than the %zu officers",
                                    t->threshold, c.n);
    return KMS_OK;
}

int kms_quorum_validate(kms_quorum *q, Kms__V1__ActionBody *b)
{
    kms_key_rec rec;
    switch (b->action_case) {
    case KMS__V1__ACTION_BODY__ACTION_CREATE_KEY:
        return validate_create(q, b->create_key);
    case KMS__V1__ACTION_BODY__ACTION_ROTATE_KEY:
        return key_named(q, b->rotate_key->key_name, 0, &rec);
    case KMS__V1__ACTION_BODY__ACTION_SET_KEY_VERSION_STATE:
        return validate_version_state(q, b->set_key_version_state);
    case KMS__V1__ACTION_BODY__ACTION_SET_MIN_DECRYPTION_VERSION:
        KMS_GUARD(key_named(q, b->set_min_decryption_version->key_name, 0, &rec));
        if (b->set_min_decryption_version->version < 1 ||
            b->set_min_decryption_version->version > rec.primary_version)
            return kms_error_set_public(KMS_EINVAL, "minimum decryption version must be 1..%u",
                                        rec.primary_version);
        return KMS_OK;
    case KMS__V1__ACTION_BODY__ACTION_SCHEDULE_KEY_DELETION:
        KMS_GUARD(key_named(q, b->schedule_key_deletion->key_name, 0, &rec));
        if (b->schedule_key_deletion->pending_window_days == 0)
            b->schedule_key_deletion->pending_window_days = DELETION_DAYS_MAX;
        if (b->schedule_key_deletion->pending_window_days < DELETION_DAYS_MIN ||
            b->schedule_key_deletion->pending_window_days > DELETION_DAYS_MAX)
            return kms_error_set_public(KMS_EINVAL, "deletion waits %d..%d days", DELETION_DAYS_MIN,
                                        DELETION_DAYS_MAX);
        return KMS_OK;
    case KMS__V1__ACTION_BODY__ACTION_CANCEL_KEY_DELETION:
        KMS_GUARD(key_named(q, b->cancel_key_deletion->key_name, 1, &rec));
        if (rec.deletion_at == 0)
            return kms_error_set_public(KMS_EPRECOND, "key %s is not scheduled for deletion",
                                        rec.name);
        if (rec.deletion_at <= kms_quorum_now(q))
            return kms_error_set_public(KMS_EPRECOND, "key %s is already destroyed", rec.name);
        return KMS_OK;
    case KMS__V1__ACTION_BODY__ACTION_UPDATE_KEY_POLICY:
        KMS_GUARD(key_named(q, b->update_key_policy->key_name, 0, &rec));
        return normalize_policy(q, b->update_key_policy->policy);
    case KMS__V1__ACTION_BODY__ACTION_SET_ROTATION_POLICY:
        KMS_GUARD(key_named(q, b->set_rotation_policy->key_name, 0, &rec));
        if (b->set_rotation_policy->rotation != NULL &&
            b->set_rotation_policy->rotation->rotation_period_days > ROTATION_DAYS_MAX)
            return kms_error_set_public(KMS_EINVAL, "rotation period over %d days",
                                        ROTATION_DAYS_MAX);
        return KMS_OK;
    case KMS__V1__ACTION_BODY__ACTION_ADD_OFFICER:
    case KMS__V1__ACTION_BODY__ACTION_REMOVE_OFFICER:
    case KMS__V1__ACTION_BODY__ACTION_SET_THRESHOLD:
        return validate_officers(q, b);
    default:
        return kms_error_set_public(KMS_EINVAL, "unknown action");
    }
}
