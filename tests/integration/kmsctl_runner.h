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

#endif
