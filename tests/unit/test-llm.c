/* SPDX-License-Identifier: MIT */
#include <cjson/cJSON.h>
#include <errno.h>
#include <string.h>

#include "json-util.h"
#include "http.h"
#include "llm.h"
#include "strv.h"
#include "test-util.h"


/* path: dot-separated keys, numbers index arrays */
static const cJSON *jget(const cJSON *root, const char *path) {
        _cleanup_free_ char *copy = g_strdup(path);
        const cJSON *j = root;
        char *save = NULL;
        for (char *k = strtok_r(copy, ".", &save); k && j; k = strtok_r(NULL, ".", &save))
                j = g_ascii_isdigit(*k) ? cJSON_GetArrayItem(j, atoi(k)) : cJSON_GetObjectItemCaseSensitive(j, k);
        return j;
}

static const char *jstr(const cJSON *root, const char *path) {
        const cJSON *j = jget(root, path);
        if (!j)
                g_error("%s: missing", path);
        if (cJSON_IsString(j))
                return j->valuestring;
        static char buf[64];
        if (cJSON_IsNumber(j))
                g_snprintf(buf, sizeof(buf), "%g", j->valuedouble);
        else if (cJSON_IsNull(j))
                g_strlcpy(buf, "null", sizeof(buf));
        else if (cJSON_IsBool(j))
                g_strlcpy(buf, cJSON_IsTrue(j) ? "true" : "false", sizeof(buf));
        else
                g_strlcpy(buf, cJSON_IsArray(j) ? "[array]" : "{object}", sizeof(buf));
        return buf;
}

/* system, user, assistant(text + 2 calls), tool, tool, user, assistant(final) */
static ConLlmConversation *sample_conversation(void) {
        ConLlmConversation *c = con_llm_conversation_new();
        ConLlmToolCall calls[] = {
                { .id = "call_1", .name = "read_file", .arguments = "{\"path\":\"/etc/hostname\"}" },
                { .id = "call_2", .name = "exec", .arguments = NULL },
        };
        ConErrorDetail e = {};

        g_assert_nonnull(c);
        g_assert_cmpint(con_llm_conversation_set_system(c, "You are a test."), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_user(c, "hello"), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_assistant(c, "let me look", calls, 2), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_tool_result(c, "call_1", "box1", false), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_tool_result(c, "call_2", "denied", true), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_user(c, "and now?"), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_tool(c, "read_file", "Read a file",
                        "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\"}},\"required\":[\"path\"]}",
                        &e), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_tool(c, "exec", "Run a command", NULL, &e), ==, 0);
        return c;
}

static void test_build_openai(void) {
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *c = sample_conversation();
        ConLlmParams p = { .model = "anthropic/claude-sonnet-4.6", .max_tokens = 8192, .temperature = 0.7 };
        _cleanup_free_ char *body = NULL;
        ConErrorDetail e = {};

        g_assert_cmpint(con_llm_build_request(CON_LLM_WIRE_OPENAI, c, &p, &body, &e), ==, 0);
        _cleanup_(cJSON_Deletep) cJSON *j = cJSON_Parse(body);
        g_assert_nonnull(j);
        g_assert_cmpstr(jstr(j, "model"), ==, "anthropic/claude-sonnet-4.6");
        g_assert_cmpstr(jstr(j, "max_tokens"), ==, "8192");
        g_assert_cmpstr(jstr(j, "temperature"), ==, "0.7");
        g_assert_cmpstr(jstr(j, "tool_choice"), ==, "auto");
        g_assert_cmpstr(jstr(j, "messages.0.role"), ==, "system");
        g_assert_cmpstr(jstr(j, "messages.0.content"), ==, "You are a test.");
        g_assert_cmpstr(jstr(j, "messages.1.role"), ==, "user");
        g_assert_cmpstr(jstr(j, "messages.1.content"), ==, "hello");
        g_assert_cmpstr(jstr(j, "messages.2.role"), ==, "assistant");
        g_assert_cmpstr(jstr(j, "messages.2.content"), ==, "let me look");
        g_assert_cmpstr(jstr(j, "messages.2.tool_calls.0.id"), ==, "call_1");
        g_assert_cmpstr(jstr(j, "messages.2.tool_calls.0.type"), ==, "function");
        g_assert_cmpstr(jstr(j, "messages.2.tool_calls.0.function.name"), ==, "read_file");
        /* arguments travel as a JSON string on this wire */
        g_assert_cmpstr(jstr(j, "messages.2.tool_calls.0.function.arguments"), ==, "{\"path\":\"/etc/hostname\"}");
        g_assert_cmpstr(jstr(j, "messages.2.tool_calls.1.function.arguments"), ==, "{}");
        g_assert_cmpstr(jstr(j, "messages.3.role"), ==, "tool");
        g_assert_cmpstr(jstr(j, "messages.3.tool_call_id"), ==, "call_1");
        g_assert_cmpstr(jstr(j, "messages.3.content"), ==, "box1");
        g_assert_cmpstr(jstr(j, "messages.4.tool_call_id"), ==, "call_2");
        g_assert_cmpstr(jstr(j, "messages.5.content"), ==, "and now?");
        g_assert_cmpint(cJSON_GetArraySize(cJSON_GetObjectItem(j, "messages")), ==, 6);
        g_assert_cmpstr(jstr(j, "tools.0.type"), ==, "function");
        g_assert_cmpstr(jstr(j, "tools.0.function.name"), ==, "read_file");
        g_assert_cmpstr(jstr(j, "tools.0.function.parameters.required.0"), ==, "path");
        g_assert_cmpstr(jstr(j, "tools.1.function.parameters.type"), ==, "object");

        /* No tools: neither tools nor tool_choice; temperature < 0 and max_tokens 0 are not sent. */
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *c2 = con_llm_conversation_new();
        _cleanup_free_ char *body2 = NULL;
        g_assert_cmpint(con_llm_conversation_add_user(c2, "hi"), ==, 0);
        p = (ConLlmParams) { .model = "llama3", .temperature = -1 };
        g_assert_cmpint(con_llm_build_request(CON_LLM_WIRE_OPENAI, c2, &p, &body2, &e), ==, 0);
        g_assert_cmpstr(body2, ==, "{\"model\":\"llama3\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
        con_error_detail_done(&e);
}

static void test_build_anthropic(void) {
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *c = sample_conversation();
        ConLlmParams p = { .model = "claude-sonnet-4-6", .max_tokens = 1024, .temperature = 0.5 };
        _cleanup_free_ char *body = NULL;
        ConErrorDetail e = {};

        g_assert_cmpint(con_llm_build_request(CON_LLM_WIRE_ANTHROPIC, c, &p, &body, &e), ==, 0);
        _cleanup_(cJSON_Deletep) cJSON *j = cJSON_Parse(body);
        g_assert_nonnull(j);
        g_assert_cmpstr(jstr(j, "system"), ==, "You are a test.");
        g_assert_cmpstr(jstr(j, "max_tokens"), ==, "1024");
        g_assert_cmpstr(jstr(j, "tool_choice.type"), ==, "auto");
        g_assert_cmpstr(jstr(j, "messages.0.role"), ==, "user");
        g_assert_cmpstr(jstr(j, "messages.0.content.0.type"), ==, "text");
        g_assert_cmpstr(jstr(j, "messages.0.content.0.text"), ==, "hello");
        g_assert_cmpstr(jstr(j, "messages.1.role"), ==, "assistant");
        g_assert_cmpstr(jstr(j, "messages.1.content.0.text"), ==, "let me look");
        g_assert_cmpstr(jstr(j, "messages.1.content.1.type"), ==, "tool_use");
        g_assert_cmpstr(jstr(j, "messages.1.content.1.id"), ==, "call_1");
        g_assert_cmpstr(jstr(j, "messages.1.content.1.name"), ==, "read_file");
        /* input is an object on this wire */
        g_assert_cmpstr(jstr(j, "messages.1.content.1.input.path"), ==, "/etc/hostname");
        g_assert_cmpstr(jstr(j, "messages.1.content.2.input"), ==, "{object}");
        /* both tool results and the next user text merged into one user turn */
        g_assert_cmpint(cJSON_GetArraySize(cJSON_GetObjectItem(j, "messages")), ==, 3);
        g_assert_cmpstr(jstr(j, "messages.2.role"), ==, "user");
        g_assert_cmpstr(jstr(j, "messages.2.content.0.type"), ==, "tool_result");
        g_assert_cmpstr(jstr(j, "messages.2.content.0.tool_use_id"), ==, "call_1");
        g_assert_cmpstr(jstr(j, "messages.2.content.0.content"), ==, "box1");
        g_assert_null(jget(j, "messages.2.content.0.is_error"));
        g_assert_cmpstr(jstr(j, "messages.2.content.1.is_error"), ==, "true");
        g_assert_cmpstr(jstr(j, "messages.2.content.2.text"), ==, "and now?");
        g_assert_cmpstr(jstr(j, "tools.0.name"), ==, "read_file");
        g_assert_cmpstr(jstr(j, "tools.0.input_schema.type"), ==, "object");
        g_assert_null(jget(j, "tools.0.type"));
        g_assert_null(jget(j, "messages.0.content.1"));
        con_error_detail_done(&e);
}

static void expect_build_error(ConLlmWire wire, ConLlmConversation *c, const ConLlmParams *p, const char *msg) {
        _cleanup_free_ char *body = NULL;
        ConErrorDetail e = {};
        g_assert_cmpint(con_llm_build_request(wire, c, p, &body, &e), ==, -EINVAL);
        g_assert_null(body);
        g_assert_nonnull(e.message);
        if (!strstr(e.message, msg))
                g_error("expected \"%s\" in \"%s\"", msg, e.message);
        con_error_detail_done(&e);
}

static void test_build_errors(void) {
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *c = sample_conversation();
        ConLlmParams p = { .model = "m", .max_tokens = 0, .temperature = 0.7 };
        ConErrorDetail e = {};

        expect_build_error(CON_LLM_WIRE_ANTHROPIC, c, &p, "max_tokens: required by the anthropic wire format");
        p.max_tokens = 100;
        p.temperature = 1.5;
        expect_build_error(CON_LLM_WIRE_ANTHROPIC, c, &p, "temperature 1.5: out of range, allowed is 0 to 1 for anthropic");
        p.temperature = 2.5;
        expect_build_error(CON_LLM_WIRE_OPENAI, c, &p, "allowed is 0 to 2 for openai");
        p.temperature = 0;
        p.model = NULL;
        expect_build_error(CON_LLM_WIRE_OPENAI, c, &p, "model: missing");
        p.model = "m";

        /* a tool result for a call nobody made */
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *c2 = con_llm_conversation_new();
        g_assert_cmpint(con_llm_conversation_add_user(c2, "x"), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_tool_result(c2, "call_9", "r", false), ==, 0);
        expect_build_error(CON_LLM_WIRE_OPENAI, c2, &p,
                           "messages[1]: tool result for \"call_9\" answers no tool call of the preceding assistant message");

        /* arguments that are not an object */
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *c3 = con_llm_conversation_new();
        ConLlmToolCall bad = { .id = "c1", .name = "exec", .arguments = "[1,2]" };
        g_assert_cmpint(con_llm_conversation_add_assistant(c3, NULL, &bad, 1), ==, 0);
        expect_build_error(CON_LLM_WIRE_OPENAI, c3, &p,
                           "messages[0].tool_calls[0].arguments: must be a JSON object, got an array");
        expect_build_error(CON_LLM_WIRE_ANTHROPIC, c3, &p, "must be a JSON object, got an array");

        /* tool definitions */
        g_assert_cmpint(con_llm_conversation_add_tool(c, "bad name", NULL, NULL, &e), ==, -EINVAL);
        g_assert_cmpstr(e.message, ==, "tool name \"bad name\" is invalid: allowed are 1 to 64 of A-Z a-z 0-9 _ -");
        g_assert_cmpint(con_llm_conversation_add_tool(c, "exec", NULL, NULL, &e), ==, -EEXIST);
        g_assert_cmpint(con_llm_conversation_add_tool(c, "t", NULL, "\"string\"", &e), ==, -EINVAL);
        g_assert_cmpstr(e.message, ==, "tool \"t\": parameters must be a JSON Schema object, got a string");
        g_assert_cmpint(con_llm_conversation_add_tool(c, "t", NULL, "{nope", &e), ==, -EINVAL);
        g_assert_cmpint(con_llm_conversation_add_tool_result(c, "", "x", false), ==, -EINVAL);
        con_error_detail_done(&e);
}

static void test_build_utf8(void) {
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *c = con_llm_conversation_new();
        ConLlmParams p = { .model = "m", .max_tokens = 10, .temperature = -1 };
        _cleanup_free_ char *body = NULL;

        g_assert_cmpint(con_llm_conversation_add_user(c, "bin\xff\xfe ok \xc3\xa9"), ==, 0);
        g_assert_cmpint(con_llm_build_request(CON_LLM_WIRE_OPENAI, c, &p, &body, NULL), ==, 0);
        g_assert_true(g_utf8_validate(body, -1, NULL));
        g_assert_nonnull(strstr(body, "bin\xef\xbf\xbd\xef\xbf\xbd ok \xc3\xa9"));
}

static void test_headers_url(void) {
        _cleanup_strv_free_ char **h1 = NULL, **h2 = NULL, **h3 = NULL, **h4 = NULL;
        _cleanup_free_ char *u1 = NULL, *u2 = NULL;

        g_assert_cmpint(con_llm_build_headers(CON_LLM_WIRE_OPENAI, "sk-1", &h1), ==, 0);
        g_assert_true(strv_contains(h1, "Authorization: Bearer sk-1"));
        g_assert_true(strv_contains(h1, "Content-Type: application/json"));
        g_assert_cmpint(strv_length(h1), ==, 2);
        g_assert_cmpint(con_llm_build_headers(CON_LLM_WIRE_OPENAI, NULL, &h2), ==, 0);
        g_assert_cmpint(strv_length(h2), ==, 1);
        g_assert_cmpint(con_llm_build_headers(CON_LLM_WIRE_ANTHROPIC, "ak", &h3), ==, 0);
        g_assert_true(strv_contains(h3, "x-api-key: ak"));
        g_assert_true(strv_contains(h3, "anthropic-version: 2023-06-01"));
        g_assert_cmpint(strv_length(h3), ==, 3);
        g_assert_cmpint(con_llm_build_headers(CON_LLM_WIRE_ANTHROPIC, "", &h4), ==, -EINVAL);
        g_assert_cmpint(con_llm_build_headers(CON_LLM_WIRE_OPENAI, "k\r\nX-Evil: 1", &h4), ==, -EINVAL);
        g_assert_null(h4);

        g_assert_cmpint(con_llm_build_url(CON_LLM_WIRE_OPENAI, "https://openrouter.ai/api/v1/", &u1), ==, 0);
        g_assert_cmpstr(u1, ==, "https://openrouter.ai/api/v1/chat/completions");
        g_assert_cmpint(con_llm_build_url(CON_LLM_WIRE_ANTHROPIC, "https://api.anthropic.com/v1", &u2), ==, 0);
        g_assert_cmpstr(u2, ==, "https://api.anthropic.com/v1/messages");

        ConLlmWire w;
        const char *base;
        g_assert_cmpint(con_llm_provider_wire("anthropic", &w, &base), ==, 0);
        g_assert_cmpint(w, ==, CON_LLM_WIRE_ANTHROPIC);
        g_assert_cmpint(con_llm_provider_wire("ollama", &w, &base), ==, 0);
        g_assert_cmpint(w, ==, CON_LLM_WIRE_OPENAI);
        g_assert_cmpint(con_llm_provider_wire("compatible", &w, &base), ==, 0);
        g_assert_null(base);
        g_assert_cmpint(con_llm_provider_wire("claude_code", &w, &base), ==, -EOPNOTSUPP);
        g_assert_cmpint(con_llm_wire_from_string("anthropic"), ==, CON_LLM_WIRE_ANTHROPIC);
        g_assert_cmpint(con_llm_wire_from_string("x"), <, 0);
}

static ConLlmResponse *parse_ok(ConLlmWire wire, const char *body) {
        ConLlmResponse *r = NULL;
        ConErrorDetail e = {};
        int k = con_llm_parse_response(wire, body, strlen(body), &r, &e);
        if (k < 0)
                g_error("parse failed (%d): %s", k, e.message);
        con_error_detail_done(&e);
        return r;
}

static void expect_parse_error(ConLlmWire wire, const char *body, size_t size, int err, const char *msg) {
        ConLlmResponse *r = NULL;
        ConErrorDetail e = {};
        g_assert_cmpint(con_llm_parse_response(wire, body, size, &r, &e), ==, err);
        g_assert_null(r);
        g_assert_nonnull(e.message);
        if (!strstr(e.message, msg))
                g_error("expected \"%s\" in \"%s\"", msg, e.message);
        con_error_detail_done(&e);
}
#define EXPECT_PARSE_ERROR(w, body, err, msg) expect_parse_error(w, body, strlen(body), err, msg)

static void test_parse_openai(void) {
        _cleanup_(con_llm_response_freep) ConLlmResponse *a = parse_ok(CON_LLM_WIRE_OPENAI,
                "{\"id\":\"x\",\"model\":\"m1\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                "\"content\":\"Done.\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":12,"
                "\"completion_tokens\":3,\"total_tokens\":15}}");
        g_assert_cmpstr(a->text, ==, "Done.");
        g_assert_cmpint(a->n_tool_calls, ==, 0);
        g_assert_cmpint(a->stop, ==, CON_LLM_STOP_END);
        g_assert_cmpstr(a->stop_raw, ==, "stop");
        g_assert_true(a->has_usage);
        g_assert_cmpuint(a->input_tokens, ==, 12);
        g_assert_cmpuint(a->output_tokens, ==, 3);
        g_assert_cmpstr(a->model, ==, "m1");

        /* tool calls; Ollama says "stop" with tool calls, "" arguments mean {} */
        _cleanup_(con_llm_response_freep) ConLlmResponse *b = parse_ok(CON_LLM_WIRE_OPENAI,
                "{\"choices\":[{\"message\":{\"content\":null,\"tool_calls\":["
                "{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"read_file\",\"arguments\":\"{\\\"path\\\": \\\"/x\\\"}\"}},"
                "{\"id\":\"c2\",\"function\":{\"name\":\"list_dir\",\"arguments\":\"\"}},"
                "{\"id\":\"c3\",\"function\":{\"name\":\"exec\",\"arguments\":{\"command\":\"ls\"}}}]},"
                "\"finish_reason\":\"stop\"}]}");
        g_assert_null(b->text);
        g_assert_cmpint(b->n_tool_calls, ==, 3);
        g_assert_cmpint(b->stop, ==, CON_LLM_STOP_TOOL_USE);
        g_assert_false(b->has_usage);
        g_assert_cmpstr(b->tool_calls[0].id, ==, "c1");
        g_assert_cmpstr(b->tool_calls[0].name, ==, "read_file");
        g_assert_cmpstr(b->tool_calls[0].arguments, ==, "{\"path\":\"/x\"}");
        g_assert_cmpstr(b->tool_calls[1].arguments, ==, "{}");
        g_assert_cmpstr(b->tool_calls[2].arguments, ==, "{\"command\":\"ls\"}");

        _cleanup_(con_llm_response_freep) ConLlmResponse *c = parse_ok(CON_LLM_WIRE_OPENAI,
                "{\"choices\":[{\"message\":{\"content\":\"\"},\"finish_reason\":\"length\"}]}");
        g_assert_null(c->text);
        g_assert_cmpint(c->stop, ==, CON_LLM_STOP_MAX_TOKENS);

        const ConLlmWire O = CON_LLM_WIRE_OPENAI;
        EXPECT_PARSE_ERROR(O, "{\"choices\":[", -EBADMSG, "response is not valid JSON");
        EXPECT_PARSE_ERROR(O, "{} x", -EBADMSG, "response is not valid JSON");
        EXPECT_PARSE_ERROR(O, "", -EBADMSG, "response body is empty");
        EXPECT_PARSE_ERROR(O, "[]", -EBADMSG, "response: must be a JSON object, got an array");
        EXPECT_PARSE_ERROR(O, "{}", -EBADMSG, "choices: missing");
        EXPECT_PARSE_ERROR(O, "{\"choices\":{}}", -EBADMSG, "choices: must be an array, got an object");
        EXPECT_PARSE_ERROR(O, "{\"choices\":[]}", -EBADMSG, "choices: empty array");
        EXPECT_PARSE_ERROR(O, "{\"choices\":[{}]}", -EBADMSG, "choices[0].message: missing");
        EXPECT_PARSE_ERROR(O, "{\"choices\":[{\"message\":{\"content\":5}}]}", -EBADMSG,
                           "choices[0].message.content: must be a string, got a number");
        /* Arguments that are no JSON object do not fail the response: they are kept, wrapped, for
         * the tool loop to answer that one call with an error; missing ones are {}. */
        {
                _cleanup_(con_llm_response_freep) ConLlmResponse *m = parse_ok(O,
                        "{\"choices\":[{\"message\":{\"tool_calls\":[{\"id\":\"a\",\"function\":"
                        "{\"name\":\"x\",\"arguments\":\"[1]\"}},{\"id\":\"b\",\"function\":"
                        "{\"name\":\"x\",\"arguments\":\"{broken\"}},{\"id\":\"c\",\"function\":"
                        "{\"name\":\"x\"}},{\"id\":\"d\",\"function\":{\"name\":\"x\",\"arguments\":7}}]}}]}");
                g_assert_cmpuint(m->n_tool_calls, ==, 4);
                g_assert_cmpstr(m->tool_calls[0].arguments, ==, "{\"" CON_LLM_MALFORMED_ARGUMENTS "\":\"[1]\"}");
                g_assert_cmpstr(m->tool_calls[1].arguments, ==, "{\"" CON_LLM_MALFORMED_ARGUMENTS "\":\"{broken\"}");
                g_assert_cmpstr(m->tool_calls[2].arguments, ==, "{}");
                g_assert_cmpstr(m->tool_calls[3].arguments, ==, "{\"" CON_LLM_MALFORMED_ARGUMENTS "\":\"7\"}");
                g_assert_cmpint(m->stop, ==, CON_LLM_STOP_TOOL_USE);
        }
        EXPECT_PARSE_ERROR(O, "{\"choices\":[{\"message\":{\"tool_calls\":[{\"id\":\"a\",\"function\":"
                           "{\"name\":\"rm -rf\",\"arguments\":\"{}\"}}]}}]}", -EBADMSG,
                           "tool_calls[0].name \"rm -rf\": invalid tool name");
        EXPECT_PARSE_ERROR(O, "{\"choices\":[{\"message\":{\"tool_calls\":[{\"function\":"
                           "{\"name\":\"x\",\"arguments\":\"{}\"}}]}}]}", -EBADMSG, "tool_calls[0].id: missing");
        EXPECT_PARSE_ERROR(O, "{\"choices\":[{\"message\":{\"tool_calls\":["
                           "{\"id\":\"a\",\"function\":{\"name\":\"x\",\"arguments\":\"{}\"}},"
                           "{\"id\":\"a\",\"function\":{\"name\":\"y\",\"arguments\":\"{}\"}}]}}]}", -EBADMSG,
                           "tool_calls[1].id \"a\": used twice");
        EXPECT_PARSE_ERROR(O, "{\"choices\":[{\"message\":{\"tool_calls\":[{\"id\":\"a\",\"type\":\"code\","
                           "\"function\":{\"name\":\"x\",\"arguments\":\"{}\"}}]}}]}", -EBADMSG,
                           "tool_calls[0].type: must be \"function\"");
        EXPECT_PARSE_ERROR(O, "{\"choices\":[{\"message\":{}}],\"usage\":{\"prompt_tokens\":-1,\"completion_tokens\":1}}",
                           -EBADMSG, "usage.prompt_tokens: must be a non-negative integer");
        EXPECT_PARSE_ERROR(O, "{\"error\":{\"message\":\"Rate limit exceeded\",\"code\":429}}", -EREMOTEIO,
                           "provider returned an error: Rate limit exceeded");
        EXPECT_PARSE_ERROR(O, "{\"choices\":[{\"message\":{\"content\":\"\xff\"}}]}", -EBADMSG,
                           "response is not valid UTF-8 (offset 35)");
        expect_parse_error(O, "{}\0{}", 5, -EBADMSG, "response contains a NUL byte at offset 2");

        /* too many tool calls */
        GString *s = g_string_new("{\"choices\":[{\"message\":{\"tool_calls\":[");
        for (unsigned i = 0; i <= CON_LLM_TOOL_CALLS_MAX; i++)
                g_string_append_printf(s, "%s{\"id\":\"c%u\",\"function\":{\"name\":\"x\",\"arguments\":\"{}\"}}",
                                       i ? "," : "", i);
        g_string_append(s, "]}}]}");
        EXPECT_PARSE_ERROR(O, s->str, -EBADMSG, "more than 128 tool calls");
        g_string_free(s, TRUE);

        /* oversize */
        size_t big = CON_LLM_RESPONSE_MAX + 1;
        char *huge = g_malloc(big);
        memset(huge, ' ', big);
        expect_parse_error(O, huge, big, -EFBIG, "over the limit of 8388608 bytes");
        g_free(huge);
}

static void test_parse_anthropic(void) {
        const ConLlmWire A = CON_LLM_WIRE_ANTHROPIC;
        _cleanup_(con_llm_response_freep) ConLlmResponse *a = parse_ok(A,
                "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\","
                "\"content\":[{\"type\":\"thinking\",\"thinking\":\"hmm\"},{\"type\":\"text\",\"text\":\"Reading.\"},"
                "{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"read_file\",\"input\":{\"path\":\"/a\"}}],"
                "\"stop_reason\":\"tool_use\",\"usage\":{\"input_tokens\":100,\"output_tokens\":20,"
                "\"cache_read_input_tokens\":50}}");
        g_assert_cmpstr(a->text, ==, "Reading.");
        g_assert_cmpint(a->n_tool_calls, ==, 1);
        g_assert_cmpstr(a->tool_calls[0].id, ==, "toolu_1");
        g_assert_cmpstr(a->tool_calls[0].arguments, ==, "{\"path\":\"/a\"}");
        g_assert_cmpint(a->stop, ==, CON_LLM_STOP_TOOL_USE);
        g_assert_cmpuint(a->input_tokens, ==, 150);
        g_assert_cmpuint(a->output_tokens, ==, 20);
        g_assert_cmpstr(a->model, ==, "claude-x");

        _cleanup_(con_llm_response_freep) ConLlmResponse *b = parse_ok(A,
                "{\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}],"
                "\"stop_reason\":\"end_turn\"}");
        g_assert_cmpstr(b->text, ==, "ab");
        g_assert_cmpint(b->stop, ==, CON_LLM_STOP_END);
        _cleanup_(con_llm_response_freep) ConLlmResponse *c = parse_ok(A,
                "{\"content\":[],\"stop_reason\":\"refusal\"}");
        g_assert_null(c->text);
        g_assert_cmpint(c->stop, ==, CON_LLM_STOP_FILTERED);

        {
                _cleanup_(con_llm_response_freep) ConLlmResponse *m = parse_ok(A,
                        "{\"content\":[{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"x\",\"input\":\"{}\"},"
                        "{\"type\":\"tool_use\",\"id\":\"u\",\"name\":\"x\"}]}");
                g_assert_cmpuint(m->n_tool_calls, ==, 2);
                g_assert_cmpstr(m->tool_calls[0].arguments, ==, "{\"" CON_LLM_MALFORMED_ARGUMENTS "\":\"\\\"{}\\\"\"}");
                g_assert_cmpstr(m->tool_calls[1].arguments, ==, "{}");
        }
        EXPECT_PARSE_ERROR(A, "{\"content\":[{\"type\":\"text\"}]}", -EBADMSG, "content[0].text: missing");
        EXPECT_PARSE_ERROR(A, "{\"content\":[{\"text\":\"x\"}]}", -EBADMSG, "content[0].type: missing");
        EXPECT_PARSE_ERROR(A, "{\"content\":[5]}", -EBADMSG, "content[0]: must be an object, got a number");
        EXPECT_PARSE_ERROR(A, "{\"type\":\"message\"}", -EBADMSG, "content: missing");
        EXPECT_PARSE_ERROR(A, "{\"role\":\"user\",\"content\":[]}", -EBADMSG, "role: must be \"assistant\"");
        EXPECT_PARSE_ERROR(A, "{\"content\":[],\"usage\":{\"input_tokens\":1.5,\"output_tokens\":1}}", -EBADMSG,
                           "usage.input_tokens: must be a non-negative integer, got 1.5");
        EXPECT_PARSE_ERROR(A, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}",
                           -EREMOTEIO, "provider returned an error: Overloaded");
}

static void test_parse_error_body(void) {
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL;
        const char *x = "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"prompt is too long\"}}";
        g_assert_cmpint(con_llm_parse_error(x, strlen(x), &a), ==, 0);
        g_assert_cmpstr(a, ==, "invalid_request_error: prompt is too long");
        x = "{\"error\":{\"message\":\"No auth credentials found\",\"code\":401}}";
        g_assert_cmpint(con_llm_parse_error(x, strlen(x), &b), ==, 0);
        g_assert_cmpstr(b, ==, "No auth credentials found");
        x = "<html>bad gateway</html>";
        g_assert_cmpint(con_llm_parse_error(x, strlen(x), &c), ==, -ENOENT);
}

static void test_roundtrip(void) {
        /* A parsed response goes back into the conversation and out on the other wire. */
        _cleanup_(con_llm_response_freep) ConLlmResponse *r = parse_ok(CON_LLM_WIRE_OPENAI,
                "{\"choices\":[{\"message\":{\"tool_calls\":[{\"id\":\"c1\",\"function\":{\"name\":\"exec\","
                "\"arguments\":\"{\\\"command\\\":\\\"id\\\"}\"}}]}}]}");
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *c = con_llm_conversation_new();
        ConLlmParams p = { .model = "m", .max_tokens = 5, .temperature = 0 };
        _cleanup_free_ char *body = NULL;

        g_assert_cmpint(con_llm_conversation_add_user(c, "who am i"), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_response(c, r), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_tool_result(c, "c1", "uid=1000", false), ==, 0);
        g_assert_cmpint(con_llm_build_request(CON_LLM_WIRE_ANTHROPIC, c, &p, &body, NULL), ==, 0);
        g_assert_nonnull(strstr(body, "{\"type\":\"tool_use\",\"id\":\"c1\",\"name\":\"exec\",\"input\":{\"command\":\"id\"}}"));
        g_assert_nonnull(strstr(body, "{\"type\":\"tool_result\",\"tool_use_id\":\"c1\",\"content\":\"uid=1000\"}"));
        g_assert_nonnull(strstr(body, "\"temperature\":0"));
}

static void test_retry(void) {
        uint64_t d = 0;

        g_assert_true(con_llm_status_retryable(429));
        g_assert_true(con_llm_status_retryable(500));
        g_assert_true(con_llm_status_retryable(529));
        g_assert_true(con_llm_status_retryable(408));
        g_assert_false(con_llm_status_retryable(400));
        g_assert_false(con_llm_status_retryable(401));
        g_assert_false(con_llm_status_retryable(404));
        g_assert_false(con_llm_status_retryable(200));

        g_assert_cmpint(con_llm_retry_decide(429, 0, true, 2 * USEC_PER_SEC, 0, &d), ==, 1);
        g_assert_cmpuint(d, ==, 2 * USEC_PER_SEC);
        g_assert_cmpint(con_llm_retry_decide(503, 0, false, 0, 0, &d), ==, 1);
        g_assert_cmpuint(d, ==, 1 * USEC_PER_SEC);
        g_assert_cmpint(con_llm_retry_decide(503, 0, false, 0, 2, &d), ==, 1);
        g_assert_cmpuint(d, ==, 4 * USEC_PER_SEC);
        g_assert_cmpint(con_llm_retry_decide(503, 0, false, 0, 4, &d), ==, 1);
        g_assert_cmpuint(d, ==, 16 * USEC_PER_SEC);
        g_assert_cmpint(con_llm_retry_decide(503, 0, false, 0, CON_LLM_RETRY_ATTEMPTS_MAX, &d), ==, 0);
        g_assert_cmpint(con_llm_retry_decide(429, 0, true, 301 * USEC_PER_SEC, 0, &d), ==, 0);
        g_assert_cmpint(con_llm_retry_decide(400, 0, true, 1, 0, &d), ==, 0);
        g_assert_cmpint(con_llm_retry_decide(401, 0, false, 0, 0, &d), ==, 0);
        g_assert_cmpint(con_llm_retry_decide(200, 0, false, 0, 0, &d), ==, 0);
        g_assert_cmpint(con_llm_retry_decide(0, -ETIMEDOUT, false, 0, 1, &d), ==, 1);
        g_assert_cmpuint(d, ==, 2 * USEC_PER_SEC);
        g_assert_cmpint(con_llm_retry_decide(0, -ECONNRESET, false, 0, 0, &d), ==, 1);
        g_assert_cmpint(con_llm_retry_decide(0, -EFBIG, false, 0, 0, &d), ==, 0);
        g_assert_cmpint(con_llm_retry_decide(0, -EPROTONOSUPPORT, false, 0, 0, &d), ==, 0);
}

static void test_retry_after(void) {
        /* 1994-11-06 08:49:37 UTC = 784111777 */
        const uint64_t now = (784111777ULL - 10) * USEC_PER_SEC;
        uint64_t d = 0;

        g_assert_cmpint(con_http_parse_retry_after("120", now, &d), ==, 0);
        g_assert_cmpuint(d, ==, 120 * USEC_PER_SEC);
        g_assert_cmpint(con_http_parse_retry_after(" 0 ", now, &d), ==, 0);
        g_assert_cmpuint(d, ==, 0);
        g_assert_cmpint(con_http_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now, &d), ==, 0);
        g_assert_cmpuint(d, ==, 10 * USEC_PER_SEC);
        g_assert_cmpint(con_http_parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now, &d), ==, 0);
        g_assert_cmpuint(d, ==, 10 * USEC_PER_SEC);
        g_assert_cmpint(con_http_parse_retry_after("Sun Nov  6 08:49:37 1994", now, &d), ==, 0);
        g_assert_cmpuint(d, ==, 10 * USEC_PER_SEC);
        /* a date in the past: retry now */
        g_assert_cmpint(con_http_parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now, &d), ==, 0);
        g_assert_cmpuint(d, ==, 0);
        g_assert_cmpint(con_http_parse_retry_after("Thu, 01 Jan 2037 00:00:00 GMT", now, &d), ==, 0);
        g_assert_cmpint(con_http_parse_retry_after("99999999999999999999999", now, &d), ==, 0);
        g_assert_cmpint(con_http_parse_retry_after("1.5", now, &d), ==, -EINVAL);
        g_assert_cmpint(con_http_parse_retry_after("-3", now, &d), ==, -EINVAL);
        g_assert_cmpint(con_http_parse_retry_after("", now, &d), ==, -EINVAL);
        g_assert_cmpint(con_http_parse_retry_after("soon", now, &d), ==, -EINVAL);
        g_assert_cmpint(con_http_parse_retry_after("Sun, 06 Foo 1994 08:49:37 GMT", now, &d), ==, -EINVAL);
        g_assert_cmpint(con_http_parse_retry_after("Sun, 06 Nov 1994 25:49:37 GMT", now, &d), ==, -EINVAL);
        g_assert_cmpint(con_http_parse_retry_after("Sun, 06 Nov 1994 08:49:37 UTC", now, &d), ==, -EINVAL);
}

static void test_stop_reasons(void) {
        static const struct {
                ConLlmWire wire;
                const char *body;
                ConLlmStop stop;
                const char *raw;
        } t[] = {
                { CON_LLM_WIRE_OPENAI, "{\"choices\":[{\"message\":{\"content\":\"a\"},\"finish_reason\":\"stop\"}]}",
                  CON_LLM_STOP_END, "stop" },
                { CON_LLM_WIRE_OPENAI, "{\"choices\":[{\"message\":{\"content\":\"a\"},\"finish_reason\":\"length\"}]}",
                  CON_LLM_STOP_MAX_TOKENS, "length" },
                { CON_LLM_WIRE_OPENAI, "{\"choices\":[{\"message\":{\"content\":null},\"finish_reason\":\"content_filter\"}]}",
                  CON_LLM_STOP_FILTERED, "content_filter" },
                /* OpenAI's refusal field wins over "stop": the model declined. */
                { CON_LLM_WIRE_OPENAI, "{\"choices\":[{\"message\":{\"content\":null,\"refusal\":\"I can't help\"},"
                  "\"finish_reason\":\"stop\"}]}", CON_LLM_STOP_FILTERED, "refusal" },
                { CON_LLM_WIRE_OPENAI, "{\"choices\":[{\"message\":{\"content\":\"a\"},\"finish_reason\":\"weird\"}]}",
                  CON_LLM_STOP_OTHER, "weird" },
                { CON_LLM_WIRE_OPENAI, "{\"choices\":[{\"message\":{\"content\":\"a\"}}]}", CON_LLM_STOP_OTHER, NULL },
                { CON_LLM_WIRE_ANTHROPIC, "{\"content\":[{\"type\":\"text\",\"text\":\"a\"}],\"stop_reason\":\"end_turn\"}",
                  CON_LLM_STOP_END, "end_turn" },
                { CON_LLM_WIRE_ANTHROPIC, "{\"content\":[{\"type\":\"text\",\"text\":\"a\"}],\"stop_reason\":\"max_tokens\"}",
                  CON_LLM_STOP_MAX_TOKENS, "max_tokens" },
                { CON_LLM_WIRE_ANTHROPIC, "{\"content\":[{\"type\":\"text\",\"text\":\"no\"}],\"stop_reason\":\"refusal\"}",
                  CON_LLM_STOP_FILTERED, "refusal" },
                { CON_LLM_WIRE_ANTHROPIC, "{\"content\":[],\"stop_reason\":\"pause_turn\"}", CON_LLM_STOP_OTHER,
                  "pause_turn" },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(t); i++) {
                _cleanup_(con_llm_response_freep) ConLlmResponse *r = parse_ok(t[i].wire, t[i].body);
                g_assert_cmpint(r->stop, ==, t[i].stop);
                g_assert_cmpstr(r->stop_raw, ==, t[i].raw);
        }
        _cleanup_(con_llm_response_freep) ConLlmResponse *r = parse_ok(CON_LLM_WIRE_OPENAI,
                "{\"choices\":[{\"message\":{\"content\":null,\"refusal\":\"I can't help\"},\"finish_reason\":\"stop\"}]}");
        g_assert_cmpstr(r->text, ==, "I can't help");
}

static void test_usage_of_rejected(void) {
        uint64_t in = 9, out = 9;
        /* Rejected by the parser (content that is not a string), billed all the same. */
        const char *b = "{\"choices\":[{\"message\":{\"content\":42}}],"
                        "\"usage\":{\"prompt_tokens\":700,\"completion_tokens\":300}}";
        ConLlmResponse *resp = NULL;
        ConErrorDetail e = {};
        g_assert_cmpint(con_llm_parse_response(CON_LLM_WIRE_OPENAI, b, strlen(b), &resp, &e), ==, -EBADMSG);
        con_error_detail_done(&e);
        g_assert_cmpint(con_llm_parse_usage(CON_LLM_WIRE_OPENAI, b, strlen(b), &in, &out), ==, 1);
        g_assert_cmpuint(in, ==, 700);
        g_assert_cmpuint(out, ==, 300);
        /* An error object in a 2xx body with usage; odd figures are rounded up, not dropped. */
        b = "{\"error\":{\"message\":\"x\"},\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":5,"
            "\"cache_creation_input_tokens\":1,\"output_tokens\":2.5}}";
        g_assert_cmpint(con_llm_parse_usage(CON_LLM_WIRE_ANTHROPIC, b, strlen(b), &in, &out), ==, 1);
        g_assert_cmpuint(in, ==, 16);
        g_assert_cmpuint(out, ==, 3);
        b = "{\"usage\":{\"prompt_tokens\":-5,\"completion_tokens\":\"7\"}}";
        g_assert_cmpint(con_llm_parse_usage(CON_LLM_WIRE_OPENAI, b, strlen(b), &in, &out), ==, 0);
        g_assert_cmpuint(in + out, ==, 0);
        g_assert_cmpint(con_llm_parse_usage(CON_LLM_WIRE_OPENAI, "{\"choices\":[", 12, &in, &out), ==, 0);
        g_assert_cmpint(con_llm_parse_usage(CON_LLM_WIRE_OPENAI, NULL, 0, &in, &out), ==, 0);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/llm/build-openai", test_build_openai);
        g_test_add_func("/llm/build-anthropic", test_build_anthropic);
        g_test_add_func("/llm/build-errors", test_build_errors);
        g_test_add_func("/llm/build-utf8", test_build_utf8);
        g_test_add_func("/llm/headers-url", test_headers_url);
        g_test_add_func("/llm/parse-openai", test_parse_openai);
        g_test_add_func("/llm/parse-anthropic", test_parse_anthropic);
        g_test_add_func("/llm/parse-error-body", test_parse_error_body);
        g_test_add_func("/llm/stop-reasons", test_stop_reasons);
        g_test_add_func("/llm/usage-of-rejected", test_usage_of_rejected);
        g_test_add_func("/llm/roundtrip", test_roundtrip);
        g_test_add_func("/llm/retry", test_retry);
        g_test_add_func("/llm/retry-after", test_retry_after);
        return con_test_run();
}
