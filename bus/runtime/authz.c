/* SPDX-License-Identifier: MIT */
/* Asynchronous polkit checks for sd-bus handlers: see authz.h and docs/AUTHZ.md.
 *
 * Flow of one uncached check: the handler calls con_authz_verify(); a Call records the parked message
 * and joins a Query (one per key, shared by concurrent identical checks). The Query asks the bus driver
 * for the caller's uid, then polkit's CheckAuthorization, under one timer. When it completes, every
 * parked message gets a Result, is rewound and re-queued with sd_bus_enqueue_for_read(); the handler
 * runs again, finds the Result and returns. An idle-priority defer source frees the Call afterwards,
 * when the re-dispatch (which runs at the bus's higher priority) is done. */

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>

#include "authz.h"
#include "errors.h"
#include "macro.h"
#include "strv.h"
#include "time-util.h"

#define POLKIT_NAME      "org.freedesktop.PolicyKit1"
#define POLKIT_PATH      "/org/freedesktop/PolicyKit1/Authority"
#define POLKIT_INTERFACE "org.freedesktop.PolicyKit1.Authority"
#define POLKIT_FLAG_ALLOW_USER_INTERACTION 1u

static const char * const default_watch_dirs[] = {
        "/etc/polkit-1/rules.d",
        "/usr/share/polkit-1/rules.d",
        "/usr/share/polkit-1/actions",
        NULL,
};

/* ---- Keys and decisions ---- */

static const char * const decision_names[_CON_AUTHZ_DECISION_MAX] = {
        [CON_AUTHZ_ALLOWED]     = "allowed",
        [CON_AUTHZ_DENIED]      = "denied",
        [CON_AUTHZ_CHALLENGE]   = "challenge",
        [CON_AUTHZ_ROOT]        = "root",
        [CON_AUTHZ_UNAVAILABLE] = "unavailable",
        [CON_AUTHZ_UNTRUSTED]   = "untrusted",
        [CON_AUTHZ_TIMEOUT]     = "timeout",
        [CON_AUTHZ_CALLER_GONE] = "caller-gone",
        [CON_AUTHZ_FAILED]      = "failed",
};

const char *con_authz_decision_to_string(ConAuthzDecision d) {
        if ((unsigned) d >= _CON_AUTHZ_DECISION_MAX)
                return NULL;
        return decision_names[d];
}

static int detail_cmp(const void *x, const void *y, void *userdata) {
        char * const *details = userdata;
        return strcmp(details[2 * *(const size_t *) x], details[2 * *(const size_t *) y]);
}

int con_authz_key(const char *sender, const char *action, char * const *details, bool interactive,
                  char **ret) {
        size_t n = strv_length(details), size;

        if (isempty(sender) || isempty(action) || !ret || n % 2 != 0)
                return -EINVAL;

        /* Canonical order: polkit receives the details as a dictionary, so order does not matter. */
        _cleanup_free_ size_t *order = calloc(n / 2 + 1, sizeof(size_t));
        if (!order)
                return -ENOMEM;
        for (size_t i = 0; i < n / 2; i++) {
                const char *k = details[2 * i];
                if (isempty(k) || startswith(k, "polkit."))
                        return -EINVAL;
                order[i] = i;
        }
        qsort_r(order, n / 2, sizeof(size_t), detail_cmp, (void *) details);
        for (size_t i = 1; i < n / 2; i++)
                if (streq(details[2 * order[i - 1]], details[2 * order[i]]))
                        return -EINVAL;

        size = 2 + strlen(sender) + strlen(action) + 2 * 21;
        for (size_t i = 0; i < n; i++)
                size += strlen(details[i]) + 21;
        _cleanup_free_ char *key = malloc(size);
        if (!key)
                return -ENOMEM;

        char *p = key;
        p += sprintf(p, "%c%zu:%s%zu:%s", interactive ? 'I' : 'N', strlen(sender), sender, strlen(action),
                     action);
        for (size_t i = 0; i < n / 2; i++) {
                const char *k = details[2 * order[i]], *v = details[2 * order[i] + 1];
                p += sprintf(p, "%zu:%s%zu:%s", strlen(k), k, strlen(v), v);
        }
        *ret = TAKE_PTR(key);
        return 0;
}

ConAuthzDecision con_authz_decision_from_result(bool authorized, bool challenge) {
        if (authorized)
                return CON_AUTHZ_ALLOWED;
        return challenge ? CON_AUTHZ_CHALLENGE : CON_AUTHZ_DENIED;
}

ConAuthzDecision con_authz_decision_from_error(const char *name, bool from_polkit) {
        if (!name)
                return CON_AUTHZ_FAILED;
        if (!from_polkit)
                /* The uid lookup: the bus driver knows no such name, the caller has gone. */
                return streq(name, SD_BUS_ERROR_NAME_HAS_NO_OWNER) ? CON_AUTHZ_CALLER_GONE : CON_AUTHZ_FAILED;
        if (streq(name, SD_BUS_ERROR_SERVICE_UNKNOWN) || streq(name, SD_BUS_ERROR_NAME_HAS_NO_OWNER) ||
            streq(name, SD_BUS_ERROR_NO_REPLY) || startswith(name, "org.freedesktop.DBus.Error.Spawn."))
                return CON_AUTHZ_UNAVAILABLE;
        if (streq(name, "org.freedesktop.PolicyKit1.Error.NotAuthorized"))
                return CON_AUTHZ_UNTRUSTED;
        return CON_AUTHZ_FAILED;
}

bool con_authz_decision_cacheable(ConAuthzDecision d) {
        return d == CON_AUTHZ_ALLOWED || d == CON_AUTHZ_DENIED || d == CON_AUTHZ_CHALLENGE ||
               d == CON_AUTHZ_ROOT;
}

/* " (agent=x, verb=task)" for messages, or "" for no details or no memory. */
static char *details_to_string(char * const *details) {
        size_t n = strv_length(details), size = 4; /* " (", ")", NUL */
        for (size_t i = 0; i < n; i++)
                size += strlen(details[i]) + 2; /* "=" after a key, ", " before the next key */
        if (n < 2)
                return strdup("");
        char *s = malloc(size), *p = s;
        if (!s)
                return NULL;
        p += sprintf(p, " (");
        for (size_t i = 0; i + 1 < n; i += 2)
                p += sprintf(p, "%s%s=%s", i > 0 ? ", " : "", details[i], details[i + 1]);
        strcpy(p, ")");
        return s;
}

int con_authz_decision_to_error(ConAuthzDecision d, const char *action, char * const *details,
                                const char *reason, uint64_t timeout_usec, sd_bus_error *error) {
        _cleanup_free_ char *ds = details_to_string(details);
        const char *dd = strempty(ds);

        action = strempty(action);
        switch (d) {
        case CON_AUTHZ_ALLOWED:
                return 1;
        case CON_AUTHZ_DENIED:
                return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                          "Access denied: the polkit policy does not allow this caller "
                                          "to perform %s%s",
                                          action, dd);
        case CON_AUTHZ_CHALLENGE:
                return sd_bus_error_setf(error, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED,
                                         "Access denied: %s%s needs interactive authentication, and this call "
                                         "did not allow it (ask interactively, or add a polkit rule)",
                                         action, dd);
        case CON_AUTHZ_UNAVAILABLE:
                return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                          "Access denied: authorization service (polkit) unavailable, "
                                          "cannot check %s%s%s%s",
                                          action, dd, reason ? ": " : "", strempty(reason));
        case CON_AUTHZ_UNTRUSTED:
                return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                          "Access denied: polkit refused to let this service check %s: %s "
                                          "(the action needs <annotate key=\"org.freedesktop.policykit.owner\">"
                                          "unix-user:SERVICE_USER</annotate> naming the service's user)",
                                          action, reason ?: "not an action owner");
        case CON_AUTHZ_TIMEOUT:
                return con_bus_error_setf(error, CON_ERROR_POLICY_TIMEOUT,
                                          "Authorization check for %s%s timed out: polkit did not answer "
                                          "within %.1f s",
                                          action, dd, (double) timeout_usec / USEC_PER_SEC);
        case CON_AUTHZ_CALLER_GONE:
                return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                          "Access denied: the caller disconnected before the authorization "
                                          "check for %s finished", action);
        case CON_AUTHZ_ROOT: /* Never final: the root policy decides before we get here. */
        case CON_AUTHZ_FAILED:
        default:
                return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                          "Access denied: the authorization check for %s%s failed: %s",
                                          action, dd, reason ?: "unknown error");
        }
}

/* ---- Cache: chained hash buckets plus an LRU list ---- */

typedef struct CacheEntry CacheEntry;
struct CacheEntry {
        char *key;
        char *sender;
        uint64_t hash;
        uint64_t stored;
        ConAuthzDecision decision;
        uid_t uid;              /* the uid cache (ConAuthz.uids): the sender's uid */
        CacheEntry *bucket_next;
        CacheEntry *lru_prev, *lru_next; /* lru_head is the most recently used */
};

struct ConAuthzCache {
        CacheEntry **buckets;
        size_t n_buckets, n_entries, max;
        uint64_t ttl;
        CacheEntry *lru_head, *lru_tail;
};

static uint64_t hash_string(const char *s) {
        uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
        for (; *s; s++)
                h = (h ^ (uint8_t) *s) * 0x100000001b3ULL;
        return h;
}

int con_authz_cache_new(size_t max, uint64_t ttl_usec, ConAuthzCache **ret) {
        if (max == 0 || ttl_usec == 0 || !ret)
                return -EINVAL;
        _cleanup_free_ ConAuthzCache *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->n_buckets = 16;
        while (c->n_buckets < max && c->n_buckets < ((size_t) 1 << 20))
                c->n_buckets <<= 1;
        c->buckets = calloc(c->n_buckets, sizeof(CacheEntry *));
        if (!c->buckets)
                return -ENOMEM;
        c->max = max;
        c->ttl = ttl_usec;
        *ret = TAKE_PTR(c);
        return 0;
}

static void cache_entry_remove(ConAuthzCache *c, CacheEntry *e) {
        CacheEntry **p = &c->buckets[e->hash & (c->n_buckets - 1)];
        while (*p != e)
                p = &(*p)->bucket_next;
        *p = e->bucket_next;
        if (e->lru_prev)
                e->lru_prev->lru_next = e->lru_next;
        else
                c->lru_head = e->lru_next;
        if (e->lru_next)
                e->lru_next->lru_prev = e->lru_prev;
        else
                c->lru_tail = e->lru_prev;
        c->n_entries--;
        free(e->key);
        free(e->sender);
        free(e);
}

static void cache_lru_push_front(ConAuthzCache *c, CacheEntry *e) {
        e->lru_prev = NULL;
        e->lru_next = c->lru_head;
        if (c->lru_head)
                c->lru_head->lru_prev = e;
        c->lru_head = e;
        if (!c->lru_tail)
                c->lru_tail = e;
}

static void cache_lru_touch(ConAuthzCache *c, CacheEntry *e) {
        if (c->lru_head == e)
                return;
        e->lru_prev->lru_next = e->lru_next;
        if (e->lru_next)
                e->lru_next->lru_prev = e->lru_prev;
        else
                c->lru_tail = e->lru_prev;
        cache_lru_push_front(c, e);
}

static CacheEntry *cache_find(ConAuthzCache *c, const char *key, uint64_t hash) {
        for (CacheEntry *e = c->buckets[hash & (c->n_buckets - 1)]; e; e = e->bucket_next)
                if (e->hash == hash && streq(e->key, key))
                        return e;
        return NULL;
}

static bool cache_expired(const ConAuthzCache *c, const CacheEntry *e, uint64_t now) {
        return now >= e->stored && now - e->stored >= c->ttl;
}

/* The live entry for key (most recently used from now on), or NULL; an expired one is removed. */
static CacheEntry *cache_get_entry(ConAuthzCache *c, const char *key, uint64_t now) {
        CacheEntry *e = cache_find(c, key, hash_string(key));
        if (!e)
                return NULL;
        if (cache_expired(c, e, now)) {
                cache_entry_remove(c, e);
                return NULL;
        }
        cache_lru_touch(c, e);
        return e;
}

int con_authz_cache_get(ConAuthzCache *c, const char *key, uint64_t now, ConAuthzDecision *ret) {
        if (!c || !key)
                return -EINVAL;
        CacheEntry *e = cache_get_entry(c, key, now);
        if (!e)
                return 0;
        if (ret)
                *ret = e->decision;
        return 1;
}

static int cache_put_entry(ConAuthzCache *c, const char *key, const char *sender, ConAuthzDecision d,
                           uint64_t now, CacheEntry **ret) {
        if (!c || !key || !sender || (unsigned) d >= _CON_AUTHZ_DECISION_MAX)
                return -EINVAL;
        uint64_t hash = hash_string(key);
        CacheEntry *e = cache_find(c, key, hash);
        if (e) {
                e->decision = d;
                e->stored = now;
                cache_lru_touch(c, e);
                *ret = e;
                return 0;
        }
        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        e->key = strdup(key);
        e->sender = strdup(sender);
        if (!e->key || !e->sender) {
                free(e->key);
                free(e->sender);
                free(e);
                return -ENOMEM;
        }
        if (c->n_entries >= c->max)
                cache_entry_remove(c, c->lru_tail);
        e->hash = hash;
        e->stored = now;
        e->decision = d;
        CacheEntry **b = &c->buckets[hash & (c->n_buckets - 1)];
        e->bucket_next = *b;
        *b = e;
        cache_lru_push_front(c, e);
        c->n_entries++;
        *ret = e;
        return 0;
}

int con_authz_cache_put(ConAuthzCache *c, const char *key, const char *sender, ConAuthzDecision d,
                        uint64_t now) {
        CacheEntry *e;
        return cache_put_entry(c, key, sender, d, now, &e);
}

size_t con_authz_cache_drop_sender(ConAuthzCache *c, const char *sender) {
        size_t n = 0;
        if (!c || !sender)
                return 0;
        for (CacheEntry *e = c->lru_head, *next; e; e = next) {
                next = e->lru_next;
                if (streq(e->sender, sender)) {
                        cache_entry_remove(c, e);
                        n++;
                }
        }
        return n;
}

size_t con_authz_cache_flush(ConAuthzCache *c) {
        size_t n = 0;
        if (!c)
                return 0;
        while (c->lru_head) {
                cache_entry_remove(c, c->lru_head);
                n++;
        }
        return n;
}

size_t con_authz_cache_size(const ConAuthzCache *c) {
        return c ? c->n_entries : 0;
}

ConAuthzCache *con_authz_cache_free(ConAuthzCache *c) {
        if (!c)
                return NULL;
        (void) con_authz_cache_flush(c);
        free(c->buckets);
        free(c);
        return NULL;
}

/* ---- The asynchronous part ---- */

typedef struct Result Result;
typedef struct Call Call;
typedef struct Query Query;

/* One answered check for a parked message, kept until the message has been re-dispatched. */
struct Result {
        char *key;
        ConAuthzDecision decision;
        char *reason;
        uint64_t timeout_usec;
        uid_t uid;              /* caller-uid lookups: the answer */
        Result *next;
};

/* One parked incoming message. */
struct Call {
        ConAuthz *authz;
        sd_bus_message *message;
        Query *query;           /* the check it waits for, NULL once answered */
        Result *results;
        sd_event_source *defer; /* frees the Call after the re-dispatch */
        Call *prev, *next;      /* authz->calls */
        Call *query_next;       /* query->calls */
};

/* One check in flight, shared by every parked message with the same key. */
struct Query {
        ConAuthz *authz;
        char *key, *sender, *action;
        char **details;
        bool interactive;
        bool uid_only;          /* con_authz_caller_uid(): no polkit check, the uid is the answer */
        uid_t uid;
        uint64_t timeout_usec, started, generation;
        sd_bus_slot *slot;      /* the uid lookup, then the CheckAuthorization call */
        sd_event_source *timer;
        Call *calls;
        Query *prev, *next;     /* authz->queries */
};

struct ConAuthz {
        sd_bus *bus;
        sd_event *event;
        ConAuthzOptions opts;
        ConAuthzCache *cache;   /* NULL with no_cache */
        ConAuthzCache *uids;    /* who is calling: unique name → uid, as the bus driver said */
        Query *queries;
        Call *calls;
        sd_bus_slot *owner_match, *changed_match;
        sd_event_source **watches;
        uint64_t generation, last_flush;
        ConAuthzStats stats;
};

/* The doubly linked lists of parked calls and queries in flight (fields prev, next). */
#define LIST_PREPEND(head, item)                        \
        do {                                            \
                (item)->prev = NULL;                    \
                (item)->next = (head);                  \
                if (head)                               \
                        (head)->prev = (item);          \
                (head) = (item);                        \
        } while (0)
#define LIST_UNLINK(head, item)                         \
        do {                                            \
                if ((item)->prev)                       \
                        (item)->prev->next = (item)->next; \
                else if ((head) == (item))              \
                        (head) = (item)->next;          \
                if ((item)->next)                       \
                        (item)->next->prev = (item)->prev; \
        } while (0)

static uint64_t authz_now(ConAuthz *a) {
        uint64_t t;
        if (sd_event_now(a->event, CLOCK_MONOTONIC, &t) >= 0)
                return t;
        return con_now(CLOCK_MONOTONIC);
}

/* Unique names are never reused by the bus, and the uid of a connection never changes: what the bus
 * driver said about a name holds until the name goes (on_owner_changed drops it). */
static bool uid_known(ConAuthz *a, const char *sender, uid_t *ret) {
        CacheEntry *e = cache_get_entry(a->uids, sender, authz_now(a));
        if (!e)
                return false;
        *ret = e->uid;
        return true;
}

static void uid_remember(ConAuthz *a, const char *sender, uid_t uid) {
        CacheEntry *e;
        if (cache_put_entry(a->uids, sender, sender, CON_AUTHZ_ALLOWED, authz_now(a), &e) >= 0)
                e->uid = uid;
}

static void result_free_all(Result *r) {
        while (r) {
                Result *next = r->next;
                free(r->key);
                free(r->reason);
                free(r);
                r = next;
        }
}

static void call_free(Call *c) {
        if (!c)
                return;
        ConAuthz *a = c->authz;
        if (c->query) {
                Call **p = &c->query->calls;
                while (*p && *p != c)
                        p = &(*p)->query_next;
                if (*p)
                        *p = c->query_next;
        }
        LIST_UNLINK(a->calls, c);
        a->stats.parked--;
        sd_bus_message_unref(c->message);
        result_free_all(c->results);
        sd_event_source_disable_unref(c->defer);
        free(c);
}

static Call *call_find(ConAuthz *a, sd_bus_message *m) {
        for (Call *c = a->calls; c; c = c->next)
                if (c->message == m)
                        return c;
        return NULL;
}

static Call *call_new(ConAuthz *a, sd_bus_message *m) {
        Call *c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        c->authz = a;
        c->message = sd_bus_message_ref(m);
        LIST_PREPEND(a->calls, c);
        a->stats.parked++;
        return c;
}

static const Result *call_find_result(const Call *c, const char *key) {
        for (const Result *r = c->results; r; r = r->next)
                if (streq(r->key, key))
                        return r;
        return NULL;
}

static int call_add_result(Call *c, const Query *q, ConAuthzDecision d, const char *reason) {
        Result *r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->key = strdup(q->key);
        r->reason = reason ? strdup(reason) : NULL;
        if (!r->key || (reason && !r->reason)) {
                result_free_all(r);
                return -ENOMEM;
        }
        r->decision = d;
        r->timeout_usec = q->timeout_usec;
        r->uid = q->uid;
        r->next = c->results;
        c->results = r;
        return 0;
}

/* Frees the query. Calls still parked on it are dropped without a reply. */
static void query_free(Query *q) {
        if (!q)
                return;
        ConAuthz *a = q->authz;
        while (q->calls)
                call_free(q->calls);
        LIST_UNLINK(a->queries, q);
        a->stats.pending--;
        sd_bus_slot_unref(q->slot);
        sd_event_source_disable_unref(q->timer);
        free(q->key);
        free(q->sender);
        free(q->action);
        strv_free(q->details);
        free(q);
}

static Query *query_find(ConAuthz *a, const char *key) {
        for (Query *q = a->queries; q; q = q->next)
                if (streq(q->key, key))
                        return q;
        return NULL;
}

static int on_call_defer(sd_event_source *s, void *userdata) {
        Call *c = userdata;
        if (!c->query) /* parked again for another action of the same message: keep it */
                call_free(c);
        return 0;
}

static int call_redispatch(Call *c) {
        ConAuthz *a = c->authz;
        int r;

        r = sd_bus_message_rewind(c->message, true);
        if (r < 0)
                return r;
        r = sd_bus_enqueue_for_read(a->bus, c->message);
        if (r < 0)
                return r;
        if (c->defer)
                return sd_event_source_set_enabled(c->defer, SD_EVENT_ONESHOT);
        r = sd_event_add_defer(a->event, &c->defer, on_call_defer, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_priority(c->defer, SD_EVENT_PRIORITY_IDLE);
        (void) sd_event_source_set_description(c->defer, "authz-call-free");
        return 0;
}

static void query_complete(Query *q, ConAuthzDecision d, const char *reason) {
        ConAuthz *a = q->authz;

        switch (d) {
        case CON_AUTHZ_TIMEOUT:
                a->stats.timeouts++;
                break;
        case CON_AUTHZ_UNAVAILABLE:
                a->stats.unavailable++;
                break;
        case CON_AUTHZ_UNTRUSTED:
        case CON_AUTHZ_FAILED:
                a->stats.errors++;
                break;
        default:
                break;
        }

        /* An answer to a check sent before (or just after) the rules changed may reflect the old rules. */
        if (a->cache && !q->uid_only && con_authz_decision_cacheable(d) && q->generation == a->generation &&
            (a->last_flush == 0 || q->started >= a->last_flush + CON_AUTHZ_RULES_SETTLE_USEC))
                (void) con_authz_cache_put(a->cache, q->key, q->sender, d, authz_now(a));

        if (d == CON_AUTHZ_CALLER_GONE) {
                /* Nobody to answer: drop the parked messages without a reply. */
                for (Call *c = q->calls; c; c = c->query_next)
                        a->stats.dropped++;
                query_free(q);
                return;
        }

        while (q->calls) {
                Call *c = q->calls;
                int r;

                q->calls = c->query_next;
                c->query = NULL;
                c->query_next = NULL;

                r = call_add_result(c, q, d, reason);
                if (r >= 0)
                        r = call_redispatch(c);
                if (r < 0) {
                        /* Cannot run the handler again: answer with a denial ourselves. */
                        (void) sd_bus_reply_method_errorf(c->message, CON_ERROR_ACCESS_DENIED,
                                                          "Access denied: the authorization result for %s "
                                                          "could not be delivered: %s",
                                                          q->action, strerror(-r));
                        a->stats.denied++;
                        call_free(c);
                }
        }
        query_free(q);
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        query_complete(userdata, CON_AUTHZ_TIMEOUT, NULL);
        return 0;
}

static int on_polkit_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Query *q = userdata;
        int authorized, challenge, r;

        q->slot = sd_bus_slot_unref(q->slot);
        if (sd_bus_message_is_method_error(reply, NULL)) {
                const sd_bus_error *e = sd_bus_message_get_error(reply);
                query_complete(q, con_authz_decision_from_error(e->name, true), e->message);
                return 0;
        }
        r = sd_bus_message_enter_container(reply, 'r', "bba{ss}");
        if (r >= 0)
                r = sd_bus_message_read(reply, "bb", &authorized, &challenge);
        if (r < 0) {
                query_complete(q, CON_AUTHZ_FAILED, "polkit sent a reply that is not (bba{ss})");
                return 0;
        }
        query_complete(q, con_authz_decision_from_result(authorized, challenge), NULL);
        return 0;
}

static int query_send_polkit(Query *q) {
        ConAuthz *a = q->authz;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *c = NULL;
        int r;

        r = sd_bus_message_new_method_call(a->bus, &c, POLKIT_NAME, POLKIT_PATH, POLKIT_INTERFACE,
                                           "CheckAuthorization");
        if (r < 0)
                return r;
        /* The subject is the caller's unique bus name, never a PID (CVE-2013-4288, CVE-2019-6133). */
        r = sd_bus_message_append(c, "(sa{sv})s", "system-bus-name", 1, "name", "s", q->sender, q->action);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(c, 'a', "{ss}");
        if (r < 0)
                return r;
        for (size_t i = 0; q->details && q->details[i]; i += 2) {
                r = sd_bus_message_append(c, "{ss}", q->details[i], q->details[i + 1]);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(c);
        if (r < 0)
                return r;
        r = sd_bus_message_append(c, "us", q->interactive ? POLKIT_FLAG_ALLOW_USER_INTERACTION : 0u, "");
        if (r < 0)
                return r;
        /* Our own timer fires first; this only bounds sd-bus's bookkeeping. */
        r = sd_bus_call_async(a->bus, &q->slot, c, on_polkit_reply, q, q->timeout_usec + USEC_PER_SEC);
        if (r < 0)
                return r;
        a->stats.checks_sent++;
        return 0;
}

static int on_uid_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Query *q = userdata;
        uint32_t uid;
        int r;

        q->slot = sd_bus_slot_unref(q->slot);
        if (sd_bus_message_is_method_error(reply, NULL)) {
                const sd_bus_error *e = sd_bus_message_get_error(reply);
                query_complete(q, con_authz_decision_from_error(e->name, false), e->message);
                return 0;
        }
        r = sd_bus_message_read(reply, "u", &uid);
        if (r < 0) {
                query_complete(q, CON_AUTHZ_FAILED, "the bus sent no uid for the caller");
                return 0;
        }
        uid_remember(q->authz, q->sender, (uid_t) uid);
        if (q->uid_only) {
                q->uid = (uid_t) uid;
                query_complete(q, CON_AUTHZ_ALLOWED, NULL);
                return 0;
        }
        if (uid == 0) {
                /* polkit says yes to root before any rule runs: its answer would mean nothing. */
                query_complete(q, CON_AUTHZ_ROOT, NULL);
                return 0;
        }
        r = query_send_polkit(q);
        if (r < 0)
                query_complete(q, CON_AUTHZ_FAILED, "could not send the request to polkit");
        return 0;
}

static int query_start(ConAuthz *a, const char *key, const char *sender, const char *action,
                       char * const *details, bool interactive, bool uid_only, Query **ret) {
        int r;

        Query *q = calloc(1, sizeof(*q));
        if (!q)
                return -ENOMEM;
        q->authz = a;
        LIST_PREPEND(a->queries, q);
        a->stats.pending++;

        q->interactive = interactive;
        q->uid_only = uid_only;
        q->timeout_usec = interactive ? a->opts.interactive_timeout_usec : a->opts.timeout_usec;
        q->started = authz_now(a);
        q->generation = a->generation;
        q->key = strdup(key);
        q->sender = strdup(sender);
        q->action = strdup(action);
        if (!q->key || !q->sender || !q->action || strv_copy(details, &q->details) < 0) {
                query_free(q);
                return -ENOMEM;
        }
        /* The caller's uid from the bus driver (not /proc): root is decided by the service's policy.
         * A check for a caller already known (never root: con_authz_verify() decided those) goes to
         * polkit at once. */
        uid_t uid;
        bool known = !uid_only && uid_known(a, sender, &uid) && uid != 0;
        if (known)
                r = query_send_polkit(q);
        else
                r = sd_bus_call_method_async(a->bus, &q->slot, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                             "org.freedesktop.DBus", "GetConnectionUnixUser", on_uid_reply, q,
                                             "s", sender);
        if (r >= 0)
                r = sd_event_add_time_relative(a->event, &q->timer, CLOCK_MONOTONIC, q->timeout_usec, 0,
                                               on_timeout, q);
        if (r < 0) {
                query_free(q);
                return r;
        }
        (void) sd_event_source_set_description(q->timer, "authz-timeout");
        if (!known)
                a->stats.uid_lookups++;
        *ret = q;
        return 0;
}

/* The key of the question, the Call of m when it was parked before, and the answer when it is in
 * (the second run of the handler). -EBUSY when m is still parked on another check (the handler
 * verified again before returning: a bug in it), -EINVAL for a bad question. */
static int call_lookup(ConAuthz *a, sd_bus_message *m, const char *sender, const char *action,
                       char * const *details, bool interactive, char **ret_key, Call **ret_call,
                       const Result **ret_res) {
        int r = con_authz_key(sender, action, details, interactive, ret_key);
        if (r < 0)
                return r;
        Call *c = call_find(a, m);
        *ret_call = c;
        *ret_res = c ? call_find_result(c, *ret_key) : NULL;
        if (c && !*ret_res && c->query)
                return -EBUSY;
        return 0;
}

/* Parks m (its Call c, NULL the first time) on the query for key: one in flight with the same key,
 * or a new one. 0 parked: the handler returns 1 without replying and runs again with m. */
static int call_park(ConAuthz *a, sd_bus_message *m, Call *c, const char *key, const char *sender,
                     const char *action, char * const *details, bool interactive, bool uid_only,
                     sd_bus_error *error) {
        int r;

        Query *q = query_find(a, key);
        if (!q && a->stats.pending >= a->opts.max_pending) {
                a->stats.denied++;
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "Too many %s in flight (%zu), try again later",
                                         uid_only ? "caller lookups" : "authorization checks", a->stats.pending);
        }
        bool new_call = !c;
        if (!c) {
                c = call_new(a, m);
                if (!c)
                        return -ENOMEM;
        }
        if (q)
                a->stats.coalesced++;
        else {
                r = query_start(a, key, sender, action, details, interactive, uid_only, &q);
                if (r < 0) {
                        if (new_call)
                                call_free(c);
                        return r;
                }
        }
        if (c->defer)
                (void) sd_event_source_set_enabled(c->defer, SD_EVENT_OFF);
        c->query = q;
        c->query_next = q->calls;
        q->calls = c;
        return 0;
}

static int decide(ConAuthz *a, sd_bus_message *m, const char *action, char * const *details,
                  ConAuthzDecision d, const char *reason, uint64_t timeout_usec, sd_bus_error *error) {
        int r;

        if (d != CON_AUTHZ_ROOT)
                r = con_authz_decision_to_error(d, action, details, reason, timeout_usec, error);
        else if (a->opts.root_policy == CON_AUTHZ_ROOT_ALLOW)
                r = 1;
        else {
                r = a->opts.root_check(m, action, details, a->opts.userdata);
                if (r == 0)
                        r = con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                               "Access denied: this service's policy does not allow root "
                                               "callers to perform %s", action);
                else if (r < 0)
                        r = con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                               "Access denied: the root policy check for %s failed: %s",
                                               action, strerror(-r));
                else
                        r = 1;
        }
        if (r > 0)
                a->stats.allowed++;
        else
                a->stats.denied++;
        return r;
}

int con_authz_verify(ConAuthz *a, sd_bus_message *m, const char *action, char * const *details,
                     sd_bus_error *error) {
        _cleanup_free_ char *key = NULL;
        ConAuthzDecision d;
        const char *sender;
        bool interactive;
        int r;

        if (!a || !m || isempty(action) || sd_bus_message_get_bus(m) != a->bus ||
            !sd_bus_message_is_method_call(m, NULL, NULL))
                return -EINVAL;

        sender = sd_bus_message_get_sender(m);
        if (isempty(sender) || sender[0] != ':') {
                a->stats.denied++;
                return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                          "Access denied: the caller has no unique bus name, so %s cannot be "
                                          "checked", action);
        }
        interactive = sd_bus_message_get_allow_interactive_authorization(m) > 0;

        /* Second run of the handler: the answer is waiting for this very message. */
        Call *c;
        const Result *res;
        r = call_lookup(a, m, sender, action, details, interactive, &key, &c, &res);
        if (r < 0)
                return r;
        if (res)
                return decide(a, m, action, details, res->decision, res->reason, res->timeout_usec, error);

        uid_t uid;
        bool hit = a->cache && con_authz_cache_get(a->cache, key, authz_now(a), &d) > 0;
        if (!hit && uid_known(a, sender, &uid) && uid == 0) {
                /* polkit's yes would mean nothing for root: the service's root policy decides. */
                d = CON_AUTHZ_ROOT;
                hit = true;
        }
        if (hit) {
                a->stats.cache_hits++;
                return decide(a, m, action, details, d, NULL, 0, error);
        }
        a->stats.cache_misses++;
        /* parked: the handler runs again when the answer is here */
        return call_park(a, m, c, key, sender, action, details, interactive, false, error);
}

/* Peer-to-peer (tests): the peer's credentials the kernel recorded when the socket connected
 * (SO_PEERCRED), kept by sd-bus: no round trip. Only what the kernel vouches for, nothing augmented
 * from /proc. On a bus every caller has a unique name: a message without one is refused. */
static int peer_uid(sd_bus_message *m, uid_t *ret_uid, sd_bus_error *error) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        sd_bus *bus = sd_bus_message_get_bus(m);
        uid_t uid;
        int r;

        if (!bus || sd_bus_is_bus_client(bus) != 0)
                return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                          "Access denied: the caller has no unique bus name, so who is calling "
                                          "cannot be known");
        r = sd_bus_get_owner_creds(bus, SD_BUS_CREDS_UID | SD_BUS_CREDS_EUID, &creds);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Cannot determine the caller's credentials: %m");
        uint64_t augmented = sd_bus_creds_get_augmented_mask(creds);
        if (!(augmented & SD_BUS_CREDS_EUID) && sd_bus_creds_get_euid(creds, &uid) >= 0) {
        } else if (!(augmented & SD_BUS_CREDS_UID) && sd_bus_creds_get_uid(creds, &uid) >= 0) {
        } else
                return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                          "Access denied: the bus did not say which user is calling");
        *ret_uid = uid;
        return 1;
}

/* Not a polkit action id (those have no spaces): the key of a caller-uid lookup cannot collide with a
 * check's key. */
#define CALLER_UID_KEY_ACTION "(caller uid)"

int con_authz_caller_uid(ConAuthz *a, sd_bus_message *m, uid_t *ret_uid, sd_bus_error *error) {
        _cleanup_free_ char *key = NULL;
        const char *sender;
        int r;

        if (!m || !ret_uid || !sd_bus_message_is_method_call(m, NULL, NULL))
                return -EINVAL;
        sender = sd_bus_message_get_sender(m);
        if (isempty(sender) || sender[0] != ':')
                return peer_uid(m, ret_uid, error);
        if (!a || sd_bus_message_get_bus(m) != a->bus)
                return -EINVAL;
        if (uid_known(a, sender, ret_uid)) {
                a->stats.uid_cache_hits++;
                return 1;
        }

        Call *c;
        const Result *res;
        r = call_lookup(a, m, sender, CALLER_UID_KEY_ACTION, NULL, false, &key, &c, &res);
        if (r < 0)
                return r;
        if (!res)
                return call_park(a, m, c, key, sender, CALLER_UID_KEY_ACTION, NULL, false, true, error);
        if (res->decision == CON_AUTHZ_ALLOWED) {
                *ret_uid = res->uid;
                return 1;
        }
        if (res->decision == CON_AUTHZ_TIMEOUT)
                return sd_bus_error_setf(error, SD_BUS_ERROR_TIMEOUT,
                                         "The bus did not say within %llu ms who is calling",
                                         (unsigned long long) (res->timeout_usec / USEC_PER_MSEC));
        return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED,
                                  "Access denied: cannot determine who is calling (%s%s%s)",
                                  con_authz_decision_to_string(res->decision), res->reason ? ": " : "",
                                  strempty(res->reason));
}

/* ---- Invalidation ---- */

void con_authz_flush(ConAuthz *a) {
        if (!a)
                return;
        (void) con_authz_cache_flush(a->cache);
        a->generation++;
        a->last_flush = authz_now(a);
        a->stats.flushes++;
}

static int on_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        ConAuthz *a = userdata;
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0)
                return 0;
        if (name[0] != ':' || !isempty(new_owner))
                return 0;
        (void) con_authz_cache_drop_sender(a->cache, name);
        (void) con_authz_cache_drop_sender(a->uids, name);
        /* CVE-2021-3560 class: a caller that vanishes mid-check gets nothing, not even a denial. */
        for (Query *q = a->queries, *next; q; q = next) {
                next = q->next;
                if (!streq(q->sender, name))
                        continue;
                for (Call *c = q->calls; c; c = c->query_next)
                        a->stats.dropped++;
                query_free(q);
        }
        return 0;
}

static int on_polkit_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        con_authz_flush(userdata);
        return 0;
}

static int on_watch(sd_event_source *s, const struct inotify_event *ev, void *userdata) {
        con_authz_flush(userdata);
        return 0;
}

static int on_match_installed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        /* A failed match only loses early invalidation: the TTL, and polkit's own errors for vanished
         * callers, still apply. Do not let sd-bus close the connection over it. */
        return 0;
}

/* ---- Life cycle ---- */

ConAuthz *con_authz_free(ConAuthz *a) {
        if (!a)
                return NULL;
        while (a->queries)
                query_free(a->queries);
        while (a->calls)
                call_free(a->calls);
        sd_bus_slot_unref(a->owner_match);
        sd_bus_slot_unref(a->changed_match);
        for (size_t i = 0; a->watches && i < a->stats.watches; i++)
                sd_event_source_disable_unref(a->watches[i]);
        free(a->watches);
        con_authz_cache_free(a->cache);
        con_authz_cache_free(a->uids);
        sd_event_unref(a->event);
        sd_bus_unref(a->bus);
        free(a);
        return NULL;
}

int con_authz_new(sd_bus *bus, sd_event *event, const ConAuthzOptions *o, ConAuthz **ret) {
        int r;

        if (!bus || !o || !ret)
                return -EINVAL;
        if (o->root_policy != CON_AUTHZ_ROOT_ALLOW && o->root_policy != CON_AUTHZ_ROOT_ASK_TABLE)
                return -EINVAL;
        if (o->root_policy == CON_AUTHZ_ROOT_ASK_TABLE && !o->root_check)
                return -EINVAL;
        if (!event)
                event = sd_bus_get_event(bus);
        if (!event || sd_bus_get_event(bus) != event)
                return -EINVAL; /* re-dispatch needs the bus attached to this loop */

        _cleanup_authz_ ConAuthz *a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->bus = sd_bus_ref(bus);
        a->event = sd_event_ref(event);
        a->opts = *o;
        a->opts.watch_dirs = NULL;
        if (a->opts.timeout_usec == 0)
                a->opts.timeout_usec = CON_AUTHZ_DEFAULT_TIMEOUT_USEC;
        if (a->opts.interactive_timeout_usec == 0)
                a->opts.interactive_timeout_usec = CON_AUTHZ_DEFAULT_INTERACTIVE_TIMEOUT_USEC;
        if (a->opts.cache_ttl_usec == 0)
                a->opts.cache_ttl_usec = CON_AUTHZ_DEFAULT_CACHE_TTL_USEC;
        if (a->opts.cache_max == 0)
                a->opts.cache_max = CON_AUTHZ_DEFAULT_CACHE_MAX;
        if (a->opts.max_pending == 0)
                a->opts.max_pending = CON_AUTHZ_DEFAULT_MAX_PENDING;

        if (!a->opts.no_cache) {
                r = con_authz_cache_new(a->opts.cache_max, a->opts.cache_ttl_usec, &a->cache);
                if (r < 0)
                        return r;
        }

        /* Who is calling is kept as long as the name lives (never expires: UINT64_MAX). */
        r = con_authz_cache_new(a->opts.cache_max, UINT64_MAX, &a->uids);
        if (r < 0)
                return r;

        r = sd_bus_add_match_async(bus, &a->owner_match,
                                   "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                                   "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg2=''",
                                   on_owner_changed, on_match_installed, a);
        if (r < 0)
                return r;
        r = sd_bus_match_signal_async(bus, &a->changed_match, POLKIT_NAME, POLKIT_PATH, POLKIT_INTERFACE,
                                      "Changed", on_polkit_changed, on_match_installed, a);
        if (r < 0)
                return r;

        char * const *dirs = o->watch_dirs ?: (char * const *) default_watch_dirs;
        a->watches = calloc(strv_length(dirs) + 1, sizeof(sd_event_source *));
        if (!a->watches)
                return -ENOMEM;
        STRV_FOREACH(d, dirs) {
                sd_event_source *s = NULL;
                r = sd_event_add_inotify(event, &s, *d,
                                         IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM |
                                         IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR,
                                         on_watch, a);
                if (r < 0)
                        continue; /* missing, or not readable by this service's user: the TTL applies */
                (void) sd_event_source_set_description(s, "authz-rules-watch");
                a->watches[a->stats.watches++] = s;
        }

        *ret = TAKE_PTR(a);
        return 0;
}

void con_authz_get_stats(const ConAuthz *a, ConAuthzStats *ret) {
        if (!ret)
                return;
        if (!a) {
                *ret = (ConAuthzStats) {};
                return;
        }
        *ret = a->stats;
        ret->cache_entries = con_authz_cache_size(a->cache);
        ret->callers_known = con_authz_cache_size(a->uids);
}
