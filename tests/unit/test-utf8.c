/* SPDX-License-Identifier: MIT */
#include <errno.h>

#include "macro.h"
#include "test-util.h"
#include "utf8.h"

#define FFFD CON_UTF8_REPLACEMENT

static void test_char_len(void) {
        static const struct {
                const char *s;
                size_t n, len;
        } cases[] = {
                { "a", 1, 1 },
                { "\x7f", 1, 1 },
                { "", 1, 0 },                           /* NUL is not text */
                { "\xc2\x80", 2, 2 },                   /* U+0080, the first 2-byte */
                { "\xdf\xbf", 2, 2 },                   /* U+07FF */
                { "\xe0\xa0\x80", 3, 3 },               /* U+0800, the first 3-byte */
                { "\xed\x9f\xbf", 3, 3 },               /* U+D7FF, just below the surrogates */
                { "\xee\x80\x80", 3, 3 },               /* U+E000, just above */
                { "\xef\xbf\xbd", 3, 3 },               /* U+FFFD, the replacement character */
                { "\xef\xbf\xbf", 3, 0 },               /* U+FFFF: a noncharacter, sd-bus refuses it */
                { "\xef\xbf\xbe", 3, 0 },               /* U+FFFE */
                { "\xef\xb7\x8f", 3, 3 },               /* U+FDCF, just below the U+FDD0..U+FDEF block */
                { "\xef\xb7\x90", 3, 0 },               /* U+FDD0 (fuzz-result found it in a reply) */
                { "\xef\xb7\xaf", 3, 0 },               /* U+FDEF */
                { "\xef\xb7\xb0", 3, 3 },               /* U+FDF0, just above */
                { "\xf0\x9f\xbf\xbe", 4, 0 },           /* U+1FFFE */
                { "\xf0\x9f\xbf\xbd", 4, 4 },           /* U+1FFFD */
                { "\xf0\x90\x80\x80", 4, 4 },           /* U+10000 */
                { "\xf4\x8f\xbf\xbd", 4, 4 },           /* U+10FFFD, the last character */
                { "\xf4\x8f\xbf\xbf", 4, 0 },           /* U+10FFFF: a noncharacter */
                { "\xc0\x80", 2, 0 },                   /* overlong NUL */
                { "\xc1\xbf", 2, 0 },                   /* overlong */
                { "\xe0\x9f\xbf", 3, 0 },               /* overlong 3-byte */
                { "\xf0\x8f\xbf\xbf", 4, 0 },           /* overlong 4-byte */
                { "\xed\xa0\x80", 3, 0 },               /* U+D800 */
                { "\xed\xbf\xbf", 3, 0 },               /* U+DFFF */
                { "\xf4\x90\x80\x80", 4, 0 },           /* U+110000 */
                { "\xf5\x80\x80\x80", 4, 0 },
                { "\xf8\x88\x80\x80\x80", 5, 0 },       /* 5-byte form */
                { "\xff", 1, 0 },
                { "\x80", 1, 0 },                       /* lone continuation */
                { "\xc3", 1, 0 },                       /* truncated by the length */
                { "\xe2\x82", 2, 0 },
                { "\xf0\x9f\x98", 3, 0 },
                { "\xe2\x82x", 3, 0 },                  /* cut short by another character */
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                g_test_message("case %zu", i);
                g_assert_cmpuint(con_utf8_char_len(cases[i].s, cases[i].n), ==, cases[i].len);
        }
        g_assert_cmpuint(con_utf8_char_len("a", 0), ==, 0);
}

static void test_invalid_offset(void) {
        static const struct {
                const char *s;
                size_t n, off;
        } cases[] = {
                { "", 0, 0 },
                { "hello", 5, 5 },
                { "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15, 15 },
                { "ab\0cd", 5, 2 },
                { "x\xc0\xaf", 3, 1 },
                { "abc\xed\xa0\x80", 6, 3 },
                { "ok\xe2\x82", 4, 2 },                 /* truncated at the end */
                { "\xe9t\xe9", 3, 0 },                  /* Latin-1 */
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                g_test_message("case %zu", i);
                g_assert_cmpuint(con_utf8_invalid_offset(cases[i].s, cases[i].n), ==, cases[i].off);
                g_assert_cmpint(con_utf8_valid(cases[i].s, cases[i].n), ==, cases[i].off == cases[i].n);
        }
}

/* Every 1- and 2-byte string, every 3-byte string with a multi-byte lead, and every 4-byte one
 * with a 4-byte lead and an ASCII-free tail, judged the same way as GLib's validator (which also
 * refuses NUL when given a length). */
/* GLib's validator, minus the noncharacters that sd-bus refuses (one character of n bytes here). */
static bool glib_valid_for_bus(const unsigned char *b, size_t n) {
        if (!g_utf8_validate_len((const char *) b, n, NULL))
                return false;
        gunichar c = g_utf8_get_char((const char *) b);
        return !((c >= 0xFDD0 && c <= 0xFDEF) || (c & 0xFFFE) == 0xFFFE);
}

static void test_agrees_with_glib(void) {
        unsigned char b[4];

        for (unsigned x = 0; x < 65536; x++) {
                b[0] = (unsigned char) (x >> 8), b[1] = (unsigned char) x;
                for (size_t n = 1; n <= 2; n++)
                        if (con_utf8_valid((char *) b, n) != g_utf8_validate_len((char *) b, n, NULL))
                                g_error("disagree on %02x %02x (n %zu)", b[0], b[1], n);
        }
        for (unsigned x = 0xe00000; x < 0xf00000; x++) {
                b[0] = (unsigned char) (x >> 16), b[1] = (unsigned char) (x >> 8), b[2] = (unsigned char) x;
                if (con_utf8_valid((char *) b, 3) != glib_valid_for_bus(b, 3))
                        g_error("disagree on %02x %02x %02x", b[0], b[1], b[2]);
        }
        for (unsigned lead = 0xf0; lead <= 0xff; lead++)
                for (unsigned x = 0; x < 0x40000; x++) {
                        b[0] = (unsigned char) lead;
                        b[1] = (unsigned char) (0x80 + (x >> 12));
                        b[2] = (unsigned char) (0x80 + ((x >> 6) & 0x3f));
                        b[3] = (unsigned char) (0x80 + (x & 0x3f));
                        if (x >= 0x3ffc0)
                                b[3] = (unsigned char) (x & 0xff); /* some non-continuation last bytes */
                        if (con_utf8_valid((char *) b, 4) != glib_valid_for_bus(b, 4))
                                g_error("disagree on %02x %02x %02x %02x", b[0], b[1], b[2], b[3]);
                }
}

static void test_sanitize(void) {
        static const struct {
                const char *s;
                size_t n;
                const char *want;
        } cases[] = {
                { "", 0, "" },
                { "plain \xc3\xa9", 8, "plain \xc3\xa9" },
                { "\xff", 1, FFFD },
                { "a\xffz", 3, "a" FFFD "z" },
                { "ab\0cd", 5, "ab" FFFD "cd" },
                /* Unicode 15, table 3-8: maximal subparts, one U+FFFD each. */
                { "\x61\xf1\x80\x80\xe1\x80\xc2\x62\x80\x63\x80\xbf\x64", 13,
                  "a" FFFD FFFD FFFD "b" FFFD "c" FFFD FFFD "d" },
                /* Overlongs, surrogates and U+110000: the lead cannot start them, so every byte. */
                { "\xc0\xaf", 2, FFFD FFFD },
                { "\xe0\x80\xaf", 3, FFFD FFFD FFFD },
                { "\xed\xa0\x80", 3, FFFD FFFD FFFD },
                { "\xf4\x90\x80\x80", 4, FFFD FFFD FFFD FFFD },
                { "\xf8\x88\x80\x80\x80", 5, FFFD FFFD FFFD FFFD FFFD },
                /* Truncated sequences: one U+FFFD for what was there. */
                { "ok\xe2\x82", 4, "ok" FFFD },
                { "\xf0\x9f\x98", 3, FFFD },
                { "\xf0\x9f\x98" "x", 4, FFFD "x" },
                /* Noncharacters (sd-bus refuses them): one U+FFFD for the whole sequence. */
                { "a\xef\xbf\xbf", 4, "a" FFFD },
                { "\xef\xb7\x90z", 4, FFFD "z" },
                { "\xf4\x8f\xbf\xbf", 4, FFFD },
                /* Latin-1 text. */
                { "caf\xe9 cr\xe8me", 10, "caf" FFFD " cr" FFFD "me" },
                /* Valid runs of several characters between invalid bytes, at both ends. */
                { "\xff\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z\xfe\xfe" "ab\xc3", 16,
                  FFFD "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z" FFFD FFFD "ab" FFFD },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                g_autofree char *out = NULL;
                size_t len = 0;
                bool valid = con_utf8_valid(cases[i].s, cases[i].n);
                g_test_message("case %zu", i);
                g_assert_cmpint(con_utf8_sanitize(cases[i].s, cases[i].n, &out, &len), ==, valid ? 0 : 1);
                g_assert_cmpstr(out, ==, cases[i].want);
                g_assert_cmpuint(len, ==, strlen(cases[i].want));
                g_assert_true(g_utf8_validate_len(out, len, NULL));
                g_assert_cmpuint(len, <=, 3 * cases[i].n);
        }
        /* The worst case: every byte replaced. */
        char all[256];
        for (int i = 0; i < 256; i++)
                all[i] = (char) (0x80 + i % 64);
        g_autofree char *out = NULL;
        size_t len = 0;
        g_assert_cmpint(con_utf8_sanitize(all, sizeof(all), &out, &len), ==, 1);
        g_assert_cmpuint(len, ==, 3 * sizeof(all));
        g_assert_true(g_utf8_validate_len(out, len, NULL));
}

static void test_cut(void) {
        /* "aé€😀": 1 + 2 + 3 + 4 bytes; boundaries at 0, 1, 3, 6, 10. */
        const char *s = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
        static const size_t want[11] = { 0, 1, 1, 3, 3, 3, 6, 6, 6, 6, 10 };
        for (size_t max = 0; max <= 10; max++) {
                g_test_message("max %zu", max);
                g_assert_cmpuint(con_utf8_cut(s, 10, max), ==, want[max]);
                g_assert_true(g_utf8_validate_len(s, con_utf8_cut(s, 10, max), NULL));
        }
        g_assert_cmpuint(con_utf8_cut(s, 10, 100), ==, 10);
        /* A 4-byte character exactly at the boundary, and one straddling it. */
        g_assert_cmpuint(con_utf8_cut("abc\xf0\x9f\x98\x80" "d", 8, 7), ==, 7);
        g_assert_cmpuint(con_utf8_cut("abc\xf0\x9f\x98\x80" "d", 8, 6), ==, 3);
        g_assert_cmpuint(con_utf8_cut("abc\xf0\x9f\x98\x80" "d", 8, 4), ==, 3);
        /* Invalid input: never more than max, never backwards past 3 bytes. */
        g_assert_cmpuint(con_utf8_cut("\x80\x80\x80\x80\x80\x80", 6, 5), ==, 5);
        g_assert_cmpuint(con_utf8_cut("\x80\x80", 2, 1), ==, 1);

        /* A character cut short at the end of what was read. */
        g_assert_cmpuint(con_utf8_complete_len("ab", 2), ==, 2);
        g_assert_cmpuint(con_utf8_complete_len("", 0), ==, 0);
        g_assert_cmpuint(con_utf8_complete_len("a\xc3", 2), ==, 1);
        g_assert_cmpuint(con_utf8_complete_len("a\xc3\xa9", 3), ==, 3);
        g_assert_cmpuint(con_utf8_complete_len("a\xe2\x82", 3), ==, 1);
        g_assert_cmpuint(con_utf8_complete_len("a\xf0\x9f\x98", 4), ==, 1);
        g_assert_cmpuint(con_utf8_complete_len("a\xf0\x9f\x98\x80", 5), ==, 5);
        g_assert_cmpuint(con_utf8_complete_len("\xf0", 1), ==, 0);
        /* Not a prefix of any character: left for the sanitizer to replace. */
        g_assert_cmpuint(con_utf8_complete_len("a\xff", 2), ==, 2);
        g_assert_cmpuint(con_utf8_complete_len("a\xc0", 2), ==, 2);
        g_assert_cmpuint(con_utf8_complete_len("a\xed\xa0", 3), ==, 3);     /* a surrogate */
        g_assert_cmpuint(con_utf8_complete_len("a\xf4\x90", 3), ==, 3);     /* above U+10FFFF */
        g_assert_cmpuint(con_utf8_complete_len("a\x80\x80\x80", 4), ==, 4);
        /* A whole noncharacter at the end is not cut short: it stays, to become one U+FFFD. */
        g_assert_cmpuint(con_utf8_complete_len("a\xef\xbf\xbf", 4), ==, 4);     /* U+FFFF */
        g_assert_cmpuint(con_utf8_complete_len("a\xef\xbf\xbe", 4), ==, 4);     /* U+FFFE */
        g_assert_cmpuint(con_utf8_complete_len("a\xef\xb7\x90", 4), ==, 4);     /* U+FDD0 */
        g_assert_cmpuint(con_utf8_complete_len("\xef\xbf\xbf", 3), ==, 3);
        g_assert_cmpuint(con_utf8_complete_len("a\xf0\x9f\xbf\xbf", 5), ==, 5); /* U+1FFFF */
        /* The front of a noncharacter, cut at the end: still cut short. */
        g_assert_cmpuint(con_utf8_complete_len("a\xef\xbf", 3), ==, 1);
        g_assert_cmpuint(con_utf8_complete_len("a\xf4\x8f\xbf", 4), ==, 1);

        /* Tails. */
        static const size_t tail[11] = { 10, 10, 10, 10, 6, 6, 6, 3, 3, 1, 0 };
        for (size_t max = 0; max <= 10; max++) {
                g_test_message("tail max %zu", max);
                size_t o = con_utf8_tail_start(s, 10, max);
                g_assert_cmpuint(o, ==, tail[max]);
                g_assert_cmpuint(10 - o, <=, max);
                g_assert_true(g_utf8_validate_len(s + o, 10 - o, NULL));
        }
        g_assert_cmpuint(con_utf8_tail_start(s, 10, 100), ==, 0);
        g_assert_cmpuint(con_utf8_tail_start("\x80\x80\x80\x80\x80\x80", 6, 5), ==, 1);
        /* The front of a character lost (the last bytes of a stream): start at the next one. */
        g_assert_cmpuint(con_utf8_tail_start("\x98\x80ok", 4, 4), ==, 2);
        g_assert_cmpuint(con_utf8_tail_start("\x9f\x98\x80", 3, 100), ==, 3);
}

static void test_head_tail(void) {
        g_autofree char *a = NULL, *b = NULL, *c = NULL, *d = NULL;
        /* 20 × "é" (40 bytes). */
        GString *g = g_string_new(NULL);
        for (int i = 0; i < 20; i++)
                g_string_append(g, "\xc3\xa9");
        g_string_append(g, "END");

        g_assert_cmpint(con_utf8_head_tail("short", 5, 5, "[cut]", &a), ==, 0);
        g_assert_cmpstr(a, ==, "short");

        g_assert_cmpint(con_utf8_head_tail(g->str, g->len, 20, "[cut]", &b), ==, 1);
        g_assert_cmpuint(strlen(b), <=, 20);
        g_assert_true(g_utf8_validate(b, -1, NULL));
        g_assert_true(g_str_has_prefix(b, "\xc3\xa9\xc3\xa9\xc3\xa9[cut]"));
        g_assert_true(g_str_has_suffix(b, "[cut]\xc3\xa9\xc3\xa9\xc3\xa9" "END"));

        /* Odd budgets: the head rounds down to a boundary, the tail gets the rest. */
        for (size_t max = 5; max < g->len; max++) {
                g_autofree char *x = NULL;
                g_assert_cmpint(con_utf8_head_tail(g->str, g->len, max, "[cut]", &x), ==, 1);
                g_assert_cmpuint(strlen(x), <=, max);
                g_assert_cmpuint(strlen(x), >=, max - 3);
                g_assert_true(g_utf8_validate(x, -1, NULL));
                g_assert_nonnull(strstr(x, "[cut]"));
        }
        /* Only the marker fits. */
        g_assert_cmpint(con_utf8_head_tail(g->str, g->len, 5, "[cut]", &c), ==, 1);
        g_assert_cmpstr(c, ==, "[cut]");
        g_assert_cmpint(con_utf8_head_tail(g->str, g->len, 4, "[cut]", &d), ==, -EINVAL);
        g_string_free(g, true);
}

static void check_quote(const char *s, size_t n, size_t max, const char *want) {
        _cleanup_free_ char *q = con_utf8_quote(s, n, max);
        g_assert_nonnull(q);
        g_assert_cmpstr(q, ==, want);
        g_assert_true(con_utf8_valid(q, strlen(q)));
}

static void test_quote(void) {
        check_quote("abc", 3, 64, "'abc'");
        check_quote("", 0, 64, "''");
        check_quote("a\nb\tc\x01\x7f", 7, 64, "'a\\nb\\tc\\x01\\x7f'");
        check_quote("a\0b", 3, 64, "'a\\x00b'");
        /* Invalid UTF-8 comes out escaped, so the quote is always valid text. */
        check_quote("x\xff\xc3y", 4, 64, "'x\\xff\\xc3y'");
        /* Cut after max bytes: "é" (2 bytes) at the cut is left out whole, never halved. */
        check_quote("abc\xc3\xa9", 5, 4, "'abc...'");
        check_quote("abc\xc3\xa9", 5, 5, "'abc\xc3\xa9'");
        check_quote("abc\xc3\xa9z", 6, 5, "'abc\xc3\xa9...'");
        /* A 3-byte and a 4-byte character straddling the cut at every offset. */
        for (size_t max = 1; max <= 6; max++) {
                _cleanup_free_ char *q3 = con_utf8_quote("a\xe2\x82\xac" "bc", 6, max);  /* a€bc */
                _cleanup_free_ char *q4 = con_utf8_quote("\xf0\x9f\x98\x80" "xy", 6, max); /* 😀xy */
                g_assert_true(con_utf8_valid(q3, strlen(q3)));
                g_assert_true(con_utf8_valid(q4, strlen(q4)));
        }
        check_quote("a\xe2\x82\xac" "bc", 6, 3, "'a...'");
        check_quote("\xf0\x9f\x98\x80" "xy", 6, 3, "'...'");
        check_quote("\xf0\x9f\x98\x80" "xy", 6, 4, "'\xf0\x9f\x98\x80...'");
        /* The size bound holds for the worst input: every byte escaped. */
        char bad[64];
        memset(bad, 0xff, sizeof bad);
        _cleanup_free_ char *w = con_utf8_quote(bad, sizeof bad, 64);
        g_assert_cmpuint(strlen(w), ==, 64 * 4 + 2);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/utf8/char-len", test_char_len);
        g_test_add_func("/utf8/invalid-offset", test_invalid_offset);
        g_test_add_func("/utf8/agrees-with-glib", test_agrees_with_glib);
        g_test_add_func("/utf8/sanitize", test_sanitize);
        g_test_add_func("/utf8/cut", test_cut);
        g_test_add_func("/utf8/quote", test_quote);
        g_test_add_func("/utf8/head-tail", test_head_tail);
        return con_test_run();
}
