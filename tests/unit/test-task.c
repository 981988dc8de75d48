/* SPDX-License-Identifier: MIT */
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "names.h"
#include "task.h"
#include "test-util.h"

/* Parses s and expects failure r at line `line` with exactly the message msg, as the router
 * writes it in the .reason file (LINE:COLUMN: key: message). */
static void expect_fail_full(const char *s, size_t len, size_t max, int r, unsigned line, const char *msg) {
        ConTask *t = NULL;
        ConErrorDetail e = {};

        g_assert_cmpint(con_task_parse(s, len, max, &t, &e), ==, r);
        _cleanup_free_ char *f = con_error_detail_format(&e);
        g_test_message("got: %s", f);
        g_assert_null(t);

        g_assert_cmpuint(e.offset, <=, len);
        g_assert_cmpuint(e.line, ==, line);
        g_assert_cmpstr(f, ==, msg);
        con_error_detail_done(&e);
        g_assert_null(e.message);

        /* no error struct: same return value */
        g_assert_cmpint(con_task_parse(s, len, max, &t, NULL), ==, r);
        g_assert_null(t);
}

static void expect_fail(const char *s, unsigned line, const char *msg) {
        expect_fail_full(s, strlen(s), 0, -EBADMSG, line, msg);
}

/* The agent-name part of the message comes from bus/basic/names.c. */
static void expect_fail_name(const char *s, unsigned line, const char *prefix, ConNameProblem p) {
        _cleanup_free_ char *m = g_strconcat(prefix, con_name_problem_to_string(p), NULL);
        expect_fail(s, line, m);
}

static ConTask *expect_ok(const char *s) {
        ConTask *t = NULL;
        ConErrorDetail e = {};
        int r = con_task_parse(s, strlen(s), 0, &t, &e);
        if (r < 0)
                g_test_message("unexpected failure: %s", e.message);
        g_assert_cmpint(r, ==, 0);
        g_assert_null(e.message);
        g_assert_nonnull(t);
        return t;
}

static void test_utf8(void) {
        static const struct {
                const char *s;
                size_t len;
                ConTaskProblem p;
                size_t off;
        } cases[] = {
                { "plain ascii", 11, CON_TASK_OK, 11 },
                { "", 0, CON_TASK_OK, 0 },
                { "caf\xc3\xa9", 5, CON_TASK_OK, 5 },                    /* 2-byte */
                { "\xe2\x82\xac", 3, CON_TASK_OK, 3 },                   /* U+20AC 3-byte */
                { "\xf0\x9f\x98\x80 ok", 7, CON_TASK_OK, 7 },            /* U+1F600 4-byte */
                { "\xf4\x8f\xbf\xbd", 4, CON_TASK_OK, 4 },               /* U+10FFFD, the last character */
                { "\xf4\x8f\xbf\xbf", 4, CON_TASK_BAD_UTF8, 0 },         /* U+10FFFF, a noncharacter (sd-bus refuses it) */
                { "a\xef\xb7\x90", 4, CON_TASK_BAD_UTF8, 1 },             /* U+FDD0, likewise */
                { "\xed\x9f\xbf", 3, CON_TASK_OK, 3 },                   /* U+D7FF, below surrogates */
                { "\xee\x80\x80", 3, CON_TASK_OK, 3 },                   /* U+E000, above surrogates */
                { "ab\x00" "cd", 5, CON_TASK_NUL_BYTE, 2 },
                { "x\xc0\xaf", 3, CON_TASK_BAD_UTF8, 1 },                /* overlong '/' */
                { "\xc1\xbf", 2, CON_TASK_BAD_UTF8, 0 },                 /* overlong */
                { "ab\xe0\x80\xaf", 5, CON_TASK_BAD_UTF8, 2 },           /* overlong 3-byte */
                { "\xf0\x80\x80\xaf", 4, CON_TASK_BAD_UTF8, 0 },         /* overlong 4-byte */
                { "\xc0\x80", 2, CON_TASK_BAD_UTF8, 0 },                 /* overlong NUL */
                { "abc\xed\xa0\x80", 6, CON_TASK_BAD_UTF8, 3 },          /* U+D800 surrogate */
                { "\xed\xbf\xbf", 3, CON_TASK_BAD_UTF8, 0 },             /* U+DFFF surrogate */
                { "\xf4\x90\x80\x80", 4, CON_TASK_BAD_UTF8, 0 },         /* U+110000 */
                { "\xf5\x80\x80\x80", 4, CON_TASK_BAD_UTF8, 0 },
                { "\xf8\x88\x80\x80\x80", 5, CON_TASK_BAD_UTF8, 0 },     /* 5-byte form */
                { "\xff", 1, CON_TASK_BAD_UTF8, 0 },
                { "ok\x80", 3, CON_TASK_BAD_UTF8, 2 },                   /* lone continuation */
                { "ok\xe2\x82", 4, CON_TASK_BAD_UTF8, 2 },               /* truncated at end */
                { "\xe2\x82x", 3, CON_TASK_BAD_UTF8, 0 },                /* truncated in the middle */
                { "\xf0\x9f\x98", 3, CON_TASK_BAD_UTF8, 0 },             /* truncated 4-byte */
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                size_t off = 12345;
                g_test_message("case %zu", i);
                g_assert_cmpint(con_utf8_check(cases[i].s, cases[i].len, &off), ==, cases[i].p);
                g_assert_cmpuint(off, ==, cases[i].off);
        }
}

static void test_bad_input(void) {
        char big[101];

        expect_fail_full("hello\0world", 11, 0, -EBADMSG, 0,
                         "NUL byte at offset 5; task files must be text");
        expect_fail("0123456789abcdef\xff", 0,
                    "invalid UTF-8 at byte 16; task files must be UTF-8 text");
        expect_fail("", 0, "task text is empty");
        expect_fail(" \t\r\n\n  ", 0, "task text is only whitespace");
        expect_fail("---\npriority: 1\n---\n", 0, "task text is empty");
        expect_fail("---\npriority: 1\n---\n  \n", 0, "task text is only whitespace");
        expect_fail("---\n---", 0, "task text is empty");

        memset(big, 'a', 100);
        big[100] = '\0';
        expect_fail_full(big, 100, 99, -EFBIG, 0,
                         "task is 100 bytes; task files may be at most 99 bytes");
        /* exactly at the cap is fine */
        _cleanup_(con_task_freep) ConTask *t = NULL;
        g_assert_cmpint(con_task_parse(big, 100, 100, &t, NULL), ==, 0);
        g_assert_cmpuint(t->text_len, ==, 100);

        /* default cap is 1 MiB */
        _cleanup_free_ char *huge = malloc(CON_TASK_DEFAULT_MAX_SIZE + 1);
        memset(huge, 'x', CON_TASK_DEFAULT_MAX_SIZE + 1);
        expect_fail_full(huge, CON_TASK_DEFAULT_MAX_SIZE + 1, 0, -EFBIG, 0,
                         "task is 1048577 bytes; task files may be at most 1048576 bytes");
        ConTask *t2 = NULL;
        g_assert_cmpint(con_task_parse(huge, CON_TASK_DEFAULT_MAX_SIZE, 0, &t2, NULL), ==, 0);
        con_task_free(t2);
}

static void test_plain(void) {
        _cleanup_(con_task_freep) ConTask *t = expect_ok("hello world\n");

        g_assert_cmpstr(t->text, ==, "hello world\n");
        g_assert_cmpuint(t->text_len, ==, 12);
        g_assert_cmpint(t->meta.priority, ==, CON_TASK_PRIORITY_DEFAULT);
        g_assert_null(t->meta.reply_to);
        g_assert_cmpuint(t->meta.deadline_usec, ==, 0);

        /* Not a delimiter line: all text. */
        static const char * const texts[] = { "--- \nx\n---\ny", "----\nx", " ---\nx", "--\nx", "x\n---\ny\n---\n" };
        for (size_t i = 0; i < ELEMENTSOF(texts); i++) {
                _cleanup_(con_task_freep) ConTask *u = expect_ok(texts[i]);
                g_assert_cmpstr(u->text, ==, texts[i]);
                g_assert_cmpint(u->meta.priority, ==, CON_TASK_PRIORITY_DEFAULT);
        }
}

static void test_front_matter(void) {
        _cleanup_(con_task_freep) ConTask *t =
                expect_ok("---\npriority: 7\nreply-to: sysadmin\ndeadline: 2026-12-01T10:00:00Z\n---\nthe task text\n");
        g_assert_cmpint(t->meta.priority, ==, 7);
        g_assert_cmpstr(t->meta.reply_to, ==, "sysadmin");
        g_assert_cmpuint(t->meta.deadline_usec, ==, UINT64_C(1796119200) * USEC_PER_SEC);
        g_assert_cmpstr(t->text, ==, "the task text\n");

        _cleanup_(con_task_freep) ConTask *u = expect_ok("---\nreply_to: code-reviewer\npriority: 0\n---\nx");
        g_assert_cmpstr(u->meta.reply_to, ==, "code-reviewer");
        g_assert_cmpint(u->meta.priority, ==, 0);
        g_assert_cmpstr(u->text, ==, "x");

        /* Empty front matter, comments, quoted values. */
        _cleanup_(con_task_freep) ConTask *v = expect_ok("---\n---\nbody");
        g_assert_cmpstr(v->text, ==, "body");
        _cleanup_(con_task_freep) ConTask *w = expect_ok("---\n# a comment\n\"priority\": '9'\n---\nbody");
        g_assert_cmpint(w->meta.priority, ==, 9);
        /* The body keeps a leading '---' line of its own. */
        _cleanup_(con_task_freep) ConTask *x = expect_ok("---\n---\n---\nbody");
        g_assert_cmpstr(x->text, ==, "---\nbody");
        /* Closing delimiter at the very end, followed by text without newline. */
        _cleanup_(con_task_freep) ConTask *y = expect_ok("---\npriority: 2\n---\nz");
        g_assert_cmpstr(y->text, ==, "z");
        /* to: an agent of another host (the mesh, docs/MULTIHOST.md) */
        _cleanup_(con_task_freep) ConTask *z = expect_ok("---\nto: sysadmin@host-b\n---\ncheck the disks");
        g_assert_cmpstr(z->meta.to, ==, "sysadmin@host-b");
        g_assert_cmpstr(z->text, ==, "check the disks");
}

static void test_crlf(void) {
        /* CRLF is accepted on the delimiter lines and inside the front matter; the body is kept
         * byte for byte, CRs included. */
        _cleanup_(con_task_freep) ConTask *t = expect_ok("---\r\npriority: 3\r\nreply-to: ops\r\n---\r\nline1\r\nline2\r\n");
        g_assert_cmpint(t->meta.priority, ==, 3);
        g_assert_cmpstr(t->meta.reply_to, ==, "ops");
        g_assert_cmpstr(t->text, ==, "line1\r\nline2\r\n");

        expect_fail("---\r\npriority: 12\r\n---\r\nx", 2,
                    "2:11: priority: '12' is not allowed; use a whole number from 0 to 9");
}

static void test_deadline(void) {
        static const struct {
                const char *value;
                uint64_t usec;
        } good[] = {
                { "1970-01-01T00:00:01Z", 1000000 },
                { "2026-12-01T10:00:00Z", UINT64_C(1796119200000000) },
                { "2026-12-01t10:00:00z", UINT64_C(1796119200000000) },
                { "2026-12-01T11:00:00+01:00", UINT64_C(1796119200000000) },
                { "2026-12-01T05:30:00-04:30", UINT64_C(1796119200000000) },
                { "2026-12-01T10:00:00.5Z", UINT64_C(1796119200500000) },
                { "2026-12-01T10:00:00.123456789Z", UINT64_C(1796119200123456) },
                { "2024-02-29T00:00:00Z", UINT64_C(1709164800000000) },
                { "2016-12-31T23:59:60Z", UINT64_C(1483228800000000) },  /* leap second */
        };
        static const char * const bad[] = {
                "tomorrow", "2026-12-01", "2026-12-01T10:00:00", "2026-12-01 10:00:00Z",
                "2026-13-01T10:00:00Z", "2026-02-29T10:00:00Z", "2026-12-32T10:00:00Z", "2026-12-01T24:00:00Z",
                "2026-12-01T10:60:00Z", "2026-12-01T10:00:61Z", "2026-12-01T10:00:00.Z", "2026-12-01T10:00:00+1:00",
                "2026-12-01T10:00:00+01:00x", "1969-12-31T23:59:59Z", "1970-01-01T00:00:00Z", "2026-12-01T10:00:00ZZ",
                "1970-01-01T00:30:00+01:00", "",
        };

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                _cleanup_free_ char *s = g_strdup_printf("---\ndeadline: %s\n---\nx", good[i].value);
                _cleanup_(con_task_freep) ConTask *t = expect_ok(s);
                g_assert_cmpuint(t->meta.deadline_usec, ==, good[i].usec);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_free_ char *s = g_strdup_printf("---\ndeadline: %s\n---\nx", bad[i]);
                _cleanup_free_ char *m = *bad[i] ?
                        g_strdup_printf("2:11: deadline: '%s' is not an RFC 3339 timestamp; write it like "
                                        "2026-12-01T10:00:00Z or 2026-12-01T11:00:00+01:00", bad[i]) :
                        g_strdup("2:10: deadline: the value is empty; give a timestamp or leave the key out");
                g_test_message("deadline %s", bad[i]);
                expect_fail(s, 2, m);
        }
}

static void test_front_matter_errors(void) {
        /* The one YAML reader's messages (yaml-reader.h): LINE:COLUMN: key: what is wrong (what to do),
         * with the file's own line numbers (the front matter starts on line 2). */
        expect_fail("---\npriority: 1\nno closing line\n", 1,
                    "1: front matter starts with '---' but has no closing '---' line (add one after the last key)");
        expect_fail("---", 1,
                    "1: front matter starts with '---' but has no closing '---' line (add one after the last key)");
        expect_fail("---\npriority: 10\n---\nx", 2, "2:11: priority: '10' is not allowed; use a whole number from 0 to 9");
        expect_fail("---\n\npriority: high\n---\nx", 3,
                    "3:11: priority: 'high' is not allowed; use a whole number from 0 to 9");
        expect_fail("---\npriority: -1\n---\nx", 2, "2:11: priority: '-1' is not allowed; use a whole number from 0 to 9");
        expect_fail("---\npriority:\n---\nx", 2,
                    "2:10: priority: the value is empty; use a whole number from 0 to 9 (higher runs first)");
        expect_fail("---\npriority: 1\nsender: root\n---\nx", 3,
                    "3:1: sender: unknown key; allowed keys are priority, reply-to, deadline, conversation and to");
        expect_fail("---\npriority: 1\npriority: 2\n---\nx", 3,
                    "3:1: priority: duplicate key; it was already given at line 2");
        expect_fail("---\nreply-to: ops\nreply_to: ops\n---\nx", 3,
                    "3:1: reply_to: reply-to and reply_to are the same key; keep reply-to");
        expect_fail_name("---\nreply-to: Not_An_Agent\n---\nx", 2,
                         "2:11: reply-to: 'Not_An_Agent' is not a valid agent name: ", CON_NAME_BAD_FIRST_CHAR);
        expect_fail("---\nto: sysadmin\n---\nx", 2,
                    "2:5: to: 'sysadmin' is not AGENT@HOST (an agent name, '@' and the name of a host of the mesh, "
                    "e.g. sysadmin@host-b)");
        expect_fail("---\nto: root@host-b\n---\nx", 2,
                    "2:5: to: 'root@host-b' is not AGENT@HOST (an agent name, '@' and the name of a host of the mesh, "
                    "e.g. sysadmin@host-b)");
        expect_fail("---\nto: sysadmin@Host_B\n---\nx", 2,
                    "2:5: to: 'sysadmin@Host_B' is not AGENT@HOST (an agent name, '@' and the name of a host of the "
                    "mesh, e.g. sysadmin@host-b)");
        expect_fail("---\nto:\n---\nx", 2, "2:4: to: the value is empty; give AGENT@HOST or leave the key out");
        expect_fail("---\npriority: [1, 2]\n---\nx", 2, "2:11: priority: expected a whole number, got a list");
        expect_fail("---\nreply-to:\n  a: b\n---\nx", 3, "3:3: reply-to: expected a string, got a mapping");
        expect_fail("---\n- priority\n---\nx", 2,
                    "2:1: expected a mapping of priority, reply-to, deadline, conversation and to, got a list");
        expect_fail("---\npriority: &p 1\ndeadline: *p\n---\nx", 2,
                    "2:11: anchors and aliases (&name, *name) are not supported here (write the value out)");
        expect_fail("---\njust text\n---\nx", 2,
                    "2:1: expected a mapping of priority, reply-to, deadline, conversation and to, got a string");
        expect_fail("---\npriority: 1\n--- \npriority: 2\n---\nx", 3,
                    "3:1: only one YAML document is allowed; remove the second '---'");
        expect_fail("---\npriority: \"1\n---\nx", 3,
                    "3:1: found unexpected end of stream (while scanning a quoted scalar that starts at line 2, "
                    "column 11)");
        expect_fail("---\npriority: 1\n\tdeadline: x\n---\nx", 3,
                    "3:1: found a tab character that violates indentation (while scanning a plain scalar that starts "
                    "at line 2, column 11)");

        /* YAML escapes can put a NUL into a key or value. */
        expect_fail("---\n\"priority\\0x\": 1\n---\nx", 2, "2:1: priority\\x00x: the key contains a NUL byte");
        expect_fail("---\nreply-to: \"ops\\0x\"\n---\nx", 2, "2:11: reply-to: the value contains a NUL byte");
        expect_fail("---\npriority: \"1\\0\"\n---\nx", 2, "2:11: priority: the value contains a NUL byte");

        /* Values are quoted, shortened (never inside a UTF-8 character) and with control characters escaped. */
        expect_fail_name("---\nreply-to: \"a\\tb\\u00e9cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\"\n---\nx",
                         2, "2:11: reply-to: 'a\\tb\xc3\xa9" "ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc...' "
                         "is not a valid agent name: ", CON_NAME_TOO_LONG);
}

static void roundtrip(const char *in, const char *want) {
        _cleanup_(con_task_freep) ConTask *t = expect_ok(in);
        _cleanup_(con_task_freep) ConTask *t2 = NULL;
        _cleanup_free_ char *out = NULL;
        size_t len = 0;

        g_assert_cmpint(con_task_format(t, &out, &len), ==, 0);
        g_assert_cmpuint(strlen(out), ==, len);
        g_assert_cmpstr(out, ==, want);
        t2 = expect_ok(out);
        g_assert_cmpint(t2->meta.priority, ==, t->meta.priority);
        g_assert_cmpstr(t2->meta.reply_to, ==, t->meta.reply_to);
        g_assert_cmpstr(t2->meta.conversation, ==, t->meta.conversation);
        g_assert_cmpstr(t2->meta.to, ==, t->meta.to);
        g_assert_cmpuint(t2->meta.deadline_usec, ==, t->meta.deadline_usec);
        g_assert_cmpuint(t2->text_len, ==, t->text_len);
        g_assert_cmpstr(t2->text, ==, t->text);
}

static void test_format(void) {
        roundtrip("hello\n", "hello\n");
        roundtrip("---\npriority: 5\n---\nhello", "hello");
        roundtrip("---\nreply_to: ops\ndeadline: 2026-12-01T11:00:00.250+01:00\npriority: 9\n---\nhi\r\n",
                  "---\npriority: 9\nreply-to: ops\ndeadline: 2026-12-01T10:00:00.250000Z\n---\nhi\r\n");
        roundtrip("---\ndeadline: 2026-12-01T10:00:00Z\n---\nx", "---\ndeadline: 2026-12-01T10:00:00Z\n---\nx");
        /* A value that YAML reads as null when plain is written quoted (found by fuzz-task:
         * corpus/task/regress-crash-a1389be2e393e9e9). */
        roundtrip("---\nconversation: !0\tNull\n---\nx", "---\nconversation: \"Null\"\n---\nx");
        roundtrip("---\nconversation: 'null'\n---\nx", "---\nconversation: \"null\"\n---\nx");
        roundtrip("---\nreply-to: \"null\"\nconversation: NULLx\n---\nx",
                  "---\nreply-to: \"null\"\nconversation: NULLx\n---\nx");
        roundtrip("---\nto: 'sysadmin@host-b'\npriority: 3\n---\nx", "---\npriority: 3\nto: sysadmin@host-b\n---\nx");
        /* Text that starts with a delimiter line needs an (empty) front matter to survive. */
        roundtrip("---\n---\n---\nbody", "---\n---\n---\nbody");
        roundtrip("---\n---\n---\r\nbody", "---\n---\n---\r\nbody");

        ConTask bad = { .meta.priority = 10, .text = (char *) "x", .text_len = 1 };
        char *out = NULL;
        g_assert_cmpint(con_task_format(&bad, &out, NULL), ==, -EINVAL);
        bad.meta.priority = 1;
        bad.meta.reply_to = (char *) "Bad Name";
        g_assert_cmpint(con_task_format(&bad, &out, NULL), ==, -EINVAL);
        bad.meta.reply_to = NULL;
        bad.meta.to = (char *) "sysadmin@Host";
        g_assert_cmpint(con_task_format(&bad, &out, NULL), ==, -EINVAL);
        g_assert_null(out);
}

static void test_id_valid(void) {
        static const char * const good[] = { "a", "hello", "20261129T113045.123456Z-1a2b3c-0001", "A.b_c-d", "0", "x.y" };
        static const char * const bad[] = { "", ".hidden", "-x", "_x", "a..b", "a/b", "a b", "é", "a\n", "..", "x.." };
        char long_id[CON_TASK_ID_MAX + 2];

        for (size_t i = 0; i < ELEMENTSOF(good); i++)
                g_assert_true(con_task_id_valid(good[i]));
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                g_assert_false(con_task_id_valid(bad[i]));
        g_assert_false(con_task_id_valid(NULL));

        memset(long_id, 'a', sizeof(long_id));
        long_id[CON_TASK_ID_MAX] = '\0';
        g_assert_true(con_task_id_valid(long_id));
        long_id[CON_TASK_ID_MAX] = 'a';
        long_id[CON_TASK_ID_MAX + 1] = '\0';
        g_assert_false(con_task_id_valid(long_id));
}

static void test_id_from_filename(void) {
        char *id = NULL;

        g_assert_cmpint(con_task_id_from_filename("hello.task", &id), ==, 0);
        g_assert_cmpstr(id, ==, "hello");
        free(id);
        g_assert_cmpint(con_task_id_from_filename("001-fix.disk.task", &id), ==, 0);
        g_assert_cmpstr(id, ==, "001-fix.disk");
        free(id);
        id = NULL;
        g_assert_cmpint(con_task_id_from_filename(".task", &id), ==, -EINVAL);
        g_assert_cmpint(con_task_id_from_filename("hello.txt", &id), ==, -EINVAL);
        g_assert_cmpint(con_task_id_from_filename(".hidden.task", &id), ==, -EINVAL);
        g_assert_cmpint(con_task_id_from_filename("a..b.task", &id), ==, -EINVAL);
        g_assert_cmpint(con_task_id_from_filename("a b.task", &id), ==, -EINVAL);
        g_assert_null(id);
}

#define N_IDS 100000

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char * const *) a, *(char * const *) b);
}

static void test_id_new(void) {
        char **ids = g_new0(char *, N_IDS);

        for (size_t i = 0; i < N_IDS; i++) {
                g_assert_cmpint(con_task_id_new(&ids[i]), ==, 0);
                g_assert_true(con_task_id_valid(ids[i]));
                /* sorts by creation */
                if (i > 0)
                        g_assert_cmpint(strcmp(ids[i - 1], ids[i]), <, 0);
        }
        g_assert_cmpuint(strlen(ids[0]), ==, strlen("20261129T113045.123456Z-1a2b3c-00000001-0123abcd"));
        g_assert_true(g_regex_match_simple("^[0-9]{8}T[0-9]{6}\\.[0-9]{6}Z-[0-9a-f]{6}-[0-9a-f]{8}-[0-9a-f]{8}$",
                                           ids[0], 0, 0));
        for (size_t i = 0; i < N_IDS; i++)
                free(ids[i]);
        g_free(ids);
}

static void test_id_fork(void) {
        /* Parent and child create ids at the same time; the union has no duplicate. */
        int pipefd[2];
        const size_t n = N_IDS / 2;
        char **ids = g_new0(char *, 2 * n);
        pid_t pid;

        g_assert_cmpint(pipe(pipefd), ==, 0);
        pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
                FILE *f = fdopen(pipefd[1], "w");
                close(pipefd[0]);
                for (size_t i = 0; i < n; i++) {
                        char *id;
                        if (con_task_id_new(&id) < 0)
                                _exit(1);
                        fprintf(f, "%s\n", id);
                        free(id);
                }
                fclose(f);
                _exit(0);
        }
        close(pipefd[1]);
        for (size_t i = 0; i < n; i++)
                g_assert_cmpint(con_task_id_new(&ids[i]), ==, 0);

        FILE *f = fdopen(pipefd[0], "r");
        char line[256];
        size_t k = n;
        while (fgets(line, sizeof(line), f)) {
                g_assert_cmpuint(k, <, 2 * n);
                line[strcspn(line, "\n")] = '\0';
                ids[k++] = g_strdup(line);
        }
        fclose(f);
        int status;
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        g_assert_cmpuint(k, ==, 2 * n);

        qsort(ids, 2 * n, sizeof(char *), cmp_str);
        for (size_t i = 1; i < 2 * n; i++)
                g_assert_cmpstr(ids[i - 1], !=, ids[i]);
        for (size_t i = 0; i < 2 * n; i++)
                free(ids[i]);
        g_free(ids);
}

static void test_state_names(void) {
        static const char * const same[][2] = {
                { "submitted", "submitted" }, { "queued", "submitted" }, { "working", "working" },
                { "running", "working" },     { "input-required", "input-required" },
                { "completed", "completed" }, { "done", "completed" },   { "failed", "failed" },
                { "canceled", "canceled" },   { "cancelled", "canceled" },
        };
        for (size_t i = 0; i < ELEMENTSOF(same); i++)
                g_assert_cmpstr(con_task_state_a2a(same[i][0]), ==, same[i][1]);
        g_assert_null(con_task_state_a2a("finished"));
        g_assert_null(con_task_state_a2a(NULL));
        g_assert_true(con_task_state_is_final("done"));
        g_assert_true(con_task_state_is_final("canceled"));
        g_assert_true(con_task_state_is_final("failed"));
        g_assert_false(con_task_state_is_final("running"));
        g_assert_false(con_task_state_is_final("submitted"));
        g_assert_false(con_task_state_is_final("input-required"));
        g_assert_false(con_task_state_is_final("bogus"));
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/task/utf8", test_utf8);
        g_test_add_func("/task/bad-input", test_bad_input);
        g_test_add_func("/task/plain", test_plain);
        g_test_add_func("/task/front-matter", test_front_matter);
        g_test_add_func("/task/crlf", test_crlf);
        g_test_add_func("/task/deadline", test_deadline);
        g_test_add_func("/task/front-matter-errors", test_front_matter_errors);
        g_test_add_func("/task/format", test_format);
        g_test_add_func("/task/id-valid", test_id_valid);
        g_test_add_func("/task/id-from-filename", test_id_from_filename);
        g_test_add_func("/task/id-new", test_id_new);
        g_test_add_func("/task/id-fork", test_id_fork);
        g_test_add_func("/task/state-names", test_state_names);
        return con_test_run();
}
