/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/socket.h>

#include "bus-util.h"
#include "macro.h"
#include "task.h"

typedef struct IntrospectServer {
        int fd;
        const char *path, *interface;
        const sd_bus_vtable *vtable;
} IntrospectServer;

static void *introspect_server(void *arg) {
        IntrospectServer *s = arg;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        sd_id128_t id = SD_ID128_NULL;
        static const int dummy;

        if (sd_bus_new(&bus) < 0 || sd_bus_set_fd(bus, s->fd, s->fd) < 0 || sd_id128_randomize(&id) < 0 ||
            sd_bus_set_server(bus, 1, id) < 0 || sd_bus_start(bus) < 0 ||
            sd_bus_add_object_vtable(bus, NULL, s->path, s->interface, s->vtable, (void *) &dummy) < 0)
                return NULL;
        for (;;) {
                int r = sd_bus_process(bus, NULL);
                if (r < 0)
                        break;
                if (r == 0 && sd_bus_wait(bus, UINT64_MAX) < 0)
                        break;
        }
        return NULL;
}

int con_bus_introspect_vtable(const char *path, const char *interface, const sd_bus_vtable *vtable,
                              char **ret_xml) {
        int pair[2], r;
        pthread_t th;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0)
                return -errno;
        IntrospectServer s = { .fd = pair[0], .path = path, .interface = interface, .vtable = vtable };
        r = -pthread_create(&th, NULL, introspect_server, &s);
        if (r < 0) {
                safe_close(pair[0]);
                safe_close(pair[1]);
                return r;
        }
        {
                _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
                const char *xml;

                r = sd_bus_new(&bus);
                if (r >= 0)
                        r = sd_bus_set_fd(bus, pair[1], pair[1]);
                if (r < 0)
                        safe_close(pair[1]);
                if (r >= 0)
                        r = sd_bus_start(bus);
                if (r >= 0)
                        r = sd_bus_call_method(bus, NULL, path, "org.freedesktop.DBus.Introspectable",
                                               "Introspect", &error, &reply, NULL);
                if (r >= 0)
                        r = sd_bus_message_read(reply, "s", &xml);
                if (r >= 0 && !(*ret_xml = strdup(xml)))
                        r = -ENOMEM;
        }
        /* Closing our end (above) makes the server see EOF and return. */
        (void) pthread_join(th, NULL);
        return r < 0 ? r : 0;
}

static int on_disconnected(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        if (!sd_bus_message_is_signal(m, "org.freedesktop.DBus.Local", "Disconnected"))
                return 0;
        return sd_event_exit(userdata, -ENOTCONN);
}

int con_bus_exit_on_disconnect(sd_bus *bus) {
        sd_event *e = bus ? sd_bus_get_event(bus) : NULL;
        if (!e)
                return -EINVAL;
        /* The event loop, not the bus's: sd-bus detaches the closed bus from the loop before it
         * hands the synthetic Local.Disconnected signal to the filters (matches on that sender
         * do not fire). The caller's loop outlives its bus connection. */
        return sd_bus_add_filter(bus, NULL, on_disconnected, e);
}

int con_bus_append_entry(sd_bus_message *m, const char *key, const char *type, ...) {
        va_list ap;
        int k;

        k = sd_bus_message_open_container(m, 'e', "sv");
        if (k < 0)
                return k;
        k = sd_bus_message_append(m, "s", key);
        if (k < 0)
                return k;
        k = sd_bus_message_open_container(m, 'v', type);
        if (k < 0)
                return k;
        va_start(ap, type);
        k = sd_bus_message_appendv(m, type, ap);
        va_end(ap);
        if (k < 0)
                return k;
        k = sd_bus_message_close_container(m);
        if (k < 0)
                return k;
        return sd_bus_message_close_container(m);
}

int con_bus_read_task_option(sd_bus_message *m, const char *key, int *priority, uint64_t *deadline_usec,
                             sd_bus_error *error) {
        bool prio = streq(key, "priority");
        const char *want = prio ? "y" : "t", *contents = NULL;
        int r;

        if (!prio && !streq(key, "deadline"))
                return 0;
        r = sd_bus_message_peek_type(m, NULL, &contents);
        if (r < 0)
                return r;
        if (!streq_ptr(contents, want))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Key '%s' must be of type '%s', got '%s'",
                                         key, want, strempty(contents));
        if (!prio) {
                r = sd_bus_message_read(m, "v", "t", deadline_usec);
                return r < 0 ? r : 1;
        }
        uint8_t y = 0;
        r = sd_bus_message_read(m, "v", "y", &y);
        if (r < 0)
                return r;
        if (!con_task_priority_valid(y))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Key 'priority': %u is out of range; "
                                         "allowed are 0 to %d (higher runs first)", y, CON_TASK_PRIORITY_MAX);
        *priority = y;
        return 1;
}

int con_bus_read_result_info(sd_bus_message *m, ConResultInfo *ret) {
        int r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *key;
                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;
                if (streq(key, "truncated"))
                        r = sd_bus_message_read(m, "v", "b", &ret->truncated);
                else if (streq(key, "replaced"))
                        r = sd_bus_message_read(m, "v", "b", &ret->replaced);
                else if (streq(key, "size"))
                        r = sd_bus_message_read(m, "v", "t", &ret->size);
                else if (streq(key, "host"))
                        r = sd_bus_message_read(m, "v", "s", &ret->host);
                else if (streq(key, "agent"))
                        r = sd_bus_message_read(m, "v", "s", &ret->agent);
                else if (streq(key, "state"))
                        r = sd_bus_message_read(m, "v", "s", &ret->state);
                else if (streq(key, "sender"))
                        r = sd_bus_message_read(m, "v", "s", &ret->sender);
                else
                        r = sd_bus_message_skip(m, "v");
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}
