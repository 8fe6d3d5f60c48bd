/* The one allocation entry point of kmsd's request paths (the RPC wrapper,
 * the handlers, the keyring, the wiping protobuf-c allocator, kms_secret's
 * bookkeeping). They behave as malloc/calloc/realloc/free; going through
 * one place lets the allocation-failure tests fail every allocation of a
 * request in turn, as curl's "torture" tests do. Third-party allocations
 * (gRPC, OpenSSL, SQLite, protobuf-c's own) are not counted.
 *
 * Unarmed, the failure switch costs one thread-local load and compare. */
#ifndef KMS_BASE_ALLOC_H
#define KMS_BASE_ALLOC_H

#include <stddef.h>

/* malloc / calloc / realloc / free. kms_calloc and kms_reallocarray fail
 * (NULL) when n * size overflows; kms_free(NULL) is a no-op. */
void *kms_malloc(size_t n);
void *kms_calloc(size_t n, size_t size);
void *kms_realloc(void *p, size_t n);
void *kms_reallocarray(void *p, size_t n, size_t size);
void kms_free(void *p);

/* ---- test hooks (no effect unless a test arms them) ----------------------------------- */

/* Makes the calling thread's nth kms_* allocation from now fail (returns
 * NULL as an exhausted heap would); n = 0 disarms. Other threads are not
 * affected, so one request on one worker fails deterministically. */
void kms_alloc_test_fail_nth(unsigned long n);

/* 1 if the armed failure has happened on this thread since it was armed. */
int kms_alloc_test_fired(void);

/* kmsd's control-file hook (kmsd --test-alloc-fail FILE, test build only).
 * kms_alloc_test_control sets the file (NULL: off; at start-up, before
 * threads). At the start of each request kms_alloc_request_begin reads the
 * file if it exists: a decimal N arms kms_alloc_test_fail_nth(N) for this
 * request and the file is removed, so one request is affected. At the end
 * kms_alloc_request_end disarms and writes "N fired\n" or "N unfired\n" to
 * FILE.result, which the test reads to know whether the Nth allocation
 * was reached. Both are a single load and compare when no file is set. */
void kms_alloc_test_control(const char *path);
void kms_alloc_request_begin(void);
void kms_alloc_request_end(void);

#endif
