/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* Retiring an agent (con-provisiond's DecommissionAgent, docs/PROVISIONING.md), after `con
 * bootstrap --remove-dropin` provisioned the machine without it: its folder
 * /srv/con/agents/NAME is moved to /srv/con/archive/NAME-TIMESTAMP (archive) or removed, its home
 * /home/a-NAME is removed, and the user a-NAME leaves the user database (with its group
 * memberships). No symlink is followed: trees are removed with unlinkat() below descriptors
 * opened O_NOFOLLOW. Library code: nothing is printed. */

#define CON_ARCHIVE_DIR_NAME "archive"  /* below /srv/con: root 0700 */

typedef struct ConRetireOptions {
        const char *root;               /* NULL or "/": this system; a folder: the system below it (tests) */
        const char *name;               /* the agent, a valid agent name */
        bool archive;
        uint64_t now_usec;              /* realtime, names the archive */
} ConRetireOptions;

/* Returns 0 with *ret_archive the archive's path (NULL without archive), or a negative errno with
 * *ret_error saying what failed. Steps already done stay done (run it again to finish). */
int con_retire_agent(const ConRetireOptions *o, char **ret_archive, char **ret_error);

/* Removes the tree NAME below dirfd (a file, or a folder and everything in it) without following
 * symlinks. 0, also when it does not exist; negative errno. */
int con_rm_tree_at(int dirfd, const char *name);
