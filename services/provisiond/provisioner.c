/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "authz.h"
#include "bus-util.h"
#include "con-paths.h"
#include "config.h"
#include "error-detail.h"
#include "errors.h"
#include "fileio.h"
#include "log.h"
#include "macro.h"
#include "names.h"
#include "provisioner.h"
#include "retire.h"
#include "strv.h"
#include "time-util.h"
#include "user-util.h"
#include "userdb.h"
#include "utf8.h"
#include "yaml-reader.h"

#define RUN_DIR_DEFAULT "/run/con-provisiond"
#define JOBS_MAX 32                     /* calls waiting for their turn */
#define JOB_TIMEOUT_USEC (10 * 60 * USEC_PER_SEC)
#define OUTPUT_MAX (1U << 20)           /* what a worker may report */
#define AGENT_STOP_USEC (10 * USEC_PER_SEC)

typedef enum JobKind {
        JOB_COMMISSION,
        JOB_DECOMMISSION,
} JobKind;

typedef struct Job Job;
struct Job {
        Provisioner *p;
        Job *next;
        JobKind kind;
        sd_bus_message *call;
        uid_t caller;
        ConAgentSpec spec;              /* COMMISSION; spec.name is the agent for both */
        bool archive;                   /* DECOMMISSION */
        pid_t pid;
        int out_fd;
        char *out;
        size_t out_len;
        bool truncated;
        sd_event_source *child_src, *io_src, *timeout_src;
};

struct Provisioner {
        ProvisionerOptions o;
        sd_event *event;
        sd_bus *bus;
        ConAuthz *authz;
        sd_bus_slot *slot;
        Job *running;
        Job *queue_head, *queue_tail;
        size_t n_queued;
        ConConfig *config;              /* the agents as last loaded (ListAgents, Agents) */
        struct timespec config_mtime, dropins_mtime; /* of what was loaded: a change loads again */
        char *config_error;
};

/* ---- the worker: runs in a child process, may block ---- */

/* The worker's report: "ERRORNAME\0MESSAGE\0LINE\0LINE\0..."; an empty name for success. */
static void report(int fd, const char *error, const char *message, char * const *lines) {
        (void) con_write_all(fd, error, strlen(error) + 1);
        (void) con_write_all(fd, message, strlen(message) + 1);
        STRV_FOREACH(l, lines)
                (void) con_write_all(fd, *l, strlen(*l) + 1);
}

_printf_(3, 4)
static int fail(int fd, const char *error, const char *fmt, ...) {
        _cleanup_free_ char *m = NULL;
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(&m, fmt, ap) < 0)
                m = NULL;
        va_end(ap);
        report(fd, error, m ?: "out of memory", NULL);
        return 1;
}

/* Runs `con bootstrap ARGS...`, collecting what it prints. Returns its exit status (or -errno). */
static int run_bootstrap(const Provisioner *p, char * const *args, char ***ret_lines) {
        _cleanup_close_ int rfd = -EBADF, wfd = -EBADF;
        int fds[2];

        if (pipe2(fds, O_CLOEXEC) < 0)
                return negative_errno();
        rfd = fds[0];
        wfd = fds[1];
        pid_t pid = fork();
        if (pid < 0)
                return negative_errno();
        if (pid == 0) {
                _cleanup_strv_free_ char **argv = NULL, **envp = NULL;
                if (dup2(wfd, STDOUT_FILENO) < 0 || dup2(wfd, STDERR_FILENO) < 0)
                        _exit(127);
                int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (nul >= 0)
                        (void) dup2(nul, STDIN_FILENO);
                if (strv_extend(&argv, p->o.con_path) < 0 || strv_extend(&argv, "bootstrap") < 0)
                        _exit(127);
                STRV_FOREACH(a, args)
                        if (strv_extend(&argv, *a) < 0)
                                _exit(127);
                /* A clean environment, as con up gives the daemons; the sanitizers' options pass
                 * (a sanitizer build under systemd turns leak checks off for the units). */
                if (strv_extend(&envp, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin") < 0 ||
                    strv_extend(&envp, "LANG=C.UTF-8") < 0)
                        _exit(127);
                STRV_FOREACH(k, STRV_MAKE((char *) "ASAN_OPTIONS", (char *) "UBSAN_OPTIONS", (char *) "LSAN_OPTIONS",
                                          (char *) "CON_LOG_LEVEL")) {
                        const char *v = getenv(*k);
                        if (v && strv_extendf(&envp, "%s=%s", *k, v) < 0)
                                _exit(127);
                }
                if (p->o.fail_at > 0 && strv_extendf(&envp, "CON_TEST_BOOTSTRAP_FAIL_AT=%u", p->o.fail_at) < 0)
                        _exit(127);
                execve(argv[0], argv, envp);
                _exit(127);
        }
        wfd = safe_close(wfd);

        /* Everything it prints, up to OUTPUT_MAX (the rest is read and dropped, so it never blocks). */
        _cleanup_free_ char *buf = malloc(OUTPUT_MAX + 1);
        size_t len = 0;
        int r = buf ? 0 : -ENOMEM, status;
        for (;;) {
                char chunk[4096];
                ssize_t n = read(rfd, chunk, sizeof chunk);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                size_t room = OUTPUT_MAX - len, take = !buf ? 0 : (size_t) n < room ? (size_t) n : room;
                if (take > 0) {
                        memcpy(buf + len, chunk, take);
                        len += take;
                }
        }
        if (buf)
                buf[len] = 0;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return negative_errno();
        if (r >= 0 && buf) {
                char *save = NULL;
                for (char *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
                        if (strv_extend(ret_lines, l) < 0)
                                return -ENOMEM;
        }
        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* Why a run failed: its last "con: " line, else its exit status and its last line. */
static char *bootstrap_error(int status, char * const *lines) {
        const char *e = NULL;
        char *m = NULL;
        STRV_FOREACH(l, lines)
                if (startswith(*l, "con: ") && !strstr(*l, ": warning: "))
                        e = *l + strlen("con: ");
        if (e)
                return strdup(e);
        size_t n = strv_length(lines);
        if (asprintf(&m, "con bootstrap failed with exit status %d%s%s", status, n > 0 ? "; its last line: " : "",
                     n > 0 ? lines[n - 1] : "") < 0)
                return NULL;
        return m;
}

static int load_config(const Provisioner *p, const ConConfigLoad *l, ConConfig **ret, char **ret_error) {
        ConErrorDetail e = {};
        ConConfigLoad copy = *l;
        copy.path = p->o.config_path;
        int r = con_config_load_full(&copy, ret, &e);
        if (r < 0) {
                *ret_error = con_error_detail_format(&e);
                con_error_detail_done(&e);
        }
        return r;
}

static int worker_commission(Provisioner *p, Job *j, int fd) {
        const ConAgentSpec *s = &j->spec;
        _cleanup_(con_config_freep) ConConfig *current = NULL, *next = NULL;
        _cleanup_free_ char *error = NULL, *yaml = NULL, *dropin = NULL, *file = NULL, *user = NULL, *caller = NULL;
        _cleanup_strv_free_ char **lines = NULL, **groups = NULL;
        gid_t caller_gid = 0;
        int r;

        r = load_config(p, &(ConConfigLoad) {}, &current, &error);
        if (r < 0)
                return fail(fd, CON_ERROR_INVALID_CONFIG, "the configuration does not load, so nothing can be "
                            "commissioned: %s", error ?: strerror(-r));
        if (con_config_find_agent(current, s->name))
                return fail(fd, CON_ERROR_AGENT_EXISTS, "agent '%s' already exists (defined in %s)", s->name,
                            con_config_find_agent(current, s->name)->file ?: p->o.config_path);
        /* A user of that name that is not an agent of this config: never taken over. */
        r = con_agent_user(s->name, &user);
        if (r < 0)
                return fail(fd, "org.freedesktop.DBus.Error.NoMemory", "out of memory");
        {
                _cleanup_(con_userdb_freep) ConUserDb *db = NULL;
                ConPasswdEntry pw = {};
                if (con_userdb_load(NULL, &db) >= 0 && con_userdb_get_user(db, user, &pw) >= 0) {
                        con_passwd_entry_done(&pw);
                        return fail(fd, CON_ERROR_AGENT_EXISTS, "the user '%s' already exists and is not an agent of "
                                    "this configuration; choose another name (or remove the user)", user);
                }
        }

        r = con_agent_spec_to_yaml(s, &yaml);
        if (r < 0)
                return fail(fd, CON_ERROR_INVALID_SPEC, "the specification cannot be written as a drop-in: %s",
                            strerror(-r));
        if (asprintf(&file, "%s.yaml", s->name) < 0 || asprintf(&dropin, "%s/%s", p->o.run_dir, file) < 0)
                return fail(fd, "org.freedesktop.DBus.Error.NoMemory", "out of memory");
        r = load_config(p, &(ConConfigLoad) { .extra_dropin_name = file, .extra_dropin_text = yaml,
                                              .extra_dropin_len = strlen(yaml) }, &next, &error);
        if (r < 0)
                return fail(fd, CON_ERROR_INVALID_SPEC, "%s", error ?: strerror(-r));

        /* What the caller may grant: from its user and groups as the user database says now. */
        r = con_user_by_uid(j->caller, &caller, &caller_gid);
        if (r < 0)
                return fail(fd, CON_ERROR_ACCESS_DENIED, "the calling uid %u has no user name", (unsigned) j->caller);
        if (j->caller != 0) {
                r = con_user_group_names(caller, caller_gid, &groups);
                if (r < 0)
                        return fail(fd, CON_ERROR_ACCESS_DENIED, "cannot read the groups of %s: %s", caller, strerror(-r));
        }
        free(error);
        error = NULL;
        r = con_agent_spec_authorize(s, next, j->caller == 0 ? "root" : caller, groups, &error);
        if (r == -EPERM)
                return fail(fd, CON_ERROR_ACCESS_DENIED, "%s", error);
        if (r == -EINVAL)
                return fail(fd, CON_ERROR_INVALID_SPEC, "%s", error);
        if (r < 0)
                return fail(fd, "org.freedesktop.DBus.Error.Failed", "cannot check the grants: %s", strerror(-r));

        /* The drop-in, as a file for `con bootstrap --add-dropin` (which installs it last, rolled back
         * with everything else if a step fails). */
        if (mkdir(p->o.run_dir, 0700) < 0 && errno != EEXIST)
                return fail(fd, CON_ERROR_PROVISIONING_FAILED, "cannot create %s: %m", p->o.run_dir);
        r = write_file_atomic(dropin, yaml, strlen(yaml), 0600, 0, 0);
        if (r < 0)
                return fail(fd, CON_ERROR_PROVISIONING_FAILED, "cannot write %s: %s", dropin, strerror(-r));
        r = run_bootstrap(p, STRV_MAKE((char *) "--add-dropin", dropin), &lines);
        (void) unlink(dropin);
        if (r != 0) {
                _cleanup_free_ char *why = r < 0 ? strdup(strerror(-r)) : bootstrap_error(r, lines);
                return fail(fd, r == 4 ? CON_ERROR_INVALID_SPEC : CON_ERROR_PROVISIONING_FAILED, "%s",
                            why ?: "con bootstrap failed");
        }
        report(fd, "", "", lines);
        return 0;
}

/* The agent's service stops: systemd's unit where systemd runs, then whoever owns its bus name
 * (SIGTERM, SIGKILL after AGENT_STOP_USEC), as con down stops the fabric. */
static void stop_agent(const char *name) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_free_ char *bus_name = NULL;

        if (sd_booted() > 0) {
                _cleanup_free_ char *unit = NULL;
                if (asprintf(&unit, "con-agent@%s.service", name) >= 0) {
                        pid_t pid = fork();
                        if (pid == 0) {
                                execl("/bin/systemctl", "systemctl", "stop", unit, (char *) NULL);
                                _exit(127);
                        }
                        if (pid > 0)
                                (void) waitpid(pid, NULL, 0);
                }
        }
        if (con_agent_bus_name(name, &bus_name) < 0 || sd_bus_open_system(&bus) < 0)
                return;
        uint64_t deadline = con_now(CLOCK_MONOTONIC) + AGENT_STOP_USEC;
        bool term = false, killed = false;
        for (;;) {
                _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *c = NULL;
                pid_t pid;
                if (sd_bus_get_name_creds(bus, bus_name, SD_BUS_CREDS_PID, &c) < 0 || sd_bus_creds_get_pid(c, &pid) < 0)
                        return;         /* nobody owns it (any more) */
                uint64_t now = con_now(CLOCK_MONOTONIC);
                if (!term) {
                        (void) kill(pid, SIGTERM);
                        term = true;
                } else if (now > deadline) {
                        if (killed)
                                return;
                        (void) kill(pid, SIGKILL);
                        killed = true;
                        deadline = now + AGENT_STOP_USEC;
                }
                (void) usleep(100 * 1000);
        }
}

static int worker_decommission(Provisioner *p, Job *j, int fd) {
        _cleanup_(con_config_freep) ConConfig *current = NULL;
        _cleanup_free_ char *error = NULL, *file = NULL, *expected = NULL, *archive = NULL, *dir = NULL;
        _cleanup_strv_free_ char **lines = NULL;
        const char *name = j->spec.name;
        int r;

        r = load_config(p, &(ConConfigLoad) {}, &current, &error);
        if (r < 0)
                return fail(fd, CON_ERROR_INVALID_CONFIG, "the configuration does not load: %s", error ?: strerror(-r));
        const ConAgent *a = con_config_find_agent(current, name);
        if (!a)
                return fail(fd, CON_ERROR_NO_SUCH_AGENT, "no agent '%s' is configured", name);
        if (asprintf(&dir, "%s.d", p->o.config_path) < 0 || asprintf(&file, "%s.yaml", name) < 0 ||
            asprintf(&expected, "%s/%s", dir, file) < 0)
                return fail(fd, "org.freedesktop.DBus.Error.NoMemory", "out of memory");
        if (!a->file || !streq(a->file, expected))
                return fail(fd, CON_ERROR_NOT_COMMISSIONED, "agent '%s' is defined in %s:%u, not by a commission "
                            "(%s); remove it there and run con bootstrap", name, a->file ?: p->o.config_path, a->line,
                            expected);
        /* Without it, the rest must still load (a grant elsewhere may name it). */
        {
                _cleanup_(con_config_freep) ConConfig *next = NULL;
                free(error);
                error = NULL;
                r = load_config(p, &(ConConfigLoad) { .omit_dropin = file }, &next, &error);
                if (r < 0)
                        return fail(fd, CON_ERROR_INVALID_CONFIG, "without %s the configuration does not load, "
                                    "so it stays: %s", expected, error ?: strerror(-r));
        }

        r = run_bootstrap(p, STRV_MAKE((char *) "--remove-dropin", file), &lines);
        if (r != 0) {
                _cleanup_free_ char *why = r < 0 ? strdup(strerror(-r)) : bootstrap_error(r, lines);
                return fail(fd, CON_ERROR_PROVISIONING_FAILED, "%s", why ?: "con bootstrap failed");
        }
        stop_agent(name);
        free(error);
        error = NULL;
        if (p->o.fail_retire)
                r = con_error_textf(&error, -EIO, "test: the retire step fails (CON_TEST_PROVISION_FAIL_RETIRE)");
        else
                r = con_retire_agent(&(ConRetireOptions) { .name = name, .archive = j->archive,
                                                           .now_usec = con_now(CLOCK_REALTIME) }, &archive, &error);
        if (r < 0)
                return fail(fd, CON_ERROR_PROVISIONING_FAILED, "%s was removed from the configuration, but: %s",
                            name, error ?: strerror(-r));
        if (archive && strv_extendf(&lines, "archive %s", archive) < 0)
                return fail(fd, "org.freedesktop.DBus.Error.NoMemory", "out of memory");
        if (strv_extendf(&lines, "remove user a-%s, /home/a-%s%s%s", name, name,
                         archive ? "" : ", " CON_SRV_DIR "/agents/", archive ? "" : name) < 0)
                return fail(fd, "org.freedesktop.DBus.Error.NoMemory", "out of memory");
        report(fd, "", "", lines);
        return 0;
}

/* ---- the jobs, on the event loop ---- */

static void job_free(Job *j) {
        if (!j)
                return;
        sd_event_source_disable_unref(j->child_src);
        sd_event_source_disable_unref(j->io_src);
        sd_event_source_disable_unref(j->timeout_src);
        safe_close(j->out_fd);
        if (j->pid > 0) {
                (void) kill(-j->pid, SIGKILL);
                (void) waitpid(j->pid, NULL, 0);
        }
        sd_bus_message_unref(j->call);
        con_agent_spec_done(&j->spec);
        free(j->out);
        free(j);
}

static bool timespec_eq(const struct timespec *a, const struct timespec *b) {
        return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

/* The mtimes of con.yaml and of the drop-in folder (a file added, removed or renamed in it). */
static void config_mtimes(const Provisioner *p, struct timespec *ret_config, struct timespec *ret_dropins) {
        _cleanup_free_ char *dir = NULL;
        struct stat st;
        *ret_config = stat(p->o.config_path, &st) >= 0 ? st.st_mtim : (struct timespec) {};
        *ret_dropins = asprintf(&dir, "%s.d", p->o.config_path) >= 0 && stat(dir, &st) >= 0 ? st.st_mtim
                                                                                           : (struct timespec) {};
}

static void provisioner_load(Provisioner *p) {
        _cleanup_(con_config_freep) ConConfig *c = NULL;
        _cleanup_free_ char *error = NULL;
        config_mtimes(p, &p->config_mtime, &p->dropins_mtime);
        if (load_config(p, &(ConConfigLoad) {}, &c, &error) < 0) {
                log_warning("The configuration does not load; the agent list is the last one loaded: %s",
                            error ?: "unknown error");
                free(p->config_error);
                p->config_error = TAKE_PTR(error);
                return;
        }
        con_config_free(p->config);
        p->config = TAKE_PTR(c);
        free(p->config_error);
        p->config_error = NULL;
}

static void job_drain(Job *j) {
        for (;;) {
                char buf[4096];
                ssize_t n = read(j->out_fd, buf, sizeof buf);
                if (n <= 0)
                        return;
                if (j->out_len + (size_t) n > OUTPUT_MAX) {
                        j->truncated = true;
                        continue;
                }
                char *b = realloc(j->out, j->out_len + (size_t) n + 1);
                if (!b) {
                        j->truncated = true;
                        continue;
                }
                j->out = b;
                memcpy(j->out + j->out_len, buf, (size_t) n);
                j->out_len += (size_t) n;
                j->out[j->out_len] = 0;
        }
}

static int on_job_output(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Job *j = userdata;
        job_drain(j);
        if (revents & (EPOLLHUP | EPOLLERR))
                j->io_src = sd_event_source_disable_unref(j->io_src);
        return 0;
}

static void provisioner_next(Provisioner *p);

static void job_reply(Job *j, const char *error, const char *message, char * const *lines) {
        Provisioner *p = j->p;
        const char *name = j->spec.name;
        int r;

        if (error && *error) {
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                log_notice("%s %s for uid %u refused: %s", j->kind == JOB_COMMISSION ? "Commissioning" : "Decommissioning",
                           name, (unsigned) j->caller, message);
                (void) sd_bus_error_set(&e, error, message);
                r = sd_bus_reply_method_error(j->call, &e);
        } else {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                log_info("%s %s for uid %u", j->kind == JOB_COMMISSION ? "Commissioned" : "Decommissioned", name,
                         (unsigned) j->caller);
                r = sd_bus_message_new_method_return(j->call, &reply);
                if (r >= 0)
                        r = sd_bus_message_append_strv(reply, (char **) lines);
                if (r >= 0)
                        r = sd_bus_send(NULL, reply, NULL);
                provisioner_load(p);
                /* Names only: never the spec or the instructions. */
                (void) sd_bus_emit_signal(p->bus, CON_PROVISIONER_PATH, CON_PROVISIONER_INTERFACE,
                                          j->kind == JOB_COMMISSION ? "AgentCommissioned" : "AgentDecommissioned",
                                          "s", name);
                (void) sd_bus_emit_properties_changed(p->bus, CON_PROVISIONER_PATH, CON_PROVISIONER_INTERFACE,
                                                      "Agents", NULL);
        }
        if (r < 0)
                log_warning("Cannot answer the call for %s: %s", name, strerror(-r));
}

static int on_job_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        Job *j = userdata;
        Provisioner *p = j->p;
        _cleanup_strv_free_ char **fields = NULL;

        j->child_src = sd_event_source_disable_unref(j->child_src);
        j->pid = 0;
        job_drain(j);
        for (size_t at = 0; j->out && at < j->out_len;) {
                size_t n = strnlen(j->out + at, j->out_len - at);
                if (strv_extend(&fields, j->out + at) < 0)
                        break;
                at += n + 1;
        }
        if (strv_length(fields) >= 2 && !j->truncated)
                job_reply(j, fields[0], fields[1], fields + 2);
        else {
                _cleanup_free_ char *m = NULL;
                if (asprintf(&m, "the worker ended without a report (%s %d)",
                             si->si_code == CLD_EXITED ? "exit status" : "signal", si->si_status) < 0)
                        m = NULL;
                job_reply(j, CON_ERROR_PROVISIONING_FAILED, m ?: "the worker ended without a report", NULL);
        }
        p->running = NULL;
        job_free(j);
        provisioner_next(p);
        return 0;
}

static int on_job_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Job *j = userdata;
        if (j->pid > 0)
                (void) kill(-j->pid, SIGKILL);
        return 0;
}

static int job_start(Job *j) {
        Provisioner *p = j->p;
        int fds[2], r;

        if (pipe2(fds, O_CLOEXEC) < 0)
                return negative_errno();
        pid_t pid = fork();
        if (pid < 0) {
                r = negative_errno();
                safe_close(fds[0]);
                safe_close(fds[1]);
                return r;
        }
        if (pid == 0) {
                /* The worker: its own process group (a timeout kills it whole), the parent's
                 * signal mask undone, the parent's bus and loop never touched. */
                sigset_t ss;
                sigemptyset(&ss);
                (void) sigprocmask(SIG_SETMASK, &ss, NULL);
                (void) setpgid(0, 0);
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                safe_close(fds[0]);
                r = j->kind == JOB_COMMISSION ? worker_commission(p, j, fds[1]) : worker_decommission(p, j, fds[1]);
                _exit(r < 0 ? 1 : 0);
        }
        (void) setpgid(pid, pid);
        safe_close(fds[1]);
        j->pid = pid;
        j->out_fd = fds[0];
        (void) fcntl(j->out_fd, F_SETFL, O_NONBLOCK);
        r = sd_event_add_child(p->event, &j->child_src, pid, WEXITED, on_job_exit, j);
        if (r < 0)
                return r;
        r = sd_event_add_io(p->event, &j->io_src, j->out_fd, EPOLLIN, on_job_output, j);
        if (r < 0)
                return r;
        r = sd_event_add_time_relative(p->event, &j->timeout_src, CLOCK_MONOTONIC, JOB_TIMEOUT_USEC, 0,
                                       on_job_timeout, j);
        if (r < 0)
                return r;
        log_info("%s %s for uid %u: worker %d", j->kind == JOB_COMMISSION ? "Commissioning" : "Decommissioning",
                 j->spec.name, (unsigned) j->caller, (int) pid);
        return 0;
}

static void provisioner_next(Provisioner *p) {
        while (!p->running && p->queue_head) {
                Job *j = p->queue_head;
                p->queue_head = j->next;
                if (!p->queue_head)
                        p->queue_tail = NULL;
                p->n_queued--;
                j->next = NULL;
                int r = job_start(j);
                if (r < 0) {
                        _cleanup_free_ char *m = NULL;
                        if (asprintf(&m, "cannot start the worker: %s", strerror(-r)) < 0)
                                m = NULL;
                        job_reply(j, CON_ERROR_PROVISIONING_FAILED, m ?: "cannot start the worker", NULL);
                        job_free(j);
                        continue;
                }
                p->running = j;
        }
}

/* ---- bus methods ---- */

static int read_string(sd_bus_message *m, const char *key, char **dest, char **ret_error) {
        const char *v;
        int r = sd_bus_message_read(m, "v", "s", &v);
        if (r == -ENXIO || r == -EBADMSG)
                return con_error_textf(ret_error, -EINVAL, "%s: expected a string (s)", key);
        if (r < 0)
                return r;
        free(*dest);
        *dest = strdup(v);
        return *dest ? 0 : -ENOMEM;
}

static int read_strv(sd_bus_message *m, const char *key, char ***dest, char **ret_error) {
        _cleanup_strv_free_ char **l = NULL;
        int r = sd_bus_message_enter_container(m, 'v', "as");
        if (r == -ENXIO || r == -EBADMSG)
                return con_error_textf(ret_error, -EINVAL, "%s: expected a list of strings (as)", key);
        if (r < 0)
                return r;
        r = sd_bus_message_read_strv(m, &l);
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        if (strv_length(l) > CON_AGENT_SPEC_LIST_MAX)
                return con_error_textf(ret_error, -EINVAL, "%s: %zu entries; at most %u are allowed", key,
                                       strv_length(l), CON_AGENT_SPEC_LIST_MAX);
        strv_free(*dest);
        *dest = TAKE_PTR(l);
        return 0;
}

int provisioner_read_spec(sd_bus_message *m, ConAgentSpec *s, char **ret_error) {
        _cleanup_strv_free_ char **seen = NULL;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        for (;;) {
                const char *key;
                r = sd_bus_message_enter_container(m, 'e', "sv");
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;
                if (strv_contains(seen, key))
                        return con_error_textf(ret_error, -EINVAL, "%s: given twice", key);
                if (strv_length(seen) >= 32)
                        return con_error_textf(ret_error, -EINVAL, "too many keys");
                if (strv_extend(&seen, key) < 0)
                        return -ENOMEM;
                if (streq(key, "tier"))
                        r = read_string(m, key, &s->tier, ret_error);
                else if (streq(key, "mode"))
                        r = read_string(m, key, &s->mode, ret_error);
                else if (streq(key, "cron"))
                        r = read_string(m, key, &s->cron, ret_error);
                else if (streq(key, "cron_task"))
                        r = read_string(m, key, &s->cron_task, ret_error);
                else if (streq(key, "instructions"))
                        r = read_string(m, key, &s->instructions, ret_error);
                else if (streq(key, "runner"))
                        r = read_string(m, key, &s->runner, ret_error);
                else if (streq(key, "provider"))
                        r = read_string(m, key, &s->provider, ret_error);
                else if (streq(key, "model"))
                        r = read_string(m, key, &s->model, ret_error);
                else if (streq(key, "roles"))
                        r = read_strv(m, key, &s->roles, ret_error);
                else if (streq(key, "may_task"))
                        r = read_strv(m, key, &s->may_task, ret_error);
                else if (streq(key, "tasked_by"))
                        r = read_strv(m, key, &s->tasked_by, ret_error);
                else if (streq(key, "network"))
                        r = read_strv(m, key, &s->network, ret_error);
                else {
                        _cleanup_free_ char *q = con_utf8_quote(key, strlen(key), 64);
                        return con_error_textf(ret_error, -EINVAL, "%s: unknown key; use tier, mode, cron, cron_task, "
                                               "roles, instructions, may_task, tasked_by, runner, provider, model, "
                                               "network", q ?: "key");
                }
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_exit_container(m);
}

/* Who may: polkit's org.conspiracy.agent.commission with the caller's bus name (root is allowed by
 * the service: polkit says yes to root before any rule). 1 allowed with *ret_uid, 0 parked. */
static int authorize(Provisioner *p, sd_bus_message *m, const char *verb, uid_t *ret_uid, sd_bus_error *error) {
        const char *details[] = { "verb", verb, NULL };
        int r = con_authz_verify(p->authz, m, "org.conspiracy.agent.commission", (char * const *) details, error);
        if (r <= 0)
                return r;
        return con_authz_caller_uid(p->authz, m, ret_uid, error);
}

static int enqueue(Provisioner *p, sd_bus_message *m, Job **jp, sd_bus_error *error) {
        Job *j = *jp;
        if (p->n_queued >= JOBS_MAX)
                return con_bus_error_setf(error, CON_ERROR_QUEUE_FULL, "%zu commissions are waiting already; try again "
                                          "later", p->n_queued);
        j->p = p;
        j->out_fd = -EBADF;
        j->call = sd_bus_message_ref(m);
        if (p->queue_tail)
                p->queue_tail->next = j;
        else
                p->queue_head = j;
        p->queue_tail = j;
        p->n_queued++;
        *jp = NULL;
        provisioner_next(p);
        return 1;
}

static void job_freep(Job **j) {
        job_free(*j);
}

static int method_commission(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Provisioner *p = userdata;
        _cleanup_(job_freep) Job *j = calloc(1, sizeof(Job));
        _cleanup_free_ char *problem = NULL;
        const char *name;
        int r;

        if (!j)
                return -ENOMEM;
        j->kind = JOB_COMMISSION;
        j->out_fd = -EBADF;
        r = sd_bus_message_read(m, "s", &name);
        if (r < 0)
                return r;
        j->spec.name = strdup(name);
        if (!j->spec.name)
                return -ENOMEM;
        r = provisioner_read_spec(m, &j->spec, &problem);
        if (r == -EINVAL && problem)
                return con_bus_error_setf(error, CON_ERROR_INVALID_SPEC, "%s", problem);
        if (r < 0)
                return r;
        r = con_agent_spec_check(&j->spec, &problem);
        if (r < 0)
                return con_bus_error_setf(error, CON_ERROR_INVALID_SPEC, "%s", problem ?: strerror(-r));
        r = authorize(p, m, "commission", &j->caller, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        return enqueue(p, m, &j, error);
}

static int method_decommission(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Provisioner *p = userdata;
        _cleanup_(job_freep) Job *j = calloc(1, sizeof(Job));
        const char *name;
        int r;

        if (!j)
                return -ENOMEM;
        j->kind = JOB_DECOMMISSION;
        j->out_fd = -EBADF;
        r = sd_bus_message_read(m, "s", &name);
        if (r < 0)
                return r;
        ConNameProblem np = con_agent_name_check(name);
        if (np != CON_NAME_OK) {
                _cleanup_free_ char *q = con_utf8_quote(name, strlen(name), 64);
                return con_bus_error_setf(error, CON_ERROR_INVALID_SPEC, "%s is not a valid agent name: %s", q ?: "name",
                                          con_name_problem_to_string(np));
        }
        if (!(j->spec.name = strdup(name)))
                return -ENOMEM;
        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        for (;;) {
                const char *key;
                r = sd_bus_message_enter_container(m, 'e', "sv");
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;
                if (!streq(key, "archive"))
                        return con_bus_error_setf(error, CON_ERROR_INVALID_SPEC, "unknown option; use archive");
                int b;
                r = sd_bus_message_read(m, "v", "b", &b);
                if (r == -ENXIO || r == -EBADMSG)
                        return con_bus_error_setf(error, CON_ERROR_INVALID_SPEC, "archive: expected a boolean (b)");
                if (r < 0)
                        return r;
                j->archive = b;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        r = authorize(p, m, "decommission", &j->caller, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        return enqueue(p, m, &j, error);
}

/* The agent list follows con.yaml and its drop-ins changed by others (con bootstrap, an editor):
 * two stat() calls, and a load only when one changed. */
static void provisioner_refresh(Provisioner *p) {
        struct timespec c, d;
        config_mtimes(p, &c, &d);
        if (!timespec_eq(&c, &p->config_mtime) || !timespec_eq(&d, &p->dropins_mtime))
                provisioner_load(p);
}

static int method_list(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Provisioner *p = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *dir = NULL;
        int r;

        if (asprintf(&dir, "%s.d/", p->o.config_path) < 0)
                return -ENOMEM;
        provisioner_refresh(p);
        r = sd_bus_message_new_method_return(m, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(sssb)");
        for (size_t i = 0; r >= 0 && p->config && i < p->config->n_agents; i++) {
                const ConAgent *a = &p->config->agents[i];
                const char *file = a->file ?: p->o.config_path;
                r = sd_bus_message_append(reply, "(sssb)", a->name, con_tier_to_string(a->tier),
                                          file, startswith(file, dir) != NULL);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int property_get(sd_bus *bus, const char *path, const char *interface, const char *property,
                        sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Provisioner *p = userdata;
        int r;

        provisioner_refresh(p);
        if (streq(property, "ConfigError"))
                return sd_bus_message_append(reply, "s", p->config_error ?: "");
        r = sd_bus_message_open_container(reply, 'a', "s");
        for (size_t i = 0; r >= 0 && p->config && i < p->config->n_agents; i++)
                r = sd_bus_message_append(reply, "s", p->config->agents[i].name);
        return r < 0 ? r : sd_bus_message_close_container(reply);
}

const sd_bus_vtable provisioner_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("CommissionAgent", SD_BUS_ARGS("s", name, "a{sv}", spec), SD_BUS_RESULT("as", changes),
                                method_commission, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("DecommissionAgent", SD_BUS_ARGS("s", name, "a{sv}", options),
                                SD_BUS_RESULT("as", changes), method_decommission, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListAgents", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sssb)", agents), method_list,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("AgentCommissioned", SD_BUS_ARGS("s", name), 0),
        SD_BUS_SIGNAL_WITH_ARGS("AgentDecommissioned", SD_BUS_ARGS("s", name), 0),
        SD_BUS_PROPERTY("Agents", "as", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ConfigError", "s", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_VTABLE_END,
};

/* ---- set-up ---- */

int provisioner_new(const ProvisionerOptions *o, sd_event *event, sd_bus *bus, Provisioner **ret) {
        _cleanup_(provisioner_freep) Provisioner *p = calloc(1, sizeof(Provisioner));
        if (!p)
                return -ENOMEM;
        p->o = *o;
        if (!p->o.config_path)
                p->o.config_path = CON_CONFIG_PATH;
        if (!p->o.con_path)
                p->o.con_path = CON_BINDIR "/con";
        if (!p->o.run_dir)
                p->o.run_dir = RUN_DIR_DEFAULT;
        p->event = sd_event_ref(event);
        p->bus = sd_bus_ref(bus);
        *ret = TAKE_PTR(p);
        return 0;
}

int provisioner_start(Provisioner *p) {
        int r;

        /* sd_event_add_child() needs SIGCHLD blocked; the workers unblock everything. */
        sigset_t ss;
        sigemptyset(&ss);
        sigaddset(&ss, SIGCHLD);
        (void) sigprocmask(SIG_BLOCK, &ss, NULL);

        provisioner_load(p);
        r = sd_bus_add_object_vtable(p->bus, &p->slot, CON_PROVISIONER_PATH, CON_PROVISIONER_INTERFACE,
                                     provisioner_vtable, p);
        if (r < 0)
                return r;
        r = con_authz_new(p->bus, p->event, &(ConAuthzOptions) { .root_policy = CON_AUTHZ_ROOT_ALLOW }, &p->authz);
        if (r < 0)
                return r;
        r = sd_bus_request_name(p->bus, CON_PROVISIONER_BUS_NAME, 0);
        if (r < 0) {
                log_error("Failed to own %s (%s)%s", CON_PROVISIONER_BUS_NAME, strerror(-r),
                          r == -EEXIST ? ": another con-provisiond is running" :
                          r == -EACCES ? ": the bus policy lets only root own it" : "");
                return r;
        }
        return 0;
}

int provisioner_introspect_xml(char **ret) {
        return con_bus_introspect_vtable(CON_PROVISIONER_PATH, CON_PROVISIONER_INTERFACE, provisioner_vtable, ret);
}

Provisioner *provisioner_free(Provisioner *p) {
        if (!p)
                return NULL;
        job_free(p->running);
        for (Job *j = p->queue_head, *n; j; j = n) {
                n = j->next;
                job_free(j);
        }
        con_authz_free(p->authz);
        sd_bus_slot_unref(p->slot);
        sd_bus_unref(p->bus);
        sd_event_unref(p->event);
        con_config_free(p->config);
        free(p->config_error);
        free(p);
        return NULL;
}
