/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/wait.h>

#include "agent-llm.h"
#include "agent-session.h"
#include "cgroup-util.h"
#include "time-util.h"
#include "con-paths.h"
#include "fileio.h"
#include "macro.h"
#include "utf8.h"

#define SESSION_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* ---- runtimes ---- */

static int agent_index(const ConRuntimeEnv *env) {
        for (size_t i = 0; env->config && i < env->config->n_agents; i++)
                if (&env->config->agents[i] == env->agent)
                        return (int) i;
        return -1;
}

static int exec_check(const ConRuntimeEnv *env, char **ret_reason) {
        if (env->agent->command && env->agent->command[0])
                return 0;
        if (asprintf(ret_reason, "agent '%s' uses runner %s but has no command: set agents[%d].command in %s",
                     env->agent->name, strempty(env->agent->rt.runner), agent_index(env),
                     env->config && env->config->path ? env->config->path : CON_CONFIG_PATH) < 0)
                return -ENOMEM;
        return -ENOMEDIUM;
}

static int exec_run(const ConRuntimeTask *t, const ConRuntimeEnv *env, int result_fd) {
        char **argv = env->agent->command;
        char prio[16];

        /* The task text on stdin, through a memfd so a large task cannot block us. */
        int mfd = memfd_create("con-task", 0);
        if (mfd < 0 || con_write_all(mfd, t->text, strlen(t->text)) < 0 || lseek(mfd, 0, SEEK_SET) < 0 ||
            dup2(mfd, STDIN_FILENO) < 0) {
                dprintf(STDERR_FILENO, "cannot pass the task on stdin: %m\n");
                return 126;
        }
        if (mfd != STDIN_FILENO)
                safe_close(mfd);
        if (dup2(result_fd, STDOUT_FILENO) < 0)
                return 126;
        safe_close(result_fd);

        /* A clean environment: never the service's, never secrets. */
        (void) clearenv();
        (void) snprintf(prio, sizeof(prio), "%d", t->priority);
        char deadline[CON_TIMESTAMP_MAX] = "";
        if (t->deadline_usec > 0)
                (void) con_format_timestamp(t->deadline_usec, deadline);
        if (setenv("PATH", SESSION_PATH, 1) < 0 || setenv("HOME", env->workspace, 1) < 0 ||
            setenv("LANG", "C.UTF-8", 1) < 0 || setenv("CON_AGENT", env->agent->name, 1) < 0 ||
            setenv("CON_TASK_ID", t->id, 1) < 0 || setenv("CON_TASK_SENDER", strempty(t->sender), 1) < 0 ||
            setenv("CON_TASK_PRIORITY", prio, 1) < 0 ||
            (deadline[0] && setenv("CON_TASK_DEADLINE", deadline, 1) < 0) ||
            (t->reply_to && setenv("CON_REPLY_TO", t->reply_to, 1) < 0) ||
            con_config_agent_proxy_setenv(env->config, env->agent) < 0)
                return 126;
        execvp(argv[0], argv);
        dprintf(STDERR_FILENO, "cannot execute %s: %m\n", argv[0]);
        return 127;
}

static uint64_t exec_timeout(const ConRuntimeEnv *env) {
        return env->agent->exec_timeout_usec ?: 300 * USEC_PER_SEC;
}

const ConRuntime con_runtime_exec = {
        .name = "exec",
        .check = exec_check,
        .run = exec_run,
        .timeout = exec_timeout,
};

/* The LLM tool loop (agent-llm.c). Without a model it says precisely what is missing; with one,
 * the session asks the model gateway (org.conspiracy.Models), which holds the keys. */
static int picoclaw_check(const ConRuntimeEnv *env, char **ret_reason) {
        const ConAgent *a = env->agent;
        const char *path = env->config && env->config->path ? env->config->path : CON_CONFIG_PATH;

        if (!isempty(a->rt.model))
                return 0;
        if (asprintf(ret_reason,
                     "agent '%s' has no model configured: set agents[%d].model or base.model in %s "
                     "and put the key in " CON_ENV_PATH " (%s)",
                     a->name, agent_index(env), path, strempty(a->rt.api_key_env)) < 0)
                return -ENOMEM;
        return -ENOMEDIUM;
}

static int picoclaw_run(const ConRuntimeTask *t, const ConRuntimeEnv *env, int result_fd) {
        return agent_llm_run(t, env, result_fd);
}

static uint64_t picoclaw_timeout(const ConRuntimeEnv *env) {
        unsigned min = env->config ? env->config->contracts.max_session_min : 0;
        return (uint64_t) (min ?: 30) * 60 * USEC_PER_SEC;
}

const ConRuntime con_runtime_picoclaw = {
        .name = "picoclaw",
        .check = picoclaw_check,
        .run = picoclaw_run,
        .timeout = picoclaw_timeout,
        .conversations = true,
};

const ConRuntime *con_runtime_for_agent(const ConAgent *a) {
        const char *r = a->rt.runner ?: "picoclaw";
        if (streq(r, "picoclaw"))
                return &con_runtime_picoclaw;
        if (streq(r, "exec") || streq(r, "claude") || streq(r, "codex"))
                return &con_runtime_exec;
        return NULL;
}

/* ---- sessions ---- */

static void session_close_out(AgentSession *s) {
        s->out_source = sd_event_source_disable_unref(s->out_source);
        s->out_fd = safe_close(s->out_fd);
}

static void session_close_progress(AgentSession *s) {
        s->progress_source = sd_event_source_disable_unref(s->progress_source);
        s->progress_fd = safe_close(s->progress_fd);
}

static void session_close_turn(AgentSession *s) {
        s->turn_source = sd_event_source_disable_unref(s->turn_source);
        s->turn_fd = safe_close(s->turn_fd);
}

static void session_close_err(AgentSession *s) {
        s->err_source = sd_event_source_disable_unref(s->err_source);
        s->err_fd = safe_close(s->err_fd);
}

/* Every process of the session: its cgroup (double-forked daemons, tools in their own process
 * groups), and, while the main process is not reaped (so its pid and group id cannot have been
 * reused), its process group, which also covers the moment between fork() and the child
 * entering the cgroup (it forks nothing before). */
static void session_kill(AgentSession *s) {
        if (s->cg_fd >= 0)
                (void) con_cgroup_kill(s->cg_fd);
        if (!s->exited && s->pid > 0) {
                (void) kill(-s->pid, SIGKILL);
                (void) kill(s->pid, SIGKILL);
        }
}

static void session_remove_cgroup(AgentSession *s) {
        s->cg_source = sd_event_source_disable_unref(s->cg_source);
        s->cg_events_fd = safe_close(s->cg_events_fd);
        if (s->cg_fd >= 0) {
                (void) con_cgroup_kill(s->cg_fd);
                s->cg_fd = safe_close(s->cg_fd);
                /* EBUSY when something is still dying: the empty folder is left behind. */
                if (s->cg_name && s->cg_parent_fd >= 0)
                        (void) unlinkat(s->cg_parent_fd, s->cg_name, AT_REMOVEDIR);
        }
        free(s->cg_name);
        s->cg_name = NULL;
}

AgentSession *agent_session_free(AgentSession *s) {
        if (!s)
                return NULL;
        if (!s->exited || s->cg_waiting)
                session_kill(s);
        session_remove_cgroup(s);
        s->child_source = sd_event_source_disable_unref(s->child_source);
        s->timer_source = sd_event_source_disable_unref(s->timer_source);
        session_close_out(s);
        session_close_turn(s);
        session_close_progress(s);
        session_close_err(s);
        free(s->out);
        free(s->turn);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}

/* Reads what fd has into *buf, at most max bytes (the rest is drained, so the child never blocks);
 * *total counts every byte. Returns 1 at EOF, 0 when nothing more to read now, -errno on error. */
/* What one call of a reader takes from a session's pipe before it returns to the loop (the io
 * sources are level-triggered: the rest is read on the next turn). A session, or a tool that
 * opened the pipe through /proc, writing without pause cannot keep the service in one callback;
 * the drain at the session's end gets at least a full pipe (at most 1 MiB, pipe-max-size). */
#define SESSION_READ_BUDGET (1024U * 1024U)

static int read_capped(int fd, char **buf, size_t *len, size_t max, uint64_t *total) {
        char scratch[16384];
        for (size_t taken = 0; taken < SESSION_READ_BUDGET;) {
                size_t want = sizeof(scratch);
                if (*len < max && max - *len < want)
                        want = max - *len;
                ssize_t n = read(fd, scratch, want);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EAGAIN ? 0 : -errno;
                }
                if (n == 0)
                        return 1;
                *total += (uint64_t) n;
                taken += (size_t) n;
                if (*len >= max)
                        continue; /* keep draining so the child never blocks */
                char *b = realloc(*buf, *len + (size_t) n + 1);
                if (!b)
                        return -ENOMEM;
                *buf = b;
                memcpy(b + *len, scratch, (size_t) n);
                *len += (size_t) n;
                b[*len] = 0;
        }
        return 0;
}


/* Splits what the session wrote into lines for on_line; a line longer than the buffer is dropped. */
static int session_read_progress(AgentSession *s) {
        for (size_t taken = 0; taken < SESSION_READ_BUDGET;) {
                char buf[4096];
                ssize_t n = read(s->progress_fd, buf, sizeof(buf));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EAGAIN ? 0 : -errno;
                }
                if (n == 0)
                        return 1;
                taken += (size_t) n;
                for (ssize_t i = 0; i < n; i++) {
                        if (buf[i] == '\n') {
                                if (!s->progress_skip && s->on_line)
                                        s->on_line(s, s->progress, s->progress_len, s->userdata);
                                s->progress_len = 0;
                                s->progress_skip = false;
                        } else if (s->progress_len + 1 >= sizeof(s->progress)) {
                                s->progress_skip = true;
                                s->progress_len = 0;
                        } else if (!s->progress_skip)
                                s->progress[s->progress_len++] = buf[i];
                }
        }
        return 0;
}

static int on_progress(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        AgentSession *s = userdata;
        if (session_read_progress(s) != 0)
                session_close_progress(s);
        return 0;
}

static int session_read_out(AgentSession *s) {
        return read_capped(s->out_fd, &s->out, &s->out_len, AGENT_SESSION_OUTPUT_MAX, &s->out_size);
}

static int session_read_turn(AgentSession *s) {
        int r = read_capped(s->turn_fd, &s->turn, &s->turn_len, AGENT_SESSION_TURN_MAX, &s->turn_size);
        if (r > 0)
                s->turn_eof = true;
        return r;
}

static int session_read_err(AgentSession *s) {
        char buf[AGENT_SESSION_STDERR_TAIL];
        for (size_t taken = 0; taken < SESSION_READ_BUDGET;) {
                ssize_t n = read(s->err_fd, buf, sizeof(buf));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return errno == EAGAIN ? 0 : -errno;
                }
                if (n == 0)
                        return 1;
                taken += (size_t) n;
                s->err_size += (uint64_t) n;
                /* Keep the tail: buf is exactly as large as the tail, so dropping from the front
                 * of what we have always makes room. */
                size_t k = (size_t) n;
                if (s->err_len + k > sizeof(s->err)) {
                        size_t drop = s->err_len + k - sizeof(s->err);
                        memmove(s->err, s->err + drop, s->err_len - drop);
                        s->err_len -= drop;
                }
                memcpy(s->err + s->err_len, buf, k);
                s->err_len += k;
        }
        return 0;
}

static void session_maybe_finish(AgentSession *s) {
        if (!s->exited || s->cg_waiting || s->finished)
                return;
        s->finished = true;
        s->timer_source = sd_event_source_disable_unref(s->timer_source);
        if (s->done)
                s->done(s, s->userdata);
}

static int on_out(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        AgentSession *s = userdata;
        if (session_read_out(s) != 0)
                session_close_out(s);
        return 0;
}

static int on_turn(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        AgentSession *s = userdata;
        if (session_read_turn(s) != 0)
                session_close_turn(s);
        return 0;
}

static int on_err(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        AgentSession *s = userdata;
        if (session_read_err(s) != 0)
                session_close_err(s);
        return 0;
}

/* The session is over once its cgroup is empty: then it is removed. Never ends the session itself
 * (its callers may still use it): the callers call session_maybe_finish() when done with it. */
static void session_check_cgroup(AgentSession *s) {
        int r = con_cgroup_events_populated(s->cg_events_fd);
        if (r > 0) {
                (void) con_cgroup_kill(s->cg_fd); /* a fork that raced the first kill */
                return;
        }
        s->cg_waiting = false;
        session_remove_cgroup(s);
}

static int on_cgroup_events(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        AgentSession *s = userdata;
        session_check_cgroup(s);
        session_maybe_finish(s); /* may free s */
        return 0;
}

/* After the main process exited: waits for the cgroup to empty (a killed tool may still be
 * exiting). Does not end the session, even when the cgroup emptied meanwhile: on_child still reads
 * the pipes and then ends it. (It used to: the task ended and the session was freed in the middle
 * of on_child, which read it afterwards, and con-agentd died of that use-after-free.) */
static void session_wait_cgroup(AgentSession *s) {
        if (s->cg_fd < 0 || con_cgroup_populated(s->cg_fd) <= 0) {
                session_remove_cgroup(s);
                return;
        }
        s->cg_events_fd = con_cgroup_open_events(s->cg_fd);
        if (s->cg_events_fd < 0 ||
            sd_event_add_io(s->event, &s->cg_source, s->cg_events_fd, EPOLLPRI, on_cgroup_events, s) < 0) {
                session_remove_cgroup(s);
                return;
        }
        s->cg_waiting = true;
        /* It may have emptied between the check and the watch. */
        session_check_cgroup(s);
}

static int on_child(sd_event_source *src, const siginfo_t *si, void *userdata) {
        AgentSession *s = userdata;

        s->exited = true;
        if (si->si_code == CLD_EXITED)
                s->exit_status = si->si_status;
        else
                s->signal = si->si_status;
        /* The session ends with its main process: whatever it left behind goes too. The zombie
         * still holds the group id, so the group kill cannot hit a reused pid. */
        (void) kill(-s->pid, SIGKILL);
        session_kill(s);
        session_wait_cgroup(s);
        if (s->out_fd >= 0)
                (void) session_read_out(s);
        if (s->turn_fd >= 0)
                (void) session_read_turn(s);
        if (s->progress_fd >= 0)
                (void) session_read_progress(s);
        if (s->err_fd >= 0)
                (void) session_read_err(s);
        session_close_out(s);
        session_close_turn(s);
        session_close_progress(s);
        session_close_err(s);
        session_maybe_finish(s); /* may free s */
        return 0;
}

static int on_timeout(sd_event_source *src, uint64_t usec, void *userdata) {
        AgentSession *s = userdata;
        if (!s->exited) {
                s->timed_out = true;
                session_kill(s);
        }
        return 0;
}

void agent_session_cancel(AgentSession *s) {
        if (s->exited)
                return;
        s->cancelled = true;
        session_kill(s);
}

AgentSessionEnd agent_session_end(const AgentSession *s) {
        if (s->cancelled)
                return AGENT_SESSION_CANCELLED;
        if (s->timed_out)
                return AGENT_SESSION_TIMEOUT;
        if (s->signal > 0)
                return AGENT_SESSION_KILLED;
        return AGENT_SESSION_EXITED;
}

int agent_session_exit_reason(const AgentSession *s, const char *label, char **ret, size_t *ret_len) {
        bool cut = s->err_size > s->err_len;
        /* The front was dropped: start at the first whole character. */
        size_t a = cut ? con_utf8_tail_start(s->err, s->err_len, s->err_len) : 0, b = s->err_len;
        _cleanup_free_ char *head = NULL;

        while (a < b && s->err[a] && strchr(" \t\r\n", s->err[a]))
                a++;
        while (b > a && s->err[b - 1] && strchr(" \t\r\n", s->err[b - 1]))
                b--;
        int n = asprintf(&head, "%s exited with status %d%s%s", label, s->exit_status,
                         a == b ? " and wrote nothing on stderr" : ": ", a < b && cut ? "... " : "");
        if (n < 0)
                return -ENOMEM;
        char *out = malloc((size_t) n + (b - a) + 1);
        if (!out)
                return -ENOMEM;
        memcpy(out, head, (size_t) n);
        memcpy(out + n, s->err + a, b - a);
        out[(size_t) n + (b - a)] = 0;
        *ret = out;
        *ret_len = (size_t) n + (b - a);
        return 0;
}

/* Root to the agent user, for good: supplementary groups, then gid, then uid (all three ids each). */
static int drop_privileges(const ConSessionUser *u) {
        if (setgroups(u->n_groups, u->groups) < 0 || setresgid(u->gid, u->gid, u->gid) < 0 ||
            setresuid(u->uid, u->uid, u->uid) < 0)
                return negative_errno();
        uid_t ru, eu, su;
        if (getresuid(&ru, &eu, &su) < 0 || ru != u->uid || eu != u->uid || su != u->uid)
                return -EPERM;
        if (u->uid != 0 && setuid(0) >= 0)
                return -EPERM; /* getting root back must fail */
        return 0;
}

static _Noreturn void session_child(const ConRuntime *rt, const ConRuntimeTask *t, const ConRuntimeEnv *env,
                                    int out_w, int err_w, int turn_w, int prog_w, int cg_procs_fd) {
        sigset_t ss;
        int r;

        (void) setsid();
        /* First, before anything can fork: into the session's cgroup, while still root. */
        if (cg_procs_fd >= 0) {
                r = con_write_all(cg_procs_fd, "0", 1);
                if (r < 0) {
                        dprintf(err_w, "cannot enter the session's cgroup: %s\n", strerror(-r));
                        _exit(126);
                }
                safe_close(cg_procs_fd);
        }
        for (int sig = 1; sig < _NSIG; sig++)
                if (sig != SIGKILL && sig != SIGSTOP)
                        (void) signal(sig, SIG_DFL);
        sigemptyset(&ss);
        (void) sigprocmask(SIG_SETMASK, &ss, NULL);

        /* fd 0 /dev/null, 1 /dev/null, 2 stderr pipe, 3 result pipe, 4 the turn pipe and 5 the
         * progress pipe of a runtime that keeps conversations (close-on-exec: the session's own,
         * not its tools'), nothing else. */
        int o = fcntl(out_w, F_DUPFD, 10), e = fcntl(err_w, F_DUPFD, 10);
        int tw = turn_w >= 0 ? fcntl(turn_w, F_DUPFD, 10) : -EBADF;
        int pw = prog_w >= 0 ? fcntl(prog_w, F_DUPFD, 10) : -EBADF;
        int null = open("/dev/null", O_RDWR);
        if (o < 0 || e < 0 || null < 0 || (turn_w >= 0 && tw < 0) || (prog_w >= 0 && pw < 0) ||
            dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(e, 2) < 0 || dup2(o, 3) < 0 ||
            (tw >= 0 && dup3(tw, 4, O_CLOEXEC) < 0) || (pw >= 0 && dup3(pw, 5, O_CLOEXEC) < 0))
                _exit(126);
        (void) close_range(pw >= 0 ? 6 : tw >= 0 ? 5 : 4, ~0U, 0);
        ConRuntimeTask task = *t;
        task.turn_fd = tw >= 0 ? 4 : -EBADF;
        task.progress_fd = pw >= 0 ? 5 : -EBADF;
        if (env->user) {
                r = drop_privileges(env->user);
                if (r < 0) {
                        dprintf(STDERR_FILENO, "cannot become the agent user %s: %s\n", env->user->name,
                                strerror(-r));
                        _exit(126);
                }
        }
        (void) prctl(PR_SET_NAME, "con-session", 0, 0, 0);
        /* Not dumpable: the session's tools (the same user) cannot ptrace it or open its fds in
         * /proc (the turn pipe, the conversation it was handed). */
        (void) prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        /* Whatever runs in the session gains no privileges (setuid programs do not elevate). */
        (void) prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        /* A clean environment: never the service's. */
        (void) clearenv();
        if (setenv("PATH", SESSION_PATH, 1) < 0 || setenv("HOME", env->workspace, 1) < 0 ||
            setenv("LANG", "C.UTF-8", 1) < 0 || setenv("CON_AGENT", env->agent->name, 1) < 0 ||
            (env->user && (setenv("USER", env->user->name, 1) < 0 || setenv("LOGNAME", env->user->name, 1) < 0)) ||
            con_config_agent_proxy_setenv(env->config, env->agent) < 0)
                _exit(126);
        if (chdir(env->workspace) < 0) {
                dprintf(STDERR_FILENO, "cannot enter the workspace %s: %m\n", env->workspace);
                _exit(126);
        }
        _exit(rt->run(&task, env, 3) & 0xff);
}

int agent_session_spawn(sd_event *e, const ConRuntime *rt, const ConRuntimeTask *t, const ConRuntimeEnv *env,
                        agent_session_done_t done, void *userdata, AgentSession **ret) {
        int out[2] = { -EBADF, -EBADF }, err[2] = { -EBADF, -EBADF }, turn[2] = { -EBADF, -EBADF },
            prog[2] = { -EBADF, -EBADF };
        int cg_procs = -EBADF;
        int r;

        AgentSession *s = calloc(1, sizeof(AgentSession));
        if (!s)
                return -ENOMEM;
        s->out_fd = s->err_fd = s->turn_fd = s->progress_fd = s->cg_fd = s->cg_events_fd = -EBADF;
        s->cg_parent_fd = env->cgroup_fd;
        s->event = sd_event_ref(e);
        s->done = done;
        s->userdata = userdata;
        s->timeout_usec = rt->timeout ? rt->timeout(env) : 0;
        if (t->deadline_usec > 0) {
                /* A task's deadline (a delegated task's is at most its parent's) bounds its session. */
                uint64_t now = con_now(CLOCK_REALTIME);
                uint64_t left = t->deadline_usec > now + USEC_PER_SEC ? t->deadline_usec - now : USEC_PER_SEC;
                if (s->timeout_usec == 0 || left < s->timeout_usec)
                        s->timeout_usec = left;
        }

        if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
            (rt->conversations && (pipe2(turn, O_CLOEXEC) < 0 || pipe2(prog, O_CLOEXEC) < 0))) {
                r = -errno;
                goto fail;
        }
        if (env->cgroup_fd >= 0) {
                /* A fresh folder per session, never one that exists (another instance's). */
                for (unsigned i = 0;; i++) {
                        uint32_t rnd = 0;
                        (void) getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK);
                        free(s->cg_name);
                        if (asprintf(&s->cg_name, "session-%s-%08x", t->id, rnd) < 0) {
                                s->cg_name = NULL;
                                r = -ENOMEM;
                                goto fail;
                        }
                        r = con_cgroup_create(env->cgroup_fd, s->cg_name, &s->cg_fd);
                        if (r != -EEXIST || i >= 8)
                                break;
                }
                if (r < 0) {
                        free(s->cg_name);
                        s->cg_name = NULL;
                        goto fail;
                }
                cg_procs = openat(s->cg_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
                if (cg_procs < 0) {
                        r = -errno;
                        goto fail;
                }
        }
        s->pid = fork();
        if (s->pid < 0) {
                r = -errno;
                goto fail;
        }
        if (s->pid == 0)
                session_child(rt, t, env, out[1], err[1], turn[1], prog[1], cg_procs);
        cg_procs = safe_close(cg_procs);

        /* Also in the parent, so the kill in on_child/cancel cannot race the child's setsid(). */
        (void) setpgid(s->pid, s->pid);
        out[1] = safe_close(out[1]);
        err[1] = safe_close(err[1]);
        turn[1] = safe_close(turn[1]);
        prog[1] = safe_close(prog[1]);
        s->out_fd = TAKE_FD(out[0]);
        s->err_fd = TAKE_FD(err[0]);
        s->turn_fd = TAKE_FD(turn[0]);
        s->progress_fd = TAKE_FD(prog[0]);
        (void) fcntl(s->out_fd, F_SETFL, O_NONBLOCK);
        (void) fcntl(s->err_fd, F_SETFL, O_NONBLOCK);

        r = sd_event_add_io(e, &s->out_source, s->out_fd, EPOLLIN, on_out, s);
        if (r >= 0 && s->turn_fd >= 0) {
                (void) fcntl(s->turn_fd, F_SETFL, O_NONBLOCK);
                r = sd_event_add_io(e, &s->turn_source, s->turn_fd, EPOLLIN, on_turn, s);
        }
        if (r >= 0 && s->progress_fd >= 0) {
                (void) fcntl(s->progress_fd, F_SETFL, O_NONBLOCK);
                r = sd_event_add_io(e, &s->progress_source, s->progress_fd, EPOLLIN, on_progress, s);
        }
        if (r >= 0)
                r = sd_event_add_io(e, &s->err_source, s->err_fd, EPOLLIN, on_err, s);
        if (r >= 0)
                r = sd_event_add_child(e, &s->child_source, s->pid, WEXITED, on_child, s);
        if (r >= 0 && s->timeout_usec > 0)
                r = sd_event_add_time_relative(e, &s->timer_source, CLOCK_MONOTONIC, s->timeout_usec, 0,
                                               on_timeout, s);
        if (r < 0) {
                session_kill(s);
                (void) waitpid(s->pid, NULL, 0);
                s->exited = true;
                agent_session_free(s);
                return r;
        }
        *ret = s;
        return 0;

fail:
        safe_close(cg_procs);
        safe_close(out[0]);
        safe_close(out[1]);
        safe_close(err[0]);
        safe_close(err[1]);
        safe_close(turn[0]);
        safe_close(turn[1]);
        safe_close(prog[0]);
        safe_close(prog[1]);
        agent_session_free(s);
        return r;
}
