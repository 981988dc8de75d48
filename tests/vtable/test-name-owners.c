/* SPDX-License-Identifier: MIT */
/* bus/runtime/name-owners.c on a private dbus-daemon (no root needed): owners found at the start
 * and followed through changes, lookups by unique name, names outside the match refused, and the
 * arg0/arg0namespace filter: no NameOwnerChanged of another name reaches the watching connection. */
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "name-owners.h"
#include "test-util.h"

static char *dir, *address;
static pid_t bus_pid;

static void bus_start(void) {
        int pid;
        dir = test_tmpdir_new();
        address = test_bus_daemon_start(dir, &pid);
        bus_pid = (pid_t) pid;
}

static void bus_stop(void) {
        (void) kill(bus_pid, SIGTERM);
        test_tmpdir_remove(dir);
        g_free(dir);
        g_free(address);
}

static sd_bus *connect_bus(void) {
        sd_bus *bus = NULL;
        g_assert_cmpint(sd_bus_new(&bus), >=, 0);
        g_assert_cmpint(sd_bus_set_address(bus, address), >=, 0);
        g_assert_cmpint(sd_bus_set_bus_client(bus, 1), >=, 0);
        g_assert_cmpint(sd_bus_start(bus), >=, 0);
        /* A first call: the Hello is answered, the unique name known. */
        g_assert_cmpint(sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                           "GetId", NULL, NULL, NULL), >=, 0);
        return bus;
}

typedef struct Seen {
        unsigned changes;
        char *last_name, *last_owner;
        unsigned foreign;       /* NameOwnerChanged signals of names the watch does not cover */
        const char *prefix;
} Seen;

static void on_change(ConNameOwners *w, const char *name, const char *owner, void *userdata) {
        Seen *s = userdata;
        s->changes++;
        g_free(s->last_name);
        g_free(s->last_owner);
        s->last_name = g_strdup(name);
        s->last_owner = g_strdup(owner);
}

static int count_foreign(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Seen *s = userdata;
        const char *name;
        if (sd_bus_message_is_signal(m, "org.freedesktop.DBus", "NameOwnerChanged") &&
            sd_bus_message_read(m, "s", &name) >= 0 && !g_str_has_prefix(name, s->prefix))
                s->foreign++;
        (void) sd_bus_message_rewind(m, true);
        return 0;
}

/* Runs the watcher's loop until get(name) is want (NULL: no owner), at most 10 s. */
static bool wait_owner(sd_event *e, ConNameOwners *w, const char *name, const char *want) {
        for (unsigned i = 0; i < 1000; i++) {
                if (streq_ptr(con_name_owners_get(w, name), want))
                        return true;
                (void) sd_event_run(e, 10 * USEC_PER_MSEC);
        }
        return false;
}

static void test_namespace(void) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *watcher = NULL, *a = NULL;
        _cleanup_(con_name_owners_freep) ConNameOwners *w = NULL;
        const char *ua;
        Seen seen = { .prefix = "org.test" };

        bus_start();
        a = connect_bus();
        g_assert_cmpint(sd_bus_get_unique_name(a, &ua), >=, 0);
        g_assert_cmpint(sd_bus_request_name(a, "org.test.Early", 0), >=, 0);

        g_assert_cmpint(sd_event_new(&e), >=, 0);
        watcher = connect_bus();
        g_assert_cmpint(sd_bus_attach_event(watcher, e, 0), >=, 0);
        g_assert_cmpint(sd_bus_add_filter(watcher, NULL, count_foreign, &seen), >=, 0);
        g_assert_cmpint(con_name_owners_new(watcher, "org.test", true, on_change, &seen, &w), ==, 0);
        g_assert_cmpint(con_name_owners_add(w, "org.test.Early"), ==, 0);
        g_assert_cmpint(con_name_owners_add(w, "org.test.Early"), ==, 0);       /* once */
        g_assert_cmpint(con_name_owners_add(w, "org.test.Late"), ==, 0);
        g_assert_cmpint(con_name_owners_add(w, "org.other.X"), ==, -EINVAL);
        g_assert_cmpint(con_name_owners_add(w, "org.testX"), ==, -EINVAL);
        g_assert_cmpint(con_name_owners_add(w, "org.test.a'b"), ==, -EINVAL);

        /* Owned before the watch: found by GetNameOwner. */
        g_assert_true(wait_owner(e, w, "org.test.Early", ua));
        g_assert_cmpuint(seen.changes, ==, 1);
        g_assert_cmpstr(seen.last_owner, ==, ua);
        g_assert_null(con_name_owners_get(w, "org.test.Late"));
        g_assert_null(con_name_owners_get(w, "org.test.Unwatched"));

        /* Changes: taken, then released. */
        g_assert_cmpint(sd_bus_request_name(a, "org.test.Late", 0), >=, 0);
        g_assert_true(wait_owner(e, w, "org.test.Late", ua));
        g_assert_cmpstr(seen.last_name, ==, "org.test.Late");
        g_assert_nonnull(con_name_owners_name_of(w, ua));
        g_assert_null(con_name_owners_name_of(w, ":1.99999"));

        /* Noise the watcher must not be woken for: other names, connections coming and going. */
        for (unsigned i = 0; i < 5; i++) {
                _cleanup_(sd_bus_flush_close_unrefp) sd_bus *b = connect_bus();
                g_assert_cmpint(sd_bus_request_name(b, "org.other.Noise", 0), >=, 0);
                g_assert_cmpint(sd_bus_release_name(b, "org.other.Noise"), >=, 0);
        }
        g_assert_cmpint(sd_bus_release_name(a, "org.test.Late"), >=, 0);
        g_assert_true(wait_owner(e, w, "org.test.Late", NULL));        /* after the noise, in order */
        g_assert_null(seen.last_owner);
        g_assert_cmpuint(seen.changes, ==, 3);
        g_assert_cmpuint(seen.foreign, ==, 0);
        g_assert_cmpstr(con_name_owners_name_of(w, ua), ==, "org.test.Early");

        /* One name only (arg0): a name beside it is refused. */
        _cleanup_(con_name_owners_freep) ConNameOwners *one = NULL;
        g_assert_cmpint(con_name_owners_new(watcher, "org.test.Early", false, NULL, NULL, &one), ==, 0);
        g_assert_cmpint(con_name_owners_add(one, "org.test.Early.Sub"), ==, -EINVAL);
        g_assert_cmpint(con_name_owners_add(one, "org.test.Early"), ==, 0);
        g_assert_true(wait_owner(e, one, "org.test.Early", ua));
        g_assert_cmpint(con_name_owners_new(watcher, "bad'name", false, NULL, NULL, &one), ==, -EINVAL);

        g_free(seen.last_name);
        g_free(seen.last_owner);
        w = con_name_owners_free(w);
        one = con_name_owners_free(one);
        watcher = sd_bus_flush_close_unref(watcher);
        a = sd_bus_flush_close_unref(a);
        bus_stop();
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        if (access("/usr/bin/dbus-daemon", X_OK) < 0) {
                g_print("dbus-daemon is not installed; skipping\n");
                return 77;
        }
        g_test_add_func("/name-owners/namespace", test_namespace);
        return con_test_run();
}
