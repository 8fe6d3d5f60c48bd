/* Printable text: the one rule for every string a person reads and may be
 * asked to approve (identities, key names, every string field of a quorum
 * action), and the one way kmsctl shows a string it did not check.
 *
 * Printable means: valid UTF-8 in its shortest form (no surrogates, nothing
 * above U+10FFFF), no NUL, no control character (C0, DEL, C1), and no
 * formatting character that changes how the text around it is displayed
 * (bidirectional overrides and isolates, zero-width characters, the byte
 * order mark, line and paragraph separators). A terminal shows such text as
 * it is stored: it cannot move the cursor, erase a line or reorder what an
 * officer reads. */
#ifndef KMS_BASE_TEXT_H
#define KMS_BASE_TEXT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kms/error.h"

/* Also allow '\n' (a PEM public key is several lines). */
#define KMS_TEXT_LINES 1u

/* 1 if s[0..len) is printable text (above) of at most max bytes, with
 * '\n' also allowed under KMS_TEXT_LINES; 0 otherwise. An empty string is
 * printable: whether a field may be empty is its owner's rule. s may be
 * NULL only if len is 0. */
int kms_text_valid(const char *s, size_t len, size_t max, unsigned flags) KMS_MUST_CHECK;

/* kms_text_valid over a NUL-terminated string (NULL: 0). */
int kms_text_valid_str(const char *s, size_t max, unsigned flags) KMS_MUST_CHECK;

/* The code point at s[0..len): its length in bytes (1..4) and *cp, or 0
 * if s does not start with a shortest-form UTF-8 sequence. */
size_t kms_text_next(const unsigned char *s, size_t len, uint32_t *cp);

/* 1 if the code point is printable (above). */
int kms_text_printable(uint32_t cp) KMS_MUST_CHECK;

/* Writes s to f as a person may safely read it: printable code points as
 * they are, a backslash as "\\", and every other byte as "\xNN". The
 * output is printable ASCII plus the printable code points of s. */
void kms_text_escape(FILE *f, const char *s);

#endif
