/* SPDX-License-Identifier: MIT */
/* The agent queue: journal append, group commit, replay, torn tails, dedup, ordering, retry
 * counting, compaction and the derived files. */
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "acl-util.h"
#include "agent-queue.h"
#include "agent-session.h"
#include "macro.h"
#include "test-util.h"
#include "time-util.h"

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
        /* The same sender again: its task back (idempotent). */
        AgentTaskRequest req = { .id = "same", .sender_uid = 1000, .priority = 5, .text = "second",
                                 .sender = "alice" };
        AgentTask *b = NULL;
        g_assert_cmpint(agent_queue_accept(q, &req, 1, &b), ==, 1);
        g_assert_true(a == b);
        /* Another sender (root included): refused, nothing added to the batch. */
        AgentTaskRequest other = { .id = "same", .sender_uid = 1001, .priority = 5, .text = "mine",
                                   .sender = "bob" };
        AgentTask *c = (AgentTask *) 0x1;
        g_assert_cmpint(agent_queue_accept(q, &other, 1, &c), ==, -EEXIST);
        other.sender_uid = 0;
        g_assert_cmpint(agent_queue_accept(q, &other, 1, &c), ==, -EEXIST);
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        agent_queue_free(q);

        /* After a restart (journal replay): the same rules. */
        q = open_queue(f);
        g_assert_cmpint(agent_queue_accept(q, &req, 1, &b), ==, 1);
        g_assert_cmpstr(b->text, ==, "first");
        g_assert_cmpint(agent_queue_accept(q, &other, 1, &c), ==, -EEXIST);
        AgentQueueStats st;
        agent_queue_get_stats(q, &st);
        g_assert_cmpuint(st.n_tasks, ==, 1);
        g_assert_false(agent_queue_has_batch(q));

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

/* Every task of another host is held under the one uid of the mesh gateway: the id is scoped by the
 * principal too. A second remote sender reusing an id is refused (it learns nothing of the task),
 * the first sender's task stays as it was, in memory, after a restart and evicted to disk. */
static void test_dedup_remote_principal(Fixture *f, gconstpointer data) {
        AgentQueue *q = open_queue(f);
        agent_queue_set_keep_finished(q, 0);
        AgentTaskRequest alice = { .id = "x1", .sender_uid = 995, .sender = "alice@host-a", .priority = 5,
                                   .text = "alice's task" };
        AgentTaskRequest mallory = { .id = "x1", .sender_uid = 995, .sender = "mallory@host-b", .priority = 9,
                                     .text = "mallory's task" };
        AgentTask *a = NULL, *m = (AgentTask *) 0x1;
        g_assert_cmpint(agent_queue_accept(q, &alice, 1, &a), ==, 0);
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        /* Queued: refused, nothing added; the same principal gets its task back. */
        g_assert_cmpint(agent_queue_accept(q, &mallory, 2, &m), ==, -EEXIST);
        g_assert_true(m == (AgentTask *) 0x1);
        g_assert_false(agent_queue_has_batch(q));
        /* A local user of that name, or a principal without a host, is another sender too. */
        mallory.sender = "alice";
        g_assert_cmpint(agent_queue_accept(q, &mallory, 2, &m), ==, -EEXIST);
        mallory.sender = NULL;
        g_assert_cmpint(agent_queue_accept(q, &mallory, 2, &m), ==, -EEXIST);
        mallory.sender = "mallory@host-b";
        AgentTask *again = NULL;
        g_assert_cmpint(agent_queue_accept(q, &alice, 3, &again), ==, 1);
        g_assert_true(again == a);
        g_assert_cmpstr(a->text, ==, "alice's task");
        g_assert_cmpstr(a->sender, ==, "alice@host-a");
        g_assert_cmpint(a->priority, ==, 5);
        g_assert_cmpint(a->status, ==, AGENT_TASK_QUEUED);

        /* Finished, in memory, then evicted to disk: still alice's, still refused to mallory. */
        g_assert_cmpint(agent_queue_start(q, a, 4), ==, 0);
        g_assert_cmpint(agent_queue_finish(q, a, AGENT_TASK_DONE, "alice's answer", 5), ==, 0);
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        g_assert_cmpint(agent_queue_accept(q, &mallory, 6, &m), ==, -EEXIST);
        g_assert_cmpint(agent_queue_write_all_files(q), ==, 0);
        g_assert_cmpuint(agent_queue_evict(q), ==, 1);
        g_assert_null(agent_queue_find(q, "x1"));
        g_assert_cmpint(agent_queue_accept(q, &mallory, 7, &m), ==, -EEXIST);
        g_assert_false(agent_queue_has_batch(q));
        AgentTask *none = (AgentTask *) 0x1;
        g_assert_cmpint(agent_queue_accept(q, &alice, 7, &none), ==, 2);
        g_assert_null(none);
        agent_queue_free(q);

        /* After a restart (replay): the same rule, the task and its answer untouched. */
        q = open_queue(f);
        g_assert_cmpint(agent_queue_accept(q, &mallory, 8, &m), ==, -EEXIST);
        g_assert_false(agent_queue_has_batch(q));
        _cleanup_(agent_task_freep) AgentTask *done = NULL;
        AgentTask *t = agent_queue_find(q, "x1");
        if (!t) {
                g_assert_cmpint(agent_queue_load_finished(q, "x1", &done), ==, 0);
                t = done;
        }
        g_assert_cmpstr(t->sender, ==, "alice@host-a");
        g_assert_cmpint(t->status, ==, AGENT_TASK_DONE);
        g_autofree char *res = NULL;
        g_assert_cmpint(agent_queue_read_result(q, t, &res, NULL), ==, 0);
        g_assert_cmpstr(res, ==, "alice's answer");
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

/* Replay trusts only the service's own journal: one another user could write (here: mode 0666,
 * as a session's forgery would need) is set aside, never replayed. */
static void test_untrusted_journal(Fixture *f, gconstpointer data) {
        append_raw(f, "{\"op\":\"accept\",\"id\":\"planted1\",\"text\":\"/status\",\"uid\":0,\"prio\":5}\n");
        g_autofree char *p = g_build_filename(f->dir, "queue", "journal", NULL);
        g_assert_cmpint(chmod(p, 0666), ==, 0);
        AgentQueue *q = open_queue(f);
        AgentQueueStats st;
        agent_queue_get_stats(q, &st);
        g_assert_true(st.untrusted_journal);
        g_assert_cmpuint(st.n_tasks, ==, 0);
        g_assert_null(agent_queue_find(q, "planted1"));
        agent_queue_free(q);
        /* Kept aside for inspection; the new journal is the service's own. */
        g_autofree char *qd = g_build_filename(f->dir, "queue", NULL);
        g_autoptr(GDir) d = g_dir_open(qd, 0, NULL);
        bool aside = false;
        for (const char *n; d && (n = g_dir_read_name(d));)
                aside = aside || g_str_has_prefix(n, "journal.untrusted-");
        g_assert_true(aside);
        struct stat jst;
        g_assert_cmpint(stat(p, &jst), ==, 0);
        g_assert_cmpint(jst.st_mode & 0777, ==, 0600);
        q = open_queue(f);
        agent_queue_get_stats(q, &st);
        g_assert_false(st.untrusted_journal);
        agent_queue_free(q);

        /* A queue folder others can write is refused outright. */
        g_assert_cmpint(chmod(qd, 0777), ==, 0);
        AgentQueue *q2 = NULL;
        g_assert_cmpint(agent_queue_open(f->dfd, 0, &q2), ==, -EPERM);
        g_assert_cmpint(chmod(qd, 0700), ==, 0);
}

/* A response someone replaced (not the service's own file) is never served. */
static void test_replaced_response(Fixture *f, gconstpointer data) {
        AgentQueue *q = open_queue(f);
        AgentTask *t = accept_one(q, "r1", 5, "do it");
        g_assert_cmpint(agent_queue_start(q, t, 1), ==, 0);
        g_assert_cmpint(agent_queue_finish(q, t, AGENT_TASK_DONE, "true answer", 2), ==, 0);
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        g_assert_cmpint(agent_queue_write_files(q, t), ==, 0);
        g_autofree char *p = g_build_filename(f->dir, "outbox", "r1.response", NULL);
        g_assert_cmpint(unlink(p), ==, 0);
        g_assert_true(g_file_set_contents(p, "forged", -1, NULL));
        g_assert_cmpint(chmod(p, 0666), ==, 0);
        free(t->result);
        t->result = NULL; /* as after eviction: the answer comes from the outbox */
        char *out = NULL;
        g_assert_cmpint(agent_queue_read_result(q, t, &out, NULL), ==, -EPERM);
        g_assert_null(out);
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
        /* 0600 plus the sender's own read entry (the group bits show the ACL mask). */
        g_assert_cmpint(st.st_mode & 0777, ==, 0640);
        {
                acl_t acl = acl_get_file(p, ACL_TYPE_ACCESS);
                g_assert_nonnull(acl);
                _cleanup_free_ char *txt = con_acl_to_short_text(acl);
                acl_free(acl);
                g_assert_nonnull(strstr(txt, "u:1000:r--"));
                g_assert_nonnull(strstr(txt, "o::---"));
        }
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

/* The files of a task that became final in this instance are written without looking first: one
 * that exists all the same is kept (no replace, no temp file left), and eviction does not write
 * them again. */
static void test_new_files(Fixture *f, gconstpointer data) {
        AgentQueue *q = open_queue(f);
        agent_queue_set_keep_finished(q, 0);
        AgentTask *t = accept_one(q, "fresh", 5, "do it");
        g_assert_cmpint(agent_queue_start(q, t, 1), ==, 0);
        g_assert_cmpint(agent_queue_finish(q, t, AGENT_TASK_DONE, "done it", 2), ==, 0);
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        g_autofree char *rp = g_build_filename(f->dir, "outbox", "fresh.response", NULL);
        g_assert_true(g_file_set_contents(rp, "older", -1, NULL));
        g_assert_cmpint(agent_queue_write_new_files(q, t), ==, 0);
        g_autofree char *resp = read_file_at(f, "outbox/fresh.response");
        g_assert_cmpstr(resp, ==, "older");
        g_autofree char *task = read_file_at(f, "processed/fresh.task");
        g_assert_nonnull(strstr(task, "do it"));
        g_autofree char *known = read_file_at(f, "queue/finished/fresh.json");
        g_assert_nonnull(strstr(known, "\"known\""));
        g_autofree char *od = g_build_filename(f->dir, "outbox", NULL);
        GDir *d = g_dir_open(od, 0, NULL);
        g_assert_nonnull(d);
        for (const char *n; (n = g_dir_read_name(d));)
                g_assert_cmpstr(n, ==, "fresh.response");
        g_dir_close(d);

        /* Written once: eviction goes by the task's flag, not by the files. */
        g_autofree char *pt = g_build_filename(f->dir, "processed", "fresh.task", NULL);
        g_assert_cmpint(unlink(pt), ==, 0);
        g_assert_cmpuint(agent_queue_evict(q), ==, 1);
        g_assert_null(agent_queue_find(q, "fresh"));
        g_assert_false(g_file_test(pt, G_FILE_TEST_EXISTS));
        g_assert_true(agent_queue_known_on_disk(q, "fresh"));
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
        g_assert_cmpint(agent_queue_read_result(q, t, &res, NULL), ==, 0);
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
        /* Dedup, and the sender scope of ids, survive compaction. */
        AgentTaskRequest req = { .id = "t20", .sender_uid = 1000, .priority = 5, .text = "again", .sender = "alice" };
        AgentTask *d = NULL;
        g_assert_cmpint(agent_queue_accept(q, &req, 1, &d), ==, 1);
        g_assert_cmpint(d->status, ==, AGENT_TASK_DONE);
        req.sender_uid = 1001;
        g_assert_cmpint(agent_queue_accept(q, &req, 1, &d), ==, -EEXIST);
        agent_queue_free(q);
}

/* Runs n tasks "e0000".. to the end: done, except every 5th failed with a reason. */
static void run_tasks(AgentQueue *q, int n) {
        char id[32];
        for (int i = 0; i < n; i++) {
                (void) snprintf(id, sizeof(id), "e%04d", i);
                AgentTask *t = accept_one(q, id, 5, "evict me");
                g_assert_cmpint(agent_queue_start(q, t, 1), ==, 0);
                if (i % 5 == 4)
                        g_assert_cmpint(agent_queue_finish(q, t, AGENT_TASK_FAILED, "broke", 2), ==, 0);
                else
                        g_assert_cmpint(agent_queue_finish(q, t, AGENT_TASK_DONE, "resp", 2), ==, 0);
        }
}

static void test_evict_bound(Fixture *f, gconstpointer data) {
        AgentQueue *q = open_queue(f);
        agent_queue_set_keep_finished(q, 10);
        accept_one(q, "old-queued", 0, "waits");
        run_tasks(q, 50);
        /* Nothing goes while the batch holds their end records. */
        g_assert_cmpuint(agent_queue_evict(q), ==, 0);
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        g_assert_cmpuint(agent_queue_evict(q), ==, 40);
        g_assert_cmpuint(agent_queue_evict(q), ==, 0);

        AgentQueueStats st;
        agent_queue_get_stats(q, &st);
        g_assert_cmpuint(st.n_tasks, ==, 51);
        g_assert_cmpuint(st.n_in_memory, ==, 11);
        g_assert_cmpuint(st.n_queued, ==, 1);
        g_assert_cmpuint(st.n_done, ==, 40);
        g_assert_cmpuint(st.n_failed, ==, 10);
        size_t n;
        AgentTask * const *tasks = agent_queue_tasks(q, &n);
        g_assert_cmpuint(n, ==, 11);
        g_assert_cmpstr(tasks[0]->id, ==, "old-queued");
        g_assert_cmpstr(tasks[1]->id, ==, "e0040");
        g_assert_null(agent_queue_find(q, "e0039"));
        g_assert_nonnull(agent_queue_find(q, "e0049"));
        /* The queued task is still the next one (the heap was purged, not broken). */
        g_assert_true(agent_queue_peek(q) == agent_queue_find(q, "old-queued"));
        /* Evicted tasks left their files. */
        g_autofree char *resp = read_file_at(f, "outbox/e0000.response");
        g_assert_cmpstr(resp, ==, "resp");
        g_autofree char *meta = read_file_at(f, "queue/finished/e0004.json");
        g_assert_nonnull(meta);
        g_assert_nonnull(strstr(meta, "\"uid\":1000"));
        agent_queue_free(q);
}

static void test_evict_dedup_from_disk(Fixture *f, gconstpointer data) {
        AgentQueue *q = open_queue(f);
        agent_queue_set_keep_finished(q, 2);
        run_tasks(q, 10);
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        g_assert_cmpuint(agent_queue_evict(q), ==, 8);

        AgentTaskRequest req = { .id = "e0001", .sender_uid = 1000, .priority = 5, .text = "again", .sender = "alice" };
        AgentTask *d = (AgentTask *) 0x1;
        g_assert_cmpint(agent_queue_accept(q, &req, 1, &d), ==, 2);
        g_assert_null(d);
        g_assert_false(agent_queue_has_batch(q));
        /* Only on disk, the record names the submitter: another sender is refused. */
        AgentTaskRequest other = { .id = "e0001", .sender_uid = 1001, .priority = 5, .text = "mine" };
        g_assert_cmpint(agent_queue_accept(q, &other, 1, &d), ==, -EEXIST);
        g_assert_false(agent_queue_has_batch(q));
        g_assert_true(agent_queue_known_on_disk(q, "e0001"));
        g_assert_false(agent_queue_known_on_disk(q, "never-seen"));
        /* In memory: the usual dedup. */
        req.id = "e0009";
        g_assert_cmpint(agent_queue_accept(q, &req, 1, &d), ==, 1);
        g_assert_cmpstr(d->id, ==, "e0009");

        /* Evicted tasks come back from disk for GetResult, with the submitter's uid. */
        _cleanup_(agent_task_freep) AgentTask *done = NULL;
        g_assert_cmpint(agent_queue_load_finished(q, "e0001", &done), ==, 0);
        g_assert_cmpint(done->status, ==, AGENT_TASK_DONE);
        g_assert_cmpuint(done->sender_uid, ==, 1000);
        g_assert_cmpstr(done->sender, ==, "alice");
        g_autofree char *res = NULL;
        g_assert_cmpint(agent_queue_read_result(q, done, &res, NULL), ==, 0);
        g_assert_cmpstr(res, ==, "resp");
        _cleanup_(agent_task_freep) AgentTask *failed = NULL;
        g_assert_cmpint(agent_queue_load_finished(q, "e0004", &failed), ==, 0);
        g_assert_cmpint(failed->status, ==, AGENT_TASK_FAILED);
        g_autofree char *reason = NULL;
        g_assert_cmpint(agent_queue_read_result(q, failed, &reason, NULL), ==, 0);
        g_assert_cmpstr(reason, ==, "broke");
        AgentTask *none = NULL;
        g_assert_cmpint(agent_queue_load_finished(q, "never-seen", &none), ==, -ENOENT);
        g_assert_cmpint(agent_queue_load_finished(q, "../journal", &none), ==, -EINVAL);
        agent_queue_free(q);

        /* A record that does not match its name is refused. */
        g_autofree char *bad = g_build_filename(f->dir, "queue", "finished", "e0002.json", NULL);
        g_assert_true(g_file_set_contents(bad, "{\"op\":\"known\",\"id\":\"e0003\",\"uid\":0,\"status\":\"done\"}\n",
                                          -1, NULL));
        q = open_queue(f);
        g_assert_cmpint(agent_queue_load_finished(q, "e0002", &none), ==, -EBADMSG);
        /* A finished task of an older tree, without its record: whose it is cannot be told, so
         * nobody may take that id. */
        g_autofree char *legacy = g_build_filename(f->dir, "processed", "legacy.task", NULL);
        g_assert_true(g_file_set_contents(legacy, "old\n", -1, NULL));
        AgentTaskRequest again = { .id = "legacy", .sender_uid = 1000, .priority = 5, .text = "x" };
        g_assert_cmpint(agent_queue_accept(q, &again, 1, &none), ==, -EEXIST);
        g_assert_false(agent_queue_has_batch(q));
        agent_queue_free(q);
}

static void test_evict_replay_and_compaction(Fixture *f, gconstpointer data) {
        int n = AGENT_QUEUE_KEEP_FINISHED + 500;
        AgentQueue *q = open_queue(f);
        run_tasks(q, n);
        accept_one(q, "tail-queued", 5, "still here");
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        agent_queue_free(q); /* no eviction before the "restart" */

        /* Replay ends with at most the limit of finished tasks in memory. */
        q = open_queue(f);
        AgentQueueStats st;
        agent_queue_get_stats(q, &st);
        g_assert_cmpuint(st.n_tasks, ==, (size_t) n + 1);
        g_assert_cmpuint(st.n_in_memory, ==, AGENT_QUEUE_KEEP_FINISHED + 1);
        g_assert_cmpuint(st.n_corrupt, ==, 0);
        g_assert_null(agent_queue_find(q, "e0000"));
        AgentTaskRequest req = { .id = "e0000", .sender_uid = 1000, .priority = 5, .text = "again", .sender = "alice" };
        AgentTask *d = NULL;
        g_assert_cmpint(agent_queue_accept(q, &req, 1, &d), ==, 2);
        AgentTaskRequest other = { .id = "e0000", .sender_uid = 0, .priority = 5, .text = "again" };
        g_assert_cmpint(agent_queue_accept(q, &other, 1, &d), ==, -EEXIST);

        /* Compaction keeps the tasks in memory and the counters of the evicted ones. */
        AgentTask *t = agent_queue_find(q, "tail-queued");
        g_assert_cmpint(agent_queue_start(q, t, 1), ==, 0);
        g_assert_cmpint(agent_queue_finish(q, t, AGENT_TASK_CANCELLED, "c", 2), ==, 0);
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        g_assert_cmpuint(agent_queue_evict(q), ==, 1);
        g_assert_cmpint(agent_queue_compact(q), ==, 1);
        agent_queue_free(q);

        q = open_queue(f);
        agent_queue_get_stats(q, &st);
        g_assert_cmpuint(st.n_tasks, ==, (size_t) n + 1);
        g_assert_cmpuint(st.n_in_memory, ==, AGENT_QUEUE_KEEP_FINISHED);
        g_assert_cmpuint(st.n_records, ==, AGENT_QUEUE_KEEP_FINISHED + 1);
        g_assert_cmpuint(st.n_corrupt, ==, 0);
        g_assert_cmpuint(st.n_done, ==, (uint64_t) n - n / 5);
        g_assert_cmpuint(st.n_failed, ==, (uint64_t) n / 5);
        g_assert_cmpuint(st.n_cancelled, ==, 1);
        g_assert_cmpint(agent_queue_find(q, "tail-queued")->status, ==, AGENT_TASK_CANCELLED);
        req.id = "e0001";
        g_assert_cmpint(agent_queue_accept(q, &req, 1, &d), ==, 2);
        _cleanup_(agent_task_freep) AgentTask *old = NULL;
        g_assert_cmpint(agent_queue_load_finished(q, "e0001", &old), ==, 0);
        g_assert_cmpint(old->status, ==, AGENT_TASK_DONE);
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

/* Results are valid text within their limits whatever bytes came: cut on a character boundary
 * with a note, bytes that are not UTF-8 replaced, both recorded with the original size. */
static void test_result_text(void) {
        g_autofree char *a = NULL, *b = NULL, *c = NULL, *d = NULL, *e = NULL, *f = NULL;
        AgentResultInfo i;

        g_assert_cmpint(agent_result_text("fine \xc3\xa9", 7, 7, 100, &a, &i), ==, 0);
        g_assert_cmpstr(a, ==, "fine \xc3\xa9");
        g_assert_false(i.truncated);
        g_assert_false(i.replaced);
        g_assert_cmpuint(i.size, ==, 7);

        g_assert_cmpint(agent_result_text("\xff\0x", 3, 3, 100, &b, &i), ==, 0);
        g_assert_cmpstr(b, ==, "\xef\xbf\xbd\xef\xbf\xbdx");
        g_assert_true(i.replaced);
        g_assert_false(i.truncated);
        g_assert_cmpuint(i.size, ==, 3);

        /* "a" + 600 × "é", over a limit of 1000: cut between two "é", the note says so. */
        GString *g = g_string_new("a");
        for (int k = 0; k < 600; k++)
                g_string_append(g, "\xc3\xa9");
        g_assert_cmpint(agent_result_text(g->str, g->len, g->len, 1000, &c, &i), ==, 0);
        g_assert_true(i.truncated);
        g_assert_false(i.replaced);
        g_assert_cmpuint(i.size, ==, 1201);
        g_assert_cmpuint(strlen(c), <=, 1000);
        g_assert_true(g_utf8_validate(c, -1, NULL));
        g_autofree char *note = g_strdup_printf("\n[truncated: 1201 bytes, the first %zu kept]",
                                                (size_t) (strstr(c, "\n[truncated") - c));
        g_assert_true(g_str_has_suffix(c, note));
        g_assert_true(g_str_has_prefix(c, "a\xc3\xa9"));

        /* The producer's bytes beyond len were dropped: marked even when the rest fits. */
        g_assert_cmpint(agent_result_text(g->str, 10, 5000, 1000, &d, &i), ==, 0);
        g_assert_true(i.truncated);
        g_assert_cmpuint(i.size, ==, 5000);
        g_assert_cmpstr(d, ==, "a\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\n[truncated: 5000 bytes, the first 9 kept]");

        /* A whole noncharacter at the read limit is replaced, not dropped as if cut short. */
        g_assert_cmpint(agent_result_text("a\xef\xbf\xbf", 4, 5000, 1000, &f, &i), ==, 0);
        g_assert_true(i.truncated);
        g_assert_true(i.replaced);
        g_assert_cmpstr(f, ==, "a\xef\xbf\xbd\n[truncated: 5000 bytes, the first 4 kept]");

        /* Replacement grows the text past the limit: cut again. */
        char raw[600];
        memset(raw, 0xff, sizeof(raw));
        g_assert_cmpint(agent_result_text(raw, sizeof(raw), sizeof(raw), 1000, &e, &i), ==, 0);
        g_assert_true(i.truncated);
        g_assert_true(i.replaced);
        g_assert_cmpuint(strlen(e), <=, 1000);
        g_assert_true(g_utf8_validate(e, -1, NULL));
        g_string_free(g, true);
}

static void test_result_invalid_bytes(Fixture *f, gconstpointer data) {
        AgentQueue *q = open_queue(f);
        GString *big = g_string_new("a");
        for (int k = 0; k < 600000; k++)
                g_string_append(big, "\xc3\xa9");
        /* The session read the first AGENT_QUEUE_RESULT_MAX bytes of 1200001. */
        AgentTask *t = accept_one(q, "big", 5, "x");
        g_assert_cmpint(agent_queue_start(q, t, 1), ==, 0);
        g_assert_cmpint(agent_queue_finish_output(q, t, AGENT_TASK_DONE, big->str, AGENT_QUEUE_RESULT_MAX, big->len, 2),
                        ==, 0);
        g_assert_true(t->result_info.truncated);
        g_assert_cmpuint(t->result_info.size, ==, 1200001);
        g_assert_cmpuint(strlen(t->result), <=, AGENT_QUEUE_RESULT_MAX);
        g_assert_true(g_utf8_validate(t->result, -1, NULL));

        AgentTask *raw = accept_one(q, "raw", 5, "y");
        g_assert_cmpint(agent_queue_start(q, raw, 1), ==, 0);
        g_assert_cmpint(agent_queue_finish_output(q, raw, AGENT_TASK_DONE, "\xff\xfe ok", 5, 5, 2), ==, 0);
        g_assert_cmpstr(raw->result, ==, "\xef\xbf\xbd\xef\xbf\xbd ok");
        g_assert_true(raw->result_info.replaced);

        /* A failure reason of invalid bytes, longer than the limit. */
        AgentTask *fl = accept_one(q, "fl", 5, "z");
        g_assert_cmpint(agent_queue_start(q, fl, 1), ==, 0);
        g_autofree char *reason = g_strnfill(AGENT_QUEUE_REASON_MAX + 10, '\xe9');
        g_assert_cmpint(agent_queue_finish(q, fl, AGENT_TASK_FAILED, reason, 2), ==, 0);
        g_assert_true(fl->result_info.truncated && fl->result_info.replaced);
        g_assert_cmpuint(fl->result_info.size, ==, AGENT_QUEUE_REASON_MAX + 10);
        g_assert_cmpuint(strlen(fl->result), <=, AGENT_QUEUE_REASON_MAX);
        g_assert_true(g_utf8_validate(fl->result, -1, NULL));
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        for (size_t k = 0; k < 3; k++)
                g_assert_cmpint(agent_queue_write_files(q, agent_queue_find(q, (const char *[]) { "big", "raw", "fl" }[k])),
                                ==, 0);
        agent_queue_free(q);

        /* Replay keeps the marks; after eviction the finished record carries them. */
        q = open_queue(f);
        t = agent_queue_find(q, "big");
        g_assert_true(t->result_info.truncated);
        g_assert_cmpuint(t->result_info.size, ==, 1200001);
        g_assert_true(agent_queue_find(q, "raw")->result_info.replaced);
        g_autofree char *res = NULL;
        AgentResultInfo info;
        g_assert_cmpint(agent_queue_read_result(q, agent_queue_find(q, "raw"), &res, &info), ==, 0);
        g_assert_true(info.replaced);
        g_assert_cmpuint(info.size, ==, 5);
        agent_queue_set_keep_finished(q, 0);
        g_assert_cmpuint(agent_queue_evict(q), ==, 3);
        _cleanup_(agent_task_freep) AgentTask *ev = NULL;
        g_assert_cmpint(agent_queue_load_finished(q, "big", &ev), ==, 0);
        g_autofree char *evres = NULL;
        g_assert_cmpint(agent_queue_read_result(q, ev, &evres, &info), ==, 0);
        g_assert_true(info.truncated);
        g_assert_cmpuint(info.size, ==, 1200001);
        g_assert_true(g_utf8_validate(evres, -1, NULL));
        g_assert_nonnull(strstr(evres, "\n[truncated: 1200001 bytes, the first "));
        agent_queue_free(q);

        /* A response file of raw bytes (an older version, or replaced by someone): read as text. */
        g_autofree char *rf = g_build_filename(f->dir, "outbox", "raw.response", NULL);
        g_assert_cmpint(unlink(rf), ==, 0);
        g_assert_true(g_file_set_contents(rf, "caf\xe9", 4, NULL));
        q = open_queue(f);
        _cleanup_(agent_task_freep) AgentTask *rt = NULL;
        g_assert_cmpint(agent_queue_load_finished(q, "raw", &rt), ==, 0);
        g_autofree char *rres = NULL;
        g_assert_cmpint(agent_queue_read_result(q, rt, &rres, &info), ==, 0);
        g_assert_cmpstr(rres, ==, "caf\xef\xbf\xbd");
        g_assert_true(info.replaced);
        agent_queue_free(q);
        g_string_free(big, true);
}

/* A journal written before results were made text: a split character and raw bytes in an end
 * record come back as valid text. */
static void test_result_replay_old_journal(Fixture *f, gconstpointer data) {
        append_raw(f, "{\"op\":\"accept\",\"id\":\"old\",\"uid\":1000,\"sender\":\"alice\",\"prio\":5,\"ts\":1,\"text\":\"t\"}\n"
                      "{\"op\":\"start\",\"id\":\"old\",\"ts\":2}\n"
                      "{\"op\":\"end\",\"id\":\"old\",\"status\":\"done\",\"ts\":3,\"result\":\"a\xc3\xa9\xc3\"}\n"
                      "{\"op\":\"accept\",\"id\":\"old2\",\"uid\":1000,\"sender\":\"alice\",\"prio\":5,\"ts\":1,\"text\":\"t\"}\n"
                      "{\"op\":\"end\",\"id\":\"old2\",\"status\":\"failed\",\"ts\":3,\"result\":\"x\xff\"}\n");
        AgentQueue *q = open_queue(f);
        AgentTask *t = agent_queue_find(q, "old");
        g_assert_cmpstr(t->result, ==, "a\xc3\xa9\xef\xbf\xbd");
        g_assert_true(t->result_info.replaced);
        g_assert_cmpuint(t->result_info.size, ==, 4);
        g_assert_cmpstr(agent_queue_find(q, "old2")->result, ==, "x\xef\xbf\xbd");
        agent_queue_free(q);
}

/* The failure reason of a session: its stderr tail, whole characters only, any bytes kept for the
 * queue to replace and mark. */
static void test_session_exit_reason(void) {
        _cleanup_free_ AgentSession *s = calloc(1, sizeof(AgentSession));
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL;
        size_t len;

        s->exit_status = 3;
        g_assert_cmpint(agent_session_exit_reason(s, "/bin/x", &a, &len), ==, 0);
        g_assert_cmpstr(a, ==, "/bin/x exited with status 3 and wrote nothing on stderr");

        memcpy(s->err, "\n bad \xff\0byte \n", 13);
        s->err_len = s->err_size = 13;
        g_assert_cmpint(agent_session_exit_reason(s, "/bin/x", &b, &len), ==, 0);
        g_assert_cmpuint(len, ==, 29 + 10);
        g_assert_cmpmem(b, len, "/bin/x exited with status 3: bad \xff\0byte", 39);

        /* The ring lost its front in the middle of an "é": the tail starts at the next one. */
        for (size_t i = 0; i < AGENT_SESSION_STDERR_TAIL; i += 2)
                memcpy(s->err + i, "\xa9\xc3", 2);
        s->err_len = AGENT_SESSION_STDERR_TAIL;
        s->err_size = 3 * AGENT_SESSION_STDERR_TAIL;
        g_assert_cmpint(agent_session_exit_reason(s, "/bin/x", &c, &len), ==, 0);
        g_assert_true(g_str_has_prefix(c, "/bin/x exited with status 3: ... \xc3\xa9\xc3\xa9"));
        g_assert_cmpuint(len, ==, 33 + AGENT_SESSION_STDERR_TAIL - 1);
        g_assert_true(g_utf8_validate(c, (gssize) len - 1, NULL)); /* ends in a lone lead byte */
}

/* A service killed mid-write leaves temp files; the next instance removes them once it holds the
 * lock (and only then: a second opener waiting for the lock removes nothing). */
static void test_stale_temps(Fixture *f, gconstpointer data) {
        AgentQueue *q = open_queue(f);
        agent_queue_free(q);
        static const char * const left[] = { "queue/.T-1.json.aB3xY9", "queue/finished/.T-1.json.zzzzzz",
                                             "outbox/.T-1.response.Q1w2E3", "queue/.journal.compact" };
        for (size_t i = 0; i < G_N_ELEMENTS(left); i++) {
                g_autofree char *p = g_build_filename(f->dir, left[i], NULL);
                g_assert_true(g_file_set_contents(p, "half", -1, NULL));
        }
        g_autofree char *kept = g_build_filename(f->dir, "outbox", ".keep", NULL);
        g_assert_true(g_file_set_contents(kept, "", -1, NULL));

        q = open_queue(f);
        AgentQueue *q2 = NULL;
        for (size_t i = 0; i < G_N_ELEMENTS(left); i++) {
                g_autofree char *p = g_build_filename(f->dir, left[i], NULL);
                g_assert_false(g_file_test(p, G_FILE_TEST_EXISTS));
        }
        g_assert_true(g_file_test(kept, G_FILE_TEST_EXISTS));

        /* While q holds the lock, a waiting opener sweeps nothing. */
        g_autofree char *busy = g_build_filename(f->dir, "queue", "finished", ".T-2.json.aaaaaa", NULL);
        g_assert_true(g_file_set_contents(busy, "in progress", -1, NULL));
        g_assert_cmpint(agent_queue_open(f->dfd, 50 * USEC_PER_MSEC, &q2), ==, -EWOULDBLOCK);
        g_assert_true(g_file_test(busy, G_FILE_TEST_EXISTS));
        agent_queue_free(q);
}

static void set_mtime(Fixture *f, const char *rel, uint64_t usec) {
        struct timespec ts = { .tv_sec = (time_t) (usec / USEC_PER_SEC), .tv_nsec = 0 };
        g_assert_cmpint(utimensat(f->dfd, rel, (const struct timespec[2]) { ts, ts }, AT_SYMLINK_NOFOLLOW), ==, 0);
}

static bool exists_at(Fixture *f, const char *rel) {
        return faccessat(f->dfd, rel, F_OK, AT_SYMLINK_NOFOLLOW) >= 0;
}

/* Runs a retention pass to its end; returns how many tasks went, *ret_calls how many steps. */
static size_t prune_all(AgentQueue *q, uint64_t older_than, size_t keep, size_t budget, unsigned *ret_calls) {
        size_t total = 0, n;
        unsigned calls = 0;
        int r;
        do {
                r = agent_queue_prune(q, older_than, keep, budget, &n);
                g_assert_cmpint(r, >=, 0);
                total += n;
                g_assert_cmpuint(++calls, <, 1000);
        } while (r > 0);
        if (ret_calls)
                *ret_calls = calls;
        return total;
}

static void test_prune(Fixture *f, gconstpointer data) {
        const uint64_t day = 24ULL * 3600 * USEC_PER_SEC, now = con_now(CLOCK_REALTIME);
        AgentQueue *q = open_queue(f);
        agent_queue_set_keep_finished(q, 2);
        run_tasks(q, 10);
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        g_assert_cmpuint(agent_queue_evict(q), ==, 8);
        g_assert_cmpint(agent_queue_write_all_files(q), ==, 0);
        g_assert_false(agent_queue_want_compact(q));
        /* e0000..e0004 finished 40 days ago (e0004 failed), e0005..e0007 a few seconds ago; e0008
         * and e0009 are in memory. */
        char rel[64];
        for (int i = 0; i < 10; i++) {
                (void) snprintf(rel, sizeof(rel), "queue/finished/e%04d.json", i);
                set_mtime(f, rel, i < 5 ? now - 40 * day : i < 8 ? now - (uint64_t) (8 - i) * USEC_PER_SEC : now);
        }
        /* Planted links are removed as links, never followed: the file they point at stays. */
        g_autofree char *victim = g_build_filename(f->dir, "victim", NULL);
        g_assert_true(g_file_set_contents(victim, "keep me", -1, NULL));
        g_assert_cmpint(unlinkat(f->dfd, "outbox/e0001.response", 0), ==, 0);
        g_assert_cmpint(symlinkat(victim, f->dfd, "outbox/e0001.response"), ==, 0);
        g_assert_cmpint(symlinkat(victim, f->dfd, "queue/finished/link.json"), ==, 0);
        set_mtime(f, "queue/finished/link.json", now - 40 * day);

        /* By age, a few entries per step. */
        unsigned calls;
        g_assert_cmpuint(prune_all(q, now - 30 * day, 100, 2, &calls), ==, 5);
        g_assert_cmpuint(calls, >, 3);
        for (int i = 0; i < 5; i++) {
                char id[16];
                (void) snprintf(id, sizeof(id), "e%04d", i);
                AgentTask *none = NULL;
                g_assert_cmpint(agent_queue_load_finished(q, id, &none), ==, -ENOENT);
                g_assert_false(agent_queue_known_on_disk(q, id));
        }
        g_assert_false(exists_at(f, "outbox/e0000.response"));
        g_assert_false(exists_at(f, "processed/e0000.task"));
        g_assert_false(exists_at(f, "failed/e0004.task"));
        g_assert_false(exists_at(f, "failed/e0004.reason"));
        g_assert_false(exists_at(f, "outbox/e0001.response"));
        g_autofree char *v = NULL;
        g_assert_true(g_file_get_contents(victim, &v, NULL, NULL));
        g_assert_cmpstr(v, ==, "keep me");
        g_assert_true(exists_at(f, "queue/finished/link.json"));
        g_assert_true(exists_at(f, "outbox/e0005.response"));
        g_assert_true(exists_at(f, "queue/finished/e0007.json"));
        /* The journal still holds them: it is compacted at the next idle moment. */
        g_assert_true(agent_queue_want_compact(q));
        g_assert_cmpint(agent_queue_compact(q), ==, 1);
        g_assert_false(agent_queue_want_compact(q));

        /* A removed id is free again, for any sender. */
        AgentTaskRequest other = { .id = "e0002", .sender_uid = 1001, .priority = 5, .text = "mine now" };
        AgentTask *t = NULL;
        g_assert_cmpint(agent_queue_accept(q, &other, 1, &t), ==, 0);
        g_assert_nonnull(t);
        g_assert_cmpint(agent_queue_commit(q), ==, 0);

        /* By count: the 3 most recent records stay (those in memory among them, never removed):
         * e0008, e0009 and e0007; e0005 and e0006 go. Nothing for its age. */
        g_assert_cmpuint(prune_all(q, 0, 3, 100, NULL), ==, 2);
        g_assert_false(exists_at(f, "queue/finished/e0005.json"));
        g_assert_false(exists_at(f, "outbox/e0006.response"));
        g_assert_true(exists_at(f, "queue/finished/e0007.json"));
        g_assert_true(exists_at(f, "queue/finished/e0008.json"));
        g_assert_true(exists_at(f, "queue/finished/e0009.json"));
        /* Tasks in memory stay whatever their count or age. */
        set_mtime(f, "queue/finished/e0009.json", now - 40 * day);
        g_assert_cmpuint(prune_all(q, now - 30 * day, 1, 1, NULL), ==, 1); /* e0007 */
        g_assert_true(exists_at(f, "queue/finished/e0008.json"));
        g_assert_true(exists_at(f, "queue/finished/e0009.json"));
        g_assert_nonnull(agent_queue_find(q, "e0009"));
        /* A pass can be left in the middle: freeing the queue frees it. */
        g_assert_cmpint(agent_queue_prune(q, 0, 100, 1, NULL), ==, 1);
        agent_queue_free(q);
}

/* A journal not compacted since holds tasks past the retention: replay neither keeps them in
 * memory nor writes their files again; without a retention their record gets its end as mtime. */
static void test_prune_replay(Fixture *f, gconstpointer data) {
        AgentQueue *q = open_queue(f);
        run_tasks(q, 3); /* finished at 2 us after the epoch */
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        g_assert_cmpint(agent_queue_write_all_files(q), ==, 0);
        agent_queue_free(q);
        g_assert_cmpint(unlinkat(f->dfd, "queue/finished/e0000.json", 0), ==, 0);
        g_assert_cmpint(unlinkat(f->dfd, "outbox/e0000.response", 0), ==, 0);

        q = NULL;
        g_assert_cmpint(agent_queue_open_retained(f->dfd, 0, 30ULL * 24 * 3600 * USEC_PER_SEC, &q), ==, 0);
        g_assert_null(agent_queue_find(q, "e0000"));
        g_assert_null(agent_queue_find(q, "e0001"));
        g_assert_cmpint(agent_queue_write_all_files(q), ==, 0);
        g_assert_false(exists_at(f, "queue/finished/e0000.json"));
        g_assert_false(exists_at(f, "outbox/e0000.response"));
        agent_queue_free(q);

        q = open_queue(f);
        g_assert_nonnull(agent_queue_find(q, "e0000"));
        g_assert_cmpint(agent_queue_write_all_files(q), ==, 0);
        struct stat st;
        g_assert_cmpint(fstatat(f->dfd, "queue/finished/e0000.json", &st, AT_SYMLINK_NOFOLLOW), ==, 0);
        g_assert_cmpint(st.st_mtim.tv_sec, ==, 0);
        g_assert_true(exists_at(f, "outbox/e0000.response"));
        agent_queue_free(q);
}

/* A task the retention removed while the agent was busy (no compaction since), its id given again
 * to a new task, then a restart: the journal's "forget" record keeps the removed task gone (not in
 * memory, its files not written again) and the new task kept. data: bit 0 removed for its count
 * (system.result_max) rather than its age, bit 1 the id reused by the same sender. */
static void test_prune_forget_replay(Fixture *f, gconstpointer data) {
        const uint64_t day = 24ULL * 3600 * USEC_PER_SEC, ret = 30 * day, now = con_now(CLOCK_REALTIME);
        const bool by_count = GPOINTER_TO_UINT(data) & 1, same = GPOINTER_TO_UINT(data) & 2;
        AgentQueue *q = open_queue(f);
        agent_queue_set_keep_finished(q, 0);
        AgentTaskRequest alice = { .id = "report", .sender_uid = 1000, .sender = "alice", .priority = 5,
                                   .text = "alice's task" };
        AgentTask *t = NULL;
        g_assert_cmpint(agent_queue_accept(q, &alice, now - 41 * day, &t), ==, 0);
        g_assert_cmpint(agent_queue_start(q, t, now - 41 * day), ==, 0);
        g_assert_cmpint(agent_queue_finish(q, t, AGENT_TASK_DONE, "alice's answer",
                                           by_count ? now - 10 * USEC_PER_SEC : now - 40 * day), ==, 0);
        /* Something queued: the agent is busy, no compaction. */
        AgentTaskRequest busy = { .id = "busy", .sender_uid = 1000, .sender = "alice", .priority = 0, .text = "x" };
        g_assert_cmpint(agent_queue_accept(q, &busy, now, &t), ==, 0);
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        g_assert_cmpint(agent_queue_write_all_files(q), ==, 0);
        g_assert_cmpuint(agent_queue_evict(q), ==, 1);
        g_assert_true(exists_at(f, "outbox/report.response"));
        if (!by_count)
                set_mtime(f, "queue/finished/report.json", now - 40 * day);
        g_assert_cmpuint(prune_all(q, by_count ? 0 : now - ret, by_count ? 0 : 100, 100, NULL), ==, 1);
        g_assert_false(exists_at(f, "queue/finished/report.json"));
        g_assert_false(exists_at(f, "outbox/report.response"));
        g_assert_false(agent_queue_want_compact(q)); /* busy */
        agent_queue_free(q);

        /* A restart before any compaction: the removed task stays removed. */
        g_assert_cmpint(agent_queue_open_retained(f->dfd, 0, ret, &q), ==, 0);
        g_assert_null(agent_queue_find(q, "report"));
        g_assert_nonnull(agent_queue_find(q, "busy"));
        g_assert_cmpint(agent_queue_write_all_files(q), ==, 0);
        g_assert_false(exists_at(f, "queue/finished/report.json"));
        g_assert_false(exists_at(f, "outbox/report.response"));
        g_assert_false(exists_at(f, "processed/report.task"));
        AgentQueueStats st;
        agent_queue_get_stats(q, &st);
        g_assert_cmpuint(st.n_tasks, ==, 2); /* the removed one counted as accepted */
        g_assert_cmpuint(st.n_done, ==, 1);
        g_assert_cmpuint(st.n_corrupt, ==, 0);

        /* The id is free: another sender (or the same) gets a new task with it, acknowledged. */
        AgentTaskRequest again = { .id = "report", .sender_uid = same ? 1000 : 2000, .sender = same ? "alice" : "bob",
                                   .priority = 5, .text = "the new task" };
        g_assert_cmpint(agent_queue_accept(q, &again, now, &t), ==, 0);
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        agent_queue_free(q);

        /* Another restart, still before a compaction: the new task is the one kept. */
        g_assert_cmpint(agent_queue_open_retained(f->dfd, 0, ret, &q), ==, 0);
        t = agent_queue_find(q, "report");
        g_assert_nonnull(t);
        g_assert_cmpuint(t->sender_uid, ==, again.sender_uid);
        g_assert_cmpstr(t->text, ==, "the new task");
        g_assert_cmpint(t->status, ==, AGENT_TASK_QUEUED);
        g_assert_cmpint(agent_queue_write_all_files(q), ==, 0);
        g_assert_false(exists_at(f, "outbox/report.response"));
        AgentTask *d = NULL;
        g_assert_cmpint(agent_queue_load_finished(q, "report", &d), ==, -ENOENT);
        agent_queue_get_stats(q, &st);
        g_assert_cmpuint(st.n_tasks, ==, 3);
        g_assert_cmpuint(st.n_queued, ==, 2);
        g_assert_cmpuint(st.n_corrupt, ==, 0);

        /* It runs and its answer is the one written; a restart and a compaction keep it. */
        g_assert_cmpint(agent_queue_start(q, t, now), ==, 0);
        g_assert_cmpint(agent_queue_finish(q, t, AGENT_TASK_DONE, "the new answer", now), ==, 0);
        t = agent_queue_find(q, "busy");
        g_assert_cmpint(agent_queue_start(q, t, now), ==, 0);
        g_assert_cmpint(agent_queue_finish(q, t, AGENT_TASK_DONE, "ok", now), ==, 0);
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        g_assert_cmpint(agent_queue_write_all_files(q), ==, 0);
        agent_queue_free(q);
        g_assert_cmpint(agent_queue_open_retained(f->dfd, 0, ret, &q), ==, 0);
        g_assert_true(agent_queue_want_compact(q)); /* removed tasks the journal still held */
        g_assert_cmpint(agent_queue_compact(q), ==, 1);
        agent_queue_free(q);
        g_assert_cmpint(agent_queue_open_retained(f->dfd, 0, ret, &q), ==, 0);
        t = agent_queue_find(q, "report");
        g_assert_nonnull(t);
        g_assert_cmpuint(t->sender_uid, ==, again.sender_uid);
        g_autofree char *resp = read_file_at(f, "outbox/report.response");
        g_assert_cmpstr(resp, ==, "the new answer");
        agent_queue_get_stats(q, &st);
        g_assert_cmpuint(st.n_tasks, ==, 3);
        g_assert_cmpuint(st.n_done, ==, 3);
        agent_queue_free(q);
}

/* An id freed without a "forget" record: a task past the retention leaves memory at open without
 * its files ever written (they never reached the disk), so its id is free; a task accepted under it
 * and acknowledged is the one a restart keeps (not the old task's accept, earlier in the journal).
 * A retry of the new task (same id, same sender) stays that one task. data: 1 when the id is
 * reused by the same sender. */
static void test_freed_id_replay(Fixture *f, gconstpointer data) {
        const uint64_t hour = 3600ULL * USEC_PER_SEC, now = con_now(CLOCK_REALTIME);
        const bool same = GPOINTER_TO_UINT(data);
        AgentQueue *q = NULL;
        AgentTask *t = NULL;
        g_assert_cmpint(agent_queue_open_retained(f->dfd, 0, hour, &q), ==, 0);
        AgentTaskRequest alice = { .id = "x1", .sender_uid = 1001, .sender = "alice", .text = "alice's task" };
        g_assert_cmpint(agent_queue_accept(q, &alice, now - 2 * hour, &t), ==, 0);
        g_assert_cmpint(agent_queue_start(q, t, now - 2 * hour), ==, 0);
        g_assert_cmpint(agent_queue_finish(q, t, AGENT_TASK_DONE, "alice's answer", now - 2 * hour), ==, 0);
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        agent_queue_free(q); /* its files were never written */

        /* Past the retention: evicted at open, no file names it, the id is free. */
        g_assert_cmpint(agent_queue_open_retained(f->dfd, 0, hour, &q), ==, 0);
        g_assert_null(agent_queue_find(q, "x1"));
        g_assert_false(agent_queue_known_on_disk(q, "x1"));
        AgentTaskRequest bob = { .id = "x1", .sender_uid = same ? 1001 : 1002, .sender = same ? "alice" : "bob",
                                 .text = "the new task" };
        g_assert_cmpint(agent_queue_accept(q, &bob, now, &t), ==, 0);
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        agent_queue_free(q);

        /* A restart before any compaction keeps the new task, queued; the old one is counted. */
        for (int round = 0; round < 2; round++) {
                g_assert_cmpint(agent_queue_open_retained(f->dfd, 0, hour, &q), ==, 0);
                t = agent_queue_find(q, "x1");
                g_assert_nonnull(t);
                g_assert_cmpuint(t->sender_uid, ==, bob.sender_uid);
                g_assert_cmpstr(t->sender, ==, bob.sender);
                g_assert_cmpstr(t->text, ==, "the new task");
                g_assert_cmpint(t->status, ==, AGENT_TASK_QUEUED);
                AgentQueueStats st;
                agent_queue_get_stats(q, &st);
                g_assert_cmpuint(st.n_tasks, ==, 2);
                g_assert_cmpuint(st.n_queued, ==, 1);
                g_assert_cmpuint(st.n_done, ==, 1);
                g_assert_cmpuint(st.n_corrupt, ==, 0);
                g_assert_true(agent_queue_peek(q) == t);
                /* Its sender's retry is the same task: nothing new recorded. */
                AgentTask *again = NULL;
                g_assert_cmpint(agent_queue_accept(q, &bob, now, &again), ==, 1);
                g_assert_true(again == t);
                g_assert_false(agent_queue_has_batch(q));
                agent_queue_free(q);
        }

        /* It runs once; after a restart it is done, not queued again, and its answer is written. */
        g_assert_cmpint(agent_queue_open_retained(f->dfd, 0, hour, &q), ==, 0);
        t = agent_queue_peek(q);
        g_assert_nonnull(t);
        g_assert_cmpint(agent_queue_start(q, t, now), ==, 0);
        g_assert_cmpint(agent_queue_finish(q, t, AGENT_TASK_DONE, "the new answer", now), ==, 0);
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        g_assert_cmpint(agent_queue_write_all_files(q), ==, 0);
        agent_queue_free(q);
        g_assert_cmpint(agent_queue_open_retained(f->dfd, 0, hour, &q), ==, 0);
        t = agent_queue_find(q, "x1");
        g_assert_nonnull(t);
        g_assert_cmpint(t->status, ==, AGENT_TASK_DONE);
        g_assert_null(agent_queue_peek(q));
        g_assert_cmpuint(t->tries, ==, 1);
        g_autofree char *resp = read_file_at(f, "outbox/x1.response");
        g_assert_cmpstr(resp, ==, "the new answer");
        /* Compacted, the same. */
        g_assert_cmpint(agent_queue_compact(q), ==, 1);
        agent_queue_free(q);
        g_assert_cmpint(agent_queue_open_retained(f->dfd, 0, hour, &q), ==, 0);
        t = agent_queue_find(q, "x1");
        g_assert_nonnull(t);
        g_assert_cmpuint(t->sender_uid, ==, bob.sender_uid);
        g_assert_cmpint(t->status, ==, AGENT_TASK_DONE);
        AgentQueueStats st;
        agent_queue_get_stats(q, &st);
        g_assert_cmpuint(st.n_tasks, ==, 2);
        g_assert_cmpuint(st.n_done, ==, 2);
        agent_queue_free(q);
}

/* A second accept of an id whose task is still queued or running is never taken (the first wins):
 * a journal holding one (a live service never writes it) runs the task once. */
static void test_second_accept_unfinished(Fixture *f, gconstpointer data) {
        append_raw(f, "{\"op\":\"accept\",\"id\":\"y\",\"uid\":1,\"sender\":\"a\",\"ts\":1,\"text\":\"first\"}\n"
                      "{\"op\":\"start\",\"id\":\"y\",\"ts\":2}\n"
                      "{\"op\":\"accept\",\"id\":\"y\",\"uid\":2,\"sender\":\"b\",\"ts\":3,\"text\":\"second\"}\n");
        AgentQueue *q = open_queue(f);
        AgentTask *t = agent_queue_find(q, "y");
        g_assert_nonnull(t);
        g_assert_cmpstr(t->text, ==, "first");
        g_assert_cmpint(t->status, ==, AGENT_TASK_QUEUED);
        g_assert_cmpuint(t->tries, ==, 1);
        AgentQueueStats st;
        agent_queue_get_stats(q, &st);
        g_assert_cmpuint(st.n_tasks, ==, 1);
        agent_queue_free(q);
}

/* A commit that fails (here: the file size limit, as a full disk would) is final: its callers are
 * told nothing was accepted, so neither that batch nor anything after it is written by a later
 * commit (the service's exit commits once more), and a retention step's files stay. */
static void test_commit_failure_final(Fixture *f, gconstpointer data) {
        const uint64_t day = 24ULL * 3600 * USEC_PER_SEC, now = con_now(CLOCK_REALTIME);
        AgentQueue *q = open_queue(f);
        agent_queue_set_keep_finished(q, 0);
        run_tasks(q, 1); /* e0000, done */
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        g_assert_cmpint(agent_queue_write_all_files(q), ==, 0);
        g_assert_cmpuint(agent_queue_evict(q), ==, 1);
        set_mtime(f, "queue/finished/e0000.json", now - 40 * day);
        AgentTask *a = accept_one(q, "kept", 5, "acknowledged");
        g_assert_nonnull(a);
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        AgentQueueStats st;
        agent_queue_get_stats(q, &st);

        /* The journal may not grow: the next write fails with EFBIG. */
        struct rlimit old, lim;
        g_assert_cmpint(getrlimit(RLIMIT_FSIZE, &old), ==, 0);
        lim = old;
        lim.rlim_cur = (rlim_t) st.journal_size;
        void (*sig)(int) = signal(SIGXFSZ, SIG_IGN);
        g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &lim), ==, 0);
        accept_one(q, "refused", 5, "answered StorageFailed");
        int r = agent_queue_commit(q);
        /* The retention step's forget record cannot be written either: the files stay. */
        int p = agent_queue_prune(q, now - 30 * day, 100, 100, NULL);
        g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &old), ==, 0);
        (void) signal(SIGXFSZ, sig);
        g_assert_cmpint(r, ==, -EFBIG);
        g_assert_cmpint(p, ==, -EFBIG);

        /* The disk has room again: still nothing is written. */
        g_assert_cmpint(agent_queue_commit(q), ==, -EFBIG);
        accept_one(q, "later", 5, "after the failure");
        g_assert_cmpint(agent_queue_commit(q), ==, -EFBIG);
        g_assert_cmpint(agent_queue_prune(q, now - 30 * day, 100, 100, NULL), ==, -EFBIG);
        g_assert_true(exists_at(f, "queue/finished/e0000.json"));
        g_assert_true(exists_at(f, "outbox/e0000.response"));
        agent_queue_free(q);

        q = open_queue(f);
        g_assert_nonnull(agent_queue_find(q, "kept"));
        g_assert_null(agent_queue_find(q, "refused"));
        g_assert_null(agent_queue_find(q, "later"));
        g_assert_true(agent_queue_known_on_disk(q, "e0000"));
        agent_queue_get_stats(q, &st);
        g_assert_cmpuint(st.n_corrupt, ==, 0);
        g_assert_false(st.torn_tail);
        agent_queue_free(q);
}

/* One finished task of SENDER (uid), its record's mtime set to MTIME, evicted from memory. */
static void finished_of_sender(Fixture *f, AgentQueue *q, const char *id, uid_t uid, const char *sender,
                               uint64_t mtime) {
        AgentTaskRequest req = { .id = id, .sender_uid = uid, .sender = sender, .priority = 5, .text = "/tasks" };
        AgentTask *t = NULL;
        g_assert_cmpint(agent_queue_accept(q, &req, mtime, &t), ==, 0);
        g_assert_cmpint(agent_queue_start(q, t, mtime), ==, 0);
        g_assert_cmpint(agent_queue_finish(q, t, AGENT_TASK_DONE, "answer", mtime), ==, 0);
        g_assert_cmpint(agent_queue_commit(q), ==, 0);
        g_assert_cmpint(agent_queue_write_new_files(q, t), ==, 0);
        g_assert_cmpuint(agent_queue_evict(q), ==, 1);
        char rel[64];
        (void) snprintf(rel, sizeof(rel), "queue/finished/%s.json", id);
        set_mtime(f, rel, mtime);
}

/* system.result_max is shared fairly between the senders (uid and principal: remote senders share
 * the gateway's uid): one sender's flood of finished tasks removes only its own results, the
 * oldest first, however old the others' are. data: the round and sender limits made tiny (the
 * pass's bounded memory: several rounds, senders beyond the limit counted as one). */
static void test_prune_fair(Fixture *f, gconstpointer data) {
        const bool tiny = GPOINTER_TO_UINT(data);
        const uint64_t now = con_now(CLOCK_REALTIME);
        AgentQueue *q = open_queue(f);
        agent_queue_set_keep_finished(q, 0);
        if (tiny)
                agent_queue_set_prune_limits(q, 3, 2);
        finished_of_sender(f, q, "alice-1", 1001, "alice", now - 1000 * USEC_PER_SEC);
        finished_of_sender(f, q, "carol-1", 900, "carol@host-c", now - 900 * USEC_PER_SEC);
        finished_of_sender(f, q, "bob-1", 1002, "bob", now - 800 * USEC_PER_SEC);
        finished_of_sender(f, q, "bob-2", 1002, "bob", now - 700 * USEC_PER_SEC);
        char id[32];
        for (int i = 0; i < 6; i++) {
                (void) snprintf(id, sizeof(id), "mallory-%d", i);
                finished_of_sender(f, q, id, 900, "mallory@host-b", now - (uint64_t) (600 - i) * USEC_PER_SEC);
        }
        /* 10 results, at most 5: alice, carol and bob (4 together) stay, mallory keeps its newest. */
        unsigned calls;
        g_assert_cmpuint(prune_all(q, 0, 5, 3, &calls), ==, 5);
        g_assert_cmpuint(agent_queue_prune_failures(q, NULL), ==, 0);
        g_assert_true(agent_queue_known_on_disk(q, "alice-1"));
        g_assert_true(agent_queue_known_on_disk(q, "carol-1"));
        g_assert_true(exists_at(f, "outbox/alice-1.response"));
        g_assert_true(agent_queue_known_on_disk(q, "bob-2"));
        g_assert_true(agent_queue_known_on_disk(q, "mallory-5"));
        for (int i = 0; i < 4; i++) {
                (void) snprintf(id, sizeof(id), "mallory-%d", i);
                g_assert_false(agent_queue_known_on_disk(q, id));
        }
        if (!tiny) {
                g_assert_true(agent_queue_known_on_disk(q, "bob-1"));
                g_assert_false(agent_queue_known_on_disk(q, "mallory-4"));
        } else {
                /* Rounds of 2 (one of the 4 senders counted as "the others", beyond the limit of 3):
                 * mallory down to 2, then a tie with bob's 2, where the oldest record goes. */
                g_assert_cmpuint(calls, >, 10);
                g_assert_false(agent_queue_known_on_disk(q, "bob-1"));
                g_assert_true(agent_queue_known_on_disk(q, "mallory-4"));
        }
        /* Under the cap: nothing more goes. */
        g_assert_cmpuint(prune_all(q, 0, 5, 3, NULL), ==, 0);
        if (tiny) {
                agent_queue_free(q);
                return;
        }

        /* With a tighter cap the senders holding the most lose first: 4 left of 5, 3 of 4. */
        g_assert_cmpuint(prune_all(q, 0, 4, 100, NULL), ==, 1);
        g_assert_true(agent_queue_known_on_disk(q, "alice-1"));
        g_assert_true(agent_queue_known_on_disk(q, "carol-1"));
        g_assert_true(agent_queue_known_on_disk(q, "mallory-5"));
        g_assert_false(agent_queue_known_on_disk(q, "bob-1")); /* bob's oldest */
        g_assert_true(agent_queue_known_on_disk(q, "bob-2"));
        if (!tiny) {
                /* Ties: the next one taken is the oldest of the senders with the most (1 each). */
                g_assert_cmpuint(prune_all(q, 0, 3, 100, NULL), ==, 1);
                g_assert_false(agent_queue_known_on_disk(q, "alice-1"));
        }
        agent_queue_free(q);

        /* Restarted before a compaction: the removed stay removed, the others known. */
        q = open_queue(f);
        g_assert_null(agent_queue_find(q, "mallory-0"));
        g_assert_true(agent_queue_known_on_disk(q, "carol-1"));
        agent_queue_free(q);
}

/* A task whose files cannot be removed (here a folder where its response was) is not counted as
 * removed: agent_queue_prune_failures() says how many and why; its record stays, the next pass
 * tries again and succeeds once the obstacle is gone. */
static void test_prune_remove_failure(Fixture *f, gconstpointer data) {
        const uint64_t day = 24ULL * 3600 * USEC_PER_SEC, now = con_now(CLOCK_REALTIME);
        AgentQueue *q = open_queue(f);
        agent_queue_set_keep_finished(q, 0);
        finished_of_sender(f, q, "stuck", 1001, "alice", now - 40 * day);
        finished_of_sender(f, q, "goes", 1001, "alice", now - 40 * day);
        g_assert_cmpint(unlinkat(f->dfd, "outbox/stuck.response", 0), ==, 0);
        g_assert_cmpint(mkdirat(f->dfd, "outbox/stuck.response", 0700), ==, 0);
        int e = 0;
        g_assert_cmpuint(prune_all(q, now - 30 * day, 100, 100, NULL), ==, 1);
        g_assert_cmpuint(agent_queue_prune_failures(q, &e), ==, 1);
        g_assert_cmpint(e, ==, -EISDIR);
        g_assert_cmpuint(agent_queue_prune_failures(q, &e), ==, 0);
        g_assert_cmpint(e, ==, 0);
        g_assert_false(agent_queue_known_on_disk(q, "goes"));
        g_assert_true(exists_at(f, "queue/finished/stuck.json"));
        g_assert_true(agent_queue_known_on_disk(q, "stuck"));
        g_assert_cmpint(unlinkat(f->dfd, "outbox/stuck.response", AT_REMOVEDIR), ==, 0);
        g_assert_cmpuint(prune_all(q, now - 30 * day, 100, 100, NULL), ==, 1);
        g_assert_cmpuint(agent_queue_prune_failures(q, NULL), ==, 0);
        g_assert_false(agent_queue_known_on_disk(q, "stuck"));
        agent_queue_free(q);
}

#define ADD(name, fn) g_test_add(name, Fixture, NULL, fixture_setup, fn, fixture_teardown)

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        ADD("/agent-queue/accept-replay-order", test_accept_replay_order);
        ADD("/agent-queue/uncommitted-lost", test_uncommitted_lost);
        ADD("/agent-queue/dedup", test_dedup);
        ADD("/agent-queue/dedup-remote-principal", test_dedup_remote_principal);
        ADD("/agent-queue/torn-tail", test_torn_tail);
        ADD("/agent-queue/corrupt-middle", test_corrupt_middle);
        ADD("/agent-queue/untrusted-journal", test_untrusted_journal);
        ADD("/agent-queue/replaced-response", test_replaced_response);
        ADD("/agent-queue/retry-counting-across-crashes", test_retry_counting_across_crashes);
        ADD("/agent-queue/requeue", test_requeue);
        ADD("/agent-queue/files", test_files);
        ADD("/agent-queue/new-files", test_new_files);
        ADD("/agent-queue/compaction", test_compaction);
        ADD("/agent-queue/lock", test_lock);
        ADD("/agent-queue/stale-temps", test_stale_temps);
        ADD("/agent-queue/evict-bound", test_evict_bound);
        ADD("/agent-queue/evict-dedup-from-disk", test_evict_dedup_from_disk);
        ADD("/agent-queue/prune", test_prune);
        ADD("/agent-queue/prune-replay", test_prune_replay);
        g_test_add("/agent-queue/prune-forget-replay/age-other-sender", Fixture, GUINT_TO_POINTER(0), fixture_setup,
                   test_prune_forget_replay, fixture_teardown);
        g_test_add("/agent-queue/prune-forget-replay/count-other-sender", Fixture, GUINT_TO_POINTER(1), fixture_setup,
                   test_prune_forget_replay, fixture_teardown);
        g_test_add("/agent-queue/prune-forget-replay/age-same-sender", Fixture, GUINT_TO_POINTER(2), fixture_setup,
                   test_prune_forget_replay, fixture_teardown);
        g_test_add("/agent-queue/prune-forget-replay/count-same-sender", Fixture, GUINT_TO_POINTER(3), fixture_setup,
                   test_prune_forget_replay, fixture_teardown);
        g_test_add("/agent-queue/freed-id-replay/other-sender", Fixture, GUINT_TO_POINTER(0), fixture_setup,
                   test_freed_id_replay, fixture_teardown);
        g_test_add("/agent-queue/freed-id-replay/same-sender", Fixture, GUINT_TO_POINTER(1), fixture_setup,
                   test_freed_id_replay, fixture_teardown);
        ADD("/agent-queue/second-accept-unfinished", test_second_accept_unfinished);
        ADD("/agent-queue/commit-failure-final", test_commit_failure_final);
        g_test_add("/agent-queue/prune-fair/default", Fixture, GUINT_TO_POINTER(0), fixture_setup, test_prune_fair,
                   fixture_teardown);
        g_test_add("/agent-queue/prune-fair/tiny-limits", Fixture, GUINT_TO_POINTER(1), fixture_setup, test_prune_fair,
                   fixture_teardown);
        ADD("/agent-queue/prune-remove-failure", test_prune_remove_failure);
        g_test_add_func("/agent-queue/result-text", test_result_text);
        g_test_add_func("/agent-queue/session-exit-reason", test_session_exit_reason);
        ADD("/agent-queue/result-invalid-bytes", test_result_invalid_bytes);
        ADD("/agent-queue/result-replay-old-journal", test_result_replay_old_journal);
        ADD("/agent-queue/evict-replay-and-compaction", test_evict_replay_and_compaction);
        g_test_add_func("/agent-queue/status-strings", test_status_strings);
        return con_test_run();
}
