/* libkmsclient: options, the mTLS channel, locked memory (kms_secret),
 * context entries. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <grpc/grpc_security.h>
#include <openssl/crypto.h>

#include "base/file.h"
#include "base/secret.h"
#include "client_internal.h"

/* PEM files are small; anything larger is not a certificate or key. */
#define PEM_MAX (256 * 1024)

/* Reads a PEM file: the private key as a secret file (kms_secret: locked,
 * wiped on free; regular, 0600 or stricter, not a symlink, owned by this
 * user or root), certificates as plain memory. */
static int read_pem(const char *path, const char *what, int secret, kms_secret **sout, char **pout,
                    kms_client_error *err)
{
    kms_secret *s = NULL;
    char *buf = NULL;
    size_t len = 0;
    int r = secret ? kms_file_read_secret(path, PEM_MAX, &s)
                   : kms_file_read(path, PEM_MAX, 0, &buf, &len);
    if (r == KMS_ENOMEM)
        return kms_client_fail(err, KMS_CLIENT_ENOMEM, "%s: %s", what, kms_error_detail());
    if (r != 0)
        return kms_client_fail(err, KMS_CLIENT_EFILE, "%s: %s", what, kms_error_detail());
    const char *text = secret ? (const char *)s->data : buf;
    if (strstr(text, "-----BEGIN ") == NULL) {
        kms_secret_free(s);
        free(buf);
        return kms_client_fail(err, KMS_CLIENT_EFILE, "%s %s: not a PEM file", what, path);
    }
    if (secret)
        *sout = s;
    else
        *pout = buf;
    return KMS_CLIENT_OK;
}

/* gRPC is started by the first open client and ended by the last close.
 * grpc_shutdown only drops our reference: connections still closing (a TLS
 * handshake cut short, a second connection attempt) hold their own, and the
 * last of them cleans up later on a detached gRPC thread. A program that
 * exits right after kms_client_close would race that clean-up (ASan reports
 * its OpenSSL state as leaked). So when the library itself started gRPC, the
 * last close waits (at most 5 s) until grpc_is_initialized() answers 0, which
 * it does only once that clean-up is done. When the application uses gRPC
 * itself, gRPC stays up and close does not wait. */
static pthread_mutex_t grpc_users_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned grpc_users;
static bool grpc_started_here;

static void grpc_use(void)
{
    pthread_mutex_lock(&grpc_users_lock);
    if (grpc_users++ == 0)
        grpc_started_here = !grpc_is_initialized();
    grpc_init();
    pthread_mutex_unlock(&grpc_users_lock);
}

static void grpc_unuse(void)
{
    pthread_mutex_lock(&grpc_users_lock);
    grpc_shutdown();
    if (--grpc_users == 0 && grpc_started_here)
        for (int i = 0; i < 500 && grpc_is_initialized(); i++)
            usleep(10 * 1000);
    pthread_mutex_unlock(&grpc_users_lock);
}

KMS_CLIENT_API int kms_client_open(const kms_client_options *o, kms_client **out,
                                   kms_client_error *err)
{
    char *ca = NULL, *cert = NULL;
    kms_secret *key = NULL;
    int r;

    if (o == NULL || out == NULL || o->target == NULL || o->target[0] == '\0')
        return kms_client_fail(err, KMS_CLIENT_EARG, "no server address (target)");
    if (o->ca_file == NULL || o->cert_file == NULL || o->key_file == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG,
                               "mutual TLS needs a CA file, a client certificate and its key");
    if (o->timeout_ms < 0)
        return kms_client_fail(err, KMS_CLIENT_EARG, "negative timeout");
    if ((r = read_pem(o->ca_file, "CA file", 0, NULL, &ca, err)) != 0 ||
        (r = read_pem(o->cert_file, "certificate", 0, NULL, &cert, err)) != 0 ||
        (r = read_pem(o->key_file, "private key", 1, &key, NULL, err)) != 0)
        goto out;

    kms_client *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        r = kms_client_fail(err, KMS_CLIENT_ENOMEM, "out of memory");
        goto out;
    }
    c->timeout_ms = o->timeout_ms ? o->timeout_ms : 10000;
    grpc_use();
    grpc_ssl_pem_key_cert_pair pair = {.private_key = (const char *)key->data, .cert_chain = cert};
    grpc_channel_credentials *creds = grpc_ssl_credentials_create(ca, &pair, NULL, NULL);
    grpc_arg args[3];
    size_t nargs = 0;
    memset(args, 0, sizeof(args));
    /* Each client has its own connection: two clients with different
     * certificates never share one (the identity is per connection). */
    args[nargs].type = GRPC_ARG_INTEGER;
    args[nargs].key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
    args[nargs++].value.integer = 1;
    args[nargs].type = GRPC_ARG_INTEGER;
    args[nargs].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[nargs++].value.integer = 4 << 20;
    if (o->server_name != NULL && o->server_name[0] != '\0') {
        args[nargs].type = GRPC_ARG_STRING;
        args[nargs].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
        args[nargs++].value.string = (char *)o->server_name;
    }
    grpc_channel_args chargs = {.num_args = nargs, .args = args};
    c->channel = creds != NULL ? grpc_channel_create(o->target, creds, &chargs) : NULL;
    if (creds != NULL)
        grpc_channel_credentials_release(creds);
    if (c->channel == NULL) {
        free(c);
        grpc_unuse();
        r = kms_client_fail(err, KMS_CLIENT_EARG, "cannot make a TLS channel to %s", o->target);
        goto out;
    }
    *out = c;
    r = KMS_CLIENT_OK;
out:
    free(ca);
    free(cert);
    kms_secret_free(key);
    return r;
}

KMS_CLIENT_API void kms_client_close(kms_client *c)
{
    if (c == NULL)
        return;
    grpc_channel_destroy(c->channel);
    free(c);
    grpc_unuse();
}

/* Plaintext handed to the application lives in a kms_secret; the header
 * before the bytes keeps the kms_secret so free can find it from the data
 * pointer the public API hands out. */
#define SECURE_HDR 16
_Static_assert(sizeof(kms_secret *) <= SECURE_HDR, "secure header holds a pointer");

uint8_t *kms_client_secure_alloc(size_t n)
{
    kms_secret *s = NULL;
    if (n > KMS_SECRET_MAX - SECURE_HDR || kms_secret_new(n + SECURE_HDR, &s) != KMS_OK)
        return NULL;
    memcpy(s->data, &s, sizeof(s));
    return s->data + SECURE_HDR;
}

void kms_client_secure_free(uint8_t *data)
{
    if (data == NULL)
        return;
    kms_secret *s;
    memcpy(&s, data - SECURE_HDR, sizeof(s));
    kms_secret_free(s); /* wipes all of it, header included */
}

/* kmsd's bounds for one context entry (docs/api.md). */
#define CONTEXT_KEY_MAX 256
#define CONTEXT_VALUE_MAX 1024

/* The layout every protobuf-c map<string,string> entry struct has. */
typedef struct {
    ProtobufCMessage base;
    char *key;
    char *value;
} map_entry;

/* One entry as kmsd reads it: a key of 1..256 bytes and a value of at most
 * 1024. A C string ends at its first NUL, so neither can carry one: a
 * caller holding counted bytes (a language binding) must refuse a NUL
 * itself, or kmsd refuses the request (a NUL on the wire). */
static int entry_ok(const kms_client_context_entry *e)
{
    size_t k = strnlen(e->key, CONTEXT_KEY_MAX + 1), v = strnlen(e->value, CONTEXT_VALUE_MAX + 1);
    return k >= 1 && k <= CONTEXT_KEY_MAX && v <= CONTEXT_VALUE_MAX;
}

int kms_client_context_entries(const ProtobufCMessageDescriptor *desc,
                               const kms_client_context_entry *ctx, size_t n, void ***out,
                               kms_client_error *err)
{
    *out = NULL;
    if (n == 0)
        return KMS_CLIENT_OK;
    if (ctx == NULL || n > 64)
        return kms_client_fail(err, KMS_CLIENT_EARG, "bad encryption context (at most 64 pairs)");
    if (desc->sizeof_message != sizeof(map_entry))
        return kms_client_fail(err, KMS_CLIENT_EARG, "not a map entry type");
    void **ptrs = calloc(1, n * (sizeof(void *) + sizeof(map_entry)));
    if (ptrs == NULL)
        return kms_client_fail(err, KMS_CLIENT_ENOMEM, "out of memory");
    map_entry *entries = (map_entry *)(ptrs + n);
    for (size_t i = 0; i < n; i++) {
        if (ctx[i].key == NULL || ctx[i].value == NULL) {
            free(ptrs);
            return kms_client_fail(err, KMS_CLIENT_EARG, "encryption context entry %zu is NULL", i);
        }
        if (!entry_ok(&ctx[i])) {
            free(ptrs);
            return kms_client_fail(err, KMS_CLIENT_EARG,
                                   "encryption context entry %zu: the key must be 1..%d bytes and "
                                   "the value at most %d",
                                   i, CONTEXT_KEY_MAX, CONTEXT_VALUE_MAX);
        }
        protobuf_c_message_init(desc, &entries[i]);
        entries[i].key = (char *)ctx[i].key;
        entries[i].value = (char *)ctx[i].value;
        ptrs[i] = &entries[i];
    }
    *out = ptrs;
    return KMS_CLIENT_OK;
}
