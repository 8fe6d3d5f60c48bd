/* libkmsclient: the C client of kmsd's data plane over gRPC with mutual TLS.
 *
 *   kms_client_options o = {.target = "127.0.0.1:7443", .ca_file = "ca.pem",
 *                           .cert_file = "app.pem", .key_file = "app-key.pem"};
 *   kms_client *c;
 *   kms_client_error err;
 *   if (kms_client_open(&o, &c, &err) != KMS_CLIENT_OK) ... err.message ...
 *   kms_client_context_entry ctx[] = {{"app", "billing"}};
 *   kms_client_result dk;
 *   if (kms_client_generate_data_key(c, "demo", KMS_CLIENT_AES_256, ctx, 1, 0, &dk, &err) == 0) {
 *       ... dk.plaintext (32 bytes), dk.blob ...
 *       kms_client_result_free(&dk);   (wipes the plaintext)
 *   }
 *   kms_client_close(c);
 *
 * Every call returns a kms_client_status: KMS_CLIENT_OK, a gRPC status code
 * from the server (same numbers as grpc_status_code), or a negative local
 * code. On failure *err (when given) holds the code and a message: the
 * server's fixed message, or what went wrong locally. Output parameters are
 * filled only on success.
 *
 * A kms_client may be used from several threads at once; each call blocks
 * until its reply or its deadline. Plaintext outputs live in locked memory
 * that is not dumped and is wiped by kms_client_result_free. */
#ifndef KMS_CLIENT_H
#define KMS_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define KMS_CLIENT_API __attribute__((visibility("default")))
#define KMS_CLIENT_MUST_CHECK __attribute__((warn_unused_result))
#else
#define KMS_CLIENT_API
#define KMS_CLIENT_MUST_CHECK
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kms_client_status {
    KMS_CLIENT_OK = 0,
    /* gRPC status codes returned by the server (or by the channel). */
    KMS_CLIENT_CANCELLED = 1,
    KMS_CLIENT_UNKNOWN = 2,
    KMS_CLIENT_INVALID_ARGUMENT = 3, /* malformed blob, wrong context, tampered data */
    KMS_CLIENT_DEADLINE_EXCEEDED = 4,
    KMS_CLIENT_NOT_FOUND = 5, /* unknown key or key version */
    KMS_CLIENT_ALREADY_EXISTS = 6,
    KMS_CLIENT_PERMISSION_DENIED = 7, /* identity not in the key's policy */
    KMS_CLIENT_RESOURCE_EXHAUSTED = 8,
    KMS_CLIENT_FAILED_PRECONDITION = 9, /* disabled version, pending deletion */
    KMS_CLIENT_ABORTED = 10,
    KMS_CLIENT_OUT_OF_RANGE = 11,
    KMS_CLIENT_UNIMPLEMENTED = 12,
    KMS_CLIENT_INTERNAL = 13,
    KMS_CLIENT_UNAVAILABLE = 14, /* server, HSM or store unreachable; TLS refused */
    KMS_CLIENT_DATA_LOSS = 15,
    KMS_CLIENT_UNAUTHENTICATED = 16,
    /* Local failures, before or after the call. */
    KMS_CLIENT_EARG = -1,   /* bad argument (NULL, empty name, oversized input) */
    KMS_CLIENT_EFILE = -2,  /* a certificate or key file cannot be read */
    KMS_CLIENT_ENOMEM = -3, /* out of memory, or memory could not be locked */
    KMS_CLIENT_EREPLY = -4, /* the server's reply could not be decoded */
    /* Archives (kms_client_archive_*, docs/archive-format.md). */
    KMS_CLIENT_ENOTARCHIVE = -5, /* the input does not start with an archive header */
    KMS_CLIENT_EVERSION = -6,    /* an archive format version this library does not read */
    KMS_CLIENT_ECONTEXT = -7,    /* the context given differs from the archive's */
    KMS_CLIENT_ETRUNCATED = -8,  /* the archive ends early (in the header or at a segment end) */
    KMS_CLIENT_ECORRUPT = -9,    /* a header or segment does not authenticate, or trailing bytes */
    KMS_CLIENT_EIO = -10         /* reading the input or writing the output failed */
} kms_client_status;

#define KMS_CLIENT_MESSAGE_MAX 256

typedef struct kms_client_error {
    int code;                             /* a kms_client_status */
    char message[KMS_CLIENT_MESSAGE_MAX]; /* never holds key material */
} kms_client_error;

typedef struct kms_client_options {
    const char *target;    /* "host:port" */
    const char *ca_file;   /* PEM: CA that signed the server certificate */
    const char *cert_file; /* PEM: this client's certificate (its identity) */
    const char *key_file;  /* PEM: its private key */
    const char
        *server_name; /* name to verify in the server certificate; NULL: the host of target */
    int timeout_ms;   /* per call; 0: 10000 */
} kms_client_options;

typedef struct kms_client kms_client;

/* One key=value pair of an encryption context. Order does not matter. */
typedef struct kms_client_context_entry {
    const char *key;
    const char *value;
} kms_client_context_entry;

typedef enum kms_client_key_spec {
    KMS_CLIENT_AES_256 = 1,
    KMS_CLIENT_AES_128 = 2
} kms_client_key_spec;

/* The result of a data-plane call. Fields a call does not produce are
 * NULL / 0. plaintext is locked memory, wiped by kms_client_result_free. */
typedef struct kms_client_result {
    uint8_t *plaintext;
    size_t plaintext_len;
    uint8_t *blob; /* ciphertext blob */
    size_t blob_len;
    char *key_name;
    uint32_t key_version;
    char *source_key_name; /* ReEncrypt only */
    uint32_t source_key_version;
} kms_client_result;

typedef enum kms_client_version_state {
    KMS_CLIENT_VERSION_UNSPECIFIED = 0,
    KMS_CLIENT_VERSION_ENABLED = 1,
    KMS_CLIENT_VERSION_DISABLED = 2,
    KMS_CLIENT_VERSION_PENDING_DELETION = 3,
    KMS_CLIENT_VERSION_DESTROYED = 4
} kms_client_version_state;

typedef struct kms_client_key_version {
    uint32_t version;
    int state;          /* kms_client_version_state */
    int64_t created_at; /* unix seconds */
    uint64_t usage_count;
} kms_client_key_version;

typedef struct kms_client_strings {
    char **items;
    size_t n;
} kms_client_strings;

typedef struct kms_client_key {
    char *name;
    uint8_t key_id[16];
    char *backend;      /* "pkcs11" | "tpm2" */
    char *backend_mode; /* "" or, for TPM, "sealed" | "resident" */
    uint32_t primary_version;
    uint32_t min_decryption_version;
    kms_client_key_version *versions;
    size_t n_versions;
    kms_client_strings encrypt, decrypt, reencrypt; /* the key's policy */
    uint32_t rotation_period_days;
    int64_t created_at;
    int64_t deletion_at; /* 0 unless deletion is scheduled */
    /* 1 when the server sent the policy; 0 when it withheld it (it shows
     * the identity lists to officers only), and then encrypt, decrypt and
     * reencrypt are empty without meaning "nobody". */
    int policy_shown;
} kms_client_key;

typedef struct kms_client_key_list {
    kms_client_key *keys;
    size_t n;
} kms_client_key_list;

/* Connects lazily: a server that is down shows up as KMS_CLIENT_UNAVAILABLE
 * on the first call, not here. Fails here only on bad options or unreadable
 * files. */
KMS_CLIENT_API int kms_client_open(const kms_client_options *opts, kms_client **out,
                                   kms_client_error *err) KMS_CLIENT_MUST_CHECK;
/* Waits for no call; close only after every call has returned. NULL-safe.
 * When the library started gRPC (the application does not use gRPC itself),
 * closing the last client also waits, at most 5 s, until gRPC has finished
 * cleaning up, so the program may exit right after. */
KMS_CLIENT_API void kms_client_close(kms_client *c);

/* A fresh data key under key_name's primary version. without_plaintext: only
 * the blob comes back (result->plaintext NULL). */
KMS_CLIENT_API int kms_client_generate_data_key(kms_client *c, const char *key_name,
                                                kms_client_key_spec spec,
                                                const kms_client_context_entry *ctx, size_t n_ctx,
                                                int without_plaintext, kms_client_result *result,
                                                kms_client_error *err) KMS_CLIENT_MUST_CHECK;

/* Wraps 1..4096 bytes under key_name's primary version: result->blob. */
KMS_CLIENT_API int kms_client_encrypt(kms_client *c, const char *key_name, const uint8_t *plaintext,
                                      size_t len, const kms_client_context_entry *ctx, size_t n_ctx,
                                      kms_client_result *result,
                                      kms_client_error *err) KMS_CLIENT_MUST_CHECK;

/* Unwraps a blob (the key is read from it): result->plaintext. */
KMS_CLIENT_API int kms_client_decrypt(kms_client *c, const uint8_t *blob, size_t blob_len,
                                      const kms_client_context_entry *ctx, size_t n_ctx,
                                      kms_client_result *result,
                                      kms_client_error *err) KMS_CLIENT_MUST_CHECK;

/* Moves a blob under dest_key's primary version without the plaintext
 * leaving the server: result->blob and both key names and versions. */
KMS_CLIENT_API int kms_client_reencrypt(kms_client *c, const uint8_t *blob, size_t blob_len,
                                        const kms_client_context_entry *src_ctx, size_t n_src_ctx,
                                        const char *dest_key,
                                        const kms_client_context_entry *dest_ctx, size_t n_dest_ctx,
                                        kms_client_result *result,
                                        kms_client_error *err) KMS_CLIENT_MUST_CHECK;

/* Wipes the plaintext and frees everything in *r; leaves it zeroed. */
KMS_CLIENT_API void kms_client_result_free(kms_client_result *r);

KMS_CLIENT_API int kms_client_describe_key(kms_client *c, const char *key_name, kms_client_key *key,
                                           kms_client_error *err) KMS_CLIENT_MUST_CHECK;
KMS_CLIENT_API void kms_client_key_free(kms_client_key *key);

KMS_CLIENT_API int kms_client_list_keys(kms_client *c, kms_client_key_list *list,
                                        kms_client_error *err) KMS_CLIENT_MUST_CHECK;
KMS_CLIENT_API void kms_client_key_list_free(kms_client_key_list *list);

/* grpc.health.v1.Health/Check for service ("" = the whole server).
 * KMS_CLIENT_OK when it answers SERVING; KMS_CLIENT_UNAVAILABLE when it
 * answers anything else or cannot be reached. */
KMS_CLIENT_API int kms_client_health(kms_client *c, const char *service,
                                     kms_client_error *err) KMS_CLIENT_MUST_CHECK;

/* ---- Audit: for auditors (docs/audit.md) ---- */

/* One audit record as kmsd read it from its log. line is the record's
 * exact JSON line (NUL-terminated, without its final LF): what the files
 * hold, byte for byte. hash = SHA-256(prev_hash || line || LF). */
typedef struct kms_client_audit_record {
    uint64_t seq;
    int64_t time_us; /* unix microseconds, UTC */
    char *instance, *type, *identity, *peer, *method, *key_name, *error, *detail;
    uint32_t key_version;
    int32_t status; /* gRPC status code of the call recorded */
    uint64_t duration_us;
    uint8_t prev_hash[32], hash[32];
    char *line;
} kms_client_audit_record;

/* Audit.ReadAuditLog: records from_seq, from_seq + 1, ... (0: from the
 * oldest kept), at most limit (0: the server's default, 100; at most
 * 1000), possibly fewer (the end of the durable log, or a reply size
 * bound): ask again from the last seq + 1. Only auditors may call it.
 * *out is an array of *n records (NULL when 0), freed with
 * kms_client_audit_records_free. last_seq (may be NULL) receives the seq
 * of the log's last durable record when kmsd read it (0: none). */
KMS_CLIENT_API int kms_client_read_audit_log(kms_client *c, uint64_t from_seq, uint32_t limit,
                                             kms_client_audit_record **out, size_t *n,
                                             uint64_t *last_seq,
                                             kms_client_error *err) KMS_CLIENT_MUST_CHECK;
KMS_CLIENT_API void kms_client_audit_records_free(kms_client_audit_record *r, size_t n);

/* ---- Quorum: for security officers (docs/officers.md, docs/approvals.md) ---- */

typedef enum kms_client_action_state {
    KMS_CLIENT_ACTION_PENDING = 1,
    KMS_CLIENT_ACTION_EXECUTED = 2,
    KMS_CLIENT_ACTION_CANCELLED = 3,
    KMS_CLIENT_ACTION_EXPIRED = 4,
    KMS_CLIENT_ACTION_FAILED = 5
} kms_client_action_state;

typedef struct kms_client_approval {
    char *officer_id;
    int64_t approved_at;
} kms_client_approval;

/* An action as the server holds it. action_bytes is the canonical
 * kms.v1.ActionBody the digest covers: decode it yourself to see what you
 * approve. */
typedef struct kms_client_action {
    uint8_t id[16];
    uint8_t digest[32];
    uint8_t instance_id[16];
    int state; /* kms_client_action_state */
    char *proposer;
    kms_client_approval *approvals;
    size_t n_approvals;
    uint32_t threshold;
    int64_t created_at, expires_at;
    char *result;
    uint8_t *action_bytes;
    size_t action_bytes_len;
} kms_client_action;

/* action_body: a packed kms.v1.ActionBody. */
KMS_CLIENT_API int kms_client_propose(kms_client *c, const uint8_t *action_body, size_t len,
                                      kms_client_action *out,
                                      kms_client_error *err) KMS_CLIENT_MUST_CHECK;
KMS_CLIENT_API int kms_client_approve(kms_client *c, const uint8_t id[16], const uint8_t *sig,
                                      size_t sig_len, kms_client_action *out,
                                      kms_client_error *err) KMS_CLIENT_MUST_CHECK;
KMS_CLIENT_API int kms_client_get_action(kms_client *c, const uint8_t id[16],
                                         kms_client_action *out,
                                         kms_client_error *err) KMS_CLIENT_MUST_CHECK;
KMS_CLIENT_API int kms_client_cancel_action(kms_client *c, const uint8_t id[16],
                                            kms_client_action *out,
                                            kms_client_error *err) KMS_CLIENT_MUST_CHECK;
/* Newest first; *out is an array of *n actions, freed with
 * kms_client_action_list_free. */
KMS_CLIENT_API int kms_client_list_actions(kms_client *c, int pending_only, kms_client_action **out,
                                           size_t *n, kms_client_error *err) KMS_CLIENT_MUST_CHECK;
KMS_CLIENT_API void kms_client_action_free(kms_client_action *a);
KMS_CLIENT_API void kms_client_action_list_free(kms_client_action *a, size_t n);

/* Recomputes the digest from action_bytes, instance_id, id and expires_at
 * (docs/approvals.md): KMS_CLIENT_OK if it equals a->digest, else
 * KMS_CLIENT_EREPLY. Never sign a digest that was not recomputed. */
KMS_CLIENT_API int
kms_client_action_verify_digest(const kms_client_action *a) KMS_CLIENT_MUST_CHECK;

/* Signs a 32-byte digest with the officer's private key: a PEM file (ECDSA
 * P-256: ECDSA-SHA256, DER; Ed25519: 64 bytes), or a "pkcs11:" URI through
 * OpenSSL's pkcs11 engine (libp11; module from $KMS_PKCS11_MODULE, else
 * p11-kit's proxy). *sig_len: capacity in, length out (256 is enough). */
KMS_CLIENT_API int kms_client_sign_digest(const char *key, const uint8_t digest[32], uint8_t *sig,
                                          size_t *sig_len,
                                          kms_client_error *err) KMS_CLIENT_MUST_CHECK;

/* Writes a new signing key pair: type "p256" or "ed25519"; the private key
 * (mode 0600, never overwriting a file) and its public key (PEM). */
KMS_CLIENT_API int kms_client_keygen(const char *type, const char *private_out,
                                     const char *public_out,
                                     kms_client_error *err) KMS_CLIENT_MUST_CHECK;

/* ---- Archives: streaming envelope encryption of any size (docs/archive-format.md) ----
 *
 * One data key per archive from GenerateDataKey; its wrapped blob sits in
 * the archive's header, so rotating the master key rewraps the header only.
 * Output goes to a sink in order: the header and sealed segments when
 * encrypting; when decrypting, each segment's plaintext only after that
 * segment authenticated. A decryption that fails part way has already
 * released the segments before the failure: write to a temporary file and
 * keep it only when kms_client_archive_final succeeds (as kmsctl does).
 *
 *   kms_client_archive *a;
 *   if (kms_client_archive_encrypt_init(c, "backups", ctx, 1, NULL, write_cb, &fd, &a, &err) == 0)
 * { while ((n = read(in, buf, sizeof(buf))) > 0) if (kms_client_archive_update(a, buf, n, &err) !=
 * 0) break; if (n == 0) r = kms_client_archive_final(a, &err); kms_client_archive_free(a);
 *   }
 */

/* Receives output bytes in order; returns 0, or non-zero to stop (the call
 * feeding it then fails with KMS_CLIENT_EIO). */
typedef int (*kms_client_archive_sink)(void *arg, const uint8_t *data, size_t len);

typedef struct kms_client_archive_options {
    uint32_t segment_size; /* encrypt: plaintext bytes per segment, 4096 .. 8 MiB; 0: 1 MiB */
    unsigned threads;      /* worker threads; 0: one per online CPU (at most 64) */
    /* Called from the feeding thread as input is consumed (cumulative bytes). */
    void (*progress)(void *arg, uint64_t bytes_in);
    void *progress_arg;
} kms_client_archive_options;

typedef struct kms_client_archive kms_client_archive;

/* Starts an archive under key_name's primary version: a fresh data key
 * (GenerateDataKey, AES-256) bound to ctx. The data key and the derived
 * keys stay in locked memory and are wiped by kms_client_archive_free. */
KMS_CLIENT_API int kms_client_archive_encrypt_init(
    kms_client *c, const char *key_name, const kms_client_context_entry *ctx, size_t n_ctx,
    const kms_client_archive_options *opts, kms_client_archive_sink sink, void *sink_arg,
    kms_client_archive **out, kms_client_error *err) KMS_CLIENT_MUST_CHECK;

/* Starts reading an archive: the key is found from its header (Decrypt),
 * and ctx must equal the archive's context (else KMS_CLIENT_ECONTEXT). */
KMS_CLIENT_API int kms_client_archive_decrypt_init(
    kms_client *c, const kms_client_context_entry *ctx, size_t n_ctx,
    const kms_client_archive_options *opts, kms_client_archive_sink sink, void *sink_arg,
    kms_client_archive **out, kms_client_error *err) KMS_CLIENT_MUST_CHECK;

/* Feeds len bytes. Errors: ENOTARCHIVE, EVERSION, ECONTEXT, ECORRUPT, EIO,
 * ENOMEM, or the Decrypt call's status. After a failure every call fails. */
KMS_CLIENT_API int kms_client_archive_update(kms_client_archive *a, const uint8_t *data, size_t len,
                                             kms_client_error *err) KMS_CLIENT_MUST_CHECK;

/* Ends the input. Decrypting, KMS_CLIENT_OK means every segment up to the
 * one flagged last authenticated and nothing follows it; ETRUNCATED when
 * the input stops in the header or at a segment boundary before the last
 * segment; ECORRUPT for anything else that does not authenticate. */
KMS_CLIENT_API int kms_client_archive_final(kms_client_archive *a,
                                            kms_client_error *err) KMS_CLIENT_MUST_CHECK;

/* Stops the threads and wipes keys and buffers. NULL-safe. */
KMS_CLIENT_API void kms_client_archive_free(kms_client_archive *a);

/* The whole stream between two file descriptors (pipes included): read to
 * the end of in_fd, write every output byte to out_fd. */
KMS_CLIENT_API int kms_client_archive_encrypt_fd(kms_client *c, const char *key_name,
                                                 const kms_client_context_entry *ctx, size_t n_ctx,
                                                 const kms_client_archive_options *opts, int in_fd,
                                                 int out_fd,
                                                 kms_client_error *err) KMS_CLIENT_MUST_CHECK;
KMS_CLIENT_API int kms_client_archive_decrypt_fd(kms_client *c, const kms_client_context_entry *ctx,
                                                 size_t n_ctx,
                                                 const kms_client_archive_options *opts, int in_fd,
                                                 int out_fd,
                                                 kms_client_error *err) KMS_CLIENT_MUST_CHECK;

/* What a header says, without decrypting anything. */
typedef struct kms_client_archive_info {
    uint32_t version;
    uint32_t header_len; /* the first segment starts here */
    uint32_t segment_size;
    char *key_name;     /* the name recorded at encryption or rewrap (a label, not authenticated) */
    uint8_t key_id[16]; /* from the wrapped key: the master key's id */
    uint32_t key_version; /* and its version */
    kms_client_context_entry *context;
    size_t n_context;
} kms_client_archive_info;

/* Total header length from the first 9 bytes of an archive (len may be
 * more): lets a caller read exactly the header. */
KMS_CLIENT_API int kms_client_archive_header_len(const uint8_t *data, size_t len,
                                                 size_t *header_len,
                                                 kms_client_error *err) KMS_CLIENT_MUST_CHECK;

/* Parses a header (data holds at least the header) into *info. */
KMS_CLIENT_API int kms_client_archive_inspect(const uint8_t *data, size_t len,
                                              kms_client_archive_info *info,
                                              kms_client_error *err) KMS_CLIENT_MUST_CHECK;
KMS_CLIENT_API void kms_client_archive_info_free(kms_client_archive_info *info);

/* Rewraps one archive file in place: its wrapped data key goes through
 * ReEncrypt to dest_key's primary version (NULL: the key named in the
 * header) under the same context; the segments are not read or changed.
 * Atomic: a temporary file beside it (new header, then the data copied
 * inside the kernel with copy_file_range: never read into this process nor
 * decrypted), fsync, rename, fsync of the directory.
 * *info (when given) describes the new header. */
KMS_CLIENT_API int kms_client_archive_rewrap_file(kms_client *c, const char *path,
                                                  const char *dest_key,
                                                  kms_client_archive_info *info,
                                                  kms_client_error *err) KMS_CLIENT_MUST_CHECK;

/* "INVALID_ARGUMENT", "EFILE", ... for a kms_client_status. */
KMS_CLIENT_API const char *kms_client_status_name(int status);

#ifdef __cplusplus
}
#endif

#endif
