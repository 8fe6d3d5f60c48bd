/* Bounded bytes (buf.h). Every check is "n <= room" written so that it
 * cannot overflow: room is computed first and never goes negative. */
#include "base/buf.h"

#include <string.h>

void kms_buf_writer_init(kms_buf_writer *w, uint8_t *data, size_t cap)
{
    w->data = data;
    w->cap = data != NULL ? cap : 0;
    w->len = 0;
}

size_t kms_buf_writer_room(const kms_buf_writer *w)
{
    return w->cap - w->len;
}

int kms_buf_reserve(kms_buf_writer *w, size_t n, uint8_t **at)
{
    if (n > kms_buf_writer_room(w))
        return KMS_ETOOBIG;
    /* No buffer (room 0) reserves only 0 bytes: no pointer arithmetic on NULL. */
    *at = w->data != NULL ? w->data + w->len : NULL;
    w->len += n;
    return KMS_OK;
}

int kms_buf_put_bytes(kms_buf_writer *w, const void *p, size_t n)
{
    uint8_t *at;
    if (n > 0 && p == NULL)
        return KMS_EINVAL;
    KMS_GUARD(kms_buf_reserve(w, n, &at));
    if (n > 0)
        memcpy(at, p, n);
    return KMS_OK;
}

/* Big-endian in width bytes (1..8). */
static int put_be(kms_buf_writer *w, uint64_t v, size_t width)
{
    uint8_t *at;
    KMS_GUARD(kms_buf_reserve(w, width, &at));
    for (size_t i = 0; i < width; i++)
        at[i] = (uint8_t)(v >> (8 * (width - 1 - i)));
    return KMS_OK;
}

int kms_buf_put_u8(kms_buf_writer *w, uint8_t v)
{
    return put_be(w, v, 1);
}

int kms_buf_put_u16be(kms_buf_writer *w, uint16_t v)
{
    return put_be(w, v, 2);
}

int kms_buf_put_u32be(kms_buf_writer *w, uint32_t v)
{
    return put_be(w, v, 4);
}

int kms_buf_put_u64be(kms_buf_writer *w, uint64_t v)
{
    return put_be(w, v, 8);
}

static int put_lv(kms_buf_writer *w, const void *p, size_t n, size_t width, uint64_t max)
{
    if ((uint64_t)n > max || width > kms_buf_writer_room(w) || n > kms_buf_writer_room(w) - width)
        return KMS_ETOOBIG;
    if (n > 0 && p == NULL)
        return KMS_EINVAL;
    KMS_GUARD(put_be(w, n, width));
    return kms_buf_put_bytes(w, p, n); /* fits: checked above */
}

int kms_buf_put_lv16(kms_buf_writer *w, const void *p, size_t n)
{
    return put_lv(w, p, n, 2, UINT16_MAX);
}

int kms_buf_put_lv32(kms_buf_writer *w, const void *p, size_t n)
{
    return put_lv(w, p, n, 4, UINT32_MAX);
}

/* ---- reader ------------------------------------------------------------------------- */

void kms_buf_reader_init(kms_buf_reader *r, const uint8_t *data, size_t len)
{
    r->data = data;
    r->len = data != NULL ? len : 0;
    r->off = 0;
}

size_t kms_buf_remaining(const kms_buf_reader *r)
{
    return r->len - r->off;
}

int kms_buf_get_view(kms_buf_reader *r, size_t n, const uint8_t **at)
{
    if (n > kms_buf_remaining(r))
        return KMS_EINVAL;
    *at = r->data != NULL ? r->data + r->off : NULL;
    r->off += n;
    return KMS_OK;
}

int kms_buf_get_bytes(kms_buf_reader *r, void *out, size_t n)
{
    const uint8_t *at;
    KMS_GUARD(kms_buf_get_view(r, n, &at));
    if (n > 0)
        memcpy(out, at, n);
    return KMS_OK;
}

static int get_be(kms_buf_reader *r, size_t width, uint64_t *v)
{
    const uint8_t *at;
    KMS_GUARD(kms_buf_get_view(r, width, &at));
    uint64_t x = 0;
    for (size_t i = 0; i < width; i++)
        x = x << 8 | at[i];
    *v = x;
    return KMS_OK;
}

int kms_buf_get_u8(kms_buf_reader *r, uint8_t *v)
{
    uint64_t x;
    KMS_GUARD(get_be(r, 1, &x));
    *v = (uint8_t)x;
    return KMS_OK;
}

int kms_buf_get_u16be(kms_buf_reader *r, uint16_t *v)
{
    uint64_t x;
    KMS_GUARD(get_be(r, 2, &x));
    *v = (uint16_t)x;
    return KMS_OK;
}

int kms_buf_get_u32be(kms_buf_reader *r, uint32_t *v)
{
    uint64_t x;
    KMS_GUARD(get_be(r, 4, &x));
    *v = (uint32_t)x;
    return KMS_OK;
}

int kms_buf_get_u64be(kms_buf_reader *r, uint64_t *v)
{
    return get_be(r, 8, v);
}

static int get_lv(kms_buf_reader *r, size_t width, const uint8_t **at, size_t *n)
{
    kms_buf_reader peek = *r;
    uint64_t len;
    KMS_GUARD(get_be(&peek, width, &len));
    if (len > kms_buf_remaining(&peek))
        return KMS_EINVAL;
    KMS_GUARD(kms_buf_get_view(&peek, (size_t)len, at));
    *n = (size_t)len;
    *r = peek;
    return KMS_OK;
}

int kms_buf_get_lv16(kms_buf_reader *r, const uint8_t **at, size_t *n)
{
    return get_lv(r, 2, at, n);
}

int kms_buf_get_lv32(kms_buf_reader *r, const uint8_t **at, size_t *n)
{
    return get_lv(r, 4, at, n);
}

void kms_buf_get_rest(kms_buf_reader *r, const uint8_t **at, size_t *n)
{
    *at = r->data != NULL ? r->data + r->off : NULL;
    *n = kms_buf_remaining(r);
    r->off = r->len;
}

int kms_buf_expect_end(const kms_buf_reader *r)
{
    return kms_buf_remaining(r) == 0 ? KMS_OK : KMS_EINVAL;
}
