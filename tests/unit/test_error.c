/* The error table: every code has a name, a message and a gRPC status. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kms/error.h"

static void every_code_is_in_the_table(void **state)
{
    (void)state;
    for (int e = KMS_OK; e >= KMS_EUNSUPPORTED; e--) {
        assert_string_not_equal(kms_error_name(e), "KMS_E?");
        assert_string_not_equal(kms_strerror(e), "unknown error");
    }
    assert_string_equal(kms_error_name(-999), "KMS_E?");
    assert_string_equal(kms_strerror(-999), "unknown error");
}

static void grpc_mapping(void **state)
{
    (void)state;
    assert_int_equal(kms_error_grpc_status(KMS_OK), 0);
    assert_int_equal(kms_error_grpc_status(KMS_EINVAL), 3);
    assert_int_equal(kms_error_grpc_status(KMS_EBADBLOB), 3);
    assert_int_equal(kms_error_grpc_status(KMS_EAUTH), 3);
    assert_int_equal(kms_error_grpc_status(KMS_ENOTFOUND), 5);
    assert_int_equal(kms_error_grpc_status(KMS_EDENIED), 7);
    assert_int_equal(kms_error_grpc_status(KMS_EEXHAUSTED), 8);
    assert_int_equal(kms_error_grpc_status(KMS_EPRECOND), 9);
    assert_int_equal(kms_error_grpc_status(KMS_EKEYCHECK), 9);
    assert_int_equal(kms_error_grpc_status(KMS_EUNAVAIL), 14);
    assert_int_equal(kms_error_grpc_status(KMS_ESTORE), 14);
    assert_int_equal(kms_error_grpc_status(-999), 13); /* unknown fails closed: INTERNAL */
}

static void detail_is_per_call_and_bounded(void **state)
{
    (void)state;
    kms_error_clear();
    assert_string_equal(kms_error_detail(), "");
    assert_int_equal(kms_error_set(KMS_EKEYCHECK, "attr %s", "CKA_EXTRACTABLE"), KMS_EKEYCHECK);
    assert_string_equal(kms_error_detail(), "attr CKA_EXTRACTABLE");
    char big[1000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(kms_error_set(KMS_EINVAL, "%s", big), KMS_EINVAL);
    assert_true(strlen(kms_error_detail()) < 300);
}

/* A public detail is sent to the caller, only under the code it was set
 * with; any later private one hides it, and clearing forgets it. */
static void public_detail(void **state)
{
    (void)state;
    kms_error_clear();
    assert_string_equal(kms_error_public(KMS_EPRECOND), "");
    assert_int_equal(kms_error_set_public(KMS_EPRECOND, "key %s is disabled", "k"), KMS_EPRECOND);
    assert_string_equal(kms_error_public(KMS_EPRECOND), "key k is disabled");
    assert_string_equal(kms_error_detail(), "key k is disabled");
    /* Returned as another failure (a caller turned it into INTERNAL without
     * a detail of its own): not the caller's to read. */
    assert_string_equal(kms_error_public(KMS_EINTERNAL), "");
    assert_string_equal(kms_error_public(KMS_OK), "");
    assert_int_equal(kms_error_set(KMS_ESTORE, "sqlite: disk I/O error"), KMS_ESTORE);
    assert_string_equal(kms_error_public(KMS_ESTORE), "");
    assert_string_equal(kms_error_detail(), "sqlite: disk I/O error");
    assert_int_equal(kms_error_set_public(KMS_EINVAL, "bad"), KMS_EINVAL);
    kms_error_clear();
    assert_string_equal(kms_error_public(KMS_EINVAL), "");
    assert_string_equal(kms_error_detail(), "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_code_is_in_the_table),
        cmocka_unit_test(grpc_mapping),
        cmocka_unit_test(detail_is_per_call_and_bounded),
        cmocka_unit_test(public_detail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
