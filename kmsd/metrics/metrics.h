#ifndef KMS_METRICS_H
#define KMS_METRICS_H

/* Prometheus metrics (docs/operations.md): a fixed registry of atomic
 * counters and histograms. Recording is a few relaxed atomic adds: no lock,
 * no allocation, safe from any thread. The names of the methods are set once,
 * before serving; rendering reads the counters without stopping writers. */

#include <stddef.h>
#include <stdint.h>

#include "kms/error.h"

#define KMS_METRICS_MAX_METHODS 64
#define KMS_METRICS_STATUSES 17 /* gRPC status codes 0..16 */

/* Turns call metrics on: n methods, each then named (path kept by the caller
 * for the process's life). Off (the default), kms_metrics_rpc is one branch. */
int kms_metrics_init(size_t n) KMS_MUST_CHECK;
void kms_metrics_name_method(size_t i, const char *path);

/* One call finished with a gRPC status after duration_us. */
void kms_metrics_rpc(size_t method, int grpc_status, uint64_t duration_us);

/* The audit writer: a batch of records written and fdatasync'ed (ok), or lost. */
void kms_metrics_audit_batch(uint64_t records, uint64_t sync_us, int ok);

/* Certificate times, in unix seconds (0: not known). */
void kms_metrics_set_server_cert_expiry(int64_t t);
void kms_metrics_set_crl_next_update(int64_t t);

/* The same, read from a PEM certificate / a tls.crl list ("FILE[,FILE...]",
 * the earliest nextUpdate); a file that does not parse leaves the value at 0. */
void kms_metrics_note_server_cert(const char *cert_pem);
void kms_metrics_note_crl_files(const char *list);

/* The whole exposition, NUL-terminated, in malloc'd memory the caller frees. */
int kms_metrics_render(char **out, size_t *len) KMS_MUST_CHECK;

/* ---- the HTTP endpoint (metrics_http.c) ---- */

typedef struct kms_metrics_http kms_metrics_http;

/* Serves GET /metrics on listen ("HOST:PORT", numeric host; port 0 picks one).
 * A host other than loopback is refused unless allow_remote. */
int kms_metrics_http_start(const char *listen, int allow_remote, kms_metrics_http **out,
                           int *port) KMS_MUST_CHECK;
void kms_metrics_http_stop(kms_metrics_http *h);

#endif
