/* Client-certificate identity extraction (kmsd/server/identity.h), every
 * branch: a single URI SAN wins, several URI SANs are refused, a URI that
 * is not among the SANs is refused; without a URI SAN the certificate is
 * refused unless CN identities are on, and then it is "cn:" + the CN (never
 * the URI a CN spells), with several CNs refused whether gRPC reports them
 * or only the certificate shows them; neither refused; unauthenticated
 * peers refused unless --insecure-dev; identities that are empty, too long
 * or carry control characters are refused; out is written only on
 * success. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <grpc/grpc_security_constants.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "kmsd/server/identity.h"
#include "kmsd/store/store.h"

#define URI_A "spiffe://kms.test/app/a"
#define URI_B "spiffe://kms.test/app/b"
#define P(name, text)                                                                              \
    {                                                                                              \
        (name), (text), sizeof(text) - 1                                                           \
    }
#define N(a) (sizeof(a) / sizeof((a)[0]))
#define UNTOUCHED "untouched"

static char out[KMS_IDENTITY_MAX + 1];
/* PEM certificates whose subject holds one CN, and two CNs. */
static char pem_one[4096], pem_two[4096];

/* A self-signed certificate whose subject is the given CNs, as PEM. */
static void make_pem(const char *const *cns, size_t n, char *buf, size_t cap)
{
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    BIO *bio = BIO_new(BIO_s_mem());
    assert_non_null(pk);
    assert_non_null(x);
    assert_non_null(name);
    assert_non_null(bio);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                                    (const unsigned char *)cns[i], -1, -1, 0),
                         1);
    assert_int_equal(X509_set_subject_name(x, name), 1);
    assert_int_equal(X509_set_issuer_name(x, name), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
    assert_int_equal(X509_set_pubkey(x, pk), 1);
    assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
    assert_int_equal(PEM_write_bio_X509(bio, x), 1);
    int len = BIO_read(bio, buf, (int)cap - 1);
    assert_true(len > 0);
    buf[len] = '\0';
    BIO_free(bio);
    X509_NAME_free(name);
    X509_free(x);
    EVP_PKEY_free(pk);
}

static int group_setup(void **state)
{
    (void)state;
    const char *one[] = {"app-a"}, *two[] = {"app-a", "app-b"};
    make_pem(one, 1, pem_one, sizeof(pem_one));
    make_pem(two, 2, pem_two, sizeof(pem_two));
    return 0;
}

static int setup(void **state)
{
    (void)state;
    memset(out, 0, sizeof(out));
    memcpy(out, UNTOUCHED, sizeof(UNTOUCHED));
    return 0;
}

static int run(int authenticated, unsigned flags, const kms_peer_property *p, size_t n)
{
    return kms_identity_from_peer(authenticated, flags, p, n, out, sizeof(out));
}

/* p plus the certificate pem (as gRPC reports it), CN identities on. */
static int run_cn(const kms_peer_property *p, size_t n, const char *pem)
{
    kms_peer_property all[16];
    assert_true(n < 16);
    memcpy(all, p, n * sizeof(*p));
    all[n] = (kms_peer_property){GRPC_X509_PEM_CERT_PROPERTY_NAME, pem, strlen(pem)};
    return run(1, KMS_IDENTITY_CN, all, n + 1);
}

static void assert_refused(int r)
{
    assert_int_equal(r, KMS_EDENIED);
    assert_string_equal(out, UNTOUCHED);
}

static void single_uri_san_wins_over_cn(void **state)
{
    (void)state;
    const kms_peer_property p[] = {
        P(GRPC_X509_CN_PROPERTY_NAME, "app-a"),
        P(GRPC_X509_SAN_PROPERTY_NAME, "app-a.kms.test"),
        P(GRPC_X509_SAN_PROPERTY_NAME, URI_A),
        P(GRPC_PEER_URI_PROPERTY_NAME, URI_A),
        P(GRPC_TRANSPORT_SECURITY_TYPE_PROPERTY_NAME, "ssl"),
    };
    assert_int_equal(run(1, 0, p, N(p)), KMS_OK);
    assert_string_equal(out, URI_A);
    /* The listener's flags change nothing for an authenticated peer with a URI. */
    assert_int_equal(run(1, KMS_IDENTITY_INSECURE_DEV | KMS_IDENTITY_CN, p, N(p)), KMS_OK);
    assert_string_equal(out, URI_A);
}

static void several_uri_sans_refused(void **state)
{
    (void)state;
    const kms_peer_property p[] = {
        P(GRPC_X509_CN_PROPERTY_NAME, "app-a"), P(GRPC_X509_SAN_PROPERTY_NAME, URI_A),
        P(GRPC_X509_SAN_PROPERTY_NAME, URI_B),  P(GRPC_PEER_URI_PROPERTY_NAME, URI_A),
        P(GRPC_PEER_URI_PROPERTY_NAME, URI_B),
    };
    /* Not a fall back to the CN: an ambiguous certificate is refused. */
    assert_refused(run(1, 0, p, N(p)));
}

static void uri_not_among_sans_refused(void **state)
{
    (void)state;
    const kms_peer_property p[] = {
        P(GRPC_X509_CN_PROPERTY_NAME, "app-a"),
        P(GRPC_X509_SAN_PROPERTY_NAME, URI_B),
        P(GRPC_PEER_URI_PROPERTY_NAME, URI_A),
    };
    assert_refused(run(1, 0, p, N(p)));
    /* Same length, different bytes; and a prefix of a SAN. */
    const kms_peer_property q[] = {
        P(GRPC_X509_SAN_PROPERTY_NAME, "spiffe://kms.test/app/a/longer"),
        P(GRPC_PEER_URI_PROPERTY_NAME, URI_A),
    };
    assert_refused(run(1, 0, q, N(q)));
}

static void cn_refused_unless_cn_identities(void **state)
{
    (void)state;
    const kms_peer_property p[] = {
        P(GRPC_X509_SAN_PROPERTY_NAME, "app-a.kms.test"),
        P(GRPC_X509_CN_PROPERTY_NAME, "app-a"),
        P(GRPC_X509_PEM_CERT_PROPERTY_NAME, "(not looked at)"),
    };
    assert_refused(run(1, 0, p, N(p)));
    assert_refused(run(1, KMS_IDENTITY_INSECURE_DEV, p, N(p)));
}

static void cn_identity_in_its_own_namespace(void **state)
{
    (void)state;
    const kms_peer_property p[] = {
        P(GRPC_X509_SAN_PROPERTY_NAME, "app-a.kms.test"),
        P(GRPC_X509_CN_PROPERTY_NAME, "app-a"),
    };
    assert_int_equal(run_cn(p, N(p), pem_one), KMS_OK);
    assert_string_equal(out, "cn:app-a");
    /* A CN that spells an officer's URI is not that officer. */
    const kms_peer_property spoof[] = {P(GRPC_X509_CN_PROPERTY_NAME, URI_A)};
    assert_int_equal(run_cn(spoof, N(spoof), pem_one), KMS_OK);
    assert_string_equal(out, "cn:" URI_A);
}

static void several_cns_refused(void **state)
{
    (void)state;
    /* Reported twice by the TLS layer. */
    const kms_peer_property p[] = {
        P(GRPC_X509_CN_PROPERTY_NAME, "app-a"),
        P(GRPC_X509_CN_PROPERTY_NAME, "app-b"),
    };
    assert_refused(run_cn(p, N(p), pem_one));
    /* gRPC reports only the first CN: the certificate shows the second. */
    const kms_peer_property first[] = {P(GRPC_X509_CN_PROPERTY_NAME, "app-a")};
    assert_refused(run_cn(first, N(first), pem_two));
    /* No certificate to count them in, one that does not parse, two. */
    assert_refused(run(1, KMS_IDENTITY_CN, first, N(first)));
    assert_refused(run_cn(first, N(first), "-----BEGIN CERTIFICATE-----\nAAAA\n"));
    const kms_peer_property twice[] = {P(GRPC_X509_CN_PROPERTY_NAME, "app-a"),
                                       {GRPC_X509_PEM_CERT_PROPERTY_NAME, pem_one, 0}};
    assert_refused(run_cn(twice, N(twice), pem_one));
}

static void neither_uri_nor_cn_refused(void **state)
{
    (void)state;
    const kms_peer_property p[] = {
        P(GRPC_X509_SAN_PROPERTY_NAME, "app-a.kms.test"),
        P(GRPC_TRANSPORT_SECURITY_TYPE_PROPERTY_NAME, "ssl"),
    };
    assert_refused(run(1, 0, p, N(p)));
    assert_refused(run_cn(p, N(p), pem_one));
    assert_refused(run(1, 0, NULL, 0));
}

static void unauthenticated_refused_unless_insecure_dev(void **state)
{
    (void)state;
    const kms_peer_property p[] = {
        P(GRPC_X509_CN_PROPERTY_NAME, "app-a"),
        P(GRPC_PEER_URI_PROPERTY_NAME, URI_A),
        P(GRPC_X509_SAN_PROPERTY_NAME, URI_A),
    };
    /* Properties of an unauthenticated peer are never believed. */
    assert_refused(run(0, 0, p, N(p)));
    assert_refused(run(0, KMS_IDENTITY_CN, p, N(p)));
    assert_int_equal(run(0, KMS_IDENTITY_INSECURE_DEV, p, N(p)), KMS_OK);
    assert_string_equal(out, KMS_RPC_INSECURE_IDENTITY);
    assert_int_equal(run(0, KMS_IDENTITY_INSECURE_DEV, NULL, 0), KMS_OK);
    assert_string_equal(out, KMS_RPC_INSECURE_IDENTITY);
}

static void bad_identity_values_refused(void **state)
{
    (void)state;
    static char long_cn[KMS_IDENTITY_MAX + 2];
    memset(long_cn, 'a', sizeof(long_cn));

    kms_peer_property empty[] = {P(GRPC_X509_CN_PROPERTY_NAME, "")};
    assert_refused(run_cn(empty, N(empty), pem_one));
    kms_peer_property null_value[] = {{GRPC_X509_CN_PROPERTY_NAME, NULL, 5}};
    assert_refused(run_cn(null_value, N(null_value), pem_one));
    kms_peer_property ctl[] = {P(GRPC_X509_CN_PROPERTY_NAME, "app\na")};
    assert_refused(run_cn(ctl, N(ctl), pem_one));
    kms_peer_property del[] = {P(GRPC_X509_CN_PROPERTY_NAME, "app\x7f")};
    assert_refused(run_cn(del, N(del), pem_one));
    kms_peer_property nul[] = {P(GRPC_X509_CN_PROPERTY_NAME, "app\0a")};
    assert_refused(run_cn(nul, N(nul), pem_one));
    kms_peer_property uri_ctl[] = {P(GRPC_X509_SAN_PROPERTY_NAME, "spiffe://x/\t"),
                                   P(GRPC_PEER_URI_PROPERTY_NAME, "spiffe://x/\t")};
    assert_refused(run(1, 0, uri_ctl, N(uri_ctl)));

    /* KMS_IDENTITY_MAX bytes is the longest accepted; one more is refused
     * (for a CN, counting its "cn:"). */
    kms_peer_property longest_uri[] = {{GRPC_X509_SAN_PROPERTY_NAME, long_cn, KMS_IDENTITY_MAX},
                                       {GRPC_PEER_URI_PROPERTY_NAME, long_cn, KMS_IDENTITY_MAX}};
    assert_int_equal(run(1, 0, longest_uri, 2), KMS_OK);
    assert_int_equal(strlen(out), KMS_IDENTITY_MAX);
    setup(NULL);
    kms_peer_property long_uri[] = {{GRPC_X509_SAN_PROPERTY_NAME, long_cn, KMS_IDENTITY_MAX + 1},
                                    {GRPC_PEER_URI_PROPERTY_NAME, long_cn, KMS_IDENTITY_MAX + 1}};
    assert_refused(run(1, 0, long_uri, 2));
    kms_peer_property longest[] = {{GRPC_X509_CN_PROPERTY_NAME, long_cn, KMS_IDENTITY_MAX - 3}};
    assert_int_equal(run_cn(longest, 1, pem_one), KMS_OK);
    assert_int_equal(strlen(out), KMS_IDENTITY_MAX);
    setup(NULL);
    kms_peer_property too_long[] = {{GRPC_X509_CN_PROPERTY_NAME, long_cn, KMS_IDENTITY_MAX - 2}};
    assert_refused(run_cn(too_long, 1, pem_one));
    /* A value that does not fit the caller's buffer is refused, not cut. */
    char small[8] = "x";
    kms_peer_property cn[] = {P(GRPC_X509_SAN_PROPERTY_NAME, "app-abcdefgh"),
                              P(GRPC_PEER_URI_PROPERTY_NAME, "app-abcdefgh")};
    assert_int_equal(kms_identity_from_peer(1, 0, cn, 2, small, sizeof(small)), KMS_EDENIED);
    assert_string_equal(small, "x");
}

static void bad_arguments(void **state)
{
    (void)state;
    kms_peer_property cn[] = {P(GRPC_X509_CN_PROPERTY_NAME, "app-a")};
    assert_int_equal(kms_identity_from_peer(1, 0, cn, 1, NULL, 10), KMS_EINVAL);
    assert_int_equal(kms_identity_from_peer(1, 0, cn, 1, out, 0), KMS_EINVAL);
    assert_int_equal(kms_identity_from_peer(1, 0, NULL, 1, out, sizeof(out)), KMS_EINVAL);
    assert_string_equal(out, UNTOUCHED);
    /* A property without a name is skipped, not matched. */
    kms_peer_property unnamed[] = {{NULL, "app-a", 5}, P(GRPC_X509_CN_PROPERTY_NAME, "app-b")};
    assert_int_equal(run_cn(unnamed, N(unnamed), pem_one), KMS_OK);
    assert_string_equal(out, "cn:app-b");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(single_uri_san_wins_over_cn, setup),
        cmocka_unit_test_setup(several_uri_sans_refused, setup),
        cmocka_unit_test_setup(uri_not_among_sans_refused, setup),
        cmocka_unit_test_setup(cn_refused_unless_cn_identities, setup),
        cmocka_unit_test_setup(cn_identity_in_its_own_namespace, setup),
        cmocka_unit_test_setup(several_cns_refused, setup),
        cmocka_unit_test_setup(neither_uri_nor_cn_refused, setup),
        cmocka_unit_test_setup(unauthenticated_refused_unless_insecure_dev, setup),
        cmocka_unit_test_setup(bad_identity_values_refused, setup),
        cmocka_unit_test_setup(bad_arguments, setup),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
