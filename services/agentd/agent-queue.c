/* SPDX-License-Identifier: MIT */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <inttypes.h>
#include <search.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include "agent-chain.h"
#include "json-util.h"
#include "agent-queue.h"
#include "fileio.h"
#include "journal.h"
#include "macro.h"
#include "spool.h"
#include "task.h"
#include "time-util.h"
#include "utf8.h"

#define JOURNAL_NAME "journal"
#define LOCK_NAME "lock"
#define FINISHED_DIR "finished"
#define FINISHED_FILE_MAX (256U * 1024)
#define DEFAULT_COMPACT_THRESHOLD (8ULL * 1024 * 1024)
/* A record longer than this (a task text or result is at most a few MiB, escaped) is corrupt. */
#define JOURNAL_LINE_MAX (256U * 1024 * 1024)

static inline void *mfree(void *p) {
        free(p);
        return NULL;
}

static inline size_t max_size(size_t a, size_t b) {
        return a > b ? a : b;
}

/* Replay: the last "forget" record of an id (its line number in the journal). An accept or known
 * record of the id before it belongs to a task the retention removed: that task is not brought
 * back. */
typedef struct ForgetMark {
        char *id;
        uint64_t line;
} ForgetMark;

/* The retention pass (agent_queue_prune()): a scan of queue/finished/ for age, then, only when more
 * than keep records are left, rounds of two scans for the count: one counting each sender's records,
 * one picking each sender's oldest beyond its fair share, then their removal. */
typedef enum PrunePhase {
        PRUNE_AGE,
        PRUNE_COUNT,
        PRUNE_SELECT,
        PRUNE_REMOVE,
} PrunePhase;

/* Senders told apart in a pass; the records of any further sender (and unreadable records) count
 * as one more. */
#define PRUNE_SENDERS_MAX 1024
/* Records removed for the count per round: the memory of a pass stays bounded whatever the number
 * of files (another round follows while more must go). */
#define PRUNE_ROUND_MAX 16384

typedef struct PruneEntry {
        char *id;
        uint64_t mtime_usec;
} PruneEntry;

/* One sender (uid and principal: remote senders share the gateway's uid) in a round. */
typedef struct PruneSender {
        uid_t uid;
        char *principal;
        size_t n, n_pinned;     /* its records; those of tasks in memory (never removed) */
        uint64_t oldest_usec;   /* the mtime of its oldest record */
        size_t remove;          /* how many of its oldest go in this round */
        PruneEntry *sel;        /* the oldest seen so far, at most remove: a heap, the newest on top */
        size_t n_sel;
} PruneSender;

struct AgentQueue {
        int agent_dir_fd, queue_fd, outbox_fd, processed_fd, failed_fd, finished_fd;
        int lock_fd;
        ConJournal *journal;    /* bus/basic/journal.h: the batch, commits, replay, compaction */
        uid_t euid;

        AgentTask **tasks;      /* arrival order, owned */
        size_t n_tasks, n_tasks_alloc;
        void *index;            /* tsearch() tree of AgentTask*, by id */

        AgentTask **heap;       /* queued tasks; entries no longer queued are dropped lazily */
        size_t n_heap, n_heap_alloc;

        size_t n_queued, n_running;
        uint64_t n_done, n_failed, n_cancelled;
        uint64_t next_seq;
        size_t keep_finished;   /* finished tasks kept in memory */
        uint64_t n_evicted;     /* tasks accepted but no longer in memory */

        uint64_t n_records, compact_threshold;
        uint64_t retention_usec;        /* finished longer ago: files not (re)written, evicted; 0: none */
        bool pruned_since_compact;      /* the retention removed tasks the journal may still hold */
        /* Tasks whose "forget" record is in the batch: their files go once it is committed. */
        char **forget_ids;
        size_t n_forget_ids, forget_ids_alloc;
        void *forget_marks;             /* replay only: ForgetMark by id */

        /* The retention pass in progress (agent_queue_prune()). Its memory is bounded: a counter
         * per sender (at most PRUNE_SENDERS_MAX + 1) and at most PRUNE_ROUND_MAX records picked. */
        DIR *prune_dir;                 /* open while a pass goes on */
        PrunePhase prune_phase;
        size_t prune_n_live;            /* AGE: records left after the age */
        void *prune_index;              /* PruneSender by uid and principal */
        PruneSender **prune_senders;
        size_t n_prune_senders, prune_senders_alloc;
        PruneSender *prune_overflow;    /* the senders beyond PRUNE_SENDERS_MAX, unreadable records */
        PruneEntry *prune_sel;          /* REMOVE: the records picked by this round */
        size_t n_prune_sel, prune_pos;
        bool prune_more;                /* this round was cut at PRUNE_ROUND_MAX: another follows */
        size_t prune_senders_max, prune_round_max;      /* PRUNE_*_MAX (a test knob) */
        size_t prune_n_removed;         /* tasks whose files all went, since the last prune call */
        size_t prune_n_failed;          /* tasks whose files could not all be removed, since ... */
        int prune_error;                /* the first of those failures */
        bool untrusted_journal;
        int commit_error;               /* a commit failed: the first error, returned by every later one */
        unsigned n_corrupt;
        bool torn_tail;
};

static size_t evict_some(AgentQueue *q, size_t keep, uint64_t before_usec);
static inline size_t evict_to(AgentQueue *q, size_t keep) {
        return evict_some(q, keep, 0);
}
static void prune_reset(AgentQueue *q);
static void remove_forgotten_files(AgentQueue *q);
static void forget_marks_free(AgentQueue *q);

static const char * const status_table[_AGENT_TASK_STATUS_MAX] = {
        [AGENT_TASK_QUEUED] = "queued",
        [AGENT_TASK_RUNNING] = "running",
        [AGENT_TASK_DONE] = "done",
        [AGENT_TASK_FAILED] = "failed",
        [AGENT_TASK_CANCELLED] = "cancelled",
};

const char *agent_task_status_to_string(AgentTaskStatus s) {
        if (s < 0 || s >= _AGENT_TASK_STATUS_MAX)
                return NULL;
        return status_table[s];
}

/* The names of the A2A protocol and MCP tasks, used on the bus and in JSON. */
static const char * const a2a_table[_AGENT_TASK_STATUS_MAX] = {
        [AGENT_TASK_QUEUED] = "submitted",
        [AGENT_TASK_RUNNING] = "working",
        [AGENT_TASK_DONE] = "completed",
        [AGENT_TASK_FAILED] = "failed",
        [AGENT_TASK_CANCELLED] = "canceled",
};

const char *agent_task_status_to_a2a(AgentTaskStatus s) {
        if (s < 0 || s >= _AGENT_TASK_STATUS_MAX)
                return NULL;
        return a2a_table[s];
}

AgentTaskStatus agent_task_status_from_string(const char *s) {
        for (int i = 0; s && i < _AGENT_TASK_STATUS_MAX; i++)
                if (streq(status_table[i], s) || streq(a2a_table[i], s))
                        return i;
        return _AGENT_TASK_STATUS_INVALID;
}

bool agent_task_same_sender(const AgentTask *t, uid_t uid, const char *sender) {
        return t->sender_uid == uid && streq(strempty(t->sender), strempty(sender));
}

AgentTask *agent_task_free(AgentTask *t) {
        if (!t)
                return NULL;
        free(t->id);
        free(t->sender);
        free(t->reply_to);
        free(t->conversation);
        free(t->chain);
        free(t->text);
        free(t->result);
        free(t);
        return NULL;
}

static int task_cmp(const void *a, const void *b) {
        return strcmp(((const AgentTask *) a)->id, ((const AgentTask *) b)->id);
}

static void noop_free(void *p) {
}

AgentQueue *agent_queue_free(AgentQueue *q) {
        if (!q)
                return NULL;
        tdestroy(q->index, noop_free);
        for (size_t i = 0; i < q->n_tasks; i++)
                agent_task_free(q->tasks[i]);
        free(q->tasks);
        free(q->heap);
        prune_reset(q);
        for (size_t i = 0; i < q->n_forget_ids; i++)
                free(q->forget_ids[i]);
        free(q->forget_ids);
        forget_marks_free(q);
        con_journal_free(q->journal);
        safe_close(q->lock_fd);
        safe_close(q->queue_fd);
        safe_close(q->outbox_fd);
        safe_close(q->processed_fd);
        safe_close(q->failed_fd);
        safe_close(q->finished_fd);
        safe_close(q->agent_dir_fd);
        free(q);
        return NULL;
}

AgentTask *agent_queue_find(AgentQueue *q, const char *id) {
        AgentTask key = { .id = (char *) id };
        void *p = tfind(&key, &q->index, task_cmp);
        return p ? *(AgentTask **) p : NULL;
}

AgentTask * const *agent_queue_tasks(const AgentQueue *q, size_t *ret_n) {
        *ret_n = q->n_tasks;
        return q->tasks;
}

void agent_queue_get_stats(const AgentQueue *q, AgentQueueStats *ret) {
        *ret = (AgentQueueStats) {
                .n_tasks = q->n_tasks + q->n_evicted,
                .n_in_memory = q->n_tasks,
                .n_queued = q->n_queued,
                .n_running = q->n_running,
                .n_done = q->n_done,
                .n_failed = q->n_failed,
                .n_cancelled = q->n_cancelled,
                .journal_size = q->journal ? con_journal_size(q->journal) : 0,
                .untrusted_journal = q->untrusted_journal,
                .n_records = q->n_records,
                .n_corrupt = q->n_corrupt,
                .torn_tail = q->torn_tail,
        };
}

void agent_queue_set_compact_threshold(AgentQueue *q, uint64_t bytes) {
        q->compact_threshold = bytes;
}

void agent_queue_set_keep_finished(AgentQueue *q, size_t n) {
        q->keep_finished = n;
}

void agent_queue_set_prune_limits(AgentQueue *q, size_t senders_max, size_t round_max) {
        q->prune_senders_max = senders_max;
        q->prune_round_max = round_max > 0 ? round_max : 1;
}

/* ---- the ready heap: priority first, then arrival ---- */

static bool heap_before(const AgentTask *a, const AgentTask *b) {
        if (a->priority != b->priority)
                return a->priority > b->priority;
        return a->seq < b->seq;
}

static void heap_swap(AgentQueue *q, size_t i, size_t j) {
        AgentTask *t = q->heap[i];
        q->heap[i] = q->heap[j];
        q->heap[j] = t;
}

static int heap_push(AgentQueue *q, AgentTask *t) {
        if (GROW_ONE(q->heap, q->n_heap, q->n_heap_alloc) < 0)
                return -ENOMEM;
        size_t i = q->n_heap++;
        q->heap[i] = t;
        while (i > 0 && heap_before(q->heap[i], q->heap[(i - 1) / 2])) {
                heap_swap(q, i, (i - 1) / 2);
                i = (i - 1) / 2;
        }
        return 0;
}

static void heap_sift_down(AgentQueue *q, size_t i) {
        for (;;) {
                size_t l = 2 * i + 1, r = l + 1, m = i;
                if (l < q->n_heap && heap_before(q->heap[l], q->heap[m]))
                        m = l;
                if (r < q->n_heap && heap_before(q->heap[r], q->heap[m]))
                        m = r;
                if (m == i)
                        break;
                heap_swap(q, i, m);
                i = m;
        }
}

static void heap_pop(AgentQueue *q) {
        if (q->n_heap == 0)
                return;
        q->heap[0] = q->heap[--q->n_heap];
        heap_sift_down(q, 0);
}

/* Drops the entries that are no longer queued (they may be freed next) and restores the order. */
static void heap_purge(AgentQueue *q) {
        size_t j = 0;
        for (size_t i = 0; i < q->n_heap; i++)
                if (q->heap[i]->status == AGENT_TASK_QUEUED)
                        q->heap[j++] = q->heap[i];
        q->n_heap = j;
        for (size_t i = j / 2; i > 0; i--)
                heap_sift_down(q, i - 1);
}

AgentTask *agent_queue_peek(AgentQueue *q) {
        while (q->n_heap > 0 && q->heap[0]->status != AGENT_TASK_QUEUED)
                heap_pop(q);
        return q->n_heap > 0 ? q->heap[0] : NULL;
}

/* ---- the batch ---- */

static int batch_append_json(AgentQueue *q, cJSON *j) {
        _cleanup_free_ char *s = cJSON_PrintUnformatted(j);
        if (!s)
                return -ENOMEM;
        return con_journal_append(q->journal, s);      /* cJSON escapes every '\n' */
}

bool agent_queue_has_batch(const AgentQueue *q) {
        return con_journal_has_batch(q->journal);
}

int agent_queue_commit(AgentQueue *q) {
        if (q->commit_error < 0)
                return q->commit_error;
        int r = con_journal_commit(q->journal, true);
        if (r < 0) {
                /* Whoever waited for this batch is told nothing was accepted (StorageFailed, "try
                 * again later"): it must never become durable, nor anything after it (records of a
                 * state the disk no longer matches). The queue writes nothing any more; the "forget"
                 * records' files stay. */
                q->commit_error = r;
                return r;
        }
        /* The "forget" records are durable: the files of those tasks can go now. */
        remove_forgotten_files(q);
        return 0;
}

static int json_add_str(cJSON *j, const char *k, const char *v) {
        if (!v)
                return 0;
        return cJSON_AddStringToObject(j, k, v) ? 0 : -ENOMEM;
}

/* Integers as integer literals: a double would print microsecond timestamps as 1.79...e+15. */
static int json_add_num(cJSON *j, const char *k, uint64_t v) {
        return con_json_add_u64(j, k, v) ? 0 : -ENOMEM;
}

/* "truncated", "replaced" and the producer's "size", only when the result is not what it gave. */
static int json_add_result_info(cJSON *j, const AgentResultInfo *i) {
        if (!i->truncated && !i->replaced)
                return 0;
        if ((i->truncated && !cJSON_AddTrueToObject(j, "truncated")) ||
            (i->replaced && !cJSON_AddTrueToObject(j, "replaced")))
                return -ENOMEM;
        return json_add_num(j, "size", i->size);
}


static int record_accept(AgentQueue *q, const AgentTask *t) {
        _cleanup_(cJSON_Deletep) cJSON *j = cJSON_CreateObject();
        if (!j)
                return -ENOMEM;
        if (json_add_str(j, "op", "accept") < 0 || json_add_str(j, "id", t->id) < 0 ||
            json_add_num(j, "uid", t->sender_uid) < 0 || json_add_str(j, "sender", t->sender) < 0 ||
            json_add_num(j, "prio", (uint64_t) t->priority) < 0 || json_add_str(j, "reply_to", t->reply_to) < 0 ||
            json_add_str(j, "conversation", t->conversation) < 0 || json_add_str(j, "chain", t->chain) < 0 ||
            json_add_num(j, "deadline", t->deadline_usec) < 0 ||
            json_add_num(j, "ts", t->accepted_usec) < 0 || json_add_str(j, "text", t->text) < 0)
                return -ENOMEM;
        return batch_append_json(q, j);
}

static int record_start(AgentQueue *q, const AgentTask *t, uint64_t now) {
        _cleanup_(cJSON_Deletep) cJSON *j = cJSON_CreateObject();
        if (!j)
                return -ENOMEM;
        if (json_add_str(j, "op", "start") < 0 || json_add_str(j, "id", t->id) < 0 ||
            json_add_num(j, "ts", now) < 0)
                return -ENOMEM;
        return batch_append_json(q, j);
}

static int record_end(AgentQueue *q, const AgentTask *t) {
        _cleanup_(cJSON_Deletep) cJSON *j = cJSON_CreateObject();
        if (!j)
                return -ENOMEM;
        if (json_add_str(j, "op", "end") < 0 || json_add_str(j, "id", t->id) < 0 ||
            json_add_str(j, "status", agent_task_status_to_string(t->status)) < 0 ||
            json_add_num(j, "ts", t->finished_usec) < 0 || json_add_str(j, "result", t->result) < 0 ||
            json_add_result_info(j, &t->result_info) < 0)
                return -ENOMEM;
        return batch_append_json(q, j);
}

static int record_forget(AgentQueue *q, const char *id, uint64_t now) {
        _cleanup_(cJSON_Deletep) cJSON *j = cJSON_CreateObject();
        if (!j)
                return -ENOMEM;
        if (json_add_str(j, "op", "forget") < 0 || json_add_str(j, "id", id) < 0 || json_add_num(j, "ts", now) < 0)
                return -ENOMEM;
        return batch_append_json(q, j);
}

static cJSON *record_known(const AgentTask *t) {
        _cleanup_(cJSON_Deletep) cJSON *j = cJSON_CreateObject();
        if (!j)
                return NULL;
        if (json_add_str(j, "op", "known") < 0 || json_add_str(j, "id", t->id) < 0 ||
            json_add_num(j, "uid", t->sender_uid) < 0 || json_add_str(j, "sender", t->sender) < 0 ||
            json_add_num(j, "prio", (uint64_t) t->priority) < 0 ||
            json_add_str(j, "status", agent_task_status_to_string(t->status)) < 0 ||
            json_add_num(j, "ts", t->accepted_usec) < 0 ||
            json_add_num(j, "end", t->finished_usec) < 0 ||
            (t->status != AGENT_TASK_DONE && json_add_str(j, "reason", t->result) < 0) ||
            json_add_str(j, "chain", t->chain) < 0 || json_add_result_info(j, &t->result_info) < 0)
                return NULL;
        return TAKE_PTR(j);
}

/* ---- state changes (shared by the API and replay) ---- */

static int task_insert(AgentQueue *q, AgentTask *t) {
        if (GROW_ONE(q->tasks, q->n_tasks, q->n_tasks_alloc) < 0)
                return -ENOMEM;
        void *p = tsearch(t, &q->index, task_cmp);
        if (!p)
                return -ENOMEM;
        if (*(AgentTask **) p != t)
                return -EEXIST;
        q->tasks[q->n_tasks++] = t;
        t->seq = q->next_seq++;
        return 0;
}

/* Takes a finished task out of memory (replay: nothing points at it, it is on no heap). */
static void task_remove(AgentQueue *q, AgentTask *t) {
        (void) tdelete(t, &q->index, task_cmp);
        for (size_t i = 0; i < q->n_tasks; i++)
                if (q->tasks[i] == t) {
                        memmove(q->tasks + i, q->tasks + i + 1, (q->n_tasks - i - 1) * sizeof(AgentTask *));
                        q->n_tasks--;
                        break;
                }
        agent_task_free(t);
}

static void count_final(AgentQueue *q, AgentTaskStatus st) {
        if (st == AGENT_TASK_DONE)
                q->n_done++;
        else if (st == AGENT_TASK_FAILED)
                q->n_failed++;
        else if (st == AGENT_TASK_CANCELLED)
                q->n_cancelled++;
}

static void set_status(AgentQueue *q, AgentTask *t, AgentTaskStatus st) {
        if (t->status == AGENT_TASK_QUEUED)
                q->n_queued--;
        else if (t->status == AGENT_TASK_RUNNING)
                q->n_running--;
        t->status = st;
        if (st == AGENT_TASK_QUEUED)
                q->n_queued++;
        else if (st == AGENT_TASK_RUNNING)
                q->n_running++;
        else
                count_final(q, st);
}

int agent_result_text(const char *data, size_t len, uint64_t size, size_t max, char **ret,
                      AgentResultInfo *ret_info) {
        _cleanup_free_ char *clean = NULL;
        size_t cl;
        char note[96];

        if (!data)
                len = 0;
        AgentResultInfo info = { .size = size > len ? size : len };
        /* Read up to a limit: a character cut short there is part of what was dropped. */
        if (info.size > len)
                len = con_utf8_complete_len(data, len);
        int r = con_utf8_sanitize(strempty(data), len, &clean, &cl);
        if (r < 0)
                return r;
        info.replaced = r > 0;
        if (info.size > len || cl > max) {
                /* The note's length depends on what is kept: make room for the longest. */
                int nl = snprintf(note, sizeof(note), "\n[truncated: %" PRIu64 " bytes, the first %zu kept]",
                                  info.size, max);
                if (nl < 0 || (size_t) nl >= max)
                        return -EINVAL;
                size_t keep = con_utf8_cut(clean, cl, max - (size_t) nl);
                nl = snprintf(note, sizeof(note), "\n[truncated: %" PRIu64 " bytes, the first %zu kept]",
                              info.size, keep);
                char *cut = malloc(keep + (size_t) nl + 1);
                if (!cut)
                        return -ENOMEM;
                memcpy(cut, clean, keep);
                memcpy(cut + keep, note, (size_t) nl + 1);
                free(clean);
                clean = cut;
                info.truncated = true;
        }
        *ret = TAKE_PTR(clean);
        if (ret_info)
                *ret_info = info;
        return 0;
}

static size_t result_max(AgentTaskStatus st) {
        return st == AGENT_TASK_DONE ? AGENT_QUEUE_RESULT_MAX : AGENT_QUEUE_REASON_MAX;
}

static bool file_exists(int dirfd, const char *id, const char *suffix) {
        char name[CON_TASK_ID_MAX + 32];
        (void) snprintf(name, sizeof(name), "%s%s", id, suffix);
        return faccessat(dirfd, name, F_OK, AT_SYMLINK_NOFOLLOW) >= 0;
}

/* A finished task evicted from memory: its files say it is known. finished/<id>.json is written
 * last by agent_queue_write_files() and eviction requires it; the task files cover older trees. */
bool agent_queue_known_on_disk(AgentQueue *q, const char *id) {
        return file_exists(q->finished_fd, id, ".json") || file_exists(q->processed_fd, id, ".task") ||
                file_exists(q->failed_fd, id, ".task");
}

/* Who holds an id that is not in memory: 1 when a finished task of that id is on disk, with
 * *ret_mine whether it is REQ's sender's (false when its record is missing or unreadable: an older
 * tree, or a damaged file; treated as another sender's), 0 when the id is free. */
static int owner_on_disk(AgentQueue *q, const AgentTaskRequest *req, bool *ret_mine) {
        _cleanup_(agent_task_freep) AgentTask *t = NULL;
        int r = agent_queue_load_finished(q, req->id, &t);
        if (r == -ENOMEM)
                return r;
        if (r >= 0) {
                *ret_mine = agent_task_same_sender(t, req->sender_uid, req->sender);
                return 1;
        }
        if (r == -ENOENT && !agent_queue_known_on_disk(q, req->id))
                return 0;
        *ret_mine = false;
        return 1;
}

int agent_queue_accept(AgentQueue *q, const AgentTaskRequest *req, uint64_t now_usec, AgentTask **ret) {
        _cleanup_free_ char *newid = NULL;
        int r;

        if (req->id) {
                if (!con_task_id_valid(req->id))
                        return -EINVAL;
                /* Ids are scoped by sender (uid and principal): the same sender sending an id again
                 * gets its task back (idempotent), another sender is refused and must pick another
                 * id; it learns nothing of the task that holds it. */
                AgentTask *e = agent_queue_find(q, req->id);
                if (e) {
                        if (!agent_task_same_sender(e, req->sender_uid, req->sender))
                                return -EEXIST;
                        *ret = e;
                        return 1;
                }
                bool mine;
                r = owner_on_disk(q, req, &mine);
                if (r < 0)
                        return r;
                if (r > 0) {
                        if (!mine)
                                return -EEXIST;
                        *ret = NULL;
                        return 2;
                }
        } else
                /* A fresh id never meets a known one (time, pid, counter, 32 random bits), but an id
                 * somebody else chose could: draw again rather than collide. */
                for (unsigned attempt = 0;; attempt++) {
                        newid = mfree(newid);
                        r = con_task_id_new(&newid);
                        if (r < 0)
                                return r;
                        if (!agent_queue_find(q, newid) && !agent_queue_known_on_disk(q, newid))
                                break;
                        if (attempt >= 16)
                                return -EEXIST;
                }
        if (req->priority < 0 || req->priority > CON_TASK_PRIORITY_MAX)
                return -EINVAL;

        _cleanup_(agent_task_freep) AgentTask *t = calloc(1, sizeof(AgentTask));
        if (!t)
                return -ENOMEM;
        t->id = newid ? TAKE_PTR(newid) : strdup(req->id);
        t->sender = strdup(strempty(req->sender));
        t->text = strdup(strempty(req->text));
        t->reply_to = req->reply_to ? strdup(req->reply_to) : NULL;
        t->conversation = req->conversation ? strdup(req->conversation) : NULL;
        t->chain = req->chain ? strdup(req->chain) : NULL;
        if (!t->id || !t->sender || !t->text || (req->reply_to && !t->reply_to) ||
            (req->conversation && !t->conversation) || (req->chain && !t->chain))
                return -ENOMEM;
        t->sender_uid = req->sender_uid;
        t->priority = req->priority;
        t->deadline_usec = req->deadline_usec;
        t->accepted_usec = now_usec;
        t->status = AGENT_TASK_QUEUED;

        r = record_accept(q, t);
        if (r < 0)
                return r;
        r = task_insert(q, t);
        if (r < 0)
                return r;
        AgentTask *tt = TAKE_PTR(t);
        q->n_queued++;
        q->n_records++;
        r = heap_push(q, tt);
        if (r < 0)
                return r;
        *ret = tt;
        return 0;
}

int agent_queue_start(AgentQueue *q, AgentTask *t, uint64_t now_usec) {
        if (t->status != AGENT_TASK_QUEUED)
                return -ESTALE;
        int r = record_start(q, t, now_usec);
        if (r < 0)
                return r;
        q->n_records++;
        if (q->n_heap > 0 && q->heap[0] == t)
                heap_pop(q);
        set_status(q, t, AGENT_TASK_RUNNING);
        t->tries++;
        return 0;
}

int agent_queue_requeue(AgentQueue *q, AgentTask *t) {
        if (t->status != AGENT_TASK_RUNNING)
                return -ESTALE;
        if (t->tries >= AGENT_QUEUE_MAX_TRIES)
                return -ELOOP;
        set_status(q, t, AGENT_TASK_QUEUED);
        return heap_push(q, t);
}

int agent_queue_finish_output(AgentQueue *q, AgentTask *t, AgentTaskStatus st, const char *data, size_t len,
                              uint64_t size, uint64_t now_usec) {
        _cleanup_free_ char *res = NULL;
        AgentResultInfo info;

        if (!agent_task_status_is_final(st))
                return -EINVAL;
        if (agent_task_status_is_final(t->status))
                return -ESTALE;
        int r = agent_result_text(data, len, size, result_max(st), &res, &info);
        if (r < 0)
                return r;
        free(t->result);
        t->result = TAKE_PTR(res);
        t->result_info = info;
        t->finished_usec = now_usec;
        set_status(q, t, st);
        q->n_records++;
        return record_end(q, t);
}

int agent_queue_finish(AgentQueue *q, AgentTask *t, AgentTaskStatus st, const char *result, uint64_t now_usec) {
        size_t l = strlen(strempty(result));
        return agent_queue_finish_output(q, t, st, result, l, l, now_usec);
}

/* ---- replay ---- */

static const char *jstr(const cJSON *j, const char *k) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
        return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A non-negative number below 2^64 (a journal line is hostile input: converting a NaN or a value
 * out of uint64_t's range is undefined). */
static bool jnum(const cJSON *j, const char *k, uint64_t *ret) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble < 0x1p64))
                return false;
        *ret = (uint64_t) v->valuedouble;
        return true;
}

/* The "truncated", "replaced" and "size" of a record, merged into what reading its text found:
 * the record knows what the producer gave. */
static void result_info_from_record(const cJSON *j, AgentResultInfo *i) {
        bool truncated = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "truncated"));
        bool replaced = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "replaced"));
        uint64_t size;

        if (!truncated && !replaced)
                return;
        i->truncated |= truncated;
        i->replaced |= replaced;
        if (jnum(j, "size", &size))
                i->size = size;
}

/* A new task from an "accept" record, or a finished one from a "known" record (the journal after
 * compaction, and finished/<id>.json). */
static int task_from_record(const cJSON *j, const char *id, bool accept, AgentTask **ret) {
        uint64_t u = 0;
        _cleanup_(agent_task_freep) AgentTask *t = calloc(1, sizeof(AgentTask));
        if (!t)
                return -ENOMEM;
        t->id = strdup(id);
        t->sender = strdup(strempty(jstr(j, "sender")));
        if (!t->id || !t->sender)
                return -ENOMEM;
        if (jnum(j, "uid", &u))
                t->sender_uid = (uid_t) u;
        else
                t->sender_uid = (uid_t) -1;
        t->priority = CON_TASK_PRIORITY_DEFAULT;
        if (jnum(j, "prio", &u) && u <= CON_TASK_PRIORITY_MAX)
                t->priority = (int) u;
        (void) jnum(j, "ts", &t->accepted_usec);
        const char *chain = jstr(j, "chain");
        if (chain && *chain && agent_chain_valid(chain) && !(t->chain = strdup(chain)))
                return -ENOMEM;
        if (accept) {
                const char *text = jstr(j, "text"), *rt = jstr(j, "reply_to");
                if (!text)
                        return -EBADMSG;
                t->text = strdup(text);
                if (!t->text)
                        return -ENOMEM;
                if (rt && !(t->reply_to = strdup(rt)))
                        return -ENOMEM;
                const char *conv = jstr(j, "conversation");
                if (conv && con_conversation_id_valid(conv) && !(t->conversation = strdup(conv)))
                        return -ENOMEM;
                (void) jnum(j, "deadline", &t->deadline_usec);
                t->status = AGENT_TASK_QUEUED;
        } else {
                AgentTaskStatus st = agent_task_status_from_string(jstr(j, "status"));
                if (!agent_task_status_is_final(st))
                        return -EBADMSG;
                t->status = st;
                (void) jnum(j, "end", &t->finished_usec);
                /* Valid text whatever the file holds: the reason is sent as a D-Bus string. */
                const char *reason = jstr(j, "reason");
                if (reason) {
                        int r = agent_result_text(reason, strlen(reason), 0, AGENT_QUEUE_REASON_MAX, &t->result,
                                                  &t->result_info);
                        if (r < 0)
                                return r;
                }
                result_info_from_record(j, &t->result_info);
        }
        *ret = TAKE_PTR(t);
        return 0;
}

typedef struct ReplayState {
        AgentQueue *q;
        size_t evict_at;
        uint64_t lineno;        /* of the next line handed over */
} ReplayState;

/* ---- "forget" records at replay ---- */

static int mark_cmp(const void *a, const void *b) {
        return strcmp(((const ForgetMark *) a)->id, ((const ForgetMark *) b)->id);
}

static void mark_free(void *p) {
        ForgetMark *m = p;
        free(m->id);
        free(m);
}

static void forget_marks_free(AgentQueue *q) {
        tdestroy(q->forget_marks, mark_free);
        q->forget_marks = NULL;
}

/* Whether a "forget" record of id comes after line lineno: a record of the id there belongs to a
 * task the retention removed (a later accept of the same id is another task). */
static bool forgotten_after(const AgentQueue *q, const char *id, uint64_t lineno) {
        ForgetMark key = { .id = (char *) id };
        void *p = tfind(&key, &q->forget_marks, mark_cmp);
        return p && lineno < (*(ForgetMark **) p)->line;
}

/* The first pass of replay: the last "forget" record of each id. Only lines naming "forget" are
 * parsed (inside a JSON string a quote is escaped, so a task text rarely makes one match). */
static int scan_forget(char *line, size_t len _unused_, void *userdata) {
        ReplayState *rs = userdata;
        AgentQueue *q = rs->q;
        uint64_t lineno = rs->lineno++;
        if (!strstr(line, "\"forget\""))
                return 0;
        _cleanup_(cJSON_Deletep) cJSON *j = cJSON_Parse(line);
        if (!j || !cJSON_IsObject(j) || !streq_ptr(jstr(j, "op"), "forget"))
                return 0;
        const char *id = jstr(j, "id");
        if (!id || !con_task_id_valid(id))
                return 0; /* counted as corrupt by the second pass */
        ForgetMark key = { .id = (char *) id };
        void *p = tfind(&key, &q->forget_marks, mark_cmp);
        if (p) {
                (*(ForgetMark **) p)->line = lineno;
                return 0;
        }
        _cleanup_free_ ForgetMark *m = calloc(1, sizeof(ForgetMark));
        if (!m || !(m->id = strdup(id)))
                return -ENOMEM;
        m->line = lineno;
        p = tsearch(m, &q->forget_marks, mark_cmp);
        if (!p) {
                free(m->id);
                return -ENOMEM;
        }
        TAKE_PTR(m);
        /* The journal holds removed tasks: compacted at the next idle moment. */
        q->pruned_since_compact = true;
        return 0;
}

/* Returns 0 when applied, -EBADMSG for a malformed record, -ENOMEM. lineno: the record's line number
 * in the journal (the lines the replay handed over, from 0). */
static int replay_line(AgentQueue *q, const char *line, uint64_t lineno) {
        _cleanup_(cJSON_Deletep) cJSON *j = cJSON_Parse(line);
        if (!j || !cJSON_IsObject(j))
                return -EBADMSG;
        if (streq_ptr(jstr(j, "op"), "counters")) {
                /* Written by compaction: the tasks that were evicted before it, for the counters. */
                uint64_t a = 0, d = 0, fl = 0, c = 0;
                if (!jnum(j, "accepted", &a) || !jnum(j, "done", &d) || !jnum(j, "failed", &fl) ||
                    !jnum(j, "cancelled", &c))
                        return -EBADMSG;
                q->n_evicted += a;
                q->n_done += d;
                q->n_failed += fl;
                q->n_cancelled += c;
                return 0;
        }
        const char *op = jstr(j, "op"), *id = jstr(j, "id");
        if (!op || !id || !con_task_id_valid(id))
                return -EBADMSG;
        AgentTask *e = agent_queue_find(q, id);

        if (streq(op, "forget"))
                return 0; /* applied by scan_forget() */
        /* A task the retention removed after this record: not brought back (its files are gone, its
         * id may have been given to a task accepted after the "forget"). Counted, as evicted. */
        bool forgotten = !e && forgotten_after(q, id, lineno);
        if (streq(op, "accept") || streq(op, "known")) {
                /* A live service writes a second accept of an id only once the id is free: its
                 * finished task left memory without a file naming it (past the retention: evicted
                 * at open or at a retention pass's start, its files never written) and without a
                 * "forget" record. The later task, acknowledged last, replaces the finished one
                 * (counted, as evicted). Otherwise the first record wins: a retry (the same id and
                 * sender) is never recorded twice, and an unfinished task is never replaced. */
                bool replace = e && streq(op, "accept") && agent_task_status_is_final(e->status);
                if (e && !replace)
                        return 0;
                if (forgotten) {
                        q->n_evicted++;
                        if (streq(op, "known"))
                                count_final(q, agent_task_status_from_string(jstr(j, "status")));
                        return 0;
                }
                _cleanup_(agent_task_freep) AgentTask *t = NULL;
                int r = task_from_record(j, id, streq(op, "accept"), &t);
                if (r < 0)
                        return r;
                if (replace) {
                        task_remove(q, e);
                        q->n_evicted++;
                        q->pruned_since_compact = true; /* the journal holds a replaced task */
                }
                r = task_insert(q, t);
                if (r < 0)
                        return r;
                AgentTask *tt = TAKE_PTR(t);
                if (tt->status == AGENT_TASK_QUEUED)
                        q->n_queued++;
                else
                        count_final(q, tt->status);
                return 0;
        }
        if (!e && forgotten) {
                if (streq(op, "end"))
                        count_final(q, agent_task_status_from_string(jstr(j, "status")));
                return 0;
        }
        if (!e)
                return -EBADMSG;
        if (streq(op, "start")) {
                if (agent_task_status_is_final(e->status))
                        return 0;
                e->tries++;
                set_status(q, e, AGENT_TASK_RUNNING);
                return 0;
        }
        if (streq(op, "end")) {
                AgentTaskStatus st = agent_task_status_from_string(jstr(j, "status"));
                if (!agent_task_status_is_final(st))
                        return -EBADMSG;
                if (agent_task_status_is_final(e->status))
                        return 0;
                /* Through the same door as a new result: journals written before results were
                 * made valid text may hold split characters or raw bytes. */
                const char *res = strempty(jstr(j, "result"));
                free(e->result);
                e->result = NULL;
                int r = agent_result_text(res, strlen(res), 0, result_max(st), &e->result, &e->result_info);
                if (r < 0)
                        return r;
                result_info_from_record(j, &e->result_info);
                (void) jnum(j, "ts", &e->finished_usec);
                set_status(q, e, st);
                return 0;
        }
        return -EBADMSG;
}

static int replay_one(char *line, size_t len _unused_, void *userdata) {
        ReplayState *rs = userdata;
        AgentQueue *q = rs->q;
        int r = replay_line(q, line, rs->lineno++);
        if (r < 0)
                return r;
        /* Keep the peak low on a long journal: evict in steps, not per line (and when files
         * cannot be written, the tasks stay: do not retry at every line). */
        if (q->n_tasks - q->n_queued - q->n_running > rs->evict_at) {
                (void) evict_to(q, q->keep_finished);
                rs->evict_at = q->n_tasks - q->n_queued - q->n_running + q->keep_finished + 256;
        }
        return 0;
}

static int replay(AgentQueue *q) {
        ReplayState rs = { .q = q, .evict_at = 2 * q->keep_finished + 256 };
        ConJournalReplay st = {};
        /* Two passes: the "forget" records first (a torn last line is cut off by this one), then
         * the records in order, each line numbered the same way. */
        int r = con_journal_replay(q->journal, JOURNAL_LINE_MAX, scan_forget, &rs, &st);
        if (r < 0)
                return r;
        q->torn_tail = st.torn_tail;
        rs.lineno = 0;
        st = (ConJournalReplay) {};
        r = con_journal_replay(q->journal, JOURNAL_LINE_MAX, replay_one, &rs, &st);
        forget_marks_free(q);
        if (r < 0)
                return r;
        q->n_records += st.n_lines;
        q->n_corrupt = st.n_corrupt;
        q->torn_tail |= st.torn_tail;
        return 0;
}

/* After replay: sessions that were running when the previous instance stopped counted a try. */
static int replay_finish(AgentQueue *q, uint64_t now_usec) {
        int r;
        for (size_t i = 0; i < q->n_tasks; i++) {
                AgentTask *t = q->tasks[i];
                if (t->status == AGENT_TASK_RUNNING) {
                        if (t->tries >= AGENT_QUEUE_MAX_TRIES) {
                                char reason[200];
                                (void) snprintf(reason, sizeof(reason),
                                                "the session ended abnormally %u times (the service stopped or "
                                                "crashed while it ran); not retried again", t->tries);
                                r = agent_queue_finish(q, t, AGENT_TASK_FAILED, reason, now_usec);
                                if (r < 0)
                                        return r;
                                continue;
                        }
                        set_status(q, t, AGENT_TASK_QUEUED);
                }
                if (t->status == AGENT_TASK_QUEUED) {
                        r = heap_push(q, t);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

/* Only what the service itself wrote is trusted: its own user's, not writable by group or others
 * (an ACL's write entries show in the group bits), one link. Sessions run as another user. */
static bool owned_by_service(const struct stat *st) {
        return st->st_uid == geteuid() && !(st->st_mode & 022) && (S_ISDIR(st->st_mode) || st->st_nlink == 1);
}

static int open_subdir(int dirfd, const char *name) {
        struct stat st;
        if (mkdirat(dirfd, name, 0700) < 0 && errno != EEXIST)
                return -errno;
        _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!owned_by_service(&st))
                return -EPERM;
        return TAKE_FD(fd);
}

static int take_lock(int fd, uint64_t timeout_usec) {
        uint64_t waited = 0;
        for (;;) {
                if (flock(fd, LOCK_EX | LOCK_NB) >= 0)
                        return 0;
                if (errno != EWOULDBLOCK && errno != EINTR)
                        return -errno;
                if (waited >= timeout_usec)
                        return -EWOULDBLOCK;
                (void) usleep(20 * 1000);
                waited += 20 * USEC_PER_MSEC;
        }
}

int agent_queue_open(int agent_dir_fd, uint64_t lock_timeout_usec, AgentQueue **ret) {
        return agent_queue_open_retained(agent_dir_fd, lock_timeout_usec, 0, ret);
}

int agent_queue_open_retained(int agent_dir_fd, uint64_t lock_timeout_usec, uint64_t retention_usec,
                              AgentQueue **ret) {
        _cleanup_(agent_queue_freep) AgentQueue *q = calloc(1, sizeof(AgentQueue));
        if (!q)
                return -ENOMEM;
        q->queue_fd = q->outbox_fd = q->processed_fd = q->failed_fd = q->finished_fd = q->lock_fd = -EBADF;
        q->compact_threshold = DEFAULT_COMPACT_THRESHOLD;
        q->euid = geteuid();
        q->keep_finished = AGENT_QUEUE_KEEP_FINISHED;
        q->prune_senders_max = PRUNE_SENDERS_MAX;
        q->prune_round_max = PRUNE_ROUND_MAX;
        q->retention_usec = retention_usec;
        q->agent_dir_fd = fcntl(agent_dir_fd, F_DUPFD_CLOEXEC, 3);
        if (q->agent_dir_fd < 0)
                return -errno;

        if ((q->queue_fd = open_subdir(agent_dir_fd, "queue")) < 0)
                return q->queue_fd;
        if ((q->outbox_fd = open_subdir(agent_dir_fd, "outbox")) < 0)
                return q->outbox_fd;
        if ((q->processed_fd = open_subdir(agent_dir_fd, "processed")) < 0)
                return q->processed_fd;
        if ((q->failed_fd = open_subdir(agent_dir_fd, "failed")) < 0)
                return q->failed_fd;
        if ((q->finished_fd = open_subdir(q->queue_fd, FINISHED_DIR)) < 0)
                return q->finished_fd;

        /* The lock lives in its own file: compaction replaces the journal's inode. */
        q->lock_fd = openat(q->queue_fd, LOCK_NAME, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (q->lock_fd < 0)
                return -errno;
        int r = take_lock(q->lock_fd, lock_timeout_usec);
        if (r < 0)
                return r;

        /* This instance is now the folders' one writer: temp files and a half-written compacted
         * journal left by an instance killed mid-write go (test-chaos checks none is left). */
        const int dirs[] = { q->queue_fd, q->finished_fd, q->outbox_fd, q->processed_fd, q->failed_fd };
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                r = con_spool_remove_temps(dirs[i]);
                if (r < 0)
                        return r;
        }

        /* A journal someone else could have written is never replayed: it is kept aside for
         * inspection (a session runs as another user). */
        r = con_journal_open(q->queue_fd, JOURNAL_NAME, &q->journal, &q->untrusted_journal);
        if (r < 0)
                return r;
        r = replay(q);
        if (r < 0)
                return r;
        r = replay_finish(q, con_now(CLOCK_REALTIME));
        if (r < 0)
                return r;
        /* Tasks failed by replay_finish() have their end record in the batch: the first commit,
         * then agent_queue_evict(), deal with them. */
        if (!con_journal_has_batch(q->journal)) {
                uint64_t now = con_now(CLOCK_REALTIME);
                (void) evict_some(q, q->keep_finished,
                                  retention_usec > 0 && now > retention_usec ? now - retention_usec : 0);
        }
        *ret = TAKE_PTR(q);
        return 0;
}

/* ---- compaction ---- */

bool agent_queue_want_compact(const AgentQueue *q) {
        return q->n_queued == 0 && q->n_running == 0 && !con_journal_has_batch(q->journal) &&
                (con_journal_size(q->journal) > q->compact_threshold || q->pruned_since_compact);
}

static int write_compacted(FILE *f, void *userdata) {
        AgentQueue *q = userdata;
        if (q->n_evicted > 0) {
                uint64_t d = q->n_done, fl = q->n_failed, c = q->n_cancelled;
                for (size_t i = 0; i < q->n_tasks; i++) {
                        AgentTaskStatus st = q->tasks[i]->status;
                        d -= st == AGENT_TASK_DONE;
                        fl -= st == AGENT_TASK_FAILED;
                        c -= st == AGENT_TASK_CANCELLED;
                }
                _cleanup_free_ char *s = NULL;
                if (asprintf(&s, "{\"op\":\"counters\",\"accepted\":%llu,\"done\":%llu,\"failed\":%llu,"
                             "\"cancelled\":%llu}", (unsigned long long) q->n_evicted, (unsigned long long) d,
                             (unsigned long long) fl, (unsigned long long) c) < 0)
                        return -ENOMEM;
                int r = con_journal_put(f, s);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < q->n_tasks; i++) {
                _cleanup_(cJSON_Deletep) cJSON *j = record_known(q->tasks[i]);
                if (!j)
                        return -ENOMEM;
                _cleanup_free_ char *s = cJSON_PrintUnformatted(j);
                if (!s)
                        return -ENOMEM;
                int r = con_journal_put(f, s);
                if (r < 0)
                        return r;
        }
        return 0;
}

int agent_queue_compact(AgentQueue *q) {
        if (q->n_queued > 0 || q->n_running > 0 || con_journal_has_batch(q->journal))
                return -EBUSY;

        /* The journal is about to forget the evicted tasks: their files in finished/, outbox/,
         * processed/ and failed/ (written without fsync) become the only record of them. */
        if (q->n_evicted > 0 && syncfs(q->finished_fd) < 0)
                return -errno;
        int r = con_journal_rewrite(q->journal, write_compacted, q);
        if (r < 0)
                return r;
        q->n_records = q->n_tasks + (q->n_evicted > 0);
        q->pruned_since_compact = false;

        /* Texts and responses now live only in processed/ and outbox/. */
        for (size_t i = 0; i < q->n_tasks; i++) {
                AgentTask *t = q->tasks[i];
                t->text = mfree(t->text);
                free(t->reply_to);
                t->reply_to = NULL;
                t->conversation = mfree(t->conversation);
                if (t->status == AGENT_TASK_DONE)
                        t->result = mfree(t->result);
        }
        return 1;
}

/* ---- derived files ---- */

/* Root-owned (the service's), 0600, readable by the task's sender through its own ACL entry.
 * With check, a file that exists already is left alone without writing a temp file first. */
static int write_new_file(AgentQueue *q, int dirfd, const char *id, const char *suffix, const char *data,
                          uid_t reader, bool check) {
        char name[CON_TASK_ID_MAX + 32];
        (void) snprintf(name, sizeof(name), "%s%s", id, suffix);
        if (check && faccessat(dirfd, name, F_OK, AT_SYMLINK_NOFOLLOW) >= 0)
                return 0;
        ConSpoolWrite o = {
                .mode = 0600,
                .uid = (uid_t) -1,
                .gid = (gid_t) -1,
                .sync = false,
                .noreplace = true,
                .reader = reader == q->euid ? (uid_t) -1 : reader,
        };
        int r = con_spool_write(dirfd, name, data, strlen(data), &o);
        return r == -EEXIST ? 0 : r;
}

static int format_task(const AgentTask *t, char **ret) {
        ConTask ct = {
                .meta = {
                        .priority = t->priority,
                        .reply_to = t->reply_to,
                        .deadline_usec = t->deadline_usec,
                        .conversation = t->conversation,
                },
                .text = t->text,
                .text_len = strlen(t->text),
        };
        size_t l;
        return con_task_format(&ct, ret, &l);
}

/* finished/<id>.json: the "known" record of the task, the submitter's uid included (GetResult
 * authorizes with it after eviction). Written last: its presence means the other files exist. */
static int write_finished_file(AgentQueue *q, const AgentTask *t, bool check) {
        /* After replay and on every retry most records exist: do not build them for nothing. */
        if (check && file_exists(q->finished_fd, t->id, ".json"))
                return 0;
        _cleanup_(cJSON_Deletep) cJSON *j = record_known(t);
        if (!j)
                return -ENOMEM;
        _cleanup_free_ char *s = cJSON_PrintUnformatted(j);
        if (!s)
                return -ENOMEM;
        _cleanup_free_ char *line = NULL;
        if (asprintf(&line, "%s\n", s) < 0)
                return -ENOMEM;
        int r = write_new_file(q, q->finished_fd, t->id, ".json", line, (uid_t) -1, check);
        if (r < 0 || !check || t->finished_usec == 0)
                return r;
        /* Regenerated: the retention counts from when the task finished, not from now. */
        char name[CON_TASK_ID_MAX + 32];
        (void) snprintf(name, sizeof(name), "%s.json", t->id);
        struct timespec ts = { .tv_sec = (time_t) (t->finished_usec / USEC_PER_SEC),
                               .tv_nsec = (long) (t->finished_usec % USEC_PER_SEC) * 1000 };
        (void) utimensat(q->finished_fd, name, (const struct timespec[2]) { ts, ts }, AT_SYMLINK_NOFOLLOW);
        return 0;
}

static int write_task_files(AgentQueue *q, const AgentTask *t, bool check) {
        _cleanup_free_ char *formatted = NULL;
        int r;

        if (!agent_task_status_is_final(t->status))
                return 0;
        if (t->text) {
                r = format_task(t, &formatted);
                if (r < 0)
                        return r;
        }
        if (t->status == AGENT_TASK_DONE) {
                if (t->result) {
                        r = write_new_file(q, q->outbox_fd, t->id, ".response", t->result, t->sender_uid, check);
                        if (r < 0)
                                return r;
                }
                if (formatted)
                        return write_new_file(q, q->processed_fd, t->id, ".task", formatted, t->sender_uid, check);
                return 0;
        }
        if (formatted) {
                r = write_new_file(q, q->failed_fd, t->id, ".task", formatted, t->sender_uid, check);
                if (r < 0)
                        return r;
        }
        _cleanup_free_ char *reason = NULL;
        if (asprintf(&reason, "%s\n", strempty(t->result)) < 0)
                return -ENOMEM;
        return write_new_file(q, q->failed_fd, t->id, ".reason", reason, t->sender_uid, check);
}

static bool expired(const AgentQueue *q, const AgentTask *t) {
        if (q->retention_usec == 0 || t->finished_usec == 0)
                return false;
        uint64_t now = con_now(CLOCK_REALTIME);
        return now > q->retention_usec && t->finished_usec < now - q->retention_usec;
}

static int write_files(AgentQueue *q, AgentTask *t, bool check) {
        if (!agent_task_status_is_final(t->status))
                return 0;
        if (t->files_written)
                return 0;
        /* Past the retention (replayed from a journal not compacted since): its files were removed
         * or are about to be; never written again. */
        if (expired(q, t))
                return 0;
        int r = write_task_files(q, t, check);
        if (r < 0)
                return r;
        /* Last: its presence means the other files exist. */
        r = write_finished_file(q, t, check);
        if (r < 0)
                return r;
        t->files_written = true;
        return 0;
}

int agent_queue_write_files(AgentQueue *q, AgentTask *t) {
        return write_files(q, t, true);
}

int agent_queue_write_new_files(AgentQueue *q, AgentTask *t) {
        return write_files(q, t, false);
}

int agent_queue_write_all_files(AgentQueue *q) {
        int ret = 0;
        for (size_t i = 0; i < q->n_tasks; i++) {
                int r = agent_queue_write_files(q, q->tasks[i]);
                if (r < 0 && ret == 0)
                        ret = r;
        }
        return ret;
}

int agent_queue_read_result(AgentQueue *q, const AgentTask *t, char **ret, AgentResultInfo *ret_info) {
        if (t->result || t->status != AGENT_TASK_DONE) {
                char *s = strdup(strempty(t->result));
                if (!s)
                        return -ENOMEM;
                *ret = s;
                if (ret_info) {
                        *ret_info = t->result_info;
                        if (!t->result_info.truncated && !t->result_info.replaced)
                                ret_info->size = strlen(s);
                }
                return 0;
        }
        char name[CON_TASK_ID_MAX + 32];
        (void) snprintf(name, sizeof(name), "%s.response", t->id);
        _cleanup_close_ int fd = openat(q->outbox_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        struct stat st;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        if (!owned_by_service(&st))
                return -EPERM; /* not written by the service: never served as a result */
        /* Whatever the file holds (a response of an older version), at most
         * AGENT_QUEUE_RESULT_MAX bytes of valid text come out. */
        size_t sz = (uint64_t) st.st_size < AGENT_QUEUE_RESULT_MAX ? (size_t) st.st_size : AGENT_QUEUE_RESULT_MAX;
        _cleanup_free_ char *buf = malloc(sz + 1);
        if (!buf)
                return -ENOMEM;
        ssize_t got = con_read_full(fd, buf, sz);
        if (got < 0)
                return (int) got;
        AgentResultInfo info;
        int r = agent_result_text(buf, (size_t) got, (uint64_t) st.st_size, AGENT_QUEUE_RESULT_MAX, ret, &info);
        if (r < 0)
                return r;
        if (ret_info) {
                /* What the known record says about the producer's output wins over the file. */
                if (t->result_info.truncated || t->result_info.replaced) {
                        info.truncated |= t->result_info.truncated;
                        info.replaced |= t->result_info.replaced;
                        info.size = t->result_info.size;
                }
                *ret_info = info;
        }
        return 0;
}

/* ---- eviction ---- */

/* Frees the oldest finished tasks (arrival order) beyond keep, once their files (finished/<id>.json
 * last) are on disk; a task whose files cannot be written stays. Returns how many went. */
static size_t evict_some(AgentQueue *q, size_t keep, uint64_t before_usec) {
        size_t n_final = q->n_tasks - q->n_queued - q->n_running;
        if (n_final <= keep && before_usec == 0)
                return 0;
        size_t excess = n_final > keep ? n_final - keep : 0, evicted = 0, j = 0;

        /* The heap may still point at finished tasks (dropped lazily): not after this. */
        heap_purge(q);
        for (size_t i = 0; i < q->n_tasks; i++) {
                AgentTask *t = q->tasks[i];
                bool old = before_usec > 0 && t->finished_usec > 0 && t->finished_usec < before_usec;
                if ((evicted < excess || old) && agent_task_status_is_final(t->status) &&
                    agent_queue_write_files(q, t) >= 0) {
                        (void) tdelete(t, &q->index, task_cmp);
                        agent_task_free(t);
                        evicted++;
                        continue;
                }
                q->tasks[j++] = t;
        }
        q->n_tasks = j;
        q->n_evicted += evicted;
        if (q->n_tasks_alloc > 256 && q->n_tasks < q->n_tasks_alloc / 4) {
                size_t n = max_size(q->n_tasks * 2, 64);
                AgentTask **a = reallocarray(q->tasks, n, sizeof(AgentTask *));
                if (a) {
                        q->tasks = a;
                        q->n_tasks_alloc = n;
                }
        }
        return evicted;
}

size_t agent_queue_evict(AgentQueue *q) {
        if (con_journal_has_batch(q->journal))
                return 0; /* finished tasks whose end is not on disk yet must not go */
        return evict_to(q, q->keep_finished);
}

size_t agent_queue_evict_before(AgentQueue *q, uint64_t before_usec) {
        if (con_journal_has_batch(q->journal) || before_usec == 0)
                return 0;
        return evict_some(q, q->keep_finished, before_usec);
}

/* ---- retention ---- */

static void prune_entry_done(PruneEntry *e) {
        e->id = mfree(e->id);
}

static void prune_sender_free(void *p) {
        PruneSender *s = p;
        if (!s)
                return;
        for (size_t i = 0; i < s->n_sel; i++)
                prune_entry_done(&s->sel[i]);
        free(s->sel);
        free(s->principal);
        free(s);
}

static void prune_sender_freep(PruneSender **s) {
        prune_sender_free(*s);
}

static int prune_sender_cmp(const void *a, const void *b) {
        const PruneSender *x = a, *y = b;
        if (x->uid != y->uid)
                return x->uid < y->uid ? -1 : 1;
        return strcmp(x->principal, y->principal);
}

/* The senders and picks of a round. */
static void prune_round_reset(AgentQueue *q) {
        tdestroy(q->prune_index, noop_free);
        q->prune_index = NULL;
        for (size_t i = 0; i < q->n_prune_senders; i++)
                prune_sender_free(q->prune_senders[i]);
        q->prune_senders = mfree(q->prune_senders);
        q->n_prune_senders = q->prune_senders_alloc = 0;
        q->prune_overflow = NULL; /* one of prune_senders */
        for (size_t i = 0; i < q->n_prune_sel; i++)
                prune_entry_done(&q->prune_sel[i]);
        q->prune_sel = mfree(q->prune_sel);
        q->n_prune_sel = q->prune_pos = 0;
        q->prune_more = false;
}

static void prune_reset(AgentQueue *q) {
        if (q->prune_dir) {
                closedir(q->prune_dir);
                q->prune_dir = NULL;
        }
        prune_round_reset(q);
        q->prune_phase = PRUNE_AGE;
        q->prune_n_live = 0;
}

/* Removes a finished task's files, its record last: while the record exists the task is known
 * (GetResult, dedup), so a failure in between leaves a record that the next pass removes again,
 * never files without one. unlinkat() removes a symbolic link, never what it points to. */
static int remove_task_files(AgentQueue *q, const char *id) {
        const struct {
                int fd;
                const char *suffix;
        } files[] = {
                { q->outbox_fd, ".response" },
                { q->processed_fd, ".task" },
                { q->failed_fd, ".task" },
                { q->failed_fd, ".reason" },
                { q->finished_fd, ".json" },
        };
        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                char name[CON_TASK_ID_MAX + 32];
                (void) snprintf(name, sizeof(name), "%s%s", id, files[i].suffix);
                if (unlinkat(files[i].fd, name, 0) < 0 && errno != ENOENT)
                        return -errno;
        }
        return 0;
}

/* Called by agent_queue_commit() once the "forget" records are durable. A task whose files
 * cannot all be removed keeps its record: the next pass forgets it again. Counts both. */
static void remove_forgotten_files(AgentQueue *q) {
        for (size_t i = 0; i < q->n_forget_ids; i++) {
                int r = remove_task_files(q, q->forget_ids[i]);
                if (r < 0) {
                        q->prune_n_failed++;
                        if (q->prune_error == 0)
                                q->prune_error = r;
                } else
                        q->prune_n_removed++;
                free(q->forget_ids[i]);
        }
        q->n_forget_ids = 0;
}

/* A task the retention removes: a "forget" record goes into the batch, and its files go only after
 * agent_queue_commit() made that record durable. Until then the id stays taken (its record in
 * queue/finished/ exists); after, a restart before the next compaction does not bring the task
 * back, nor drop a task accepted with the same id after it (replay keeps the records after the
 * last "forget" of an id). */
static int forget_task(AgentQueue *q, const char *id) {
        if (GROW_ONE(q->forget_ids, q->n_forget_ids, q->forget_ids_alloc) < 0)
                return -ENOMEM;
        _cleanup_free_ char *copy = strdup(id);
        if (!copy)
                return -ENOMEM;
        int r = record_forget(q, id, con_now(CLOCK_REALTIME));
        if (r < 0)
                return r;
        q->forget_ids[q->n_forget_ids++] = TAKE_PTR(copy);
        q->pruned_since_compact = true;
        return 0;
}

/* The next entry of queue/finished/: 1 for a record (its id and mtime), 2 for anything else (a
 * dot file is not counted in *work), 0 at the end of the folder. */
static int prune_next(AgentQueue *q, char id[static CON_TASK_ID_MAX + 1], uint64_t *ret_mtime, size_t *work) {
        errno = 0;
        struct dirent *de = readdir(q->prune_dir);
        if (!de)
                return errno != 0 ? -errno : 0;
        if (de->d_name[0] == '.')
                return 2;
        (*work)++;
        const char *e = endswith(de->d_name, ".json");
        size_t l = e ? (size_t) (e - de->d_name) : 0;
        if (l == 0 || l > CON_TASK_ID_MAX)
                return 2;
        memcpy(id, de->d_name, l);
        id[l] = 0;
        if (!con_task_id_valid(id))
                return 2;
        struct stat st;
        if (fstatat(q->finished_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
                return 2;
        *ret_mtime = (uint64_t) st.st_mtim.tv_sec * USEC_PER_SEC + (uint64_t) st.st_mtim.tv_nsec / 1000;
        return 1;
}

/* The sender a record counts for: from memory (a pinned task: never removed) or from its record;
 * an unreadable record, and with CREATE false or beyond PRUNE_SENDERS_MAX a sender not met yet,
 * counts for the overflow bucket (NULL when CREATE is false and it has none). */
static int prune_sender_of(AgentQueue *q, const char *id, bool create, PruneSender **ret, bool *ret_pinned) {
        _cleanup_(agent_task_freep) AgentTask *loaded = NULL;
        AgentTask *t = agent_queue_find(q, id);
        *ret_pinned = t != NULL;
        if (!t) {
                int r = agent_queue_load_finished(q, id, &loaded);
                if (r == -ENOMEM)
                        return r;
                t = loaded;
        }
        if (t) {
                PruneSender key = { .uid = t->sender_uid, .principal = (char *) strempty(t->sender) };
                void *p = tfind(&key, &q->prune_index, prune_sender_cmp);
                if (p) {
                        *ret = *(PruneSender **) p;
                        return 0;
                }
        }
        bool overflow = !t || !create || q->n_prune_senders >= q->prune_senders_max;
        if (overflow && (q->prune_overflow || !create)) {
                *ret = q->prune_overflow;
                return 0;
        }
        if (GROW_ONE(q->prune_senders, q->n_prune_senders, q->prune_senders_alloc) < 0)
                return -ENOMEM;
        _cleanup_(prune_sender_freep) PruneSender *s = calloc(1, sizeof(PruneSender));
        if (!s)
                return -ENOMEM;
        s->uid = overflow ? (uid_t) -1 : t->sender_uid;
        s->principal = strdup(overflow ? "" : strempty(t->sender));
        if (!s->principal)
                return -ENOMEM;
        if (!overflow) {
                void *p = tsearch(s, &q->prune_index, prune_sender_cmp);
                if (!p)
                        return -ENOMEM;
        } else
                q->prune_overflow = s;
        q->prune_senders[q->n_prune_senders++] = s;
        *ret = TAKE_PTR(s);
        return 0;
}

/* Newer: a later mtime, then the id (a total order: the same records go whatever the listing order). */
static bool prune_newer(const PruneEntry *a, uint64_t mtime, const char *id) {
        if (a->mtime_usec != mtime)
                return a->mtime_usec > mtime;
        return strcmp(a->id, id) > 0;
}

static void prune_heap_down(PruneEntry *h, size_t n, size_t i) {
        for (;;) {
                size_t l = 2 * i + 1, r = l + 1, m = i;
                if (l < n && prune_newer(&h[l], h[m].mtime_usec, h[m].id))
                        m = l;
                if (r < n && prune_newer(&h[r], h[m].mtime_usec, h[m].id))
                        m = r;
                if (m == i)
                        return;
                PruneEntry t = h[i];
                h[i] = h[m];
                h[m] = t;
                i = m;
        }
}

/* Keeps the record when it is among the sender's REMOVE oldest seen so far. */
static int prune_pick(PruneSender *s, const char *id, uint64_t mtime) {
        if (s->n_sel == s->remove && !prune_newer(&s->sel[0], mtime, id))
                return 0;
        char *copy = strdup(id);
        if (!copy)
                return -ENOMEM;
        if (s->n_sel == s->remove) {
                /* Replaces the newest picked. */
                free(s->sel[0].id);
                s->sel[0] = (PruneEntry) { .id = copy, .mtime_usec = mtime };
                prune_heap_down(s->sel, s->n_sel, 0);
                return 0;
        }
        size_t i = s->n_sel++;
        s->sel[i] = (PruneEntry) { .id = copy, .mtime_usec = mtime };
        while (i > 0 && prune_newer(&s->sel[i], s->sel[(i - 1) / 2].mtime_usec, s->sel[(i - 1) / 2].id)) {
                PruneEntry t = s->sel[i];
                s->sel[i] = s->sel[(i - 1) / 2];
                s->sel[(i - 1) / 2] = t;
                i = (i - 1) / 2;
        }
        return 0;
}

/* Fewest records first; between equals, the one whose oldest record is the newest (so the oldest
 * record goes first), then by uid and principal (the same order whatever the listing's). */
static int cmp_sender_fewest(const void *a, const void *b) {
        const PruneSender *x = *(PruneSender * const *) a, *y = *(PruneSender * const *) b;
        if (x->n != y->n)
                return x->n < y->n ? -1 : 1;
        if (x->oldest_usec != y->oldest_usec)
                return x->oldest_usec > y->oldest_usec ? -1 : 1;
        return prune_sender_cmp(x, y);
}

static int cmp_sender_most_removed(const void *a, const void *b) {
        const PruneSender *x = *(PruneSender * const *) a, *y = *(PruneSender * const *) b;
        return x->remove > y->remove ? -1 : x->remove < y->remove;
}

/* The fair share of keep: senders with fewer records than an equal share keep them all, what they
 * leave is shared by the others (max-min fairness), so the sender holding the most loses records
 * first and a flood from one sender removes only its own. Sets each sender's remove (never a
 * record in memory), at most PRUNE_ROUND_MAX in all, taken from those with the most to remove
 * first; returns the total. */
static size_t prune_allocate(AgentQueue *q, size_t keep) {
        size_t m = q->n_prune_senders, left = keep, total = 0;
        if (m == 0)
                return 0;
        qsort(q->prune_senders, m, sizeof(PruneSender *), cmp_sender_fewest);
        for (size_t i = 0; i < m; i++) {
                PruneSender *s = q->prune_senders[i];
                /* Rounded up: what does not divide goes to the smaller senders, never to the largest. */
                size_t share = (left + (m - i) - 1) / (m - i), quota = s->n < share ? s->n : share;
                left -= quota;
                size_t over = s->n - quota, removable = s->n - (s->n_pinned < s->n ? s->n_pinned : s->n);
                s->remove = over < removable ? over : removable;
        }
        qsort(q->prune_senders, m, sizeof(PruneSender *), cmp_sender_most_removed);
        for (size_t i = 0; i < m; i++) {
                PruneSender *s = q->prune_senders[i];
                if (total + s->remove > q->prune_round_max) {
                        s->remove = q->prune_round_max - total;
                        q->prune_more = true;
                }
                total += s->remove;
        }
        return total;
}

/* The end of a scan of queue/finished/: on to the next phase, or the pass ends (returns 0). */
static int prune_scan_end(AgentQueue *q, size_t keep) {
        if (q->prune_phase == PRUNE_AGE && q->prune_n_live <= keep)
                return 0;
        if (q->prune_phase == PRUNE_AGE || q->prune_phase == PRUNE_COUNT) {
                if (q->prune_phase == PRUNE_COUNT) {
                        size_t total = prune_allocate(q, keep);
                        if (total == 0)
                                return 0;
                        for (size_t i = 0; i < q->n_prune_senders; i++) {
                                PruneSender *s = q->prune_senders[i];
                                if (s->remove > 0 && !(s->sel = calloc(s->remove, sizeof(PruneEntry))))
                                        return -ENOMEM;
                        }
                }
                q->prune_phase = q->prune_phase == PRUNE_AGE ? PRUNE_COUNT : PRUNE_SELECT;
                rewinddir(q->prune_dir);
                return 1;
        }
        /* SELECT: the picks of every sender, to remove. */
        size_t n = 0;
        for (size_t i = 0; i < q->n_prune_senders; i++)
                n += q->prune_senders[i]->n_sel;
        q->prune_sel = calloc(max_size(n, 1), sizeof(PruneEntry));
        if (!q->prune_sel)
                return -ENOMEM;
        for (size_t i = 0; i < q->n_prune_senders; i++) {
                PruneSender *s = q->prune_senders[i];
                if (s->n_sel > 0)
                        memcpy(q->prune_sel + q->n_prune_sel, s->sel, s->n_sel * sizeof(PruneEntry));
                q->n_prune_sel += s->n_sel;
                s->sel = mfree(s->sel);
                s->n_sel = 0;
        }
        q->prune_phase = PRUNE_REMOVE;
        q->prune_pos = 0;
        return 1;
}

int agent_queue_prune(AgentQueue *q, uint64_t older_than_usec, size_t keep, size_t budget, size_t *ret_removed) {
        size_t work = 0;
        int r = 0;

        if (budget == 0)
                budget = 1;
        q->prune_n_removed = 0;
        if (!q->prune_dir) {
                prune_reset(q);
                r = con_opendir_dup(q->finished_fd, &q->prune_dir);
                if (r < 0)
                        goto finish;
        }
        while (work < budget) {
                char id[CON_TASK_ID_MAX + 1];
                uint64_t mtime = 0;
                bool pinned = false;
                PruneSender *s = NULL;

                if (q->prune_phase == PRUNE_REMOVE) {
                        if (q->prune_pos >= q->n_prune_sel) {
                                /* The round is done; another while more must go for the count. */
                                if (!q->prune_more) {
                                        r = 0;
                                        goto finish;
                                }
                                prune_round_reset(q);
                                q->prune_phase = PRUNE_COUNT;
                                rewinddir(q->prune_dir);
                                r = 1;
                                goto finish;
                        }
                        const PruneEntry *p = &q->prune_sel[q->prune_pos++];
                        work++;
                        if (agent_queue_find(q, p->id))
                                continue;
                        r = forget_task(q, p->id);
                        if (r < 0)
                                goto finish;
                        continue;
                }
                r = prune_next(q, id, &mtime, &work);
                if (r < 0)
                        goto finish;
                if (r == 0) {
                        /* A scan ended: this step ends too, so the next scan finds none of the files
                         * this one removed (they go with the commit below). */
                        r = prune_scan_end(q, keep);
                        goto finish;
                }
                if (r == 2)
                        continue;
                switch (q->prune_phase) {
                case PRUNE_AGE:
                        if (!agent_queue_find(q, id) && older_than_usec > 0 && mtime < older_than_usec) {
                                r = forget_task(q, id);
                                if (r < 0)
                                        goto finish;
                        } else
                                q->prune_n_live++;
                        break;
                case PRUNE_COUNT:
                        r = prune_sender_of(q, id, true, &s, &pinned);
                        if (r < 0)
                                goto finish;
                        if (s->n == 0 || mtime < s->oldest_usec)
                                s->oldest_usec = mtime;
                        s->n++;
                        s->n_pinned += pinned;
                        break;
                case PRUNE_SELECT:
                        r = prune_sender_of(q, id, false, &s, &pinned);
                        if (r >= 0 && s && !pinned && s->remove > 0)
                                r = prune_pick(s, id, mtime);
                        if (r < 0)
                                goto finish;
                        break;
                default:
                        break;
                }
        }
        r = 1;
finish:
        /* The "forget" records of this step (and whatever else the batch holds) made durable with one
         * commit, then the files go. */
        if (q->n_forget_ids > 0) {
                int k = agent_queue_commit(q);
                if (k < 0 && r >= 0)
                        r = k;
        }
        if (r <= 0)
                prune_reset(q); /* the pass ended, or starts over */
        if (ret_removed)
                *ret_removed = q->prune_n_removed;
        q->prune_n_removed = 0;
        return r;
}

size_t agent_queue_prune_failures(AgentQueue *q, int *ret_error) {
        size_t n = q->prune_n_failed;
        if (ret_error)
                *ret_error = q->prune_error;
        q->prune_n_failed = 0;
        q->prune_error = 0;
        return n;
}

int agent_queue_load_finished(AgentQueue *q, const char *id, AgentTask **ret) {
        if (!con_task_id_valid(id))
                return -EINVAL;
        char name[CON_TASK_ID_MAX + 32];
        (void) snprintf(name, sizeof(name), "%s.json", id);
        _cleanup_close_ int fd = openat(q->finished_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        struct stat st;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || st.st_size > FINISHED_FILE_MAX)
                return -EBADMSG;
        if (!owned_by_service(&st))
                return -EPERM;
        _cleanup_free_ char *buf = malloc((size_t) st.st_size + 1);
        if (!buf)
                return -ENOMEM;
        ssize_t got = con_read_full(fd, buf, (size_t) st.st_size);
        if (got < 0)
                return (int) got;
        buf[got] = 0;
        _cleanup_(cJSON_Deletep) cJSON *j = cJSON_Parse(buf);
        if (!j || !cJSON_IsObject(j) || !streq_ptr(jstr(j, "op"), "known") || !streq_ptr(jstr(j, "id"), id))
                return -EBADMSG;
        return task_from_record(j, id, false, ret);
}
