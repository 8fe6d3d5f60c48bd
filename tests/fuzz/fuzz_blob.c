/* libFuzzer target: the ciphertext blob parser must never read past the
 * input, and what it accepts must describe exactly the bytes given. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kmsd/keyring/blob.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Copy into an exact-size heap buffer so ASan sees any overread. */
    uint8_t *buf = malloc(size ? size : 1);
    if (buf == NULL)
        return 0;
    if (size)
        memcpy(buf, data, size);
    kms_blob_view v;
    if (kms_blob_parse(buf, size, &v) == KMS_OK) {
        if (v.ciphertext_len + KMS_BLOB_OVERHEAD != size || v.ciphertext_len == 0 ||
            v.key_version == 0 || v.tag + KMS_GCM_TAG_LEN != buf + size)
            abort();
        /* Re-assembling the parsed parts gives back the same bytes. */
        uint8_t out[KMS_BLOB_MAX];
        size_t len = 0;
        if (kms_blob_write(v.aad_header, v.iv, v.ciphertext, v.ciphertext_len, v.tag, out,
                           sizeof(out), &len) != KMS_OK ||
            len != size || memcmp(out, buf, size) != 0)
            abort();
    }
    free(buf);
    return 0;
}
