/* Loading a PKCS#11 module, finding the token by label, reading the PIN. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/file.h"
#include "base/log.h"
#include "kms_p11.h"
#include "p11_internal.h"

/* The PIN is the first line of the PIN file: at most PIN_MAX bytes, in a
 * file of at most PIN_FILE_MAX. */
#define PIN_MAX 255
#define PIN_FILE_MAX 4096

/* init_args is handed to the module as is: bounded, and printable so it
 * can be logged and quoted in messages. */
static int check_init_args(const char *a)
{
    if (a == NULL)
        return KMS_OK;
    size_t n = strnlen(a, KMS_P11_INIT_ARGS_MAX + 1);
    if (n == 0 || n > KMS_P11_INIT_ARGS_MAX)
        return kms_error_set(KMS_EINVAL, "pkcs11: init_args must be 1..%d bytes",
                             KMS_P11_INIT_ARGS_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)a[i] < 0x20 || (unsigned char)a[i] > 0x7e)
            return kms_error_set(KMS_EINVAL,
                                 "pkcs11: init_args must be printable ASCII (byte %zu is not)", i);
    return KMS_OK;
}

int kms_p11_module_load(struct p11 *p, const char *path, const char *init_args)
{
    if (path == NULL || path[0] == '\0')
        return kms_error_set(KMS_EINVAL, "pkcs11: no module path");
    KMS_GUARD(check_init_args(init_args));
    if (init_args != NULL && (p->init_args = strdup(init_args)) == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    /* RTLD_NODELETE: the module stays mapped after dlclose. Modules keep
     * threads, thread-local destructors and atexit handlers that must not
     * outlive their code, and LeakSanitizer can only symbolize stacks in a
     * library that is still mapped at exit. */
    p->module = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (p->module == NULL)
        return kms_error_set(KMS_EUNAVAIL, "pkcs11: cannot load module %s: %s", path, dlerror());
    CK_C_GetFunctionList get = NULL;
    void *sym = dlsym(p->module, "C_GetFunctionList");
    memcpy(&get, &sym, sizeof(get)); /* object pointer to function pointer, portably */
    if (get == NULL || get(&p->f) != CKR_OK || p->f == NULL)
        return kms_error_set(KMS_EUNAVAIL, "pkcs11: %s has no usable C_GetFunctionList", path);

    CK_C_INITIALIZE_ARGS args;
    memset(&args, 0, sizeof(args));
    args.flags = CKF_OS_LOCKING_OK;
    /* The standard reserves pReserved (NULL); NSS softoken reads its
     * configuration there. Kept in p->init_args for the module's life. */
    args.pReserved = p->init_args;
    CK_RV rv = p->f->C_Initialize(&args);
    if (rv == CKR_OK)
        p->finalize_on_close = 1;
    else if (rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
        return kms_error_set(KMS_EUNAVAIL, "pkcs11: C_Initialize failed: %s%s", kms_p11_rv_name(rv),
                             p->init_args != NULL ? " (check pkcs11.init_args)" : "");
    return KMS_OK;
}

/* ---- mechanisms -------------------------------------------------------------------- */

/* What the backend calls, with which flags; every one takes 256-bit keys. */
struct mech_need {
    CK_MECHANISM_TYPE type;
    const char *name;
    const char *flag_names[2];
    CK_FLAGS flag_bits[2]; /* 0: no second flag */
    const char *use;
};

static const struct mech_need mech_needs[] = {
    {CKM_AES_GCM,
     "CKM_AES_GCM",
     {"CKF_ENCRYPT", "CKF_DECRYPT"},
     {CKF_ENCRYPT, CKF_DECRYPT},
     "wrap and unwrap"},
    {CKM_AES_KEY_GEN,
     "CKM_AES_KEY_GEN",
     {"CKF_GENERATE", NULL},
     {CKF_GENERATE, 0},
     "master key versions"},
    {CKM_SHA256_HMAC,
     "CKM_SHA256_HMAC",
     {"CKF_SIGN", NULL},
     {CKF_SIGN, 0},
     "the state-integrity MAC"},
    {CKM_GENERIC_SECRET_KEY_GEN,
     "CKM_GENERIC_SECRET_KEY_GEN",
     {"CKF_GENERATE", NULL},
     {CKF_GENERATE, 0},
     "the state-integrity key"},
};

/* A 256-bit key fits [min, max]. The standard gives AES key sizes in
 * bytes and generic-secret ones in bits, and modules differ (some report
 * AES in bits too): 32 bytes or 256 bits, either fits. */
static int fits_256(const CK_MECHANISM_INFO *mi)
{
    return (mi->ulMinKeySize <= 32 && 32 <= mi->ulMaxKeySize) ||
           (mi->ulMinKeySize <= 256 && 256 <= mi->ulMaxKeySize);
}

int kms_p11_check_mechanisms(struct p11 *p)
{
    for (size_t i = 0; i < sizeof(mech_needs) / sizeof(mech_needs[0]); i++) {
        const struct mech_need *m = &mech_needs[i];
        CK_MECHANISM_INFO mi;
        memset(&mi, 0, sizeof(mi));
        CK_RV rv = p->f->C_GetMechanismInfo(p->slot, m->type, &mi);
        if (rv == CKR_MECHANISM_INVALID)
            return kms_error_set(KMS_EPRECOND,
                                 "pkcs11: token \"%s\" does not offer %s (needed for %s)", p->label,
                                 m->name, m->use);
        if (rv != CKR_OK)
            return kms_error_set(KMS_EUNAVAIL, "pkcs11: C_GetMechanismInfo(%s): %s", m->name,
                                 kms_p11_rv_name(rv));
        for (size_t j = 0; j < 2; j++)
            if (m->flag_bits[j] != 0 && !(mi.flags & m->flag_bits[j]))
                return kms_error_set(KMS_EPRECOND,
                                     "pkcs11: token \"%s\" offers %s without %s (needed for %s)",
                                     p->label, m->name, m->flag_names[j], m->use);
        if (!fits_256(&mi))
            return kms_error_set(KMS_EPRECOND,
                                 "pkcs11: token \"%s\": %s takes keys of %lu..%lu, not 256 bits "
                                 "(needed for %s)",
                                 p->label, m->name, (unsigned long)mi.ulMinKeySize,
                                 (unsigned long)mi.ulMaxKeySize, m->use);
    }
    return KMS_OK;
}

void kms_p11_module_unload(struct p11 *p)
{
    if (p->f && p->finalize_on_close)
        p->f->C_Finalize(NULL);
    p->f = NULL;
    if (p->module)
        dlclose(p->module);
    p->module = NULL;
    free(p->init_args);
    p->init_args = NULL;
}

int kms_p11_find_slot(struct p11 *p, const char *label)
{
    size_t n = label ? strlen(label) : 0;
    if (n == 0 || n > 32)
        return kms_error_set(KMS_EINVAL, "pkcs11: token label must be 1..32 bytes");
    /* Labels are blank-padded to 32 bytes, not NUL-terminated. */
    CK_UTF8CHAR want[32];
    memset(want, ' ', sizeof(want));
    memcpy(want, label, n);
    memcpy(p->label, label, n + 1);

    CK_ULONG count = 0;
    CK_RV rv = p->f->C_GetSlotList(CK_TRUE, NULL, &count);
    if (rv != CKR_OK)
        return kms_error_set(KMS_EUNAVAIL, "pkcs11: C_GetSlotList: %s", kms_p11_rv_name(rv));
    if (count == 0)
        return kms_error_set(KMS_ENOTFOUND, "pkcs11: no token present");
    CK_SLOT_ID *slots = calloc(count, sizeof(*slots));
    if (slots == NULL)
        return kms_error_set(KMS_ENOMEM, "out of memory");
    int r = kms_error_set(KMS_ENOTFOUND, "pkcs11: no token labelled \"%s\"", label);
    int found = 0;
    rv = p->f->C_GetSlotList(CK_TRUE, slots, &count);
    for (CK_ULONG i = 0; rv == CKR_OK && i < count; i++) {
        CK_TOKEN_INFO ti;
        if (p->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
            continue;
        if (memcmp(ti.label, want, sizeof(want)) != 0)
            continue;
        if (found++) {
            r = kms_error_set(KMS_EINVAL, "pkcs11: two tokens are labelled \"%s\"", label);
            break;
        }
        p->slot = slots[i];
        if (!(ti.flags & CKF_TOKEN_INITIALIZED))
            r = kms_error_set(KMS_EPRECOND, "pkcs11: token \"%s\" is not initialized", label);
        else if (!(ti.flags & CKF_USER_PIN_INITIALIZED))
            r = kms_error_set(KMS_EPRECOND, "pkcs11: token \"%s\" has no user PIN", label);
        else if (ti.flags & CKF_USER_PIN_LOCKED)
            r = kms_error_set(KMS_EDENIED, "pkcs11: the user PIN of token \"%s\" is locked", label);
        else if (ti.flags & CKF_USER_PIN_FINAL_TRY)
            /* A wrong PIN now would lock the token: a service must not spend
             * the last attempt unattended. */
            r = kms_error_set(KMS_EPRECOND,
                              "pkcs11: token \"%s\" allows one more PIN attempt only; log in "
                              "by hand (e.g. pkcs11-tool --login) to reset the counter",
                              label);
        else
            r = KMS_OK;
    }
    if (rv != CKR_OK)
        r = kms_error_set(KMS_EUNAVAIL, "pkcs11: C_GetSlotList: %s", kms_p11_rv_name(rv));
    free(slots);
    return r;
}

int kms_p11_read_pin(const char *path, kms_secret **pin)
{
    if (path == NULL)
        return kms_error_set(KMS_EINVAL, "pkcs11: no PIN file");
    /* A secret file (regular, not a symlink, 0600, ours), read straight
     * into locked memory: the PIN is never in an ordinary buffer. The first
     * line is the PIN, at most PIN_MAX bytes. */
    kms_secret *buf = NULL;
    int r = kms_file_read_secret(path, PIN_FILE_MAX, &buf);
    if (r != 0) {
        char why[256];
        snprintf(why, sizeof(why), "%s", kms_error_detail()); /* the detail buffer is reused */
        return kms_error_set(r, "pkcs11: PIN file: %s", why);
    }
    size_t len = 0;
    while (len < buf->len && buf->data[len] != '\n' && buf->data[len] != '\r')
        len++;
    if (len == 0 || len > PIN_MAX) {
        kms_secret_free(buf);
        return kms_error_set(KMS_EINVAL, "pkcs11: PIN in %s is empty or too long", path);
    }
    kms_secret_truncate(buf, len);
    *pin = buf;
    return KMS_OK;
}

int kms_p11_module_reinit(struct p11 *p)
{
    p->f->C_Finalize(NULL); /* may fail: the module may think it is gone already */
    CK_C_INITIALIZE_ARGS args;
    memset(&args, 0, sizeof(args));
    args.flags = CKF_OS_LOCKING_OK;
    args.pReserved = p->init_args; /* the same arguments as the first time */
    CK_RV rv = p->f->C_Initialize(&args);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
        return kms_error_set(KMS_EUNAVAIL, "pkcs11: C_Initialize (again) failed: %s",
                             kms_p11_rv_name(rv));
    char label[sizeof(p->label)];
    memcpy(label, p->label, sizeof(label));
    if (kms_p11_find_slot(p, label) != 0) {
        char why[256];
        snprintf(why, sizeof(why), "%s", kms_error_detail()); /* the detail buffer is reused */
        return kms_error_set(KMS_EUNAVAIL, "pkcs11: after re-initializing: %s", why);
    }
    return KMS_OK;
}
