/* Prometheus metrics end to end: a real kmsd (mutual TLS, SoftHSM2 token,
 * SQLite file, audit log on) serving /metrics on loopback. Every scrape is
 * parsed strictly (the text exposition format: each line a # HELP, a # TYPE
 * or a sample of a family typed before it; histograms cumulative and ending
 * in +Inf == _count); counters move after real calls; no key name or
 * identity appears; a non-loopback metrics.listen is refused at start.
 * (promtool, the reference checker, is not installed: the Debian package
 * brings 37 packages and ~100 MB; this parser checks at least as much of the
 * format as `promtool check metrics` does for syntax.) */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <grpc/grpc.h>
#include <grpc/status.h>

#include "group_run.h"
#include "grpc_test_client.h"
#include "kms/v1/kms.pb-c.h"
#include "kmsd_fixture.h"
#include "test_util.h"

#define KM "/kms.v1.KeyManagement/"
#define BODY_MAX (1u << 20)
#define MAX_FAMILIES 64

static kms_test_kmsd K;
static char DIR_[320], AUDIT[400];
static int PORT;
static kms_tc *APP, *BOB;
static char BODY[BODY_MAX];

/* ---- HTTP: a plain HTTP/1.0 request on loopback ------------------------------------ */

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(s, (struct sockaddr *)&a, &len) != 0)
        fail_msg("free port: %s", strerror(errno));
    close(s);
    return ntohs(a.sin_port);
}

/* Returns the HTTP status; the body (NUL-terminated) into BODY. */
static int http(const char *method, const char *path)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)PORT),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_true(s >= 0);
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof(a)), 0);
    char req[256];
    int n = snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", method, path);
    assert_int_equal(write(s, req, (size_t)n), n);
    static char raw[BODY_MAX];
    size_t used = 0;
    ssize_t got;
    while ((got = read(s, raw + used, sizeof(raw) - 1 - used)) > 0)
        used += (size_t)got;
    close(s);
    raw[used] = '\0';
    int code = 0;
    assert_true(strncmp(raw, "HTTP/1.", 7) == 0);
    for (const char *p = raw + 9; isdigit((unsigned char)*p); p++)
        code = code * 10 + (*p - '0');
    const char *body = strstr(raw, "\r\n\r\n");
    assert_non_null(body);
    snprintf(BODY, sizeof(BODY), "%s", body + 4);
    return code;
}

/* ---- a strict parser of the text exposition format -------------------------------- */

static jmp_buf PARSE_JMP;
static char PARSE_ERR[256];
#define BAD(...)                                                                                   \
    do {                                                                                           \
        snprintf(PARSE_ERR, sizeof(PARSE_ERR), __VA_ARGS__);                                       \
        longjmp(PARSE_JMP, 1);                                                                     \
    } while (0)

struct family {
    char name[128];
    char type[16];
    int help, samples;
};

static int name_char(int c, int first)
{
    return isalpha(c) || c == '_' || c == ':' || (!first && isdigit(c));
}

/* A metric or label name at *p; copied into out. */
static void parse_name(const char **p, char *out, size_t cap, int label, int line)
{
    size_t n = 0;
    if (!name_char((unsigned char)**p, 1) || (label && **p == ':'))
        BAD("line %d: bad name at \"%.20s\"", line, *p);
    while (name_char((unsigned char)**p, 0) && !(label && **p == ':')) {
        if (n + 1 >= cap)
            BAD("line %d: name too long", line);
        out[n++] = *(*p)++;
    }
    out[n] = '\0';
}

static double parse_value(const char **p, int line)
{
    const char *s = *p;
    if (strncmp(s, "+Inf", 4) == 0 || strncmp(s, "-Inf", 4) == 0 || strncmp(s, "NaN", 3) == 0) {
        *p += s[0] == 'N' ? 3 : 4;
        return s[0] == '-' ? -INFINITY : s[0] == 'N' ? NAN : INFINITY;
    }
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno != 0 || (*end != '\0' && *end != ' ' && *end != '\n'))
        BAD("line %d: bad value \"%.20s\"", line, s);
    *p = end;
    return v;
}

static struct family *find_family(struct family *f, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(f[i].name, name) == 0)
            return &f[i];
    return NULL;
}

/* The family a sample belongs to: its own name, or a histogram's base. */
static struct family *family_of(struct family *f, size_t n, const char *sample)
{
    struct family *fam = find_family(f, n, sample);
    if (fam != NULL)
        return fam;
    static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
    for (size_t i = 0; i < 3; i++) {
        size_t sl = strlen(sample), xl = strlen(suffixes[i]);
        if (sl > xl && strcmp(sample + sl - xl, suffixes[i]) == 0) {
            char base[128];
            snprintf(base, sizeof(base), "%.*s", (int)(sl - xl), sample);
            fam = find_family(f, n, base);
            if (fam != NULL && strcmp(fam->type, "histogram") == 0)
                return fam;
        }
    }
    return NULL;
}

/* Parses text strictly; fails the test on the first bad line. Returns the
 * number of samples. Histogram buckets of one series must not decrease and
 * the +Inf bucket must equal _count. */
static size_t parse_strict(const char *text)
{
    struct family fam[MAX_FAMILIES];
    size_t nfam = 0, samples = 0;
    double last_bucket = -1, inf_bucket = -1;
    char last_series[512] = "";
    int line = 0;
    if (text[0] == '\0' || text[strlen(text) - 1] != '\n')
        BAD("empty, or the last line does not end in a newline");
    for (const char *p = text; *p != '\0'; p = strchr(p, '\n') + 1) {
        line++;
        char name[128];
        if (*p == '#') {
            int help = strncmp(p, "# HELP ", 7) == 0, type = strncmp(p, "# TYPE ", 7) == 0;
            if (!help && !type)
                BAD("line %d: a comment that is neither HELP nor TYPE", line);
            const char *q = p + 7;
            parse_name(&q, name, sizeof(name), 0, line);
            if (*q != ' ')
                BAD("line %d: no text after the name", line);
            q++;
            struct family *f = find_family(fam, nfam, name);
            if (f == NULL) {
                if (nfam == MAX_FAMILIES)
                    BAD("too many families");
                f = &fam[nfam++];
                memset(f, 0, sizeof(*f));
                snprintf(f->name, sizeof(f->name), "%s", name);
            }
            if (f->samples)
                BAD("line %d: %s described after its samples", line, name);
            if (help) {
                if (f->help++)
                    BAD("line %d: second HELP for %s", line, name);
                if (*q == '\n')
                    BAD("line %d: empty HELP", line);
            } else {
                if (f->type[0] != '\0')
                    BAD("line %d: second TYPE for %s", line, name);
                size_t tl = strcspn(q, "\n");
                snprintf(f->type, sizeof(f->type), "%.*s", (int)tl, q);
                if (strcmp(f->type, "counter") != 0 && strcmp(f->type, "gauge") != 0 &&
                    strcmp(f->type, "histogram") != 0)
                    BAD("line %d: type \"%s\"", line, f->type);
            }
            continue;
        }
        parse_name(&p, name, sizeof(name), 0, line);
        struct family *f = family_of(fam, nfam, name);
        if (f == NULL || f->type[0] == '\0' || !f->help)
            BAD("line %d: sample %s without HELP and TYPE before it", line, name);
        size_t name_len = strlen(name);
        if (strcmp(f->type, "counter") == 0 &&
            (name_len < 6 || strcmp(name + name_len - 6, "_total") != 0))
            BAD("line %d: counter %s does not end in _total", line, name);
        f->samples++;
        char series[512], le[256] = "";
        size_t sl = (size_t)snprintf(series, sizeof(series), "%s", f->name);
        if (*p == '{') {
            p++;
            int first = 1;
            while (*p != '}') {
                char label[64], value[256];
                size_t vn = 0;
                if (!first && *p++ != ',')
                    BAD("line %d: labels not separated by ','", line);
                first = 0;
                parse_name(&p, label, sizeof(label), 1, line);
                if (p[0] != '=' || p[1] != '"')
                    BAD("line %d: label %s without =\"", line, label);
                p += 2;
                while (*p != '"') {
                    if (*p == '\n' || *p == '\0')
                        BAD("line %d: unterminated label value", line);
                    if (*p == '\\') {
                        p++;
                        if (*p != '\\' && *p != '"' && *p != 'n')
                            BAD("line %d: bad escape", line);
                    }
                    if (vn + 1 < sizeof(value))
                        value[vn++] = *p;
                    p++;
                }
                value[vn] = '\0';
                p++;
                if (strcmp(label, "le") == 0)
                    snprintf(le, sizeof(le), "%s", value);
                else if (sl < sizeof(series))
                    sl +=
                        (size_t)snprintf(series + sl, sizeof(series) - sl, ",%s=%s", label, value);
            }
            p++;
        }
        if (*p++ != ' ')
            BAD("line %d: no space before the value", line);
        double v = parse_value(&p, line);
        if (*p == ' ') { /* an optional timestamp (milliseconds) */
            p++;
            char *end = NULL;
            (void)strtoll(p, &end, 10);
            if (end == p)
                BAD("line %d: bad timestamp", line);
            p = end;
        }
        if (*p != '\n')
            BAD("line %d: trailing text \"%.20s\"", line, p);
        if (strcmp(f->type, "counter") == 0 && !(v >= 0))
            BAD("line %d: negative counter", line);
        if (strcmp(f->type, "histogram") == 0) {
            size_t nl = strlen(name);
            if (nl > 7 && strcmp(name + nl - 7, "_bucket") == 0) {
                if (le[0] == '\0')
                    BAD("line %d: bucket without le", line);
                if (strcmp(series, last_series) != 0) {
                    snprintf(last_series, sizeof(last_series), "%s", series);
                    last_bucket = -1;
                    inf_bucket = -1;
                }
                if (v < last_bucket)
                    BAD("line %d: buckets not cumulative", line);
                last_bucket = v;
                if (strcmp(le, "+Inf") == 0)
                    inf_bucket = v;
            } else if (nl > 6 && strcmp(name + nl - 6, "_count") == 0) {
                if (strcmp(series, last_series) != 0 || inf_bucket < 0)
                    BAD("line %d: _count without a +Inf bucket before it", line);
                if (v != inf_bucket)
                    BAD("line %d: _count %g != +Inf bucket %g", line, v, inf_bucket);
            }
        }
        samples++;
    }
    for (size_t i = 0; i < nfam; i++)
        if (fam[i].type[0] == '\0' || !fam[i].help)
            BAD("%s lacks HELP or TYPE", fam[i].name);
    return samples;
}

/* NULL if text parses; else what is wrong. */
static const char *check(const char *text, size_t *samples)
{
    size_t n = 0;
    if (setjmp(PARSE_JMP) != 0)
        return PARSE_ERR;
    n = parse_strict(text);
    if (samples != NULL)
        *samples = n;
    return NULL;
}

static void must_parse(const char *text, size_t *samples)
{
    const char *err = check(text, samples);
    if (err != NULL)
        fail_msg("the exposition does not parse: %s", err);
}

/* The value of the sample written exactly as series ("name{labels}"); -1 if absent. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : p)
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return -1;
}

static double scrape(const char *series)
{
    assert_int_equal(http("GET", "/metrics"), 200);
    must_parse(BODY, NULL);
    return sample(BODY, series);
}

/* ---- calls ------------------------------------------------------------------------- */

static int gdk(kms_tc *c, const char *key)
{
    Kms__V1__GenerateDataKeyRequest req = KMS__V1__GENERATE_DATA_KEY_REQUEST__INIT;
    req.key_name = (char *)key;
    req.key_spec = KMS__V1__KEY_SPEC__AES_256;
    ProtobufCMessage *m = NULL;
    int st = kms_tc_call(c, KM "GenerateDataKey", &req.base,
                         &kms__v1__generate_data_key_response__descriptor, &m, NULL, 0);
    if (m != NULL)
        protobuf_c_message_free_unpacked(m, NULL);
    return st;
}

/* ---- setup ------------------------------------------------------------------------- */

static void append_config(const char *path, const char *text)
{
    FILE *f = fopen(path, "a");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

static int group_setup(void **state)
{
    (void)state;
    grpc_init();
    kms_test_kmsd_setup(&K);
    kms_test_kmsd_dir(&K, DIR_, sizeof(DIR_));
    kms_test_path(AUDIT, sizeof(AUDIT), DIR_, "audit");
    if (mkdir(AUDIT, 0700) != 0)
        return -1;
    PORT = free_port();
    char cfg[128];
    snprintf(cfg, sizeof(cfg), "metrics:\n  listen: 127.0.0.1:%d\n", PORT);
    append_config(K.config, cfg);
    const char *extra[] = {"--audit-dir", AUDIT, NULL};
    kms_test_kmsd_start(&K, extra);
    APP = kms_test_kmsd_open_as(&K, "app");
    BOB = kms_test_kmsd_open_as(&K, "bob");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    kms_tc_close(APP);
    kms_tc_close(BOB);
    if (K.pid != 0)
        (void)kms_test_kmsd_stop(&K, SIGTERM);
    kms_test_kmsd_teardown(&K);
    kms_tc_grpc_shutdown();
    return 0;
}

/* ---- tests ------------------------------------------------------------------------- */

#define GDK_OK "kms_rpc_calls_total{method=\"" KM "GenerateDataKey\",code=\"OK\"}"
#define GDK_DENIED                                                                                 \
    "kms_rpc_calls_total{method=\"" KM "GenerateDataKey\",code=\"PERMISSION_DENIED\"}"
#define GDK_COUNT "kms_rpc_duration_seconds_count{method=\"" KM "GenerateDataKey\"}"

static void scrape_parses_strictly_and_has_every_family(void **state)
{
    (void)state;
    assert_int_equal(gdk(APP, "demo"), GRPC_STATUS_OK);
    assert_int_equal(http("GET", "/metrics"), 200);
    size_t n = 0;
    must_parse(BODY, &n);
    print_message("%zu samples, %zu bytes\n", n, strlen(BODY));
    static const char *const families[] = {
        "# TYPE kms_build_info gauge\n",
        "# TYPE kms_rpc_calls_total counter\n",
        "# TYPE kms_rpc_duration_seconds histogram\n",
        "# TYPE kms_audit_records_total counter\n",
        "# TYPE kms_audit_failures_total counter\n",
        "# TYPE kms_audit_fsync_duration_seconds histogram\n",
        "# TYPE kms_tls_server_cert_expiry_timestamp_seconds gauge\n",
    };
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++)
        if (strstr(BODY, families[i]) == NULL)
            fail_msg("missing %s", families[i]);
    /* the server certificate's notAfter: in the future, within 50 years */
    double exp = sample(BODY, "kms_tls_server_cert_expiry_timestamp_seconds");
    assert_true(exp > (double)time(NULL));
    assert_true(exp < (double)time(NULL) + 50.0 * 366 * 86400);
}

/* The checker itself refuses what Prometheus would refuse. */
static void the_parser_refuses_broken_expositions(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "kms_x 1\n",                                                              /* no HELP/TYPE */
        "# HELP kms_x h\n# TYPE kms_x counter\nkms_x 1\n",                        /* no _total */
        "# HELP kms_x_total h\n# TYPE kms_x_total counter\nkms_x_total{a=1} 1\n", /* unquoted */
        "# HELP kms_x_total h\n# TYPE kms_x_total counter\nkms_x_total 1x\n",     /* value */
        "# HELP kms_x_total h\n# TYPE kms_x_total counter\nkms_x_total 1",        /* no \n */
        "# HELP kms_x_total h\n# TYPE kms_x_total counter\n# TYPE kms_x_total gauge\n",
        "# HELP kms_h h\n# TYPE kms_h histogram\nkms_h_bucket{le=\"1\"} 2\n"
        "kms_h_bucket{le=\"+Inf\"} 1\nkms_h_sum 0\nkms_h_count 1\n", /* not cumulative */
        "# HELP kms_h h\n# TYPE kms_h histogram\nkms_h_bucket{le=\"+Inf\"} 2\n"
        "kms_h_sum 0\nkms_h_count 3\n", /* count != +Inf */
        "# a comment\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (check(bad[i], NULL) == NULL)
            fail_msg("accepted: %s", bad[i]);
    assert_null(check(
        "# HELP kms_x_total h\n# TYPE kms_x_total counter\nkms_x_total{a=\"\\\"\"} 1\n", NULL));
}

static void counters_move_after_calls(void **state)
{
    (void)state;
    double ok0 = scrape(GDK_OK), n0 = sample(BODY, GDK_COUNT);
    double denied0 = sample(BODY, GDK_DENIED);
    double audit0 = sample(BODY, "kms_audit_records_total");
    double fsync0 = sample(BODY, "kms_audit_fsync_duration_seconds_count");
    assert_true(ok0 >= 0 && n0 >= ok0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(gdk(APP, "demo"), GRPC_STATUS_OK);
    int st = gdk(BOB, "demo"); /* bob may not use demo */
    assert_int_equal(st, GRPC_STATUS_PERMISSION_DENIED);
    double ok1 = scrape(GDK_OK);
    assert_true(ok1 == ok0 + 3);
    assert_true(sample(BODY, GDK_DENIED) == (denied0 < 0 ? 0 : denied0) + 1);
    assert_true(sample(BODY, GDK_COUNT) == n0 + 4);
    /* each call's record is durable before it is answered */
    assert_true(sample(BODY, "kms_audit_records_total") >= audit0 + 4);
    assert_true(sample(BODY, "kms_audit_fsync_duration_seconds_count") > fsync0);
    assert_true(sample(BODY, "kms_audit_failures_total") == 0);
}

static void no_key_name_or_identity_by_default(void **state)
{
    (void)state;
    assert_int_equal(gdk(APP, "demo"), GRPC_STATUS_OK);
    assert_int_equal(gdk(APP, "second"), GRPC_STATUS_OK);
    assert_int_equal(http("GET", "/metrics"), 200);
    /* "second" as a label value: the word itself is in "_seconds" */
    static const char *const secret[] = {"demo",    "\"second", "spiffe", "kms.local",
                                         "officer", "app\"",    "bob",    "auditor"};
    for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++)
        if (strstr(BODY, secret[i]) != NULL)
            fail_msg("\"%s\" appears in the metrics", secret[i]);
}

static void other_paths_and_methods_are_refused(void **state)
{
    (void)state;
    assert_int_equal(http("GET", "/"), 404);
    assert_int_equal(http("GET", "/metrics/x"), 404);
    assert_int_equal(http("POST", "/metrics"), 405);
    assert_int_equal(http("GET", "/metrics"), 200);
}

static void non_loopback_listen_is_refused_at_start(void **state)
{
    (void)state;
    assert_int_equal(kms_test_kmsd_stop(&K, SIGTERM), 0);
    K.pid = 0;
    char cfg[400], text[8192], out[8192];
    kms_test_path(cfg, sizeof(cfg), DIR_, "remote.yaml");
    size_t n = kms_test_read_file(K.config, text, sizeof(text) - 200);
    text[n] = '\0';
    /* the metrics block appended last is replaced */
    char *m = strstr(text, "metrics:\n");
    assert_non_null(m);
    snprintf(m, sizeof(text) - (size_t)(m - text), "metrics:\n  listen: 0.0.0.0:%d\n", PORT);
    kms_test_write_file(cfg, text, 0600);
    /* gRPC on an address no interface has (TEST-NET-1): were the metrics
     * address accepted, kmsd would still stop (for the wrong reason, which
     * the message check catches) instead of serving. */
    const char *argv[] = {"--config",       cfg,   "--audit-dir", AUDIT, "--listen",
                          "192.0.2.1:7443", "run", NULL};
    int st = kms_test_kmsd_run(argv, out, sizeof(out));
    assert_int_not_equal(st, 0);
    if (strstr(out, "not a loopback address") == NULL ||
        strstr(out, "metrics.allow_remote") == NULL)
        fail_msg("kmsd's refusal does not say why: %s", out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_parser_refuses_broken_expositions),
        cmocka_unit_test(scrape_parses_strictly_and_has_every_family),
        cmocka_unit_test(counters_move_after_calls),
        cmocka_unit_test(no_key_name_or_identity_by_default),
        cmocka_unit_test(other_paths_and_methods_are_refused),
        cmocka_unit_test(non_loopback_listen_is_refused_at_start),
    };
    return KMS_RUN_GROUP(tests, group_setup, group_teardown);
}
