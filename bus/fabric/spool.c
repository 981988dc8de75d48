/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "acl-util.h"
#include "fileio.h"
#include "macro.h"
#include "spool.h"
#include "task.h"

/* A plain name inside the directory: not empty, no '/', not "." or "..". */
static bool plain_name(const char *name) {
        return !isempty(name) && !strchr(name, '/') && !streq(name, ".") && !streq(name, "..") &&
               strlen(name) <= NAME_MAX;
}

static int fsync_retry(int fd) {
        /* fsync(2) is not restarted after a signal on every file system. */
        for (;;) {
                if (fsync(fd) >= 0)
                        return 0;
                if (errno != EINTR)
                        return negative_errno();
        }
}

/* ".NAME.XXXXXX": a dot-file, which con_spool_name_is_candidate() and the watchers ignore.
 * NAME is shortened when the whole would not fit in NAME_MAX. */
static int tmp_create(int dirfd, const char *name, char ret_tmp[NAME_MAX + 1], int *ret_fd) {
        static const char chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        size_t n = strlen(name);

        if (n > NAME_MAX - 8)
                n = NAME_MAX - 8;

        for (unsigned attempt = 0; attempt < 100; attempt++) {
                uint8_t rnd[6];
                char suffix[7];
                int fd;

                if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t) sizeof(rnd)) {
                        uint64_t x = (uint64_t) getpid() * 0x9e3779b97f4a7c15ull + attempt + (uintptr_t) ret_tmp;
                        memcpy(rnd, &x, sizeof(rnd));
                }
                for (unsigned i = 0; i < 6; i++)
                        suffix[i] = chars[rnd[i] % (sizeof(chars) - 1)];
                suffix[6] = '\0';
                snprintf(ret_tmp, NAME_MAX + 1, ".%.*s.%s", (int) n, name, suffix);

                fd = openat(dirfd, ret_tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
                if (fd >= 0) {
                        *ret_fd = fd;
                        return 0;
                }
                if (errno != EEXIST)
                        return negative_errno();
        }
        return -EEXIST;
}

/* The names tmp_create() makes: ".", at least one character, ".", six of chars. */
static bool is_temp_name(const char *name) {
        size_t n = strlen(name);

        if (n < 9 || name[0] != '.' || name[n - 7] != '.')
                return false;
        for (size_t i = n - 6; i < n; i++)
                if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
                      (name[i] >= '0' && name[i] <= '9')))
                        return false;
        return true;
}

int con_spool_remove_temps(int dirfd) {
        _cleanup_(closedirp) DIR *d = NULL;
        int fd, removed = 0;

        fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        d = fdopendir(fd);
        if (!d) {
                int r = negative_errno();
                safe_close(fd);
                return r;
        }
        for (struct dirent *de; (errno = 0, de = readdir(d));) {
                struct stat st;

                if (!is_temp_name(de->d_name))
                        continue;
                if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
                        continue;
                if (unlinkat(dirfd, de->d_name, 0) < 0) {
                        if (errno == ENOENT)
                                continue;
                        return negative_errno();
                }
                removed++;
        }
        if (errno != 0)
                return negative_errno();
        return removed;
}

int con_spool_write(int dirfd, const char *name, const void *data, size_t len, const ConSpoolWrite *opts) {
        static const ConSpoolWrite defaults = {
                .mode = 0644,
                .uid = (uid_t) -1,
                .gid = (gid_t) -1,
                .sync = true,
        };
        _cleanup_close_ int fd = -EBADF;
        char tmp[NAME_MAX + 1];
        int r;

        if (dirfd < 0 && dirfd != AT_FDCWD)
                return -EBADF;
        if (!plain_name(name) || (!data && len > 0))
                return -EINVAL;
        if (!opts)
                opts = &defaults;

        r = tmp_create(dirfd, name, tmp, &fd);
        if (r < 0)
                return r;

        r = con_write_all(fd, data, len);
        if (r >= 0 && (opts->uid != (uid_t) -1 || opts->gid != (gid_t) -1) && fchown(fd, opts->uid, opts->gid) < 0)
                r = negative_errno();
        /* after fchown, which may clear set-id bits */
        if (r >= 0 && fchmod(fd, opts->mode & 07777) < 0)
                r = negative_errno();
        if (r >= 0 && opts->reader != 0 && opts->reader != (uid_t) -1) {
                _cleanup_acl_free_ acl_t acl = NULL;
                const ConAclEntry e = { .tag = ACL_USER, .id = opts->reader, .perms = CON_ACL_R };
                r = con_acl_build(opts->mode & 0777, &e, 1, &acl);
                if (r >= 0)
                        r = con_acl_fd_apply(fd, ACL_TYPE_ACCESS, acl);
        }
        if (r >= 0 && opts->sync)
                r = fsync_retry(fd);
        if (r >= 0 && renameat2(dirfd, tmp, dirfd, name, opts->noreplace ? RENAME_NOREPLACE : 0) < 0)
                r = negative_errno();
        if (r < 0) {
                (void) unlinkat(dirfd, tmp, 0);
                return r;
        }
        if (opts->sync)
                return con_spool_sync_dir(dirfd);
        return 0;
}

int con_spool_sync_dir(int dirfd) {
        if (dirfd < 0 && dirfd != AT_FDCWD)
                return -EBADF;
        if (dirfd == AT_FDCWD) {
                _cleanup_close_ int fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (fd < 0)
                        return negative_errno();
                return fsync_retry(fd);
        }
        return fsync_retry(dirfd);
}

int con_spool_claim(int from_dirfd, const char *from, int to_dirfd, const char *to) {
        if (!plain_name(from) || !plain_name(to))
                return -EINVAL;
        if (renameat2(from_dirfd, from, to_dirfd, to, RENAME_NOREPLACE) < 0)
                return negative_errno();
        return 0;
}

int con_spool_open_untrusted(int dirfd, const char *name, size_t max_size, int *ret_fd, struct stat *ret_st) {
        _cleanup_close_ int fd = -EBADF;
        struct stat st;

        if (!plain_name(name))
                return -EINVAL;
        if (max_size == 0)
                max_size = CON_TASK_DEFAULT_MAX_SIZE;

        /* O_NONBLOCK: a FIFO must not block us until a writer shows up. */
        fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        /* A hard link would let a sender pass off someone else's file as its own task. */
        if (st.st_nlink != 1)
                return -EMLINK;
        if (st.st_size < 0 || (uint64_t) st.st_size > max_size)
                return -EFBIG;

        if (ret_st)
                *ret_st = st;
        if (ret_fd)
                *ret_fd = TAKE_FD(fd);
        return 0;
}

int con_spool_read_untrusted(int dirfd, const char *name, size_t max_size, char **ret_buf, size_t *ret_len,
                             struct stat *ret_st) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        size_t len = 0, cap;
        int r;

        if (max_size == 0)
                max_size = CON_TASK_DEFAULT_MAX_SIZE;

        r = con_spool_open_untrusted(dirfd, name, max_size, &fd, &st);
        if (r < 0)
                return r;

        /* The file may still grow after fstat: read at most max_size + 1 bytes to notice. */
        cap = (size_t) st.st_size + 1;
        buf = malloc(cap + 1);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t n;

                if (len == cap) {
                        if (cap > max_size)
                                return -EFBIG;
                        size_t ncap = cap * 2 < max_size + 1 ? cap * 2 : max_size + 1;
                        char *nbuf = realloc(buf, ncap + 1);
                        if (!nbuf)
                                return -ENOMEM;
                        buf = nbuf;
                        cap = ncap;
                }
                n = read(fd, buf + len, cap - len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        break;
                len += (size_t) n;
        }
        if (len > max_size)
                return -EFBIG;
        buf[len] = '\0';

        if (ret_st)
                *ret_st = st;
        if (ret_len)
                *ret_len = len;
        if (ret_buf)
                *ret_buf = TAKE_PTR(buf);
        return 0;
}

bool con_spool_name_is_candidate(const char *name, const char *suffix) {
        if (!plain_name(name))
                return false;
        if (name[0] == '.')             /* dot-files, our ".NAME.XXXXXX" temp files, ".#" locks */
                return false;
        if (endswith(name, ".tmp") || endswith(name, "~"))
                return false;
        if (!isempty(suffix)) {
                const char *e = endswith(name, suffix);
                if (!e || e == name)    /* "NAME.task" with a non-empty NAME */
                        return false;
        }
        return true;
}

const char *con_spool_reject_reason(int err) {
        switch (err < 0 ? -err : err) {
        case ELOOP:
                return "symbolic link";
        case EBADFD:
                return "not a regular file";
        case EMLINK:
                return "hard link (link count above 1)";
        case EFBIG:
                return "larger than the size cap";
        case ENXIO:
                return "not a regular file (socket or device without reader)";
        case EACCES:
        case EPERM:
                return "permission denied";
        case ENOENT:
                return "file disappeared";
        case EINVAL:
                return "invalid file name";
        case 0:
                return "accepted";
        default:
                return "cannot be opened";
        }
}

typedef struct Aged {
        char *name;
        struct timespec mtime;
} Aged;

static int cmp_aged(const void *a, const void *b) {
        const Aged *x = a, *y = b;
        /* newest first */
        if (x->mtime.tv_sec != y->mtime.tv_sec)
                return x->mtime.tv_sec < y->mtime.tv_sec ? 1 : -1;
        if (x->mtime.tv_nsec != y->mtime.tv_nsec)
                return x->mtime.tv_nsec < y->mtime.tv_nsec ? 1 : -1;
        return strcmp(x->name, y->name);
}

int con_spool_prune(int dfd, const char *suffix, size_t keep, uint64_t older_than_usec, const char *except) {
        _cleanup_free_ Aged *files = NULL;
        size_t n = 0, alloc = 0;
        int r = 0, deleted = 0;

        _cleanup_closedir_ DIR *d = NULL;
        r = con_opendir_dup(dfd, &d);
        if (r < 0)
                return r;
        struct dirent *de;
        while ((de = readdir(d))) {
                struct stat st;
                if (de->d_name[0] == '.' || !endswith(de->d_name, suffix) || streq_ptr(de->d_name, except))
                        continue;
                if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
                        continue;
                if (GROW_ONE(files, n, alloc) < 0) {
                        r = -ENOMEM;
                        break;
                }
                files[n].name = strdup(de->d_name);
                if (!files[n].name) {
                        r = -ENOMEM;
                        break;
                }
                files[n++].mtime = st.st_mtim;
        }
        if (r >= 0 && n > 0) {
                qsort(files, n, sizeof(Aged), cmp_aged);
                for (size_t i = 0; i < n; i++) {
                        uint64_t t = (uint64_t) files[i].mtime.tv_sec * 1000000 +
                                     (uint64_t) files[i].mtime.tv_nsec / 1000;
                        if ((i >= keep || (older_than_usec > 0 && t < older_than_usec)) &&
                            unlinkat(dfd, files[i].name, 0) >= 0)
                                deleted++;
                }
        }
        for (size_t i = 0; i < n; i++)
                free(files[i].name);
        return r < 0 ? r : deleted;
}
