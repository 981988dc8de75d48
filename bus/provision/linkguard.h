/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>

/* The kernel's hard-link protection, defense in depth for the halt and quarantine markers
 * (docs/BOOTSTRAP.md, "Kernel link protection"). Markers are root-owned folders, which cannot
 * be hard-linked; marker files of earlier versions were trusted only with one link, and without
 * fs.protected_hardlinks an agent could hard-link such a file into its own workspace (it may
 * read it), giving it two links, so the services read it as absent, until con-contractd
 * rewrites it as a folder. Debian sets it to 1 (/usr/lib/sysctl.d/99-protect-links.conf);
 * `con bootstrap` makes sure and `con policy check` (and the drift contracts) report it at
 * another value. (The project opens every path an agent can touch with O_NOFOLLOW, so it does
 * not rely on fs.protected_symlinks.)
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
