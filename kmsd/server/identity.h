/* The caller's identity from its client certificate, as a pure function of
 * what the TLS layer reports, so every branch is testable without a live
 * call (tests/unit/test_kmsd_identity.c).
 *
 * The rule: the certificate's URI SAN if it has exactly one (and the value
 * is also among its subject alternative names). Without a URI SAN the
 * certificate is refused, unless the listener allows CN identities
 * (tls.cn_identities): then the identity is "cn:" + its CN, a namespace of
 * its own, so a CN that spells a URI ("spiffe://.../officer1") never
 * becomes that URI's identity. Several URI SANs or several CNs (counted in
 * the certificate itself: gRPC reports only the first CN) are refused,
 * never guessed; a certificate with neither is refused; an
 * unauthenticated peer is refused unless the listener is --insecure-dev,
 * where every caller is KMS_RPC_INSECURE_IDENTITY. */
#ifndef KMS_IDENTITY_H
#define KMS_IDENTITY_H

#include <stddef.h>

#include "kms/error.h"

/* The identity every caller has on an --insecure-dev listener. */
#define KMS_RPC_INSECURE_IDENTITY "insecure-dev"
/* The namespace of CN identities: a CN "app" is the identity "cn:app". */
#define KMS_IDENTITY_CN_PREFIX "cn:"

/* Flags of kms_identity_from_peer. */
#define KMS_IDENTITY_INSECURE_DEV 0x1u /* the listener is --insecure-dev */
#define KMS_IDENTITY_CN 0x2u           /* CN identities allowed (tls.cn_identities) */

/* One auth property: a name and a value that is not NUL-terminated. */
typedef struct kms_peer_property {
    const char *name;
    const char *value;
    size_t value_len;
} kms_peer_property;

/* Writes the identity into out (cap bytes with the NUL; cap >
 * KMS_IDENTITY_MAX holds any valid one). props are the auth context's
 * properties; only GRPC_PEER_URI_PROPERTY_NAME, GRPC_X509_SAN_PROPERTY_NAME,
 * GRPC_X509_CN_PROPERTY_NAME and (for a CN identity)
 * GRPC_X509_PEM_CERT_PROPERTY_NAME count, the others are ignored. flags:
 * KMS_IDENTITY_*. An identity is 1..KMS_IDENTITY_MAX
 * bytes without control characters. KMS_EDENIED (with a detail) for every refusal; KMS_EINVAL for a
 * NULL argument. out is written only on success. */
int kms_identity_from_peer(int authenticated, unsigned flags, const kms_peer_property *props,
                           size_t n, char *out, size_t cap) KMS_MUST_CHECK;

#endif
