/* kmsctl: the command-line client. Shared declarations of its files:
 * kmsctl.c (main, options, exit codes), kmsctl_conf.c (the connection file),
 * kmsctl_io.c (files, base64, JSON), kmsctl_data.c and kmsctl_keys.c (the
 * commands). */
#ifndef KMSCTL_H
#define KMSCTL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kms/error.h"
#include "kms/client.h"

/* Exit codes, documented in docs/kmsctl.md. */
enum {
    KMSCTL_EXIT_OK = 0,
    KMSCTL_EXIT_FAILURE = 1,      /* anything not listed below */
    KMSCTL_EXIT_USAGE = 2,        /* bad command line or connection file */
    KMSCTL_EXIT_DENIED = 3,       /* PERMISSION_DENIED, UNAUTHENTICATED */
    KMSCTL_EXIT_NOT_FOUND = 4,    /* NOT_FOUND */
    KMSCTL_EXIT_UNAVAILABLE = 5,  /* UNAVAILABLE, DEADLINE_EXCEEDED */
    KMSCTL_EXIT_INVALID = 6,      /* INVALID_ARGUMENT: wrong context, tampered or bad input */
    KMSCTL_EXIT_PRECONDITION = 7, /* FAILED_PRECONDITION (disabled version, pending deletion,
                                    expired action), ALREADY_EXISTS (approved already) */
    KMSCTL_EXIT_UNVERIFIED = 13   /* audit verify: chain intact, but records no signed
                                    checkpoint covers */
};

/* Connection settings: from the file, then command-line overrides. */
typedef struct kmsctl_conf {
    char *server, *ca, *cert, *key, *server_name, *signing_key;
    long timeout_ms;
    int has_instance_id; /* instance_id: approve signs only for this kmsd */
    uint8_t instance_id[16];
} kmsctl_conf;

/* Reads a YAML mapping of scalars (see docs/kmsctl.md); relative paths are
 * taken relative to the file's directory. 0, or -1 with a message on
 * stderr. */
int kmsctl_conf_load(kmsctl_conf *c, const char *path) KMS_MUST_CHECK;
/* Sets one setting by name from a command-line value. */
int kmsctl_conf_set(kmsctl_conf *c, const char *name, const char *value) KMS_MUST_CHECK;
void kmsctl_conf_free(kmsctl_conf *c);

typedef struct kmsctl {
    kmsctl_conf conf;
    int json;
    const char *command;
    kms_client *client; /* opened on demand by kmsctl_client */
} kmsctl;

/* Opens the client once; prints the error and returns the exit code on failure. */
int kmsctl_client(kmsctl *k, kms_client **out) KMS_MUST_CHECK;
/* Prints a failed call (stderr; with --json also {"error":...} on stdout)
 * and returns its exit code. */
int kmsctl_fail(kmsctl *k, const kms_client_error *err) KMS_MUST_CHECK;
/* Prints a usage error and returns KMSCTL_EXIT_USAGE. */
int kmsctl_usage_error(kmsctl *k, const char *fmt, ...)
    __attribute__((format(printf, 2, 3))) KMS_MUST_CHECK;

/* Encryption context pairs from repeated --context KEY=VALUE. */
typedef struct kmsctl_context {
    kms_client_context_entry *v;
    size_t n;
    char **owned;
} kmsctl_context;
int kmsctl_context_add(kmsctl_context *c, const char *spec) KMS_MUST_CHECK;
void kmsctl_context_free(kmsctl_context *c);

/* Input bytes: a file ("-" is stdin) or a base64 string, at most max bytes.
 * secret: kept in a kms_secret (locked, not dumped), wiped on free. */
typedef struct kmsctl_bytes {
    uint8_t *data;
    size_t len;
    size_t cap;                /* bytes wiped on free */
    struct kms_secret *locked; /* secret input: the memory data points into */
} kmsctl_bytes;
int kmsctl_read_input(kmsctl *k, const char *file, const char *b64, size_t max, int secret,
                      kmsctl_bytes *out) KMS_MUST_CHECK;
void kmsctl_bytes_free(kmsctl_bytes *b);

/* Writes raw bytes to a file (mode 0600 for secrets, else 0644; "-" is
 * stdout, refused when stdout is a terminal). 0 or an exit code. */
int kmsctl_write_output(kmsctl *k, const char *file, const uint8_t *data, size_t len,
                        int secret) KMS_MUST_CHECK;

/* Base64 of data (malloc'ed, wiped by kmsctl_b64_free); NULL on no memory. */
char *kmsctl_b64(const uint8_t *data, size_t len);
void kmsctl_b64_free(char *s);
/* Strict base64 decode into out (cap bytes); -1 on bad input. */
long kmsctl_unb64(const char *s, uint8_t *out, size_t cap);

/* Output, either "name: value" lines or one JSON object. */
typedef struct kmsctl_out {
    FILE *f;
    int json;
    int first;
    int depth;
} kmsctl_out;
void kmsctl_out_begin(kmsctl_out *o, int json);
/* The same, printing to f. */
void kmsctl_out_begin_file(kmsctl_out *o, FILE *f, int json);
void kmsctl_out_str(kmsctl_out *o, const char *name, const char *value);
void kmsctl_out_num(kmsctl_out *o, const char *name, long long value);
void kmsctl_out_end(kmsctl_out *o);
/* JSON string with escapes. */
void kmsctl_json_string(FILE *f, const char *s);

int kmsctl_cmd_generate_data_key(kmsctl *k, int argc, char **argv) KMS_MUST_CHECK;
int kmsctl_cmd_encrypt(kmsctl *k, int argc, char **argv) KMS_MUST_CHECK;
int kmsctl_cmd_decrypt(kmsctl *k, int argc, char **argv) KMS_MUST_CHECK;
int kmsctl_cmd_reencrypt(kmsctl *k, int argc, char **argv) KMS_MUST_CHECK;
int kmsctl_cmd_describe_key(kmsctl *k, int argc, char **argv) KMS_MUST_CHECK;
int kmsctl_cmd_list_keys(kmsctl *k, int argc, char **argv) KMS_MUST_CHECK;
int kmsctl_cmd_health(kmsctl *k, int argc, char **argv) KMS_MUST_CHECK;
/* Archives (kmsctl_archive.c); encrypt and decrypt without --in/--in-b64. */
int kmsctl_cmd_archive_encrypt(kmsctl *k, int argc, char **argv) KMS_MUST_CHECK;
int kmsctl_cmd_archive_decrypt(kmsctl *k, int argc, char **argv) KMS_MUST_CHECK;
int kmsctl_cmd_archive_rewrap(kmsctl *k, int argc, char **argv) KMS_MUST_CHECK;
int kmsctl_cmd_archive_inspect(kmsctl *k, int argc, char **argv) KMS_MUST_CHECK;
/* Officers (kmsctl_officer.c). */
int kmsctl_cmd_officer(kmsctl *k, int argc, char **argv) KMS_MUST_CHECK;
int kmsctl_cmd_propose(kmsctl *k, int argc, char **argv) KMS_MUST_CHECK;
int kmsctl_cmd_actions(kmsctl *k, int argc, char **argv) KMS_MUST_CHECK;
int kmsctl_cmd_show_action(kmsctl *k, int argc, char **argv) KMS_MUST_CHECK;
int kmsctl_cmd_approve(kmsctl *k, int argc, char **argv) KMS_MUST_CHECK;
int kmsctl_cmd_cancel(kmsctl *k, int argc, char **argv) KMS_MUST_CHECK;
/* kmsctl_audit.c: offline audit log tools */
int kmsctl_cmd_audit(kmsctl *k, int argc, char **argv) KMS_MUST_CHECK;

#endif
