/* Archive format and engine (client/archive_format.c, archive_stream.c)
 * with fixed keys, no server: round trips at the sizes around segment
 * boundaries with 1 and 4 threads, every negative at every segment
 * boundary (and what reached the output before the failure), and the
 * known-answer vectors in tests/vectors/archive/.
 *
 * KMS_ARCHIVE_WRITE_VECTORS=DIR rewrites the vectors into DIR instead of
 * checking them (only when the format changes on purpose). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "archive_stream.h"

#define SEG 4096u
#define TAG 16u

/* A growing byte buffer as the sink. */
typedef struct buf {
    uint8_t *p;
    size_t len, cap;
    int fail_after; /* > 0: the sink refuses after this many calls */
    int calls;
} buf;

static int buf_sink(void *arg, const uint8_t *data, size_t len)
{
    buf *b = arg;
    if (b->fail_after > 0 && ++b->calls > b->fail_after)
        return -1;
    if (b->len + len > b->cap) {
        size_t cap = (b->len + len) * 2;
        uint8_t *p = realloc(b->p, cap);
        assert_non_null(p);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
    return 0;
}

static const uint8_t fixed_salt[32] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f};
static const uint8_t fixed_prefix[7] = {0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6};

/* Data key: bytes 0x40..0x5f; a second key differs in its last byte. */
static kms_secret *data_key(int which)
{
    kms_secret *k;
    assert_int_equal(kms_secret_new(32, &k), 0);
    for (int i = 0; i < 32; i++)
        k->data[i] = (uint8_t)(0x40 + i);
    if (which)
        k->data[31] ^= 1;
    return k;
}

/* A stand-in wrapped key of blob format 1's length for a 32-byte key
 * (82 bytes): format 1, key id 0x11.., version 1, alg 1, then 0xee. */
static void fake_blob(uint8_t b[82])
{
    memset(b, 0xee, 82);
    b[0] = 1;
    memset(b + 1, 0x11, 16);
    b[17] = b[18] = b[19] = 0;
    b[20] = 1;
    b[21] = 1;
}

static void pattern(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i % 251);
}

static uint8_t *context_ab(size_t *len)
{
    kms_client_context_entry e[] = {{"db", "billing"}, {"app", "backup"}};
    uint8_t *c;
    assert_int_equal(kms_archive_context_encode(e, 2, &c, len), 0);
    return c;
}

/* Encrypts n pattern bytes (fed in chunks of chunk bytes) into *out. */
static void encrypt_n(size_t n, unsigned threads, size_t chunk, const uint8_t *salt, buf *out)
{
    uint8_t blob[82];
    size_t ctx_len;
    uint8_t *ctx = context_ab(&ctx_len);
    uint8_t *pt = malloc(n ? n : 1);
    kms_secret *dk = data_key(0);
    kms_archive_stream *s;
    kms_archive_params p = {
        .segment_size = SEG, .threads = threads, .sink = buf_sink, .sink_arg = out};
    fake_blob(blob);
    pattern(pt, n);
    assert_int_equal(kms_archive_stream_encrypt(&p, dk, "backups", blob, sizeof(blob), ctx, ctx_len,
                                                salt, salt ? fixed_prefix : NULL, &s, NULL),
                     0);
    for (size_t off = 0; off < n; off += chunk)
        assert_int_equal(
            kms_archive_stream_update(s, pt + off, n - off < chunk ? n - off : chunk, NULL), 0);
    assert_int_equal(kms_archive_stream_final(s, NULL), 0);
    kms_archive_stream_free(s);
    kms_secret_free(dk);
    free(pt);
    free(ctx);
}

static int unwrap_fixed(void *arg, const kms_archive_header *h, kms_secret **dk,
                        kms_client_error *err)
{
    (void)h;
    (void)err;
    *dk = data_key(arg != NULL);
    return 0;
}

/* Decrypts in[0, n) into out; returns the final status. wrong_key: unwrap
 * hands out another key; ctx_other: the caller asks for another context. */
static int decrypt_buf(const uint8_t *in, size_t n, unsigned threads, size_t chunk, int wrong_key,
                       int ctx_other, buf *out)
{
    size_t ctx_len;
    uint8_t *ctx = context_ab(&ctx_len);
    if (ctx_other)
        ctx[ctx_len - 1] ^= 1;
    kms_archive_stream *s;
    kms_archive_params p = {.threads = threads, .sink = buf_sink, .sink_arg = out};
    kms_client_error err;
    assert_int_equal(kms_archive_stream_decrypt(&p, ctx, ctx_len, unwrap_fixed,
                                                wrong_key ? (void *)1 : NULL, &s, NULL),
                     0);
    int r = 0;
    for (size_t off = 0; off < n && r == 0; off += chunk)
        r = kms_archive_stream_update(s, in + off, n - off < chunk ? n - off : chunk, &err);
    if (r == 0)
        r = kms_archive_stream_final(s, &err);
    if (r != 0) {
        assert_int_equal(err.code, r);
        assert_true(strlen(err.message) > 0);
    }
    kms_archive_stream_free(s);
    free(ctx);
    return r;
}

/* What reached the output is a prefix of the plaintext made of whole
 * segments only. */
static void assert_released_prefix(const buf *out, int complete)
{
    uint8_t *pt = malloc(out->len ? out->len : 1);
    pattern(pt, out->len);
    if (!complete)
        assert_true(out->len % SEG == 0);
    assert_memory_equal(out->p ? out->p : pt, pt, out->len);
    free(pt);
}

static const size_t sizes[] = {0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG + 7, 2 * SEG};

static void round_trips(void **state)
{
    (void)state;
    static const unsigned threads[] = {1, 4};
    static const size_t chunks[] = {1 << 20, 1000, 1};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        for (size_t t = 0; t < 2; t++)
            for (size_t c = 0; c < 3; c++) {
                if (chunks[c] == 1 && sizes[i] > SEG + 1)
                    continue; /* byte by byte: the small sizes are enough */
                buf enc = {0}, dec = {0};
                encrypt_n(sizes[i], threads[t], chunks[c], NULL, &enc);
                size_t nseg = sizes[i] == 0 ? 1 : (sizes[i] + SEG - 1) / SEG;
                size_t hl = enc.len - sizes[i] - nseg * TAG;
                assert_int_equal(kms_archive_get32(enc.p + 5), hl);
                assert_int_equal(decrypt_buf(enc.p, enc.len, threads[1 - t], chunks[c], 0, 0, &dec),
                                 0);
                assert_int_equal(dec.len, sizes[i]);
                uint8_t *pt = malloc(sizes[i] + 1);
                pattern(pt, sizes[i]);
                if (sizes[i])
                    assert_memory_equal(dec.p, pt, sizes[i]);
                free(pt);
                free(enc.p);
                free(dec.p);
            }
}

/* Each archive gets its own salt and prefix: two encryptions differ. */
static void fresh_salt_each_time(void **state)
{
    (void)state;
    buf a = {0}, b = {0};
    encrypt_n(100, 1, 100, NULL, &a);
    encrypt_n(100, 1, 100, NULL, &b);
    assert_int_equal(a.len, b.len);
    assert_memory_not_equal(a.p + 13, b.p + 13, 39);
    free(a.p);
    free(b.p);
}

static int decrypt_expect(const uint8_t *in, size_t n, int want)
{
    for (unsigned t = 1; t <= 4; t += 3) {
        buf out = {0};
        int r = decrypt_buf(in, n, t, 777, 0, 0, &out);
        if (r != want)
            fail_msg("threads %u: got %d, want %d", t, r, want);
        assert_released_prefix(&out, r == 0);
        free(out.p);
    }
    return 0;
}

/* Cut at every segment boundary: truncated; inside a segment: corrupt;
 * inside the header: truncated; nothing at all: not an archive. */
static void truncation_everywhere(void **state)
{
    (void)state;
    buf enc = {0};
    size_t n = 3 * SEG + 7;
    encrypt_n(n, 1, 1 << 20, NULL, &enc);
    size_t hl = kms_archive_get32(enc.p + 5);
    decrypt_expect(enc.p, 0, KMS_CLIENT_ENOTARCHIVE);
    decrypt_expect(enc.p, 3, KMS_CLIENT_ENOTARCHIVE);
    decrypt_expect(enc.p, 4, KMS_CLIENT_ETRUNCATED);
    decrypt_expect(enc.p, 9, KMS_CLIENT_ETRUNCATED);
    decrypt_expect(enc.p, hl - 1, KMS_CLIENT_ETRUNCATED);
    decrypt_expect(enc.p, hl, KMS_CLIENT_ETRUNCATED);
    for (size_t k = 1; k <= 3; k++) {
        size_t b = hl + k * (SEG + TAG);
        decrypt_expect(enc.p, b, KMS_CLIENT_ETRUNCATED);
        decrypt_expect(enc.p, b - 1, KMS_CLIENT_ECORRUPT);
        decrypt_expect(enc.p, b + 1, KMS_CLIENT_ECORRUPT);
        decrypt_expect(enc.p, b - TAG, KMS_CLIENT_ECORRUPT);
    }
    decrypt_expect(enc.p, enc.len - 1, KMS_CLIENT_ECORRUPT);
    decrypt_expect(enc.p, enc.len, 0);
    free(enc.p);
}

/* Reordered, duplicated and dropped segments, trailing bytes. */
static void reorder_duplicate_trailing(void **state)
{
    (void)state;
    buf enc = {0};
    size_t n = 3 * SEG + 7, unit = SEG + TAG;
    encrypt_n(n, 1, 1 << 20, NULL, &enc);
    size_t hl = kms_archive_get32(enc.p + 5);
    uint8_t *t = malloc(enc.len + 2 * unit);
    for (size_t i = 0; i < 2; i++) {
        /* Swap segments i and i+1. */
        memcpy(t, enc.p, enc.len);
        memcpy(t + hl + i * unit, enc.p + hl + (i + 1) * unit, unit);
        memcpy(t + hl + (i + 1) * unit, enc.p + hl + i * unit, unit);
        decrypt_expect(t, enc.len, KMS_CLIENT_ECORRUPT);
        /* Duplicate segment i. */
        memcpy(t, enc.p, hl + (i + 1) * unit);
        memcpy(t + hl + (i + 1) * unit, enc.p + hl + i * unit, enc.len - hl - i * unit);
        decrypt_expect(t, enc.len + unit, KMS_CLIENT_ECORRUPT);
        /* Drop segment i. */
        memcpy(t, enc.p, hl + i * unit);
        memcpy(t + hl + i * unit, enc.p + hl + (i + 1) * unit, enc.len - hl - (i + 1) * unit);
        decrypt_expect(t, enc.len - unit, KMS_CLIENT_ECORRUPT);
    }
    /* Trailing bytes: one, a tag's worth, a whole copy of the last segment. */
    memcpy(t, enc.p, enc.len);
    t[enc.len] = 0;
    decrypt_expect(t, enc.len + 1, KMS_CLIENT_ECORRUPT);
    memset(t + enc.len, 0, TAG);
    decrypt_expect(t, enc.len + TAG, KMS_CLIENT_ECORRUPT);
    memcpy(t + enc.len, enc.p + hl + 3 * unit, 7 + TAG);
    decrypt_expect(t, enc.len + 7 + TAG, KMS_CLIENT_ECORRUPT);
    free(t);
    free(enc.p);
}

/* Segments sealed with the wrong last flag: a middle one flagged last is
 * corrupt; an archive whose final segment is not flagged is truncated. */
static void flipped_last_flag(void **state)
{
    (void)state;
    buf enc = {0};
    size_t n = 3 * SEG, unit = SEG + TAG;
    encrypt_n(n, 1, 1 << 20, fixed_salt, &enc);
    size_t hl = kms_archive_get32(enc.p + 5);
    kms_archive_header h;
    kms_secret *dk = data_key(0), *keys;
    assert_int_equal(kms_archive_header_parse(enc.p, hl, &h), 0);
    assert_int_equal(kms_archive_keys_check(&h, dk, &keys), 0);
    EVP_CIPHER *aes = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    kms_archive_cipher c;
    assert_int_equal(kms_archive_cipher_init(&c, aes, keys->data, 1), 0);
    uint8_t *pt = malloc(SEG);
    pattern(pt, SEG);
    uint8_t *t = malloc(enc.len);
    for (uint32_t i = 0; i < 3; i++) {
        memcpy(t, enc.p, enc.len);
        /* Re-seal segment i with the flag inverted (pattern restarts each
         * segment because 4096 % 251 != 0: use the real bytes). */
        uint8_t *seg = malloc(SEG);
        for (size_t j = 0; j < SEG; j++)
            seg[j] = (uint8_t)((i * SEG + j) % 251);
        assert_int_equal(kms_archive_seal(&c, h.prefix, i, i != 2, seg, SEG, t + hl + i * unit), 0);
        free(seg);
        decrypt_expect(t, enc.len, i == 2 ? KMS_CLIENT_ETRUNCATED : KMS_CLIENT_ECORRUPT);
    }
    /* The untouched archive still decrypts: the re-sealing above is exact. */
    decrypt_expect(enc.p, enc.len, 0);
    kms_archive_cipher_free(&c);
    EVP_CIPHER_free(aes);
    kms_secret_free(keys);
    kms_secret_free(dk);
    free(pt);
    free(t);
    free(enc.p);
}

/* Every header byte flipped: the magic and version are named, the bound
 * part, commitment and MAC do not authenticate; the key name is a label
 * (not authenticated, documented); the blob is checked by kmsd, not here. */
static void header_tampering(void **state)
{
    (void)state;
    buf enc = {0};
    encrypt_n(SEG + 1, 1, 1 << 20, NULL, &enc);
    size_t hl = kms_archive_get32(enc.p + 5);
    kms_archive_header h;
    assert_int_equal(kms_archive_header_parse(enc.p, hl, &h), 0);
    size_t name_at = h.bound_len + 64;
    uint8_t *t = malloc(enc.len);
    for (size_t i = 0; i < hl; i++) {
        if (i > name_at && i <= name_at + h.key_name_len)
            continue; /* the label */
        if (i >= (size_t)(h.blob - enc.p))
            continue; /* the wrapped key: kmsd authenticates it */
        memcpy(t, enc.p, enc.len);
        t[i] ^= 0x01;
        buf out = {0};
        int r = decrypt_buf(t, enc.len, 1, 1 << 20, 0, 0, &out);
        int want = i < 4                               ? KMS_CLIENT_ENOTARCHIVE
                   : i == 4                            ? KMS_CLIENT_EVERSION
                   : i >= 52 && i < 54 + h.context_len ? r /* context: ECONTEXT or ECORRUPT */
                                                       : KMS_CLIENT_ECORRUPT;
        if (i >= 52 && i < 54 + h.context_len)
            assert_true(r == KMS_CLIENT_ECONTEXT || r == KMS_CLIENT_ECORRUPT);
        /* A header length past the end of the input reads as a cut header. */
        if (i >= 5 && i < 9 && r == KMS_CLIENT_ETRUNCATED)
            want = r;
        if (r != want)
            fail_msg("byte %zu: got %d, want %d", i, r, want);
        assert_int_equal(out.len, 0);
        free(out.p);
    }
    /* A changed label still decrypts. */
    if (h.key_name_len > 0) {
        memcpy(t, enc.p, enc.len);
        t[name_at + 1] ^= 0x20;
        decrypt_expect(t, enc.len, 0);
    }
    free(t);
    free(enc.p);
}

/* Wrong key (the commitment), wrong context (before any key is fetched). */
static void wrong_key_and_context(void **state)
{
    (void)state;
    buf enc = {0};
    encrypt_n(3 * SEG + 7, 1, 1 << 20, NULL, &enc);
    buf out = {0};
    assert_int_equal(decrypt_buf(enc.p, enc.len, 2, 1 << 20, 1, 0, &out), KMS_CLIENT_ECORRUPT);
    assert_int_equal(out.len, 0);
    assert_int_equal(decrypt_buf(enc.p, enc.len, 2, 1 << 20, 0, 1, &out), KMS_CLIENT_ECONTEXT);
    assert_int_equal(out.len, 0);
    free(enc.p);
}

/* A failing unwrap (here a gRPC status, positive) fails the stream with
 * that code, before any output, and the failure sticks. */
static int unwrap_denied(void *arg, const kms_archive_header *h, kms_secret **dk,
                         kms_client_error *err)
{
    (void)arg;
    (void)h;
    (void)dk;
    err->code = KMS_CLIENT_PERMISSION_DENIED;
    snprintf(err->message, sizeof(err->message), "denied");
    return KMS_CLIENT_PERMISSION_DENIED;
}

static void unwrap_failure(void **state)
{
    (void)state;
    buf enc = {0}, out = {0};
    encrypt_n(3 * SEG + 7, 1, 1 << 20, NULL, &enc);
    size_t ctx_len;
    uint8_t *ctx = context_ab(&ctx_len);
    kms_archive_stream *s;
    kms_archive_params p = {.threads = 2, .sink = buf_sink, .sink_arg = &out};
    kms_client_error err;
    assert_int_equal(kms_archive_stream_decrypt(&p, ctx, ctx_len, unwrap_denied, NULL, &s, NULL),
                     0);
    assert_int_equal(kms_archive_stream_update(s, enc.p, enc.len, &err),
                     KMS_CLIENT_PERMISSION_DENIED);
    assert_string_equal(err.message, "denied");
    assert_int_equal(kms_archive_stream_update(s, enc.p, 1, &err), KMS_CLIENT_PERMISSION_DENIED);
    assert_int_equal(kms_archive_stream_final(s, &err), KMS_CLIENT_PERMISSION_DENIED);
    assert_int_equal(out.len, 0);
    kms_archive_stream_free(s);
    free(ctx);
    free(enc.p);
}

/* A refusing sink fails the stream with EIO, and the failure sticks. */
static void sink_failure(void **state)
{
    (void)state;
    buf enc = {0};
    encrypt_n(3 * SEG + 7, 1, 1 << 20, NULL, &enc);
    for (unsigned t = 1; t <= 4; t += 3) {
        buf out = {.fail_after = 1};
        assert_int_equal(decrypt_buf(enc.p, enc.len, t, 1 << 20, 0, 0, &out), KMS_CLIENT_EIO);
        free(out.p);
    }
    free(enc.p);
}

/* Context encoding: the canonical form of docs/formats.md; duplicates and
 * empty keys refused; the decoder refuses unsorted input. */
static void context_encoding(void **state)
{
    (void)state;
    kms_client_context_entry e[] = {{"b", "2"}, {"ab", ""}, {"a", "xyz"}};
    static const uint8_t want[] = {0, 0,   0,   3,   0, 0, 0,   1, 'a', 0,   0, 0,
                                   3, 'x', 'y', 'z', 0, 0, 0,   2, 'a', 'b', 0, 0,
                                   0, 0,   0,   0,   0, 1, 'b', 0, 0,   0,   1, '2'};
    uint8_t *c;
    size_t len;
    assert_int_equal(kms_archive_context_encode(e, 3, &c, &len), 0);
    assert_int_equal(len, sizeof(want));
    assert_memory_equal(c, want, len);
    kms_client_context_entry *d;
    size_t n;
    assert_int_equal(kms_archive_context_decode(c, len, &d, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(d[1].key, "ab");
    assert_string_equal(d[2].value, "2");
    free(d);
    /* Swap the order of "a" and "ab": unsorted. */
    uint8_t bad[sizeof(want)];
    memcpy(bad, want, 4);
    memcpy(bad + 4, want + 16, 10);
    memcpy(bad + 14, want + 4, 12);
    memcpy(bad + 26, want + 26, 10);
    assert_int_equal(kms_archive_context_decode(bad, len, NULL, &n), KMS_CLIENT_ECORRUPT);
    assert_int_equal(kms_archive_context_decode(c, len - 1, NULL, &n), KMS_CLIENT_ECORRUPT);
    free(c);
    kms_client_context_entry dup[] = {{"a", "1"}, {"a", "2"}};
    assert_int_equal(kms_archive_context_encode(dup, 2, &c, &len), KMS_CLIENT_EARG);
    kms_client_context_entry empty[] = {{"", "1"}};
    assert_int_equal(kms_archive_context_encode(empty, 1, &c, &len), KMS_CLIENT_EARG);
    assert_int_equal(kms_archive_context_encode(NULL, 0, &c, &len), 0);
    assert_int_equal(len, 4);
    free(c);
}

/* Rewrapping a header keeps the bound part, commitment and MAC: the
 * archive still decrypts (same data key) and its segments are untouched. */
static void header_rewrap(void **state)
{
    (void)state;
    buf enc = {0};
    encrypt_n(2 * SEG + 5, 1, 1 << 20, NULL, &enc);
    size_t hl = kms_archive_get32(enc.p + 5);
    kms_archive_header h;
    assert_int_equal(kms_archive_header_parse(enc.p, hl, &h), 0);
    uint8_t blob[200];
    memset(blob, 0x5a, sizeof(blob));
    blob[0] = 1;
    uint8_t *fresh;
    size_t fresh_len;
    assert_int_equal(
        kms_archive_header_rewrap(&h, "another-key", blob, sizeof(blob), &fresh, &fresh_len), 0);
    assert_int_equal(fresh_len, hl + (sizeof(blob) - 82) + (strlen("another-key") - 7));
    uint8_t *t = malloc(fresh_len + enc.len - hl);
    memcpy(t, fresh, fresh_len);
    memcpy(t + fresh_len, enc.p + hl, enc.len - hl);
    kms_archive_header nh;
    assert_int_equal(kms_archive_header_parse(t, fresh_len, &nh), 0);
    assert_int_equal(nh.blob_len, sizeof(blob));
    assert_memory_equal(nh.key_name, "another-key", nh.key_name_len);
    decrypt_expect(t, fresh_len + enc.len - hl, 0);
    free(t);
    free(fresh);
    free(enc.p);
}

/* Peek and parse bounds. */
static void header_bounds(void **state)
{
    (void)state;
    size_t hl;
    uint8_t b[9] = {'K', 'M', 'S', 'A', 1, 0, 0, 0, 0};
    assert_int_equal(kms_archive_peek(b, 9, &hl), KMS_CLIENT_ECORRUPT);
    kms_archive_put32(b + 5, 175);
    assert_int_equal(kms_archive_peek(b, 9, &hl), KMS_CLIENT_ECORRUPT);
    kms_archive_put32(b + 5, 176);
    assert_int_equal(kms_archive_peek(b, 9, &hl), 0);
    assert_int_equal(hl, 176);
    kms_archive_put32(b + 5, KMS_ARCHIVE_HEADER_MAX + 1);
    assert_int_equal(kms_archive_peek(b, 9, &hl), KMS_CLIENT_ECORRUPT);
    b[4] = 2;
    assert_int_equal(kms_archive_peek(b, 9, &hl), KMS_CLIENT_EVERSION);
    b[0] = 'X';
    assert_int_equal(kms_archive_peek(b, 9, &hl), KMS_CLIENT_ENOTARCHIVE);
    assert_int_equal(kms_archive_peek(b, 2, &hl), KMS_CLIENT_ENOTARCHIVE);
}

/* Known-answer vectors: fixed data key (0x40..0x5f), salt (0x00..0x1f),
 * prefix (a0..a6), context {app: backup, db: billing}, key name "backups",
 * the stand-in blob, segment 4096, plaintext byte i = i mod 251. */
static const struct {
    const char *file;
    size_t n;
} vectors[] = {{"empty.kmsa", 0}, {"one-byte.kmsa", 1}, {"3seg-plus-7.kmsa", 3 * SEG + 7}};

static void known_answers(void **state)
{
    (void)state;
    const char *write_dir = getenv("KMS_ARCHIVE_WRITE_VECTORS");
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", write_dir ? write_dir : KMS_ARCHIVE_VECTORS,
                 vectors[i].file);
        buf enc = {0};
        encrypt_n(vectors[i].n, i == 2 ? 4 : 1, 1000, fixed_salt, &enc);
        if (write_dir != NULL) {
            FILE *f = fopen(path, "wb");
            assert_non_null(f);
            assert_int_equal(fwrite(enc.p, 1, enc.len, f), enc.len);
            assert_int_equal(fclose(f), 0);
        } else {
            FILE *f = fopen(path, "rb");
            if (f == NULL)
                fail_msg("%s: missing", path);
            uint8_t *want = malloc(enc.len + 1);
            size_t got = fread(want, 1, enc.len + 1, f);
            fclose(f);
            if (got != enc.len || memcmp(want, enc.p, enc.len) != 0)
                fail_msg("%s: the encryption differs from the checked-in vector", path);
            buf dec = {0};
            assert_int_equal(decrypt_buf(want, got, 1, 1 << 20, 0, 0, &dec), 0);
            assert_int_equal(dec.len, vectors[i].n);
            free(dec.p);
            free(want);
        }
        free(enc.p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trips),           cmocka_unit_test(fresh_salt_each_time),
        cmocka_unit_test(truncation_everywhere), cmocka_unit_test(reorder_duplicate_trailing),
        cmocka_unit_test(flipped_last_flag),     cmocka_unit_test(header_tampering),
        cmocka_unit_test(wrong_key_and_context), cmocka_unit_test(sink_failure),
        cmocka_unit_test(unwrap_failure),        cmocka_unit_test(context_encoding),
        cmocka_unit_test(header_rewrap),         cmocka_unit_test(header_bounds),
        cmocka_unit_test(known_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
