/* kmsctl: officer commands. `propose` builds a kms.v1.ActionBody;
 * `show-action` and `approve` decode the action's canonical bytes (never the
 * server's convenience copy), recompute its digest locally and only then
 * sign (docs/approvals.md). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/pb_check.h"
#include "base/text.h"
#include "kms/v1/kms.pb-c.h"
#include "kmsctl.h"
#include "kmsctl_actions.h"

/* ---- printing an action --------------------------------------------------------------- */

static const char *state_name(int s)
{
    switch (s) {
    case KMS_CLIENT_ACTION_PENDING:
        return "PENDING";
    case KMS_CLIENT_ACTION_EXECUTED:
        return "EXECUTED";
    case KMS_CLIENT_ACTION_CANCELLED:
        return "CANCELLED";
    case KMS_CLIENT_ACTION_EXPIRED:
        return "EXPIRED";
    case KMS_CLIENT_ACTION_FAILED:
        return "FAILED";
    default:
        return "UNKNOWN";
    }
}

static void hex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static void iso_time(int64_t t, char *out, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (gmtime_r(&tt, &tm) == NULL || strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, cap, "%lld", (long long)t);
}

/* The action a's bytes decode to, or NULL if they do not decode or are not
 * what an officer may sign: a field kmsctl does not know (at any depth,
 * which no printer shows) or bytes that do not encode back to themselves
 * (base/pb_check.h). Free with protobuf_c_message_free_unpacked. */
static Kms__V1__ActionBody *decode_signable(const kms_client_action *a)
{
    Kms__V1__ActionBody *b =
        kms__v1__action_body__unpack(NULL, a->action_bytes_len, a->action_bytes);
    if (b != NULL && !kms_pb_canonical(&b->base, a->action_bytes, a->action_bytes_len)) {
        protobuf_c_message_free_unpacked(&b->base, NULL);
        b = NULL;
    }
    return b;
}

/* Prints a to f (as JSON or text); returns non-zero if its bytes are not
 * signable (decode_signable). */
static int print_action_to(FILE *f, int json, const kms_client_action *a)
{
    char id[33], digest[65], instance[33], when[32];
    Kms__V1__ActionBody *b = decode_signable(a);
    kmsctl_out o;
    kmsctl_out_begin_file(&o, f, json);
    hex(a->id, 16, id);
    kmsctl_out_str(&o, "action", id);
    if (b != NULL)
        kmsctl_action_print(&o, b);
    else
        kmsctl_out_str(&o, "type", "UNDECODABLE (unknown fields or not canonical)");
    kmsctl_out_str(&o, "state", state_name(a->state));
    kmsctl_out_str(&o, "proposer", a->proposer);
    kmsctl_out_num(&o, "threshold", a->threshold);
    kmsctl_out_num(&o, "approvals", (long long)a->n_approvals);
    for (size_t i = 0; i < a->n_approvals; i++) {
        char name[32], line[160];
        iso_time(a->approvals[i].approved_at, when, sizeof(when));
        snprintf(name, sizeof(name), "approval.%zu", i + 1);
        snprintf(line, sizeof(line), "%.64s at %s", a->approvals[i].officer_id, when);
        kmsctl_out_str(&o, name, line);
    }
    iso_time(a->expires_at, when, sizeof(when));
    kmsctl_out_str(&o, "expires_at", when);
    if (a->result[0] != '\0')
        kmsctl_out_str(&o, "result", a->result);
    hex(a->instance_id, 16, instance);
    kmsctl_out_str(&o, "instance_id", instance);
    hex(a->digest, 32, digest);
    kmsctl_out_str(&o, "digest", digest);
    kmsctl_out_str(&o, "digest_check",
                   kms_client_action_verify_digest(a) == 0 ? "verified" : "MISMATCH");
    kmsctl_out_end(&o);
    if (b != NULL)
        protobuf_c_message_free_unpacked(&b->base, NULL);
    return b == NULL;
}

static int print_action(kmsctl *k, const kms_client_action *a)
{
    return print_action_to(stdout, k->json, a);
}

static int parse_id(kmsctl *k, const char *s, uint8_t id[16])
{
    if (s == NULL || strlen(s) != 32)
        return kmsctl_usage_error(k, "an action id is 32 hex digits");
    for (int i = 0; i < 16; i++) {
        unsigned v = 0;
        for (int j = 0; j < 2; j++) {
            char c = s[2 * i + j];
            int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
            if (d < 0)
                return kmsctl_usage_error(k, "an action id is 32 hex digits");
            v = v * 16 + (unsigned)d;
        }
        id[i] = (uint8_t)v;
    }
    return 0;
}

/* ---- propose -------------------------------------------------------------------------- */

enum {
    P_KEY = 300,
    P_BACKEND,
    P_MODE,
    P_ENCRYPT,
    P_DECRYPT,
    P_REENCRYPT,
    P_ROTATION_DAYS,
    P_VERSION,
    P_STATE,
    P_DAYS,
    P_ID,
    P_IDENTITY,
    P_PUB,
    P_ACTION,
    P_THRESHOLD
};

static const struct option propose_options[] = {
    {"key", required_argument, NULL, P_KEY},
    {"backend", required_argument, NULL, P_BACKEND},
    {"mode", required_argument, NULL, P_MODE},
    {"encrypt", required_argument, NULL, P_ENCRYPT},
    {"decrypt", required_argument, NULL, P_DECRYPT},
    {"reencrypt", required_argument, NULL, P_REENCRYPT},
    {"rotation-days", required_argument, NULL, P_ROTATION_DAYS},
    {"version", required_argument, NULL, P_VERSION},
    {"state", required_argument, NULL, P_STATE},
    {"days", required_argument, NULL, P_DAYS},
    {"id", required_argument, NULL, P_ID},
    {"identity", required_argument, NULL, P_IDENTITY},
    {"signing-key-pub", required_argument, NULL, P_PUB},
    {"action", required_argument, NULL, P_ACTION},
    {"threshold", required_argument, NULL, P_THRESHOLD},
    {NULL, 0, NULL, 0}};

static int number(kmsctl *k, const char *s, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0 || v > 100000000)
        return kmsctl_usage_error(k, "\"%s\" is not a number", s);
    *out = v;
    return 0;
}

int kmsctl_cmd_propose(kmsctl *k, int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-') {
        char names[512];
        kmsctl_action_names(names, sizeof(names));
        return kmsctl_usage_error(k, "propose ACTION [options]: %s", names);
    }
    kmsctl_proposal p;
    memset(&p, 0, sizeof(p));
    optind = 0;
    opterr = 0;
    int opt, r = 0;
    while (r == 0 && (opt = getopt_long(argc - 1, argv + 1, "+", propose_options, NULL)) != -1) {
        switch (opt) {
        case P_KEY:
            p.key = optarg;
            break;
        case P_BACKEND:
            p.backend = optarg;
            break;
        case P_MODE:
            p.mode = optarg;
            break;
        case P_ENCRYPT:
        case P_DECRYPT:
        case P_REENCRYPT: {
            size_t l = (size_t)(opt - P_ENCRYPT);
            if (p.n[l] == KMSCTL_POLICY_IDS_MAX)
                return kmsctl_usage_error(k, "at most 256 identities per list");
            p.ids[l][p.n[l]++] = optarg;
            break;
        }
        case P_ROTATION_DAYS:
            r = number(k, optarg, &p.rotation_days);
            break;
        case P_VERSION:
            r = number(k, optarg, &p.version);
            break;
        case P_STATE:
            p.state = optarg;
            break;
        case P_DAYS:
            r = number(k, optarg, &p.days);
            break;
        case P_ID:
            p.id = optarg;
            break;
        case P_IDENTITY:
            p.identity = optarg;
            break;
        case P_PUB:
            p.pub = optarg;
            break;
        case P_ACTION:
            p.action = optarg;
            break;
        case P_THRESHOLD:
            r = number(k, optarg, &p.threshold);
            break;
        default:
            return kmsctl_usage_error(k, "unknown option %s", argv[optind]);
        }
    }
    if (r != 0)
        return r;
    if (optind + 1 != argc)
        return kmsctl_usage_error(k, "unexpected argument \"%s\"", argv[optind + 1]);
    const kmsctl_action *action = kmsctl_action_by_name(argv[1]);
    uint8_t *bytes = NULL;
    size_t len = 0;
    if (action == NULL)
        return kmsctl_usage_error(k, "unknown action \"%s\"", argv[1]);
    if ((r = kmsctl_action_build(k, action, &p, &bytes, &len)) != 0)
        return r;
    kms_client *c;
    kms_client_action a;
    kms_client_error err;
    if ((r = kmsctl_client(k, &c)) == 0) {
        if (kms_client_propose(c, bytes, len, &a, &err) != 0) {
            r = kmsctl_fail(k, &err);
        } else {
            r = print_action(k, &a);
            kms_client_action_free(&a);
        }
    }
    free(bytes);
    return r;
}

/* ---- actions, show-action, cancel -------------------------------------------------------- */

int kmsctl_cmd_actions(kmsctl *k, int argc, char **argv)
{
    int pending = argc == 2 && strcmp(argv[1], "--pending") == 0;
    if (argc > 2 || (argc == 2 && !pending))
        return kmsctl_usage_error(k, "actions [--pending]");
    kms_client *c;
    kms_client_action *list = NULL;
    size_t n = 0;
    kms_client_error err;
    int r = kmsctl_client(k, &c);
    if (r != 0)
        return r;
    if (kms_client_list_actions(c, pending, &list, &n, &err) != 0)
        return kmsctl_fail(k, &err);
    if (k->json)
        fputs("{\"actions\":[", stdout);
    for (size_t i = 0; i < n; i++) {
        char id[33], when[32];
        hex(list[i].id, 16, id);
        iso_time(list[i].expires_at, when, sizeof(when));
        Kms__V1__ActionBody *b =
            kms__v1__action_body__unpack(NULL, list[i].action_bytes_len, list[i].action_bytes);
        const char *type = b ? kmsctl_action_type(b) : "UNDECODABLE";
        if (k->json) {
            printf("%s{\"action\":\"%s\",\"type\":\"%s\",\"state\":\"%s\",\"approvals\":%zu,"
                   "\"threshold\":%u,\"proposer\":",
                   i ? "," : "", id, type, state_name(list[i].state), list[i].n_approvals,
                   list[i].threshold);
            kmsctl_json_string(stdout, list[i].proposer);
            printf(",\"expires_at\":\"%s\"}", when);
        } else {
            printf("%s  %-24s %-9s %zu/%u  by ", id, type, state_name(list[i].state),
                   list[i].n_approvals, list[i].threshold);
            kms_text_escape(stdout, list[i].proposer);
            printf("  expires %s\n", when);
        }
        if (b)
            protobuf_c_message_free_unpacked(&b->base, NULL);
    }
    if (k->json)
        fputs("]}\n", stdout);
    kms_client_action_list_free(list, n);
    return 0;
}

/* show-action ID and cancel ID. */
static int one_action(kmsctl *k, int argc, char **argv, int cancel)
{
    uint8_t id[16];
    if (argc != 2)
        return kmsctl_usage_error(k, "expected one action id");
    int r = parse_id(k, argv[1], id);
    kms_client *c;
    kms_client_action a;
    kms_client_error err;
    if (r != 0 || (r = kmsctl_client(k, &c)) != 0)
        return r;
    r = cancel ? kms_client_cancel_action(c, id, &a, &err) : kms_client_get_action(c, id, &a, &err);
    if (r != 0)
        return kmsctl_fail(k, &err);
    r = print_action(k, &a);
    kms_client_action_free(&a);
    return r;
}

int kmsctl_cmd_show_action(kmsctl *k, int argc, char **argv)
{
    return one_action(k, argc, argv, 0);
}

int kmsctl_cmd_cancel(kmsctl *k, int argc, char **argv)
{
    return one_action(k, argc, argv, 1);
}

/* ---- approve ------------------------------------------------------------------------------ */

/* Asks on the terminal; 1 for yes. */
static int confirm(void)
{
    FILE *tty = fopen("/dev/tty", "r+");
    if (tty == NULL)
        return 0;
    fputs("Approve this action? [y/N] ", tty);
    fflush(tty);
    char line[16] = "";
    int yes = fgets(line, sizeof(line), tty) != NULL && (line[0] == 'y' || line[0] == 'Y');
    fclose(tty);
    return yes;
}

int kmsctl_cmd_approve(kmsctl *k, int argc, char **argv)
{
    static const struct option opts[] = {{"signing-key", required_argument, NULL, 's'},
                                         {"yes", no_argument, NULL, 'y'},
                                         {NULL, 0, NULL, 0}};
    const char *key = k->conf.signing_key, *idarg = NULL;
    int yes = 0, opt;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == 's')
            key = optarg;
        else if (opt == 'y')
            yes = 1;
        else
            return kmsctl_usage_error(k, "unknown option %s", argv[optind - 1]);
    }
    if (optind + 1 != argc)
        return kmsctl_usage_error(k, "approve ID [--signing-key FILE|pkcs11:URI] [--yes]");
    idarg = argv[optind];
    if (key == NULL)
        return kmsctl_usage_error(k, "no signing key: --signing-key or signing_key in the config");
    uint8_t id[16];
    int r = parse_id(k, idarg, id);
    if (r != 0)
        return r;
    if (!yes && !isatty(0))
        return kmsctl_usage_error(k, "not a terminal: review the action (show-action) and pass "
                                     "--yes to approve without a prompt");
    kms_client *c;
    kms_client_action a, done;
    kms_client_error err;
    if ((r = kmsctl_client(k, &c)) != 0)
        return r;
    if (kms_client_get_action(c, id, &a, &err) != 0)
        return kmsctl_fail(k, &err);
    /* What is shown is decoded from the bytes the digest covers, always
     * before signing: on standard output, or with --json as text on
     * standard error (standard output then carries only the final action,
     * as one object). */
    int unsignable = print_action_to(k->json ? stderr : stdout, 0, &a);
    const char *refusal = NULL;
    if (unsignable)
        refusal = "the action's bytes carry fields kmsctl does not know or do not encode back "
                  "to themselves, so not all of what would be signed can be shown";
    else if (kms_client_action_verify_digest(&a) != 0)
        refusal = "the action's digest does not match its content";
    else if (k->conf.has_instance_id &&
             memcmp(k->conf.instance_id, a.instance_id, sizeof(a.instance_id)) != 0)
        refusal = "the server's instance_id is not the one pinned in the configuration "
                  "(another kms deployment)";
    if (refusal != NULL) {
        fprintf(stderr, "kmsctl: approve: %s: refusing to sign\n", refusal);
        kms_client_action_free(&a);
        return KMSCTL_EXIT_FAILURE;
    }
    if (!yes && !confirm()) {
        fprintf(stderr, "kmsctl: approve: not approved\n");
        kms_client_action_free(&a);
        return KMSCTL_EXIT_FAILURE;
    }
    uint8_t sig[256];
    size_t sig_len = sizeof(sig);
    if (kms_client_sign_digest(key, a.digest, sig, &sig_len, &err) != 0) {
        kms_client_action_free(&a);
        return kmsctl_fail(k, &err);
    }
    kms_client_action_free(&a);
    if (kms_client_approve(c, id, sig, sig_len, &done, &err) != 0)
        return kmsctl_fail(k, &err);
    r = print_action(k, &done);
    kms_client_action_free(&done);
    return r;
}

/* ---- officer keygen ---------------------------------------------------------------------- */

int kmsctl_cmd_officer(kmsctl *k, int argc, char **argv)
{
    static const struct option opts[] = {{"type", required_argument, NULL, 't'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"pub-out", required_argument, NULL, 'p'},
                                         {NULL, 0, NULL, 0}};
    if (argc < 2 || strcmp(argv[1], "keygen") != 0)
        return kmsctl_usage_error(k, "officer keygen [--type p256|ed25519] --out PRIVATE.pem "
                                     "--pub-out PUBLIC.pem");
    const char *type = "p256", *out = NULL, *pub = NULL;
    int opt;
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc - 1, argv + 1, "", opts, NULL)) != -1) {
        if (opt == 't')
            type = optarg;
        else if (opt == 'o')
            out = optarg;
        else if (opt == 'p')
            pub = optarg;
        else
            return kmsctl_usage_error(k, "unknown option");
    }
    if (out == NULL || pub == NULL || optind + 1 != argc)
        return kmsctl_usage_error(k, "officer keygen needs --out and --pub-out");
    kms_client_error err;
    if (kms_client_keygen(type, out, pub, &err) != 0)
        return kmsctl_fail(k, &err);
    kmsctl_out o;
    kmsctl_out_begin(&o, k->json);
    kmsctl_out_str(&o, "private_key_file", out);
    kmsctl_out_str(&o, "public_key_file", pub);
    kmsctl_out_str(&o, "type", type);
    kmsctl_out_end(&o);
    return 0;
}
