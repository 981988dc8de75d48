/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdint.h>

#include <systemd/sd-bus.h>

/* Small sd-bus helpers shared by the services. */

/* Serves vtable at path/interface on one end of a private socketpair (in a thread) and returns
 * the introspection XML that sd-bus generates for it, as a client sees it. Used by
 * `--bus-introspect` and by the test that keeps interfaces/\*.xml identical to the services. The
 * vtable's handlers are never called. */
int con_bus_introspect_vtable(const char *path, const char *interface, const sd_bus_vtable *vtable,
                              char **ret_xml);

/* When the connection to the bus is lost (dbus-daemon restarted or killed), the event loop the
 * bus is attached to exits with -ENOTCONN, so the service's run function returns that error and
 * the process exits non-zero (con up, bus activation or systemd's Restart=on-failure start a new
 * one on the new bus) instead of serving a dead connection forever. Call after
 * sd_bus_attach_event(). */
int con_bus_exit_on_disconnect(sd_bus *bus);

/* Appends one entry {key: variant of type} to an open a{sv} container of m; the value as for
 * sd_bus_message_append(m, type, ...). Returns 0 or a negative errno. */
int con_bus_append_entry(sd_bus_message *m, const char *key, const char *type, ...);

/* The task options "priority" (y, 0..CON_TASK_PRIORITY_MAX, higher runs first) and "deadline"
 * (t, CLOCK_REALTIME usec, 0: none), as an agent's Deliver and the mesh gateway's Submit take
 * them: reads the variant of the entry whose key KEY was just read into *priority or
 * *deadline_usec. 1 when KEY is one of them, 0 when it is not (nothing read), < 0 with error set
 * for a wrong type or a priority out of range. */
int con_bus_read_task_option(sd_bus_message *m, const char *key, int *priority, uint64_t *deadline_usec,
                             sd_bus_error *error);

/* The a{sv} that follows status and text in the reply of org.conspiracy.Agent1.GetResultInfo:
 * "truncated", "replaced" (b) and "size" (t); unknown keys are skipped (later versions may add
 * some), missing ones stay false/0. The mesh gateway's GetResultInfo (org.conspiracy.Mesh1) adds
 * "host", "agent" and "state" (s), an agent's "sender" (s), borrowed from m (NULL when missing). */
typedef struct ConResultInfo {
        int truncated, replaced;
        uint64_t size;
        const char *host, *agent, *state, *sender;
} ConResultInfo;
int con_bus_read_result_info(sd_bus_message *m, ConResultInfo *ret);
