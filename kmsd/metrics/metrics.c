/* The metrics registry (metrics.h). */
#include "kmsd/metrics/metrics.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "base/log.h"

/* Upper bounds of the latency buckets, in microseconds (+Inf follows). */
static const uint64_t bucket_us[] = {100,     250,     500,     1000,    2500,   5000,
                                     10000,   25000,   50000,   100000,  250000, 500000,
                                     1000000, 2500000, 5000000, 10000000};
#define NBUCKETS (sizeof(bucket_us) / sizeof(bucket_us[0]))

struct histogram {
    _Atomic uint64_t bucket[NBUCKETS + 1]; /* not cumulative; the last is +Inf */
    _Atomic uint64_t sum_us;
};

static struct {
    const char *paths[KMS_METRICS_MAX_METHODS];
    size_t n_methods;
    _Atomic uint64_t calls[KMS_METRICS_MAX_METHODS][KMS_METRICS_STATUSES + 1]; /* last: other */
    struct histogram latency[KMS_METRICS_MAX_METHODS];
    _Atomic uint64_t audit_records, audit_failures;
    struct histogram audit_sync;
    _Atomic int64_t server_cert_expiry, crl_next_update;
} reg;

int kms_metrics_init(size_t n)
{
    if (n > KMS_METRICS_MAX_METHODS)
        return kms_error_set(KMS_EINTERNAL, "metrics: %zu methods, at most %d", n,
                             KMS_METRICS_MAX_METHODS);
    for (size_t i = 0; i < n; i++)
        reg.paths[i] = "?";
    reg.n_methods = n;
    return KMS_OK;
}

void kms_metrics_name_method(size_t i, const char *path)
{
    if (i < reg.n_methods)
        reg.paths[i] = path;
}

static void observe(struct histogram *h, uint64_t us)
{
    size_t i = 0;
    while (i < NBUCKETS && us > bucket_us[i])
        i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

void kms_metrics_rpc(size_t method, int grpc_status, uint64_t duration_us)
{
    if (method >= reg.n_methods)
        return;
    size_t s = grpc_status >= 0 && grpc_status < KMS_METRICS_STATUSES ? (size_t)grpc_status
                                                                      : KMS_METRICS_STATUSES;
    atomic_fetch_add_explicit(&reg.calls[method][s], 1, memory_order_relaxed);
    observe(&reg.latency[method], duration_us);
}

void kms_metrics_audit_batch(uint64_t records, uint64_t sync_us, int ok)
{
    if (ok) {
        atomic_fetch_add_explicit(&reg.audit_records, records, memory_order_relaxed);
        observe(&reg.audit_sync, sync_us);
    } else {
        atomic_fetch_add_explicit(&reg.audit_failures, 1, memory_order_relaxed);
    }
}

void kms_metrics_set_server_cert_expiry(int64_t t)
{
    atomic_store_explicit(&reg.server_cert_expiry, t, memory_order_relaxed);
}

void kms_metrics_set_crl_next_update(int64_t t)
{
    atomic_store_explicit(&reg.crl_next_update, t, memory_order_relaxed);
}

static int64_t asn1_unix(const ASN1_TIME *t)
{
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

void kms_metrics_note_server_cert(const char *cert_pem)
{
    int64_t t = 0;
    BIO *b = cert_pem != NULL ? BIO_new_mem_buf(cert_pem, -1) : NULL;
    X509 *x = b != NULL ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    if (x != NULL)
        t = asn1_unix(X509_get0_notAfter(x));
    X509_free(x);
    BIO_free(b);
    kms_metrics_set_server_cert_expiry(t);
}

void kms_metrics_note_crl_files(const char *list)
{
    int64_t earliest = 0;
    char *copy = list != NULL ? strdup(list) : NULL;
    for (char *p = copy, *next; p != NULL && *p != '\0'; p = next) {
        next = strchr(p, ',');
        if (next != NULL)
            *next++ = '\0';
        FILE *f = fopen(p, "r");
        X509_CRL *crl = f != NULL ? PEM_read_X509_CRL(f, NULL, NULL, NULL) : NULL;
        int64_t t = crl != NULL ? asn1_unix(X509_CRL_get0_nextUpdate(crl)) : 0;
        if (t != 0 && (earliest == 0 || t < earliest))
            earliest = t;
        X509_CRL_free(crl);
        if (f != NULL)
            fclose(f);
    }
    free(copy);
    ERR_clear_error();
    kms_metrics_set_crl_next_update(earliest);
}

/* ---- rendering --------------------------------------------------------------- */

struct out {
    char *p;
    size_t len, cap;
    int failed;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct out *o, const char *fmt, ...)
{
    if (o->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = 1;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap * 2 + (size_t)n;
        char *p = realloc(o->p, cap);
        if (p == NULL) {
            o->failed = 1;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
}

static void head(struct out *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* labels: "" or `method="..."` */
static void put_histogram(struct out *o, const char *name, const char *labels,
                          const struct histogram *h)
{
    uint64_t cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (size_t i = 0; i <= NBUCKETS; i++) {
        cum += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        if (i < NBUCKETS)
            put(o, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, (double)bucket_us[i] / 1e6,
                (unsigned long long)cum);
        else
            put(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)cum);
    }
    double sum = (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6;
    if (labels[0]) {
        put(o, "%s_sum{%s} %.6f\n", name, labels, sum);
        put(o, "%s_count{%s} %llu\n", name, labels, (unsigned long long)cum);
    } else {
        put(o, "%s_sum %.6f\n", name, sum);
        put(o, "%s_count %llu\n", name, (unsigned long long)cum);
    }
}

static const char *status_name(size_t s)
{
    static const char *const names[KMS_METRICS_STATUSES] = {"OK",
                                                            "CANCELLED",
                                                            "UNKNOWN",
                                                            "INVALID_ARGUMENT",
                                                            "DEADLINE_EXCEEDED",
                                                            "NOT_FOUND",
                                                            "ALREADY_EXISTS",
                                                            "PERMISSION_DENIED",
                                                            "RESOURCE_EXHAUSTED",
                                                            "FAILED_PRECONDITION",
                                                            "ABORTED",
                                                            "OUT_OF_RANGE",
                                                            "UNIMPLEMENTED",
                                                            "INTERNAL",
                                                            "UNAVAILABLE",
                                                            "DATA_LOSS",
                                                            "UNAUTHENTICATED"};
    return s < KMS_METRICS_STATUSES ? names[s] : "OTHER";
}

int kms_metrics_render(char **out, size_t *len)
{
    struct out o = {.cap = 16384};
    if ((o.p = malloc(o.cap)) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    o.p[0] = '\0';

    head(&o, "kms_build_info", "gauge", "Build of this kmsd (the value is 1).");
    put(&o, "kms_build_info{version=\"%s\"} 1\n", KMS_VERSION_STRING);

    head(&o, "kms_rpc_calls_total", "counter", "Calls answered, by method and gRPC status.");
    for (size_t m = 0; m < reg.n_methods; m++)
        for (size_t s = 0; s <= KMS_METRICS_STATUSES; s++) {
            uint64_t v = atomic_load_explicit(&reg.calls[m][s], memory_order_relaxed);
            /* OK always shows, so a rate over a quiet method is 0, not absent. */
            if (v != 0 || s == 0)
                put(&o, "kms_rpc_calls_total{method=\"%s\",code=\"%s\"} %llu\n", reg.paths[m],
                    status_name(s), (unsigned long long)v);
        }

    head(&o, "kms_rpc_duration_seconds", "histogram",
         "Time from a call's arrival to its answer, audit record included, by method.");
    for (size_t m = 0; m < reg.n_methods; m++) {
        char labels[160];
        snprintf(labels, sizeof(labels), "method=\"%s\"", reg.paths[m]);
        put_histogram(&o, "kms_rpc_duration_seconds", labels, &reg.latency[m]);
    }

    head(&o, "kms_audit_records_total", "counter", "Audit records written and made durable.");
    put(&o, "kms_audit_records_total %llu\n",
        (unsigned long long)atomic_load_explicit(&reg.audit_records, memory_order_relaxed));
    head(&o, "kms_audit_failures_total", "counter",
         "Audit batches lost to a failed write or fdatasync (their calls failed UNAVAILABLE).");
    put(&o, "kms_audit_failures_total %llu\n",
        (unsigned long long)atomic_load_explicit(&reg.audit_failures, memory_order_relaxed));
    head(&o, "kms_audit_fsync_duration_seconds", "histogram",
         "Time to write and fdatasync one batch of audit records.");
    put_histogram(&o, "kms_audit_fsync_duration_seconds", "", &reg.audit_sync);

    int64_t cert = atomic_load_explicit(&reg.server_cert_expiry, memory_order_relaxed);
    int64_t crl = atomic_load_explicit(&reg.crl_next_update, memory_order_relaxed);
    if (cert != 0) {
        head(&o, "kms_tls_server_cert_expiry_timestamp_seconds", "gauge",
             "notAfter of the server certificate in use (unix time).");
        put(&o, "kms_tls_server_cert_expiry_timestamp_seconds %lld\n", (long long)cert);
    }
    if (crl != 0) {
        head(&o, "kms_tls_crl_next_update_timestamp_seconds", "gauge",
             "The earliest nextUpdate of the CRLs in use (unix time).");
        put(&o, "kms_tls_crl_next_update_timestamp_seconds %lld\n", (long long)crl);
    }

    if (o.failed) {
        free(o.p);
        return kms_error_set(KMS_ENOMEM, "metrics: out of memory rendering");
    }
    *out = o.p;
    *len = o.len;
    return KMS_OK;
}
