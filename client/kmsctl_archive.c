/* kmsctl: archive commands (encrypt, decrypt, rewrap, inspect) over the
 * kms_client_archive_* API; the format is docs/archive-format.md.
 *
 * encrypt and decrypt share their names with the 4 KiB blob commands of
 * kmsctl_data.c: given --in or --in-b64 they are those commands, otherwise
 * they stream archives ([IN|-] [OUT|-]). Output to a file goes to a
 * temporary file in the same directory, renamed over OUT only once the
 * whole stream succeeded (for decrypt: once the last segment
 * authenticated), so OUT never holds partial or unauthenticated output. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "kmsctl.h"

/* Exit codes of archive failures (docs/kmsctl.md), after the common ones. */
enum {
    KMSCTL_EXIT_NOT_ARCHIVE = 8,
    KMSCTL_EXIT_VERSION = 9,
    KMSCTL_EXIT_CONTEXT = 10,
    KMSCTL_EXIT_TRUNCATED = 11,
    KMSCTL_EXIT_CORRUPT = 12
};

#define MAX_THREADS 64
#define HEADER_PEEK 9

enum { OPT_KEY = 'k', OPT_CONTEXT = 'c', OPT_THREADS = 256, OPT_SEGMENT, OPT_PROGRESS };

static const struct option archive_options[] = {
    {"key", required_argument, NULL, OPT_KEY},
    {"context", required_argument, NULL, OPT_CONTEXT},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"segment-size", required_argument, NULL, OPT_SEGMENT},
    {"progress", no_argument, NULL, OPT_PROGRESS},
    {NULL, 0, NULL, 0}};

typedef struct args {
    const char *key;
    kmsctl_context ctx;
    unsigned threads;
    uint32_t segment_size;
    int progress; /* force the progress bar even when stderr is not a terminal */
    char **pos;
    int n_pos;
} args;

static int parse_number(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    if (s[0] < '0' || s[0] > '9')
        return -1;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return -1;
    *out = v;
    return 0;
}

/* allowed: the options this command takes (a NUL-terminated list). */
static int parse(kmsctl *k, int argc, char **argv, const int *allowed, args *a)
{
    memset(a, 0, sizeof(*a));
    optind = 0; /* glibc: restart scanning; options may follow the files */
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "", archive_options, NULL)) != -1) {
        int ok = 0;
        for (const int *p = allowed; *p; p++)
            ok |= *p == opt;
        if (opt == '?' || opt == ':' || !ok)
            return kmsctl_usage_error(k, "unknown or misplaced option %s", argv[optind - 1]);
        unsigned long v;
        switch (opt) {
        case OPT_KEY:
            a->key = optarg;
            break;
        case OPT_CONTEXT:
            if (kmsctl_context_add(&a->ctx, optarg) != 0)
                return kmsctl_usage_error(k, "context must be KEY=VALUE, got \"%s\"", optarg);
            break;
        case OPT_THREADS:
            if (parse_number(optarg, MAX_THREADS, &v) != 0 || v == 0)
                return kmsctl_usage_error(k, "--threads must be 1 .. %d", MAX_THREADS);
            a->threads = (unsigned)v;
            break;
        case OPT_SEGMENT:
            if (parse_number(optarg, 8u << 20, &v) != 0 || v < 4096)
                return kmsctl_usage_error(k, "--segment-size must be 4096 .. 8388608 bytes");
            a->segment_size = (uint32_t)v;
            break;
        case OPT_PROGRESS:
            a->progress = 1;
            break;
        default:
            return kmsctl_usage_error(k, "unexpected option");
        }
    }
    a->pos = argv + optind;
    a->n_pos = argc - optind;
    return 0;
}

/* Prints an archive failure and returns its exit code; other failures go
 * through kmsctl_fail. */
static int archive_fail(kmsctl *k, const kms_client_error *err)
{
    int code;
    switch (err->code) {
    case KMS_CLIENT_ENOTARCHIVE:
        code = KMSCTL_EXIT_NOT_ARCHIVE;
        break;
    case KMS_CLIENT_EVERSION:
        code = KMSCTL_EXIT_VERSION;
        break;
    case KMS_CLIENT_ECONTEXT:
        code = KMSCTL_EXIT_CONTEXT;
        break;
    case KMS_CLIENT_ETRUNCATED:
        code = KMSCTL_EXIT_TRUNCATED;
        break;
    case KMS_CLIENT_ECORRUPT:
        code = KMSCTL_EXIT_CORRUPT;
        break;
    default:
        return kmsctl_fail(k, err);
    }
    const char *name = kms_client_status_name(err->code);
    fprintf(stderr, "kmsctl: %s: %s: %s\n", k->command, name, err->message);
    if (k->json) {
        fputs("{\"error\":{\"code\":", stdout);
        kmsctl_json_string(stdout, name);
        fputs(",\"message\":", stdout);
        kmsctl_json_string(stdout, err->message);
        fputs("}}\n", stdout);
    }
    return code;
}

static void set_error(kms_client_error *err, int code, const char *message)
{
    err->code = code;
    snprintf(err->message, sizeof(err->message), "%s", message);
}

/* "PATH: WHAT: strerror(errno)" as a failure of this command. */
static int local_fail(kmsctl *k, int code, const char *path, const char *what)
{
    kms_client_error err = {.code = code};
    if (errno != 0)
        snprintf(err.message, sizeof(err.message), "%s: %s: %s", path, what, strerror(errno));
    else
        snprintf(err.message, sizeof(err.message), "%s: %s", path, what);
    return archive_fail(k, &err);
}

/* ---- progress bar: stderr, only on a terminal (or --progress) ---- */

typedef struct progress {
    int on;
    uint64_t total; /* input size when known, else 0 */
    struct timespec start, last;
    uint64_t done;
} progress;

static double since(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

static void progress_draw(progress *p, int final)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (!final && since(&p->last, &now) < 0.2)
        return;
    p->last = now;
    double secs = since(&p->start, &now);
    double rate = secs > 0 ? (double)p->done / secs : 0;
    fprintf(stderr, "\r%10.1f MiB  %8.1f MiB/s", (double)p->done / 1048576.0, rate / 1048576.0);
    if (p->total > 0) {
        double frac = (double)p->done / (double)p->total;
        int filled = (int)(frac * 30 + 0.5);
        fputs("  [", stderr);
        for (int i = 0; i < 30; i++)
            fputc(i < filled ? '#' : ' ', stderr);
        fprintf(stderr, "] %3d%%", (int)(frac * 100));
        if (rate > 0 && p->done < p->total) {
            long eta = (long)((double)(p->total - p->done) / rate);
            fprintf(stderr, "  ETA %ld:%02ld", eta / 60, eta % 60);
        } else {
            fputs("          ", stderr);
        }
    }
    if (final)
        fputc('\n', stderr);
    fflush(stderr);
}

static void on_progress(void *arg, uint64_t bytes_in)
{
    progress *p = arg;
    p->done = bytes_in;
    if (p->on)
        progress_draw(p, 0);
}

/* ---- output: a temporary file renamed into place, or stdout ---- */

typedef struct output {
    const char *path; /* NULL: stdout */
    char *tmp;
    int fd;
    uint64_t written;
    /* The header as it goes by (encrypt), for the summary. */
    uint8_t *header;
    size_t header_len, header_have;
    int capture;
} output;

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

static int out_sink(void *arg, const uint8_t *data, size_t len)
{
    output *o = arg;
    if (o->capture && (o->header_len == 0 || o->header_have < o->header_len)) {
        size_t want = o->header_len ? o->header_len : HEADER_PEEK;
        size_t n = want - o->header_have < len ? want - o->header_have : len;
        memcpy(o->header + o->header_have, data, n);
        o->header_have += n;
        if (o->header_len == 0 && o->header_have == HEADER_PEEK) {
            size_t hl;
            kms_client_error e;
            if (kms_client_archive_header_len(o->header, HEADER_PEEK, &hl, &e) != 0)
                o->capture = 0;
            else {
                uint8_t *h = realloc(o->header, hl);
                if (h == NULL)
                    o->capture = 0;
                else {
                    o->header = h;
                    o->header_len = hl;
                    size_t more = hl - HEADER_PEEK < len - n ? hl - HEADER_PEEK : len - n;
                    memcpy(o->header + o->header_have, data + n, more);
                    o->header_have += more;
                }
            }
        }
    }
    if (write_all(o->fd, data, len) != 0)
        return -1;
    o->written += len;
    return 0;
}

static int output_open(kmsctl *k, output *o, const char *path, int secret)
{
    memset(o, 0, sizeof(*o));
    o->fd = -1;
    if (path == NULL || strcmp(path, "-") == 0) {
        if (isatty(1)) {
            fprintf(stderr,
                    "kmsctl: %s: refusing to write binary data to a terminal; give OUT or "
                    "redirect stdout\n",
                    k->command);
            return KMSCTL_EXIT_USAGE;
        }
        o->fd = 1;
        return 0;
    }
    o->path = path;
    /* Beside OUT, so the final rename stays on one filesystem. */
    char *copy = strdup(path);
    if (copy == NULL)
        return KMSCTL_EXIT_FAILURE;
    const char *dir = dirname(copy);
    char *base_copy = strdup(path);
    if (base_copy == NULL ||
        asprintf(&o->tmp, "%s/.%s.kmsctl-XXXXXX", dir, basename(base_copy)) < 0) {
        o->tmp = NULL;
        free(copy);
        free(base_copy);
        return KMSCTL_EXIT_FAILURE;
    }
    free(copy);
    free(base_copy);
    o->fd = mkostemp(o->tmp, O_CLOEXEC);
    if (o->fd < 0) {
        int r = local_fail(k, KMS_CLIENT_EFILE, path, "cannot create a temporary file");
        free(o->tmp);
        o->tmp = NULL;
        return r;
    }
    if (!secret) {
        /* Archives are ciphertext: the usual mode (mkstemp made it 0600). */
        mode_t mask = umask(0);
        umask(mask);
        (void)fchmod(o->fd, 0666 & ~mask);
    }
    return 0;
}

/* Success: fsync and rename into place. Failure (ok == 0): remove. */
static int output_close(kmsctl *k, output *o, int ok)
{
    int r = 0;
    if (o->tmp != NULL) {
        if (ok && (fsync(o->fd) != 0 || close(o->fd) != 0)) {
            r = local_fail(k, KMS_CLIENT_EIO, o->path, "cannot write");
            ok = 0;
        } else if (!ok) {
            close(o->fd);
        }
        if (ok && rename(o->tmp, o->path) != 0) {
            r = local_fail(k, KMS_CLIENT_EIO, o->path, "cannot rename into place");
            ok = 0;
        }
        if (!ok)
            unlink(o->tmp);
        free(o->tmp);
        o->tmp = NULL;
    }
    return r;
}

static int open_input(kmsctl *k, const char *path, int *fd, uint64_t *size)
{
    *size = 0;
    if (path == NULL || strcmp(path, "-") == 0) {
        *fd = 0;
    } else {
        *fd = open(path, O_RDONLY | O_CLOEXEC);
        if (*fd < 0)
            return local_fail(k, KMS_CLIENT_EFILE, path, "cannot open");
    }
    struct stat st;
    if (fstat(*fd, &st) == 0 && S_ISREG(st.st_mode))
        *size = (uint64_t)st.st_size;
    return 0;
}

static int is_blob_form(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--in") == 0 || strcmp(argv[i], "--in-b64") == 0 ||
            strncmp(argv[i], "--in=", 5) == 0 || strncmp(argv[i], "--in-b64=", 9) == 0)
            return 1;
    return 0;
}

static void print_info(kmsctl_out *o, const kms_client_archive_info *info)
{
    char id[33];
    for (int i = 0; i < 16; i++)
        snprintf(id + 2 * i, 3, "%02x", info->key_id[i]);
    kmsctl_out_str(o, "format", "kms archive");
    kmsctl_out_num(o, "format_version", info->version);
    kmsctl_out_str(o, "key_name", info->key_name);
    kmsctl_out_str(o, "key_id", id);
    kmsctl_out_num(o, "key_version", info->key_version);
    for (size_t i = 0; i < info->n_context; i++) {
        char field[300];
        snprintf(field, sizeof(field), "context.%s", info->context[i].key);
        kmsctl_out_str(o, field, info->context[i].value);
    }
    kmsctl_out_num(o, "segment_size", info->segment_size);
    kmsctl_out_num(o, "header_size", info->header_len);
}

/* Summary lines (or JSON) on stdout, or on stderr when stdout carries the
 * data. */
static void out_start(kmsctl_out *o, kmsctl *k, int data_on_stdout)
{
    memset(o, 0, sizeof(*o));
    o->f = data_on_stdout ? stderr : stdout;
    o->json = k->json;
    o->first = 1;
    if (o->json)
        fputc('{', o->f);
}

static int run_stream(kmsctl *k, const args *a, int encrypt)
{
    const char *in_path = a->n_pos > 0 ? a->pos[0] : "-";
    const char *out_path = a->n_pos > 1 ? a->pos[1] : "-";
    int quiet = !k->json && !isatty(2) && !a->progress;
    kms_client *c;
    int r = kmsctl_client(k, &c);
    if (r != 0)
        return r;
    int in_fd;
    uint64_t in_size;
    r = open_input(k, in_path, &in_fd, &in_size);
    if (r != 0)
        return r;
    output o;
    r = output_open(k, &o, out_path, !encrypt);
    if (r != 0) {
        if (in_fd != 0)
            close(in_fd);
        return r;
    }
    progress p = {.on = !k->json && (isatty(2) || a->progress), .total = in_size};
    clock_gettime(CLOCK_MONOTONIC, &p.start);
    p.last = p.start;
    kms_client_archive_options opts = {.segment_size = a->segment_size,
                                       .threads = a->threads,
                                       .progress = on_progress,
                                       .progress_arg = &p};
    if (encrypt) {
        o.capture = 1;
        o.header = malloc(HEADER_PEEK);
        if (o.header == NULL)
            o.capture = 0;
    }
    kms_client_error err;
    kms_client_archive *ar = NULL;
    r = encrypt ? kms_client_archive_encrypt_init(c, a->key, a->ctx.v, a->ctx.n, &opts, out_sink,
                                                  &o, &ar, &err)
                : kms_client_archive_decrypt_init(c, a->ctx.v, a->ctx.n, &opts, out_sink, &o, &ar,
                                                  &err);
    uint8_t *buf = r == 0 ? malloc(1u << 20) : NULL;
    if (r == 0 && buf == NULL)
        set_error(&err, r = KMS_CLIENT_ENOMEM, "out of memory");
    while (r == 0) {
        ssize_t n = read(in_fd, buf, 1u << 20);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            set_error(&err, r = KMS_CLIENT_EIO, "reading the input failed");
            break;
        }
        if (n == 0) {
            r = kms_client_archive_final(ar, &err);
            break;
        }
        r = kms_client_archive_update(ar, buf, (size_t)n, &err);
    }
    if (buf != NULL) /* it held plaintext */
        OPENSSL_cleanse(buf, 1u << 20);
    free(buf);
    kms_client_archive_free(ar);
    if (in_fd != 0)
        close(in_fd);
    if (p.on && r == 0)
        progress_draw(&p, 1);
    else if (p.on)
        fputc('\n', stderr);

    int code = 0;
    if (r != 0) {
        code = archive_fail(k, &err);
        /* Standard output cannot be taken back: say so, whatever went. */
        if (!encrypt && o.path == NULL &&
            (o.written > 0 || err.code == KMS_CLIENT_ETRUNCATED || err.code == KMS_CLIENT_ECORRUPT))
            fprintf(stderr, "kmsctl: decrypt: archive truncated or corrupt: output incomplete\n");
    }
    int rc = output_close(k, &o, r == 0);
    if (code == 0 && rc != 0)
        code = rc;
    if (code != 0 || quiet) {
        free(o.header);
        return code;
    }

    double secs;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    secs = since(&p.start, &now);
    kmsctl_out so;
    out_start(&so, k, o.path == NULL);
    kmsctl_out_str(&so, "command", encrypt ? "encrypt" : "decrypt");
    if (encrypt && o.header != NULL && o.header_len > 0 && o.header_have == o.header_len) {
        kms_client_archive_info info;
        if (kms_client_archive_inspect(o.header, o.header_len, &info, &err) == 0) {
            kmsctl_out_str(&so, "key_name", info.key_name);
            kmsctl_out_num(&so, "key_version", info.key_version);
            kmsctl_out_num(&so, "segment_size", info.segment_size);
            kms_client_archive_info_free(&info);
        }
    }
    kmsctl_out_num(&so, "bytes_in", (long long)p.done);
    kmsctl_out_num(&so, "bytes_out", (long long)o.written);
    kmsctl_out_num(&so, "milliseconds", (long long)(secs * 1000));
    if (o.path != NULL)
        kmsctl_out_str(&so, "output", o.path);
    kmsctl_out_end(&so);
    free(o.header);
    return 0;
}

int kmsctl_cmd_archive_encrypt(kmsctl *k, int argc, char **argv)
{
    if (is_blob_form(argc, argv))
        return kmsctl_cmd_encrypt(k, argc, argv);
    static const int allowed[] = {OPT_KEY, OPT_CONTEXT, OPT_THREADS, OPT_SEGMENT, OPT_PROGRESS, 0};
    args a;
    int r = parse(k, argc, argv, allowed, &a);
    if (r == 0 && a.key == NULL)
        r = kmsctl_usage_error(k, "--key NAME is required");
    if (r == 0 && a.n_pos > 2)
        r = kmsctl_usage_error(k, "at most IN and OUT, got \"%s\"", a.pos[2]);
    if (r == 0)
        r = run_stream(k, &a, 1);
    kmsctl_context_free(&a.ctx);
    return r;
}

int kmsctl_cmd_archive_decrypt(kmsctl *k, int argc, char **argv)
{
    if (is_blob_form(argc, argv))
        return kmsctl_cmd_decrypt(k, argc, argv);
    static const int allowed[] = {OPT_CONTEXT, OPT_THREADS, OPT_PROGRESS, 0};
    args a;
    int r = parse(k, argc, argv, allowed, &a);
    if (r == 0 && a.n_pos > 2)
        r = kmsctl_usage_error(k, "at most IN and OUT, got \"%s\"", a.pos[2]);
    if (r == 0)
        r = run_stream(k, &a, 0);
    kmsctl_context_free(&a.ctx);
    return r;
}

/* Reads exactly the header of an archive file. */
static int read_header(kmsctl *k, const char *path, uint8_t **out, size_t *out_len, uint64_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return local_fail(k, KMS_CLIENT_EFILE, path, "cannot open");
    struct stat st;
    uint8_t peek[HEADER_PEEK];
    kms_client_error err;
    size_t hl = 0;
    uint8_t *h = NULL;
    int r = 0;
    errno = 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        r = local_fail(k, KMS_CLIENT_EFILE, path, "not a regular file");
        goto out;
    }
    *size = (uint64_t)st.st_size;
    ssize_t n = pread(fd, peek, sizeof(peek), 0);
    if (n < 0) {
        r = local_fail(k, KMS_CLIENT_EIO, path, "cannot read");
        goto out;
    }
    if (kms_client_archive_header_len(peek, (size_t)n, &hl, &err) != 0) {
        r = archive_fail(k, &err);
        goto out;
    }
    h = malloc(hl);
    if (h == NULL) {
        r = KMSCTL_EXIT_FAILURE;
        goto out;
    }
    n = pread(fd, h, hl, 0);
    if (n < 0 || (size_t)n != hl) {
        set_error(&err, KMS_CLIENT_ETRUNCATED, "archive truncated inside its header");
        r = archive_fail(k, &err);
        goto out;
    }
    *out = h;
    *out_len = hl;
    h = NULL;
out:
    free(h);
    close(fd);
    return r;
}

int kmsctl_cmd_archive_inspect(kmsctl *k, int argc, char **argv)
{
    static const int allowed[] = {0};
    args a;
    int r = parse(k, argc, argv, allowed, &a);
    if (r == 0 && a.n_pos != 1)
        r = kmsctl_usage_error(k, "exactly one FILE");
    if (r != 0)
        return r;
    uint8_t *h = NULL;
    size_t hl = 0;
    uint64_t size = 0;
    r = read_header(k, a.pos[0], &h, &hl, &size);
    if (r != 0)
        return r;
    kms_client_archive_info info;
    kms_client_error err;
    if (kms_client_archive_inspect(h, hl, &info, &err) != 0) {
        free(h);
        return archive_fail(k, &err);
    }
    free(h);
    kmsctl_out o;
    kmsctl_out_begin(&o, k->json);
    kmsctl_out_str(&o, "file", a.pos[0]);
    print_info(&o, &info);
    kmsctl_out_num(&o, "archive_size", (long long)size);
    /* The segment count and plaintext size follow from the file size. */
    uint64_t body = size - hl, unit = (uint64_t)info.segment_size + 16;
    uint64_t segs = body == 0 ? 0 : (body + unit - 1) / unit;
    if (segs > 0 && body - (segs - 1) * unit >= 16) {
        kmsctl_out_num(&o, "segments", (long long)segs);
        kmsctl_out_num(&o, "plaintext_size", (long long)(body - 16 * segs));
    } else {
        kmsctl_out_str(&o, "plaintext_size", "unknown (the file is cut short)");
    }
    kmsctl_out_end(&o);
    kms_client_archive_info_free(&info);
    return 0;
}

int kmsctl_cmd_archive_rewrap(kmsctl *k, int argc, char **argv)
{
    static const int allowed[] = {OPT_KEY, 0};
    args a;
    int r = parse(k, argc, argv, allowed, &a);
    if (r == 0 && a.n_pos == 0)
        r = kmsctl_usage_error(k, "give at least one FILE");
    if (r != 0)
        return r;
    kms_client *c;
    r = kmsctl_client(k, &c);
    if (r != 0)
        return r;
    int first_failure = 0;
    if (k->json)
        fputs("{\"archives\":[", stdout);
    for (int i = 0; i < a.n_pos; i++) {
        kms_client_archive_info info;
        kms_client_error err;
        if (kms_client_archive_rewrap_file(c, a.pos[i], a.key, &info, &err) != 0) {
            fprintf(stderr, "kmsctl: rewrap: %s:\n", a.pos[i]);
            int saved = k->json;
            k->json = 0; /* the JSON array reports it below */
            int code = archive_fail(k, &err);
            k->json = saved;
            if (first_failure == 0)
                first_failure = code;
            if (k->json) {
                fputs(i ? "," : "", stdout);
                fputs("{\"file\":", stdout);
                kmsctl_json_string(stdout, a.pos[i]);
                fputs(",\"error\":{\"code\":", stdout);
                kmsctl_json_string(stdout, kms_client_status_name(err.code));
                fputs(",\"message\":", stdout);
                kmsctl_json_string(stdout, err.message);
                fputs("}}", stdout);
            }
            continue;
        }
        if (k->json)
            fputs(i ? "," : "", stdout);
        kmsctl_out o;
        kmsctl_out_begin(&o, k->json);
        kmsctl_out_str(&o, "file", a.pos[i]);
        kmsctl_out_str(&o, "key_name", info.key_name);
        kmsctl_out_num(&o, "key_version", info.key_version);
        kmsctl_out_num(&o, "header_size", info.header_len);
        if (k->json)
            fputc('}', stdout);
        else
            kmsctl_out_end(&o);
        kms_client_archive_info_free(&info);
    }
    if (k->json)
        fputs("]}\n", stdout);
    return first_failure;
}
