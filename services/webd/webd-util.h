/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* What an event stream client has not read yet. Events are never dropped from a stream: a
 * client whose backlog would pass max is cut off (*closed), and the page's EventSource
 * reconnects and starts again from the current state (docs/DASHBOARD.md). Pure, no I/O. */
typedef struct WebdBacklog {
        char *buf;
        size_t len, off;                /* unread: buf[off..len) */
        bool closed;
} WebdBacklog;

#define WEBD_BACKLOG_MAX (4 * 1024 * 1024)

/* Appends data[0..n). 0; -ENOBUFS when the backlog would pass max or memory ran out: the backlog
 * is then closed (emptied, refusing everything after) and the caller must end the stream. */
int webd_backlog_append(WebdBacklog *b, const char *data, size_t n, size_t max);

/* Copies up to max unread bytes to buf and returns how many (0: nothing to read). */
size_t webd_backlog_take(WebdBacklog *b, char *buf, size_t max);

void webd_backlog_done(WebdBacklog *b);
