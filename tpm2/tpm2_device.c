/* TPM2 backend: the ESYS context. Connecting through a TCTI, starting the
 * TPM, flushing leftovers, finding or provisioning the storage primary,
 * reconnecting after the TPM went away or was reset; creating and loading
 * objects under the primary. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "base/file.h"
#include "base/log.h"
#include "tpm2_internal.h"

/* Flushes every transient object and loaded session: one owner only. */
static void flush_leftovers(tpm2_device *d)
{
    static const TPM2_HANDLE ranges[] = {TPM2_TRANSIENT_FIRST, TPM2_LOADED_SESSION_FIRST};
    for (size_t i = 0; i < 2; i++) {
        TPMS_CAPABILITY_DATA *cap = NULL;
        if (Esys_GetCapability(d->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES,
                               ranges[i], TPM2_MAX_CAP_HANDLES, NULL, &cap) != TSS2_RC_SUCCESS)
            continue;
        for (UINT32 j = 0; j < cap->data.handles.count; j++) {
            ESYS_TR tr;
            if (Esys_TR_FromTPMPublic(d->esys, cap->data.handles.handle[j], ESYS_TR_NONE,
                                      ESYS_TR_NONE, ESYS_TR_NONE, &tr) == TSS2_RC_SUCCESS &&
                Esys_FlushContext(d->esys, tr) == TSS2_RC_SUCCESS)
                kms_log_info("tpm2: flushed leftover handle 0x%08x", cap->data.handles.handle[j]);
        }
        Esys_Free(cap);
    }
}

/* The name of the object ESYS holds for the primary, as lowercase hex. */
static int primary_name_hex(tpm2_device *d, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    TPM2B_NAME *name = NULL;
    TSS2_RC rc = Esys_TR_GetName(d->esys, d->primary, &name);
    if (rc != TSS2_RC_SUCCESS)
        return kms_tpm2_error(d, rc, "name of the storage primary");
    if (name->size == 0 || 2 * (size_t)name->size >= cap) {
        Esys_Free(name);
        return kms_error_set(KMS_EINTERNAL, "tpm2: the storage primary has no usable name");
    }
    for (UINT16 i = 0; i < name->size; i++) {
        out[2 * i] = hex[name->name[i] >> 4];
        out[2 * i + 1] = hex[name->name[i] & 15];
    }
    out[2 * name->size] = '\0';
    Esys_Free(name);
    return KMS_OK;
}

/* Finds the primary and, when a name was recorded, checks that the object
 * at the handle is that one: an object someone else put there (after
 * evicting ours) would receive every new key version, and its owner could
 * read them. */
static int find_primary(tpm2_device *d)
{
    TSS2_RC rc = Esys_TR_FromTPMPublic(d->esys, d->cfg.primary_handle, ESYS_TR_NONE, ESYS_TR_NONE,
                                       ESYS_TR_NONE, &d->primary);
    if (rc != TSS2_RC_SUCCESS) {
        d->primary = ESYS_TR_NONE;
        int r = kms_tpm2_error(d, rc, "storage primary");
        if (r != KMS_EUNAVAIL)
            r = kms_error_set(KMS_EPRECOND,
                              "tpm2: no storage primary at 0x%08x: run `kmsd init` first",
                              d->cfg.primary_handle);
        return r;
    }
    if (d->primary_name[0] == '\0')
        return KMS_OK;
    char seen[sizeof(d->primary_name)];
    int r = primary_name_hex(d, seen, sizeof(seen));
    if (r == 0 && strcmp(seen, d->primary_name) != 0) {
        r = kms_error_set(KMS_EPRECOND,
                          "tpm2: the object at 0x%08x is not the storage primary kms provisioned "
                          "(name %.16s..., recorded %.16s... in %s): refusing to use it",
                          d->cfg.primary_handle, seen, d->primary_name, d->cfg.primary_name_file);
        kms_log_error("%s", kms_error_detail());
    }
    if (r != 0) {
        (void)Esys_TR_Close(d->esys, &d->primary);
        d->primary = ESYS_TR_NONE;
    }
    return r;
}

int kms_tpm2_load_primary_name(tpm2_device *d)
{
    d->primary_name[0] = '\0';
    if (d->cfg.primary_name_file == NULL)
        return KMS_OK;
    char *text = NULL;
    size_t len = 0;
    if (access(d->cfg.primary_name_file, F_OK) != 0)
        return kms_error_set(KMS_EPRECOND,
                             "tpm2: no recorded name of the storage primary (%s): run `kmsd "
                             "tpm2-provision` to record the primary present now",
                             d->cfg.primary_name_file);
    KMS_GUARD(kms_file_read(d->cfg.primary_name_file, sizeof(d->primary_name) + 1, KMS_FILE_REGULAR,
                            &text, &len));
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        text[--len] = '\0';
    int ok = len > 0 && len < sizeof(d->primary_name) && len % 2 == 0;
    for (size_t i = 0; ok && i < len; i++)
        ok = (text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f');
    if (ok)
        memcpy(d->primary_name, text, len + 1);
    free(text);
    if (!ok)
        return kms_error_set(KMS_EPRECOND, "tpm2: %s does not hold a primary's name",
                             d->cfg.primary_name_file);
    return KMS_OK;
}

#define AUTH_LABEL "kms-tpm2-auth-v1"

int kms_tpm2_load_auth_key(tpm2_device *d)
{
    if (d->cfg.auth_key_file == NULL)
        return KMS_OK;
    if (access(d->cfg.auth_key_file, F_OK) != 0)
        return kms_error_set(KMS_EPRECOND,
                             "tpm2: no object auth secret (%s): run `kmsd tpm2-provision` to make "
                             "one",
                             d->cfg.auth_key_file);
    kms_secret *k = NULL;
    KMS_GUARD(kms_file_read_secret(d->cfg.auth_key_file, 64, &k));
    if (k->len != 32) {
        kms_secret_free(k);
        return kms_error_set(KMS_EPRECOND, "tpm2: %s is not a 32-byte secret",
                             d->cfg.auth_key_file);
    }
    kms_secret_free(d->auth_key);
    d->auth_key = k;
    return KMS_OK;
}

int kms_tpm2_object_auth(tpm2_device *d, const tpm2_ref *r, TPM2B_AUTH *out)
{
    memset(out, 0, sizeof(*out));
    if (!r->auth)
        return KMS_OK;
    if (d->auth_key == NULL)
        return kms_error_set(KMS_EPRECOND,
                             "tpm2: key version needs the object auth secret, and none is "
                             "configured");
    uint8_t msg[sizeof(AUTH_LABEL) - 1 + KMS_KEY_ID_LEN + 4];
    memcpy(msg, AUTH_LABEL, sizeof(AUTH_LABEL) - 1);
    memcpy(msg + sizeof(AUTH_LABEL) - 1, r->key_id, KMS_KEY_ID_LEN);
    for (int i = 0; i < 4; i++)
        msg[sizeof(AUTH_LABEL) - 1 + KMS_KEY_ID_LEN + i] = (uint8_t)(r->version >> (24 - 8 * i));
    unsigned int len = 0;
    if (HMAC(EVP_sha256(), d->auth_key->data, (int)d->auth_key->len, msg, sizeof(msg), out->buffer,
             &len) == NULL ||
        len != 32) {
        OPENSSL_cleanse(out, sizeof(*out));
        return kms_error_set(KMS_EINTERNAL, "tpm2: cannot derive an object's authValue");
    }
    out->size = 32;
    return KMS_OK;
}

/* Provisioning: makes the object auth secret if it is configured and
 * absent (32 random bytes, 0600, never overwritten). */
static int make_auth_key(tpm2_device *d)
{
    if (d->cfg.auth_key_file == NULL || access(d->cfg.auth_key_file, F_OK) == 0)
        return KMS_OK;
    uint8_t key[32];
    if (RAND_priv_bytes(key, sizeof(key)) != 1)
        return kms_error_set(KMS_EINTERNAL, "tpm2: no random bytes for the auth secret");
    int fd = open(d->cfg.auth_key_file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    int ok = fd >= 0 && write(fd, key, sizeof(key)) == (ssize_t)sizeof(key) && fsync(fd) == 0;
    OPENSSL_cleanse(key, sizeof(key));
    if (fd >= 0)
        ok = close(fd) == 0 && ok;
    if (!ok) {
        if (fd >= 0)
            unlink(d->cfg.auth_key_file);
        return kms_error_set(KMS_EUNAVAIL, "tpm2: cannot create the auth secret %s",
                             d->cfg.auth_key_file);
    }
    kms_log_info("tpm2: made the object auth secret %s", d->cfg.auth_key_file);
    return KMS_OK;
}

/* Provisioning: records the name of the primary now at the handle, or, if
 * a name is recorded already, checks it is that one. */
static int record_primary_name(tpm2_device *d)
{
    if (d->cfg.primary_name_file == NULL)
        return KMS_OK;
    char seen[sizeof(d->primary_name)];
    KMS_GUARD(primary_name_hex(d, seen, sizeof(seen)));
    if (access(d->cfg.primary_name_file, F_OK) == 0) {
        KMS_GUARD(kms_tpm2_load_primary_name(d));
        if (strcmp(seen, d->primary_name) != 0)
            return kms_error_set(KMS_EPRECOND,
                                 "tpm2: the object at 0x%08x is not the storage primary recorded "
                                 "in %s: refusing (keys made under the recorded one no longer "
                                 "load; remove the file only if this TPM was cleared on purpose)",
                                 d->cfg.primary_handle, d->cfg.primary_name_file);
        return KMS_OK;
    }
    int fd =
        open(d->cfg.primary_name_file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return kms_error_set(KMS_EUNAVAIL, "tpm2: cannot create %s: %s", d->cfg.primary_name_file,
                             strerror(errno));
    size_t n = strlen(seen);
    seen[n] = '\n';
    int ok = write(fd, seen, n + 1) == (ssize_t)(n + 1) && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok) {
        unlink(d->cfg.primary_name_file);
        return kms_error_set(KMS_EUNAVAIL, "tpm2: cannot write %s", d->cfg.primary_name_file);
    }
    kms_log_info("tpm2: recorded the storage primary's name in %s", d->cfg.primary_name_file);
    return KMS_OK;
}

static int startup(tpm2_device *d)
{
    TSS2_RC rc = Esys_Startup(d->esys, TPM2_SU_CLEAR);
    if (rc != TSS2_RC_SUCCESS && kms_tpm2_rc_base(rc) != TPM2_RC_INITIALIZE)
        return kms_tpm2_error(d, rc, "startup");
    return KMS_OK;
}

void kms_tpm2_disconnect(tpm2_device *d)
{
    if (d->esys != NULL)
        Esys_Finalize(&d->esys);
    if (d->tcti != NULL)
        Tss2_TctiLdr_Finalize(&d->tcti);
    d->esys = NULL;
    d->tcti = NULL;
    d->primary = ESYS_TR_NONE;
    d->enc_session = ESYS_TR_NONE;
    d->res_h = ESYS_TR_NONE; /* the context's handles went with it */
    d->res_owner = 0;
}

void kms_tpm2_drop_cached(tpm2_device *d)
{
    if (d->res_h != ESYS_TR_NONE && d->esys != NULL &&
        (d->broken || Esys_FlushContext(d->esys, d->res_h) != TSS2_RC_SUCCESS))
        (void)Esys_TR_Close(d->esys, &d->res_h);
    d->res_h = ESYS_TR_NONE;
    d->res_owner = 0;
}

TSS2_RC kms_tpm2_session(tpm2_device *d, ESYS_TR *s)
{
    if (d->enc_session != ESYS_TR_NONE) {
        *s = d->enc_session;
        return TSS2_RC_SUCCESS;
    }
    TPMT_SYM_DEF sym = {.algorithm = TPM2_ALG_AES, .keyBits.aes = 128, .mode.aes = TPM2_ALG_CFB};
    ESYS_TR h = ESYS_TR_NONE;
    TSS2_RC rc =
        Esys_StartAuthSession(d->esys, d->primary, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                              ESYS_TR_NONE, NULL, TPM2_SE_HMAC, &sym, TPM2_ALG_SHA256, &h);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    rc = Esys_TRSess_SetAttributes(
        d->esys, h, TPMA_SESSION_DECRYPT | TPMA_SESSION_ENCRYPT | TPMA_SESSION_CONTINUESESSION,
        0xff);
    if (rc != TSS2_RC_SUCCESS) {
        (void)Esys_FlushContext(d->esys, h);
        return rc;
    }
    d->enc_session = h;
    *s = h;
    return TSS2_RC_SUCCESS;
}

void kms_tpm2_drop_session(tpm2_device *d)
{
    if (d->enc_session != ESYS_TR_NONE && d->esys != NULL &&
        (d->broken || Esys_FlushContext(d->esys, d->enc_session) != TSS2_RC_SUCCESS))
        (void)Esys_TR_Close(d->esys, &d->enc_session);
    d->enc_session = ESYS_TR_NONE;
}

TSS2_RC kms_tpm2_create_object(tpm2_device *d, const TPM2B_SENSITIVE_CREATE *sens,
                               const TPM2B_PUBLIC *tmpl, TPM2B_PUBLIC *pub, TPM2B_PRIVATE *priv)
{
    TPM2B_DATA outside = {0};
    TPML_PCR_SELECTION none = {0};
    TPM2B_PRIVATE *out_priv = NULL;
    TPM2B_PUBLIC *out_pub = NULL;
    ESYS_TR session = ESYS_TR_NONE;
    TSS2_RC rc = kms_tpm2_session(d, &session);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    rc = Esys_Create(d->esys, d->primary, session, ESYS_TR_NONE, ESYS_TR_NONE, sens, tmpl, &outside,
                     &none, &out_priv, &out_pub, NULL, NULL, NULL);
    if (rc != TSS2_RC_SUCCESS)
        kms_tpm2_drop_session(d); /* a failed command may have ended it */
    if (rc == TSS2_RC_SUCCESS) {
        *priv = *out_priv;
        *pub = *out_pub;
    }
    Esys_Free(out_priv);
    Esys_Free(out_pub);
    return rc;
}

TSS2_RC kms_tpm2_load(tpm2_device *d, const TPM2B_PUBLIC *pub, const TPM2B_PRIVATE *priv,
                      ESYS_TR *h)
{
    return Esys_Load(d->esys, d->primary, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, priv, pub,
                     h);
}

int kms_tpm2_connect(tpm2_device *d, int need_primary)
{
    kms_tpm2_disconnect(d);
    TSS2_RC rc = Tss2_TctiLdr_Initialize(d->tcti_conf, &d->tcti);
    if (rc == TSS2_RC_SUCCESS)
        rc = Esys_Initialize(&d->esys, d->tcti, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        int r = kms_error_set(KMS_EUNAVAIL, "tpm2: cannot reach %s: %s", d->tcti_conf,
                              Tss2_RC_Decode(rc));
        kms_tpm2_disconnect(d);
        d->broken = 1;
        return r;
    }
    d->broken = 0;
    int r = startup(d);
    if (r == 0)
        flush_leftovers(d);
    if (r == 0 && need_primary)
        r = find_primary(d);
    if (r != 0)
        d->broken = 1;
    return r;
}

int kms_tpm2_ready(tpm2_device *d)
{
    if (!d->broken && d->esys != NULL)
        return KMS_OK;
    int r = kms_tpm2_connect(d, 1);
    if (r == 0)
        kms_log_info("tpm2: reconnected to %s", d->tcti_conf);
    return r;
}

int kms_tpm2_reconnect(tpm2_device *d)
{
    int r = kms_tpm2_connect(d, 1);
    if (r == 0)
        kms_log_info("tpm2: connection to %s lost during a command: reconnected", d->tcti_conf);
    return r;
}

int kms_tpm2_restart(tpm2_device *d)
{
    KMS_GUARD(startup(d));
    /* A reset emptied the TPM's object memory: forget our handles. */
    if (d->res_h != ESYS_TR_NONE)
        (void)Esys_TR_Close(d->esys, &d->res_h);
    d->res_h = ESYS_TR_NONE;
    d->res_owner = 0;
    if (d->enc_session != ESYS_TR_NONE)
        (void)Esys_TR_Close(d->esys, &d->enc_session);
    d->enc_session = ESYS_TR_NONE;
    flush_leftovers(d);
    if (d->primary != ESYS_TR_NONE)
        (void)Esys_TR_Close(d->esys, &d->primary);
    kms_log_info("tpm2: the TPM was reset: started again");
    return find_primary(d);
}

void kms_tpm2_pcr_selection(uint32_t mask, TPML_PCR_SELECTION *sel)
{
    memset(sel, 0, sizeof(*sel));
    sel->count = 1;
    sel->pcrSelections[0].hash = TPM2_ALG_SHA256;
    sel->pcrSelections[0].sizeofSelect = 3;
    for (int i = 0; i < 24; i++)
        if (mask & (1u << i))
            sel->pcrSelections[0].pcrSelect[i / 8] |= (uint8_t)(1u << (i % 8));
}

int kms_tpm2_parse_pcrs(const char *list, uint32_t *mask)
{
    uint32_t m = 0;
    const char *p = list != NULL ? list : "";
    while (*p != '\0') {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 23)
            return kms_error_set(KMS_EINVAL, "tpm2.pcrs: PCR numbers 0..23, comma-separated");
        m |= 1u << v;
        p = end;
        if (*p == ',' && p[1] != '\0')
            p++;
        else if (*p != '\0')
            return kms_error_set(KMS_EINVAL, "tpm2.pcrs: PCR numbers 0..23, comma-separated");
    }
    *mask = m;
    return KMS_OK;
}

int kms_tpm2_provision(const kms_tpm2_config *cfg)
{
    tpm2_device d;
    memset(&d, 0, sizeof(d));
    d.res_h = ESYS_TR_NONE;
    d.enc_session = ESYS_TR_NONE;
    d.cfg = *cfg;
    if (d.cfg.primary_handle == 0)
        d.cfg.primary_handle = KMS_TPM2_DEFAULT_PRIMARY;
    if (cfg->tcti == NULL || (d.tcti_conf = strdup(cfg->tcti)) == NULL)
        return kms_error_set(KMS_EINVAL, "tpm2: no TCTI configured");
    d.primary = ESYS_TR_NONE;
    int lock_fd = -1;
    int r = kms_tpm2_lock(cfg, &lock_fd);
    if (r != 0) {
        free(d.tcti_conf);
        return r;
    }
    r = kms_tpm2_connect(&d, 0);
    if (r == 0 && find_primary(&d) == 0) {
        kms_log_info("tpm2: storage primary 0x%08x present", d.cfg.primary_handle);
    } else if (r == 0) {
        TPM2B_SENSITIVE_CREATE sens = {0};
        TPM2B_PUBLIC tmpl = {
            .publicArea = {.type = TPM2_ALG_ECC,
                           .nameAlg = TPM2_ALG_SHA256,
                           .objectAttributes = TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_RESTRICTED |
                                               TPMA_OBJECT_DECRYPT | TPMA_OBJECT_FIXEDTPM |
                                               TPMA_OBJECT_FIXEDPARENT |
                                               TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_NODA,
                           .parameters.eccDetail = {.symmetric = {.algorithm = TPM2_ALG_AES,
                                                                  .keyBits.aes = 128,
                                                                  .mode.aes = TPM2_ALG_CFB},
                                                    .scheme = {.scheme = TPM2_ALG_NULL},
                                                    .curveID = TPM2_ECC_NIST_P256,
                                                    .kdf = {.scheme = TPM2_ALG_NULL}}}};
        TPM2B_DATA outside = {0};
        TPML_PCR_SELECTION none = {0};
        ESYS_TR transient = ESYS_TR_NONE, persistent = ESYS_TR_NONE;
        TSS2_RC rc = Esys_CreatePrimary(d.esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                        ESYS_TR_NONE, &sens, &tmpl, &outside, &none, &transient,
                                        NULL, NULL, NULL, NULL);
        if (rc == TSS2_RC_SUCCESS)
            rc = Esys_EvictControl(d.esys, ESYS_TR_RH_OWNER, transient, ESYS_TR_PASSWORD,
                                   ESYS_TR_NONE, ESYS_TR_NONE, d.cfg.primary_handle, &persistent);
        if (rc != TSS2_RC_SUCCESS)
            r = kms_tpm2_error(&d, rc, "create the storage primary");
        else
            kms_log_info("tpm2: storage primary created at 0x%08x", d.cfg.primary_handle);
        if (transient != ESYS_TR_NONE)
            (void)Esys_FlushContext(d.esys, transient);
        if (r == 0)
            r = find_primary(&d);
    }
    if (r == 0)
        r = record_primary_name(&d);
    if (r == 0)
        r = make_auth_key(&d);
    kms_tpm2_disconnect(&d);
    kms_tpm2_unlock(lock_fd);
    free(d.tcti_conf);
    return r;
}

/* Create, load and persist; the transient copy is flushed either way. */
TSS2_RC kms_tpm2_make_persistent(tpm2_device *d, const TPM2B_SENSITIVE_CREATE *sens,
                                 const TPM2B_PUBLIC *tmpl, TPM2_HANDLE h)
{
    TPM2B_PUBLIC pub;
    TPM2B_PRIVATE priv;
    ESYS_TR t = ESYS_TR_NONE, persistent = ESYS_TR_NONE;
    TSS2_RC rc = kms_tpm2_create_object(d, sens, tmpl, &pub, &priv);
    if (rc == TSS2_RC_SUCCESS)
        rc = kms_tpm2_load(d, &pub, &priv, &t);
    if (rc == TSS2_RC_SUCCESS)
        rc = Esys_EvictControl(d->esys, ESYS_TR_RH_OWNER, t, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                               ESYS_TR_NONE, h, &persistent);
    if (t != ESYS_TR_NONE)
        (void)Esys_FlushContext(d->esys, t);
    if (persistent != ESYS_TR_NONE)
        (void)Esys_TR_Close(d->esys, &persistent);
    OPENSSL_cleanse(&priv, sizeof(priv));
    return rc;
}
