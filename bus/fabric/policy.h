/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "policy-vocab.h"

/* The declared access policy: one list of rules "principal may VERB on target agent", built from
 * the config (the original's default grants plus the policy: section), from which the three
 * doors are generated: inbox ACLs (provision.c), polkit rules and the D-Bus policy (platform.c).
 * con_policy_allows() is the same decision as a query, for services and tests. Pure logic: no
 * I/O, no logging. Vocabulary and defaults: docs/POLICY.md. */

typedef struct ConPolicyRule {
        ConPrincipalKind kind;
        char *name;             /* agent, group or user name; NULL for root */
        ConPolicyVerb verb;
        char *target;           /* agent name; NULL for commission and contracts-admin */
        unsigned line;          /* policy.grants entry in the config, 0 = a default grant */
} ConPolicyRule;

typedef struct ConPolicy {
        ConPolicyRule *rules;   /* defaults first, then the config's grants; no duplicates */
        size_t n_rules;
        char *submitters_group;
} ConPolicy;

/* The effective policy of a (parsed, hence validated) config: when policy.defaults is true (the
 * default), the original's grants for the agents that exist:
 *   group:<submitters> -> concierge: task;  concierge -> every other agent: task;
 *   sysadmin -> concierge: task;  root -> every agent: every verb, and commission, contracts-admin;
 * then every policy.grants entry, with "*" expanded to every agent but the principal itself.
 * -EINVAL when the config refers to something that does not exist (not possible after parsing). */
int con_policy_from_config(const ConConfig *c, ConPolicy **ret);
ConPolicy *con_policy_free(ConPolicy *p);
static inline void con_policy_freep(ConPolicy **p) {
        con_policy_free(*p);
}

/* "concierge", "group:con", "user:alice", "root". NULL on OOM. */
char *con_policy_rule_principal(const ConPolicyRule *r);

/* Whether the caller (Unix user name and its group names) may VERB on target (an agent name;
 * ignored for commission and contracts-admin). The user "a-<name>" is the agent <name>; "root" is
 * the root principal. */
bool con_policy_allows(const ConPolicy *p, const char *user, char * const *groups, ConPolicyVerb verb,
                       const char *target);

/* The file door: the named ACL entries the policy puts on an agent's folder (inbox false:
 * traverse, --x) or inbox (inbox true: write and traverse, -wx, never read); target NULL gives
 * the outer inbox /srv/con/inbox (the submitters group, -wx). Entries by name, sorted, merged
 * per name; root principals give none (root bypasses ACLs). */
typedef struct ConPolicyAclEntry {
        bool group;             /* g:NAME rather than u:NAME */
        char *name;             /* Unix user ("a-concierge", "alice") or group name */
        unsigned perms;         /* CON_ACL_R/W/X bits: 4, 2, 1 */
} ConPolicyAclEntry;

int con_policy_acl_entries(const ConPolicy *p, const char *target, bool inbox, ConPolicyAclEntry **ret,
                           size_t *ret_n);
void con_policy_acl_entries_free(ConPolicyAclEntry *e, size_t n);
