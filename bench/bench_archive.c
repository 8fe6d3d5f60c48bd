/* Archive throughput: 1 GiB from memory to /dev/null through the archive
 * engine (the one libkmsclient and kmsctl use), encrypt and decrypt, with
 * 1 thread and with all cores; in the same run, `openssl speed -evp
 * aes-256-gcm -bytes 1048576` (one core) and `age` encrypting and
 * decrypting the same bytes (when installed).
 *
 *   bench_archive [MiB]      (default 1024)
 *
 * The data key is fixed (the one GenerateDataKey call per archive is not
 * what is measured). Input comes from a 1 MiB buffer fed again and again;
 * output is written to /dev/null with write(2). Decryption reads a 64 MiB
 * archive held in memory (mib / 64 times), and also, as kmsctl does, an
 * archive written to $TMPDIR (so in the page cache) through read(2). Each
 * case runs 3 times and reports its best; RSS is the process's peak
 * (VmHWM) before the in-memory archive is made.
 *
 * Targets: 1 thread >= 80 % of OpenSSL's single-core rate; >= 1.5x age;
 * all cores >= 1.6x one thread on 2 cores; RSS < 64 MiB. This program only
 * reports (tests never assert timings). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "archive_stream.h"

#define CHUNK (1u << 20)
#define RUNS 3

static int fd_sink(void *arg, const uint8_t *p, size_t n)
{
    int fd = *(int *)arg;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

typedef struct membuf {
    uint8_t *p;
    size_t len, cap;
} membuf;

static int mem_sink(void *arg, const uint8_t *p, size_t n)
{
    membuf *m = arg;
    if (m->len + n > m->cap) {
        size_t cap = (m->len + n) * 2;
        uint8_t *q = realloc(m->p, cap);
        if (q == NULL)
            return -1;
        m->p = q;
        m->cap = cap;
    }
    memcpy(m->p + m->len, p, n);
    m->len += n;
    return 0;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static long vm_kib(const char *name)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(name);
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, name, n) == 0)
            v = strtol(line + n, NULL, 10);
    if (f != NULL)
        fclose(f);
    return v;
}

static kms_secret *data_key(void)
{
    kms_secret *k;
    if (kms_secret_new(32, &k) != 0)
        exit(1);
    for (int i = 0; i < 32; i++)
        k->data[i] = (uint8_t)(0x40 + i);
    return k;
}

static int unwrap(void *arg, const kms_archive_header *h, kms_secret **dk, kms_client_error *err)
{
    (void)arg;
    (void)h;
    (void)err;
    *dk = data_key();
    return 0;
}

static const uint8_t context[4] = {0, 0, 0, 0};

/* Encrypts mib MiB of buf to fd; seconds. */
static double encrypt_to(int fd, const uint8_t *buf, long mib, unsigned threads)
{
    uint8_t blob[82];
    memset(blob, 0xee, sizeof(blob));
    blob[0] = 1;
    kms_secret *dk = data_key();
    kms_archive_params p = {.threads = threads, .sink = fd_sink, .sink_arg = &fd};
    kms_archive_stream *s;
    kms_client_error err;
    double t0 = now();
    if (kms_archive_stream_encrypt(&p, dk, "bench", blob, sizeof(blob), context, sizeof(context),
                                   NULL, NULL, &s, &err) != 0) {
        fprintf(stderr, "encrypt: %s\n", err.message);
        exit(1);
    }
    for (long i = 0; i < mib; i++)
        if (kms_archive_stream_update(s, buf, CHUNK, &err) != 0) {
            fprintf(stderr, "encrypt: %s\n", err.message);
            exit(1);
        }
    if (kms_archive_stream_final(s, &err) != 0) {
        fprintf(stderr, "encrypt: %s\n", err.message);
        exit(1);
    }
    kms_archive_stream_free(s);
    double t = now() - t0;
    kms_secret_free(dk);
    return t;
}

/* Reads the archive (just written: in the page cache) through a 1 MiB
 * buffer, as kmsctl does. */
static double decrypt_from(const char *path, unsigned threads, uint8_t *buf)
{
    int in = open(path, O_RDONLY);
    int out = open("/dev/null", O_WRONLY);
    if (in < 0 || out < 0)
        exit(1);
    kms_archive_params p = {.threads = threads, .sink = fd_sink, .sink_arg = &out};
    kms_archive_stream *s;
    kms_client_error err;
    double t0 = now();
    if (kms_archive_stream_decrypt(&p, context, sizeof(context), unwrap, NULL, &s, &err) != 0)
        exit(1);
    ssize_t n;
    while ((n = read(in, buf, CHUNK)) > 0)
        if (kms_archive_stream_update(s, buf, (size_t)n, &err) != 0) {
            fprintf(stderr, "decrypt: %s\n", err.message);
            exit(1);
        }
    if (kms_archive_stream_final(s, &err) != 0) {
        fprintf(stderr, "decrypt: %s\n", err.message);
        exit(1);
    }
    kms_archive_stream_free(s);
    double t = now() - t0;
    close(in);
    close(out);
    return t;
}

/* Decrypts the in-memory archive a (len bytes) reps times; seconds. */
static double decrypt_mem(const uint8_t *a, size_t len, int reps, unsigned threads)
{
    int out = open("/dev/null", O_WRONLY);
    if (out < 0)
        exit(1);
    double t0 = now();
    for (int i = 0; i < reps; i++) {
        kms_archive_params p = {.threads = threads, .sink = fd_sink, .sink_arg = &out};
        kms_archive_stream *s;
        kms_client_error err;
        if (kms_archive_stream_decrypt(&p, context, sizeof(context), unwrap, NULL, &s, &err) != 0)
            exit(1);
        for (size_t off = 0; off < len; off += CHUNK)
            if (kms_archive_stream_update(s, a + off, len - off < CHUNK ? len - off : CHUNK,
                                          &err) != 0) {
                fprintf(stderr, "decrypt: %s\n", err.message);
                exit(1);
            }
        if (kms_archive_stream_final(s, &err) != 0) {
            fprintf(stderr, "decrypt: %s\n", err.message);
            exit(1);
        }
        kms_archive_stream_free(s);
    }
    double t = now() - t0;
    close(out);
    return t;
}

/* `openssl speed [-multi N] -evp aes-256-gcm -bytes 1048576`: MiB/s of
 * its last line (all processes together with -multi). */
static double openssl_speed(long multi)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd),
             "openssl speed -seconds 3 %s%.0ld -evp aes-256-gcm -bytes 1048576 2>/dev/null",
             multi > 1 ? "-multi " : "", multi > 1 ? multi : 0);
    FILE *f = popen(cmd, "r");
    char line[512];
    double kbs = -1;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "AES-256-GCM", 11) == 0 || strncmp(line, "aes-256-gcm", 11) == 0) {
            char *p = strrchr(line, ' ');
            char *end;
            double v = p ? strtod(p + 1, &end) : -1;
            if (v > 0)
                kbs = v; /* "1000s of bytes per second" ending in 'k' */
        }
    }
    if (f != NULL)
        pclose(f);
    return kbs > 0 ? kbs * 1000 / 1048576 : -1;
}

static int have(const char *cmd)
{
    char line[256];
    snprintf(line, sizeof(line), "command -v %s >/dev/null 2>&1", cmd);
    return system(line) == 0;
}

/* age with an X25519 recipient: encrypt mib MiB piped from buf to a file
 * (or /dev/null), and decrypt that file to /dev/null. Seconds. */
static double age_encrypt(const char *dir, const uint8_t *buf, long mib, const char *out)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "age -R '%s/age.pub' > '%s'", dir, out);
    double t0 = now();
    FILE *p = popen(cmd, "w");
    if (p == NULL)
        return -1;
    for (long i = 0; i < mib; i++)
        if (fwrite(buf, 1, CHUNK, p) != CHUNK)
            break;
    int st = pclose(p);
    double t = now() - t0;
    return st == 0 ? t : -1;
}

static double age_decrypt(const char *dir, const char *in)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "age -d -i '%s/age.key' < '%s' > /dev/null", dir, in);
    double t0 = now();
    int st = system(cmd);
    double t = now() - t0;
    return st == 0 ? t : -1;
}

static double best(double a, double b)
{
    return a < 0 ? b : b < 0 ? a : a < b ? a : b;
}

int main(int argc, char **argv)
{
    long mib = argc > 1 ? strtol(argv[1], NULL, 10) : 1024;
    if (mib <= 0)
        return 2;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char dir[512], arch[600];
    snprintf(dir, sizeof(dir), "%s/kms-bench-archive-XXXXXX", tmp);
    if (mkdtemp(dir) == NULL)
        return 1;
    snprintf(arch, sizeof(arch), "%s/a.kmsa", dir);
    uint8_t *buf = malloc(CHUNK), *rbuf = malloc(CHUNK);
    if (buf == NULL || rbuf == NULL || RAND_bytes(buf, CHUNK) != 1)
        return 1;
    double mb = (double)mib;

    printf("archives: %ld MiB from memory to /dev/null, 1 MiB segments, %ld cores, best of %d\n",
           mib, cores, RUNS);
    long rss0 = vm_kib("VmHWM:");
    double e1 = -1, en = -1, d1 = -1, dn = -1;
    int null_fd = open("/dev/null", O_WRONLY);
    for (int r = 0; r < RUNS; r++) {
        e1 = best(e1, encrypt_to(null_fd, buf, mib, 1));
        en = best(en, encrypt_to(null_fd, buf, mib, (unsigned)cores));
    }
    close(null_fd);
    int afd = open(arch, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    (void)encrypt_to(afd, buf, mib, (unsigned)cores);
    close(afd);
    for (int r = 0; r < RUNS; r++) {
        d1 = best(d1, decrypt_from(arch, 1, rbuf));
        dn = best(dn, decrypt_from(arch, (unsigned)cores, rbuf));
    }
    long rss = vm_kib("VmHWM:");
    unlink(arch);

    /* Decrypt from memory: a 64 MiB archive held in memory, decrypted
     * mib / 64 times (this buffer is the benchmark's, after the RSS
     * figure above). */
    long per = mib < 64 ? mib : 64;
    int reps = (int)(mib / per);
    membuf m = {0};
    {
        kms_secret *dk = data_key();
        uint8_t blob[82];
        memset(blob, 0xee, sizeof(blob));
        blob[0] = 1;
        kms_archive_params p = {.threads = 1, .sink = mem_sink, .sink_arg = &m};
        kms_archive_stream *st;
        kms_client_error err;
        if (kms_archive_stream_encrypt(&p, dk, "bench", blob, sizeof(blob), context,
                                       sizeof(context), NULL, NULL, &st, &err) != 0)
            return 1;
        for (long i = 0; i < per; i++)
            if (kms_archive_stream_update(st, buf, CHUNK, &err) != 0)
                return 1;
        if (kms_archive_stream_final(st, &err) != 0)
            return 1;
        kms_archive_stream_free(st);
        kms_secret_free(dk);
    }
    double m1 = -1, mn = -1;
    for (int r = 0; r < RUNS; r++) {
        m1 = best(m1, decrypt_mem(m.p, m.len, reps, 1));
        mn = best(mn, decrypt_mem(m.p, m.len, reps, (unsigned)cores));
    }
    free(m.p);
    double mbm = (double)(per * reps);

    double ossl = openssl_speed(1), ossl_n = openssl_speed(cores);
    printf("  openssl speed -evp aes-256-gcm -bytes 1048576 (1 core): %8.0f MiB/s\n", ossl);
    printf("  openssl speed -multi %ld (the machine's ceiling now):     %8.0f MiB/s = %.2fx 1 "
           "core\n",
           cores, ossl_n, ossl_n / ossl);
    printf("  encrypt, 1 thread:      %8.0f MiB/s  = %3.0f %% of openssl  (target >= 80 %%)\n",
           mb / e1, 100 * mb / e1 / ossl);
    printf("  encrypt, %ld threads:     %8.0f MiB/s  = %.2fx 1 thread    (target >= 1.6x)\n", cores,
           mb / en, e1 / en);
    printf("  decrypt, 1 thread:      %8.0f MiB/s  = %3.0f %% of openssl  (target >= 80 %%)\n",
           mbm / m1, 100 * mbm / m1 / ossl);
    printf("  decrypt, %ld threads:     %8.0f MiB/s  = %.2fx 1 thread    (target >= 1.6x)\n", cores,
           mbm / mn, m1 / mn);
    printf("  decrypt from a file (page cache, read(2)): %.0f MiB/s 1 thread, %.0f MiB/s %ld "
           "threads\n",
           mb / d1, mb / dn, cores);
    printf("  peak RSS: %ld MiB (%ld MiB before the archives)  (target < 64 MiB)\n", rss / 1024,
           rss0 / 1024);

    if (have("age") && have("age-keygen")) {
        char cmd[2048], out[600];
        snprintf(cmd, sizeof(cmd),
                 "age-keygen -o '%s/age.key' 2>/dev/null && age-keygen -y '%s/age.key' > "
                 "'%s/age.pub'",
                 dir, dir, dir);
        if (system(cmd) == 0) {
            snprintf(out, sizeof(out), "%s/a.age", dir);
            double ae = -1, ad = -1;
            for (int r = 0; r < RUNS; r++)
                ae = best(ae, age_encrypt(dir, buf, mib, "/dev/null"));
            (void)age_encrypt(dir, buf, mib, out);
            for (int r = 0; r < RUNS; r++)
                ad = best(ad, age_decrypt(dir, out));
            unlink(out);
            printf("  age encrypt:            %8.0f MiB/s; archive = %.1fx age with 1 thread, "
                   "%.1fx with %ld (target >= 1.5x)\n",
                   mb / ae, ae / e1, ae / en, cores);
            printf("  age decrypt:            %8.0f MiB/s; archive = %.1fx age with 1 thread, "
                   "%.1fx with %ld (target >= 1.5x)\n",
                   mb / ad, ad / d1, ad / dn, cores);
        }
        snprintf(cmd, sizeof(cmd), "rm -f '%s/age.key' '%s/age.pub'", dir, dir);
        (void)system(cmd);
    } else {
        printf("  age: not installed (scripts/setup installs it)\n");
    }
    rmdir(dir);
    free(buf);
    free(rbuf);
    return 0;
}
