/* kmsctl: command-line client of kmsd.
 *
 *   kmsctl [--config FILE] [--json] [connection overrides] <command> [options]
 *
 * The connection file (--config, else $KMSCTL_CONFIG) names the server and
 * the TLS files; see docs/kmsctl.md for commands, output and exit codes. */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "base/text.h"
#include "kmsctl.h"
#include "kmsctl_actions.h"

static const struct {
    const char *name;
    int (*run)(kmsctl *k, int argc, char **argv);
    const char *synopsis;
} commands[] = {
    {"generate-data-key", kmsctl_cmd_generate_data_key,
     "--key NAME [--context K=V]... [--spec AES_256|AES_128] [--no-plaintext]\n"
     "                        [--blob-out FILE] [--plaintext-out FILE]"},
    {"encrypt", kmsctl_cmd_archive_encrypt,
     "--key NAME (--in FILE|--in-b64 B64) [--context K=V]... [--out FILE]\n"
     "                        archive: --key NAME [--context K=V]... [--threads N]\n"
     "                          [--segment-size BYTES] [--progress] [IN|-] [OUT|-]"},
    {"decrypt", kmsctl_cmd_archive_decrypt,
     "(--in FILE|--in-b64 B64) [--context K=V]... [--out FILE]\n"
     "                        archive: [--context K=V]... [--threads N] [--progress] [IN|-] "
     "[OUT|-]"},
    {"rewrap", kmsctl_cmd_archive_rewrap, "FILE... [--key NEWKEY]   (archives)"},
    {"inspect", kmsctl_cmd_archive_inspect, "FILE   (archives)"},
    {"reencrypt", kmsctl_cmd_reencrypt,
     "--key DEST (--in FILE|--in-b64 B64) [--source-context K=V]... [--context K=V]...\n"
     "                        [--out FILE]"},
    {"describe-key", kmsctl_cmd_describe_key, "NAME"},
    {"list-keys", kmsctl_cmd_list_keys, ""},
    {"health", kmsctl_cmd_health, ""},
    {"officer", kmsctl_cmd_officer,
     "keygen [--type p256|ed25519] --out PRIVATE.pem --pub-out PUBLIC.pem"},
    {"propose", kmsctl_cmd_propose, "ACTION [options]   (officers; see docs/kmsctl.md)"},
    {"actions", kmsctl_cmd_actions, "[--pending]"},
    {"show-action", kmsctl_cmd_show_action, "ID"},
    {"approve", kmsctl_cmd_approve, "ID [--signing-key FILE|pkcs11:URI] [--yes]"},
    {"cancel", kmsctl_cmd_cancel, "ID"},
    {"audit", kmsctl_cmd_audit,
     "verify FILE... [--pubkey PEM]  |  pubkey PEM  |  hash-context --key-file FILE K=V...   "
     "(offline; docs/audit.md)\n"
     "                        tail [-f] [--json] [--from SEQ] [-n N]   (auditors)"},
};

static void usage(FILE *f)
{
    fputs("usage: kmsctl [--config FILE] [--json] [--server HOST:PORT] [--ca FILE] [--cert FILE]\n"
          "              [--key FILE] [--server-name NAME] [--timeout-ms N] <command> [options]\n"
          "commands:\n",
          f);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        fprintf(f, "  %-20s  %s\n", commands[i].name, commands[i].synopsis);
        if (commands[i].run == kmsctl_cmd_propose)
            kmsctl_action_usage(f); /* one line per action, from kmsctl's action table */
    }
    fputs("FILE \"-\" is standard input or output (never raw bytes to a terminal).\n"
          "exit codes: 0 ok, 1 failure, 2 usage, 3 denied, 4 not found, 5 unavailable,\n"
          "            6 invalid input (wrong context, tampered blob, bad signature),\n"
          "            7 failed precondition or already done; archives: 8 not an archive,\n"
          "            9 unsupported version, 10 wrong context, 11 truncated, 12 corrupt,\n"
          "            13 audit verify: chain intact but an unverified tail\n",
          f);
}

/* Key material passes through this process: keep it out of core files. */
static void no_core_dumps(void)
{
    struct rlimit rl = {0, 0};
    (void)setrlimit(RLIMIT_CORE, &rl);
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {{"config", required_argument, NULL, 'f'},
                                            {"json", no_argument, NULL, 'j'},
                                            {"server", required_argument, NULL, 's'},
                                            {"ca", required_argument, NULL, 'a'},
                                            {"cert", required_argument, NULL, 'c'},
                                            {"key", required_argument, NULL, 'k'},
                                            {"server-name", required_argument, NULL, 'n'},
                                            {"timeout-ms", required_argument, NULL, 't'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    static const char *const override_names[] = {
        ['s'] = "server", ['a'] = "ca",          ['c'] = "cert",
        ['k'] = "key",    ['n'] = "server_name", ['t'] = "timeout_ms"};
    kmsctl k;
    const char *config = getenv("KMSCTL_CONFIG");
    int opt, r = KMSCTL_EXIT_USAGE;
    struct {
        int name;
        const char *value;
    } overrides[16];
    size_t n_overrides = 0;

    no_core_dumps();
    memset(&k, 0, sizeof(k));
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "+h", options, NULL)) != -1) {
        switch (opt) {
        case 'f':
            config = optarg;
            break;
        case 'j':
            k.json = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 's':
        case 'a':
        case 'c':
        case 'k':
        case 'n':
        case 't':
            if (n_overrides == sizeof(overrides) / sizeof(overrides[0]))
                return kmsctl_usage_error(&k, "too many options");
            overrides[n_overrides].name = opt;
            overrides[n_overrides++].value = optarg;
            break;
        default:
            return kmsctl_usage_error(&k, "unknown option %s", argv[optind - 1]);
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return KMSCTL_EXIT_USAGE;
    }
    if (config != NULL && config[0] != '\0' && kmsctl_conf_load(&k.conf, config) != 0)
        goto out;
    for (size_t i = 0; i < n_overrides; i++)
        if (kmsctl_conf_set(&k.conf, override_names[overrides[i].name], overrides[i].value) != 0)
            goto out;

    k.command = argv[optind];
    r = -1;
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].name, k.command) == 0)
            r = commands[i].run(&k, argc - optind, argv + optind);
    if (r == -1) {
        const char *name = k.command;
        k.command = NULL;
        r = kmsctl_usage_error(&k, "unknown command \"%s\"", name);
    }
out:
    kms_client_close(k.client);
    kmsctl_conf_free(&k.conf);
    return r;
}
