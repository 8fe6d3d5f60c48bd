/* The one file reader: a whole file, with a size cap, into plain memory or
 * into a kms_secret.
 *
 * A secret file (a private key, a PIN) is read only if it is a regular file
 * reached without following a symbolic link (O_NOFOLLOW on the last
 * component), its mode gives group and others nothing (0600 or stricter),
 * and it belongs to the effective user or to root. Anything else is
 * refused before a byte is read.
 *
 * Errors (each with a detail naming the path and the problem, never the
 * content): KMS_EINVAL cannot open or read, a symbolic link, not a regular
 * file, or a bad argument; KMS_EPRECOND a secret file open to group or
 * others, or owned by someone else; KMS_ETOOBIG more than max bytes;
 * KMS_ENOMEM out of (locked) memory. Out parameters are set only on
 * success. */
#ifndef KMS_BASE_FILE_H
#define KMS_BASE_FILE_H

#include <stddef.h>

#include "base/secret.h"
#include "kms/error.h"

/* Largest max for kms_file_read (plain memory). */
#define KMS_FILE_MAX (16u << 20)
/* Largest max for the secret readers (one byte more is read to tell a file
 * of exactly max bytes from a larger one, one more holds the NUL). */
#define KMS_FILE_SECRET_MAX (KMS_SECRET_MAX - 2)

/* Flags for kms_file_read. */
enum {
    KMS_FILE_REGULAR = 1u << 0 /* refuse anything but a regular file (no FIFO, no device) */
};

/* Reads all of path (at most max bytes, max <= KMS_FILE_MAX) into fresh
 * memory with a NUL after the last byte, so text can be used as a C
 * string. *out is freed with free(); *len is the byte count (0 for an
 * empty file). Without KMS_FILE_REGULAR a FIFO or /dev/stdin is read to
 * its end, as a shell's process substitution needs. */
int kms_file_read(const char *path, size_t max, unsigned flags, char **out,
                  size_t *len) KMS_MUST_CHECK;

/* Reads the secret file at path (the rules above) into a fresh kms_secret:
 * (*out)->len is the byte count (possibly 0) and (*out)->data[len] is a
 * NUL. max <= KMS_FILE_SECRET_MAX. Free with kms_secret_free (wipes). */
int kms_file_read_secret(const char *path, size_t max, kms_secret **out) KMS_MUST_CHECK;

/* Reads an already open descriptor (stdin, a file the caller opened) to
 * its end into fresh memory, as kms_file_read does, with no checks on what
 * it is. name is used in details only. The descriptor is not closed. */
int kms_file_read_fd(int fd, const char *name, size_t max, char **out, size_t *len) KMS_MUST_CHECK;

/* Reads an already open descriptor (stdin, a file the caller opened) to
 * its end into a fresh kms_secret, as kms_file_read_secret does, but with
 * no checks on what it is: for secret input that is not a secret file
 * (plaintext piped to a command). name is used in details only. The
 * descriptor is not closed. */
int kms_file_read_fd_secret(int fd, const char *name, size_t max, kms_secret **out) KMS_MUST_CHECK;

#endif
