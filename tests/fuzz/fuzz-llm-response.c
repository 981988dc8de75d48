/* SPDX-License-Identifier: MIT */
/* Model responses are outside input: run every input through both response parsers and the
 * error-body parser. What parses must satisfy the documented invariants and must survive the way
 * back (into a conversation, out as a request on both wires). Retry-After parsing rides along. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "http.h"
#include "llm.h"
#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_response(const ConLlmResponse *resp) {
        if (resp->stop < 0 || resp->stop >= _CON_LLM_STOP_MAX)
                abort();
        if (resp->n_tool_calls > 0 && resp->stop != CON_LLM_STOP_TOOL_USE)
                abort();
        if (resp->n_tool_calls > CON_LLM_TOOL_CALLS_MAX)
                abort();
        for (size_t i = 0; i < resp->n_tool_calls; i++) {
                cJSON *j = cJSON_Parse(resp->tool_calls[i].arguments);
                bool ok = cJSON_IsObject(j);
                cJSON_Delete(j);
                if (!ok || isempty(resp->tool_calls[i].id) || isempty(resp->tool_calls[i].name))
                        abort();
        }
}

static void round_trip(const ConLlmResponse *resp) {
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *c = con_llm_conversation_new();
        ConLlmParams p = { .model = "m", .max_tokens = 16, .temperature = 0.5 };

        if (!c || con_llm_conversation_add_user(c, "u") < 0 || con_llm_conversation_add_response(c, resp) < 0)
                return;
        for (size_t i = 0; i < resp->n_tool_calls; i++)
                if (con_llm_conversation_add_tool_result(c, resp->tool_calls[i].id, resp->text, i % 2) < 0)
                        return;
        for (int w = 0; w < _CON_LLM_WIRE_MAX; w++) {
                _cleanup_free_ char *body = NULL;
                ConErrorDetail e = {};
                int r = con_llm_build_request((ConLlmWire) w, c, &p, &body, &e);
                /* everything the parser accepted must be sendable */
                if (r < 0 && r != -ENOMEM)
                        abort();
                if (r >= 0) {
                        cJSON *j = cJSON_Parse(body);
                        if (!j)
                                abort();
                        cJSON_Delete(j);
                }
                con_error_detail_done(&e);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > 256 * 1024)
                return 0;

        for (int w = 0; w < _CON_LLM_WIRE_MAX; w++) {
                ConLlmResponse *resp = NULL;
                ConErrorDetail e = {};
                int r = con_llm_parse_response((ConLlmWire) w, (const char *) data, size, &resp, &e);
                if (r < 0) {
                        if (resp)
                                abort();
                        if (r != -ENOMEM && !e.message)
                                abort(); /* every refusal says why */
                } else {
                        if (!resp || e.message)
                                abort();
                        check_response(resp);
                        round_trip(resp);
                }
                /* The billed tokens: read from anything, and the same figures a valid parse found. */
                uint64_t in = 1, out = 1;
                int u = con_llm_parse_usage((ConLlmWire) w, (const char *) data, size, &in, &out);
                if (u < 0 || (u == 0 && (in || out)))
                        abort();
                if (r >= 0 && resp->has_usage && (resp->input_tokens != in || resp->output_tokens != out))
                        abort();
                con_llm_response_free(resp);
                con_error_detail_done(&e);
        }

        _cleanup_free_ char *msg = NULL;
        (void) con_llm_parse_error((const char *) data, size, &msg);

        if (size < 128) {
                _cleanup_free_ char *s = strndup((const char *) data, size);
                uint64_t d;
                if (s)
                        (void) con_http_parse_retry_after(s, 784111777ULL * 1000000ULL, &d);
        }
        return 0;
}
