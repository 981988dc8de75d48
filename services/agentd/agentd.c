/* SPDX-License-Identifier: MIT */
/* con-agentd: one agent of the conspiracy on the system bus (docs/AGENT.md). */
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>

#include "agent-service.h"
#include "cgroup-util.h"
#include "con-paths.h"
#include "errors.h"
#include "macro.h"
#include "log.h"
#include "names.h"
#include "service.h"
#include "user-util.h"

#define SANE_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define LOCK_TIMEOUT (10 * USEC_PER_SEC)
/* How long the start waits for a dead instance's session processes to die (SIGKILL: at once). */
#define REAP_TIMEOUT (5 * USEC_PER_SEC)

static void help(void);
static ConService svc = { .name = "con-agentd", .help = help, .introspect = agent_introspect_xml };
static const char *arg_agent;
static const char *arg_config = CON_CONFIG_PATH;
static const char *arg_data_dir;
static const char *arg_state_dir;
static const char *arg_audit_dir = CON_SRV_DIR "/logs/audit";
static bool arg_allow_any_user;
static bool arg_no_authz;

static void help(void) {
        printf("con-agentd --agent NAME [OPTIONS]\n\n"
               "Serves one agent of the conspiracy as org.conspiracy.<Name> on the system bus.\n"
               "Started by D-Bus activation or by con-agent@NAME.service as root; its sessions run as\n"
               "the user a-NAME, each in its own cgroup (docs/SECURITY.md).\n\n"
               "  -a --agent NAME          The agent to serve\n"
               "  -c --config FILE         The configuration (default " CON_CONFIG_PATH ")\n"
               "     --data-dir DIR        The agent's directory (default " CON_SRV_DIR "/agents/NAME)\n"
               "     --state-dir DIR       The contract service's markers (default " CON_SRV_DIR "/state)\n"
               "     --audit-dir DIR       The audit log's folder (default " CON_SRV_DIR "/logs/audit)\n"
               "     --allow-any-user      Run as any user; sessions keep that identity when a-NAME is\n"
               "                           missing or the service is not root (tests only)\n"
               "     --no-authz            Do not ask polkit: every caller is allowed (benchmarks only)\n"
               CON_SERVICE_HELP);
}

/* Returns 1 to go on, 0 to exit successfully, -EINVAL on a usage error (already reported). */
static int parse_argv(int argc, char **argv) {
        enum { ARG_DATA_DIR = 0x100, ARG_STATE_DIR, ARG_AUDIT_DIR, ARG_ALLOW_ANY_USER, ARG_NO_AUTHZ };
        static const struct option options[] = {
                CON_SERVICE_OPTIONS,
                { "agent",          required_argument, NULL, 'a'                },
                { "config",         required_argument, NULL, 'c'                },
                { "data-dir",       required_argument, NULL, ARG_DATA_DIR       },
                { "state-dir",      required_argument, NULL, ARG_STATE_DIR      },
                { "audit-dir",      required_argument, NULL, ARG_AUDIT_DIR      },
                { "allow-any-user", no_argument,       NULL, ARG_ALLOW_ANY_USER },
                { "no-authz",       no_argument,       NULL, ARG_NO_AUTHZ       },
                {}
        };
        int c, r;
        while ((c = getopt_long(argc, argv, "ha:c:", options, NULL)) >= 0)
                switch (c) {
                case 'a':
                        arg_agent = optarg;
                        break;
                case 'c':
                        arg_config = optarg;
                        break;
                case ARG_DATA_DIR:
                        arg_data_dir = optarg;
                        break;
                case ARG_STATE_DIR:
                        arg_state_dir = optarg;
                        break;
                case ARG_AUDIT_DIR:
                        arg_audit_dir = optarg;
                        break;
                case ARG_ALLOW_ANY_USER:
                        arg_allow_any_user = true;
                        break;
                case ARG_NO_AUTHZ:
                        arg_no_authz = true;
                        break;
                default:
                        r = con_service_parse_option(&svc, c, optarg);
                        if (r <= 0)
                                return r;
                }
        r = con_service_no_arguments(&svc, argc, argv, optind);
        if (r <= 0)
                return r;
        if (!arg_agent) {
                svc.usage_error = true;
                return log_error_errno(-EINVAL, "--agent NAME is required (see --help)");
        }
        ConNameProblem p = con_agent_name_check(arg_agent);
        if (p != CON_NAME_OK) {
                svc.usage_error = true;
                return log_error_errno(-EINVAL, "--agent '%s': %s", arg_agent, con_name_problem_to_string(p));
        }
        return 1;
}

typedef struct SessionUser {
        ConSessionUser u;
        char *name;
        gid_t *groups;
        bool set;
} SessionUser;

static void session_user_done(SessionUser *s) {
        free(s->name);
        free(s->groups);
}

/* The service runs as root and keeps its state to itself; sessions run as a-NAME (with its
 * supplementary groups, read once here). */
static int check_user(SessionUser *ret) {
        _cleanup_free_ char *want = NULL;
        if (con_agent_user(arg_agent, &want) < 0)
                return -ENOMEM;
        if (geteuid() != 0) {
                if (arg_allow_any_user)
                        return 0; /* tests: sessions keep the service's identity */
                return log_error_errno(-EPERM, "Must run as root (User=root in the activation file and the unit): "
                                       "it keeps the agent's queue and results where %s cannot reach them and "
                                       "starts each session as %s", want, want);
        }
        struct passwd *pw = getpwnam(want);
        if (!pw) {
                if (arg_allow_any_user) {
                        log_warning("The user %s does not exist: sessions run as root (--allow-any-user, "
                                    "tests only)", want);
                        return 0;
                }
                return log_error_errno(-ESRCH, "The user %s of agent '%s' does not exist (con bootstrap creates it)",
                                       want, arg_agent);
        }
        if (pw->pw_uid == 0) {
                return log_error_errno(-EPERM, "The user %s has uid 0; refusing to run its sessions as root", want);
        }
        size_t n;
        int r = con_user_gids(want, pw->pw_gid, &ret->groups, &n);
        if (r < 0)
                return log_error_errno(r, "Cannot read the groups of %s: %m", want);
        ret->name = TAKE_PTR(want);
        ret->u = (ConSessionUser) {
                .name = ret->name, .uid = pw->pw_uid, .gid = pw->pw_gid, .groups = ret->groups, .n_groups = n,
        };
        ret->set = true;
        return 0;
}

/* CGROUP/con-NAME below the service's own cgroup (its delegated subtree under systemd), or NULL
 * with a logged reason: then sessions are contained by their process group only. */
static char *agent_cgroup_dir(void) {
        _cleanup_free_ char *own = NULL;
        char *dir = NULL;
        int r = con_cgroup_own_dir(&own);
        if (r < 0) {
                log_warning("No cgroup v2 (%s): sessions are contained by their process group only; a process "
                            "that leaves it survives Cancel", r == -ENOMEDIUM ? "no cgroup2 mount" : strerror(-r));
                return NULL;
        }
        if (asprintf(&dir, "%s/con-%s", own, arg_agent) < 0)
                return NULL;
        if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
                log_warning("Cannot create the cgroup %s (%m): sessions are contained by their process group "
                            "only; a process that leaves it survives Cancel", dir);
                free(dir);
                return NULL;
        }
        return dir;
}

static int run(int argc, char **argv) {
        _cleanup_(agent_context_freep) AgentContext *c = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(session_user_done) SessionUser su = {};
        _cleanup_free_ char *cgroup_dir = NULL;
        sigset_t ss;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;
        r = check_user(&su);
        if (r < 0)
                return r;

        /* Bus activation gives an almost empty environment. */
        if (!getenv("PATH"))
                (void) setenv("PATH", SANE_PATH, 1);
        (void) umask(0077);

        ConConfig *config = NULL;
        _cleanup_(con_error_detail_done) ConErrorDetail cerr = {};
        r = con_config_load(arg_config, &config, &cerr);
        if (r < 0) {
                _cleanup_free_ char *msg = con_error_detail_format(&cerr);
                return log_error_errno(r, "%s", msg ?: strerror(-r));
        }

        /* SIGTERM and SIGINT stop gracefully (running sessions get a grace period): the service
         * handles them itself. */
        sigemptyset(&ss);
        sigaddset(&ss, SIGCHLD);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGINT);
        (void) sigprocmask(SIG_BLOCK, &ss, NULL);

        r = con_service_start(&svc, CON_SERVICE_OWN_SIGNALS);
        if (r < 0) {
                con_config_free(config);
                return r;
        }

        cgroup_dir = agent_cgroup_dir();
        AgentContextOptions o = {
                .session_user = su.set ? &su.u : NULL,
                .cgroup_dir = cgroup_dir,
                .agent = arg_agent,
                .data_dir = arg_data_dir,
                .state_dir = arg_state_dir,
                .audit_dir = arg_audit_dir,
                .lock_timeout_usec = LOCK_TIMEOUT,
                .no_authz = arg_no_authz,
        };
        _cleanup_free_ char *emsg = NULL;
        r = agent_context_new(svc.event, config, &o, &c, &emsg);
        if (r < 0) {
                con_config_free(config);
                return log_error_errno(r, "%s", emsg ?: strerror(-r));
        }

        /* A quarantined agent never takes its name: the marker stays until con release. */
        (void) agent_context_watch_state(c);
        if (c->quarantined)
                return log_error_errno(-EKEYREVOKED, "Quarantined: %s (marker %s/quarantine/%s; con release %s lifts "
                                       "it); not taking the bus name", strempty(c->quarantine_reason), c->state_dir,
                                       arg_agent, arg_agent);
        if (arg_no_authz)
                log_warning("--no-authz: polkit is not asked, every caller may do everything (benchmarks only)");

        /* Objects first, then the name: no call can arrive for an object that is not there yet. */
        r = agent_context_add_bus(c, svc.bus);
        if (r < 0)
                return log_error_errno(r, "Cannot register %s: %m", CON_AGENT_PATH);
        r = agent_context_enable_authz(c, svc.bus);
        if (r < 0)
                return log_error_errno(r, "Cannot set up authorization (polkit): %m");
        r = agent_context_install_signals(c);
        if (r < 0)
                return log_error_errno(r, "Cannot handle SIGTERM and SIGINT: %m");
        r = agent_context_request_name(c, &error);
        if (r < 0)
                /* Fail at once: an activating caller otherwise waits for the bus timeout. */
                return log_error_errno(r, "Cannot take the bus name %s: %m%s", strempty(c->bus_name),
                                       r == -EEXIST ? " (another process owns it)" :
                                       r == -EACCES ? " (the bus policy /etc/dbus-1/system.d/org.conspiracy.conf "
                                       "does not allow this user to own it)" : "");
        /* Sessions a previous instance left running when it died (SIGKILL, a crash; under systemd
         * the unit's stop kills them first): their tasks are queued again by the replay, so the
         * old processes must not go on as the agent's user. Safe here: this process holds the
         * queue lock, so no live instance owns a session. */
        if (c->cgroup_fd >= 0) {
                r = con_cgroup_reap_children(c->cgroup_fd, "session-", REAP_TIMEOUT);
                if (r > 0)
                        log_notice("Killed and removed %i session cgroup(s) a previous instance left in %s", r,
                                   cgroup_dir);
                else if (r < 0)
                        log_warning_errno(r, "Cannot remove every session cgroup a previous instance left in %s: %m",
                                          cgroup_dir);
        }
        r = agent_context_start(c);
        if (r < 0)
                return log_error_errno(r, "Cannot start the queue: %m");
        log_info("Agent %s ready as %s; sessions run as %s in %s", arg_agent, c->bus_name,
                 su.set ? su.name : "the service's user", cgroup_dir ?: "the service's cgroup (process groups only)");
        r = con_service_loop(&svc, "Serving");
        return r < 0 ? r : 0;
}

CON_SERVICE_MAIN(svc, run)
