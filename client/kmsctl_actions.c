/* kmsctl's quorum action table (kmsctl_actions.h): per action, how its
 * message is filled from the flags and how it is printed; the table is at
 * the end. */
#include "base/file.h"
#include "kmsctl_actions.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kmsctl_body {
    Kms__V1__ActionBody b;
    union {
        Kms__V1__CreateKey create_key;
        Kms__V1__RotateKey rotate_key;
        Kms__V1__SetKeyVersionState set_key_version_state;
        Kms__V1__SetMinDecryptionVersion set_min_decryption_version;
        Kms__V1__ScheduleKeyDeletion schedule_key_deletion;
        Kms__V1__CancelKeyDeletion cancel_key_deletion;
        Kms__V1__UpdateKeyPolicy update_key_policy;
        Kms__V1__SetRotationPolicy set_rotation_policy;
        Kms__V1__AddOfficer add_officer;
        Kms__V1__RemoveOfficer remove_officer;
        Kms__V1__SetThreshold set_threshold;
        Kms__V1__AddAuditor add_auditor;
        Kms__V1__RemoveAuditor remove_auditor;
    } m;
    Kms__V1__KeyPolicy policy;
    Kms__V1__RotationPolicy rotation;
    char *pem; /* read from --signing-key-pub; freed after packing */
};

/* ---- shared pieces ---------------------------------------------------------------------- */

static Kms__V1__KeyPolicy *policy_of(const kmsctl_proposal *p, kmsctl_body *o)
{
    kms__v1__key_policy__init(&o->policy);
    o->policy.encrypt = (char **)p->ids[0];
    o->policy.n_encrypt = p->n[0];
    o->policy.decrypt = (char **)p->ids[1];
    o->policy.n_decrypt = p->n[1];
    o->policy.reencrypt = (char **)p->ids[2];
    o->policy.n_reencrypt = p->n[2];
    return &o->policy;
}

static Kms__V1__RotationPolicy *rotation_of(long days, kmsctl_body *o)
{
    kms__v1__rotation_policy__init(&o->rotation);
    o->rotation.rotation_period_days = (uint32_t)days;
    return &o->rotation;
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

/* The officer's public key PEM from path (a regular file, at most 4 KiB)
 * into *out (free()); a usage error naming the file otherwise. */
static int read_pub(kmsctl *k, const char *path, char **out)
{
    char *pem = NULL;
    size_t n = 0;
    if (kms_file_read(path, 4096, KMS_FILE_REGULAR, &pem, &n) != 0 || n == 0) {
        free(pem);
        return kmsctl_usage_error(k, "cannot read public key %s", path);
    }
    *out = pem;
    return 0;
}

/* ---- the actions ------------------------------------------------------------------------ */

static int fill_create_key(kmsctl *k, const kmsctl_proposal *p, kmsctl_body *o)
{
    (void)k;
    Kms__V1__CreateKey *m = &o->m.create_key;
    kms__v1__create_key__init(m);
    m->key_name = p->key;
    m->backend = p->backend ? p->backend : "";
    m->backend_mode = p->mode ? p->mode : "";
    m->policy = policy_of(p, o);
    m->rotation = rotation_of(p->rotation_days, o);
    o->b.create_key = m;
    return 0;
}

static void print_create_key(kmsctl_out *o, const Kms__V1__ActionBody *b)
{
    const Kms__V1__CreateKey *m = b->create_key;
    kmsctl_out_str(o, "key", m->key_name);
    kmsctl_out_str(o, "backend", m->backend);
    kmsctl_out_str(o, "backend_mode", m->backend_mode);
    policy_fields(o, m->policy);
    kmsctl_out_num(o, "rotation_period_days", m->rotation ? m->rotation->rotation_period_days : 0);
}

static int fill_rotate_key(kmsctl *k, const kmsctl_proposal *p, kmsctl_body *o)
{
    (void)k;
    kms__v1__rotate_key__init(&o->m.rotate_key);
    o->m.rotate_key.key_name = p->key;
    o->b.rotate_key = &o->m.rotate_key;
    return 0;
}

static void print_rotate_key(kmsctl_out *o, const Kms__V1__ActionBody *b)
{
    kmsctl_out_str(o, "key", b->rotate_key->key_name);
}

static int fill_set_key_version_state(kmsctl *k, const kmsctl_proposal *p, kmsctl_body *o)
{
    Kms__V1__SetKeyVersionState *m = &o->m.set_key_version_state;
    if (strcmp(p->state, "enabled") != 0 && strcmp(p->state, "disabled") != 0)
        return kmsctl_usage_error(k, "--state is enabled or disabled");
    kms__v1__set_key_version_state__init(m);
    m->key_name = p->key;
    m->version = (uint32_t)p->version;
    m->state = strcmp(p->state, "enabled") == 0 ? KMS__V1__KEY_VERSION_STATE__ENABLED
                                                : KMS__V1__KEY_VERSION_STATE__DISABLED;
    o->b.set_key_version_state = m;
    return 0;
}

static void print_set_key_version_state(kmsctl_out *o, const Kms__V1__ActionBody *b)
{
    const Kms__V1__SetKeyVersionState *m = b->set_key_version_state;
    kmsctl_out_str(o, "key", m->key_name);
    kmsctl_out_num(o, "version", m->version);
    kmsctl_out_str(o, "new_state",
                   m->state == KMS__V1__KEY_VERSION_STATE__ENABLED    ? "ENABLED"
                   : m->state == KMS__V1__KEY_VERSION_STATE__DISABLED ? "DISABLED"
                                                                      : "OTHER");
}

static int fill_set_min_decryption_version(kmsctl *k, const kmsctl_proposal *p, kmsctl_body *o)
{
    (void)k;
    Kms__V1__SetMinDecryptionVersion *m = &o->m.set_min_decryption_version;
    kms__v1__set_min_decryption_version__init(m);
    m->key_name = p->key;
    m->version = (uint32_t)p->version;
    o->b.set_min_decryption_version = m;
    return 0;
}

static void print_set_min_decryption_version(kmsctl_out *o, const Kms__V1__ActionBody *b)
{
    kmsctl_out_str(o, "key", b->set_min_decryption_version->key_name);
    kmsctl_out_num(o, "min_decryption_version", b->set_min_decryption_version->version);
}

static int fill_schedule_key_deletion(kmsctl *k, const kmsctl_proposal *p, kmsctl_body *o)
{
    (void)k;
    Kms__V1__ScheduleKeyDeletion *m = &o->m.schedule_key_deletion;
    kms__v1__schedule_key_deletion__init(m);
    m->key_name = p->key;
    m->pending_window_days = (uint32_t)p->days;
    o->b.schedule_key_deletion = m;
    return 0;
}

static void print_schedule_key_deletion(kmsctl_out *o, const Kms__V1__ActionBody *b)
{
    kmsctl_out_str(o, "key", b->schedule_key_deletion->key_name);
    kmsctl_out_num(o, "pending_window_days", b->schedule_key_deletion->pending_window_days);
}

static int fill_cancel_key_deletion(kmsctl *k, const kmsctl_proposal *p, kmsctl_body *o)
{
    (void)k;
    kms__v1__cancel_key_deletion__init(&o->m.cancel_key_deletion);
    o->m.cancel_key_deletion.key_name = p->key;
    o->b.cancel_key_deletion = &o->m.cancel_key_deletion;
    return 0;
}

static void print_cancel_key_deletion(kmsctl_out *o, const Kms__V1__ActionBody *b)
{
    kmsctl_out_str(o, "key", b->cancel_key_deletion->key_name);
}

static int fill_update_key_policy(kmsctl *k, const kmsctl_proposal *p, kmsctl_body *o)
{
    (void)k;
    Kms__V1__UpdateKeyPolicy *m = &o->m.update_key_policy;
    kms__v1__update_key_policy__init(m);
    m->key_name = p->key;
    m->policy = policy_of(p, o);
    o->b.update_key_policy = m;
    return 0;
}

static void print_update_key_policy(kmsctl_out *o, const Kms__V1__ActionBody *b)
{
    kmsctl_out_str(o, "key", b->update_key_policy->key_name);
    policy_fields(o, b->update_key_policy->policy);
}

static int fill_set_rotation_policy(kmsctl *k, const kmsctl_proposal *p, kmsctl_body *o)
{
    (void)k;
    Kms__V1__SetRotationPolicy *m = &o->m.set_rotation_policy;
    kms__v1__set_rotation_policy__init(m);
    m->key_name = p->key;
    m->rotation = rotation_of(p->days, o);
    o->b.set_rotation_policy = m;
    return 0;
}

static void print_set_rotation_policy(kmsctl_out *o, const Kms__V1__ActionBody *b)
{
    const Kms__V1__SetRotationPolicy *m = b->set_rotation_policy;
    kmsctl_out_str(o, "key", m->key_name);
    kmsctl_out_num(o, "rotation_period_days", m->rotation ? m->rotation->rotation_period_days : 0);
}

static int fill_add_officer(kmsctl *k, const kmsctl_proposal *p, kmsctl_body *o)
{
    Kms__V1__AddOfficer *m = &o->m.add_officer;
    int r = read_pub(k, p->pub, &o->pem);
    if (r != 0)
        return r;
    kms__v1__add_officer__init(m);
    m->officer_id = p->id;
    m->identity = p->identity;
    m->signing_key_pem = o->pem;
    o->b.add_officer = m;
    return 0;
}

static void print_add_officer(kmsctl_out *o, const Kms__V1__ActionBody *b)
{
    kmsctl_out_str(o, "officer_id", b->add_officer->officer_id);
    kmsctl_out_str(o, "identity", b->add_officer->identity);
    kmsctl_out_str(o, "signing_key_pem", b->add_officer->signing_key_pem);
}

static int fill_remove_officer(kmsctl *k, const kmsctl_proposal *p, kmsctl_body *o)
{
    (void)k;
    kms__v1__remove_officer__init(&o->m.remove_officer);
    o->m.remove_officer.officer_id = p->id;
    o->b.remove_officer = &o->m.remove_officer;
    return 0;
}

static void print_remove_officer(kmsctl_out *o, const Kms__V1__ActionBody *b)
{
    kmsctl_out_str(o, "officer_id", b->remove_officer->officer_id);
}

static int fill_set_threshold(kmsctl *k, const kmsctl_proposal *p, kmsctl_body *o)
{
    (void)k;
    kms__v1__set_threshold__init(&o->m.set_threshold);
    o->m.set_threshold.action_type = p->action;
    o->m.set_threshold.threshold = (uint32_t)p->threshold;
    o->b.set_threshold = &o->m.set_threshold;
    return 0;
}

static void print_set_threshold(kmsctl_out *o, const Kms__V1__ActionBody *b)
{
    kmsctl_out_str(o, "action_type", b->set_threshold->action_type);
    kmsctl_out_num(o, "threshold", b->set_threshold->threshold);
}

static int fill_add_auditor(kmsctl *k, const kmsctl_proposal *p, kmsctl_body *o)
{
    (void)k;
    kms__v1__add_auditor__init(&o->m.add_auditor);
    o->m.add_auditor.identity = p->identity;
    o->b.add_auditor = &o->m.add_auditor;
    return 0;
}

static void print_add_auditor(kmsctl_out *o, const Kms__V1__ActionBody *b)
{
    kmsctl_out_str(o, "identity", b->add_auditor->identity);
}

static int fill_remove_auditor(kmsctl *k, const kmsctl_proposal *p, kmsctl_body *o)
{
    (void)k;
    kms__v1__remove_auditor__init(&o->m.remove_auditor);
    o->m.remove_auditor.identity = p->identity;
    o->b.remove_auditor = &o->m.remove_auditor;
    return 0;
}

static void print_remove_auditor(kmsctl_out *o, const Kms__V1__ActionBody *b)
{
    kmsctl_out_str(o, "identity", b->remove_auditor->identity);
}

/* ---- the table -------------------------------------------------------------------------- */

#define ROW(cli, CASE, needs, name, synopsis)                                                      \
    {                                                                                              \
        cli, synopsis, KMS__V1__ACTION_BODY__ACTION_##CASE, needs, fill_##name, print_##name       \
    }
#define MORE "\n                          " /* a synopsis's next line in --help */

const kmsctl_action kmsctl_actions[] = {
    ROW("create-key", CREATE_KEY, KMSCTL_NEEDS_KEY, create_key,
        "--key N [--backend B] [--mode M] [--encrypt ID]..." MORE
        "[--decrypt ID]... [--reencrypt ID]... [--rotation-days D]"),
    ROW("rotate-key", ROTATE_KEY, KMSCTL_NEEDS_KEY, rotate_key, "--key N"),
    ROW("set-key-version-state", SET_KEY_VERSION_STATE, KMSCTL_NEEDS_KEY | KMSCTL_NEEDS_STATE,
        set_key_version_state, "--key N --version V --state enabled|disabled"),
    ROW("set-min-decryption-version", SET_MIN_DECRYPTION_VERSION, KMSCTL_NEEDS_KEY,
        set_min_decryption_version, "--key N --version V"),
    ROW("schedule-key-deletion", SCHEDULE_KEY_DELETION, KMSCTL_NEEDS_KEY, schedule_key_deletion,
        "--key N [--days 7..30]"),
    ROW("cancel-key-deletion", CANCEL_KEY_DELETION, KMSCTL_NEEDS_KEY, cancel_key_deletion,
        "--key N"),
    ROW("update-key-policy", UPDATE_KEY_POLICY, KMSCTL_NEEDS_KEY, update_key_policy,
        "--key N [--encrypt ID]... [--decrypt ID]..." MORE "[--reencrypt ID]..."),
    ROW("set-rotation-policy", SET_ROTATION_POLICY, KMSCTL_NEEDS_KEY, set_rotation_policy,
        "--key N --days D"),
    ROW("add-officer", ADD_OFFICER, KMSCTL_NEEDS_ID | KMSCTL_NEEDS_IDENTITY | KMSCTL_NEEDS_PUB,
        add_officer, "--id ID --identity URI --signing-key-pub FILE"),
    ROW("remove-officer", REMOVE_OFFICER, KMSCTL_NEEDS_ID, remove_officer, "--id ID"),
    ROW("set-threshold", SET_THRESHOLD, KMSCTL_NEEDS_ACTION, set_threshold,
        "--action TYPE --threshold N"),
    ROW("add-auditor", ADD_AUDITOR, KMSCTL_NEEDS_IDENTITY, add_auditor, "--identity URI"),
    ROW("remove-auditor", REMOVE_AUDITOR, KMSCTL_NEEDS_IDENTITY, remove_auditor, "--identity URI"),
};
const size_t kmsctl_n_actions = sizeof(kmsctl_actions) / sizeof(kmsctl_actions[0]);

const kmsctl_action *kmsctl_action_by_name(const char *name)
{
    for (size_t i = 0; i < kmsctl_n_actions; i++)
        if (strcmp(kmsctl_actions[i].name, name) == 0)
            return &kmsctl_actions[i];
    return NULL;
}

static const kmsctl_action *action_of(const Kms__V1__ActionBody *b)
{
    for (size_t i = 0; i < kmsctl_n_actions; i++)
        if (kmsctl_actions[i].action_case == b->action_case)
            return &kmsctl_actions[i];
    return NULL;
}

void kmsctl_action_names(char *out, size_t cap)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < kmsctl_n_actions && used < cap; i++) {
        int n = snprintf(out + used, cap - used, "%s%s", i ? ", " : "", kmsctl_actions[i].name);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

void kmsctl_action_usage(FILE *f)
{
    for (size_t i = 0; i < kmsctl_n_actions; i++)
        fprintf(f, "                        %s %s\n", kmsctl_actions[i].name,
                kmsctl_actions[i].synopsis);
}

/* The flags a row may need, in the order they are checked. */
static const struct {
    unsigned bit;
    const char *flag;
    size_t offset; /* of the char * in kmsctl_proposal */
} needed_flags[] = {
    {KMSCTL_NEEDS_KEY, "--key", offsetof(kmsctl_proposal, key)},
    {KMSCTL_NEEDS_STATE, "--state", offsetof(kmsctl_proposal, state)},
    {KMSCTL_NEEDS_ID, "--id", offsetof(kmsctl_proposal, id)},
    {KMSCTL_NEEDS_IDENTITY, "--identity", offsetof(kmsctl_proposal, identity)},
    {KMSCTL_NEEDS_PUB, "--signing-key-pub", offsetof(kmsctl_proposal, pub)},
    {KMSCTL_NEEDS_ACTION, "--action", offsetof(kmsctl_proposal, action)},
};

int kmsctl_action_build(kmsctl *k, const kmsctl_action *a, const kmsctl_proposal *p,
                        uint8_t **bytes, size_t *len)
{
    for (size_t i = 0; i < sizeof(needed_flags) / sizeof(needed_flags[0]); i++) {
        const char *v = *(char *const *)(const void *)((const char *)p + needed_flags[i].offset);
        if ((a->needs & needed_flags[i].bit) && v == NULL)
            return kmsctl_usage_error(k, "%s is required", needed_flags[i].flag);
    }
    kmsctl_body *o = calloc(1, sizeof(*o));
    if (o == NULL)
        return KMSCTL_EXIT_FAILURE;
    kms__v1__action_body__init(&o->b);
    int r = a->fill(k, p, o);
    if (r == 0) {
        o->b.action_case = a->action_case;
        *len = protobuf_c_message_get_packed_size(&o->b.base);
        if ((*bytes = malloc(*len ? *len : 1)) == NULL)
            r = KMSCTL_EXIT_FAILURE;
        else
            protobuf_c_message_pack(&o->b.base, *bytes);
    }
    free(o->pem);
    free(o);
    return r;
}

const char *kmsctl_action_type(const Kms__V1__ActionBody *b)
{
    /* From the descriptor, so that it cannot drift from the proto. */
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(
        &kms__v1__action_body__descriptor, (unsigned)b->action_case);
    if (f == NULL || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return "Unknown";
    return ((const ProtobufCMessageDescriptor *)f->descriptor)->short_name;
}

void kmsctl_action_print(kmsctl_out *o, const Kms__V1__ActionBody *b)
{
    const kmsctl_action *a = action_of(b);
    kmsctl_out_str(o, "type", kmsctl_action_type(b));
    if (a != NULL)
        a->print(o, b);
}
