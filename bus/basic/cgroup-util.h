/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* cgroup v2 helpers for session containment (docs/AGENT.md, "Sessions"). Library code: negative
 * errno, no logging. Every function takes paths or directory fds of the cgroup2 file system. */

/* The cgroup2 directory of the calling process: the cgroup2 mount point from
 * /proc/self/mountinfo (unified at /sys/fs/cgroup or the hybrid /sys/fs/cgroup/unified) joined
 * with the "0::" line of /proc/self/cgroup. -ENOMEDIUM when no cgroup2 is mounted. The
 * mountinfo and cgroup texts are parameters so the parser can be tested and fuzzed. */
int con_cgroup_parse_own(const char *mountinfo, const char *proc_cgroup, char **ret);
int con_cgroup_own_dir(char **ret);

/* Creates a fresh child cgroup name below parent_fd (mkdirat, never an existing one: -EEXIST)
 * and opens it. */
int con_cgroup_create(int parent_fd, const char *name, int *ret_fd);

/* Kills every process in the cgroup: "1" into cgroup.kill, or, on kernels without it, SIGKILL to
 * every pid in cgroup.procs until it reads empty (bounded). */
int con_cgroup_kill(int cg_fd);

/* 1 when processes are in the cgroup or its children (cgroup.events "populated 1"), 0 when not. */
int con_cgroup_populated(int cg_fd);

/* Opens cgroup.events for EPOLLPRI notification of "populated" changes. Each notification must
 * be answered by reading it again (con_cgroup_events_populated()), or poll keeps reporting it. */
int con_cgroup_open_events(int cg_fd);
int con_cgroup_events_populated(int events_fd);

/* Kills and removes every child cgroup of parent_fd whose name starts with prefix: the sessions of
 * a previous instance of the service that died without ending them (SIGKILL, a crash). Waits up to
 * timeout_usec in all for the killed processes to leave. Returns how many were removed, or the
 * first error (-EBUSY: a cgroup still had processes at the deadline); the others are still tried. */
int con_cgroup_reap_children(int parent_fd, const char *prefix, uint64_t timeout_usec);
