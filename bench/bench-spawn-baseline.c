/* SPDX-License-Identifier: MIT */
/* The original's design for comparison: one process spawned per task.
 *   bench-spawn-baseline worker DIR   (as the worker: read DIR/inbox/NAME... see below)
 *   bench-spawn-baseline run DIR N    drop N files into DIR/inbox, then for each file fork+exec
 *                                     "bench-spawn-baseline worker DIR NAME", which reads the task,
 *                                     writes DIR/outbox/NAME.response (fsync) and renames the task to
 *                                     DIR/processed/NAME. Prints tasks/s. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "time-util.h"

static int worker(const char *dir, const char *name) {
        char in[4096], out[4096], done[4096], buf[65536];
        snprintf(in, sizeof in, "%s/inbox/%s", dir, name);
        snprintf(out, sizeof out, "%s/outbox/%s.response", dir, name);
        snprintf(done, sizeof done, "%s/processed/%s", dir, name);
        int fd = open(in, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return 1;
        ssize_t n = read(fd, buf, sizeof buf);
        close(fd);
        if (n < 0)
                return 1;
        fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, "pong\n", 5) != 5 || fsync(fd) < 0)
                return 1;
        close(fd);
        return rename(in, done) < 0;
}

int main(int argc, char *argv[]) {
        if (argc == 4 && streq(argv[1], "worker"))
                return worker(argv[2], argv[3]);
        if (argc != 4 || !streq(argv[1], "run")) {
                fprintf(stderr, "usage: bench-spawn-baseline run DIR N\n");
                return 2;
        }
        const char *dir = argv[2];
        unsigned n = (unsigned) atoi(argv[3]);
        char p[4096];
        const char *sub[] = { "inbox", "outbox", "processed" };
        for (size_t i = 0; i < ELEMENTSOF(sub); i++) {
                snprintf(p, sizeof p, "%s/%s", dir, sub[i]);
                (void) mkdir(p, 0755);
        }
        for (unsigned i = 0; i < n; i++) {
                snprintf(p, sizeof p, "%s/inbox/t%06u.task", dir, i);
                FILE *f = fopen(p, "we");
                if (!f)
                        return 1;
                fputs("/ping\n", f);
                fclose(f);
        }
        uint64_t t0 = con_now(CLOCK_MONOTONIC);
        for (unsigned i = 0; i < n; i++) {
                char name[64];
                snprintf(name, sizeof name, "t%06u.task", i);
                pid_t pid = fork();
                if (pid == 0) {
                        execl("/proc/self/exe", argv[0], "worker", dir, name, (char *) NULL);
                        _exit(127);
                }
                int st;
                if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
                        return 1;
        }
        double s = (double) (con_now(CLOCK_MONOTONIC) - t0) / 1e6;
        printf("spawn-per-task n=%u %.1f tasks/s\n", n, n / s);
        return 0;
}
