/* A fake master-key backend, in process, for the backend contract suite.
 *
 * It implements include/kms/backend.h the way an HSM would: versions live
 * "on the device" (a table in this process), each an AES-256 key from
 * OpenSSL's DRBG in kms_secret memory; wrap/unwrap are AES-256-GCM with a
 * fresh random IV; destroy removes the version for good. The device can be
 * taken away and given back (kms_fake_backend_set_down), so the suite's
 * loss and healing cases run against it too.
 *
 * For tests only: it proves the suite itself (a backend that keeps the
 * contract passes it) and gives code above the contract a backend without
 * a device. */
#ifndef KMS_TEST_BACKEND_FAKE_H
#define KMS_TEST_BACKEND_FAKE_H

#include "kms/backend.h"

/* Largest plaintext wrap accepts (KMS_ETOOBIG above it), as PKCS#11's. */
#define KMS_FAKE_DATA_MAX 4096

/* A new, empty fake device. KMS_ENOMEM on failure; *out set only on success. */
int kms_fake_backend_open(kms_backend **out) KMS_MUST_CHECK;

/* down != 0: every op answers KMS_EUNAVAIL (health too) until called again
 * with 0. Versions and opened keys survive, as on an HSM that comes back. */
void kms_fake_backend_set_down(kms_backend *b, int down);

#endif
