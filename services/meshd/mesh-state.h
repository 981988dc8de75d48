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
        const char *owner;              /* the host the row is charged to (mesh_state_table_apply): its
                                         * MeshStateOwner's string */
        uint64_t since_usec;            /* the first event's time (CLOCK_REALTIME) */
        uint64_t updated_usec;          /* the time of the event that set the state */
} MeshStateEntry;

typedef struct MeshStateOwner {
        char *host;
        size_t n;                       /* its rows (at least 1: an owner without rows goes) */
} MeshStateOwner;

typedef struct MeshStateTable {
        MeshStateEntry *entries;        /* oldest first */
        size_t n, max;                  /* max 0: MESH_STATE_KEEP */
        MeshStateOwner *owners;         /* the hosts rows are charged to, in no order */
        size_t n_owners;
} MeshStateTable;

#define MESH_STATE_KEEP 10000

/* Records ST (checked by mesh_state_check) seen at WHEN_USEC: a task is (id, host, agent, from); its
 * state only moves forward (an end is final), so events read again or out of order change nothing.
 *
 * Each row is charged to a host that published about it (the publisher mesh_state_check believed:
 * the task's origin for submitted, the host that runs it otherwise): the publisher of its first
 * event, and the origin once the origin said submitted (a task the origin sent is the origin's, even
 * when the event of the host running it was read first). When the table is full, the oldest row of
 * the host charged with the most rows goes (of those with as many, the one holding the oldest row):
 * a host that floods the table with events about tasks it claims to run or send pushes out only its
 * own rows, and never a row of a host holding fewer than MAX / (number of hosts). 1 when something
 * changed, 0 when not, -ENOMEM. */
int mesh_state_table_apply(MeshStateTable *t, const MeshState *st, uint64_t when_usec);
/* The number of rows charged to HOST. */
size_t mesh_state_table_owned(const MeshStateTable *t, const char *host);
const MeshStateEntry *mesh_state_table_find(const MeshStateTable *t, const char *id, const char *host,
                                            const char *agent, const char *from);
void mesh_state_table_done(MeshStateTable *t);
