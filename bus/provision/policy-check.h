/* SPDX-License-Identifier: MIT */
#pragma once

#include "con-paths.h"
#include "config.h"

/* The one drift checker, behind `con policy check`, the contracts' `drift:` checks (CON-POL-001,
 * CON-POL-002, the skills check) and `con bootstrap --dry-run`: a provisioning dry run of the
 * config at config_path (con_provision_run() with dry_run), i.e. everything `con bootstrap` would
 * change: owner, mode, access and default ACL, content, missing files, users and groups.
 * Returns 0 with *ret_changes = the changes (lines like "set mode /srv/con/agents/coder/workspace
 * (0700)"; NULL when none) whose path starts with one of paths (all when paths is NULL), leaving
 * out the activation files of the agents in quarantined (moved aside on purpose by a quarantine).
 * A negative errno with *ret_error when the dry run cannot run. */
int con_drift_scan(const char *config_path, char * const *paths, char * const *quarantined, char ***ret_changes,
                   char **ret_error);

/* The file door as the drift checker sees it: what CON-POL-001 watches. */
#define CON_FILE_DOOR_PATHS { (char *) CON_SRV_DIR "/inbox", (char *) CON_SRV_DIR "/agents", NULL }

/* `con policy check`: reads the three doors as they are on this machine and compares them with
 * what the config's policy generates:
 *   - the file door: the named entries of the access ACLs of /srv/con/inbox and of every agent's
 *     folder and inbox (effective permissions, i.e. masked), against con_policy_acl_entries(),
 *     with a line per entry; then con_drift_scan() over CON_FILE_DOOR_PATHS (owner, mode and ACLs
 *     of every folder below, e.g. a workspace opened with chmod o+rx), for the paths the first
 *     part did not name, so this and CON-POL-001 report the same drift;
 *   - the bus doors: the polkit rules and actions and the D-Bus policy file, byte for byte against
 *     con_platform_render().
 * Returns 0 with *ret_drift = one line per difference ("PATH: ..."; NULL when everything
 * matches), or a negative errno with *ret_error when the check itself cannot run (the policy
 * cannot be built, the user database cannot be read). Library code: no logging. */
int con_policy_check(const ConConfig *c, char ***ret_drift, char **ret_error);

/* One generated file against what the config generates: appends "PATH: missing; ...", "PATH: line
 * N is '...' where the config generates '...' ..." or "PATH: cannot be read: ..." to *drift. */
int con_generated_file_check(const char *path, const char *want, char ***drift);
