/* SPDX-License-Identifier: MIT */
/* con-contractd: the health contract service (docs/CONTRACTS.md). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "con-paths.h"
#include "contract-service.h"
#include "contract-util.h"
#include "log.h"
#include "macro.h"
#include "service.h"

static void help(void);
static ConService svc = { .name = "con-contractd", .help = help, .introspect = manager_introspect_xml };
static ContractsOptions arg;

static void help(void) {
        printf("Usage: con-contractd [OPTIONS]\n"
               "\n"
               "The ConspiracyOS health contract service: evaluates %s/*.yaml on their own\n"
               "frequency, publishes violations on the system bus as %s and acts on them\n"
               "(alert, kill_session, quarantine, halt_agents, halt_workers). Runs as root.\n"
               "\n"
               "  --config PATH          Configuration file (default %s)\n"
               "  --contracts-dir DIR    Contracts (default %s)\n"
               "  --state-dir DIR        Halt and quarantine markers (default %s)\n"
               "  --audit-dir DIR        Audit log folder (default %s)\n"
               CON_SERVICE_HELP,
               CONTRACT_DIR_DEFAULT, CON_CONTRACTS_BUS_NAME, CON_CONFIG_PATH, CONTRACT_DIR_DEFAULT,
               CONTRACT_STATE_DIR_DEFAULT, CON_SRV_DIR "/logs/audit");
}

/* Returns 1 to go on, 0 to exit successfully, < 0 on a usage error (reported). */
static int parse_argv(int argc, char *argv[]) {
        enum { ARG_CONFIG = 0x100, ARG_CONTRACTS, ARG_STATE, ARG_AUDIT };
        static const struct option options[] = {
                CON_SERVICE_OPTIONS,
                { "config", required_argument, NULL, ARG_CONFIG },
                { "contracts-dir", required_argument, NULL, ARG_CONTRACTS },
                { "state-dir", required_argument, NULL, ARG_STATE },
                { "audit-dir", required_argument, NULL, ARG_AUDIT },
                {}
        };
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case ARG_CONFIG:
                        arg.config_path = optarg;
                        break;
                case ARG_CONTRACTS:
                        arg.contracts_dir = optarg;
                        break;
                case ARG_STATE:
                        arg.state_dir = optarg;
                        break;
                case ARG_AUDIT:
                        arg.audit_dir = optarg;
                        break;
                default:
                        r = con_service_parse_option(&svc, c, optarg);
                        if (r <= 0)
                                return r;
                }
        return con_service_no_arguments(&svc, argc, argv, optind);
}

static int run(int argc, char *argv[]) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;
        if (geteuid() != 0)
                log_warning("Not running as root; checks and actions will fail");

        r = con_service_start(&svc, 0);
        if (r < 0)
                return r;
        r = manager_new(&arg, svc.event, svc.bus, &m);
        if (r < 0)
                return log_error_errno(r, "Cannot set up: %m");
        r = manager_start(m);
        if (r < 0)
                return log_error_errno(r, "Cannot start: %m");
        r = con_service_loop(&svc, "Watching contracts");
        return r < 0 ? r : 0;
}

CON_SERVICE_MAIN(svc, run)
