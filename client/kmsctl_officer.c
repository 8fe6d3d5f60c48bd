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

#include "kms/v1/kms.pb-c.h"
#include "kmsctl.h"

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

/* The oneof member's message name ("RotateKey"), from the descriptor. */
static const char *type_of(const Kms__V1__ActionBody *b)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(
        &kms__v1__action_body__descriptor, (unsigned)b->action_case);
    if (f == NULL || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return "Unknown";
    return ((const ProtobufCMessageDescriptor *)f->descriptor)->short_name;
}

static void list_field(kmsctl_out *o, const char *name, char **v, size_t n)
{
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(v[i]) + 1;
    char *s = calloc(1, len);
    if (s == NULL)
        return;
    size_t used = 0;
    for (size_t i = 0; i < n; i++)
        used += (size_t)snprintf(s + used, len - used, "%s%s", i ? " " : "", v[i]);
    kmsctl_out_str(o, name, n ? s : "(nobody)");
    free(s);
}

static void policy_fields(kmsctl_out *o, const Kms__V1__KeyPolicy *p)
{
    static char *none[1];
    list_field(o, "policy.encrypt", p ? p->encrypt : none, p ? p->n_encrypt : 0);
    list_field(o, "policy.decrypt", p ? p->decrypt : none, p ? p->n_decrypt : 0);
    list_field(o, "policy.reencrypt", p ? p->reencrypt : none, p ? p->n_reencrypt : 0);
}

/* Every field of the decoded canonical action. */
static void body_fields(kmsctl_out *o, const Kms__V1__ActionBody *b)
{
    kmsctl_out_str(o, "type", type_of(b));
    switch (b->action_case) {
    case KMS__V1__ACTION_BODY__ACTION_CREATE_KEY:
        kmsctl_out_str(o, "key", b->create_key->key_name);
        kmsctl_out_str(o, "backend", b->create_key->backend);
        kmsctl_out_str(o, "backend_mode", b->create_key->backend_mode);
        policy_fields(o, b->create_key->policy);
        kmsctl_out_num(o, "rotation_period_days",
                       b->create_key->rotation ? b->create_key->rotation->rotation_period_days : 0);
        break;
    case KMS__V1__ACTION_BODY__ACTION_ROTATE_KEY:
        kmsctl_out_str(o, "key", b->rotate_key->key_name);
        break;
    case KMS__V1__ACTION_BODY__ACTION_SET_KEY_VERSION_STATE:
        kmsctl_out_str(o, "key", b->set_key_version_state->key_name);
        kmsctl_out_num(o, "version", b->set_key_version_state->version);
        kmsctl_out_str(
            o, "new_state",
            b->set_key_version_state->state == KMS__V1__KEY_VERSION_STATE__ENABLED    ? "ENABLED"
            : b->set_key_version_state->state == KMS__V1__KEY_VERSION_STATE__DISABLED ? "DISABLED"
                                                                                      : "OTHER");
        break;
    case KMS__V1__ACTION_BODY__ACTION_SET_MIN_DECRYPTION_VERSION:
        kmsctl_out_str(o, "key", b->set_min_decryption_version->key_name);
        kmsctl_out_num(o, "min_decryption_version", b->set_min_decryption_version->version);
        break;
    case KMS__V1__ACTION_BODY__ACTION_SCHEDULE_KEY_DELETION:
        kmsctl_out_str(o, "key", b->schedule_key_deletion->key_name);
        kmsctl_out_num(o, "pending_window_days", b->schedule_key_deletion->pending_window_days);
        break;
    case KMS__V1__ACTION_BODY__ACTION_CANCEL_KEY_DELETION:
        kmsctl_out_str(o, "key", b->cancel_key_deletion->key_name);
        break;
    case KMS__V1__ACTION_BODY__ACTION_UPDATE_KEY_POLICY:
        kmsctl_out_str(o, "key", b->update_key_policy->key_name);
        policy_fields(o, b->update_key_policy->policy);
        break;
    case KMS__V1__ACTION_BODY__ACTION_SET_ROTATION_POLICY:
        kmsctl_out_str(o, "key", b->set_rotation_policy->key_name);
        kmsctl_out_num(o, "rotation_period_days",
                       b->set_rotation_policy->rotation
                           ? b->set_rotation_policy->rotation->rotation_period_days
                           : 0);
        break;
    case KMS__V1__ACTION_BODY__ACTION_ADD_OFFICER:
        kmsctl_out_str(o, "officer_id", b->add_officer->officer_id);
        kmsctl_out_str(o, "identity", b->add_officer->identity);
        kmsctl_out_str(o, "signing_key_pem", b->add_officer->signing_key_pem);
        break;
    case KMS__V1__ACTION_BODY__ACTION_REMOVE_OFFICER:
        kmsctl_out_str(o, "officer_id", b->remove_officer->officer_id);
        break;
    case KMS__V1__ACTION_BODY__ACTION_SET_THRESHOLD:
        kmsctl_out_str(o, "action_type", b->set_threshold->action_type);
        kmsctl_out_num(o, "threshold", b->set_threshold->threshold);
        break;
    default:
        break;
    }
}

/* Prints a; returns non-zero if its canonical bytes do not decode. */
static int print_action(kmsctl *k, const kms_client_action *a)
{
    char id[33], digest[65], when[32];
    Kms__V1__ActionBody *b =
        kms__v1__action_body__unpack(NULL, a->action_bytes_len, a->action_bytes);
    kmsctl_out o;
    kmsctl_out_begin(&o, k->json);
    hex(a->id, 16, id);
    kmsctl_out_str(&o, "action", id);
    if (b != NULL)
        body_fields(&o, b);
    else
        kmsctl_out_str(&o, "type", "UNDECODABLE");
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
    hex(a->digest, 32, digest);
    kmsctl_out_str(&o, "digest", digest);
    kmsctl_out_str(&o, "digest_check",
                   kms_client_action_verify_digest(a) == 0 ? "verified" : "MISMATCH");
    kmsctl_out_end(&o);
    if (b != NULL)
        protobuf_c_message_free_unpacked(&b->base, NULL);
    return b == NULL;
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

struct proposal {
    char *key, *backend, *mode, *id, *identity, *pub, *action, *state;
    char *ids[3][256];
    size_t n[3];
    long version, days, rotation_days, threshold;
};

static int number(kmsctl *k, const char *s, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0 || v > 100000000)
        return kmsctl_usage_error(k, "\"%s\" is not a number", s);
    *out = v;
    return 0;
}

static char *read_pub(kmsctl *k, const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf = calloc(1, 4097);
    size_t n = f && buf ? fread(buf, 1, 4096, f) : 0;
    if (f)
        fclose(f);
    if (n == 0) {
        free(buf);
        kmsctl_usage_error(k, "cannot read public key %s", path);
        return NULL;
    }
    return buf;
}

static int need(kmsctl *k, const void *v, const char *opt)
{
    return v != NULL ? 0 : kmsctl_usage_error(k, "%s is required", opt);
}

/* Builds the body for `what` from p; 0 or an exit code. */
static int build(kmsctl *k, const char *what, struct proposal *p, Kms__V1__ActionBody *b,
                 uint8_t **bytes, size_t *len)
{
    Kms__V1__CreateKey ck = KMS__V1__CREATE_KEY__INIT;
    Kms__V1__RotateKey rk = KMS__V1__ROTATE_KEY__INIT;
    Kms__V1__SetKeyVersionState sv = KMS__V1__SET_KEY_VERSION_STATE__INIT;
    Kms__V1__SetMinDecryptionVersion smv = KMS__V1__SET_MIN_DECRYPTION_VERSION__INIT;
    Kms__V1__ScheduleKeyDeletion sd = KMS__V1__SCHEDULE_KEY_DELETION__INIT;
    Kms__V1__CancelKeyDeletion cd = KMS__V1__CANCEL_KEY_DELETION__INIT;
    Kms__V1__UpdateKeyPolicy up = KMS__V1__UPDATE_KEY_POLICY__INIT;
    Kms__V1__SetRotationPolicy sr = KMS__V1__SET_ROTATION_POLICY__INIT;
    Kms__V1__AddOfficer ao = KMS__V1__ADD_OFFICER__INIT;
    Kms__V1__RemoveOfficer ro = KMS__V1__REMOVE_OFFICER__INIT;
    Kms__V1__SetThreshold st = KMS__V1__SET_THRESHOLD__INIT;
    Kms__V1__KeyPolicy pol = KMS__V1__KEY_POLICY__INIT;
    Kms__V1__RotationPolicy rot = KMS__V1__ROTATION_POLICY__INIT;
    char *pem = NULL;
    int r = 0;
    pol.encrypt = p->ids[0];
    pol.n_encrypt = p->n[0];
    pol.decrypt = p->ids[1];
    pol.n_decrypt = p->n[1];
    pol.reencrypt = p->ids[2];
    pol.n_reencrypt = p->n[2];
    rot.rotation_period_days = (uint32_t)p->rotation_days;
    if (strcmp(what, "create-key") == 0) {
        if ((r = need(k, p->key, "--key")) != 0)
            return r;
        ck.key_name = p->key;
        ck.backend = p->backend ? p->backend : "";
        ck.backend_mode = p->mode ? p->mode : "";
        ck.policy = &pol;
        ck.rotation = &rot;
        b->action_case = KMS__V1__ACTION_BODY__ACTION_CREATE_KEY;
        b->create_key = &ck;
    } else if (strcmp(what, "rotate-key") == 0) {
        if ((r = need(k, p->key, "--key")) != 0)
            return r;
        rk.key_name = p->key;
        b->action_case = KMS__V1__ACTION_BODY__ACTION_ROTATE_KEY;
        b->rotate_key = &rk;
    } else if (strcmp(what, "set-key-version-state") == 0) {
        if ((r = need(k, p->key, "--key")) != 0 || (r = need(k, p->state, "--state")) != 0)
            return r;
        if (strcmp(p->state, "enabled") != 0 && strcmp(p->state, "disabled") != 0)
            return kmsctl_usage_error(k, "--state is enabled or disabled");
        sv.key_name = p->key;
        sv.version = (uint32_t)p->version;
        sv.state = strcmp(p->state, "enabled") == 0 ? KMS__V1__KEY_VERSION_STATE__ENABLED
                                                    : KMS__V1__KEY_VERSION_STATE__DISABLED;
        b->action_case = KMS__V1__ACTION_BODY__ACTION_SET_KEY_VERSION_STATE;
        b->set_key_version_state = &sv;
    } else if (strcmp(what, "set-min-decryption-version") == 0) {
        if ((r = need(k, p->key, "--key")) != 0)
            return r;
        smv.key_name = p->key;
        smv.version = (uint32_t)p->version;
        b->action_case = KMS__V1__ACTION_BODY__ACTION_SET_MIN_DECRYPTION_VERSION;
        b->set_min_decryption_version = &smv;
    } else if (strcmp(what, "schedule-key-deletion") == 0) {
        if ((r = need(k, p->key, "--key")) != 0)
            return r;
        sd.key_name = p->key;
        sd.pending_window_days = (uint32_t)p->days;
        b->action_case = KMS__V1__ACTION_BODY__ACTION_SCHEDULE_KEY_DELETION;
        b->schedule_key_deletion = &sd;
    } else if (strcmp(what, "cancel-key-deletion") == 0) {
        if ((r = need(k, p->key, "--key")) != 0)
            return r;
        cd.key_name = p->key;
        b->action_case = KMS__V1__ACTION_BODY__ACTION_CANCEL_KEY_DELETION;
        b->cancel_key_deletion = &cd;
    } else if (strcmp(what, "update-key-policy") == 0) {
        if ((r = need(k, p->key, "--key")) != 0)
            return r;
        up.key_name = p->key;
        up.policy = &pol;
        b->action_case = KMS__V1__ACTION_BODY__ACTION_UPDATE_KEY_POLICY;
        b->update_key_policy = &up;
    } else if (strcmp(what, "set-rotation-policy") == 0) {
        if ((r = need(k, p->key, "--key")) != 0)
            return r;
        sr.key_name = p->key;
        rot.rotation_period_days = (uint32_t)p->days;
        sr.rotation = &rot;
        b->action_case = KMS__V1__ACTION_BODY__ACTION_SET_ROTATION_POLICY;
        b->set_rotation_policy = &sr;
    } else if (strcmp(what, "add-officer") == 0) {
        if ((r = need(k, p->id, "--id")) != 0 || (r = need(k, p->identity, "--identity")) != 0 ||
            (r = need(k, p->pub, "--signing-key-pub")) != 0)
            return r;
        if ((pem = read_pub(k, p->pub)) == NULL)
            return KMSCTL_EXIT_USAGE;
        ao.officer_id = p->id;
        ao.identity = p->identity;
        ao.signing_key_pem = pem;
        b->action_case = KMS__V1__ACTION_BODY__ACTION_ADD_OFFICER;
        b->add_officer = &ao;
    } else if (strcmp(what, "remove-officer") == 0) {
        if ((r = need(k, p->id, "--id")) != 0)
            return r;
        ro.officer_id = p->id;
        b->action_case = KMS__V1__ACTION_BODY__ACTION_REMOVE_OFFICER;
        b->remove_officer = &ro;
    } else if (strcmp(what, "set-threshold") == 0) {
        if ((r = need(k, p->action, "--action")) != 0)
            return r;
        st.action_type = p->action;
        st.threshold = (uint32_t)p->threshold;
        b->action_case = KMS__V1__ACTION_BODY__ACTION_SET_THRESHOLD;
        b->set_threshold = &st;
    } else {
        return kmsctl_usage_error(k, "unknown action \"%s\"", what);
    }
    /* Pack while the stack messages are alive. */
    *len = protobuf_c_message_get_packed_size(&b->base);
    *bytes = malloc(*len ? *len : 1);
    if (*bytes == NULL) {
        free(pem);
        return KMSCTL_EXIT_FAILURE;
    }
    protobuf_c_message_pack(&b->base, *bytes);
    free(pem);
    return 0;
}

int kmsctl_cmd_propose(kmsctl *k, int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-')
        return kmsctl_usage_error(k, "propose ACTION [options]: create-key, rotate-key, "
                                     "set-key-version-state, set-min-decryption-version, "
                                     "schedule-key-deletion, cancel-key-deletion, "
                                     "update-key-policy, set-rotation-policy, add-officer, "
                                     "remove-officer, set-threshold");
    struct proposal p;
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
            if (p.n[l] == 256)
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
    Kms__V1__ActionBody b = KMS__V1__ACTION_BODY__INIT;
    uint8_t *bytes = NULL;
    size_t len = 0;
    if ((r = build(k, argv[1], &p, &b, &bytes, &len)) != 0)
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
        const char *type = b ? type_of(b) : "UNDECODABLE";
        if (k->json) {
            printf("%s{\"action\":\"%s\",\"type\":\"%s\",\"state\":\"%s\",\"approvals\":%zu,"
                   "\"threshold\":%u,\"proposer\":",
                   i ? "," : "", id, type, state_name(list[i].state), list[i].n_approvals,
                   list[i].threshold);
            kmsctl_json_string(stdout, list[i].proposer);
            printf(",\"expires_at\":\"%s\"}", when);
        } else {
            printf("%s  %-24s %-9s %zu/%u  by %s  expires %s\n", id, type,
                   state_name(list[i].state), list[i].n_approvals, list[i].threshold,
                   list[i].proposer, when);
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
    /* What is shown is decoded from the bytes the digest covers (with
     * --json only the final action is printed, as one object). */
    if ((!k->json && (r = print_action(k, &a)) != 0) || kms_client_action_verify_digest(&a) != 0) {
        fprintf(stderr, "kmsctl: approve: the action's digest does not match its content: "
                        "refusing to sign\n");
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
