/* The RPC table (rows in kmsd/rpc_table.c; rpc.h says what a row holds). */
#ifndef KMS_RPC_TABLE_H
#define KMS_RPC_TABLE_H

#include <stddef.h>

#include "kmsd/server/rpc.h"
#include "kmsd/server/server.h"

/* The table, and the same paths in the shape kms_server_start wants. */
const kms_rpc_method *kms_rpc_methods(size_t *n);
const kms_server_method *kms_rpc_server_methods(size_t *n);

#endif
