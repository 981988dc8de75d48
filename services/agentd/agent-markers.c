/* SPDX-License-Identifier: MIT */
/* The contract service's halt and quarantine markers, read and watched. */
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <syslog.h>

#include "agent-service.h"
#include "macro.h"
#include "markers.h"
#include "utf8.h"

/* ---- markers of the contract service: STATE/halt, STATE/halt-workers, STATE/quarantine/NAME ---- */

/* The markers and their trust rule are bus/fabric/markers.h, shared with the contract service. */
static int read_markers(AgentContext *c, bool *ret_halted, char **ret_halt_reason, bool *ret_quarantined,
                        char **ret_quarantine_reason) {
        _cleanup_free_ char *reason = NULL, *qreason = NULL;
        int r;

        r = con_marker_read(c->state_dir, CON_MARKER_HALT, NULL, &reason);
        if (r == 0 && c->agent->tier == CON_TIER_WORKER)
                r = con_marker_read(c->state_dir, CON_MARKER_HALT_WORKERS, NULL, &reason);
        if (r < 0)
                return r;
        *ret_halted = r > 0;
        r = con_marker_read(c->state_dir, CON_MARKER_QUARANTINE, c->agent->name, &qreason);
        if (r < 0)
                return r;
        *ret_quarantined = r > 0;
        *ret_halt_reason = TAKE_PTR(reason);
        *ret_quarantine_reason = TAKE_PTR(qreason);
        return 0;
}

static void apply_markers(AgentContext *c, bool started) {
        _cleanup_free_ char *hreason = NULL, *qreason = NULL;
        bool halted = false, quarantined = false;
        int r = read_markers(c, &halted, &hreason, &quarantined, &qreason);
        if (r < 0) {
                log_full(LOG_WARNING, "Cannot read the markers in %s, ignoring: %s", c->state_dir, strerror(-r));
                return;
        }
        if (quarantined) {
                if (started)
                        agent_quarantine_now(c, qreason);
                else {
                        c->quarantined = true;
                        free(c->quarantine_reason);
                        c->quarantine_reason = TAKE_PTR(qreason);
                }
        }
        bool was = c->halted_by_call || c->halted_by_marker;
        if (halted != c->halted_by_marker || (halted && !streq_ptr(hreason, c->marker_halt_reason))) {
                c->halted_by_marker = halted;
                free(c->marker_halt_reason);
                c->marker_halt_reason = TAKE_PTR(hreason);
                if (started)
                        agent_halt_changed(c, was, c->marker_halt_reason);
        }
}

static int on_state_change(sd_event_source *s, const struct inotify_event *ev, void *userdata);
static int on_state_timer(sd_event_source *s, uint64_t usec, void *userdata);

#define STATE_MASK (IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | \
                    IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
#define STATE_RETRY (5 * USEC_PER_SEC)

/* Watches the state folder and its quarantine/ folder; while they are missing (or unreadable),
 * the parent and a slow timer notice their creation. */
static void state_watch_setup(AgentContext *c) {
        _cleanup_free_ char *q = NULL, *parent = NULL;
        if (!c->state_watch)
                (void) sd_event_add_inotify(c->event, &c->state_watch, c->state_dir, STATE_MASK, on_state_change, c);
        if (!c->quarantine_watch && asprintf(&q, "%s/quarantine", c->state_dir) >= 0)
                (void) sd_event_add_inotify(c->event, &c->quarantine_watch, q, STATE_MASK, on_state_change, c);
        if (c->state_watch && c->quarantine_watch)
                return;
        if (!c->state_watch && !c->state_parent_watch && (parent = strdup(c->state_dir))) {
                char *slash = strrchr(parent, '/');
                if (slash && slash != parent) {
                        *slash = 0;
                        (void) sd_event_add_inotify(c->event, &c->state_parent_watch, parent,
                                                    IN_CREATE | IN_MOVED_TO | IN_ONLYDIR, on_state_change, c);
                }
        }
        if (!c->state_timer)
                (void) sd_event_add_time_relative(c->event, &c->state_timer, CLOCK_MONOTONIC, STATE_RETRY, 0,
                                                  on_state_timer, c);
        else {
                (void) sd_event_source_set_time_relative(c->state_timer, STATE_RETRY);
                (void) sd_event_source_set_enabled(c->state_timer, SD_EVENT_ONESHOT);
        }
}

static void state_watch_drop(sd_event_source **s) {
        *s = sd_event_source_disable_unref(*s);
}

static int on_state_change(sd_event_source *s, const struct inotify_event *ev, void *userdata) {
        AgentContext *c = userdata;
        if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) {
                if (s == c->state_watch)
                        state_watch_drop(&c->state_watch);
                else if (s == c->quarantine_watch)
                        state_watch_drop(&c->quarantine_watch);
        }
        state_watch_setup(c);
        apply_markers(c, true);
        return 0;
}

static int on_state_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        AgentContext *c = userdata;
        state_watch_setup(c);
        apply_markers(c, true);
        return 0;
}

int agent_context_watch_state(AgentContext *c) {
        state_watch_setup(c);
        apply_markers(c, false);
        return 0;
}
