/* SPDX-License-Identifier: MIT */
/* What a hostile host can make a gateway write (services/meshd/mesh-flood.c, docs/MULTIHOST.md
 * "Floods"): the per-host budget of hostile-message records, and the largest legitimate cancel
 * and state event below MESH_EVENT_MAX. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "mesh-flood.h"
#include "mesh-util.h"
#include "names.h"
#include "task.h"
#include "test-util.h"

#define S 1000000ULL    /* a second in usec */

static void test_budget(void) {
        MeshFlood f = { .interval_usec = 10 * S, .burst = 3 };
        const char *host;
        uint64_t n;

        g_assert_cmpuint(mesh_flood_next_usec(&f), ==, UINT64_MAX);
        /* The first BURST of an interval are recorded, the rest counted. */
        for (int i = 0; i < 3; i++)
                g_assert_cmpint(mesh_flood_note(&f, "host-b", 100 * S + (uint64_t) i), ==, 1);
        for (int i = 0; i < 1000; i++)
                g_assert_cmpint(mesh_flood_note(&f, "host-b", 101 * S), ==, 0);
        /* Another host has its own budget. */
        g_assert_cmpint(mesh_flood_note(&f, "host-c", 105 * S), ==, 1);
        g_assert_cmpuint(mesh_flood_next_usec(&f), ==, 110 * S);
        /* Nothing is due before the interval ends. */
        g_assert_cmpint(mesh_flood_due(&f, 109 * S, &host, &n), ==, 0);
        g_assert_cmpint(mesh_flood_due(&f, 110 * S, &host, &n), ==, 1);
        g_assert_cmpstr(host, ==, "host-b");
        g_assert_cmpuint(n, ==, 1000);
        g_assert_cmpint(mesh_flood_due(&f, 110 * S, &host, &n), ==, 0);
        g_assert_cmpuint(mesh_flood_next_usec(&f), ==, UINT64_MAX);
        /* A new interval: BURST more recorded. */
        for (int i = 0; i < 3; i++)
                g_assert_cmpint(mesh_flood_note(&f, "host-b", 111 * S), ==, 1);
        g_assert_cmpint(mesh_flood_note(&f, "host-b", 111 * S), ==, 0);
        g_assert_cmpint(mesh_flood_note(&f, "host-b", 112 * S), ==, 0);
        /* An event in a later interval rolls the count over; it is due at once. */
        g_assert_cmpint(mesh_flood_note(&f, "host-b", 130 * S), ==, 1);
        g_assert_cmpuint(mesh_flood_next_usec(&f), ==, 0);
        g_assert_cmpint(mesh_flood_due(&f, 130 * S, &host, &n), ==, 1);
        g_assert_cmpstr(host, ==, "host-b");
        g_assert_cmpuint(n, ==, 2);
        g_assert_cmpint(mesh_flood_due(&f, 200 * S, &host, &n), ==, 0);
        mesh_flood_done(&f);
        g_assert_cmpuint(f.n_hosts, ==, 0);
}

static void test_many_hosts(void) {
        MeshFlood f = { .interval_usec = 10 * S, .burst = 1 };
        char name[32];
        const char *host;
        uint64_t n;

        /* MESH_FLOOD_HOSTS_MAX hosts each with a count to report: one more shares "*". */
        for (unsigned i = 0; i < MESH_FLOOD_HOSTS_MAX; i++) {
                snprintf(name, sizeof(name), "h%u", i);
                g_assert_cmpint(mesh_flood_note(&f, name, S), ==, 1);
                g_assert_cmpint(mesh_flood_note(&f, name, S), ==, 0);
        }
        g_assert_cmpint(mesh_flood_note(&f, "late-1", 2 * S), ==, 1);
        g_assert_cmpint(mesh_flood_note(&f, "late-2", 2 * S), ==, 0);
        g_assert_cmpuint(f.n_hosts, ==, MESH_FLOOD_HOSTS_MAX + 1);
        /* Reported, then idle: their places are taken by new hosts, nothing grows. */
        unsigned reported = 0;
        while (mesh_flood_due(&f, 20 * S, &host, &n) == 1)
                reported++;
        g_assert_cmpuint(reported, ==, MESH_FLOOD_HOSTS_MAX + 1);
        for (unsigned i = 0; i < 10; i++) {
                snprintf(name, sizeof(name), "new%u", i);
                g_assert_cmpint(mesh_flood_note(&f, name, 30 * S), ==, 1);
                g_assert_nonnull(strstr(f.hosts[i].host, "new"));
        }
        g_assert_cmpuint(f.n_hosts, ==, MESH_FLOOD_HOSTS_MAX + 1);
        mesh_flood_done(&f);
}

static char *longest(char c, size_t n) {
        char *s = malloc(n + 1);
        g_assert_nonnull(s);
        memset(s, c, n);
        s[n] = 0;
        return s;
}

/* Every field at its longest: the largest events a gateway sends are well below MESH_EVENT_MAX. */
static void test_largest_events(void) {
        _cleanup_free_ char *id = longest('i', CON_TASK_ID_MAX), *host = longest('h', CON_MESH_HOST_MAX),
                            *agent = longest('a', CON_AGENT_NAME_MAX), *user = longest('u', CON_UNIX_NAME_MAX),
                            *from = NULL, *by = NULL, *state = NULL, *cancel = NULL, *subject = NULL;
        g_assert_cmpint(asprintf(&from, "%s@%s", user, host), >, 0);
        by = strdup(from);
        MeshState st = { .id = id, .host = host, .agent = agent, .from = from, .state = (char *) "submitted" };
        g_assert_cmpint(mesh_state_to_json(&st, &state), ==, 0);
        /* The largest cancel is a request to send a result again ("resend": true, by the sender). */
        MeshCancel c = { .id = id, .agent = agent, .from = from, .by = by, .resend = true };
        g_assert_cmpint(mesh_cancel_to_json(&c, &cancel), ==, 0);
        g_test_message("largest state event %zu bytes, cancel %zu bytes", strlen(state), strlen(cancel));
        g_assert_cmpuint(strlen(state), <, MESH_EVENT_MAX / 2);
        g_assert_cmpuint(strlen(cancel), <, MESH_EVENT_MAX / 2);
        /* A state event goes to con-state (MaxMsgSize MESH_EVENT_MAX, headers included) with its
         * message id "<subject>.<from>.<state>" (publish_state) and the gateway's tries header. */
        g_assert_cmpint(mesh_state_subject(host, host, id, &subject), ==, 0);
        size_t headers = strlen("NATS/1.0\r\nNats-Msg-Id: \r\nCon-Tries: 4294967295\r\n\r\n") +
                         strlen(subject) + 1 + strlen(from) + 1 + strlen("submitted");
        g_test_message("... with its headers %zu bytes", strlen(state) + headers);
        g_assert_cmpuint(strlen(state) + headers, <, MESH_EVENT_MAX - 128);
        /* ... and they are read back (the limit is not below them). */
        MeshState st2 = {};
        g_assert_cmpint(mesh_state_from_json(state, strlen(state), &st2), ==, 0);
        mesh_state_done(&st2);
        MeshCancel c2 = {};
        g_assert_cmpint(mesh_cancel_from_json(cancel, strlen(cancel), &c2), ==, 0);
        g_assert_true(c2.resend);
        mesh_cancel_done(&c2);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/mesh-flood/budget", test_budget);
        g_test_add_func("/mesh-flood/many-hosts", test_many_hosts);
        g_test_add_func("/mesh-flood/largest-events", test_largest_events);
        return con_test_run();
}
