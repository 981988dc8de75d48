/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/* What CommissionAgent (con-provisiond, docs/PROVISIONING.md) is asked for, and the drop-in it
 * becomes. The spec comes from a caller (hostile by assumption): every string is written into the
 * drop-in by libyaml's emitter as a quoted scalar, so no value can add a key, and the drop-in is
 * then read back by the one config loader, which checks every value as it checks con.yaml.
 * Library code: no logging, errors come back as text. */

#define CON_AGENT_SPEC_INSTRUCTIONS_MAX (64U * 1024U)   /* bytes of the instructions layer */
#define CON_AGENT_SPEC_LIST_MAX 64U                     /* entries of each list */
#define CON_AGENT_SPEC_STRING_MAX 4096U                 /* bytes of any other string */

typedef struct ConAgentSpec {
        char *name;
        char *tier;             /* officer | operator | worker; NULL: none */
        char *mode;             /* on-demand (default) | always | cron */
        char *cron;
        char *cron_task;
        char **roles;
        char *instructions;     /* the agent's own AGENTS.md layer: file content only */
        char **may_task;        /* agents the new agent may task (policy grant, verb task) */
        char **tasked_by;       /* principals that may task it, besides the defaults (concierge, root) */
        char *runner;           /* picoclaw | claude | codex (exec: not through the API) */
        char *provider;
        char *model;
        char **network;         /* NULL: the default; { "none" }, { "gateway" } or allow-list entries */
} ConAgentSpec;

void con_agent_spec_done(ConAgentSpec *s);

/* The spec's own rules, before any config: a valid agent name (con_agent_name_check), not a
 * reserved one, sizes and counts within the limits above, UTF-8 without NUL. Returns 0 or -EINVAL
 * with *ret_error set. */
int con_agent_spec_check(const ConAgentSpec *s, char **ret_error);

/* The drop-in (con.yaml.d/NAME.yaml) for the spec: agents: [the agent] and policy.grants for
 * may_task and tasked_by. Returns 0 or -ENOMEM (-EINVAL when the emitter refuses a value). */
int con_agent_spec_to_yaml(const ConAgentSpec *s, char **ret);

/* A caller may grant only what it may do itself (root: anything). caller_user is the caller's Unix
 * user ("root", "a-sysadmin", "carol"), groups its group names; config is the configuration
 * with the new agent's drop-in (its network resolved). Checks: every agent in may_task is one the caller
 * may task; every principal in tasked_by is an agent that may already task all of them (so no
 * principal reaches further through the new agent); the new agent's resolved network is not
 * wider than the caller's own (an agent's network:; gateway for other users): none < gateway <
 * allow-list, whose entries must be the caller's too. Returns 0, -EPERM with *ret_error set, or -ENOMEM. */
int con_agent_spec_authorize(const ConAgentSpec *s, const ConConfig *config, const char *caller_user,
                             char * const *caller_groups, char **ret_error);
