/* Shared test helpers (test_util.h). */
#include "test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

char *kms_test_tmpdir(const char *prefix, char *out, size_t cap)
{
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] == '\0')
        tmp = "/tmp";
    int n = snprintf(out, cap, "%s/%s-XXXXXX", tmp, prefix);
    if (n < 0 || (size_t)n >= cap)
        fail_msg("temp dir name too long under %s", tmp);
    if (mkdtemp(out) == NULL)
        fail_msg("mkdtemp %s: %s", out, strerror(errno));
    return out;
}

static int remove_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)type;
    (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

void kms_test_rmtree(const char *dir)
{
    if (dir == NULL || dir[0] == '\0')
        return;
    if (nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
        fail_msg("cannot remove %s: %s", dir, strerror(errno));
}

char *kms_test_path(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap)
        fail_msg("path %s/%s too long", dir, name);
    return out;
}

size_t kms_test_read_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = '\0';
    if (f)
        fclose(f);
    return n;
}

void kms_test_write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        fail_msg("open %s: %s", path, strerror(errno));
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            fail_msg("write %s: %s", path, strerror(errno));
        off += (size_t)w;
    }
    assert_int_equal(close(fd), 0);
}

const char *kms_test_field(const char *text, const char *name, int last, char *buf, size_t cap)
{
    char key[64];
    int k = snprintf(key, sizeof(key), "%s: ", name);
    assert_true(k > 0 && (size_t)k < sizeof(key));
    const char *p = NULL;
    if (!last)
        p = strstr(text, key);
    else
        for (const char *q = text; (q = strstr(q, key)) != NULL; q++)
            if (q == text || q[-1] == '\n')
                p = q;
    if (p == NULL)
        fail_msg("no %s in output: %s", name, text);
    p += strlen(key);
    size_t n = strcspn(p, "\n");
    if (n >= cap)
        fail_msg("%s value longer than %zu bytes", name, cap - 1);
    memcpy(buf, p, n);
    buf[n] = '\0';
    return buf;
}
