/* Client-certificate identity extraction (kmsd/server/identity.h), every
 * branch: a single URI SAN wins, several URI SANs are refused, a URI that
 * is not among the SANs is refused, else the CN, several CNs refused,
 * neither refused; unauthenticated peers refused unless --insecure-dev;
 * identities that are empty, too long or carry control characters are
 * refused; out is written only on success. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <grpc/grpc_security_constants.h>

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

static int setup(void **state)
{
    (void)state;
    memset(out, 0, sizeof(out));
    memcpy(out, UNTOUCHED, sizeof(UNTOUCHED));
    return 0;
}

static int run(int authenticated, int insecure, const kms_peer_property *p, size_t n)
{
    return kms_identity_from_peer(authenticated, insecure, p, n, out, sizeof(out));
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
    /* The listener's insecure flag changes nothing for an authenticated peer. */
    assert_int_equal(run(1, 1, p, N(p)), KMS_OK);
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

static void cn_when_no_uri(void **state)
{
    (void)state;
    const kms_peer_property p[] = {
        P(GRPC_X509_SAN_PROPERTY_NAME, "app-a.kms.test"),
        P(GRPC_X509_CN_PROPERTY_NAME, "app-a"),
    };
    assert_int_equal(run(1, 0, p, N(p)), KMS_OK);
    assert_string_equal(out, "app-a");
}

static void several_cns_refused(void **state)
{
    (void)state;
    const kms_peer_property p[] = {
        P(GRPC_X509_CN_PROPERTY_NAME, "app-a"),
        P(GRPC_X509_CN_PROPERTY_NAME, "app-b"),
    };
    assert_refused(run(1, 0, p, N(p)));
}

static void neither_uri_nor_cn_refused(void **state)
{
    (void)state;
    const kms_peer_property p[] = {
        P(GRPC_X509_SAN_PROPERTY_NAME, "app-a.kms.test"),
        P(GRPC_TRANSPORT_SECURITY_TYPE_PROPERTY_NAME, "ssl"),
    };
    assert_refused(run(1, 0, p, N(p)));
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
    assert_int_equal(run(0, 1, p, N(p)), KMS_OK);
    assert_string_equal(out, KMS_RPC_INSECURE_IDENTITY);
    assert_int_equal(run(0, 1, NULL, 0), KMS_OK);
    assert_string_equal(out, KMS_RPC_INSECURE_IDENTITY);
}

static void bad_identity_values_refused(void **state)
{
    (void)state;
    static char long_cn[KMS_IDENTITY_MAX + 2];
    memset(long_cn, 'a', sizeof(long_cn));

    kms_peer_property empty[] = {P(GRPC_X509_CN_PROPERTY_NAME, "")};
    assert_refused(run(1, 0, empty, N(empty)));
    kms_peer_property null_value[] = {{GRPC_X509_CN_PROPERTY_NAME, NULL, 5}};
    assert_refused(run(1, 0, null_value, N(null_value)));
    kms_peer_property ctl[] = {P(GRPC_X509_CN_PROPERTY_NAME, "app\na")};
    assert_refused(run(1, 0, ctl, N(ctl)));
    kms_peer_property del[] = {P(GRPC_X509_CN_PROPERTY_NAME, "app\x7f")};
    assert_refused(run(1, 0, del, N(del)));
    kms_peer_property nul[] = {P(GRPC_X509_CN_PROPERTY_NAME, "app\0a")};
    assert_refused(run(1, 0, nul, N(nul)));
    kms_peer_property uri_ctl[] = {P(GRPC_X509_SAN_PROPERTY_NAME, "spiffe://x/\t"),
                                   P(GRPC_PEER_URI_PROPERTY_NAME, "spiffe://x/\t")};
    assert_refused(run(1, 0, uri_ctl, N(uri_ctl)));

    /* KMS_IDENTITY_MAX bytes is the longest accepted; one more is refused. */
    kms_peer_property longest[] = {{GRPC_X509_CN_PROPERTY_NAME, long_cn, KMS_IDENTITY_MAX}};
    assert_int_equal(run(1, 0, longest, 1), KMS_OK);
    assert_int_equal(strlen(out), KMS_IDENTITY_MAX);
    setup(NULL);
    kms_peer_property too_long[] = {{GRPC_X509_CN_PROPERTY_NAME, long_cn, KMS_IDENTITY_MAX + 1}};
    assert_refused(run(1, 0, too_long, 1));
    /* A value that does not fit the caller's buffer is refused, not cut. */
    char small[8] = "x";
    kms_peer_property cn[] = {P(GRPC_X509_CN_PROPERTY_NAME, "app-abcdefgh")};
    assert_int_equal(kms_identity_from_peer(1, 0, cn, 1, small, sizeof(small)), KMS_EDENIED);
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
    assert_int_equal(run(1, 0, unnamed, N(unnamed)), KMS_OK);
    assert_string_equal(out, "app-b");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(single_uri_san_wins_over_cn, setup),
        cmocka_unit_test_setup(several_uri_sans_refused, setup),
        cmocka_unit_test_setup(uri_not_among_sans_refused, setup),
        cmocka_unit_test_setup(cn_when_no_uri, setup),
        cmocka_unit_test_setup(several_cns_refused, setup),
        cmocka_unit_test_setup(neither_uri_nor_cn_refused, setup),
        cmocka_unit_test_setup(unauthenticated_refused_unless_insecure_dev, setup),
        cmocka_unit_test_setup(bad_identity_values_refused, setup),
        cmocka_unit_test_setup(bad_arguments, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
