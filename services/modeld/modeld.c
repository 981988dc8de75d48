/* SPDX-License-Identifier: MIT */
/* con-modeld: the model gateway (docs/MODELS.md). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "con-paths.h"
#include "log.h"
#include "macro.h"
#include "model-service.h"
#include "service.h"
#include "user-util.h"

static void help(void);
static ConService svc = { .name = "con-modeld", .help = help, .introspect = models_introspect_xml };
static ModelsOptions arg;
static bool arg_any_user;

static void help(void) {
        printf("Usage: con-modeld [OPTIONS]\n"
               "\n"
               "The ConspiracyOS model gateway: holds the provider keys (%s) and makes the model\n"
               "calls of the agents (org.conspiracy.Models1.Complete on the system bus). Runs as %s.\n"
               "\n"
               "  --config PATH          Configuration file (default %s)\n"
               "  --env PATH             Key file (default %s)\n"
               "  --log-dir DIR          Usage log folder (default %s; \"\" for none)\n"
               "  --bus-address ADDR     Connect to this bus instead of the system bus (tests)\n"
               "  --allow-any-user       Do not insist on running as %s (tests)\n"
               CON_SERVICE_HELP,
               CON_MODELS_ENV_PATH, CON_MODELS_USER, CON_CONFIG_PATH, CON_MODELS_ENV_PATH, CON_MODELS_LOG_DIR,
               CON_MODELS_USER);
}

/* Returns 1 to go on, 0 to exit successfully, < 0 on a usage error (reported). */
static int parse_argv(int argc, char *argv[]) {
        enum { ARG_CONFIG = 0x100, ARG_ENV, ARG_LOG, ARG_BUS, ARG_ANY };
        static const struct option options[] = {
                CON_SERVICE_OPTIONS,
                { "config", required_argument, NULL, ARG_CONFIG },
                { "env", required_argument, NULL, ARG_ENV },
                { "log-dir", required_argument, NULL, ARG_LOG },
                { "bus-address", required_argument, NULL, ARG_BUS },
                { "allow-any-user", no_argument, NULL, ARG_ANY },
                {}
        };
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case ARG_CONFIG:
                        arg.config_path = optarg;
                        break;
                case ARG_ENV:
                        arg.env_path = optarg;
                        break;
                case ARG_LOG:
                        arg.log_dir = optarg;
                        break;
                case ARG_BUS:
                        svc.bus_address = optarg;
                        break;
                case ARG_ANY:
                        arg_any_user = true;
                        break;
                default:
                        r = con_service_parse_option(&svc, c, optarg);
                        if (r <= 0)
                                return r;
                }
        return con_service_no_arguments(&svc, argc, argv, optind);
}

static int run(int argc, char *argv[]) {
        _cleanup_(models_freep) Models *m = NULL;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;
        if (!arg_any_user) {
                _cleanup_free_ char *user = NULL;
                if (con_uid_to_name(geteuid(), &user) < 0 || strcmp(user, CON_MODELS_USER) != 0) {
                        log_error("Must run as the user %s, not %s (the keys are readable by that user only; "
                                  "see --allow-any-user for tests)", CON_MODELS_USER, user ?: "an unknown user");
                        return -EPERM;
                }
        }
        /* Keys live in this process's memory: no core dumps, no ptrace or /proc/PID/mem by others. */
        (void) prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        umask(0027);

        r = con_service_start(&svc, 0);
        if (r < 0)
                return r;
        r = models_new(&arg, svc.event, svc.bus, &m);
        if (r < 0)
                return log_error_errno(r, "Cannot set up: %m");
        r = models_start(m);
        if (r < 0)
                return log_error_errno(r, "Cannot start: %m");
        r = con_service_loop(&svc, "Serving model calls");
        return r < 0 ? r : 0;
}

CON_SERVICE_MAIN(svc, run)
