/* The CK_RV table: codes, names, and which mean a lost session. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "p11_internal.h"

static void known_codes(void **state)
{
    (void)state;
    assert_int_equal(kms_p11_rv_to_error(CKR_OK), KMS_OK);
    assert_int_equal(kms_p11_rv_to_error(CKR_PIN_INCORRECT), KMS_EDENIED);
    assert_int_equal(kms_p11_rv_to_error(CKR_ENCRYPTED_DATA_INVALID), KMS_EAUTH);
    assert_int_equal(kms_p11_rv_to_error(CKR_KEY_FUNCTION_NOT_PERMITTED), KMS_EKEYCHECK);
    assert_int_equal(kms_p11_rv_to_error(CKR_DATA_LEN_RANGE), KMS_ETOOBIG);
    assert_string_equal(kms_p11_rv_name(CKR_SESSION_HANDLE_INVALID), "CKR_SESSION_HANDLE_INVALID");
}

static void session_loss_codes(void **state)
{
    (void)state;
    const CK_RV lost[] = {CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED,     CKR_DEVICE_REMOVED,
                          CKR_TOKEN_NOT_PRESENT,      CKR_USER_NOT_LOGGED_IN, CKR_DEVICE_ERROR};
    for (size_t i = 0; i < sizeof(lost) / sizeof(lost[0]); i++) {
        assert_true(kms_p11_rv_session_lost(lost[i]));
        assert_int_equal(kms_p11_rv_to_error(lost[i]), KMS_EUNAVAIL);
    }
    assert_false(kms_p11_rv_session_lost(CKR_OK));
    assert_false(kms_p11_rv_session_lost(CKR_GENERAL_ERROR));
    assert_false(kms_p11_rv_session_lost(CKR_PIN_INCORRECT));
}

static void unknown_codes_fail_closed(void **state)
{
    (void)state;
    assert_int_equal(kms_p11_rv_to_error(0x7fffffffUL), KMS_EINTERNAL);
    assert_string_equal(kms_p11_rv_name(0x7fffffffUL), "CKR_(unknown)");
    assert_false(kms_p11_rv_session_lost(0x7fffffffUL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(known_codes),
        cmocka_unit_test(session_loss_codes),
        cmocka_unit_test(unknown_codes_fail_closed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
