/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>

#include "agent-builtins.h"
#include "agent-deliver.h"
#include "agent-history.h"
#include "agent-llm.h"
#include "agent-service.h"
#include "bus-util.h"
#include "con-paths.h"
#include "errors.h"
#include "macro.h"
#include "names.h"
#include "strv.h"
#include "task.h"
#include "utf8.h"

/* Commit inline once this many replies wait, so a flood cannot starve the idle-priority flush. */
#define PENDING_FLUSH_INLINE 256
#define QUEUE_MAX 100000
#define DEFAULT_STOP_GRACE (5 * USEC_PER_SEC)

/* Programs log, libraries do not: this file is program code of con-agentd. */
#define log_msg(prio, ...) (void) (fprintf(stderr, __VA_ARGS__), fputc('\n', stderr))

typedef struct RunningTask {
        AgentContext *c;
        AgentTask *task;
        AgentSession *session;
        char *cancel_reason;
        bool kill_fails;        /* killed by KillSessions, Halt or Quarantine: the task failed */
        bool shutdown;          /* killed because the service stops: leave it to the next start */
        char *models_task_id;   /* the model gateway was told this task runs (a copy: the task may be gone) */
        char *conversation;     /* the conversation the session's turn is appended to; NULL: none */
        uid_t sender_uid;
} RunningTask;

static uint64_t now_realtime(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

static uint64_t now_monotonic(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

/* ---- users ---- */

static char *user_name_of(uid_t uid) {
        char buf[4096];
        struct passwd pw, *res = NULL;
        char *s = NULL;
        if (getpwuid_r(uid, &pw, buf, sizeof(buf), &res) == 0 && res)
                return strdup(res->pw_name);
        if (asprintf(&s, "%u", (unsigned) uid) < 0)
                return NULL;
        return s;
}

/* The caller's groups as the user database states them, the way polkit's subject.isInGroup() sees
 * them (dbus-daemon vouches for the uid; sd-bus 252 does not pass on its UnixGroupIDs). */
static int user_db_group_names(uid_t uid, char ***ret) {
        _cleanup_strv_free_ char **l = NULL;
        struct passwd pw, *res = NULL;
        char buf[4096];
        int n = 64, r;
        if (getpwuid_r(uid, &pw, buf, sizeof(buf), &res) != 0 || !res) {
                *ret = NULL;
                return 0;
        }
        for (int tries = 0; tries < 4; tries++) {
                _cleanup_free_ gid_t *groups = calloc((size_t) n, sizeof(gid_t));
                if (!groups)
                        return -ENOMEM;
                int want = n;
                if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &want) < 0) {
                        n = want > n ? want : n * 2;
                        continue;
                }
                for (int i = 0; i < want; i++) {
                        struct group gr, *gres = NULL;
                        char gbuf[16384];
                        if (getgrgid_r(groups[i], &gr, gbuf, sizeof(gbuf), &gres) != 0 || !gres)
                                continue;
                        r = strv_extend(&l, gres->gr_name);
                        if (r < 0)
                                return r;
                }
                break;
        }
        *ret = TAKE_PTR(l);
        return 0;
}

void agent_caller_done(AgentCaller *a) {
        free(a->name);
        a->name = NULL;
}

/* ---- authorization ---- */

static const struct {
        const char *verb;       /* the polkit detail "verb" */
        ConPolicyVerb policy;
        const char *phrase;     /* "user 'x' may not PHRASE agent 'y'" */
} verb_table[_AGENT_VERB_MAX] = {
        [AGENT_VERB_SUBMIT]        = { "submit",        CON_POLICY_TASK,        "submit tasks to" },
        [AGENT_VERB_DELIVER]       = { "deliver",       CON_POLICY_TASK,        "deliver tasks to" },
        [AGENT_VERB_GET_RESULT]    = { "get-result",    CON_POLICY_READ_RESULT, "read other users' results on" },
        [AGENT_VERB_LIST_TASKS]    = { "list-tasks",    CON_POLICY_READ_RESULT, "list other users' tasks on" },
        [AGENT_VERB_CANCEL]        = { "cancel",        CON_POLICY_CANCEL,      "cancel other users' tasks on" },
        [AGENT_VERB_HALT]          = { "halt",          CON_POLICY_HALT,        "halt" },
        [AGENT_VERB_RESUME]        = { "resume",        CON_POLICY_HALT,        "resume" },
        [AGENT_VERB_QUARANTINE]    = { "quarantine",    CON_POLICY_QUARANTINE,  "quarantine" },
        [AGENT_VERB_KILL_SESSIONS] = { "kill-sessions", CON_POLICY_QUARANTINE,  "kill the sessions of" },
};

const char *agent_verb_to_string(AgentVerb v) {
        return v >= 0 && v < _AGENT_VERB_MAX ? verb_table[v].verb : NULL;
}

ConPolicyVerb agent_verb_policy(AgentVerb v) {
        return v >= 0 && v < _AGENT_VERB_MAX ? verb_table[v].policy : _CON_POLICY_VERB_INVALID;
}

/* The one decision about root: polkit says yes to uid 0 before any rule runs, so the declared
 * policy decides (the default grants root every verb on every agent). */
static bool root_allowed(const AgentContext *c, ConPolicyVerb v) {
        return c->policy && con_policy_allows(c->policy, "root", NULL, v, c->agent->name);
}

static int authz_root_check(sd_bus_message *m, const char *action, char * const *details, void *userdata) {
        ConPolicyVerb v = con_policy_verb_from_action(action);
        if (v < 0)
                return -EINVAL;
        return root_allowed(userdata, v);
}

/* -- the caller's uid: asynchronously from the bus driver, cached per unique name -- */

struct AgentUidLookup {
        AgentContext *c;
        sd_bus *bus;
        char *sender;
        sd_bus_slot *slot;              /* NULL once answered */
        sd_bus_message **parked;
        size_t n_parked;
        bool answered;
        uid_t uid;
        sd_event_source *defer;         /* frees it after the re-dispatch */
        AgentUidLookup *next;
};

static void uid_lookup_free(AgentUidLookup *l) {
        if (!l)
                return;
        AgentUidLookup **p = &l->c->uid_lookups;
        while (*p && *p != l)
                p = &(*p)->next;
        if (*p)
                *p = l->next;
        for (size_t i = 0; i < l->n_parked; i++)
                sd_bus_message_unref(l->parked[i]);
        free(l->parked);
        sd_bus_slot_unref(l->slot);
        sd_event_source_disable_unref(l->defer);
        free(l->sender);
        free(l);
}

static AgentUidEntry *uid_cache_find(AgentContext *c, sd_bus *bus, const char *sender) {
        for (size_t i = 0; i < AGENT_UID_CACHE_SLOTS; i++) {
                AgentUidEntry *e = &c->uid_cache[i];
                if (e->sender && e->bus == bus && streq(e->sender, sender)) {
                        e->used = ++c->uid_clock;
                        return e;
                }
        }
        return NULL;
}

static AgentUidEntry *uid_cache_put(AgentContext *c, sd_bus *bus, const char *sender, uid_t uid) {
        size_t victim = 0;
        for (size_t i = 0; i < AGENT_UID_CACHE_SLOTS; i++)
                if (c->uid_cache[i].used < c->uid_cache[victim].used)
                        victim = i;
        _cleanup_free_ char *copy = strdup(sender), *name = user_name_of(uid);
        if (!copy || !name)
                return NULL;
        AgentUidEntry *e = &c->uid_cache[victim];
        free(e->sender);
        free(e->name);
        /* The bus pointer is only compared: entries of a closed test bus simply age out. */
        *e = (AgentUidEntry) {
                .bus = bus, .sender = TAKE_PTR(copy), .uid = uid, .name = TAKE_PTR(name), .used = ++c->uid_clock,
        };
        return e;
}

static void uid_cache_clear(AgentContext *c) {
        for (size_t i = 0; i < AGENT_UID_CACHE_SLOTS; i++) {
                free(c->uid_cache[i].sender);
                free(c->uid_cache[i].name);
                c->uid_cache[i] = (AgentUidEntry) {};
        }
}

static int on_uid_lookup_defer(sd_event_source *s, void *userdata) {
        uid_lookup_free(userdata);
        return 0;
}

static int on_uid_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        AgentUidLookup *l = userdata;
        AgentContext *c = l->c;
        uint32_t uid;
        int r;

        l->slot = sd_bus_slot_unref(l->slot);
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        if (e || sd_bus_message_read(reply, "u", &uid) < 0) {
                /* A caller that is gone gets nothing (its name has no owner any more); anything else
                 * fails closed with the reason. */
                bool gone = e && (sd_bus_error_has_name(e, SD_BUS_ERROR_NAME_HAS_NO_OWNER) ||
                                  sd_bus_error_has_name(e, "org.freedesktop.DBus.Error.NameHasNoOwner"));
                for (size_t i = 0; !gone && i < l->n_parked; i++)
                        (void) sd_bus_reply_method_errorf(l->parked[i], CON_ERROR_ACCESS_DENIED,
                                                          "Access denied: the bus did not say which user is "
                                                          "calling: %s", e ? e->message : "no uid in the reply");
                uid_lookup_free(l);
                return 0;
        }
        l->answered = true;
        l->uid = uid;
        (void) uid_cache_put(c, l->bus, l->sender, uid);
        for (size_t i = 0; i < l->n_parked; i++) {
                r = sd_bus_message_rewind(l->parked[i], true);
                if (r >= 0)
                        r = sd_bus_enqueue_for_read(l->bus, l->parked[i]);
                if (r < 0)
                        (void) sd_bus_reply_method_errorf(l->parked[i], CON_ERROR_ACCESS_DENIED,
                                                          "Access denied: the caller's uid could not be "
                                                          "delivered: %s", strerror(-r));
                l->parked[i] = sd_bus_message_unref(l->parked[i]);
        }
        l->n_parked = 0;
        /* Kept until the re-dispatched messages ran (they run at a higher priority), in case the
         * cache evicted the entry meanwhile. */
        r = sd_event_add_defer(c->event, &l->defer, on_uid_lookup_defer, l);
        if (r < 0) {
                uid_lookup_free(l);
                return 0;
        }
        (void) sd_event_source_set_priority(l->defer, SD_EVENT_PRIORITY_IDLE);
        return 0;
}

/* 1 with *ret_uid and *ret_name (valid during this handler run), 0 parked, or a negative errno with
 * error set. */
static int caller_uid(AgentContext *c, sd_bus_message *m, uid_t *ret_uid, const char **ret_name,
                      sd_bus_error *error) {
        sd_bus *bus = sd_bus_message_get_bus(m);
        const char *sender = sd_bus_message_get_sender(m);
        int r;

        if (!bus || !sender || sender[0] != ':') {
                /* Peer-to-peer (tests): the peer's credentials from the socket, no round trip. Only
                 * what the kernel vouches for: nothing augmented from /proc. */
                _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
                uid_t uid;
                r = sd_bus_query_sender_creds(m, SD_BUS_CREDS_UID | SD_BUS_CREDS_EUID, &creds);
                if (r < 0)
                        return sd_bus_error_set_errnof(error, r, "Cannot determine the caller's credentials: %m");
                uint64_t augmented = sd_bus_creds_get_augmented_mask(creds);
                if (!(augmented & SD_BUS_CREDS_EUID) && sd_bus_creds_get_euid(creds, &uid) >= 0) {
                } else if (!(augmented & SD_BUS_CREDS_UID) && sd_bus_creds_get_uid(creds, &uid) >= 0) {
                } else
                        return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                                  "Access denied: the bus did not say which user is calling");
                const AgentUidEntry *e = uid_cache_find(c, bus, "");
                if (!e || e->uid != uid)
                        e = NULL;
                /* One peer per connection: cache the name under the empty sender of that bus. */
                if (!e && !(e = uid_cache_put(c, bus, "", uid)))
                        return -ENOMEM;
                *ret_uid = e->uid;
                *ret_name = e->name;
                return 1;
        }

        const AgentUidEntry *e = uid_cache_find(c, bus, sender);
        if (e) {
                *ret_uid = e->uid;
                *ret_name = e->name;
                return 1;
        }
        AgentUidLookup *l;
        for (l = c->uid_lookups; l; l = l->next)
                if (l->bus == bus && streq(l->sender, sender))
                        break;
        if (l && l->answered) {
                e = uid_cache_put(c, bus, sender, l->uid);
                if (!e)
                        return -ENOMEM;
                *ret_uid = e->uid;
                *ret_name = e->name;
                return 1;
        }
        if (!l) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
                l = calloc(1, sizeof(*l));
                if (!l)
                        return -ENOMEM;
                l->c = c;
                l->bus = bus;
                l->next = c->uid_lookups;
                c->uid_lookups = l;
                l->sender = strdup(sender);
                if (!l->sender) {
                        uid_lookup_free(l);
                        return -ENOMEM;
                }
                r = sd_bus_message_new_method_call(bus, &call, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                                   "org.freedesktop.DBus", "GetConnectionUnixUser");
                if (r >= 0)
                        r = sd_bus_message_append(call, "s", sender);
                if (r >= 0)
                        r = sd_bus_call_async(bus, &l->slot, call, on_uid_reply, l, 5 * USEC_PER_SEC);
                if (r < 0) {
                        uid_lookup_free(l);
                        return sd_bus_error_set_errnof(error, r, "Cannot ask the bus which user is calling: %m");
                }
        }
        sd_bus_message **p = reallocarray(l->parked, l->n_parked + 1, sizeof(sd_bus_message *));
        if (!p)
                return -ENOMEM;
        l->parked = p;
        l->parked[l->n_parked++] = sd_bus_message_ref(m);
        return 0;
}

/* The declared policy, in-process: for connections without polkit (peer-to-peer in tests). */
static int policy_check(AgentContext *c, uid_t uid, const char *name, ConPolicyVerb v, sd_bus_error *error) {
        _cleanup_strv_free_ char **groups = NULL;
        if (uid == 0)
                return root_allowed(c, v) ? 1 :
                        con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                           "Access denied: the policy does not grant root '%s' on agent '%s'",
                                           con_policy_verb_to_string(v), c->agent->name);
        int r = user_db_group_names(uid, &groups);
        if (r < 0)
                return r;
        if (c->policy && con_policy_allows(c->policy, name, groups, v, c->agent->name))
                return 1;
        return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED, "the policy grants no '%s' on '%s' to this user "
                                  "or its groups", con_policy_verb_to_string(v), c->agent->name);
}

int agent_authorize(AgentContext *c, sd_bus_message *m, AgentVerb verb, const AgentTask *t,
                    AgentCaller *ret_caller, sd_bus_error *error) {
        const char *name = NULL;
        uid_t uid = (uid_t) -1;
        int r;

        if (verb < 0 || verb >= _AGENT_VERB_MAX)
                return -EINVAL;
        r = caller_uid(c, m, &uid, &name, error);
        if (r <= 0)
                return r;

        bool need = true, all = false;
        /* A submitter may always read and cancel its own tasks. */
        if ((verb == AGENT_VERB_GET_RESULT || verb == AGENT_VERB_CANCEL) && t && t->sender_uid == uid)
                need = false;
        if (need && c->no_authz) {
                need = false;
                all = true;
        }
        if (need) {
                ConPolicyVerb pv = verb_table[verb].policy;
                const char *sender = sd_bus_message_get_sender(m);
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                if (c->authz && sender && sender[0] == ':') {
                        const char *details[] = { "agent", c->agent->name, "verb", verb_table[verb].verb, NULL };
                        r = con_authz_verify(c->authz, m, con_policy_verb_action(pv), (char * const *) details, &e);
                        if (r == 0)
                                return 0;
                } else
                        r = policy_check(c, uid, name, pv, &e);
                if (r == -ENOMEM)
                        return r;
                if (verb == AGENT_VERB_LIST_TASKS)
                        /* Not granted (or not decidable): the caller's own tasks only. */
                        all = r > 0;
                else if (r < 0) {
                        if (uid == 0 || !sd_bus_error_is_set(&e))
                                return sd_bus_error_is_set(&e) ? sd_bus_error_set(error, e.name, e.message) : r;
                        return con_bus_error_setf(error, e.name,
                                                  "Access denied: user '%s' (uid %u) may not %s agent '%s': %s "
                                                  "(grants: the policy: section of %s, see con policy show)",
                                                  name, (unsigned) uid, verb_table[verb].phrase, c->agent->name,
                                                  e.message ?: "refused", c->config->path ?: CON_CONFIG_PATH);
                } else
                        all = true;
        }
        if (ret_caller) {
                ret_caller->uid = uid;
                ret_caller->all_tasks = all;
                ret_caller->name = strdup(name);
                if (!ret_caller->name)
                        return -ENOMEM;
        }
        return 1;
}

int agent_context_enable_authz(AgentContext *c, sd_bus *bus) {
        ConAuthzOptions o = {
                .root_policy = CON_AUTHZ_ROOT_ASK_TABLE,
                .root_check = authz_root_check,
                .userdata = c,
        };
        if (c->no_authz)
                return 0;
        return con_authz_new(bus, c->event, &o, &c->authz);
}

/* ---- state and properties ---- */

const char *agent_context_state(const AgentContext *c) {
        AgentQueueStats st;
        if (c->quarantined)
                return "quarantined";
        if (c->halted_by_call || c->halted_by_marker)
                return "halted";
        if (c->stopping)
                return "stopping";
        agent_queue_get_stats(c->queue, &st);
        return st.n_running > 0 ? "busy" : "idle";
}

static const char *current_task(const AgentContext *c) {
        size_t n;
        AgentTask * const *tasks = agent_queue_tasks(c->queue, &n);
        AgentQueueStats st;
        agent_queue_get_stats(c->queue, &st);
        if (st.n_running == 0)
                return "";
        /* The oldest running task; running tasks are few and usually recent. */
        const AgentTask *best = NULL;
        for (size_t i = n; i > 0; i--)
                if (tasks[i - 1]->status == AGENT_TASK_RUNNING)
                        best = tasks[i - 1];
        return best ? best->id : "";
}

static void props_snapshot(const AgentContext *c, AgentPropsSnapshot *s) {
        AgentQueueStats st;
        agent_queue_get_stats(c->queue, &st);
        *s = (AgentPropsSnapshot) {
                .state = agent_context_state(c),
                .queue_length = (uint32_t) st.n_queued,
                .current_task = current_task(c),
                .accepted = st.n_tasks,
                .completed = st.n_done,
                .failed = st.n_failed,
                .valid = true,
        };
}

static void emit_props_changed(AgentContext *c) {
        AgentPropsSnapshot now;
        props_snapshot(c, &now);
        const char *changed[8];
        size_t n = 0;
        const AgentPropsSnapshot *o = &c->props;
        if (!o->valid || !streq(o->state, now.state))
                changed[n++] = "State";
        if (!o->valid || o->queue_length != now.queue_length)
                changed[n++] = "QueueLength";
        if (!o->valid || !streq(o->current_task, now.current_task))
                changed[n++] = "CurrentTask";
        if (!o->valid || o->accepted != now.accepted)
                changed[n++] = "TasksAccepted";
        if (!o->valid || o->completed != now.completed)
                changed[n++] = "TasksCompleted";
        if (!o->valid || o->failed != now.failed)
                changed[n++] = "TasksFailed";
        changed[n] = NULL;
        bool first = !o->valid;
        c->props = now;
        /* current_task points into a task that lives as long as the queue: fine to keep. */
        if (n == 0 || first)
                return;
        for (size_t i = 0; i < c->n_buses; i++) {
                if (!sd_bus_is_open(c->buses[i]))
                        continue;
                int r = sd_bus_emit_properties_changed_strv(c->buses[i], CON_AGENT_PATH, CON_AGENT_INTERFACE,
                                                            (char **) changed);
                if (r < 0)
                        log_msg(LOG_WARNING, "Failed to emit PropertiesChanged, ignoring: %s", strerror(-r));
        }
}

/* ---- pending replies and signals ---- */

static int pending_add(AgentContext *c, AgentPendingKind kind, sd_bus_message *call, AgentTask *t) {
        if (c->n_pending == c->n_pending_alloc) {
                size_t n = c->n_pending_alloc ? c->n_pending_alloc * 2 : 64;
                AgentPending *p = reallocarray(c->pending, n, sizeof(AgentPending));
                if (!p)
                        return -ENOMEM;
                c->pending = p;
                c->n_pending_alloc = n;
        }
        c->pending[c->n_pending++] = (AgentPending) {
                .kind = kind,
                .call = call ? sd_bus_message_ref(call) : NULL,
                .task = t,
        };
        agent_context_schedule_flush(c);
        return 0;
}

static void emit_task_signal(AgentContext *c, const char *member, const AgentTask *t) {
        for (size_t i = 0; i < c->n_buses; i++) {
                int r;
                if (!sd_bus_is_open(c->buses[i]))
                        continue;
                if (streq(member, "TaskCompleted"))
                        r = sd_bus_emit_signal(c->buses[i], CON_AGENT_PATH, CON_AGENT_INTERFACE, member, "sss",
                                               t->id, t->sender, agent_task_status_to_string(t->status));
                else
                        r = sd_bus_emit_signal(c->buses[i], CON_AGENT_PATH, CON_AGENT_INTERFACE, member, "ss",
                                               t->id, t->sender);
                if (r < 0)
                        log_msg(LOG_WARNING, "Failed to emit %s for %s, ignoring: %s", member, t->id, strerror(-r));
        }
}

/* A derived file could not be written (disk full): write every missing one again a little later,
 * so that outbox/ fills in once space returns, not only at the next start. */
#define FILES_RETRY_USEC (2 * USEC_PER_SEC)

static int on_files_retry(sd_event_source *s, uint64_t usec, void *userdata);

static void files_retry_arm(AgentContext *c) {
        uint64_t when = now_monotonic() + FILES_RETRY_USEC;
        int enabled = SD_EVENT_OFF;
        if (!c->files_retry_source) {
                int r = sd_event_add_time(c->event, &c->files_retry_source, CLOCK_MONOTONIC, when, 0,
                                          on_files_retry, c);
                if (r < 0)
                        log_msg(LOG_WARNING, "Failed to arm the retry of the task files, ignoring: %s",
                                strerror(-r));
                return;
        }
        (void) sd_event_source_get_enabled(c->files_retry_source, &enabled);
        if (enabled != SD_EVENT_OFF)
                return;
        (void) sd_event_source_set_time(c->files_retry_source, when);
        (void) sd_event_source_set_enabled(c->files_retry_source, SD_EVENT_ONESHOT);
}

static int on_files_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        AgentContext *c = userdata;
        int r = agent_queue_write_all_files(c->queue);
        if (r < 0)
                files_retry_arm(c);
        else
                log_msg(LOG_NOTICE, "Wrote the outbox/processed/failed files that could not be written before");
        return 0;
}

static void pending_run(AgentContext *c, int commit_error) {
        for (size_t i = 0; i < c->n_pending; i++) {
                AgentPending *p = &c->pending[i];
                int r = 0;
                if (commit_error < 0) {
                        if (p->call) {
                                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                                (void) con_bus_error_setf(&e, CON_ERROR_STORAGE_FAILED,
                                                          "Cannot write the queue journal of agent '%s': %s; "
                                                          "nothing was accepted, try again later",
                                                          c->agent->name, strerror(-commit_error));
                                r = sd_bus_reply_method_error(p->call, &e);
                        }
                } else
                        switch (p->kind) {
                        case PENDING_REPLY_ID:
                                r = sd_bus_reply_method_return(p->call, "s", p->task->id);
                                break;
                        case PENDING_REPLY_EMPTY:
                                r = sd_bus_reply_method_return(p->call, NULL);
                                break;
                        case PENDING_ACCEPTED:
                                emit_task_signal(c, "TaskAccepted", p->task);
                                break;
                        case PENDING_STARTED:
                                emit_task_signal(c, "TaskStarted", p->task);
                                break;
                        case PENDING_COMPLETED:
                                emit_task_signal(c, "TaskCompleted", p->task);
                                r = agent_queue_write_files(c->queue, p->task);
                                if (r < 0) {
                                        log_msg(LOG_WARNING, "Failed to write the files of task %s, will retry: %s",
                                                p->task->id, strerror(-r));
                                        files_retry_arm(c);
                                }
                                r = 0;
                                break;
                        }
                if (r < 0)
                        log_msg(LOG_DEBUG, "Failed to send a reply, ignoring: %s", strerror(-r));
                sd_bus_message_unref(p->call);
        }
        c->n_pending = 0;
}

/* ---- running tasks ---- */

/* reason[0..len): any bytes (a session's stderr): the queue makes them text. */
static void task_fail_now_bytes(AgentContext *c, AgentTask *t, AgentTaskStatus st, const char *reason, size_t len) {
        int r = agent_queue_finish_output(c->queue, t, st, reason, len, len, now_realtime());
        if (r < 0) {
                log_msg(LOG_ERR, "Failed to record the end of task %s: %s", t->id, strerror(-r));
                return;
        }
        (void) pending_add(c, PENDING_COMPLETED, NULL, t);
}

static void task_fail_now(AgentContext *c, AgentTask *t, AgentTaskStatus st, const char *reason) {
        task_fail_now_bytes(c, t, st, reason, strlen(reason));
}

int agent_context_complete_output(AgentContext *c, AgentTask *t, AgentTaskStatus st, const char *data, size_t len,
                                  uint64_t size) {
        if (agent_task_status_is_final(t->status))
                return 0; /* cancelled meanwhile */
        int r = agent_queue_finish_output(c->queue, t, st, data, len, size, now_realtime());
        if (r < 0)
                return r;
        return pending_add(c, PENDING_COMPLETED, NULL, t);
}

int agent_context_complete(AgentContext *c, AgentTask *t, AgentTaskStatus st, const char *text) {
        size_t l = strlen(strempty(text));
        return agent_context_complete_output(c, t, st, text, l, l);
}

/* The model gateway charges a session's calls to the task registered here, not to whatever task id
 * the session names (docs/MODELS.md "Budgets"). Fire and forget, on the connection that owns the
 * agent's bus name (that is what the gateway checks): without it (no gateway, an old one), the
 * calls count as the agent's unregistered use. */
static bool models_task_notify(AgentContext *c, const char *method, const char *task_id) {
        if (c->runtime != &con_runtime_picoclaw || !c->bus_name || c->n_buses == 0)
                return false;
        int r = sd_bus_call_method_async(c->buses[0], NULL, AGENT_LLM_MODELS_NAME, AGENT_LLM_MODELS_PATH,
                                         AGENT_LLM_MODELS_INTERFACE, method, NULL, NULL, "ss", c->agent->name,
                                         task_id);
        if (r < 0) {
                log_msg(LOG_WARNING, "Task %s: cannot tell the model gateway (%s): %s", task_id, method, strerror(-r));
                return false;
        }
        return true;
}

static RunningTask *running_task_free(RunningTask *rt) {
        if (!rt)
                return NULL;
        if (rt->models_task_id)
                (void) models_task_notify(rt->c, "UnregisterTask", rt->models_task_id);
        free(rt->models_task_id);
        free(rt->conversation);
        agent_session_free(rt->session);
        free(rt->cancel_reason);
        free(rt);
        return NULL;
}

static char *format_duration(uint64_t usec) {
        char *s = NULL;
        if (usec % USEC_PER_SEC == 0)
                (void) asprintf(&s, "%llus", (unsigned long long) (usec / USEC_PER_SEC));
        else
                (void) asprintf(&s, "%llums", (unsigned long long) (usec / USEC_PER_MSEC));
        return s;
}

static const char *runtime_label(const AgentContext *c) {
        if (c->runtime == &con_runtime_exec && c->agent->command && c->agent->command[0])
                return c->agent->command[0];
        return c->runtime ? c->runtime->name : "the runtime";
}

/* The completed turn the session sent back: checked (size, the history reader) and appended to
 * the sender's conversation in the service's own state. A failed task never gets here. */
static void conversation_store_turn(RunningTask *rt, AgentSession *s) {
        AgentContext *c = rt->c;
        _cleanup_close_ int dfd = -EBADF;
        _cleanup_free_ char *err = NULL;
        int r;

        if (!rt->conversation || s->turn_len == 0)
                return;
        if (s->turn_size > s->turn_len || !s->turn_eof) {
                log_msg(LOG_WARNING, "Task %s: the session sent an incomplete or too large turn (over %u bytes); "
                        "conversation %s not changed", rt->task->id, AGENT_SESSION_TURN_MAX, rt->conversation);
                return;
        }
        unsigned window = c->agent->rt.context_window ?: CON_CONTEXT_WINDOW_DEFAULT;
        r = agent_history_open_dir(c->conversations_dir, rt->sender_uid, true, &dfd);
        if (r >= 0)
                r = agent_history_store_turn(dfd, rt->conversation, s->turn, s->turn_len,
                                             agent_history_budget(window, AGENT_LLM_MAX_TOKENS), &err);
        if (r < 0)
                log_msg(LOG_WARNING, "Task %s: cannot save conversation %s: %s", rt->task->id, rt->conversation,
                        err ?: strerror(-r));
}

/* Before the fork: the conversation of the task (the sender's own, new unless the task names
 * one), read from the service's state; the session gets its text, never the folder. 0, or 1
 * with *ret_reason when the task must fail. */
static int conversation_prepare(AgentContext *c, const AgentTask *t, RunningTask *rt, char **ret_text,
                                size_t *ret_len, char **ret_reason) {
        _cleanup_close_ int dfd = -EBADF;
        _cleanup_free_ char *id = NULL, *err = NULL;
        bool is_new = true;
        int r;

        r = agent_history_open_dir(c->conversations_dir, t->sender_uid, true, &dfd);
        if (r < 0) {
                if (t->conversation) {
                        if (asprintf(ret_reason, "cannot open the conversations of %s in %s: %s", strempty(t->sender),
                                     c->conversations_dir, strerror(-r)) < 0)
                                return -ENOMEM;
                        return 1;
                }
                log_msg(LOG_WARNING, "Task %s: cannot open %s, this turn is not kept: %s", t->id,
                        c->conversations_dir, strerror(-r));
        }
        r = agent_history_resolve(dfd, t->conversation, t->id, &id, &is_new);
        if (r == -ENOENT) {
                /* Also what another sender's conversation id gives: it is looked up only among the
                 * sender's own. */
                if (asprintf(ret_reason, "refused: %s has no conversation '%s' with agent '%s' (a conversation can "
                             "only be continued by the sender who started it; without an id, --continue takes "
                             "your latest)", isempty(t->sender) ? "the sender" : t->sender, t->conversation,
                             c->agent->name) < 0)
                        return -ENOMEM;
                return 1;
        }
        if (r < 0)
                return r;
        if (!is_new && dfd >= 0) {
                r = agent_history_read(dfd, id, ret_text, ret_len, &err);
                if (r == -ENOMEM)
                        return r;
                if (r < 0 && r != -ENOENT)
                        log_msg(LOG_NOTICE, "Task %s: conversation %s unreadable, continuing without it (the next "
                                "completed turn replaces it): %s", t->id, id, err ?: strerror(-r));
        }
        if (dfd >= 0) {
                rt->conversation = TAKE_PTR(id);
                rt->sender_uid = t->sender_uid;
        }
        return 0;
}

static void on_session_done(AgentSession *s, void *userdata) {
        RunningTask *rt = userdata;
        AgentContext *c = rt->c;
        AgentTask *t = rt->task;
        _cleanup_free_ char *reason = NULL;
        int r;

        t->userdata = NULL;
        c->n_sessions--;
        if (rt->shutdown) {
                running_task_free(rt);
                agent_context_schedule_flush(c);
                return;
        }
        switch (agent_session_end(s)) {
        case AGENT_SESSION_EXITED:
                if (s->exit_status == 0) {
                        conversation_store_turn(rt, s);
                        if (s->out_size > s->out_len)
                                log_msg(LOG_NOTICE, "Task %s: response of %" PRIu64 " bytes cut at %d bytes",
                                        t->id, s->out_size, AGENT_QUEUE_RESULT_MAX);
                        /* Whatever bytes the runner wrote: stored as valid text, cut and marked. */
                        r = agent_context_complete_output(c, t, AGENT_TASK_DONE, s->out, s->out_len, s->out_size);
                        if (r < 0)
                                task_fail_now(c, t, AGENT_TASK_FAILED, "the response could not be stored");
                        break;
                }
                size_t len;
                if (agent_session_exit_reason(s, runtime_label(c), &reason, &len) < 0)
                        task_fail_now(c, t, AGENT_TASK_FAILED, "the session failed");
                else
                        task_fail_now_bytes(c, t, AGENT_TASK_FAILED, reason, len);
                break;
        case AGENT_SESSION_TIMEOUT: {
                _cleanup_free_ char *d = format_duration(s->timeout_usec);
                if (asprintf(&reason, "the session ran longer than its limit of %s (%s) and was killed",
                             strempty(d), c->runtime == &con_runtime_exec ? "exec_timeout" :
                             "contracts.system.max_session_min") < 0)
                        reason = NULL;
                task_fail_now(c, t, AGENT_TASK_FAILED, reason ?: "the session timed out");
                break;
        }
        case AGENT_SESSION_CANCELLED:
                task_fail_now(c, t, rt->kill_fails ? AGENT_TASK_FAILED : AGENT_TASK_CANCELLED,
                              rt->cancel_reason ?: "cancelled");
                break;
        case AGENT_SESSION_KILLED:
                r = agent_queue_requeue(c->queue, t);
                if (r == -ELOOP) {
                        if (asprintf(&reason, "the session was killed by signal %s %u times; not retried again",
                                     sigabbrev_np(s->signal) ?: "?", t->tries) < 0)
                                reason = NULL;
                        task_fail_now(c, t, AGENT_TASK_FAILED, reason ?: "the session died repeatedly");
                } else if (r < 0)
                        task_fail_now(c, t, AGENT_TASK_FAILED, "the session died and could not be queued again");
                else
                        log_msg(LOG_NOTICE, "Task %s: session killed by signal %s (try %u of %d), queued again",
                                t->id, sigabbrev_np(s->signal) ?: "?", t->tries, AGENT_QUEUE_MAX_TRIES);
                break;
        }
        running_task_free(rt);
        agent_context_schedule_flush(c);
}

static void start_task(AgentContext *c, AgentTask *t) {
        int r;

        if (t->deadline_usec > 0 && now_realtime() > t->deadline_usec) {
                task_fail_now(c, t, AGENT_TASK_FAILED, "the deadline passed before the task could start");
                return;
        }
        r = agent_queue_start(c->queue, t, now_realtime());
        if (r < 0) {
                log_msg(LOG_ERR, "Failed to start task %s: %s", t->id, strerror(-r));
                return;
        }
        (void) pending_add(c, PENDING_STARTED, NULL, t);

        if (agent_builtin_is(t->text)) {
                r = agent_builtin_run(c, t);
                if (r < 0)
                        (void) agent_context_complete(c, t, AGENT_TASK_FAILED, "the built-in command failed");
                return;
        }

        ConRuntimeEnv env = {
                .agent = c->agent,
                .config = c->config,
                .workspace = c->workspace,
                .skills_dir = c->skills_dir,
                .user = c->has_session_user ? &c->session_user : NULL,
                .cgroup_fd = c->cgroup_fd,
        };
        if (!c->runtime) {
                _cleanup_free_ char *reason = NULL;
                if (asprintf(&reason, "agent '%s' has runner '%s', which this con-agentd does not know",
                             c->agent->name, strempty(c->agent->rt.runner)) < 0)
                        reason = NULL;
                (void) agent_context_complete(c, t, AGENT_TASK_FAILED, reason ?: "unknown runner");
                return;
        }
        if (c->runtime->check) {
                _cleanup_free_ char *reason = NULL;
                r = c->runtime->check(&env, &reason);
                if (r < 0) {
                        (void) agent_context_complete(c, t, AGENT_TASK_FAILED, reason ?: "the runtime is not ready");
                        return;
                }
        }

        RunningTask *rt = calloc(1, sizeof(RunningTask));
        if (!rt) {
                (void) agent_context_complete(c, t, AGENT_TASK_FAILED, "out of memory");
                return;
        }
        rt->c = c;
        rt->task = t;
        _cleanup_free_ char *history = NULL;
        size_t history_len = 0;
        if (c->runtime->conversations) {
                _cleanup_free_ char *reason = NULL;
                r = conversation_prepare(c, t, rt, &history, &history_len, &reason);
                if (r != 0) {
                        running_task_free(rt);
                        (void) agent_context_complete(c, t, AGENT_TASK_FAILED,
                                                      reason ?: "cannot read the conversation");
                        return;
                }
        }
        ConRuntimeTask rtask = {
                .id = t->id,
                .text = t->text ?: "",
                .sender = t->sender,
                .sender_uid = t->sender_uid,
                .priority = t->priority,
                .reply_to = t->reply_to,
                .deadline_usec = t->deadline_usec,
                .conversation = rt->conversation,
                .history = history,
                .history_len = history_len,
                .turn_fd = -EBADF,
        };
        /* Sent before the session exists, so it reaches the gateway before the session's first call. */
        if (models_task_notify(c, "RegisterTask", t->id))
                rt->models_task_id = strdup(t->id);     /* NULL (out of memory): ended by the gateway's LRU */
        r = agent_session_spawn(c->event, c->runtime, &rtask, &env, on_session_done, rt, &rt->session);
        if (r < 0) {
                running_task_free(rt);
                _cleanup_free_ char *reason = NULL;
                if (asprintf(&reason, "cannot start a session: %s", strerror(-r)) < 0)
                        reason = NULL;
                (void) agent_context_complete(c, t, AGENT_TASK_FAILED, reason ?: "cannot start a session");
                return;
        }
        t->userdata = rt;
        c->n_sessions++;
}

static void dispatch(AgentContext *c) {
        unsigned max = c->agent->max_sessions ?: 1;
        AgentTask *t;
        while (!c->stopping && !c->quarantined && !c->halted_by_call && !c->halted_by_marker &&
               c->n_sessions < max && (t = agent_queue_peek(c->queue)))
                start_task(c, t);
}

/* ---- flush: dispatch, group commit, replies, signals, properties, idle ---- */

static bool context_idle(AgentContext *c) {
        AgentQueueStats st;
        agent_queue_get_stats(c->queue, &st);
        return st.n_queued == 0 && st.n_running == 0 && c->n_sessions == 0 && c->n_pending == 0 &&
                !agent_queue_has_batch(c->queue);
}

static int on_idle_timer(sd_event_source *s, uint64_t usec, void *userdata);
static void begin_exit(AgentContext *c);

static void update_idle(AgentContext *c) {
        bool idle = context_idle(c);
        AgentQueueStats st;
        agent_queue_get_stats(c->queue, &st);
        /* Stopping or quarantined: queued tasks stay in the journal for the next start. */
        bool drained = st.n_running == 0 && c->n_sessions == 0 && c->n_pending == 0 &&
                !agent_queue_has_batch(c->queue);
        if ((idle && c->name_released) || (c->stopping && drained)) {
                (void) sd_event_exit(c->event, 0);
                return;
        }
        if (!idle || c->idle_exit_usec == 0 || c->stopping) {
                if (c->idle_source)
                        (void) sd_event_source_set_enabled(c->idle_source, SD_EVENT_OFF);
                return;
        }
        uint64_t when = now_monotonic() + c->idle_exit_usec;
        if (!c->idle_source) {
                int r = sd_event_add_time(c->event, &c->idle_source, CLOCK_MONOTONIC, when, 0, on_idle_timer, c);
                if (r < 0)
                        log_msg(LOG_WARNING, "Failed to arm the idle timer, ignoring: %s", strerror(-r));
                return;
        }
        (void) sd_event_source_set_time(c->idle_source, when);
        (void) sd_event_source_set_enabled(c->idle_source, SD_EVENT_ONESHOT);
}

static int flush(AgentContext *c) {
        dispatch(c);
        int r = agent_queue_commit(c->queue);
        if (r < 0) {
                log_msg(LOG_ERR, "Failed to write the queue journal: %s; stopping (the journal is intact up to "
                        "the last acknowledged task)", strerror(-r));
                pending_run(c, r);
                c->failed_commit = true;
                (void) sd_event_exit(c->event, r);
                return r;
        }
        pending_run(c, 0);
        /* No pending entry points at a task any more: finished tasks beyond the limit can go. */
        (void) agent_queue_evict(c->queue);
        emit_props_changed(c);
        if (agent_queue_want_compact(c->queue)) {
                r = agent_queue_compact(c->queue);
                if (r < 0)
                        log_msg(LOG_WARNING, "Failed to compact the queue journal, ignoring: %s", strerror(-r));
        }
        update_idle(c);
        return 0;
}

static int on_flush(sd_event_source *s, void *userdata) {
        (void) flush(userdata);
        return 0;
}

void agent_context_schedule_flush(AgentContext *c) {
        if (c->flush_source)
                (void) sd_event_source_set_enabled(c->flush_source, SD_EVENT_ONESHOT);
}

/* ---- exit paths ---- */

static int on_name_released(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        AgentContext *c = userdata;
        c->name_released = true;
        agent_context_schedule_flush(c);
        return 0;
}

static void release_name(AgentContext *c) {
        if (!c->bus_name || c->n_buses == 0 || c->name_released)
                return;
        int r = sd_bus_release_name_async(c->buses[0], NULL, c->bus_name, on_name_released, c);
        if (r < 0) {
                log_msg(LOG_WARNING, "Failed to release %s: %s", c->bus_name, strerror(-r));
                c->name_released = true;
        }
}

static int on_idle_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        AgentContext *c = userdata;
        if (!context_idle(c) || c->stopping)
                return 0;
        log_msg(LOG_INFO, "Idle for %llus with an empty queue, exiting",
                (unsigned long long) (c->idle_exit_usec / USEC_PER_SEC));
        /* Calls that arrive before the release completes are still served; then we exit. */
        if (c->bus_name)
                release_name(c);
        else
                c->name_released = true;
        agent_context_schedule_flush(c);
        return 0;
}

static int on_stop_grace(sd_event_source *s, uint64_t usec, void *userdata) {
        AgentContext *c = userdata;
        size_t n;
        AgentTask * const *tasks = agent_queue_tasks(c->queue, &n);
        for (size_t i = 0; i < n; i++) {
                RunningTask *rt = tasks[i]->status == AGENT_TASK_RUNNING ? tasks[i]->userdata : NULL;
                if (rt && rt->session) {
                        log_msg(LOG_NOTICE, "Task %s still running at shutdown: killed, it runs again at the next "
                                "start", tasks[i]->id);
                        rt->shutdown = true;
                        agent_session_cancel(rt->session);
                }
        }
        return 0;
}

static void begin_exit(AgentContext *c) {
        if (c->stopping)
                return;
        c->stopping = true;
        release_name(c);
        if (c->n_sessions > 0) {
                log_msg(LOG_INFO, "Stopping: waiting up to %llus for %zu running session(s)",
                        (unsigned long long) (c->stop_grace_usec / USEC_PER_SEC), c->n_sessions);
                (void) sd_event_add_time_relative(c->event, &c->stop_source, CLOCK_MONOTONIC, c->stop_grace_usec,
                                                  0, on_stop_grace, c);
        }
        agent_context_schedule_flush(c);
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        begin_exit(userdata);
        return 0;
}

int agent_context_install_signals(AgentContext *c) {
        int r = sd_event_add_signal(c->event, NULL, SIGTERM, on_signal, c);
        if (r < 0)
                return r;
        return sd_event_add_signal(c->event, NULL, SIGINT, on_signal, c);
}

/* ---- methods ---- */

static int check_accepting(AgentContext *c, sd_bus_error *error) {
        if (c->quarantined)
                return con_bus_error_setf(error, CON_ERROR_QUARANTINED,
                                          "Agent '%s' is quarantined: %s; it accepts and runs no tasks (its files "
                                          "stay for forensics) until `con release %s`", c->agent->name,
                                          strempty(c->quarantine_reason), c->agent->name);
        if (c->halted_by_marker || c->halted_by_call)
                return con_bus_error_setf(error, CON_ERROR_HALTED,
                                          "Agent '%s' is halted: %s; it accepts and runs no tasks until `con resume`",
                                          c->agent->name, strempty(c->halted_by_marker ? c->marker_halt_reason :
                                                                                         c->halt_reason));
        if (c->stopping || c->name_released)
                return con_bus_error_setf(error, CON_ERROR_HALTED,
                                          "Agent '%s' is stopping; submit again in a moment (the bus starts it anew)",
                                          c->agent->name);
        if (c->failed_commit)
                return con_bus_error_setf(error, CON_ERROR_HALTED, "Agent '%s' cannot write its queue",
                                          c->agent->name);
        return 0;
}

static int check_text(AgentContext *c, const char *text, sd_bus_error *error) {
        size_t l = strlen(text);
        uint64_t max = c->config->task_max_size ?: CON_TASK_DEFAULT_MAX_SIZE;
        if (l > max)
                return con_bus_error_setf(error, CON_ERROR_TASK_TOO_LARGE,
                                          "The task is %zu bytes; agent '%s' accepts at most %llu "
                                          "(system.task_max_size)", l, c->agent->name, (unsigned long long) max);
        if (text[strspn(text, " \t\r\n")] == 0)
                return con_bus_error_setf(error, CON_ERROR_INVALID_TASK, "The task text is empty");
        AgentQueueStats st;
        agent_queue_get_stats(c->queue, &st);
        if (st.n_queued >= QUEUE_MAX)
                return con_bus_error_setf(error, CON_ERROR_QUEUE_FULL,
                                          "Agent '%s' already has %zu tasks queued; try again later",
                                          c->agent->name, st.n_queued);
        return 0;
}

/* The per-sender quota: one sender (a uid: the bus caller, or the owner of a dropped file) may
 * have at most system.max_queued_per_sender unfinished (queued or running) tasks here, so a flood
 * from one sender neither fills the queue nor the memory and the others keep getting through.
 * A redelivery of a task already known is never refused: the queue deduplicates it. */
static int check_sender_quota(AgentContext *c, const AgentTaskRequest *req, sd_bus_error *error) {
        size_t limit = c->config->max_queued_per_sender ?: CON_MAX_QUEUED_PER_SENDER_DEFAULT;
        AgentQueueStats st;
        agent_queue_get_stats(c->queue, &st);
        if (st.n_queued + st.n_running < limit)
                return 0;
        if (req->id && con_task_id_valid(req->id) &&
            (agent_queue_find(c->queue, req->id) || agent_queue_known_on_disk(c->queue, req->id)))
                return 0;
        size_t n_tasks, mine = 0;
        AgentTask * const *tasks = agent_queue_tasks(c->queue, &n_tasks);
        for (size_t i = 0; i < n_tasks && mine < limit; i++)
                if (tasks[i]->sender_uid == req->sender_uid && !agent_task_status_is_final(tasks[i]->status))
                        mine++;
        if (mine < limit)
                return 0;
        return con_bus_error_setf(error, CON_ERROR_SENDER_QUOTA,
                                  "Sender '%s' (uid %u) already has %zu unfinished tasks at agent '%s', the limit "
                                  "per sender (system.max_queued_per_sender in %s); submit again when some have "
                                  "finished", strempty(req->sender), (unsigned) req->sender_uid, mine,
                                  c->agent->name, c->config->path ?: CON_CONFIG_PATH);
}

static int queue_task(AgentContext *c, sd_bus_message *m, const AgentTaskRequest *req, sd_bus_error *error) {
        AgentTask *t = NULL;
        int r = check_sender_quota(c, req, error);
        if (r < 0)
                return r;
        r = agent_queue_accept(c->queue, req, now_realtime(), &t);
        if (r == -EINVAL)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid task id or priority");
        if (r == -EEXIST && req->id)
                /* Never who holds it: the id is all the caller learns. */
                return con_bus_error_setf(error, CON_ERROR_DUPLICATE_TASK,
                                          "Task id '%s' is already used on agent '%s' by another sender; send "
                                          "the task again under another id", req->id, c->agent->name);
        if (r == -EEXIST)
                return con_bus_error_setf(error, CON_ERROR_DUPLICATE_TASK,
                                          "Agent '%s' could not make a task id that is not already used",
                                          c->agent->name);
        if (r < 0)
                return r;
        if (r == 2) {
                /* A finished task evicted from memory: committed long ago, answer at once. */
                r = sd_bus_reply_method_return(m, "s", req->id);
                return r < 0 ? r : 1;
        }
        bool fresh = r == 0;
        r = pending_add(c, PENDING_REPLY_ID, m, t);
        if (r < 0)
                return r;
        if (fresh) {
                r = pending_add(c, PENDING_ACCEPTED, NULL, t);
                if (r < 0)
                        return r;
                /* Built-in commands are answered at once, in the same journal batch as the accept. */
                if (agent_builtin_is(t->text))
                        start_task(c, t);
        }
        if (c->n_pending >= PENDING_FLUSH_INLINE)
                (void) flush(c);
        return 1;
}

static int method_submit(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        _cleanup_(agent_caller_done) AgentCaller caller = {};
        const char *text;
        int r;

        r = sd_bus_message_read(m, "s", &text);
        if (r < 0)
                return r;
        r = agent_authorize(c, m, AGENT_VERB_SUBMIT, NULL, &caller, error);
        if (r <= 0)
                return r < 0 ? r : 1; /* 0: parked, the handler runs again */
        r = check_accepting(c, error);
        if (r < 0)
                return r;
        r = check_text(c, text, error);
        if (r < 0)
                return r;
        AgentTaskRequest req = {
                .sender_uid = caller.uid,
                .sender = caller.name,
                .priority = CON_TASK_PRIORITY_DEFAULT,
                .text = text,
        };
        return queue_task(c, m, &req, error);
}

static int method_deliver(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        _cleanup_(agent_caller_done) AgentCaller caller = {};
        _cleanup_(agent_deliver_args_done) AgentDeliverArgs a = {};
        _cleanup_free_ char *sender = NULL;
        int r;

        r = agent_authorize(c, m, AGENT_VERB_DELIVER, NULL, &caller, error);
        if (r <= 0)
                return r < 0 ? r : 1; /* 0: parked, the handler runs again */
        r = agent_deliver_parse(m, &a, error);
        if (r < 0)
                return r;
        r = check_accepting(c, error);
        if (r < 0)
                return r;
        r = check_text(c, a.text, error);
        if (r < 0)
                return r;
        uid_t uid = caller.uid;
        if (a.has_sender_uid) {
                if (caller.uid != 0)
                        return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                                  "Access denied: only root may set sender_uid (the router "
                                                  "delivering a file owned by that user)");
                uid = a.sender_uid;
                sender = user_name_of(uid);
                if (!sender)
                        return -ENOMEM;
        }
        AgentTaskRequest req = {
                .id = a.id,
                .sender_uid = uid,
                .sender = sender ?: caller.name,
                .priority = a.priority,
                .reply_to = a.reply_to,
                .deadline_usec = a.deadline_usec,
                .conversation = a.conversation,
                .text = a.text,
        };
        return queue_task(c, m, &req, error);
}

/* The task in memory, or a finished one evicted from memory, read from disk into *ret_owned. */
static int find_task(AgentContext *c, const char *id, AgentTask **ret, AgentTask **ret_owned,
                     sd_bus_error *error) {
        AgentTask *t = con_task_id_valid(id) ? agent_queue_find(c->queue, id) : NULL;
        if (!t && con_task_id_valid(id)) {
                int r = agent_queue_load_finished(c->queue, id, ret_owned);
                if (r == -ENOMEM)
                        return r;
                if (r < 0 && r != -ENOENT)
                        log_msg(LOG_WARNING, "Failed to read the record of finished task %s, ignoring: %s", id,
                                strerror(-r));
                if (r >= 0)
                        t = *ret_owned;
        }
        if (!t)
                return con_bus_error_setf(error, CON_ERROR_NO_SUCH_TASK, "Agent '%s' knows no task '%s'",
                                          c->agent->name, id);
        *ret = t;
        return 0;
}

static int method_cancel(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        _cleanup_(agent_caller_done) AgentCaller caller = {};
        const char *id;
        AgentTask *t = NULL;
        _cleanup_(agent_task_freep) AgentTask *evicted = NULL;
        int r;

        r = sd_bus_message_read(m, "s", &id);
        if (r < 0)
                return r;
        r = find_task(c, id, &t, &evicted, error);
        if (r < 0)
                return r;
        r = agent_authorize(c, m, AGENT_VERB_CANCEL, t, &caller, error);
        if (r <= 0)
                return r < 0 ? r : 1; /* 0: parked, the handler runs again */

        _cleanup_free_ char *reason = NULL;
        if (asprintf(&reason, "cancelled by %s", caller.name) < 0)
                return -ENOMEM;
        RunningTask *rt = t->status == AGENT_TASK_RUNNING ? t->userdata : NULL;
        if (t->status == AGENT_TASK_QUEUED || (t->status == AGENT_TASK_RUNNING && !rt)) {
                /* Queued, or a built-in still waiting for answers: ends now. */
                task_fail_now(c, t, AGENT_TASK_CANCELLED, reason);
        } else if (rt && rt->session) {
                free(rt->cancel_reason);
                rt->cancel_reason = TAKE_PTR(reason);
                agent_session_cancel(rt->session);
        }
        /* Finished tasks: nothing to do, Cancel is idempotent. */
        return pending_add(c, PENDING_REPLY_EMPTY, m, evicted ? NULL : t) < 0 ? -ENOMEM : 1;
}

int agent_result_append(sd_bus_message *reply, AgentTaskStatus st, const char *text, const AgentResultInfo *info,
                        bool with_info) {
        if (!with_info)
                return sd_bus_message_append(reply, "ss", agent_task_status_to_string(st), strempty(text));
        return sd_bus_message_append(reply, "ssa{sv}", agent_task_status_to_string(st), strempty(text), 3,
                                     "truncated", "b", (int) info->truncated,
                                     "replaced", "b", (int) info->replaced,
                                     "size", "t", info->size);
}

/* GetResult and GetResultInfo: one reply, with or without the info dictionary. */
static int get_result(sd_bus_message *m, void *userdata, sd_bus_error *error, bool with_info) {
        AgentContext *c = userdata;
        const char *id;
        AgentTask *t = NULL;
        _cleanup_(agent_task_freep) AgentTask *evicted = NULL;
        AgentResultInfo info = {};
        int r;

        r = sd_bus_message_read(m, "s", &id);
        if (r < 0)
                return r;
        r = find_task(c, id, &t, &evicted, error);
        if (r < 0)
                return r;
        r = agent_authorize(c, m, AGENT_VERB_GET_RESULT, t, NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1; /* 0: parked, the handler runs again */
        _cleanup_free_ char *text = NULL;
        if (agent_task_status_is_final(t->status)) {
                r = agent_queue_read_result(c->queue, t, &text, &info);
                if (r == -ENOENT)
                        r = asprintf(&text, "(the response file outbox/%s.response is gone)", t->id) < 0 ? -ENOMEM
                                                                                                           : 0;
                else if (r == -EPERM) {
                        log_msg(LOG_WARNING, "outbox/%s.response is not the service's own file (owner, mode or "
                                "links changed): not served", t->id);
                        r = asprintf(&text, "(the response file outbox/%s.response was replaced by someone other "
                                     "than the agent service; it is not served)", t->id) < 0 ? -ENOMEM : 0;
                }
                if (r < 0)
                        return r;
        }
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = agent_result_append(reply, t->status, text, &info, with_info);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_result(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return get_result(m, userdata, error, false);
}

static int method_get_result_info(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return get_result(m, userdata, error, true);
}

static int method_list_tasks(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        _cleanup_(agent_caller_done) AgentCaller caller = {};
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = agent_authorize(c, m, AGENT_VERB_LIST_TASKS, NULL, &caller, error);
        if (r <= 0)
                return r < 0 ? r : 1; /* 0: parked, the handler runs again */
        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(sss)");
        if (r < 0)
                return r;
        size_t n;
        AgentTask * const *tasks = agent_queue_tasks(c->queue, &n);
        for (size_t i = 0; i < n; i++) {
                if (!caller.all_tasks && tasks[i]->sender_uid != caller.uid)
                        continue;
                r = sd_bus_message_append(reply, "(sss)", tasks[i]->id,
                                          agent_task_status_to_string(tasks[i]->status), tasks[i]->sender);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* ---- halt, quarantine, kill sessions ---- */

#define REASON_MAX 1024

/* Kills every running session's process group; each task fails with reason. Returns how many. */
static uint32_t kill_sessions(AgentContext *c, const char *reason) {
        size_t n;
        uint32_t killed = 0;
        AgentTask * const *tasks = agent_queue_tasks(c->queue, &n);
        for (size_t i = 0; i < n; i++) {
                RunningTask *rt = tasks[i]->status == AGENT_TASK_RUNNING ? tasks[i]->userdata : NULL;
                if (!rt || !rt->session || rt->session->exited || rt->session->cancelled)
                        continue;
                char *copy = strdup(reason);
                if (copy) {
                        free(rt->cancel_reason);
                        rt->cancel_reason = copy;
                }
                rt->kill_fails = true;
                agent_session_cancel(rt->session);
                killed++;
        }
        return killed;
}

static int check_reason(const char *reason, sd_bus_error *error) {
        if (strlen(reason) > REASON_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "The reason is %zu bytes; at most %d "
                                         "are allowed", strlen(reason), REASON_MAX);
        for (const char *p = reason; *p; p++)
                if ((unsigned char) *p < 0x20 && *p != '\t')
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "The reason must be one line of text without control characters");
        return 0;
}

/* The prologue of the admin methods that take a reason: read it, check it, authorize. Returns 1
 * allowed (*ret_reason points into m), 0 parked, negative with error set. */
static int admin_prologue(AgentContext *c, sd_bus_message *m, AgentVerb verb, AgentCaller *ret_caller,
                          const char **ret_reason, sd_bus_error *error) {
        int r = sd_bus_message_read(m, "s", ret_reason);
        if (r < 0)
                return r;
        r = check_reason(*ret_reason, error);
        if (r < 0)
                return r;
        return agent_authorize(c, m, verb, NULL, ret_caller, error);
}

/* "REASON (by USER)", for the state and the log. */
static char *reason_by(const char *reason, const AgentCaller *caller) {
        char *text = NULL;
        if (asprintf(&text, "%s (by %s)", isempty(reason) ? "no reason given" : reason, caller->name) < 0)
                return NULL;
        return text;
}

static void quarantine_now(AgentContext *c, const char *reason) {
        _cleanup_free_ char *why = NULL;
        if (c->quarantined)
                return;
        c->quarantined = true;
        free(c->quarantine_reason);
        c->quarantine_reason = strdup(isempty(reason) ? "no reason given" : reason);
        log_msg(LOG_WARNING, "quarantined: %s; killing sessions, releasing %s and exiting (files stay)",
                strempty(c->quarantine_reason), c->bus_name ?: "the connection");
        if (asprintf(&why, "agent quarantined: %s", strempty(c->quarantine_reason)) < 0)
                why = NULL;
        (void) kill_sessions(c, why ?: "agent quarantined");
        begin_exit(c);
}

static void halt_changed(AgentContext *c, bool was_halted, const char *reason) {
        bool halted = c->halted_by_call || c->halted_by_marker;
        if (halted && !was_halted) {
                _cleanup_free_ char *why = NULL;
                if (asprintf(&why, "agent halted: %s", strempty(reason)) < 0)
                        why = NULL;
                uint32_t n = kill_sessions(c, why ?: "agent halted");
                log_msg(LOG_WARNING, "halted: %s (%u session(s) killed; queued tasks wait for con resume)",
                        strempty(reason), n);
        } else if (!halted && was_halted)
                log_msg(LOG_NOTICE, "resumed: starting the queue");
        agent_context_schedule_flush(c);
}

static int method_halt(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        _cleanup_(agent_caller_done) AgentCaller caller = {};
        const char *reason;
        int r;

        r = admin_prologue(c, m, AGENT_VERB_HALT, &caller, &reason, error);
        if (r <= 0)
                return r < 0 ? r : 1; /* 0: parked, the handler runs again */
        bool was = c->halted_by_call || c->halted_by_marker;
        char *text = reason_by(reason, &caller);
        if (!text)
                return -ENOMEM;
        free(c->halt_reason);
        c->halt_reason = text;
        c->halted_by_call = true;
        halt_changed(c, was, text);
        return sd_bus_reply_method_return(m, NULL);
}

static int method_resume(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        int r;

        r = agent_authorize(c, m, AGENT_VERB_RESUME, NULL, NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1; /* 0: parked, the handler runs again */
        if (c->quarantined)
                return con_bus_error_setf(error, CON_ERROR_QUARANTINED,
                                          "Agent '%s' is quarantined (%s); Resume does not lift a quarantine: "
                                          "`con release %s`", c->agent->name, strempty(c->quarantine_reason),
                                          c->agent->name);
        if (c->halted_by_marker)
                return con_bus_error_setf(error, CON_ERROR_HALTED,
                                          "Agent '%s' stays halted: %s (marker in %s, written by the contract "
                                          "service); `con resume` lifts it", c->agent->name,
                                          strempty(c->marker_halt_reason), c->state_dir);
        bool was = c->halted_by_call;
        c->halted_by_call = false;
        free(c->halt_reason);
        c->halt_reason = NULL;
        halt_changed(c, was, NULL);
        return sd_bus_reply_method_return(m, NULL);
}

static int method_quarantine(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        _cleanup_(agent_caller_done) AgentCaller caller = {};
        _cleanup_free_ char *text = NULL;
        const char *reason;
        int r;

        r = admin_prologue(c, m, AGENT_VERB_QUARANTINE, &caller, &reason, error);
        if (r <= 0)
                return r < 0 ? r : 1; /* 0: parked, the handler runs again */
        text = reason_by(reason, &caller);
        if (!text)
                return -ENOMEM;
        r = sd_bus_reply_method_return(m, NULL);
        quarantine_now(c, text);
        return r;
}

static int method_kill_sessions(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        const char *reason;
        int r;

        r = admin_prologue(c, m, AGENT_VERB_KILL_SESSIONS, NULL, &reason, error);
        if (r <= 0)
                return r < 0 ? r : 1; /* 0: parked, the handler runs again */
        uint32_t n = kill_sessions(c, isempty(reason) ? "the session was killed (no reason given)" : reason);
        if (n > 0)
                log_msg(LOG_WARNING, "Killed %u session(s): %s", n, reason);
        return sd_bus_reply_method_return(m, "u", n);
}

/* ---- markers of the contract service: STATE/halt, STATE/halt-workers, STATE/quarantine/NAME ---- */

/* 1 and *ret_reason when the marker is there, 0 when not. Only markers owned by root (or by this
 * service's own user, for tests) count: nobody else can halt or quarantine agents this way. */
static int read_marker(const char *path, char **ret_reason) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        struct stat st;
        char buf[REASON_MAX + 1];
        if (fd < 0)
                return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || (st.st_uid != 0 && st.st_uid != geteuid()))
                return 0;
        ssize_t l = read(fd, buf, sizeof(buf) - 1);
        if (l < 0)
                return -errno;
        /* The reason goes into bus errors and task results: whole characters, valid text. */
        if (l == (ssize_t) sizeof(buf) - 1)
                l = (ssize_t) con_utf8_complete_len(buf, (size_t) l);
        buf[l] = 0;
        buf[strcspn(buf, "\r\n")] = 0;  /* the first line */
        for (char *p = buf; *p; p++)
                if ((unsigned char) *p < 0x20)
                        *p = ' ';
        const char *r = buf[strspn(buf, " \t")] ? buf : "no reason given";
        return con_utf8_sanitize(r, strlen(r), ret_reason, NULL) < 0 ? -ENOMEM : 1;
}

static int read_markers(AgentContext *c, bool *ret_halted, char **ret_halt_reason, bool *ret_quarantined,
                        char **ret_quarantine_reason) {
        _cleanup_free_ char *p = NULL, *reason = NULL, *qreason = NULL;
        int r;

        if (asprintf(&p, "%s/halt", c->state_dir) < 0)
                return -ENOMEM;
        r = read_marker(p, &reason);
        if (r == 0 && c->agent->tier == CON_TIER_WORKER) {
                free(p);
                if (asprintf(&p, "%s/halt-workers", c->state_dir) < 0)
                        return -ENOMEM;
                r = read_marker(p, &reason);
        }
        if (r < 0)
                return r;
        *ret_halted = r > 0;
        free(p);
        if (asprintf(&p, "%s/quarantine/%s", c->state_dir, c->agent->name) < 0)
                return -ENOMEM;
        r = read_marker(p, &qreason);
        if (r < 0)
                return r;
        *ret_quarantined = r > 0;
        *ret_halt_reason = TAKE_PTR(reason);
        *ret_quarantine_reason = TAKE_PTR(qreason);
        return 0;
}

static void apply_markers(AgentContext *c, bool started) {
        _cleanup_free_ char *hreason = NULL, *qreason = NULL;
        bool halted = false, quarantined = false;
        int r = read_markers(c, &halted, &hreason, &quarantined, &qreason);
        if (r < 0) {
                log_msg(LOG_WARNING, "Cannot read the markers in %s, ignoring: %s", c->state_dir, strerror(-r));
                return;
        }
        if (quarantined) {
                if (started)
                        quarantine_now(c, qreason);
                else {
                        c->quarantined = true;
                        free(c->quarantine_reason);
                        c->quarantine_reason = TAKE_PTR(qreason);
                }
        }
        bool was = c->halted_by_call || c->halted_by_marker;
        if (halted != c->halted_by_marker || (halted && !streq_ptr(hreason, c->marker_halt_reason))) {
                c->halted_by_marker = halted;
                free(c->marker_halt_reason);
                c->marker_halt_reason = TAKE_PTR(hreason);
                if (started)
                        halt_changed(c, was, c->marker_halt_reason);
        }
}

static int on_state_change(sd_event_source *s, const struct inotify_event *ev, void *userdata);
static int on_state_timer(sd_event_source *s, uint64_t usec, void *userdata);

#define STATE_MASK (IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | \
                    IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
#define STATE_RETRY (5 * USEC_PER_SEC)

/* Watches the state folder and its quarantine/ folder; while they are missing (or unreadable),
 * the parent and a slow timer notice their creation. */
static void state_watch_setup(AgentContext *c) {
        _cleanup_free_ char *q = NULL, *parent = NULL;
        if (!c->state_watch)
                (void) sd_event_add_inotify(c->event, &c->state_watch, c->state_dir, STATE_MASK, on_state_change, c);
        if (!c->quarantine_watch && asprintf(&q, "%s/quarantine", c->state_dir) >= 0)
                (void) sd_event_add_inotify(c->event, &c->quarantine_watch, q, STATE_MASK, on_state_change, c);
        if (c->state_watch && c->quarantine_watch)
                return;
        if (!c->state_watch && !c->state_parent_watch && (parent = strdup(c->state_dir))) {
                char *slash = strrchr(parent, '/');
                if (slash && slash != parent) {
                        *slash = 0;
                        (void) sd_event_add_inotify(c->event, &c->state_parent_watch, parent,
                                                    IN_CREATE | IN_MOVED_TO | IN_ONLYDIR, on_state_change, c);
                }
        }
        if (!c->state_timer)
                (void) sd_event_add_time_relative(c->event, &c->state_timer, CLOCK_MONOTONIC, STATE_RETRY, 0,
                                                  on_state_timer, c);
        else {
                (void) sd_event_source_set_time_relative(c->state_timer, STATE_RETRY);
                (void) sd_event_source_set_enabled(c->state_timer, SD_EVENT_ONESHOT);
        }
}

static void state_watch_drop(sd_event_source **s) {
        *s = sd_event_source_disable_unref(*s);
}

static int on_state_change(sd_event_source *s, const struct inotify_event *ev, void *userdata) {
        AgentContext *c = userdata;
        if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) {
                if (s == c->state_watch)
                        state_watch_drop(&c->state_watch);
                else if (s == c->quarantine_watch)
                        state_watch_drop(&c->quarantine_watch);
        }
        state_watch_setup(c);
        apply_markers(c, true);
        return 0;
}

static int on_state_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        AgentContext *c = userdata;
        state_watch_setup(c);
        apply_markers(c, true);
        return 0;
}

int agent_context_watch_state(AgentContext *c) {
        state_watch_setup(c);
        apply_markers(c, false);
        return 0;
}

/* ---- properties ---- */

static int property_get_string(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        const char *v = "";
        if (streq(property, "Name"))
                v = c->agent->name;
        else if (streq(property, "Tier"))
                v = con_tier_to_string(c->agent->tier);
        else if (streq(property, "Mode"))
                v = con_mode_to_string(c->agent->mode);
        else if (streq(property, "State"))
                v = agent_context_state(c);
        else if (streq(property, "CurrentTask"))
                v = current_task(c);
        return sd_bus_message_append(reply, "s", strempty(v));
}

static int property_get_roles(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        return sd_bus_message_append_strv(reply, c->agent->roles);
}

static int property_get_count(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        AgentQueueStats st;
        agent_queue_get_stats(c->queue, &st);
        if (streq(property, "QueueLength"))
                return sd_bus_message_append(reply, "u", (uint32_t) st.n_queued);
        if (streq(property, "TasksAccepted"))
                return sd_bus_message_append(reply, "t", (uint64_t) st.n_tasks);
        if (streq(property, "TasksCompleted"))
                return sd_bus_message_append(reply, "t", st.n_done);
        return sd_bus_message_append(reply, "t", st.n_failed);
}

const sd_bus_vtable agent_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("Submit", SD_BUS_ARGS("s", text), SD_BUS_RESULT("s", task_id), method_submit,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Deliver", SD_BUS_ARGS("a{sv}", task), SD_BUS_RESULT("s", task_id), method_deliver,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Cancel", SD_BUS_ARGS("s", task_id), SD_BUS_NO_RESULT, method_cancel,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetResult", SD_BUS_ARGS("s", task_id), SD_BUS_RESULT("s", status, "s", text),
                                method_get_result, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetResultInfo", SD_BUS_ARGS("s", task_id),
                                SD_BUS_RESULT("s", status, "s", text, "a{sv}", info),
                                method_get_result_info, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListTasks", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sss)", tasks), method_list_tasks,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Halt", SD_BUS_ARGS("s", reason), SD_BUS_NO_RESULT, method_halt,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Resume", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_resume, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Quarantine", SD_BUS_ARGS("s", reason), SD_BUS_NO_RESULT, method_quarantine,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("KillSessions", SD_BUS_ARGS("s", reason), SD_BUS_RESULT("u", killed),
                                method_kill_sessions, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("TaskAccepted", SD_BUS_ARGS("s", task_id, "s", sender), 0),
        SD_BUS_SIGNAL_WITH_ARGS("TaskStarted", SD_BUS_ARGS("s", task_id, "s", sender), 0),
        SD_BUS_SIGNAL_WITH_ARGS("TaskCompleted", SD_BUS_ARGS("s", task_id, "s", sender, "s", status), 0),
        SD_BUS_PROPERTY("Name", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Tier", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Roles", "as", property_get_roles, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Mode", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("State", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("QueueLength", "u", property_get_count, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("CurrentTask", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("TasksAccepted", "t", property_get_count, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("TasksCompleted", "t", property_get_count, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("TasksFailed", "t", property_get_count, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_VTABLE_END,
};

/* ---- setup ---- */

int agent_context_add_bus(AgentContext *c, sd_bus *bus) {
        sd_bus **b = reallocarray(c->buses, c->n_buses + 1, sizeof(sd_bus *));
        if (!b)
                return -ENOMEM;
        c->buses = b;
        sd_bus_slot **s = reallocarray(c->slots, c->n_buses + 1, sizeof(sd_bus_slot *));
        if (!s)
                return -ENOMEM;
        c->slots = s;
        int r = sd_bus_add_object_vtable(bus, &c->slots[c->n_buses], CON_AGENT_PATH, CON_AGENT_INTERFACE,
                                         agent_vtable, c);
        if (r < 0)
                return r;
        c->buses[c->n_buses++] = sd_bus_ref(bus);
        return 0;
}

int agent_context_request_name(AgentContext *c, sd_bus_error *error) {
        int r = con_agent_bus_name(c->agent->name, &c->bus_name);
        if (r < 0)
                return r;
        return sd_bus_request_name(c->buses[0], c->bus_name, 0);
}

int agent_context_start(AgentContext *c) {
        int r = agent_queue_write_all_files(c->queue);
        if (r < 0) {
                log_msg(LOG_WARNING, "Failed to regenerate outbox/processed/failed files, will retry: %s",
                        strerror(-r));
                files_retry_arm(c);
        }
        agent_context_schedule_flush(c);
        return 0;
}

AgentContext *agent_context_free(AgentContext *c) {
        if (!c)
                return NULL;
        if (c->queue) {
                /* Whatever is still in the batch was never acknowledged; writing it is harmless. */
                (void) agent_queue_commit(c->queue);
                size_t n;
                AgentTask * const *tasks = agent_queue_tasks(c->queue, &n);
                for (size_t i = 0; i < n; i++)
                        if (tasks[i]->status == AGENT_TASK_RUNNING && tasks[i]->userdata) {
                                RunningTask *rt = tasks[i]->userdata;
                                tasks[i]->userdata = NULL;
                                running_task_free(rt);
                        }
        }
        for (size_t i = 0; i < c->n_pending; i++)
                sd_bus_message_unref(c->pending[i].call);
        free(c->pending);
        while (c->uid_lookups)
                uid_lookup_free(c->uid_lookups);
        uid_cache_clear(c);
        con_authz_free(c->authz);
        con_policy_free(c->policy);
        sd_event_source_disable_unref(c->state_watch);
        sd_event_source_disable_unref(c->state_parent_watch);
        sd_event_source_disable_unref(c->quarantine_watch);
        sd_event_source_disable_unref(c->state_timer);
        free(c->state_dir);
        free(c->halt_reason);
        free(c->marker_halt_reason);
        free(c->quarantine_reason);
        for (size_t i = 0; i < c->n_buses; i++) {
                sd_bus_slot_unref(c->slots[i]);
                sd_bus_unref(c->buses[i]);
        }
        free(c->buses);
        free(c->slots);
        sd_event_source_disable_unref(c->flush_source);
        sd_event_source_disable_unref(c->idle_source);
        sd_event_source_disable_unref(c->files_retry_source);
        sd_event_source_disable_unref(c->stop_source);
        agent_queue_free(c->queue);
        safe_close(c->data_dir_fd);
        safe_close(c->cgroup_fd);
        free((char *) c->session_user.name);
        free((gid_t *) c->session_user.groups);
        free(c->skills_dir);
        con_config_free(c->config);
        free(c->bus_name);
        free(c->data_dir);
        free(c->workspace);
        free(c->conversations_dir);
        sd_event_unref(c->event);
        free(c);
        return NULL;
}

int agent_context_new(sd_event *e, ConConfig *config, const AgentContextOptions *o, AgentContext **ret,
                      char **ret_error) {
        _cleanup_(agent_context_freep) AgentContext *c = calloc(1, sizeof(AgentContext));
        int r;

        if (!c)
                return -ENOMEM;
        c->data_dir_fd = c->cgroup_fd = -EBADF;
        c->event = sd_event_ref(e);
        c->started_usec = now_monotonic();
        c->stop_grace_usec = DEFAULT_STOP_GRACE;

        c->agent = con_config_find_agent(config, o->agent);
        if (!c->agent) {
                if (asprintf(ret_error, "agent '%s' is not in %s (agents: list)", o->agent,
                             config->path ?: CON_CONFIG_PATH) < 0)
                        return -ENOMEM;
                return -ENOENT;
        }
        c->runtime = con_runtime_for_agent(c->agent);
        c->idle_exit_usec = c->agent->mode == CON_MODE_ALWAYS ? 0 : c->agent->idle_exit_usec;

        if (o->data_dir)
                c->data_dir = strdup(o->data_dir);
        else if (asprintf(&c->data_dir, CON_SRV_DIR "/agents/%s", c->agent->name) < 0)
                c->data_dir = NULL;
        if (!c->data_dir || asprintf(&c->workspace, "%s/workspace", c->data_dir) < 0 ||
            asprintf(&c->conversations_dir, "%s/queue/" AGENT_HISTORY_DIR, c->data_dir) < 0 ||
            asprintf(&c->skills_dir, "%s/skills", c->data_dir) < 0)
                return -ENOMEM;
        if (o->session_user) {
                const ConSessionUser *u = o->session_user;
                c->session_user = (ConSessionUser) { .uid = u->uid, .gid = u->gid, .n_groups = u->n_groups };
                c->session_user.name = strdup(u->name);
                gid_t *g = calloc(u->n_groups ?: 1, sizeof(gid_t));
                if (!c->session_user.name || !g) {
                        free(g);
                        return -ENOMEM;
                }
                memcpy(g, u->groups, u->n_groups * sizeof(gid_t));
                c->session_user.groups = g;
                c->has_session_user = true;
        }
        if (o->cgroup_dir) {
                c->cgroup_fd = open(o->cgroup_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (c->cgroup_fd < 0) {
                        r = -errno;
                        (void) asprintf(ret_error, "cannot open the cgroup %s: %s", o->cgroup_dir, strerror(-r));
                        return r;
                }
        }
        c->data_dir_fd = open(c->data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (c->data_dir_fd < 0) {
                r = -errno;
                (void) asprintf(ret_error, "cannot open the agent's directory %s: %s (con bootstrap creates it)",
                                c->data_dir, strerror(-r));
                return r;
        }
        {
                /* The service's own folder: nobody else may rename or replace what is in it. */
                struct stat st;
                if (fstat(c->data_dir_fd, &st) < 0)
                        return -errno;
                if (st.st_uid != geteuid() || (st.st_mode & 022)) {
                        (void) asprintf(ret_error, "%s belongs to uid %u with mode %04o: it must belong to the agent "
                                        "service's user (root) and not be writable by group or others, or a "
                                        "session could replace the queue and results (con bootstrap repairs it)",
                                        c->data_dir, (unsigned) st.st_uid, (unsigned) (st.st_mode & 07777));
                        return -EPERM;
                }
        }
        if (mkdirat(c->data_dir_fd, "workspace", 0700) >= 0) {
                /* The sessions' folder belongs to the agent user, not to the service. */
                if (c->has_session_user &&
                    fchownat(c->data_dir_fd, "workspace", c->session_user.uid, c->session_user.gid,
                             AT_SYMLINK_NOFOLLOW) < 0) {
                        r = -errno;
                        (void) asprintf(ret_error, "cannot give %s to %s: %s", c->workspace, c->session_user.name,
                                        strerror(-r));
                        return r;
                }
        } else if (errno != EEXIST) {
                r = -errno;
                (void) asprintf(ret_error, "cannot create %s: %s", c->workspace, strerror(-r));
                return r;
        }
        r = agent_queue_open(c->data_dir_fd, o->lock_timeout_usec, &c->queue);
        if (r < 0) {
                if (r == -EWOULDBLOCK)
                        (void) asprintf(ret_error, "another con-agentd holds %s/queue/lock", c->data_dir);
                else if (r == -EPERM)
                        (void) asprintf(ret_error, "cannot open the queue in %s: queue/, outbox/, processed/, failed/ "
                                        "and queue/finished/ must belong to the agent service's user (root) and not "
                                        "be writable by group or others (con bootstrap repairs them)", c->data_dir);
                else
                        (void) asprintf(ret_error, "cannot open the queue in %s/queue: %s", c->data_dir,
                                        strerror(-r));
                return r;
        }
        AgentQueueStats st;
        agent_queue_get_stats(c->queue, &st);
        if (st.n_corrupt > 0)
                log_msg(LOG_WARNING, "Skipped %u unreadable record(s) in %s/queue/journal", st.n_corrupt,
                        c->data_dir);
        if (st.untrusted_journal)
                log_msg(LOG_ERR, "%s/queue/journal was not written by this service (owner, mode or links): not "
                        "replayed, set aside as queue/journal.untrusted-*; the queue starts empty", c->data_dir);
        if (st.torn_tail)
                log_msg(LOG_NOTICE, "Cut a torn last record off %s/queue/journal (a crash during a write; it was "
                        "never acknowledged)", c->data_dir);
        /* Conversations of earlier versions were in the workspace, written by the sessions
         * themselves: not to be trusted, so removed without being read. */
        r = agent_history_remove_legacy(c->workspace);
        if (r > 0)
                log_msg(LOG_NOTICE, "Removed %s/" AGENT_HISTORY_LEGACY_DIR "/ unread: conversations are kept in %s "
                        "now, out of the agent user's reach", c->workspace, c->conversations_dir);
        else if (r < 0)
                log_msg(LOG_WARNING, "Cannot remove %s/" AGENT_HISTORY_LEGACY_DIR "/ (it is never read): %s",
                        c->workspace, strerror(-r));

        r = con_policy_from_config(config, &c->policy);
        if (r < 0) {
                (void) asprintf(ret_error, "cannot build the access policy from %s: %s (con policy show)",
                                config->path ?: CON_CONFIG_PATH, strerror(-r));
                return r;
        }
        c->no_authz = o->no_authz;
        c->state_dir = strdup(o->state_dir ?: CON_SRV_DIR "/state");
        if (!c->state_dir)
                return -ENOMEM;

        r = sd_event_add_defer(e, &c->flush_source, on_flush, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_priority(c->flush_source, SD_EVENT_PRIORITY_IDLE);
        (void) sd_event_source_set_enabled(c->flush_source, SD_EVENT_OFF);

        c->config = config;
        *ret = TAKE_PTR(c);
        return 0;
}

/* ---- introspection ---- */

int agent_introspect_xml(char **ret) {
        return con_bus_introspect_vtable(CON_AGENT_PATH, CON_AGENT_INTERFACE, agent_vtable, ret);
}
