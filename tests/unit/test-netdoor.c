/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "config.h"
#include "macro.h"
#include "netdoor.h"
#include "test-util.h"

static const char golden[] =
        "table inet conspiracyos {\n"
        "\tchain output {\n"
        "\t\ttype filter hook output priority 0; policy accept;\n"
        "\t\tmeta skuid 60000 reject with icmpx 3 comment \"agent concierge: network gateway\"\n"
        "\t\tmeta skuid 60001 reject with icmpx 3 comment \"agent sysadmin: network none\"\n"
        "\t\tmeta skuid 60002 ip daddr 127.0.0.1 tcp dport 3128 accept comment \"agent coder: egress gateway\"\n"
        "\t\tmeta skuid 60002 ip daddr 10.0.0.0/8 meta l4proto { 6, 17 } th dport 443 accept comment \"agent coder\"\n"
        "\t\tmeta skuid 60002 ip6 daddr fd00::/64 meta l4proto { 6, 17 } th dport 80-90 accept comment \"agent coder\"\n"
        "\t\tmeta skuid 60002 ip daddr 192.168.1.7 accept comment \"agent coder\"\n"
        "\t\tmeta skuid 60002 reject with icmpx 3 comment \"agent coder: network allow-list\"\n"
        "\t}\n"
        "}\n";

static ConConfig *parse(const char *yaml) {
        ConConfig *c = NULL;
        ConErrorDetail e = {};
        g_assert_cmpint(con_config_parse(yaml, strlen(yaml), "con.yaml", &c, &e), ==, 0);
        return c;
}

static void test_render(void) {
        _cleanup_(con_config_freep) ConConfig *c = parse(
                "agents:\n"
                "  - name: concierge\n"
                "  - name: sysadmin\n"
                "    network: none\n"
                "  - name: coder\n"
                "    network: [\"10.0.0.0/8:443\", \"*.github.com:443\", \"[fd00::/64]:80-90\", 192.168.1.7]\n");
        ConNetdoorAgent agents[3];
        for (size_t i = 0; i < 3; i++)
                agents[i] = (ConNetdoorAgent) { .name = c->agents[i].name, .uid = 60000 + (uid_t) i,
                                                .network = &c->agents[i].rt.network };
        _cleanup_free_ char *script = NULL, *listing = NULL;
        g_assert_cmpint(con_netdoor_render(agents, 3, 3128, &script, &listing), ==, 0);
        /* The host name (*.github.com) is not in the kernel's table. */
        g_assert_cmpstr(listing, ==, golden);
        g_assert_true(strncmp(script, "table inet conspiracyos\ndelete table inet conspiracyos\n", 55) == 0);
        g_assert_cmpstr(script + 55, ==, golden);

        /* No agents: an empty chain, still one table (so bootstrap replaces an old one). */
        _cleanup_free_ char *empty = NULL;
        g_assert_cmpint(con_netdoor_render(NULL, 0, 3128, NULL, &empty), ==, 0);
        g_assert_cmpstr(empty, ==, "table inet conspiracyos {\n\tchain output {\n"
                                   "\t\ttype filter hook output priority 0; policy accept;\n\t}\n}\n");

        /* A halted or quarantined agent: one rule, nothing allowed, whatever its list says. */
        agents[2].cut = "quarantined";
        agents[0].cut = "halted";
        _cleanup_free_ char *cut = NULL;
        g_assert_cmpint(con_netdoor_render(agents, 3, 3128, NULL, &cut), ==, 0);
        g_assert_cmpstr(cut, ==,
                        "table inet conspiracyos {\n\tchain output {\n"
                        "\t\ttype filter hook output priority 0; policy accept;\n"
                        "\t\tmeta skuid 60000 reject with icmpx 3 comment \"agent concierge: network cut (halted)\"\n"
                        "\t\tmeta skuid 60001 reject with icmpx 3 comment \"agent sysadmin: network none\"\n"
                        "\t\tmeta skuid 60002 reject with icmpx 3 comment \"agent coder: network cut (quarantined)\"\n"
                        "\t}\n}\n");

        /* Never a rule for root, never a name that could break out of the comment. */
        ConNetdoorAgent bad = { .name = "concierge", .uid = 0, .network = &c->agents[0].rt.network };
        _cleanup_free_ char *s1 = NULL;
        g_assert_cmpint(con_netdoor_render(&bad, 1, 3128, NULL, &s1), ==, -EINVAL);
        g_assert_null(s1);
        bad = (ConNetdoorAgent) { .name = "x\" accept", .uid = 60000, .network = &c->agents[0].rt.network };
        g_assert_cmpint(con_netdoor_render(&bad, 1, 3128, NULL, &s1), ==, -EINVAL);
        g_assert_null(s1);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/netdoor/render", test_render);
        return con_test_run();
}
