/* The archive engine: streams segments through a bounded pool of threads
 * and hands the output, in order, to a sink. Knows nothing of gRPC: the
 * data key comes from the caller (encrypt) or from an unwrap callback
 * (decrypt), so unit tests and the fuzz target drive it with fixed keys.
 *
 * Memory is bounded: at most n_slots segments are in flight, each with an
 * input and an output buffer (the slot count shrinks for large segments so
 * that the buffers stay within 32 MiB). A decrypted segment reaches the sink
 * only after its tag verified; a failed one is wiped. */
#ifndef KMS_CLIENT_ARCHIVE_STREAM_H
#define KMS_CLIENT_ARCHIVE_STREAM_H

#include "archive_format.h"

typedef struct kms_archive_stream kms_archive_stream;

/* Fetches the data key for a parsed (not yet authenticated) header: 0 and a
 * 32-byte secret in *dk, or a kms_client_status with err filled. */
typedef int (*kms_archive_unwrap_fn)(void *arg, const kms_archive_header *h, kms_secret **dk,
                                     kms_client_error *err);

typedef struct kms_archive_params {
    uint32_t segment_size; /* encrypt: 0 = default */
    unsigned threads;      /* 0 = online CPUs */
    kms_client_archive_sink sink;
    void *sink_arg;
    void (*progress)(void *arg, uint64_t bytes_in);
    void *progress_arg;
} kms_archive_params;

/* Encryption with a given data key, wrapped blob and canonical context.
 * salt and prefix: NULL for random ones (fixed values are for known-answer
 * tests only). Takes no ownership of dk. */
int kms_archive_stream_encrypt(const kms_archive_params *p, const kms_secret *dk,
                               const char *key_name, const uint8_t *blob, size_t blob_len,
                               const uint8_t *context, size_t context_len, const uint8_t *salt,
                               const uint8_t *prefix, kms_archive_stream **out,
                               kms_client_error *err);

/* Decryption: the header is read from the stream; its context must equal
 * context (canonical encoding) or the stream fails with ECONTEXT before
 * unwrap is called. */
int kms_archive_stream_decrypt(const kms_archive_params *p, const uint8_t *context,
                               size_t context_len, kms_archive_unwrap_fn unwrap, void *unwrap_arg,
                               kms_archive_stream **out, kms_client_error *err);

/* Feeds bytes; output reaches the sink as segments complete. After a
 * failure every further call returns the same code. */
int kms_archive_stream_update(kms_archive_stream *s, const uint8_t *in, size_t len,
                              kms_client_error *err);
/* Ends the input: seals or opens the last segment and drains the pool. */
int kms_archive_stream_final(kms_archive_stream *s, kms_client_error *err);
/* Stops the threads, wipes keys and buffers. NULL-safe. */
void kms_archive_stream_free(kms_archive_stream *s);

/* Fills err like the rest of the library; returns code. */
int kms_archive_fail(kms_client_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
