/* The audit log writer: group commit onto hash-chained files (contract in
 * audit_log.h, format in audit_record.h). */
#include "kmsd/audit/audit_log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "base/log.h"
#include "kmsd/metrics/metrics.h"

#define NAME_PREFIX "audit-"
#define NAME_SUFFIX ".jsonl"
#define SEQ_DIGITS 20

/* One caller waiting for its record. Lives on the caller's stack. */
struct waiter {
    int done, result;
    struct waiter *next;
};

/* Records encoded but not yet written. */
struct batch {
    char *buf;
    size_t len, cap;
    uint64_t first_seq, last_seq;
    uint8_t end_hash[KMS_AUDIT_HASH_LEN];
    struct waiter *head, *tail; /* a checkpoint may have no waiter */
    uint64_t count;
    int sealed;   /* ends its file: appenders wait until the writer took it */
    int new_file; /* its first record starts a new file */
};

struct kms_audit {
    char *dir;
    uint64_t max_bytes;
    unsigned max_age;
    char instance[17];
    kms_audit_sign_fn sign; /* NULL: no checkpoints */
    void *sign_ctx;
    char log_id[KMS_AUDIT_LOG_ID_HEX + 1];
    unsigned cp_records, cp_seconds;

    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    pthread_t writer;
    int writer_up, stopping;

    /* under mu: the chain as encoded so far, and the queue */
    uint64_t next_seq;
    uint8_t tail_hash[KMS_AUDIT_HASH_LEN];
    struct batch q;
    /* under mu: the chain as durable */
    uint64_t durable_seq;
    uint8_t durable_hash[KMS_AUDIT_HASH_LEN];
    int ready;
    uint64_t records, syncs;
    /* under mu: what the files will hold once the queue is written */
    uint64_t plan_size;   /* bytes in the current file */
    int64_t plan_opened;  /* when its first record was queued (monotonic s) */
    uint64_t since_cp;    /* records queued since the last checkpoint */
    int64_t uncovered_ms; /* when the first of those was queued (monotonic ms) */
    int64_t cp_retry_ms;  /* after a failed signature: not before this */
    int sign_failed;      /* logged once */

    /* the writer thread's own */
    int fd;
    uint64_t file_size;
};

static int64_t now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static int64_t now_mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec;
}

static int64_t now_mono_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static int64_t now_mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* "audit-%020llu.jsonl" without printf into a path we then trust. */
static int file_path(const kms_audit *a, uint64_t seq, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/" NAME_PREFIX "%020llu" NAME_SUFFIX, a->dir,
                     (unsigned long long)seq);
    if (n <= 0 || (size_t)n >= cap)
        return kms_error_set(KMS_EINVAL, "audit: directory path too long");
    return KMS_OK;
}

/* The first sequence number a file name stands for; -1 if it is not one
 * of ours. */
static int name_seq(const char *name, uint64_t *seq)
{
    size_t pl = strlen(NAME_PREFIX), sl = strlen(NAME_SUFFIX);
    if (strlen(name) != pl + SEQ_DIGITS + sl || strncmp(name, NAME_PREFIX, pl) != 0 ||
        strcmp(name + pl + SEQ_DIGITS, NAME_SUFFIX) != 0)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < SEQ_DIGITS; i++) {
        char c = name[pl + i];
        if (c < '0' || c > '9' || v > (UINT64_MAX - (uint64_t)(c - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(c - '0');
    }
    *seq = v;
    return 0;
}

static void sync_dir(const kms_audit *a)
{
    int dfd = open(a->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
}

/* The newest file's first seq, or 0 with *found = 0. */
static int newest_file(const kms_audit *a, uint64_t *seq, int *found)
{
    DIR *d = opendir(a->dir);
    if (d == NULL)
        return kms_error_set(KMS_EUNAVAIL, "audit: cannot open %s: %s", a->dir, strerror(errno));
    struct dirent *e;
    *found = 0;
    *seq = 0;
    while ((e = readdir(d)) != NULL) {
        uint64_t s;
        if (name_seq(e->d_name, &s) == 0 && (!*found || s > *seq)) {
            *seq = s;
            *found = 1;
        }
    }
    closedir(d);
    return KMS_OK;
}

/* Reads the chain position at the end of path: the last complete line's
 * seq and hash. A partial last line is cut off (never acknowledged). An
 * empty file sets *empty. */
static int read_tail(const char *path, uint64_t *seq, uint8_t hash[KMS_AUDIT_HASH_LEN], int *empty)
{
    char buf[2 * KMS_AUDIT_LINE_MAX + 1];
    kms_audit_parsed *p = NULL;
    struct stat st;
    int r = KMS_OK;
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return kms_error_set(KMS_EUNAVAIL, "audit: cannot open %s: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        r = kms_error_set(KMS_ESTORE, "audit: %s is not a regular file", path);
        goto out;
    }
    size_t take = (size_t)st.st_size < sizeof(buf) - 1 ? (size_t)st.st_size : sizeof(buf) - 1;
    off_t base = st.st_size - (off_t)take;
    if (pread(fd, buf, take, base) != (ssize_t)take) {
        r = kms_error_set(KMS_EUNAVAIL, "audit: cannot read %s", path);
        goto out;
    }
    size_t end = take;
    if (end > 0 && buf[end - 1] != '\n') {
        while (end > 0 && buf[end - 1] != '\n')
            end--;
        if (end == 0 && base > 0) {
            r = kms_error_set(KMS_ESTORE, "audit: %s ends with an over-long line", path);
            goto out;
        }
        kms_log_warn("audit: %s ends with a partial record (never acknowledged); cut off", path);
        if (ftruncate(fd, base + (off_t)end) != 0 || fdatasync(fd) != 0) {
            r = kms_error_set(KMS_EUNAVAIL, "audit: cannot cut %s: %s", path, strerror(errno));
            goto out;
        }
    }
    if (end == 0) {
        *empty = 1;
        goto out;
    }
    size_t start = end - 1;
    while (start > 0 && buf[start - 1] != '\n')
        start--;
    if (start == 0 && base > 0) {
        r = kms_error_set(KMS_ESTORE, "audit: %s ends with an over-long line", path);
        goto out;
    }
    if ((p = malloc(sizeof(*p))) == NULL) {
        r = kms_error_set(KMS_ENOMEM, "out of memory");
        goto out;
    }
    if (kms_audit_rec_parse(buf + start, end - start, p) != 0) {
        r = kms_error_set(KMS_ESTORE,
                          "audit: the last record of %s does not parse: look at the log before "
                          "kmsd writes after it",
                          path);
        goto out;
    }
    if ((r = kms_audit_chain_next(p->rec.prev, buf + start, end - start, hash)) != 0)
        goto out;
    *seq = p->rec.seq;
    *empty = 0;
out:
    free(p);
    close(fd);
    return r;
}

/* Finds where the chain stands: the newest non-empty file's last record. */
static int recover_chain(kms_audit *a)
{
    char path[4096];
    for (;;) {
        uint64_t first = 0;
        int found = 0, empty = 0, r;
        if ((r = newest_file(a, &first, &found)) != 0)
            return r;
        if (!found) {
            a->durable_seq = 0;
            memset(a->durable_hash, 0, sizeof(a->durable_hash));
            return KMS_OK;
        }
        if ((r = file_path(a, first, path, sizeof(path))) != 0 ||
            (r = read_tail(path, &a->durable_seq, a->durable_hash, &empty)) != 0)
            return r;
        if (!empty)
            return KMS_OK;
        /* Created for a batch that was never written: nothing to keep. */
        if (unlink(path) != 0)
            return kms_error_set(KMS_EUNAVAIL, "audit: cannot remove empty %s", path);
    }
}

/* ---- the writer thread ------------------------------------------------------------- */

static int open_file(kms_audit *a, uint64_t first_seq)
{
    char path[4096];
    struct stat st;
    int r;
    if ((r = file_path(a, first_seq, path, sizeof(path))) != 0)
        return r;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0)
        return kms_error_set(KMS_EUNAVAIL, "audit: cannot create %s: %s", path, strerror(errno));
    /* A file named after a record not yet durable holds only what a failed
     * batch left: nothing acknowledged. */
    if (fstat(fd, &st) != 0 || (st.st_size > 0 && ftruncate(fd, 0) != 0)) {
        close(fd);
        return kms_error_set(KMS_EUNAVAIL, "audit: cannot reset %s: %s", path, strerror(errno));
    }
    sync_dir(a);
    a->fd = fd;
    a->file_size = 0;
    return KMS_OK;
}

static int write_batch(kms_audit *a, const struct batch *b)
{
    struct stat st;
    int r;
    /* Rotation was decided when the records were queued (the file before
     * ended with its checkpoint). */
    if (a->fd >= 0 && b->new_file) {
        close(a->fd);
        a->fd = -1;
    }
    if (a->fd < 0 && (r = open_file(a, b->first_seq)) != 0)
        return r;
    size_t off = 0;
    while (off < b->len) {
        ssize_t n = write(a->fd, b->buf + off, b->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            r = kms_error_set(KMS_EUNAVAIL, "audit: write failed: %s",
                              n < 0 ? strerror(errno) : "no progress");
            goto fail;
        }
        off += (size_t)n;
    }
    if (fdatasync(a->fd) != 0) {
        r = kms_error_set(KMS_EUNAVAIL, "audit: fdatasync failed: %s", strerror(errno));
        goto fail;
    }
    if (fstat(a->fd, &st) != 0 || st.st_nlink == 0) {
        r = kms_error_set(KMS_EUNAVAIL, "audit: the log file was removed");
        goto fail;
    }
    a->file_size += b->len;
    return KMS_OK;
fail:
    /* Best effort: leave no partial record behind; a new file comes next. */
    if (ftruncate(a->fd, (off_t)a->file_size) == 0)
        (void)fdatasync(a->fd);
    close(a->fd);
    a->fd = -1;
    return r;
}

static void finish(struct waiter *w, int result)
{
    for (; w != NULL; w = w->next) {
        w->result = result;
        w->done = 1;
    }
}

static int checkpoint_locked(kms_audit *a, struct waiter *w);

/* Waits for work; a quiet log gets its checkpoint checkpoint_seconds after
 * the first record no checkpoint covers. Under mu. */
static void wait_for_work(kms_audit *a)
{
    while (a->q.count == 0 && !a->stopping) {
        if (a->sign == NULL || a->since_cp == 0) {
            pthread_cond_wait(&a->work_cv, &a->mu);
            continue;
        }
        int64_t due = a->uncovered_ms + (int64_t)a->cp_seconds * 1000;
        if (due < a->cp_retry_ms)
            due = a->cp_retry_ms;
        if (now_mono_ms() >= due) {
            (void)checkpoint_locked(a, NULL); /* a failure is logged and retried later */
            kms_error_clear();
            continue;
        }
        struct timespec ts = {.tv_sec = (time_t)(due / 1000),
                              .tv_nsec = (long)(due % 1000) * 1000000};
        (void)pthread_cond_timedwait(&a->work_cv, &a->mu, &ts);
    }
}

static void *writer_loop(void *arg)
{
    kms_audit *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        wait_for_work(a);
        if (a->q.count == 0)
            break;
        struct batch b = a->q;
        memset(&a->q, 0, sizeof(a->q));
        /* appenders waiting for a sealed batch to be taken */
        pthread_cond_broadcast(&a->done_cv);
        pthread_mutex_unlock(&a->mu);

        int64_t t0 = now_mono_us();
        int r = write_batch(a, &b);
        kms_metrics_audit_batch(b.count, (uint64_t)(now_mono_us() - t0), r == 0);

        pthread_mutex_lock(&a->mu);
        a->syncs++;
        if (r == 0) {
            a->durable_seq = b.last_seq;
            memcpy(a->durable_hash, b.end_hash, KMS_AUDIT_HASH_LEN);
            a->records += b.count;
            finish(b.head, KMS_OK);
            if (!a->ready)
                kms_log_info("audit: the log is writable again (seq %llu)",
                             (unsigned long long)b.last_seq);
            a->ready = 1;
        } else {
            if (a->ready)
                kms_log_error("%s: calls fail UNAVAILABLE until it is writable",
                              kms_error_detail());
            a->ready = 0;
            finish(b.head, KMS_EUNAVAIL);
            /* What is queued chains on the lost batch: it is lost too. */
            finish(a->q.head, KMS_EUNAVAIL);
            free(a->q.buf);
            memset(&a->q, 0, sizeof(a->q));
            a->next_seq = a->durable_seq + 1;
            memcpy(a->tail_hash, a->durable_hash, KMS_AUDIT_HASH_LEN);
            /* The next batch starts a new file; what is durable may not be
             * covered by a checkpoint any more. */
            a->plan_size = 0;
            if (a->durable_seq > 0 && a->since_cp == 0)
                a->uncovered_ms = now_mono_ms();
            a->since_cp = a->durable_seq > 0;
        }
        pthread_cond_broadcast(&a->done_cv);
        free(b.buf);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* ---- API ---------------------------------------------------------------------------- */

int kms_audit_open(const kms_audit_config *cfg, kms_audit **out)
{
    uint8_t id[8];
    int r;
    kms_audit *a = calloc(1, sizeof(*a));
    if (a == NULL || (a->dir = strdup(cfg->dir)) == NULL) {
        free(a);
        return kms_error_set(KMS_ENOMEM, "out of memory");
    }
    a->fd = -1;
    a->max_bytes = cfg->max_bytes ? cfg->max_bytes : KMS_AUDIT_DEFAULT_MAX_BYTES;
    a->max_age = cfg->max_age ? cfg->max_age : KMS_AUDIT_DEFAULT_MAX_AGE;
    a->cp_records =
        cfg->checkpoint_records ? cfg->checkpoint_records : KMS_AUDIT_DEFAULT_CHECKPOINT_RECORDS;
    a->cp_seconds =
        cfg->checkpoint_seconds ? cfg->checkpoint_seconds : KMS_AUDIT_DEFAULT_CHECKPOINT_SECONDS;
    a->ready = 1;
    pthread_mutex_init(&a->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the checkpoint timer */
    pthread_cond_init(&a->work_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&a->done_cv, NULL);
    if (cfg->sign != NULL) {
        if (cfg->log_id == NULL || strlen(cfg->log_id) != KMS_AUDIT_LOG_ID_HEX) {
            r = kms_error_set(KMS_EINVAL, "audit: checkpoints need the log id");
            goto fail;
        }
        a->sign = cfg->sign;
        a->sign_ctx = cfg->sign_ctx;
        memcpy(a->log_id, cfg->log_id, KMS_AUDIT_LOG_ID_HEX + 1);
    }
    if (RAND_bytes(id, sizeof(id)) != 1) {
        r = kms_error_set(KMS_EINTERNAL, "audit: no randomness for the instance id");
        goto fail;
    }
    kms_audit_hex(id, sizeof(id), a->instance);
    if (mkdir(a->dir, 0700) != 0 && errno != EEXIST) {
        r = kms_error_set(KMS_EUNAVAIL, "audit: cannot create %s: %s", a->dir, strerror(errno));
        goto fail;
    }
    if ((r = recover_chain(a)) != 0)
        goto fail;
    a->next_seq = a->durable_seq + 1;
    memcpy(a->tail_hash, a->durable_hash, KMS_AUDIT_HASH_LEN);
    if (pthread_create(&a->writer, NULL, writer_loop, a) != 0) {
        r = kms_error_set(KMS_EINTERNAL, "audit: cannot start the writer thread");
        goto fail;
    }
    a->writer_up = 1;
    *out = a;
    return KMS_OK;
fail:
    kms_audit_close(a);
    return r;
}

static int queue_line(struct batch *q, const char *line, size_t len)
{
    if (q->cap - q->len < len) {
        size_t cap = q->cap ? q->cap * 2 : 16384;
        while (cap - q->len < len)
            cap *= 2;
        char *p = realloc(q->buf, cap);
        if (p == NULL)
            return kms_error_set(KMS_ENOMEM, "out of memory");
        q->buf = p;
        q->cap = cap;
    }
    memcpy(q->buf + q->len, line, len);
    q->len += len;
    return KMS_OK;
}

/* Fixes rec's place in the chain: seq, prev, time, instance. Under mu. */
static void stamp_locked(kms_audit *a, kms_audit_rec *rec)
{
    rec->instance = a->instance;
    rec->seq = a->next_seq;
    memcpy(rec->prev, a->tail_hash, KMS_AUDIT_HASH_LEN);
    rec->time_us = now_us();
}

/* Queues the line of a stamped record, with its waiter (NULL: nobody waits
 * for it). Under mu. */
static int queue_locked(kms_audit *a, const kms_audit_rec *rec, const char *line, size_t len,
                        struct waiter *w)
{
    uint8_t next_hash[KMS_AUDIT_HASH_LEN];
    KMS_GUARD(kms_audit_chain_next(rec->prev, line, len, next_hash));
    KMS_GUARD(queue_line(&a->q, line, len));
    if (a->q.count == 0)
        a->q.first_seq = rec->seq;
    if (w != NULL) {
        if (a->q.head == NULL)
            a->q.head = w;
        else
            a->q.tail->next = w;
        a->q.tail = w;
    }
    a->q.last_seq = rec->seq;
    a->q.count++;
    memcpy(a->q.end_hash, next_hash, KMS_AUDIT_HASH_LEN);
    memcpy(a->tail_hash, next_hash, KMS_AUDIT_HASH_LEN);
    a->next_seq++;
    if (a->plan_size == 0)
        a->plan_opened = now_mono();
    a->plan_size += len;
    if (strcmp(rec->type, KMS_AUDIT_CHECKPOINT_TYPE) == 0) {
        a->since_cp = 0;
    } else if (a->since_cp++ == 0) {
        a->uncovered_ms = now_mono_ms();
    }
    pthread_cond_signal(&a->work_cv);
    return KMS_OK;
}

/* Signs and queues a checkpoint if records were queued since the last one.
 * A failed signature is logged once and not tried again for a second. The
 * HSM call runs under mu: the checkpoint's place in the chain is fixed
 * before it is signed. Under mu. */
static int checkpoint_locked(kms_audit *a, struct waiter *w)
{
    static const char none[] = "";
    char detail[KMS_AUDIT_FIELD_MAX + 1], line[KMS_AUDIT_CHECKPOINT_LINE_MAX];
    size_t len = 0;
    if (a->sign == NULL || a->since_cp == 0)
        return KMS_OK;
    if (now_mono_ms() < a->cp_retry_ms)
        return kms_error_set(KMS_EUNAVAIL, "audit: checkpoint signing is backing off");
    kms_audit_rec rec = {.type = KMS_AUDIT_CHECKPOINT_TYPE,
                         .identity = none,
                         .peer = none,
                         .method = none,
                         .key = none,
                         .action = none,
                         .context_hmac = none,
                         .error = none,
                         .detail = detail};
    stamp_locked(a, &rec);
    int r =
        kms_audit_checkpoint_sign(&rec, a->log_id, a->sign, a->sign_ctx, detail, sizeof(detail));
    if (r == 0)
        r = kms_audit_rec_encode(&rec, line, sizeof(line), &len);
    if (r == 0)
        r = queue_locked(a, &rec, line, len, w);
    if (r != 0) {
        if (!a->sign_failed)
            kms_log_error("audit: a checkpoint could not be signed: %s; the records stay durable "
                          "but unsigned until one is",
                          kms_error_detail());
        a->sign_failed = 1;
        a->cp_retry_ms = now_mono_ms() + 1000;
        return r;
    }
    if (a->sign_failed)
        kms_log_info("audit: checkpoints are signed again (seq %llu)", (unsigned long long)rec.seq);
    a->sign_failed = 0;
    return KMS_OK;
}

/* The current file must end before a line of len bytes: it would grow past
 * max_bytes (with room kept for its checkpoint) or it is max_age old. */
static int rotation_due(const kms_audit *a, size_t len)
{
    uint64_t reserve = a->sign != NULL ? KMS_AUDIT_CHECKPOINT_LINE_MAX : 0;
    return a->plan_size > 0 && (a->plan_size + len + reserve > a->max_bytes ||
                                now_mono() - a->plan_opened >= (int64_t)a->max_age);
}

int kms_audit_append(kms_audit *a, const kms_audit_rec *in)
{
    char line[KMS_AUDIT_LINE_MAX];
    size_t len = 0;
    struct waiter w = {0};
    kms_audit_rec rec = *in;
    int r;

    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (a->q.sealed && !a->stopping)
            pthread_cond_wait(&a->done_cv, &a->mu);
        if (a->stopping) {
            pthread_mutex_unlock(&a->mu);
            return kms_error_set(KMS_EUNAVAIL, "audit: the log is closed");
        }
        stamp_locked(a, &rec);
        if ((r = kms_audit_rec_encode(&rec, line, sizeof(line), &len)) != 0) {
            pthread_mutex_unlock(&a->mu);
            return r;
        }
        if (!rotation_due(a, len))
            break;
        /* The file ends with its checkpoint (unsigned records if signing
         * fails: logged) and is closed once what is queued is durable; this
         * record starts the next file. */
        (void)checkpoint_locked(a, NULL);
        kms_error_clear();
        if (a->q.count > 0) {
            a->q.sealed = 1;
            pthread_cond_signal(&a->work_cv);
            continue;
        }
        a->q.new_file = 1;
        a->plan_size = 0;
        break;
    }
    if ((r = queue_locked(a, &rec, line, len, &w)) != 0) {
        pthread_mutex_unlock(&a->mu);
        return r;
    }
    if (a->since_cp >= a->cp_records) {
        (void)checkpoint_locked(a, NULL);
        kms_error_clear();
    }
    while (!w.done)
        pthread_cond_wait(&a->done_cv, &a->mu);
    pthread_mutex_unlock(&a->mu);
    if (w.result != 0)
        return kms_error_set(KMS_EUNAVAIL, "audit: the record could not be made durable");
    return KMS_OK;
}

int kms_audit_checkpoint_now(kms_audit *a)
{
    struct waiter w = {0};
    pthread_mutex_lock(&a->mu);
    while (a->q.sealed && !a->stopping)
        pthread_cond_wait(&a->done_cv, &a->mu);
    if (a->stopping) {
        pthread_mutex_unlock(&a->mu);
        return kms_error_set(KMS_EUNAVAIL, "audit: the log is closed");
    }
    if (a->sign == NULL || a->since_cp == 0) {
        pthread_mutex_unlock(&a->mu);
        return KMS_OK;
    }
    a->cp_retry_ms = 0; /* asked for: no back-off */
    int r = checkpoint_locked(a, &w);
    while (r == 0 && !w.done)
        pthread_cond_wait(&a->done_cv, &a->mu);
    pthread_mutex_unlock(&a->mu);
    if (r != 0)
        return r;
    if (w.result != 0)
        return kms_error_set(KMS_EUNAVAIL, "audit: the checkpoint could not be made durable");
    return KMS_OK;
}

int kms_audit_ready(kms_audit *a)
{
    pthread_mutex_lock(&a->mu);
    int ready = a->ready;
    pthread_mutex_unlock(&a->mu);
    return ready;
}

const char *kms_audit_instance(const kms_audit *a)
{
    return a->instance;
}

uint64_t kms_audit_durable_seq(kms_audit *a)
{
    pthread_mutex_lock(&a->mu);
    uint64_t seq = a->durable_seq;
    pthread_mutex_unlock(&a->mu);
    return seq;
}

const char *kms_audit_dir(const kms_audit *a)
{
    return a->dir;
}

void kms_audit_stats(kms_audit *a, uint64_t *records, uint64_t *syncs)
{
    pthread_mutex_lock(&a->mu);
    *records = a->records;
    *syncs = a->syncs;
    pthread_mutex_unlock(&a->mu);
}

void kms_audit_close(kms_audit *a)
{
    if (a == NULL)
        return;
    if (a->writer_up) {
        pthread_mutex_lock(&a->mu);
        /* The log ends with a checkpoint (a failure is logged). */
        a->cp_retry_ms = 0;
        if (!a->stopping && checkpoint_locked(a, NULL) != 0)
            kms_error_clear();
        a->stopping = 1;
        pthread_cond_signal(&a->work_cv);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->writer, NULL);
    }
    if (a->fd >= 0)
        close(a->fd);
    free(a->q.buf);
    pthread_cond_destroy(&a->work_cv);
    pthread_cond_destroy(&a->done_cv);
    pthread_mutex_destroy(&a->mu);
    free(a->dir);
    free(a);
}
