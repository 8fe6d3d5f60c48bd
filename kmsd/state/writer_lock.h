/* One writer per database file: every kmsd command that opens the
 * database (run, init, seal-state) first takes an exclusive lock on
 * "<database>.lock" and holds it until it exits. A second kmsd on the same
 * file is refused, naming the holder's pid.
 *
 * Why: two processes on one file each keep their own caches (keys,
 * versions, policies, officers) that the other's changes never
 * invalidate; the worst case is a rotation in one computing a "next"
 * version the other already made, taking its live object for a crash
 * orphan and destroying it. Until a store built for several writers
 * exists, there is one.
 *
 * The lock is flock(2) on the lock file: the kernel drops it when the
 * process dies, however it dies (SIGKILL, a crash), so a stale file never
 * blocks a restart. The file holds the holder's pid as decimal text, for
 * the message only. Local filesystems only (as SQLite's WAL mode is). */
#ifndef KMS_WRITER_LOCK_H
#define KMS_WRITER_LOCK_H

#include "kms/error.h"

/* Takes the lock for database path db; *fd is the lock's descriptor (keep
 * it open for the process's life; kms_writer_lock_release closes it).
 * KMS_EPRECOND naming the lock file and the
 * holder's pid if another process holds it; KMS_ESTORE if the lock file
 * cannot be opened or written. */
int kms_writer_lock_acquire(const char *db, int *fd) KMS_MUST_CHECK;

/* Releases the lock (closes fd). A negative fd is a no-op. */
void kms_writer_lock_release(int fd);

#endif
