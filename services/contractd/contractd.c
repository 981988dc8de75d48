/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "con-paths.h"
#include "contract-service.h"
#include "bus-util.h"
#include "contract-util.h"
#include "macro.h"

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
               "  -h --help              Show this help\n"
               "     --version           Show the version\n"
               "     --bus-introspect    Print the introspection XML of the Contracts object\n",
               CONTRACT_DIR_DEFAULT, CON_CONTRACTS_BUS_NAME, CON_CONFIG_PATH, CONTRACT_DIR_DEFAULT,
               CONTRACT_STATE_DIR_DEFAULT, "/srv/con/logs/audit");
}

int main(int argc, char *argv[]) {
        enum { ARG_CONFIG = 0x100, ARG_CONTRACTS, ARG_STATE, ARG_AUDIT, ARG_VERSION, ARG_INTROSPECT };
        static const struct option options[] = {
                { "config", required_argument, NULL, ARG_CONFIG },
                { "contracts-dir", required_argument, NULL, ARG_CONTRACTS },
                { "state-dir", required_argument, NULL, ARG_STATE },
                { "audit-dir", required_argument, NULL, ARG_AUDIT },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "bus-introspect", no_argument, NULL, ARG_INTROSPECT },
                {}
        };
        ContractsOptions o = {};
        _cleanup_(manager_freep) Manager *m = NULL;
        int c, k;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case ARG_CONFIG:
                        o.config_path = optarg;
                        break;
                case ARG_CONTRACTS:
                        o.contracts_dir = optarg;
                        break;
                case ARG_STATE:
                        o.state_dir = optarg;
                        break;
                case ARG_AUDIT:
                        o.audit_dir = optarg;
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("con-contractd %s\n", CON_VERSION);
                        return 0;
                case ARG_INTROSPECT: {
                        _cleanup_free_ char *xml = NULL;
                        k = con_bus_introspect_vtable(CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE, contracts_vtable, &xml);
                        if (k < 0) {
                                fprintf(stderr, "con-contractd: %s\n", strerror(-k));
                                return 1;
                        }
                        fputs(xml, stdout);
                        return 0;
                }
                default:
                        fprintf(stderr, "con-contractd: see --help\n");
                        return 2;
                }
        if (optind < argc) {
                fprintf(stderr, "con-contractd: unexpected argument '%s' (see --help)\n", argv[optind]);
                return 2;
        }
        if (geteuid() != 0)
                fprintf(stderr, "con-contractd: warning: not running as root; checks and actions will fail\n");

        k = manager_new(&o, &m);
        if (k < 0)
                return 1;
        k = manager_run(m);
        if (k < 0) {
                fprintf(stderr, "con-contractd: %s\n", strerror(-k));
                return 1;
        }
        return 0;
}
