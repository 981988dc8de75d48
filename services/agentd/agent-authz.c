/* SPDX-License-Identifier: MIT */
/* Who may call what: the caller's uid, the verbs, polkit or the declared policy (docs/AGENT.md,
 * "Who may do what"). */
#include <grp.h>
#include <pwd.h>

#include "agent-service.h"
#include "con-paths.h"
#include "errors.h"
#include "macro.h"
#include "strv.h"

/* ---- users ---- */

char *agent_user_name_of(uid_t uid) {
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
        _cleanup_free_ char *copy = strdup(sender), *name = agent_user_name_of(uid);
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

void agent_authz_free(AgentContext *c) {
        while (c->uid_lookups)
                uid_lookup_free(c->uid_lookups);
        uid_cache_clear(c);
        c->authz = con_authz_free(c->authz);
}
