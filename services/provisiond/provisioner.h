/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "agent-spec.h"

/* con-provisiond's bus object, org.conspiracy.Provisioner1 (docs/PROVISIONING.md): commissions and
 * retires agents at run time. A call is read, checked and authorised (polkit action
 * org.conspiracy.agent.commission, asked with the caller's bus name) on the event loop; the work
 * (config checks, `con bootstrap --add-dropin|--remove-dropin`, retiring the files and the user)
 * runs in a worker child, one job at a time, and the call is answered when the child ends. */

typedef struct ProvisionerOptions {
        const char *config_path;        /* default /etc/con/con.yaml (drop-ins: its .d folder) */
        const char *con_path;           /* the con client; default CON_BINDIR/con */
        const char *run_dir;            /* drop-ins being commissioned; default /run/con-provisiond */
        unsigned fail_at;               /* tests: CON_TEST_BOOTSTRAP_FAIL_AT for the bootstrap runs */
        bool fail_retire;               /* tests: the retire step fails (CON_TEST_PROVISION_FAIL_RETIRE) */
} ProvisionerOptions;

typedef struct Provisioner Provisioner;

int provisioner_new(const ProvisionerOptions *o, sd_event *event, sd_bus *bus, Provisioner **ret);
Provisioner *provisioner_free(Provisioner *p);
static inline void provisioner_freep(Provisioner **p) {
        provisioner_free(*p);
}
/* Publishes the object and takes the bus name. */
int provisioner_start(Provisioner *p);
int provisioner_introspect_xml(char **ret);

extern const sd_bus_vtable provisioner_vtable[];

/* The a{sv} of CommissionAgent, read into spec (name set by the caller). Unknown keys and wrong
 * types are errors naming the key: -EINVAL with *ret_error set; -ENOMEM; other errors of the
 * message reader. */
int provisioner_read_spec(sd_bus_message *m, ConAgentSpec *spec, char **ret_error);
