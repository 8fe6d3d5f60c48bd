/* One writer per database file (contract: writer_lock.h). */
#include "kmsd/state/writer_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "base/log.h"

#define LOCK_PATH_MAX 4096

/* The pid text in the lock file (at most 20 digits), for the message;
 * "unknown" if it does not read as one. */
static void holder_pid(int fd, char *out, size_t cap)
{
    char buf[24];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    size_t len = 0;
    while (n > 0 && len < (size_t)n && buf[len] >= '0' && buf[len] <= '9')
        len++;
    if (n <= 0 || len == 0 || len > 20)
        snprintf(out, cap, "unknown");
    else
        snprintf(out, cap, "%.*s", (int)len, buf);
}

int kms_writer_lock_acquire(const char *db, int *fd)
{
    char path[LOCK_PATH_MAX];
    if (db == NULL || fd == NULL)
        return kms_error_set(KMS_EINVAL, "writer lock: no database");
    int n = snprintf(path, sizeof(path), "%s.lock", db);
    if (n < 0 || (size_t)n >= sizeof(path))
        return kms_error_set(KMS_EINVAL, "writer lock: database path too long");
    int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (f < 0)
        return kms_error_set(KMS_ESTORE, "cannot open the lock file %s: %s", path, strerror(errno));
    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char pid[24];
        holder_pid(f, pid, sizeof(pid));
        close(f);
        if (e == EWOULDBLOCK)
            return kms_error_set(KMS_EPRECOND,
                                 "database %s is in use by another kmsd (pid %s holds %s): one "
                                 "kmsd per database file",
                                 db, pid, path);
        return kms_error_set(KMS_ESTORE, "cannot lock %s: %s", path, strerror(e));
    }
    char text[24];
    int len = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
    if (ftruncate(f, 0) != 0 || pwrite(f, text, (size_t)len, 0) != len) {
        int e = errno;
        close(f);
        return kms_error_set(KMS_ESTORE, "cannot write the lock file %s: %s", path, strerror(e));
    }
    kms_log_debug("holding %s", path);
    *fd = f;
    return KMS_OK;
}

void kms_writer_lock_release(int fd)
{
    if (fd >= 0)
        close(fd);
}
