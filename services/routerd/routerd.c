/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "con-paths.h"
#include "config.h"
#include "macro.h"
#include "router-service.h"

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
               "  -h --help              Show this help\n"
               "     --version           Show the version\n",
               CON_SRV_DIR, CON_SRV_DIR, CON_SRV_DIR, CON_CONFIG_PATH, CON_SRV_DIR);
}

static int parse_seconds(const char *opt, const char *s, uint64_t *ret) {
        uint64_t usec;
        if (con_parse_duration(s, &usec) < 0 || usec == 0) {
                fprintf(stderr, "con-routerd: %s: invalid duration '%s' (a positive number of seconds, or e.g. 90s, 5m)\n",
                        opt, s);
                return -EINVAL;
        }
        *ret = usec;
        return 0;
}

int main(int argc, char *argv[]) {
        enum { ARG_ONCE = 0x100, ARG_CONFIG, ARG_SRV, ARG_AUDIT, ARG_WINDOW, ARG_RESCAN, ARG_TIMEOUT, ARG_CRON,
               ARG_VERSION };
        static const struct option options[] = {
                { "once", no_argument, NULL, ARG_ONCE },
                { "config", required_argument, NULL, ARG_CONFIG },
                { "srv-dir", required_argument, NULL, ARG_SRV },
                { "audit-dir", required_argument, NULL, ARG_AUDIT },
                { "window", required_argument, NULL, ARG_WINDOW },
                { "rescan-interval", required_argument, NULL, ARG_RESCAN },
                { "timeout", required_argument, NULL, ARG_TIMEOUT },
                { "cron", required_argument, NULL, ARG_CRON },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                {}
        };
        RouterOptions o = { .cron_mode = -1 };
        _cleanup_(router_freep) Router *r = NULL;
        int c, k;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case ARG_ONCE:
                        o.once = true;
                        break;
                case ARG_CONFIG:
                        o.config_path = optarg;
                        break;
                case ARG_SRV:
                        o.srv_dir = optarg;
                        break;
                case ARG_AUDIT:
                        o.audit_dir = optarg;
                        break;
                case ARG_WINDOW: {
                        char *end;
                        unsigned long w = strtoul(optarg, &end, 10);
                        if (*end || w < 1 || w > 127) {
                                fprintf(stderr, "con-routerd: --window: '%s' is not a number from 1 to 127 "
                                        "(the bus allows 128 pending replies per connection)\n", optarg);
                                return 2;
                        }
                        o.window = (unsigned) w;
                        break;
                }
                case ARG_RESCAN:
                        if (parse_seconds("--rescan-interval", optarg, &o.rescan_usec) < 0)
                                return 2;
                        break;
                case ARG_TIMEOUT:
                        if (parse_seconds("--timeout", optarg, &o.once_timeout_usec) < 0)
                                return 2;
                        break;
                case ARG_CRON:
                        if (streq(optarg, "auto"))
                                o.cron_mode = -1;
                        else if (streq(optarg, "yes"))
                                o.cron_mode = 1;
                        else if (streq(optarg, "no"))
                                o.cron_mode = 0;
                        else {
                                fprintf(stderr, "con-routerd: --cron: '%s' is not one of auto, yes, no\n", optarg);
                                return 2;
                        }
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("con-routerd %s\n", CON_VERSION);
                        return 0;
                default:
                        fprintf(stderr, "con-routerd: see --help\n");
                        return 2;
                }
        if (optind < argc) {
                fprintf(stderr, "con-routerd: unexpected argument '%s' (see --help)\n", argv[optind]);
                return 2;
        }
        if (geteuid() != 0)
                fprintf(stderr, "con-routerd: warning: not running as root; agent inboxes and the audit log "
                        "will probably not be accessible\n");

        k = router_new(&o, &r);
        if (k < 0)
                return 1;
        k = router_run(r);
        if (k < 0) {
                fprintf(stderr, "con-routerd: %s\n", strerror(-k));
                return 1;
        }
        return k;
}
