/* libkmsclient: officer signing keys. Signs approval digests with a PEM
 * private key or a key on a PKCS#11 token (OpenSSL's pkcs11 engine, from
 * libp11), and generates key pairs. */
/* The engine API is deprecated in OpenSSL 3, but it is how libp11 plugs in;
 * this must precede every OpenSSL header. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <openssl/engine.h>

#include "base/file.h"
#include "client_internal.h"

/* "p256" or "ed25519" for a usable officer key, else NULL. */
static const char *key_kind(EVP_PKEY *pk)
{
    if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_ED25519)
        return "ed25519";
    if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_EC) {
        char group[64] = "";
        if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                           NULL) == 1 &&
            (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0))
            return "p256";
        /* A token key's group may not be readable through the engine; the
         * server checks the signature against the enrolled key anyway. */
        if (group[0] == '\0')
            return "p256";
    }
    return NULL;
}

static EVP_PKEY *load_pkcs11(const char *uri, kms_client_error *err, int *r)
{
    ENGINE_load_builtin_engines();
    ENGINE *e = ENGINE_by_id("pkcs11");
    if (e == NULL) {
        *r = kms_client_fail(
            err, KMS_CLIENT_EFILE,
            "the pkcs11 engine is not installed (Debian: libengine-pkcs11-openssl)");
        return NULL;
    }
    const char *module = getenv("KMS_PKCS11_MODULE");
    if ((module != NULL && ENGINE_ctrl_cmd_string(e, "MODULE_PATH", module, 0) != 1) ||
        ENGINE_init(e) != 1) {
        ENGINE_free(e);
        *r = kms_client_fail(err, KMS_CLIENT_EFILE, "the pkcs11 engine does not start");
        return NULL;
    }
    EVP_PKEY *pk = ENGINE_load_private_key(e, uri, NULL, NULL);
    ENGINE_finish(e);
    ENGINE_free(e);
    if (pk == NULL)
        *r = kms_client_fail(err, KMS_CLIENT_EFILE, "no private key at that pkcs11: URI");
    return pk;
}

/* The officer's private key file is a secret file (regular, 0600 or
 * stricter, not a symlink, owned by this user or root), read into locked
 * memory and parsed from there. */
#define SIGNING_KEY_MAX (64 * 1024)

static EVP_PKEY *load_pem(const char *path, kms_client_error *err, int *r)
{
    kms_secret *pem = NULL;
    int rc = kms_file_read_secret(path, SIGNING_KEY_MAX, &pem);
    if (rc != 0) {
        *r = kms_client_fail(err, rc == KMS_ENOMEM ? KMS_CLIENT_ENOMEM : KMS_CLIENT_EFILE,
                             "signing key: %s", kms_error_detail());
        return NULL;
    }
    EVP_PKEY *pk = NULL;
    BIO *bio = BIO_new_mem_buf(pem->data, (int)pem->len);
    if (bio != NULL)
        pk = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    kms_secret_free(pem);
    if (pk == NULL)
        *r = kms_client_fail(err, KMS_CLIENT_EFILE, "signing key %s: not a PEM private key", path);
    return pk;
}

KMS_CLIENT_API int kms_client_sign_digest(const char *key, const uint8_t digest[32], uint8_t *sig,
                                          size_t *sig_len, kms_client_error *err)
{
    int r = KMS_CLIENT_OK;
    if (key == NULL || digest == NULL || sig == NULL || sig_len == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "no signing key");
    EVP_PKEY *pk =
        strncmp(key, "pkcs11:", 7) == 0 ? load_pkcs11(key, err, &r) : load_pem(key, err, &r);
    if (pk == NULL)
        return r;
    const char *kind = key_kind(pk);
    EVP_MD_CTX *md = NULL;
    if (kind == NULL) {
        r = kms_client_fail(err, KMS_CLIENT_EARG,
                            "officer signing keys are ECDSA P-256 or Ed25519 only");
    } else if ((md = EVP_MD_CTX_new()) == NULL ||
               EVP_DigestSignInit(md, NULL, strcmp(kind, "ed25519") == 0 ? NULL : EVP_sha256(),
                                  NULL, pk) != 1 ||
               EVP_DigestSign(md, sig, sig_len, digest, 32) != 1) {
        r = kms_client_fail(err, KMS_CLIENT_EARG, "signing failed (signature buffer too small?)");
    }
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pk); /* frees (and wipes) the key material */
    return r;
}

KMS_CLIENT_API int kms_client_keygen(const char *type, const char *private_out,
                                     const char *public_out, kms_client_error *err)
{
    if (type == NULL || private_out == NULL || public_out == NULL)
        return kms_client_fail(err, KMS_CLIENT_EARG, "keygen needs a type and two files");
    EVP_PKEY *pk = NULL;
    if (strcmp(type, "p256") == 0)
        pk = EVP_EC_gen("P-256");
    else if (strcmp(type, "ed25519") == 0)
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    else
        return kms_client_fail(err, KMS_CLIENT_EARG, "key type must be p256 or ed25519");
    if (pk == NULL)
        return kms_client_fail(err, KMS_CLIENT_ENOMEM, "key generation failed");
    int r = KMS_CLIENT_OK;
    int fd = open(private_out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (f == NULL) {
        r = kms_client_fail(err, KMS_CLIENT_EFILE, "%s: %s (existing keys are never overwritten)",
                            private_out, strerror(errno));
        if (fd >= 0)
            close(fd);
    } else {
        int ok = PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) == 1;
        if (fclose(f) != 0 || !ok) {
            r = kms_client_fail(err, KMS_CLIENT_EFILE, "%s: write failed", private_out);
            unlink(private_out);
        }
    }
    if (r == 0) {
        f = fopen(public_out, "wx");
        if (f == NULL || PEM_write_PUBKEY(f, pk) != 1)
            r = kms_client_fail(err, KMS_CLIENT_EFILE, "%s: %s", public_out, strerror(errno));
        if (f != NULL && fclose(f) != 0 && r == 0)
            r = kms_client_fail(err, KMS_CLIENT_EFILE, "%s: write failed", public_out);
        if (r != 0)
            unlink(private_out);
    }
    EVP_PKEY_free(pk);
    return r;
}
