/* The wiping protobuf-c allocator (pb_alloc.h). */
#include "base/pb_alloc.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "base/alloc.h"

/* A header before each block keeps its size so free can wipe all of it;
 * max_align_t keeps the payload aligned for any field type. */
struct block {
    size_t size;
    alignas(max_align_t) unsigned char data[];
};

/* Set when an allocation of this thread failed (kms_pb_wiping_take_failure). */
static _Thread_local int failed;

int kms_pb_wiping_take_failure(void)
{
    int f = failed;
    failed = 0;
    return f;
}

/* The test quarantine (pb_alloc.h): freed (wiped) blocks kept, not
 * returned to the heap, so a test can look at what free left in them. */
#define QUARANTINE_MAX 4096
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static struct block *q_blocks[QUARANTINE_MAX];
static size_t q_count;
static int q_on;

static int quarantine(struct block *b)
{
    if (!__atomic_load_n(&q_on, __ATOMIC_ACQUIRE))
        return 0;
    int kept = 0;
    pthread_mutex_lock(&q_lock);
    if (q_on && q_count < QUARANTINE_MAX) {
        q_blocks[q_count++] = b;
        kept = 1;
    }
    pthread_mutex_unlock(&q_lock);
    return kept;
}

void kms_pb_wiping_test_quarantine(int on)
{
    pthread_mutex_lock(&q_lock);
    __atomic_store_n(&q_on, on ? 1 : 0, __ATOMIC_RELEASE);
    if (!on) {
        for (size_t i = 0; i < q_count; i++)
            kms_free(q_blocks[i]);
        q_count = 0;
    }
    pthread_mutex_unlock(&q_lock);
}

size_t kms_pb_wiping_test_scan(const void *needle, size_t len, size_t *n_blocks)
{
    size_t hits = 0;
    pthread_mutex_lock(&q_lock);
    for (size_t i = 0; i < q_count; i++) {
        const struct block *b = q_blocks[i];
        if (len > 0 && b->size >= len && memmem(b->data, b->size, needle, len) != NULL)
            hits++;
    }
    if (n_blocks != NULL)
        *n_blocks = q_count;
    pthread_mutex_unlock(&q_lock);
    return hits;
}

void *kms_pb_wiping_alloc(size_t n)
{
    if (n > SIZE_MAX - sizeof(struct block)) {
        failed = 1;
        return NULL;
    }
    struct block *b = kms_malloc(sizeof(*b) + (n ? n : 1));
    if (b == NULL) {
        failed = 1;
        return NULL;
    }
    b->size = n;
    return b->data;
}

void kms_pb_wiping_free(void *p)
{
    if (p == NULL)
        return;
    struct block *b = (struct block *)((unsigned char *)p - offsetof(struct block, data));
    OPENSSL_cleanse(b->data, b->size);
    if (!quarantine(b))
        kms_free(b);
}

static void *pb_alloc(void *unused, size_t n)
{
    (void)unused;
    return kms_pb_wiping_alloc(n);
}

static void pb_free(void *unused, void *p)
{
    (void)unused;
    kms_pb_wiping_free(p);
}

static ProtobufCAllocator wiping = {.alloc = pb_alloc, .free = pb_free, .allocator_data = NULL};

ProtobufCAllocator *kms_pb_wiping_allocator(void)
{
    return &wiping;
}
