/* SPDX-License-Identifier: MIT */
/* con-webd's picture of the fabric, fed from the system bus (webd-state.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "json-util.h"
#include "log.h"
#include "macro.h"
#include "name-owners.h"
#include "names.h"
#include "strv.h"
#include "time-util.h"
#include "webd-state.h"

#define PROPERTIES_INTERFACE "org.freedesktop.DBus.Properties"

typedef enum EntityKind {
        ENTITY_AGENT,
        ENTITY_ROUTER,
        ENTITY_CONTRACTS,
        ENTITY_MODELS,
} EntityKind;

typedef struct Entity {
        WebdState *state;
        EntityKind kind;
        size_t agent;           /* index into agents (ENTITY_AGENT) */
        char *bus_name;         /* the well-known name */
        const char *path, *interface;
        char *owner;            /* its unique name while it has one */
} Entity;

typedef struct Agent {
        char *name, *tier, *mode;
        char *state, *current;
        uint32_t queue;
        uint64_t accepted, completed, failed;
        /* Models1.Usage: tokens today; the budget from the config. */
        uint64_t tokens_in, tokens_out;
        bool usage_known;
        ConModelBudget budget;
        uint64_t tokens_seen;   /* in + out at the last Usage, for the per-minute spend */
} Agent;

typedef struct Bucket {
        int64_t minute;         /* usec / 60 s; -1: unused */
        uint32_t tasks;         /* tasks that ended in that minute */
        uint32_t *queue_max;    /* per agent */
        uint64_t *tokens;       /* per agent: tokens spent in that minute */
} Bucket;

struct WebdState {
        WebdChangedFunc changed;
        void *userdata;
        sd_bus *bus;
        ConNameOwners *owners;          /* who owns the entities' names */
        char *system_name;

        Agent *agents;
        size_t n_agents;
        Entity *entities;       /* agents first, then router, contracts, models */
        size_t n_entities;

        bool router_up, contracts_up, models_up;
        uint64_t routed, rejected;
        uint32_t in_flight, backlog;

        cJSON *results;         /* Contracts1.Results as objects */
        cJSON *invalid;         /* Contracts1.Invalid */
        cJSON *violations;      /* open: from Results (fail) and the Violation* signals */
        cJSON *quarantined;
        char *halted;

        uint64_t requests, failures;
        uint32_t pending;

        cJSON *events;          /* the last WEBD_EVENTS_MAX, oldest first */
        uint64_t n_events;

        Bucket history[WEBD_HISTORY_MINUTES];
};

static uint64_t now_realtime(void) {
        return con_now(CLOCK_REALTIME);
}

static void notify(WebdState *s) {
        if (s->changed)
                s->changed(s->userdata);
}

static int set_string(char **p, const char *v) {
        char *n = strdup(strempty(v));
        if (!n)
                return -ENOMEM;
        free(*p);
        *p = n;
        return 0;
}

/* ---- history ---- */

static Bucket *bucket_now(WebdState *s) {
        int64_t minute = (int64_t) (now_realtime() / (60 * USEC_PER_SEC));
        Bucket *b = &s->history[minute % WEBD_HISTORY_MINUTES];
        if (b->minute != minute) {
                b->minute = minute;
                b->tasks = 0;
                for (size_t i = 0; i < s->n_agents; i++) {
                        b->queue_max[i] = s->agents[i].queue;
                        b->tokens[i] = 0;
                }
        }
        return b;
}

static void history_queue(WebdState *s, size_t agent) {
        Bucket *b = bucket_now(s);
        if (s->agents[agent].queue > b->queue_max[agent])
                b->queue_max[agent] = s->agents[agent].queue;
}

/* ---- events ---- */

static void add_event(WebdState *s, const char *event, const char *agent, const char *task_id,
                      const char *sender, const char *status, const char *detail) {
        cJSON *e = cJSON_CreateObject();
        if (!e)
                return;
        con_json_add_u64(e, "time", now_realtime());
        con_json_add_u64(e, "seq", ++s->n_events);
        cJSON_AddStringToObject(e, "event", event);
        if (agent)
                cJSON_AddStringToObject(e, "agent", agent);
        if (task_id)
                cJSON_AddStringToObject(e, "task_id", task_id);
        if (sender)
                cJSON_AddStringToObject(e, "sender", sender);
        if (status)
                cJSON_AddStringToObject(e, "status", status);
        if (detail)
                cJSON_AddStringToObject(e, "detail", detail);
        cJSON_AddItemToArray(s->events, e);
        while (cJSON_GetArraySize(s->events) > WEBD_EVENTS_MAX)
                cJSON_DeleteItemFromArray(s->events, 0);
}

/* ---- violations ---- */

static void violation_remove(WebdState *s, const char *id, const char *check) {
        for (int i = cJSON_GetArraySize(s->violations) - 1; i >= 0; i--) {
                const cJSON *v = cJSON_GetArrayItem(s->violations, i);
                if (streq_ptr(cJSON_GetStringValue(cJSON_GetObjectItem(v, "id")), id) &&
                    (!check || streq_ptr(cJSON_GetStringValue(cJSON_GetObjectItem(v, "check")), check)))
                        cJSON_DeleteItemFromArray(s->violations, i);
        }
}

static void violation_add(WebdState *s, const char *id, const char *check, const char *severity,
                          const char *message, const char *action, uint64_t since) {
        violation_remove(s, id, check);
        cJSON *v = cJSON_CreateObject();
        if (!v)
                return;
        cJSON_AddStringToObject(v, "id", id);
        cJSON_AddStringToObject(v, "check", check);
        cJSON_AddStringToObject(v, "severity", strempty(severity));
        cJSON_AddStringToObject(v, "message", strempty(message));
        cJSON_AddStringToObject(v, "action", strempty(action));
        con_json_add_u64(v, "since", since);
        cJSON_AddItemToArray(s->violations, v);
}

/* ---- properties ---- */

static int read_variant(sd_bus_message *m, const char *sig, void *p) {
        int r = sd_bus_message_enter_container(m, 'v', sig);
        if (r <= 0)
                return r < 0 ? r : -EBADMSG;
        r = sd_bus_message_read_basic(m, sig[0], p);
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

static int read_variant_string(sd_bus_message *m, char **p) {
        const char *v;
        int r = read_variant(m, "s", &v);
        return r < 0 ? r : set_string(p, v);
}

static int read_results(WebdState *s, sd_bus_message *m) {
        const char *id, *check, *status, *message;
        uint64_t end, duration;
        int r;

        cJSON *a = cJSON_CreateArray();
        if (!a)
                return -ENOMEM;
        r = sd_bus_message_enter_container(m, 'a', "(sssstt)");
        while (r >= 0 && (r = sd_bus_message_read(m, "(sssstt)", &id, &check, &status, &message, &end, &duration)) > 0) {
                cJSON *o = cJSON_CreateObject();
                if (!o)
                        break;
                cJSON_AddStringToObject(o, "id", id);
                cJSON_AddStringToObject(o, "check", check);
                cJSON_AddStringToObject(o, "status", status);
                cJSON_AddStringToObject(o, "message", message);
                con_json_add_u64(o, "end", end);
                con_json_add_u64(o, "duration", duration);
                cJSON_AddItemToArray(a, o);
                /* A failing check is an open violation until it passes again. */
                if (streq(status, "fail")) {
                        bool known = false;
                        const cJSON *v;
                        cJSON_ArrayForEach(v, s->violations)
                                if (streq_ptr(cJSON_GetStringValue(cJSON_GetObjectItem(v, "id")), id) &&
                                    streq_ptr(cJSON_GetStringValue(cJSON_GetObjectItem(v, "check")), check))
                                        known = true;
                        if (!known)
                                violation_add(s, id, check, "", message, "", end);
                } else if (streq(status, "pass"))
                        violation_remove(s, id, check);
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(m);
        if (r < 0) {
                cJSON_Delete(a);
                return r;
        }
        cJSON_Delete(s->results);
        s->results = a;
        return 0;
}

static int read_invalid(WebdState *s, sd_bus_message *m) {
        const char *file, *reason;
        int r;
        cJSON *a = cJSON_CreateArray();
        if (!a)
                return -ENOMEM;
        r = sd_bus_message_enter_container(m, 'a', "(ss)");
        while (r >= 0 && (r = sd_bus_message_read(m, "(ss)", &file, &reason)) > 0) {
                cJSON *o = cJSON_CreateObject();
                if (!o)
                        break;
                cJSON_AddStringToObject(o, "file", file);
                cJSON_AddStringToObject(o, "reason", reason);
                cJSON_AddItemToArray(a, o);
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(m);
        if (r < 0) {
                cJSON_Delete(a);
                return r;
        }
        cJSON_Delete(s->invalid);
        s->invalid = a;
        return 0;
}

static Agent *agent_by_name(WebdState *s, const char *name) {
        for (size_t i = 0; i < s->n_agents; i++)
                if (streq(s->agents[i].name, name))
                        return &s->agents[i];
        return NULL;
}

static int read_usage(WebdState *s, sd_bus_message *m) {
        const char *name;
        uint64_t in, out;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{s(tt)}");
        while (r >= 0 && (r = sd_bus_message_read(m, "{s(tt)}", &name, &in, &out)) > 0) {
                Agent *a = agent_by_name(s, name);
                if (!a)
                        continue;
                uint64_t total = in + out;
                /* Usage is per UTC day: after midnight the total starts again from 0. */
                uint64_t spent = total >= a->tokens_seen ? total - a->tokens_seen : total;
                if (a->usage_known && spent > 0)
                        bucket_now(s)->tokens[a - s->agents] += spent;
                a->tokens_in = in;
                a->tokens_out = out;
                a->tokens_seen = total;
                a->usage_known = true;
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(m);
        return r;
}

/* m is positioned at the variant of property name. Unknown or mistyped properties are skipped. */
static int apply_property(Entity *e, const char *name, sd_bus_message *m) {
        WebdState *s = e->state;
        const char *contents;
        char type;
        int r;

        r = sd_bus_message_peek_type(m, &type, &contents);
        if (r < 0)
                return r;
        if (type != 'v')
                return -EBADMSG;

#define IS(n, sig) (streq(name, n) && streq(contents, sig))
        switch (e->kind) {
        case ENTITY_AGENT: {
                Agent *a = &s->agents[e->agent];
                if (IS("State", "s"))
                        return read_variant_string(m, &a->state);
                if (IS("CurrentTask", "s"))
                        return read_variant_string(m, &a->current);
                if (IS("Tier", "s"))
                        return read_variant_string(m, &a->tier);
                if (IS("Mode", "s"))
                        return read_variant_string(m, &a->mode);
                if (IS("QueueLength", "u")) {
                        r = read_variant(m, "u", &a->queue);
                        if (r >= 0)
                                history_queue(s, e->agent);
                        return r;
                }
                if (IS("TasksAccepted", "t"))
                        return read_variant(m, "t", &a->accepted);
                if (IS("TasksCompleted", "t"))
                        return read_variant(m, "t", &a->completed);
                if (IS("TasksFailed", "t"))
                        return read_variant(m, "t", &a->failed);
                break;
        }
        case ENTITY_ROUTER:
                if (IS("Routed", "t"))
                        return read_variant(m, "t", &s->routed);
                if (IS("Rejected", "t"))
                        return read_variant(m, "t", &s->rejected);
                if (IS("InFlight", "u"))
                        return read_variant(m, "u", &s->in_flight);
                if (IS("Backlog", "u"))
                        return read_variant(m, "u", &s->backlog);
                break;
        case ENTITY_CONTRACTS:
                if (IS("Halted", "s"))
                        return read_variant_string(m, &s->halted);
                if (IS("Results", "a(sssstt)") || IS("Invalid", "a(ss)") || IS("Quarantined", "as")) {
                        r = sd_bus_message_enter_container(m, 'v', contents);
                        if (r < 0)
                                return r;
                        if (streq(name, "Results"))
                                r = read_results(s, m);
                        else if (streq(name, "Invalid"))
                                r = read_invalid(s, m);
                        else {
                                _cleanup_strv_free_ char **l = NULL;
                                r = sd_bus_message_read_strv(m, &l);
                                if (r >= 0) {
                                        cJSON *a = cJSON_CreateArray();
                                        STRV_FOREACH(i, l)
                                                cJSON_AddItemToArray(a, cJSON_CreateString(*i));
                                        cJSON_Delete(s->quarantined);
                                        s->quarantined = a;
                                }
                        }
                        if (r < 0)
                                return r;
                        return sd_bus_message_exit_container(m);
                }
                break;
        case ENTITY_MODELS:
                if (IS("Requests", "t"))
                        return read_variant(m, "t", &s->requests);
                if (IS("Failures", "t"))
                        return read_variant(m, "t", &s->failures);
                if (IS("Pending", "u"))
                        return read_variant(m, "u", &s->pending);
                if (IS("Usage", "a{s(tt)}")) {
                        r = sd_bus_message_enter_container(m, 'v', contents);
                        if (r < 0)
                                return r;
                        r = read_usage(s, m);
                        if (r < 0)
                                return r;
                        return sd_bus_message_exit_container(m);
                }
                break;
        }
#undef IS
        return sd_bus_message_skip(m, "v");
}

/* Reads an a{sv} of properties. */
static int apply_properties(Entity *e, sd_bus_message *m) {
        const char *name;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                r = sd_bus_message_read(m, "s", &name);
                if (r < 0)
                        return r;
                r = apply_property(e, name, m);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

static int on_get_all(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Entity *e = userdata;
        const sd_bus_error *err = sd_bus_message_get_error(m);
        if (err) {
                log_debug("GetAll of %s failed: %s", e->bus_name, err->message);
                return 0;
        }
        int r = apply_properties(e, m);
        if (r < 0)
                log_warning_errno(r, "Cannot read the properties of %s: %m", e->bus_name);
        notify(e->state);
        return 0;
}

static int on_get_one(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Entity *e = userdata;
        const char *prop = NULL;
        if (sd_bus_message_is_method_error(m, NULL))
                return 0;
        /* The property's name travels as the call's slot description (refresh_one). */
        if (sd_bus_slot_get_description(sd_bus_get_current_slot(e->state->bus), &prop) < 0 || !prop)
                return 0;
        int r = apply_property(e, prop, m);
        if (r < 0)
                log_warning_errno(r, "Cannot read %s of %s: %m", prop, e->bus_name);
        notify(e->state);
        return 0;
}

/* Asks the entity's current owner (never the well-known name: that could start the service). */
static int refresh_all(Entity *e) {
        if (!e->owner)
                return 0;
        return sd_bus_call_method_async(e->state->bus, NULL, e->owner, e->path, PROPERTIES_INTERFACE, "GetAll",
                                        on_get_all, e, "s", e->interface);
}

static int refresh_one(Entity *e, const char *prop) {
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        int r;
        if (!e->owner)
                return 0;
        r = sd_bus_call_method_async(e->state->bus, &slot, e->owner, e->path, PROPERTIES_INTERFACE, "Get",
                                     on_get_one, e, "ss", e->interface, prop);
        if (r < 0)
                return r;
        r = sd_bus_slot_set_description(slot, prop);
        if (r < 0)
                return r;
        return sd_bus_slot_set_floating(slot, 1);
}

static bool *entity_up(Entity *e) {
        WebdState *s = e->state;
        switch (e->kind) {
        case ENTITY_ROUTER:
                return &s->router_up;
        case ENTITY_CONTRACTS:
                return &s->contracts_up;
        case ENTITY_MODELS:
                return &s->models_up;
        default:
                return NULL;
        }
}

static void set_owner(Entity *e, const char *owner) {
        WebdState *s = e->state;
        if (streq_ptr(e->owner, isempty(owner) ? NULL : owner))
                return;
        free(e->owner);
        e->owner = isempty(owner) ? NULL : strdup(owner);
        bool *up = entity_up(e);
        if (up)
                *up = !!e->owner;
        if (e->kind == ENTITY_AGENT) {
                Agent *a = &s->agents[e->agent];
                if (!e->owner) {
                        (void) set_string(&a->state, "down");
                        (void) set_string(&a->current, "");
                        a->queue = 0;
                }
        }
        if (e->owner)
                (void) refresh_all(e);
        notify(s);
}

static Entity *entity_models(WebdState *s) {
        return &s->entities[s->n_agents + 2];   /* agents, then router, contracts, models */
}

static Entity *entity_by_sender(WebdState *s, sd_bus_message *m, EntityKind kind) {
        const char *sender = sd_bus_message_get_sender(m);
        if (!sender)
                return NULL;
        for (size_t i = 0; i < s->n_entities; i++)
                if (s->entities[i].kind == kind && streq_ptr(s->entities[i].owner, sender))
                        return &s->entities[i];
        return NULL;
}

static void on_owner_changed(ConNameOwners *w, const char *name, const char *owner, void *userdata) {
        WebdState *s = userdata;
        for (size_t i = 0; i < s->n_entities; i++)
                if (streq(s->entities[i].bus_name, name))
                        set_owner(&s->entities[i], owner);
}

static int on_properties_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        WebdState *s = userdata;
        const char *iface;
        int r;

        if (sd_bus_message_read(m, "s", &iface) < 0)
                return 0;
        EntityKind kind;
        if (streq(iface, CON_AGENT_INTERFACE))
                kind = ENTITY_AGENT;
        else if (streq(iface, CON_ROUTER_INTERFACE))
                kind = ENTITY_ROUTER;
        else if (streq(iface, CON_CONTRACTS_INTERFACE))
                kind = ENTITY_CONTRACTS;
        else if (streq(iface, CON_MODELS_INTERFACE))
                kind = ENTITY_MODELS;
        else
                return 0;
        Entity *e = entity_by_sender(s, m, kind);
        if (!e)
                return 0;
        r = apply_properties(e, m);
        if (r >= 0) {
                _cleanup_strv_free_ char **inval = NULL;
                r = sd_bus_message_read_strv(m, &inval);
                STRV_FOREACH(p, inval)
                        (void) refresh_one(e, *p);
        }
        if (r < 0)
                log_debug("Cannot read PropertiesChanged of %s: %s", e->bus_name, strerror(-r));
        notify(s);
        return 0;
}

static int on_agent_signal(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        WebdState *s = userdata;
        const char *id = NULL, *sender = NULL, *status = NULL;
        Entity *e = entity_by_sender(s, m, ENTITY_AGENT);
        if (!e)
                return 0;
        Agent *a = &s->agents[e->agent];
        const char *member = sd_bus_message_get_member(m);
        if (streq(member, "TaskAccepted") && sd_bus_message_read(m, "ss", &id, &sender) >= 0)
                add_event(s, "task.accepted", a->name, id, sender, NULL, NULL);
        else if (streq(member, "TaskStarted") && sd_bus_message_read(m, "ss", &id, &sender) >= 0)
                add_event(s, "task.started", a->name, id, sender, NULL, NULL);
        else if (streq(member, "TaskCompleted") && sd_bus_message_read(m, "sss", &id, &sender, &status) >= 0) {
                add_event(s, "task.completed", a->name, id, sender, status, NULL);
                bucket_now(s)->tasks++;
                /* The gateway's Usage does not signal changes: a task's end is when it moved. */
                (void) refresh_all(entity_models(s));
        } else
                return 0;
        /* The agent does not announce the counters of its very first flush: read them again at
         * each accepted or finished task, so they never stay behind the events. */
        if (!streq(member, "TaskStarted"))
                (void) refresh_all(e);
        notify(s);
        return 0;
}

static const char *basename_of(const char *p) {
        const char *b = strrchr(p, '/');
        return b ? b + 1 : p;
}

static int on_service_signal(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        WebdState *s = userdata;
        const char *a1, *a2, *a3, *a4, *a5;
        const char *member = sd_bus_message_get_member(m);

        if (sd_bus_message_has_signature(m, "sss") && entity_by_sender(s, m, ENTITY_ROUTER) &&
            streq(member, "TaskRouted") && sd_bus_message_read(m, "sss", &a1, &a2, &a3) >= 0)
                add_event(s, "task.routed", a2, a1, a3, NULL, NULL);
        else if (entity_by_sender(s, m, ENTITY_ROUTER) && streq(member, "TaskRejected") &&
                 sd_bus_message_read(m, "ss", &a1, &a2) >= 0)
                add_event(s, "task.rejected", NULL, NULL, NULL, NULL, basename_of(a1));
        else if (entity_by_sender(s, m, ENTITY_CONTRACTS) && streq(member, "ViolationDetected") &&
                 sd_bus_message_read(m, "sssss", &a1, &a2, &a3, &a4, &a5) >= 0) {
                violation_add(s, a1, a2, a3, a4, a5, now_realtime());
                add_event(s, "violation.raised", NULL, NULL, NULL, a3, a1);
        } else if (entity_by_sender(s, m, ENTITY_CONTRACTS) && streq(member, "ViolationCleared") &&
                   sd_bus_message_read(m, "ss", &a1, &a2) >= 0) {
                violation_remove(s, a1, a2);
                add_event(s, "violation.cleared", NULL, NULL, NULL, NULL, a1);
        } else if (entity_by_sender(s, m, ENTITY_CONTRACTS) && streq(member, "ActionTaken") &&
                   sd_bus_message_read(m, "sss", &a1, &a2, &a3) >= 0)
                add_event(s, "action.taken", NULL, NULL, NULL, a1, isempty(a3) ? a2 : a3);
        else if (entity_by_sender(s, m, ENTITY_MODELS) && streq(member, "BudgetExhausted") &&
                 sd_bus_message_read(m, "ss", &a1, &a2) >= 0)
                add_event(s, "budget.exhausted", a1, NULL, NULL, NULL, a2);
        else
                return 0;
        notify(s);
        return 0;
}

/* ---- set-up ---- */

int webd_state_new(const ConConfig *config, WebdChangedFunc changed, void *userdata, WebdState **ret) {
        _cleanup_(webd_state_freep) WebdState *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->changed = changed;
        s->userdata = userdata;
        s->system_name = strdup(strempty(config->system_name));
        s->results = cJSON_CreateArray();
        s->invalid = cJSON_CreateArray();
        s->violations = cJSON_CreateArray();
        s->quarantined = cJSON_CreateArray();
        s->events = cJSON_CreateArray();
        s->halted = strdup("");
        s->agents = calloc(config->n_agents ?: 1, sizeof(Agent));
        s->entities = calloc(config->n_agents + 3, sizeof(Entity));
        if (!s->system_name || !s->results || !s->invalid || !s->violations || !s->quarantined || !s->events ||
            !s->halted || !s->agents || !s->entities)
                return -ENOMEM;
        for (size_t i = 0; i < WEBD_HISTORY_MINUTES; i++) {
                s->history[i].minute = -1;
                s->history[i].queue_max = calloc(config->n_agents ?: 1, sizeof(uint32_t));
                s->history[i].tokens = calloc(config->n_agents ?: 1, sizeof(uint64_t));
                if (!s->history[i].queue_max || !s->history[i].tokens)
                        return -ENOMEM;
        }

        for (size_t i = 0; i < config->n_agents; i++) {
                const ConAgent *ca = &config->agents[i];
                Agent *a = &s->agents[s->n_agents++];
                a->name = strdup(ca->name);
                a->tier = strdup(con_tier_to_string(ca->tier));
                a->mode = strdup(con_mode_to_string(ca->mode));
                a->state = strdup("down");
                a->current = strdup("");
                if (!a->name || !a->tier || !a->mode || !a->state || !a->current)
                        return -ENOMEM;
                con_config_model_budget(config, ca->name, &a->budget);

                Entity *e = &s->entities[s->n_entities++];
                *e = (Entity) { .state = s, .kind = ENTITY_AGENT, .agent = i, .path = CON_AGENT_PATH,
                                .interface = CON_AGENT_INTERFACE };
                int r = con_agent_bus_name(ca->name, &e->bus_name);
                if (r < 0)
                        return r;
        }
        static const struct {
                EntityKind kind;
                const char *name, *path, *interface;
        } services[] = {
                { ENTITY_ROUTER, CON_ROUTER_BUS_NAME, CON_ROUTER_PATH, CON_ROUTER_INTERFACE },
                { ENTITY_CONTRACTS, CON_CONTRACTS_BUS_NAME, CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE },
                { ENTITY_MODELS, CON_MODELS_BUS_NAME, CON_MODELS_PATH, CON_MODELS_INTERFACE },
        };
        for (size_t i = 0; i < ELEMENTSOF(services); i++) {
                Entity *e = &s->entities[s->n_entities++];
                *e = (Entity) { .state = s, .kind = services[i].kind, .path = services[i].path,
                                .interface = services[i].interface, .bus_name = strdup(services[i].name) };
                if (!e->bus_name)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(s);
        return 0;
}

WebdState *webd_state_free(WebdState *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n_agents; i++) {
                Agent *a = &s->agents[i];
                free(a->name);
                free(a->tier);
                free(a->mode);
                free(a->state);
                free(a->current);
        }
        for (size_t i = 0; i < s->n_entities; i++) {
                free(s->entities[i].bus_name);
                free(s->entities[i].owner);
        }
        for (size_t i = 0; i < WEBD_HISTORY_MINUTES; i++) {
                free(s->history[i].queue_max);
                free(s->history[i].tokens);
        }
        free(s->agents);
        free(s->entities);
        free(s->system_name);
        free(s->halted);
        cJSON_Delete(s->results);
        cJSON_Delete(s->invalid);
        cJSON_Delete(s->violations);
        cJSON_Delete(s->quarantined);
        cJSON_Delete(s->events);
        con_name_owners_free(s->owners);
        sd_bus_unref(s->bus);
        free(s);
        return NULL;
}

int webd_state_attach(WebdState *s, sd_bus *bus) {
        int r;

        s->bus = sd_bus_ref(bus);
        /* Signals first, then the owners: a change between the two is seen either way. */
        /* Only the fabric's names and objects: under systemd every unit change is a
         * PropertiesChanged and every connection a NameOwnerChanged, none of them ours. */
        r = con_name_owners_new(bus, "org.conspiracy", true, on_owner_changed, s, &s->owners);
        if (r < 0)
                return r;
        r = sd_bus_add_match_async(bus, NULL,
                                   "type='signal',interface='" PROPERTIES_INTERFACE "',member='PropertiesChanged',"
                                   "path_namespace='/org/conspiracy'",
                                   on_properties_changed, NULL, s);
        if (r < 0)
                return r;
        r = sd_bus_match_signal_async(bus, NULL, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, NULL,
                                      on_agent_signal, NULL, s);
        if (r < 0)
                return r;
        static const char *const ifaces[] = { CON_ROUTER_INTERFACE, CON_CONTRACTS_INTERFACE, CON_MODELS_INTERFACE };
        for (size_t i = 0; i < ELEMENTSOF(ifaces); i++) {
                r = sd_bus_match_signal_async(bus, NULL, NULL, NULL, ifaces[i], NULL, on_service_signal, NULL, s);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < s->n_entities; i++) {
                r = con_name_owners_add(s->owners, s->entities[i].bus_name);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- JSON ---- */

static void add_history(WebdState *s, cJSON *o, uint64_t now) {
        int64_t last = (int64_t) (now / (60 * USEC_PER_SEC));
        cJSON *minutes = cJSON_AddArrayToObject(o, "minutes");
        cJSON *tasks = cJSON_AddArrayToObject(o, "tasks");
        cJSON *queue = cJSON_AddObjectToObject(o, "queue");
        cJSON *tokens = cJSON_AddObjectToObject(o, "tokens");
        cJSON **q = calloc(s->n_agents ?: 1, sizeof(cJSON *)), **t = calloc(s->n_agents ?: 1, sizeof(cJSON *));
        uint32_t *carry = calloc(s->n_agents ?: 1, sizeof(uint32_t));
        if (!q || !t || !carry || !minutes || !tasks || !queue || !tokens)
                goto done;
        for (size_t i = 0; i < s->n_agents; i++) {
                q[i] = cJSON_AddArrayToObject(queue, s->agents[i].name);
                t[i] = cJSON_AddArrayToObject(tokens, s->agents[i].name);
        }
        for (int64_t m = last - WEBD_HISTORY_MINUTES + 1; m <= last; m++) {
                const Bucket *b = &s->history[m % WEBD_HISTORY_MINUTES];
                bool have = b->minute == m;
                cJSON_AddItemToArray(minutes, con_json_create_u64((uint64_t) m * 60 * USEC_PER_SEC));
                cJSON_AddItemToArray(tasks, cJSON_CreateNumber(have ? b->tasks : 0));
                for (size_t i = 0; i < s->n_agents; i++) {
                        /* A minute without a change kept the queue it had. */
                        uint32_t v = have ? b->queue_max[i] : (m == last ? s->agents[i].queue : carry[i]);
                        if (have)
                                carry[i] = s->agents[i].queue;
                        cJSON_AddItemToArray(q[i], cJSON_CreateNumber(v));
                        cJSON_AddItemToArray(t[i], con_json_create_u64(have ? b->tokens[i] : 0));
                }
        }
done:
        free(q);
        free(t);
        free(carry);
}

char *webd_state_to_json(WebdState *s, uint64_t now) {
        _cleanup_(cJSON_Deletep) cJSON *o = cJSON_CreateObject();
        if (!o)
                return NULL;
        cJSON_AddStringToObject(o, "system", s->system_name);
        con_json_add_u64(o, "now", now);

        cJSON *agents = cJSON_AddArrayToObject(o, "agents");
        for (size_t i = 0; agents && i < s->n_agents; i++) {
                const Agent *a = &s->agents[i];
                cJSON *j = cJSON_CreateObject();
                if (!j)
                        return NULL;
                cJSON_AddItemToArray(agents, j);
                cJSON_AddStringToObject(j, "name", a->name);
                cJSON_AddStringToObject(j, "tier", a->tier);
                cJSON_AddStringToObject(j, "mode", a->mode);
                cJSON_AddBoolToObject(j, "running", !!s->entities[i].owner);
                cJSON_AddStringToObject(j, "state", a->state);
                con_json_add_u64(j, "queue", a->queue);
                cJSON_AddStringToObject(j, "current_task", a->current);
                con_json_add_u64(j, "accepted", a->accepted);
                con_json_add_u64(j, "completed", a->completed);
                con_json_add_u64(j, "failed", a->failed);
                cJSON *u = cJSON_AddObjectToObject(j, "usage");
                if (u && a->usage_known) {
                        con_json_add_u64(u, "tokens_in", a->tokens_in);
                        con_json_add_u64(u, "tokens_out", a->tokens_out);
                        if (a->budget.price_per_mtok_in > 0 && a->budget.price_per_mtok_out > 0)
                                cJSON_AddNumberToObject(u, "cost", (a->tokens_in * a->budget.price_per_mtok_in +
                                                                    a->tokens_out * a->budget.price_per_mtok_out) / 1e6);
                }
                cJSON *b = cJSON_AddObjectToObject(j, "budget");
                if (b) {
                        con_json_add_u64(b, "tokens_per_day", a->budget.tokens_per_day);
                        con_json_add_u64(b, "tokens_per_task", a->budget.tokens_per_task);
                        cJSON_AddNumberToObject(b, "cost_per_day", a->budget.cost_per_day);
                }
        }

        cJSON *router = cJSON_AddObjectToObject(o, "router");
        if (router) {
                cJSON_AddBoolToObject(router, "running", s->router_up);
                con_json_add_u64(router, "routed", s->routed);
                con_json_add_u64(router, "rejected", s->rejected);
                con_json_add_u64(router, "in_flight", s->in_flight);
                con_json_add_u64(router, "backlog", s->backlog);
        }
        cJSON *contracts = cJSON_AddObjectToObject(o, "contracts");
        if (contracts) {
                cJSON_AddBoolToObject(contracts, "running", s->contracts_up);
                cJSON_AddItemToObject(contracts, "results", cJSON_Duplicate(s->results, true));
                cJSON_AddItemToObject(contracts, "violations", cJSON_Duplicate(s->violations, true));
                cJSON_AddItemToObject(contracts, "invalid", cJSON_Duplicate(s->invalid, true));
                cJSON_AddStringToObject(contracts, "halted", s->halted);
                cJSON_AddItemToObject(contracts, "quarantined", cJSON_Duplicate(s->quarantined, true));
        }
        cJSON *models = cJSON_AddObjectToObject(o, "models");
        if (models) {
                cJSON_AddBoolToObject(models, "running", s->models_up);
                con_json_add_u64(models, "requests", s->requests);
                con_json_add_u64(models, "failures", s->failures);
                con_json_add_u64(models, "pending", s->pending);
        }
        cJSON_AddItemToObject(o, "events", cJSON_Duplicate(s->events, true));
        cJSON *h = cJSON_AddObjectToObject(o, "history");
        if (h)
                add_history(s, h, now);
        return cJSON_PrintUnformatted(o);
}
