/* libFuzzer target: the TPM2 key reference decoder (tpm2/tpm2_ref.c) must
 * never read past the reference (what ASan watches here), and what it
 * accepts must encode back to the same bytes. The decoder now checks the
 * second itself, since this target found Tss2_MU accepting a non-canonical
 * TPM2B_PUBLIC; the assertion stays as a guard should that check go. A
 * reference comes from our own store, but a damaged or restored database
 * must still give a clean error. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tpm2/tpm2_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > KMS_BACKEND_REF_MAX)
        return 0;
    /* Heap copies of exactly `size` bytes, so ASan sees an overread past
     * the reference's length as well as past its buffer. */
    kms_backend_ref *in = malloc(sizeof(*in));
    kms_backend_ref *again = malloc(sizeof(*again));
    tpm2_ref *r = malloc(sizeof(*r));
    if (in == NULL || again == NULL || r == NULL)
        abort();
    memset(in->bytes, 0, sizeof(in->bytes));
    memcpy(in->bytes, data, size);
    in->len = size;
    if (kms_tpm2_ref_decode(in, r) == KMS_OK) {
        if (r->kind != TPM2_REF_SEALED && r->kind != TPM2_REF_RESIDENT)
            abort();
        if (kms_tpm2_ref_encode(r, again) != KMS_OK || again->len != size ||
            memcmp(again->bytes, data, size) != 0)
            abort();
    }
    free(in);
    free(again);
    free(r);
    return 0;
}
