/* Finding a master key version (or the state-integrity key) on the token
 * and checking it is safe.
 *
 * A key is used only if the token says it is an AES-256 secret key that is
 * sensitive, always was, is not extractable and never was, was generated
 * on the token (local), is a private token object (usable only after
 * login), cannot be modified, may encrypt and decrypt and nothing else, and its value cannot
 * be read. Anything else is refused loudly (error detail and log line),
 * naming the first failing attribute. */
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "p11_internal.h"

void kms_p11_label(const uint8_t id[P11_ID_LEN], char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    char idhex[2 * KMS_KEY_ID_LEN + 1];
    for (int i = 0; i < KMS_KEY_ID_LEN; i++) {
        idhex[2 * i] = hex[id[i] >> 4];
        idhex[2 * i + 1] = hex[id[i] & 15];
    }
    idhex[2 * KMS_KEY_ID_LEN] = '\0';
    uint32_t v = (uint32_t)id[16] << 24 | (uint32_t)id[17] << 16 | (uint32_t)id[18] << 8 | id[19];
    snprintf(out, cap, "kms:%s:v%u", idhex, v);
}

static int refuse(const char *label, const char *why)
{
    int r = kms_error_set(KMS_EKEYCHECK, "key %s refused: %s", label, why);
    kms_log_error("pkcs11: key %s refused: %s", label, why);
    return r;
}

/* A failed C_* call in the lookup or the check: the session-loss codes come
 * back as KMS_EUNAVAIL (the caller heals); anything else is as mapped. */
static int call_failed(CK_RV rv, const char *what)
{
    return kms_error_set(kms_p11_rv_to_error(rv), "pkcs11: %s: %s", what, kms_p11_rv_name(rv));
}

/* The one object of class cls with CKA_ID id (id_len bytes), called label
 * in messages. */
static int find_object(struct p11 *p, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls, const uint8_t *id,
                       size_t id_len, const char *label, CK_OBJECT_HANDLE *out)
{
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_ID, (void *)id, id_len},
    };
    CK_RV rv = p->f->C_FindObjectsInit(s, tmpl, 2);
    if (rv != CKR_OK)
        return call_failed(rv, "C_FindObjectsInit");
    CK_OBJECT_HANDLE found[2];
    CK_ULONG n = 0;
    rv = p->f->C_FindObjects(s, found, 2, &n);
    CK_RV frv = p->f->C_FindObjectsFinal(s);
    if (rv == CKR_OK)
        rv = frv;
    if (rv != CKR_OK)
        return call_failed(rv, "C_FindObjects");
    if (n == 0)
        return kms_error_set(KMS_ENOTFOUND, "pkcs11: no key %s on token \"%s\"", label, p->label);
    if (n > 1)
        return refuse(label, "two objects share its CKA_ID");
    *out = found[0];
    return KMS_OK;
}

static int find_secret(struct p11 *p, CK_SESSION_HANDLE s, const uint8_t *id, size_t id_len,
                       const char *label, CK_OBJECT_HANDLE *out)
{
    return find_object(p, s, CKO_SECRET_KEY, id, id_len, label, out);
}

int kms_p11_find_key(struct p11 *p, CK_SESSION_HANDLE s, const uint8_t id[P11_ID_LEN],
                     CK_OBJECT_HANDLE *out)
{
    char label[P11_LABEL_MAX];
    kms_p11_label(id, label, sizeof(label));
    return find_secret(p, s, id, P11_ID_LEN, label, out);
}

int kms_p11_find_state_key(struct p11 *p, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE *out)
{
    return find_secret(p, s, (const uint8_t *)P11_STATE_KEY_ID, sizeof(P11_STATE_KEY_ID) - 1,
                       P11_STATE_KEY_LABEL, out);
}

struct bool_rule {
    CK_ATTRIBUTE_TYPE type;
    const char *name;
    CK_BBOOL want;
    int may_be_absent; /* an absent usage attribute means FALSE */
};

/* In the order they are checked: the first failing one is reported. */
static const struct bool_rule bool_rules[] = {
    {CKA_TOKEN, "CKA_TOKEN", CK_TRUE, 0},
    /* A public key object is usable by any session, without the PIN. */
    {CKA_PRIVATE, "CKA_PRIVATE", CK_TRUE, 0},
    {CKA_SENSITIVE, "CKA_SENSITIVE", CK_TRUE, 0},
    {CKA_EXTRACTABLE, "CKA_EXTRACTABLE", CK_FALSE, 0},
    /* Was never readable or exportable in its life ... */
    {CKA_ALWAYS_SENSITIVE, "CKA_ALWAYS_SENSITIVE", CK_TRUE, 0},
    {CKA_NEVER_EXTRACTABLE, "CKA_NEVER_EXTRACTABLE", CK_TRUE, 0},
    /* ... and was generated on the token, never imported. */
    {CKA_LOCAL, "CKA_LOCAL", CK_TRUE, 0},
    /* Its attributes cannot be changed afterwards (a modifiable key could be
     * given CKA_WRAP or CKA_DERIVE by anyone holding the PIN). */
    {CKA_MODIFIABLE, "CKA_MODIFIABLE", CK_FALSE, 0},
    {CKA_ENCRYPT, "CKA_ENCRYPT", CK_TRUE, 0},
    {CKA_DECRYPT, "CKA_DECRYPT", CK_TRUE, 0},
    {CKA_WRAP, "CKA_WRAP", CK_FALSE, 1},
    {CKA_UNWRAP, "CKA_UNWRAP", CK_FALSE, 1},
    {CKA_SIGN, "CKA_SIGN", CK_FALSE, 1},
    {CKA_VERIFY, "CKA_VERIFY", CK_FALSE, 1},
    {CKA_DERIVE, "CKA_DERIVE", CK_FALSE, 1},
};

/* The state-integrity key: the same life (token, private, sensitive and
 * never extractable since it was generated on the token), but it may only
 * sign and verify (HMAC), nothing else. */
static const struct bool_rule state_rules[] = {
    {CKA_TOKEN, "CKA_TOKEN", CK_TRUE, 0},
    {CKA_PRIVATE, "CKA_PRIVATE", CK_TRUE, 0},
    {CKA_SENSITIVE, "CKA_SENSITIVE", CK_TRUE, 0},
    {CKA_EXTRACTABLE, "CKA_EXTRACTABLE", CK_FALSE, 0},
    {CKA_ALWAYS_SENSITIVE, "CKA_ALWAYS_SENSITIVE", CK_TRUE, 0},
    {CKA_NEVER_EXTRACTABLE, "CKA_NEVER_EXTRACTABLE", CK_TRUE, 0},
    {CKA_LOCAL, "CKA_LOCAL", CK_TRUE, 0},
    /* Not modifiable, as the master keys: its usage cannot be widened. */
    {CKA_MODIFIABLE, "CKA_MODIFIABLE", CK_FALSE, 0},
    {CKA_SIGN, "CKA_SIGN", CK_TRUE, 0},
    {CKA_ENCRYPT, "CKA_ENCRYPT", CK_FALSE, 1},
    {CKA_DECRYPT, "CKA_DECRYPT", CK_FALSE, 1},
    {CKA_WRAP, "CKA_WRAP", CK_FALSE, 1},
    {CKA_UNWRAP, "CKA_UNWRAP", CK_FALSE, 1},
    {CKA_DERIVE, "CKA_DERIVE", CK_FALSE, 1},
};

/* What a kind of key must be: its type, its length and its flags. */
struct key_profile {
    CK_KEY_TYPE type;
    const char *type_why;
    const char *len_why;
    const struct bool_rule *rules;
    size_t n_rules;
};

static const struct key_profile aes_profile = {
    CKK_AES,
    "CKA_KEY_TYPE is not CKK_AES",
    "CKA_VALUE_LEN is not 32 (AES-256)",
    bool_rules,
    sizeof(bool_rules) / sizeof(bool_rules[0]),
};

static const struct key_profile state_profile = {
    CKK_GENERIC_SECRET,
    "CKA_KEY_TYPE is not CKK_GENERIC_SECRET",
    "CKA_VALUE_LEN is not 32 (256-bit HMAC key)",
    state_rules,
    sizeof(state_rules) / sizeof(state_rules[0]),
};

static int check_rules(struct p11 *p, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, const char *label,
                       const struct bool_rule *rules, size_t n_rules);
static int check_value_hidden(struct p11 *p, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                              const char *label);

static int check_object(struct p11 *p, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, const char *label,
                        const struct key_profile *prof)
{
    CK_OBJECT_CLASS cls = 0;
    CK_KEY_TYPE type = 0;
    CK_ULONG value_len = 0;
    CK_ATTRIBUTE basic[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_KEY_TYPE, &type, sizeof(type)},
        {CKA_VALUE_LEN, &value_len, sizeof(value_len)},
    };
    CK_RV rv = p->f->C_GetAttributeValue(s, h, basic, 3);
    if (rv != CKR_OK) {
        if (kms_p11_rv_session_lost(rv))
            return call_failed(rv, "C_GetAttributeValue");
        char why[96];
        snprintf(why, sizeof(why), "class, key type or length unreadable (%s)",
                 kms_p11_rv_name(rv));
        return refuse(label, why);
    }
    if (basic[0].ulValueLen != sizeof(cls) || cls != CKO_SECRET_KEY)
        return refuse(label, "CKA_CLASS is not CKO_SECRET_KEY");
    if (basic[1].ulValueLen != sizeof(type) || type != prof->type)
        return refuse(label, prof->type_why);
    if (basic[2].ulValueLen != sizeof(value_len) || value_len != 32)
        return refuse(label, prof->len_why);

    KMS_GUARD(check_rules(p, s, h, label, prof->rules, prof->n_rules));
    return check_value_hidden(p, s, h, label);
}

/* One attribute per call, so an absent one is told apart from the rest. */
static int check_rules(struct p11 *p, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, const char *label,
                       const struct bool_rule *rules, size_t n_rules)
{
    CK_RV rv;
    for (size_t i = 0; i < n_rules; i++) {
        const struct bool_rule *rule = &rules[i];
        CK_BBOOL v = CK_FALSE;
        CK_ATTRIBUTE a = {rule->type, &v, sizeof(v)};
        rv = p->f->C_GetAttributeValue(s, h, &a, 1);
        if (rv != CKR_OK) {
            if (kms_p11_rv_session_lost(rv))
                return call_failed(rv, "C_GetAttributeValue");
            if (rv == CKR_ATTRIBUTE_TYPE_INVALID && rule->may_be_absent)
                continue;
            char why[96];
            snprintf(why, sizeof(why), "%s unreadable (%s)", rule->name, kms_p11_rv_name(rv));
            return refuse(label, why);
        }
        if (a.ulValueLen != sizeof(v)) {
            char why[96];
            snprintf(why, sizeof(why), "%s is not a CK_BBOOL", rule->name);
            return refuse(label, why);
        }
        /* CKA_LOCAL FALSE with CKA_ALWAYS_SENSITIVE and
         * CKA_NEVER_EXTRACTABLE TRUE (checked above, so both hold here):
         * accepted only when configured (docs/pkcs11.md). */
        if (rule->type == CKA_LOCAL && v == CK_FALSE && p->allow_nonlocal)
            continue;
        if ((v != CK_FALSE) != (rule->want != CK_FALSE)) {
            char why[96];
            snprintf(why, sizeof(why), "%s is %s%s", rule->name, v ? "TRUE" : "FALSE",
                     rule->type == CKA_LOCAL
                         ? " (not generated on the token; see pkcs11.allow_nonlocal_keys)"
                         : "");
            return refuse(label, why);
        }
    }

    return KMS_OK;
}

/* The token must refuse to reveal the value. Asked for its length only
 * (pValue NULL), so no key byte is ever copied into this process even if
 * the token would hand it out. */
static int check_value_hidden(struct p11 *p, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                              const char *label)
{
    CK_ATTRIBUTE va = {CKA_VALUE, NULL, 0};
    CK_RV rv = p->f->C_GetAttributeValue(s, h, &va, 1);
    if (kms_p11_rv_session_lost(rv))
        return call_failed(rv, "C_GetAttributeValue");
    if ((rv == CKR_OK || rv == CKR_BUFFER_TOO_SMALL) && va.ulValueLen != CK_UNAVAILABLE_INFORMATION)
        return refuse(label, "CKA_VALUE is readable");
    return KMS_OK;
}

int kms_p11_check_key(struct p11 *p, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, const char *label)
{
    return check_object(p, s, h, label, &aes_profile);
}

int kms_p11_check_state_key(struct p11 *p, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h)
{
    return check_object(p, s, h, P11_STATE_KEY_LABEL, &state_profile);
}

/* ---- the audit signing key --------------------------------------------------------------- */

/* The audit key's private half: the life of the master keys (token,
 * private, sensitive and never extractable since it was generated on the
 * token, not modifiable), and it may sign and do nothing else. */
static const struct bool_rule audit_rules[] = {
    {CKA_TOKEN, "CKA_TOKEN", CK_TRUE, 0},
    {CKA_PRIVATE, "CKA_PRIVATE", CK_TRUE, 0},
    {CKA_SENSITIVE, "CKA_SENSITIVE", CK_TRUE, 0},
    {CKA_EXTRACTABLE, "CKA_EXTRACTABLE", CK_FALSE, 0},
    {CKA_ALWAYS_SENSITIVE, "CKA_ALWAYS_SENSITIVE", CK_TRUE, 0},
    {CKA_NEVER_EXTRACTABLE, "CKA_NEVER_EXTRACTABLE", CK_TRUE, 0},
    {CKA_LOCAL, "CKA_LOCAL", CK_TRUE, 0},
    {CKA_MODIFIABLE, "CKA_MODIFIABLE", CK_FALSE, 0},
    {CKA_SIGN, "CKA_SIGN", CK_TRUE, 0},
    {CKA_SIGN_RECOVER, "CKA_SIGN_RECOVER", CK_FALSE, 1},
    {CKA_DECRYPT, "CKA_DECRYPT", CK_FALSE, 1},
    {CKA_UNWRAP, "CKA_UNWRAP", CK_FALSE, 1},
    {CKA_DERIVE, "CKA_DERIVE", CK_FALSE, 1},
};

/* DER of the named curve prime256v1 (1.2.840.10045.3.1.7). */
const uint8_t kms_p11_p256_params[P11_P256_PARAMS_LEN] = {0x06, 0x08, 0x2a, 0x86, 0x48,
                                                          0xce, 0x3d, 0x03, 0x01, 0x07};

int kms_p11_find_audit_key(struct p11 *p, CK_SESSION_HANDLE s, int public_half,
                           CK_OBJECT_HANDLE *out)
{
    return find_object(p, s, public_half ? CKO_PUBLIC_KEY : CKO_PRIVATE_KEY,
                       (const uint8_t *)P11_AUDIT_KEY_ID, sizeof(P11_AUDIT_KEY_ID) - 1,
                       P11_AUDIT_KEY_LABEL, out);
}

/* class, key type and curve of an audit key half */
static int check_ec_object(struct p11 *p, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                           CK_OBJECT_CLASS want_cls, const char *cls_why)
{
    CK_OBJECT_CLASS cls = 0;
    CK_KEY_TYPE type = 0;
    uint8_t params[32];
    CK_ATTRIBUTE basic[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_KEY_TYPE, &type, sizeof(type)},
        {CKA_EC_PARAMS, params, sizeof(params)},
    };
    CK_RV rv = p->f->C_GetAttributeValue(s, h, basic, 3);
    if (rv != CKR_OK) {
        if (kms_p11_rv_session_lost(rv))
            return call_failed(rv, "C_GetAttributeValue");
        char why[96];
        snprintf(why, sizeof(why), "class, key type or curve unreadable (%s)", kms_p11_rv_name(rv));
        return refuse(P11_AUDIT_KEY_LABEL, why);
    }
    if (basic[0].ulValueLen != sizeof(cls) || cls != want_cls)
        return refuse(P11_AUDIT_KEY_LABEL, cls_why);
    if (basic[1].ulValueLen != sizeof(type) || type != CKK_EC)
        return refuse(P11_AUDIT_KEY_LABEL, "CKA_KEY_TYPE is not CKK_EC");
    if (basic[2].ulValueLen != P11_P256_PARAMS_LEN ||
        memcmp(params, kms_p11_p256_params, P11_P256_PARAMS_LEN) != 0)
        return refuse(P11_AUDIT_KEY_LABEL, "CKA_EC_PARAMS is not the curve P-256");
    return KMS_OK;
}

int kms_p11_check_audit_key(struct p11 *p, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h)
{
    KMS_GUARD(check_ec_object(p, s, h, CKO_PRIVATE_KEY, "CKA_CLASS is not CKO_PRIVATE_KEY"));
    KMS_GUARD(check_rules(p, s, h, P11_AUDIT_KEY_LABEL, audit_rules,
                          sizeof(audit_rules) / sizeof(audit_rules[0])));
    return check_value_hidden(p, s, h, P11_AUDIT_KEY_LABEL);
}

int kms_p11_audit_point(struct p11 *p, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                        uint8_t pub[KMS_AUDIT_PUB_LEN])
{
    uint8_t point[KMS_AUDIT_PUB_LEN + 2];
    KMS_GUARD(check_ec_object(p, s, h, CKO_PUBLIC_KEY, "CKA_CLASS is not CKO_PUBLIC_KEY"));
    CK_ATTRIBUTE a = {CKA_EC_POINT, point, sizeof(point)};
    CK_RV rv = p->f->C_GetAttributeValue(s, h, &a, 1);
    if (rv != CKR_OK) {
        if (kms_p11_rv_session_lost(rv))
            return call_failed(rv, "C_GetAttributeValue");
        return refuse(P11_AUDIT_KEY_LABEL, "CKA_EC_POINT unreadable");
    }
    /* The standard says DER OCTET STRING (04 41 ‖ point); some tokens give
     * the bare point. Either way: uncompressed, 65 bytes. */
    const uint8_t *at = point;
    size_t n = a.ulValueLen;
    if (n == KMS_AUDIT_PUB_LEN + 2 && point[0] == 0x04 && point[1] == KMS_AUDIT_PUB_LEN) {
        at += 2;
        n -= 2;
    }
    if (n != KMS_AUDIT_PUB_LEN || at[0] != 0x04)
        return refuse(P11_AUDIT_KEY_LABEL, "CKA_EC_POINT is not an uncompressed P-256 point");
    memcpy(pub, at, KMS_AUDIT_PUB_LEN);
    return KMS_OK;
}
