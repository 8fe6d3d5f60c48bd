/* Certificate revocation lists for client certificates (tls.crl).
 *
 * A kms_crl_set is what the CRL files held when they were loaded: every
 * CRL in them, each verified at load against a CA certificate of
 * tls.client_ca (a CRL that no client CA signed is refused, so a forged
 * file cannot un-revoke anyone). kms_crl_check decides one client
 * certificate; kmsd calls it during the TLS handshake, through gRPC's
 * external certificate verifier, so a refused certificate never reaches a
 * method.
 *
 * The rule (fail closed): the certificate's issuer must have a CRL in the
 * set; the certificate's serial must not be on it; and the CRL must not be
 * past its nextUpdate, unless the set was loaded with allow_expired (then
 * an expired CRL still counts, with a warning logged at load and reload).
 * A set is immutable once loaded, so checks need no lock. */
#ifndef KMS_CRL_H
#define KMS_CRL_H

#include <stddef.h>
#include <time.h>

#include "kms/error.h"

typedef struct kms_crl_set kms_crl_set;

/* Loads every CRL (PEM) of the n files and verifies each against the CA
 * certificates in ca_pem (NUL-terminated PEM). A file without a CRL, a CRL
 * whose signature no CA verifies, or two CRLs of one issuer are KMS_EINVAL
 * (with the file named). *out is set only on success. */
int kms_crl_set_load(const char *const *paths, size_t n, const char *ca_pem, int allow_expired,
                     kms_crl_set **out) KMS_MUST_CHECK;

/* How many of the set's CRLs are past their nextUpdate at now (for the
 * log at load and reload). */
size_t kms_crl_set_expired(const kms_crl_set *s, time_t now);

/* Decides the client certificate leaf_pem at now: KMS_OK, or KMS_EDENIED
 * with a detail (revoked; no CRL for its issuer; the CRL expired and
 * allow_expired is off; the certificate does not parse). */
int kms_crl_check(const kms_crl_set *s, const char *leaf_pem, time_t now) KMS_MUST_CHECK;

/* NULL-safe. */
void kms_crl_set_free(kms_crl_set *s);

#endif
