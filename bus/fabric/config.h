/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error-detail.h"
#include "network.h"
#include "units.h"

/* The system configuration, /etc/con/con.yaml (configs/<profile>/con.yaml in the tree).
 * YAML port of the Go original's con.toml: same keys, same meaning, same defaults, plus the
 * keys this implementation adds. Unknown keys are errors. Resolution (agent field, else
 * base.<tier>, else base, else built-in fallback) is done while parsing: every ConAgent holds
 * its effective values. Library code: no logging, errors come back in a ConErrorDetail; the YAML rules are yaml-reader.h's. */

typedef enum ConTier {
        CON_TIER_NONE,          /* "" in the original: no tier */
        CON_TIER_OFFICER,
        CON_TIER_OPERATOR,
        CON_TIER_WORKER,
        _CON_TIER_MAX,
        _CON_TIER_INVALID = -22,
} ConTier;

typedef enum ConMode {
        CON_MODE_ON_DEMAND,     /* "on-demand": bus activated, exits when idle */
        CON_MODE_ALWAYS,        /* "always" (the original's "continuous" is accepted as an alias) */
        CON_MODE_CRON,          /* "cron": a scheduled task is submitted on the cron schedule */
        _CON_MODE_MAX,
        _CON_MODE_INVALID = -22,
} ConMode;

/* Runtime settings that can be given at base, base.<tier> and agent level. NULL = unset. */
typedef struct ConRuntimeSettings {
        char *runner;           /* picoclaw | exec | claude | codex */
        char *provider;         /* openrouter | anthropic | openai | claude_code | ollama | compatible */
        char *model;
        char *api_key_env;
        char *base_url;
        unsigned context_window; /* the model's context window in tokens; 0 = unset
                                  * (resolved: CON_CONTEXT_WINDOW_DEFAULT) */
        ConNetwork network;     /* network: (docs/NETWORK.md); mode UNSET = not written (resolved:
                                 * gateway) */
} ConRuntimeSettings;

#define CON_CONTEXT_WINDOW_DEFAULT 128000U
#define CON_CONTEXT_WINDOW_MIN     4096U
#define CON_CONTEXT_WINDOW_MAX     100000000U

typedef struct ConAgent {
        char *name;             /* validated with con_agent_name_check() */
        ConTier tier;
        ConMode mode;
        char *cron;             /* 5-field crontab expression, required for mode cron */
        char *cron_task;        /* text submitted on schedule; default "/status" (a built-in heartbeat) */
        char **roles;           /* identifiers (con_identifier_valid) */
        char **groups;
        char **scopes;
        ConRuntimeSettings rt;  /* effective (resolved) values; runner, provider, api_key_env are never
                                 * NULL after parsing, model and base_url are NULL when unset */
        char **command;         /* exec runner argv (absolute path first); [runner, cli_args...] for the
                                 * deprecated cli_args of claude/codex; NULL otherwise */
        uint64_t exec_timeout_usec; /* exec runner wall clock, default 300 s */
        unsigned max_sessions;  /* default 1 */
        uint64_t idle_exit_usec;/* on-demand agents exit after this idle time, default 30 s */
        char *instructions;     /* inline AGENTS.md layer, may be NULL */
        char *file;             /* the file that defines it: con.yaml or a drop-in (NULL when parsed from
                                 * memory without a name) */
        unsigned line, column;  /* where the entry starts in the file, for later messages */
} ConAgent;

typedef struct ConContractThresholds {
        unsigned disk_min_free_pct;     /* 15 */
        unsigned mem_min_free_pct;      /* 10 */
        double max_load_factor;         /* 2.0 */
        unsigned max_session_min;       /* 30 */
        uint64_t healthcheck_interval_usec; /* 60 s */
} ConContractThresholds;

/* models: the model gateway's limits (docs/CONFIG.md). 0 everywhere means "no limit / unset". */
typedef struct ConModelBudget {
        unsigned tokens_per_task;       /* input + output tokens of one task (request field task_id) */
        unsigned tokens_per_day;        /* input + output tokens per UTC day */
        double cost_per_day;            /* USD per UTC day; enforced only when both prices are known */
        double price_per_mtok_in;       /* USD per million input tokens */
        double price_per_mtok_out;      /* USD per million output tokens */
} ConModelBudget;

typedef struct ConModelAgentBudget {
        char *agent;                    /* a configured agent's name */
        ConModelBudget budget;          /* as written: 0 = take the models: default */
} ConModelAgentBudget;

typedef struct ConModelsConfig {
        unsigned requests_per_minute;   /* host-wide; 0 = unlimited */
        unsigned tokens_per_minute;     /* host-wide; 0 = unlimited */
        unsigned queue_max;             /* calls waiting for the rate limit, default 64 */
        uint64_t timeout_usec;          /* one HTTP attempt, default 120 s */
        char *generic_key_provider;     /* the provider CON_API_KEY (and the tier keys) are for; NULL:
                                         * openrouter */
        ConModelBudget defaults;        /* for every agent */
        ConModelAgentBudget *agents;    /* models.agents.<name> overrides */
        size_t n_agents;
} ConModelsConfig;

/* One entry of the policy: section (docs/POLICY.md), as written; checked by the parser (known
 * principal kinds and agents, known verbs, "to" present exactly when a verb is per agent). The
 * effective policy (defaults + these) is built by con_policy_from_config() in policy.h. */
typedef struct ConPolicyGrantConfig {
        char *who;              /* "concierge", "group:con", "user:alice" or "root" */
        char **may;             /* verbs: task, read-result, cancel, halt, quarantine, commission, contracts-admin */
        char **to;              /* agent names or "*" (every agent); NULL for commission/contracts-admin */
        unsigned line, column;  /* where the entry starts */
} ConPolicyGrantConfig;

/* system.max_queued_per_sender: default and upper bound (the agent's whole queue holds 100,000). */
#define CON_MAX_QUEUED_PER_SENDER_DEFAULT 1000U
#define CON_MAX_QUEUED_PER_SENDER_LIMIT 100000U
/* system.max_delegation_hops: how deep agents may task agents (docs/AGENT.md "Delegation"). */
#define CON_MAX_DELEGATION_HOPS_DEFAULT 4U
#define CON_MAX_DELEGATION_HOPS_LIMIT 32U
/* system.result_retention, system.result_max: how long and how many finished tasks each agent keeps
 * on disk (queue/finished/, outbox/, processed/, failed/; docs/AGENT.md "Retention"). */
#define CON_RESULT_RETENTION_DEFAULT_USEC (30ULL * 24 * 3600 * 1000000)
#define CON_RESULT_MAX_DEFAULT 10000U
#define CON_RESULT_MAX_LIMIT 1000000U

/* system.agent_uid_min/max: the block agent users' UIDs come from (docs/BOOTSTRAP.md), outside the
 * 100..999 system range and the 1000.. range of people; never containing 65534 (nobody) or 65535. */
#define CON_AGENT_UID_MIN_DEFAULT 60000U
#define CON_AGENT_UID_MAX_DEFAULT 60999U
#define CON_AGENT_UID_LOWEST 1000U
#define CON_AGENT_UID_HIGHEST 2147483646U

/* dashboard: the status page, con-webd (docs/DASHBOARD.md). */
#define CON_DASHBOARD_PORT_DEFAULT 8080U
#define CON_DASHBOARD_BIND_DEFAULT "127.0.0.1"
typedef struct ConDashboardConfig {
        bool enabled;                   /* default false: con up does not start con-webd */
        char *bind;                     /* an IPv4 or IPv6 address, default 127.0.0.1 */
        unsigned port;                  /* 1..65535, default 8080 */
} ConDashboardConfig;

/* egress: the egress gateway, con-egressd (docs/NETWORK.md): an HTTP proxy on 127.0.0.1:port
 * that allow-list agents reach (the only thing on loopback the kernel lets them reach). */
#define CON_EGRESS_PORT_DEFAULT 3128U
/* egress.services.<name>: a credentialed service. The gateway answers
 * http://127.0.0.1:PORT/<name>/PATH by calling base_url + /PATH with the header
 * "<header>: <prefix><value of secret in /etc/con/env>"; the agents named may use it. */
typedef struct ConEgressService {
        char *name;                     /* [a-z0-9_-], the first path segment */
        char *base_url;                 /* http:// or https://, no trailing slash */
        char *header;                   /* a header name: Authorization */
        char *prefix;                   /* before the secret: "Bearer ", "token "; NULL: none */
        char *secret;                   /* the variable in /etc/con/env: GITHUB_TOKEN */
        char **agents;                  /* the agents that may use it (names) */
} ConEgressService;

typedef struct ConEgressConfig {
        unsigned port;                  /* 1..65535, default 3128 */
        ConEgressService *services;
        size_t n_services;
} ConEgressConfig;


typedef struct ConConfig ConConfig;
/* Whether some agent has a network allow-list: then the egress gateway runs (con up, con enable)
 * and bootstrap creates its user, con-egress. */
bool con_config_needs_egress(const ConConfig *c);
/* Whether the agent reaches the egress gateway: it has an allow-list, or (network not none) a
 * credentialed service names it. */
bool con_config_agent_uses_egress(const ConConfig *c, const ConAgent *a);
/* The service an agent may use by that name, or NULL. */
const ConEgressService *con_config_egress_service(const ConConfig *c, const char *agent, const char *name);

/* The agent's proxy URL, "http://127.0.0.1:PORT", in buf when the agent uses the egress gateway
 * (returns true); its sessions get it as http_proxy/https_proxy/HTTP_PROXY/HTTPS_PROXY. */
bool con_config_agent_proxy(const ConConfig *c, const ConAgent *a, char *buf, size_t size);
/* Sets those four variables in this process's environment (a session child, before exec) when
 * the agent uses the egress gateway. Returns 0 or -errno. */
int con_config_agent_proxy_setenv(const ConConfig *c, const ConAgent *a);
/* mesh: this host in a conspiracy of several hosts joined through NATS JetStream
 * (docs/MULTIHOST.md). Absent: enabled false, nothing else set, nothing extra runs. */
#define CON_MESH_SERVERS_MAX 16
#define CON_MESH_RETENTION_DEFAULT_USEC (7ULL * 24 * 3600 * 1000000)
/* JetStream's MaxAge is in nanoseconds (int64): ten years is far below its end. */
#define CON_MESH_RETENTION_MAX_USEC (3650ULL * 24 * 3600 * 1000000)
#define CON_MESH_REPLICAS_MAX 5         /* JetStream's limit */
/* The sending gateway's table of sent tasks and their answers in /srv/con/mesh (docs/MULTIHOST.md). */
#define CON_MESH_SENT_RETENTION_DEFAULT_USEC (30ULL * 24 * 3600 * 1000000)
#define CON_MESH_SENT_MAX_DEFAULT 10000
#define CON_MESH_SENT_MAX_MAX 1000000
/* The limits of every host's task and result streams (docs/MULTIHOST.md, "Floods"): bytes in each
 * stream (at least one message of the largest size, MESH_STREAM_MSG_MAX, fits), and messages of one
 * sending host in each. */
#define CON_MESH_STREAM_MAX_BYTES_DEFAULT (128ULL << 20)
#define CON_MESH_STREAM_MAX_BYTES_MIN (4ULL << 20)
#define CON_MESH_STREAM_MAX_BYTES_MAX (1ULL << 40)
#define CON_MESH_STREAM_MAX_PER_HOST_DEFAULT 10000
#define CON_MESH_STREAM_MAX_PER_HOST_MAX 10000000
/* A task sent from here that ended on its host (its final state event) but whose result has not
 * come this long after: the gateway asks that host to send it again (docs/MULTIHOST.md). */
#define CON_MESH_RESULT_WAIT_DEFAULT_USEC (60ULL * 1000000)
typedef struct ConMeshConfig {
        bool enabled;                   /* the section was given */
        char *host;                     /* required: this host's name (con_mesh_host_valid) */
        char **servers;                 /* required: nats://HOST:PORT or tls://HOST:PORT, 1..16 */
        char *credentials;              /* absolute path of a NATS credentials file, or NULL */
        uint64_t retention_usec;        /* how long a task may wait in a host's stream (7 days) */
        unsigned replicas;              /* copies JetStream keeps of each stream: 1, or 3 in a three-node cluster */
        uint64_t sent_retention_usec;   /* a task sent from here, its record and answer files: kept this
                                         * long after its result came (30 days) */
        unsigned sent_max;              /* ... and at most this many (10000), the oldest going first */
        uint64_t stream_max_bytes;      /* each task and result stream holds at most this (128 MiB) ... */
        unsigned stream_max_per_host;   /* ... and this many messages of one sending host (10000); full,
                                         * a new message is refused, a stored one never dropped */
        uint64_t result_wait_usec;      /* a result not back this long after its task ended on its host
                                         * is asked for again, then with a backoff (60 s) */
        /* TLS (docs/MULTIHOST.md, "Identity"): the mesh CA's certificate, this host's certificate
         * and key (con mesh issue). Default CON_MESH_TLS_DIR/{ca.crt,host.crt,host.key}; all
         * three NULL only with insecure: true and none given. */
        char *ca, *cert, *key;
        bool insecure;                  /* insecure: true: nats:// (plaintext) allowed, TLS optional */
} ConMeshConfig;
#define CON_MESH_TLS_DIR "/etc/con/mesh"


typedef struct ConConfig {
        char *path;                     /* the file it was read from (or the name given) */
        char *system_name;              /* "conspiracy" */
        char *submitters_group;         /* humans allowed to submit tasks: "con" */
        uint64_t task_max_size;         /* bytes, default 1 MiB */
        unsigned max_queued_per_sender; /* unfinished tasks one sender may have at one agent */
        unsigned max_delegation_hops;   /* agent-to-agent hops below a task a human or root sent */
        uint64_t result_retention_usec; /* a finished task's files at each agent: kept this long (30 days) */
        unsigned result_max;            /* ... and at most this many per agent (10000), the oldest going first */
        unsigned agent_uid_min, agent_uid_max; /* agent users' UIDs, default 60000..60999 */
        ConRuntimeSettings base;        /* as written (unresolved) */
        ConRuntimeSettings tiers[_CON_TIER_MAX]; /* as written; index CON_TIER_NONE unused */
        ConContractThresholds contracts;
        ConModelsConfig models;         /* models: section */
        ConDashboardConfig dashboard;   /* dashboard: section */
        ConEgressConfig egress;         /* egress: section */
        ConMeshConfig mesh;             /* mesh: section */
        ConAgent *agents;
        size_t n_agents;
        bool policy_no_defaults;        /* policy.defaults: false (the original's grants left out) */
        ConPolicyGrantConfig *policy_grants; /* policy.grants */
        size_t n_policy_grants;
} ConConfig;

/* Parse a config from memory; filename is used in messages only.
 * Returns 0, -EINVAL (err filled in), or -ENOMEM. */
int con_config_parse(const char *text, size_t len, const char *filename, ConConfig **ret,
                     ConErrorDetail *reterr);
/* Read and parse a file and its drop-ins, the files NAME.yaml in PATH.d (docs/CONFIG.md "Drop-ins"): each adds
 * agents and policy grants, in the order of their names. -errno when a file cannot be read (err
 * filled in too). */
int con_config_load(const char *path, ConConfig **ret, ConErrorDetail *reterr);

#define CON_CONFIG_AGENTS_MAX 100000U   /* agents in con.yaml and its drop-ins together */
#define CON_CONFIG_DROPINS_MAX 100000U

/* What con_config_load_full() reads: con.yaml, the drop-ins of a folder (PATH.d when NULL), and
 * for the provisioner a drop-in not written yet (its text) or without one that is to go. */
typedef struct ConConfigLoad {
        const char *path;
        const char *dropin_dir;         /* NULL: PATH.d */
        bool no_dropins;
        const char *extra_dropin_name;  /* read EXTRA_TEXT as DROPIN_DIR/EXTRA_NAME (in place of that file) */
        const char *extra_dropin_text;
        size_t extra_dropin_len;
        const char *omit_dropin;        /* a drop-in's file name left out */
} ConConfigLoad;
int con_config_load_full(const ConConfigLoad *l, ConConfig **ret, ConErrorDetail *reterr);
/* A drop-in's file name: [a-z0-9._-]+ ending in .yaml, not starting with '.'. Others are ignored. */
bool con_config_dropin_name_valid(const char *name);

ConConfig *con_config_free(ConConfig *c);
static inline void con_config_freep(ConConfig **c) {
        con_config_free(*c);
}

const ConAgent *con_config_find_agent(const ConConfig *c, const char *name);
/* The effective model budget of an agent: its models.agents entry, else the models: defaults. */
void con_config_model_budget(const ConConfig *c, const char *agent, ConModelBudget *ret);

const char *con_tier_to_string(ConTier t);     /* "" for NONE */
ConTier con_tier_from_string(const char *s);
const char *con_mode_to_string(ConMode m);
ConMode con_mode_from_string(const char *s);   /* accepts "continuous" */

