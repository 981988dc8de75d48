/* SPDX-License-Identifier: MIT */
#pragma once

/* The router's inside, shared by its files (router.h is the outside):
 *   router-service.c  the Router object: set-up, bus object, properties, audit, agent signals
 *   router-deliver.c  files as items in per-sender lanes, the Deliver pipeline, rejects, backoff
 *   router-inbox.c    inbox folders: inotify, scans, settle and rescan timers
 *   router-cron.c     cron_task submissions where systemd does not run the timers */

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "audit-writer.h"
#include "config.h"
#include "cron.h"
#include "name-owners.h"
#include "router.h"
#include "router-util.h"
#include "task.h"

#define INBOX_MASK (IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)
#define DELIVER_TIMEOUT_USEC (25 * USEC_PER_SEC)
/* A file younger than this seen by a rescan may still be written to: its IN_CLOSE_WRITE will
 * come, or the follow-up rescan takes it. */
#define RESCAN_SETTLE_USEC (2 * USEC_PER_SEC)
#define PROPERTIES_COALESCE_USEC (100 * USEC_PER_MSEC)
/* Ids used in this run, kept to tell a redelivery of the same file from a new file that reuses
 * a name; cleared when it grows past this. */
#define USED_IDS_MAX 65536
/* Files of one sender for one agent the router holds in memory (queued or in flight). More stay
 * in the inbox, untracked, and a rescan takes them once the sender's lane fell to the low mark:
 * memory stays bounded however many files one sender drops. */
#define LANE_TRACK_MAX 4096
#define LANE_TRACK_LOW (LANE_TRACK_MAX / 2)
/* A sender over its quota at the agent (SenderQuotaExceeded): probe again after this, doubling
 * up to the maximum, unless one of its tasks finishing gives a credit earlier. */
#define QUOTA_RETRY_MIN_USEC (200 * USEC_PER_MSEC)
#define QUOTA_RETRY_MAX_USEC (5 * USEC_PER_SEC)

typedef struct Router Router;
typedef struct Target Target;
typedef struct Inbox Inbox;
typedef struct Item Item;
typedef struct Lane Lane;

struct Item {
        Router *router;
        Inbox *inbox;
        Lane *lane;
        char *name;
        char *key;              /* "<inbox rel>/<name>", in Router.known */
        char *task_id;
        struct stat st;
        unsigned id_attempt;    /* router_task_id() attempt: moves on at each DuplicateTask */
        char *remote;           /* "to: AGENT@HOST" of the file being sent: handed to the mesh gateway */
        sd_bus_slot *slot;
        TAILQ_ENTRY(Item) link;
};

struct Inbox {
        Router *router;
        char *rel;              /* "inbox", "agents/x/inbox" */
        char *path;
        char *label;
        Target *target;
        int fd;
        sd_event_source *watch;
        bool retired;           /* its agent left the config: not watched, not scanned */
};

/* The files of one sender (the files' owner) for one agent. The dispatcher takes lanes in turn, so
 * one sender's flood delays another sender's file by at most one round. */
struct Lane {
        Target *target;
        uid_t uid;
        char *user;             /* as the agent names the sender in its signals */
        TAILQ_HEAD(, Item) queue;
        unsigned n_queued;      /* in queue */
        unsigned n_tracked;     /* in queue or in flight */
        bool overflow;          /* files left untracked in the inbox: rescan at LANE_TRACK_LOW */
        bool over_quota;        /* the agent refused: deliver only with credits */
        unsigned credits;       /* this sender's tasks that finished since the refusal */
        unsigned quota_refusals;
        sd_event_source *quota_timer;
};

struct Target {
        Router *router;
        char *agent;
        char *bus_name;
        Lane **lanes;
        size_t n_lanes;
        size_t next_lane;       /* round robin */
        unsigned failures;
        bool backing_off;
        sd_event_source *backoff;
        ConCron cron;
        bool has_cron;
        char *cron_task;
        sd_event_source *cron_timer;
        bool configured;        /* in the config loaded last (else retired: its queue still drains) */
};

struct Router {
        RouterOptions opts;
        char *config_path;
        char *config_error;     /* why the last reload was refused; NULL when it was not */
        bool started;           /* router_start() ran: new inboxes are watched at once */
        sd_event_source *sighup;
        struct ConAuthz *authz; /* Reload: who is calling */
        char *srv_dir;
        char *audit_dir;
        sd_event *event;
        sd_bus *bus;
        ConConfig *config;
        Target **targets;       /* pointers: items and lanes point into them; never moved */
        size_t n_targets;
        Inbox **inboxes;
        size_t n_inboxes;
        int rejected_fd;
        ConAuditWriter *audit;

        TAILQ_HEAD(, Item) in_flight;   /* Deliver calls waiting for a reply */
        RouterMap *known;       /* files queued or in flight */
        RouterMap *used_ids;    /* "<agent>/<id>" -> file identity, this run */
        RouterWindow window;
        size_t next_target;     /* round robin */

        uint64_t routed, rejected, backlog;
        bool props_dirty;
        bool shutting_down;

        sd_event_source *dispatch;
        sd_event_source *rescan_timer;
        sd_event_source *settle_timer;
        sd_event_source *props_timer;
        sd_event_source *once_timer;
        sd_bus_slot *match_signals;     /* TaskCompleted, only while a lane is over its quota */
        size_t n_over_quota;            /* lanes over their quota */
        bool watch_agents;              /* a daemon (not --once): quota credits come from signals */
        ConNameOwners *owners;          /* who owns each target's bus name */
        int exit_status;
};

/* router-service.c */
void router_audit(Router *r, const char *service, const char *event, cJSON *fields);
void router_props_changed(Router *r);
void router_quota_watch(Router *r, bool over);

/* router-deliver.c */
Item *router_item_free(Item *it);
Lane *router_lane_free(Lane *l);
int router_item_enqueue(Inbox *in, const char *name, const struct stat *st);
void router_item_reject(Item *it, const char *reason);
int router_rejected_dir_open(Router *r);
void router_kick(Router *r);
int router_on_dispatch(sd_event_source *s, void *userdata);

/* router-inbox.c */
int router_inbox_open(Inbox *in);
int router_inbox_watch(Inbox *in);
void router_rescan(Router *r);
void router_rescan_soon(Router *r);
int router_on_rescan_timer(sd_event_source *s, uint64_t usec, void *userdata);
int router_on_settle_timer(sd_event_source *s, uint64_t usec, void *userdata);
int router_on_once_timeout(sd_event_source *s, uint64_t usec, void *userdata);

/* router-cron.c */
int router_cron_arm(Target *t);
