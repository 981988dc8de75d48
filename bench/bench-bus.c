/* SPDX-License-Identifier: MIT */
/* Bus-door throughput (bench/bench-bus.sh, docs/PERFORMANCE.md): one client keeping K requests in
 * flight, and the bus's own ceiling measured by the same client against a trivial service. The
 * client uses one connection per 128 requests in flight (dbus-daemon's system bus refuses a 129th
 * pending reply on a connection: max_replies_per_connection), so K=256 is two connections.
 *
 *   bench-bus serve NAME               a trivial sd-bus service: owns NAME, answers
 *                                      org.conspiracy.Bench1.Ping(s) -> s on /org/conspiracy/Bench
 *                                      with its argument; runs until killed
 *   bench-bus calls NAME K N           N Ping calls to NAME, K in flight (a call is in flight
 *                                      until its reply)
 *   bench-bus submit K N TEXT AGENT... N Submits of TEXT, round-robin over the agents, K in flight:
 *                                      a task is in flight from its Submit until its TaskCompleted
 *                                      (the agent replies to Submit once the task is on disk)
 *
 * Prints one line: "bench-bus MODE targets=T k=K n=N ok=OK seconds=S per_s=R p50_ms=A p99_ms=B"
 * and for submit also "ack_p50_ms= ack_p99_ms=" (Submit -> its reply, the durable accept); the
 * p50/p99 are Submit -> TaskCompleted for submit, call -> reply for calls. Exit 1 when a request
 * failed or a task did not complete within 60 s of the last progress. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "names.h"
#include "time-util.h"

#define BENCH_PATH "/org/conspiracy/Bench"
#define BENCH_INTERFACE "org.conspiracy.Bench1"
#define STALL_USEC (60 * USEC_PER_SEC)
#define PER_CONNECTION 128
#define CONNECTIONS_MAX 64

typedef struct Req {
        uint64_t sent, acked, completed;
        char *id;               /* the task id (submit) */
        unsigned conn;
        bool done;
} Req;

typedef struct Bench Bench;

typedef struct Conn {
        Bench *bench;
        sd_bus *bus;
        unsigned idx, in_flight;
} Conn;

struct Bench {
        sd_event *event;
        Conn conns[CONNECTIONS_MAX];
        unsigned n_conns, per_conn;
        bool submit;
        char **dest;            /* bus names */
        size_t n_dest;
        const char *text;
        unsigned k, n;
        unsigned next, in_flight, n_done, n_failed;
        Req *req;
        /* id -> request, open addressing (submit) */
        Req **slots;
        size_t n_slots;
        uint64_t last_progress;
};

static uint64_t hash_str(const char *s) {
        uint64_t h = 1469598103934665603ULL;
        for (; *s; s++)
                h = (h ^ (uint8_t) *s) * 1099511628211ULL;
        return h;
}

static void id_put(Bench *b, Req *r) {
        size_t i = hash_str(r->id) & (b->n_slots - 1);
        while (b->slots[i])
                i = (i + 1) & (b->n_slots - 1);
        b->slots[i] = r;
}

static Req *id_get(Bench *b, const char *id) {
        size_t i = hash_str(id) & (b->n_slots - 1);
        for (; b->slots[i]; i = (i + 1) & (b->n_slots - 1))
                if (streq(b->slots[i]->id, id))
                        return b->slots[i];
        return NULL;
}

static void req_finish(Bench *b, Req *r, uint64_t now) {
        if (r->done)
                return;
        r->done = true;
        r->completed = now;
        b->in_flight--;
        b->conns[r->conn].in_flight--;
        b->n_done++;
        b->last_progress = now;
}

static Bench *the_bench; /* the replies' slot userdata is the request */

static int fill(Bench *b);

static int on_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Bench *b = the_bench;
        Req *r = userdata;
        uint64_t now = con_now(CLOCK_MONOTONIC);
        const char *id;

        r->acked = now;
        if (sd_bus_message_is_method_error(m, NULL)) {
                const sd_bus_error *e = sd_bus_message_get_error(m);
                if (b->n_failed++ == 0)
                        fprintf(stderr, "bench-bus: request failed: %s %s\n", e ? strempty(e->name) : "",
                                e ? strempty(e->message) : "");
                req_finish(b, r, now);
                return fill(b);
        }
        if (!b->submit) {
                req_finish(b, r, now);
                return fill(b);
        }
        if (sd_bus_message_read(m, "s", &id) < 0 || !(r->id = strdup(id)))
                return -ENOMEM;
        /* The agent sends its reply before the task's signals, and the bus keeps one sender's
         * messages in order: the TaskCompleted of this id comes after this. */
        id_put(b, r);
        return 0;
}

static int on_completed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Conn *c = userdata;
        Bench *b = c->bench;
        const char *id;
        Req *r;

        /* Only the signal on the connection that sent the Submit is ordered after its reply. */
        if (sd_bus_message_read(m, "s", &id) < 0 || !(r = id_get(b, id)) || r->conn != c->idx)
                return 0;
        req_finish(b, r, con_now(CLOCK_MONOTONIC));
        return fill(b);
}

static int fill(Bench *b) {
        while (b->in_flight < b->k && b->next < b->n) {
                Req *r = &b->req[b->next];
                const char *dest = b->dest[b->next % b->n_dest];
                Conn *c = NULL;
                int k;

                for (unsigned i = 0; i < b->n_conns && !c; i++) {
                        Conn *x = &b->conns[(b->next + i) % b->n_conns];
                        if (x->in_flight < b->per_conn)
                                c = x;
                }
                if (!c)
                        return 0;
                r->conn = c->idx;
                r->sent = con_now(CLOCK_MONOTONIC);
                if (b->submit)
                        k = sd_bus_call_method_async(c->bus, NULL, dest, CON_AGENT_PATH, CON_AGENT_INTERFACE,
                                                     "Submit", on_reply, r, "s", b->text);
                else
                        k = sd_bus_call_method_async(c->bus, NULL, dest, BENCH_PATH, BENCH_INTERFACE, "Ping",
                                                     on_reply, r, "s", "ping");
                if (k < 0)
                        return k;
                b->next++;
                b->in_flight++;
                c->in_flight++;
        }
        return 0;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

static double pct_ms(uint64_t *v, size_t n, double p) {
        size_t i = (size_t) ((double) n * p);
        return (double) v[i < n ? i : n - 1] / 1e3;
}

static int run(Bench *b, const char *mode) {
        int k;

        b->req = calloc(b->n, sizeof(Req));
        if (!b->req)
                return -ENOMEM;
        if (b->submit) {
                for (b->n_slots = 64; b->n_slots < 2 * (size_t) b->n; b->n_slots *= 2)
                        ;
                b->slots = calloc(b->n_slots, sizeof(Req *));
                if (!b->slots)
                        return -ENOMEM;
                for (unsigned c = 0; c < b->n_conns; c++)
                        for (size_t i = 0; i < b->n_dest; i++) {
                                k = sd_bus_match_signal(b->conns[c].bus, NULL, b->dest[i], CON_AGENT_PATH,
                                                        CON_AGENT_INTERFACE, "TaskCompleted", on_completed,
                                                        &b->conns[c]);
                                if (k < 0)
                                        return k;
                        }
        }
        the_bench = b;
        uint64_t t0 = con_now(CLOCK_MONOTONIC);
        b->last_progress = t0;
        k = fill(b);
        if (k < 0)
                return k;
        while (b->n_done < b->n) {
                k = sd_event_run(b->event, USEC_PER_SEC);
                if (k < 0)
                        return k;
                if (con_now(CLOCK_MONOTONIC) - b->last_progress > STALL_USEC) {
                        fprintf(stderr, "bench-bus: no progress for 60 s (%u of %u done)\n", b->n_done, b->n);
                        return -ETIMEDOUT;
                }
        }
        uint64_t t1 = 0;
        _cleanup_free_ uint64_t *lat = calloc(b->n, sizeof(uint64_t)), *ack = calloc(b->n, sizeof(uint64_t));
        if (!lat || !ack)
                return -ENOMEM;
        for (unsigned i = 0; i < b->n; i++) {
                Req *r = &b->req[i];
                t1 = r->completed > t1 ? r->completed : t1;
                lat[i] = r->completed - r->sent;
                ack[i] = (r->acked ?: r->completed) - r->sent;
        }
        qsort(lat, b->n, sizeof(uint64_t), cmp_u64);
        qsort(ack, b->n, sizeof(uint64_t), cmp_u64);
        double s = (double) (t1 - t0) / 1e6;
        printf("bench-bus %s targets=%zu k=%u conns=%u n=%u ok=%u seconds=%.3f per_s=%.0f p50_ms=%.3f p99_ms=%.3f",
               mode, b->n_dest, b->k, b->n_conns, b->n, b->n - b->n_failed, s, b->n / s, pct_ms(lat, b->n, 0.5),
               pct_ms(lat, b->n, 0.99));
        if (b->submit)
                printf(" ack_p50_ms=%.3f ack_p99_ms=%.3f", pct_ms(ack, b->n, 0.5), pct_ms(ack, b->n, 0.99));
        printf("\n");
        return b->n_failed > 0 ? -EIO : 0;
}

static int method_ping(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        const char *s;
        int k = sd_bus_message_read(m, "s", &s);
        if (k < 0)
                return k;
        return sd_bus_reply_method_return(m, "s", s);
}

static const sd_bus_vtable bench_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("Ping", "s", "s", method_ping, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

static int serve(const char *name) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int k;

        if ((k = sd_event_default(&e)) < 0 || (k = sd_bus_open_system(&bus)) < 0 ||
            (k = sd_bus_add_object_vtable(bus, NULL, BENCH_PATH, BENCH_INTERFACE, bench_vtable, NULL)) < 0 ||
            (k = sd_bus_request_name(bus, name, 0)) < 0 || (k = sd_bus_attach_event(bus, e, 0)) < 0)
                return k;
        return sd_event_loop(e);
}

static int usage(void) {
        fprintf(stderr, "usage: bench-bus serve NAME | calls NAME K N | submit K N TEXT AGENT...\n");
        return 2;
}

int main(int argc, char *argv[]) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        Bench b = {};
        int k;

        if (argc == 3 && streq(argv[1], "serve")) {
                k = serve(argv[2]);
                fprintf(stderr, "bench-bus serve: %s\n", strerror(-k));
                return 1;
        }
        if (argc == 5 && streq(argv[1], "calls")) {
                b.dest = &argv[2];
                b.n_dest = 1;
                b.k = (unsigned) atoi(argv[3]);
                b.n = (unsigned) atoi(argv[4]);
        } else if (argc >= 6 && streq(argv[1], "submit")) {
                b.submit = true;
                b.k = (unsigned) atoi(argv[2]);
                b.n = (unsigned) atoi(argv[3]);
                b.text = argv[4];
                b.n_dest = (size_t) (argc - 5);
                b.dest = calloc(b.n_dest, sizeof(char *));
                if (!b.dest)
                        return 1;
                for (size_t i = 0; i < b.n_dest; i++)
                        if (con_agent_bus_name(argv[5 + i], &b.dest[i]) < 0)
                                return usage();
        } else
                return usage();
        if (b.k == 0 || b.n == 0)
                return usage();
        b.n_conns = (b.k + PER_CONNECTION - 1) / PER_CONNECTION;
        if (b.n_conns > CONNECTIONS_MAX)
                return usage();
        b.per_conn = (b.k + b.n_conns - 1) / b.n_conns;
        k = sd_event_new(&e);
        if (k < 0)
                return 1;
        b.event = e;
        for (unsigned i = 0; i < b.n_conns; i++) {
                b.conns[i] = (Conn) { .bench = &b, .idx = i };
                k = sd_bus_open_system(&b.conns[i].bus);
                if (k >= 0)
                        k = sd_bus_attach_event(b.conns[i].bus, e, 0);
                if (k < 0) {
                        fprintf(stderr, "bench-bus: cannot connect to the system bus: %s\n", strerror(-k));
                        return 1;
                }
        }
        k = run(&b, argv[1]);
        for (unsigned i = 0; i < b.n_conns; i++)
                sd_bus_flush_close_unref(b.conns[i].bus);
        if (k < 0 && k != -EIO)
                fprintf(stderr, "bench-bus: %s\n", strerror(-k));
        return k < 0;
}
