/* libFuzzer target: the archive header parser and the segment reader.
 * Any input is parsed as a header (what is accepted must describe exactly
 * the bytes given) and streamed through a decrypting reader with the
 * known-answer vectors' data key and context, in two chunks split by the
 * first input byte, so seeds made from the vectors reach the segments. The
 * reader must never crash, and the bytes it releases are always whole
 * segments of the plaintext the vectors encode. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "archive_stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct seen {
    size_t len;
} seen;

static int sink(void *arg, const uint8_t *p, size_t n)
{
    seen *s = arg;
    for (size_t i = 0; i < n; i++)
        if (p[i] != (uint8_t)((s->len + i) % 251))
            abort();
    s->len += n;
    return 0;
}

static int unwrap(void *arg, const kms_archive_header *h, kms_secret **dk, kms_client_error *err)
{
    (void)arg;
    (void)h;
    (void)err;
    if (kms_secret_new(32, dk) != 0)
        return KMS_CLIENT_ENOMEM;
    for (int i = 0; i < 32; i++)
        (*dk)->data[i] = (uint8_t)(0x40 + i);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Copy into an exact-size heap buffer so ASan sees any overread. */
    uint8_t *buf = malloc(size ? size : 1);
    if (buf == NULL)
        return 0;
    if (size)
        memcpy(buf, data, size);

    size_t hl;
    kms_archive_header h;
    int parsed = kms_archive_peek(buf, size, &hl) == 0 && hl <= size &&
                 kms_archive_header_parse(buf, hl, &h) == 0;
    if (parsed) {
        if (h.header_len != hl || h.blob + h.blob_len != buf + hl ||
            h.bound_len != 54 + h.context_len || h.segment_size < KMS_ARCHIVE_SEGMENT_MIN)
            abort();
        /* Rewrapping with the same blob gives back the same bytes. */
        char name[256];
        memcpy(name, h.key_name, h.key_name_len);
        name[h.key_name_len] = '\0';
        uint8_t *again;
        size_t again_len;
        if (kms_archive_header_rewrap(&h, name, h.blob, h.blob_len, &again, &again_len) != 0 ||
            again_len != hl || memcmp(again, buf, hl) != 0)
            abort();
        free(again);
    }

    kms_client_context_entry ctx[] = {{"app", "backup"}, {"db", "billing"}};
    uint8_t *c;
    size_t c_len;
    if (kms_archive_context_encode(ctx, 2, &c, &c_len) != 0)
        abort();
    seen s = {0};
    kms_archive_params p = {.threads = 1, .sink = sink, .sink_arg = &s};
    kms_archive_stream *st;
    if (kms_archive_stream_decrypt(&p, c, c_len, unwrap, NULL, &st, NULL) == 0) {
        size_t split = size ? buf[0] * size / 256 : 0;
        kms_client_error err;
        int r = kms_archive_stream_update(st, buf, split, &err);
        if (r == 0)
            r = kms_archive_stream_update(st, buf + split, size - split, &err);
        if (r == 0)
            r = kms_archive_stream_final(st, &err);
        if (r != 0 && parsed && s.len % h.segment_size != 0)
            abort();
        kms_archive_stream_free(st);
    }
    free(c);
    free(buf);
    return 0;
}
