/* Certificate revocation lists (kmsd/server/crl.h), with certificates and
 * CRLs made here with OpenSSL: a revoked certificate is refused and another
 * of the same CA accepted; a certificate whose issuer has no CRL is
 * refused; an expired CRL refuses everyone unless allow_expired; a
 * certificate that does not parse is refused. At load: CRLs from several
 * files; a CRL not signed by a client CA (a forged one), two CRLs of one
 * issuer, and a file without a CRL are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "kmsd/server/crl.h"

typedef struct ca {
    EVP_PKEY *key;
    X509 *cert;
} ca;

static ca ca1, ca2, forger; /* forger: the name of ca1, another key */
static char dir[] = "/tmp/kms-crl-XXXXXX";
static char ca_pem[8192]; /* ca1 and ca2 */
static char leaf_ok[4096], leaf_revoked[4096], leaf_ca2[4096];
static const time_t NOW = 1800000000; /* 2027-01-15 */

static X509_NAME *name_of(const char *cn)
{
    X509_NAME *n = X509_NAME_new();
    assert_non_null(n);
    assert_int_equal(
        X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0), 1);
    return n;
}

static void make_ca(ca *c, const char *cn)
{
    c->key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    c->cert = X509_new();
    X509_NAME *n = name_of(cn);
    assert_non_null(c->key);
    assert_non_null(c->cert);
    X509_set_subject_name(c->cert, n);
    X509_set_issuer_name(c->cert, n);
    X509_gmtime_adj(X509_getm_notBefore(c->cert), -86400);
    X509_time_adj_ex(X509_getm_notAfter(c->cert), 3650, 0, NULL);
    X509_set_pubkey(c->cert, c->key);
    assert_true(X509_sign(c->cert, c->key, EVP_sha256()) > 0);
    X509_NAME_free(n);
}

static void pem_of_cert(X509 *x, char *buf, size_t cap)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_X509(b, x), 1);
    int n = BIO_read(b, buf, (int)cap - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    BIO_free(b);
}

static void make_leaf(const ca *issuer, long serial, char *pem, size_t cap)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    X509_NAME *n = name_of("leaf");
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_set_subject_name(x, n);
    X509_set_issuer_name(x, X509_get_subject_name(issuer->cert));
    X509_gmtime_adj(X509_getm_notBefore(x), -86400);
    X509_time_adj_ex(X509_getm_notAfter(x), 3650, 0, NULL);
    X509_set_pubkey(x, k);
    assert_true(X509_sign(x, issuer->key, EVP_sha256()) > 0);
    pem_of_cert(x, pem, cap);
    X509_NAME_free(n);
    X509_free(x);
    EVP_PKEY_free(k);
}

/* Writes a CRL of `issuer` (signed with `signer`'s key) revoking `serial`
 * (0: none), next update at next, into dir/file; appends if append. */
static void write_crl(const char *file, const ca *issuer, const ca *signer, long serial,
                      time_t next, int append)
{
    char path[256];
    X509_CRL *crl = X509_CRL_new();
    assert_non_null(crl);
    X509_CRL_set_version(crl, 1);
    X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer->cert));
    ASN1_TIME *t = ASN1_TIME_set(NULL, NOW - 86400);
    X509_CRL_set1_lastUpdate(crl, t);
    ASN1_TIME_set(t, next);
    X509_CRL_set1_nextUpdate(crl, t);
    if (serial != 0) {
        X509_REVOKED *r = X509_REVOKED_new();
        ASN1_INTEGER *s = ASN1_INTEGER_new();
        ASN1_INTEGER_set(s, serial);
        X509_REVOKED_set_serialNumber(r, s);
        ASN1_TIME_set(t, NOW - 3600);
        X509_REVOKED_set_revocationDate(r, t);
        X509_CRL_add0_revoked(crl, r);
        ASN1_INTEGER_free(s);
    }
    ASN1_TIME_free(t);
    X509_CRL_sort(crl);
    assert_true(X509_CRL_sign(crl, signer->key, EVP_sha256()) > 0);
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    FILE *f = fopen(path, append ? "a" : "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509_CRL(f, crl), 1);
    fclose(f);
    X509_CRL_free(crl);
}

static int load(const char *const *files, size_t n, int allow_expired, kms_crl_set **out)
{
    char paths[4][256];
    const char *p[4];
    for (size_t i = 0; i < n; i++) {
        snprintf(paths[i], sizeof(paths[i]), "%s/%s", dir, files[i]);
        p[i] = paths[i];
    }
    return kms_crl_set_load(p, n, ca_pem, allow_expired, out);
}

static int group_setup(void **state)
{
    (void)state;
    assert_non_null(mkdtemp(dir));
    make_ca(&ca1, "ca one");
    make_ca(&ca2, "ca two");
    make_ca(&forger, "ca one");
    char a[4096], b[4096];
    pem_of_cert(ca1.cert, a, sizeof(a));
    pem_of_cert(ca2.cert, b, sizeof(b));
    snprintf(ca_pem, sizeof(ca_pem), "%s%s", a, b);
    make_leaf(&ca1, 1001, leaf_ok, sizeof(leaf_ok));
    make_leaf(&ca1, 1002, leaf_revoked, sizeof(leaf_revoked));
    make_leaf(&ca2, 2001, leaf_ca2, sizeof(leaf_ca2));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    const char *files[] = {"one.pem",    "two.pem", "both.pem", "old.pem",
                           "forged.pem", "dup.pem", "empty.pem"};
    char path[256];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    ca *cas[] = {&ca1, &ca2, &forger};
    for (size_t i = 0; i < 3; i++) {
        X509_free(cas[i]->cert);
        EVP_PKEY_free(cas[i]->key);
    }
    return 0;
}

static void revoked_refused_others_accepted(void **state)
{
    (void)state;
    kms_crl_set *s = NULL;
    write_crl("one.pem", &ca1, &ca1, 1002, NOW + 86400, 0);
    write_crl("two.pem", &ca2, &ca2, 0, NOW + 86400, 0);
    const char *files[] = {"one.pem", "two.pem"};
    assert_int_equal(load(files, 2, 0, &s), KMS_OK);
    assert_int_equal(kms_crl_check(s, leaf_ok, NOW), KMS_OK);
    assert_int_equal(kms_crl_check(s, leaf_revoked, NOW), KMS_EDENIED);
    assert_int_equal(kms_crl_check(s, leaf_ca2, NOW), KMS_OK);
    assert_int_equal(kms_crl_set_expired(s, NOW), 0);
    assert_int_equal(kms_crl_check(s, "not a certificate", NOW), KMS_EDENIED);
    assert_int_equal(kms_crl_check(s, NULL, NOW), KMS_EDENIED);
    assert_int_equal(kms_crl_check(NULL, leaf_ok, NOW), KMS_EDENIED);
    kms_crl_set_free(s);

    /* Both CRLs in one file. */
    write_crl("both.pem", &ca1, &ca1, 1002, NOW + 86400, 0);
    write_crl("both.pem", &ca2, &ca2, 2001, NOW + 86400, 1);
    const char *both[] = {"both.pem"};
    assert_int_equal(load(both, 1, 0, &s), KMS_OK);
    assert_int_equal(kms_crl_check(s, leaf_ok, NOW), KMS_OK);
    assert_int_equal(kms_crl_check(s, leaf_ca2, NOW), KMS_EDENIED);
    kms_crl_set_free(s);
}

static void issuer_without_crl_refused(void **state)
{
    (void)state;
    kms_crl_set *s = NULL;
    write_crl("one.pem", &ca1, &ca1, 0, NOW + 86400, 0);
    const char *files[] = {"one.pem"};
    assert_int_equal(load(files, 1, 0, &s), KMS_OK);
    assert_int_equal(kms_crl_check(s, leaf_ok, NOW), KMS_OK);
    assert_int_equal(kms_crl_check(s, leaf_ca2, NOW), KMS_EDENIED);
    kms_crl_set_free(s);
}

static void expired_crl_fails_closed_unless_allowed(void **state)
{
    (void)state;
    kms_crl_set *s = NULL;
    write_crl("old.pem", &ca1, &ca1, 1002, NOW - 60, 0);
    const char *files[] = {"old.pem"};
    assert_int_equal(load(files, 1, 0, &s), KMS_OK);
    assert_int_equal(kms_crl_set_expired(s, NOW), 1);
    assert_int_equal(kms_crl_set_expired(s, NOW - 3600), 0);
    assert_int_equal(kms_crl_check(s, leaf_ok, NOW), KMS_EDENIED);
    assert_int_equal(kms_crl_check(s, leaf_ok, NOW - 3600), KMS_OK); /* before it expired */
    kms_crl_set_free(s);
    assert_int_equal(load(files, 1, 1, &s), KMS_OK);
    assert_int_equal(kms_crl_check(s, leaf_ok, NOW), KMS_OK);
    assert_int_equal(kms_crl_check(s, leaf_revoked, NOW), KMS_EDENIED); /* still counts */
    kms_crl_set_free(s);
}

static void bad_files_refused(void **state)
{
    (void)state;
    kms_crl_set *s = NULL;
    /* A CRL in ca1's name that un-revokes 1002, signed by another key. */
    write_crl("forged.pem", &ca1, &forger, 0, NOW + 86400, 0);
    const char *forged[] = {"forged.pem"};
    assert_int_equal(load(forged, 1, 0, &s), KMS_EINVAL);
    assert_null(s);
    write_crl("dup.pem", &ca1, &ca1, 0, NOW + 86400, 0);
    write_crl("dup.pem", &ca1, &ca1, 1002, NOW + 86400, 1);
    const char *dup[] = {"dup.pem"};
    assert_int_equal(load(dup, 1, 0, &s), KMS_EINVAL);
    char path[256];
    snprintf(path, sizeof(path), "%s/empty.pem", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", f);
    fclose(f);
    const char *empty[] = {"empty.pem"};
    assert_int_equal(load(empty, 1, 0, &s), KMS_EINVAL);
    const char *missing[] = {"missing.pem"};
    assert_true(load(missing, 1, 0, &s) < 0);
    assert_null(s);
    assert_int_equal(kms_crl_set_load(NULL, 0, ca_pem, 0, &s), KMS_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(revoked_refused_others_accepted),
        cmocka_unit_test(issuer_without_crl_refused),
        cmocka_unit_test(expired_crl_fails_closed_unless_allowed),
        cmocka_unit_test(bad_files_refused),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
