/* Handler of kms.v1.Audit: ReadAuditLog (contract in handlers_audit.h).
 * The records are read from the files (audit_reader.h) and each is copied
 * into the reply, built in the call's arena: the fields of its line, its
 * line itself and its chain hash. */
#include "kmsd/audit/handlers_audit.h"

#include <string.h>

#include "base/log.h"
#include "kmsd/audit/audit_log.h"
#include "kmsd/audit/audit_reader.h"
#include "kmsd/audit/audit_rpc.h"
#include "kms/v1/kms.pb-c.h"

/* A reply stays well under kmsd's and clients' default message limits
 * (4 MiB): a client asks again from the last seq + 1. */
#define READ_REPLY_MAX (1u << 20)
#define FIELD_OVERHEAD 256 /* tags and numbers of one record, generously */

struct reply {
    kms_rpc_call *c;
    Kms__V1__AuditRecord **records;
    size_t n, bytes;
};

static char *arena_str(kms_rpc_call *c, const char *s)
{
    return kms_rpc_strdup(c, s);
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

/* Lowercase hex into bytes (out holds strlen(hex) / 2); 0 if it is not
 * whole bytes of lowercase hex. */
static size_t unhex(const char *hex, size_t n, uint8_t *out)
{
    if (n % 2 != 0)
        return 0;
    for (size_t i = 0; i < n; i += 2) {
        int hi = hexval(hex[i]), lo = hexval(hex[i + 1]);
        if (hi < 0 || lo < 0)
            return 0;
        out[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    return n / 2;
}

/* "HEX64[,HEX64...]": the record's context HMACs, concatenated. A field
 * that is not that shape gives no bytes (the line still carries it). */
static void context_bytes(kms_rpc_call *c, const char *s, ProtobufCBinaryData *out)
{
    size_t len = strlen(s), n = 0;
    uint8_t *buf;
    if (len == 0 || (buf = kms_rpc_alloc(c, len / 2 + 1)) == NULL)
        return;
    for (const char *p = s; *p != '\0';) {
        const char *comma = strchr(p, ',');
        size_t part = comma != NULL ? (size_t)(comma - p) : strlen(p);
        size_t got = part == 64 ? unhex(p, part, buf + n) : 0;
        if (got == 0)
            return;
        n += got;
        p += part + (comma != NULL);
    }
    out->data = buf;
    out->len = n;
}

static uint8_t *arena_copy(kms_rpc_call *c, const void *src, size_t n)
{
    uint8_t *p = kms_rpc_alloc(c, n ? n : 1);
    if (p != NULL && n > 0)
        memcpy(p, src, n);
    return p;
}

static int take(void *ctx, const kms_audit_read_rec *in)
{
    struct reply *rp = ctx;
    const kms_audit_rec *rec = &in->parsed->rec;
    size_t size = 2 * in->len + FIELD_OVERHEAD;
    if (rp->n > 0 && rp->bytes + size > READ_REPLY_MAX)
        return KMS_AUDIT_READ_STOP;
    Kms__V1__AuditRecord *w = kms_rpc_alloc(rp->c, sizeof(*w));
    if (w == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    kms__v1__audit_record__init(w);
    w->seq = rec->seq;
    w->time = rec->time_us;
    w->key_version = rec->version;
    w->status = (int32_t)rec->status;
    w->duration_us = rec->duration_us;
    if ((w->identity = arena_str(rp->c, rec->identity)) == NULL ||
        (w->method = arena_str(rp->c, rec->method)) == NULL ||
        (w->key_name = arena_str(rp->c, rec->key)) == NULL ||
        (w->instance = arena_str(rp->c, rec->instance)) == NULL ||
        (w->type = arena_str(rp->c, rec->type)) == NULL ||
        (w->peer = arena_str(rp->c, rec->peer)) == NULL ||
        (w->error = arena_str(rp->c, rec->error)) == NULL ||
        (w->detail = arena_str(rp->c, rec->detail)) == NULL ||
        (w->prev_hash.data = arena_copy(rp->c, rec->prev, KMS_AUDIT_HASH_LEN)) == NULL ||
        (w->hash.data = arena_copy(rp->c, in->hash, KMS_AUDIT_HASH_LEN)) == NULL ||
        (w->line.data = arena_copy(rp->c, in->line, in->len - 1)) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    w->prev_hash.len = KMS_AUDIT_HASH_LEN;
    w->hash.len = KMS_AUDIT_HASH_LEN;
    w->line.len = in->len - 1; /* without the LF */
    size_t alen = strlen(rec->action);
    if (alen == 2 * KMS_ACTION_ID_LEN) {
        uint8_t *id = kms_rpc_alloc(rp->c, KMS_ACTION_ID_LEN);
        if (id == NULL)
            return kms_error_set(KMS_ENOMEM, "out of memory");
        if (unhex(rec->action, alen, id) == KMS_ACTION_ID_LEN) {
            w->action_id.data = id;
            w->action_id.len = KMS_ACTION_ID_LEN;
        }
    }
    context_bytes(rp->c, rec->context_hmac, &w->context_hash);
    rp->records[rp->n++] = w;
    rp->bytes += size;
    return KMS_OK;
}

int kms_handlers_read_audit_log(kms_rpc_call *c, const ProtobufCMessage *req,
                                ProtobufCMessage **resp)
{
    const Kms__V1__ReadAuditLogRequest *in = (const Kms__V1__ReadAuditLogRequest *)req;
    const kms_rpc_env *env = kms_rpc_env_of(c);
    size_t limit = in->limit == 0 ? KMS_AUDIT_READ_DEFAULT : in->limit;
    if (in->limit > KMS_AUDIT_READ_MAX)
        return kms_error_set_public(KMS_EINVAL, "limit %u is over the most one call reads (%d)",
                                    in->limit, KMS_AUDIT_READ_MAX);
    if (env->audit == NULL || env->audit_ctx == NULL)
        return kms_error_set_public(KMS_EPRECOND,
                                    "this kmsd keeps no audit log (audit.dir is not set)");
    kms_audit *log = kms_audit_sink_log(env->audit_ctx);
    Kms__V1__ReadAuditLogResponse *out = kms_rpc_alloc(c, sizeof(*out));
    struct reply rp = {.c = c, .records = kms_rpc_alloc(c, limit * sizeof(*rp.records))};
    if (out == NULL || rp.records == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    kms__v1__read_audit_log_response__init(out);
    uint64_t last = kms_audit_durable_seq(log);
    int r = kms_audit_read(kms_audit_dir(log), in->from_seq, last, limit, take, &rp, NULL);
    if (r == KMS_ESTORE) {
        /* The detail (file and line) is for kmsd's log, not the caller. */
        kms_log_error("ReadAuditLog: %s", kms_error_detail());
        return kms_error_set_public(KMS_EINTERNAL, "the audit log cannot be read in order: run "
                                                   "`kmsctl audit verify` on its files");
    }
    KMS_GUARD(r);
    out->last_seq = last;
    out->records = rp.records;
    out->n_records = rp.n;
    *resp = &out->base;
    return KMS_OK;
}
