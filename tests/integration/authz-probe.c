/* SPDX-License-Identifier: MIT */
/* Test program for bus/runtime/authz.c against the real dbus-daemon and polkitd (tests/integration/test-authz.sh).
 *
 *   authz-probe service --name NAME [--timeout-ms N] [--ttl-ms N] [--root-policy allow|table] [--no-cache]
 *       Owns NAME on the system bus and exports /org/conspiracy/AuthzProbe1 with
 *       Check(s action, s agent, s verb) -> s, gated by con_authz_verify(action, {agent, verb}),
 *       CheckTwo(s action1, s action2, s agent, s verb) -> s, gated by both actions,
 *       Who() -> (u uid, s name): who is calling, from con_authz_caller_uid() and con_uid_to_name(),
 *       WhoThenCheck(s action, s agent, s verb) -> s: Who, then Check, in one handler,
 *       Stats() -> a{st} (the ConAuthzStats counters plus "performed") and Flush().
 *       The root policy "table" allows uid 0 only for verb "root-ok".
 *
 *   authz-probe client [--dest NAME]
 *       Reads commands from stdin, one per line, and prints one result line each:
 *         check ACTION AGENT VERB        -> "allowed MS" | "error NAME MS MESSAGE"
 *         check2 ACTION1 ACTION2 AGENT VERB -> like check, through CheckTwo (both must be allowed)
 *         send ACTION AGENT VERB         -> "sent" (does not wait for the reply)
 *         burst N ACTION AGENT VERB      -> N identical calls in flight: "burst ok=K errors=E"
 *         bench-cached N ACTION AGENT VERB       -> "cached n=N ok=K avg_ms=X"
 *         bench-uncached N P ACTION AGENT        -> N distinct verbs, P in flight: "uncached n=N ok=K
 *                                                   seconds=S per_s=R"
 *         who                            -> "who UID NAME" | "error NAME MS MESSAGE"
 *         whocheck ACTION AGENT VERB     -> like check, through WhoThenCheck
 *         stats                          -> "stats key=value ..."
 *         name                           -> the client's unique bus name
 *         sleep MS / quit */

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>
#include <time.h>
#include <unistd.h>

#include "authz.h"
#include "errors.h"
#include "macro.h"
#include "time-util.h"
#include "user-util.h"

#define PROBE_PATH      "/org/conspiracy/AuthzProbe1"
#define PROBE_INTERFACE "org.conspiracy.AuthzProbe1"

static ConAuthz *authz;
static uint64_t performed;

static double now_ms(void) {
        return (double) con_now(CLOCK_MONOTONIC) / 1e3;
}

/* ---- service ---- */

static int root_table(sd_bus_message *m, const char *action, char * const *details, void *userdata) {
        for (size_t i = 0; details && details[i] && details[i + 1]; i += 2)
                if (streq(details[i], "verb") && streq(details[i + 1], "root-ok"))
                        return 1;
        return 0;
}

static int method_check(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        const char *action, *agent, *verb;
        int r;

        r = sd_bus_message_read(m, "sss", &action, &agent, &verb);
        if (r < 0)
                return r;
        const char *details[] = { "agent", agent, "verb", verb, NULL };
        r = con_authz_verify(authz, m, action, (char * const *) details, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1; /* parked: we are called again */
        performed++;
        return sd_bus_reply_method_return(m, "s", "allowed");
}

/* Who is calling; the handler runs twice when the bus has to be asked. */
static int method_who(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *name = NULL;
        uid_t uid;
        int r = con_authz_caller_uid(authz, m, &uid, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = con_uid_to_name(uid, &name);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, "us", (uint32_t) uid, name);
}

/* Who, then a check, as the agent service does: the check needs no second uid lookup. */
static int method_who_then_check(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        const char *action, *agent, *verb;
        uid_t uid;
        int r;

        r = sd_bus_message_read(m, "sss", &action, &agent, &verb);
        if (r < 0)
                return r;
        r = con_authz_caller_uid(authz, m, &uid, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        const char *details[] = { "agent", agent, "verb", verb, NULL };
        r = con_authz_verify(authz, m, action, (char * const *) details, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        performed++;
        return sd_bus_reply_method_return(m, "s", "allowed");
}

/* Two actions for one message: the handler is parked, re-dispatched, parked again, re-dispatched. */
static int method_check_two(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        const char *action1, *action2, *agent, *verb;
        int r;

        r = sd_bus_message_read(m, "ssss", &action1, &action2, &agent, &verb);
        if (r < 0)
                return r;
        const char *details[] = { "agent", agent, "verb", verb, NULL };
        r = con_authz_verify(authz, m, action1, (char * const *) details, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = con_authz_verify(authz, m, action2, (char * const *) details, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        performed++;
        return sd_bus_reply_method_return(m, "s", "allowed");
}

static int method_stats(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        ConAuthzStats s;
        int r;

        con_authz_get_stats(authz, &s);
        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_append(reply, "a{st}", 19,
                                  "checks_sent", s.checks_sent, "uid_lookups", s.uid_lookups,
                                  "uid_cache_hits", s.uid_cache_hits, "callers_known", (uint64_t) s.callers_known,
                                  "cache_hits", s.cache_hits, "cache_misses", s.cache_misses,
                                  "coalesced", s.coalesced, "allowed", s.allowed, "denied", s.denied,
                                  "timeouts", s.timeouts, "unavailable", s.unavailable, "errors", s.errors,
                                  "dropped", s.dropped, "flushes", s.flushes,
                                  "cache_entries", (uint64_t) s.cache_entries, "pending", (uint64_t) s.pending,
                                  "parked", (uint64_t) s.parked, "watches", (uint64_t) s.watches,
                                  "performed", performed);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_flush(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        con_authz_flush(authz);
        return sd_bus_reply_method_return(m, NULL);
}

static const sd_bus_vtable probe_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("Check", SD_BUS_ARGS("s", action, "s", agent, "s", verb),
                                SD_BUS_RESULT("s", result), method_check, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CheckTwo", SD_BUS_ARGS("s", action1, "s", action2, "s", agent, "s", verb),
                                SD_BUS_RESULT("s", result), method_check_two, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Who", SD_BUS_NO_ARGS, SD_BUS_RESULT("u", uid, "s", name), method_who,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("WhoThenCheck", SD_BUS_ARGS("s", action, "s", agent, "s", verb),
                                SD_BUS_RESULT("s", result), method_who_then_check, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Stats", SD_BUS_NO_ARGS, SD_BUS_RESULT("a{st}", counters), method_stats,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Flush", "", "", method_flush, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

static int run_service(int argc, char *argv[]) {
        static const struct option options[] = {
                { "name", required_argument, NULL, 'n' },
                { "timeout-ms", required_argument, NULL, 't' },
                { "ttl-ms", required_argument, NULL, 'l' },
                { "root-policy", required_argument, NULL, 'r' },
                { "no-cache", no_argument, NULL, 'c' },
                {}
        };
        ConAuthzOptions o = { .root_policy = CON_AUTHZ_ROOT_ASK_TABLE, .root_check = root_table };
        const char *name = "org.conspiracy.AuthzProbe1";
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        sigset_t ss;
        int c, r;

        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case 'n': name = optarg; break;
                case 't': o.timeout_usec = strtoull(optarg, NULL, 10) * USEC_PER_MSEC; break;
                case 'l': o.cache_ttl_usec = strtoull(optarg, NULL, 10) * USEC_PER_MSEC; break;
                case 'r':
                        if (streq(optarg, "allow"))
                                o.root_policy = CON_AUTHZ_ROOT_ALLOW;
                        else if (!streq(optarg, "table")) {
                                fprintf(stderr, "authz-probe: --root-policy must be allow or table\n");
                                return 2;
                        }
                        break;
                case 'c': o.no_cache = true; break;
                default: return 2;
                }

        (void) con_bus_errors_register();
        sigemptyset(&ss);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGINT);
        sigprocmask(SIG_BLOCK, &ss, NULL);

        r = sd_event_default(&event);
        if (r >= 0)
                r = sd_event_add_signal(event, NULL, SIGTERM, NULL, NULL);
        if (r >= 0)
                r = sd_event_add_signal(event, NULL, SIGINT, NULL, NULL);
        if (r >= 0)
                r = sd_bus_open_system(&bus);
        if (r >= 0)
                r = sd_bus_attach_event(bus, event, SD_EVENT_PRIORITY_NORMAL);
        if (r >= 0)
                r = sd_bus_add_object_vtable(bus, NULL, PROBE_PATH, PROBE_INTERFACE, probe_vtable, NULL);
        if (r < 0) {
                fprintf(stderr, "authz-probe: failed to set up the bus: %s\n", strerror(-r));
                return 1;
        }
        r = con_authz_new(bus, event, &o, &authz);
        if (r < 0) {
                fprintf(stderr, "authz-probe: failed to set up authorization: %s\n", strerror(-r));
                return 1;
        }
        r = sd_bus_request_name(bus, name, 0);
        if (r < 0) {
                fprintf(stderr, "authz-probe: failed to own %s: %s\n", name, strerror(-r));
                return 1;
        }
        printf("ready %s\n", name);
        fflush(stdout);
        r = sd_event_loop(event);
        authz = con_authz_free(authz);
        if (r < 0) {
                fprintf(stderr, "authz-probe: event loop failed: %s\n", strerror(-r));
                return 1;
        }
        return 0;
}

/* ---- client ---- */

static const char *dest = "org.conspiracy.AuthzProbe1";

typedef struct Batch {
        unsigned sent, done, ok, errors, total;
        unsigned in_flight, max_in_flight;
        const char *action, *agent, *verb; /* verb NULL: distinct verbs */
        unsigned serial;
} Batch;

static int batch_send(sd_bus *bus, Batch *b);

static int on_batch_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Batch *b = userdata;
        b->done++;
        b->in_flight--;
        if (sd_bus_message_is_method_error(reply, NULL))
                b->errors++;
        else
                b->ok++;
        return batch_send(sd_bus_message_get_bus(reply), b);
}

static int batch_send(sd_bus *bus, Batch *b) {
        while (b->sent < b->total && b->in_flight < b->max_in_flight) {
                char verb[64];
                snprintf(verb, sizeof verb, "b%u-%u-%d", b->serial, b->sent, (int) getpid());
                int r = sd_bus_call_method_async(bus, NULL, dest, PROBE_PATH, PROBE_INTERFACE, "Check",
                                                 on_batch_reply, b, "sss", b->action, b->agent,
                                                 b->verb ?: verb);
                if (r < 0)
                        return r;
                b->sent++;
                b->in_flight++;
        }
        return 0;
}

static int batch_run(sd_bus *bus, Batch *b) {
        static unsigned serial;
        b->serial = ++serial;
        int r = batch_send(bus, b);
        while (r >= 0 && b->done < b->total) {
                r = sd_bus_process(bus, NULL);
                if (r == 0)
                        r = sd_bus_wait(bus, UINT64_MAX);
        }
        return r;
}

static void print_stats(sd_bus *bus) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *k;
        uint64_t v;
        int r;

        r = sd_bus_call_method(bus, dest, PROBE_PATH, PROBE_INTERFACE, "Stats", &e, &reply, "");
        if (r < 0) {
                printf("error %s 0 %s\n", e.name, e.message);
                return;
        }
        printf("stats");
        r = sd_bus_message_enter_container(reply, 'a', "{st}");
        while (r >= 0 && (r = sd_bus_message_read(reply, "{st}", &k, &v)) > 0)
                printf(" %s=%llu", k, (unsigned long long) v);
        printf("\n");
}

static void print_result(int r, const sd_bus_error *e, double t) {
        if (r < 0)
                printf("error %s %.3f %s\n", e->name ?: "-", t, e->message ?: strerror(-r));
        else
                printf("allowed %.3f\n", t);
}

static void do_check(sd_bus *bus, const char *method, const char *action, const char *agent, const char *verb) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        double t = now_ms();
        int r = sd_bus_call_method(bus, dest, PROBE_PATH, PROBE_INTERFACE, method, &e, &reply, "sss", action,
                                   agent, verb);
        print_result(r, &e, now_ms() - t);
}

static void do_who(sd_bus *bus) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *name;
        uint32_t uid;
        double t = now_ms();
        int r = sd_bus_call_method(bus, dest, PROBE_PATH, PROBE_INTERFACE, "Who", &e, &reply, "");
        if (r >= 0)
                r = sd_bus_message_read(reply, "us", &uid, &name);
        if (r < 0)
                print_result(r, &e, now_ms() - t);
        else
                printf("who %u %s\n", (unsigned) uid, name);
}

static void do_check_two(sd_bus *bus, const char *action1, const char *action2, const char *agent,
                         const char *verb) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        double t = now_ms();
        int r = sd_bus_call_method(bus, dest, PROBE_PATH, PROBE_INTERFACE, "CheckTwo", &e, &reply, "ssss",
                                   action1, action2, agent, verb);
        print_result(r, &e, now_ms() - t);
}

static int run_client(int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        char line[1280], a[256], b[256], c[256], d[256];
        unsigned n, p;
        int r;

        if (argc >= 3 && streq(argv[1], "--dest"))
                dest = argv[2];
        r = sd_bus_open_system(&bus);
        if (r < 0) {
                fprintf(stderr, "authz-probe: failed to connect to the system bus: %s\n", strerror(-r));
                return 1;
        }
        setvbuf(stdout, NULL, _IOLBF, 0);
        while (fgets(line, sizeof line, stdin)) {
                /* "check2" first: the format "check %s" would also match it. */
                if (sscanf(line, "check2 %255s %255s %255s %255s", a, b, c, d) == 4)
                        do_check_two(bus, a, b, c, d);
                else if (sscanf(line, "check %255s %255s %255s", a, b, c) == 3)
                        do_check(bus, "Check", a, b, c);
                else if (sscanf(line, "whocheck %255s %255s %255s", a, b, c) == 3)
                        do_check(bus, "WhoThenCheck", a, b, c);
                else if (streq(line, "who\n"))
                        do_who(bus);
                else if (sscanf(line, "send %255s %255s %255s", a, b, c) == 3) {
                        r = sd_bus_call_method_async(bus, NULL, dest, PROBE_PATH, PROBE_INTERFACE, "Check",
                                                     NULL, NULL, "sss", a, b, c);
                        if (r >= 0)
                                r = sd_bus_flush(bus);
                        printf(r < 0 ? "error send\n" : "sent\n");
                } else if (sscanf(line, "burst %u %255s %255s %255s", &n, a, b, c) == 4) {
                        Batch bt = { .total = n, .max_in_flight = n, .action = a, .agent = b, .verb = c };
                        r = batch_run(bus, &bt);
                        printf("burst ok=%u errors=%u%s\n", bt.ok, bt.errors, r < 0 ? " failed" : "");
                } else if (sscanf(line, "bench-cached %u %255s %255s %255s", &n, a, b, c) == 4) {
                        unsigned ok = 0;
                        double t = now_ms();
                        for (unsigned i = 0; i < n; i++) {
                                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                                if (sd_bus_call_method(bus, dest, PROBE_PATH, PROBE_INTERFACE, "Check", NULL,
                                                       &reply, "sss", a, b, c) >= 0)
                                        ok++;
                        }
                        t = now_ms() - t;
                        printf("cached n=%u ok=%u avg_ms=%.3f\n", n, ok, n ? t / n : 0);
                } else if (sscanf(line, "bench-uncached %u %u %255s %255s", &n, &p, a, b) == 4) {
                        Batch bt = { .total = n, .max_in_flight = p ?: 1, .action = a, .agent = b };
                        double t = now_ms();
                        r = batch_run(bus, &bt);
                        t = (now_ms() - t) / 1e3;
                        printf("uncached n=%u ok=%u seconds=%.3f per_s=%.1f%s\n", n, bt.ok, t,
                               t > 0 ? n / t : 0, r < 0 ? " failed" : "");
                } else if (streq(line, "stats\n"))
                        print_stats(bus);
                else if (streq(line, "name\n")) {
                        const char *u = NULL;
                        (void) sd_bus_get_unique_name(bus, &u);
                        printf("%s\n", strempty(u));
                } else if (sscanf(line, "sleep %u", &n) == 1)
                        usleep(n * 1000);
                else if (streq(line, "quit\n"))
                        break;
                else
                        printf("error unknown-command 0 %s", line);
        }
        return 0;
}

int main(int argc, char *argv[]) {
        if (argc >= 2 && streq(argv[1], "service"))
                return run_service(argc - 1, argv + 1);
        if (argc >= 2 && streq(argv[1], "client"))
                return run_client(argc - 1, argv + 1);
        fprintf(stderr, "usage: authz-probe service|client [OPTIONS] "
                        "(see the comment at the top of authz-probe.c)\n");
        return 2;
}
