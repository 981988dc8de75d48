/* SPDX-License-Identifier: MIT */
/* The task methods: Submit, Deliver, Cancel, GetResult, GetResultInfo, ListTasks. */
#include <syslog.h>

#include "agent-builtins.h"
#include "agent-chain.h"
#include "agent-deliver.h"
#include "agent-service.h"
#include "con-paths.h"
#include "errors.h"
#include "json-util.h"
#include "macro.h"
#include "names.h"
#include "task.h"
#include "user-util.h"

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

/* An agent tasking this one (docs/AGENT.md "Delegation"): the chain is never taken from the call.
 * It comes from the records the sending agent's service keeps of its running tasks (root's
 * files, out of the agents' reach), so a hijacked session cannot claim a shorter one. Fills
 * *ret_chain (NULL: the caller is no agent) and lowers *deadline to the parent's; a negative
 * errno with error set when the delegation is refused. */
static int delegation_derive(AgentContext *c, uid_t uid, const char *name, uint64_t *deadline, char **ret_chain,
                             sd_bus_error *error) {
        _cleanup_(agent_chain_parent_done) AgentChainParent p = {};
        _cleanup_free_ char *from = NULL, *agents_dir = NULL;
        int r;

        *ret_chain = NULL;
        if (uid == 0 || !name || con_agent_from_user(name, &from) < 0)
                return 0;
        const char *slash = strrchr(c->data_dir, '/');
        agents_dir = slash && slash != c->data_dir ? strndup(c->data_dir, (size_t) (slash - c->data_dir)) : strdup("/");
        if (!agents_dir)
                return -ENOMEM;
        r = agent_chain_parent_read(agents_dir, from, geteuid(), &p);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return con_bus_error_setf(error, CON_ERROR_DELEGATION_REFUSED,
                                          "Delegation refused: the running tasks of agent '%s' cannot be read "
                                          "(%s/%s/" AGENT_CHAIN_RUNNING_DIR ": %s), so its chain is unknown",
                                          from, agents_dir, from, strerror(-r));
        if (p.n_running == 0) {
                /* Not from a session (no task of that agent runs): one hop all the same. */
                r = agent_chain_append(NULL, from, AGENT_CHAIN_NO_TASK, &p.chain);
                if (r < 0)
                        return r;
                r = agent_chain_append(NULL, from, AGENT_CHAIN_NO_TASK, &p.agents);
                if (r < 0)
                        return r;
        }
        size_t hops = agent_chain_hops(p.chain);
        unsigned limit = c->config->max_delegation_hops;
        if (hops > limit)
                return con_bus_error_setf(error, CON_ERROR_DELEGATION_REFUSED,
                                          "Delegation refused: this would be hop %zu of the chain %s, and "
                                          "system.max_delegation_hops in %s allows %u; do the work yourself or "
                                          "answer with what you have", hops, p.chain,
                                          c->config->path ?: CON_CONFIG_PATH, limit);
        if (agent_chain_has_agent(p.agents, c->agent->name))
                return con_bus_error_setf(error, CON_ERROR_DELEGATION_REFUSED,
                                          "Delegation refused: agent '%s' is already in the chain of this task "
                                          "(%s), waiting for it: tasking it again would be a cycle; do the work "
                                          "yourself or answer with what you have", c->agent->name, p.chain);
        if (p.deadline_usec > 0) {
                uint64_t now = con_now(CLOCK_REALTIME);
                if (now >= p.deadline_usec)
                        return con_bus_error_setf(error, CON_ERROR_DELEGATION_REFUSED,
                                                  "Delegation refused: the deadline of task %s of agent '%s' has "
                                                  "passed", strempty(p.task), from);
                if (*deadline == 0 || *deadline > p.deadline_usec)
                        *deadline = p.deadline_usec; /* a child never outlives its parent */
        }
        *ret_chain = TAKE_PTR(p.chain);
        return 0;
}

static int queue_task(AgentContext *c, sd_bus_message *m, const AgentTaskRequest *req, sd_bus_error *error) {
        AgentTask *t = NULL;
        int r = check_sender_quota(c, req, error);
        if (r < 0)
                return r;
        r = agent_queue_accept(c->queue, req, con_now(CLOCK_REALTIME), &t);
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
        if (fresh && t->chain)
                log_full(LOG_INFO, "Task %s from %s, delegated within the chain %s (hop %zu)", t->id, strempty(t->sender),
                        t->chain, agent_chain_hops(t->chain));
        r = agent_pending_add(c, PENDING_REPLY_ID, m, t);
        if (r < 0)
                return r;
        if (fresh) {
                r = agent_pending_add(c, PENDING_ACCEPTED, NULL, t);
                if (r < 0)
                        return r;
                /* Built-in commands are answered at once, in the same journal batch as the accept. */
                if (agent_builtin_is(t->text))
                        agent_start_task(c, t);
        }
        if (c->n_pending >= PENDING_FLUSH_INLINE)
                (void) agent_context_flush(c);
        return 1;
}

int agent_method_submit(sd_bus_message *m, void *userdata, sd_bus_error *error) {
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
        _cleanup_free_ char *chain = NULL;
        uint64_t deadline = 0;
        r = delegation_derive(c, caller.uid, caller.name, &deadline, &chain, error);
        if (r < 0)
                return r;
        AgentTaskRequest req = {
                .sender_uid = caller.uid,
                .sender = caller.name,
                .priority = CON_TASK_PRIORITY_DEFAULT,
                .deadline_usec = deadline,
                .chain = chain,
                .text = text,
        };
        return queue_task(c, m, &req, error);
}

/* A task of another host, delivered by this host's mesh gateway (docs/MULTIHOST.md): the caller
 * must be the gateway's user (the bus driver says so), and the declared policy decides the remote
 * sender a.origin ("a-concierge@host-a" is the principal concierge@host-a), the way it decides
 * root: polkit has no subject for a user of another host. 1: the caller is the gateway and the
 * sender is allowed; 0: parked; < 0 refused, with error set. */
static int authorize_remote(AgentContext *c, sd_bus_message *m, const AgentDeliverArgs *a, AgentCaller *ret_caller,
                            sd_bus_error *error) {
        _cleanup_free_ char *name = NULL;
        uid_t uid = (uid_t) -1;
        int r;

        r = con_authz_caller_uid(c->authz, m, &uid, error);
        if (r <= 0)
                return r;
        r = con_uid_to_name(uid, &name);
        if (r < 0)
                return r;
        if (!streq(name, CON_MESH_USER))
                return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                          "Access denied: only the mesh gateway (user " CON_MESH_USER ") may set "
                                          "origin; user '%s' (uid %u) may not", name, (unsigned) uid);
        if (a->has_sender_uid || a->conversation)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Key 'origin' goes with neither sender_uid nor conversation");
        if (!c->no_authz && !(c->policy && con_policy_allows(c->policy, a->origin, NULL, CON_POLICY_TASK,
                                                             c->agent->name)))
                return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                          "Access denied: '%s' of another host may not deliver tasks to agent '%s' "
                                          "(grants: the policy: section of %s, e.g. who: concierge@host-a, see "
                                          "docs/MULTIHOST.md)", a->origin, c->agent->name,
                                          c->config->path ?: CON_CONFIG_PATH);
        ret_caller->uid = uid;
        ret_caller->all_tasks = false;
        ret_caller->name = TAKE_PTR(name);
        return 1;
}

int agent_method_deliver(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        _cleanup_(agent_caller_done) AgentCaller caller = {};
        _cleanup_(agent_deliver_args_done) AgentDeliverArgs a = {};
        _cleanup_free_ char *sender = NULL;
        int r;

        /* The arguments first (the handler restarts from here when parked): origin decides who
         * authorizes. */
        r = agent_deliver_parse(m, &a, error);
        if (r < 0)
                return r;
        if (a.origin)
                r = authorize_remote(c, m, &a, &caller, error);
        else
                r = agent_authorize(c, m, AGENT_VERB_DELIVER, NULL, &caller, error);
        if (r <= 0)
                return r < 0 ? r : 1; /* 0: parked, the handler runs again */
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
                r = con_uid_to_name(uid, &sender);
                if (r < 0)
                        return r;
        }
        _cleanup_free_ char *chain = NULL;
        uint64_t deadline = a.deadline_usec;
        /* The router delivering an agent's file (sender_uid) gets the agent's chain too. */
        r = delegation_derive(c, uid, sender ?: caller.name, &deadline, &chain, error);
        if (r < 0)
                return r;
        AgentTaskRequest req = {
                .id = a.id,
                .sender_uid = uid,
                .sender = a.origin ?: sender ?: caller.name,
                .priority = a.priority,
                .reply_to = a.reply_to,
                .deadline_usec = deadline,
                .conversation = a.conversation,
                .chain = chain,
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
                        log_full(LOG_WARNING, "Failed to read the record of finished task %s, ignoring: %s", id,
                                strerror(-r));
                if (r >= 0)
                        t = *ret_owned;
        }
        if (!t)
                /* Never sent there, or removed by the retention (docs/AGENT.md "Retention"). */
                return con_bus_error_setf(error, CON_ERROR_NO_SUCH_TASK,
                                          "Agent '%s' knows no task '%s' (never sent there, or finished and removed: "
                                          "an agent keeps finished tasks for system.result_retention and at most "
                                          "system.result_max of them, /etc/con/con.yaml)", c->agent->name, id);
        *ret = t;
        return 0;
}

int agent_method_cancel(sd_bus_message *m, void *userdata, sd_bus_error *error) {
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
                agent_task_fail_now(c, t, AGENT_TASK_CANCELLED, reason);
        } else if (rt && rt->session) {
                free(rt->cancel_reason);
                rt->cancel_reason = TAKE_PTR(reason);
                agent_session_cancel(rt->session);
        }
        /* Finished tasks: nothing to do, Cancel is idempotent. */
        return agent_pending_add(c, PENDING_REPLY_EMPTY, m, evicted ? NULL : t) < 0 ? -ENOMEM : 1;
}

int agent_result_append(sd_bus_message *reply, AgentTaskStatus st, const char *text, const AgentResultInfo *info,
                        const char *sender, bool with_info) {
        if (!with_info)
                return sd_bus_message_append(reply, "ss", agent_task_status_to_a2a(st), strempty(text));
        if (!sender)
                return sd_bus_message_append(reply, "ssa{sv}", agent_task_status_to_a2a(st), strempty(text), 3,
                                             "truncated", "b", (int) info->truncated,
                                             "replaced", "b", (int) info->replaced,
                                             "size", "t", info->size);
        return sd_bus_message_append(reply, "ssa{sv}", agent_task_status_to_a2a(st), strempty(text), 4,
                                     "truncated", "b", (int) info->truncated,
                                     "replaced", "b", (int) info->replaced,
                                     "size", "t", info->size,
                                     "sender", "s", sender);
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
                        log_full(LOG_WARNING, "outbox/%s.response is not the service's own file (owner, mode or "
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
        /* "sender": the task's principal (alice, or alice@host-a for a task of another host), which the
         * caller may see (its own task, or read-result): the mesh gateway checks it before it sends a
         * result again to the host that asks (docs/MULTIHOST.md). */
        r = agent_result_append(reply, t->status, text, &info, t->sender, with_info);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

int agent_method_get_result(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return get_result(m, userdata, error, false);
}

int agent_method_get_result_info(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return get_result(m, userdata, error, true);
}

/* The transcript (docs/AGENT.md "Transcripts"): the task's record and the steps its session
 * reported, from queue/transcripts/<id>.json (or the running session's, in memory). */
static int transcript_json(AgentContext *c, const AgentTask *t, char **ret) {
        _cleanup_(cJSON_Deletep) cJSON *j = NULL;
        const RunningTask *rt = t->status == AGENT_TASK_RUNNING ? t->userdata : NULL;
        int r;

        if (rt) {
                AgentTranscript copy = rt->transcript;
                copy.ended_usec = 0;
                j = agent_transcript_to_json(&copy);
                if (!j)
                        return -ENOMEM;
        } else {
                r = agent_transcript_read(c->data_dir_fd, t->id, t->sender_uid, &j);
                if (r == -ENOMEM)
                        return r;
                if (r == -EACCES)
                        log_full(LOG_WARNING, "Task %s: the transcript under its id is not of its sender (an "
                                 "earlier task's, or an older version's file): not served", t->id);
                else if (r < 0 && r != -ENOENT)
                        log_full(LOG_WARNING, "Task %s: transcript not read: %s", t->id, strerror(-r));
                if (!j) {
                        /* No session (a built-in, a task that failed before one, one still queued). */
                        AgentTranscript none = {};
                        j = agent_transcript_to_json(&none);
                        if (!j)
                                return -ENOMEM;
                        cJSON_ReplaceItemInObject(j, "started", cJSON_CreateNull());
                        cJSON_ReplaceItemInObject(j, "ended", cJSON_CreateNull());
                }
        }
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "started"),
                    *en = cJSON_GetObjectItemCaseSensitive(j, "ended");
        /* Times as integer microseconds (docs/CLI.md, "JSON output"); "started" and "ended" may be
         * raw integer items (con_json_add_u64) or parsed numbers. */
        uint64_t started = con_json_get_u64(st), ended = con_json_get_u64(en);
        uint64_t finished = agent_task_status_is_final(t->status) ? t->finished_usec : 0;
        int64_t duration = ended > 0 && started > 0 ? (int64_t) (ended - started) :
                           started > 0 ? (int64_t) (con_now(CLOCK_REALTIME) - started) :
                           finished > 0 && t->accepted_usec > 0 ? (int64_t) (finished - t->accepted_usec) : -1;
        ConModelBudget b = {};
        con_config_model_budget(c->config, c->agent->name, &b);
        const cJSON *in = cJSON_GetObjectItemCaseSensitive(j, "tokens_in"),
                    *out = cJSON_GetObjectItemCaseSensitive(j, "tokens_out");
        bool priced = b.price_per_mtok_in > 0 && b.price_per_mtok_out > 0;
        double cost = priced ? (cJSON_IsNumber(in) ? in->valuedouble : 0) * b.price_per_mtok_in / 1e6 +
                               (cJSON_IsNumber(out) ? out->valuedouble : 0) * b.price_per_mtok_out / 1e6 : 0;
        const char *parent = t->chain ? strrchr(t->chain, ' ') : NULL;
        parent = parent ? parent + 1 : t->chain;
        if (!cJSON_AddStringToObject(j, "task_id", t->id) || !cJSON_AddStringToObject(j, "agent", c->agent->name) ||
            !cJSON_AddStringToObject(j, "sender", strempty(t->sender)) ||
            !cJSON_AddStringToObject(j, "status", agent_task_status_to_a2a(t->status)) ||
            !(t->chain ? cJSON_AddStringToObject(j, "chain", t->chain) : cJSON_AddNullToObject(j, "chain")) ||
            !(parent ? cJSON_AddStringToObject(j, "parent", parent) : cJSON_AddNullToObject(j, "parent")) ||
            !cJSON_AddNumberToObject(j, "hops", (double) agent_chain_hops(t->chain)) ||
            !con_json_add_u64(j, "accepted", t->accepted_usec) ||
            !(finished > 0 ? con_json_add_u64(j, "finished", finished) : cJSON_AddNullToObject(j, "finished")) ||
            !(t->deadline_usec > 0 ? con_json_add_u64(j, "deadline", t->deadline_usec)
                                   : cJSON_AddNullToObject(j, "deadline")) ||
            !(started > 0 && t->accepted_usec > 0 ? con_json_add_u64(j, "queued_ms",
                                                                      started > t->accepted_usec ?
                                                                      (started - t->accepted_usec) / 1000 : 0)
                                                  : cJSON_AddNullToObject(j, "queued_ms")) ||
            !(duration >= 0 ? con_json_add_u64(j, "duration_ms", (uint64_t) duration / 1000)
                            : cJSON_AddNullToObject(j, "duration_ms")) ||
            !(priced ? cJSON_AddNumberToObject(j, "cost", cost) : cJSON_AddNullToObject(j, "cost")))
                return -ENOMEM;
        char *s = cJSON_PrintUnformatted(j);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

int agent_method_get_transcript(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        AgentContext *c = userdata;
        _cleanup_(agent_task_freep) AgentTask *evicted = NULL;
        _cleanup_free_ char *json = NULL;
        AgentTask *t = NULL;
        const char *id;
        int r;

        r = sd_bus_message_read(m, "s", &id);
        if (r < 0)
                return r;
        r = find_task(c, id, &t, &evicted, error);
        if (r < 0)
                return r;
        /* The same rule as GetResult: the submitter, and callers granted read-result (root). */
        r = agent_authorize(c, m, AGENT_VERB_GET_RESULT, t, NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1; /* 0: parked, the handler runs again */
        r = transcript_json(c, t, &json);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, "s", json);
}

int agent_method_list_tasks(sd_bus_message *m, void *userdata, sd_bus_error *error) {
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
                                          agent_task_status_to_a2a(tasks[i]->status), tasks[i]->sender);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}
