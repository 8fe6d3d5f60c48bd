/* libkmsclient: the Audit service (ReadAuditLog), for auditors. */
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "kms/v1/kms.pb-c.h"

static void record_free(kms_client_audit_record *r)
{
    free(r->instance);
    free(r->type);
    free(r->identity);
    free(r->peer);
    free(r->method);
    free(r->key_name);
    free(r->error);
    free(r->detail);
    free(r->line);
    memset(r, 0, sizeof(*r));
}

KMS_CLIENT_API void kms_client_audit_records_free(kms_client_audit_record *r, size_t n)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        record_free(&r[i]);
    free(r);
}

static char *dup_str(const char *s)
{
    return strdup(s != NULL ? s : "");
}

/* Copies one wire record; KMS_CLIENT_EREPLY for a record of the wrong
 * shape (hash sizes, a line with a NUL), KMS_CLIENT_ENOMEM. */
static int record_copy(const Kms__V1__AuditRecord *w, kms_client_audit_record *out)
{
    if (w->prev_hash.len != 32 || w->hash.len != 32 || w->line.len == 0 ||
        memchr(w->line.data, '\0', w->line.len) != NULL)
        return KMS_CLIENT_EREPLY;
    out->seq = w->seq;
    out->time_us = w->time;
    out->key_version = w->key_version;
    out->status = w->status;
    out->duration_us = w->duration_us;
    memcpy(out->prev_hash, w->prev_hash.data, 32);
    memcpy(out->hash, w->hash.data, 32);
    if ((out->line = malloc(w->line.len + 1)) == NULL)
        return KMS_CLIENT_ENOMEM;
    memcpy(out->line, w->line.data, w->line.len);
    out->line[w->line.len] = '\0';
    if ((out->instance = dup_str(w->instance)) == NULL || (out->type = dup_str(w->type)) == NULL ||
        (out->identity = dup_str(w->identity)) == NULL || (out->peer = dup_str(w->peer)) == NULL ||
        (out->method = dup_str(w->method)) == NULL ||
        (out->key_name = dup_str(w->key_name)) == NULL ||
        (out->error = dup_str(w->error)) == NULL || (out->detail = dup_str(w->detail)) == NULL)
        return KMS_CLIENT_ENOMEM;
    return KMS_CLIENT_OK;
}

KMS_CLIENT_API int kms_client_read_audit_log(kms_client *c, uint64_t from_seq, uint32_t limit,
                                             kms_client_audit_record **out, size_t *n,
                                             uint64_t *last_seq, kms_client_error *err)
{
    Kms__V1__ReadAuditLogRequest req = KMS__V1__READ_AUDIT_LOG_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    kms_client_audit_record *v = NULL;
    size_t got = 0;
    if (c == NULL || out == NULL || n == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "NULL argument");
    req.from_seq = from_seq;
    req.limit = limit;
    int r = kms_client_call(c, "/kms.v1.Audit/ReadAuditLog", &req.base,
                            &kms__v1__read_audit_log_response__descriptor, NULL, &m, err);
    if (r != 0)
        return r;
    Kms__V1__ReadAuditLogResponse *resp = (Kms__V1__ReadAuditLogResponse *)m;
    uint64_t last = resp->last_seq;
    if (resp->n_records > 0 && (v = calloc(resp->n_records, sizeof(*v))) == NULL)
        r = KMS_CLIENT_ENOMEM;
    for (size_t i = 0; r == 0 && i < resp->n_records; i++) {
        r = record_copy(resp->records[i], &v[i]);
        got = i + 1; /* a partly copied record is freed too */
        if (r == 0 && i > 0 && v[i].seq <= v[i - 1].seq)
            r = KMS_CLIENT_EREPLY; /* records come in order, each once */
    }
    protobuf_c_message_free_unpacked(m, NULL);
    if (r != 0) {
        kms_client_audit_records_free(v, got);
        return kms_client_fail(err, r, "reply could not be decoded");
    }
    *out = v;
    *n = got;
    if (last_seq != NULL)
        *last_seq = last;
    return KMS_CLIENT_OK;
}
