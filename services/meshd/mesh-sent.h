/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mesh-util.h"

/* The sending gateway's records of the tasks it sent to other hosts (docs/MULTIHOST.md, "The
 * table of sent tasks"): an append-only journal, CON_MESH_SENT_DIR/journal (bus/basic/journal.h:
 * group commit, torn last line cut off, compaction, a file not con-mesh's own set aside), written
 * by the gateway alone (con-mesh 0600 in a con-mesh 0700 folder) but read as outside input. No
 * logging.
 *
 * One JSON object a line; the last "put" of an id is its record, a "forget" drops it:
 *   {"v":1,"op":"put","id":TASK_ID,"agent":AGENT,"host":HOST,"uid":UID,"sender":USER,"state":STATE,
 *    "ts":SUBMITTED_USEC[,"stored":true][,"cancel":BY][,"end":ENDED_USEC,"result":RESULT]}
 *   {"v":1,"op":"forget","id":TASK_ID}
 * "stored" once JetStream acknowledged the task; STATE is submitted, accepted or working (the last
 * state event before the result); the timestamps are CLOCK_REALTIME microseconds. "cancel": a
 * Cancel was asked (BY: USER@<this host>, the sender or root), sent again until the result is back.
 * RESULT, once the result came back, is a string: the result message exactly as the result stream
 * carries it (mesh_result_to_json(): its id, host and agent the record's, its "from"
 * USER@<this host>). Keys a record does not know are ignored (a later version may add some).
 *
 * Earlier versions kept one file per task, CON_MESH_SENT_DIR/<id>.sent: the record's head as above
 * (without "op", "cancel" and "result") on the first line, the result message on the second.
 * mesh_sent_journal_open() moves them into the journal (read, written, synced, removed). */

#define MESH_SENT_SUFFIX ".sent"
#define MESH_SENT_FILE_MAX (MESH_PAYLOAD_MAX + 8192)
/* A record: the result message (at most MESH_PAYLOAD_MAX) escaped as a string at most doubles. */
#define MESH_SENT_RECORD_MAX (2U * MESH_PAYLOAD_MAX + 8192)
#define MESH_SENT_JOURNAL "journal"

typedef struct MeshSent {
        char *id, *agent, *host;
        char *sender;                   /* the user name on this host */
        uid_t uid;
        const char *state;              /* static: "submitted", "accepted" or "working" */
        uint64_t submitted_usec;        /* CLOCK_REALTIME */
        uint64_t ended_usec;            /* when the result came; 0 before */
        bool stored;                    /* JetStream acknowledged the task (before that, the
                                         * sender may send it again under the same id) */
        bool done;                      /* result is set */
        char *cancel_by;                /* USER@<this host> who asked to cancel it, or NULL */
        MeshResult result;
} MeshSent;

void mesh_sent_done(MeshSent *s);
void mesh_sent_free_many(MeshSent *s, size_t n);

/* An earlier version's file text (tests write it; cancel_by is not part of it). -EINVAL when a
 * field is invalid (done with a result of another task), -ENOMEM. */
int mesh_sent_to_text(const MeshSent *s, const char *me, char **ret);
/* Parses an earlier version's file text for host ME (the result's sender must be USER@ME).
 * -EBADMSG when malformed, -ENOMEM. */
int mesh_sent_from_text(const char *data, size_t len, const char *me, MeshSent *ret);

/* A "put" record of S (one line, no '\n'). -EINVAL when a field is invalid, -ENOMEM. */
int mesh_sent_to_record(const MeshSent *s, const char *me, char **ret);
/* Parses one journal line for host ME: a "put" (returns 0 and the record) or a "forget" (returns 1,
 * only ret->id set). -EBADMSG when malformed, -ENOMEM. */
int mesh_sent_from_record(const char *line, size_t len, const char *me, MeshSent *ret);

/* Retention (docs/MULTIHOST.md): an ended task is forgotten KEEP_USEC after its result came; one
 * never answered KEEP_USEC after it could last have been taken from its host's stream (WAIT_USEC,
 * mesh.retention, after it was sent). */
bool mesh_sent_expired(const MeshSent *s, uint64_t now_usec, uint64_t keep_usec, uint64_t wait_usec);

/* Opens (making it 0700 when missing) the folder NAME below PARENT_FD: it must be this process's
 * user's and closed to group and others (-EPERM otherwise). Returns the fd. */
int mesh_sent_open_dir(int parent_fd, const char *name);
/* Reads every <id>.sent of an earlier version in DIR_FD (removing the temp files of a writer killed
 * mid-write first: the caller must be the folder's one writer), in the order they were sent. Files
 * that do not parse are skipped and counted in *ret_bad (left in place). */
int mesh_sent_load(int dir_fd, const char *me, MeshSent **ret, size_t *ret_n, unsigned *ret_bad);

typedef struct MeshSentJournal MeshSentJournal;

typedef struct MeshSentLoadStats {
        unsigned n_corrupt;     /* journal lines skipped (malformed) */
        bool torn_tail;         /* a torn last line was cut off */
        bool set_aside;         /* the journal was not con-mesh's own file: set aside, not read */
        size_t n_migrated;      /* <id>.sent files moved into the journal */
        unsigned n_bad_files;   /* <id>.sent files that do not parse (left in place) */
} MeshSentLoadStats;

/* Opens DIR_FD's journal for host ME, replays it, moves an earlier version's files into it, and
 * returns the records (in the order they were sent). */
int mesh_sent_journal_open(int dir_fd, const char *me, MeshSentJournal **ret, MeshSent **ret_all,
                           size_t *ret_n, MeshSentLoadStats *ret_stats);
MeshSentJournal *mesh_sent_journal_free(MeshSentJournal *j);
static inline void mesh_sent_journal_freep(MeshSentJournal **j) {
        mesh_sent_journal_free(*j);
}
/* Into the batch: S's record (replacing its earlier ones), or the end of ID's. */
int mesh_sent_journal_put(MeshSentJournal *j, const MeshSent *s);
int mesh_sent_journal_forget(MeshSentJournal *j, const char *id);
bool mesh_sent_journal_has_batch(const MeshSentJournal *j);
/* One write of the batch; with SYNC one fdatasync(): what Submit's answer and a result's
 * acknowledgement wait for. */
int mesh_sent_journal_commit(MeshSentJournal *j, bool sync);
/* Whether the journal holds many more records than the N_LIVE tasks known. */
bool mesh_sent_journal_want_compact(const MeshSentJournal *j, size_t n_live);
/* Rewrites the journal as one record per task of ALL (the batch must be committed: -EBUSY). */
int mesh_sent_journal_compact(MeshSentJournal *j, const MeshSent *all, size_t n);
uint64_t mesh_sent_journal_size(const MeshSentJournal *j);
