/* SPDX-License-Identifier: MIT */
/* Retiring an agent (bus/provision/retire.c) below a test root: its folder archived (a rename) or
 * removed without following a symlink planted in it, its home removed, the user and its group
 * memberships gone from the user database, other lines untouched. No root needed. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"
#include "retire.h"
#include "test-util.h"

static char *path_of(const char *root, const char *rel) {
        return g_strdup_printf("%s%s", root, rel);
}

static void make_root(const char *root) {
        const char *dirs[] = { "/etc", "/srv", "/srv/con", "/srv/con/agents", "/srv/con/agents/x",
                               "/srv/con/agents/x/workspace", "/home", "/home/a-x", "/outside" };
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                _cleanup_free_ char *p = path_of(root, dirs[i]);
                g_assert_cmpint(mkdir(p, 0755), ==, 0);
        }
        _cleanup_free_ char *pw = path_of(root, "/etc/passwd"), *gr = path_of(root, "/etc/group"),
                            *sh = path_of(root, "/etc/shadow"), *md = path_of(root, "/home/a-x/AGENTS.md"),
                            *f = path_of(root, "/srv/con/agents/x/workspace/notes.txt"),
                            *keep = path_of(root, "/outside/keep.txt"), *link = path_of(root, "/srv/con/agents/x/workspace/link"),
                            *target = path_of(root, "/outside");
        test_write_file(pw, "root:x:0:0:root:/root:/bin/bash\na-x:x:60000:995::/home/a-x:/usr/sbin/nologin\n"
                            "a-y:x:60001:995::/home/a-y:/usr/sbin/nologin\n");
        test_write_file(gr, "root:x:0:\nagents:x:995:\nworkers:x:994:a-x,a-y\n");
        test_write_file(sh, "root:*:1::::::\na-x:!*:1::::::\na-y:!*:1::::::\n");
        test_write_file(md, "instructions\n");
        test_write_file(f, "work\n");
        test_write_file(keep, "not the agent's\n");
        g_assert_cmpint(symlink(target, link), ==, 0);
}

static char *read_all(const char *root, const char *rel) {
        _cleanup_free_ char *p = path_of(root, rel);
        char *s = NULL;
        g_assert_true(g_file_get_contents(p, &s, NULL, NULL));
        return s;
}

static void test_delete(void) {
        _cleanup_free_ char *root = test_tmpdir_new(), *archive = NULL, *error = NULL;
        make_root(root);
        int k = con_retire_agent(&(ConRetireOptions) { .root = root, .name = "x" }, &archive, &error);
        if (k < 0)
                g_test_message("retire: %s", error);
        g_assert_cmpint(k, ==, 0);
        g_assert_null(archive);
        _cleanup_free_ char *agent = path_of(root, "/srv/con/agents/x"), *home = path_of(root, "/home/a-x"),
                            *keep = path_of(root, "/outside/keep.txt");
        g_assert_cmpint(access(agent, F_OK), ==, -1);
        g_assert_cmpint(access(home, F_OK), ==, -1);
        g_assert_cmpint(access(keep, F_OK), ==, 0);        /* the symlink was removed, not followed */
        _cleanup_free_ char *pw = read_all(root, "/etc/passwd"), *gr = read_all(root, "/etc/group"),
                            *sh = read_all(root, "/etc/shadow");
        g_assert_null(strstr(pw, "a-x:"));
        g_assert_nonnull(strstr(pw, "a-y:x:60001"));
        g_assert_null(strstr(sh, "a-x:"));
        g_assert_nonnull(strstr(gr, "workers:x:994:a-y\n"));
        test_tmpdir_remove(root);
}

static void test_archive(void) {
        _cleanup_free_ char *root = test_tmpdir_new(), *archive = NULL, *error = NULL;
        make_root(root);
        g_assert_cmpint(con_retire_agent(&(ConRetireOptions) { .root = root, .name = "x", .archive = true,
                                                               .now_usec = 1796000000ULL * 1000000ULL }, &archive, &error), ==, 0);
        g_assert_cmpstr(archive, ==, "/srv/con/archive/x-20261130T005320Z");
        _cleanup_free_ char *notes = read_all(root, "/srv/con/archive/x-20261130T005320Z/workspace/notes.txt");
        g_assert_cmpstr(notes, ==, "work\n");
        _cleanup_free_ char *adir = path_of(root, "/srv/con/archive");
        struct stat st;
        g_assert_cmpint(stat(adir, &st), ==, 0);
        g_assert_cmpint(st.st_mode & 07777, ==, 0700);
        /* Again: nothing left to do, not an error. */
        free(archive);
        archive = NULL;
        g_assert_cmpint(con_retire_agent(&(ConRetireOptions) { .root = root, .name = "x", .archive = true }, &archive,
                                         &error), ==, 0);
        g_assert_null(archive);
        g_assert_cmpint(con_retire_agent(&(ConRetireOptions) { .root = root, .name = "../x" }, NULL, &error), ==, -EINVAL);
        test_tmpdir_remove(root);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/retire/delete", test_delete);
        g_test_add_func("/retire/archive", test_archive);
        return con_test_run();
}
