/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error-detail.h"

/* Model wire formats, pure: build request bodies and headers from a provider-neutral conversation,
 * parse (and strictly validate) responses into a provider-neutral result, and decide about retries.
 * No I/O, no logging; errors come back as -errno plus a message in a ConErrorDetail
 * (error-detail.h) that names the field: "choices[0].message.tool_calls[1].function.arguments: ...".
 * The mapping is documented in docs/LLM-WIRE.md. */

typedef enum ConLlmWire {
        CON_LLM_WIRE_OPENAI,            /* POST {base}/chat/completions: OpenRouter, OpenAI, Ollama, llama.cpp */
        CON_LLM_WIRE_ANTHROPIC,         /* POST {base}/messages: the Anthropic Messages API */
        _CON_LLM_WIRE_MAX,
        _CON_LLM_WIRE_INVALID = -22,
} ConLlmWire;

typedef enum ConLlmRole {
        CON_LLM_ROLE_USER,
        CON_LLM_ROLE_ASSISTANT,
        CON_LLM_ROLE_TOOL,              /* the result of one tool call */
        _CON_LLM_ROLE_MAX,
        _CON_LLM_ROLE_INVALID = -22,
} ConLlmRole;

typedef enum ConLlmStop {
        CON_LLM_STOP_END,               /* final answer (OpenAI "stop", Anthropic "end_turn"/"stop_sequence") */
        CON_LLM_STOP_TOOL_USE,          /* tool calls to run; set whenever tool calls are present */
        CON_LLM_STOP_MAX_TOKENS,        /* cut off by max_tokens ("length", "max_tokens") */
        CON_LLM_STOP_FILTERED,          /* refused or filtered ("content_filter", "refusal") */
        CON_LLM_STOP_OTHER,             /* anything else, or missing; see stop_raw */
        _CON_LLM_STOP_MAX,
        _CON_LLM_STOP_INVALID = -22,
} ConLlmStop;

/* Limits applied to responses. */
#define CON_LLM_RESPONSE_MAX      (8U * 1024U * 1024U)  /* bytes of response body */
#define CON_LLM_TOOL_CALLS_MAX    128U                  /* tool calls in one response */
#define CON_LLM_TOOL_NAME_MAX     64U                   /* [A-Za-z0-9_-]{1,64}, both providers' rule */
#define CON_LLM_TOOL_ID_MAX       256U                  /* printable ASCII, no spaces */

#define CON_LLM_ANTHROPIC_VERSION "2023-06-01"

typedef struct ConLlmToolCall {
        char *id;
        char *name;
        char *arguments;                /* compact JSON text of an object, e.g. {"path":"/x"}. Arguments
                                         * the model sent that are not an object (invalid JSON, an
                                         * array, ...) arrive as {CON_LLM_MALFORMED_ARGUMENTS: "<as
                                         * sent>"}; missing arguments as {} */
} ConLlmToolCall;

#define CON_LLM_MALFORMED_ARGUMENTS "_malformed_arguments"

typedef struct ConLlmMessage {
        ConLlmRole role;
        char *content;                  /* user / assistant text, or the tool result; may be NULL for
                                         * an assistant message made of tool calls only */
        ConLlmToolCall *tool_calls;     /* assistant only */
        size_t n_tool_calls;
        char *tool_call_id;             /* tool only: the id of the call this answers */
        bool is_error;                  /* tool only: the tool failed (Anthropic "is_error") */
} ConLlmMessage;

typedef struct ConLlmTool {
        char *name;                     /* [A-Za-z0-9_-]{1,64} */
        char *description;
        char *parameters;               /* JSON Schema text of an object, e.g. {"type":"object",...} */
} ConLlmTool;

typedef struct ConLlmConversation {
        char *system;                   /* may be NULL */
        ConLlmMessage *messages;
        size_t n_messages;
        ConLlmTool *tools;
        size_t n_tools;
} ConLlmConversation;

typedef struct ConLlmParams {
        const char *model;              /* required */
        unsigned max_tokens;            /* required by Anthropic; 0 = not sent (OpenAI wire only) */
        double temperature;             /* < 0: not sent. OpenAI 0..2, Anthropic 0..1 */
} ConLlmParams;

typedef struct ConLlmResponse {
        char *text;                     /* final text, NULL when the model gave none */
        ConLlmToolCall *tool_calls;
        size_t n_tool_calls;
        ConLlmStop stop;
        char *stop_raw;                 /* the provider's finish/stop reason as sent, may be NULL */
        bool has_usage;
        uint64_t input_tokens, output_tokens;
        char *model;                    /* model that answered, may be NULL */
} ConLlmResponse;

const char *con_llm_wire_to_string(ConLlmWire w);      /* "openai", "anthropic" */
ConLlmWire con_llm_wire_from_string(const char *s);
const char *con_llm_stop_to_string(ConLlmStop s);      /* "end", "tool_use", "max_tokens", ... */

/* The wire and default base URL of a config provider name (ConRuntimeSettings.provider):
 * openrouter, openai, ollama, compatible → OPENAI; anthropic → ANTHROPIC. ret_base_url is NULL for
 * "compatible" (a base_url is required then). -EOPNOTSUPP for claude_code and unknown names. */
int con_llm_provider_wire(const char *provider, ConLlmWire *ret_wire, const char **ret_base_url);

/* ---- conversation building (copies every string as valid text: bytes that are not UTF-8
 * become U+FFFD, bus/basic/utf8.h) ---- */

ConLlmConversation *con_llm_conversation_new(void);
ConLlmConversation *con_llm_conversation_free(ConLlmConversation *c);
static inline void con_llm_conversation_freep(ConLlmConversation **c) {
        con_llm_conversation_free(*c);
}
int con_llm_conversation_set_system(ConLlmConversation *c, const char *system);
int con_llm_conversation_add_user(ConLlmConversation *c, const char *text);
/* text may be NULL; calls[i].arguments NULL means "{}". */
int con_llm_conversation_add_assistant(ConLlmConversation *c, const char *text,
                                       const ConLlmToolCall *calls, size_t n_calls);
int con_llm_conversation_add_tool_result(ConLlmConversation *c, const char *tool_call_id,
                                         const char *content, bool is_error);
/* Appends the assistant turn of a parsed response (its text and tool calls). */
int con_llm_conversation_add_response(ConLlmConversation *c, const ConLlmResponse *resp);
/* Removes (and frees) n messages from index from on (fewer at the end). */
void con_llm_conversation_remove(ConLlmConversation *c, size_t from, size_t n);
/* parameters NULL means {"type":"object","properties":{}}. -EINVAL (with message) when the name
 * is not [A-Za-z0-9_-]{1,64} or parameters is not a JSON object. */
int con_llm_conversation_add_tool(ConLlmConversation *c, const char *name, const char *description,
                                  const char *parameters, ConErrorDetail *reterr);

/* ---- requests ---- */

/* The request body (compact JSON). Invalid UTF-8 in texts is replaced by U+FFFD.
 * -EINVAL with a message: missing model, Anthropic without max_tokens, temperature out of range,
 * a tool message without tool_call_id, tool call arguments that are not a JSON object,
 * a tool result answering no earlier tool call. -ENOMEM. */
int con_llm_build_request(ConLlmWire wire, const ConLlmConversation *c, const ConLlmParams *p,
                          char **ret_body, ConErrorDetail *reterr);
/* "{base}/chat/completions" or "{base}/messages" (one trailing '/' of base dropped). */
int con_llm_build_url(ConLlmWire wire, const char *base_url, char **ret_url);
/* Request headers ("Name: value" strv): OPENAI: Content-Type, Authorization: Bearer KEY (only when
 * api_key is non-empty); ANTHROPIC: content-type, x-api-key, anthropic-version.
 * -EINVAL when the key contains a control character or Anthropic has no key. */
int con_llm_build_headers(ConLlmWire wire, const char *api_key, char ***ret_headers);

/* ---- responses ---- */

/* Parses a 2xx response body. Errors (-EBADMSG unless noted), with a message naming the field:
 * not JSON / trailing data / NUL byte; missing or wrongly typed fields; a tool call whose arguments
 * are not a JSON object; a tool name that is not [A-Za-z0-9_-]{1,64}; too many tool calls;
 * invalid UTF-8; an "error" object in the body (-EREMOTEIO, OpenRouter does that with status 200);
 * body over CON_LLM_RESPONSE_MAX (-EFBIG). An answer with neither text nor tool calls is not an
 * error (text NULL, n_tool_calls 0): what to do with it is the tool loop's decision. */
int con_llm_parse_response(ConLlmWire wire, const char *body, size_t size, ConLlmResponse **ret,
                           ConErrorDetail *reterr);
ConLlmResponse *con_llm_response_free(ConLlmResponse *r);
static inline void con_llm_response_freep(ConLlmResponse **r) {
        con_llm_response_free(*r);
}

/* The billed tokens of a response body, even one con_llm_parse_response() rejects: usage figures are
 * read leniently from any JSON object with a "usage" member (OpenAI prompt_tokens/completion_tokens;
 * Anthropic input_tokens + cache_creation_input_tokens + cache_read_input_tokens, output_tokens).
 * 1 when figures were found, 0 when none (both set to 0). */
int con_llm_parse_usage(ConLlmWire wire, const char *body, size_t size, uint64_t *ret_input,
                        uint64_t *ret_output);

/* The provider's error message from an error body ({"error":{"message":...}} in both formats,
 * Anthropic adds "type"). Returns a copy, or -ENOENT when the body carries none. */
int con_llm_parse_error(const char *body, size_t size, char **ret_message);

/* ---- retries ---- */

#define CON_LLM_RETRY_ATTEMPTS_MAX  5U                          /* retries after the first try */
#define CON_LLM_RETRY_BASE_USEC     (1U * 1000000ULL)          /* backoff: base << attempt */
#define CON_LLM_RETRY_BACKOFF_MAX   (60U * 1000000ULL)         /* backoff cap */
#define CON_LLM_RETRY_AFTER_MAX     (300U * 1000000ULL)        /* longer Retry-After: give up */

/* Is this HTTP status worth retrying? 408, 429 and 5xx (incl. Anthropic's 529): yes; other: no. */
bool con_llm_status_retryable(long status);
/* Decide about one more attempt. transport_error: the negative errno of con_http (0 when an HTTP
 * response arrived, then status counts). attempt: how many retries were already made (0 first).
 * Returns 1 with *ret_delay_usec set (Retry-After when given, else exponential backoff), or 0 when
 * the failure is final: not retryable, attempts exhausted, or Retry-After over the cap. */
int con_llm_retry_decide(long status, int transport_error, bool has_retry_after, uint64_t retry_after_usec,
                         unsigned attempt, uint64_t *ret_delay_usec);
