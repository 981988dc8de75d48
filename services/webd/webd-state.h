/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-bus.h>

#include "config.h"

/* What con-webd knows of the fabric, learnt from the system bus only (docs/DASHBOARD.md):
 * properties read once when a service appears on the bus, then kept current by its
 * PropertiesChanged and task/violation signals. Nothing is polled, and no call ever starts a
 * service (bus-activatable names are only read while they have an owner). */

#define WEBD_EVENTS_MAX 100     /* the last events kept for the page */
#define WEBD_HISTORY_MINUTES 60 /* the plots' window */

typedef struct WebdState WebdState;

/* Called (from the event loop) whenever the state changed; the HTTP side coalesces and pushes. */
typedef void (*WebdChangedFunc)(void *userdata);

int webd_state_new(const ConConfig *config, WebdChangedFunc changed, void *userdata, WebdState **ret);
WebdState *webd_state_free(WebdState *s);
static inline void webd_state_freep(WebdState **s) {
        webd_state_free(*s);
}

/* Adds the matches and asks for the current owners and properties (all asynchronous). */
int webd_state_attach(WebdState *s, sd_bus *bus);

/* The whole state as one JSON object (a string for /api/state and the SSE "state" event).
 * Returns NULL on OOM. */
char *webd_state_to_json(WebdState *s, uint64_t now_usec);
