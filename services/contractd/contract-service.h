/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

/* con-contractd's bus glue: the Contracts object, one timer per contract, shell checks in child
 * processes, the actions (halt, quarantine, kill_session, alert), the budget notices to the
 * sysadmin (the model gateway's BudgetExhausted signal) and the audit records. */

typedef struct ContractsOptions {
        const char *config_path;        /* default /etc/con/con.yaml */
        const char *contracts_dir;      /* default /srv/con/contracts */
        const char *state_dir;          /* default /srv/con/state */
        const char *audit_dir;          /* default /srv/con/logs/audit */
        const char *activation_dir;     /* default /usr/local/share/dbus-1/system-services */
        const char *bus_policy_dir;     /* default /etc/dbus-1/system.d */
        const char *polkit_rules_dir;   /* default /etc/polkit-1/rules.d */
} ContractsOptions;

typedef struct Manager Manager;

/* On the service's event loop and bus connection (con_service_start()). */
int manager_new(const ContractsOptions *o, sd_event *event, sd_bus *bus, Manager **ret);
Manager *manager_free(Manager *m);
static inline void manager_freep(Manager **m) {
        manager_free(*m);
}
/* Publishes the object, loads the contracts and takes the bus name; the event loop then runs
 * until SIGTERM/SIGINT. Negative errno on fatal errors (logged). */
int manager_start(Manager *m);
/* --bus-introspect */
int manager_introspect_xml(char **ret);

/* The vtable, for the introspection test. */
extern const sd_bus_vtable contracts_vtable[];
