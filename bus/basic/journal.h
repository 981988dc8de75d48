/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* An append-only journal of lines (JSON Lines in practice) kept by one writer in a folder of its
 * own: the agent queue's (services/agentd/agent-queue.h) and the mesh gateway's table of sent tasks
 * (services/meshd/mesh-sent.h). No logging.
 *
 * Lines are collected in an in-memory batch and written with one write() (+ one fdatasync()) by
 * con_journal_commit(): a group commit; nothing that depends on them may be acknowledged before
 * it returns. A failed commit cuts the file back to its last good size. At replay a torn last line
 * (a crash in the middle of a write: no '\n') is cut off, never handed to the caller; a line longer
 * than the caller's limit is skipped and counted, never held in memory whole. Compaction writes a
 * new file beside it (.NAME.compact), syncs it and renames it over the journal.
 *
 * Only a file this process's user wrote is trusted: its own, regular, not writable by group or
 * others, one link. Anything else at NAME is set aside as NAME.untrusted-<usec> (for inspection)
 * and an empty journal made. */

typedef struct ConJournal ConJournal;

typedef struct ConJournalReplay {
        uint64_t n_lines;       /* lines the callback took */
        unsigned n_corrupt;     /* lines it refused, or longer than the limit */
        bool torn_tail;         /* a torn last line was cut off */
} ConJournalReplay;

/* Called for each complete line, without its '\n' (LINE is NUL-terminated, LEN its length, no NUL
 * inside: a line holding one is counted corrupt). < 0: the line is corrupt (counted, replay goes
 * on), except -ENOMEM, which stops the replay. */
typedef int (*ConJournalLineFn)(char *line, size_t len, void *userdata);
/* Writes the compacted journal's lines to F (con_journal_put()). */
typedef int (*ConJournalWriteFn)(FILE *f, void *userdata);

/* Opens DIR_FD/NAME (made 0600 when missing), removes a half-written compacted copy. *RET_SET_ASIDE
 * (may be NULL): an untrusted file was set aside. One journal per folder, one writer: the folder is
 * locked (flock) until con_journal_free(); -EBUSY when another process, or another open journal of
 * this one, holds it. The folder is fsync()ed by the first synced commit when the open made or
 * set aside a file. */
int con_journal_open(int dir_fd, const char *name, ConJournal **ret, bool *ret_set_aside);
ConJournal *con_journal_free(ConJournal *j);
static inline void con_journal_freep(ConJournal **j) {
        con_journal_free(*j);
}

/* Reads the journal from its start, before anything is appended (a reader may make several passes:
 * each hands over the same lines; the first cuts a torn last line off). */
int con_journal_replay(ConJournal *j, size_t line_max, ConJournalLineFn fn, void *userdata, ConJournalReplay *ret);

/* Adds LINE (without '\n'; -EINVAL when it holds one) to the batch. */
int con_journal_append(ConJournal *j, const char *line);
bool con_journal_has_batch(const ConJournal *j);
/* Writes the batch; with SYNC, on disk when it returns (fdatasync, and the folder's fsync when its
 * entries changed since the last one). 0 when the batch is empty. */
int con_journal_commit(ConJournal *j, bool sync);
/* The journal's bytes on disk (committed). */
uint64_t con_journal_size(const ConJournal *j);

/* Replaces the journal by what FN writes (fsync()ed, renamed over it, the folder fsync()ed; when
 * that last sync fails, the next synced commit syncs it first). -EBUSY while a batch waits. On
 * failure the old journal stays. */
int con_journal_rewrite(ConJournal *j, ConJournalWriteFn fn, void *userdata);
/* One line (and its '\n') into a compacted journal; -EINVAL when LINE holds a '\n', the write's
 * -errno (-ENOSPC for a full disk) when stdio reports a failure. */
int con_journal_put(FILE *f, const char *line);
