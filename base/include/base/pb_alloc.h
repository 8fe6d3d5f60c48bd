/* The wiping protobuf-c allocator: every block it hands out is wiped with
 * OPENSSL_cleanse when it is freed, so a message that carried plaintext
 * (an Encrypt request, a Decrypt reply) leaves nothing behind in the heap.
 * Used by kmsd for requests and by libkmsclient for replies.
 *
 * The blocks are ordinary heap memory (not locked): they hold bytes only
 * for the life of one call. Key material that outlives a call belongs in
 * a kms_secret. */
#ifndef KMS_BASE_PB_ALLOC_H
#define KMS_BASE_PB_ALLOC_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

/* The allocator, for protobuf_c_message_unpack and
 * protobuf_c_message_free_unpacked. One shared, stateless instance; never
 * modify it. */
ProtobufCAllocator *kms_pb_wiping_allocator(void);

/* The same blocks for direct use (packed message bytes): n bytes, aligned
 * for any type, NULL when out of memory (n == 0 gives a valid block).
 * kms_pb_wiping_free wipes all n bytes, then frees; NULL-safe. */
void *kms_pb_wiping_alloc(size_t n);
void kms_pb_wiping_free(void *p);

/* 1 if an allocation of this thread failed since the last call (which it
 * clears): protobuf-c's unpack returns NULL both for bytes that do not
 * parse and for an allocation that failed, and only the first is the
 * client's fault. */
int kms_pb_wiping_take_failure(void);

/* Test hooks. kms_pb_wiping_test_quarantine(1): blocks freed from now on
 * are wiped as always but kept (up to 4096) instead of being returned to
 * the heap; (0): releases them and stops keeping. kms_pb_wiping_test_scan
 * counts the kept blocks whose bytes contain needle (len bytes), and
 * their number into *n_blocks when given: the check that free wiped what
 * a request carried. */
void kms_pb_wiping_test_quarantine(int on);
size_t kms_pb_wiping_test_scan(const void *needle, size_t len, size_t *n_blocks);

#endif
