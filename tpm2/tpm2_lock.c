/* TPM2 backend: one kms process per TPM. kms flushes every transient
 * object and session it finds when it connects, and keeps a resident key
 * loaded under a transient handle, so a second kms process on the same TPM
 * would break the first. Each opening of a TPM (kmsd run, init,
 * tpm2-provision) takes an exclusive flock(2) on
 *
 *   <lock dir>/kms-tpm2-<first 16 hex digits of SHA-256(TCTI string)>.lock
 *
 * and holds it until the device is closed; a second one fails at once,
 * naming the holder's pid. The lock dir is tpm2.lock_dir, else /run/kms.
 * The key is the TCTI string made canonical (kms_tpm2_lock_key), so that
 * the usual spellings of one TPM share one lock.
 *
 * The directory must be kmsd's own: a directory (not a symlink) owned by
 * kmsd's effective user with no access for group or others (0700). In a
 * world-writable /tmp or /run/lock another local user could create the lock
 * file first and hold it (kmsd would never start), or make it a link. A
 * missing directory is created 0700; the lock file is opened relative to
 * the checked directory, without following links, and must be a regular
 * file of kmsd's user. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "base/log.h"
#include "tpm2_internal.h"

/* Opens dir (creating it 0700 if absent) and checks it is kmsd's own;
 * returns its fd or a negative KMS_E* with the detail set. */
static int open_lock_dir(const char *dir)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return kms_error_set(KMS_EUNAVAIL,
                             "tpm2: cannot create the TPM lock directory %s: %s (create it, owned "
                             "by kmsd's user with mode 0700, or set tpm2.lock_dir)",
                             dir, strerror(errno));
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return kms_error_set(
            errno == ENOTDIR || errno == ELOOP ? KMS_EPRECOND : KMS_EUNAVAIL,
            "tpm2: cannot open the TPM lock directory %s: %s%s", dir, strerror(errno),
            errno == ENOTDIR || errno == ELOOP ? " (a symlink or not a directory)" : "");
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return kms_error_set(KMS_EUNAVAIL, "tpm2: cannot stat %s: %s", dir, strerror(e));
    }
    const char *why = NULL;
    if (st.st_uid != geteuid())
        why = "is not owned by kmsd's user";
    else if ((st.st_mode & 077) != 0)
        why = "is open to group or others (want mode 0700)";
    if (why != NULL) {
        close(fd);
        return kms_error_set(KMS_EPRECOND,
                             "tpm2: the TPM lock directory %s %s: another local user could hold "
                             "or replace the lock",
                             dir, why);
    }
    return fd;
}

/* "device:PATH": the character device, /dev/tpmrmN (the kernel's resource
 * manager) and /dev/tpmN being one chip; an empty path is the TSS default,
 * /dev/tpm0. */
static int device_key(const char *conf, char *out, size_t cap)
{
    char real[PATH_MAX];
    const char *path = conf[0] ? conf : "/dev/tpm0";
    if (realpath(path, real) != NULL)
        path = real;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    int dir_len = (int)(base - path);
    if (strncmp(base, "tpmrm", 5) == 0 && base[5] != '\0')
        return snprintf(out, cap, "device:%.*stpm%s", dir_len, path, base + 5);
    return snprintf(out, cap, "device:%s", path);
}

/* "swtpm:host=H,port=P" (and mssim, the same protocol): the address and
 * port, with the TSS defaults (localhost, 2321); every loopback address is
 * one. Host names other than localhost are compared as names (lowercase).
 * Anything it does not understand stays as written. */
static int simulator_key(const char *conf, char *out, size_t cap)
{
    char host[256] = "localhost", buf[512];
    long port = 2321;
    if (strlen(conf) >= sizeof(buf))
        return -1;
    snprintf(buf, sizeof(buf), "%s", conf);
    for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv != NULL;
         kv = strtok_r(NULL, ",", &save)) {
        char *end = NULL;
        if (strncmp(kv, "host=", 5) == 0 && kv[5] != '\0' && strlen(kv + 5) < sizeof(host)) {
            snprintf(host, sizeof(host), "%s", kv + 5);
            continue;
        }
        if (strncmp(kv, "port=", 5) == 0) {
            port = strtol(kv + 5, &end, 10);
            if (port > 0 && port < 65536 && end != kv + 5 && *end == '\0')
                continue;
        }
        return -1;
    }
    for (char *c = host; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    /* Numeric addresses are read; names are not looked up (no DNS at
     * start-up), except localhost. */
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST}, *ai = NULL;
    char addr[INET6_ADDRSTRLEN] = "";
    if (strcmp(host, "localhost") == 0 || strcmp(host, "localhost.localdomain") == 0 ||
        strcmp(host, "ip6-localhost") == 0)
        snprintf(addr, sizeof(addr), "loopback");
    else if (getaddrinfo(host, NULL, &hints, &ai) == 0 && ai != NULL) {
        if (ai->ai_family == AF_INET) {
            const struct in_addr *a = &((const struct sockaddr_in *)ai->ai_addr)->sin_addr;
            if ((ntohl(a->s_addr) >> 24) == 127)
                snprintf(addr, sizeof(addr), "loopback");
            else
                inet_ntop(AF_INET, a, addr, sizeof(addr));
        } else if (ai->ai_family == AF_INET6) {
            const struct in6_addr *a = &((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
            if (IN6_IS_ADDR_LOOPBACK(a))
                snprintf(addr, sizeof(addr), "loopback");
            else
                inet_ntop(AF_INET6, a, addr, sizeof(addr));
        }
    }
    if (ai != NULL)
        freeaddrinfo(ai);
    return snprintf(out, cap, "simulator:%s:%ld", addr[0] ? addr : host, port);
}

int kms_tpm2_lock_key(const char *tcti, char *out, size_t cap)
{
    const char *colon = strchr(tcti, ':');
    size_t name_len = colon ? (size_t)(colon - tcti) : strlen(tcti);
    const char *conf = colon ? colon + 1 : "";
    int n = -1;
    if (name_len == 6 && strncmp(tcti, "device", 6) == 0)
        n = device_key(conf, out, cap);
    else if ((name_len == 5 && strncmp(tcti, "swtpm", 5) == 0) ||
             (name_len == 5 && strncmp(tcti, "mssim", 5) == 0))
        n = simulator_key(conf, out, cap);
    else if (name_len == 6 && strncmp(tcti, "tabrmd", 6) == 0 && conf[0] == '\0')
        n = snprintf(out, cap, "tabrmd");
    if (n < 0)
        n = snprintf(out, cap, "%s", tcti);
    if (n < 0 || (size_t)n >= cap)
        return kms_error_set(KMS_EINVAL, "tpm2: TCTI string too long");
    return KMS_OK;
}

/* The lock file's name in its directory, "kms-tpm2-<hex>.lock". */
static int lock_name(const char *tcti, char *out, size_t cap)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    char key[1024];
    KMS_GUARD(kms_tpm2_lock_key(tcti, key, sizeof(key)));
    if (EVP_Digest(key, strlen(key), md, &md_len, EVP_sha256(), NULL) != 1 || md_len < 8)
        return kms_error_set(KMS_EINTERNAL, "tpm2: cannot hash the TCTI string");
    char hex[17];
    for (int i = 0; i < 8; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    int n = snprintf(out, cap, "kms-tpm2-%s.lock", hex);
    if (n < 0 || (size_t)n >= cap)
        return kms_error_set(KMS_EINVAL, "tpm2: lock name too long");
    return KMS_OK;
}

int kms_tpm2_lock(const kms_tpm2_config *cfg, int *fd_out)
{
    char name[64], path[PATH_MAX + 64];
    const char *dir =
        cfg->lock_dir != NULL && cfg->lock_dir[0] ? cfg->lock_dir : KMS_TPM2_DEFAULT_LOCK_DIR;
    KMS_GUARD(lock_name(cfg->tcti, name, sizeof(name)));
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int dfd = open_lock_dir(dir);
    if (dfd < 0)
        return dfd;
    int fd = openat(dfd, name, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    int open_errno = errno;
    close(dfd);
    if (fd < 0)
        return kms_error_set(open_errno == ELOOP ? KMS_EPRECOND : KMS_EUNAVAIL,
                             "tpm2: cannot open the TPM lock %s: %s", path, strerror(open_errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
        close(fd);
        return kms_error_set(KMS_EPRECOND,
                             "tpm2: the TPM lock %s is not a regular file of kmsd's user", path);
    }
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
