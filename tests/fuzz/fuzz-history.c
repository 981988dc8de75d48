/* SPDX-License-Identifier: MIT */
/* A conversation file as the session reads it back (agent-history.h): whatever the agent's
 * workspace holds, the reader refuses or loads a consistent conversation, and what it loads
 * formats and reads back to the same messages. Cutting it to a window keeps it consistent. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent-history.h"
#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_consistent(const ConLlmConversation *c) {
        if (c->n_messages > 0 && c->messages[0].role != CON_LLM_ROLE_USER)
                abort();
        for (size_t i = 0; i < c->n_messages; i++)
                if (c->messages[i].role == CON_LLM_ROLE_TOOL && i == 0)
                        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *c = con_llm_conversation_new();
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *d = con_llm_conversation_new();
        _cleanup_free_ char *err = NULL, *text = NULL, *err2 = NULL;

        if (!c || !d)
                return 0;
        int r = agent_history_parse((const char *) data, size, c, &err);
        if (r == -ENOMEM)
                return 0;
        if (r < 0) {
                if (r != -EBADMSG || !err || c->n_messages != 0)
                        abort(); /* refused whole, with a reason */
                return 0;
        }
        check_consistent(c);
        if (c->n_messages > AGENT_HISTORY_MESSAGES_MAX)
                abort();
        if (agent_history_format(c, 0, &text) < 0)
                return 0;
        if (agent_history_parse(text, strlen(text), d, &err2) < 0 || d->n_messages != c->n_messages)
                abort();
        for (size_t i = 0; i < c->n_messages; i++)
                if (c->messages[i].role != d->messages[i].role ||
                    c->messages[i].n_tool_calls != d->messages[i].n_tool_calls ||
                    strcmp(strempty(c->messages[i].content), strempty(d->messages[i].content)) != 0)
                        abort();

        /* Fit into a small window, protecting the last turn. */
        size_t protect = agent_history_turn_start(c, c->n_messages), dropped = 0;
        if (agent_history_fit(c, &protect, 200 + size % 2000, &dropped) < 0)
                return 0;
        check_consistent(c);
        if (protect > c->n_messages)
                abort();
        return 0;
}
