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
} kms_p11_config;

/* Loads the module, C_Initialize(CKF_OS_LOCKING_OK), finds the token, logs in
 * once and opens the session pool. On failure *out is untouched and the
 * detail names what failed (module, token, PIN file, login). */
int kms_p11_open(const kms_p11_config *cfg, kms_backend **out) KMS_MUST_CHECK;

#endif
