/* Secret memory: locked, undumpable pages, wiped in the free path. */
#include "base/alloc.h"
#include "base/secret.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/log.h"

/* Per-thread cache of single-page mappings that were wiped on free; they
 * stay locked and MADV_DONTDUMP, so reuse needs no syscall. The cache is
 * emptied (unmapped) when the thread exits. */
#define CACHE_SLOTS 8

struct page_cache {
    void *pages[CACHE_SLOTS];
    int count;
};

static _Thread_local struct page_cache cache;
static pthread_key_t cache_exit_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static size_t page_size;

/* mlock through the raw system call: AddressSanitizer replaces mlock() with a
 * no-op, and a sanitizer build must lock secrets as the release build does. */
static int lock_pages(void *p, size_t len)
{
    return (int)syscall(SYS_mlock, p, len);
}

static void unmap_locked(void *p, size_t len)
{
    syscall(SYS_munlock, p, len);
    munmap(p, len);
}

static void cache_drain(void *unused)
{
    (void)unused;
    for (int i = 0; i < cache.count; i++)
        unmap_locked(cache.pages[i], page_size);
    cache.count = 0;
}

static void cache_init(void)
{
    long ps = sysconf(_SC_PAGESIZE);
    page_size = ps > 0 ? (size_t)ps : 4096;
    if (pthread_key_create(&cache_exit_key, cache_drain) != 0)
        abort(); /* cannot happen at start-up; failing open would leak pages */
}

static void *map_locked(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    if (madvise(p, len, MADV_DONTDUMP) != 0 || lock_pages(p, len) != 0) {
        munmap(p, len);
        return NULL;
    }
    return p;
}

int kms_secret_new(size_t len, kms_secret **out)
{
    if (len == 0 || len > KMS_SECRET_MAX || out == NULL)
        return kms_error_set(KMS_EINVAL, "secret length %zu out of range", len);
    pthread_once(&cache_once, cache_init);

    kms_secret *s = kms_calloc(1, sizeof(*s));
    if (s == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    size_t map_len = (len + page_size - 1) / page_size * page_size;
    void *p = NULL;
    if (map_len == page_size && cache.count > 0) {
        p = cache.pages[--cache.count];
    } else {
        p = map_locked(map_len);
        if (p == NULL) {
            kms_free(s);
            return kms_error_set(
                KMS_ENOMEM, "cannot lock %zu bytes of secret memory (RLIMIT_MEMLOCK?)", map_len);
        }
        if (map_len == page_size) /* register the thread-exit drain once */
            pthread_setspecific(cache_exit_key, &cache);
    }
    s->data = p;
    s->len = len;
    s->map_len = map_len;
    *out = s;
    return KMS_OK;
}

int kms_secret_random(size_t len, kms_secret **out)
{
    kms_secret *s = NULL;
    KMS_GUARD(kms_secret_new(len, &s));
    if (RAND_bytes(s->data, (int)len) != 1) {
        kms_secret_free(s);
        return kms_error_set(KMS_EUNAVAIL, "OpenSSL DRBG failed");
    }
    *out = s;
    return KMS_OK;
}

void kms_secret_truncate(kms_secret *s, size_t n)
{
    if (s == NULL || n >= s->len)
        return;
    OPENSSL_cleanse(s->data + n, s->len - n);
    s->len = n;
}

void kms_secret_free(kms_secret *s)
{
    if (s == NULL)
        return;
    /* The whole mapping, not just len: truncate may have shortened it. */
    OPENSSL_cleanse(s->data, s->map_len);
    if (s->map_len == page_size && cache.count < CACHE_SLOTS)
        cache.pages[cache.count++] = s->data;
    else
        unmap_locked(s->data, s->map_len);
    OPENSSL_cleanse(s, sizeof(*s));
    kms_free(s);
}
