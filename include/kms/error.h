/* kms error codes: one convention for the whole tree.
 *
 * Every fallible function returns int: 0 (KMS_OK) on success or a negative
 * KMS_E* code. Each code maps to exactly one gRPC status in one table
 * (kms_error_grpc_status) and to a fixed client-facing message
 * (kms_strerror). Details that help an operator (which attribute failed a
 * check, which CK_RV came back) go to kms_error_detail(), a thread-local
 * string for the server log; it never holds key material. A detail set
 * with kms_error_set_public is also sent to the caller. */
#ifndef KMS_ERROR_H
#define KMS_ERROR_H

enum kms_error {
    KMS_OK = 0,
    KMS_EINVAL = -1,     /* bad argument or malformed input */
    KMS_EBADBLOB = -2,   /* ciphertext blob malformed or truncated */
    KMS_EAUTH = -3,      /* authentication failed: wrong context, tampered blob, wrong key */
    KMS_ENOTFOUND = -4,  /* no such key or key version */
    KMS_EEXISTS = -5,    /* already exists */
    KMS_EDENIED = -6,    /* caller not allowed */
    KMS_EPRECOND = -7,   /* object in the wrong state (disabled version, pending deletion) */
    KMS_EKEYCHECK = -8,  /* backend key failed its safety check (extractable, not sensitive, ...) */
    KMS_EEXHAUSTED = -9, /* a limit was reached (nonce budget, message size) */
    KMS_EUNAVAIL = -10,  /* backend or store unavailable (may succeed on retry) */
    KMS_ENOMEM = -11,    /* out of memory, or memory could not be locked */
    KMS_ESTORE = -12,    /* the store failed (I/O, corruption) */
    KMS_EINTERNAL = -13, /* a bug or an unexpected backend answer */
    KMS_ETOOBIG = -14,   /* input larger than the documented limit */
    KMS_EUNSUPPORTED = -15 /* algorithm, format or operation not supported */
};

#if defined(__GNUC__)
#define KMS_MUST_CHECK __attribute__((warn_unused_result))
#define KMS_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define KMS_MUST_CHECK
#define KMS_PRINTF(f, a)
#endif

/* Fixed, client-safe message for a code ("unknown error" for anything else). */
const char *kms_strerror(int err);

/* Symbolic name of a code ("KMS_EAUTH"), for logs and tests. */
const char *kms_error_name(int err);

/* gRPC status code (numeric, as in grpc/status.h) for a kms error code.
 * The one table lives in kms/error.c; unknown codes map to INTERNAL. */
int kms_error_grpc_status(int err) KMS_MUST_CHECK;

/* Records a detail for the current thread and returns err, so a failure can
 * be reported in one line: return kms_error_set(KMS_EKEYCHECK, "...", ...).
 * The detail is for the operator's log only; never pass key bytes. */
int kms_error_set(int err, const char *fmt, ...) KMS_PRINTF(2, 3) KMS_MUST_CHECK;

/* Like kms_error_set, and the detail is also fit for the caller: kmsd sends
 * it as the gRPC status message in place of kms_strerror(err). Only for
 * what the caller may know once authorized for the object concerned: a
 * key's or an action's state, the PCRs a sealed key is bound to, what is
 * wrong with the caller's own input. Never for denials (which stay
 * uninformative), store or device internals, or anything secret. */
int kms_error_set_public(int err, const char *fmt, ...) KMS_PRINTF(2, 3) KMS_MUST_CHECK;

/* The current thread's last detail ("" if none). Valid until the next
 * kms_error_set, kms_error_set_public or kms_error_clear on this thread. */
const char *kms_error_detail(void);

/* The last detail if it was set with kms_error_set_public for this very
 * code err, else "". A later kms_error_set makes it private again (a layer
 * that rewords a failure decides afresh what the caller sees), and a
 * failure returned under another code never carries it. */
const char *kms_error_public(int err);
void kms_error_clear(void);

/* Propagate failure: if ((r = f()) != 0) return r; */
#define KMS_GUARD(expr)                                                                            \
    do {                                                                                           \
        int kms_guard_rc_ = (expr);                                                                \
        if (kms_guard_rc_ != 0)                                                                    \
            return kms_guard_rc_;                                                                  \
    } while (0)

#define KMS_ENSURE(cond, err)                                                                      \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return (err);                                                                          \
    } while (0)

#endif
