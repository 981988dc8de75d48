/* SPDX-License-Identifier: MIT */
#pragma once

/* The mesh's JetStream streams (docs/MULTIHOST.md, "Who makes the streams"): each host's task and
 * result streams and the shared con-state, their exact configuration, and what the server has of
 * each. Shared by the administrator's con-mesh-streams (con mesh streams: makes, changes, replaces
 * them) and the gateway, which only looks: a host's NATS user may not make, change or remove a
 * stream (NATS permissions name the API subject, never the request's body). Library code: no
 * logging. */

#include <stdbool.h>
#include <stdint.h>

#include <nats/nats.h>

#include "mesh-flood.h"
#include "mesh-util.h"

#define MESH_DUPLICATE_WINDOW_NS (10LL * 60 * 1000 * 1000 * 1000)
/* The largest message each stream stores (JetStream counts the headers too: a message id is one):
 * a task or result of MESH_PAYLOAD_MAX and its headers; a state event of MESH_EVENT_MAX, headers
 * included (the largest legitimate one, 381 bytes, is 803 with them: test-mesh-flood). con-state's
 * MaxBytes is its MaxMsgs such events, so a hostile host fills it with 40 MB at most
 * (docs/MULTIHOST.md, "Floods"). */
#define MESH_STREAM_HEADERS_MAX 4096
#define MESH_STREAM_MSG_MAX ((int32_t) (MESH_PAYLOAD_MAX + MESH_STREAM_HEADERS_MAX))
#define MESH_STATE_MSG_MAX ((int32_t) MESH_EVENT_MAX)

typedef enum MeshStreamId {
        MESH_STREAM_TASK,       /* con-task-<host>: con.task.<host>.*, work queue */
        MESH_STREAM_RESULT,     /* con-result-<host>: con.result.<host>.*, work queue */
        MESH_STREAM_STATE,      /* con-state: con.state.*.*.*, the last event per subject */
} MeshStreamId;

typedef struct MeshStreamConfig {
        jsStreamConfig cfg;             /* what con mesh streams makes (Name, Subjects point below) */
        char *name, *subject;
        const char *subjects[1];
        bool check_duplicates;          /* con-state: the server picks its duplicate window */
} MeshStreamConfig;

/* The administrator's settings (con mesh streams: its options, else mesh: of the con.yaml there). */
typedef struct MeshStreamSettings {
        uint64_t retention_usec;        /* every stream's MaxAge (mesh.retention) */
        unsigned replicas;              /* mesh.replicas */
        /* The task and result streams (docs/MULTIHOST.md, "Floods"): at most MAX_BYTES in each
         * (MaxBytes, mesh.stream_max_bytes) and MAX_PER_HOST messages of one sending host (the last
         * subject token: MaxMsgsPerSubject, mesh.stream_max_per_host); a full stream refuses a new
         * message (DiscardNew, DiscardNewPerSubject) and never drops a stored one. */
        uint64_t max_bytes;
        unsigned max_per_host;
} MeshStreamSettings;

/* The configuration of stream ID (of HOST; NULL for con-state) with SETTINGS. -EINVAL for an
 * invalid host, -ENOMEM. */
int mesh_stream_config(MeshStreamId id, const char *host, const MeshStreamSettings *settings, MeshStreamConfig *ret);
void mesh_stream_config_done(MeshStreamConfig *c);

typedef enum MeshStreamFound {
        MESH_STREAM_FOUND_OK,           /* exactly the mesh's */
        MESH_STREAM_FOUND_SETTINGS,     /* the mesh's, with other max age, replicas, duplicate window or limits */
        MESH_STREAM_FOUND_MISSING,
        MESH_STREAM_FOUND_WRONG,        /* sources, a mirror, a republish, other subjects, retention or storage */
} MeshStreamFound;

/* What the server has of stream C: *ret_found, and for SETTINGS and WRONG *ret_text says what
 * (mesh_stream_shape_check). NATS_OK, or the error of asking (*jerr: JetStream's code). */
natsStatus mesh_stream_inspect(jsCtx *js, const MeshStreamConfig *c, MeshStreamFound *ret_found, char **ret_text,
                               jsErrCode *jerr);

/* Whether stream configuration CFG copies from stream NAME (a source or its mirror). */
bool mesh_stream_copies(const jsStreamConfig *cfg, const char *name);
