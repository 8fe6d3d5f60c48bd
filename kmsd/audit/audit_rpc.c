/* kmsd's audit sink: RPC outcomes into audit records (audit_rpc.h). */
#include "kmsd/audit/audit_rpc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kmsd/audit/audit_context.h"
#include "base/file.h"
#include "base/secret.h"

#define CONTEXT_KEY_LEN KMS_AUDIT_CONTEXT_KEY_LEN

struct kms_audit_sink {
    kms_audit *log;
    kms_secret *context_key;
};

/* Makes a fresh key file: O_EXCL, so two processes cannot both make one. */
static int make_key(const char *path)
{
    kms_secret *k = NULL;
    int r = kms_secret_random(CONTEXT_KEY_LEN, &k);
    if (r != 0)
        return r;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        kms_secret_free(k);
        return errno == EEXIST ? KMS_OK
                               : kms_error_set(KMS_EUNAVAIL, "audit: cannot create %s: %s", path,
                                               strerror(errno));
    }
    ssize_t n = write(fd, k->data, k->len);
    kms_secret_free(k);
    if (n != CONTEXT_KEY_LEN || fsync(fd) != 0) {
        close(fd);
        unlink(path);
        return kms_error_set(KMS_EUNAVAIL, "audit: cannot write %s", path);
    }
    close(fd);
    return KMS_OK;
}

int kms_audit_sink_open(const kms_audit_config *cfg, const char *context_key_path,
                        kms_audit_sink **out)
{
    int r;
    kms_audit_sink *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    if (access(context_key_path, F_OK) != 0 && (r = make_key(context_key_path)) != 0)
        goto fail;
    if ((r = kms_file_read_secret(context_key_path, CONTEXT_KEY_LEN + 1, &s->context_key)) != 0)
        goto fail;
    if (s->context_key->len != CONTEXT_KEY_LEN) {
        r = kms_error_set(KMS_EINVAL, "audit: %s must hold %d bytes", context_key_path,
                          CONTEXT_KEY_LEN);
        goto fail;
    }
    if ((r = kms_audit_open(cfg, &s->log)) != 0)
        goto fail;
    *out = s;
    return KMS_OK;
fail:
    kms_audit_sink_close(s);
    return r;
}

int kms_audit_sink_event(kms_audit_sink *s, const char *type, const char *detail)
{
    kms_audit_rec rec = {.type = type,
                         .identity = "",
                         .peer = "",
                         .method = "",
                         .key = "",
                         .action = "",
                         .context_hmac = "",
                         .error = "",
                         .detail = detail ? detail : ""};
    return kms_audit_append(s->log, &rec);
}

int kms_audit_sink_rpc(void *ctx, const kms_rpc_audit_record *in)
{
    kms_audit_sink *s = ctx;
    char macs[KMS_RPC_MAX_CONTEXTS * (2 * KMS_RPC_CONTEXT_MAC_LEN + 1)] = "";
    for (size_t i = 0; i < in->n_context_macs && i < KMS_RPC_MAX_CONTEXTS; i++) {
        char *at = macs + i * (2 * KMS_RPC_CONTEXT_MAC_LEN + 1);
        if (i > 0)
            at[-1] = ',';
        kms_audit_hex(in->context_mac[i], KMS_RPC_CONTEXT_MAC_LEN, at);
    }
    kms_audit_rec rec = {.type = "rpc",
                         .identity = in->identity,
                         .peer = in->peer,
                         .method = in->method,
                         .key = in->key_name,
                         .version = in->key_version,
                         .action = "",
                         .context_hmac = macs,
                         .status = in->status < 0 ? 0u : (uint32_t)in->status,
                         .error = in->error == 0 ? "" : kms_error_name(in->error),
                         .detail = "",
                         .duration_us = in->duration_us};
    return kms_audit_append(s->log, &rec);
}

int kms_audit_sink_quorum(void *ctx, const kms_quorum_event *ev)
{
    kms_audit_sink *s = ctx;
    char id[2 * KMS_ACTION_ID_LEN + 1] = "";
    if (ev->action_id != NULL)
        kms_audit_hex(ev->action_id, KMS_ACTION_ID_LEN, id);
    kms_audit_rec rec = {.type = ev->type,
                         .identity = ev->identity,
                         .peer = "",
                         .method = "",
                         .key = ev->key_name,
                         .version = ev->version,
                         .action = id,
                         .context_hmac = "",
                         .status = 0,
                         .error = ev->error == 0 ? "" : kms_error_name(ev->error),
                         .detail = ev->detail};
    return kms_audit_append(s->log, &rec);
}

int kms_audit_sink_context_mac(void *ctx, const uint8_t *enc, size_t len,
                               uint8_t mac[KMS_RPC_CONTEXT_MAC_LEN])
{
    kms_audit_sink *s = ctx;
    return kms_audit_context_mac_bytes(s->context_key->data, s->context_key->len, enc, len, mac);
}

int kms_audit_sink_ready(void *ctx)
{
    return kms_audit_ready(((kms_audit_sink *)ctx)->log);
}

kms_audit *kms_audit_sink_log(kms_audit_sink *s)
{
    return s->log;
}

void kms_audit_sink_close(kms_audit_sink *s)
{
    if (s == NULL)
        return;
    kms_audit_close(s->log);
    kms_secret_free(s->context_key);
    free(s);
}
