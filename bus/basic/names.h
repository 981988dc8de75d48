/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Agent names and everything derived from them: Linux user, bus name, object paths.
 * An agent name is ^[a-z][a-z0-9-]{0,28}$, without a trailing hyphen or two hyphens in a
 * row (both would make two names map to one bus name), and not a reserved name.
 * The cap is 29, not 31: the user is "a-<name>" and systemd (User=) and utmp refuse user
 * names longer than 31 characters. */

#define CON_AGENT_NAME_MAX 29

/* A Linux user or group name as the fabric accepts it, in the config (submitters_group, the
 * policy's user: and group: principals) and in what con bootstrap writes: ^[a-z_][a-z0-9_-]*$,
 * at most 31 characters. Not useradd's 32: con bootstrap creates users and groups with
 * systemd-sysusers, which refuses names longer than UT_NAMESIZE - 1 = 31 (as User= does: the name
 * must fit utmp with its NUL), so a longer name would pass the config and fail the bootstrap. */
#define CON_UNIX_NAME_MAX 31
bool con_unix_name_valid(const char *s);
#define CON_BUS_PREFIX "org.conspiracy."
#define CON_AGENT_PATH "/org/conspiracy/Agent"
#define CON_AGENT_INTERFACE "org.conspiracy.Agent1"
#define CON_ROUTER_BUS_NAME "org.conspiracy.Router"
#define CON_ROUTER_PATH "/org/conspiracy/Router"
#define CON_ROUTER_INTERFACE "org.conspiracy.Router1"
#define CON_MODELS_BUS_NAME "org.conspiracy.Models"
#define CON_MODELS_PATH "/org/conspiracy/Models"
#define CON_MODELS_INTERFACE "org.conspiracy.Models1"
#define CON_CONTRACTS_BUS_NAME "org.conspiracy.Contracts"
#define CON_CONTRACTS_PATH "/org/conspiracy/Contracts"
#define CON_CONTRACTS_INTERFACE "org.conspiracy.Contracts1"
#define CON_PROVISIONER_BUS_NAME "org.conspiracy.Provisioner"
#define CON_PROVISIONER_PATH "/org/conspiracy/Provisioner"
#define CON_PROVISIONER_INTERFACE "org.conspiracy.Provisioner1"
#define CON_MESH_BUS_NAME "org.conspiracy.Mesh"
#define CON_MESH_PATH "/org/conspiracy/Mesh"
#define CON_MESH_INTERFACE "org.conspiracy.Mesh1"
#define CON_MESH_USER "con-mesh"     /* the mesh gateway's system user (docs/MULTIHOST.md) */
#define CON_USER_PREFIX "a-"

typedef enum ConNameProblem {
        CON_NAME_OK,
        CON_NAME_EMPTY,
        CON_NAME_TOO_LONG,
        CON_NAME_BAD_FIRST_CHAR,
        CON_NAME_BAD_CHAR,
        CON_NAME_BAD_HYPHEN,
        CON_NAME_RESERVED,
} ConNameProblem;

/* Returns CON_NAME_OK or why the name is refused. */
ConNameProblem con_agent_name_check(const char *name);
static inline bool con_agent_name_valid(const char *name) {
        return con_agent_name_check(name) == CON_NAME_OK;
}
/* A sentence for users: what is wrong and what is allowed. Never NULL. */
const char *con_name_problem_to_string(ConNameProblem p);
/* The NULL-terminated list of reserved names. */
const char * const *con_reserved_names(void);

/* code-reviewer -> CodeReviewer. Returns -EINVAL for an invalid name. */
int con_agent_camel(const char *name, char **ret);
/* code-reviewer -> org.conspiracy.CodeReviewer */
int con_agent_bus_name(const char *name, char **ret);
/* org.conspiracy.CodeReviewer -> code-reviewer, -EINVAL when not an agent bus name. */
int con_agent_from_bus_name(const char *bus_name, char **ret);
/* code-reviewer -> a-code-reviewer */
int con_agent_user(const char *name, char **ret);
/* a-code-reviewer -> code-reviewer; -EINVAL when the user is not an agent user. */
int con_agent_from_user(const char *user, char **ret);

/* Identifiers safe to use as a path component and in generated files: roles, groups, scopes,
 * skill names, group names. ^[a-z0-9][a-z0-9._-]{0,63}$ and not "." or "..". */
bool con_identifier_valid(const char *s);

/* The name of a host in a mesh of several hosts (mesh.host in con.yaml, docs/MULTIHOST.md):
 * ^[a-z][a-z0-9-]{0,62}$ without a trailing hyphen. It is one token of a NATS subject
 * (con.task.<host>) and the part after '@' of a remote principal ("concierge@host-a"). */
#define CON_MESH_HOST_MAX 63
bool con_mesh_host_valid(const char *s);
/* "AGENT@HOST" (an agent of another host): 0 with both parts, -EINVAL when either is not valid
 * (con_agent_name_valid, con_mesh_host_valid), -ENOMEM. */
int con_mesh_target_split(const char *to, char **ret_agent, char **ret_host);
/* The same check, without the copies. */
bool con_mesh_target_valid(const char *to);
