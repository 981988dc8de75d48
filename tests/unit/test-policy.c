/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "config.h"
#include "macro.h"
#include "policy.h"
#include "strv.h"
#include "test-util.h"

#define AGENTS "agents:\n  - name: concierge\n  - name: sysadmin\n  - name: coder\n  - name: reviewer\n"

static ConConfig *parse_ok(const char *yaml) {
        ConConfig *c = NULL;
        ConErrorDetail e = {};
        int r = con_config_parse(yaml, strlen(yaml), "con.yaml", &c, &e);
        if (r < 0) {
                _cleanup_free_ char *s = con_error_detail_format(&e);
                g_test_message("unexpected error: %s", s);
                con_error_detail_done(&e);
        }
        g_assert_cmpint(r, ==, 0);
        return c;
}

static void assert_error(const char *yaml, const char *expected) {
        ConConfig *c = NULL;
        ConErrorDetail e = {};
        int r = con_config_parse(yaml, strlen(yaml), "con.yaml", &c, &e);
        g_assert_cmpint(r, ==, -EINVAL);
        g_assert_null(c);
        _cleanup_free_ char *s = con_error_detail_format(&e);
        con_error_detail_done(&e);
        if (!streq_ptr(s, expected))
                g_test_message("input:\n%s", yaml);
        g_assert_cmpstr(s, ==, expected);
}

static ConPolicy *policy_of(const ConConfig *c) {
        ConPolicy *p = NULL;
        g_assert_cmpint(con_policy_from_config(c, &p), ==, 0);
        g_assert_nonnull(p);
        return p;
}

static bool allows(const ConPolicy *p, const char *user, const char *groups, const char *verb, const char *target) {
        _cleanup_strv_free_ char **g = NULL;
        if (groups) {
                gchar **split = g_strsplit(groups, ",", -1);
                for (gchar **s = split; *s; s++)
                        g_assert_cmpint(strv_extend(&g, *s), >=, 0);
                g_strfreev(split);
        }
        ConPolicyVerb v = con_policy_verb_from_string(verb);
        g_assert_cmpint(v, >=, 0);
        return con_policy_allows(p, user, g, v, target);
}

static void test_vocabulary(void) {
        for (ConPolicyVerb v = 0; v < _CON_POLICY_VERB_MAX; v++) {
                g_assert_cmpint(con_policy_verb_from_string(con_policy_verb_to_string(v)), ==, v);
                g_assert_cmpint(con_policy_verb_from_action(con_policy_verb_action(v)), ==, v);
        }
        g_assert_cmpstr(con_policy_verb_action(CON_POLICY_TASK), ==, "org.conspiracy.agent.task");
        g_assert_cmpstr(con_policy_verb_action(CON_POLICY_CONTRACTS_ADMIN), ==, "org.conspiracy.contracts.admin");
        g_assert_cmpint(con_policy_verb_from_string("submit"), ==, _CON_POLICY_VERB_INVALID);
        g_assert_cmpint(con_policy_verb_of_method("submit"), ==, CON_POLICY_TASK);
        g_assert_cmpint(con_policy_verb_of_method("deliver"), ==, CON_POLICY_TASK);
        g_assert_cmpint(con_policy_verb_of_method("list-tasks"), ==, CON_POLICY_READ_RESULT);
        g_assert_cmpint(con_policy_verb_of_method("resume"), ==, CON_POLICY_HALT);
        g_assert_cmpint(con_policy_verb_of_method("kill-sessions"), ==, CON_POLICY_QUARANTINE);
        g_assert_cmpint(con_policy_verb_of_method("task"), ==, _CON_POLICY_VERB_INVALID);
        g_assert_false(con_policy_verb_per_agent(CON_POLICY_COMMISSION));
        g_assert_true(con_policy_verb_per_agent(CON_POLICY_QUARANTINE));

        ConPrincipalKind k;
        const char *n;
        g_assert_cmpint(con_principal_parse("group:con", &k, &n), ==, 0);
        g_assert_cmpint(k, ==, CON_PRINCIPAL_GROUP);
        g_assert_cmpstr(n, ==, "con");
        g_assert_cmpint(con_principal_parse("user:alice", &k, &n), ==, 0);
        g_assert_cmpint(k, ==, CON_PRINCIPAL_USER);
        g_assert_cmpint(con_principal_parse("root", &k, &n), ==, 0);
        g_assert_cmpint(k, ==, CON_PRINCIPAL_ROOT);
        g_assert_null(n);
        g_assert_cmpint(con_principal_parse("coder", &k, &n), ==, 0);
        g_assert_cmpint(k, ==, CON_PRINCIPAL_AGENT);
        g_assert_cmpint(con_principal_parse("concierge@host-a", &k, &n), ==, 0);
        g_assert_cmpint(k, ==, CON_PRINCIPAL_REMOTE_AGENT);
        g_assert_cmpstr(n, ==, "concierge@host-a");
        g_assert_cmpint(con_principal_parse("user:alice@h1", &k, &n), ==, 0);
        g_assert_cmpint(k, ==, CON_PRINCIPAL_REMOTE_USER);
        g_assert_cmpstr(n, ==, "alice@h1");
        g_assert_true(con_remote_sender_valid("a-concierge@host-a"));
        g_assert_true(con_remote_sender_valid("root@b"));
        g_assert_false(con_remote_sender_valid("alice"));
        g_assert_false(con_remote_sender_valid("alice@"));
        g_assert_false(con_remote_sender_valid("@host"));
        g_assert_false(con_remote_sender_valid("Alice@host"));
        g_assert_false(con_remote_sender_valid("alice@Host"));
        g_assert_false(con_remote_sender_valid("alice@host.example"));
        const char *bad[] = { "", "group:", "user:root", "user:Alice", "group:a b", "Coder", "x:y", "user:\"",
                              "concierge@", "@host-a", "Concierge@host-a", "concierge@Host", "concierge@host-",
                              "group:con@host-a", "user:root@host-a", "root@host-a", "user:@h", "a@b@c" };
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
                g_assert_cmpint(con_principal_parse(bad[i], NULL, NULL), ==, -EINVAL);
}

static void test_remote(void) {
        _cleanup_(con_config_freep) ConConfig *c = parse_ok(AGENTS "policy:\n  grants:\n"
                                                            "    - {who: concierge@host-a, may: [task], to: [sysadmin]}\n"
                                                            "    - {who: \"user:alice@host-a\", may: [task], to: [coder]}\n");
        _cleanup_(con_policy_freep) ConPolicy *p = policy_of(c);

        /* The gateway names the sender USER@HOST; the agent user a-concierge is concierge. */
        g_assert_true(allows(p, "a-concierge@host-a", NULL, "task", "sysadmin"));
        g_assert_false(allows(p, "a-concierge@host-b", NULL, "task", "sysadmin"));
        g_assert_false(allows(p, "a-concierge@host-a", NULL, "task", "coder"));
        g_assert_false(allows(p, "a-concierge@host-a", NULL, "halt", "sysadmin"));
        g_assert_true(allows(p, "alice@host-a", NULL, "task", "coder"));
        g_assert_false(allows(p, "alice@host-a", NULL, "task", "sysadmin"));
        /* Local principals never match a remote sender, nor remote grants a local user. */
        g_assert_false(allows(p, "a-concierge@host-a", NULL, "task", "reviewer"));
        g_assert_false(allows(p, "alice", "con", "task", "coder"));

        /* No file door for remote principals. */
        ConPolicyAclEntry *e = NULL;
        size_t n = 0;
        g_assert_cmpint(con_policy_acl_entries(p, "sysadmin", true, &e, &n), ==, 0);
        for (size_t i = 0; i < n; i++)
                g_assert_null(strchr(e[i].name, '@'));
        con_policy_acl_entries_free(e, n);

        /* Written back as given. */
        bool seen_agent = false, seen_user = false;
        for (size_t i = 0; i < p->n_rules; i++) {
                _cleanup_free_ char *w = con_policy_rule_principal(&p->rules[i]);
                seen_agent = seen_agent || streq(w, "concierge@host-a");
                seen_user = seen_user || streq(w, "user:alice@host-a");
        }
        g_assert_true(seen_agent);
        g_assert_true(seen_user);

        assert_error(AGENTS "policy:\n  grants:\n    - {who: concierge@Host, may: [task], to: [coder]}\n",
                     "con.yaml:8:13: policy.grants[0].who: 'concierge@Host' is not a valid principal; use an agent "
                     "name, group:NAME, user:NAME (a Linux group or user name: 1 to 31 characters from a-z, 0-9, '_' "
                     "and '-', starting with a letter or '_'), root, or AGENT@HOST or "
                     "user:NAME@HOST for a principal of another host of the mesh");
}

static void test_defaults(void) {
        _cleanup_(con_config_freep) ConConfig *c = parse_ok(AGENTS);
        _cleanup_(con_policy_freep) ConPolicy *p = policy_of(c);

        g_assert_true(allows(p, "alice", "con,users", "task", "concierge"));
        g_assert_false(allows(p, "alice", "con", "task", "sysadmin"));
        g_assert_false(allows(p, "alice", "con", "read-result", "concierge")); /* own tasks: the service */
        g_assert_false(allows(p, "bob", "users", "task", "concierge"));
        g_assert_true(allows(p, "a-concierge", "agents", "task", "sysadmin"));
        g_assert_true(allows(p, "a-concierge", "agents", "task", "reviewer"));
        g_assert_false(allows(p, "a-concierge", "agents", "task", "concierge"));
        g_assert_false(allows(p, "a-concierge", "agents", "halt", "coder"));
        g_assert_true(allows(p, "a-sysadmin", NULL, "task", "concierge"));
        g_assert_false(allows(p, "a-sysadmin", NULL, "task", "coder"));
        /* Commissioning: root and the sysadmin, nobody else by default. */
        g_assert_true(allows(p, "a-sysadmin", NULL, "commission", NULL));
        g_assert_true(allows(p, "root", NULL, "commission", NULL));
        g_assert_false(allows(p, "a-concierge", "agents", "commission", NULL));
        g_assert_false(allows(p, "alice", "con", "commission", NULL));
        g_assert_false(allows(p, "a-coder", NULL, "task", "reviewer"));
        g_assert_true(allows(p, "root", NULL, "halt", "coder"));
        g_assert_true(allows(p, "root", NULL, "contracts-admin", NULL));
        g_assert_false(allows(p, "a-root", NULL, "halt", "coder"));
        g_assert_false(allows(p, "root", NULL, "halt", NULL)); /* per-agent verb without an agent */

        /* The file door: names, sorted, users before groups. */
        ConPolicyAclEntry *e = NULL;
        size_t n = 0;
        g_assert_cmpint(con_policy_acl_entries(p, "concierge", true, &e, &n), ==, 0);
        g_assert_cmpuint(n, ==, 2);
        g_assert_false(e[0].group);
        g_assert_cmpstr(e[0].name, ==, "a-sysadmin");
        g_assert_cmpuint(e[0].perms, ==, 3);
        g_assert_true(e[1].group);
        g_assert_cmpstr(e[1].name, ==, "con");
        con_policy_acl_entries_free(e, n);
        g_assert_cmpint(con_policy_acl_entries(p, "coder", false, &e, &n), ==, 0);
        g_assert_cmpuint(n, ==, 1);
        g_assert_cmpstr(e[0].name, ==, "a-concierge");
        g_assert_cmpuint(e[0].perms, ==, 1);
        con_policy_acl_entries_free(e, n);
        g_assert_cmpint(con_policy_acl_entries(p, NULL, true, &e, &n), ==, 0);
        g_assert_cmpuint(n, ==, 1);
        g_assert_true(e[0].group);
        g_assert_cmpstr(e[0].name, ==, "con");
        con_policy_acl_entries_free(e, n);

        /* Without a concierge there is no default routing, only root. */
        _cleanup_(con_config_freep) ConConfig *c2 = parse_ok("agents:\n  - name: coder\n");
        _cleanup_(con_policy_freep) ConPolicy *p2 = policy_of(c2);
        for (size_t i = 0; i < p2->n_rules; i++)
                g_assert_cmpint(p2->rules[i].kind, ==, CON_PRINCIPAL_ROOT);
}

static void test_grants(void) {
        _cleanup_(con_config_freep) ConConfig *c = parse_ok(
                AGENTS
                "policy:\n"
                "  defaults: false\n"
                "  grants:\n"
                "    - {who: concierge, may: [task, cancel], to: [\"*\"]}\n"
                "    - {who: \"group:qa\", may: [read-result], to: [reviewer, coder]}\n"
                "    - {who: \"user:carol\", may: [commission, contracts-admin]}\n"
                "    - {who: root, may: [halt], to: [coder]}\n");
        g_assert_true(c->policy_no_defaults);
        g_assert_cmpuint(c->n_policy_grants, ==, 4);
        g_assert_cmpuint(c->policy_grants[1].line, ==, 10);
        _cleanup_(con_policy_freep) ConPolicy *p = policy_of(c);

        g_assert_false(allows(p, "alice", "con", "task", "concierge")); /* defaults off */
        g_assert_true(allows(p, "a-concierge", NULL, "task", "coder"));
        g_assert_true(allows(p, "a-concierge", NULL, "cancel", "sysadmin"));
        g_assert_false(allows(p, "a-concierge", NULL, "task", "concierge")); /* "*" is every other agent */
        g_assert_true(allows(p, "dave", "qa", "read-result", "coder"));
        g_assert_false(allows(p, "dave", "qa", "read-result", "sysadmin"));
        g_assert_true(allows(p, "carol", NULL, "commission", NULL));
        g_assert_true(allows(p, "carol", NULL, "contracts-admin", "anything"));
        g_assert_false(allows(p, "carol", NULL, "task", "coder"));
        g_assert_true(allows(p, "root", NULL, "halt", "coder"));
        g_assert_false(allows(p, "root", NULL, "halt", "reviewer")); /* only what is granted */
        g_assert_cmpuint(p->n_rules, ==, 3 * 2 + 2 + 2 + 1);
        for (size_t i = 0; i < p->n_rules; i++)
                g_assert_cmpuint(p->rules[i].line, >=, 9);

        _cleanup_free_ char *who = con_policy_rule_principal(&p->rules[p->n_rules - 1]);
        g_assert_cmpstr(who, ==, "root");
}

static void test_errors(void) {
        assert_error(AGENTS "policy: [1]\n",
                     "con.yaml:6:9: policy: expected a mapping of defaults and grants, got a list");
        assert_error(AGENTS "policy:\n  deny: []\n",
                     "con.yaml:7:3: policy.deny: unknown key; allowed keys are defaults and grants");
        assert_error(AGENTS "policy:\n  defaults: maybe\n",
                     "con.yaml:7:13: policy.defaults: 'maybe' is not allowed; use true or false");
        /* The one YAML reader's booleans: True was accepted here before, and is now refused with a hint. */
        assert_error(AGENTS "policy:\n  defaults: True\n",
                     "con.yaml:7:13: policy.defaults: 'True' is not a boolean here (write true: booleans are exactly "
                     "true or false, lower-case)");
        assert_error(AGENTS "policy:\n  defaults: \"false\"\n",
                     "con.yaml:7:13: policy.defaults: 'false' is a quoted string, not a boolean (write false without "
                     "quotes)");
        assert_error(AGENTS "policy:\n  grants: {who: coder}\n",
                     "con.yaml:7:11: policy.grants: expected a list of grants ({who: ..., may: [...], to: [...]}), "
                     "got a mapping");
        assert_error(AGENTS "policy:\n  grants:\n    - {who: coder, may: [task], to: [reviewer], why: x}\n",
                     "con.yaml:8:49: policy.grants[0].why: unknown key; allowed keys are who, may and to");
        assert_error(AGENTS "policy:\n  grants:\n    - {may: [task], to: [reviewer]}\n",
                     "con.yaml:8:7: policy.grants[0].who: missing; use an agent name, group:NAME, user:NAME "
                     "(a Linux group or user name: 1 to 31 characters from a-z, 0-9, '_' and '-', starting with a letter or '_'), root, or AGENT@HOST or user:NAME@HOST for a principal of another host of the mesh");
        assert_error(AGENTS "policy:\n  grants:\n    - {who: \"user:Bob\", may: [task], to: [reviewer]}\n",
                     "con.yaml:8:13: policy.grants[0].who: 'user:Bob' is not a valid principal; use an agent name, "
                     "group:NAME, user:NAME (a Linux group or user name: 1 to 31 characters from a-z, 0-9, '_' and '-', starting with a letter or '_'), root, or AGENT@HOST or user:NAME@HOST for a principal of another host of the mesh");
        assert_error(AGENTS "policy:\n  grants:\n    - {who: coderr, may: [task], to: [reviewer]}\n",
                     "con.yaml:8:13: policy.grants[0].who: 'coderr' is not an agent in agents:; use an agent name, "
                     "group:NAME, user:NAME (a Linux group or user name: 1 to 31 characters from a-z, 0-9, '_' and '-', starting with a letter or '_'), root, or AGENT@HOST or user:NAME@HOST for a principal of another host of the mesh");
        assert_error(AGENTS "policy:\n  grants:\n    - {who: coder, to: [reviewer]}\n",
                     "con.yaml:8:7: policy.grants[0].may: missing or empty; list what the principal may do: "
                     "task, read-result, cancel, halt, quarantine, commission or contracts-admin");
        assert_error(AGENTS "policy:\n  grants:\n    - {who: coder, may: [task, delete], to: [reviewer]}\n",
                     "con.yaml:8:32: policy.grants[0].may[1]: 'delete' is not a verb; use task, read-result, "
                     "cancel, halt, quarantine, commission or contracts-admin");
        assert_error(AGENTS "policy:\n  grants:\n    - {who: coder, may: [task, task], to: [reviewer]}\n",
                     "con.yaml:8:32: policy.grants[0].may[1]: 'task' is listed twice");
        assert_error(AGENTS "policy:\n  grants:\n    - {who: coder, may: [contracts-admin, halt], to: [reviewer]}\n",
                     "con.yaml:8:26: policy.grants[0].may[0]: 'contracts-admin' is not about one agent and cannot "
                     "share a grant with per-agent verbs; give it a grant of its own, without to:");
        assert_error(AGENTS "policy:\n  grants:\n    - {who: coder, may: [task]}\n",
                     "con.yaml:8:7: policy.grants[0].to: missing or empty; list the agents the grant applies to, "
                     "or \"*\" for every agent");
        assert_error(AGENTS "policy:\n  grants:\n    - {who: coder, may: [task], to: [reviewr]}\n",
                     "con.yaml:8:38: policy.grants[0].to[0]: 'reviewr' is not an agent in agents:; use agent "
                     "names, or \"*\" for every agent");
        assert_error(AGENTS "policy:\n  grants:\n    - {who: coder, may: [task], to: [\"*\", \"*\"]}\n",
                     "con.yaml:8:43: policy.grants[0].to[1]: '*' is listed twice");
        assert_error(AGENTS "policy:\n  grants:\n    - {who: \"group:qa\", may: [commission], to: [coder]}\n",
                     "con.yaml:8:48: policy.grants[0].to: commission and contracts-admin are not about one agent; "
                     "remove to:");
        assert_error(AGENTS "policy:\n  grants:\n    - {who: coder, may: task, to: [reviewer]}\n",
                     "con.yaml:8:25: policy.grants[0].may: expected a list of strings, got a string");
        /* The policy may come before the agents. */
        _cleanup_(con_config_freep) ConConfig *c = parse_ok(
                "policy:\n  grants:\n    - {who: coder, may: [task], to: [reviewer]}\n" AGENTS);
        g_assert_cmpuint(c->n_policy_grants, ==, 1);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/policy/vocabulary", test_vocabulary);
        g_test_add_func("/policy/defaults", test_defaults);
        g_test_add_func("/policy/grants", test_grants);
        g_test_add_func("/policy/errors", test_errors);
        g_test_add_func("/policy/remote", test_remote);
        return con_test_run();
}
