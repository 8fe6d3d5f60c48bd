/* Bounded bytes: the one reader and writer every wire and disk encoding
 * goes through, so no encoder or parser counts offsets by hand.
 *
 * A writer appends to a caller buffer of fixed capacity; a reader consumes
 * a caller buffer of fixed length. Neither allocates or copies key material
 * anywhere but where the caller points it. Every put/get either does all of
 * its work or none: on failure the position is unchanged and the out
 * parameters are untouched. Integers are big-endian (network order).
 *
 * Errors: a writer without room answers KMS_ETOOBIG; a reader without
 * enough bytes (or with bytes left where the end was expected) answers
 * KMS_EINVAL. Neither records a detail (kms_error_set): the caller knows
 * what it was encoding or parsing and reports that, under its own code
 * (KMS_EBADBLOB for a ciphertext blob, for example). */
#ifndef KMS_BASE_BUF_H
#define KMS_BASE_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "kms/error.h"

typedef struct kms_buf_writer {
    uint8_t *data; /* the caller's buffer */
    size_t cap;    /* its size */
    size_t len;    /* bytes written so far */
} kms_buf_writer;

typedef struct kms_buf_reader {
    const uint8_t *data; /* the caller's bytes */
    size_t len;          /* how many */
    size_t off;          /* bytes consumed so far */
} kms_buf_reader;

/* ---- writer ------------------------------------------------------------------------- */

/* Starts an empty writer over data[0..cap). data may be NULL only if cap
 * is 0 (every put then fails). */
void kms_buf_writer_init(kms_buf_writer *w, uint8_t *data, size_t cap);

/* Appends one byte. KMS_ETOOBIG if it does not fit. */
int kms_buf_put_u8(kms_buf_writer *w, uint8_t v) KMS_MUST_CHECK;

/* Appends v as 2, 4 or 8 bytes, big-endian. KMS_ETOOBIG if it does not fit. */
int kms_buf_put_u16be(kms_buf_writer *w, uint16_t v) KMS_MUST_CHECK;
int kms_buf_put_u32be(kms_buf_writer *w, uint32_t v) KMS_MUST_CHECK;
int kms_buf_put_u64be(kms_buf_writer *w, uint64_t v) KMS_MUST_CHECK;

/* Appends n bytes from p (p may be NULL when n is 0). KMS_ETOOBIG if they
 * do not fit. */
int kms_buf_put_bytes(kms_buf_writer *w, const void *p, size_t n) KMS_MUST_CHECK;

/* Appends n as a u16 / u32 big-endian length, then the n bytes of p.
 * KMS_ETOOBIG if n does not fit the length field or the whole does not fit
 * the buffer (nothing is written then). */
int kms_buf_put_lv16(kms_buf_writer *w, const void *p, size_t n) KMS_MUST_CHECK;
int kms_buf_put_lv32(kms_buf_writer *w, const void *p, size_t n) KMS_MUST_CHECK;

/* Claims the next n bytes for the caller to fill (a hash, a marshalled
 * structure) and advances past them: *at points at them in the buffer.
 * KMS_ETOOBIG if they do not fit; *at is set only on success. */
int kms_buf_reserve(kms_buf_writer *w, size_t n, uint8_t **at) KMS_MUST_CHECK;

/* Room left. */
size_t kms_buf_writer_room(const kms_buf_writer *w);

/* ---- reader ------------------------------------------------------------------------- */

/* Starts a reader at the beginning of data[0..len). data may be NULL only
 * if len is 0. */
void kms_buf_reader_init(kms_buf_reader *r, const uint8_t *data, size_t len);

/* Reads one byte / a big-endian u16, u32 or u64 into *v. KMS_EINVAL if too
 * few bytes are left (*v and the position are unchanged). */
int kms_buf_get_u8(kms_buf_reader *r, uint8_t *v) KMS_MUST_CHECK;
int kms_buf_get_u16be(kms_buf_reader *r, uint16_t *v) KMS_MUST_CHECK;
int kms_buf_get_u32be(kms_buf_reader *r, uint32_t *v) KMS_MUST_CHECK;
int kms_buf_get_u64be(kms_buf_reader *r, uint64_t *v) KMS_MUST_CHECK;

/* Copies the next n bytes into out. KMS_EINVAL if fewer are left. */
int kms_buf_get_bytes(kms_buf_reader *r, void *out, size_t n) KMS_MUST_CHECK;

/* Points *at at the next n bytes (no copy; valid as long as the reader's
 * buffer) and advances past them. KMS_EINVAL if fewer are left. */
int kms_buf_get_view(kms_buf_reader *r, size_t n, const uint8_t **at) KMS_MUST_CHECK;

/* Reads a u16 / u32 big-endian length, then points *at at that many bytes
 * and sets *n. KMS_EINVAL if the length runs past the end: the length is
 * checked against the bytes present, never trusted, and nothing is
 * consumed on failure. */
int kms_buf_get_lv16(kms_buf_reader *r, const uint8_t **at, size_t *n) KMS_MUST_CHECK;
int kms_buf_get_lv32(kms_buf_reader *r, const uint8_t **at, size_t *n) KMS_MUST_CHECK;

/* The rest of the input, consumed: *at points at it, *n is its length
 * (possibly 0). Cannot fail. */
void kms_buf_get_rest(kms_buf_reader *r, const uint8_t **at, size_t *n);

/* KMS_OK if every byte was consumed, KMS_EINVAL if any are left: a parser
 * calls it last so trailing bytes are refused, not ignored. */
int kms_buf_expect_end(const kms_buf_reader *r) KMS_MUST_CHECK;

/* Bytes left to read. */
size_t kms_buf_remaining(const kms_buf_reader *r);

#endif
