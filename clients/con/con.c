/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "con-paths.h"
#include "con.h"
#include "macro.h"

/* The verbs. Add a line here and a con-<verb>.c file for each new subcommand. */
static const struct {
        const char *name;
        ConVerbFn fn;
        const char *summary;
} verbs[] = {
        { "bootstrap", verb_bootstrap, "provision users, folders, ACLs and platform files from the config" },
        { "up",          verb_up,          "start the fabric: system bus (if needed), router, 'always' agents" },
        { "down",        verb_down,        "stop the router and the agents" },
        { "status",      verb_status,      "router and agents: running, state, queue" },
        { "agents",      verb_agents,      "list the configured agents" },
        { "agent",       verb_agent,       "commission (add), retire (remove) or list agents at run time" },
        { "tasks",       verb_tasks,       "list the tasks of one or all agents" },
        { "task",        verb_task,        "show one task's status and result, or its transcript" },
        { "cancel",      verb_cancel,      "cancel a queued or running task" },
        { "run",         verb_run,         "start an agent and wait until its queue is empty" },
        { "route-inbox", verb_route_inbox, "one pass of the router over the inboxes" },
        { "audit",       verb_audit,       "print the audit trail, or 'verify' its hash chain" },
        { "healthcheck", verb_healthcheck, "evaluate the health contracts once" },
        { "contracts",   verb_contracts,   "list the health contracts and their last results" },
        { "resume",      verb_resume,      "lift a halt of the agents" },
        { "quarantine",  verb_quarantine,  "quarantine an agent" },
        { "release",     verb_release,     "end an agent's quarantine" },
        { "policy",      verb_policy,      "show the access policy, check the four doors against it" },
        { "mesh",        verb_mesh,        "the mesh: hosts and lag (status); CA, host certificates, NATS server config, streams" },
};

int con_fail(int status, const char *fmt, ...) {
        va_list ap;

        fputs("con: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return status;
}

static void help(FILE *f) {
        fprintf(f, "Usage: con COMMAND [OPTION...]\n\nCommands:\n");
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                fprintf(f, "  %-12s %s\n", verbs[i].name, verbs[i].summary);
        fprintf(f, "\nRun 'con COMMAND --help' or 'con help COMMAND' for the options of a command.\n"
                   "Exit status: 0 ok, 1 failure, 2 usage error, 3 needs root, 4 invalid configuration.\n");
}

int main(int argc, char *argv[]) {
        if (argc < 2)
                return help(stderr), CON_EXIT_USAGE;
        if (streq(argv[1], "--help") || streq(argv[1], "-h") || (streq(argv[1], "help") && argc == 2)) {
                help(stdout);
                return CON_EXIT_OK;
        }
        if (streq(argv[1], "help")) {
                /* 'con help VERB' is 'con VERB --help'. */
                if (argc > 3)
                        return con_fail(CON_EXIT_USAGE, "help: give one COMMAND (see 'con --help')");
                for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                        if (streq(argv[2], verbs[i].name))
                                return verbs[i].fn(2, (char *[]) { argv[2], (char *) "--help", NULL });
                return con_fail(CON_EXIT_USAGE, "help: unknown command '%s' (see 'con --help')", argv[2]);
        }
        if (streq(argv[1], "--version")) {
                printf("con %s\n", CON_VERSION);
                return CON_EXIT_OK;
        }
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (streq(argv[1], verbs[i].name))
                        return verbs[i].fn(argc - 1, argv + 1);
        return con_fail(CON_EXIT_USAGE, "unknown command '%s' (see 'con --help')", argv[1]);
}
