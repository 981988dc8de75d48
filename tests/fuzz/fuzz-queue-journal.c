/* SPDX-License-Identifier: MIT */
/* The agent queue's journal (services/agentd/agent-queue.h) as the input: its bytes are
 * queue/journal of a queue folder, which agent_queue_open() replays (accept, start, end, known,
 * counters and forget records, a torn last line, anything else). Checks: the queue's counts agree
 * with its tasks; no task in memory is one a "forget" record removed (an oracle written here reads
 * the lines independently: a task whose id has a forget record must have an accept or known record
 * after the last one); replaying again gives the same finished tasks, and so does replaying the
 * compacted journal; and a model of replay's rules, written here from the records alone, gives each
 * id's task (present or not, from which record: its sender and uid, whether finished), a second
 * accept of an id whose task finished replacing it. */
/* The checks below are the point of the target: keep them in every build type. */
#undef NDEBUG
#include <assert.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent-queue.h"
#include "fuzz-util.h"
#include "macro.h"
#include "task.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A record of the input that names an id, as the oracle reads it. */
typedef enum OracleOp {
        ORACLE_FORGET,
        ORACLE_ACCEPT,          /* with a text: a task can come of it */
        ORACLE_KNOWN,           /* with a final status */
        ORACLE_END,             /* with a final status */
        ORACLE_OTHER,           /* an accept or known record replay refuses */
} OracleOp;

typedef struct OracleRecord {
        char id[CON_TASK_ID_MAX + 1];
        uint64_t line;          /* among the lines replay hands over: complete, without NUL */
        OracleOp op;
        bool forget;            /* a forget record replay's first pass sees (its raw line names "forget") */
        int64_t uid;            /* of an accept or known record with a plain uid, else -1 */
        char *sender;           /* of an accept or known record: its "sender" string, or "" */
} OracleRecord;

/* What the oracle expects of an id after replay: present (its task in memory, unless evicted) and
 * from which record, by these rules (docs/AGENT.md "Replay"): records of an id before its last
 * forget are skipped; the first accept or known record after it makes the task; an end record
 * finishes it; an accept of an id whose task is finished replaces that task (a live service writes
 * it only once the id was freed); any other record of a present id changes nothing. */
typedef struct OracleTask {
        const OracleRecord *from;
        bool final;
} OracleTask;

typedef struct Finished {
        char *id;
        AgentTaskStatus status;
        uid_t uid;
} Finished;

static int queue_dir(void) {
        static int dfd = -1;
        if (dfd < 0)
                dfd = fuzz_subdir_dfd("agent");
        return dfd;
}

static OracleRecord *oracle_read(const char *s, size_t n, size_t *ret_n) {
        OracleRecord *recs = NULL;
        size_t nrecs = 0;
        uint64_t line = 0;
        for (size_t i = 0; i < n;) {
                const char *nl = memchr(s + i, '\n', n - i);
                if (!nl)
                        break; /* a torn last line: cut off, never replayed */
                size_t len = (size_t) (nl - (s + i));
                const char *l = s + i;
                i += len + 1;
                if (memchr(l, 0, len))
                        continue; /* refused by the journal reader: not handed over */
                uint64_t at = line++;
                cJSON *j = cJSON_ParseWithLength(l, len);
                const cJSON *op = cJSON_GetObjectItemCaseSensitive(j, "op");
                const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
                if (cJSON_IsObject(j) && cJSON_IsString(op) && cJSON_IsString(id) &&
                    con_task_id_valid(id->valuestring) && !streq(op->valuestring, "counters") &&
                    (streq(op->valuestring, "forget") || streq(op->valuestring, "accept") ||
                     streq(op->valuestring, "known") || streq(op->valuestring, "end"))) {
                        OracleRecord *a = reallocarray(recs, nrecs + 1, sizeof(OracleRecord));
                        if (!a)
                                abort();
                        recs = a;
                        OracleRecord *rec = &recs[nrecs++];
                        *rec = (OracleRecord) { .line = at };
                        snprintf(rec->id, sizeof(rec->id), "%s", id->valuestring);
                        const char *o = op->valuestring;
                        const cJSON *status = cJSON_GetObjectItemCaseSensitive(j, "status");
                        bool final = cJSON_IsString(status) &&
                                agent_task_status_is_final(agent_task_status_from_string(status->valuestring));
                        if (streq(o, "forget")) {
                                rec->op = ORACLE_FORGET;
                                /* The first pass parses only the lines that name it plainly. */
                                rec->forget = memmem(l, len, "\"forget\"", 8) != NULL;
                        } else if (streq(o, "accept"))
                                rec->op = cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "text")) ?
                                        ORACLE_ACCEPT : ORACLE_OTHER;
                        else if (streq(o, "known"))
                                rec->op = final ? ORACLE_KNOWN : ORACLE_OTHER;
                        else
                                rec->op = final ? ORACLE_END : ORACLE_OTHER;
                        const cJSON *uid = cJSON_GetObjectItemCaseSensitive(j, "uid");
                        rec->uid = cJSON_IsNumber(uid) && uid->valuedouble >= 0 &&
                                uid->valuedouble < 65536 && uid->valuedouble == (double) (int) uid->valuedouble ?
                                (int64_t) uid->valuedouble : -1;
                        const cJSON *sender = cJSON_GetObjectItemCaseSensitive(j, "sender");
                        rec->sender = strdup(cJSON_IsString(sender) ? sender->valuestring : "");
                        if (!rec->sender)
                                abort();
                }
                cJSON_Delete(j);
        }
        *ret_n = nrecs;
        return recs;
}

static void oracle_free(OracleRecord *recs, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(recs[i].sender);
        free(recs);
}

/* Whether ID has a forget record, and the line of its last one. */
static bool oracle_last_forget(const OracleRecord *recs, size_t n, const char *id, uint64_t *ret_line) {
        bool forgotten = false;
        *ret_line = 0;
        for (size_t i = 0; i < n; i++)
                if (recs[i].forget && streq(recs[i].id, id)) {
                        forgotten = true;
                        *ret_line = recs[i].line;
                }
        return forgotten;
}

/* A task in memory whose id has a forget record came in after the last one: an accept or known
 * record of its id and its sender's uid follows it (a record before it is a removed task's). */
static bool oracle_allows(const OracleRecord *recs, size_t n, const AgentTask *t) {
        const char *id = t->id;
        uint64_t last_forget;
        bool forgotten = oracle_last_forget(recs, n, id, &last_forget);
        for (size_t i = 0; i < n; i++)
                if ((recs[i].op == ORACLE_ACCEPT || recs[i].op == ORACLE_KNOWN) && streq(recs[i].id, id) &&
                    (!forgotten || recs[i].line > last_forget) &&
                    (recs[i].uid < 0 || (uid_t) recs[i].uid == t->sender_uid))
                        return true;
        return false;
}

/* The id's task by the rules of OracleTask, from the records alone. */
static OracleTask oracle_expect(const OracleRecord *recs, size_t n, const char *id) {
        OracleTask t = {};
        uint64_t last_forget;
        bool forgotten = oracle_last_forget(recs, n, id, &last_forget);
        for (size_t i = 0; i < n; i++) {
                const OracleRecord *r = &recs[i];
                if (!streq(r->id, id) || (!t.from && forgotten && r->line < last_forget))
                        continue;
                if ((r->op == ORACLE_ACCEPT && (!t.from || t.final)) || (r->op == ORACLE_KNOWN && !t.from))
                        t = (OracleTask) { .from = r, .final = r->op == ORACLE_KNOWN };
                else if (r->op == ORACLE_END && t.from)
                        t.final = true;
        }
        return t;
}

/* Each id's task is the one the rules give: from the same record (its sender, its uid), in memory
 * exactly when expected (when nothing was evicted for the memory bound: a short journal). */
static void oracle_check_all(const OracleRecord *recs, size_t n, AgentQueue *q) {
        size_t nt;
        AgentTask * const *tasks = agent_queue_tasks(q, &nt);
        if (n > AGENT_QUEUE_KEEP_FINISHED)
                return;
        for (size_t i = 0; i < n; i++) {
                OracleTask e = oracle_expect(recs, n, recs[i].id);
                AgentTask *t = agent_queue_find(q, recs[i].id);
                assert(!!t == !!e.from);
                if (!t)
                        continue;
                assert(streq(t->sender, e.from->sender));
                assert(e.from->uid < 0 || (uid_t) e.from->uid == t->sender_uid);
                /* Finished at replay stays finished (an unfinished one may fail after its tries). */
                if (e.final)
                        assert(agent_task_status_is_final(t->status));
        }
        for (size_t i = 0; i < nt; i++)
                assert(oracle_expect(recs, n, tasks[i]->id).from);
}

static void check_counts(AgentQueue *q) {
        AgentQueueStats st;
        size_t n, queued = 0, running = 0;
        AgentTask * const *tasks = agent_queue_tasks(q, &n);
        agent_queue_get_stats(q, &st);
        assert(st.n_in_memory == n);
        for (size_t i = 0; i < n; i++) {
                assert(con_task_id_valid(tasks[i]->id));
                assert(agent_queue_find(q, tasks[i]->id) == tasks[i]);
                queued += tasks[i]->status == AGENT_TASK_QUEUED;
                running += tasks[i]->status == AGENT_TASK_RUNNING;
        }
        assert(st.n_queued == queued);
        assert(st.n_running == running);
}

/* The finished tasks in memory; NULL with *ret_n 0 when some were evicted (not comparable). */
static Finished *finished_of(AgentQueue *q, size_t *ret_n) {
        AgentQueueStats st;
        size_t n, k = 0;
        AgentTask * const *tasks = agent_queue_tasks(q, &n);
        agent_queue_get_stats(q, &st);
        *ret_n = 0;
        if (st.n_tasks != n)
                return NULL;
        Finished *f = calloc(n + 1, sizeof(Finished));
        if (!f)
                abort();
        for (size_t i = 0; i < n; i++)
                if (agent_task_status_is_final(tasks[i]->status)) {
                        f[k].id = strdup(tasks[i]->id);
                        if (!f[k].id)
                                abort();
                        f[k].status = tasks[i]->status;
                        f[k].uid = tasks[i]->sender_uid;
                        k++;
                }
        *ret_n = k;
        return f;
}

static void finished_free(Finished *f, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(f[i].id);
        free(f);
}

static void check_same_finished(AgentQueue *q, const Finished *f, size_t n) {
        size_t m;
        Finished *g = finished_of(q, &m);
        if (!g)
                return;
        assert(m == n);
        for (size_t i = 0; i < n; i++) {
                AgentTask *t = agent_queue_find(q, f[i].id);
                assert(t);
                assert(t->status == f[i].status);
                assert(t->sender_uid == f[i].uid);
        }
        finished_free(g, m);
}

static AgentQueue *open_queue(int dfd) {
        AgentQueue *q = NULL;
        assert(agent_queue_open(dfd, 0, &q) == 0);
        check_counts(q);
        return q;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        int dfd = queue_dir();
        if (mkdirat(dfd, "queue", 0700) < 0 && errno != EEXIST)
                abort();
        int fd = openat(dfd, "queue/journal", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                abort();
        fuzz_write_all(fd, data, size);
        close(fd);

        size_t nrecs;
        OracleRecord *recs = oracle_read((const char *) data, size, &nrecs);

        AgentQueue *q = open_queue(dfd);
        size_t n;
        AgentTask * const *tasks = agent_queue_tasks(q, &n);
        for (size_t i = 0; i < n; i++)
                assert(oracle_allows(recs, nrecs, tasks[i]));
        oracle_check_all(recs, nrecs, q);
        oracle_free(recs, nrecs);
        /* The end records of tasks failed after too many tries, and the derived files. */
        assert(agent_queue_commit(q) == 0);
        (void) agent_queue_write_all_files(q);
        size_t nf;
        Finished *f = finished_of(q, &nf);
        AgentQueueStats st;
        agent_queue_get_stats(q, &st);
        agent_queue_free(q);

        /* Replay again: the same finished tasks. */
        q = open_queue(dfd);
        if (f)
                check_same_finished(q, f, nf);
        /* Compacted (when idle): the same again. */
        if (agent_queue_compact(q) == 1) {
                agent_queue_free(q);
                q = open_queue(dfd);
                if (f)
                        check_same_finished(q, f, nf);
                /* The counts too, unless a planted counters record made them absurd. */
                AgentQueueStats st2;
                agent_queue_get_stats(q, &st2);
                if (st.n_tasks < (1ULL << 40))
                        assert(st2.n_tasks == st.n_tasks);
        }
        agent_queue_free(q);
        finished_free(f, nf);
        fuzz_tree_clear(dfd, false);
        return 0;
}
