/* TPM2 backend, no TPM needed: the key of the one-process-per-TPM lock
 * (tpm2/tpm2_lock.c). The usual spellings of one TPM must give one key, so
 * that a second kms process is refused however its TCTI is written; other
 * TPMs must give other keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tpm2/tpm2_internal.h"

static void same(const char *a, const char *b)
{
    char ka[1024], kb[1024];
    assert_int_equal(kms_tpm2_lock_key(a, ka, sizeof(ka)), KMS_OK);
    assert_int_equal(kms_tpm2_lock_key(b, kb, sizeof(kb)), KMS_OK);
    if (strcmp(ka, kb) != 0)
        fail_msg("\"%s\" (%s) and \"%s\" (%s) should be one TPM", a, ka, b, kb);
}

static void different(const char *a, const char *b)
{
    char ka[1024], kb[1024];
    assert_int_equal(kms_tpm2_lock_key(a, ka, sizeof(ka)), KMS_OK);
    assert_int_equal(kms_tpm2_lock_key(b, kb, sizeof(kb)), KMS_OK);
    if (strcmp(ka, kb) == 0)
        fail_msg("\"%s\" and \"%s\" should be two TPMs (both %s)", a, b, ka);
}

static void devices(void **state)
{
    (void)state;
    same("device:/dev/tpmrm0", "device:/dev/tpm0");
    same("device:", "device:/dev/tpmrm0"); /* the TSS default path */
    same("device", "device:/dev/tpm0");
    same("device:/dev/tpmrm1", "device:/dev/tpm1");
    different("device:/dev/tpm0", "device:/dev/tpm1");
    different("device:/dev/tpmrm0", "device:/dev/tpmrm1");
}

static void simulators(void **state)
{
    (void)state;
    same("swtpm:host=127.0.0.1,port=2321", "swtpm:port=2321,host=127.0.0.1");
    same("swtpm:host=127.0.0.1,port=2321", "swtpm:host=localhost,port=2321");
    same("swtpm:host=LOCALHOST,port=2321", "swtpm:host=::1,port=2321");
    same("swtpm", "swtpm:host=127.0.0.1,port=2321"); /* the TSS defaults */
    same("swtpm:", "swtpm:port=2321");
    same("mssim:host=127.0.0.1,port=2321", "swtpm:host=127.0.0.1,port=2321");
    different("swtpm:host=127.0.0.1,port=2321", "swtpm:host=127.0.0.1,port=2323");
    different("swtpm:host=127.0.0.1,port=2321", "swtpm:host=192.0.2.7,port=2321");
    different("swtpm:host=127.0.0.1,port=2321", "device:/dev/tpm0");
    /* Names are not looked up: compared as written, in lowercase. */
    same("swtpm:host=TPM.example,port=2321", "swtpm:host=tpm.example,port=2321");
    different("swtpm:host=tpm.example,port=2321", "swtpm:host=other.example,port=2321");
}

/* What the parser does not understand is kept as written: never two
 * different strings made one by a guess. */
static void others_as_written(void **state)
{
    (void)state;
    char k[1024];
    assert_int_equal(kms_tpm2_lock_key("swtpm:host=127.0.0.1,port=abc", k, sizeof(k)), KMS_OK);
    assert_string_equal(k, "swtpm:host=127.0.0.1,port=abc");
    assert_int_equal(kms_tpm2_lock_key("swtpm:frob=1", k, sizeof(k)), KMS_OK);
    assert_string_equal(k, "swtpm:frob=1");
    assert_int_equal(kms_tpm2_lock_key("libtss2-tcti-foo.so.0:x", k, sizeof(k)), KMS_OK);
    assert_string_equal(k, "libtss2-tcti-foo.so.0:x");
    same("tabrmd", "tabrmd:");
    different("tabrmd", "tabrmd:bus_name=com.example.Other");
    char small[8];
    assert_int_equal(kms_tpm2_lock_key("device:/dev/tpm0", small, sizeof(small)), KMS_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(devices),
        cmocka_unit_test(simulators),
        cmocka_unit_test(others_as_written),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
