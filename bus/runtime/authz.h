/* SPDX-License-Identifier: MIT */
#pragma once

/* Asynchronous, fail-closed, cached polkit authorization for sd-bus method handlers.
 *
 * A method handler asks before it touches any state:
 *
 *         r = con_authz_verify(authz, m, "org.conspiracy.agent1.send", details, error);
 *         if (r < 0)
 *                 return r;        // denied: error is filled, sd-bus sends it as the reply
 *         if (r == 0)
 *                 return 1;        // parked: the handler runs again when polkit has answered
 *         ... allowed: do the work and reply ...
 *
 * The first call for a (caller, action, details) asks the bus for the caller's uid and then polkit's
 * CheckAuthorization, both asynchronously, and parks the message. When the answer comes the message is
 * rewound and put back into the bus's read queue (sd_bus_enqueue_for_read), so sd-bus runs the handler
 * a second time with the same message, and con_authz_verify() then returns the decision. Handlers must
 * therefore be restartable up to the verify call (read arguments, verify, then change state), and their
 * vtable entries need SD_BUS_VTABLE_UNPRIVILEGED. The bus must be attached to the event loop.
 *
 * Everything that is not polkit's explicit "yes" is a denial: polkit absent, an error, a timeout, a
 * challenge the caller did not allow to be interactive, a caller that disconnected during the check.
 * polkit authorizes uid 0 for everything before any rule runs, so its yes means nothing for root: root
 * callers never reach polkit, the service decides them with ConAuthzOptions.root_policy.
 *
 * The library never logs. See docs/AUTHZ.md. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "macro.h"

#define CON_AUTHZ_DEFAULT_TIMEOUT_USEC             (5 * USEC_PER_SEC)
#define CON_AUTHZ_DEFAULT_INTERACTIVE_TIMEOUT_USEC (60 * USEC_PER_SEC)
#define CON_AUTHZ_DEFAULT_CACHE_TTL_USEC           (60 * USEC_PER_SEC)
#define CON_AUTHZ_DEFAULT_CACHE_MAX                ((size_t) 4096)
#define CON_AUTHZ_DEFAULT_MAX_PENDING              ((size_t) 1024)
/* Answers to checks sent less than this long after a rules change are delivered but not cached:
 * polkitd reloads its rules on its own inotify watch, a little after ours fires. */
#define CON_AUTHZ_RULES_SETTLE_USEC                (1 * USEC_PER_SEC)

typedef struct ConAuthz ConAuthz;

typedef enum ConAuthzRootPolicy {
        CON_AUTHZ_ROOT_UNSET = 0,  /* rejected by con_authz_new(): every service chooses explicitly */
        CON_AUTHZ_ROOT_ALLOW,      /* uid 0 callers are allowed, polkit is not asked */
        CON_AUTHZ_ROOT_ASK_TABLE,  /* uid 0 callers are decided by ConAuthzOptions.root_check */
} ConAuthzRootPolicy;

/* The service's own policy for root callers: > 0 allow, 0 deny, < 0 error (denied). */
typedef int (*ConAuthzRootCheck)(sd_bus_message *m, const char *action, char * const *details,
                                 void *userdata);

typedef struct ConAuthzOptions {
        uint64_t timeout_usec;             /* 0: CON_AUTHZ_DEFAULT_TIMEOUT_USEC */
        uint64_t interactive_timeout_usec; /* checks that may prompt; 0: the default above */
        uint64_t cache_ttl_usec;           /* 0: CON_AUTHZ_DEFAULT_CACHE_TTL_USEC */
        size_t cache_max;                  /* entries; 0: CON_AUTHZ_DEFAULT_CACHE_MAX */
        size_t max_pending;                /* checks in flight; 0: CON_AUTHZ_DEFAULT_MAX_PENDING */
        bool no_cache;                     /* never cache decisions (benchmarks) */
        ConAuthzRootPolicy root_policy;    /* required */
        ConAuthzRootCheck root_check;      /* required with CON_AUTHZ_ROOT_ASK_TABLE */
        void *userdata;                    /* passed to root_check */
        /* Folders whose changes drop the whole cache; NULL: polkit's rules and actions folders.
         * Folders that do not exist or cannot be read are skipped (see ConAuthzStats.watches). */
        char * const *watch_dirs;
} ConAuthzOptions;

typedef struct ConAuthzStats {
        uint64_t checks_sent;   /* CheckAuthorization calls sent to polkit */
        uint64_t uid_lookups;   /* GetConnectionUnixUser calls sent to the bus */
        uint64_t uid_cache_hits; /* con_authz_caller_uid() answered from what the bus said before */
        uint64_t cache_hits;
        uint64_t cache_misses;
        uint64_t coalesced;     /* calls parked on a check that was already in flight */
        uint64_t allowed;       /* verify results, counted per call */
        uint64_t denied;        /* verify results, every refusal including the three below */
        uint64_t timeouts;      /* checks, counted once each */
        uint64_t unavailable;   /* checks that found no polkit */
        uint64_t errors;        /* checks that failed otherwise */
        uint64_t dropped;       /* parked calls dropped without reply: the caller disconnected */
        uint64_t flushes;       /* whole-cache drops (rules or actions changed, or con_authz_flush) */
        size_t cache_entries;
        size_t callers_known;   /* unique names whose uid is known (dropped when they disconnect) */
        size_t pending;         /* checks in flight */
        size_t parked;          /* messages waiting for a decision or for re-dispatch */
        size_t watches;         /* folders watched for rule and action changes */
} ConAuthzStats;

int con_authz_new(sd_bus *bus, sd_event *event, const ConAuthzOptions *o, ConAuthz **ret);
ConAuthz *con_authz_free(ConAuthz *a);
DEFINE_TRIVIAL_CLEANUP_FUNC(ConAuthz *, con_authz_free);
#define _cleanup_authz_ _cleanup_(con_authz_freep)

/* May the sender of method call m perform action with details (NULL-terminated key, value list,
 * e.g. { "agent", "sysadmin", "verb", "task", NULL }; may be NULL)?
 * Returns 1 allowed; 0 parked (return 1 from the handler without replying, it will be called again);
 * negative errno with error filled when denied: -EACCES (CON_ERROR_ACCESS_DENIED or
 * org.freedesktop.DBus.Error.InteractiveAuthorizationRequired), -ETIMEDOUT (CON_ERROR_POLICY_TIMEOUT),
 * -ENOBUFS (too many checks in flight), -EINVAL (bad arguments: a bug in the service). */
int con_authz_verify(ConAuthz *a, sd_bus_message *m, const char *action, char * const *details,
                     sd_bus_error *error);

/* Who is calling: the uid of the sender of method call m, from the bus driver (GetConnectionUnixUser,
 * asynchronous; never /proc). Same contract as con_authz_verify(): 1 with *ret_uid set; 0 parked (return
 * 1 from the handler without replying, it runs again with the same message); a negative errno with
 * error filled when the bus does not say (timeout, caller gone, error). Concurrent lookups for one
 * sender share one bus call. The answer is kept for the sender's unique name until it disconnects
 * (the bus never reuses a unique name), and con_authz_verify() keeps the uid it looked up, so a call
 * after a verify of the same message, or a second call of the same caller, answers at once. On a
 * peer-to-peer connection (no unique sender name) the socket's peer credentials (SO_PEERCRED, taken
 * at connect) answer at once, and a may be NULL; on a bus a message without a unique sender is
 * refused. This is the one way services learn who is calling: never a PID, never a blocking call. */
int con_authz_caller_uid(ConAuthz *a, sd_bus_message *m, uid_t *ret_uid, sd_bus_error *error);

/* Drops every cached decision; answers already in flight are not cached. */
void con_authz_flush(ConAuthz *a);
void con_authz_get_stats(const ConAuthz *a, ConAuthzStats *ret);

/* ---- Pure parts, exported for tests ---- */

typedef enum ConAuthzDecision {
        CON_AUTHZ_ALLOWED,
        CON_AUTHZ_DENIED,       /* polkit: not authorized */
        CON_AUTHZ_CHALLENGE,    /* polkit: authentication needed, interaction was not allowed */
        CON_AUTHZ_ROOT,         /* the caller is uid 0: the root policy decides */
        CON_AUTHZ_UNAVAILABLE,  /* polkit is not running and cannot be activated */
        CON_AUTHZ_UNTRUSTED,    /* polkit refused this service (no action owner annotation) */
        CON_AUTHZ_TIMEOUT,
        CON_AUTHZ_CALLER_GONE,
        CON_AUTHZ_FAILED,       /* any other error */
        _CON_AUTHZ_DECISION_MAX,
} ConAuthzDecision;

const char *con_authz_decision_to_string(ConAuthzDecision d);

/* The cache and coalescing key: sender, action, interactivity and the details sorted by key, each
 * length-prefixed so that no two inputs share a key. -EINVAL: no sender or action, an odd details list,
 * an empty or duplicate key, or a key in polkit's reserved "polkit." namespace. */
int con_authz_key(const char *sender, const char *action, char * const *details, bool interactive,
                  char **ret);

ConAuthzDecision con_authz_decision_from_result(bool authorized, bool challenge);
/* Maps the error name of a failed uid lookup (from_polkit false) or CheckAuthorization call. */
ConAuthzDecision con_authz_decision_from_error(const char *name, bool from_polkit);
/* Only polkit's own answers are cached; errors and timeouts are asked again next time. */
bool con_authz_decision_cacheable(ConAuthzDecision d);
/* The handler's result for a final decision: 1 for CON_AUTHZ_ALLOWED, otherwise a negative errno with
 * error filled (message names the action and details; reason is polkit's text, may be NULL). */
int con_authz_decision_to_error(ConAuthzDecision d, const char *action, char * const *details,
                                const char *reason, uint64_t timeout_usec, sd_bus_error *error);

/* A bounded LRU map from key to decision with a time to live. Times are CLOCK_MONOTONIC usec. */
typedef struct ConAuthzCache ConAuthzCache;
int con_authz_cache_new(size_t max, uint64_t ttl_usec, ConAuthzCache **ret);
ConAuthzCache *con_authz_cache_free(ConAuthzCache *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(ConAuthzCache *, con_authz_cache_free);
/* 1 and *ret set when a live entry exists, 0 when missing or expired (an expired entry is removed). */
int con_authz_cache_get(ConAuthzCache *c, const char *key, uint64_t now, ConAuthzDecision *ret);
/* Inserts or replaces; evicts the least recently used entry when full. */
int con_authz_cache_put(ConAuthzCache *c, const char *key, const char *sender, ConAuthzDecision d,
                        uint64_t now);
/* Both return the number of entries removed. */
size_t con_authz_cache_drop_sender(ConAuthzCache *c, const char *sender);
size_t con_authz_cache_flush(ConAuthzCache *c);
size_t con_authz_cache_size(const ConAuthzCache *c);
