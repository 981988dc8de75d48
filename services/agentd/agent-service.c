/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>

#include "agent-builtins.h"
#include "agent-deliver.h"
#include "agent-service.h"
#include "con-paths.h"
#include "errors.h"
#include "macro.h"
#include "names.h"
#include "strv.h"
#include "task.h"

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
        bool shutdown;          /* killed because the service stops: leave it to the next start */
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

static bool user_is_agent(const char *name) {
        _cleanup_free_ char *agent = NULL;
        return name && startswith(name, CON_USER_PREFIX) && con_agent_from_user(name, &agent) >= 0;
}

/* Group membership as the user database states it, the way polkit's subject.isInGroup() sees it.
 * dbus-daemon 1.14 vouches for the caller's uid but sd-bus 252 does not pass on its UnixGroupIDs,
 * so the bus-provided groups alone would refuse every member of the submitters group. */
static bool user_db_in_group(uid_t uid, gid_t gid) {
        struct passwd pw, *res = NULL;
        char buf[4096];
        if (getpwuid_r(uid, &pw, buf, sizeof(buf), &res) != 0 || !res)
                return false;
        if (pw.pw_gid == gid)
                return true;
        int n = 64;
        for (int tries = 0; tries < 4; tries++) {
                _cleanup_free_ gid_t *groups = calloc((size_t) n, sizeof(gid_t));
                if (!groups)
                        return false;
                int want = n;
                if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &want) >= 0) {
                        for (int i = 0; i < want; i++)
                                if (groups[i] == gid)
                                        return true;
                        return false;
                }
                n = want > n ? want : n * 2;
        }
        return false;
}

void agent_caller_done(AgentCaller *a) {
        free(a->name);
        a->name = NULL;
}

/* ---- authorization ---- */

/* Caller credentials per sender unique name. On dbus-daemon sd_bus_query_sender_creds() is a
 * synchronous GetConnectionCredentials round trip for every message. The daemon records a peer's
 * credentials when it connects and never reuses a unique name, so an entry keyed by (bus, the
 * daemon's instance id, unique name) stays right; the few slots only bound memory. Event loop
 * thread only. */
#define CREDS_CACHE_SLOTS 8

typedef struct CredsCacheEntry {
        sd_bus *bus;
        sd_id128_t bus_id;
        char *sender;
        sd_bus_creds *creds;
        uint64_t used;
} CredsCacheEntry;

static CredsCacheEntry creds_cache[CREDS_CACHE_SLOTS];
static uint64_t creds_cache_clock;

static int query_sender_creds(sd_bus_message *m, uint64_t mask, sd_bus_creds **ret) {
        sd_bus *bus = sd_bus_message_get_bus(m);
        const char *sender = sd_bus_message_get_sender(m);
        sd_id128_t bus_id;
        size_t victim = 0;

        if (!bus || !sender || sender[0] != ':' || sd_bus_get_bus_id(bus, &bus_id) < 0)
                return sd_bus_query_sender_creds(m, mask, ret);

        for (size_t i = 0; i < CREDS_CACHE_SLOTS; i++) {
                CredsCacheEntry *e = &creds_cache[i];
                if (e->creds && e->bus == bus && sd_id128_equal(e->bus_id, bus_id) && streq(e->sender, sender)) {
                        e->used = ++creds_cache_clock;
                        *ret = sd_bus_creds_ref(e->creds);
                        return 0;
                }
                if (e->used < creds_cache[victim].used)
                        victim = i;
        }

        sd_bus_creds *creds = NULL;
        int r = sd_bus_query_sender_creds(m, mask, &creds);
        if (r < 0)
                return r;
        char *copy = strdup(sender);
        if (copy) {
                CredsCacheEntry *e = &creds_cache[victim];
                free(e->sender);
                sd_bus_creds_unref(e->creds);
                *e = (CredsCacheEntry) {
                        .bus = bus,
                        .bus_id = bus_id,
                        .sender = copy,
                        .creds = sd_bus_creds_ref(creds),
                        .used = ++creds_cache_clock,
                };
        }
        *ret = creds;
        return 0;
}

int agent_authorize(AgentContext *c, sd_bus_message *m, AgentVerb verb, const AgentTask *t,
                    AgentCaller *ret_caller, sd_bus_error *error) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        uid_t uid;
        int r;

        /* Only what the bus itself vouches for: no SD_BUS_CREDS_AUGMENT, nothing read from /proc. */
        r = query_sender_creds(m, SD_BUS_CREDS_UID | SD_BUS_CREDS_EUID | SD_BUS_CREDS_GID | SD_BUS_CREDS_EGID |
                               SD_BUS_CREDS_SUPPLEMENTARY_GIDS, &creds);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Cannot determine the caller's credentials: %m");
        uint64_t augmented = sd_bus_creds_get_augmented_mask(creds);
        if (!(augmented & SD_BUS_CREDS_EUID) && sd_bus_creds_get_euid(creds, &uid) >= 0) {
        } else if (!(augmented & SD_BUS_CREDS_UID) && sd_bus_creds_get_uid(creds, &uid) >= 0) {
        } else
                return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                          "Access denied: the bus did not say which user is calling");

        _cleanup_free_ char *name = user_name_of(uid);
        if (!name)
                return -ENOMEM;

        bool allowed;
        switch (verb) {
        case AGENT_VERB_SUBMIT:
                allowed = uid == 0 || user_is_agent(name);
                if (!allowed && c->have_submitters_gid) {
                        gid_t gid;
                        const gid_t *gids = NULL;
                        /* The peer's own group (SO_PEERCRED gives the effective one), then its
                         * supplementary groups (SO_PEERGROUPS, or UnixGroupIDs from dbus-daemon). */
                        if (!(augmented & SD_BUS_CREDS_EGID) && sd_bus_creds_get_egid(creds, &gid) >= 0 &&
                            gid == c->submitters_gid)
                                allowed = true;
                        if (!(augmented & SD_BUS_CREDS_GID) && sd_bus_creds_get_gid(creds, &gid) >= 0 &&
                            gid == c->submitters_gid)
                                allowed = true;
                        int n = (augmented & SD_BUS_CREDS_SUPPLEMENTARY_GIDS) ? 0 :
                                sd_bus_creds_get_supplementary_gids(creds, &gids);
                        for (int i = 0; !allowed && i < n; i++)
                                allowed = gids[i] == c->submitters_gid;
                        if (!allowed)
                                allowed = user_db_in_group(uid, c->submitters_gid);
                }
                if (!allowed)
                        return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                                  "Access denied: user '%s' (uid %u) may not submit tasks to agent "
                                                  "'%s'; allowed are root, agent users (a-*) and members of the "
                                                  "group '%s' (system.submitters_group in %s)",
                                                  name, (unsigned) uid, c->agent->name,
                                                  strempty(c->config->submitters_group),
                                                  c->config->path ?: CON_CONFIG_PATH);
                break;
        case AGENT_VERB_READ:
        case AGENT_VERB_CANCEL:
                if (t && uid != 0 && uid != t->sender_uid)
                        return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                                  "Access denied: task '%s' was submitted by another user; only "
                                                  "its submitter or root may %s it",
                                                  t->id, verb == AGENT_VERB_CANCEL ? "cancel" : "read");
                break;
        }
        if (ret_caller) {
                ret_caller->uid = uid;
                ret_caller->name = TAKE_PTR(name);
        }
        return 1;
}

/* ---- state and properties ---- */

const char *agent_context_state(const AgentContext *c) {
        AgentQueueStats st;
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

static void pending_run(AgentContext *c, int commit_error) {
        for (size_t i = 0; i < c->n_pending; i++) {
                AgentPending *p = &c->pending[i];
                int r = 0;
                if (commit_error < 0) {
                        if (p->call)
                                r = sd_bus_reply_method_errnof(p->call, commit_error,
                                                               "Cannot write the queue journal of agent '%s': %m",
                                                               c->agent->name);
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
                                if (r < 0)
                                        log_msg(LOG_WARNING, "Failed to write the files of task %s, ignoring: %s",
                                                p->task->id, strerror(-r));
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

static void task_fail_now(AgentContext *c, AgentTask *t, AgentTaskStatus st, const char *reason) {
        int r = agent_queue_finish(c->queue, t, st, reason, now_realtime());
        if (r < 0) {
                log_msg(LOG_ERR, "Failed to record the end of task %s: %s", t->id, strerror(-r));
                return;
        }
        (void) pending_add(c, PENDING_COMPLETED, NULL, t);
}

int agent_context_complete(AgentContext *c, AgentTask *t, AgentTaskStatus st, const char *text) {
        if (agent_task_status_is_final(t->status))
                return 0; /* cancelled meanwhile */
        int r = agent_queue_finish(c->queue, t, st, text, now_realtime());
        if (r < 0)
                return r;
        return pending_add(c, PENDING_COMPLETED, NULL, t);
}

static RunningTask *running_task_free(RunningTask *rt) {
        if (!rt)
                return NULL;
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

static void on_session_done(AgentSession *s, void *userdata) {
        RunningTask *rt = userdata;
        AgentContext *c = rt->c;
        AgentTask *t = rt->task;
        _cleanup_free_ char *err = agent_session_stderr(s);
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
                        if (s->truncated)
                                log_msg(LOG_NOTICE, "Task %s: response cut at %d bytes", t->id,
                                        AGENT_SESSION_OUTPUT_MAX);
                        (void) agent_context_complete(c, t, AGENT_TASK_DONE, s->out ?: "");
                        break;
                }
                if (asprintf(&reason, "%s exited with status %d%s%s", runtime_label(c), s->exit_status,
                             isempty(err) ? " and wrote nothing on stderr" : ": ", strempty(err)) < 0)
                        reason = NULL;
                task_fail_now(c, t, AGENT_TASK_FAILED, reason ?: "the session failed");
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
                task_fail_now(c, t, AGENT_TASK_CANCELLED, rt->cancel_reason ?: "cancelled");
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

        ConRuntimeEnv env = { .agent = c->agent, .config = c->config, .workspace = c->workspace };
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
        ConRuntimeTask rtask = {
                .id = t->id,
                .text = t->text ?: "",
                .sender = t->sender,
                .sender_uid = t->sender_uid,
                .priority = t->priority,
                .reply_to = t->reply_to,
                .deadline_usec = t->deadline_usec,
        };
        r = agent_session_spawn(c->event, c->runtime, &rtask, &env, on_session_done, rt, &rt->session);
        if (r < 0) {
                free(rt);
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
        while (!c->stopping && c->n_sessions < max && (t = agent_queue_peek(c->queue)))
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
        if (idle && (c->name_released || (c->stopping && c->n_sessions == 0))) {
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

static int queue_task(AgentContext *c, sd_bus_message *m, const AgentTaskRequest *req, sd_bus_error *error) {
        AgentTask *t = NULL;
        int r = agent_queue_accept(c->queue, req, now_realtime(), &t);
        if (r == -EINVAL)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid task id or priority");
        if (r < 0)
                return r;
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
                return r;
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

        r = agent_authorize(c, m, AGENT_VERB_SUBMIT, NULL, &caller, error);
        if (r <= 0)
                return r;
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
                .text = a.text,
        };
        return queue_task(c, m, &req, error);
}

static int find_task(AgentContext *c, const char *id, AgentTask **ret, sd_bus_error *error) {
        AgentTask *t = con_task_id_valid(id) ? agent_queue_find(c->queue, id) : NULL;
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
        AgentTask *t;
        int r;

        r = sd_bus_message_read(m, "s", &id);
        if (r < 0)
                return r;
        r = find_task(c, id, &t, error);
        if (r < 0)
                return r;
        r = agent_authorize(c, m, AGENT_VERB_CANCEL, t, &caller, error);
        if (r <= 0)
                return r;

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
        return pending_add(c, PENDING_REPLY_EMPTY, m, t) < 0 ? -ENOMEM : 1;
}

static int method_get_result(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        const char *id;
        AgentTask *t;
        int r;

        r = sd_bus_message_read(m, "s", &id);
        if (r < 0)
                return r;
        r = find_task(c, id, &t, error);
        if (r < 0)
                return r;
        r = agent_authorize(c, m, AGENT_VERB_READ, t, NULL, error);
        if (r <= 0)
                return r;
        _cleanup_free_ char *text = NULL;
        if (agent_task_status_is_final(t->status)) {
                r = agent_queue_read_result(c->queue, t, &text);
                if (r == -ENOENT)
                        r = asprintf(&text, "(the response file outbox/%s.response is gone)", t->id) < 0 ? -ENOMEM
                                                                                                           : 0;
                if (r < 0)
                        return r;
        }
        return sd_bus_reply_method_return(m, "ss", agent_task_status_to_string(t->status), strempty(text));
}

static int method_list_tasks(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        _cleanup_(agent_caller_done) AgentCaller caller = {};
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = agent_authorize(c, m, AGENT_VERB_READ, NULL, &caller, error);
        if (r <= 0)
                return r;
        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(sss)");
        if (r < 0)
                return r;
        size_t n;
        AgentTask * const *tasks = agent_queue_tasks(c->queue, &n);
        for (size_t i = 0; i < n; i++) {
                if (caller.uid != 0 && tasks[i]->sender_uid != caller.uid)
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
        SD_BUS_METHOD_WITH_ARGS("ListTasks", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sss)", tasks), method_list_tasks,
                                SD_BUS_VTABLE_UNPRIVILEGED),
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
        if (r < 0)
                log_msg(LOG_WARNING, "Failed to regenerate outbox/processed/failed files, ignoring: %s",
                        strerror(-r));
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
        for (size_t i = 0; i < c->n_buses; i++) {
                sd_bus_slot_unref(c->slots[i]);
                sd_bus_unref(c->buses[i]);
        }
        free(c->buses);
        free(c->slots);
        sd_event_source_disable_unref(c->flush_source);
        sd_event_source_disable_unref(c->idle_source);
        sd_event_source_disable_unref(c->stop_source);
        agent_queue_free(c->queue);
        safe_close(c->data_dir_fd);
        con_config_free(c->config);
        free(c->bus_name);
        free(c->data_dir);
        free(c->workspace);
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
        c->data_dir_fd = -EBADF;
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
        if (!c->data_dir || asprintf(&c->workspace, "%s/workspace", c->data_dir) < 0)
                return -ENOMEM;
        c->data_dir_fd = open(c->data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (c->data_dir_fd < 0) {
                r = -errno;
                (void) asprintf(ret_error, "cannot open the agent's directory %s: %s (con bootstrap creates it)",
                                c->data_dir, strerror(-r));
                return r;
        }
        if (mkdirat(c->data_dir_fd, "workspace", 0700) < 0 && errno != EEXIST) {
                r = -errno;
                (void) asprintf(ret_error, "cannot create %s: %s", c->workspace, strerror(-r));
                return r;
        }
        r = agent_queue_open(c->data_dir_fd, o->lock_timeout_usec, &c->queue);
        if (r < 0) {
                if (r == -EWOULDBLOCK)
                        (void) asprintf(ret_error, "another con-agentd holds %s/queue/lock", c->data_dir);
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
        if (st.torn_tail)
                log_msg(LOG_NOTICE, "Cut a torn last record off %s/queue/journal (a crash during a write; it was "
                        "never acknowledged)", c->data_dir);

        if (!isempty(config->submitters_group)) {
                char buf[16384];
                struct group gr, *res = NULL;
                if (getgrnam_r(config->submitters_group, &gr, buf, sizeof(buf), &res) == 0 && res) {
                        c->have_submitters_gid = true;
                        c->submitters_gid = res->gr_gid;
                } else
                        log_msg(LOG_WARNING, "The submitters group '%s' does not exist: only root and agents may "
                                "submit", config->submitters_group);
        }

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

static void *introspect_server(void *arg) {
        int fd = (int) (intptr_t) arg;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        sd_id128_t id = SD_ID128_NULL;
        static const int dummy;

        if (sd_bus_new(&bus) < 0 || sd_bus_set_fd(bus, fd, fd) < 0 || sd_id128_randomize(&id) < 0 ||
            sd_bus_set_server(bus, 1, id) < 0 || sd_bus_start(bus) < 0 ||
            sd_bus_add_object_vtable(bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, agent_vtable,
                                     (void *) &dummy) < 0)
                return NULL;
        for (;;) {
                int r = sd_bus_process(bus, NULL);
                if (r < 0)
                        break;
                if (r == 0 && sd_bus_wait(bus, UINT64_MAX) < 0)
                        break;
        }
        return NULL;
}

int agent_introspect_xml(char **ret) {
        int pair[2];
        pthread_t th;
        int r;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0)
                return -errno;
        r = -pthread_create(&th, NULL, introspect_server, (void *) (intptr_t) pair[0]);
        if (r < 0) {
                safe_close(pair[0]);
                safe_close(pair[1]);
                return r;
        }
        {
                _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
                const char *xml;
                r = sd_bus_new(&bus);
                if (r >= 0)
                        r = sd_bus_set_fd(bus, pair[1], pair[1]);
                if (r >= 0)
                        r = sd_bus_start(bus);
                if (r >= 0)
                        r = sd_bus_call_method(bus, NULL, CON_AGENT_PATH, "org.freedesktop.DBus.Introspectable",
                                               "Introspect", &error, &reply, NULL);
                if (r >= 0)
                        r = sd_bus_message_read(reply, "s", &xml);
                if (r >= 0 && !(*ret = strdup(xml)))
                        r = -ENOMEM;
                if (r < 0 && !bus)
                        safe_close(pair[1]);
        }
        /* Closing our end makes the server see EOF and return. */
        (void) pthread_join(th, NULL);
        return r < 0 ? r : 0;
}
