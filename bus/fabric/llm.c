/* SPDX-License-Identifier: MIT */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json-util.h"
#include "llm.h"
#include "macro.h"
#include "strv.h"
#include "utf8.h"


/* ---- errors ------------------------------------------------------------------------------- */

/* The message names the field ("choices[0].message.content: ..."); returns r (or -ENOMEM). */
_printf_(3, 4)
static int llm_error(ConErrorDetail *e, int r, const char *fmt, ...) {
        va_list ap;
        int k;

        if (!e)
                return r;
        va_start(ap, fmt);
        k = con_error_detail_setv(e, NULL, 0, 0, NULL, fmt, ap);
        va_end(ap);
        return k == -ENOMEM ? k : r;
}

/* ---- names -------------------------------------------------------------------------------- */

static const char *const wire_names[_CON_LLM_WIRE_MAX] = {
        [CON_LLM_WIRE_OPENAI] = "openai",
        [CON_LLM_WIRE_ANTHROPIC] = "anthropic",
};

const char *con_llm_wire_to_string(ConLlmWire w) {
        return w >= 0 && w < _CON_LLM_WIRE_MAX ? wire_names[w] : NULL;
}

ConLlmWire con_llm_wire_from_string(const char *s) {
        for (int i = 0; s && i < _CON_LLM_WIRE_MAX; i++)
                if (streq(s, wire_names[i]))
                        return (ConLlmWire) i;
        return _CON_LLM_WIRE_INVALID;
}

static const char *const stop_names[_CON_LLM_STOP_MAX] = {
        [CON_LLM_STOP_END] = "end",
        [CON_LLM_STOP_TOOL_USE] = "tool_use",
        [CON_LLM_STOP_MAX_TOKENS] = "max_tokens",
        [CON_LLM_STOP_FILTERED] = "filtered",
        [CON_LLM_STOP_OTHER] = "other",
};

const char *con_llm_stop_to_string(ConLlmStop s) {
        return s >= 0 && s < _CON_LLM_STOP_MAX ? stop_names[s] : NULL;
}

int con_llm_provider_wire(const char *provider, ConLlmWire *ret_wire, const char **ret_base_url) {
        static const struct {
                const char *name;
                ConLlmWire wire;
                const char *base_url;
        } table[] = {
                { "openrouter", CON_LLM_WIRE_OPENAI,    "https://openrouter.ai/api/v1" },
                { "openai",     CON_LLM_WIRE_OPENAI,    "https://api.openai.com/v1" },
                { "ollama",     CON_LLM_WIRE_OPENAI,    "http://127.0.0.1:11434/v1" },
                { "compatible", CON_LLM_WIRE_OPENAI,    NULL },
                { "anthropic",  CON_LLM_WIRE_ANTHROPIC, "https://api.anthropic.com/v1" },
        };

        for (size_t i = 0; provider && i < ELEMENTSOF(table); i++)
                if (streq(provider, table[i].name)) {
                        if (ret_wire)
                                *ret_wire = table[i].wire;
                        if (ret_base_url)
                                *ret_base_url = table[i].base_url;
                        return 0;
                }
        return -EOPNOTSUPP;
}

/* ---- small checks ------------------------------------------------------------------------- */

static bool tool_name_valid(const char *s) {
        size_t l = s ? strlen(s) : 0;
        return l > 0 && l <= CON_LLM_TOOL_NAME_MAX &&
               strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == l;
}

static bool tool_id_valid(const char *s) {
        size_t l = s ? strlen(s) : 0;
        if (l == 0 || l > CON_LLM_TOOL_ID_MAX)
                return false;
        for (size_t i = 0; i < l; i++)
                if (s[i] <= ' ' || s[i] >= 0x7F)
                        return false;
        return true;
}

/* Parses JSON text that must be an object; whitespace-only text counts as {}. */
static int parse_json_object(const char *text, cJSON **ret, const char **ret_got) {
        _cleanup_free_ char *clean = NULL;
        const char *t = text ?: "";

        if (t[strspn(t, " \t\r\n")] == 0) {
                *ret = cJSON_CreateObject();
                return *ret ? 0 : -ENOMEM;
        }
        if (!con_utf8_valid(t, strlen(t))) {
                if (con_utf8_sanitize(t, strlen(t), &clean, NULL) < 0)
                        return -ENOMEM;
                t = clean;
        }
        const char *end = NULL;
        _cleanup_cjson_ cJSON *j = cJSON_ParseWithOpts(t, &end, true);
        if (!j) {
                *ret_got = "invalid JSON";
                return -EINVAL;
        }
        if (!cJSON_IsObject(j)) {
                *ret_got = con_json_kind(j);
                return -EINVAL;
        }
        *ret = TAKE_PTR(j);
        return 0;
}

/* ---- conversation ------------------------------------------------------------------------- */

static void tool_call_done(ConLlmToolCall *t) {
        free(t->id);
        free(t->name);
        free(t->arguments);
}

static void message_done(ConLlmMessage *m) {
        free(m->content);
        for (size_t i = 0; i < m->n_tool_calls; i++)
                tool_call_done(&m->tool_calls[i]);
        free(m->tool_calls);
        free(m->tool_call_id);
}

ConLlmConversation *con_llm_conversation_new(void) {
        return calloc(1, sizeof(ConLlmConversation));
}

ConLlmConversation *con_llm_conversation_free(ConLlmConversation *c) {
        if (!c)
                return NULL;
        free(c->system);
        for (size_t i = 0; i < c->n_messages; i++)
                message_done(&c->messages[i]);
        free(c->messages);
        for (size_t i = 0; i < c->n_tools; i++) {
                free(c->tools[i].name);
                free(c->tools[i].description);
                free(c->tools[i].parameters);
        }
        free(c->tools);
        free(c);
        return NULL;
}

void con_llm_conversation_remove(ConLlmConversation *c, size_t from, size_t n) {
        if (from >= c->n_messages)
                return;
        if (n > c->n_messages - from)
                n = c->n_messages - from;
        for (size_t i = from; i < from + n; i++)
                message_done(&c->messages[i]);
        memmove(c->messages + from, c->messages + from + n, (c->n_messages - from - n) * sizeof(ConLlmMessage));
        c->n_messages -= n;
}

/* Every string of a conversation is a copy made valid text: a tool result or a history file with
 * bytes that are not UTF-8 must never make a request unsendable (D-Bus and JSON want UTF-8). */
static int strdup_opt(const char *s, char **ret) {
        *ret = NULL;
        if (!s)
                return 0;
        return con_utf8_sanitize(s, strlen(s), ret, NULL) < 0 ? -ENOMEM : 0;
}

int con_llm_conversation_set_system(ConLlmConversation *c, const char *system) {
        char *s;
        if (!c)
                return -EINVAL;
        if (strdup_opt(system, &s) < 0)
                return -ENOMEM;
        free(c->system);
        c->system = s;
        return 0;
}

/* Appends m (taking its contents on success). */
static int conversation_push(ConLlmConversation *c, ConLlmMessage *m) {
        ConLlmMessage *n = reallocarray(c->messages, c->n_messages + 1, sizeof(*n));
        if (!n)
                return -ENOMEM;
        c->messages = n;
        c->messages[c->n_messages++] = *m;
        *m = (ConLlmMessage) {};
        return 0;
}

int con_llm_conversation_add_user(ConLlmConversation *c, const char *text) {
        ConLlmMessage m = { .role = CON_LLM_ROLE_USER };
        if (!c || !text)
                return -EINVAL;
        if (strdup_opt(text, &m.content) < 0)
                return -ENOMEM;
        int r = conversation_push(c, &m);
        message_done(&m);
        return r;
}

int con_llm_conversation_add_assistant(ConLlmConversation *c, const char *text,
                                       const ConLlmToolCall *calls, size_t n_calls) {
        ConLlmMessage m = { .role = CON_LLM_ROLE_ASSISTANT };
        int r;

        if (!c || (n_calls > 0 && !calls))
                return -EINVAL;
        for (size_t i = 0; i < n_calls; i++)
                if (!calls[i].id || !calls[i].name)
                        return -EINVAL;
        r = strdup_opt(text, &m.content);
        if (r >= 0 && n_calls > 0) {
                m.tool_calls = calloc(n_calls, sizeof(ConLlmToolCall));
                if (!m.tool_calls)
                        r = -ENOMEM;
                for (size_t i = 0; r >= 0 && i < n_calls; i++) {
                        m.n_tool_calls++;
                        if (strdup_opt(calls[i].id, &m.tool_calls[i].id) < 0 ||
                            strdup_opt(calls[i].name, &m.tool_calls[i].name) < 0 ||
                            strdup_opt(calls[i].arguments ?: "{}", &m.tool_calls[i].arguments) < 0)
                                r = -ENOMEM;
                }
        }
        if (r >= 0)
                r = conversation_push(c, &m);
        message_done(&m);
        return r;
}

int con_llm_conversation_add_tool_result(ConLlmConversation *c, const char *tool_call_id,
                                         const char *content, bool is_error) {
        ConLlmMessage m = { .role = CON_LLM_ROLE_TOOL, .is_error = is_error };
        int r;

        if (!c || isempty(tool_call_id))
                return -EINVAL;
        r = strdup_opt(tool_call_id, &m.tool_call_id);
        if (r >= 0)
                r = strdup_opt(content ?: "", &m.content);
        if (r >= 0)
                r = conversation_push(c, &m);
        message_done(&m);
        return r;
}

int con_llm_conversation_add_response(ConLlmConversation *c, const ConLlmResponse *resp) {
        if (!resp)
                return -EINVAL;
        return con_llm_conversation_add_assistant(c, resp->text, resp->tool_calls, resp->n_tool_calls);
}

int con_llm_conversation_add_tool(ConLlmConversation *c, const char *name, const char *description,
                                  const char *parameters, ConErrorDetail *reterr) {
        _cleanup_cjson_ cJSON *schema = NULL;
        const char *got = NULL;
        ConLlmTool t = {};
        int r;

        if (!c)
                return -EINVAL;
        if (!tool_name_valid(name))
                return llm_error(reterr, -EINVAL, "tool name \"%s\" is invalid: allowed are 1 to %u of A-Z a-z 0-9 _ -",
                                 strempty(name), CON_LLM_TOOL_NAME_MAX);
        for (size_t i = 0; i < c->n_tools; i++)
                if (streq(c->tools[i].name, name))
                        return llm_error(reterr, -EEXIST, "tool \"%s\" is defined twice", name);
        if (parameters) {
                r = parse_json_object(parameters, &schema, &got);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return llm_error(reterr, -EINVAL, "tool \"%s\": parameters must be a JSON Schema object, got %s",
                                         name, got);
        }

        ConLlmTool *n = reallocarray(c->tools, c->n_tools + 1, sizeof(*n));
        if (!n)
                return -ENOMEM;
        c->tools = n;
        t.name = strdup(name);
        t.description = strdup(description ?: "");
        t.parameters = schema ? cJSON_PrintUnformatted(schema) : strdup("{\"type\":\"object\",\"properties\":{}}");
        if (!t.name || !t.description || !t.parameters) {
                free(t.name);
                free(t.description);
                free(t.parameters);
                return -ENOMEM;
        }
        c->tools[c->n_tools++] = t;
        return 0;
}

/* ---- request building --------------------------------------------------------------------- */

/* Adds a string member, replacing invalid UTF-8. Returns the new item or NULL on OOM. */
static cJSON *add_text(cJSON *obj, const char *key, const char *text) {
        const char *t = text ?: "";
        if (con_utf8_valid(t, strlen(t)))
                return cJSON_AddStringToObject(obj, key, t);
        _cleanup_free_ char *clean = NULL;
        return con_utf8_sanitize(t, strlen(t), &clean, NULL) >= 0 ? cJSON_AddStringToObject(obj, key, clean) : NULL;
}

static cJSON *add_object(cJSON *obj, const char *key) {
        return cJSON_AddObjectToObject(obj, key);
}

static bool add_item(cJSON *parent, const char *key, cJSON *item) {
        if (!item)
                return false;
        if (key ? !cJSON_AddItemToObject(parent, key, item) : !cJSON_AddItemToArray(parent, item)) {
                cJSON_Delete(item);
                return false;
        }
        return true;
}

/* The assistant message before index i that a tool result must answer, or NULL. */
static const ConLlmMessage *owning_assistant(const ConLlmConversation *c, size_t i) {
        while (i-- > 0)
                if (c->messages[i].role == CON_LLM_ROLE_ASSISTANT)
                        return &c->messages[i];
        return NULL;
}

static int check_conversation(const ConLlmConversation *c, const ConLlmParams *p, ConLlmWire wire,
                              ConErrorDetail *e) {
        if (!p || isempty(p->model))
                return llm_error(e, -EINVAL, "model: missing");
        if (!con_utf8_valid(p->model, strlen(p->model)))
                return llm_error(e, -EINVAL, "model: not valid UTF-8");
        if (wire == CON_LLM_WIRE_ANTHROPIC && p->max_tokens == 0)
                return llm_error(e, -EINVAL, "max_tokens: required by the anthropic wire format (got 0)");
        if (isnan(p->temperature) ||
            (p->temperature >= 0 && p->temperature > (wire == CON_LLM_WIRE_ANTHROPIC ? 1.0 : 2.0)))
                return llm_error(e, -EINVAL, "temperature %g: out of range, allowed is 0 to %s for %s",
                                 p->temperature, wire == CON_LLM_WIRE_ANTHROPIC ? "1" : "2",
                                 con_llm_wire_to_string(wire));

        for (size_t i = 0; i < c->n_tools; i++)
                if (!tool_name_valid(c->tools[i].name))
                        return llm_error(e, -EINVAL, "tools[%zu].name \"%s\": invalid tool name", i,
                                         strempty(c->tools[i].name));

        for (size_t i = 0; i < c->n_messages; i++) {
                const ConLlmMessage *m = &c->messages[i];

                if (m->role < 0 || m->role >= _CON_LLM_ROLE_MAX)
                        return llm_error(e, -EINVAL, "messages[%zu].role: invalid (%d)", i, (int) m->role);
                if (m->role != CON_LLM_ROLE_ASSISTANT && m->n_tool_calls > 0)
                        return llm_error(e, -EINVAL, "messages[%zu]: only assistant messages carry tool calls", i);
                for (size_t k = 0; k < m->n_tool_calls; k++) {
                        const ConLlmToolCall *t = &m->tool_calls[k];
                        if (!tool_id_valid(t->id))
                                return llm_error(e, -EINVAL, "messages[%zu].tool_calls[%zu].id: missing or invalid", i, k);
                        if (!tool_name_valid(t->name))
                                return llm_error(e, -EINVAL, "messages[%zu].tool_calls[%zu].name \"%s\": invalid tool name",
                                                 i, k, strempty(t->name));
                }
                if (m->role == CON_LLM_ROLE_TOOL) {
                        const ConLlmMessage *a = owning_assistant(c, i);
                        bool found = false;

                        if (isempty(m->tool_call_id))
                                return llm_error(e, -EINVAL, "messages[%zu]: tool result without tool_call_id", i);
                        for (size_t k = 0; a && k < a->n_tool_calls; k++)
                                found = found || streq(a->tool_calls[k].id, m->tool_call_id);
                        if (!found)
                                return llm_error(e, -EINVAL,
                                                 "messages[%zu]: tool result for \"%s\" answers no tool call of the preceding assistant message",
                                                 i, m->tool_call_id);
                }
        }
        return 0;
}

static int tool_arguments(const ConLlmToolCall *t, size_t i, size_t k, cJSON **ret, ConErrorDetail *e) {
        const char *got = NULL;
        int r = parse_json_object(t->arguments, ret, &got);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return llm_error(e, -EINVAL, "messages[%zu].tool_calls[%zu].arguments: must be a JSON object, got %s",
                                 i, k, got);
        return 0;
}

static int tool_schema(const ConLlmTool *t, cJSON **ret, ConErrorDetail *e) {
        const char *got = NULL;
        int r = parse_json_object(t->parameters, ret, &got);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return llm_error(e, -EINVAL, "tool \"%s\": parameters must be a JSON Schema object, got %s",
                                 strempty(t->name), got);
        return 0;
}

static int add_common_params(cJSON *root, const ConLlmParams *p, ConLlmWire wire) {
        if (!cJSON_AddStringToObject(root, "model", p->model))
                return -ENOMEM;
        if (p->max_tokens > 0 && !cJSON_AddNumberToObject(root, "max_tokens", p->max_tokens))
                return -ENOMEM;
        if (p->temperature >= 0 && !cJSON_AddNumberToObject(root, "temperature", p->temperature))
                return -ENOMEM;
        return 0;
}

static int build_openai(const ConLlmConversation *c, const ConLlmParams *p, cJSON *root, ConErrorDetail *e) {
        cJSON *msgs, *m, *tools;
        int r;

        r = add_common_params(root, p, CON_LLM_WIRE_OPENAI);
        if (r < 0)
                return r;
        msgs = cJSON_AddArrayToObject(root, "messages");
        if (!msgs)
                return -ENOMEM;

        if (!isempty(c->system)) {
                if (!add_item(msgs, NULL, m = cJSON_CreateObject()) ||
                    !cJSON_AddStringToObject(m, "role", "system") || !add_text(m, "content", c->system))
                        return -ENOMEM;
        }

        for (size_t i = 0; i < c->n_messages; i++) {
                const ConLlmMessage *cm = &c->messages[i];

                if (!add_item(msgs, NULL, m = cJSON_CreateObject()))
                        return -ENOMEM;
                switch (cm->role) {
                case CON_LLM_ROLE_USER:
                        if (!cJSON_AddStringToObject(m, "role", "user") || !add_text(m, "content", cm->content))
                                return -ENOMEM;
                        break;
                case CON_LLM_ROLE_TOOL:
                        if (!cJSON_AddStringToObject(m, "role", "tool") ||
                            !cJSON_AddStringToObject(m, "tool_call_id", cm->tool_call_id) ||
                            !add_text(m, "content", cm->content))
                                return -ENOMEM;
                        break;
                case CON_LLM_ROLE_ASSISTANT: {
                        if (!cJSON_AddStringToObject(m, "role", "assistant"))
                                return -ENOMEM;
                        if (cm->n_tool_calls > 0 && isempty(cm->content)) {
                                if (!cJSON_AddNullToObject(m, "content"))
                                        return -ENOMEM;
                        } else if (!add_text(m, "content", cm->content))
                                return -ENOMEM;
                        if (cm->n_tool_calls == 0)
                                break;
                        cJSON *calls = cJSON_AddArrayToObject(m, "tool_calls");
                        if (!calls)
                                return -ENOMEM;
                        for (size_t k = 0; k < cm->n_tool_calls; k++) {
                                _cleanup_cjson_ cJSON *args = NULL;
                                cJSON *call, *fn;
                                r = tool_arguments(&cm->tool_calls[k], i, k, &args, e);
                                if (r < 0)
                                        return r;
                                _cleanup_free_ char *args_text = cJSON_PrintUnformatted(args);
                                if (!args_text ||
                                    !add_item(calls, NULL, call = cJSON_CreateObject()) ||
                                    !cJSON_AddStringToObject(call, "id", cm->tool_calls[k].id) ||
                                    !cJSON_AddStringToObject(call, "type", "function") ||
                                    !(fn = add_object(call, "function")) ||
                                    !cJSON_AddStringToObject(fn, "name", cm->tool_calls[k].name) ||
                                    !cJSON_AddStringToObject(fn, "arguments", args_text))
                                        return -ENOMEM;
                        }
                        break;
                }
                default:
                        return -EINVAL;
                }
        }

        if (c->n_tools == 0)
                return 0;
        tools = cJSON_AddArrayToObject(root, "tools");
        if (!tools)
                return -ENOMEM;
        for (size_t i = 0; i < c->n_tools; i++) {
                cJSON *t, *fn;
                _cleanup_cjson_ cJSON *schema = NULL;
                r = tool_schema(&c->tools[i], &schema, e);
                if (r < 0)
                        return r;
                if (!add_item(tools, NULL, t = cJSON_CreateObject()) ||
                    !cJSON_AddStringToObject(t, "type", "function") ||
                    !(fn = add_object(t, "function")) ||
                    !cJSON_AddStringToObject(fn, "name", c->tools[i].name) ||
                    !add_text(fn, "description", c->tools[i].description) ||
                    !add_item(fn, "parameters", TAKE_PTR(schema)))
                        return -ENOMEM;
        }
        if (!cJSON_AddStringToObject(root, "tool_choice", "auto"))
                return -ENOMEM;
        return 0;
}

static int build_anthropic(const ConLlmConversation *c, const ConLlmParams *p, cJSON *root, ConErrorDetail *e) {
        cJSON *msgs, *content = NULL;
        const char *last_role = NULL;
        int r;

        r = add_common_params(root, p, CON_LLM_WIRE_ANTHROPIC);
        if (r < 0)
                return r;
        if (!isempty(c->system) && !add_text(root, "system", c->system))
                return -ENOMEM;
        msgs = cJSON_AddArrayToObject(root, "messages");
        if (!msgs)
                return -ENOMEM;

        for (size_t i = 0; i < c->n_messages; i++) {
                const ConLlmMessage *cm = &c->messages[i];
                /* Tool results travel in user turns; consecutive turns of one role are merged, since
                 * the API wants user and assistant to alternate. */
                const char *role = cm->role == CON_LLM_ROLE_ASSISTANT ? "assistant" : "user";
                cJSON *b;

                if (!last_role || !streq(last_role, role)) {
                        cJSON *m;
                        if (!add_item(msgs, NULL, m = cJSON_CreateObject()) ||
                            !cJSON_AddStringToObject(m, "role", role) ||
                            !(content = cJSON_AddArrayToObject(m, "content")))
                                return -ENOMEM;
                        last_role = role;
                }

                if (cm->role == CON_LLM_ROLE_TOOL) {
                        if (!add_item(content, NULL, b = cJSON_CreateObject()) ||
                            !cJSON_AddStringToObject(b, "type", "tool_result") ||
                            !cJSON_AddStringToObject(b, "tool_use_id", cm->tool_call_id) ||
                            !add_text(b, "content", cm->content) ||
                            (cm->is_error && !cJSON_AddTrueToObject(b, "is_error")))
                                return -ENOMEM;
                        continue;
                }
                /* The API refuses empty text blocks. */
                if (!isempty(cm->content) &&
                    (!add_item(content, NULL, b = cJSON_CreateObject()) ||
                     !cJSON_AddStringToObject(b, "type", "text") || !add_text(b, "text", cm->content)))
                        return -ENOMEM;
                for (size_t k = 0; k < cm->n_tool_calls; k++) {
                        _cleanup_cjson_ cJSON *args = NULL;
                        r = tool_arguments(&cm->tool_calls[k], i, k, &args, e);
                        if (r < 0)
                                return r;
                        if (!add_item(content, NULL, b = cJSON_CreateObject()) ||
                            !cJSON_AddStringToObject(b, "type", "tool_use") ||
                            !cJSON_AddStringToObject(b, "id", cm->tool_calls[k].id) ||
                            !cJSON_AddStringToObject(b, "name", cm->tool_calls[k].name) ||
                            !add_item(b, "input", TAKE_PTR(args)))
                                return -ENOMEM;
                }
        }

        if (c->n_tools == 0)
                return 0;
        cJSON *tools = cJSON_AddArrayToObject(root, "tools"), *choice;
        if (!tools)
                return -ENOMEM;
        for (size_t i = 0; i < c->n_tools; i++) {
                _cleanup_cjson_ cJSON *schema = NULL;
                cJSON *t;
                r = tool_schema(&c->tools[i], &schema, e);
                if (r < 0)
                        return r;
                if (!add_item(tools, NULL, t = cJSON_CreateObject()) ||
                    !cJSON_AddStringToObject(t, "name", c->tools[i].name) ||
                    !add_text(t, "description", c->tools[i].description) ||
                    !add_item(t, "input_schema", TAKE_PTR(schema)))
                        return -ENOMEM;
        }
        if (!(choice = add_object(root, "tool_choice")) || !cJSON_AddStringToObject(choice, "type", "auto"))
                return -ENOMEM;
        return 0;
}

int con_llm_build_request(ConLlmWire wire, const ConLlmConversation *c, const ConLlmParams *p,
                          char **ret_body, ConErrorDetail *reterr) {
        _cleanup_cjson_ cJSON *root = NULL;
        int r;

        if (!c || !ret_body)
                return -EINVAL;
        if (wire < 0 || wire >= _CON_LLM_WIRE_MAX)
                return llm_error(reterr, -EINVAL, "unknown wire format %d", (int) wire);
        r = check_conversation(c, p, wire, reterr);
        if (r < 0)
                return r;

        root = cJSON_CreateObject();
        if (!root)
                return -ENOMEM;
        r = wire == CON_LLM_WIRE_OPENAI ? build_openai(c, p, root, reterr) : build_anthropic(c, p, root, reterr);
        if (r < 0)
                return r;
        char *s = cJSON_PrintUnformatted(root);
        if (!s)
                return -ENOMEM;
        *ret_body = s;
        return 0;
}

int con_llm_build_url(ConLlmWire wire, const char *base_url, char **ret_url) {
        size_t l;
        char *s;

        if (isempty(base_url) || !ret_url || wire < 0 || wire >= _CON_LLM_WIRE_MAX)
                return -EINVAL;
        l = strlen(base_url);
        if (base_url[l - 1] == '/')
                l--;
        if (asprintf(&s, "%.*s%s", (int) l, base_url,
                     wire == CON_LLM_WIRE_OPENAI ? "/chat/completions" : "/messages") < 0)
                return -ENOMEM;
        *ret_url = s;
        return 0;
}

int con_llm_build_headers(ConLlmWire wire, const char *api_key, char ***ret_headers) {
        _cleanup_strv_free_ char **l = NULL;
        char *s;

        if (!ret_headers || wire < 0 || wire >= _CON_LLM_WIRE_MAX)
                return -EINVAL;
        for (const char *k = api_key; k && *k; k++)
                if ((unsigned char) *k < 0x20 || *k == 0x7F)
                        return -EINVAL;

        if (wire == CON_LLM_WIRE_OPENAI) {
                if (strv_extend(&l, "Content-Type: application/json") < 0)
                        return -ENOMEM;
                if (!isempty(api_key)) {
                        if (asprintf(&s, "Authorization: Bearer %s", api_key) < 0)
                                return -ENOMEM;
                        if (strv_consume(&l, s) < 0)
                                return -ENOMEM;
                }
        } else {
                if (isempty(api_key))
                        return -EINVAL;
                if (strv_extend(&l, "content-type: application/json") < 0 ||
                    strv_extend(&l, "anthropic-version: " CON_LLM_ANTHROPIC_VERSION) < 0)
                        return -ENOMEM;
                if (asprintf(&s, "x-api-key: %s", api_key) < 0)
                        return -ENOMEM;
                if (strv_consume(&l, s) < 0)
                        return -ENOMEM;
        }
        *ret_headers = TAKE_PTR(l);
        return 0;
}

/* ---- response parsing --------------------------------------------------------------------- */

ConLlmResponse *con_llm_response_free(ConLlmResponse *r) {
        if (!r)
                return NULL;
        free(r->text);
        for (size_t i = 0; i < r->n_tool_calls; i++)
                tool_call_done(&r->tool_calls[i]);
        free(r->tool_calls);
        free(r->stop_raw);
        free(r->model);
        free(r);
        return NULL;
}

/* Parses a whole body as one JSON value; validates size, NUL bytes and UTF-8 first. */
static int parse_body(const char *body, size_t size, cJSON **ret, ConErrorDetail *e) {
        size_t bad;

        if (!body && size > 0)
                return -EINVAL;
        if (size > CON_LLM_RESPONSE_MAX)
                return llm_error(e, -EFBIG, "response of %zu bytes is over the limit of %u bytes",
                                 size, CON_LLM_RESPONSE_MAX);
        if (size == 0)
                return llm_error(e, -EBADMSG, "response body is empty");
        if (memchr(body, 0, size))
                return llm_error(e, -EBADMSG, "response contains a NUL byte at offset %zu",
                                 (size_t) ((const char *) memchr(body, 0, size) - body));
        bad = con_utf8_invalid_offset(body, size);
        if (bad != size)
                return llm_error(e, -EBADMSG, "response is not valid UTF-8 (offset %zu)", bad);

        /* cJSON wants the terminating NUL inside the length to reject trailing data. */
        _cleanup_free_ char *copy = malloc(size + 1);
        if (!copy)
                return -ENOMEM;
        memcpy(copy, body, size);
        copy[size] = 0;
        const char *end = NULL;
        cJSON *j = cJSON_ParseWithLengthOpts(copy, size + 1, &end, true);
        if (!j) {
                size_t off = end && end >= copy && end <= copy + size ? (size_t) (end - copy) : 0;
                return llm_error(e, -EBADMSG, "response is not valid JSON (error near offset %zu)", off);
        }
        *ret = j;
        return 0;
}

/* Fetches a member of an object, checking its type. Missing optional members and JSON null give
 * NULL and 0. */
enum { J_STRING, J_OBJECT, J_ARRAY, J_NUMBER };
static const char *const j_names[] = { "a string", "an object", "an array", "a number" };

static int member(const cJSON *obj, const char *path, const char *key, int type, bool required,
                  const cJSON **ret, ConErrorDetail *e) {
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
        bool ok;

        *ret = NULL;
        if (!j || cJSON_IsNull(j)) {
                if (required)
                        return llm_error(e, -EBADMSG, "%s%s%s: missing", path, *path ? "." : "", key);
                return 0;
        }
        switch (type) {
        case J_STRING:
                ok = cJSON_IsString(j) && j->valuestring;
                break;
        case J_OBJECT:
                ok = cJSON_IsObject(j);
                break;
        case J_ARRAY:
                ok = cJSON_IsArray(j);
                break;
        default:
                ok = cJSON_IsNumber(j);
        }
        if (!ok)
                return llm_error(e, -EBADMSG, "%s%s%s: must be %s, got %s", path, *path ? "." : "", key,
                                 j_names[type], con_json_kind(j));
        *ret = j;
        return 0;
}

static int member_count(const cJSON *obj, const char *path, const char *key, bool required,
                        uint64_t *ret, ConErrorDetail *e) {
        const cJSON *j;
        int r = member(obj, path, key, J_NUMBER, required, &j, e);
        if (r < 0)
                return r;
        if (!j) {
                *ret = 0;
                return 0;
        }
        double d = j->valuedouble;
        if (!isfinite(d) || d < 0 || d > 9007199254740992.0 || (double) (uint64_t) d != d)
                return llm_error(e, -EBADMSG, "%s.%s: must be a non-negative integer, got %g", path, key, d);
        *ret = (uint64_t) d;
        return 0;
}

static int provider_error(const cJSON *root, ConErrorDetail *e) {
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
        const cJSON *msg = NULL;

        if (!err || cJSON_IsNull(err))
                return 0;
        if (cJSON_IsObject(err))
                msg = cJSON_GetObjectItemCaseSensitive(err, "message");
        else if (cJSON_IsString(err))
                msg = err;
        return llm_error(e, -EREMOTEIO, "provider returned an error: %s",
                         cJSON_IsString(msg) && msg->valuestring ? msg->valuestring : "(no message)");
}

/* Tool-call arguments that are not a JSON object: kept, wrapped, for the tool loop to answer the
 * call with an error the model can act on (one bad call must not fail the whole task). */
static int malformed_arguments(const cJSON *args, const char *raw, cJSON **ret) {
        _cleanup_free_ char *printed = NULL;
        if (!raw) {
                printed = cJSON_PrintUnformatted(args);
                if (!printed)
                        return -ENOMEM;
                raw = printed;
        }
        _cleanup_cjson_ cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddStringToObject(o, CON_LLM_MALFORMED_ARGUMENTS, raw))
                return -ENOMEM;
        *ret = TAKE_PTR(o);
        return 0;
}

static int tool_call_new(ConLlmResponse *resp, const char *path, const char *id, const char *name,
                         const cJSON *args_obj, ConErrorDetail *e) {
        if (resp->n_tool_calls >= CON_LLM_TOOL_CALLS_MAX)
                return llm_error(e, -EBADMSG, "%s: more than %u tool calls", path, CON_LLM_TOOL_CALLS_MAX);
        if (!tool_id_valid(id))
                return llm_error(e, -EBADMSG, "%s.id: must be 1 to %u printable characters without spaces",
                                 path, CON_LLM_TOOL_ID_MAX);
        if (!tool_name_valid(name))
                return llm_error(e, -EBADMSG, "%s.name \"%.64s\": invalid tool name, allowed are 1 to %u of A-Z a-z 0-9 _ -",
                                 path, name, CON_LLM_TOOL_NAME_MAX);
        for (size_t i = 0; i < resp->n_tool_calls; i++)
                if (streq(resp->tool_calls[i].id, id))
                        return llm_error(e, -EBADMSG, "%s.id \"%s\": used twice", path, id);

        ConLlmToolCall *n = reallocarray(resp->tool_calls, resp->n_tool_calls + 1, sizeof(*n));
        if (!n)
                return -ENOMEM;
        resp->tool_calls = n;
        ConLlmToolCall t = {
                .id = strdup(id),
                .name = strdup(name),
                .arguments = cJSON_PrintUnformatted(args_obj),
        };
        if (!t.id || !t.name || !t.arguments) {
                tool_call_done(&t);
                return -ENOMEM;
        }
        resp->tool_calls[resp->n_tool_calls++] = t;
        return 0;
}

static int set_string(char **dst, const char *s) {
        char *n = strdup(s);
        if (!n)
                return -ENOMEM;
        free(*dst);
        *dst = n;
        return 0;
}

static int append_string(char **dst, const char *s) {
        if (!*dst)
                return set_string(dst, s);
        char *n;
        if (asprintf(&n, "%s%s", *dst, s) < 0)
                return -ENOMEM;
        free(*dst);
        *dst = n;
        return 0;
}

static int parse_openai(const cJSON *root, ConLlmResponse *resp, ConErrorDetail *e) {
        const cJSON *choices, *choice, *msg, *content, *calls, *finish, *usage, *model, *refusal;
        int r;

        if ((r = member(root, "", "choices", J_ARRAY, true, &choices, e)) < 0)
                return r;
        choice = cJSON_GetArrayItem(choices, 0);
        if (!choice)
                return llm_error(e, -EBADMSG, "choices: empty array");
        if (!cJSON_IsObject(choice))
                return llm_error(e, -EBADMSG, "choices[0]: must be an object, got %s", con_json_kind(choice));
        if ((r = member(choice, "choices[0]", "message", J_OBJECT, true, &msg, e)) < 0 ||
            (r = member(msg, "choices[0].message", "content", J_STRING, false, &content, e)) < 0 ||
            (r = member(msg, "choices[0].message", "tool_calls", J_ARRAY, false, &calls, e)) < 0 ||
            (r = member(msg, "choices[0].message", "refusal", J_STRING, false, &refusal, e)) < 0 ||
            (r = member(choice, "choices[0]", "finish_reason", J_STRING, false, &finish, e)) < 0 ||
            (r = member(root, "", "usage", J_OBJECT, false, &usage, e)) < 0 ||
            (r = member(root, "", "model", J_STRING, false, &model, e)) < 0)
                return r;

        if (content && *content->valuestring && (r = set_string(&resp->text, content->valuestring)) < 0)
                return r;

        size_t i = 0;
        const cJSON *call;
        cJSON_ArrayForEach(call, calls) {
                char path[96];
                const cJSON *id, *type, *fn, *name, *args;
                _cleanup_cjson_ cJSON *parsed = NULL;

                snprintf(path, sizeof(path), "choices[0].message.tool_calls[%zu]", i);
                if (!cJSON_IsObject(call))
                        return llm_error(e, -EBADMSG, "%s: must be an object, got %s", path, con_json_kind(call));
                if ((r = member(call, path, "id", J_STRING, true, &id, e)) < 0 ||
                    (r = member(call, path, "type", J_STRING, false, &type, e)) < 0 ||
                    (r = member(call, path, "function", J_OBJECT, true, &fn, e)) < 0)
                        return r;
                if (type && !streq(type->valuestring, "function"))
                        return llm_error(e, -EBADMSG, "%s.type: must be \"function\", got \"%.32s\"",
                                         path, type->valuestring);
                strncat(path, ".function", sizeof(path) - strlen(path) - 1);
                if ((r = member(fn, path, "name", J_STRING, true, &name, e)) < 0)
                        return r;
                args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
                if (cJSON_IsString(args) && args->valuestring) {
                        const char *got = NULL;
                        r = parse_json_object(args->valuestring, &parsed, &got);
                        if (r == -ENOMEM)
                                return r;
                        if (r < 0 && (r = malformed_arguments(NULL, args->valuestring, &parsed)) < 0)
                                return r;
                        args = parsed;
                } else if (!args || cJSON_IsNull(args)) {
                        if (!(parsed = cJSON_CreateObject()))
                                return -ENOMEM;
                        args = parsed;
                } else if (!cJSON_IsObject(args)) {
                        if ((r = malformed_arguments(args, NULL, &parsed)) < 0)
                                return r;
                        args = parsed;
                }
                path[strlen(path) - strlen(".function")] = 0;
                if ((r = tool_call_new(resp, path, id->valuestring, name->valuestring, args, e)) < 0)
                        return r;
                i++;
        }

        if (finish) {
                const char *f = finish->valuestring;
                if ((r = set_string(&resp->stop_raw, f)) < 0)
                        return r;
                resp->stop = streq(f, "stop") ? CON_LLM_STOP_END :
                             streq(f, "tool_calls") || streq(f, "function_call") ? CON_LLM_STOP_TOOL_USE :
                             streq(f, "length") ? CON_LLM_STOP_MAX_TOKENS :
                             streq(f, "content_filter") ? CON_LLM_STOP_FILTERED : CON_LLM_STOP_OTHER;
        } else
                resp->stop = CON_LLM_STOP_OTHER;
        /* The model declined (OpenAI's message.refusal): whatever the finish reason, not an answer. */
        if (refusal && !isempty(refusal->valuestring)) {
                if ((r = set_string(&resp->stop_raw, "refusal")) < 0)
                        return r;
                resp->stop = CON_LLM_STOP_FILTERED;
                if (!resp->text && (r = set_string(&resp->text, refusal->valuestring)) < 0)
                        return r;
        }

        if (usage) {
                if ((r = member_count(usage, "usage", "prompt_tokens", true, &resp->input_tokens, e)) < 0 ||
                    (r = member_count(usage, "usage", "completion_tokens", true, &resp->output_tokens, e)) < 0)
                        return r;
                resp->has_usage = true;
        }
        if (model && (r = set_string(&resp->model, model->valuestring)) < 0)
                return r;
        return 0;
}

static int parse_anthropic(const cJSON *root, ConLlmResponse *resp, ConErrorDetail *e) {
        const cJSON *type, *role, *content, *stop, *usage, *model, *block;
        int r;

        if ((r = member(root, "", "type", J_STRING, false, &type, e)) < 0 ||
            (r = member(root, "", "role", J_STRING, false, &role, e)) < 0 ||
            (r = member(root, "", "content", J_ARRAY, true, &content, e)) < 0 ||
            (r = member(root, "", "stop_reason", J_STRING, false, &stop, e)) < 0 ||
            (r = member(root, "", "usage", J_OBJECT, false, &usage, e)) < 0 ||
            (r = member(root, "", "model", J_STRING, false, &model, e)) < 0)
                return r;
        if (type && !streq(type->valuestring, "message"))
                return llm_error(e, -EBADMSG, "type: must be \"message\", got \"%.32s\"", type->valuestring);
        if (role && !streq(role->valuestring, "assistant"))
                return llm_error(e, -EBADMSG, "role: must be \"assistant\", got \"%.32s\"", role->valuestring);

        size_t i = 0;
        cJSON_ArrayForEach(block, content) {
                char path[64];
                const cJSON *btype, *text, *id, *name, *input;

                snprintf(path, sizeof(path), "content[%zu]", i++);
                if (!cJSON_IsObject(block))
                        return llm_error(e, -EBADMSG, "%s: must be an object, got %s", path, con_json_kind(block));
                if ((r = member(block, path, "type", J_STRING, true, &btype, e)) < 0)
                        return r;
                if (streq(btype->valuestring, "text")) {
                        if ((r = member(block, path, "text", J_STRING, true, &text, e)) < 0 ||
                            (r = append_string(&resp->text, text->valuestring)) < 0)
                                return r;
                } else if (streq(btype->valuestring, "tool_use")) {
                        if ((r = member(block, path, "id", J_STRING, true, &id, e)) < 0 ||
                            (r = member(block, path, "name", J_STRING, true, &name, e)) < 0)
                                return r;
                        _cleanup_cjson_ cJSON *made = NULL;
                        input = cJSON_GetObjectItemCaseSensitive(block, "input");
                        if (!input || cJSON_IsNull(input)) {
                                if (!(made = cJSON_CreateObject()))
                                        return -ENOMEM;
                                input = made;
                        } else if (!cJSON_IsObject(input)) {
                                if ((r = malformed_arguments(input, NULL, &made)) < 0)
                                        return r;
                                input = made;
                        }
                        if ((r = tool_call_new(resp, path, id->valuestring, name->valuestring, input, e)) < 0)
                                return r;
                }
                /* Other block types (thinking, redacted_thinking, server tools) carry nothing we use. */
        }
        if (resp->text && !*resp->text) {
                free(resp->text);
                resp->text = NULL;
        }

        if (stop) {
                const char *s = stop->valuestring;
                if ((r = set_string(&resp->stop_raw, s)) < 0)
                        return r;
                resp->stop = streq(s, "end_turn") || streq(s, "stop_sequence") ? CON_LLM_STOP_END :
                             streq(s, "tool_use") ? CON_LLM_STOP_TOOL_USE :
                             streq(s, "max_tokens") ? CON_LLM_STOP_MAX_TOKENS :
                             streq(s, "refusal") ? CON_LLM_STOP_FILTERED : CON_LLM_STOP_OTHER;
        } else
                resp->stop = CON_LLM_STOP_OTHER;

        if (usage) {
                uint64_t cache_w = 0, cache_r = 0;
                if ((r = member_count(usage, "usage", "input_tokens", true, &resp->input_tokens, e)) < 0 ||
                    (r = member_count(usage, "usage", "output_tokens", true, &resp->output_tokens, e)) < 0 ||
                    (r = member_count(usage, "usage", "cache_creation_input_tokens", false, &cache_w, e)) < 0 ||
                    (r = member_count(usage, "usage", "cache_read_input_tokens", false, &cache_r, e)) < 0)
                        return r;
                /* Cached prompt parts are input too. */
                resp->input_tokens += cache_w + cache_r;
                resp->has_usage = true;
        }
        if (model && (r = set_string(&resp->model, model->valuestring)) < 0)
                return r;
        return 0;
}

int con_llm_parse_response(ConLlmWire wire, const char *body, size_t size, ConLlmResponse **ret,
                           ConErrorDetail *reterr) {
        _cleanup_cjson_ cJSON *root = NULL;
        _cleanup_(con_llm_response_freep) ConLlmResponse *resp = NULL;
        int r;

        if (!ret || wire < 0 || wire >= _CON_LLM_WIRE_MAX)
                return -EINVAL;
        r = parse_body(body, size, &root, reterr);
        if (r < 0)
                return r;
        if (!cJSON_IsObject(root))
                return llm_error(reterr, -EBADMSG, "response: must be a JSON object, got %s", con_json_kind(root));
        r = provider_error(root, reterr);
        if (r < 0)
                return r;

        resp = calloc(1, sizeof(*resp));
        if (!resp)
                return -ENOMEM;
        r = wire == CON_LLM_WIRE_OPENAI ? parse_openai(root, resp, reterr) : parse_anthropic(root, resp, reterr);
        if (r < 0)
                return r;
        if (resp->n_tool_calls > 0)
                resp->stop = CON_LLM_STOP_TOOL_USE;
        *ret = TAKE_PTR(resp);
        return 0;
}

static uint64_t usage_number(const cJSON *usage, const char *key) {
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(usage, key);
        if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble) || j->valuedouble < 0)
                return 0;
        /* Lenient on purpose: a provider's bill counts even when the figure is odd. */
        if (j->valuedouble > 9007199254740992.0)
                return UINT64_C(9007199254740992);
        uint64_t v = (uint64_t) j->valuedouble;
        return (double) v < j->valuedouble ? v + 1 : v;       /* rounded up */
}

int con_llm_parse_usage(ConLlmWire wire, const char *body, size_t size, uint64_t *ret_input,
                        uint64_t *ret_output) {
        _cleanup_cjson_ cJSON *root = NULL;

        if (!ret_input || !ret_output || wire < 0 || wire >= _CON_LLM_WIRE_MAX)
                return -EINVAL;
        *ret_input = *ret_output = 0;
        if (!body || size == 0 || size > CON_LLM_RESPONSE_MAX)
                return 0;
        root = cJSON_ParseWithLength(body, size);
        if (!root)
                return 0;       /* not JSON (or out of memory): no figures to bill */
        const cJSON *usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
        if (!cJSON_IsObject(usage))
                return 0;
        if (wire == CON_LLM_WIRE_OPENAI) {
                *ret_input = usage_number(usage, "prompt_tokens");
                *ret_output = usage_number(usage, "completion_tokens");
        } else {
                *ret_input = usage_number(usage, "input_tokens") +
                             usage_number(usage, "cache_creation_input_tokens") +
                             usage_number(usage, "cache_read_input_tokens");
                *ret_output = usage_number(usage, "output_tokens");
        }
        return *ret_input > 0 || *ret_output > 0;
}

int con_llm_parse_error(const char *body, size_t size, char **ret_message) {
        _cleanup_cjson_ cJSON *root = NULL;
        const cJSON *err, *msg = NULL, *type = NULL;
        char *s;

        if (!ret_message)
                return -EINVAL;
        if (parse_body(body, size, &root, NULL) < 0 || !cJSON_IsObject(root))
                return -ENOENT;
        err = cJSON_GetObjectItemCaseSensitive(root, "error");
        if (cJSON_IsObject(err)) {
                msg = cJSON_GetObjectItemCaseSensitive(err, "message");
                type = cJSON_GetObjectItemCaseSensitive(err, "type");
        } else if (cJSON_IsString(err))
                msg = err;
        if (!cJSON_IsString(msg) || isempty(msg->valuestring))
                return -ENOENT;
        if (cJSON_IsString(type) && !isempty(type->valuestring)) {
                if (asprintf(&s, "%s: %s", type->valuestring, msg->valuestring) < 0)
                        return -ENOMEM;
        } else if (!(s = strdup(msg->valuestring)))
                return -ENOMEM;
        *ret_message = s;
        return 0;
}

/* ---- retries ------------------------------------------------------------------------------ */

bool con_llm_status_retryable(long status) {
        return status == 408 || status == 429 || (status >= 500 && status <= 599);
}

static bool transport_retryable(int err) {
        switch (err) {
        case -ETIMEDOUT:
        case -ECONNREFUSED:
        case -ECONNRESET:
        case -EHOSTUNREACH:
        case -EIO:
                return true;
        default:
                return false;
        }
}

int con_llm_retry_decide(long status, int transport_error, bool has_retry_after, uint64_t retry_after_usec,
                         unsigned attempt, uint64_t *ret_delay_usec) {
        if (!ret_delay_usec)
                return -EINVAL;
        if (transport_error < 0 ? !transport_retryable(transport_error) : !con_llm_status_retryable(status))
                return 0;
        if (attempt >= CON_LLM_RETRY_ATTEMPTS_MAX)
                return 0;
        if (transport_error == 0 && has_retry_after) {
                if (retry_after_usec > CON_LLM_RETRY_AFTER_MAX)
                        return 0;
                *ret_delay_usec = retry_after_usec;
                return 1;
        }
        uint64_t d = attempt >= 16 ? CON_LLM_RETRY_BACKOFF_MAX : CON_LLM_RETRY_BASE_USEC << attempt;
        *ret_delay_usec = d > CON_LLM_RETRY_BACKOFF_MAX ? CON_LLM_RETRY_BACKOFF_MAX : d;
        return 1;
}
