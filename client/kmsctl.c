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

#include "kmsctl.h"

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
    {"propose", kmsctl_cmd_propose,
     "ACTION [options]   (officers; see docs/kmsctl.md)\n"
     "                        create-key --key N [--backend B] [--mode M] [--encrypt ID]...\n"
     "                          [--decrypt ID]... [--reencrypt ID]... [--rotation-days D]\n"
     "                        rotate-key --key N | cancel-key-deletion --key N\n"
     "                        set-key-version-state --key N --version V --state enabled|disabled\n"
     "                        set-min-decryption-version --key N --version V\n"
     "                        schedule-key-deletion --key N [--days 7..30]\n"
     "                        update-key-policy --key N [--encrypt ID]... [--decrypt ID]...\n"
     "                          [--reencrypt ID]...\n"
     "                        set-rotation-policy --key N --days D\n"
     "                        add-officer --id ID --identity URI --signing-key-pub FILE\n"
     "                        remove-officer --id ID | set-threshold --action TYPE --threshold N"},
    {"actions", kmsctl_cmd_actions, "[--pending]"},
    {"show-action", kmsctl_cmd_show_action, "ID"},
    {"approve", kmsctl_cmd_approve, "ID [--signing-key FILE|pkcs11:URI] [--yes]"},
    {"cancel", kmsctl_cmd_cancel, "ID"},
};

static void usage(FILE *f)
{
    fputs("usage: kmsctl [--config FILE] [--json] [--server HOST:PORT] [--ca FILE] [--cert FILE]\n"
          "              [--key FILE] [--server-name NAME] [--timeout-ms N] <command> [options]\n"
          "commands:\n",
          f);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-20s  %s\n", commands[i].name, commands[i].synopsis);
    fputs("FILE \"-\" is standard input or output (never raw bytes to a terminal).\n"
          "exit codes: 0 ok, 1 failure, 2 usage, 3 denied, 4 not found, 5 unavailable,\n"
          "            6 invalid input (wrong context, tampered blob, bad signature),\n"
          "            7 failed precondition or already done; archives: 8 not an archive,\n"
          "            9 unsupported version, 10 wrong context, 11 truncated, 12 corrupt\n",
          f);
}

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
    fprintf(stderr, "kmsctl: %s: %s: %s\n", k->command, name, err->message);
    if (k->json) {
        fputs("{\"error\":{\"code\":", stdout);
        kmsctl_json_string(stdout, name);
        fputs(",\"message\":", stdout);
        kmsctl_json_string(stdout, err->message);
        fputs("}}\n", stdout);
    }
    return exit_code(err->code);
}

int kmsctl_client(kmsctl *k, kms_client **out)
{
    if (k->client == NULL) {
        const kmsctl_conf *c = &k->conf;
        if (c->server == NULL || c->ca == NULL || c->cert == NULL || c->key == NULL)
            return kmsctl_usage_error(k,
                                      "no server, ca, cert or key: give --config FILE (or set "
                                      "KMSCTL_CONFIG) or the --server/--ca/--cert/--key options");
        kms_client_options o = {.target = c->server,
                                .ca_file = c->ca,
                                .cert_file = c->cert,
                                .key_file = c->key,
                                .server_name = c->server_name,
                                .timeout_ms = (int)c->timeout_ms};
        kms_client_error err;
        if (kms_client_open(&o, &k->client, &err) != 0)
            return kmsctl_fail(k, &err);
    }
    *out = k->client;
    return 0;
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
