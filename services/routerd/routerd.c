/* SPDX-License-Identifier: MIT */
/* con-routerd: delivers dropped task files to the agents over the system bus. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "con-paths.h"
#include "config.h"
#include "log.h"
#include "macro.h"
#include "router.h"
#include "service.h"

static void help(void);
static ConService svc = { .name = "con-routerd", .help = help, .introspect = router_introspect_xml };
static RouterOptions arg = { .cron_mode = -1 };

static void help(void) {
        printf("Usage: con-routerd [OPTIONS]\n"
               "\n"
               "The ConspiracyOS router: delivers *.task files dropped into %s/inbox (to the\n"
               "concierge) and %s/agents/NAME/inbox (to NAME) over the system bus, moves bad files\n"
               "to %s/rejected and writes the audit trail. Runs as root.\n"
               "\n"
               "  --once                 Route the files present now, wait for the agents' answers, exit\n"
               "                         (exit 1 when some could not be delivered before --timeout)\n"
               "  --config PATH          Configuration file (default %s)\n"
               "  --srv-dir DIR          Spool root (default %s)\n"
               "  --audit-dir DIR        Audit log folder (default SRV-DIR/logs/audit)\n"
               "  --window N             Deliver calls in flight, 1..127 (default 64)\n"
               "  --rescan-interval SEC  Periodic rescan of the inboxes (default 30)\n"
               "  --timeout SEC          With --once: give up after SEC seconds (default 60)\n"
               "  --cron auto|yes|no     Submit cron agents' tasks on schedule (auto: only when\n"
               "                         systemd is not PID 1; under systemd timers do it)\n"
               CON_SERVICE_HELP,
               CON_SRV_DIR, CON_SRV_DIR, CON_SRV_DIR, CON_CONFIG_PATH, CON_SRV_DIR);
}

static int parse_seconds(const char *opt, const char *s, uint64_t *ret) {
        uint64_t usec;
        if (con_parse_duration(s, &usec) < 0 || usec == 0) {
                log_error("%s: invalid duration '%s' (a positive number of seconds, or e.g. 90s, 5m)", opt, s);
                svc.usage_error = true;
                return -EINVAL;
        }
        *ret = usec;
        return 0;
}

/* Returns 1 to go on, 0 to exit successfully, < 0 on a usage error (reported). */
static int parse_argv(int argc, char *argv[]) {
        enum { ARG_ONCE = 0x100, ARG_CONFIG, ARG_SRV, ARG_AUDIT, ARG_WINDOW, ARG_RESCAN, ARG_TIMEOUT, ARG_CRON };
        static const struct option options[] = {
                CON_SERVICE_OPTIONS,
                { "once", no_argument, NULL, ARG_ONCE },
                { "config", required_argument, NULL, ARG_CONFIG },
                { "srv-dir", required_argument, NULL, ARG_SRV },
                { "audit-dir", required_argument, NULL, ARG_AUDIT },
                { "window", required_argument, NULL, ARG_WINDOW },
                { "rescan-interval", required_argument, NULL, ARG_RESCAN },
                { "timeout", required_argument, NULL, ARG_TIMEOUT },
                { "cron", required_argument, NULL, ARG_CRON },
                {}
        };
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case ARG_ONCE:
                        arg.once = true;
                        break;
                case ARG_CONFIG:
                        arg.config_path = optarg;
                        break;
                case ARG_SRV:
                        arg.srv_dir = optarg;
                        break;
                case ARG_AUDIT:
                        arg.audit_dir = optarg;
                        break;
                case ARG_WINDOW: {
                        char *end;
                        unsigned long w = strtoul(optarg, &end, 10);
                        if (*end || w < 1 || w > 127) {
                                log_error("--window: '%s' is not a number from 1 to 127 "
                                          "(the bus allows 128 pending replies per connection)", optarg);
                                svc.usage_error = true;
                                return -EINVAL;
                        }
                        arg.window = (unsigned) w;
                        break;
                }
                case ARG_RESCAN:
                        r = parse_seconds("--rescan-interval", optarg, &arg.rescan_usec);
                        if (r < 0)
                                return r;
                        break;
                case ARG_TIMEOUT:
                        r = parse_seconds("--timeout", optarg, &arg.once_timeout_usec);
                        if (r < 0)
                                return r;
                        break;
                case ARG_CRON:
                        if (streq(optarg, "auto"))
                                arg.cron_mode = -1;
                        else if (streq(optarg, "yes"))
                                arg.cron_mode = 1;
                        else if (streq(optarg, "no"))
                                arg.cron_mode = 0;
                        else {
                                log_error("--cron: '%s' is not one of auto, yes, no", optarg);
                                svc.usage_error = true;
                                return -EINVAL;
                        }
                        break;
                default:
                        r = con_service_parse_option(&svc, c, optarg);
                        if (r <= 0)
                                return r;
                }
        return con_service_no_arguments(&svc, argc, argv, optind);
}

static int run(int argc, char *argv[]) {
        _cleanup_(router_freep) Router *router = NULL;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;
        if (geteuid() != 0)
                log_warning("Not running as root; agent inboxes and the audit log will probably not be accessible");

        r = con_service_start(&svc, 0);
        if (r < 0)
                return r;
        r = router_new(&arg, svc.event, svc.bus, &router);
        if (r < 0)
                return r;
        r = router_start(router);
        if (r < 0)
                return log_error_errno(r, "Cannot start: %m");
        r = con_service_loop(&svc, "Routing");
        return router_stop(router, r);
}

CON_SERVICE_MAIN(svc, run)
