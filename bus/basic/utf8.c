/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

static inline bool is_continuation(unsigned char c) {
        return (c & 0xC0) == 0x80;
}

/* The valid character at s (1..4 bytes), or 0 with *ret_skip set to the length of the maximal
 * invalid subpart there (1..3): the lead byte plus the continuation bytes that were still
 * possible. The allowed range of the second byte excludes overlong forms (E0, F0), surrogates
 * (ED) and code points above U+10FFFF (F4); C0, C1 and F5..FF never lead. */
static size_t scan(const unsigned char *s, size_t n, size_t *ret_skip) {
        unsigned c = s[0], lo = 0x80, hi = 0xBF;
        size_t len;

        *ret_skip = 1;
        if (c >= 0x01 && c <= 0x7F)
                return 1;
        if (c >= 0xC2 && c <= 0xDF)
                len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
                len = 3;
                if (c == 0xE0)
                        lo = 0xA0;
                else if (c == 0xED)
                        hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
                len = 4;
                if (c == 0xF0)
                        lo = 0x90;
                else if (c == 0xF4)
                        hi = 0x8F;
        } else
                return 0; /* NUL, a continuation byte without a lead, C0, C1, F5..FF */

        for (size_t i = 1; i < len; i++) {
                if (i >= n || s[i] < lo || s[i] > hi) {
                        *ret_skip = i;
                        return 0;
                }
                lo = 0x80, hi = 0xBF;
        }
        /* Noncharacters (U+FDD0..U+FDEF, U+xxFFFE, U+xxFFFF) are well-formed UTF-8, but sd-bus
         * refuses strings holding them (its unichar_is_valid()), so a reply carrying one could not
         * be sent: treat the whole sequence as invalid (one U+FFFD when sanitized). */
        uint32_t cp = len == 2 ? (c & 0x1Fu) : len == 3 ? (c & 0x0Fu) : (c & 0x07u);
        for (size_t i = 1; i < len; i++)
                cp = cp << 6 | (s[i] & 0x3Fu);
        if ((cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE) {
                *ret_skip = len;
                return 0;
        }
        return len;
}

size_t con_utf8_char_len(const char *s, size_t n) {
        size_t skip;
        if (n == 0)
                return 0;
        return scan((const unsigned char *) s, n, &skip);
}

size_t con_utf8_invalid_offset(const char *s, size_t n) {
        const unsigned char *p = (const unsigned char *) s;
        size_t i = 0, skip;

        while (i < n) {
                /* ASCII runs are the common case. */
                if (p[i] >= 0x01 && p[i] <= 0x7F) {
                        i++;
                        continue;
                }
                size_t l = scan(p + i, n - i, &skip);
                if (l == 0)
                        return i;
                i += l;
        }
        return n;
}

int con_utf8_sanitize(const char *s, size_t n, char **ret, size_t *ret_len) {
        const unsigned char *p = (const unsigned char *) s;
        size_t bad = con_utf8_invalid_offset(s, n), j, skip;
        char *out;

        if (bad == n) {
                out = malloc(n + 1);
                if (!out)
                        return -ENOMEM;
                memcpy(out, s, n);
                out[n] = 0;
                *ret = out;
                if (ret_len)
                        *ret_len = n;
                return 0;
        }
        /* Each replaced subpart is at least one byte and becomes three. */
        if (n > (SIZE_MAX - 1) / 3)
                return -ENOMEM;
        out = malloc(3 * n + 1);
        if (!out)
                return -ENOMEM;
        memcpy(out, s, bad);
        j = bad;
        for (size_t i = bad; i < n;) {
                /* At an invalid subpart: one U+FFFD for it, then the valid run after it copied
                 * whole (not a copy per character). */
                (void) scan(p + i, n - i, &skip);
                memcpy(out + j, CON_UTF8_REPLACEMENT, 3);
                j += 3;
                i += skip;
                size_t run = con_utf8_invalid_offset(s + i, n - i);
                memcpy(out + j, p + i, run);
                j += run;
                i += run;
        }
        out[j] = 0;
        *ret = out;
        if (ret_len)
                *ret_len = j;
        return 1;
}

size_t con_utf8_cut(const char *s, size_t n, size_t max) {
        const unsigned char *p = (const unsigned char *) s;
        if (n <= max)
                return n;
        size_t k = max;
        while (k > 0 && max - k < 3 && is_continuation(p[k]))
                k--;
        /* Still inside a run of continuation bytes: invalid input, any cut is as good. */
        return is_continuation(p[k]) ? max : k;
}

size_t con_utf8_complete_len(const char *s, size_t n) {
        const unsigned char *p = (const unsigned char *) s;
        size_t skip;
        for (size_t back = 1; back <= 3 && back <= n; back++) {
                size_t o = n - back;
                if (is_continuation(p[o]))
                        continue;
                /* A lead whose sequence is shorter than the lead asks for, valid so far and running
                 * into the end. A complete sequence scan() refuses (a noncharacter) is not cut
                 * short: it stays for the sanitizer to replace. */
                size_t want = p[o] >= 0xF0 ? 4 : p[o] >= 0xE0 ? 3 : 2;
                if (p[o] >= 0xC2 && p[o] <= 0xF4 && back < want && scan(p + o, back, &skip) == 0 &&
                    skip == back)
                        return o;
                break;
        }
        return n;
}

size_t con_utf8_tail_start(const char *s, size_t n, size_t max) {
        const unsigned char *p = (const unsigned char *) s;
        size_t base = n > max ? n - max : 0, o = base;
        while (o < n && o - base < 3 && is_continuation(p[o]))
                o++;
        return o < n && is_continuation(p[o]) ? base : o;
}

int con_utf8_head_tail(const char *s, size_t n, size_t max, const char *marker, char **ret) {
        size_t ml = strlen(marker);
        char *out;

        if (n <= max) {
                out = malloc(n + 1);
                if (!out)
                        return -ENOMEM;
                memcpy(out, s, n);
                out[n] = 0;
                *ret = out;
                return 0;
        }
        if (ml > max)
                return -EINVAL;
        size_t budget = max - ml;
        size_t head = con_utf8_cut(s, n, budget / 2);
        size_t tail = con_utf8_tail_start(s, n, budget - head);
        size_t tl = n - tail;

        out = malloc(head + ml + tl + 1);
        if (!out)
                return -ENOMEM;
        memcpy(out, s, head);
        memcpy(out + head, marker, ml);
        memcpy(out + head + ml, s + tail, tl);
        out[head + ml + tl] = 0;
        *ret = out;
        return 1;
}

char *con_utf8_quote(const char *s, size_t n, size_t max) {
        /* Each byte of s taken becomes at most 4 ("\xNN"); plus the quotes, "..." and NUL. */
        size_t take = n < max ? n : max;
        char *q = malloc(take * 4 + 6), *p = q;
        size_t i = 0;

        if (!q)
                return NULL;
        *p++ = '\'';
        while (i < n) {
                unsigned char ch = (unsigned char) s[i];
                size_t len = con_utf8_char_len(s + i, n - i);
                if (i + (len ?: 1) > max)
                        break;
                if (len == 0 || (len == 1 && (ch < 0x20 || ch == 0x7f))) {
                        if (ch == '\n') {
                                *p++ = '\\';
                                *p++ = 'n';
                        } else if (ch == '\t') {
                                *p++ = '\\';
                                *p++ = 't';
                        } else {
                                static const char hex[] = "0123456789abcdef";
                                *p++ = '\\';
                                *p++ = 'x';
                                *p++ = hex[ch >> 4];
                                *p++ = hex[ch & 15];
                        }
                        i++;
                        continue;
                }
                memcpy(p, s + i, len);
                p += len;
                i += len;
        }
        if (i < n) {
                memcpy(p, "...", 3);
                p += 3;
        }
        *p++ = '\'';
        *p = 0;
        return q;
}
