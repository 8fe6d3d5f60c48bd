/* kmsctl: data-plane commands (generate-data-key, encrypt, decrypt,
 * reencrypt). Blobs and plaintext are printed as base64 unless written to a
 * file with --out / --blob-out / --plaintext-out. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "kmsctl.h"

#define MAX_PLAINTEXT 4096
#define MAX_BLOB (64 * 1024)

enum {
    OPT_KEY = 'k',
    OPT_CONTEXT = 'c',
    OPT_IN = 'i',
    OPT_OUT = 'o',
    OPT_IN_B64 = 256,
    OPT_SPEC,
    OPT_NO_PLAINTEXT,
    OPT_BLOB_OUT,
    OPT_PLAINTEXT_OUT,
    OPT_SOURCE_CONTEXT
};

static const struct option data_options[] = {
    {"key", required_argument, NULL, OPT_KEY},
    {"context", required_argument, NULL, OPT_CONTEXT},
    {"source-context", required_argument, NULL, OPT_SOURCE_CONTEXT},
    {"in", required_argument, NULL, OPT_IN},
    {"in-b64", required_argument, NULL, OPT_IN_B64},
    {"out", required_argument, NULL, OPT_OUT},
    {"spec", required_argument, NULL, OPT_SPEC},
    {"no-plaintext", no_argument, NULL, OPT_NO_PLAINTEXT},
    {"blob-out", required_argument, NULL, OPT_BLOB_OUT},
    {"plaintext-out", required_argument, NULL, OPT_PLAINTEXT_OUT},
    {NULL, 0, NULL, 0}};

typedef struct args {
    const char *key, *in, *in_b64, *out, *blob_out, *plaintext_out;
    kmsctl_context ctx, source_ctx;
    kms_client_key_spec spec;
    int no_plaintext;
} args;

/* allowed: the option letters this command takes. */
static int parse(kmsctl *k, int argc, char **argv, const int *allowed, args *a)
{
    memset(a, 0, sizeof(*a));
    a->spec = KMS_CLIENT_AES_256;
    optind = 0; /* glibc: restart scanning for this command's options */
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "+", data_options, NULL)) != -1) {
        int ok = 0;
        for (const int *p = allowed; *p; p++)
            ok |= *p == opt;
        if (opt == '?' || opt == ':' || !ok)
            return kmsctl_usage_error(k, "unknown or misplaced option %s", argv[optind - 1]);
        switch (opt) {
        case OPT_KEY:
            a->key = optarg;
            break;
        case OPT_CONTEXT:
        case OPT_SOURCE_CONTEXT:
            if (kmsctl_context_add(opt == OPT_CONTEXT ? &a->ctx : &a->source_ctx, optarg) != 0)
                return kmsctl_usage_error(k, "context must be KEY=VALUE, got \"%s\"", optarg);
            break;
        case OPT_IN:
            a->in = optarg;
            break;
        case OPT_IN_B64:
            a->in_b64 = optarg;
            break;
        case OPT_OUT:
            a->out = optarg;
            break;
        case OPT_BLOB_OUT:
            a->blob_out = optarg;
            break;
        case OPT_PLAINTEXT_OUT:
            a->plaintext_out = optarg;
            break;
        case OPT_NO_PLAINTEXT:
            a->no_plaintext = 1;
            break;
        case OPT_SPEC:
            if (strcmp(optarg, "AES_256") == 0)
                a->spec = KMS_CLIENT_AES_256;
            else if (strcmp(optarg, "AES_128") == 0)
                a->spec = KMS_CLIENT_AES_128;
            else
                return kmsctl_usage_error(k, "--spec must be AES_256 or AES_128");
            break;
        default:
            return kmsctl_usage_error(k, "unexpected option");
        }
    }
    if (optind != argc)
        return kmsctl_usage_error(k, "unexpected argument \"%s\"", argv[optind]);
    return 0;
}

static void args_free(args *a)
{
    kmsctl_context_free(&a->ctx);
    kmsctl_context_free(&a->source_ctx);
}

/* Prints or writes one binary field: to file when given, else base64. */
static int emit(kmsctl *k, kmsctl_out *o, const char *name, const char *file, const uint8_t *data,
                size_t len, int secret)
{
    if (file != NULL) {
        int r = kmsctl_write_output(k, file, data, len, secret);
        if (r == 0 && strcmp(file, "-") != 0) {
            char field[64];
            snprintf(field, sizeof(field), "%s_file", name);
            kmsctl_out_str(o, field, file);
        }
        return r;
    }
    char *b = kmsctl_b64(data, len);
    if (b == NULL) {
        fprintf(stderr, "kmsctl: out of memory\n");
        return KMSCTL_EXIT_FAILURE;
    }
    kmsctl_out_str(o, name, b);
    kmsctl_b64_free(b);
    return 0;
}

/* Prints a result: names and versions, then blob and plaintext. When raw
 * output goes to stdout ("-") nothing else is printed there. */
static int print_result(kmsctl *k, const kms_client_result *res, const char *blob_file,
                        const char *plaintext_file)
{
    int raw_stdout = (blob_file && strcmp(blob_file, "-") == 0) ||
                     (plaintext_file && strcmp(plaintext_file, "-") == 0);
    if (raw_stdout) {
        if (res->blob != NULL && blob_file != NULL)
            return kmsctl_write_output(k, blob_file, res->blob, res->blob_len, 0);
        return kmsctl_write_output(k, plaintext_file, res->plaintext, res->plaintext_len, 1);
    }
    kmsctl_out o;
    int r = 0;
    kmsctl_out_begin(&o, k->json);
    if (res->source_key_name != NULL) {
        kmsctl_out_str(&o, "source_key_name", res->source_key_name);
        kmsctl_out_num(&o, "source_key_version", res->source_key_version);
    }
    kmsctl_out_str(&o, "key_name", res->key_name);
    kmsctl_out_num(&o, "key_version", res->key_version);
    if (res->blob != NULL)
        r = emit(k, &o, "ciphertext_blob", blob_file, res->blob, res->blob_len, 0);
    if (r == 0 && res->plaintext != NULL)
        r = emit(k, &o, "plaintext", plaintext_file, res->plaintext, res->plaintext_len, 1);
    kmsctl_out_end(&o);
    return r;
}

int kmsctl_cmd_generate_data_key(kmsctl *k, int argc, char **argv)
{
    static const int allowed[] = {OPT_KEY,      OPT_CONTEXT,       OPT_SPEC, OPT_NO_PLAINTEXT,
                                  OPT_BLOB_OUT, OPT_PLAINTEXT_OUT, 0};
    args a;
    kms_client *c;
    kms_client_result res;
    kms_client_error err;
    int r = parse(k, argc, argv, allowed, &a);
    if (r == 0 && a.key == NULL)
        r = kmsctl_usage_error(k, "--key NAME is required");
    if (r == 0 && a.no_plaintext && a.plaintext_out != NULL)
        r = kmsctl_usage_error(k, "--no-plaintext and --plaintext-out exclude each other");
    if (r == 0 && (r = kmsctl_client(k, &c)) == 0) {
        if (kms_client_generate_data_key(c, a.key, a.spec, a.ctx.v, a.ctx.n, a.no_plaintext, &res,
                                         &err) != 0) {
            r = kmsctl_fail(k, &err);
        } else {
            r = print_result(k, &res, a.blob_out, a.plaintext_out);
            kms_client_result_free(&res);
        }
    }
    args_free(&a);
    return r;
}

int kmsctl_cmd_encrypt(kmsctl *k, int argc, char **argv)
{
    static const int allowed[] = {OPT_KEY, OPT_CONTEXT, OPT_IN, OPT_IN_B64, OPT_OUT, 0};
    args a;
    kms_client *c;
    kms_client_result res;
    kms_client_error err;
    kmsctl_bytes in = {0};
    int r = parse(k, argc, argv, allowed, &a);
    if (r == 0 && a.key == NULL)
        r = kmsctl_usage_error(k, "--key NAME is required");
    if (r == 0)
        r = kmsctl_read_input(k, a.in, a.in_b64, MAX_PLAINTEXT, 1, &in);
    if (r == 0 && (r = kmsctl_client(k, &c)) == 0) {
        if (kms_client_encrypt(c, a.key, in.data, in.len, a.ctx.v, a.ctx.n, &res, &err) != 0) {
            r = kmsctl_fail(k, &err);
        } else {
            r = print_result(k, &res, a.out, NULL);
            kms_client_result_free(&res);
        }
    }
    kmsctl_bytes_free(&in);
    args_free(&a);
    return r;
}

int kmsctl_cmd_decrypt(kmsctl *k, int argc, char **argv)
{
    static const int allowed[] = {OPT_CONTEXT, OPT_IN, OPT_IN_B64, OPT_OUT, 0};
    args a;
    kms_client *c;
    kms_client_result res;
    kms_client_error err;
    kmsctl_bytes in = {0};
    int r = parse(k, argc, argv, allowed, &a);
    if (r == 0)
        r = kmsctl_read_input(k, a.in, a.in_b64, MAX_BLOB, 0, &in);
    if (r == 0 && (r = kmsctl_client(k, &c)) == 0) {
        if (kms_client_decrypt(c, in.data, in.len, a.ctx.v, a.ctx.n, &res, &err) != 0) {
            r = kmsctl_fail(k, &err);
        } else {
            r = print_result(k, &res, NULL, a.out);
            kms_client_result_free(&res);
        }
    }
    kmsctl_bytes_free(&in);
    args_free(&a);
    return r;
}

int kmsctl_cmd_reencrypt(kmsctl *k, int argc, char **argv)
{
    static const int allowed[] = {
        OPT_KEY, OPT_CONTEXT, OPT_SOURCE_CONTEXT, OPT_IN, OPT_IN_B64, OPT_OUT, 0};
    args a;
    kms_client *c;
    kms_client_result res;
    kms_client_error err;
    kmsctl_bytes in = {0};
    int r = parse(k, argc, argv, allowed, &a);
    if (r == 0 && a.key == NULL)
        r = kmsctl_usage_error(k, "--key DESTINATION is required");
    if (r == 0)
        r = kmsctl_read_input(k, a.in, a.in_b64, MAX_BLOB, 0, &in);
    if (r == 0 && (r = kmsctl_client(k, &c)) == 0) {
        if (kms_client_reencrypt(c, in.data, in.len, a.source_ctx.v, a.source_ctx.n, a.key, a.ctx.v,
                                 a.ctx.n, &res, &err) != 0) {
            r = kmsctl_fail(k, &err);
        } else {
            r = print_result(k, &res, a.out, NULL);
            kms_client_result_free(&res);
        }
    }
    kmsctl_bytes_free(&in);
    args_free(&a);
    return r;
}
