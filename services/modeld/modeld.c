/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "con-paths.h"
#include "macro.h"
#include "model-service.h"

static void help(void) {
        printf("Usage: con-modeld [OPTIONS]\n"
               "\n"
               "The ConspiracyOS model gateway: holds the provider keys (%s) and makes the model\n"
               "calls of the agents (org.conspiracy.Models1.Complete on the system bus). Runs as %s.\n"
               "\n"
               "  --config PATH       Configuration file (default %s)\n"
               "  --env PATH          Key file (default %s)\n"
               "  --log-dir DIR       Usage log folder (default %s; \"\" for none)\n"
               "  --bus-address ADDR  Connect to this bus instead of the system bus (tests)\n"
               "  --allow-any-user    Do not insist on running as %s (tests)\n"
               "  --bus-introspect    Print the introspection XML of org.conspiracy.Models1 and exit\n"
               "  -h --help           Show this help\n",
               CON_MODELS_ENV_PATH, CON_MODELS_USER, CON_CONFIG_PATH, CON_MODELS_ENV_PATH, CON_MODELS_LOG_DIR,
               CON_MODELS_USER);
}

int main(int argc, char *argv[]) {
        enum { ARG_CONFIG = 0x100, ARG_ENV, ARG_LOG, ARG_BUS, ARG_ANY, ARG_INTROSPECT };
        static const struct option options[] = {
                { "config", required_argument, NULL, ARG_CONFIG },
                { "env", required_argument, NULL, ARG_ENV },
                { "log-dir", required_argument, NULL, ARG_LOG },
                { "bus-address", required_argument, NULL, ARG_BUS },
                { "allow-any-user", no_argument, NULL, ARG_ANY },
                { "bus-introspect", no_argument, NULL, ARG_INTROSPECT },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        ModelsOptions o = {};
        bool any_user = false;
        _cleanup_(models_freep) Models *m = NULL;
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case ARG_CONFIG:
                        o.config_path = optarg;
                        break;
                case ARG_ENV:
                        o.env_path = optarg;
                        break;
                case ARG_LOG:
                        o.log_dir = optarg;
                        break;
                case ARG_BUS:
                        o.bus_address = optarg;
                        break;
                case ARG_ANY:
                        any_user = true;
                        break;
                case ARG_INTROSPECT: {
                        _cleanup_free_ char *xml = NULL;
                        r = models_introspect_xml(&xml);
                        if (r < 0) {
                                fprintf(stderr, "con-modeld: %s\n", strerror(-r));
                                return 1;
                        }
                        fputs(xml, stdout);
                        return 0;
                }
                case 'h':
                        help();
                        return 0;
                default:
                        fprintf(stderr, "con-modeld: see --help\n");
                        return 2;
                }
        if (optind < argc) {
                fprintf(stderr, "con-modeld: unexpected argument '%s' (see --help)\n", argv[optind]);
                return 2;
        }
        if (!any_user) {
                struct passwd *pw = getpwuid(geteuid());
                if (!pw || strcmp(pw->pw_name, CON_MODELS_USER) != 0) {
                        fprintf(stderr, "con-modeld: must run as the user %s, not %s (the keys are readable by "
                                "that user only; see --allow-any-user for tests)\n", CON_MODELS_USER,
                                pw ? pw->pw_name : "an unknown uid");
                        return 1;
                }
        }
        /* Keys live in this process's memory: no core dumps, no ptrace or /proc/PID/mem by others. */
        (void) prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        umask(0027);

        r = models_new(&o, &m);
        if (r < 0)
                return 1;
        r = models_run(m);
        if (r < 0) {
                fprintf(stderr, "con-modeld: %s\n", strerror(-r));
                return 1;
        }
        return 0;
}
