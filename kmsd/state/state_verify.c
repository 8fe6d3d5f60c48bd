/* Attaching the state MAC to the store and verifying the whole state
 * (contract: state.h; the scheme: docs/storage.md, "State integrity").
 * Coded against the backend's state_mac op only.
 *
 * Row MACs are HMAC-SHA-256 under a subkey the backend derives once per
 * attach, state_mac("kms state subkey v1"), held in locked memory
 * (kms_secret) and wiped when the store closes. One device MAC per row
 * would cost a token round trip each: on SoftHSM2 with a few thousand
 * objects, tens of milliseconds, so a start-up verifying thousands of rows
 * would take minutes. Whoever can read kmsd's memory can forge with the
 * subkey: that is root on the host, out of scope (docs/design.md, (e)).
 * Whoever writes only the database cannot: the subkey never leaves kmsd
 * and its root never leaves the device. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>

#include "base/log.h"
#include "base/secret.h"
#include "kmsd/state/state.h"

#define SUBKEY_LABEL "kms state subkey v1"

struct mac_ctx {
    kms_secret *subkey; /* KMS_STATE_MAC_LEN bytes */
};

static int subkey_mac(void *ctx, const uint8_t *in, size_t len, uint8_t out[KMS_STATE_MAC_LEN])
{
    struct mac_ctx *c = ctx;
    unsigned n = 0;
    if (HMAC(EVP_sha256(), c->subkey->data, (int)c->subkey->len, in, len, out, &n) == NULL ||
        n != KMS_STATE_MAC_LEN)
        return kms_error_set(KMS_EINTERNAL, "state MAC: HMAC-SHA-256 failed");
    return KMS_OK;
}

static void mac_ctx_free(void *ctx)
{
    struct mac_ctx *c = ctx;
    if (c == NULL)
        return;
    kms_secret_free(c->subkey);
    free(c);
}

int kms_state_attach(kms_keyring *kr, kms_store *store)
{
    kms_backend *b = kms_keyring_state_backend(kr);
    struct mac_ctx *c = NULL;
    int r;
    if (b == NULL)
        return kms_error_set(KMS_EPRECOND, "%s", KMS_STATE_NO_BACKEND);
    if (store == NULL)
        return kms_error_set(KMS_EINVAL, "no store");
    if ((c = calloc(1, sizeof(*c))) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    if ((r = kms_secret_new(KMS_STATE_MAC_LEN, &c->subkey)) != 0 ||
        (r = b->ops->state_mac(b, (const uint8_t *)SUBKEY_LABEL, sizeof(SUBKEY_LABEL) - 1,
                               c->subkey->data)) != 0 ||
        (r = store->ops->state_attach(store, subkey_mac, c, mac_ctx_free)) != 0) {
        mac_ctx_free(c);
        return r;
    }
    return KMS_OK;
}

int kms_state_verify(kms_store *store, kms_state_report_fn report, void *ctx, size_t *failures,
                     uint64_t *generation)
{
    if (store == NULL || report == NULL || failures == NULL || generation == NULL)
        return kms_error_set(KMS_EINVAL, "state verify: missing argument");
    return store->ops->state_verify(store, report, ctx, failures, generation);
}
