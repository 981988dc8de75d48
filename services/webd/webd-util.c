/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "webd-util.h"

static void backlog_close(WebdBacklog *b) {
        free(b->buf);
        *b = (WebdBacklog) { .closed = true };
}

int webd_backlog_append(WebdBacklog *b, const char *data, size_t n, size_t max) {
        if (b->closed)
                return -ENOBUFS;
        if (b->off > 0 && b->off == b->len)
                b->off = b->len = 0;
        if (b->len - b->off + n > max) {
                backlog_close(b);
                return -ENOBUFS;
        }
        if (b->off > 0) {
                /* Reuse what was read rather than keep growing. */
                memmove(b->buf, b->buf + b->off, b->len - b->off);
                b->len -= b->off;
                b->off = 0;
        }
        char *nb = realloc(b->buf, b->len + n);
        if (!nb) {
                backlog_close(b);
                return -ENOBUFS;
        }
        memcpy(nb + b->len, data, n);
        b->buf = nb;
        b->len += n;
        return 0;
}

size_t webd_backlog_take(WebdBacklog *b, char *buf, size_t max) {
        size_t n = b->len - b->off < max ? b->len - b->off : max;
        if (n > 0)
                memcpy(buf, b->buf + b->off, n);
        b->off += n;
        return n;
}

void webd_backlog_done(WebdBacklog *b) {
        free(b->buf);
        *b = (WebdBacklog) {};
}
