/* kmsctl: the connection file, a flat YAML mapping parsed with libyaml:
 *
 *   server: 127.0.0.1:7443
 *   ca: pki/ca.pem
 *   cert: pki/app.pem
 *   key: pki/app-key.pem
 *   server_name: localhost        (optional)
 *   timeout_ms: 10000             (optional)
 *   signing_key: officer1-signing-key.pem   (officers, optional)
 *   instance_id: 32 hex digits    (officers, optional: `approve` refuses
 *                                  to sign for any other kmsd)
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "base/file.h"
#include "kmsctl.h"

#define CONF_MAX (64 * 1024)

static int set_str(char **slot, const char *value)
{
    char *s = strdup(value);
    if (s == NULL)
        return -1;
    free(*slot);
    *slot = s;
    return 0;
}

/* A relative path becomes relative to dir (the file's directory). */
static char *resolve(const char *value, const char *dir)
{
    if (value[0] == '/' || dir == NULL)
        return strdup(value);
    size_t n = strlen(dir) + strlen(value) + 2;
    char *p = malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s/%s", dir, value);
    return p;
}

/* 32 hex digits into out[16]; 0, or -1. */
static int parse_instance_id(const char *s, uint8_t out[16])
{
    if (strlen(s) != 32)
        return -1;
    for (size_t i = 0; i < 32; i++) {
        char ch = s[i];
        int d = ch >= '0' && ch <= '9'   ? ch - '0'
                : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                         : -1;
        if (d < 0)
            return -1;
        out[i / 2] = (uint8_t)(i % 2 ? (out[i / 2] | d) : d << 4);
    }
    return 0;
}

static int set_one(kmsctl_conf *c, const char *name, const char *value, const char *dir)
{
    if (strcmp(name, "instance_id") == 0) {
        if (parse_instance_id(value, c->instance_id) != 0)
            return -4;
        c->has_instance_id = 1;
        return 0;
    }
    if (strcmp(name, "timeout_ms") == 0) {
        char *end;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno != 0 || *end != '\0' || end == value || v < 1 || v > 3600000)
            return -2;
        c->timeout_ms = v;
        return 0;
    }
    if (strcmp(name, "server") == 0 || strcmp(name, "server_name") == 0)
        return set_str(strcmp(name, "server") == 0 ? &c->server : &c->server_name, value);
    char **slot = strcmp(name, "ca") == 0            ? &c->ca
                  : strcmp(name, "cert") == 0        ? &c->cert
                  : strcmp(name, "key") == 0         ? &c->key
                  : strcmp(name, "signing_key") == 0 ? &c->signing_key
                                                     : NULL;
    if (slot == NULL)
        return -3;
    /* A pkcs11: URI names a token object, not a file. */
    char *p = strncmp(value, "pkcs11:", 7) == 0 ? strdup(value) : resolve(value, dir);
    if (p == NULL)
        return -1;
    free(*slot);
    *slot = p;
    return 0;
}

int kmsctl_conf_set(kmsctl_conf *c, const char *name, const char *value)
{
    int r = set_one(c, name, value, NULL);
    if (r == -2)
        fprintf(stderr, "kmsctl: %s: not a number of milliseconds (1..3600000)\n", name);
    else if (r == -4)
        fprintf(stderr, "kmsctl: %s: not 32 hex digits\n", name);
    else if (r != 0)
        fprintf(stderr, "kmsctl: cannot set %s\n", name);
    return r == 0 ? 0 : -1;
}

static char *file_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

int kmsctl_conf_load(kmsctl_conf *c, const char *path)
{
    size_t len = 0;
    char *buf = NULL;
    if (kms_file_read(path, CONF_MAX, 0, &buf, &len) != 0) {
        fprintf(stderr, "kmsctl: config: %s\n", kms_error_detail());
        return -1;
    }
    char *dir = file_dir(path);
    yaml_parser_t parser;
    yaml_document_t doc;
    int r = -1, have_doc = 0;
    if (dir == NULL || !yaml_parser_initialize(&parser)) {
        fprintf(stderr, "kmsctl: out of memory\n");
        free(buf);
        free(dir);
        return -1;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    if (!yaml_parser_load(&parser, &doc)) {
        fprintf(stderr, "kmsctl: config %s: line %lu: %s\n", path,
                (unsigned long)parser.problem_mark.line + 1,
                parser.problem ? parser.problem : "YAML error");
        goto out;
    }
    have_doc = 1;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL || root->type != YAML_MAPPING_NODE) {
        fprintf(stderr, "kmsctl: config %s: expected a mapping of settings\n", path);
        goto out;
    }
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(&doc, p->key);
        yaml_node_t *v = yaml_document_get_node(&doc, p->value);
        if (k == NULL || v == NULL || k->type != YAML_SCALAR_NODE || v->type != YAML_SCALAR_NODE) {
            fprintf(stderr, "kmsctl: config %s: every setting must be a plain value\n", path);
            goto out;
        }
        const char *name = (const char *)k->data.scalar.value;
        const char *value = (const char *)v->data.scalar.value;
        int s = set_one(c, name, value, dir);
        if (s != 0) {
            fprintf(stderr, "kmsctl: config %s: line %lu: %s: %s\n", path,
                    (unsigned long)k->start_mark.line + 1, name,
                    s == -3   ? "unknown setting"
                    : s == -2 ? "not a number of milliseconds (1..3600000)"
                    : s == -4 ? "not 32 hex digits (the instance_id that show-action prints)"
                              : "out of memory");
            goto out;
        }
    }
    r = 0;
out:
    if (have_doc)
        yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    free(buf);
    free(dir);
    return r;
}

void kmsctl_conf_free(kmsctl_conf *c)
{
    free(c->server);
    free(c->ca);
    free(c->cert);
    free(c->key);
    free(c->server_name);
    free(c->signing_key);
    memset(c, 0, sizeof(*c));
}

/* The client for the configured server, opened on first use. */
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
