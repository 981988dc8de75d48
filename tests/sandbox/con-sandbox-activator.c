/* SPDX-License-Identifier: MIT */
/* con-sandbox-activator: D-Bus activation for dbus-broker in the sandbox, which has no systemd.
 *
 * dbus-broker-launch never starts a service itself: it asks systemd (org.freedesktop.systemd1 on
 * the bus it serves) to start the unit named by the activation file's SystemdService=, or a
 * transient unit running its Exec= (dbus-broker-launch(1), "SCOPE"). The sandbox's PID 1 is a
 * shell, so this program owns org.freedesktop.systemd1 and does what systemd would for those
 * calls, and no more:
 *   StartUnit(UNIT, MODE)                         runs the Exec= of the activation file whose
 *                                                 SystemdService= is UNIT, as its User=
 *   StartTransientUnit(UNIT, MODE, PROPS, AUX)    runs PROPS' ExecStart as PROPS' User (a uid)
 *   LoadUnit(UNIT)                                the unit's object path
 * Each start answers with a job path and emits JobRemoved(..., "done"); a service that exits
 * with an error or a signal before anything else becomes of it gets PropertiesChanged
 * ActiveState=failed on its unit path, which makes dbus-broker fail the pending activation (as
 * dbus-daemon does when its launch helper's child fails). Children get the clean environment of
 * dbus-daemon's launch helper (PATH, DBUS_STARTER_BUS_TYPE=system), their own session, and are
 * reaped here. Not installed: tests/sandbox/con-sandbox starts it (CON_BUS_BROKER=dbus-broker).
 *
 *   con-sandbox-activator [SERVICE-DIR...]   (default: the system bus's standard service folders)
 *   con-sandbox-activator --journal SOCKET   the journal's socket for dbus-broker-launch, which
 *                                            logs only there and will not start without it: each
 *                                            record's MESSAGE= line goes to stderr */
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "strv.h"

#define SD_PATH "/org/freedesktop/systemd1"
#define SD_MANAGER "org.freedesktop.systemd1.Manager"
#define SD_UNIT_PREFIX "/org/freedesktop/systemd1/unit"

static const char * const default_dirs[] = {
        "/usr/local/share/dbus-1/system-services",
        "/usr/share/dbus-1/system-services",
        "/lib/dbus-1/system-services",
        NULL,
};
static char **service_dirs;
static sd_bus *bus;
static uint32_t next_job;

typedef struct Child {
        char *unit;
} Child;

static void child_free(Child *c) {
        if (!c)
                return;
        free(c->unit);
        free(c);
}

static int emit_failed(const char *unit) {
        _cleanup_free_ char *path = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r = sd_bus_path_encode(SD_UNIT_PREFIX, unit, &path);
        if (r < 0)
                return r;
        r = sd_bus_message_new_signal(bus, &m, path, "org.freedesktop.DBus.Properties", "PropertiesChanged");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "sa{sv}as", "org.freedesktop.systemd1.Unit", 1, "ActiveState", "s", "failed", 0);
        if (r < 0)
                return r;
        return sd_bus_send(bus, m, NULL);
}

static int on_child(sd_event_source *s, const siginfo_t *si, void *userdata) {
        Child *c = userdata;
        bool failed = si->si_code != CLD_EXITED || si->si_status != 0;
        if (failed) {
                fprintf(stderr, "con-sandbox-activator: %s: %s %d\n", c->unit,
                        si->si_code == CLD_EXITED ? "exit status" : "killed by signal", si->si_status);
                (void) emit_failed(c->unit);
        }
        child_free(c);
        sd_event_source_unref(s);
        return 0;
}

/* Runs argv as uid (its primary group and supplementary groups), in a session of its own. */
static int spawn(const char *unit, char **argv, uid_t uid) {
        struct passwd *pw = getpwuid(uid);
        if (!pw || !argv || !argv[0])
                return -EINVAL;
        gid_t gid = pw->pw_gid;
        _cleanup_free_ char *user = strdup(pw->pw_name);
        Child *c = calloc(1, sizeof(Child));
        if (!user || !c || !(c->unit = strdup(unit))) {
                child_free(c);
                return -ENOMEM;
        }
        pid_t pid = fork();
        if (pid < 0) {
                child_free(c);
                return -errno;
        }
        if (pid == 0) {
                sigset_t none;
                sigemptyset(&none);
                (void) sigprocmask(SIG_SETMASK, &none, NULL);
                (void) setsid();
                if (initgroups(user, gid) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
                        _exit(126);
                char *envp[] = {
                        (char *) "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        (char *) "DBUS_STARTER_BUS_TYPE=system",
                        (char *) "DBUS_STARTER_ADDRESS=unix:path=/run/dbus/system_bus_socket",
                        NULL,
                };
                execve(argv[0], argv, envp);
                _exit(127);
        }
        int r = sd_event_add_child(sd_bus_get_event(bus), NULL, pid, WEXITED, on_child, c);
        if (r < 0) {
                child_free(c);
                return r;
        }
        return 0;
}

static int reply_job(sd_bus_message *m, const char *unit) {
        _cleanup_free_ char *job = NULL;
        uint32_t id = ++next_job;
        if (asprintf(&job, SD_PATH "/job/%u", id) < 0)
                return -ENOMEM;
        int r = sd_bus_reply_method_return(m, "o", job);
        if (r < 0)
                return r;
        return sd_bus_emit_signal(bus, SD_PATH, SD_MANAGER, "JobRemoved", "uoss", id, job, unit, "done");
}

/* The Exec= and User= of the activation file whose SystemdService= is unit. */
static int find_unit(const char *unit, char ***ret_argv, uid_t *ret_uid) {
        STRV_FOREACH(d, service_dirs) {
                _cleanup_closedir_ DIR *dir = opendir(*d);
                struct dirent *de;
                if (!dir)
                        continue;
                while ((de = readdir(dir))) {
                        _cleanup_free_ char *p = NULL, *line = NULL, *exec = NULL, *user = NULL;
                        size_t n = 0;
                        bool match = false;
                        if (!endswith(de->d_name, ".service") || asprintf(&p, "%s/%s", *d, de->d_name) < 0)
                                continue;
                        _cleanup_fclose_ FILE *f = fopen(p, "re");
                        if (!f)
                                continue;
                        while (getline(&line, &n, f) > 0) {
                                line[strcspn(line, "\r\n")] = 0;
                                const char *v;
                                if ((v = startswith(line, "SystemdService=")))
                                        match = streq(v, unit);
                                else if ((v = startswith(line, "Exec=")))
                                        free(exec), exec = strdup(v);
                                else if ((v = startswith(line, "User=")))
                                        free(user), user = strdup(v);
                        }
                        if (!match || !exec)
                                continue;
                        struct passwd *pw = getpwnam(user ?: "root");
                        if (!pw)
                                return -ESRCH;
                        /* The project's Exec= lines are words separated by spaces, no quoting. */
                        _cleanup_strv_free_ char **argv = NULL;
                        for (char *w = strtok(exec, " \t"); w; w = strtok(NULL, " \t"))
                                if (strv_extend(&argv, w) < 0)
                                        return -ENOMEM;
                        *ret_argv = TAKE_PTR(argv);
                        *ret_uid = pw->pw_uid;
                        return 0;
                }
        }
        return -ENOENT;
}

static int method_start_unit(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        const char *unit, *mode;
        _cleanup_strv_free_ char **argv = NULL;
        uid_t uid;
        int r = sd_bus_message_read(m, "ss", &unit, &mode);
        if (r < 0)
                return r;
        r = find_unit(unit, &argv, &uid);
        if (r == -ENOENT)
                return sd_bus_error_setf(error, "org.freedesktop.systemd1.NoSuchUnit", "Unit %s not found.", unit);
        if (r >= 0)
                r = spawn(unit, argv, uid);
        if (r < 0)
                return sd_bus_error_set_errnof(error, -r, "Cannot start %s: %s", unit, strerror(-r));
        return reply_job(m, unit);
}

static int method_start_transient_unit(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        const char *unit, *mode;
        _cleanup_strv_free_ char **argv = NULL;
        uid_t uid = 0;
        int r = sd_bus_message_read(m, "ss", &unit, &mode);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(m, 'a', "(sv)");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'r', "sv")) > 0) {
                const char *key;
                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;
                if (streq(key, "ExecStart")) {
                        const char *path, *arg;
                        int ignore;
                        if ((r = sd_bus_message_enter_container(m, 'v', "a(sasb)")) < 0 ||
                            (r = sd_bus_message_enter_container(m, 'a', "(sasb)")) < 0 ||
                            (r = sd_bus_message_enter_container(m, 'r', "sasb")) < 0 ||
                            (r = sd_bus_message_read(m, "s", &path)) < 0 ||
                            (r = sd_bus_message_enter_container(m, 'a', "s")) < 0)
                                return r;
                        while ((r = sd_bus_message_read(m, "s", &arg)) > 0)
                                if (strv_extend(&argv, arg) < 0)
                                        return -ENOMEM;
                        if (r < 0 || (r = sd_bus_message_exit_container(m)) < 0 ||
                            (r = sd_bus_message_read(m, "b", &ignore)) < 0 ||
                            (r = sd_bus_message_exit_container(m)) < 0 || (r = sd_bus_message_skip(m, NULL)) < 0 ||
                            (r = sd_bus_message_exit_container(m)) < 0 || (r = sd_bus_message_exit_container(m)) < 0)
                                return r;
                } else if (streq(key, "User")) {
                        const char *u;
                        if ((r = sd_bus_message_read(m, "v", "s", &u)) < 0)
                                return r;
                        uid = (uid_t) strtoul(u, NULL, 10);
                } else if ((r = sd_bus_message_skip(m, "v")) < 0)
                        return r;
                if ((r = sd_bus_message_exit_container(m)) < 0)
                        return r;
        }
        if (r < 0)
                return r;
        if (!argv)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "No ExecStart for %s", unit);
        r = spawn(unit, argv, uid);
        if (r < 0)
                return sd_bus_error_set_errnof(error, -r, "Cannot start %s: %s", unit, strerror(-r));
        return reply_job(m, unit);
}

static int method_load_unit(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        const char *unit;
        _cleanup_free_ char *path = NULL;
        int r = sd_bus_message_read(m, "s", &unit);
        if (r < 0)
                return r;
        r = sd_bus_path_encode(SD_UNIT_PREFIX, unit, &path);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, "o", path);
}

static int method_noop(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return sd_bus_reply_method_return(m, NULL);
}

static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("StartUnit", "ss", "o", method_start_unit, 0),
        SD_BUS_METHOD("StartTransientUnit", "ssa(sv)a(sa(sv))", "o", method_start_transient_unit, 0),
        SD_BUS_METHOD("LoadUnit", "s", "o", method_load_unit, 0),
        SD_BUS_METHOD("Subscribe", "", "", method_noop, 0),
        SD_BUS_SIGNAL("JobRemoved", "uoss", 0),
        SD_BUS_VTABLE_END
};

/* Native journal records are KEY=VALUE lines (a value with a newline comes in a binary form,
 * which the launcher does not use for MESSAGE). */
static int journal(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        static char buf[256 * 1024];

        if (strlen(path) >= sizeof(sa.sun_path))
                return -EINVAL;
        strcpy(sa.sun_path, path);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        (void) unlink(path);
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return -errno;
        for (;;) {
                ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                buf[n] = 0;
                for (char *l = buf; l && *l;) {
                        char *nl = strchr(l, '\n');
                        if (nl)
                                *nl = 0;
                        if (startswith(l, "MESSAGE="))
                                fprintf(stderr, "dbus-broker: %s\n", l + strlen("MESSAGE="));
                        l = nl ? nl + 1 : NULL;
                }
        }
}

int main(int argc, char *argv[]) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        int r;

        if (argc == 3 && streq(argv[1], "--journal")) {
                r = journal(argv[2]);
                fprintf(stderr, "con-sandbox-activator: journal socket %s: %s\n", argv[2], strerror(-r));
                return 1;
        }

        if (strv_copy(argc > 1 ? argv + 1 : (char * const *) default_dirs, &service_dirs) < 0)
                return 1;
        /* sd_event_add_child() needs SIGCHLD blocked. */
        sigset_t ss;
        sigemptyset(&ss);
        sigaddset(&ss, SIGCHLD);
        (void) sigprocmask(SIG_BLOCK, &ss, NULL);
        if ((r = sd_event_default(&e)) < 0 || (r = sd_bus_open_system(&bus)) < 0 ||
            (r = sd_bus_add_object_vtable(bus, NULL, SD_PATH, SD_MANAGER, manager_vtable, NULL)) < 0 ||
            (r = sd_bus_request_name(bus, "org.freedesktop.systemd1", 0)) < 0 ||
            (r = sd_bus_attach_event(bus, e, 0)) < 0) {
                fprintf(stderr, "con-sandbox-activator: %s\n", strerror(-r));
                return 1;
        }
        r = sd_event_loop(e);
        sd_bus_flush_close_unref(bus);
        strv_free(service_dirs);
        return r < 0;
}
