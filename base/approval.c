/* The approval digest (approval.h). */
#include "base/approval.h"

#include <string.h>

#include <openssl/sha.h>

#include "base/buf.h"

#define APPROVAL_MSG_LEN                                                                           \
    (sizeof(KMS_APPROVAL_TAG) + KMS_APPROVAL_INSTANCE_ID_LEN + KMS_APPROVAL_ACTION_ID_LEN +        \
     SHA256_DIGEST_LENGTH + 8)

_Static_assert(APPROVAL_MSG_LEN == 88, "docs/approvals.md: 88 bytes are hashed");

int kms_approval_digest(const uint8_t instance_id[KMS_APPROVAL_INSTANCE_ID_LEN],
                        const uint8_t action_id[KMS_APPROVAL_ACTION_ID_LEN],
                        const uint8_t *action_bytes, size_t len, int64_t expires_at,
                        uint8_t out[KMS_APPROVAL_DIGEST_LEN])
{
    uint8_t msg[APPROVAL_MSG_LEN], d[KMS_APPROVAL_DIGEST_LEN];
    uint8_t *body_hash = NULL;
    kms_buf_writer w;

    if (instance_id == NULL || action_id == NULL || out == NULL || (action_bytes == NULL && len))
        return kms_error_set(KMS_EINVAL, "approval digest: missing input");
    kms_buf_writer_init(&w, msg, sizeof(msg));
    if (kms_buf_put_bytes(&w, KMS_APPROVAL_TAG, sizeof(KMS_APPROVAL_TAG)) != 0 ||
        kms_buf_put_bytes(&w, instance_id, KMS_APPROVAL_INSTANCE_ID_LEN) != 0 ||
        kms_buf_put_bytes(&w, action_id, KMS_APPROVAL_ACTION_ID_LEN) != 0 ||
        kms_buf_reserve(&w, SHA256_DIGEST_LENGTH, &body_hash) != 0 ||
        kms_buf_put_u64be(&w, (uint64_t)expires_at) != 0 || w.len != sizeof(msg))
        return kms_error_set(KMS_EINTERNAL, "approval digest: message layout");
    /* SHA256 of zero bytes still wants a valid pointer. */
    static const uint8_t nothing = 0;
    if (SHA256(len ? action_bytes : &nothing, len, body_hash) == NULL ||
        SHA256(msg, sizeof(msg), d) == NULL)
        return kms_error_set(KMS_EINTERNAL, "approval digest: SHA-256 failed");
    memcpy(out, d, sizeof(d));
    return KMS_OK;
}
