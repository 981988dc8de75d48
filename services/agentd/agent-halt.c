/* SPDX-License-Identifier: MIT */
/* Halt, Resume, Quarantine, KillSessions. */
#include <syslog.h>

#include "agent-service.h"
#include "errors.h"
#include "macro.h"
#include "names.h"

/* ---- halt, quarantine, kill sessions ---- */

#define AGENT_REASON_MAX 1024

/* Kills every running session's process group; each task fails with reason. Returns how many. */
uint32_t agent_kill_sessions(AgentContext *c, const char *reason) {
        size_t n;
        uint32_t killed = 0;
        AgentTask * const *tasks = agent_queue_tasks(c->queue, &n);
        for (size_t i = 0; i < n; i++) {
                RunningTask *rt = tasks[i]->status == AGENT_TASK_RUNNING ? tasks[i]->userdata : NULL;
                if (!rt || !rt->session || rt->session->exited || rt->session->cancelled)
                        continue;
                char *copy = strdup(reason);
                if (copy) {
                        free(rt->cancel_reason);
                        rt->cancel_reason = copy;
                }
                rt->kill_fails = true;
                agent_session_cancel(rt->session);
                killed++;
        }
        return killed;
}

static int check_reason(const char *reason, sd_bus_error *error) {
        if (strlen(reason) > AGENT_REASON_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "The reason is %zu bytes; at most %d "
                                         "are allowed", strlen(reason), AGENT_REASON_MAX);
        for (const char *p = reason; *p; p++)
                if ((unsigned char) *p < 0x20 && *p != '\t')
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "The reason must be one line of text without control characters");
        return 0;
}

/* The prologue of the admin methods that take a reason: read it, check it, authorize. Returns 1
 * allowed (*ret_reason points into m), 0 parked, negative with error set. */
static int admin_prologue(AgentContext *c, sd_bus_message *m, AgentVerb verb, AgentCaller *ret_caller,
                          const char **ret_reason, sd_bus_error *error) {
        int r = sd_bus_message_read(m, "s", ret_reason);
        if (r < 0)
                return r;
        r = check_reason(*ret_reason, error);
        if (r < 0)
                return r;
        return agent_authorize(c, m, verb, NULL, ret_caller, error);
}

/* "REASON (by USER)", for the state and the log. */
static char *reason_by(const char *reason, const AgentCaller *caller) {
        char *text = NULL;
        if (asprintf(&text, "%s (by %s)", isempty(reason) ? "no reason given" : reason, caller->name) < 0)
                return NULL;
        return text;
}

void agent_quarantine_now(AgentContext *c, const char *reason) {
        _cleanup_free_ char *why = NULL;
        if (c->quarantined)
                return;
        c->quarantined = true;
        free(c->quarantine_reason);
        c->quarantine_reason = strdup(isempty(reason) ? "no reason given" : reason);
        log_full(LOG_WARNING, "quarantined: %s; killing sessions, releasing %s and exiting (files stay)",
                strempty(c->quarantine_reason), c->bus_name ?: "the connection");
        if (asprintf(&why, "agent quarantined: %s", strempty(c->quarantine_reason)) < 0)
                why = NULL;
        (void) agent_kill_sessions(c, why ?: "agent quarantined");
        agent_context_begin_exit(c);
}

void agent_halt_changed(AgentContext *c, bool was_halted, const char *reason) {
        bool halted = c->halted_by_call || c->halted_by_marker;
        if (halted && !was_halted) {
                _cleanup_free_ char *why = NULL;
                if (asprintf(&why, "agent halted: %s", strempty(reason)) < 0)
                        why = NULL;
                uint32_t n = agent_kill_sessions(c, why ?: "agent halted");
                log_full(LOG_WARNING, "halted: %s (%u session(s) killed; queued tasks wait for con resume)",
                        strempty(reason), n);
        } else if (!halted && was_halted)
                log_full(LOG_NOTICE, "resumed: starting the queue");
        agent_context_schedule_flush(c);
}

int agent_method_halt(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        _cleanup_(agent_caller_done) AgentCaller caller = {};
        const char *reason;
        int r;

        r = admin_prologue(c, m, AGENT_VERB_HALT, &caller, &reason, error);
        if (r <= 0)
                return r < 0 ? r : 1; /* 0: parked, the handler runs again */
        bool was = c->halted_by_call || c->halted_by_marker;
        char *text = reason_by(reason, &caller);
        if (!text)
                return -ENOMEM;
        free(c->halt_reason);
        c->halt_reason = text;
        c->halted_by_call = true;
        agent_halt_changed(c, was, text);
        return sd_bus_reply_method_return(m, NULL);
}

int agent_method_resume(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        int r;

        r = agent_authorize(c, m, AGENT_VERB_RESUME, NULL, NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1; /* 0: parked, the handler runs again */
        if (c->quarantined)
                return con_bus_error_setf(error, CON_ERROR_QUARANTINED,
                                          "Agent '%s' is quarantined (%s); Resume does not lift a quarantine: "
                                          "`con release %s`", c->agent->name, strempty(c->quarantine_reason),
                                          c->agent->name);
        if (c->halted_by_marker)
                return con_bus_error_setf(error, CON_ERROR_HALTED,
                                          "Agent '%s' stays halted: %s (marker in %s, written by the contract "
                                          "service); `con resume` lifts it", c->agent->name,
                                          strempty(c->marker_halt_reason), c->state_dir);
        bool was = c->halted_by_call;
        c->halted_by_call = false;
        free(c->halt_reason);
        c->halt_reason = NULL;
        agent_halt_changed(c, was, NULL);
        return sd_bus_reply_method_return(m, NULL);
}

int agent_method_quarantine(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        _cleanup_(agent_caller_done) AgentCaller caller = {};
        _cleanup_free_ char *text = NULL;
        const char *reason;
        int r;

        r = admin_prologue(c, m, AGENT_VERB_QUARANTINE, &caller, &reason, error);
        if (r <= 0)
                return r < 0 ? r : 1; /* 0: parked, the handler runs again */
        text = reason_by(reason, &caller);
        if (!text)
                return -ENOMEM;
        r = sd_bus_reply_method_return(m, NULL);
        agent_quarantine_now(c, text);
        return r;
}

int agent_method_kill_sessions(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        const char *reason;
        int r;

        r = admin_prologue(c, m, AGENT_VERB_KILL_SESSIONS, NULL, &reason, error);
        if (r <= 0)
                return r < 0 ? r : 1; /* 0: parked, the handler runs again */
        uint32_t n = agent_kill_sessions(c, isempty(reason) ? "the session was killed (no reason given)" : reason);
        if (n > 0)
                log_full(LOG_WARNING, "Killed %u session(s): %s", n, reason);
        return sd_bus_reply_method_return(m, "u", n);
}
