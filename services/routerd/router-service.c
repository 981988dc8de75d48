/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/inotify.h>
#include <sys/queue.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "audit-writer.h"
#include "bus-util.h"
#include "con-paths.h"
#include "config.h"
#include "cron.h"
#include "errors.h"
#include "log.h"
#include "macro.h"
#include "names.h"
#include "router-service.h"
#include "router-util.h"
#include "spool.h"
#include "strv.h"
#include "task.h"
#include "time-util.h"

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
        char *owner;            /* unique name owning bus_name, NULL when not running */
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
};

struct Router {
        RouterOptions opts;
        char *srv_dir;
        char *audit_dir;
        sd_event *event;
        sd_bus *bus;
        ConConfig *config;
        Target *targets;
        size_t n_targets;
        Inbox *inboxes;
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
        sd_bus_slot *match_signals;
        sd_bus_slot *match_owners;
        int exit_status;
};

static void router_kick(Router *r);
static void item_requeue(Item *it, bool front);

static const char *user_name(uid_t uid, char buf[static 64]) {
        struct passwd pw, *res = NULL;
        char tmp[1024];
        if (getpwuid_r(uid, &pw, tmp, sizeof tmp, &res) == 0 && res && strlen(res->pw_name) < 64)
                strcpy(buf, res->pw_name);
        else
                snprintf(buf, 64, "uid:%u", (unsigned) uid);
        return buf;
}

/* ---- audit ---- */

static void audit_record(Router *r, const char *service, const char *event, cJSON *fields) {
        bool first = false;
        int k = r->audit ? con_audit_writer_append(r->audit, service, event, fields, &first) : 0;
        cJSON_Delete(fields);
        if (k < 0 && first)
                log_error("Failed to append to the audit log %s/%s: %s%s", r->audit_dir,
                          CON_AUDIT_LOG_NAME, strerror(-k),
                          k == -EBADMSG ? " (the log ends with a damaged record: run 'con audit verify')" : "");
}

/* ---- properties ---- */

static void props_changed(Router *r) {
        r->props_dirty = true;
        if (r->props_timer && !r->opts.once) {
                int enabled = SD_EVENT_OFF;
                (void) sd_event_source_get_enabled(r->props_timer, &enabled);
                if (enabled == SD_EVENT_OFF) {
                        uint64_t now;
                        (void) sd_event_now(r->event, CLOCK_MONOTONIC, &now);
                        (void) sd_event_source_set_time(r->props_timer, now + PROPERTIES_COALESCE_USEC);
                        (void) sd_event_source_set_enabled(r->props_timer, SD_EVENT_ONESHOT);
                }
        }
}

static int on_props_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Router *r = userdata;
        if (!r->props_dirty)
                return 0;
        r->props_dirty = false;
        int k = sd_bus_emit_properties_changed(r->bus, CON_ROUTER_PATH, CON_ROUTER_INTERFACE, "Routed", "Rejected",
                                               "InFlight", "Backlog", NULL);
        if (k < 0)
                log_warning("Failed to emit PropertiesChanged, ignoring: %s", strerror(-k));
        return 0;
}

static int property_get(sd_bus *bus, const char *path, const char *interface, const char *property,
                        sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Router *r = userdata;
        if (streq(property, "Routed"))
                return sd_bus_message_append(reply, "t", r->routed);
        if (streq(property, "Rejected"))
                return sd_bus_message_append(reply, "t", r->rejected);
        if (streq(property, "InFlight"))
                return sd_bus_message_append(reply, "u", r->window.in_flight);
        if (streq(property, "Backlog"))
                return sd_bus_message_append(reply, "u", (uint32_t) r->backlog);
        return -ENOENT;
}

/* ---- items ---- */

static void router_rescan_soon(Router *r);

static Item *item_free(Item *it) {
        if (!it)
                return NULL;
        if (it->lane) {
                Lane *l = it->lane;
                l->n_tracked--;
                /* Files of this sender wait untracked in the inbox: take the next ones. */
                if (l->overflow && l->n_tracked <= LANE_TRACK_LOW && !it->router->shutting_down) {
                        l->overflow = false;
                        router_rescan_soon(it->router);
                }
        }
        sd_bus_slot_unref(it->slot);
        free(it->name);
        free(it->key);
        free(it->task_id);
        free(it);
        return NULL;
}

/* Forget a file: it was delivered, rejected or is gone. */
static void item_done(Item *it) {
        Router *r = it->router;
        (void) router_map_remove(r->known, it->key);
        item_free(it);
        props_changed(r);
        router_kick(r);
}

static int on_quota_timer(sd_event_source *s, uint64_t usec, void *userdata);

static Lane *lane_free(Lane *l) {
        if (!l)
                return NULL;
        sd_event_source_disable_unref(l->quota_timer);
        free(l->user);
        free(l);
        return NULL;
}

/* The lane of a sender for a target, created on first use. */
static Lane *target_lane(Target *t, uid_t uid) {
        char ubuf[64];

        for (size_t i = 0; i < t->n_lanes; i++)
                if (t->lanes[i]->uid == uid)
                        return t->lanes[i];
        Lane **n = realloc(t->lanes, (t->n_lanes + 1) * sizeof *n);
        if (!n)
                return NULL;
        t->lanes = n;
        Lane *l = calloc(1, sizeof *l);
        if (!l)
                return NULL;
        *l = (Lane) { .target = t, .uid = uid };
        TAILQ_INIT(&l->queue);
        /* The agent names a sender without a user name by its number, not "uid:N". */
        const char *u = user_name(uid, ubuf);
        if (!(l->user = strdup(startswith(u, "uid:") ?: u)))
                return lane_free(l);
        t->lanes[t->n_lanes++] = l;
        return l;
}

/* st: the file's lstat() when the caller has it, else NULL. */
static int item_enqueue(Inbox *in, const char *name, const struct stat *st) {
        Router *r = in->router;
        _cleanup_free_ char *key = NULL;
        struct stat buf;
        int k;

        if (asprintf(&key, "%s/%s", in->rel, name) < 0)
                return -ENOMEM;
        if (router_map_get(r->known, key, NULL))
                return 0;
        if (!st) {
                if (fstatat(in->fd, name, &buf, AT_SYMLINK_NOFOLLOW) < 0)
                        return errno == ENOENT ? 0 : negative_errno();
                st = &buf;
        }
        Lane *lane = target_lane(in->target, st->st_uid);
        if (!lane)
                return -ENOMEM;
        if (!r->opts.once && lane->n_tracked >= LANE_TRACK_MAX) {
                lane->overflow = true;  /* stays in the inbox; a rescan takes it later */
                return 0;
        }
        Item *it = calloc(1, sizeof *it);
        if (!it)
                return -ENOMEM;
        it->router = r;
        it->inbox = in;
        it->lane = lane;
        lane->n_tracked++;
        it->name = strdup(name);
        if (!it->name) {
                item_free(it);
                return -ENOMEM;
        }
        k = router_map_put(r->known, key, 0);
        if (k < 0) {
                item_free(it);
                return k;
        }
        it->key = TAKE_PTR(key);
        item_requeue(it, false);
        return 1;
}

static void item_requeue(Item *it, bool front) {
        Lane *l = it->lane;
        if (front)
                TAILQ_INSERT_HEAD(&l->queue, it, link);
        else
                TAILQ_INSERT_TAIL(&l->queue, it, link);
        l->n_queued++;
        it->router->backlog++;
        props_changed(it->router);
        router_kick(it->router);
}

static int rejected_dir_open(Router *r) {
        _cleanup_free_ char *p = NULL;
        if (r->rejected_fd >= 0)
                return r->rejected_fd;
        if (asprintf(&p, "%s/rejected", r->srv_dir) < 0)
                return -ENOMEM;
        if (mkdir(p, 0750) < 0 && errno != EEXIST)
                return negative_errno();
        int fd = open(p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        r->rejected_fd = fd;
        return fd;
}

/* Moves dirfd/name to the rejected folder under a unique name, returned in *ret_dest. */
static int reject_move(Router *r, Inbox *in, const char *name, char **ret_dest) {
        int dfd, k = -EEXIST;

        dfd = rejected_dir_open(r);
        if (dfd < 0)
                return dfd;
        for (unsigned attempt = 0; k == -EEXIST && attempt < 16; attempt++) {
                _cleanup_free_ char *dest = NULL;
                k = router_rejected_name(con_now(CLOCK_REALTIME) + attempt,
                                         in->label, name, &dest);
                if (k < 0)
                        return k;
                k = con_spool_claim(in->fd, name, dfd, dest);
                if (k >= 0)
                        *ret_dest = TAKE_PTR(dest);
        }
        return k;
}

/* Moves the file aside (rename never follows a link: a symlink or hard link is moved as the link
 * itself), writes NAME.reason next to it, signals and audits. Never loses the file silently: if
 * it cannot be moved, it stays in the inbox and the error is logged. */
static void item_reject(Item *it, const char *reason) {
        Router *r = it->router;
        Inbox *in = it->inbox;
        _cleanup_free_ char *dest = NULL, *reason_name = NULL, *text = NULL, *file = NULL;
        struct stat st = {};
        char ubuf[64];
        int k;

        if (asprintf(&file, "%s/%s", in->path, it->name) < 0) {
                log_error("Out of memory while rejecting %s/%s", in->path, it->name);
                item_done(it);
                return;
        }
        bool have_st = fstatat(in->fd, it->name, &st, AT_SYMLINK_NOFOLLOW) >= 0;
        const char *owner = have_st ? user_name(st.st_uid, ubuf) : "unknown";

        k = reject_move(r, in, it->name, &dest);
        if (k == -ENOENT) {
                item_done(it); /* someone took it first */
                return;
        }
        if (k < 0) {
                log_error("Failed to move rejected file %s to %s/rejected, leaving it in place: %s", file,
                          r->srv_dir, strerror(-k));
                item_done(it);
                return;
        }

        if (asprintf(&reason_name, "%s.reason", dest) >= 0 &&
            asprintf(&text, "file: %s\nowner: %s\nreason: %s\n", file, owner, reason) >= 0) {
                k = con_spool_write(r->rejected_fd, reason_name, text, strlen(text),
                                    &(ConSpoolWrite) { .mode = 0640, .uid = 0, .gid = 0, .sync = true });
                if (k < 0)
                        log_error("Failed to write %s/rejected/%s: %s", r->srv_dir, reason_name, strerror(-k));
        } else
                log_error("Out of memory while writing the reason for %s", file);

        log_info("Rejected %s: %s (moved to %s/rejected/%s)", file, reason, r->srv_dir, dest);
        r->rejected++;
        if (r->bus) {
                k = sd_bus_emit_signal(r->bus, CON_ROUTER_PATH, CON_ROUTER_INTERFACE, "TaskRejected", "ss", file,
                                       reason);
                if (k < 0)
                        log_warning("Failed to emit TaskRejected, ignoring: %s", strerror(-k));
        }
        cJSON *f = con_audit_task_fields(NULL, in->target->agent, owner);
        if (f) {
                cJSON_AddStringToObject(f, "file", file);
                cJSON_AddStringToObject(f, "rejected", dest);
                cJSON_AddStringToObject(f, "reason", reason);
        }
        audit_record(r, "router", "task.rejected", f);
        item_done(it);
}

static int on_backoff(sd_event_source *s, uint64_t usec, void *userdata);

static void target_backoff(Target *t) {
        Router *r = t->router;
        uint64_t now, d;

        t->failures++;
        d = router_backoff_usec(t->failures);
        (void) sd_event_now(r->event, CLOCK_MONOTONIC, &now);
        t->backing_off = true;
        if (!t->backoff) {
                int k = sd_event_add_time(r->event, &t->backoff, CLOCK_MONOTONIC, now + d, 0, on_backoff, t);
                if (k < 0) {
                        t->backing_off = false;
                        return;
                }
        } else {
                (void) sd_event_source_set_time(t->backoff, now + d);
        }
        (void) sd_event_source_set_enabled(t->backoff, SD_EVENT_ONESHOT);
}

static void lane_arm_quota_timer(Lane *l) {
        Router *r = l->target->router;
        uint64_t d = QUOTA_RETRY_MIN_USEC, now;
        for (unsigned i = 1; i < l->quota_refusals && d < QUOTA_RETRY_MAX_USEC; i++)
                d *= 2;
        if (d > QUOTA_RETRY_MAX_USEC)
                d = QUOTA_RETRY_MAX_USEC;
        (void) sd_event_now(r->event, CLOCK_MONOTONIC, &now);
        if (!l->quota_timer) {
                if (sd_event_add_time(r->event, &l->quota_timer, CLOCK_MONOTONIC, now + d, 0, on_quota_timer, l) < 0) {
                        l->credits = 1; /* no timer: keep probing instead of waiting forever */
                        return;
                }
        } else
                (void) sd_event_source_set_time(l->quota_timer, now + d);
        (void) sd_event_source_set_enabled(l->quota_timer, SD_EVENT_ONESHOT);
}

/* The agent refused a file of this sender for its quota: hold the sender's files back until its
 * tasks finish (a TaskCompleted signal gives one credit) or the timer allows a probe. */
static void lane_over_quota(Lane *l, const char *why) {
        if (!l->over_quota)
                log_info("Holding back the files of %s for %s in the inbox: %s", l->user, l->target->agent, why);
        l->over_quota = true;
        l->credits = 0;
        l->quota_refusals++;
        lane_arm_quota_timer(l);
}

static int on_quota_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Lane *l = userdata;
        if (l->over_quota && l->credits == 0) {
                l->credits = 1;
                router_kick(l->target->router);
        }
        return 0;
}

static int on_deliver_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Item *it = userdata;
        Router *r = it->router;
        Target *t = it->inbox->target;
        const sd_bus_error *e;
        const char *id = NULL;
        char ubuf[64];
        int k;

        it->slot = sd_bus_slot_unref(it->slot);
        TAILQ_REMOVE(&r->in_flight, it, link);
        router_window_release(&r->window);
        props_changed(r);

        e = sd_bus_message_get_error(m);
        if (e) {
                switch (router_classify_reply_error(e->name)) {
                case ROUTER_REPLY_NEW_ID: {
                        /* Another sender holds the id: never drop the file, deliver it again under
                         * the next id (the file stays in the inbox meanwhile). */
                        cJSON *f = con_audit_task_fields(it->task_id, t->agent, user_name(it->st.st_uid, ubuf));
                        if (f)
                                cJSON_AddStringToObject(f, "inbox", it->inbox->path);
                        audit_record(r, "router", "task.id_taken", f);
                        if (++it->id_attempt < ROUTER_ID_ATTEMPTS_MAX) {
                                log_info("Task id %s is taken on agent %s by another sender; delivering %s/%s "
                                         "again under a new id", it->task_id, t->agent, it->inbox->path, it->name);
                                item_requeue(it, true);
                                return 0;
                        }
                }
                        __attribute__((fallthrough));
                case ROUTER_REPLY_REJECT: {
                        _cleanup_free_ char *reason = NULL;
                        if (asprintf(&reason, "agent %s refused the task: %s", t->agent,
                                     e->message ?: e->name) < 0) {
                                item_done(it);
                                return 0;
                        }
                        item_reject(it, reason);
                        return 0;
                }
                case ROUTER_REPLY_SENDER_WAIT:
                        /* Only this sender waits; the file stays in the inbox. */
                        lane_over_quota(it->lane, e->message ?: e->name);
                        item_requeue(it, true);
                        return 0;
                case ROUTER_REPLY_RETRY:
                        if (t->failures == 0 || !t->backing_off)
                                log_warning("Agent %s is not available (%s), retrying with backoff", t->agent,
                                            e->message ?: e->name);
                        item_requeue(it, true);
                        if (!t->backing_off)
                                target_backoff(t);
                        return 0;
                }
        }

        t->failures = 0;
        if (it->lane->over_quota) {
                /* Accepted. Stay on credits until the sender's files are all delivered; the probe
                 * timer keeps things moving should a TaskCompleted not reach us. */
                Lane *l = it->lane;
                l->quota_refusals = 0;
                if (TAILQ_EMPTY(&l->queue)) {
                        l->over_quota = false;
                        l->credits = 0;
                        (void) sd_event_source_set_enabled(l->quota_timer, SD_EVENT_OFF);
                } else if (l->credits == 0)
                        lane_arm_quota_timer(l);
        }
        k = sd_bus_message_read(m, "s", &id);
        if (k < 0 || !id)
                id = it->task_id;

        /* Unlink only the file that was delivered: if the name now points at another file (the
         * sender replaced it), keep that one for the next pass. */
        struct stat st;
        if (fstatat(it->inbox->fd, it->name, &st, AT_SYMLINK_NOFOLLOW) >= 0) {
                if (st.st_dev == it->st.st_dev && st.st_ino == it->st.st_ino) {
                        if (unlinkat(it->inbox->fd, it->name, 0) < 0 && errno != ENOENT)
                                log_error("Failed to remove delivered task %s/%s: %m", it->inbox->path, it->name);
                } else
                        log_info("%s/%s was replaced after delivery; routing the new file too", it->inbox->path,
                                 it->name);
        }

        _cleanup_free_ char *used_key = NULL;
        if (asprintf(&used_key, "%s/%s", t->agent, id) >= 0) {
                if (router_map_size(r->used_ids) >= USED_IDS_MAX)
                        router_map_clear(r->used_ids);
                (void) router_map_put(r->used_ids, used_key, router_file_identity(&it->st));
        }

        r->routed++;
        const char *sender = user_name(it->st.st_uid, ubuf);
        k = sd_bus_emit_signal(r->bus, CON_ROUTER_PATH, CON_ROUTER_INTERFACE, "TaskRouted", "sss", id, t->agent,
                               sender);
        if (k < 0)
                log_warning("Failed to emit TaskRouted, ignoring: %s", strerror(-k));
        cJSON *f = con_audit_task_fields(id, t->agent, sender);
        if (f)
                cJSON_AddStringToObject(f, "inbox", it->inbox->path);
        audit_record(r, "router", "task.routed", f);

        /* A name reused for a new file while this one was in flight: look again. */
        bool again = fstatat(it->inbox->fd, it->name, &st, AT_SYMLINK_NOFOLLOW) >= 0;
        Inbox *in = it->inbox;
        _cleanup_free_ char *name = strdup(it->name);
        item_done(it);
        if (again && name)
                (void) item_enqueue(in, name, NULL);
        return 0;
}

static int append_text(sd_bus_message *m, const char *key, const char *type, ...) {
        va_list ap;
        int k;

        k = sd_bus_message_open_container(m, 'e', "sv");
        if (k < 0)
                return k;
        k = sd_bus_message_append(m, "s", key);
        if (k < 0)
                return k;
        k = sd_bus_message_open_container(m, 'v', type);
        if (k < 0)
                return k;
        va_start(ap, type);
        k = sd_bus_message_appendv(m, type, ap);
        va_end(ap);
        if (k < 0)
                return k;
        k = sd_bus_message_close_container(m);
        if (k < 0)
                return k;
        return sd_bus_message_close_container(m);
}

static int deliver_message_new(Router *r, Target *t, const ConTask *task, const Item *it, sd_bus_message **ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int k;

        k = sd_bus_message_new_method_call(r->bus, &m, t->bus_name, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Deliver");
        if (k < 0)
                return k;
        k = sd_bus_message_open_container(m, 'a', "{sv}");
        if (k < 0)
                return k;
        if ((k = append_text(m, "text", "s", task->text)) < 0 ||
            (k = append_text(m, "id", "s", it->task_id)) < 0 ||
            (k = append_text(m, "priority", "y", (uint8_t) task->meta.priority)) < 0 ||
            (k = append_text(m, "sender_uid", "u", (uint32_t) it->st.st_uid)) < 0)
                return k;
        if (task->meta.reply_to && (k = append_text(m, "reply_to", "s", task->meta.reply_to)) < 0)
                return k;
        if (task->meta.deadline_usec > 0 && (k = append_text(m, "deadline", "t", task->meta.deadline_usec)) < 0)
                return k;
        if (task->meta.conversation && (k = append_text(m, "conversation", "s", task->meta.conversation)) < 0)
                return k;
        k = sd_bus_message_close_container(m);
        if (k < 0)
                return k;
        *ret = TAKE_PTR(m);
        return 0;
}

/* Reads, checks and sends one file. The window slot is taken by the caller. Returns true when a
 * Deliver call is now in flight. */
static bool item_start(Item *it) {
        Router *r = it->router;
        Target *t = it->inbox->target;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(con_task_freep) ConTask *task = NULL;
        _cleanup_(con_task_error_done) ConTaskError terr = {};
        _cleanup_free_ char *buf = NULL, *used_key = NULL;
        size_t len = 0;
        uint64_t max = r->config->task_max_size ?: CON_TASK_DEFAULT_MAX_SIZE;
        int k;

        k = con_spool_read_untrusted(it->inbox->fd, it->name, max, &buf, &len, &it->st);
        if (k < 0) {
                switch (router_classify_open_error(k)) {
                case ROUTER_FILE_GONE:
                        item_done(it);
                        return false;
                case ROUTER_FILE_REJECT:
                        item_reject(it, con_spool_reject_reason(k));
                        return false;
                case ROUTER_FILE_RETRY:
                        log_warning("Failed to read %s/%s, will retry: %s", it->inbox->path, it->name, strerror(-k));
                        (void) router_map_remove(r->known, it->key);
                        item_free(it);
                        return false;
                }
        }

        k = con_task_parse(buf, len, max, &task, &terr);
        if (k < 0) {
                _cleanup_free_ char *reason = NULL;
                if (k == -EFBIG)
                        (void) asprintf(&reason, "the task is larger than the size cap of %" PRIu64 " bytes", max);
                else if (k == -ENOMEM) {
                        (void) router_map_remove(r->known, it->key);
                        item_free(it);
                        return false;
                } else if (terr.line > 0)
                        (void) asprintf(&reason, "line %u: %s", terr.line, terr.message ?: "invalid task");
                else
                        (void) asprintf(&reason, "%s", terr.message ?: "invalid task file");
                item_reject(it, reason ?: "invalid task file");
                return false;
        }

        /* NAME keeps being the id unless this run already used it for another file, or the agent
         * said another sender holds it (id_attempt > 0). */
        if (it->id_attempt == 0) {
                _cleanup_free_ char *base = NULL;
                uint64_t ident;
                if (con_task_id_from_filename(it->name, &base) >= 0 &&
                    asprintf(&used_key, "%s/%s", t->agent, base) >= 0 &&
                    router_map_get(r->used_ids, used_key, &ident) && ident != router_file_identity(&it->st))
                        it->id_attempt = 1;
        }
        uint64_t rnd;
        if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t) sizeof(rnd)) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                rnd = router_file_identity(&it->st) ^ ((uint64_t) ts.tv_sec * USEC_PER_SEC * NSEC_PER_USEC + (uint64_t) ts.tv_nsec);
        }
        free(it->task_id);
        it->task_id = NULL;
        k = router_task_id(it->name, &it->st, it->id_attempt, rnd, &it->task_id);
        if (k < 0) {
                (void) router_map_remove(r->known, it->key);
                item_free(it);
                return false;
        }

        k = deliver_message_new(r, t, task, it, &m);
        if (k >= 0)
                k = sd_bus_call_async(r->bus, &it->slot, m, on_deliver_reply, it, DELIVER_TIMEOUT_USEC);
        if (k < 0) {
                log_error("Failed to send %s/%s to %s, will retry: %s", it->inbox->path, it->name, t->agent,
                          strerror(-k));
                item_requeue(it, true);
                target_backoff(t);
                return false;
        }
        TAILQ_INSERT_TAIL(&r->in_flight, it, link);
        return true;
}

/* The next file of a target: its sender lanes in turn; a lane over its quota only with credits. */
static Item *target_take(Target *t) {
        for (size_t i = 0; i < t->n_lanes; i++) {
                Lane *l = t->lanes[(t->next_lane + i) % t->n_lanes];
                if (TAILQ_EMPTY(&l->queue) || (l->over_quota && l->credits == 0))
                        continue;
                Item *it = TAILQ_FIRST(&l->queue);
                TAILQ_REMOVE(&l->queue, it, link);
                l->n_queued--;
                if (l->over_quota)
                        l->credits--;
                t->next_lane = (t->next_lane + i + 1) % t->n_lanes;
                return it;
        }
        return NULL;
}

static int on_dispatch(sd_event_source *s, void *userdata) {
        Router *r = userdata;

        while (!r->shutting_down && r->window.in_flight < r->window.max) {
                Item *it = NULL;
                for (size_t i = 0; i < r->n_targets && !it; i++) {
                        Target *t = &r->targets[(r->next_target + i) % r->n_targets];
                        if (t->backing_off)
                                continue;
                        it = target_take(t);
                        if (!it)
                                continue;
                        r->backlog--;
                        r->next_target = (r->next_target + i + 1) % r->n_targets;
                }
                if (!it)
                        break;
                if (!router_window_try_acquire(&r->window)) {
                        if (it->lane->over_quota)
                                it->lane->credits++;
                        item_requeue(it, true);
                        break;
                }
                if (!item_start(it))
                        router_window_release(&r->window);
        }
        props_changed(r);
        (void) sd_event_source_set_enabled(s, SD_EVENT_OFF);

        if (r->opts.once && r->window.in_flight == 0 && r->backlog == 0)
                (void) sd_event_exit(r->event, 0);
        return 0;
}

static void router_kick(Router *r) {
        if (r->dispatch)
                (void) sd_event_source_set_enabled(r->dispatch, SD_EVENT_ONESHOT);
}

static int on_backoff(sd_event_source *s, uint64_t usec, void *userdata) {
        Target *t = userdata;
        t->backing_off = false;
        router_kick(t->router);
        return 0;
}

/* ---- inboxes ---- */

static int inbox_open(Inbox *in) {
        if (in->fd >= 0)
                return 0;
        int fd = open(in->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        in->fd = fd;
        return 0;
}

static int on_inotify(sd_event_source *s, const struct inotify_event *ev, void *userdata);

static int inbox_watch(Inbox *in) {
        Router *r = in->router;
        int k;

        if (r->opts.once || in->watch)
                return 0;
        k = sd_event_add_inotify_fd(r->event, &in->watch, in->fd, INBOX_MASK, on_inotify, in);
        if (k < 0)
                return k;
        (void) sd_event_source_set_description(in->watch, in->rel);
        return 0;
}

/* Queues every candidate file of the inbox. Returns how many were too young to take. */
static unsigned inbox_scan(Inbox *in) {
        Router *r = in->router;
        uint64_t now;
        unsigned young = 0;
        int k;

        if (in->fd < 0) {
                k = inbox_open(in);
                if (k < 0) {
                        if (k != -ENOENT)
                                log_warning("Failed to open inbox %s: %s", in->path, strerror(-k));
                        return 0;
                }
                k = inbox_watch(in);
                if (k < 0)
                        log_warning("Failed to watch %s: %s", in->path, strerror(-k));
        }
        int dfd = fcntl(in->fd, F_DUPFD_CLOEXEC, 3);
        if (dfd < 0)
                return 0;
        _cleanup_closedir_ DIR *d = fdopendir(dfd);
        if (!d) {
                safe_close(dfd);
                return 0;
        }
        /* The duplicate shares the file offset with in->fd, which the last scan left at the end. */
        rewinddir(d);
        now = con_now(CLOCK_REALTIME);
        struct dirent *de;
        while ((de = readdir(d))) {
                if (!con_spool_name_is_candidate(de->d_name, ".task"))
                        continue;
                if (de->d_type == DT_DIR)
                        continue;
                struct stat st;
                if (!r->opts.once) {
                        if (fstatat(in->fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                                continue;
                        int64_t age = (int64_t) (now - con_timespec_usec(&st.st_mtim));
                        if (S_ISREG(st.st_mode) && age >= 0 && (uint64_t) age < RESCAN_SETTLE_USEC) {
                                young++;
                                continue;
                        }
                }
                k = item_enqueue(in, de->d_name, r->opts.once ? NULL : &st);
                if (k < 0)
                        log_error("Failed to queue %s/%s: %s", in->path, de->d_name, strerror(-k));
        }
        return young;
}

static void router_rescan(Router *r) {
        unsigned young = 0;
        for (size_t i = 0; i < r->n_inboxes; i++)
                young += inbox_scan(&r->inboxes[i]);
        if (young > 0 && r->settle_timer) {
                uint64_t now;
                (void) sd_event_now(r->event, CLOCK_MONOTONIC, &now);
                (void) sd_event_source_set_time(r->settle_timer, now + RESCAN_SETTLE_USEC + 100 * USEC_PER_MSEC);
                (void) sd_event_source_set_enabled(r->settle_timer, SD_EVENT_ONESHOT);
        }
}

/* A rescan from the event loop, not from inside the caller (which may be walking a queue). */
static void router_rescan_soon(Router *r) {
        uint64_t now;
        if (!r->settle_timer)
                return;
        (void) sd_event_now(r->event, CLOCK_MONOTONIC, &now);
        (void) sd_event_source_set_time(r->settle_timer, now);
        (void) sd_event_source_set_enabled(r->settle_timer, SD_EVENT_ONESHOT);
}

static int on_inotify(sd_event_source *s, const struct inotify_event *ev, void *userdata) {
        Inbox *in = userdata;
        Router *r = in->router;
        int k;

        switch (router_classify_event(ev->mask, ev->len > 0 ? ev->name : NULL)) {
        case ROUTER_EVENT_IGNORE:
                break;
        case ROUTER_EVENT_CANDIDATE:
                k = item_enqueue(in, ev->name, NULL);
                if (k < 0)
                        log_error("Failed to queue %s/%s: %s", in->path, ev->name, strerror(-k));
                break;
        case ROUTER_EVENT_CREATED: {
                /* A symlink, hard link or FIFO gets no IN_CLOSE_WRITE: reject it now, not on the
                 * next rescan. A regular file being written is taken at its IN_CLOSE_WRITE. */
                struct stat st;
                if (in->fd < 0 || fstatat(in->fd, ev->name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
                    !router_created_is_final(&st))
                        break;
                k = item_enqueue(in, ev->name, &st);
                if (k < 0)
                        log_error("Failed to queue %s/%s: %s", in->path, ev->name, strerror(-k));
                break;
        }
        case ROUTER_EVENT_RESCAN:
                log_warning("Inotify queue overflowed, rescanning the inboxes");
                router_rescan(r);
                break;
        case ROUTER_EVENT_WATCH_GONE:
                log_warning("Inbox %s went away; will look for it again on the next rescan", in->path);
                in->watch = sd_event_source_disable_unref(in->watch);
                in->fd = safe_close(in->fd);
                break;
        }
        return 0;
}

static int on_rescan_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Router *r = userdata;
        router_rescan(r);
        (void) sd_event_source_set_time(s, usec + r->opts.rescan_usec);
        (void) sd_event_source_set_enabled(s, SD_EVENT_ON);
        return 0;
}

static int on_settle_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        router_rescan(userdata);
        return 0;
}

static int on_once_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Router *r = userdata;
        log_error("%" PRIu64 " task(s) could not be delivered in time (agent unavailable?); they stay in the inbox",
                  r->backlog + r->window.in_flight);
        r->exit_status = 1;
        return sd_event_exit(r->event, 1);
}

/* ---- agent signals: quota credits ---- */

static Target *target_by_owner(Router *r, const char *unique) {
        if (!unique)
                return NULL;
        for (size_t i = 0; i < r->n_targets; i++)
                if (streq_ptr(r->targets[i].owner, unique))
                        return &r->targets[i];
        return NULL;
}

static Target *target_by_bus_name(Router *r, const char *name) {
        for (size_t i = 0; i < r->n_targets; i++)
                if (streq(r->targets[i].bus_name, name))
                        return &r->targets[i];
        return NULL;
}

static int target_set_owner(Target *t, const char *owner) {
        char *o = NULL;
        if (!isempty(owner) && !(o = strdup(owner)))
                return -ENOMEM;
        free(t->owner);
        t->owner = o;
        return 0;
}

static int on_name_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Router *r = userdata;
        const char *name, *old, *new;
        if (sd_bus_message_read(m, "sss", &name, &old, &new) < 0)
                return 0;
        Target *t = target_by_bus_name(r, name);
        if (t)
                (void) target_set_owner(t, new);
        return 0;
}

static int on_agent_signal(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Router *r = userdata;
        const char *task_id = NULL, *sender = NULL, *status = NULL;

        /* Only the current owner of a configured agent's name speaks for that agent. The agents
         * audit their own task events (con-agentd); the router only needs to know that a sender
         * held back for its quota has room for one more task. */
        Target *t = target_by_owner(r, sd_bus_message_get_sender(m));
        if (!t || !streq_ptr(sd_bus_message_get_member(m), "TaskCompleted"))
                return 0;
        if (sd_bus_message_read(m, "sss", &task_id, &sender, &status) < 0 || !sender)
                return 0;
        for (size_t i = 0; i < t->n_lanes; i++)
                if (t->lanes[i]->over_quota && streq(t->lanes[i]->user, sender) &&
                    t->lanes[i]->credits < LANE_TRACK_MAX) {
                        t->lanes[i]->credits++;
                        router_kick(r);
                }
        return 0;
}

static int router_watch_agents(Router *r) {
        int k;

        k = sd_bus_match_signal(r->bus, &r->match_owners, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                "org.freedesktop.DBus", "NameOwnerChanged", on_name_owner_changed, r);
        if (k < 0)
                return k;
        k = sd_bus_match_signal(r->bus, &r->match_signals, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, "TaskCompleted",
                                on_agent_signal, r);
        if (k < 0)
                return k;
        for (size_t i = 0; i < r->n_targets; i++) {
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                const char *owner;
                if (sd_bus_call_method(r->bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                       "GetNameOwner", &e, &reply, "s", r->targets[i].bus_name) < 0)
                        continue;
                if (sd_bus_message_read(reply, "s", &owner) >= 0)
                        (void) target_set_owner(&r->targets[i], owner);
        }
        return 0;
}

/* ---- cron, for hosts without systemd ---- */

static int on_cron_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Target *t = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);
        const char *id = NULL;
        if (e) {
                log_warning("Scheduled task for %s was not accepted: %s", t->agent, e->message ?: e->name);
                return 0;
        }
        (void) sd_bus_message_read(m, "s", &id);
        cJSON *f = con_audit_task_fields(id, t->agent, "root");
        audit_record(t->router, "router", "task.scheduled", f);
        return 0;
}

static int cron_arm(Target *t);

static int on_cron(sd_event_source *s, uint64_t usec, void *userdata) {
        Target *t = userdata;
        Router *r = t->router;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_free_ char *id = NULL;
        int k;

        if ((k = con_task_id_new(&id)) < 0 ||
            (k = sd_bus_message_new_method_call(r->bus, &m, t->bus_name, CON_AGENT_PATH, CON_AGENT_INTERFACE,
                                                "Deliver")) < 0 ||
            (k = sd_bus_message_open_container(m, 'a', "{sv}")) < 0 ||
            (k = append_text(m, "text", "s", t->cron_task ?: "/status")) < 0 ||
            (k = append_text(m, "id", "s", id)) < 0 ||
            (k = sd_bus_message_close_container(m)) < 0 ||
            (k = sd_bus_call_async(r->bus, NULL, m, on_cron_reply, t, DELIVER_TIMEOUT_USEC)) < 0)
                log_error("Failed to submit the scheduled task of %s: %s", t->agent, strerror(-k));
        (void) cron_arm(t);
        return 0;
}

static int cron_arm(Target *t) {
        Router *r = t->router;
        time_t next;
        int k;

        k = con_cron_next(&t->cron, time(NULL), false, &next);
        if (k < 0)
                return k;
        uint64_t when = (uint64_t) next * USEC_PER_SEC;
        if (!t->cron_timer) {
                k = sd_event_add_time(r->event, &t->cron_timer, CLOCK_REALTIME, when, USEC_PER_SEC, on_cron, t);
                if (k < 0)
                        return k;
        } else
                (void) sd_event_source_set_time(t->cron_timer, when);
        return sd_event_source_set_enabled(t->cron_timer, SD_EVENT_ONESHOT);
}

/* ---- bus object ---- */

static int method_rescan(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        router_rescan(userdata);
        return sd_bus_reply_method_return(m, NULL);
}

const sd_bus_vtable router_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("Rescan", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_rescan,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("TaskRouted", SD_BUS_ARGS("s", task_id, "s", agent, "s", sender), 0),
        SD_BUS_SIGNAL_WITH_ARGS("TaskRejected", SD_BUS_ARGS("s", file, "s", reason), 0),
        SD_BUS_PROPERTY("Routed", "t", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Rejected", "t", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("InFlight", "u", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Backlog", "u", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_VTABLE_END,
};

/* ---- set-up ---- */

static int router_add_inbox(Router *r, const char *rel, Target *t) {
        Inbox *in = &r->inboxes[r->n_inboxes];
        *in = (Inbox) { .router = r, .target = t, .fd = -EBADF };
        if (!(in->rel = strdup(rel)) || asprintf(&in->path, "%s/%s", r->srv_dir, rel) < 0)
                return -ENOMEM;
        int k = router_inbox_label(rel, &in->label);
        if (k < 0)
                return k;
        r->n_inboxes++;
        return 0;
}

int router_new(const RouterOptions *o, sd_event *event, sd_bus *bus, Router **ret) {
        _cleanup_(router_freep) Router *r = NULL;
        _cleanup_(con_config_error_done) ConConfigError cerr = {};
        int k;

        r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        r->opts = *o;
        r->rejected_fd = -EBADF;
        TAILQ_INIT(&r->in_flight);
        r->window.max = o->window > 0 && o->window < 128 ? o->window : ROUTER_WINDOW_DEFAULT;
        if (r->opts.rescan_usec == 0)
                r->opts.rescan_usec = 30 * USEC_PER_SEC;
        if (r->opts.once_timeout_usec == 0)
                r->opts.once_timeout_usec = 60 * USEC_PER_SEC;
        if (!(r->srv_dir = strdup(o->srv_dir ?: CON_SRV_DIR)))
                return -ENOMEM;
        if (o->audit_dir ? !(r->audit_dir = strdup(o->audit_dir)) : asprintf(&r->audit_dir, "%s/logs/audit", r->srv_dir) < 0)
                return -ENOMEM;
        if (!(r->known = router_map_new()) || !(r->used_ids = router_map_new()))
                return -ENOMEM;

        const char *cpath = o->config_path ?: CON_CONFIG_PATH;
        k = con_config_load(cpath, &r->config, &cerr);
        if (k < 0) {
                _cleanup_free_ char *msg = con_config_error_format(&cerr);
                log_error("Failed to load the configuration: %s", msg ?: strerror(-k));
                return k;
        }
        if (!con_config_find_agent(r->config, ROUTER_OUTER_AGENT))
                log_warning("No agent 'concierge' in %s: files in %s/inbox will wait until one is configured",
                            cpath, r->srv_dir);

        /* One target per configured agent, plus the concierge for the outer inbox. */
        size_t n = r->config->n_agents + 1;
        r->targets = calloc(n, sizeof *r->targets);
        r->inboxes = calloc(n + 1, sizeof *r->inboxes);
        if (!r->targets || !r->inboxes)
                return -ENOMEM;
        Target *concierge = NULL;
        for (size_t i = 0; i < r->config->n_agents; i++) {
                const ConAgent *a = &r->config->agents[i];
                Target *t = &r->targets[r->n_targets];
                t->router = r;
                if (!(t->agent = strdup(a->name)))
                        return -ENOMEM;
                r->n_targets++;
                k = con_agent_bus_name(a->name, &t->bus_name);
                if (k < 0)
                        return k;
                if (streq(a->name, ROUTER_OUTER_AGENT))
                        concierge = t;
                if (a->mode == CON_MODE_CRON && a->cron) {
                        _cleanup_free_ char *cron_err = NULL;
                        k = con_cron_parse(a->cron, &t->cron, &cron_err);
                        if (k < 0)
                                log_warning("Agent %s: cron \"%s\": %s; not scheduling it", a->name, a->cron,
                                            cron_err ?: strerror(-k));
                        else
                                t->has_cron = true;
                        if (a->cron_task && !(t->cron_task = strdup(a->cron_task)))
                                return -ENOMEM;
                }
        }
        if (!concierge) {
                Target *t = &r->targets[r->n_targets++];
                t->router = r;
                if (!(t->agent = strdup(ROUTER_OUTER_AGENT)))
                        return -ENOMEM;
                k = con_agent_bus_name(ROUTER_OUTER_AGENT, &t->bus_name);
                if (k < 0)
                        return k;
                concierge = t;
        }
        k = router_add_inbox(r, "inbox", concierge);
        if (k < 0)
                return k;
        for (size_t i = 0; i < r->config->n_agents; i++) {
                _cleanup_free_ char *rel = NULL;
                if (asprintf(&rel, "agents/%s/inbox", r->targets[i].agent) < 0)
                        return -ENOMEM;
                k = router_add_inbox(r, rel, &r->targets[i]);
                if (k < 0)
                        return k;
        }

        r->event = sd_event_ref(event);
        r->bus = sd_bus_ref(bus);
        k = con_audit_writer_new(r->event, r->audit_dir, &r->audit);
        if (k < 0)
                log_error("Failed to open the audit log in %s, routing without it: %s", r->audit_dir, strerror(-k));
        *ret = TAKE_PTR(r);
        return 0;
}

int router_start(Router *r) {
        int k;

        k = sd_event_add_defer(r->event, &r->dispatch, on_dispatch, r);
        if (k < 0)
                return k;
        (void) sd_event_source_set_enabled(r->dispatch, SD_EVENT_OFF);

        if (!r->opts.once) {
                k = sd_bus_add_object_vtable(r->bus, NULL, CON_ROUTER_PATH, CON_ROUTER_INTERFACE, router_vtable, r);
                if (k < 0)
                        return k;
                k = router_watch_agents(r);
                if (k < 0) {
                        log_error("Failed to subscribe to the agents' signals: %s", strerror(-k));
                        return k;
                }
                k = sd_bus_request_name(r->bus, CON_ROUTER_BUS_NAME, 0);
                if (k < 0) {
                        log_error("Failed to own %s (%s)%s", CON_ROUTER_BUS_NAME, strerror(-k),
                                  k == -EEXIST ? ": another con-routerd is running" :
                                  k == -EACCES ? ": the bus policy lets only root own it" : "");
                        return k;
                }
                k = sd_event_add_time_relative(r->event, &r->rescan_timer, CLOCK_MONOTONIC, r->opts.rescan_usec,
                                               USEC_PER_SEC, on_rescan_timer, r);
                if (k < 0)
                        return k;
                k = sd_event_add_time_relative(r->event, &r->settle_timer, CLOCK_MONOTONIC, RESCAN_SETTLE_USEC,
                                               0, on_settle_timer, r);
                if (k < 0)
                        return k;
                (void) sd_event_source_set_enabled(r->settle_timer, SD_EVENT_OFF);
                k = sd_event_add_time_relative(r->event, &r->props_timer, CLOCK_MONOTONIC, PROPERTIES_COALESCE_USEC,
                                               0, on_props_timer, r);
                if (k < 0)
                        return k;
                (void) sd_event_source_set_enabled(r->props_timer, SD_EVENT_OFF);

                bool cron = r->opts.cron_mode > 0 || (r->opts.cron_mode < 0 && sd_booted() <= 0);
                for (size_t i = 0; cron && i < r->n_targets; i++)
                        if (r->targets[i].has_cron) {
                                k = cron_arm(&r->targets[i]);
                                if (k < 0)
                                        log_warning("Failed to schedule %s: %s", r->targets[i].agent, strerror(-k));
                        }
        } else {
                k = sd_event_add_time_relative(r->event, &r->once_timer, CLOCK_MONOTONIC, r->opts.once_timeout_usec,
                                               0, on_once_timeout, r);
                if (k < 0)
                        return k;
        }
        /* Watches first, then the scan: a file arriving in between is seen at least once. */
        for (size_t i = 0; i < r->n_inboxes; i++) {
                Inbox *in = &r->inboxes[i];
                k = inbox_open(in);
                if (k < 0) {
                        log_warning("Inbox %s is not there yet (%s); looking again on every rescan", in->path,
                                    strerror(-k));
                        continue;
                }
                k = inbox_watch(in);
                if (k < 0)
                        log_warning("Failed to watch %s: %s", in->path, strerror(-k));
        }
        router_rescan(r);
        router_kick(r);
        return 0;
}

int router_stop(Router *r, int loop_result) {
        r->shutting_down = true;
        (void) con_audit_writer_flush(r->audit);
        if (loop_result < 0)
                return loop_result;
        return r->exit_status;
}

int router_introspect_xml(char **ret) {
        return con_bus_introspect_vtable(CON_ROUTER_PATH, CON_ROUTER_INTERFACE, router_vtable, ret);
}

Router *router_free(Router *r) {
        if (!r)
                return NULL;
        r->shutting_down = true;
        for (size_t i = 0; i < r->n_targets; i++)
                for (size_t j = 0; j < r->targets[i].n_lanes; j++) {
                        Lane *l = r->targets[i].lanes[j];
                        Item *it;
                        while ((it = TAILQ_FIRST(&l->queue))) {
                                TAILQ_REMOVE(&l->queue, it, link);
                                item_free(it);
                        }
                }
        Item *it;
        while ((it = TAILQ_FIRST(&r->in_flight))) {
                TAILQ_REMOVE(&r->in_flight, it, link);
                item_free(it);
        }
        for (size_t i = 0; i < r->n_targets; i++) {
                Target *t = &r->targets[i];
                for (size_t j = 0; j < t->n_lanes; j++)
                        lane_free(t->lanes[j]);
                free(t->lanes);
                sd_event_source_disable_unref(t->backoff);
                sd_event_source_disable_unref(t->cron_timer);
                free(t->agent);
                free(t->bus_name);
                free(t->owner);
                free(t->cron_task);
        }
        free(r->targets);
        for (size_t i = 0; i < r->n_inboxes; i++) {
                Inbox *in = &r->inboxes[i];
                sd_event_source_disable_unref(in->watch);
                safe_close(in->fd);
                free(in->rel);
                free(in->path);
                free(in->label);
        }
        free(r->inboxes);
        sd_event_source_disable_unref(r->dispatch);
        sd_event_source_disable_unref(r->rescan_timer);
        sd_event_source_disable_unref(r->settle_timer);
        sd_event_source_disable_unref(r->props_timer);
        sd_event_source_disable_unref(r->once_timer);
        sd_bus_slot_unref(r->match_signals);
        sd_bus_slot_unref(r->match_owners);
        sd_bus_flush_close_unref(r->bus);
        con_audit_writer_free(r->audit);
        sd_event_unref(r->event);
        con_config_free(r->config);
        router_map_free(r->known);
        router_map_free(r->used_ids);
        safe_close(r->rejected_fd);
        free(r->srv_dir);
        free(r->audit_dir);
        free(r);
        return NULL;
}
