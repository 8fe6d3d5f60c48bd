/* libkmsclient: options, the mTLS channel, locked memory, context entries. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <grpc/grpc_security.h>
#include <openssl/crypto.h>

#include "client_internal.h"

/* PEM files are small; anything larger is not a certificate or key. */
#define PEM_MAX (256 * 1024)

static int read_pem(const char *path, const char *what, char **out, kms_client_error *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return kms_client_fail(err, KMS_CLIENT_EFILE, "%s %s: %s", what, path, strerror(errno));
    char *buf = calloc(1, PEM_MAX + 1);
    size_t n = buf != NULL ? fread(buf, 1, PEM_MAX + 1, f) : 0;
    int bad = ferror(f);
    fclose(f);
    if (buf == NULL)
        return kms_client_fail(err, KMS_CLIENT_ENOMEM, "out of memory");
    if (bad || n == 0 || n > PEM_MAX || strstr(buf, "-----BEGIN ") == NULL) {
        OPENSSL_cleanse(buf, PEM_MAX + 1);
        free(buf);
        return kms_client_fail(err, KMS_CLIENT_EFILE, "%s %s: not a PEM file", what, path);
    }
    *out = buf;
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

static void free_pem(char *p)
{
    if (p != NULL) {
        OPENSSL_cleanse(p, PEM_MAX + 1);
        free(p);
    }
}

KMS_CLIENT_API int kms_client_open(const kms_client_options *o, kms_client **out,
                                   kms_client_error *err)
{
    char *ca = NULL, *cert = NULL, *key = NULL;
    int r;

    if (o == NULL || out == NULL || o->target == NULL || o->target[0] == '\0')
        return kms_client_fail(err, KMS_CLIENT_EARG, "no server address (target)");
    if (o->ca_file == NULL || o->cert_file == NULL || o->key_file == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG,
                               "mutual TLS needs a CA file, a client certificate and its key");
    if (o->timeout_ms < 0)
        return kms_client_fail(err, KMS_CLIENT_EARG, "negative timeout");
    if ((r = read_pem(o->ca_file, "CA file", &ca, err)) != 0 ||
        (r = read_pem(o->cert_file, "certificate", &cert, err)) != 0 ||
        (r = read_pem(o->key_file, "private key", &key, err)) != 0)
        goto out;

    kms_client *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        r = kms_client_fail(err, KMS_CLIENT_ENOMEM, "out of memory");
        goto out;
    }
    c->timeout_ms = o->timeout_ms ? o->timeout_ms : 10000;
    grpc_use();
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
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
    free_pem(ca);
    free_pem(cert);
    free_pem(key);
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

/* One page header keeps the mapping length so free can wipe all of it. */
#define SECURE_HDR 64

uint8_t *kms_client_secure_alloc(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (n > (1u << 30))
        return NULL;
    size_t len = (n + SECURE_HDR + page - 1) / page * page;
    uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    /* The raw syscall: sanitizers turn mlock() into a no-op. */
    if (syscall(SYS_mlock, p, len) != 0) {
        munmap(p, len);
        return NULL;
    }
    (void)madvise(p, len, MADV_DONTDUMP);
    memcpy(p, &len, sizeof(len));
    return p + SECURE_HDR;
}

void kms_client_secure_free(uint8_t *data)
{
    if (data == NULL)
        return;
    uint8_t *p = data - SECURE_HDR;
    size_t len;
    memcpy(&len, p, sizeof(len));
    OPENSSL_cleanse(p, len);
    (void)syscall(SYS_munlock, p, len);
    munmap(p, len);
}

/* The layout every protobuf-c map<string,string> entry struct has. */
typedef struct {
    ProtobufCMessage base;
    char *key;
    char *value;
} map_entry;

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
        protobuf_c_message_init(desc, &entries[i]);
        entries[i].key = (char *)ctx[i].key;
        entries[i].value = (char *)ctx[i].value;
        ptrs[i] = &entries[i];
    }
    *out = ptrs;
    return KMS_CLIENT_OK;
}
