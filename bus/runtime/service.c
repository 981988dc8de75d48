/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "bus-util.h"
#include "con-paths.h"
#include "errors.h"
#include "log.h"
#include "macro.h"
#include "service.h"

void con_service_init(ConService *s) {
        log_setup(s->name);
}

int con_service_parse_option(ConService *s, int c, const char *arg) {
        int r;

        switch (c) {
        case 'h':
                if (s->help)
                        s->help();
                return 0;
        case CON_ARG_VERSION:
                printf("%s %s\n", s->name, CON_VERSION);
                return 0;
        case CON_ARG_LOG_LEVEL:
                r = log_level_from_string(arg);
                if (r < 0) {
                        log_error("--log-level: '%s' is not one of debug, info, notice, warning, err (or 0..7)", arg);
                        s->usage_error = true;
                        return -EINVAL;
                }
                log_set_max_level(r);
                return 1;
        case CON_ARG_LOG_FILE:
                /* Now, so that everything after the options (the configuration's errors too)
                 * lands in the file: under bus activation stderr is /dev/null. */
                r = log_open_file(arg);
                if (r < 0)
                        /* Not fatal: a service that cannot log still serves (to stderr). */
                        log_warning_errno(r, "--log-file: cannot open %s, logging to stderr: %m", arg);
                else
                        s->log_file = arg;
                return 1;
        case CON_ARG_BUS_INTROSPECT: {
                _cleanup_free_ char *xml = NULL;
                if (!s->introspect) {
                        log_error("--bus-introspect: this service has no fixed interface");
                        s->usage_error = true;
                        return -EINVAL;
                }
                r = s->introspect(&xml);
                if (r < 0)
                        return log_error_errno(r, "Cannot generate the introspection XML: %m");
                fputs(xml, stdout);
                return 0;
        }
        default:
                /* getopt has printed what is wrong. */
                log_error("See %s --help", s->name);
                s->usage_error = true;
                return -EINVAL;
        }
}

int con_service_no_arguments(ConService *s, int argc, char **argv, int optind_) {
        if (optind_ < argc) {
                log_error("Unexpected argument '%s' (see --help)", argv[optind_]);
                s->usage_error = true;
                return -EINVAL;
        }
        return 1;
}

int con_service_start(ConService *s, ConServiceFlags flags) {
        int r;

        (void) con_bus_errors_register();
        r = sd_event_default(&s->event);
        if (r < 0)
                return log_error_errno(r, "Cannot create the event loop: %m");
        if (!(flags & CON_SERVICE_OWN_SIGNALS)) {
                /* SIGTERM and SIGINT end the loop: the service cleans up and exits 0. */
                r = sd_event_set_signal_exit(s->event, true);
                if (r < 0)
                        return log_error_errno(r, "Cannot handle SIGTERM and SIGINT: %m");
        }
        if (flags & CON_SERVICE_NO_BUS)
                return 0;

        if (s->bus_address) {
                r = sd_bus_new(&s->bus);
                if (r >= 0)
                        r = sd_bus_set_address(s->bus, s->bus_address);
                if (r >= 0)
                        r = sd_bus_set_bus_client(s->bus, true);
                if (r >= 0)
                        r = sd_bus_start(s->bus);
        } else
                r = sd_bus_open_system(&s->bus);
        if (r < 0)
                return log_error_errno(r, "Cannot connect to the %s bus: %m", s->bus_address ? "given" : "system");
        r = sd_bus_attach_event(s->bus, s->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "Cannot attach the bus to the event loop: %m");
        /* Bus gone (dbus-daemon restarted): exit, and let con up, bus activation or systemd start
         * a new process on the new bus. */
        r = con_bus_exit_on_disconnect(s->bus);
        if (r < 0)
                return log_error_errno(r, "Cannot watch the bus connection: %m");
        return 0;
}

int con_service_loop(ConService *s, const char *status) {
        _cleanup_free_ char *ready = NULL;
        if (asprintf(&ready, "READY=1\nSTATUS=%s", strempty(status)) < 0)
                return log_error_errno(-ENOMEM, "Out of memory");
        (void) sd_notify(false, ready);
        log_info("Ready: %s", strempty(status));
        int r = sd_event_loop(s->event);
        (void) sd_notify(false, "STOPPING=1");
        if (r == -ENOTCONN)
                log_error("Lost the connection to the bus; exiting");
        else if (r < 0)
                log_error_errno(r, "Event loop failed: %m");
        return r;
}

int con_service_become(const char *user) {
        struct passwd *pw = getpwnam(user);
        if (!pw)
                return log_error_errno(-ENOENT, "User %s does not exist (con bootstrap creates it)", user);
        if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
                return log_error_errno(-errno, "Cannot become %s: %m", user);
        if (setuid(0) == 0)
                return log_error_errno(-EPERM, "Could regain root after dropping it; refusing to run");
        return 0;
}

void con_service_done(ConService *s) {
        s->bus = sd_bus_flush_close_unref(s->bus);
        s->event = sd_event_unref(s->event);
}

int con_service_exit_status(const ConService *s, int r) {
        if (r >= 0)
                return r;
        return s->usage_error ? CON_SERVICE_EXIT_USAGE : EXIT_FAILURE;
}
