/* SPDX-License-Identifier: MIT */
/* Who may call what: the caller's uid, the verbs, polkit or the declared policy (docs/AGENT.md,
 * "Who may do what"). */
#include "agent-service.h"
#include "con-paths.h"
#include "errors.h"
#include "macro.h"
#include "strv.h"
#include "user-util.h"

void agent_caller_done(AgentCaller *a) {
        free(a->name);
        a->name = NULL;
}

/* ---- authorization ---- */

static const struct {
        const char *verb;       /* the polkit detail "verb" */
        ConPolicyVerb policy;
        const char *phrase;     /* "user 'x' may not PHRASE agent 'y'" */
} verb_table[_AGENT_VERB_MAX] = {
        [AGENT_VERB_SUBMIT]        = { "submit",        CON_POLICY_TASK,        "submit tasks to" },
        [AGENT_VERB_DELIVER]       = { "deliver",       CON_POLICY_TASK,        "deliver tasks to" },
        [AGENT_VERB_GET_RESULT]    = { "get-result",    CON_POLICY_READ_RESULT, "read other users' results on" },
        [AGENT_VERB_LIST_TASKS]    = { "list-tasks",    CON_POLICY_READ_RESULT, "list other users' tasks on" },
        [AGENT_VERB_CANCEL]        = { "cancel",        CON_POLICY_CANCEL,      "cancel other users' tasks on" },
        [AGENT_VERB_HALT]          = { "halt",          CON_POLICY_HALT,        "halt" },
        [AGENT_VERB_RESUME]        = { "resume",        CON_POLICY_HALT,        "resume" },
        [AGENT_VERB_QUARANTINE]    = { "quarantine",    CON_POLICY_QUARANTINE,  "quarantine" },
        [AGENT_VERB_KILL_SESSIONS] = { "kill-sessions", CON_POLICY_QUARANTINE,  "kill the sessions of" },
};

const char *agent_verb_to_string(AgentVerb v) {
        return v >= 0 && v < _AGENT_VERB_MAX ? verb_table[v].verb : NULL;
}

ConPolicyVerb agent_verb_policy(AgentVerb v) {
        return v >= 0 && v < _AGENT_VERB_MAX ? verb_table[v].policy : _CON_POLICY_VERB_INVALID;
}

/* The one decision about root: polkit says yes to uid 0 before any rule runs, so the declared
 * policy decides (the default grants root every verb on every agent). */
static bool root_allowed(const AgentContext *c, ConPolicyVerb v) {
        return c->policy && con_policy_allows(c->policy, "root", NULL, v, c->agent->name);
}

static int authz_root_check(sd_bus_message *m, const char *action, char * const *details, void *userdata) {
        ConPolicyVerb v = con_policy_verb_from_action(action);
        if (v < 0)
                return -EINVAL;
        return root_allowed(userdata, v);
}

/* The declared policy, in-process: for connections without polkit (peer-to-peer in tests). The
 * caller's groups as the user database states them, the way polkit's subject.isInGroup() sees them
 * (the kernel vouches for the uid; sd-bus 252 does not pass on the peer's groups). */
static int policy_check(AgentContext *c, uid_t uid, const char *name, ConPolicyVerb v, sd_bus_error *error) {
        _cleanup_strv_free_ char **groups = NULL;
        gid_t gid;
        if (uid == 0)
                return root_allowed(c, v) ? 1 :
                        con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                           "Access denied: the policy does not grant root '%s' on agent '%s'",
                                           con_policy_verb_to_string(v), c->agent->name);
        int r = con_user_by_uid(uid, NULL, &gid);
        if (r >= 0)
                r = con_user_group_names(name, gid, &groups);
        if (r < 0 && r != -ESRCH)
                return r;
        if (c->policy && con_policy_allows(c->policy, name, groups, v, c->agent->name))
                return 1;
        return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED, "the policy grants no '%s' on '%s' to this user "
                                  "or its groups", con_policy_verb_to_string(v), c->agent->name);
}

int agent_authorize(AgentContext *c, sd_bus_message *m, AgentVerb verb, const AgentTask *t,
                    AgentCaller *ret_caller, sd_bus_error *error) {
        _cleanup_free_ char *name = NULL;
        uid_t uid = (uid_t) -1;
        int r;

        if (verb < 0 || verb >= _AGENT_VERB_MAX)
                return -EINVAL;
        /* Who is calling: the bus driver's answer, asked asynchronously (0: parked). */
        r = con_authz_caller_uid(c->authz, m, &uid, error);
        if (r <= 0)
                return r;
        r = con_uid_to_name(uid, &name);
        if (r < 0)
                return r;

        bool need = true, all = false;
        /* A submitter may always read and cancel its own tasks. */
        if ((verb == AGENT_VERB_GET_RESULT || verb == AGENT_VERB_CANCEL) && t && t->sender_uid == uid)
                need = false;
        if (need && c->no_authz) {
                need = false;
                all = true;
        }
        if (need) {
                ConPolicyVerb pv = verb_table[verb].policy;
                const char *sender = sd_bus_message_get_sender(m);
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                if (c->authz && sender && sender[0] == ':') {
                        const char *details[] = { "agent", c->agent->name, "verb", verb_table[verb].verb, NULL };
                        r = con_authz_verify(c->authz, m, con_policy_verb_action(pv), (char * const *) details, &e);
                        if (r == 0)
                                return 0;
                } else
                        r = policy_check(c, uid, name, pv, &e);
                if (r == -ENOMEM)
                        return r;
                if (verb == AGENT_VERB_LIST_TASKS)
                        /* Not granted (or not decidable): the caller's own tasks only. */
                        all = r > 0;
                else if (r < 0) {
                        if (uid == 0 || !sd_bus_error_is_set(&e))
                                return sd_bus_error_is_set(&e) ? sd_bus_error_set(error, e.name, e.message) : r;
                        return con_bus_error_setf(error, e.name,
                                                  "Access denied: user '%s' (uid %u) may not %s agent '%s': %s "
                                                  "(grants: the policy: section of %s, see con policy show)",
                                                  name, (unsigned) uid, verb_table[verb].phrase, c->agent->name,
                                                  e.message ?: "refused", c->config->path ?: CON_CONFIG_PATH);
                } else
                        all = true;
        }
        if (ret_caller) {
                ret_caller->uid = uid;
                ret_caller->all_tasks = all;
                ret_caller->name = TAKE_PTR(name);
        }
        return 1;
}

int agent_context_enable_authz(AgentContext *c, sd_bus *bus) {
        /* Also with --no-authz: it says who is calling (that never asks polkit). */
        ConAuthzOptions o = {
                .root_policy = CON_AUTHZ_ROOT_ASK_TABLE,
                .root_check = authz_root_check,
                .userdata = c,
        };
        return con_authz_new(bus, c->event, &o, &c->authz);
}
