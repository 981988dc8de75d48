/* SPDX-License-Identifier: MIT */
#pragma once

#include "config.h"

/* `con policy check`: reads the three doors as they are on this machine and compares them with
 * what the config's policy generates:
 *   - the file door: the named entries of the access ACLs of /srv/con/inbox and of every agent's
 *     folder and inbox (effective permissions, i.e. masked), against con_policy_acl_entries();
 *   - the bus doors: the polkit rules and actions and the D-Bus policy file, byte for byte against
 *     con_platform_render().
 * Returns 0 with *ret_drift = one line per difference ("PATH: ..."; NULL when everything
 * matches), or a negative errno with *ret_error when the check itself cannot run (the policy
 * cannot be built, the user database cannot be read). Library code: no logging. */
int con_policy_check(const ConConfig *c, char ***ret_drift, char **ret_error);
