/* swtpm fixture (swtpm_fixture.h). */
#include "swtpm_fixture.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Runs a shell command line built by the fixture (paths it made itself). */
static int sh(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Control ports of the swtpm daemons this process started and has not
 * stopped: a test that fails before its teardown (or aborts) must not leave
 * a daemon running. */
#define MAX_LIVE 8
static int live_ctrl[MAX_LIVE];

static void stop_ctrl(int ctrl_port)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "swtpm_ioctl --tcp 127.0.0.1:%d -s >/dev/null 2>&1", ctrl_port);
    (void)sh(cmd);
}

static void stop_live(void)
{
    for (size_t i = 0; i < MAX_LIVE; i++)
        if (live_ctrl[i] != 0) {
            stop_ctrl(live_ctrl[i]);
            live_ctrl[i] = 0;
        }
}

static void set_live(int ctrl_port, int on)
{
    static int registered;
    if (!registered && atexit(stop_live) == 0)
        registered = 1;
    for (size_t i = 0; i < MAX_LIVE; i++)
        if (on ? live_ctrl[i] == 0 : live_ctrl[i] == ctrl_port) {
            live_ctrl[i] = on ? ctrl_port : 0;
            return;
        }
}

static void die(const char *what)
{
    fprintf(stderr, "swtpm fixture: %s: %s\n", what, strerror(errno));
    stop_live();
    abort();
}

static int port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

static void launch(kms_test_swtpm *s)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "swtpm socket --tpm2 --tpmstate dir=%s/state --server "
             "type=tcp,port=%d,bindaddr=127.0.0.1 --ctrl type=tcp,port=%d,bindaddr=127.0.0.1 "
             "--flags not-need-init --daemon --pid file=%s/pid --log file=%s/log",
             s->dir, s->port, s->port + 1, s->dir, s->dir);
    if (sh(cmd) != 0)
        die("swtpm socket");
    s->running = 1;
    set_live(s->port + 1, 1);
}

void kms_test_swtpm_start(kms_test_swtpm *s)
{
    memset(s, 0, sizeof(*s));
    const char *tmp = getenv("TMPDIR");
    snprintf(s->dir, sizeof(s->dir), "%s/kms-swtpm-XXXXXX", tmp ? tmp : "/tmp");
    if (mkdtemp(s->dir) == NULL)
        die("mkdtemp");
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "mkdir -p %s/state && swtpm_setup --tpm2 --tpmstate %s/state --createek "
             "--config /dev/null >%s/setup.log 2>&1",
             s->dir, s->dir, s->dir);
    if (sh(cmd) != 0)
        die("swtpm_setup");
    srand((unsigned)getpid() ^ (unsigned)time(NULL));
    for (int i = 0; i < 200 && s->port == 0; i++) {
        int p = 20000 + (rand() % 20000) * 2;
        if (port_free(p) && port_free(p + 1))
            s->port = p;
    }
    if (s->port == 0)
        die("no free port pair");
    snprintf(s->tcti, sizeof(s->tcti), "swtpm:host=127.0.0.1,port=%d", s->port);
    launch(s);
}

void kms_test_swtpm_stop(kms_test_swtpm *s)
{
    if (!s->running)
        return;
    stop_ctrl(s->port + 1);
    set_live(s->port + 1, 0);
    s->running = 0;
    usleep(200 * 1000);
}

void kms_test_swtpm_resume(kms_test_swtpm *s)
{
    launch(s);
}

void kms_test_swtpm_reset(kms_test_swtpm *s)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "swtpm_ioctl --tcp 127.0.0.1:%d -i >/dev/null 2>&1", s->port + 1);
    if (sh(cmd) != 0)
        die("swtpm_ioctl -i");
}

int kms_test_swtpm_extend17(kms_test_swtpm *s)
{
    /* Through the control channel: the data channel may be held by the
     * process under test (a TPM has one owner at a time). */
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "swtpm_ioctl --tcp 127.0.0.1:%d -h kms-test-event >/dev/null 2>&1",
             s->port + 1);
    return sh(cmd);
}

int kms_test_swtpm_tool(kms_test_swtpm *s, const char *args)
{
    char cmd[768];
    snprintf(cmd, sizeof(cmd), "TPM2TOOLS_TCTI='%s' tpm2_%s >>%s/tools.log 2>&1", s->tcti, args,
             s->dir);
    return sh(cmd);
}

int kms_test_swtpm_pcrextend(kms_test_swtpm *s, int pcr)
{
    char args[160];
    snprintf(args, sizeof(args),
             "pcrextend %d:sha256=6b6d732d746573742d6576656e742d6b6d732d746573742d6576656e742d6b6d",
             pcr);
    return kms_test_swtpm_tool(s, args);
}

void kms_test_swtpm_destroy(kms_test_swtpm *s)
{
    kms_test_swtpm_stop(s);
    if (s->dir[0] != '\0') {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
        (void)sh(cmd);
        s->dir[0] = '\0';
    }
}
