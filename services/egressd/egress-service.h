/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdint.h>

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

/* con-egressd's proxy (docs/NETWORK.md): listens on 127.0.0.1:egress.port, learns which agent
 * connected from the kernel (the client socket's owner UID, NETLINK_SOCK_DIAG), checks the
 * request against that agent's `network:` allow-list, resolves names on worker threads, relays
 * bytes with non-blocking I/O on the event loop, and writes one audit record per request. */

#define EGRESS_BUS_NAME "org.conspiracy.Egress"
#define EGRESS_USER "con-egress"
#define EGRESS_CONNS_MAX 512U
#define EGRESS_HEAD_TIMEOUT_USEC (10ULL * 1000000ULL)
#define EGRESS_CONNECT_TIMEOUT_USEC (10ULL * 1000000ULL)

typedef struct EgressOptions {
        const char *config_path;        /* NULL: CON_CONFIG_PATH */
        const char *audit_dir;          /* NULL: the audit log's default folder */
        const char *env_path;           /* NULL: CON_ENV_PATH (the services' secrets) */
        unsigned port;                  /* 0: egress.port of the config */
} EgressOptions;

typedef struct Egress Egress;

/* Reads the config and the agent users, opens the audit log, the kernel's socket-diagnosis
 * socket and the listening socket (all before the service drops root). Logs what failed. */
int egress_new(const EgressOptions *o, sd_event *e, Egress **ret);
/* Starts accepting; bus (may be NULL) is used to ask an agent for the task it is running. */
int egress_start(Egress *g, sd_bus *bus);
unsigned egress_port(const Egress *g);
Egress *egress_free(Egress *g);
static inline void egress_freep(Egress **g) {
        egress_free(*g);
}
