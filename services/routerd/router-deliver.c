/* SPDX-License-Identifier: MIT */
/* Files as items in per-sender lanes, the Deliver pipeline, rejects and backoff. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
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
#include "router-internal.h"
#include "router.h"
#include "router-util.h"
#include "spool.h"
#include "strv.h"
#include "task.h"
#include "time-util.h"
#include "user-util.h"


/* ---- items ---- */

static void item_requeue(Item *it, bool front);


Item *router_item_free(Item *it) {
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
        free(it->remote);
        free(it);
        return NULL;
}

/* Forget a file: it was delivered, rejected or is gone. */
static void item_done(Item *it) {
        Router *r = it->router;
        (void) router_map_remove(r->known, it->key);
        router_item_free(it);
        router_props_changed(r);
        router_kick(r);
}

static int on_quota_timer(sd_event_source *s, uint64_t usec, void *userdata);

Lane *router_lane_free(Lane *l) {
        if (!l)
                return NULL;
        sd_event_source_disable_unref(l->quota_timer);
        if (l->over_quota)
                router_quota_watch(l->target->router, false);
        free(l->user);
        free(l);
        return NULL;
}

/* The lane of a sender for a target, created on first use. */
static Lane *target_lane(Target *t, uid_t uid) {

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
        /* Named as the agent names it: the user name, or the decimal uid. */
        if (con_uid_to_name(uid, &l->user) < 0)
                return router_lane_free(l);
        t->lanes[t->n_lanes++] = l;
        return l;
}

/* st: the file's lstat() when the caller has it, else NULL. */
int router_item_enqueue(Inbox *in, const char *name, const struct stat *st) {
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
                router_item_free(it);
                return -ENOMEM;
        }
        k = router_map_put(r->known, key, 0);
        if (k < 0) {
                router_item_free(it);
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
        router_props_changed(it->router);
        router_kick(it->router);
}

int router_rejected_dir_open(Router *r) {
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

        dfd = router_rejected_dir_open(r);
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
void router_item_reject(Item *it, const char *reason) {
        Router *r = it->router;
        Inbox *in = it->inbox;
        _cleanup_free_ char *dest = NULL, *reason_name = NULL, *text = NULL, *file = NULL;
        struct stat st = {};
        int k;

        if (asprintf(&file, "%s/%s", in->path, it->name) < 0) {
                log_error("Out of memory while rejecting %s/%s", in->path, it->name);
                item_done(it);
                return;
        }
        bool have_st = fstatat(in->fd, it->name, &st, AT_SYMLINK_NOFOLLOW) >= 0;
        _cleanup_free_ char *owner_name = NULL;
        if (have_st)
                (void) con_uid_to_name(st.st_uid, &owner_name);
        const char *owner = owner_name ?: "unknown";

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

        log_event(CON_EVENT_TASK_REJECTED, LOG_INFO, &(ConLogFields) { .sender = owner },
                  "Rejected %s: %s (moved to %s/rejected/%s)", file, reason, r->srv_dir, dest);
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
        router_audit(r, "router", "task.rejected", f);
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
        if (!l->over_quota) {
                log_info("Holding back the files of %s for %s in the inbox: %s", l->user, l->target->agent, why);
                l->over_quota = true;
                router_quota_watch(l->target->router, true);
        }
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
        int k;

        it->slot = sd_bus_slot_unref(it->slot);
        TAILQ_REMOVE(&r->in_flight, it, link);
        router_window_release(&r->window);
        router_props_changed(r);

        /* The agent the file went to: the inbox's, or another host's through the mesh gateway. */
        const char *dest = it->remote ?: t->agent;
        e = sd_bus_message_get_error(m);
        if (e) {
                switch (router_classify_reply_error(e->name)) {
                case ROUTER_REPLY_NEW_ID: {
                        /* Another sender holds the id: never drop the file, deliver it again under
                         * the next id (the file stays in the inbox meanwhile). */
                        _cleanup_free_ char *owner = NULL;
                        (void) con_uid_to_name(it->st.st_uid, &owner);
                        cJSON *f = con_audit_task_fields(it->task_id, dest, owner ?: "unknown");
                        if (f)
                                cJSON_AddStringToObject(f, "inbox", it->inbox->path);
                        router_audit(r, "router", "task.id_taken", f);
                        if (++it->id_attempt < ROUTER_ID_ATTEMPTS_MAX) {
                                log_info("Task id %s is taken on agent %s by another sender; delivering %s/%s "
                                         "again under a new id", it->task_id, dest, it->inbox->path, it->name);
                                item_requeue(it, true);
                                return 0;
                        }
                }
                        __attribute__((fallthrough));
                case ROUTER_REPLY_REJECT: {
                        _cleanup_free_ char *reason = NULL;
                        if (asprintf(&reason, "%s %s refused the task: %s",
                                     it->remote ? "the mesh gateway, for" : "agent", dest,
                                     e->message ?: e->name) < 0) {
                                item_done(it);
                                return 0;
                        }
                        router_item_reject(it, reason);
                        return 0;
                }
                case ROUTER_REPLY_SENDER_WAIT:
                        /* Only this sender waits; the file stays in the inbox. */
                        lane_over_quota(it->lane, e->message ?: e->name);
                        item_requeue(it, true);
                        return 0;
                case ROUTER_REPLY_RETRY:
                        if (it->remote) {
                                /* The mesh gateway cannot take it now (not running, no NATS server):
                                 * the file stays in the inbox and the next rescan tries again; the
                                 * inbox's agent is not backed off for it. */
                                log_warning("The mesh gateway cannot take %s/%s for %s now (%s); trying again at "
                                            "the next rescan", it->inbox->path, it->name, it->remote,
                                            e->message ?: e->name);
                                item_done(it);   /* forgotten, not removed: the rescan finds it */
                                return 0;
                        }
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
                        router_quota_watch(r, false);
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
        if (asprintf(&used_key, "%s/%s", dest, id) >= 0) {
                if (router_map_size(r->used_ids) >= USED_IDS_MAX)
                        router_map_clear(r->used_ids);
                (void) router_map_put(r->used_ids, used_key, router_file_identity(&it->st));
        }

        r->routed++;
        /* The lane is this file owner's: its name was looked up once, when the lane was made (a
         * user database read per task costs as much as the rest of the routing). */
        const char *sender = it->lane->user;
        k = sd_bus_emit_signal(r->bus, CON_ROUTER_PATH, CON_ROUTER_INTERFACE, "TaskRouted", "sss", id, dest,
                               sender);
        if (k < 0)
                log_warning("Failed to emit TaskRouted, ignoring: %s", strerror(-k));
        log_event(CON_EVENT_TASK_ROUTED, LOG_INFO, &(ConLogFields) { .task_id = id, .agent = dest, .sender = sender },
                  "Task %s from %s routed to %s", id, sender, dest);
        cJSON *f = con_audit_task_fields(id, dest, sender);
        if (f)
                cJSON_AddStringToObject(f, "inbox", it->inbox->path);
        router_audit(r, "router", "task.routed", f);

        /* A name reused for a new file while this one was in flight: look again. */
        bool again = fstatat(it->inbox->fd, it->name, &st, AT_SYMLINK_NOFOLLOW) >= 0;
        Inbox *in = it->inbox;
        _cleanup_free_ char *name = strdup(it->name);
        item_done(it);
        if (again && name)
                (void) router_item_enqueue(in, name, NULL);
        return 0;
}

/* A file with "to: AGENT@HOST": Submit on the mesh gateway, with the file's owner as the sender
 * (sender_uid, which the gateway takes from root only), the file's task id, priority and
 * deadline. */
static int mesh_submit_message_new(Router *r, const ConTask *task, const Item *it, sd_bus_message **ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int k;

        k = sd_bus_message_new_method_call(r->bus, &m, CON_MESH_BUS_NAME, CON_MESH_PATH, CON_MESH_INTERFACE, "Submit");
        if (k < 0)
                return k;
        k = sd_bus_message_append(m, "ss", task->meta.to, task->text);
        if (k < 0)
                return k;
        k = sd_bus_message_open_container(m, 'a', "{sv}");
        if (k < 0)
                return k;
        if ((k = con_bus_append_entry(m, "id", "s", it->task_id)) < 0 ||
            (k = con_bus_append_entry(m, "priority", "y", (uint8_t) task->meta.priority)) < 0 ||
            (k = con_bus_append_entry(m, "sender_uid", "u", (uint32_t) it->st.st_uid)) < 0)
                return k;
        if (task->meta.deadline_usec > 0 && (k = con_bus_append_entry(m, "deadline", "t", task->meta.deadline_usec)) < 0)
                return k;
        k = sd_bus_message_close_container(m);
        if (k < 0)
                return k;
        *ret = TAKE_PTR(m);
        return 0;
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
        if ((k = con_bus_append_entry(m, "text", "s", task->text)) < 0 ||
            (k = con_bus_append_entry(m, "id", "s", it->task_id)) < 0 ||
            (k = con_bus_append_entry(m, "priority", "y", (uint8_t) task->meta.priority)) < 0 ||
            (k = con_bus_append_entry(m, "sender_uid", "u", (uint32_t) it->st.st_uid)) < 0)
                return k;
        if (task->meta.reply_to && (k = con_bus_append_entry(m, "reply_to", "s", task->meta.reply_to)) < 0)
                return k;
        if (task->meta.deadline_usec > 0 && (k = con_bus_append_entry(m, "deadline", "t", task->meta.deadline_usec)) < 0)
                return k;
        if (task->meta.conversation && (k = con_bus_append_entry(m, "conversation", "s", task->meta.conversation)) < 0)
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
        _cleanup_(con_error_detail_done) ConErrorDetail terr = {};
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
                        router_item_reject(it, con_spool_reject_reason(k));
                        return false;
                case ROUTER_FILE_RETRY:
                        log_warning("Failed to read %s/%s, will retry: %s", it->inbox->path, it->name, strerror(-k));
                        (void) router_map_remove(r->known, it->key);
                        router_item_free(it);
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
                        router_item_free(it);
                        return false;
                } else
                        reason = con_error_detail_format(&terr);
                router_item_reject(it, reason ?: "invalid task file");
                return false;
        }

        /* NAME keeps being the id unless this run already used it for another file, or the agent
         * said another sender holds it (id_attempt > 0). The key is the one item_delivered records:
         * the destination, AGENT@HOST for a to: file. */
        if (it->id_attempt == 0) {
                _cleanup_free_ char *base = NULL;
                uint64_t ident;
                if (con_task_id_from_filename(it->name, &base) >= 0 &&
                    asprintf(&used_key, "%s/%s", task->meta.to ?: t->agent, base) >= 0 &&
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
                router_item_free(it);
                return false;
        }

        free(it->remote);
        it->remote = NULL;
        if (task->meta.to) {
                /* An agent of another host (docs/MULTIHOST.md): what the agents of this host do with
                 * a file (reply-to, conversations) does not cross hosts. */
                const char *why = !r->config->mesh.enabled ? "this host has no mesh: section in con.yaml" :
                                  task->meta.reply_to ? "reply-to is for agents of this host" :
                                  task->meta.conversation ? "conversation is for agents of this host" : NULL;
                if (why) {
                        _cleanup_free_ char *reason = NULL;
                        if (asprintf(&reason, "to: %s names an agent of another host, but %s", task->meta.to,
                                     why) < 0) {
                                (void) router_map_remove(r->known, it->key);
                                router_item_free(it);
                                return false;
                        }
                        router_item_reject(it, reason);
                        return false;
                }
                it->remote = strdup(task->meta.to);
                k = it->remote ? mesh_submit_message_new(r, task, it, &m) : -ENOMEM;
        } else
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

int router_on_dispatch(sd_event_source *s, void *userdata) {
        Router *r = userdata;

        while (!r->shutting_down && r->window.in_flight < r->window.max) {
                Item *it = NULL;
                for (size_t i = 0; i < r->n_targets && !it; i++) {
                        Target *t = r->targets[(r->next_target + i) % r->n_targets];
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
        router_props_changed(r);
        (void) sd_event_source_set_enabled(s, SD_EVENT_OFF);

        if (r->opts.once && r->window.in_flight == 0 && r->backlog == 0)
                (void) sd_event_exit(r->event, 0);
        return 0;
}

void router_kick(Router *r) {
        if (r->dispatch)
                (void) sd_event_source_set_enabled(r->dispatch, SD_EVENT_ONESHOT);
}

static int on_backoff(sd_event_source *s, uint64_t usec, void *userdata) {
        Target *t = userdata;
        t->backing_off = false;
        router_kick(t->router);
        return 0;
}
