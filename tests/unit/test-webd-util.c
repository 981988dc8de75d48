/* SPDX-License-Identifier: MIT */
/* The event stream backlog of con-webd: a client that falls behind is closed, never given a
 * stream with events missing. */
#include <errno.h>

#include "macro.h"
#include "test-util.h"
#include "webd-util.h"

static void test_backlog(void) {
        WebdBacklog b = {};
        char out[16];

        g_assert_cmpint(webd_backlog_append(&b, "abcdef", 6, 10), ==, 0);
        g_assert_cmpuint(webd_backlog_take(&b, out, 4), ==, 4);
        g_assert_cmpmem(out, 4, "abcd", 4);
        /* 2 unread + 8 = 10: still fits (what was read is reused). */
        g_assert_cmpint(webd_backlog_append(&b, "ghijklmn", 8, 10), ==, 0);
        g_assert_cmpuint(webd_backlog_take(&b, out, sizeof out), ==, 10);
        g_assert_cmpmem(out, 10, "efghijklmn", 10);
        g_assert_cmpuint(webd_backlog_take(&b, out, sizeof out), ==, 0);
        g_assert_false(b.closed);

        /* Falling behind: closed, everything after refused, nothing readable (the stream ends
         * rather than going on without the event). */
        g_assert_cmpint(webd_backlog_append(&b, "0123456789", 10, 10), ==, 0);
        g_assert_cmpint(webd_backlog_append(&b, "x", 1, 10), ==, -ENOBUFS);
        g_assert_true(b.closed);
        g_assert_cmpuint(webd_backlog_take(&b, out, sizeof out), ==, 0);
        g_assert_cmpint(webd_backlog_append(&b, "y", 1, 10), ==, -ENOBUFS);
        g_assert_null(b.buf);
        webd_backlog_done(&b);

        /* One event larger than the limit closes at once. */
        WebdBacklog c = {};
        g_assert_cmpint(webd_backlog_append(&c, "0123456789a", 11, 10), ==, -ENOBUFS);
        g_assert_true(c.closed);
        webd_backlog_done(&c);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/webd/backlog", test_backlog);
        return con_test_run();
}
