/* `kmsd init`: the key ceremony.
 *
 * On a fresh database (no officers, no keys) it registers the first
 * officers, the approval threshold of every quorum action type, and the
 * keys to create now with their policies, from the configuration's init
 * section (or the equivalent command-line flags). Every later change to any
 * of these is a quorum action (docs/officers.md).
 *
 * Everything is checked before anything is written: at least two officers;
 * distinct ids and identities; signing keys that are ECDSA P-256 or Ed25519
 * public keys; every threshold >= 2 (a threshold of 1 would let one officer
 * act alone and is refused) and no larger than the number of officers; key
 * names valid and distinct; no officer identity in any key policy
 * (separation of duties). */
#ifndef KMS_CEREMONY_H
#define KMS_CEREMONY_H

#include "kmsd/config.h"
#include "kmsd/keyring/keyring.h"
#include "kmsd/store/store.h"

/* Runs the ceremony against an open store and a keyring with the backend
 * `backend` registered. KMS_EINVAL (with a detail naming the problem) for a
 * bad init section, KMS_EEXISTS if the database is already initialised;
 * otherwise the first store or backend failure. Prints a summary to
 * stdout. A failure after the first write leaves a partly initialised
 * database: remove the file and run again (kmsd init refuses to run twice). */
int kms_ceremony_run(const kms_config *cfg, kms_store *store, kms_keyring *kr,
                     const char *backend) KMS_MUST_CHECK;

/* Reads a PEM public key file and returns its normalized PEM (out, cap
 * bytes, NUL-terminated). KMS_EINVAL unless it is an ECDSA P-256 or
 * Ed25519 public key; a private key is refused. */
int kms_ceremony_read_signing_key(const char *path, char *out, size_t cap) KMS_MUST_CHECK;

#endif
