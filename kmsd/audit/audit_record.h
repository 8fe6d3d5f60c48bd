/* One audit record: its JSON line, its strict parser and the hash chain.
 *
 * A record is one line of JSON with every field present, in this fixed
 * order (docs/audit.md specifies it byte for byte):
 *
 *   {"seq":N,"prev":"HEX64","time":"YYYY-MM-DDTHH:MM:SS.uuuuuuZ",
 *    "instance":"HEX16","type":"T","identity":"S","peer":"S","method":"S",
 *    "key":"S","version":N,"action":"S","context_hmac":"S","status":N,
 *    "error":"S","detail":"S","duration_us":N}\n
 *
 * Strings are written byte by byte: printable ASCII (0x20..0x7e) as is,
 * except `"` and `\` which become `\"` and `\\`; every other byte is
 * `\u00xx` (lowercase hex). Numbers are unsigned decimal without leading
 * zeros. There is no whitespace. The parser accepts exactly what the
 * encoder writes, so a parsed record re-encodes to the same bytes.
 *
 * The chain: hash_0 is 32 zero bytes; hash_n = SHA-256(hash_{n-1} || the
 * bytes of line n including its final LF). Each record carries hash_{n-1}
 * as "prev", so a broken link names the record where it breaks.
 *
 * Nothing here allocates: records point at the caller's strings, and the
 * parser copies into the fixed buffers of kms_audit_parsed. No key
 * material ever reaches a record (the context only as an HMAC). */
#ifndef KMS_AUDIT_RECORD_H
#define KMS_AUDIT_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "kms/error.h"

#define KMS_AUDIT_HASH_LEN 32
/* Longest line (LF included) the encoder writes and the parser accepts. */
#define KMS_AUDIT_LINE_MAX 4096
/* Longest string field, decoded. */
#define KMS_AUDIT_FIELD_MAX 512

typedef struct kms_audit_rec {
    uint64_t seq;
    uint8_t prev[KMS_AUDIT_HASH_LEN];
    int64_t time_us;          /* unix microseconds, UTC */
    const char *instance;     /* 16 lowercase hex digits */
    const char *type;         /* "rpc", "start", "stop", ... */
    const char *identity;     /* "" if none */
    const char *peer;         /* "" if none */
    const char *method;       /* "" if none */
    const char *key;          /* key name, "" if none */
    uint32_t version;         /* key version, 0 if none */
    const char *action;       /* quorum action id, "" if none */
    const char *context_hmac; /* hex HMAC-SHA-256 of the canonical context, "" if none */
    uint32_t status;          /* gRPC status code */
    const char *error;        /* kms error name, "" on success */
    const char *detail;       /* event details ("officer=... digest=..."), "" if none */
    uint64_t duration_us;
} kms_audit_rec;

/* Writes the line of rec (LF included) into out[0..cap) and its length to
 * *len. KMS_ETOOBIG if it does not fit (or exceeds KMS_AUDIT_LINE_MAX),
 * KMS_EINVAL for a string longer than KMS_AUDIT_FIELD_MAX or a NULL
 * string. *len is set only on success. */
int kms_audit_rec_encode(const kms_audit_rec *rec, char *out, size_t cap,
                         size_t *len) KMS_MUST_CHECK;

/* A parsed record: the strings decoded into fixed buffers. */
typedef struct kms_audit_parsed {
    kms_audit_rec rec; /* its strings point into the buffers below */
    char instance[KMS_AUDIT_FIELD_MAX + 1], type[KMS_AUDIT_FIELD_MAX + 1],
        identity[KMS_AUDIT_FIELD_MAX + 1], peer[KMS_AUDIT_FIELD_MAX + 1],
        method[KMS_AUDIT_FIELD_MAX + 1], key[KMS_AUDIT_FIELD_MAX + 1],
        action[KMS_AUDIT_FIELD_MAX + 1], context_hmac[KMS_AUDIT_FIELD_MAX + 1],
        error[KMS_AUDIT_FIELD_MAX + 1], detail[KMS_AUDIT_FIELD_MAX + 1], time[40];
} kms_audit_parsed;

/* Parses one line (len bytes, the final LF included) strictly: every
 * field, in order, canonical escapes and numbers, nothing after the LF.
 * KMS_EINVAL for anything else (out is then unspecified). This is the
 * fuzz target's entry point. */
int kms_audit_rec_parse(const char *line, size_t len, kms_audit_parsed *out) KMS_MUST_CHECK;

/* hash_out = SHA-256(prev || line[0..len)). KMS_EINTERNAL if the digest
 * fails. hash_out may alias prev. */
int kms_audit_chain_next(const uint8_t prev[KMS_AUDIT_HASH_LEN], const char *line, size_t len,
                         uint8_t hash_out[KMS_AUDIT_HASH_LEN]) KMS_MUST_CHECK;

/* A record's time as written (without the quotes):
 * "YYYY-MM-DDTHH:MM:SS.uuuuuuZ", always KMS_AUDIT_TIME_TEXT_LEN bytes + NUL.
 * KMS_EINVAL for a time before 1970 or after 9999. */
#define KMS_AUDIT_TIME_TEXT_LEN 27
int kms_audit_time_text(int64_t us, char out[KMS_AUDIT_TIME_TEXT_LEN + 1]) KMS_MUST_CHECK;

/* Lowercase hex of n bytes into out (2n+1 bytes, NUL-terminated). */
void kms_audit_hex(const uint8_t *in, size_t n, char *out);

#endif
