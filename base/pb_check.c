/* Checks on decoded protobuf-c messages (contract: base/pb_check.h). */
#include "base/pb_check.h"

#include "base/buf.h"

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

/* ---- strings with a NUL byte on the wire ------------------------------------------------- */

/* A base-128 varint of at most 10 bytes. */
static int get_varint(kms_buf_reader *r, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; shift < 70; shift += 7) {
        uint8_t b;
        if (kms_buf_get_u8(r, &b) != 0)
            return -1;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0)
            return 0;
    }
    return -1;
}

/* 1: a string with a NUL; 0: none; -1: does not parse. */
static int nul_in(const ProtobufCMessageDescriptor *d, const uint8_t *bytes, size_t len, int depth)
{
    kms_buf_reader r;
    kms_buf_reader_init(&r, bytes, len);
    if (depth > DEPTH_MAX)
        return -1;
    while (kms_buf_remaining(&r) > 0) {
        uint64_t tag, n;
        const uint8_t *at;
        if (get_varint(&r, &tag) != 0 || tag >> 3 == 0 || tag >> 3 > UINT32_MAX)
            return -1;
        switch (tag & 7) {
        case 0: /* varint */
            if (get_varint(&r, &n) != 0)
                return -1;
            break;
        case 1: /* 64-bit */
            if (kms_buf_get_view(&r, 8, &at) != 0)
                return -1;
            break;
        case 5: /* 32-bit */
            if (kms_buf_get_view(&r, 4, &at) != 0)
                return -1;
            break;
        case 2: { /* length-delimited */
            if (get_varint(&r, &n) != 0 || n > kms_buf_remaining(&r) ||
                kms_buf_get_view(&r, (size_t)n, &at) != 0)
                return -1;
            const ProtobufCFieldDescriptor *f =
                protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3));
            if (f == NULL)
                break; /* unknown: not a string this kmsd reads */
            if (f->type == PROTOBUF_C_TYPE_STRING && memchr(at, 0, (size_t)n) != NULL)
                return 1;
            if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
                int in = nul_in(f->descriptor, at, (size_t)n, depth + 1);
                if (in != 0)
                    return in;
            }
            break;
        }
        default: /* groups (3, 4) and wire types 6, 7: not in this API */
            return -1;
        }
    }
    return 0;
}

int kms_pb_wire_has_nul_string(const ProtobufCMessageDescriptor *d, const uint8_t *bytes,
                               size_t len)
{
    if (d == NULL || (bytes == NULL && len != 0))
        return 0;
    return nul_in(d, bytes, len, 0) == 1;
}
