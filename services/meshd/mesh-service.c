/* SPDX-License-Identifier: MIT */
/* The mesh gateway: org.conspiracy.Mesh1 and the NATS JetStream side (docs/MULTIHOST.md). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <nats/nats.h>

#include "audit-writer.h"
#include "bus-util.h"
#include "con-paths.h"
#include "fileio.h"
#include "spool.h"
#include "errors.h"
#include "json-util.h"
#include "authz.h"
#include "log.h"
#include "macro.h"
#include "mesh-sent.h"
#include "mesh-fetch.h"
#include "mesh-flood.h"
#include "mesh-service.h"
#include "mesh-state.h"
#include "mesh-streams.h"
#include "mesh-util.h"
#include "name-owners.h"
#include "names.h"
#include "policy-vocab.h"
#include "strv.h"
#include "task.h"
#include "time-util.h"
#include "user-util.h"

#define FETCH_WAIT_MS 1000
#define INFLIGHT_MAX 64                 /* messages a fetch thread hands over before it waits */
#define PUBLISH_WAIT_MS 5000
#define FLUSH_WAIT_MS 2000              /* stopping: a PING's PONG, the naks reaching the server */
#define CLOSE_WAIT_MS 10000             /* stopping: NATS's threads done with the gateway's callbacks */
#define ACK_WAIT_NS (30LL * 1000 * 1000 * 1000)
#define LIST_TRIES 60                   /* take-over: a second apart, an agent's ListTasks failing for a passing reason */
#define STATE_PUBLISH_TRIES 20          /* a state event is published at most this many times: */
#define STATE_RETRY_USEC (2 * USEC_PER_SEC)     /* again after 2 s, 4, 8, 16, then every 30 s (about */
#define STATE_RETRY_MAX_USEC (30 * USEC_PER_SEC) /* 8 minutes in all: a partition healed) */
#define STATE_RETRY_MAX 4096            /* state events waiting to be sent again, at most */
#define STATE_PENDING_MAX 4096          /* state events awaiting JetStream's acknowledgement */
#define STATE_STALL_MS 100              /* the worker waits at most this long when that many are */
#define TRIES_HEADER "Con-Tries"
#define STAGED_TRIES 3                  /* "staged, not stored" answers under a message id before a fresh one */
#define CONNECT_RETRY_USEC (2 * USEC_PER_SEC)
#define SENT_RETENTION_PERIOD_MAX_USEC (3600 * USEC_PER_SEC)
#define ASKS_MAX 32                     /* GetResultInfo calls in flight: with the Deliver calls (at most
                                         * INFLIGHT_MAX) below the bus's pending replies per connection
                                         * (128 on the system bus) */
#define DURABLE "con-meshd"
/* Floods (docs/MULTIHOST.md, "Floods"): what a hostile host can make the gateway hold and write. */
#define CANCELS_QUEUED_MAX 256          /* cancels waiting for the loop; more are dropped (counted) */
#define STATES_QUEUED_MAX 256           /* state events waiting for the loop; the fetch thread waits */
#define WAKE_BATCH 64                   /* jobs on_wake handles before the loop serves others */
#define FLOOD_INTERVAL_USEC (10 * USEC_PER_SEC)
#define FLOOD_BURST 10                  /* hostile-message lines and records per host and interval */
/* A result lost on the way (docs/MULTIHOST.md, "A result lost on the way"). */
#define RESEND_WAIT_MAX_USEC (30 * 60 * USEC_PER_SEC)   /* the backoff between requests grows to this */
#define RESEND_ASKS_PER_SEC 8           /* requests a gateway sends per second at most */
#define RESEND_BURST 100                /* requests believed per asking host and FLOOD_INTERVAL_USEC (10 s) */
#define RESENT_KEEP 1024                /* results sent again, remembered for their interval */

typedef enum JobKind {
        JOB_PUBLISH,            /* worker: js_Publish, answer */
        JOB_ACK,                /* worker: natsMsg_Ack */
        JOB_NAK,                /* worker: natsMsg_Nak (redelivered later) */
        JOB_TERM,               /* worker: natsMsg_Term (never redelivered) */
        JOB_INCOMING,           /* fetch thread -> loop: a message */
        JOB_CONNECTED,          /* worker -> loop: streams and consumers ready */
        JOB_STATUS,             /* worker: stream and consumer info, answered by the loop (GetStatus) */
        JOB_PUBLISH_STATE,      /* worker: a cancel, plain NATS */
        JOB_PUBLISH_EVENT,      /* worker: a state event, published to con-state and acknowledged by JetStream
                                 * on NATS's thread; NATS's thread -> loop: one that failed, sent again */
        JOB_STATE,              /* state fetch thread -> loop: a state event of any host's task */
        JOB_CANCEL,             /* NATS's thread -> loop: a cancel of a task another host sent here */
} JobKind;

typedef struct Job Job;
struct Job {
        Job *next;
        JobKind kind;
        MeshKind stream;        /* INCOMING: which stream */
        char *subject, *msg_id, *data;
        size_t len;
        uint64_t time_usec;     /* STATE: when JetStream stored it */
        uint64_t due_usec;      /* PUBLISH_EVENT waiting to be sent again: when (CLOCK_MONOTONIC) */
        natsMsg *msg;
        sd_bus_message *call;   /* PUBLISH of a Submit: answered by the loop (only the loop touches it) */
        char *task_id;          /* PUBLISH: the task or result it carries */
        char *host;             /* PUBLISH: the host it goes to */
        bool is_result;
        bool duplicate;         /* JetStream had its message id already (an earlier send was stored) */
        uint64_t seq;           /* PUBLISH: the stream sequence JetStream stored it as */
        unsigned staged;        /* PUBLISH: answers "duplicate of sequence 0" (see run_job) so far */
        int error;              /* the worker's outcome: 0 or a negative errno */
        unsigned retries;       /* PUBLISH of a result: failed tries so far */
        char *error_text;
        MeshStreamStatus *streams;      /* STATUS */
        size_t n_streams;
        char *server;                   /* STATUS: the server connected to */
};

typedef struct Outgoing {      /* a task this host sent, and its result */
        char *id, *agent, *host, *sender;
        uid_t uid;
        const char *state;      /* submitted, accepted, working (state events) until done */
        bool done;
        MeshResult result;
        uint64_t submitted_usec, ended_usec;    /* CLOCK_REALTIME: its record's (mesh-sent.h) */
        bool stored;            /* JetStream acknowledged it (in this run or, by its record, before) */
        bool sending;           /* its publish is queued in this run */
        char *cancel_by;        /* USER@<this host> who asked to cancel it (kept in its record), or NULL */
        /* A result lost on the way (resend_*): CLOCK_MONOTONIC when its host's final state event came
         * (read again from con-state after a restart), when to ask that host for it again, how often
         * it was asked for. */
        uint64_t ended_there_usec, ask_due_usec;
        unsigned asked;
} Outgoing;

typedef struct DeliverCall DeliverCall;

typedef struct SentWaiter {     /* waits until the records written so far are on disk */
        sd_bus_message *call;   /* a Submit, answered with task_id (a Cancel: empty, task_id NULL) */
        char *task_id;
        natsMsg *ack;           /* or a result message, acknowledged */
} SentWaiter;

typedef struct PendingCancel {  /* a cancel of a task sent from here whose result is not back yet */
        MeshCancel cancel;
        char *host;             /* the host running the task */
} PendingCancel;

typedef struct Resent {        /* a result sent again here on the request of the task's origin */
        char *id, *from;
        uint64_t last_usec;     /* CLOCK_MONOTONIC of the last request believed (one per resend_interval()) */
        bool audited;           /* mesh.result.resend written (once per task) */
} Resent;

typedef struct Delivery {      /* a task of another host accepted by a local agent */
        char *id, *agent, *from, *origin;
        bool asking;            /* its GetResultInfo is in flight */
        bool canceling;         /* its sender's cancel was passed to the agent (and audited) */
        bool want;              /* one is due, waiting for a free slot (ASKS_MAX) or a retry */
} Delivery;

struct Mesh {
        const ConConfig *config;
        sd_event *event;
        sd_bus *bus;
        ConAuthz *authz;
        sd_bus_slot *object, *completed_match, *started_match;
        ConNameOwners *owners;          /* who owns the agents' bus names (TaskStarted's senders) */
        sd_event_source *wake;
        int efd;
        int outbox_fd, failed_fd;       /* CON_MESH_OUTBOX_DIR, CON_MESH_FAILED_DIR: results for their senders */
        MeshSentJournal *sent;          /* CON_MESH_SENT_DIR/journal: the records of the tasks sent from here */
        sd_event_source *retention_timer;
        SentWaiter *waiters;            /* replies and acks waiting for the records' next commit */
        size_t n_waiters;
        sd_event_source *sync_event;    /* that commit, at the end of this loop iteration */

        pthread_mutex_t lock;
        pthread_cond_t cond;
        Job *todo, *todo_tail;          /* loop -> worker */
        Job *done, *done_tail;          /* threads -> loop */
        unsigned inflight[2];           /* incoming messages the loop has not finished, per stream */
        unsigned queued_cancels;        /* JOB_CANCEL in done (CANCELS_QUEUED_MAX at most) */
        unsigned queued_states;         /* JOB_STATE in done (STATES_QUEUED_MAX at most) */
        uint64_t dropped_cancels;       /* since the loop's last report: the queue was full */
        uint64_t oversized_cancels, oversized_states;   /* ... and larger than MESH_EVENT_MAX */
        bool stop, connected;
        /* NATS's threads report under the lock (the loop never asks nats.c, whose connection lock
         * is held through a reconnect's TCP and TLS handshake): */
        natsConnection *link_nc;        /* the connection link_up is about */
        bool link_up;                   /* connected now (disconnected and reconnected callbacks) */
        bool nats_closed;               /* the closed callback of the connection being closed ran */
        bool cancel_sub_done;           /* cancel_sub is closed and on_cancel_msg has returned */
        pthread_t worker, fetch[2];
        bool worker_started, fetch_started[2];

        /* Owned by the worker thread until connected, then read-only for the fetch threads. */
        natsConnection *nc;
        jsCtx *js;
        jsCtx *js_state;                /* state events: asynchronous publishes, acknowledged */
        natsSubscription *sub[2];
        natsSubscription *state_sub;    /* the pull consumer con-meshd-<host> on con-state (every host's) */
        pthread_t state_fetch;
        bool state_fetch_started;
        MeshStateTable states;          /* the loop's: the recent state of every host's remote tasks */
        natsSubscription *cancel_sub;   /* con.cancel.<host>.*: cancels of tasks other hosts sent here */
        char **verified;                /* worker only: hosts whose task stream was checked */
        char **verified_results;        /* ... and whose result stream */
        char *refused_stream;           /* loop only: the stream last found not the mesh's (audited once) */
        ConAuditWriter *audit;          /* NULL when not opened (not started as root) */

        Outgoing *out;
        size_t n_out;
        Delivery *dl;
        size_t n_dl;
        DeliverCall *calls;             /* Deliver calls in flight, each holding its message */
        unsigned asks;                  /* GetResultInfo calls in flight */
        sd_event_source *ask_timer;     /* asks again after a passing trouble */
        size_t take_over_next;          /* the next agent take_over() asks (one at a time) */
        bool listing;                   /* a ListTasks of take_over() is in flight */
        char **list_now;                /* agents take_over() asks again now (after the configured ones) */
        char **list_again;              /* ... and in a second: their ListTasks failed for a passing reason */
        unsigned list_tries;            /* those second tries so far (LIST_TRIES at most) */
        sd_event_source *list_timer;
        PendingCancel *cancels;         /* cancels of tasks sent from here, sent again until the result */
        size_t n_cancels;
        sd_event_source *cancel_timer;
        Job *state_retry, *state_retry_tail;    /* loop: state events to publish again */
        sd_event_source *state_retry_timer;
        MeshFlood flood;                /* the budget of hostile-message lines and records, per host */
        sd_event_source *flood_timer;   /* reports the counts: mesh_flood_due, the dropped events */
        uint64_t drops_reported_usec;   /* CLOCK_MONOTONIC of the last report of dropped events */
        sd_event_source *resend_timer;  /* asks other hosts for the results of tasks that ended there */
        Resent *resent;                 /* results sent again on request (RESENT_KEEP at most) */
        size_t n_resent;
        MeshFlood resend_budget;        /* requests believed per host and FLOOD_INTERVAL_USEC */
};

static void job_free(Job *j) {
        if (!j)
                return;
        free(j->subject);
        free(j->msg_id);
        free(j->data);
        free(j->task_id);
        free(j->host);
        free(j->error_text);
        free(j->server);
        mesh_stream_status_free_many(j->streams, j->n_streams);
        if (j->msg)
                natsMsg_Destroy(j->msg);
        sd_bus_message_unref(j->call);
        free(j);
}

static void wake_loop(Mesh *m) {
        uint64_t one = 1;
        (void) !write(m->efd, &one, sizeof(one));
}

/* Caller holds the lock. */
static void push(Job **head, Job **tail, Job *j) {
        j->next = NULL;
        if (*tail)
                (*tail)->next = j;
        else
                *head = j;
        *tail = j;
}

static Job *pop(Job **head, Job **tail) {
        Job *j = *head;
        if (j) {
                *head = j->next;
                if (!*head)
                        *tail = NULL;
                j->next = NULL;
        }
        return j;
}

static void hand_to_loop(Mesh *m, Job *j) {
        pthread_mutex_lock(&m->lock);
        push(&m->done, &m->done_tail, j);
        pthread_mutex_unlock(&m->lock);
        wake_loop(m);
}

static void queue_job(Mesh *m, Job *j) {
        pthread_mutex_lock(&m->lock);
        push(&m->todo, &m->todo_tail, j);
        pthread_cond_broadcast(&m->cond);
        pthread_mutex_unlock(&m->lock);
}

/* A message the loop gives up on without a job (left unacknowledged: redelivered after the ack wait). */
static void release_msg(Mesh *m, MeshKind stream, natsMsg *msg) {
        natsMsg_Destroy(msg);
        pthread_mutex_lock(&m->lock);
        if (m->inflight[stream] > 0)
                m->inflight[stream]--;
        pthread_cond_broadcast(&m->cond);
        pthread_mutex_unlock(&m->lock);
}

static int queue_msg_job(Mesh *m, JobKind kind, MeshKind stream, natsMsg *msg) {
        Job *j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->kind = kind;
        j->stream = stream;
        j->msg = msg;
        queue_job(m, j);
        return 0;
}

static int queue_publish(Mesh *m, MeshKind k, const char *host, const char *msg_id, char *data,
                         sd_bus_message *call, const char *task_id) {
        Job *j = calloc(1, sizeof(*j));
        if (!j) {
                free(data);
                return -ENOMEM;
        }
        j->kind = JOB_PUBLISH;
        j->is_result = k == MESH_KIND_RESULT;
        j->data = data;
        j->len = strlen(data);
        j->call = sd_bus_message_ref(call);
        if (mesh_subject(k, host, m->config->mesh.host, &j->subject) < 0 || !(j->msg_id = strdup(msg_id)) ||
            !(j->task_id = strdup(task_id)) || !(j->host = strdup(host))) {
                job_free(j);
                return -ENOMEM;
        }
        queue_job(m, j);
        return 0;
}

/* ---- the threads (no logging, no bus: outcomes go back as jobs) ---- */

static char *nats_error_text(natsStatus s, jsErrCode jerr) {
        char *t = NULL;
        const char *last = nats_GetLastError(NULL);
        if (asprintf(&t, "%s%s%s (JetStream error %d)", natsStatus_GetText(s), last ? ": " : "", strempty(last),
                     (int) jerr) < 0)
                return NULL;
        return t;
}

/* Stream ID (of this host; con-state) as the mesh's administrator made it: the gateway never makes,
 * changes or removes a stream (its NATS user may not; docs/MULTIHOST.md, "Who makes the streams"),
 * it only checks each is there and exactly the mesh's. Missing, or with sources, a mirror, a
 * republish or other subjects, retention or storage: NATS_ERR and *ret_error says what and which
 * command makes it right (the gateway does not connect; it tries again). Other settings only
 * (max age, replicas): *ret_warning says so. */
static natsStatus check_own_stream(Mesh *m, MeshStreamId id, jsErrCode *jerr, char **ret_warning, char **ret_error,
                                   char **ret_wrong) {
        _cleanup_(mesh_stream_config_done) MeshStreamConfig c = {};
        _cleanup_free_ char *text = NULL;
        MeshStreamFound found;

        const MeshStreamSettings settings = {
                .retention_usec = m->config->mesh.retention_usec,
                .replicas = m->config->mesh.replicas,
                .max_bytes = m->config->mesh.stream_max_bytes,
                .max_per_host = m->config->mesh.stream_max_per_host,
        };
        if (mesh_stream_config(id, m->config->mesh.host, &settings, &c) < 0)
                return NATS_NO_MEMORY;
        natsStatus s = mesh_stream_inspect(m->js, &c, &found, &text, jerr);
        if (s != NATS_OK)
                return s;
        switch (found) {
        case MESH_STREAM_FOUND_OK:
                return NATS_OK;
        case MESH_STREAM_FOUND_SETTINGS: {
                _cleanup_free_ char *joined = NULL;
                if (asprintf(&joined, "%s%s%s", strempty(*ret_warning), *ret_warning ? "; " : "", text) < 0)
                        return NATS_NO_MEMORY;
                free(*ret_warning);
                *ret_warning = TAKE_PTR(joined);
                return NATS_OK;
        }
        case MESH_STREAM_FOUND_MISSING:
                free(*ret_error);
                if (asprintf(ret_error, "stream %s does not exist; the mesh's administrator makes it: con mesh streams "
                             "on the CA's host (docs/MULTIHOST.md)", c.name) < 0)
                        *ret_error = NULL;
                return NATS_ERR;
        case MESH_STREAM_FOUND_WRONG:
        default:
                free(*ret_wrong);
                *ret_wrong = TAKE_PTR(c.name);
                free(*ret_error);
                if (asprintf(ret_error, "%s; not using it (con mesh streams --check on the CA's host shows it, "
                             "--replace makes it anew)", text) < 0)
                        *ret_error = NULL;
                return NATS_ERR;
        }
}

/* Before the first publish to HOST's stream: it exists and takes exactly con.<kind>.<host>.*.
 * Streams may not overlap, so no other stream (a compromised host's own, made with other
 * subjects) can then take those messages. NATS_NOT_FOUND when HOST never joined the mesh. */
static natsStatus check_stream(Mesh *m, MeshKind k, const char *host, jsErrCode *jerr, char **ret_error) {
        char ***verified = k == MESH_KIND_TASK ? &m->verified : &m->verified_results;
        _cleanup_free_ char *name = NULL, *subject = NULL;
        jsStreamInfo *si = NULL;

        if (strv_contains(*verified, host))
                return NATS_OK;
        if (mesh_stream(k, host, &name) < 0 || mesh_subject_filter(k, host, &subject) < 0)
                return NATS_NO_MEMORY;
        natsStatus s = js_GetStreamInfo(&si, m->js, name, NULL, jerr);
        if (s != NATS_OK) {
                if (*jerr == JSStreamNotFoundErr || s == NATS_NOT_FOUND) {
                        if (asprintf(ret_error, "host %s has not joined the mesh (no stream %s; the mesh's "
                                     "administrator makes it with con mesh streams)", host, name) < 0)
                                *ret_error = NULL;
                        return NATS_NOT_FOUND;
                }
                return s;
        }
        bool ok = si->Config && si->Config->SubjectsLen == 1 && streq(si->Config->Subjects[0], subject);
        jsStreamInfo_Destroy(si);
        if (!ok) {
                if (asprintf(ret_error, "stream %s does not take exactly %s; not sending to it", name, subject) < 0)
                        *ret_error = NULL;
                return NATS_ERR;
        }
        (void) strv_extend(verified, host);
        return NATS_OK;
}

static natsStatus pull_subscribe(Mesh *m, MeshKind k, jsErrCode *jerr) {
        _cleanup_free_ char *name = NULL, *subject = NULL;
        jsSubOptions so;

        if (mesh_stream(k, m->config->mesh.host, &name) < 0 || mesh_subject_filter(k, m->config->mesh.host, &subject) < 0)
                return NATS_NO_MEMORY;
        jsSubOptions_Init(&so);
        so.Stream = name;
        so.Config.AckWait = ACK_WAIT_NS;
        so.Config.AckPolicy = js_AckExplicit;
        return js_PullSubscribe(&m->sub[k], m->js, subject, DURABLE, NULL, &so, jerr);
}

/* Counts an event dropped by a NATS thread; the first since the loop's last report wakes it (it
 * reports them, at most once per FLOOD_INTERVAL_USEC). Caller holds the lock. */
static bool count_drop(Mesh *m, uint64_t *counter) {
        bool first = m->dropped_cancels + m->oversized_cancels + m->oversized_states == 0;
        (*counter)++;
        return first;
}

/* NATS's own delivery thread: a cancel goes to the loop as it came (the loop parses it), unless it
 * is larger than any cancel a gateway sends or CANCELS_QUEUED_MAX wait already (a flood: cancels
 * are plain NATS messages, no stream limits them, and nats.c's slow-consumer limits count only
 * what this callback has not taken yet). Cancels are sent again every few seconds: one dropped is
 * not lost. */
static void cancel_to_loop(Mesh *m, natsMsg *msg) {
        int len = natsMsg_GetDataLength(msg);
        bool wake = false;
        Job *j = NULL;

        if (len > 0 && (size_t) len <= MESH_EVENT_MAX && (j = calloc(1, sizeof(*j))) &&
            (j->data = malloc((size_t) len + 1)) && (j->subject = strdup(natsMsg_GetSubject(msg)))) {
                memcpy(j->data, natsMsg_GetData(msg), (size_t) len);
                j->data[len] = 0;
                j->len = (size_t) len;
                j->kind = JOB_CANCEL;
        } else {
                job_free(j);
                j = NULL;
        }
        pthread_mutex_lock(&m->lock);
        if (j && m->queued_cancels < CANCELS_QUEUED_MAX) {
                push(&m->done, &m->done_tail, j);
                m->queued_cancels++;
                wake = true;
                j = NULL;
        } else if (j)
                wake = count_drop(m, &m->dropped_cancels);
        else if (len > 0 && (size_t) len > MESH_EVENT_MAX)
                wake = count_drop(m, &m->oversized_cancels);
        pthread_mutex_unlock(&m->lock);
        job_free(j);
        natsMsg_Destroy(msg);
        if (wake)
                wake_loop(m);
}

static void on_cancel_msg(natsConnection *nc _unused_, natsSubscription *sub _unused_, natsMsg *msg, void *closure) {
        cancel_to_loop(closure, msg);
}

static void on_cancel_sub_complete(void *closure) {
        Mesh *m = closure;
        pthread_mutex_lock(&m->lock);
        m->cancel_sub_done = true;
        pthread_cond_broadcast(&m->cond);
        pthread_mutex_unlock(&m->lock);
}

/* con.cancel.<host>.*: the cancels of the tasks other hosts sent here (docs/MULTIHOST.md). */
static natsStatus subscribe_cancels(Mesh *m) {
        _cleanup_free_ char *subject = NULL;
        if (mesh_cancel_subject(m->config->mesh.host, NULL, &subject) < 0)
                return NATS_NO_MEMORY;
        natsStatus s = natsConnection_Subscribe(&m->cancel_sub, m->nc, subject, on_cancel_msg, m);
        /* mesh_free waits for it before M goes (on_cancel_msg runs on NATS's thread). */
        if (s == NATS_OK)
                s = natsSubscription_SetOnCompleteCB(m->cancel_sub, on_cancel_sub_complete, m);
        return s;
}

/* This host's pull consumer on con-state, made again at each start from the last event of every
 * subject, so a restarted gateway rebuilds its table from the stream. */
static natsStatus state_subscribe(Mesh *m, jsErrCode *jerr) {
        _cleanup_free_ char *durable = NULL;
        jsSubOptions so;

        if (asprintf(&durable, "%s-%s", DURABLE, m->config->mesh.host) < 0)
                return NATS_NO_MEMORY;
        jsErrCode e2 = 0;
        (void) js_DeleteConsumer(m->js, MESH_STATE_STREAM, durable, NULL, &e2);  /* none yet: fine */
        jsSubOptions_Init(&so);
        so.Stream = MESH_STATE_STREAM;
        so.Config.AckPolicy = js_AckAll;
        so.Config.DeliverPolicy = js_DeliverLastPerSubject;
        so.Config.AckWait = ACK_WAIT_NS;
        return js_PullSubscribe(&m->state_sub, m->js, MESH_STATE_FILTER, durable, NULL, &so, jerr);
}

/* Pulls the state events for the loop (which parses and checks them) and acknowledges them (AckAll:
 * the last acknowledges all before it). A lost acknowledgement only means an event read twice. */
static void *state_fetch_thread(void *p) {
        Mesh *m = p;

        for (;;) {
                pthread_mutex_lock(&m->lock);
                while (!m->stop && m->queued_states >= STATES_QUEUED_MAX)
                        pthread_cond_wait(&m->cond, &m->lock);
                bool stop = m->stop;
                pthread_mutex_unlock(&m->lock);
                if (stop)
                        return NULL;
                /* One at a time, as the other fetch threads (mesh-fetch.h). */
                natsMsgList list = {};
                int r = mesh_fetch(m->state_sub, FETCH_WAIT_MS, false, &list);
                if (r == -EOVERFLOW) {
                        static const char fatal[] = "con-meshd: natsSubscription_Fetch returned more state events "
                                                    "than the batch it was asked for; aborting\n";
                        (void) !write(STDERR_FILENO, fatal, sizeof(fatal) - 1);
                        abort();
                }
                if (r < 0) {
                        natsMsgList_Destroy(&list);
                        if (r != -ETIMEDOUT)
                                usleep(200 * 1000);     /* disconnected: nats.c reconnects */
                        continue;
                }
                natsMsg *last = NULL;
                bool wake = false;
                for (int i = 0; i < list.Count && list.Msgs[i]; i++) {
                        natsMsg *msg = list.Msgs[i];
                        int len = natsMsg_GetDataLength(msg);
                        jsMsgMetaData *meta = NULL;
                        last = msg;
                        if (len > 0 && (size_t) len > MESH_EVENT_MAX) {
                                /* Larger than any state event: not copied, not parsed (counted). */
                                pthread_mutex_lock(&m->lock);
                                wake = count_drop(m, &m->oversized_states) || wake;
                                pthread_mutex_unlock(&m->lock);
                                continue;
                        }
                        Job *j = calloc(1, sizeof(*j));
                        if (!j || len <= 0 || !(j->data = malloc((size_t) len + 1)) ||
                            !(j->subject = strdup(natsMsg_GetSubject(msg)))) {
                                job_free(j);
                                continue;
                        }
                        memcpy(j->data, natsMsg_GetData(msg), (size_t) len);
                        j->data[len] = 0;
                        j->len = (size_t) len;
                        j->kind = JOB_STATE;
                        if (natsMsg_GetMetaData(&meta, msg) == NATS_OK && meta->Timestamp > 0)
                                j->time_usec = (uint64_t) meta->Timestamp / 1000;
                        jsMsgMetaData_Destroy(meta);
                        pthread_mutex_lock(&m->lock);
                        push(&m->done, &m->done_tail, j);
                        m->queued_states++;
                        pthread_mutex_unlock(&m->lock);
                        wake = true;
                }
                if (last)
                        (void) natsMsg_Ack(last, NULL);
                natsMsgList_Destroy(&list);
                if (wake)
                        wake_loop(m);
        }
}

/* NATS's callback thread: the connection's state, for the loop (GetStatus, Connected). */
static void set_link(Mesh *m, natsConnection *nc, bool up, bool closed) {
        pthread_mutex_lock(&m->lock);
        if (nc == m->link_nc)
                m->link_up = up;
        if (closed)
                m->nats_closed = true;
        pthread_cond_broadcast(&m->cond);
        pthread_mutex_unlock(&m->lock);
}

static void on_nats_disconnected(natsConnection *nc, void *closure) {
        set_link(closure, nc, false, false);
}

static void on_nats_reconnected(natsConnection *nc, void *closure) {
        set_link(closure, nc, true, false);
}

static void on_nats_closed(natsConnection *nc, void *closure) {
        set_link(closure, nc, false, true);
}

/* Waits until FLAG (set under the lock by a NATS thread) is true, at most WAIT_MS. */
static bool wait_flag(Mesh *m, const bool *flag, long wait_ms) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += wait_ms / 1000;
        ts.tv_nsec += (wait_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&m->lock);
        while (!*flag && pthread_cond_timedwait(&m->cond, &m->lock, &ts) == 0)
                ;
        bool done = *flag;
        pthread_mutex_unlock(&m->lock);
        return done;
}

/* Closes and frees the connection once its callbacks have run (they use M): its closed callback
 * is the last (nats.c runs a connection's callbacks in order on one thread). False when it did not
 * run in time: M must then stay allocated. */
static bool close_nats(Mesh *m) {
        if (!m->nc)
                return true;
        natsConnection_Close(m->nc);    /* nothing when closed already (its callback is on its way) */
        bool done = wait_flag(m, &m->nats_closed, CLOSE_WAIT_MS);
        natsConnection_Destroy(m->nc);
        m->nc = NULL;
        return done;
}

/* A job that sends MSG (a state event nats.c gives back) again; NULL when out of memory. */
static Job *state_job_from_msg(natsMsg *msg, natsStatus err, const char *err_text) {
        const char *msg_id = NULL, *tries = NULL;
        Job *j = calloc(1, sizeof(*j));
        if (!j)
                return NULL;
        j->kind = JOB_PUBLISH_EVENT;
        j->error = -EIO;
        (void) natsMsgHeader_Get(msg, "Nats-Msg-Id", &msg_id);
        (void) natsMsgHeader_Get(msg, TRIES_HEADER, &tries);
        j->retries = tries ? (unsigned) strtoul(tries, NULL, 10) : 0;
        j->len = (size_t) natsMsg_GetDataLength(msg);
        j->subject = strdup(natsMsg_GetSubject(msg));
        j->data = malloc(j->len + 1);
        j->msg_id = msg_id ? strdup(msg_id) : NULL;
        j->error_text = strdup(err_text ?: natsStatus_GetText(err));
        if (!j->subject || !j->data || (msg_id && !j->msg_id)) {
                job_free(j);
                return NULL;
        }
        memcpy(j->data, natsMsg_GetData(msg), j->len);
        j->data[j->len] = 0;
        return j;
}

/* NATS's thread: JetStream refused a state event, or its acknowledgement did not come in time. To
 * the loop, which sends it again (state_publish_failed). Out of memory, the event is lost (the
 * task's next one, or its result, comes). */
static void on_state_publish_error(jsCtx *js _unused_, jsPubAckErr *pae, void *closure) {
        Job *j = pae->Msg ? state_job_from_msg(pae->Msg, pae->Err, pae->ErrText) : NULL;
        if (j)
                hand_to_loop(closure, j);
}

/* The JetStream context of state events: asynchronous publishes (the worker waits for no round
 * trip), their failures to on_state_publish_error. */
static natsStatus state_js(Mesh *m) {
        jsOptions o;
        natsStatus s = jsOptions_Init(&o);
        if (s != NATS_OK)
                return s;
        o.PublishAsync.MaxPending = STATE_PENDING_MAX;
        o.PublishAsync.StallWait = STATE_STALL_MS;
        o.PublishAsync.ErrHandler = on_state_publish_error;
        o.PublishAsync.ErrHandlerClosure = m;
        return natsConnection_JetStream(&m->js_state, m->nc, &o);
}

/* -EHOSTUNREACH: no server, or NATS failed; -ENOENT: a stream is missing; -EPERM: the stream
 * *ret_wrong is not the mesh's. *ret_error says why. */
static int connect_nats(Mesh *m, char **ret_warning, char **ret_error, char **ret_wrong) {
        natsOptions *o = NULL;
        natsStatus s;
        jsErrCode jerr = 0;
        _cleanup_free_ char *refused = NULL, *wrong = NULL;
        char * const *servers = m->config->mesh.servers;
        const ConMeshConfig *mc = &m->config->mesh;
        _cleanup_free_ char *inbox = NULL;

        /* The inboxes carry this host's name: the NATS server lets each host subscribe only to
         * its own (con mesh server-config). */
        if (asprintf(&inbox, "_INBOX.%s", mc->host) < 0)
                return -ENOMEM;

        s = natsOptions_Create(&o);
        if (s == NATS_OK)
                s = natsOptions_SetServers(o, (const char **) servers, (int) strv_length(servers));
        if (s == NATS_OK)
                s = natsOptions_SetName(o, m->config->mesh.host);
        if (s == NATS_OK)
                s = natsOptions_SetMaxReconnect(o, -1);
        if (s == NATS_OK)
                s = natsOptions_SetReconnectWait(o, 1000);
        if (s == NATS_OK)
                s = natsOptions_SetCustomInboxPrefix(o, inbox);
        if (s == NATS_OK)
                s = natsOptions_SetDisconnectedCB(o, on_nats_disconnected, m);
        if (s == NATS_OK)
                s = natsOptions_SetReconnectedCB(o, on_nats_reconnected, m);
        if (s == NATS_OK)
                s = natsOptions_SetClosedCB(o, on_nats_closed, m);
        if (s == NATS_OK && mc->credentials)
                s = natsOptions_SetUserCredentialsFromFiles(o, mc->credentials, NULL);
        /* TLS: the mesh CA verifies the server; this host's certificate is its identity. */
        if (s == NATS_OK && mc->ca)
                s = natsOptions_SetSecure(o, true);
        if (s == NATS_OK && mc->ca)
                s = natsOptions_LoadCATrustedCertificates(o, mc->ca);
        if (s == NATS_OK && mc->cert)
                s = natsOptions_LoadCertificatesChain(o, mc->cert, mc->key);
        pthread_mutex_lock(&m->lock);
        m->nats_closed = false;         /* set by this connection's closed callback */
        pthread_mutex_unlock(&m->lock);
        if (s == NATS_OK)
                s = natsConnection_Connect(&m->nc, o);
        natsOptions_Destroy(o);
        if (s == NATS_OK)
                s = natsConnection_JetStream(&m->js, m->nc, NULL);
        if (s == NATS_OK)
                s = state_js(m);
        for (MeshStreamId id = MESH_STREAM_TASK; s == NATS_OK && id <= MESH_STREAM_STATE; id++)
                s = check_own_stream(m, id, &jerr, ret_warning, &refused, &wrong);
        for (MeshKind k = MESH_KIND_TASK; s == NATS_OK && k <= MESH_KIND_RESULT; k++)
                s = pull_subscribe(m, k, &jerr);
        if (s == NATS_OK)
                s = state_subscribe(m, &jerr);
        if (s == NATS_OK)
                s = subscribe_cancels(m);
        if (s != NATS_OK) {
                /* A stream missing, or not the mesh's (sources, a mirror, other subjects): not used. */
                int error = wrong ? -EPERM : refused ? -ENOENT : -EHOSTUNREACH;
                if (wrong) {
                        free(*ret_wrong);
                        *ret_wrong = TAKE_PTR(wrong);
                }
                *ret_error = refused ? TAKE_PTR(refused) : nats_error_text(s, jerr);
                free(*ret_warning);
                *ret_warning = NULL;
                for (MeshKind k = MESH_KIND_TASK; k <= MESH_KIND_RESULT; k++) {
                        natsSubscription_Destroy(m->sub[k]);
                        m->sub[k] = NULL;
                }
                natsSubscription_Destroy(m->state_sub);
                m->state_sub = NULL;
                natsSubscription_Destroy(m->cancel_sub);
                m->cancel_sub = NULL;
                jsCtx_Destroy(m->js);
                m->js = NULL;
                jsCtx_Destroy(m->js_state);
                m->js_state = NULL;
                (void) close_nats(m);
                return error;
        }
        return 0;
}

typedef struct FetchArg {
        Mesh *mesh;
        MeshKind kind;
} FetchArg;

static FetchArg fetch_args[2];

static void *fetch_thread(void *p) {
        FetchArg *a = p;
        Mesh *m = a->mesh;

        for (;;) {
                pthread_mutex_lock(&m->lock);
                while (!m->stop && m->inflight[a->kind] >= INFLIGHT_MAX)
                        pthread_cond_wait(&m->cond, &m->lock);
                bool stop = m->stop;
                pthread_mutex_unlock(&m->lock);
                if (stop)
                        return NULL;

                /* One message at a time (mesh-fetch.h: libnats 3.4.1's fetch of a batch overflows). */
                natsMsgList list = {};
                int r = mesh_fetch(m->sub[a->kind], FETCH_WAIT_MS, false, &list);
                if (r == -EOVERFLOW) {
                        /* The library wrote past the array it allocated: the heap is not to be
                         * trusted. The messages are unacknowledged: JetStream delivers them again
                         * after the ack wait. */
                        static const char fatal[] = "con-meshd: natsSubscription_Fetch returned more messages than "
                                                    "the batch it was asked for; aborting\n";
                        (void) !write(STDERR_FILENO, fatal, sizeof(fatal) - 1);
                        abort();
                }
                if (r < 0) {
                        natsMsgList_Destroy(&list);
                        if (r != -ETIMEDOUT)
                                usleep(200 * 1000);     /* disconnected: nats.c reconnects */
                        continue;
                }
                for (int i = 0; i < list.Count; i++) {
                        Job *j = calloc(1, sizeof(*j));
                        if (!j)
                                break;  /* left unacknowledged: redelivered after the ack wait */
                        j->kind = JOB_INCOMING;
                        j->stream = a->kind;
                        j->msg = list.Msgs[i];
                        list.Msgs[i] = NULL;
                        pthread_mutex_lock(&m->lock);
                        m->inflight[a->kind]++;
                        push(&m->done, &m->done_tail, j);
                        pthread_mutex_unlock(&m->lock);
                }
                natsMsgList_Destroy(&list);
                wake_loop(m);
        }
}

/* GetStatus: JetStream's view of the mesh's streams (all hosts') and of their consumers. In the
 * worker: these are requests to the server. */
static natsStatus collect_status(Mesh *m, Job *j, jsErrCode *jerr) {
        jsStreamInfoList *list = NULL;
        char url[256];

        if (natsConnection_GetConnectedUrl(m->nc, url, sizeof(url)) == NATS_OK && url[0])
                j->server = strdup(url);
        natsStatus s = js_Streams(&list, m->js, NULL, jerr);
        if (s == NATS_NOT_FOUND)
                return NATS_OK;         /* no stream at all */
        if (s != NATS_OK)
                return s;
        j->streams = calloc((size_t) list->Count, sizeof(*j->streams));
        if (!j->streams && list->Count > 0) {
                jsStreamInfoList_Destroy(list);
                return NATS_NO_MEMORY;
        }
        for (int i = 0; i < list->Count; i++) {
                jsStreamInfo *si = list->List[i];
                MeshStreamStatus *st = &j->streams[j->n_streams];
                if (!si || !si->Config || mesh_stream_parse(si->Config->Name, &st->kind, &st->host) < 0)
                        continue;
                st->name = strdup(si->Config->Name);
                if (!st->name) {
                        free(st->host);
                        st->host = NULL;
                        continue;
                }
                st->messages = si->State.Msgs;
                st->bytes = si->State.Bytes;
                if (si->State.Msgs > 0 && si->State.FirstTime > 0)
                        st->oldest_usec = (uint64_t) si->State.FirstTime / 1000;
                jsConsumerInfo *ci = NULL;
                jsErrCode e2 = 0;
                if (js_GetConsumerInfo(&ci, m->js, st->name, DURABLE, NULL, &e2) == NATS_OK && ci) {
                        st->consumer = true;
                        st->pending = ci->NumPending;
                        st->ack_pending = ci->NumAckPending > 0 ? (uint64_t) ci->NumAckPending : 0;
                        st->redelivered = ci->NumRedelivered > 0 ? (uint64_t) ci->NumRedelivered : 0;
                        jsConsumerInfo_Destroy(ci);
                }
                j->n_streams++;
        }
        jsStreamInfoList_Destroy(list);
        return NATS_OK;
}

/* After a publish to STREAM (K's, of host TO) failed with S and JERR: when JetStream refused it
 * because the stream is full (its MaxBytes, MaxMsgs, or MaxMsgsPerSubject for this sending host;
 * DiscardNew: nothing stored was dropped), -ENOSPC and *ret_text names the limit, its value as the
 * stream has it, and the command that changes it. 0 when the failure is another. Worker thread. */
static int stream_full(Mesh *m, MeshKind k, const char *stream, const char *to, natsStatus s, jsErrCode jerr,
                       char **ret_text) {
        const char *last = nats_GetLastError(NULL);
        if (s == NATS_OK || jerr != JSStreamStoreFailedErr || !last)
                return 0;
        /* The server's words (nats.c puts its own source position before them). */
        const char *what = strstr(last, "maximum messages per subject exceeded") ? "maximum messages per subject exceeded" :
                           strstr(last, "maximum bytes exceeded") ? "maximum bytes exceeded" :
                           strstr(last, "maximum messages exceeded") ? "maximum messages exceeded" : NULL;
        if (!what)
                return 0;
        bool per_host = streq(what, "maximum messages per subject exceeded"), bytes = streq(what, "maximum bytes exceeded");
        int64_t limit = -1;
        jsStreamInfo *si = NULL;
        jsErrCode e2 = 0;
        if (js_GetStreamInfo(&si, m->js, stream, NULL, &e2) == NATS_OK && si && si->Config)
                limit = per_host ? si->Config->MaxMsgsPerSubject : bytes ? si->Config->MaxBytes : si->Config->MaxMsgs;
        jsStreamInfo_Destroy(si);
        const char *items = k == MESH_KIND_TASK ? "tasks" : "results";
        int r;
        if (per_host)
                r = asprintf(ret_text, "stream %s is full for %s sent from %s (%s: at most %" PRIi64 " %s of one "
                             "sending host wait there until %s's gateway takes them); nothing was stored. The mesh's "
                             "administrator raises the limit with con mesh streams --max-per-host N "
                             "(mesh.stream_max_per_host) on the CA's host", stream, items, m->config->mesh.host,
                             what, limit, items, to);
        else
                r = asprintf(ret_text, "stream %s is full (%s: it holds at most %" PRIi64 " %s until %s's gateway "
                             "takes them); nothing was stored. The mesh's administrator raises the limit with "
                             "con mesh streams --max-bytes SIZE (mesh.stream_max_bytes) on the CA's host", stream,
                             what, limit, bytes ? "bytes" : "messages", to);
        if (r < 0)
                *ret_text = NULL;
        return -ENOSPC;
}

static void run_job(Mesh *m, Job *j) {
        natsStatus s = NATS_OK;
        jsErrCode jerr = 0;

        switch (j->kind) {
        case JOB_PUBLISH: {
                jsPubOptions po;
                jsPubAck *pa = NULL;
                _cleanup_free_ char *fresh_id = NULL;
                jsPubOptions_Init(&po);
                po.MsgId = j->msg_id;
                po.MaxWait = PUBLISH_WAIT_MS;
                if (!m->connected) {
                        j->error = -ENOTCONN;
                        break;
                }
                /* Its own message id was answered "staged, not stored" STAGED_TRIES times: that
                 * earlier publish was lost at the stream's leader (below), and JetStream would answer
                 * so for the whole de-duplication window. A fresh id, derived from it: stored now. */
                if (j->staged >= STAGED_TRIES) {
                        if (asprintf(&fresh_id, "%s.%u", j->msg_id, j->staged) < 0) {
                                j->error = -ENOMEM;
                                break;
                        }
                        po.MsgId = fresh_id;
                }
                MeshKind k = j->is_result ? MESH_KIND_RESULT : MESH_KIND_TASK;
                _cleanup_free_ char *stream = NULL;
                if (mesh_stream(k, j->host, &stream) < 0) {
                        j->error = -ENOMEM;
                        break;
                }
                s = check_stream(m, k, j->host, &jerr, &j->error_text);
                if (s == NATS_NOT_FOUND || (s != NATS_OK && j->error_text)) {
                        j->error = s == NATS_NOT_FOUND ? -EHOSTUNREACH : -EPROTO;
                        break;
                }
                if (s == NATS_OK)
                        s = js_Publish(&pa, m->js, j->subject, j->data, (int) j->len, &po, &jerr);
                if (s != NATS_OK) {
                        j->error = stream_full(m, k, stream, j->host, s, jerr, &j->error_text);
                        if (j->error < 0)
                                break;
                }
                if (s == NATS_OK && (!pa || !streq_ptr(pa->Stream, stream))) {
                        /* Cannot happen after check_stream (streams do not overlap); refuse anyway. */
                        j->error = -EPROTO;
                        (void) asprintf(&j->error_text, "stored by stream %s, not %s", pa ? strempty(pa->Stream) : "?",
                                        stream);
                }
                if (s == NATS_OK && pa && !j->error && pa->Duplicate && pa->Sequence == 0) {
                        /* nats-server 2.9 (clustered streams) records a message id at the stream's
                         * leader before the message's proposal is committed, and answers a publish
                         * with that id "duplicate" with sequence 0 meanwhile; when that proposal is
                         * lost (a leader change, no quorum) it keeps answering so for the duplicate
                         * window, and the message was never stored. Not stored, then: again later. */
                        j->staged++;
                        j->error = -EAGAIN;
                        if (asprintf(&j->error_text, "JetStream answered message id %s as a duplicate of sequence "
                                     "0 (staged at the stream's leader, not stored)", po.MsgId) < 0)
                                j->error_text = NULL;
                } else if (s == NATS_OK && pa) {
                        j->duplicate = pa->Duplicate;
                        j->seq = pa->Sequence;
                }
                jsPubAck_Destroy(pa);
                break;
        }
        case JOB_STATUS:
                if (!m->connected) {
                        j->error = -ENOTCONN;
                        break;
                }
                s = collect_status(m, j, &jerr);
                break;
        case JOB_PUBLISH_STATE:
                /* A cancel: plain NATS (sent again until the result comes); nats.c buffers it while
                 * reconnecting. */
                if (m->connected)
                        s = natsConnection_Publish(m->nc, j->subject, j->data, (int) j->len);
                break;
        case JOB_PUBLISH_EVENT: {
                /* Acknowledged by JetStream without the worker waiting: a failure, or no
                 * acknowledgement within PUBLISH_WAIT_MS, comes to on_state_publish_error. */
                natsMsg *msg = NULL;
                jsPubOptions po;
                char tries[16];
                if (!m->connected || !m->js_state) {
                        j->error = -ENOTCONN;
                        break;
                }
                jsPubOptions_Init(&po);
                po.MsgId = j->msg_id;
                po.MaxWait = PUBLISH_WAIT_MS;
                (void) snprintf(tries, sizeof(tries), "%u", j->retries);
                s = natsMsg_Create(&msg, j->subject, NULL, j->data, (int) j->len);
                if (s == NATS_OK)
                        s = natsMsgHeader_Set(msg, TRIES_HEADER, tries);
                if (s == NATS_OK)
                        s = js_PublishMsgAsync(m->js_state, &msg, &po);
                natsMsg_Destroy(msg);   /* NULL once nats.c took it */
                break;
        }
        case JOB_ACK:
                s = natsMsg_Ack(j->msg, NULL);
                break;
        case JOB_NAK:
                s = natsMsg_Nak(j->msg, NULL);
                break;
        case JOB_TERM:
                s = natsMsg_Term(j->msg, NULL);
                break;
        default:
                break;
        }
        if (s != NATS_OK && !j->error) {
                j->error = -EIO;
                j->error_text = nats_error_text(s, jerr);
        }
}

static void *worker_thread(void *p) {
        Mesh *m = p;

        /* Connect first (retrying); only then the fetch threads. */
        _cleanup_free_ char *warning = NULL;
        for (;;) {
                _cleanup_free_ char *error = NULL, *wrong = NULL;
                pthread_mutex_lock(&m->lock);
                bool stop = m->stop;
                pthread_mutex_unlock(&m->lock);
                if (stop)
                        return NULL;
                int r = connect_nats(m, &warning, &error, &wrong);
                if (r >= 0)
                        break;
                Job *j = calloc(1, sizeof(*j));
                if (j) {
                        j->kind = JOB_CONNECTED;
                        j->error = r;
                        j->error_text = TAKE_PTR(error);
                        j->host = TAKE_PTR(wrong);      /* the stream not the mesh's */
                        hand_to_loop(m, j);
                }
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_sec += CONNECT_RETRY_USEC / USEC_PER_SEC;
                pthread_mutex_lock(&m->lock);
                if (!m->stop)
                        pthread_cond_timedwait(&m->cond, &m->lock, &ts);
                pthread_mutex_unlock(&m->lock);
        }
        pthread_mutex_lock(&m->lock);
        m->connected = true;
        m->link_nc = m->nc;
        /* From now on the callbacks keep it (here, off the loop, asking nats.c may wait). */
        m->link_up = natsConnection_Status(m->nc) == NATS_CONN_STATUS_CONNECTED;
        pthread_mutex_unlock(&m->lock);
        for (MeshKind k = MESH_KIND_TASK; k <= MESH_KIND_RESULT; k++) {
                fetch_args[k] = (FetchArg) { .mesh = m, .kind = k };
                m->fetch_started[k] = pthread_create(&m->fetch[k], NULL, fetch_thread, &fetch_args[k]) == 0;
        }
        m->state_fetch_started = pthread_create(&m->state_fetch, NULL, state_fetch_thread, m) == 0;
        Job *c = calloc(1, sizeof(*c));
        if (c) {
                c->kind = JOB_CONNECTED;
                c->error_text = TAKE_PTR(warning);  /* a stream that keeps its own settings */
                hand_to_loop(m, c);
        }

        for (;;) {
                pthread_mutex_lock(&m->lock);
                while (!m->stop && !m->todo)
                        pthread_cond_wait(&m->cond, &m->lock);
                Job *j = pop(&m->todo, &m->todo_tail);
                bool stop = m->stop && !j;
                pthread_mutex_unlock(&m->lock);
                if (stop)
                        return NULL;
                run_job(m, j);
                if (j->kind == JOB_PUBLISH || j->kind == JOB_STATUS || (j->kind == JOB_PUBLISH_EVENT && j->error))
                        hand_to_loop(m, j);
                else if (j->kind == JOB_PUBLISH_STATE || j->kind == JOB_PUBLISH_EVENT)
                        job_free(j);
                else {
                        /* The message is done with: let its fetch thread take more. */
                        pthread_mutex_lock(&m->lock);
                        if (m->inflight[j->stream] > 0)
                                m->inflight[j->stream]--;
                        pthread_cond_broadcast(&m->cond);
                        pthread_mutex_unlock(&m->lock);
                        if (j->error)
                                hand_to_loop(m, j);
                        else
                                job_free(j);
                }
        }
}

/* ---- the loop's side ---- */

static Outgoing *find_out(Mesh *m, const char *id) {
        for (size_t i = 0; i < m->n_out; i++)
                if (streq(m->out[i].id, id))
                        return &m->out[i];
        return NULL;
}

/* The task (argument "s") a caller names, when it is one this host sent and the caller its
 * sender or root: 1 with *ret_id, the caller's *ret_uid (when not NULL) and *ret; 0 with error set (NoSuchTask, AccessDenied with
 * why_suffix after its reason); negative errno. */
static int caller_outgoing(Mesh *m, sd_bus_message *msg, const char *why_suffix, const char **ret_id,
                           uid_t *ret_uid, Outgoing **ret, sd_bus_error *error) {
        const char *id;
        uid_t uid;
        int r;

        r = sd_bus_message_read(msg, "s", &id);
        if (r < 0)
                return r;
        r = con_authz_caller_uid(m->authz, msg, &uid, error);
        if (r <= 0)
                return r;
        Outgoing *o = find_out(m, id);
        if (!o)
                return con_bus_error_setf(error, CON_ERROR_NO_SUCH_TASK, "The mesh knows no task '%s' sent from here", id);
        if (o->uid != uid && uid != 0)
                return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED, "Access denied: task '%s' is not yours%s",
                                          id, why_suffix);
        *ret_id = id;
        if (ret_uid)
                *ret_uid = uid;
        *ret = o;
        return 1;
}

static void outgoing_done(Outgoing *o) {
        free(o->id);
        free(o->agent);
        free(o->host);
        free(o->sender);
        free(o->cancel_by);
        mesh_result_done(&o->result);
}

/* Whether a result or a state event naming HOST, AGENT and FROM (USER@HOST) is task O's: the host
 * and agent it went to, and its sender, a user of this host. A task id alone proves nothing: ids are
 * guessable, and after a restart another user may have sent one again. */
static bool outgoing_is(const Mesh *m, const Outgoing *o, const char *host, const char *agent, const char *from) {
        const char *at = strrchr(from, '@');
        if (!at || !streq(o->host, host) || !streq(o->agent, agent) || !streq(at + 1, m->config->mesh.host))
                return false;
        size_t user_len = (size_t) (at - from);
        return strlen(o->sender) == user_len && strncmp(o->sender, from, user_len) == 0;
}

static void sent_make_room(Mesh *m);

static Outgoing *add_out(Mesh *m, const char *id, const char *agent, const char *host, uid_t uid, const char *sender) {
        sent_make_room(m);
        Outgoing *n = realloc(m->out, sizeof(*n) * (m->n_out + 1));
        if (!n)
                return NULL;
        m->out = n;
        Outgoing *o = &n[m->n_out];
        *o = (Outgoing) { .uid = uid, .id = strdup(id), .agent = strdup(agent), .host = strdup(host),
                          .sender = strdup(sender), .state = "submitted",
                          .submitted_usec = con_now(CLOCK_REALTIME) };
        if (!o->id || !o->agent || !o->host || !o->sender) {
                outgoing_done(o);
                return NULL;
        }
        m->n_out++;
        return o;
}

/* ---- the table of sent tasks on disk (mesh-sent.h; docs/MULTIHOST.md "The table of sent tasks") ---- */

static MeshSent sent_view(const Outgoing *o) {
        return (MeshSent) { .id = o->id, .agent = o->agent, .host = o->host, .sender = o->sender, .uid = o->uid,
                            .state = o->state, .submitted_usec = o->submitted_usec, .ended_usec = o->ended_usec,
                            .stored = o->stored, .done = o->done, .cancel_by = o->cancel_by, .result = o->result };
}

static int on_sent_sync(sd_event_source *s, void *userdata);
static void sent_compact(Mesh *m);

static int sent_schedule_commit(Mesh *m) {
        if (m->sync_event)
                return 0;
        return sd_event_add_defer(m->event, &m->sync_event, on_sent_sync, m);
}

/* O's record, into the journal's batch: written at the end of this loop iteration (on_sent_sync),
 * and on disk before Submit's answer and before a result's message is acknowledged. */
static int sent_save(Mesh *m, const Outgoing *o) {
        MeshSent s = sent_view(o);
        int r = mesh_sent_journal_put(m->sent, &s);
        if (r < 0)
                return r;
        return sent_schedule_commit(m);
}

/* The records' group commit (docs/MULTIHOST.md, "The table of sent tasks"): the records of this
 * loop iteration go to the journal in one write; when a Submit's answer, a Cancel's or a result's
 * acknowledgement waits for them, with one fdatasync(). A burst costs one commit per iteration,
 * not one per task. */
static int on_sent_sync(sd_event_source *s _unused_, void *userdata) {
        Mesh *m = userdata;
        SentWaiter *w = TAKE_PTR(m->waiters);
        size_t n = m->n_waiters;
        m->n_waiters = 0;
        m->sync_event = sd_event_source_disable_unref(m->sync_event);

        int r = mesh_sent_journal_commit(m->sent, n > 0);
        if (r < 0)
                log_error_errno(r, "Cannot write %s/%s: %m", CON_MESH_SENT_DIR, MESH_SENT_JOURNAL);
        for (size_t i = 0; i < n; i++) {
                if (w[i].call && !w[i].task_id) {
                        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                        if (r < 0) {
                                (void) con_bus_error_setf(&e, CON_ERROR_STORAGE_FAILED, "The mesh cannot record "
                                                          "the cancel: %s", strerror(-r));
                                (void) sd_bus_reply_method_error(w[i].call, &e);
                        } else
                                (void) sd_bus_reply_method_return(w[i].call, NULL);
                        sd_bus_message_unref(w[i].call);
                } else if (w[i].call) {
                        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                        if (r < 0) {
                                (void) con_bus_error_setf(&e, CON_ERROR_STORAGE_FAILED, "The mesh sent task %s but "
                                                          "cannot record it: %s", w[i].task_id, strerror(-r));
                                (void) sd_bus_reply_method_error(w[i].call, &e);
                        } else
                                (void) sd_bus_reply_method_return(w[i].call, "s", w[i].task_id);
                        sd_bus_message_unref(w[i].call);
                        free(w[i].task_id);
                } else if (r < 0 || queue_msg_job(m, JOB_ACK, MESH_KIND_RESULT, w[i].ack) < 0)
                        release_msg(m, MESH_KIND_RESULT, w[i].ack);     /* delivered again */
        }
        free(w);
        if (r >= 0 && mesh_sent_journal_want_compact(m->sent, m->n_out))
                sent_compact(m);
        return 0;
}

/* Takes CALL (a Submit to answer with TASK_ID, or a Cancel to answer empty: TASK_ID NULL) or ACK (a result message to acknowledge). */
static int sent_after_sync(Mesh *m, sd_bus_message *call, const char *task_id, natsMsg *ack) {
        SentWaiter *n = reallocarray(m->waiters, m->n_waiters + 1, sizeof(*n));
        if (!n)
                return -ENOMEM;
        m->waiters = n;
        SentWaiter w = { .call = sd_bus_message_ref(call), .task_id = task_id ? strdup(task_id) : NULL, .ack = ack };
        if (call && task_id && !w.task_id) {
                sd_bus_message_unref(w.call);
                return -ENOMEM;
        }
        int r = sent_schedule_commit(m);
        if (r < 0) {
                sd_bus_message_unref(w.call);
                free(w.task_id);
                return r;
        }
        n[m->n_waiters++] = w;
        return 0;
}

static void sent_compact(Mesh *m) {
        MeshSent *views = calloc(m->n_out ?: 1, sizeof(*views));
        if (!views) {
                log_error("Out of memory");
                return;
        }
        for (size_t i = 0; i < m->n_out; i++)
                views[i] = sent_view(&m->out[i]);
        uint64_t before = mesh_sent_journal_size(m->sent);
        int r = mesh_sent_journal_compact(m->sent, views, m->n_out);
        free(views);
        if (r < 0)
                log_warning_errno(r, "Cannot compact %s/%s: %m", CON_MESH_SENT_DIR, MESH_SENT_JOURNAL);
        else
                log_debug("Compacted %s/%s: %" PRIu64 " bytes, %" PRIu64 " before", CON_MESH_SENT_DIR,
                          MESH_SENT_JOURNAL, mesh_sent_journal_size(m->sent), before);
}

static void sent_waiters_free(Mesh *m) {
        for (size_t i = 0; i < m->n_waiters; i++) {
                sd_bus_message_unref(m->waiters[i].call);
                free(m->waiters[i].task_id);
                if (m->waiters[i].ack)
                        natsMsg_Destroy(m->waiters[i].ack);     /* delivered again after the ack wait */
        }
        free(m->waiters);
        m->waiters = NULL;
        m->n_waiters = 0;
        m->sync_event = sd_event_source_disable_unref(m->sync_event);
}

/* Forgets the I-th sent task: its record, its answer file for its sender, its entry. */
static void sent_forget(Mesh *m, size_t i) {
        Outgoing *o = &m->out[i];
        char name[CON_TASK_ID_MAX + 16];
        /* Not synced: a forget lost in a crash is made again by the retention. */
        int r = mesh_sent_journal_forget(m->sent, o->id);
        if (r >= 0)
                r = sent_schedule_commit(m);
        if (r < 0)
                log_warning_errno(r, "Cannot forget the record of task %s: %m", o->id);
        if (o->done) {
                bool ok = streq_ptr(o->result.status, "completed");
                int dirfd = ok ? m->outbox_fd : m->failed_fd;
                (void) snprintf(name, sizeof(name), "%s%s", o->id, ok ? ".response" : ".reason");
                if (dirfd >= 0 && unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
                        log_warning_errno(-errno, "Cannot remove %s/%s: %m",
                                          ok ? CON_MESH_OUTBOX_DIR : CON_MESH_FAILED_DIR, name);
        }
        outgoing_done(o);
        memmove(o, o + 1, sizeof(*o) * (m->n_out - i - 1));
        m->n_out--;
}

/* Before a task is added: at mesh.sent_max the oldest goes (not silently: it is logged). */
static void sent_make_room(Mesh *m) {
        while (m->n_out > 0 && m->n_out >= m->config->mesh.sent_max) {
                log_notice("Forgetting task %s for %s@%s (%s): mesh.sent_max (%u) tasks are kept", m->out[0].id,
                           m->out[0].agent, m->out[0].host, m->out[0].done ? m->out[0].result.status : "no result yet",
                           m->config->mesh.sent_max);
                sent_forget(m, 0);
        }
}

/* The retention: sent tasks older than mesh.sent_retention (after their result; one never answered
 * after it could last have left its host's stream), and answer files in /srv/con/mesh/ without a
 * record that are that old, go; so do the oldest beyond mesh.sent_max. */
static void sent_retention(Mesh *m) {
        const ConMeshConfig *mc = &m->config->mesh;
        uint64_t now = con_now(CLOCK_REALTIME);
        unsigned n = 0;

        for (size_t i = 0; i < m->n_out; ) {
                MeshSent s = sent_view(&m->out[i]);
                if (mesh_sent_expired(&s, now, mc->sent_retention_usec, mc->retention_usec)) {
                        sent_forget(m, i);
                        n++;
                } else
                        i++;
        }
        while (m->n_out > mc->sent_max) {
                sent_forget(m, 0);
                n++;
        }
        if (n > 0)
                log_info("Forgot %u sent task(s) and their answers (mesh.sent_retention, mesh.sent_max)", n);
        /* Answers whose record is gone (written before records were kept, or a record lost). */
        uint64_t cutoff = now > mc->sent_retention_usec ? now - mc->sent_retention_usec : 0;
        const struct { int fd; const char *dir, *suffix; } dirs[] = {
                { m->outbox_fd, CON_MESH_OUTBOX_DIR, ".response" }, { m->failed_fd, CON_MESH_FAILED_DIR, ".reason" },
        };
        for (size_t i = 0; cutoff > 0 && i < ELEMENTSOF(dirs); i++) {
                if (dirs[i].fd < 0)
                        continue;
                int r = con_spool_prune(dirs[i].fd, dirs[i].suffix, mc->sent_max, cutoff, NULL);
                if (r < 0)
                        log_warning_errno(r, "Cannot clean %s: %m", dirs[i].dir);
                else if (r > 0)
                        log_info("Removed %d answer(s) older than mesh.sent_retention from %s", r, dirs[i].dir);
        }
}

static int on_retention_timer(sd_event_source *s, uint64_t usec _unused_, void *userdata) {
        Mesh *m = userdata;
        uint64_t period = m->config->mesh.sent_retention_usec / 4;
        sent_retention(m);
        if (period < USEC_PER_SEC)
                period = USEC_PER_SEC;
        if (period > SENT_RETENTION_PERIOD_MAX_USEC)
                period = SENT_RETENTION_PERIOD_MAX_USEC;
        (void) sd_event_source_set_time_relative(s, period);
        return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

static void cancel_pending_add(Mesh *m, const Outgoing *o, const char *by, bool publish_now);
static void write_result_file(Mesh *m, const Outgoing *o, bool missing_only);

/* At the start: the sent tasks of earlier runs, from the journal (and an earlier version's files),
 * their pending cancels sent again. */
static int sent_load(Mesh *m) {
        _cleanup_close_ int sent_fd = -EBADF;
        MeshSentLoadStats st = {};
        MeshSent *all = NULL;
        size_t n = 0;

        int fd = open_nofollow(CON_MESH_DIR, O_RDONLY | O_DIRECTORY, 0);
        if (fd < 0)
                return log_error_errno(fd, "Cannot open %s (con bootstrap makes it): %m", CON_MESH_DIR);
        sent_fd = mesh_sent_open_dir(fd, "sent");
        safe_close(fd);
        if (sent_fd < 0)
                return log_error_errno(sent_fd, "Cannot open %s (it must be %s's, 0700): %m", CON_MESH_SENT_DIR,
                                       CON_MESH_USER);
        int r = mesh_sent_journal_open(sent_fd, m->config->mesh.host, &m->sent, &all, &n, &st);
        if (r == -EBUSY)
                return log_error_errno(r, "Another con-meshd holds %s/%s (one gateway per host): stop it first",
                                       CON_MESH_SENT_DIR, MESH_SENT_JOURNAL);
        if (r < 0)
                return log_error_errno(r, "Cannot read %s: %m", CON_MESH_SENT_DIR);
        if (st.set_aside)
                log_warning("%s/%s was not %s's own file (owner, mode or links): set aside as %s.untrusted-*, "
                            "not read", CON_MESH_SENT_DIR, MESH_SENT_JOURNAL, CON_MESH_USER, MESH_SENT_JOURNAL);
        if (st.torn_tail)
                log_notice("%s/%s: cut off a torn last record (a crash while it was written; never acknowledged)",
                           CON_MESH_SENT_DIR, MESH_SENT_JOURNAL);
        if (st.n_corrupt > 0)
                log_warning("Skipped %u record(s) in %s/%s that do not parse", st.n_corrupt, CON_MESH_SENT_DIR,
                            MESH_SENT_JOURNAL);
        if (st.n_migrated > 0)
                log_info("Moved %zu record file(s) of an earlier version into %s/%s", st.n_migrated,
                         CON_MESH_SENT_DIR, MESH_SENT_JOURNAL);
        if (st.n_bad_files > 0)
                log_warning("Skipped %u record file(s) in %s that do not parse (left in place)", st.n_bad_files,
                            CON_MESH_SENT_DIR);
        m->out = calloc(n ?: 1, sizeof(*m->out));
        if (!m->out) {
                mesh_sent_free_many(all, n);
                return log_error_errno(-ENOMEM, "Cannot read %s: %m", CON_MESH_SENT_DIR);
        }
        size_t waiting = 0, canceling = 0;
        for (size_t i = 0; i < n; i++) {
                MeshSent *s = &all[i];
                m->out[i] = (Outgoing) { .id = TAKE_PTR(s->id), .agent = TAKE_PTR(s->agent), .host = TAKE_PTR(s->host),
                                         .sender = TAKE_PTR(s->sender), .uid = s->uid, .state = s->state,
                                         .stored = s->stored, .done = s->done, .result = s->result, .submitted_usec = s->submitted_usec,
                                         .ended_usec = s->ended_usec, .cancel_by = TAKE_PTR(s->cancel_by) };
                s->result = (MeshResult) {};
                waiting += !s->done;
        }
        m->n_out = n;
        mesh_sent_free_many(all, n);
        if (n > 0)
                log_info("%zu sent task(s) from earlier runs, %zu of them waiting for their result", n, waiting);
        sent_retention(m);
        /* Answer files are written without a sync: one a crash lost is written again from its record. */
        for (size_t i = 0; i < m->n_out; i++)
                if (m->out[i].done)
                        write_result_file(m, &m->out[i], true);
        /* Cancels asked before the restart: sent again until the result is back. */
        for (size_t i = 0; i < m->n_out; i++)
                if (!m->out[i].done && m->out[i].cancel_by) {
                        cancel_pending_add(m, &m->out[i], m->out[i].cancel_by, false);
                        canceling++;
                }
        if (canceling > 0)
                log_info("%zu cancel(s) asked before the restart: sent again until their result is back", canceling);
        r = sd_event_add_time_relative(m->event, &m->retention_timer, CLOCK_REALTIME, USEC_PER_SEC, USEC_PER_SEC,
                                       on_retention_timer, m);
        if (r < 0)
                return log_error_errno(r, "Cannot set up the retention timer: %m");
        return 0;
}

static Delivery *find_delivery(Mesh *m, const char *id, const char *from) {
        for (size_t i = 0; i < m->n_dl; i++)
                if (streq(m->dl[i].id, id) && (!from || streq(m->dl[i].from, from)))
                        return &m->dl[i];
        return NULL;
}

static void drop_delivery(Mesh *m, Delivery *d) {
        free(d->id);
        free(d->agent);
        free(d->from);
        free(d->origin);
        size_t i = (size_t) (d - m->dl);
        memmove(d, d + 1, sizeof(*d) * (m->n_dl - i - 1));
        m->n_dl--;
}

/* RES for ORIGIN's result stream, under the message id r.<this host>.<id>, or with AGAIN (a result
 * sent again on request, which JetStream must not drop as a duplicate) r.<this host>.<id>.<AGAIN>. */
static int publish_result_as(Mesh *m, const char *origin, MeshResult *res, uint64_t again) {
        _cleanup_free_ char *msg_id = NULL;
        char *json = NULL;
        int r = mesh_result_to_json(res, &json);
        if (r < 0)
                return r;
        if ((again ? asprintf(&msg_id, "r.%s.%s.%" PRIu64, m->config->mesh.host, res->id, again) :
                     asprintf(&msg_id, "r.%s.%s", m->config->mesh.host, res->id)) < 0) {
                free(json);
                return -ENOMEM;
        }
        return queue_publish(m, MESH_KIND_RESULT, origin, msg_id, json, NULL, res->id);
}

static int publish_result(Mesh *m, const char *origin, MeshResult *res) {
        return publish_result_as(m, origin, res, 0);
}

static void publish_state(Mesh *m, const char *id, const char *agent, const char *host, const char *from,
                          const char *origin, const char *state);

/* A refusal or failure on this host, as the task's result. */
static int publish_failure(Mesh *m, const MeshTask *t, const char *detail) {
        _cleanup_free_ char *text = NULL;
        if (asprintf(&text, "Refused on host %s: %s", m->config->mesh.host, detail) < 0)
                return -ENOMEM;
        MeshResult res = { .id = t->id, .host = m->config->mesh.host, .agent = t->agent, .from = t->from,
                           .status = (char *) "failed", .text = text };
        int r = publish_result(m, t->origin, &res);
        if (r >= 0)
                publish_state(m, t->id, t->agent, m->config->mesh.host, t->from, t->origin, "failed");
        return r;
}

/* A state event of task ID of FROM (USER@ORIGIN) to AGENT@HOST, for every host (no text): this host
 * publishes as HOST (accepted, working, the end) or as the origin (submitted). */
static void publish_state(Mesh *m, const char *id, const char *agent, const char *host, const char *from,
                          const char *origin, const char *state) {
        MeshState st = { .id = (char *) id, .host = (char *) host, .agent = (char *) agent,
                         .from = (char *) from, .state = (char *) state };
        Job *j = calloc(1, sizeof(*j));
        if (!j)
                return;
        j->kind = JOB_PUBLISH_EVENT;
        /* Its JetStream message id: a retry whose first try was stored after all is not stored again. */
        if (mesh_state_to_json(&st, &j->data) < 0 ||
            mesh_state_subject(origin, m->config->mesh.host, id, &j->subject) < 0 ||
            asprintf(&j->msg_id, "%s.%s.%s", j->subject, from, state) < 0) {
                j->msg_id = NULL;
                job_free(j);
                return;
        }
        j->len = strlen(j->data);
        queue_job(m, j);
}

static int on_result_info(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error _unused_);
static int ask_result(Mesh *m, Delivery *d);
static int call_async_owned(Mesh *m, sd_bus_message *call, sd_bus_message_handler_t callback, void *userdata);

/* Tracks a task of another host that agent AGENT of this host holds, and asks for its result (it
 * may have ended already). FROM is the sender as the agent records it (USER@HOST), the origin its
 * host. 0 when already tracked. */
static int add_delivery(Mesh *m, const char *id, const char *agent, const char *from) {
        const char *at = strrchr(from, '@');
        if (!at)
                return -EINVAL;
        if (find_delivery(m, id, from))
                return 0;
        Delivery *n = realloc(m->dl, sizeof(*n) * (m->n_dl + 1));
        if (!n)
                return -ENOMEM;
        m->dl = n;
        Delivery d = { .id = strdup(id), .agent = strdup(agent), .from = strdup(from), .origin = strdup(at + 1) };
        if (!d.id || !d.agent || !d.from || !d.origin) {
                free(d.id);
                free(d.agent);
                free(d.from);
                free(d.origin);
                return -ENOMEM;
        }
        n[m->n_dl++] = d;
        return ask_result(m, &n[m->n_dl - 1]);
}

/* A sender the agent records for a task of another host: USER@HOST with HOST not this one. */
static bool remote_sender(Mesh *m, const char *sender) {
        const char *at = strrchr(sender, '@');
        return at && con_remote_sender_valid(sender) && !streq(at + 1, m->config->mesh.host);
}

static int ask_result(Mesh *m, Delivery *d) {
        _cleanup_free_ char *bus_name = NULL, *key = NULL;
        if (d->asking)
                return 0;
        if (m->asks >= ASKS_MAX) {
                d->want = true;         /* asked when a slot is free (ask_waiting) */
                return 0;
        }
        int r = con_agent_bus_name(d->agent, &bus_name);
        if (r < 0)
                return r;
        /* The callback finds the delivery again by id and sender (the array moves). */
        if (asprintf(&key, "%s\n%s", d->id, d->from) < 0)
                return -ENOMEM;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        r = sd_bus_message_new_method_call(m->bus, &call, bus_name, CON_AGENT_PATH, CON_AGENT_INTERFACE,
                                           "GetResultInfo");
        if (r >= 0)
                r = sd_bus_message_append(call, "s", d->id);
        /* The key goes with the slot: freed after the reply, or with the bus when the gateway
         * stops before the agent answered (it used to leak then). */
        if (r >= 0)
                r = call_async_owned(m, call, on_result_info, key);
        if (r < 0)
                return r;
        TAKE_PTR(key);
        d->asking = true;
        d->want = false;
        m->asks++;
        return 0;
}

static Mesh *the_mesh;  /* the one gateway of the process, for the bus callbacks' keys */

/* The deliveries whose ask waits, while slots are free. */
static void ask_waiting(Mesh *m) {
        for (size_t i = 0; i < m->n_dl && m->asks < ASKS_MAX; i++)
                if (m->dl[i].want && !m->dl[i].asking && ask_result(m, &m->dl[i]) < 0)
                        break;
}

static int on_ask_timer(sd_event_source *s _unused_, uint64_t usec _unused_, void *userdata) {
        Mesh *m = userdata;
        m->ask_timer = sd_event_source_disable_unref(m->ask_timer);
        ask_waiting(m);
        return 0;
}

static bool transient_error(const sd_bus_error *e);

static int on_result_info(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error _unused_) {
        char *key = userdata;   /* freed with the slot */
        Mesh *m = the_mesh;
        const char *status, *text;
        char *nl = strchr(key, '\n');
        *nl = 0;
        if (m->asks > 0)
                m->asks--;
        Delivery *d = find_delivery(m, key, nl + 1);
        if (!d) {
                ask_waiting(m);
                return 0;
        }
        d->asking = false;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        if (e && transient_error(e)) {
                /* Asked again in a second (the agent restarting, the bus's limits): the task's
                 * message is acknowledged, so nothing else would send its result. */
                log_notice("Cannot read the result of task %s of %s at agent %s yet: %s", d->id, d->from,
                           d->agent, e->message ?: e->name);
                d->want = true;
                if (!m->ask_timer)
                        (void) sd_event_add_time_relative(m->event, &m->ask_timer, CLOCK_MONOTONIC, USEC_PER_SEC, 0,
                                                          on_ask_timer, m);
                ask_waiting(m);
                return 0;
        }
        if (e) {
                log_warning("Cannot read the result of task %s of %s at agent %s: %s; no result goes back", d->id,
                            d->from, d->agent, e->message ?: e->name);
                drop_delivery(m, d);
                ask_waiting(m);
                return 0;
        }
        ConResultInfo info = {};
        if (sd_bus_message_read(reply, "ss", &status, &text) < 0 || con_bus_read_result_info(reply, &info) < 0 ||
            !con_task_state_is_final(status)) {
                ask_waiting(m);
                return 0;       /* TaskCompleted will say when */
        }
        MeshResult res = { .id = d->id, .host = m->config->mesh.host, .agent = d->agent, .from = d->from,
                           .status = (char *) con_task_state_a2a(status), .text = (char *) text,
                           .truncated = info.truncated, .replaced = info.replaced, .size = info.size };
        int r = publish_result(m, d->origin, &res);
        if (r < 0) {
                log_error_errno(r, "Cannot send the result of task %s to %s: %m", d->id, d->origin);
                ask_waiting(m);
                return 0;
        }
        log_info("Task %s from %s at agent %s ended %s; result queued for %s", d->id, d->from, d->agent,
                 res.status, d->origin);
        publish_state(m, d->id, d->agent, m->config->mesh.host, d->from, d->origin, res.status);
        drop_delivery(m, d);
        ask_waiting(m);
        return 0;
}

/* An asynchronous call whose userdata (allocated) goes with its slot: after the reply, or when the
 * bus goes first (a gateway stopping with calls in flight). */
static int call_async_owned(Mesh *m, sd_bus_message *call, sd_bus_message_handler_t callback, void *userdata) {
        sd_bus_slot *slot = NULL;
        int r = sd_bus_call_async(m->bus, &slot, call, callback, userdata, 0);
        if (r < 0)
                return r;
        (void) sd_bus_slot_set_destroy_callback(slot, free);
        (void) sd_bus_slot_set_floating(slot, 1);
        sd_bus_slot_unref(slot);
        return 0;
}

/* Who sent a TaskCompleted of a remote task this gateway has no record of: the bus driver's
 * answer; only an agent of this host (its user a-AGENT) is believed. */
static int on_completed_owner(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error _unused_) {
        _cleanup_free_ char *user = NULL, *agent = NULL;
        char *key = userdata;   /* freed with the slot */
        Mesh *m = the_mesh;
        uint32_t uid;
        char *nl = strchr(key, '\n');
        *nl = 0;
        if (sd_bus_message_is_method_error(reply, NULL) || sd_bus_message_read(reply, "u", &uid) < 0)
                return 0;
        if (con_uid_to_name((uid_t) uid, &user) < 0 || con_agent_from_user(user, &agent) < 0 ||
            !con_config_find_agent(m->config, agent))
                return 0;
        log_info("Task %s from %s at agent %s, accepted before this gateway started, ended", key, nl + 1, agent);
        int r = add_delivery(m, key, agent, nl + 1);
        if (r < 0)
                log_error_errno(r, "Cannot track task %s from %s at agent %s: %m", key, nl + 1, agent);
        return 0;
}

/* A local agent's TaskCompleted: one of the deliveries ended, or a task of another host accepted
 * before this gateway started (a restart) whose result must still go back. */
static int on_agent_completed(sd_bus_message *msg, void *userdata, sd_bus_error *ret_error _unused_) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        _cleanup_free_ char *key = NULL;
        Mesh *m = userdata;
        const char *id, *sender, *status, *owner = sd_bus_message_get_sender(msg);
        if (sd_bus_message_read(msg, "sss", &id, &sender, &status) < 0)
                return 0;
        Delivery *d = find_delivery(m, id, sender);
        if (d) {
                (void) ask_result(m, d);
                return 0;
        }
        if (!remote_sender(m, sender) || !con_task_id_valid(id) || isempty(owner))
                return 0;
        if (asprintf(&key, "%s\n%s", id, sender) < 0)
                return 0;
        if (sd_bus_message_new_method_call(m->bus, &call, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                           "org.freedesktop.DBus", "GetConnectionUnixUser") >= 0 &&
            sd_bus_message_append(call, "s", owner) >= 0 && call_async_owned(m, call, on_completed_owner, key) >= 0)
                TAKE_PTR(key);
        return 0;
}

/* A local agent's TaskStarted: a delivery's session started (working). Only the owner of that
 * agent's bus name speaks for it (any peer of the bus may send the signal). */
static int on_agent_started(sd_bus_message *msg, void *userdata, sd_bus_error *ret_error _unused_) {
        _cleanup_free_ char *bus_name = NULL;
        Mesh *m = userdata;
        const char *id, *sender;
        if (sd_bus_message_read(msg, "ss", &id, &sender) < 0)
                return 0;
        Delivery *d = find_delivery(m, id, sender);
        if (!d)
                return 0;
        const char *owner = con_agent_bus_name(d->agent, &bus_name) >= 0 ?
                            con_name_owners_get(m->owners, bus_name) : NULL;
        if (!owner || !streq_ptr(owner, sd_bus_message_get_sender(msg))) {
                log_notice("Ignoring TaskStarted of task %s from %s: %s does not own agent %s's bus name", d->id,
                           d->from, sd_bus_message_get_sender(msg) ?: "?", d->agent);
                return 0;
        }
        publish_state(m, d->id, d->agent, m->config->mesh.host, d->from, d->origin, "working");
        return 0;
}

/* After a start: the tasks of other hosts that the agents hold (accepted before this gateway
 * started, perhaps ended meanwhile) are tracked again, so their results go back. The agents the
 * policy lets another host task are started for this (an on-demand agent killed with remote tasks
 * queued would otherwise wait for its next task); the others only if running. */
static void take_over_next(Mesh *m);
static bool remote_may_task(const ConConfig *c, const char *agent);

/* The agents whose ListTasks failed for a passing reason are asked again. */
static int on_list_timer(sd_event_source *s _unused_, uint64_t usec _unused_, void *userdata) {
        Mesh *m = userdata;
        m->list_timer = sd_event_source_disable_unref(m->list_timer);
        m->list_tries++;
        for (size_t i = 0; m->list_again && m->list_again[i]; i++)
                if (!strv_contains(m->list_now, m->list_again[i]))
                        (void) strv_extend(&m->list_now, m->list_again[i]);
        m->list_again = strv_free(m->list_again);
        take_over_next(m);
        return 0;
}

static int on_listed(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error _unused_) {
        const char *agent = userdata;   /* freed with the slot */
        Mesh *m = the_mesh;
        const char *id, *status, *sender;
        unsigned n = 0;
        int r;

        m->listing = false;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        if (e && transient_error(e) && remote_may_task(m->config, agent)) {
                /* Starting, restarting, the bus's limits: it may hold tasks of other hosts that
                 * ended while this gateway was down, whose results only this sends back. */
                if (m->list_tries < LIST_TRIES && strv_extend(&m->list_again, agent) >= 0) {
                        if (!m->list_timer)
                                (void) sd_event_add_time_relative(m->event, &m->list_timer, CLOCK_MONOTONIC,
                                                                  USEC_PER_SEC, 0, on_list_timer, m);
                } else
                        log_warning("Cannot list the tasks of agent %s (%s); the results of tasks of other hosts "
                                    "that ended while this gateway was down are not sent back", agent,
                                    e->message ?: e->name);
        }
        take_over_next(m);      /* the reply is read already: the next agent's call may go */
        if (e)
                return 0;       /* not running (or not answering): nothing to take over */
        r = sd_bus_message_enter_container(reply, 'a', "(sss)");
        if (r < 0)
                return 0;
        while ((r = sd_bus_message_read(reply, "(sss)", &id, &status, &sender)) > 0) {
                if (!remote_sender(m, sender) || find_delivery(m, id, sender))
                        continue;
                r = add_delivery(m, id, agent, sender);
                if (r < 0) {
                        log_error_errno(r, "Cannot track task %s from %s at agent %s: %m", id, sender, agent);
                        break;
                }
                n++;
        }
        if (n > 0)
                log_info("Agent %s holds %u task(s) of other hosts from before this gateway started; their "
                         "results go back when they end", agent, n);
        return 0;
}

/* Whether the policy lets a principal of another host task AGENT (a grant of task to it or to "*"). */
static bool remote_may_task(const ConConfig *c, const char *agent) {
        for (size_t i = 0; i < c->n_policy_grants; i++) {
                const ConPolicyGrantConfig *g = &c->policy_grants[i];
                ConPrincipalKind kind;
                const char *name;
                if (con_principal_parse(g->who, &kind, &name) < 0 || !con_principal_is_remote(kind) ||
                    !strv_contains(g->may, "task"))
                        continue;
                if (strv_contains(g->to, agent) || strv_contains(g->to, "*"))
                        return true;
        }
        return false;
}

/* Asks the next agent (one at a time: a thousand agents must not exceed the bus's pending replies):
 * the configured ones, then those to ask again (list_now). */
static void take_over_next(Mesh *m) {
        while (!m->listing && (m->take_over_next < m->config->n_agents || (m->list_now && m->list_now[0]))) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
                _cleanup_free_ char *bus_name = NULL, *agent = NULL;
                if (m->take_over_next < m->config->n_agents)
                        agent = strdup(m->config->agents[m->take_over_next++].name);
                else {
                        agent = m->list_now[0];
                        memmove(m->list_now, m->list_now + 1, sizeof(char *) * strv_length(m->list_now));
                }
                if (!agent || con_agent_bus_name(agent, &bus_name) < 0 ||
                    sd_bus_message_new_method_call(m->bus, &call, bus_name, CON_AGENT_PATH, CON_AGENT_INTERFACE,
                                                   "ListTasks") < 0 ||
                    sd_bus_message_set_auto_start(call, remote_may_task(m->config, agent)) < 0)
                        continue;
                if (call_async_owned(m, call, on_listed, agent) >= 0) {
                        TAKE_PTR(agent);
                        m->listing = true;
                        return;
                }
        }
}

static void take_over(Mesh *m) {
        m->take_over_next = 0;
        take_over_next(m);
}

struct DeliverCall {
        Mesh *mesh;
        MeshTask task;
        natsMsg *msg;
        sd_bus_slot *slot;
        DeliverCall *next, **pprev;
};

static void deliver_call_free(DeliverCall *c) {
        if (c->pprev) {
                *c->pprev = c->next;
                if (c->next)
                        c->next->pprev = c->pprev;
        }
        sd_bus_slot_unref(c->slot);
        mesh_task_done(&c->task);
        if (c->msg)
                natsMsg_Destroy(c->msg);
        free(c);
}

/* A trouble that passes: the same call later may work (the bus's limits, the agent restarting). */
static bool transient_error(const sd_bus_error *e) {
        return sd_bus_error_has_names(e, CON_ERROR_HALTED, CON_ERROR_QUEUE_FULL, CON_ERROR_SENDER_QUOTA,
                                      CON_ERROR_STORAGE_FAILED, CON_ERROR_POLICY_TIMEOUT, SD_BUS_ERROR_NO_REPLY,
                                      SD_BUS_ERROR_TIMEOUT, SD_BUS_ERROR_DISCONNECTED, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                      SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER) ||
                (e->name && startswith(e->name, "org.freedesktop.DBus.Error.Spawn."));
}

static void audit_forgery(Mesh *m, const char *event, const char *id, const char *agent, const char *claimed,
                          const char *sent_by);

/* The local agent answered Deliver: accepted durably (its journal is on disk) → ack; refused →
 * a failed result to the origin, then ack; a passing trouble → nak (JetStream redelivers). */
static int on_delivered(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error _unused_) {
        DeliverCall *c = userdata;
        Mesh *m = c->mesh;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        MeshTask *t = &c->task;
        natsMsg *msg = TAKE_PTR(c->msg);
        int r;

        if (!e) {
                log_info("Task %s from %s accepted by agent %s", t->id, t->from, t->agent);
                publish_state(m, t->id, t->agent, m->config->mesh.host, t->from, t->origin, "accepted");
                r = queue_msg_job(m, JOB_ACK, MESH_KIND_TASK, msg);
                if (r < 0)
                        release_msg(m, MESH_KIND_TASK, msg);    /* redelivered; Deliver dedups it */
                r = add_delivery(m, t->id, t->agent, t->from);
                if (r < 0)
                        log_error_errno(r, "Cannot track task %s from %s at agent %s: %m", t->id, t->from, t->agent);
        } else if (transient_error(e)) {
                log_notice("Task %s from %s not delivered to agent %s for now (%s); JetStream delivers it again",
                           t->id, t->from, t->agent, e->message ?: e->name);
                if (queue_msg_job(m, JOB_NAK, MESH_KIND_TASK, msg) < 0)
                        release_msg(m, MESH_KIND_TASK, msg);
        } else {
                log_notice("Task %s from %s refused by agent %s: %s", t->id, t->from, t->agent, e->message ?: e->name);
                /* Another sender (of this host or another) holds that id at the agent: nothing is
                 * tracked for this sender, so neither that task's result nor a cancel reaches it, and
                 * the refusal names only the id. Audited (the task record as audit_forgery writes
                 * it): a host reusing the ids of others' tasks is probing. */
                if (sd_bus_error_has_name(e, CON_ERROR_DUPLICATE_TASK))
                        audit_forgery(m, "mesh.task.id-taken", t->id, t->agent, t->from, t->origin);
                r = publish_failure(m, t, e->message ?: e->name);
                if (r < 0)
                        log_error_errno(r, "Cannot send the refusal of task %s: %m", t->id);
                if (queue_msg_job(m, JOB_ACK, MESH_KIND_TASK, msg) < 0)
                        release_msg(m, MESH_KIND_TASK, msg);
        }
        deliver_call_free(c);
        return 0;
}

/* ---- floods (docs/MULTIHOST.md, "Floods") ---- */

static int on_flood_timer(sd_event_source *s, uint64_t usec, void *userdata);

static bool drops_counted(Mesh *m) {
        pthread_mutex_lock(&m->lock);
        bool any = m->dropped_cancels + m->oversized_cancels + m->oversized_states > 0;
        pthread_mutex_unlock(&m->lock);
        return any;
}

/* The flood timer at the next report due (mesh_flood_next_usec, the dropped events' at most once
 * per FLOOD_INTERVAL_USEC), off when none is. */
static void flood_timer_arm(Mesh *m) {
        uint64_t next = mesh_flood_next_usec(&m->flood);
        uint64_t drops = m->drops_reported_usec == 0 ? 1 : m->drops_reported_usec + FLOOD_INTERVAL_USEC;
        if (drops_counted(m) && drops < next)
                next = drops;
        if (next == 0)
                next = 1;       /* due now (0 is not a time for sd-event) */
        if (next == UINT64_MAX) {
                if (m->flood_timer)
                        (void) sd_event_source_set_enabled(m->flood_timer, SD_EVENT_OFF);
                return;
        }
        int r;
        if (!m->flood_timer)
                r = sd_event_add_time(m->event, &m->flood_timer, CLOCK_MONOTONIC, next, 0, on_flood_timer, m);
        else {
                r = sd_event_source_set_time(m->flood_timer, next);
                if (r >= 0)
                        r = sd_event_source_set_enabled(m->flood_timer, SD_EVENT_ONESHOT);
        }
        if (r < 0)
                log_error_errno(r, "Cannot arm the timer of the flood reports: %m");
}

/* Whether a line (and an audit record) about a hostile message of KIND (task, result, state,
 * cancel) from HOST (the publisher the server's permissions pin; NULL: unknown) is due:
 * FLOOD_BURST per host, kind and interval (a flood of one kind does not hide another), the rest
 * counted and reported once the interval ends (report_floods). */
static bool flood_allow(Mesh *m, const char *host, const char *kind) {
        char key[CON_MESH_HOST_MAX + 16];
        (void) snprintf(key, sizeof(key), "%s %s", host ?: "?", kind);  /* a host name has no space */
        int r = mesh_flood_note(&m->flood, key, con_now(CLOCK_MONOTONIC));
        if (r == 0)
                flood_timer_arm(m);
        return r != 0;  /* out of memory: recorded */
}

static void report_floods(Mesh *m) {
        uint64_t now = con_now(CLOCK_MONOTONIC), n;
        const char *key;

        while (mesh_flood_due(&m->flood, now, &key, &n) > 0) {
                /* "HOST KIND" (flood_allow), or "*": the budget the hosts and kinds beyond the
                 * table's share. */
                const char *space = strchr(key, ' ');
                _cleanup_free_ char *host = space ? strndup(key, (size_t) (space - key)) : strdup(key);
                const char *kind = space ? space + 1 : "any";
                if (!host) {
                        log_error("Cannot report the messages of %s: out of memory", key);
                        continue;
                }
                log_warning("Host %s sent %" PRIu64 " more forged, refused or malformed %s messages (cancels: or "
                            "of tasks not here) in %llu s: dropped, not logged or audited one by one", host, n, kind,
                            (unsigned long long) (FLOOD_INTERVAL_USEC / USEC_PER_SEC));
                if (!m->audit)
                        continue;
                _cleanup_cjson_ cJSON *f = cJSON_CreateObject();
                if (!f || !cJSON_AddStringToObject(f, "sent_by", host) || !cJSON_AddStringToObject(f, "kind", kind) ||
                    !cJSON_AddNumberToObject(f, "count", (double) n)) {
                        log_error("Cannot audit the messages of host %s: out of memory", host);
                        continue;
                }
                bool first = false;
                int r = con_audit_writer_append(m->audit, "con-meshd", "mesh.flood", f, &first);
                if (r < 0 && first)
                        log_error_errno(r, "Cannot write the audit log: %m");
        }
        if (m->drops_reported_usec != 0 && now < m->drops_reported_usec + FLOOD_INTERVAL_USEC)
                return;
        pthread_mutex_lock(&m->lock);
        uint64_t full = m->dropped_cancels, big = m->oversized_cancels, big_states = m->oversized_states;
        m->dropped_cancels = m->oversized_cancels = m->oversized_states = 0;
        pthread_mutex_unlock(&m->lock);
        if (full + big + big_states == 0)
                return;
        m->drops_reported_usec = now;
        log_warning("Dropped %" PRIu64 " cancels (%d were waiting already: a flood?), %" PRIu64 " cancels and %" PRIu64
                    " state events larger than %u bytes, since the last report", full, CANCELS_QUEUED_MAX, big,
                    big_states, MESH_EVENT_MAX);
}

static int on_flood_timer(sd_event_source *s _unused_, uint64_t usec _unused_, void *userdata) {
        Mesh *m = userdata;
        report_floods(m);
        flood_timer_arm(m);
        return 0;
}

/* A message whose payload names another host than the one the server let send it. */
static void audit_forgery(Mesh *m, const char *event, const char *id, const char *agent, const char *claimed,
                          const char *sent_by) {
        if (!m->audit)
                return;
        _cleanup_cjson_ cJSON *f = con_audit_task_fields(id, agent, claimed);
        if (!f || !cJSON_AddStringToObject(f, "sent_by", sent_by)) {
                log_error("Cannot audit the forged message %s: out of memory", id);
                return;
        }
        bool first = false;
        int r = con_audit_writer_append(m->audit, "con-meshd", event, f, &first);
        if (r < 0 && first)
                log_error_errno(r, "Cannot write the audit log: %m");
}

/* The task's priority and deadline for the agent's Deliver, as the router gives a file's. */
static int append_task_options(sd_bus_message *call, const MeshTask *t) {
        int r = con_bus_append_entry(call, "priority", "y", (uint8_t) t->priority);
        if (r >= 0 && t->deadline_usec > 0)
                r = con_bus_append_entry(call, "deadline", "t", t->deadline_usec);
        return r;
}

static int handle_task(Mesh *m, natsMsg *msg) {
        _cleanup_free_ char *bus_name = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        MeshTask t = {};
        int r;

        const char *sender_host = NULL;
        r = mesh_subject_sender(MESH_KIND_TASK, m->config->mesh.host, natsMsg_GetSubject(msg), &sender_host);
        if (r >= 0)
                r = mesh_task_from_json(natsMsg_GetData(msg), (size_t) natsMsg_GetDataLength(msg), &t);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                if (flood_allow(m, sender_host, "task"))
                        log_warning("Dropping a malformed task message on %s (%d bytes)", natsMsg_GetSubject(msg),
                                    natsMsg_GetDataLength(msg));
                return queue_msg_job(m, JOB_TERM, MESH_KIND_TASK, msg);
        }
        /* The origin host is the subject's, which the NATS server let only that host publish on;
         * a payload naming another origin is a forgery by the host that sent it. */
        if (!streq(t.origin, sender_host)) {
                if (flood_allow(m, sender_host, "task")) {
                        log_warning("Dropping task %s: it claims to come from %s but host %s sent it (subject %s)",
                                    t.id, t.from, sender_host, natsMsg_GetSubject(msg));
                        audit_forgery(m, "mesh.task.forged", t.id, t.agent, t.from, sender_host);
                }
                mesh_task_done(&t);
                return queue_msg_job(m, JOB_TERM, MESH_KIND_TASK, msg);
        }
        if (!con_config_find_agent(m->config, t.agent)) {
                log_notice("Task %s from %s is for agent '%s', which this host does not have", t.id, t.from, t.agent);
                _cleanup_free_ char *why = NULL;
                r = asprintf(&why, "no agent '%s' here", t.agent) < 0 ? -ENOMEM : publish_failure(m, &t, why);
                mesh_task_done(&t);
                if (r < 0)
                        return r;
                return queue_msg_job(m, JOB_ACK, MESH_KIND_TASK, msg);
        }
        r = con_agent_bus_name(t.agent, &bus_name);
        if (r >= 0)
                r = sd_bus_message_new_method_call(m->bus, &call, bus_name, CON_AGENT_PATH, CON_AGENT_INTERFACE,
                                                   "Deliver");
        if (r >= 0)
                r = sd_bus_message_open_container(call, 'a', "{sv}");
        if (r >= 0)
                r = sd_bus_message_append(call, "{sv}{sv}{sv}", "text", "s", t.text, "id", "s", t.id, "origin", "s",
                                          t.from);
        if (r >= 0)
                r = append_task_options(call, &t);
        if (r >= 0)
                r = sd_bus_message_close_container(call);
        if (r < 0) {
                mesh_task_done(&t);
                return r;
        }
        DeliverCall *c = calloc(1, sizeof(*c));
        if (!c) {
                mesh_task_done(&t);
                return -ENOMEM;
        }
        *c = (DeliverCall) { .mesh = m, .task = t, .msg = msg };
        r = sd_bus_call_async(m->bus, &c->slot, call, on_delivered, c, 0);
        if (r < 0) {
                c->msg = NULL;  /* the caller keeps it */
                deliver_call_free(c);
                return r;
        }
        c->next = m->calls;
        if (c->next)
                c->next->pprev = &c->next;
        c->pprev = &m->calls;
        m->calls = c;
        return 0;
}

/* The answer as a file for its sender, as an agent writes outbox/<id>.response (completed) or
 * failed/<id>.reason (failed, canceled): con-mesh 0600 plus u:<sender>:r--, never replaced. A
 * .task file's sender reads it there; anyone else through GetResult. */
/* The answer file, written once. Not synced: the result is in the task's record (the journal, synced
 * before the result's message is acknowledged), and sent_load() writes the file again from it
 * when a crash lost it. With MISSING_ONLY, nothing is written when it exists. */
static void write_result_file(Mesh *m, const Outgoing *o, bool missing_only) {
        bool ok = streq(o->result.status, "completed");
        int dirfd = ok ? m->outbox_fd : m->failed_fd;
        _cleanup_free_ char *name = NULL;

        if (dirfd < 0 || o->uid == (uid_t) -1)
                return;
        if (asprintf(&name, "%s%s", o->id, ok ? ".response" : ".reason") < 0)
                return;
        if (missing_only && faccessat(dirfd, name, F_OK, AT_SYMLINK_NOFOLLOW) >= 0)
                return;
        ConSpoolWrite w = { .mode = 0600, .uid = (uid_t) -1, .gid = (gid_t) -1, .noreplace = true,
                            .reader = o->uid == geteuid() ? (uid_t) -1 : o->uid };
        int r = con_spool_write(dirfd, name, o->result.text, strlen(o->result.text), &w);
        if (r < 0 && r != -EEXIST)
                log_warning_errno(r, "Cannot write %s/%s for %s: %m", ok ? CON_MESH_OUTBOX_DIR : CON_MESH_FAILED_DIR,
                                  name, o->sender);
}

static int handle_result(Mesh *m, natsMsg *msg) {
        MeshResult res = {};
        const char *sender_host = NULL;
        int r = mesh_subject_sender(MESH_KIND_RESULT, m->config->mesh.host, natsMsg_GetSubject(msg), &sender_host);
        if (r >= 0)
                r = mesh_result_from_json(natsMsg_GetData(msg), (size_t) natsMsg_GetDataLength(msg), &res);
        if (r == -ENOMEM)
                return r;
        if (r >= 0 && !streq(res.host, sender_host)) {
                if (flood_allow(m, sender_host, "result")) {
                        log_warning("Dropping the result of task %s: it claims to come from host %s but host %s "
                                    "sent it (subject %s)", res.id, res.host, sender_host, natsMsg_GetSubject(msg));
                        audit_forgery(m, "mesh.result.forged", res.id, res.agent, res.from, sender_host);
                }
                mesh_result_done(&res);
                return queue_msg_job(m, JOB_TERM, MESH_KIND_RESULT, msg);
        }
        const char *at = r >= 0 ? strrchr(res.from, '@') : NULL;
        if (r < 0 || !streq(at + 1, m->config->mesh.host)) {
                if (flood_allow(m, sender_host, "result"))
                        log_warning("Dropping a malformed result message on %s", natsMsg_GetSubject(msg));
                mesh_result_done(&res);
                return queue_msg_job(m, JOB_TERM, MESH_KIND_RESULT, msg);
        }
        Outgoing *o = find_out(m, res.id);
        if (o && !outgoing_is(m, o, res.host, res.agent, res.from)) {
                if (flood_allow(m, sender_host, "result"))
                        log_warning("Dropping result of task %s for %s from %s@%s: the task went to %s@%s from %s@%s",
                                    res.id, res.from, res.agent, res.host, o->agent, o->host, o->sender,
                                    m->config->mesh.host);
                mesh_result_done(&res);
                return queue_msg_job(m, JOB_TERM, MESH_KIND_RESULT, msg);
        }
        if (!o) {
                /* Sent before this gateway started (a restart): the sender is the user named in it. */
                _cleanup_free_ char *user = strndup(res.from, (size_t) (at - res.from));
                uid_t uid;
                struct passwd *pw = user ? getpwnam(user) : NULL;
                uid = pw ? pw->pw_uid : (uid_t) -1;
                if (!pw ||
                    !(o = add_out(m, res.id, res.agent, res.host, uid, user))) {
                        mesh_result_done(&res);
                        return queue_msg_job(m, JOB_TERM, MESH_KIND_RESULT, msg);
                }
        }
        if (!o->done) {
                mesh_result_done(&o->result);
                o->result = res;
                res = (MeshResult) {};
                o->done = true;
                o->ended_usec = con_now(CLOCK_REALTIME);
                log_info("Task %s for %s@%s ended %s", o->id, o->agent, o->host, o->result.status);
                if (o->asked > 0)
                        log_info("Task %s: its result came after %u request(s) to %s to send it again", o->id,
                                 o->asked, o->host);
                /* On disk before the result's message is acknowledged (on_sent_sync): a restart still
                 * knows it. */
                r = sent_save(m, o);
                if (r < 0)
                        log_error_errno(r, "Cannot write the record of task %s in %s: %m", o->id, CON_MESH_SENT_DIR);
                write_result_file(m, o, false);
                (void) sd_bus_emit_signal(m->bus, CON_MESH_PATH, CON_MESH_INTERFACE, "TaskCompleted", "sss", o->id,
                                          o->sender, o->result.status);
        }
        mesh_result_done(&res);
        return sent_after_sync(m, NULL, NULL, msg);
}

/* Whether state event J is still worth publishing: not when con-state has (as read back from it)
 * that state or a later one of its task; a later one would be overwritten (con-state keeps the
 * last event of each subject). */
static bool state_event_current(Mesh *m, const Job *j) {
        _cleanup_(mesh_state_done) MeshState st = {};
        if (mesh_state_from_json(j->data, j->len, &st) < 0)
                return false;
        const MeshStateEntry *e = mesh_state_table_find(&m->states, st.id, st.host, st.agent, st.from);
        return !e || mesh_state_rank(e->state) < mesh_state_rank(st.state);
}

static size_t state_retry_count(Mesh *m) {
        size_t n = 0;
        for (Job *j = m->state_retry; j; j = j->next)
                n++;
        return n;
}

/* Every STATE_RETRY_USEC while some wait: those due go to the worker, unless con-state has their
 * state or a later one by now. */
/* A one-shot timer USEC from now, made on first use; one already pending keeps its time (a retry
 * is not pushed back by each new entry). */
static int arm_retry_timer(Mesh *m, sd_event_source **t, uint64_t usec, sd_event_time_handler_t handler) {
        if (!*t)
                return sd_event_add_time_relative(m->event, t, CLOCK_MONOTONIC, usec, 0, handler, m);
        if (sd_event_source_get_enabled(*t, NULL) != 0)
                return 0;
        int r = sd_event_source_set_time_relative(*t, usec);
        return r < 0 ? r : sd_event_source_set_enabled(*t, SD_EVENT_ONESHOT);
}

static int on_state_retry_timer(sd_event_source *s, uint64_t usec _unused_, void *userdata) {
        Mesh *m = userdata;
        uint64_t now = con_now(CLOCK_MONOTONIC);
        Job *keep = NULL, *keep_tail = NULL;
        for (Job *j; (j = pop(&m->state_retry, &m->state_retry_tail)); ) {
                if (!state_event_current(m, j)) {
                        job_free(j);
                        continue;
                }
                if (j->due_usec > now) {
                        push(&keep, &keep_tail, j);
                        continue;
                }
                j->error = 0;
                free(j->error_text);
                j->error_text = NULL;
                queue_job(m, j);
        }
        m->state_retry = keep;
        m->state_retry_tail = keep_tail;
        if (!keep)
                return sd_event_source_set_enabled(s, SD_EVENT_OFF);
        (void) sd_event_source_set_time_relative(s, STATE_RETRY_USEC);
        return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

/* A state event JetStream did not acknowledge (or the worker could not send: not connected): sent
 * again after 2 s, then 4, 8, 16 and every 30 s, STATE_PUBLISH_TRIES times in all (long enough for a
 * partition to heal), unless con-state has its state or a later one meanwhile. True when J is
 * kept. */
static bool state_publish_failed(Mesh *m, Job *j) {
        j->retries++;
        if (!state_event_current(m, j))
                return false;
        if (j->retries >= STATE_PUBLISH_TRIES || state_retry_count(m) >= STATE_RETRY_MAX) {
                log_warning("Dropping a state event on %s after %u tries: %s", j->subject, j->retries,
                            j->retries >= STATE_PUBLISH_TRIES ? (j->error == -ENOTCONN ? "not connected" :
                            strempty(j->error_text)) : "too many waiting to be sent again");
                return false;
        }
        uint64_t delay = j->retries >= 5 ? STATE_RETRY_MAX_USEC : STATE_RETRY_USEC << (j->retries - 1);
        j->due_usec = con_now(CLOCK_MONOTONIC) + (delay < STATE_RETRY_MAX_USEC ? delay : STATE_RETRY_MAX_USEC);
        log_debug("State event on %s not acknowledged (%s): sent again", j->subject,
                  j->error == -ENOTCONN ? "not connected" : strempty(j->error_text));
        push(&m->state_retry, &m->state_retry_tail, j);
        int r = arm_retry_timer(m, &m->state_retry_timer, STATE_RETRY_USEC, on_state_retry_timer);
        if (r < 0)
                log_warning_errno(r, "Cannot arm the state events' retry timer: %m");
        return true;
}

static void resend_note_ended(Mesh *m, Outgoing *o);

/* A state event of any host's task (stream con-state): believed only from the host its subject's
 * publisher token names (the one the server's permissions pin) when that host may say it
 * (mesh_state_check), recorded in the mesh-wide table, and, for a task sent from here (its host,
 * agent and sender), moving that task on; never after its result. */
static void handle_state(Mesh *m, const Job *j) {
        _cleanup_free_ char *publisher = NULL;
        const char *why = NULL;
        MeshState st = {};
        int r = mesh_state_from_json(j->data, j->len, &st);
        if (r < 0) {
                _cleanup_free_ char *origin = NULL, *from = NULL, *id = NULL;
                (void) mesh_state_subject_parse(j->subject, &origin, &from, &id);
                if (r != -ENOMEM && flood_allow(m, from, "state"))
                        log_warning("Dropping a malformed state event on %s (%zu bytes)", j->subject, j->len);
                return;
        }
        r = mesh_state_check(j->subject, &st, &publisher, &why);
        if (r == -EPERM) {
                if (flood_allow(m, publisher, "state")) {
                        log_warning("Dropping a state event of task %s (%s to %s@%s, %s): %s; it came on %s", st.id,
                                    st.from, st.agent, st.host, st.state, why, j->subject);
                        audit_forgery(m, "mesh.state.forged", st.id, st.agent, st.from, publisher);
                }
        } else if (r < 0 && flood_allow(m, publisher, "state"))
                log_warning("Dropping a state event of task %s on %s: %s", st.id, j->subject,
                            r == -ENOMEM ? "out of memory" : "not a state event's subject");
        if (r < 0) {
                mesh_state_done(&st);
                return;
        }
        r = mesh_state_table_apply(&m->states, &st, j->time_usec ?: con_now(CLOCK_REALTIME));
        if (r < 0)
                log_error_errno(r, "Cannot record the state of task %s: %m", st.id);
        const char *at = strrchr(st.from, '@');
        Outgoing *o = streq(at + 1, m->config->mesh.host) ? find_out(m, st.id) : NULL;
        bool its = o && outgoing_is(m, o, st.host, st.agent, st.from);
        if (o && !its && flood_allow(m, publisher, "state"))
                log_warning("Ignoring a state event of task %s for %s from %s@%s: the task went to %s@%s from %s@%s",
                            st.id, st.from, st.agent, st.host, o->agent, o->host, o->sender, m->config->mesh.host);
        /* Only the two middle states: the end comes with the result (its text). */
        int rank = mesh_state_rank(st.state);
        if (its && !o->done && (rank == 1 || rank == 2) && rank > mesh_state_rank(o->state)) {
                o->state = rank == 2 ? "working" : "accepted";
                log_debug("Task %s for %s@%s: %s", o->id, o->agent, o->host, o->state);
                /* Not synced: a state lost in a crash comes again, or the result does. */
                r = sent_save(m, o);
                if (r < 0)
                        log_warning_errno(r, "Cannot write the record of task %s: %m", o->id);
        }
        if (its && !o->done && rank == 3)
                resend_note_ended(m, o);
        mesh_state_done(&st);
}

/* ---- cancels (docs/MULTIHOST.md, "Canceling a remote task") ---- */

#define CANCEL_RETRY_USEC (3 * USEC_PER_SEC)

static void pending_cancel_done(PendingCancel *p) {
        mesh_cancel_done(&p->cancel);
        free(p->host);
}

static void cancels_free(Mesh *m) {
        for (size_t i = 0; i < m->n_cancels; i++)
                pending_cancel_done(&m->cancels[i]);
        free(m->cancels);
        m->cancels = NULL;
        m->n_cancels = 0;
        m->cancel_timer = sd_event_source_disable_unref(m->cancel_timer);
}

/* Plain NATS, like a state event: lost when the receiving gateway is not listening, hence sent
 * again (on_cancel_timer) until the task's result is back. */
static void publish_cancel_to(Mesh *m, const MeshCancel *c, const char *host) {
        Job *j = calloc(1, sizeof(*j));
        if (!j)
                return;
        j->kind = JOB_PUBLISH_STATE;
        if (mesh_cancel_to_json(c, &j->data) < 0 || mesh_cancel_subject(host, m->config->mesh.host, &j->subject) < 0) {
                job_free(j);
                return;
        }
        j->len = strlen(j->data);
        queue_job(m, j);
}

static void publish_cancel(Mesh *m, const PendingCancel *p) {
        publish_cancel_to(m, &p->cancel, p->host);
}

static int on_cancel_timer(sd_event_source *s _unused_, uint64_t usec _unused_, void *userdata) {
        Mesh *m = userdata;
        size_t k = 0;
        for (size_t i = 0; i < m->n_cancels; i++) {
                PendingCancel *p = &m->cancels[i];
                Outgoing *o = find_out(m, p->cancel.id);
                if (!o || o->done || !outgoing_is(m, o, p->host, p->cancel.agent, p->cancel.from)) {
                        pending_cancel_done(p);         /* its result is back (or forgotten) */
                        continue;
                }
                publish_cancel(m, p);
                m->cancels[k++] = *p;
        }
        m->n_cancels = k;
        if (k > 0)
                (void) sd_event_source_set_time_relative(m->cancel_timer, CANCEL_RETRY_USEC);
        return sd_event_source_set_enabled(m->cancel_timer, k > 0 ? SD_EVENT_ONESHOT : SD_EVENT_OFF);
}

/* Cancel(task_id): a task sent from here, by its sender or root. Sent to the host running it (and
 * sent again every CANCEL_RETRY_USEC until its result is back); that result says canceled, or what
 * the task ended as if it ended first. A task whose result is back: nothing to do, as an agent's
 * Cancel of a finished task. */
/* O's cancel, asked by BY (USER@<this host>), kept until its result is back: sent now (or at the
 * retry timer) and again every CANCEL_RETRY_USEC. */
static void cancel_pending_add(Mesh *m, const Outgoing *o, const char *by, bool publish_now) {
        _cleanup_(pending_cancel_done) PendingCancel p = {};

        if (asprintf(&p.cancel.from, "%s@%s", o->sender, m->config->mesh.host) < 0 || !(p.cancel.by = strdup(by)) ||
            !(p.cancel.id = strdup(o->id)) || !(p.cancel.agent = strdup(o->agent)) || !(p.host = strdup(o->host))) {
                log_error("Out of memory");
                return;
        }
        if (publish_now)
                publish_cancel(m, &p);
        bool again = false;
        for (size_t i = 0; i < m->n_cancels && !again; i++)
                again = streq(m->cancels[i].cancel.id, o->id);
        if (!again) {
                PendingCancel *n = realloc(m->cancels, sizeof(*n) * (m->n_cancels + 1));
                if (!n) {
                        log_error("Out of memory");
                        return;
                }
                m->cancels = n;
                n[m->n_cancels++] = p;
                p = (PendingCancel) {};
        }
        int r = arm_retry_timer(m, &m->cancel_timer, CANCEL_RETRY_USEC, on_cancel_timer);
        if (r < 0)
                log_warning_errno(r, "Cannot arm the cancel retry timer (the cancel is sent once): %m");
}

/* Cancel(task_id): a task sent from here, by its sender or root. Kept in the task's record (on disk
 * before Cancel answers: a restart sends it again), sent to the host running it and again every
 * CANCEL_RETRY_USEC until its result is back; that result says canceled, or what the task ended as
 * if it ended first. A task whose result is back: nothing to do, as an agent's Cancel of a finished
 * task. */
static int method_cancel(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Mesh *m = userdata;
        _cleanup_free_ char *name = NULL, *from = NULL, *by = NULL;
        const char *id;
        Outgoing *o;
        uid_t uid;
        int r;

        r = caller_outgoing(m, msg, " (only its sender and root may cancel it)", &id, &uid, &o, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        if (o->done)
                return sd_bus_reply_method_return(msg, NULL);
        r = con_uid_to_name(uid, &name);
        if (r < 0)
                return r;
        if (asprintf(&from, "%s@%s", o->sender, m->config->mesh.host) < 0 ||
            asprintf(&by, "%s@%s", name, m->config->mesh.host) < 0)
                return -ENOMEM;
        if (!mesh_cancel_allowed(from, by))
                return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED, "Access denied: '%s' has no user name "
                                          "other hosts could check", by);
        if (!o->cancel_by) {
                o->cancel_by = strdup(by);
                if (!o->cancel_by)
                        return -ENOMEM;
                r = sent_save(m, o);
                if (r < 0)
                        return con_bus_error_setf(error, CON_ERROR_STORAGE_FAILED, "The mesh cannot record the "
                                                  "cancel: %s", strerror(-r));
        }
        cancel_pending_add(m, o, by, true);
        log_info("Task %s for %s@%s: cancel sent by %s", o->id, o->agent, o->host, by);
        /* Answered once the cancel is on disk (on_sent_sync). */
        r = sent_after_sync(m, msg, NULL, NULL);
        return r < 0 ? r : 1;
}

static void audit_cancel(Mesh *m, const char *event, const MeshCancel *c, const char *sent_by) {
        if (!m->audit)
                return;
        _cleanup_cjson_ cJSON *f = con_audit_task_fields(c->id, c->agent, c->from);
        if (!f || !cJSON_AddStringToObject(f, "by", c->by) ||
            (sent_by && !cJSON_AddStringToObject(f, "sent_by", sent_by))) {
                log_error("Cannot audit the cancel of task %s: out of memory", c->id);
                return;
        }
        bool first = false;
        int r = con_audit_writer_append(m->audit, "con-meshd", event, f, &first);
        if (r < 0 && first)
                log_error_errno(r, "Cannot write the audit log: %m");
}

static int on_agent_canceled(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error _unused_) {
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        if (e)
                log_warning("Agent refused to cancel task %s: %s", (const char *) userdata, e->message ?: e->name);
        return 0;
}

static void handle_resend(Mesh *m, const MeshCancel *c, const char *publisher);

/* A cancel from another host: believed only for a task that host sent (the subject's host, which
 * the server's permissions pin, is the origin of both the task's sender and the canceller), by its
 * sender or that host's root, and only for a task an agent here holds for that sender. The agent's
 * Cancel is called as the gateway, the task's owner here: its result (canceled) goes back as any. */
static void handle_cancel(Mesh *m, Job *j) {
        _cleanup_(mesh_cancel_done) MeshCancel c = {};
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        _cleanup_free_ char *bus_name = NULL, *key = NULL;
        const char *publisher = mesh_cancel_subject_host(j->subject, m->config->mesh.host);
        int r = mesh_cancel_from_json(j->data, j->len, &c);
        if (r < 0) {
                if (r != -ENOMEM && flood_allow(m, publisher, "cancel"))
                        log_warning("Dropping a malformed cancel (%zu bytes) on %s", j->len, j->subject);
                return;
        }
        if (!publisher || !streq(publisher, strrchr(c.from, '@') + 1)) {
                if (flood_allow(m, publisher, "cancel")) {
                        log_warning("Dropping the cancel of task %s: it claims to come from %s but host %s sent it "
                                    "(subject %s)", c.id, c.by, publisher ?: "?", j->subject);
                        audit_cancel(m, "mesh.cancel.forged", &c, publisher ?: "?");
                }
                return;
        }
        if (!mesh_cancel_allowed(c.from, c.by)) {
                if (flood_allow(m, publisher, "cancel")) {
                        log_warning("Refusing the cancel of task %s by %s: only its sender %s or root@%s may cancel it",
                                    c.id, c.by, c.from, publisher);
                        audit_cancel(m, "mesh.cancel.refused", &c, publisher);
                }
                return;
        }
        if (c.resend) {
                handle_resend(m, &c, publisher);
                return;
        }
        Delivery *d = find_delivery(m, c.id, c.from);
        if (!d || !streq(d->agent, c.agent)) {
                /* Not here yet (waiting in JetStream, or its Deliver in flight: the sender sends the
                 * cancel again), or ended (its result is on the way). */
                if (flood_allow(m, publisher, "cancel"))
                        log_info("Cancel of task %s from %s by %s: agent %s holds no such task now (not delivered "
                                 "yet, or ended)", c.id, c.from, c.by, c.agent);
                return;
        }
        /* Sent again (the result is not back yet): the agent is asked again, Cancel being idempotent,
         * so a passing trouble (a timeout, an agent restarting) does not lose it; audited once. */
        if ((r = con_agent_bus_name(c.agent, &bus_name)) < 0 ||
            (r = sd_bus_message_new_method_call(m->bus, &call, bus_name, CON_AGENT_PATH, CON_AGENT_INTERFACE,
                                                "Cancel")) < 0 ||
            (r = sd_bus_message_append(call, "s", c.id)) < 0 || !(key = strdup(c.id)) ||
            (r = call_async_owned(m, call, on_agent_canceled, key)) < 0) {
                log_error_errno(r ?: -ENOMEM, "Cannot cancel task %s of agent %s: %m", c.id, c.agent);
                return;
        }
        TAKE_PTR(key);
        if (d->canceling)
                return;
        d->canceling = true;
        log_info("Task %s of agent %s from %s: canceled by %s", c.id, c.agent, c.from, c.by);
        audit_cancel(m, "mesh.task.cancel", &c, NULL);
}

/* ---- a result lost on the way (docs/MULTIHOST.md, "A result lost on the way") ---- */

/* The sending side. A task sent from here whose host said (its final state event in con-state) that
 * it ended, and whose result has not come mesh.result_wait later, is asked for again: a request on
 * the cancels' subject (con.cancel.<host>.<this host>, "resend": true), then again after twice the
 * wait, four times, ... at most RESEND_WAIT_MAX_USEC apart, until the result is back or the task is
 * forgotten. A restarted gateway reads con-state's last events again, so its tasks without a result
 * (its journal's) are asked for again too. */

static int on_resend_timer(sd_event_source *s, uint64_t usec, void *userdata);

/* The timer at the earliest request due, off when none is. */
static void resend_timer_arm(Mesh *m) {
        uint64_t next = UINT64_MAX;
        int r;

        for (size_t i = 0; i < m->n_out; i++)
                if (!m->out[i].done && m->out[i].ask_due_usec > 0 && m->out[i].ask_due_usec < next)
                        next = m->out[i].ask_due_usec;
        if (next == UINT64_MAX) {
                if (m->resend_timer)
                        (void) sd_event_source_set_enabled(m->resend_timer, SD_EVENT_OFF);
                return;
        }
        if (!m->resend_timer)
                r = sd_event_add_time(m->event, &m->resend_timer, CLOCK_MONOTONIC, next, 0, on_resend_timer, m);
        else {
                r = sd_event_source_set_time(m->resend_timer, next);
                if (r >= 0)
                        r = sd_event_source_set_enabled(m->resend_timer, SD_EVENT_ONESHOT);
        }
        if (r < 0)
                log_error_errno(r, "Cannot arm the timer that asks for results lost on the way: %m");
}

/* Task O ended on its host (its final state event): its result is due. */
static void resend_note_ended(Mesh *m, Outgoing *o) {
        if (o->done || o->ended_there_usec > 0)
                return;
        o->ended_there_usec = con_now(CLOCK_MONOTONIC);
        o->ask_due_usec = o->ended_there_usec + m->config->mesh.result_wait_usec;
        resend_timer_arm(m);
}

/* The wait after the N-th request: mesh.result_wait doubled N times, at most RESEND_WAIT_MAX_USEC
 * (or mesh.result_wait when longer). */
static uint64_t resend_backoff(uint64_t wait, unsigned n) {
        uint64_t max = wait > RESEND_WAIT_MAX_USEC ? wait : RESEND_WAIT_MAX_USEC;
        for (unsigned i = 0; i < n && wait < max; i++)
                wait *= 2;
        return wait < max ? wait : max;
}

static void resend_audit(Mesh *m, const char *event, const char *id, const char *agent, const char *from,
                         const char *key, const char *value) {
        if (!m->audit)
                return;
        _cleanup_cjson_ cJSON *f = con_audit_task_fields(id, agent, from);
        if (!f || !cJSON_AddStringToObject(f, key, value)) {
                log_error("Cannot audit %s of task %s: out of memory", event, id);
                return;
        }
        bool first = false;
        int r = con_audit_writer_append(m->audit, "con-meshd", event, f, &first);
        if (r < 0 && first)
                log_error_errno(r, "Cannot write the audit log: %m");
}

static int on_resend_timer(sd_event_source *s _unused_, uint64_t usec _unused_, void *userdata) {
        Mesh *m = userdata;
        uint64_t now = con_now(CLOCK_MONOTONIC), wait = m->config->mesh.result_wait_usec;
        unsigned sent = 0;

        for (size_t i = 0; i < m->n_out; i++) {
                Outgoing *o = &m->out[i];
                _cleanup_free_ char *from = NULL;
                if (o->done || o->ask_due_usec == 0 || o->ask_due_usec > now)
                        continue;
                if (sent >= RESEND_ASKS_PER_SEC) {
                        o->ask_due_usec = now + USEC_PER_SEC;   /* a burst spreads over seconds */
                        continue;
                }
                if (asprintf(&from, "%s@%s", o->sender, m->config->mesh.host) < 0) {
                        log_error("Cannot ask for the result of task %s: out of memory", o->id);
                        o->ask_due_usec = now + USEC_PER_SEC;
                        continue;
                }
                MeshCancel c = { .id = o->id, .agent = o->agent, .from = from, .by = from, .resend = true };
                publish_cancel_to(m, &c, o->host);
                o->asked++;
                o->ask_due_usec = now + resend_backoff(wait, o->asked);
                sent++;
                log_full(o->asked == 1 ? LOG_NOTICE : LOG_INFO, "Task %s for %s@%s ended there %.1f s ago, but its "
                         "result has not come: asking %s to send it again (request %u; the next in %.0f s unless "
                         "it comes)", o->id, o->agent, o->host, (double) (now - o->ended_there_usec) / USEC_PER_SEC,
                         o->host, o->asked, (double) (o->ask_due_usec - now) / USEC_PER_SEC);
                if (o->asked == 1)
                        resend_audit(m, "mesh.result.asked", o->id, o->agent, from, "host", o->host);
        }
        resend_timer_arm(m);
        return 0;
}

/* The receiving side. A request is believed under a cancel's rules (handle_cancel: the host of
 * "from" is the subject's, the one the server let publish it), for an agent other hosts may task,
 * about a task that agent holds for exactly that sender: the agent's GetResultInfo (the gateway
 * owns every remote task there) names it. Bounded: RESEND_BURST requests per asking host and
 * FLOOD_INTERVAL_USEC, one per task and resend_interval(), at most ASKS_MAX calls in flight with the
 * deliveries' own; the rest are dropped (the sender asks again). */

static uint64_t resend_interval(const Mesh *m) {
        uint64_t i = m->config->mesh.result_wait_usec / 2;
        return i > USEC_PER_SEC ? i : USEC_PER_SEC;
}

static void resent_done(Resent *e) {
        free(e->id);
        free(e->from);
}

static void resend_free(Mesh *m) {
        for (size_t i = 0; i < m->n_resent; i++)
                resent_done(&m->resent[i]);
        free(m->resent);
        m->resent = NULL;
        m->n_resent = 0;
        sd_event_source_disable_unref(m->resend_timer);
        m->resend_timer = NULL;
        mesh_flood_done(&m->resend_budget);
}

static Resent *resent_find(Mesh *m, const char *id, const char *from) {
        for (size_t i = 0; i < m->n_resent; i++)
                if (streq(m->resent[i].id, id) && streq(m->resent[i].from, from))
                        return &m->resent[i];
        return NULL;
}

/* The entry of (ID, FROM), made when missing: entries past their interval go first, then (at
 * RESENT_KEEP) the oldest. */
static Resent *resent_add(Mesh *m, const char *id, const char *from, uint64_t now) {
        Resent *e = resent_find(m, id, from);
        if (e)
                return e;
        size_t k = 0;
        for (size_t i = 0; i < m->n_resent; i++) {
                if (now >= m->resent[i].last_usec + resend_interval(m))
                        resent_done(&m->resent[i]);
                else
                        m->resent[k++] = m->resent[i];
        }
        m->n_resent = k;
        if (m->n_resent >= RESENT_KEEP) {
                resent_done(&m->resent[0]);
                memmove(m->resent, m->resent + 1, sizeof(*m->resent) * --m->n_resent);
        }
        Resent *n = reallocarray(m->resent, m->n_resent + 1, sizeof(*n));
        if (!n)
                return NULL;
        m->resent = n;
        Resent x = { .id = strdup(id), .from = strdup(from) };
        if (!x.id || !x.from) {
                resent_done(&x);
                return NULL;
        }
        n[m->n_resent] = x;
        return &n[m->n_resent++];
}

static int on_resend_info(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error _unused_) {
        char *key = userdata;   /* "ID\nFROM\nAGENT\nHOST", freed with the slot */
        Mesh *m = the_mesh;
        const char *status, *text;
        ConResultInfo info = {};
        char *id = key, *from = strchr(id, '\n') + 1, *agent = strchr(from, '\n') + 1, *host = strchr(agent, '\n') + 1;
        from[-1] = agent[-1] = host[-1] = 0;

        if (m->asks > 0)
                m->asks--;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        if (e) {
                if (flood_allow(m, host, "cancel"))
                        log_notice("Cannot send the result of task %s of %s again for host %s: agent %s: %s", id, from,
                                   host, agent, e->message ?: e->name);
        } else if (sd_bus_message_read(reply, "ss", &status, &text) < 0 || con_bus_read_result_info(reply, &info) < 0)
                log_warning("Cannot read agent %s's result of task %s: not sent again", agent, id);
        else if (!streq_ptr(info.sender, from)) {
                /* Another sender's task under that id (ids are public in con-state): nothing of it goes. */
                if (flood_allow(m, host, "cancel")) {
                        log_warning("Refusing host %s's request to send the result of task %s of %s again: agent %s "
                                    "holds no such task of that sender", host, id, from, agent);
                        resend_audit(m, "mesh.result.resend-refused", id, agent, from, "sent_by", host);
                }
        } else if (!con_task_state_is_final(status))
                log_info("Host %s asks for the result of task %s of %s again, but it has not ended at agent %s (%s): "
                         "it goes when it does", host, id, from, agent, status);
        else {
                MeshResult res = { .id = id, .host = m->config->mesh.host, .agent = agent, .from = from,
                                   .status = (char *) con_task_state_a2a(status), .text = (char *) text,
                                   .truncated = info.truncated, .replaced = info.replaced, .size = info.size };
                /* A fresh message id: JetStream would drop the first one's as a duplicate. */
                int r = publish_result_as(m, host, &res, con_now(CLOCK_REALTIME));
                if (r < 0)
                        log_error_errno(r, "Cannot send the result of task %s to %s again: %m", id, host);
                else {
                        log_notice("Sending the result of task %s of %s at agent %s (%s) to %s again: its gateway "
                                   "saw the task end and did not get it", id, from, agent, res.status, host);
                        Resent *x = resent_find(m, id, from);
                        if (x && !x->audited) {
                                x->audited = true;
                                resend_audit(m, "mesh.result.resend", id, agent, from, "status", res.status);
                        }
                }
        }
        ask_waiting(m);
        return 0;
}

static void handle_resend(Mesh *m, const MeshCancel *c, const char *publisher) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        _cleanup_free_ char *bus_name = NULL, *key = NULL;
        uint64_t now = con_now(CLOCK_MONOTONIC);
        int r;

        if (mesh_flood_note(&m->resend_budget, publisher, now) != 1) {
                if (flood_allow(m, publisher, "cancel"))
                        log_warning("Dropping host %s's request to send the result of task %s again: more than %u "
                                    "such requests in %u s (it asks again)", publisher, c->id, RESEND_BURST,
                                    (unsigned) (FLOOD_INTERVAL_USEC / USEC_PER_SEC));
                return;
        }
        if (!con_config_find_agent(m->config, c->agent) || !remote_may_task(m->config, c->agent)) {
                if (flood_allow(m, publisher, "cancel"))
                        log_info("Host %s asks for the result of task %s of %s again: agent %s here takes no tasks "
                                 "of other hosts", publisher, c->id, c->from, c->agent);
                return;
        }
        if (find_delivery(m, c->id, c->from)) {
                log_debug("Host %s asks for the result of task %s of %s again: it is still tracked here (its "
                          "result goes when it ends)", publisher, c->id, c->from);
                return;
        }
        Resent *e = resent_find(m, c->id, c->from);
        if (e && now < e->last_usec + resend_interval(m)) {
                log_debug("Host %s asks for the result of task %s again within %.1f s: ignored", publisher, c->id,
                          (double) resend_interval(m) / USEC_PER_SEC);
                return;
        }
        if (m->asks >= ASKS_MAX) {
                log_debug("Host %s asks for the result of task %s again: %d calls in flight, dropped (it asks "
                          "again)", publisher, c->id, ASKS_MAX);
                return;
        }
        if (asprintf(&key, "%s\n%s\n%s\n%s", c->id, c->from, c->agent, publisher) < 0 ||
            !(e = resent_add(m, c->id, c->from, now))) {
                log_error("Cannot send the result of task %s again: out of memory", c->id);
                return;
        }
        e->last_usec = now;
        if ((r = con_agent_bus_name(c->agent, &bus_name)) < 0 ||
            (r = sd_bus_message_new_method_call(m->bus, &call, bus_name, CON_AGENT_PATH, CON_AGENT_INTERFACE,
                                                "GetResultInfo")) < 0 ||
            (r = sd_bus_message_append(call, "s", c->id)) < 0 ||
            (r = call_async_owned(m, call, on_resend_info, key)) < 0) {
                log_error_errno(r, "Cannot ask agent %s for the result of task %s: %m", c->agent, c->id);
                return;
        }
        TAKE_PTR(key);
        m->asks++;
}

static void job_free_void(void *p) {
        job_free(p);
}

static int on_retry(sd_event_source *s, uint64_t usec _unused_, void *userdata) {
        Mesh *m = the_mesh;
        (void) sd_event_source_set_userdata(s, NULL);   /* the worker has it now */
        queue_job(m, userdata);
        return 0;
}

/* Queues J again in a second (the worker publishes it again). False when out of memory. */
static bool publish_again(Mesh *m, Job *j) {
        j->error = 0;
        free(j->error_text);
        j->error_text = NULL;
        sd_event_source *t = NULL;
        if (sd_event_add_time_relative(m->event, &t, CLOCK_MONOTONIC, USEC_PER_SEC, 0, on_retry, j) < 0)
                return false;
        (void) sd_event_source_set_destroy_callback(t, job_free_void);
        (void) sd_event_source_set_floating(t, true);
        sd_event_source_unref(t);
        return true;
}

/* Returns true when it kept the job (to publish again: a result until stored, a task staged). */
static bool handle_published(Mesh *m, Job *j) {
        if (!j->call) {
                if (!j->error) {
                        /* Only now is the result safe (acknowledged by the stream's quorum). */
                        log_info("Result of task %s stored for %s as sequence %" PRIu64 "%s (after %u retries)",
                                 j->task_id, j->host, j->seq,
                                 j->duplicate ? " (already there: an earlier send was stored)" : "", j->retries);
                        return false;
                }
                /* A result is sent again until it is stored (a partition, a NATS server down): its
                 * task message was acknowledged already, and nothing else would send it before this
                 * gateway restarts. The same message id: stored once (a fresh one after
                 * STAGED_TRIES answers "staged, not stored": run_job). */
                if (j->retries++ % 60 == 0 || j->error == -EAGAIN)
                        log_warning("Cannot send the result of task %s yet (trying again every second): %s",
                                    j->task_id, j->error_text ?: strerror(-j->error));
                if (!publish_again(m, j)) {
                        log_error("Cannot send the result of task %s: out of memory", j->task_id);
                        return false;
                }
                return true;
        }
        if (j->error == -EAGAIN && j->staged <= STAGED_TRIES + 1) {
                /* Staged, not stored (run_job): not acknowledged to the caller yet; again in a
                 * second, under a fresh message id after STAGED_TRIES such answers. */
                log_warning("Task %s: %s; sending it again", j->task_id, strempty(j->error_text));
                if (publish_again(m, j))
                        return true;
                j->error = -ENOMEM;
        }
        if (j->error) {
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                if (j->error == -ENOSPC)
                        /* The receiving host's stream is full (stream_full): not worth trying again
                         * until its gateway takes tasks or the administrator raises the limit. */
                        (void) con_bus_error_setf(&e, CON_ERROR_QUEUE_FULL, "The mesh cannot take the task: %s",
                                                  j->error_text ?: strerror(-j->error));
                else
                        (void) con_bus_error_setf(&e, CON_ERROR_AGENT_UNAVAILABLE, "The mesh cannot take the task now: %s",
                                                  j->error == -ENOTCONN ? "not connected to a NATS server yet" :
                                                  (j->error_text ?: strerror(-j->error)));
                (void) sd_bus_reply_method_error(j->call, &e);
                /* Not stored: forget it, so the same id may be sent again. */
                Outgoing *o = find_out(m, j->task_id);
                if (o && !o->done)
                        sent_forget(m, (size_t) (o - m->out));
                return false;
        }
        Outgoing *o = find_out(m, j->task_id);
        if (o && !o->stored) {
                /* Synced with the others: without it a Submit again under this id sends it again,
                 * which JetStream (or the receiving agent) recognises as the same task. */
                o->sending = false;
                o->stored = true;
                int r = sent_save(m, o);
                if (r < 0)
                        log_warning_errno(r, "Cannot write the record of task %s: %m", o->id);
        }
        /* Answered once its record is on disk. */
        if (sent_after_sync(m, j->call, j->task_id, NULL) < 0)
                (void) sd_bus_reply_method_errno(j->call, -ENOMEM, NULL);
        if (o && !j->duplicate) {
                _cleanup_free_ char *from = NULL;
                if (asprintf(&from, "%s@%s", o->sender, m->config->mesh.host) >= 0)
                        publish_state(m, o->id, o->agent, o->host, from, m->config->mesh.host, "submitted");
        }
        return false;
}

/* GetStatus's answer: the gateway's own counts, and the streams as the worker found them. */
static void handle_status(Mesh *m, Job *j) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        size_t waiting = 0;
        int r;

        for (size_t i = 0; i < m->n_out; i++)
                if (!m->out[i].done)
                        waiting++;
        pthread_mutex_lock(&m->lock);
        bool connected = m->connected && m->link_up;
        pthread_mutex_unlock(&m->lock);

        r = sd_bus_message_new_method_return(j->call, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "{sv}");
        if (r >= 0)
                r = con_bus_append_entry(reply, "host", "s", m->config->mesh.host);
        if (r >= 0)
                r = con_bus_append_entry(reply, "connected", "b", (int) connected);
        if (r >= 0 && j->server)
                r = con_bus_append_entry(reply, "server", "s", j->server);
        if (r >= 0)
                r = con_bus_append_entry(reply, "retention_usec", "t", (uint64_t) m->config->mesh.retention_usec);
        if (r >= 0)
                r = con_bus_append_entry(reply, "sent_waiting", "t", (uint64_t) waiting);
        if (r >= 0)
                r = con_bus_append_entry(reply, "delivered_running", "t", (uint64_t) m->n_dl);
        if (r >= 0 && j->error)
                r = con_bus_append_entry(reply, "error", "s",
                                         j->error == -ENOTCONN ? "not connected to a NATS server yet" :
                                         (j->error_text ?: strerror(-j->error)));
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(ssstttbttt)");
        for (size_t i = 0; r >= 0 && i < j->n_streams; i++) {
                const MeshStreamStatus *st = &j->streams[i];
                r = sd_bus_message_append(reply, "(ssstttbttt)", st->name, st->host,
                                          st->kind == MESH_KIND_TASK ? "task" : "result", st->messages, st->bytes,
                                          st->oldest_usec, (int) st->consumer, st->pending, st->ack_pending,
                                          st->redelivered);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_send(NULL, reply, NULL);
        if (r < 0) {
                log_error_errno(r, "Cannot answer GetStatus: %m");
                (void) sd_bus_reply_method_errno(j->call, r, NULL);
        }
}

/* A stream of this host (or con-state) that is not the mesh's: logged at every try, audited when
 * it is news (mesh.stream.refused, the stream and why). */
static void refused_stream(Mesh *m, const char *stream, const char *why) {
        log_error("Not serving the mesh through a stream that is not the mesh's (retrying): %s", strempty(why));
        if (streq_ptr(m->refused_stream, stream))
                return;
        free(m->refused_stream);
        m->refused_stream = stream ? strdup(stream) : NULL;
        if (!m->audit || !stream)
                return;
        _cleanup_cjson_ cJSON *f = cJSON_CreateObject();
        if (!f || !cJSON_AddStringToObject(f, "stream", stream) || !cJSON_AddStringToObject(f, "reason", strempty(why))) {
                log_error("Cannot audit the refused stream %s: out of memory", stream);
                return;
        }
        bool first = false;
        int r = con_audit_writer_append(m->audit, "con-meshd", "mesh.stream.refused", f, &first);
        if (r < 0 && first)
                log_error_errno(r, "Cannot write the audit log: %m");
}

/* The jobs the threads handed over, WAKE_BATCH at a time: with more, the loop is woken again, after
 * what else is pending (bus calls, timers), so a flood of them cannot stall it. */
static int on_wake(sd_event_source *s _unused_, int fd, uint32_t revents _unused_, void *userdata) {
        Mesh *m = userdata;
        uint64_t n;
        (void) !read(fd, &n, sizeof(n));

        for (unsigned handled = 0;; handled++) {
                pthread_mutex_lock(&m->lock);
                Job *j = handled < WAKE_BATCH ? pop(&m->done, &m->done_tail) : NULL;
                bool more = handled >= WAKE_BATCH && m->done;
                if (j && j->kind == JOB_CANCEL && m->queued_cancels > 0)
                        m->queued_cancels--;
                if (j && j->kind == JOB_STATE && m->queued_states > 0 && m->queued_states-- == STATES_QUEUED_MAX)
                        pthread_cond_broadcast(&m->cond);       /* the state fetch thread may go on */
                pthread_mutex_unlock(&m->lock);
                if (!j) {
                        if (more)
                                wake_loop(m);
                        if (drops_counted(m))
                                flood_timer_arm(m);
                        return 0;
                }
                int r = 0;
                switch (j->kind) {
                case JOB_CONNECTED:
                        if (j->error == -EPERM)
                                refused_stream(m, j->host, j->error_text);
                        else if (j->error == -ENOENT)
                                log_error("Not serving the mesh yet (retrying): %s", strempty(j->error_text));
                        else if (j->error)
                                log_warning("Cannot reach the NATS servers yet (retrying): %s", strempty(j->error_text));
                        else {
                                if (j->error_text)
                                        log_warning("%s", j->error_text);
                                free(m->refused_stream);
                                m->refused_stream = NULL;
                                log_info("Connected to NATS; consuming con.task.%s and con.result.%s",
                                         m->config->mesh.host, m->config->mesh.host);
                                take_over(m);
                        }
                        break;
                case JOB_PUBLISH:
                        if (handle_published(m, j))
                                continue;       /* kept: sent again */
                        break;
                case JOB_STATUS:
                        handle_status(m, j);
                        break;
                case JOB_STATE:
                        handle_state(m, j);
                        break;
                case JOB_CANCEL:
                        handle_cancel(m, j);
                        break;
                case JOB_PUBLISH_EVENT:
                        if (state_publish_failed(m, j))
                                continue;       /* kept: sent again */
                        break;
                case JOB_INCOMING: {
                        natsMsg *msg = TAKE_PTR(j->msg);
                        r = j->stream == MESH_KIND_TASK ? handle_task(m, msg) : handle_result(m, msg);
                        if (r < 0) {
                                log_error_errno(r, "Cannot handle a message: %m");
                                release_msg(m, j->stream, msg);   /* unacknowledged: delivered again */
                        }
                        break;
                }
                default:
                        log_warning("NATS: %s", strempty(j->error_text));
                        break;
                }
                job_free(j);
        }
}

/* ---- bus methods ---- */

/* Submit's options priority and deadline, read and checked as an agent's Deliver does
 * (con_bus_read_task_option), the deadline also as the mesh carries it (mesh_deadline_valid).
 * 1: KEY was one of them; 0: another option. */
static int submit_task_option(sd_bus_message *msg, const char *key, unsigned *seen, int *priority,
                              uint64_t *deadline, sd_bus_error *error) {
        unsigned bit = streq(key, "priority") ? 1U : streq(key, "deadline") ? 2U : 0U;
        if (bit == 0)
                return 0;
        if (*seen & bit)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Option '%s' is given twice", key);
        *seen |= bit;
        int r = con_bus_read_task_option(msg, key, priority, deadline, error);
        if (r < 0)
                return r;
        if (!mesh_deadline_valid(*deadline))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Key 'deadline': %" PRIu64 " is not a time the mesh can carry (microseconds "
                                         "since 1970, from 1970-01-01T00:00:01Z to the year 9999; 0 for none)",
                                         *deadline);
        return 1;
}

/* A task about to be sent: its record is written before anything goes, and on disk before Submit
 * answers (on_sent_sync: the answer means it exists). Refused with StorageFailed, and forgotten, when it cannot be written. */
static int sent_record_new(Mesh *m, Outgoing *o, sd_bus_error *error) {
        int r = sent_save(m, o);                /* synced before Submit answers (on_sent_sync) */
        if (r >= 0)
                return 0;
        log_error_errno(r, "Cannot write the record of task %s in %s: %m", o->id, CON_MESH_SENT_DIR);
        sent_forget(m, (size_t) (o - m->out));
        return con_bus_error_setf(error, CON_ERROR_STORAGE_FAILED, "The mesh cannot record the task: %s",
                                  strerror(-r));
}

static int method_submit(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Mesh *m = userdata;
        _cleanup_free_ char *agent = NULL, *host = NULL, *name = NULL, *from = NULL, *id = NULL, *json = NULL,
                            *msg_id = NULL;
        const char *to, *text, *given_id = NULL;
        uint32_t sender_uid = 0;
        bool has_sender_uid = false;
        unsigned seen_options = 0;
        int priority = CON_TASK_PRIORITY_DEFAULT;
        uint64_t deadline = 0;
        uid_t uid;
        int r;

        r = sd_bus_message_read(msg, "ss", &to, &text);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(msg, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(msg, 'e', "sv")) > 0) {
                const char *key;
                r = sd_bus_message_read(msg, "s", &key);
                if (r < 0)
                        return r;
                r = submit_task_option(msg, key, &seen_options, &priority, &deadline, error);
                if (r < 0)
                        return r;
                if (r > 0) {
                        r = sd_bus_message_exit_container(msg);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (streq(key, "sender_uid") && !has_sender_uid) {
                        /* The router handing over a .task file: the file's owner (root only). */
                        r = sd_bus_message_read(msg, "v", "u", &sender_uid);
                        if (r < 0)
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "Option 'sender_uid' must be a uid (u)");
                        has_sender_uid = true;
                        r = sd_bus_message_exit_container(msg);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (!streq(key, "id") || given_id)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Option '%s' is %s; the options are id (s), priority (y), "
                                                 "deadline (t) and sender_uid (u)", key,
                                                 given_id || has_sender_uid ? "given twice" : "unknown");
                r = sd_bus_message_read(msg, "v", "s", &given_id);
                if (r < 0)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Option 'id' must be a string (s)");
                if (!con_task_id_valid(given_id))
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Option 'id': '%s' is not a valid "
                                                 "task id", given_id);
                r = sd_bus_message_exit_container(msg);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(msg);
        if (r < 0)
                return r;

        /* Who: the bus driver's answer, never an argument (0: parked, the handler runs again). */
        r = con_authz_caller_uid(m->authz, msg, &uid, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        if (has_sender_uid) {
                if (uid != 0)
                        return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                                  "Access denied: only root may set sender_uid (the router handing "
                                                  "over a file owned by that user)");
                uid = (uid_t) sender_uid;
        }
        r = con_mesh_target_split(to, &agent, &host);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "'%s' is not AGENT@HOST (an agent name and a mesh host name)", to);
        size_t max = m->config->task_max_size ?: CON_TASK_DEFAULT_MAX_SIZE;
        if (strlen(text) > max)
                return con_bus_error_setf(error, CON_ERROR_TASK_TOO_LARGE, "The task is %zu bytes; at most %zu",
                                          strlen(text), max);
        if (text[strspn(text, " \t\r\n")] == 0)
                return con_bus_error_setf(error, CON_ERROR_INVALID_TASK, "The task text is empty");
        r = con_uid_to_name(uid, &name);
        if (r < 0)
                return r;
        if (asprintf(&from, "%s@%s", name, m->config->mesh.host) < 0)
                return -ENOMEM;
        if (!con_remote_sender_valid(from))
                return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                          "Access denied: uid %u has no user name other hosts could grant", (unsigned) uid);
        Outgoing *o = NULL;
        if (given_id) {
                o = find_out(m, given_id);
                if (o && o->uid != uid)
                        return con_bus_error_setf(error, CON_ERROR_DUPLICATE_TASK, "Task id '%s' is already used by "
                                                  "another sender; send again under another id", given_id);
                /* A task recorded before a restart that JetStream never acknowledged (the gateway
                 * stopped in between) is sent again: its sender never had an answer. */
                if (o && (o->stored || o->sending || o->done))
                        return sd_bus_reply_method_return(msg, "s", given_id);
                if (o && (!streq(o->agent, agent) || !streq(o->host, host))) {
                        sent_forget(m, (size_t) (o - m->out));  /* never acknowledged: now another task */
                        o = NULL;
                }
                id = strdup(given_id);
                if (!id)
                        return -ENOMEM;
        } else {
                r = con_task_id_new(&id);
                if (r < 0)
                        return r;
        }
        MeshTask t = { .id = id, .from = from, .origin = m->config->mesh.host, .agent = agent, .text = (char *) text,
                       .priority = priority, .deadline_usec = deadline };
        r = mesh_task_to_json(&t, &json);
        if (r == -EINVAL)
                return con_bus_error_setf(error, CON_ERROR_INVALID_TASK, "The task is not valid UTF-8 text");
        if (r < 0)
                return r;
        if (asprintf(&msg_id, "%s.%s", m->config->mesh.host, id) < 0)
                return -ENOMEM;
        if (!o) {
                o = add_out(m, id, agent, host, uid, name);
                if (!o)
                        return -ENOMEM;
                r = sent_record_new(m, o, error);
                if (r < 0)
                        return r;
        }
        o->sending = true;
        r = queue_publish(m, MESH_KIND_TASK, host, msg_id, TAKE_PTR(json), msg, id);
        if (r < 0)
                return r;
        log_info("Task %s from %s to %s@%s", id, from, agent, host);
        return 1;       /* answered when JetStream has stored it */
}

static int result_common(sd_bus_message *msg, Mesh *m, bool with_info, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *id;
        Outgoing *o;
        int r;

        r = caller_outgoing(m, msg, "", &id, NULL, &o, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        /* The A2A name: accepted (queued at the remote agent) is still submitted. */
        const char *status = o->done ? o->result.status : streq(o->state, "working") ? "working" : "submitted";
        r = sd_bus_message_append(reply, "ss", status, o->done ? o->result.text : "");
        if (r >= 0 && with_info) {
                r = sd_bus_message_open_container(reply, 'a', "{sv}");
                if (r >= 0)
                        r = con_bus_append_entry(reply, "truncated", "b", (int) o->result.truncated);
                if (r >= 0)
                        r = con_bus_append_entry(reply, "replaced", "b", (int) o->result.replaced);
                if (r >= 0)
                        r = con_bus_append_entry(reply, "size", "t", o->result.size);
                if (r >= 0)
                        r = con_bus_append_entry(reply, "host", "s", o->host);
                if (r >= 0)
                        r = con_bus_append_entry(reply, "agent", "s", o->agent);
                if (r >= 0)
                        r = con_bus_append_entry(reply, "state", "s", o->done ? o->result.status : o->state);
                if (r >= 0)
                        r = sd_bus_message_close_container(reply);
        }
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_result(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return result_common(msg, userdata, false, error);
}

static int method_get_result_info(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return result_common(msg, userdata, true, error);
}

/* The tasks sent from here that the gateway still knows (the last KEEP_RESULTS): the caller's own,
 * all of them for root. State: submitted, accepted, working, then completed, failed, canceled. */
static int method_list_tasks(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Mesh *m = userdata;
        uid_t uid;
        int r;

        r = con_authz_caller_uid(m->authz, msg, &uid, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(ssss)");
        for (size_t i = 0; r >= 0 && i < m->n_out; i++) {
                const Outgoing *o = &m->out[i];
                _cleanup_free_ char *to = NULL;
                if (uid != 0 && o->uid != uid)
                        continue;
                if (asprintf(&to, "%s@%s", o->agent, o->host) < 0)
                        return -ENOMEM;
                r = sd_bus_message_append(reply, "(ssss)", o->id, to, o->done ? o->result.status : o->state, o->sender);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* The recent state of every host's remote tasks (the stream con-state, as this gateway read it):
 * all of them for root, as ListTasks; for anyone else only the tasks they sent from this host
 * (USER@THIS-HOST). (task_id, from USER@ORIGIN, to AGENT@HOST, state, since, updated), oldest
 * first; the times in microseconds of CLOCK_REALTIME. */
static int method_list_states(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *name = NULL, *mine = NULL;
        Mesh *m = userdata;
        uid_t uid;
        int r;

        r = con_authz_caller_uid(m->authz, msg, &uid, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        if (uid != 0 && (con_uid_to_name(uid, &name) < 0 || asprintf(&mine, "%s@%s", name, m->config->mesh.host) < 0))
                mine = NULL;    /* no name: nothing of its own to see */
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(sssstt)");
        for (size_t i = 0; r >= 0 && i < m->states.n; i++) {
                const MeshStateEntry *e = &m->states.entries[i];
                _cleanup_free_ char *to = NULL;
                if (uid != 0 && !streq_ptr(mine, e->from))
                        continue;
                if (asprintf(&to, "%s@%s", e->agent, e->host) < 0)
                        return -ENOMEM;
                r = sd_bus_message_append(reply, "(sssstt)", e->id, e->from, to, e->state, e->since_usec,
                                          e->updated_usec);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_status(sd_bus_message *msg, void *userdata, sd_bus_error *error _unused_) {
        Mesh *m = userdata;
        pthread_mutex_lock(&m->lock);
        bool connected = m->connected;
        pthread_mutex_unlock(&m->lock);
        if (!connected) {
                /* The worker is still trying to connect: nothing to ask JetStream. */
                Job nc = { .kind = JOB_STATUS, .call = msg, .error = -ENOTCONN };
                handle_status(m, &nc);
                return 1;
        }
        Job *j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->kind = JOB_STATUS;
        j->call = sd_bus_message_ref(msg);
        queue_job(m, j);        /* the worker asks JetStream; the loop answers (handle_status) */
        return 1;
}

static int property_host(sd_bus *bus _unused_, const char *path _unused_, const char *interface _unused_,
                         const char *property _unused_, sd_bus_message *reply, void *userdata,
                         sd_bus_error *error _unused_) {
        Mesh *m = userdata;
        return sd_bus_message_append(reply, "s", m->config->mesh.host);
}

static int property_connected(sd_bus *bus _unused_, const char *path _unused_, const char *interface _unused_,
                              const char *property _unused_, sd_bus_message *reply, void *userdata,
                              sd_bus_error *error _unused_) {
        Mesh *m = userdata;
        pthread_mutex_lock(&m->lock);
        bool c = m->connected && m->link_up;
        pthread_mutex_unlock(&m->lock);
        return sd_bus_message_append(reply, "b", c);
}

const sd_bus_vtable mesh_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Host", "s", property_host, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Connected", "b", property_connected, 0, 0),
        SD_BUS_METHOD_WITH_ARGS("Submit", SD_BUS_ARGS("s", to, "s", text, "a{sv}", options),
                                SD_BUS_RESULT("s", task_id), method_submit, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetResult", SD_BUS_ARGS("s", task_id), SD_BUS_RESULT("s", status, "s", text),
                                method_get_result, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetResultInfo", SD_BUS_ARGS("s", task_id),
                                SD_BUS_RESULT("s", status, "s", text, "a{sv}", info), method_get_result_info,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Cancel", SD_BUS_ARGS("s", task_id), SD_BUS_NO_RESULT, method_cancel,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListTasks", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(ssss)", tasks), method_list_tasks,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListStates", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sssstt)", tasks), method_list_states,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetStatus", SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("a{sv}", status, "a(ssstttbttt)", streams), method_get_status,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("TaskCompleted", SD_BUS_ARGS("s", task_id, "s", sender, "s", status), 0),
        SD_BUS_VTABLE_END
};

int mesh_introspect_xml(char **ret) {
        return con_bus_introspect_vtable(CON_MESH_PATH, CON_MESH_INTERFACE, mesh_vtable, ret);
}

int mesh_new(const ConConfig *config, sd_event *event, sd_bus *bus, ConAuditWriter *audit, Mesh **ret) {
        _cleanup_(mesh_freep) Mesh *m = NULL;
        int r;

        if (!config->mesh.enabled) {
                con_audit_writer_free(audit);
                return -ENOMEDIUM;
        }
        m = calloc(1, sizeof(*m));
        if (!m) {
                con_audit_writer_free(audit);
                return -ENOMEM;
        }
        m->efd = m->outbox_fd = m->failed_fd = -EBADF;
        m->flood = (MeshFlood) { .interval_usec = FLOOD_INTERVAL_USEC, .burst = FLOOD_BURST };
        m->resend_budget = (MeshFlood) { .interval_usec = FLOOD_INTERVAL_USEC, .burst = RESEND_BURST };
        pthread_mutex_init(&m->lock, NULL);
        pthread_cond_init(&m->cond, NULL);
        m->config = config;
        m->audit = audit;
        m->event = sd_event_ref(event);
        m->bus = sd_bus_ref(bus);
        m->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (m->efd < 0)
                return -errno;
        r = sd_event_add_io(event, &m->wake, m->efd, EPOLLIN, on_wake, m);
        if (r < 0)
                return r;
        /* Made by con bootstrap for the gateway's user; without them results are on the bus only. */
        m->outbox_fd = open_nofollow(CON_MESH_OUTBOX_DIR, O_DIRECTORY | O_RDONLY, 0);
        m->failed_fd = open_nofollow(CON_MESH_FAILED_DIR, O_DIRECTORY | O_RDONLY, 0);
        if (m->outbox_fd < 0 || m->failed_fd < 0)
                log_warning("No %s or %s (con bootstrap makes them): results are on the bus only",
                            CON_MESH_OUTBOX_DIR, CON_MESH_FAILED_DIR);
        r = sent_load(m);
        if (r < 0)
                return r;
        ConAuthzOptions o = { .root_policy = CON_AUTHZ_ROOT_ALLOW };
        r = con_authz_new(bus, event, &o, &m->authz);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

int mesh_start(Mesh *m) {
        int r;

        the_mesh = m;
        r = sd_bus_add_object_vtable(m->bus, &m->object, CON_MESH_PATH, CON_MESH_INTERFACE, mesh_vtable, m);
        if (r < 0)
                return r;
        r = sd_bus_match_signal_async(m->bus, &m->completed_match, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE,
                                      "TaskCompleted", on_agent_completed, NULL, m);
        if (r < 0)
                return r;
        /* The agents' names only (arg0namespace), as the router watches them. */
        r = con_name_owners_new(m->bus, "org.conspiracy", true, NULL, NULL, &m->owners);
        if (r < 0)
                return r;
        for (size_t i = 0; i < m->config->n_agents; i++) {
                _cleanup_free_ char *bus_name = NULL;
                r = con_agent_bus_name(m->config->agents[i].name, &bus_name);
                if (r >= 0)
                        r = con_name_owners_add(m->owners, bus_name);
                if (r < 0)
                        return r;
        }
        r = sd_bus_match_signal_async(m->bus, &m->started_match, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE,
                                      "TaskStarted", on_agent_started, NULL, m);
        if (r < 0)
                return r;
        r = pthread_create(&m->worker, NULL, worker_thread, m);
        if (r != 0)
                return -r;
        m->worker_started = true;
        return sd_bus_request_name_async(m->bus, NULL, CON_MESH_BUS_NAME, 0, NULL, NULL);
}

/* Stopping, the fetch threads joined: the messages the server handed to this gateway's pull
 * requests after their fetch returned are queued in the subscription; they go back (nak). The
 * server counts a request's expiry from when it read it, so under load the last request outlives
 * its fetch, and a task published meanwhile (the gateway's bus name is gone already: sd-bus closes
 * the bus when the loop exits) still comes here. Waits until every request has expired, then takes
 * what is queued without asking for more. Returns the number of messages given back. */
static unsigned give_back_queued(Mesh *m) {
        unsigned n = 0;

        if (!m->connected || !m->nc)
                return 0;
        /* Once the server answers this PING it has read every pull request of this connection,
         * and each expires within FETCH_WAIT_MS. No answer (disconnected): the server dropped
         * them with the connection. */
        if (natsConnection_FlushTimeout(m->nc, FLUSH_WAIT_MS) != NATS_OK)
                return 0;
        (void) usleep((FETCH_WAIT_MS + 50) * 1000);
        /* Whatever the server sent before this PONG has come in. */
        if (natsConnection_FlushTimeout(m->nc, FLUSH_WAIT_MS) != NATS_OK)
                return 0;
        for (MeshKind k = MESH_KIND_TASK; k <= MESH_KIND_RESULT; k++) {
                int pending = 0, bytes = 0;
                if (!m->sub[k] || natsSubscription_GetPending(m->sub[k], &pending, &bytes) != NATS_OK ||
                    pending <= 0)
                        continue;
                /* One at a time (mesh-fetch.h), as many as are queued: a queued message is taken
                 * without a request (where only status messages are queued the fetch asks, without
                 * waiting, for one more; that one goes back too). */
                for (int i = 0; i < pending; i++) {
                        natsMsgList list = {};
                        int r = mesh_fetch(m->sub[k], FLUSH_WAIT_MS, true, &list);
                        for (int l = 0; r >= 0 && l < list.Count; l++)
                                if (natsMsg_Nak(list.Msgs[l], NULL) == NATS_OK)
                                        n++;
                        natsMsgList_Destroy(&list);
                        if (r < 0)
                                break;
                }
        }
        return n;
}

static void resend_free(Mesh *m);

Mesh *mesh_free(Mesh *m) {
        unsigned given_back = 0;
        bool quiet = true;      /* NATS's threads are done with M */

        if (!m)
                return NULL;
        pthread_mutex_lock(&m->lock);
        m->stop = true;
        pthread_cond_broadcast(&m->cond);
        pthread_mutex_unlock(&m->lock);
        if (m->worker_started)
                (void) pthread_join(m->worker, NULL);
        for (MeshKind k = MESH_KIND_TASK; k <= MESH_KIND_RESULT; k++)
                if (m->fetch_started[k])
                        (void) pthread_join(m->fetch[k], NULL);
        if (m->state_fetch_started)
                (void) pthread_join(m->state_fetch, NULL);
        for (Job *j; (j = pop(&m->todo, &m->todo_tail)); )
                job_free(j);
        /* The cancels stop first: on_cancel_msg (NATS's delivery thread) queues on done and wakes
         * the loop with M's lock and eventfd until its completion callback says it returned. (The
         * state events' fetch thread was joined above.) */
        if (m->cancel_sub) {
                if (natsSubscription_Unsubscribe(m->cancel_sub) != NATS_OK)
                        natsConnection_Close(m->nc);
                quiet = wait_flag(m, &m->cancel_sub_done, CLOSE_WAIT_MS);
        }
        given_back += give_back_queued(m);
        /* Deliver calls still in flight: cancelled, their messages given back too. */
        while (m->calls) {
                DeliverCall *c = m->calls;
                if (c->msg && natsMsg_Nak(c->msg, NULL) == NATS_OK)
                        given_back++;
                deliver_call_free(c);
        }
        sent_waiters_free(m);
        /* Messages fetched but never handled (the loop had stopped): back to JetStream at once,
         * rather than after the ack wait, so a gateway stopping cannot hold a task for 30 s. */
        for (Job *j; (j = pop(&m->done, &m->done_tail)); ) {
                if (j->kind == JOB_INCOMING && j->msg && natsMsg_Nak(j->msg, NULL) == NATS_OK)
                        given_back++;
                job_free(j);
        }
        /* The naks are buffered: sent before the connection closes (it does not flush). */
        if (m->nc && given_back > 0 && natsConnection_FlushTimeout(m->nc, FLUSH_WAIT_MS) != NATS_OK)
                log_warning("Stopping: could not confirm giving back %u message(s); JetStream delivers them "
                            "again after the ack wait", given_back);
        else if (given_back > 0)
                log_info("Stopping: gave back %u message(s) fetched but not handled", given_back);
        for (MeshKind k = MESH_KIND_TASK; k <= MESH_KIND_RESULT; k++)
                natsSubscription_Destroy(m->sub[k]);
        natsSubscription_Destroy(m->state_sub);
        natsSubscription_Destroy(m->cancel_sub);
        jsCtx_Destroy(m->js);
        jsCtx_Destroy(m->js_state);
        if (!close_nats(m))
                quiet = false;
        /* State events refused while the connection closed (on_state_publish_error), and those
         * waiting to be sent again: lost (the states of tasks still running are published again). */
        for (Job *j; (j = pop(&m->done, &m->done_tail)); )
                job_free(j);
        for (Job *j; (j = pop(&m->state_retry, &m->state_retry_tail)); )
                job_free(j);
        sd_event_source_disable_unref(m->state_retry_timer);
        for (size_t i = 0; i < m->n_out; i++)
                outgoing_done(&m->out[i]);
        free(m->out);
        mesh_state_table_done(&m->states);
        while (m->n_dl > 0)
                drop_delivery(m, &m->dl[0]);
        free(m->dl);
        sd_bus_slot_unref(m->object);
        sd_bus_slot_unref(m->completed_match);
        sd_bus_slot_unref(m->started_match);
        con_name_owners_free(m->owners);
        sd_event_source_disable_unref(m->wake);
        sd_event_source_disable_unref(m->ask_timer);
        sd_event_source_disable_unref(m->list_timer);
        strv_free(m->list_now);
        strv_free(m->list_again);
        cancels_free(m);
        if (m->outbox_fd >= 0)
                close(m->outbox_fd);
        if (m->failed_fd >= 0)
                close(m->failed_fd);
        mesh_sent_journal_free(m->sent);
        sd_event_source_disable_unref(m->retention_timer);
        sd_event_source_disable_unref(m->flood_timer);
        mesh_flood_done(&m->flood);
        resend_free(m);
        con_authz_free(m->authz);
        con_audit_writer_free(m->audit);
        strv_free(m->verified);
        strv_free(m->verified_results);
        free(m->refused_stream);
        sd_bus_unref(m->bus);
        sd_event_unref(m->event);
        if (the_mesh == m)
                the_mesh = NULL;
        if (!quiet) {
                /* A NATS thread may still touch M: leaving it (and its lock) is safer than a crash. */
                log_warning("Stopping: the NATS library did not finish with the gateway's callbacks in %d s",
                            CLOSE_WAIT_MS / 1000);
                return NULL;
        }
        if (m->efd >= 0)
                close(m->efd);
        pthread_mutex_destroy(&m->lock);
        pthread_cond_destroy(&m->cond);
        free(m);
        return NULL;
}
