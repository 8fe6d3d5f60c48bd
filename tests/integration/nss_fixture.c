/* NSS softoken as a PKCS#11 token for tests (nss_fixture.h). */
#include "nss_fixture.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void die(const char *what)
{
    fprintf(stderr, "nss fixture: %s\n", what);
    abort();
}

static void write_secret(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        die("create a password file");
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len)
        die("write a password file");
    close(fd);
}

int kms_test_nss_create(kms_test_nss *n)
{
    memset(n, 0, sizeof(*n));
    kms_test_token *t = &n->token;
    t->module = getenv("KMS_NSS_MODULE");
    const char *certutil = getenv("KMS_NSS_CERTUTIL");
    if (t->module == NULL || t->module[0] == '\0' || certutil == NULL || certutil[0] == '\0')
        die("KMS_NSS_MODULE and KMS_NSS_CERTUTIL must be set (run through ctest; "
            "scripts/setup installs libnss3 and libnss3-tools)");
    if (access(t->module, R_OK) != 0 || access(certutil, X_OK) != 0)
        die("libsoftokn3.so or certutil missing: scripts/setup installs libnss3 libnss3-tools");
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] == '\0')
        tmp = "/tmp";
    int w = snprintf(t->dir, sizeof(t->dir), "%s/kms-nss-XXXXXX", tmp);
    if (w < 0 || (size_t)w >= sizeof(t->dir))
        die("TMPDIR too long");
    if (mkdtemp(t->dir) == NULL)
        die("mkdtemp");
    snprintf(n->db, sizeof(n->db), "%s/nssdb", t->dir);
    if (mkdir(n->db, 0700) != 0)
        die("mkdir nssdb");
    snprintf(t->label, sizeof(t->label), "%s", KMS_TEST_NSS_LABEL);

    /* certutil -f reads the new password from a file (no newline: NSS
     * takes the whole line). */
    char pwfile[320];
    snprintf(pwfile, sizeof(pwfile), "%s/certutil-password", t->dir);
    write_secret(pwfile, KMS_TEST_USER_PIN);
    char sqldb[320];
    snprintf(sqldb, sizeof(sqldb), "sql:%s", n->db);
    char *argv[] = {(char *)certutil, "-N", "-d", sqldb, "-f", pwfile, NULL};
    char out[2048];
    if (kms_test_run(argv, out, sizeof(out)) != 0) {
        fprintf(stderr, "%s\n", out);
        die("certutil -N failed");
    }
    unlink(pwfile);

    snprintf(t->pin_file, sizeof(t->pin_file), "%s/pin", t->dir);
    write_secret(t->pin_file, KMS_TEST_USER_PIN "\n");

    w = snprintf(n->init_args, sizeof(n->init_args),
                 "configdir='sql:%s' certPrefix='' keyPrefix='' secmod='secmod.db' flags=", n->db);
    if (w < 0 || (size_t)w >= sizeof(n->init_args))
        die("init_args too long");
    return 0;
}

void kms_test_nss_destroy(kms_test_nss *n)
{
    kms_test_token_destroy(&n->token);
}

kms_p11_config kms_test_nss_p11_config(const kms_test_nss *n)
{
    kms_p11_config c = kms_test_token_p11_config(&n->token);
    c.init_args = n->init_args;
    c.allow_nonlocal_keys = 1;
    return c;
}
