/* `kmsd init`: the key ceremony (contract: ceremony.h). */
#include "kmsd/ceremony.h"
#include "kmsd/quorum/quorum_actions.h"
#include "kmsd/quorum/signature.h"
#include "kmsd/state/state.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/file.h"
#include "base/log.h"
#include "base/text.h"

#define PEM_FILE_MAX 16384

/* ---- signing keys ------------------------------------------------------------------- */

int kms_ceremony_read_signing_key(const char *path, char *out, size_t cap)
{
    char *pem = NULL;
    size_t len = 0;
    int r = KMS_OK;

    if (path == NULL || out == NULL || cap == 0)
        return kms_error_set(KMS_EINVAL, "no signing key file");
    if ((r = kms_file_read(path, PEM_FILE_MAX, 0, &pem, &len)) != 0)
        goto out;
    if ((r = kms_signature_key_normalize(pem, len, out, cap)) != 0) {
        char why[160];
        snprintf(why, sizeof(why), "%s", kms_error_detail()); /* the detail buffer is reused */
        r = kms_error_set(r, "%s: %s", path, why);
    }
out:
    free(pem);
    return r;
}

/* ---- checks ---------------------------------------------------------------------------- */

/* The one rule for identities, here and in every quorum action: 1..max
 * bytes of printable text (base/text.h). */
static int valid_identity(const char *id)
{
    return id[0] != '\0' && kms_text_valid_str(id, KMS_IDENTITY_MAX, 0);
}

static int check_officers(const kms_config *cfg)
{
    if (cfg->n_officers < KMS_THRESHOLD_MIN)
        return kms_error_set(KMS_EINVAL,
                             "init needs at least %d officers (every threshold is at least %d); "
                             "%zu given",
                             KMS_THRESHOLD_MIN, KMS_THRESHOLD_MIN, cfg->n_officers);
    for (size_t i = 0; i < cfg->n_officers; i++) {
        const kms_config_officer *o = &cfg->officers[i];
        if (!kms_quorum_valid_officer_id(o->id))
            return kms_error_set(KMS_EINVAL,
                                 "officer id \"%.64s\": use 1..%d of [A-Za-z0-9._-], not \"kmsd\"",
                                 o->id, KMS_OFFICER_ID_MAX);
        if (!valid_identity(o->identity))
            return kms_error_set(KMS_EINVAL,
                                 "officer %s: identity empty, too long or with "
                                 "control characters",
                                 o->id);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(cfg->officers[j].id, o->id) == 0)
                return kms_error_set(KMS_EINVAL, "officer id %s is listed twice", o->id);
            if (strcmp(cfg->officers[j].identity, o->identity) == 0)
                return kms_error_set(KMS_EINVAL, "officers %s and %s share one identity",
                                     cfg->officers[j].id, o->id);
        }
    }
    return KMS_OK;
}

/* Resolves the threshold of every action type into out[]. */
static int check_thresholds(const kms_config *cfg, uint32_t *out)
{
    uint32_t def = KMS_THRESHOLD_MIN;
    for (size_t i = 0; i < cfg->n_thresholds; i++) {
        const kms_config_threshold *t = &cfg->thresholds[i];
        if (strcmp(t->action, "default") != 0 && kms_quorum_action_by_type(t->action) == NULL)
            return kms_error_set(KMS_EINVAL, "threshold for unknown action type %.64s", t->action);
        if (t->threshold < KMS_THRESHOLD_MIN)
            return kms_error_set(KMS_EINVAL,
                                 "threshold %u for %s refused: every threshold must be at least "
                                 "%d, so that no officer ever acts alone",
                                 t->threshold, t->action, KMS_THRESHOLD_MIN);
        if (t->threshold > cfg->n_officers)
            return kms_error_set(KMS_EINVAL,
                                 "threshold %u for %s is more than the %zu officers: the action "
                                 "could never be approved",
                                 t->threshold, t->action, cfg->n_officers);
        if (strcmp(t->action, "default") == 0)
            def = t->threshold;
    }
    for (size_t a = 0; a < kms_quorum_n_actions; a++) {
        out[a] = def;
        for (size_t i = 0; i < cfg->n_thresholds; i++)
            if (strcmp(cfg->thresholds[i].action, kms_quorum_actions[a].type) == 0)
                out[a] = cfg->thresholds[i].threshold;
    }
    return KMS_OK;
}

static int is_officer_identity(const kms_config *cfg, const char *identity)
{
    for (size_t i = 0; i < cfg->n_officers; i++)
        if (strcmp(cfg->officers[i].identity, identity) == 0)
            return 1;
    return 0;
}

static int check_list(const kms_config *cfg, const char *key, const char *action,
                      const kms_strlist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        if (!valid_identity(l->v[i]))
            return kms_error_set(KMS_EINVAL,
                                 "key %s: %s identity empty, too long or with "
                                 "control characters",
                                 key, action);
        if (is_officer_identity(cfg, l->v[i]))
            return kms_error_set(KMS_EINVAL,
                                 "key %s: %s is an officer; officers get no data-plane rights "
                                 "(separation of duties)",
                                 key, l->v[i]);
        for (size_t j = 0; j < i; j++)
            if (strcmp(l->v[j], l->v[i]) == 0)
                return kms_error_set(KMS_EINVAL, "key %s: %s is listed twice for %s", key, l->v[i],
                                     action);
    }
    return KMS_OK;
}

static int check_keys(const kms_config *cfg)
{
    for (size_t i = 0; i < cfg->n_keys; i++) {
        const kms_config_key *k = &cfg->keys[i];
        if (!kms_keyring_valid_name(k->name))
            return kms_error_set(KMS_EINVAL, "key name \"%.128s\": use 1..%d of [A-Za-z0-9._/-]",
                                 k->name, KMS_KEY_NAME_MAX);
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->keys[j].name, k->name) == 0)
                return kms_error_set(KMS_EINVAL, "key %s is listed twice", k->name);
        KMS_GUARD(check_list(cfg, k->name, "encrypt", &k->encrypt));
        KMS_GUARD(check_list(cfg, k->name, "decrypt", &k->decrypt));
        KMS_GUARD(check_list(cfg, k->name, "reencrypt", &k->reencrypt));
    }
    return KMS_OK;
}

/* Auditors: valid identities, listed once, none an officer (an auditor
 * may only read the audit log; the roles stay apart) and none granted a
 * key (it could not use the grant). Officers are written after auditors, so
 * the auditors are checked against the configuration. */
static int check_auditors(const kms_config *cfg)
{
    for (size_t i = 0; i < cfg->auditors.n; i++) {
        const char *a = cfg->auditors.v[i];
        if (!valid_identity(a))
            return kms_error_set(KMS_EINVAL,
                                 "auditor \"%.128s\": identity empty, too long or with "
                                 "control characters",
                                 a);
        if (is_officer_identity(cfg, a))
            return kms_error_set(KMS_EINVAL,
                                 "auditor %.128s is an officer: an auditor may only read the audit "
                                 "log, so the roles stay apart",
                                 a);
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->auditors.v[j], a) == 0)
                return kms_error_set(KMS_EINVAL, "auditor %.128s is listed twice", a);
        for (size_t k = 0; k < cfg->n_keys; k++) {
            const kms_config_key *key = &cfg->keys[k];
            const kms_strlist *lists[] = {&key->encrypt, &key->decrypt, &key->reencrypt};
            for (size_t l = 0; l < 3; l++)
                for (size_t m = 0; m < lists[l]->n; m++)
                    if (strcmp(lists[l]->v[m], a) == 0)
                        return kms_error_set(KMS_EINVAL,
                                             "key %s grants auditor %.128s: an auditor may "
                                             "only read the audit log",
                                             key->name, a);
        }
    }
    return KMS_OK;
}

static int count_one(void *ctx, const void *unused)
{
    (void)unused;
    (*(size_t *)ctx)++;
    return KMS_OK;
}

static int count_officer(void *ctx, const kms_officer_rec *o)
{
    return count_one(ctx, o);
}

static int count_key(void *ctx, const kms_key_rec *k)
{
    return count_one(ctx, k);
}

/* ---- the ceremony ---------------------------------------------------------------------- */

static int create_key(const kms_config_key *k, kms_store *store, kms_keyring *kr,
                      const char *backend)
{
    kms_grant_rec *g = NULL;
    kms_key_rec rec;
    size_t n = 0, total = k->encrypt.n + k->decrypt.n + k->reencrypt.n;
    int r;

    if (total > 0 && (g = calloc(total, sizeof(*g))) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    for (size_t i = 0; i < k->encrypt.n; i++)
        g[n++] = (kms_grant_rec){KMS_ACTION_ENCRYPT, k->encrypt.v[i]};
    for (size_t i = 0; i < k->decrypt.n; i++)
        g[n++] = (kms_grant_rec){KMS_ACTION_DECRYPT, k->decrypt.v[i]};
    for (size_t i = 0; i < k->reencrypt.n; i++)
        g[n++] = (kms_grant_rec){KMS_ACTION_REENCRYPT, k->reencrypt.v[i]};
    if ((r = kms_keyring_create_key(kr, k->name, backend, &rec)) != 0 ||
        (r = store->ops->policy_set(store, rec.id, g, n)) != 0)
        goto out;
    printf("key %s created (version 1 on %s): %zu encrypt, %zu decrypt, %zu reencrypt "
           "identities\n",
           k->name, backend, k->encrypt.n, k->decrypt.n, k->reencrypt.n);
out:
    free(g);
    return r;
}

int kms_ceremony_run(const kms_config *cfg, kms_store *store, kms_keyring *kr, const char *backend)
{
    kms_officer_rec *officers = NULL;
    uint32_t *thresholds = NULL; /* one per row of the quorum action table */
    size_t existing = 0, keys = 0;
    int r;

    if (cfg == NULL || store == NULL || kr == NULL || backend == NULL)
        return kms_error_set(KMS_EINVAL, "ceremony: missing argument");
    if ((thresholds = calloc(kms_quorum_n_actions, sizeof(*thresholds))) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    if ((r = check_officers(cfg)) != 0 || (r = check_thresholds(cfg, thresholds)) != 0 ||
        (r = check_keys(cfg)) != 0 || (r = check_auditors(cfg)) != 0)
        goto out;
    if ((officers = calloc(cfg->n_officers, sizeof(*officers))) == NULL) {
        r = kms_error_set(KMS_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < cfg->n_officers; i++) {
        kms_officer_rec *o = &officers[i];
        memcpy(o->id, cfg->officers[i].id, strlen(cfg->officers[i].id) + 1);
        memcpy(o->identity, cfg->officers[i].identity, strlen(cfg->officers[i].identity) + 1);
        o->created_at = (int64_t)time(NULL);
        if ((r = kms_ceremony_read_signing_key(cfg->officers[i].signing_key, o->signing_key_pem,
                                               sizeof(o->signing_key_pem))) != 0) {
            char d[256];
            snprintf(d, sizeof(d), "%s", kms_error_detail()); /* the detail is rewritten */
            r = kms_error_set(r, "officer %s: %s", o->id, d);
            goto out;
        }
    }

    /* Once only, on a fresh database. */
    if ((r = store->ops->officer_list(store, count_officer, &existing)) != 0 ||
        (r = store->ops->key_list(store, count_key, &keys)) != 0)
        goto out;
    if (existing > 0 || keys > 0) {
        r = kms_error_set(KMS_EEXISTS,
                          "the database is already initialised (%zu officers, %zu keys); init "
                          "runs once, later changes go through quorum",
                          existing, keys);
        goto out;
    }

    if ((r = kms_state_key_init(kr, store)) != 0)
        goto out;
    for (size_t a = 0; a < kms_quorum_n_actions; a++)
        if ((r = store->ops->threshold_set(store, kms_quorum_actions[a].type, thresholds[a])) != 0)
            goto out;
    for (size_t i = 0; i < cfg->n_keys; i++)
        if ((r = create_key(&cfg->keys[i], store, kr, backend)) != 0)
            goto out;
    /* Officers last: `kmsd run` refuses a database without officers, so a
     * ceremony that failed half-way is never served. */
    for (size_t i = 0; i < cfg->n_officers; i++) {
        if ((r = store->ops->officer_add(store, &officers[i])) != 0)
            goto out;
        printf("officer %s registered: %s\n", officers[i].id, officers[i].identity);
    }
    for (size_t i = 0; i < cfg->auditors.n; i++) {
        kms_auditor_rec au;
        memset(&au, 0, sizeof(au));
        memcpy(au.identity, cfg->auditors.v[i], strlen(cfg->auditors.v[i]) + 1);
        au.created_at = (int64_t)time(NULL);
        if ((r = store->ops->auditor_add(store, &au)) != 0)
            goto out;
        printf("auditor registered: %s\n", au.identity);
    }
    for (size_t a = 0; a < kms_quorum_n_actions; a++)
        printf("threshold %s: %u of %zu\n", kms_quorum_actions[a].type, thresholds[a],
               cfg->n_officers);
    kms_log_info("init: %zu officers, %zu keys registered", cfg->n_officers, cfg->n_keys);
out:
    free(officers);
    free(thresholds);
    return r;
}
