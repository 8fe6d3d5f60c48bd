/* TPM2 backend internals, one file per concern:
 *   tpm2_device.c   the ESYS context: connect, start-up, flush of leftovers,
 *                   reconnect and restart, the storage primary
 *   tpm2_rc.c       TSS2_RC -> kms error mapping and retry classification
 *   tpm2_lock.c     one kms process per TPM (a lock file per TCTI)
 *   tpm2_ref.c      the stored reference format
 *   tpm2_seal.c     sealed mode: create with an optional PCR policy, unseal
 *   tpm2_resident.c resident mode: HMAC keys, per-operation key derivation
 *   tpm2_shred.c    per-version NV indices whose deletion shreds a version
 *   tpm2_state.c    the state-integrity key: a persistent keyed-hash object
 *   tpm2_audit.c    the audit signing key: a persistent ECC P-256 key
 *   tpm2_backend.c  the kms_backend ops and AES-256-GCM in software */
#ifndef KMS_TPM2_INTERNAL_H
#define KMS_TPM2_INTERNAL_H

#include <openssl/types.h>
#include <pthread.h>
#include <unistd.h>

#include <tss2/tss2_esys.h>

#include "base/secret.h"
#include "kms_tpm2.h"

/* The persistent handle range, spelled out: the tss2 header's
 * TPM2_PERSISTENT_FIRST shifts a promoted int into its sign bit (undefined
 * behaviour that UBSan reports). */
#define KMS_TPM2_PERSISTENT_FIRST UINT32_C(0x81000000)
#define KMS_TPM2_PERSISTENT_LAST UINT32_C(0x81FFFFFF)

#define TPM2_RESIDENT_LABEL "kms-tpm2-resident-v1"
#define TPM2_MAX_TRIES 5

typedef struct tpm2_device {
    kms_tpm2_config cfg;
    char *tcti_conf;
    /* Own copies of cfg's file paths (cfg.primary_name_file and
     * cfg.auth_key_file point here): the caller's may not outlive open. */
    char *primary_name_file, *auth_key_file;
    pthread_mutex_t mu; /* one ESYS context: one command at a time */
    TSS2_TCTI_CONTEXT *tcti;
    ESYS_CONTEXT *esys;
    ESYS_TR primary;
    int broken;  /* the connection failed: reconnect before the next command */
    int refs;    /* backends sharing this device (under mu) */
    int lock_fd; /* the TPM lock (tpm2_lock.c), held while the device lives */
    /* The primary's recorded name (hex; "" = none to check): find_primary
     * refuses any other object at the handle. */
    char primary_name[2 * sizeof(TPMU_NAME) + 1];
    /* Resident mode keeps the last used HMAC key loaded (one slot: swtpm
     * has three, and unsealing needs two). res_owner is the opened key
     * (kms_backend_key id) it belongs to; 0 when nothing is cached. */
    ESYS_TR res_h;
    uint64_t res_owner;
    uint8_t res_key_id[KMS_KEY_ID_LEN]; /* the cached key's version, for destroy */
    uint32_t res_version;
    uint64_t next_owner;
    /* The salted HMAC session (salted to the primary's public key) that
     * encrypts the parameters carrying key material; kept across commands
     * (continueSession), ESYS_TR_NONE until first needed or after a reset. */
    ESYS_TR enc_session;
    /* The secret each object's authValue is derived from (cfg.auth_key_file,
     * 32 bytes, locked); NULL: new objects get an empty authValue. */
    kms_secret *auth_key;
    /* The versions opened and not yet released (tpm2_backend.c): destroying
     * a version marks its openings dead. */
    kms_backend_key *open;
} tpm2_device;

/* ---- the context (tpm2_device.c); all with the lock held or not yet shared ---- */

/* Opens the context (TCTI, Startup, flush of transients); with need_primary
 * also finds the primary. */
int kms_tpm2_connect(tpm2_device *d, int need_primary) KMS_MUST_CHECK;
void kms_tpm2_disconnect(tpm2_device *d);

/* Reads cfg.primary_name_file into d->primary_name (KMS_EPRECOND if it
 * is missing: the primary was provisioned before names were recorded, or
 * never). No-op without a file. */
int kms_tpm2_load_primary_name(tpm2_device *d) KMS_MUST_CHECK;

/* Reads cfg.auth_key_file into d->auth_key (KMS_EPRECOND if missing).
 * No-op without a file. */
int kms_tpm2_load_auth_key(tpm2_device *d) KMS_MUST_CHECK;

/* Before a command: reconnects a broken context. */
int kms_tpm2_ready(tpm2_device *d) KMS_MUST_CHECK;

/* The connection broke during a command: connects again (new TCTI and
 * ESYS context, Startup, flush, primary). */
int kms_tpm2_reconnect(tpm2_device *d) KMS_MUST_CHECK;

/* Restarts the TPM after a reset (Startup CLEAR), forgets every transient
 * handle and finds the primary again. */
int kms_tpm2_restart(tpm2_device *d) KMS_MUST_CHECK;

/* Flushes the cached resident key, if any (or only forgets it when the
 * TPM cannot be told). */
void kms_tpm2_drop_cached(tpm2_device *d);

/* The parameter-encryption session: started on first use (salted to the
 * primary, AES-128-CFB, SHA-256), with attributes DECRYPT (the command's
 * first parameter travels encrypted), ENCRYPT (so does the response's) and
 * CONTINUESESSION. It authorizes objects with an empty authValue and so
 * replaces the password session where key material crosses the bus.
 * *s is the device's session; a command that fails with a session error
 * should call kms_tpm2_drop_session. */
TSS2_RC kms_tpm2_session(tpm2_device *d, ESYS_TR *s);
/* Flushes (or forgets, when the TPM cannot be told) the session. */
void kms_tpm2_drop_session(tpm2_device *d);

/* Esys_Create under the primary, authorized by the salted session, so the
 * sensitive part (the sealed key) crosses the bus encrypted; Esys_Load
 * (password session: the private blob is already encrypted by the TPM). */
TSS2_RC kms_tpm2_create_object(tpm2_device *d, const TPM2B_SENSITIVE_CREATE *sens,
                               const TPM2B_PUBLIC *tmpl, TPM2B_PUBLIC *pub, TPM2B_PRIVATE *priv);
TSS2_RC kms_tpm2_load(tpm2_device *d, const TPM2B_PUBLIC *pub, const TPM2B_PRIVATE *priv,
                      ESYS_TR *h);

/* Creates an object from tmpl under the primary, loads it and makes it
 * persistent at h (owner hierarchy); the transient copy is flushed either
 * way and the private blob wiped. Lock held, context ready. */
TSS2_RC kms_tpm2_make_persistent(tpm2_device *d, const TPM2B_SENSITIVE_CREATE *sens,
                                 const TPM2B_PUBLIC *tmpl, TPM2_HANDLE h);

/* ---- the TPM lock (tpm2_lock.c) ---- */

/* Takes the exclusive lock for cfg->tcti (KMS_EPRECOND, naming the holder's
 * pid, if another process or opening holds it). */
int kms_tpm2_lock(const kms_tpm2_config *cfg, int *fd) KMS_MUST_CHECK;
void kms_tpm2_unlock(int fd);
/* The lock's key for a TCTI string: the usual spellings of one TPM give one
 * key ("device:/dev/tpmrm0" and "device:/dev/tpm0"; "swtpm:host=localhost"
 * and "mssim:port=2321,host=127.0.0.1"); anything else is kept as written. */
int kms_tpm2_lock_key(const char *tcti, char *out, size_t cap) KMS_MUST_CHECK;

/* ---- return codes (tpm2_rc.c) ---- */

/* 1 if rc is the TPM's answer (a TPM-format code, from the TPM or in a
 * resource manager's TPM layer); 0 for the software layers below (TCTI,
 * ESYS, SYS, MU). */
int kms_tpm2_rc_from_tpm(TSS2_RC rc) KMS_MUST_CHECK;

/* The TPM-format code without handle/session/parameter numbers (also for
 * the resource manager's TPM-format layer); codes of other layers
 * unchanged. */
TSS2_RC kms_tpm2_rc_base(TSS2_RC rc);

/* Maps a TSS2_RC to a kms error with a detail naming what failed; a
 * communication failure marks the device broken (KMS_EUNAVAIL). */
int kms_tpm2_error(tpm2_device *d, TSS2_RC rc, const char *what) KMS_MUST_CHECK;

#define TPM2_RETRY_NO 0
#define TPM2_RETRY_BACKOFF 1   /* RETRY, YIELDED, TESTING, PCR_CHANGED: same command again */
#define TPM2_RETRY_RESTART 2   /* INITIALIZE: the TPM was reset; Startup and retry once */
#define TPM2_RETRY_MEMORY 3    /* OBJECT_MEMORY: free the cached resident key, retry once */
#define TPM2_RETRY_RECONNECT 4 /* TCTI layer: the connection broke; reconnect, retry once */
/* Never TPM2_RETRY_* for AUTH_FAIL, BAD_AUTH or LOCKOUT: one operator
 * attempt costs at most one dictionary-attack strike. */
int kms_tpm2_retryable(TSS2_RC rc) KMS_MUST_CHECK;

/* Runs `call` (a TSS2_RC expression, re-evaluated on each try) with the lock
 * held: retries what the TPM asks to retry (at most TPM2_MAX_TRIES, with
 * back-off), restarts once after a reset, reconnects once after a broken
 * connection, frees the cached resident key once when the TPM is out of
 * object slots. `call` must make every transient handle it uses itself (or
 * take them from the device), since a restart or reconnect forgets them;
 * repeating it must be harmless (it may have run before the link broke). */
#define TPM2_RUN(d, rc, call)                                                                      \
    do {                                                                                           \
        int restarted_ = 0, freed_ = 0, reconnected_ = 0;                                          \
        for (int try_ = 0; try_ < TPM2_MAX_TRIES; try_++) {                                        \
            (rc) = (call);                                                                         \
            int k_ = (rc) == TSS2_RC_SUCCESS ? TPM2_RETRY_NO : kms_tpm2_retryable(rc);             \
            if (k_ == TPM2_RETRY_RESTART && !restarted_ && kms_tpm2_restart(d) == 0) {             \
                restarted_ = 1;                                                                    \
                continue;                                                                          \
            }                                                                                      \
            if (k_ == TPM2_RETRY_RECONNECT && !reconnected_) {                                     \
                reconnected_ = 1;                                                                  \
                if (kms_tpm2_reconnect(d) == 0)                                                    \
                    continue;                                                                      \
                break;                                                                             \
            }                                                                                      \
            if (k_ == TPM2_RETRY_MEMORY && !freed_ && (d)->res_h != ESYS_TR_NONE) {                \
                freed_ = 1;                                                                        \
                kms_tpm2_drop_cached(d);                                                           \
                continue;                                                                          \
            }                                                                                      \
            if (k_ == TPM2_RETRY_BACKOFF) {                                                        \
                usleep(2000u << try_);                                                             \
                continue;                                                                          \
            }                                                                                      \
            break;                                                                                 \
        }                                                                                          \
    } while (0)

/* ---- references (tpm2_ref.c) ---- */

#define TPM2_REF_SEALED 1
#define TPM2_REF_RESIDENT 2

typedef struct tpm2_ref {
    int kind; /* TPM2_REF_SEALED or TPM2_REF_RESIDENT */
    uint8_t key_id[KMS_KEY_ID_LEN];
    uint32_t version;
    uint32_t pcr_mask;
    int auth; /* 1: the object's authValue is derived from the auth secret (format 2, 4) */
    /* The version's shred index (formats 3, 4; tpm2_shred.c), 0 for older
     * references, which destroying cannot shred. */
    uint32_t nv_index;
    TPM2B_PUBLIC pub;
    TPM2B_PRIVATE priv;
} tpm2_ref;

/* 1 if r's object has a non-empty authValue (PCR-bound: PolicyAuthValue
 * too). */
static inline int kms_tpm2_ref_has_auth(const tpm2_ref *r)
{
    return r->auth || r->nv_index != 0;
}

/* r's authValue: HMAC-SHA256(auth secret, "kms-tpm2-auth-v1" || key id ||
 * version BE); empty for a format-1 reference. KMS_EPRECOND if r needs
 * the secret and none is configured. The caller wipes *out. */
int kms_tpm2_object_auth(tpm2_device *d, const tpm2_ref *r, TPM2B_AUTH *out) KMS_MUST_CHECK;

/* ---- shredding (tpm2_shred.c); lock held, context ready ---- */

#define TPM2_SHRED_LEN 32
/* kms's shred indices: 65536 handles in the owner range. */
#define TPM2_SHRED_NV_FIRST 0x013B0000u
#define TPM2_SHRED_NV_COUNT 0x10000u

/* The authValue of r's object: for a reference with a shred index,
 * HMAC-SHA256(shred, "kms-tpm2-auth-v2" || key id || version BE ||
 * kms_tpm2_object_auth), shred being the index's 32 bytes; otherwise
 * kms_tpm2_object_auth (shred unused). The caller wipes *out. */
int kms_tpm2_version_auth(tpm2_device *d, const tpm2_ref *r, const uint8_t *shred,
                          TPM2B_AUTH *out) KMS_MUST_CHECK;

/* Defines a fresh shred index (a random free handle in kms's range) holding
 * 32 random bytes, sets r->nv_index and returns the bytes in *secret.
 * KMS_EEXHAUSTED (a public detail) if the TPM's NV memory is full. */
int kms_tpm2_shred_create(tpm2_device *d, tpm2_ref *r, kms_secret **secret) KMS_MUST_CHECK;

/* Reads r's shred index: KMS_ENOTFOUND if it is gone (the version was
 * destroyed) or is not one kms made. */
int kms_tpm2_shred_read(tpm2_device *d, const tpm2_ref *r, kms_secret **secret) KMS_MUST_CHECK;

/* Undefines r's shred index: KMS_ENOTFOUND if it is already gone. An index
 * at that handle that kms did not make is left alone (KMS_ENOTFOUND). */
int kms_tpm2_shred_destroy(tpm2_device *d, const tpm2_ref *r) KMS_MUST_CHECK;

int kms_tpm2_ref_encode(const tpm2_ref *r, kms_backend_ref *out) KMS_MUST_CHECK;
int kms_tpm2_ref_decode(const kms_backend_ref *in, tpm2_ref *out) KMS_MUST_CHECK;

/* The PCR selection for a mask (SHA-256 bank). */
void kms_tpm2_pcr_selection(uint32_t mask, TPML_PCR_SELECTION *sel);

/* ---- sealed mode (tpm2_seal.c); lock held, context ready ---- */

/* Creates a sealed object holding 32 random bytes (OpenSSL RAND_priv_bytes)
 * bound to r->pcr_mask (none if 0); fills r->pub and r->priv. */
int kms_tpm2_seal_create(tpm2_device *d, tpm2_ref *r, const TPM2B_AUTH *auth) KMS_MUST_CHECK;

/* Loads, unseals and flushes r's object: *key (32 bytes, locked memory) is
 * set only on success. KMS_EPRECOND naming the PCRs if their values
 * changed; KMS_EKEYCHECK if the object is not ours or not a 32-byte key. */
int kms_tpm2_seal_open(tpm2_device *d, const tpm2_ref *r, const TPM2B_AUTH *auth,
                       kms_secret **key) KMS_MUST_CHECK;

/* ---- resident mode (tpm2_resident.c); lock held, context ready ---- */

/* Creates an HMAC-SHA256 key (sign only, generated in the TPM). */
int kms_tpm2_resident_create(tpm2_device *d, tpm2_ref *r, const TPM2B_AUTH *auth) KMS_MUST_CHECK;

/* Loads r's key (a check that it belongs to this TPM) and keeps it as the
 * cached key of owner. */
int kms_tpm2_resident_load(tpm2_device *d, uint64_t owner, const tpm2_ref *r,
                           const TPM2B_AUTH *auth) KMS_MUST_CHECK;

/* Flushes the cached key if it is version (key_id, version). */
void kms_tpm2_resident_forget(tpm2_device *d, const uint8_t key_id[KMS_KEY_ID_LEN],
                              uint32_t version);

/* key = HMAC_TPM(r's key, label || key id || version BE || iv); the caller
 * wipes key. Reloads the key if it is not the cached one. */
int kms_tpm2_resident_derive(tpm2_device *d, uint64_t owner, const tpm2_ref *r,
                             const TPM2B_AUTH *auth, const uint8_t iv[KMS_GCM_IV_LEN],
                             uint8_t key[32]) KMS_MUST_CHECK;

/* ---- the state-integrity key (tpm2_state.c); lock held, context ready ---- */

/* Creates the persistent HMAC-SHA256 state key at primary_handle + 1
 * (KMS_EEXISTS if an object is there already). */
int kms_tpm2_state_create(tpm2_device *d) KMS_MUST_CHECK;

/* HMAC-SHA256 of in under the state key, computed in the TPM. KMS_ENOTFOUND
 * if there is none; KMS_EKEYCHECK (naming the property) if the object at
 * the handle is not a safe state key. out is written only on success. */
int kms_tpm2_state_mac(tpm2_device *d, const uint8_t *in, size_t len,
                       uint8_t out[32]) KMS_MUST_CHECK;

/* ---- the audit signing key (tpm2_audit.c); lock held, context ready ---- */

/* Creates the persistent ECC P-256 signing key at primary_handle + 2
 * (KMS_EEXISTS if an object is there already, whatever it is). */
int kms_tpm2_audit_create(tpm2_device *d) KMS_MUST_CHECK;

/* The audit key's uncompressed public point. KMS_ENOTFOUND if there is
 * none; KMS_EKEYCHECK (naming the property) if the object at the handle is
 * not a safe audit key or its point is not on P-256. */
int kms_tpm2_audit_public(tpm2_device *d, uint8_t pub[KMS_AUDIT_PUB_LEN]) KMS_MUST_CHECK;

/* ECDSA P-256 over digest with the audit key, in the TPM: r || s (each
 * left-padded to 32 bytes) into sig, written only on success. Errors as
 * kms_tpm2_audit_public. */
int kms_tpm2_audit_sign(tpm2_device *d, const uint8_t digest[KMS_AUDIT_DIGEST_LEN],
                        uint8_t sig[KMS_AUDIT_SIG_LEN]) KMS_MUST_CHECK;

/* ---- tpm2_backend.c ---------------------------------------------------------------------- */

/* AES-256-GCM in software with key (sealed mode's unsealed key, or resident
 * mode's one-time key) over io, with io->iv as it is (the caller draws it
 * for a wrap): enc 1 writes io->out and io->tag, enc 0 checks io->tag
 * (KMS_EAUTH and io->out wiped when it does not verify). aes_gcm is a
 * fetched AES-256-GCM. Exposed for the known-answer test. */
int kms_tpm2_gcm(const EVP_CIPHER *aes_gcm, const uint8_t key[32], kms_aead_io *io,
                 int enc) KMS_MUST_CHECK;

#endif
