/* SPDX-License-Identifier: MIT */
/* The fabric verbs of `con`: up, down, status, agents, tasks, task, run, route-inbox, audit. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>

#include "json-util.h"
#include "audit.h"
#include "bus-util.h"
#include "con-paths.h"
#include "con.h"
#include "config.h"
#include "errors.h"
#include "macro.h"
#include "names.h"
#include "strv.h"
#include "task.h"
#include "time-util.h"

#define SYSTEM_BUS_SOCKET "/run/dbus/system_bus_socket"
#define ROUTERD_PATH CON_LIBEXECDIR "/con-routerd"
#define ROUTER_LOG CON_DAEMON_LOG_DIR "/con-routerd.log"
#define CONTRACTD_PATH CON_LIBEXECDIR "/con-contractd"
#define CONTRACTD_LOG CON_DAEMON_LOG_DIR "/con-contractd.log"
#define SANE_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define WEBD_PATH CON_LIBEXECDIR "/con-webd"
#define WEBD_LOG CON_DAEMON_LOG_DIR "/con-webd.log"
#define WEBD_BUS_NAME "org.conspiracy.Web"
#define EGRESSD_PATH CON_LIBEXECDIR "/con-egressd"
#define EGRESSD_LOG CON_DAEMON_LOG_DIR "/con-egressd.log"
#define EGRESSD_BUS_NAME "org.conspiracy.Egress"
#define MESHD_PATH CON_LIBEXECDIR "/con-meshd"
#define MESHD_LOG CON_DAEMON_LOG_DIR "/con-meshd.log"
#define MODELS_BUS_NAME "org.conspiracy.Models"
#define MODELS_PATH "/org/conspiracy/Models"
#define MODELS_INTERFACE "org.conspiracy.Models1"
#define CON_CONTRACTS_PATH "/org/conspiracy/Contracts"
#define CON_CONTRACTS_INTERFACE "org.conspiracy.Contracts1"
#define START_TIMEOUT_USEC (10 * USEC_PER_SEC)


/* Options shared by the verbs: --help, --json, --config. Returns 1 to go on, 0 after --help,
 * < 0 on a usage error (message printed). */
typedef struct Common {
        bool json;
        const char *config;
        const char *dir;        /* audit --dir */
        unsigned lines;         /* audit -n */
        uint64_t timeout_usec;
        bool transcript;        /* task --transcript */
        const char *agent;      /* task, cancel --agent */
} Common;

static int parse_common(int argc, char *argv[], const char *verb, const char *usage, bool json_ok, Common *c) {
        enum { ARG_JSON = 0x100, ARG_CONFIG, ARG_DIR, ARG_TIMEOUT, ARG_TRANSCRIPT, ARG_AGENT };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "json", no_argument, NULL, ARG_JSON },
                { "config", required_argument, NULL, ARG_CONFIG },
                { "dir", required_argument, NULL, ARG_DIR },
                { "timeout", required_argument, NULL, ARG_TIMEOUT },
                { "lines", required_argument, NULL, 'n' },
                { "transcript", no_argument, NULL, ARG_TRANSCRIPT },
                { "agent", required_argument, NULL, ARG_AGENT },
                {}
        };
        int o;

        c->config = CON_CONFIG_PATH;
        c->lines = 20;
        optind = 1;
        while ((o = getopt_long(argc, argv, "hn:", options, NULL)) >= 0)
                switch (o) {
                case 'h':
                        fputs(usage, stdout);
                        return 0;
                case ARG_JSON:
                        if (!json_ok) {
                                con_fail(CON_EXIT_USAGE, "%s: --json does not apply here", verb);
                                return -EINVAL;
                        }
                        c->json = true;
                        break;
                case ARG_CONFIG:
                        c->config = optarg;
                        break;
                case ARG_TRANSCRIPT:
                        if (!streq(verb, "task")) {
                                con_fail(CON_EXIT_USAGE, "%s: --transcript does not apply here", verb);
                                return -EINVAL;
                        }
                        c->transcript = true;
                        break;
                case ARG_AGENT:
                        if (!streq(verb, "task") && !streq(verb, "cancel")) {
                                con_fail(CON_EXIT_USAGE, "%s: --agent does not apply here", verb);
                                return -EINVAL;
                        }
                        c->agent = optarg;
                        break;
                case ARG_DIR:
                        c->dir = optarg;
                        break;
                case ARG_TIMEOUT:
                        if (con_parse_duration(optarg, &c->timeout_usec) < 0 || c->timeout_usec == 0) {
                                con_fail(CON_EXIT_USAGE, "%s: --timeout: '%s' is not a duration (e.g. 30, 90s, 5m)",
                                         verb, optarg);
                                return -EINVAL;
                        }
                        break;
                case 'n': {
                        char *end;
                        unsigned long n = strtoul(optarg, &end, 10);
                        if (*end || n == 0 || n > 1000000) {
                                con_fail(CON_EXIT_USAGE, "%s: --lines: '%s' is not a number from 1 to 1000000", verb,
                                         optarg);
                                return -EINVAL;
                        }
                        c->lines = (unsigned) n;
                        break;
                }
                default:
                        con_fail(CON_EXIT_USAGE, "%s: see 'con %s --help'", verb, verb);
                        return -EINVAL;
                }
        return 1;
}

static int load_config(const Common *c, ConConfig **ret) {
        _cleanup_(con_error_detail_done) ConErrorDetail e = {};
        int r = con_config_load(c->config, ret, &e);
        if (r < 0) {
                _cleanup_free_ char *msg = con_error_detail_format(&e);
                con_fail(CON_EXIT_CONFIG, "%s (run 'con bootstrap' first?)", msg ?: strerror(-r));
        }
        return r;
}

static int open_bus(sd_bus **ret) {
        int r = sd_bus_open_system(ret);
        if (r < 0)
                con_fail(CON_EXIT_FAILURE, "cannot connect to the system bus at " SYSTEM_BUS_SOCKET ": %s (try 'con up')",
                         strerror(-r));
        (void) con_bus_errors_register();
        return r;
}

/* ---- bus helpers ---- */

static bool name_has_owner(sd_bus *bus, const char *name) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int b = 0;
        if (sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                               "NameHasOwner", NULL, &reply, "s", name) < 0)
                return false;
        return sd_bus_message_read(reply, "b", &b) >= 0 && b;
}

/* Which of this host's agents know task ID (--agent: that one only), asked with GetResultInfo:
 * known[] answered (the caller may read the task: its submitter, or root), denied[] know it but
 * refused the caller. Task ids are unique per agent and sender only, so several agents may know
 * one: a verb that acts on one task must not pick for the caller. The running agents are asked
 * first, and the others (asking starts them) only when none of those lets the caller read ID: a
 * task that waits or runs is at a running agent, and an on-demand agent is not woken for nothing,
 * but another user's task of that id at a running agent must not hide the caller's own, finished
 * at an agent that has exited since. */
typedef struct TaskWhere {
        const ConAgent **known, **denied;
        size_t n_known, n_denied;
} TaskWhere;

static void task_where_done(TaskWhere *w) {
        free(w->known);
        free(w->denied);
}

static void task_where_ask(sd_bus *bus, const ConAgent *a, const char *id, TaskWhere *w) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *bn = NULL;
        if (con_agent_bus_name(a->name, &bn) < 0)
                return;
        int r = sd_bus_call_method(bus, bn, CON_AGENT_PATH, CON_AGENT_INTERFACE, "GetResultInfo", &e, NULL, "s", id);
        if (r >= 0)
                w->known[w->n_known++] = a;
        else if (sd_bus_error_has_names(&e, CON_ERROR_ACCESS_DENIED, SD_BUS_ERROR_ACCESS_DENIED))
                w->denied[w->n_denied++] = a;
}

static int task_where(sd_bus *bus, const ConConfig *config, const char *only, const char *id, TaskWhere *ret) {
        size_t n = config->n_agents;
        TaskWhere w = { .known = calloc(n + 1, sizeof(*w.known)), .denied = calloc(n + 1, sizeof(*w.denied)) };
        if (!w.known || !w.denied) {
                task_where_done(&w);
                return -ENOMEM;
        }
        if (only) {
                const ConAgent *a = con_config_find_agent(config, only);
                if (a)
                        task_where_ask(bus, a, id, &w);
        } else {
                /* Each agent once: one that exits between the passes is not asked again. */
                _cleanup_free_ bool *asked = calloc(n + 1, sizeof(bool));
                if (!asked) {
                        task_where_done(&w);
                        return -ENOMEM;
                }
                for (int pass = 0; pass < 2 && w.n_known == 0; pass++)
                        for (size_t i = 0; i < n; i++) {
                                _cleanup_free_ char *bn = NULL;
                                if (!asked[i] && con_agent_bus_name(config->agents[i].name, &bn) >= 0 &&
                                    (pass == 1 || name_has_owner(bus, bn))) {
                                        asked[i] = true;
                                        task_where_ask(bus, &config->agents[i], id, &w);
                                }
                        }
        }
        *ret = w;
        return 0;
}

/* "a, b and c" (at least one name), or NULL when out of memory. */
static char *agent_names(const ConAgent *const *v, size_t n) {
        char *s = strdup("");
        for (size_t i = 0; s && i < n; i++) {
                char *t = NULL;
                if (asprintf(&t, "%s%s%s", s, i == 0 ? "" : i + 1 == n ? " and " : ", ", v[i]->name) < 0)
                        t = NULL;
                free(s);
                s = t;
        }
        return s;
}

/* Where task ID is, for VERB, which acts on one task: the --agent option checked (a usage error
 * when it names no agent), task_where() asked, and several agents that let the caller read an ID
 * refused (the caller names one). 0, or the exit status of what was printed. */
static int task_where_one(const Common *c, sd_bus *bus, const ConConfig *config, const char *verb, const char *id,
                          TaskWhere *ret) {
        if (c->agent && !con_config_find_agent(config, c->agent))
                return con_fail(CON_EXIT_USAGE, "%s: --agent: %s names no agent '%s' (see 'con agents')", verb,
                                c->config, c->agent);
        int r = task_where(bus, config, c->agent, id, ret);
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "%s: %s", verb, strerror(-r));
        if (ret->n_known > 1) {
                _cleanup_free_ char *names = agent_names(ret->known, ret->n_known);
                return con_fail(CON_EXIT_FAILURE, "%s: agents %s each know a task '%s': name one with --agent NAME",
                                verb, names ?: "(several)", id);
        }
        return 0;
}

static int name_pid(sd_bus *bus, const char *name, pid_t *ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        uint32_t pid;
        int r = sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                   "GetConnectionUnixProcessID", NULL, &reply, "s", name);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "u", &pid);
        if (r < 0)
                return r;
        *ret = (pid_t) pid;
        return 0;
}

static char **activatable_names(sd_bus *bus) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        char **l = NULL;
        if (sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                               "ListActivatableNames", NULL, &reply, NULL) < 0)
                return NULL;
        if (sd_bus_message_read_strv(reply, &l) < 0)
                return NULL;
        return l;
}

static int start_service(sd_bus *bus, const char *name, sd_bus_error *e) {
        return sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                  "StartServiceByName", e, NULL, "su", name, 0);
}

static int wait_for_name(sd_bus *bus, const char *name, bool present, uint64_t timeout_usec, pid_t child) {
        uint64_t end = con_now(CLOCK_MONOTONIC) + timeout_usec;
        for (;;) {
                if (name_has_owner(bus, name) == present)
                        return 0;
                if (child > 0 && waitpid(child, NULL, WNOHANG) == child)
                        return -ECHILD;
                if (con_now(CLOCK_MONOTONIC) >= end)
                        return -ETIMEDOUT;
                usleep(50 * 1000);
        }
}

/* The environment of what `con up` starts: PATH, LANG and CON_LOG_LEVEL (when set), nothing
 * else of the admin's session (an exported CON_API_KEY must not reach a daemon's environment;
 * the model gateway reads its keys from /etc/con/env). Fills buf; returns a NULL-ended list. */
typedef struct DaemonEnv {
        char lang[256];
        char level[64];
        char *v[4];
} DaemonEnv;

static char **daemon_env(DaemonEnv *e) {
        size_t n = 0;
        const char *lang = getenv("LANG"), *level = getenv("CON_LOG_LEVEL");
        e->v[n++] = (char *) "PATH=" SANE_PATH;
        if (lang && strlen(lang) < sizeof e->lang - 6) {
                (void) snprintf(e->lang, sizeof e->lang, "LANG=%s", lang);
                e->v[n++] = e->lang;
        }
        if (level && strlen(level) < sizeof e->level - 15) {
                (void) snprintf(e->level, sizeof e->level, "CON_LOG_LEVEL=%s", level);
                e->v[n++] = e->level;
        }
        e->v[n] = NULL;
        return e->v;
}

static int run_command_env(char *const argv[], char **envp) {
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                if (envp)
                        environ = envp;
                execvp(argv[0], argv);
                fprintf(stderr, "con: cannot run %s: %m\n", argv[0]);
                _exit(127);
        }
        int status;
        if (waitpid(pid, &status, 0) < 0)
                return -errno;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int con_run_command(char *const argv[]) {
        return run_command_env(argv, NULL);
}

static bool system_bus_alive(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX, .sun_path = SYSTEM_BUS_SOCKET };
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return false;
        return connect(fd, (struct sockaddr *) &sa, sizeof sa) >= 0;
}

/* ---- reload ---- */

/* The egress gateway has no bus interface: SIGHUP to the process that owns its name (our own
 * daemon, as con down finds it) makes it read the config, the agent users and the services'
 * secrets again, and move to a changed egress.port. */
static int reload_egress(sd_bus *bus) {
        pid_t pid = 0;
        if (!name_has_owner(bus, EGRESSD_BUS_NAME))
                return 0;
        if (name_pid(bus, EGRESSD_BUS_NAME, &pid) < 0 || pid <= 1 || kill(pid, SIGHUP) < 0)
                return con_fail(CON_EXIT_FAILURE, "bootstrap: cannot tell con-egressd to reload: %s",
                                strerror(pid <= 1 ? ESRCH : errno));
        printf("reload con-egressd\n");
        return 0;
}

/* After con bootstrap changed the machine: the bus re-reads its policy and activation files, then
 * every running fabric service its configuration (Reload), so new agents are served without a
 * restart. Services that do not run are not started. Returns 0, or CON_EXIT_FAILURE when one
 * refused (reported; it keeps the configuration it had). */
int con_reload_services(void) {
        static const struct {
                const char *service, *name, *path, *interface;
        } services[] = {
                { "con-routerd", CON_ROUTER_BUS_NAME, CON_ROUTER_PATH, CON_ROUTER_INTERFACE },
                { "con-contractd", CON_CONTRACTS_BUS_NAME, CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE },
                { "con-modeld", MODELS_BUS_NAME, MODELS_PATH, MODELS_INTERFACE },
        };
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int status = 0, r;

        if (!system_bus_alive() || sd_bus_open_system(&bus) < 0)
                return 0;       /* nothing runs: everything reads the new files when it starts */
        (void) con_bus_errors_register();
        r = sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                               "ReloadConfig", NULL, NULL, NULL);
        if (r < 0)
                fprintf(stderr, "con: bootstrap: warning: the system bus did not reload its configuration: %s\n",
                        strerror(-r));
        for (size_t i = 0; i < ELEMENTSOF(services); i++) {
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                if (!name_has_owner(bus, services[i].name))
                        continue;
                r = sd_bus_call_method(bus, services[i].name, services[i].path, services[i].interface, "Reload", &e,
                                       NULL, NULL);
                if (r < 0) {
                        con_fail(CON_EXIT_FAILURE, "bootstrap: %s refused to reload: %s", services[i].service,
                                 e.message ?: strerror(-r));
                        status = CON_EXIT_FAILURE;
                } else
                        printf("reload %s\n", services[i].service);
        }
        r = reload_egress(bus);
        return r != 0 ? r : status;
}

int con_reload_egress(void) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;

        if (!system_bus_alive() || sd_bus_open_system(&bus) < 0)
                return 0;
        return reload_egress(bus);
}

/* ---- up / down ---- */

static const char up_usage[] =
        "Usage: con up [--config FILE]\n"
        "\n"
        "Start the fabric. Under systemd: systemctl start conspiracyos.target, con-routerd.service,\n"
        "con-contractd.service, con-webd.service when dashboard.enabled, con-egressd.service when an\n"
        "agent has a network allow-list, con-meshd.service with a mesh: section, the units of the\n"
        "agents with mode 'always' and the cron agents' timers. Without systemd: start the system bus if its socket\n"
        "is dead (dbus-daemon --system --fork), start con-routerd, con-contractd, (dashboard.enabled)\n"
        "con-webd, (an allow-list) con-egressd and (mesh:) con-meshd in the background (logs in\n"
        CON_DAEMON_LOG_DIR "/)\n"
        "and start the 'always' agents through bus activation. The daemons get a clean environment:\n"
        "PATH, LANG and CON_LOG_LEVEL only. Needs root.\n"
        "\n"
        "Exit status: 0 ok, 1 failure, 2 usage error, 3 not root, 4 invalid configuration.\n";

static int start_daemon(sd_bus *bus, const char *path, const char *bus_name, const char *logfile) {
        DaemonEnv env;
        char **envp = daemon_env(&env);
        pid_t pid = fork();
        if (pid < 0)
                return con_fail(CON_EXIT_FAILURE, "up: cannot fork: %m");
        if (pid == 0) {
                /* A daemon of its own: new session, no terminal, output to its log file (root only:
                 * the folder is 0700), which the daemon sees as a file and timestamps. */
                (void) setsid();
                (void) umask(0022);
                int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
                (void) mkdir(CON_SRV_DIR "/logs", 0755);
                (void) mkdir(CON_DAEMON_LOG_DIR, 0700);
                int log = open(logfile, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0640);
                if (null >= 0)
                        (void) dup2(null, STDIN_FILENO);
                if (log >= 0) {
                        (void) dup2(log, STDOUT_FILENO);
                        (void) dup2(log, STDERR_FILENO);
                }
                /* Double fork so the router is not our child once we exit. */
                pid_t p = fork();
                if (p != 0)
                        _exit(p < 0 ? 1 : 0);
                execle(path, strrchr(path, '/') + 1, (char *) NULL, envp);
                fprintf(stderr, "con up: cannot run %s: %m\n", path);
                _exit(127);
        }
        (void) waitpid(pid, NULL, 0);
        int r = wait_for_name(bus, bus_name, true, START_TIMEOUT_USEC, 0);
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "up: %s did not take %s within %" PRIu64 " s; see %s",
                                strrchr(path, '/') + 1, bus_name, START_TIMEOUT_USEC / USEC_PER_SEC, logfile);
        return 0;
}

static int start_router_daemon(sd_bus *bus) {
        return start_daemon(bus, ROUTERD_PATH, CON_ROUTER_BUS_NAME, ROUTER_LOG);
}

int verb_up(int argc, char *argv[]) {
        _cleanup_(con_config_freep) ConConfig *config = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        Common c = {};
        int r, status = CON_EXIT_OK;

        r = parse_common(argc, argv, "up", up_usage, false, &c);
        if (r <= 0)
                return r < 0 ? CON_EXIT_USAGE : CON_EXIT_OK;
        if (optind < argc)
                return con_fail(CON_EXIT_USAGE, "up: unexpected argument '%s'", argv[optind]);
        if (geteuid() != 0)
                return con_fail(CON_EXIT_NOT_ROOT, "up: needs root (it starts system services)");
        if (load_config(&c, &config) < 0)
                return CON_EXIT_CONFIG;

        if (sd_booted() > 0) {
                _cleanup_strv_free_ char **units = NULL;
                if (strv_extend(&units, "systemctl") < 0 || strv_extend(&units, "start") < 0 ||
                    strv_extend(&units, "conspiracyos.target") < 0 ||
                    strv_extend(&units, "con-routerd.service") < 0 || strv_extend(&units, "con-contractd.service") < 0 ||
                    (config->dashboard.enabled && strv_extend(&units, "con-webd.service") < 0) ||
                    (con_config_needs_egress(config) && strv_extend(&units, "con-egressd.service") < 0) ||
                    (config->mesh.enabled && strv_extend(&units, "con-meshd.service") < 0))
                        return con_fail(CON_EXIT_FAILURE, "out of memory");
                for (size_t i = 0; i < config->n_agents; i++) {
                        char *u;
                        ConMode m = config->agents[i].mode;
                        if (m != CON_MODE_ALWAYS && m != CON_MODE_CRON)
                                continue;
                        if (asprintf(&u, m == CON_MODE_CRON ? "con-cron-%s.timer" : "con-agent@%s.service",
                                     config->agents[i].name) < 0 || strv_consume(&units, u) < 0)
                                return con_fail(CON_EXIT_FAILURE, "out of memory");
                }
                r = con_run_command(units);
                if (r != 0)
                        return con_fail(CON_EXIT_FAILURE, "up: systemctl start failed (exit status %d)", r);
                printf("router: started (systemd)\n");
                return CON_EXIT_OK;
        }

        if (!system_bus_alive()) {
                (void) mkdir("/run/dbus", 0755);
                (void) unlink("/run/dbus/pid");         /* stale: the socket is dead */
                (void) unlink(SYSTEM_BUS_SOCKET);
                DaemonEnv env;
                r = run_command_env((char *[]) { (char *) "dbus-daemon", (char *) "--system", (char *) "--fork", NULL },
                                    daemon_env(&env));
                if (r != 0)
                        return con_fail(CON_EXIT_FAILURE, "up: dbus-daemon --system --fork failed (exit status %d)", r);
                uint64_t end = con_now(CLOCK_MONOTONIC) + START_TIMEOUT_USEC;
                while (!system_bus_alive() && con_now(CLOCK_MONOTONIC) < end)
                        usleep(20 * 1000);
                printf("bus: started dbus-daemon --system\n");
        }
        if (open_bus(&bus) < 0)
                return CON_EXIT_FAILURE;

        if (name_has_owner(bus, CON_ROUTER_BUS_NAME))
                printf("router: already running\n");
        else {
                r = start_router_daemon(bus);
                if (r != 0)
                        return r;
                pid_t pid = 0;
                (void) name_pid(bus, CON_ROUTER_BUS_NAME, &pid);
                printf("router: started (pid %d, log " ROUTER_LOG ")\n", (int) pid);
        }
        /* The contract service (health checks, halt and quarantine). */
        if (name_has_owner(bus, CON_CONTRACTS_BUS_NAME))
                printf("contracts: already running\n");
        else if (start_daemon(bus, CONTRACTD_PATH, CON_CONTRACTS_BUS_NAME, CONTRACTD_LOG) == 0)
                printf("contracts: started (log " CONTRACTD_LOG ")\n");
        else
                status = CON_EXIT_FAILURE;
        /* The status page (dashboard.enabled): starts as root, binds, runs as con-web. */
        if (config->dashboard.enabled) {
                if (name_has_owner(bus, WEBD_BUS_NAME))
                        printf("dashboard: already running\n");
                else if (start_daemon(bus, WEBD_PATH, WEBD_BUS_NAME, WEBD_LOG) == 0)
                        printf("dashboard: started on %s port %u (log " WEBD_LOG ")\n", config->dashboard.bind,
                               config->dashboard.port);
                else
                        status = CON_EXIT_FAILURE;
        }
        /* The egress gateway (an agent has a network allow-list): starts as root, binds, runs as
         * con-egress. */
        if (con_config_needs_egress(config)) {
                if (name_has_owner(bus, EGRESSD_BUS_NAME))
                        printf("egress gateway: already running\n");
                else if (start_daemon(bus, EGRESSD_PATH, EGRESSD_BUS_NAME, EGRESSD_LOG) == 0)
                        printf("egress gateway: started on 127.0.0.1 port %u (log " EGRESSD_LOG ")\n", config->egress.port);
                else
                        status = CON_EXIT_FAILURE;
        }

        /* The mesh gateway (a mesh: section): starts as root, runs as con-mesh. */
        if (config->mesh.enabled) {
                if (name_has_owner(bus, CON_MESH_BUS_NAME))
                        printf("mesh: already running\n");
                else if (start_daemon(bus, MESHD_PATH, CON_MESH_BUS_NAME, MESHD_LOG) == 0)
                        printf("mesh: started as host %s (log " MESHD_LOG ")\n", config->mesh.host);
                else
                        status = CON_EXIT_FAILURE;
        }

        for (size_t i = 0; i < config->n_agents; i++) {
                const ConAgent *a = &config->agents[i];
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                _cleanup_free_ char *bn = NULL;
                if (a->mode != CON_MODE_ALWAYS)
                        continue;
                if (con_agent_bus_name(a->name, &bn) < 0)
                        continue;
                r = start_service(bus, bn, &e);
                if (r < 0) {
                        con_fail(CON_EXIT_FAILURE, "up: cannot start agent %s (%s): %s", a->name, bn,
                                 e.message ?: strerror(-r));
                        status = CON_EXIT_FAILURE;
                } else
                        printf("agent %s: running\n", a->name);
        }
        return status;
}

static const char down_usage[] =
        "Usage: con down [--config FILE]\n"
        "\n"
        "Stop the fabric: the router, the contract service, the status page, the model gateway, the\n"
        "commissioner and every running agent. Under systemd: systemctl stop of conspiracyos.target, its services,\n"
        "con-agent@*.service and the cron timers (they stay enabled: the next boot starts them again).\n"
        "Without systemd: SIGTERM to the processes that own org.conspiracy.Router, .Contracts, .Web, .Egress,\n"
        ".Mesh, .Models, .Provisioner and the agents' names (SIGKILL after 10 s). Queued tasks stay on disk. The system bus is left running.\n"
        "Needs root.\n"
        "\n"
        "Exit status: 0 ok, 1 failure, 2 usage error, 3 not root, 4 invalid configuration.\n";

static int stop_name(sd_bus *bus, const char *label, const char *name) {
        pid_t pid;
        if (!name_has_owner(bus, name))
                return 0;
        int r = name_pid(bus, name, &pid);
        if (r < 0 || pid <= 1)
                return con_fail(CON_EXIT_FAILURE, "down: cannot find the process of %s: %s", name, strerror(r < 0 ? -r : ESRCH));
        if (kill(pid, SIGTERM) < 0)
                return con_fail(CON_EXIT_FAILURE, "down: cannot stop %s (pid %d): %m", label, (int) pid);
        if (wait_for_name(bus, name, false, START_TIMEOUT_USEC, 0) < 0) {
                (void) kill(pid, SIGKILL);
                (void) wait_for_name(bus, name, false, 2 * USEC_PER_SEC, 0);
                printf("%s: killed (pid %d did not stop within 10 s)\n", label, (int) pid);
        } else
                printf("%s: stopped (pid %d)\n", label, (int) pid);
        return 0;
}

int verb_down(int argc, char *argv[]) {
        _cleanup_(con_config_freep) ConConfig *config = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        Common c = {};
        int r, status = CON_EXIT_OK;

        r = parse_common(argc, argv, "down", down_usage, false, &c);
        if (r <= 0)
                return r < 0 ? CON_EXIT_USAGE : CON_EXIT_OK;
        if (optind < argc)
                return con_fail(CON_EXIT_USAGE, "down: unexpected argument '%s'", argv[optind]);
        if (geteuid() != 0)
                return con_fail(CON_EXIT_NOT_ROOT, "down: needs root (it stops system services)");

        if (sd_booted() > 0) {
                r = con_run_command((char *[]) { (char *) "systemctl", (char *) "stop", (char *) "conspiracyos.target",
                                                 (char *) "con-routerd.service", (char *) "con-contractd.service",
                                                 (char *) "con-modeld.service", (char *) "con-webd.service",
                                                 (char *) "con-egressd.service", (char *) "con-provisiond.service",
                                                 (char *) "con-meshd.service",
                                                 (char *) "con-agent@*.service",
                                                 (char *) "con-cron-*.timer", NULL });
                if (r != 0)
                        return con_fail(CON_EXIT_FAILURE, "down: systemctl stop failed (exit status %d)", r);
                printf("fabric: stopped (systemd)\n");
                return CON_EXIT_OK;
        }
        if (!system_bus_alive()) {
                printf("bus: not running; nothing to stop\n");
                return CON_EXIT_OK;
        }
        if (open_bus(&bus) < 0)
                return CON_EXIT_FAILURE;
        /* The router first, so it does not activate agents again while they stop. */
        if (stop_name(bus, "router", CON_ROUTER_BUS_NAME) != 0)
                status = CON_EXIT_FAILURE;
        if (stop_name(bus, "contracts", CON_CONTRACTS_BUS_NAME) != 0)
                status = CON_EXIT_FAILURE;
        if (stop_name(bus, "dashboard", WEBD_BUS_NAME) != 0)
                status = CON_EXIT_FAILURE;
        if (stop_name(bus, "egress gateway", EGRESSD_BUS_NAME) != 0)
                status = CON_EXIT_FAILURE;
        /* The mesh gateway, before the agents it delivers to. */
        if (stop_name(bus, "mesh", CON_MESH_BUS_NAME) != 0)
                status = CON_EXIT_FAILURE;
        /* The model gateway: started by bus activation on an agent's first model call. */
        if (stop_name(bus, "model gateway", MODELS_BUS_NAME) != 0)
                status = CON_EXIT_FAILURE;
        /* The commissioner: started by bus activation too (a job in flight is rolled back by its
         * worker, which dies with it). */
        if (stop_name(bus, "provisioner", CON_PROVISIONER_BUS_NAME) != 0)
                status = CON_EXIT_FAILURE;
        if (load_config(&c, &config) < 0)
                return CON_EXIT_CONFIG;
        for (size_t i = 0; i < config->n_agents; i++) {
                _cleanup_free_ char *bn = NULL, *label = NULL;
                if (con_agent_bus_name(config->agents[i].name, &bn) < 0 ||
                    asprintf(&label, "agent %s", config->agents[i].name) < 0)
                        continue;
                if (stop_name(bus, label, bn) != 0)
                        status = CON_EXIT_FAILURE;
        }
        return status;
}

/* ---- status / agents ---- */

typedef struct AgentInfo {
        char *state;
        uint32_t queue;
        char *current;
        uint64_t accepted, completed, failed;
} AgentInfo;

static void agent_info_done(AgentInfo *i) {
        free(i->state);
        free(i->current);
}

static int agent_properties(sd_bus *bus, const char *bus_name, AgentInfo *ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_call_method(bus, bus_name, CON_AGENT_PATH, "org.freedesktop.DBus.Properties", "GetAll", NULL, &reply,
                               "s", CON_AGENT_INTERFACE);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                const char *key, *s;
                r = sd_bus_message_read(reply, "s", &key);
                if (r < 0)
                        return r;
                if (streq(key, "State") || streq(key, "CurrentTask")) {
                        r = sd_bus_message_read(reply, "v", "s", &s);
                        if (r < 0)
                                return r;
                        char **dst = streq(key, "State") ? &ret->state : &ret->current;
                        free(*dst);
                        *dst = strdup(s);
                } else if (streq(key, "QueueLength"))
                        r = sd_bus_message_read(reply, "v", "u", &ret->queue);
                else if (streq(key, "TasksAccepted"))
                        r = sd_bus_message_read(reply, "v", "t", &ret->accepted);
                else if (streq(key, "TasksCompleted"))
                        r = sd_bus_message_read(reply, "v", "t", &ret->completed);
                else if (streq(key, "TasksFailed"))
                        r = sd_bus_message_read(reply, "v", "t", &ret->failed);
                else
                        r = sd_bus_message_skip(reply, "v");
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        return r;
        }
        return r;
}

static int router_counters(sd_bus *bus, uint64_t *routed, uint64_t *rejected, uint32_t *in_flight, uint32_t *backlog) {
        int r;
        if ((r = sd_bus_get_property_trivial(bus, CON_ROUTER_BUS_NAME, CON_ROUTER_PATH, CON_ROUTER_INTERFACE, "Routed",
                                             NULL, 't', routed)) < 0 ||
            (r = sd_bus_get_property_trivial(bus, CON_ROUTER_BUS_NAME, CON_ROUTER_PATH, CON_ROUTER_INTERFACE,
                                             "Rejected", NULL, 't', rejected)) < 0 ||
            (r = sd_bus_get_property_trivial(bus, CON_ROUTER_BUS_NAME, CON_ROUTER_PATH, CON_ROUTER_INTERFACE,
                                             "InFlight", NULL, 'u', in_flight)) < 0 ||
            (r = sd_bus_get_property_trivial(bus, CON_ROUTER_BUS_NAME, CON_ROUTER_PATH, CON_ROUTER_INTERFACE,
                                             "Backlog", NULL, 'u', backlog)) < 0)
                return r;
        return 0;
}

static void json_add_u64_or_null(cJSON *o, const char *key, uint64_t v, bool known) {
        if (known)
                con_json_add_u64(o, key, v);
        else
                cJSON_AddNullToObject(o, key);
}

/* Every --json output is one JSON document on one line (docs/CLI.md, "JSON output"). */
static void print_json(cJSON *o) {
        char *s = cJSON_PrintUnformatted(o);
        if (s) {
                puts(s);
                free(s);
        }
}

static const char status_usage[] =
        "Usage: con status [--json] [--config FILE]\n"
        "\n"
        "Show the router (running or stopped, counters) and every configured agent: running,\n"
        "activatable (started on the first task) or unavailable; its state and queue length.\n"
        "Agents that are not running are not started by this command.\n"
        "\n"
        "Exit status: 0 ok, 1 the bus is not reachable, 2 usage error, 4 invalid configuration.\n";

static const char agents_usage[] =
        "Usage: con agents [--json] [--config FILE]\n"
        "\n"
        "List the configured agents: name, tier, mode, bus name, roles, and whether it runs.\n"
        "\n"
        "Exit status: 0 ok, 2 usage error, 4 invalid configuration.\n";

/* The reason a running service refused its last reload (its ConfigError property); NULL when it
 * did not, or does not run. */
static char *service_config_error(sd_bus *bus, const char *name, const char *path, const char *interface) {
        char *s = NULL;
        if (!bus || !name_has_owner(bus, name) ||
            sd_bus_get_property_string(bus, name, path, interface, "ConfigError", NULL, &s) < 0)
                return NULL;
        if (isempty(s)) {
                free(s);
                return NULL;
        }
        return s;
}

/* The tasks sent from here to agents of other hosts (ListTasks on the mesh gateway,
 * docs/MULTIHOST.md), positioned inside their array of (task_id, to, state, sender); 0 when this
 * host has no gateway on the bus. */
static int mesh_list_tasks(sd_bus *bus, sd_bus_message **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        if (!bus || !name_has_owner(bus, CON_MESH_BUS_NAME))
                return 0;
        int r = sd_bus_call_method(bus, CON_MESH_BUS_NAME, CON_MESH_PATH, CON_MESH_INTERFACE, "ListTasks", &e, &reply,
                                   NULL);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(reply, 'a', "(ssss)");
        if (r < 0)
                return r;
        *ret = TAKE_PTR(reply);
        return 1;
}

/* A remote task's state as a task status (the A2A names): accepted, queued at the remote
 * agent, is submitted. */
static const char *mesh_state_a2a(const char *state) {
        return streq(state, "accepted") ? "submitted" : con_task_state_a2a(state) ?: state;
}

static int show_agents(int argc, char *argv[], bool full_status) {
        const char *verb = full_status ? "status" : "agents";
        _cleanup_free_ char *config_error = NULL;
        _cleanup_(con_config_freep) ConConfig *config = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_strv_free_ char **activatable = NULL;
        _cleanup_(cJSON_Deletep) cJSON *root = NULL;
        Common c = {};
        int r;

        r = parse_common(argc, argv, verb, full_status ? status_usage : agents_usage, true, &c);
        if (r <= 0)
                return r < 0 ? CON_EXIT_USAGE : CON_EXIT_OK;
        if (optind < argc)
                return con_fail(CON_EXIT_USAGE, "%s: unexpected argument '%s'", verb, argv[optind]);
        if (full_status) {
                /* A con.yaml that does not load is shown, not fatal: the services keep running
                 * with the one they loaded, and say so below. */
                _cleanup_(con_error_detail_done) ConErrorDetail e = {};
                r = con_config_load(c.config, &config, &e);
                if (r < 0) {
                        config_error = con_error_detail_format(&e);
                        if (!config_error && !(config_error = strdup(strerror(-r))))
                                return con_fail(CON_EXIT_FAILURE, "out of memory");
                }
        } else if (load_config(&c, &config) < 0)
                return CON_EXIT_CONFIG;
        if (sd_bus_open_system(&bus) < 0 || !system_bus_alive()) {
                bus = sd_bus_unref(bus);
                if (full_status)
                        return con_fail(CON_EXIT_FAILURE, "status: the system bus is not running (try 'con up')");
        } else
                activatable = activatable_names(bus);

        root = cJSON_CreateObject();
        cJSON *jagents = cJSON_AddArrayToObject(root, "agents");
        if (full_status) {
                bool running = name_has_owner(bus, CON_ROUTER_BUS_NAME);
                cJSON *jr = cJSON_AddObjectToObject(root, "router");
                cJSON_AddBoolToObject(jr, "running", running);
                uint64_t routed = 0, rejected = 0;
                uint32_t in_flight = 0, backlog = 0;
                pid_t pid = 0;
                bool counted = false;
                if (running) {
                        (void) name_pid(bus, CON_ROUTER_BUS_NAME, &pid);
                        counted = router_counters(bus, &routed, &rejected, &in_flight, &backlog) >= 0;
                }
                /* One shape: every key always there, null when not known (docs/CLI.md). */
                json_add_u64_or_null(jr, "pid", (uint64_t) pid, pid > 0);
                json_add_u64_or_null(jr, "routed", routed, counted);
                json_add_u64_or_null(jr, "rejected", rejected, counted);
                json_add_u64_or_null(jr, "in_flight", in_flight, counted);
                json_add_u64_or_null(jr, "backlog", backlog, counted);
                if (!c.json) {
                        if (running)
                                printf("router      running (pid %d): %" PRIu64 " routed, %" PRIu64 " rejected, %u in "
                                       "flight, %u waiting\n", (int) pid, routed, rejected, in_flight, backlog);
                        else
                                printf("router      stopped (start it with 'con up')\n");
                }
                /* The configuration: the file as it is now, and each running service that
                 * refused it on its last reload (it keeps the one loaded before). */
                static const struct {
                        const char *service, *name, *path, *interface;
                } services[] = {
                        { "con-routerd", CON_ROUTER_BUS_NAME, CON_ROUTER_PATH, CON_ROUTER_INTERFACE },
                        { "con-contractd", CON_CONTRACTS_BUS_NAME, CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE },
                        { "con-modeld", MODELS_BUS_NAME, MODELS_PATH, MODELS_INTERFACE },
                };
                cJSON *jerrs = cJSON_AddArrayToObject(root, "config_errors");
                if (config_error) {
                        cJSON *o = cJSON_CreateObject();
                        cJSON_AddStringToObject(o, "source", c.config);
                        cJSON_AddStringToObject(o, "error", config_error);
                        cJSON_AddItemToArray(jerrs, o);
                        if (!c.json)
                                printf("config      %s does not load: %s\n", c.config, config_error);
                }
                for (size_t i = 0; i < ELEMENTSOF(services); i++) {
                        _cleanup_free_ char *err = service_config_error(bus, services[i].name, services[i].path,
                                                                        services[i].interface);
                        if (!err)
                                continue;
                        cJSON *o = cJSON_CreateObject();
                        cJSON_AddStringToObject(o, "source", services[i].service);
                        cJSON_AddStringToObject(o, "error", err);
                        cJSON_AddItemToArray(jerrs, o);
                        if (!c.json)
                                printf("config      %s refused its last reload and keeps the configuration it had: %s\n",
                                       services[i].service, err);
                }
                if (!c.json)
                        printf("\n%-20s %-12s %-10s %-10s %s\n", "AGENT", "RUNNING", "STATE", "QUEUE", "MODE");
        } else if (!c.json)
                printf("%-20s %-9s %-10s %-28s %-8s %s\n", "AGENT", "TIER", "MODE", "BUS NAME", "RUNNING", "ROLES");

        for (size_t i = 0; config && i < config->n_agents; i++) {
                const ConAgent *a = &config->agents[i];
                _cleanup_free_ char *bn = NULL, *roles = NULL;
                _cleanup_(agent_info_done) AgentInfo info = {};
                if (con_agent_bus_name(a->name, &bn) < 0)
                        continue;
                bool running = bus && name_has_owner(bus, bn);
                const char *run = running ? "running" : strv_contains(activatable, bn) ? "activatable" : "unavailable";
                bool have_info = running && (full_status || c.json) && agent_properties(bus, bn, &info) >= 0;
                roles = strv_join(a->roles, ",");

                /* The agent object: the same keys in 'con status' and 'con agents'. */
                cJSON *ja = cJSON_CreateObject();
                cJSON_AddItemToArray(jagents, ja);
                cJSON_AddStringToObject(ja, "name", a->name);
                cJSON_AddStringToObject(ja, "bus_name", bn);
                if (isempty(con_tier_to_string(a->tier)))
                        cJSON_AddNullToObject(ja, "tier");
                else
                        cJSON_AddStringToObject(ja, "tier", con_tier_to_string(a->tier));
                cJSON_AddStringToObject(ja, "mode", con_mode_to_string(a->mode));
                cJSON *jroles = cJSON_AddArrayToObject(ja, "roles");
                STRV_FOREACH(s, a->roles)
                        cJSON_AddItemToArray(jroles, cJSON_CreateString(*s));
                if (bus) {
                        cJSON_AddBoolToObject(ja, "running", running);
                        cJSON_AddBoolToObject(ja, "activatable", strv_contains(activatable, bn));
                } else {
                        cJSON_AddNullToObject(ja, "running");
                        cJSON_AddNullToObject(ja, "activatable");
                }
                if (have_info) {
                        cJSON_AddStringToObject(ja, "state", strempty(info.state));
                        con_json_add_u64(ja, "queue", info.queue);
                        if (isempty(info.current))
                                cJSON_AddNullToObject(ja, "current_task");
                        else
                                cJSON_AddStringToObject(ja, "current_task", info.current);
                } else {
                        cJSON_AddNullToObject(ja, "state");
                        cJSON_AddNullToObject(ja, "queue");
                        cJSON_AddNullToObject(ja, "current_task");
                }
                json_add_u64_or_null(ja, "tasks_accepted", info.accepted, have_info);
                json_add_u64_or_null(ja, "tasks_completed", info.completed, have_info);
                json_add_u64_or_null(ja, "tasks_failed", info.failed, have_info);
                if (c.json)
                        continue;
                if (full_status) {
                        char q[16] = "-";
                        if (have_info)
                                snprintf(q, sizeof q, "%u", info.queue);
                        printf("%-20s %-12s %-10s %-10s %s\n", a->name, run, have_info ? strempty(info.state) : "-", q,
                               con_mode_to_string(a->mode));
                } else
                        printf("%-20s %-9s %-10s %-28s %-8s %s\n", a->name,
                               isempty(con_tier_to_string(a->tier)) ? "-" : con_tier_to_string(a->tier),
                               con_mode_to_string(a->mode), bn, !bus ? "unknown" : running ? "yes" : "no",
                               isempty(roles) ? "-" : roles);
        }
        if (full_status) {
                /* Tasks sent to other hosts and not finished, with the state their host reported. */
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *mesh = NULL;
                const char *id, *to, *st, *sender;
                int connected = 0;
                r = mesh_list_tasks(bus, &mesh);
                if (r <= 0)
                        cJSON_AddNullToObject(root, "mesh");
                else {
                        (void) sd_bus_get_property_trivial(bus, CON_MESH_BUS_NAME, CON_MESH_PATH, CON_MESH_INTERFACE,
                                                           "Connected", NULL, 'b', &connected);
                        cJSON *jm = cJSON_AddObjectToObject(root, "mesh");
                        cJSON_AddBoolToObject(jm, "connected", connected);
                        cJSON *jt = cJSON_AddArrayToObject(jm, "tasks");
                        if (!c.json)
                                printf("\nmesh        %s\n%-44s %-24s %-10s %s\n",
                                       connected ? "connected" : "not connected (see 'con mesh status')",
                                       "REMOTE TASK", "TO", "STATE", "SENDER");
                        while ((r = sd_bus_message_read(mesh, "(ssss)", &id, &to, &st, &sender)) > 0) {
                                if (con_task_state_is_final(st))
                                        continue;
                                cJSON *o = cJSON_CreateObject();
                                cJSON_AddItemToArray(jt, o);
                                cJSON_AddStringToObject(o, "task_id", id);
                                cJSON_AddStringToObject(o, "agent", to);
                                cJSON_AddStringToObject(o, "status", mesh_state_a2a(st));
                                cJSON_AddStringToObject(o, "state", st);
                                cJSON_AddStringToObject(o, "sender", sender);
                                if (!c.json)
                                        printf("%-44s %-24s %-10s %s\n", id, to, st, sender);
                        }
                        /* The tasks between any two hosts (the stream con-state; root: all). */
                        if (!c.json)
                                printf("\nmesh tasks  between any hosts, not ended or ended in the last %d min\n",
                                       CON_MESH_STATES_RECENT_SEC / 60);
                        r = con_mesh_show_states(bus, c.json ? jm : NULL, "all_tasks", 20);
                        if (r < 0 && !c.json)
                                printf("(cannot ask the mesh gateway: %s)\n", strerror(-r));
                        else if (r < 0)
                                cJSON_AddNullToObject(jm, "all_tasks");
                }
        }
        if (c.json)
                print_json(full_status ? root : jagents);
        return config_error ? CON_EXIT_CONFIG : CON_EXIT_OK;
}

int verb_status(int argc, char *argv[]) {
        return show_agents(argc, argv, true);
}

int verb_agents(int argc, char *argv[]) {
        return show_agents(argc, argv, false);
}

/* ---- tasks / task ---- */

static const char tasks_usage[] =
        "Usage: con tasks [AGENT] [--json] [--config FILE]\n"
        "\n"
        "List the tasks the agents know (ListTasks): id, status, sender. You see your own tasks;\n"
        "root sees all. Without AGENT every configured agent is asked (on-demand agents are\n"
        "started for that and exit again when idle), and the mesh gateway for the tasks sent to\n"
        "agents of other hosts (AGENT@HOST: only those), with the state their host reported:\n"
        "submitted, accepted, working, completed, failed, canceled (--json: accepted is submitted).\n"
        "\n"
        "Exit status: 0 ok, 1 an agent could not be asked, 2 usage error, 4 invalid configuration.\n";

int verb_tasks(int argc, char *argv[]) {
        _cleanup_(con_config_freep) ConConfig *config = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(cJSON_Deletep) cJSON *root = NULL;
        Common c = {};
        const char *only = NULL;
        int r, status = CON_EXIT_OK;

        r = parse_common(argc, argv, "tasks", tasks_usage, true, &c);
        if (r <= 0)
                return r < 0 ? CON_EXIT_USAGE : CON_EXIT_OK;
        if (argc - optind > 1)
                return con_fail(CON_EXIT_USAGE, "tasks: at most one AGENT (see 'con tasks --help')");
        if (optind < argc)
                only = argv[optind];
        if (load_config(&c, &config) < 0)
                return CON_EXIT_CONFIG;
        if (only && !strchr(only, '@') && !con_config_find_agent(config, only))
                return con_fail(CON_EXIT_USAGE, "tasks: no agent '%s' in %s (see 'con agents')", only, c.config);
        if (only && strchr(only, '@')) {
                _cleanup_free_ char *agent = NULL, *host = NULL;
                if (con_mesh_target_split(only, &agent, &host) < 0)
                        return con_fail(CON_EXIT_USAGE, "tasks: '%s' is not AGENT@HOST", only);
        }
        if (open_bus(&bus) < 0)
                return CON_EXIT_FAILURE;

        root = cJSON_CreateArray();
        if (!c.json)
                printf("%-20s %-44s %-10s %s\n", "AGENT", "TASK", "STATUS", "SENDER");
        for (size_t i = 0; i < config->n_agents; i++) {
                const ConAgent *a = &config->agents[i];
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                _cleanup_free_ char *bn = NULL;
                const char *id, *st, *sender;
                if (only && !streq(only, a->name))
                        continue;
                if (con_agent_bus_name(a->name, &bn) < 0)
                        continue;
                r = sd_bus_call_method(bus, bn, CON_AGENT_PATH, CON_AGENT_INTERFACE, "ListTasks", &e, &reply, NULL);
                if (r < 0) {
                        con_fail(CON_EXIT_FAILURE, "tasks: cannot ask %s: %s", a->name, e.message ?: strerror(-r));
                        status = CON_EXIT_FAILURE;
                        continue;
                }
                r = sd_bus_message_enter_container(reply, 'a', "(sss)");
                while (r >= 0 && (r = sd_bus_message_read(reply, "(sss)", &id, &st, &sender)) > 0) {
                        if (c.json) {
                                cJSON *o = cJSON_CreateObject();
                                cJSON_AddStringToObject(o, "agent", a->name);
                                cJSON_AddStringToObject(o, "task_id", id);
                                cJSON_AddStringToObject(o, "status", con_task_state_a2a(st) ?: st);
                                cJSON_AddStringToObject(o, "sender", sender);
                                cJSON_AddItemToArray(root, o);
                        } else
                                printf("%-20s %-44s %-10s %s\n", a->name, id, con_task_state_a2a(st) ?: st, sender);
                }
                if (r < 0) {
                        con_fail(CON_EXIT_FAILURE, "tasks: bad reply from %s: %s", a->name, strerror(-r));
                        status = CON_EXIT_FAILURE;
                }
        }
        /* Tasks sent from here to agents of other hosts, with the state their host reported. */
        if (!only || strchr(only, '@')) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *mesh = NULL;
                const char *id, *to, *st, *sender;
                r = mesh_list_tasks(bus, &mesh);
                if (r < 0) {
                        con_fail(CON_EXIT_FAILURE, "tasks: cannot ask the mesh gateway: %s", strerror(-r));
                        status = CON_EXIT_FAILURE;
                }
                while (r > 0 && (r = sd_bus_message_read(mesh, "(ssss)", &id, &to, &st, &sender)) > 0) {
                        if (only && !streq(only, to))
                                continue;
                        if (c.json) {
                                cJSON *o = cJSON_CreateObject();
                                cJSON_AddStringToObject(o, "agent", to);
                                cJSON_AddStringToObject(o, "task_id", id);
                                cJSON_AddStringToObject(o, "status", mesh_state_a2a(st));
                                cJSON_AddStringToObject(o, "sender", sender);
                                cJSON_AddItemToArray(root, o);
                        } else
                                printf("%-20s %-44s %-10s %s\n", to, id, st, sender);
                }
        }
        if (c.json)
                print_json(root);
        return status;
}

static const char task_usage[] =
        "Usage: con task ID [--agent NAME] [--transcript] [--json] [--config FILE]\n"
        "\n"
        "Find task ID across the agents and show its agent, status and result (GetResultInfo): the\n"
        "response when done, the reason when failed or cancelled. Only the submitter and root may\n"
        "read a result. --json adds \"truncated\" (the result was cut to 1 MiB, a reason to 4 KiB),\n"
        "\"replaced\" (bytes that were not UTF-8 became U+FFFD) and \"size\" (the bytes the runner\n"
        "gave).\n"
        "--transcript shows what the agent did instead (GetTranscript): the model, each turn's\n"
        "tokens and time, each tool call with its arguments, exit code and output size, the\n"
        "delegation chain, tokens in and out, cost and duration.\n"
        "When several agents know ID (ids are unique per agent and sender only), --agent NAME\n"
        "names the one to show.\n"
        "\n"
        "Exit status: 0 found (any status), 1 not found, several found or not readable, 2 usage error,\n"
        "4 invalid configuration.\n";

/* Prints s for a terminal: control characters (what a model or an agent put into tool arguments
 * could use to rewrite the screen) as \xNN. */
static void print_terminal_safe(const char *s) {
        for (; s && *s; s++)
                if ((unsigned char) *s < 0x20 || *s == 0x7f)
                        printf("\\x%02x", (unsigned) (unsigned char) *s);
                else
                        putchar(*s);
}

static void print_ms(const char *label, const cJSON *v) {
        if (cJSON_IsNumber(v))
                printf("%s%.1f s", label, v->valuedouble / 1000.0);
}

/* GetTranscript of task id at agent, printed as it came (--json) or as lines. */
static int show_transcript(sd_bus *bus, const char *bn, const char *agent, const char *id, bool json) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        const char *text;
        int r = sd_bus_call_method(bus, bn, CON_AGENT_PATH, CON_AGENT_INTERFACE, "GetTranscript", &e, &reply, "s", id);
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "task: %s cannot show the transcript of %s: %s", agent, id,
                                e.message ?: strerror(-r));
        if (sd_bus_message_read(reply, "s", &text) < 0)
                return con_fail(CON_EXIT_FAILURE, "task: %s sent an unreadable transcript", agent);
        if (json) {
                puts(text);
                return CON_EXIT_OK;
        }
        _cleanup_(cJSON_Deletep) cJSON *j = cJSON_Parse(text);
        if (!j)
                return con_fail(CON_EXIT_FAILURE, "task: %s sent a transcript that is not JSON", agent);
#define S(k) (cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, k)))
#define N(k) (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, k)) ? \
              cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(j, k)) : -1)
        printf("task:     %s\nagent:    %s\nstatus:   %s\nsender:   %s\n", id, agent, strempty(S("status")),
               strempty(S("sender")));
        printf("chain:    %s (hop %.0f)\n", S("chain") ?: "none: sent by a person or root", N("hops"));
        printf("model:    %s\n", S("model") ?: "none");
        printf("tokens:   %.0f in, %.0f out\n", N("tokens_in"), N("tokens_out"));
        if (N("cost") >= 0)
                printf("cost:     $%.6f\n", N("cost"));
        else
                printf("cost:     unknown (no prices in models: of the configuration)\n");
        printf("turns:    %.0f, tool calls %.0f\n", N("turns"), N("tool_calls"));
        print_ms("duration: ", cJSON_GetObjectItemCaseSensitive(j, "duration_ms"));
        print_ms(" (queued ", cJSON_GetObjectItemCaseSensitive(j, "queued_ms"));
        printf("%s\n", cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "queued_ms")) ? ")" : "");
#undef S
#undef N
        const cJSON *step;
        cJSON_ArrayForEach(step, cJSON_GetObjectItemCaseSensitive(j, "steps")) {
                const cJSON *turn = cJSON_GetObjectItemCaseSensitive(step, "turn"),
                            *ev = cJSON_GetObjectItemCaseSensitive(step, "ev"),
                            *ms = cJSON_GetObjectItemCaseSensitive(step, "ms");
                printf("  turn %2.0f  ", cJSON_IsNumber(turn) ? turn->valuedouble : 0);
                if (cJSON_IsString(ev) && streq(ev->valuestring, "model")) {
                        const cJSON *m = cJSON_GetObjectItemCaseSensitive(step, "model"),
                                    *in = cJSON_GetObjectItemCaseSensitive(step, "in"),
                                    *out = cJSON_GetObjectItemCaseSensitive(step, "out");
                        printf("model ");
                        print_terminal_safe(cJSON_IsString(m) ? m->valuestring : "?");
                        printf(": %.0f in, %.0f out", cJSON_IsNumber(in) ? in->valuedouble : 0,
                               cJSON_IsNumber(out) ? out->valuedouble : 0);
                        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(step, "error")))
                                printf(", failed");
                } else {
                        const cJSON *tool = cJSON_GetObjectItemCaseSensitive(step, "tool"),
                                    *args = cJSON_GetObjectItemCaseSensitive(step, "args"),
                                    *code = cJSON_GetObjectItemCaseSensitive(step, "exit"),
                                    *bytes = cJSON_GetObjectItemCaseSensitive(step, "bytes");
                        printf("tool ");
                        print_terminal_safe(cJSON_IsString(tool) ? tool->valuestring : "?");
                        putchar(' ');
                        print_terminal_safe(cJSON_IsString(args) ? args->valuestring : "");
                        if (cJSON_IsNumber(code))
                                printf(" -> exit %.0f", code->valuedouble);
                        else if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(step, "error")))
                                printf(" -> error");
                        printf(", %.0f bytes of output", cJSON_IsNumber(bytes) ? bytes->valuedouble : 0);
                }
                print_ms(", ", ms);
                putchar('\n');
        }
        return CON_EXIT_OK;
}

/* con task ID for a task sent to another host: GetResultInfo of the mesh gateway, whose info also
 * names the host, the agent and the state. */
static int show_mesh_task(sd_bus_message *reply, const char *id, bool json) {
        const char *st, *text;
        ConResultInfo info = {};
        int r;

        r = sd_bus_message_read(reply, "ss", &st, &text);
        if (r >= 0)
                r = con_bus_read_result_info(reply, &info);
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "task: the mesh gateway sent an unreadable reply: %s", strerror(-r));
        const char *state = info.state;
        _cleanup_free_ char *to = NULL;
        if (asprintf(&to, "%s@%s", strempty(info.agent), strempty(info.host)) < 0)
                return con_fail(CON_EXIT_FAILURE, "out of memory");
        if (json) {
                _cleanup_(cJSON_Deletep) cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "task_id", id);
                cJSON_AddStringToObject(o, "agent", to);
                cJSON_AddStringToObject(o, "status", con_task_state_a2a(st) ?: st);
                cJSON_AddStringToObject(o, "text", text);
                cJSON_AddBoolToObject(o, "truncated", info.truncated);
                cJSON_AddBoolToObject(o, "replaced", info.replaced);
                con_json_add_u64(o, "size", info.size);
                print_json(o);
                return CON_EXIT_OK;
        }
        printf("task:   %s\nagent:  %s (another host, through the mesh)\nstatus: %s\n", id, to, state ?: st);
        if (*text) {
                fputc('\n', stdout);
                print_terminal_safe(text);
                if (text[strlen(text) - 1] != '\n')
                        fputc('\n', stdout);
        }
        return CON_EXIT_OK;
}

int verb_task(int argc, char *argv[]) {
        _cleanup_(con_config_freep) ConConfig *config = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        Common c = {};
        const char *denied_by = NULL;
        int r;

        r = parse_common(argc, argv, "task", task_usage, true, &c);
        if (r <= 0)
                return r < 0 ? CON_EXIT_USAGE : CON_EXIT_OK;
        if (argc - optind != 1)
                return con_fail(CON_EXIT_USAGE, "task: give exactly one task ID (see 'con task --help')");
        const char *id = argv[optind];
        if (load_config(&c, &config) < 0)
                return CON_EXIT_CONFIG;
        if (open_bus(&bus) < 0)
                return CON_EXIT_FAILURE;

        _cleanup_(task_where_done) TaskWhere w = {};
        r = task_where_one(&c, bus, config, "task", id, &w);
        if (r != 0)
                return r;
        if (w.n_denied > 0)
                denied_by = w.denied[0]->name;
        if (w.n_known == 1) {
                const ConAgent *a = w.known[0];
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                _cleanup_free_ char *bn = NULL;
                const char *st, *text;
                r = con_agent_bus_name(a->name, &bn);
                if (r >= 0)
                        r = sd_bus_call_method(bus, bn, CON_AGENT_PATH, CON_AGENT_INTERFACE, "GetResultInfo", &e,
                                               &reply, "s", id);
                if (r < 0)
                        return con_fail(CON_EXIT_FAILURE, "task: %s: %s", a->name, e.message ?: strerror(-r));
                ConResultInfo info = {};
                if (sd_bus_message_read(reply, "ss", &st, &text) < 0 ||
                    con_bus_read_result_info(reply, &info) < 0)
                        return con_fail(CON_EXIT_FAILURE, "task: %s sent a reply that cannot be read", a->name);
                if (c.transcript)
                        return show_transcript(bus, bn, a->name, id, c.json);
                if (c.json) {
                        _cleanup_(cJSON_Deletep) cJSON *o = cJSON_CreateObject();
                        cJSON_AddStringToObject(o, "task_id", id);
                        cJSON_AddStringToObject(o, "agent", a->name);
                        cJSON_AddStringToObject(o, "status", con_task_state_a2a(st) ?: st);
                        cJSON_AddStringToObject(o, "text", text);
                        cJSON_AddBoolToObject(o, "truncated", info.truncated);
                        cJSON_AddBoolToObject(o, "replaced", info.replaced);
                        con_json_add_u64(o, "size", info.size);
                        print_json(o);
                } else {
                        printf("task:   %s\nagent:  %s\nstatus: %s\n", id, a->name, con_task_state_a2a(st) ?: st);
                        if (info.truncated || info.replaced)
                                printf("result: %" PRIu64 " bytes from the runner%s%s\n", info.size,
                                       info.truncated ? ", truncated" : "",
                                       info.replaced ? ", bytes that were not UTF-8 replaced by U+FFFD" : "");
                        if (*text)
                                printf("\n%s%s", text, text[strlen(text) - 1] == '\n' ? "" : "\n");
                }
                return CON_EXIT_OK;
        }
        /* A task sent to an agent of another host: the mesh gateway has its state and result. */
        if (!c.transcript && !c.agent && name_has_owner(bus, CON_MESH_BUS_NAME)) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                r = sd_bus_call_method(bus, CON_MESH_BUS_NAME, CON_MESH_PATH, CON_MESH_INTERFACE, "GetResultInfo", &e,
                                       &reply, "s", id);
                if (r < 0 && sd_bus_error_has_names(&e, CON_ERROR_ACCESS_DENIED, SD_BUS_ERROR_ACCESS_DENIED))
                        denied_by = "the mesh gateway";
                if (r >= 0)
                        return show_mesh_task(reply, id, c.json);
        }
        if (denied_by)
                return con_fail(CON_EXIT_FAILURE, "task: %s knows task %s, but only its submitter and root may read it",
                                denied_by, id);
        return con_fail(CON_EXIT_FAILURE, "task: no agent knows a task '%s' (see 'con tasks')", id);
}

/* ---- cancel ---- */

static const char cancel_usage[] =
        "Usage: con cancel ID [--agent NAME] [--config FILE]\n"
        "\n"
        "Cancel task ID (Cancel on the agent that knows it): a queued task is dropped, a running one's\n"
        "session is killed with every process it started; the task ends as canceled. A finished task\n"
        "stays as it is. The submitter may always cancel its own tasks; others need the policy's\n"
        "cancel grant (root by default). A task sent from here to an agent of another host (AGENT@HOST)\n"
        "is canceled through the mesh gateway: only by its sender and root.\n"
        "Task ids are unique per agent and sender only: when several agents know ID, con cancel\n"
        "refuses to pick one; --agent NAME names the agent. The caller's own task comes first: one\n"
        "sent to another host is canceled rather than another user's of that id here.\n"
        "\n"
        "Exit status: 0 canceled (or already finished: its status is printed), 1 not found, several found or\n"
        "refused, 2 usage error, 4 invalid configuration.\n";

/* Cancel on the mesh gateway (docs/MULTIHOST.md): an exit status, or -ENOENT when it knows no such
 * task (or does not run); with quiet_denied, -EACCES (nothing printed) when the task is not the
 * caller's. */
static int cancel_remote(sd_bus *bus, const char *id, bool quiet_denied) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        ConResultInfo info = {};
        const char *st, *text;

        if (!name_has_owner(bus, CON_MESH_BUS_NAME))
                return -ENOENT;
        int r = sd_bus_call_method(bus, CON_MESH_BUS_NAME, CON_MESH_PATH, CON_MESH_INTERFACE, "Cancel", &e, NULL, "s",
                                   id);
        if (r < 0) {
                if (sd_bus_error_has_name(&e, CON_ERROR_NO_SUCH_TASK))
                        return -ENOENT;
                if (quiet_denied && sd_bus_error_has_names(&e, CON_ERROR_ACCESS_DENIED, SD_BUS_ERROR_ACCESS_DENIED))
                        return -EACCES;
                return con_fail(CON_EXIT_FAILURE, "cancel: the mesh gateway refused to cancel task %s: %s", id,
                                e.message ?: strerror(-r));
        }
        sd_bus_error_free(&e);
        r = sd_bus_call_method(bus, CON_MESH_BUS_NAME, CON_MESH_PATH, CON_MESH_INTERFACE, "GetResultInfo", &e, &reply,
                               "s", id);
        if (r < 0 || sd_bus_message_read(reply, "ss", &st, &text) < 0 || con_bus_read_result_info(reply, &info) < 0 ||
            !info.agent || !info.host) {
                printf("Asked the mesh gateway to cancel task %s.\n", id);
                return CON_EXIT_OK;
        }
        /* The result comes back from the other host: until then the task is being canceled. */
        printf("Task %s on agent %s@%s: %s\n", id, info.agent, info.host,
               con_task_state_is_final(st) ? st : "canceling (asked its host; the result comes back as canceled)");
        return CON_EXIT_OK;
}

/* Cancel on agent a, then print the task's state: an exit status; with quiet_denied, -EACCES
 * (nothing printed) when the agent refuses the caller. */
static int cancel_on_agent(sd_bus *bus, const ConAgent *a, const char *id, bool quiet_denied) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *bn = NULL;
        const char *st, *text;
        int r = con_agent_bus_name(a->name, &bn);
        if (r >= 0)
                r = sd_bus_call_method(bus, bn, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Cancel", &e, NULL, "s", id);
        if (r < 0) {
                if (quiet_denied && sd_bus_error_has_names(&e, CON_ERROR_ACCESS_DENIED, SD_BUS_ERROR_ACCESS_DENIED))
                        return -EACCES;
                return con_fail(CON_EXIT_FAILURE, "cancel: %s refused to cancel task %s: %s", a->name, id,
                                e.message ?: strerror(-r));
        }
        sd_bus_error_free(&e);
        r = sd_bus_call_method(bus, bn, CON_AGENT_PATH, CON_AGENT_INTERFACE, "GetResult", &e, &reply, "s", id);
        if (r < 0 || sd_bus_message_read(reply, "ss", &st, &text) < 0) {
                printf("Asked %s to cancel task %s.\n", a->name, id);
                return CON_EXIT_OK;
        }
        /* A running session ends once its processes are gone: the state follows. */
        printf("Task %s on agent %s: %s\n", id, a->name,
               streq_ptr(con_task_state_a2a(st), "working") ? "canceling (its session is being killed)"
                                                              : con_task_state_a2a(st) ?: st);
        return CON_EXIT_OK;
}

int verb_cancel(int argc, char *argv[]) {
        _cleanup_(con_config_freep) ConConfig *config = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        Common c = {};
        int r;

        r = parse_common(argc, argv, "cancel", cancel_usage, false, &c);
        if (r <= 0)
                return r < 0 ? CON_EXIT_USAGE : CON_EXIT_OK;
        if (argc - optind != 1)
                return con_fail(CON_EXIT_USAGE, "cancel: give exactly one task ID (see 'con cancel --help')");
        const char *id = argv[optind];
        if (!con_task_id_valid(id))
                return con_fail(CON_EXIT_USAGE, "cancel: '%s' is not a task id", id);
        if (load_config(&c, &config) < 0)
                return CON_EXIT_CONFIG;
        if (open_bus(&bus) < 0)
                return CON_EXIT_FAILURE;

        _cleanup_(task_where_done) TaskWhere w = {};
        r = task_where_one(&c, bus, config, "cancel", id, &w);
        if (r != 0)
                return r;
        if (w.n_known == 1)
                return cancel_on_agent(bus, w.known[0], id, false);
        /* A task sent from here to an agent of another host: the mesh gateway passes the cancel on.
         * Asked before the local tasks the caller may not read: the caller's own task of that id
         * comes first, and another user's here is canceled only when the caller has none. */
        if (!c.agent && config->mesh.enabled) {
                /* -EACCES only with local candidates, whose refusal is the one printed below. */
                r = cancel_remote(bus, id, w.n_denied > 0);
                if (r != -ENOENT && r != -EACCES)
                        return r;
        }
        /* A task the caller may not read: another user's. The policy's cancel grant may still
         * allow it (the agent decides), but only where it is not ambiguous. */
        const char *refused_by = NULL;
        if (w.n_denied == 1) {
                r = cancel_on_agent(bus, w.denied[0], id, true);
                if (r != -EACCES)
                        return r;
                refused_by = w.denied[0]->name;
        }
        if (w.n_denied > 1) {
                _cleanup_free_ char *names = agent_names(w.denied, w.n_denied);
                return con_fail(CON_EXIT_FAILURE,
                                "cancel: agents %s each know a task '%s' of another user; with the policy's cancel "
                                "grant, name one with --agent NAME", names ?: "(several)", id);
        }
        if (refused_by)
                return con_fail(CON_EXIT_FAILURE,
                                "cancel: %s refused to cancel task %s: only its submitter, root and holders of the "
                                "policy's cancel grant may cancel it", refused_by, id);
        return con_fail(CON_EXIT_FAILURE, "cancel: no agent knows a task '%s' (see 'con tasks')", id);
}

/* ---- run ---- */

static const char run_usage[] =
        "Usage: con run AGENT [--timeout SEC] [--config FILE]\n"
        "\n"
        "Run AGENT's queue in the foreground: start the agent (bus activation) if it is not\n"
        "running and wait until its queue is empty, printing each task as it finishes. Agents work\n"
        "through their queues by themselves; this is the original's 'con run' for scripts that want\n"
        "to wait for an agent to be idle.\n"
        "\n"
        "Exit status: 0 the queue is empty, 1 the agent is not available or --timeout passed,\n"
        "2 usage error, 4 invalid configuration.\n";

int verb_run(int argc, char *argv[]) {
        _cleanup_(con_config_freep) ConConfig *config = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *bn = NULL;
        Common c = {};
        int r;

        r = parse_common(argc, argv, "run", run_usage, false, &c);
        if (r <= 0)
                return r < 0 ? CON_EXIT_USAGE : CON_EXIT_OK;
        if (argc - optind != 1)
                return con_fail(CON_EXIT_USAGE, "run: give exactly one AGENT (see 'con run --help')");
        const char *name = argv[optind];
        if (load_config(&c, &config) < 0)
                return CON_EXIT_CONFIG;
        if (!con_config_find_agent(config, name))
                return con_fail(CON_EXIT_USAGE, "run: no agent '%s' in %s (see 'con agents')", name, c.config);
        if (con_agent_bus_name(name, &bn) < 0)
                return CON_EXIT_USAGE;
        if (open_bus(&bus) < 0)
                return CON_EXIT_FAILURE;
        r = start_service(bus, bn, &e);
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "run: cannot start agent %s (%s): %s", name, bn, e.message ?: strerror(-r));

        uint64_t end = c.timeout_usec ? con_now(CLOCK_MONOTONIC) + c.timeout_usec : UINT64_MAX, last_done = UINT64_MAX;
        for (;;) {
                _cleanup_(agent_info_done) AgentInfo info = {};
                r = agent_properties(bus, bn, &info);
                if (r < 0)
                        return con_fail(CON_EXIT_FAILURE, "run: cannot read the state of %s: %s", name, strerror(-r));
                uint64_t done = info.completed + info.failed;
                if (last_done != UINT64_MAX && done != last_done)
                        printf("%s: %" PRIu64 " finished, %u queued\n", name, done, info.queue);
                last_done = done;
                if (info.queue == 0 && isempty(info.current)) {
                        printf("%s: queue empty (%s)\n", name, strempty(info.state));
                        return CON_EXIT_OK;
                }
                if (con_now(CLOCK_MONOTONIC) >= end)
                        return con_fail(CON_EXIT_FAILURE, "run: %s still has %u queued task(s) after --timeout", name,
                                        info.queue);
                usleep(200 * 1000);
        }
}

/* ---- route-inbox ---- */

static const char route_usage[] =
        "Usage: con route-inbox [--timeout SEC] [--config FILE]\n"
        "\n"
        "One pass of the router: deliver every *.task file now in /srv/con/inbox (to the\n"
        "concierge) and in the agents' inboxes, wait for the agents to acknowledge, then exit\n"
        "(con-routerd --once). Bad files go to /srv/con/rejected. Needs root.\n"
        "\n"
        "Exit status: 0 all delivered or rejected, 1 some files stay (agent unavailable),\n"
        "2 usage error, 3 not root.\n";

int verb_route_inbox(int argc, char *argv[]) {
        Common c = {};
        char timeout[32];
        int r;

        r = parse_common(argc, argv, "route-inbox", route_usage, false, &c);
        if (r <= 0)
                return r < 0 ? CON_EXIT_USAGE : CON_EXIT_OK;
        if (optind < argc)
                return con_fail(CON_EXIT_USAGE, "route-inbox: unexpected argument '%s'", argv[optind]);
        if (geteuid() != 0)
                return con_fail(CON_EXIT_NOT_ROOT, "route-inbox: needs root (it reads every agent's inbox)");
        snprintf(timeout, sizeof timeout, "%" PRIu64, c.timeout_usec ? c.timeout_usec / USEC_PER_SEC : 60);
        r = con_run_command((char *[]) { (char *) ROUTERD_PATH, (char *) "--once", (char *) "--config", (char *) c.config,
                                     (char *) "--timeout", timeout, NULL });
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "route-inbox: cannot run " ROUTERD_PATH ": %s", strerror(-r));
        return r == 0 ? CON_EXIT_OK : CON_EXIT_FAILURE;
}

/* ---- audit ---- */

static const char audit_usage[] =
        "Usage: con audit [verify] [--lines N] [--json] [--dir DIR]\n"
        "\n"
        "Without 'verify': print the last N (default 20) records of the audit trail\n"
        "DIR/audit.jsonl (default " CON_AUDIT_DIR_DEFAULT "); --json prints them as JSON lines.\n"
        "'verify': check the hash chain, sequence numbers and head file. Records carry ids, agents,\n"
        "senders and outcomes, never task text.\n"
        "\n"
        "Exit status: 0 printed / chain intact, 1 chain broken (the first bad record is named)\n"
        "or the log cannot be read, 2 usage error.\n";

static void print_record(const char *line) {
        _cleanup_(cJSON_Deletep) cJSON *o = cJSON_Parse(line);
        if (!cJSON_IsObject(o)) {
                printf("(unreadable record) %s\n", line);
                return;
        }
        const char *keys[] = { "time", "service", "event" };
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                cJSON *v = cJSON_GetObjectItemCaseSensitive(o, keys[i]);
                printf("%s%s", i ? " " : "", cJSON_IsString(v) ? v->valuestring : "-");
        }
        cJSON *it;
        cJSON_ArrayForEach(it, o) {
                if (streq(it->string, "time") || streq(it->string, "service") || streq(it->string, "event") ||
                    streq(it->string, "prev") || streq(it->string, "hash"))
                        continue;
                if (cJSON_IsString(it))
                        printf(" %s=%s", it->string, it->valuestring);
                else if (cJSON_IsNumber(it))
                        printf(" %s=%.0f", it->string, it->valuedouble);
        }
        putchar('\n');
}

int verb_audit(int argc, char *argv[]) {
        Common c = {};
        int r;

        r = parse_common(argc, argv, "audit", audit_usage, true, &c);
        if (r <= 0)
                return r < 0 ? CON_EXIT_USAGE : CON_EXIT_OK;
        const char *dir = c.dir ?: CON_AUDIT_DIR_DEFAULT;
        if (optind < argc && streq(argv[optind], "verify")) {
                if (argc - optind > 1)
                        return con_fail(CON_EXIT_USAGE, "audit verify: unexpected argument '%s'", argv[optind + 1]);
                ConAuditVerify v = {};
                r = con_audit_verify(dir, &v);
                if (c.json) {
                        _cleanup_(cJSON_Deletep) cJSON *o = cJSON_CreateObject();
                        cJSON_AddBoolToObject(o, "valid", r >= 0);
                        con_json_add_u64(o, "records", v.records);
                        con_json_add_u64(o, "last_seq", v.last_seq);
                        if (r < 0) {
                                con_json_add_u64(o, "bad_line", v.bad_line);
                                con_json_add_u64(o, "bad_seq", v.bad_seq);
                                cJSON_AddStringToObject(o, "reason", r == -EBADMSG ? v.reason : strerror(-r));
                        }
                        print_json(o);
                }
                if (r == -ENOENT)
                        return con_fail(CON_EXIT_FAILURE, "audit verify: no audit log in %s", dir);
                if (r == -EBADMSG)
                        return con_fail(CON_EXIT_FAILURE, "audit verify: %s/%s is broken at line %" PRIu64
                                        " (record seq %" PRIu64 "): %s; %" PRIu64 " records before it are intact",
                                        dir, CON_AUDIT_LOG_NAME, v.bad_line, v.bad_seq, v.reason, v.records);
                if (r < 0)
                        return con_fail(CON_EXIT_FAILURE, "audit verify: cannot read %s/%s: %s", dir,
                                        CON_AUDIT_LOG_NAME, strerror(-r));
                if (!c.json)
                        printf("%s/%s: chain intact, %" PRIu64 " records, last seq %" PRIu64 "\n", dir,
                               CON_AUDIT_LOG_NAME, v.records, v.last_seq);
                return CON_EXIT_OK;
        }
        if (optind < argc)
                return con_fail(CON_EXIT_USAGE, "audit: unknown argument '%s' (only 'verify'; see 'con audit --help')",
                                argv[optind]);

        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "%s/%s", dir, CON_AUDIT_LOG_NAME) < 0)
                return CON_EXIT_FAILURE;
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return con_fail(CON_EXIT_FAILURE, "audit: cannot open %s: %m", path);
        /* A ring of the last N lines. */
        _cleanup_strv_free_ char **ring = calloc(c.lines + 1, sizeof(char *));
        if (!ring)
                return CON_EXIT_FAILURE;
        size_t n = 0;
        char *line = NULL;
        size_t cap = 0;
        ssize_t l;
        while ((l = getline(&line, &cap, f)) >= 0) {
                if (l > 0 && line[l - 1] == '\n')
                        line[l - 1] = 0;
                free(ring[n % c.lines]);
                ring[n % c.lines] = strdup(line);
                n++;
        }
        free(line);
        size_t first = n > c.lines ? n - c.lines : 0;
        for (size_t i = first; i < n; i++) {
                const char *s = ring[i % c.lines];
                if (!s)
                        continue;
                if (c.json)
                        puts(s);
                else
                        print_record(s);
        }
        return CON_EXIT_OK;
}
