/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "spool.h"
#include "task.h"
#include "test-util.h"

typedef struct Fixture {
        char *path;
        int dirfd;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data) {
        f->path = test_tmpdir_new();
        f->dirfd = open(f->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        g_assert_cmpint(f->dirfd, >=, 0);
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        safe_close(f->dirfd);
        test_tmpdir_remove(f->path);
        g_free(f->path);
}

static char *read_all(int dirfd, const char *name) {
        char *buf = NULL;
        size_t len;
        g_assert_cmpint(con_spool_read_untrusted(dirfd, name, 0, &buf, &len, NULL), ==, 0);
        g_assert_cmpuint(strlen(buf), ==, len);
        return buf;
}

/* No temp files may be left behind. */
static void assert_only(int dirfd, const char * const *names) {
        _cleanup_closedir_ DIR *d = fdopendir(dup(dirfd));
        struct dirent *de;
        size_t n = 0, want = g_strv_length((char **) names);

        g_assert_nonnull(d);
        rewinddir(d);
        while ((de = readdir(d))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                g_assert_true(g_strv_contains(names, de->d_name));
                n++;
        }
        g_assert_cmpuint(n, ==, want);
}

static void test_write(Fixture *f, gconstpointer data) {
        ConSpoolWrite o = { .mode = 0640, .uid = (uid_t) -1, .gid = (gid_t) -1, .sync = true };
        struct stat st;

        g_assert_cmpint(con_spool_write(f->dirfd, "a.task", "hello", 5, &o), ==, 0);
        _cleanup_free_ char *c = read_all(f->dirfd, "a.task");
        g_assert_cmpstr(c, ==, "hello");
        g_assert_cmpint(fstatat(f->dirfd, "a.task", &st, AT_SYMLINK_NOFOLLOW), ==, 0);
        g_assert_cmpint(st.st_mode & 07777, ==, 0640);
        g_assert_cmpuint(st.st_uid, ==, geteuid());

        /* replace */
        o.mode = 0600;
        g_assert_cmpint(con_spool_write(f->dirfd, "a.task", "world!", 6, &o), ==, 0);
        _cleanup_free_ char *c2 = read_all(f->dirfd, "a.task");
        g_assert_cmpstr(c2, ==, "world!");
        g_assert_cmpint(fstatat(f->dirfd, "a.task", &st, AT_SYMLINK_NOFOLLOW), ==, 0);
        g_assert_cmpint(st.st_mode & 07777, ==, 0600);

        /* noreplace keeps the old file and leaves no temp file */
        o.noreplace = true;
        g_assert_cmpint(con_spool_write(f->dirfd, "a.task", "other", 5, &o), ==, -EEXIST);
        _cleanup_free_ char *c3 = read_all(f->dirfd, "a.task");
        g_assert_cmpstr(c3, ==, "world!");
        g_assert_cmpint(con_spool_write(f->dirfd, "b.task", "", 0, &o), ==, 0);

        /* no sync, default options */
        o.sync = false;
        g_assert_cmpint(con_spool_write(f->dirfd, "c.task", "x", 1, &o), ==, 0);
        g_assert_cmpint(con_spool_write(f->dirfd, "d.task", "x", 1, NULL), ==, 0);
        g_assert_cmpint(con_spool_sync_dir(f->dirfd), ==, 0);
        assert_only(f->dirfd, (const char *[]) { "a.task", "b.task", "c.task", "d.task", NULL });

        /* bad names */
        g_assert_cmpint(con_spool_write(f->dirfd, "x/y", "x", 1, &o), ==, -EINVAL);
        g_assert_cmpint(con_spool_write(f->dirfd, "..", "x", 1, &o), ==, -EINVAL);
        g_assert_cmpint(con_spool_write(f->dirfd, "", "x", 1, &o), ==, -EINVAL);
        g_assert_cmpint(con_spool_write(-1, "a", "x", 1, &o), ==, -EBADF);

        /* a long name still gets a temp name that fits */
        char longname[NAME_MAX + 1];
        memset(longname, 'n', NAME_MAX);
        longname[NAME_MAX] = '\0';
        g_assert_cmpint(con_spool_write(f->dirfd, longname, "x", 1, &o), ==, 0);
        g_assert_cmpint(faccessat(f->dirfd, longname, F_OK, 0), ==, 0);
}

static void test_write_big(Fixture *f, gconstpointer data) {
        /* Larger than a pipe buffer or a single page: exercises the write loop. */
        size_t n = 3 * 1024 * 1024 + 17;
        _cleanup_free_ char *big = malloc(n);
        for (size_t i = 0; i < n; i++)
                big[i] = (char) ('a' + i % 26);
        g_assert_cmpint(con_spool_write(f->dirfd, "big", big, n, NULL), ==, 0);

        char *buf = NULL;
        size_t len = 0;
        g_assert_cmpint(con_spool_read_untrusted(f->dirfd, "big", n, &buf, &len, NULL), ==, 0);
        g_assert_cmpuint(len, ==, n);
        g_assert_true(memcmp(buf, big, n) == 0);
        free(buf);
        g_assert_cmpint(con_spool_read_untrusted(f->dirfd, "big", n - 1, &buf, &len, NULL), ==, -EFBIG);
}

static void test_chown(Fixture *f, gconstpointer data) {
        struct stat st;

        if (geteuid() != 0) {
                con_test_skip("needs root");
                return;
        }
        ConSpoolWrite o = { .mode = 04755, .uid = 65534, .gid = 65534, .sync = true };
        g_assert_cmpint(con_spool_write(f->dirfd, "owned", "x", 1, &o), ==, 0);
        g_assert_cmpint(fstatat(f->dirfd, "owned", &st, AT_SYMLINK_NOFOLLOW), ==, 0);
        g_assert_cmpuint(st.st_uid, ==, 65534);
        g_assert_cmpuint(st.st_gid, ==, 65534);
        g_assert_cmpint(st.st_mode & 07777, ==, 04755);
}

static void test_claim(Fixture *f, gconstpointer data) {
        g_assert_cmpint(mkdirat(f->dirfd, "cur", 0700), ==, 0);
        _cleanup_close_ int cur = openat(f->dirfd, "cur", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        g_assert_cmpint(cur, >=, 0);

        g_assert_cmpint(con_spool_write(f->dirfd, "t.task", "1", 1, NULL), ==, 0);
        g_assert_cmpint(con_spool_write(cur, "busy.task", "2", 1, NULL), ==, 0);
        g_assert_cmpint(con_spool_write(f->dirfd, "busy.task", "3", 1, NULL), ==, 0);

        g_assert_cmpint(con_spool_claim(f->dirfd, "t.task", cur, "t.task"), ==, 0);
        g_assert_cmpint(con_spool_claim(f->dirfd, "t.task", cur, "t2.task"), ==, -ENOENT);
        /* target exists: the source stays */
        g_assert_cmpint(con_spool_claim(f->dirfd, "busy.task", cur, "busy.task"), ==, -EEXIST);
        _cleanup_free_ char *c = read_all(f->dirfd, "busy.task");
        g_assert_cmpstr(c, ==, "3");
        _cleanup_free_ char *c2 = read_all(cur, "busy.task");
        g_assert_cmpstr(c2, ==, "2");
        g_assert_cmpint(con_spool_claim(f->dirfd, "../x", cur, "x"), ==, -EINVAL);
}

#define RACERS 8
#define FILES 200

static void test_claim_race(Fixture *f, gconstpointer data) {
        /* RACERS processes claim the same FILES files, each into its own name: every file is
         * won exactly once, every loser sees -ENOENT. */
        pid_t pids[RACERS];
        int pipes[RACERS][2];
        char name[64];

        g_assert_cmpint(mkdirat(f->dirfd, "cur", 0700), ==, 0);
        for (unsigned i = 0; i < FILES; i++) {
                snprintf(name, sizeof(name), "%u.task", i);
                g_assert_cmpint(con_spool_write(f->dirfd, name, "x", 1, &(ConSpoolWrite) { .mode = 0600, .uid = -1, .gid = -1 }), ==, 0);
        }

        for (unsigned r = 0; r < RACERS; r++) {
                g_assert_cmpint(pipe(pipes[r]), ==, 0);
                pids[r] = fork();
                g_assert_cmpint(pids[r], >=, 0);
                if (pids[r] == 0) {
                        int cur = openat(f->dirfd, "cur", O_RDONLY | O_DIRECTORY);
                        unsigned won = 0, lost = 0, other = 0;
                        for (unsigned i = 0; i < FILES; i++) {
                                char from[64], to[64];
                                snprintf(from, sizeof(from), "%u.task", i);
                                snprintf(to, sizeof(to), "%u.task.%u", i, r);
                                int k = con_spool_claim(f->dirfd, from, cur, to);
                                if (k == 0)
                                        won++;
                                else if (k == -ENOENT)
                                        lost++;
                                else
                                        other++;
                        }
                        unsigned res[3] = { won, lost, other };
                        if (write(pipes[r][1], res, sizeof(res)) != sizeof(res))
                                _exit(2);
                        _exit(0);
                }
                close(pipes[r][1]);
        }

        unsigned won = 0, lost = 0;
        for (unsigned r = 0; r < RACERS; r++) {
                unsigned res[3];
                int status;
                g_assert_cmpint(read(pipes[r][0], res, sizeof(res)), ==, sizeof(res));
                close(pipes[r][0]);
                g_assert_cmpint(waitpid(pids[r], &status, 0), ==, pids[r]);
                g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
                g_assert_cmpuint(res[2], ==, 0);
                won += res[0];
                lost += res[1];
        }
        g_assert_cmpuint(won, ==, FILES);
        g_assert_cmpuint(lost, ==, FILES * (RACERS - 1));

        /* every file exists exactly once under cur */
        _cleanup_close_ int cur = openat(f->dirfd, "cur", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        for (unsigned i = 0; i < FILES; i++) {
                unsigned found = 0;
                for (unsigned r = 0; r < RACERS; r++) {
                        snprintf(name, sizeof(name), "%u.task.%u", i, r);
                        found += faccessat(cur, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
                }
                g_assert_cmpuint(found, ==, 1);
        }
}

static void test_untrusted(Fixture *f, gconstpointer data) {
        struct stat st;
        int fd = -1;
        char *buf = NULL;
        size_t len;
        _cleanup_free_ char *p = NULL;

        g_assert_cmpint(con_spool_write(f->dirfd, "ok.task", "text", 4, NULL), ==, 0);
        g_assert_cmpint(con_spool_open_untrusted(f->dirfd, "ok.task", 10, &fd, &st), ==, 0);
        g_assert_cmpint(fd, >=, 0);
        g_assert_true(S_ISREG(st.st_mode));
        g_assert_cmpint(st.st_size, ==, 4);
        g_assert_cmpint(fcntl(fd, F_GETFD) & FD_CLOEXEC, !=, 0);
        close(fd);
        g_assert_cmpint(con_spool_read_untrusted(f->dirfd, "ok.task", 4, &buf, &len, &st), ==, 0);
        g_assert_cmpstr(buf, ==, "text");
        g_assert_cmpuint(len, ==, 4);
        free(buf);

        /* symlink, even to a good file */
        g_assert_cmpint(symlinkat("ok.task", f->dirfd, "link.task"), ==, 0);
        g_assert_cmpint(con_spool_open_untrusted(f->dirfd, "link.task", 0, &fd, NULL), ==, -ELOOP);
        g_assert_cmpint(symlinkat("/nonexistent", f->dirfd, "dangling.task"), ==, 0);
        g_assert_cmpint(con_spool_open_untrusted(f->dirfd, "dangling.task", 0, &fd, NULL), ==, -ELOOP);

        /* hard link */
        g_assert_cmpint(linkat(f->dirfd, "ok.task", f->dirfd, "hard.task", 0), ==, 0);
        g_assert_cmpint(con_spool_open_untrusted(f->dirfd, "hard.task", 0, &fd, NULL), ==, -EMLINK);
        g_assert_cmpint(con_spool_open_untrusted(f->dirfd, "ok.task", 0, &fd, NULL), ==, -EMLINK);
        g_assert_cmpint(unlinkat(f->dirfd, "hard.task", 0), ==, 0);

        /* FIFO: must not block */
        g_assert_cmpint(mkfifoat(f->dirfd, "fifo.task", 0600), ==, 0);
        g_assert_cmpint(con_spool_open_untrusted(f->dirfd, "fifo.task", 0, &fd, NULL), ==, -EBADFD);

        /* directory */
        g_assert_cmpint(mkdirat(f->dirfd, "dir.task", 0700), ==, 0);
        g_assert_cmpint(con_spool_open_untrusted(f->dirfd, "dir.task", 0, &fd, NULL), ==, -EBADFD);

        /* socket: open(2) fails with ENXIO */
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        p = g_strdup_printf("%s/sock.task", f->path);
        if (strlen(p) < sizeof(sa.sun_path)) {
                strcpy(sa.sun_path, p);
                g_assert_cmpint(bind(s, (struct sockaddr *) &sa, sizeof(sa)), ==, 0);
                g_assert_cmpint(con_spool_open_untrusted(f->dirfd, "sock.task", 0, &fd, NULL), ==, -ENXIO);
        }
        close(s);

        /* oversize, at the cap, default cap */
        g_assert_cmpint(con_spool_open_untrusted(f->dirfd, "ok.task", 3, &fd, NULL), ==, -EFBIG);
        g_assert_cmpint(con_spool_read_untrusted(f->dirfd, "ok.task", 3, &buf, &len, NULL), ==, -EFBIG);
        _cleanup_free_ char *big = g_malloc0(CON_TASK_DEFAULT_MAX_SIZE + 1);
        memset(big, 'a', CON_TASK_DEFAULT_MAX_SIZE + 1);
        g_assert_cmpint(con_spool_write(f->dirfd, "big.task", big, CON_TASK_DEFAULT_MAX_SIZE + 1, NULL), ==, 0);
        g_assert_cmpint(con_spool_open_untrusted(f->dirfd, "big.task", 0, &fd, NULL), ==, -EFBIG);
        g_assert_cmpint(con_spool_write(f->dirfd, "cap.task", big, CON_TASK_DEFAULT_MAX_SIZE, NULL), ==, 0);
        g_assert_cmpint(con_spool_read_untrusted(f->dirfd, "cap.task", 0, &buf, &len, NULL), ==, 0);
        g_assert_cmpuint(len, ==, CON_TASK_DEFAULT_MAX_SIZE);
        free(buf);

        /* missing, bad names */
        g_assert_cmpint(con_spool_open_untrusted(f->dirfd, "missing.task", 0, &fd, NULL), ==, -ENOENT);
        g_assert_cmpint(con_spool_open_untrusted(f->dirfd, "../ok.task", 0, &fd, NULL), ==, -EINVAL);
}

static void test_candidate(void) {
        g_assert_true(con_spool_name_is_candidate("hello.task", ".task"));
        g_assert_true(con_spool_name_is_candidate("20261129T113045.123456Z-1a2b3c-0001.task", ".task"));
        g_assert_true(con_spool_name_is_candidate("anything", NULL));
        g_assert_true(con_spool_name_is_candidate("anything", ""));
        g_assert_false(con_spool_name_is_candidate(".task", ".task"));
        g_assert_false(con_spool_name_is_candidate(".hello.task", ".task"));
        g_assert_false(con_spool_name_is_candidate(".hello.task.Ab12Cd", ".task"));   /* our temp names */
        g_assert_false(con_spool_name_is_candidate(".#hello.task", ".task"));
        g_assert_false(con_spool_name_is_candidate("hello.task~", ".task"));
        g_assert_false(con_spool_name_is_candidate("hello.task.tmp", ".task"));
        g_assert_false(con_spool_name_is_candidate("hello.tmp", NULL));
        g_assert_false(con_spool_name_is_candidate("hello~", NULL));
        g_assert_false(con_spool_name_is_candidate("hello.txt", ".task"));
        g_assert_false(con_spool_name_is_candidate("", NULL));
        g_assert_false(con_spool_name_is_candidate(NULL, NULL));
        g_assert_false(con_spool_name_is_candidate(".", NULL));
        g_assert_false(con_spool_name_is_candidate("a/b.task", ".task"));
}

static void test_reject_reason(void) {
        g_assert_cmpstr(con_spool_reject_reason(-ELOOP), ==, "symbolic link");
        g_assert_cmpstr(con_spool_reject_reason(ELOOP), ==, "symbolic link");
        g_assert_cmpstr(con_spool_reject_reason(-EBADFD), ==, "not a regular file");
        g_assert_cmpstr(con_spool_reject_reason(-EMLINK), ==, "hard link (link count above 1)");
        g_assert_cmpstr(con_spool_reject_reason(-EFBIG), ==, "larger than the size cap");
        g_assert_cmpstr(con_spool_reject_reason(-ENXIO), ==, "not a regular file (socket or device without reader)");
        g_assert_cmpstr(con_spool_reject_reason(-EACCES), ==, "permission denied");
        g_assert_cmpstr(con_spool_reject_reason(-ENOENT), ==, "file disappeared");
        g_assert_cmpstr(con_spool_reject_reason(-EIO), ==, "cannot be opened");
}

static void put(int dirfd, const char *name) {
        int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(write(fd, "x", 1), ==, 1);
        close(fd);
}

static bool exists(int dirfd, const char *name) {
        struct stat st;
        return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static void test_remove_temps(Fixture *f, gconstpointer data) {
        /* What a writer killed between create and rename leaves: made by con_spool_write's own
         * naming (".NAME.XXXXXX"). */
        put(f->dirfd, ".T-1.json.aB3xY9");
        put(f->dirfd, ".a.task.000000");
        /* Not ours: they stay. */
        put(f->dirfd, "T-2.json");
        put(f->dirfd, ".lock");
        put(f->dirfd, ".#editor");
        put(f->dirfd, ".x.abc");                /* suffix too short */
        put(f->dirfd, ".x.abcde!");             /* not one of the six characters */
        put(f->dirfd, "..abcdef");              /* no NAME */
        g_assert_cmpint(mkdirat(f->dirfd, ".d.abcdef", 0700), ==, 0);   /* not a regular file */
        g_assert_cmpint(symlinkat("/etc/passwd", f->dirfd, ".s.abcdef"), ==, 0);

        g_assert_cmpint(con_spool_remove_temps(f->dirfd), ==, 2);
        g_assert_false(exists(f->dirfd, ".T-1.json.aB3xY9"));
        g_assert_false(exists(f->dirfd, ".a.task.000000"));
        static const char * const kept[] = { "T-2.json", ".lock", ".#editor", ".x.abc", ".x.abcde!", "..abcdef",
                                             ".d.abcdef", ".s.abcdef" };
        for (size_t i = 0; i < G_N_ELEMENTS(kept); i++)
                g_assert_true(exists(f->dirfd, kept[i]));
        g_assert_cmpint(access("/etc/passwd", F_OK), ==, 0);
        g_assert_cmpint(con_spool_remove_temps(f->dirfd), ==, 0);

        /* A real write after the sweep still works, and leaves no temp file. */
        g_assert_cmpint(con_spool_write(f->dirfd, "T-3.json", "{}", 2, NULL), ==, 0);
        g_assert_cmpint(con_spool_remove_temps(f->dirfd), ==, 0);
        g_assert_true(exists(f->dirfd, "T-3.json"));
        g_assert_cmpint(unlinkat(f->dirfd, ".d.abcdef", AT_REMOVEDIR), ==, 0);
}

/* Retention by age and count (the mesh's answers; an agent's conversations by count). */
static void test_prune(Fixture *f, gconstpointer data _unused_) {
        for (int i = 0; i < 6; i++) {
                char name[32];
                (void) snprintf(name, sizeof(name), "a%d.response", i);
                g_assert_cmpint(con_spool_write(f->dirfd, name, "x", 1, NULL), ==, 0);
                struct timespec ts[2] = { { .tv_sec = 1000 + i }, { .tv_sec = 1000 + i } };
                g_assert_cmpint(utimensat(f->dirfd, name, ts, 0), ==, 0);
        }
        g_assert_cmpint(con_spool_write(f->dirfd, "old.reason", "x", 1, NULL), ==, 0);
        struct timespec ts[2] = { { .tv_sec = 10 }, { .tv_sec = 10 } };
        g_assert_cmpint(utimensat(f->dirfd, "old.reason", ts, 0), ==, 0);
        g_assert_cmpint(mkdirat(f->dirfd, "d.response", 0700), ==, 0);
        /* By age: modified before 1002 s (a0, a1); the other suffix and the folder stay. */
        g_assert_cmpint(con_spool_prune(f->dirfd, ".response", SIZE_MAX, 1002ULL * 1000000, NULL), ==, 2);
        g_assert_false(exists(f->dirfd, "a0.response"));
        g_assert_false(exists(f->dirfd, "a1.response"));
        g_assert_true(exists(f->dirfd, "a2.response"));
        g_assert_true(exists(f->dirfd, "old.reason"));
        g_assert_true(exists(f->dirfd, "d.response"));
        /* By count: the 2 newest stay, and the one named except. */
        g_assert_cmpint(con_spool_prune(f->dirfd, ".response", 2, 0, "a2.response"), ==, 1);
        g_assert_false(exists(f->dirfd, "a3.response"));
        g_assert_true(exists(f->dirfd, "a2.response"));
        g_assert_true(exists(f->dirfd, "a4.response"));
        g_assert_true(exists(f->dirfd, "a5.response"));
        /* Both: nothing young enough beyond the count. */
        g_assert_cmpint(con_spool_prune(f->dirfd, "", 10, 100ULL * 1000000, NULL), ==, 1);
        g_assert_false(exists(f->dirfd, "old.reason"));
        g_assert_cmpint(con_spool_prune(f->dirfd, "", 10, 0, NULL), ==, 0);
        g_assert_cmpint(unlinkat(f->dirfd, "d.response", AT_REMOVEDIR), ==, 0);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add("/spool/write", Fixture, NULL, fixture_setup, test_write, fixture_teardown);
        g_test_add("/spool/write-big", Fixture, NULL, fixture_setup, test_write_big, fixture_teardown);
        g_test_add("/spool/chown", Fixture, NULL, fixture_setup, test_chown, fixture_teardown);
        g_test_add("/spool/claim", Fixture, NULL, fixture_setup, test_claim, fixture_teardown);
        g_test_add("/spool/claim-race", Fixture, NULL, fixture_setup, test_claim_race, fixture_teardown);
        g_test_add("/spool/untrusted", Fixture, NULL, fixture_setup, test_untrusted, fixture_teardown);
        g_test_add("/spool/remove-temps", Fixture, NULL, fixture_setup, test_remove_temps, fixture_teardown);
        g_test_add("/spool/prune", Fixture, NULL, fixture_setup, test_prune, fixture_teardown);
        g_test_add_func("/spool/candidate", test_candidate);
        g_test_add_func("/spool/reject-reason", test_reject_reason);
        return con_test_run();
}
