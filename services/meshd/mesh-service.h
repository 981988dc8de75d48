/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "audit-writer.h"
#include "config.h"

/* The mesh gateway, con-meshd (docs/MULTIHOST.md): org.conspiracy.Mesh1 on the system bus, and
 * this host's side of the NATS JetStream streams. All NATS calls block (nats.c), so none runs
 * on the event loop: one worker thread does the connection, the streams, every publish and
 * every acknowledgement from a job queue, and one fetch thread per stream pulls messages with
 * a bounded wait; both hand their outcomes to the loop through one eventfd. */

typedef struct Mesh Mesh;

/* Takes AUDIT (may be NULL: the writer of the audit log, opened while root), also on failure. */
int mesh_new(const ConConfig *config, sd_event *event, sd_bus *bus, ConAuditWriter *audit, Mesh **ret);
/* Exports the object, takes the bus name, starts the threads. */
int mesh_start(Mesh *m);
/* Stops and joins the threads (bounded by the fetch wait, 1 s). */
Mesh *mesh_free(Mesh *m);
static inline void mesh_freep(Mesh **m) {
        mesh_free(*m);
}

int mesh_introspect_xml(char **ret);
extern const sd_bus_vtable mesh_vtable[];
