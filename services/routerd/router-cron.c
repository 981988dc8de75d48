/* SPDX-License-Identifier: MIT */
/* cron_task submissions for mode: cron agents where systemd does not run the timers. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/inotify.h>
#include <sys/queue.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "audit-writer.h"
#include "bus-util.h"
#include "con-paths.h"
#include "config.h"
#include "cron.h"
#include "errors.h"
#include "log.h"
#include "macro.h"
#include "names.h"
#include "router-internal.h"
#include "router.h"
#include "router-util.h"
#include "spool.h"
#include "strv.h"
#include "task.h"
#include "time-util.h"


/* ---- cron, for hosts without systemd ---- */

static int on_cron_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Target *t = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);
        const char *id = NULL;
        if (e) {
                log_warning("Scheduled task for %s was not accepted: %s", t->agent, e->message ?: e->name);
                return 0;
        }
        (void) sd_bus_message_read(m, "s", &id);
        cJSON *f = con_audit_task_fields(id, t->agent, "root");
        router_audit(t->router, "router", "task.scheduled", f);
        return 0;
}


static int on_cron(sd_event_source *s, uint64_t usec, void *userdata) {
        Target *t = userdata;
        Router *r = t->router;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_free_ char *id = NULL;
        int k;

        if ((k = con_task_id_new(&id)) < 0 ||
            (k = sd_bus_message_new_method_call(r->bus, &m, t->bus_name, CON_AGENT_PATH, CON_AGENT_INTERFACE,
                                                "Deliver")) < 0 ||
            (k = sd_bus_message_open_container(m, 'a', "{sv}")) < 0 ||
            (k = con_bus_append_entry(m, "text", "s", t->cron_task ?: "/status")) < 0 ||
            (k = con_bus_append_entry(m, "id", "s", id)) < 0 ||
            (k = sd_bus_message_close_container(m)) < 0 ||
            (k = sd_bus_call_async(r->bus, NULL, m, on_cron_reply, t, DELIVER_TIMEOUT_USEC)) < 0)
                log_error("Failed to submit the scheduled task of %s: %s", t->agent, strerror(-k));
        (void) router_cron_arm(t);
        return 0;
}

int router_cron_arm(Target *t) {
        Router *r = t->router;
        time_t next;
        int k;

        k = con_cron_next(&t->cron, time(NULL), false, &next);
        if (k < 0)
                return k;
        uint64_t when = (uint64_t) next * USEC_PER_SEC;
        if (!t->cron_timer) {
                k = sd_event_add_time(r->event, &t->cron_timer, CLOCK_REALTIME, when, USEC_PER_SEC, on_cron, t);
                if (k < 0)
                        return k;
        } else
                (void) sd_event_source_set_time(t->cron_timer, when);
        return sd_event_source_set_enabled(t->cron_timer, SD_EVENT_ONESHOT);
}
