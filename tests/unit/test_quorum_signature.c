/* Officer signatures (kmsd/quorum/signature.h): ECDSA P-256 (DER, SHA-256
 * over the digest) and Ed25519 (pure) verify; everything else is refused:
 * another key, a flipped bit in the signature or the digest, a truncated,
 * empty, over-long or garbage signature, and keys of other types. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "kmsd/quorum/signature.h"

struct signer {
    EVP_PKEY *key;
    char pem[2048]; /* its public key */
};

static void signer_new(struct signer *s, const char *alg, const char *param)
{
    s->key = param ? EVP_PKEY_Q_keygen(NULL, NULL, alg, param) : EVP_PKEY_Q_keygen(NULL, NULL, alg);
    assert_non_null(s->key);
    BIO *mem = BIO_new(BIO_s_mem());
    char *data = NULL;
    assert_int_equal(PEM_write_bio_PUBKEY(mem, s->key), 1);
    long n = BIO_get_mem_data(mem, &data);
    assert_true(n > 0 && (size_t)n < sizeof(s->pem));
    memcpy(s->pem, data, (size_t)n);
    s->pem[n] = '\0';
    BIO_free(mem);
}

static void signer_free(struct signer *s)
{
    EVP_PKEY_free(s->key);
}

/* Signs digest as an officer's tool does; returns the signature length. */
static size_t sign(const struct signer *s, const uint8_t digest[32], uint8_t *sig, size_t cap)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int id = EVP_PKEY_get_base_id(s->key);
    const EVP_MD *h = id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448 ? NULL : EVP_sha256();
    size_t len = cap;
    assert_int_equal(EVP_DigestSignInit(md, NULL, h, NULL, s->key), 1);
    assert_int_equal(EVP_DigestSign(md, sig, &len, digest, 32), 1);
    EVP_MD_CTX_free(md);
    return len;
}

static void check_kind(const char *alg, const char *param)
{
    struct signer s, other;
    uint8_t digest[32], sig[256], bad[256];
    signer_new(&s, alg, param);
    signer_new(&other, alg, param);
    assert_int_equal(RAND_bytes(digest, sizeof(digest)), 1);
    size_t n = sign(&s, digest, sig, sizeof(sig));

    assert_int_equal(kms_signature_verify(s.pem, digest, sig, n), KMS_OK);
    /* Another key of the same kind. */
    assert_int_equal(kms_signature_verify(other.pem, digest, sig, n), KMS_EAUTH);
    /* Every bit of the signature matters. */
    for (size_t i = 0; i < n; i++) {
        memcpy(bad, sig, n);
        bad[i] ^= (uint8_t)(1u << (i % 8));
        assert_int_equal(kms_signature_verify(s.pem, digest, bad, n), KMS_EAUTH);
    }
    /* Another digest (one bit). */
    uint8_t d2[32];
    memcpy(d2, digest, 32);
    d2[31] ^= 1;
    assert_int_equal(kms_signature_verify(s.pem, d2, sig, n), KMS_EAUTH);
    /* Truncated, extended, empty, over-long, garbage. */
    assert_int_equal(kms_signature_verify(s.pem, digest, sig, n - 1), KMS_EAUTH);
    memcpy(bad, sig, n);
    bad[n] = 0;
    assert_int_equal(kms_signature_verify(s.pem, digest, bad, n + 1), KMS_EAUTH);
    assert_int_equal(kms_signature_verify(s.pem, digest, sig, 0), KMS_EAUTH);
    assert_int_equal(kms_signature_verify(s.pem, digest, NULL, n), KMS_EAUTH);
    static uint8_t huge[257];
    assert_int_equal(kms_signature_verify(s.pem, digest, huge, sizeof(huge)), KMS_EAUTH);
    assert_int_equal(RAND_bytes(bad, (int)n), 1);
    assert_int_equal(kms_signature_verify(s.pem, digest, bad, n), KMS_EAUTH);
    signer_free(&s);
    signer_free(&other);
}

static void p256_verifies(void **state)
{
    (void)state;
    check_kind("EC", "P-256");
}

static void ed25519_verifies(void **state)
{
    (void)state;
    check_kind("ED25519", NULL);
}

/* A signature of one kind under a key of the other kind. */
static void kinds_do_not_mix(void **state)
{
    (void)state;
    struct signer ec, ed;
    uint8_t digest[32] = {1}, sig[256];
    signer_new(&ec, "EC", "P-256");
    signer_new(&ed, "ED25519", NULL);
    size_t n = sign(&ec, digest, sig, sizeof(sig));
    assert_int_equal(kms_signature_verify(ed.pem, digest, sig, n), KMS_EAUTH);
    n = sign(&ed, digest, sig, sizeof(sig));
    assert_int_equal(kms_signature_verify(ec.pem, digest, sig, n), KMS_EAUTH);
    signer_free(&ec);
    signer_free(&ed);
}

/* Keys kmsd does not accept for officers: refused before any signature
 * check (KMS_EINVAL), even with a signature that is valid under them. */
static void unsupported_keys(void **state)
{
    (void)state;
    uint8_t digest[32] = {2}, sig[512];
    char out[2048];
    const char *kinds[][2] = {{"EC", "P-384"}, {"RSA", NULL}, {"ED448", NULL}};
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        struct signer s;
        if (strcmp(kinds[i][0], "RSA") == 0) {
            s.key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
            assert_non_null(s.key);
            BIO *mem = BIO_new(BIO_s_mem());
            char *data = NULL;
            assert_int_equal(PEM_write_bio_PUBKEY(mem, s.key), 1);
            long n = BIO_get_mem_data(mem, &data);
            memcpy(s.pem, data, (size_t)n);
            s.pem[n] = '\0';
            BIO_free(mem);
        } else {
            signer_new(&s, kinds[i][0], kinds[i][1]);
        }
        size_t n = sign(&s, digest, sig, sizeof(sig));
        assert_int_equal(kms_signature_verify(s.pem, digest, sig, n), KMS_EINVAL);
        assert_int_equal(kms_signature_key_normalize(s.pem, strlen(s.pem), out, sizeof(out)),
                         KMS_EINVAL);
        signer_free(&s);
    }
    /* A private key given by mistake, and what is no key at all. */
    struct signer s;
    signer_new(&s, "EC", "P-256");
    BIO *mem = BIO_new(BIO_s_mem());
    char *data = NULL;
    assert_int_equal(PEM_write_bio_PrivateKey(mem, s.key, NULL, NULL, 0, NULL, NULL), 1);
    long len = BIO_get_mem_data(mem, &data);
    assert_int_equal(kms_signature_key_normalize(data, (size_t)len, out, sizeof(out)), KMS_EINVAL);
    BIO_free(mem);
    signer_free(&s);
    assert_int_equal(kms_signature_key_normalize("garbage", 7, out, sizeof(out)), KMS_EINVAL);
    assert_int_equal(kms_signature_key_normalize("", 0, out, sizeof(out)), KMS_EINVAL);
    assert_int_equal(kms_signature_verify("garbage", digest, sig, 64), KMS_EINVAL);
}

/* normalize gives the SPKI PEM that verifies; a buffer too small is an
 * error, never a truncated key. */
static void normalize(void **state)
{
    (void)state;
    struct signer s;
    char out[2048], tiny[32];
    uint8_t digest[32] = {3}, sig[256];
    signer_new(&s, "ED25519", NULL);
    /* Leading text and no trailing NUL in the input are fine. */
    char in[2200];
    int n = snprintf(in, sizeof(in), "officer key\n%s", s.pem);
    assert_int_equal(kms_signature_key_normalize(in, (size_t)n, out, sizeof(out)), KMS_OK);
    assert_string_equal(out, s.pem);
    size_t len = sign(&s, digest, sig, sizeof(sig));
    assert_int_equal(kms_signature_verify(out, digest, sig, len), KMS_OK);
    assert_int_equal(kms_signature_key_normalize(s.pem, strlen(s.pem), tiny, sizeof(tiny)),
                     KMS_EINVAL);
    signer_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(p256_verifies),    cmocka_unit_test(ed25519_verifies),
        cmocka_unit_test(kinds_do_not_mix), cmocka_unit_test(unsupported_keys),
        cmocka_unit_test(normalize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
