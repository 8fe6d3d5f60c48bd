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
 * output is written to /dev/null with write(2). Decryption reads the
 * archive held in memory (mib MiB), and also, as kmsctl does, an
 * archive written to $TMPDIR (so in the page cache) through read(2). Each
 * Encryption reads the same 1 MiB (cache-hot, as `openssl speed` does);
 * decryption reads the archive from RAM, so it also pays for memory
 * bandwidth. Each case runs in 5 interleaved rounds (so a burst of other work on a shared
 * machine hits every case alike) and reports its median round; the
 * baseline is the loop `openssl speed` runs, in this process, in the same
 * rounds, on 1 thread and on all cores (the machine's ceiling at the
 * time); `openssl speed` itself is printed too. RSS is the process's peak
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

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>

#include "archive_stream.h"

#define CHUNK (1u << 20)
#define ROUNDS 5

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

/* The ceiling, in this process: what `openssl speed -evp aes-256-gcm
 * -bytes 1048576` does (EVP AES-256-GCM over one 1 MiB buffer again and
 * again, a fresh IV each time), on `threads` threads at once. Seconds for
 * mib MiB in total. */
struct raw_arg {
    const uint8_t *buf;
    long mib;
};

static void *raw_thread(void *p)
{
    struct raw_arg *a = p;
    static const uint8_t key[32], iv0[12];
    uint8_t *out = malloc(CHUNK + 16), iv[12];
    EVP_CIPHER *aes = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int l, ok = out && aes && c && EVP_EncryptInit_ex2(c, aes, key, iv0, NULL) == 1;
    memcpy(iv, iv0, sizeof(iv));
    for (long i = 0; ok && i < a->mib; i++) {
        iv[11] = (uint8_t)i;
        ok = EVP_EncryptInit_ex2(c, NULL, NULL, iv, NULL) == 1 &&
             EVP_EncryptUpdate(c, out, &l, a->buf, CHUNK) == 1 &&
             EVP_EncryptFinal_ex(c, out + l, &l) == 1 &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, out + CHUNK) == 1;
    }
    EVP_CIPHER_CTX_free(c);
    EVP_CIPHER_free(aes);
    free(out);
    return ok ? p : NULL;
}

static double raw_evp(const uint8_t *buf, long mib, long threads)
{
    pthread_t t[64];
    struct raw_arg a = {buf, mib / threads};
    double t0 = now();
    for (long i = 0; i < threads; i++)
        if (pthread_create(&t[i], NULL, raw_thread, &a) != 0)
            exit(1);
    for (long i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    return now() - t0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return v[n / 2];
}

enum { RAW1, RAWN, ENC1, ENCN, DEC1, DECN, FILE1, FILEN, N_CASES };

int main(int argc, char **argv)
{
    long mib = argc > 1 ? strtol(argv[1], NULL, 10) : 1024;
    if (mib < 64)
        return 2;
    mib -= mib % 64;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores > 64)
        cores = 64;
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

    printf("archives: %ld MiB from memory to /dev/null, 1 MiB segments, %ld cores;\n"
           "  cases interleaved over %d rounds, median round (a shared machine is noisy)\n",
           mib, cores, ROUNDS);
    long rss0 = vm_kib("VmHWM:");
    /* The archive decrypted from a file, made once. */
    int afd = open(arch, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    (void)encrypt_to(afd, buf, mib, (unsigned)cores);
    close(afd);
    double file1 = decrypt_from(arch, 1, rbuf); /* warms the page cache */
    long rss = vm_kib("VmHWM:");

    /* Decrypt from memory: the whole archive held in memory (this buffer
     * is the benchmark's, after the RSS figure above; one long stream, as
     * the encryption is, so the per-archive set-up does not weigh). */
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
        for (long i = 0; i < mib; i++)
            if (kms_archive_stream_update(st, buf, CHUNK, &err) != 0)
                return 1;
        if (kms_archive_stream_final(st, &err) != 0)
            return 1;
        kms_archive_stream_free(st);
        kms_secret_free(dk);
    }
    int reps = 1;

    double t[N_CASES][ROUNDS];
    int null_fd = open("/dev/null", O_WRONLY);
    for (int r = 0; r < ROUNDS; r++) {
        t[RAW1][r] = raw_evp(buf, mib, 1);
        t[ENC1][r] = encrypt_to(null_fd, buf, mib, 1);
        t[DEC1][r] = decrypt_mem(m.p, m.len, reps, 1);
        t[RAWN][r] = raw_evp(buf, mib, cores);
        t[ENCN][r] = encrypt_to(null_fd, buf, mib, (unsigned)cores);
        t[DECN][r] = decrypt_mem(m.p, m.len, reps, (unsigned)cores);
        t[FILE1][r] = r == 0 ? file1 : decrypt_from(arch, 1, rbuf);
        t[FILEN][r] = decrypt_from(arch, (unsigned)cores, rbuf);
    }
    close(null_fd);
    unlink(arch);
    free(m.p);
    double rate[N_CASES];
    for (int c = 0; c < N_CASES; c++)
        rate[c] = mb / median(t[c], ROUNDS);

    double ossl = openssl_speed(1);
    printf("  `openssl speed -evp aes-256-gcm -bytes 1048576` (1 core, its own run): %.0f MiB/s\n",
           ossl);
    printf("  the same loop in this process, 1 thread:  %6.0f MiB/s\n", rate[RAW1]);
    printf("  the same loop on %ld threads:              %6.0f MiB/s = %.2fx (the machine's "
           "ceiling now)\n",
           cores, rate[RAWN], rate[RAWN] / rate[RAW1]);
    printf("  encrypt, 1 thread:   %6.0f MiB/s = %3.0f %% of the loop   (target >= 80 %%)\n",
           rate[ENC1], 100 * rate[ENC1] / rate[RAW1]);
    printf("  encrypt, %ld threads:  %6.0f MiB/s = %.2fx 1 thread      (target >= 1.6x)\n", cores,
           rate[ENCN], rate[ENCN] / rate[ENC1]);
    printf("  decrypt, 1 thread:   %6.0f MiB/s = %3.0f %% of the loop   (target >= 80 %%)\n",
           rate[DEC1], 100 * rate[DEC1] / rate[RAW1]);
    printf("  decrypt, %ld threads:  %6.0f MiB/s = %.2fx 1 thread      (target >= 1.6x)\n", cores,
           rate[DECN], rate[DECN] / rate[DEC1]);
    printf("  decrypt from a file (page cache, read(2), as kmsctl): %.0f MiB/s 1 thread, "
           "%.0f MiB/s %ld threads\n",
           rate[FILE1], rate[FILEN], cores);
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
            double ae[ROUNDS], ad[ROUNDS];
            (void)age_encrypt(dir, buf, mib, out);
            for (int r = 0; r < ROUNDS; r++) {
                ae[r] = age_encrypt(dir, buf, mib, "/dev/null");
                ad[r] = age_decrypt(dir, out);
            }
            unlink(out);
            double are = mb / median(ae, ROUNDS), ard = mb / median(ad, ROUNDS);
            printf("  age encrypt: %6.0f MiB/s; archive = %.1fx age on 1 thread, %.1fx on %ld "
                   "(target >= 1.5x)\n",
                   are, rate[ENC1] / are, rate[ENCN] / are, cores);
            printf("  age decrypt: %6.0f MiB/s; archive = %.1fx age on 1 thread, %.1fx on %ld "
                   "(target >= 1.5x)\n",
                   ard, rate[DEC1] / ard, rate[DECN] / ard, cores);
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
