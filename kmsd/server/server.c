/* The gRPC server loop (contract: server.h).
 *
 * One completion queue serves every call; each worker thread blocks in
 * grpc_completion_queue_next and handles whatever event comes: a new call
 * (repost a request for that method, then dispatch and start the reply
 * batch), a finished reply batch (release the call), or the server's
 * shutdown tag. Every tag starts with an enum tag_kind, so the loop can
 * tell them apart.
 *
 * Requests are posted only while `accepting` is set, and only under `mu`;
 * shutdown clears it under the same lock before asking the core to shut
 * down, so no request is posted on a server being shut down.
 *
 * The queue itself may be shut down only when nothing can be posted on it
 * any more: the core's shutdown tag alone does not promise that (a worker
 * may still be handling a call it took just before, and its reply batch
 * would then trip an assertion in the core). So every tag handed to the
 * core is counted in `outstanding` when posted, and uncounted only after
 * the worker that dequeued it has finished with it (after any tag that
 * handling posted in turn). Shutdown waits for the shutdown tag and
 * outstanding == 0: then no tag is pending and no worker is busy. */
#include "kmsd/server/server.h"

#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/string_util.h>
#include <grpc/support/time.h>

#include "base/log.h"

/* What kmsd hands to gRPC comes back on another thread: a call's context
 * (the tag) to the worker that takes its event, a reply body to whichever
 * gRPC thread frees it. gRPC orders the two sides with its own locks,
 * which ThreadSanitizer cannot see in the uninstrumented library. In a
 * TSan build each hand-off is declared to it (release before gRPC takes
 * the pointer, acquire when it comes back); elsewhere these are nothing. */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KMS_TSAN_HANDOFF 1
#endif
#endif
#ifdef KMS_TSAN_HANDOFF
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define HANDOFF_RELEASE(p) __tsan_release(p)
#define HANDOFF_ACQUIRE(p) __tsan_acquire(p)
#else
#define HANDOFF_RELEASE(p) ((void)(p))
#define HANDOFF_ACQUIRE(p) ((void)(p))
#endif

#define UNREGISTERED ((size_t)-1)
#define UNREGISTERED_SLOTS 2
#define MIN_SLOTS_PER_METHOD 2

enum tag_kind { TAG_NEW_CALL = 1, TAG_REPLY, TAG_SHUTDOWN };

struct call_ctx {
    enum tag_kind kind; /* first: the tag points here */
    kms_server *srv;
    size_t method; /* UNREGISTERED for a method not in the table */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details; /* unregistered calls only */
    grpc_byte_buffer *payload;
    grpc_byte_buffer *reply;
    grpc_slice status_details;
    int cancelled;
};

struct shutdown_tag {
    enum tag_kind kind;
};

struct kms_server {
    kms_server_config cfg;
    grpc_server *server;
    grpc_completion_queue *cq;
    void **handles;
    pthread_t *threads;
    size_t n_threads;
    size_t slots;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    int accepting;      /* requests may be posted (under mu) */
    int shutdown_seen;  /* the shutdown tag came back (under mu) */
    size_t outstanding; /* tags posted and not yet finished with (under mu) */
    int started;        /* grpc_server_start was called */
    int stopped;        /* kms_server_shutdown finished */
    struct shutdown_tag shutdown_tag;
    /* Mutual TLS: the key, certificate chain and client CA that gRPC's file
     * watcher reads (as /proc/self/fd/N) every second; a reload puts new
     * memory files at these descriptors (dup2). -1 when insecure. */
    int tls_fd[3];
    char tls_path[3][32];
};

#define TLS_KEY 0
#define TLS_CERT 1
#define TLS_CA 2
/* How often gRPC's file watcher looks at the TLS files (its minimum). */
#define TLS_REFRESH_SEC 1

/* ---- call contexts ---------------------------------------------------------------- */

static void ctx_free(struct call_ctx *c)
{
    if (c == NULL)
        return;
    if (c->payload)
        grpc_byte_buffer_destroy(c->payload);
    if (c->reply)
        grpc_byte_buffer_destroy(c->reply);
    if (c->call)
        grpc_call_unref(c->call);
    grpc_metadata_array_destroy(&c->md);
    if (c->method == UNREGISTERED)
        grpc_call_details_destroy(&c->details);
    grpc_slice_unref(c->status_details);
    free(c);
}

/* Asks the core for the next call of `method`, unless shutting down. */
static void post_request(kms_server *s, size_t method)
{
    struct call_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        kms_log_error("server: out of memory posting a request; that method has one slot less");
        return;
    }
    c->kind = TAG_NEW_CALL;
    c->srv = s;
    c->method = method;
    c->status_details = grpc_empty_slice();
    grpc_metadata_array_init(&c->md);
    if (method == UNREGISTERED)
        grpc_call_details_init(&c->details);

    grpc_call_error e = GRPC_CALL_OK;
    int posted = 0;
    pthread_mutex_lock(&s->mu);
    if (s->accepting) {
        HANDOFF_RELEASE(c);
        if (method == UNREGISTERED)
            e = grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq, s->cq, c);
        else
            e = grpc_server_request_registered_call(s->server, s->handles[method], &c->call,
                                                    &c->deadline, &c->md, &c->payload, s->cq, s->cq,
                                                    c);
        posted = e == GRPC_CALL_OK;
        if (posted)
            s->outstanding++;
    }
    pthread_mutex_unlock(&s->mu);
    if (!posted) {
        if (e != GRPC_CALL_OK)
            kms_log_error("server: cannot request a call (grpc_call_error %d)", (int)e);
        ctx_free(c);
    }
}

static void wipe_free(void *p, size_t len)
{
    HANDOFF_ACQUIRE(p);
    OPENSSL_cleanse(p, len);
    free(p);
}

static int deadline_passed(gpr_timespec deadline)
{
    gpr_timespec now = gpr_now(GPR_CLOCK_MONOTONIC);
    return gpr_time_cmp(gpr_convert_clock_type(deadline, GPR_CLOCK_MONOTONIC), now) < 0;
}

/* Wipes the payload's own slices in place: they are ours to read and no
 * one reads them after us. */
static void wipe_payload(grpc_byte_buffer *bb)
{
    if (bb == NULL || bb->type != GRPC_BB_RAW)
        return;
    grpc_slice_buffer *sb = &bb->data.raw.slice_buffer;
    for (size_t i = 0; i < sb->count; i++)
        OPENSSL_cleanse(GRPC_SLICE_START_PTR(sb->slices[i]), GRPC_SLICE_LENGTH(sb->slices[i]));
}

/* Reads the request, dispatches it and fills *reply. */
static void run_call(kms_server *s, struct call_ctx *c, kms_server_reply *reply)
{
    if (c->method == UNREGISTERED) {
        reply->status = GRPC_STATUS_UNIMPLEMENTED;
        reply->message = "unknown method";
        return;
    }
    if (deadline_passed(c->deadline)) {
        reply->status = GRPC_STATUS_DEADLINE_EXCEEDED;
        reply->message = "deadline exceeded before the call was handled";
        return;
    }

    kms_server_call in = {.call = c->call, .method = c->method, .deadline = c->deadline};
    grpc_slice all = grpc_empty_slice();
    int have_all = 0;
    if (c->payload != NULL) {
        grpc_byte_buffer_reader rd;
        if (!grpc_byte_buffer_reader_init(&rd, c->payload)) {
            reply->status = GRPC_STATUS_INTERNAL;
            reply->message = "cannot read the request";
            return;
        }
        all = grpc_byte_buffer_reader_readall(&rd);
        grpc_byte_buffer_reader_destroy(&rd);
        have_all = 1;
        in.req = GRPC_SLICE_START_PTR(all);
        in.req_len = GRPC_SLICE_LENGTH(all);
    }

    s->cfg.dispatch(s->cfg.app, &in, reply);

    if (have_all) {
        OPENSSL_cleanse(GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all));
        grpc_slice_unref(all);
    }
    if (s->cfg.methods[c->method].flags & KMS_SERVER_SECRET_REQUEST)
        wipe_payload(c->payload);
    if (c->payload) {
        grpc_byte_buffer_destroy(c->payload);
        c->payload = NULL;
    }
}

/* A tag is done with (its handling finished); is_shutdown_tag marks the
 * core's shutdown notification. Wakes kms_server_shutdown when the server
 * is quiet. */
static void finished(kms_server *s, int is_shutdown_tag)
{
    pthread_mutex_lock(&s->mu);
    if (is_shutdown_tag)
        s->shutdown_seen = 1;
    s->outstanding--;
    if (s->shutdown_seen && s->outstanding == 0)
        pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Handles a new call: dispatch, then one reply batch tagged with c. */
static void handle_call(kms_server *s, struct call_ctx *c)
{
    kms_server_reply reply = {.status = GRPC_STATUS_INTERNAL, .message = "internal error"};
    run_call(s, c, &reply);
    if (reply.message == NULL)
        reply.message = "";

    grpc_op ops[4];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].data.send_initial_metadata.count = 0;
    n++;
    if (reply.status == GRPC_STATUS_OK) {
        if (reply.body != NULL)
            HANDOFF_RELEASE(reply.body);
        grpc_slice body = reply.body != NULL
                              ? grpc_slice_new_with_len(reply.body, reply.body_len, wipe_free)
                              : grpc_empty_slice();
        reply.body = NULL; /* owned by the slice now */
        c->reply = grpc_raw_byte_buffer_create(&body, 1);
        grpc_slice_unref(body);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->reply;
        n++;
    } else if (reply.body != NULL) {
        wipe_free(reply.body, reply.body_len);
        reply.body = NULL;
    }
    c->status_details = reply.message[0] != '\0' ? grpc_slice_from_copied_string(reply.message)
                                                 : grpc_empty_slice();
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.trailing_metadata_count = 0;
    ops[n].data.send_status_from_server.status = reply.status;
    ops[n].data.send_status_from_server.status_details = &c->status_details;
    n++;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n].data.recv_close_on_server.cancelled = &c->cancelled;
    n++;

    c->kind = TAG_REPLY;
    pthread_mutex_lock(&s->mu);
    s->outstanding++; /* before the core can complete it */
    pthread_mutex_unlock(&s->mu);
    grpc_call *call = c->call;
    HANDOFF_RELEASE(c); /* the last access to c before the core has it */
    grpc_call_error e = grpc_call_start_batch(call, ops, n, c, NULL);
    if (e != GRPC_CALL_OK) {
        kms_log_error("server: cannot send a reply (grpc_call_error %d)", (int)e);
        ctx_free(c); /* no completion will come for this tag */
        finished(s, 0);
    }
}

static void *worker(void *arg)
{
    kms_server *s = arg;
    /* Named, so that per-thread CPU (top -H, /proc/PID/task) tells the
     * workers, which also run gRPC's polling and TLS handshakes, from the
     * rest of kmsd. */
    (void)pthread_setname_np(pthread_self(), "kmsd-worker");
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        HANDOFF_ACQUIRE(ev.tag);
        enum tag_kind kind = *(enum tag_kind *)ev.tag;
        switch (kind) {
        case TAG_NEW_CALL: {
            struct call_ctx *c = ev.tag;
            if (!ev.success) { /* the server is shutting down */
                ctx_free(c);
                break;
            }
            post_request(s, c->method); /* keep a slot open while we work */
            handle_call(s, c);
            break;
        }
        case TAG_REPLY:
            ctx_free(ev.tag);
            break;
        case TAG_SHUTDOWN:
            break;
        default:
            kms_log_error("server: unknown completion tag");
            abort(); /* a broken invariant: never guess what a tag is */
        }
        finished(s, kind == TAG_SHUTDOWN);
    }
    return NULL;
}

/* ---- public ------------------------------------------------------------------------ */

/* gRPC's external verifier. gRPC may hold it after the server is
 * destroyed (connections torn down later), so it is its own allocation,
 * freed by verify_destruct; verify_app must outlive grpc_shutdown. */
struct verifier {
    grpc_tls_certificate_verifier_external ext; /* first: user_data points here */
    int (*verify_peer)(void *verify_app, const char *leaf_pem);
    void *verify_app;
};

/* Synchronous: asks verify_peer. */
static int verify_sync(void *user_data, grpc_tls_custom_verification_check_request *request,
                       grpc_tls_on_custom_verification_check_done_cb callback, void *callback_arg,
                       grpc_status_code *sync_status, char **sync_error_details)
{
    const struct verifier *v = user_data;
    (void)callback;
    (void)callback_arg;
    const char *pem = request != NULL ? request->peer_info.peer_cert : NULL;
    if (v->verify_peer == NULL || (pem != NULL && v->verify_peer(v->verify_app, pem) == 0)) {
        *sync_status = GRPC_STATUS_OK;
        return 1;
    }
    *sync_status = GRPC_STATUS_UNAUTHENTICATED;
    *sync_error_details = gpr_strdup("client certificate refused (revocation)");
    return 1;
}

static void verify_cancel(void *user_data, grpc_tls_custom_verification_check_request *request)
{
    (void)user_data;
    (void)request;
}

static void verify_destruct(void *user_data)
{
    free(user_data);
}

/* ---- TLS material: checked, then put where gRPC's file watcher reads it ---- */

/* The key matches the certificate (the chain's first), and the CA holds at
 * least one certificate. */
static int tls_check(const char *cert_pem, const char *key_pem, const char *ca_pem)
{
    if (cert_pem == NULL || key_pem == NULL || ca_pem == NULL)
        return kms_error_set(KMS_EINVAL, "server: mutual TLS needs a certificate, its key and a "
                                         "client CA");
    BIO *cb = BIO_new_mem_buf(cert_pem, -1), *kb = BIO_new_mem_buf(key_pem, -1),
        *ab = BIO_new_mem_buf(ca_pem, -1);
    X509 *cert = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    EVP_PKEY *key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    X509 *ca = ab ? PEM_read_bio_X509(ab, NULL, NULL, NULL) : NULL;
    int r = KMS_OK;
    if (cert == NULL)
        r = kms_error_set(KMS_EINVAL, "server: the TLS certificate is not a PEM certificate");
    else if (key == NULL)
        r = kms_error_set(KMS_EINVAL, "server: the TLS key is not a PEM private key");
    else if (X509_check_private_key(cert, key) != 1)
        r = kms_error_set(KMS_EINVAL, "server: the TLS key does not match the certificate");
    else if (ca == NULL)
        r = kms_error_set(KMS_EINVAL, "server: the client CA holds no PEM certificate");
    X509_free(cert);
    X509_free(ca);
    EVP_PKEY_free(key);
    BIO_free(cb);
    BIO_free(kb);
    BIO_free(ab);
    return r;
}

/* A memory file (never on disk) holding text. */
static int tls_memfile(const char *name, const char *text)
{
    int fd = memfd_create(name, MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = strlen(text), done = 0;
    while (done < len) {
        ssize_t n = write(fd, text + done, len - done);
        if (n <= 0) {
            close(fd);
            return -1;
        }
        done += (size_t)n;
    }
    return fd;
}

/* Makes the three memory files; with installed ones (fd[i] >= 0) puts the
 * new ones at the same descriptors, CA first, so the watcher's next look
 * sees them (a look between the certificate and the key sees a pair that
 * does not match, which gRPC skips until the next one). */
static int tls_install(int fd[3], const char *cert_pem, const char *key_pem, const char *ca_pem)
{
    static const char *const names[3] = {"kms-tls-key", "kms-tls-cert", "kms-tls-ca"};
    const char *texts[3] = {key_pem, cert_pem, ca_pem};
    int fresh[3] = {-1, -1, -1}, r = KMS_OK;
    for (int i = 0; i < 3 && r == 0; i++)
        if ((fresh[i] = tls_memfile(names[i], texts[i])) < 0)
            r = kms_error_set(KMS_EUNAVAIL, "server: cannot make a memory file for TLS");
    static const int order[3] = {TLS_CA, TLS_CERT, TLS_KEY};
    for (int j = 0; j < 3 && r == 0; j++) {
        int i = order[j];
        if (fd[i] < 0) {
            fd[i] = fresh[i];
            fresh[i] = -1;
        } else if (dup2(fresh[i], fd[i]) < 0) {
            r = kms_error_set(KMS_EUNAVAIL, "server: cannot install the new TLS files");
        }
    }
    for (int i = 0; i < 3; i++)
        if (fresh[i] >= 0)
            close(fresh[i]);
    return r;
}

/* TLS credentials with the same chain verification as the SSL ones plus
 * cfg->verify_peer (if set) in the handshake; the identity and client CA
 * come from gRPC's file watcher over s->tls_path, so a reload is seen by
 * new handshakes within TLS_REFRESH_SEC while connections already up keep
 * theirs. */
static grpc_server_credentials *make_tls_creds(kms_server *s)
{
    const kms_server_config *cfg = &s->cfg;
    struct verifier *ver = calloc(1, sizeof(*ver));
    if (ver == NULL)
        return NULL;
    ver->ext = (grpc_tls_certificate_verifier_external){.user_data = ver,
                                                        .verify = verify_sync,
                                                        .cancel = verify_cancel,
                                                        .destruct = verify_destruct};
    ver->verify_peer = cfg->verify_peer;
    ver->verify_app = cfg->verify_app;
    grpc_tls_certificate_provider *provider = grpc_tls_certificate_provider_file_watcher_create(
        s->tls_path[TLS_KEY], s->tls_path[TLS_CERT], s->tls_path[TLS_CA], TLS_REFRESH_SEC);
    if (provider == NULL) {
        free(ver);
        return NULL;
    }
    grpc_tls_credentials_options *opts = grpc_tls_credentials_options_create();
    grpc_tls_credentials_options_set_certificate_provider(opts, provider);
    grpc_tls_certificate_provider_release(provider);
    grpc_tls_credentials_options_watch_root_certs(opts);
    grpc_tls_credentials_options_watch_identity_key_cert_pairs(opts);
    grpc_tls_credentials_options_set_cert_request_type(
        opts, GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    grpc_tls_certificate_verifier *v = grpc_tls_certificate_verifier_external_create(&ver->ext);
    grpc_tls_credentials_options_set_certificate_verifier(opts, v);
    grpc_tls_certificate_verifier_release(v);
    return grpc_tls_server_credentials_create(opts);
}

static grpc_server_credentials *make_creds(kms_server *s)
{
    if (s->cfg.insecure)
        return grpc_insecure_server_credentials_create();
    return make_tls_creds(s);
}

int kms_server_reload_tls(kms_server *s, const char *cert_pem, const char *key_pem,
                          const char *ca_pem)
{
    if (s == NULL || s->tls_fd[TLS_KEY] < 0)
        return kms_error_set(KMS_EINVAL, "server: no TLS listener to reload");
    KMS_GUARD(tls_check(cert_pem, key_pem, ca_pem));
    return tls_install(s->tls_fd, cert_pem, key_pem, ca_pem);
}

int kms_server_start(const kms_server_config *cfg, kms_server **out, int *port)
{
    kms_server *s = NULL;
    grpc_server_credentials *creds = NULL;
    int r = KMS_OK, bound = 0;

    if (cfg == NULL || out == NULL || cfg->listen == NULL || cfg->dispatch == NULL ||
        cfg->methods == NULL || cfg->n_methods == 0 || cfg->workers == 0 || cfg->max_recv == 0 ||
        cfg->max_recv > INT32_MAX || cfg->max_send == 0 || cfg->max_send > INT32_MAX)
        return kms_error_set(KMS_EINVAL, "server: incomplete configuration");
    if (!cfg->insecure)
        KMS_GUARD(tls_check(cfg->cert_pem, cfg->key_pem, cfg->client_ca_pem));

    if ((s = calloc(1, sizeof(*s))) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    s->cfg = *cfg;
    for (int i = 0; i < 3; i++)
        s->tls_fd[i] = -1;
    s->shutdown_tag.kind = TAG_SHUTDOWN;
    s->slots = cfg->workers < MIN_SLOTS_PER_METHOD ? MIN_SLOTS_PER_METHOD : cfg->workers;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->handles = calloc(cfg->n_methods, sizeof(*s->handles));
    s->threads = calloc(cfg->workers, sizeof(*s->threads));
    if (s->handles == NULL || s->threads == NULL) {
        r = kms_error_set(KMS_ENOMEM, "out of memory");
        goto out;
    }
    if (!cfg->insecure) {
        if ((r = tls_install(s->tls_fd, cfg->cert_pem, cfg->key_pem, cfg->client_ca_pem)) != 0)
            goto out;
        for (int i = 0; i < 3; i++)
            snprintf(s->tls_path[i], sizeof(s->tls_path[i]), "/proc/self/fd/%d", s->tls_fd[i]);
    }

    const struct {
        const char *key;
        unsigned long long value;
    } limits[] = {
        {GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, cfg->max_recv},
        {GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, cfg->max_send},
        {GRPC_ARG_MAX_CONCURRENT_STREAMS, cfg->max_concurrent_streams},
        {GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, cfg->handshake_timeout_ms},
        {GRPC_ARG_MAX_CONNECTION_IDLE_MS, cfg->idle_timeout_ms},
    };
    grpc_arg args[sizeof(limits) / sizeof(limits[0]) + 1];
    grpc_channel_args chargs = {.num_args = 0, .args = args};
    memset(args, 0, sizeof(args));
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
        if (limits[i].value == 0) /* gRPC's default */
            continue;
        if (limits[i].value > INT32_MAX) {
            r = kms_error_set(KMS_EINVAL, "server: %s out of range", limits[i].key);
            goto out;
        }
        args[chargs.num_args].type = GRPC_ARG_INTEGER;
        args[chargs.num_args].key = (char *)limits[i].key;
        args[chargs.num_args].value.integer = (int)limits[i].value;
        chargs.num_args++;
    }
    /* No SO_REUSEPORT: a second kmsd on a port that is already served must
     * fail to bind, not silently take a share of the connections. */
    args[chargs.num_args].type = GRPC_ARG_INTEGER;
    args[chargs.num_args].key = (char *)GRPC_ARG_ALLOW_REUSEPORT;
    args[chargs.num_args].value.integer = 0;
    chargs.num_args++;
    s->server = grpc_server_create(&chargs, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    if (s->server == NULL || s->cq == NULL) {
        r = kms_error_set(KMS_ENOMEM, "server: cannot create the gRPC server");
        goto out;
    }
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    for (size_t i = 0; i < cfg->n_methods; i++) {
        s->handles[i] = grpc_server_register_method(s->server, cfg->methods[i].path, NULL,
                                                    GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (s->handles[i] == NULL) {
            r = kms_error_set(KMS_EINVAL, "server: cannot register %s", cfg->methods[i].path);
            goto out;
        }
    }
    if ((creds = make_creds(s)) == NULL) {
        r = kms_error_set(KMS_EINVAL, "server: TLS credentials refused (check the certificate, "
                                      "key and CA files)");
        goto out;
    }
    bound = grpc_server_add_http2_port(s->server, cfg->listen, creds);
    grpc_server_credentials_release(creds);
    if (bound <= 0) {
        r = kms_error_set(KMS_EUNAVAIL,
                          "server: cannot listen on %s (address in use, or "
                          "the TLS certificate and key do not load)",
                          cfg->listen);
        goto out;
    }

    grpc_server_start(s->server);
    s->started = 1;
    pthread_mutex_lock(&s->mu);
    s->accepting = 1;
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < cfg->n_methods; i++)
        for (size_t j = 0; j < s->slots; j++)
            post_request(s, i);
    for (size_t j = 0; j < UNREGISTERED_SLOTS; j++)
        post_request(s, UNREGISTERED);

    for (size_t i = 0; i < cfg->workers; i++) {
        if (pthread_create(&s->threads[i], NULL, worker, s) != 0) {
            r = kms_error_set(KMS_ENOMEM, "server: cannot start worker thread %zu", i);
            goto out;
        }
        s->n_threads++;
    }
out:
    if (r != 0) {
        kms_server_destroy(s);
        return r;
    }
    if (port)
        *port = bound;
    *out = s;
    return KMS_OK;
}

static int quiet(kms_server *s)
{
    pthread_mutex_lock(&s->mu);
    int q = s->shutdown_seen && s->outstanding == 0;
    pthread_mutex_unlock(&s->mu);
    return q;
}

/* Without workers (start failed early) the caller pumps the queue itself:
 * until the server is quiet, or (until_quiet 0) until the queue is shut
 * down. */
static void pump_until(kms_server *s, int until_quiet)
{
    while (!(until_quiet && quiet(s))) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            return;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        HANDOFF_ACQUIRE(ev.tag);
        enum tag_kind kind = *(enum tag_kind *)ev.tag;
        if (kind != TAG_SHUTDOWN)
            ctx_free(ev.tag); /* nothing was dispatched without workers */
        finished(s, kind == TAG_SHUTDOWN);
    }
}

void kms_server_shutdown(kms_server *s)
{
    if (s == NULL || s->stopped)
        return;
    pthread_mutex_lock(&s->mu);
    s->accepting = 0;
    pthread_mutex_unlock(&s->mu);

    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->outstanding++; /* the shutdown tag */
        pthread_mutex_unlock(&s->mu);
        grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_tag);
        grpc_server_cancel_all_calls(s->server);
        /* Quiet: the tag came back, no request is pending, no worker is
         * handling a call; only now may the queue be shut down. */
        if (s->n_threads > 0) {
            pthread_mutex_lock(&s->mu);
            while (!(s->shutdown_seen && s->outstanding == 0))
                pthread_cond_wait(&s->cv, &s->mu);
            pthread_mutex_unlock(&s->mu);
        } else {
            pump_until(s, 1);
        }
    }
    if (s->cq != NULL) {
        grpc_completion_queue_shutdown(s->cq);
        if (s->n_threads > 0) {
            for (size_t i = 0; i < s->n_threads; i++)
                pthread_join(s->threads[i], NULL);
            s->n_threads = 0;
        } else {
            pump_until(s, 0);
        }
    }
    s->stopped = 1;
}

void kms_server_destroy(kms_server *s)
{
    if (s == NULL)
        return;
    kms_server_shutdown(s);
    if (s->server)
        grpc_server_destroy(s->server);
    if (s->cq)
        grpc_completion_queue_destroy(s->cq);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    for (int i = 0; i < 3; i++)
        if (s->tls_fd[i] >= 0)
            close(s->tls_fd[i]);
    free(s->handles);
    free(s->threads);
    free(s);
}
