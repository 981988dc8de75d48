/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

/* Spool directories: durable writes, claims by rename, and safe reads of untrusted files.
 * All functions take a directory fd and a plain file name (no '/'); they return negative
 * errno and do not log. */

/* Write data to dirfd/name durably: temp file ".NAME.XXXXXX" in the same directory, write,
 * fsync (when sync), fchmod(mode), optional fchown (uid/gid != -1), optional reader ACL, rename over name, then
 * fsync the directory (when sync). With noreplace, an existing name gives -EEXIST. */
typedef struct ConSpoolWrite {
        mode_t mode;
        uid_t uid;              /* (uid_t) -1: keep */
        gid_t gid;              /* (gid_t) -1: keep */
        bool sync;
        bool noreplace;
        uid_t reader;           /* 0 or (uid_t) -1: none; else an ACL entry u:READER:r-- is set
                                 * before the rename (a response readable by its task's sender) */
} ConSpoolWrite;
int con_spool_write(int dirfd, const char *name, const void *data, size_t len, const ConSpoolWrite *opts);

/* Removes the temp files con_spool_write() leaves when its writer is killed between create and
 * rename (".NAME.XXXXXX", regular files only; other dot-files stay). Only for a folder whose one
 * writer is the caller, at its start, before it writes: another writer's temp file in progress
 * would go too. Returns the number removed, or a negative errno. */
int con_spool_remove_temps(int dirfd);

/* Retention: deletes the regular files of dirfd ending in suffix ("" for any; never dot-files, nor
 * the one named except) last modified before older_than_usec (CLOCK_REALTIME; 0: none for their
 * age), and those beyond the keep most recently modified (SIZE_MAX: no limit). Returns how many
 * were deleted. */
int con_spool_prune(int dirfd, const char *suffix, size_t keep, uint64_t older_than_usec, const char *except);

/* Group commit helper: fsync a directory once after many renames into it. */
int con_spool_sync_dir(int dirfd);

/* Claim a file by rename (RENAME_NOREPLACE): -EEXIST when the target exists, -ENOENT when
 * someone else took the source first. */
int con_spool_claim(int from_dirfd, const char *from, int to_dirfd, const char *to);

/* Open an untrusted inbox file: O_RDONLY|O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC|O_NOCTTY, then fstat:
 * must be a regular file, st_nlink == 1, size <= max_size. Returns the fd and the stat.
 * Errors: -ELOOP (symlink), -EBADFD (not a regular file), -EMLINK (more than one hard link),
 * -EFBIG (larger than max_size), or the error of open(2). */
int con_spool_open_untrusted(int dirfd, const char *name, size_t max_size, int *ret_fd, struct stat *ret_st);
/* Same, then read it all. *ret_buf is NUL-terminated (not counted in *ret_len). */
int con_spool_read_untrusted(int dirfd, const char *name, size_t max_size, char **ret_buf, size_t *ret_len,
                             struct stat *ret_st);

/* A name the spool ignores: dot-files, temp names ("*.tmp", "*~", ".#*"), names not ending in
 * suffix (e.g. ".task"). */
bool con_spool_name_is_candidate(const char *name, const char *suffix);

/* A short reason for the untrusted-open errors above, for rejection reason files. */
const char *con_spool_reject_reason(int err);
