/* Checks on decoded protobuf-c messages that decide whether bytes may be
 * shown to an officer and signed: kmsd refuses such a proposal, and kmsctl
 * refuses to sign it. protobuf-c keeps fields it does not know and encodes
 * them again, so bytes could carry data that no printer shows. */
#ifndef KMS_BASE_PB_CHECK_H
#define KMS_BASE_PB_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "kms/error.h"

/* 1 if m or any message inside it (at any depth; past 8 levels counts as
 * unknown) carries a field its descriptor does not know; 0 otherwise. */
int kms_pb_has_unknown_fields(const ProtobufCMessage *m) KMS_MUST_CHECK;

/* 1 if encoding m gives exactly bytes[0..len); 0 otherwise (also when out
 * of memory). */
int kms_pb_encodes_to(const ProtobufCMessage *m, const uint8_t *bytes, size_t len) KMS_MUST_CHECK;

/* 1 if bytes decoded into m are what an officer may sign: no unknown field
 * at any depth, and m encodes back to exactly bytes. */
int kms_pb_canonical(const ProtobufCMessage *m, const uint8_t *bytes, size_t len) KMS_MUST_CHECK;

/* 1 if the wire bytes of a message of type d carry a NUL byte inside a
 * string field, at any depth (nested messages, map entries); 0 if not, or
 * if the bytes do not parse (the decoder then refuses them). protobuf-c
 * decodes a string into a C string, so "v\0x" would silently become "v":
 * kmsd refuses such requests before decoding them. */
int kms_pb_wire_has_nul_string(const ProtobufCMessageDescriptor *d, const uint8_t *bytes,
                               size_t len) KMS_MUST_CHECK;

#endif
