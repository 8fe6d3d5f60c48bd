/* kmsctl: describe-key, list-keys and health. */
#include <stdio.h>
#include <string.h>

#include "base/text.h"
#include "kmsctl.h"

static const char *state_name(int s)
{
    switch (s) {
    case KMS_CLIENT_VERSION_ENABLED:
        return "ENABLED";
    case KMS_CLIENT_VERSION_DISABLED:
        return "DISABLED";
    case KMS_CLIENT_VERSION_PENDING_DELETION:
        return "PENDING_DELETION";
    case KMS_CLIENT_VERSION_DESTROYED:
        return "DESTROYED";
    default:
        return "UNSPECIFIED";
    }
}

static void json_strings(FILE *f, const kms_client_strings *s)
{
    fputc('[', f);
    for (size_t i = 0; i < s->n; i++) {
        if (i)
            fputc(',', f);
        kmsctl_json_string(f, s->items[i]);
    }
    fputc(']', f);
}

static void key_json(FILE *f, const kms_client_key *k)
{
    char id[33];
    for (size_t i = 0; i < sizeof(k->key_id); i++)
        snprintf(id + 2 * i, 3, "%02x", k->key_id[i]);
    fputs("{\"key_name\":", f);
    kmsctl_json_string(f, k->name);
    fprintf(f, ",\"key_id\":\"%s\",\"backend\":", id);
    kmsctl_json_string(f, k->backend);
    fputs(",\"backend_mode\":", f);
    kmsctl_json_string(f, k->backend_mode);
    fprintf(f,
            ",\"primary_version\":%u,\"min_decryption_version\":%u,\"rotation_period_days\":%u,"
            "\"created_at\":%lld,\"deletion_at\":%lld,\"versions\":[",
            k->primary_version, k->min_decryption_version, k->rotation_period_days,
            (long long)k->created_at, (long long)k->deletion_at);
    for (size_t i = 0; i < k->n_versions; i++)
        fprintf(f, "%s{\"version\":%u,\"state\":\"%s\",\"created_at\":%lld,\"usage_count\":%llu}",
                i ? "," : "", k->versions[i].version, state_name(k->versions[i].state),
                (long long)k->versions[i].created_at,
                (unsigned long long)k->versions[i].usage_count);
    if (!k->policy_shown) {
        fputs("],\"policy\":null}", f); /* withheld: shown to officers only */
        return;
    }
    fputs("],\"policy\":{\"encrypt\":", f);
    json_strings(f, &k->encrypt);
    fputs(",\"decrypt\":", f);
    json_strings(f, &k->decrypt);
    fputs(",\"reencrypt\":", f);
    json_strings(f, &k->reencrypt);
    fputs("}}", f);
}

static void text_strings(FILE *f, const char *name, const kms_client_strings *s)
{
    fprintf(f, "  %-10s", name);
    if (s->n == 0)
        fputs(" (nobody)", f);
    for (size_t i = 0; i < s->n; i++) {
        fputc(' ', f);
        kms_text_escape(f, s->items[i]);
    }
    fputc('\n', f);
}

static void key_text(FILE *f, const kms_client_key *k)
{
    fputs("key ", f);
    kms_text_escape(f, k->name);
    fputs("\n  id         ", f);
    for (size_t i = 0; i < sizeof(k->key_id); i++)
        fprintf(f, "%02x", k->key_id[i]);
    fputs("\n  backend    ", f);
    kms_text_escape(f, k->backend);
    fputs(k->backend_mode[0] ? " " : "", f);
    kms_text_escape(f, k->backend_mode);
    fprintf(f, "\n  primary    v%u\n  min decrypt v%u\n", k->primary_version,
            k->min_decryption_version);
    if (k->rotation_period_days)
        fprintf(f, "  rotation   every %u days\n", k->rotation_period_days);
    if (k->deletion_at)
        fprintf(f, "  deletion   scheduled at %lld (unix)\n", (long long)k->deletion_at);
    for (size_t i = 0; i < k->n_versions; i++)
        fprintf(f, "  version %u  %s  created %lld  usage %llu\n", k->versions[i].version,
                state_name(k->versions[i].state), (long long)k->versions[i].created_at,
                (unsigned long long)k->versions[i].usage_count);
    if (!k->policy_shown) {
        fputs("  policy     (shown to security officers only)\n", f);
        return;
    }
    fputs("  policy\n", f);
    text_strings(f, "encrypt", &k->encrypt);
    text_strings(f, "decrypt", &k->decrypt);
    text_strings(f, "reencrypt", &k->reencrypt);
}

static int no_args(kmsctl *k, int argc, char **argv, int want)
{
    for (int i = 1; i < argc; i++)
        if (argv[i][0] == '-' && strcmp(argv[i], "-") != 0)
            return kmsctl_usage_error(k, "unknown option %s", argv[i]);
    if (argc - 1 != want)
        return kmsctl_usage_error(k, want ? "expected one argument" : "expected no arguments");
    return 0;
}

int kmsctl_cmd_describe_key(kmsctl *k, int argc, char **argv)
{
    kms_client *c;
    kms_client_key key;
    kms_client_error err;
    int r = no_args(k, argc, argv, 1);
    if (r != 0 || (r = kmsctl_client(k, &c)) != 0)
        return r;
    if (kms_client_describe_key(c, argv[1], &key, &err) != 0)
        return kmsctl_fail(k, &err);
    if (k->json) {
        key_json(stdout, &key);
        fputc('\n', stdout);
    } else {
        key_text(stdout, &key);
    }
    kms_client_key_free(&key);
    return 0;
}

int kmsctl_cmd_list_keys(kmsctl *k, int argc, char **argv)
{
    kms_client *c;
    kms_client_key_list list;
    kms_client_error err;
    int r = no_args(k, argc, argv, 0);
    if (r != 0 || (r = kmsctl_client(k, &c)) != 0)
        return r;
    if (kms_client_list_keys(c, &list, &err) != 0)
        return kmsctl_fail(k, &err);
    if (k->json)
        fputs("{\"keys\":[", stdout);
    for (size_t i = 0; i < list.n; i++) {
        if (k->json) {
            if (i)
                fputc(',', stdout);
            key_json(stdout, &list.keys[i]);
        } else {
            kms_text_escape(stdout, list.keys[i].name);
            printf("\tv%u\t", list.keys[i].primary_version);
            kms_text_escape(stdout, list.keys[i].backend);
            printf("\t%zu version%s\n", list.keys[i].n_versions,
                   list.keys[i].n_versions == 1 ? "" : "s");
        }
    }
    if (k->json)
        fputs("]}\n", stdout);
    kms_client_key_list_free(&list);
    return 0;
}

int kmsctl_cmd_health(kmsctl *k, int argc, char **argv)
{
    kms_client *c;
    kms_client_error err;
    int r = no_args(k, argc, argv, 0);
    if (r != 0 || (r = kmsctl_client(k, &c)) != 0)
        return r;
    if (kms_client_health(c, "", &err) != 0)
        return kmsctl_fail(k, &err);
    kmsctl_out o;
    kmsctl_out_begin(&o, k->json);
    kmsctl_out_str(&o, "status", "SERVING");
    kmsctl_out_end(&o);
    return 0;
}
