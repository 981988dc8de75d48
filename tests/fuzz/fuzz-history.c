/* SPDX-License-Identifier: MIT */
/* A conversation file as the session reads it back (agent-history.h): whatever the agent's
 * workspace holds, the reader refuses or loads a consistent conversation, and what it loads
 * formats and reads back to the same messages. Cutting it to a window keeps it consistent.
 * Whatever bytes the file holds, every string loaded, the model request built from it (the
 * neutral JSON and both wire formats) and the text written back are valid UTF-8 (bus/basic/utf8.h). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent-history.h"
#include "agent-llm.h"
#include "macro.h"
#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_consistent(const ConLlmConversation *c) {
        if (c->n_messages > 0 && c->messages[0].role != CON_LLM_ROLE_USER)
                abort();
        for (size_t i = 0; i < c->n_messages; i++)
                if (c->messages[i].role == CON_LLM_ROLE_TOOL && i == 0)
                        abort();
}

static void check_text(const char *s) {
        if (s && !con_utf8_valid(s, strlen(s)))
                abort();
}

/* Every string of the conversation, and every request built from it, is valid text. */
static void check_utf8(const ConLlmConversation *c) {
        for (size_t i = 0; i < c->n_messages; i++) {
                const ConLlmMessage *m = &c->messages[i];
                check_text(m->content);
                check_text(m->tool_call_id);
                for (size_t k = 0; k < m->n_tool_calls; k++) {
                        check_text(m->tool_calls[k].id);
                        check_text(m->tool_calls[k].name);
                        check_text(m->tool_calls[k].arguments);
                }
        }
        _cleanup_free_ char *req = NULL;
        if (agent_llm_request_json(c, 0, 100, "t1", &req) == 0)
                check_text(req);
        for (int w = 0; w < _CON_LLM_WIRE_MAX; w++) {
                ConLlmParams p = { .model = "m", .max_tokens = 100, .temperature = -1 };
                ConErrorDetail e = {};
                _cleanup_free_ char *body = NULL;
                if (con_llm_build_request((ConLlmWire) w, c, &p, &body, &e) == 0)
                        check_text(body);
                con_error_detail_done(&e);
        }
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
        check_utf8(c);
        if (c->n_messages > AGENT_HISTORY_MESSAGES_MAX)
                abort();
        if (agent_history_format(c, 0, &text) < 0)
                return 0;
        check_text(text);
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
        check_utf8(c);
        if (protect > c->n_messages)
                abort();
        return 0;
}
