/* The wiping protobuf-c allocator (pb_alloc.h). */
#include "base/pb_alloc.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>

#include <openssl/crypto.h>

/* A header before each block keeps its size so free can wipe all of it;
 * max_align_t keeps the payload aligned for any field type. */
struct block {
    size_t size;
    alignas(max_align_t) unsigned char data[];
};

void *kms_pb_wiping_alloc(size_t n)
{
    if (n > SIZE_MAX - sizeof(struct block))
        return NULL;
    struct block *b = malloc(sizeof(*b) + (n ? n : 1));
    if (b == NULL)
        return NULL;
    b->size = n;
    return b->data;
}

void kms_pb_wiping_free(void *p)
{
    if (p == NULL)
        return;
    struct block *b = (struct block *)((unsigned char *)p - offsetof(struct block, data));
    OPENSSL_cleanse(b->data, b->size);
    free(b);
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
