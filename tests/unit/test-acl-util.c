/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "acl-util.h"
#include "macro.h"
#include "test-util.h"

/* The owner of a file may set its ACLs, so this runs without root; the ids need not exist. */

static void test_build_mode_bits(void) {
        _cleanup_acl_free_ acl_t a = NULL, b = NULL;
        _cleanup_free_ char *t = NULL;
        ConAclEntry e[] = {
                { ACL_USER, 4242, CON_ACL_W | CON_ACL_X },
                { ACL_GROUP, 4243, CON_ACL_X },
        };
        ConAclEntry dup[] = { { ACL_USER, 1, CON_ACL_R }, { ACL_USER, 1, CON_ACL_W } };
        mode_t m;

        g_assert_cmpint(con_acl_build(0700, e, ELEMENTSOF(e), &a), ==, 0);
        g_assert_cmpint(con_acl_mode_bits(a, &m), ==, 0);
        g_assert_cmpuint(m, ==, 0730); /* group bits show the mask */
        t = con_acl_to_short_text(a);
        g_assert_nonnull(t);
        g_assert_nonnull(strstr(t, "u:4242:-wx"));
        g_assert_nonnull(strstr(t, "m::-wx"));

        g_assert_cmpint(con_acl_build(0751, NULL, 0, &b), ==, 0);
        g_assert_cmpint(con_acl_mode_bits(b, &m), ==, 0);
        g_assert_cmpuint(m, ==, 0751);

        g_assert_cmpint(con_acl_build(0700, dup, ELEMENTSOF(dup), &b), ==, -EINVAL);
}

static void test_apply_match(void) {
        g_autofree char *dir = test_tmpdir_new();
        _cleanup_acl_free_ acl_t want = NULL, def = NULL, minimal = NULL;
        _cleanup_close_ int fd = -EBADF;
        ConAclEntry e[] = { { ACL_USER, 4242, CON_ACL_W | CON_ACL_X } };
        ConAclEntry d[] = { { ACL_USER, 4244, CON_ACL_R | CON_ACL_W } };
        struct stat st;

        g_assert_cmpint(chmod(dir, 0700), ==, 0);
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);

        g_assert_cmpint(con_acl_build(0700, e, 1, &want), ==, 0);
        g_assert_cmpint(con_acl_build(0700, d, 1, &def), ==, 0);
        g_assert_cmpint(con_acl_build(0700, NULL, 0, &minimal), ==, 0);

        g_assert_cmpint(con_acl_fd_matches(fd, ACL_TYPE_ACCESS, minimal), ==, 1);
        g_assert_cmpint(con_acl_fd_matches(fd, ACL_TYPE_ACCESS, want), ==, 0);
        g_assert_cmpint(con_acl_fd_matches(fd, ACL_TYPE_DEFAULT, NULL), ==, 1);
        g_assert_cmpint(con_acl_fd_matches(fd, ACL_TYPE_DEFAULT, def), ==, 0);
        g_assert_cmpint(con_acl_fd_matches(fd, ACL_TYPE_ACCESS, NULL), ==, -EINVAL);

        g_assert_cmpint(con_acl_fd_apply(fd, ACL_TYPE_ACCESS, want), ==, 0);
        g_assert_cmpint(con_acl_fd_apply(fd, ACL_TYPE_DEFAULT, def), ==, 0);
        g_assert_cmpint(con_acl_fd_matches(fd, ACL_TYPE_ACCESS, want), ==, 1);
        g_assert_cmpint(con_acl_fd_matches(fd, ACL_TYPE_DEFAULT, def), ==, 1);
        g_assert_cmpint(con_acl_fd_matches(fd, ACL_TYPE_DEFAULT, NULL), ==, 0);
        g_assert_cmpint(fstat(fd, &st), ==, 0);
        g_assert_cmpuint(st.st_mode & 0777, ==, 0730);

        /* Back to minimal: the named entry and the default ACL go away. */
        g_assert_cmpint(con_acl_fd_apply(fd, ACL_TYPE_ACCESS, minimal), ==, 0);
        g_assert_cmpint(con_acl_fd_apply(fd, ACL_TYPE_DEFAULT, NULL), ==, 0);
        g_assert_cmpint(con_acl_fd_matches(fd, ACL_TYPE_ACCESS, minimal), ==, 1);
        g_assert_cmpint(con_acl_fd_matches(fd, ACL_TYPE_DEFAULT, NULL), ==, 1);
        g_assert_cmpint(fstat(fd, &st), ==, 0);
        g_assert_cmpuint(st.st_mode & 0777, ==, 0700);
        test_tmpdir_remove(dir);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/acl-util/build-mode-bits", test_build_mode_bits);
        g_test_add_func("/acl-util/apply-match", test_apply_match);
        return con_test_run();
}
