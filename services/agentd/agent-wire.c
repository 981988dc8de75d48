/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <cjson/cJSON.h>

#include "agent-wire.h"
#include "json-util.h"
#include "macro.h"

cJSON *agent_llm_arguments_json(const char *arguments) {
        cJSON *a = isempty(arguments) ? NULL : cJSON_Parse(arguments);
        if (a && cJSON_IsObject(a))
                return a;
        cJSON_Delete(a);
        return cJSON_CreateObject();
}

static int message_to_json(const ConLlmMessage *m, cJSON **ret) {
        _cleanup_cjson_ cJSON *o = cJSON_CreateObject();
        const char *content = m->content;
        if (!o)
                return -ENOMEM;
        switch (m->role) {
        case CON_LLM_ROLE_USER:
                if (!cJSON_AddStringToObject(o, "role", "user") || !cJSON_AddStringToObject(o, "content", strempty(content)))
                        return -ENOMEM;
                break;
        case CON_LLM_ROLE_ASSISTANT:
                if (!cJSON_AddStringToObject(o, "role", "assistant") ||
                    !(content ? cJSON_AddStringToObject(o, "content", content) : cJSON_AddNullToObject(o, "content")))
                        return -ENOMEM;
                if (m->n_tool_calls > 0) {
                        cJSON *calls = cJSON_AddArrayToObject(o, "tool_calls");
                        if (!calls)
                                return -ENOMEM;
                        for (size_t i = 0; i < m->n_tool_calls; i++) {
                                cJSON *c = cJSON_CreateObject();
                                if (!c)
                                        return -ENOMEM;
                                cJSON_AddItemToArray(calls, c);
                                cJSON *args = agent_llm_arguments_json(m->tool_calls[i].arguments);
                                if (!args || !cJSON_AddStringToObject(c, "id", strempty(m->tool_calls[i].id)) ||
                                    !cJSON_AddStringToObject(c, "name", strempty(m->tool_calls[i].name))) {
                                        cJSON_Delete(args);
                                        return -ENOMEM;
                                }
                                cJSON_AddItemToObject(c, "arguments", args);
                        }
                }
                break;
        case CON_LLM_ROLE_TOOL:
                if (!cJSON_AddStringToObject(o, "role", "tool") ||
                    !cJSON_AddStringToObject(o, "tool_call_id", strempty(m->tool_call_id)) ||
                    !cJSON_AddStringToObject(o, "content", strempty(content)))
                        return -ENOMEM;
                if (m->is_error && !cJSON_AddTrueToObject(o, "is_error"))
                        return -ENOMEM;
                break;
        default:
                return -EINVAL;
        }
        *ret = TAKE_PTR(o);
        return 0;
}

int agent_llm_messages_json(const ConLlmConversation *c, size_t from, cJSON *array) {
        for (size_t i = from; i < c->n_messages; i++) {
                cJSON *m = NULL;
                int r = message_to_json(&c->messages[i], &m);
                if (r < 0)
                        return r;
                cJSON_AddItemToArray(array, m);
        }
        return 0;
}
