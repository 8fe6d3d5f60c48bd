/* Client-certificate identity extraction (identity.h). */
#include "kmsd/server/identity.h"

#include <openssl/bio.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdint.h>
#include <string.h>

#include <grpc/grpc_security_constants.h>

#include "kmsd/store/store.h"

static int named(const kms_peer_property *p, const char *name)
{
    return p->name != NULL && strcmp(p->name, name) == 0;
}

/* Copies a value that must be a clean identity: 1..max bytes, no NUL, no
 * control characters (it ends up in logs and the audit trail). */
static int take_identity(const kms_peer_property *p, char *out, size_t cap)
{
    if (p->value == NULL || p->value_len == 0 || p->value_len >= cap ||
        p->value_len > KMS_IDENTITY_MAX)
        return kms_error_set(KMS_EDENIED, "client identity empty or longer than %d bytes",
                             KMS_IDENTITY_MAX);
    for (size_t i = 0; i < p->value_len; i++) {
        unsigned char ch = (unsigned char)p->value[i];
        if (ch < 0x20 || ch == 0x7f)
            return kms_error_set(KMS_EDENIED, "client identity contains control characters");
    }
    memcpy(out, p->value, p->value_len);
    out[p->value_len] = '\0';
    return KMS_OK;
}

/* The single value of property `name`; KMS_ENOTFOUND (no detail) if
 * absent, KMS_EDENIED if there are several (an ambiguous identity is
 * refused, not guessed). */
static int single_property(const kms_peer_property *props, size_t n, const char *name, char *out,
                           size_t cap)
{
    const kms_peer_property *found = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!named(&props[i], name))
            continue;
        if (found != NULL)
            return kms_error_set(KMS_EDENIED, "client certificate has several %s entries", name);
        found = &props[i];
    }
    if (found == NULL)
        return KMS_ENOTFOUND;
    return take_identity(found, out, cap);
}

/* 1 if value is one of the certificate's subject alternative names. */
static int is_san(const kms_peer_property *props, size_t n, const char *value)
{
    size_t len = strlen(value);
    for (size_t i = 0; i < n; i++)
        if (named(&props[i], GRPC_X509_SAN_PROPERTY_NAME) && props[i].value_len == len &&
            props[i].value != NULL && memcmp(props[i].value, value, len) == 0)
            return 1;
    return 0;
}

/* How many CN entries the certificate's subject holds. gRPC reports only
 * the first one as x509_common_name, so the PEM certificate it also reports
 * is the one place a second CN can be seen. -1 if it does not parse. */
static int count_cns(const kms_peer_property *pem)
{
    int n = -1;
    if (pem->value == NULL || pem->value_len == 0 || pem->value_len > INT32_MAX)
        return -1;
    BIO *bio = BIO_new_mem_buf(pem->value, (int)pem->value_len);
    X509 *x = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    if (x != NULL) {
        n = 0;
        const X509_NAME *subject = X509_get_subject_name(x);
        for (int i = -1; (i = X509_NAME_get_index_by_NID(subject, NID_commonName, i)) >= 0;)
            n++;
    }
    X509_free(x);
    BIO_free(bio);
    return n;
}

/* The CN identity, KMS_IDENTITY_CN_PREFIX + CN, when the listener allows
 * them: the certificate's subject must hold exactly one CN. */
static int cn_identity(const kms_peer_property *props, size_t n, char *id, size_t cap)
{
    const size_t plen = sizeof(KMS_IDENTITY_CN_PREFIX) - 1;
    const kms_peer_property *pem = NULL;
    int r;

    if (cap <= plen)
        return kms_error_set(KMS_EDENIED, "client identity does not fit");
    for (size_t i = 0; i < n; i++) {
        if (!named(&props[i], GRPC_X509_PEM_CERT_PROPERTY_NAME))
            continue;
        if (pem != NULL)
            return kms_error_set(KMS_EDENIED, "client presented several certificates");
        pem = &props[i];
    }
    if (pem == NULL || count_cns(pem) != 1)
        return kms_error_set(KMS_EDENIED, "a CN identity needs a certificate whose subject has "
                                          "exactly one CN");
    r = single_property(props, n, GRPC_X509_CN_PROPERTY_NAME, id + plen, cap - plen);
    if (r == KMS_ENOTFOUND)
        return kms_error_set(KMS_EDENIED, "client certificate has neither a URI SAN nor a CN");
    if (r != 0)
        return r;
    if (strlen(id + plen) + plen > KMS_IDENTITY_MAX)
        return kms_error_set(KMS_EDENIED, "client identity longer than %d bytes", KMS_IDENTITY_MAX);
    memcpy(id, KMS_IDENTITY_CN_PREFIX, plen);
    return KMS_OK;
}

int kms_identity_from_peer(int authenticated, unsigned flags, const kms_peer_property *props,
                           size_t n, char *out, size_t cap)
{
    char id[KMS_IDENTITY_MAX + 1];
    int r;

    if (out == NULL || cap == 0 || (props == NULL && n > 0))
        return kms_error_set(KMS_EINVAL, "identity: no output buffer or properties");
    if (cap > sizeof(id))
        cap = sizeof(id);
    if (!authenticated) {
        if (!(flags & KMS_IDENTITY_INSECURE_DEV))
            return kms_error_set(KMS_EDENIED, "peer is not authenticated");
        if (cap < sizeof(KMS_RPC_INSECURE_IDENTITY))
            return kms_error_set(KMS_EINVAL, "identity: output buffer too small");
        memcpy(out, KMS_RPC_INSECURE_IDENTITY, sizeof(KMS_RPC_INSECURE_IDENTITY));
        return KMS_OK;
    }
    /* gRPC lists the URI entries of x509_subject_alternative_name again,
     * separately, as peer_uri; the value must also be among the SANs. */
    r = single_property(props, n, GRPC_PEER_URI_PROPERTY_NAME, id, cap);
    if (r == 0 && !is_san(props, n, id))
        r = kms_error_set(KMS_EDENIED, "URI identity is not among the certificate's SANs");
    if (r == KMS_ENOTFOUND) {
        if (flags & KMS_IDENTITY_CN)
            r = cn_identity(props, n, id, cap);
        else
            r = kms_error_set(KMS_EDENIED, "client certificate has no URI SAN (CN identities "
                                           "are off: tls.cn_identities)");
    }
    if (r == 0)
        memcpy(out, id, strlen(id) + 1);
    return r;
}
