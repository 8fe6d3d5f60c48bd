/* TPM2 backend, no TPM needed: the key of the one-process-per-TPM lock
 * (tpm2/tpm2_lock.c). The usual spellings of one TPM must give one key, so
 * that a second kms process is refused however its TCTI is written; other
 * TPMs must give other keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

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

static int try_lock(const char *dir)
{
    kms_tpm2_config c = {.tcti = "swtpm:port=2999", .lock_dir = dir};
    int fd = -1;
    int r = kms_tpm2_lock(&c, &fd);
    if (r == 0)
        kms_tpm2_unlock(fd);
    return r;
}

/* The lock lives only in a directory of kmsd's own user with mode 0700: a
 * world-writable or group-writable one, one of another user, a symlink to
 * a good one, or a lock file that is a symlink is refused with
 * KMS_EPRECOND (the old code took a lock in any of them). A missing
 * directory is made 0700. */
static void lock_dir_must_be_kmsds_own(void **state)
{
    (void)state;
    char base[] = "/tmp/kms-lock-test-XXXXXX";
    assert_non_null(mkdtemp(base));
    char dir[128], link_dir[128], lock[256];

    snprintf(dir, sizeof(dir), "%s/made", base);
    assert_int_equal(try_lock(dir), KMS_OK);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(try_lock(dir), KMS_OK); /* again, now that it exists */

    assert_int_equal(chmod(dir, 01777), 0); /* like /tmp */
    assert_int_equal(try_lock(dir), KMS_EPRECOND);
    if (strstr(kms_error_detail(), "group or others") == NULL)
        fail_msg("detail: %s", kms_error_detail());
    assert_int_equal(chmod(dir, 0770), 0);
    assert_int_equal(try_lock(dir), KMS_EPRECOND);
    assert_int_equal(chmod(dir, 0700), 0);

    snprintf(link_dir, sizeof(link_dir), "%s/link", base);
    assert_int_equal(symlink(dir, link_dir), 0);
    assert_int_equal(try_lock(link_dir), KMS_EPRECOND);

    /* The lock file itself replaced by a link (to a file of the attacker's
     * choosing) is not followed. */
    snprintf(lock, sizeof(lock), "%s/victim", base);
    FILE *f = fopen(lock, "w");
    assert_non_null(f);
    fclose(f);
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    int swapped = 0;
    for (struct dirent *e = readdir(dp); e != NULL; e = readdir(dp)) {
        if (strncmp(e->d_name, "kms-tpm2-", 9) != 0)
            continue;
        char file[384];
        snprintf(file, sizeof(file), "%s/%s", dir, e->d_name);
        assert_int_equal(unlink(file), 0);
        assert_int_equal(symlink(lock, file), 0);
        swapped++;
    }
    closedir(dp);
    assert_int_equal(swapped, 1);
    assert_int_equal(try_lock(dir), KMS_EPRECOND);

    if (geteuid() == 0) { /* as root, a directory of another user can be made */
        char other[128];
        snprintf(other, sizeof(other), "%s/other", base);
        assert_int_equal(mkdir(other, 0700), 0);
        assert_int_equal(chown(other, 65534, 65534), 0);
        assert_int_equal(try_lock(other), KMS_EPRECOND);
        if (strstr(kms_error_detail(), "not owned") == NULL)
            fail_msg("detail: %s", kms_error_detail());
    }
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", base);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(devices),
        cmocka_unit_test(simulators),
        cmocka_unit_test(others_as_written),
        cmocka_unit_test(lock_dir_must_be_kmsds_own),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
