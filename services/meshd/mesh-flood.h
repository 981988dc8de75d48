/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a hostile host can make a gateway write (docs/MULTIHOST.md, "Floods"). Pure: no I/O, no
 * logging, no clock (the caller passes the time).
 *
 * The largest cancel or state event a gateway takes: the largest legitimate one (every name at its
 * longest, test-mesh-flood checks it) is about 400 bytes. A larger one is dropped before it is
 * copied or parsed. */
#define MESH_EVENT_MAX 1024U

/* A per-host budget of log lines and audit records about hostile messages (forged, refused,
 * malformed): BURST of them per host and interval, the rest only counted; the count is reported
 * (one line and one record) once the interval has ended. A key is what the caller keeps apart: the
 * gateway's is "HOST KIND", the publisher the server's permissions pin and the message's kind, so 4
 * kinds of 64 hosts fill the table. At most MESH_FLOOD_HOSTS_MAX keys are kept apart; beyond them,
 * while every kept key has a count to report, the others share one budget named "*". */
#define MESH_FLOOD_HOSTS_MAX 256U

typedef struct MeshFloodHost {
        char *host;
        uint64_t start_usec;    /* the interval's start (its first event) */
        unsigned recorded;      /* events recorded in this interval */
        uint64_t suppressed;    /* ... and only counted */
        uint64_t pending;       /* counted in an ended interval, not yet reported */
} MeshFloodHost;

typedef struct MeshFlood {
        uint64_t interval_usec;
        unsigned burst;
        MeshFloodHost *hosts;
        size_t n_hosts;
} MeshFlood;

void mesh_flood_done(MeshFlood *f);
/* An event of HOST at NOW: 1 when it is to be logged and audited, 0 when only counted, -ENOMEM
 * (the caller records it then: nothing is lost silently). */
int mesh_flood_note(MeshFlood *f, const char *host, uint64_t now_usec);
/* A count to report: 1 with the host (valid until the next call on F) and the events counted, not
 * recorded, in its ended intervals (reset by this), 0 when none is due at NOW. */
int mesh_flood_due(MeshFlood *f, uint64_t now_usec, const char **ret_host, uint64_t *ret_count);
/* When the next count is due (NOW or earlier: now), UINT64_MAX when none. */
uint64_t mesh_flood_next_usec(const MeshFlood *f);
