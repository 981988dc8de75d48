/* SPDX-License-Identifier: MIT */
/* Running tasks: built-ins, sessions, conversations, the model gateway's task registry. */
#include <inttypes.h>
#include <signal.h>
#include <string.h>
#include <syslog.h>

#include "agent-builtins.h"
#include "agent-chain.h"
#include "agent-history.h"
#include "agent-llm.h"
#include "agent-service.h"
#include "json-util.h"
#include "macro.h"
#include "names.h"

/* ---- running tasks ---- */

/* reason[0..len): any bytes (a session's stderr): the queue makes them text. */
void agent_task_fail_now_bytes(AgentContext *c, AgentTask *t, AgentTaskStatus st, const char *reason, size_t len) {
        int r = agent_queue_finish_output(c->queue, t, st, reason, len, len, con_now(CLOCK_REALTIME));
        if (r < 0) {
                log_full(LOG_ERR, "Failed to record the end of task %s: %s", t->id, strerror(-r));
                return;
        }
        (void) agent_pending_add(c, PENDING_COMPLETED, NULL, t);
}

void agent_task_fail_now(AgentContext *c, AgentTask *t, AgentTaskStatus st, const char *reason) {
        agent_task_fail_now_bytes(c, t, st, reason, strlen(reason));
}

int agent_context_complete_output(AgentContext *c, AgentTask *t, AgentTaskStatus st, const char *data, size_t len,
                                  uint64_t size) {
        if (agent_task_status_is_final(t->status))
                return 0; /* cancelled meanwhile */
        int r = agent_queue_finish_output(c->queue, t, st, data, len, size, con_now(CLOCK_REALTIME));
        if (r < 0)
                return r;
        return agent_pending_add(c, PENDING_COMPLETED, NULL, t);
}

int agent_context_complete(AgentContext *c, AgentTask *t, AgentTaskStatus st, const char *text) {
        size_t l = strlen(strempty(text));
        return agent_context_complete_output(c, t, st, text, l, l);
}

/* The model gateway charges a session's calls to the task registered here, not to whatever task id
 * the session names (docs/MODELS.md "Budgets"). Fire and forget, on the connection that owns the
 * agent's bus name (that is what the gateway checks): without it (no gateway, an old one), the
 * calls count as the agent's unregistered use. */
static bool models_task_notify(AgentContext *c, const char *method, const char *task_id) {
        if (c->runtime != &con_runtime_picoclaw || !c->bus_name || c->n_buses == 0)
                return false;
        int r = sd_bus_call_method_async(c->buses[0], NULL, CON_MODELS_BUS_NAME, CON_MODELS_PATH,
                                         CON_MODELS_INTERFACE, method, NULL, NULL, "ss", c->agent->name,
                                         task_id);
        if (r < 0) {
                log_full(LOG_WARNING, "Task %s: cannot tell the model gateway (%s): %s", task_id, method, strerror(-r));
                return false;
        }
        return true;
}

RunningTask *agent_running_task_free(RunningTask *rt) {
        if (!rt)
                return NULL;
        if (rt->models_task_id)
                (void) models_task_notify(rt->c, "UnregisterTask", rt->models_task_id);
        free(rt->models_task_id);
        if (rt->running_id) {
                (void) agent_chain_running_remove(rt->c->data_dir_fd, rt->running_id);
                free(rt->running_id);
        }
        free(rt->conversation);
        agent_transcript_done(&rt->transcript);
        agent_session_free(rt->session);
        free(rt->cancel_reason);
        free(rt);
        return NULL;
}

static char *format_duration(uint64_t usec) {
        char *s = NULL;
        if (usec % USEC_PER_SEC == 0)
                (void) asprintf(&s, "%llus", (unsigned long long) (usec / USEC_PER_SEC));
        else
                (void) asprintf(&s, "%llums", (unsigned long long) (usec / USEC_PER_MSEC));
        return s;
}

static const char *runtime_label(const AgentContext *c) {
        if (c->runtime == &con_runtime_exec && c->agent->command && c->agent->command[0])
                return c->agent->command[0];
        return c->runtime ? c->runtime->name : "the runtime";
}

/* The completed turn the session sent back: checked (size, the history reader) and appended to
 * the sender's conversation in the service's own state. A failed task never gets here. */
static void conversation_store_turn(RunningTask *rt, AgentSession *s) {
        AgentContext *c = rt->c;
        _cleanup_close_ int dfd = -EBADF;
        _cleanup_free_ char *err = NULL;
        int r;

        if (!rt->conversation || s->turn_len == 0)
                return;
        if (s->turn_size > s->turn_len || !s->turn_eof) {
                log_full(LOG_WARNING, "Task %s: the session sent an incomplete or too large turn (over %u bytes); "
                        "conversation %s not changed", rt->task->id, AGENT_SESSION_TURN_MAX, rt->conversation);
                return;
        }
        unsigned window = c->agent->rt.context_window ?: CON_CONTEXT_WINDOW_DEFAULT;
        r = agent_history_open_dir(c->conversations_dir, rt->sender_uid, true, &dfd);
        if (r >= 0)
                r = agent_history_store_turn(dfd, rt->conversation, s->turn, s->turn_len,
                                             agent_history_budget(window, AGENT_LLM_MAX_TOKENS), &err);
        if (r < 0)
                log_full(LOG_WARNING, "Task %s: cannot save conversation %s: %s", rt->task->id, rt->conversation,
                        err ?: strerror(-r));
}

/* Before the fork: the conversation of the task (the sender's own, new unless the task names
 * one), read from the service's state; the session gets its text, never the folder. 0, or 1
 * with *ret_reason when the task must fail. */
static int conversation_prepare(AgentContext *c, const AgentTask *t, RunningTask *rt, char **ret_text,
                                size_t *ret_len, char **ret_reason) {
        _cleanup_close_ int dfd = -EBADF;
        _cleanup_free_ char *id = NULL, *err = NULL;
        bool is_new = true;
        int r;

        r = agent_history_open_dir(c->conversations_dir, t->sender_uid, true, &dfd);
        if (r < 0) {
                if (t->conversation) {
                        if (asprintf(ret_reason, "cannot open the conversations of %s in %s: %s", strempty(t->sender),
                                     c->conversations_dir, strerror(-r)) < 0)
                                return -ENOMEM;
                        return 1;
                }
                log_full(LOG_WARNING, "Task %s: cannot open %s, this turn is not kept: %s", t->id,
                        c->conversations_dir, strerror(-r));
        }
        r = agent_history_resolve(dfd, t->conversation, t->id, &id, &is_new);
        if (r == -ENOENT) {
                /* Also what another sender's conversation id gives: it is looked up only among the
                 * sender's own. */
                if (asprintf(ret_reason, "refused: %s has no conversation '%s' with agent '%s' (a conversation can "
                             "only be continued by the sender who started it; without an id, --continue takes "
                             "your latest)", isempty(t->sender) ? "the sender" : t->sender, t->conversation,
                             c->agent->name) < 0)
                        return -ENOMEM;
                return 1;
        }
        if (r < 0)
                return r;
        if (!is_new && dfd >= 0) {
                r = agent_history_read(dfd, id, ret_text, ret_len, &err);
                if (r == -ENOMEM)
                        return r;
                if (r < 0 && r != -ENOENT)
                        log_full(LOG_NOTICE, "Task %s: conversation %s unreadable, continuing without it (the next "
                                "completed turn replaces it): %s", t->id, id, err ?: strerror(-r));
        }
        if (dfd >= 0) {
                rt->conversation = TAKE_PTR(id);
                rt->sender_uid = t->sender_uid;
        }
        return 0;
}

/* A step the session reported: kept for the transcript; a phase becomes TaskProgress (ids, a turn
 * number and a fixed word: no text). */
static void on_session_line(AgentSession *s, const char *line, size_t len, void *userdata) {
        RunningTask *rt = userdata;
        AgentContext *c = rt->c;
        const char *phase = NULL;
        unsigned turn = 0;
        int r = agent_transcript_add_line(&rt->transcript, line, len, &turn, &phase);
        if (r <= 0)
                return;
        for (size_t i = 0; i < c->n_buses; i++) {
                if (!sd_bus_is_open(c->buses[i]))
                        continue;
                r = sd_bus_emit_signal(c->buses[i], CON_AGENT_PATH, CON_AGENT_INTERFACE, "TaskProgress", "sus",
                                       rt->task->id, (uint32_t) turn, phase);
                if (r < 0)
                        log_full(LOG_DEBUG, "Failed to emit TaskProgress for %s, ignoring: %s", rt->task->id,
                                 strerror(-r));
        }
}

/* The session part of the transcript, written when the session is over (whatever its end). */
static void transcript_store(RunningTask *rt) {
        rt->transcript.ended_usec = con_now(CLOCK_REALTIME);
        _cleanup_(cJSON_Deletep) cJSON *j = agent_transcript_to_json(&rt->transcript);
        int r = j ? agent_transcript_write(rt->c->data_dir_fd, rt->task->id, rt->task->sender_uid, j) : -ENOMEM;
        if (r < 0)
                log_full(LOG_WARNING, "Task %s: cannot write its transcript: %s", rt->task->id, strerror(-r));
}

static void on_session_done(AgentSession *s, void *userdata) {
        RunningTask *rt = userdata;
        AgentContext *c = rt->c;
        AgentTask *t = rt->task;
        _cleanup_free_ char *reason = NULL;
        int r;

        t->userdata = NULL;
        c->n_sessions--;
        if (rt->shutdown) {
                agent_running_task_free(rt);
                agent_context_schedule_flush(c);
                return;
        }
        transcript_store(rt);
        switch (agent_session_end(s)) {
        case AGENT_SESSION_EXITED:
                if (s->exit_status == 0) {
                        conversation_store_turn(rt, s);
                        if (s->out_size > s->out_len)
                                log_full(LOG_NOTICE, "Task %s: response of %" PRIu64 " bytes cut at %d bytes",
                                        t->id, s->out_size, AGENT_QUEUE_RESULT_MAX);
                        /* Whatever bytes the runner wrote: stored as valid text, cut and marked. */
                        r = agent_context_complete_output(c, t, AGENT_TASK_DONE, s->out, s->out_len, s->out_size);
                        if (r < 0)
                                agent_task_fail_now(c, t, AGENT_TASK_FAILED, "the response could not be stored");
                        break;
                }
                size_t len;
                if (agent_session_exit_reason(s, runtime_label(c), &reason, &len) < 0)
                        agent_task_fail_now(c, t, AGENT_TASK_FAILED, "the session failed");
                else
                        agent_task_fail_now_bytes(c, t, AGENT_TASK_FAILED, reason, len);
                break;
        case AGENT_SESSION_TIMEOUT: {
                _cleanup_free_ char *d = format_duration(s->timeout_usec);
                if (asprintf(&reason, "the session ran longer than its limit of %s (%s) and was killed",
                             strempty(d), c->runtime == &con_runtime_exec ? "exec_timeout" :
                             "contracts.system.max_session_min") < 0)
                        reason = NULL;
                agent_task_fail_now(c, t, AGENT_TASK_FAILED, reason ?: "the session timed out");
                break;
        }
        case AGENT_SESSION_CANCELLED:
                agent_task_fail_now(c, t, rt->kill_fails ? AGENT_TASK_FAILED : AGENT_TASK_CANCELLED,
                              rt->cancel_reason ?: "cancelled");
                break;
        case AGENT_SESSION_KILLED:
                r = agent_queue_requeue(c->queue, t);
                if (r == -ELOOP) {
                        if (asprintf(&reason, "the session was killed by signal %s %u times; not retried again",
                                     sigabbrev_np(s->signal) ?: "?", t->tries) < 0)
                                reason = NULL;
                        agent_task_fail_now(c, t, AGENT_TASK_FAILED, reason ?: "the session died repeatedly");
                } else if (r < 0)
                        agent_task_fail_now(c, t, AGENT_TASK_FAILED, "the session died and could not be queued again");
                else
                        log_full(LOG_NOTICE, "Task %s: session killed by signal %s (try %u of %d), queued again",
                                t->id, sigabbrev_np(s->signal) ?: "?", t->tries, AGENT_QUEUE_MAX_TRIES);
                break;
        }
        agent_running_task_free(rt);
        agent_context_schedule_flush(c);
}

/* What an agent this session tasks learns of it (agent-chain.h): its chain and when it must be
 * over, the task's deadline or the end of the session's wall clock, whichever comes first.
 * Written before the session exists: without it the session's delegations would count as from
 * outside any session (a shorter chain), so a task whose record cannot be written does not run. */
static int running_record_write(AgentContext *c, RunningTask *rt, const ConRuntimeEnv *env) {
        AgentTask *t = rt->task;
        uint64_t deadline = t->deadline_usec, now = con_now(CLOCK_REALTIME);
        uint64_t timeout = c->runtime->timeout ? c->runtime->timeout(env) : 0;
        if (timeout > 0 && (deadline == 0 || now + timeout < deadline))
                deadline = now + timeout;
        int r = agent_chain_running_write(c->data_dir_fd, t->id, t->chain, deadline);
        if (r < 0)
                return r;
        rt->running_id = strdup(t->id);
        if (!rt->running_id) {
                (void) agent_chain_running_remove(c->data_dir_fd, t->id);
                return -ENOMEM;
        }
        return 0;
}

void agent_start_task(AgentContext *c, AgentTask *t) {
        int r;

        if (t->deadline_usec > 0 && con_now(CLOCK_REALTIME) > t->deadline_usec) {
                agent_task_fail_now(c, t, AGENT_TASK_FAILED, "the deadline passed before the task could start");
                return;
        }
        r = agent_queue_start(c->queue, t, con_now(CLOCK_REALTIME));
        if (r < 0) {
                log_full(LOG_ERR, "Failed to start task %s: %s", t->id, strerror(-r));
                return;
        }
        (void) agent_pending_add(c, PENDING_STARTED, NULL, t);

        if (agent_builtin_is(t->text)) {
                r = agent_builtin_run(c, t);
                if (r < 0)
                        (void) agent_context_complete(c, t, AGENT_TASK_FAILED, "the built-in command failed");
                return;
        }

        ConRuntimeEnv env = {
                .agent = c->agent,
                .config = c->config,
                .workspace = c->workspace,
                .skills_dir = c->skills_dir,
                .user = c->has_session_user ? &c->session_user : NULL,
                .cgroup_fd = c->cgroup_fd,
        };
        if (!c->runtime) {
                _cleanup_free_ char *reason = NULL;
                if (asprintf(&reason, "agent '%s' has runner '%s', which this con-agentd does not know",
                             c->agent->name, strempty(c->agent->rt.runner)) < 0)
                        reason = NULL;
                (void) agent_context_complete(c, t, AGENT_TASK_FAILED, reason ?: "unknown runner");
                return;
        }
        if (c->runtime->check) {
                _cleanup_free_ char *reason = NULL;
                r = c->runtime->check(&env, &reason);
                if (r < 0) {
                        (void) agent_context_complete(c, t, AGENT_TASK_FAILED, reason ?: "the runtime is not ready");
                        return;
                }
        }

        RunningTask *rt = calloc(1, sizeof(RunningTask));
        if (!rt) {
                (void) agent_context_complete(c, t, AGENT_TASK_FAILED, "out of memory");
                return;
        }
        rt->c = c;
        rt->task = t;
        _cleanup_free_ char *history = NULL;
        size_t history_len = 0;
        if (c->runtime->conversations) {
                _cleanup_free_ char *reason = NULL;
                r = conversation_prepare(c, t, rt, &history, &history_len, &reason);
                if (r != 0) {
                        agent_running_task_free(rt);
                        (void) agent_context_complete(c, t, AGENT_TASK_FAILED,
                                                      reason ?: "cannot read the conversation");
                        return;
                }
        }
        ConRuntimeTask rtask = {
                .id = t->id,
                .text = t->text ?: "",
                .sender = t->sender,
                .sender_uid = t->sender_uid,
                .priority = t->priority,
                .reply_to = t->reply_to,
                .deadline_usec = t->deadline_usec,
                .conversation = rt->conversation,
                .history = history,
                .history_len = history_len,
                .turn_fd = -EBADF,
                .progress_fd = -EBADF,
        };
        r = running_record_write(c, rt, &env);
        if (r < 0) {
                agent_running_task_free(rt);
                _cleanup_free_ char *reason = NULL;
                if (asprintf(&reason, "cannot record the running task in %s/" AGENT_CHAIN_RUNNING_DIR ": %s",
                             c->data_dir, strerror(-r)) < 0)
                        reason = NULL;
                (void) agent_context_complete(c, t, AGENT_TASK_FAILED, reason ?: "cannot record the running task");
                return;
        }
        /* Sent before the session exists, so it reaches the gateway before the session's first call. */
        if (models_task_notify(c, "RegisterTask", t->id))
                rt->models_task_id = strdup(t->id);     /* NULL (out of memory): ended by the gateway's LRU */
        r = agent_session_spawn(c->event, c->runtime, &rtask, &env, on_session_done, rt, &rt->session);
        if (r < 0) {
                agent_running_task_free(rt);
                _cleanup_free_ char *reason = NULL;
                if (asprintf(&reason, "cannot start a session: %s", strerror(-r)) < 0)
                        reason = NULL;
                (void) agent_context_complete(c, t, AGENT_TASK_FAILED, reason ?: "cannot start a session");
                return;
        }
        rt->session->on_line = on_session_line;
        rt->transcript.started_usec = con_now(CLOCK_REALTIME);
        t->userdata = rt;
        c->n_sessions++;
}

void agent_dispatch(AgentContext *c) {
        unsigned max = c->agent->max_sessions ?: 1;
        AgentTask *t;
        while (!c->stopping && !c->quarantined && !c->halted_by_call && !c->halted_by_marker &&
               c->n_sessions < max && (t = agent_queue_peek(c->queue)))
                agent_start_task(c, t);
}
