/* kmsctl against a real kmsd (mutual TLS on a free loopback port, SoftHSM2
 * token and SQLite file in a temp dir): the commands a user types, their
 * output (text and --json), files and modes, and the exit codes that tell
 * usage errors, denial, absence, unavailability and bad input apart. */
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "group_run.h"
#include "kmsctl_runner.h"
#include "kmsd_fixture.h"
#include "test_util.h"

static kms_test_kmsd K;
static char DIR_[320]; /* the fixture's temp dir (where kmsd.yaml is) */
static char OUT[65536], ERR[65536];
static const kms_test_kmsctl_io IO = {DIR_, OUT, ERR, sizeof(OUT), sizeof(ERR)};

static const char *kmsctl_path(void)
{
    const char *p = getenv("KMS_KMSCTL");
    if (p == NULL)
        fail_msg("KMS_KMSCTL not set");
    return p;
}

static char APP[400], BOB[400], OFFICER[400], DOWN[400];

static int group_setup(void **state)
{
    (void)state;
    kms_test_kmsd_setup(&K);
    kms_test_kmsd_start(&K, NULL);
    kms_test_kmsd_dir(&K, DIR_, sizeof(DIR_));
    kms_test_kmsctl_conf(&K, kms_test_path(APP, sizeof(APP), DIR_, "app.conf"), "app", NULL, NULL);
    kms_test_kmsctl_conf(&K, kms_test_path(BOB, sizeof(BOB), DIR_, "bob.conf"), "bob", NULL, NULL);
    kms_test_kmsctl_conf(&K, kms_test_path(OFFICER, sizeof(OFFICER), DIR_, "officer1.conf"),
                         "officer1", NULL, NULL);
    kms_test_kmsctl_conf(&K, kms_test_path(DOWN, sizeof(DOWN), DIR_, "down.conf"), "app",
                         "127.0.0.1:1", NULL);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
    kms_test_kmsd_teardown(&K);
    return 0;
}

static void health(void **state)
{
    (void)state;
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "health", NULL), 0);
    assert_string_equal(OUT, "status: SERVING\n");
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "--json", "health", NULL), 0);
    assert_string_equal(OUT, "{\"status\":\"SERVING\"}\n");
}

/* The README's session: a data key with its blob in a file, decrypted. */
static void data_key_session(void **state)
{
    (void)state;
    char blob[400], pt[128], pt2[128];
    kms_test_path(blob, sizeof(blob), DIR_, "dk.blob");
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "generate-data-key", "--key", "demo",
                                       "--context", "app=billing", "--blob-out", blob, NULL),
                     0);
    kms_test_field(OUT, "plaintext", 0, pt, sizeof(pt));
    assert_int_equal(strlen(pt), 44); /* 32 bytes in base64 */
    char v[16];
    assert_string_equal(kms_test_field(OUT, "key_name", 0, v, sizeof(v)), "demo");
    assert_string_equal(kms_test_field(OUT, "key_version", 0, v, sizeof(v)), "1");
    struct stat st;
    assert_int_equal(stat(blob, &st), 0);
    assert_int_equal(st.st_size, 22 + 12 + 32 + 16);

    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "decrypt", "--in", blob, "--context",
                                       "app=billing", NULL),
                     0);
    assert_string_equal(kms_test_field(OUT, "plaintext", 0, pt2, sizeof(pt2)), pt);
    /* Wrong context: invalid input (6), nothing printed on stdout. */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "decrypt", "--in", blob, "--context",
                                       "app=other", NULL),
                     6);
    assert_string_equal(OUT, "");
    assert_non_null(strstr(ERR, "INVALID_ARGUMENT"));
    /* --no-plaintext: blob only. */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "generate-data-key", "--key", "demo",
                                       "--no-plaintext", NULL),
                     0);
    assert_null(strstr(OUT, "plaintext:"));
    assert_non_null(strstr(OUT, "ciphertext_blob: "));
}

static void encrypt_decrypt_files(void **state)
{
    (void)state;
    char in[400], blob[400], out[400], moved[400];
    kms_test_path(in, sizeof(in), DIR_, "plain.bin");
    kms_test_path(blob, sizeof(blob), DIR_, "plain.blob");
    kms_test_path(out, sizeof(out), DIR_, "plain.out");
    kms_test_path(moved, sizeof(moved), DIR_, "moved.blob");
    uint8_t data[4096];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 13); /* includes NUL and newline bytes */
    FILE *f = fopen(in, "wb");
    assert_int_equal(fwrite(data, 1, sizeof(data), f), sizeof(data));
    fclose(f);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "encrypt", "--key", "demo", "--in", in,
                                       "--out", blob, "--context", "a=1", NULL),
                     0);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "decrypt", "--in", blob, "--out", out,
                                       "--context", "a=1", NULL),
                     0);
    struct stat st;
    assert_int_equal(stat(out, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600); /* plaintext files are private */
    uint8_t back[4097];
    f = fopen(out, "rb");
    assert_int_equal(fread(back, 1, sizeof(back), f), sizeof(data));
    fclose(f);
    assert_memory_equal(back, data, sizeof(data));

    /* reencrypt to another key and context; the result decrypts there. */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "--json", "reencrypt", "--in", blob,
                                       "--source-context", "a=1", "--key", "second", "--context",
                                       "b=2", "--out", moved, NULL),
                     0);
    assert_non_null(strstr(OUT, "\"source_key_name\":\"demo\""));
    assert_non_null(strstr(OUT, "\"key_name\":\"second\""));
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "decrypt", "--in", moved, "--out", out,
                                       "--context", "b=2", NULL),
                     0);
    f = fopen(out, "rb");
    assert_int_equal(fread(back, 1, sizeof(back), f), sizeof(data));
    fclose(f);
    assert_memory_equal(back, data, sizeof(data));

    /* base64 in, base64 out, through JSON. */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "--json", "encrypt", "--key", "demo",
                                       "--in-b64", "aGVsbG8=", NULL),
                     0);
    const char *b = strstr(OUT, "\"ciphertext_blob\":\"");
    assert_non_null(b);
    char b64[256];
    b += strlen("\"ciphertext_blob\":\"");
    size_t n = strcspn(b, "\"");
    memcpy(b64, b, n);
    b64[n] = '\0';
    assert_int_equal(
        kms_test_kmsctl_l(&IO, "--config", APP, "--json", "decrypt", "--in-b64", b64, NULL), 0);
    assert_non_null(strstr(OUT, "\"plaintext\":\"aGVsbG8=\""));
}

static void describe_and_list(void **state)
{
    (void)state;
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "describe-key", "demo", NULL), 0);
    assert_non_null(strstr(OUT, "key demo\n"));
    assert_non_null(strstr(OUT, "backend    pkcs11"));
    assert_non_null(strstr(OUT, "version 1  ENABLED"));
    /* The policy is withheld from non-officers, and said so (not "nobody"). */
    assert_non_null(strstr(OUT, "  policy     (shown to security officers only)\n"));
    assert_null(strstr(OUT, "(nobody)"));
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", OFFICER, "describe-key", "demo", NULL), 0);
    assert_non_null(strstr(OUT, "  policy\n  encrypt    "));
    assert_null(strstr(OUT, "shown to security officers only"));
    assert_int_equal(
        kms_test_kmsctl_l(&IO, "--config", APP, "--json", "describe-key", "demo", NULL), 0);
    assert_non_null(strstr(OUT, "\"key_name\":\"demo\""));
    assert_non_null(strstr(OUT, "\"primary_version\":1"));
    assert_non_null(strstr(OUT, "\"policy\":null}")); /* officers only */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "list-keys", NULL), 0);
    assert_non_null(strstr(OUT, "demo\tv1\tpkcs11"));
    assert_non_null(strstr(OUT, "second\tv1\tpkcs11"));
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "--json", "list-keys", NULL), 0);
    assert_true(strncmp(OUT, "{\"keys\":[{", 10) == 0);
}

static void exit_codes(void **state)
{
    (void)state;
    char blob[400], bad[400], big[400];
    kms_test_path(blob, sizeof(blob), DIR_, "codes.blob");
    kms_test_path(bad, sizeof(bad), DIR_, "codes.bad");
    kms_test_path(big, sizeof(big), DIR_, "big.bin");
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "encrypt", "--key", "demo", "--in-b64",
                                       "aGk=", "--out", blob, NULL),
                     0);
    /* 2: usage. */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "frobnicate", NULL), 2);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "encrypt", "--in-b64", "aGk=", NULL),
                     2);
    assert_int_equal(
        kms_test_kmsctl_l(&IO, "--config", APP, "encrypt", "--key", "demo", "--bogus", NULL), 2);
    assert_int_equal(
        kms_test_kmsctl_l(&IO, "--config", APP, "decrypt", "--in-b64", "not base64!", NULL), 2);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", "/nonexistent.conf", "health", NULL), 2);
    assert_int_equal(kms_test_kmsctl_l(&IO, "health", NULL), 2); /* no connection settings at all */
    assert_int_equal(
        kms_test_kmsctl_l(&IO, "--config", APP, "--cert", "/nonexistent.pem", "health", NULL), 2);
    /* 3: denied. */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", BOB, "decrypt", "--in", blob, NULL), 3);
    assert_non_null(strstr(ERR, "PERMISSION_DENIED"));
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", OFFICER, "decrypt", "--in", blob, NULL), 3);
    /* 4: not found, told only to officers; anyone else is denied (3), as
     * for a key they have no rights on. */
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", OFFICER, "describe-key", "nope", NULL), 4);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "describe-key", "nope", NULL), 3);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "encrypt", "--key", "nope", "--in-b64",
                                       "aGk=", NULL),
                     3);
    /* 5: unavailable. */
    assert_int_equal(
        kms_test_kmsctl_l(&IO, "--config", DOWN, "--timeout-ms", "3000", "health", NULL), 5);
    /* 6: bad input: tampered, truncated, oversized. */
    uint8_t b[128];
    FILE *f = fopen(blob, "rb");
    size_t n = fread(b, 1, sizeof(b), f);
    fclose(f);
    b[n - 1] ^= 1;
    f = fopen(bad, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "decrypt", "--in", bad, NULL), 6);
    f = fopen(bad, "wb");
    fwrite(b, 1, 10, f);
    fclose(f);
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "decrypt", "--in", bad, NULL), 6);
    f = fopen(big, "wb");
    for (int i = 0; i < 4097; i++)
        fputc('x', f);
    fclose(f);
    assert_int_equal(
        kms_test_kmsctl_l(&IO, "--config", APP, "encrypt", "--key", "demo", "--in", big, NULL), 6);
    assert_non_null(strstr(ERR, "1..4096 bytes"));
    /* --json errors are machine-readable too. */
    assert_int_equal(
        kms_test_kmsctl_l(&IO, "--config", OFFICER, "--json", "describe-key", "nope", NULL), 4);
    assert_non_null(strstr(OUT, "{\"error\":{\"code\":\"NOT_FOUND\""));
}

/* Raw plaintext is never written to a terminal. */
static void no_binary_to_terminal(void **state)
{
    (void)state;
    char blob[400];
    kms_test_path(blob, sizeof(blob), DIR_, "tty.blob");
    assert_int_equal(kms_test_kmsctl_l(&IO, "--config", APP, "encrypt", "--key", "demo", "--in-b64",
                                       "aGk=", "--out", blob, NULL),
                     0);
    int master;
    pid_t pid = forkpty(&master, NULL, NULL, NULL);
    assert_true(pid >= 0);
    if (pid == 0) {
        execl(kmsctl_path(), kmsctl_path(), "--config", APP, "decrypt", "--in", blob, "--out", "-",
              (char *)NULL);
        _exit(127);
    }
    char buf[4096];
    size_t got = 0;
    for (;;) {
        ssize_t r = read(master, buf + got, sizeof(buf) - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    close(master);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2);
    assert_non_null(strstr(buf, "refusing to write binary data to a terminal"));
    assert_null(strstr(buf, "hi"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(health),
        cmocka_unit_test(data_key_session),
        cmocka_unit_test(encrypt_decrypt_files),
        cmocka_unit_test(describe_and_list),
        cmocka_unit_test(exit_codes),
        cmocka_unit_test(no_binary_to_terminal),
    };
    return KMS_RUN_GROUP(tests, group_setup, group_teardown);
}
