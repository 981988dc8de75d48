/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>

#include "agent-queue.h"

typedef struct AgentContext AgentContext;

/* Built-in commands: task text starting with "/". Answered by the service itself, in-process,
 * without a session or a model. */

bool agent_builtin_is(const char *text);
/* Runs the command of the running task t. It completes t (agent_context_complete) before
 * returning, or later for commands that ask the bus (/agents). Returns 0 or -errno. */
int agent_builtin_run(AgentContext *c, AgentTask *t);
/* "/help, /ping, ..." */
const char *agent_builtin_list(void);
