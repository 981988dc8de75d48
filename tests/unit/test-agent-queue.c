/* SPDX-License-Identifier: MIT */
/* The agent queue: journal append, group commit, replay, torn tails, dedup, ordering, retry
 * counting, compaction and the derived files. */
#include <fcntl.h>
#include <sys/stat.h>

#include "agent-queue.h"
#include "macro.h"
#include "test-util.h"

typedef struct Fixture {
        char *dir;
        int dfd;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data) {
        f->dir = test_tmpdir_new();
        f->dfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        g_assert_cmpint(f->dfd, >=, 0);
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        safe_close(f->dfd);
        test_tmpdir_remove(f->dir);
        g_free(f->dir);
}

static AgentQueue *open_queue(Fixture *f) {
        AgentQueue *q = NULL;
        g_assert_cmpint(agent_queue_open(f->dfd, 0, &q), ==, 0);
        return q;
}

static AgentTask *accept_one(AgentQueue *q, const char *id, int prio, const char *text) {
        AgentTaskRequest req = {
                .id = id,
                .sender_uid = 1000,
                .sender = "alice",
                .priority = prio,
                .text = text,
        };
        AgentTask *t = NULL;
        int r = agent_queue_accept(q, &req, 1000000, &t);
        g_assert_cmpint(r, >=, 0);
        g_assert_nonnull(t);
        return t;
}

static char *read_file_at(Fixture *f, const char *rel) {
        g_autofree char *p = g_build_filename(f->dir, rel, NULL);
        char *c = NULL;
        if (!g_file_get_contents(p, &c, NULL, NULL))
                return NULL;
        return c;
}

static void append_raw(Fixture *f, const char *data) {
        g_autofree char *qd = g_build_filename(f->dir, "queue", NULL);
        (void) mkdir(qd, 0700);
        g_autofree char *p = g_build_filename(f->dir, "queue", "journal", NULL);
        FILE *fp = fopen(p, "a");
        g_assert_nonnull(fp);
        g_assert_cmpint(fputs(data, fp), >=, 0);
        g_assert_cmpint(fclose(fp), ==, 0);
}

static void test_accept_replay_order(Fixture *f, gconstpointer data) {
        AgentQueue *q = open_queue(f);
        accept_one(q, "low", 1, "a");
        accept_one(q, "mid-1", 5, "b");
        accept_one(q, "high", 9, "c");
        accept_one(q, "mid-2", 5, "d");
        g_assert_true(agent_queue_has_batch(q));
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        g_assert_false(agent_queue_has_batch(q));
        agent_queue_free(q);

        q = open_queue(f);
        AgentQueueStats st;
        agent_queue_get_stats(q, &st);
        g_assert_cmpuint(st.n_tasks, ==, 4);
        g_assert_cmpuint(st.n_queued, ==, 4);
        const char *want[] = { "high", "mid-1", "mid-2", "low" };
        for (size_t i = 0; i < ELEMENTSOF(want); i++) {
                AgentTask *t = agent_queue_peek(q);
                g_assert_nonnull(t);
                g_assert_cmpstr(t->id, ==, want[i]);
                g_assert_cmpint(agent_queue_start(q, t, 2), ==, 0);
                g_assert_cmpint(agent_queue_finish(q, t, AGENT_TASK_DONE, "ok", 3), ==, 0);
        }
        g_assert_null(agent_queue_peek(q));
        AgentTask *t = agent_queue_find(q, "mid-2");
        g_assert_cmpstr(t->text, ==, "d");
        g_assert_cmpstr(t->sender, ==, "alice");
        g_assert_cmpuint(t->sender_uid, ==, 1000);
        agent_queue_free(q);
}

static void test_uncommitted_lost(Fixture *f, gconstpointer data) {
        AgentQueue *q = open_queue(f);
        accept_one(q, "kept", 5, "x");
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        accept_one(q, "lost", 5, "y");
        agent_queue_free(q);

        q = open_queue(f);
        g_assert_nonnull(agent_queue_find(q, "kept"));
        g_assert_null(agent_queue_find(q, "lost"));
        agent_queue_free(q);
}

static void test_dedup(Fixture *f, gconstpointer data) {
        AgentQueue *q = open_queue(f);
        AgentTask *a = accept_one(q, "same", 5, "first");
        AgentTaskRequest req = { .id = "same", .priority = 5, .text = "second", .sender = "bob" };
        AgentTask *b = NULL;
        g_assert_cmpint(agent_queue_accept(q, &req, 1, &b), ==, 1);
        g_assert_true(a == b);
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        agent_queue_free(q);

        q = open_queue(f);
        g_assert_cmpint(agent_queue_accept(q, &req, 1, &b), ==, 1);
        g_assert_cmpstr(b->text, ==, "first");
        AgentQueueStats st;
        agent_queue_get_stats(q, &st);
        g_assert_cmpuint(st.n_tasks, ==, 1);

        /* Invalid ids and priorities are refused. */
        AgentTaskRequest bad = { .id = "../x", .priority = 5, .text = "t" };
        g_assert_cmpint(agent_queue_accept(q, &bad, 1, &b), ==, -EINVAL);
        AgentTaskRequest badp = { .priority = 10, .text = "t" };
        g_assert_cmpint(agent_queue_accept(q, &badp, 1, &b), ==, -EINVAL);

        /* A generated id is valid and new. */
        AgentTaskRequest gen = { .priority = 5, .text = "t" };
        g_assert_cmpint(agent_queue_accept(q, &gen, 1, &b), ==, 0);
        g_assert_cmpstr(b->id, !=, "same");
        agent_queue_free(q);
}

static void test_torn_tail(Fixture *f, gconstpointer data) {
        AgentQueue *q = open_queue(f);
        accept_one(q, "good", 5, "x");
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        agent_queue_free(q);

        append_raw(f, "{\"op\":\"accept\",\"id\":\"torn\",\"te");
        q = open_queue(f);
        AgentQueueStats st;
        agent_queue_get_stats(q, &st);
        g_assert_true(st.torn_tail);
        g_assert_cmpuint(st.n_corrupt, ==, 0);
        g_assert_nonnull(agent_queue_find(q, "good"));
        g_assert_null(agent_queue_find(q, "torn"));
        /* Appending after the cut gives a clean journal. */
        accept_one(q, "after", 5, "y");
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        agent_queue_free(q);

        q = open_queue(f);
        agent_queue_get_stats(q, &st);
        g_assert_false(st.torn_tail);
        g_assert_cmpuint(st.n_corrupt, ==, 0);
        g_assert_nonnull(agent_queue_find(q, "after"));
        agent_queue_free(q);
}

static void test_corrupt_middle(Fixture *f, gconstpointer data) {
        append_raw(f, "{\"op\":\"accept\",\"id\":\"a\",\"text\":\"x\",\"uid\":0,\"prio\":5}\n"
                      "not json at all\n"
                      "{\"op\":\"start\",\"id\":\"nosuch\"}\n"
                      "{\"op\":\"accept\",\"id\":\"b\",\"text\":\"y\",\"uid\":0,\"prio\":5}\n");
        AgentQueue *q = open_queue(f);
        AgentQueueStats st;
        agent_queue_get_stats(q, &st);
        g_assert_cmpuint(st.n_corrupt, ==, 2);
        g_assert_cmpuint(st.n_tasks, ==, 2);
        agent_queue_free(q);
}

static void test_retry_counting_across_crashes(Fixture *f, gconstpointer data) {
        AgentQueue *q = open_queue(f);
        accept_one(q, "crashy", 5, "boom");
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        agent_queue_free(q);

        for (unsigned i = 1; i <= AGENT_QUEUE_MAX_TRIES; i++) {
                q = open_queue(f);
                AgentTask *t = agent_queue_find(q, "crashy");
                g_assert_cmpint(t->status, ==, AGENT_TASK_QUEUED);
                g_assert_cmpuint(t->tries, ==, i - 1);
                g_assert_true(agent_queue_peek(q) == t);
                g_assert_cmpint(agent_queue_start(q, t, 5), ==, 0);
                g_assert_cmpint(agent_queue_commit(q), ==, 0);
                agent_queue_free(q); /* "crash" while running */
        }
        q = open_queue(f);
        AgentTask *t = agent_queue_find(q, "crashy");
        g_assert_cmpint(t->status, ==, AGENT_TASK_FAILED);
        g_assert_nonnull(strstr(t->result, "3 times"));
        g_assert_true(agent_queue_has_batch(q));
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        g_assert_cmpint(agent_queue_write_all_files(q), ==, 0);
        agent_queue_free(q);

        g_autofree char *reason = read_file_at(f, "failed/crashy.reason");
        g_assert_nonnull(reason);
        g_assert_nonnull(strstr(reason, "3 times"));
        g_autofree char *task = read_file_at(f, "failed/crashy.task");
        g_assert_nonnull(task);
        g_assert_nonnull(strstr(task, "boom"));

        /* The failure was journaled: a further restart keeps it failed. */
        q = open_queue(f);
        g_assert_cmpint(agent_queue_find(q, "crashy")->status, ==, AGENT_TASK_FAILED);
        g_assert_false(agent_queue_has_batch(q));
        agent_queue_free(q);
}

static void test_requeue(Fixture *f, gconstpointer data) {
        AgentQueue *q = open_queue(f);
        AgentTask *first = accept_one(q, "first", 5, "a");
        accept_one(q, "second", 5, "b");
        for (unsigned i = 1; i < AGENT_QUEUE_MAX_TRIES; i++) {
                g_assert_true(agent_queue_peek(q) == first);
                g_assert_cmpint(agent_queue_start(q, first, 1), ==, 0);
                g_assert_cmpint(agent_queue_requeue(q, first), ==, 0);
        }
        /* A requeued task keeps its place (arrival order). */
        g_assert_true(agent_queue_peek(q) == first);
        g_assert_cmpint(agent_queue_start(q, first, 1), ==, 0);
        g_assert_cmpint(agent_queue_requeue(q, first), ==, -ELOOP);
        g_assert_cmpint(agent_queue_finish(q, first, AGENT_TASK_FAILED, "died", 2), ==, 0);
        g_assert_cmpint(agent_queue_finish(q, first, AGENT_TASK_DONE, "again", 2), ==, -ESTALE);
        g_assert_cmpstr(agent_queue_peek(q)->id, ==, "second");

        /* Cancelling a queued task takes it out of the ready heap. */
        AgentTask *second = agent_queue_find(q, "second");
        g_assert_cmpint(agent_queue_finish(q, second, AGENT_TASK_CANCELLED, "cancelled by root", 3), ==, 0);
        g_assert_null(agent_queue_peek(q));
        AgentQueueStats st;
        agent_queue_get_stats(q, &st);
        g_assert_cmpuint(st.n_queued, ==, 0);
        g_assert_cmpuint(st.n_running, ==, 0);
        g_assert_cmpuint(st.n_failed, ==, 1);
        g_assert_cmpuint(st.n_cancelled, ==, 1);
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        agent_queue_free(q);
}

static void test_files(Fixture *f, gconstpointer data) {
        AgentQueue *q = open_queue(f);
        AgentTask *t = accept_one(q, "ok", 7, "do it");
        g_assert_cmpint(agent_queue_start(q, t, 1), ==, 0);
        g_assert_cmpint(agent_queue_finish(q, t, AGENT_TASK_DONE, "done it", 2), ==, 0);
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        g_assert_cmpint(agent_queue_write_files(q, t), ==, 0);

        g_autofree char *resp = read_file_at(f, "outbox/ok.response");
        g_assert_cmpstr(resp, ==, "done it");
        g_autofree char *p = g_build_filename(f->dir, "outbox", "ok.response", NULL);
        struct stat st;
        g_assert_cmpint(stat(p, &st), ==, 0);
        g_assert_cmpint(st.st_mode & 0777, ==, 0600);
        g_autofree char *task = read_file_at(f, "processed/ok.task");
        g_assert_nonnull(task);
        g_assert_nonnull(strstr(task, "priority: 7"));
        g_assert_nonnull(strstr(task, "do it"));
        agent_queue_free(q);

        /* Missing derived files are regenerated from the journal. */
        g_assert_cmpint(unlink(p), ==, 0);
        q = open_queue(f);
        g_assert_cmpint(agent_queue_write_all_files(q), ==, 0);
        g_autofree char *again = read_file_at(f, "outbox/ok.response");
        g_assert_cmpstr(again, ==, "done it");
        agent_queue_free(q);
}

static void test_compaction(Fixture *f, gconstpointer data) {
        AgentQueue *q = open_queue(f);
        agent_queue_set_compact_threshold(q, 1024);
        char id[32];
        for (int i = 0; i < 50; i++) {
                (void) snprintf(id, sizeof(id), "t%02d", i);
                AgentTask *t = accept_one(q, id, 5, "some text that makes the journal grow");
                g_assert_cmpint(agent_queue_start(q, t, 1), ==, 0);
                if (i == 7)
                        g_assert_cmpint(agent_queue_finish(q, t, AGENT_TASK_FAILED, "bad", 2), ==, 0);
                else
                        g_assert_cmpint(agent_queue_finish(q, t, AGENT_TASK_DONE, "a response", 2), ==, 0);
                /* One pending task blocks compaction. */
                if (i == 10) {
                        accept_one(q, "pending", 5, "p");
                        g_assert_cmpint(agent_queue_commit(q), ==, 0);
                        g_assert_false(agent_queue_want_compact(q));
                        g_assert_cmpint(agent_queue_compact(q), ==, -EBUSY);
                        AgentTask *pt = agent_queue_find(q, "pending");
                        g_assert_cmpint(agent_queue_finish(q, pt, AGENT_TASK_CANCELLED, "c", 3), ==, 0);
                }
        }
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        g_assert_cmpint(agent_queue_write_all_files(q), ==, 0);
        AgentQueueStats before, after;
        agent_queue_get_stats(q, &before);
        g_assert_true(agent_queue_want_compact(q));
        g_assert_cmpint(agent_queue_compact(q), ==, 1);
        agent_queue_get_stats(q, &after);
        g_assert_cmpuint(after.journal_size, <, before.journal_size);
        g_assert_cmpuint(after.n_tasks, ==, 51);

        /* Results come back from outbox/ after compaction. */
        AgentTask *t = agent_queue_find(q, "t03");
        g_assert_null(t->result);
        g_autofree char *res = NULL;
        g_assert_cmpint(agent_queue_read_result(q, t, &res), ==, 0);
        g_assert_cmpstr(res, ==, "a response");

        /* Appends go to the new journal. */
        accept_one(q, "post", 5, "after compaction");
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        agent_queue_free(q);

        q = open_queue(f);
        agent_queue_get_stats(q, &after);
        g_assert_cmpuint(after.n_tasks, ==, 52);
        g_assert_cmpuint(after.n_corrupt, ==, 0);
        g_assert_cmpuint(after.n_done, ==, 49);
        g_assert_cmpuint(after.n_failed, ==, 1);
        g_assert_cmpuint(after.n_cancelled, ==, 1);
        g_assert_cmpint(agent_queue_find(q, "t07")->status, ==, AGENT_TASK_FAILED);
        g_assert_cmpstr(agent_queue_find(q, "t07")->result, ==, "bad");
        g_assert_cmpstr(agent_queue_find(q, "t08")->sender, ==, "alice");
        g_assert_cmpstr(agent_queue_find(q, "post")->text, ==, "after compaction");
        /* Dedup survives compaction. */
        AgentTaskRequest req = { .id = "t20", .priority = 5, .text = "again" };
        AgentTask *d = NULL;
        g_assert_cmpint(agent_queue_accept(q, &req, 1, &d), ==, 1);
        g_assert_cmpint(d->status, ==, AGENT_TASK_DONE);
        agent_queue_free(q);
}

static void test_lock(Fixture *f, gconstpointer data) {
        AgentQueue *q = open_queue(f);
        AgentQueue *q2 = NULL;
        g_assert_cmpint(agent_queue_open(f->dfd, 50 * USEC_PER_MSEC, &q2), ==, -EWOULDBLOCK);
        agent_queue_free(q);
        g_assert_cmpint(agent_queue_open(f->dfd, 0, &q2), ==, 0);
        agent_queue_free(q2);
}

static void test_status_strings(void) {
        for (int i = 0; i < _AGENT_TASK_STATUS_MAX; i++)
                g_assert_cmpint(agent_task_status_from_string(agent_task_status_to_string(i)), ==, i);
        g_assert_cmpint(agent_task_status_from_string("nope"), ==, _AGENT_TASK_STATUS_INVALID);
        g_assert_null(agent_task_status_to_string(_AGENT_TASK_STATUS_MAX));
}

#define ADD(name, fn) g_test_add(name, Fixture, NULL, fixture_setup, fn, fixture_teardown)

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        ADD("/agent-queue/accept-replay-order", test_accept_replay_order);
        ADD("/agent-queue/uncommitted-lost", test_uncommitted_lost);
        ADD("/agent-queue/dedup", test_dedup);
        ADD("/agent-queue/torn-tail", test_torn_tail);
        ADD("/agent-queue/corrupt-middle", test_corrupt_middle);
        ADD("/agent-queue/retry-counting-across-crashes", test_retry_counting_across_crashes);
        ADD("/agent-queue/requeue", test_requeue);
        ADD("/agent-queue/files", test_files);
        ADD("/agent-queue/compaction", test_compaction);
        ADD("/agent-queue/lock", test_lock);
        g_test_add_func("/agent-queue/status-strings", test_status_strings);
        return g_test_run();
}
