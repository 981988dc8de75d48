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
#include "names.h"

#define SANE_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define LOCK_TIMEOUT (10 * USEC_PER_SEC)

static const char *arg_agent;
static const char *arg_config = CON_CONFIG_PATH;
static const char *arg_data_dir;
static const char *arg_state_dir;
static bool arg_allow_any_user;
static bool arg_no_authz;

static void help(void) {
        printf("con-agentd --agent NAME [OPTIONS]\n\n"
               "Serves one agent of the conspiracy as org.conspiracy.<Name> on the system bus.\n"
               "Started by D-Bus activation or by con-agent@NAME.service as root; its sessions run as\n"
               "the user a-NAME, each in its own cgroup (docs/SECURITY.md).\n\n"
               "  -h --help            Show this help\n"
               "     --version         Show the version\n"
               "  -a --agent NAME      The agent to serve\n"
               "  -c --config FILE     The configuration (default " CON_CONFIG_PATH ")\n"
               "     --data-dir DIR    The agent's directory (default " CON_SRV_DIR "/agents/NAME)\n"
               "     --state-dir DIR   The contract service's markers (default " CON_SRV_DIR "/state)\n"
               "     --allow-any-user  Run as any user; sessions keep that identity when a-NAME is\n"
               "                       missing or the service is not root (tests only)\n"
               "     --no-authz        Do not ask polkit: every caller is allowed (benchmarks only)\n"
               "     --bus-introspect  Print the org.conspiracy.Agent1 interface XML and exit\n");
}

/* Returns 1 to go on, 0 to exit successfully, -EINVAL on a usage error (already reported). */
static int parse_argv(int argc, char **argv) {
        enum { ARG_VERSION = 0x100, ARG_DATA_DIR, ARG_STATE_DIR, ARG_ALLOW_ANY_USER, ARG_NO_AUTHZ, ARG_BUS_INTROSPECT };
        static const struct option options[] = {
                { "help",           no_argument,       NULL, 'h'                },
                { "version",        no_argument,       NULL, ARG_VERSION        },
                { "agent",          required_argument, NULL, 'a'                },
                { "config",         required_argument, NULL, 'c'                },
                { "data-dir",       required_argument, NULL, ARG_DATA_DIR       },
                { "state-dir",      required_argument, NULL, ARG_STATE_DIR      },
                { "allow-any-user", no_argument,       NULL, ARG_ALLOW_ANY_USER },
                { "no-authz",       no_argument,       NULL, ARG_NO_AUTHZ       },
                { "bus-introspect", no_argument,       NULL, ARG_BUS_INTROSPECT },
                {}
        };
        int c;
        while ((c = getopt_long(argc, argv, "ha:c:", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("con-agentd %s\n", CON_VERSION);
                        return 0;
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
                case ARG_ALLOW_ANY_USER:
                        arg_allow_any_user = true;
                        break;
                case ARG_NO_AUTHZ:
                        arg_no_authz = true;
                        break;
                case ARG_BUS_INTROSPECT: {
                        _cleanup_free_ char *xml = NULL;
                        int r = agent_introspect_xml(&xml);
                        if (r < 0) {
                                fprintf(stderr, "con-agentd: cannot generate the introspection XML: %s\n",
                                        strerror(-r));
                                return r;
                        }
                        fputs(xml, stdout);
                        return 0;
                }
                default:
                        return -EINVAL;
                }
        if (optind < argc) {
                fprintf(stderr, "con-agentd: unexpected argument '%s' (see --help)\n", argv[optind]);
                return -EINVAL;
        }
        if (!arg_agent) {
                fprintf(stderr, "con-agentd: --agent NAME is required (see --help)\n");
                return -EINVAL;
        }
        ConNameProblem p = con_agent_name_check(arg_agent);
        if (p != CON_NAME_OK) {
                fprintf(stderr, "con-agentd: --agent '%s': %s\n", arg_agent, con_name_problem_to_string(p));
                return -EINVAL;
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
                fprintf(stderr, "con-agentd: must run as root (User=root in the activation file and the unit): "
                        "it keeps the agent's queue and results where %s cannot reach them and starts each "
                        "session as %s\n", want, want);
                return -EPERM;
        }
        struct passwd *pw = getpwnam(want);
        if (!pw) {
                if (arg_allow_any_user) {
                        fprintf(stderr, "con-agentd: WARNING: the user %s does not exist: sessions run as root "
                                "(--allow-any-user, tests only)\n", want);
                        return 0;
                }
                fprintf(stderr, "con-agentd: the user %s of agent '%s' does not exist (con bootstrap creates it)\n",
                        want, arg_agent);
                return -ESRCH;
        }
        if (pw->pw_uid == 0) {
                fprintf(stderr, "con-agentd: the user %s has uid 0; refusing to run its sessions as root\n", want);
                return -EPERM;
        }
        int n = 32;
        for (;;) {
                gid_t *g = reallocarray(ret->groups, (size_t) n, sizeof(gid_t));
                if (!g)
                        return -ENOMEM;
                ret->groups = g;
                int want_n = n;
                if (getgrouplist(want, pw->pw_gid, ret->groups, &want_n) >= 0) {
                        n = want_n;
                        break;
                }
                if (want_n <= n || want_n > 65536)
                        return -E2BIG;
                n = want_n;
        }
        ret->name = TAKE_PTR(want);
        ret->u = (ConSessionUser) {
                .name = ret->name, .uid = pw->pw_uid, .gid = pw->pw_gid, .groups = ret->groups, .n_groups = (size_t) n,
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
                fprintf(stderr, "con-agentd: no cgroup v2 (%s): sessions are contained by their process group only; "
                        "a process that leaves it survives Cancel\n",
                        r == -ENOMEDIUM ? "no cgroup2 mount" : strerror(-r));
                return NULL;
        }
        if (asprintf(&dir, "%s/con-%s", own, arg_agent) < 0)
                return NULL;
        if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
                fprintf(stderr, "con-agentd: cannot create the cgroup %s (%m): sessions are contained by their "
                        "process group only; a process that leaves it survives Cancel\n", dir);
                free(dir);
                return NULL;
        }
        return dir;
}

static int run(int argc, char **argv) {
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
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
        (void) con_bus_errors_register();

        ConConfig *config = NULL;
        _cleanup_(con_config_error_done) ConConfigError cerr = {};
        r = con_config_load(arg_config, &config, &cerr);
        if (r < 0) {
                _cleanup_free_ char *msg = con_config_error_format(&cerr);
                fprintf(stderr, "con-agentd: %s\n", msg ?: strerror(-r));
                return r;
        }

        sigemptyset(&ss);
        sigaddset(&ss, SIGCHLD);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGINT);
        (void) sigprocmask(SIG_BLOCK, &ss, NULL);

        r = sd_event_default(&event);
        if (r < 0)
                return r;

        cgroup_dir = agent_cgroup_dir();
        AgentContextOptions o = {
                .session_user = su.set ? &su.u : NULL,
                .cgroup_dir = cgroup_dir,
                .agent = arg_agent,
                .data_dir = arg_data_dir,
                .state_dir = arg_state_dir,
                .lock_timeout_usec = LOCK_TIMEOUT,
                .no_authz = arg_no_authz,
        };
        _cleanup_free_ char *emsg = NULL;
        r = agent_context_new(event, config, &o, &c, &emsg);
        if (r < 0) {
                con_config_free(config);
                fprintf(stderr, "con-agentd: %s\n", emsg ?: strerror(-r));
                return r;
        }

        /* A quarantined agent never takes its name: the marker stays until con release. */
        (void) agent_context_watch_state(c);
        if (c->quarantined) {
                fprintf(stderr, "con-agentd: quarantined: %s (marker %s/quarantine/%s; con release %s lifts it); "
                        "not taking the bus name\n", strempty(c->quarantine_reason), c->state_dir, arg_agent,
                        arg_agent);
                return -EKEYREVOKED;
        }
        if (arg_no_authz)
                fprintf(stderr, "con-agentd: WARNING: --no-authz: polkit is not asked, every caller may do "
                        "everything (benchmarks only)\n");

        r = sd_bus_default_system(&bus);
        if (r < 0) {
                fprintf(stderr, "con-agentd: cannot connect to the system bus: %s\n", strerror(-r));
                return r;
        }
        /* Objects first, then the name: no call can arrive for an object that is not there yet. */
        r = agent_context_add_bus(c, bus);
        if (r < 0) {
                fprintf(stderr, "con-agentd: cannot register %s: %s\n", CON_AGENT_PATH, strerror(-r));
                return r;
        }
        r = sd_bus_attach_event(bus, event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return r;
        r = agent_context_enable_authz(c, bus);
        if (r < 0) {
                fprintf(stderr, "con-agentd: cannot set up authorization (polkit): %s\n", strerror(-r));
                return r;
        }
        r = agent_context_install_signals(c);
        if (r < 0)
                return r;
        r = agent_context_request_name(c, &error);
        if (r < 0) {
                /* Fail at once: an activating caller otherwise waits for the bus timeout. */
                fprintf(stderr, "con-agentd: cannot take the bus name %s: %s%s\n", strempty(c->bus_name),
                        strerror(-r), r == -EEXIST ? " (another process owns it)" :
                        r == -EACCES ? " (the bus policy /etc/dbus-1/system.d/org.conspiracy.conf does not "
                        "allow this user to own it)" : "");
                return r;
        }
        r = agent_context_start(c);
        if (r < 0)
                return r;
        fprintf(stderr, "con-agentd: agent %s ready as %s; sessions run as %s in %s\n", arg_agent, c->bus_name,
                su.set ? su.name : "the service's user", cgroup_dir ?: "the service's cgroup (process groups only)");
        r = sd_event_loop(event);
        if (r < 0) {
                fprintf(stderr, "con-agentd: %s\n", strerror(-r));
                return r;
        }
        return 0;
}

int main(int argc, char **argv) {
        int r = run(argc, argv);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
