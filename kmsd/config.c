/* kmsd configuration: YAML through libyaml's document API, plus overrides.
 *
 * The file is parsed twice: a first pass over libyaml's event stream refuses
 * anchors, aliases and extra documents (aliases would let a small file
 * expand into a huge tree), then the document is loaded and walked against
 * the fixed schema below. Every scalar setting lives in one table, used by
 * both the file and the command line. */
#include "kmsd/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "base/file.h"

#define MAX_EVENTS 200000
#define NAME_MAX_LEN 64

/* T_PATHS: a comma-separated list of paths, each made relative like a T_PATH. */
enum setting_type { T_STRING, T_PATH, T_PATHS, T_UINT, T_SIZE, T_BOOL, T_LEVEL };

static const struct setting {
    const char *name;
    enum setting_type type;
    size_t off;
    unsigned long long min, max;
} settings[] = {
    {"listen", T_STRING, offsetof(kms_config, listen), 0, 0},
    {"tls.cert", T_PATH, offsetof(kms_config, tls_cert), 0, 0},
    {"tls.key", T_PATH, offsetof(kms_config, tls_key), 0, 0},
    {"tls.client_ca", T_PATH, offsetof(kms_config, tls_client_ca), 0, 0},
    {"tls.cn_identities", T_BOOL, offsetof(kms_config, tls_cn_identities), 0, 0},
    {"tls.crl", T_PATHS, offsetof(kms_config, tls_crl), 0, 0},
    {"tls.crl_allow_expired", T_BOOL, offsetof(kms_config, tls_crl_allow_expired), 0, 0},
    {"database", T_PATH, offsetof(kms_config, database), 0, 0},
    /* The module is used as written: a bare file name is searched by the
     * dynamic loader, so it is not made relative to the config file. */
    {"pkcs11.module", T_STRING, offsetof(kms_config, pkcs11_module), 0, 0},
    {"pkcs11.token_label", T_STRING, offsetof(kms_config, pkcs11_token_label), 0, 0},
    {"pkcs11.pin_file", T_PATH, offsetof(kms_config, pkcs11_pin_file), 0, 0},
    {"pkcs11.sessions", T_UINT, offsetof(kms_config, pkcs11_sessions), 0, 256},
    /* A string's max is its longest length (KMS_P11_INIT_ARGS_MAX). */
    {"pkcs11.init_args", T_STRING, offsetof(kms_config, pkcs11_init_args), 0, 1024},
    {"pkcs11.allow_nonlocal_keys", T_BOOL, offsetof(kms_config, pkcs11_allow_nonlocal_keys), 0, 0},
    {"workers", T_UINT, offsetof(kms_config, workers), 0, 256},
    {"log_level", T_LEVEL, offsetof(kms_config, log_level), 0, 0},
    {"max_message_size", T_SIZE, offsetof(kms_config, max_message_size), 4096, 16u << 20},
    {"max_send_message_size", T_SIZE, offsetof(kms_config, max_send_message_size), 4096, 64u << 20},
    {"insecure_dev", T_BOOL, offsetof(kms_config, insecure_dev), 0, 0},
    {"limits.max_concurrent_streams", T_UINT, offsetof(kms_config, max_concurrent_streams), 1,
     10000},
    {"limits.handshake_timeout_ms", T_UINT, offsetof(kms_config, handshake_timeout_ms), 100,
     120000},
    {"limits.idle_timeout_ms", T_UINT, offsetof(kms_config, idle_timeout_ms), 1000, 86400000},
    {"quorum.action_ttl", T_UINT, offsetof(kms_config, action_ttl), 60, 30u * 86400u},
    {"quorum.sweep_interval_ms", T_UINT, offsetof(kms_config, sweep_interval_ms), 10, 3600000},
    {"quorum.max_pending_per_officer", T_UINT, offsetof(kms_config, max_pending), 1, 1000},
    {"test_clock_file", T_PATH, offsetof(kms_config, test_clock_file), 0, 0},
    {"test_crash_at", T_STRING, offsetof(kms_config, test_crash_at), 0, 0},
    {"tpm2.tcti", T_STRING, offsetof(kms_config, tpm2_tcti), 0, 0},
    {"tpm2.primary_handle", T_UINT, offsetof(kms_config, tpm2_primary_handle), 0x81000000u,
     0x81FFFFFFu},
    {"tpm2.pcrs", T_STRING, offsetof(kms_config, tpm2_pcrs), 0, 0},
    {"tpm2.lock_dir", T_PATH, offsetof(kms_config, tpm2_lock_dir), 0, 0},
    /* the audit log (set only here, never over the API) */
    {"audit.dir", T_PATH, offsetof(kms_config, audit_dir), 0, 0},
    {"audit.max_bytes", T_SIZE, offsetof(kms_config, audit_max_bytes), 4096, 1ull << 40},
    {"audit.max_age", T_UINT, offsetof(kms_config, audit_max_age), 1, 366u * 86400u},
    {"audit.context_key", T_PATH, offsetof(kms_config, audit_context_key), 0, 0},
    /* signed checkpoints of the audit log */
    {"audit.checkpoint_records", T_UINT, offsetof(kms_config, audit_checkpoint_records), 1,
     1000000},
    {"audit.checkpoint_seconds", T_UINT, offsetof(kms_config, audit_checkpoint_seconds), 1, 86400},
    {"audit.pubkey_file", T_PATH, offsetof(kms_config, audit_pubkey_file), 0, 0},
    /* Prometheus metrics over HTTP: off unless metrics.listen is set */
    {"metrics.listen", T_STRING, offsetof(kms_config, metrics_listen), 0, 0},
    {"metrics.allow_remote", T_BOOL, offsetof(kms_config, metrics_allow_remote), 0, 0},
};

#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))

/* ---- small helpers ---------------------------------------------------------- */

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static char *dup_s(const char *s)
{
    return dup_n(s, strlen(s));
}

/* base_dir/value for a relative value when base_dir is given. */
static char *make_path(const char *value, const char *base_dir)
{
    if (base_dir == NULL || value[0] == '/')
        return dup_s(value);
    size_t n = strlen(base_dir) + 1 + strlen(value) + 1;
    char *p = malloc(n);
    if (p == NULL)
        return NULL;
    snprintf(p, n, "%s/%s", base_dir, value);
    return p;
}

static int parse_ull(const char *s, unsigned long long min, unsigned long long max,
                     unsigned long long *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return KMS_EINVAL;
    errno = 0;
    char *end = NULL;
    /* Decimal, or hex with 0x (TPM handles); never octal. */
    int hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
    if (hex && !((s[2] >= '0' && s[2] <= '9') || (s[2] >= 'a' && s[2] <= 'f') ||
                 (s[2] >= 'A' && s[2] <= 'F')))
        return KMS_EINVAL;
    unsigned long long v = strtoull(hex ? s + 2 : s, &end, hex ? 16 : 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return KMS_EINVAL;
    *out = v;
    return KMS_OK;
}

static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcmp(s, yes[i]) == 0) {
            *out = 1;
            return KMS_OK;
        }
        if (strcmp(s, no[i]) == 0) {
            *out = 0;
            return KMS_OK;
        }
    }
    return KMS_EINVAL;
}

int kms_config_parse_log_level(const char *s, kms_log_level *out)
{
    static const struct {
        const char *name;
        kms_log_level level;
    } levels[] = {{"debug", KMS_LOG_DEBUG},
                  {"info", KMS_LOG_INFO},
                  {"warn", KMS_LOG_WARN},
                  {"warning", KMS_LOG_WARN},
                  {"error", KMS_LOG_ERROR}};
    for (size_t i = 0; s != NULL && i < sizeof(levels) / sizeof(levels[0]); i++) {
        if (strcmp(s, levels[i].name) == 0) {
            *out = levels[i].level;
            return KMS_OK;
        }
    }
    return KMS_EINVAL;
}

/* Re-records the current detail with a prefix ("line 3: ..."). The detail
 * is copied first: kms_error_set writes the buffer it would read. */
static int prefix_detail(int r, const char *prefix)
{
    char d[256];
    snprintf(d, sizeof(d), "%s", kms_error_detail());
    return kms_error_set(r, "%s: %s", prefix, d);
}

static int strlist_add(kms_strlist *l, const char *s)
{
    if (l->n >= KMS_CONFIG_MAX_IDENTITIES)
        return kms_error_set(KMS_EINVAL, "more than %d identities in one list",
                             KMS_CONFIG_MAX_IDENTITIES);
    char **v = realloc(l->v, (l->n + 1) * sizeof(*v));
    if (v == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    l->v = v;
    if ((l->v[l->n] = dup_s(s)) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    l->n++;
    return KMS_OK;
}

static void strlist_free(kms_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static void officers_free(kms_config *c)
{
    for (size_t i = 0; i < c->n_officers; i++) {
        free(c->officers[i].id);
        free(c->officers[i].identity);
        free(c->officers[i].signing_key);
    }
    free(c->officers);
    c->officers = NULL;
    c->n_officers = 0;
}

static void keys_free(kms_config *c)
{
    for (size_t i = 0; i < c->n_keys; i++) {
        free(c->keys[i].name);
        strlist_free(&c->keys[i].encrypt);
        strlist_free(&c->keys[i].decrypt);
        strlist_free(&c->keys[i].reencrypt);
    }
    free(c->keys);
    c->keys = NULL;
    c->n_keys = 0;
}

/* ---- public: defaults, scalar settings --------------------------------------- */

int kms_config_init(kms_config *c)
{
    memset(c, 0, sizeof(*c));
    c->log_level = KMS_LOG_INFO;
    c->max_message_size = KMS_CONFIG_DEFAULT_MAX_MESSAGE;
    c->max_send_message_size = KMS_CONFIG_DEFAULT_MAX_SEND;
    c->max_concurrent_streams = KMS_CONFIG_DEFAULT_MAX_STREAMS;
    c->handshake_timeout_ms = KMS_CONFIG_DEFAULT_HANDSHAKE_TIMEOUT_MS;
    c->idle_timeout_ms = KMS_CONFIG_DEFAULT_IDLE_TIMEOUT_MS;
    if ((c->listen = dup_s(KMS_CONFIG_DEFAULT_LISTEN)) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    return KMS_OK;
}

void kms_config_free(kms_config *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < NSETTINGS; i++) {
        if (settings[i].type == T_STRING || settings[i].type == T_PATH ||
            settings[i].type == T_PATHS) {
            char **p = (char **)((char *)c + settings[i].off);
            free(*p);
        }
    }
    officers_free(c);
    keys_free(c);
    strlist_free(&c->auditors);
    for (size_t i = 0; i < c->n_thresholds; i++)
        free(c->thresholds[i].action);
    free(c->thresholds);
    memset(c, 0, sizeof(*c));
}

/* "a,b" with each entry made relative to base_dir; NULL for an empty entry
 * (or out of memory). */
static char *paths_list(const char *value, const char *base_dir)
{
    char *out = NULL;
    size_t used = 0;
    for (const char *p = value;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma != NULL ? (size_t)(comma - p) : strlen(p);
        char *entry = n > 0 ? dup_n(p, n) : NULL;
        char *path = entry != NULL ? make_path(entry, base_dir) : NULL;
        free(entry);
        char *grown = path != NULL ? realloc(out, used + strlen(path) + 2) : NULL;
        if (grown == NULL) {
            free(path);
            free(out);
            return NULL;
        }
        out = grown;
        if (used > 0)
            out[used++] = ',';
        memcpy(out + used, path, strlen(path) + 1);
        used += strlen(path);
        free(path);
        if (comma == NULL)
            return out;
        p = comma + 1;
    }
}

/* Applies one scalar; base_dir anchors relative paths (NULL: as given). */
static int set_scalar(kms_config *c, const struct setting *st, const char *value,
                      const char *base_dir)
{
    void *field = (char *)c + st->off;
    unsigned long long v = 0;
    switch (st->type) {
    case T_STRING:
    case T_PATH: {
        if (value[0] == '\0')
            return kms_error_set(KMS_EINVAL, "%s: empty value", st->name);
        if (st->max != 0 && strlen(value) > st->max)
            return kms_error_set(KMS_EINVAL, "%s: longer than %llu bytes", st->name, st->max);
        char *s = st->type == T_PATH ? make_path(value, base_dir) : dup_s(value);
        if (s == NULL)
            return kms_error_set(KMS_ENOMEM, "out of memory");
        free(*(char **)field);
        *(char **)field = s;
        return KMS_OK;
    }
    case T_PATHS: {
        char *s = paths_list(value, base_dir);
        if (s == NULL)
            return kms_error_set(KMS_EINVAL, "%s: expected FILE[,FILE...] (no empty entry)",
                                 st->name);
        free(*(char **)field);
        *(char **)field = s;
        return KMS_OK;
    }
    case T_UINT:
        if (parse_ull(value, st->min, st->max, &v) != 0)
            return kms_error_set(KMS_EINVAL, "%s: expected an integer in %llu..%llu", st->name,
                                 st->min, st->max);
        *(unsigned *)field = (unsigned)v;
        return KMS_OK;
    case T_SIZE:
        if (parse_ull(value, st->min, st->max, &v) != 0)
            return kms_error_set(KMS_EINVAL, "%s: expected a byte count in %llu..%llu", st->name,
                                 st->min, st->max);
        *(size_t *)field = (size_t)v;
        return KMS_OK;
    case T_BOOL:
        if (parse_bool(value, (int *)field) != 0)
            return kms_error_set(KMS_EINVAL, "%s: expected true or false", st->name);
        return KMS_OK;
    case T_LEVEL:
        if (kms_config_parse_log_level(value, (kms_log_level *)field) != 0)
            return kms_error_set(KMS_EINVAL, "%s: expected debug, info, warn or error", st->name);
        return KMS_OK;
    default:
        return kms_error_set(KMS_EINTERNAL, "%s: unknown setting type", st->name);
    }
}

const char *kms_config_setting_name(size_t i)
{
    return i < NSETTINGS ? settings[i].name : NULL;
}

static const struct setting *find_setting(const char *name)
{
    for (size_t i = 0; i < NSETTINGS; i++)
        if (strcmp(settings[i].name, name) == 0)
            return &settings[i];
    return NULL;
}

int kms_config_set(kms_config *c, const char *name, const char *value)
{
    if (c == NULL || name == NULL || value == NULL)
        return kms_error_set(KMS_EINVAL, "no setting");
    const struct setting *st = find_setting(name);
    if (st == NULL)
        return kms_error_set(KMS_EINVAL, "unknown setting %s", name);
    return set_scalar(c, st, value, NULL);
}

/* ---- init section ------------------------------------------------------------- */

static int officer_append(kms_config *c, const char *id, const char *identity,
                          const char *signing_key)
{
    if (c->n_officers >= KMS_CONFIG_MAX_OFFICERS)
        return kms_error_set(KMS_EINVAL, "more than %d officers", KMS_CONFIG_MAX_OFFICERS);
    kms_config_officer *o = realloc(c->officers, (c->n_officers + 1) * sizeof(*o));
    if (o == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    c->officers = o;
    o = &c->officers[c->n_officers];
    o->id = dup_s(id);
    o->identity = dup_s(identity);
    o->signing_key = dup_s(signing_key);
    c->n_officers++; /* counted even on failure, so kms_config_free frees it */
    if (o->id == NULL || o->identity == NULL || o->signing_key == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    return KMS_OK;
}

int kms_config_add_officer(kms_config *c, const char *spec)
{
    if (c == NULL || spec == NULL)
        return kms_error_set(KMS_EINVAL, "no officer");
    const char *a = strchr(spec, ',');
    const char *b = a ? strchr(a + 1, ',') : NULL;
    if (a == NULL || b == NULL || strchr(b + 1, ',') != NULL || a == spec || b == a + 1 ||
        b[1] == '\0')
        return kms_error_set(KMS_EINVAL, "officer: expected ID,IDENTITY,PUBLIC_KEY_PEM_FILE");
    char *id = dup_n(spec, (size_t)(a - spec));
    char *identity = dup_n(a + 1, (size_t)(b - a - 1));
    int r;
    if (id == NULL || identity == NULL) {
        r = kms_error_set(KMS_ENOMEM, "out of memory");
        goto out;
    }
    if (!c->cli_officers) { /* the command line replaces the file's list */
        officers_free(c);
        c->cli_officers = 1;
    }
    r = officer_append(c, id, identity, b + 1);
out:
    free(id);
    free(identity);
    return r;
}

static int threshold_put(kms_config *c, const char *action, unsigned long long n)
{
    if (n > UINT32_MAX)
        return kms_error_set(KMS_EINVAL, "threshold for %s out of range", action);
    for (size_t i = 0; i < c->n_thresholds; i++) {
        if (strcmp(c->thresholds[i].action, action) == 0) {
            c->thresholds[i].threshold = (uint32_t)n;
            return KMS_OK;
        }
    }
    if (c->n_thresholds >= 64)
        return kms_error_set(KMS_EINVAL, "too many thresholds");
    kms_config_threshold *t = realloc(c->thresholds, (c->n_thresholds + 1) * sizeof(*t));
    if (t == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    c->thresholds = t;
    if ((t[c->n_thresholds].action = dup_s(action)) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    t[c->n_thresholds].threshold = (uint32_t)n;
    c->n_thresholds++;
    return KMS_OK;
}

int kms_config_add_threshold(kms_config *c, const char *spec)
{
    if (c == NULL || spec == NULL)
        return kms_error_set(KMS_EINVAL, "no threshold");
    unsigned long long n = 0;
    const char *eq = strchr(spec, '=');
    if (eq == NULL) {
        if (parse_ull(spec, 0, UINT32_MAX, &n) != 0)
            return kms_error_set(KMS_EINVAL, "threshold: expected N or ACTION=N");
        return threshold_put(c, "default", n);
    }
    if (eq == spec || eq - spec > NAME_MAX_LEN || parse_ull(eq + 1, 0, UINT32_MAX, &n) != 0)
        return kms_error_set(KMS_EINVAL, "threshold: expected N or ACTION=N");
    char action[NAME_MAX_LEN + 1];
    memcpy(action, spec, (size_t)(eq - spec));
    action[eq - spec] = '\0';
    return threshold_put(c, action, n);
}

static int key_append(kms_config *c, const char *name)
{
    if (c->n_keys >= KMS_CONFIG_MAX_KEYS)
        return kms_error_set(KMS_EINVAL, "more than %d keys", KMS_CONFIG_MAX_KEYS);
    kms_config_key *k = realloc(c->keys, (c->n_keys + 1) * sizeof(*k));
    if (k == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    c->keys = k;
    memset(&k[c->n_keys], 0, sizeof(*k));
    k[c->n_keys].name = dup_s(name);
    c->n_keys++;
    if (k[c->n_keys - 1].name == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    return KMS_OK;
}

int kms_config_add_key(kms_config *c, const char *name)
{
    if (c == NULL || name == NULL || name[0] == '\0')
        return kms_error_set(KMS_EINVAL, "create-key: no key name");
    if (!c->cli_keys) {
        keys_free(c);
        c->cli_keys = 1;
    }
    return key_append(c, name);
}

static kms_strlist *grant_list(kms_config_key *k, const char *action)
{
    if (strcmp(action, "encrypt") == 0)
        return &k->encrypt;
    if (strcmp(action, "decrypt") == 0)
        return &k->decrypt;
    if (strcmp(action, "reencrypt") == 0)
        return &k->reencrypt;
    return NULL;
}

int kms_config_add_grant(kms_config *c, const char *action, const char *identity)
{
    if (c == NULL || action == NULL || identity == NULL || identity[0] == '\0')
        return kms_error_set(KMS_EINVAL, "grant: no identity");
    if (c->n_keys == 0 || !c->cli_keys)
        return kms_error_set(KMS_EINVAL, "--allow-%s needs a --create-key before it", action);
    kms_strlist *l = grant_list(&c->keys[c->n_keys - 1], action);
    if (l == NULL)
        return kms_error_set(KMS_EINVAL, "unknown action %s", action);
    return strlist_add(l, identity);
}

int kms_config_add_auditor(kms_config *c, const char *identity)
{
    if (c == NULL || identity == NULL || identity[0] == '\0')
        return kms_error_set(KMS_EINVAL, "auditor: no identity");
    if (!c->cli_auditors) { /* the command line replaces the file's list */
        strlist_free(&c->auditors);
        c->cli_auditors = 1;
    }
    if (c->auditors.n >= KMS_CONFIG_MAX_AUDITORS)
        return kms_error_set(KMS_EINVAL, "more than %d auditors", KMS_CONFIG_MAX_AUDITORS);
    return strlist_add(&c->auditors, identity);
}

/* ---- YAML walk ----------------------------------------------------------------- */

struct walk {
    kms_config *c;
    yaml_document_t *doc;
    const char *base_dir;
};

static unsigned long line_of(const yaml_node_t *n)
{
    return (unsigned long)n->start_mark.line + 1;
}

/* The scalar's text, NUL-terminated by libyaml; embedded NULs refused. */
static int scalar(const yaml_node_t *n, const char *what, const char **out)
{
    if (n == NULL || n->type != YAML_SCALAR_NODE)
        return kms_error_set(KMS_EINVAL, "line %lu: %s must be a single value",
                             n ? line_of(n) : 0UL, what);
    const char *s = (const char *)n->data.scalar.value;
    if (memchr(s, '\0', n->data.scalar.length) != NULL)
        return kms_error_set(KMS_EINVAL, "line %lu: %s contains a NUL byte", line_of(n), what);
    *out = s;
    return KMS_OK;
}

static yaml_node_t *node(struct walk *w, int index)
{
    return yaml_document_get_node(w->doc, index);
}

/* Every key of a mapping is a scalar and appears once. */
static int check_mapping(struct walk *w, yaml_node_t *map, const char *what)
{
    if (map == NULL || map->type != YAML_MAPPING_NODE)
        return kms_error_set(KMS_EINVAL, "line %lu: %s must be a mapping", map ? line_of(map) : 0UL,
                             what);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const char *k = NULL;
        KMS_GUARD(scalar(node(w, p->key), "a key", &k));
        for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
            const char *k2 = (const char *)node(w, q->key)->data.scalar.value;
            if (strcmp(k, k2) == 0)
                return kms_error_set(KMS_EINVAL, "line %lu: %s appears twice in %s",
                                     line_of(node(w, p->key)), k, what);
        }
    }
    return KMS_OK;
}

static int walk_strlist(struct walk *w, yaml_node_t *seq, const char *what, kms_strlist *out)
{
    if (seq == NULL || seq->type != YAML_SEQUENCE_NODE)
        return kms_error_set(KMS_EINVAL, "line %lu: %s must be a list", seq ? line_of(seq) : 0UL,
                             what);
    for (yaml_node_item_t *i = seq->data.sequence.items.start; i < seq->data.sequence.items.top;
         i++) {
        const char *s = NULL;
        KMS_GUARD(scalar(node(w, *i), what, &s));
        if (s[0] == '\0')
            return kms_error_set(KMS_EINVAL, "line %lu: empty entry in %s", line_of(node(w, *i)),
                                 what);
        KMS_GUARD(strlist_add(out, s));
    }
    return KMS_OK;
}

static int walk_officers(struct walk *w, yaml_node_t *seq)
{
    if (seq->type != YAML_SEQUENCE_NODE)
        return kms_error_set(KMS_EINVAL, "line %lu: init.officers must be a list", line_of(seq));
    for (yaml_node_item_t *i = seq->data.sequence.items.start; i < seq->data.sequence.items.top;
         i++) {
        yaml_node_t *m = node(w, *i);
        const char *id = NULL, *identity = NULL, *key = NULL;
        KMS_GUARD(check_mapping(w, m, "an officer"));
        for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top;
             p++) {
            const char *k = (const char *)node(w, p->key)->data.scalar.value;
            const char **dst = strcmp(k, "id") == 0            ? &id
                               : strcmp(k, "identity") == 0    ? &identity
                               : strcmp(k, "signing_key") == 0 ? &key
                                                               : NULL;
            if (dst == NULL)
                return kms_error_set(KMS_EINVAL, "line %lu: unknown officer setting %s",
                                     line_of(node(w, p->key)), k);
            KMS_GUARD(scalar(node(w, p->value), k, dst));
        }
        if (id == NULL || identity == NULL || key == NULL || !id[0] || !identity[0] || !key[0])
            return kms_error_set(KMS_EINVAL,
                                 "line %lu: an officer needs id, identity and "
                                 "signing_key",
                                 line_of(m));
        char *path = make_path(key, w->base_dir);
        if (path == NULL)
            return kms_error_set(KMS_ENOMEM, "out of memory");
        int r = officer_append(w->c, id, identity, path);
        free(path);
        KMS_GUARD(r);
    }
    return KMS_OK;
}

static int walk_thresholds(struct walk *w, yaml_node_t *map)
{
    KMS_GUARD(check_mapping(w, map, "init.thresholds"));
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const char *k = (const char *)node(w, p->key)->data.scalar.value;
        const char *v = NULL;
        unsigned long long n = 0;
        KMS_GUARD(scalar(node(w, p->value), k, &v));
        if (k[0] == '\0' || strlen(k) > NAME_MAX_LEN || parse_ull(v, 0, UINT32_MAX, &n) != 0)
            return kms_error_set(KMS_EINVAL, "line %lu: threshold %s: expected an integer",
                                 line_of(node(w, p->value)), k);
        KMS_GUARD(threshold_put(w->c, k, n));
    }
    return KMS_OK;
}

static int walk_keys(struct walk *w, yaml_node_t *seq)
{
    if (seq->type != YAML_SEQUENCE_NODE)
        return kms_error_set(KMS_EINVAL, "line %lu: init.keys must be a list", line_of(seq));
    for (yaml_node_item_t *i = seq->data.sequence.items.start; i < seq->data.sequence.items.top;
         i++) {
        yaml_node_t *m = node(w, *i);
        KMS_GUARD(check_mapping(w, m, "a key"));
        const char *name = NULL;
        for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++)
            if (strcmp((const char *)node(w, p->key)->data.scalar.value, "name") == 0)
                KMS_GUARD(scalar(node(w, p->value), "name", &name));
        if (name == NULL || name[0] == '\0')
            return kms_error_set(KMS_EINVAL, "line %lu: a key needs a name", line_of(m));
        KMS_GUARD(key_append(w->c, name));
        kms_config_key *k = &w->c->keys[w->c->n_keys - 1];
        for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top;
             p++) {
            const char *kn = (const char *)node(w, p->key)->data.scalar.value;
            if (strcmp(kn, "name") == 0)
                continue;
            kms_strlist *l = grant_list(k, kn);
            if (l == NULL)
                return kms_error_set(KMS_EINVAL, "line %lu: unknown key setting %s",
                                     line_of(node(w, p->key)), kn);
            KMS_GUARD(walk_strlist(w, node(w, p->value), kn, l));
        }
    }
    return KMS_OK;
}

static int walk_init(struct walk *w, yaml_node_t *map)
{
    KMS_GUARD(check_mapping(w, map, "init"));
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const char *k = (const char *)node(w, p->key)->data.scalar.value;
        yaml_node_t *v = node(w, p->value);
        if (strcmp(k, "officers") == 0 && !w->c->cli_officers) {
            officers_free(w->c);
            KMS_GUARD(walk_officers(w, v));
        } else if (strcmp(k, "thresholds") == 0) {
            KMS_GUARD(walk_thresholds(w, v));
        } else if (strcmp(k, "keys") == 0 && !w->c->cli_keys) {
            keys_free(w->c);
            KMS_GUARD(walk_keys(w, v));
        } else if (strcmp(k, "auditors") == 0 && !w->c->cli_auditors) {
            strlist_free(&w->c->auditors);
            KMS_GUARD(walk_strlist(w, v, "init.auditors", &w->c->auditors));
            if (w->c->auditors.n > KMS_CONFIG_MAX_AUDITORS)
                return kms_error_set(KMS_EINVAL, "line %lu: more than %d auditors", line_of(v),
                                     KMS_CONFIG_MAX_AUDITORS);
        } else if (strcmp(k, "officers") != 0 && strcmp(k, "keys") != 0 &&
                   strcmp(k, "auditors") != 0) {
            return kms_error_set(KMS_EINVAL, "line %lu: unknown setting init.%s",
                                 line_of(node(w, p->key)), k);
        }
    }
    return KMS_OK;
}

/* A mapping of settings; prefix is "" at the top, "tls." inside tls. */
static int walk_settings(struct walk *w, yaml_node_t *map, const char *prefix)
{
    KMS_GUARD(check_mapping(w, map, prefix[0] ? prefix : "the configuration"));
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const char *k = (const char *)node(w, p->key)->data.scalar.value;
        yaml_node_t *v = node(w, p->value);
        char name[NAME_MAX_LEN];
        int n = snprintf(name, sizeof(name), "%s%s", prefix, k);
        if (n < 0 || (size_t)n >= sizeof(name))
            return kms_error_set(KMS_EINVAL, "line %lu: unknown setting", line_of(v));
        if (prefix[0] == '\0' &&
            (strcmp(k, "tls") == 0 || strcmp(k, "pkcs11") == 0 || strcmp(k, "quorum") == 0 ||
             strcmp(k, "tpm2") == 0 || strcmp(k, "limits") == 0 || strcmp(k, "audit") == 0 ||
             strcmp(k, "metrics") == 0)) {
            char sub[NAME_MAX_LEN];
            snprintf(sub, sizeof(sub), "%s.", k);
            KMS_GUARD(walk_settings(w, v, sub));
            continue;
        }
        if (prefix[0] == '\0' && strcmp(k, "init") == 0) {
            KMS_GUARD(walk_init(w, v));
            continue;
        }
        const struct setting *st = find_setting(name);
        if (st == NULL)
            return kms_error_set(KMS_EINVAL, "line %lu: unknown setting %s",
                                 line_of(node(w, p->key)), name);
        const char *s = NULL;
        KMS_GUARD(scalar(v, name, &s));
        int r = set_scalar(w->c, st, s, w->base_dir);
        if (r != 0) {
            char where[32];
            snprintf(where, sizeof(where), "line %lu", line_of(v));
            return prefix_detail(r, where);
        }
    }
    return KMS_OK;
}

/* First pass: one document at most, no anchors or aliases, bounded size. */
static int prescan(const char *buf, size_t len)
{
    yaml_parser_t parser;
    yaml_event_t ev;
    int r = KMS_OK, documents = 0, done = 0;
    size_t events = 0;

    if (!yaml_parser_initialize(&parser))
        return kms_error_set(KMS_ENOMEM, "yaml: cannot initialise parser");
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    while (!done) {
        if (!yaml_parser_parse(&parser, &ev)) {
            r = kms_error_set(KMS_EINVAL, "line %lu: %s",
                              (unsigned long)parser.problem_mark.line + 1,
                              parser.problem ? parser.problem : "YAML syntax error");
            goto out;
        }
        const yaml_char_t *anchor = NULL;
        switch (ev.type) {
        case YAML_ALIAS_EVENT:
            r = kms_error_set(KMS_EINVAL, "line %lu: aliases are not allowed in the configuration",
                              (unsigned long)ev.start_mark.line + 1);
            break;
        case YAML_SCALAR_EVENT:
            anchor = ev.data.scalar.anchor;
            break;
        case YAML_SEQUENCE_START_EVENT:
            anchor = ev.data.sequence_start.anchor;
            break;
        case YAML_MAPPING_START_EVENT:
            anchor = ev.data.mapping_start.anchor;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++documents > 1)
                r = kms_error_set(KMS_EINVAL, "line %lu: only one YAML document is allowed",
                                  (unsigned long)ev.start_mark.line + 1);
            break;
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        default:
            break;
        }
        if (r == 0 && anchor != NULL)
            r = kms_error_set(KMS_EINVAL, "line %lu: anchors are not allowed in the configuration",
                              (unsigned long)ev.start_mark.line + 1);
        if (r == 0 && ++events > MAX_EVENTS)
            r = kms_error_set(KMS_EINVAL, "configuration too large");
        yaml_event_delete(&ev);
        if (r != 0)
            goto out;
    }
out:
    yaml_parser_delete(&parser);
    return r;
}

int kms_config_load_buffer(kms_config *c, const char *buf, size_t len, const char *base_dir)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    int r, have_doc = 0;

    if (c == NULL || (buf == NULL && len > 0))
        return kms_error_set(KMS_EINVAL, "no configuration");
    if (len > KMS_CONFIG_FILE_MAX)
        return kms_error_set(KMS_EINVAL, "configuration larger than %u bytes", KMS_CONFIG_FILE_MAX);
    KMS_GUARD(prescan(buf ? buf : "", len));

    if (!yaml_parser_initialize(&parser))
        return kms_error_set(KMS_ENOMEM, "yaml: cannot initialise parser");
    yaml_parser_set_input_string(&parser, (const unsigned char *)(buf ? buf : ""), len);
    if (!yaml_parser_load(&parser, &doc)) {
        r = kms_error_set(KMS_EINVAL, "line %lu: %s", (unsigned long)parser.problem_mark.line + 1,
                          parser.problem ? parser.problem : "YAML syntax error");
        goto out;
    }
    have_doc = 1;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL) { /* an empty file: nothing to apply */
        r = KMS_OK;
        goto out;
    }
    struct walk w = {.c = c, .doc = &doc, .base_dir = base_dir};
    r = walk_settings(&w, root, "");
out:
    if (have_doc)
        yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return r;
}

int kms_config_load_file(kms_config *c, const char *path)
{
    char *buf = NULL, *dir = NULL;
    size_t used = 0;
    int r = KMS_OK;

    if (c == NULL || path == NULL || path[0] == '\0')
        return kms_error_set(KMS_EINVAL, "no configuration file");
    if ((r = kms_file_read(path, KMS_CONFIG_FILE_MAX, KMS_FILE_REGULAR, &buf, &used)) != 0)
        goto out;
    const char *slash = strrchr(path, '/');
    dir = slash == NULL   ? dup_s(".")
          : slash == path ? dup_s("/")
                          : dup_n(path, (size_t)(slash - path));
    if (dir == NULL) {
        r = kms_error_set(KMS_ENOMEM, "out of memory");
        goto out;
    }
    r = kms_config_load_buffer(c, buf, used, dir);
    if (r != 0)
        r = prefix_detail(r, path);
out:
    free(buf);
    free(dir);
    return r;
}

/* ---- validation ------------------------------------------------------------------ */

int kms_config_listen_is_loopback(const char *listen)
{
    char host[64];
    const char *colon = listen != NULL ? strrchr(listen, ':') : NULL;
    if (colon == NULL)
        return 0;
    const char *h = listen;
    size_t n = (size_t)(colon - listen);
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') { /* [::1]:7443 */
        h++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof(host))
        return 0;
    memcpy(host, h, n);
    host[n] = '\0';
    if (strcmp(host, "localhost") == 0)
        return 1;
    struct in_addr v4;
    struct in6_addr v6;
    if (inet_pton(AF_INET, host, &v4) == 1)
        return (ntohl(v4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &v6) == 1)
        return memcmp(&v6, &in6addr_loopback, sizeof(v6)) == 0;
    return 0;
}

int kms_config_check_test_settings(const kms_config *c, int test_hooks_built)
{
    if (c == NULL || test_hooks_built)
        return KMS_OK;
    if (c->test_clock_file != NULL || c->test_crash_at != NULL)
        return kms_error_set(KMS_EINVAL,
                             "%s is a test-only setting and this kmsd is a release "
                             "build (configure with -DKMS_TEST_HOOKS=ON for tests)",
                             c->test_clock_file != NULL ? "test_clock_file" : "test_crash_at");
    return KMS_OK;
}

int kms_config_validate(const kms_config *c, kms_config_mode mode)
{
    if (c == NULL)
        return kms_error_set(KMS_EINVAL, "no configuration");
    if (c->listen == NULL || strrchr(c->listen, ':') == NULL)
        return kms_error_set(KMS_EINVAL, "listen: expected HOST:PORT");
    if (c->database == NULL)
        return kms_error_set(KMS_EINVAL, "database: not set");
    /* Backends: PKCS#11, TPM2 or both; at least one. */
    int p11 =
        c->pkcs11_module != NULL || c->pkcs11_token_label != NULL || c->pkcs11_pin_file != NULL;
    if (p11 &&
        (c->pkcs11_module == NULL || c->pkcs11_token_label == NULL || c->pkcs11_pin_file == NULL))
        return kms_error_set(KMS_EINVAL,
                             "pkcs11: module, token_label and pin_file must all be set");
    if (!p11 && c->tpm2_tcti == NULL)
        return kms_error_set(KMS_EINVAL, "no backend configured: set the pkcs11 section "
                                         "(module, token_label, pin_file), tpm2.tcti, or both");
    if (mode == KMS_CONFIG_RUN && c->insecure_dev && !kms_config_listen_is_loopback(c->listen))
        return kms_error_set(KMS_EINVAL,
                             "insecure_dev: only on a loopback listen address "
                             "(127.0.0.0/8, [::1] or localhost), not %s",
                             c->listen);
    if (mode == KMS_CONFIG_RUN && !c->insecure_dev &&
        (c->tls_cert == NULL || c->tls_key == NULL || c->tls_client_ca == NULL))
        return kms_error_set(KMS_EINVAL, "tls: cert, key and client_ca must all be set "
                                         "(mutual TLS is mandatory)");
    return KMS_OK;
}
