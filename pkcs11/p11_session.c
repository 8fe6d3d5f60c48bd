/* The session pool and its healing after session loss.
 *
 * Sessions are handed out one per in-flight operation. When an operation
 * sees a session-loss code (kms_p11_rv_session_lost), its thread calls
 * kms_p11_pool_heal: the pool stops handing out sessions, waits until every
 * session is back, closes them all, opens new ones and logs in again, then
 * bumps the generation so object handles are looked up again. If that
 * fails the pool is "broken": callers get KMS_EUNAVAIL at once until a
 * back-off (50 ms doubling to 5 s) allows the next attempt, so a missing
 * device is not hammered. If the token refuses the PIN while healing (it
 * was changed or locked under us), the pool is "dead": no further login is
 * tried, because each attempt would count against the token's PIN retry
 * counter and could lock it; kmsd must be restarted with the right PIN.
 *
 * The healer waits until every session is back before closing them: a
 * module may free a session's state in C_CloseAllSessions while another
 * thread is still inside a call on it.
 *
 * If sessions cannot be re-opened because the module itself is stuck
 * (C_OpenSession or C_Login says CKR_SESSION_HANDLE_INVALID,
 * CKR_SESSION_CLOSED, CKR_DEVICE_ERROR or CKR_CRYPTOKI_NOT_INITIALIZED; not
 * for an absent token or a removed device), the healer finalizes and
 * initializes the module again and retries once: no session is in use then, and object handles from
 * before are looked up again under the new generation. */
#include <openssl/crypto.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "p11_internal.h"

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 5000

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* 1 if C_OpenSession or C_Login failing with rv means the module itself is
 * stuck (it calls a session invalid that it has not even opened, says the
 * device erred, or forgot it was initialized), not that the token is away:
 * only then does re-initializing the module help. */
static int module_stuck(CK_RV rv)
{
    return rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED || rv == CKR_DEVICE_ERROR ||
           rv == CKR_CRYPTOKI_NOT_INITIALIZED;
}

/* Opens `size` sessions and logs in. Caller holds the pool exclusively.
 * *failed_rv (when given) is the code that made it fail. */
static int open_sessions(struct p11 *p, CK_RV *failed_rv)
{
    struct p11_pool *pool = &p->pool;
    for (unsigned i = 0; i < pool->size; i++) {
        CK_RV rv = p->f->C_OpenSession(p->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
                                       &pool->sessions[i]);
        if (rv != CKR_OK) {
            if (failed_rv != NULL)
                *failed_rv = rv;
            if (i > 0)
                p->f->C_CloseAllSessions(p->slot);
            return kms_error_set(kms_p11_rv_session_lost(rv) ? KMS_EUNAVAIL
                                                             : kms_p11_rv_to_error(rv),
                                 "pkcs11: C_OpenSession: %s", kms_p11_rv_name(rv));
        }
    }
    /* One login covers every session of the process. */
    CK_RV rv = p->f->C_Login(pool->sessions[0], CKU_USER, p->pin->data, p->pin->len);
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
        if (failed_rv != NULL)
            *failed_rv = rv;
        p->f->C_CloseAllSessions(p->slot);
        int err = kms_p11_rv_to_error(rv) == KMS_EDENIED ? KMS_EDENIED : KMS_EUNAVAIL;
        return kms_error_set(err, "pkcs11: C_Login on token \"%s\": %s", p->label,
                             kms_p11_rv_name(rv));
    }
    pool->nfree = pool->size;
    for (unsigned i = 0; i < pool->size; i++)
        pool->free_idx[i] = (int)i;
    return KMS_OK;
}

int kms_p11_pool_open(struct p11 *p, unsigned size)
{
    struct p11_pool *pool = &p->pool;
    if (size == 0)
        size = 4;
    if (size > P11_POOL_MAX)
        size = P11_POOL_MAX;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv, NULL);
    pool->size = size;
    pool->backoff_ms = BACKOFF_MIN_MS;
    return open_sessions(p, NULL);
}

int kms_p11_pool_acquire(struct p11 *p, CK_SESSION_HANDLE *s, int *idx, unsigned *gen)
{
    struct p11_pool *pool = &p->pool;
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        if (pool->dead) {
            pthread_mutex_unlock(&pool->mu);
            return kms_error_set(KMS_EUNAVAIL,
                                 "pkcs11: token \"%s\" refused the PIN; restart with the right PIN",
                                 p->label);
        }
        if (pool->healing) {
            pthread_cond_wait(&pool->cv, &pool->mu);
            continue;
        }
        if (pool->broken) {
            unsigned seen = pool->gen;
            if (now_ms() < pool->retry_at_ms) {
                pthread_mutex_unlock(&pool->mu);
                return kms_error_set(KMS_EUNAVAIL, "pkcs11: token \"%s\" unavailable; retrying",
                                     p->label);
            }
            pthread_mutex_unlock(&pool->mu);
            int r = kms_p11_pool_heal(p, seen);
            if (r != 0)
                return r;
            pthread_mutex_lock(&pool->mu);
            continue;
        }
        if (pool->nfree == 0) {
            pthread_cond_wait(&pool->cv, &pool->mu);
            continue;
        }
        break;
    }
    int i = pool->free_idx[--pool->nfree];
    *idx = i;
    *s = pool->sessions[i];
    *gen = pool->gen;
    pool->in_use++;
    pthread_mutex_unlock(&pool->mu);
    return KMS_OK;
}

void kms_p11_pool_release(struct p11 *p, int idx)
{
    struct p11_pool *pool = &p->pool;
    pthread_mutex_lock(&pool->mu);
    pool->free_idx[pool->nfree++] = idx;
    pool->in_use--;
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
}

int kms_p11_pool_heal(struct p11 *p, unsigned seen_gen)
{
    struct p11_pool *pool = &p->pool;
    pthread_mutex_lock(&pool->mu);
    while (pool->healing)
        pthread_cond_wait(&pool->cv, &pool->mu);
    if (pool->dead) {
        pthread_mutex_unlock(&pool->mu);
        return kms_error_set(KMS_EUNAVAIL, "pkcs11: token \"%s\" refused the PIN", p->label);
    }
    if (pool->gen != seen_gen && !pool->broken) {
        pthread_mutex_unlock(&pool->mu); /* another thread healed already */
        return KMS_OK;
    }
    if (pool->broken && now_ms() < pool->retry_at_ms) {
        pthread_mutex_unlock(&pool->mu);
        return kms_error_set(KMS_EUNAVAIL, "pkcs11: token \"%s\" unavailable; retrying", p->label);
    }
    pool->healing = 1;
    while (pool->in_use > 0) /* every session back in the pool */
        pthread_cond_wait(&pool->cv, &pool->mu);
    pthread_mutex_unlock(&pool->mu);

    kms_log_warn("pkcs11: sessions on token \"%s\" lost; re-opening", p->label);
    p->f->C_CloseAllSessions(p->slot); /* may fail: they may be gone already */
    CK_RV failed = CKR_OK;
    int r = open_sessions(p, &failed);
    if (r == KMS_EUNAVAIL && module_stuck(failed) && p->finalize_on_close) {
        /* Some modules, after CKR_DEVICE_ERROR, fail every later call with
         * CKR_SESSION_HANDLE_INVALID (C_OpenSession included) until they
         * are finalized and initialized again: do that, then retry once.
         * Only a module we initialized is ours to finalize. */
        kms_log_warn("pkcs11: cannot re-open sessions on token \"%s\" (%s); re-initializing "
                     "the module",
                     p->label, kms_error_detail());
        r = kms_p11_module_reinit(p);
        if (r == 0)
            r = open_sessions(p, NULL);
    }

    pthread_mutex_lock(&pool->mu);
    pool->gen++;
    if (r == 0) {
        pool->broken = 0;
        pool->backoff_ms = BACKOFF_MIN_MS;
        kms_log_info("pkcs11: token \"%s\" sessions restored", p->label);
    } else if (r == KMS_EDENIED) {
        pool->dead = 1;
        pool->nfree = 0;
        kms_log_error("pkcs11: token \"%s\" refused the PIN while re-opening sessions (%s); "
                      "no further login will be tried",
                      p->label, kms_error_detail());
        r = KMS_EUNAVAIL;
    } else {
        pool->broken = 1;
        pool->nfree = 0; /* no usable sessions */
        pool->retry_at_ms = now_ms() + pool->backoff_ms;
        kms_log_error("pkcs11: cannot restore sessions (%s); next try in %llu ms",
                      kms_error_detail(), (unsigned long long)pool->backoff_ms);
        pool->backoff_ms =
            pool->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : pool->backoff_ms * 2;
        r = KMS_EUNAVAIL;
    }
    pool->healing = 0;
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    return r;
}

void kms_p11_pool_close(struct p11 *p)
{
    struct p11_pool *pool = &p->pool;
    if (pool->size == 0)
        return;
    if (p->f)
        p->f->C_CloseAllSessions(p->slot);
    pthread_cond_destroy(&pool->cv);
    pthread_mutex_destroy(&pool->mu);
    pool->size = 0;
}
