/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <sys/stat.h>

/* The halt and quarantine markers: the one file protocol between the contract service, which
 * writes and removes them, and the agent service, which reads and watches them. Below the state
 * folder (CON_SRV_DIR/state):
 *
 *   halt                   every agent is halted
 *   halt-workers           every worker-tier agent is halted
 *   quarantine/NAME        agent NAME is quarantined
 *
 * Each marker is a folder holding the file "reason" (its first line counts). The markers survive
 * restarts and reboots.
 *
 * One trust rule, for both sides: a marker counts only when it is a folder owned by root or by
 * the reading process's own user (the services in tests) that nobody else may write to, and
 * never through a symbolic link (every path component is opened with O_NOFOLLOW). A folder cannot
 * be hard-linked, so an agent that may hard-link root's files (fs.protected_hardlinks=0) cannot
 * make a genuine marker read as absent (it could with the marker files of earlier versions, which
 * counted only with one link). A file an agent user planted, a symlink, a FIFO or a hard link
 * count as absent, so nobody but the contract service can halt or quarantine agents this way.
 * A marker file of an earlier version (a regular file with one link, of that owner) still counts
 * until con_marker_upgrade() rewrites it.
 *
 * Library code: no logging. */

#define CON_MARKER_REASON_MAX 1024U     /* bytes of the reason that are read */

typedef enum ConMarkerKind {
        CON_MARKER_HALT,
        CON_MARKER_HALT_WORKERS,
        CON_MARKER_QUARANTINE,
        _CON_MARKER_KIND_MAX,
} ConMarkerKind;

/* The path of a marker; agent is the agent name for CON_MARKER_QUARANTINE (-EINVAL when it is not
 * a valid agent name), ignored otherwise. */
int con_marker_path(const char *state_dir, ConMarkerKind kind, const char *agent, char **ret);

/* The trust rule above, on the result of fstat()/fstatat(AT_SYMLINK_NOFOLLOW). */
bool con_marker_trusted(const struct stat *st);

/* 1 when the marker is present and trusted, with *ret_reason (may be NULL) set to its first line
 * as valid text without control characters ("no reason given" when empty); 0 when absent or
 * not trusted; -errno on other errors. */
int con_marker_read(const char *state_dir, ConMarkerKind kind, const char *agent, char **ret_reason);

/* Writes the marker atomically (a folder 0755 with "reason" 0644, the caller's owner), creating
 * the state folder and quarantine/ (0755) when missing; whatever was at its place is swapped out
 * in the same step and removed. reason must not be NULL. */
int con_marker_write(const char *state_dir, ConMarkerKind kind, const char *agent, const char *reason);

/* Removes the marker, whatever is there (a planted file or symlink too). 0 also when absent. */
int con_marker_remove(const char *state_dir, ConMarkerKind kind, const char *agent);

/* Rewrites every trusted marker file of an earlier version as a marker folder (same reason). */
int con_marker_upgrade(const char *state_dir);

/* The sorted names of the agents with a trusted quarantine marker (an empty vector when there is
 * no quarantine/ folder). Other files there (the activation files moved aside, "NAME.service")
 * are not markers. */
int con_marker_list_quarantined(const char *state_dir, char ***ret);

/* Which halt is in force: "all", "workers" or "" (static strings). */
int con_marker_halted(const char *state_dir, const char **ret);
