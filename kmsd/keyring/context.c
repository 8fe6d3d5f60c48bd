/* Canonical encoding of an encryption context (see context.h). */
#include "kmsd/keyring/context.h"

#include <stdlib.h>
#include <string.h>

#include "base/buf.h"

/* Byte-wise order; a proper prefix sorts first. */
static int key_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

static int pair_ptr_cmp(const void *x, const void *y)
{
    const kms_context_pair *a = *(const kms_context_pair *const *)x;
    const kms_context_pair *b = *(const kms_context_pair *const *)y;
    return key_cmp(a->key, a->key_len, b->key, b->key_len);
}

static int check_pair(const kms_context_pair *p)
{
    if (p->key == NULL || p->key_len == 0)
        return kms_error_set(KMS_EINVAL, "encryption context key is empty");
    if (p->key_len > KMS_CONTEXT_MAX_KEY)
        return kms_error_set(KMS_EINVAL, "encryption context key longer than %d bytes",
                             KMS_CONTEXT_MAX_KEY);
    if (p->value == NULL && p->value_len != 0)
        return kms_error_set(KMS_EINVAL, "encryption context value is NULL");
    if (p->value_len > KMS_CONTEXT_MAX_VALUE)
        return kms_error_set(KMS_EINVAL, "encryption context value longer than %d bytes",
                             KMS_CONTEXT_MAX_VALUE);
    /* Every caller that holds C strings would read "v\0x" as "v": a NUL is
     * refused, so that one context never has two spellings. */
    if (memchr(p->key, 0, p->key_len) != NULL ||
        (p->value_len > 0 && memchr(p->value, 0, p->value_len) != NULL))
        return kms_error_set(KMS_EINVAL, "encryption context holds a NUL byte");
    return KMS_OK;
}

int kms_context_encode(const kms_context *ctx, uint8_t *out, size_t cap, size_t *len)
{
    size_t count = ctx ? ctx->count : 0;
    if (count > KMS_CONTEXT_MAX_PAIRS)
        return kms_error_set(KMS_EINVAL, "encryption context has more than %d pairs",
                             KMS_CONTEXT_MAX_PAIRS);
    if (count > 0 && ctx->pairs == NULL)
        return kms_error_set(KMS_EINVAL, "encryption context pairs missing");

    const kms_context_pair *sorted[KMS_CONTEXT_MAX_PAIRS];
    size_t need = 4;
    for (size_t i = 0; i < count; i++) {
        KMS_GUARD(check_pair(&ctx->pairs[i]));
        sorted[i] = &ctx->pairs[i];
        need += 8 + ctx->pairs[i].key_len + ctx->pairs[i].value_len;
    }
    if (count > 1)
        qsort(sorted, count, sizeof(sorted[0]), pair_ptr_cmp);
    for (size_t i = 1; i < count; i++)
        if (pair_ptr_cmp(&sorted[i - 1], &sorted[i]) == 0)
            return kms_error_set(KMS_EINVAL, "encryption context has a duplicate key");
    if (need > cap)
        return kms_error_set(KMS_ETOOBIG, "encoded encryption context needs %zu bytes", need);

    kms_buf_writer w;
    kms_buf_writer_init(&w, out, cap);
    if (kms_buf_put_u32be(&w, (uint32_t)count) != 0)
        return kms_error_set(KMS_ETOOBIG, "encoded encryption context needs %zu bytes", need);
    for (size_t i = 0; i < count; i++)
        if (kms_buf_put_lv32(&w, sorted[i]->key, sorted[i]->key_len) != 0 ||
            kms_buf_put_lv32(&w, sorted[i]->value, sorted[i]->value_len) != 0)
            return kms_error_set(KMS_ETOOBIG, "encoded encryption context needs %zu bytes", need);
    *len = w.len;
    return KMS_OK;
}

/* Reads a u32 length (at most max) and that many bytes, never past the end. */
static int take_field(kms_buf_reader *r, size_t max, const char **field, size_t *field_len)
{
    uint32_t n;
    const uint8_t *at;
    if (kms_buf_get_u32be(r, &n) != 0)
        return kms_error_set(KMS_EINVAL, "encryption context truncated");
    if (n > max || kms_buf_get_view(r, n, &at) != 0)
        return kms_error_set(KMS_EINVAL, "encryption context field length invalid");
    *field = (const char *)at;
    *field_len = n;
    return KMS_OK;
}

int kms_context_decode(const uint8_t *in, size_t len, kms_context_pair_cb cb, void *cbctx)
{
    if (in == NULL || len < 4 || len > KMS_CONTEXT_MAX_ENCODED)
        return kms_error_set(KMS_EINVAL, "encryption context encoding has a bad length");
    kms_buf_reader r;
    kms_buf_reader_init(&r, in, len);
    uint32_t count;
    if (kms_buf_get_u32be(&r, &count) != 0 || count > KMS_CONTEXT_MAX_PAIRS)
        return kms_error_set(KMS_EINVAL, "encryption context has too many pairs");
    kms_context_pair prev = {0};
    for (uint32_t i = 0; i < count; i++) {
        kms_context_pair pair;
        KMS_GUARD(take_field(&r, KMS_CONTEXT_MAX_KEY, &pair.key, &pair.key_len));
        KMS_GUARD(take_field(&r, KMS_CONTEXT_MAX_VALUE, &pair.value, &pair.value_len));
        if (pair.key_len == 0)
            return kms_error_set(KMS_EINVAL, "encryption context key is empty");
        if (memchr(pair.key, 0, pair.key_len) != NULL ||
            (pair.value_len > 0 && memchr(pair.value, 0, pair.value_len) != NULL))
            return kms_error_set(KMS_EINVAL, "encryption context holds a NUL byte");
        if (i > 0 && key_cmp(prev.key, prev.key_len, pair.key, pair.key_len) >= 0)
            return kms_error_set(KMS_EINVAL, "encryption context keys not in canonical order");
        if (cb != NULL)
            KMS_GUARD(cb(cbctx, &pair));
        prev = pair;
    }
    if (kms_buf_expect_end(&r) != 0)
        return kms_error_set(KMS_EINVAL, "encryption context has trailing bytes");
    return KMS_OK;
}
