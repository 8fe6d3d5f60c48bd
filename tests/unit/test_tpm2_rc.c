/* TPM2 backend, no TPM needed: the one table of TPM return codes
 * (tpm2/tpm2_rc.c). Which codes are retried and how, what each failure
 * becomes for kms, and that authorization failures are never retried (one
 * operator attempt, at most one dictionary-attack strike). Codes are
 * checked bare and with the handle/session/parameter numbers the TPM adds,
 * and as a resource manager's TPM-format layer returns them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tpm2/tpm2_internal.h"

/* Format-1 codes carry the number of the handle, session or parameter
 * that failed; format-0 codes (and warnings) do not. */
static TSS2_RC numbered(TSS2_RC rc)
{
    return (rc & TPM2_RC_FMT1) ? rc | TPM2_RC_S | TPM2_RC_1 : rc;
}

static TSS2_RC via_resmgr(TSS2_RC rc)
{
    return rc | TSS2_RESMGR_TPM_RC_LAYER;
}

static void retry_classes(void **state)
{
    (void)state;
    static const struct {
        TSS2_RC rc;
        int want;
    } cases[] = {
        {TPM2_RC_RETRY, TPM2_RETRY_BACKOFF},
        {TPM2_RC_YIELDED, TPM2_RETRY_BACKOFF},
        {TPM2_RC_TESTING, TPM2_RETRY_BACKOFF},
        {TPM2_RC_PCR_CHANGED, TPM2_RETRY_BACKOFF},
        {TPM2_RC_INITIALIZE, TPM2_RETRY_RESTART},
        {TPM2_RC_OBJECT_MEMORY, TPM2_RETRY_MEMORY},
        /* Never retried: each would be another dictionary-attack strike. */
        {TPM2_RC_AUTH_FAIL, TPM2_RETRY_NO},
        {TPM2_RC_BAD_AUTH, TPM2_RETRY_NO},
        {TPM2_RC_LOCKOUT, TPM2_RETRY_NO},
        {TPM2_RC_POLICY_FAIL, TPM2_RETRY_NO},
        {TPM2_RC_INTEGRITY, TPM2_RETRY_NO},
        {TPM2_RC_HANDLE, TPM2_RETRY_NO},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(kms_tpm2_retryable(cases[i].rc), cases[i].want);
        assert_int_equal(kms_tpm2_retryable(numbered(cases[i].rc)), cases[i].want);
        assert_int_equal(kms_tpm2_retryable(via_resmgr(numbered(cases[i].rc))), cases[i].want);
    }
    /* Whose answer: the TPM's (directly or through a resource manager), or
     * a software layer's. */
    assert_true(kms_tpm2_rc_from_tpm(numbered(TPM2_RC_HANDLE)));
    assert_true(kms_tpm2_rc_from_tpm(via_resmgr(TPM2_RC_RETRY)));
    assert_false(kms_tpm2_rc_from_tpm(TSS2_TCTI_RC_LAYER | TSS2_BASE_RC_IO_ERROR));
    assert_false(kms_tpm2_rc_from_tpm(TSS2_ESAPI_RC_LAYER | TSS2_BASE_RC_BAD_REFERENCE));
    assert_false(kms_tpm2_rc_from_tpm(TSS2_RESMGR_RC_LAYER | TSS2_BASE_RC_IO_ERROR));
    /* The link broke: reconnect; other software layers: not retried. */
    assert_int_equal(kms_tpm2_retryable(TSS2_TCTI_RC_LAYER | TSS2_BASE_RC_IO_ERROR),
                     TPM2_RETRY_RECONNECT);
    assert_int_equal(kms_tpm2_retryable(TSS2_ESAPI_RC_LAYER | TSS2_BASE_RC_BAD_REFERENCE),
                     TPM2_RETRY_NO);
}

static void error_mapping(void **state)
{
    (void)state;
    tpm2_device d;
    memset(&d, 0, sizeof(d));
    static const struct {
        TSS2_RC rc;
        int want;
    } cases[] = {
        {TPM2_RC_POLICY_FAIL, KMS_EPRECOND}, /* PCR values changed */
        {TPM2_RC_PCR_CHANGED, KMS_EPRECOND},
        {TPM2_RC_INTEGRITY, KMS_EKEYCHECK}, /* another TPM's object */
        {TPM2_RC_BINDING, KMS_EKEYCHECK},
        {TPM2_RC_AUTH_FAIL, KMS_EDENIED},
        {TPM2_RC_BAD_AUTH, KMS_EDENIED},
        {TPM2_RC_LOCKOUT, KMS_EDENIED},
        {TPM2_RC_HANDLE, KMS_ENOTFOUND},
        {TPM2_RC_RETRY, KMS_EUNAVAIL}, /* still busy after the retries */
        {TPM2_RC_INITIALIZE, KMS_EUNAVAIL},
        {TPM2_RC_OBJECT_MEMORY, KMS_EUNAVAIL},
        {TPM2_RC_VALUE, KMS_EINTERNAL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TSS2_RC forms[] = {cases[i].rc, numbered(cases[i].rc), via_resmgr(numbered(cases[i].rc))};
        for (size_t f = 0; f < 3; f++) {
            kms_error_clear();
            assert_int_equal(kms_tpm2_error(&d, forms[f], "unseal"), cases[i].want);
            assert_non_null(strstr(kms_error_detail(), "tpm2: unseal"));
            assert_int_equal(d.broken, 0); /* the TPM answered: the link is fine */
        }
    }
    /* Below the TPM (TCTI, ESYS): unavailable, and the link is redone
     * before the next command. */
    assert_int_equal(kms_tpm2_error(&d, TSS2_TCTI_RC_LAYER | TSS2_BASE_RC_IO_ERROR, "load"),
                     KMS_EUNAVAIL);
    assert_int_equal(d.broken, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(retry_classes),
        cmocka_unit_test(error_mapping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
