/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/* The provisioning engine behind `con bootstrap`: from a config, the users, groups, directories,
 * ACLs, AGENTS.md files, skills, contracts and platform files of a ConspiracyOS system.
 *
 * con_provision_new() selects and loads the config, validates it and renders everything that
 * will be written (AGENTS.md, platform files, the user database changes) into a list of
 * actions. It touches nothing, so a bad config fails before any change. con_provision_run()
 * then checks each action against the system (content byte for byte, owner, group, mode, ACL)
 * and applies only what differs; a second run changes nothing. No symlink is ever followed:
 * a symlink where the engine writes is an error.
 *
 * Library code: nothing is printed; changes are reported through a callback, warnings and
 * errors come back as strings. */

/* The access policy comes from the config (policy: section and the original's defaults, see
 * policy.h and docs/POLICY.md); it drives the inbox ACLs here and the polkit rules in platform.c. */

typedef struct ConProvisionOptions {
        const char *config_path;        /* --config FILE: provisioned from, and installed as /etc/con/con.yaml */
        const char *profile;            /* --profile NAME: installed to /etc/con */
        const char *profiles_dir;       /* NULL = CON_PROFILESDIR */
        bool force;                     /* overwrite /etc/con files that differ from the profile */
        bool dry_run;                   /* do not take the user database lock */
        const char *root;               /* NULL or "/": this system; a folder: provision the system below it
                                         * (its etc/passwd, etc/group, ...; the unit test) */
        unsigned fail_after;            /* tests only: fail before the Nth change (0: never), to check
                                         * that a failed run is rolled back */
        /* The provisioner (con-provisiond): a drop-in added to /etc/con/con.yaml.d as the run's last
         * change (rolled back with the rest), or one left out of the config provisioned from. */
        const char *extra_dropin_name;  /* a file name, con_config_dropin_name_valid() */
        const char *extra_dropin_text;
        const char *omit_dropin;
        /* con bootstrap: with a mesh: section, make this host's TLS key and certificate when they
         * are missing (issued here when the mesh CA's key is in CON_MESH_CA_DIR, else a signing
         * request: con_provision_mesh_request()) and check an existing certificate (its host name,
         * its CA, its key, its dates): docs/MULTIHOST.md, "Setting it up". */
        bool mesh_credentials;
} ConProvisionOptions;

typedef struct ConProvision ConProvision;

/* Returns 0, or a negative errno with *ret_error set to a message for users (for config
 * errors: "FILE:LINE:COLUMN: KEY: MESSAGE"). -ENOEXEC means the config is invalid. */
int con_provision_new(const ConProvisionOptions *o, ConProvision **ret, char **ret_error);
ConProvision *con_provision_free(ConProvision *p);
static inline void con_provision_freep(ConProvision **p) {
        con_provision_free(*p);
}

/* Which config was chosen and why, for the CLI's first line. */
const char *con_provision_config_path(const ConProvision *p);
/* The profile being installed into /etc/con, or NULL. */
const char *con_provision_profile_dir(const ConProvision *p);
/* The loaded configuration (for the network door, netdoor.h, applied after con_provision_run()). */
const ConConfig *con_provision_config(const ConProvision *p);
/* Non-fatal findings (e.g. an agent without any AGENTS.md layer). */
char * const *con_provision_warnings(const ConProvision *p);
/* With mesh_credentials and no certificate for this host and no CA here: what to run on the
 * CA's host (the run writes this host's key and signing request), else NULL. */
const char *con_provision_mesh_request(const ConProvision *p);

/* Called once per change, before it is applied, with a line like "create user a-concierge
 * (uid 998)" or "set acl /srv/con/agents/sysadmin/inbox". */
typedef void (*ConProvisionReportFn)(const char *change, void *userdata);

/* Checks every action and, unless dry_run, applies what differs. Stops at the first failure
 * (*ret_error says which path and why) and rolls back: files it wrote get their old content,
 * owner and mode back, paths it created are removed, users and groups it created are removed
 * from the user database (owner, mode and ACL changes of folders that existed stay).
 * ret_checked/ret_changed count actions. */
int con_provision_run(ConProvision *p, bool dry_run, ConProvisionReportFn report, void *userdata,
                      unsigned *ret_checked, unsigned *ret_changed, char **ret_error);
