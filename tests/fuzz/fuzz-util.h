/* SPDX-License-Identifier: MIT */
/* Helpers for fuzz targets whose parser reads files: one private scratch directory per process
 * (in /dev/shm when it exists, so that fsync is cheap), removed at exit. */
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char fuzz_dir_path[256];

/* Removes everything below the open folder DFD: its files at every depth and, with rmdirs, its
 * folders too (without, every folder stays, empty). Reads the entries with getdents64 into a
 * buffer on the stack: no DIR allocation and no stat per entry (d_type), about four system calls
 * per folder plus one per entry (`result` empties a queue's six folders per input this way).
 * One pass: removing an entry already read never hides one not yet read (POSIX leaves open only
 * whether the removed one is still returned). Aborts when something cannot be removed: the next
 * input would not start from an empty folder. */
static inline void fuzz_tree_clear(int dfd, bool rmdirs) {
        char buf[4096] __attribute__((aligned(8)));
        if (lseek(dfd, 0, SEEK_SET) < 0)
                abort();
        for (ssize_t got; (got = getdents64(dfd, buf, sizeof(buf))) != 0;) {
                if (got < 0)
                        abort();
                for (ssize_t o = 0; o < got;) {
                        struct dirent64 *de = (struct dirent64 *) (buf + o);
                        o += de->d_reclen;
                        const char *name = de->d_name;
                        if (name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2])))
                                continue;
                        if (de->d_type == DT_UNKNOWN)
                                abort(); /* a file system without d_type: not the scratch tmpfs */
                        if (de->d_type != DT_DIR) {
                                if (unlinkat(dfd, name, 0) < 0)
                                        abort();
                                continue;
                        }
                        int sub = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (sub < 0)
                                abort();
                        fuzz_tree_clear(sub, rmdirs);
                        close(sub);
                        if (rmdirs && unlinkat(dfd, name, AT_REMOVEDIR) < 0)
                                abort();
                }
        }
}

static void fuzz_dir_remove(void) {
        int dfd = open(fuzz_dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
                fuzz_tree_clear(dfd, true);
                close(dfd);
        }
        (void) rmdir(fuzz_dir_path);
}

/* The scratch directory; aborts when it cannot be made (the target cannot run at all). */
static inline const char *fuzz_dir(void) {
        if (fuzz_dir_path[0])
                return fuzz_dir_path;
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (getenv("TMPDIR") ?: "/tmp");
        snprintf(fuzz_dir_path, sizeof(fuzz_dir_path), "%s/con-fuzz-XXXXXX", base);
        if (!mkdtemp(fuzz_dir_path))
                abort();
        atexit(fuzz_dir_remove);
        return fuzz_dir_path;
}

static int fuzz_dir_fd = -1;

/* The scratch directory, open (once per process: it never changes). */
static inline int fuzz_dir_dfd(void) {
        if (fuzz_dir_fd < 0 && (fuzz_dir_fd = open(fuzz_dir(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
                abort();
        return fuzz_dir_fd;
}

/* The folder NAME in the scratch directory, made on first use and kept open: one per process (a
 * target empties it with fuzz_tree_clear() between inputs rather than making a new one). */
static inline int fuzz_subdir_dfd(const char *name) {
        int dfd = openat(fuzz_dir_dfd(), name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 && (mkdirat(fuzz_dir_dfd(), name, 0700) < 0 ||
                        (dfd = openat(fuzz_dir_dfd(), name, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0))
                abort();
        return dfd;
}

static inline void fuzz_write_all(int fd, const void *data, size_t len) {
        for (size_t done = 0; done < len;) {
                ssize_t k = write(fd, (const char *) data + done, len - done);
                if (k <= 0)
                        abort();
                done += (size_t) k;
        }
}

/* Replaces (or with data NULL removes) the file NAME in the scratch directory: a new file, mode
 * 0640. */
static inline void fuzz_dir_put(const char *name, const void *data, size_t len) {
        int dfd = fuzz_dir_dfd();
        (void) unlinkat(dfd, name, 0);
        if (data) {
                int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
                if (fd < 0)
                        abort();
                fuzz_write_all(fd, data, len);
                close(fd);
        }
}

/* The same content as fuzz_dir_put(), written over the file in place when it exists (truncated,
 * mode 0640 again): no unlink and no new inode per input (`audit`: about 12 % less CPU).
 * Only for files the code under test itself writes in place (never renames over, never hard
 * links, never changes the owner of): what the next input reads is then the same as with
 * fuzz_dir_put(). */
static inline void fuzz_dir_rewrite(const char *name, const void *data, size_t len) {
        int dfd = fuzz_dir_dfd();
        if (!data) {
                (void) unlinkat(dfd, name, 0);
                return;
        }
        int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0640);
        if (fd < 0 || fchmod(fd, 0640) < 0)
                abort();
        fuzz_write_all(fd, data, len);
        close(fd);
}
