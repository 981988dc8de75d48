/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-bus.h>

/* Small sd-bus helpers shared by the services. */

/* Serves vtable at path/interface on one end of a private socketpair (in a thread) and returns
 * the introspection XML that sd-bus generates for it, as a client sees it. Used by
 * `--bus-introspect` and by the test that keeps interfaces/\*.xml identical to the services. The
 * vtable's handlers are never called. */
int con_bus_introspect_vtable(const char *path, const char *interface, const sd_bus_vtable *vtable,
                              char **ret_xml);
