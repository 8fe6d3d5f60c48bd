/* Test fixture: a real kmsd process on a free loopback port.
 *
 *   kms_test_kmsd k;
 *   kms_test_kmsd_setup(&k);      // token, dev PKI, config, `kmsd init`
 *   kms_test_kmsd_start(&k, NULL); // `kmsd run`, waits for "kmsd ready on"
 *   ... talk to k.target with the certificates in k.pki ...
 *   kms_test_kmsd_stop(&k, SIGTERM);  // returns kmsd's exit status
 *   kms_test_kmsd_teardown(&k);
 *
 * Everything lives in one temp dir: a SoftHSM2 token (softhsm_fixture.h),
 * certificates from scripts/dev-pki (`all`, plus `client bob
 * spiffe://kms.local/bob`, `client-cn cnonly`, a two-URI certificate
 * `twouri`, `twocn` with the CNs cnonly and other, and `cnspoof`, whose only
 * CN is spiffe://kms.local/officer1), kms.db and kmsd.yaml. Needs KMS_KMSD (the kmsd binary) and
 * KMS_DEV_PKI (scripts/dev-pki) in the environment, plus what the token
 * fixture needs; ctest sets them all.
 *
 * `kmsd init` registers officer1..3 (threshold 2), the auditor
 * spiffe://kms.local/auditor (dev-PKI client `auditor`) and the keys:
 *   demo    encrypt, decrypt, reencrypt: spiffe://kms.local/app
 *   second  encrypt, decrypt, reencrypt: spiffe://kms.local/app
 *   locked  encrypt, decrypt: spiffe://kms.local/someone-else
 *   cnkey   encrypt, decrypt: cn:cnonly (a CN identity; kmsd accepts it
 *           only with tls.cn_identities, which the fixture leaves off)
 * Functions abort() on set-up failure: a test that cannot make its server
 * must not pass. */
#ifndef KMS_KMSD_FIXTURE_H
#define KMS_KMSD_FIXTURE_H

#include <sys/types.h>

#include "nss_fixture.h"
#include "softhsm_fixture.h"

#define KMS_TEST_APP_ID "spiffe://kms.local/app"
#define KMS_TEST_BOB_ID "spiffe://kms.local/bob"
#define KMS_TEST_AUDITOR_ID "spiffe://kms.local/auditor"

typedef struct kms_test_kmsd {
    kms_test_token token;
    char pki[320];    /* certificates: PKI/NAME.pem, PKI/NAME-key.pem, PKI/ca.pem */
    char db[320];     /* kms.db */
    char config[320]; /* kmsd.yaml */
    pid_t pid;        /* 0 when not running */
    int port;
    char target[64]; /* "127.0.0.1:PORT" */
} kms_test_kmsd;

void kms_test_kmsd_setup(kms_test_kmsd *k);

/* As kms_test_kmsd_setup, on NSS softoken instead of SoftHSM2
 * (nss_fixture.h): pkcs11.init_args names the NSS database,
 * pkcs11.allow_nonlocal_keys is on, k->token.label is "NSS Certificate DB"
 * (k->token.conf is empty: no SOFTHSM2_CONF). */
void kms_test_kmsd_setup_nss(kms_test_kmsd *k);

/* Starts `kmsd --config k->config [extra...] run` (extra NULL-terminated,
 * may be NULL) and waits up to 60 s for its ready line. */
void kms_test_kmsd_start(kms_test_kmsd *k, const char *const *extra);

/* Sends sig and waits up to 60 s; returns the exit status (128+n if killed
 * by signal n, -1 on timeout, after which it is SIGKILLed). */
int kms_test_kmsd_stop(kms_test_kmsd *k, int sig);

/* Stops kmsd if running (SIGKILL) and removes the temp dir. */
void kms_test_kmsd_teardown(kms_test_kmsd *k);

/* Runs `kmsd` with argv (NULL-terminated, without argv[0]); output goes to
 * out. Returns the exit status. */
int kms_test_kmsd_run(const char *const *argv, char *out, size_t cap);

/* A "Name:   N kB" line of /proc/PID/status ("VmRSS:", "VmHWM:"), in KiB;
 * -1 if absent. For benchmarks that report kmsd's memory. */
long kms_test_proc_kib(pid_t pid, const char *name);

/* PKI path of a file: kms_test_kmsd_pki(&k, "app.pem", buf, sizeof(buf)). */
const char *kms_test_kmsd_pki(const kms_test_kmsd *k, const char *file, char *buf, size_t cap);

/* The fixture's temp dir (where kmsd.yaml and kms.db are) into out. */
char *kms_test_kmsd_dir(const kms_test_kmsd *k, char *out, size_t cap);

/* The files a dev-PKI client presents: the CA, NAME.pem and NAME-key.pem. */
typedef struct kms_test_creds {
    char ca[400], cert[400], key[400];
} kms_test_creds;

/* Fills c for the client `name` (NULL: the CA only, cert and key ""). */
void kms_test_kmsd_creds(const kms_test_kmsd *k, const char *name, kms_test_creds *c);

typedef struct kms_tc kms_tc;
/* A gRPC test client (grpc_test_client.h) to k as the dev-PKI client
 * `name` (NULL: no client certificate), trusting the CA; the test fails if
 * it cannot be made. */
kms_tc *kms_test_kmsd_open_as(const kms_test_kmsd *k, const char *name);

/* Signs a 32-byte approval digest (docs/approvals.md) with the dev-PKI
 * signing key of officer (<officer>-signing-key.pem) into sig (256 bytes
 * room); the signature's length. The test fails if it cannot. */
size_t kms_test_kmsd_officer_sign(const kms_test_kmsd *k, const char *officer,
                                  const uint8_t digest[32], uint8_t sig[256]);

/* kms objects on k's token, by pkcs11-tool (every version's label starts
 * with "kms:"). */
int kms_test_kmsd_token_objects(const kms_test_kmsd *k);

#endif
