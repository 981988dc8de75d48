/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "agent-api.h"
#include "agent-queue.h"
#include "agent-session.h"
#include "audit-writer.h"
#include "authz.h"
#include "config.h"
#include "agent-transcript.h"
#include "log.h"
#include "policy.h"
#include "time-util.h"

/* The org.conspiracy.Agent1 object of one agent: the bus glue around the queue and sessions.
 * See docs/AGENT.md. */

/* One per method that needs a decision; each maps to a polkit action and the "verb" detail
 * (docs/AGENT.md, "Who may do what"). */
typedef enum AgentVerb {
        AGENT_VERB_SUBMIT,              /* org.conspiracy.agent.task, verb=submit */
        AGENT_VERB_DELIVER,             /* org.conspiracy.agent.task, verb=deliver */
        AGENT_VERB_GET_RESULT,          /* own task: allowed; else org.conspiracy.agent.read-result */
        AGENT_VERB_LIST_TASKS,          /* own tasks always; everyone's with read-result */
        AGENT_VERB_CANCEL,              /* own task: allowed; else org.conspiracy.agent.cancel */
        AGENT_VERB_HALT,                /* org.conspiracy.agent.halt, verb=halt */
        AGENT_VERB_RESUME,              /* org.conspiracy.agent.halt, verb=resume */
        AGENT_VERB_QUARANTINE,          /* org.conspiracy.agent.quarantine, verb=quarantine */
        AGENT_VERB_KILL_SESSIONS,       /* org.conspiracy.agent.quarantine, verb=kill-sessions */
        _AGENT_VERB_MAX,
} AgentVerb;

const char *agent_verb_to_string(AgentVerb v);  /* the "verb" detail: "submit", "get-result", ... */
ConPolicyVerb agent_verb_policy(AgentVerb v);   /* the policy verb guarding it */

typedef struct AgentCaller {
        uid_t uid;
        char *name;             /* user name or decimal uid */
        bool all_tasks;         /* ListTasks: may see everyone's tasks (read-result granted) */
} AgentCaller;

typedef enum AgentPendingKind {
        PENDING_REPLY_ID,       /* method return "s" task id */
        PENDING_REPLY_EMPTY,
        PENDING_ACCEPTED,
        PENDING_STARTED,
        PENDING_COMPLETED,
} AgentPendingKind;

typedef struct AgentPending {
        AgentPendingKind kind;
        sd_bus_message *call;
        AgentTask *task;
} AgentPending;

typedef struct AgentPropsSnapshot {
        const char *state;
        uint32_t queue_length;
        const char *current_task;
        uint64_t accepted, completed, failed;
        bool valid;
} AgentPropsSnapshot;

typedef struct AgentContext {
        sd_event *event;
        sd_bus **buses;         /* one on the system bus; tests may attach several peers */
        size_t n_buses;
        sd_bus_slot **slots;

        ConConfig *config;      /* owned */
        const ConAgent *agent;
        const ConRuntime *runtime;
        char *bus_name;         /* requested name, NULL on peer-to-peer connections */
        char *data_dir;
        char *workspace;
        char *skills_dir;
        char *conversations_dir; /* DATA/queue/conversations: root's, never the sessions' */
        int data_dir_fd;
        ConSessionUser session_user;    /* valid when has_session_user; name and groups owned */
        bool has_session_user;
        int cgroup_fd;
        AgentQueue *queue;

        ConPolicy *policy;      /* the declared policy: root's rights, and the decision without polkit */
        ConAuthz *authz;        /* who is calling, and polkit, on the system bus; NULL: peer-to-peer only,
                                 * where the socket says who and the policy decides in-process */
        bool no_authz;          /* --no-authz (benchmarks): every caller is allowed */

        /* Halt and quarantine (docs/AGENT.md): by a call, or by the contract service's markers. */
        char *state_dir;        /* /srv/con/state */
        bool halted_by_call, halted_by_marker, quarantined;
        char *halt_reason, *marker_halt_reason, *quarantine_reason;
        sd_event_source *state_watch, *state_parent_watch, *quarantine_watch, *state_timer;

        ConAuditWriter *audit;  /* NULL: no audit log (tests) */

        AgentPending *pending;
        size_t n_pending, n_pending_alloc;
        sd_event_source *flush_source, *idle_source, *stop_source;
        sd_event_source *files_retry_source;    /* derived files that could not be written */
        sd_event_source *prune_source;  /* the retention of finished tasks (system.result_retention) */
        bool prune_in_pass;             /* a pass is under way: the next step comes soon */
        size_t n_pruned;                /* tasks removed by the pass so far */
        size_t n_prune_failed;          /* tasks whose files could not all be removed, so far */
        int prune_error;                /* the first of those failures */
        uint64_t prune_finished_mark;   /* tasks finished (counted) when the last pass began */
        AgentPropsSnapshot props;

        size_t n_sessions;      /* real session processes */
        bool stopping, name_released, failed_commit;
        uint64_t started_usec;  /* CLOCK_MONOTONIC */
        uint64_t idle_exit_usec;        /* 0 = never */
        uint64_t stop_grace_usec;
} AgentContext;

/* Options: data_dir NULL = /srv/con/agents/NAME. Takes ownership of config on success. */
typedef struct AgentContextOptions {
        const char *agent;
        const char *data_dir;
        const char *state_dir;  /* NULL = /srv/con/state (the contract service's markers) */
        uint64_t lock_timeout_usec;
        bool no_authz;
        const ConSessionUser *session_user; /* NULL: sessions keep the service's identity */
        const char *cgroup_dir; /* the agent's cgroup2 folder (sessions get children); NULL: none */
        const char *audit_dir;  /* where task events are audited; NULL: nowhere (tests) */
} AgentContextOptions;

int agent_context_new(sd_event *e, ConConfig *config, const AgentContextOptions *o, AgentContext **ret,
                      char **ret_error);
AgentContext *agent_context_free(AgentContext *c);
static inline void agent_context_freep(AgentContext **c) {
        agent_context_free(*c);
}

/* Registers the object on bus (before any name is requested). */
int agent_context_add_bus(AgentContext *c, sd_bus *bus);
/* Requests org.conspiracy.<Camel> on the first bus; fails when it cannot be taken. */
int agent_context_request_name(AgentContext *c, sd_bus_error *error);
/* Installs SIGTERM/SIGINT handling (signals must be blocked by the caller). */
int agent_context_install_signals(AgentContext *c);
/* Starts work found in the journal and the idle logic. */
int agent_context_start(AgentContext *c);
/* Asks the bus who is calling, and polkit (unless no_authz), for calls on bus from now on (the bus
 * must be attached to the event loop). Without it (peer-to-peer connections in tests) the socket
 * says who is calling and the declared policy decides in-process. */
int agent_context_enable_authz(AgentContext *c, sd_bus *bus);
/* Reads the markers in state_dir and watches it; quarantined is set when this agent is. */
int agent_context_watch_state(AgentContext *c);

/* The one access decision, asynchronous: returns 1 allowed (ret_caller filled), 0 parked (the
 * handler returns 1 without replying and runs again with the same message), or a negative errno
 * with error set. Call it before touching any state. */
int agent_authorize(AgentContext *c, sd_bus_message *m, AgentVerb verb, const AgentTask *t,
                    AgentCaller *ret_caller, sd_bus_error *error);
void agent_caller_done(AgentCaller *a);

/* agent_context_complete() (agent-api.h) for a session's output: data[0..len) of the size bytes it
 * wrote, any bytes (stored through agent_result_text()). */
int agent_context_complete_output(AgentContext *c, AgentTask *t, AgentTaskStatus st, const char *data, size_t len,
                                  uint64_t size);

/* The out-arguments of GetResult ("ss") or, with_info, GetResultInfo ("ssa{sv}", with the task's
 * SENDER as "sender" when not NULL): text comes from agent_queue_read_result(), so it is valid text
 * (a D-Bus string) whatever a runner wrote. Exposed for tests/fuzz/fuzz-result.c. */
int agent_result_append(sd_bus_message *reply, AgentTaskStatus st, const char *text, const AgentResultInfo *info,
                        const char *sender, bool with_info);

/* ---- Internal: shared by the files of the service (agent-*.c) ---- */

/* Commit inline once this many replies wait, so a flood cannot starve the idle-priority flush. */
#define PENDING_FLUSH_INLINE 256
#define QUEUE_MAX 100000
#define AGENT_REASON_MAX 1024

typedef struct RunningTask {
        AgentContext *c;
        AgentTask *task;
        AgentSession *session;
        char *cancel_reason;
        bool kill_fails;        /* killed by KillSessions, Halt or Quarantine: the task failed */
        bool shutdown;          /* killed because the service stops: leave it to the next start */
        char *models_task_id;   /* the model gateway was told this task runs (a copy: the task may be gone) */
        char *conversation;     /* the conversation the session's turn is appended to; NULL: none */
        uid_t sender_uid;
        char *running_id;       /* queue/running/<id>.json was written (agent-chain.h) */
        AgentTranscript transcript; /* the steps the session reported (agent-transcript.h) */
} RunningTask;

/* agent-service.c: the flush (dispatch, group commit, replies, idle) and the exit. */
int agent_context_flush(AgentContext *c);
void agent_context_begin_exit(AgentContext *c);

/* agent-pending.c: replies and signals wait for the group commit. */
int agent_pending_add(AgentContext *c, AgentPendingKind kind, sd_bus_message *call, AgentTask *t);
void agent_pending_run(AgentContext *c, int commit_error);
void agent_files_retry_arm(AgentContext *c);

/* agent-run.c: running tasks. */
void agent_task_fail_now_bytes(AgentContext *c, AgentTask *t, AgentTaskStatus st, const char *reason, size_t len);
void agent_task_fail_now(AgentContext *c, AgentTask *t, AgentTaskStatus st, const char *reason);
RunningTask *agent_running_task_free(RunningTask *rt);
void agent_start_task(AgentContext *c, AgentTask *t);
void agent_dispatch(AgentContext *c);

/* agent-methods.c and agent-halt.c: the method handlers of agent_vtable. */
int agent_method_submit(sd_bus_message *m, void *userdata, sd_bus_error *error);
int agent_method_deliver(sd_bus_message *m, void *userdata, sd_bus_error *error);
int agent_method_cancel(sd_bus_message *m, void *userdata, sd_bus_error *error);
int agent_method_get_result(sd_bus_message *m, void *userdata, sd_bus_error *error);
int agent_method_get_result_info(sd_bus_message *m, void *userdata, sd_bus_error *error);
int agent_method_get_transcript(sd_bus_message *m, void *userdata, sd_bus_error *error);
int agent_method_list_tasks(sd_bus_message *m, void *userdata, sd_bus_error *error);
int agent_method_halt(sd_bus_message *m, void *userdata, sd_bus_error *error);
int agent_method_resume(sd_bus_message *m, void *userdata, sd_bus_error *error);
int agent_method_quarantine(sd_bus_message *m, void *userdata, sd_bus_error *error);
int agent_method_kill_sessions(sd_bus_message *m, void *userdata, sd_bus_error *error);

/* agent-halt.c: used by the markers too. */
uint32_t agent_kill_sessions(AgentContext *c, const char *reason);
void agent_quarantine_now(AgentContext *c, const char *reason);
void agent_halt_changed(AgentContext *c, bool was_halted, const char *reason);

/* The vtable, for --bus-introspect and the introspection test. */
extern const sd_bus_vtable agent_vtable[];
/* The interface XML as sd-bus generates it (over an in-process socketpair). */
int agent_introspect_xml(char **ret);
