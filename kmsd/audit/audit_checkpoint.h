/* Signed checkpoints of the audit log (docs/audit.md, "Signed
 * checkpoints").
 *
 * A checkpoint is a record like any other in the chain, of type
 * "checkpoint", whose detail is "log=<log id> sig=<DER signature, hex>".
 * Its own seq, prev (the chain hash of every record before it), time and
 * instance are what is signed, as this one line of text (the message):
 *
 *   kms-audit-checkpoint-v1 log=<log id> seq=<seq> chain=<prev> time=<time>
 *   instance=<instance>\n
 *
 * (one line, single spaces, the fields exactly as the record writes them).
 * The signature is ECDSA P-256 over SHA-256(message), made by the audit
 * key on the backend (its private half never leaves it) and written as
 * DER (what `openssl dgst -sha256 -verify` reads). The log id is the
 * first 16 bytes of SHA-256 of the public point (0x04 ‖ X ‖ Y), in hex: it
 * names the key a checkpoint claims, so a verifier given another key says
 * so instead of "bad signature".
 *
 * A checkpoint vouches for every record up to it: the chain hash it signs
 * fixes them all. Its other fields are fixed (empty strings, zeros) and
 * the verifier refuses any other value. */
#ifndef KMS_AUDIT_CHECKPOINT_H
#define KMS_AUDIT_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "kms/backend.h"
#include "kms/error.h"
#include "audit_record.h"

#define KMS_AUDIT_CHECKPOINT_TYPE "checkpoint"
/* The log id: 32 lowercase hex digits. */
#define KMS_AUDIT_LOG_ID_HEX 32
/* Longest checkpoint line (the writer reserves this much in a file). */
#define KMS_AUDIT_CHECKPOINT_LINE_MAX 640
/* Longest DER ECDSA P-256 signature. */
#define KMS_AUDIT_SIG_DER_MAX 72

/* Signs a SHA-256 digest with the audit key: raw r ‖ s into sig. */
typedef int (*kms_audit_sign_fn)(void *ctx, const uint8_t digest[KMS_AUDIT_DIGEST_LEN],
                                 uint8_t sig[KMS_AUDIT_SIG_LEN]);

/* The log id of a public point into out (33 bytes, NUL-terminated). */
int kms_audit_log_id(const uint8_t pub[KMS_AUDIT_PUB_LEN],
                     char out[KMS_AUDIT_LOG_ID_HEX + 1]) KMS_MUST_CHECK;

/* The message a checkpoint record signs, from its seq, prev, time_us and
 * instance and the log id; into out[0..cap), length in *len. */
int kms_audit_checkpoint_message(const kms_audit_rec *rec, const char *log_id, char *out,
                                 size_t cap, size_t *len) KMS_MUST_CHECK;

/* Signs the checkpoint rec (seq, prev, time_us, instance set) with sign and
 * writes its detail ("log=... sig=...") into detail[0..cap). Errors of
 * sign; KMS_EINTERNAL if OpenSSL fails. */
int kms_audit_checkpoint_sign(const kms_audit_rec *rec, const char *log_id, kms_audit_sign_fn sign,
                              void *ctx, char *detail, size_t cap) KMS_MUST_CHECK;

/* Checks a parsed checkpoint record against the public point: its fixed
 * fields, its detail's shape, its log id and its signature. 0 if it
 * verifies; KMS_EAUTH with the reason in kms_error_detail() otherwise. */
int kms_audit_checkpoint_verify(const kms_audit_parsed *p,
                                const uint8_t pub[KMS_AUDIT_PUB_LEN]) KMS_MUST_CHECK;

/* 0 if sig (raw r ‖ s) is a valid signature of digest under pub, else
 * KMS_EAUTH. For the start-up probe: does the backend's private key match
 * the public key it reports? */
int kms_audit_sig_check(const uint8_t pub[KMS_AUDIT_PUB_LEN],
                        const uint8_t digest[KMS_AUDIT_DIGEST_LEN],
                        const uint8_t sig[KMS_AUDIT_SIG_LEN]) KMS_MUST_CHECK;

/* The public point as a PEM "PUBLIC KEY" (SubjectPublicKeyInfo), NUL-
 * terminated, freed with free(). */
int kms_audit_pub_to_pem(const uint8_t pub[KMS_AUDIT_PUB_LEN], char **pem) KMS_MUST_CHECK;

/* The point of a PEM public key; KMS_EINVAL unless it is one EC P-256
 * public key. */
int kms_audit_pub_from_pem(const char *pem, size_t len,
                           uint8_t pub[KMS_AUDIT_PUB_LEN]) KMS_MUST_CHECK;

#endif
