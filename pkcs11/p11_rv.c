/* The one table from CK_RV to kms error codes.
 *
 * Only CKR_OK maps to 0. Codes that a caller tolerates in one place
 * (CKR_USER_ALREADY_LOGGED_IN after C_Login, CKR_CRYPTOKI_ALREADY_INITIALIZED
 * after C_Initialize) are tolerated there, explicitly, and are errors here.
 * "lost" marks the codes after which the session or the login is gone: the
 * pool heals and the operation is tried once more. Anything not in the
 * table is KMS_EINTERNAL (fail closed) and named "CKR_(unknown)". */
#include "p11_internal.h"

#define ROW(rv, err, lost)                                                                         \
    {                                                                                              \
        rv, #rv, err, lost                                                                         \
    }

static const struct {
    CK_RV rv;
    const char *name;
    int err;
    int lost;
} rv_table[] = {
    ROW(CKR_OK, KMS_OK, 0),

    /* The session, the login or the device is gone: heal. */
    ROW(CKR_SESSION_HANDLE_INVALID, KMS_EUNAVAIL, 1),
    ROW(CKR_SESSION_CLOSED, KMS_EUNAVAIL, 1),
    ROW(CKR_DEVICE_REMOVED, KMS_EUNAVAIL, 1),
    ROW(CKR_TOKEN_NOT_PRESENT, KMS_EUNAVAIL, 1),
    ROW(CKR_USER_NOT_LOGGED_IN, KMS_EUNAVAIL, 1),
    ROW(CKR_DEVICE_ERROR, KMS_EUNAVAIL, 1),
    ROW(CKR_CRYPTOKI_NOT_INITIALIZED, KMS_EUNAVAIL, 1),

    /* Unavailable, but re-opening sessions would not help. */
    ROW(CKR_TOKEN_NOT_RECOGNIZED, KMS_EUNAVAIL, 0),
    ROW(CKR_SLOT_ID_INVALID, KMS_EUNAVAIL, 0),
    ROW(CKR_FUNCTION_CANCELED, KMS_EUNAVAIL, 0),
    ROW(CKR_CANCEL, KMS_EUNAVAIL, 0),
    ROW(CKR_FIPS_SELF_TEST_FAILED, KMS_EUNAVAIL, 0),

    /* Resources. */
    ROW(CKR_HOST_MEMORY, KMS_ENOMEM, 0),
    ROW(CKR_DEVICE_MEMORY, KMS_EEXHAUSTED, 0),
    ROW(CKR_SESSION_COUNT, KMS_EEXHAUSTED, 0),

    /* Authentication of kmsd to the token. */
    ROW(CKR_PIN_INCORRECT, KMS_EDENIED, 0),
    ROW(CKR_PIN_INVALID, KMS_EDENIED, 0),
    ROW(CKR_PIN_LEN_RANGE, KMS_EDENIED, 0),
    ROW(CKR_PIN_EXPIRED, KMS_EDENIED, 0),
    ROW(CKR_PIN_LOCKED, KMS_EDENIED, 0),
    ROW(CKR_USER_PIN_NOT_INITIALIZED, KMS_EPRECOND, 0),
    ROW(CKR_USER_ANOTHER_ALREADY_LOGGED_IN, KMS_EPRECOND, 0),
    ROW(CKR_USER_ALREADY_LOGGED_IN, KMS_EINTERNAL, 0),
    ROW(CKR_USER_TYPE_INVALID, KMS_EINTERNAL, 0),

    /* Data. CKR_ENCRYPTED_DATA_* come only from decryption: a failed tag. */
    ROW(CKR_ENCRYPTED_DATA_INVALID, KMS_EAUTH, 0),
    ROW(CKR_ENCRYPTED_DATA_LEN_RANGE, KMS_EAUTH, 0),
    ROW(CKR_DATA_LEN_RANGE, KMS_ETOOBIG, 0),
    ROW(CKR_DATA_INVALID, KMS_EINVAL, 0),

    /* Keys and objects. */
    ROW(CKR_KEY_HANDLE_INVALID, KMS_ENOTFOUND, 0),
    ROW(CKR_OBJECT_HANDLE_INVALID, KMS_ENOTFOUND, 0),
    ROW(CKR_KEY_TYPE_INCONSISTENT, KMS_EKEYCHECK, 0),
    ROW(CKR_KEY_FUNCTION_NOT_PERMITTED, KMS_EKEYCHECK, 0),
    ROW(CKR_KEY_SIZE_RANGE, KMS_EKEYCHECK, 0),
    ROW(CKR_KEY_UNEXTRACTABLE, KMS_EKEYCHECK, 0),
    ROW(CKR_ATTRIBUTE_SENSITIVE, KMS_EINTERNAL, 0),
    ROW(CKR_ATTRIBUTE_TYPE_INVALID, KMS_EINTERNAL, 0),
    ROW(CKR_ATTRIBUTE_VALUE_INVALID, KMS_EINTERNAL, 0),
    ROW(CKR_ATTRIBUTE_READ_ONLY, KMS_EINTERNAL, 0),
    ROW(CKR_TEMPLATE_INCOMPLETE, KMS_EINTERNAL, 0),
    ROW(CKR_TEMPLATE_INCONSISTENT, KMS_EINTERNAL, 0),
    ROW(CKR_ACTION_PROHIBITED, KMS_EPRECOND, 0),
    ROW(CKR_TOKEN_WRITE_PROTECTED, KMS_EPRECOND, 0),
    ROW(CKR_SESSION_READ_ONLY, KMS_EPRECOND, 0),

    /* Mechanisms and functions the token does not offer. */
    ROW(CKR_MECHANISM_INVALID, KMS_EUNSUPPORTED, 0),
    ROW(CKR_MECHANISM_PARAM_INVALID, KMS_EUNSUPPORTED, 0),
    ROW(CKR_FUNCTION_NOT_SUPPORTED, KMS_EUNSUPPORTED, 0),
    ROW(CKR_RANDOM_NO_RNG, KMS_EUNSUPPORTED, 0),

    /* Bugs: ours or the module's. */
    ROW(CKR_GENERAL_ERROR, KMS_EINTERNAL, 0),
    ROW(CKR_FUNCTION_FAILED, KMS_EINTERNAL, 0),
    ROW(CKR_ARGUMENTS_BAD, KMS_EINTERNAL, 0),
    ROW(CKR_OPERATION_ACTIVE, KMS_EINTERNAL, 0),
    ROW(CKR_OPERATION_NOT_INITIALIZED, KMS_EINTERNAL, 0),
    ROW(CKR_BUFFER_TOO_SMALL, KMS_EINTERNAL, 0),
    ROW(CKR_CANT_LOCK, KMS_EINTERNAL, 0),
    ROW(CKR_NEED_TO_CREATE_THREADS, KMS_EINTERNAL, 0),
    ROW(CKR_FUNCTION_NOT_PARALLEL, KMS_EINTERNAL, 0),
    ROW(CKR_CRYPTOKI_ALREADY_INITIALIZED, KMS_EINTERNAL, 0),
};

#define RV_TABLE_LEN (sizeof(rv_table) / sizeof(rv_table[0]))

static int find(CK_RV rv)
{
    for (size_t i = 0; i < RV_TABLE_LEN; i++)
        if (rv_table[i].rv == rv)
            return (int)i;
    return -1;
}

int kms_p11_rv_to_error(CK_RV rv)
{
    int i = find(rv);
    return i < 0 ? KMS_EINTERNAL : rv_table[i].err;
}

int kms_p11_decrypt_rv_to_error(CK_RV rv)
{
    /* SoftHSM 2.6 reports a GCM tag mismatch as CKR_GENERAL_ERROR. Read as
     * "does not authenticate", a genuine device fault costs a misleading
     * code, never plaintext: the output is wiped either way. */
    if (rv == CKR_GENERAL_ERROR)
        return KMS_EAUTH;
    return kms_p11_rv_to_error(rv);
}

const char *kms_p11_rv_name(CK_RV rv)
{
    int i = find(rv);
    return i < 0 ? "CKR_(unknown)" : rv_table[i].name;
}

int kms_p11_rv_session_lost(CK_RV rv)
{
    int i = find(rv);
    return i < 0 ? 0 : rv_table[i].lost;
}

size_t kms_p11_rv_table_len(void)
{
    return RV_TABLE_LEN;
}

CK_RV kms_p11_rv_table_code(size_t i)
{
    return i < RV_TABLE_LEN ? rv_table[i].rv : CKR_VENDOR_DEFINED;
}
