/* The one table from kms error codes to client messages and gRPC status. */
#include "kms/error.h"

#include <stdarg.h>
#include <stdio.h>

/* gRPC status codes (grpc/status.h); numeric so the core needs no gRPC. */
enum {
    GRPC_OK = 0,
    GRPC_INVALID_ARGUMENT = 3,
    GRPC_NOT_FOUND = 5,
    GRPC_ALREADY_EXISTS = 6,
    GRPC_PERMISSION_DENIED = 7,
    GRPC_RESOURCE_EXHAUSTED = 8,
    GRPC_FAILED_PRECONDITION = 9,
    GRPC_UNIMPLEMENTED = 12,
    GRPC_INTERNAL = 13,
    GRPC_UNAVAILABLE = 14
};

static const struct {
    int code;
    const char *name;
    int grpc;
    const char *message;
} error_table[] = {
    {KMS_OK, "KMS_OK", GRPC_OK, "ok"},
    {KMS_EINVAL, "KMS_EINVAL", GRPC_INVALID_ARGUMENT, "invalid argument"},
    {KMS_EBADBLOB, "KMS_EBADBLOB", GRPC_INVALID_ARGUMENT, "malformed ciphertext blob"},
    {KMS_EAUTH, "KMS_EAUTH", GRPC_INVALID_ARGUMENT,
     "ciphertext does not authenticate: wrong encryption context, wrong key or tampered data"},
    {KMS_ENOTFOUND, "KMS_ENOTFOUND", GRPC_NOT_FOUND, "key or key version not found"},
    {KMS_EEXISTS, "KMS_EEXISTS", GRPC_ALREADY_EXISTS, "already exists"},
    {KMS_EDENIED, "KMS_EDENIED", GRPC_PERMISSION_DENIED, "permission denied"},
    {KMS_EPRECOND, "KMS_EPRECOND", GRPC_FAILED_PRECONDITION,
     "key or key version is not usable in its current state"},
    {KMS_EKEYCHECK, "KMS_EKEYCHECK", GRPC_FAILED_PRECONDITION,
     "master key refused: it failed the backend safety check"},
    {KMS_EEXHAUSTED, "KMS_EEXHAUSTED", GRPC_RESOURCE_EXHAUSTED, "limit reached"},
    {KMS_EUNAVAIL, "KMS_EUNAVAIL", GRPC_UNAVAILABLE, "key backend or store unavailable"},
    {KMS_ENOMEM, "KMS_ENOMEM", GRPC_RESOURCE_EXHAUSTED, "out of memory"},
    {KMS_ESTORE, "KMS_ESTORE", GRPC_UNAVAILABLE, "metadata store failure"},
    {KMS_EINTERNAL, "KMS_EINTERNAL", GRPC_INTERNAL, "internal error"},
    {KMS_ETOOBIG, "KMS_ETOOBIG", GRPC_INVALID_ARGUMENT, "input larger than allowed"},
    {KMS_EUNSUPPORTED, "KMS_EUNSUPPORTED", GRPC_UNIMPLEMENTED, "not supported"},
};

#define ERROR_TABLE_LEN (sizeof(error_table) / sizeof(error_table[0]))

static int find(int err)
{
    for (size_t i = 0; i < ERROR_TABLE_LEN; i++)
        if (error_table[i].code == err)
            return (int)i;
    return -1;
}

const char *kms_strerror(int err)
{
    int i = find(err);
    return i < 0 ? "unknown error" : error_table[i].message;
}

const char *kms_error_name(int err)
{
    int i = find(err);
    return i < 0 ? "KMS_E?" : error_table[i].name;
}

int kms_error_grpc_status(int err)
{
    int i = find(err);
    return i < 0 ? GRPC_INTERNAL : error_table[i].grpc;
}

static _Thread_local char detail[256];
static _Thread_local int detail_public; /* the code the public detail was set with; 0: none */

static void set_detail(const char *fmt, va_list ap) KMS_PRINTF(1, 0);
static void set_detail(const char *fmt, va_list ap)
{
    vsnprintf(detail, sizeof(detail), fmt, ap);
}

int kms_error_set(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_detail(fmt, ap);
    va_end(ap);
    detail_public = KMS_OK;
    return err;
}

int kms_error_set_public(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_detail(fmt, ap);
    va_end(ap);
    detail_public = err;
    return err;
}

const char *kms_error_detail(void)
{
    return detail;
}

const char *kms_error_public(int err)
{
    return detail_public != KMS_OK && detail_public == err ? detail : "";
}

void kms_error_clear(void)
{
    detail[0] = '\0';
    detail_public = KMS_OK;
}
