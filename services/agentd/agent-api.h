/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdint.h>
#include <systemd/sd-bus.h>

#include "agent-queue.h"
#include "agent-session.h"
#include "config.h"

/* The small API of one agent service for code that is not the service itself (the built-in
 * commands, agent-builtins.c): the context stays opaque to it. Implemented by agent-service.c and
 * agent-run.c; agent-service.h has the rest. */

typedef struct AgentContext AgentContext;

const ConConfig *agent_context_config(const AgentContext *c);
const ConAgent *agent_context_agent(const AgentContext *c);
/* NULL when the agent's runner is unknown to this con-agentd. */
const ConRuntime *agent_context_runtime(const AgentContext *c);
AgentQueue *agent_context_queue(const AgentContext *c);
const char *agent_context_data_dir(const AgentContext *c);
/* DATA/queue/conversations: the service's own, never the sessions'. */
const char *agent_context_conversations_dir(const AgentContext *c);
uint64_t agent_context_uptime_usec(const AgentContext *c);
/* The connection that holds the agent's name on the system bus; NULL on peer-to-peer connections. */
sd_bus *agent_context_system_bus(const AgentContext *c);
/* "idle", "busy", "halted", "quarantined" or "stopping". */
const char *agent_context_state(const AgentContext *c);

/* Completes a running task with text (agent-run.c). */
int agent_context_complete(AgentContext *c, AgentTask *t, AgentTaskStatus st, const char *text);
/* Replies, signals and files of completed tasks go out at the next flush. */
void agent_context_schedule_flush(AgentContext *c);
