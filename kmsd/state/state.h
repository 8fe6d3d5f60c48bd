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
#include "kmsd/store/store.h"

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
int kms_state_key_init(kms_keyring *kr, kms_store *store) KMS_MUST_CHECK;

/* `kmsd seal-state`: the one-time step for a database initialised before
 * kmsd authenticated its state (trust on first use: the database's
 * contents are taken as they are now). Makes the state-integrity key if the
 * backend has none, then MACs every row and writes the state digest.
 * KMS_EPRECOND on a kmsd without a backend that can hold the key;
 * KMS_EEXISTS (saying so) if the key is there and the state is sealed
 * already: the step is never run twice. (A key that is gone, a token
 * reset, makes a new one and seals the file again: trust on first use.) */
int kms_state_key_seal(kms_keyring *kr, kms_store *store) KMS_MUST_CHECK;

/* `kmsd run`: 0 if the key is there and safe; KMS_ENOTFOUND if the backend
 * could hold one but has none (the database predates it: run `kmsd
 * seal-state`); KMS_EPRECOND without such a backend; KMS_EKEYCHECK if the
 * object is unsafe; KMS_EUNAVAIL if the device does not answer. The detail
 * says which. */
int kms_state_key_check(kms_keyring *kr) KMS_MUST_CHECK;

/* Attaches the backend's state MAC to store (store.h, state_attach): from
 * now on every write MACs its rows and the state digest. KMS_EPRECOND
 * without a backend that holds a state-integrity key. */
int kms_state_attach(kms_keyring *kr, kms_store *store) KMS_MUST_CHECK;

/* One failed check: table, row (primary key) and check. */
typedef int (*kms_state_report_fn)(void *ctx, const char *table, const char *row,
                                   const char *check) KMS_MUST_CHECK;

/* Verifies the whole state of an attached store: every row MAC, the
 * digest's MAC and the digest against the rows. report gets each failure;
 * *failures how many; *generation the state generation. 0 when the checks
 * ran (whatever they found); a negative KMS_E* if they could not run. */
int kms_state_verify(kms_store *store, kms_state_report_fn report, void *ctx, size_t *failures,
                     uint64_t *generation) KMS_MUST_CHECK;

#endif
