/* Officer signing keys and approval signatures (signature.h). */
#include "kmsd/quorum/signature.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

/* The key in pem, if it is ECDSA P-256 or Ed25519; NULL with the error set. */
static EVP_PKEY *load_public(const char *pem, size_t len, int *r)
{
    if (pem == NULL || len == 0 || len > 1u << 16) {
        *r = kms_error_set_public(KMS_EINVAL, "no signing key");
        return NULL;
    }
    if (memmem(pem, len, "PRIVATE KEY", 11) != NULL) {
        *r = kms_error_set_public(KMS_EINVAL, "holds a private key: give the officer's public key "
                                              "(openssl pkey -in KEY -pubout)");
        return NULL;
    }
    BIO *in = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *pk = in != NULL ? PEM_read_bio_PUBKEY(in, NULL, NULL, NULL) : NULL;
    BIO_free(in);
    if (pk == NULL) {
        *r = kms_error_set_public(KMS_EINVAL, "is not a PEM public key");
        return NULL;
    }
    int ok = EVP_PKEY_get_base_id(pk) == EVP_PKEY_ED25519;
    if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_EC) {
        char group[64] = "";
        if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                           NULL) == 1)
            ok = strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0;
    }
    if (!ok) {
        EVP_PKEY_free(pk);
        *r =
            kms_error_set_public(KMS_EINVAL, "officer signing keys must be ECDSA P-256 or Ed25519");
        return NULL;
    }
    return pk;
}

int kms_signature_key_normalize(const char *pem, size_t len, char *out, size_t cap)
{
    int r = KMS_OK;
    EVP_PKEY *pk = load_public(pem, len, &r);
    if (pk == NULL)
        return r;
    BIO *mem = BIO_new(BIO_s_mem());
    char *data = NULL;
    long n = 0;
    if (mem == NULL || PEM_write_bio_PUBKEY(mem, pk) != 1 ||
        (n = BIO_get_mem_data(mem, &data)) <= 0 || (size_t)n >= cap) {
        r = kms_error_set_public(KMS_EINVAL, "cannot re-encode the public key (too large?)");
    } else {
        memcpy(out, data, (size_t)n);
        out[n] = '\0';
    }
    BIO_free(mem);
    EVP_PKEY_free(pk);
    return r;
}

int kms_signature_verify(const char *pem, const uint8_t digest[32], const uint8_t *sig,
                         size_t sig_len)
{
    int r = KMS_OK;
    if (sig == NULL || sig_len == 0 || sig_len > 256)
        return kms_error_set_public(KMS_EAUTH, "signature missing or too long");
    EVP_PKEY *pk = load_public(pem, strlen(pem), &r);
    if (pk == NULL)
        return r;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    const EVP_MD *h = EVP_PKEY_get_base_id(pk) == EVP_PKEY_ED25519 ? NULL : EVP_sha256();
    if (md == NULL || EVP_DigestVerifyInit(md, NULL, h, NULL, pk) != 1)
        r = kms_error_set(KMS_EINTERNAL, "signature check could not start");
    else if (EVP_DigestVerify(md, sig, sig_len, digest, 32) != 1)
        r = kms_error_set_public(KMS_EAUTH, "signature does not verify under the officer's key");
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pk);
    return r;
}
