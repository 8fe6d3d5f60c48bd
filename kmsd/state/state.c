/* The state-integrity key (contract: state.h). */
#include "kmsd/state/state.h"

#include <stdio.h>

#include "base/log.h"

/* Fixed probe input: a MAC over it proves the key is there, checked safe
 * by the backend, and usable. */
static const uint8_t probe[] = "kms state-integrity probe v1";

static int probe_mac(kms_backend *b)
{
    uint8_t mac[KMS_STATE_MAC_LEN];
    return b->ops->state_mac(b, probe, sizeof(probe) - 1, mac);
}

int kms_state_key_init(kms_keyring *kr, kms_store *store)
{
    kms_backend *b = kms_keyring_state_backend(kr);
    if (b == NULL) {
        kms_log_warn("state integrity unavailable: %s; the database's state is NOT "
                     "authenticated",
                     KMS_STATE_NO_BACKEND);
        return KMS_OK;
    }
    int r = b->ops->state_key_create(b);
    if (r == KMS_EEXISTS)
        kms_log_info("state integrity: the %s backend already holds a state-integrity key; "
                     "using it",
                     b->ops->name);
    else if (r != 0)
        return r;
    KMS_GUARD(probe_mac(b));
    KMS_GUARD(kms_state_attach(kr, store));
    /* The ceremony runs on a database without officers or keys: its only
     * row yet is the instance id made by the schema, sealed here with the
     * first digest. */
    int sealed = 0;
    KMS_GUARD(store->ops->state_sealed(store, &sealed));
    if (!sealed)
        KMS_GUARD(store->ops->state_seal_all(store));
    printf("state-integrity key on %s\n", b->ops->name);
    return KMS_OK;
}

int kms_state_key_seal(kms_keyring *kr, kms_store *store)
{
    kms_backend *b = kms_keyring_state_backend(kr);
    int sealed = 0;
    if (b == NULL)
        return kms_error_set(KMS_EPRECOND, "seal-state refused: %s", KMS_STATE_NO_BACKEND);
    KMS_GUARD(store->ops->state_sealed(store, &sealed));
    int r = b->ops->state_key_create(b);
    if (r == KMS_EEXISTS && sealed)
        return kms_error_set(KMS_EEXISTS,
                             "seal-state refused: the %s backend already holds a state-integrity "
                             "key and the state is sealed under it; the state is sealed once and "
                             "never again",
                             b->ops->name);
    /* A key made by an earlier build's `kmsd init`, before rows had MACs,
     * is adopted (after its safety check); a new key re-seals a database
     * whose key is gone. Either way: trust on first use. */
    if (r == KMS_EEXISTS)
        kms_log_info("seal-state: using the %s backend's existing state-integrity key",
                     b->ops->name);
    else if (r != 0)
        return r;
    KMS_GUARD(probe_mac(b));
    KMS_GUARD(kms_state_attach(kr, store));
    KMS_GUARD(store->ops->state_seal_all(store));
    kms_log_warn("state sealed by trust on first use: the database's contents are taken as "
                 "they are now");
    printf("state sealed under the state-integrity key on %s\n", b->ops->name);
    return KMS_OK;
}

int kms_state_key_check(kms_keyring *kr)
{
    kms_backend *b = kms_keyring_state_backend(kr);
    if (b == NULL)
        return kms_error_set(KMS_EPRECOND, "%s", KMS_STATE_NO_BACKEND);
    int r = probe_mac(b);
    if (r == KMS_ENOTFOUND)
        return kms_error_set(KMS_ENOTFOUND,
                             "the %s backend holds no state-integrity key: the database predates "
                             "it; run `kmsd seal-state` once",
                             b->ops->name);
    return r;
}
