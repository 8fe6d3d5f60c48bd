/* The one file reader (file.h). */
#include "base/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

/* Reads fd to its end or until cap bytes are in buf; *used is the count. */
static int read_to_end(int fd, const char *name, uint8_t *buf, size_t cap, size_t *used)
{
    char msg[128];
    size_t n = 0;
    while (n < cap) {
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return kms_error_set(KMS_EINVAL, "cannot read %s: %s", name,
                                 strerror_r(errno, msg, sizeof(msg)));
        if (got == 0)
            break;
        n += (size_t)got;
    }
    *used = n;
    return KMS_OK;
}

/* Where the bytes go: a kms_secret (secret) or plain heap memory. */
struct sink {
    int secret;
    kms_secret *s;
    uint8_t *p;
};

static int sink_new(struct sink *k, size_t n)
{
    if (k->secret)
        return kms_secret_new(n, &k->s);
    if ((k->p = calloc(1, n)) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    return KMS_OK;
}

static uint8_t *sink_data(const struct sink *k)
{
    return k->secret ? k->s->data : k->p;
}

static void sink_free(struct sink *k, size_t n)
{
    if (k->secret) {
        kms_secret_free(k->s);
    } else if (k->p != NULL) {
        OPENSSL_cleanse(k->p, n);
        free(k->p);
    }
    k->s = NULL;
    k->p = NULL;
}

/* Reads fd into k. A regular file's size (expect >= 0) bounds the buffer;
 * one byte more is read so growth or an oversized stream is noticed. */
static int read_into(int fd, const char *name, long long expect, size_t max, struct sink *k,
                     size_t *len)
{
    if (expect > (long long)max)
        return kms_error_set(KMS_ETOOBIG, "%s is larger than %zu bytes", name, max);
    size_t want = expect >= 0 ? (size_t)expect : max;
    size_t cap = want + 1, used = 0; /* +1 to see more than expected */
    int r;
    KMS_GUARD(sink_new(k, cap + 1)); /* +1 for the NUL */
    if ((r = read_to_end(fd, name, sink_data(k), cap, &used)) != 0)
        goto fail;
    if (used > max) {
        r = kms_error_set(KMS_ETOOBIG, "%s is larger than %zu bytes", name, max);
        goto fail;
    }
    if (expect >= 0 && used != want) {
        r = kms_error_set(KMS_EINVAL, "%s changed while it was read", name);
        goto fail;
    }
    sink_data(k)[used] = '\0';
    if (k->secret)
        kms_secret_truncate(k->s, used); /* data[used] stays 0: it was */
    *len = used;
    return KMS_OK;
fail:
    sink_free(k, cap + 1);
    return r;
}

/* Opens path and applies the checks; *size is the regular file's size, or
 * -1 for anything else. */
static int open_checked(const char *path, int regular, int secret, int *fd_out, long long *size)
{
    char msg[128];
    struct stat st;
    /* O_NONBLOCK: opening a FIFO that is about to be refused must not hang. */
    int flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | (secret ? O_NOFOLLOW : 0) |
                (regular || secret ? O_NONBLOCK : 0);
    int fd = open(path, flags);
    if (fd < 0) {
        if (secret && errno == ELOOP)
            return kms_error_set(KMS_EINVAL, "%s is a symbolic link; a secret file must not be",
                                 path);
        return kms_error_set(KMS_EINVAL, "cannot open %s: %s", path,
                             strerror_r(errno, msg, sizeof(msg)));
    }
    int r = KMS_OK;
    if (fstat(fd, &st) != 0) {
        r = kms_error_set(KMS_EINVAL, "cannot stat %s: %s", path,
                          strerror_r(errno, msg, sizeof(msg)));
    } else if ((regular || secret) && !S_ISREG(st.st_mode)) {
        r = kms_error_set(KMS_EINVAL, "%s is not a regular file", path);
    } else if (secret && st.st_uid != geteuid() && st.st_uid != 0) {
        r = kms_error_set(KMS_EPRECOND, "%s belongs to uid %u, not to this user (uid %u) or root",
                          path, (unsigned)st.st_uid, (unsigned)geteuid());
    } else if (secret && (st.st_mode & 077) != 0) {
        r = kms_error_set(KMS_EPRECOND, "%s is %s by others (mode %03o); chmod 600 it", path,
                          (st.st_mode & 044) != 0 ? "readable" : "writable",
                          (unsigned)(st.st_mode & 0777));
    }
    if (r != 0) {
        close(fd);
        return r;
    }
    if ((regular || secret) && fcntl(fd, F_SETFL, 0) != 0) { /* blocking reads again */
        close(fd);
        return kms_error_set(KMS_EINVAL, "cannot read %s: %s", path,
                             strerror_r(errno, msg, sizeof(msg)));
    }
    *size = S_ISREG(st.st_mode) ? (long long)st.st_size : -1;
    *fd_out = fd;
    return KMS_OK;
}

int kms_file_read(const char *path, size_t max, unsigned flags, char **out, size_t *len)
{
    struct sink k = {.secret = 0};
    long long size;
    size_t n = 0;
    int fd, r;
    if (path == NULL || out == NULL || len == NULL || max > KMS_FILE_MAX ||
        (flags & ~(unsigned)KMS_FILE_REGULAR) != 0)
        return kms_error_set(KMS_EINVAL, "file: bad arguments");
    KMS_GUARD(open_checked(path, (flags & KMS_FILE_REGULAR) != 0, 0, &fd, &size));
    r = read_into(fd, path, size, max, &k, &n);
    close(fd);
    if (r != 0)
        return r;
    *out = (char *)k.p;
    *len = n;
    return KMS_OK;
}

int kms_file_read_secret(const char *path, size_t max, kms_secret **out)
{
    struct sink k = {.secret = 1};
    long long size;
    size_t n = 0;
    int fd, r;
    if (path == NULL || out == NULL || max > KMS_FILE_SECRET_MAX)
        return kms_error_set(KMS_EINVAL, "file: bad arguments");
    KMS_GUARD(open_checked(path, 1, 1, &fd, &size));
    r = read_into(fd, path, size, max, &k, &n);
    close(fd);
    if (r != 0)
        return r;
    *out = k.s;
    return KMS_OK;
}

int kms_file_read_fd(int fd, const char *name, size_t max, char **out, size_t *len)
{
    struct sink k = {.secret = 0};
    size_t n = 0;
    if (fd < 0 || name == NULL || out == NULL || len == NULL || max > KMS_FILE_MAX)
        return kms_error_set(KMS_EINVAL, "file: bad arguments");
    KMS_GUARD(read_into(fd, name, -1, max, &k, &n));
    *out = (char *)k.p;
    *len = n;
    return KMS_OK;
}

int kms_file_read_fd_secret(int fd, const char *name, size_t max, kms_secret **out)
{
    struct sink k = {.secret = 1};
    size_t n = 0;
    if (fd < 0 || name == NULL || out == NULL || max > KMS_FILE_SECRET_MAX)
        return kms_error_set(KMS_EINVAL, "file: bad arguments");
    KMS_GUARD(read_into(fd, name, -1, max, &k, &n));
    *out = k.s;
    return KMS_OK;
}
