/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>

#include "llm.h"

/* The neutral JSON of a conversation's messages, as org.conspiracy.Models1.Complete takes them
 * (docs/LLM-WIRE.md) and as conversations are stored (agent-history.h). */

struct cJSON;
/* The arguments of a tool call as a JSON object: {} when they are empty or no JSON object
 * (the gateway passes such arguments on wrapped, llm.h). */
struct cJSON *agent_llm_arguments_json(const char *arguments);
/* Appends the neutral JSON of c's messages from index from on to a JSON array. */
int agent_llm_messages_json(const ConLlmConversation *c, size_t from, struct cJSON *array);
