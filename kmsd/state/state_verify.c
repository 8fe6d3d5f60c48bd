/* Attaching the backend's state MAC to the store and verifying the whole
 * state (contract: state.h; the scheme: docs/storage.md, "State
 * integrity"). Coded against the backend's state_mac op only. */
#include "kmsd/state/state.h"

#include "base/log.h"

static int backend_mac(void *ctx, const uint8_t *in, size_t len, uint8_t out[KMS_STATE_MAC_LEN])
{
    kms_backend *b = ctx;
    if (len > KMS_STATE_MAC_INPUT_MAX)
        return kms_error_set(KMS_ETOOBIG, "state MAC input of %zu bytes", len);
    return b->ops->state_mac(b, in, len, out);
}

int kms_state_attach(kms_keyring *kr, kms_store *store)
{
    kms_backend *b = kms_keyring_state_backend(kr);
    if (b == NULL)
        return kms_error_set(KMS_EPRECOND, "%s", KMS_STATE_NO_BACKEND);
    if (store == NULL)
        return kms_error_set(KMS_EINVAL, "no store");
    return store->ops->state_attach(store, backend_mac, b);
}

int kms_state_verify(kms_store *store, kms_state_report_fn report, void *ctx, size_t *failures,
                     uint64_t *generation)
{
    if (store == NULL || report == NULL || failures == NULL || generation == NULL)
        return kms_error_set(KMS_EINVAL, "state verify: missing argument");
    return store->ops->state_verify(store, report, ctx, failures, generation);
}
