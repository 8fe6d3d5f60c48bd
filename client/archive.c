/* libkmsclient archives: the public kms_client_archive_* API on top of the
 * engine (archive_stream.c) and the format (archive_format.c). This file
 * is where the data key comes from kmsd (GenerateDataKey, Decrypt,
 * ReEncrypt) and where files and descriptors are handled. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "archive_stream.h"
#include "client_internal.h"

#define IO_CHUNK (256u << 10)

struct kms_client_archive {
    kms_archive_stream *s;
    kms_client *c;
};

static kms_archive_params params_of(const kms_client_archive_options *o,
                                    kms_client_archive_sink sink, void *sink_arg)
{
    kms_archive_params p = {0};
    if (o != NULL) {
        p.segment_size = o->segment_size;
        p.threads = o->threads;
        p.progress = o->progress;
        p.progress_arg = o->progress_arg;
    }
    p.sink = sink;
    p.sink_arg = sink_arg;
    return p;
}

/* The data key of a kms_client_result, moved into a kms_secret. */
static int take_key(kms_client_result *res, kms_secret **dk, kms_client_error *err)
{
    if (res->plaintext == NULL || res->plaintext_len != KMS_ARCHIVE_DATA_KEY_LEN)
        return kms_client_fail(err, KMS_CLIENT_EREPLY, "the data key is not 32 bytes");
    if (kms_secret_new(KMS_ARCHIVE_DATA_KEY_LEN, dk) != 0)
        return kms_client_fail(err, KMS_CLIENT_ENOMEM, "cannot lock memory for the data key");
    memcpy((*dk)->data, res->plaintext, KMS_ARCHIVE_DATA_KEY_LEN);
    return 0;
}

KMS_CLIENT_API int kms_client_archive_encrypt_init(kms_client *c, const char *key_name,
                                                   const kms_client_context_entry *ctx,
                                                   size_t n_ctx,
                                                   const kms_client_archive_options *opts,
                                                   kms_client_archive_sink sink, void *sink_arg,
                                                   kms_client_archive **out, kms_client_error *err)
{
    if (c == NULL || key_name == NULL || key_name[0] == '\0' || sink == NULL || out == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "missing client, key name, sink or output");
    if (opts != NULL && opts->segment_size != 0 &&
        (opts->segment_size < KMS_ARCHIVE_SEGMENT_MIN ||
         opts->segment_size > KMS_ARCHIVE_SEGMENT_MAX))
        return kms_client_fail(err, KMS_CLIENT_EARG, "segment size must be 4096 .. 8388608");
    uint8_t *context = NULL;
    size_t context_len = 0;
    kms_client_result res = {0};
    kms_secret *dk = NULL;
    kms_client_archive *a = NULL;
    int r = kms_archive_context_encode(ctx, n_ctx, &context, &context_len);
    if (r != 0) {
        r = kms_client_fail(err, r, "bad encryption context");
        goto out;
    }
    r = kms_client_generate_data_key(c, key_name, KMS_CLIENT_AES_256, ctx, n_ctx, 0, &res, err);
    if (r != 0)
        goto out;
    r = take_key(&res, &dk, err);
    if (r != 0)
        goto out;
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        r = kms_client_fail(err, KMS_CLIENT_ENOMEM, "out of memory");
        goto out;
    }
    a->c = c;
    kms_archive_params p = params_of(opts, sink, sink_arg);
    r = kms_archive_stream_encrypt(&p, dk, res.key_name, res.blob, res.blob_len, context,
                                   context_len, NULL, NULL, &a->s, err);
    if (r != 0)
        goto out;
    *out = a;
    a = NULL;
out:
    kms_client_archive_free(a);
    kms_secret_free(dk);
    kms_client_result_free(&res);
    free(context);
    return r;
}

/* Decrypt's unwrap: the header's context equals the caller's (checked
 * before this is called), so it is the one sent with Decrypt. */
static int unwrap(void *arg, const kms_archive_header *h, kms_secret **dk, kms_client_error *err)
{
    kms_client *c = arg;
    kms_client_context_entry *ctx = NULL;
    size_t n = 0;
    kms_client_result res = {0};
    int r = kms_archive_context_decode(h->context, h->context_len, &ctx, &n);
    if (r != 0)
        return kms_client_fail(err, r, "archive corrupt: bad context");
    r = kms_client_decrypt(c, h->blob, h->blob_len, ctx, n, &res, err);
    if (r == KMS_CLIENT_INVALID_ARGUMENT)
        r = kms_client_fail(err, KMS_CLIENT_ECORRUPT,
                            "archive corrupt: its wrapped data key does not authenticate");
    if (r == 0)
        r = take_key(&res, dk, err);
    kms_client_result_free(&res);
    free(ctx);
    return r;
}

KMS_CLIENT_API int kms_client_archive_decrypt_init(kms_client *c,
                                                   const kms_client_context_entry *ctx,
                                                   size_t n_ctx,
                                                   const kms_client_archive_options *opts,
                                                   kms_client_archive_sink sink, void *sink_arg,
                                                   kms_client_archive **out, kms_client_error *err)
{
    if (c == NULL || sink == NULL || out == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "missing client, sink or output");
    uint8_t *context = NULL;
    size_t context_len = 0;
    int r = kms_archive_context_encode(ctx, n_ctx, &context, &context_len);
    if (r != 0)
        return kms_client_fail(err, r, "bad encryption context");
    kms_client_archive *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        free(context);
        return kms_client_fail(err, KMS_CLIENT_ENOMEM, "out of memory");
    }
    a->c = c;
    kms_archive_params p = params_of(opts, sink, sink_arg);
    r = kms_archive_stream_decrypt(&p, context, context_len, unwrap, c, &a->s, err);
    free(context);
    if (r != 0) {
        free(a);
        return r;
    }
    *out = a;
    return 0;
}

KMS_CLIENT_API int kms_client_archive_update(kms_client_archive *a, const uint8_t *data, size_t len,
                                             kms_client_error *err)
{
    if (a == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "no archive");
    return kms_archive_stream_update(a->s, data, len, err);
}

KMS_CLIENT_API int kms_client_archive_final(kms_client_archive *a, kms_client_error *err)
{
    if (a == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "no archive");
    return kms_archive_stream_final(a->s, err);
}

KMS_CLIENT_API void kms_client_archive_free(kms_client_archive *a)
{
    if (a == NULL)
        return;
    kms_archive_stream_free(a->s);
    free(a);
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int fd_sink(void *arg, const uint8_t *data, size_t len)
{
    return write_all(*(int *)arg, data, len);
}

/* Reads in_fd to its end through the archive, then finals it. */
static int pump(kms_client_archive *a, int in_fd, kms_client_error *err)
{
    uint8_t *buf = malloc(IO_CHUNK);
    if (buf == NULL)
        return kms_client_fail(err, KMS_CLIENT_ENOMEM, "out of memory");
    int r = 0;
    for (;;) {
        ssize_t n = read(in_fd, buf, IO_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = kms_client_fail(err, KMS_CLIENT_EIO, "reading the input: %s", strerror(errno));
            break;
        }
        if (n == 0) {
            r = kms_client_archive_final(a, err);
            break;
        }
        r = kms_client_archive_update(a, buf, (size_t)n, err);
        if (r != 0)
            break;
    }
    OPENSSL_cleanse(buf, IO_CHUNK);
    free(buf);
    return r;
}

KMS_CLIENT_API int kms_client_archive_encrypt_fd(kms_client *c, const char *key_name,
                                                 const kms_client_context_entry *ctx, size_t n_ctx,
                                                 const kms_client_archive_options *opts, int in_fd,
                                                 int out_fd, kms_client_error *err)
{
    kms_client_archive *a;
    int r =
        kms_client_archive_encrypt_init(c, key_name, ctx, n_ctx, opts, fd_sink, &out_fd, &a, err);
    if (r != 0)
        return r;
    r = pump(a, in_fd, err);
    kms_client_archive_free(a);
    return r;
}

KMS_CLIENT_API int kms_client_archive_decrypt_fd(kms_client *c, const kms_client_context_entry *ctx,
                                                 size_t n_ctx,
                                                 const kms_client_archive_options *opts, int in_fd,
                                                 int out_fd, kms_client_error *err)
{
    kms_client_archive *a;
    int r = kms_client_archive_decrypt_init(c, ctx, n_ctx, opts, fd_sink, &out_fd, &a, err);
    if (r != 0)
        return r;
    r = pump(a, in_fd, err);
    kms_client_archive_free(a);
    return r;
}

static int header_error(kms_client_error *err, int r)
{
    switch (r) {
    case KMS_CLIENT_ENOTARCHIVE:
        return kms_client_fail(err, r, "not an archive (no KMSA header)");
    case KMS_CLIENT_EVERSION:
        return kms_client_fail(err, r, "unsupported archive format version");
    case KMS_CLIENT_ETRUNCATED:
        return kms_client_fail(err, r, "archive truncated inside its header");
    case KMS_CLIENT_ENOMEM:
        return kms_client_fail(err, r, "out of memory");
    default:
        return kms_client_fail(err, KMS_CLIENT_ECORRUPT, "archive corrupt: malformed header");
    }
}

KMS_CLIENT_API int kms_client_archive_header_len(const uint8_t *data, size_t len,
                                                 size_t *header_len, kms_client_error *err)
{
    if (data == NULL || header_len == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "NULL argument");
    int r = kms_archive_peek(data, len, header_len);
    return r != 0 ? header_error(err, r) : 0;
}

static int info_of(const kms_archive_header *h, kms_client_archive_info *info,
                   kms_client_error *err)
{
    kms_client_archive_info v;
    memset(&v, 0, sizeof(v));
    v.version = h->version;
    v.header_len = h->header_len;
    v.segment_size = h->segment_size;
    v.key_name = strndup((const char *)h->key_name, h->key_name_len);
    if (v.key_name == NULL)
        return kms_client_fail(err, KMS_CLIENT_ENOMEM, "out of memory");
    /* Ciphertext blob format 1 (docs/formats.md): key id, then version. */
    if (h->blob[0] == 1) {
        memcpy(v.key_id, h->blob + 1, 16);
        v.key_version = kms_archive_get32(h->blob + 17);
    }
    int r = kms_archive_context_decode(h->context, h->context_len, &v.context, &v.n_context);
    if (r != 0) {
        free(v.key_name);
        return header_error(err, r);
    }
    *info = v;
    return 0;
}

KMS_CLIENT_API int kms_client_archive_inspect(const uint8_t *data, size_t len,
                                              kms_client_archive_info *info, kms_client_error *err)
{
    size_t hl;
    kms_archive_header h;
    if (data == NULL || info == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "NULL argument");
    int r = kms_archive_peek(data, len, &hl);
    if (r == 0 && len < hl)
        r = KMS_CLIENT_ETRUNCATED;
    if (r == 0)
        r = kms_archive_header_parse(data, hl, &h);
    if (r != 0)
        return header_error(err, r);
    return info_of(&h, info, err);
}

KMS_CLIENT_API void kms_client_archive_info_free(kms_client_archive_info *info)
{
    if (info == NULL)
        return;
    free(info->key_name);
    free(info->context);
    memset(info, 0, sizeof(*info));
}

static int pread_all(int fd, uint8_t *p, size_t n, off_t off)
{
    while (n > 0) {
        ssize_t r = pread(fd, p, n, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
        off += r;
    }
    return 0;
}

/* Copies len bytes at in_off of in to the current end of out, in the
 * kernel when it can (copy_file_range; a reflink on filesystems that share
 * extents), else through a buffer. */
static int copy_range(int in, off_t in_off, int out, size_t len)
{
    while (len > 0) {
        ssize_t n = copy_file_range(in, &in_off, out, NULL, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP))
            break;
        if (n <= 0)
            return -1;
        len -= (size_t)n;
    }
    if (len == 0)
        return 0;
    uint8_t *buf = malloc(IO_CHUNK);
    if (buf == NULL)
        return -1;
    int r = 0;
    while (len > 0 && r == 0) {
        size_t n = len < IO_CHUNK ? len : IO_CHUNK;
        r = pread_all(in, buf, n, in_off) == 0 ? write_all(out, buf, n) : -1;
        in_off += (off_t)n;
        len -= n;
    }
    free(buf);
    return r;
}

static int fsync_dir(const char *path)
{
    char *copy = strdup(path);
    if (copy == NULL)
        return -1;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (fd < 0)
        return -1;
    int r = fsync(fd);
    close(fd);
    return r;
}

KMS_CLIENT_API int kms_client_archive_rewrap_file(kms_client *c, const char *path,
                                                  const char *dest_key,
                                                  kms_client_archive_info *info,
                                                  kms_client_error *err)
{
    if (c == NULL || path == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "missing client or path");
    int r, in = -1, out = -1;
    uint8_t peek[KMS_ARCHIVE_PEEK_LEN], *header = NULL, *fresh = NULL;
    size_t hl = 0, fresh_len = 0, n_ctx = 0;
    char *tmp = NULL, *name = NULL;
    kms_client_context_entry *ctx = NULL;
    kms_client_result res = {0};
    kms_archive_header h;
    struct stat st;

    in = open(path, O_RDONLY | O_CLOEXEC);
    if (in < 0 || fstat(in, &st) != 0 || !S_ISREG(st.st_mode)) {
        r = kms_client_fail(err, KMS_CLIENT_EFILE, "%s: cannot open a regular file", path);
        goto out;
    }
    size_t got = (size_t)st.st_size < sizeof(peek) ? (size_t)st.st_size : sizeof(peek);
    if (pread_all(in, peek, got, 0) != 0) {
        r = kms_client_fail(err, KMS_CLIENT_EIO, "%s: cannot read", path);
        goto out;
    }
    r = kms_archive_peek(peek, got, &hl);
    if (r == 0 && (uint64_t)st.st_size < hl)
        r = KMS_CLIENT_ETRUNCATED;
    if (r != 0) {
        r = header_error(err, r);
        goto out;
    }
    header = malloc(hl);
    if (header == NULL || pread_all(in, header, hl, 0) != 0) {
        r = kms_client_fail(err, KMS_CLIENT_EIO, "%s: cannot read its header", path);
        goto out;
    }
    r = kms_archive_header_parse(header, hl, &h);
    if (r == 0)
        r = kms_archive_context_decode(h.context, h.context_len, &ctx, &n_ctx);
    if (r != 0) {
        r = header_error(err, r);
        goto out;
    }
    int same_key = dest_key == NULL;
    if (dest_key == NULL) {
        name = strndup((const char *)h.key_name, h.key_name_len);
        if (name == NULL || name[0] == '\0') {
            r = kms_client_fail(err, KMS_CLIENT_EARG,
                                "%s: the header names no key: give the destination key", path);
            goto out;
        }
        dest_key = name;
    }
    /* Same context on both sides: it is bound into the segment keys. */
    r = kms_client_reencrypt(c, h.blob, h.blob_len, ctx, n_ctx, dest_key, ctx, n_ctx, &res, err);
    if (r != 0)
        goto out;
    /* Without --key the destination is the header's key name, which is not
     * authenticated: whoever can write the file could name a key of their
     * own. The new blob must be under the same key (format byte and key id,
     * docs/formats.md) as the one the archive was made with. */
    if (same_key && (res.blob_len < 17 || h.blob_len < 17 || memcmp(res.blob, h.blob, 17) != 0)) {
        r = kms_client_fail(err, KMS_CLIENT_ECORRUPT,
                            "%s: the header's key name does not name the key the archive was "
                            "made with: give the destination key explicitly",
                            path);
        goto out;
    }
    r = kms_archive_header_rewrap(&h, res.key_name, res.blob, res.blob_len, &fresh, &fresh_len);
    if (r != 0) {
        r = kms_client_fail(err, r, "cannot build the new header");
        goto out;
    }

    if (asprintf(&tmp, "%s.rewrap-XXXXXX", path) < 0) {
        tmp = NULL;
        r = kms_client_fail(err, KMS_CLIENT_ENOMEM, "out of memory");
        goto out;
    }
    out = mkostemp(tmp, O_CLOEXEC);
    if (out < 0) {
        free(tmp);
        tmp = NULL;
        r = kms_client_fail(err, KMS_CLIENT_EFILE, "%s: cannot create a temporary file beside it",
                            path);
        goto out;
    }
    if (fchmod(out, st.st_mode & 07777) != 0 || write_all(out, fresh, fresh_len) != 0 ||
        copy_range(in, (off_t)hl, out, (size_t)st.st_size - hl) != 0 || fsync(out) != 0) {
        r = kms_client_fail(err, KMS_CLIENT_EIO, "%s: writing the rewrapped copy: %s", path,
                            strerror(errno));
        goto out;
    }
    if (close(out) != 0 || rename(tmp, path) != 0) {
        out = -1;
        r = kms_client_fail(err, KMS_CLIENT_EIO, "%s: cannot replace it: %s", path,
                            strerror(errno));
        goto out;
    }
    out = -1;
    free(tmp);
    tmp = NULL;
    (void)fsync_dir(path);
    if (info != NULL) {
        kms_archive_header nh;
        r = kms_archive_header_parse(fresh, fresh_len, &nh);
        r = r != 0 ? header_error(err, r) : info_of(&nh, info, err);
    }
out:
    if (out >= 0)
        close(out);
    if (tmp != NULL) {
        unlink(tmp);
        free(tmp);
    }
    if (in >= 0)
        close(in);
    kms_client_result_free(&res);
    free(ctx);
    free(name);
    free(header);
    free(fresh);
    return r;
}
