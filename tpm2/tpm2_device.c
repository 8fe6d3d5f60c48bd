/* TPM2 backend: the ESYS context. Connecting through a TCTI, starting the
 * TPM, flushing leftovers, finding or provisioning the storage primary,
 * reconnecting after the TPM went away or was reset; creating and loading
 * objects under the primary. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

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

static int find_primary(tpm2_device *d)
{
    TSS2_RC rc = Esys_TR_FromTPMPublic(d->esys, d->cfg.primary_handle, ESYS_TR_NONE, ESYS_TR_NONE,
                                       ESYS_TR_NONE, &d->primary);
    if (rc != TSS2_RC_SUCCESS) {
        int r = kms_tpm2_error(d, rc, "storage primary");
        if (r != KMS_EUNAVAIL)
            r = kms_error_set(KMS_EPRECOND,
                              "tpm2: no storage primary at 0x%08x: run `kmsd init` first",
                              d->cfg.primary_handle);
        return r;
    }
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

TSS2_RC kms_tpm2_create_object(tpm2_device *d, const TPM2B_SENSITIVE_CREATE *sens,
                               const TPM2B_PUBLIC *tmpl, TPM2B_PUBLIC *pub, TPM2B_PRIVATE *priv)
{
    TPM2B_DATA outside = {0};
    TPML_PCR_SELECTION none = {0};
    TPM2B_PRIVATE *out_priv = NULL;
    TPM2B_PUBLIC *out_pub = NULL;
    TSS2_RC rc = Esys_Create(d->esys, d->primary, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                             sens, tmpl, &outside, &none, &out_priv, &out_pub, NULL, NULL, NULL);
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
    }
    kms_tpm2_disconnect(&d);
    kms_tpm2_unlock(lock_fd);
    free(d.tcti_conf);
    return r;
}
