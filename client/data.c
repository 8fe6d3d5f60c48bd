/* libkmsclient: the data plane (GenerateDataKey, Encrypt, Decrypt,
 * ReEncrypt) and its result type. */
#include <stdlib.h>
#include <string.h>

#include "base/pb_alloc.h"
#include "client_internal.h"
#include "kms/v1/kms.pb-c.h"

#define MAX_PLAINTEXT 4096
#define MAX_BLOB (64 * 1024)

static int copy_bytes(const ProtobufCBinaryData *b, int secret, uint8_t **out, size_t *len)
{
    *out = secret ? kms_client_secure_alloc(b->len) : malloc(b->len ? b->len : 1);
    if (*out == NULL)
        return KMS_CLIENT_ENOMEM;
    if (b->len)
        memcpy(*out, b->data, b->len);
    *len = b->len;
    return KMS_CLIENT_OK;
}

static int copy_name(const char *s, char **out)
{
    *out = strdup(s != NULL ? s : "");
    return *out != NULL ? KMS_CLIENT_OK : KMS_CLIENT_ENOMEM;
}

/* Fills r from the reply fields (any may be NULL); all or nothing. */
static int fill(kms_client_result *r, const ProtobufCBinaryData *plaintext,
                const ProtobufCBinaryData *blob, const char *key_name, uint32_t version,
                const char *source_name, uint32_t source_version, kms_client_error *err)
{
    kms_client_result t;
    memset(&t, 0, sizeof(t));
    int rc = KMS_CLIENT_OK;
    if (plaintext != NULL)
        rc = copy_bytes(plaintext, 1, &t.plaintext, &t.plaintext_len);
    if (rc == 0 && blob != NULL)
        rc = copy_bytes(blob, 0, &t.blob, &t.blob_len);
    if (rc == 0)
        rc = copy_name(key_name, &t.key_name);
    if (rc == 0 && source_name != NULL)
        rc = copy_name(source_name, &t.source_key_name);
    if (rc != 0) {
        kms_client_result_free(&t);
        return kms_client_fail(err, rc, "out of memory (or locked memory limit)");
    }
    t.key_version = version;
    t.source_key_version = source_version;
    *r = t;
    return KMS_CLIENT_OK;
}

KMS_CLIENT_API void kms_client_result_free(kms_client_result *r)
{
    if (r == NULL)
        return;
    kms_client_secure_free(r->plaintext);
    free(r->blob);
    free(r->key_name);
    free(r->source_key_name);
    memset(r, 0, sizeof(*r));
}

static int check_name(const char *name, kms_client_error *err)
{
    if (name == NULL || name[0] == '\0')
        return kms_client_fail(err, KMS_CLIENT_EARG, "no key name");
    return KMS_CLIENT_OK;
}

static int check_blob(const uint8_t *blob, size_t len, kms_client_error *err)
{
    if (blob == NULL || len == 0 || len > MAX_BLOB)
        return kms_client_fail(err, KMS_CLIENT_EARG, "ciphertext blob missing or too large");
    return KMS_CLIENT_OK;
}

KMS_CLIENT_API int kms_client_generate_data_key(kms_client *c, const char *key_name,
                                                kms_client_key_spec spec,
                                                const kms_client_context_entry *ctx, size_t n_ctx,
                                                int without_plaintext, kms_client_result *result,
                                                kms_client_error *err)
{
    Kms__V1__GenerateDataKeyRequest req = KMS__V1__GENERATE_DATA_KEY_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    void **entries = NULL;
    int r;
    if (c == NULL || result == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "NULL argument");
    if ((r = check_name(key_name, err)) != 0)
        return r;
    if (spec != KMS_CLIENT_AES_256 && spec != KMS_CLIENT_AES_128)
        return kms_client_fail(err, KMS_CLIENT_EARG, "key spec must be AES_256 or AES_128");
    if ((r = kms_client_context_entries(
             &kms__v1__generate_data_key_request__encryption_context_entry__descriptor, ctx, n_ctx,
             &entries, err)) != 0)
        return r;
    req.key_name = (char *)key_name;
    req.key_spec =
        spec == KMS_CLIENT_AES_128 ? KMS__V1__KEY_SPEC__AES_128 : KMS__V1__KEY_SPEC__AES_256;
    req.n_encryption_context = n_ctx;
    req.encryption_context = (Kms__V1__GenerateDataKeyRequest__EncryptionContextEntry **)entries;
    req.without_plaintext = without_plaintext != 0;
    r = kms_client_call(c, "/kms.v1.KeyManagement/GenerateDataKey", &req.base,
                        &kms__v1__generate_data_key_response__descriptor, kms_pb_wiping_allocator(),
                        &m, err);
    free(entries);
    if (r != 0)
        return r;
    Kms__V1__GenerateDataKeyResponse *resp = (Kms__V1__GenerateDataKeyResponse *)m;
    if (resp->ciphertext_blob.len == 0 || (!without_plaintext && resp->plaintext.len == 0))
        r = kms_client_fail(err, KMS_CLIENT_EREPLY, "reply lacks the data key");
    else
        r = fill(result, without_plaintext ? NULL : &resp->plaintext, &resp->ciphertext_blob,
                 resp->key_name, resp->key_version, NULL, 0, err);
    protobuf_c_message_free_unpacked(m, kms_pb_wiping_allocator());
    return r;
}

KMS_CLIENT_API int kms_client_encrypt(kms_client *c, const char *key_name, const uint8_t *plaintext,
                                      size_t len, const kms_client_context_entry *ctx, size_t n_ctx,
                                      kms_client_result *result, kms_client_error *err)
{
    Kms__V1__EncryptRequest req = KMS__V1__ENCRYPT_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    void **entries = NULL;
    int r;
    if (c == NULL || result == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "NULL argument");
    if ((r = check_name(key_name, err)) != 0)
        return r;
    if (plaintext == NULL || len == 0 || len > MAX_PLAINTEXT)
        return kms_client_fail(err, KMS_CLIENT_EARG, "plaintext must be 1..%d bytes",
                               MAX_PLAINTEXT);
    if ((r = kms_client_context_entries(
             &kms__v1__encrypt_request__encryption_context_entry__descriptor, ctx, n_ctx, &entries,
             err)) != 0)
        return r;
    req.key_name = (char *)key_name;
    req.plaintext.data = (uint8_t *)plaintext;
    req.plaintext.len = len;
    req.n_encryption_context = n_ctx;
    req.encryption_context = (Kms__V1__EncryptRequest__EncryptionContextEntry **)entries;
    r = kms_client_call(c, "/kms.v1.KeyManagement/Encrypt", &req.base,
                        &kms__v1__encrypt_response__descriptor, NULL, &m, err);
    free(entries);
    if (r != 0)
        return r;
    Kms__V1__EncryptResponse *resp = (Kms__V1__EncryptResponse *)m;
    if (resp->ciphertext_blob.len == 0)
        r = kms_client_fail(err, KMS_CLIENT_EREPLY, "reply lacks the blob");
    else
        r = fill(result, NULL, &resp->ciphertext_blob, resp->key_name, resp->key_version, NULL, 0,
                 err);
    protobuf_c_message_free_unpacked(m, NULL);
    return r;
}

KMS_CLIENT_API int kms_client_decrypt(kms_client *c, const uint8_t *blob, size_t blob_len,
                                      const kms_client_context_entry *ctx, size_t n_ctx,
                                      kms_client_result *result, kms_client_error *err)
{
    Kms__V1__DecryptRequest req = KMS__V1__DECRYPT_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    void **entries = NULL;
    int r;
    if (c == NULL || result == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "NULL argument");
    if ((r = check_blob(blob, blob_len, err)) != 0)
        return r;
    if ((r = kms_client_context_entries(
             &kms__v1__decrypt_request__encryption_context_entry__descriptor, ctx, n_ctx, &entries,
             err)) != 0)
        return r;
    req.ciphertext_blob.data = (uint8_t *)blob;
    req.ciphertext_blob.len = blob_len;
    req.n_encryption_context = n_ctx;
    req.encryption_context = (Kms__V1__DecryptRequest__EncryptionContextEntry **)entries;
    r = kms_client_call(c, "/kms.v1.KeyManagement/Decrypt", &req.base,
                        &kms__v1__decrypt_response__descriptor, kms_pb_wiping_allocator(), &m, err);
    free(entries);
    if (r != 0)
        return r;
    Kms__V1__DecryptResponse *resp = (Kms__V1__DecryptResponse *)m;
    r = fill(result, &resp->plaintext, NULL, resp->key_name, resp->key_version, NULL, 0, err);
    protobuf_c_message_free_unpacked(m, kms_pb_wiping_allocator());
    return r;
}

KMS_CLIENT_API int kms_client_reencrypt(kms_client *c, const uint8_t *blob, size_t blob_len,
                                        const kms_client_context_entry *src_ctx, size_t n_src_ctx,
                                        const char *dest_key,
                                        const kms_client_context_entry *dest_ctx, size_t n_dest_ctx,
                                        kms_client_result *result, kms_client_error *err)
{
    Kms__V1__ReEncryptRequest req = KMS__V1__RE_ENCRYPT_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    void **src = NULL, **dst = NULL;
    int r;
    if (c == NULL || result == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "NULL argument");
    if ((r = check_blob(blob, blob_len, err)) != 0 || (r = check_name(dest_key, err)) != 0)
        return r;
    if ((r = kms_client_context_entries(
             &kms__v1__re_encrypt_request__source_encryption_context_entry__descriptor, src_ctx,
             n_src_ctx, &src, err)) != 0)
        return r;
    if ((r = kms_client_context_entries(
             &kms__v1__re_encrypt_request__destination_encryption_context_entry__descriptor,
             dest_ctx, n_dest_ctx, &dst, err)) != 0) {
        free(src);
        return r;
    }
    req.ciphertext_blob.data = (uint8_t *)blob;
    req.ciphertext_blob.len = blob_len;
    req.n_source_encryption_context = n_src_ctx;
    req.source_encryption_context = (Kms__V1__ReEncryptRequest__SourceEncryptionContextEntry **)src;
    req.destination_key_name = (char *)dest_key;
    req.n_destination_encryption_context = n_dest_ctx;
    req.destination_encryption_context =
        (Kms__V1__ReEncryptRequest__DestinationEncryptionContextEntry **)dst;
    r = kms_client_call(c, "/kms.v1.KeyManagement/ReEncrypt", &req.base,
                        &kms__v1__re_encrypt_response__descriptor, NULL, &m, err);
    free(src);
    free(dst);
    if (r != 0)
        return r;
    Kms__V1__ReEncryptResponse *resp = (Kms__V1__ReEncryptResponse *)m;
    if (resp->ciphertext_blob.len == 0)
        r = kms_client_fail(err, KMS_CLIENT_EREPLY, "reply lacks the blob");
    else
        r = fill(result, NULL, &resp->ciphertext_blob, resp->key_name, resp->key_version,
                 resp->source_key_name, resp->source_key_version, err);
    protobuf_c_message_free_unpacked(m, NULL);
    return r;
}
