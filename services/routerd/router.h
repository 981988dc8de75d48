/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

/* con-routerd's bus glue: the Router object, the inbox watches, the Deliver pipeline, the audit
 * writer and the cron scheduler for hosts without systemd. */

typedef struct RouterOptions {
        const char *config_path;        /* default CON_CONFIG_PATH */
        const char *srv_dir;            /* default CON_SRV_DIR */
        const char *audit_dir;          /* default SRV/logs/audit */
        bool once;                      /* one pass: route what is there, wait for acks, exit */
        unsigned window;                /* Deliver calls in flight, default 64 (< 128) */
        uint64_t rescan_usec;           /* periodic rescan, default 30 s */
        uint64_t once_timeout_usec;     /* give up in --once mode after this, default 60 s */
        int cron_mode;                  /* -1 auto (off under systemd), 0 off, 1 on */
} RouterOptions;

typedef struct Router Router;

/* Loads the config and prepares the inboxes, on the service's event loop and bus connection
 * (con_service_start()). Logs its own errors. */
int router_new(const RouterOptions *o, sd_event *event, sd_bus *bus, Router **ret);
Router *router_free(Router *r);
static inline void router_freep(Router **r) {
        router_free(*r);
}
/* Publishes the object, takes the bus name (daemon), watches and scans the inboxes. The event
 * loop then runs until SIGTERM/SIGINT (daemon) or until the pass is done (--once). */
int router_start(Router *r);
/* After the loop: flushes the audit log. Returns 0, or a positive exit status: 1 when --once
 * left tasks behind; loop_result when it is a negative errno. */
int router_stop(Router *r, int loop_result);
/* Loads the config again (SIGHUP, Reload): new agents' inboxes are watched and scanned, removed
 * ones forgotten (files already taken are still delivered). A config that does not load is
 * refused: the running one is kept and the reason is the ConfigError property. Logs. */
int router_reload(Router *r);
/* --bus-introspect */
int router_introspect_xml(char **ret);

/* The vtable, for the introspection test. */
extern const sd_bus_vtable router_vtable[];
