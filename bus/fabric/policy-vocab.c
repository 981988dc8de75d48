/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "names.h"
#include "policy-vocab.h"

static const struct {
        const char *name;
        const char *action;
        bool per_agent;
} verb_table[_CON_POLICY_VERB_MAX] = {
        [CON_POLICY_TASK] = { "task", "org.conspiracy.agent.task", true },
        [CON_POLICY_READ_RESULT] = { "read-result", "org.conspiracy.agent.read-result", true },
        [CON_POLICY_CANCEL] = { "cancel", "org.conspiracy.agent.cancel", true },
        [CON_POLICY_HALT] = { "halt", "org.conspiracy.agent.halt", true },
        [CON_POLICY_QUARANTINE] = { "quarantine", "org.conspiracy.agent.quarantine", true },
        [CON_POLICY_COMMISSION] = { "commission", "org.conspiracy.agent.commission", false },
        [CON_POLICY_CONTRACTS_ADMIN] = { "contracts-admin", "org.conspiracy.contracts.admin", false },
};

static const struct {
        const char *method;
        ConPolicyVerb verb;
} method_table[] = {
        { "submit", CON_POLICY_TASK },
        { "deliver", CON_POLICY_TASK },
        { "get-result", CON_POLICY_READ_RESULT },
        { "list-tasks", CON_POLICY_READ_RESULT },
        { "cancel", CON_POLICY_CANCEL },
        { "halt", CON_POLICY_HALT },
        { "resume", CON_POLICY_HALT },
        { "quarantine", CON_POLICY_QUARANTINE },
        { "release", CON_POLICY_QUARANTINE },
        { "kill-sessions", CON_POLICY_QUARANTINE },
};

const char *con_policy_verb_to_string(ConPolicyVerb v) {
        return v >= 0 && v < _CON_POLICY_VERB_MAX ? verb_table[v].name : NULL;
}

ConPolicyVerb con_policy_verb_from_string(const char *s) {
        for (int i = 0; s && i < _CON_POLICY_VERB_MAX; i++)
                if (streq(verb_table[i].name, s))
                        return (ConPolicyVerb) i;
        return _CON_POLICY_VERB_INVALID;
}

const char *con_policy_verb_action(ConPolicyVerb v) {
        return v >= 0 && v < _CON_POLICY_VERB_MAX ? verb_table[v].action : NULL;
}

ConPolicyVerb con_policy_verb_from_action(const char *action_id) {
        for (int i = 0; action_id && i < _CON_POLICY_VERB_MAX; i++)
                if (streq(verb_table[i].action, action_id))
                        return (ConPolicyVerb) i;
        return _CON_POLICY_VERB_INVALID;
}

bool con_policy_verb_per_agent(ConPolicyVerb v) {
        return v >= 0 && v < _CON_POLICY_VERB_MAX && verb_table[v].per_agent;
}

ConPolicyVerb con_policy_verb_of_method(const char *method_verb) {
        for (size_t i = 0; method_verb && i < ELEMENTSOF(method_table); i++)
                if (streq(method_table[i].method, method_verb))
                        return method_table[i].verb;
        return _CON_POLICY_VERB_INVALID;
}

int con_principal_parse(const char *s, ConPrincipalKind *ret_kind, const char **ret_name) {
        ConPrincipalKind kind;
        const char *name;

        if (!s)
                return -EINVAL;
        const char *at = strrchr(s, '@');
        if (at) {
                /* A principal of another host: USER@HOST, the host as mesh.host names it there. */
                _cleanup_free_ char *who = strndup(s, (size_t) (at - s));
                if (!who)
                        return -ENOMEM;
                if (!con_mesh_host_valid(at + 1))
                        return -EINVAL;
                if ((name = startswith(s, "user:"))) {
                        kind = CON_PRINCIPAL_REMOTE_USER;
                        if (!con_unix_name_valid(who + strlen("user:")) || streq(who + strlen("user:"), "root"))
                                return -EINVAL;
                } else {
                        kind = CON_PRINCIPAL_REMOTE_AGENT;
                        name = s;
                        if (!con_agent_name_valid(who))
                                return -EINVAL;
                }
        } else if (streq(s, "root")) {
                kind = CON_PRINCIPAL_ROOT;
                name = NULL;
        } else if ((name = startswith(s, "group:"))) {
                kind = CON_PRINCIPAL_GROUP;
                if (!con_unix_name_valid(name))
                        return -EINVAL;
        } else if ((name = startswith(s, "user:"))) {
                kind = CON_PRINCIPAL_USER;
                /* root is its own principal: polkit and ACLs cannot restrict it. */
                if (!con_unix_name_valid(name) || streq(name, "root"))
                        return -EINVAL;
        } else {
                kind = CON_PRINCIPAL_AGENT;
                name = s;
                if (!con_agent_name_valid(name))
                        return -EINVAL;
        }
        if (ret_kind)
                *ret_kind = kind;
        if (ret_name)
                *ret_name = name;
        return 0;
}

bool con_remote_sender_valid(const char *s) {
        const char *at = s ? strrchr(s, '@') : NULL;
        if (!at || !con_mesh_host_valid(at + 1))
                return false;
        _cleanup_free_ char *user = strndup(s, (size_t) (at - s));
        return user && con_unix_name_valid(user);
}
