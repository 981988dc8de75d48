/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroup-util.h"
#include "fileio.h"
#include "macro.h"
#include "time-util.h"

#define CGROUP_FILE_MAX (64U * 1024U)
#define KILL_ROUNDS 64

/* The n-th space-separated field of a mountinfo line (0-based), into buf. */
static bool field(const char *line, unsigned n, char *buf, size_t size) {
        const char *p = line;
        for (unsigned i = 0; i < n; i++) {
                p = strchr(p, ' ');
                if (!p)
                        return false;
                p++;
        }
        size_t l = strcspn(p, " \n");
        if (l == 0 || l >= size)
                return false;
        memcpy(buf, p, l);
        buf[l] = 0;
        return true;
}

static bool has_dotdot(const char *p) {
        return strstr(p, "/../") || endswith(p, "/..");
}

int con_cgroup_parse_own(const char *mountinfo, const char *proc_cgroup, char **ret) {
        char mnt[4096] = "", root[4096] = "";
        const char *own = NULL;
        size_t own_len = 0;

        if (!mountinfo || !proc_cgroup || !ret)
                return -EINVAL;
        /* mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER */
        for (const char *l = mountinfo; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
                const char *sep = strstr(l, " - ");
                const char *eol = strchr(l, '\n');
                if (!sep || (eol && sep > eol))
                        continue;
                if (!startswith(sep + 3, "cgroup2 "))
                        continue;
                if (!field(l, 3, root, sizeof(root)) || !field(l, 4, mnt, sizeof(mnt))) {
                        mnt[0] = 0;
                        continue;
                }
                /* Escaped names (\040) are not ours to handle, and both fields must be absolute
                 * paths without "..": skip such a mount. */
                if (strchr(mnt, '\\') || strchr(root, '\\') || mnt[0] != '/' || root[0] != '/' ||
                    has_dotdot(mnt) || has_dotdot(root)) {
                        mnt[0] = 0;
                        continue;
                }
                break;
        }
        if (!mnt[0])
                return -ENOMEDIUM;
        for (const char *l = proc_cgroup; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
                if (startswith(l, "0::")) {
                        own = l + 3;
                        own_len = strcspn(own, "\n");
                        break;
                }
        if (!own || own_len == 0 || own[0] != '/')
                return -ENOMEDIUM;
        _cleanup_free_ char *path = strndup(own, own_len);
        if (!path)
                return -ENOMEM;
        if (has_dotdot(path) || strstr(path, " (deleted)"))
                return -EINVAL;
        /* A mount of a subtree (root field other than "/"): the own path is below it. */
        const char *rel = path;
        if (!streq(root, "/")) {
                rel = startswith(path, root);
                if (!rel || (*rel && *rel != '/'))
                        return -ENOMEDIUM;
        }
        if (streq(rel, "/"))
                rel = "";
        return asprintf(ret, "%s%s", mnt, rel) < 0 ? -ENOMEM : 0;
}

/* Kernel pseudo files report a size of 0: read until EOF, up to max bytes. */
static int read_pseudo_fd(int fd, size_t max, char **ret) {
        _cleanup_free_ char *buf = NULL;
        size_t len = 0, cap = 0;
        for (;;) {
                if (len + 4096 + 1 > cap) {
                        if (cap >= max)
                                return -EFBIG;
                        cap = cap ? cap * 2 : 8192;
                        char *n = realloc(buf, cap);
                        if (!n)
                                return -ENOMEM;
                        buf = n;
                }
                ssize_t k = read(fd, buf + len, cap - len - 1);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (k == 0)
                        break;
                len += (size_t) k;
        }
        if (!buf && !(buf = malloc(1)))
                return -ENOMEM;
        buf[len] = 0;
        *ret = TAKE_PTR(buf);
        return 0;
}

static int read_pseudo_at(int dfd, const char *name, size_t max, char **ret) {
        _cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return negative_errno();
        return read_pseudo_fd(fd, max, ret);
}

/* /proc/self is a symbolic link by design: a plain open. */
static int read_proc(const char *path, size_t max, char **ret) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        return read_pseudo_fd(fd, max, ret);
}

int con_cgroup_own_dir(char **ret) {
        _cleanup_free_ char *mi = NULL, *cg = NULL;
        int r = read_proc("/proc/self/mountinfo", 4U * 1024U * 1024U, &mi);
        if (r < 0)
                return r;
        r = read_proc("/proc/self/cgroup", CGROUP_FILE_MAX, &cg);
        if (r < 0)
                return r;
        return con_cgroup_parse_own(mi, cg, ret);
}

int con_cgroup_create(int parent_fd, const char *name, int *ret_fd) {
        if (!name || !*name || strchr(name, '/') || streq(name, ".") || streq(name, ".."))
                return -EINVAL;
        if (mkdirat(parent_fd, name, 0755) < 0)
                return negative_errno();
        int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                int r = negative_errno();
                (void) unlinkat(parent_fd, name, AT_REMOVEDIR);
                return r;
        }
        *ret_fd = fd;
        return 0;
}

static int write_at(int dfd, const char *name, const char *s) {
        _cleanup_close_ int fd = openat(dfd, name, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return negative_errno();
        return con_write_all(fd, s, strlen(s));
}

int con_cgroup_kill(int cg_fd) {
        int r = write_at(cg_fd, "cgroup.kill", "1");
        if (r != -ENOENT)
                return r;
        /* Before Linux 5.14: kill what is listed until nothing is (a fork between the read and
         * the kill shows up in the next round). */
        for (unsigned round = 0; round < KILL_ROUNDS; round++) {
                _cleanup_free_ char *procs = NULL;
                bool any = false;
                r = read_pseudo_at(cg_fd, "cgroup.procs", 4U * 1024U * 1024U, &procs);
                if (r < 0)
                        return r;
                for (char *p = procs, *end; *p; p = end) {
                        long pid = strtol(p, &end, 10);
                        if (end == p)
                                break;
                        if (pid > 0 && kill((pid_t) pid, SIGKILL) >= 0)
                                any = true;
                }
                if (!any)
                        return 0;
        }
        return -EBUSY;
}

static int parse_populated(const char *ev) {
        const char *p = strstr(ev, "populated ");
        if (!p || (p != ev && p[-1] != '\n'))
                return -EBADMSG;
        return p[10] == '1';
}

int con_cgroup_populated(int cg_fd) {
        _cleanup_free_ char *ev = NULL;
        int r = read_pseudo_at(cg_fd, "cgroup.events", CGROUP_FILE_MAX, &ev);
        if (r < 0)
                return r;
        return parse_populated(ev);
}

int con_cgroup_events_populated(int events_fd) {
        _cleanup_free_ char *ev = NULL;
        if (lseek(events_fd, 0, SEEK_SET) < 0)
                return negative_errno();
        int r = read_pseudo_fd(events_fd, CGROUP_FILE_MAX, &ev);
        if (r < 0)
                return r;
        return parse_populated(ev);
}

int con_cgroup_open_events(int cg_fd) {
        int fd = openat(cg_fd, "cgroup.events", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        return fd < 0 ? negative_errno() : fd;
}

/* Waits until the cgroup has no process, polling cgroup.events (EPOLLPRI on each change) until
 * the deadline (CLOCK_MONOTONIC). */
static int wait_unpopulated(int cg_fd, uint64_t deadline) {
        _cleanup_close_ int ev = con_cgroup_open_events(cg_fd);
        if (ev < 0)
                return ev;
        for (;;) {
                int r = con_cgroup_events_populated(ev);
                if (r <= 0)
                        return r;
                uint64_t now = con_now(CLOCK_MONOTONIC);
                if (now >= deadline)
                        return -EBUSY;
                uint64_t left_ms = (deadline - now + 999) / 1000;
                struct pollfd p = { .fd = ev, .events = POLLPRI };
                if (poll(&p, 1, left_ms > INT_MAX ? INT_MAX : (int) left_ms) < 0 && errno != EINTR)
                        return negative_errno();
        }
}

static int reap_one(int parent_fd, const char *name, uint64_t deadline) {
        _cleanup_close_ int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        int r = con_cgroup_populated(fd);
        if (r > 0) {
                r = con_cgroup_kill(fd);
                if (r < 0)
                        return r;
                r = wait_unpopulated(fd, deadline);
        }
        if (r < 0)
                return r;
        return unlinkat(parent_fd, name, AT_REMOVEDIR) < 0 ? negative_errno() : 0;
}

int con_cgroup_reap_children(int parent_fd, const char *prefix, uint64_t timeout_usec) {
        if (!prefix || !*prefix)
                return -EINVAL;
        int dfd = openat(parent_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return negative_errno();
        _cleanup_closedir_ DIR *d = fdopendir(dfd);
        if (!d) {
                int r = negative_errno();
                safe_close(dfd);
                return r;
        }
        uint64_t deadline = con_now(CLOCK_MONOTONIC) + timeout_usec;
        int first_error = 0, removed = 0;
        for (struct dirent *de; (errno = 0, de = readdir(d)); ) {
                if (de->d_type != DT_DIR || !startswith(de->d_name, prefix))
                        continue;
                int r = reap_one(parent_fd, de->d_name, deadline);
                if (r < 0 && r != -ENOENT) {
                        if (first_error == 0)
                                first_error = r;
                } else if (r == 0)
                        removed++;
        }
        if (errno != 0 && first_error == 0)
                first_error = negative_errno();
        return first_error < 0 ? first_error : removed;
}
