/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "test-util.h"

static void test_levels(void) {
        g_assert_cmpint(log_level_from_string("debug"), ==, LOG_DEBUG);
        g_assert_cmpint(log_level_from_string("info"), ==, LOG_INFO);
        g_assert_cmpint(log_level_from_string("notice"), ==, LOG_NOTICE);
        g_assert_cmpint(log_level_from_string("warning"), ==, LOG_WARNING);
        g_assert_cmpint(log_level_from_string("warn"), ==, LOG_WARNING);
        g_assert_cmpint(log_level_from_string("err"), ==, LOG_ERR);
        g_assert_cmpint(log_level_from_string("error"), ==, LOG_ERR);
        g_assert_cmpint(log_level_from_string("0"), ==, LOG_EMERG);
        g_assert_cmpint(log_level_from_string("7"), ==, LOG_DEBUG);
        g_assert_cmpint(log_level_from_string("8"), ==, -EINVAL);
        g_assert_cmpint(log_level_from_string("77"), ==, -EINVAL);
        g_assert_cmpint(log_level_from_string("Info"), ==, -EINVAL);
        g_assert_cmpint(log_level_from_string(""), ==, -EINVAL);
        g_assert_cmpint(log_level_from_string(NULL), ==, -EINVAL);
        g_assert_cmpstr(log_level_to_string(LOG_WARNING), ==, "warning");
        g_assert_null(log_level_to_string(8));
}

static void test_format(void) {
        char buf[256];
        /* 2026-12-06T07:44:24.000042Z */
        unsigned long long t = 1796543064ULL * 1000000ULL + 42;

        g_assert_cmpstr(log_format_line(buf, sizeof buf, CON_LOG_TARGET_JOURNAL, LOG_WARNING, "con-x", 7, t, "hi"),
                        ==, "<4>hi");
        g_assert_cmpstr(log_format_line(buf, sizeof buf, CON_LOG_TARGET_CONSOLE, LOG_DEBUG, "con-x", 7, t, "hi"),
                        ==, "con-x: hi");
        g_assert_cmpstr(log_format_line(buf, sizeof buf, CON_LOG_TARGET_FILE, LOG_ERR, "con-x", 7, t, "hi"),
                        ==, "2026-12-06T07:44:24.000042Z con-x[7] err: hi");
        /* Truncation never overruns. */
        char small[8];
        log_format_line(small, sizeof small, CON_LOG_TARGET_FILE, LOG_ERR, "con-x", 7, t, "hi");
        g_assert_cmpuint(strlen(small), ==, 7);
}

static void test_journal_stream(void) {
        _cleanup_free_ char *dir = test_tmpdir_new();
        _cleanup_free_ char *path = g_strdup_printf("%s/f", dir);
        _cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        struct stat st;
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(fstat(fd, &st), ==, 0);

        _cleanup_free_ char *match = g_strdup_printf("%llu:%llu", (unsigned long long) st.st_dev,
                                                     (unsigned long long) st.st_ino);
        _cleanup_free_ char *other_ino = g_strdup_printf("%llu:%llu", (unsigned long long) st.st_dev,
                                                         (unsigned long long) st.st_ino + 1);
        _cleanup_free_ char *trailing = g_strdup_printf("%s:1", match);
        g_assert_cmpint(log_target_for_fd(fd, match), ==, CON_LOG_TARGET_JOURNAL);
        /* Inherited by a process whose stderr went elsewhere: not the journal. */
        g_assert_cmpint(log_target_for_fd(fd, other_ino), ==, CON_LOG_TARGET_FILE);
        g_assert_cmpint(log_target_for_fd(fd, trailing), ==, CON_LOG_TARGET_FILE);
        g_assert_cmpint(log_target_for_fd(fd, "garbage"), ==, CON_LOG_TARGET_FILE);
        g_assert_cmpint(log_target_for_fd(fd, ""), ==, CON_LOG_TARGET_FILE);
        g_assert_cmpint(log_target_for_fd(fd, NULL), ==, CON_LOG_TARGET_FILE);
        /* A pipe is not a terminal: timestamps. */
        int p[2];
        g_assert_cmpint(pipe(p), ==, 0);
        g_assert_cmpint(log_target_for_fd(p[1], NULL), ==, CON_LOG_TARGET_FILE);
        close(p[0]);
        close(p[1]);
        test_tmpdir_remove(dir);
}

/* Runs the logger with stderr on a file (through log_open_file()) and returns what it wrote. */
static char *capture(void (*f)(void)) {
        _cleanup_free_ char *dir = test_tmpdir_new();
        _cleanup_free_ char *path = g_strdup_printf("%s/sub/x.log", dir);
        int saved_out = dup(STDOUT_FILENO), saved_err = dup(STDERR_FILENO);
        char *text = NULL;
        struct stat st;

        g_assert_cmpint(log_open_file(path), ==, 0);
        g_assert_cmpint(log_get_target(), ==, CON_LOG_TARGET_FILE);
        f();
        g_assert_cmpint(dup2(saved_out, STDOUT_FILENO), >=, 0);
        g_assert_cmpint(dup2(saved_err, STDERR_FILENO), >=, 0);
        close(saved_out);
        close(saved_err);
        g_assert_cmpint(stat(path, &st), ==, 0);
        g_assert_cmpint(st.st_mode & 07777 & ~0640, ==, 0); /* never readable by others */
        g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
        test_tmpdir_remove(dir);
        return text;
}

static void emit_levels(void) {
        log_set_max_level(LOG_NOTICE);
        log_debug("a debug line");
        log_info("an info line");
        log_notice("a notice line");
        log_warning("a warning line %d", 4);
        g_assert_cmpint(log_error_errno(-ENOENT, "gone: %m"), ==, -ENOENT);
        log_set_max_level(LOG_INFO);
}

static void test_max_level(void) {
        _cleanup_free_ char *t = capture(emit_levels);
        g_assert_null(strstr(t, "debug line"));
        g_assert_null(strstr(t, "info line"));
        g_assert_nonnull(strstr(t, "] notice: a notice line\n"));
        g_assert_nonnull(strstr(t, "] warning: a warning line 4\n"));
        g_assert_nonnull(strstr(t, "] err: gone: No such file or directory\n"));
        /* Every line starts with an ISO-8601 UTC timestamp. */
        g_auto(GStrv) lines = g_strsplit(t, "\n", -1);
        g_assert_cmpuint(g_strv_length(lines), ==, 4);
        for (size_t i = 0; lines[i] && *lines[i]; i++)
                g_assert_true(g_regex_match_simple("^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{6}Z test-log\\[\\d+\\] ",
                                                   lines[i], 0, 0));
}

static void emit_event(void) {
        log_event(CON_EVENT_TASK_COMPLETED, LOG_INFO, &(ConLogFields) { .task_id = "t1", .agent = "a" },
                  "Task %s completed", "t1");
        log_set_max_level(LOG_WARNING);
        log_event(CON_EVENT_TASK_ACCEPTED, LOG_INFO, NULL, "filtered");
        log_set_max_level(LOG_INFO);
}

static void test_events(void) {
        for (int i = 0; i < _CON_EVENT_MAX; i++) {
                const char *id = log_event_message_id(i);
                g_assert_nonnull(id);
                g_assert_cmpuint(strlen(id), ==, 32);
                g_assert_true(g_regex_match_simple("^[0-9a-f]{32}$", id, 0, 0));
                g_assert_nonnull(log_event_to_string(i));
                for (int j = 0; j < i; j++)
                        g_assert_cmpstr(id, !=, log_event_message_id(j));
        }
        g_assert_null(log_event_message_id(_CON_EVENT_MAX));
        /* Outside the journal an event is an ordinary line. */
        _cleanup_free_ char *t = capture(emit_event);
        g_assert_nonnull(strstr(t, "] info: Task t1 completed\n"));
        g_assert_null(strstr(t, "filtered"));
}

static void test_env_level(void) {
        g_setenv("CON_LOG_LEVEL", "debug", true);
        log_setup("test-log");
        g_assert_cmpint(log_get_max_level(), ==, LOG_DEBUG);
        g_setenv("CON_LOG_LEVEL", "nonsense", true);
        log_set_max_level(LOG_INFO);
        log_setup("test-log");
        g_assert_cmpint(log_get_max_level(), ==, LOG_INFO);
        g_unsetenv("CON_LOG_LEVEL");
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        log_setup("test-log");
        g_test_add_func("/log/levels", test_levels);
        g_test_add_func("/log/format", test_format);
        g_test_add_func("/log/journal-stream", test_journal_stream);
        g_test_add_func("/log/max-level", test_max_level);
        g_test_add_func("/log/events", test_events);
        g_test_add_func("/log/env-level", test_env_level);
        return con_test_run();
}
