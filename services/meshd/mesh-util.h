/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The mesh's wire format and names (docs/MULTIHOST.md). Pure: no I/O, no logging.
 *
 * Subjects and streams, one pair per host. The subject names the host a message is for AND the
 * host that sent it, so the NATS server's per-host publish permissions (con mesh server-config:
 * host H may publish only on con.task.*.H and con.result.*.H) make the sender's host name in the
 * subject a fact the server enforced; the receiver takes the origin host from there, never from
 * the payload:
 *   con.task.<to>.<from>     stream con-task-<to>     (con.task.<to>.*: the tasks for <to>'s agents)
 *   con.result.<to>.<from>   stream con-result-<to>   (con.result.<to>.*: results for tasks <to> sent)
 * The JetStream message id (Nats-Msg-Id) of a task is "<origin>.<task id>", of a result
 * "r.<host>.<task id>", so a publish retried after a lost acknowledgement is stored once.
 *
 * A task message is one JSON object:
 *   {"v":1,"id":TASK_ID,"from":"USER@ORIGIN","origin":ORIGIN,"agent":AGENT,"text":TEXT,
 *    "priority":P,"deadline":"2026-12-01T10:00:00.000000Z"}
 * "priority" (0..9) only when not the default 5, "deadline" (RFC 3339 in UTC, the front matter's
 * syntax: an absolute time, so the hosts' clocks must agree) only when there is one; a receiver
 * of before them refuses the message (unknown key).
 * "from" is written by the origin host's gateway from the bus credentials of the caller, never
 * from anything the caller sent. A result message:
 *   {"v":1,"id":TASK_ID,"host":HOST,"agent":AGENT,"from":"USER@ORIGIN","status":STATUS,"text":TEXT,
 *    "truncated":B,"replaced":B,"size":N}
 * STATUS is completed, failed or canceled (a refusal on the receiving host is failed, with the
 * reason as text).
 *
 * State events (ids, names and a state, never text) go to the one JetStream stream con-state that
 * every host reads (mesh-state.h), on con.state.<origin>.<publisher>.<id~>, published by the host
 * that runs the task (accepted, working, completed, failed, canceled) or by its origin (submitted):
 *   {"v":1,"id":TASK_ID,"host":HOST,"agent":AGENT,"from":"USER@ORIGIN","state":STATE}
 * HOST is the host that runs the task; <id~> is the task id with its dots as '~' (one token). */

#define MESH_PAYLOAD_MAX (2U * 1024 * 1024)

typedef enum MeshKind {
        MESH_KIND_TASK,
        MESH_KIND_RESULT,
} MeshKind;

/* con.task.<to>.<from> / con.result.<to>.<from>; -EINVAL for an invalid host name. */
int mesh_subject(MeshKind k, const char *to, const char *from, char **ret);
/* The stream's subjects: con.task.<host>.* / con.result.<host>.* */
int mesh_subject_filter(MeshKind k, const char *host, char **ret);
/* The sending host of a message that arrived on SUBJECT for host ME (con.task.<me>.<from>):
 * *ret_from points into subject. -EBADMSG when the subject is not of that form or <from> is
 * not a valid host name. */
int mesh_subject_sender(MeshKind k, const char *me, const char *subject, const char **ret_from);
/* con-task-<host> / con-result-<host> */
int mesh_stream(MeshKind k, const char *host, char **ret);
/* The inverse, for the names JetStream lists: 0 with the kind and the host for con-task-<host>
 * and con-result-<host> (a valid host name), -EINVAL for any other stream, -ENOMEM. */
int mesh_stream_parse(const char *name, MeshKind *ret_kind, char **ret_host);

/* What `con mesh status` shows of one stream (GetStatus, docs/MULTIHOST.md). */
typedef struct MeshStreamStatus {
        char *name, *host;
        MeshKind kind;
        uint64_t messages, bytes;
        uint64_t oldest_usec;   /* CLOCK_REALTIME of the oldest message waiting, 0: none */
        bool consumer;          /* the durable consumer of the host's gateway exists: it joined */
        uint64_t pending;       /* messages the consumer has not been given yet */
        uint64_t ack_pending;   /* given to the gateway, not yet acknowledged */
        uint64_t redelivered;
} MeshStreamStatus;

void mesh_stream_status_free_many(MeshStreamStatus *s, size_t n);

/* con.state.<origin>.<publisher>.<id~>: about task ID of ORIGIN, published by PUBLISHER (the last
 * but one token names the publisher, so per-host NATS publish permissions pin it: con.state.*.H.*;
 * docs/MULTIHOST.md). The id's dots are written '~' (a task id has no '~'), so it is one token and
 * the stream keeps the last event of each (origin, publisher, task). -EINVAL for an invalid name. */
int mesh_state_subject(const char *origin, const char *publisher, const char *id, char **ret);
#define MESH_STATE_STREAM "con-state"
#define MESH_STATE_FILTER "con.state.*.*.*"
/* The inverse: the origin, the publisher and the task id (dots back). -EBADMSG when SUBJECT is not
 * such a subject of valid names, -ENOMEM. */
int mesh_state_subject_parse(const char *subject, char **ret_origin, char **ret_publisher, char **ret_id);

typedef struct MeshState {
        char *id;
        char *host;             /* the host that runs the task */
        char *agent;
        char *from;             /* the task's sender, USER@ORIGIN */
        char *state;            /* submitted, accepted, working, completed, failed, canceled */
} MeshState;

void mesh_state_done(MeshState *s);
/* -ENOMEM, or -EINVAL when a field is invalid. */
int mesh_state_to_json(const MeshState *s, char **ret);
/* Every field present and valid, no other key; -EBADMSG when malformed, -ENOMEM. */
int mesh_state_from_json(const char *data, size_t len, MeshState *ret);

/* Cancels, plain NATS messages (not stored: the sending gateway sends one again every few seconds
 * until the task's result is back) on con.cancel.<to>.<from>, published by FROM, the host that
 * sent the task, for TO, the host running it (the last token names the publisher, so the server's
 * per-host permissions pin it). FROM NULL: "con.cancel.<to>.*", what TO subscribes to. -EINVAL for
 * an invalid host name. */
int mesh_cancel_subject(const char *to, const char *from, char **ret);
/* The publishing host of a cancel's subject (con.cancel.<me>.<from>): a pointer into subject, or
 * NULL when it is not such a subject. */
const char *mesh_cancel_subject_host(const char *subject, const char *me);

/*   {"v":1,"id":TASK_ID,"agent":AGENT,"from":"USER@ORIGIN","by":"USER@ORIGIN"[,"resend":true]}
 * "from" is the task's sender, "by" who cancels it (the sender, or root of the origin), both of
 * the same host: the cancel's origin, which the receiver checks against the subject's.
 * With "resend": true it is no cancel but a request to send the task's result again (the origin's
 * gateway saw the task end and its result did not come: docs/MULTIHOST.md, "A result lost on the
 * way"); "by" is then the task's sender ("from"), asked for by its gateway. A receiver of before it
 * drops the message as malformed (unknown key). */
typedef struct MeshCancel {
        char *id;
        char *agent;
        char *from;
        char *by;
        bool resend;
} MeshCancel;

void mesh_cancel_done(MeshCancel *c);
/* -ENOMEM, or -EINVAL when a field is invalid. */
int mesh_cancel_to_json(const MeshCancel *c, char **ret);
/* Every field present and valid, from and by of one host (the same USER@HOST with "resend", which
 * is true when present), no other key; -EBADMSG, -ENOMEM. */
int mesh_cancel_from_json(const char *data, size_t len, MeshCancel *ret);
/* Whether BY may cancel a task FROM sent (both valid USER@HOST): FROM itself, or root of FROM's
 * host. */
bool mesh_cancel_allowed(const char *from, const char *by);

typedef struct MeshTask {
        char *id;
        char *from;             /* USER@ORIGIN */
        char *origin;
        char *agent;
        char *text;
        int priority;           /* 0..CON_TASK_PRIORITY_MAX */
        uint64_t deadline_usec; /* CLOCK_REALTIME usec, 0: none */
} MeshTask;

/* Whether the mesh can carry a deadline (0: none): one that con_format_timestamp() writes and
 * con_task_deadline_parse() reads back the same, i.e. from 1970-01-01T00:00:01Z to year 9999. */
bool mesh_deadline_valid(uint64_t usec);

void mesh_task_done(MeshTask *t);

/* -ENOMEM, or -EINVAL when a field is invalid. */
int mesh_task_to_json(const MeshTask *t, char **ret);
/* Parses and checks a task message: every field present and valid (task id, USER@ORIGIN with a
 * Unix user name and the origin's host name, agent name, text valid UTF-8 and not empty), no
 * other key; priority and deadline optional (5 and none when absent), valid as for a task file
 * (con_task_priority_valid, con_task_deadline_parse). -EBADMSG when malformed, -ENOMEM. */
int mesh_task_from_json(const char *data, size_t len, MeshTask *ret);

typedef struct MeshResult {
        char *id;
        char *host;             /* the host that answered */
        char *agent;
        char *from;             /* the task's sender, USER@ORIGIN */
        char *status;           /* completed, failed, canceled */
        char *text;
        bool truncated, replaced;
        uint64_t size;
} MeshResult;

void mesh_result_done(MeshResult *r);
int mesh_result_to_json(const MeshResult *r, char **ret);
int mesh_result_from_json(const char *data, size_t len, MeshResult *ret);

/* The shape of a JetStream stream as the gateway checks it (filled from jsStreamConfig, kept
 * free of nats.h). In WANT a negative max_age_ns, replicas or duplicates_ns is not compared. */
typedef struct MeshStreamShape {
        const char * const *subjects;
        size_t n_subjects;
        size_t n_sources;
        bool mirror;
        bool republish;                 /* republishes what it stores on other subjects */
        int retention;                  /* jsRetentionPolicy */
        int storage;                    /* jsStorageType */
        int64_t max_age_ns, replicas, duplicates_ns;
        int64_t max_msgs, max_msgs_per_subject;  /* con-state's; the task and result streams' per sending host */
        int64_t max_bytes, max_msg_size;        /* every stream's bytes; its largest message */
        int discard;                    /* jsDiscardPolicy */
        bool discard_new_per_subject;   /* the task and result streams' */
} MeshStreamShape;

/* Whether the existing stream NAME (HAVE) is the one the mesh's administrator makes (WANT;
 * docs/MULTIHOST.md, "Who makes the streams"): a stream with sources, a mirror, a republish,
 * another subject list, another retention policy or another storage is not the mesh's: -EPERM,
 * *ret_text says what is wrong (what con mesh streams cannot change in place). 1 when only the
 * settings differ (mesh.retention's max age, mesh.replicas, the duplicate window, the limits:
 * messages, messages per subject, bytes, the largest message, the discard policy): *ret_text says which (con mesh streams changes them). 0 when identical (*ret_text
 * NULL). -ENOMEM. */
int mesh_stream_shape_check(const char *name, const MeshStreamShape *have, const MeshStreamShape *want,
                            char **ret_text);
