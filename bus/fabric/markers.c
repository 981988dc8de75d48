/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "macro.h"
#include "markers.h"
#include "names.h"
#include "strv.h"
#include "utf8.h"

static const char * const marker_name[_CON_MARKER_KIND_MAX] = {
        [CON_MARKER_HALT] = "halt",
        [CON_MARKER_HALT_WORKERS] = "halt-workers",
        [CON_MARKER_QUARANTINE] = "quarantine",
};

int con_marker_path(const char *state_dir, ConMarkerKind kind, const char *agent, char **ret) {
        int n;

        if (!state_dir || kind < 0 || kind >= _CON_MARKER_KIND_MAX)
                return -EINVAL;
        if (kind == CON_MARKER_QUARANTINE) {
                if (!agent || !con_agent_name_valid(agent))
                        return -EINVAL;
                n = asprintf(ret, "%s/quarantine/%s", state_dir, agent);
        } else
                n = asprintf(ret, "%s/%s", state_dir, marker_name[kind]);
        if (n < 0) {
                *ret = NULL;
                return -ENOMEM;
        }
        return 0;
}

#define REASON_NAME "reason"

static bool owner_trusted(const struct stat *st) {
        return st->st_uid == 0 || st->st_uid == geteuid();
}

bool con_marker_trusted(const struct stat *st) {
        if (!owner_trusted(st))
                return false;
        /* A directory cannot be hard-linked: no link made elsewhere changes how it reads. */
        if (S_ISDIR(st->st_mode))
                return !(st->st_mode & 022);
        /* A marker file of an earlier version: one link, or it counts as absent. */
        return S_ISREG(st->st_mode) && st->st_nlink == 1;
}

/* The first line of buf[0..len) as valid text without control characters. */
static int marker_reason(char *buf, size_t len, char **ret) {
        const char *r;

        buf[len] = 0;
        buf[strcspn(buf, "\r\n")] = 0;
        for (char *p = buf; *p; p++)
                if ((unsigned char) *p < 0x20)
                        *p = ' ';
        r = buf[strspn(buf, " \t")] ? buf : "no reason given";
        return con_utf8_sanitize(r, strlen(r), ret, NULL) < 0 ? -ENOMEM : 0;
}

int con_marker_read(const char *state_dir, ConMarkerKind kind, const char *agent, char **ret_reason) {
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = -EBADF;
        char buf[CON_MARKER_REASON_MAX + 1];
        struct stat st;
        ssize_t l;
        int r;

        r = con_marker_path(state_dir, kind, agent, &path);
        if (r < 0)
                return r;
        /* O_NONBLOCK: a FIFO planted in place of a marker must not block the reader. */
        fd = open_nofollow(path, O_RDONLY | O_NONBLOCK, 0);
        if (fd == -ENOENT || fd == -ENOTDIR || fd == -ELOOP)
                return 0;
        if (fd < 0)
                return fd;
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!con_marker_trusted(&st))
                return 0;
        if (!ret_reason)
                return 1;
        if (S_ISDIR(st.st_mode)) {
                /* The reason inside: root's file in root's folder; its link count does not matter
                 * (nobody else can add a name here), only that it is a file the writer made. */
                _cleanup_close_ int rfd = openat(fd, REASON_NAME, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
                struct stat rst;
                if (rfd < 0 || fstat(rfd, &rst) < 0 || !S_ISREG(rst.st_mode) || !owner_trusted(&rst)) {
                        r = marker_reason(buf, 0, ret_reason);
                        return r < 0 ? r : 1;
                }
                safe_close(fd);
                fd = TAKE_FD(rfd);
        }
        l = con_read_full(fd, buf, CON_MARKER_REASON_MAX);
        if (l < 0)
                return (int) l;
        /* The reason goes into bus errors and task results: whole characters only. */
        if ((size_t) l == CON_MARKER_REASON_MAX)
                l = (ssize_t) con_utf8_complete_len(buf, (size_t) l);
        r = marker_reason(buf, (size_t) l, ret_reason);
        if (r < 0)
                return r;
        return 1;
}

static int ensure_dir(const char *path) {
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

/* Removes what is at path: a file, a symlink (not its target) or a marker folder with the files
 * in it. 0 also when nothing is there. */
static int remove_any(const char *path) {
        struct stat st;
        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISDIR(st.st_mode))
                return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
        _cleanup_close_ int fd = open_nofollow(path, O_RDONLY | O_DIRECTORY, 0);
        if (fd < 0)
                return fd;
        _cleanup_closedir_ DIR *d = fdopendir(fd);
        if (!d)
                return negative_errno();
        TAKE_FD(fd);
        for (struct dirent *de; (errno = 0, de = readdir(d));) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT)
                        return -errno;
        }
        if (errno != 0)
                return negative_errno();
        return rmdir(path) < 0 && errno != ENOENT ? -errno : 0;
}

int con_marker_write(const char *state_dir, ConMarkerKind kind, const char *agent, const char *reason) {
        _cleanup_free_ char *path = NULL, *text = NULL, *parent = NULL, *tmp = NULL, *rpath = NULL;
        int r;

        if (!reason)
                return -EINVAL;
        r = con_marker_path(state_dir, kind, agent, &path);
        if (r < 0)
                return r;
        r = ensure_dir(state_dir);
        if (r < 0)
                return r;
        if (kind == CON_MARKER_QUARANTINE) {
                if (asprintf(&parent, "%s/quarantine", state_dir) < 0) {
                        parent = NULL;
                        return -ENOMEM;
                }
                r = ensure_dir(parent);
                if (r < 0)
                        return r;
        } else if (!(parent = strdup(state_dir)))
                return -ENOMEM;
        if (asprintf(&text, "%s\n", reason) < 0) {
                text = NULL;
                return -ENOMEM;
        }
        /* A folder with the reason in it, made aside and then put in place in one step (swapped
         * with whatever was there, so a marker in force never reads absent, even for a moment).
         * Owned by whoever writes: root in production, which is what readers trust. */
        if (asprintf(&tmp, "%s/.marker.XXXXXX", parent) < 0) {
                tmp = NULL;
                return -ENOMEM;
        }
        if (!mkdtemp(tmp))
                return -errno;
        if (chmod(tmp, 0755) < 0 || asprintf(&rpath, "%s/" REASON_NAME, tmp) < 0) {
                r = rpath ? -errno : -ENOMEM;
                (void) remove_any(tmp);
                return r;
        }
        r = write_file_atomic(rpath, text, strlen(text), 0644, (uid_t) -1, (gid_t) -1);
        if (r >= 0) {
                if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_EXCHANGE) >= 0)
                        return remove_any(tmp);         /* what was there before */
                int e = errno;
                if (e == EINVAL || e == ENOSYS)
                        r = remove_any(path);   /* a file system without the exchange: two steps */
                else if (e != ENOENT)
                        r = -e;
                if (r >= 0) {
                        if (rename(tmp, path) >= 0)
                                return 0;
                        r = -errno;
                }
        }
        (void) remove_any(tmp);
        return r;
}

int con_marker_remove(const char *state_dir, ConMarkerKind kind, const char *agent) {
        _cleanup_free_ char *path = NULL;
        int r = con_marker_path(state_dir, kind, agent, &path);

        if (r < 0)
                return r;
        return remove_any(path);
}

/* A trusted marker file of an earlier version at the marker's place, rewritten as a folder. */
static int upgrade_one(const char *state_dir, ConMarkerKind kind, const char *agent) {
        _cleanup_free_ char *path = NULL, *reason = NULL;
        struct stat st;
        int r = con_marker_path(state_dir, kind, agent, &path);
        if (r < 0)
                return r;
        if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode))
                return 0;       /* absent, or a folder already */
        r = con_marker_read(state_dir, kind, agent, &reason);
        if (r <= 0)
                return r;       /* 0: not trusted, not a marker to keep */
        return con_marker_write(state_dir, kind, agent, reason);
}

int con_marker_upgrade(const char *state_dir) {
        _cleanup_strv_free_ char **q = NULL;
        int r = upgrade_one(state_dir, CON_MARKER_HALT, NULL);
        if (r >= 0)
                r = upgrade_one(state_dir, CON_MARKER_HALT_WORKERS, NULL);
        if (r >= 0)
                r = con_marker_list_quarantined(state_dir, &q);
        STRV_FOREACH(a, q) {
                if (r < 0)
                        break;
                r = upgrade_one(state_dir, CON_MARKER_QUARANTINE, *a);
        }
        return r < 0 ? r : 0;
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char * const *) a, *(char * const *) b);
}

int con_marker_list_quarantined(const char *state_dir, char ***ret) {
        _cleanup_free_ char *qdir = NULL;
        _cleanup_strv_free_ char **l = NULL;
        _cleanup_closedir_ DIR *d = NULL;
        int fd, r;

        l = calloc(1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        if (asprintf(&qdir, "%s/quarantine", state_dir) < 0) {
                qdir = NULL;
                return -ENOMEM;
        }
        fd = open_nofollow(qdir, O_RDONLY | O_DIRECTORY, 0);
        if (fd == -ENOENT || fd == -ENOTDIR || fd == -ELOOP) {
                *ret = TAKE_PTR(l);
                return 0;
        }
        if (fd < 0)
                return fd;
        d = fdopendir(fd);
        if (!d) {
                r = negative_errno();
                safe_close(fd);
                return r;
        }
        for (struct dirent *de; (errno = 0, de = readdir(d));) {
                struct stat st;

                if (!con_agent_name_valid(de->d_name))
                        continue;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (errno == ENOENT)
                                continue;
                        return negative_errno();
                }
                if (!con_marker_trusted(&st))
                        continue;
                r = strv_extend(&l, de->d_name);
                if (r < 0)
                        return r;
        }
        if (errno != 0)
                return negative_errno();
        qsort(l, strv_length(l), sizeof(char *), cmp_str);
        *ret = TAKE_PTR(l);
        return 0;
}

int con_marker_halted(const char *state_dir, const char **ret) {
        int r = con_marker_read(state_dir, CON_MARKER_HALT, NULL, NULL);

        if (r < 0)
                return r;
        if (r > 0) {
                *ret = "all";
                return 0;
        }
        r = con_marker_read(state_dir, CON_MARKER_HALT_WORKERS, NULL, NULL);
        if (r < 0)
                return r;
        *ret = r > 0 ? "workers" : "";
        return 0;
}
