/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "agent-queue.h"
#include "agent-session.h"
#include "config.h"

/* The org.conspiracy.Agent1 object of one agent: the bus glue around the queue and sessions.
 * See docs/AGENT.md. */

typedef enum AgentVerb {
        AGENT_VERB_SUBMIT,      /* Submit and Deliver */
        AGENT_VERB_READ,        /* GetResult, ListTasks */
        AGENT_VERB_CANCEL,
} AgentVerb;

typedef struct AgentCaller {
        uid_t uid;
        char *name;             /* user name or decimal uid */
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
        int data_dir_fd;
        AgentQueue *queue;

        bool have_submitters_gid;
        gid_t submitters_gid;

        AgentPending *pending;
        size_t n_pending, n_pending_alloc;
        sd_event_source *flush_source, *idle_source, *stop_source;
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
        uint64_t lock_timeout_usec;
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

/* The one access decision (a later issue makes it an async polkit query: it may then return 0
 * with nothing decided yet; callers already treat "no reply yet" as fine).
 * Returns 1 allowed (ret_caller filled), or a negative errno with error set. */
int agent_authorize(AgentContext *c, sd_bus_message *m, AgentVerb verb, const AgentTask *t,
                    AgentCaller *ret_caller, sd_bus_error *error);
void agent_caller_done(AgentCaller *a);

/* Used by built-in commands: completes a running task. */
int agent_context_complete(AgentContext *c, AgentTask *t, AgentTaskStatus st, const char *text);
void agent_context_schedule_flush(AgentContext *c);
const char *agent_context_state(const AgentContext *c);

/* The vtable, for --bus-introspect and the introspection test. */
extern const sd_bus_vtable agent_vtable[];
/* The interface XML as sd-bus generates it (over an in-process socketpair). */
int agent_introspect_xml(char **ret);
