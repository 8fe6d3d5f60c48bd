/* TPM2 backend: TSS2 return codes. One mapping to kms errors, and the one
 * list of codes that are worth retrying. Authorization failures are never
 * retried, so one operator attempt costs at most one dictionary-attack
 * strike (kms objects are noDA with empty auth, so none at all). */
#include <tss2/tss2_rc.h>

#include "tpm2_internal.h"

#define RC_LAYER_MASK 0xFFFF0000u

int kms_tpm2_rc_from_tpm(TSS2_RC rc)
{
    TSS2_RC layer = rc & RC_LAYER_MASK;
    return layer == TSS2_TPM_RC_LAYER || layer == TSS2_RESMGR_TPM_RC_LAYER;
}

TSS2_RC kms_tpm2_rc_base(TSS2_RC rc)
{
    if ((rc & RC_LAYER_MASK) == TSS2_RESMGR_TPM_RC_LAYER)
        rc &= ~RC_LAYER_MASK; /* a TPM-format code made by a resource manager */
    else if ((rc & RC_LAYER_MASK) != 0)
        return rc;
    if (rc & TPM2_RC_FMT1)
        return rc & (0x3Fu | TPM2_RC_FMT1);
    return rc & 0x97Fu; /* format 0: keep the warning bit */
}

int kms_tpm2_retryable(TSS2_RC rc)
{
    if ((rc & RC_LAYER_MASK) == TSS2_TCTI_RC_LAYER)
        return TPM2_RETRY_RECONNECT;
    switch (kms_tpm2_rc_base(rc)) {
    case TPM2_RC_RETRY:
    case TPM2_RC_YIELDED:
    case TPM2_RC_TESTING:
    case TPM2_RC_PCR_CHANGED:
        return TPM2_RETRY_BACKOFF;
    case TPM2_RC_INITIALIZE:
        return TPM2_RETRY_RESTART;
    case TPM2_RC_OBJECT_MEMORY:
        return TPM2_RETRY_MEMORY;
    default:
        return TPM2_RETRY_NO;
    }
}

int kms_tpm2_error(tpm2_device *d, TSS2_RC rc, const char *what)
{
    TSS2_RC b = kms_tpm2_rc_base(rc);
    const char *text = Tss2_RC_Decode(rc);
    if (!kms_tpm2_rc_from_tpm(rc)) {
        /* TCTI, ESYS or SYS layer: the TPM is unreachable or the exchange
         * broke. Reconnect before the next command. */
        d->broken = 1;
        return kms_error_set(KMS_EUNAVAIL, "tpm2: %s: %s", what, text);
    }
    switch (b) {
    case TPM2_RC_POLICY_FAIL:
    case TPM2_RC_PCR_CHANGED:
        return kms_error_set(KMS_EPRECOND, "tpm2: %s: PCR policy not satisfied (%s)", what, text);
    case TPM2_RC_INTEGRITY:
    case TPM2_RC_BINDING:
        return kms_error_set(KMS_EKEYCHECK,
                             "tpm2: %s: the object does not belong to this TPM's primary (%s)",
                             what, text);
    case TPM2_RC_OBJECT_MEMORY:
    case TPM2_RC_SESSION_MEMORY:
    case TPM2_RC_RETRY:
    case TPM2_RC_YIELDED:
    case TPM2_RC_TESTING:
    case TPM2_RC_INITIALIZE:
        return kms_error_set(KMS_EUNAVAIL, "tpm2: %s: %s", what, text);
    case TPM2_RC_HANDLE:
        return kms_error_set(KMS_ENOTFOUND, "tpm2: %s: %s", what, text);
    case TPM2_RC_AUTH_FAIL:
    case TPM2_RC_BAD_AUTH:
    case TPM2_RC_LOCKOUT:
        return kms_error_set(KMS_EDENIED, "tpm2: %s: authorization refused (%s)", what, text);
    default:
        return kms_error_set(KMS_EINTERNAL, "tpm2: %s: %s", what, text);
    }
}
