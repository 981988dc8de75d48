/* SPDX-License-Identifier: MIT */
/* con_authz_caller_uid() over a private socket pair, no broker: the peer-to-peer path answers at
 * once from the socket's credentials (SO_PEERCRED), without a ConAuthz; a non-method message is
 * refused. The broker path (GetConnectionUnixUser, parked, re-dispatched and kept per unique name)
 * runs in tests/integration/test-authz.sh ("who is calling") and test-modeld.sh. */
#include <sys/socket.h>
#include <unistd.h>

#include "authz.h"
#include "macro.h"
#include "test-util.h"

typedef struct Ctx {
        sd_event *event;
        uint32_t uid;
        int replies;
        char *error;
} Ctx;

static int method_who(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        uid_t uid = (uid_t) -1;
        int r = con_authz_caller_uid(NULL, m, &uid, error);
        if (r <= 0)
                return r < 0 ? r : -EIO;        /* no broker: never parked */
        return sd_bus_reply_method_return(m, "u", (uint32_t) uid);
}

static const sd_bus_vtable vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("Who", "", "u", method_who, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

static int on_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Ctx *c = userdata;
        if (sd_bus_message_is_method_error(reply, NULL))
                c->error = strdup(sd_bus_message_get_error(reply)->message ?: "error");
        else
                g_assert_cmpint(sd_bus_message_read(reply, "u", &c->uid), >=, 0);
        c->replies++;
        return sd_event_exit(c->event, 0);
}

static void test_peer_uid(void) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *server = NULL, *client = NULL;
        int fds[2];
        sd_id128_t id;
        Ctx c = { .uid = 12345 };

        g_assert_cmpint(sd_event_new(&e), >=, 0);
        c.event = e;
        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds), ==, 0);
        g_assert_cmpint(sd_id128_randomize(&id), >=, 0);
        g_assert_cmpint(sd_bus_new(&server), >=, 0);
        g_assert_cmpint(sd_bus_set_fd(server, fds[0], fds[0]), >=, 0);
        g_assert_cmpint(sd_bus_set_server(server, 1, id), >=, 0);
        g_assert_cmpint(sd_bus_set_anonymous(server, true), >=, 0);
        g_assert_cmpint(sd_bus_add_object_vtable(server, NULL, "/t", "org.conspiracy.Test", vtable, NULL), >=, 0);
        g_assert_cmpint(sd_bus_start(server), >=, 0);
        g_assert_cmpint(sd_bus_attach_event(server, e, 0), >=, 0);
        g_assert_cmpint(sd_bus_new(&client), >=, 0);
        g_assert_cmpint(sd_bus_set_fd(client, fds[1], fds[1]), >=, 0);
        g_assert_cmpint(sd_bus_set_anonymous(client, true), >=, 0);
        g_assert_cmpint(sd_bus_start(client), >=, 0);
        g_assert_cmpint(sd_bus_attach_event(client, e, 0), >=, 0);

        g_assert_cmpint(sd_bus_call_method_async(client, NULL, NULL, "/t", "org.conspiracy.Test", "Who", on_reply,
                                                 &c, ""), >=, 0);
        g_assert_cmpint(sd_event_loop(e), >=, 0);
        g_assert_cmpint(c.replies, ==, 1);
        g_assert_null(c.error);
        g_assert_cmpuint(c.uid, ==, geteuid());

        /* Only method calls have a caller. */
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *sig = NULL;
        uid_t uid;
        g_assert_cmpint(sd_bus_message_new_signal(client, &sig, "/t", "org.conspiracy.Test", "S"), >=, 0);
        g_assert_cmpint(con_authz_caller_uid(NULL, sig, &uid, NULL), ==, -EINVAL);
        g_assert_cmpint(con_authz_caller_uid(NULL, NULL, &uid, NULL), ==, -EINVAL);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/authz/caller-uid-peer", test_peer_uid);
        return con_test_run();
}
