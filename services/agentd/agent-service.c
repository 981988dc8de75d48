/* SPDX-License-Identifier: MIT */
/* The org.conspiracy.Agent1 object: set-up, properties, the flush (dispatch, group commit, replies,
 * idle) and the exit paths. The methods, authorization, reply batching, running tasks and the
 * markers are in agent-*.c (agent-service.h lists them). */
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <syslog.h>

#include "agent-chain.h"
#include "agent-history.h"
#include "agent-service.h"
#include "bus-util.h"
#include "con-paths.h"
#include "macro.h"
#include "names.h"

#define DEFAULT_STOP_GRACE (5 * USEC_PER_SEC)
/* The retention of finished tasks: entries looked at or removed per step, the pause between the
 * steps of a pass (bus calls are served in between), and the bounds of the time between passes. */
#define PRUNE_BUDGET 256
#define PRUNE_STEP_USEC (50 * USEC_PER_MSEC)
#define PRUNE_PERIOD_MIN_USEC (100 * USEC_PER_MSEC)
#define PRUNE_PERIOD_MAX_USEC (3600 * USEC_PER_SEC)
/* A pass starts early, whatever the period, once this share of system.result_max has finished
 * since the last one began: a flood of cheap tasks never holds far more results than the cap. */
#define PRUNE_EARLY_DIVISOR 10

/* ---- the small API of agent-api.h ---- */

const ConConfig *agent_context_config(const AgentContext *c) {
        return c->config;
}

const ConAgent *agent_context_agent(const AgentContext *c) {
        return c->agent;
}

const ConRuntime *agent_context_runtime(const AgentContext *c) {
        return c->runtime;
}

AgentQueue *agent_context_queue(const AgentContext *c) {
        return c->queue;
}

const char *agent_context_data_dir(const AgentContext *c) {
        return c->data_dir;
}

const char *agent_context_conversations_dir(const AgentContext *c) {
        return c->conversations_dir;
}

uint64_t agent_context_uptime_usec(const AgentContext *c) {
        return con_now(CLOCK_MONOTONIC) - c->started_usec;
}

sd_bus *agent_context_system_bus(const AgentContext *c) {
        return c->bus_name && c->n_buses > 0 ? c->buses[0] : NULL;
}

/* ---- state and properties ---- */

const char *agent_context_state(const AgentContext *c) {
        AgentQueueStats st;
        if (c->quarantined)
                return "quarantined";
        if (c->halted_by_call || c->halted_by_marker)
                return "halted";
        if (c->stopping)
                return "stopping";
        agent_queue_get_stats(c->queue, &st);
        return st.n_running > 0 ? "busy" : "idle";
}

static const char *current_task(const AgentContext *c) {
        size_t n;
        AgentTask * const *tasks = agent_queue_tasks(c->queue, &n);
        AgentQueueStats st;
        agent_queue_get_stats(c->queue, &st);
        if (st.n_running == 0)
                return "";
        /* The oldest running task; running tasks are few and usually recent. */
        const AgentTask *best = NULL;
        for (size_t i = n; i > 0; i--)
                if (tasks[i - 1]->status == AGENT_TASK_RUNNING)
                        best = tasks[i - 1];
        return best ? best->id : "";
}

static void props_snapshot(const AgentContext *c, AgentPropsSnapshot *s) {
        AgentQueueStats st;
        agent_queue_get_stats(c->queue, &st);
        *s = (AgentPropsSnapshot) {
                .state = agent_context_state(c),
                .queue_length = (uint32_t) st.n_queued,
                .current_task = current_task(c),
                .accepted = st.n_tasks,
                .completed = st.n_done,
                .failed = st.n_failed,
                .valid = true,
        };
}

static void emit_props_changed(AgentContext *c) {
        AgentPropsSnapshot now;
        props_snapshot(c, &now);
        const char *changed[8];
        size_t n = 0;
        const AgentPropsSnapshot *o = &c->props;
        if (!o->valid || !streq(o->state, now.state))
                changed[n++] = "State";
        if (!o->valid || o->queue_length != now.queue_length)
                changed[n++] = "QueueLength";
        if (!o->valid || !streq(o->current_task, now.current_task))
                changed[n++] = "CurrentTask";
        if (!o->valid || o->accepted != now.accepted)
                changed[n++] = "TasksAccepted";
        if (!o->valid || o->completed != now.completed)
                changed[n++] = "TasksCompleted";
        if (!o->valid || o->failed != now.failed)
                changed[n++] = "TasksFailed";
        changed[n] = NULL;
        bool first = !o->valid;
        c->props = now;
        /* current_task points into a task that lives as long as the queue: fine to keep. */
        if (n == 0 || first)
                return;
        for (size_t i = 0; i < c->n_buses; i++) {
                if (!sd_bus_is_open(c->buses[i]))
                        continue;
                int r = sd_bus_emit_properties_changed_strv(c->buses[i], CON_AGENT_PATH, CON_AGENT_INTERFACE,
                                                            (char **) changed);
                if (r < 0)
                        log_full(LOG_WARNING, "Failed to emit PropertiesChanged, ignoring: %s", strerror(-r));
        }
}

/* ---- flush: dispatch, group commit, replies, signals, properties, idle ---- */

static bool context_idle(AgentContext *c) {
        AgentQueueStats st;
        agent_queue_get_stats(c->queue, &st);
        return st.n_queued == 0 && st.n_running == 0 && c->n_sessions == 0 && c->n_pending == 0 &&
                !agent_queue_has_batch(c->queue);
}

static int on_idle_timer(sd_event_source *s, uint64_t usec, void *userdata);
static void prune_maybe_early(AgentContext *c);

static void update_idle(AgentContext *c) {
        bool idle = context_idle(c);
        AgentQueueStats st;
        agent_queue_get_stats(c->queue, &st);
        /* Stopping or quarantined: queued tasks stay in the journal for the next start. */
        bool drained = st.n_running == 0 && c->n_sessions == 0 && c->n_pending == 0 &&
                !agent_queue_has_batch(c->queue);
        if ((idle && c->name_released) || (c->stopping && drained)) {
                (void) sd_event_exit(c->event, 0);
                return;
        }
        if (!idle || c->idle_exit_usec == 0 || c->stopping) {
                if (c->idle_source)
                        (void) sd_event_source_set_enabled(c->idle_source, SD_EVENT_OFF);
                return;
        }
        uint64_t when = con_now(CLOCK_MONOTONIC) + c->idle_exit_usec;
        if (!c->idle_source) {
                int r = sd_event_add_time(c->event, &c->idle_source, CLOCK_MONOTONIC, when, 0, on_idle_timer, c);
                if (r < 0)
                        log_full(LOG_WARNING, "Failed to arm the idle timer, ignoring: %s", strerror(-r));
                return;
        }
        (void) sd_event_source_set_time(c->idle_source, when);
        (void) sd_event_source_set_enabled(c->idle_source, SD_EVENT_ONESHOT);
}

int agent_context_flush(AgentContext *c) {
        agent_dispatch(c);
        int r = agent_queue_commit(c->queue);
        if (r < 0) {
                log_full(LOG_ERR, "Failed to write the queue journal: %s; stopping (the journal is intact up to "
                        "the last acknowledged task)", strerror(-r));
                agent_pending_run(c, r);
                c->failed_commit = true;
                (void) sd_event_exit(c->event, r);
                return r;
        }
        agent_pending_run(c, 0);
        /* No pending entry points at a task any more: finished tasks beyond the limit can go. */
        (void) agent_queue_evict(c->queue);
        prune_maybe_early(c);
        emit_props_changed(c);
        if (agent_queue_want_compact(c->queue)) {
                r = agent_queue_compact(c->queue);
                if (r < 0)
                        log_full(LOG_WARNING, "Failed to compact the queue journal, ignoring: %s", strerror(-r));
        }
        update_idle(c);
        return 0;
}

static int on_flush(sd_event_source *s, void *userdata) {
        (void) agent_context_flush(userdata);
        return 0;
}

void agent_context_schedule_flush(AgentContext *c) {
        if (c->flush_source)
                (void) sd_event_source_set_enabled(c->flush_source, SD_EVENT_ONESHOT);
}

/* ---- exit paths ---- */

static int on_name_released(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        AgentContext *c = userdata;
        c->name_released = true;
        agent_context_schedule_flush(c);
        return 0;
}

static void release_name(AgentContext *c) {
        if (!c->bus_name || c->n_buses == 0 || c->name_released)
                return;
        int r = sd_bus_release_name_async(c->buses[0], NULL, c->bus_name, on_name_released, c);
        if (r < 0) {
                log_full(LOG_WARNING, "Failed to release %s: %s", c->bus_name, strerror(-r));
                c->name_released = true;
        }
}

static int on_idle_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        AgentContext *c = userdata;
        if (!context_idle(c) || c->stopping)
                return 0;
        log_full(LOG_INFO, "Idle for %llus with an empty queue, exiting",
                (unsigned long long) (c->idle_exit_usec / USEC_PER_SEC));
        /* Calls that arrive before the release completes are still served; then we exit. */
        if (c->bus_name)
                release_name(c);
        else
                c->name_released = true;
        agent_context_schedule_flush(c);
        return 0;
}

static int on_stop_grace(sd_event_source *s, uint64_t usec, void *userdata) {
        AgentContext *c = userdata;
        size_t n;
        AgentTask * const *tasks = agent_queue_tasks(c->queue, &n);
        for (size_t i = 0; i < n; i++) {
                RunningTask *rt = tasks[i]->status == AGENT_TASK_RUNNING ? tasks[i]->userdata : NULL;
                if (rt && rt->session) {
                        log_full(LOG_NOTICE, "Task %s still running at shutdown: killed, it runs again at the next "
                                "start", tasks[i]->id);
                        rt->shutdown = true;
                        agent_session_cancel(rt->session);
                }
        }
        return 0;
}

void agent_context_begin_exit(AgentContext *c) {
        if (c->stopping)
                return;
        c->stopping = true;
        release_name(c);
        if (c->n_sessions > 0) {
                log_full(LOG_INFO, "Stopping: waiting up to %llus for %zu running session(s)",
                        (unsigned long long) (c->stop_grace_usec / USEC_PER_SEC), c->n_sessions);
                (void) sd_event_add_time_relative(c->event, &c->stop_source, CLOCK_MONOTONIC, c->stop_grace_usec,
                                                  0, on_stop_grace, c);
        }
        agent_context_schedule_flush(c);
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        agent_context_begin_exit(userdata);
        return 0;
}

int agent_context_install_signals(AgentContext *c) {
        int r = sd_event_add_signal(c->event, NULL, SIGTERM, on_signal, c);
        if (r < 0)
                return r;
        return sd_event_add_signal(c->event, NULL, SIGINT, on_signal, c);
}

/* ---- properties ---- */

static int property_get_string(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        const char *v = "";
        if (streq(property, "Name"))
                v = c->agent->name;
        else if (streq(property, "Tier"))
                v = con_tier_to_string(c->agent->tier);
        else if (streq(property, "Mode"))
                v = con_mode_to_string(c->agent->mode);
        else if (streq(property, "State"))
                v = agent_context_state(c);
        else if (streq(property, "CurrentTask"))
                v = current_task(c);
        return sd_bus_message_append(reply, "s", strempty(v));
}

static int property_get_roles(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        return sd_bus_message_append_strv(reply, c->agent->roles);
}

static int property_get_count(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        AgentQueueStats st;
        agent_queue_get_stats(c->queue, &st);
        if (streq(property, "QueueLength"))
                return sd_bus_message_append(reply, "u", (uint32_t) st.n_queued);
        if (streq(property, "TasksAccepted"))
                return sd_bus_message_append(reply, "t", (uint64_t) st.n_tasks);
        if (streq(property, "TasksCompleted"))
                return sd_bus_message_append(reply, "t", st.n_done);
        return sd_bus_message_append(reply, "t", st.n_failed);
}

const sd_bus_vtable agent_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("Submit", SD_BUS_ARGS("s", text), SD_BUS_RESULT("s", task_id), agent_method_submit,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Deliver", SD_BUS_ARGS("a{sv}", task), SD_BUS_RESULT("s", task_id), agent_method_deliver,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Cancel", SD_BUS_ARGS("s", task_id), SD_BUS_NO_RESULT, agent_method_cancel,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetResult", SD_BUS_ARGS("s", task_id), SD_BUS_RESULT("s", status, "s", text),
                                agent_method_get_result, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetResultInfo", SD_BUS_ARGS("s", task_id),
                                SD_BUS_RESULT("s", status, "s", text, "a{sv}", info),
                                agent_method_get_result_info, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetTranscript", SD_BUS_ARGS("s", task_id), SD_BUS_RESULT("s", transcript_json),
                                agent_method_get_transcript, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListTasks", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sss)", tasks), agent_method_list_tasks,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Halt", SD_BUS_ARGS("s", reason), SD_BUS_NO_RESULT, agent_method_halt,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Resume", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, agent_method_resume, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Quarantine", SD_BUS_ARGS("s", reason), SD_BUS_NO_RESULT, agent_method_quarantine,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("KillSessions", SD_BUS_ARGS("s", reason), SD_BUS_RESULT("u", killed),
                                agent_method_kill_sessions, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("TaskAccepted", SD_BUS_ARGS("s", task_id, "s", sender), 0),
        SD_BUS_SIGNAL_WITH_ARGS("TaskStarted", SD_BUS_ARGS("s", task_id, "s", sender), 0),
        SD_BUS_SIGNAL_WITH_ARGS("TaskCompleted", SD_BUS_ARGS("s", task_id, "s", sender, "s", status), 0),
        SD_BUS_SIGNAL_WITH_ARGS("TaskProgress", SD_BUS_ARGS("s", task_id, "u", turn, "s", phase), 0),
        SD_BUS_PROPERTY("Name", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Tier", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Roles", "as", property_get_roles, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Mode", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("State", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("QueueLength", "u", property_get_count, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("CurrentTask", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("TasksAccepted", "t", property_get_count, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("TasksCompleted", "t", property_get_count, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("TasksFailed", "t", property_get_count, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_VTABLE_END,
};

/* ---- setup ---- */

int agent_context_add_bus(AgentContext *c, sd_bus *bus) {
        sd_bus **b = reallocarray(c->buses, c->n_buses + 1, sizeof(sd_bus *));
        if (!b)
                return -ENOMEM;
        c->buses = b;
        sd_bus_slot **s = reallocarray(c->slots, c->n_buses + 1, sizeof(sd_bus_slot *));
        if (!s)
                return -ENOMEM;
        c->slots = s;
        int r = sd_bus_add_object_vtable(bus, &c->slots[c->n_buses], CON_AGENT_PATH, CON_AGENT_INTERFACE,
                                         agent_vtable, c);
        if (r < 0)
                return r;
        c->buses[c->n_buses++] = sd_bus_ref(bus);
        return 0;
}

int agent_context_request_name(AgentContext *c, sd_bus_error *error) {
        int r = con_agent_bus_name(c->agent->name, &c->bus_name);
        if (r < 0)
                return r;
        return sd_bus_request_name(c->buses[0], c->bus_name, 0);
}

/* ---- the retention of finished tasks (docs/AGENT.md "Retention") ---- */

static void format_duration(uint64_t usec, char *buf, size_t size) {
        static const struct {
                uint64_t usec;
                const char *unit;
        } units[] = {
                { 24ULL * 3600 * USEC_PER_SEC, "d" }, { 3600 * USEC_PER_SEC, "h" }, { 60 * USEC_PER_SEC, "m" },
                { USEC_PER_SEC, "s" }, { USEC_PER_MSEC, "ms" },
        };
        for (size_t i = 0; i < ELEMENTSOF(units); i++)
                if (usec >= units[i].usec && usec % units[i].usec == 0) {
                        (void) snprintf(buf, size, "%llu%s", (unsigned long long) (usec / units[i].usec),
                                        units[i].unit);
                        return;
                }
        (void) snprintf(buf, size, "%lluus", (unsigned long long) usec);
}

/* Tasks finished for the life of the journal (evicted ones included). */
static uint64_t finished_count(AgentContext *c) {
        AgentQueueStats st;
        agent_queue_get_stats(c->queue, &st);
        return st.n_done + st.n_failed + st.n_cancelled;
}

/* After a flush: a pass now, rather than at its period, once a tenth of system.result_max has
 * finished since the last pass began. */
static void prune_maybe_early(AgentContext *c) {
        if (!c->prune_source || c->prune_in_pass)
                return;
        uint64_t early = c->config->result_max / PRUNE_EARLY_DIVISOR + 1;
        if (finished_count(c) - c->prune_finished_mark < early)
                return;
        c->prune_finished_mark = finished_count(c); /* armed once */
        (void) sd_event_source_set_time_relative(c->prune_source, 0);
        (void) sd_event_source_set_enabled(c->prune_source, SD_EVENT_ONESHOT);
}

static int on_prune(sd_event_source *s, uint64_t usec, void *userdata) {
        AgentContext *c = userdata;
        uint64_t retention = c->config->result_retention_usec, now = con_now(CLOCK_REALTIME);
        uint64_t cutoff = now > retention ? now - retention : 0;
        size_t n = 0;

        if (!c->prune_in_pass)
                c->prune_finished_mark = finished_count(c);
        /* Tasks in memory are never removed from disk: those past the retention leave memory first,
         * when no pending reply or signal points at a task (as after a flush). */
        if (!c->prune_in_pass && c->n_pending == 0 && !agent_queue_has_batch(c->queue))
                (void) agent_queue_evict_before(c->queue, cutoff);
        int r = agent_queue_prune(c->queue, cutoff, c->config->result_max, PRUNE_BUDGET, &n);
        c->n_pruned += n;
        int e = 0;
        size_t failed = agent_queue_prune_failures(c->queue, &e);
        if (failed > 0 && c->prune_error == 0)
                c->prune_error = e;
        c->n_prune_failed += failed;
        if (r != 1 && c->n_prune_failed > 0) {
                log_full(LOG_WARNING, "Failed to remove the files of %zu finished task(s) past system.result_retention "
                         "or system.result_max in %s: %s; they stay known, the next pass tries again",
                         c->n_prune_failed, c->data_dir, strerror(-c->prune_error));
                c->n_prune_failed = 0;
                c->prune_error = 0;
        }
        if (r < 0) {
                log_full(LOG_WARNING, "Failed to remove the finished tasks past system.result_retention or "
                         "system.result_max in %s, will retry: %s", c->data_dir, strerror(-r));
                /* When it was the commit, the flush meets the same error: it answers who waits and
                 * stops the service. */
                agent_context_schedule_flush(c);
        }
        if (r != 1 && c->n_pruned > 0) {
                char d[32];
                format_duration(retention, d, sizeof(d));
                log_full(LOG_INFO, "Removed %zu finished task(s) and their files (queue/finished/, outbox/, "
                         "processed/, failed/): finished more than %s ago (system.result_retention) or beyond the "
                         "%u most recent (system.result_max, shared fairly between the senders)", c->n_pruned, d,
                         c->config->result_max);
                c->n_pruned = 0;
                /* The journal may still hold them: compacted at the next idle moment. */
                agent_context_schedule_flush(c);
        }
        c->prune_in_pass = r == 1;
        uint64_t period = retention / 4;
        period = period < PRUNE_PERIOD_MIN_USEC ? PRUNE_PERIOD_MIN_USEC :
                 period > PRUNE_PERIOD_MAX_USEC ? PRUNE_PERIOD_MAX_USEC : period;
        (void) sd_event_source_set_time_relative(s, r == 1 ? PRUNE_STEP_USEC : period);
        (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return 0;
}

static void prune_arm(AgentContext *c) {
        /* The first pass right away: an on-demand agent may not run long. */
        int r = sd_event_add_time_relative(c->event, &c->prune_source, CLOCK_MONOTONIC, 0, 0, on_prune, c);
        if (r < 0)
                log_full(LOG_WARNING, "Failed to arm the retention timer, finished tasks are kept: %s", strerror(-r));
}

int agent_context_start(AgentContext *c) {
        int r = agent_queue_write_all_files(c->queue);
        if (r < 0) {
                log_full(LOG_WARNING, "Failed to regenerate outbox/processed/failed files, will retry: %s",
                        strerror(-r));
                agent_files_retry_arm(c);
        }
        prune_arm(c);
        agent_context_schedule_flush(c);
        return 0;
}

AgentContext *agent_context_free(AgentContext *c) {
        if (!c)
                return NULL;
        if (c->queue) {
                /* Whatever is still in the batch was never acknowledged; writing it is harmless. After
                 * a failed commit nothing is written: its callers were told nothing was accepted
                 * (agent_queue_commit() keeps failing). */
                (void) agent_queue_commit(c->queue);
                size_t n;
                AgentTask * const *tasks = agent_queue_tasks(c->queue, &n);
                for (size_t i = 0; i < n; i++)
                        if (tasks[i]->status == AGENT_TASK_RUNNING && tasks[i]->userdata) {
                                RunningTask *rt = tasks[i]->userdata;
                                tasks[i]->userdata = NULL;
                                agent_running_task_free(rt);
                        }
        }
        for (size_t i = 0; i < c->n_pending; i++)
                sd_bus_message_unref(c->pending[i].call);
        free(c->pending);
        con_authz_free(c->authz);
        con_policy_free(c->policy);
        sd_event_source_disable_unref(c->state_watch);
        sd_event_source_disable_unref(c->state_parent_watch);
        sd_event_source_disable_unref(c->quarantine_watch);
        sd_event_source_disable_unref(c->state_timer);
        con_audit_writer_free(c->audit);
        free(c->state_dir);
        free(c->halt_reason);
        free(c->marker_halt_reason);
        free(c->quarantine_reason);
        for (size_t i = 0; i < c->n_buses; i++) {
                sd_bus_slot_unref(c->slots[i]);
                sd_bus_unref(c->buses[i]);
        }
        free(c->buses);
        free(c->slots);
        sd_event_source_disable_unref(c->flush_source);
        sd_event_source_disable_unref(c->idle_source);
        sd_event_source_disable_unref(c->files_retry_source);
        sd_event_source_disable_unref(c->prune_source);
        sd_event_source_disable_unref(c->stop_source);
        agent_queue_free(c->queue);
        safe_close(c->data_dir_fd);
        safe_close(c->cgroup_fd);
        free((char *) c->session_user.name);
        free((gid_t *) c->session_user.groups);
        free(c->skills_dir);
        con_config_free(c->config);
        free(c->bus_name);
        free(c->data_dir);
        free(c->workspace);
        free(c->conversations_dir);
        sd_event_unref(c->event);
        free(c);
        return NULL;
}

int agent_context_new(sd_event *e, ConConfig *config, const AgentContextOptions *o, AgentContext **ret,
                      char **ret_error) {
        _cleanup_(agent_context_freep) AgentContext *c = calloc(1, sizeof(AgentContext));
        int r;

        if (!c)
                return -ENOMEM;
        c->data_dir_fd = c->cgroup_fd = -EBADF;
        c->event = sd_event_ref(e);
        c->started_usec = con_now(CLOCK_MONOTONIC);
        c->stop_grace_usec = DEFAULT_STOP_GRACE;

        c->agent = con_config_find_agent(config, o->agent);
        if (!c->agent) {
                if (asprintf(ret_error, "agent '%s' is not in %s (agents: list)", o->agent,
                             config->path ?: CON_CONFIG_PATH) < 0)
                        return -ENOMEM;
                return -ENOENT;
        }
        c->runtime = con_runtime_for_agent(c->agent);
        c->idle_exit_usec = c->agent->mode == CON_MODE_ALWAYS ? 0 : c->agent->idle_exit_usec;

        if (o->data_dir)
                c->data_dir = strdup(o->data_dir);
        else if (asprintf(&c->data_dir, CON_SRV_DIR "/agents/%s", c->agent->name) < 0)
                c->data_dir = NULL;
        if (!c->data_dir || asprintf(&c->workspace, "%s/workspace", c->data_dir) < 0 ||
            asprintf(&c->conversations_dir, "%s/queue/" AGENT_HISTORY_DIR, c->data_dir) < 0 ||
            asprintf(&c->skills_dir, "%s/skills", c->data_dir) < 0)
                return -ENOMEM;
        if (o->session_user) {
                const ConSessionUser *u = o->session_user;
                c->session_user = (ConSessionUser) { .uid = u->uid, .gid = u->gid, .n_groups = u->n_groups };
                c->session_user.name = strdup(u->name);
                gid_t *g = calloc(u->n_groups ?: 1, sizeof(gid_t));
                if (!c->session_user.name || !g) {
                        free(g);
                        return -ENOMEM;
                }
                memcpy(g, u->groups, u->n_groups * sizeof(gid_t));
                c->session_user.groups = g;
                c->has_session_user = true;
        }
        if (o->cgroup_dir) {
                c->cgroup_fd = open(o->cgroup_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (c->cgroup_fd < 0) {
                        r = -errno;
                        (void) asprintf(ret_error, "cannot open the cgroup %s: %s", o->cgroup_dir, strerror(-r));
                        return r;
                }
        }
        c->data_dir_fd = open(c->data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (c->data_dir_fd < 0) {
                r = -errno;
                (void) asprintf(ret_error, "cannot open the agent's directory %s: %s (con bootstrap creates it)",
                                c->data_dir, strerror(-r));
                return r;
        }
        {
                /* The service's own folder: nobody else may rename or replace what is in it. */
                struct stat st;
                if (fstat(c->data_dir_fd, &st) < 0)
                        return -errno;
                if (st.st_uid != geteuid() || (st.st_mode & 022)) {
                        (void) asprintf(ret_error, "%s belongs to uid %u with mode %04o: it must belong to the agent "
                                        "service's user (root) and not be writable by group or others, or a "
                                        "session could replace the queue and results (con bootstrap repairs it)",
                                        c->data_dir, (unsigned) st.st_uid, (unsigned) (st.st_mode & 07777));
                        return -EPERM;
                }
        }
        if (mkdirat(c->data_dir_fd, "workspace", 0700) >= 0) {
                /* The sessions' folder belongs to the agent user, not to the service. */
                if (c->has_session_user &&
                    fchownat(c->data_dir_fd, "workspace", c->session_user.uid, c->session_user.gid,
                             AT_SYMLINK_NOFOLLOW) < 0) {
                        r = -errno;
                        (void) asprintf(ret_error, "cannot give %s to %s: %s", c->workspace, c->session_user.name,
                                        strerror(-r));
                        return r;
                }
        } else if (errno != EEXIST) {
                r = -errno;
                (void) asprintf(ret_error, "cannot create %s: %s", c->workspace, strerror(-r));
                return r;
        }
        r = agent_queue_open_retained(c->data_dir_fd, o->lock_timeout_usec, config->result_retention_usec,
                                      &c->queue);
        if (r < 0) {
                if (r == -EWOULDBLOCK)
                        (void) asprintf(ret_error, "another con-agentd holds %s/queue/lock", c->data_dir);
                else if (r == -EPERM)
                        (void) asprintf(ret_error, "cannot open the queue in %s: queue/, outbox/, processed/, failed/ "
                                        "and queue/finished/ must belong to the agent service's user (root) and not "
                                        "be writable by group or others (con bootstrap repairs them)", c->data_dir);
                else
                        (void) asprintf(ret_error, "cannot open the queue in %s/queue: %s", c->data_dir,
                                        strerror(-r));
                return r;
        }
        /* At most system.result_max finished tasks in memory too (those in memory stay on disk). */
        if (config->result_max < AGENT_QUEUE_KEEP_FINISHED)
                agent_queue_set_keep_finished(c->queue, config->result_max);
        /* Nothing runs yet: records left by an instance that died are stale. */
        r = agent_chain_running_clear(c->data_dir_fd);
        if (r < 0)
                log_full(LOG_WARNING, "Cannot clear %s/" AGENT_CHAIN_RUNNING_DIR ": %s", c->data_dir, strerror(-r));
        AgentQueueStats st;
        agent_queue_get_stats(c->queue, &st);
        if (st.n_corrupt > 0)
                log_full(LOG_WARNING, "Skipped %u unreadable record(s) in %s/queue/journal", st.n_corrupt,
                        c->data_dir);
        if (st.untrusted_journal)
                log_full(LOG_ERR, "%s/queue/journal was not written by this service (owner, mode or links): not "
                        "replayed, set aside as queue/journal.untrusted-*; the queue starts empty", c->data_dir);
        if (st.torn_tail)
                log_full(LOG_NOTICE, "Cut a torn last record off %s/queue/journal (a crash during a write; it was "
                        "never acknowledged)", c->data_dir);
        /* Conversations of earlier versions were in the workspace, written by the sessions
         * themselves: not to be trusted, so removed without being read. */
        r = agent_history_remove_legacy(c->workspace);
        if (r > 0)
                log_full(LOG_NOTICE, "Removed %s/" AGENT_HISTORY_LEGACY_DIR "/ unread: conversations are kept in %s "
                        "now, out of the agent user's reach", c->workspace, c->conversations_dir);
        else if (r < 0)
                log_full(LOG_WARNING, "Cannot remove %s/" AGENT_HISTORY_LEGACY_DIR "/ (it is never read): %s",
                        c->workspace, strerror(-r));

        r = con_policy_from_config(config, &c->policy);
        if (r < 0) {
                (void) asprintf(ret_error, "cannot build the access policy from %s: %s (con policy show)",
                                config->path ?: CON_CONFIG_PATH, strerror(-r));
                return r;
        }
        c->no_authz = o->no_authz;
        c->state_dir = strdup(o->state_dir ?: CON_SRV_DIR "/state");
        if (!c->state_dir)
                return -ENOMEM;
        /* The agent's own task events go to the audit log from here, so they are recorded whether
         * or not the router runs. A log that cannot be opened does not stop the agent. */
        if (o->audit_dir) {
                r = con_audit_writer_new(e, o->audit_dir, &c->audit);
                if (r < 0)
                        log_full(LOG_ERR, "Failed to open the audit log in %s, serving without it: %s%s", o->audit_dir,
                                strerror(-r), r == -EBADMSG ? " (run 'con audit verify')" : "");
        }

        r = sd_event_add_defer(e, &c->flush_source, on_flush, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_priority(c->flush_source, SD_EVENT_PRIORITY_IDLE);
        (void) sd_event_source_set_enabled(c->flush_source, SD_EVENT_OFF);

        c->config = config;
        *ret = TAKE_PTR(c);
        return 0;
}

/* ---- introspection ---- */

int agent_introspect_xml(char **ret) {
        return con_bus_introspect_vtable(CON_AGENT_PATH, CON_AGENT_INTERFACE, agent_vtable, ret);
}
