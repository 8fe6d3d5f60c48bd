/* libFuzzer target: the canonical context decoder is strict, and whatever it
 * accepts re-encodes to the same bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kmsd/keyring/context.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct collect {
    kms_context_pair pairs[KMS_CONTEXT_MAX_PAIRS];
    size_t n;
};

static int collect_pair(void *ctx, const kms_context_pair *p)
{
    struct collect *c = ctx;
    if (c->n == KMS_CONTEXT_MAX_PAIRS)
        abort(); /* decode promised at most this many */
    c->pairs[c->n++] = *p;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (buf == NULL)
        return 0;
    if (size)
        memcpy(buf, data, size);
    struct collect c;
    c.n = 0;
    if (kms_context_decode(buf, size, collect_pair, &c) == KMS_OK) {
        static uint8_t out[KMS_CONTEXT_MAX_ENCODED + 64];
        size_t len = 0;
        kms_context ctx = {c.pairs, c.n};
        if (kms_context_encode(&ctx, out, sizeof(out), &len) != KMS_OK || len != size ||
            memcmp(out, buf, size) != 0)
            abort();
    }
    free(buf);
    return 0;
}
