/* SPDX-License-Identifier: MIT */
/* An append-only journal of lines (journal.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "journal.h"
#include "macro.h"
#include "time-util.h"

#define COMPACT_PREFIX "."
#define COMPACT_SUFFIX ".compact"
#define BATCH_KEEP_MAX (1024U * 1024)
#define READ_CHUNK (64U * 1024)

struct ConJournal {
        int dir_fd, fd;
        char *name, *compact_name;
        uint64_t size;          /* committed bytes */
        bool dir_unsynced;      /* the folder's entries changed and are not on disk yet */
        char *batch;
        size_t batch_len, batch_alloc;
};

ConJournal *con_journal_free(ConJournal *j) {
        if (!j)
                return NULL;
        safe_close(j->dir_fd);
        safe_close(j->fd);
        free(j->name);
        free(j->compact_name);
        free(j->batch);
        free(j);
        return NULL;
}

/* What this process's user wrote itself (sessions and other users cannot have). */
static bool trusted(const struct stat *st) {
        return S_ISREG(st->st_mode) && st->st_uid == geteuid() && !(st->st_mode & 022) && st->st_nlink == 1;
}

static int open_trusted(ConJournal *j, bool *ret_set_aside) {
        struct stat st;
        for (unsigned i = 0; i < 2; i++) {
                j->fd = openat(j->dir_fd, j->name, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
                if (j->fd < 0 && errno == ENOENT) {
                        j->fd = openat(j->dir_fd, j->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY,
                                       0600);
                        j->dir_unsynced = true;
                }
                if (j->fd < 0 && errno != ELOOP)
                        return -errno;
                if (j->fd >= 0) {
                        if (fstat(j->fd, &st) < 0)
                                return -errno;
                        if (trusted(&st))
                                return 0;
                        j->fd = safe_close(j->fd);
                }
                if (i > 0)
                        return -EPERM;
                char aside[NAME_MAX + 1];
                int n = snprintf(aside, sizeof(aside), "%s.untrusted-%" PRIu64, j->name, con_now(CLOCK_REALTIME));
                if (n < 0 || (size_t) n >= sizeof(aside))
                        return -ENAMETOOLONG;
                if (renameat2(j->dir_fd, j->name, j->dir_fd, aside, RENAME_NOREPLACE) < 0)
                        return -errno;
                j->dir_unsynced = true;
                if (ret_set_aside)
                        *ret_set_aside = true;
        }
        return -EPERM;
}

int con_journal_open(int dir_fd, const char *name, ConJournal **ret, bool *ret_set_aside) {
        if (!name || !*name || strchr(name, '/') || streq(name, ".") || streq(name, ".."))
                return -EINVAL;
        _cleanup_(con_journal_freep) ConJournal *j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->dir_fd = j->fd = -EBADF;
        if (ret_set_aside)
                *ret_set_aside = false;
        j->name = strdup(name);
        if (!j->name || asprintf(&j->compact_name, COMPACT_PREFIX "%s" COMPACT_SUFFIX, name) < 0)
                return -ENOMEM;
        /* A description of the folder of its own, so that the lock below is this journal's alone
         * (flock() locks belong to the open file description, which a dup() would share). */
        j->dir_fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (j->dir_fd < 0)
                return -errno;
        /* The one writer: a second process (or a second open in this one) would append at an
         * offset of its own over the first's records, and cut its writes in progress as torn. */
        if (flock(j->dir_fd, LOCK_EX | LOCK_NB) < 0)
                return errno == EWOULDBLOCK ? -EBUSY : -errno;
        /* A compacted copy left by a writer killed mid-write goes. */
        if (unlinkat(j->dir_fd, j->compact_name, 0) < 0 && errno != ENOENT)
                return -errno;
        int r = open_trusted(j, ret_set_aside);
        if (r < 0)
                return r;
        off_t end = lseek(j->fd, 0, SEEK_END);
        if (end < 0)
                return -errno;
        j->size = (uint64_t) end;
        *ret = TAKE_PTR(j);
        return 0;
}

/* Hands one complete line to FN. */
static int replay_line(char *line, size_t len, ConJournalLineFn fn, void *userdata, ConJournalReplay *st) {
        line[len] = 0;
        int r = memchr(line, 0, len) ? -EBADMSG : fn(line, len, userdata);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                st->n_corrupt++;
        else
                st->n_lines++;
        return 0;
}

int con_journal_replay(ConJournal *j, size_t line_max, ConJournalLineFn fn, void *userdata, ConJournalReplay *ret) {
        ConJournalReplay st = {};
        _cleanup_free_ char *buf = malloc(READ_CHUNK), *line = NULL;
        size_t len = 0, alloc = 0;
        bool skipping = false;          /* in a line longer than LINE_MAX */
        uint64_t off = 0, line_start = 0;

        if (!buf)
                return -ENOMEM;
        if (line_max == 0 || line_max >= SIZE_MAX / 2)
                return -EINVAL;
        for (;;) {
                ssize_t n = pread(j->fd, buf, READ_CHUNK, (off_t) off);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                for (size_t i = 0; i < (size_t) n; ) {
                        const char *nl = memchr(buf + i, '\n', (size_t) n - i);
                        size_t take = nl ? (size_t) (nl - (buf + i)) : (size_t) n - i;
                        if (!skipping && len + take > line_max) {
                                skipping = true;
                                len = 0;
                        }
                        if (!skipping) {
                                if (len + take + 1 > alloc) {
                                        size_t a = len + take + 1 > 4096 ? (len + take + 1) * 2 : 4096;
                                        if (a > line_max + 1)
                                                a = line_max + 1;
                                        char *p = realloc(line, a);
                                        if (!p)
                                                return -ENOMEM;
                                        line = p;
                                        alloc = a;
                                }
                                memcpy(line + len, buf + i, take);
                                len += take;
                        }
                        i += take;
                        if (!nl)
                                break;
                        i++;    /* the '\n' */
                        if (skipping)
                                st.n_corrupt++;
                        else {
                                int r = replay_line(line, len, fn, userdata, &st);
                                if (r < 0)
                                        return r;
                        }
                        skipping = false;
                        len = 0;
                        line_start = off + i;
                }
                off += (uint64_t) n;
        }
        if (off > line_start) {
                /* A torn last line: a crash in the middle of a write. Never acknowledged: dropped. */
                if (ftruncate(j->fd, (off_t) line_start) < 0)
                        return -errno;
                st.torn_tail = true;
        }
        j->size = line_start;
        if (lseek(j->fd, (off_t) line_start, SEEK_SET) < 0)
                return -errno;
        if (ret)
                *ret = st;
        return 0;
}

int con_journal_append(ConJournal *j, const char *line) {
        size_t l = strlen(line);
        if (memchr(line, '\n', l))
                return -EINVAL;
        if (l + 1 > SIZE_MAX - j->batch_len)
                return -ENOMEM;
        if (j->batch_len + l + 1 > j->batch_alloc) {
                size_t n = j->batch_alloc * 2;
                if (n < j->batch_len + l + 1 + 4096)
                        n = j->batch_len + l + 1 + 4096;
                char *b = realloc(j->batch, n);
                if (!b)
                        return -ENOMEM;
                j->batch = b;
                j->batch_alloc = n;
        }
        memcpy(j->batch + j->batch_len, line, l);
        j->batch[j->batch_len + l] = '\n';
        j->batch_len += l + 1;
        return 0;
}

bool con_journal_has_batch(const ConJournal *j) {
        return j->batch_len > 0;
}

uint64_t con_journal_size(const ConJournal *j) {
        return j->size;
}

int con_journal_commit(ConJournal *j, bool sync) {
        if (j->batch_len == 0)
                return 0;
        /* The journal's own name must be on disk before anything in it counts as committed (made
         * at open, or renamed into place by a compaction whose folder sync failed). */
        if (sync && j->dir_unsynced) {
                if (fsync(j->dir_fd) < 0)
                        return -errno;
                j->dir_unsynced = false;
        }
        int r = con_write_all(j->fd, j->batch, j->batch_len);
        if (r >= 0 && sync && fdatasync(j->fd) < 0)
                r = -errno;
        if (r < 0) {
                /* Cut back to the last good size: the next commit must not follow a torn line. */
                (void) ftruncate(j->fd, (off_t) j->size);
                (void) lseek(j->fd, (off_t) j->size, SEEK_SET);
                return r;
        }
        j->size += j->batch_len;
        j->batch_len = 0;
        /* Do not keep a huge buffer around after a burst. */
        if (j->batch_alloc > BATCH_KEEP_MAX) {
                free(j->batch);
                j->batch = NULL;
                j->batch_alloc = 0;
        }
        return 0;
}

int con_journal_put(FILE *f, const char *line) {
        if (strchr(line, '\n'))
                return -EINVAL;
        /* What the write said (a full disk is ENOSPC), not a generic I/O error. */
        errno = 0;
        if (fputs(line, f) < 0 || fputc('\n', f) < 0)
                return negative_errno();
        return 0;
}

int con_journal_rewrite(ConJournal *j, ConJournalWriteFn fn, void *userdata) {
        if (j->batch_len > 0)
                return -EBUSY;
        (void) unlinkat(j->dir_fd, j->compact_name, 0);
        _cleanup_close_ int fd = openat(j->dir_fd, j->compact_name,
                                        O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
        if (fd < 0)
                return -errno;
        int wfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (wfd < 0)
                return -errno;
        _cleanup_fclose_ FILE *f = fdopen(wfd, "w");
        if (!f) {
                safe_close(wfd);
                return -errno;
        }
        int r = fn(f, userdata);
        if (r >= 0 && fflush(f) != 0)
                r = negative_errno();
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        off_t size = r >= 0 ? lseek(fd, 0, SEEK_END) : 0;
        if (r >= 0 && size < 0)
                r = -errno;
        if (r >= 0 && renameat(j->dir_fd, j->compact_name, j->dir_fd, j->name) < 0)
                r = -errno;
        if (r < 0) {
                (void) unlinkat(j->dir_fd, j->compact_name, 0);
                return r;
        }
        /* The rename is done: a failed folder sync cannot undo it, so the next synced commit
         * syncs the folder before it counts (con_journal_commit()). */
        j->dir_unsynced = fsync(j->dir_fd) < 0;
        safe_close(j->fd);
        j->fd = TAKE_FD(fd);
        j->size = (uint64_t) size;
        return 0;
}
