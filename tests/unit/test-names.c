/* SPDX-License-Identifier: MIT */
#include "macro.h"
#include "names.h"
#include "test-util.h"

static void test_valid(void) {
        g_assert_true(con_agent_name_valid("concierge"));
        g_assert_true(con_agent_name_valid("code-reviewer"));
        g_assert_true(con_agent_name_valid("a"));
        g_assert_true(con_agent_name_valid("a1-b2"));
        g_assert_true(con_agent_name_valid("abcdefghijklmnopqrstuvwxyz012")); /* 29 */
}

static void test_invalid(void) {
        g_assert_cmpint(con_agent_name_check(""), ==, CON_NAME_EMPTY);
        g_assert_cmpint(con_agent_name_check(NULL), ==, CON_NAME_EMPTY);
        g_assert_cmpint(con_agent_name_check("abcdefghijklmnopqrstuvwxyz0123"), ==, CON_NAME_TOO_LONG);
        g_assert_cmpint(con_agent_name_check("1abc"), ==, CON_NAME_BAD_FIRST_CHAR);
        g_assert_cmpint(con_agent_name_check("-abc"), ==, CON_NAME_BAD_FIRST_CHAR);
        g_assert_cmpint(con_agent_name_check("Abc"), ==, CON_NAME_BAD_FIRST_CHAR);
        g_assert_cmpint(con_agent_name_check("ab_c"), ==, CON_NAME_BAD_CHAR);
        g_assert_cmpint(con_agent_name_check("ab/c"), ==, CON_NAME_BAD_CHAR);
        g_assert_cmpint(con_agent_name_check("ab.c"), ==, CON_NAME_BAD_CHAR);
        g_assert_cmpint(con_agent_name_check("abc-"), ==, CON_NAME_BAD_HYPHEN);
        g_assert_cmpint(con_agent_name_check("a--b"), ==, CON_NAME_BAD_HYPHEN);
        g_assert_cmpint(con_agent_name_check("router"), ==, CON_NAME_RESERVED);
        g_assert_cmpint(con_agent_name_check("root"), ==, CON_NAME_RESERVED);
}

static void test_camel(void) {
        static const struct { const char *name, *bus; } cases[] = {
                { "concierge", "org.conspiracy.Concierge" },
                { "code-reviewer", "org.conspiracy.CodeReviewer" },
                { "a1-b2", "org.conspiracy.A1B2" },
                { "x", "org.conspiracy.X" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *bus = NULL, *back = NULL;
                g_assert_cmpint(con_agent_bus_name(cases[i].name, &bus), ==, 0);
                g_assert_cmpstr(bus, ==, cases[i].bus);
                g_assert_cmpint(con_agent_from_bus_name(bus, &back), ==, 0);
                g_assert_cmpstr(back, ==, cases[i].name);
        }
        char *x = NULL;
        g_assert_cmpint(con_agent_bus_name("Bad", &x), ==, -EINVAL);
        g_assert_cmpint(con_agent_from_bus_name("org.conspiracy.codeReviewer", &x), ==, -EINVAL);
        g_assert_cmpint(con_agent_from_bus_name("org.freedesktop.DBus", &x), ==, -EINVAL);
        g_assert_cmpint(con_agent_from_bus_name("org.conspiracy.", &x), ==, -EINVAL);
        g_assert_cmpint(con_agent_from_bus_name("org.conspiracy.A_B", &x), ==, -EINVAL);
        g_assert_null(x);
}

static void test_user(void) {
        _cleanup_free_ char *u = NULL, *n = NULL;
        g_assert_cmpint(con_agent_user("sysadmin", &u), ==, 0);
        g_assert_cmpstr(u, ==, "a-sysadmin");
        g_assert_cmpint(con_agent_from_user(u, &n), ==, 0);
        g_assert_cmpstr(n, ==, "sysadmin");
        char *x = NULL;
        g_assert_cmpint(con_agent_from_user("root", &x), ==, -EINVAL);
        g_assert_cmpint(con_agent_from_user("a-", &x), ==, -EINVAL);
        g_assert_cmpint(con_agent_from_user("a-Root", &x), ==, -EINVAL);
}

static void test_identifier(void) {
        g_assert_true(con_identifier_valid("sysadmin"));
        g_assert_true(con_identifier_valid("web-dev.v2"));
        g_assert_false(con_identifier_valid(".."));
        g_assert_false(con_identifier_valid("../etc"));
        g_assert_false(con_identifier_valid("a b"));
        g_assert_false(con_identifier_valid(""));
        g_assert_false(con_identifier_valid(".hidden"));
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/names/valid", test_valid);
        g_test_add_func("/names/invalid", test_invalid);
        g_test_add_func("/names/camel", test_camel);
        g_test_add_func("/names/user", test_user);
        g_test_add_func("/names/identifier", test_identifier);
        return con_test_run();
}
