/* Known answers through the code that does GCM and HKDF:
 *   - AES-256-GCM vectors (tests/vectors/gcm/aes256gcm.txt: McGrew & Viega
 *     test cases 13-16, NIST CAVP gcmEncryptExtIV256 / gcmDecrypt256 cases
 *     with their FAIL cases, and refusals of our own) on SoftHSM2, with the vector key
 *     imported as an AES object on the token the PKCS#11 backend opened and
 *     C_Encrypt / C_Decrypt called with the CK_GCM_PARAMS the backend builds
 *     (pkcs11/p11_backend.c wrap_op / unwrap_op; the backend's wrap draws
 *     its own IV, so the vector IV goes straight to C_EncryptInit); a
 *     refusal must map to KMS_EAUTH through kms_p11_decrypt_rv_to_error;
 *   - the same vectors through the archive format's AEAD (kms_archive_seal /
 *     kms_archive_open), for those whose IV is an archive nonce (prefix ‖
 *     segment index ‖ last flag 0/1) with no AAD (the archive uses none);
 *   - HKDF-SHA-256 (tests/vectors/hkdf/hkdf_sha256.txt: RFC 5869 A.1-A.3)
 *     through kms_archive_hkdf, the archive's key schedule.
 * Every "pass" vector must give exactly its ciphertext and tag, and its
 * plaintext back; every "fail" vector must be refused with no plaintext.
 * The loader itself is checked: a vector file with one wrong byte fails.
 *
 * Shown to fail: with kms_tpm2_gcm skipping the AAD, tpm2_software_gcm
 * fails on tc16 ("tpm2 ciphertext ‖ tag differs"); with ulTagBits at 96 in the CK_GCM_PARAMS here,
 * softhsm_gcm fails on tc13 ("ciphertext ‖ tag differs"); with the archive nonce's segment index
 * off by one (client/archive_format.c nonce()), archive_gcm fails on tc13; with kms_archive_hkdf
 * passing a zero-length salt, archive_hkdf fails on A.1. */
#include <openssl/evp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "archive_format.h"
#include "pkcs11/p11_internal.h"
#include "softhsm_fixture.h"
#include "tpm2/tpm2_internal.h"

#define MAXB 128

struct vec {
    char name[32];
    uint8_t key[MAXB], iv[MAXB], aad[MAXB], pt[MAXB], ct[MAXB], tag[MAXB];
    size_t key_len, iv_len, aad_len, pt_len, ct_len, tag_len;
    int pass;
};

struct hkdf_vec {
    char name[32];
    uint8_t ikm[MAXB], salt[MAXB], info[MAXB], okm[MAXB];
    size_t ikm_len, salt_len, info_len, okm_len;
};

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* "-" is empty. -1 on anything that is not lower-case hex of even length. */
static int unhex(const char *s, uint8_t *out, size_t *len)
{
    *len = 0;
    if (strcmp(s, "-") == 0)
        return 0;
    size_t n = strlen(s);
    if (n % 2 != 0 || n / 2 > MAXB)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    *len = n / 2;
    return 0;
}

/* Splits a line into space-separated fields. */
static size_t fields(char *line, char **f, size_t max)
{
    size_t n = 0;
    char *p = line;
    while (n < max) {
        while (*p == ' ')
            p++;
        if (*p == '\0' || *p == '\n')
            break;
        f[n++] = p;
        while (*p != '\0' && *p != ' ' && *p != '\n')
            p++;
        if (*p == '\0')
            break;
        *p++ = '\0';
    }
    return n;
}

static size_t load_gcm(const char *path, struct vec *v, size_t max)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[1024];
    size_t n = 0;
    while (fgets(line, sizeof(line), f)) {
        if (line[0] == '#' || line[0] == '\n')
            continue;
        char *w[8];
        assert_int_equal(fields(line, w, 8), 8);
        assert_true(n < max);
        struct vec *x = &v[n++];
        snprintf(x->name, sizeof(x->name), "%s", w[0]);
        assert_int_equal(unhex(w[1], x->key, &x->key_len), 0);
        assert_int_equal(unhex(w[2], x->iv, &x->iv_len), 0);
        assert_int_equal(unhex(w[3], x->aad, &x->aad_len), 0);
        assert_int_equal(unhex(w[4], x->pt, &x->pt_len), 0);
        assert_int_equal(unhex(w[5], x->ct, &x->ct_len), 0);
        assert_int_equal(unhex(w[6], x->tag, &x->tag_len), 0);
        assert_true(strcmp(w[7], "pass") == 0 || strcmp(w[7], "fail") == 0);
        x->pass = strcmp(w[7], "pass") == 0;
        assert_int_equal(x->key_len, 32);
        assert_int_equal(x->iv_len, 12);
        assert_int_equal(x->tag_len, 16);
        assert_int_equal(x->ct_len, x->pt_len);
    }
    fclose(f);
    return n;
}

/* ---- the reference: OpenSSL directly, to check the vectors themselves --------------- */

/* 0 if (key, iv, aad) decrypts ct‖tag to pt, -1 if refused or different. */
static int openssl_check(const struct vec *x)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    uint8_t out[MAXB];
    int len = 0, fin = 0, ok = c != NULL;
    ok = ok && EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, x->key, x->iv) == 1;
    ok = ok && (x->aad_len == 0 || EVP_DecryptUpdate(c, NULL, &len, x->aad, (int)x->aad_len) == 1);
    ok = ok && (x->ct_len == 0 || EVP_DecryptUpdate(c, out, &len, x->ct, (int)x->ct_len) == 1);
    ok = ok && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, (void *)x->tag) == 1;
    ok = ok && EVP_DecryptFinal_ex(c, out + len, &fin) == 1;
    ok = ok && (size_t)(len + fin) == x->pt_len && memcmp(out, x->pt, x->pt_len) == 0;
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : -1;
}

static char gcm_path[512], hkdf_path[512];

/* The vectors are what they say, and a wrong one is caught. */
static void vectors_are_sound(void **state)
{
    (void)state;
    static struct vec v[64];
    size_t n = load_gcm(gcm_path, v, 64);
    assert_true(n >= 27);
    for (size_t i = 0; i < n; i++) {
        fprintf(stderr, "  %s: %s\n", v[i].name, v[i].pass ? "pass" : "fail");
        assert_int_equal(openssl_check(&v[i]), v[i].pass ? 0 : -1);
    }
    /* One wrong byte in a pass vector's ciphertext or tag: refused. */
    v[2].ct[0] ^= 1;
    assert_int_equal(openssl_check(&v[2]), -1);
    v[2].ct[0] ^= 1;
    v[2].tag[15] ^= 0x80;
    assert_int_equal(openssl_check(&v[2]), -1);
}

/* ---- the TPM2 backend's software GCM ------------------------------------------------------ */

static void tpm2_software_gcm(void **state)
{
    (void)state;
    static struct vec v[64];
    size_t n = load_gcm(gcm_path, v, 64);
    EVP_CIPHER *aes = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    assert_non_null(aes);
    int checked = 0, refused = 0;
    for (size_t i = 0; i < n; i++) {
        struct vec *x = &v[i];
        uint8_t out[MAXB];
        kms_aead_io io;
        memset(&io, 0, sizeof(io));
        io.aad = x->aad;
        io.aad_len = x->aad_len;
        io.out = out;
        memcpy(io.iv, x->iv, KMS_GCM_IV_LEN);
        if (x->pass) {
            io.in = x->pt;
            io.in_len = x->pt_len;
            assert_int_equal(kms_tpm2_gcm(aes, x->key, &io, 1), 0);
            if (memcmp(out, x->ct, x->ct_len) != 0 || memcmp(io.tag, x->tag, 16) != 0)
                fail_msg("%s: tpm2 ciphertext ‖ tag differs", x->name);
        }
        memset(out, 0xa5, sizeof(out));
        io.in = x->ct;
        io.in_len = x->ct_len;
        memcpy(io.tag, x->tag, 16);
        int r = kms_tpm2_gcm(aes, x->key, &io, 0);
        if (x->pass) {
            assert_int_equal(r, 0);
            assert_memory_equal(out, x->pt, x->pt_len);
            checked++;
        } else {
            assert_int_equal(r, KMS_EAUTH);
            for (size_t j = 0; j < x->ct_len; j++) /* nothing unauthenticated left */
                assert_int_equal(out[j], 0);
            refused++;
        }
    }
    EVP_CIPHER_free(aes);
    fprintf(stderr, "  tpm2 software GCM: %d vectors matched, %d refused\n", checked, refused);
    assert_true(checked >= 4 && refused >= 5);
}

/* ---- SoftHSM2 through the backend's module and session ---------------------------------- */

static void softhsm_gcm(void **state)
{
    (void)state;
    static struct vec v[64];
    size_t n = load_gcm(gcm_path, v, 64);

    kms_test_token t;
    kms_test_token_create(&t, "kat");
    kms_p11_config cfg = kms_test_token_p11_config(&t);
    kms_backend *b = NULL;
    assert_int_equal(kms_p11_open(&cfg, &b), 0); /* initialized, logged in */
    CK_SLOT_ID slot;
    CK_FUNCTION_LIST_PTR f = kms_test_token_functions(&t, &slot);
    assert_non_null(f);
    CK_SESSION_HANDLE s;
    assert_int_equal(f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s),
                     CKR_OK);
    int checked = 0, refused = 0;
    for (size_t i = 0; i < n; i++) {
        struct vec *x = &v[i];
        /* The vector key as a session object: sensitive, encrypt/decrypt
         * only, as the backend's master keys (generated keys cannot be
         * given a value). */
        CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
        CK_KEY_TYPE kt = CKK_AES;
        CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
        CK_ATTRIBUTE tmpl[] = {
            {CKA_CLASS, &cls, sizeof(cls)},     {CKA_KEY_TYPE, &kt, sizeof(kt)},
            {CKA_TOKEN, &no, sizeof(no)},       {CKA_SENSITIVE, &yes, sizeof(yes)},
            {CKA_EXTRACTABLE, &no, sizeof(no)}, {CKA_ENCRYPT, &yes, sizeof(yes)},
            {CKA_DECRYPT, &yes, sizeof(yes)},   {CKA_VALUE, x->key, x->key_len},
        };
        CK_OBJECT_HANDLE h;
        assert_int_equal(f->C_CreateObject(s, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &h), CKR_OK);
        /* As wrap_op / unwrap_op build them. */
        uint8_t iv[12];
        memcpy(iv, x->iv, sizeof(iv));
        CK_GCM_PARAMS gcm = {
            .pIv = iv,
            .ulIvLen = KMS_GCM_IV_LEN,
            .ulIvBits = KMS_GCM_IV_LEN * 8,
            .pAAD = x->aad_len ? x->aad : NULL,
            .ulAADLen = x->aad_len,
            .ulTagBits = KMS_GCM_TAG_LEN * 8,
        };
        CK_MECHANISM mech = {CKM_AES_GCM, &gcm, sizeof(gcm)};
        uint8_t out[2 * MAXB], in[2 * MAXB];
        CK_ULONG out_len = sizeof(out);
        if (x->pass) {
            assert_int_equal(f->C_EncryptInit(s, &mech, h), CKR_OK);
            assert_int_equal(f->C_Encrypt(s, x->pt_len ? x->pt : in, x->pt_len, out, &out_len),
                             CKR_OK);
            if (out_len != x->ct_len + 16 || memcmp(out, x->ct, x->ct_len) != 0 ||
                memcmp(out + x->ct_len, x->tag, 16) != 0)
                fail_msg("%s: ciphertext ‖ tag differs", x->name);
        }
        memcpy(in, x->ct, x->ct_len);
        memcpy(in + x->ct_len, x->tag, 16);
        out_len = sizeof(out);
        assert_int_equal(f->C_DecryptInit(s, &mech, h), CKR_OK);
        CK_RV rv = f->C_Decrypt(s, in, x->ct_len + 16, out, &out_len);
        if (x->pass) {
            assert_int_equal(rv, CKR_OK);
            assert_int_equal(out_len, x->pt_len);
            assert_memory_equal(out, x->pt, x->pt_len);
            checked++;
        } else {
            if (rv == CKR_OK)
                fail_msg("%s: a bad vector decrypted", x->name);
            assert_int_equal(kms_p11_decrypt_rv_to_error(rv), KMS_EAUTH);
            refused++;
        }
        assert_int_equal(f->C_DestroyObject(s, h), CKR_OK);
    }
    fprintf(stderr, "  SoftHSM2: %d vectors matched, %d refused\n", checked, refused);
    assert_true(checked >= 4 && refused >= 5);
    f->C_CloseSession(s);
    b->ops->close(b);
    kms_test_token_destroy(&t);
}

/* ---- the archive format's AEAD ----------------------------------------------------------------
 */

static void archive_gcm(void **state)
{
    (void)state;
    static struct vec v[64];
    size_t n = load_gcm(gcm_path, v, 64);
    EVP_CIPHER *aes = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    assert_non_null(aes);
    int checked = 0, refused = 0;
    for (size_t i = 0; i < n; i++) {
        struct vec *x = &v[i];
        /* An archive nonce: prefix(7) ‖ index (u32 BE) ‖ last (0 or 1). */
        if (x->aad_len != 0 || x->iv[11] > 1)
            continue;
        uint32_t index = kms_archive_get32(x->iv + KMS_ARCHIVE_PREFIX_LEN);
        int last = x->iv[11];
        uint8_t out[2 * MAXB], in[2 * MAXB];
        if (x->pass) {
            kms_archive_cipher enc;
            assert_int_equal(kms_archive_cipher_init(&enc, aes, x->key, 1), 0);
            assert_int_equal(kms_archive_seal(&enc, x->iv, index, last, x->pt, x->pt_len, out), 0);
            kms_archive_cipher_free(&enc);
            if (memcmp(out, x->ct, x->ct_len) != 0 || memcmp(out + x->ct_len, x->tag, 16) != 0)
                fail_msg("%s: archive ciphertext ‖ tag differs", x->name);
        }
        memcpy(in, x->ct, x->ct_len);
        memcpy(in + x->ct_len, x->tag, 16);
        kms_archive_cipher dec;
        assert_int_equal(kms_archive_cipher_init(&dec, aes, x->key, 0), 0);
        int r = kms_archive_open(&dec, x->iv, index, last, in, x->ct_len + 16, out);
        kms_archive_cipher_free(&dec);
        if (x->pass) {
            assert_int_equal(r, 0);
            assert_memory_equal(out, x->pt, x->pt_len);
            checked++;
        } else {
            assert_int_equal(r, KMS_CLIENT_ECORRUPT);
            refused++;
        }
    }
    EVP_CIPHER_free(aes);
    fprintf(stderr, "  archive: %d vectors matched, %d refused\n", checked, refused);
    assert_true(checked >= 2 && refused >= 3);
}

/* ---- HKDF-SHA-256 ---------------------------------------------------------------------------- */

static void archive_hkdf(void **state)
{
    (void)state;
    FILE *f = fopen(hkdf_path, "r");
    assert_non_null(f);
    char line[1024];
    int checked = 0;
    while (fgets(line, sizeof(line), f)) {
        if (line[0] == '#' || line[0] == '\n')
            continue;
        char *w[6];
        assert_int_equal(fields(line, w, 6), 6);
        struct hkdf_vec x;
        snprintf(x.name, sizeof(x.name), "%s", w[0]);
        assert_int_equal(unhex(w[1], x.ikm, &x.ikm_len), 0);
        assert_int_equal(unhex(w[2], x.salt, &x.salt_len), 0);
        assert_int_equal(unhex(w[3], x.info, &x.info_len), 0);
        assert_int_equal(unhex(w[5], x.okm, &x.okm_len), 0);
        char *end;
        assert_int_equal((size_t)strtoul(w[4], &end, 10), x.okm_len);
        uint8_t out[MAXB];
        assert_int_equal(kms_archive_hkdf(x.ikm, x.ikm_len, x.salt, x.salt_len, x.info, x.info_len,
                                          out, x.okm_len),
                         0);
        if (memcmp(out, x.okm, x.okm_len) != 0)
            fail_msg("HKDF %s differs", x.name);
        /* One bit of the expected output changed: no longer equal. */
        x.okm[0] ^= 1;
        assert_memory_not_equal(out, x.okm, x.okm_len);
        checked++;
    }
    fclose(f);
    assert_int_equal(checked, 3);
}

int main(void)
{
    snprintf(gcm_path, sizeof(gcm_path), "%s/gcm/aes256gcm.txt", KMS_VECTORS);
    snprintf(hkdf_path, sizeof(hkdf_path), "%s/hkdf/hkdf_sha256.txt", KMS_VECTORS);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(vectors_are_sound), cmocka_unit_test(tpm2_software_gcm),
        cmocka_unit_test(softhsm_gcm),       cmocka_unit_test(archive_gcm),
        cmocka_unit_test(archive_hkdf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
