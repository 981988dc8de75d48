/* SPDX-License-Identifier: MIT */
/* con agent add | remove | list: commission and retire agents through con-provisiond
 * (org.conspiracy.Provisioner1, docs/PROVISIONING.md). No local root check: the service decides
 * (polkit's org.conspiracy.agent.commission). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>
#include <systemd/sd-bus.h>

#include "agent-spec.h"
#include "con.h"
#include "errors.h"
#include "fileio.h"
#include "json-util.h"
#include "macro.h"
#include "names.h"
#include "strv.h"

#define CALL_TIMEOUT_USEC (15 * 60 * USEC_PER_SEC)    /* a commission waits for its turn, then provisions */

static void agent_help(FILE *f) {
        fputs("Usage: con agent add NAME [--tier TIER] [--mode MODE] [--cron EXPR] [--cron-task TEXT]\n"
              "                [--role ROLE]... [--instructions FILE] [--may-task AGENT]...\n"
              "                [--tasked-by AGENT]... [--runner RUNNER] [--provider PROVIDER] [--model MODEL]\n"
              "                [--network none|gateway|ENTRY]...\n"
              "       con agent remove NAME [--archive]\n"
              "       con agent list [--json]\n"
              "\n"
              "Commission and retire agents at run time, through con-provisiond (started by bus\n"
              "activation). Allowed to root and the sysadmin agent by default (polkit action\n"
              "org.conspiracy.agent.commission); a caller may grant only what it may do itself.\n"
              "\n"
              "  add      create agent NAME: user a-NAME, folders, ACLs, AGENTS.md, its bus name, the\n"
              "           drop-in /etc/con/con.yaml.d/NAME.yaml; all or nothing; prints each change\n"
              "  remove   retire an agent that 'add' created: drop-in, service, files, user\n"
              "  list     every configured agent: name, tier, the file that defines it, commissioned\n"
              "\n"
              "  --tier TIER            officer, operator or worker\n"
              "  --mode MODE            on-demand (default), always or cron\n"
              "  --cron EXPR            the schedule of a cron agent (\"0 8 * * 1-5\")\n"
              "  --cron-task TEXT       the task it is given on schedule\n"
              "  --role ROLE            a role (layers and skills), repeatable\n"
              "  --instructions FILE    its AGENTS.md layer (at most 64 KiB; - reads standard input)\n"
              "  --may-task AGENT       an agent the new one may task, repeatable\n"
              "  --tasked-by AGENT      an agent that may task the new one (besides the concierge), repeatable\n"
              "  --runner RUNNER        picoclaw, claude or codex\n"
              "  --provider PROVIDER    the model provider\n"
              "  --model MODEL          the model\n"
              "  --network VALUE        none, gateway or an allow-list entry (repeatable)\n"
              "  --archive              remove: keep its folder in /srv/con/archive/NAME-TIME\n"
              "  --json                 list: one JSON document (docs/CLI.md)\n"
              "\n"
              "Exit status: 0 ok, 1 failure or refused, 2 usage error.\n",
              f);
}

/* Standard input, up to max bytes: -EFBIG beyond. */
static int read_stdin(size_t max, char **ret, size_t *ret_len) {
        _cleanup_free_ char *buf = malloc(max + 2);
        size_t len = 0;
        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t n = read(STDIN_FILENO, buf + len, max + 1 - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return negative_errno();
                if (n == 0)
                        break;
                len += (size_t) n;
                if (len > max)
                        return -EFBIG;
        }
        buf[len] = 0;
        *ret = TAKE_PTR(buf);
        *ret_len = len;
        return 0;
}

static int open_bus(sd_bus **ret) {
        int r = sd_bus_open_system(ret);
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "agent: cannot connect to the system bus: %s (start it with 'con up')",
                                strerror(-r));
        (void) con_bus_errors_register();
        return 0;
}

static int call(sd_bus *bus, sd_bus_message *m, sd_bus_message **reply, const char *what) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        int r = sd_bus_call(bus, m, CALL_TIMEOUT_USEC, &e, reply);
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "agent: %s: %s", what, e.message ?: strerror(-r));
        return 0;
}

static int print_changes(sd_bus_message *reply) {
        _cleanup_strv_free_ char **changes = NULL;
        int r = sd_bus_message_read_strv(reply, &changes);
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "agent: cannot read the answer: %s", strerror(-r));
        STRV_FOREACH(c, changes)
                printf("%s\n", *c);
        return 0;
}

static int append_string(sd_bus_message *m, const char *key, const char *v) {
        if (!v)
                return 0;
        int r = sd_bus_message_open_container(m, 'e', "sv");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", key);
        if (r >= 0)
                r = sd_bus_message_append(m, "v", "s", v);
        return r < 0 ? r : sd_bus_message_close_container(m);
}

static int append_strv(sd_bus_message *m, const char *key, char **v) {
        if (!v)
                return 0;
        int r = sd_bus_message_open_container(m, 'e', "sv");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", key);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'v', "as");
        if (r >= 0)
                r = sd_bus_message_append_strv(m, v);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r < 0 ? r : sd_bus_message_close_container(m);
}

static int agent_add(int argc, char *argv[]) {
        enum { ARG_TIER = 0x100, ARG_MODE, ARG_CRON, ARG_CRON_TASK, ARG_ROLE, ARG_INSTRUCTIONS, ARG_MAY_TASK,
               ARG_TASKED_BY, ARG_RUNNER, ARG_PROVIDER, ARG_MODEL, ARG_NETWORK };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "tier", required_argument, NULL, ARG_TIER },
                { "mode", required_argument, NULL, ARG_MODE },
                { "cron", required_argument, NULL, ARG_CRON },
                { "cron-task", required_argument, NULL, ARG_CRON_TASK },
                { "role", required_argument, NULL, ARG_ROLE },
                { "instructions", required_argument, NULL, ARG_INSTRUCTIONS },
                { "may-task", required_argument, NULL, ARG_MAY_TASK },
                { "tasked-by", required_argument, NULL, ARG_TASKED_BY },
                { "runner", required_argument, NULL, ARG_RUNNER },
                { "provider", required_argument, NULL, ARG_PROVIDER },
                { "model", required_argument, NULL, ARG_MODEL },
                { "network", required_argument, NULL, ARG_NETWORK },
                {}
        };
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_strv_free_ char **roles = NULL, **may_task = NULL, **tasked_by = NULL, **network = NULL;
        _cleanup_free_ char *instructions = NULL;
        const char *tier = NULL, *mode = NULL, *cron = NULL, *cron_task = NULL, *runner = NULL, *provider = NULL,
                   *model = NULL;
        int c, r;

        optind = 1;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                r = 0;
                switch (c) {
                case 'h':
                        agent_help(stdout);
                        return CON_EXIT_OK;
                case ARG_TIER: tier = optarg; break;
                case ARG_MODE: mode = optarg; break;
                case ARG_CRON: cron = optarg; break;
                case ARG_CRON_TASK: cron_task = optarg; break;
                case ARG_RUNNER: runner = optarg; break;
                case ARG_PROVIDER: provider = optarg; break;
                case ARG_MODEL: model = optarg; break;
                case ARG_ROLE: r = strv_extend(&roles, optarg); break;
                case ARG_MAY_TASK: r = strv_extend(&may_task, optarg); break;
                case ARG_TASKED_BY: r = strv_extend(&tasked_by, optarg); break;
                case ARG_NETWORK: r = strv_extend(&network, optarg); break;
                case ARG_INSTRUCTIONS: {
                        size_t len = 0;
                        free(instructions);
                        instructions = NULL;
                        r = streq(optarg, "-") ? read_stdin(CON_AGENT_SPEC_INSTRUCTIONS_MAX, &instructions, &len)
                                               : read_file_nofollow(optarg, CON_AGENT_SPEC_INSTRUCTIONS_MAX, &instructions, &len);
                        if (r == -EFBIG)
                                return con_fail(CON_EXIT_USAGE, "agent add: --instructions: %s is larger than 64 KiB", optarg);
                        if (r < 0)
                                return con_fail(CON_EXIT_USAGE, "agent add: --instructions: cannot read %s: %s", optarg,
                                                strerror(-r));
                        if (memchr(instructions, 0, len))
                                return con_fail(CON_EXIT_USAGE, "agent add: --instructions: %s contains a NUL byte", optarg);
                        break;
                }
                default:
                        return CON_EXIT_USAGE;
                }
                if (r < 0)
                        return con_fail(CON_EXIT_FAILURE, "agent add: out of memory");
        }
        if (optind + 1 != argc)
                return con_fail(CON_EXIT_USAGE, "agent add: expected exactly one NAME (see 'con agent --help')");
        const char *name = argv[optind];

        r = open_bus(&bus);
        if (r != 0)
                return r;
        r = sd_bus_message_new_method_call(bus, &m, CON_PROVISIONER_BUS_NAME, CON_PROVISIONER_PATH,
                                           CON_PROVISIONER_INTERFACE, "CommissionAgent");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", name);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0)
                r = append_string(m, "tier", tier);
        if (r >= 0)
                r = append_string(m, "mode", mode);
        if (r >= 0)
                r = append_string(m, "cron", cron);
        if (r >= 0)
                r = append_string(m, "cron_task", cron_task);
        if (r >= 0)
                r = append_strv(m, "roles", roles);
        if (r >= 0)
                r = append_string(m, "instructions", instructions);
        if (r >= 0)
                r = append_strv(m, "may_task", may_task);
        if (r >= 0)
                r = append_strv(m, "tasked_by", tasked_by);
        if (r >= 0)
                r = append_string(m, "runner", runner);
        if (r >= 0)
                r = append_string(m, "provider", provider);
        if (r >= 0)
                r = append_string(m, "model", model);
        if (r >= 0)
                r = append_strv(m, "network", network);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "agent add: cannot build the call: %s", strerror(-r));
        r = call(bus, m, &reply, "add");
        if (r != 0)
                return r;
        r = print_changes(reply);
        if (r != 0)
                return r;
        printf("agent %s commissioned\n", name);
        return CON_EXIT_OK;
}

static int agent_remove(int argc, char *argv[]) {
        enum { ARG_ARCHIVE = 0x100 };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "archive", no_argument, NULL, ARG_ARCHIVE },
                {}
        };
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        bool archive = false;
        int c, r;

        optind = 1;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        agent_help(stdout);
                        return CON_EXIT_OK;
                case ARG_ARCHIVE:
                        archive = true;
                        break;
                default:
                        return CON_EXIT_USAGE;
                }
        if (optind + 1 != argc)
                return con_fail(CON_EXIT_USAGE, "agent remove: expected exactly one NAME (see 'con agent --help')");
        const char *name = argv[optind];
        r = open_bus(&bus);
        if (r != 0)
                return r;
        r = sd_bus_message_new_method_call(bus, &m, CON_PROVISIONER_BUS_NAME, CON_PROVISIONER_PATH,
                                           CON_PROVISIONER_INTERFACE, "DecommissionAgent");
        if (r >= 0)
                r = sd_bus_message_append(m, "sa{sv}", name, 1, "archive", "b", archive);
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "agent remove: cannot build the call: %s", strerror(-r));
        r = call(bus, m, &reply, "remove");
        if (r != 0)
                return r;
        r = print_changes(reply);
        if (r != 0)
                return r;
        printf("agent %s decommissioned%s\n", name, archive ? " (files archived)" : "");
        return CON_EXIT_OK;
}

static int agent_list(int argc, char *argv[]) {
        enum { ARG_JSON = 0x100 };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "json", no_argument, NULL, ARG_JSON },
                {}
        };
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        bool json = false;
        int c, r;

        optind = 1;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        agent_help(stdout);
                        return CON_EXIT_OK;
                case ARG_JSON:
                        json = true;
                        break;
                default:
                        return CON_EXIT_USAGE;
                }
        if (optind != argc)
                return con_fail(CON_EXIT_USAGE, "agent list: unexpected argument '%s'", argv[optind]);
        r = open_bus(&bus);
        if (r != 0)
                return r;
        r = sd_bus_message_new_method_call(bus, &m, CON_PROVISIONER_BUS_NAME, CON_PROVISIONER_PATH,
                                           CON_PROVISIONER_INTERFACE, "ListAgents");
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "agent list: cannot build the call: %s", strerror(-r));
        r = call(bus, m, &reply, "list");
        if (r != 0)
                return r;

        _cleanup_(cJSON_Deletep) cJSON *arr = json ? cJSON_CreateArray() : NULL;
        if (json && !arr)
                return con_fail(CON_EXIT_FAILURE, "agent list: out of memory");
        r = sd_bus_message_enter_container(reply, 'a', "(sssb)");
        while (r >= 0) {
                const char *name, *tier, *file;
                int commissioned;
                r = sd_bus_message_read(reply, "(sssb)", &name, &tier, &file, &commissioned);
                if (r <= 0)
                        break;
                if (json) {
                        cJSON *o = cJSON_CreateObject();
                        if (!o || !cJSON_AddStringToObject(o, "name", name) ||
                            !(*tier ? cJSON_AddStringToObject(o, "tier", tier) : cJSON_AddNullToObject(o, "tier")) ||
                            !cJSON_AddStringToObject(o, "file", file) ||
                            !cJSON_AddBoolToObject(o, "commissioned", commissioned)) {
                                cJSON_Delete(o);
                                r = -ENOMEM;
                                break;
                        }
                        cJSON_AddItemToArray(arr, o);
                } else
                        printf("%-20s %-9s %s%s\n", name, *tier ? tier : "-", file, commissioned ? " (commissioned)" : "");
        }
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "agent list: cannot read the answer: %s", strerror(-r));
        if (json) {
                _cleanup_free_ char *s = cJSON_PrintUnformatted(arr);
                if (!s)
                        return con_fail(CON_EXIT_FAILURE, "agent list: out of memory");
                printf("%s\n", s);
        }
        return CON_EXIT_OK;
}

int verb_agent(int argc, char *argv[]) {
        if (argc < 2 || streq(argv[1], "--help") || streq(argv[1], "-h")) {
                agent_help(argc < 2 ? stderr : stdout);
                return argc < 2 ? CON_EXIT_USAGE : CON_EXIT_OK;
        }
        if (streq(argv[1], "add"))
                return agent_add(argc - 1, argv + 1);
        if (streq(argv[1], "remove"))
                return agent_remove(argc - 1, argv + 1);
        if (streq(argv[1], "list"))
                return agent_list(argc - 1, argv + 1);
        return con_fail(CON_EXIT_USAGE, "agent: unknown command '%s'; use add, remove or list", argv[1]);
}
