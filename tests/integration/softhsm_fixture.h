/* Test fixture: a real SoftHSM2 token in its own temp dir.
 *
 *   kms_test_token t;
 *   kms_test_token_create(&t, "my-label");    // sets SOFTHSM2_CONF for this process
 *   kms_p11_config c = kms_test_token_p11_config(&t);
 *   kms_backend *b;
 *   kms_p11_open(&c, &b);
 *   ...
 *   b->ops->close(b);
 *   kms_test_token_destroy(&t);                // removes the dir and everything in it
 *
 * Needs KMS_SOFTHSM_MODULE and KMS_SOFTHSM_UTIL in the environment (ctest
 * sets them from CMake; KMS_PKCS11_TOOL too, for the pkcs11-tool helpers).
 * kms_test_token_create calls abort() on any set-up failure: a test that
 * cannot make its token must not pass.
 *
 * One token per process at a time: SOFTHSM2_CONF is process-wide and
 * SoftHSM reads it in C_Initialize, so create the token before the backend
 * is opened and destroy it after the backend is closed.
 *
 * The helpers that act on the token "from outside" (make_key,
 * close_all_sessions, functions) use the module's own function list: a
 * dlopen of the same path returns the instance the backend loaded, so
 * they see the same slots, objects and login state. */
#ifndef KMS_SOFTHSM_FIXTURE_H
#define KMS_SOFTHSM_FIXTURE_H

#include "pkcs11/p11_pkcs11.h"
#include <stddef.h>
#include <stdint.h>

#include "pkcs11/kms_p11.h"

#define KMS_TEST_USER_PIN "12345678"
#define KMS_TEST_SO_PIN "87654321"

typedef struct kms_test_token {
    char dir[256];      /* temp dir (mkdtemp under $TMPDIR or /tmp): conf, tokens/, pin */
    char conf[300];     /* softhsm2.conf (SOFTHSM2_CONF points here) */
    char pin_file[300]; /* user PIN and a newline, mode 0600 */
    char label[33];     /* token label (truncated to 32 bytes) */
    const char *module; /* path of libsofthsm2.so (from KMS_SOFTHSM_MODULE) */
} kms_test_token;

/* Makes the temp dir, the config, an initialized token (SO PIN
 * KMS_TEST_SO_PIN, user PIN KMS_TEST_USER_PIN) and the PIN file. Returns 0
 * (aborts on failure). */
int kms_test_token_create(kms_test_token *t, const char *label);

/* Removes the temp dir recursively. Safe to call twice. */
void kms_test_token_destroy(kms_test_token *t);

/* A kms_p11_config for this token (4 sessions). Its strings point into t. */
kms_p11_config kms_test_token_p11_config(const kms_test_token *t);

/* Runs argv (argv[0] a path; no shell), captures stdout+stderr into out
 * (NUL-terminated, truncated to cap; out may be NULL) and returns the exit
 * status, or -1 if the program could not be started or did not exit. */
int kms_test_run(char *const argv[], char *out, size_t cap);

/* pkcs11-tool (KMS_PKCS11_TOOL) --login --list-objects --type secrkey on
 * this token, its stdout into out (stderr goes to the test's stderr).
 * Returns pkcs11-tool's exit status. An independent
 * view of the token, for checks that must not trust the code under test. */
int kms_test_token_list_objects(const kms_test_token *t, char *out, size_t cap);

/* Generates an AES token key with the backend's CKA_ID layout for
 * (key_id, version) — key id ‖ version (u32 BE) — and writes that 20-byte
 * CKA_ID to ref/ref_len (the bytes of a kms_backend_ref). `kind`:
 *   "safe"          the attributes the backend itself uses (for a duplicate CKA_ID)
 *   "extractable"   CKA_EXTRACTABLE=TRUE
 *   "not-sensitive" CKA_SENSITIVE=FALSE
 *   "public"        CKA_PRIVATE=FALSE
 *   "wrap"          CKA_WRAP=TRUE as well as encrypt/decrypt
 *   "aes128"        CKA_VALUE_LEN=16
 *   "imported"      made with C_CreateObject from known bytes (CKA_LOCAL and
 *                   CKA_ALWAYS_SENSITIVE are FALSE)
 *   "modifiable"    CKA_MODIFIABLE=TRUE (every other kind is FALSE)
 * Returns 0, or -1 (unknown kind, or the token refused). */
int kms_test_token_make_key(const kms_test_token *t, const uint8_t key_id[16], uint32_t version,
                            const char *kind, uint8_t *ref, size_t *ref_len);

/* Kept for existing callers: kms_test_token_make_key with an unsafe kind. */
int kms_test_token_make_unsafe_key(const kms_test_token *t, const uint8_t key_id[16],
                                   uint32_t version, const char *which, uint8_t *ref,
                                   size_t *ref_len);

/* Closes every session of the token's slot from outside the backend (as a
 * token reset would; the login goes with the last session). Call it only
 * while no backend operation is in flight: SoftHSM frees a session's state
 * under a thread that may still be using it. 0 on success. */
int kms_test_token_close_all_sessions(const kms_test_token *t);

/* The module's own function list (initialized) and the token's slot, for
 * tests that call the module directly. SoftHSM's list is writable memory:
 * a test may swap entries to inject faults into the backend, provided it
 * restores them while no call is in flight. NULL on failure. */
CK_FUNCTION_LIST_PTR kms_test_token_functions(const kms_test_token *t, CK_SLOT_ID *slot);

#endif
