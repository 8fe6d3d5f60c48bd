/* kmsd's audit signing key (contract in audit_key.h). */
#include "kmsd/audit/audit_key.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "base/log.h"

#define NO_BACKEND "no backend can hold the audit signing key (a PKCS#11 token or a TPM can)"

int kms_audit_signer_sign(void *ctx, const uint8_t digest[KMS_AUDIT_DIGEST_LEN],
                          uint8_t sig[KMS_AUDIT_SIG_LEN])
{
    kms_audit_signer *s = ctx;
    return s->b->ops->audit_sign(s->b, digest, sig);
}

/* Loads the public point and proves the private key belongs to it. */
static int load(kms_backend *b, kms_audit_signer *out)
{
    static const char probe[] = "kms audit signing probe v1";
    uint8_t md[KMS_AUDIT_DIGEST_LEN], sig[KMS_AUDIT_SIG_LEN];
    unsigned n = 0;
    kms_audit_signer s = {.b = b};
    KMS_GUARD(b->ops->audit_key_public(b, s.pub));
    if (EVP_Digest(probe, sizeof(probe) - 1, md, &n, EVP_sha256(), NULL) != 1)
        return kms_error_set(KMS_EINTERNAL, "audit: SHA-256 failed");
    KMS_GUARD(b->ops->audit_sign(b, md, sig));
    if (kms_audit_sig_check(s.pub, md, sig) != 0)
        return kms_error_set(KMS_EKEYCHECK,
                             "audit: the %s backend's audit signing key does not sign under the "
                             "public key it reports",
                             b->ops->name);
    KMS_GUARD(kms_audit_log_id(s.pub, s.log_id));
    *out = s;
    return KMS_OK;
}

/* Writes text to path through a temporary file and a rename. */
static int write_public(const char *path, const char *text)
{
    char tmp[4096];
    size_t len = strlen(text);
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
        return kms_error_set(KMS_EINVAL, "audit.pubkey_file: path too long");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return kms_error_set(KMS_EINVAL, "cannot write %s: %s", tmp, strerror(errno));
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    int ok = off == len && fchmod(fd, 0644) == 0 && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        (void)unlink(tmp);
        return kms_error_set(KMS_EINVAL, "cannot write %s: %s", path, strerror(e));
    }
    return KMS_OK;
}

int kms_audit_key_setup(kms_keyring *kr, const char *pem_path)
{
    kms_backend *b = kms_keyring_audit_backend(kr);
    kms_audit_signer s;
    char *pem = NULL;
    if (b == NULL)
        return kms_error_set(KMS_EPRECOND, "%s", NO_BACKEND);
    int r = b->ops->audit_key_create(b);
    if (r == KMS_EEXISTS)
        kms_log_info("audit: the %s backend already holds an audit signing key; using it",
                     b->ops->name);
    else if (r != 0)
        return r;
    kms_error_clear();
    KMS_GUARD(load(b, &s));
    KMS_GUARD(kms_audit_pub_to_pem(s.pub, &pem));
    r = write_public(pem_path, pem);
    free(pem);
    KMS_GUARD(r);
    printf("audit signing key on %s (log id %s); public key in %s\n", b->ops->name, s.log_id,
           pem_path);
    return KMS_OK;
}

int kms_audit_key_load(kms_keyring *kr, kms_audit_signer *out)
{
    kms_backend *b = kms_keyring_audit_backend(kr);
    if (b == NULL)
        return kms_error_set(KMS_EPRECOND, "%s", NO_BACKEND);
    int r = load(b, out);
    if (r == KMS_ENOTFOUND)
        return kms_error_set(KMS_ENOTFOUND,
                             "the %s backend holds no audit signing key: the database predates "
                             "signed checkpoints; run `kmsd audit-key` once (it creates the key "
                             "and writes its public key)",
                             b->ops->name);
    return r;
}
