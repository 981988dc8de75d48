/* SPDX-License-Identifier: MIT */
#include <cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error-detail.h"
#include "json-util.h"
#include "macro.h"
#include "model-util.h"
#include "names.h"
#include "strv.h"

#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#endif


/* ---- the key file ---- */


/* The variables that belong to one provider: never sent anywhere else. */
static const struct {
        const char *var, *provider;
} provider_vars[] = {
        { "CON_OPENROUTER_API_KEY", "openrouter" },
        { "CON_AUTH_ANTHROPIC",     "anthropic" },
        { "CON_AUTH_OPENAI",        "openai" },
};

static const char * const generic_vars[] = {
        "CON_API_KEY", "CON_OFFICER_API_KEY", "CON_OPERATOR_API_KEY", "CON_WORKER_API_KEY",
};

bool model_key_var_is_generic(const char *var) {
        for (size_t i = 0; i < ELEMENTSOF(generic_vars); i++)
                if (streq(var, generic_vars[i]))
                        return true;
        return false;
}

const char *model_key_var_provider(const char *var, const char *generic_owner) {
        if (model_key_var_is_generic(var))
                return generic_owner ?: MODEL_GENERIC_KEY_PROVIDER_DEFAULT;
        for (size_t i = 0; i < ELEMENTSOF(provider_vars); i++)
                if (streq(var, provider_vars[i].var))
                        return provider_vars[i].provider;
        return NULL;
}

const char *model_provider_key_var(const char *provider) {
        for (size_t i = 0; provider && i < ELEMENTSOF(provider_vars); i++)
                if (streq(provider, provider_vars[i].provider))
                        return provider_vars[i].var;
        return NULL;
}

int model_resolve_key(char * const *env, const ConAgent *a, const char *generic_owner, const char **ret_key,
                      const char **ret_var) {
        static const char * const tier_vars[_CON_TIER_MAX] = {
                [CON_TIER_OFFICER] = "CON_OFFICER_API_KEY",
                [CON_TIER_OPERATOR] = "CON_OPERATOR_API_KEY",
                [CON_TIER_WORKER] = "CON_WORKER_API_KEY",
        };
        const char *var = a->rt.api_key_env ? a->rt.api_key_env : "CON_API_KEY";
        const char *p = a->rt.provider ? a->rt.provider : "openrouter";
        const char *own = model_provider_key_var(p);
        const char *cand[3] = {};
        size_t n = 0;

        if (streq(var, "CON_API_KEY") && a->tier > CON_TIER_NONE && a->tier < _CON_TIER_MAX)
                cand[n++] = tier_vars[a->tier];
        cand[n++] = var;
        if (own && !streq(own, var))
                cand[n++] = own;

        for (size_t i = 0; i < n; i++) {
                /* A variable that belongs to a provider (the generic ones to the owner the config
                 * names) goes to that provider only; any other name is the agent's own choice. */
                const char *owner = model_key_var_provider(cand[i], generic_owner);
                if (owner && !streq(owner, p))
                        continue;
                const char *k = con_env_get(env, cand[i]);
                if (k) {
                        *ret_key = k;
                        *ret_var = cand[i];
                        return 0;
                }
        }
        *ret_key = NULL;
        /* The variable to set: the agent's own when it may be used, else the provider's. */
        const char *owner = model_key_var_provider(var, generic_owner);
        *ret_var = !owner || streq(owner, p) ? var : own;
        return -ENOKEY;
}

/* ---- request JSON ---- */

static bool keys_allowed(const cJSON *obj, const char * const *allowed, const char **ret_bad) {
        const cJSON *it;
        cJSON_ArrayForEach(it, obj) {
                bool ok = false;
                for (size_t i = 0; allowed[i]; i++)
                        if (it->string && streq(it->string, allowed[i]))
                                ok = true;
                if (!ok) {
                        *ret_bad = it->string ? it->string : "";
                        return false;
                }
        }
        return true;
}

/* A string field (NULL when absent or null); -EINVAL for another type. */
static int get_str(const cJSON *obj, const char *key, const char *path, const char **ret, char **ret_error) {
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
        *ret = NULL;
        if (!j || cJSON_IsNull(j))
                return 0;
        if (!cJSON_IsString(j))
                return con_error_textf(ret_error, -EINVAL, "%s%s: must be a string, got %s", path, key, con_json_kind(j));
        *ret = j->valuestring;
        return 0;
}

/* Arguments / parameters: an object (serialised) or a string holding JSON text. */
static int get_json_text(const cJSON *j, const char *path, char **ret, char **ret_error) {
        *ret = NULL;
        if (!j || cJSON_IsNull(j))
                return 0;
        if (cJSON_IsString(j)) {
                *ret = strdup(j->valuestring);
                return *ret ? 0 : -ENOMEM;
        }
        if (!cJSON_IsObject(j))
                return con_error_textf(ret_error, -EINVAL, "%s: must be a JSON object, got %s", path, con_json_kind(j));
        *ret = cJSON_PrintUnformatted(j);
        return *ret ? 0 : -ENOMEM;
}

static int parse_message(ModelRequest *req, const cJSON *m, size_t idx, char **ret_error) {
        static const char * const allowed[] = { "role", "content", "tool_calls", "tool_call_id", "is_error", NULL };
        char path[64];
        const char *bad, *role, *content;
        int r;

        snprintf(path, sizeof path, "messages[%zu].", idx);
        if (!cJSON_IsObject(m))
                return con_error_textf(ret_error, -EINVAL, "messages[%zu]: must be an object, got %s", idx, con_json_kind(m));
        if (!keys_allowed(m, allowed, &bad))
                return con_error_textf(ret_error, -EINVAL, "%s%s: unknown key (allowed: role, content, tool_calls, tool_call_id, "
                                "is_error)", path, bad);
        r = get_str(m, "role", path, &role, ret_error);
        if (r < 0)
                return r;
        if (!role)
                return con_error_textf(ret_error, -EINVAL, "%srole: missing (user, assistant or tool)", path);
        r = get_str(m, "content", path, &content, ret_error);
        if (r < 0)
                return r;

        if (streq(role, "user")) {
                if (!content)
                        return con_error_textf(ret_error, -EINVAL, "%scontent: missing; a user message needs text", path);
                return con_llm_conversation_add_user(req->conv, content);
        }
        if (streq(role, "tool")) {
                const char *id;
                const cJSON *e = cJSON_GetObjectItemCaseSensitive(m, "is_error");
                r = get_str(m, "tool_call_id", path, &id, ret_error);
                if (r < 0)
                        return r;
                if (!id)
                        return con_error_textf(ret_error, -EINVAL, "%stool_call_id: missing; a tool message answers a tool call", path);
                if (e && !cJSON_IsBool(e))
                        return con_error_textf(ret_error, -EINVAL, "%sis_error: must be a boolean, got %s", path, con_json_kind(e));
                return con_llm_conversation_add_tool_result(req->conv, id, content ? content : "",
                                                            e && cJSON_IsTrue(e));
        }
        if (!streq(role, "assistant"))
                return con_error_textf(ret_error, -EINVAL, "%srole: \"%.32s\" is not allowed; use user, assistant or tool", path, role);

        const cJSON *tc = cJSON_GetObjectItemCaseSensitive(m, "tool_calls"), *it;
        if (tc && !cJSON_IsNull(tc) && !cJSON_IsArray(tc))
                return con_error_textf(ret_error, -EINVAL, "%stool_calls: must be an array, got %s", path, con_json_kind(tc));
        size_t n = tc && cJSON_IsArray(tc) ? (size_t) cJSON_GetArraySize(tc) : 0;
        if (n > CON_LLM_TOOL_CALLS_MAX)
                return con_error_textf(ret_error, -EINVAL, "%stool_calls: more than %u tool calls", path, CON_LLM_TOOL_CALLS_MAX);
        ConLlmToolCall *calls = n ? calloc(n, sizeof(ConLlmToolCall)) : NULL;
        if (n && !calls)
                return -ENOMEM;
        size_t i = 0;
        r = 0;
        if (n)
                cJSON_ArrayForEach(it, tc) {
                        static const char * const call_keys[] = { "id", "name", "arguments", NULL };
                        const char *id, *name;
                        char cpath[96];
                        snprintf(cpath, sizeof cpath, "%stool_calls[%zu].", path, i);
                        if (!cJSON_IsObject(it)) {
                                r = con_error_textf(ret_error, -EINVAL, "%.94s: must be an object, got %s", cpath, con_json_kind(it));
                                break;
                        }
                        if (!keys_allowed(it, call_keys, &bad)) {
                                r = con_error_textf(ret_error, -EINVAL, "%s%s: unknown key (allowed: id, name, arguments)", cpath, bad);
                                break;
                        }
                        if ((r = get_str(it, "id", cpath, &id, ret_error)) < 0 ||
                            (r = get_str(it, "name", cpath, &name, ret_error)) < 0)
                                break;
                        if (!id || !name) {
                                r = con_error_textf(ret_error, -EINVAL, "%s%s: missing", cpath, !id ? "id" : "name");
                                break;
                        }
                        char apath[112];
                        snprintf(apath, sizeof apath, "%sarguments", cpath);
                        calls[i].id = (char *) id;
                        calls[i].name = (char *) name;
                        r = get_json_text(cJSON_GetObjectItemCaseSensitive(it, "arguments"), apath,
                                          &calls[i].arguments, ret_error);
                        i++;
                        if (r < 0)
                                break;
                }
        if (r >= 0)
                r = con_llm_conversation_add_assistant(req->conv, content, calls, n);
        for (size_t k = 0; k < i; k++)
                free(calls[k].arguments);
        free(calls);
        return r;
}

static int parse_tool(ModelRequest *req, const cJSON *t, size_t idx, char **ret_error) {
        static const char * const allowed[] = { "name", "description", "parameters", NULL };
        char path[64];
        const char *bad, *name, *desc;
        _cleanup_free_ char *params = NULL;
        int r;

        snprintf(path, sizeof path, "tools[%zu].", idx);
        if (!cJSON_IsObject(t))
                return con_error_textf(ret_error, -EINVAL, "tools[%zu]: must be an object, got %s", idx, con_json_kind(t));
        if (!keys_allowed(t, allowed, &bad))
                return con_error_textf(ret_error, -EINVAL, "%s%s: unknown key (allowed: name, description, parameters)", path, bad);
        if ((r = get_str(t, "name", path, &name, ret_error)) < 0 ||
            (r = get_str(t, "description", path, &desc, ret_error)) < 0)
                return r;
        if (!name)
                return con_error_textf(ret_error, -EINVAL, "%sname: missing", path);
        char ppath[80];
        snprintf(ppath, sizeof ppath, "%sparameters", path);
        r = get_json_text(cJSON_GetObjectItemCaseSensitive(t, "parameters"), ppath, &params, ret_error);
        if (r < 0)
                return r;
        ConErrorDetail e = {};
        r = con_llm_conversation_add_tool(req->conv, name, desc ? desc : "", params, &e);
        if (r == -EINVAL)
                r = con_error_textf(ret_error, -EINVAL, "%s%s", path, e.message ? e.message : "invalid");
        con_error_detail_done(&e);
        return r;
}

ModelRequest *model_request_free(ModelRequest *r) {
        if (!r)
                return NULL;
        con_llm_conversation_free(r->conv);
        free(r->task_id);
        free(r->agent);
        free(r);
        return NULL;
}

int model_request_parse(const char *json, size_t size, ModelRequest **ret, char **ret_error) {
        static const char * const allowed[] = {
                "system", "messages", "tools", "max_tokens", "temperature", "task_id", "agent", NULL,
        };
        _cleanup_(model_request_freep) ModelRequest *req = NULL;
        _cleanup_cjson_ cJSON *root = NULL;
        const char *end = NULL, *bad, *s;
        const cJSON *it;
        int r;

        if (ret_error)
                *ret_error = NULL;
        if (size > MODEL_REQUEST_MAX) {
                con_error_textf(ret_error, -EINVAL, "the request has %zu bytes; at most %u are allowed", size, MODEL_REQUEST_MAX);
                return -EFBIG;
        }
        if (memchr(json, '\0', size))
                return con_error_textf(ret_error, -EINVAL, "the request contains a NUL byte");
        root = cJSON_ParseWithLengthOpts(json, size, &end, false);
        if (!root) {
                const char *at = cJSON_GetErrorPtr();
                size_t off = at && at >= json && at <= json + size ? (size_t) (at - json) : 0;
                return con_error_textf(ret_error, -EINVAL, "the request is not valid JSON (error near offset %zu)", off);
        }
        for (; end && end < json + size; end++)
                if (!strchr(" \t\r\n", *end))
                        return con_error_textf(ret_error, -EINVAL, "the request has data after the JSON object (offset %zu)",
                                        (size_t) (end - json));
        if (!cJSON_IsObject(root))
                return con_error_textf(ret_error, -EINVAL, "the request must be a JSON object, got %s", con_json_kind(root));
        if (!keys_allowed(root, allowed, &bad))
                return con_error_textf(ret_error, -EINVAL, "%s: unknown key (allowed: system, messages, tools, max_tokens, "
                                "temperature, task_id, agent)", bad);

        req = calloc(1, sizeof(*req));
        if (!req)
                return -ENOMEM;
        req->temperature = -1;
        req->conv = con_llm_conversation_new();
        if (!req->conv)
                return -ENOMEM;

        if ((r = get_str(root, "system", "", &s, ret_error)) < 0)
                return r;
        if (s && (r = con_llm_conversation_set_system(req->conv, s)) < 0)
                return r;

        const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
        if (!cJSON_IsArray(msgs))
                return con_error_textf(ret_error, -EINVAL, "messages: must be an array, got %s", con_json_kind(msgs));
        size_t n = (size_t) cJSON_GetArraySize(msgs);
        if (n == 0)
                return con_error_textf(ret_error, -EINVAL, "messages: empty; at least one user message is needed");
        if (n > MODEL_MESSAGES_MAX)
                return con_error_textf(ret_error, -EINVAL, "messages: %zu messages; at most %u are allowed", n, MODEL_MESSAGES_MAX);
        size_t i = 0;
        cJSON_ArrayForEach(it, msgs)
                if ((r = parse_message(req, it, i++, ret_error)) < 0)
                        return r;

        const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
        if (tools && !cJSON_IsNull(tools)) {
                if (!cJSON_IsArray(tools))
                        return con_error_textf(ret_error, -EINVAL, "tools: must be an array, got %s", con_json_kind(tools));
                if ((size_t) cJSON_GetArraySize(tools) > MODEL_TOOLS_MAX)
                        return con_error_textf(ret_error, -EINVAL, "tools: at most %u tools are allowed", MODEL_TOOLS_MAX);
                i = 0;
                cJSON_ArrayForEach(it, tools)
                        if ((r = parse_tool(req, it, i++, ret_error)) < 0)
                                return r;
        }

        const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "max_tokens");
        if (mt && !cJSON_IsNull(mt)) {
                if (!cJSON_IsNumber(mt) || mt->valuedouble < 1 || mt->valuedouble > 1000000 ||
                    mt->valuedouble != floor(mt->valuedouble))
                        return con_error_textf(ret_error, -EINVAL, "max_tokens: must be a whole number from 1 to 1000000");
                req->max_tokens = (unsigned) mt->valuedouble;
        }
        const cJSON *te = cJSON_GetObjectItemCaseSensitive(root, "temperature");
        if (te && !cJSON_IsNull(te)) {
                if (!cJSON_IsNumber(te) || !(te->valuedouble >= 0 && te->valuedouble <= 2))
                        return con_error_textf(ret_error, -EINVAL, "temperature: must be a number from 0 to 2");
                req->temperature = te->valuedouble;
        }
        if ((r = get_str(root, "task_id", "", &s, ret_error)) < 0)
                return r;
        if (s) {
                size_t l = strlen(s);
                bool ok = l >= 1 && l <= 128;
                for (size_t k = 0; ok && k < l; k++)
                        ok = s[k] > ' ' && s[k] < 0x7f;
                if (!ok)
                        return con_error_textf(ret_error, -EINVAL, "task_id: must be 1 to 128 printable characters without spaces");
                if (!(req->task_id = strdup(s)))
                        return -ENOMEM;
        }
        if ((r = get_str(root, "agent", "", &s, ret_error)) < 0)
                return r;
        if (s) {
                if (con_agent_name_check(s) != CON_NAME_OK)
                        return con_error_textf(ret_error, -EINVAL, "agent: \"%.64s\" is not a valid agent name", s);
                if (!(req->agent = strdup(s)))
                        return -ENOMEM;
        }

        *ret = TAKE_PTR(req);
        return 0;
}

int model_response_to_json(const ConLlmResponse *resp, char **ret_json) {
        _cleanup_cjson_ cJSON *o = cJSON_CreateObject();
        if (!o)
                return -ENOMEM;
        if (!(resp->text ? cJSON_AddStringToObject(o, "text", resp->text) : cJSON_AddNullToObject(o, "text")))
                return -ENOMEM;
        cJSON *calls = cJSON_AddArrayToObject(o, "tool_calls");
        if (!calls)
                return -ENOMEM;
        for (size_t i = 0; i < resp->n_tool_calls; i++) {
                cJSON *c = cJSON_CreateObject();
                if (!c || !cJSON_AddItemToArray(calls, c))
                        return cJSON_Delete(c), -ENOMEM;
                const char *args = resp->tool_calls[i].arguments;
                cJSON *a = cJSON_Parse(args && *args ? args : "{}");
                if (!a)
                        a = cJSON_CreateObject();
                if (!cJSON_AddStringToObject(c, "id", resp->tool_calls[i].id) ||
                    !cJSON_AddStringToObject(c, "name", resp->tool_calls[i].name) ||
                    !a || !cJSON_AddItemToObject(c, "arguments", a))
                        return cJSON_Delete(a), -ENOMEM;
        }
        if (!cJSON_AddStringToObject(o, "stop_reason", con_llm_stop_to_string(resp->stop) ?: "other"))
                return -ENOMEM;
        if (!(resp->stop_raw ? cJSON_AddStringToObject(o, "provider_stop_reason", resp->stop_raw) :
              cJSON_AddNullToObject(o, "provider_stop_reason")))
                return -ENOMEM;
        cJSON *u = cJSON_AddObjectToObject(o, "usage");
        if (!u || !cJSON_AddNumberToObject(u, "input_tokens", (double) resp->input_tokens) ||
            !cJSON_AddNumberToObject(u, "output_tokens", (double) resp->output_tokens))
                return -ENOMEM;
        if (!(resp->model ? cJSON_AddStringToObject(o, "model", resp->model) : cJSON_AddNullToObject(o, "model")))
                return -ENOMEM;
        char *s = cJSON_PrintUnformatted(o);
        if (!s)
                return -ENOMEM;
        *ret_json = s;
        return 0;
}

/* ---- budgets ---- */

typedef struct LedgerDay {
        char *agent;
        uint64_t in, out;
        double cost;
        uint64_t unregistered;  /* tokens of calls that named no registered task */
} LedgerDay;

typedef struct LedgerTask {
        char *agent, *task_id;
        uint64_t tokens;
        uint64_t stamp;         /* for eviction: higher = more recent */
        bool registered;        /* running now: never evicted */
} LedgerTask;

struct ModelLedger {
        uint64_t day;
        LedgerDay *days;
        size_t n_days;
        LedgerTask *tasks;
        size_t n_tasks;
        uint64_t stamp;
};

ModelLedger *model_ledger_new(void) {
        return calloc(1, sizeof(ModelLedger));
}

static void ledger_clear_days(ModelLedger *l) {
        for (size_t i = 0; i < l->n_days; i++)
                free(l->days[i].agent);
        free(l->days);
        l->days = NULL;
        l->n_days = 0;
}

ModelLedger *model_ledger_free(ModelLedger *l) {
        if (!l)
                return NULL;
        ledger_clear_days(l);
        for (size_t i = 0; i < l->n_tasks; i++) {
                free(l->tasks[i].agent);
                free(l->tasks[i].task_id);
        }
        free(l->tasks);
        free(l);
        return NULL;
}

static const LedgerDay *ledger_day(const ModelLedger *l, uint64_t day, const char *agent) {
        if (day != l->day)
                return NULL;
        for (size_t i = 0; i < l->n_days; i++)
                if (streq(l->days[i].agent, agent))
                        return &l->days[i];
        return NULL;
}

static const LedgerTask *ledger_task(const ModelLedger *l, const char *agent, const char *task_id) {
        for (size_t i = 0; task_id && i < l->n_tasks; i++)
                if (streq(l->tasks[i].agent, agent) && streq(l->tasks[i].task_id, task_id))
                        return &l->tasks[i];
        return NULL;
}

double model_cost(const ConModelBudget *b, uint64_t in, uint64_t out) {
        if (!(b->price_per_mtok_in > 0) || !(b->price_per_mtok_out > 0))
                return -1;
        return (double) in * b->price_per_mtok_in / 1e6 + (double) out * b->price_per_mtok_out / 1e6;
}

/* The entry of a task, created when missing. At MODEL_TASKS_TRACKED entries the least recently used
 * task that is not registered goes; when all are registered, the least recently used of those (a
 * registration the agent service never ended). NULL on -ENOMEM. */
static LedgerTask *ledger_task_make(ModelLedger *l, const char *agent, const char *task_id) {
        LedgerTask *t = (LedgerTask *) ledger_task(l, agent, task_id);
        if (t)
                return t;
        if (l->n_tasks >= MODEL_TASKS_TRACKED) {
                size_t old = SIZE_MAX;
                for (size_t i = 0; i < l->n_tasks; i++)
                        if (old == SIZE_MAX || l->tasks[i].registered < l->tasks[old].registered ||
                            (l->tasks[i].registered == l->tasks[old].registered &&
                             l->tasks[i].stamp < l->tasks[old].stamp))
                                old = i;
                free(l->tasks[old].agent);
                free(l->tasks[old].task_id);
                l->tasks[old] = l->tasks[--l->n_tasks];
        }
        LedgerTask *n = reallocarray(l->tasks, l->n_tasks + 1, sizeof(*n));
        if (!n)
                return NULL;
        l->tasks = n;
        t = &l->tasks[l->n_tasks];
        *t = (LedgerTask) { .agent = strdup(agent), .task_id = strdup(task_id), .stamp = ++l->stamp };
        if (!t->agent || !t->task_id) {
                free(t->agent);
                free(t->task_id);
                return NULL;
        }
        l->n_tasks++;
        return t;
}

int model_ledger_register(ModelLedger *l, const char *agent, const char *task_id) {
        LedgerTask *t = ledger_task_make(l, agent, task_id);
        if (!t)
                return -ENOMEM;
        if (!t->registered && model_ledger_n_registered(l, agent) >= MODEL_TASKS_REGISTERED_MAX) {
                /* An agent runs far fewer tasks at once: the oldest registration was never ended
                 * (the agent service died). It is dropped, not the new one. */
                LedgerTask *old = NULL;
                for (size_t i = 0; i < l->n_tasks; i++)
                        if (l->tasks[i].registered && streq(l->tasks[i].agent, agent) &&
                            (!old || l->tasks[i].stamp < old->stamp))
                                old = &l->tasks[i];
                if (old)
                        old->registered = false;
        }
        t->registered = true;
        t->stamp = ++l->stamp;
        return 0;
}

int model_ledger_unregister(ModelLedger *l, const char *agent, const char *task_id) {
        LedgerTask *t = (LedgerTask *) ledger_task(l, agent, task_id);
        if (!t || !t->registered)
                return -ENOENT;
        t->registered = false;
        return 0;
}

bool model_ledger_registered(const ModelLedger *l, const char *agent, const char *task_id) {
        const LedgerTask *t = ledger_task(l, agent, task_id);
        return t && t->registered;
}

size_t model_ledger_n_registered(const ModelLedger *l, const char *agent) {
        size_t n = 0;
        for (size_t i = 0; i < l->n_tasks; i++)
                if (l->tasks[i].registered && (!agent || streq(l->tasks[i].agent, agent)))
                        n++;
        return n;
}

int model_ledger_add(ModelLedger *l, uint64_t day, const char *agent, const char *task_id,
                     uint64_t in, uint64_t out, const ConModelBudget *b) {
        if (day != l->day) {
                ledger_clear_days(l);
                l->day = day;
        }
        LedgerDay *d = (LedgerDay *) ledger_day(l, day, agent);
        if (!d) {
                LedgerDay *n = reallocarray(l->days, l->n_days + 1, sizeof(*n));
                if (!n)
                        return -ENOMEM;
                l->days = n;
                d = &l->days[l->n_days];
                *d = (LedgerDay) { .agent = strdup(agent) };
                if (!d->agent)
                        return -ENOMEM;
                l->n_days++;
        }
        d->in += in;
        d->out += out;
        double cost = b ? model_cost(b, in, out) : -1;
        if (cost > 0)
                d->cost += cost;

        if (!task_id) {
                d->unregistered += in + out;
                return 0;
        }
        LedgerTask *t = ledger_task_make(l, agent, task_id);
        if (!t)
                return -ENOMEM;
        t->tokens += in + out;
        t->stamp = ++l->stamp;
        return 0;
}

int model_ledger_check(const ModelLedger *l, uint64_t day, const char *agent, const char *task_id,
                       const ConModelBudget *b, const char **ret_budget, char **ret_message) {
        const LedgerDay *d = ledger_day(l, day, agent);
        const LedgerTask *t = ledger_task(l, agent, task_id);
        uint64_t used_day = d ? d->in + d->out : 0;

        *ret_budget = NULL;
        if (ret_message)
                *ret_message = NULL;
        if (b->tokens_per_task && !task_id && d && d->unregistered >= b->tokens_per_task) {
                *ret_budget = "budget_tokens_per_task";
                if (ret_message && asprintf(ret_message,
                                            "agent '%s' used %" PRIu64 " tokens today (UTC) in calls that name no task "
                                            "its agent service registered as running; together they get one "
                                            "budget_tokens_per_task of %u a day (models: in /etc/con/con.yaml)",
                                            agent, d->unregistered, b->tokens_per_task) < 0)
                        return -ENOMEM;
                return -EDQUOT;
        }
        if (b->tokens_per_task && t && t->tokens >= b->tokens_per_task) {
                *ret_budget = "budget_tokens_per_task";
                if (ret_message && asprintf(ret_message,
                                            "agent '%s' used %" PRIu64 " tokens on task %s; its budget_tokens_per_task is "
                                            "%u (models: in /etc/con/con.yaml)", agent, t->tokens, task_id,
                                            b->tokens_per_task) < 0)
                        return -ENOMEM;
                return -EDQUOT;
        }
        if (b->tokens_per_day && used_day >= b->tokens_per_day) {
                *ret_budget = "budget_tokens_per_day";
                if (ret_message && asprintf(ret_message,
                                            "agent '%s' used %" PRIu64 " tokens today (UTC); its budget_tokens_per_day is "
                                            "%u (models: in /etc/con/con.yaml)", agent, used_day, b->tokens_per_day) < 0)
                        return -ENOMEM;
                return -EDQUOT;
        }
        if (b->cost_per_day > 0 && model_cost(b, 0, 0) >= 0 && d && d->cost >= b->cost_per_day) {
                *ret_budget = "budget_cost_per_day";
                if (ret_message && asprintf(ret_message,
                                            "agent '%s' spent %.4f USD today (UTC); its budget_cost_per_day is %.4f "
                                            "(models: in /etc/con/con.yaml)", agent, d->cost, b->cost_per_day) < 0)
                        return -ENOMEM;
                return -EDQUOT;
        }
        return 0;
}

void model_ledger_get(const ModelLedger *l, uint64_t day, const char *agent, uint64_t *ret_in, uint64_t *ret_out,
                      double *ret_cost) {
        const LedgerDay *d = ledger_day(l, day, agent);
        if (ret_in)
                *ret_in = d ? d->in : 0;
        if (ret_out)
                *ret_out = d ? d->out : 0;
        if (ret_cost)
                *ret_cost = d ? d->cost : 0;
}

bool model_ledger_nth(const ModelLedger *l, uint64_t day, size_t i, const char **ret_agent, uint64_t *ret_in,
                      uint64_t *ret_out) {
        if (day != l->day || i >= l->n_days)
                return false;
        *ret_agent = l->days[i].agent;
        *ret_in = l->days[i].in;
        *ret_out = l->days[i].out;
        return true;
}

/* ---- rate limit ---- */

#define RATE_WINDOW_USEC (60ULL * 1000000ULL)

typedef struct RateEvent {
        uint64_t t;
        uint64_t tokens;        /* 0 for a request event */
        bool request;
} RateEvent;

struct ModelRate {
        unsigned rpm, tpm;
        RateEvent *ev;
        size_t n;
};

ModelRate *model_rate_new(unsigned rpm, unsigned tpm) {
        ModelRate *r = calloc(1, sizeof(*r));
        if (r)
                model_rate_set_limits(r, rpm, tpm);
        return r;
}

ModelRate *model_rate_free(ModelRate *r) {
        if (r)
                free(r->ev);
        free(r);
        return NULL;
}

void model_rate_set_limits(ModelRate *r, unsigned rpm, unsigned tpm) {
        r->rpm = rpm;
        r->tpm = tpm;
}

static void rate_prune(ModelRate *r, uint64_t now) {
        size_t k = 0;
        for (size_t i = 0; i < r->n; i++)
                if (r->ev[i].t + RATE_WINDOW_USEC > now)
                        r->ev[k++] = r->ev[i];
        r->n = k;
}

static int rate_push(ModelRate *r, RateEvent e) {
        RateEvent *n = reallocarray(r->ev, r->n + 1, sizeof(*n));
        if (!n)
                return -ENOMEM;
        r->ev = n;
        r->ev[r->n++] = e;
        return 0;
}

uint64_t model_rate_admit(ModelRate *r, uint64_t now) {
        uint64_t requests = 0, tokens = 0, oldest_req = UINT64_MAX, oldest_tok = UINT64_MAX;

        rate_prune(r, now);
        for (size_t i = 0; i < r->n; i++) {
                if (r->ev[i].request) {
                        requests++;
                        oldest_req = MIN(oldest_req, r->ev[i].t);
                } else {
                        tokens += r->ev[i].tokens;
                        oldest_tok = MIN(oldest_tok, r->ev[i].t);
                }
        }
        uint64_t wait = 0;
        if (r->rpm && requests >= r->rpm)
                wait = MAX(wait, oldest_req + RATE_WINDOW_USEC - now);
        if (r->tpm && tokens >= r->tpm)
                wait = MAX(wait, oldest_tok + RATE_WINDOW_USEC - now);
        if (wait > 0)
                return wait;
        if (r->rpm && rate_push(r, (RateEvent) { .t = now, .request = true }) < 0)
                return 1000000; /* out of memory: try again in a second */
        return 0;
}

void model_rate_add_tokens(ModelRate *r, uint64_t now, uint64_t tokens) {
        if (!r->tpm || tokens == 0)
                return;
        rate_prune(r, now);
        (void) rate_push(r, (RateEvent) { .t = now, .tokens = tokens });
}
