/* SPDX-License-Identifier: MIT */
#pragma once

#include <inttypes.h>
#include <stdint.h>
#include <time.h>

#include "macro.h"

/* The one clock reader of the tree (as systemd's now()): CLOCK_MONOTONIC for durations,
 * deadlines and timeouts, CLOCK_REALTIME for timestamps people or files see. Code inside an
 * sd-event loop prefers sd_event_now() (one time per iteration) and falls back to this. */

static inline uint64_t con_timespec_usec(const struct timespec *ts) {
        return (uint64_t) ts->tv_sec * USEC_PER_SEC + (uint64_t) ts->tv_nsec / NSEC_PER_USEC;
}

/* Microseconds on clock c. clock_gettime() cannot fail for the clocks used here (a valid id and
 * a valid pointer); should it, 0 is returned rather than garbage. */
static inline uint64_t con_now(clockid_t c) {
        struct timespec ts;

        if (clock_gettime(c, &ts) < 0)
                return 0;
        return con_timespec_usec(&ts);
}

/* A CLOCK_REALTIME time in microseconds as people and files see it, the one format of the tree
 * (the audit log's "ts", the log files' lines): ISO 8601 in UTC with microseconds,
 * "2026-12-06T11:24:49.123456Z". Returns 0, or -ERANGE (buf then holds "") when the time cannot
 * be shown. */
#define CON_TIMESTAMP_MAX 40
int con_format_timestamp(uint64_t usec, char buf[static CON_TIMESTAMP_MAX]);
