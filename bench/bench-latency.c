/* SPDX-License-Identifier: MIT */
/* Submit -> TaskCompleted latency, one task at a time: prints p50, p99 and max in ms.
 *   bench-latency [AGENT | AGENT@HOST] [COUNT] [TEXT] [BURST]
 * AGENT@HOST goes through this host's mesh gateway (org.conspiracy.Mesh1 Submit and its
 * TaskCompleted, docs/MULTIHOST.md), AGENT straight to the agent. With BURST > 0, after the
 * sequential tasks: BURST tasks submitted one after another without waiting for their ends, then
 * every end awaited; prints the tasks/s from the first Submit to the last TaskCompleted. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-bus.h>

#include "macro.h"
#include "names.h"
#include "time-util.h"

typedef struct BurstTask {
        char *id;
        bool ended;
} BurstTask;

static const char *wanted;
static bool done;
static BurstTask *burst_tasks;  /* the burst's tasks, sorted by id once all were submitted */
static unsigned burst_n, burst_left;

static int cmp_burst(const void *a, const void *b) {
        return strcmp(((const BurstTask *) a)->id, ((const BurstTask *) b)->id);
}

/* A TaskCompleted received during the Submit calls waits in the bus's queue until wait_until()
 * dispatches it, by when every id is known and sorted: one lookup per signal, not a scan, so the
 * client's own CPU does not grow with the burst and weigh on the tasks/s. */
static int on_completed(sd_bus_message *m, void *userdata, sd_bus_error *e) {
        const char *id;
        if (sd_bus_message_read(m, "s", &id) < 0)
                return 0;
        if (wanted && streq(id, wanted))
                done = true;
        if (burst_n == 0)
                return 0;
        BurstTask *t = bsearch(&(BurstTask) { .id = (char *) id }, burst_tasks, burst_n, sizeof *burst_tasks,
                               cmp_burst);
        if (t && !t->ended) {
                t->ended = true;
                burst_left--;
        }
        return 0;
}

static int cmp(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

typedef struct Target {
        const char *name, *path, *interface;
        bool mesh;
} Target;

/* Submits TEXT; the new task's id in *ret (allocated). */
static int submit(sd_bus *bus, const Target *t, const char *to, const char *text, char **ret) {
        sd_bus_message *reply = NULL;
        sd_bus_error e = SD_BUS_ERROR_NULL;
        const char *id;
        int r;

        if (t->mesh)
                r = sd_bus_call_method(bus, t->name, t->path, t->interface, "Submit", &e, &reply, "ssa{sv}", to, text,
                                       0);
        else
                r = sd_bus_call_method(bus, t->name, t->path, t->interface, "Submit", &e, &reply, "s", text);
        if (r < 0) {
                fprintf(stderr, "Submit failed: %s\n", e.message ?: strerror(-r));
                sd_bus_error_free(&e);
                return r;
        }
        r = sd_bus_message_read(reply, "s", &id);
        if (r >= 0 && !(*ret = strdup(id)))
                r = -ENOMEM;
        sd_bus_message_unref(reply);
        return r;
}

static int wait_until(sd_bus *bus, bool (*cond)(void)) {
        while (!cond()) {
                int r = sd_bus_process(bus, NULL);
                if (r < 0)
                        return r;
                if (r == 0) {
                        r = sd_bus_wait(bus, 30 * USEC_PER_SEC);
                        if (r < 0)
                                return r;
                        if (r == 0) {
                                fprintf(stderr, "no TaskCompleted for 30 s\n");
                                return -ETIMEDOUT;
                        }
                }
        }
        return 0;
}

static bool one_done(void) {
        return done;
}

static bool burst_done(void) {
        return burst_left == 0;
}

int main(int argc, char *argv[]) {
        const char *to = argc > 1 ? argv[1] : "concierge";
        unsigned n = argc > 2 ? (unsigned) atoi(argv[2]) : 1000;
        const char *text = argc > 3 ? argv[3] : "/ping";
        unsigned burst = argc > 4 ? (unsigned) atoi(argv[4]) : 0;
        _cleanup_free_ char *bn = NULL;
        Target t = { .name = CON_MESH_BUS_NAME, .path = CON_MESH_PATH, .interface = CON_MESH_INTERFACE,
                     .mesh = true };
        sd_bus *bus = NULL;
        int r;

        if (!strchr(to, '@')) {
                if (con_agent_bus_name(to, &bn) < 0)
                        n = 0;
                t = (Target) { .name = bn, .path = CON_AGENT_PATH, .interface = CON_AGENT_INTERFACE };
        }
        if (n == 0) {
                fprintf(stderr, "usage: bench-latency [AGENT | AGENT@HOST] [COUNT] [TEXT] [BURST]\n");
                return 2;
        }
        uint64_t *lat = calloc(n, sizeof *lat);
        burst_tasks = calloc(burst ?: 1, sizeof *burst_tasks);
        if (!lat || !burst_tasks || sd_bus_open_system(&bus) < 0)
                return 1;
        r = sd_bus_match_signal(bus, NULL, t.name, t.path, t.interface, "TaskCompleted", on_completed, NULL);
        if (r < 0)
                return 1;
        for (unsigned i = 0; i < n; i++) {
                _cleanup_free_ char *id = NULL;
                uint64_t t0 = con_now(CLOCK_MONOTONIC);
                done = false;
                if (submit(bus, &t, to, text, &id) < 0)
                        return 1;
                wanted = id;
                if (wait_until(bus, one_done) < 0)
                        return 1;
                wanted = NULL;
                lat[i] = con_now(CLOCK_MONOTONIC) - t0;
        }
        qsort(lat, n, sizeof *lat, cmp);
        printf("%s submit->completed n=%u p50=%.3f ms p99=%.3f ms max=%.3f ms\n", to, n, lat[n / 2] / 1000.0,
               lat[(size_t) (n * 0.99) < n ? (size_t) (n * 0.99) : n - 1] / 1000.0, lat[n - 1] / 1000.0);
        if (burst > 0) {
                uint64_t t0 = con_now(CLOCK_MONOTONIC);
                for (unsigned i = 0; i < burst; i++)
                        if (submit(bus, &t, to, text, &burst_tasks[i].id) < 0)
                                return 1;
                uint64_t t1 = con_now(CLOCK_MONOTONIC);
                qsort(burst_tasks, burst, sizeof *burst_tasks, cmp_burst);
                burst_n = burst_left = burst;
                if (wait_until(bus, burst_done) < 0)
                        return 1;
                uint64_t t2 = con_now(CLOCK_MONOTONIC);
                printf("%s burst n=%u submit=%.0f/s throughput=%.0f tasks/s (first Submit to last TaskCompleted)\n",
                       to, burst, burst * 1e6 / (double) (t1 - t0), burst * 1e6 / (double) (t2 - t0));
        }
        sd_bus_flush_close_unref(bus);
        free(lat);
        for (unsigned i = 0; i < burst_n; i++)
                free(burst_tasks[i].id);
        free(burst_tasks);
        return 0;
}
