/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>

/* The kernel's link protections, which the halt and quarantine markers rely on
 * (docs/SECURITY.md, "Markers"). A marker is trusted only with one link (bus/fabric/markers.c),
 * so that a hard link planted in the state folder does not count. Without
 * fs.protected_hardlinks, an agent could hard-link a root-owned marker into its own workspace
 * (it may read it): the marker then has two links and the services would read it as absent.
 * Debian sets it to 1 (/usr/lib/sysctl.d/99-protect-links.conf); `con bootstrap` makes sure
 * and `con policy check` (and the drift contracts) report it at another value. (The project
 * opens every path an agent can touch with O_NOFOLLOW, so it does not rely on
 * fs.protected_symlinks.)
 *
 * proc_sys is the folder the settings are read from and written to: "/proc/sys" (tests pass
 * another). Library code: no logging. */

#define CON_PROC_SYS "/proc/sys"

/* Appends "kernel: fs.protected_hardlinks is 0, want 1 (...)" lines to *drift. A setting that
 * cannot be read is drift too (fail closed). */
int con_linkguard_check(const char *proc_sys, char ***drift);

/* Sets the setting when it is not 1 (unless dry_run). *ret_change (NULL when nothing differs)
 * says what was (or would be) set; on failure *ret_error says which setting and why. */
int con_linkguard_sync(const char *proc_sys, bool dry_run, char **ret_change, char **ret_error);
