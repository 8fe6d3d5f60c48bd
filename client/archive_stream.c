/* The archive engine: a ring of segment slots filled in order by the
 * feeding thread, sealed or opened by a bounded pool of workers, and
 * drained in order to the sink.
 *
 * A full segment is dispatched only when at least one more input byte
 * arrives: until then it may be the last one, whose nonce carries the last
 * flag. final() dispatches what is left as the last segment. */
#include "archive_stream.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#define MAX_THREADS 64
#define SLOT_BUDGET (32u << 20)

enum slot_state { SLOT_FREE, SLOT_FILLING, SLOT_QUEUED, SLOT_DONE };

typedef struct slot {
    uint8_t *in, *out;
    size_t in_len, out_len;
    uint32_t index;
    int last;
    int state;
    int result;
} slot;

struct kms_archive_stream {
    int encrypt;
    kms_archive_params p;
    size_t in_unit, out_unit; /* bytes per full segment, in and out */
    uint8_t prefix[KMS_ARCHIVE_PREFIX_LEN];
    EVP_CIPHER *aes;
    kms_secret *keys; /* segment key, commitment, MAC key */
    int failed;       /* first error, sticky */
    char failed_msg[KMS_CLIENT_MESSAGE_MAX];
    int finished;
    uint64_t consumed;

    /* The header: built (encrypt) and not yet sent, or being read (decrypt). */
    uint8_t *header;
    size_t header_len, header_have;
    int header_done;
    uint8_t *context; /* decrypt: the context required */
    size_t context_len;
    kms_archive_unwrap_fn unwrap;
    void *unwrap_arg;

    /* The ring. next: the segment being filled; emit: the next to drain. */
    slot *slots;
    size_t n_slots;
    uint64_t next, emit, work, submitted;
    kms_archive_cipher inline_cipher; /* the feeding thread's */
    unsigned threads;
    pthread_t *pool;
    unsigned started;
    int stop;
    int pool_failed; /* a worker could not set up its cipher */
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
};

int kms_archive_fail(kms_client_error *err, int code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Records the first failure; later calls report it again. */
static int fail(kms_archive_stream *s, kms_client_error *err, int code, const char *msg)
{
    if (!s->failed) {
        s->failed = code;
        snprintf(s->failed_msg, sizeof(s->failed_msg), "%s", msg);
    }
    return kms_archive_fail(err, s->failed, "%s", s->failed_msg);
}

static int fail_from(kms_archive_stream *s, const kms_client_error *e, kms_client_error *err)
{
    return fail(s, err, e->code, e->message);
}

static int process(kms_archive_stream *s, kms_archive_cipher *c, slot *sl)
{
    if (s->encrypt) {
        sl->out_len = sl->in_len + KMS_ARCHIVE_TAG_LEN;
        return kms_archive_seal(c, s->prefix, sl->index, sl->last, sl->in, sl->in_len, sl->out);
    }
    if (sl->in_len < KMS_ARCHIVE_TAG_LEN)
        return KMS_CLIENT_ECORRUPT;
    sl->out_len = sl->in_len - KMS_ARCHIVE_TAG_LEN;
    /* Only the first segment of an empty archive is empty. */
    if (sl->out_len == 0 && sl->index != 0)
        return KMS_CLIENT_ECORRUPT;
    int r = kms_archive_open(c, s->prefix, sl->index, sl->last, sl->in, sl->in_len, sl->out);
    if (r == KMS_CLIENT_ECORRUPT && sl->last && sl->in_len == s->in_unit &&
        kms_archive_open(c, s->prefix, sl->index, 0, sl->in, sl->in_len, sl->out) == 0) {
        /* A whole segment that is not the last: the rest was cut off. */
        OPENSSL_cleanse(sl->out, sl->out_len);
        r = KMS_CLIENT_ETRUNCATED;
    }
    return r;
}

static void *worker(void *arg)
{
    kms_archive_stream *s = arg;
    kms_archive_cipher c;
    int ok = kms_archive_cipher_init(&c, s->aes, s->keys->data, s->encrypt) == 0;
    pthread_mutex_lock(&s->mu);
    if (!ok) {
        s->pool_failed = 1;
        pthread_cond_broadcast(&s->done_cv);
    }
    while (ok) {
        while (!s->stop && s->work == s->submitted)
            pthread_cond_wait(&s->work_cv, &s->mu);
        if (s->work == s->submitted)
            break;
        slot *sl = &s->slots[s->work % s->n_slots];
        s->work++;
        pthread_mutex_unlock(&s->mu);
        int r = process(s, &c, sl);
        pthread_mutex_lock(&s->mu);
        sl->result = r;
        sl->state = SLOT_DONE;
        pthread_cond_signal(&s->done_cv);
    }
    pthread_mutex_unlock(&s->mu);
    if (ok)
        kms_archive_cipher_free(&c);
    return NULL;
}

static const char *segment_message(int code)
{
    switch (code) {
    case KMS_CLIENT_ETRUNCATED:
        return "archive truncated: it ends at a segment boundary before its last segment";
    case KMS_CLIENT_ECORRUPT:
        return "archive corrupt: a segment does not authenticate (tampered, reordered, cut, "
               "or followed by trailing bytes)";
    default:
        return "segment processing failed";
    }
}

static int sink(kms_archive_stream *s, const uint8_t *p, size_t n, kms_client_error *err)
{
    if (n > 0 && s->p.sink(s->p.sink_arg, p, n) != 0)
        return fail(s, err, KMS_CLIENT_EIO, "writing the output failed");
    return 0;
}

/* Drains the oldest segment (waiting for it when wait is set); 1 if one was
 * drained, 0 if none was ready, or a negative error. */
static int drain_one(kms_archive_stream *s, int wait, kms_client_error *err)
{
    if (s->emit == s->submitted)
        return 0;
    slot *sl = &s->slots[s->emit % s->n_slots];
    if (s->pool != NULL) {
        pthread_mutex_lock(&s->mu);
        while (wait && sl->state != SLOT_DONE && !s->pool_failed) {
            /* The feeding thread is one of the threads: rather than wait,
             * it seals or opens the next queued segment itself. */
            if (s->work < s->submitted) {
                slot *q = &s->slots[s->work % s->n_slots];
                s->work++;
                pthread_mutex_unlock(&s->mu);
                int r = process(s, &s->inline_cipher, q);
                pthread_mutex_lock(&s->mu);
                q->result = r;
                q->state = SLOT_DONE;
                continue;
            }
            pthread_cond_wait(&s->done_cv, &s->mu);
        }
        int state = sl->state, pool_failed = s->pool_failed;
        pthread_mutex_unlock(&s->mu);
        if (pool_failed)
            return fail(s, err, KMS_CLIENT_ENOMEM, "a worker thread could not start its cipher");
        if (state != SLOT_DONE)
            return 0;
    }
    int r = sl->result;
    if (r != 0) {
        if (sl->out_len > 0)
            OPENSSL_cleanse(sl->out, sl->out_len);
        return fail(s, err, r, segment_message(r));
    }
    /* Decrypted bytes stay in the slot until it is reused or freed (wiped
     * then): the sink has them anyway, and a second pass over every
     * segment would cost a fifth of the single-thread rate. */
    r = sink(s, sl->out, sl->out_len, err);
    if (r != 0)
        return r;
    sl->state = SLOT_FREE;
    s->emit++;
    return 1;
}

/* threads - 1 workers; the feeding thread is the last one (drain_one). */
static int start_pool(kms_archive_stream *s, kms_client_error *err)
{
    if (kms_archive_cipher_init(&s->inline_cipher, s->aes, s->keys->data, s->encrypt) != 0)
        return fail(s, err, KMS_CLIENT_ENOMEM, "cannot set up AES-256-GCM");
    if (s->threads == 1)
        return 0;
    s->pool = calloc(s->threads - 1, sizeof(pthread_t));
    if (s->pool == NULL)
        return fail(s, err, KMS_CLIENT_ENOMEM, "out of memory");
    for (; s->started < s->threads - 1; s->started++)
        if (pthread_create(&s->pool[s->started], NULL, worker, s) != 0)
            break;
    if (s->started == 0)
        return fail(s, err, KMS_CLIENT_ENOMEM, "cannot start worker threads");
    return 0;
}

/* Sends the filled slot to be processed. */
static int dispatch(kms_archive_stream *s, int last, kms_client_error *err)
{
    slot *sl = &s->slots[s->next % s->n_slots];
    if (s->next > UINT32_MAX)
        return fail(s, err, s->encrypt ? KMS_CLIENT_EARG : KMS_CLIENT_ECORRUPT,
                    "more than 2^32 segments");
    sl->index = (uint32_t)s->next;
    sl->last = last;
    sl->result = 0;
    s->next++;
    if (s->pool == NULL) {
        sl->result = process(s, &s->inline_cipher, sl);
        sl->state = SLOT_DONE;
        s->submitted = s->next;
    } else {
        pthread_mutex_lock(&s->mu);
        sl->state = SLOT_QUEUED;
        s->submitted = s->next;
        pthread_cond_signal(&s->work_cv);
        pthread_mutex_unlock(&s->mu);
    }
    /* Drain whatever is ready without waiting. */
    int r;
    while ((r = drain_one(s, s->pool == NULL, err)) == 1)
        ;
    return r;
}

/* A slot's state: workers write it (QUEUED to DONE) under the lock. */
static int slot_state(kms_archive_stream *s, const slot *sl)
{
    if (s->pool == NULL)
        return sl->state;
    pthread_mutex_lock(&s->mu);
    int state = sl->state;
    pthread_mutex_unlock(&s->mu);
    return state;
}

/* The slot for segment s->next, waiting for the ring to make room. */
static int acquire(kms_archive_stream *s, slot **out, kms_client_error *err)
{
    slot *sl = &s->slots[s->next % s->n_slots];
    int state;
    while ((state = slot_state(s, sl)) != SLOT_FREE && state != SLOT_FILLING) {
        int r = drain_one(s, 1, err);
        if (r < 0)
            return r;
    }
    if (state == SLOT_FREE) {
        sl->state = SLOT_FILLING;
        sl->in_len = 0;
        sl->out_len = 0;
    }
    *out = sl;
    return 0;
}

static int feed_segments(kms_archive_stream *s, const uint8_t *in, size_t len,
                         kms_client_error *err)
{
    while (len > 0) {
        slot *sl;
        int r = acquire(s, &sl, err);
        if (r != 0)
            return r;
        if (sl->in_len == s->in_unit) {
            /* More input follows a full segment: it is not the last. */
            r = dispatch(s, 0, err);
            if (r < 0)
                return r;
            continue;
        }
        if (s->pool == NULL && sl->in_len == 0 && len > s->in_unit) {
            /* One thread: a whole segment with more after it is sealed or
             * opened straight from the caller's buffer (processed and
             * drained before dispatch returns), saving a copy. */
            uint8_t *own = sl->in;
            sl->in = (uint8_t *)in;
            sl->in_len = s->in_unit;
            r = dispatch(s, 0, err);
            sl->in = own;
            sl->in_len = 0;
            if (r < 0)
                return r;
            in += s->in_unit;
            len -= s->in_unit;
            continue;
        }
        size_t n = s->in_unit - sl->in_len;
        if (n > len)
            n = len;
        memcpy(sl->in + sl->in_len, in, n);
        sl->in_len += n;
        in += n;
        len -= n;
    }
    return 0;
}

/* Decrypt: gathers the header, then checks context, unwraps and
 * authenticates it. *used_out: the bytes of in it consumed. Returns 0 or
 * a status (the unwrap's may be a positive gRPC code). */
static int feed_header(kms_archive_stream *s, const uint8_t *in, size_t len, size_t *used_out,
                       kms_client_error *err)
{
    size_t used = 0;
    *used_out = 0;
    if (s->header_len == 0) {
        size_t n = KMS_ARCHIVE_PEEK_LEN - s->header_have;
        if (n > len)
            n = len;
        memcpy(s->header + s->header_have, in, n);
        s->header_have += n;
        used = n;
        size_t hl;
        int r = kms_archive_peek(s->header, s->header_have, &hl);
        if (r == KMS_CLIENT_ETRUNCATED) {
            *used_out = used;
            return 0;
        }
        if (r == KMS_CLIENT_ENOTARCHIVE)
            return fail(s, err, r, "not an archive (no KMSA header)");
        if (r == KMS_CLIENT_EVERSION)
            return fail(s, err, r, "unsupported archive format version");
        if (r != 0)
            return fail(s, err, KMS_CLIENT_ECORRUPT, "archive corrupt: bad header length");
        s->header_len = hl;
    }
    size_t n = s->header_len - s->header_have;
    if (n > len - used)
        n = len - used;
    memcpy(s->header + s->header_have, in + used, n);
    s->header_have += n;
    used += n;
    *used_out = used;
    if (s->header_have < s->header_len)
        return 0;

    kms_archive_header h;
    if (kms_archive_header_parse(s->header, s->header_len, &h) != 0)
        return fail(s, err, KMS_CLIENT_ECORRUPT, "archive corrupt: malformed header");
    if (h.context_len != s->context_len ||
        CRYPTO_memcmp(h.context, s->context, s->context_len) != 0)
        return fail(s, err, KMS_CLIENT_ECONTEXT,
                    "wrong encryption context: the archive was made with another context");
    kms_secret *dk = NULL;
    kms_client_error e = {0};
    int r = s->unwrap(s->unwrap_arg, &h, &dk, &e);
    if (r != 0)
        return fail_from(s, &e, err);
    r = kms_archive_keys_check(&h, dk, &s->keys);
    kms_secret_free(dk);
    if (r == KMS_CLIENT_ECORRUPT)
        return fail(s, err, r, "archive corrupt: the header does not authenticate");
    if (r != 0)
        return fail(s, err, r, "cannot derive the archive keys");
    memcpy(s->prefix, h.prefix, KMS_ARCHIVE_PREFIX_LEN);
    s->in_unit = (size_t)h.segment_size + KMS_ARCHIVE_TAG_LEN;
    s->out_unit = h.segment_size;
    s->header_done = 1;
    return 0;
}

static int alloc_slots(kms_archive_stream *s, kms_client_error *err)
{
    size_t per = s->in_unit + s->out_unit;
    size_t n = s->threads == 1 ? 1 : 2 * (size_t)s->threads;
    size_t cap = SLOT_BUDGET / per;
    if (n > cap)
        n = cap < 2 ? 2 : cap;
    if (s->threads > n)
        s->threads = (unsigned)n;
    s->slots = calloc(n, sizeof(slot));
    if (s->slots == NULL)
        return fail(s, err, KMS_CLIENT_ENOMEM, "out of memory");
    s->n_slots = n;
    for (size_t i = 0; i < n; i++) {
        s->slots[i].in = malloc(s->in_unit);
        s->slots[i].out = malloc(s->out_unit);
        if (s->slots[i].in == NULL || s->slots[i].out == NULL)
            return fail(s, err, KMS_CLIENT_ENOMEM, "out of memory for segment buffers");
    }
    return start_pool(s, err);
}

static unsigned online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (unsigned)n;
}

static int stream_new(const kms_archive_params *p, int encrypt, kms_archive_stream **out,
                      kms_client_error *err)
{
    if (p == NULL || p->sink == NULL)
        return kms_archive_fail(err, KMS_CLIENT_EARG, "no output sink");
    kms_archive_stream *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return kms_archive_fail(err, KMS_CLIENT_ENOMEM, "out of memory");
    s->encrypt = encrypt;
    s->p = *p;
    s->threads = p->threads == 0            ? online_cpus()
                 : p->threads > MAX_THREADS ? MAX_THREADS
                                            : p->threads;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work_cv, NULL);
    pthread_cond_init(&s->done_cv, NULL);
    s->aes = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    if (s->aes == NULL) {
        kms_archive_stream_free(s);
        return kms_archive_fail(err, KMS_CLIENT_ENOMEM, "AES-256-GCM is not available");
    }
    *out = s;
    return 0;
}

int kms_archive_stream_encrypt(const kms_archive_params *p, const kms_secret *dk,
                               const char *key_name, const uint8_t *blob, size_t blob_len,
                               const uint8_t *context, size_t context_len, const uint8_t *salt,
                               const uint8_t *prefix, kms_archive_stream **out,
                               kms_client_error *err)
{
    uint32_t seg = p && p->segment_size ? p->segment_size : KMS_ARCHIVE_SEGMENT_DEFAULT;
    if (seg < KMS_ARCHIVE_SEGMENT_MIN || seg > KMS_ARCHIVE_SEGMENT_MAX)
        return kms_archive_fail(err, KMS_CLIENT_EARG, "segment size must be 4096 .. 8388608");
    kms_archive_stream *s;
    int r = stream_new(p, 1, &s, err);
    if (r != 0)
        return r;
    uint8_t rsalt[KMS_ARCHIVE_SALT_LEN];
    if (salt == NULL) {
        if (RAND_bytes(rsalt, sizeof(rsalt)) != 1 ||
            RAND_bytes(s->prefix, KMS_ARCHIVE_PREFIX_LEN) != 1) {
            kms_archive_stream_free(s);
            return kms_archive_fail(err, KMS_CLIENT_ENOMEM, "no randomness");
        }
        salt = rsalt;
    } else {
        memcpy(s->prefix, prefix, KMS_ARCHIVE_PREFIX_LEN);
    }
    r = kms_archive_header_build(seg, salt, s->prefix, context, context_len, key_name, blob,
                                 blob_len, dk, &s->header, &s->header_len, &s->keys);
    if (r != 0) {
        kms_archive_stream_free(s);
        return kms_archive_fail(err, r, "cannot build the archive header");
    }
    s->in_unit = seg;
    s->out_unit = (size_t)seg + KMS_ARCHIVE_TAG_LEN;
    if (alloc_slots(s, err) != 0) {
        r = s->failed;
        kms_archive_stream_free(s);
        return r;
    }
    *out = s;
    return 0;
}

int kms_archive_stream_decrypt(const kms_archive_params *p, const uint8_t *context,
                               size_t context_len, kms_archive_unwrap_fn unwrap, void *unwrap_arg,
                               kms_archive_stream **out, kms_client_error *err)
{
    kms_archive_stream *s;
    int r = stream_new(p, 0, &s, err);
    if (r != 0)
        return r;
    s->unwrap = unwrap;
    s->unwrap_arg = unwrap_arg;
    s->header = malloc(KMS_ARCHIVE_HEADER_MAX);
    s->context = malloc(context_len ? context_len : 1);
    if (s->header == NULL || s->context == NULL) {
        kms_archive_stream_free(s);
        return kms_archive_fail(err, KMS_CLIENT_ENOMEM, "out of memory");
    }
    memcpy(s->context, context, context_len);
    s->context_len = context_len;
    *out = s;
    return 0;
}

static void progress(kms_archive_stream *s, size_t n)
{
    s->consumed += n;
    if (s->p.progress != NULL)
        s->p.progress(s->p.progress_arg, s->consumed);
}

int kms_archive_stream_update(kms_archive_stream *s, const uint8_t *in, size_t len,
                              kms_client_error *err)
{
    if (s->failed)
        return fail(s, err, s->failed, s->failed_msg);
    if (s->finished)
        return fail(s, err, KMS_CLIENT_EARG, "update after final");
    if (len > 0 && in == NULL)
        return kms_archive_fail(err, KMS_CLIENT_EARG, "NULL input");
    if (s->encrypt && !s->header_done) {
        if (sink(s, s->header, s->header_len, err) != 0)
            return s->failed;
        s->header_done = 1;
    }
    size_t total = len;
    if (!s->encrypt && !s->header_done) {
        size_t used;
        int r = feed_header(s, in, len, &used, err);
        if (r != 0)
            return r;
        in += used;
        len -= used;
        if (s->header_done && alloc_slots(s, err) != 0)
            return s->failed;
    }
    int r = len > 0 ? feed_segments(s, in, len, err) : 0;
    if (r != 0)
        return r;
    progress(s, total);
    return 0;
}

int kms_archive_stream_final(kms_archive_stream *s, kms_client_error *err)
{
    if (s->failed)
        return fail(s, err, s->failed, s->failed_msg);
    if (s->finished)
        return fail(s, err, KMS_CLIENT_EARG, "final called twice");
    if (s->encrypt && !s->header_done) {
        if (sink(s, s->header, s->header_len, err) != 0)
            return s->failed;
        s->header_done = 1;
    }
    if (!s->encrypt && !s->header_done) {
        if (s->header_have < 4)
            return fail(s, err, KMS_CLIENT_ENOTARCHIVE, "not an archive (no KMSA header)");
        return fail(s, err, KMS_CLIENT_ETRUNCATED, "archive truncated inside its header");
    }
    slot *sl;
    int r = acquire(s, &sl, err);
    if (r != 0)
        return r;
    if (!s->encrypt && sl->in_len == 0)
        return fail(s, err, s->next == 0 ? KMS_CLIENT_ETRUNCATED : KMS_CLIENT_ECORRUPT,
                    s->next == 0 ? "archive truncated: no segment after the header"
                                 : "archive corrupt: segment missing");
    r = dispatch(s, 1, err);
    if (r < 0)
        return r;
    while (s->emit < s->submitted) {
        r = drain_one(s, 1, err);
        if (r < 0)
            return r;
    }
    s->finished = 1;
    return 0;
}

void kms_archive_stream_free(kms_archive_stream *s)
{
    if (s == NULL)
        return;
    if (s->pool != NULL) {
        pthread_mutex_lock(&s->mu);
        s->stop = 1;
        /* Nothing queued is wanted any more. */
        s->submitted = s->work;
        pthread_cond_broadcast(&s->work_cv);
        pthread_mutex_unlock(&s->mu);
        for (unsigned i = 0; i < s->started; i++)
            pthread_join(s->pool[i], NULL);
        free(s->pool);
    }
    kms_archive_cipher_free(&s->inline_cipher);
    for (size_t i = 0; s->slots != NULL && i < s->n_slots; i++) {
        if (s->slots[i].in != NULL)
            OPENSSL_cleanse(s->slots[i].in, s->in_unit);
        if (s->slots[i].out != NULL)
            OPENSSL_cleanse(s->slots[i].out, s->out_unit);
        free(s->slots[i].in);
        free(s->slots[i].out);
    }
    free(s->slots);
    kms_secret_free(s->keys);
    free(s->header);
    free(s->context);
    EVP_CIPHER_free(s->aes);
    pthread_cond_destroy(&s->work_cv);
    pthread_cond_destroy(&s->done_cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
