/* SPDX-License-Identifier: MIT */
/* Fuzzes the a{sv} argument of org.conspiracy.Agent1.Deliver: the input bytes describe entries
 * (key, variant type, value) that are appended to a real sd-bus message, which is then sealed and
 * read back by agent_deliver_parse(), exactly as the service reads a call. */
/* The checks below are the point of the target (some call the code under test): keep them in
 * every build type. */
#undef NDEBUG
#include <assert.h>
#include <sys/socket.h>
#include <systemd/sd-bus.h>

#include "agent-deliver.h"
#include "macro.h"
#include "names.h"
#include "task.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static sd_bus *fuzz_bus(void) {
        static sd_bus *bus;
        int pair[2];
        if (bus)
                return bus;
        /* A started connection is needed to create messages; nobody ever answers on the other end. */
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0 || sd_bus_new(&bus) < 0 ||
            sd_bus_set_fd(bus, pair[0], pair[0]) < 0 || sd_bus_start(bus) < 0)
                abort();
        return bus;
}

typedef struct Input {
        const uint8_t *p;
        size_t left;
} Input;

static uint8_t take(Input *in) {
        if (in->left == 0)
                return 0;
        in->left--;
        return *in->p++;
}

static char *take_string(Input *in) {
        size_t l = take(in) % 48;
        char *s = malloc(l + 1);
        if (!s)
                abort();
        for (size_t i = 0; i < l; i++) {
                uint8_t c = take(in);
                s[i] = c == 0 || c >= 0x80 ? 'a' + (c % 26) : (char) c; /* D-Bus strings are valid UTF-8 */
        }
        s[l] = 0;
        return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const char * const keys[] = { "text", "id", "priority", "reply_to", "deadline", "sender_uid",
                                              "conversation", "", "colour" };
        static const char types[] = { 's', 'y', 'u', 't', 'b', 'x' };
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(agent_deliver_args_done) AgentDeliverArgs a = {};
        Input in = { data, size };

        if (sd_bus_message_new_method_call(fuzz_bus(), &m, "org.conspiracy.Fuzz", "/org/conspiracy/Agent",
                                           "org.conspiracy.Agent1", "Deliver") < 0)
                abort();
        if (sd_bus_message_open_container(m, 'a', "{sv}") < 0)
                abort();
        unsigned n = take(&in) % 10;
        for (unsigned i = 0; i < n; i++) {
                uint8_t op = take(&in);
                const char *key = keys[op % ELEMENTSOF(keys)];
                char type[2] = { types[(op >> 3) % ELEMENTSOF(types)], 0 };
                _cleanup_free_ char *s = NULL;
                int r;
                if (sd_bus_message_open_container(m, 'e', "sv") < 0 || sd_bus_message_append(m, "s", key) < 0 ||
                    sd_bus_message_open_container(m, 'v', type) < 0)
                        abort();
                switch (type[0]) {
                case 's':
                        s = take_string(&in);
                        r = sd_bus_message_append(m, "s", s);
                        break;
                case 'y':
                        r = sd_bus_message_append(m, "y", take(&in));
                        break;
                case 'u':
                case 'b': {
                        uint32_t u = (uint32_t) take(&in) << 8 | take(&in);
                        r = type[0] == 'b' ? sd_bus_message_append(m, "b", (int) (u & 1))
                                           : sd_bus_message_append(m, "u", u);
                        break;
                }
                default: {
                        uint64_t t = 0;
                        for (int k = 0; k < 8; k++)
                                t = t << 8 | take(&in);
                        r = sd_bus_message_append(m, type, t);
                        break;
                }
                }
                if (r < 0 || sd_bus_message_close_container(m) < 0 || sd_bus_message_close_container(m) < 0)
                        abort();
        }
        if (sd_bus_message_close_container(m) < 0 || sd_bus_message_seal(m, 1, 0) < 0 ||
            sd_bus_message_rewind(m, true) < 0)
                abort();

        int r = agent_deliver_parse(m, &a, &error);
        if (r >= 0) {
                assert(a.text);
                assert(a.priority >= 0 && a.priority <= CON_TASK_PRIORITY_MAX);
                assert(!a.id || con_task_id_valid(a.id));
                assert(!a.reply_to || con_agent_name_valid(a.reply_to));
                assert(!a.conversation || con_conversation_id_valid(a.conversation));
        } else if (r == -EINVAL)
                assert(sd_bus_error_is_set(&error) && error.message);
        return 0;
}
