/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "mesh-util.h"

/* The mesh-wide state of remote tasks (docs/MULTIHOST.md, "The state of remote tasks"). Pure: no
 * I/O, no logging.
 *
 * Every gateway reads the stream con-state (MESH_STATE_FILTER, the last event of each subject) and
 * keeps what it read in a bounded table, whichever hosts the task went between. An event is believed
 * only when its subject's publisher (the token the NATS server pins) may say it: the host that runs
 * the task (the payload's "host") for accepted, working and the end, the task's origin (the host of
 * its "from", the subject's first host) for submitted; the subject's task id must be the payload's. */

/* 0 when the state event ST that came on SUBJECT is believable. -EBADMSG: SUBJECT is not a state
 * event's subject. -EPERM: a forgery (or a mistake) of the publisher; *ret_publisher (if not NULL)
 * is then the subject's publisher, *ret_why what is wrong (static text). -ENOMEM. */
int mesh_state_check(const char *subject, const MeshState *st, char **ret_publisher, const char **ret_why);

/* submitted 0, accepted 1, working 2, completed/failed/canceled 3, anything else -1. */
int mesh_state_rank(const char *state);

typedef struct MeshStateEntry {
        char *id, *host, *agent, *from, *state;   /* from is USER@ORIGIN */
        uint64_t since_usec;            /* the first event's time (CLOCK_REALTIME) */
        uint64_t updated_usec;          /* the time of the event that set the state */
} MeshStateEntry;

typedef struct MeshStateTable {
        MeshStateEntry *entries;        /* oldest first */
        size_t n, max;                  /* max 0: MESH_STATE_KEEP */
} MeshStateTable;

#define MESH_STATE_KEEP 10000

/* Records ST (checked) seen at WHEN_USEC: a task is (id, host, agent, from); its state only moves
 * forward (an end is final), so events read again or out of order change nothing. When the table is
 * full the oldest task goes. 1 when something changed, 0 when not, -ENOMEM. */
int mesh_state_table_apply(MeshStateTable *t, const MeshState *st, uint64_t when_usec);
const MeshStateEntry *mesh_state_table_find(const MeshStateTable *t, const char *id, const char *host,
                                            const char *agent, const char *from);
void mesh_state_table_done(MeshStateTable *t);
