/* The table of backend kinds. Each row says how the configuration names
 * the kind and how to open it; nothing else in kmsd knows which backends
 * exist. Which stored key-record name means which (backend, mode) is the
 * keyring's table (kms_keyring_backend_name). */
#include "kmsd/backends.h"

#include <stdio.h>
#include <string.h>

#include "pkcs11/kms_p11.h"
#include "tpm2/kms_tpm2.h"

typedef struct backend_kind {
    const char *name; /* the configuration section */
    size_t instances; /* how many open adds (one per mode it serves) */
    int (*configured)(const kms_config *cfg);
    /* Adds this kind's instances at out[*n..]; on failure adds none. */
    int (*open)(const kms_config *cfg, int init, kms_backend **out, size_t *n);
    /* One-time set-up for an existing database; NULL: none. */
    int (*provision)(const kms_config *cfg);
} backend_kind;

/* ---- PKCS#11 ------------------------------------------------------------------------ */

/* Any pkcs11 setting names the section; kms_config_validate then wants all
 * three. */
static int p11_configured(const kms_config *c)
{
    return c->pkcs11_module != NULL || c->pkcs11_token_label != NULL || c->pkcs11_pin_file != NULL;
}

static int p11_open(const kms_config *c, int init, kms_backend **out, size_t *n)
{
    (void)init;
    kms_p11_config pc = {.module_path = c->pkcs11_module,
                         .token_label = c->pkcs11_token_label,
                         .pin_file = c->pkcs11_pin_file,
                         .sessions = c->pkcs11_sessions ? c->pkcs11_sessions : c->workers,
                         .init_args = c->pkcs11_init_args,
                         .allow_nonlocal_keys = c->pkcs11_allow_nonlocal_keys};
    kms_backend *b = NULL;
    KMS_GUARD(kms_p11_open(&pc, &b));
    int r = b->ops->health(b);
    if (r != 0) {
        b->ops->close(b);
        return r;
    }
    out[(*n)++] = b;
    return KMS_OK;
}

/* ---- TPM2 ---------------------------------------------------------------------------- */

static int tpm2_configured(const kms_config *c)
{
    return c->tpm2_tcti != NULL;
}

/* The storage primary's name is recorded beside the database, as
 * "<database>.tpm2-primary", and the object auth secret is
 * "<database>.tpm2-auth" (both paths in name_file: cap bytes). */
static int tpm2_config(const kms_config *c, kms_tpm2_config *tc, char *name_file, size_t cap)
{
    memset(tc, 0, sizeof(*tc));
    tc->tcti = c->tpm2_tcti;
    tc->primary_handle = c->tpm2_primary_handle;
    tc->lock_dir = c->tpm2_lock_dir;
    int len = snprintf(name_file, cap, "%s.tpm2-primary", c->database ? c->database : "");
    if (c->database == NULL || len < 0 || (size_t)len >= cap)
        return kms_error_set(KMS_EINVAL, "tpm2: the database path is needed (and too long)");
    tc->primary_name_file = name_file;
    /* The object auth secret: "<database>.tpm2-auth", in the same buffer. */
    char *auth_file = name_file + len + 1;
    int alen = snprintf(auth_file, cap - (size_t)len - 1, "%s.tpm2-auth", c->database);
    if (alen < 0 || (size_t)alen >= cap - (size_t)len - 1)
        return kms_error_set(KMS_EINVAL, "tpm2: the database path is too long");
    tc->auth_key_file = auth_file;
    return kms_tpm2_parse_pcrs(c->tpm2_pcrs, &tc->pcr_mask);
}

static int tpm2_provision(const kms_config *c)
{
    kms_tpm2_config tc;
    char name_file[4096];
    KMS_GUARD(tpm2_config(c, &tc, name_file, sizeof(name_file)));
    return kms_tpm2_provision(&tc);
}

/* Both modes, over one connection. */
static int tpm2_open(const kms_config *c, int init, kms_backend **out, size_t *n)
{
    kms_tpm2_config tc;
    char name_file[4096];
    KMS_GUARD(tpm2_config(c, &tc, name_file, sizeof(name_file)));
    /* init makes the primary; run needs it made. */
    if (init)
        KMS_GUARD(kms_tpm2_provision(&tc));
    kms_backend *sealed = NULL, *resident = NULL;
    KMS_GUARD(kms_tpm2_open(&tc, &sealed, &resident));
    out[(*n)++] = sealed;
    out[(*n)++] = resident;
    return KMS_OK;
}

/* ---- the table ------------------------------------------------------------------------ */

static const backend_kind kinds[] = {
    {"pkcs11", 1, p11_configured, p11_open, NULL},
    {"tpm2", 2, tpm2_configured, tpm2_open, tpm2_provision},
};

#define N_KINDS (sizeof(kinds) / sizeof(kinds[0]))

int kms_backends_configured(const kms_config *cfg)
{
    for (size_t i = 0; i < N_KINDS; i++)
        if (kinds[i].configured(cfg))
            return 1;
    return 0;
}

int kms_backends_open(const kms_config *cfg, int init, kms_backend *out[KMS_BACKENDS_MAX],
                      size_t *n)
{
    *n = 0;
    if (!kms_backends_configured(cfg))
        return kms_error_set(KMS_EINVAL, "no backend configured: set the pkcs11 section "
                                         "(module, token_label, pin_file), tpm2.tcti, or both");
    int r = KMS_OK;
    for (size_t i = 0; r == 0 && i < N_KINDS; i++) {
        if (!kinds[i].configured(cfg))
            continue;
        if (*n + kinds[i].instances > KMS_BACKENDS_MAX)
            r = kms_error_set(KMS_EINTERNAL, "more backend instances than KMS_BACKENDS_MAX");
        else
            r = kinds[i].open(cfg, init, out, n);
    }
    if (r != 0) {
        while (*n > 0) {
            kms_backend *b = out[--*n];
            b->ops->close(b);
        }
    }
    return r;
}

int kms_backends_provision(const kms_config *cfg, const char *kind)
{
    for (size_t i = 0; i < N_KINDS; i++) {
        if (strcmp(kinds[i].name, kind) != 0)
            continue;
        if (kinds[i].provision == NULL)
            return kms_error_set(KMS_EINVAL, "%s has no provisioning step", kind);
        if (!kinds[i].configured(cfg))
            return kms_error_set(KMS_EINVAL, "%s-provision needs the %s section configured", kind,
                                 kind);
        return kinds[i].provision(cfg);
    }
    return kms_error_set(KMS_EINVAL, "unknown backend %s", kind);
}
