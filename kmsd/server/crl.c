/* Certificate revocation lists (crl.h). */
#include "kmsd/server/crl.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"

#define CRL_FILE_MAX (16u << 20)
#define MAX_CRLS 64

struct kms_crl_set {
    X509_CRL *crls[MAX_CRLS];
    size_t n;
    int allow_expired;
};

void kms_crl_set_free(kms_crl_set *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++)
        X509_CRL_free(s->crls[i]);
    free(s);
}

/* The CA certificates of ca_pem (at least one). */
static int load_cas(const char *ca_pem, STACK_OF(X509) * *out)
{
    STACK_OF(X509) *cas = sk_X509_new_null();
    BIO *bio = BIO_new_mem_buf(ca_pem, -1);
    X509 *x = NULL;
    int r = KMS_OK;
    if (cas == NULL || bio == NULL) {
        r = kms_error_set(KMS_ENOMEM, "out of memory");
        goto out;
    }
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(cas, x)) {
            X509_free(x);
            r = kms_error_set(KMS_ENOMEM, "out of memory");
            goto out;
        }
    }
    if (sk_X509_num(cas) == 0)
        r = kms_error_set(KMS_EINVAL, "tls.crl: tls.client_ca holds no certificate");
out:
    BIO_free(bio);
    if (r != 0)
        sk_X509_pop_free(cas, X509_free);
    else
        *out = cas;
    return r;
}

/* 1 if one of cas issued crl and its key verifies the CRL's signature. */
static int signed_by_ca(X509_CRL *crl, STACK_OF(X509) * cas)
{
    for (int i = 0; i < sk_X509_num(cas); i++) {
        X509 *ca = sk_X509_value(cas, i);
        EVP_PKEY *pk = X509_get0_pubkey(ca);
        if (X509_NAME_cmp(X509_get_subject_name(ca), X509_CRL_get_issuer(crl)) == 0 && pk != NULL &&
            X509_CRL_verify(crl, pk) == 1)
            return 1;
    }
    return 0;
}

static X509_CRL *crl_of(const kms_crl_set *s, const X509_NAME *issuer)
{
    for (size_t i = 0; i < s->n; i++)
        if (X509_NAME_cmp(X509_CRL_get_issuer(s->crls[i]), issuer) == 0)
            return s->crls[i];
    return NULL;
}

/* Adds the CRLs of one file. */
static int load_file(kms_crl_set *s, const char *path, STACK_OF(X509) * cas)
{
    char *buf = NULL;
    size_t len = 0, before = s->n;
    BIO *bio = NULL;
    X509_CRL *crl = NULL;
    int r;
    if ((r = kms_file_read(path, CRL_FILE_MAX, KMS_FILE_REGULAR, &buf, &len)) != 0)
        return r;
    if (len == 0 || len > INT32_MAX || (bio = BIO_new_mem_buf(buf, (int)len)) == NULL) {
        r = kms_error_set(KMS_EINVAL, "tls.crl: %s holds no CRL", path);
        goto out;
    }
    while ((crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
        if (s->n == MAX_CRLS) {
            r = kms_error_set(KMS_EINVAL, "tls.crl: more than %d CRLs", MAX_CRLS);
            goto out;
        }
        if (!signed_by_ca(crl, cas)) {
            r = kms_error_set(KMS_EINVAL,
                              "tls.crl: a CRL in %s is not signed by a CA of "
                              "tls.client_ca",
                              path);
            goto out;
        }
        if (crl_of(s, X509_CRL_get_issuer(crl)) != NULL) {
            r = kms_error_set(KMS_EINVAL, "tls.crl: %s: two CRLs of the same issuer", path);
            goto out;
        }
        s->crls[s->n++] = crl;
        crl = NULL;
    }
    if (s->n == before)
        r = kms_error_set(KMS_EINVAL, "tls.crl: %s holds no PEM CRL", path);
out:
    X509_CRL_free(crl);
    BIO_free(bio);
    free(buf);
    return r;
}

int kms_crl_set_load(const char *const *paths, size_t n, const char *ca_pem, int allow_expired,
                     kms_crl_set **out)
{
    STACK_OF(X509) *cas = NULL;
    kms_crl_set *s = NULL;
    int r;
    if (paths == NULL || n == 0 || ca_pem == NULL || out == NULL)
        return kms_error_set(KMS_EINVAL, "tls.crl: no files");
    if ((r = load_cas(ca_pem, &cas)) != 0)
        return r;
    if ((s = calloc(1, sizeof(*s))) == NULL) {
        r = kms_error_set(KMS_ENOMEM, "out of memory");
        goto out;
    }
    s->allow_expired = allow_expired;
    for (size_t i = 0; i < n && r == 0; i++)
        r = load_file(s, paths[i], cas);
out:
    sk_X509_pop_free(cas, X509_free);
    if (r != 0)
        kms_crl_set_free(s);
    else
        *out = s;
    return r;
}

static int expired(const X509_CRL *crl, time_t now)
{
    const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl);
    /* A CRL without nextUpdate never expires; compare: <0 if next < now. */
    return next != NULL && X509_cmp_time(next, &now) < 0;
}

size_t kms_crl_set_expired(const kms_crl_set *s, time_t now)
{
    size_t n = 0;
    for (size_t i = 0; s != NULL && i < s->n; i++)
        n += expired(s->crls[i], now) ? 1 : 0;
    return n;
}

int kms_crl_check(const kms_crl_set *s, const char *leaf_pem, time_t now)
{
    BIO *bio = NULL;
    X509 *x = NULL;
    X509_REVOKED *rev = NULL;
    int r = KMS_OK;
    if (s == NULL || leaf_pem == NULL)
        return kms_error_set(KMS_EDENIED, "revocation: no certificate to check");
    if ((bio = BIO_new_mem_buf(leaf_pem, -1)) == NULL ||
        (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) == NULL) {
        r = kms_error_set(KMS_EDENIED, "revocation: the client certificate does not parse");
        goto out;
    }
    X509_CRL *crl = crl_of(s, X509_get_issuer_name(x));
    if (crl == NULL)
        r = kms_error_set(KMS_EDENIED, "revocation: no CRL for the client certificate's issuer");
    else if (!s->allow_expired && expired(crl, now))
        r = kms_error_set(KMS_EDENIED, "revocation: the CRL of the client certificate's issuer "
                                       "has expired (tls.crl_allow_expired is off)");
    else if (X509_CRL_get0_by_cert(crl, &rev, x) == 1)
        r = kms_error_set(KMS_EDENIED, "revocation: the client certificate is revoked");
out:
    X509_free(x);
    BIO_free(bio);
    return r;
}
