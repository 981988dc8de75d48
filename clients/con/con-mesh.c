/* SPDX-License-Identifier: MIT */
/* con mesh status: the hosts of the mesh, their streams' depth and lag, from this host's gateway
 * (GetStatus on org.conspiracy.Mesh1, docs/MULTIHOST.md). */
#include <errno.h>
#include <inttypes.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>

#include <cJSON.h>

#include "bus-util.h"
#include "con.h"
#include "json-util.h"
#include "macro.h"
#include "names.h"
#include "time-util.h"

typedef struct StreamRow {
        const char *name, *host, *kind;
        uint64_t messages, bytes, oldest_usec, pending, ack_pending, redelivered;
        int consumer;
} StreamRow;

typedef struct HostRow {
        const char *host;
        const StreamRow *task, *result;
} HostRow;

/* ALL: also the credentials' subcommands (con mesh --help; not con mesh status --help). */
static void mesh_help(FILE *f, bool all) {
        fputs("Usage: con mesh status [--json]\n", f);
        if (all)
                con_mesh_pki_help(f);
        fputs("\n"
              "The mesh of hosts as this host's gateway (con-meshd) and JetStream see it: the NATS\n"
              "server it is connected to, and for each host with a stream (the hosts that joined, and\n"
              "those tasks were sent to): whether its gateway joined, the tasks waiting for it (the\n"
              "depth of con-task-HOST), the age of the oldest (lag), those given to its gateway\n"
              "and not yet acknowledged, and the results waiting for it (con-result-HOST). Then the\n"
              "tasks between any two hosts (the stream con-state: id, sender USER@HOST, AGENT@HOST,\n"
              "state, age), not ended or ended in the last 10 minutes; root sees all, anyone else the\n"
              "tasks they sent from this host.\n"
              "\n"
              "  --json    one JSON object instead (docs/MULTIHOST.md)\n"
              "\n"
              "Exit status: 0 connected, 1 not connected or no gateway (no mesh: section, fabric down);\n"
              "init, issue, sign, server-config: 0 ok, 1 failure, 2 usage error; streams: 0 every stream\n"
              "the mesh's, 1 not (or an error), 2 usage error.\n",
              f);
}

static void format_age(uint64_t oldest_usec, uint64_t now, char *buf, size_t n) {
        if (oldest_usec == 0) {
                snprintf(buf, n, "-");
                return;
        }
        uint64_t s = now > oldest_usec ? (now - oldest_usec) / USEC_PER_SEC : 0;
        if (s < 120)
                snprintf(buf, n, "%" PRIu64 "s", s);
        else if (s < 2 * 3600)
                snprintf(buf, n, "%" PRIu64 "min", s / 60);
        else if (s < 2 * 86400)
                snprintf(buf, n, "%" PRIu64 "h", s / 3600);
        else
                snprintf(buf, n, "%" PRIu64 "d", s / 86400);
}

static cJSON *stream_json(const StreamRow *r, uint64_t now) {
        cJSON *o = cJSON_CreateObject();
        if (!o)
                return NULL;
        char ts[CON_TIMESTAMP_MAX];
        bool ok = cJSON_AddStringToObject(o, "stream", r->name) && con_json_add_u64(o, "messages", r->messages) &&
                  con_json_add_u64(o, "bytes", r->bytes) &&
                  (r->oldest_usec > 0 && con_format_timestamp(r->oldest_usec, ts) >= 0 ?
                   cJSON_AddStringToObject(o, "oldest", ts) != NULL : cJSON_AddNullToObject(o, "oldest") != NULL) &&
                  con_json_add_u64(o, "lag_sec", r->oldest_usec > 0 && now > r->oldest_usec ?
                                   (now - r->oldest_usec) / USEC_PER_SEC : 0) &&
                  cJSON_AddBoolToObject(o, "consumer", r->consumer) && con_json_add_u64(o, "pending", r->pending) &&
                  con_json_add_u64(o, "ack_pending", r->ack_pending) &&
                  con_json_add_u64(o, "redelivered", r->redelivered);
        if (!ok) {
                cJSON_Delete(o);
                return NULL;
        }
        return o;
}

typedef struct StateRow {
        const char *id, *from, *to, *state;
        uint64_t since_usec, updated_usec;
} StateRow;

static bool state_final(const char *s) {
        return streq(s, "completed") || streq(s, "failed") || streq(s, "canceled");
}

int con_mesh_show_states(sd_bus *bus, cJSON *obj, const char *key, size_t max) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ StateRow *rows = NULL;
        size_t n = 0;
        uint64_t now = con_now(CLOCK_REALTIME);

        int r = sd_bus_call_method(bus, CON_MESH_BUS_NAME, CON_MESH_PATH, CON_MESH_INTERFACE, "ListStates", &e, &reply,
                                   NULL);
        if (r < 0) {
                if (sd_bus_error_has_names(&e, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER)) {
                        if (obj)
                                cJSON_AddNullToObject(obj, key);
                        return 0;
                }
                return r;
        }
        r = sd_bus_message_enter_container(reply, 'a', "(sssstt)");
        while (r >= 0) {
                StateRow row = {};
                r = sd_bus_message_read(reply, "(sssstt)", &row.id, &row.from, &row.to, &row.state, &row.since_usec,
                                        &row.updated_usec);
                if (r <= 0)
                        break;
                if (state_final(row.state) && row.updated_usec + CON_MESH_STATES_RECENT_SEC * USEC_PER_SEC < now)
                        continue;
                StateRow *a = realloc(rows, sizeof(*a) * (n + 1));
                if (!a)
                        return -ENOMEM;
                rows = a;
                rows[n++] = row;
        }
        if (r < 0)
                return r;
        if (obj) {
                cJSON *arr = cJSON_AddArrayToObject(obj, key);
                for (size_t i = 0; arr && i < n; i++) {
                        char since[CON_TIMESTAMP_MAX], updated[CON_TIMESTAMP_MAX];
                        cJSON *o = cJSON_CreateObject();
                        if (!o || !cJSON_AddItemToArray(arr, o))
                                return -ENOMEM;
                        if (con_format_timestamp(rows[i].since_usec, since) < 0 ||
                            con_format_timestamp(rows[i].updated_usec, updated) < 0)
                                since[0] = updated[0] = 0;
                        if (!cJSON_AddStringToObject(o, "task_id", rows[i].id) ||
                            !cJSON_AddStringToObject(o, "from", rows[i].from) ||
                            !cJSON_AddStringToObject(o, "to", rows[i].to) ||
                            !cJSON_AddStringToObject(o, "state", rows[i].state) ||
                            !cJSON_AddStringToObject(o, "since", since) ||
                            !cJSON_AddStringToObject(o, "updated", updated) ||
                            !con_json_add_u64(o, "age_sec", now > rows[i].since_usec ?
                                              (now - rows[i].since_usec) / USEC_PER_SEC : 0))
                                return -ENOMEM;
                }
                return arr ? 0 : -ENOMEM;
        }
        printf("%-36s %-24s %-24s %-10s %s\n", "TASK", "FROM", "TO", "STATE", "AGE");
        /* Newest first: the table is oldest first. */
        size_t shown = 0;
        for (size_t i = n; i > 0 && (max == 0 || shown < max); i--, shown++) {
                char age[32];
                format_age(rows[i - 1].since_usec, now, age, sizeof(age));
                printf("%-36s %-24s %-24s %-10s %s\n", rows[i - 1].id, rows[i - 1].from, rows[i - 1].to,
                       rows[i - 1].state, age);
        }
        if (shown < n)
                printf("... and %zu older (--json lists all)\n", n - shown);
        return 0;
}

static int mesh_status(bool json) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ StreamRow *rows = NULL;
        _cleanup_free_ HostRow *hosts = NULL;
        const char *host = NULL, *server = NULL, *error = NULL;
        uint64_t retention = 0, sent_waiting = 0, running = 0;
        int connected = 0, r;
        size_t n_rows = 0, n_hosts = 0;

        r = sd_bus_open_system(&bus);
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "mesh: cannot connect to the system bus: %s", strerror(-r));
        r = sd_bus_call_method(bus, CON_MESH_BUS_NAME, CON_MESH_PATH, CON_MESH_INTERFACE, "GetStatus", &e, &reply, "");
        if (r < 0) {
                if (sd_bus_error_has_names(&e, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER))
                        return con_fail(CON_EXIT_FAILURE, "mesh: the mesh gateway (%s) is not on the bus: does "
                                        "this host's con.yaml have a mesh: section, and is the fabric up? (see "
                                        "'con status')", CON_MESH_BUS_NAME);
                return con_fail(CON_EXIT_FAILURE, "mesh: GetStatus failed: %s", e.message ?: strerror(-r));
        }

        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                const char *key;
                r = sd_bus_message_read(reply, "s", &key);
                if (r < 0)
                        break;
                if (streq(key, "host"))
                        r = sd_bus_message_read(reply, "v", "s", &host);
                else if (streq(key, "server"))
                        r = sd_bus_message_read(reply, "v", "s", &server);
                else if (streq(key, "error"))
                        r = sd_bus_message_read(reply, "v", "s", &error);
                else if (streq(key, "connected"))
                        r = sd_bus_message_read(reply, "v", "b", &connected);
                else if (streq(key, "retention_usec"))
                        r = sd_bus_message_read(reply, "v", "t", &retention);
                else if (streq(key, "sent_waiting"))
                        r = sd_bus_message_read(reply, "v", "t", &sent_waiting);
                else if (streq(key, "delivered_running"))
                        r = sd_bus_message_read(reply, "v", "t", &running);
                else
                        r = sd_bus_message_skip(reply, "v");
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(reply);
        if (r >= 0)
                r = sd_bus_message_enter_container(reply, 'a', "(ssstttbttt)");
        while (r >= 0) {
                StreamRow s = {};
                r = sd_bus_message_read(reply, "(ssstttbttt)", &s.name, &s.host, &s.kind, &s.messages, &s.bytes,
                                        &s.oldest_usec, &s.consumer, &s.pending, &s.ack_pending, &s.redelivered);
                if (r <= 0)
                        break;
                StreamRow *n = realloc(rows, sizeof(*n) * (n_rows + 1));
                if (!n)
                        return con_fail(CON_EXIT_FAILURE, "mesh: out of memory");
                rows = n;
                rows[n_rows++] = s;
        }
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "mesh: the gateway sent an unreadable GetStatus reply: %s",
                                strerror(-r));

        /* One row per host: its task stream and its result stream. */
        hosts = calloc(n_rows + 1, sizeof(*hosts));
        if (!hosts)
                return con_fail(CON_EXIT_FAILURE, "mesh: out of memory");
        for (size_t i = 0; i < n_rows; i++) {
                HostRow *h = NULL;
                for (size_t k = 0; k < n_hosts && !h; k++)
                        if (streq(hosts[k].host, rows[i].host))
                                h = &hosts[k];
                if (!h) {
                        /* sorted by name, this host first */
                        size_t at = n_hosts;
                        while (at > 0 && !streq(hosts[at - 1].host, strempty(host)) &&
                               (streq(rows[i].host, strempty(host)) || strcmp(hosts[at - 1].host, rows[i].host) > 0))
                                at--;
                        memmove(hosts + at + 1, hosts + at, sizeof(*hosts) * (n_hosts - at));
                        hosts[at] = (HostRow) { .host = rows[i].host };
                        h = &hosts[at];
                        n_hosts++;
                }
                if (streq(rows[i].kind, "task"))
                        h->task = &rows[i];
                else
                        h->result = &rows[i];
        }

        uint64_t now = con_now(CLOCK_REALTIME);
        if (json) {
                _cleanup_(cJSON_Deletep) cJSON *o = cJSON_CreateObject();
                cJSON *a = NULL;
                bool ok = o && cJSON_AddStringToObject(o, "host", strempty(host)) &&
                          cJSON_AddBoolToObject(o, "connected", connected) &&
                          (server ? cJSON_AddStringToObject(o, "server", server) != NULL :
                                    cJSON_AddNullToObject(o, "server") != NULL) &&
                          con_json_add_u64(o, "retention_sec", retention / USEC_PER_SEC) &&
                          con_json_add_u64(o, "sent_waiting", sent_waiting) &&
                          con_json_add_u64(o, "delivered_running", running) &&
                          (!error || cJSON_AddStringToObject(o, "error", error)) &&
                          (a = cJSON_AddArrayToObject(o, "hosts"));
                for (size_t i = 0; ok && i < n_hosts; i++) {
                        cJSON *h = cJSON_CreateObject();
                        ok = h && cJSON_AddItemToArray(a, h) && cJSON_AddStringToObject(h, "host", hosts[i].host) &&
                             cJSON_AddBoolToObject(h, "self", streq(hosts[i].host, strempty(host))) &&
                             cJSON_AddBoolToObject(h, "joined", hosts[i].task && hosts[i].task->consumer);
                        if (ok && hosts[i].task) {
                                cJSON *t = stream_json(hosts[i].task, now);
                                ok = t && cJSON_AddItemToObject(h, "tasks", t);
                        }
                        if (ok && hosts[i].result) {
                                cJSON *t = stream_json(hosts[i].result, now);
                                ok = t && cJSON_AddItemToObject(h, "results", t);
                        }
                }
                r = ok ? con_mesh_show_states(bus, o, "tasks", 0) : -ENOMEM;
                if (r < 0)
                        return con_fail(CON_EXIT_FAILURE, "mesh: ListStates failed: %s", strerror(-r));
                _cleanup_free_ char *s = ok ? cJSON_PrintUnformatted(o) : NULL;
                if (!s)
                        return con_fail(CON_EXIT_FAILURE, "mesh: out of memory");
                puts(s);
                return connected ? CON_EXIT_OK : CON_EXIT_FAILURE;
        }

        uint64_t rs = retention / USEC_PER_SEC;
        printf("mesh: host %s, %s%s, tasks wait at most %" PRIu64 "%s for their host\n", strempty(host),
               connected ? "connected to " : "not connected", connected ? strempty(server) : "",
               rs % 86400 == 0 ? rs / 86400 : rs % 3600 == 0 ? rs / 3600 : rs,
               rs % 86400 == 0 ? "d" : rs % 3600 == 0 ? "h" : "s");
        if (error)
                printf("mesh: JetStream not asked: %s\n", error);
        printf("sent from here, answer not back yet: %" PRIu64 "; accepted here from other hosts, not ended: %" PRIu64
               "\n", sent_waiting, running);
        if (n_hosts > 0)
                printf("\n%-20s %-6s %13s %8s %8s %11s %15s\n", "HOST", "JOINED", "TASKS-WAITING", "LAG",
                       "UNACKED", "REDELIVERED", "RESULTS-WAITING");
        for (size_t i = 0; i < n_hosts; i++) {
                const StreamRow *t = hosts[i].task, *res = hosts[i].result;
                char lag[32], name[80];
                format_age(t ? t->oldest_usec : 0, now, lag, sizeof(lag));
                snprintf(name, sizeof(name), "%s%s", hosts[i].host,
                         streq(hosts[i].host, strempty(host)) ? " (this)" : "");
                printf("%-20s %-6s %13" PRIu64 " %8s %8" PRIu64 " %11" PRIu64 " %15" PRIu64 "\n", name,
                       t && t->consumer ? "yes" : "no", t ? t->messages : 0, lag, t ? t->ack_pending : 0,
                       t ? t->redelivered : 0, res ? res->messages : 0);
        }
        /* The tasks between any two hosts: newest first, the 50 latest (--json: all). */
        printf("\n");
        r = con_mesh_show_states(bus, NULL, NULL, 50);
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "mesh: ListStates failed: %s", strerror(-r));
        return connected ? CON_EXIT_OK : CON_EXIT_FAILURE;
}

int verb_mesh(int argc, char *argv[]) {
        enum { ARG_JSON = 0x100 };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "json", no_argument, NULL, ARG_JSON },
                {}
        };
        bool json = false;
        int c;

        /* The credentials' subcommands have options of their own (con-mesh-pki.c). */
        bool status_only = false;
        for (int i = 1; i < argc; i++)
                if (argv[i][0] != '-') {
                        if (con_mesh_pki_subcommand(argv[i]))
                                return con_mesh_pki(argc, argv);
                        status_only = streq(argv[i], "status");
                        break;
                }
        optind = 1;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        mesh_help(stdout, !status_only);
                        return CON_EXIT_OK;
                case ARG_JSON:
                        json = true;
                        break;
                default:
                        return CON_EXIT_USAGE;
                }
        if (optind >= argc)
                return con_fail(CON_EXIT_USAGE, "mesh: missing subcommand: status, init, issue, sign, server-config or streams (see 'con mesh --help')");
        if (!streq(argv[optind], "status"))
                return con_fail(CON_EXIT_USAGE, "mesh: unknown subcommand '%s' (use status, init, issue, sign, server-config or streams)", argv[optind]);
        if (optind + 1 < argc)
                return con_fail(CON_EXIT_USAGE, "mesh status: unexpected argument '%s'", argv[optind + 1]);
        return mesh_status(json);
}
