/* SPDX-License-Identifier: MIT */
/* con-meshd: the mesh gateway of this host (docs/MULTIHOST.md). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "con-paths.h"
#include "config.h"
#include "log.h"
#include "macro.h"
#include "mesh-service.h"
#include "names.h"
#include "service.h"

static void help(void);
static ConService svc = { .name = "con-meshd", .help = help, .introspect = mesh_introspect_xml };
static const char *arg_config = CON_CONFIG_PATH;
static const char *arg_user = CON_MESH_USER;

static void help(void) {
        printf("Usage: con-meshd [OPTIONS]\n"
               "\n"
               "The ConspiracyOS mesh gateway: makes the agents of other hosts reachable as AGENT@HOST\n"
               "through NATS JetStream (the mesh: section of the configuration), and delivers their\n"
               "tasks for this host's agents. Owns %s on the system bus. Started as root it runs as\n"
               "the user %s.\n"
               "\n"
               "  --config PATH          Configuration file (default %s)\n"
               "  --user USER            The user to run as when started as root (default %s)\n"
               CON_SERVICE_HELP,
               CON_MESH_BUS_NAME, CON_MESH_USER, CON_CONFIG_PATH, CON_MESH_USER);
}

static int parse_argv(int argc, char *argv[]) {
        enum { ARG_CONFIG = 0x100, ARG_USER };
        static const struct option options[] = {
                CON_SERVICE_OPTIONS,
                { "config", required_argument, NULL, ARG_CONFIG },
                { "user", required_argument, NULL, ARG_USER },
                {}
        };
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case ARG_CONFIG:
                        arg_config = optarg;
                        break;
                case ARG_USER:
                        arg_user = optarg;
                        break;
                default:
                        r = con_service_parse_option(&svc, c, optarg);
                        if (r <= 0)
                                return r;
                }
        return con_service_no_arguments(&svc, argc, argv, optind);
}

/* Started as root (con up): the gateway's own user only. */
static int drop_privileges(const char *user) {
        struct passwd *pw = getpwnam(user);
        if (!pw)
                return log_error_errno(-ENOENT, "User %s does not exist (con bootstrap creates it when mesh: is set)",
                                       user);
        if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
                return log_error_errno(-errno, "Cannot become %s: %m", user);
        if (setuid(0) == 0)
                return log_error_errno(-EPERM, "Could regain root after dropping it; refusing to run");
        return 0;
}

static int run(int argc, char *argv[]) {
        _cleanup_(con_config_freep) ConConfig *config = NULL;
        _cleanup_(mesh_freep) Mesh *m = NULL;
        _cleanup_(con_audit_writer_freep) ConAuditWriter *audit = NULL;
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        ConErrorDetail err = {};
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;
        r = con_config_load(arg_config, &config, &err);
        if (r < 0) {
                _cleanup_free_ char *msg = con_error_detail_format(&err);
                con_error_detail_done(&err);
                return log_error_errno(r, "Invalid configuration: %s", msg ?: "out of memory");
        }
        if (!config->mesh.enabled)
                return log_error_errno(-ENOMEDIUM, "%s has no mesh: section; nothing to do", arg_config);
        if (geteuid() == 0) {
                /* As root: the audit log (root's; forged messages are recorded there). */
                r = sd_event_default(&e);
                if (r < 0)
                        return log_error_errno(r, "Cannot create the event loop: %m");
                r = con_audit_writer_new(e, NULL, &audit);
                if (r < 0)
                        return log_error_errno(r, "Cannot open the audit log: %m");
                r = drop_privileges(arg_user);
                if (r < 0)
                        return r;
        }
        r = con_service_start(&svc, 0);
        if (r < 0)
                return r;
        r = mesh_new(config, svc.event, svc.bus, TAKE_PTR(audit), &m);
        if (r < 0)
                return log_error_errno(r, "Cannot set up: %m");
        r = mesh_start(m);
        if (r < 0)
                return log_error_errno(r, "Cannot start: %m");
        log_info("Host %s, servers %s%s", config->mesh.host, config->mesh.servers[0],
                 config->mesh.servers[1] ? " ..." : "");
        r = con_service_loop(&svc, "Serving the mesh");
        return r < 0 ? r : 0;
}

CON_SERVICE_MAIN(svc, run)
