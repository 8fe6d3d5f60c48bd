/* TPM2 backend: one kms process per TPM. kms flushes every transient
 * object and session it finds when it connects, and keeps a resident key
 * loaded under a transient handle, so a second kms process on the same TPM
 * would break the first. Each opening of a TPM (kmsd run, init,
 * tpm2-provision) takes an exclusive flock(2) on
 *
 *   <lock dir>/kms-tpm2-<first 16 hex digits of SHA-256(TCTI string)>.lock
 *
 * and holds it until the device is closed; a second one fails at once,
 * naming the holder's pid. The lock dir is tpm2.lock_dir, else /run/lock,
 * else /tmp. The key is the TCTI string as configured: two spellings of one
 * device are two locks (docs/tpm2.md). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "kms/log.h"
#include "tpm2/tpm2_internal.h"

static const char *default_dir(void)
{
    struct stat st;
    return stat("/run/lock", &st) == 0 && S_ISDIR(st.st_mode) ? "/run/lock" : "/tmp";
}

static int lock_path(const char *dir, const char *tcti, char *out, size_t cap)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (EVP_Digest(tcti, strlen(tcti), md, &md_len, EVP_sha256(), NULL) != 1 || md_len < 8)
        return kms_error_set(KMS_EINTERNAL, "tpm2: cannot hash the TCTI string");
    char hex[17];
    for (int i = 0; i < 8; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    int n = snprintf(out, cap, "%s/kms-tpm2-%s.lock", dir, hex);
    if (n < 0 || (size_t)n >= cap)
        return kms_error_set(KMS_EINVAL, "tpm2: lock directory path too long");
    return KMS_OK;
}

int kms_tpm2_lock(const kms_tpm2_config *cfg, int *fd_out)
{
    char path[512];
    const char *dir = cfg->lock_dir != NULL && cfg->lock_dir[0] ? cfg->lock_dir : default_dir();
    KMS_GUARD(lock_path(dir, cfg->tcti, path, sizeof(path)));
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return kms_error_set(KMS_EUNAVAIL, "tpm2: cannot open the TPM lock %s: %s", path,
                             strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char pid[24] = "";
        ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        close(fd);
        if (e == EWOULDBLOCK)
            return kms_error_set(KMS_EPRECOND,
                                 "tpm2: the TPM at %s is in use by another kms process (pid %s, "
                                 "lock %s): one kms process per TPM",
                                 cfg->tcti, pid[0] ? pid : "?", path);
        return kms_error_set(KMS_EUNAVAIL, "tpm2: cannot lock %s: %s", path, strerror(e));
    }
    char pid[24];
    int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len)
        kms_log_warn("tpm2: could not record the pid in %s", path); /* the lock still holds */
    *fd_out = fd;
    return KMS_OK;
}

void kms_tpm2_unlock(int fd)
{
    if (fd >= 0)
        close(fd); /* releases the flock; the file stays for the next owner */
}
