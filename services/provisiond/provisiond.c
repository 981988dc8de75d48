/* SPDX-License-Identifier: MIT */
/* con-provisiond: commissions and retires agents at run time (docs/PROVISIONING.md). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "con-paths.h"
#include "log.h"
#include "macro.h"
#include "names.h"
#include "provisioner.h"
#include "service.h"

static void help(void);
static ConService svc = { .name = "con-provisiond", .help = help, .introspect = provisioner_introspect_xml };
static ProvisionerOptions arg;

static void help(void) {
        printf("Usage: con-provisiond [OPTIONS]\n"
               "\n"
               "The ConspiracyOS agent commissioner: %s on the system bus. Commissions\n"
               "and retires agents at run time with the provisioning of con bootstrap, each agent a\n"
               "drop-in in %s. Authorised by polkit (org.conspiracy.agent.commission). Runs as root.\n"
               "\n"
               "  --config PATH          Configuration file (default %s; drop-ins in PATH.d)\n"
               "  --con PATH             The con client that provisions (default %s/con)\n"
               CON_SERVICE_HELP,
               CON_PROVISIONER_BUS_NAME, CON_DROPIN_DIR, CON_CONFIG_PATH, CON_BINDIR);
}

static int parse_argv(int argc, char *argv[]) {
        enum { ARG_CONFIG = 0x100, ARG_CON };
        static const struct option options[] = {
                CON_SERVICE_OPTIONS,
                { "config", required_argument, NULL, ARG_CONFIG },
                { "con", required_argument, NULL, ARG_CON },
                {}
        };
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case ARG_CONFIG:
                        arg.config_path = optarg;
                        break;
                case ARG_CON:
                        arg.con_path = optarg;
                        break;
                default:
                        r = con_service_parse_option(&svc, c, optarg);
                        if (r <= 0)
                                return r;
                }
        return con_service_no_arguments(&svc, argc, argv, optind);
}

static int run(int argc, char *argv[]) {
        _cleanup_(provisioner_freep) Provisioner *p = NULL;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;
        if (geteuid() != 0)
                log_warning("Not running as root; provisioning will fail");
        /* Tests only: a failure injected into every bootstrap run, or into the retire step. */
        const char *fail = getenv("CON_TEST_BOOTSTRAP_FAIL_AT");
        if (fail)
                arg.fail_at = (unsigned) strtoul(fail, NULL, 10);
        arg.fail_retire = getenv("CON_TEST_PROVISION_FAIL_RETIRE") != NULL;

        r = con_service_start(&svc, 0);
        if (r < 0)
                return r;
        r = provisioner_new(&arg, svc.event, svc.bus, &p);
        if (r < 0)
                return log_error_errno(r, "Cannot set up: %m");
        r = provisioner_start(p);
        if (r < 0)
                return log_error_errno(r, "Cannot start: %m");
        r = con_service_loop(&svc, "Commissioning agents");
        return r < 0 ? r : 0;
}

CON_SERVICE_MAIN(svc, run)
