/* kmsctl audit: offline tools over the audit log (docs/audit.md).
 *
 *   kmsctl audit verify FILE...            the chain across the files, in order
 *   kmsctl audit hash-context --key-file FILE K=V...   a context's MAC
 *
 * Neither talks to kmsd. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit_context.h"
#include "audit_verify.h"
#include "base/file.h"
#include "base/secret.h"
#include "kmsctl.h"

static int cmd_verify(kmsctl *k, int argc, char **argv)
{
    kms_audit_verify_result res;
    if (argc < 2)
        return kmsctl_usage_error(k, "audit verify FILE... (the audit files in order)");
    for (int i = 1; i < argc; i++)
        if (argv[i][0] == '-')
            return kmsctl_usage_error(k, "unknown option %s", argv[i]);
    if (kms_audit_verify_files((const char *const *)(argv + 1), (size_t)(argc - 1), &res) != 0) {
        fprintf(stderr, "kmsctl: audit verify: %s\n", kms_error_detail());
        return KMSCTL_EXIT_NOT_FOUND;
    }
    kmsctl_out o;
    kmsctl_out_begin(&o, k->json);
    kmsctl_out_str(&o, "chain", res.intact ? "intact" : "BROKEN");
    kmsctl_out_num(&o, "records", (long long)res.records);
    kmsctl_out_num(&o, "last_seq", (long long)res.last_seq);
    if (!res.intact) {
        kmsctl_out_num(&o, "first_bad_seq", (long long)res.bad_seq);
        kmsctl_out_str(&o, "reason", res.reason);
    }
    kmsctl_out_num(&o, "unverified_tail", (long long)res.unverified);
    kmsctl_out_end(&o);
    if (!res.intact) {
        fprintf(stderr, "kmsctl: audit verify: first bad record %llu: %s\n",
                (unsigned long long)res.bad_seq, res.reason);
        return KMSCTL_EXIT_INVALID;
    }
    if (res.unverified > 0) {
        fprintf(stderr,
                "kmsctl: audit verify: unverified tail of %llu records: chained, but no signed "
                "checkpoint covers them\n",
                (unsigned long long)res.unverified);
        return KMSCTL_EXIT_UNVERIFIED;
    }
    return KMSCTL_EXIT_OK;
}

static int cmd_hash_context(kmsctl *k, int argc, char **argv)
{
    const char *key_file = NULL;
    kms_audit_context_pair pairs[64];
    char *owned[64];
    size_t n = 0;
    kms_secret *key = NULL;
    int r = KMSCTL_EXIT_USAGE;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--key-file") == 0 && i + 1 < argc) {
            key_file = argv[++i];
            continue;
        }
        char *eq = strchr(argv[i], '=');
        if (argv[i][0] == '-' || eq == NULL || eq == argv[i]) {
            r = kmsctl_usage_error(k, "expected KEY=VALUE or --key-file FILE, got %s", argv[i]);
            goto out;
        }
        if (n == sizeof(pairs) / sizeof(pairs[0])) {
            r = kmsctl_usage_error(k, "too many pairs");
            goto out;
        }
        if ((owned[n] = strdup(argv[i])) == NULL) {
            r = KMSCTL_EXIT_FAILURE;
            goto out;
        }
        owned[n][eq - argv[i]] = '\0';
        pairs[n].key = owned[n];
        pairs[n].value = owned[n] + (eq - argv[i]) + 1;
        n++;
    }
    if (key_file == NULL) {
        r = kmsctl_usage_error(k, "audit hash-context --key-file FILE KEY=VALUE...");
        goto out;
    }
    if (kms_file_read_secret(key_file, KMS_AUDIT_CONTEXT_KEY_LEN + 1, &key) != 0 ||
        key->len != KMS_AUDIT_CONTEXT_KEY_LEN) {
        fprintf(stderr, "kmsctl: audit hash-context: %s: not a %d-byte private key file\n",
                key_file, KMS_AUDIT_CONTEXT_KEY_LEN);
        r = KMSCTL_EXIT_INVALID;
        goto out;
    }
    char hex[2 * KMS_AUDIT_CONTEXT_MAC_LEN + 1];
    if (kms_audit_context_mac_hex(key->data, key->len, pairs, n, hex) != 0) {
        fprintf(stderr, "kmsctl: audit hash-context: %s\n", kms_error_detail());
        r = KMSCTL_EXIT_INVALID;
        goto out;
    }
    kmsctl_out o;
    kmsctl_out_begin(&o, k->json);
    kmsctl_out_str(&o, "context_hmac", hex);
    kmsctl_out_end(&o);
    r = KMSCTL_EXIT_OK;
out:
    kms_secret_free(key);
    for (size_t i = 0; i < n; i++)
        free(owned[i]);
    return r;
}

int kmsctl_cmd_audit(kmsctl *k, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "verify") == 0)
        return cmd_verify(k, argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "hash-context") == 0)
        return cmd_hash_context(k, argc - 1, argv + 1);
    return kmsctl_usage_error(k,
                              "audit verify FILE... | audit hash-context --key-file FILE K=V...");
}
