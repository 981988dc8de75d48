/* SPDX-License-Identifier: MIT */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test-util.h"

char *test_tmpdir_new(void) {
        GError *e = NULL;
        char *d = g_dir_make_tmp("con-test-XXXXXX", &e);
        g_assert_no_error(e);
        return d;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(p);
}

void test_tmpdir_remove(const char *path) {
        if (path)
                (void) nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *test_source_dir(void) {
        const char *s = g_getenv("CON_SOURCE_DIR");
        g_assert_nonnull(s);
        return s;
}

void test_write_file(const char *path, const char *content) {
        GError *e = NULL;
        g_file_set_contents(path, content, -1, &e);
        g_assert_no_error(e);
}

static unsigned n_skipped;

void con_test_skip(const char *why) {
        const char *ci = g_getenv("CI");

        if (ci && g_str_equal(ci, "true")) {
                g_test_fail_printf("would skip, but a skip fails under CI=true: %s", why);
                return;
        }
        n_skipped++;
        g_test_skip(why);
}

int con_test_run(void) {
        int r = g_test_run();

        if (r == 0 && n_skipped > 0) {
                g_printerr("# %u test case(s) skipped: reported as skipped (exit 77), not passed\n", n_skipped);
                return 77;
        }
        return r;
}

char *test_bus_daemon_start(const char *dir, int *ret_pid) {
        g_autofree char *conf = g_strdup_printf("%s/bus.conf", dir);
        g_autofree char *text = g_strdup_printf(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\"\n"
                " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
                "<busconfig><listen>unix:path=%s/bus</listen><auth>EXTERNAL</auth>\n"
                "<policy context=\"default\"><allow user=\"*\"/><allow own=\"*\"/>"
                "<allow send_destination=\"*\" eavesdrop=\"true\"/><allow eavesdrop=\"true\"/></policy></busconfig>\n",
                dir);
        g_autofree char *cmd = NULL;
        char line[512];

        test_write_file(conf, text);
        cmd = g_strdup_printf("dbus-daemon --config-file=%s --fork --print-address=1 --print-pid=1 2>/dev/null </dev/null",
                              conf);
        FILE *p = popen(cmd, "r");
        g_assert_nonnull(p);
        g_assert_nonnull(fgets(line, sizeof line, p));
        line[strcspn(line, "\n")] = 0;
        char *address = g_strdup(line);
        g_assert_nonnull(fgets(line, sizeof line, p));
        *ret_pid = atoi(line);
        pclose(p);
        g_assert_cmpint(*ret_pid, >, 1);
        return address;
}
