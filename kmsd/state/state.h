/* The state-integrity key: a key held by a backend (never by kmsd) under
 * which kmsd authenticates the state it keeps in its database.
 *
 * The key lives on the first backend instance that can hold one
 * (KMS_BACKEND_CAP_STATE_MAC: a PKCS#11 generic-secret key, or on a TPM a
 * persistent keyed-hash object; docs/tpm2.md). Every configured backend
 * can hold one today; a backend that cannot (a test fake) is refused by the
 * commands below with KMS_EPRECOND saying so (docs/storage.md, "State
 * integrity"). */
#ifndef KMS_STATE_H
#define KMS_STATE_H

#include "kmsd/keyring/keyring.h"

/* The message every refusal on a kmsd without such a backend carries. */
#define KMS_STATE_NO_BACKEND                                                                       \
    "state integrity needs a backend that holds a state-integrity key: configure the pkcs11 or "   \
    "tpm2 section"

/* `kmsd init`: makes the state-integrity key, or adopts the one already on
 * the device (a ceremony run again on a fresh database after a failed
 * one), and checks it is safe by computing one MAC. A kmsd without a
 * backend that can hold one logs a warning that its state is not
 * authenticated and returns 0.
 * KMS_EKEYCHECK if the object on the device is not safe. */
int kms_state_key_init(kms_keyring *kr) KMS_MUST_CHECK;

/* `kmsd seal-state`: the one-time step that makes the state-integrity key
 * for a database initialised before kmsd had one (trust on first use: the
 * database's contents are taken as they are now). KMS_EPRECOND on a kmsd
 * without a backend that can hold the key; KMS_EEXISTS (saying so) if the
 * key is already there: the step is never run twice. */
int kms_state_key_seal(kms_keyring *kr) KMS_MUST_CHECK;

/* `kmsd run`: 0 if the key is there and safe; KMS_ENOTFOUND if the backend
 * could hold one but has none (the database predates it: run `kmsd
 * seal-state`); KMS_EPRECOND without such a backend; KMS_EKEYCHECK if the
 * object is unsafe; KMS_EUNAVAIL if the device does not answer. The detail
 * says which. */
int kms_state_key_check(kms_keyring *kr) KMS_MUST_CHECK;

#endif
