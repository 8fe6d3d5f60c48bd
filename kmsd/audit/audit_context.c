/* The audit record's context MAC (audit_context.h). */
#include "kmsd/audit/audit_context.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "kmsd/audit/audit_record.h"
#include "kmsd/keyring/context.h"

int kms_audit_context_mac_bytes(const uint8_t *key, size_t key_len, const uint8_t *enc, size_t len,
                                uint8_t mac[KMS_AUDIT_CONTEXT_MAC_LEN])
{
    uint8_t out[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (HMAC(EVP_sha256(), key, (int)key_len, enc, len, out, &n) == NULL ||
        n != KMS_AUDIT_CONTEXT_MAC_LEN)
        return kms_error_set(KMS_EINTERNAL, "audit: HMAC-SHA-256 failed");
    memcpy(mac, out, KMS_AUDIT_CONTEXT_MAC_LEN);
    return KMS_OK;
}

int kms_audit_context_mac_hex(const uint8_t *key, size_t key_len,
                              const kms_audit_context_pair *pairs, size_t n,
                              char hex[2 * KMS_AUDIT_CONTEXT_MAC_LEN + 1])
{
    kms_context_pair p[KMS_CONTEXT_MAX_PAIRS];
    uint8_t mac[KMS_AUDIT_CONTEXT_MAC_LEN];
    size_t len = 0;
    int r;
    if (n > KMS_CONTEXT_MAX_PAIRS)
        return kms_error_set(KMS_EINVAL, "context has more than %d pairs", KMS_CONTEXT_MAX_PAIRS);
    for (size_t i = 0; i < n; i++)
        p[i] = (kms_context_pair){pairs[i].key, strlen(pairs[i].key), pairs[i].value,
                                  strlen(pairs[i].value)};
    kms_context ctx = {p, n};
    uint8_t *enc = malloc(KMS_CONTEXT_MAX_ENCODED);
    if (enc == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    if ((r = kms_context_encode(&ctx, enc, KMS_CONTEXT_MAX_ENCODED, &len)) == 0 &&
        (r = kms_audit_context_mac_bytes(key, key_len, enc, len, mac)) == 0)
        kms_audit_hex(mac, sizeof(mac), hex);
    OPENSSL_cleanse(enc, KMS_CONTEXT_MAX_ENCODED);
    free(enc);
    OPENSSL_cleanse(mac, sizeof(mac));
    return r;
}
