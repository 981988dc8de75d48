/* SPDX-License-Identifier: MIT */
#pragma once

#include <getopt.h>
#include <stdbool.h>
#include <stdlib.h>

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

/* The skeleton every daemon's main is built on (con-routerd, con-agentd, con-contractd,
 * con-modeld), after systemd's small daemons:
 *
 *      static ConService svc = { .name = "con-foo", .help = help, .introspect = foo_introspect_xml };
 *
 *      static int run(int argc, char **argv) {
 *              r = parse_argv(argc, argv);      // its own options plus CON_SERVICE_OPTIONS; the
 *              if (r <= 0) return r;            // default: case calls con_service_parse_option()
 *              r = con_service_start(&svc, 0);  // log file, event loop, SIGTERM/SIGINT, the bus
 *              ... create the service's objects on svc.event and svc.bus, take the bus name ...
 *              return con_service_loop(&svc, "Serving");   // READY=1, loop, STOPPING=1
 *      }
 *      CON_SERVICE_MAIN(svc, run)
 *
 * Common options: -h --help, --version, --log-level LEVEL, --log-file PATH, --bus-introspect. */

enum {
        CON_ARG_VERSION = 0x1000,
        CON_ARG_LOG_LEVEL,
        CON_ARG_LOG_FILE,
        CON_ARG_BUS_INTROSPECT,
};

#define CON_SERVICE_OPTIONS                                                             \
        { "help",           no_argument,       NULL, 'h'                    },         \
        { "version",        no_argument,       NULL, CON_ARG_VERSION        },         \
        { "log-level",      required_argument, NULL, CON_ARG_LOG_LEVEL      },         \
        { "log-file",       required_argument, NULL, CON_ARG_LOG_FILE       },         \
        { "bus-introspect", no_argument,       NULL, CON_ARG_BUS_INTROSPECT }

/* The help lines of the common options, for the services' --help. */
#define CON_SERVICE_HELP                                                                                \
        "  -h --help              Show this help\n"                                                     \
        "     --version           Show the version\n"                                                   \
        "     --log-level LEVEL   Log up to this priority: debug, info (default), notice, warning,\n"   \
        "                         err (also $CON_LOG_LEVEL)\n"                                          \
        "     --log-file PATH     Log to this file (stdout and stderr too) instead of stderr\n"         \
        "     --bus-introspect    Print the service's D-Bus interface XML and exit\n"

/* Exit status of a usage error (the daemons' tradition: 2, as getopt-based tools). */
#define CON_SERVICE_EXIT_USAGE 2

typedef enum ConServiceFlags {
        CON_SERVICE_OWN_SIGNALS = 1 << 0,   /* the service handles SIGTERM/SIGINT itself */
        CON_SERVICE_NO_BUS      = 1 << 1,   /* con_service_start() does not connect */
} ConServiceFlags;

typedef struct ConService {
        const char *name;                       /* "con-routerd": log identifier, messages */
        void (*help)(void);
        int (*introspect)(char **ret_xml);      /* --bus-introspect */
        const char *bus_address;                /* NULL: the system bus */

        /* Set by the skeleton. */
        const char *log_file;
        bool usage_error;
        sd_event *event;
        sd_bus *bus;
} ConService;

/* Sets up the logger for s->name (stderr, $CON_LOG_LEVEL). Called by CON_SERVICE_MAIN. */
void con_service_init(ConService *s);

/* Handles one result of getopt_long() that the service did not: the common options, and '?'
 * (an unknown option, already reported by getopt). Returns 1 to go on, 0 when the program is
 * done (--help, --version, --bus-introspect printed) and -EINVAL on a usage error (reported). */
int con_service_parse_option(ConService *s, int c, const char *arg);

/* Reports and refuses arguments left after the options. Returns 1 or -EINVAL. */
int con_service_no_arguments(ConService *s, int argc, char **argv, int optind_);

/* Takes the default event loop, makes SIGTERM and SIGINT end it (unless
 * CON_SERVICE_OWN_SIGNALS), connects to the bus (unless CON_SERVICE_NO_BUS), attaches it to the
 * loop and makes a lost bus connection end the loop with -ENOTCONN (con_bus_exit_on_disconnect).
 * Logs what failed. */
int con_service_start(ConService *s, ConServiceFlags flags);

/* Tells the service manager READY=1 (with STATUS=status), runs the loop, then STOPPING=1.
 * Returns the loop's exit code (>= 0) or a negative errno; a lost bus is logged. */
int con_service_loop(ConService *s, const char *status);

void con_service_done(ConService *s);

/* For a service started as root that binds and opens what it needs first: becomes user (its
 * primary group, no supplementary groups) for good; refuses to go on when root could be regained.
 * Logs what failed. */
int con_service_become(const char *user);

/* The exit status for run()'s result: r < 0 is a failure (2 after a usage error), r >= 0 is
 * passed through (0 success). */
int con_service_exit_status(const ConService *s, int r);

#define CON_SERVICE_MAIN(svc, run_func)                                 \
        int main(int argc, char *argv[]) {                              \
                con_service_init(&(svc));                               \
                int _r = run_func(argc, argv);                          \
                con_service_done(&(svc));                               \
                return con_service_exit_status(&(svc), _r);             \
        }
