/* The file reader: plain and secret reads, the size cap, and every rule a
 * secret file must pass (mode, symbolic link, file type, owner). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/file.h"

static char dir[256];

static int setup(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/test_file.XXXXXX", tmp != NULL && tmp[0] ? tmp : "/tmp");
    return mkdtemp(dir) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Writes n bytes of s to dir/name with mode; returns the path (static). */
static const char *make(const char *name, const char *s, size_t n, mode_t mode)
{
    static char path[400];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    unlink(path);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(s, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static void plain_read_whole_file_with_nul(void **state)
{
    (void)state;
    const char *p = make("cert.pem", "hello\0world", 11, 0644);
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(kms_file_read(p, 64, KMS_FILE_REGULAR, &out, &len), KMS_OK);
    assert_int_equal(len, 11);
    assert_memory_equal(out, "hello\0world", 11);
    assert_int_equal(out[11], '\0');
    free(out);

    p = make("empty", "", 0, 0644);
    assert_int_equal(kms_file_read(p, 64, 0, &out, &len), KMS_OK);
    assert_int_equal(len, 0);
    assert_int_equal(out[0], '\0');
    free(out);
}

static void plain_size_cap(void **state)
{
    (void)state;
    const char *p = make("eight", "12345678", 8, 0644);
    char *out = (char *)0x1;
    size_t len = 99;
    assert_int_equal(kms_file_read(p, 8, 0, &out, &len), KMS_OK); /* exactly max */
    assert_int_equal(len, 8);
    free(out);
    out = (char *)0x1;
    len = 99;
    assert_int_equal(kms_file_read(p, 7, 0, &out, &len), KMS_ETOOBIG);
    assert_non_null(strstr(kms_error_detail(), "eight"));
    assert_null(strstr(kms_error_detail(), "1234")); /* never the content */
    assert_ptr_equal(out, (char *)0x1);
    assert_int_equal(len, 99);
    assert_int_equal(kms_file_read(p, KMS_FILE_MAX + 1, 0, &out, &len), KMS_EINVAL);
    assert_int_equal(kms_file_read(p, 8, 0x80, &out, &len), KMS_EINVAL); /* unknown flag */
}

static void plain_missing_file_and_file_types(void **state)
{
    (void)state;
    char path[400], *out = NULL;
    size_t len;
    snprintf(path, sizeof(path), "%s/nonexistent", dir);
    assert_int_equal(kms_file_read(path, 64, 0, &out, &len), KMS_EINVAL);
    assert_non_null(strstr(kms_error_detail(), "nonexistent"));
    assert_int_equal(kms_file_read(dir, 64, KMS_FILE_REGULAR, &out, &len), KMS_EINVAL);
    assert_non_null(strstr(kms_error_detail(), "not a regular file"));

    /* A FIFO with no writer: refused at once with KMS_FILE_REGULAR (it
     * would block forever if opened for a blocking read). */
    snprintf(path, sizeof(path), "%s/fifo", dir);
    assert_int_equal(mkfifo(path, 0600), 0);
    assert_int_equal(kms_file_read(path, 64, KMS_FILE_REGULAR, &out, &len), KMS_EINVAL);
    assert_non_null(strstr(kms_error_detail(), "not a regular file"));
    assert_int_equal(kms_file_read_secret(path, 64, (kms_secret **)&out), KMS_EINVAL);

    /* Without it, a pipe (process substitution, /dev/stdin) is read to its end. */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], "piped", 5), 5);
    close(fds[1]);
    snprintf(path, sizeof(path), "/dev/fd/%d", fds[0]);
    assert_int_equal(kms_file_read(path, 64, 0, &out, &len), KMS_OK);
    assert_int_equal(len, 5);
    assert_string_equal(out, "piped");
    free(out);
    close(fds[0]);
}

static void secret_read_into_locked_memory(void **state)
{
    (void)state;
    const char *p = make("key.pem", "-----BEGIN PRIVATE KEY-----\n", 28, 0600);
    kms_secret *s = NULL;
    assert_int_equal(kms_file_read_secret(p, 4096, &s), KMS_OK);
    assert_int_equal(s->len, 28);
    assert_memory_equal(s->data, "-----BEGIN PRIVATE KEY-----\n", 28);
    assert_int_equal(s->data[28], 0);
    kms_secret_free(s);

    p = make("stricter", "x", 1, 0400);
    assert_int_equal(kms_file_read_secret(p, 4096, &s), KMS_OK);
    assert_int_equal(s->len, 1);
    kms_secret_free(s);

    p = make("empty-secret", "", 0, 0600);
    assert_int_equal(kms_file_read_secret(p, 4096, &s), KMS_OK);
    assert_int_equal(s->len, 0);
    kms_secret_free(s);
}

static void secret_refuses_open_modes(void **state)
{
    (void)state;
    kms_secret *s = (kms_secret *)0x1;
    const char *p = make("group-readable", "topsecret", 9, 0640);
    assert_int_equal(kms_file_read_secret(p, 4096, &s), KMS_EPRECOND);
    assert_non_null(strstr(kms_error_detail(), "group-readable is readable by others"));
    assert_null(strstr(kms_error_detail(), "topsecret"));
    p = make("world-readable", "topsecret", 9, 0604);
    assert_int_equal(kms_file_read_secret(p, 4096, &s), KMS_EPRECOND);
    p = make("world-writable", "topsecret", 9, 0602);
    assert_int_equal(kms_file_read_secret(p, 4096, &s), KMS_EPRECOND);
    assert_non_null(strstr(kms_error_detail(), "writable by others"));
    p = make("group-exec", "topsecret", 9, 0610);
    assert_int_equal(kms_file_read_secret(p, 4096, &s), KMS_EPRECOND);
    assert_ptr_equal(s, (kms_secret *)0x1); /* untouched on every failure */
}

static void secret_refuses_symlink_directory_and_size(void **state)
{
    (void)state;
    kms_secret *s = (kms_secret *)0x1;
    const char *p = make("target", "topsecret", 9, 0600);
    char link[400];
    snprintf(link, sizeof(link), "%s/link", dir);
    assert_int_equal(symlink(p, link), 0);
    assert_int_equal(kms_file_read_secret(link, 4096, &s), KMS_EINVAL);
    assert_non_null(strstr(kms_error_detail(), "symbolic link"));
    assert_int_equal(kms_file_read_secret(dir, 4096, &s), KMS_EINVAL);
    assert_non_null(strstr(kms_error_detail(), "not a regular file"));
    assert_int_equal(kms_file_read_secret(p, 8, &s), KMS_ETOOBIG);
    assert_null(strstr(kms_error_detail(), "topsecret"));
    assert_int_equal(kms_file_read_secret(p, KMS_FILE_SECRET_MAX + 1, &s), KMS_EINVAL);
    assert_int_equal(kms_file_read_secret(NULL, 8, &s), KMS_EINVAL);
    assert_ptr_equal(s, (kms_secret *)0x1);
}

static void secret_refuses_other_owner(void **state)
{
    (void)state;
    const char *p = make("foreign", "topsecret", 9, 0600);
    kms_secret *s = NULL;
    /* Only root can give a file away; as another user, make it owned by
     * root instead, which is allowed. */
    if (geteuid() != 0) {
        assert_int_equal(kms_file_read_secret(p, 4096, &s), KMS_OK);
        kms_secret_free(s);
        skip();
    }
    assert_int_equal(chown(p, 4242, 4242), 0);
    assert_int_equal(kms_file_read_secret(p, 4096, &s), KMS_EPRECOND);
    assert_non_null(strstr(kms_error_detail(), "belongs to uid 4242"));
    assert_null(s);
    assert_int_equal(chown(p, 0, 0), 0);
    assert_int_equal(kms_file_read_secret(p, 4096, &s), KMS_OK);
    kms_secret_free(s);
}

static void fd_secret_reads_a_pipe_with_a_cap(void **state)
{
    (void)state;
    int fds[2];
    kms_secret *s = NULL;
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], "plaintext", 9), 9);
    close(fds[1]);
    assert_int_equal(kms_file_read_fd_secret(fds[0], "stdin", 9, &s), KMS_OK);
    assert_int_equal(s->len, 9);
    assert_memory_equal(s->data, "plaintext", 9);
    kms_secret_free(s);
    close(fds[0]);

    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], "plaintext", 9), 9);
    close(fds[1]);
    s = NULL;
    assert_int_equal(kms_file_read_fd_secret(fds[0], "stdin", 8, &s), KMS_ETOOBIG);
    assert_non_null(strstr(kms_error_detail(), "stdin is larger than 8 bytes"));
    assert_null(s);
    close(fds[0]);
    assert_int_equal(kms_file_read_fd_secret(-1, "x", 8, &s), KMS_EINVAL);

    /* The plain variant: the same cap. */
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], "blob", 4), 4);
    close(fds[1]);
    assert_int_equal(kms_file_read_fd(fds[0], "stdin", 4, &out, &len), KMS_OK);
    assert_int_equal(len, 4);
    assert_string_equal(out, "blob");
    free(out);
    close(fds[0]);
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], "blob", 4), 4);
    close(fds[1]);
    out = NULL;
    assert_int_equal(kms_file_read_fd(fds[0], "stdin", 3, &out, &len), KMS_ETOOBIG);
    assert_null(out);
    close(fds[0]);
    assert_int_equal(kms_file_read_fd(-1, "x", 8, &out, &len), KMS_EINVAL);
    assert_int_equal(kms_file_read_fd_secret(0, NULL, 8, &s), KMS_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_read_whole_file_with_nul),
        cmocka_unit_test(plain_size_cap),
        cmocka_unit_test(plain_missing_file_and_file_types),
        cmocka_unit_test(secret_read_into_locked_memory),
        cmocka_unit_test(secret_refuses_open_modes),
        cmocka_unit_test(secret_refuses_symlink_directory_and_size),
        cmocka_unit_test(secret_refuses_other_owner),
        cmocka_unit_test(fd_secret_reads_a_pipe_with_a_cap),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
