/* kmsctl: encryption contexts, input and output bytes, base64, and the
 * text/JSON printer. Binary data goes to files or base64, never raw to a
 * terminal. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "base/file.h"
#include "base/secret.h"
#include "base/text.h"
#include "kmsctl.h"

int kmsctl_context_add(kmsctl_context *c, const char *spec)
{
    const char *eq = strchr(spec, '=');
    if (eq == NULL || eq == spec)
        return -1;
    kms_client_context_entry *v = realloc(c->v, (c->n + 1) * sizeof(*v));
    if (v == NULL)
        return -1;
    c->v = v;
    char **owned = realloc(c->owned, (c->n + 1) * sizeof(*owned));
    if (owned == NULL)
        return -1;
    c->owned = owned;
    char *copy = strdup(spec);
    if (copy == NULL)
        return -1;
    copy[eq - spec] = '\0';
    c->owned[c->n] = copy;
    c->v[c->n].key = copy;
    c->v[c->n].value = copy + (eq - spec) + 1;
    c->n++;
    return 0;
}

void kmsctl_context_free(kmsctl_context *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->owned[i]);
    free(c->owned);
    free(c->v);
    memset(c, 0, sizeof(*c));
}

void kmsctl_bytes_free(kmsctl_bytes *b)
{
    if (b->locked != NULL) {
        kms_secret_free(b->locked); /* wipes all of it */
    } else if (b->data != NULL) {
        OPENSSL_cleanse(b->data, b->cap);
        free(b->data);
    }
    memset(b, 0, sizeof(*b));
}

/* A buffer of n bytes: a kms_secret (locked, not dumped, wiped on free)
 * for secret input, plain memory otherwise. */
static int bytes_new(kmsctl_bytes *b, size_t n, int secret)
{
    memset(b, 0, sizeof(*b));
    if (secret) {
        if (kms_secret_new(n, &b->locked) != KMS_OK)
            return -1;
        b->data = b->locked->data;
    } else if ((b->data = calloc(1, n)) == NULL) {
        return -1;
    }
    b->cap = n;
    return 0;
}

/* Reads file ("-" is stdin) into out through the base file reader. 0, or
 * a kms error code with the detail set. */
static int read_file(const char *file, size_t max, int secret, kmsctl_bytes *out)
{
    int stdin_in = strcmp(file, "-") == 0;
    int fd = stdin_in ? 0 : open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kms_error_set(KMS_EINVAL, "%s: %s", file, strerror(errno));
    const char *name = stdin_in ? "standard input" : file;
    int r;
    memset(out, 0, sizeof(*out));
    if (secret) {
        r = kms_file_read_fd_secret(fd, name, max, &out->locked);
        if (r == 0) {
            out->data = out->locked->data;
            out->len = out->cap = out->locked->len;
        }
    } else {
        char *p = NULL;
        r = kms_file_read_fd(fd, name, max, &p, &out->len);
        if (r == 0) {
            out->data = (uint8_t *)p;
            out->cap = out->len + 1;
        }
    }
    if (!stdin_in)
        close(fd);
    return r;
}

int kmsctl_read_input(kmsctl *k, const char *file, const char *b64, size_t max, int secret,
                      kmsctl_bytes *out)
{
    memset(out, 0, sizeof(*out));
    if ((file == NULL) == (b64 == NULL))
        return kmsctl_usage_error(k, "give the input as --in FILE or --in-b64 BASE64");
    if (b64 != NULL) {
        /* One byte more than allowed, to tell "too large" from "exactly max". */
        if (bytes_new(out, max + 1, secret) != 0) {
            fprintf(stderr, "kmsctl: out of memory (or locked memory limit)\n");
            return KMSCTL_EXIT_FAILURE;
        }
        long d = strlen(b64) / 4 * 3 <= max + 3 ? kmsctl_unb64(b64, out->data, max + 1) : -2;
        if (d < 0) {
            kmsctl_bytes_free(out);
            if (d == -2) {
                fprintf(stderr, "kmsctl: %s: input larger than %zu bytes\n", k->command, max);
                return KMSCTL_EXIT_INVALID;
            }
            return kmsctl_usage_error(k, "--in-b64: not valid base64");
        }
        out->len = (size_t)d;
    } else {
        int r = read_file(file, max, secret, out);
        if (r == KMS_ENOMEM) {
            fprintf(stderr, "kmsctl: out of memory (or locked memory limit)\n");
            return KMSCTL_EXIT_FAILURE;
        }
        if (r != 0 && r != KMS_ETOOBIG) {
            fprintf(stderr, "kmsctl: %s\n", kms_error_detail());
            return KMSCTL_EXIT_FAILURE;
        }
    }
    if (out->len == 0 || out->len > max) {
        kmsctl_bytes_free(out);
        fprintf(stderr, "kmsctl: %s: input must be 1..%zu bytes\n", k->command, max);
        return KMSCTL_EXIT_INVALID;
    }
    return 0;
}

int kmsctl_write_output(kmsctl *k, const char *file, const uint8_t *data, size_t len, int secret)
{
    int fd;
    if (strcmp(file, "-") == 0) {
        if (isatty(1)) {
            fprintf(stderr,
                    "kmsctl: %s: refusing to write binary data to a terminal; "
                    "use --out FILE or leave out --out for base64\n",
                    k->command);
            return KMSCTL_EXIT_USAGE;
        }
        fd = 1;
    } else {
        fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, secret ? 0600 : 0644);
        if (fd < 0) {
            fprintf(stderr, "kmsctl: %s: %s\n", file, strerror(errno));
            return KMSCTL_EXIT_FAILURE;
        }
        /* An existing file keeps its mode on open(): tighten it for secrets. */
        if (secret && fchmod(fd, 0600) != 0) {
            fprintf(stderr, "kmsctl: %s: %s\n", file, strerror(errno));
            close(fd);
            return KMSCTL_EXIT_FAILURE;
        }
    }
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, data + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            fprintf(stderr, "kmsctl: %s: %s\n", file, strerror(errno));
            if (fd != 1)
                close(fd);
            return KMSCTL_EXIT_FAILURE;
        }
        done += (size_t)w;
    }
    if (fd != 1 && close(fd) != 0) {
        fprintf(stderr, "kmsctl: %s: %s\n", file, strerror(errno));
        return KMSCTL_EXIT_FAILURE;
    }
    return 0;
}

char *kmsctl_b64(const uint8_t *data, size_t len)
{
    if (len > (1u << 28))
        return NULL;
    char *s = malloc((len + 2) / 3 * 4 + 1);
    if (s != NULL)
        EVP_EncodeBlock((unsigned char *)s, data, (int)len);
    return s;
}

void kmsctl_b64_free(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static int b64_value(char ch)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = ch != '\0' ? strchr(alphabet, ch) : NULL;
    return p != NULL ? (int)(p - alphabet) : -1;
}

long kmsctl_unb64(const char *s, uint8_t *out, size_t cap)
{
    size_t len = strlen(s);
    if (len == 0 || len % 4 != 0)
        return -1;
    size_t pad = s[len - 1] == '=' ? (s[len - 2] == '=' ? 2 : 1) : 0;
    size_t n = len / 4 * 3 - pad;
    if (n > cap)
        return -2;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        for (int j = 0; j < 4; j++) {
            int last_group = i + 4 == len;
            if (last_group && s[i + j] == '=' && j >= 4 - (int)pad)
                v[j] = 0;
            else if ((v[j] = b64_value(s[i + j])) < 0)
                return -1;
        }
        uint32_t w =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        uint8_t b[3] = {(uint8_t)(w >> 16), (uint8_t)(w >> 8), (uint8_t)w};
        for (int j = 0; j < 3 && o < n; j++)
            out[o++] = b[j];
        OPENSSL_cleanse(b, sizeof(b));
    }
    return (long)n;
}

/* JSON strings carry only printable code points as they are: any other
 * code point is \uXXXX, and a byte that is not
 * UTF-8 is shown as the text "\xNN" (JSON has no way to carry it). */
void kmsctl_json_string(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t len = strlen(s);
    fputc('"', f);
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = kms_text_next(p + i, len - i, &cp);
        if (n == 0) {
            fprintf(f, "\\\\x%02x", p[i]); /* the text \xNN */
            n = 1;
        } else if (cp == '"' || cp == '\\') {
            fprintf(f, "\\%c", (int)cp);
        } else if (kms_text_printable(cp)) {
            fwrite(p + i, 1, n, f);
        } else {
            fprintf(f, "\\u%04x", (unsigned)cp); /* never above U+FFFF (base/text.h) */
        }
        i += n;
    }
    fputc('"', f);
}

void kmsctl_out_begin(kmsctl_out *o, int json)
{
    kmsctl_out_begin_file(o, stdout, json);
}

void kmsctl_out_begin_file(kmsctl_out *o, FILE *f, int json)
{
    o->f = f;
    o->json = json;
    o->first = 1;
    if (json)
        fputc('{', o->f);
}

static void field(kmsctl_out *o, const char *name)
{
    if (o->json) {
        if (!o->first)
            fputc(',', o->f);
        kmsctl_json_string(o->f, name);
        fputc(':', o->f);
    } else {
        /* Names can carry data too (an archive's context keys): escaped. */
        kms_text_escape(o->f, name);
        fputs(": ", o->f);
    }
    o->first = 0;
}

void kmsctl_out_str(kmsctl_out *o, const char *name, const char *value)
{
    field(o, name);
    if (o->json)
        kmsctl_json_string(o->f, value);
    else {
        kms_text_escape(o->f, value);
        fputc('\n', o->f);
    }
}

void kmsctl_out_num(kmsctl_out *o, const char *name, long long value)
{
    field(o, name);
    fprintf(o->f, o->json ? "%lld" : "%lld\n", value);
}

void kmsctl_out_end(kmsctl_out *o)
{
    if (o->json)
        fputs("}\n", o->f);
    fflush(o->f);
}

/* ---- errors: usage, and a failed call as an exit code ---------------------------------- */

int kmsctl_usage_error(kmsctl *k, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "kmsctl: %s%s", k->command ? k->command : "", k->command ? ": " : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(kmsctl --help lists the commands and their options)\n", stderr);
    return KMSCTL_EXIT_USAGE;
}

static int exit_code(int status)
{
    switch (status) {
    case KMS_CLIENT_PERMISSION_DENIED:
    case KMS_CLIENT_UNAUTHENTICATED:
        return KMSCTL_EXIT_DENIED;
    case KMS_CLIENT_NOT_FOUND:
        return KMSCTL_EXIT_NOT_FOUND;
    case KMS_CLIENT_UNAVAILABLE:
    case KMS_CLIENT_DEADLINE_EXCEEDED:
        return KMSCTL_EXIT_UNAVAILABLE;
    case KMS_CLIENT_INVALID_ARGUMENT:
    case KMS_CLIENT_EARG:
        return KMSCTL_EXIT_INVALID;
    case KMS_CLIENT_FAILED_PRECONDITION:
    case KMS_CLIENT_ALREADY_EXISTS:
        return KMSCTL_EXIT_PRECONDITION;
    case KMS_CLIENT_EFILE:
        return KMSCTL_EXIT_USAGE;
    default:
        return KMSCTL_EXIT_FAILURE;
    }
}

int kmsctl_fail(kmsctl *k, const kms_client_error *err)
{
    const char *name = kms_client_status_name(err->code);
    /* The message comes from the server: shown escaped, like every string
     * kmsctl did not make itself. */
    fprintf(stderr, "kmsctl: %s: %s: ", k->command, name);
    kms_text_escape(stderr, err->message);
    fputc('\n', stderr);
    if (k->json) {
        fputs("{\"error\":{\"code\":", stdout);
        kmsctl_json_string(stdout, name);
        fputs(",\"message\":", stdout);
        kmsctl_json_string(stdout, err->message);
        fputs("}}\n", stdout);
    }
    return exit_code(err->code);
}
