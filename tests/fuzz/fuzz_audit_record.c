/* libFuzzer target: the verifier's record parser is strict, and whatever
 * it accepts re-encodes to the same bytes and chains without failing. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kmsd/audit/audit_record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static kms_audit_parsed p;
    char *line = malloc(size ? size : 1);
    if (line == NULL)
        return 0;
    memcpy(line, data, size); /* an exact-size copy: overreads are caught */
    if (kms_audit_rec_parse(line, size, &p) == 0) {
        char again[KMS_AUDIT_LINE_MAX];
        size_t n = 0;
        uint8_t h[KMS_AUDIT_HASH_LEN];
        if (kms_audit_rec_encode(&p.rec, again, sizeof(again), &n) != 0 || n != size ||
            memcmp(again, line, size) != 0 || kms_audit_chain_next(p.rec.prev, line, size, h) != 0)
            abort();
    }
    free(line);
    return 0;
}
