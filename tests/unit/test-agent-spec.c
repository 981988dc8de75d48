/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "agent-spec.h"
#include "config.h"
#include "macro.h"
#include "strv.h"
#include "test-util.h"

#define MAIN "agents:\n  - name: concierge\n  - name: sysadmin\n  - name: coder\n    network: [\"10.0.0.0/8:443\"]\n"

/* con.yaml text plus the spec's drop-in, loaded by the one loader. */
static int load_with(const char *dir, const ConAgentSpec *s, ConConfig **ret, char **ret_error) {
        _cleanup_free_ char *main = g_strdup_printf("%s/con.yaml", dir), *yaml = NULL, *name = NULL;
        ConErrorDetail e = {};
        test_write_file(main, MAIN);
        g_assert_cmpint(con_agent_spec_to_yaml(s, &yaml), ==, 0);
        name = g_strdup_printf("%s.yaml", s->name);
        int r = con_config_load_full(&(ConConfigLoad) { .path = main, .extra_dropin_name = name,
                        .extra_dropin_text = yaml, .extra_dropin_len = strlen(yaml) }, ret, &e);
        if (r < 0 && ret_error)
                *ret_error = con_error_detail_format(&e);
        con_error_detail_done(&e);
        return r;
}

static void test_round_trip(void) {
        _cleanup_free_ char *dir = test_tmpdir_new(), *err = NULL;
        /* Hostile text: YAML syntax, a document end, control characters, quotes, a key of its own. */
        const char *instr = "ok\"\n---\nagents:\n  - name: evil\n\t\\x00 '\x01 #comment\n...\n: : [{\n";
        ConAgentSpec s = {
                .name = (char *) "researcher",
                .tier = (char *) "worker",
                .instructions = (char *) instr,
                .roles = STRV_MAKE((char *) "reader"),
                .may_task = STRV_MAKE((char *) "concierge"),
                .tasked_by = STRV_MAKE((char *) "sysadmin"),
                .network = STRV_MAKE((char *) "none"),
        };
        ConConfig *c = NULL;
        g_assert_cmpint(con_agent_spec_check(&s, &err), ==, 0);
        g_assert_cmpint(load_with(dir, &s, &c, &err), ==, 0);
        g_assert_cmpuint(c->n_agents, ==, 4);
        const ConAgent *a = con_config_find_agent(c, "researcher");
        g_assert_nonnull(a);
        g_assert_null(con_config_find_agent(c, "evil"));
        g_assert_cmpstr(a->instructions, ==, instr);
        g_assert_cmpint(a->tier, ==, CON_TIER_WORKER);
        g_assert_cmpint(a->rt.network.mode, ==, CON_NETWORK_NONE);
        g_assert_cmpuint(c->n_policy_grants, ==, 2);
        g_assert_cmpstr(c->policy_grants[0].who, ==, "researcher");
        g_assert_cmpstr(c->policy_grants[1].who, ==, "sysadmin");
        g_assert_cmpstr(c->policy_grants[1].to[0], ==, "researcher");

        /* Each value is checked by the loader, naming the drop-in. */
        s.tier = (char *) "boss";
        c = con_config_free(c);
        g_assert_cmpint(load_with(dir, &s, &c, &err), ==, -EINVAL);
        g_assert_nonnull(strstr(err, "researcher.yaml:"));
        g_assert_nonnull(strstr(err, "agents[0].tier: 'boss' is not allowed"));
        test_tmpdir_remove(dir);
}

static void test_check(void) {
        _cleanup_free_ char *err = NULL;
        const char *bad[] = { "../etc", "Researcher", "router", "provisioner", "a--b", "", "x/y",
                              "abcdefghijklmnopqrstuvwxyz12345" };
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                ConAgentSpec s = { .name = (char *) bad[i] };
                g_assert_cmpint(con_agent_spec_check(&s, &err), ==, -EINVAL);
                g_assert_nonnull(strstr(err, "not a valid agent name"));
        }
        _cleanup_free_ char *big = g_malloc(CON_AGENT_SPEC_INSTRUCTIONS_MAX + 2);
        memset(big, 'x', CON_AGENT_SPEC_INSTRUCTIONS_MAX + 1);
        big[CON_AGENT_SPEC_INSTRUCTIONS_MAX + 1] = 0;
        ConAgentSpec s = { .name = (char *) "ok", .instructions = big };
        g_assert_cmpint(con_agent_spec_check(&s, &err), ==, -EINVAL);
        g_assert_nonnull(strstr(err, "instructions: 65537 bytes; at most 65536"));
        s.instructions = (char *) "\xff\xfe";
        g_assert_cmpint(con_agent_spec_check(&s, &err), ==, -EINVAL);
        s.instructions = NULL;
        s.runner = (char *) "exec";
        g_assert_cmpint(con_agent_spec_check(&s, &err), ==, -EINVAL);
}

static int authorize(const char *dir, const ConAgentSpec *s, const char *user, char **err) {
        _cleanup_(con_config_freep) ConConfig *c = NULL;
        g_assert_cmpint(load_with(dir, s, &c, NULL), ==, 0);
        return con_agent_spec_authorize(s, c, user, NULL, err);
}

static void test_authorize(void) {
        _cleanup_free_ char *dir = test_tmpdir_new(), *err = NULL;
        ConAgentSpec s = { .name = (char *) "researcher" };

        /* Defaults: the sysadmin may task the concierge, nothing else. */
        g_assert_cmpint(authorize(dir, &s, "a-sysadmin", &err), ==, 0);
        s.may_task = STRV_MAKE((char *) "concierge");
        g_assert_cmpint(authorize(dir, &s, "a-sysadmin", &err), ==, 0);
        s.may_task = STRV_MAKE((char *) "coder");
        g_assert_cmpint(authorize(dir, &s, "a-sysadmin", &err), ==, -EPERM);
        g_assert_nonnull(strstr(err, "may_task: a-sysadmin may not task 'coder' itself"));
        g_assert_cmpint(authorize(dir, &s, "root", &err), ==, 0);
        s.may_task = STRV_MAKE((char *) "concierge");

        /* tasked_by: only agents that already reach as far. */
        s.tasked_by = STRV_MAKE((char *) "coder");
        g_assert_cmpint(authorize(dir, &s, "a-sysadmin", &err), ==, -EPERM);
        g_assert_nonnull(strstr(err, "tasked_by: 'coder' may not task 'concierge'"));
        s.tasked_by = STRV_MAKE((char *) "group:con");
        g_assert_cmpint(authorize(dir, &s, "a-sysadmin", &err), ==, -EPERM);
        g_assert_cmpint(authorize(dir, &s, "root", &err), ==, 0);
        s.tasked_by = NULL;
        s.may_task = NULL;

        /* The network: not wider than the caller's. */
        s.network = STRV_MAKE((char *) "10.0.0.0/8:443");
        g_assert_cmpint(authorize(dir, &s, "a-sysadmin", &err), ==, -EPERM);
        g_assert_nonnull(strstr(err, "network: '10.0.0.0/8:443' is not in the caller's own allow-list"));
        g_assert_cmpint(authorize(dir, &s, "a-coder", &err), ==, 0);
        g_assert_cmpint(authorize(dir, &s, "root", &err), ==, 0);
        s.network = STRV_MAKE((char *) "none");
        g_assert_cmpint(authorize(dir, &s, "a-sysadmin", &err), ==, 0);
        test_tmpdir_remove(dir);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/agent-spec/round-trip", test_round_trip);
        g_test_add_func("/agent-spec/check", test_check);
        g_test_add_func("/agent-spec/authorize", test_authorize);
        return con_test_run();
}
