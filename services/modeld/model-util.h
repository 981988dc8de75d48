/* SPDX-License-Identifier: MIT */
#pragma once

#include "env-file.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "llm.h"

/* Pure logic of the model gateway (con-modeld): the key file, key resolution, the neutral
 * request/response JSON of org.conspiracy.Models1.Complete, budgets and the host-wide rate
 * limiter. No I/O besides what the caller hands in, no logging. Mapping: docs/MODELS.md. */

#define MODEL_REQUEST_MAX      (8U * 1024U * 1024U)    /* bytes of request_json */
#define MODEL_MESSAGES_MAX     4096U
#define MODEL_TOOLS_MAX        128U
#define MODEL_ENV_FILE_MAX     (64U * 1024U)
#define MODEL_TASKS_TRACKED    1024U                   /* per-task budget entries kept */
#define MODEL_TASKS_REGISTERED_MAX 256U                 /* running tasks one agent may register */

/* ---- the key file (/etc/con/env) ---- */


#define MODEL_GENERIC_KEY_PROVIDER_DEFAULT "openrouter"

/* Which key an agent's calls use (docs/MODELS.md "Keys"). Candidates: $<api_key_env> (for the
 * default CON_API_KEY, the tier's CON_<TIER>_API_KEY first), then the provider's own variable
 * (openrouter: CON_OPENROUTER_API_KEY, anthropic: CON_AUTH_ANTHROPIC, openai: CON_AUTH_OPENAI).
 * A candidate that belongs to a provider is skipped for every other provider: the provider
 * variables to their provider, the generic ones (CON_API_KEY and the tier keys) to generic_owner
 * (models.generic_key_provider; NULL: openrouter). Other names are the agent's own choice.
 * Returns 0 with *ret_key (borrowed from env) and *ret_var; or -ENOKEY with *ret_key NULL and
 * *ret_var the variable to set (NULL for a provider that has none, e.g. compatible). */
int model_resolve_key(char * const *env, const ConAgent *a, const char *generic_owner, const char **ret_key,
                      const char **ret_var);
bool model_key_var_is_generic(const char *var);
/* The provider a key variable belongs to; NULL for a name of the agent's own choosing. */
const char *model_key_var_provider(const char *var, const char *generic_owner);
/* The provider's own variable (CON_AUTH_ANTHROPIC ...), NULL for compatible, ollama. */
const char *model_provider_key_var(const char *provider);

/* ---- request and response JSON ---- */

typedef struct ModelRequest {
        ConLlmConversation *conv;
        unsigned max_tokens;            /* 0: not given */
        double temperature;             /* < 0: not given */
        char *task_id;                  /* NULL: not given */
        char *agent;                    /* NULL: not given (only honoured for root) */
} ModelRequest;

ModelRequest *model_request_free(ModelRequest *r);
static inline void model_request_freep(ModelRequest **r) {
        model_request_free(*r);
}
/* -EINVAL with *ret_error ("messages[2].role: must be user, assistant or tool"), -EFBIG over
 * MODEL_REQUEST_MAX, -ENOMEM. */
int model_request_parse(const char *json, size_t size, ModelRequest **ret, char **ret_error);
int model_response_to_json(const ConLlmResponse *resp, char **ret_json);

/* ---- budgets ---- */

typedef struct ModelLedger ModelLedger;

ModelLedger *model_ledger_new(void);
ModelLedger *model_ledger_free(ModelLedger *l);
static inline void model_ledger_freep(ModelLedger **l) {
        model_ledger_free(*l);
}
/* Budgets are keyed by what the gateway knows (docs/MODELS.md "Budgets"): the agent (from the
 * caller's uid) and the tasks its agent service registered as running. Every call counts for the
 * agent's UTC day; a call naming a registered task of that agent counts for that task, every
 * other call (no task_id, or one not registered for the agent) for the agent's "unregistered"
 * account of the day, which has one budget_tokens_per_task of its own.
 *
 * Registration: the task is running now; its usage is kept until it is unregistered, then among
 * the MODEL_TASKS_TRACKED most recent tasks (a task that runs again, e.g. after a requeue,
 * continues its count). Registrations the agent service never ended do not pile up: an agent
 * keeps at most MODEL_TASKS_REGISTERED_MAX (its oldest is dropped), and when every tracked entry
 * is registered the least recently used one goes. -ENOMEM only. */
int model_ledger_register(ModelLedger *l, const char *agent, const char *task_id);
/* -ENOENT when not registered. */
int model_ledger_unregister(ModelLedger *l, const char *agent, const char *task_id);
bool model_ledger_registered(const ModelLedger *l, const char *agent, const char *task_id);
/* Registered tasks of one agent (NULL: of all). */
size_t model_ledger_n_registered(const ModelLedger *l, const char *agent);
/* day: days since the epoch (UTC). Rolls over: usage of earlier days is forgotten.
 * task_id: a registered task of agent, or NULL for the unregistered account. */
int model_ledger_add(ModelLedger *l, uint64_t day, const char *agent, const char *task_id,
                     uint64_t input_tokens, uint64_t output_tokens, const ConModelBudget *b);
/* Is another call allowed (task_id as for model_ledger_add)? 0, or -EDQUOT with *ret_budget the
 * exhausted config key and *ret_message a sentence naming the agent, the budget, the use and the
 * limit (caller frees). */
int model_ledger_check(const ModelLedger *l, uint64_t day, const char *agent, const char *task_id,
                       const ConModelBudget *b, const char **ret_budget, char **ret_message);
/* Today's usage of one agent. */
void model_ledger_get(const ModelLedger *l, uint64_t day, const char *agent, uint64_t *ret_in,
                      uint64_t *ret_out, double *ret_cost);
/* Iterate agents with usage today: index 0.. until it returns false. */
bool model_ledger_nth(const ModelLedger *l, uint64_t day, size_t i, const char **ret_agent, uint64_t *ret_in,
                      uint64_t *ret_out);
/* Cost of a call in USD, or -1 when a price is unknown. */
double model_cost(const ConModelBudget *b, uint64_t input_tokens, uint64_t output_tokens);

/* ---- host-wide rate limit (sliding window of one minute) ---- */

typedef struct ModelRate ModelRate;

ModelRate *model_rate_new(unsigned requests_per_minute, unsigned tokens_per_minute);
ModelRate *model_rate_free(ModelRate *r);
static inline void model_rate_freep(ModelRate **r) {
        model_rate_free(*r);
}
void model_rate_set_limits(ModelRate *r, unsigned requests_per_minute, unsigned tokens_per_minute);
/* now: CLOCK_MONOTONIC usec. Returns 0 and records a request when one may start now, else the
 * usec to wait before asking again (> 0). */
uint64_t model_rate_admit(ModelRate *r, uint64_t now);
void model_rate_add_tokens(ModelRate *r, uint64_t now, uint64_t tokens);
