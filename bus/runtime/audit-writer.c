/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>

#include "audit-writer.h"
#include "macro.h"

struct ConAuditWriter {
        ConAudit *audit;
        sd_event_source *timer;
        bool dirty;
        bool failing;
};

static int on_flush_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) con_audit_writer_flush(userdata);
        return 0;
}

ConAuditWriter *con_audit_writer_free(ConAuditWriter *w) {
        if (!w)
                return NULL;
        (void) con_audit_writer_flush(w);
        sd_event_source_disable_unref(w->timer);
        con_audit_close(w->audit);
        free(w);
        return NULL;
}

int con_audit_writer_new(sd_event *e, const char *dir, ConAuditWriter **ret) {
        _cleanup_(con_audit_writer_freep) ConAuditWriter *w = calloc(1, sizeof(*w));
        int r;

        if (!w)
                return -ENOMEM;
        r = con_audit_open(dir, &w->audit);
        if (r < 0)
                return r;
        con_audit_set_sync(w->audit, false);
        r = sd_event_add_time_relative(e, &w->timer, CLOCK_MONOTONIC, CON_AUDIT_FLUSH_USEC, 0, on_flush_timer, w);
        if (r < 0)
                return r;
        r = sd_event_source_set_enabled(w->timer, SD_EVENT_OFF);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(w);
        return 0;
}

int con_audit_writer_flush(ConAuditWriter *w) {
        if (!w || !w->dirty)
                return 0;
        w->dirty = false;
        return con_audit_flush(w->audit);
}

int con_audit_writer_append_many(ConAuditWriter *w, const ConAuditRecord *recs, size_t n, bool *ret_first_failure) {
        int r = con_audit_append_many(w->audit, recs, n);
        if (ret_first_failure)
                *ret_first_failure = r < 0 && !w->failing;
        w->failing = r < 0;
        if (r < 0 || n == 0)
                return r;
        w->dirty = true;
        /* Armed relative to now and only when not pending already: re-arming a timer whose time
         * has passed would fire at once and flush (two fdatasyncs) per record. */
        int enabled = SD_EVENT_OFF;
        (void) sd_event_source_get_enabled(w->timer, &enabled);
        if (enabled == SD_EVENT_OFF) {
                (void) sd_event_source_set_time_relative(w->timer, CON_AUDIT_FLUSH_USEC);
                (void) sd_event_source_set_enabled(w->timer, SD_EVENT_ONESHOT);
        }
        return 0;
}

int con_audit_writer_append(ConAuditWriter *w, const char *service, const char *event, const cJSON *fields,
                            bool *ret_first_failure) {
        return con_audit_writer_append_many(w, &(ConAuditRecord) { service, event, fields }, 1, ret_first_failure);
}

cJSON *con_audit_task_fields(const char *task_id, const char *agent, const char *sender) {
        cJSON *f = cJSON_CreateObject();
        if (!f)
                return NULL;
        if ((task_id && !cJSON_AddStringToObject(f, "task_id", task_id)) ||
            (agent && !cJSON_AddStringToObject(f, "agent", agent)) ||
            (sender && !cJSON_AddStringToObject(f, "sender", sender))) {
                cJSON_Delete(f);
                return NULL;
        }
        return f;
}
