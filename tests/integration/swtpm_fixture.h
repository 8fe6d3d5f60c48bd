/* Test fixture: a real swtpm (TPM 2.0 simulator) in its own temp dir, on a
 * free pair of loopback ports (data P, control P+1, as the swtpm TCTI
 * expects).
 *
 *   kms_test_swtpm s;
 *   kms_test_swtpm_start(&s);   // swtpm_setup (manufacture) + swtpm socket
 *   ... s.tcti is "swtpm:host=127.0.0.1,port=P" ...
 *   kms_test_swtpm_reset(&s);   // swtpm_ioctl -i: a TPM reset
 *   kms_test_swtpm_stop(&s);    // swtpm_ioctl -s; _resume restarts on the same state
 *   kms_test_swtpm_destroy(&s); // stops it and removes the dir
 *
 * Set-up failures abort(): a test that cannot make its TPM must not pass. */
#ifndef KMS_SWTPM_FIXTURE_H
#define KMS_SWTPM_FIXTURE_H

typedef struct kms_test_swtpm {
    char dir[256];
    int port;
    char tcti[96];
    int running;
} kms_test_swtpm;

void kms_test_swtpm_start(kms_test_swtpm *s);
void kms_test_swtpm_stop(kms_test_swtpm *s);
void kms_test_swtpm_resume(kms_test_swtpm *s);
void kms_test_swtpm_reset(kms_test_swtpm *s);
/* Changes PCR 17 (a hash sequence through swtpm's control channel, so it
 * works while another client holds the TPM). 0 on success. */
int kms_test_swtpm_extend17(kms_test_swtpm *s);
/* Extends SHA-256 PCR pcr with tpm2_pcrextend (TPM2TOOLS_TCTI = s->tcti).
 * Works while a kms backend holds the TPM: swtpm serves one connection at
 * a time, but the swtpm TCTI connects per command. 0 on success. */
int kms_test_swtpm_pcrextend(kms_test_swtpm *s, int pcr);
/* Runs "tpm2_<args>" from tpm2-tools on this TPM (args: fixed strings from
 * the test, e.g. "flushcontext -t"); output goes to the fixture's log. 0 on
 * success. */
int kms_test_swtpm_tool(kms_test_swtpm *s, const char *args);
void kms_test_swtpm_destroy(kms_test_swtpm *s);

#endif
