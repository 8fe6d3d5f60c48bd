/* Private to pkcs11/ (and its unit test): the backend's state, shared by
 * its files. The core never includes this header. */
#ifndef KMS_P11_INTERNAL_H
#define KMS_P11_INTERNAL_H

#include "p11_pkcs11.h"
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "kms/backend.h"
#include "base/secret.h"

#define P11_ID_LEN (KMS_KEY_ID_LEN + 4) /* CKA_ID = key id ‖ version (u32 BE) */
#define P11_LABEL_MAX 64                /* "kms:<32 hex>:v<u32>" + NUL fits */
#define P11_POOL_MAX 64
/* The state-integrity key's CKA_ID and label. Its CKA_ID is 19 bytes, so it
 * never equals a version's (P11_ID_LEN = 20); its label does not start
 * with "kms:" as every version's does. */
#define P11_STATE_KEY_ID "kms-state-integrity"
#define P11_STATE_KEY_LABEL "kms-state-integrity"
/* The audit signing key pair's CKA_ID and label (17 bytes: never a
 * version's or the state key's). */
#define P11_AUDIT_KEY_ID "kms-audit-signing"
#define P11_AUDIT_KEY_LABEL "kms-audit-signing"
#define P11_P256_PARAMS_LEN 10
#define P11_DATA_MAX 4096 /* largest wrap/unwrap input (API: plaintext ≤ 4 KiB, docs/api.md) */

/* The session pool. `gen` counts healings: object handles found under an
 * older generation are looked up (and checked) again. */
struct p11_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    CK_SESSION_HANDLE sessions[P11_POOL_MAX];
    int free_idx[P11_POOL_MAX];
    unsigned size, nfree;
    unsigned in_use; /* sessions handed out */
    unsigned gen;
    int healing;          /* a thread is re-opening sessions */
    int broken;           /* the last healing failed: back off */
    int dead;             /* the token refused the PIN while healing: never retry */
    uint64_t retry_at_ms; /* while broken: no new attempt before this */
    uint64_t backoff_ms;  /* next back-off step */
};

struct p11 {
    kms_backend base;
    void *module;
    CK_FUNCTION_LIST_PTR f;
    CK_SLOT_ID slot;
    int finalize_on_close; /* we called C_Initialize */
    char *init_args;       /* pReserved of C_Initialize, kept for the module's life; or NULL */
    int allow_nonlocal;    /* kms_p11_config.allow_nonlocal_keys */
    char label[33];
    kms_secret *pin; /* kept, locked, to log in again after session loss */
    struct p11_pool pool;
    /* The state-integrity key, found and checked once per pool generation. */
    pthread_mutex_t state_mu;
    CK_OBJECT_HANDLE state_handle; /* CK_INVALID_HANDLE: look it up */
    unsigned state_gen;
};

struct kms_backend_key {
    uint8_t id[P11_ID_LEN];
    char label[P11_LABEL_MAX];
    pthread_mutex_t mu; /* guards handle and gen */
    CK_OBJECT_HANDLE handle;
    unsigned gen;
};

/* ---- p11_rv.c: the one CK_RV table ------------------------------------------ */

/* kms code for rv: 0 only for CKR_OK; unknown codes fail closed with
 * KMS_EINTERNAL. */
int kms_p11_rv_to_error(CK_RV rv) KMS_MUST_CHECK;
/* As kms_p11_rv_to_error, for the rv of C_Decrypt with an AEAD mechanism:
 * a failed tag check is KMS_EAUTH (SoftHSM says CKR_GENERAL_ERROR, other
 * tokens CKR_ENCRYPTED_DATA_INVALID or CKR_ENCRYPTED_DATA_LEN_RANGE). */
int kms_p11_decrypt_rv_to_error(CK_RV rv) KMS_MUST_CHECK;
/* "CKR_PIN_INCORRECT", or "CKR_(unknown)". Never NULL. */
const char *kms_p11_rv_name(CK_RV rv);
/* 1 if rv means the session or the login is gone (heal and retry). */
int kms_p11_rv_session_lost(CK_RV rv) KMS_MUST_CHECK;
/* The table itself, for its unit test: number of rows and the rv of row i. */
size_t kms_p11_rv_table_len(void);
CK_RV kms_p11_rv_table_code(size_t i);

/* ---- p11_module.c: module, slot, PIN ------------------------------------------- */

/* dlopen + C_GetFunctionList + C_Initialize(CKF_OS_LOCKING_OK, pReserved =
 * init_args, which may be NULL; checked: 1..KMS_P11_INIT_ARGS_MAX printable
 * bytes). */
int kms_p11_module_load(struct p11 *p, const char *path, const char *init_args) KMS_MUST_CHECK;
/* The token in p->slot offers every mechanism the backend uses, with the
 * flags and a 256-bit key size: KMS_EPRECOND naming the first mechanism or
 * flag missing. */
int kms_p11_check_mechanisms(struct p11 *p) KMS_MUST_CHECK;
/* Finds the one initialized token labelled `label` (≤ 32 bytes). */
int kms_p11_find_slot(struct p11 *p, const char *label) KMS_MUST_CHECK;
/* Reads the PIN (first line of a 0600 regular file) into locked memory. */
int kms_p11_read_pin(const char *path, kms_secret **pin) KMS_MUST_CHECK;
void kms_p11_module_unload(struct p11 *p);
/* C_Finalize then C_Initialize(CKF_OS_LOCKING_OK) again and find the token
 * by its label again, for a module that fails every call until it is
 * re-initialized. Only while no session is in use (the pool's healer). */
int kms_p11_module_reinit(struct p11 *p) KMS_MUST_CHECK;

/* ---- p11_session.c: the pool ------------------------------------------------------ */

/* Opens `size` (0 = 4) RW sessions and logs in once. */
int kms_p11_pool_open(struct p11 *p, unsigned size) KMS_MUST_CHECK;
/* Borrows a session: its handle, its index (for release) and the pool
 * generation it belongs to. Blocks while every session is busy or a
 * healing runs; fails fast with KMS_EUNAVAIL while the pool is broken and
 * inside its back-off window, or dead. */
int kms_p11_pool_acquire(struct p11 *p, CK_SESSION_HANDLE *s, int *idx,
                         unsigned *gen) KMS_MUST_CHECK;
void kms_p11_pool_release(struct p11 *p, int idx);
/* Called (holding no session) by a thread that saw a session-loss code on
 * a session of generation `seen_gen`: re-opens every session and logs in
 * again unless another thread already did. 0 if the pool is usable again,
 * KMS_EUNAVAIL otherwise. */
int kms_p11_pool_heal(struct p11 *p, unsigned seen_gen) KMS_MUST_CHECK;
void kms_p11_pool_close(struct p11 *p);

/* ---- p11_check.c: finding and checking keys ---------------------------------------- */

/* Finds the secret key with CKA_ID id: KMS_ENOTFOUND if none, KMS_EKEYCHECK
 * if two objects share the id, KMS_EUNAVAIL (and the rv is a session-loss
 * code) if the session is gone. */
int kms_p11_find_key(struct p11 *p, CK_SESSION_HANDLE s, const uint8_t id[P11_ID_LEN],
                     CK_OBJECT_HANDLE *out) KMS_MUST_CHECK;
/* Checks the object is a safe master key (see p11_check.c). KMS_EKEYCHECK
 * naming the attribute in the error detail, logged as an error. */
int kms_p11_check_key(struct p11 *p, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                      const char *label) KMS_MUST_CHECK;

/* The state-integrity key (P11_STATE_KEY_ID), as kms_p11_find_key. */
int kms_p11_find_state_key(struct p11 *p, CK_SESSION_HANDLE s,
                           CK_OBJECT_HANDLE *out) KMS_MUST_CHECK;
/* Checks the object is a safe state-integrity key: a 256-bit generic
 * secret, private token object, sensitive and never extractable since it
 * was generated on the token, that may sign and do nothing else but
 * verify. KMS_EKEYCHECK naming the attribute. */
int kms_p11_check_state_key(struct p11 *p, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h) KMS_MUST_CHECK;

/* CKA_EC_PARAMS of P-256: the DER of its OID. */
extern const uint8_t kms_p11_p256_params[P11_P256_PARAMS_LEN];
/* The audit key's private half (public_half 0) or public half (1), as
 * kms_p11_find_key. */
int kms_p11_find_audit_key(struct p11 *p, CK_SESSION_HANDLE s, int public_half,
                           CK_OBJECT_HANDLE *out) KMS_MUST_CHECK;
/* Checks the private half is a safe audit key: EC P-256, private token
 * object, sensitive and never extractable since it was generated on the
 * token, not modifiable, may sign and nothing else. KMS_EKEYCHECK naming
 * the attribute. */
int kms_p11_check_audit_key(struct p11 *p, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h) KMS_MUST_CHECK;
/* The public half's point (checked: EC P-256, uncompressed). */
int kms_p11_audit_point(struct p11 *p, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                        uint8_t pub[KMS_AUDIT_PUB_LEN]) KMS_MUST_CHECK;

/* "kms:<32 hex key id>:v<version>" for a CKA_ID; cap ≥ P11_LABEL_MAX. */
void kms_p11_label(const uint8_t id[P11_ID_LEN], char *out, size_t cap);

#endif
