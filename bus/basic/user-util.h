/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Users and groups from the system's user database (NSS: getpwuid_r, getgrouplist, getgrgid_r).
 * The one place the services and clients turn a uid into a name and a user into its groups. */

/* The user database's entry of uid: its name (ret_name may be NULL) and primary group (ret_gid may
 * be NULL). -ESRCH when uid has no entry, -ENOMEM. */
int con_user_by_uid(uid_t uid, char **ret_name, gid_t *ret_gid);

/* uid's user name, or its decimal uid ("1234") when the uid has no name: the one fall-back, the
 * one org.conspiracy.Agent1 promises for a task's sender (interfaces/org.conspiracy.Agent1.xml).
 * 0, or -ENOMEM. */
int con_uid_to_name(uid_t uid, char **ret);

/* The groups of user whose primary group is gid, as the user database states them (the way polkit's
 * subject.isInGroup() and initgroups() see them): gid first, then the supplementary groups.
 * -E2BIG beyond 65536 groups, -ENOMEM. */
int con_user_gids(const char *user, gid_t gid, gid_t **ret, size_t *ret_n);

/* The names of those groups, each once; groups without a name are left out. */
int con_user_group_names(const char *user, gid_t gid, char ***ret);
