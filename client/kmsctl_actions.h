/* kmsctl's quorum action table: one row per action `kmsctl propose`
 * knows, with its command-line name, the ActionBody case it builds, the
 * flags it requires, how it fills the message from the flags and how it
 * prints the decoded canonical action. The usage text, the required-flag
 * checks and `show-action` all derive from the rows; kmsd's table
 * (kmsd/quorum/quorum_actions.c) has the matching server row. */
#ifndef KMSCTL_ACTIONS_H
#define KMSCTL_ACTIONS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kms/error.h"
#include "kms/v1/kms.pb-c.h"
#include "kmsctl.h"

#define KMSCTL_POLICY_IDS_MAX 256 /* identities per policy list */

/* The flags of `propose` (borrowed from argv; NULL or 0: not given). */
typedef struct kmsctl_proposal {
    char *key, *backend, *mode, *id, *identity, *pub, *action, *state;
    char *ids[3][KMSCTL_POLICY_IDS_MAX]; /* --encrypt, --decrypt, --reencrypt */
    size_t n[3];
    long version, days, rotation_days, threshold;
} kmsctl_proposal;

/* Flags a row may require (checked in this order). */
enum {
    KMSCTL_NEEDS_KEY = 1u << 0,
    KMSCTL_NEEDS_STATE = 1u << 1,
    KMSCTL_NEEDS_ID = 1u << 2,
    KMSCTL_NEEDS_IDENTITY = 1u << 3,
    KMSCTL_NEEDS_PUB = 1u << 4,
    KMSCTL_NEEDS_ACTION = 1u << 5,
};

/* Storage for the messages one body points to while it is packed. */
typedef struct kmsctl_body kmsctl_body;

typedef struct kmsctl_action {
    const char *name;     /* "rotate-key" */
    const char *synopsis; /* its flags, for --help */
    Kms__V1__ActionBody__ActionCase action_case;
    unsigned needs; /* KMSCTL_NEEDS_* */
    /* Sets the row's member of body->b from p; 0 or an exit code (with the
     * message printed). */
    int (*fill)(kmsctl *k, const kmsctl_proposal *p, kmsctl_body *body) KMS_MUST_CHECK;
    /* Prints the fields of the row's member of b. */
    void (*print)(kmsctl_out *o, const Kms__V1__ActionBody *b);
} kmsctl_action;

extern const kmsctl_action kmsctl_actions[];
extern const size_t kmsctl_n_actions;

/* The row named name, or NULL. */
const kmsctl_action *kmsctl_action_by_name(const char *name);

/* Checks the row's required flags, fills the body and packs it into
 * *bytes (malloc'd, *len bytes). 0 or an exit code (message printed). */
int kmsctl_action_build(kmsctl *k, const kmsctl_action *a, const kmsctl_proposal *p,
                        uint8_t **bytes, size_t *len) KMS_MUST_CHECK;

/* Prints "type" and every field of the decoded canonical action b. */
void kmsctl_action_print(kmsctl_out *o, const Kms__V1__ActionBody *b);

/* The oneof member's message name ("RotateKey"), or "Unknown". */
const char *kmsctl_action_type(const Kms__V1__ActionBody *b);

/* "create-key, rotate-key, ...": every row's name, for the usage text. */
void kmsctl_action_names(char *out, size_t cap);

/* One line per row ("  name synopsis"), indented under `propose` in
 * --help. */
void kmsctl_action_usage(FILE *f);

#endif
