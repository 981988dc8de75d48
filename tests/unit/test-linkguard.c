/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fileio.h"
#include "linkguard.h"
#include "macro.h"
#include "strv.h"
#include "test-util.h"

static void *mfree(void *p) {
        free(p);
        return NULL;
}

static char *path_in(const char *dir, const char *rel) {
        return g_build_filename(dir, rel, NULL);
}

static char *read_back(const char *path) {
        char *text = NULL;
        g_assert_cmpint(read_file_nofollow(path, 64, &text, NULL), >=, 0);
        return text;
}

static void test_check_and_sync(void) {
        g_autofree char *dir = test_tmpdir_new(), *fs = path_in(dir, "fs");
        g_autofree char *hard = path_in(fs, "protected_hardlinks"), *sym = path_in(fs, "protected_symlinks");
        _cleanup_strv_free_ char **drift = NULL;
        _cleanup_free_ char *change = NULL, *error = NULL, *text = NULL;

        g_assert_cmpint(mkdir(fs, 0755), ==, 0);

        /* Both missing: drift (fail closed), and sync cannot set them. */
        g_assert_cmpint(con_linkguard_check(dir, &drift), ==, 0);
        g_assert_cmpuint(strv_length(drift), ==, 1);
        g_assert_nonnull(strstr(drift[0], "fs.protected_hardlinks cannot be read"));
        g_assert_cmpint(con_linkguard_sync(dir, false, &change, &error), ==, -ENOENT);
        g_assert_null(change);
        g_assert_nonnull(strstr(error, "cannot set fs.protected_hardlinks to 1"));
        error = mfree(error);
        drift = strv_free(drift);

        /* As Debian ships them: nothing to report, nothing to change. */
        test_write_file(hard, "1\n");
        test_write_file(sym, "0\n");   /* not relied on (O_NOFOLLOW everywhere) */
        g_assert_cmpint(con_linkguard_check(dir, &drift), ==, 0);
        g_assert_null(drift);
        g_assert_cmpint(con_linkguard_sync(dir, false, &change, &error), ==, 0);
        g_assert_null(change);

        /* Hard-link protection off: named, with its value and why it matters. */
        test_write_file(hard, "0\n");
        g_assert_cmpint(con_linkguard_check(dir, &drift), ==, 0);
        g_assert_cmpuint(strv_length(drift), ==, 1);
        g_assert_nonnull(strstr(drift[0], "kernel: fs.protected_hardlinks is 0, want 1"));
        g_assert_nonnull(strstr(drift[0], "hard-link any root-owned file"));
        drift = strv_free(drift);

        /* A dry run says what it would set and sets nothing. */
        g_assert_cmpint(con_linkguard_sync(dir, true, &change, &error), ==, 0);
        g_assert_cmpstr(change, ==, "set fs.protected_hardlinks to 1 (kernel link protection)");
        change = mfree(change);
        text = read_back(hard);
        g_assert_cmpstr(text, ==, "0\n");
        text = mfree(text);

        /* A real run sets it; the check is then clean. */
        g_assert_cmpint(con_linkguard_sync(dir, false, &change, &error), ==, 0);
        g_assert_cmpstr(change, ==, "set fs.protected_hardlinks to 1 (kernel link protection)");
        text = read_back(hard);
        g_assert_cmpstr(text, ==, "1\n");
        g_assert_cmpint(con_linkguard_check(dir, &drift), ==, 0);
        g_assert_null(drift);

        test_tmpdir_remove(dir);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/linkguard/check-and-sync", test_check_and_sync);
        return con_test_run();
}
