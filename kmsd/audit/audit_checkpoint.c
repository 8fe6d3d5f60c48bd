/* Signed checkpoints: the signed message, DER signatures, public keys
 * (contract in audit_checkpoint.h, format in docs/audit.md). */
#include "kmsd/audit/audit_checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#define MESSAGE_MAX 256

static int sha256(const void *in, size_t len, uint8_t out[KMS_AUDIT_DIGEST_LEN])
{
    unsigned n = 0;
    if (EVP_Digest(in, len, out, &n, EVP_sha256(), NULL) != 1 || n != KMS_AUDIT_DIGEST_LEN)
        return kms_error_set(KMS_EINTERNAL, "audit: SHA-256 failed");
    return KMS_OK;
}

int kms_audit_log_id(const uint8_t pub[KMS_AUDIT_PUB_LEN], char out[KMS_AUDIT_LOG_ID_HEX + 1])
{
    uint8_t md[KMS_AUDIT_DIGEST_LEN];
    KMS_GUARD(sha256(pub, KMS_AUDIT_PUB_LEN, md));
    kms_audit_hex(md, KMS_AUDIT_LOG_ID_HEX / 2, out);
    return KMS_OK;
}

int kms_audit_checkpoint_message(const kms_audit_rec *rec, const char *log_id, char *out,
                                 size_t cap, size_t *len)
{
    char chain[2 * KMS_AUDIT_HASH_LEN + 1], t[KMS_AUDIT_TIME_TEXT_LEN + 1];
    kms_audit_hex(rec->prev, KMS_AUDIT_HASH_LEN, chain);
    if (kms_audit_time_text(rec->time_us, t) != 0)
        return kms_error_set(KMS_EINVAL, "audit: checkpoint time out of range");
    int n =
        snprintf(out, cap, "kms-audit-checkpoint-v1 log=%s seq=%llu chain=%s time=%s instance=%s\n",
                 log_id, (unsigned long long)rec->seq, chain, t, rec->instance);
    if (n <= 0 || (size_t)n >= cap)
        return kms_error_set(KMS_ETOOBIG, "audit: checkpoint message too long");
    *len = (size_t)n;
    return KMS_OK;
}

/* r ‖ s to DER (SEQUENCE of two INTEGERs). */
static int raw_to_der(const uint8_t raw[KMS_AUDIT_SIG_LEN], uint8_t *der, size_t *der_len)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, KMS_AUDIT_SIG_LEN / 2, NULL);
    BIGNUM *s = BN_bin2bn(raw + KMS_AUDIT_SIG_LEN / 2, KMS_AUDIT_SIG_LEN / 2, NULL);
    int n = -1;
    if (sig != NULL && r != NULL && s != NULL && ECDSA_SIG_set0(sig, r, s) == 1) {
        r = s = NULL; /* owned by sig */
        if (i2d_ECDSA_SIG(sig, NULL) <= KMS_AUDIT_SIG_DER_MAX) {
            uint8_t *p = der;
            n = i2d_ECDSA_SIG(sig, &p);
        }
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    if (n <= 0)
        return kms_error_set(KMS_EINTERNAL, "audit: cannot encode the signature");
    *der_len = (size_t)n;
    return KMS_OK;
}

int kms_audit_checkpoint_sign(const kms_audit_rec *rec, const char *log_id, kms_audit_sign_fn sign,
                              void *ctx, char *detail, size_t cap)
{
    char msg[MESSAGE_MAX];
    size_t len = 0, der_len = 0;
    uint8_t md[KMS_AUDIT_DIGEST_LEN], raw[KMS_AUDIT_SIG_LEN], der[KMS_AUDIT_SIG_DER_MAX];
    char hex[2 * KMS_AUDIT_SIG_DER_MAX + 1];
    KMS_GUARD(kms_audit_checkpoint_message(rec, log_id, msg, sizeof(msg), &len));
    KMS_GUARD(sha256(msg, len, md));
    KMS_GUARD(sign(ctx, md, raw));
    KMS_GUARD(raw_to_der(raw, der, &der_len));
    kms_audit_hex(der, der_len, hex);
    int n = snprintf(detail, cap, "log=%s sig=%s", log_id, hex);
    if (n <= 0 || (size_t)n >= cap)
        return kms_error_set(KMS_ETOOBIG, "audit: checkpoint detail too long");
    return KMS_OK;
}

/* The EVP_PKEY of a P-256 point. */
static EVP_PKEY *pkey_of(const uint8_t pub[KMS_AUDIT_PUB_LEN])
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (bld != NULL && ctx != NULL &&
        OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) == 1 &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, KMS_AUDIT_PUB_LEN) ==
            1 &&
        (params = OSSL_PARAM_BLD_to_param(bld)) != NULL && EVP_PKEY_fromdata_init(ctx) == 1 &&
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pkey = NULL;
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    return pkey;
}

/* 0 if der is a valid signature of md under pub, else KMS_EAUTH. */
static int verify_der(const uint8_t pub[KMS_AUDIT_PUB_LEN], const uint8_t md[KMS_AUDIT_DIGEST_LEN],
                      const uint8_t *der, size_t der_len)
{
    EVP_PKEY *pkey = pkey_of(pub);
    EVP_PKEY_CTX *ctx = pkey != NULL ? EVP_PKEY_CTX_new(pkey, NULL) : NULL;
    int ok = ctx != NULL && EVP_PKEY_verify_init(ctx) == 1 &&
             EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1 &&
             EVP_PKEY_verify(ctx, der, der_len, md, KMS_AUDIT_DIGEST_LEN) == 1;
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    if (pkey == NULL)
        return kms_error_set(KMS_EINVAL, "audit: not a P-256 public key");
    return ok ? KMS_OK : KMS_EAUTH;
}

int kms_audit_sig_check(const uint8_t pub[KMS_AUDIT_PUB_LEN],
                        const uint8_t digest[KMS_AUDIT_DIGEST_LEN],
                        const uint8_t sig[KMS_AUDIT_SIG_LEN])
{
    uint8_t der[KMS_AUDIT_SIG_DER_MAX];
    size_t der_len = 0;
    KMS_GUARD(raw_to_der(sig, der, &der_len));
    int r = verify_der(pub, digest, der, der_len);
    if (r == KMS_EAUTH)
        return kms_error_set(KMS_EAUTH, "audit: the signature does not verify");
    return r;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int all_empty(const kms_audit_rec *r)
{
    return r->identity[0] == '\0' && r->peer[0] == '\0' && r->method[0] == '\0' &&
           r->key[0] == '\0' && r->action[0] == '\0' && r->context_hmac[0] == '\0' &&
           r->error[0] == '\0' && r->version == 0 && r->status == 0 && r->duration_us == 0;
}

int kms_audit_checkpoint_verify(const kms_audit_parsed *p, const uint8_t pub[KMS_AUDIT_PUB_LEN])
{
    char want_id[KMS_AUDIT_LOG_ID_HEX + 1], msg[MESSAGE_MAX];
    uint8_t md[KMS_AUDIT_DIGEST_LEN], der[KMS_AUDIT_SIG_DER_MAX];
    size_t len = 0;
    const char *d = p->rec.detail;

    if (strcmp(p->rec.type, KMS_AUDIT_CHECKPOINT_TYPE) != 0 || !all_empty(&p->rec))
        return kms_error_set(KMS_EAUTH, "not a well-formed checkpoint record");
    /* "log=" 32 hex " sig=" hex of 8..72 bytes, nothing else */
    size_t dl = strlen(d), hex_len = dl - (4 + KMS_AUDIT_LOG_ID_HEX + 5);
    if (dl < 4 + KMS_AUDIT_LOG_ID_HEX + 5 || strncmp(d, "log=", 4) != 0 ||
        strncmp(d + 4 + KMS_AUDIT_LOG_ID_HEX, " sig=", 5) != 0 || hex_len % 2 != 0 ||
        hex_len < 16 || hex_len > 2 * KMS_AUDIT_SIG_DER_MAX)
        return kms_error_set(KMS_EAUTH, "checkpoint detail is not \"log=ID sig=HEX\"");
    for (size_t i = 0; i < KMS_AUDIT_LOG_ID_HEX; i++)
        if (hexval(d[4 + i]) < 0)
            return kms_error_set(KMS_EAUTH, "checkpoint log id is not lowercase hex");
    const char *sig = d + 4 + KMS_AUDIT_LOG_ID_HEX + 5;
    for (size_t i = 0; i < hex_len / 2; i++) {
        int hi = hexval(sig[2 * i]), lo = hexval(sig[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return kms_error_set(KMS_EAUTH, "checkpoint signature is not lowercase hex");
        der[i] = (uint8_t)(hi << 4 | lo);
    }
    KMS_GUARD(kms_audit_log_id(pub, want_id));
    char log_id[KMS_AUDIT_LOG_ID_HEX + 1];
    memcpy(log_id, d + 4, KMS_AUDIT_LOG_ID_HEX);
    log_id[KMS_AUDIT_LOG_ID_HEX] = '\0';
    if (strcmp(log_id, want_id) != 0)
        return kms_error_set(KMS_EAUTH, "checkpoint names log %s, the key given is log %s", log_id,
                             want_id);
    KMS_GUARD(kms_audit_checkpoint_message(&p->rec, log_id, msg, sizeof(msg), &len));
    KMS_GUARD(sha256(msg, len, md));
    int r = verify_der(pub, md, der, hex_len / 2);
    if (r == KMS_EAUTH)
        return kms_error_set(KMS_EAUTH, "checkpoint signature does not verify");
    return r;
}

int kms_audit_pub_to_pem(const uint8_t pub[KMS_AUDIT_PUB_LEN], char **pem)
{
    EVP_PKEY *pkey = pkey_of(pub);
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL, *out = NULL;
    long n = 0;
    if (pkey != NULL && bio != NULL && PEM_write_bio_PUBKEY(bio, pkey) == 1 &&
        (n = BIO_get_mem_data(bio, &data)) > 0 && (out = malloc((size_t)n + 1)) != NULL) {
        memcpy(out, data, (size_t)n);
        out[n] = '\0';
    }
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    if (out == NULL)
        return kms_error_set(pkey == NULL ? KMS_EINVAL : KMS_ENOMEM,
                             "audit: cannot write the public key as PEM");
    *pem = out;
    return KMS_OK;
}

int kms_audit_pub_from_pem(const char *pem, size_t len, uint8_t pub[KMS_AUDIT_PUB_LEN])
{
    char group[32];
    uint8_t point[KMS_AUDIT_PUB_LEN + 1];
    size_t glen = 0, plen = 0;
    BIO *bio = len <= INT32_MAX ? BIO_new_mem_buf(pem, (int)len) : NULL;
    EVP_PKEY *pkey = bio != NULL ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    int ok = pkey != NULL && EVP_PKEY_is_a(pkey, "EC") &&
             EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                            &glen) == 1 &&
             strcmp(group, "prime256v1") == 0 &&
             EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point,
                                             sizeof(point), &plen) == 1 &&
             plen == KMS_AUDIT_PUB_LEN && point[0] == 0x04;
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    if (!ok)
        return kms_error_set(KMS_EINVAL, "not an EC P-256 public key in PEM");
    memcpy(pub, point, KMS_AUDIT_PUB_LEN);
    return KMS_OK;
}
