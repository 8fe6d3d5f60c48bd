/* kmsd configuration: a YAML file (parsed with libyaml) plus command-line
 * overrides. Every setting is documented in docs/configuration.md.
 *
 * Use:
 *   kms_config c;
 *   kms_config_init(&c);                    // defaults
 *   kms_config_load_file(&c, path);         // optional; values from the file
 *   kms_config_set(&c, "listen", "...");    // command-line overrides
 *   kms_config_validate(&c, KMS_CONFIG_RUN);
 *   ...
 *   kms_config_free(&c);
 *
 * Relative paths in a file are taken relative to the file's directory;
 * relative paths given to kms_config_set are used as given (relative to the
 * working directory). A failed call may leave c partly updated; the caller
 * is expected to report the error and free c. Details of every failure are
 * in kms_error_detail() (file, line, setting). Nothing here is secret: the
 * PIN and private keys are named by path, never held. */
#ifndef KMS_CONFIG_H
#define KMS_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "kms/error.h"
#include "base/log.h"
#include "kmsd/store/store.h"

#define KMS_CONFIG_DEFAULT_LISTEN "127.0.0.1:7443"
#define KMS_CONFIG_DEFAULT_MAX_MESSAGE (64u * 1024u)
#define KMS_CONFIG_DEFAULT_MAX_SEND (4u * 1024u * 1024u)
/* Limits on peers before they authenticate (limits.*). */
#define KMS_CONFIG_DEFAULT_MAX_STREAMS 64u
#define KMS_CONFIG_DEFAULT_HANDSHAKE_TIMEOUT_MS 10000u
#define KMS_CONFIG_DEFAULT_IDLE_TIMEOUT_MS 300000u
/* Largest config file read (defence against a huge or generated file). */
#define KMS_CONFIG_FILE_MAX (1u << 20)
/* Limits on the init section. */
#define KMS_CONFIG_MAX_OFFICERS 64
#define KMS_CONFIG_MAX_KEYS 256
#define KMS_CONFIG_MAX_IDENTITIES 256 /* per key and action */

typedef struct kms_strlist {
    char **v;
    size_t n;
} kms_strlist;

/* An officer for `kmsd init`: id, mTLS identity, signing public key file. */
typedef struct kms_config_officer {
    char *id;
    char *identity;
    char *signing_key; /* path of a PEM public key (ECDSA P-256 or Ed25519) */
} kms_config_officer;

typedef struct kms_config_threshold {
    char *action; /* an action type ("RotateKey") or "default" */
    uint32_t threshold;
} kms_config_threshold;

/* A key that `kmsd init` creates, with its policy. */
typedef struct kms_config_key {
    char *name;
    kms_strlist encrypt;
    kms_strlist decrypt;
    kms_strlist reencrypt;
} kms_config_key;

typedef struct kms_config {
    char *listen; /* host:port; port 0 picks a free port */
    char *tls_cert;
    char *tls_key;
    char *tls_client_ca;
    int tls_cn_identities;     /* certificates without a URI SAN get the identity "cn:CN" */
    char *tls_crl;             /* NULL, or "FILE[,FILE...]": PEM CRLs of the client CAs */
    int tls_crl_allow_expired; /* an expired CRL still counts (default: refuse everyone) */
    char *database;
    char *pkcs11_module;
    char *pkcs11_token_label;
    char *pkcs11_pin_file;
    /* C_Initialize's pReserved (NSS softoken reads its database there), or NULL. */
    char *pkcs11_init_args;
    /* Accept CKA_LOCAL FALSE on always-sensitive, never-extractable keys (docs/pkcs11.md). */
    int pkcs11_allow_nonlocal_keys;
    unsigned pkcs11_sessions; /* 0 = as many as workers */
    unsigned workers;         /* 0 = automatic (2 per CPU, at least 4) */
    kms_log_level log_level;
    size_t max_message_size;      /* largest request accepted, bytes */
    size_t max_send_message_size; /* largest reply sent, bytes */
    int insecure_dev;             /* plaintext listener, no client identity */
    unsigned action_ttl;          /* seconds a quorum action stays open (0: 86400) */
    unsigned sweep_interval_ms;   /* expiry/deletion/rotation sweep period (0: 10000) */
    unsigned max_pending;         /* open proposals per officer (0: 16) */
    char *test_clock_file;        /* tests only: unix time read from this file */
    char *test_crash_at;          /* tests only: SIGKILL at this crash point (crashpoint.h) */
    char *tpm2_tcti;              /* NULL: no TPM2 backend */
    unsigned tpm2_primary_handle; /* 0: KMS_TPM2_DEFAULT_PRIMARY */
    char *tpm2_pcrs;              /* "16,17": PCRs sealed keys are bound to */
    char *tpm2_lock_dir;          /* NULL: /run/kms (0700, kmsd's; one kms process per TPM) */
    /* the audit log: on when audit_dir is set */
    char *audit_dir;
    size_t audit_max_bytes;  /* 0: 64 MiB */
    unsigned audit_max_age;  /* seconds; 0: 86400 */
    char *audit_context_key; /* NULL: audit-context.key beside the database */
    /* signed checkpoints (docs/audit.md) */
    unsigned audit_checkpoint_records; /* 0: 1000 */
    unsigned audit_checkpoint_seconds; /* 0: 60 */
    char *audit_pubkey_file;           /* NULL: audit-signing-pub.pem beside the database */
    /* Prometheus metrics (metrics.*): NULL listen = off */
    char *metrics_listen;     /* HOST:PORT, numeric host */
    int metrics_allow_remote; /* a non-loopback metrics.listen is refused without it */

    /* limits on every connection, before authentication (limits.*) */
    unsigned max_concurrent_streams; /* per connection */
    unsigned handshake_timeout_ms;   /* TCP accept to TLS done */
    unsigned idle_timeout_ms;        /* a connection with no call */

    /* init ceremony */
    kms_config_officer *officers;
    size_t n_officers;
    kms_config_threshold *thresholds;
    size_t n_thresholds;
    kms_config_key *keys;
    size_t n_keys;
    kms_strlist auditors; /* identities that may read the audit log (init.auditors) */

    /* private: which settings came from the command line, so a second
     * --officer appends rather than replaces */
    int cli_officers, cli_keys;
    int cli_auditors;
} kms_config;

typedef enum kms_config_mode { KMS_CONFIG_RUN = 0, KMS_CONFIG_INIT = 1 } kms_config_mode;

/* Fills c with the defaults (every pointer NULL or a default string). */
int kms_config_init(kms_config *c) KMS_MUST_CHECK;

/* Reads a YAML file (at most KMS_CONFIG_FILE_MAX bytes) and applies it. */
int kms_config_load_file(kms_config *c, const char *path) KMS_MUST_CHECK;

/* Parses YAML from memory (len bytes, need not be NUL-terminated).
 * base_dir (may be NULL) anchors relative paths. Unknown settings,
 * duplicate keys, anchors/aliases, wrong types and out-of-range numbers are
 * all KMS_EINVAL. This is the config fuzz target's entry point. */
int kms_config_load_buffer(kms_config *c, const char *buf, size_t len,
                           const char *base_dir) KMS_MUST_CHECK;

/* Sets one scalar setting by its dotted name ("listen", "tls.cert",
 * "pkcs11.sessions", "insecure_dev", ...) from a string, as a command-line
 * flag does. KMS_EINVAL for an unknown name or a bad value. */
int kms_config_set(kms_config *c, const char *name, const char *value) KMS_MUST_CHECK;
/* The dotted name of the i-th scalar setting, NULL past the last: every
 * name kms_config_set and the file accept (docs/configuration.md lists them
 * all; a test holds it to that). */
const char *kms_config_setting_name(size_t i);

/* Command-line forms of the init section:
 *   officer:   "ID,IDENTITY,PUBKEY_PEM_FILE"
 *   threshold: "ACTION=N" or "N" (the default for every action)
 *   key:       a key name; grants then go to the last key added. */
int kms_config_add_officer(kms_config *c, const char *spec) KMS_MUST_CHECK;
int kms_config_add_threshold(kms_config *c, const char *spec) KMS_MUST_CHECK;
int kms_config_add_key(kms_config *c, const char *name) KMS_MUST_CHECK;
/* An auditor identity for init (--auditor; the command line replaces the
 * file's init.auditors). At most KMS_CONFIG_MAX_AUDITORS. */
#define KMS_CONFIG_MAX_AUDITORS 64
int kms_config_add_auditor(kms_config *c, const char *identity) KMS_MUST_CHECK;
/* action: "encrypt", "decrypt" or "reencrypt". KMS_EINVAL without a key. */
int kms_config_add_grant(kms_config *c, const char *action, const char *identity) KMS_MUST_CHECK;

/* Checks what a mode needs: both need the database and at least one
 * backend (all three PKCS#11 settings, or tpm2.tcti, or both; a partial
 * PKCS#11 section is refused); RUN also needs (unless insecure_dev) the
 * three TLS files, and allows insecure_dev only on a loopback listen
 * address. Thresholds of 1 and other semantic checks of the
 * ceremony are made by the ceremony itself. */
int kms_config_validate(const kms_config *c, kms_config_mode mode) KMS_MUST_CHECK;

/* 1 if listen ("HOST:PORT") names a loopback host: 127.0.0.0/8, [::1] or
 * localhost; 0 otherwise (a wildcard, another address, a bad value).
 * kms_config_validate allows insecure_dev only then. */
int kms_config_listen_is_loopback(const char *listen) KMS_MUST_CHECK;

/* The test-only settings (test_clock_file, test_crash_at) exist only in a
 * kmsd built with KMS_TEST_HOOKS: KMS_EINVAL (with a detail) if one is set
 * and test_hooks_built is 0. */
int kms_config_check_test_settings(const kms_config *c, int test_hooks_built) KMS_MUST_CHECK;

/* Frees every string and list. NULL-safe; c is left at all-zero. */
void kms_config_free(kms_config *c);

/* Parses a log level name ("debug", "info", "warn", "error"). */
int kms_config_parse_log_level(const char *s, kms_log_level *out) KMS_MUST_CHECK;

#endif
