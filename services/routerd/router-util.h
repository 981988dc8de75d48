/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

/* Pure logic of con-routerd: what to do with an inbox event, where a file goes, how long to wait
 * for an agent that is down, how many Deliver calls may be in flight. No bus, no logging. */

/* How the router treats one inotify event of an inbox. */
typedef enum RouterEvent {
        ROUTER_EVENT_IGNORE,            /* not for us: dot-file, temp name, not *.task, directory */
        ROUTER_EVENT_CANDIDATE,         /* a complete *.task file may be there: look at it */
        ROUTER_EVENT_CREATED,           /* a *.task name appeared: look only if it is no file being
                                         * written (router_created_is_final()) */
        ROUTER_EVENT_RESCAN,            /* the kernel queue overflowed: rescan every inbox */
        ROUTER_EVENT_WATCH_GONE,        /* the inbox itself went away or was replaced */
} RouterEvent;

/* mask and name as in struct inotify_event (name may be NULL or empty). Only IN_CLOSE_WRITE and
 * IN_MOVED_TO make a candidate: a file still being written is never taken. IN_CREATE gives
 * ROUTER_EVENT_CREATED: symlinks, hard links, FIFOs and device nodes appear with IN_CREATE alone
 * (no IN_CLOSE_WRITE ever follows), so the router looks at what was created. */
RouterEvent router_classify_event(uint32_t mask, const char *name);

/* For ROUTER_EVENT_CREATED, with the lstat() of the new name: true when no IN_CLOSE_WRITE will
 * come for it (anything but a regular file with one link), so the router takes it now (to reject
 * it). A new regular file with one link is being written: wait for its IN_CLOSE_WRITE. */
bool router_created_is_final(const struct stat *st);

/* What a failed con_spool_read_untrusted() means for the file. */
typedef enum RouterFileVerdict {
        ROUTER_FILE_GONE,               /* someone took it first: forget it */
        ROUTER_FILE_REJECT,             /* bad file: move it aside with a reason */
        ROUTER_FILE_RETRY,              /* a passing problem (out of memory, fds, I/O): try later */
} RouterFileVerdict;
RouterFileVerdict router_classify_open_error(int r);

/* What a Deliver error reply means. */
typedef enum RouterReplyVerdict {
        ROUTER_REPLY_RETRY,             /* the agent is down, starting, busy or halted: back off */
        ROUTER_REPLY_REJECT,            /* the agent refused the task for good: reject the file */
        ROUTER_REPLY_NEW_ID,            /* the id is taken by another task: retry under a fresh id */
        ROUTER_REPLY_SENDER_WAIT,       /* the sender is over its quota at the agent: only its files
                                         * wait (in the inbox) until its tasks finish */
} RouterReplyVerdict;
RouterReplyVerdict router_classify_reply_error(const char *error_name);

/* Exponential backoff for an agent that cannot be reached: 100 ms after the first failure,
 * doubling up to 30 s. failures counts consecutive failures, starting at 1. */
#define ROUTER_BACKOFF_MIN_USEC (100ULL * 1000ULL)
#define ROUTER_BACKOFF_MAX_USEC (30ULL * 1000ULL * 1000ULL)
uint64_t router_backoff_usec(unsigned failures);

/* The in-flight window: the bus allows 128 pending replies per connection, we keep below. */
#define ROUTER_WINDOW_DEFAULT 64
typedef struct RouterWindow {
        unsigned max;
        unsigned in_flight;
} RouterWindow;
static inline bool router_window_try_acquire(RouterWindow *w) {
        if (w->in_flight >= w->max)
                return false;
        w->in_flight++;
        return true;
}
static inline void router_window_release(RouterWindow *w) {
        if (w->in_flight > 0)
                w->in_flight--;
}

/* Target mapping. The outer inbox "SRV/inbox" goes to the concierge, "SRV/agents/X/inbox" to X.
 * rel is the inbox path relative to the spool root ("inbox", "agents/x/inbox").
 * Returns -EINVAL for anything else or an invalid agent name. */
#define ROUTER_OUTER_AGENT "concierge"
int router_inbox_target(const char *rel, char **ret_agent);
/* The label of an inbox in rejected file names and logs: "inbox" or the agent name. */
int router_inbox_label(const char *rel, char **ret_label);

/* Name of a rejected file: "<UTC timestamp>-<label>-<name>", shortened to fit NAME_MAX with room
 * for the ".reason" suffix. Bytes of name that are not printable ASCII become '_', so the name is
 * safe to show. */
int router_rejected_name(uint64_t realtime_usec, const char *label, const char *name, char **ret);

/* The task id for a dropped file, by attempt (each DuplicateTask from the agent moves to the
 * next one):
 *   0  NAME of NAME.task when it is a valid id;
 *   1  "NAME-<16 hex digits of the file's identity>" (inode, change time, size): the same when
 *      the router restarts and delivers the same file again, so the agent drops the duplicate;
 *   2+ "NAME-<16 hex digits of random>", for when another sender holds even that id.
 * "file-..." replaces NAME when NAME is not a valid id (the sequence then starts at the identity
 * form: attempt 0 gives it, 1+ random) or longer than 80 characters. */
#define ROUTER_ID_ATTEMPTS_MAX 8
int router_task_id(const char *filename, const struct stat *st, unsigned attempt, uint64_t random,
                   char **ret);
/* A 64-bit digest of a file's identity (device, inode, change time, size). */
uint64_t router_file_identity(const struct stat *st);

/* A small string-keyed hash map with a 64-bit value, for the set of files known to the router and
 * the ids it has used in this run. */
typedef struct RouterMap RouterMap;
RouterMap *router_map_new(void);
RouterMap *router_map_free(RouterMap *m);
static inline void router_map_freep(RouterMap **m) {
        router_map_free(*m);
}
/* 1 when added, 0 when the key was there (its value is updated), -ENOMEM. */
int router_map_put(RouterMap *m, const char *key, uint64_t value);
/* true when present; *ret_value (if not NULL) receives the value. */
bool router_map_get(const RouterMap *m, const char *key, uint64_t *ret_value);
bool router_map_remove(RouterMap *m, const char *key);
size_t router_map_size(const RouterMap *m);
void router_map_clear(RouterMap *m);
