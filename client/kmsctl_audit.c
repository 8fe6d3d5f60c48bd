/* kmsctl audit: offline tools over the audit log (docs/audit.md).
 *
 *   kmsctl audit verify FILE... [--pubkey PEM]   the chain across the files, in order,
 *                                          and every checkpoint's signature
 *   kmsctl audit pubkey PEM                the audit key's log id and PEM, checked
 *   kmsctl audit hash-context --key-file FILE K=V...   a context's MAC
 *
 * Neither talks to kmsd. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit_checkpoint.h"
#include "audit_context.h"
#include "audit_verify.h"
#include "base/file.h"
#include "base/secret.h"
#include "kmsctl.h"

/* Prints the verdict; the exit status: 6 broken (or a checkpoint not
 * valid), 13 intact with an unverified tail, 0 all covered. */
static int verify_report(kmsctl *k, const kms_audit_verify_result *res, int signed_checked)
{
    kmsctl_out o;
    kmsctl_out_begin(&o, k->json);
    kmsctl_out_str(&o, "chain", res->intact ? "intact" : "BROKEN");
    kmsctl_out_num(&o, "records", (long long)res->records);
    kmsctl_out_num(&o, "last_seq", (long long)res->last_seq);
    if (!res->intact) {
        kmsctl_out_num(&o, "first_bad_seq", (long long)res->bad_seq);
        kmsctl_out_str(&o, "reason", res->reason);
    }
    kmsctl_out_num(&o, "checkpoints", (long long)res->checkpoints);
    if (signed_checked) {
        kmsctl_out_num(&o, "checkpoints_verified", (long long)res->checkpoints_verified);
        kmsctl_out_num(&o, "last_checkpoint_seq", (long long)res->covered_seq);
    } else {
        kmsctl_out_str(&o, "checkpoints_verified", "not verified (no --pubkey)");
    }
    kmsctl_out_num(&o, "unverified_tail", (long long)res->unverified);
    kmsctl_out_end(&o);
    if (!res->intact) {
        fprintf(stderr, "kmsctl: audit verify: first bad record %llu: %s\n",
                (unsigned long long)res->bad_seq, res->reason);
        return KMSCTL_EXIT_INVALID;
    }
    if (!signed_checked)
        fprintf(stderr, "kmsctl: audit verify: checkpoints were not verified (no --pubkey)\n");
    if (res->unverified > 0) {
        fprintf(stderr,
                "kmsctl: audit verify: unverified tail of %llu records: chained, but no %s "
                "checkpoint covers them\n",
                (unsigned long long)res->unverified, signed_checked ? "valid signed" : "verified");
        return KMSCTL_EXIT_UNVERIFIED;
    }
    return KMSCTL_EXIT_OK;
}

/* The audit key's public point from a PEM file (docs/audit.md). */
static int read_pubkey(const char *path, uint8_t pub[KMS_AUDIT_PUB_LEN])
{
    char *pem = NULL;
    size_t len = 0;
    int r = kms_file_read(path, 64 * 1024, KMS_FILE_REGULAR, &pem, &len);
    if (r == 0)
        r = kms_audit_pub_from_pem(pem, len, pub);
    free(pem);
    if (r != 0)
        fprintf(stderr, "kmsctl: %s: %s\n", path, kms_error_detail());
    return r;
}

static int cmd_verify(kmsctl *k, int argc, char **argv)
{
    kms_audit_verify_result res;
    uint8_t pub[KMS_AUDIT_PUB_LEN];
    const char *pubkey = NULL;
    const char **files = calloc((size_t)argc, sizeof(*files));
    size_t n = 0;
    int r = KMSCTL_EXIT_USAGE;
    if (files == NULL)
        return KMSCTL_EXIT_FAILURE;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--pubkey") == 0 && i + 1 < argc && pubkey == NULL) {
            pubkey = argv[++i];
        } else if (argv[i][0] == '-') {
            r = kmsctl_usage_error(k, "unknown option %s", argv[i]);
            goto out;
        } else {
            files[n++] = argv[i];
        }
    }
    if (n == 0) {
        r = kmsctl_usage_error(k, "audit verify FILE... [--pubkey PEM] (the audit files in order)");
        goto out;
    }
    if (pubkey != NULL && read_pubkey(pubkey, pub) != 0) {
        r = KMSCTL_EXIT_INVALID;
        goto out;
    }
    if (kms_audit_verify_files_signed(files, n, pubkey != NULL ? pub : NULL, &res) != 0) {
        fprintf(stderr, "kmsctl: audit verify: %s\n", kms_error_detail());
        r = KMSCTL_EXIT_NOT_FOUND;
        goto out;
    }
    r = verify_report(k, &res, pubkey != NULL);
out:
    free(files);
    return r;
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

/* The audit key's public key, read from the file kmsd init wrote: checked
 * to be one EC P-256 key and printed with its log id (what every checkpoint
 * names). Offline on purpose: the key auditors trust must come from the
 * ceremony, not from the server whose log they check. */
static int cmd_pubkey(kmsctl *k, int argc, char **argv)
{
    uint8_t pub[KMS_AUDIT_PUB_LEN];
    char log_id[KMS_AUDIT_LOG_ID_HEX + 1], *pem = NULL;
    if (argc != 2 || argv[1][0] == '-')
        return kmsctl_usage_error(k, "audit pubkey PEM (the file kmsd init wrote: "
                                     "audit.pubkey_file)");
    if (read_pubkey(argv[1], pub) != 0)
        return KMSCTL_EXIT_INVALID;
    if (kms_audit_log_id(pub, log_id) != 0 || kms_audit_pub_to_pem(pub, &pem) != 0) {
        fprintf(stderr, "kmsctl: audit pubkey: %s\n", kms_error_detail());
        return KMSCTL_EXIT_FAILURE;
    }
    kmsctl_out o;
    kmsctl_out_begin(&o, k->json);
    kmsctl_out_str(&o, "algorithm", "ECDSA P-256 with SHA-256");
    kmsctl_out_str(&o, "log_id", log_id);
    kmsctl_out_str(&o, "pem", pem);
    kmsctl_out_end(&o);
    free(pem);
    return KMSCTL_EXIT_OK;
}

int kmsctl_cmd_audit(kmsctl *k, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "pubkey") == 0)
        return cmd_pubkey(k, argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "verify") == 0)
        return cmd_verify(k, argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "hash-context") == 0)
        return cmd_hash_context(k, argc - 1, argv + 1);
    return kmsctl_usage_error(k, "audit verify FILE... [--pubkey PEM] | audit pubkey PEM | "
                                 "audit hash-context --key-file FILE K=V...");
}
