/* Private to pkcs11/: the backend's state, shared by its files. */
#ifndef KMS_P11_INTERNAL_H
#define KMS_P11_INTERNAL_H

#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <stdint.h>

#include "kms/backend.h"
#include "kms/secret.h"

#define P11_ID_LEN (KMS_KEY_ID_LEN + 4) /* CKA_ID = key id ‖ version (u32 BE) */
#define P11_POOL_MAX 64

/* The session pool. `gen` counts healings: object handles found under an
 * older generation are looked up again. */
struct p11_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    CK_SESSION_HANDLE sessions[P11_POOL_MAX];
    int free_idx[P11_POOL_MAX];
    unsigned size, nfree;
    unsigned in_use; /* sessions handed out */
    unsigned gen;
    int healing;          /* a thread is re-opening sessions */
    int broken;           /* the last healing failed */
    uint64_t retry_at_ms; /* while broken: no new attempt before this */
    uint64_t backoff_ms;  /* next back-off step */
};

struct p11 {
    kms_backend base;
    void *module;
    CK_FUNCTION_LIST_PTR f;
    CK_SLOT_ID slot;
    int finalize_on_close; /* we called C_Initialize */
    char label[33];
    kms_secret *pin; /* kept, locked, to log in again after session loss */
    struct p11_pool pool;
};

struct kms_backend_key {
    uint8_t id[P11_ID_LEN];
    char label[64];
    pthread_mutex_t mu; /* guards handle and gen */
    CK_OBJECT_HANDLE handle;
    unsigned gen;
};

/* p11_rv.c: the one CK_RV table. */
int kms_p11_rv_to_error(CK_RV rv);
const char *kms_p11_rv_name(CK_RV rv);
/* 1 if rv means the session or login is gone (heal and retry). */
int kms_p11_rv_session_lost(CK_RV rv);

/* p11_module.c: module, slot, PIN, login. */
int kms_p11_module_load(struct p11 *p, const char *path);
int kms_p11_find_slot(struct p11 *p, const char *label);
int kms_p11_read_pin(const char *path, kms_secret **pin);
void kms_p11_module_unload(struct p11 *p);

/* p11_session.c: the pool. acquire gives a session index and the pool
 * generation it belongs to; release gives it back. heal re-opens every
 * session and logs in again, with back-off; it is called by a thread that
 * saw a session-loss code from generation `seen_gen`. */
int kms_p11_pool_open(struct p11 *p, unsigned size);
int kms_p11_pool_acquire(struct p11 *p, CK_SESSION_HANDLE *s, int *idx, unsigned *gen);
void kms_p11_pool_release(struct p11 *p, int idx);
int kms_p11_pool_heal(struct p11 *p, unsigned seen_gen);
void kms_p11_pool_close(struct p11 *p);

/* p11_check.c: finds the object with CKA_ID id (exactly one), and checks
 * it is a safe master key. KMS_ENOTFOUND, or KMS_EKEYCHECK naming the
 * attribute in the error detail. */
int kms_p11_find_key(struct p11 *p, CK_SESSION_HANDLE s, const uint8_t id[P11_ID_LEN],
                     CK_OBJECT_HANDLE *out);
int kms_p11_check_key(struct p11 *p, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, const char *label);

void kms_p11_label(const uint8_t id[P11_ID_LEN], char *out, size_t cap);

#endif
