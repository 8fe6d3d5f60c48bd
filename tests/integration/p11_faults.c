/* Fault injection into a SoftHSM2 token (p11_faults.h). */
#include "p11_faults.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

kms_test_p11_faults kms_p11_faults;

/* Enough for the backend's largest unwrap input (4096 + 16-byte tag). */
#define P11_FAULTS_SINK (4096 + 16)

static CK_RV inj_open(CK_SLOT_ID slot, CK_FLAGS flags, void *app, CK_NOTIFY notify,
                      CK_SESSION_HANDLE_PTR s)
{
    atomic_fetch_add(&kms_p11_faults.opens, 1);
    CK_RV rv = atomic_load(&kms_p11_faults.open_rv);
    return rv != CKR_OK ? rv : kms_p11_faults.saved.C_OpenSession(slot, flags, app, notify, s);
}

static CK_RV inj_login(CK_SESSION_HANDLE s, CK_USER_TYPE u, CK_UTF8CHAR_PTR pin, CK_ULONG len)
{
    atomic_fetch_add(&kms_p11_faults.logins, 1);
    CK_RV rv = atomic_load(&kms_p11_faults.login_rv);
    return rv != CKR_OK ? rv : kms_p11_faults.saved.C_Login(s, u, pin, len);
}

static CK_RV inj_encrypt_init(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
{
    CK_RV rv = atomic_load(&kms_p11_faults.encrypt_init_rv);
    return rv != CKR_OK ? rv : kms_p11_faults.saved.C_EncryptInit(s, m, k);
}

static int inj_lose(void)
{
    unsigned n = atomic_load(&kms_p11_faults.lose_one_in);
    return n != 0 && atomic_fetch_add(&kms_p11_faults.aead_calls, 1) % n == n - 1;
}

static CK_RV inj_encrypt(CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG in_len, CK_BYTE_PTR out,
                         CK_ULONG_PTR out_len)
{
    CK_RV rv = atomic_exchange(&kms_p11_faults.encrypt_once_rv, CKR_OK);
    if (rv != CKR_OK)
        return rv; /* the operation stays active on the session */
    if (inj_lose())
        return CKR_SESSION_HANDLE_INVALID;
    return kms_p11_faults.saved.C_Encrypt(s, in, in_len, out, out_len);
}

static CK_RV inj_decrypt(CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG in_len, CK_BYTE_PTR out,
                         CK_ULONG_PTR out_len)
{
    if (inj_lose())
        return CKR_SESSION_HANDLE_INVALID;
    CK_RV rv = atomic_load(&kms_p11_faults.decrypt_rv);
    if (rv != CKR_OK) {
        /* End the operation as a failed single-part call does. */
        CK_BYTE sink[P11_FAULTS_SINK];
        CK_ULONG n = sizeof(sink);
        if (in_len <= sizeof(sink))
            kms_p11_faults.saved.C_Decrypt(s, in, in_len, sink, &n);
        return rv;
    }
    rv = kms_p11_faults.saved.C_Decrypt(s, in, in_len, out, out_len);
    if (rv == CKR_OK && out != NULL && *out_len > 0 && atomic_load(&kms_p11_faults.decrypt_corrupt))
        out[0] ^= 1;
    return rv;
}

static CK_RV inj_mech_info(CK_SLOT_ID slot, CK_MECHANISM_TYPE t, CK_MECHANISM_INFO_PTR info)
{
    if (atomic_load(&kms_p11_faults.hide_mech) && t == atomic_load(&kms_p11_faults.mech))
        return CKR_MECHANISM_INVALID;
    CK_RV rv = kms_p11_faults.saved.C_GetMechanismInfo(slot, t, info);
    if (rv == CKR_OK && t == atomic_load(&kms_p11_faults.mech))
        info->flags &= ~atomic_load(&kms_p11_faults.mech_flags_clear);
    return rv;
}

/* 1 if addr lies in a writable mapping of this process. */
static int writable(const void *addr)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    if (maps == NULL)
        return 0;
    char line[512];
    int ok = 0;
    uintptr_t a = (uintptr_t)addr;
    while (fgets(line, sizeof(line), maps)) {
        char *end;
        uintptr_t lo = (uintptr_t)strtoull(line, &end, 16);
        if (*end != '-')
            continue;
        uintptr_t hi = (uintptr_t)strtoull(end + 1, &end, 16);
        if (a >= lo && a + sizeof(CK_FUNCTION_LIST) <= hi) {
            ok = end[0] == ' ' && end[2] == 'w';
            break;
        }
    }
    fclose(maps);
    return ok;
}

int kms_p11_faults_install(const kms_test_token *t)
{
    CK_SLOT_ID slot;
    CK_FUNCTION_LIST_PTR list = kms_test_token_functions(t, &slot);
    memset(&kms_p11_faults, 0, sizeof(kms_p11_faults));
    if (list == NULL || !writable(list))
        return -1;
    kms_p11_faults.list = list;
    kms_p11_faults.saved = *list;
    list->C_OpenSession = inj_open;
    list->C_Login = inj_login;
    list->C_EncryptInit = inj_encrypt_init;
    list->C_Encrypt = inj_encrypt;
    list->C_Decrypt = inj_decrypt;
    list->C_GetMechanismInfo = inj_mech_info;
    return 0;
}

void kms_p11_faults_remove(void)
{
    if (kms_p11_faults.list != NULL)
        *kms_p11_faults.list = kms_p11_faults.saved;
    kms_p11_faults.list = NULL;
}
