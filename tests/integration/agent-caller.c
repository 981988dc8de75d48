/* SPDX-License-Identifier: MIT */
/* Test client for con-agentd on the system bus (tests/integration/test-breach.sh, bench/bench-authz.sh):
 * one connection for many calls, so the service's per-caller caches are exercised.
 *
 *   agent-caller DEST          reads commands from stdin, prints one line each:
 *     submit TEXT              -> "ok ID" | "error NAME MESSAGE"
 *     bench N P TEXT           -> N Submits, P in flight: "bench n=N ok=K seconds=S per_s=R first_ms=F"
 *     flood SECONDS P TEXT     -> Submits for SECONDS, P in flight, as fast as the agent answers:
 *                                 "flood sent=N ok=K refused=R other=O per_s=X" then, when any,
 *                                 "refusal NAME MESSAGE" (the first SenderQuotaExceeded) and
 *                                 "other NAME MESSAGE" (the first other error)
 *     roundtrip SECONDS GAP_MS TEXT -> one task at a time for SECONDS: Submit, then GetResult every
 *                                 5 ms until it has finished; "roundtrip n=N failed=F p50_ms=A
 *                                 p99_ms=B max_ms=C"
 *     name                     -> the client's unique bus name
 *
 * Exits 6 when the bus connection is gone (the bus was restarted): the caller starts a new one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <time.h>

#include "errors.h"
#include "macro.h"
#include "names.h"
#include "time-util.h"

static double now_ms(void) {
        return (double) con_now(CLOCK_MONOTONIC) / 1e3;
}

static unsigned ok, done, refused, other;
static char *first_refusal, *first_other;

static int on_reply(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        done++;
        if (!sd_bus_message_is_method_error(m, NULL)) {
                ok++;
                return 0;
        }
        const sd_bus_error *e = sd_bus_message_get_error(m);
        bool quota = e && e->name && streq(e->name, CON_ERROR_SENDER_QUOTA);
        char **first = quota ? &first_refusal : &first_other;
        if (quota)
                refused++;
        else
                other++;
        if (!*first && e && asprintf(first, "%s %s", strempty(e->name), strempty(e->message)) < 0)
                *first = NULL;
        return 0;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

static int flood(sd_bus *bus, const char *dest, double seconds, unsigned p, const char *text) {
        unsigned sent = 0;
        ok = done = refused = other = 0;
        double t0 = now_ms(), end = t0 + seconds * 1e3;
        while (now_ms() < end || done < sent) {
                while (now_ms() < end && sent - done < p) {
                        if (sd_bus_call_method_async(bus, NULL, dest, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Submit",
                                                     on_reply, NULL, "s", text) < 0)
                                return 3;
                        sent++;
                }
                int r = sd_bus_process(bus, NULL);
                if (r < 0)
                        return 4;
                if (r == 0 && sd_bus_wait(bus, 100 * 1000) < 0)
                        return 5;
        }
        double s = (now_ms() - t0) / 1e3;
        printf("flood sent=%u ok=%u refused=%u other=%u per_s=%.0f\n", sent, ok, refused, other, sent / s);
        if (first_refusal)
                printf("refusal %s\n", first_refusal);
        if (first_other)
                printf("other %s\n", first_other);
        return 0;
}

static int roundtrip(sd_bus *bus, const char *dest, double seconds, unsigned gap_ms, const char *text) {
        double *lat = NULL, t0 = now_ms();
        size_t n = 0;
        unsigned failed = 0;
        while (now_ms() - t0 < seconds * 1e3) {
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                _cleanup_free_ char *id = NULL;
                const char *s;
                double t = now_ms();
                if (sd_bus_call_method(bus, dest, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Submit", &e, &reply, "s",
                                       text) < 0 || sd_bus_message_read(reply, "s", &s) < 0 || !(id = strdup(s))) {
                        failed++;
                        printf("# submit failed: %s %s\n", strempty(e.name), strempty(e.message));
                        continue;
                }
                for (;;) {
                        _cleanup_(sd_bus_error_free) sd_bus_error e2 = SD_BUS_ERROR_NULL;
                        _cleanup_(sd_bus_message_unrefp) sd_bus_message *r2 = NULL;
                        if (sd_bus_call_method(bus, dest, CON_AGENT_PATH, CON_AGENT_INTERFACE, "GetResult", &e2, &r2,
                                               "s", id) >= 0)
                                break;
                        if (!e2.name || !streq(e2.name, CON_ERROR_NOT_FINISHED)) {
                                failed++;
                                printf("# GetResult %s: %s %s\n", id, strempty(e2.name), strempty(e2.message));
                                break;
                        }
                        (void) nanosleep(&(struct timespec) { .tv_nsec = 5 * 1000 * 1000 }, NULL);
                }
                double *nl = realloc(lat, (n + 1) * sizeof *nl);
                if (!nl)
                        return 3;
                lat = nl;
                lat[n++] = now_ms() - t;
                (void) nanosleep(&(struct timespec) { .tv_sec = gap_ms / 1000, .tv_nsec = (gap_ms % 1000) * 1000000L },
                                 NULL);
        }
        if (n > 0)
                qsort(lat, n, sizeof *lat, cmp_double);
        printf("roundtrip n=%zu failed=%u p50_ms=%.1f p99_ms=%.1f max_ms=%.1f\n", n, failed,
               n ? lat[n / 2] : 0.0, n ? lat[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1] : 0.0, n ? lat[n - 1] : 0.0);
        free(lat);
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
                                               "s", line + 7) < 0) {
                                printf("error %s %s\n", e.name, e.message);
                                if (!sd_bus_is_open(bus))
                                        return 6;
                        } else if (sd_bus_message_read(reply, "s", &id) >= 0)
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
                } else if (startswith(line, "flood ")) {
                        double secs;
                        unsigned p;
                        int off = 0;
                        if (sscanf(line + 6, "%lf %u %n", &secs, &p, &off) < 2 || p == 0)
                                return 2;
                        int r = flood(bus, dest, secs, p, line + 6 + off);
                        if (r != 0)
                                return r;
                } else if (startswith(line, "roundtrip ")) {
                        double secs;
                        unsigned gap;
                        int off = 0;
                        if (sscanf(line + 10, "%lf %u %n", &secs, &gap, &off) < 2)
                                return 2;
                        int r = roundtrip(bus, dest, secs, gap, line + 10 + off);
                        if (r != 0)
                                return r;
                } else if (streq(line, "name")) {
                        const char *u;
                        if (sd_bus_get_unique_name(bus, &u) >= 0)
                                printf("%s\n", u);
                } else if (line[0])
                        printf("error unknown-command %s\n", line);
        }
        return 0;
}
