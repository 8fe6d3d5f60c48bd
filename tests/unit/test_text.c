/* Printable text (base/text.h): what is refused, what passes, and how
 * kmsctl shows a string it did not check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/text.h"

static int valid(const char *s)
{
    return kms_text_valid(s, strlen(s), 64, 0);
}

static void printable_and_not(void **state)
{
    (void)state;
    assert_true(valid(""));
    assert_true(valid("spiffe://kms.local/app"));
    assert_true(valid("caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x94\x91")); /* é, 日本, 🔑 */
    assert_false(valid("a\rb"));
    assert_false(valid("a\x1b[2K"));
    assert_false(valid("a\tb"));
    assert_false(valid("a\nb"));
    assert_true(kms_text_valid("a\nb", 3, 64, KMS_TEXT_LINES));
    assert_false(kms_text_valid("a\rb", 3, 64, KMS_TEXT_LINES));
    assert_false(valid("\x7f"));
    assert_false(valid("\xc2\x85"));         /* NEL (C1) */
    assert_false(valid("\xc2\x9b"));         /* CSI (C1) */
    assert_false(valid("\xe2\x80\xae"));     /* right-to-left override */
    assert_false(valid("\xe2\x81\xa6"));     /* left-to-right isolate */
    assert_false(valid("\xe2\x80\x8b"));     /* zero-width space */
    assert_false(valid("\xef\xbb\xbf"));     /* byte order mark */
    assert_false(valid("\xe2\x80\xa8"));     /* line separator */
    assert_false(valid("\xc0\xaf"));         /* overlong */
    assert_false(valid("\xe0\x80\xaf"));     /* overlong */
    assert_false(valid("\xed\xa0\x80"));     /* surrogate */
    assert_false(valid("\xf4\x90\x80\x80")); /* above U+10FFFF */
    assert_false(valid("\xc3"));             /* truncated */
    assert_false(valid("\x80"));             /* lone continuation */
    /* An embedded NUL is not text. */
    assert_false(kms_text_valid("a\0b", 3, 64, 0));
    /* Length bound in bytes. */
    assert_true(kms_text_valid("abcd", 4, 4, 0));
    assert_false(kms_text_valid("abcde", 5, 4, 0));
    assert_false(kms_text_valid_str("abcde", 4, 0));
    assert_true(kms_text_valid_str("abcd", 4, 0));
    assert_false(kms_text_valid_str(NULL, 4, 0));
}

static void escaped(const char *in, const char *want)
{
    char buf[256];
    FILE *f = fmemopen(buf, sizeof(buf), "w");
    assert_non_null(f);
    kms_text_escape(f, in);
    fputc('\0', f);
    fclose(f);
    assert_string_equal(buf, want);
}

static void escape_shows_every_byte(void **state)
{
    (void)state;
    escaped("spiffe://kms.local/app", "spiffe://kms.local/app");
    escaped("~\r\x1b[2Kpolicy", "~\\x0d\\x1b[2Kpolicy");
    escaped("a\\b", "a\\\\b");
    escaped("caf\xc3\xa9", "caf\xc3\xa9");
    escaped("x\xe2\x80\xaey", "x\\xe2\\x80\\xaey");
    escaped("\xff\xc2\x9b", "\\xff\\xc2\\x9b");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(printable_and_not),
        cmocka_unit_test(escape_shows_every_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
