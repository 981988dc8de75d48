/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "names.h"
#include "policy.h"
#include "strv.h"

#define CONCIERGE "concierge"
#define SYSADMIN "sysadmin"
#define SUBMITTERS_GROUP_DEFAULT "con"

ConPolicy *con_policy_free(ConPolicy *p) {
        if (!p)
                return NULL;
        for (size_t i = 0; i < p->n_rules; i++) {
                free(p->rules[i].name);
                free(p->rules[i].target);
        }
        free(p->rules);
        free(p->submitters_group);
        free(p);
        return NULL;
}

static bool rule_same(const ConPolicyRule *r, ConPrincipalKind kind, const char *name, ConPolicyVerb verb,
                      const char *target) {
        return r->kind == kind && streq_ptr(r->name, name) && r->verb == verb && streq_ptr(r->target, target);
}

static int rule_add(ConPolicy *p, ConPrincipalKind kind, const char *name, ConPolicyVerb verb, const char *target,
                    unsigned line) {
        if (!con_policy_verb_per_agent(verb))
                target = NULL;
        for (size_t i = 0; i < p->n_rules; i++)
                if (rule_same(&p->rules[i], kind, name, verb, target))
                        return 0;
        ConPolicyRule *n = realloc(p->rules, sizeof(*n) * (p->n_rules + 1));
        if (!n)
                return -ENOMEM;
        p->rules = n;
        ConPolicyRule r = { .kind = kind, .verb = verb, .line = line };
        if ((name && !(r.name = strdup(name))) || (target && !(r.target = strdup(target)))) {
                free(r.name);
                return -ENOMEM;
        }
        p->rules[p->n_rules++] = r;
        return 0;
}

static int agent_cmp(const void *a, const void *b) {
        return strcmp(*(char * const *) a, *(char * const *) b);
}

/* The agent names, sorted: defaults and "*" expand in a stable order whatever the config order. */
static int sorted_agents(const ConConfig *c, char ***ret) {
        _cleanup_strv_free_ char **l = NULL;
        for (size_t i = 0; i < c->n_agents; i++) {
                int r = strv_extend(&l, c->agents[i].name);
                if (r < 0)
                        return r;
        }
        if (l)
                qsort(l, strv_length(l), sizeof(char *), agent_cmp);
        *ret = TAKE_PTR(l);
        return 0;
}

static int add_defaults(ConPolicy *p, const ConConfig *c, char * const *agents) {
        bool concierge = con_config_find_agent(c, CONCIERGE), sysadmin = con_config_find_agent(c, SYSADMIN);
        int r;

        if (concierge) {
                r = rule_add(p, CON_PRINCIPAL_GROUP, p->submitters_group, CON_POLICY_TASK, CONCIERGE, 0);
                if (r < 0)
                        return r;
                STRV_FOREACH(a, agents)
                        if (!streq(*a, CONCIERGE) && (r = rule_add(p, CON_PRINCIPAL_AGENT, CONCIERGE,
                                                                  CON_POLICY_TASK, *a, 0)) < 0)
                                return r;
                if (sysadmin && (r = rule_add(p, CON_PRINCIPAL_AGENT, SYSADMIN, CON_POLICY_TASK, CONCIERGE, 0)) < 0)
                        return r;
        }
        /* The sysadmin commissions and retires agents (con-provisiond, docs/PROVISIONING.md),
         * within what it may grant itself. */
        if (sysadmin && (r = rule_add(p, CON_PRINCIPAL_AGENT, SYSADMIN, CON_POLICY_COMMISSION, NULL, 0)) < 0)
                return r;
        /* Root may do everything; listed so that the services' root table and `con policy show`
         * say so explicitly (polkit answers yes to root before any rule runs). */
        for (ConPolicyVerb v = 0; v < _CON_POLICY_VERB_MAX; v++) {
                if (!con_policy_verb_per_agent(v)) {
                        r = rule_add(p, CON_PRINCIPAL_ROOT, NULL, v, NULL, 0);
                        if (r < 0)
                                return r;
                        continue;
                }
                STRV_FOREACH(a, agents)
                        if ((r = rule_add(p, CON_PRINCIPAL_ROOT, NULL, v, *a, 0)) < 0)
                                return r;
        }
        return 0;
}

static int add_grant(ConPolicy *p, const ConConfig *c, const ConPolicyGrantConfig *g, char * const *agents) {
        ConPrincipalKind kind;
        const char *name;
        int r;

        r = con_principal_parse(g->who, &kind, &name);
        if (r < 0)
                return r;
        if (kind == CON_PRINCIPAL_AGENT && !con_config_find_agent(c, name))
                return -EINVAL;
        STRV_FOREACH(m, g->may) {
                ConPolicyVerb v = con_policy_verb_from_string(*m);
                if (v < 0)
                        return -EINVAL;
                if (!con_policy_verb_per_agent(v)) {
                        r = rule_add(p, kind, name, v, NULL, g->line);
                        if (r < 0)
                                return r;
                        continue;
                }
                STRV_FOREACH(t, g->to) {
                        if (streq(*t, "*")) {
                                STRV_FOREACH(a, agents)
                                        if (!(kind == CON_PRINCIPAL_AGENT && streq(*a, name)) &&
                                            (r = rule_add(p, kind, name, v, *a, g->line)) < 0)
                                                return r;
                                continue;
                        }
                        if (!con_config_find_agent(c, *t))
                                return -EINVAL;
                        r = rule_add(p, kind, name, v, *t, g->line);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

int con_policy_from_config(const ConConfig *c, ConPolicy **ret) {
        _cleanup_(con_policy_freep) ConPolicy *p = NULL;
        _cleanup_strv_free_ char **agents = NULL;
        int r;

        if (!c || !ret)
                return -EINVAL;
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->submitters_group = strdup(c->submitters_group ?: SUBMITTERS_GROUP_DEFAULT);
        if (!p->submitters_group)
                return -ENOMEM;
        if (!con_unix_name_valid(p->submitters_group))
                return -EINVAL;
        for (size_t i = 0; i < c->n_agents; i++)
                if (!con_agent_name_valid(c->agents[i].name))
                        return -EINVAL;
        r = sorted_agents(c, &agents);
        if (r < 0)
                return r;
        if (!c->policy_no_defaults) {
                r = add_defaults(p, c, agents);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < c->n_policy_grants; i++) {
                r = add_grant(p, c, &c->policy_grants[i], agents);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(p);
        return 0;
}

char *con_policy_rule_principal(const ConPolicyRule *r) {
        char *s = NULL;
        switch (r->kind) {
        case CON_PRINCIPAL_AGENT:
                return strdup(r->name);
        case CON_PRINCIPAL_GROUP:
                return asprintf(&s, "group:%s", r->name) < 0 ? NULL : s;
        case CON_PRINCIPAL_USER:
        case CON_PRINCIPAL_REMOTE_USER:
                return asprintf(&s, "user:%s", r->name) < 0 ? NULL : s;
        case CON_PRINCIPAL_REMOTE_AGENT:
                return strdup(r->name);
        default:
                return strdup("root");
        }
}

static bool principal_matches(const ConPolicyRule *r, const char *user, char * const *groups) {
        switch (r->kind) {
        case CON_PRINCIPAL_AGENT:
        case CON_PRINCIPAL_REMOTE_AGENT: {
                /* "a-concierge@host-a" is the remote agent "concierge@host-a"; local user names
                 * never hold an '@', so local and remote principals never match each other. */
                const char *a = startswith(user, CON_USER_PREFIX);
                return a && streq(a, r->name);
        }
        case CON_PRINCIPAL_GROUP:
                return strv_contains(groups, r->name);
        case CON_PRINCIPAL_USER:
        case CON_PRINCIPAL_REMOTE_USER:
                return streq(user, r->name);
        case CON_PRINCIPAL_ROOT:
                return streq(user, "root");
        default:
                return false;
        }
}

bool con_policy_allows(const ConPolicy *p, const char *user, char * const *groups, ConPolicyVerb verb,
                       const char *target) {
        if (!p || !user || verb < 0 || verb >= _CON_POLICY_VERB_MAX)
                return false;
        bool per_agent = con_policy_verb_per_agent(verb);
        if (per_agent && !target)
                return false;
        for (size_t i = 0; i < p->n_rules; i++) {
                const ConPolicyRule *r = &p->rules[i];
                if (r->verb != verb || (per_agent && !streq_ptr(r->target, target)))
                        continue;
                if (principal_matches(r, user, groups))
                        return true;
        }
        return false;
}

void con_policy_acl_entries_free(ConPolicyAclEntry *e, size_t n) {
        for (size_t i = 0; e && i < n; i++)
                free(e[i].name);
        free(e);
}

static int acl_entry_add(ConPolicyAclEntry **e, size_t *n, bool group, const char *name, unsigned perms) {
        for (size_t i = 0; i < *n; i++)
                if ((*e)[i].group == group && streq((*e)[i].name, name)) {
                        (*e)[i].perms |= perms;
                        return 0;
                }
        ConPolicyAclEntry *ne = realloc(*e, sizeof(*ne) * (*n + 1));
        if (!ne)
                return -ENOMEM;
        *e = ne;
        char *s = strdup(name);
        if (!s)
                return -ENOMEM;
        ne[(*n)++] = (ConPolicyAclEntry) { .group = group, .name = s, .perms = perms };
        return 0;
}

static int acl_entry_cmp(const void *a, const void *b) {
        const ConPolicyAclEntry *x = a, *y = b;
        if (x->group != y->group)
                return x->group ? 1 : -1;
        return strcmp(x->name, y->name);
}

int con_policy_acl_entries(const ConPolicy *p, const char *target, bool inbox, ConPolicyAclEntry **ret,
                           size_t *ret_n) {
        ConPolicyAclEntry *e = NULL;
        size_t n = 0;
        int r = 0;

        if (!p || !ret || !ret_n)
                return -EINVAL;
        /* The outer inbox stays the submitters group's: the router decides where its files go. */
        if (!target)
                r = acl_entry_add(&e, &n, true, p->submitters_group, 2 | 1);
        for (size_t i = 0; r >= 0 && target && i < p->n_rules; i++) {
                const ConPolicyRule *rule = &p->rules[i];
                _cleanup_free_ char *user = NULL;

                if (rule->verb != CON_POLICY_TASK || !streq_ptr(rule->target, target))
                        continue;
                /* Traverse the folder, write and traverse the inbox, never read: a sender must
                 * not list or read another sender's files. */
                unsigned perms = inbox ? 2 | 1 : 1;
                switch (rule->kind) {
                case CON_PRINCIPAL_AGENT:
                        r = con_agent_user(rule->name, &user);
                        if (r >= 0)
                                r = acl_entry_add(&e, &n, false, user, perms);
                        break;
                case CON_PRINCIPAL_USER:
                        r = acl_entry_add(&e, &n, false, rule->name, perms);
                        break;
                case CON_PRINCIPAL_GROUP:
                        r = acl_entry_add(&e, &n, true, rule->name, perms);
                        break;
                default: /* root bypasses ACLs; remote principals have no file door here */
                        break;
                }
        }
        if (r < 0) {
                con_policy_acl_entries_free(e, n);
                return r;
        }
        if (n > 0)
                qsort(e, n, sizeof(*e), acl_entry_cmp);
        *ret = e;
        *ret_n = n;
        return 0;
}
