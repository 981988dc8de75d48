/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The durable task queue of one agent: pure logic, no bus, no logging.
 *
 * The journal <agent dir>/queue/journal is the source of truth. It is append-only JSON Lines,
 * one record per line:
 *
 *   {"op":"accept","id":..,"uid":..,"sender":..,"prio":..,"reply_to":..,"deadline":..,"ts":..,"text":..}
 *   {"op":"start","id":..,"ts":..}                        a session took the task (counts a try)
 *   {"op":"end","id":..,"status":"done|failed|cancelled","ts":..,"result":..}
 *   {"op":"known","id":..,"uid":..,"sender":..,"status":..,"ts":..,"reason":..}   after compaction
 *
 * Records are collected in an in-memory batch and written with one write() + fdatasync() by
 * agent_queue_commit() (group commit); nothing may be acknowledged before that returns. A torn
 * last line (crash in the middle of a write) is ignored and cut off at open. The files in
 * outbox/, processed/ and failed/ are derived from the journal and regenerated when missing. */

#define AGENT_QUEUE_MAX_TRIES 3
#define AGENT_QUEUE_REASON_MAX 4096

typedef enum AgentTaskStatus {
        AGENT_TASK_QUEUED,
        AGENT_TASK_RUNNING,
        AGENT_TASK_DONE,
        AGENT_TASK_FAILED,
        AGENT_TASK_CANCELLED,
        _AGENT_TASK_STATUS_MAX,
        _AGENT_TASK_STATUS_INVALID = -22,
} AgentTaskStatus;

const char *agent_task_status_to_string(AgentTaskStatus s);
AgentTaskStatus agent_task_status_from_string(const char *s);
static inline bool agent_task_status_is_final(AgentTaskStatus s) {
        return s >= AGENT_TASK_DONE;
}

typedef struct AgentTask {
        char *id;
        uid_t sender_uid;
        char *sender;           /* the submitter's user name, or its decimal uid */
        int priority;           /* 0..9, higher first */
        char *reply_to;         /* agent name or NULL */
        uint64_t deadline_usec; /* CLOCK_REALTIME, 0 = none */
        char *text;             /* NULL after compaction */
        uint64_t seq;           /* arrival order */
        uint64_t accepted_usec, finished_usec;
        AgentTaskStatus status;
        unsigned tries;         /* how many times a session started it */
        char *result;           /* done: response (NULL after compaction: read outbox/); failed,
                                 * cancelled: reason */
        void *userdata;         /* the service's session */
} AgentTask;

/* What a submitter gives; id NULL means "make a new one". */
typedef struct AgentTaskRequest {
        const char *id;
        uid_t sender_uid;
        const char *sender;
        int priority;
        const char *reply_to;
        uint64_t deadline_usec;
        const char *text;
} AgentTaskRequest;

typedef struct AgentQueue AgentQueue;

typedef struct AgentQueueStats {
        size_t n_tasks, n_queued, n_running;
        uint64_t n_done, n_failed, n_cancelled;
        uint64_t journal_size, n_records;
        unsigned n_corrupt;     /* lines skipped during replay (not counting a torn tail) */
        bool torn_tail;         /* a torn last line was cut off during replay */
} AgentQueueStats;

/* Opens (creating when missing) queue/, outbox/, processed/, failed/ below agent_dir_fd, takes an
 * exclusive lock on the journal (waiting up to lock_timeout_usec for a previous instance), and
 * replays it. Tasks started but never ended count one try and are queued again, or failed when
 * they reached AGENT_QUEUE_MAX_TRIES (those end records are in the batch: commit them).
 * Returns -EWOULDBLOCK when the lock cannot be taken. */
int agent_queue_open(int agent_dir_fd, uint64_t lock_timeout_usec, AgentQueue **ret);
AgentQueue *agent_queue_free(AgentQueue *q);
static inline void agent_queue_freep(AgentQueue **q) {
        agent_queue_free(*q);
}

void agent_queue_get_stats(const AgentQueue *q, AgentQueueStats *ret);
AgentTask *agent_queue_find(AgentQueue *q, const char *id);
/* All tasks known, in arrival order. */
AgentTask * const *agent_queue_tasks(const AgentQueue *q, size_t *ret_n);

/* Accepts a task into the batch. Returns 0 and the new task, or 1 and the existing task when its
 * id is known (dedup). -EINVAL for an invalid id. */
int agent_queue_accept(AgentQueue *q, const AgentTaskRequest *req, uint64_t now_usec, AgentTask **ret);
/* The queued task to run next: highest priority, then arrival order. NULL when none. */
AgentTask *agent_queue_peek(AgentQueue *q);
/* Queued -> running; counts a try. */
int agent_queue_start(AgentQueue *q, AgentTask *t, uint64_t now_usec);
/* Running -> queued after a session died. -ELOOP when the task used up its tries (the caller
 * then fails it). */
int agent_queue_requeue(AgentQueue *q, AgentTask *t);
/* -> done/failed/cancelled with result (copied; reasons are cut to AGENT_QUEUE_REASON_MAX). */
int agent_queue_finish(AgentQueue *q, AgentTask *t, AgentTaskStatus st, const char *result, uint64_t now_usec);

bool agent_queue_has_batch(const AgentQueue *q);
/* Writes the batch and fdatasync()s once. On failure the journal is cut back to its last good
 * size and the error returned: the in-memory state is then ahead of the disk, the caller must
 * stop. */
int agent_queue_commit(AgentQueue *q);

/* True when nothing is queued or running and the journal has grown past its threshold. */
bool agent_queue_want_compact(const AgentQueue *q);
/* Rewrites the journal as one "known" record per task (ids, senders, status, reasons: the dedup
 * index survives; texts and responses go, responses stay in outbox/). Only when nothing is
 * queued or running (-EBUSY otherwise) and the batch is empty. */
int agent_queue_compact(AgentQueue *q);
/* Test knob: compaction threshold in bytes (default 8 MiB). */
void agent_queue_set_compact_threshold(AgentQueue *q, uint64_t bytes);

/* Writes the derived files of a finished task when missing: outbox/<id>.response (0600) and
 * processed/<id>.task for done tasks; failed/<id>.task and failed/<id>.reason for failed and
 * cancelled ones. Not fsync'ed: the journal is the source of truth. */
int agent_queue_write_files(AgentQueue *q, const AgentTask *t);
/* Writes missing derived files of every finished task (after replay). */
int agent_queue_write_all_files(AgentQueue *q);
/* The response or reason of a finished task, from memory or from outbox/. */
int agent_queue_read_result(AgentQueue *q, const AgentTask *t, char **ret);
