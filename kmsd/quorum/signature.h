/* Officer signing keys and approval signatures (docs/approvals.md).
 *
 * Officers sign the 32-byte approval digest with ECDSA P-256 (SHA-256 over
 * the digest bytes, DER signature) or Ed25519 (pure, over the digest
 * bytes). Only public keys ever reach kmsd. */
#ifndef KMS_SIGNATURE_H
#define KMS_SIGNATURE_H

#include <stddef.h>
#include <stdint.h>

#include "kms/error.h"

/* Checks that pem (len bytes, need not be NUL-terminated) is one PEM public
 * key, ECDSA P-256 or Ed25519, and writes its canonical PEM (SPKI) to out
 * (cap bytes with the NUL). KMS_EINVAL naming the problem otherwise
 * (including a private key given by mistake). */
int kms_signature_key_normalize(const char *pem, size_t len, char *out, size_t cap) KMS_MUST_CHECK;

/* 0 if sig is a valid signature of digest under the PEM public key;
 * KMS_EAUTH if it is not (or is malformed); KMS_EINVAL for an unusable key. */
int kms_signature_verify(const char *pem, const uint8_t digest[32], const uint8_t *sig,
                         size_t sig_len) KMS_MUST_CHECK;

#endif
