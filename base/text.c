/* Printable text (contract: base/text.h). */
#include "base/text.h"

#include <string.h>

size_t kms_text_next(const unsigned char *s, size_t len, uint32_t *cp)
{
    if (len == 0)
        return 0;
    unsigned char c = s[0];
    size_t n;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
        n = 2, v = c & 0x1fu, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3, v = c & 0x0fu, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4, v = c & 0x07u, min = 0x10000;
    } else {
        return 0; /* a continuation byte, an overlong lead (c0, c1) or f5..ff */
    }
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = v << 6 | (s[i] & 0x3fu);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return n;
}

int kms_text_printable(uint32_t cp)
{
    if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) /* C0, DEL, C1 */
        return 0;
    if ((cp >= 0x200b && cp <= 0x200f) || /* zero-width, LRM, RLM */
        (cp >= 0x2028 && cp <= 0x202e) || /* line/paragraph separators, bidi embeddings */
        (cp >= 0x2060 && cp <= 0x206f) || /* word joiner, invisible operators, isolates */
        cp == 0x061c || cp == 0xfeff ||   /* Arabic letter mark, byte order mark */
        (cp >= 0xfff9 && cp <= 0xfffb))   /* interlinear annotation */
        return 0;
    return 1;
}

int kms_text_valid(const char *s, size_t len, size_t max, unsigned flags)
{
    const unsigned char *p = (const unsigned char *)s;
    if (len > max || (s == NULL && len != 0))
        return 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = kms_text_next(p + i, len - i, &cp);
        if (n == 0)
            return 0;
        if (!kms_text_printable(cp) && !(cp == '\n' && (flags & KMS_TEXT_LINES)))
            return 0;
        i += n;
    }
    return 1;
}

int kms_text_valid_str(const char *s, size_t max, unsigned flags)
{
    return s != NULL && kms_text_valid(s, strnlen(s, max + 1), max, flags);
}

void kms_text_escape(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t len = strlen(s);
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = kms_text_next(p + i, len - i, &cp);
        if (n != 0 && kms_text_printable(cp)) {
            if (cp == '\\')
                fputs("\\\\", f);
            else
                fwrite(p + i, 1, n, f);
            i += n;
        } else {
            fprintf(f, "\\x%02x", p[i]);
            i++;
        }
    }
}
