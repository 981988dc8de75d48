/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"
#include "markers.h"
#include "strv.h"
#include "test-util.h"

#define OTHER_UID 65534 /* an agent user, as far as the markers care */

static char *path_in(const char *dir, const char *rel) {
        return g_build_filename(dir, rel, NULL);
}

static void test_write_read_remove(void) {
        g_autofree char *dir = test_tmpdir_new(), *state = path_in(dir, "state");
        _cleanup_strv_free_ char **q = NULL;
        _cleanup_free_ char *reason = NULL;
        const char *h = NULL;

        /* nothing there yet: no folder at all */
        g_assert_cmpint(con_marker_read(state, CON_MARKER_HALT, NULL, &reason), ==, 0);
        g_assert_null(reason);
        g_assert_cmpint(con_marker_halted(state, &h), ==, 0);
        g_assert_cmpstr(h, ==, "");
        g_assert_cmpint(con_marker_list_quarantined(state, &q), ==, 0);
        g_assert_cmpuint(strv_length(q), ==, 0);
        q = strv_free(q);

        g_assert_cmpint(con_marker_write(state, CON_MARKER_HALT_WORKERS, NULL, "T-1: too many failures"), ==, 0);
        g_assert_cmpint(con_marker_halted(state, &h), ==, 0);
        g_assert_cmpstr(h, ==, "workers");
        g_assert_cmpint(con_marker_read(state, CON_MARKER_HALT_WORKERS, NULL, &reason), ==, 1);
        g_assert_cmpstr(reason, ==, "T-1: too many failures");
        g_clear_pointer(&reason, free);

        g_assert_cmpint(con_marker_write(state, CON_MARKER_HALT, NULL, "all\tof them\nsecond line"), ==, 0);
        g_assert_cmpint(con_marker_halted(state, &h), ==, 0);
        g_assert_cmpstr(h, ==, "all");
        g_assert_cmpint(con_marker_read(state, CON_MARKER_HALT, NULL, &reason), ==, 1);
        g_assert_cmpstr(reason, ==, "all of them");     /* the first line, control characters as spaces */
        g_clear_pointer(&reason, free);

        g_assert_cmpint(con_marker_write(state, CON_MARKER_QUARANTINE, "coder", ""), ==, 0);
        g_assert_cmpint(con_marker_write(state, CON_MARKER_QUARANTINE, "sysadmin", "x"), ==, 0);
        g_assert_cmpint(con_marker_read(state, CON_MARKER_QUARANTINE, "coder", &reason), ==, 1);
        g_assert_cmpstr(reason, ==, "no reason given");
        g_clear_pointer(&reason, free);
        /* the activation file moved aside is not a marker */
        g_autofree char *aside = path_in(state, "quarantine/coder.service");
        test_write_file(aside, "[D-BUS Service]\n");
        g_assert_cmpint(con_marker_list_quarantined(state, &q), ==, 0);
        g_assert_cmpuint(strv_length(q), ==, 2);
        g_assert_cmpstr(q[0], ==, "coder");
        g_assert_cmpstr(q[1], ==, "sysadmin");
        q = strv_free(q);

        g_assert_cmpint(con_marker_write(state, CON_MARKER_QUARANTINE, "../etc", "x"), ==, -EINVAL);
        g_assert_cmpint(con_marker_read(state, CON_MARKER_QUARANTINE, NULL, NULL), ==, -EINVAL);

        g_assert_cmpint(con_marker_remove(state, CON_MARKER_HALT, NULL), ==, 0);
        g_assert_cmpint(con_marker_remove(state, CON_MARKER_HALT, NULL), ==, 0);   /* absent: fine */
        g_assert_cmpint(con_marker_remove(state, CON_MARKER_QUARANTINE, "coder"), ==, 0);
        g_assert_cmpint(con_marker_halted(state, &h), ==, 0);
        g_assert_cmpstr(h, ==, "workers");
        g_assert_cmpint(con_marker_list_quarantined(state, &q), ==, 0);
        g_assert_cmpuint(strv_length(q), ==, 1);
        g_assert_cmpstr(q[0], ==, "sysadmin");

        test_tmpdir_remove(dir);
}

/* What an agent user could put into the state folder (were it writable to them) counts as absent,
 * for the writer's view (halted, quarantined list) and the reader's (con_marker_read) alike. */
static void test_hostile(void) {
        g_autofree char *dir = test_tmpdir_new(), *state = path_in(dir, "state");
        g_autofree char *qdir = path_in(state, "quarantine"), *halt = path_in(state, "halt");
        g_autofree char *target = path_in(dir, "root-owned"), *q_link = path_in(qdir, "linked");
        g_autofree char *fifo = path_in(state, "halt-workers"), *q_fifo = path_in(qdir, "fifo");
        g_autofree char *q_hard = path_in(qdir, "hard"), *q_planted = path_in(qdir, "planted");
        _cleanup_strv_free_ char **q = NULL;
        _cleanup_free_ char *reason = NULL;
        const char *h = NULL;

        g_assert_cmpint(mkdir(state, 0755), ==, 0);
        g_assert_cmpint(mkdir(qdir, 0755), ==, 0);
        test_write_file(target, "a file of ours the agent points at\n");

        /* a symlink in place of a marker, to a file we own */
        g_assert_cmpint(symlink(target, halt), ==, 0);
        g_assert_cmpint(symlink(target, q_link), ==, 0);
        g_assert_cmpint(con_marker_read(state, CON_MARKER_HALT, NULL, &reason), ==, 0);
        g_assert_null(reason);
        g_assert_cmpint(con_marker_read(state, CON_MARKER_QUARANTINE, "linked", &reason), ==, 0);

        /* a FIFO: absent, and reading does not block */
        g_assert_cmpint(mkfifo(fifo, 0644), ==, 0);
        g_assert_cmpint(mkfifo(q_fifo, 0644), ==, 0);
        g_assert_cmpint(con_marker_read(state, CON_MARKER_HALT_WORKERS, NULL, &reason), ==, 0);
        g_assert_cmpint(con_marker_halted(state, &h), ==, 0);
        g_assert_cmpstr(h, ==, "");

        /* a hard link to a file of ours */
        g_assert_cmpint(link(target, q_hard), ==, 0);
        g_assert_cmpint(con_marker_read(state, CON_MARKER_QUARANTINE, "hard", NULL), ==, 0);

        /* a symlinked state folder: nothing through it */
        g_autofree char *real = path_in(dir, "real-state"), *alias = path_in(dir, "alias");
        g_assert_cmpint(con_marker_write(real, CON_MARKER_HALT, NULL, "real"), ==, 0);
        g_assert_cmpint(symlink(real, alias), ==, 0);
        g_assert_cmpint(con_marker_read(alias, CON_MARKER_HALT, NULL, NULL), ==, 0);
        g_assert_cmpint(con_marker_read(real, CON_MARKER_HALT, NULL, NULL), ==, 1);

        /* a file owned by an agent user (needs root to make one) */
        if (geteuid() == 0) {
                g_autofree char *planted_halt = path_in(state, "halt");
                g_assert_cmpint(unlink(planted_halt), ==, 0);
                test_write_file(planted_halt, "agent says halt\n");
                g_assert_cmpint(chown(planted_halt, OTHER_UID, OTHER_UID), ==, 0);
                test_write_file(q_planted, "agent says quarantine\n");
                g_assert_cmpint(chown(q_planted, OTHER_UID, OTHER_UID), ==, 0);
                g_assert_cmpint(con_marker_read(state, CON_MARKER_HALT, NULL, &reason), ==, 0);
                g_assert_cmpint(con_marker_read(state, CON_MARKER_QUARANTINE, "planted", &reason), ==, 0);
                g_assert_cmpint(con_marker_halted(state, &h), ==, 0);
                g_assert_cmpstr(h, ==, "");
        }

        /* none of them is listed; a genuine marker next to them is */
        g_assert_cmpint(con_marker_write(state, CON_MARKER_QUARANTINE, "genuine", "contract T-2"), ==, 0);
        g_assert_cmpint(con_marker_list_quarantined(state, &q), ==, 0);
        g_assert_cmpuint(strv_length(q), ==, 1);
        g_assert_cmpstr(q[0], ==, "genuine");

        /* removal takes away whatever is there, the planted things too */
        g_assert_cmpint(con_marker_remove(state, CON_MARKER_QUARANTINE, "linked"), ==, 0);
        g_assert_cmpint(access(target, F_OK), ==, 0);   /* the link, not its target */
        g_assert_cmpint(con_marker_write(state, CON_MARKER_QUARANTINE, "hard", "now ours"), ==, 0);
        g_assert_cmpint(con_marker_read(state, CON_MARKER_QUARANTINE, "hard", &reason), ==, 1);
        g_assert_cmpstr(reason, ==, "now ours");

        if (geteuid() != 0)
                con_test_skip("the case of a marker owned by another user needs root (chown)");
        test_tmpdir_remove(dir);
}

static void test_long_reason(void) {
        g_autofree char *dir = test_tmpdir_new(), *state = path_in(dir, "state");
        _cleanup_free_ char *reason = NULL;
        GString *s = g_string_new("xx");

        /* 2 + 3 * 400 bytes: the 1024-byte cut falls inside the 341st "€" (3 bytes) */
        for (unsigned i = 0; i < 400; i++)
                g_string_append(s, "\xe2\x82\xac");
        g_assert_cmpint(con_marker_write(state, CON_MARKER_HALT, NULL, s->str), ==, 0);
        g_assert_cmpint(con_marker_read(state, CON_MARKER_HALT, NULL, &reason), ==, 1);
        g_assert_cmpuint(strlen(reason), ==, 2 + 3 * 340);      /* whole characters only */
        g_assert_true(g_utf8_validate(reason, -1, NULL));
        g_string_free(s, true);
        test_tmpdir_remove(dir);
}

/* fs.protected_hardlinks=0 lets an agent hard-link root's files it can read: a marker must
 * read the same whatever links are made to it (the marker files of earlier versions then read
 * as absent, so a halt was lifted by a link). */
static void test_hard_links(void) {
        g_autofree char *dir = test_tmpdir_new(), *state = path_in(dir, "state");
        g_autofree char *halt = path_in(state, "halt"), *halt_reason = path_in(state, "halt/reason");
        g_autofree char *q = path_in(state, "quarantine/worker"), *q_reason = path_in(state, "quarantine/worker/reason");
        g_autofree char *elsewhere = path_in(dir, "agent-workspace");
        _cleanup_free_ char *reason = NULL;
        _cleanup_strv_free_ char **list = NULL;
        const char *h = NULL;

        g_assert_cmpint(mkdir(elsewhere, 0755), ==, 0);
        g_assert_cmpint(con_marker_write(state, CON_MARKER_HALT, NULL, "contract T-1"), ==, 0);
        g_assert_cmpint(con_marker_write(state, CON_MARKER_QUARANTINE, "worker", "contract T-2"), ==, 0);

        /* The marker itself cannot be linked; its reason file can, and nothing changes. */
        g_autofree char *l1 = path_in(elsewhere, "halt"), *l2 = path_in(elsewhere, "reason1"),
                        *l3 = path_in(elsewhere, "reason2");
        g_assert_cmpint(link(halt, l1), ==, -1);
        g_assert_cmpint(errno, ==, EPERM);
        g_assert_cmpint(link(halt_reason, l2), ==, 0);
        g_assert_cmpint(link(q_reason, l3), ==, 0);
        g_assert_cmpint(con_marker_read(state, CON_MARKER_HALT, NULL, &reason), ==, 1);
        g_assert_cmpstr(reason, ==, "contract T-1");
        g_assert_cmpint(con_marker_halted(state, &h), ==, 0);
        g_assert_cmpstr(h, ==, "all");
        g_assert_cmpint(con_marker_list_quarantined(state, &list), ==, 0);
        g_assert_cmpuint(strv_length(list), ==, 1);
        g_assert_cmpstr(list[0], ==, "worker");

        /* Written again: the new reason, and nothing left over beside it. */
        g_assert_cmpint(con_marker_write(state, CON_MARKER_HALT, NULL, "contract T-3"), ==, 0);
        free(reason);
        reason = NULL;
        g_assert_cmpint(con_marker_read(state, CON_MARKER_HALT, NULL, &reason), ==, 1);
        g_assert_cmpstr(reason, ==, "contract T-3");
        g_autoptr(GDir) d = g_dir_open(state, 0, NULL);
        unsigned n = 0;
        for (const char *e; (e = g_dir_read_name(d));)
                n++;
        g_assert_cmpuint(n, ==, 2);     /* halt and quarantine/ */

        /* A marker folder others may write to is not one. */
        g_assert_cmpint(chmod(q, 0777), ==, 0);
        g_assert_cmpint(con_marker_read(state, CON_MARKER_QUARANTINE, "worker", NULL), ==, 0);
        g_assert_cmpint(con_marker_remove(state, CON_MARKER_QUARANTINE, "worker"), ==, 0);
        g_assert_cmpint(access(q, F_OK), ==, -1);

        /* A marker file of an earlier version counts (one link) and is rewritten as a folder. */
        g_assert_cmpint(con_marker_remove(state, CON_MARKER_HALT, NULL), ==, 0);
        g_autofree char *legacy = path_in(state, "halt-workers");
        test_write_file(legacy, "old version\n");
        g_assert_cmpint(con_marker_halted(state, &h), ==, 0);
        g_assert_cmpstr(h, ==, "workers");
        g_assert_cmpint(con_marker_upgrade(state), ==, 0);
        struct stat st;
        g_assert_cmpint(lstat(legacy, &st), ==, 0);
        g_assert_true(S_ISDIR(st.st_mode));
        free(reason);
        reason = NULL;
        g_assert_cmpint(con_marker_read(state, CON_MARKER_HALT_WORKERS, NULL, &reason), ==, 1);
        g_assert_cmpstr(reason, ==, "old version");

        /* A folder planted by an agent user (were the state folder open to it) is not a marker. */
        if (geteuid() == 0) {
                g_autofree char *planted = path_in(state, "quarantine/planted");
                g_assert_cmpint(mkdir(planted, 0755), ==, 0);
                g_assert_cmpint(chown(planted, OTHER_UID, OTHER_UID), ==, 0);
                g_assert_cmpint(con_marker_read(state, CON_MARKER_QUARANTINE, "planted", NULL), ==, 0);
        } else
                con_test_skip("the case of a marker folder owned by another user needs root (chown)");
        test_tmpdir_remove(dir);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/markers/write-read-remove", test_write_read_remove);
        g_test_add_func("/markers/hostile", test_hostile);
        g_test_add_func("/markers/hard-links", test_hard_links);
        g_test_add_func("/markers/long-reason", test_long_reason);
        return con_test_run();
}
