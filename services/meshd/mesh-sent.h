/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mesh-util.h"

/* The sending gateway's record of a task it sent to another host (docs/MULTIHOST.md, "The table
 * of sent tasks"): one file per task, CON_MESH_SENT_DIR/<id>.sent, written by the gateway alone
 * (con-mesh 0600 in a con-mesh 0700 folder). No logging.
 *
 * The file is one or two lines. The first is the record:
 *   {"v":1,"id":TASK_ID,"agent":AGENT,"host":HOST,"uid":UID,"sender":USER,"state":STATE,
 *    "ts":SUBMITTED_USEC[,"stored":true][,"end":ENDED_USEC]}
 * "stored" once JetStream acknowledged the task. STATE is submitted, accepted or working (the last state event before the result); the
 * timestamps are CLOCK_REALTIME microseconds. The second line, once the result came back, is the
 * result message exactly as the result stream carries it (mesh_result_to_json(): its id, host and
 * agent the record's, its "from" USER@<this host>). Keys the record does not know are ignored (a
 * later version may add some); a file whose name is not its id's is refused. */

#define MESH_SENT_SUFFIX ".sent"
#define MESH_SENT_FILE_MAX (MESH_PAYLOAD_MAX + 8192)

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
        MeshResult result;
} MeshSent;

void mesh_sent_done(MeshSent *s);
void mesh_sent_free_many(MeshSent *s, size_t n);

/* The file's text. -EINVAL when a field is invalid (done with a result of another task), -ENOMEM. */
int mesh_sent_to_text(const MeshSent *s, const char *me, char **ret);
/* Parses a file's text for host ME (the result's sender must be USER@ME). -EBADMSG when
 * malformed, -ENOMEM. */
int mesh_sent_from_text(const char *data, size_t len, const char *me, MeshSent *ret);

/* Retention (docs/MULTIHOST.md): an ended task is forgotten KEEP_USEC after its result came; one
 * never answered KEEP_USEC after it could last have been taken from its host's stream (WAIT_USEC,
 * mesh.retention, after it was sent). */
bool mesh_sent_expired(const MeshSent *s, uint64_t now_usec, uint64_t keep_usec, uint64_t wait_usec);

/* Opens (making it 0700 when missing) the folder NAME below PARENT_FD: it must be this process's
 * user's and closed to group and others (-EPERM otherwise). Returns the fd. */
int mesh_sent_open_dir(int parent_fd, const char *name);
/* Writes S as DIR_FD/<id>.sent (0600), replacing it; with sync, the file and the folder are on
 * disk when it returns. */
int mesh_sent_write(int dir_fd, const MeshSent *s, const char *me, bool sync);
/* Makes the records of IDS, written without sync, durable: fdatasync() of each (one gone since is
 * skipped), then fsync() of the folder. One journal commit usually covers the whole group. */
int mesh_sent_sync(int dir_fd, char * const *ids);
/* Removes <id>.sent; 0 when it was not there. */
int mesh_sent_remove(int dir_fd, const char *id);
/* Reads every <id>.sent of DIR_FD (removing the temp files of a writer killed mid-write first: the
 * caller must be the folder's one writer), in the order they were sent. Files that do not parse
 * are skipped and counted in *ret_bad (left in place). */
int mesh_sent_load(int dir_fd, const char *me, MeshSent **ret, size_t *ret_n, unsigned *ret_bad);
