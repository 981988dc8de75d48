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

static void test_store(void) {
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
        b.state = "submitted";
        b.stored = false;
        g_assert_cmpint(mesh_sent_write(dfd, &a, "host-a", true), ==, 0);
        g_assert_cmpint(mesh_sent_write(dfd, &b, "host-a", false), ==, 0);
        g_assert_cmpint(fstatat(dfd, "t-1.sent", &st, 0), ==, 0);
        g_assert_cmpuint(st.st_mode & 07777, ==, 0600);
        /* A state moves on: the record is replaced. */
        b.state = "accepted";
        g_assert_cmpint(mesh_sent_write(dfd, &b, "host-a", false), ==, 0);
        /* Not loaded: a file that does not parse, one under another id's name, a temp file (removed). */
        g_assert_cmpint(con_spool_write(dfd, "t-9.sent", "junk\n", 5, NULL), ==, 0);
        _cleanup_free_ char *text = NULL;
        g_assert_cmpint(mesh_sent_to_text(&a, "host-a", &text), ==, 0);
        g_assert_cmpint(con_spool_write(dfd, "t-8.sent", text, strlen(text), NULL), ==, 0);
        g_assert_cmpint(con_spool_write(dfd, ".t-7.sent.AbCdEf", text, strlen(text), NULL), ==, 0);
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

        /* The group's sync: every record named, one forgotten meanwhile skipped. */
        char *ids[] = { (char *) "t-0", (char *) "t-1", (char *) "t-gone", NULL };
        g_assert_cmpint(mesh_sent_sync(dfd, ids), ==, 0);
        g_assert_cmpint(mesh_sent_sync(dfd, NULL), ==, 0);
        char *bad_ids[] = { (char *) "../t-0", NULL };
        g_assert_cmpint(mesh_sent_sync(dfd, bad_ids), ==, -EINVAL);

        g_assert_cmpint(mesh_sent_remove(dfd, "t-1"), ==, 0);
        g_assert_false(exists(dfd, "t-1.sent"));
        g_assert_cmpint(mesh_sent_remove(dfd, "t-1"), ==, 0);
        g_assert_cmpint(mesh_sent_remove(dfd, "../t-0"), ==, -EINVAL);

        /* A folder open to others is refused. */
        g_assert_cmpint(mkdirat(pfd, "open", 0755), ==, 0);
        g_assert_cmpint(fchmodat(pfd, "open", 0755, 0), ==, 0);
        g_assert_cmpint(mesh_sent_open_dir(pfd, "open"), ==, -EPERM);
        test_tmpdir_remove(dir);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/mesh-sent/round-trip", test_round_trip);
        g_test_add_func("/mesh-sent/invalid", test_invalid);
        g_test_add_func("/mesh-sent/expired", test_expired);
        g_test_add_func("/mesh-sent/store", test_store);
        return con_test_run();
}
