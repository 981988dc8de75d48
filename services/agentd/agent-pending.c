/* SPDX-License-Identifier: MIT */
/* Reply batching: replies and signals wait for the group commit of the queue journal. */
#include <syslog.h>

#include "agent-service.h"
#include "con-paths.h"
#include "errors.h"
#include "json-util.h"
#include "macro.h"
#include "names.h"

/* ---- pending replies and signals ---- */

int agent_pending_add(AgentContext *c, AgentPendingKind kind, sd_bus_message *call, AgentTask *t) {
        if (GROW_ONE(c->pending, c->n_pending, c->n_pending_alloc) < 0)
                return -ENOMEM;
        c->pending[c->n_pending++] = (AgentPending) {
                .kind = kind,
                .call = call ? sd_bus_message_ref(call) : NULL,
                .task = t,
        };
        agent_context_schedule_flush(c);
        return 0;
}

/* The task events: their signal and their audit event. The replies have neither. */
static const struct {
        const char *member, *event;
} task_events[] = {
        [PENDING_ACCEPTED] = { "TaskAccepted", "task.accepted" },
        [PENDING_STARTED] = { "TaskStarted", "task.started" },
        [PENDING_COMPLETED] = { "TaskCompleted", "task.completed" },
};

static cJSON *audit_task_fields(AgentContext *c, AgentPendingKind kind, const AgentTask *t) {
        cJSON *f = con_audit_task_fields(t->id, c->agent->name, t->sender);
        if (f && kind == PENDING_COMPLETED)
                (void) cJSON_AddStringToObject(f, "status", agent_task_status_to_a2a(t->status));
        if (f && kind == PENDING_ACCEPTED && t->chain)
                /* Why an agent tasks another: the chain of tasks above it, the parent last. */
                (void) cJSON_AddStringToObject(f, "chain", t->chain);
        return f;
}

/* The audit records of the task events of one group commit, with one append (one lock, one write)
 * before any of their signals goes out. */
static void audit_task_events(AgentContext *c) {
        if (!c->audit || c->n_pending == 0)
                return;
        _cleanup_free_ ConAuditRecord *recs = calloc(c->n_pending, sizeof(ConAuditRecord));
        size_t n = 0;
        int r = recs ? 0 : -ENOMEM;
        for (size_t i = 0; i < c->n_pending && r >= 0; i++) {
                AgentPendingKind kind = c->pending[i].kind;
                if ((size_t) kind >= ELEMENTSOF(task_events) || !task_events[kind].event)
                        continue;
                cJSON *f = audit_task_fields(c, kind, c->pending[i].task);
                if (!f)
                        r = -ENOMEM;
                else
                        recs[n++] = (ConAuditRecord) { c->agent->name, task_events[kind].event, f };
        }
        bool first = false;
        if (r >= 0)
                r = con_audit_writer_append_many(c->audit, recs, n, &first);
        else
                first = true;
        if (r < 0 && first)
                log_full(LOG_ERR, "Failed to append to the audit log: %s", strerror(-r));
        for (size_t i = 0; i < n; i++)
                cJSON_Delete((cJSON *) recs[i].fields);
}

/* Signals go out after the group commit made the change durable, and after their audit records. */
static void emit_task_signal(AgentContext *c, AgentPendingKind kind, const AgentTask *t) {
        const char *member = task_events[kind].member;
        for (size_t i = 0; i < c->n_buses; i++) {
                int r;
                if (!sd_bus_is_open(c->buses[i]))
                        continue;
                if (kind == PENDING_COMPLETED)
                        r = sd_bus_emit_signal(c->buses[i], CON_AGENT_PATH, CON_AGENT_INTERFACE, member, "sss",
                                               t->id, t->sender, agent_task_status_to_a2a(t->status));
                else
                        r = sd_bus_emit_signal(c->buses[i], CON_AGENT_PATH, CON_AGENT_INTERFACE, member, "ss",
                                               t->id, t->sender);
                if (r < 0)
                        log_full(LOG_WARNING, "Failed to emit %s for %s, ignoring: %s", member, t->id, strerror(-r));
        }
}

/* A derived file could not be written (disk full): write every missing one again a little later,
 * so that outbox/ fills in once space returns, not only at the next start. */
#define FILES_RETRY_USEC (2 * USEC_PER_SEC)

static int on_files_retry(sd_event_source *s, uint64_t usec, void *userdata);

void agent_files_retry_arm(AgentContext *c) {
        uint64_t when = con_now(CLOCK_MONOTONIC) + FILES_RETRY_USEC;
        int enabled = SD_EVENT_OFF;
        if (!c->files_retry_source) {
                int r = sd_event_add_time(c->event, &c->files_retry_source, CLOCK_MONOTONIC, when, 0,
                                          on_files_retry, c);
                if (r < 0)
                        log_full(LOG_WARNING, "Failed to arm the retry of the task files, ignoring: %s",
                                strerror(-r));
                return;
        }
        (void) sd_event_source_get_enabled(c->files_retry_source, &enabled);
        if (enabled != SD_EVENT_OFF)
                return;
        (void) sd_event_source_set_time(c->files_retry_source, when);
        (void) sd_event_source_set_enabled(c->files_retry_source, SD_EVENT_ONESHOT);
}

static int on_files_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        AgentContext *c = userdata;
        int r = agent_queue_write_all_files(c->queue);
        if (r < 0)
                agent_files_retry_arm(c);
        else
                log_full(LOG_NOTICE, "Wrote the outbox/processed/failed files that could not be written before");
        return 0;
}

void agent_pending_run(AgentContext *c, int commit_error) {
        if (commit_error >= 0)
                audit_task_events(c);
        for (size_t i = 0; i < c->n_pending; i++) {
                AgentPending *p = &c->pending[i];
                int r = 0;
                if (commit_error < 0) {
                        if (p->call) {
                                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                                (void) con_bus_error_setf(&e, CON_ERROR_STORAGE_FAILED,
                                                          "Cannot write the queue journal of agent '%s': %s; "
                                                          "nothing was accepted, try again later",
                                                          c->agent->name, strerror(-commit_error));
                                r = sd_bus_reply_method_error(p->call, &e);
                        }
                } else
                        switch (p->kind) {
                        case PENDING_REPLY_ID:
                                r = sd_bus_reply_method_return(p->call, "s", p->task->id);
                                break;
                        case PENDING_REPLY_EMPTY:
                                r = sd_bus_reply_method_return(p->call, NULL);
                                break;
                        case PENDING_ACCEPTED:
                                emit_task_signal(c, p->kind, p->task);
                                log_event(CON_EVENT_TASK_ACCEPTED, LOG_INFO,
                                          &(ConLogFields) { .task_id = p->task->id, .agent = c->agent->name,
                                                            .sender = p->task->sender },
                                          "Task %s accepted from %s", p->task->id, p->task->sender);
                                break;
                        case PENDING_STARTED:
                                emit_task_signal(c, p->kind, p->task);
                                break;
                        case PENDING_COMPLETED: {
                                const char *st = agent_task_status_to_string(p->task->status);
                                bool ok = p->task->status == AGENT_TASK_DONE;
                                emit_task_signal(c, p->kind, p->task);
                                log_event(ok ? CON_EVENT_TASK_COMPLETED : CON_EVENT_TASK_FAILED,
                                          ok ? LOG_INFO : LOG_NOTICE,
                                          &(ConLogFields) { .task_id = p->task->id, .agent = c->agent->name,
                                                            .sender = p->task->sender, .status = st },
                                          "Task %s of %s: %s", p->task->id, p->task->sender, st);
                                r = agent_queue_write_new_files(c->queue, p->task);
                                if (r < 0) {
                                        log_full(LOG_WARNING, "Failed to write the files of task %s, will retry: %s",
                                                p->task->id, strerror(-r));
                                        agent_files_retry_arm(c);
                                }
                                r = 0;
                                break;
                        }
                        }
                if (r < 0)
                        log_full(LOG_DEBUG, "Failed to send a reply, ignoring: %s", strerror(-r));
                sd_bus_message_unref(p->call);
        }
        c->n_pending = 0;
}
