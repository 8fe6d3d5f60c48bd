/* The audit record's JSON line, its strict parser and the hash chain
 * (format in audit_record.h and docs/audit.md). */
#include "kmsd/audit/audit_record.h"

#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "base/buf.h"

static const char hexdig[] = "0123456789abcdef";

void kms_audit_hex(const uint8_t *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdig[in[i] >> 4];
        out[2 * i + 1] = hexdig[in[i] & 0xf];
    }
    out[2 * n] = '\0';
}

/* ---- encoding ---------------------------------------------------------------------- */

static int put_lit(kms_buf_writer *w, const char *s)
{
    return kms_buf_put_bytes(w, s, strlen(s));
}

static int put_u64(kms_buf_writer *w, uint64_t v)
{
    char d[20];
    size_t n = 0;
    do {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    char out[20];
    for (size_t i = 0; i < n; i++)
        out[i] = d[n - 1 - i];
    return kms_buf_put_bytes(w, out, n);
}

static int put_str(kms_buf_writer *w, const char *s)
{
    if (s == NULL || strlen(s) > KMS_AUDIT_FIELD_MAX)
        return KMS_EINVAL;
    int r = kms_buf_put_u8(w, '"');
    for (const unsigned char *p = (const unsigned char *)s; r == 0 && *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            uint8_t esc[2] = {'\\', *p};
            r = kms_buf_put_bytes(w, esc, 2);
        } else if (*p >= 0x20 && *p <= 0x7e) {
            r = kms_buf_put_u8(w, *p);
        } else {
            uint8_t esc[6] = {
                '\\', 'u', '0', '0', (uint8_t)hexdig[*p >> 4], (uint8_t)hexdig[*p & 0xf]};
            r = kms_buf_put_bytes(w, esc, sizeof(esc));
        }
    }
    return r != 0 ? r : kms_buf_put_u8(w, '"');
}

int kms_audit_time_text(int64_t us, char out[KMS_AUDIT_TIME_TEXT_LEN + 1])
{
    time_t secs = (time_t)(us / 1000000);
    long frac = (long)(us % 1000000);
    if (us < 0)
        return KMS_EINVAL;
    struct tm tm;
    if (gmtime_r(&secs, &tm) == NULL || tm.tm_year + 1900 > 9999)
        return KMS_EINVAL;
    int n = snprintf(out, KMS_AUDIT_TIME_TEXT_LEN + 1, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     frac);
    if (n != KMS_AUDIT_TIME_TEXT_LEN)
        return KMS_EINVAL;
    return KMS_OK;
}

static int put_time(kms_buf_writer *w, int64_t us)
{
    char t[KMS_AUDIT_TIME_TEXT_LEN + 1];
    if (kms_audit_time_text(us, t) != 0)
        return KMS_EINVAL;
    int r = kms_buf_put_u8(w, '"');
    if (r == 0)
        r = kms_buf_put_bytes(w, t, KMS_AUDIT_TIME_TEXT_LEN);
    return r != 0 ? r : kms_buf_put_u8(w, '"');
}

int kms_audit_rec_encode(const kms_audit_rec *rec, char *out, size_t cap, size_t *len)
{
    kms_buf_writer w;
    char prev[2 * KMS_AUDIT_HASH_LEN + 1];
    int r;

    kms_audit_hex(rec->prev, KMS_AUDIT_HASH_LEN, prev);
    kms_buf_writer_init(&w, (uint8_t *)out, cap < KMS_AUDIT_LINE_MAX ? cap : KMS_AUDIT_LINE_MAX);
    if ((r = put_lit(&w, "{\"seq\":")) != 0 || (r = put_u64(&w, rec->seq)) != 0 ||
        (r = put_lit(&w, ",\"prev\":")) != 0 || (r = put_str(&w, prev)) != 0 ||
        (r = put_lit(&w, ",\"time\":")) != 0 || (r = put_time(&w, rec->time_us)) != 0 ||
        (r = put_lit(&w, ",\"instance\":")) != 0 || (r = put_str(&w, rec->instance)) != 0 ||
        (r = put_lit(&w, ",\"type\":")) != 0 || (r = put_str(&w, rec->type)) != 0 ||
        (r = put_lit(&w, ",\"identity\":")) != 0 || (r = put_str(&w, rec->identity)) != 0 ||
        (r = put_lit(&w, ",\"peer\":")) != 0 || (r = put_str(&w, rec->peer)) != 0 ||
        (r = put_lit(&w, ",\"method\":")) != 0 || (r = put_str(&w, rec->method)) != 0 ||
        (r = put_lit(&w, ",\"key\":")) != 0 || (r = put_str(&w, rec->key)) != 0 ||
        (r = put_lit(&w, ",\"version\":")) != 0 || (r = put_u64(&w, rec->version)) != 0 ||
        (r = put_lit(&w, ",\"action\":")) != 0 || (r = put_str(&w, rec->action)) != 0 ||
        (r = put_lit(&w, ",\"context_hmac\":")) != 0 || (r = put_str(&w, rec->context_hmac)) != 0 ||
        (r = put_lit(&w, ",\"status\":")) != 0 || (r = put_u64(&w, rec->status)) != 0 ||
        (r = put_lit(&w, ",\"error\":")) != 0 || (r = put_str(&w, rec->error)) != 0 ||
        (r = put_lit(&w, ",\"detail\":")) != 0 || (r = put_str(&w, rec->detail)) != 0 ||
        (r = put_lit(&w, ",\"duration_us\":")) != 0 || (r = put_u64(&w, rec->duration_us)) != 0 ||
        (r = put_lit(&w, "}\n")) != 0)
        return r == KMS_EINVAL ? kms_error_set(KMS_EINVAL, "audit: a record field is too long")
                               : kms_error_set(KMS_ETOOBIG, "audit: record longer than %u bytes",
                                               (unsigned)KMS_AUDIT_LINE_MAX);
    *len = w.len;
    return KMS_OK;
}

/* ---- parsing ----------------------------------------------------------------------- */

static int get_lit(kms_buf_reader *r, const char *s)
{
    const uint8_t *at;
    size_t n = strlen(s);
    if (kms_buf_get_view(r, n, &at) != 0 || memcmp(at, s, n) != 0)
        return KMS_EINVAL;
    return KMS_OK;
}

static int get_u64(kms_buf_reader *r, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    size_t digits = 0;
    uint8_t c, first = 0;
    while (kms_buf_remaining(r) > 0 && r->data[r->off] >= '0' && r->data[r->off] <= '9') {
        if (kms_buf_get_u8(r, &c) != 0)
            return KMS_EINVAL;
        if (digits == 0)
            first = c;
        if (v > (max - (uint64_t)(c - '0')) / 10)
            return KMS_EINVAL;
        v = v * 10 + (uint64_t)(c - '0');
        digits++;
    }
    if (digits == 0 || (digits > 1 && first == '0'))
        return KMS_EINVAL; /* none, or a leading zero: not canonical */
    *out = v;
    return KMS_OK;
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* uppercase is not canonical */
}

/* A canonical string into out (KMS_AUDIT_FIELD_MAX + 1 bytes). A decoded
 * NUL is refused: it could not be told from the end of the C string. */
static int get_str(kms_buf_reader *r, char *out, size_t cap)
{
    size_t n = 0;
    uint8_t c;
    if (kms_buf_get_u8(r, &c) != 0 || c != '"')
        return KMS_EINVAL;
    for (;;) {
        if (kms_buf_get_u8(r, &c) != 0)
            return KMS_EINVAL;
        if (c == '"')
            break;
        if (c == '\\') {
            uint8_t e;
            if (kms_buf_get_u8(r, &e) != 0)
                return KMS_EINVAL;
            if (e == '"' || e == '\\') {
                c = e;
            } else if (e == 'u') {
                uint8_t h[4];
                if (kms_buf_get_bytes(r, h, 4) != 0 || h[0] != '0' || h[1] != '0' ||
                    hexval(h[2]) < 0 || hexval(h[3]) < 0)
                    return KMS_EINVAL;
                c = (uint8_t)(hexval(h[2]) << 4 | hexval(h[3]));
                if (c == 0 || (c >= 0x20 && c <= 0x7e))
                    return KMS_EINVAL; /* NUL, or printable written as an escape */
            } else {
                return KMS_EINVAL;
            }
        } else if (c < 0x20 || c > 0x7e) {
            return KMS_EINVAL; /* must have been escaped */
        }
        if (n + 1 >= cap)
            return KMS_EINVAL;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return KMS_OK;
}

static int is_hex(const char *s, size_t n)
{
    if (strlen(s) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (hexval((uint8_t)s[i]) < 0)
            return 0;
    return 1;
}

static int num(const char *s, int off, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++)
        v = v * 10 + (s[off + i] - '0');
    return v;
}

/* "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" back to unix microseconds; the encoder
 * must write the same text, which the caller checks by re-encoding. */
static int parse_time(const char *s, int64_t *us)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    if (strlen(s) != sizeof(shape) - 1)
        return KMS_EINVAL;
    for (size_t i = 0; i < sizeof(shape) - 1; i++)
        if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
            return KMS_EINVAL;
    struct tm tm = {0};
    tm.tm_year = num(s, 0, 4) - 1900;
    tm.tm_mon = num(s, 5, 2) - 1;
    tm.tm_mday = num(s, 8, 2);
    tm.tm_hour = num(s, 11, 2);
    tm.tm_min = num(s, 14, 2);
    tm.tm_sec = num(s, 17, 2);
    long frac = num(s, 20, 6);
    time_t t = timegm(&tm);
    if (t == (time_t)-1 || t < 0)
        return KMS_EINVAL;
    *us = (int64_t)t * 1000000 + frac;
    return KMS_OK;
}

int kms_audit_rec_parse(const char *line, size_t len, kms_audit_parsed *p)
{
    kms_buf_reader r;
    char prev[KMS_AUDIT_FIELD_MAX + 1];
    uint64_t version = 0, status = 0;

    if (len > KMS_AUDIT_LINE_MAX)
        return KMS_EINVAL;
    memset(p, 0, sizeof(*p));
    kms_buf_reader_init(&r, (const uint8_t *)line, len);
    if (get_lit(&r, "{\"seq\":") != 0 || get_u64(&r, UINT64_MAX, &p->rec.seq) != 0 ||
        get_lit(&r, ",\"prev\":") != 0 || get_str(&r, prev, sizeof(prev)) != 0 ||
        get_lit(&r, ",\"time\":") != 0 || get_str(&r, p->time, sizeof(p->time)) != 0 ||
        get_lit(&r, ",\"instance\":") != 0 || get_str(&r, p->instance, sizeof(p->instance)) != 0 ||
        get_lit(&r, ",\"type\":") != 0 || get_str(&r, p->type, sizeof(p->type)) != 0 ||
        get_lit(&r, ",\"identity\":") != 0 || get_str(&r, p->identity, sizeof(p->identity)) != 0 ||
        get_lit(&r, ",\"peer\":") != 0 || get_str(&r, p->peer, sizeof(p->peer)) != 0 ||
        get_lit(&r, ",\"method\":") != 0 || get_str(&r, p->method, sizeof(p->method)) != 0 ||
        get_lit(&r, ",\"key\":") != 0 || get_str(&r, p->key, sizeof(p->key)) != 0 ||
        get_lit(&r, ",\"version\":") != 0 || get_u64(&r, UINT32_MAX, &version) != 0 ||
        get_lit(&r, ",\"action\":") != 0 || get_str(&r, p->action, sizeof(p->action)) != 0 ||
        get_lit(&r, ",\"context_hmac\":") != 0 ||
        get_str(&r, p->context_hmac, sizeof(p->context_hmac)) != 0 ||
        get_lit(&r, ",\"status\":") != 0 || get_u64(&r, UINT32_MAX, &status) != 0 ||
        get_lit(&r, ",\"error\":") != 0 || get_str(&r, p->error, sizeof(p->error)) != 0 ||
        get_lit(&r, ",\"detail\":") != 0 || get_str(&r, p->detail, sizeof(p->detail)) != 0 ||
        get_lit(&r, ",\"duration_us\":") != 0 ||
        get_u64(&r, UINT64_MAX, &p->rec.duration_us) != 0 || get_lit(&r, "}\n") != 0 ||
        kms_buf_expect_end(&r) != 0)
        return KMS_EINVAL;
    if (!is_hex(prev, 2 * KMS_AUDIT_HASH_LEN) || !is_hex(p->instance, 16) ||
        parse_time(p->time, &p->rec.time_us) != 0)
        return KMS_EINVAL;
    for (size_t i = 0; i < KMS_AUDIT_HASH_LEN; i++)
        p->rec.prev[i] =
            (uint8_t)(hexval((uint8_t)prev[2 * i]) << 4 | hexval((uint8_t)prev[2 * i + 1]));
    p->rec.version = (uint32_t)version;
    p->rec.status = (uint32_t)status;
    p->rec.instance = p->instance;
    p->rec.type = p->type;
    p->rec.identity = p->identity;
    p->rec.peer = p->peer;
    p->rec.method = p->method;
    p->rec.key = p->key;
    p->rec.action = p->action;
    p->rec.context_hmac = p->context_hmac;
    p->rec.error = p->error;
    p->rec.detail = p->detail;

    /* Canonical: the record must re-encode to exactly these bytes (this
     * catches a time such as 24:00:00 or Feb 30 that timegm normalises). */
    char again[KMS_AUDIT_LINE_MAX];
    size_t n = 0;
    if (kms_audit_rec_encode(&p->rec, again, sizeof(again), &n) != 0 || n != len ||
        memcmp(again, line, len) != 0) {
        kms_error_clear();
        return KMS_EINVAL;
    }
    return KMS_OK;
}

/* ---- the chain --------------------------------------------------------------------- */

int kms_audit_chain_next(const uint8_t prev[KMS_AUDIT_HASH_LEN], const char *line, size_t len,
                         uint8_t hash_out[KMS_AUDIT_HASH_LEN])
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, prev, KMS_AUDIT_HASH_LEN) == 1 &&
             EVP_DigestUpdate(ctx, line, len) == 1 && EVP_DigestFinal_ex(ctx, md, &md_len) == 1 &&
             md_len == KMS_AUDIT_HASH_LEN;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return kms_error_set(KMS_EINTERNAL, "audit: SHA-256 failed");
    memcpy(hash_out, md, KMS_AUDIT_HASH_LEN);
    return KMS_OK;
}
