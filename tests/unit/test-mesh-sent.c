/* SPDX-License-Identifier: MIT */
/* The sending gateway's records of sent tasks (services/meshd/mesh-sent.c, docs/MULTIHOST.md). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"
#include "mesh-sent.h"
#include "spool.h"
#include "test-util.h"

#define US 1000000ULL

static MeshSent sample(bool done) {
        MeshSent s = { .id = (char *) "t-1", .agent = (char *) "sysadmin", .host = (char *) "host-b",
                       .sender = (char *) "alice", .uid = 1001, .state = "working", .submitted_usec = 1000 * US,
                       .stored = true };
        if (done) {
                s.done = true;
                s.ended_usec = 2000 * US;
                s.result = (MeshResult) { .id = (char *) "t-1", .host = (char *) "host-b", .agent = (char *) "sysadmin",
                                          .from = (char *) "alice@host-a", .status = (char *) "completed",
                                          .text = (char *) "disks fine\nline two \"quoted\"", .truncated = true,
                                          .size = 77 };
        }
        return s;
}

static void test_round_trip(void) {
        for (int done = 0; done <= 1; done++) {
                MeshSent s = sample(done), back = {};
                _cleanup_free_ char *text = NULL;
                g_assert_cmpint(mesh_sent_to_text(&s, "host-a", &text), ==, 0);
                /* One line, or two with the result; each ends with a newline. */
                g_assert_true(text[strlen(text) - 1] == '\n');
                g_assert_cmpuint(strchr(text, '\n') - text + 1 == (ptrdiff_t) strlen(text), ==, !done);
                g_assert_cmpint(mesh_sent_from_text(text, strlen(text), "host-a", &back), ==, 0);
                g_assert_cmpstr(back.id, ==, "t-1");
                g_assert_cmpstr(back.agent, ==, "sysadmin");
                g_assert_cmpstr(back.host, ==, "host-b");
                g_assert_cmpstr(back.sender, ==, "alice");
                g_assert_cmpuint(back.uid, ==, 1001);
                g_assert_cmpstr(back.state, ==, "working");
                g_assert_cmpuint(back.submitted_usec, ==, 1000 * US);
                g_assert_true(back.stored);
                g_assert_cmpuint(back.done, ==, (unsigned) done);
                if (done) {
                        g_assert_cmpuint(back.ended_usec, ==, 2000 * US);
                        g_assert_cmpstr(back.result.status, ==, "completed");
                        g_assert_cmpstr(back.result.text, ==, s.result.text);
                        g_assert_true(back.result.truncated);
                        g_assert_cmpuint(back.result.size, ==, 77);
                }
                /* Read on another host: the sender is not of that host. */
                MeshSent other = {};
                g_assert_cmpint(mesh_sent_from_text(text, strlen(text), "host-c", &other), ==, done ? -EBADMSG : 0);
                mesh_sent_done(&other);
                mesh_sent_done(&back);
        }
}

static void test_invalid(void) {
        _cleanup_free_ char *text = NULL;
        MeshSent s = sample(true);
        char *t = NULL;

        /* Refused when written: a result of another task, an invalid field. */
        s.result.id = (char *) "t-2";
        g_assert_cmpint(mesh_sent_to_text(&s, "host-a", &t), ==, -EINVAL);
        s = sample(true);
        s.result.from = (char *) "bob@host-a";
        g_assert_cmpint(mesh_sent_to_text(&s, "host-a", &t), ==, -EINVAL);
        s = sample(false);
        s.state = "done";
        g_assert_cmpint(mesh_sent_to_text(&s, "host-a", &t), ==, -EINVAL);
        s = sample(false);
        s.id = (char *) "../x";
        g_assert_cmpint(mesh_sent_to_text(&s, "host-a", &t), ==, -EINVAL);
        s = sample(false);
        s.sender = (char *) "Alice!";
        g_assert_cmpint(mesh_sent_to_text(&s, "host-a", &t), ==, -EINVAL);
        g_assert_null(t);

        s = sample(true);
        g_assert_cmpint(mesh_sent_to_text(&s, "host-a", &text), ==, 0);
        const char *bad[] = {
                "",
                "{\"v\":1}",
                "{\"v\":1,\"id\":\"t-1\",\"agent\":\"sysadmin\",\"host\":\"host-b\",\"uid\":1,\"sender\":\"alice\","
                "\"state\":\"submitted\",\"ts\":1}",                                    /* no newline */
                "{\"v\":2,\"id\":\"t-1\",\"agent\":\"sysadmin\",\"host\":\"host-b\",\"uid\":1,\"sender\":\"alice\","
                "\"state\":\"submitted\",\"ts\":1}\n",
                "{\"v\":1,\"id\":\"t-1\",\"agent\":\"sysadmin\",\"host\":\"host-b\",\"uid\":-1,\"sender\":\"alice\","
                "\"state\":\"submitted\",\"ts\":1}\n",
                "{\"v\":1,\"id\":\"t-1\",\"agent\":\"sysadmin\",\"host\":\"host-b\",\"uid\":4294967295,"
                "\"sender\":\"alice\",\"state\":\"submitted\",\"ts\":1}\n",
                "{\"v\":1,\"id\":\"t-1\",\"agent\":\"sysadmin\",\"host\":\"host-b\",\"uid\":1.5,\"sender\":\"alice\","
                "\"state\":\"submitted\",\"ts\":1}\n",
                "{\"v\":1,\"id\":\"t-1\",\"agent\":\"sysadmin\",\"host\":\"Host\",\"uid\":1,\"sender\":\"alice\","
                "\"state\":\"submitted\",\"ts\":1}\n",
                "{\"v\":1,\"id\":\"t-1\",\"agent\":\"sysadmin\",\"host\":\"host-b\",\"uid\":1,\"sender\":\"alice\","
                "\"state\":\"completed\",\"ts\":1}\n",
                "{\"v\":1,\"id\":\"t-1\",\"agent\":\"sysadmin\",\"host\":\"host-b\",\"uid\":1,\"sender\":\"alice\","
                "\"state\":\"submitted\",\"ts\":1,\"end\":5}\n",                       /* ended, no result */
                "{\"v\":1,\"id\":\"t-1\",\"agent\":\"sysadmin\",\"host\":\"host-b\",\"uid\":1,\"sender\":\"alice\","
                "\"state\":\"submitted\",\"ts\":1}\n{\"v\":1}\n",
                "[1]\n",
                "{\"v\":1,\"id\":\"t-1\",\"agent\":\"sysadmin\",\"host\":\"host-b\",\"uid\":1,\"sender\":\"alice\","
                "\"state\":\"submitted\",\"ts\":1,\"stored\":1}\n",
        };
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                MeshSent b = {};
                g_assert_cmpint(mesh_sent_from_text(bad[i], strlen(bad[i]), "host-a", &b), ==, -EBADMSG);
                g_assert_null(b.id);
        }
        /* The result line cut (a torn write is never renamed into place, but a file may be broken). */
        MeshSent b = {};
        g_assert_cmpint(mesh_sent_from_text(text, strlen(text) - 1, "host-a", &b), ==, -EBADMSG);
        /* Unknown keys are ignored (a later version's). */
        const char *later = "{\"v\":1,\"id\":\"t-1\",\"agent\":\"sysadmin\",\"host\":\"host-b\",\"uid\":1,"
                            "\"sender\":\"alice\",\"state\":\"accepted\",\"ts\":1,\"priority\":5}\n";
        g_assert_cmpint(mesh_sent_from_text(later, strlen(later), "host-a", &b), ==, 0);
        g_assert_cmpstr(b.state, ==, "accepted");
        g_assert_false(b.done);
        g_assert_false(b.stored);       /* not said: the sender may send it again */
        mesh_sent_done(&b);
}

static void test_expired(void) {
        MeshSent waiting = sample(false), ended = sample(true);
        uint64_t keep = 30 * US, wait = 100 * US;
        /* Ended at 2000 s: kept 30 s after. */
        g_assert_false(mesh_sent_expired(&ended, 2030 * US, keep, wait));
        g_assert_true(mesh_sent_expired(&ended, 2031 * US, keep, wait));
        /* Sent at 1000 s, never answered: kept the stream's retention (100 s) and then 30 s. */
        g_assert_false(mesh_sent_expired(&waiting, 1130 * US, keep, wait));
        g_assert_true(mesh_sent_expired(&waiting, 1131 * US, keep, wait));
        /* A clock set back: nothing goes. */
        g_assert_false(mesh_sent_expired(&ended, 10 * US, keep, wait));
        /* No overflow with huge settings. */
        g_assert_false(mesh_sent_expired(&waiting, UINT64_MAX, UINT64_MAX, UINT64_MAX));
}

static bool exists(int dfd, const char *name) {
        struct stat st;
        return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static void test_legacy_load(void) {
        _cleanup_free_ char *dir = test_tmpdir_new();
        _cleanup_close_ int pfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        g_assert_cmpint(pfd, >=, 0);
        _cleanup_close_ int dfd = mesh_sent_open_dir(pfd, "sent");
        g_assert_cmpint(dfd, >=, 0);
        struct stat st;
        g_assert_cmpint(fstat(dfd, &st), ==, 0);
        g_assert_cmpuint(st.st_mode & 07777, ==, 0700);

        MeshSent a = sample(true), b = sample(false);
        b.id = (char *) "t-0";
        b.submitted_usec = 500 * US;
        b.state = "accepted";
        b.stored = false;
        _cleanup_free_ char *ta = NULL, *tb = NULL;
        g_assert_cmpint(mesh_sent_to_text(&a, "host-a", &ta), ==, 0);
        g_assert_cmpint(mesh_sent_to_text(&b, "host-a", &tb), ==, 0);
        g_assert_cmpint(con_spool_write(dfd, "t-1.sent", ta, strlen(ta), NULL), ==, 0);
        g_assert_cmpint(con_spool_write(dfd, "t-0.sent", tb, strlen(tb), NULL), ==, 0);
        /* Not loaded: a file that does not parse, one under another id's name, a temp file (removed). */
        g_assert_cmpint(con_spool_write(dfd, "t-9.sent", "junk\n", 5, NULL), ==, 0);
        g_assert_cmpint(con_spool_write(dfd, "t-8.sent", ta, strlen(ta), NULL), ==, 0);
        g_assert_cmpint(con_spool_write(dfd, ".t-7.sent.AbCdEf", ta, strlen(ta), NULL), ==, 0);
        g_assert_cmpint(con_spool_write(dfd, "notes.txt", "x", 1, NULL), ==, 0);

        MeshSent *all = NULL;
        size_t n = 0;
        unsigned bad = 0;
        g_assert_cmpint(mesh_sent_load(dfd, "host-a", &all, &n, &bad), ==, 0);
        g_assert_cmpuint(n, ==, 2);
        g_assert_cmpuint(bad, ==, 2);
        g_assert_cmpstr(all[0].id, ==, "t-0");          /* in the order they were sent */
        g_assert_cmpstr(all[0].state, ==, "accepted");
        g_assert_false(all[0].stored);
        g_assert_true(all[1].stored);
        g_assert_false(all[0].done);
        g_assert_cmpstr(all[1].id, ==, "t-1");
        g_assert_true(all[1].done);
        g_assert_cmpstr(all[1].result.text, ==, a.result.text);
        mesh_sent_free_many(all, n);
        g_assert_false(exists(dfd, ".t-7.sent.AbCdEf"));
        g_assert_true(exists(dfd, "t-9.sent"));

        /* An upgraded host: the journal takes the files over, and they go (the bad ones stay). */
        MeshSentJournal *j = NULL;
        MeshSentLoadStats ls = {};
        g_assert_cmpint(mesh_sent_journal_open(dfd, "host-a", &j, &all, &n, &ls), ==, 0);
        g_assert_cmpuint(n, ==, 2);
        g_assert_cmpuint(ls.n_migrated, ==, 2);
        g_assert_cmpuint(ls.n_bad_files, ==, 2);
        g_assert_cmpstr(all[0].id, ==, "t-0");
        g_assert_cmpstr(all[1].result.text, ==, a.result.text);
        mesh_sent_free_many(all, n);
        mesh_sent_journal_free(j);
        g_assert_false(exists(dfd, "t-0.sent"));
        g_assert_false(exists(dfd, "t-1.sent"));
        g_assert_true(exists(dfd, "t-9.sent"));
        g_assert_true(exists(dfd, "t-8.sent"));
        g_assert_cmpint(fstatat(dfd, MESH_SENT_JOURNAL, &st, 0), ==, 0);
        g_assert_cmpuint(st.st_mode & 07777, ==, 0600);
        /* Read again: from the journal alone, nothing lost, nothing doubled. */
        g_assert_cmpint(mesh_sent_journal_open(dfd, "host-a", &j, &all, &n, &ls), ==, 0);
        g_assert_cmpuint(n, ==, 2);
        g_assert_cmpuint(ls.n_migrated, ==, 0);
        g_assert_cmpstr(all[0].state, ==, "accepted");
        mesh_sent_free_many(all, n);
        mesh_sent_journal_free(j);

        /* A folder open to others is refused. */
        g_assert_cmpint(mkdirat(pfd, "open", 0755), ==, 0);
        g_assert_cmpint(fchmodat(pfd, "open", 0755, 0), ==, 0);
        g_assert_cmpint(mesh_sent_open_dir(pfd, "open"), ==, -EPERM);
        test_tmpdir_remove(dir);
}

static void test_record(void) {
        for (int done = 0; done <= 1; done++) {
                MeshSent s = sample(done), back = {};
                s.cancel_by = (char *) "root@host-a";
                _cleanup_free_ char *line = NULL;
                g_assert_cmpint(mesh_sent_to_record(&s, "host-a", &line), ==, 0);
                g_assert_null(strchr(line, '\n'));
                g_assert_cmpint(mesh_sent_from_record(line, strlen(line), "host-a", &back), ==, 0);
                g_assert_cmpstr(back.id, ==, "t-1");
                g_assert_cmpstr(back.cancel_by, ==, "root@host-a");
                g_assert_cmpuint(back.done, ==, done);
                if (done) {
                        g_assert_cmpstr(back.result.text, ==, s.result.text);
                        g_assert_cmpuint(back.ended_usec, ==, s.ended_usec);
                }
                mesh_sent_done(&back);
                /* Another host's reader refuses it (the sender is USER@host-a). */
                g_assert_cmpint(mesh_sent_from_record(line, strlen(line), "host-c", &back), ==, -EBADMSG);
        }
        /* A cancel only its sender or root may ask, of this host. */
        MeshSent s = sample(false);
        _cleanup_free_ char *line = NULL;
        s.cancel_by = (char *) "mallory@host-a";
        g_assert_cmpint(mesh_sent_to_record(&s, "host-a", &line), ==, -EINVAL);
        s.cancel_by = (char *) "alice@host-b";
        g_assert_cmpint(mesh_sent_to_record(&s, "host-a", &line), ==, -EINVAL);

        MeshSent back = {};
        const char *forget = "{\"v\":1,\"op\":\"forget\",\"id\":\"t-1\"}";
        g_assert_cmpint(mesh_sent_from_record(forget, strlen(forget), "host-a", &back), ==, 1);
        g_assert_cmpstr(back.id, ==, "t-1");
        mesh_sent_done(&back);
        const char *hostile[] = {
                "{\"v\":1,\"op\":\"forget\",\"id\":\"../t-1\"}",
                "{\"v\":1,\"op\":\"forget\"}",
                "{\"v\":2,\"op\":\"forget\",\"id\":\"t-1\"}",
                "{\"v\":1,\"op\":\"drop\",\"id\":\"t-1\"}",
                "[1,2]",
                "{\"v\":1,\"op\":\"put\",\"id\":\"t-1\",\"agent\":\"sysadmin\",\"host\":\"host-b\",\"uid\":1001,"
                "\"sender\":\"alice\",\"state\":\"working\",\"ts\":1,\"cancel\":\"mallory@host-a\"}",
                "{\"v\":1,\"op\":\"put\",\"id\":\"t-1\",\"agent\":\"sysadmin\",\"host\":\"host-b\",\"uid\":1001,"
                "\"sender\":\"alice\",\"state\":\"working\",\"ts\":1,\"end\":5}",
                "{\"v\":1,\"op\":\"put\",\"id\":\"t-1\",\"agent\":\"sysadmin\",\"host\":\"host-b\",\"uid\":1001,"
                "\"sender\":\"alice\",\"state\":\"working\",\"ts\":1,\"end\":5,\"result\":\"{}\"}",
                "{\"v\":1,\"op\":\"put\",\"id\":\"t-1\",\"agent\":\"sysadmin\",\"host\":\"host-b\",\"uid\":1001,"
                "\"sender\":\"alice\",\"state\":\"working\",\"ts\":1,\"result\":7}",
        };
        for (size_t i = 0; i < ELEMENTSOF(hostile); i++)
                g_assert_cmpint(mesh_sent_from_record(hostile[i], strlen(hostile[i]), "host-a", &back), ==, -EBADMSG);
}

static void test_journal(void) {
        _cleanup_free_ char *dir = test_tmpdir_new();
        _cleanup_close_ int pfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        _cleanup_close_ int dfd = mesh_sent_open_dir(pfd, "sent");
        g_assert_cmpint(dfd, >=, 0);
        MeshSentJournal *j = NULL;
        MeshSent *all = NULL;
        size_t n = 0;
        MeshSentLoadStats ls = {};
        struct stat st;

        g_assert_cmpint(mesh_sent_journal_open(dfd, "host-a", &j, &all, &n, &ls), ==, 0);
        g_assert_cmpuint(n, ==, 0);
        free(all);
        MeshSent a = sample(false), b = sample(false), c = sample(true);
        a.id = (char *) "t-a";
        a.submitted_usec = 800 * US;
        a.state = "submitted";
        a.stored = false;
        b.id = (char *) "t-b";
        b.submitted_usec = 900 * US;
        g_assert_cmpint(mesh_sent_journal_put(j, &a), ==, 0);
        g_assert_cmpint(mesh_sent_journal_put(j, &b), ==, 0);
        g_assert_true(mesh_sent_journal_has_batch(j));
        /* Nothing on disk before the commit. */
        g_assert_cmpint(fstatat(dfd, MESH_SENT_JOURNAL, &st, 0), ==, 0);
        g_assert_cmpint(st.st_size, ==, 0);
        g_assert_cmpint(mesh_sent_journal_commit(j, true), ==, 0);
        g_assert_false(mesh_sent_journal_has_batch(j));
        /* Moving on: stored, a cancel, the result of t-1, then t-b forgotten. */
        a.stored = true;
        a.cancel_by = (char *) "alice@host-a";
        g_assert_cmpint(mesh_sent_journal_put(j, &a), ==, 0);
        g_assert_cmpint(mesh_sent_journal_put(j, &c), ==, 0);
        g_assert_cmpint(mesh_sent_journal_forget(j, "t-b"), ==, 0);
        g_assert_cmpint(mesh_sent_journal_forget(j, "../x"), ==, -EINVAL);
        g_assert_cmpint(mesh_sent_journal_commit(j, false), ==, 0);
        uint64_t size = mesh_sent_journal_size(j);
        mesh_sent_journal_free(j);

        /* A torn last record (a crash mid-write) and a hostile line in the middle. */
        _cleanup_close_ int fd = openat(dfd, MESH_SENT_JOURNAL, O_WRONLY | O_APPEND | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        const char *junk = "{\"v\":1,\"op\":\"forget\",\"id\":\"../../etc\"}\nnot json\n{\"v\":1,\"op\":\"forget\",\"id\":\"t-a\"";
        g_assert_cmpint(write(fd, junk, strlen(junk)), ==, (ssize_t) strlen(junk));
        g_assert_cmpint(mesh_sent_journal_open(dfd, "host-a", &j, &all, &n, &ls), ==, 0);
        g_assert_true(ls.torn_tail);
        g_assert_cmpuint(ls.n_corrupt, ==, 2);
        g_assert_cmpuint(n, ==, 2);
        g_assert_cmpstr(all[0].id, ==, "t-a");         /* the torn forget never happened */
        g_assert_true(all[0].stored);
        g_assert_cmpstr(all[0].cancel_by, ==, "alice@host-a");
        g_assert_cmpstr(all[1].id, ==, "t-1");
        g_assert_true(all[1].done);
        g_assert_cmpstr(all[1].result.text, ==, c.result.text);
        /* The torn tail is cut off; the hostile lines stay (counted again, never believed). */
        g_assert_cmpint(fstatat(dfd, MESH_SENT_JOURNAL, &st, 0), ==, 0);
        g_assert_cmpuint((uint64_t) st.st_size, ==, size + strlen(junk) - strlen(strrchr(junk, '\n') + 1));

        /* Compaction: only when the dead records clearly outnumber the live ones, then one each. */
        g_assert_false(mesh_sent_journal_want_compact(j, n));
        for (int i = 0; i < 5000; i++)
                g_assert_cmpint(mesh_sent_journal_put(j, &a), ==, 0);
        g_assert_false(mesh_sent_journal_want_compact(j, n));  /* the batch first */
        g_assert_cmpint(mesh_sent_journal_commit(j, true), ==, 0);
        g_assert_true(mesh_sent_journal_want_compact(j, n));
        g_assert_cmpint(mesh_sent_journal_compact(j, all, n), ==, 0);
        g_assert_false(mesh_sent_journal_want_compact(j, n));
        g_assert_cmpuint(mesh_sent_journal_size(j), <, size);
        mesh_sent_free_many(all, n);
        /* Appends go on after it, to the new file. */
        g_assert_cmpint(mesh_sent_journal_forget(j, "t-a"), ==, 0);
        g_assert_cmpint(mesh_sent_journal_commit(j, true), ==, 0);
        mesh_sent_journal_free(j);
        g_assert_cmpint(mesh_sent_journal_open(dfd, "host-a", &j, &all, &n, &ls), ==, 0);
        g_assert_false(ls.torn_tail);
        g_assert_cmpuint(ls.n_corrupt, ==, 0);
        g_assert_cmpuint(n, ==, 1);
        g_assert_cmpstr(all[0].id, ==, "t-1");
        g_assert_null(all[0].cancel_by);
        mesh_sent_free_many(all, n);
        mesh_sent_journal_free(j);

        /* A journal another could have written (group-writable) is set aside, not read. */
        g_assert_cmpint(fchmodat(dfd, MESH_SENT_JOURNAL, 0620, 0), ==, 0);
        g_assert_cmpint(mesh_sent_journal_open(dfd, "host-a", &j, &all, &n, &ls), ==, 0);
        g_assert_true(ls.set_aside);
        g_assert_cmpuint(n, ==, 0);
        free(all);
        mesh_sent_journal_free(j);
        g_assert_cmpint(fstatat(dfd, MESH_SENT_JOURNAL, &st, 0), ==, 0);
        g_assert_cmpuint(st.st_mode & 07777, ==, 0600);
        g_assert_cmpint(st.st_size, ==, 0);
        test_tmpdir_remove(dir);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/mesh-sent/round-trip", test_round_trip);
        g_test_add_func("/mesh-sent/invalid", test_invalid);
        g_test_add_func("/mesh-sent/expired", test_expired);
        g_test_add_func("/mesh-sent/legacy-load", test_legacy_load);
        g_test_add_func("/mesh-sent/record", test_record);
        g_test_add_func("/mesh-sent/journal", test_journal);
        return con_test_run();
}
