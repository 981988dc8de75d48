/* SPDX-License-Identifier: MIT */
/* con-provisiond's bus object on a private dbus-daemon (no root, no polkit needed): the a{sv} spec
 * of CommissionAgent and the options of DecommissionAgent are read strictly (unknown keys, wrong
 * types, keys given twice, bad names, oversized instructions: InvalidSpec naming the field, before
 * any authorisation), and ListAgents and the Agents property show con.yaml's agents and the
 * commissioned ones (drop-ins). */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "errors.h"
#include "macro.h"
#include "names.h"
#include "provisioner.h"
#include "strv.h"
#include "test-util.h"

static char *dir, *address, *cfg;
static pid_t bus_pid;
static sd_event *event;
static sd_bus *service_bus, *client;
static Provisioner *prov;

static sd_bus *connect_bus(void) {
        sd_bus *bus = NULL;
        g_assert_cmpint(sd_bus_new(&bus), >=, 0);
        g_assert_cmpint(sd_bus_set_address(bus, address), >=, 0);
        g_assert_cmpint(sd_bus_set_bus_client(bus, 1), >=, 0);
        g_assert_cmpint(sd_bus_start(bus), >=, 0);
        g_assert_cmpint(sd_bus_attach_event(bus, event, 0), >=, 0);
        return bus;
}

static void setup(void) {
        int pid;
        _cleanup_free_ char *d = NULL, *dropin = NULL;
        dir = test_tmpdir_new();
        address = test_bus_daemon_start(dir, &pid);
        bus_pid = (pid_t) pid;
        cfg = g_strdup_printf("%s/con.yaml", dir);
        d = g_strdup_printf("%s/con.yaml.d", dir);
        dropin = g_strdup_printf("%s/researcher.yaml", d);
        test_write_file(cfg, "agents:\n  - name: concierge\n    tier: operator\n");
        g_assert_cmpint(mkdir(d, 0755), ==, 0);
        test_write_file(dropin, "agents:\n  - name: researcher\n    tier: worker\n");

        g_assert_cmpint(sd_event_new(&event), >=, 0);
        service_bus = connect_bus();
        client = connect_bus();
        ProvisionerOptions o = { .config_path = cfg, .con_path = "/bin/false", .run_dir = dir };
        g_assert_cmpint(provisioner_new(&o, event, service_bus, &prov), ==, 0);
        g_assert_cmpint(provisioner_start(prov), ==, 0);
}

typedef struct Reply {
        bool done;
        char *error_name, *error_message;
        sd_bus_message *m;
} Reply;

static int on_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Reply *r = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);
        r->done = true;
        if (e) {
                r->error_name = g_strdup(e->name);
                r->error_message = g_strdup(e->message);
        } else
                r->m = sd_bus_message_ref(m);
        return 0;
}

static void reply_done(Reply *r) {
        g_free(r->error_name);
        g_free(r->error_message);
        sd_bus_message_unref(r->m);
        *r = (Reply) {};
}

static void call(sd_bus_message *m, Reply *r) {
        *r = (Reply) {};
        g_assert_cmpint(sd_bus_call_async(client, NULL, m, on_reply, r, 10 * USEC_PER_SEC), >=, 0);
        for (unsigned i = 0; i < 2000 && !r->done; i++)
                (void) sd_event_run(event, 10 * USEC_PER_MSEC);
        g_assert_true(r->done);
}

static sd_bus_message *new_call(const char *method) {
        sd_bus_message *m = NULL;
        g_assert_cmpint(sd_bus_message_new_method_call(client, &m, CON_PROVISIONER_BUS_NAME, CON_PROVISIONER_PATH,
                                                       CON_PROVISIONER_INTERFACE, method), >=, 0);
        return m;
}

/* CommissionAgent(name, {key: variant}) refused with InvalidSpec and a message containing want. */
static void assert_invalid(sd_bus_message *m, const char *want) {
        Reply r;
        call(m, &r);
        if (!r.error_name || !streq(r.error_name, CON_ERROR_INVALID_SPEC) || !strstr(r.error_message, want))
                g_error("expected %s with '%s', got %s: %s", CON_ERROR_INVALID_SPEC, want, strempty(r.error_name),
                        strempty(r.error_message));
        reply_done(&r);
        sd_bus_message_unref(m);
}

static void test_spec(void) {
        sd_bus_message *m;

        m = new_call("CommissionAgent");
        g_assert_cmpint(sd_bus_message_append(m, "sa{sv}", "x1", 1, "colour", "s", "red"), >=, 0);
        assert_invalid(m, "'colour': unknown key");

        m = new_call("CommissionAgent");
        g_assert_cmpint(sd_bus_message_append(m, "sa{sv}", "x1", 1, "tier", "u", 3), >=, 0);
        assert_invalid(m, "tier: expected a string (s)");

        m = new_call("CommissionAgent");
        g_assert_cmpint(sd_bus_message_append(m, "sa{sv}", "x1", 1, "roles", "s", "reader"), >=, 0);
        assert_invalid(m, "roles: expected a list of strings (as)");

        m = new_call("CommissionAgent");
        g_assert_cmpint(sd_bus_message_append(m, "sa{sv}", "x1", 2, "tier", "s", "worker", "tier", "s", "officer"), >=, 0);
        assert_invalid(m, "tier: given twice");

        const char *bad[] = { "../x", "X", "provisioner", "a--b", "" };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                m = new_call("CommissionAgent");
                g_assert_cmpint(sd_bus_message_append(m, "sa{sv}", bad[i], 0), >=, 0);
                assert_invalid(m, "is not a valid agent name");
        }

        _cleanup_free_ char *big = g_malloc(CON_AGENT_SPEC_INSTRUCTIONS_MAX + 2);
        memset(big, 'x', CON_AGENT_SPEC_INSTRUCTIONS_MAX + 1);
        big[CON_AGENT_SPEC_INSTRUCTIONS_MAX + 1] = 0;
        m = new_call("CommissionAgent");
        g_assert_cmpint(sd_bus_message_append(m, "sa{sv}", "x1", 1, "instructions", "s", big), >=, 0);
        assert_invalid(m, "instructions: 65537 bytes; at most 65536");

        m = new_call("CommissionAgent");
        g_assert_cmpint(sd_bus_message_append(m, "sa{sv}", "x1", 1, "runner", "s", "exec"), >=, 0);
        assert_invalid(m, "runner: exec is not commissioned through the API");

        m = new_call("DecommissionAgent");
        g_assert_cmpint(sd_bus_message_append(m, "sa{sv}", "researcher", 1, "purge", "b", 1), >=, 0);
        assert_invalid(m, "unknown option; use archive");

        m = new_call("DecommissionAgent");
        g_assert_cmpint(sd_bus_message_append(m, "sa{sv}", "researcher", 1, "archive", "s", "yes"), >=, 0);
        assert_invalid(m, "archive: expected a boolean (b)");
}

static void test_list(void) {
        Reply r;
        sd_bus_message *m = new_call("ListAgents");
        call(m, &r);
        sd_bus_message_unref(m);
        g_assert_null(r.error_name);
        const char *name, *tier, *file;
        int commissioned;
        g_assert_cmpint(sd_bus_message_enter_container(r.m, 'a', "(sssb)"), >=, 0);
        g_assert_cmpint(sd_bus_message_read(r.m, "(sssb)", &name, &tier, &file, &commissioned), >, 0);
        g_assert_cmpstr(name, ==, "concierge");
        g_assert_cmpstr(tier, ==, "operator");
        g_assert_false(commissioned);
        g_assert_cmpint(sd_bus_message_read(r.m, "(sssb)", &name, &tier, &file, &commissioned), >, 0);
        g_assert_cmpstr(name, ==, "researcher");
        g_assert_true(g_str_has_suffix(file, "con.yaml.d/researcher.yaml"));
        g_assert_true(commissioned);
        g_assert_cmpint(sd_bus_message_read(r.m, "(sssb)", &name, &tier, &file, &commissioned), ==, 0);
        reply_done(&r);

        /* The property, asynchronously too (the service runs on this thread). */
        _cleanup_strv_free_ char **agents = NULL;
        m = NULL;
        g_assert_cmpint(sd_bus_message_new_method_call(client, &m, CON_PROVISIONER_BUS_NAME, CON_PROVISIONER_PATH,
                                                       "org.freedesktop.DBus.Properties", "Get"), >=, 0);
        g_assert_cmpint(sd_bus_message_append(m, "ss", CON_PROVISIONER_INTERFACE, "Agents"), >=, 0);
        call(m, &r);
        sd_bus_message_unref(m);
        g_assert_null(r.error_name);
        g_assert_cmpint(sd_bus_message_enter_container(r.m, 'v', "as"), >=, 0);
        g_assert_cmpint(sd_bus_message_read_strv(r.m, &agents), >=, 0);
        reply_done(&r);
        g_assert_true(strv_equal(agents, STRV_MAKE((char *) "concierge", (char *) "researcher")));
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        setup();
        g_test_add_func("/provisioner/spec", test_spec);
        g_test_add_func("/provisioner/list", test_list);
        int r = con_test_run();
        provisioner_free(prov);
        sd_bus_flush_close_unref(client);
        sd_bus_flush_close_unref(service_bus);
        sd_event_unref(event);
        (void) kill(bus_pid, SIGTERM);
        test_tmpdir_remove(dir);
        g_free(dir);
        g_free(address);
        g_free(cfg);
        return r;
}
