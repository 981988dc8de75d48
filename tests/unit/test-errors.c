/* SPDX-License-Identifier: MIT */
#include <systemd/sd-bus.h>

#include "errors.h"
#include "macro.h"
#include "test-util.h"

static void test_table_unique(void) {
        const ConErrorInfo *t = con_error_table();
        for (size_t i = 0; t[i].name; i++) {
                g_assert_true(g_str_has_prefix(t[i].name, "org.conspiracy."));
                g_assert_nonnull(strstr(t[i].name, ".Error."));
                g_assert_cmpint(t[i].errnum, >, 0);
                for (size_t j = i + 1; t[j].name; j++) {
                        g_assert_cmpstr(t[i].name, !=, t[j].name);
                        g_assert_cmpint(t[i].errnum, !=, t[j].errnum);
                }
        }
}

static void test_roundtrip(void) {
        g_assert_cmpint(con_bus_errors_register(), >=, 0);
        g_assert_cmpint(con_bus_errors_register(), >=, 0);
        for (const ConErrorInfo *i = con_error_table(); i->name; i++) {
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                g_assert_cmpint(con_bus_error_setf(&e, i->name, "x %d", 1), ==, -i->errnum);
                g_assert_cmpstr(e.name, ==, i->name);
                g_assert_cmpstr(e.message, ==, "x 1");
                g_assert_cmpint(sd_bus_error_get_errno(&e), ==, i->errnum);
                g_assert_cmpstr(con_error_name_from_errno(i->errnum), ==, i->name);
        }
        g_assert_null(con_error_name_from_errno(EPERM));
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/errors/table-unique", test_table_unique);
        g_test_add_func("/errors/roundtrip", test_roundtrip);
        return con_test_run();
}
