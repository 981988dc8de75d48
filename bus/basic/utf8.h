/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* UTF-8 text: the one implementation, used wherever bytes from outside become text (task files,
 * the audit log, model requests and responses, task results and failure reasons, tool output,
 * session histories). Pure: no I/O, no logging.
 *
 * "Valid text" here is well-formed UTF-8 (RFC 3629: no overlong forms, no UTF-16 surrogates,
 * nothing above U+10FFFF, no truncated sequences) without NUL bytes: what a C string, a JSON
 * string and a D-Bus string can all carry. */

#define CON_UTF8_REPLACEMENT "\xef\xbf\xbd" /* U+FFFD, 3 bytes */

/* Length (1..4) of the valid character at the start of s[0..n), n > 0; 0 when s does not start
 * one (a NUL byte is not a valid character here). */
size_t con_utf8_char_len(const char *s, size_t n);

/* Offset of the first byte that does not start a valid character, or n when s[0..n) is valid text. */
size_t con_utf8_invalid_offset(const char *s, size_t n);

static inline bool con_utf8_valid(const char *s, size_t n) {
        return con_utf8_invalid_offset(s, n) == n;
}

/* A new NUL-terminated copy of s[0..n) in which each maximal invalid subsequence (the Unicode
 * "maximal subpart" practice, as the WHATWG decoder does) and each NUL byte is replaced by U+FFFD.
 * The copy is at most 3 * n bytes. ret_len may be NULL. Returns 1 when something was replaced,
 * 0 when s was valid text, -ENOMEM. */
int con_utf8_sanitize(const char *s, size_t n, char **ret, size_t *ret_len);

/* Where to cut s[0..n) to keep at most max bytes without splitting a character: the largest
 * k <= min(n, max) such that s[k] (when k < n) is not a continuation byte, looking back at most 3
 * bytes. On valid text the head s[0..k) is valid text. */
size_t con_utf8_cut(const char *s, size_t n, size_t max);

/* n without the start of a character that s[0..n) ends in the middle of (the first bytes of a
 * stream read up to a limit): the offset of that character's lead byte, or n. */
size_t con_utf8_complete_len(const char *s, size_t n);

/* Where a tail of at most max bytes of s[0..n) starts without splitting a character: the smallest
 * o >= n - max (>= 0 when n <= max) such that o == n or s[o] is not a continuation byte, looking
 * ahead at most 3 bytes. On valid text the tail s[o..n) is valid text; a buffer that lost its
 * front (a ring of the last bytes of a stream) starts at its first whole character. */
size_t con_utf8_tail_start(const char *s, size_t n, size_t max);

/* s[0..n) in at most max bytes: s itself when it fits; otherwise its head and its tail, each cut
 * on a character boundary, with marker between them (head and tail share what the marker leaves,
 * half each). s should be valid text (con_utf8_sanitize() first): the result then is too.
 * Returns 0 when s was copied whole, 1 when it was cut, -EINVAL when the marker does not fit in
 * max, -ENOMEM. */
int con_utf8_head_tail(const char *s, size_t n, size_t max, const char *marker, char **ret);

/* s[0..n) for a message, the one quoting helper: in single quotes, \n and \t escaped, other
 * control characters, NUL and bytes of invalid UTF-8 as \xNN, cut after at most max bytes of s
 * on a character boundary (never inside a UTF-8 sequence) with "..." after the text when cut.
 * The result is valid text whatever s holds. NULL when out of memory. */
char *con_utf8_quote(const char *s, size_t n, size_t max);
