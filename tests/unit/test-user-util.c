/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <grp.h>
#include <pwd.h>

#include "macro.h"
#include "strv.h"
#include "test-util.h"
#include "user-util.h"

/* A uid no user database of a build or test machine names. */
#define UNNAMED_UID ((uid_t) 2147483000)

static void test_uid_to_name(void) {
        _cleanup_free_ char *root = NULL, *unnamed = NULL, *name = NULL;
        gid_t gid = 1;

        g_assert_cmpint(con_uid_to_name(0, &root), ==, 0);
        g_assert_cmpstr(root, ==, "root");
        /* The one fall-back: the decimal uid, nothing around it. */
        g_assert_null(getpwuid(UNNAMED_UID));
        g_assert_cmpint(con_uid_to_name(UNNAMED_UID, &unnamed), ==, 0);
        g_assert_cmpstr(unnamed, ==, "2147483000");

        g_assert_cmpint(con_user_by_uid(0, &name, &gid), ==, 0);
        g_assert_cmpstr(name, ==, "root");
        g_assert_cmpint(gid, ==, 0);
        g_assert_cmpint(con_user_by_uid(0, NULL, NULL), ==, 0);
        g_assert_cmpint(con_user_by_uid(UNNAMED_UID, NULL, NULL), ==, -ESRCH);
}

static void test_user_gids(void) {
        _cleanup_free_ gid_t *gids = NULL, *none = NULL;
        size_t n = 0;

        g_assert_cmpint(con_user_gids("root", 0, &gids, &n), ==, 0);
        g_assert_cmpuint(n, >=, 1);
        g_assert_cmpint(gids[0], ==, 0);        /* the primary group first */
        /* A user the database does not know still has the primary group it was given. */
        g_assert_cmpint(con_user_gids("con-test-no-such-user", 4242, &none, &n), ==, 0);
        g_assert_cmpuint(n, ==, 1);
        g_assert_cmpint(none[0], ==, 4242);
        g_assert_cmpint(con_user_gids(NULL, 0, &none, &n), ==, -EINVAL);
}

static void test_user_group_names(void) {
        _cleanup_strv_free_ char **root = NULL, **none = NULL;

        g_assert_cmpint(con_user_group_names("root", 0, &root), ==, 0);
        g_assert_true(strv_contains(root, "root"));
        for (size_t i = 0; root && root[i]; i++)        /* each once */
                for (size_t j = i + 1; root[j]; j++)
                        g_assert_cmpstr(root[i], !=, root[j]);
        /* A group without a name is left out: nothing at all here. */
        g_assert_null(getgrgid((gid_t) UNNAMED_UID));
        g_assert_cmpint(con_user_group_names("con-test-no-such-user", (gid_t) UNNAMED_UID, &none), ==, 0);
        g_assert_null(none);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/user-util/uid-to-name", test_uid_to_name);
        g_test_add_func("/user-util/gids", test_user_gids);
        g_test_add_func("/user-util/group-names", test_user_group_names);
        return con_test_run();
}
