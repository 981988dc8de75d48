/* SPDX-License-Identifier: MIT */
/* Inbox folders: inotify watches, scans, the settle and rescan timers. */
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
#include "fileio.h"
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


/* ---- inboxes ---- */

int router_inbox_open(Inbox *in) {
        if (in->fd >= 0)
                return 0;
        int fd = open(in->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        in->fd = fd;
        return 0;
}

static int on_inotify(sd_event_source *s, const struct inotify_event *ev, void *userdata);

int router_inbox_watch(Inbox *in) {
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
                k = router_inbox_open(in);
                if (k < 0) {
                        if (k != -ENOENT)
                                log_warning("Failed to open inbox %s: %s", in->path, strerror(-k));
                        return 0;
                }
                k = router_inbox_watch(in);
                if (k < 0)
                        log_warning("Failed to watch %s: %s", in->path, strerror(-k));
        }
        /* A stream over a duplicate of in->fd, rewound: the last scan left the shared offset at the end. */
        _cleanup_closedir_ DIR *d = NULL;
        if (con_opendir_dup(in->fd, &d) < 0)
                return 0;
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
                k = router_item_enqueue(in, de->d_name, r->opts.once ? NULL : &st);
                if (k < 0)
                        log_error("Failed to queue %s/%s: %s", in->path, de->d_name, strerror(-k));
        }
        return young;
}

void router_rescan(Router *r) {
        unsigned young = 0;
        for (size_t i = 0; i < r->n_inboxes; i++)
                if (!r->inboxes[i]->retired)
                        young += inbox_scan(r->inboxes[i]);
        if (young > 0 && r->settle_timer) {
                uint64_t now;
                (void) sd_event_now(r->event, CLOCK_MONOTONIC, &now);
                (void) sd_event_source_set_time(r->settle_timer, now + RESCAN_SETTLE_USEC + 100 * USEC_PER_MSEC);
                (void) sd_event_source_set_enabled(r->settle_timer, SD_EVENT_ONESHOT);
        }
}

/* A rescan from the event loop, not from inside the caller (which may be walking a queue). */
void router_rescan_soon(Router *r) {
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
                k = router_item_enqueue(in, ev->name, NULL);
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
                k = router_item_enqueue(in, ev->name, &st);
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

int router_on_rescan_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Router *r = userdata;
        router_rescan(r);
        (void) sd_event_source_set_time(s, usec + r->opts.rescan_usec);
        (void) sd_event_source_set_enabled(s, SD_EVENT_ON);
        return 0;
}

int router_on_settle_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        router_rescan(userdata);
        return 0;
}

int router_on_once_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Router *r = userdata;
        log_error("%" PRIu64 " task(s) could not be delivered in time (agent unavailable?); they stay in the inbox",
                  r->backlog + r->window.in_flight);
        r->exit_status = 1;
        return sd_event_exit(r->event, 1);
}
