/* SPDX-License-Identifier: MIT */
/* interfaces/org.conspiracy.*.xml must say exactly what the services export: the interface
 * element of the live introspection (over a socketpair) is compared with the file, both with
 * comments and whitespace stripped and <x ...></x> written as <x .../>. */
#include "agent-service.h"
#include "bus-util.h"
#include "contract-service.h"
#include "contract-util.h"
#include "names.h"
#include "router.h"
#include "model-service.h"
#include "provisioner.h"
#include "macro.h"
#include "mesh-service.h"
#include "test-util.h"

static char *normalise(const char *xml) {
        GString *out = g_string_new(NULL);
        const char *p = xml;
        while (*p) {
                if (g_str_has_prefix(p, "<!--")) {
                        const char *e = strstr(p, "-->");
                        g_assert_nonnull(e);
                        p = e + 3;
                        continue;
                }
                if (*p == '>') {
                        g_string_append_c(out, '>');
                        p++;
                        while (*p && strchr(" \t\r\n", *p))
                                p++;
                        continue;
                }
                if (strchr("\t\r\n", *p)) {
                        /* Line breaks inside a tag are attribute separators. */
                        if (out->len > 0 && out->str[out->len - 1] != ' ' && out->str[out->len - 1] != '>')
                                g_string_append_c(out, ' ');
                        p++;
                        continue;
                }
                if (*p == ' ' && out->len > 0 && (out->str[out->len - 1] == ' ' || out->str[out->len - 1] == '>')) {
                        p++;
                        continue;
                }
                g_string_append_c(out, *p++);
        }
        /* <property ...></property> -> <property .../> and whitespace before "/>" or ">" */
        char *s = g_string_free(out, FALSE);
        GRegex *re = g_regex_new("<([a-z]+)([^<>]*[^/<>])></\\1>", 0, 0, NULL);
        char *t = g_regex_replace(re, s, -1, 0, "<\\1\\2/>", 0, NULL);
        g_regex_unref(re);
        g_free(s);
        re = g_regex_new(" +(/?>)", 0, 0, NULL);
        s = g_regex_replace(re, t, -1, 0, "\\1", 0, NULL);
        g_regex_unref(re);
        g_free(t);
        return s;
}

static char *interface_element(const char *xml, const char *name) {
        g_autofree char *open = g_strdup_printf("<interface name=\"%s\">", name);
        const char *b = strstr(xml, open);
        g_assert_nonnull(b);
        const char *e = strstr(b, "</interface>");
        g_assert_nonnull(e);
        return g_strndup(b, (size_t) (e - b) + strlen("</interface>"));
}

static void compare(const char *interface, const char *live, const char *service) {
        g_autofree char *fname = g_strdup_printf("%s.xml", interface);
        g_autofree char *path = g_build_filename(test_source_dir(), "interfaces", fname, NULL);
        g_autofree char *file = NULL;
        g_assert_true(g_file_get_contents(path, &file, NULL, NULL));

        g_autofree char *nlive = normalise(live), *nfile = normalise(file);
        g_autofree char *a = interface_element(nlive, interface);
        g_autofree char *b = interface_element(nfile, interface);
        if (!streq(a, b))
                g_error("interfaces/%s differs from what %s exports:\nlive: %s\nfile: %s",
                        fname, service, a, b);
}

static void test_agent1(void) {
        _cleanup_free_ char *live = NULL;
        g_assert_cmpint(agent_introspect_xml(&live), ==, 0);
        compare(CON_AGENT_INTERFACE, live, "con-agentd (con-agentd --bus-introspect)");
}

static void test_models1(void) {
        _cleanup_free_ char *live = NULL;
        g_assert_cmpint(models_introspect_xml(&live), ==, 0);
        compare(CON_MODELS_INTERFACE, live, "con-modeld");
}

static void test_router1(void) {
        _cleanup_free_ char *live = NULL;
        g_assert_cmpint(con_bus_introspect_vtable(CON_ROUTER_PATH, CON_ROUTER_INTERFACE, router_vtable, &live), ==, 0);
        compare(CON_ROUTER_INTERFACE, live, "con-routerd");
}

static void test_contracts1(void) {
        _cleanup_free_ char *live = NULL;
        g_assert_cmpint(con_bus_introspect_vtable(CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE, contracts_vtable, &live), ==, 0);
        compare(CON_CONTRACTS_INTERFACE, live, "con-contractd (con-contractd --bus-introspect)");
}

static void test_provisioner1(void) {
        _cleanup_free_ char *live = NULL;
        g_assert_cmpint(provisioner_introspect_xml(&live), ==, 0);
        compare(CON_PROVISIONER_INTERFACE, live, "con-provisiond (con-provisiond --bus-introspect)");
}

static void test_mesh1(void) {
        _cleanup_free_ char *live = NULL;
        g_assert_cmpint(mesh_introspect_xml(&live), ==, 0);
        compare(CON_MESH_INTERFACE, live, "con-meshd (con-meshd --bus-introspect)");
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/introspect/agent1", test_agent1);
        g_test_add_func("/introspect/router1", test_router1);
        g_test_add_func("/introspect/contracts1", test_contracts1);
        g_test_add_func("/introspect/models1", test_models1);
        g_test_add_func("/introspect/provisioner1", test_provisioner1);
        g_test_add_func("/introspect/mesh1", test_mesh1);
        return con_test_run();
}
