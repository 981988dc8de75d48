/* SPDX-License-Identifier: MIT */
#include <stdarg.h>

#include "agent-api.h"
#include "agent-builtins.h"
#include "agent-history.h"
#include "macro.h"
#include "names.h"
#include "policy-vocab.h"
#include "strv.h"
#include "utf8.h"

#define QUERY_TIMEOUT (2 * USEC_PER_SEC)
#define RECENT_TASKS 10

typedef struct Builtin {
        const char *name;
        const char *help;
        int (*run)(AgentContext *c, AgentTask *t);
} Builtin;

bool agent_builtin_is(const char *text) {
        return text && text[0] == '/';
}

/* A tiny growing string for the answers. */
typedef struct Buf {
        char *s;
        size_t len;
        bool oom;
} Buf;

static _printf_(2, 3) void buf_printf(Buf *b, const char *fmt, ...) {
        va_list ap;
        char *add = NULL;
        if (b->oom)
                return;
        va_start(ap, fmt);
        int n = vasprintf(&add, fmt, ap);
        va_end(ap);
        if (n < 0) {
                b->oom = true;
                return;
        }
        char *s = realloc(b->s, b->len + (size_t) n + 1);
        if (!s) {
                free(add);
                b->oom = true;
                return;
        }
        memcpy(s + b->len, add, (size_t) n + 1);
        b->s = s;
        b->len += (size_t) n;
        free(add);
}

static int buf_complete(AgentContext *c, AgentTask *t, Buf *b, AgentTaskStatus st) {
        _cleanup_free_ char *s = b->s;
        if (b->oom)
                return -ENOMEM;
        return agent_context_complete(c, t, st, strempty(s));
}

static int builtin_ping(AgentContext *c, AgentTask *t) {
        return agent_context_complete(c, t, AGENT_TASK_DONE, "pong");
}

static int builtin_help(AgentContext *c, AgentTask *t);

static int builtin_status(AgentContext *c, AgentTask *t) {
        const ConAgent *a = agent_context_agent(c);
        AgentQueueStats st;
        Buf b = {};
        agent_queue_get_stats(agent_context_queue(c), &st);
        _cleanup_free_ char *roles = strv_join(a->roles, ", ");
        uint64_t up = agent_context_uptime_usec(c) / USEC_PER_SEC;

        buf_printf(&b, "agent: %s\n", a->name);
        buf_printf(&b, "tier: %s\n", isempty(con_tier_to_string(a->tier)) ? "(none)" : con_tier_to_string(a->tier));
        buf_printf(&b, "mode: %s\n", con_mode_to_string(a->mode));
        buf_printf(&b, "roles: %s\n", isempty(roles) ? "(none)" : roles);
        buf_printf(&b, "state: %s\n", agent_context_state(c));
        buf_printf(&b, "queue: %zu queued, %zu running, max_sessions %u\n", st.n_queued, st.n_running,
                   a->max_sessions ?: 1);
        buf_printf(&b, "tasks: %zu accepted, %llu done, %llu failed, %llu cancelled\n", st.n_tasks,
                   (unsigned long long) st.n_done, (unsigned long long) st.n_failed,
                   (unsigned long long) st.n_cancelled);
        if (agent_context_runtime(c) == &con_runtime_exec)
                buf_printf(&b, "runtime: exec (%s)\n", a->command && a->command[0] ? a->command[0] : "no command");
        else
                buf_printf(&b, "runtime: %s (model %s, provider %s)\n", strempty(a->rt.runner),
                           isempty(a->rt.model) ? "not configured" : a->rt.model, strempty(a->rt.provider));
        buf_printf(&b, "uptime: %llus\n", (unsigned long long) up);
        buf_printf(&b, "directory: %s\n", agent_context_data_dir(c));
        return buf_complete(c, t, &b, AGENT_TASK_DONE);
}

static int builtin_tasks(AgentContext *c, AgentTask *t) {
        size_t n, shown = 0;
        AgentTask * const *tasks = agent_queue_tasks(agent_context_queue(c), &n);
        Buf b = {};
        /* The submitter's own recent tasks (root sees all, but only the text of its own: a task's
         * text is for its sender), newest first, without this one. Own: the same principal too, as
         * the tasks of every other host's senders share the mesh gateway's uid. */
        for (size_t i = n; i > 0 && shown < RECENT_TASKS; i--) {
                const AgentTask *x = tasks[i - 1];
                bool own = agent_task_same_sender(x, t->sender_uid, t->sender);
                if (x == t || (t->sender_uid != 0 && !own))
                        continue;
                char first[61] = "";
                if (!own) {
                        buf_printf(&b, "%s  %-9s  %s  (another sender's task)\n", x->id,
                                   agent_task_status_to_a2a(x->status), x->sender);
                        shown++;
                        continue;
                }
                if (x->text) {
                        size_t l = strcspn(x->text, "\n");
                        if (l > 60)
                                l = 60;
                        memcpy(first, x->text, l);
                        first[l] = 0;
                }
                buf_printf(&b, "%s  %-9s  %s  %s\n", x->id, agent_task_status_to_a2a(x->status), x->sender,
                           x->text ? first : "(text in processed/)");
                shown++;
        }
        if (shown == 0)
                buf_printf(&b, "no earlier tasks\n");
        return buf_complete(c, t, &b, AGENT_TASK_DONE);
}

/* /agents: every agent of the config with its live state from the bus. Asynchronous: ListNames,
 * then GetAll on each running agent (without activating anyone). */

typedef struct AgentsQuery AgentsQuery;
typedef struct AgentsEntry {
        AgentsQuery *q;
        const ConAgent *agent;
        char *bus_name;
        bool running, answered;
        char *state;
        uint32_t queue_length;
} AgentsEntry;

struct AgentsQuery {
        AgentContext *c;
        char *task_id;          /* looked up again at the end: a cancelled task may be evicted meanwhile */
        AgentsEntry *entries;
        size_t n_entries;
        unsigned outstanding;
        bool no_bus;
};

static void agents_query_free(AgentsQuery *q) {
        for (size_t i = 0; i < q->n_entries; i++) {
                free(q->entries[i].bus_name);
                free(q->entries[i].state);
        }
        free(q->entries);
        free(q->task_id);
        free(q);
}

static void agents_query_finish(AgentsQuery *q) {
        AgentContext *c = q->c;
        Buf b = {};
        buf_printf(&b, "agents of %s:\n", strempty(agent_context_config(c)->system_name));
        for (size_t i = 0; i < q->n_entries; i++) {
                AgentsEntry *e = &q->entries[i];
                const char *tier = con_tier_to_string(e->agent->tier);
                buf_printf(&b, "  %-20s %-9s %-10s ", e->agent->name, isempty(tier) ? "-" : tier,
                           con_mode_to_string(e->agent->mode));
                if (e->agent == agent_context_agent(c)) {
                        AgentQueueStats st;
                        agent_queue_get_stats(agent_context_queue(c), &st);
                        buf_printf(&b, "running, %s, queue %zu (this agent)\n", agent_context_state(c), st.n_queued);
                } else if (q->no_bus)
                        buf_printf(&b, "unknown (not on the system bus)\n");
                else if (!e->running)
                        buf_printf(&b, "not running\n");
                else if (e->answered)
                        buf_printf(&b, "running, %s, queue %u\n", strempty(e->state), e->queue_length);
                else
                        buf_printf(&b, "running, did not answer\n");
        }
        AgentTask *t = agent_queue_find(agent_context_queue(c), q->task_id);
        if (t)
                (void) buf_complete(c, t, &b, AGENT_TASK_DONE);
        agent_context_schedule_flush(c);
        agents_query_free(q);
}

static int on_get_all(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        AgentsEntry *e = userdata;
        AgentsQuery *q = e->q;
        if (!sd_bus_message_is_method_error(m, NULL) &&
            sd_bus_message_enter_container(m, 'a', "{sv}") > 0) {
                e->answered = true;
                while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
                        const char *k, *s;
                        if (sd_bus_message_read(m, "s", &k) < 0)
                                break;
                        if (streq(k, "State") && sd_bus_message_read(m, "v", "s", &s) >= 0) {
                                free(e->state);
                                e->state = strdup(s);
                        } else if (streq(k, "QueueLength"))
                                (void) sd_bus_message_read(m, "v", "u", &e->queue_length);
                        else
                                (void) sd_bus_message_skip(m, "v");
                        (void) sd_bus_message_exit_container(m);
                }
        }
        if (--q->outstanding == 0)
                agents_query_finish(q);
        return 0;
}

static int on_list_names(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        AgentsQuery *q = userdata;
        AgentContext *c = q->c;
        _cleanup_strv_free_ char **names = NULL;
        sd_bus *bus = agent_context_system_bus(c);

        q->outstanding--;
        if (!bus || sd_bus_message_is_method_error(m, NULL) || sd_bus_message_read_strv(m, &names) < 0)
                q->no_bus = true;
        for (size_t i = 0; !q->no_bus && i < q->n_entries; i++) {
                AgentsEntry *e = &q->entries[i];
                if (e->agent == agent_context_agent(c) || !e->bus_name || !strv_contains(names, e->bus_name))
                        continue;
                e->running = true;
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
                int r = sd_bus_message_new_method_call(bus, &call, e->bus_name, CON_AGENT_PATH,
                                                       "org.freedesktop.DBus.Properties", "GetAll");
                if (r >= 0)
                        r = sd_bus_message_append(call, "s", CON_AGENT_INTERFACE);
                if (r >= 0)
                        r = sd_bus_message_set_auto_start(call, false);
                if (r >= 0)
                        r = sd_bus_call_async(bus, NULL, call, on_get_all, e, QUERY_TIMEOUT);
                if (r >= 0)
                        q->outstanding++;
        }
        if (q->outstanding == 0)
                agents_query_finish(q);
        return 0;
}

static int builtin_agents(AgentContext *c, AgentTask *t) {
        AgentsQuery *q = calloc(1, sizeof(AgentsQuery));
        if (!q)
                return -ENOMEM;
        q->c = c;
        q->task_id = strdup(t->id);
        q->entries = calloc(agent_context_config(c)->n_agents ?: 1, sizeof(AgentsEntry));
        if (!q->entries || !q->task_id) {
                free(q->entries);
                free(q->task_id);
                free(q);
                return -ENOMEM;
        }
        q->n_entries = agent_context_config(c)->n_agents;
        for (size_t i = 0; i < q->n_entries; i++) {
                q->entries[i].q = q;
                q->entries[i].agent = &agent_context_config(c)->agents[i];
                (void) con_agent_bus_name(agent_context_config(c)->agents[i].name, &q->entries[i].bus_name);
        }
        sd_bus *bus = agent_context_system_bus(c);
        if (!bus) {
                q->no_bus = true;
                agents_query_finish(q);
                return 0;
        }
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        int r = sd_bus_message_new_method_call(bus, &call, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                               "org.freedesktop.DBus", "ListNames");
        if (r >= 0)
                r = sd_bus_call_async(bus, NULL, call, on_list_names, q, QUERY_TIMEOUT);
        if (r < 0) {
                q->no_bus = true;
                agents_query_finish(q);
                return 0;
        }
        q->outstanding = 1;
        return 0;
}

/* Conversations are the sender's own, in the service's state (agent-history.h): these touch only
 * the caller's directory. The tasks of every sender of another host share one: the mesh gateway's
 * uid (and never continue a conversation): one of them may neither end nor delete the others'. 1
 * when T is such a task, failed here. */
static int refuse_remote(AgentContext *c, AgentTask *t) {
        if (!con_remote_sender_valid(t->sender))
                return 0;
        int r = agent_context_complete(c, t, AGENT_TASK_FAILED,
                                       "The conversations of senders of other hosts are not kept apart on this "
                                       "host (a task of another host never continues one): nothing of yours "
                                       "to end or delete");
        return r < 0 ? r : 1;
}

static int builtin_new(AgentContext *c, AgentTask *t) {
        _cleanup_free_ char *reason = NULL;
        int r = refuse_remote(c, t);
        if (r != 0)
                return r < 0 ? r : 0;
        r = agent_history_end_latest(agent_context_conversations_dir(c), t->sender_uid);
        if (r < 0) {
                if (asprintf(&reason, "cannot end your latest conversation: %s", strerror(-r)) < 0)
                        return -ENOMEM;
                return agent_context_complete(c, t, AGENT_TASK_FAILED, reason);
        }
        return agent_context_complete(c, t, AGENT_TASK_DONE,
                                      "Your next 'con-send --continue' starts a new conversation (tasks without "
                                      "--continue always do). Earlier conversations stay until /forget; "
                                      "--continue=ID returns to one.");
}

static int builtin_forget(AgentContext *c, AgentTask *t) {
        _cleanup_free_ char *text = NULL;
        int r = refuse_remote(c, t);
        if (r != 0)
                return r < 0 ? r : 0;
        r = agent_history_forget(agent_context_conversations_dir(c), t->sender_uid);
        if (r < 0) {
                if (asprintf(&text, "cannot delete your conversations: %s", strerror(-r)) < 0)
                        return -ENOMEM;
                return agent_context_complete(c, t, AGENT_TASK_FAILED, text);
        }
        if (asprintf(&text, "Deleted %d conversation%s of yours with agent %s.", r, r == 1 ? "" : "s",
                     agent_context_agent(c)->name) < 0)
                return -ENOMEM;
        return agent_context_complete(c, t, AGENT_TASK_DONE, text);
}

static const Builtin builtins[] = {
        { "help",   "this list",                                                    builtin_help },
        { "ping",   "answers pong (a liveness check that needs no model)",           builtin_ping },
        { "agents", "the agents of this system and whether they are running",        builtin_agents },
        { "status", "this agent: state, queue, counters, runtime, uptime",            builtin_status },
        { "tasks",  "your recent tasks on this agent",                               builtin_tasks },
        { "new",    "your next --continue starts a new conversation",                builtin_new },
        { "forget", "deletes your conversations with this agent",                    builtin_forget },
};

const char *agent_builtin_list(void) {
        return "/help, /ping, /agents, /status, /tasks, /new, /forget";
}

static int builtin_help(AgentContext *c, AgentTask *t) {
        Buf b = {};
        buf_printf(&b, "Built-in commands of agent %s (answered by the service, no model involved):\n",
                   agent_context_agent(c)->name);
        for (size_t i = 0; i < ELEMENTSOF(builtins); i++)
                buf_printf(&b, "  /%-8s %s\n", builtins[i].name, builtins[i].help);
        buf_printf(&b, "Any other text is a task for the agent's runtime.\n");
        return buf_complete(c, t, &b, AGENT_TASK_DONE);
}

int agent_builtin_run(AgentContext *c, AgentTask *t) {
        const char *p = t->text + 1;
        size_t l = strcspn(p, " \t\r\n");
        for (size_t i = 0; i < ELEMENTSOF(builtins); i++)
                if (strlen(builtins[i].name) == l && strncmp(builtins[i].name, p, l) == 0)
                        return builtins[i].run(c, t);

        _cleanup_free_ char *reason = NULL;
        if (asprintf(&reason, "unknown command '/%.*s'; the commands are %s", (int) con_utf8_cut(p, l, 64), p,
                     agent_builtin_list()) < 0)
                return -ENOMEM;
        return agent_context_complete(c, t, AGENT_TASK_FAILED, reason);
}
