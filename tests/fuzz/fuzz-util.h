/* SPDX-License-Identifier: MIT */
/* Helpers for fuzz targets whose parser reads files: one private scratch directory per process
 * (in /dev/shm when it exists, so that fsync is cheap), removed at exit. */
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_dir_path[256];

static void fuzz_dir_remove(void) {
        DIR *d = opendir(fuzz_dir_path);
        if (d) {
                struct dirent *de;
                while ((de = readdir(d)))
                        if (de->d_name[0] != '.')
                                (void) unlinkat(dirfd(d), de->d_name, 0);
                closedir(d);
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

/* Replaces (or with data NULL removes) the file NAME in the scratch directory. */
static inline void fuzz_dir_put(const char *name, const void *data, size_t len) {
        int dfd = open(fuzz_dir(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                abort();
        (void) unlinkat(dfd, name, 0);
        if (data) {
                int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
                if (fd < 0)
                        abort();
                for (size_t done = 0; done < len;) {
                        ssize_t k = write(fd, (const char *) data + done, len - done);
                        if (k <= 0)
                                abort();
                        done += (size_t) k;
                }
                close(fd);
        }
        close(dfd);
}
