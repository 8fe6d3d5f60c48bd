/* Runs the kmsctl binary ($KMS_KMSCTL) for the kmsctl integration tests. */
#ifndef KMS_KMSCTL_RUNNER_H
#define KMS_KMSCTL_RUNNER_H

#include <stddef.h>

/* Runs kmsctl with args (NULL-terminated, without argv[0]) in a child with
 * stdin from /dev/null, no controlling terminal, no KMSCTL_CONFIG and (under
 * ASan) full allocation stacks; its stdout and stderr go through files in
 * workdir into out and err (NUL-terminated, truncated to the caps). Returns
 * its exit status; a kmsctl killed by a signal fails the test (its stderr is
 * printed). */
int kms_test_kmsctl(const char *workdir, const char *const *args, char *out, size_t out_cap,
                    char *err, size_t err_cap);

/* Where a test's kmsctl runs and where its output goes. */
typedef struct kms_test_kmsctl_io {
    const char *workdir;
    char *out, *err;
    size_t out_cap, err_cap;
} kms_test_kmsctl_io;

/* kms_test_kmsctl with the arguments listed, NULL-terminated:
 * kms_test_kmsctl_l(&io, "key", "list", NULL). */
int kms_test_kmsctl_l(const kms_test_kmsctl_io *io, const char *first, ...);

struct kms_test_kmsd;
/* Writes a kmsctl connection file at path for the dev-PKI client `who`
 * (its who.pem and who-key.pem, the fixture's CA) talking to server (NULL:
 * the fixture's kmsd), with signing_key if not NULL. */
void kms_test_kmsctl_conf(const struct kms_test_kmsd *k, const char *path, const char *who,
                          const char *server, const char *signing_key);

#endif
