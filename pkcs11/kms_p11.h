/* The PKCS#11 backend's constructor: the one thing the server's main needs
 * from pkcs11/. Everything else goes through kms_backend_ops. */
#ifndef KMS_P11_H
#define KMS_P11_H

#include "kms/backend.h"

typedef struct kms_p11_config {
    const char *module_path; /* PKCS#11 module to dlopen (e.g. libsofthsm2.so) */
    const char *token_label; /* the slot is found by this label, never by number */
    const char *pin_file;    /* user PIN, first line of this file; never from argv */
    unsigned sessions;       /* session pool size; 0 = 4 */
    /* Passed to C_Initialize in CK_C_INITIALIZE_ARGS.pReserved (NSS softoken
     * reads its database directory there). NULL = none, as the standard
     * says; else 1..KMS_P11_INIT_ARGS_MAX printable bytes. */
    const char *init_args;
    /* Accept a key whose CKA_LOCAL is FALSE when CKA_ALWAYS_SENSITIVE and
     * CKA_NEVER_EXTRACTABLE are TRUE (NSS softoken never sets CKA_LOCAL on
     * keys it generates). Off: CKA_LOCAL must be TRUE. docs/pkcs11.md. */
    int allow_nonlocal_keys;
} kms_p11_config;

#define KMS_P11_INIT_ARGS_MAX 1024

/* Loads the module, C_Initialize(CKF_OS_LOCKING_OK, init_args), finds the
 * token, checks it has every mechanism the backend uses (AES-GCM encrypt and
 * decrypt, 256-bit AES key generation, HMAC-SHA-256 sign, generic-secret key
 * generation), logs in once and opens the session pool. On failure *out is untouched and the
 * detail names what failed (module, token, mechanism and flag, PIN file, login). */
int kms_p11_open(const kms_p11_config *cfg, kms_backend **out) KMS_MUST_CHECK;

#endif
