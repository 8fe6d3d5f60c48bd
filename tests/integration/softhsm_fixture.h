/* Test fixture: a real SoftHSM2 token in its own temp dir.
 *
 *   kms_test_token t;
 *   kms_test_token_create(&t, "my-label");   // sets SOFTHSM2_CONF for this process
 *   ... kms_p11_open with t.module, t.label, t.pin_file ...
 *   kms_test_token_destroy(&t);               // removes the dir
 *
 * Needs KMS_SOFTHSM_MODULE and KMS_SOFTHSM_UTIL in the environment (ctest
 * sets them from CMake). Calls abort() on set-up failure: a test that cannot
 * make its token must not pass. */
#ifndef KMS_SOFTHSM_FIXTURE_H
#define KMS_SOFTHSM_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#define KMS_TEST_USER_PIN "12345678"
#define KMS_TEST_SO_PIN "87654321"

typedef struct kms_test_token {
    char dir[256];      /* temp dir holding conf, tokens/ and pin */
    char conf[300];     /* softhsm2.conf */
    char pin_file[300]; /* user PIN, mode 0600 */
    char label[33];
    const char *module; /* path of libsofthsm2.so */
} kms_test_token;

int kms_test_token_create(kms_test_token *t, const char *label);
void kms_test_token_destroy(kms_test_token *t);

/* Runs argv (argv[0] a path), captures stdout+stderr into out (NUL-
 * terminated, truncated to cap) and returns the exit status (-1 on spawn
 * failure). */
int kms_test_run(char *const argv[], char *out, size_t cap);

/* Lists the token's objects with pkcs11-tool (KMS_PKCS11_TOOL), logged in,
 * into out. Returns pkcs11-tool's exit status. An independent view of the
 * token, for checks that must not trust the code under test. */
int kms_test_token_list_objects(const kms_test_token *t, char *out, size_t cap);

/* Makes an AES-256 token key with the backend's CKA_ID for (key_id, version)
 * but an unsafe attribute: which = "extractable" or "not-sensitive". Writes
 * the 20-byte CKA_ID to ref/ref_len (a kms_backend_ref for it). 0 on success. */
int kms_test_token_make_unsafe_key(const kms_test_token *t, const uint8_t key_id[16],
                                   uint32_t version, const char *which, uint8_t *ref,
                                   size_t *ref_len);

/* Closes every session of the token's slot from outside the backend, as a
 * token reset would. 0 on success. */
int kms_test_token_close_all_sessions(const kms_test_token *t);

#endif
