/* kmsctl audit: tools over the audit log (docs/audit.md).
 *
 *   kmsctl audit verify FILE... [--pubkey PEM]   the chain across the files, in order,
 *                                          and every checkpoint's signature
 *   kmsctl audit pubkey PEM                the audit key's log id and PEM, checked
 *   kmsctl audit hash-context --key-file FILE K=V...   a context's MAC
 *   kmsctl audit tail [-f] [--json] [--from SEQ] [-n N]   records read from kmsd
 *
 * verify and hash-context work offline; tail asks kmsd (Audit.ReadAuditLog,
 * auditors only). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* ---- tail: records read from kmsd -------------------------------------------------- */

#define TAIL_DEFAULT 10
#define TAIL_PAGE 1000 /* records per ReadAuditLog call (the server's most) */
#define POLL_MS 1000

static volatile sig_atomic_t tail_stop;

static void on_stop(int sig)
{
    (void)sig;
    tail_stop = 1;
}

/* A decimal number in [min, max]; -1 if s is not one. */
static int parse_count(const char *s, unsigned long long min, unsigned long long max,
                       unsigned long long *out)
{
    char *end = NULL;
    if (s == NULL || s[0] < '0' || s[0] > '9')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* One record: with --json its exact line (JSON Lines: each line one
 * object, as the files hold it), else one readable line. */
static void print_record(FILE *f, int json, const kms_client_audit_record *r)
{
    if (json) {
        fprintf(f, "%s\n", r->line);
        return;
    }
    char when[32] = "?";
    time_t secs = (time_t)(r->time_us / 1000000);
    struct tm tm;
    if (r->time_us >= 0 && gmtime_r(&secs, &tm) != NULL)
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    fprintf(f, "%llu %s %s", (unsigned long long)r->seq, when, r->type);
    if (r->identity[0] != '\0')
        fprintf(f, " identity=%s", r->identity);
    if (r->method[0] != '\0')
        fprintf(f, " method=%s", r->method);
    if (r->key_name[0] != '\0')
        fprintf(f, " key=%s version=%u", r->key_name, r->key_version);
    if (strcmp(r->type, "rpc") == 0)
        fprintf(f, " status=%d", r->status);
    if (r->error[0] != '\0')
        fprintf(f, " error=%s", r->error);
    if (r->detail[0] != '\0')
        fprintf(f, " %s", r->detail);
    fputc('\n', f);
}

/* Prints records from *next on, at most *left of them (UINT64_MAX: no
 * bound), page by page until the durable end; *next and *left advance. 0
 * or kmsctl's exit code. */
static int tail_pages(kmsctl *k, kms_client *c, uint64_t *next, uint64_t *left)
{
    while (*left > 0 && !tail_stop) {
        kms_client_audit_record *recs = NULL;
        kms_client_error err;
        size_t n = 0;
        uint64_t last = 0;
        uint32_t ask = *left < TAIL_PAGE ? (uint32_t)*left : TAIL_PAGE;
        if (kms_client_read_audit_log(c, *next, ask, &recs, &n, &last, &err) != 0)
            return kmsctl_fail(k, &err);
        for (size_t i = 0; i < n; i++)
            print_record(stdout, k->json, &recs[i]);
        if (n > 0) {
            *next = recs[n - 1].seq + 1;
            *left -= n;
        }
        kms_client_audit_records_free(recs, n);
        fflush(stdout);
        if (n == 0 || *next > last)
            break; /* at the durable end */
    }
    return KMSCTL_EXIT_OK;
}

/* kmsctl audit tail [-f] [--json] [--from SEQ] [-n N]: the last N records
 * (10), or with --from the records from SEQ on (all of them, or N); -f
 * then polls for new records until interrupted. Each poll is a call, so
 * it is itself recorded. */
static int cmd_tail(kmsctl *k, int argc, char **argv)
{
    unsigned long long from = 0, count = 0;
    int follow = 0, has_from = 0, has_count = 0;
    kms_client *c = NULL;
    int r;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-f") == 0 || strcmp(argv[i], "--follow") == 0) {
            follow = 1;
        } else if (strcmp(argv[i], "--json") == 0) {
            k->json = 1;
        } else if (strcmp(argv[i], "--from") == 0 && i + 1 < argc) {
            if (parse_count(argv[++i], 1, UINT64_MAX, &from) != 0)
                return kmsctl_usage_error(k, "--from: a record number from 1, got %s", argv[i]);
            has_from = 1;
        } else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            if (parse_count(argv[++i], 0, UINT64_MAX, &count) != 0)
                return kmsctl_usage_error(k, "-n: a number of records, got %s", argv[i]);
            has_count = 1;
        } else {
            return kmsctl_usage_error(k, "audit tail [-f] [--json] [--from SEQ] [-n N], got %s",
                                      argv[i]);
        }
    }
    if ((r = kmsctl_client(k, &c)) != 0)
        return r;
    uint64_t next = from, left = has_count ? count : UINT64_MAX;
    if (!has_from) {
        /* The last N: learn where the log ends, then start N before it. */
        kms_client_audit_record *recs = NULL;
        kms_client_error err;
        size_t n = 0;
        uint64_t last = 0;
        uint64_t want = has_count ? count : TAIL_DEFAULT;
        if (kms_client_read_audit_log(c, UINT64_MAX, 1, &recs, &n, &last, &err) != 0)
            return kmsctl_fail(k, &err);
        kms_client_audit_records_free(recs, n);
        next = last >= want ? last - want + 1 : 1;
        left = want;
        if (want == 0)
            next = last + 1;
    }
    if (follow) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_stop;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
    }
    if ((r = tail_pages(k, c, &next, &left)) != 0 || !follow)
        return r;
    while (!tail_stop) {
        struct timespec t = {POLL_MS / 1000, (long)(POLL_MS % 1000) * 1000000L};
        nanosleep(&t, NULL); /* a signal cuts it short */
        uint64_t unbounded = UINT64_MAX;
        if (!tail_stop && (r = tail_pages(k, c, &next, &unbounded)) != 0)
            return r;
    }
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
    if (argc >= 2 && strcmp(argv[1], "tail") == 0)
        return cmd_tail(k, argc - 1, argv + 1);
    return kmsctl_usage_error(k, "audit verify FILE... [--pubkey PEM] | audit pubkey PEM | "
                                 "audit hash-context --key-file FILE K=V... | "
                                 "audit tail [-f] [--json] [--from SEQ] [-n N]");
}
