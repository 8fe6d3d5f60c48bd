/* kmsctl archives against a real kmsd (mutual TLS, SoftHSM2 token, SQLite
 * file, test clock): encrypt / decrypt round trips through files, stdin and
 * stdout with 1 and 4 threads; every negative (truncation at each segment
 * boundary, corruption in each segment, reordering, trailing bytes, not an
 * archive, another version, wrong context, tampered wrapped key, no
 * permission) with its exit code and no output file; rewrap after a master
 * key rotation (the data bytes unchanged); inspect; crypto-shredding through
 * the quorum; and one archive over 100 MiB through pipes, with the memory
 * of every process in the pipeline under 64 MiB.
 *
 * KMS_ARCHIVE_BIG_MIB sets the size of the pipe test (default 101). */
#include <fcntl.h>
#include <pty.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "group_run.h"
#include "kms/client.h"
#include "kmsctl_runner.h"
#include "kmsd_fixture.h"

#define SEG 4096
#define UNIT (SEG + 16)
#define DAY 86400

static kms_test_kmsd K;
static char DIR_[320], CLOCK[400];
static char OUT[65536], ERR[65536];
static char APP[400], BOB[400], O1[400], O2[400];
static int64_t NOW = 1900000000;

static const char *kmsctl_path(void)
{
    const char *p = getenv("KMS_KMSCTL");
    if (p == NULL)
        fail_msg("KMS_KMSCTL not set");
    return p;
}

static void path_in(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", DIR_, name);
}

static void set_clock(int64_t t)
{
    char tmp[420];
    NOW = t;
    snprintf(tmp, sizeof(tmp), "%s.new", CLOCK);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    fprintf(f, "%lld\n", (long long)t);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, CLOCK), 0);
}

static void write_conf(char *path, size_t cap, const char *who, const char *signing_key)
{
    char ca[400], cert[400], key[400], f1[64], f2[64], name[64];
    snprintf(f1, sizeof(f1), "%s.pem", who);
    snprintf(f2, sizeof(f2), "%s-key.pem", who);
    snprintf(name, sizeof(name), "%s.conf", who);
    path_in(path, cap, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "server: %s\nca: %s\ncert: %s\nkey: %s\n", K.target,
            kms_test_kmsd_pki(&K, "ca.pem", ca, sizeof(ca)),
            kms_test_kmsd_pki(&K, f1, cert, sizeof(cert)),
            kms_test_kmsd_pki(&K, f2, key, sizeof(key)));
    if (signing_key != NULL)
        fprintf(f, "signing_key: %s\n", signing_key);
    fclose(f);
}

/* Runs kmsctl with args (NULL-terminated); stdout in OUT, stderr in ERR. */
static int kmsctl(const char *first, ...)
{
    const char *args[48];
    size_t n = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a != NULL && n < 47; a = va_arg(ap, const char *))
        args[n++] = a;
    va_end(ap);
    args[n] = NULL;
    return kms_test_kmsctl(DIR_, args, OUT, sizeof(OUT), ERR, sizeof(ERR));
}

/* Runs a shell command line in DIR_ ($K is kmsctl, $A app.conf); returns
 * its exit status. stderr goes to DIR_/sh.err, read into ERR. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[4096], line[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    snprintf(line, sizeof(line), "cd '%s' && K='%s' A='%s' B='%s' exec 2>sh.err; %s", DIR_,
             kmsctl_path(), APP, BOB, cmd);
    int st = system(line);
    char errpath[400];
    path_in(errpath, sizeof(errpath), "sh.err");
    FILE *f = fopen(errpath, "r");
    size_t n = f ? fread(ERR, 1, sizeof(ERR) - 1, f) : 0;
    ERR[n] = '\0';
    if (f)
        fclose(f);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

/* The value of the last "name: value" line in OUT. */
static const char *field(const char *name, char *buf, size_t cap)
{
    char key[64];
    snprintf(key, sizeof(key), "%s: ", name);
    const char *p = NULL;
    for (const char *q = OUT; (q = strstr(q, key)) != NULL; q++)
        if (q == OUT || q[-1] == '\n')
            p = q;
    if (p == NULL)
        fail_msg("no %s in output: %s", name, OUT);
    p += strlen(key);
    size_t n = strcspn(p, "\n");
    assert_true(n < cap);
    memcpy(buf, p, n);
    buf[n] = '\0';
    return buf;
}

static uint8_t *slurp(const char *name, size_t *len)
{
    char path[400];
    path_in(path, sizeof(path), name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("%s: missing", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(n ? (size_t)n : 1);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

static void spit(const char *name, const uint8_t *p, size_t n)
{
    char path[400];
    path_in(path, sizeof(path), name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static int exists(const char *name)
{
    char path[400];
    struct stat st;
    path_in(path, sizeof(path), name);
    return stat(path, &st) == 0;
}

/* No file of the directory but the expected ones starts with ".NAME." (a
 * leftover temporary file). */
static void no_temp_left(const char *name)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "ls -a | grep -q '^\\.%s\\.kmsctl-'", name);
    assert_int_equal(sh("%s", cmd), 1);
}

/* Deterministic bytes: byte i of a stream seeded by seed. */
static void fill(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

static int group_setup(void **state)
{
    (void)state;
    kms_test_kmsd_setup(&K);
    snprintf(DIR_, sizeof(DIR_), "%.*s", (int)(strrchr(K.config, '/') - K.config), K.config);
    snprintf(CLOCK, sizeof(CLOCK), "%s/clock", DIR_);
    set_clock(NOW);
    const char *extra[] = {"--test-clock", CLOCK, NULL};
    kms_test_kmsd_start(&K, extra);
    char k1[400], k2[400];
    write_conf(O1, sizeof(O1), "officer1",
               kms_test_kmsd_pki(&K, "officer1-signing-key.pem", k1, sizeof(k1)));
    write_conf(O2, sizeof(O2), "officer2",
               kms_test_kmsd_pki(&K, "officer2-signing-key.pem", k2, sizeof(k2)));
    write_conf(APP, sizeof(APP), "app", NULL);
    write_conf(BOB, sizeof(BOB), "bob", NULL);
    /* File names in the tests are relative to the fixture's directory. */
    assert_int_equal(chdir(DIR_), 0);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    assert_int_equal(chdir("/"), 0);
    assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
    kms_test_kmsd_teardown(&K);
    return 0;
}

/* Sizes 0, 1, segment - 1, segment, segment + 1, 3 segments + 7; through
 * files and through stdin/stdout; 1 and 4 threads (crossed: an archive
 * made with one count is read with the other). */
static void round_trips(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG + 7};
    uint8_t *pt = malloc(3 * SEG + 7);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        fill(pt, sizes[i], (uint32_t)i);
        spit("pt", pt, sizes[i]);
        const char *t1 = i % 2 ? "1" : "4", *t2 = i % 2 ? "4" : "1";
        /* Files. */
        assert_int_equal(kmsctl("--config", APP, "encrypt", "--key", "demo", "--context",
                                "db=billing", "--context", "app=backup", "--segment-size", "4096",
                                "--threads", t1, "pt", "a.kmsa", NULL),
                         0);
        size_t alen;
        uint8_t *a = slurp("a.kmsa", &alen);
        size_t nseg = sizes[i] == 0 ? 1 : (sizes[i] + SEG - 1) / SEG;
        assert_memory_equal(a, "KMSA\x01", 5);
        size_t hl = (size_t)a[5] << 24 | (size_t)a[6] << 16 | (size_t)a[7] << 8 | a[8];
        assert_int_equal(alen, hl + sizes[i] + 16 * nseg);
        /* Not a byte of plaintext (of any size worth checking) in it. */
        if (sizes[i] >= 16)
            assert_null(memmem(a, alen, pt, 16));
        free(a);
        assert_int_equal(kmsctl("--config", APP, "--json", "decrypt", "--context", "app=backup",
                                "--context", "db=billing", "--threads", t2, "a.kmsa", "back", NULL),
                         0);
        size_t blen;
        uint8_t *b = slurp("back", &blen);
        assert_int_equal(blen, sizes[i]);
        if (blen)
            assert_memory_equal(b, pt, blen);
        free(b);
        char want[64];
        snprintf(want, sizeof(want), "\"bytes_out\":%zu,", sizes[i]);
        assert_non_null(strstr(OUT, want));
        /* stdin and stdout. */
        assert_int_equal(sh("$K --config \"$A\" encrypt --key demo --context app=backup "
                            "--context db=billing --segment-size 4096 --threads %s < pt > s.kmsa",
                            t2),
                         0);
        assert_int_equal(sh("$K --config \"$A\" decrypt --context app=backup --context "
                            "db=billing --threads %s < s.kmsa | cmp -s - pt",
                            t1),
                         0);
        assert_int_equal(sh("$K --config \"$A\" decrypt --context app=backup --context "
                            "db=billing - - < a.kmsa | cmp -s - pt"),
                         0);
    }
    /* The default segment (1 MiB) around its boundary, all cores. */
    size_t big = (1u << 20) + 1;
    uint8_t *p = malloc(big);
    fill(p, big, 99);
    spit("pt", p, big);
    assert_int_equal(kmsctl("--config", APP, "encrypt", "--key", "demo", "pt", "a.kmsa", NULL), 0);
    assert_int_equal(kmsctl("--config", APP, "inspect", "a.kmsa", NULL), 0);
    char v[64];
    assert_string_equal(field("segment_size", v, sizeof(v)), "1048576");
    assert_string_equal(field("segments", v, sizeof(v)), "2");
    assert_string_equal(field("plaintext_size", v, sizeof(v)), "1048577");
    assert_int_equal(sh("$K --config \"$A\" decrypt a.kmsa | cmp -s - pt"), 0);
    free(p);
    free(pt);
    no_temp_left("back");
    no_temp_left("a.kmsa");
}

/* Summaries: text on stdout when the data goes to a file, JSON with
 * --json, on stderr when stdout carries the data. */
static void summaries_and_inspect(void **state)
{
    (void)state;
    uint8_t pt[5000];
    fill(pt, sizeof(pt), 7);
    spit("pt", pt, sizeof(pt));
    assert_int_equal(kmsctl("--config", APP, "--json", "encrypt", "--key", "demo", "--context",
                            "app=backup", "pt", "j.kmsa", NULL),
                     0);
    assert_non_null(strstr(OUT, "\"command\":\"encrypt\""));
    assert_non_null(strstr(OUT, "\"key_name\":\"demo\""));
    assert_non_null(strstr(OUT, "\"bytes_in\":5000"));
    assert_int_equal(kmsctl("--config", APP, "--json", "inspect", "j.kmsa", NULL), 0);
    assert_non_null(strstr(OUT, "\"format\":\"kms archive\""));
    assert_non_null(strstr(OUT, "\"format_version\":1"));
    assert_non_null(strstr(OUT, "\"key_name\":\"demo\""));
    assert_non_null(strstr(OUT, "\"context.app\":\"backup\""));
    assert_non_null(strstr(OUT, "\"plaintext_size\":5000"));
    assert_non_null(strstr(OUT, "\"segments\":1"));
    /* inspect needs no server and no permission. */
    assert_int_equal(kmsctl("inspect", "j.kmsa", NULL), 0);
    char v[64];
    assert_string_equal(field("key_name", v, sizeof(v)), "demo");
    assert_int_equal(sh("$K --config \"$A\" --json decrypt --context app=backup < j.kmsa > "
                        "back && cmp -s back pt"),
                     0);
    assert_non_null(strstr(ERR, "\"bytes_out\":5000"));
    /* Not a terminal: silent; --progress forces the bar on stderr. */
    assert_int_equal(kmsctl("--config", APP, "encrypt", "--key", "demo", "pt", "p.kmsa", NULL), 0);
    assert_string_equal(OUT, "");
    assert_string_equal(ERR, "");
    assert_int_equal(
        kmsctl("--config", APP, "encrypt", "--key", "demo", "--progress", "pt", "p.kmsa", NULL), 0);
    assert_non_null(strstr(ERR, "MiB/s"));
    assert_non_null(strstr(ERR, "100%"));
    assert_int_equal(sh("$K --config \"$A\" decrypt --progress p.kmsa > /dev/null"), 0);
    assert_non_null(strstr(ERR, "MiB/s"));
    /* Usage: encrypt without a key; three positionals; bad thread counts. */
    assert_int_equal(kmsctl("--config", APP, "encrypt", "pt", "x", NULL), 2);
    assert_int_equal(kmsctl("--config", APP, "encrypt", "--key", "demo", "a", "b", "c", NULL), 2);
    assert_int_equal(kmsctl("--config", APP, "decrypt", "--threads", "0", "j.kmsa", "x", NULL), 2);
    assert_int_equal(kmsctl("--config", APP, "encrypt", "--key", "demo", "--segment-size", "100",
                            "pt", "x", NULL),
                     2);
    assert_false(exists("x"));
    /* The 4 KiB blob commands keep their form. */
    assert_int_equal(kmsctl("--config", APP, "encrypt", "--key", "demo", "--in-b64",
                            "aGk=", "--out", "blob", NULL),
                     0);
    assert_int_equal(kmsctl("--config", APP, "decrypt", "--in", "blob", NULL), 0);
    assert_string_equal(field("plaintext", v, sizeof(v)), "aGk=");
}

/* Runs kmsctl with its stderr (and stdout, unless out_file) on a new
 * terminal; returns the exit status, the terminal's text in buf. */
static int on_terminal(const char *out_file, const char *const *args, char *buf, size_t cap)
{
    int master;
    pid_t pid = forkpty(&master, NULL, NULL, NULL);
    assert_true(pid >= 0);
    if (pid == 0) {
        if (out_file != NULL) {
            int fd = open(out_file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            if (fd < 0 || dup2(fd, 1) < 0)
                _exit(127);
        }
        const char *argv[32] = {kmsctl_path()};
        for (size_t i = 0; args[i] != NULL && i < 30; i++)
            argv[i + 1] = args[i];
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    size_t got = 0;
    for (;;) {
        ssize_t r = read(master, buf + got, cap - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    close(master);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

/* On a terminal: the progress bar on stderr without asking, and never an
 * archive or plaintext written to the terminal itself. */
static void terminal(void **state)
{
    (void)state;
    uint8_t pt[300000];
    fill(pt, sizeof(pt), 3);
    spit("pt", pt, sizeof(pt));
    char buf[8192];
    const char *enc[] = {"--config", APP, "encrypt", "--key", "demo", "pt", "t.kmsa", NULL};
    assert_int_equal(on_terminal("/dev/null", enc, buf, sizeof(buf)), 0);
    assert_non_null(strstr(buf, "MiB/s"));
    assert_non_null(strstr(buf, "100%"));
    const char *dec[] = {"--config", APP, "decrypt", "t.kmsa", NULL};
    assert_int_equal(on_terminal("tty.out", dec, buf, sizeof(buf)), 0);
    assert_non_null(strstr(buf, "MiB/s"));
    size_t n;
    uint8_t *back = slurp("tty.out", &n);
    assert_int_equal(n, sizeof(pt));
    assert_memory_equal(back, pt, n);
    free(back);
    /* Standard output on the terminal: refused (2), nothing decrypted to it. */
    assert_int_equal(on_terminal(NULL, dec, buf, sizeof(buf)), 2);
    assert_non_null(strstr(buf, "refusing to write binary data to a terminal"));
    const char *enc2[] = {"--config", APP, "encrypt", "--key", "demo", "pt", NULL};
    assert_int_equal(on_terminal(NULL, enc2, buf, sizeof(buf)), 2);
    assert_null(strstr(buf, "KMSA"));
}

/* Decrypts name to a file (the output must not exist afterwards) and to
 * stdout (what came out must be whole authenticated segments of pt);
 * returns the exit code, the same both ways. */
static int decrypt_fails(const char *name, const uint8_t *pt, size_t pt_len)
{
    int r = kmsctl("--config", APP, "decrypt", "--context", "app=backup", "--threads", "4", name,
                   "out", NULL);
    assert_false(exists("out"));
    no_temp_left("out");
    int r2 = sh("$K --config \"$A\" decrypt --context app=backup --threads 2 %s > so", name);
    assert_int_equal(r, r2);
    size_t n;
    uint8_t *so = slurp("so", &n);
    assert_true(n % SEG == 0 && n <= pt_len);
    if (n)
        assert_memory_equal(so, pt, n);
    if (n > 0)
        assert_non_null(strstr(ERR, "archive truncated or corrupt: output incomplete"));
    free(so);
    return r;
}

static void negatives(void **state)
{
    (void)state;
    size_t n = 3 * SEG + 7;
    uint8_t *pt = malloc(n);
    fill(pt, n, 42);
    spit("pt", pt, n);
    assert_int_equal(kmsctl("--config", APP, "encrypt", "--key", "demo", "--context", "app=backup",
                            "--segment-size", "4096", "pt", "n.kmsa", NULL),
                     0);
    size_t alen;
    uint8_t *a = slurp("n.kmsa", &alen);
    size_t hl = (size_t)a[5] << 24 | (size_t)a[6] << 16 | (size_t)a[7] << 8 | a[8];
    uint8_t *t = malloc(alen + 2 * UNIT);

    /* Truncation: at every segment boundary (11), inside the header (11),
     * inside each segment (12), and nothing at all (8). */
    for (size_t k = 0; k <= 3; k++) {
        spit("t.kmsa", a, hl + k * UNIT);
        assert_int_equal(decrypt_fails("t.kmsa", pt, n), 11);
        assert_non_null(strstr(ERR, "truncated"));
        if (k < 3) {
            spit("t.kmsa", a, hl + k * UNIT + 100);
            assert_int_equal(decrypt_fails("t.kmsa", pt, n), 12);
        }
    }
    spit("t.kmsa", a, hl - 1);
    assert_int_equal(decrypt_fails("t.kmsa", pt, n), 11);
    spit("t.kmsa", a, 0);
    assert_int_equal(decrypt_fails("t.kmsa", pt, n), 8);

    /* A flipped byte in each segment (12), and in the header's bound part. */
    for (size_t k = 0; k < 4; k++) {
        memcpy(t, a, alen);
        t[hl + k * UNIT + 5] ^= 1;
        spit("t.kmsa", t, alen);
        assert_int_equal(decrypt_fails("t.kmsa", pt, n), 12);
    }
    memcpy(t, a, alen);
    t[20] ^= 1; /* the salt */
    spit("t.kmsa", t, alen);
    assert_int_equal(decrypt_fails("t.kmsa", pt, n), 12);
    /* The wrapped data key: kmsd refuses it (12). */
    memcpy(t, a, alen);
    t[hl - 20] ^= 1;
    spit("t.kmsa", t, alen);
    assert_int_equal(decrypt_fails("t.kmsa", pt, n), 12);
    /* Segments swapped, duplicated; trailing bytes. */
    memcpy(t, a, alen);
    memcpy(t + hl, a + hl + UNIT, UNIT);
    memcpy(t + hl + UNIT, a + hl, UNIT);
    spit("t.kmsa", t, alen);
    assert_int_equal(decrypt_fails("t.kmsa", pt, n), 12);
    memcpy(t, a, hl + 2 * UNIT);
    memcpy(t + hl + 2 * UNIT, a + hl + UNIT, alen - hl - UNIT);
    spit("t.kmsa", t, alen + UNIT);
    assert_int_equal(decrypt_fails("t.kmsa", pt, n), 12);
    memcpy(t, a, alen);
    memset(t + alen, 0, 32);
    spit("t.kmsa", t, alen + 1);
    assert_int_equal(decrypt_fails("t.kmsa", pt, n), 12);
    spit("t.kmsa", t, alen + 32);
    assert_int_equal(decrypt_fails("t.kmsa", pt, n), 12);

    /* Not an archive (8), another version (9). */
    spit("t.kmsa", pt, n);
    assert_int_equal(decrypt_fails("t.kmsa", pt, n), 8);
    assert_non_null(strstr(ERR, "not an archive"));
    memcpy(t, a, alen);
    t[4] = 2;
    spit("t.kmsa", t, alen);
    assert_int_equal(decrypt_fails("t.kmsa", pt, n), 9);
    assert_int_equal(kmsctl("inspect", "t.kmsa", NULL), 9);

    /* Wrong context (10): another value, a missing pair, an extra pair. */
    static const char *const wrong[][4] = {{"--context", "app=other", NULL, NULL},
                                           {NULL, NULL, NULL, NULL},
                                           {"--context", "app=backup", "--context", "x=y"}};
    for (size_t i = 0; i < 3; i++) {
        const char *args[12] = {"--config", APP, "decrypt"};
        size_t m = 3;
        for (size_t j = 0; j < 4 && wrong[i][j]; j++)
            args[m++] = wrong[i][j];
        args[m++] = "n.kmsa";
        args[m++] = "out";
        args[m] = NULL;
        assert_int_equal(kms_test_kmsctl(DIR_, args, OUT, sizeof(OUT), ERR, sizeof(ERR)), 10);
        assert_non_null(strstr(ERR, "wrong encryption context"));
        assert_false(exists("out"));
    }
    /* No permission on the key (3): bob may not decrypt with demo, the app
     * may not encrypt with locked. */
    assert_int_equal(
        kmsctl("--config", BOB, "decrypt", "--context", "app=backup", "n.kmsa", "out", NULL), 3);
    assert_false(exists("out"));
    assert_int_equal(kmsctl("--config", APP, "encrypt", "--key", "locked", "pt", "l.kmsa", NULL),
                     3);
    assert_false(exists("l.kmsa"));
    no_temp_left("l.kmsa");
    /* The untouched archive decrypts. */
    assert_int_equal(
        kmsctl("--config", APP, "decrypt", "--context", "app=backup", "n.kmsa", "out", NULL), 0);
    free(t);
    free(a);
    free(pt);
}

/* Passes an action through the quorum: officer1 proposes and approves,
 * officer2 approves (threshold 2). */
static void quorum(const char *a1, const char *a2, const char *a3, const char *a4, const char *a5)
{
    char id[64];
    assert_int_equal(kmsctl("--config", O1, "propose", a1, a2, a3, a4, a5, NULL), 0);
    field("action", id, sizeof(id));
    assert_int_equal(kmsctl("--config", O1, "approve", id, "--yes", NULL), 0);
    assert_int_equal(kmsctl("--config", O2, "approve", id, "--yes", NULL), 0);
    assert_non_null(strstr(OUT, "EXECUTED"));
}

/* After a rotation, rewrap names the new version, only the header
 * changes, and the archive still decrypts; several files at once; to
 * another key. */
static void rewrap_after_rotation(void **state)
{
    (void)state;
    size_t n = 2 * SEG + 3;
    uint8_t *pt = malloc(n);
    fill(pt, n, 5);
    spit("pt", pt, n);
    assert_int_equal(kmsctl("--config", APP, "encrypt", "--key", "demo", "--context", "app=r",
                            "--segment-size", "4096", "pt", "r1.kmsa", NULL),
                     0);
    assert_int_equal(kmsctl("--config", APP, "encrypt", "--key", "demo", "--context", "app=r", "pt",
                            "r2.kmsa", NULL),
                     0);
    assert_int_equal(kmsctl("inspect", "r1.kmsa", NULL), 0);
    char v[64], before[64];
    field("key_version", before, sizeof(before));
    size_t len1, len2;
    uint8_t *old1 = slurp("r1.kmsa", &len1);
    size_t hl1 = (size_t)old1[5] << 24 | (size_t)old1[6] << 16 | (size_t)old1[7] << 8 | old1[8];

    quorum("rotate-key", "--key", "demo", NULL, NULL);

    assert_int_equal(kmsctl("--config", APP, "rewrap", "r1.kmsa", "r2.kmsa", NULL), 0);
    assert_int_equal(kmsctl("inspect", "r1.kmsa", NULL), 0);
    assert_int_equal(strtol(field("key_version", v, sizeof(v)), NULL, 10),
                     strtol(before, NULL, 10) + 1);
    assert_int_equal(kmsctl("inspect", "r2.kmsa", NULL), 0);
    assert_int_equal(strtol(field("key_version", v, sizeof(v)), NULL, 10),
                     strtol(before, NULL, 10) + 1);
    uint8_t *new1 = slurp("r1.kmsa", &len2);
    size_t hl2 = (size_t)new1[5] << 24 | (size_t)new1[6] << 16 | (size_t)new1[7] << 8 | new1[8];
    /* The data bytes after the header are unchanged. */
    assert_int_equal(len1 - hl1, len2 - hl2);
    assert_memory_equal(old1 + hl1, new1 + hl2, len1 - hl1);
    /* And the wrapped key did change. */
    assert_true(hl1 != hl2 || memcmp(old1, new1, hl1) != 0);
    free(new1);
    assert_int_equal(sh("$K --config \"$A\" decrypt --context app=r r1.kmsa | cmp -s - pt"), 0);
    assert_int_equal(sh("$K --config \"$A\" decrypt --context app=r r2.kmsa | cmp -s - pt"), 0);

    /* To another key, with --json; a missing file among them fails that
     * file only (the others are rewrapped; the exit code is the first
     * failure's). */
    assert_int_equal(kmsctl("--config", APP, "--json", "rewrap", "--key", "second", "r1.kmsa",
                            "missing.kmsa", "r2.kmsa", NULL),
                     2);
    assert_non_null(strstr(OUT, "\"key_name\":\"second\""));
    assert_non_null(strstr(OUT, "\"file\":\"missing.kmsa\",\"error\""));
    assert_int_equal(kmsctl("inspect", "r2.kmsa", NULL), 0);
    assert_string_equal(field("key_name", v, sizeof(v)), "second");
    assert_int_equal(sh("$K --config \"$A\" decrypt --context app=r r2.kmsa | cmp -s - pt"), 0);
    /* The key name in the header is not authenticated: renamed to "demo"
     * (a key the caller may re-encrypt to), a rewrap without --key must not
     * follow it to another key than the archive's. Refused as corrupt (12),
     * the file unchanged. */
    size_t flen;
    uint8_t *f2 = slurp("r2.kmsa", &flen);
    size_t fh = (size_t)f2[5] << 24 | (size_t)f2[6] << 16 | (size_t)f2[7] << 8 | f2[8];
    size_t at = 0;
    for (size_t i = 9; i + 7 <= fh && at == 0; i++)
        if (f2[i] == 6 && memcmp(f2 + i + 1, "second", 6) == 0)
            at = i;
    assert_true(at > 0);
    uint8_t *forged = malloc(flen - 2);
    assert_non_null(forged);
    memcpy(forged, f2, at);
    forged[at] = 4;
    memcpy(forged + at + 1, "demo", 4);
    memcpy(forged + at + 5, f2 + at + 7, flen - at - 7);
    size_t nh = fh - 2;
    forged[5] = (uint8_t)(nh >> 24);
    forged[6] = (uint8_t)(nh >> 16);
    forged[7] = (uint8_t)(nh >> 8);
    forged[8] = (uint8_t)nh;
    spit("forged.kmsa", forged, flen - 2);
    assert_int_equal(kmsctl("inspect", "forged.kmsa", NULL), 0);
    assert_string_equal(field("key_name", v, sizeof(v)), "demo");
    assert_int_equal(kmsctl("--config", APP, "rewrap", "forged.kmsa", NULL), 12);
    size_t flen2;
    uint8_t *after = slurp("forged.kmsa", &flen2);
    assert_int_equal(flen2, flen - 2);
    assert_memory_equal(after, forged, flen2);
    free(after);
    free(forged);
    free(f2);
    /* rewrap never reads the data: an archive with a damaged segment is
     * rewrapped as it is (and still fails to decrypt, with the damage
     * where it was). */
    uint8_t *cur = slurp("r1.kmsa", &len2);
    size_t hl3 = (size_t)cur[5] << 24 | (size_t)cur[6] << 16 | (size_t)cur[7] << 8 | cur[8];
    cur[len2 - 1] ^= 1;
    spit("r3.kmsa", cur, len2);
    assert_int_equal(kmsctl("--config", APP, "rewrap", "--key", "demo", "r3.kmsa", NULL), 0);
    size_t len4;
    uint8_t *r3 = slurp("r3.kmsa", &len4);
    size_t hl4 = (size_t)r3[5] << 24 | (size_t)r3[6] << 16 | (size_t)r3[7] << 8 | r3[8];
    assert_int_equal(len4 - hl4, len2 - hl3);
    assert_memory_equal(r3 + hl4, cur + hl3, len2 - hl3);
    assert_int_equal(
        kmsctl("--config", APP, "decrypt", "--context", "app=r", "r3.kmsa", "out3", NULL), 12);
    assert_false(exists("out3"));
    free(r3);
    free(cur);
    /* Not an archive: 8, nothing written. */
    assert_int_equal(kmsctl("--config", APP, "rewrap", "pt", NULL), 8);
    size_t len3;
    uint8_t *same = slurp("pt", &len3);
    assert_int_equal(len3, n);
    assert_memory_equal(same, pt, n);
    free(same);
    /* Without permission (bob): 3, the file unchanged. */
    uint8_t *r2 = slurp("r2.kmsa", &len1);
    assert_int_equal(kmsctl("--config", BOB, "rewrap", "r2.kmsa", NULL), 3);
    same = slurp("r2.kmsa", &len3);
    assert_int_equal(len1, len3);
    assert_memory_equal(same, r2, len1);
    assert_int_equal(sh("ls -a | grep -q rewrap-"), 1); /* no temporary file left */
    free(same);
    free(r2);
    free(old1);
    free(pt);
}

/* After the key is deleted through the quorum (scheduled, then the test
 * clock moved past the window), the archive no longer decrypts. */
static void crypto_shredding(void **state)
{
    (void)state;
    uint8_t pt[10000];
    unlink("out");
    fill(pt, sizeof(pt), 11);
    spit("pt", pt, sizeof(pt));
    assert_int_equal(kmsctl("--config", APP, "encrypt", "--key", "second", "pt", "s.kmsa", NULL),
                     0);
    assert_int_equal(sh("$K --config \"$A\" decrypt s.kmsa | cmp -s - pt"), 0);
    quorum("schedule-key-deletion", "--key", "second", "--days", "7");
    /* Pending: refused already (7), nothing written. */
    assert_int_equal(kmsctl("--config", APP, "decrypt", "s.kmsa", "out", NULL), 7);
    assert_false(exists("out"));
    set_clock(NOW + 7 * DAY + 1);
    int gone = 0;
    for (int i = 0; i < 100 && !gone; i++) {
        usleep(100 * 1000);
        assert_int_equal(kmsctl("--config", APP, "--json", "describe-key", "second", NULL), 0);
        gone = strstr(OUT, "PENDING_DELETION") == NULL && strstr(OUT, "DESTROYED") != NULL;
    }
    assert_true(gone);
    int r = kmsctl("--config", APP, "decrypt", "s.kmsa", "out", NULL);
    /* Refused for the key's state (the version is destroyed), not for
     * anything about the archive. */
    assert_true(r == 7 || r == 4);
    assert_false(exists("out"));
    print_message("decrypt after shredding: exit %d: %s", r, ERR);
    set_clock(NOW - 7 * DAY - 1);
}

/* The library directly: the descriptor helpers, the streaming calls with
 * a sink, inspect, rewrap_file, and its error codes. */
static int to_buf(void *arg, const uint8_t *p, size_t n)
{
    uint8_t **b = arg;
    memcpy(b[0] + (size_t)b[1], p, n);
    b[1] = (uint8_t *)((size_t)b[1] + n);
    return 0;
}

static void library_api(void **state)
{
    (void)state;
    char ca[400], cert[400], key[400];
    kms_client_options o = {.target = K.target,
                            .ca_file = kms_test_kmsd_pki(&K, "ca.pem", ca, sizeof(ca)),
                            .cert_file = kms_test_kmsd_pki(&K, "app.pem", cert, sizeof(cert)),
                            .key_file = kms_test_kmsd_pki(&K, "app-key.pem", key, sizeof(key))};
    kms_client *c;
    kms_client_error err;
    assert_int_equal(kms_client_open(&o, &c, &err), 0);
    size_t n = 3 * 65536 + 11;
    uint8_t *pt = malloc(n);
    fill(pt, n, 77);
    spit("lib.pt", pt, n);
    kms_client_context_entry ctx[] = {{"app", "lib"}};
    kms_client_archive_options opts = {.segment_size = 65536, .threads = 3};
    int in = open("lib.pt", O_RDONLY), out = open("lib.kmsa", O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_int_equal(kms_client_archive_encrypt_fd(c, "demo", ctx, 1, &opts, in, out, &err), 0);
    close(in);
    close(out);
    size_t alen;
    uint8_t *a = slurp("lib.kmsa", &alen);
    size_t hl;
    assert_int_equal(kms_client_archive_header_len(a, 9, &hl, &err), 0);
    kms_client_archive_info info;
    assert_int_equal(kms_client_archive_inspect(a, alen, &info, &err), 0);
    assert_int_equal(info.header_len, hl);
    assert_int_equal(info.segment_size, 65536);
    assert_string_equal(info.key_name, "demo");
    assert_int_equal(info.n_context, 1);
    assert_string_equal(info.context[0].key, "app");
    assert_string_equal(info.context[0].value, "lib");
    assert_true(info.key_version >= 1);
    kms_client_archive_info_free(&info);
    assert_int_equal(kms_client_archive_inspect(a, hl - 1, &info, &err), KMS_CLIENT_ETRUNCATED);

    /* Streaming decrypt into memory, fed in odd pieces. */
    uint8_t *back = malloc(n);
    uint8_t *sinkarg[2] = {back, 0};
    kms_client_archive *ar;
    assert_int_equal(kms_client_archive_decrypt_init(c, ctx, 1, NULL, to_buf, sinkarg, &ar, &err),
                     0);
    for (size_t off = 0; off < alen; off += 9999)
        assert_int_equal(
            kms_client_archive_update(ar, a + off, alen - off < 9999 ? alen - off : 9999, &err), 0);
    assert_int_equal(kms_client_archive_final(ar, &err), 0);
    kms_client_archive_free(ar);
    assert_int_equal((size_t)sinkarg[1], n);
    assert_memory_equal(back, pt, n);

    /* decrypt_fd; a wrong context is ECONTEXT before any call to kmsd. */
    in = open("lib.kmsa", O_RDONLY);
    out = open("lib.back", O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_int_equal(kms_client_archive_decrypt_fd(c, ctx, 1, NULL, in, out, &err), 0);
    close(in);
    close(out);
    size_t blen;
    uint8_t *b = slurp("lib.back", &blen);
    assert_int_equal(blen, n);
    assert_memory_equal(b, pt, n);
    free(b);
    kms_client_context_entry other[] = {{"app", "other"}};
    in = open("lib.kmsa", O_RDONLY);
    out = open("/dev/null", O_WRONLY);
    assert_int_equal(kms_client_archive_decrypt_fd(c, other, 1, NULL, in, out, &err),
                     KMS_CLIENT_ECONTEXT);
    assert_string_equal(kms_client_status_name(err.code), "ECONTEXT");
    close(in);
    close(out);
    /* Encrypting under a key the caller may not use: PERMISSION_DENIED. */
    assert_int_equal(
        kms_client_archive_encrypt_init(c, "locked", ctx, 1, NULL, to_buf, sinkarg, &ar, &err),
        KMS_CLIENT_PERMISSION_DENIED);

    /* rewrap_file to another key: the info names it; still decrypts. */
    assert_int_equal(kms_client_archive_rewrap_file(c, "lib.kmsa", "second", &info, &err), 0);
    assert_string_equal(info.key_name, "second");
    kms_client_archive_info_free(&info);
    in = open("lib.kmsa", O_RDONLY);
    out = open("lib.back", O_WRONLY | O_TRUNC);
    assert_int_equal(kms_client_archive_decrypt_fd(c, ctx, 1, NULL, in, out, &err), 0);
    close(in);
    close(out);
    b = slurp("lib.back", &blen);
    assert_int_equal(blen, n);
    assert_memory_equal(b, pt, n);
    free(b);
    free(back);
    free(a);
    free(pt);
    kms_client_close(c);
}

static long peak_child_rss_kib(void)
{
    struct rusage ru;
    assert_int_equal(getrusage(RUSAGE_CHILDREN, &ru), 0);
    return ru.ru_maxrss;
}

/* Over 100 MiB through pipes: stdin to kmsctl encrypt to kmsctl decrypt
 * to cmp, 4 threads; every process stays under 64 MiB (every kmsctl this
 * test program ran, through getrusage of its children). */
static void big_pipe(void **state)
{
    (void)state;
    const char *env = getenv("KMS_ARCHIVE_BIG_MIB");
    long mib = env ? strtol(env, NULL, 10) : 101;
    assert_true(mib > 0);
    size_t n = (size_t)mib << 20;
    char path[400];
    path_in(path, sizeof(path), "big");
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint8_t *chunk = malloc(1u << 20);
    for (long i = 0; i < mib; i++) {
        fill(chunk, 1u << 20, (uint32_t)i + 1000);
        assert_int_equal(fwrite(chunk, 1, 1u << 20, f), 1u << 20);
    }
    fputc(0x5a, f); /* and one byte: a short last segment */
    assert_int_equal(fclose(f), 0);
    free(chunk);
    n += 1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* The largest segments (8 MiB) on 4 threads: the fewest segments in
     * flight, the most memory each (the RSS check below covers it). */
    assert_int_equal(sh("head -c 40000000 big | $K --config \"$A\" encrypt --key demo "
                        "--segment-size 8388608 --threads 4 | $K --config \"$A\" decrypt "
                        "--threads 4 | cmp - big 2>&1 | grep -q EOF"),
                     0);
    assert_int_equal(sh("cat big | { $K --config \"$A\" encrypt --key demo --context app=big "
                        "--threads 4; echo $? > rc1; } | { $K --config \"$A\" decrypt --context "
                        "app=big --threads 4; echo $? > rc2; } | cmp - big"),
                     0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(sh("test \"$(cat rc1)$(cat rc2)\" = 00"), 0);
    long rss = peak_child_rss_kib();
    print_message("%zu bytes through encrypt | decrypt in %.1f s; largest child RSS %ld KiB\n", n,
                  (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9, rss);
#ifdef KMS_SANITIZED
    /* AddressSanitizer's shadow memory and quarantine roughly double a
     * process's RSS (75 MiB measured); buffering the 101 MiB input would
     * still be far above this bound. */
    assert_true(rss < 160 * 1024);
#else
    assert_true(rss < 64 * 1024);
#endif
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trips),           cmocka_unit_test(terminal),
        cmocka_unit_test(summaries_and_inspect), cmocka_unit_test(negatives),
        cmocka_unit_test(rewrap_after_rotation), cmocka_unit_test(library_api),
        cmocka_unit_test(crypto_shredding),      cmocka_unit_test(big_pipe),
    };
    return KMS_RUN_GROUP(tests, group_setup, group_teardown);
}
