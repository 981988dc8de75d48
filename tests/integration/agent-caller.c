/* SPDX-License-Identifier: MIT */
/* Test client for con-agentd on the system bus (tests/integration/test-breach.sh, bench/bench-authz.sh):
 * one connection for many calls, so the service's per-caller caches are exercised.
 *
 *   agent-caller DEST          reads commands from stdin, prints one line each:
 *     submit TEXT              -> "ok ID" | "error NAME MESSAGE"
 *     bench N P TEXT           -> N Submits, P in flight: "bench n=N ok=K seconds=S per_s=R first_ms=F"
 *     name                     -> the client's unique bus name */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <time.h>

#include "macro.h"
#include "names.h"

static double now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec * 1e3 + (double) ts.tv_nsec / 1e6;
}

static unsigned ok, done;

static int on_reply(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        done++;
        if (!sd_bus_message_is_method_error(m, NULL))
                ok++;
        return 0;
}

int main(int argc, char **argv) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        char line[4096];

        if (argc != 2 || sd_bus_open_system(&bus) < 0)
                return 2;
        const char *dest = argv[1];
        setvbuf(stdout, NULL, _IOLBF, 0);
        while (fgets(line, sizeof(line), stdin)) {
                line[strcspn(line, "\n")] = 0;
                if (startswith(line, "submit ")) {
                        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                        const char *id;
                        if (sd_bus_call_method(bus, dest, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Submit", &e, &reply,
                                               "s", line + 7) < 0)
                                printf("error %s %s\n", e.name, e.message);
                        else if (sd_bus_message_read(reply, "s", &id) >= 0)
                                printf("ok %s\n", id);
                } else if (startswith(line, "bench ")) {
                        unsigned n, p;
                        int off = 0;
                        if (sscanf(line + 6, "%u %u %n", &n, &p, &off) < 2 || p == 0)
                                return 2;
                        const char *text = line + 6 + off;
                        ok = done = 0;
                        double t0 = now_ms(), first = 0;
                        unsigned sent = 0;
                        while (done < n) {
                                while (sent < n && sent - done < p) {
                                        if (sd_bus_call_method_async(bus, NULL, dest, CON_AGENT_PATH,
                                                                     CON_AGENT_INTERFACE, "Submit", on_reply, NULL,
                                                                     "s", text) < 0)
                                                return 3;
                                        sent++;
                                }
                                int r = sd_bus_process(bus, NULL);
                                if (r < 0)
                                        return 4;
                                if (first == 0 && done > 0)
                                        first = now_ms() - t0;
                                if (r == 0 && sd_bus_wait(bus, UINT64_MAX) < 0)
                                        return 5;
                        }
                        double s = (now_ms() - t0) / 1e3;
                        printf("bench n=%u ok=%u seconds=%.3f per_s=%.0f first_ms=%.2f\n", n, ok, s, n / s, first);
                } else if (streq(line, "name")) {
                        const char *u;
                        if (sd_bus_get_unique_name(bus, &u) >= 0)
                                printf("%s\n", u);
                } else if (line[0])
                        printf("error unknown-command %s\n", line);
        }
        return 0;
}
