/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>

#include "config.h"
#include "cron.h"
#include "fileio.h"
#include "macro.h"
#include "names.h"
#include "policy-vocab.h"
#include "strv.h"
#include "utf8.h"
#include "yaml-reader.h"

/* Built-in fallbacks, as in the Go original's ResolvedAgent. */
#define FALLBACK_RUNNER "picoclaw"
#define FALLBACK_PROVIDER "openrouter"
#define FALLBACK_API_KEY_ENV "CON_API_KEY"
#define DEFAULT_SYSTEM_NAME "conspiracy"
#define DEFAULT_SUBMITTERS_GROUP "con"
#define DEFAULT_TASK_MAX_SIZE (UINT64_C(1) << 20)
#define TASK_MAX_SIZE_LIMIT (UINT64_C(1) << 30)
#define DEFAULT_CRON_TASK "/status"
#define DEFAULT_EXEC_TIMEOUT_USEC (300 * USEC_PER_SEC)
#define DEFAULT_IDLE_EXIT_USEC (30 * USEC_PER_SEC)
#define MAX_SESSIONS_LIMIT 64
#define LIST_MAX 64                     /* roles, groups, scopes per agent */
#define ARGV_MAX 256                    /* command and cli_args entries */
#define CONFIG_FILE_MAX (UINT64_C(16) << 20)


static const char * const runners[] = { "picoclaw", "exec", "claude", "codex", NULL };
static const char * const providers[] = {
        "openrouter", "anthropic", "openai", "claude_code", "ollama", "compatible", NULL,
};
#define RUNNERS_ALLOWED "use picoclaw, exec, claude or codex"
#define PROVIDERS_ALLOWED "use openrouter, anthropic, openai, claude_code, ollama or compatible"

static const char * const tier_table[_CON_TIER_MAX] = {
        [CON_TIER_NONE] = "",
        [CON_TIER_OFFICER] = "officer",
        [CON_TIER_OPERATOR] = "operator",
        [CON_TIER_WORKER] = "worker",
};

static const char * const mode_table[_CON_MODE_MAX] = {
        [CON_MODE_ON_DEMAND] = "on-demand",
        [CON_MODE_ALWAYS] = "always",
        [CON_MODE_CRON] = "cron",
};

const char *con_tier_to_string(ConTier t) {
        return t >= 0 && t < _CON_TIER_MAX ? tier_table[t] : NULL;
}

ConTier con_tier_from_string(const char *s) {
        if (!s)
                return _CON_TIER_INVALID;
        for (int i = 0; i < _CON_TIER_MAX; i++)
                if (streq(tier_table[i], s))
                        return (ConTier) i;
        return _CON_TIER_INVALID;
}

const char *con_mode_to_string(ConMode m) {
        return m >= 0 && m < _CON_MODE_MAX ? mode_table[m] : NULL;
}

ConMode con_mode_from_string(const char *s) {
        if (!s)
                return _CON_MODE_INVALID;
        if (streq(s, "continuous")) /* the Go original's name */
                return CON_MODE_ALWAYS;
        for (int i = 0; i < _CON_MODE_MAX; i++)
                if (streq(mode_table[i], s))
                        return (ConMode) i;
        return _CON_MODE_INVALID;
}

/* What an agent entry said, kept until resolution so later errors can point at the right node. */
typedef struct AgentNodes {
        const yaml_node_t *entry, *name, *mode, *cron, *cron_task, *runner, *provider, *command, *cli_args;
        char **cli_args_v;
} AgentNodes;

static bool has_space_or_control(const char *s) {
        for (; *s; s++)
                if ((unsigned char) *s <= ' ' || *s == 0x7f)
                        return true;
        return false;
}

static bool has_control(const char *s) {
        for (; *s; s++)
                if (((unsigned char) *s < ' ' && *s != '\t') || *s == 0x7f)
                        return true;
        return false;
}

static bool in_list(const char * const *l, const char *s) {
        for (; *l; l++)
                if (streq(*l, s))
                        return true;
        return false;
}

static bool env_name_valid(const char *s) {
        if (!(*s == '_' || (*s >= 'A' && *s <= 'Z')))
                return false;
        for (; *s; s++)
                if (!(*s == '_' || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')))
                        return false;
        return true;
}

/* network: none, gateway, or a list of allow-list entries (network.h). */
static int parse_network(ConYamlReader *c, const yaml_node_t *v, const char *path, ConNetwork *ret) {
        yaml_node_t *item;
        int r;

        if (v->type == YAML_SCALAR_NODE) {
                _cleanup_free_ char *s = NULL, *q = con_yaml_quote(v);
                if (!q)
                        return -ENOMEM;
                r = con_yaml_get_string(c, v, path, &s);
                if (r < 0)
                        return r;
                con_network_done(ret);
                if (streq(s, "none"))
                        ret->mode = CON_NETWORK_NONE;
                else if (streq(s, "gateway"))
                        ret->mode = CON_NETWORK_GATEWAY;
                else
                        return con_yaml_fail(c, v, path,
                                    "%s is not allowed; use none, gateway, or a list of allowed hosts, addresses "
                                    "and CIDRs (e.g. [10.0.0.0/8:443, '*.example.com:443'])", q);
                return 0;
        }
        if (v->type != YAML_SEQUENCE_NODE)
                return con_yaml_fail(c, v, path, "expected none, gateway or a list of allowed destinations, got %s",
                            con_yaml_node_kind_to_string(v));
        size_t n = con_yaml_sequence_length(v);
        if (n == 0)
                return con_yaml_fail(c, v, path, "the list is empty; to allow nothing write none");
        if (n > CON_NETWORK_ALLOW_MAX)
                return con_yaml_fail(c, v, path, "the list has %zu entries; at most %u are allowed", n,
                            CON_NETWORK_ALLOW_MAX);
        _cleanup_(con_network_done) ConNetwork net = { .mode = CON_NETWORK_ALLOW };
        net.allow = calloc(n, sizeof(ConNetAllow));
        if (!net.allow)
                return -ENOMEM;
        CON_YAML_SEQUENCE_FOREACH(c->doc, v, item) {
                _cleanup_free_ char *ipath = con_yaml_path_index(path, net.n_allow), *s = NULL;
                if (!ipath)
                        return -ENOMEM;
                if (item->type != YAML_SCALAR_NODE)
                        return con_yaml_fail(c, item, ipath, "expected a host, address or CIDR, got %s",
                                    con_yaml_node_kind_to_string(item));
                r = con_yaml_get_string(c, item, ipath, &s);
                if (r < 0)
                        return r;
                const char *problem = NULL;
                _cleanup_free_ char *q = con_yaml_quote(item);
                if (!q)
                        return -ENOMEM;
                r = con_net_allow_parse(s ?: "", &net.allow[net.n_allow], &problem);
                if (r == -EINVAL)
                        return con_yaml_fail(c, item, ipath, "%s %s", q, problem);
                if (r < 0)
                        return r;
                net.n_allow++;
        }
        con_network_done(ret);
        *ret = net;
        net = (ConNetwork) {};
        return 0;
}

/* One of runner/provider/model/api_key_env/base_url/context_window/network, at base, base.<tier>,
 * defaults.<tier> or agent level. Returns 1 when key is one of them (and was handled), 0 when it is
 * not one of them. */
static int parse_runtime_key(ConYamlReader *c, const char *key, const yaml_node_t *v, const char *path,
                             ConRuntimeSettings *rt) {
        char **dest;
        int r;

        if (streq(key, "context_window")) {
                if (con_yaml_node_is_null(v))
                        return 1;
                r = con_yaml_get_uint(c, v, path, CON_CONTEXT_WINDOW_MIN, CON_CONTEXT_WINDOW_MAX, &rt->context_window);
                return r < 0 ? r : 1;
        }
        if (streq(key, "network")) {
                if (con_yaml_node_is_null(v))
                        return 1;
                r = parse_network(c, v, path, &rt->network);
                return r < 0 ? r : 1;
        }
        if (streq(key, "runner"))
                dest = &rt->runner;
        else if (streq(key, "provider"))
                dest = &rt->provider;
        else if (streq(key, "model"))
                dest = &rt->model;
        else if (streq(key, "api_key_env"))
                dest = &rt->api_key_env;
        else if (streq(key, "base_url"))
                dest = &rt->base_url;
        else
                return 0;

        _cleanup_free_ char *s = NULL;
        r = con_yaml_get_string(c, v, path, &s);
        if (r < 0)
                return r;
        if (!s)
                return 1;

        _cleanup_free_ char *q = con_yaml_quote(v);
        if (!q)
                return -ENOMEM;
        if (dest == &rt->runner && !in_list(runners, s))
                return con_yaml_fail(c, v, path, "%s is not allowed; " RUNNERS_ALLOWED, q);
        if (dest == &rt->provider && !in_list(providers, s))
                return con_yaml_fail(c, v, path, "%s is not allowed; " PROVIDERS_ALLOWED, q);
        if (dest == &rt->model && (isempty(s) || has_space_or_control(s)))
                return con_yaml_fail(c, v, path, "%s is not a valid model name; it must not be empty or contain spaces", q);
        if (dest == &rt->api_key_env && !env_name_valid(s))
                return con_yaml_fail(c, v, path,
                            "%s is not a valid environment variable name; use A-Z, 0-9 and '_', "
                            "not starting with a digit (e.g. CON_API_KEY)", q);
        if (dest == &rt->base_url &&
            (has_space_or_control(s) ||
             !((startswith(s, "http://") && s[7]) || (startswith(s, "https://") && s[8]))))
                return con_yaml_fail(c, v, path, "%s is not allowed; the URL must start with http:// or https://", q);

        free(*dest);
        *dest = TAKE_PTR(s);
        return 1;
}

#define RUNTIME_KEYS "runner, provider, model, api_key_env, base_url, context_window, network"

/* A mapping of the five runtime keys; with tiers, also officer:, operator: and worker: mappings. */
static int parse_runtime_mapping(ConYamlReader *c, const yaml_node_t *map, const char *path, ConRuntimeSettings *rt,
                                 ConRuntimeSettings *tiers) {
        yaml_node_t *k, *v;
        int r;

        if (con_yaml_node_is_null(map))
                return 0;
        r = con_yaml_expect_mapping(c, map, path,
                           !rt ? "officer, operator, worker" :
                           tiers ? RUNTIME_KEYS ", officer, operator, worker" : RUNTIME_KEYS);
        if (r < 0)
                return r;

        CON_YAML_MAPPING_FOREACH(c->doc, map, k, v) {
                const char *key = con_yaml_scalar(k);
                _cleanup_free_ char *kpath = con_yaml_path_key(path, k);
                if (!kpath)
                        return -ENOMEM;

                if (rt) {
                        r = parse_runtime_key(c, key, v, kpath, rt);
                        if (r < 0)
                                return r;
                        if (r > 0)
                                continue;
                }
                ConTier t = tiers ? con_tier_from_string(key) : _CON_TIER_INVALID;
                if (t > CON_TIER_NONE) {
                        r = parse_runtime_mapping(c, v, kpath, &tiers[t], NULL);
                        if (r < 0)
                                return r;
                        continue;
                }
                return con_yaml_unknown_key(c, k, kpath,
                                   !rt ? "officer, operator and worker" :
                                   tiers ? "runner, provider, model, api_key_env, base_url, context_window, "
                                           "network, officer, operator and worker" :
                                           "runner, provider, model, api_key_env, base_url, context_window and network");
        }
        return 0;
}

static bool runtime_empty(const ConRuntimeSettings *rt) {
        return !rt->runner && !rt->provider && !rt->model && !rt->api_key_env && !rt->base_url &&
                rt->context_window == 0 && rt->network.mode == CON_NETWORK_UNSET;
}

static void runtime_done(ConRuntimeSettings *rt) {
        free(rt->runner);
        free(rt->provider);
        free(rt->model);
        free(rt->api_key_env);
        free(rt->base_url);
        con_network_done(&rt->network);
        *rt = (ConRuntimeSettings) {};
}

/* ---- sections ---- */

static const char *system_name_check(const char *s) {
        return isempty(s) || has_control(s) || strlen(s) > 64 ? "is not allowed; use 1 to 64 printable characters" : NULL;
}

static const char *group_name_check(const char *s) {
        return con_unix_name_valid(s) ? NULL :
                "is not a valid group name; use 1 to 31 characters from a-z, 0-9, '_' and '-', starting with a "
                "letter or '_' (con bootstrap creates the group with systemd-sysusers, which refuses longer names)";
}

static const ConYamlField system_fields[] = {
        { "name", .type = CON_YAML_STRING, .offset = offsetof(ConConfig, system_name), .check = system_name_check },
        { "submitters_group", .type = CON_YAML_STRING, .offset = offsetof(ConConfig, submitters_group),
          .check = group_name_check },
        { "task_max_size", .type = CON_YAML_SIZE, .offset = offsetof(ConConfig, task_max_size),
          .max = (double) TASK_MAX_SIZE_LIMIT },
        { "max_queued_per_sender", .type = CON_YAML_UINT, .offset = offsetof(ConConfig, max_queued_per_sender),
          .min = 1, .max = CON_MAX_QUEUED_PER_SENDER_LIMIT },
        { "max_delegation_hops", .type = CON_YAML_UINT, .offset = offsetof(ConConfig, max_delegation_hops),
          .min = 0, .max = CON_MAX_DELEGATION_HOPS_LIMIT },
        { "result_retention", .type = CON_YAML_DURATION, .offset = offsetof(ConConfig, result_retention_usec) },
        { "result_max", .type = CON_YAML_UINT, .offset = offsetof(ConConfig, result_max), .min = 1,
          .max = CON_RESULT_MAX_LIMIT },
        { "agent_uid_min", .type = CON_YAML_UINT, .offset = offsetof(ConConfig, agent_uid_min),
          .min = CON_AGENT_UID_LOWEST, .max = CON_AGENT_UID_HIGHEST },
        { "agent_uid_max", .type = CON_YAML_UINT, .offset = offsetof(ConConfig, agent_uid_max),
          .min = CON_AGENT_UID_LOWEST, .max = CON_AGENT_UID_HIGHEST },
        {}
};

/* The agent UID block (system.agent_uid_min..agent_uid_max), checked once both are read. */
static int check_agent_uid_range(ConYamlReader *c, const yaml_node_t *system, const ConConfig *cfg) {
        if (cfg->agent_uid_min > cfg->agent_uid_max)
                return con_yaml_fail(c, system, "system.agent_uid_min",
                                     "the agent UID range %u..%u is empty; agent_uid_min must not exceed agent_uid_max",
                                     cfg->agent_uid_min, cfg->agent_uid_max);
        if (cfg->agent_uid_min <= 65535 && cfg->agent_uid_max >= 65534)
                return con_yaml_fail(c, system, "system.agent_uid_min",
                                     "the agent UID range %u..%u contains 65534 (nobody) or 65535; use a range below "
                                     "65534 or above 65535", cfg->agent_uid_min, cfg->agent_uid_max);
        return 0;
}

static const ConYamlField thresholds_fields[] = {
        { "disk_min_free_pct", .type = CON_YAML_UINT, .offset = offsetof(ConContractThresholds, disk_min_free_pct),
          .max = 100 },
        { "mem_min_free_pct", .type = CON_YAML_UINT, .offset = offsetof(ConContractThresholds, mem_min_free_pct),
          .max = 100 },
        { "max_load_factor", .type = CON_YAML_DOUBLE, .offset = offsetof(ConContractThresholds, max_load_factor),
          .flags = CON_YAML_MIN_EXCLUSIVE, .max = 1000.0 },
        { "max_session_min", .type = CON_YAML_UINT, .offset = offsetof(ConContractThresholds, max_session_min),
          .min = 1, .max = 100000 },
        { "healthcheck_interval", .type = CON_YAML_DURATION,
          .offset = offsetof(ConContractThresholds, healthcheck_interval_usec) },
        {}
};

static const ConYamlField contracts_fields[] = {
        { "system", .type = CON_YAML_MAPPING, .offset = 0, .fields = thresholds_fields },
        {}
};

/* ---- models (the model gateway) ---- */

#define MODEL_TOKENS_MAX 4000000000U
#define MODEL_COST_MAX 1000000.0

#define BUDGET_FIELDS(base)                                                                                   \
        { "budget_tokens_per_task", .type = CON_YAML_UINT,                                                    \
          .offset = (base) + offsetof(ConModelBudget, tokens_per_task), .min = 1, .max = MODEL_TOKENS_MAX },  \
        { "budget_tokens_per_day", .type = CON_YAML_UINT,                                                     \
          .offset = (base) + offsetof(ConModelBudget, tokens_per_day), .min = 1, .max = MODEL_TOKENS_MAX },   \
        { "budget_cost_per_day", .type = CON_YAML_DOUBLE, .flags = CON_YAML_MIN_EXCLUSIVE,                    \
          .offset = (base) + offsetof(ConModelBudget, cost_per_day), .max = MODEL_COST_MAX },                 \
        { "price_per_mtok_in", .type = CON_YAML_DOUBLE, .flags = CON_YAML_MIN_EXCLUSIVE,                      \
          .offset = (base) + offsetof(ConModelBudget, price_per_mtok_in), .max = MODEL_COST_MAX },            \
        { "price_per_mtok_out", .type = CON_YAML_DOUBLE, .flags = CON_YAML_MIN_EXCLUSIVE,                     \
          .offset = (base) + offsetof(ConModelBudget, price_per_mtok_out), .max = MODEL_COST_MAX }

static const ConYamlField budget_fields[] = {
        BUDGET_FIELDS(0),
        {}
};

static const char *generic_key_provider_check(const char *s) {
        return in_list(providers, s) && !streq(s, "claude_code") ? NULL :
                "is not allowed; use openrouter, anthropic, openai, ollama or compatible (the provider that "
                "CON_API_KEY is for)";
}

/* models.agents: a mapping of agent name to budget keys. */
static int parse_models_agents(ConYamlReader *c, const yaml_node_t *map, const char *path, void *dest,
                               void *userdata _unused_) {
        ConModelsConfig *m = dest;
        yaml_node_t *k, *v;
        int r;

        if (con_yaml_node_is_null(map))
                return 0;
        r = con_yaml_expect_mapping(c, map, path, "agent names");
        if (r < 0)
                return r;
        CON_YAML_MAPPING_FOREACH(c->doc, map, k, v) {
                const char *name = con_yaml_scalar(k);
                _cleanup_free_ char *kpath = con_yaml_path_key(path, k);
                if (!kpath)
                        return -ENOMEM;
                if (con_agent_name_check(name) != CON_NAME_OK)
                        return con_yaml_fail(c, k, kpath, "not a valid agent name");
                ConModelAgentBudget *n = reallocarray(m->agents, m->n_agents + 1, sizeof(*n));
                if (!n)
                        return -ENOMEM;
                m->agents = n;
                ConModelAgentBudget *ab = &m->agents[m->n_agents];
                *ab = (ConModelAgentBudget) { .agent = strdup(name) };
                if (!ab->agent)
                        return -ENOMEM;
                m->n_agents++;
                r = con_yaml_read_mapping(c, v, kpath, budget_fields, &ab->budget, NULL, NULL);
                if (r < 0)
                        return r;
        }
        return 0;
}

static const ConYamlField models_fields[] = {
        { "requests_per_minute", .type = CON_YAML_UINT, .offset = offsetof(ConModelsConfig, requests_per_minute),
          .min = 1, .max = 1000000 },
        { "tokens_per_minute", .type = CON_YAML_UINT, .offset = offsetof(ConModelsConfig, tokens_per_minute),
          .min = 1, .max = MODEL_TOKENS_MAX },
        { "queue_max", .type = CON_YAML_UINT, .offset = offsetof(ConModelsConfig, queue_max), .min = 1, .max = 100000 },
        { "timeout", .type = CON_YAML_DURATION, .offset = offsetof(ConModelsConfig, timeout_usec) },
        { "generic_key_provider", .type = CON_YAML_STRING, .offset = offsetof(ConModelsConfig, generic_key_provider),
          .check = generic_key_provider_check },
        { "agents", .type = CON_YAML_CUSTOM, .offset = 0, .parse = parse_models_agents },
        BUDGET_FIELDS(offsetof(ConModelsConfig, defaults)),
        {}
};

void con_config_model_budget(const ConConfig *c, const char *agent, ConModelBudget *ret) {
        ConModelBudget b = c->models.defaults;
        for (size_t i = 0; agent && i < c->models.n_agents; i++) {
                const ConModelBudget *o = &c->models.agents[i].budget;
                if (!streq(c->models.agents[i].agent, agent))
                        continue;
                if (o->tokens_per_task)
                        b.tokens_per_task = o->tokens_per_task;
                if (o->tokens_per_day)
                        b.tokens_per_day = o->tokens_per_day;
                if (o->cost_per_day > 0)
                        b.cost_per_day = o->cost_per_day;
                if (o->price_per_mtok_in > 0)
                        b.price_per_mtok_in = o->price_per_mtok_in;
                if (o->price_per_mtok_out > 0)
                        b.price_per_mtok_out = o->price_per_mtok_out;
        }
        *ret = b;
}

/* ---- agents ---- */

#define AGENT_KEYS "name, tier, mode, cron, cron_task, roles, groups, scopes, runner, provider, model, " \
        "api_key_env, base_url, context_window, network, command, exec_timeout, max_sessions, idle_exit, instructions " \
        "(deprecated: cli, cli_args)"

static void agent_done(ConAgent *a) {
        free(a->name);
        free(a->cron);
        free(a->cron_task);
        strv_free(a->roles);
        strv_free(a->groups);
        strv_free(a->scopes);
        runtime_done(&a->rt);
        strv_free(a->command);
        free(a->instructions);
        free(a->file);
        *a = (ConAgent) {};
}

static int parse_agent(ConYamlReader *c, const yaml_node_t *map, const char *path, ConAgent *a, AgentNodes *an) {
        yaml_node_t *k, *v;
        int r;

        *a = (ConAgent) {
                .tier = CON_TIER_NONE,
                .mode = CON_MODE_ON_DEMAND,
                .exec_timeout_usec = DEFAULT_EXEC_TIMEOUT_USEC,
                .max_sessions = 1,
                .idle_exit_usec = DEFAULT_IDLE_EXIT_USEC,
                .line = con_yaml_node_line(map),
                .column = con_yaml_node_column(map),
        };
        *an = (AgentNodes) { .entry = map };

        r = con_yaml_expect_mapping(c, map, path, "agent settings (at least name:)");
        if (r < 0)
                return r;

        CON_YAML_MAPPING_FOREACH(c->doc, map, k, v) {
                const char *key = con_yaml_scalar(k);
                _cleanup_free_ char *kpath = con_yaml_path_key(path, k), *q = NULL;
                if (!kpath)
                        return -ENOMEM;
                if (v && v->type == YAML_SCALAR_NODE && !(q = con_yaml_quote(v)))
                        return -ENOMEM;

                if (streq(key, "name")) {
                        r = con_yaml_get_string(c, v, kpath, &a->name);
                        if (r < 0)
                                return r;
                        if (!a->name)
                                return con_yaml_fail(c, v, kpath, "an agent name is required");
                        ConNameProblem np = con_agent_name_check(a->name);
                        if (np != CON_NAME_OK)
                                return con_yaml_fail(c, v, kpath, "%s is not a valid agent name: %s", q,
                                            con_name_problem_to_string(np));
                        an->name = v;
                } else if (streq(key, "tier")) {
                        _cleanup_free_ char *s = NULL;
                        r = con_yaml_get_string(c, v, kpath, &s);
                        if (r < 0)
                                return r;
                        if (!s)
                                continue;
                        ConTier t = con_tier_from_string(s);
                        if (t < 0)
                                return con_yaml_fail(c, v, kpath, "%s is not allowed; use officer, operator or worker", q);
                        a->tier = t;
                } else if (streq(key, "mode")) {
                        _cleanup_free_ char *s = NULL;
                        r = con_yaml_get_string(c, v, kpath, &s);
                        if (r < 0)
                                return r;
                        if (!s)
                                continue;
                        ConMode m = con_mode_from_string(s);
                        if (m < 0)
                                return con_yaml_fail(c, v, kpath,
                                            "%s is not allowed; use on-demand, always or cron "
                                            "(continuous is accepted for always)", q);
                        a->mode = m;
                        an->mode = v;
                } else if (streq(key, "cron")) {
                        _cleanup_free_ char *problem = NULL;
                        r = con_yaml_get_string(c, v, kpath, &a->cron);
                        if (r < 0)
                                return r;
                        if (!a->cron)
                                continue;
                        /* The scheduler's own parser, so what is accepted here is what runs. */
                        ConCron cron;
                        r = con_cron_parse(a->cron, &cron, &problem);
                        if (r == -EINVAL)
                                return con_yaml_fail(c, v, kpath, "%s is not a valid cron expression: %s", q, problem);
                        if (r < 0)
                                return r;
                        an->cron = v;
                } else if (streq(key, "cron_task")) {
                        r = con_yaml_get_string(c, v, kpath, &a->cron_task);
                        if (r < 0)
                                return r;
                        if (a->cron_task && isempty(a->cron_task))
                                return con_yaml_fail(c, v, kpath, "the scheduled task text must not be empty");
                        if (a->cron_task)
                                an->cron_task = v;
                } else if (streq(key, "roles")) {
                        r = con_yaml_get_strv(c, v, kpath, true, LIST_MAX, &a->roles);
                } else if (streq(key, "groups")) {
                        r = con_yaml_get_strv(c, v, kpath, true, LIST_MAX, &a->groups);
                } else if (streq(key, "scopes")) {
                        r = con_yaml_get_strv(c, v, kpath, true, LIST_MAX, &a->scopes);
                } else if (streq(key, "cli") || streq(key, "runner")) {
                        /* cli is the original's deprecated name for runner; the mapping check already
                         * refused a key given twice, so a second one here is the other spelling. */
                        if (an->runner)
                                return con_yaml_fail(c, k, kpath,
                                            "runner and cli (its deprecated name) are both given; keep runner");
                        r = parse_runtime_key(c, "runner", v, kpath, &a->rt);
                        an->runner = v;
                } else if (streq(key, "provider")) {
                        r = parse_runtime_key(c, key, v, kpath, &a->rt);
                        an->provider = v;
                } else if (streq(key, "model") || streq(key, "api_key_env") || streq(key, "base_url") ||
                           streq(key, "context_window") || streq(key, "network")) {
                        r = parse_runtime_key(c, key, v, kpath, &a->rt);
                } else if (streq(key, "command")) {
                        r = con_yaml_get_strv(c, v, kpath, false, ARGV_MAX, &a->command);
                        if (r < 0)
                                return r;
                        an->command = v;
                        if (con_yaml_node_is_null(v))
                                continue;
                        if (!a->command)
                                return con_yaml_fail(c, v, kpath, "the list is empty; give the program's absolute path first");
                        if (a->command[0][0] != '/') {
                                _cleanup_free_ char *q0 = con_utf8_quote(a->command[0], strlen(a->command[0]), CON_YAML_QUOTE_MAX);
                                _cleanup_free_ char *p0 = con_yaml_path_index(kpath, 0);
                                if (!q0 || !p0)
                                        return -ENOMEM;
                                return con_yaml_fail(c, yaml_document_get_node(c->doc, v->data.sequence.items.start[0]), p0,
                                            "%s is not allowed; the program must be given as an absolute path", q0);
                        }
                } else if (streq(key, "cli_args")) {
                        r = con_yaml_get_strv(c, v, kpath, false, ARGV_MAX, &an->cli_args_v);
                        an->cli_args = con_yaml_node_is_null(v) ? NULL : v;
                } else if (streq(key, "exec_timeout")) {
                        r = con_yaml_get_duration(c, v, kpath, false, &a->exec_timeout_usec);
                } else if (streq(key, "max_sessions")) {
                        r = con_yaml_get_uint(c, v, kpath, 1, MAX_SESSIONS_LIMIT, &a->max_sessions);
                } else if (streq(key, "idle_exit")) {
                        r = con_yaml_get_duration(c, v, kpath, false, &a->idle_exit_usec);
                } else if (streq(key, "instructions")) {
                        r = con_yaml_get_string(c, v, kpath, &a->instructions);
                } else
                        return con_yaml_unknown_key(c, k, kpath, AGENT_KEYS);
                if (r < 0)
                        return r;
        }

        if (!a->name) {
                _cleanup_free_ char *npath = con_yaml_path_child(path, "name");
                return npath ? con_yaml_fail(c, map, npath, "missing; every agent needs a name") : -ENOMEM;
        }
        return 0;
}

/* Resolution of one setting: the agent's own value, else base.<tier>, else base, else the built-in
 * fallback (NULL for model and base_url). *value is replaced by the result; *ret_from says where
 * it came from, for messages. */
static int resolve(char **value, const char *tier_value, const char *base_value, const char *fallback,
                   ConTier tier, const char **ret_from) {
        const char *v;

        if (*value) {
                *ret_from = "set on the agent";
                return 0;
        }
        if (tier_value) {
                v = tier_value;
                *ret_from = tier == CON_TIER_OFFICER ? "from base.officer" :
                            tier == CON_TIER_OPERATOR ? "from base.operator" : "from base.worker";
        } else if (base_value) {
                v = base_value;
                *ret_from = "from base";
        } else {
                v = fallback;
                *ret_from = "the built-in default";
        }
        if (v && !(*value = strdup(v)))
                return -ENOMEM;
        return 0;
}

static int finish_agent(ConYamlReader *c, const ConConfig *cfg, const char *path, ConAgent *a, AgentNodes *an) {
        const char *runner_from, *provider_from, *unused;
        int r;

        /* Mode and schedule. */
        if (a->mode == CON_MODE_CRON && !a->cron) {
                _cleanup_free_ char *p = con_yaml_path_child(path, "cron");
                return p ? con_yaml_fail(c, an->mode, p, "missing; mode cron needs a cron expression such as '0 8 * * 1-5'")
                         : -ENOMEM;
        }
        if (a->mode != CON_MODE_CRON && (an->cron || an->cron_task)) {
                _cleanup_free_ char *p = con_yaml_path_child(path, an->cron ? "cron" : "cron_task");
                return p ? con_yaml_fail(c, an->cron ?: an->cron_task, p,
                                "only allowed with mode cron (this agent's mode is %s)", con_mode_to_string(a->mode))
                         : -ENOMEM;
        }
        if (!a->cron_task && !(a->cron_task = strdup(DEFAULT_CRON_TASK)))
                return -ENOMEM;

        /* Resolution: agent, base.<tier>, base, built-in. model and base_url have no built-in value. */
        ConRuntimeSettings *rt = &a->rt;
        const ConRuntimeSettings *tier = &cfg->tiers[a->tier], *base = &cfg->base;
        r = resolve(&rt->runner, tier->runner, base->runner, FALLBACK_RUNNER, a->tier, &runner_from);
        if (r >= 0)
                r = resolve(&rt->provider, tier->provider, base->provider, FALLBACK_PROVIDER, a->tier,
                            &provider_from);
        if (r >= 0)
                r = resolve(&rt->model, tier->model, base->model, NULL, a->tier, &unused);
        if (r >= 0)
                r = resolve(&rt->api_key_env, tier->api_key_env, base->api_key_env, FALLBACK_API_KEY_ENV, a->tier,
                            &unused);
        if (r >= 0)
                r = resolve(&rt->base_url, tier->base_url, base->base_url, NULL, a->tier, &unused);
        if (r < 0)
                return r;
        if (rt->context_window == 0)
                rt->context_window = tier->context_window ?: base->context_window ?: CON_CONTEXT_WINDOW_DEFAULT;
        if (rt->network.mode == CON_NETWORK_UNSET) {
                const ConNetwork *from = tier->network.mode != CON_NETWORK_UNSET ? &tier->network :
                                         base->network.mode != CON_NETWORK_UNSET ? &base->network : NULL;
                if (from) {
                        r = con_network_copy(&rt->network, from);
                        if (r < 0)
                                return r;
                } else
                        rt->network.mode = CON_NETWORK_GATEWAY;
        }

        /* Runner and provider must fit together (as the original checks after resolution). */
        const char *need = NULL;
        if (streq(rt->runner, "claude") && !streq(rt->provider, "anthropic") && !streq(rt->provider, "claude_code"))
                need = "runner claude needs provider anthropic or claude_code";
        else if (streq(rt->runner, "codex") && !streq(rt->provider, "openai"))
                need = "runner codex needs provider openai";
        else if (streq(rt->runner, "picoclaw") && streq(rt->provider, "claude_code"))
                need = "runner picoclaw cannot use provider claude_code (it is for runner claude)";
        if (need) {
                _cleanup_free_ char *p = con_yaml_path_child(path, "provider");
                return p ? con_yaml_fail(c, an->provider ?: an->runner ?: an->entry, p,
                                "%s; here the runner is %s (%s) and the provider is %s (%s)", need, rt->runner,
                                runner_from, rt->provider, provider_from)
                         : -ENOMEM;
        }

        /* command belongs to the exec runner; cli_args (deprecated) to claude and codex. */
        bool exec = streq(rt->runner, "exec");
        bool cli_runner = streq(rt->runner, "claude") || streq(rt->runner, "codex");
        if (an->cli_args && !cli_runner) {
                _cleanup_free_ char *p = con_yaml_path_child(path, "cli_args");
                return p ? con_yaml_fail(c, an->cli_args, p,
                                "only allowed with runner claude or codex (this agent's runner is %s, %s); "
                                "for the exec runner use command", rt->runner, runner_from)
                         : -ENOMEM;
        }
        if (an->cli_args && an->command) {
                _cleanup_free_ char *p = con_yaml_path_child(path, "cli_args");
                return p ? con_yaml_fail(c, an->cli_args, p, "cli_args (deprecated) and command are both given; keep one")
                         : -ENOMEM;
        }
        if (exec && !a->command) {
                _cleanup_free_ char *p = con_yaml_path_child(path, "command");
                return p ? con_yaml_fail(c, an->command ?: an->runner ?: an->entry, p,
                                "missing; runner exec needs the program to run, e.g. [/usr/local/bin/tool, --flag]")
                         : -ENOMEM;
        }
        if (!exec && an->command && a->command) {
                _cleanup_free_ char *p = con_yaml_path_child(path, "command");
                return p ? con_yaml_fail(c, an->command, p, "only allowed with runner exec (this agent's runner is %s, %s)",
                                rt->runner, runner_from)
                         : -ENOMEM;
        }
        if (an->cli_args) {
                /* [runner, cli_args...], stored as given: no PATH lookup here. */
                size_t n = strv_length(an->cli_args_v);
                _cleanup_strv_free_ char **cmd = calloc(n + 2, sizeof(char *));
                if (!cmd || !(cmd[0] = strdup(rt->runner)))
                        return -ENOMEM;
                for (size_t i = 0; i < n; i++)
                        if (!(cmd[i + 1] = strdup(an->cli_args_v[i])))
                                return -ENOMEM;
                strv_free(a->command);
                a->command = TAKE_PTR(cmd);
        }
        return 0;
}

static int parse_agents(ConYamlReader *c, const yaml_node_t *seq, ConConfig *cfg, AgentNodes **ret_nodes,
                        size_t *ret_first) {
        yaml_node_t *item;
        int r;

        if (!seq || con_yaml_node_is_null(seq) || (seq->type == YAML_SEQUENCE_NODE && con_yaml_sequence_length(seq) == 0))
                return con_yaml_fail(c, seq, "agents", "the list is empty; at least one agent is required");
        if (seq->type != YAML_SEQUENCE_NODE)
                return con_yaml_fail(c, seq, "agents", "expected a list of agents (- name: ...), got %s",
                            con_yaml_node_kind_to_string(seq));

        /* Appended: the drop-ins add their agents to those of con.yaml. */
        size_t n = con_yaml_sequence_length(seq), first = cfg->n_agents;
        if (n > CON_CONFIG_AGENTS_MAX || first + n > CON_CONFIG_AGENTS_MAX)
                return con_yaml_fail(c, seq, "agents", "too many agents (%zu with the other files); at most %u",
                            first + n, CON_CONFIG_AGENTS_MAX);
        ConAgent *agents = reallocarray(cfg->agents, first + n, sizeof(ConAgent));
        if (!agents)
                return -ENOMEM;
        cfg->agents = agents;
        *ret_first = first;
        *ret_nodes = calloc(n, sizeof(AgentNodes));
        if (!*ret_nodes)
                return -ENOMEM;

        size_t k = 0;
        CON_YAML_SEQUENCE_FOREACH(c->doc, seq, item) {
                size_t i = cfg->n_agents;
                _cleanup_free_ char *path = con_yaml_path_index("agents", k);
                if (!path)
                        return -ENOMEM;

                r = parse_agent(c, item, path, &cfg->agents[i], &(*ret_nodes)[k]);
                cfg->n_agents++; /* count it even on failure so it gets freed */
                if (r < 0)
                        return r;
                if (c->file && !(cfg->agents[i].file = strdup(c->file)))
                        return -ENOMEM;

                for (size_t j = 0; j < i; j++)
                        if (streq(cfg->agents[j].name, cfg->agents[i].name)) {
                                _cleanup_free_ char *npath = con_yaml_path_child(path, "name");
                                if (!npath)
                                        return -ENOMEM;
                                if (j >= first)
                                        return con_yaml_fail(c, (*ret_nodes)[k].name, npath,
                                                    "'%s' is already used by agents[%zu] (line %u); agent names must be unique",
                                                    cfg->agents[i].name, j - first, cfg->agents[j].line);
                                return con_yaml_fail(c, (*ret_nodes)[k].name, npath,
                                            "'%s' is already defined in %s:%u; an agent is defined once, in con.yaml "
                                            "or in one drop-in", cfg->agents[i].name,
                                            cfg->agents[j].file ?: "con.yaml", cfg->agents[j].line);
                        }
                k++;
        }
        return 0;
}

/* ---- policy (docs/POLICY.md) ---- */

#define POLICY_WHO_HINT "use an agent name, group:NAME, user:NAME (a Linux group or user name: 1 to 31 " \
        "characters from a-z, 0-9, '_' and '-', starting with a letter or '_'), root, or AGENT@HOST or " \
        "user:NAME@HOST for a principal of another host of the mesh"
#define POLICY_GRANTS_MAX 256

static int parse_policy_who(ConYamlReader *c, const yaml_node_t *map, const yaml_node_t *who, const char *path,
                            const ConConfig *cfg, ConPolicyGrantConfig *g) {
        ConPrincipalKind kind;
        const char *name;
        int r;

        if (!who || con_yaml_node_is_null(who))
                return con_yaml_fail(c, who ?: map, path, "missing; " POLICY_WHO_HINT);
        r = con_yaml_get_string(c, who, path, &g->who);
        if (r < 0)
                return r;
        _cleanup_free_ char *q = con_yaml_quote(who);
        if (!q)
                return -ENOMEM;
        if (con_principal_parse(g->who, &kind, &name) < 0)
                return con_yaml_fail(c, who, path, "%s is not a valid principal; " POLICY_WHO_HINT, q);
        if (kind == CON_PRINCIPAL_AGENT && !con_config_find_agent(cfg, name))
                return con_yaml_fail(c, who, path, "%s is not an agent in agents:; " POLICY_WHO_HINT, q);
        return 0;
}

/* Returns the number of per-agent verbs (> 0), or 0 when all are commission/contracts-admin. */
static int parse_policy_may(ConYamlReader *c, const yaml_node_t *map, const yaml_node_t *may, const char *path,
                            ConPolicyGrantConfig *g) {
        const yaml_node_t *first_global = NULL;
        yaml_node_t *item;
        size_t i = 0, first_global_i = 0;
        int per_agent = 0, r;

        if (!may || con_yaml_node_is_null(may) ||
            (may->type == YAML_SEQUENCE_NODE && con_yaml_sequence_length(may) == 0))
                return con_yaml_fail(c, may ?: map, path, "missing or empty; list what the principal may do: "
                            CON_POLICY_VERBS_ALLOWED);
        r = con_yaml_get_strv(c, may, path, false, _CON_POLICY_VERB_MAX * 2, &g->may);
        if (r < 0)
                return r;
        CON_YAML_SEQUENCE_FOREACH(c->doc, may, item) {
                _cleanup_free_ char *ipath = con_yaml_path_index(path, i), *q = con_yaml_quote(item);
                if (!ipath || !q)
                        return -ENOMEM;
                ConPolicyVerb v = con_policy_verb_from_string(g->may[i]);
                if (v < 0)
                        return con_yaml_fail(c, item, ipath, "%s is not a verb; use " CON_POLICY_VERBS_ALLOWED, q);
                for (size_t j = 0; j < i; j++)
                        if (streq(g->may[j], g->may[i]))
                                return con_yaml_fail(c, item, ipath, "%s is listed twice", q);
                if (con_policy_verb_per_agent(v))
                        per_agent++;
                else if (!first_global) {
                        first_global = item;
                        first_global_i = i;
                }
                i++;
        }
        if (per_agent > 0 && first_global) {
                _cleanup_free_ char *ipath = con_yaml_path_index(path, first_global_i);
                return ipath ? con_yaml_fail(c, first_global, ipath,
                                    "'%s' is not about one agent and cannot share a grant with per-agent verbs; "
                                    "give it a grant of its own, without to:", g->may[first_global_i]) : -ENOMEM;
        }
        return per_agent;
}

static int parse_policy_to(ConYamlReader *c, const yaml_node_t *map, const yaml_node_t *to, const char *path,
                           bool per_agent, const ConConfig *cfg, ConPolicyGrantConfig *g) {
        yaml_node_t *item;
        size_t i = 0;
        int r;

        if (!per_agent) {
                if (to && !con_yaml_node_is_null(to))
                        return con_yaml_fail(c, to, path, "commission and contracts-admin are not about one agent; remove to:");
                return 0;
        }
        if (!to || con_yaml_node_is_null(to) ||
            (to->type == YAML_SEQUENCE_NODE && con_yaml_sequence_length(to) == 0))
                return con_yaml_fail(c, to ?: map, path,
                            "missing or empty; list the agents the grant applies to, or \"*\" for every agent");
        r = con_yaml_get_strv(c, to, path, false, 0, &g->to);
        if (r < 0)
                return r;
        CON_YAML_SEQUENCE_FOREACH(c->doc, to, item) {
                _cleanup_free_ char *ipath = con_yaml_path_index(path, i), *q = con_yaml_quote(item);
                if (!ipath || !q)
                        return -ENOMEM;
                if (!streq(g->to[i], "*") && !con_config_find_agent(cfg, g->to[i]))
                        return con_yaml_fail(c, item, ipath,
                                    "%s is not an agent in agents:; use agent names, or \"*\" for every agent", q);
                for (size_t j = 0; j < i; j++)
                        if (streq(g->to[j], g->to[i]))
                                return con_yaml_fail(c, item, ipath, "%s is listed twice", q);
                i++;
        }
        return 0;
}

static int parse_policy_grant(ConYamlReader *c, const yaml_node_t *map, const char *path, const ConConfig *cfg,
                              ConPolicyGrantConfig *g) {
        yaml_node_t *k, *v, *who = NULL, *may = NULL, *to = NULL;
        int r;

        r = con_yaml_expect_mapping(c, map, path, "who, may and to");
        if (r < 0)
                return r;
        g->line = con_yaml_node_line(map);
        g->column = con_yaml_node_column(map);
        CON_YAML_MAPPING_FOREACH(c->doc, map, k, v) {
                const char *key = con_yaml_scalar(k);
                if (streq(key, "who"))
                        who = v;
                else if (streq(key, "may"))
                        may = v;
                else if (streq(key, "to"))
                        to = v;
                else {
                        _cleanup_free_ char *kpath = con_yaml_path_key(path, k);
                        return kpath ? con_yaml_unknown_key(c, k, kpath, "who, may and to") : -ENOMEM;
                }
        }
        _cleanup_free_ char *wpath = con_yaml_path_child(path, "who"), *mpath = con_yaml_path_child(path, "may"),
                            *tpath = con_yaml_path_child(path, "to");
        if (!wpath || !mpath || !tpath)
                return -ENOMEM;
        r = parse_policy_who(c, map, who, wpath, cfg, g);
        if (r < 0)
                return r;
        r = parse_policy_may(c, map, may, mpath, g);
        if (r < 0)
                return r;
        return parse_policy_to(c, map, to, tpath, r > 0, cfg, g);
}

/* After the agents: who and to name agents. */
static int parse_policy(ConYamlReader *c, const yaml_node_t *map, ConConfig *cfg, bool dropin) {
        yaml_node_t *k, *v, *grants = NULL;
        int r;

        if (con_yaml_node_is_null(map))
                return 0;
        r = con_yaml_expect_mapping(c, map, "policy", dropin ? "grants" : "defaults and grants");
        if (r < 0)
                return r;
        CON_YAML_MAPPING_FOREACH(c->doc, map, k, v) {
                const char *key = con_yaml_scalar(k);
                _cleanup_free_ char *kpath = con_yaml_path_key("policy", k);
                if (!kpath)
                        return -ENOMEM;
                if (dropin && streq(key, "defaults"))
                        r = con_yaml_fail(c, k, kpath, "only allowed in con.yaml; a drop-in adds grants (policy.grants)");
                else if (streq(key, "defaults")) {
                        bool b = true;
                        r = con_yaml_get_bool(c, v, kpath, &b);
                        cfg->policy_no_defaults = !b;
                } else if (streq(key, "grants")) {
                        grants = v;
                        r = 0;
                } else
                        r = con_yaml_unknown_key(c, k, kpath, "defaults and grants");
                if (r < 0)
                        return r;
        }
        if (!grants || con_yaml_node_is_null(grants))
                return 0;
        if (grants->type != YAML_SEQUENCE_NODE)
                return con_yaml_fail(c, grants, "policy.grants",
                            "expected a list of grants ({who: ..., may: [...], to: [...]}), got %s",
                            con_yaml_node_kind_to_string(grants));
        size_t n = con_yaml_sequence_length(grants), first = cfg->n_policy_grants, i = 0;
        if (n > POLICY_GRANTS_MAX)
                return con_yaml_fail(c, grants, "policy.grants", "the list has %zu entries; at most %u are allowed", n,
                            POLICY_GRANTS_MAX);
        if (n == 0)
                return 0;
        ConPolicyGrantConfig *g = reallocarray(cfg->policy_grants, first + n, sizeof(ConPolicyGrantConfig));
        if (!g)
                return -ENOMEM;
        cfg->policy_grants = g;
        memset(g + first, 0, n * sizeof(ConPolicyGrantConfig));
        yaml_node_t *item;
        CON_YAML_SEQUENCE_FOREACH(c->doc, grants, item) {
                _cleanup_free_ char *path = con_yaml_path_index("policy.grants", i++);
                if (!path)
                        return -ENOMEM;
                /* Counted first, so a half-parsed entry is freed. */
                r = parse_policy_grant(c, item, path, cfg, &cfg->policy_grants[cfg->n_policy_grants++]);
                if (r < 0)
                        return r;
        }
        return 0;
}

static void agent_nodes_free(AgentNodes *an, size_t n) {
        if (!an)
                return;
        for (size_t i = 0; i < n; i++)
                strv_free(an[i].cli_args_v);
        free(an);
}

ConConfig *con_config_free(ConConfig *c) {
        if (!c)
                return NULL;
        free(c->path);
        free(c->system_name);
        free(c->submitters_group);
        runtime_done(&c->base);
        for (size_t i = 0; i < _CON_TIER_MAX; i++)
                runtime_done(&c->tiers[i]);
        free(c->models.generic_key_provider);
        for (size_t i = 0; i < c->models.n_agents; i++)
                free(c->models.agents[i].agent);
        free(c->models.agents);
        free(c->dashboard.bind);
        for (size_t i = 0; i < c->egress.n_services; i++) {
                ConEgressService *sv = &c->egress.services[i];
                free(sv->name);
                free(sv->base_url);
                free(sv->header);
                free(sv->prefix);
                free(sv->secret);
                strv_free(sv->agents);
        }
        free(c->egress.services);
        free(c->mesh.host);
        strv_free(c->mesh.servers);
        free(c->mesh.credentials);
        free(c->mesh.ca);
        free(c->mesh.cert);
        free(c->mesh.key);
        for (size_t i = 0; i < c->n_agents; i++)
                agent_done(&c->agents[i]);
        free(c->agents);
        for (size_t i = 0; i < c->n_policy_grants; i++) {
                free(c->policy_grants[i].who);
                strv_free(c->policy_grants[i].may);
                strv_free(c->policy_grants[i].to);
        }
        free(c->policy_grants);
        free(c);
        return NULL;
}

static const char *ip_address_check(const char *s) {
        unsigned char buf[sizeof(struct in6_addr)];
        return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1 ? NULL :
                "is not allowed; use an IPv4 or IPv6 address (127.0.0.1, ::1, 0.0.0.0, ...)";
}

static const ConYamlField dashboard_fields[] = {
        { "enabled", .type = CON_YAML_BOOL, .offset = offsetof(ConDashboardConfig, enabled) },
        { "bind", .type = CON_YAML_STRING, .offset = offsetof(ConDashboardConfig, bind), .check = ip_address_check },
        { "port", .type = CON_YAML_UINT, .offset = offsetof(ConDashboardConfig, port), .min = 1, .max = 65535 },
        {}
};

bool con_config_agent_uses_egress(const ConConfig *c, const ConAgent *a) {
        if (!c || !a || a->rt.network.mode == CON_NETWORK_NONE)
                return false;
        if (a->rt.network.mode == CON_NETWORK_ALLOW)
                return true;
        for (size_t i = 0; i < c->egress.n_services; i++)
                if (strv_contains(c->egress.services[i].agents, a->name))
                        return true;
        return false;
}

bool con_config_needs_egress(const ConConfig *c) {
        for (size_t i = 0; c && i < c->n_agents; i++)
                if (con_config_agent_uses_egress(c, &c->agents[i]))
                        return true;
        return false;
}

bool con_config_agent_proxy(const ConConfig *c, const ConAgent *a, char *buf, size_t size) {
        if (!con_config_agent_uses_egress(c, a))
                return false;
        int n = snprintf(buf, size, "http://127.0.0.1:%u", c->egress.port);
        return n > 0 && (size_t) n < size;
}

int con_config_agent_proxy_setenv(const ConConfig *c, const ConAgent *a) {
        char url[64];
        if (!con_config_agent_proxy(c, a, url, sizeof url))
                return 0;
        static const char * const vars[] = { "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY" };
        for (size_t i = 0; i < ELEMENTSOF(vars); i++)
                if (setenv(vars[i], url, 1) < 0)
                        return -errno;
        return 0;
}

static const char *service_url_check(const char *s) {
        if (strncmp(s, "https://", 8) != 0 && strncmp(s, "http://", 7) != 0)
                return "is not an http:// or https:// URL; use e.g. https://api.github.com";
        const char *host = s + (s[4] == 's' ? 8 : 7);
        if (!*host || *host == '/' || strpbrk(s, " \t\r\n\"\\?#@"))
                return "is not a plain URL (scheme, host, optional port and path; no spaces, user, query or fragment)";
        if (s[strlen(s) - 1] == '/')
                return "ends with '/'; write the base URL without it";
        return NULL;
}

static const char *header_name_check(const char *s) {
        for (const char *p = s; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-'))
                        return "is not a header name; use letters, digits and '-' (Authorization, X-Api-Key)";
        return *s ? NULL : "is empty; use a header name such as Authorization";
}

static const char *prefix_check(const char *s) {
        for (const char *p = s; *p; p++)
                if ((unsigned char) *p < 0x20 || *p == 0x7f)
                        return "has a control character; use e.g. \"Bearer \"";
        return NULL;
}

static const char *env_name_check(const char *s) {
        if (!*s || (*s >= '0' && *s <= '9'))
                return "is not a variable name; use e.g. GITHUB_TOKEN";
        for (const char *p = s; *p; p++)
                if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
                        return "is not a variable name; use e.g. GITHUB_TOKEN";
        return NULL;
}

static const ConYamlField egress_service_fields[] = {
        { "base_url", .type = CON_YAML_STRING, .offset = offsetof(ConEgressService, base_url), .flags = CON_YAML_REQUIRED,
          .check = service_url_check, .hint = "the service's base URL, e.g. https://api.github.com" },
        { "header", .type = CON_YAML_STRING, .offset = offsetof(ConEgressService, header), .flags = CON_YAML_REQUIRED,
          .check = header_name_check, .hint = "the header that carries the secret, e.g. Authorization" },
        { "prefix", .type = CON_YAML_STRING, .offset = offsetof(ConEgressService, prefix), .check = prefix_check },
        { "secret", .type = CON_YAML_STRING, .offset = offsetof(ConEgressService, secret), .flags = CON_YAML_REQUIRED,
          .check = env_name_check, .hint = "the variable in /etc/con/env that holds it, e.g. GITHUB_TOKEN" },
        { "agents", .type = CON_YAML_STRV, .offset = offsetof(ConEgressService, agents), .flags = CON_YAML_IDENTIFIERS,
          .max = 1024 },
        {}
};

static int parse_egress_services(ConYamlReader *c, const yaml_node_t *map, const char *path, void *dest,
                                 void *userdata _unused_) {
        ConEgressConfig *e = dest;
        yaml_node_t *k, *v;
        int r;

        if (con_yaml_node_is_null(map))
                return 0;
        r = con_yaml_expect_mapping(c, map, path, "service names");
        if (r < 0)
                return r;
        CON_YAML_MAPPING_FOREACH(c->doc, map, k, v) {
                const char *name = con_yaml_scalar(k);
                _cleanup_free_ char *kpath = con_yaml_path_key(path, k);
                if (!kpath)
                        return -ENOMEM;
                bool ok = name && *name && strlen(name) <= 64;
                for (const char *p = name; ok && *p; p++)
                        ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_';
                if (!ok)
                        return con_yaml_fail(c, k, kpath, "not a valid service name; use lower-case letters, digits, '-' and '_' (it is the first part of the path)");
                ConEgressService *n = reallocarray(e->services, e->n_services + 1, sizeof(*n));
                if (!n)
                        return -ENOMEM;
                e->services = n;
                ConEgressService *sv = &e->services[e->n_services];
                *sv = (ConEgressService) { .name = strdup(name) };
                if (!sv->name)
                        return -ENOMEM;
                e->n_services++;
                r = con_yaml_read_mapping(c, v, kpath, egress_service_fields, sv, NULL, NULL);
                if (r < 0)
                        return r;
        }
        return 0;
}

const ConEgressService *con_config_egress_service(const ConConfig *c, const char *agent, const char *name) {
        for (size_t i = 0; c && i < c->egress.n_services; i++) {
                const ConEgressService *s = &c->egress.services[i];
                if (streq(s->name, name) && agent && strv_contains(s->agents, agent))
                        return s;
        }
        return NULL;
}

static const ConYamlField egress_fields[] = {
        { "port", .type = CON_YAML_UINT, .offset = offsetof(ConEgressConfig, port), .min = 1, .max = 65535 },
        { "services", .type = CON_YAML_CUSTOM, .offset = 0, .parse = parse_egress_services },
        {}
};

static const char *mesh_host_check(const char *s) {
        return con_mesh_host_valid(s) ? NULL :
                "is not a valid host name; use 1 to 63 characters from a-z, 0-9 and -, starting with a letter, "
                "not ending with -";
}

static const char *absolute_file_check(const char *s) {
        return s[0] == '/' && !strstr(s, "/../") && !endswith(s, "/..") ? NULL :
                "is not an absolute path; write the full path of the file, e.g. /etc/con/mesh.creds";
}

/* A NATS server URL: nats://HOST:PORT or tls://HOST:PORT (IPv6 in brackets); no user or password
 * in it (those belong in the credentials file), nothing nats.c would split (commas, spaces). */
static const char *mesh_server_check(const char *s) {
        const char *h = startswith(s, "nats://") ?: startswith(s, "tls://");
        if (!h)
                return "is not a NATS server URL; use nats://HOST:PORT or tls://HOST:PORT";
        if (!*h || strpbrk(h, "@/, \t") || h[strcspn(h, "\r\n")] || strlen(s) > 255)
                return "is not a NATS server URL; use nats://HOST:PORT or tls://HOST:PORT (no user, password or "
                       "path: credentials go in mesh.credentials)";
        const char *colon = strrchr(h, ':');
        if (!colon || colon == h || (colon[-1] == ':' && h[0] != '['))
                return "has no port; use tls://HOST:PORT, e.g. tls://10.0.0.1:4222";
        char *end = NULL;
        errno = 0;
        unsigned long port = strtoul(colon + 1, &end, 10);
        if (!colon[1] || *end || errno || port < 1 || port > 65535)
                return "has no valid port; use tls://HOST:PORT with a port from 1 to 65535";
        return NULL;
}

static int parse_mesh_servers(ConYamlReader *y, const yaml_node_t *v, const char *path, void *dest,
                              void *userdata _unused_) {
        char ***servers = dest;
        yaml_node_t *it;
        size_t i = 0;
        int r;

        r = con_yaml_get_strv(y, v, path, false, CON_MESH_SERVERS_MAX, servers);
        if (r < 0 || !v || v->type != YAML_SEQUENCE_NODE)
                return r;
        CON_YAML_SEQUENCE_FOREACH(y->doc, v, it) {
                const char *problem = mesh_server_check((*servers)[i]);
                if (problem) {
                        _cleanup_free_ char *ipath = con_yaml_path_index(path, i), *q = con_yaml_quote(it);
                        return ipath && q ? con_yaml_fail(y, it, ipath, "%s %s", q, problem) : -ENOMEM;
                }
                i++;
        }
        return 0;
}

static const ConYamlField mesh_fields[] = {
        { "host", .type = CON_YAML_STRING, .offset = offsetof(ConMeshConfig, host), .check = mesh_host_check,
          .flags = CON_YAML_REQUIRED, .hint = "this host's name in the mesh, e.g. host: host-a" },
        { "servers", .type = CON_YAML_CUSTOM, .offset = offsetof(ConMeshConfig, servers), .parse = parse_mesh_servers },
        { "credentials", .type = CON_YAML_STRING, .offset = offsetof(ConMeshConfig, credentials),
          .check = absolute_file_check },
        { "retention", .type = CON_YAML_DURATION, .offset = offsetof(ConMeshConfig, retention_usec),
          .max = CON_MESH_RETENTION_MAX_USEC },
        { "replicas", .type = CON_YAML_UINT, .offset = offsetof(ConMeshConfig, replicas), .min = 1,
          .max = CON_MESH_REPLICAS_MAX },
        { "ca", .type = CON_YAML_STRING, .offset = offsetof(ConMeshConfig, ca), .check = absolute_file_check },
        { "cert", .type = CON_YAML_STRING, .offset = offsetof(ConMeshConfig, cert), .check = absolute_file_check },
        { "key", .type = CON_YAML_STRING, .offset = offsetof(ConMeshConfig, key), .check = absolute_file_check },
        { "insecure", .type = CON_YAML_BOOL, .offset = offsetof(ConMeshConfig, insecure) },
        { "sent_retention", .type = CON_YAML_DURATION, .offset = offsetof(ConMeshConfig, sent_retention_usec) },
        { "sent_max", .type = CON_YAML_UINT, .offset = offsetof(ConMeshConfig, sent_max), .min = 1,
          .max = CON_MESH_SENT_MAX_MAX },
        { "stream_max_bytes", .type = CON_YAML_SIZE, .offset = offsetof(ConMeshConfig, stream_max_bytes),
          .max = CON_MESH_STREAM_MAX_BYTES_MAX },
        { "stream_max_per_host", .type = CON_YAML_UINT, .offset = offsetof(ConMeshConfig, stream_max_per_host),
          .min = 1, .max = CON_MESH_STREAM_MAX_PER_HOST_MAX },
        { "result_wait", .type = CON_YAML_DURATION, .offset = offsetof(ConMeshConfig, result_wait_usec) },
        {}
};

static int mesh_default_file(char **p, const char *name) {
        if (*p)
                return 0;
        return asprintf(p, "%s/%s", CON_MESH_TLS_DIR, name) < 0 ? -ENOMEM : 0;
}

static int parse_mesh(ConYamlReader *c, const yaml_node_t *v, const char *path, ConMeshConfig *m) {
        if (!v || v->type != YAML_MAPPING_NODE)
                return con_yaml_fail(c, v, path, "expected a mapping with host: and servers:, got %s",
                                     con_yaml_node_kind_to_string(v));
        int r = con_yaml_read_mapping(c, v, path, mesh_fields, m, NULL, NULL);
        if (r < 0)
                return r;
        if (m->stream_max_bytes < CON_MESH_STREAM_MAX_BYTES_MIN) {
                const yaml_node_t *at = con_yaml_mapping_get(c->doc, v, "stream_max_bytes", NULL);
                _cleanup_free_ char *kpath = con_yaml_path_child(path, "stream_max_bytes");
                return kpath ? con_yaml_fail(c, at ?: v, kpath, "%" PRIu64 " bytes is too small; at least %llu (4MiB: "
                                             "one task of the largest size fits)", m->stream_max_bytes,
                                             CON_MESH_STREAM_MAX_BYTES_MIN) : -ENOMEM;
        }
        if (strv_length(m->servers) == 0)
                return con_yaml_fail(c, v, path, "servers: missing; at least one NATS server is needed, "
                                     "e.g. servers: [tls://10.0.0.1:4222]");
        /* TLS is on by default: a plaintext server only with an explicit insecure: true. */
        if (!m->insecure) {
                const yaml_node_t *sv = con_yaml_mapping_get(c->doc, v, "servers", NULL);
                for (size_t i = 0; m->servers[i]; i++) {
                        if (!startswith(m->servers[i], "nats://"))
                                continue;
                        const yaml_node_t *at = sv && sv->type == YAML_SEQUENCE_NODE ?
                                yaml_document_get_node(c->doc, sv->data.sequence.items.start[i]) : v;
                        _cleanup_free_ char *spath = con_yaml_path_child(path, "servers"),
                                            *ipath = spath ? con_yaml_path_index(spath, i) : NULL;
                        return ipath ? con_yaml_fail(c, at, ipath, "'%s' is plaintext; the mesh uses TLS: write "
                                                     "tls://%s (with this host's certificate, which con bootstrap makes), or "
                                                     "set mesh.insecure: true to send tasks unencrypted and "
                                                     "unauthenticated", m->servers[i],
                                                     m->servers[i] + strlen("nats://")) : -ENOMEM;
                }
        }
        if (!m->insecure || m->ca || m->cert || m->key) {
                if (mesh_default_file(&m->ca, "ca.crt") < 0 || mesh_default_file(&m->cert, "host.crt") < 0 ||
                    mesh_default_file(&m->key, "host.key") < 0)
                        return -ENOMEM;
        }
        m->enabled = true;
        return 0;
}

/* The agents of one file, parsed, resolved against base: and appended to cfg->agents. */
static int parse_file_agents(ConYamlReader *c, const yaml_node_t *agents, ConConfig *cfg) {
        AgentNodes *nodes = NULL;
        size_t first = cfg->n_agents;
        int r;

        r = parse_agents(c, agents, cfg, &nodes, &first);
        for (size_t i = first; r >= 0 && i < cfg->n_agents; i++) {
                _cleanup_free_ char *path = con_yaml_path_index("agents", i - first);
                r = path ? finish_agent(c, cfg, path, &cfg->agents[i], &nodes[i - first]) : -ENOMEM;
        }
        agent_nodes_free(nodes, cfg->n_agents - first);
        return r;
}

/* con.yaml: everything but the policy, which is read once the drop-ins' agents are known too. */
static int parse_document(ConYamlReader *c, ConConfig *cfg, const yaml_node_t **ret_policy) {
        ConRuntimeSettings legacy[_CON_TIER_MAX] = {};
        yaml_node_t *k, *v, *agents = NULL;
        int r;

        yaml_node_t *root = yaml_document_get_root_node(c->doc);
        if (!root || root->type != YAML_MAPPING_NODE)
                return con_yaml_fail(c, root, NULL,
                            "expected a mapping with system:, base:, contracts: and agents: at the top level, got %s",
                            con_yaml_node_kind_to_string(root));
        r = con_yaml_check_mapping(c, root, NULL);
        if (r < 0)
                return r;

        CON_YAML_MAPPING_FOREACH(c->doc, root, k, v) {
                const char *key = con_yaml_scalar(k);
                _cleanup_free_ char *path = con_yaml_path_key(NULL, k);
                if (!path)
                        return -ENOMEM;

                if (streq(key, "system")) {
                        r = con_yaml_read_mapping(c, v, path, system_fields, cfg, NULL, NULL);
                        if (r >= 0)
                                r = check_agent_uid_range(c, v, cfg);
                } else if (streq(key, "base"))
                        r = parse_runtime_mapping(c, v, "base", &cfg->base, cfg->tiers);
                else if (streq(key, "defaults"))
                        r = parse_runtime_mapping(c, v, "defaults", NULL, legacy);
                else if (streq(key, "contracts"))
                        r = con_yaml_read_mapping(c, v, path, contracts_fields, &cfg->contracts, NULL, NULL);
                else if (streq(key, "models"))
                        r = con_yaml_read_mapping(c, v, path, models_fields, &cfg->models, NULL, NULL);
                else if (streq(key, "dashboard"))
                        r = con_yaml_read_mapping(c, v, path, dashboard_fields, &cfg->dashboard, NULL, NULL);
                else if (streq(key, "egress"))
                        r = con_yaml_read_mapping(c, v, path, egress_fields, &cfg->egress, NULL, NULL);
                else if (streq(key, "mesh"))
                        r = parse_mesh(c, v, path, &cfg->mesh);
                else if (streq(key, "policy")) {
                        *ret_policy = v;
                        r = 0;
                } else if (streq(key, "agents")) {
                        agents = v;
                        r = 0;
                } else
                        r = con_yaml_unknown_key(c, k, path, "system, base, defaults (deprecated), contracts, models, dashboard, egress, mesh, policy and agents");
                if (r < 0)
                        break;
        }

        /* Legacy defaults.<tier> fills base.<tier> only where that tier says nothing, as the original does. */
        for (size_t t = 0; t < _CON_TIER_MAX; t++) {
                if (r >= 0 && runtime_empty(&cfg->tiers[t])) {
                        cfg->tiers[t] = legacy[t];
                        legacy[t] = (ConRuntimeSettings) {};
                }
                runtime_done(&legacy[t]);
        }
        if (r < 0)
                return r;

        if (!agents)
                return con_yaml_fail(c, root, "agents", "missing; at least one agent is required");
        return parse_file_agents(c, agents, cfg);
}

/* A drop-in (con.yaml.d/NAME.yaml): agents: and policy.grants only; everything else is con.yaml's. */
static int parse_dropin(ConYamlReader *c, ConConfig *cfg, const yaml_node_t **ret_policy) {
        yaml_node_t *k, *v, *agents = NULL;
        int r;

        yaml_node_t *root = yaml_document_get_root_node(c->doc);
        if (!root || root->type != YAML_MAPPING_NODE)
                return con_yaml_fail(c, root, NULL, "expected a mapping with agents: (and policy:) at the top level, got %s",
                            con_yaml_node_kind_to_string(root));
        r = con_yaml_check_mapping(c, root, NULL);
        if (r < 0)
                return r;
        CON_YAML_MAPPING_FOREACH(c->doc, root, k, v) {
                const char *key = con_yaml_scalar(k);
                _cleanup_free_ char *path = con_yaml_path_key(NULL, k);
                if (!path)
                        return -ENOMEM;
                if (streq(key, "agents"))
                        agents = v;
                else if (streq(key, "policy"))
                        *ret_policy = v;
                else
                        return con_yaml_unknown_key(c, k, path, "agents and policy (a drop-in adds agents and grants; "
                                    "system, base, contracts, models and dashboard belong in con.yaml)");
        }
        if (!agents)
                return *ret_policy ? 0 : con_yaml_fail(c, root, "agents", "missing; a drop-in adds agents (and grants)");
        return parse_file_agents(c, agents, cfg);
}

typedef struct ConfigFile {
        char *path;
        char *text;
        size_t len;
        ConYamlReader reader;
        const yaml_node_t *policy;
} ConfigFile;

static void config_files_free(ConfigFile *f, size_t n) {
        for (size_t i = 0; i < n; i++) {
                con_yaml_reader_done(&f[i].reader);
                free(f[i].path);
                free(f[i].text);
        }
        free(f);
}

static ConConfig *config_new(const char *filename) {
        _cleanup_(con_config_freep) ConConfig *cfg = calloc(1, sizeof(*cfg));
        if (!cfg)
                return NULL;
        *cfg = (ConConfig) {
                .system_name = strdup(DEFAULT_SYSTEM_NAME),
                .submitters_group = strdup(DEFAULT_SUBMITTERS_GROUP),
                .task_max_size = DEFAULT_TASK_MAX_SIZE,
                .max_queued_per_sender = CON_MAX_QUEUED_PER_SENDER_DEFAULT,
                .max_delegation_hops = CON_MAX_DELEGATION_HOPS_DEFAULT,
                .result_retention_usec = CON_RESULT_RETENTION_DEFAULT_USEC,
                .result_max = CON_RESULT_MAX_DEFAULT,
                .agent_uid_min = CON_AGENT_UID_MIN_DEFAULT,
                .agent_uid_max = CON_AGENT_UID_MAX_DEFAULT,
                .contracts = {
                        .disk_min_free_pct = 15,
                        .mem_min_free_pct = 10,
                        .max_load_factor = 2.0,
                        .max_session_min = 30,
                        .healthcheck_interval_usec = 60 * USEC_PER_SEC,
                },
                .models = {
                        .queue_max = 64,
                        .timeout_usec = 120 * USEC_PER_SEC,
                },
                .mesh = { .retention_usec = CON_MESH_RETENTION_DEFAULT_USEC, .replicas = 1,
                          .sent_retention_usec = CON_MESH_SENT_RETENTION_DEFAULT_USEC,
                          .sent_max = CON_MESH_SENT_MAX_DEFAULT,
                          .stream_max_bytes = CON_MESH_STREAM_MAX_BYTES_DEFAULT,
                          .stream_max_per_host = CON_MESH_STREAM_MAX_PER_HOST_DEFAULT,
                          .result_wait_usec = CON_MESH_RESULT_WAIT_DEFAULT_USEC },
                .dashboard = {
                        .bind = strdup(CON_DASHBOARD_BIND_DEFAULT),
                        .port = CON_DASHBOARD_PORT_DEFAULT,
                },
                .egress = {
                        .port = CON_EGRESS_PORT_DEFAULT,
                },
        };
        if (!cfg->system_name || !cfg->dashboard.bind || !cfg->submitters_group || (filename && !(cfg->path = strdup(filename))))
                return NULL;
        return TAKE_PTR(cfg);
}

/* files[0] is con.yaml, the others drop-ins, each with its text read. */
static int parse_files(ConfigFile *files, size_t n, ConErrorDetail *reterr, ConConfig **ret) {
        _cleanup_(con_config_freep) ConConfig *cfg = NULL;
        int r;

        if (reterr)
                con_error_detail_done(reterr);
        cfg = config_new(files[0].path);
        if (!cfg)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                ConYamlReader *c = &files[i].reader;
                *c = (ConYamlReader) { .file = files[i].path, .err = reterr };
                r = con_yaml_open(c, files[i].text, files[i].len, i == 0 ?
                                  "the file is empty (or only comments); it needs at least an agents: list" :
                                  "the drop-in is empty (or only comments); it needs an agents: list");
                if (r == -ENODATA)
                        return -EINVAL;
                if (r < 0)
                        return r;
                r = i == 0 ? parse_document(c, cfg, &files[i].policy) : parse_dropin(c, cfg, &files[i].policy);
                if (r < 0)
                        return r;
        }
        /* The policy last: its grants name agents of any file. */
        for (size_t i = 0; i < n; i++)
                if (files[i].policy) {
                        r = parse_policy(&files[i].reader, files[i].policy, cfg, i > 0);
                        if (r < 0)
                                return r;
                }
        for (size_t i = 0; i < cfg->models.n_agents; i++)
                if (!con_config_find_agent(cfg, cfg->models.agents[i].agent)) {
                        ConYamlReader *c = &files[0].reader;
                        _cleanup_free_ char *p = con_yaml_path_child("models.agents", cfg->models.agents[i].agent);
                        return p ? con_yaml_fail(c, yaml_document_get_root_node(c->doc), p,
                                                 "no agent of that name is configured in agents:") : -ENOMEM;
                }
        *ret = TAKE_PTR(cfg);
        return 0;
}

int con_config_parse(const char *text, size_t len, const char *filename, ConConfig **ret,
                     ConErrorDetail *reterr) {
        _cleanup_free_ ConfigFile *f = calloc(1, sizeof(ConfigFile));
        int r;

        if (!f)
                return -ENOMEM;
        /* Borrowed: not freed by config_files_free(), so done by hand here. */
        f->path = (char *) filename;
        f->text = (char *) text;
        f->len = len;
        r = parse_files(f, 1, reterr, ret);
        con_yaml_reader_done(&f->reader);
        return r;
}

static int read_config_file(int dir_fd, const char *path, const char *name, char **ret, size_t *ret_len,
                            ConErrorDetail *reterr) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        int r;

        /* In a drop-in folder: no symlink is followed (the folder is root's, its files must be too). */
        fd = dir_fd >= 0 ? openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW)
                         : open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                r = negative_errno();
                if (r == -ELOOP && dir_fd >= 0)
                        return con_error_detail_set(reterr, path, 0, 0, NULL, "a symbolic link; drop-ins must be regular files");
                return con_error_detail_set(reterr, path, 0, 0, NULL, "cannot open the file: %s", strerror(-r)) == -ENOMEM
                               ? -ENOMEM : r;
        }
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return con_error_detail_set(reterr, path, 0, 0, NULL, "not a regular file");
        if ((uint64_t) st.st_size > CONFIG_FILE_MAX)
                return con_error_detail_set(reterr, path, 0, 0, NULL, "the file is larger than 16 MiB") == -ENOMEM
                               ? -ENOMEM : -EFBIG;

        buf = malloc((size_t) st.st_size + 1);
        if (!buf)
                return -ENOMEM;
        /* Read to the end even if the file grew, up to the limit. */
        ssize_t n = con_read_full(fd, buf, (size_t) st.st_size + 1);
        if (n < 0) {
                r = (int) n;
                return con_error_detail_set(reterr, path, 0, 0, NULL, "cannot read the file: %s", strerror(-r)) == -ENOMEM
                               ? -ENOMEM : r;
        }
        if ((size_t) n > (size_t) st.st_size)
                return con_error_detail_set(reterr, path, 0, 0, NULL, "the file changed while it was read") == -ENOMEM
                               ? -ENOMEM : -EAGAIN;
        *ret = TAKE_PTR(buf);
        *ret_len = (size_t) n;
        return 0;
}

bool con_config_dropin_name_valid(const char *name) {
        size_t n = name ? strlen(name) : 0;
        if (n <= 5 || n > 255 || name[0] == '.' || !endswith(name, ".yaml"))
                return false;
        for (const char *p = name; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr("._-", *p)))
                        return false;
        return true;
}

static int dropin_filter(const struct dirent *de) {
        return con_config_dropin_name_valid(de->d_name);
}

typedef struct ConfigFiles {
        struct dirent **entries;
        int n_entries;
        ConfigFile *files;
        size_t n_files;
} ConfigFiles;

static void config_files_done(ConfigFiles *f) {
        for (int i = 0; i < f->n_entries; i++)
                free(f->entries[i]);
        free(f->entries);
        if (f->files)
                config_files_free(f->files, f->n_files);
}

static int set_text(ConfigFile *f, const char *text, size_t len) {
        f->text = malloc(len + 1);
        if (!f->text)
                return -ENOMEM;
        memcpy(f->text, text, len);
        f->text[len] = 0;
        f->len = len;
        return 0;
}

int con_config_load_full(const ConConfigLoad *l, ConConfig **ret, ConErrorDetail *reterr) {
        _cleanup_(config_files_done) ConfigFiles cf = {};
        _cleanup_free_ char *default_dir = NULL;
        _cleanup_close_ int dfd = -EBADF;
        int r;

        if (reterr)
                con_error_detail_done(reterr);

        const char *dir = l->dropin_dir;
        if (!dir && !l->no_dropins) {
                if (asprintf(&default_dir, "%s.d", l->path) < 0)
                        return -ENOMEM;
                dir = default_dir;
        }
        if (dir && !l->no_dropins) {
                dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (dfd < 0 && errno != ENOENT) {
                        r = negative_errno();
                        return con_error_detail_set(reterr, dir, 0, 0, NULL, "cannot open the drop-in folder: %s",
                                                    strerror(-r)) == -ENOMEM ? -ENOMEM : r;
                }
                if (dfd >= 0) {
                        cf.n_entries = scandirat(dfd, ".", &cf.entries, dropin_filter, alphasort);
                        if (cf.n_entries < 0) {
                                r = negative_errno();
                                cf.n_entries = 0;
                                return con_error_detail_set(reterr, dir, 0, 0, NULL, "cannot list the drop-in folder: %s",
                                                            strerror(-r)) == -ENOMEM ? -ENOMEM : r;
                        }
                }
        }
        if ((size_t) cf.n_entries > CON_CONFIG_DROPINS_MAX)
                return con_error_detail_set(reterr, dir, 0, 0, NULL, "%d drop-ins; at most %u are read", cf.n_entries,
                                            CON_CONFIG_DROPINS_MAX) == -ENOMEM ? -ENOMEM : -E2BIG;

        cf.files = calloc((size_t) cf.n_entries + 2, sizeof(ConfigFile));
        if (!cf.files || !(cf.files[0].path = strdup(l->path)))
                return -ENOMEM;
        cf.n_files = 1;
        r = read_config_file(-EBADF, l->path, NULL, &cf.files[0].text, &cf.files[0].len, reterr);
        if (r < 0)
                return r;
        /* In the order of the names, the extra drop-in (not written yet) in its place among them, so
         * the config is the same as once it is written. */
        bool extra_done = !l->extra_dropin_name;
        for (int i = 0; i <= cf.n_entries; i++) {
                const char *name = i < cf.n_entries ? cf.entries[i]->d_name : NULL;
                if (!extra_done && (!name || strcmp(l->extra_dropin_name, name) <= 0)) {
                        ConfigFile *f = &cf.files[cf.n_files++];
                        if (asprintf(&f->path, "%s/%s", dir ?: ".", l->extra_dropin_name) < 0) {
                                f->path = NULL;
                                return -ENOMEM;
                        }
                        r = set_text(f, l->extra_dropin_text ?: "", l->extra_dropin_text ? l->extra_dropin_len : 0);
                        if (r < 0)
                                return r;
                        extra_done = true;
                }
                if (!name)
                        break;
                if (l->omit_dropin && streq(name, l->omit_dropin))
                        continue;
                if (l->extra_dropin_name && streq(name, l->extra_dropin_name))
                        continue; /* replaced by the text given */
                ConfigFile *f = &cf.files[cf.n_files++];
                if (asprintf(&f->path, "%s/%s", dir, name) < 0) {
                        f->path = NULL;
                        return -ENOMEM;
                }
                r = read_config_file(dfd, f->path, name, &f->text, &f->len, reterr);
                if (r < 0)
                        return r;
        }
        return parse_files(cf.files, cf.n_files, reterr, ret);
}

int con_config_load(const char *path, ConConfig **ret, ConErrorDetail *reterr) {
        return con_config_load_full(&(ConConfigLoad) { .path = path }, ret, reterr);
}

const ConAgent *con_config_find_agent(const ConConfig *c, const char *name) {
        if (!c || !name)
                return NULL;
        for (size_t i = 0; i < c->n_agents; i++)
                if (streq(c->agents[i].name, name))
                        return &c->agents[i];
        return NULL;
}
