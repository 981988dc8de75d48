/* SPDX-License-Identifier: MIT */
#include <sys/inotify.h>

#include "errors.h"
#include "macro.h"
#include "router-util.h"
#include "task.h"
#include "test-util.h"

static void test_classify_event(void) {
        g_assert_cmpint(router_classify_event(IN_CLOSE_WRITE, "a.task"), ==, ROUTER_EVENT_CANDIDATE);
        g_assert_cmpint(router_classify_event(IN_MOVED_TO, "hello.task"), ==, ROUTER_EVENT_CANDIDATE);
        /* Never a file still being written, never a temp name. */
        g_assert_cmpint(router_classify_event(IN_CREATE, "a.task"), ==, ROUTER_EVENT_CREATED);
        g_assert_cmpint(router_classify_event(IN_CREATE, ".a.task"), ==, ROUTER_EVENT_IGNORE);
        g_assert_cmpint(router_classify_event(IN_CREATE, "a.txt"), ==, ROUTER_EVENT_IGNORE);
        g_assert_cmpint(router_classify_event(IN_CREATE | IN_ISDIR, "d.task"), ==, ROUTER_EVENT_IGNORE);
        g_assert_cmpint(router_classify_event(IN_MODIFY, "a.task"), ==, ROUTER_EVENT_IGNORE);
        g_assert_cmpint(router_classify_event(IN_CLOSE_WRITE, ".a.task"), ==, ROUTER_EVENT_IGNORE);
        g_assert_cmpint(router_classify_event(IN_CLOSE_WRITE, ".a.task.XXXXXX"), ==, ROUTER_EVENT_IGNORE);
        g_assert_cmpint(router_classify_event(IN_CLOSE_WRITE, "a.task.tmp"), ==, ROUTER_EVENT_IGNORE);
        g_assert_cmpint(router_classify_event(IN_CLOSE_WRITE, "a.task~"), ==, ROUTER_EVENT_IGNORE);
        g_assert_cmpint(router_classify_event(IN_CLOSE_WRITE, "a.txt"), ==, ROUTER_EVENT_IGNORE);
        g_assert_cmpint(router_classify_event(IN_CLOSE_WRITE, ""), ==, ROUTER_EVENT_IGNORE);
        g_assert_cmpint(router_classify_event(IN_CLOSE_WRITE, NULL), ==, ROUTER_EVENT_IGNORE);
        g_assert_cmpint(router_classify_event(IN_MOVED_TO | IN_ISDIR, "d.task"), ==, ROUTER_EVENT_IGNORE);
        g_assert_cmpint(router_classify_event(IN_Q_OVERFLOW, NULL), ==, ROUTER_EVENT_RESCAN);
        g_assert_cmpint(router_classify_event(IN_IGNORED, NULL), ==, ROUTER_EVENT_WATCH_GONE);
        g_assert_cmpint(router_classify_event(IN_DELETE_SELF, NULL), ==, ROUTER_EVENT_WATCH_GONE);
}

static void test_created_is_final(void) {
        /* A file being written waits for IN_CLOSE_WRITE; links, FIFOs and devices never get one. */
        g_assert_false(router_created_is_final(&(struct stat) { .st_mode = S_IFREG | 0644, .st_nlink = 1 }));
        g_assert_true(router_created_is_final(&(struct stat) { .st_mode = S_IFREG | 0644, .st_nlink = 2 }));
        g_assert_true(router_created_is_final(&(struct stat) { .st_mode = S_IFLNK | 0777, .st_nlink = 1 }));
        g_assert_true(router_created_is_final(&(struct stat) { .st_mode = S_IFIFO | 0644, .st_nlink = 1 }));
        g_assert_true(router_created_is_final(&(struct stat) { .st_mode = S_IFSOCK | 0755, .st_nlink = 1 }));
        g_assert_true(router_created_is_final(&(struct stat) { .st_mode = S_IFCHR | 0600, .st_nlink = 1 }));
}

static void test_classify_open(void) {
        g_assert_cmpint(router_classify_open_error(-ENOENT), ==, ROUTER_FILE_GONE);
        g_assert_cmpint(router_classify_open_error(-ELOOP), ==, ROUTER_FILE_REJECT);
        g_assert_cmpint(router_classify_open_error(-EMLINK), ==, ROUTER_FILE_REJECT);
        g_assert_cmpint(router_classify_open_error(-EBADFD), ==, ROUTER_FILE_REJECT);
        g_assert_cmpint(router_classify_open_error(-EFBIG), ==, ROUTER_FILE_REJECT);
        g_assert_cmpint(router_classify_open_error(-ENOMEM), ==, ROUTER_FILE_RETRY);
        g_assert_cmpint(router_classify_open_error(-EMFILE), ==, ROUTER_FILE_RETRY);
        g_assert_cmpint(router_classify_open_error(-EIO), ==, ROUTER_FILE_RETRY);
}

static void test_classify_reply(void) {
        /* The agent is down or starting: keep the file. */
        g_assert_cmpint(router_classify_reply_error(SD_BUS_ERROR_SERVICE_UNKNOWN), ==, ROUTER_REPLY_RETRY);
        g_assert_cmpint(router_classify_reply_error(SD_BUS_ERROR_NAME_HAS_NO_OWNER), ==, ROUTER_REPLY_RETRY);
        g_assert_cmpint(router_classify_reply_error(SD_BUS_ERROR_NO_REPLY), ==, ROUTER_REPLY_RETRY);
        g_assert_cmpint(router_classify_reply_error(SD_BUS_ERROR_TIMEOUT), ==, ROUTER_REPLY_RETRY);
        g_assert_cmpint(router_classify_reply_error(SD_BUS_ERROR_LIMITS_EXCEEDED), ==, ROUTER_REPLY_RETRY);
        g_assert_cmpint(router_classify_reply_error("org.freedesktop.DBus.Error.Spawn.ChildExited"), ==,
                        ROUTER_REPLY_RETRY);
        g_assert_cmpint(router_classify_reply_error(CON_ERROR_QUEUE_FULL), ==, ROUTER_REPLY_RETRY);
        g_assert_cmpint(router_classify_reply_error(CON_ERROR_SENDER_QUOTA), ==, ROUTER_REPLY_SENDER_WAIT);
        g_assert_cmpint(router_classify_reply_error(CON_ERROR_STORAGE_FAILED), ==, ROUTER_REPLY_RETRY);
        g_assert_cmpint(router_classify_reply_error(CON_ERROR_HALTED), ==, ROUTER_REPLY_RETRY);
        g_assert_cmpint(router_classify_reply_error(CON_ERROR_QUARANTINED), ==, ROUTER_REPLY_RETRY);
        g_assert_cmpint(router_classify_reply_error(NULL), ==, ROUTER_REPLY_RETRY);
        /* Refused for good. */
        g_assert_cmpint(router_classify_reply_error(CON_ERROR_INVALID_TASK), ==, ROUTER_REPLY_REJECT);
        g_assert_cmpint(router_classify_reply_error(CON_ERROR_DELEGATION_REFUSED), ==, ROUTER_REPLY_REJECT);
        g_assert_cmpint(router_classify_reply_error(CON_ERROR_TASK_TOO_LARGE), ==, ROUTER_REPLY_REJECT);
        g_assert_cmpint(router_classify_reply_error(CON_ERROR_ACCESS_DENIED), ==, ROUTER_REPLY_REJECT);
        g_assert_cmpint(router_classify_reply_error(SD_BUS_ERROR_ACCESS_DENIED), ==, ROUTER_REPLY_REJECT);
        g_assert_cmpint(router_classify_reply_error(CON_ERROR_NO_SUCH_AGENT), ==, ROUTER_REPLY_REJECT);
        g_assert_cmpint(router_classify_reply_error(SD_BUS_ERROR_INVALID_ARGS), ==, ROUTER_REPLY_REJECT);
        g_assert_cmpint(router_classify_reply_error(CON_ERROR_DUPLICATE_TASK), ==, ROUTER_REPLY_NEW_ID);
}

static void test_backoff(void) {
        g_assert_cmpuint(router_backoff_usec(0), ==, ROUTER_BACKOFF_MIN_USEC);
        g_assert_cmpuint(router_backoff_usec(1), ==, ROUTER_BACKOFF_MIN_USEC);
        g_assert_cmpuint(router_backoff_usec(2), ==, 2 * ROUTER_BACKOFF_MIN_USEC);
        g_assert_cmpuint(router_backoff_usec(3), ==, 4 * ROUTER_BACKOFF_MIN_USEC);
        uint64_t prev = 0;
        for (unsigned i = 1; i < 200; i++) {
                uint64_t d = router_backoff_usec(i);
                g_assert_cmpuint(d, >=, prev);
                g_assert_cmpuint(d, <=, ROUTER_BACKOFF_MAX_USEC);
                prev = d;
        }
        g_assert_cmpuint(router_backoff_usec(100), ==, ROUTER_BACKOFF_MAX_USEC);
        g_assert_cmpuint(router_backoff_usec(UINT32_MAX), ==, ROUTER_BACKOFF_MAX_USEC);
}

static void test_window(void) {
        RouterWindow w = { .max = ROUTER_WINDOW_DEFAULT };
        g_assert_cmpuint(w.max, <, 128);
        for (unsigned i = 0; i < w.max; i++)
                g_assert_true(router_window_try_acquire(&w));
        g_assert_false(router_window_try_acquire(&w));
        g_assert_cmpuint(w.in_flight, ==, w.max);
        router_window_release(&w);
        g_assert_true(router_window_try_acquire(&w));
        for (unsigned i = 0; i < 200; i++)
                router_window_release(&w);
        g_assert_cmpuint(w.in_flight, ==, 0);
}

static void test_target(void) {
        static const struct { const char *rel, *agent; int r; } cases[] = {
                { "inbox", "concierge", 0 },
                { "agents/sysadmin/inbox", "sysadmin", 0 },
                { "agents/code-reviewer/inbox", "code-reviewer", 0 },
                { "agents/sysadmin/outbox", NULL, -EINVAL },
                { "agents/sysadmin/inbox/x", NULL, -EINVAL },
                { "agents//inbox", NULL, -EINVAL },
                { "agents/../inbox", NULL, -EINVAL },
                { "agents/Bad/inbox", NULL, -EINVAL },
                { "agents/router/inbox", NULL, -EINVAL }, /* reserved */
                { "inbox/", NULL, -EINVAL },
                { "", NULL, -EINVAL },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *a = NULL;
                g_assert_cmpint(router_inbox_target(cases[i].rel, &a), ==, cases[i].r);
                g_assert_cmpstr(a, ==, cases[i].agent);
        }
        _cleanup_free_ char *l1 = NULL, *l2 = NULL;
        g_assert_cmpint(router_inbox_label("inbox", &l1), ==, 0);
        g_assert_cmpstr(l1, ==, "inbox");
        g_assert_cmpint(router_inbox_label("agents/sysadmin/inbox", &l2), ==, 0);
        g_assert_cmpstr(l2, ==, "sysadmin");
        g_assert_cmpint(router_inbox_target(NULL, &l1), ==, -EINVAL);
}

static void test_rejected_name(void) {
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL;
        /* 2026-11-29T11:30:45.000123Z */
        uint64_t t = 1795951845ULL * 1000000ULL + 123;
        g_assert_cmpint(router_rejected_name(t, "inbox", "hello.task", &a), ==, 0);
        g_assert_cmpstr(a, ==, "20261129T113045.000123Z-inbox-hello.task");
        /* Unprintable bytes are replaced, the length is capped below NAME_MAX. */
        g_assert_cmpint(router_rejected_name(t, "sysadmin", "a\nb\x01\xff.task", &b), ==, 0);
        g_assert_cmpstr(b, ==, "20261129T113045.000123Z-sysadmin-a_b__.task");
        char longname[256];
        memset(longname, 'x', 255);
        longname[255] = 0;
        g_assert_cmpint(router_rejected_name(t, "inbox", longname, &c), ==, 0);
        g_assert_cmpuint(strlen(c) + strlen(".reason"), <=, 255);
        g_assert_true(g_str_has_prefix(c, "20261129T113045.000123Z-inbox-xxx"));
        _cleanup_free_ char *d = NULL;
        g_assert_cmpint(router_rejected_name(t, "", "x.task", &d), ==, -EINVAL);
        g_assert_cmpint(router_rejected_name(t, "inbox", "", &d), ==, -EINVAL);
}

static void test_task_id(void) {
        struct stat st1 = { .st_dev = 1, .st_ino = 42, .st_size = 5 }, st2 = st1;
        st2.st_ino = 43;
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL, *d = NULL, *e = NULL, *f = NULL, *g = NULL,
                *h = NULL, *i = NULL, *j = NULL;

        g_assert_cmpint(router_task_id("hello.task", &st1, 0, 7, &a), ==, 0);
        g_assert_cmpstr(a, ==, "hello");
        /* Attempt 1 (used by another file, or taken by another sender): derived from the identity,
         * stable for the same file whatever the random part. */
        g_assert_cmpint(router_task_id("hello.task", &st1, 1, 7, &b), ==, 0);
        g_assert_true(g_str_has_prefix(b, "hello-"));
        g_assert_cmpint(router_task_id("hello.task", &st1, 1, 8, &c), ==, 0);
        g_assert_cmpstr(b, ==, c);
        g_assert_cmpint(router_task_id("hello.task", &st2, 1, 7, &d), ==, 0);
        g_assert_cmpstr(b, !=, d);
        /* Attempt 2 and later: the random part, different from the identity id. */
        g_assert_cmpint(router_task_id("hello.task", &st1, 2, 0xabcdef, &g), ==, 0);
        g_assert_cmpstr(g, ==, "hello-0000000000abcdef");
        g_assert_cmpstr(g, !=, b);
        g_assert_true(con_task_id_valid(g));
        g_assert_cmpint(router_task_id("hello.task", &st1, ROUTER_ID_ATTEMPTS_MAX - 1, UINT64_MAX, &h), ==, 0);
        g_assert_cmpstr(h, ==, "hello-ffffffffffffffff");
        /* Invalid NAME: an identity id, which is a valid id; then random. */
        g_assert_cmpint(router_task_id("bad name!.task", &st1, 0, 7, &e), ==, 0);
        g_assert_true(g_str_has_prefix(e, "file-"));
        g_assert_true(con_task_id_valid(e));
        g_assert_true(con_task_id_valid(b));
        g_assert_cmpint(router_task_id("bad name!.task", &st1, 1, 7, &i), ==, 0);
        g_assert_cmpstr(i, ==, "file-0000000000000007");
        g_assert_cmpint(router_task_id("..task", &st1, 0, 7, &f), ==, 0);
        g_assert_true(con_task_id_valid(f));
        /* A long NAME: the suffix still fits in an id. */
        char longname[140];
        memset(longname, 'y', 128);
        strcpy(longname + 128, ".task");
        g_assert_cmpint(router_task_id(longname, &st1, 3, 9, &j), ==, 0);
        g_assert_cmpstr(j, ==, "file-0000000000000009");

        g_assert_cmpuint(router_file_identity(&st1), !=, router_file_identity(&st2));
        struct stat st3 = st1;
        st3.st_ctim.tv_nsec = 1;
        g_assert_cmpuint(router_file_identity(&st1), !=, router_file_identity(&st3));
}

static void test_map(void) {
        _cleanup_(router_map_freep) RouterMap *m = router_map_new();
        char key[32];
        uint64_t v;

        g_assert_nonnull(m);
        g_assert_false(router_map_get(m, "a", NULL));
        g_assert_cmpint(router_map_put(m, "a", 1), ==, 1);
        g_assert_cmpint(router_map_put(m, "a", 2), ==, 0);
        g_assert_true(router_map_get(m, "a", &v));
        g_assert_cmpuint(v, ==, 2);
        for (unsigned i = 0; i < 10000; i++) {
                snprintf(key, sizeof key, "inbox/%u.task", i);
                g_assert_cmpint(router_map_put(m, key, i), ==, 1);
        }
        g_assert_cmpuint(router_map_size(m), ==, 10001);
        for (unsigned i = 0; i < 10000; i++) {
                snprintf(key, sizeof key, "inbox/%u.task", i);
                g_assert_true(router_map_get(m, key, &v));
                g_assert_cmpuint(v, ==, i);
                if (i % 2)
                        g_assert_true(router_map_remove(m, key));
        }
        g_assert_cmpuint(router_map_size(m), ==, 5001);
        g_assert_false(router_map_remove(m, "inbox/1.task"));
        g_assert_true(router_map_get(m, "inbox/2.task", NULL));
        router_map_clear(m);
        g_assert_cmpuint(router_map_size(m), ==, 0);
        g_assert_false(router_map_get(m, "a", NULL));
        g_assert_cmpint(router_map_put(m, "b", 7), ==, 1);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/router/classify-event", test_classify_event);
        g_test_add_func("/router/created-is-final", test_created_is_final);
        g_test_add_func("/router/classify-open", test_classify_open);
        g_test_add_func("/router/classify-reply", test_classify_reply);
        g_test_add_func("/router/backoff", test_backoff);
        g_test_add_func("/router/window", test_window);
        g_test_add_func("/router/target", test_target);
        g_test_add_func("/router/rejected-name", test_rejected_name);
        g_test_add_func("/router/task-id", test_task_id);
        g_test_add_func("/router/map", test_map);
        return con_test_run();
}
