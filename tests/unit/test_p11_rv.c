/* The PKCS#11 backend's pure parts, no device:
 *  - the CK_RV table (codes, names, which codes mean a lost session, the
 *    decrypt-path reading of a failed tag);
 *  - the key safety check and the lookup by CKA_ID, against a fake token
 *    (a CK_FUNCTION_LIST whose objects the test describes), so that every
 *    rule is seen to refuse, including cases SoftHSM cannot produce (a
 *    readable CKA_VALUE on an otherwise sensitive key, a non-AES key, a
 *    malformed attribute). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "p11_internal.h"

/* ---- the CK_RV table --------------------------------------------------------------- */

static void known_codes(void **state)
{
    (void)state;
    assert_int_equal(kms_p11_rv_to_error(CKR_OK), KMS_OK);
    assert_int_equal(kms_p11_rv_to_error(CKR_PIN_INCORRECT), KMS_EDENIED);
    assert_int_equal(kms_p11_rv_to_error(CKR_PIN_LOCKED), KMS_EDENIED);
    assert_int_equal(kms_p11_rv_to_error(CKR_ENCRYPTED_DATA_INVALID), KMS_EAUTH);
    assert_int_equal(kms_p11_rv_to_error(CKR_ENCRYPTED_DATA_LEN_RANGE), KMS_EAUTH);
    assert_int_equal(kms_p11_rv_to_error(CKR_KEY_FUNCTION_NOT_PERMITTED), KMS_EKEYCHECK);
    assert_int_equal(kms_p11_rv_to_error(CKR_KEY_HANDLE_INVALID), KMS_ENOTFOUND);
    assert_int_equal(kms_p11_rv_to_error(CKR_DATA_LEN_RANGE), KMS_ETOOBIG);
    assert_int_equal(kms_p11_rv_to_error(CKR_MECHANISM_INVALID), KMS_EUNSUPPORTED);
    assert_int_equal(kms_p11_rv_to_error(CKR_HOST_MEMORY), KMS_ENOMEM);
    /* A general error is a bug or a device fault, except on the decrypt
     * path, where SoftHSM uses it for a failed GCM tag. */
    assert_int_equal(kms_p11_rv_to_error(CKR_GENERAL_ERROR), KMS_EINTERNAL);
    assert_int_equal(kms_p11_decrypt_rv_to_error(CKR_GENERAL_ERROR), KMS_EAUTH);
    assert_int_equal(kms_p11_decrypt_rv_to_error(CKR_ENCRYPTED_DATA_INVALID), KMS_EAUTH);
    assert_int_equal(kms_p11_decrypt_rv_to_error(CKR_ENCRYPTED_DATA_LEN_RANGE), KMS_EAUTH);
    assert_int_equal(kms_p11_decrypt_rv_to_error(CKR_OK), KMS_OK);
    assert_int_equal(kms_p11_decrypt_rv_to_error(CKR_SESSION_HANDLE_INVALID), KMS_EUNAVAIL);
    assert_int_equal(kms_p11_decrypt_rv_to_error(CKR_FUNCTION_FAILED), KMS_EINTERNAL);
    assert_string_equal(kms_p11_rv_name(CKR_SESSION_HANDLE_INVALID), "CKR_SESSION_HANDLE_INVALID");
    assert_string_equal(kms_p11_rv_name(CKR_GENERAL_ERROR), "CKR_GENERAL_ERROR");
    assert_string_equal(kms_p11_rv_name(CKR_OK), "CKR_OK");
}

static void session_loss_codes(void **state)
{
    (void)state;
    const CK_RV lost[] = {CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED,     CKR_DEVICE_REMOVED,
                          CKR_TOKEN_NOT_PRESENT,      CKR_USER_NOT_LOGGED_IN, CKR_DEVICE_ERROR};
    for (size_t i = 0; i < sizeof(lost) / sizeof(lost[0]); i++) {
        assert_true(kms_p11_rv_session_lost(lost[i]));
        assert_int_equal(kms_p11_rv_to_error(lost[i]), KMS_EUNAVAIL);
    }
    assert_false(kms_p11_rv_session_lost(CKR_OK));
    assert_false(kms_p11_rv_session_lost(CKR_GENERAL_ERROR));
    assert_false(kms_p11_rv_session_lost(CKR_PIN_INCORRECT));
    assert_false(kms_p11_rv_session_lost(CKR_KEY_HANDLE_INVALID));
}

static void unknown_codes_fail_closed(void **state)
{
    (void)state;
    const CK_RV unknown[] = {0x7fffffffUL, CKR_VENDOR_DEFINED, CKR_VENDOR_DEFINED | 0x1234,
                             CKR_NO_EVENT};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        assert_int_equal(kms_p11_rv_to_error(unknown[i]), KMS_EINTERNAL);
        assert_int_equal(kms_p11_decrypt_rv_to_error(unknown[i]), KMS_EINTERNAL);
        assert_string_equal(kms_p11_rv_name(unknown[i]), "CKR_(unknown)");
        assert_false(kms_p11_rv_session_lost(unknown[i]));
    }
}

/* The table as a whole: one row per code, only CKR_OK is success (the
 * "already" codes are tolerated at their call sites, not here), every name
 * is a CKR_ name, and a lost session is always KMS_EUNAVAIL. */
static void table_is_consistent(void **state)
{
    (void)state;
    size_t n = kms_p11_rv_table_len();
    assert_true(n > 40);
    for (size_t i = 0; i < n; i++) {
        CK_RV rv = kms_p11_rv_table_code(i);
        for (size_t j = i + 1; j < n; j++)
            if (kms_p11_rv_table_code(j) == rv)
                fail_msg("CK_RV 0x%lx appears twice", rv);
        assert_int_equal(strncmp(kms_p11_rv_name(rv), "CKR_", 4), 0);
        assert_string_not_equal(kms_p11_rv_name(rv), "CKR_(unknown)");
        assert_true(kms_p11_rv_to_error(rv) <= 0);
        if (rv != CKR_OK)
            assert_int_not_equal(kms_p11_rv_to_error(rv), KMS_OK);
        if (kms_p11_rv_session_lost(rv))
            assert_int_equal(kms_p11_rv_to_error(rv), KMS_EUNAVAIL);
    }
    assert_int_equal(kms_p11_rv_to_error(CKR_USER_ALREADY_LOGGED_IN), KMS_EINTERNAL);
    assert_int_equal(kms_p11_rv_to_error(CKR_CRYPTOKI_ALREADY_INITIALIZED), KMS_EINTERNAL);
}

/* ---- a fake token for the key check ------------------------------------------------------ */

#define FAKE_MAX_ATTRS 24

struct fake_attr {
    CK_ATTRIBUTE_TYPE type;
    uint8_t value[8];
    CK_ULONG len;
    int sensitive; /* C_GetAttributeValue answers CKR_ATTRIBUTE_SENSITIVE */
};

static struct fake {
    struct fake_attr attrs[FAKE_MAX_ATTRS];
    int nattrs;
    CK_RV get_rv;          /* if set, every C_GetAttributeValue fails with it */
    CK_ULONG find_results; /* objects C_FindObjects returns */
    CK_RV find_rv;
} fake;

static struct fake_attr *fake_find(CK_ATTRIBUTE_TYPE t)
{
    for (int i = 0; i < fake.nattrs; i++)
        if (fake.attrs[i].type == t)
            return &fake.attrs[i];
    return NULL;
}

static void fake_set(CK_ATTRIBUTE_TYPE t, const void *v, CK_ULONG len)
{
    struct fake_attr *a = fake_find(t);
    if (a == NULL) {
        assert_true(fake.nattrs < FAKE_MAX_ATTRS);
        a = &fake.attrs[fake.nattrs++];
    }
    a->type = t;
    memcpy(a->value, v, len);
    a->len = len;
    a->sensitive = 0;
}

static void fake_bool(CK_ATTRIBUTE_TYPE t, CK_BBOOL v)
{
    fake_set(t, &v, sizeof(v));
}

static void fake_remove(CK_ATTRIBUTE_TYPE t)
{
    struct fake_attr *a = fake_find(t);
    if (a != NULL)
        *a = fake.attrs[--fake.nattrs];
}

/* C_GetAttributeValue as the standard (v2.40 §5.7) describes it. */
static CK_RV fake_get(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n)
{
    (void)s;
    (void)h;
    if (fake.get_rv != CKR_OK)
        return fake.get_rv;
    CK_RV rv = CKR_OK;
    for (CK_ULONG i = 0; i < n; i++) {
        struct fake_attr *a = fake_find(tmpl[i].type);
        if (a == NULL) {
            tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
            rv = CKR_ATTRIBUTE_TYPE_INVALID;
        } else if (a->sensitive) {
            tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
            rv = CKR_ATTRIBUTE_SENSITIVE;
        } else if (tmpl[i].pValue == NULL) {
            tmpl[i].ulValueLen = a->len;
        } else if (tmpl[i].ulValueLen < a->len) {
            tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
            rv = CKR_BUFFER_TOO_SMALL;
        } else {
            memcpy(tmpl[i].pValue, a->value, a->len);
            tmpl[i].ulValueLen = a->len;
        }
    }
    return rv;
}

static CK_RV fake_find_init(CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
    (void)s;
    (void)t;
    (void)n;
    return fake.find_rv;
}

static CK_RV fake_find_objects(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE_PTR out, CK_ULONG max,
                               CK_ULONG_PTR n)
{
    (void)s;
    *n = fake.find_results < max ? fake.find_results : max;
    for (CK_ULONG i = 0; i < *n; i++)
        out[i] = 100 + i;
    return CKR_OK;
}

static CK_RV fake_find_final(CK_SESSION_HANDLE s)
{
    (void)s;
    return CKR_OK;
}

static CK_FUNCTION_LIST fake_functions;
static struct p11 fake_p11;

/* A key exactly as the backend generates it. */
static int fake_good_key(void **state)
{
    (void)state;
    memset(&fake, 0, sizeof(fake));
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_AES;
    CK_ULONG len = 32;
    fake_set(CKA_CLASS, &cls, sizeof(cls));
    fake_set(CKA_KEY_TYPE, &type, sizeof(type));
    fake_set(CKA_VALUE_LEN, &len, sizeof(len));
    const CK_ATTRIBUTE_TYPE on[] = {
        CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE,
        CKA_LOCAL, CKA_ENCRYPT, CKA_DECRYPT};
    const CK_ATTRIBUTE_TYPE off[] = {CKA_EXTRACTABLE, CKA_MODIFIABLE, CKA_WRAP,  CKA_UNWRAP,
                                     CKA_SIGN,        CKA_VERIFY,     CKA_DERIVE};
    for (size_t i = 0; i < sizeof(on) / sizeof(on[0]); i++)
        fake_bool(on[i], CK_TRUE);
    for (size_t i = 0; i < sizeof(off) / sizeof(off[0]); i++)
        fake_bool(off[i], CK_FALSE);
    uint8_t secret[8] = {0};
    fake_set(CKA_VALUE, secret, sizeof(secret));
    fake_find(CKA_VALUE)->sensitive = 1;
    fake.find_results = 1;

    memset(&fake_functions, 0, sizeof(fake_functions));
    fake_functions.C_GetAttributeValue = fake_get;
    fake_functions.C_FindObjectsInit = fake_find_init;
    fake_functions.C_FindObjects = fake_find_objects;
    fake_functions.C_FindObjectsFinal = fake_find_final;
    memset(&fake_p11, 0, sizeof(fake_p11));
    fake_p11.f = &fake_functions;
    memcpy(fake_p11.label, "fake", 5);
    kms_error_clear();
    return 0;
}

static int check(void)
{
    return kms_p11_check_key(&fake_p11, 1, 100, "kms:test:v1");
}

static void expect_refused(const char *why)
{
    assert_int_equal(check(), KMS_EKEYCHECK);
    if (strstr(kms_error_detail(), why) == NULL)
        fail_msg("detail \"%s\" does not say \"%s\"", kms_error_detail(), why);
    assert_non_null(strstr(kms_error_detail(), "kms:test:v1"));
}

static void good_key_passes(void **state)
{
    (void)state;
    assert_int_equal(check(), KMS_OK);
}

static void every_bool_rule_refuses(void **state)
{
    (void)state;
    static const struct {
        CK_ATTRIBUTE_TYPE type;
        CK_BBOOL bad;
        const char *why;
    } cases[] = {
        {CKA_TOKEN, CK_FALSE, "CKA_TOKEN is FALSE"},
        {CKA_PRIVATE, CK_FALSE, "CKA_PRIVATE is FALSE"},
        {CKA_SENSITIVE, CK_FALSE, "CKA_SENSITIVE is FALSE"},
        {CKA_EXTRACTABLE, CK_TRUE, "CKA_EXTRACTABLE is TRUE"},
        {CKA_ALWAYS_SENSITIVE, CK_FALSE, "CKA_ALWAYS_SENSITIVE is FALSE"},
        {CKA_NEVER_EXTRACTABLE, CK_FALSE, "CKA_NEVER_EXTRACTABLE is FALSE"},
        {CKA_LOCAL, CK_FALSE, "CKA_LOCAL is FALSE"},
        {CKA_MODIFIABLE, CK_TRUE, "CKA_MODIFIABLE is TRUE"},
        {CKA_ENCRYPT, CK_FALSE, "CKA_ENCRYPT is FALSE"},
        {CKA_DECRYPT, CK_FALSE, "CKA_DECRYPT is FALSE"},
        {CKA_WRAP, CK_TRUE, "CKA_WRAP is TRUE"},
        {CKA_UNWRAP, CK_TRUE, "CKA_UNWRAP is TRUE"},
        {CKA_SIGN, CK_TRUE, "CKA_SIGN is TRUE"},
        {CKA_VERIFY, CK_TRUE, "CKA_VERIFY is TRUE"},
        {CKA_DERIVE, CK_TRUE, "CKA_DERIVE is TRUE"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fake_good_key(NULL);
        fake_bool(cases[i].type, cases[i].bad);
        expect_refused(cases[i].why);
        /* A token may say "true" with any non-zero byte. */
        if (cases[i].bad == CK_TRUE) {
            fake_bool(cases[i].type, 0x5a);
            expect_refused(cases[i].why);
        }
    }
}

/* CKA_LOCAL FALSE passes only with pkcs11.allow_nonlocal_keys, and then
 * only on a key that was always sensitive and never extractable (an
 * imported key says FALSE to those: it stays refused). Without the
 * setting the refusal names it. */
static void nonlocal_rule(void **state)
{
    (void)state;
    fake_bool(CKA_LOCAL, CK_FALSE);
    expect_refused("CKA_LOCAL is FALSE (not generated on the token; see "
                   "pkcs11.allow_nonlocal_keys)");
    fake_p11.allow_nonlocal = 1;
    assert_int_equal(check(), KMS_OK);
    fake_bool(CKA_ALWAYS_SENSITIVE, CK_FALSE);
    expect_refused("CKA_ALWAYS_SENSITIVE is FALSE");
    fake_bool(CKA_ALWAYS_SENSITIVE, CK_TRUE);
    fake_bool(CKA_NEVER_EXTRACTABLE, CK_FALSE);
    expect_refused("CKA_NEVER_EXTRACTABLE is FALSE");
    fake_bool(CKA_NEVER_EXTRACTABLE, CK_TRUE);
    /* The setting changes nothing else: CKA_LOCAL TRUE still passes. */
    fake_bool(CKA_LOCAL, CK_TRUE);
    assert_int_equal(check(), KMS_OK);
    /* Nor the other rules. */
    fake_bool(CKA_LOCAL, CK_FALSE);
    fake_bool(CKA_EXTRACTABLE, CK_TRUE);
    expect_refused("CKA_EXTRACTABLE is TRUE");
}

/* ---- the mechanism check, against a fake C_GetMechanismInfo ------------------------- */

static struct {
    CK_MECHANISM_TYPE missing; /* CKR_MECHANISM_INVALID for it */
    int have_missing;
    CK_MECHANISM_TYPE changed; /* this one reports the info below */
    CK_MECHANISM_INFO info;
    int have_changed;
    CK_RV rv; /* returned for everything if not CKR_OK */
} mech;

static CK_RV fake_mech_info(CK_SLOT_ID slot, CK_MECHANISM_TYPE t, CK_MECHANISM_INFO_PTR out)
{
    (void)slot;
    if (mech.rv != CKR_OK)
        return mech.rv;
    if (mech.have_missing && t == mech.missing)
        return CKR_MECHANISM_INVALID;
    if (mech.have_changed && t == mech.changed) {
        *out = mech.info;
        return CKR_OK;
    }
    /* As SoftHSM2 and NSS report them: AES in bytes, all flags. */
    out->ulMinKeySize = 16;
    out->ulMaxKeySize = 32;
    out->flags = CKF_ENCRYPT | CKF_DECRYPT | CKF_GENERATE | CKF_SIGN | CKF_VERIFY;
    return CKR_OK;
}

static int fake_mechs(void **state)
{
    fake_good_key(state);
    memset(&mech, 0, sizeof(mech));
    fake_functions.C_GetMechanismInfo = fake_mech_info;
    return 0;
}

static void expect_mech_refused(const char *a, const char *b)
{
    assert_int_equal(kms_p11_check_mechanisms(&fake_p11), KMS_EPRECOND);
    if (strstr(kms_error_detail(), a) == NULL ||
        (b != NULL && strstr(kms_error_detail(), b) == NULL))
        fail_msg("detail \"%s\" does not say \"%s\" and \"%s\"", kms_error_detail(), a, b ? b : "");
}

static void mechanisms_checked(void **state)
{
    (void)state;
    assert_int_equal(kms_p11_check_mechanisms(&fake_p11), KMS_OK);

    static const struct {
        CK_MECHANISM_TYPE t;
        const char *name;
    } needed[] = {{CKM_AES_GCM, "CKM_AES_GCM"},
                  {CKM_AES_KEY_GEN, "CKM_AES_KEY_GEN"},
                  {CKM_SHA256_HMAC, "CKM_SHA256_HMAC"},
                  {CKM_GENERIC_SECRET_KEY_GEN, "CKM_GENERIC_SECRET_KEY_GEN"}};
    for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
        memset(&mech, 0, sizeof(mech));
        mech.missing = needed[i].t;
        mech.have_missing = 1;
        expect_mech_refused("does not offer", needed[i].name);
    }

    /* Each flag on its own. */
    static const struct {
        CK_MECHANISM_TYPE t;
        CK_FLAGS flags;
        const char *why;
    } flags[] = {
        {CKM_AES_GCM, CKF_DECRYPT, "CKM_AES_GCM without CKF_ENCRYPT"},
        {CKM_AES_GCM, CKF_ENCRYPT, "CKM_AES_GCM without CKF_DECRYPT"},
        {CKM_AES_KEY_GEN, CKF_ENCRYPT, "CKM_AES_KEY_GEN without CKF_GENERATE"},
        {CKM_SHA256_HMAC, CKF_VERIFY, "CKM_SHA256_HMAC without CKF_SIGN"},
        {CKM_GENERIC_SECRET_KEY_GEN, 0, "CKM_GENERIC_SECRET_KEY_GEN without CKF_GENERATE"},
    };
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        memset(&mech, 0, sizeof(mech));
        mech.changed = flags[i].t;
        mech.have_changed = 1;
        mech.info = (CK_MECHANISM_INFO){16, 32, flags[i].flags};
        expect_mech_refused(flags[i].why, NULL);
    }

    /* Key sizes: 32 bytes or 256 bits fits; AES-128 only does not, in
     * either unit; nor does a range below or above 256 bits. */
    static const struct {
        CK_ULONG min, max;
        int ok;
    } sizes[] = {{16, 32, 1},          {32, 32, 1},    {128, 256, 1}, {256, 256, 1},
                 {1, 0x80000000UL, 1}, {16, 16, 0},    {128, 128, 0}, {16, 24, 0},
                 {33, 255, 0},         {512, 4096, 0}, {0, 0, 0}};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        memset(&mech, 0, sizeof(mech));
        mech.changed = CKM_AES_KEY_GEN;
        mech.have_changed = 1;
        mech.info = (CK_MECHANISM_INFO){sizes[i].min, sizes[i].max, CKF_GENERATE};
        if (sizes[i].ok) {
            assert_int_equal(kms_p11_check_mechanisms(&fake_p11), KMS_OK);
        } else {
            char want[96];
            snprintf(want, sizeof(want), "CKM_AES_KEY_GEN takes keys of %lu..%lu, not 256 bits",
                     sizes[i].min, sizes[i].max);
            expect_mech_refused(want, NULL);
        }
    }

    /* Another failure of the call is no verdict on the token: unavailable. */
    memset(&mech, 0, sizeof(mech));
    mech.rv = CKR_DEVICE_REMOVED;
    assert_int_equal(kms_p11_check_mechanisms(&fake_p11), KMS_EUNAVAIL);
    assert_non_null(strstr(kms_error_detail(), "CKR_DEVICE_REMOVED"));
}

static void wrong_type_or_length_refused(void **state)
{
    (void)state;
    CK_OBJECT_CLASS pub = CKO_PUBLIC_KEY;
    fake_set(CKA_CLASS, &pub, sizeof(pub));
    expect_refused("CKA_CLASS");

    fake_good_key(NULL);
    CK_KEY_TYPE des3 = CKK_DES3;
    fake_set(CKA_KEY_TYPE, &des3, sizeof(des3));
    expect_refused("CKA_KEY_TYPE is not CKK_AES");

    fake_good_key(NULL);
    CK_ULONG len16 = 16;
    fake_set(CKA_VALUE_LEN, &len16, sizeof(len16));
    expect_refused("CKA_VALUE_LEN is not 32");

    fake_good_key(NULL);
    fake_remove(CKA_VALUE_LEN);
    expect_refused("unreadable");

    fake_good_key(NULL);
    uint32_t wide = 1; /* a boolean answered with 4 bytes */
    fake_set(CKA_SENSITIVE, &wide, sizeof(wide));
    expect_refused("CKA_SENSITIVE");
}

static void absent_attributes(void **state)
{
    (void)state;
    /* An absent usage attribute means the usage is not allowed. */
    const CK_ATTRIBUTE_TYPE optional[] = {CKA_WRAP, CKA_UNWRAP, CKA_SIGN, CKA_VERIFY, CKA_DERIVE};
    for (size_t i = 0; i < sizeof(optional) / sizeof(optional[0]); i++)
        fake_remove(optional[i]);
    assert_int_equal(check(), KMS_OK);
    /* An absent safety attribute is not a pass. */
    const CK_ATTRIBUTE_TYPE required[] = {
        CKA_SENSITIVE, CKA_ALWAYS_SENSITIVE, CKA_EXTRACTABLE, CKA_NEVER_EXTRACTABLE,
        CKA_LOCAL,     CKA_PRIVATE,          CKA_MODIFIABLE};
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        fake_good_key(NULL);
        fake_remove(required[i]);
        expect_refused("unreadable (CKR_ATTRIBUTE_TYPE_INVALID)");
    }
}

static void readable_value_refused(void **state)
{
    (void)state;
    /* Every flag says "safe" but the token hands out the value anyway. */
    fake_find(CKA_VALUE)->sensitive = 0;
    expect_refused("CKA_VALUE is readable");
    /* A token without CKA_VALUE at all gives nothing away. */
    fake_good_key(NULL);
    fake_remove(CKA_VALUE);
    assert_int_equal(check(), KMS_OK);
}

static void lost_session_is_not_a_refusal(void **state)
{
    (void)state;
    /* The caller must heal and retry, not refuse the key for good. */
    fake.get_rv = CKR_SESSION_HANDLE_INVALID;
    assert_int_equal(check(), KMS_EUNAVAIL);
    fake.get_rv = CKR_DEVICE_REMOVED;
    assert_int_equal(check(), KMS_EUNAVAIL);
    fake.get_rv = CKR_FUNCTION_FAILED;
    assert_int_equal(check(), KMS_EKEYCHECK);
}

static void find_key_counts_objects(void **state)
{
    (void)state;
    uint8_t id[P11_ID_LEN] = {0};
    id[19] = 3;
    CK_OBJECT_HANDLE h = 0;
    assert_int_equal(kms_p11_find_key(&fake_p11, 1, id, &h), KMS_OK);
    assert_int_equal(h, 100);
    fake.find_results = 0;
    h = 7;
    assert_int_equal(kms_p11_find_key(&fake_p11, 1, id, &h), KMS_ENOTFOUND);
    assert_int_equal(h, 7); /* untouched */
    assert_non_null(strstr(kms_error_detail(), "kms:00000000000000000000000000000000:v3"));
    fake.find_results = 2;
    assert_int_equal(kms_p11_find_key(&fake_p11, 1, id, &h), KMS_EKEYCHECK);
    assert_non_null(strstr(kms_error_detail(), "two objects share its CKA_ID"));
    fake.find_results = 1;
    fake.find_rv = CKR_SESSION_CLOSED;
    assert_int_equal(kms_p11_find_key(&fake_p11, 1, id, &h), KMS_EUNAVAIL);
    assert_non_null(strstr(kms_error_detail(), "CKR_SESSION_CLOSED"));
}

static void labels(void **state)
{
    (void)state;
    uint8_t id[P11_ID_LEN];
    for (int i = 0; i < KMS_KEY_ID_LEN; i++)
        id[i] = (uint8_t)(0xf0 + i);
    id[16] = 0xff;
    id[17] = 0xff;
    id[18] = 0xff;
    id[19] = 0xfe;
    char label[P11_LABEL_MAX];
    kms_p11_label(id, label, sizeof(label));
    assert_string_equal(label, "kms:f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff:v4294967294");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(known_codes),
        cmocka_unit_test(session_loss_codes),
        cmocka_unit_test(unknown_codes_fail_closed),
        cmocka_unit_test(table_is_consistent),
        cmocka_unit_test_setup(good_key_passes, fake_good_key),
        cmocka_unit_test_setup(every_bool_rule_refuses, fake_good_key),
        cmocka_unit_test_setup(wrong_type_or_length_refused, fake_good_key),
        cmocka_unit_test_setup(absent_attributes, fake_good_key),
        cmocka_unit_test_setup(readable_value_refused, fake_good_key),
        cmocka_unit_test_setup(lost_session_is_not_a_refusal, fake_good_key),
        cmocka_unit_test_setup(find_key_counts_objects, fake_good_key),
        cmocka_unit_test_setup(nonlocal_rule, fake_good_key),
        cmocka_unit_test_setup(mechanisms_checked, fake_mechs),
        cmocka_unit_test(labels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
