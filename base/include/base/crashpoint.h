/* Crash points, for the crash tests only. `kmsd --test-crash-at NAME`
 * (setting test_crash_at, logged at start as test-only) makes the process
 * SIGKILL itself the first time it reaches the point NAME, as a power cut
 * would there, so a test can restart it and check the recovery from exactly
 * that point instead of hoping a random kill lands there. Unarmed, a point
 * costs one load and compare.
 *
 * The points (docs/officers.md, "Crash safety"):
 *   approval-committed      the approval reaching the threshold committed
 *                           (action EXECUTING), nothing executed yet
 *   execution-planned       the executor recorded its plan
 *   rotation-device-created a new version's key exists on the device, the
 *                           store does not know it yet
 *   execution-done          the change is made, the action not yet EXECUTED */
#ifndef KMS_CRASHPOINT_H
#define KMS_CRASHPOINT_H

/* Arms the point name (NULL or "" disarms). At start-up, before threads. */
void kms_crash_point_arm(const char *name);

/* Kills the process with SIGKILL if name is the armed point. */
void kms_crash_point(const char *name);

#endif
