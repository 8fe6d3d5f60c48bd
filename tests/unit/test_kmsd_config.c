/* kmsd's configuration: YAML through libyaml, command-line overrides,
 * and every refusal (unknown settings, duplicates, aliases, bad values). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_util.h"
#include "kmsd/config.h"

static int load(kms_config *c, const char *yaml)
{
    return kms_config_load_buffer(c, yaml, strlen(yaml), "/etc/kms");
}

static void defaults(void **state)
{
    (void)state;
    kms_config c;
    assert_int_equal(kms_config_init(&c), KMS_OK);
    assert_string_equal(c.listen, "127.0.0.1:7443");
    assert_int_equal(c.max_message_size, 65536);
    assert_int_equal(c.log_level, KMS_LOG_INFO);
    assert_int_equal(c.workers, 0);
    assert_int_equal(c.insecure_dev, 0);
    assert_null(c.database);
    /* Without a database and token, neither mode validates. */
    assert_int_equal(kms_config_validate(&c, KMS_CONFIG_RUN), KMS_EINVAL);
    assert_int_equal(kms_config_validate(&c, KMS_CONFIG_INIT), KMS_EINVAL);
    kms_config_free(&c);
    kms_config_free(&c); /* twice is fine */
    kms_config_free(NULL);
}

static const char full[] = "# every setting\n"
                           "listen: 0.0.0.0:9000\n"
                           "tls:\n"
                           "  cert: server.pem\n"
                           "  key: /abs/server-key.pem\n"
                           "  client_ca: ca.pem\n"
                           "database: var/kms.db\n"
                           "pkcs11:\n"
                           "  module: libsofthsm2.so\n"
                           "  token_label: \"kms token\"\n"
                           "  pin_file: pin\n"
                           "  sessions: 8\n"
                           "workers: 6\n"
                           "log_level: debug\n"
                           "max_message_size: 131072\n"
                           "max_send_message_size: 8388608\n"
                           "insecure_dev: false\n"
                           "init:\n"
                           "  officers:\n"
                           "    - id: o1\n"
                           "      identity: spiffe://x/o1\n"
                           "      signing_key: o1.pub.pem\n"
                           "    - {id: o2, identity: \"spiffe://x/o2\", signing_key: /k/o2.pem}\n"
                           "  thresholds: {default: 2, RotateKey: 3}\n"
                           "  keys:\n"
                           "    - name: demo\n"
                           "      encrypt: [spiffe://x/app]\n"
                           "      decrypt: [spiffe://x/app, spiffe://x/backup]\n"
                           "    - name: empty\n";

static void every_setting(void **state)
{
    (void)state;
    kms_config c;
    assert_int_equal(kms_config_init(&c), KMS_OK);
    assert_int_equal(load(&c, full), KMS_OK);
    assert_string_equal(c.listen, "0.0.0.0:9000");
    assert_string_equal(c.tls_cert, "/etc/kms/server.pem"); /* relative to the file */
    assert_string_equal(c.tls_key, "/abs/server-key.pem");
    assert_string_equal(c.tls_client_ca, "/etc/kms/ca.pem");
    assert_string_equal(c.database, "/etc/kms/var/kms.db");
    assert_string_equal(c.pkcs11_module, "libsofthsm2.so"); /* for the dynamic loader */
    assert_string_equal(c.pkcs11_token_label, "kms token");
    assert_string_equal(c.pkcs11_pin_file, "/etc/kms/pin");
    assert_int_equal(c.pkcs11_sessions, 8);
    assert_int_equal(c.workers, 6);
    assert_int_equal(c.log_level, KMS_LOG_DEBUG);
    assert_int_equal(c.max_message_size, 131072);
    assert_int_equal(c.max_send_message_size, 8388608);
    assert_int_equal(c.insecure_dev, 0);
    assert_int_equal(c.n_officers, 2);
    assert_string_equal(c.officers[0].id, "o1");
    assert_string_equal(c.officers[0].identity, "spiffe://x/o1");
    assert_string_equal(c.officers[0].signing_key, "/etc/kms/o1.pub.pem");
    assert_string_equal(c.officers[1].signing_key, "/k/o2.pem");
    assert_int_equal(c.n_thresholds, 2);
    assert_int_equal(c.n_keys, 2);
    assert_string_equal(c.keys[0].name, "demo");
    assert_int_equal(c.keys[0].encrypt.n, 1);
    assert_int_equal(c.keys[0].decrypt.n, 2);
    assert_string_equal(c.keys[0].decrypt.v[1], "spiffe://x/backup");
    assert_int_equal(c.keys[1].encrypt.n + c.keys[1].decrypt.n + c.keys[1].reencrypt.n, 0);
    assert_int_equal(kms_config_validate(&c, KMS_CONFIG_RUN), KMS_OK);
    assert_int_equal(kms_config_validate(&c, KMS_CONFIG_INIT), KMS_OK);
    kms_config_free(&c);
}

static void command_line_overrides(void **state)
{
    (void)state;
    kms_config c;
    assert_int_equal(kms_config_init(&c), KMS_OK);
    assert_int_equal(load(&c, full), KMS_OK);
    assert_int_equal(kms_config_set(&c, "listen", "127.0.0.1:0"), KMS_OK);
    assert_int_equal(kms_config_set(&c, "tls.cert", "rel/cert.pem"), KMS_OK);
    assert_int_equal(kms_config_set(&c, "workers", "2"), KMS_OK);
    assert_int_equal(kms_config_set(&c, "insecure_dev", "true"), KMS_OK);
    assert_int_equal(kms_config_set(&c, "log_level", "warn"), KMS_OK);
    assert_string_equal(c.listen, "127.0.0.1:0");
    assert_string_equal(c.tls_cert, "rel/cert.pem"); /* relative to the working dir */
    assert_int_equal(c.workers, 2);
    assert_int_equal(c.insecure_dev, 1);
    assert_int_equal(c.log_level, KMS_LOG_WARN);

    /* The first --officer replaces the file's list; later ones append. */
    assert_int_equal(kms_config_add_officer(&c, "a,spiffe://x/a,/a.pem"), KMS_OK);
    assert_int_equal(kms_config_add_officer(&c, "b,CN-b,b.pem"), KMS_OK);
    assert_int_equal(c.n_officers, 2);
    assert_string_equal(c.officers[0].id, "a");
    assert_string_equal(c.officers[1].identity, "CN-b");
    assert_string_equal(c.officers[1].signing_key, "b.pem");
    /* Thresholds merge per action. */
    assert_int_equal(kms_config_add_threshold(&c, "RotateKey=4"), KMS_OK);
    assert_int_equal(kms_config_add_threshold(&c, "5"), KMS_OK);
    assert_int_equal(c.n_thresholds, 2);
    for (size_t i = 0; i < c.n_thresholds; i++)
        assert_int_equal(c.thresholds[i].threshold,
                         strcmp(c.thresholds[i].action, "RotateKey") == 0 ? 4 : 5);
    /* Keys likewise; grants go to the last key. */
    assert_int_equal(kms_config_add_grant(&c, "encrypt", "x"), KMS_EINVAL); /* no key yet */
    assert_int_equal(kms_config_add_key(&c, "k1"), KMS_OK);
    assert_int_equal(kms_config_add_grant(&c, "encrypt", "app"), KMS_OK);
    assert_int_equal(kms_config_add_grant(&c, "reencrypt", "app"), KMS_OK);
    assert_int_equal(kms_config_add_grant(&c, "sign", "app"), KMS_EINVAL);
    assert_int_equal(c.n_keys, 1);
    assert_int_equal(c.keys[0].encrypt.n, 1);
    assert_int_equal(c.keys[0].reencrypt.n, 1);
    kms_config_free(&c);
}

static void bad_command_line_values(void **state)
{
    (void)state;
    kms_config c;
    assert_int_equal(kms_config_init(&c), KMS_OK);
    const char *const bad[][2] = {
        {"workers", "lots"},
        {"workers", "-1"},
        {"workers", "257"},
        {"workers", "4x"},
        {"workers", ""},
        {"pkcs11.sessions", "99999999999999999999"},
        {"max_message_size", "100"},
        {"insecure_dev", "maybe"},
        {"log_level", "loud"},
        {"listen", ""},
        {"no.such", "1"},
        {"tls", "x"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (kms_config_set(&c, bad[i][0], bad[i][1]) != KMS_EINVAL)
            fail_msg("%s=%s accepted", bad[i][0], bad[i][1]);
    assert_int_equal(c.workers, 0); /* unchanged */
    const char *officers[] = {"", "a", "a,b", "a,b,", ",b,c", "a,,c", "a,b,c,d"};
    for (size_t i = 0; i < sizeof(officers) / sizeof(officers[0]); i++)
        assert_int_equal(kms_config_add_officer(&c, officers[i]), KMS_EINVAL);
    const char *thresholds[] = {"", "x", "=2", "A=", "A=x", "A=-1", "A=99999999999"};
    for (size_t i = 0; i < sizeof(thresholds) / sizeof(thresholds[0]); i++)
        assert_int_equal(kms_config_add_threshold(&c, thresholds[i]), KMS_EINVAL);
    assert_int_equal(kms_config_add_key(&c, ""), KMS_EINVAL);
    kms_config_free(&c);
}

/* pkcs11.init_args: unset is NULL (pReserved NULL, as before); up to 1024
 * bytes kept as written; one more is refused and changes nothing.
 * pkcs11.allow_nonlocal_keys: off unless set. */
static void pkcs11_init_args_and_nonlocal(void **state)
{
    (void)state;
    kms_config c;
    assert_int_equal(kms_config_init(&c), KMS_OK);
    assert_null(c.pkcs11_init_args);
    assert_int_equal(c.pkcs11_allow_nonlocal_keys, 0);
    char v[1026];
    memset(v, 'a', 1024);
    v[1024] = '\0';
    assert_int_equal(kms_config_set(&c, "pkcs11.init_args", v), KMS_OK);
    assert_int_equal(strlen(c.pkcs11_init_args), 1024);
    memcpy(v, "configdir=", 10);
    v[1024] = 'b';
    v[1025] = '\0';
    assert_int_equal(kms_config_set(&c, "pkcs11.init_args", v), KMS_EINVAL);
    assert_non_null(strstr(kms_error_detail(), "longer than 1024"));
    assert_int_equal(c.pkcs11_init_args[0], 'a'); /* unchanged */
    assert_int_equal(kms_config_set(&c, "pkcs11.init_args", ""), KMS_EINVAL);
    assert_int_equal(kms_config_set(&c, "pkcs11.allow_nonlocal_keys", "true"), KMS_OK);
    assert_int_equal(c.pkcs11_allow_nonlocal_keys, 1);
    assert_int_equal(kms_config_set(&c, "pkcs11.allow_nonlocal_keys", "sometimes"), KMS_EINVAL);
    assert_int_equal(c.pkcs11_allow_nonlocal_keys, 1);
    kms_config_free(&c);
}

static void refused_files(void **state)
{
    (void)state;
    const struct {
        const char *yaml;
        const char *detail;
    } cases[] = {
        {"workerz: 4\n", "line 1: unknown setting workerz"},
        {"listen: a:1\nlisten: b:2\n", "appears twice"},
        {"tls:\n  cert: a\n  cert: b\n", "appears twice"},
        {"tls:\n  pem: a\n", "unknown setting tls.pem"},
        {"workers: [1, 2]\n", "single value"},
        {"workers: many\n", "line 1: workers"},
        {"tls: server.pem\n", "must be a mapping"},
        {"- a\n- b\n", "must be a mapping"},
        {"base: &a x\nlisten: *a\n", "anchors are not allowed"},
        {"listen: \"a\\0b\"\n", "NUL"},
        {"listen: x\n---\nlisten: y\n", "only one YAML document"},
        {"listen: [unclosed\n", "line"},
        {"init: {officers: x}\n", "must be a list"},
        {"init: {officers: [{id: a, identity: b}]}\n", "needs id, identity and signing_key"},
        {"init: {officers: [{id: a, identity: b, signing_key: c, extra: d}]}\n",
         "unknown officer setting extra"},
        {"init: {thresholds: {RotateKey: two}}\n", "expected an integer"},
        {"init: {keys: [{encrypt: [a]}]}\n", "needs a name"},
        {"init: {keys: [{name: k, sign: [a]}]}\n", "unknown key setting sign"},
        {"init: {keys: [{name: k, encrypt: a}]}\n", "must be a list"},
        {"init: {keys: [{name: k, encrypt: [\"\"]}]}\n", "empty entry"},
        {"init: {quorum: 2}\n", "unknown setting init.quorum"},
        {"database: \"\"\n", "empty value"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kms_config c;
        assert_int_equal(kms_config_init(&c), KMS_OK);
        int r = load(&c, cases[i].yaml);
        if (r != KMS_EINVAL || strstr(kms_error_detail(), cases[i].detail) == NULL)
            fail_msg("case %zu: %d, detail \"%s\", expected \"%s\"", i, r, kms_error_detail(),
                     cases[i].detail);
        kms_config_free(&c);
    }
}

static void empty_file_and_sizes(void **state)
{
    (void)state;
    kms_config c;
    assert_int_equal(kms_config_init(&c), KMS_OK);
    assert_int_equal(kms_config_load_buffer(&c, "", 0, NULL), KMS_OK);
    assert_int_equal(load(&c, "# only a comment\n"), KMS_OK);
    assert_string_equal(c.listen, "127.0.0.1:7443");
    char *huge = malloc(KMS_CONFIG_FILE_MAX + 2);
    memset(huge, '#', KMS_CONFIG_FILE_MAX + 1);
    huge[KMS_CONFIG_FILE_MAX + 1] = '\0';
    assert_int_equal(kms_config_load_buffer(&c, huge, KMS_CONFIG_FILE_MAX + 1, NULL), KMS_EINVAL);
    free(huge);
    kms_config_free(&c);
}

/* tls.cn_identities and tls.crl_allow_expired default off; tls.crl is a
 * comma-separated list, each path made relative to the file; an empty
 * entry is refused; the limits section, its defaults and ranges. */
static void tls_identity_and_revocation(void **state)
{
    (void)state;
    kms_config c;
    assert_int_equal(kms_config_init(&c), KMS_OK);
    assert_int_equal(c.tls_cn_identities, 0);
    assert_int_equal(c.tls_crl_allow_expired, 0);
    assert_null(c.tls_crl);
    assert_int_equal(load(&c, "tls:\n  cn_identities: true\n  crl: a.pem,/srv/b.pem,c/d.pem\n"
                              "  crl_allow_expired: yes\n"),
                     KMS_OK);
    assert_int_equal(c.tls_cn_identities, 1);
    assert_int_equal(c.tls_crl_allow_expired, 1);
    assert_string_equal(c.tls_crl, "/etc/kms/a.pem,/srv/b.pem,/etc/kms/c/d.pem");
    assert_int_equal(kms_config_set(&c, "tls.crl", "x.pem"), KMS_OK);
    assert_string_equal(c.tls_crl, "x.pem");
    kms_config_free(&c);
    /* limits: defaults, a section of the file, ranges. */
    assert_int_equal(kms_config_init(&c), KMS_OK);
    assert_int_equal(c.max_concurrent_streams, KMS_CONFIG_DEFAULT_MAX_STREAMS);
    assert_int_equal(c.handshake_timeout_ms, KMS_CONFIG_DEFAULT_HANDSHAKE_TIMEOUT_MS);
    assert_int_equal(c.idle_timeout_ms, KMS_CONFIG_DEFAULT_IDLE_TIMEOUT_MS);
    assert_int_equal(load(&c, "limits:\n  max_concurrent_streams: 8\n"
                              "  handshake_timeout_ms: 500\n  idle_timeout_ms: 2000\n"),
                     KMS_OK);
    assert_int_equal(c.max_concurrent_streams, 8);
    assert_int_equal(c.handshake_timeout_ms, 500);
    assert_int_equal(c.idle_timeout_ms, 2000);
    assert_int_equal(kms_config_set(&c, "limits.max_concurrent_streams", "0"), KMS_EINVAL);
    assert_int_equal(kms_config_set(&c, "limits.handshake_timeout_ms", "99"), KMS_EINVAL);
    assert_int_equal(kms_config_set(&c, "limits.idle_timeout_ms", "999"), KMS_EINVAL);
    kms_config_free(&c);
    static const char *const bad[] = {"a.pem,", ",a.pem", "a.pem,,b.pem", ","};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(kms_config_init(&c), KMS_OK);
        assert_int_equal(kms_config_set(&c, "tls.crl", bad[i]), KMS_EINVAL);
        kms_config_free(&c);
    }
}

static void quorum_and_tpm2_settings(void **state)
{
    (void)state;
    kms_config c;
    assert_int_equal(kms_config_init(&c), KMS_OK);
    assert_int_equal(load(&c, "quorum:\n  action_ttl: 3600\n  sweep_interval_ms: 250\n"
                              "  max_pending_per_officer: 4\n"
                              "tpm2:\n  tcti: swtpm:host=127.0.0.1,port=2321\n"
                              "  primary_handle: 0x81000102\n  pcrs: \"16,17\"\n"
                              "  lock_dir: /run/kms\n"
                              "test_clock_file: clock\n"),
                     KMS_OK);
    assert_int_equal(c.action_ttl, 3600);
    assert_int_equal(c.sweep_interval_ms, 250);
    assert_int_equal(c.max_pending, 4);
    assert_string_equal(c.tpm2_tcti, "swtpm:host=127.0.0.1,port=2321");
    assert_int_equal(c.tpm2_primary_handle, 0x81000102u);
    assert_string_equal(c.tpm2_pcrs, "16,17");
    assert_string_equal(c.tpm2_lock_dir, "/run/kms");
    assert_string_equal(c.test_clock_file, "/etc/kms/clock");
    kms_config_free(&c);
    static const char *const bad[] = {
        "tpm2:\n  primary_handle: 0x7\n",        /* not a persistent handle */
        "tpm2:\n  primary_handle: 0xg1000000\n", /* not hex */
        "tpm2:\n  primary_handle: 0x\n",           "quorum:\n  action_ttl: 59\n",
        "quorum:\n  sweep_interval_ms: 0\n",       "tpm2:\n  unknown: 1\n",
        "quorum:\n  max_pending_per_officer: 0\n", "quorum:\n  max_pending_per_officer: 1001\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(kms_config_init(&c), KMS_OK);
        assert_int_equal(load(&c, bad[i]), KMS_EINVAL);
        kms_config_free(&c);
    }
}

static void load_file(void **state)
{
    (void)state;
    char dir[256], file[320];
    kms_test_tmpdir("kms-config", dir, sizeof(dir));
    kms_test_path(file, sizeof(file), dir, "kmsd.yaml");
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("database: kms.db\nworkers: 3\n", f);
    fclose(f);
    kms_config c;
    assert_int_equal(kms_config_init(&c), KMS_OK);
    assert_int_equal(kms_config_load_file(&c, file), KMS_OK);
    char want[320];
    kms_test_path(want, sizeof(want), dir, "kms.db");
    assert_string_equal(c.database, want);
    assert_int_equal(c.workers, 3);

    f = fopen(file, "w");
    fputs("workers: 0\nbogus: 1\n", f);
    fclose(f);
    assert_int_equal(kms_config_load_file(&c, file), KMS_EINVAL);
    assert_non_null(strstr(kms_error_detail(), "kmsd.yaml: line 2: unknown setting bogus"));
    assert_int_equal(kms_config_load_file(&c, "/no/such/file.yaml"), KMS_EINVAL);
    assert_int_equal(kms_config_load_file(&c, dir), KMS_EINVAL); /* a directory */
    kms_config_free(&c);
    unlink(file);
    rmdir(dir);
}

static void run_needs_tls_unless_insecure(void **state)
{
    (void)state;
    kms_config c;
    assert_int_equal(kms_config_init(&c), KMS_OK);
    assert_int_equal(load(&c, "database: d\npkcs11: {module: m, token_label: t, pin_file: p}\n"),
                     KMS_OK);
    assert_int_equal(kms_config_validate(&c, KMS_CONFIG_INIT), KMS_OK);
    assert_int_equal(kms_config_validate(&c, KMS_CONFIG_RUN), KMS_EINVAL);
    assert_non_null(strstr(kms_error_detail(), "mutual TLS is mandatory"));
    assert_int_equal(kms_config_set(&c, "insecure_dev", "yes"), KMS_OK);
    assert_int_equal(kms_config_validate(&c, KMS_CONFIG_RUN), KMS_OK);
    assert_int_equal(kms_config_set(&c, "listen", "no-port"), KMS_OK);
    assert_int_equal(kms_config_validate(&c, KMS_CONFIG_RUN), KMS_EINVAL);
    /* insecure_dev only on a loopback address. */
    assert_int_equal(kms_config_set(&c, "listen", "0.0.0.0:7443"), KMS_OK);
    assert_int_equal(kms_config_validate(&c, KMS_CONFIG_RUN), KMS_EINVAL);
    assert_non_null(strstr(kms_error_detail(), "loopback"));
    assert_int_equal(kms_config_set(&c, "listen", "[::1]:0"), KMS_OK);
    assert_int_equal(kms_config_validate(&c, KMS_CONFIG_RUN), KMS_OK);
    kms_config_free(&c);
}

static void loopback_addresses(void **state)
{
    (void)state;
    static const char *const yes[] = {"127.0.0.1:7443", "127.1.2.3:0", "[::1]:7443",
                                      "localhost:7443"};
    static const char *const no[] = {
        "0.0.0.0:7443", "[::]:7443", "10.0.0.1:7443", "kms.example:7443",     "::1", "[::1]",
        "128.0.0.1:1",  ":7443",     "[]:1",          "[::ffff:127.0.0.1]:1", NULL};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        assert_int_equal(kms_config_listen_is_loopback(yes[i]), 1);
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        assert_int_equal(kms_config_listen_is_loopback(no[i]), 0);
}

/* The test-only settings: refused unless kmsd was built with its test hooks. */
static void test_settings_only_in_test_builds(void **state)
{
    (void)state;
    kms_config c;
    assert_int_equal(kms_config_init(&c), KMS_OK);
    assert_int_equal(kms_config_check_test_settings(&c, 0), KMS_OK);
    assert_int_equal(kms_config_set(&c, "test_crash_at", "approval-committed"), KMS_OK);
    assert_int_equal(kms_config_check_test_settings(&c, 1), KMS_OK);
    assert_int_equal(kms_config_check_test_settings(&c, 0), KMS_EINVAL);
    assert_non_null(strstr(kms_error_detail(), "test_crash_at"));
    kms_config_free(&c);
    assert_int_equal(kms_config_init(&c), KMS_OK);
    assert_int_equal(kms_config_set(&c, "test_clock_file", "/tmp/clock"), KMS_OK);
    assert_int_equal(kms_config_check_test_settings(&c, 0), KMS_EINVAL);
    assert_non_null(strstr(kms_error_detail(), "test_clock_file"));
    kms_config_free(&c);
}

/* Every setting the code accepts is in docs/configuration.md as `name`,
 * and is accepted by name. */
static void every_setting_documented(void **state)
{
    (void)state;
    FILE *f = fopen(KMS_CONFIG_DOC, "r");
    assert_non_null(f);
    static char doc[128 * 1024];
    size_t n = fread(doc, 1, sizeof(doc) - 1, f);
    fclose(f);
    doc[n] = '\0';
    size_t count = 0;
    for (const char *name; (name = kms_config_setting_name(count)) != NULL; count++) {
        char quoted[96];
        snprintf(quoted, sizeof(quoted), "`%s`", name);
        if (strstr(doc, quoted) == NULL)
            fail_msg("setting %s is not in docs/configuration.md", name);
    }
    assert_true(count > 20);
    assert_null(kms_config_setting_name(count + 1));
}

/* Every setting is in kmsd.yaml(5)'s source as *name* (scdoc, '_' escaped). */
static void every_setting_in_the_man_page(void **state)
{
    (void)state;
    FILE *f = fopen(KMS_CONFIG_MAN, "r");
    assert_non_null(f);
    static char doc[128 * 1024];
    size_t n = fread(doc, 1, sizeof(doc) - 1, f);
    fclose(f);
    doc[n] = '\0';
    size_t count = 0;
    for (const char *name; (name = kms_config_setting_name(count)) != NULL; count++) {
        char want[128];
        size_t w = 0;
        want[w++] = '*';
        for (const char *p = name; *p != '\0' && w + 3 < sizeof(want); p++) {
            if (*p == '_')
                want[w++] = '\\';
            want[w++] = *p;
        }
        want[w++] = '*';
        want[w] = '\0';
        if (strstr(doc, want) == NULL)
            fail_msg("setting %s is not in docs/man/kmsd.yaml.5.scd", name);
    }
    assert_true(count > 20);
}

/* init.auditors: a list of identities; the first --auditor replaces it,
 * later ones append; empty entries, a non-list and too many are refused. */
static void init_auditors(void **state)
{
    (void)state;
    kms_config c;
    assert_int_equal(kms_config_init(&c), KMS_OK);
    assert_int_equal(load(&c, "init:\n  auditors: [\"spiffe://x/a\", \"cn:b\"]\n"), KMS_OK);
    assert_int_equal(c.auditors.n, 2);
    assert_string_equal(c.auditors.v[0], "spiffe://x/a");
    assert_string_equal(c.auditors.v[1], "cn:b");
    assert_int_equal(kms_config_add_auditor(&c, "spiffe://x/c"), KMS_OK);
    assert_int_equal(kms_config_add_auditor(&c, "spiffe://x/d"), KMS_OK);
    assert_int_equal(c.auditors.n, 2);
    assert_string_equal(c.auditors.v[0], "spiffe://x/c");
    assert_int_equal(kms_config_add_auditor(&c, ""), KMS_EINVAL);
    /* the command line wins over a file read afterwards */
    assert_int_equal(load(&c, "init:\n  auditors: [\"spiffe://x/z\"]\n"), KMS_OK);
    assert_int_equal(c.auditors.n, 2);
    assert_string_equal(c.auditors.v[1], "spiffe://x/d");
    kms_config_free(&c);

    assert_int_equal(kms_config_init(&c), KMS_OK);
    assert_int_equal(load(&c, "init:\n  auditors: [\"\"]\n"), KMS_EINVAL);
    kms_config_free(&c);
    assert_int_equal(kms_config_init(&c), KMS_OK);
    assert_int_equal(load(&c, "init:\n  auditors: spiffe://x/a\n"), KMS_EINVAL);
    kms_config_free(&c);
    assert_int_equal(kms_config_init(&c), KMS_OK);
    for (int i = 0; i < KMS_CONFIG_MAX_AUDITORS; i++) {
        char id[32];
        snprintf(id, sizeof(id), "spiffe://x/%d", i);
        assert_int_equal(kms_config_add_auditor(&c, id), KMS_OK);
    }
    assert_int_equal(kms_config_add_auditor(&c, "spiffe://x/one-too-many"), KMS_EINVAL);
    kms_config_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_setting_documented),
        cmocka_unit_test(every_setting_in_the_man_page),
        cmocka_unit_test(defaults),
        cmocka_unit_test(every_setting),
        cmocka_unit_test(quorum_and_tpm2_settings),
        cmocka_unit_test(command_line_overrides),
        cmocka_unit_test(init_auditors),
        cmocka_unit_test(bad_command_line_values),
        cmocka_unit_test(pkcs11_init_args_and_nonlocal),
        cmocka_unit_test(refused_files),
        cmocka_unit_test(empty_file_and_sizes),
        cmocka_unit_test(load_file),
        cmocka_unit_test(tls_identity_and_revocation),
        cmocka_unit_test(run_needs_tls_unless_insecure),
        cmocka_unit_test(loopback_addresses),
        cmocka_unit_test(test_settings_only_in_test_builds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
