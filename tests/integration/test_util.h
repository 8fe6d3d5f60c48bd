/* Small helpers shared by the tests (unit and integration): temp dirs that
 * honour $TMPDIR, paths, reading and writing files, and "name: value"
 * fields of a command's text output. Every helper fails the running test
 * (cmocka) on an error it cannot report, so callers need no checks. */
#ifndef KMS_TEST_UTIL_H
#define KMS_TEST_UTIL_H

#include <stddef.h>
#include <sys/types.h>

/* Makes a fresh private dir "$TMPDIR/<prefix>-XXXXXX" ($TMPDIR unset or
 * empty: /tmp) into out (cap bytes) and returns out. */
char *kms_test_tmpdir(const char *prefix, char *out, size_t cap);

/* Removes dir and everything below it (no symlinks followed). Missing is
 * fine. */
void kms_test_rmtree(const char *dir);

/* "dir/name" into out; the test fails if it does not fit. Returns out. */
char *kms_test_path(char *out, size_t cap, const char *dir, const char *name);

/* Reads at most cap - 1 bytes of path into buf, NUL-terminated; returns the
 * length read. A missing or unreadable file reads as "" (callers assert on
 * the content). */
size_t kms_test_read_file(const char *path, char *buf, size_t cap);

/* Writes text to path (created or truncated, with mode). */
void kms_test_write_file(const char *path, const char *text, mode_t mode);

/* The value after "name: " in text (up to the end of the line) into buf:
 * with last, of the last line that starts with it (kmsctl approve prints
 * an action before and after); else of its first occurrence. The test
 * fails if there is none or it does not fit. Returns buf. */
const char *kms_test_field(const char *text, const char *name, int last, char *buf, size_t cap);

#endif
