/* The versioned ciphertext blob (see blob.h). A strict parser: every field
 * is read through kms_buf, so no length is used before it is checked
 * against the bytes actually present. */
#include "kmsd/keyring/blob.h"

#include <stdlib.h>

#include "base/buf.h"

_Static_assert(1 + KMS_KEY_ID_LEN + 4 + 1 == KMS_BLOB_AAD_HEADER_LEN,
               "AAD header: format, key id, version, alg");
_Static_assert(KMS_BLOB_AAD_HEADER_LEN + KMS_GCM_IV_LEN == KMS_BLOB_HEADER_LEN, "header layout");

int kms_blob_parse(const uint8_t *buf, size_t len, kms_blob_view *out)
{
    if (buf == NULL || out == NULL)
        return kms_error_set(KMS_EBADBLOB, "no ciphertext blob");
    kms_buf_reader r;
    kms_buf_reader_init(&r, buf, len);
    kms_blob_view v;
    if (kms_buf_get_u8(&r, &v.format) != 0)
        return kms_error_set(KMS_EBADBLOB, "ciphertext blob is empty");
    if (v.format != KMS_BLOB_FORMAT_V1)
        return kms_error_set(KMS_EBADBLOB, "ciphertext blob has unknown format 0x%02x", v.format);
    if (len < KMS_BLOB_OVERHEAD + 1)
        return kms_error_set(KMS_EBADBLOB, "ciphertext blob truncated (%zu bytes)", len);
    if (len > KMS_BLOB_MAX)
        return kms_error_set(KMS_EBADBLOB, "ciphertext blob too long (%zu bytes)", len);
    v.aad_header = buf;
    v.ciphertext_len = len - KMS_BLOB_OVERHEAD;
    if (kms_buf_get_bytes(&r, v.key_id, KMS_KEY_ID_LEN) != 0 ||
        kms_buf_get_u32be(&r, &v.key_version) != 0 || kms_buf_get_u8(&r, &v.alg) != 0 ||
        kms_buf_get_bytes(&r, v.iv, KMS_GCM_IV_LEN) != 0 ||
        kms_buf_get_view(&r, v.ciphertext_len, &v.ciphertext) != 0 ||
        kms_buf_get_view(&r, KMS_GCM_TAG_LEN, &v.tag) != 0 || kms_buf_expect_end(&r) != 0)
        return kms_error_set(KMS_EBADBLOB, "ciphertext blob truncated (%zu bytes)", len);
    if (v.alg != KMS_BLOB_ALG_AES256_GCM)
        return kms_error_set(KMS_EBADBLOB, "ciphertext blob has unknown algorithm 0x%02x", v.alg);
    if (v.key_version == 0)
        return kms_error_set(KMS_EBADBLOB, "ciphertext blob names key version 0");
    *out = v;
    return KMS_OK;
}

void kms_blob_aad_header(const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t version, uint8_t alg,
                         uint8_t out[KMS_BLOB_AAD_HEADER_LEN])
{
    kms_buf_writer w;
    kms_buf_writer_init(&w, out, KMS_BLOB_AAD_HEADER_LEN);
    /* Fixed sizes into a fixed buffer: a failure is a bug in this file. */
    if (kms_buf_put_u8(&w, KMS_BLOB_FORMAT_V1) != 0 ||
        kms_buf_put_bytes(&w, key_id, KMS_KEY_ID_LEN) != 0 || kms_buf_put_u32be(&w, version) != 0 ||
        kms_buf_put_u8(&w, alg) != 0 || w.len != KMS_BLOB_AAD_HEADER_LEN)
        abort();
}

int kms_blob_write(const uint8_t aad_header[KMS_BLOB_AAD_HEADER_LEN],
                   const uint8_t iv[KMS_GCM_IV_LEN], const uint8_t *ct, size_t ct_len,
                   const uint8_t tag[KMS_GCM_TAG_LEN], uint8_t *out, size_t cap, size_t *len)
{
    if (ct_len == 0 || ct_len > KMS_BLOB_MAX_PLAINTEXT)
        return kms_error_set(KMS_ETOOBIG, "ciphertext length %zu out of range", ct_len);
    if (out == NULL || cap < KMS_BLOB_OVERHEAD + ct_len) /* all or nothing */
        return kms_error_set(KMS_ETOOBIG, "blob buffer too small");
    kms_buf_writer w;
    kms_buf_writer_init(&w, out, cap);
    if (kms_buf_put_bytes(&w, aad_header, KMS_BLOB_AAD_HEADER_LEN) != 0 ||
        kms_buf_put_bytes(&w, iv, KMS_GCM_IV_LEN) != 0 || kms_buf_put_bytes(&w, ct, ct_len) != 0 ||
        kms_buf_put_bytes(&w, tag, KMS_GCM_TAG_LEN) != 0)
        return kms_error_set(KMS_ETOOBIG, "blob buffer too small");
    *len = w.len;
    return KMS_OK;
}
