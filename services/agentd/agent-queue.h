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
 *   {"op":"accept","id":..,"uid":..,"sender":..,"prio":..,"reply_to":..,"deadline":..,"conversation":..,
 *    "chain":..,"ts":..,"text":..}                 chain: the delegation chain, when an agent sent it
 *   {"op":"start","id":..,"ts":..}                        a session took the task (counts a try)
 *   {"op":"end","id":..,"status":"done|failed|cancelled","ts":..,"result":..[,"truncated":true]
 *    [,"replaced":true][,"size":..]}             size: the producer's bytes, when cut or replaced
 *   {"op":"known","id":..,"uid":..,"sender":..,"status":..,"ts":..,"reason":..,"chain":..[,"truncated",
 *    "replaced","size" as in end]}                after compaction
 *   {"op":"forget","id":..,"ts":..}              the retention removed the finished task: replay
 *                                                drops every record of the id before its last
 *                                                forget (a later accept is a new task)
 *
 * Replay: the first accept or known record of an id makes its task; a later one is ignored (a
 * retry is never recorded twice), except an accept of an id whose task has finished: it replaces
 * that task (the id was freed without a forget record: a task past the retention evicted without
 * its files). A queued or running task is never replaced.
 *
 * Records are collected in an in-memory batch and written with one write() + fdatasync() by
 * agent_queue_commit() (group commit); nothing may be acknowledged before that returns. A torn
 * last line (crash in the middle of a write) is ignored and cut off at open. The files in
 * outbox/, processed/, failed/ and queue/finished/ are derived from the journal and regenerated
 * when missing.
 *
 * Memory is bounded: queued and running tasks stay in memory, finished ones only the most recent
 * AGENT_QUEUE_KEEP_FINISHED (arrival order); older ones are evicted after a commit once their
 * files are written. queue/finished/<id>.json (the "known" record: id, uid, sender, status,
 * reason) is written last, so it marks an evicted task as known (dedup) and carries the
 * submitter's uid for GetResult. Compaction keeps only the tasks in memory (after a syncfs() so
 * the files of evicted ones are durable) plus a "counters" record for the evicted ones:
 *
 *   {"op":"counters","accepted":..,"done":..,"failed":..,"cancelled":..} */

#define AGENT_QUEUE_MAX_TRIES 3
/* Stored results are valid text (bus/basic/utf8.h) of at most these many bytes, the cut note included. */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define AGENT_QUEUE_RESULT_MAX (64 * 1024) /* = AGENT_SESSION_OUTPUT_MAX of the fuzz build */
#else
#define AGENT_QUEUE_RESULT_MAX (1024 * 1024)
#endif
#define AGENT_QUEUE_REASON_MAX 4096
/* Finished tasks kept in memory (ListTasks, /tasks show these); older ones live on disk only. */
#define AGENT_QUEUE_KEEP_FINISHED 1000

typedef enum AgentTaskStatus {
        AGENT_TASK_QUEUED,
        AGENT_TASK_RUNNING,
        AGENT_TASK_DONE,
        AGENT_TASK_FAILED,
        AGENT_TASK_CANCELLED,
        _AGENT_TASK_STATUS_MAX,
        _AGENT_TASK_STATUS_INVALID = -22,
} AgentTaskStatus;

/* The journal's names: queued, running, done, failed, cancelled. */
const char *agent_task_status_to_string(AgentTaskStatus s);
/* The names on the bus and in JSON (A2A and MCP tasks): submitted, working, completed, failed,
 * canceled (docs/AGENT.md "States and properties"). */
const char *agent_task_status_to_a2a(AgentTaskStatus s);
/* Either name. */
AgentTaskStatus agent_task_status_from_string(const char *s);
static inline bool agent_task_status_is_final(AgentTaskStatus s) {
        return s >= AGENT_TASK_DONE;
}

/* What became of a result on its way to storage (agent_result_text()). */
typedef struct AgentResultInfo {
        bool truncated;         /* cut on a character boundary, with a note at the end */
        bool replaced;          /* bytes that were not valid text became U+FFFD */
        uint64_t size;          /* bytes the producer gave, before any cut or replacement */
} AgentResultInfo;

typedef struct AgentTask {
        char *id;
        uid_t sender_uid;
        char *sender;           /* the submitter's user name, or its decimal uid */
        int priority;           /* 0..9, higher first */
        char *reply_to;         /* agent name or NULL */
        uint64_t deadline_usec; /* CLOCK_REALTIME, 0 = none */
        char *conversation;     /* the sender's conversation to continue, or NULL (a new one) */
        char *chain;            /* delegation chain "AGENT/TASK ..." (agent-chain.h), NULL: sent by a
                                 * human or root; the last entry is the parent task */
        char *text;             /* NULL after compaction */
        uint64_t seq;           /* arrival order */
        uint64_t accepted_usec, finished_usec;
        AgentTaskStatus status;
        unsigned tries;         /* how many times a session started it */
        char *result;           /* done: response (NULL after compaction: read outbox/); failed,
                                 * cancelled: reason. Always valid text. */
        AgentResultInfo result_info;
        bool files_written;     /* its derived files are known to exist: eviction needs no lookup */
        void *userdata;         /* the service's session */
} AgentTask;

AgentTask *agent_task_free(AgentTask *t);
static inline void agent_task_freep(AgentTask **t) {
        agent_task_free(*t);
}

/* Whether T is of the sender UID, SENDER: the same uid and the same principal. Every task of
 * another host is held under the one uid of the mesh gateway, so the uid alone does not tell
 * alice@host-a from mallory@host-b; a local sender's principal is its uid's name. */
bool agent_task_same_sender(const AgentTask *t, uid_t uid, const char *sender);

/* What a submitter gives; id NULL means "make a new one". */
typedef struct AgentTaskRequest {
        const char *id;
        uid_t sender_uid;
        const char *sender;
        int priority;
        const char *reply_to;
        uint64_t deadline_usec;
        const char *conversation;
        const char *chain;      /* derived by the service, never taken from the caller */
        const char *text;
} AgentTaskRequest;

typedef struct AgentQueue AgentQueue;

typedef struct AgentQueueStats {
        size_t n_tasks;         /* accepted for the life of the journal, evicted ones included */
        size_t n_in_memory, n_queued, n_running;
        uint64_t n_done, n_failed, n_cancelled;
        uint64_t journal_size, n_records;
        unsigned n_corrupt;     /* lines skipped during replay (not counting a torn tail) */
        bool torn_tail;         /* a torn last line was cut off during replay */
        bool untrusted_journal; /* queue/journal was not the service's own file (owner, mode, links):
                                 * set aside as queue/journal.untrusted-<usec>, not replayed */
} AgentQueueStats;

/* Opens (creating when missing) queue/, outbox/, processed/, failed/ below agent_dir_fd (each must
 * belong to the service's user and not be writable by group or others: -EPERM), takes an
 * exclusive lock on the journal (waiting up to lock_timeout_usec for a previous instance), and
 * replays it. Tasks started but never ended count one try and are queued again, or failed when
 * they reached AGENT_QUEUE_MAX_TRIES (those end records are in the batch: commit them).
 * Returns -EWOULDBLOCK when the lock cannot be taken. */
int agent_queue_open(int agent_dir_fd, uint64_t lock_timeout_usec, AgentQueue **ret);
/* The same with a retention (system.result_retention; 0: none): a finished task that ended longer
 * ago than that is past its retention. Its derived files are never written (again, when replay
 * meets it in a journal not compacted since), and it is evicted at open and by
 * agent_queue_evict_before(). */
int agent_queue_open_retained(int agent_dir_fd, uint64_t lock_timeout_usec, uint64_t retention_usec,
                              AgentQueue **ret);
AgentQueue *agent_queue_free(AgentQueue *q);
static inline void agent_queue_freep(AgentQueue **q) {
        agent_queue_free(*q);
}

void agent_queue_get_stats(const AgentQueue *q, AgentQueueStats *ret);
AgentTask *agent_queue_find(AgentQueue *q, const char *id);
/* All tasks known, in arrival order. */
AgentTask * const *agent_queue_tasks(const AgentQueue *q, size_t *ret_n);

/* Accepts a task into the batch. Ids are scoped by sender (sender_uid and the principal sender:
 * the mesh gateway delivers for many remote principals under its one uid): returns 0 and the new
 * task, 1 and the existing task when the same sender already holds the id (dedup), or 2 and NULL
 * when the id belongs to a finished task of the same sender evicted from memory (also dedup:
 * nothing to add). -EEXIST when the id is held by another sender, in memory or on disk
 * (queue/finished/<id>.json names the submitter; a finished task whose record is missing counts
 * as another sender's). -EINVAL for an invalid id or priority. Without an id a fresh one is made
 * that no known task holds. */
int agent_queue_accept(AgentQueue *q, const AgentTaskRequest *req, uint64_t now_usec, AgentTask **ret);
/* The queued task to run next: highest priority, then arrival order. NULL when none. */
AgentTask *agent_queue_peek(AgentQueue *q);
/* Queued -> running; counts a try. */
int agent_queue_start(AgentQueue *q, AgentTask *t, uint64_t now_usec);
/* Running -> queued after a session died. -ELOOP when the task used up its tries (the caller
 * then fails it). */
int agent_queue_requeue(AgentQueue *q, AgentTask *t);
/* -> done/failed/cancelled with result (copied through agent_result_text(): responses cut to
 * AGENT_QUEUE_RESULT_MAX, reasons to AGENT_QUEUE_REASON_MAX). */
int agent_queue_finish(AgentQueue *q, AgentTask *t, AgentTaskStatus st, const char *result, uint64_t now_usec);
/* The same for output of any bytes: data[0..len) of size bytes the producer wrote (size > len when
 * the bytes beyond len were dropped while reading). */
int agent_queue_finish_output(AgentQueue *q, AgentTask *t, AgentTaskStatus st, const char *data, size_t len,
                              uint64_t size, uint64_t now_usec);

/* The stored form of a result or reason, from any bytes: invalid UTF-8 and NUL bytes replaced by
 * U+FFFD; when longer than max bytes (or size > len), cut on a character boundary with the note
 * "\n[truncated: SIZE bytes, the first KEPT kept]" at the end, all within max. Every response,
 * reason and response file read back goes through here, so GetResult always has valid text.
 * ret_info may be NULL. */
int agent_result_text(const char *data, size_t len, uint64_t size, size_t max, char **ret,
                      AgentResultInfo *ret_info);

bool agent_queue_has_batch(const AgentQueue *q);
/* Writes the batch and fdatasync()s once. On failure the journal is cut back to its last good
 * size and the error returned: the in-memory state is then ahead of the disk, the caller must
 * stop. The failure is final: what the batch held was refused to its callers ("nothing was
 * accepted"), so neither it nor anything appended later is ever written; every later commit
 * returns the same error without writing (and agent_queue_prune() removes no file). */
int agent_queue_commit(AgentQueue *q);

/* Evicts the oldest finished tasks beyond the limit (only with an empty batch, i.e. right after a
 * commit; the caller must hold no pointer to finished tasks). Returns how many went. */
size_t agent_queue_evict(AgentQueue *q);
/* Evicts, besides those beyond the limit, the finished tasks that ended before before_usec
 * (CLOCK_REALTIME); same conditions as agent_queue_evict(). */
size_t agent_queue_evict_before(AgentQueue *q, uint64_t before_usec);
/* The retention of finished tasks on disk (docs/AGENT.md "Retention"), one bounded step of a pass
 * over queue/finished/: each record of a task not in memory that was last modified before
 * older_than_usec (CLOCK_REALTIME; 0: none for their age) goes; then, when more than keep are
 * left, keep is shared fairly between the senders (uid and principal, read from each record):
 * a sender with fewer records than an equal share keeps them all, the others keep an equal share
 * of the rest, each its most recent (tasks in memory count, never go), so the sender holding the
 * most loses records first and a flood removes only the flooder's own. The pass's memory is
 * bounded (a counter per sender, at most 1,025 told apart: further senders and unreadable records
 * count as one; at most 16,384 records picked per round, another round following while more must
 * go). A task goes with its files:
 * outbox/<id>.response, processed/<id>.task, failed/<id>.task, failed/<id>.reason, then
 * queue/finished/<id>.json (so GetResult then finds no task). At most budget entries are looked at
 * or removed per call; the pass goes on at the next call. Returns 1 while the pass goes on, 0 when
 * it ended (the next call starts another), or -errno (the pass starts over); *ret_removed (may be
 * NULL): tasks whose files all went in this call. Each removal appends a "forget" record; a call that removed
 * tasks ends with agent_queue_commit() (the whole batch), and the files go only once that
 * succeeded, so the id is free only when a restart cannot bring the task back. Removals make
 * agent_queue_want_compact() true, so the journal drops them at its next idle moment. */
int agent_queue_prune(AgentQueue *q, uint64_t older_than_usec, size_t keep, size_t budget, size_t *ret_removed);
/* The tasks whose files could not all be removed since the last call (their forget record is
 * written, their record stays: the task stays known and the next pass tries again; not counted in
 * *ret_removed), and the first one's -errno in *ret_error (may be NULL). Resets both. */
size_t agent_queue_prune_failures(AgentQueue *q, int *ret_error);
/* Test knob: the senders a retention pass tells apart (default 1,024) and the records it removes
 * for the count per round (default 16,384). */
void agent_queue_set_prune_limits(AgentQueue *q, size_t senders_max, size_t round_max);
/* Test knob: finished tasks kept in memory (default AGENT_QUEUE_KEEP_FINISHED). */
void agent_queue_set_keep_finished(AgentQueue *q, size_t n);
/* Whether the files of a finished task with this id exist (queue/finished/<id>.json,
 * processed/<id>.task or failed/<id>.task). */
bool agent_queue_known_on_disk(AgentQueue *q, const char *id);
/* A finished task that is no longer in memory, from queue/finished/<id>.json: id, sender_uid,
 * sender, status, reason (failed/cancelled); the response of a done task is read by
 * agent_queue_read_result() from outbox/. The caller owns it (agent_task_free()). -ENOENT when
 * unknown, -EBADMSG when the file is malformed. */
int agent_queue_load_finished(AgentQueue *q, const char *id, AgentTask **ret);

/* True when nothing is queued or running and the journal has grown past its threshold, or the
 * retention removed tasks since the last compaction. */
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
int agent_queue_write_files(AgentQueue *q, AgentTask *t);
/* The same for a task that became final in this instance (after the commit of its end record):
 * none of its files can exist yet, so none is looked up first (one that did would be kept all
 * the same: the files are renamed into place without replacing). */
int agent_queue_write_new_files(AgentQueue *q, AgentTask *t);
/* Writes missing derived files of every finished task (after replay). */
int agent_queue_write_all_files(AgentQueue *q);
/* The response or reason of a finished task, from memory or from outbox/ (through
 * agent_result_text(): a response file that is not valid text or too large is read as such).
 * ret_info (may be NULL) says whether it was cut or had bytes replaced. */
int agent_queue_read_result(AgentQueue *q, const AgentTask *t, char **ret, AgentResultInfo *ret_info);
