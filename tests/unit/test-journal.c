/* SPDX-License-Identifier: MIT */
/* The append-only journal of lines (bus/basic/journal.c): group commit, replay, a torn last line,
 * lines too long or holding a NUL, compaction, a file not the process's own, the one-writer lock. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "journal.h"
#include "macro.h"
#include "test-util.h"

typedef struct Lines {
        char *all[16];
        size_t n;
} Lines;

static int take(char *line, size_t len, void *userdata) {
        Lines *l = userdata;
        g_assert_cmpuint(strlen(line), ==, len);
        if (streq(line, "refuse"))
                return -EBADMSG;
        g_assert_cmpuint(l->n, <, ELEMENTSOF(l->all));
        l->all[l->n++] = g_strdup(line);
        return 0;
}

static void lines_free(Lines *l) {
        for (size_t i = 0; i < l->n; i++)
                g_free(l->all[i]);
        l->n = 0;
}

static int write_two(FILE *f, void *userdata _unused_) {
        int r = con_journal_put(f, "one");
        return r < 0 ? r : con_journal_put(f, "two");
}

static off_t size_of(int dfd, const char *name) {
        struct stat st;
        g_assert_cmpint(fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW), ==, 0);
        return st.st_size;
}

static void test_journal(void) {
        _cleanup_free_ char *dir = test_tmpdir_new();
        _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ConJournal *j = NULL;
        ConJournalReplay st = {};
        Lines l = {};
        bool aside = true;

        g_assert_cmpint(con_journal_open(dfd, "../x", &j, NULL), ==, -EINVAL);
        g_assert_cmpint(con_journal_open(dfd, "j", &j, &aside), ==, 0);
        g_assert_false(aside);
        g_assert_cmpint(con_journal_replay(j, 64, take, &l, &st), ==, 0);
        g_assert_cmpuint(l.n, ==, 0);
        g_assert_cmpint(con_journal_append(j, "a\nb"), ==, -EINVAL);
        g_assert_cmpint(con_journal_append(j, "first"), ==, 0);
        g_assert_cmpint(con_journal_append(j, "refuse"), ==, 0);
        g_assert_true(con_journal_has_batch(j));
        g_assert_cmpint(size_of(dfd, "j"), ==, 0);              /* nothing before the commit */
        g_assert_cmpint(con_journal_commit(j, false), ==, 0);
        g_assert_false(con_journal_has_batch(j));
        g_assert_cmpint(con_journal_commit(j, true), ==, 0);    /* an empty batch: nothing */
        g_assert_cmpint(con_journal_append(j, "second"), ==, 0);
        g_assert_cmpint(con_journal_commit(j, true), ==, 0);
        g_assert_cmpuint(con_journal_size(j), ==, 20);
        con_journal_free(j);

        /* A line too long, one with a NUL, and a torn last line (no '\n'). */
        _cleanup_close_ int fd = openat(dfd, "j", O_WRONLY | O_APPEND | O_CLOEXEC);
        char longline[200];
        memset(longline, 'x', sizeof(longline));
        longline[sizeof(longline) - 1] = '\n';
        g_assert_cmpint(write(fd, longline, sizeof(longline)), ==, (ssize_t) sizeof(longline));
        g_assert_cmpint(write(fd, "n\0l\nthird\ntor", 13), ==, 13);
        g_assert_cmpint(con_journal_open(dfd, "j", &j, &aside), ==, 0);
        g_assert_cmpint(con_journal_replay(j, 64, take, &l, &st), ==, 0);
        g_assert_cmpuint(l.n, ==, 3);
        g_assert_cmpstr(l.all[0], ==, "first");
        g_assert_cmpstr(l.all[1], ==, "second");
        g_assert_cmpstr(l.all[2], ==, "third");
        g_assert_cmpuint(st.n_lines, ==, 3);
        g_assert_cmpuint(st.n_corrupt, ==, 3);                  /* refuse, the long line, the NUL */
        g_assert_true(st.torn_tail);
        g_assert_cmpint(size_of(dfd, "j"), ==, 20 + 200 + 10);  /* "tor" cut off */
        g_assert_cmpuint(con_journal_size(j), ==, 20 + 200 + 10);
        lines_free(&l);
        /* Appends go on after the last whole line. */
        g_assert_cmpint(con_journal_append(j, "fourth"), ==, 0);
        g_assert_cmpint(con_journal_commit(j, true), ==, 0);

        /* Compaction: refused while a batch waits; then the new content, appends after it. */
        g_assert_cmpint(con_journal_append(j, "pending"), ==, 0);
        g_assert_cmpint(con_journal_rewrite(j, write_two, NULL), ==, -EBUSY);
        g_assert_cmpint(con_journal_commit(j, true), ==, 0);
        g_assert_cmpint(con_journal_rewrite(j, write_two, NULL), ==, 0);
        g_assert_cmpuint(con_journal_size(j), ==, 8);
        g_assert_cmpint(con_journal_append(j, "three"), ==, 0);
        g_assert_cmpint(con_journal_commit(j, true), ==, 0);
        con_journal_free(j);
        g_assert_cmpint(faccessat(dfd, ".j.compact", F_OK, AT_SYMLINK_NOFOLLOW), ==, -1);
        g_assert_cmpint(con_journal_open(dfd, "j", &j, &aside), ==, 0);
        g_assert_cmpint(con_journal_replay(j, 64, take, &l, &st), ==, 0);
        g_assert_cmpuint(l.n, ==, 3);
        g_assert_cmpstr(l.all[2], ==, "three");
        g_assert_false(st.torn_tail);
        lines_free(&l);
        con_journal_free(j);

        /* A compaction cut short is removed; a file open to others, or linked twice, set aside. */
        _cleanup_close_ int cfd = openat(dfd, ".j.compact", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        g_assert_cmpint(cfd, >=, 0);
        g_assert_cmpint(linkat(dfd, "j", dfd, "j-link", 0), ==, 0);
        g_assert_cmpint(con_journal_open(dfd, "j", &j, &aside), ==, 0);
        g_assert_true(aside);
        g_assert_cmpint(faccessat(dfd, ".j.compact", F_OK, AT_SYMLINK_NOFOLLOW), ==, -1);
        g_assert_cmpint(con_journal_replay(j, 64, take, &l, &st), ==, 0);
        g_assert_cmpuint(l.n, ==, 0);
        con_journal_free(j);
        g_assert_cmpint(fchmodat(dfd, "j", 0622, 0), ==, 0);
        g_assert_cmpint(con_journal_open(dfd, "j", &j, &aside), ==, 0);
        g_assert_true(aside);
        con_journal_free(j);
        g_assert_cmpint(symlinkat("j-link", dfd, "s"), ==, 0);
        g_assert_cmpint(con_journal_open(dfd, "s", &j, &aside), ==, 0);
        g_assert_true(aside);
        g_assert_cmpint(size_of(dfd, "s"), ==, 0);
        con_journal_free(j);
        test_tmpdir_remove(dir);
}

/* One writer per folder: a second open, in this process or another, is refused until the first
 * journal is freed; the caller's own descriptor of the folder is not the lock. */
/* A failed write is reported with its errno: a full disk is "No space left on device", not an
 * input/output error (the log and StorageFailed name it). */
static void test_journal_put_errno(void) {
        FILE *f = fopen("/dev/full", "we");
        g_assert_nonnull(f);
        g_assert_cmpint(setvbuf(f, NULL, _IONBF, 0), ==, 0);
        g_assert_cmpint(con_journal_put(f, "a\nb"), ==, -EINVAL);
        g_assert_cmpint(con_journal_put(f, "line"), ==, -ENOSPC);
        (void) fclose(f);
}

static void test_journal_lock(void) {
        _cleanup_free_ char *dir = test_tmpdir_new();
        _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ConJournal *j = NULL, *k = NULL;

        g_assert_cmpint(con_journal_open(dfd, "j", &j, NULL), ==, 0);
        g_assert_cmpint(con_journal_open(dfd, "j", &k, NULL), ==, -EBUSY);
        g_assert_null(k);
        g_assert_cmpint(con_journal_open(dfd, "other", &k, NULL), ==, -EBUSY);
        /* The lock is on the folder itself: the caller's own descriptor of it cannot take it either. */
        g_assert_cmpint(flock(dfd, LOCK_EX | LOCK_NB), ==, -1);
        g_assert_cmpint(errno, ==, EWOULDBLOCK);

        pid_t pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
                ConJournal *c = NULL;
                _exit(con_journal_open(dfd, "j", &c, NULL) == -EBUSY ? 0 : 1);
        }
        int status = 0;
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

        con_journal_free(j);
        g_assert_cmpint(con_journal_open(dfd, "j", &k, NULL), ==, 0);
        con_journal_free(k);
        test_tmpdir_remove(dir);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/journal/journal", test_journal);
        g_test_add_func("/journal/lock", test_journal_lock);
        g_test_add_func("/journal/put-errno", test_journal_put_errno);
        return con_test_run();
}
