/* The versioned ciphertext blob (see blob.h). A strict parser: every length
 * is checked against the bytes actually present before it is used. */
#include "kmsd/keyring/blob.h"

#include <string.h>

enum {
    OFF_FORMAT = 0,
    OFF_KEY_ID = 1,
    OFF_VERSION = OFF_KEY_ID + KMS_KEY_ID_LEN,
    OFF_ALG = OFF_VERSION + 4,
    OFF_IV = OFF_ALG + 1,
    OFF_CIPHERTEXT = OFF_IV + KMS_GCM_IV_LEN
};

_Static_assert(OFF_IV == KMS_BLOB_AAD_HEADER_LEN, "AAD header ends where the IV starts");
_Static_assert(OFF_CIPHERTEXT == KMS_BLOB_HEADER_LEN, "header layout");

int kms_blob_parse(const uint8_t *buf, size_t len, kms_blob_view *out)
{
    if (buf == NULL || out == NULL)
        return kms_error_set(KMS_EBADBLOB, "no ciphertext blob");
    if (len < 1)
        return kms_error_set(KMS_EBADBLOB, "ciphertext blob is empty");
    if (buf[OFF_FORMAT] != KMS_BLOB_FORMAT_V1)
        return kms_error_set(KMS_EBADBLOB, "ciphertext blob has unknown format 0x%02x",
                             buf[OFF_FORMAT]);
    if (len < KMS_BLOB_OVERHEAD + 1)
        return kms_error_set(KMS_EBADBLOB, "ciphertext blob truncated (%zu bytes)", len);
    if (len > KMS_BLOB_MAX)
        return kms_error_set(KMS_EBADBLOB, "ciphertext blob too long (%zu bytes)", len);
    if (buf[OFF_ALG] != KMS_BLOB_ALG_AES256_GCM)
        return kms_error_set(KMS_EBADBLOB, "ciphertext blob has unknown algorithm 0x%02x",
                             buf[OFF_ALG]);
    uint32_t version = (uint32_t)buf[OFF_VERSION] << 24 | (uint32_t)buf[OFF_VERSION + 1] << 16 |
                       (uint32_t)buf[OFF_VERSION + 2] << 8 | buf[OFF_VERSION + 3];
    if (version == 0)
        return kms_error_set(KMS_EBADBLOB, "ciphertext blob names key version 0");

    kms_blob_view v;
    v.format = buf[OFF_FORMAT];
    memcpy(v.key_id, buf + OFF_KEY_ID, KMS_KEY_ID_LEN);
    v.key_version = version;
    v.alg = buf[OFF_ALG];
    memcpy(v.iv, buf + OFF_IV, KMS_GCM_IV_LEN);
    v.aad_header = buf;
    v.ciphertext = buf + OFF_CIPHERTEXT;
    v.ciphertext_len = len - KMS_BLOB_OVERHEAD;
    v.tag = buf + len - KMS_GCM_TAG_LEN;
    *out = v;
    return KMS_OK;
}

void kms_blob_aad_header(const uint8_t key_id[KMS_KEY_ID_LEN], uint32_t version, uint8_t alg,
                         uint8_t out[KMS_BLOB_AAD_HEADER_LEN])
{
    out[OFF_FORMAT] = KMS_BLOB_FORMAT_V1;
    memcpy(out + OFF_KEY_ID, key_id, KMS_KEY_ID_LEN);
    out[OFF_VERSION] = (uint8_t)(version >> 24);
    out[OFF_VERSION + 1] = (uint8_t)(version >> 16);
    out[OFF_VERSION + 2] = (uint8_t)(version >> 8);
    out[OFF_VERSION + 3] = (uint8_t)version;
    out[OFF_ALG] = alg;
}

int kms_blob_write(const uint8_t aad_header[KMS_BLOB_AAD_HEADER_LEN],
                   const uint8_t iv[KMS_GCM_IV_LEN], const uint8_t *ct, size_t ct_len,
                   const uint8_t tag[KMS_GCM_TAG_LEN], uint8_t *out, size_t cap, size_t *len)
{
    if (ct_len == 0 || ct_len > KMS_BLOB_MAX_PLAINTEXT)
        return kms_error_set(KMS_ETOOBIG, "ciphertext length %zu out of range", ct_len);
    size_t need = KMS_BLOB_OVERHEAD + ct_len;
    if (cap < need)
        return kms_error_set(KMS_ETOOBIG, "blob buffer too small");
    memcpy(out, aad_header, KMS_BLOB_AAD_HEADER_LEN);
    memcpy(out + OFF_IV, iv, KMS_GCM_IV_LEN);
    memcpy(out + OFF_CIPHERTEXT, ct, ct_len);
    memcpy(out + OFF_CIPHERTEXT + ct_len, tag, KMS_GCM_TAG_LEN);
    *len = need;
    return KMS_OK;
}
