/* The archive format: header, key derivation, one segment. The layout is
 * specified byte for byte in docs/archive-format.md; offsets below follow
 * its table. */
#include "archive_format.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#define OFF_LEN 5
#define OFF_SEGMENT 9
#define OFF_SALT 13
#define OFF_PREFIX 45
#define OFF_CTX_LEN 52
#define OFF_CTX 54
#define CTX_MAX_PAIRS 64
#define CTX_KEY_MAX 256
#define CTX_VALUE_MAX 1024

static const char kdf_info_tag[] = "kms archive v1";

int kms_archive_peek(const uint8_t *buf, size_t len, size_t *header_len)
{
    size_t m = len < 4 ? len : 4;
    if (memcmp(buf, KMS_ARCHIVE_MAGIC, m) != 0)
        return KMS_CLIENT_ENOTARCHIVE;
    if (len < 5)
        return KMS_CLIENT_ETRUNCATED;
    if (buf[4] != KMS_ARCHIVE_VERSION)
        return KMS_CLIENT_EVERSION;
    if (len < KMS_ARCHIVE_PEEK_LEN)
        return KMS_CLIENT_ETRUNCATED;
    uint32_t h = kms_archive_get32(buf + OFF_LEN);
    if (h < KMS_ARCHIVE_HEADER_FIXED + 4 + KMS_ARCHIVE_BLOB_MIN || h > KMS_ARCHIVE_HEADER_MAX)
        return KMS_CLIENT_ECORRUPT;
    *header_len = h;
    return 0;
}

/* Raw-byte order of two strings, a proper prefix first. */
static int bytes_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen;
}

int kms_archive_context_decode(const uint8_t *buf, size_t len, kms_client_context_entry **entries,
                               size_t *n_out)
{
    if (len < 4)
        return KMS_CLIENT_ECORRUPT;
    uint32_t n = kms_archive_get32(buf);
    if (n > CTX_MAX_PAIRS)
        return KMS_CLIENT_ECORRUPT;
    size_t off = 4;
    const uint8_t *prev = NULL;
    size_t prev_len = 0;
    for (uint32_t i = 0; i < n; i++) {
        for (int part = 0; part < 2; part++) {
            if (len - off < 4)
                return KMS_CLIENT_ECORRUPT;
            uint32_t l = kms_archive_get32(buf + off);
            off += 4;
            if (l > (part == 0 ? CTX_KEY_MAX : CTX_VALUE_MAX) || (part == 0 && l == 0) ||
                len - off < l || memchr(buf + off, 0, l) != NULL)
                return KMS_CLIENT_ECORRUPT;
            if (part == 0) {
                if (prev != NULL && bytes_cmp(prev, prev_len, buf + off, l) >= 0)
                    return KMS_CLIENT_ECORRUPT;
                prev = buf + off;
                prev_len = l;
            }
            off += l;
        }
    }
    if (off != len)
        return KMS_CLIENT_ECORRUPT;
    if (entries == NULL) {
        *n_out = n;
        return 0;
    }
    /* One allocation: the entries, then each string NUL-terminated. */
    size_t total = n * sizeof(kms_client_context_entry) + len + 2 * (size_t)n + 1;
    uint8_t *mem = malloc(total);
    if (mem == NULL)
        return KMS_CLIENT_ENOMEM;
    kms_client_context_entry *e = (kms_client_context_entry *)mem;
    char *s = (char *)(mem + n * sizeof(kms_client_context_entry));
    off = 4;
    for (uint32_t i = 0; i < n; i++) {
        for (int part = 0; part < 2; part++) {
            uint32_t l = kms_archive_get32(buf + off);
            off += 4;
            memcpy(s, buf + off, l);
            s[l] = '\0';
            if (part == 0)
                e[i].key = s;
            else
                e[i].value = s;
            s += l + 1;
            off += l;
        }
    }
    *entries = e;
    *n_out = n;
    return 0;
}

static int entry_cmp(const void *a, const void *b)
{
    const kms_client_context_entry *x = a, *y = b;
    return bytes_cmp((const uint8_t *)x->key, strlen(x->key), (const uint8_t *)y->key,
                     strlen(y->key));
}

int kms_archive_context_encode(const kms_client_context_entry *ctx, size_t n, uint8_t **out,
                               size_t *out_len)
{
    if (n > CTX_MAX_PAIRS || (n > 0 && ctx == NULL))
        return KMS_CLIENT_EARG;
    kms_client_context_entry sorted[CTX_MAX_PAIRS];
    size_t len = 4;
    for (size_t i = 0; i < n; i++) {
        if (ctx[i].key == NULL || ctx[i].value == NULL)
            return KMS_CLIENT_EARG;
        size_t kl = strlen(ctx[i].key), vl = strlen(ctx[i].value);
        if (kl == 0 || kl > CTX_KEY_MAX || vl > CTX_VALUE_MAX)
            return KMS_CLIENT_EARG;
        sorted[i] = ctx[i];
        len += 8 + kl + vl;
    }
    if (len > KMS_ARCHIVE_CONTEXT_MAX)
        return KMS_CLIENT_EARG;
    if (n > 1)
        qsort(sorted, n, sizeof(sorted[0]), entry_cmp);
    for (size_t i = 1; i < n; i++)
        if (strcmp(sorted[i - 1].key, sorted[i].key) == 0)
            return KMS_CLIENT_EARG;
    uint8_t *buf = malloc(len);
    if (buf == NULL)
        return KMS_CLIENT_ENOMEM;
    kms_archive_put32(buf, (uint32_t)n);
    size_t off = 4;
    for (size_t i = 0; i < n; i++) {
        const char *parts[2] = {sorted[i].key, sorted[i].value};
        for (int p = 0; p < 2; p++) {
            size_t l = strlen(parts[p]);
            kms_archive_put32(buf + off, (uint32_t)l);
            memcpy(buf + off + 4, parts[p], l);
            off += 4 + l;
        }
    }
    *out = buf;
    *out_len = len;
    return 0;
}

int kms_archive_header_parse(const uint8_t *buf, size_t len, kms_archive_header *h)
{
    size_t hl;
    int r = kms_archive_peek(buf, len, &hl);
    if (r != 0)
        return r;
    if (len < hl)
        return KMS_CLIENT_ETRUNCATED;
    if (len != hl)
        return KMS_CLIENT_ECORRUPT;
    kms_archive_header v;
    memset(&v, 0, sizeof(v));
    v.version = buf[4];
    v.header_len = (uint32_t)hl;
    v.segment_size = kms_archive_get32(buf + OFF_SEGMENT);
    if (v.segment_size < KMS_ARCHIVE_SEGMENT_MIN || v.segment_size > KMS_ARCHIVE_SEGMENT_MAX)
        return KMS_CLIENT_ECORRUPT;
    v.salt = buf + OFF_SALT;
    v.prefix = buf + OFF_PREFIX;
    v.context_len = (size_t)buf[OFF_CTX_LEN] << 8 | buf[OFF_CTX_LEN + 1];
    /* Fixed part + context must fit before the name and blob lengths. */
    if (hl < KMS_ARCHIVE_HEADER_FIXED + v.context_len)
        return KMS_CLIENT_ECORRUPT;
    v.context = buf + OFF_CTX;
    r = kms_archive_context_decode(v.context, v.context_len, NULL, &(size_t){0});
    if (r != 0)
        return r;
    size_t off = OFF_CTX + v.context_len;
    v.bound = buf;
    v.bound_len = off;
    v.commitment = buf + off;
    off += KMS_ARCHIVE_COMMIT_LEN;
    v.mac = buf + off;
    off += KMS_ARCHIVE_MAC_LEN;
    v.key_name_len = buf[off++];
    if (hl - off < v.key_name_len + 2)
        return KMS_CLIENT_ECORRUPT;
    v.key_name = buf + off;
    if (memchr(v.key_name, 0, v.key_name_len) != NULL)
        return KMS_CLIENT_ECORRUPT;
    off += v.key_name_len;
    v.blob_len = (size_t)buf[off] << 8 | buf[off + 1];
    off += 2;
    if (v.blob_len < KMS_ARCHIVE_BLOB_MIN || v.blob_len > KMS_ARCHIVE_BLOB_MAX ||
        hl - off != v.blob_len)
        return KMS_CLIENT_ECORRUPT;
    v.blob = buf + off;
    *h = v;
    return 0;
}

/* okm = HKDF-SHA-256(dk, salt, "kms archive v1" || bound with the length
 * field zeroed). */
static int derive(const uint8_t *bound, size_t bound_len, const uint8_t *salt, const kms_secret *dk,
                  kms_secret **keys)
{
    if (dk == NULL || dk->len != KMS_ARCHIVE_DATA_KEY_LEN)
        return KMS_CLIENT_EARG;
    size_t info_len = sizeof(kdf_info_tag) - 1 + bound_len;
    uint8_t *info = malloc(info_len);
    if (info == NULL)
        return KMS_CLIENT_ENOMEM;
    memcpy(info, kdf_info_tag, sizeof(kdf_info_tag) - 1);
    memcpy(info + sizeof(kdf_info_tag) - 1, bound, bound_len);
    memset(info + sizeof(kdf_info_tag) - 1 + OFF_LEN, 0, 4);

    int r = KMS_CLIENT_ENOMEM;
    kms_secret *okm = NULL;
    if (kms_secret_new(KMS_ARCHIVE_OKM_LEN, &okm) != 0)
        goto out;
    if ((r = kms_archive_hkdf(dk->data, dk->len, salt, KMS_ARCHIVE_SALT_LEN, info, info_len,
                              okm->data, okm->len)) != 0)
        goto out;
    *keys = okm;
    okm = NULL;
out:
    kms_secret_free(okm);
    free(info);
    return r;
}

int kms_archive_hkdf(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
                     const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len)
{
    static const uint8_t empty[1];
    int r = KMS_CLIENT_ENOMEM;
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    if (kctx == NULL)
        goto out;
    /* OpenSSL takes an empty salt as "no salt": RFC 5869 then uses
     * HashLen zero bytes, the same value. */
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikm_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)(salt_len ? salt : empty),
                                          salt_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)(info_len ? info : empty),
                                          info_len),
        OSSL_PARAM_construct_end()};
    if (EVP_KDF_derive(kctx, out, out_len, params) == 1)
        r = 0;
out:
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    return r;
}

/* HMAC-SHA-256(mac key, bound with the length field zeroed || commitment). */
static int header_mac(const kms_secret *keys, const uint8_t *bound, size_t bound_len,
                      const uint8_t *commitment, uint8_t mac[KMS_ARCHIVE_MAC_LEN])
{
    static const uint8_t zero[4];
    int r = KMS_CLIENT_ENOMEM;
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = m ? EVP_MAC_CTX_new(m) : NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end()};
    size_t out_len = 0;
    if (ctx == NULL || EVP_MAC_init(ctx, keys->data + 2 * 32, 32, params) != 1 ||
        EVP_MAC_update(ctx, bound, OFF_LEN) != 1 || EVP_MAC_update(ctx, zero, 4) != 1 ||
        EVP_MAC_update(ctx, bound + OFF_LEN + 4, bound_len - OFF_LEN - 4) != 1 ||
        EVP_MAC_update(ctx, commitment, KMS_ARCHIVE_COMMIT_LEN) != 1 ||
        EVP_MAC_final(ctx, mac, &out_len, KMS_ARCHIVE_MAC_LEN) != 1 ||
        out_len != KMS_ARCHIVE_MAC_LEN)
        goto out;
    r = 0;
out:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(m);
    return r;
}

int kms_archive_keys_check(const kms_archive_header *h, const kms_secret *dk, kms_secret **keys)
{
    kms_secret *okm = NULL;
    uint8_t mac[KMS_ARCHIVE_MAC_LEN];
    int r = derive(h->bound, h->bound_len, h->salt, dk, &okm);
    if (r != 0)
        return r;
    if (CRYPTO_memcmp(okm->data + 32, h->commitment, KMS_ARCHIVE_COMMIT_LEN) != 0) {
        r = KMS_CLIENT_ECORRUPT;
        goto out;
    }
    r = header_mac(okm, h->bound, h->bound_len, h->commitment, mac);
    if (r != 0)
        goto out;
    if (CRYPTO_memcmp(mac, h->mac, KMS_ARCHIVE_MAC_LEN) != 0) {
        r = KMS_CLIENT_ECORRUPT;
        goto out;
    }
    *keys = okm;
    okm = NULL;
out:
    kms_secret_free(okm);
    return r;
}

/* Writes the key name length, name, blob length and blob at p. */
static void put_wrapped(uint8_t *p, const char *key_name, size_t name_len, const uint8_t *blob,
                        size_t blob_len)
{
    p[0] = (uint8_t)name_len;
    memcpy(p + 1, key_name, name_len);
    p += 1 + name_len;
    p[0] = (uint8_t)(blob_len >> 8);
    p[1] = (uint8_t)blob_len;
    memcpy(p + 2, blob, blob_len);
}

int kms_archive_header_build(uint32_t segment_size, const uint8_t salt[KMS_ARCHIVE_SALT_LEN],
                             const uint8_t prefix[KMS_ARCHIVE_PREFIX_LEN], const uint8_t *context,
                             size_t context_len, const char *key_name, const uint8_t *blob,
                             size_t blob_len, const kms_secret *dk, uint8_t **out, size_t *out_len,
                             kms_secret **keys_out)
{
    size_t name_len = key_name ? strlen(key_name) : 0;
    if (segment_size < KMS_ARCHIVE_SEGMENT_MIN || segment_size > KMS_ARCHIVE_SEGMENT_MAX ||
        context_len > KMS_ARCHIVE_CONTEXT_MAX || name_len > KMS_ARCHIVE_NAME_MAX ||
        blob_len < KMS_ARCHIVE_BLOB_MIN || blob_len > KMS_ARCHIVE_BLOB_MAX)
        return KMS_CLIENT_EARG;
    size_t hl = KMS_ARCHIVE_HEADER_FIXED + context_len + name_len + blob_len;
    uint8_t *buf = malloc(hl);
    if (buf == NULL)
        return KMS_CLIENT_ENOMEM;
    memcpy(buf, KMS_ARCHIVE_MAGIC, 4);
    buf[4] = KMS_ARCHIVE_VERSION;
    kms_archive_put32(buf + OFF_LEN, (uint32_t)hl);
    kms_archive_put32(buf + OFF_SEGMENT, segment_size);
    memcpy(buf + OFF_SALT, salt, KMS_ARCHIVE_SALT_LEN);
    memcpy(buf + OFF_PREFIX, prefix, KMS_ARCHIVE_PREFIX_LEN);
    buf[OFF_CTX_LEN] = (uint8_t)(context_len >> 8);
    buf[OFF_CTX_LEN + 1] = (uint8_t)context_len;
    memcpy(buf + OFF_CTX, context, context_len);
    size_t bound_len = OFF_CTX + context_len;

    kms_secret *keys = NULL;
    int r = derive(buf, bound_len, salt, dk, &keys);
    if (r != 0)
        goto out;
    memcpy(buf + bound_len, keys->data + 32, KMS_ARCHIVE_COMMIT_LEN);
    r = header_mac(keys, buf, bound_len, buf + bound_len, buf + bound_len + KMS_ARCHIVE_COMMIT_LEN);
    if (r != 0)
        goto out;
    put_wrapped(buf + bound_len + KMS_ARCHIVE_COMMIT_LEN + KMS_ARCHIVE_MAC_LEN, key_name, name_len,
                blob, blob_len);
    *out = buf;
    *out_len = hl;
    *keys_out = keys;
    buf = NULL;
    keys = NULL;
out:
    kms_secret_free(keys);
    free(buf);
    return r;
}

int kms_archive_header_rewrap(const kms_archive_header *h, const char *key_name,
                              const uint8_t *blob, size_t blob_len, uint8_t **out, size_t *out_len)
{
    size_t name_len = key_name ? strlen(key_name) : 0;
    if (name_len > KMS_ARCHIVE_NAME_MAX || blob_len < KMS_ARCHIVE_BLOB_MIN ||
        blob_len > KMS_ARCHIVE_BLOB_MAX)
        return KMS_CLIENT_EARG;
    size_t keep = h->bound_len + KMS_ARCHIVE_COMMIT_LEN + KMS_ARCHIVE_MAC_LEN;
    size_t hl = keep + 3 + name_len + blob_len;
    uint8_t *buf = malloc(hl);
    if (buf == NULL)
        return KMS_CLIENT_ENOMEM;
    memcpy(buf, h->bound, keep);
    kms_archive_put32(buf + OFF_LEN, (uint32_t)hl);
    put_wrapped(buf + keep, key_name, name_len, blob, blob_len);
    *out = buf;
    *out_len = hl;
    return 0;
}

int kms_archive_cipher_init(kms_archive_cipher *c, const EVP_CIPHER *aes_gcm, const uint8_t key[32],
                            int encrypt)
{
    c->encrypt = encrypt;
    c->ctx = EVP_CIPHER_CTX_new();
    if (c->ctx == NULL)
        return KMS_CLIENT_ENOMEM;
    /* The key schedule is expanded once; each segment only sets its IV. */
    if (EVP_CipherInit_ex2(c->ctx, aes_gcm, key, NULL, encrypt, NULL) != 1) {
        kms_archive_cipher_free(c);
        return KMS_CLIENT_ENOMEM;
    }
    return 0;
}

void kms_archive_cipher_free(kms_archive_cipher *c)
{
    EVP_CIPHER_CTX_free(c->ctx); /* cleanses the key schedule */
    c->ctx = NULL;
}

static void nonce(uint8_t n[KMS_ARCHIVE_NONCE_LEN], const uint8_t *prefix, uint32_t index, int last)
{
    memcpy(n, prefix, KMS_ARCHIVE_PREFIX_LEN);
    kms_archive_put32(n + KMS_ARCHIVE_PREFIX_LEN, index);
    n[11] = last ? 1 : 0;
}

/* EVP_*Update takes an int length; segments are at most 8 MiB. */
int kms_archive_seal(kms_archive_cipher *c, const uint8_t prefix[KMS_ARCHIVE_PREFIX_LEN],
                     uint32_t index, int last, const uint8_t *in, size_t n, uint8_t *out)
{
    uint8_t iv[KMS_ARCHIVE_NONCE_LEN];
    int len = 0, fin = 0;
    nonce(iv, prefix, index, last);
    if (n > KMS_ARCHIVE_SEGMENT_MAX || EVP_CipherInit_ex2(c->ctx, NULL, NULL, iv, 1, NULL) != 1 ||
        (n > 0 && EVP_EncryptUpdate(c->ctx, out, &len, in, (int)n) != 1) ||
        EVP_EncryptFinal_ex(c->ctx, out + len, &fin) != 1 || (size_t)(len + fin) != n ||
        EVP_CIPHER_CTX_ctrl(c->ctx, EVP_CTRL_GCM_GET_TAG, KMS_ARCHIVE_TAG_LEN, out + n) != 1)
        return KMS_CLIENT_ENOMEM;
    return 0;
}

int kms_archive_open(kms_archive_cipher *c, const uint8_t prefix[KMS_ARCHIVE_PREFIX_LEN],
                     uint32_t index, int last, const uint8_t *in, size_t n, uint8_t *out)
{
    uint8_t iv[KMS_ARCHIVE_NONCE_LEN];
    int len = 0, fin = 0;
    if (n < KMS_ARCHIVE_TAG_LEN || n - KMS_ARCHIVE_TAG_LEN > KMS_ARCHIVE_SEGMENT_MAX)
        return KMS_CLIENT_ECORRUPT;
    size_t pt = n - KMS_ARCHIVE_TAG_LEN;
    nonce(iv, prefix, index, last);
    if (EVP_CipherInit_ex2(c->ctx, NULL, NULL, iv, 0, NULL) != 1)
        return KMS_CLIENT_ENOMEM;
    if ((pt > 0 && EVP_DecryptUpdate(c->ctx, out, &len, in, (int)pt) != 1) ||
        EVP_CIPHER_CTX_ctrl(c->ctx, EVP_CTRL_GCM_SET_TAG, KMS_ARCHIVE_TAG_LEN, (void *)(in + pt)) !=
            1 ||
        EVP_DecryptFinal_ex(c->ctx, out + len, &fin) != 1 || (size_t)(len + fin) != pt) {
        /* Nothing unauthenticated survives. */
        if (pt > 0)
            OPENSSL_cleanse(out, pt);
        return KMS_CLIENT_ECORRUPT;
    }
    return 0;
}
