/* Quorum re-verification before execution (private to kmsd/quorum/).
 *
 * Reaching the EXECUTING state is not trusted to mean the threshold was
 * met: whoever can write the database can put any action in that state.
 * So every execution, the first and every resumption after a crash, first
 * checks again, from the stored bytes only:
 *
 *  - the action's digest, recomputed from its stored body, id, instance id
 *    and expiry, equals the stored digest;
 *  - a threshold row exists for its type now (a missing row refuses: never
 *    a default), and the threshold that applies is the higher of the one
 *    recorded at proposal and the current one;
 *  - at least that many approvals carry a signature that verifies over the
 *    digest under the signing key of an officer enrolled now, each from a
 *    distinct officer, made no earlier than that officer's current
 *    enrollment (its created_at): an officer removed and re-added is a new
 *    enrollment, and approvals from before it do not count, whatever key
 *    they were signed with.
 *
 * An action kmsd recorded itself (proposer KMS_SYSTEM_PROPOSER) is never
 * executed. */
#ifndef KMS_QUORUM_VERIFY_H
#define KMS_QUORUM_VERIFY_H

#include "kmsd/quorum/quorum_internal.h"

/* 0 if a may be executed; KMS_EDENIED naming the action and the check that
 * failed otherwise (logged as an error). A store failure passes through. */
int kms_quorum_verify_approvals(kms_quorum *q, const kms_action_rec *a) KMS_MUST_CHECK;

#endif
