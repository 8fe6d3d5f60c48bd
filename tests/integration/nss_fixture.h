/* Test fixture: NSS softoken (libsoftokn3, Debian's libnss3) as a second,
 * independent PKCS#11 implementation, in its own temp dir.
 *
 *   kms_test_nss n;
 *   kms_test_nss_create(&n);             // certutil -N makes the database
 *   kms_p11_config c = kms_test_nss_p11_config(&n);
 *   kms_backend *b;
 *   kms_p11_open(&c, &b);
 *   ...
 *   b->ops->close(b);
 *   kms_test_nss_destroy(&n);            // removes the dir and everything in it
 *
 * NSS differs from SoftHSM2 where a new user meets it:
 *  - the module finds its database only through CK_C_INITIALIZE_ARGS.pReserved
 *    ("configdir='sql:DIR' certPrefix='' keyPrefix='' secmod='secmod.db'
 *    flags="), kms's pkcs11.init_args;
 *  - the token is the "NSS Certificate DB" slot (the other slot, "NSS Generic
 *    Crypto Services", has no login and keeps no token objects); its user PIN
 *    is the database password, set here from KMS_TEST_USER_PIN;
 *  - keys it generates report CKA_LOCAL = FALSE (pkcs11.allow_nonlocal_keys);
 *  - a failed GCM tag check is CKR_ENCRYPTED_DATA_INVALID.
 *
 * `token` is filled as softhsm_fixture.h fills it (dir, pin_file, label,
 * module; conf empty), so kms_test_token_functions and
 * kms_test_token_close_all_sessions work on NSS too (once the backend has
 * initialized the module with init_args). Needs KMS_NSS_MODULE and
 * KMS_NSS_CERTUTIL in the environment (ctest sets them); aborts on any
 * set-up failure. One NSS database per process: the module is initialized
 * once, with one configdir. */
#ifndef KMS_NSS_FIXTURE_H
#define KMS_NSS_FIXTURE_H

#include "softhsm_fixture.h"

#define KMS_TEST_NSS_LABEL "NSS Certificate DB"

typedef struct kms_test_nss {
    kms_test_token token; /* dir, pin_file, label, module */
    char db[300];         /* the NSS database dir (cert9.db, key4.db) */
    char init_args[700];  /* for pkcs11.init_args */
} kms_test_nss;

/* Makes the temp dir, an NSS database whose password is KMS_TEST_USER_PIN,
 * and the PIN file. Returns 0 (aborts on failure). */
int kms_test_nss_create(kms_test_nss *n);

/* Removes the temp dir recursively. Safe to call twice. */
void kms_test_nss_destroy(kms_test_nss *n);

/* A kms_p11_config for this database (4 sessions, init_args, CKA_LOCAL
 * FALSE accepted). Its strings point into n. */
kms_p11_config kms_test_nss_p11_config(const kms_test_nss *n);

#endif
