/* SPDX-License-Identifier: MIT */
/* The policy: section of /etc/con/con.yaml is edited by hand and generates all three doors. Any
 * config the parser accepts must give an effective policy (con_policy_from_config() never refuses
 * a parsed config), whose rules are well formed and unique, whose every rule is honoured by
 * con_policy_allows(), where a stranger is allowed nothing, whose ACL entries are sorted, merged,
 * never readable and exactly those of the task rules, and from which the platform files render. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "macro.h"
#include "names.h"
#include "platform.h"
#include "policy.h"
#include "strv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define STRANGER "zz-stranger-user-with-a-long-name" /* 33 characters: no valid Unix name */

static void check_rule(const ConConfig *c, const ConPolicy *p, const ConPolicyRule *rule) {
        if (rule->verb < 0 || rule->verb >= _CON_POLICY_VERB_MAX)
                abort();
        if (con_policy_verb_per_agent(rule->verb) != !!rule->target)
                abort();
        if (rule->target && !con_config_find_agent(c, rule->target))
                abort();
        if ((rule->kind == CON_PRINCIPAL_ROOT) != !rule->name)
                abort();
        if (rule->kind == CON_PRINCIPAL_AGENT && !con_config_find_agent(c, rule->name))
                abort();
        if (con_principal_is_remote(rule->kind) && !strchr(rule->name, '@'))
                abort();
        if ((rule->kind == CON_PRINCIPAL_GROUP || rule->kind == CON_PRINCIPAL_USER) &&
            !con_unix_name_valid(rule->name))
                abort();

        /* The written principal parses back to the same principal. */
        _cleanup_free_ char *s = con_policy_rule_principal(rule);
        ConPrincipalKind kind;
        const char *name;
        if (!s)
                return;
        if (con_principal_parse(s, &kind, &name) < 0 || kind != rule->kind || !streq_ptr(name, rule->name))
                abort();

        /* The rule is honoured. */
        _cleanup_free_ char *user = NULL;
        _cleanup_strv_free_ char **groups = NULL;
        switch (rule->kind) {
        case CON_PRINCIPAL_AGENT:
                if (con_agent_user(rule->name, &user) < 0)
                        return;
                break;
        case CON_PRINCIPAL_GROUP:
                user = strdup(STRANGER);
                if (!user || strv_extend(&groups, rule->name) < 0)
                        return;
                break;
        case CON_PRINCIPAL_USER:
        case CON_PRINCIPAL_REMOTE_USER:
                user = strdup(rule->name);
                break;
        case CON_PRINCIPAL_REMOTE_AGENT:
                if (asprintf(&user, CON_USER_PREFIX "%s", rule->name) < 0)
                        return;
                break;
        default:
                user = strdup("root");
                break;
        }
        if (!user)
                return;
        if (!con_policy_allows(p, user, groups, rule->verb, rule->target))
                abort();
}

static void check_acl(const ConPolicy *p, const char *target, bool inbox) {
        ConPolicyAclEntry *e = NULL;
        size_t n = 0;

        int r = con_policy_acl_entries(p, target, inbox, &e, &n);
        if (r == -ENOMEM)
                return;
        if (r < 0)
                abort();
        for (size_t i = 0; i < n; i++) {
                unsigned want = !target || inbox ? 2 | 1 : 1;
                if (e[i].perms != want || isempty(e[i].name))
                        abort();
                if (i > 0 && (e[i - 1].group > e[i].group ||
                              (e[i - 1].group == e[i].group && strcmp(e[i - 1].name, e[i].name) >= 0)))
                        abort(); /* sorted, one entry per name */
        }
        /* Every principal with a task grant on the target has its entry. */
        for (size_t i = 0; target && i < p->n_rules; i++) {
                const ConPolicyRule *rule = &p->rules[i];
                if (rule->verb != CON_POLICY_TASK || !streq(rule->target, target) ||
                    rule->kind == CON_PRINCIPAL_ROOT || con_principal_is_remote(rule->kind))
                        continue;
                _cleanup_free_ char *agent_user = NULL;
                if (rule->kind == CON_PRINCIPAL_AGENT && con_agent_user(rule->name, &agent_user) < 0)
                        continue;
                const char *name = agent_user ?: rule->name;
                bool group = rule->kind == CON_PRINCIPAL_GROUP, found = false;
                for (size_t j = 0; j < n && !found; j++)
                        found = e[j].group == group && streq(e[j].name, name);
                if (!found)
                        abort();
        }
        con_policy_acl_entries_free(e, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(con_config_freep) ConConfig *c = NULL;
        _cleanup_(con_policy_freep) ConPolicy *p = NULL;
        ConErrorDetail e = {};

        if (size > 64 * 1024)
                return 0;
        int r = con_config_parse((const char *) data, size, "fuzz.yaml", &c, &e);
        con_error_detail_done(&e);
        if (r < 0)
                return 0;

        r = con_policy_from_config(c, &p);
        if (r == -ENOMEM)
                return 0;
        if (r < 0 || !p || !con_unix_name_valid(p->submitters_group))
                abort(); /* the parser let through a config the policy cannot use */

        for (size_t i = 0; i < p->n_rules; i++) {
                check_rule(c, p, &p->rules[i]);
                for (size_t j = 0; j < i; j++) {
                        const ConPolicyRule *a = &p->rules[i], *b = &p->rules[j];
                        if (a->kind == b->kind && a->verb == b->verb && streq_ptr(a->name, b->name) &&
                            streq_ptr(a->target, b->target))
                                abort(); /* duplicate */
                }
                if (i > 0 && p->rules[i - 1].line > 0 && p->rules[i].line == 0)
                        abort(); /* defaults first */
        }

        /* Someone no rule names may do nothing. */
        for (int v = 0; v < _CON_POLICY_VERB_MAX; v++) {
                if (con_policy_allows(p, STRANGER, NULL, (ConPolicyVerb) v, NULL))
                        abort();
                for (size_t i = 0; i < c->n_agents; i++)
                        if (con_policy_allows(p, STRANGER, NULL, (ConPolicyVerb) v, c->agents[i].name))
                                abort();
        }

        check_acl(p, NULL, true);
        for (size_t i = 0; i < c->n_agents; i++) {
                check_acl(p, c->agents[i].name, false);
                check_acl(p, c->agents[i].name, true);
        }

        ConPlatformFile *files = NULL;
        size_t n_files = 0;
        r = con_platform_render(c, NULL, &files, &n_files);
        if (r < 0 && r != -ENOMEM)
                abort();
        if (r >= 0)
                for (size_t i = 0; i < n_files; i++)
                        if (!files[i].path || files[i].path[0] != '/' || !files[i].content)
                                abort();
        con_platform_files_free(files, n_files);
        return 0;
}
