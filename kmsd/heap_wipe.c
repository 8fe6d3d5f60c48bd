/* kmsd's heap wipes every block it frees.
 *
 * Plaintext reaches more heap than ours: gRPC decrypts TLS records into its
 * own slices and frames a reply's bytes in buffers of its own, and frees
 * them without wiping. The secret-hygiene test found Encrypt plaintexts and
 * Decrypt and GenerateDataKey replies in a core of kmsd long after their
 * calls, inside gRPC's freed heap blocks. gRPC 1.51 has no allocator hook,
 * so kmsd replaces free (and realloc, which frees) for the whole process:
 * each block is wiped with OPENSSL_cleanse over its usable size, then given
 * to glibc's own free. malloc and calloc stay glibc's.
 *
 * Linked into the kmsd executables only (not the libraries, not the
 * client), and not into sanitizer builds, whose runtimes own malloc and
 * free. The cost is one memset per free; see docs/design.md. */
#include <errno.h>
#include <malloc.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <openssl/crypto.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#error "heap_wipe.c must not be linked into a sanitizer build"
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                         \
    __has_feature(memory_sanitizer)
#error "heap_wipe.c must not be linked into a sanitizer build"
#endif
#endif

/* glibc's allocator under its exported internal names. */
extern void __libc_free(void *p);
extern void *__libc_malloc(size_t n);
extern void *__libc_realloc(void *p, size_t n);

void free(void *p)
{
    if (p == NULL)
        return;
    OPENSSL_cleanse(p, malloc_usable_size(p));
    __libc_free(p);
}

/* A block that grows moves to a new one (the old one is wiped by free);
 * one that shrinks has its tail wiped first, as glibc may free it. */
void *realloc(void *p, size_t n)
{
    if (p == NULL)
        return __libc_malloc(n);
    if (n == 0) {
        free(p);
        return NULL;
    }
    size_t old = malloc_usable_size(p);
    if (n <= old) {
        OPENSSL_cleanse((unsigned char *)p + n, old - n);
        return __libc_realloc(p, n);
    }
    void *q = __libc_malloc(n);
    if (q == NULL)
        return NULL;
    memcpy(q, p, old);
    free(p);
    return q;
}

void *reallocarray(void *p, size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size) {
        errno = ENOMEM; /* as glibc's reallocarray */
        return NULL;
    }
    return realloc(p, n * size);
}
