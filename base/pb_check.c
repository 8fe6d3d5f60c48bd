/* Checks on decoded protobuf-c messages (contract: base/pb_check.h). */
#include "base/pb_check.h"

#include <stdlib.h>
#include <string.h>

#define DEPTH_MAX 8

static int unknown_at(const ProtobufCMessage *m, int depth)
{
    if (m->n_unknown_fields > 0 || depth > DEPTH_MAX)
        return 1;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(const void *)(base + f->quantifier_offset) != f->id)
            continue; /* another member of the oneof */
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(const void *)(base + f->quantifier_offset);
            ProtobufCMessage *const *v =
                *(ProtobufCMessage *const *const *)(const void *)(base + f->offset);
            for (size_t j = 0; j < n; j++)
                if (unknown_at(v[j], depth + 1))
                    return 1;
        } else {
            const ProtobufCMessage *sub =
                *(const ProtobufCMessage *const *)(const void *)(base + f->offset);
            if (sub != NULL && unknown_at(sub, depth + 1))
                return 1;
        }
    }
    return 0;
}

int kms_pb_has_unknown_fields(const ProtobufCMessage *m)
{
    return unknown_at(m, 0);
}

int kms_pb_encodes_to(const ProtobufCMessage *m, const uint8_t *bytes, size_t len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    if (n != len)
        return 0;
    uint8_t *again = malloc(n ? n : 1);
    if (again == NULL)
        return 0;
    protobuf_c_message_pack(m, again);
    int same = memcmp(again, bytes, n) == 0;
    free(again);
    return same;
}

int kms_pb_canonical(const ProtobufCMessage *m, const uint8_t *bytes, size_t len)
{
    return !kms_pb_has_unknown_fields(m) && kms_pb_encodes_to(m, bytes, len);
}
