/* Fault injection into a SoftHSM2 token, for PKCS#11 backend tests.
 *
 * SoftHSM's function list is writable memory and the backend calls through
 * that same list (softhsm_fixture.h), so swapping entries injects faults
 * into the backend: an unplugged token, a refused PIN, an operation left
 * active on a session, sessions lost at random. Set a field of
 * kms_p11_faults to make the next calls fail; the counters say how often
 * the backend tried. Install and remove only while no backend call is in
 * flight. */
#ifndef KMS_TEST_P11_FAULTS_H
#define KMS_TEST_P11_FAULTS_H

#include <stdatomic.h>

#include "softhsm_fixture.h"

typedef struct kms_test_p11_faults {
    CK_FUNCTION_LIST_PTR list; /* NULL while nothing is installed */
    CK_FUNCTION_LIST saved;
    _Atomic CK_RV open_rv;         /* C_OpenSession returns this instead of opening */
    _Atomic CK_RV login_rv;        /* C_Login */
    _Atomic CK_RV encrypt_init_rv; /* C_EncryptInit */
    _Atomic CK_RV
        encrypt_once_rv;     /* returned by the next C_Encrypt only (operation stays active) */
    atomic_uint lose_one_in; /* C_Encrypt/C_Decrypt: every n-th says the session is gone */
    atomic_uint opens, logins, aead_calls;
    /* C_GetMechanismInfo: with hide_mech set, mechanism `mech` is
     * CKR_MECHANISM_INVALID; its flags lose mech_flags_clear. */
    atomic_int hide_mech;
    _Atomic CK_MECHANISM_TYPE mech;
    _Atomic CK_FLAGS mech_flags_clear;
    /* C_Decrypt: returns decrypt_rv instead; or, with decrypt_corrupt set,
     * succeeds with the first output byte flipped (a module whose GCM is
     * broken). */
    _Atomic CK_RV decrypt_rv;
    atomic_int decrypt_corrupt;
} kms_test_p11_faults;

/* The one set of faults of this process (the module is loaded once). */
extern kms_test_p11_faults kms_p11_faults;

/* Clears kms_p11_faults and swaps the token's function list entries for the
 * injecting ones. 0, or -1 if the list is read-only (nothing installed: the
 * caller skips what needs injection). */
int kms_p11_faults_install(const kms_test_token *t);

/* Puts the module's own entries back. Safe when nothing is installed. */
void kms_p11_faults_remove(void);

#endif
