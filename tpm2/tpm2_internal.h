/* TPM2 backend internals shared by tpm2_device.c (the ESYS context: connect,
 * start-up, reconnect, error mapping, the primary), tpm2_ref.c (the stored
 * reference format) and tpm2_backend.c (the backend ops). */
#ifndef KMS_TPM2_INTERNAL_H
#define KMS_TPM2_INTERNAL_H

#include <pthread.h>

#include <tss2/tss2_esys.h>

#include "kms/secret.h"
#include "tpm2/kms_tpm2.h"

typedef struct tpm2_device {
    kms_tpm2_config cfg;
    char *tcti_conf;
    pthread_mutex_t mu; /* one ESYS context: one command at a time */
    TSS2_TCTI_CONTEXT *tcti;
    ESYS_CONTEXT *esys;
    ESYS_TR primary;
    int broken; /* the connection failed: reconnect before the next command */
    int refs;   /* backends sharing this device (under mu) */
} tpm2_device;

/* Opens the context (TCTI, Startup, flush of transients); with need_primary
 * also finds the primary. Lock held or not yet shared. */
int kms_tpm2_connect(tpm2_device *d, int need_primary);
void kms_tpm2_disconnect(tpm2_device *d);

/* Before a command (lock held): reconnects a broken context. */
int kms_tpm2_ready(tpm2_device *d);

/* Maps a TSS2_RC to a kms error with a detail naming what failed; a
 * communication failure marks the device broken (KMS_EUNAVAIL). */
int kms_tpm2_error(tpm2_device *d, TSS2_RC rc, const char *what);

/* 1 for the codes worth retrying the same command for (RETRY, YIELDED,
 * TESTING, PCR_CHANGED); 2 for INITIALIZE (the TPM was reset: Startup and
 * retry once). */
int kms_tpm2_retryable(TSS2_RC rc);

/* Restarts the TPM after a reset (Startup CLEAR) and finds the primary. */
int kms_tpm2_restart(tpm2_device *d);

/* ---- references (tpm2_ref.c) ---- */

#define TPM2_REF_SEALED 1
#define TPM2_REF_RESIDENT 2

typedef struct tpm2_ref {
    int kind; /* TPM2_REF_SEALED or TPM2_REF_RESIDENT */
    uint8_t key_id[KMS_KEY_ID_LEN];
    uint32_t version;
    uint32_t pcr_mask;
    TPM2B_PUBLIC pub;
    TPM2B_PRIVATE priv;
} tpm2_ref;

int kms_tpm2_ref_encode(const tpm2_ref *r, kms_backend_ref *out);
int kms_tpm2_ref_decode(const kms_backend_ref *in, tpm2_ref *out);

/* The PCR selection for a mask (SHA-256 bank). */
void kms_tpm2_pcr_selection(uint32_t mask, TPML_PCR_SELECTION *sel);

#endif
