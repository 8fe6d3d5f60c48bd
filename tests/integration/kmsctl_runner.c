/* kmsctl runner for the integration tests (kmsctl_runner.h). */
#include "kmsctl_runner.h"

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "kmsd_fixture.h"
#include "test_util.h"

int kms_test_kmsctl(const char *workdir, const char *const *args, char *out, size_t out_cap,
                    char *err, size_t err_cap)
{
    const char *argv[64];
    size_t n = 0;
    argv[n++] = getenv("KMS_KMSCTL");
    if (argv[0] == NULL)
        fail_msg("KMS_KMSCTL not set (run through ctest)");
    for (size_t i = 0; args[i] != NULL && n < 63; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    char o[512], e[512];
    snprintf(o, sizeof(o), "%s/kmsctl.stdout", workdir);
    snprintf(e, sizeof(e), "%s/kmsctl.stderr", workdir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fo = open(o, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fe = open(e, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fi = open("/dev/null", O_RDONLY);
        if (fo < 0 || fe < 0 || fi < 0)
            _exit(127);
        dup2(fi, 0);
        dup2(fo, 1);
        dup2(fe, 2);
        setsid(); /* no controlling terminal: approve must not prompt */
        unsetenv("KMSCTL_CONFIG");
        /* Under ASan: full allocation stacks, so that tests/lsan.supp can
         * name libp11's leaks (its frames sit below libcrypto's). */
        const char *asan = getenv("ASAN_OPTIONS");
        char opts[512];
        snprintf(opts, sizeof(opts), "%s%sfast_unwind_on_malloc=0", asan ? asan : "",
                 asan && asan[0] ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    kms_test_read_file(o, out, out_cap);
    kms_test_read_file(e, err, err_cap);
    if (!WIFEXITED(st)) {
        fputs(err, stderr);
        fail_msg("kmsctl died (signal %d); its stderr is above", WTERMSIG(st));
    }
    return WEXITSTATUS(st);
}

int kms_test_kmsctl_l(const kms_test_kmsctl_io *io, const char *first, ...)
{
    const char *args[48];
    size_t n = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a != NULL; a = va_arg(ap, const char *)) {
        if (n == 47)
            fail_msg("more than 47 kmsctl arguments");
        args[n++] = a;
    }
    va_end(ap);
    args[n] = NULL;
    return kms_test_kmsctl(io->workdir, args, io->out, io->out_cap, io->err, io->err_cap);
}

void kms_test_kmsctl_conf(const kms_test_kmsd *k, const char *path, const char *who,
                          const char *server, const char *signing_key)
{
    char ca[400], cert[400], key[400], f1[64], f2[64];
    snprintf(f1, sizeof(f1), "%s.pem", who);
    snprintf(f2, sizeof(f2), "%s-key.pem", who);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "# kmsctl connection for %s\nserver: %s\nca: %s\ncert: %s\nkey: %s\n", who,
            server != NULL ? server : k->target, kms_test_kmsd_pki(k, "ca.pem", ca, sizeof(ca)),
            kms_test_kmsd_pki(k, f1, cert, sizeof(cert)),
            kms_test_kmsd_pki(k, f2, key, sizeof(key)));
    if (signing_key != NULL)
        fprintf(f, "signing_key: %s\n", signing_key);
    assert_int_equal(fclose(f), 0);
}
