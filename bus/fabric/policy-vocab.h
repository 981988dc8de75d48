/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>

/* The policy's vocabulary (docs/POLICY.md): the verbs a principal may be granted on an agent, their
 * polkit action ids and the method-level verbs they guard, and the syntax of principals. Without
 * dependencies, so the config reader can check a policy: section without depending on the policy
 * that is built from the config. */

typedef enum ConPolicyVerb {
        CON_POLICY_TASK,                /* Submit, Deliver, a file in the agent's inbox */
        CON_POLICY_READ_RESULT,         /* GetResult, ListTasks of any task of the agent (own: always) */
        CON_POLICY_CANCEL,              /* Cancel any task of the agent (own: always) */
        CON_POLICY_HALT,                /* Halt, Resume */
        CON_POLICY_QUARANTINE,          /* Quarantine, Release, KillSessions */
        CON_POLICY_COMMISSION,          /* create or retire agents: not about one agent */
        CON_POLICY_CONTRACTS_ADMIN,     /* administer health contracts: not about one agent */
        _CON_POLICY_VERB_MAX,
        _CON_POLICY_VERB_INVALID = -22,
} ConPolicyVerb;

const char *con_policy_verb_to_string(ConPolicyVerb v);        /* "task", "read-result", ... */
ConPolicyVerb con_policy_verb_from_string(const char *s);
/* The polkit action id, e.g. "org.conspiracy.agent.task". */
const char *con_policy_verb_action(ConPolicyVerb v);
/* The verb of an action id, or _CON_POLICY_VERB_INVALID. */
ConPolicyVerb con_policy_verb_from_action(const char *action_id);
/* Whether the verb is about one agent (the polkit detail "agent"); false for commission and
 * contracts-admin. */
bool con_policy_verb_per_agent(ConPolicyVerb v);
/* The verb guarding a method-level verb (the polkit detail "verb"): "submit" and "deliver" give
 * task, "get-result" and "list-tasks" read-result, "cancel" cancel, "halt" and "resume" halt,
 * "quarantine", "release" and "kill-sessions" quarantine. _CON_POLICY_VERB_INVALID otherwise. */
ConPolicyVerb con_policy_verb_of_method(const char *method_verb);
/* "task, read-result, cancel, halt, quarantine, commission or contracts-admin" */
#define CON_POLICY_VERBS_ALLOWED "task, read-result, cancel, halt, quarantine, commission or contracts-admin"

typedef enum ConPrincipalKind {
        CON_PRINCIPAL_AGENT,    /* "concierge": the user a-concierge */
        CON_PRINCIPAL_GROUP,    /* "group:con": members of a Unix group */
        CON_PRINCIPAL_USER,     /* "user:alice": a Unix user */
        CON_PRINCIPAL_ROOT,     /* "root": uid 0; decided by the services, never by polkit or ACLs */
        CON_PRINCIPAL_REMOTE_AGENT, /* "concierge@host-a": agent concierge (user a-concierge) of another
                                     * host of the mesh, as that host's gateway saw it; decided by the
                                     * agent services from the declared policy (docs/MULTIHOST.md) */
        CON_PRINCIPAL_REMOTE_USER,  /* "user:alice@host-a": the Unix user alice of another host */
        _CON_PRINCIPAL_KIND_MAX,
        _CON_PRINCIPAL_KIND_INVALID = -22,
} ConPrincipalKind;

/* Splits a principal as written in the config ("group:con" gives GROUP and "con"). Checks the
 * syntax only (agent name, Linux user or group name, mesh host name); whether the agent exists is
 * the caller's business. -EINVAL when malformed. ret_name points into s; NULL for root. Remote
 * principals keep their host: "concierge@host-a" gives REMOTE_AGENT and "concierge@host-a",
 * "user:alice@host-a" REMOTE_USER and "alice@host-a". */
int con_principal_parse(const char *s, ConPrincipalKind *ret_kind, const char **ret_name);
/* A Linux user or group name: con_unix_name_valid() (names.h). */
/* The sender of a task from another host as its gateway names it: USER@HOST, the Unix user name
 * the origin's gateway saw in the caller's bus credentials ("a-concierge@host-a", "alice@host-a"). */
bool con_remote_sender_valid(const char *s);
static inline bool con_principal_is_remote(ConPrincipalKind k) {
        return k == CON_PRINCIPAL_REMOTE_AGENT || k == CON_PRINCIPAL_REMOTE_USER;
}
