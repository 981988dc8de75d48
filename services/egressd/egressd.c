/* SPDX-License-Identifier: MIT */
/* con-egressd: the egress gateway (docs/NETWORK.md). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit.h"
#include "con-paths.h"
#include "config.h"
#include "egress-service.h"
#include "log.h"
#include "macro.h"
#include "service.h"

static void help(void);
static ConService svc = { .name = "con-egressd", .help = help };
static EgressOptions arg;
static const char *arg_user = EGRESS_USER;

static void help(void) {
        printf("Usage: con-egressd [OPTIONS]\n"
               "\n"
               "The ConspiracyOS egress gateway: an HTTP proxy (CONNECT and http:// URLs) on\n"
               "127.0.0.1 port egress.port (default %u) for the agents with a network allow-list.\n"
               "The kernel says which agent connected (the socket's owner); only that agent's\n"
               "allow-list is let through, and every request is one record in the audit log.\n"
               "Started as root, it opens the audit log, binds and runs as the user %s.\n"
               "\n"
               "  --config PATH          Configuration file (default %s)\n"
               "  --port PORT            Listen on this port instead of egress.port\n"
               "  --audit-dir DIR        Audit log folder (default %s)\n"
               "  --user USER            Run as this user (default %s)\n"
               "  --bus-address ADDR     Connect to this bus instead of the system bus (tests)\n"
               CON_SERVICE_HELP,
               CON_EGRESS_PORT_DEFAULT, EGRESS_USER, CON_CONFIG_PATH, CON_AUDIT_DIR_DEFAULT, EGRESS_USER);
}

static int parse_argv(int argc, char *argv[]) {
        enum { ARG_CONFIG = 0x100, ARG_PORT, ARG_AUDIT, ARG_USER, ARG_BUS };
        static const struct option options[] = {
                CON_SERVICE_OPTIONS,
                { "config", required_argument, NULL, ARG_CONFIG },
                { "port", required_argument, NULL, ARG_PORT },
                { "audit-dir", required_argument, NULL, ARG_AUDIT },
                { "user", required_argument, NULL, ARG_USER },
                { "bus-address", required_argument, NULL, ARG_BUS },
                {}
        };
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case ARG_CONFIG:
                        arg.config_path = optarg;
                        break;
                case ARG_PORT: {
                        char *end;
                        unsigned long p = strtoul(optarg, &end, 10);
                        if (*end || p == 0 || p > 65535) {
                                log_error("Invalid port '%s' (1-65535)", optarg);
                                svc.usage_error = true;
                                return -EINVAL;
                        }
                        arg.port = (unsigned) p;
                        break;
                }
                case ARG_AUDIT:
                        arg.audit_dir = optarg;
                        break;
                case ARG_USER:
                        arg_user = optarg;
                        break;
                case ARG_BUS:
                        svc.bus_address = optarg;
                        break;
                default:
                        r = con_service_parse_option(&svc, c, optarg);
                        if (r <= 0)
                                return r;
                }
        return con_service_no_arguments(&svc, argc, argv, optind);
}

static int run(int argc, char *argv[]) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(egress_freep) Egress *g = NULL;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;
        (void) prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        umask(0027);

        /* As root: the audit log (root's), the config, the listening socket; then the user. */
        r = sd_event_default(&e);
        if (r < 0)
                return log_error_errno(r, "Cannot create the event loop: %m");
        r = egress_new(&arg, e, &g);
        if (r < 0)
                return r;
        if (geteuid() == 0) {
                r = con_service_become(arg_user);
                if (r < 0)
                        return r;
        }
        r = con_service_start(&svc, 0);
        if (r < 0)
                return r;
        r = egress_start(g, svc.bus);
        if (r < 0)
                return r;
        r = sd_bus_request_name(svc.bus, EGRESS_BUS_NAME, 0);
        if (r < 0)
                return log_error_errno(r, "Cannot take %s: %m", EGRESS_BUS_NAME);
        r = con_service_loop(&svc, "Serving the agents' egress");
        g = egress_free(g);
        return r < 0 ? r : 0;
}

CON_SERVICE_MAIN(svc, run)
