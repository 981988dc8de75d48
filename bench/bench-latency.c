/* SPDX-License-Identifier: MIT */
/* Submit -> TaskCompleted latency, one task at a time: prints p50, p99 and max in ms.
 *   bench-latency [AGENT] [COUNT] [TEXT] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <systemd/sd-bus.h>

#include "macro.h"
#include "names.h"
#include "time-util.h"

static const char *wanted;
static bool done;

static int on_completed(sd_bus_message *m, void *userdata, sd_bus_error *e) {
        const char *id;
        if (sd_bus_message_read(m, "s", &id) >= 0 && wanted && streq(id, wanted))
                done = true;
        return 0;
}

static int cmp(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

int main(int argc, char *argv[]) {
        const char *agent = argc > 1 ? argv[1] : "concierge";
        unsigned n = argc > 2 ? (unsigned) atoi(argv[2]) : 1000;
        const char *text = argc > 3 ? argv[3] : "/ping";
        _cleanup_free_ char *bn = NULL;
        sd_bus *bus = NULL;
        int r;

        if (n == 0 || con_agent_bus_name(agent, &bn) < 0) {
                fprintf(stderr, "usage: bench-latency [AGENT] [COUNT] [TEXT]\n");
                return 2;
        }
        uint64_t *lat = calloc(n, sizeof *lat);
        if (!lat || sd_bus_open_system(&bus) < 0)
                return 1;
        r = sd_bus_match_signal(bus, NULL, bn, CON_AGENT_PATH, CON_AGENT_INTERFACE, "TaskCompleted", on_completed, NULL);
        if (r < 0)
                return 1;
        for (unsigned i = 0; i < n; i++) {
                sd_bus_message *reply = NULL;
                sd_bus_error e = SD_BUS_ERROR_NULL;
                const char *id;
                _cleanup_free_ char *copy = NULL;
                uint64_t t0 = con_now(CLOCK_MONOTONIC);
                done = false;
                r = sd_bus_call_method(bus, bn, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Submit", &e, &reply, "s", text);
                if (r < 0) {
                        fprintf(stderr, "Submit failed: %s\n", e.message ?: strerror(-r));
                        return 1;
                }
                if (sd_bus_message_read(reply, "s", &id) < 0 || !(copy = strdup(id)))
                        return 1;
                wanted = copy;
                sd_bus_message_unref(reply);
                while (!done) {
                        r = sd_bus_process(bus, NULL);
                        if (r < 0)
                                return 1;
                        if (r == 0 && sd_bus_wait(bus, 10 * USEC_PER_SEC) < 0)
                                return 1;
                }
                lat[i] = con_now(CLOCK_MONOTONIC) - t0;
        }
        qsort(lat, n, sizeof *lat, cmp);
        printf("submit->completed n=%u p50=%.3f ms p99=%.3f ms max=%.3f ms\n", n, lat[n / 2] / 1000.0,
               lat[(size_t) (n * 0.99) < n ? (size_t) (n * 0.99) : n - 1] / 1000.0, lat[n - 1] / 1000.0);
        sd_bus_flush_close_unref(bus);
        free(lat);
        return 0;
}
