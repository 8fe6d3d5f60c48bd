/* The backend kinds kmsd can open, from one table (kmsd/backends.c): the
 * configuration names PKCS#11, TPM2 or both, and kmsd opens exactly those.
 * The opened instances (one per backend mode) go to the keyring, which owns
 * them from then on (kms_keyring_adopt_backend). */
#ifndef KMS_KMSD_BACKENDS_H
#define KMS_KMSD_BACKENDS_H

#include <stddef.h>

#include "kms/backend.h"
#include "kmsd/config.h"

/* At most this many instances over all kinds (PKCS#11: 1, TPM2: 2). */
#define KMS_BACKENDS_MAX 4

/* 1 if the configuration names at least one backend. */
int kms_backends_configured(const kms_config *cfg) KMS_MUST_CHECK;

/* Opens every backend the configuration names, in table order (PKCS#11
 * first, so it stays where `kmsd init` creates keys when both are set),
 * and checks each answers. init: also makes what a new deployment needs
 * (the TPM's storage primary). out[0..*n) receives the instances; the
 * caller closes them (or hands them to the keyring). On failure nothing is
 * left open and *n is 0. KMS_EINVAL if the configuration names none. */
int kms_backends_open(const kms_config *cfg, int init, kms_backend *out[KMS_BACKENDS_MAX],
                      size_t *n) KMS_MUST_CHECK;

/* `kmsd <kind>-provision`: the one-time set-up of backend `kind` for an
 * existing database. KMS_EINVAL if that kind has no such step or is not
 * configured. */
int kms_backends_provision(const kms_config *cfg, const char *kind) KMS_MUST_CHECK;

#endif
