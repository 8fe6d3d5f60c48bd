/* libFuzzer target: the verifier's record parser is strict, and whatever
 * it accepts re-encodes to the same bytes and chains without failing. A
 * record the parser accepts is also checked as a checkpoint (its detail
 * "log=... sig=...", its signed message, the DER signature) under a fixed
 * P-256 key: that never crashes and answers 0 or KMS_EAUTH only, and 0 only
 * for a checkpoint whose signature is good (the corpus has one). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kmsd/audit/audit_checkpoint.h"
#include "kmsd/audit/audit_record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The public point the corpus's checkpoint was signed under. */
static const uint8_t fuzz_pub[KMS_AUDIT_PUB_LEN] = {
    0x04, 0x58, 0xaf, 0x4c, 0x20, 0x10, 0x9a, 0xf7, 0x8d, 0x9c, 0xd4, 0xf7, 0x73,
    0x58, 0xbc, 0x52, 0xa8, 0xc9, 0x15, 0x56, 0x1e, 0x85, 0x75, 0x23, 0x2d, 0x8f,
    0x6a, 0x8f, 0x3b, 0x47, 0x6f, 0x70, 0x94, 0x85, 0x17, 0xce, 0xc0, 0xa7, 0x0b,
    0x5a, 0x77, 0x09, 0x55, 0xe6, 0x22, 0xe7, 0xe1, 0x3b, 0xc9, 0xcd, 0xd1, 0xfd,
    0x75, 0x2d, 0x1f, 0x71, 0x55, 0xe3, 0x1d, 0xaf, 0x17, 0x32, 0x1b, 0xf6, 0xe6};

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
        int r = kms_audit_checkpoint_verify(&p, fuzz_pub);
        if (r != 0 && r != KMS_EAUTH)
            abort();
        if (r == 0 && strcmp(p.rec.type, KMS_AUDIT_CHECKPOINT_TYPE) != 0)
            abort();
        kms_error_clear();
    }
    free(line);
    return 0;
}
