/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgroup-util.h"
#include "macro.h"
#include "test-util.h"

static void test_parse(void) {
        char *d = NULL;
        /* The hybrid layout of this project's CI machine. */
        g_assert_cmpint(con_cgroup_parse_own(
                "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
                "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n"
                "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
                "9:name=systemd:/\n0::/\n", &d), ==, 0);
        g_assert_cmpstr(d, ==, "/sys/fs/cgroup/unified");
        free(d);
        /* Unified, under systemd: the service's own cgroup. */
        g_assert_cmpint(con_cgroup_parse_own("30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n",
                                             "0::/system.slice/con-agent@concierge.service\n", &d), ==, 0);
        g_assert_cmpstr(d, ==, "/sys/fs/cgroup/system.slice/con-agent@concierge.service");
        free(d);
        /* A mount of a subtree (a container). */
        g_assert_cmpint(con_cgroup_parse_own("30 23 0:26 /lxc/c1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
                                             "0::/lxc/c1/init.scope\n", &d), ==, 0);
        g_assert_cmpstr(d, ==, "/sys/fs/cgroup/init.scope");
        free(d);
        d = NULL;
        g_assert_cmpint(con_cgroup_parse_own("30 23 0:26 /lxc/c1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
                                             "0::/other\n", &d), ==, -ENOMEDIUM);
        /* No cgroup2 at all (v1 only): the caller falls back to process groups. */
        g_assert_cmpint(con_cgroup_parse_own("40 31 0:37 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n",
                                             "8:pids:/\n", &d), ==, -ENOMEDIUM);
        g_assert_cmpint(con_cgroup_parse_own("41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
                                             "8:pids:/\n", &d), ==, -ENOMEDIUM);
        g_assert_cmpint(con_cgroup_parse_own("41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
                                             "0::/a/../b\n", &d), ==, -EINVAL);
        /* A mount point or root that is not an absolute path (found by fuzz-cgroup). */
        g_assert_cmpint(con_cgroup_parse_own("30 23 0:26 / (deleted)group rw,nosuid - cgroup2 rw,nsdelegate\n",
                                             "0::/\n", &d), ==, -ENOMEDIUM);
        g_assert_cmpint(con_cgroup_parse_own("30 23 0:26 x /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
                                             "0::/\n", &d), ==, -ENOMEDIUM);
        g_assert_cmpint(con_cgroup_parse_own("60 50 0:38 / /sys/..//fs/cgroup/u rw - cgroup2 cgroup2 rw\n",
                                             "0::/\n", &d), ==, -ENOMEDIUM);
        g_assert_null(d);
}

/* A fresh cgroup NAME-PID below this process's own, into *ret_top (the own one) and *ret_cg, or
 * false with the test reported as skipped (not root, no cgroup2, not allowed to create one). */
static bool test_cgroup(const char *name, int *ret_top, int *ret_cg, char ret_name[static 64]) {
        _cleanup_free_ char *own = NULL;
        if (geteuid() != 0 || con_cgroup_own_dir(&own) < 0) {
                con_test_skip("needs root and cgroup2");
                return false;
        }
        int top = open(own, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        g_assert_cmpint(top, >=, 0);
        (void) snprintf(ret_name, 64, "%s-%d", name, (int) getpid());
        int r = con_cgroup_create(top, ret_name, ret_cg);
        if (r == -EACCES || r == -EROFS || r == -EPERM) {
                close(top);
                con_test_skip("cannot create a cgroup here");
                return false;
        }
        g_assert_cmpint(r, ==, 0);
        *ret_top = top;
        return true;
}

/* Forks a child into the cgroup cg; it double-forks a daemon (its own session and process group)
 * and waits. Returns once the daemon runs: the child's pid. */
static pid_t spawn_with_daemon(int cg) {
        int procs = openat(cg, "cgroup.procs", O_WRONLY | O_CLOEXEC);
        g_assert_cmpint(procs, >=, 0);
        int p[2];
        g_assert_cmpint(pipe(p), ==, 0);
        pid_t pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
                if (write(procs, "0", 1) != 1)
                        _exit(1);
                if (fork() == 0) {
                        (void) setsid();
                        if (fork() == 0) {
                                (void) write(p[1], "x", 1);
                                pause();
                        }
                        _exit(0);
                }
                pause();
                _exit(0);
        }
        close(procs);
        close(p[1]);
        char c;
        g_assert_cmpint(read(p[0], &c, 1), ==, 1);
        close(p[0]);
        return pid;
}

static void assert_killed(pid_t pid) {
        int status;
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

/* The real thing where this process may create cgroups (root with cgroup2): a double-forked
 * child outside the process group dies with cgroup.kill. Reported as skipped otherwise. */
static void test_kill(void) {
        char name[64];
        int parent = -1, cg = -1;
        if (!test_cgroup("con-unit", &parent, &cg, name))
                return;
        g_assert_cmpint(con_cgroup_create(parent, name, &(int) { -1 }), ==, -EEXIST);
        pid_t pid = spawn_with_daemon(cg);
        g_assert_cmpint(con_cgroup_populated(cg), ==, 1);
        int ev = con_cgroup_open_events(cg);
        g_assert_cmpint(ev, >=, 0);
        g_assert_cmpint(con_cgroup_kill(cg), ==, 0);
        assert_killed(pid);
        for (int i = 0; i < 1000 && con_cgroup_events_populated(ev) != 0; i++)
                usleep(1000);
        g_assert_cmpint(con_cgroup_events_populated(ev), ==, 0); /* the daemon is gone too */
        close(ev);
        close(cg);
        g_assert_cmpint(unlinkat(parent, name, AT_REMOVEDIR), ==, 0);
        close(parent);
}

/* A previous instance's sessions: every "session-" child is killed and removed, a process that
 * left for its own session and process group included; other children stay. */
static void test_reap(void) {
        char name[64];
        int top = -1, parent = -1;
        if (!test_cgroup("con-unit-reap", &top, &parent, name))
                return;
        int busy = -1, empty = -1, other = -1;
        g_assert_cmpint(con_cgroup_create(parent, "session-busy", &busy), ==, 0);
        g_assert_cmpint(con_cgroup_create(parent, "session-empty", &empty), ==, 0);
        g_assert_cmpint(con_cgroup_create(parent, "keep-me", &other), ==, 0);
        pid_t pid = spawn_with_daemon(busy);
        g_assert_cmpint(con_cgroup_populated(busy), ==, 1);

        g_assert_cmpint(con_cgroup_reap_children(parent, "", USEC_PER_SEC), ==, -EINVAL);
        g_assert_cmpint(con_cgroup_reap_children(parent, "session-", 5 * USEC_PER_SEC), ==, 2);
        assert_killed(pid);
        g_assert_cmpint(faccessat(parent, "session-busy", F_OK, 0), ==, -1);
        g_assert_cmpint(faccessat(parent, "session-empty", F_OK, 0), ==, -1);
        g_assert_cmpint(faccessat(parent, "keep-me", F_OK, 0), ==, 0);
        g_assert_cmpint(con_cgroup_populated(busy), <, 0); /* the removed cgroup's files are gone */
        g_assert_cmpint(con_cgroup_reap_children(parent, "session-", USEC_PER_SEC), ==, 0);
        close(busy);
        close(empty);
        close(other);
        g_assert_cmpint(unlinkat(parent, "keep-me", AT_REMOVEDIR), ==, 0);
        close(parent);
        g_assert_cmpint(unlinkat(top, name, AT_REMOVEDIR), ==, 0);
        close(top);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/cgroup-util/parse", test_parse);
        g_test_add_func("/cgroup-util/kill", test_kill);
        g_test_add_func("/cgroup-util/reap", test_reap);
        return con_test_run();
}
