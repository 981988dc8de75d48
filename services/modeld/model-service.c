/* SPDX-License-Identifier: MIT */
#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "audit.h"
#include "authz.h"
#include "bus-util.h"
#include "con-paths.h"
#include "config.h"
#include "errors.h"
#include "http.h"
#include "llm.h"
#include "log.h"
#include "macro.h"
#include "model-service.h"
#include "model-util.h"
#include "names.h"
#include "strv.h"
#include "time-util.h"
#include "user-util.h"


#define DEFAULT_MAX_TOKENS 8192U
#define RELOAD_HINT "the gateway re-reads its keys on reload: systemctl reload con-modeld, or pkill -HUP con-modeld"
#define OWNER_LOOKUP_TIMEOUT_USEC (5ULL * 1000000ULL)
#define USEC_PER_SEC_ULL 1000000ULL
#define USEC_PER_DAY (86400ULL * USEC_PER_SEC_ULL)

typedef struct Call Call;

/* Keys and headers with keys are wiped before they are freed. */
static void strv_free_erase(char **l) {
        for (size_t i = 0; l && l[i]; i++)
                explicit_bzero(l[i], strlen(l[i]));
        strv_free(l);
}

struct Models {
        ModelsOptions opts;
        sd_event *event;
        sd_bus *bus;
        ConHttp *http;
        ConConfig *config;
        char **env;
        ModelLedger *ledger;
        ModelRate *rate;
        ConAudit *audit;
        ConAuthz *authz;                /* who is calling: the async uid lookup */
        struct PendingReg *pending_regs;        /* RegisterTask calls being decided */
        unsigned n_pending_regs;
        sd_event_source *pump_timer;
        Call *queue_head, *queue_tail;  /* waiting for the rate limit */
        Call *calls;                    /* every call (queued, in flight, waiting for a retry) */
        unsigned n_queued, n_calls;
        uint64_t requests, failures;
        char *config_error;             /* why the last reload was refused; NULL when it was not */
};

struct Call {
        Models *m;
        Call *qnext;                    /* rate queue */
        Call *next, *prev;              /* all calls */
        bool queued;
        sd_bus_message *msg;
        char *agent, *provider, *model, *url, *body;
        char *task_id;                  /* the registered task this call is charged to, NULL: unregistered */
        char *claimed_task_id;          /* the task_id the caller named, when it is not registered */
        char **headers;
        ConLlmWire wire;
        ConModelBudget budget;
        unsigned attempt;
        uint64_t started, deadline;     /* CLOCK_MONOTONIC */
        ConHttpSlot *slot;
        sd_event_source *retry_timer;
        long last_status;
};

static uint64_t today(void) {
        return (uint64_t) time(NULL) / 86400;
}

/* ---- configuration and keys ---- */

static int load_env(Models *m) {
        const char *path = m->opts.env_path ?: CON_MODELS_ENV_PATH;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
        struct stat st;
        char buf[MODEL_ENV_FILE_MAX + 1];
        size_t len = 0;
        unsigned bad = 0;

        if (fd < 0) {
                int r = -errno;
                if (r == -ENOENT) {
                        log_info("%s does not exist: no provider keys (local providers without a key still work)", path);
                        strv_free(m->env);
                        m->env = calloc(1, sizeof(char *));
                        return m->env ? 0 : -ENOMEM;
                }
                log_error("Cannot open %s: %s (it must be readable by %s: root:%s 0640)", path, strerror(-r),
                          CON_MODELS_USER, CON_MODELS_USER);
                return r;
        }
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode)) {
                log_error("%s is not a regular file", path);
                return -EINVAL;
        }
        if (st.st_mode & 0007)
                log_warning("%s is readable or writable by everyone (mode %04o); it holds API keys: "
                          "chmod 0640", path, (unsigned) (st.st_mode & 07777));
        for (;;) {
                ssize_t n = read(fd, buf + len, sizeof(buf) - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        break;
                len += (size_t) n;
                if (len > MODEL_ENV_FILE_MAX) {
                        log_error("%s is larger than %u bytes", path, MODEL_ENV_FILE_MAX);
                        return -EFBIG;
                }
        }
        char **env = NULL;
        int r = con_env_parse(buf, len, &env, &bad);
        explicit_bzero(buf, sizeof(buf));
        if (r == -EINVAL) {
                log_error("%s:%u: not a NAME=value line (values may be quoted; no control characters)", path, bad);
                return r;
        }
        if (r < 0)
                return r;
        strv_free_erase(m->env);
        m->env = env;
        return 0;
}

static int load_config(Models *m) {
        const char *path = m->opts.config_path ?: CON_CONFIG_PATH;
        _cleanup_(con_config_freep) ConConfig *c = NULL;
        ConErrorDetail e = {};
        int r = con_config_load(path, &c, &e);
        if (r < 0) {
                _cleanup_free_ char *s = con_error_detail_format(&e);
                log_error("%s", s ? s : strerror(-r));
                con_error_detail_done(&e);
                free(m->config_error);
                m->config_error = s ? TAKE_PTR(s) : strdup(strerror(-r));
                return r;
        }
        con_config_free(m->config);
        m->config = TAKE_PTR(c);
        if (m->rate)
                model_rate_set_limits(m->rate, m->config->models.requests_per_minute,
                                      m->config->models.tokens_per_minute);
        return 0;
}

/* ---- usage log ---- */

static void audit_call(Models *m, const Call *c, const char *outcome, const char *error_kind, uint64_t in,
                       uint64_t out) {
        if (!m->audit)
                return;
        cJSON *f = cJSON_CreateObject();
        if (!f)
                return;
        cJSON_AddStringToObject(f, "agent", c->agent);
        if (c->task_id)
                cJSON_AddStringToObject(f, "task_id", c->task_id);
        if (c->claimed_task_id)
                cJSON_AddStringToObject(f, "unregistered_task_id", c->claimed_task_id);
        cJSON_AddStringToObject(f, "provider", c->provider);
        cJSON_AddStringToObject(f, "model", c->model);
        cJSON_AddStringToObject(f, "outcome", outcome);
        if (error_kind)
                cJSON_AddStringToObject(f, "error", error_kind);
        cJSON_AddNumberToObject(f, "http_status", (double) c->last_status);
        cJSON_AddNumberToObject(f, "attempts", (double) c->attempt + 1);
        cJSON_AddNumberToObject(f, "input_tokens", (double) in);
        cJSON_AddNumberToObject(f, "output_tokens", (double) out);
        cJSON_AddNumberToObject(f, "duration_ms", (double) ((con_now(CLOCK_MONOTONIC) - c->started) / 1000));
        int r = con_audit_append(m->audit, "models", "model.call", f);
        if (r < 0)
                log_error("Failed to append to the usage log: %s", strerror(-r));
        cJSON_Delete(f);
}

/* A registration, or a refusal (field/value: what was refused; task_id as the caller named it). */
static void audit_task(Models *m, const char *event, const char *agent, const char *task_id, const char *field,
                       const char *value) {
        if (!m->audit)
                return;
        cJSON *f = cJSON_CreateObject();
        if (!f)
                return;
        cJSON_AddStringToObject(f, "agent", agent);
        if (task_id)
                cJSON_AddStringToObject(f, "task_id", task_id);
        if (field)
                cJSON_AddStringToObject(f, field, value);
        int r = con_audit_append(m->audit, "models", event, f);
        if (r < 0)
                log_error("Failed to append to the usage log: %s", strerror(-r));
        cJSON_Delete(f);
}

/* Today's usage survives restarts: it is summed up again from the usage log, and the tasks
 * registered today and not yet ended are registered again. */
static void restore_usage(Models *m, const char *dir) {
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "%s/%s", dir, CON_AUDIT_LOG_NAME) < 0)
                return;
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return;
        time_t t = time(NULL);
        struct tm tm;
        char prefix[16];
        gmtime_r(&t, &tm);
        strftime(prefix, sizeof prefix, "%Y-%m-%d", &tm);
        _cleanup_free_ char *line = NULL;
        size_t cap = 0;
        while (getline(&line, &cap, f) > 0) {
                cJSON *j = cJSON_Parse(line);
                const cJSON *time_j = cJSON_GetObjectItemCaseSensitive(j, "time");
                const cJSON *event = cJSON_GetObjectItemCaseSensitive(j, "event");
                const cJSON *agent = cJSON_GetObjectItemCaseSensitive(j, "agent");
                const cJSON *task = cJSON_GetObjectItemCaseSensitive(j, "task_id");
                const cJSON *in = cJSON_GetObjectItemCaseSensitive(j, "input_tokens");
                const cJSON *out = cJSON_GetObjectItemCaseSensitive(j, "output_tokens");
                bool today_agent = cJSON_IsString(time_j) && startswith(time_j->valuestring, prefix) &&
                        cJSON_IsString(agent) && cJSON_IsString(event);
                if (today_agent && cJSON_IsString(task) && streq(event->valuestring, "model.task_registered"))
                        (void) model_ledger_register(m->ledger, agent->valuestring, task->valuestring);
                else if (today_agent && cJSON_IsString(task) && streq(event->valuestring, "model.task_ended"))
                        (void) model_ledger_unregister(m->ledger, agent->valuestring, task->valuestring);
                else if (today_agent && streq(event->valuestring, "model.call") &&
                    cJSON_IsNumber(in) && cJSON_IsNumber(out) && in->valuedouble >= 0 && out->valuedouble >= 0 &&
                    in->valuedouble < 0x1p64 && out->valuedouble < 0x1p64) {
                        ConModelBudget b;
                        con_config_model_budget(m->config, agent->valuestring, &b);
                        (void) model_ledger_add(m->ledger, today(), agent->valuestring,
                                                cJSON_IsString(task) ? task->valuestring : NULL,
                                                (uint64_t) in->valuedouble, (uint64_t) out->valuedouble, &b);
                }
                cJSON_Delete(j);
        }
}

/* ---- calls ---- */

static Call *call_free(Call *c) {
        if (!c)
                return NULL;
        Models *m = c->m;
        if (c->queued) {
                Call **p = &m->queue_head;
                while (*p && *p != c)
                        p = &(*p)->qnext;
                if (*p)
                        *p = c->qnext;
                m->queue_tail = NULL;
                for (Call *q = m->queue_head; q; q = q->qnext)
                        m->queue_tail = q;
                m->n_queued--;
        }
        if (c->prev)
                c->prev->next = c->next;
        else
                m->calls = c->next;
        if (c->next)
                c->next->prev = c->prev;
        m->n_calls--;
        con_http_slot_free(c->slot);
        sd_event_source_disable_unref(c->retry_timer);
        sd_bus_message_unref(c->msg);
        free(c->agent);
        free(c->task_id);
        free(c->claimed_task_id);
        free(c->provider);
        free(c->model);
        free(c->url);
        free(c->body);
        strv_free_erase(c->headers);       /* they carry the key */
        free(c);
        return NULL;
}

_printf_(6, 0)
static void call_failv(Call *c, uint64_t in, uint64_t out, const char *name, const char *error_kind,
                       const char *fmt, va_list ap) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *msg = NULL;
        if (vasprintf(&msg, fmt, ap) < 0)
                msg = NULL;
        (void) sd_bus_error_set(&e, name, msg ? msg : "model call failed");
        int r = sd_bus_reply_method_error(c->msg, &e);
        if (r < 0)
                log_error("Failed to send the error reply to %s: %s", c->agent, strerror(-r));
        log_info("agent %s: model call failed: %s", c->agent, msg ? msg : name);
        c->m->failures++;
        audit_call(c->m, c, "error", error_kind, in, out);
        call_free(c);
}

static void call_fail(Call *c, const char *name, const char *error_kind, const char *fmt, ...) _printf_(4, 5);
static void call_fail(Call *c, const char *name, const char *error_kind, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        call_failv(c, 0, 0, name, error_kind, fmt, ap);
        va_end(ap);
}

/* A failed call the provider billed anyway (a 2xx body we refuse still carries usage). */
static void call_fail_billed(Call *c, uint64_t in, uint64_t out, const char *name, const char *error_kind,
                             const char *fmt, ...) _printf_(6, 7);
static void call_fail_billed(Call *c, uint64_t in, uint64_t out, const char *name, const char *error_kind,
                             const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        call_failv(c, in, out, name, error_kind, fmt, ap);
        va_end(ap);
}

/* Every billed token counts: the agent's day, and its registered task or its unregistered account. */
static void call_charge(Call *c, uint64_t in, uint64_t out) {
        (void) model_ledger_add(c->m->ledger, today(), c->agent, c->task_id, in, out, &c->budget);
        model_rate_add_tokens(c->m->rate, con_now(CLOCK_MONOTONIC), in + out);
}

static void call_start(Call *c);
static void pump(Models *m);

static int on_retry_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) s;
        (void) usec;
        Call *c = userdata;
        c->retry_timer = sd_event_source_disable_unref(c->retry_timer);
        call_start(c);
        return 0;
}

static void on_http(ConHttpSlot *slot, int r, ConHttpResponse *resp, void *userdata) {
        Call *c = userdata;
        Models *m = c->m;
        uint64_t delay = 0;
        (void) slot;

        c->slot = con_http_slot_free(c->slot);
        c->last_status = resp ? resp->status : 0;

        if (r == 0 && resp->status >= 200 && resp->status < 300) {
                _cleanup_(con_llm_response_freep) ConLlmResponse *lr = NULL;
                _cleanup_free_ char *json = NULL;
                ConErrorDetail e = {};
                int k = con_llm_parse_response(c->wire, resp->body, resp->body_size, &lr, &e);
                if (k < 0) {
                        uint64_t in = 0, out = 0;
                        (void) con_llm_parse_usage(c->wire, resp->body, resp->body_size, &in, &out);
                        call_charge(c, in, out);
                        call_fail_billed(c, in, out, SD_BUS_ERROR_FAILED,
                                         k == -EREMOTEIO ? "provider-error" : "bad-response",
                                         "provider '%s' (model %s) at %s answered with something that is not a "
                                         "valid %s response: %s", c->provider, c->model, c->url,
                                         con_llm_wire_to_string(c->wire), e.message ? e.message : strerror(-k));
                        con_error_detail_done(&e);
                        return;
                }
                call_charge(c, lr->input_tokens, lr->output_tokens);
                k = model_response_to_json(lr, &json);
                if (k < 0) {
                        call_fail_billed(c, lr->input_tokens, lr->output_tokens, SD_BUS_ERROR_NO_MEMORY, "internal",
                                         "out of memory");
                        return;
                }
                k = sd_bus_reply_method_return(c->msg, "s", json);
                if (k < 0)
                        log_error("Failed to send the reply to %s: %s", c->agent, strerror(-k));
                audit_call(m, c, "ok", NULL, lr->input_tokens, lr->output_tokens);
                call_free(c);
                return;
        }

        if (con_llm_retry_decide(r == 0 ? resp->status : 0, r, r == 0 && resp->has_retry_after,
                                 r == 0 ? resp->retry_after_usec : 0, c->attempt, &delay) > 0 &&
            con_now(CLOCK_MONOTONIC) + delay < c->deadline) {
                c->attempt++;
                log_info("agent %s: provider %s: %s%s; retry %u in %" PRIu64 " ms", c->agent, c->provider,
                         r < 0 ? "transport error " : "HTTP ", r < 0 ? strerror(-r) : "", c->attempt,
                         delay / 1000);
                int k = sd_event_add_time_relative(m->event, &c->retry_timer, CLOCK_MONOTONIC, delay, 1000,
                                                   on_retry_timer, c);
                if (k >= 0)
                        return;
        }

        uint64_t limit_s = m->config->models.timeout_usec / USEC_PER_SEC_ULL;
        if (r == -ETIMEDOUT)
                call_fail(c, SD_BUS_ERROR_TIMEOUT, "timeout",
                          "provider '%s' (model %s) at %s did not answer within %" PRIu64 " s (models.timeout in "
                          "%s), %u tries", c->provider, c->model, c->url, limit_s, m->config->path, c->attempt + 1);
        else if (r == -EFBIG)
                call_fail(c, SD_BUS_ERROR_LIMITS_EXCEEDED, "too-large",
                          "the answer of provider '%s' (model %s) at %s is larger than the limit of %u bytes",
                          c->provider, c->model, c->url, CON_LLM_RESPONSE_MAX);
        else if (r < 0)
                call_fail(c, SD_BUS_ERROR_FAILED, "transport",
                          "cannot reach provider '%s' at %s: %s", c->provider, c->url,
                          resp && resp->error ? resp->error : strerror(-r));
        else {
                _cleanup_free_ char *pm = NULL;
                (void) con_llm_parse_error(resp->body, resp->body_size, &pm);
                if (resp->status == 429)
                        call_fail(c, CON_ERROR_RATE_LIMITED, "rate-limited",
                                  "provider '%s' (model %s) kept answering 429 Too Many Requests after %u tries%s%s",
                                  c->provider, c->model, c->attempt + 1, pm ? ": " : "", pm ? pm : "");
                else
                        call_fail(c, SD_BUS_ERROR_FAILED, "http-status",
                                  "provider '%s' (model %s) at %s answered HTTP %ld%s%s%s", c->provider, c->model,
                                  c->url, resp->status, pm ? ": " : "", pm ? pm : "",
                                  resp->status == 401 || resp->status == 403 ?
                                  " (check the key in /etc/con/env)" : "");
        }
        pump(m);
}

static void call_start(Call *c) {
        uint64_t now = con_now(CLOCK_MONOTONIC);
        if (now >= c->deadline) {
                call_fail(c, SD_BUS_ERROR_TIMEOUT, "timeout",
                          "provider '%s' (model %s) at %s did not answer within %" PRIu64 " s (models.timeout in "
                          "%s), %u tries", c->provider, c->model, c->url,
                          (uint64_t) (c->m->config->models.timeout_usec / USEC_PER_SEC_ULL), c->m->config->path, c->attempt + 1);
                return;
        }
        int r = con_http_request(c->m->http, c->url, c->headers, c->body, strlen(c->body), c->deadline - now,
                                 CON_LLM_RESPONSE_MAX, on_http, c, &c->slot);
        if (r < 0)
                call_fail(c, SD_BUS_ERROR_FAILED, "transport", "cannot start the request to %s: %s", c->url,
                          strerror(-r));
}

static int on_pump_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) s;
        (void) usec;
        pump(userdata);
        return 0;
}

static void pump(Models *m) {
        while (m->queue_head) {
                uint64_t wait = model_rate_admit(m->rate, con_now(CLOCK_MONOTONIC));
                if (wait > 0) {
                        if (!m->pump_timer)
                                (void) sd_event_add_time_relative(m->event, &m->pump_timer, CLOCK_MONOTONIC, wait,
                                                                  1000, on_pump_timer, m);
                        else {
                                (void) sd_event_source_set_time_relative(m->pump_timer, wait);
                                (void) sd_event_source_set_enabled(m->pump_timer, SD_EVENT_ONESHOT);
                        }
                        return;
                }
                Call *c = m->queue_head;
                m->queue_head = c->qnext;
                if (!m->queue_head)
                        m->queue_tail = NULL;
                c->queued = false;
                c->qnext = NULL;
                m->n_queued--;
                call_start(c);
        }
}

/* ---- the bus method ---- */

static int pending_wait(Models *m, const char *agent, const char *task_id, sd_bus_message *msg);
typedef struct PendingReg PendingReg;
static void pending_release(PendingReg *p, bool resume);

/* The calling agent: uid (asked of the bus asynchronously) → a-<name> → a configured agent. Root may
 * name one. 1 with *ret, 0 parked (the handler runs again), or a negative errno with error set. */
static int caller_agent(Models *m, sd_bus_message *msg, const char *requested, const ConAgent **ret,
                        uid_t *ret_uid, sd_bus_error *error) {
        uid_t uid;
        int r = con_authz_caller_uid(m->authz, msg, &uid, error);
        if (r <= 0)
                return r;
        if (ret_uid)
                *ret_uid = uid;
        if (uid == 0) {
                if (!requested)
                        return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS,
                                                "root is not an agent: name the agent with the \"agent\" field");
                *ret = con_config_find_agent(m->config, requested);
                if (!*ret)
                        return con_bus_error_setf(error, CON_ERROR_NO_SUCH_AGENT,
                                                  "no agent '%s' is configured in %s", requested, m->config->path);
                return 1;
        }
        _cleanup_free_ char *name = NULL;
        r = con_uid_to_name(uid, &name);
        if (r < 0)
                return r;
        const char *agent = startswith(name, CON_USER_PREFIX);
        if (!agent || !(*ret = con_config_find_agent(m->config, agent)))
                return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                          "Access denied: user '%s' (uid %u) is not an agent of this conspiracy; only "
                                          "agents (users a-NAME of the agents in %s) may call the model gateway",
                                          name, (unsigned) uid, m->config->path);
        return 1;
}

static int method_complete(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Models *m = userdata;
        _cleanup_(model_request_freep) ModelRequest *req = NULL;
        _cleanup_free_ char *perr = NULL, *body = NULL, *url = NULL, *bmsg = NULL;
        _cleanup_strv_free_ char **headers = NULL;
        const char *json, *budget_key, *key = NULL, *key_var = NULL, *base_url = NULL;
        const ConAgent *a;
        ConLlmWire wire;
        ConErrorDetail le = {};
        int r;

        r = sd_bus_message_read(msg, "s", &json);
        if (r < 0)
                return r;
        r = model_request_parse(json, strlen(json), &req, &perr);
        if (r == -ENOMEM)
                return r;
        /* Who is calling comes first: a stranger learns nothing about the request format. The
         * "agent" field is only read for root; parse errors are reported after that. */
        r = caller_agent(m, msg, req ? req->agent : NULL, &a, NULL, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;       /* parked: runs again when the bus has said who is calling */
        if (!req)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "request_json: %s",
                                         perr ? perr : "invalid");

        r = con_llm_provider_wire(a->rt.provider, &wire, &base_url);
        if (r < 0)
                return con_bus_error_setf(error, CON_ERROR_NOT_CONFIGURED,
                                          "agent '%s' uses provider '%s', which the model gateway does not speak "
                                          "(use openrouter, openai, anthropic, ollama or compatible)",
                                          a->name, a->rt.provider);
        if (a->rt.base_url)
                base_url = a->rt.base_url;
        if (!base_url)
                return con_bus_error_setf(error, CON_ERROR_NOT_CONFIGURED,
                                          "agent '%s' uses provider '%s' without a base_url: set base_url in %s",
                                          a->name, a->rt.provider, m->config->path);
        if (!a->rt.model)
                return con_bus_error_setf(error, CON_ERROR_NOT_CONFIGURED,
                                          "agent '%s' has no model configured: set model on the agent or in base: "
                                          "in %s", a->name, m->config->path);
        const char *generic_owner = m->config->models.generic_key_provider ?: MODEL_GENERIC_KEY_PROVIDER_DEFAULT;
        (void) model_resolve_key(m->env, a, generic_owner, &key, &key_var);
        bool local = streq(a->rt.provider, "ollama") || streq(a->rt.provider, "compatible");
        if (!key && !local) {
                const char *want = a->rt.api_key_env ?: "CON_API_KEY";
                bool generic_elsewhere = model_key_var_is_generic(want) && !streq(generic_owner, a->rt.provider);
                return con_bus_error_setf(error, CON_ERROR_NOT_CONFIGURED,
                                          "no API key for agent '%s' (provider %s): put %s in %s%s%s%s; "
                                          RELOAD_HINT,
                                          a->name, a->rt.provider, key_var ?: want,
                                          m->opts.env_path ?: CON_MODELS_ENV_PATH,
                                          generic_elsewhere ? " (" : "", generic_elsewhere ? want : "",
                                          generic_elsewhere ? " is only sent to the provider named by "
                                          "models.generic_key_provider, which is not this one)" : "");
        }

        /* Budgets are keyed by what the gateway knows: the agent (from the caller's uid) and the
         * tasks its agent service registered. Any other task_id is the agent's unregistered use. */
        if (req->task_id && !model_ledger_registered(m->ledger, a->name, req->task_id) &&
            pending_wait(m, a->name, req->task_id, msg) > 0)
                return 1;       /* parked: runs again when the registration of its task is decided */
        const char *account = req->task_id && model_ledger_registered(m->ledger, a->name, req->task_id) ?
                req->task_id : NULL;
        ConModelBudget b;
        con_config_model_budget(m->config, a->name, &b);
        r = model_ledger_check(m->ledger, today(), a->name, account, &b, &budget_key, &bmsg);
        if (r == -EDQUOT) {
                (void) sd_bus_emit_signal(m->bus, CON_MODELS_PATH, CON_MODELS_INTERFACE, "BudgetExhausted", "ss",
                                          a->name, budget_key);
                log_info("agent %s: %s", a->name, bmsg ? bmsg : budget_key);
                audit_task(m, "model.refused", a->name, req->task_id, "budget", budget_key);
                return con_bus_error_setf(error, CON_ERROR_BUDGET_EXHAUSTED, "%s", bmsg ? bmsg : budget_key);
        }
        if (r < 0)
                return r;

        if (m->n_queued >= m->config->models.queue_max)
                return con_bus_error_setf(error, CON_ERROR_RATE_LIMITED,
                                          "the host-wide model rate limit queue is full (%u calls wait; "
                                          "models.queue_max in %s)", m->n_queued, m->config->path);

        ConLlmParams p = {
                .model = a->rt.model,
                .max_tokens = req->max_tokens ?: DEFAULT_MAX_TOKENS,
                .temperature = req->temperature,
        };
        r = con_llm_build_request(wire, req->conv, &p, &body, &le);
        if (r == -EINVAL) {
                r = sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "request_json: %s",
                                      le.message ? le.message : "invalid");
                con_error_detail_done(&le);
                return r;
        }
        if (r < 0)
                return r;
        r = con_llm_build_url(wire, base_url, &url);
        if (r < 0)
                return r;
        r = con_llm_build_headers(wire, key, &headers);
        if (r == -EINVAL)
                return con_bus_error_setf(error, CON_ERROR_NOT_CONFIGURED,
                                          "the API key in %s (%s) contains a control character",
                                          m->opts.env_path ?: CON_MODELS_ENV_PATH, key_var ? key_var : "?");
        if (r < 0)
                return r;

        Call *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        *c = (Call) {
                .m = m,
                .msg = sd_bus_message_ref(msg),
                .agent = strdup(a->name),
                .task_id = account ? strdup(account) : NULL,
                .claimed_task_id = req->task_id && !account ? strdup(req->task_id) : NULL,
                .provider = strdup(a->rt.provider),
                .model = strdup(a->rt.model),
                .url = TAKE_PTR(url),
                .body = TAKE_PTR(body),
                .headers = TAKE_PTR(headers),
                .wire = wire,
                .budget = b,
                .started = con_now(CLOCK_MONOTONIC),
                .queued = true,
        };
        c->deadline = c->started + m->config->models.timeout_usec;
        c->next = m->calls;
        if (m->calls)
                m->calls->prev = c;
        m->calls = c;
        m->n_calls++;
        if (m->queue_tail)
                m->queue_tail->qnext = c;
        else
                m->queue_head = c;
        m->queue_tail = c;
        m->n_queued++;
        m->requests++;
        if (!c->agent || !c->provider || !c->model || (req->task_id && !c->task_id && !c->claimed_task_id)) {
                call_free(c);
                return -ENOMEM;
        }
        pump(m);
        return 1;       /* replied later, from on_http() */
}

/* ---- task registration (by the agent service) ---- */

/* A RegisterTask being decided. The agent service sends it before it starts the session, so it is
 * dispatched before the session's first Complete; deciding it takes bus round trips (the caller's
 * uid, the owner of the agent's bus name), and a Complete naming that task waits for the decision
 * instead of being charged to the unregistered account meanwhile. */
struct PendingReg {
        Models *m;
        char *agent, *task_id;
        sd_bus_message **regs;          /* the RegisterTask calls being decided */
        size_t n_regs;
        sd_bus_message **waiting;       /* Complete calls naming this task, parked until then */
        size_t n_waiting;
        sd_event_source *timer;         /* gives up waiting (a caller that vanished mid-lookup) */
        PendingReg *next;
};

#define PENDING_REGS_MAX     1024U
#define PENDING_WAITING_MAX  64U
#define PENDING_REG_TIMEOUT_USEC (12ULL * 1000000ULL)

static PendingReg *pending_find(Models *m, const char *agent, const char *task_id) {
        for (PendingReg *p = m->pending_regs; p; p = p->next)
                if (streq(p->agent, agent) && streq(p->task_id, task_id))
                        return p;
        return NULL;
}

/* Frees p; the Complete calls waiting for it run again (and find the decision), unless !resume
 * (the gateway stops). */
static void pending_release(PendingReg *p, bool resume) {
        Models *m = p->m;
        for (PendingReg **q = &m->pending_regs; *q; q = &(*q)->next)
                if (*q == p) {
                        *q = p->next;
                        m->n_pending_regs--;
                        break;
                }
        for (size_t i = 0; i < p->n_waiting; i++) {
                sd_bus_message *w = p->waiting[i];
                if (!resume) {
                        sd_bus_message_unref(w);
                        continue;
                }
                int r = sd_bus_message_rewind(w, true);
                if (r >= 0)
                        r = sd_bus_enqueue_for_read(m->bus, w);
                if (r < 0)
                        (void) sd_bus_reply_method_errorf(w, SD_BUS_ERROR_FAILED,
                                                          "cannot resume the call after its task's registration: %s",
                                                          strerror(-r));
                sd_bus_message_unref(w);
        }
        for (size_t i = 0; i < p->n_regs; i++)
                sd_bus_message_unref(p->regs[i]);
        sd_event_source_disable_unref(p->timer);
        free(p->waiting);
        free(p->regs);
        free(p->agent);
        free(p->task_id);
        free(p);
}

static int on_pending_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) s, (void) usec;
        pending_release(userdata, true);
        return 0;
}

static bool msgv_has(sd_bus_message * const *v, size_t n, const sd_bus_message *msg) {
        for (size_t i = 0; i < n; i++)
                if (v[i] == msg)
                        return true;
        return false;
}

static int msgv_push(sd_bus_message ***v, size_t *n, sd_bus_message *msg) {
        sd_bus_message **nv = reallocarray(*v, *n + 1, sizeof(sd_bus_message *));
        if (!nv)
                return -ENOMEM;
        *v = nv;
        (*v)[(*n)++] = sd_bus_message_ref(msg);
        return 0;
}

/* A RegisterTask call is being decided (called on every run of its handler). Best effort: without
 * memory or over the caps, Complete calls simply do not wait. */
static void pending_begin(Models *m, const char *agent, const char *task_id, sd_bus_message *msg) {
        PendingReg *p = pending_find(m, agent, task_id);
        if (!p) {
                if (m->n_pending_regs >= PENDING_REGS_MAX)
                        return;
                p = calloc(1, sizeof(*p));
                if (!p)
                        return;
                p->m = m;
                p->agent = strdup(agent);
                p->task_id = strdup(task_id);
                p->next = m->pending_regs;
                m->pending_regs = p;
                m->n_pending_regs++;
                if (!p->agent || !p->task_id ||
                    sd_event_add_time_relative(m->event, &p->timer, CLOCK_MONOTONIC, PENDING_REG_TIMEOUT_USEC, 0,
                                               on_pending_timeout, p) < 0) {
                        pending_release(p, true);
                        return;
                }
        }
        if (!msgv_has(p->regs, p->n_regs, msg))
                (void) msgv_push(&p->regs, &p->n_regs, msg);
}

/* That RegisterTask call is decided (replied to). */
static void pending_end(Models *m, const char *agent, const char *task_id, sd_bus_message *msg) {
        PendingReg *p = pending_find(m, agent, task_id);
        if (!p)
                return;
        for (size_t i = 0; i < p->n_regs; i++)
                if (p->regs[i] == msg) {
                        sd_bus_message_unref(p->regs[i]);
                        p->regs[i] = p->regs[--p->n_regs];
                        break;
                }
        if (p->n_regs == 0)
                pending_release(p, true);
}

/* Should this Complete call wait for a registration of its task? 1: parked. */
static int pending_wait(Models *m, const char *agent, const char *task_id, sd_bus_message *msg) {
        PendingReg *p = task_id ? pending_find(m, agent, task_id) : NULL;
        if (!p || p->n_waiting >= PENDING_WAITING_MAX)
                return 0;
        if (msgv_has(p->waiting, p->n_waiting, msg))
                return 1;
        return msgv_push(&p->waiting, &p->n_waiting, msg) < 0 ? 0 : 1;
}

typedef struct OwnerLookup {
        Models *m;
        sd_bus_message *msg;
        char *agent, *task_id;
        bool register_task;
} OwnerLookup;

static OwnerLookup *owner_lookup_free(OwnerLookup *o) {
        if (!o)
                return NULL;
        sd_bus_message_unref(o->msg);
        free(o->agent);
        free(o->task_id);
        free(o);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(OwnerLookup *, owner_lookup_free);

static int task_apply(Models *m, sd_bus_message *msg, const char *agent, const char *task_id, bool reg) {
        int r;
        if (reg) {
                r = model_ledger_register(m->ledger, agent, task_id);
                if (r < 0)
                        return sd_bus_reply_method_errno(msg, r, NULL);
        } else
                (void) model_ledger_unregister(m->ledger, agent, task_id);      /* idempotent */
        audit_task(m, reg ? "model.task_registered" : "model.task_ended", agent, task_id, NULL, NULL);
        return sd_bus_reply_method_return(msg, NULL);
}

static int on_owner_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        _cleanup_(owner_lookup_freep) OwnerLookup *o = userdata;
        const char *owner = NULL, *sender = sd_bus_message_get_sender(o->msg);
        (void) ret_error;

        if (sd_bus_message_is_method_error(reply, NULL) || sd_bus_message_read(reply, "s", &owner) < 0 ||
            !sender || !streq(owner, sender)) {
                (void) sd_bus_reply_method_errorf(o->msg, CON_ERROR_ACCESS_DENIED,
                                                  "Access denied: only root and the agent service of '%s' (the "
                                                  "owner of its bus name) may register its tasks", o->agent);
                /* A session trying to buy itself a budget: visible in the usage log. */
                log_info("agent %s: %s from %s refused: not the owner of its bus name", o->agent,
                         sd_bus_message_get_member(o->msg), strempty(sender));
                audit_task(o->m, "model.register_refused", o->agent, o->task_id, "method",
                           sd_bus_message_get_member(o->msg));
        } else
                (void) task_apply(o->m, o->msg, o->agent, o->task_id, o->register_task);
        if (o->register_task)
                pending_end(o->m, o->agent, o->task_id, o->msg);
        return 0;
}

/* 1 replied or parked, 2 waiting for the name owner (on_owner_reply replies), or an error. */
static int method_task_run(Models *m, sd_bus_message *msg, bool reg, const char *agent, const char *task_id,
                           sd_bus_error *error) {
        uid_t uid;
        int r = con_authz_caller_uid(m->authz, msg, &uid, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 2;       /* parked: runs again when the bus has said who is calling */
        if (uid == 0) {
                r = task_apply(m, msg, agent, task_id, reg);
                return r < 0 ? r : 1;
        }

        _cleanup_free_ char *name = NULL;
        r = con_agent_bus_name(agent, &name);
        if (r < 0)
                return r;
        _cleanup_(owner_lookup_freep) OwnerLookup *o = calloc(1, sizeof(*o));
        if (!o)
                return -ENOMEM;
        *o = (OwnerLookup) { .m = m, .msg = sd_bus_message_ref(msg), .agent = strdup(agent),
                             .task_id = strdup(task_id), .register_task = reg };
        if (!o->agent || !o->task_id)
                return -ENOMEM;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *q = NULL;
        r = sd_bus_message_new_method_call(m->bus, &q, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                           "org.freedesktop.DBus", "GetNameOwner");
        if (r >= 0)
                r = sd_bus_message_append(q, "s", name);
        if (r >= 0)
                r = sd_bus_call_async(m->bus, NULL, q, on_owner_reply, o, OWNER_LOOKUP_TIMEOUT_USEC);
        if (r < 0)
                return r;
        TAKE_PTR(o);
        return 2;
}

/* RegisterTask / UnregisterTask: root, or the caller that owns org.conspiracy.<Agent> (the agent
 * service: the bus policy decides who may own that name; its sessions cannot take it while the
 * service holds it). */
static int method_task(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Models *m = userdata;
        bool reg = streq(sd_bus_message_get_member(msg), "RegisterTask");
        const char *agent, *task_id;
        int r;

        r = sd_bus_message_read(msg, "ss", &agent, &task_id);
        if (r < 0)
                return r;
        if (!con_config_find_agent(m->config, agent))
                return con_bus_error_setf(error, CON_ERROR_NO_SUCH_AGENT, "no agent '%s' is configured in %s",
                                          agent, m->config->path);
        size_t l = strlen(task_id);
        bool ok = l >= 1 && l <= 128;
        for (size_t k = 0; ok && k < l; k++)
                ok = task_id[k] > ' ' && task_id[k] < 0x7f;
        if (!ok)
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS,
                                        "task_id: must be 1 to 128 printable characters without spaces");
        if (reg)
                pending_begin(m, agent, task_id, msg);
        r = method_task_run(m, msg, reg, agent, task_id, error);
        if (r != 2 && reg)
                pending_end(m, agent, task_id, msg);    /* decided: replied, or the error below */
        return r < 0 ? r : 1;
}

static int property_usage(sd_bus *bus, const char *path, const char *interface, const char *property,
                          sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        (void) bus, (void) path, (void) interface, (void) property, (void) error;
        Models *m = userdata;
        const char *agent;
        uint64_t in, out;
        int r = sd_bus_message_open_container(reply, 'a', "{s(tt)}");
        if (r < 0)
                return r;
        for (size_t i = 0; m && model_ledger_nth(m->ledger, today(), i, &agent, &in, &out); i++) {
                r = sd_bus_message_append(reply, "{s(tt)}", agent, in, out);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(reply);
}

static int property_counter(sd_bus *bus, const char *path, const char *interface, const char *property,
                            sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        (void) bus, (void) path, (void) interface, (void) error;
        Models *m = userdata;
        if (streq(property, "Pending"))
                return sd_bus_message_append(reply, "u", m ? m->n_calls : 0);
        return sd_bus_message_append(reply, "t", !m ? 0 : streq(property, "Requests") ? m->requests : m->failures);
}

static int method_reload(sd_bus_message *msg, void *userdata, sd_bus_error *error);
static int property_config_error(sd_bus *bus, const char *path, const char *interface, const char *property,
                                 sd_bus_message *reply, void *userdata, sd_bus_error *error);

static const sd_bus_vtable models_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_NAMES("Complete", "s", SD_BUS_PARAM(request_json), "s", SD_BUS_PARAM(response_json),
                                 method_complete, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("RegisterTask", "ss", SD_BUS_PARAM(agent) SD_BUS_PARAM(task_id), NULL, ,
                                 method_task, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("UnregisterTask", "ss", SD_BUS_PARAM(agent) SD_BUS_PARAM(task_id), NULL, ,
                                 method_task, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Reload", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_reload, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_NAMES("BudgetExhausted", "ss", SD_BUS_PARAM(agent) SD_BUS_PARAM(budget), 0),
        SD_BUS_PROPERTY("Usage", "a{s(tt)}", property_usage, 0, 0),
        SD_BUS_PROPERTY("Requests", "t", property_counter, 0, 0),
        SD_BUS_PROPERTY("Failures", "t", property_counter, 0, 0),
        SD_BUS_PROPERTY("Pending", "u", property_counter, 0, 0),
        SD_BUS_PROPERTY("ConfigError", "s", property_config_error, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_VTABLE_END,
};

int models_introspect_xml(char **ret) {
        return con_bus_introspect_vtable(CON_MODELS_PATH, CON_MODELS_INTERFACE, models_vtable, ret);
}

/* ---- life cycle ---- */

/* SIGHUP and Reload: the config (providers, limits, budgets) and the keys again. A config that
 * does not load is refused and the running one kept; the reason is the ConfigError property. */
static int models_reload(Models *m) {
        char *had = m->config_error;
        int r, k;

        m->config_error = NULL;
        r = load_config(m);
        if (r < 0)
                log_error("Reload: keeping the previous configuration");
        k = load_env(m);
        if (k < 0) {
                log_error("Reload: keeping the previous keys");
                if (!m->config_error)
                        (void) asprintf(&m->config_error, "cannot read the keys in %s: %s",
                                        m->opts.env_path ?: CON_MODELS_ENV_PATH, strerror(-k));
        } else if (r >= 0)
                log_info("Reloaded the configuration and the keys");
        if (!streq_ptr(had, m->config_error))
                (void) sd_bus_emit_properties_changed(m->bus, CON_MODELS_PATH, CON_MODELS_INTERFACE, "ConfigError", NULL);
        free(had);
        return r < 0 ? r : k;
}

static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        (void) s, (void) si;
        (void) models_reload(userdata);
        return 0;
}

/* Reload: root only. */
static int method_reload(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Models *m = userdata;
        uid_t uid;
        int r = con_authz_caller_uid(m->authz, msg, &uid, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        if (uid != 0)
                return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED, "only root may reload the model gateway");
        r = models_reload(m);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return con_bus_error_setf(error, CON_ERROR_INVALID_CONFIG, "%s; the running configuration is kept",
                                          m->config_error ?: strerror(-r));
        return sd_bus_reply_method_return(msg, NULL);
}

static int property_config_error(sd_bus *bus, const char *path, const char *interface, const char *property,
                                 sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        (void) bus, (void) path, (void) interface, (void) property, (void) error;
        Models *m = userdata;
        return sd_bus_message_append(reply, "s", m ? strempty(m->config_error) : "");
}

int models_new(const ModelsOptions *o, sd_event *event, sd_bus *bus, Models **ret) {
        _cleanup_(models_freep) Models *m = calloc(1, sizeof(Models));
        int r;

        if (!m)
                return -ENOMEM;
        m->opts = *o;
        r = load_config(m);
        if (r < 0)
                return r;
        r = load_env(m);
        if (r < 0)
                return r;
        m->ledger = model_ledger_new();
        m->rate = model_rate_new(m->config->models.requests_per_minute, m->config->models.tokens_per_minute);
        if (!m->ledger || !m->rate)
                return -ENOMEM;

        const char *dir = o->log_dir ?: CON_MODELS_LOG_DIR;
        if (*dir) {
                restore_usage(m, dir);
                r = con_audit_open(dir, &m->audit);
                if (r < 0)
                        log_warning("cannot open the usage log in %s: %s; calls are not recorded", dir,
                                  strerror(-r));
                else
                        con_audit_set_sync(m->audit, false);
        }

        m->event = sd_event_ref(event);
        m->bus = sd_bus_ref(bus);
        r = con_http_new(m->event, &m->http);
        if (r < 0)
                return r;
        /* A non-streaming model call sends nothing until the model is done: only the total timeout counts. */
        con_http_set_low_speed(m->http, 0, 0);

        *ret = TAKE_PTR(m);
        return 0;
}

int models_start(Models *m) {
        sigset_t ss;
        int r;

        sigemptyset(&ss);
        sigaddset(&ss, SIGHUP);
        (void) sigprocmask(SIG_BLOCK, &ss, NULL);
        r = sd_event_add_signal(m->event, NULL, SIGHUP, on_sighup, m);
        if (r < 0)
                return r;
        r = sd_bus_add_object_vtable(m->bus, NULL, CON_MODELS_PATH, CON_MODELS_INTERFACE, models_vtable, m);
        if (r < 0)
                return r;
        /* Only for "who is calling" (con_authz_caller_uid): the gateway asks polkit nothing. */
        ConAuthzOptions ao = { .root_policy = CON_AUTHZ_ROOT_ALLOW, .no_cache = true,
                               .watch_dirs = (char * const[]) { NULL } };
        r = con_authz_new(m->bus, m->event, &ao, &m->authz);
        if (r < 0)
                return r;
        r = sd_bus_request_name(m->bus, CON_MODELS_BUS_NAME, 0);
        if (r < 0) {
                log_error("Failed to own %s (%s)%s", CON_MODELS_BUS_NAME, strerror(-r),
                          r == -EEXIST ? ": another con-modeld is running" :
                          r == -EACCES ? ": the bus policy lets only " CON_MODELS_USER " own it" : "");
                return r;
        }
        return 0;
}

Models *models_free(Models *m) {
        if (!m)
                return NULL;
        while (m->calls)
                call_free(m->calls);
        while (m->pending_regs)
                pending_release(m->pending_regs, false);
        sd_event_source_disable_unref(m->pump_timer);
        con_authz_free(m->authz);
        con_http_free(m->http);
        sd_bus_flush_close_unref(m->bus);
        sd_event_unref(m->event);
        con_audit_close(m->audit);
        model_rate_free(m->rate);
        model_ledger_free(m->ledger);
        strv_free_erase(m->env);
        con_config_free(m->config);
        free(m->config_error);
        free(m);
        return NULL;
}
