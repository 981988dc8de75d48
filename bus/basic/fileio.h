/* SPDX-License-Identifier: MIT */
#pragma once

#include <dirent.h>

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Small file helpers for code that writes system state as root: nothing here follows a
 * symbolic link. Paths are absolute; every component is opened with O_NOFOLLOW, so a symlink
 * anywhere on the way gives -ELOOP instead of silently writing somewhere else. */

/* Largest file read_file_at() and friends read by default. */
#define CON_FILE_MAX (16U * 1024U * 1024U)

/* Opens an absolute path without following symlinks in any component. flags are passed to the
 * last openat() (O_NOFOLLOW and O_CLOEXEC are added). Returns the fd or -errno; -ELOOP when a
 * component is a symlink. */
int open_nofollow(const char *path, int flags, mode_t mode);
/* After ENOTDIR from openat(dirfd, name, O_DIRECTORY|O_NOFOLLOW): -ELOOP when name is a
 * symlink, else -ENOTDIR. */
int enotdir_or_eloop(int dirfd, const char *name);
/* Opens the parent directory of path (O_DIRECTORY, no symlinks) and returns its fd; *ret_name
 * points into path at the last component. -EINVAL for "/" or a relative path. A folder the
 * caller may traverse but not read (0711) is opened O_PATH: fine for *at() calls, not for
 * reading the folder or fsync(). */
int open_parent_nofollow(const char *path, const char **ret_name);

/* Writes all len bytes of buf to fd, retrying after EINTR and short writes. Returns 0 or -errno;
 * -EIO when write() makes no progress. */
int con_write_all(int fd, const void *buf, size_t len);

/* A directory stream over a duplicate of dirfd (dirfd stays open and the caller's), from its
 * first entry: -errno on failure. */
int con_opendir_dup(int dirfd, DIR **ret);
/* Reads from fd into buf until len bytes are in or end of file, retrying after EINTR. Returns the
 * number of bytes read (less than len only at end of file) or -errno. */
ssize_t con_read_full(int fd, void *buf, size_t len);

/* Reads a whole regular file (no symlink, at most max bytes, else -EFBIG). The buffer is
 * NUL-terminated; *ret_len excludes the NUL and may be NULL. */
int read_fd(int fd, size_t max, char **ret, size_t *ret_len);
int read_file_at(int dirfd, const char *name, size_t max, char **ret, size_t *ret_len);
int read_file_nofollow(const char *path, size_t max, char **ret, size_t *ret_len);

/* Writes data to path atomically: a temp file in the same directory gets owner, mode and the
 * data, is fsync()ed and renamed over path; then the directory is fsync()ed. uid/gid (uid_t)-1
 * keep the caller's. The parent directory must exist. */
int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, uid_t uid, gid_t gid);
