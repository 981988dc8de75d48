/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <cJSON.h>
#include <systemd/sd-bus.h>

#include "con-paths.h"
#include "bus-util.h"
#include "config.h"
#include "errors.h"
#include "json-util.h"
#include "macro.h"
#include "names.h"
#include "task.h"
#include "time-util.h"

/* Exit codes, documented in --help and docs/CLI.md. */
enum {
        EXIT_DONE = 0,
        EXIT_TASK_FAILED = 1,
        EXIT_USAGE = 2,
        EXIT_REFUSED = 3,
        EXIT_TIMEOUT = 4,
        EXIT_UNAVAILABLE = 5,
};

static const char *arg_to = "concierge";
/* --to AGENT@HOST: through the mesh gateway (docs/MULTIHOST.md). The object and interface the
 * task goes to: an agent's, or the gateway's. */
static bool arg_remote = false;
static const char *obj_path = CON_AGENT_PATH;
static const char *obj_interface = CON_AGENT_INTERFACE;
static bool arg_wait = true;
static uint64_t arg_timeout_usec = 0; /* 0: wait as long as it takes */
static bool arg_json = false;
static int arg_progress = -1; /* -1: when stderr is a terminal */
static bool arg_scheduled = false;
static const char *arg_config = CON_CONFIG_PATH;
static const char *arg_id = NULL;
static const char *arg_conversation = NULL; /* NULL: a new conversation */
static int arg_priority = -1;           /* -1: the default (5) */
static uint64_t arg_deadline_usec = 0;  /* CLOCK_REALTIME usec, 0: none */

typedef struct Waiter {
        const char *task_id;
        bool completed;
        bool progress_shown;    /* a progress line on the terminal is to be cleared */
} Waiter;

static void help(void) {
        printf("Usage: con-send [OPTIONS] [MESSAGE... | -]\n"
               "\n"
               "Submit a task to an agent over the system bus and print its answer.\n"
               "The words of MESSAGE are joined with spaces; '-' or no MESSAGE reads the task from\n"
               "standard input. The sender of the task is you (your user).\n"
               "\n"
               "  --to AGENT        Agent to send to (default: concierge); AGENT@HOST: an agent of\n"
               "                    another host of the mesh, through this host's mesh gateway\n"
               "  --id ID           Send under this task id (default: the agent makes a new one).\n"
               "                    Sending again with the same ID does not queue a second task;\n"
               "                    an ID another user already used is refused (exit 3)\n"
               "  --no-wait         Print the task id and return at once\n"
               "  --timeout SEC     Stop waiting after SEC seconds (default: wait until the task ends;\n"
               "                    the task keeps running, see 'con task ID')\n"
               "  --json            Print the result as one line of JSON instead of the text:\n"
               "                    {\"task_id\",\"agent\",\"status\",\"text\",\"truncated\",\"replaced\",\"size\"}\n"
               "  --progress        Show the task's steps on stderr (TaskProgress; the default on a terminal)\n"
               "  --no-progress     Do not\n"
               "  --scheduled       Send the agent's scheduled task (cron_task of --to in the config,\n"
               "                    default \"/status\") instead of MESSAGE; implies --no-wait.\n"
               "                    Used by the generated con-cron-AGENT timers\n"
               "  --config PATH     Configuration for --scheduled (default " CON_CONFIG_PATH ")\n"
               "  --continue[=ID]   Continue your conversation ID with the agent (the id of the task that\n"
               "                    started it); without ID your latest one. Without this option every\n"
               "                    task starts a new conversation\n"
               "  --conversation ID The same as --continue=ID\n"
               "  --priority N      Priority 0..9, higher runs first (default 5), as a .task file's\n"
               "  --deadline TIME   Fail the task if it has not started by TIME, an RFC 3339 timestamp\n"
               "                    (2026-12-01T10:00:00Z, 2026-12-01T11:00:00+01:00), as a .task file's;\n"
               "                    for AGENT@HOST the clocks of both hosts must agree\n"
               "  -h --help         Show this help\n"
               "     --version      Show the version\n"
               "\n"
               "Exit status:\n"
               "  0  the task is done (with --no-wait: it was accepted)\n"
               "  1  the task failed or was cancelled\n"
               "  2  usage error\n"
               "  3  refused: access denied, invalid task, or --id used by another user\n"
               "  4  timed out waiting for the task\n"
               "  5  the bus or the agent is not available\n");
}

static int parse_argv(int argc, char *argv[]) {
        enum { ARG_TO = 0x100, ARG_NO_WAIT, ARG_TIMEOUT, ARG_JSON, ARG_VERSION, ARG_SCHEDULED, ARG_CONFIG, ARG_ID,
               ARG_CONTINUE, ARG_CONVERSATION, ARG_PROGRESS, ARG_NO_PROGRESS, ARG_PRIORITY, ARG_DEADLINE };
        static const struct option options[] = {
                { "to", required_argument, NULL, ARG_TO },
                { "no-wait", no_argument, NULL, ARG_NO_WAIT },
                { "timeout", required_argument, NULL, ARG_TIMEOUT },
                { "json", no_argument, NULL, ARG_JSON },
                { "progress", no_argument, NULL, ARG_PROGRESS },
                { "no-progress", no_argument, NULL, ARG_NO_PROGRESS },
                { "scheduled", no_argument, NULL, ARG_SCHEDULED },
                { "config", required_argument, NULL, ARG_CONFIG },
                { "id", required_argument, NULL, ARG_ID },
                { "continue", optional_argument, NULL, ARG_CONTINUE },
                { "conversation", required_argument, NULL, ARG_CONVERSATION },
                { "priority", required_argument, NULL, ARG_PRIORITY },
                { "deadline", required_argument, NULL, ARG_DEADLINE },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                {}
        };
        int c;

        /* '+': options only before MESSAGE, so a message may contain words starting with '-'. */
        while ((c = getopt_long(argc, argv, "+h", options, NULL)) >= 0)
                switch (c) {
                case ARG_TO: {
                        const char *at = strrchr(optarg, '@');
                        _cleanup_free_ char *agent = at ? strndup(optarg, (size_t) (at - optarg)) : NULL;
                        if (at && !agent)
                                return -ENOMEM;
                        if (at && !con_mesh_host_valid(at + 1)) {
                                fprintf(stderr, "con-send: --to: '%s' is not a mesh host name (a-z, 0-9 and -, "
                                        "starting with a letter)\n", at + 1);
                                return -EINVAL;
                        }
                        ConNameProblem p = con_agent_name_check(agent ?: optarg);
                        if (p != CON_NAME_OK) {
                                fprintf(stderr, "con-send: --to: '%s' is not an agent name: %s\n", optarg,
                                        con_name_problem_to_string(p));
                                return -EINVAL;
                        }
                        arg_to = optarg;
                        arg_remote = at;
                        break;
                }
                case ARG_NO_WAIT:
                        arg_wait = false;
                        break;
                case ARG_TIMEOUT:
                        if (con_parse_duration(optarg, &arg_timeout_usec) < 0 || arg_timeout_usec == 0) {
                                fprintf(stderr, "con-send: --timeout: '%s' is not a duration (a positive number "
                                        "of seconds, or e.g. 90s, 5m)\n", optarg);
                                return -EINVAL;
                        }
                        break;
                case ARG_JSON:
                        arg_json = true;
                        break;
                case ARG_PROGRESS:
                        arg_progress = 1;
                        break;
                case ARG_NO_PROGRESS:
                        arg_progress = 0;
                        break;
                case ARG_SCHEDULED:
                        arg_scheduled = true;
                        arg_wait = false;
                        break;
                case ARG_CONFIG:
                        arg_config = optarg;
                        break;
                case ARG_ID:
                        if (!con_task_id_valid(optarg)) {
                                fprintf(stderr, "con-send: --id: '%s' is not a task id (1 to 128 characters "
                                        "A-Z a-z 0-9 . _ -, starting with a letter or digit, without '..')\n",
                                        optarg);
                                return -EINVAL;
                        }
                        arg_id = optarg;
                        break;
                case ARG_CONTINUE:
                case ARG_CONVERSATION:
                        arg_conversation = optarg ?: CON_CONVERSATION_LATEST;
                        if (!con_conversation_id_valid(arg_conversation)) {
                                fprintf(stderr, "con-send: --%s: '%s' is not a conversation id (the id of the "
                                        "task that started it)\n", c == ARG_CONTINUE ? "continue" : "conversation",
                                        arg_conversation);
                                return -EINVAL;
                        }
                        break;
                case ARG_PRIORITY: {
                        char *end = NULL;
                        errno = 0;
                        long p = strtol(optarg, &end, 10);
                        if (errno != 0 || end == optarg || *end || !con_task_priority_valid(p)) {
                                fprintf(stderr, "con-send: --priority: '%s' is not allowed; use a whole number "
                                        "from 0 to %d (higher runs first)\n", optarg, CON_TASK_PRIORITY_MAX);
                                return -EINVAL;
                        }
                        arg_priority = (int) p;
                        break;
                }
                case ARG_DEADLINE:
                        if (con_task_deadline_parse(optarg, strlen(optarg), &arg_deadline_usec) < 0) {
                                fprintf(stderr, "con-send: --deadline: '%s' is not an RFC 3339 timestamp; write "
                                        "it like 2026-12-01T10:00:00Z or 2026-12-01T11:00:00+01:00\n", optarg);
                                return -EINVAL;
                        }
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("con-send %s\n", CON_VERSION);
                        return 0;
                default:
                        fprintf(stderr, "con-send: see --help\n");
                        return -EINVAL;
                }
        return 1;
}

static int read_stdin(char **ret) {
        _cleanup_free_ char *buf = NULL;
        size_t len = 0, cap = 0;

        for (;;) {
                if (cap - len < 4096) {
                        cap = cap ? cap * 2 : 8192;
                        if (cap > CON_TASK_DEFAULT_MAX_SIZE * 16 + 8192)
                                return -EFBIG;
                        char *n = realloc(buf, cap + 1);
                        if (!n)
                                return -ENOMEM;
                        buf = n;
                }
                size_t k = fread(buf + len, 1, cap - len, stdin);
                len += k;
                if (k == 0) {
                        if (ferror(stdin))
                                return -EIO;
                        break;
                }
        }
        buf[len] = 0;
        if (strlen(buf) != len)
                return -EBADMSG;
        *ret = TAKE_PTR(buf);
        return 0;
}

static int exit_for_bus_error(const sd_bus_error *e, int r) {
        if (sd_bus_error_has_names(e, CON_ERROR_ACCESS_DENIED, SD_BUS_ERROR_ACCESS_DENIED, CON_ERROR_INVALID_TASK,
                                   CON_ERROR_TASK_TOO_LARGE, SD_BUS_ERROR_INVALID_ARGS, CON_ERROR_DUPLICATE_TASK,
                                   CON_ERROR_NO_SUCH_AGENT, CON_ERROR_NOT_CONFIGURED,
                                   SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED))
                return EXIT_REFUSED;
        if (!sd_bus_error_is_set(e) && (r == -EACCES || r == -EPERM))
                return EXIT_REFUSED;
        return EXIT_UNAVAILABLE;
}

/* TaskProgress(task_id, turn, phase): one line per step, or one line kept up to date on a terminal. */
static int on_progress(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Waiter *w = userdata;
        const char *id, *phase;
        uint32_t turn;
        if (sd_bus_message_read(m, "sus", &id, &turn, &phase) < 0 || !w->task_id || !streq(id, w->task_id))
                return 0;
        const char *what = streq(phase, "model") ? "waiting for the model" :
                           streq(phase, "tool") ? "running a tool" : "working";
        if (isatty(STDERR_FILENO)) {
                fprintf(stderr, "\r\033[K%s: turn %" PRIu32 ", %s", arg_to, turn, what);
                w->progress_shown = true;
        } else
                fprintf(stderr, "con-send: %s: turn %" PRIu32 ", %s\n", arg_to, turn, what);
        fflush(stderr);
        return 0;
}

static int on_completed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Waiter *w = userdata;
        const char *id, *sender, *status;
        if (sd_bus_message_read(m, "sss", &id, &sender, &status) < 0)
                return 0;
        if (streq(id, w->task_id))
                w->completed = true;
        return 0;
}

/* --json: the result object of docs/CLI.md, the same as 'con task ID --json' prints. */
static int print_result(const char *task_id, const char *status, const char *text, const ConResultInfo *info) {
        if (arg_json) {
                cJSON *o = cJSON_CreateObject();
                if (!o)
                        return -ENOMEM;
                if (!cJSON_AddStringToObject(o, "task_id", task_id) || !cJSON_AddStringToObject(o, "agent", arg_to) ||
                    !cJSON_AddStringToObject(o, "status", status) || !cJSON_AddStringToObject(o, "text", text) ||
                    !cJSON_AddBoolToObject(o, "truncated", info->truncated) ||
                    !cJSON_AddBoolToObject(o, "replaced", info->replaced) || !con_json_add_u64(o, "size", info->size)) {
                        cJSON_Delete(o);
                        return -ENOMEM;
                }
                char *s = cJSON_PrintUnformatted(o);
                cJSON_Delete(o);
                if (!s)
                        return -ENOMEM;
                puts(s);
                free(s);
                return 0;
        }
        if (streq_ptr(con_task_state_a2a(status), "completed")) {
                fputs(text, stdout);
                if (*text && text[strlen(text) - 1] != '\n')
                        fputc('\n', stdout);
        } else if (!con_task_state_is_final(status))
                puts(task_id);
        else
                fprintf(stderr, "con-send: task %s %s%s%s\n", task_id, status, *text ? ": " : "", text);
        return 0;
}

/* GetResultInfo: returns 1 and fills status/text/info when the task ended, 0 when it did not, or < 0. */
static int get_result(sd_bus *bus, const char *bus_name, const char *task_id, char **ret_status, char **ret_text,
                      ConResultInfo *ret_info, sd_bus_error *e) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *status, *text;
        int r;

        r = sd_bus_call_method(bus, bus_name, obj_path, obj_interface, "GetResultInfo", e, &reply, "s",
                               task_id);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "ss", &status, &text);
        if (r < 0)
                return r;
        *ret_info = (ConResultInfo) {};
        r = con_bus_read_result_info(reply, ret_info);
        if (r < 0)
                return r;
        if (!con_task_state_is_final(status))
                return 0;
        /* The A2A name, also from an agent of the previous release (done, cancelled). */
        *ret_status = strdup(con_task_state_a2a(status));
        *ret_text = strdup(text);
        if (!*ret_status || !*ret_text)
                return -ENOMEM;
        return 1;
}

/* --priority and --deadline, the same options for Deliver and the mesh gateway's Submit. */
static int append_task_options(sd_bus_message *m) {
        int r = 0;
        if (arg_priority >= 0)
                r = sd_bus_message_append(m, "{sv}", "priority", "y", (uint8_t) arg_priority);
        if (r >= 0 && arg_deadline_usec > 0)
                r = sd_bus_message_append(m, "{sv}", "deadline", "t", arg_deadline_usec);
        return r;
}

static int deliver(sd_bus *bus, const char *bus_name, const char *text, sd_bus_error *e, sd_bus_message **reply) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r = sd_bus_message_new_method_call(bus, &m, bus_name, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Deliver");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0)
                r = sd_bus_message_append(m, "{sv}", "text", "s", text);
        if (r >= 0 && arg_id)
                r = sd_bus_message_append(m, "{sv}", "id", "s", arg_id);
        if (r >= 0 && arg_conversation)
                r = sd_bus_message_append(m, "{sv}", "conversation", "s", arg_conversation);
        if (r >= 0)
                r = append_task_options(m);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return r;
        return sd_bus_call(bus, m, 0, e, reply);
}

/* Submit(to, text, options) of the mesh gateway: the task for AGENT@HOST. */
static int mesh_submit(sd_bus *bus, const char *text, sd_bus_error *e, sd_bus_message **reply) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r = sd_bus_message_new_method_call(bus, &m, CON_MESH_BUS_NAME, CON_MESH_PATH, CON_MESH_INTERFACE, "Submit");
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", arg_to, text);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && arg_id)
                r = sd_bus_message_append(m, "{sv}", "id", "s", arg_id);
        if (r >= 0)
                r = append_task_options(m);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return r;
        return sd_bus_call(bus, m, 0, e, reply);
}

/* The bus could not start the agent (D-Bus activation: "Launch helper exited with unknown return
 * code 1"). The service cannot pass its reason through the launch helper, so say what the most
 * common cause is when it is the cause: the configuration the service reads at start. */
static void explain_spawn_failure(const sd_bus_error *e) {
        _cleanup_(con_config_freep) ConConfig *c = NULL;
        _cleanup_(con_error_detail_done) ConErrorDetail cerr = {};
        int r = con_config_load(arg_config, &c, &cerr);
        if (r == -ENOMEM)
                return (void) fprintf(stderr, "con-send: agent '%s' could not be started: %s\n", arg_to, e->message);
        if (r < 0 && (r == -EACCES || r == -ENOENT || r == -EPERM))
                return (void) fprintf(stderr, "con-send: agent '%s' could not be started (%s); %s cannot be checked "
                                      "from here (%s): see the agent's log (the journal, or /srv/con/logs)\n", arg_to,
                                      e->message, arg_config, strerror(-r));
        if (r < 0) {
                _cleanup_free_ char *msg = con_error_detail_format(&cerr);
                return (void) fprintf(stderr, "con-send: agent '%s' could not be started: the configuration is "
                                      "invalid, %s\n(fix it and check it with 'con status'; the agents read "
                                      "it when they start)\n", arg_to, msg ?: strerror(-r));
        }
        if (!con_config_find_agent(c, arg_to))
                return (void) fprintf(stderr, "con-send: agent '%s' could not be started: there is no agent '%s' "
                                      "in %s (run 'con bootstrap' after changing the agents)\n", arg_to, arg_to,
                                      arg_config);
        fprintf(stderr, "con-send: agent '%s' could not be started (%s); %s is valid: see the agent's log (con "
                "logs, or the journal)\n", arg_to, e->message, arg_config);
}

int main(int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *match = NULL, *progress_match = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *text = NULL, *bus_name = NULL, *task_id = NULL, *status = NULL, *result = NULL;
        const char *id;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? EXIT_USAGE : EXIT_DONE;

        if (arg_scheduled) {
                _cleanup_(con_config_freep) ConConfig *c = NULL;
                _cleanup_(con_error_detail_done) ConErrorDetail cerr = {};
                if (optind < argc) {
                        fprintf(stderr, "con-send: --scheduled takes no MESSAGE (the text comes from the config)\n");
                        return EXIT_USAGE;
                }
                r = con_config_load(arg_config, &c, &cerr);
                if (r < 0) {
                        _cleanup_free_ char *msg = con_error_detail_format(&cerr);
                        fprintf(stderr, "con-send: %s\n", msg ?: strerror(-r));
                        return EXIT_USAGE;
                }
                const ConAgent *a = con_config_find_agent(c, arg_to);
                if (!a) {
                        fprintf(stderr, "con-send: --scheduled: no agent '%s' in %s\n", arg_to, arg_config);
                        return EXIT_USAGE;
                }
                text = strdup(a->cron_task ?: "/status");
                if (!text)
                        return EXIT_UNAVAILABLE;
        } else if (optind >= argc || (argc - optind == 1 && streq(argv[optind], "-"))) {
                r = read_stdin(&text);
                if (r < 0) {
                        fprintf(stderr, "con-send: cannot read the task from standard input: %s\n",
                                r == -EBADMSG ? "it contains a NUL byte (tasks are UTF-8 text)" :
                                r == -EFBIG ? "it is too large" : strerror(-r));
                        return r == -EBADMSG ? EXIT_REFUSED : EXIT_USAGE;
                }
        } else {
                size_t n = 0;
                for (int i = optind; i < argc; i++)
                        n += strlen(argv[i]) + 1;
                text = malloc(n + 1);
                if (!text)
                        return EXIT_UNAVAILABLE;
                text[0] = 0;
                for (int i = optind; i < argc; i++) {
                        if (i > optind)
                                strcat(text, " ");
                        strcat(text, argv[i]);
                }
        }
        if (isempty(text)) {
                fprintf(stderr, "con-send: the task is empty; give a MESSAGE or text on standard input\n");
                return EXIT_USAGE;
        }

        (void) con_bus_errors_register();
        if (arg_remote) {
                if (arg_conversation || arg_scheduled) {
                        fprintf(stderr, "con-send: --continue, --conversation and --scheduled are for agents of "
                                "this host, not %s\n", arg_to);
                        return EXIT_USAGE;
                }
                obj_path = CON_MESH_PATH;
                obj_interface = CON_MESH_INTERFACE;
                bus_name = strdup(CON_MESH_BUS_NAME);
                r = bus_name ? 0 : -ENOMEM;
        } else
                r = con_agent_bus_name(arg_to, &bus_name);
        if (r < 0)
                return EXIT_USAGE;
        r = sd_bus_open_system(&bus);
        if (r < 0) {
                fprintf(stderr, "con-send: cannot connect to the system bus: %s (is dbus-daemon running? try 'con up')\n",
                        strerror(-r));
                return EXIT_UNAVAILABLE;
        }

        Waiter w = {};
        ConResultInfo info = {};
        /* Subscribe before submitting, so the completion cannot slip by in between. */
        if (arg_wait) {
                r = sd_bus_match_signal(bus, &match, bus_name, obj_path, obj_interface, "TaskCompleted",
                                        on_completed, &w);
                if (r < 0) {
                        fprintf(stderr, "con-send: cannot subscribe to %s's TaskCompleted signal: %s\n", bus_name,
                                strerror(-r));
                        return EXIT_UNAVAILABLE;
                }
                /* Steps as they happen (no text in them); without them the wait is silent. */
                if (!arg_remote && (arg_progress > 0 || (arg_progress < 0 && isatty(STDERR_FILENO))))
                        (void) sd_bus_match_signal(bus, &progress_match, bus_name, CON_AGENT_PATH, CON_AGENT_INTERFACE,
                                                   "TaskProgress", on_progress, &w);
        }

        /* Without --id the agent makes the id (one that no task holds); with it, Deliver keeps it.
         * Submit takes only the text: Deliver's named arguments carry the id, the conversation, the
         * priority and the deadline. */
        if (arg_remote)
                r = mesh_submit(bus, text, &e, &reply);
        else if (arg_id || arg_conversation || arg_priority >= 0 || arg_deadline_usec > 0)
                r = deliver(bus, bus_name, text, &e, &reply);
        else
                r = sd_bus_call_method(bus, bus_name, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Submit", &e, &reply,
                                       "s", text);
        if (r < 0) {
                int ex = exit_for_bus_error(&e, r);
                if (sd_bus_error_has_name(&e, CON_ERROR_DUPLICATE_TASK))
                        fprintf(stderr, "con-send: task id '%s' is already used on agent '%s' by another sender; "
                                "send again with another --id (or without --id)\n", arg_id ?: "", arg_to);
                else if (e.name && startswith(e.name, "org.freedesktop.DBus.Error.Spawn."))
                        explain_spawn_failure(&e);
                else if (arg_remote && sd_bus_error_has_names(&e, SD_BUS_ERROR_SERVICE_UNKNOWN,
                                                              SD_BUS_ERROR_NAME_HAS_NO_OWNER))
                        fprintf(stderr, "con-send: the mesh gateway (%s) is not on the bus: does this host's "
                                "con.yaml have a mesh: section, and is the fabric up? (see 'con status')\n",
                                CON_MESH_BUS_NAME);
                else if (sd_bus_error_has_names(&e, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER))
                        fprintf(stderr, "con-send: agent '%s' is not available on the bus (%s): is it configured "
                                "and the fabric up? (see 'con status')\n", arg_to, bus_name);
                else
                        fprintf(stderr, "con-send: %s refused the task: %s\n", arg_to,
                                e.message ?: (e.name ?: strerror(-r)));
                return ex;
        }
        r = sd_bus_message_read(reply, "s", &id);
        if (r < 0 || !(task_id = strdup(id))) {
                fprintf(stderr, "con-send: %s sent an unexpected reply to %s\n", bus_name,
                        arg_id ? "Deliver" : "Submit");
                return EXIT_UNAVAILABLE;
        }
        w.task_id = task_id;

        if (!arg_wait) {
                r = print_result(task_id, "submitted", "", &(ConResultInfo) {});
                return r < 0 ? EXIT_UNAVAILABLE : EXIT_DONE;
        }

        uint64_t deadline = arg_timeout_usec > 0 ? con_now(CLOCK_MONOTONIC) + arg_timeout_usec : UINT64_MAX;
        for (bool checked = false;;) {
                int p = sd_bus_process(bus, NULL);
                if (p < 0) {
                        fprintf(stderr, "con-send: lost the system bus while waiting for task %s: %s\n", task_id,
                                strerror(-p));
                        return EXIT_UNAVAILABLE;
                }
                /* Ask once at the start too: a very fast task is then seen even without the signal. */
                if (w.completed || !checked) {
                        sd_bus_error_free(&e);
                        r = get_result(bus, bus_name, task_id, &status, &result, &info, &e);
                        checked = true;
                        if (r > 0)
                                break;
                        if (r < 0 && !sd_bus_error_has_name(&e, CON_ERROR_NOT_FINISHED)) {
                                fprintf(stderr, "con-send: cannot get the result of task %s: %s\n", task_id,
                                        e.message ?: strerror(-r));
                                return exit_for_bus_error(&e, r);
                        }
                        w.completed = false;
                }
                if (p > 0)
                        continue;
                uint64_t now = con_now(CLOCK_MONOTONIC);
                if (now >= deadline) {
                        if (w.progress_shown)
                                fputc('\n', stderr);
                        fprintf(stderr, "con-send: timed out after %" PRIu64 " s waiting for task %s of %s "
                                "(it keeps going; see 'con task %s')\n", arg_timeout_usec / USEC_PER_SEC, task_id,
                                arg_to, task_id);
                        return EXIT_TIMEOUT;
                }
                r = sd_bus_wait(bus, deadline == UINT64_MAX ? UINT64_MAX : deadline - now);
                if (r < 0) {
                        fprintf(stderr, "con-send: lost the system bus while waiting for task %s: %s\n", task_id,
                                strerror(-r));
                        return EXIT_UNAVAILABLE;
                }
        }

        if (w.progress_shown)
                fputs("\r\033[K", stderr);
        r = print_result(task_id, status, result, &info);
        if (r < 0)
                return EXIT_UNAVAILABLE;
        return streq_ptr(con_task_state_a2a(status), "completed") ? EXIT_DONE : EXIT_TASK_FAILED;
}
