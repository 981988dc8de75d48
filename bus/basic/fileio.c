/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "macro.h"

/* O_DIRECTORY|O_NOFOLLOW on a symlink reports ENOTDIR (the kernel checks the type first):
 * tell the two apart. */
int enotdir_or_eloop(int dirfd, const char *name) {
        struct stat st;

        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) >= 0 && S_ISLNK(st.st_mode))
                return -ELOOP;
        return -ENOTDIR;
}

int open_nofollow(const char *path, int flags, mode_t mode) {
        _cleanup_close_ int dfd = -EBADF;
        const char *name;
        int fd;

        if (!path || path[0] != '/')
                return -EINVAL;
        if (streq(path, "/")) {
                fd = open("/", flags | O_CLOEXEC | O_NOFOLLOW, mode);
                return fd < 0 ? negative_errno() : fd;
        }
        dfd = open_parent_nofollow(path, &name);
        if (dfd < 0)
                return dfd;
        fd = openat(dfd, name, flags | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
                return errno == ENOTDIR ? enotdir_or_eloop(dfd, name) : negative_errno();
        return fd;
}

int open_parent_nofollow(const char *path, const char **ret_name) {
        _cleanup_close_ int fd = -EBADF;
        const char *p, *last;
        size_t l;

        if (!path || path[0] != '/')
                return -EINVAL;
        /* The last component: no trailing slash allowed, so the name is well defined. */
        l = strlen(path);
        if (l < 2 || path[l - 1] == '/')
                return -EINVAL;
        last = strrchr(path, '/') + 1;

        fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();

        p = path;
        while (*p == '/')
                p++;
        while (p < last) {
                char comp[256];
                size_t n = strcspn(p, "/");
                int nfd;

                if (n == 0) {
                        p++;
                        continue;
                }
                if (n >= sizeof(comp))
                        return -ENAMETOOLONG;
                memcpy(comp, p, n);
                comp[n] = 0;
                if (streq(comp, ".."))
                        return -EINVAL;
                nfd = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                /* A folder we may traverse but not list (0711): a path fd is enough to go on. */
                if (nfd < 0 && errno == EACCES)
                        nfd = openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (nfd < 0)
                        return errno == ENOTDIR ? enotdir_or_eloop(fd, comp) : negative_errno();
                safe_close(fd);
                fd = nfd;
                p += n;
        }
        if (ret_name)
                *ret_name = last;
        return TAKE_FD(fd);
}

int con_write_all(int fd, const void *buf, size_t len) {
        const char *p = buf;

        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        return -EIO;
                p += n;
                len -= (size_t) n;
        }
        return 0;
}

ssize_t con_read_full(int fd, void *buf, size_t len) {
        char *p = buf;
        size_t got = 0;

        while (got < len) {
                ssize_t n = read(fd, p + got, len - got);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        break;
                got += (size_t) n;
        }
        return (ssize_t) got;
}

int read_fd(int fd, size_t max, char **ret, size_t *ret_len) {
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        size_t len = 0;
        ssize_t n;

        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return -EISDIR;
        if ((uint64_t) st.st_size > max)
                return -EFBIG;

        buf = malloc((size_t) st.st_size + 1);
        if (!buf)
                return -ENOMEM;
        n = con_read_full(fd, buf, (size_t) st.st_size + 1);
        if (n < 0)
                return (int) n;
        len = (size_t) n;
        if (len == (size_t) st.st_size + 1)
                return -EFBIG; /* grew while reading */
        buf[len] = 0;
        if (ret_len)
                *ret_len = len;
        *ret = TAKE_PTR(buf);
        return 0;
}

int read_file_at(int dirfd, const char *name, size_t max, char **ret, size_t *ret_len) {
        _cleanup_close_ int fd = -EBADF;

        fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return negative_errno();
        return read_fd(fd, max, ret, ret_len);
}

int read_file_nofollow(const char *path, size_t max, char **ret, size_t *ret_len) {
        _cleanup_close_ int dfd = -EBADF;
        const char *name;

        dfd = open_parent_nofollow(path, &name);
        if (dfd < 0)
                return dfd;
        return read_file_at(dfd, name, max, ret, ret_len);
}


int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, uid_t uid, gid_t gid) {
        _cleanup_close_ int dfd = -EBADF, fd = -EBADF;
        char tmp[64];
        const char *name;
        int r;

        dfd = open_parent_nofollow(path, &name);
        if (dfd < 0)
                return dfd;

        for (unsigned attempt = 0;; attempt++) {
                uint64_t rnd;

                if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
                        return negative_errno();
                snprintf(tmp, sizeof(tmp), ".#con-%016llx", (unsigned long long) rnd);
                fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
                if (fd >= 0)
                        break;
                if (errno != EEXIST || attempt > 16)
                        return negative_errno();
        }

        r = con_write_all(fd, data, len);
        if (r >= 0 && (uid != (uid_t) -1 || gid != (gid_t) -1) && fchown(fd, uid, gid) < 0)
                r = negative_errno();
        /* After fchown: it clears setuid/setgid bits. */
        if (r >= 0 && fchmod(fd, mode & 07777) < 0)
                r = negative_errno();
        if (r >= 0 && fsync(fd) < 0)
                r = negative_errno();
        if (r >= 0 && renameat(dfd, tmp, dfd, name) < 0)
                r = negative_errno();
        if (r < 0) {
                (void) unlinkat(dfd, tmp, 0);
                return r;
        }
        (void) fsync(dfd);
        return 0;
}

int con_opendir_dup(int dirfd, DIR **ret) {
        int fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return -errno;
        DIR *d = fdopendir(fd);
        if (!d) {
                int k = -errno;
                safe_close(fd);
                return k;
        }
        /* A duplicate shares the file offset: a stream made before may have read on. */
        rewinddir(d);
        *ret = d;
        return 0;
}
