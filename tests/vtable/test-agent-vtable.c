/* SPDX-License-Identifier: MIT */
/* org.conspiracy.Agent1 over a private socket, no broker: the service runs in a forked process
 * (like the real one: sessions are its children), clients connect to it. Clients that must be
 * another user fork and drop privileges before connecting, so the service sees their uid via
 * SO_PEERCRED (needs root; those cases are skipped otherwise). */
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#include "agent-service.h"
#include "cgroup-util.h"
#include "errors.h"
#include "macro.h"
#include "names.h"
#include "task.h"
#include "test-util.h"

#define CONFIG_TEMPLATE                                                         \
        "system:\n"                                                             \
        "  name: testfabric\n"                                                  \
        "  submitters_group: nogroup\n"                                         \
        "  max_queued_per_sender: %u\n"                                         \
        "policy:\n"                                                             \
        "  grants:\n"                                                           \
        "    - who: group:nogroup\n"                                            \
        "      may: [task]\n"                                                   \
        "      to: [worker]\n"                                                  \
        "agents:\n"                                                             \
        "  - name: worker\n"                                                    \
        "    tier: worker\n"                                                    \
        "    mode: always\n"                                                    \
        "    runner: exec\n"                                                    \
        "    command: [/bin/sh, -c, 'eval \"$(cat)\"']\n"                       \
        "    exec_timeout: 2s\n"                                                \
        "    max_sessions: %u\n"                                                \
        "  - name: thinker\n"                                                   \
        "    mode: on-demand\n"

typedef struct Server {
        char *dir, *data, *sock, *state;
        pid_t pid;
        unsigned max_sessions;
        size_t keep_finished;   /* 0: the default */
        unsigned quota;         /* system.max_queued_per_sender, 0: the highest allowed */
        const char *agent;
        const char *cgroup_dir; /* the agent's cgroup folder (sessions get children); NULL: none */
} Server;

/* The kernel's answer to "is the session's cgroup still populated?" at the first look after the
 * session's main process exited, as it is when a killed tool is still exiting: populated. The
 * looks after it get the real state (linked with --wrap=con_cgroup_populated, tests/vtable/
 * CMakeLists.txt). Set before server_start; the server process inherits it. */
static bool fake_tool_still_exiting;
int __real_con_cgroup_populated(int cg_fd);
int __wrap_con_cgroup_populated(int cg_fd);
int __wrap_con_cgroup_populated(int cg_fd) {
        int r = __real_con_cgroup_populated(cg_fd);
        return fake_tool_still_exiting && r >= 0 ? 1 : r;
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        AgentContext *c = userdata;
        _cleanup_(sd_bus_unrefp) sd_bus *bus = NULL;
        sd_id128_t id;
        int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (cfd < 0)
                return 0;
        if (sd_bus_new(&bus) < 0 || sd_bus_set_fd(bus, cfd, cfd) < 0 || sd_id128_randomize(&id) < 0 ||
            sd_bus_set_server(bus, 1, id) < 0 || sd_bus_set_anonymous(bus, true) < 0 ||
            agent_context_add_bus(c, bus) < 0 || sd_bus_start(bus) < 0 ||
            sd_bus_attach_event(bus, c->event, 0) < 0)
                return 0;
        return 0;
}

static _Noreturn void server_main(Server *sv) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        AgentContext *c = NULL;
        ConConfig *config = NULL;
        ConErrorDetail err = {};
        sigset_t ss;
        char *text = NULL;

        /* Do not outlive a test that aborted. */
        (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
        sigemptyset(&ss);
        sigaddset(&ss, SIGCHLD);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGINT);
        sigprocmask(SIG_BLOCK, &ss, NULL);
        if (asprintf(&text, CONFIG_TEMPLATE, sv->quota ?: CON_MAX_QUEUED_PER_SENDER_LIMIT, sv->max_sessions ?: 1) < 0)
                _exit(90);
        if (con_config_parse(text, strlen(text), "test.yaml", &config, &err) < 0) {
                char *m = con_error_detail_format(&err);
                fprintf(stderr, "config: %s\n", m);
                _exit(91);
        }
        if (sd_event_new(&e) < 0)
                _exit(92);
        AgentContextOptions o = { .agent = sv->agent ?: "worker", .data_dir = sv->data, .state_dir = sv->state,
                                  .cgroup_dir = sv->cgroup_dir };
        char *emsg = NULL;
        if (agent_context_new(e, config, &o, &c, &emsg) < 0) {
                fprintf(stderr, "context: %s\n", emsg);
                _exit(93);
        }
        if (sv->keep_finished > 0)
                agent_queue_set_keep_finished(c->queue, sv->keep_finished);
        /* As con-agentd: a quarantined agent does not start. */
        (void) agent_context_watch_state(c);
        if (c->quarantined) {
                fprintf(stderr, "quarantined: %s\n", c->quarantine_reason);
                _exit(98);
        }
        int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        (void) snprintf(sa.sun_path, sizeof(sa.sun_path), "%s.tmp", sv->sock);
        if (lfd < 0 || bind(lfd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(lfd, 16) < 0 ||
            chmod(sa.sun_path, 0777) < 0)
                _exit(94);
        if (sd_event_add_io(e, NULL, lfd, EPOLLIN, on_accept, c) < 0 || agent_context_install_signals(c) < 0 ||
            agent_context_start(c) < 0)
                _exit(95);
        if (rename(sa.sun_path, sv->sock) < 0)
                _exit(96);
        int r = sd_event_loop(e);
        agent_context_free(c);
        _exit(r < 0 ? 97 : 0);
}

static void server_start(Server *sv) {
        (void) unlink(sv->sock);
        fflush(NULL);
        sv->pid = fork();
        g_assert_cmpint(sv->pid, >=, 0);
        if (sv->pid == 0)
                server_main(sv);
        /* Ready when the socket is renamed into place. Under a loaded machine and the sanitizers
         * that has taken more than 5 s: wait as long as the server lives (60 s at most), and
         * fail at once with its exit status when it died. */
        for (int i = 0; i < 6000 && access(sv->sock, F_OK) < 0; i++) {
                int status = 0;
                pid_t p = waitpid(sv->pid, &status, WNOHANG);
                if (p == sv->pid) {
                        sv->pid = 0;
                        g_test_message("the agent server exited before it was ready (status 0x%x)", status);
                        g_assert_not_reached();
                }
                g_usleep(10000);
        }
        g_assert_cmpint(access(sv->sock, F_OK), ==, 0);
}

static int server_stop(Server *sv, int sig) {
        int status = 0;
        if (sv->pid <= 0)
                return 0;
        (void) kill(sv->pid, sig);
        g_assert_cmpint(waitpid(sv->pid, &status, 0), ==, sv->pid);
        sv->pid = 0;
        return status;
}

static void server_init_quota(Server *sv, unsigned max_sessions, unsigned quota) {
        *sv = (Server) { .max_sessions = max_sessions, .quota = quota };
        sv->dir = test_tmpdir_new();
        g_assert_cmpint(chmod(sv->dir, 0755), ==, 0);
        sv->data = g_build_filename(sv->dir, "agent", NULL);
        sv->sock = g_build_filename(sv->dir, "sock", NULL);
        sv->state = g_build_filename(sv->dir, "state", NULL);
        g_assert_cmpint(mkdir(sv->data, 0700), ==, 0);
        server_start(sv);
}

static void server_init(Server *sv, unsigned max_sessions) {
        server_init_quota(sv, max_sessions, 0);
}

static void server_done(Server *sv) {
        int status = server_stop(sv, SIGTERM);
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 0);
        test_tmpdir_remove(sv->dir);
        g_free(sv->dir);
        g_free(sv->data);
        g_free(sv->sock);
        g_free(sv->state);
}

/* ---- client side ---- */

typedef struct Client {
        sd_bus *bus;
        GPtrArray *signals; /* "Member id arg3" */
} Client;

static int on_signal(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Client *cl = userdata;
        const char *member = sd_bus_message_get_member(m);
        if (streq(member, "PropertiesChanged")) {
                const char *iface;
                g_assert_cmpint(sd_bus_message_read(m, "s", &iface), >=, 0);
                g_assert_cmpint(sd_bus_message_enter_container(m, 'a', "{sv}"), >=, 0);
                while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
                        const char *k;
                        g_assert_cmpint(sd_bus_message_read(m, "s", &k), >=, 0);
                        g_ptr_array_add(cl->signals, g_strdup_printf("Changed %s", k));
                        g_assert_cmpint(sd_bus_message_skip(m, "v"), >=, 0);
                        g_assert_cmpint(sd_bus_message_exit_container(m), >=, 0);
                }
                return 0;
        }
        const char *id = NULL, *sender = NULL, *status = NULL;
        if (streq(member, "TaskCompleted"))
                g_assert_cmpint(sd_bus_message_read(m, "sss", &id, &sender, &status), >=, 0);
        else
                g_assert_cmpint(sd_bus_message_read(m, "ss", &id, &sender), >=, 0);
        g_ptr_array_add(cl->signals, g_strdup_printf("%s %s %s", member, id, status ?: sender));
        return 0;
}

static int client_connect(Client *cl, const Server *sv) {
        _cleanup_free_ char *addr = NULL;
        int r;
        cl->signals = g_ptr_array_new_with_free_func(g_free);
        if (asprintf(&addr, "unix:path=%s", sv->sock) < 0)
                return -ENOMEM;
        r = sd_bus_new(&cl->bus);
        if (r >= 0)
                r = sd_bus_set_address(cl->bus, addr);
        if (r >= 0)
                r = sd_bus_start(cl->bus);
        if (r >= 0)
                r = sd_bus_add_match(cl->bus, NULL, "type='signal'", on_signal, cl);
        return r;
}

static void client_done(Client *cl) {
        cl->bus = sd_bus_flush_close_unref(cl->bus);
        g_ptr_array_unref(cl->signals);
}

static int call_submit(Client *cl, const char *text, char **ret_id, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *id;
        int r = sd_bus_call_method(cl->bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Submit", error, &reply,
                                   "s", text);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "s", &id);
        if (r < 0)
                return r;
        *ret_id = strdup(id);
        return 0;
}

static char *submit(Client *cl, const char *text) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        char *id = NULL;
        int r = call_submit(cl, text, &id, &error);
        if (r < 0)
                g_error("Submit(%s): %s: %s", text, error.name, error.message);
        g_assert_true(con_task_id_valid(id));
        return id;
}

static int get_result(Client *cl, const char *id, char **ret_status, char **ret_text, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *s, *t;
        int r = sd_bus_call_method(cl->bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, "GetResult", error, &reply,
                                   "s", id);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "ss", &s, &t);
        if (r < 0)
                return r;
        *ret_status = strdup(s);
        *ret_text = strdup(t);
        return 0;
}

/* GetResultInfo: status, text and the marks of the info dictionary. */
static void get_result_info(Client *cl, const char *id, char **ret_text, int *ret_truncated, int *ret_replaced,
                            uint64_t *ret_size) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *s, *t, *key;
        int n = 0;
        if (sd_bus_call_method(cl->bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, "GetResultInfo", &error, &reply,
                               "s", id) < 0)
                g_error("GetResultInfo(%s): %s: %s", id, error.name, error.message);
        g_assert_cmpint(sd_bus_message_read(reply, "ss", &s, &t), >=, 0);
        *ret_text = strdup(t);
        g_assert_cmpint(sd_bus_message_enter_container(reply, 'a', "{sv}"), >, 0);
        while (sd_bus_message_enter_container(reply, 'e', "sv") > 0) {
                g_assert_cmpint(sd_bus_message_read(reply, "s", &key), >, 0);
                if (streq(key, "truncated"))
                        g_assert_cmpint(sd_bus_message_read(reply, "v", "b", ret_truncated), >, 0);
                else if (streq(key, "replaced"))
                        g_assert_cmpint(sd_bus_message_read(reply, "v", "b", ret_replaced), >, 0);
                else if (streq(key, "size"))
                        g_assert_cmpint(sd_bus_message_read(reply, "v", "t", ret_size), >, 0);
                else if (streq(key, "sender")) {
                        /* The task's sender: the caller (a task it submitted). */
                        const char *sender;
                        g_assert_cmpint(sd_bus_message_read(reply, "v", "s", &sender), >, 0);
                        struct passwd *pw = getpwuid(geteuid());
                        g_autofree char *me = pw ? g_strdup(pw->pw_name) : g_strdup_printf("%u", (unsigned) geteuid());
                        g_assert_cmpstr(sender, ==, me);
                } else
                        g_error("unexpected key %s", key);
                g_assert_cmpint(sd_bus_message_exit_container(reply), >, 0);
                n++;
        }
        g_assert_cmpint(n, ==, 4);
}

static bool have_signal(Client *cl, const char *line) {
        for (guint i = 0; i < cl->signals->len; i++)
                if (streq(g_ptr_array_index(cl->signals, i), line))
                        return true;
        return false;
}

static bool have_signal_prefix(Client *cl, const char *prefix) {
        for (guint i = 0; i < cl->signals->len; i++)
                if (startswith(g_ptr_array_index(cl->signals, i), prefix))
                        return true;
        return false;
}

/* Processes the connection until a signal line starting with prefix arrived. */
static void wait_signal(Client *cl, const char *prefix, uint64_t timeout_usec) {
        gint64 end = g_get_monotonic_time() + (gint64) timeout_usec;
        while (!have_signal_prefix(cl, prefix)) {
                g_assert_cmpint(g_get_monotonic_time(), <, end);
                int r = sd_bus_process(cl->bus, NULL);
                g_assert_cmpint(r, >=, 0);
                if (r == 0)
                        g_assert_cmpint(sd_bus_wait(cl->bus, 100000), >=, 0);
        }
}

static char *wait_completed(Client *cl, const char *id, uint64_t timeout_usec) {
        g_autofree char *prefix = g_strdup_printf("TaskCompleted %s ", id);
        wait_signal(cl, prefix, timeout_usec);
        for (guint i = 0; i < cl->signals->len; i++)
                if (startswith(g_ptr_array_index(cl->signals, i), prefix))
                        return g_strdup((char *) g_ptr_array_index(cl->signals, i) + strlen(prefix));
        return NULL;
}

static void assert_result(Client *cl, const char *id, const char *want_status, const char *want_substr) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *st = NULL, *text = NULL;
        g_assert_cmpint(get_result(cl, id, &st, &text, &error), ==, 0);
        g_assert_cmpstr(st, ==, want_status);
        if (want_substr && !strstr(text, want_substr))
                g_error("result of %s: '%s' does not contain '%s'", id, text, want_substr);
}

/* ---- tests ---- */

static void test_ping_help_unknown(void) {
        Server sv;
        Client cl = {};
        server_init(&sv, 1);
        g_assert_cmpint(client_connect(&cl, &sv), >=, 0);

        gint64 t0 = g_get_monotonic_time();
        _cleanup_free_ char *id = submit(&cl, "/ping");
        g_autofree char *st = wait_completed(&cl, id, 5 * USEC_PER_SEC);
        gint64 dt = g_get_monotonic_time() - t0;
        g_test_message("Submit(/ping) -> TaskCompleted: %" G_GINT64_FORMAT " us", dt);
        g_assert_cmpstr(st, ==, "completed");
        g_assert_cmpint(dt, <, 200000); /* generous: sanitizers, shared machines; fsync included */
        assert_result(&cl, id, "completed", "pong");
        /* Accepted, started and completed in that order. */
        g_autofree char *acc = g_strdup_printf("TaskAccepted %s root", id);
        g_assert_true(have_signal(&cl, acc));

        _cleanup_free_ char *h = submit(&cl, "/help");
        g_autofree char *hs = wait_completed(&cl, h, 5 * USEC_PER_SEC);
        g_assert_cmpstr(hs, ==, "completed");
        assert_result(&cl, h, "completed", "/ping");

        _cleanup_free_ char *u = submit(&cl, "/nope please");
        g_autofree char *us = wait_completed(&cl, u, 5 * USEC_PER_SEC);
        g_assert_cmpstr(us, ==, "failed");
        assert_result(&cl, u, "failed", "unknown command '/nope'; the commands are /help");

        _cleanup_free_ char *s = submit(&cl, "/status");
        g_free(wait_completed(&cl, s, 5 * USEC_PER_SEC));
        assert_result(&cl, s, "completed", "agent: worker");
        _cleanup_free_ char *a = submit(&cl, "/agents");
        g_free(wait_completed(&cl, a, 5 * USEC_PER_SEC));
        assert_result(&cl, a, "completed", "thinker");
        _cleanup_free_ char *ts = submit(&cl, "/tasks");
        g_free(wait_completed(&cl, ts, 5 * USEC_PER_SEC));
        assert_result(&cl, ts, "completed", "/agents");

        /* Empty text and unknown ids. */
        _cleanup_(sd_bus_error_free) sd_bus_error e1 = SD_BUS_ERROR_NULL;
        char *x = NULL;
        g_assert_cmpint(call_submit(&cl, "  \n", &x, &e1), <, 0);
        g_assert_cmpstr(e1.name, ==, CON_ERROR_INVALID_TASK);
        _cleanup_(sd_bus_error_free) sd_bus_error e2 = SD_BUS_ERROR_NULL;
        char *s1 = NULL, *s2 = NULL;
        g_assert_cmpint(get_result(&cl, "no-such-task", &s1, &s2, &e2), <, 0);
        g_assert_cmpstr(e2.name, ==, CON_ERROR_NO_SUCH_TASK);

        /* Properties, and their change signals. */
        _cleanup_free_ char *name = NULL, *mode = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e3 = SD_BUS_ERROR_NULL;
        g_assert_cmpint(sd_bus_get_property_string(cl.bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Name", &e3,
                                                   &name), >=, 0);
        g_assert_cmpstr(name, ==, "worker");
        g_assert_cmpint(sd_bus_get_property_string(cl.bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Mode", &e3,
                                                   &mode), >=, 0);
        g_assert_cmpstr(mode, ==, "always");
        uint64_t done = 0;
        g_assert_cmpint(sd_bus_get_property_trivial(cl.bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE,
                                                    "TasksCompleted", &e3, 't', &done), >=, 0);
        g_assert_cmpuint(done, ==, 5);
        g_assert_true(have_signal(&cl, "Changed TasksCompleted"));
        g_assert_true(have_signal(&cl, "Changed TasksFailed"));

        client_done(&cl);
        server_done(&sv);
}

static int deliver(Client *cl, sd_bus_error *error, char **ret_id, const char *k1, const char *t1, ...) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        va_list ap;
        int r = sd_bus_message_new_method_call(cl->bus, &m, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Deliver");
        g_assert_cmpint(r, >=, 0);
        g_assert_cmpint(sd_bus_message_open_container(m, 'a', "{sv}"), >=, 0);
        va_start(ap, t1);
        for (const char *k = k1, *t = t1; k; k = va_arg(ap, const char *), t = k ? va_arg(ap, const char *) : NULL) {
                g_assert_cmpint(sd_bus_message_open_container(m, 'e', "sv"), >=, 0);
                g_assert_cmpint(sd_bus_message_append(m, "s", k), >=, 0);
                g_assert_cmpint(sd_bus_message_open_container(m, 'v', t), >=, 0);
                switch (t[0]) {
                case 's':
                        r = sd_bus_message_append(m, "s", va_arg(ap, const char *));
                        break;
                case 'y':
                        r = sd_bus_message_append(m, "y", (uint8_t) va_arg(ap, int));
                        break;
                case 'u':
                        r = sd_bus_message_append(m, "u", va_arg(ap, uint32_t));
                        break;
                case 't':
                        r = sd_bus_message_append(m, "t", va_arg(ap, uint64_t));
                        break;
                default:
                        g_assert_not_reached();
                }
                g_assert_cmpint(r, >=, 0);
                g_assert_cmpint(sd_bus_message_close_container(m), >=, 0);
                g_assert_cmpint(sd_bus_message_close_container(m), >=, 0);
        }
        va_end(ap);
        g_assert_cmpint(sd_bus_message_close_container(m), >=, 0);
        r = sd_bus_call(cl->bus, m, 0, error, &reply);
        if (r < 0)
                return r;
        const char *id;
        g_assert_cmpint(sd_bus_message_read(reply, "s", &id), >=, 0);
        if (ret_id)
                *ret_id = strdup(id);
        return 0;
}

static void assert_invalid(Client *cl, int r, sd_bus_error *e, const char *name, const char *substr) {
        g_assert_cmpint(r, <, 0);
        g_assert_cmpstr(e->name, ==, name);
        if (!strstr(e->message, substr))
                g_error("error '%s' does not contain '%s'", e->message, substr);
        sd_bus_error_free(e);
}

static void test_deliver(void) {
        Server sv;
        Client cl = {};
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        server_init(&sv, 1);
        g_assert_cmpint(client_connect(&cl, &sv), >=, 0);

        uint64_t far = (uint64_t) time(NULL) * USEC_PER_SEC + 3600 * USEC_PER_SEC;
        _cleanup_free_ char *id = NULL, *id2 = NULL;
        g_assert_cmpint(deliver(&cl, &e, &id, "text", "s", "echo once >> ../runs; echo hi", "id", "s", "my-task.1",
                                "priority", "y", 7, "reply_to", "s", "sysadmin", "deadline", "t", far,
                                "conversation", "s", "latest", NULL), ==, 0);
        g_assert_cmpstr(id, ==, "my-task.1");
        /* The same id again: same answer, runs once. */
        g_assert_cmpint(deliver(&cl, &e, &id2, "text", "s", "echo twice", "id", "s", "my-task.1", NULL), ==, 0);
        g_assert_cmpstr(id2, ==, "my-task.1");
        g_autofree char *st = wait_completed(&cl, id, 5 * USEC_PER_SEC);
        g_assert_cmpstr(st, ==, "completed");
        assert_result(&cl, id, "completed", "hi");
        g_autofree char *runs_path = g_build_filename(sv.data, "runs", NULL);
        g_autofree char *runs = NULL;
        g_assert_true(g_file_get_contents(runs_path, &runs, NULL, NULL));
        g_assert_cmpstr(runs, ==, "once\n");
        g_autofree char *resp_path = g_build_filename(sv.data, "outbox", "my-task.1.response", NULL);
        g_autofree char *resp = NULL;
        g_assert_true(g_file_get_contents(resp_path, &resp, NULL, NULL));
        g_assert_cmpstr(resp, ==, "hi\n");
        g_autofree char *proc_path = g_build_filename(sv.data, "processed", "my-task.1.task", NULL);
        g_autofree char *proc = NULL;
        g_assert_true(g_file_get_contents(proc_path, &proc, NULL, NULL));
        g_assert_nonnull(strstr(proc, "reply-to: sysadmin"));
        g_assert_nonnull(strstr(proc, "conversation: latest"));

        /* sender_uid from root is honoured. */
        _cleanup_free_ char *id3 = NULL;
        g_assert_cmpint(deliver(&cl, &e, &id3, "text", "s", "/ping", "sender_uid", "u", 65534, NULL), ==, 0);
        g_autofree char *st3 = wait_completed(&cl, id3, 5 * USEC_PER_SEC);
        g_assert_nonnull(st3);
        g_autofree char *acc = g_strdup_printf("TaskAccepted %s nobody", id3);
        g_assert_true(have_signal(&cl, acc));

        /* A deadline in the past fails the task when it would start. */
        _cleanup_free_ char *id4 = NULL;
        g_assert_cmpint(deliver(&cl, &e, &id4, "text", "s", "echo late", "deadline", "t", (uint64_t) 1, NULL), ==, 0);
        g_autofree char *st4 = wait_completed(&cl, id4, 5 * USEC_PER_SEC);
        g_assert_cmpstr(st4, ==, "failed");
        assert_result(&cl, id4, "failed", "deadline passed");

        int r;
        r = deliver(&cl, &e, NULL, "text", "s", "x", "colour", "s", "red", NULL);
        assert_invalid(&cl, r, &e, SD_BUS_ERROR_INVALID_ARGS, "Unknown key 'colour'");
        r = deliver(&cl, &e, NULL, "text", "s", "x", "priority", "s", "high", NULL);
        assert_invalid(&cl, r, &e, SD_BUS_ERROR_INVALID_ARGS, "Key 'priority' must be of type 'y', got 's'");
        r = deliver(&cl, &e, NULL, "text", "s", "x", "priority", "y", 10, NULL);
        assert_invalid(&cl, r, &e, SD_BUS_ERROR_INVALID_ARGS, "out of range");
        r = deliver(&cl, &e, NULL, "id", "s", "abc", NULL);
        assert_invalid(&cl, r, &e, SD_BUS_ERROR_INVALID_ARGS, "Key 'text' (s) is required");
        r = deliver(&cl, &e, NULL, "text", "s", "x", "id", "s", "../etc", NULL);
        assert_invalid(&cl, r, &e, SD_BUS_ERROR_INVALID_ARGS, "not a valid task id");
        r = deliver(&cl, &e, NULL, "text", "s", "x", "reply_to", "s", "Bad Name", NULL);
        assert_invalid(&cl, r, &e, SD_BUS_ERROR_INVALID_ARGS, "not an agent name");
        r = deliver(&cl, &e, NULL, "text", "s", "x", "text", "s", "y", NULL);
        assert_invalid(&cl, r, &e, SD_BUS_ERROR_INVALID_ARGS, "given twice");
        r = deliver(&cl, &e, NULL, "text", "s", "x", "conversation", "s", "../0/x", NULL);
        assert_invalid(&cl, r, &e, SD_BUS_ERROR_INVALID_ARGS, "Key 'conversation': '../0/x' is not a conversation id");
        r = deliver(&cl, &e, NULL, "text", "s", "x", "deadline", "u", 5, NULL);
        assert_invalid(&cl, r, &e, SD_BUS_ERROR_INVALID_ARGS, "Key 'deadline' must be of type 't'");

        /* ListTasks: oldest first, each id once. */
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        g_assert_cmpint(sd_bus_call_method(cl.bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, "ListTasks", &e, &reply,
                                           NULL), >=, 0);
        g_assert_cmpint(sd_bus_message_enter_container(reply, 'a', "(sss)"), >=, 0);
        const char *tid, *tst, *tsender;
        unsigned n = 0, mine = 0;
        while (sd_bus_message_read(reply, "(sss)", &tid, &tst, &tsender) > 0) {
                n++;
                mine += streq(tid, "my-task.1");
        }
        g_assert_cmpuint(n, ==, 3);
        g_assert_cmpuint(mine, ==, 1);

        client_done(&cl);
        server_done(&sv);
}

static void test_exec(void) {
        Server sv;
        Client cl = {};
        server_init(&sv, 2);
        g_assert_cmpint(client_connect(&cl, &sv), >=, 0);
        g_setenv("CON_TEST_SECRET", "hunter2", TRUE);

        _cleanup_free_ char *ok = submit(&cl, "echo \"$CON_AGENT $CON_TASK_ID $LANG\"; pwd; env | grep -c SECRET || true");
        _cleanup_free_ char *bad = submit(&cl, "echo partial; echo oops >&2; exit 3");
        g_autofree char *s1 = wait_completed(&cl, ok, 10 * USEC_PER_SEC);
        g_assert_cmpstr(s1, ==, "completed");
        g_autofree char *want = g_strdup_printf("worker %s C.UTF-8\n%s/workspace\n0\n", ok, sv.data);
        assert_result(&cl, ok, "completed", want);
        g_autofree char *s2 = wait_completed(&cl, bad, 10 * USEC_PER_SEC);
        g_assert_cmpstr(s2, ==, "failed");
        assert_result(&cl, bad, "failed", "/bin/sh exited with status 3: oops");

        _cleanup_free_ char *slow = submit(&cl, "sleep 30");
        _cleanup_free_ char *big = submit(&cl, "head -c 3000000 /dev/zero | tr '\\0' a");
        g_autofree char *s4 = wait_completed(&cl, big, 20 * USEC_PER_SEC);
        g_assert_cmpstr(s4, ==, "completed");
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *bst = NULL, *btext = NULL;
        g_assert_cmpint(get_result(&cl, big, &bst, &btext, &e), ==, 0);
        g_assert_cmpuint(strlen(btext), <=, AGENT_SESSION_OUTPUT_MAX);
        g_assert_nonnull(strstr(btext, "aaaa\n[truncated: 3000000 bytes, the first "));
        _cleanup_free_ char *binfo = NULL;
        int truncated = -1, replaced = -1;
        uint64_t size = 0;
        get_result_info(&cl, big, &binfo, &truncated, &replaced, &size);
        g_assert_cmpstr(binfo, ==, btext);
        g_assert_true(truncated && !replaced);
        g_assert_cmpuint(size, ==, 3000000);

        /* Whatever bytes the runner writes, the result is readable (a D-Bus string is UTF-8):
         * cut in the middle of an "é" at the read limit, and raw bytes and a NUL. */
        _cleanup_free_ char *eacute = submit(&cl, "printf a; yes \303\251 | head -n 600000 | tr -d '\\n'");
        _cleanup_free_ char *raw = submit(&cl, "printf 'a\\377\\000b'; printf 'bad \\376' >&2; exit 1");
        g_autofree char *s7 = wait_completed(&cl, eacute, 20 * USEC_PER_SEC);
        g_assert_cmpstr(s7, ==, "completed");
        _cleanup_free_ char *etext = NULL;
        get_result_info(&cl, eacute, &etext, &truncated, &replaced, &size);
        g_assert_true(g_utf8_validate(etext, -1, NULL));
        g_assert_true(g_str_has_prefix(etext, "a\303\251\303\251"));
        g_assert_true(truncated && !replaced);
        g_assert_cmpuint(size, ==, 1200001);
        g_autofree char *s8 = wait_completed(&cl, raw, 20 * USEC_PER_SEC);
        g_assert_cmpstr(s8, ==, "failed");
        _cleanup_free_ char *rtext = NULL;
        get_result_info(&cl, raw, &rtext, &truncated, &replaced, &size);
        g_assert_cmpstr(rtext, ==, "/bin/sh exited with status 1: bad \357\277\275");
        g_assert_true(!truncated && replaced);
        _cleanup_free_ char *rawout = submit(&cl, "printf 'a\\377\\000b'");
        g_autofree char *s9 = wait_completed(&cl, rawout, 20 * USEC_PER_SEC);
        g_assert_cmpstr(s9, ==, "completed");
        _cleanup_free_ char *otext = NULL;
        get_result_info(&cl, rawout, &otext, &truncated, &replaced, &size);
        g_assert_cmpstr(otext, ==, "a\357\277\275\357\277\275b");
        g_assert_true(!truncated && replaced);
        g_assert_cmpuint(size, ==, 4);
        g_autofree char *s3 = wait_completed(&cl, slow, 20 * USEC_PER_SEC);
        g_assert_cmpstr(s3, ==, "failed");
        assert_result(&cl, slow, "failed", "longer than its limit of 2s (exec_timeout)");

        /* Killed by a signal: retried, then failed/ after three tries. */
        _cleanup_free_ char *crash = submit(&cl, "echo try >> ../tries; kill -KILL $$");
        g_autofree char *s5 = wait_completed(&cl, crash, 20 * USEC_PER_SEC);
        g_assert_cmpstr(s5, ==, "failed");
        assert_result(&cl, crash, "failed", "killed by signal KILL 3 times");
        g_autofree char *tries_path = g_build_filename(sv.data, "tries", NULL);
        g_autofree char *tries = NULL;
        g_assert_true(g_file_get_contents(tries_path, &tries, NULL, NULL));
        g_assert_cmpstr(tries, ==, "try\ntry\ntry\n");
        g_autofree char *reason_path = g_build_filename(sv.data, "failed", crash, NULL);
        g_autofree char *rp = g_strdup_printf("%s.reason", reason_path);
        g_assert_cmpint(access(rp, F_OK), ==, 0);

        /* Cancel kills the session's whole process group. */
        _cleanup_free_ char *victim = submit(&cl, "sleep 30 & sleep 30; echo never");
        g_autofree char *started = g_strdup_printf("TaskStarted %s", victim);
        wait_signal(&cl, started, 5 * USEC_PER_SEC);
        g_assert_cmpint(sd_bus_call_method(cl.bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Cancel", &e, NULL,
                                           "s", victim), >=, 0);
        g_autofree char *s6 = wait_completed(&cl, victim, 5 * USEC_PER_SEC);
        g_assert_cmpstr(s6, ==, "canceled");
        assert_result(&cl, victim, "canceled", "cancelled by root");

        client_done(&cl);
        server_done(&sv);
}

static void test_restart_resumes(void) {
        Server sv;
        Client cl = {};
        server_init(&sv, 1);
        g_assert_cmpint(client_connect(&cl, &sv), >=, 0);
        _cleanup_free_ char *first = submit(&cl, "echo run >> ../first; sleep 0.5; echo one");
        _cleanup_free_ char *second = submit(&cl, "echo two");
        g_autofree char *started = g_strdup_printf("TaskStarted %s", first);
        wait_signal(&cl, started, 5 * USEC_PER_SEC);
        client_done(&cl);
        /* A crash: no chance to write anything more. */
        int status = server_stop(&sv, SIGKILL);
        g_assert_true(WIFSIGNALED(status));

        server_start(&sv);
        Client cl2 = {};
        g_assert_cmpint(client_connect(&cl2, &sv), >=, 0);
        for (int i = 0; i < 100; i++) {
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                _cleanup_free_ char *st = NULL, *text = NULL;
                g_assert_cmpint(get_result(&cl2, second, &st, &text, &e), ==, 0);
                if (streq(st, "completed"))
                        break;
                g_usleep(50000);
        }
        assert_result(&cl2, first, "completed", "one");
        assert_result(&cl2, second, "completed", "two");
        client_done(&cl2);
        server_done(&sv);
}

/* Runs fn in a child that became uid/gid, connected as that user. Exit 0 = all checks passed. */
static void as_user(Server *sv, uid_t uid, gid_t gid, const char *root_task, const char *expect) {
        fflush(NULL);
        pid_t pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
                if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0)
                        _exit(10);
                Client cl = {};
                if (client_connect(&cl, sv) < 0)
                        _exit(11);
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                char *id = NULL, *st = NULL, *text = NULL;
                int r = call_submit(&cl, "/ping", &id, &e);
                if (streq(expect, "may-submit")) {
                        if (r < 0) {
                                fprintf(stderr, "Submit as uid %u: %s: %s\n", (unsigned) uid, e.name, e.message);
                                _exit(12);
                        }
                } else if (r >= 0 || !streq(e.name, CON_ERROR_ACCESS_DENIED) ||
                           !strstr(e.message, "may not submit tasks to agent 'worker'") ||
                           !strstr(e.message, "policy"))
                        _exit(13);
                sd_bus_error_free(&e);
                r = get_result(&cl, root_task, &st, &text, &e);
                if (r >= 0 || !streq(e.name, CON_ERROR_ACCESS_DENIED))
                        _exit(14);
                sd_bus_error_free(&e);
                r = sd_bus_call_method(cl.bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Cancel", &e, NULL, "s",
                                       root_task);
                if (r >= 0 || !streq(e.name, CON_ERROR_ACCESS_DENIED))
                        _exit(15);
                sd_bus_error_free(&e);
                if (id) {
                        /* Its own task is readable. */
                        for (int i = 0; i < 100; i++) {
                                free(st);
                                free(text);
                                if (get_result(&cl, id, &st, &text, &e) < 0)
                                        _exit(16);
                                if (streq(st, "completed"))
                                        break;
                                g_usleep(20000);
                        }
                        if (!streq(text, "pong"))
                                _exit(17);
                }
                /* Deliver with sender_uid is for root only. */
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
                if (sd_bus_message_new_method_call(cl.bus, &m, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE,
                                                   "Deliver") < 0 ||
                    sd_bus_message_append(m, "a{sv}", 2, "text", "s", "/ping", "sender_uid", "u", 0) < 0)
                        _exit(18);
                r = sd_bus_call(cl.bus, m, 0, &e, NULL);
                if (r >= 0 || !streq(e.name, CON_ERROR_ACCESS_DENIED))
                        _exit(19);
                sd_bus_error_free(&e);
                /* The admin methods need halt and quarantine grants: root only in this config. */
                static const char * const admin[] = { "Halt", "Quarantine", "KillSessions" };
                for (size_t i = 0; i < ELEMENTSOF(admin); i++) {
                        r = sd_bus_call_method(cl.bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, admin[i], &e,
                                               NULL, "s", "breach");
                        if (r >= 0 || !streq(e.name, CON_ERROR_ACCESS_DENIED) ||
                            !strstr(e.message, "may not"))
                                _exit(20 + (int) i);
                        sd_bus_error_free(&e);
                }
                r = sd_bus_call_method(cl.bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Resume", &e, NULL, "");
                if (r >= 0 || !streq(e.name, CON_ERROR_ACCESS_DENIED))
                        _exit(23);
                sd_bus_error_free(&e);
                /* ListTasks: only its own tasks (not root's). */
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                r = sd_bus_call_method(cl.bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, "ListTasks", &e, &reply,
                                       "");
                if (r < 0 || sd_bus_message_enter_container(reply, 'a', "(sss)") < 0)
                        _exit(24);
                const char *tid, *tst, *tsender;
                while ((r = sd_bus_message_read(reply, "(sss)", &tid, &tst, &tsender)) > 0)
                        if (streq(tid, root_task))
                                _exit(25);
                _exit(0);
        }
        int status;
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 0);
}

static void test_access(void) {
        if (geteuid() != 0) {
                con_test_skip("needs root to connect as other users");
                return;
        }
        Server sv;
        Client cl = {};
        server_init(&sv, 1);
        g_assert_cmpint(client_connect(&cl, &sv), >=, 0);
        _cleanup_free_ char *id = submit(&cl, "/ping");
        g_free(wait_completed(&cl, id, 5 * USEC_PER_SEC));
        /* nobody is in the submitters group (nogroup) in this config; 65533 is in no group. */
        as_user(&sv, 65534, 65534, id, "may-submit");
        as_user(&sv, 65533, 65533, id, "refused");
        client_done(&cl);
        server_done(&sv);
}

/* Delivers text under id with sender_uid (root only); returns 0 and checks the id, or the error. */
static int deliver_as(Client *cl, const char *id, uint32_t uid, const char *text, sd_bus_error *e) {
        _cleanup_free_ char *got = NULL;
        int r = deliver(cl, e, &got, "text", "s", text, "id", "s", id, "sender_uid", "u", uid, NULL);
        if (r >= 0)
                g_assert_cmpstr(got, ==, id);
        return r;
}

static void assert_duplicate(Client *cl, const char *id, uint32_t uid) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        g_autofree char *want = g_strdup_printf("Task id '%s' is already used on agent 'worker' by another sender",
                                                id);
        int r = deliver_as(cl, id, uid, "echo intruder >> ../intruders", &e);
        assert_invalid(cl, r, &e, CON_ERROR_DUPLICATE_TASK, want);
}

static unsigned count_listed(Client *cl, const char *id) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *tid, *tst, *tsender;
        unsigned n = 0;
        g_assert_cmpint(sd_bus_call_method(cl->bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, "ListTasks", &e,
                                           &reply, NULL), >=, 0);
        g_assert_cmpint(sd_bus_message_enter_container(reply, 'a', "(sss)"), >=, 0);
        while (sd_bus_message_read(reply, "(sss)", &tid, &tst, &tsender) > 0)
                n += streq(tid, id);
        return n;
}

/* As uid 65534 (nobody, a submitter in this config): its own id is idempotent over its real
 * credentials; as 65533 (no grants): another sender's task cannot be read, cancelled or
 * claimed, and the refusal says nothing about the id. */
static void id_scope_as_users(Server *sv, const char *id) {
        fflush(NULL);
        pid_t pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
                if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
                    setresuid(65534, 65534, 65534) < 0)
                        _exit(10);
                Client cl = {};
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                _cleanup_free_ char *got = NULL, *st = NULL, *text = NULL;
                if (client_connect(&cl, sv) < 0)
                        _exit(11);
                if (deliver(&cl, &e, &got, "text", "s", "echo again >> ../intruders", "id", "s", id, NULL) < 0 ||
                    !streq(got, id))
                        _exit(12);
                if (get_result(&cl, id, &st, &text, &e) < 0 || !streq(st, "completed") || !streq(text, "one\n"))
                        _exit(13);
                _exit(0);
        }
        int status;
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 0);

        fflush(NULL);
        pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
                if (setgroups(0, NULL) < 0 || setresgid(65533, 65533, 65533) < 0 ||
                    setresuid(65533, 65533, 65533) < 0)
                        _exit(10);
                Client cl = {};
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                char *st = NULL, *text = NULL;
                if (client_connect(&cl, sv) < 0)
                        _exit(11);
                if (get_result(&cl, id, &st, &text, &e) >= 0 || !streq(e.name, CON_ERROR_ACCESS_DENIED))
                        _exit(14);
                sd_bus_error_free(&e);
                if (sd_bus_call_method(cl.bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Cancel", &e, NULL, "s",
                                       id) >= 0 || !streq(e.name, CON_ERROR_ACCESS_DENIED))
                        _exit(15);
                sd_bus_error_free(&e);
                /* Not allowed to task the agent: refused before the id is looked at. */
                if (deliver(&cl, &e, NULL, "text", "s", "echo x", "id", "s", id, NULL) >= 0 ||
                    !streq(e.name, CON_ERROR_ACCESS_DENIED))
                        _exit(16);
                _exit(0);
        }
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 0);
}

static void test_id_scope(void) {
        if (geteuid() != 0) {
                con_test_skip("needs root to deliver for other uids and connect as other users");
                return;
        }
        Server sv;
        Client cl = {};
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        server_init(&sv, 1);
        g_assert_cmpint(client_connect(&cl, &sv), >=, 0);

        /* User 65534 takes "collide1" first. */
        g_assert_cmpint(deliver_as(&cl, "collide1", 65534, "echo one", &e), ==, 0);
        g_autofree char *st = wait_completed(&cl, "collide1", 5 * USEC_PER_SEC);
        g_assert_cmpstr(st, ==, "completed");
        /* In memory: another user, and root itself, are refused; the owner gets its task back. */
        assert_duplicate(&cl, "collide1", 65533);
        _cleanup_free_ char *dup = NULL;
        int r = deliver(&cl, &e, &dup, "text", "s", "echo root", "id", "s", "collide1", NULL);
        assert_invalid(&cl, r, &e, CON_ERROR_DUPLICATE_TASK, "'collide1'");
        g_assert_cmpint(deliver_as(&cl, "collide1", 65534, "echo again >> ../intruders", &e), ==, 0);
        g_assert_cmpuint(count_listed(&cl, "collide1"), ==, 1);
        id_scope_as_users(&sv, "collide1");
        /* The owner's result is untouched, and root's /tasks does not show another sender's text. */
        assert_result(&cl, "collide1", "completed", "one");
        _cleanup_free_ char *ts = submit(&cl, "/tasks");
        g_free(wait_completed(&cl, ts, 5 * USEC_PER_SEC));
        assert_result(&cl, ts, "completed", "collide1  completed  nobody  (another sender's task)");
        _cleanup_free_ char *st2 = NULL, *listing = NULL;
        g_assert_cmpint(get_result(&cl, ts, &st2, &listing, &e), ==, 0);
        g_assert_null(strstr(listing, "echo one"));

        /* After a restart (journal replay): the same. */
        client_done(&cl);
        g_assert_true(WIFEXITED(server_stop(&sv, SIGTERM)));
        sv.keep_finished = 1;
        server_start(&sv);
        g_assert_cmpint(client_connect(&cl, &sv), >=, 0);
        assert_duplicate(&cl, "collide1", 65533);
        g_assert_cmpint(deliver_as(&cl, "collide1", 65534, "echo again >> ../intruders", &e), ==, 0);

        /* Only on disk (evicted: at most one finished task stays in memory). */
        for (int i = 0; i < 3; i++) {
                _cleanup_free_ char *id = submit(&cl, "/ping");
                g_free(wait_completed(&cl, id, 5 * USEC_PER_SEC));
        }
        g_assert_cmpuint(count_listed(&cl, "collide1"), ==, 0);
        g_autofree char *json = g_build_filename(sv.data, "queue", "finished", "collide1.json", NULL);
        g_assert_cmpint(access(json, F_OK), ==, 0);
        assert_duplicate(&cl, "collide1", 65533);
        assert_duplicate(&cl, "collide1", 0);
        g_assert_cmpint(deliver_as(&cl, "collide1", 65534, "echo again >> ../intruders", &e), ==, 0);
        id_scope_as_users(&sv, "collide1");

        /* None of the refused or repeated deliveries ran. */
        g_autofree char *intruders = g_build_filename(sv.data, "intruders", NULL);
        g_assert_cmpint(access(intruders, F_OK), <, 0);
        client_done(&cl);
        server_done(&sv);
}

/* ---- halt, resume, kill sessions, quarantine, markers ---- */

static char *get_state(Client *cl) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        char *v = NULL;
        g_assert_cmpint(sd_bus_get_property_string(cl->bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, "State", &e,
                                                   &v), >=, 0);
        return v;
}

static void wait_state(Client *cl, const char *want) {
        for (int i = 0; i < 300; i++) {
                _cleanup_free_ char *v = get_state(cl);
                if (streq(v, want))
                        return;
                g_usleep(10000);
        }
        _cleanup_free_ char *v = get_state(cl);
        g_assert_cmpstr(v, ==, want);
}

static void wait_status(Client *cl, const char *id, const char *want) {
        for (int i = 0; i < 300; i++) {
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                _cleanup_free_ char *st = NULL, *text = NULL;
                g_assert_cmpint(get_result(cl, id, &st, &text, &e), ==, 0);
                if (streq(st, want))
                        return;
                g_usleep(10000);
        }
        assert_result(cl, id, want, NULL);
}

static void call_reason(Client *cl, const char *method, const char *reason, uint32_t *ret_killed) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r = sd_bus_call_method(cl->bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, method, &e, &reply, "s",
                                   reason);
        if (r < 0)
                g_error("%s: %s: %s", method, e.name, e.message);
        if (ret_killed)
                g_assert_cmpint(sd_bus_message_read(reply, "u", ret_killed), >, 0);
}

static void assert_submit_refused(Client *cl, const char *name, const char *substr) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *id = NULL;
        int r = call_submit(cl, "/ping", &id, &e);
        assert_invalid(cl, r, &e, name, substr);
        r = deliver(cl, &e, NULL, "text", "s", "/ping", NULL);
        assert_invalid(cl, r, &e, name, substr);
}

static void test_halt_resume(void) {
        Server sv;
        Client cl = {};
        server_init(&sv, 1);
        g_assert_cmpint(client_connect(&cl, &sv), >=, 0);

        _cleanup_free_ char *running = submit(&cl, "sleep 30");
        _cleanup_free_ char *queued = submit(&cl, "echo after");
        wait_status(&cl, running, "working");
        call_reason(&cl, "Halt", "maintenance window", NULL);
        _cleanup_free_ char *st = get_state(&cl);
        g_assert_cmpstr(st, ==, "halted");
        g_autofree char *end = wait_completed(&cl, running, 5 * USEC_PER_SEC);
        g_assert_cmpstr(end, ==, "failed");
        assert_result(&cl, running, "failed", "agent halted: maintenance window (by root)");
        /* Queued work waits; new work is refused, naming the reason and the way out. */
        assert_result(&cl, queued, "submitted", NULL);
        assert_submit_refused(&cl, CON_ERROR_HALTED, "maintenance window");
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *x = NULL;
        g_assert_cmpint(call_submit(&cl, "/ping", &x, &e), <, 0);
        g_assert_nonnull(strstr(e.message, "con resume"));
        g_assert_true(have_signal(&cl, "Changed State"));
        /* Halt twice is fine; a reason with a newline is not. */
        call_reason(&cl, "Halt", "again", NULL);
        sd_bus_error_free(&e);
        g_assert_cmpint(sd_bus_call_method(cl.bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Halt", &e, NULL, "s",
                                           "two\nlines"), <, 0);
        g_assert_cmpstr(e.name, ==, SD_BUS_ERROR_INVALID_ARGS);

        sd_bus_error_free(&e);
        g_assert_cmpint(sd_bus_call_method(cl.bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Resume", &e, NULL, ""),
                        >=, 0);
        g_autofree char *qend = wait_completed(&cl, queued, 5 * USEC_PER_SEC);
        g_assert_cmpstr(qend, ==, "completed");
        assert_result(&cl, queued, "completed", "after");
        _cleanup_free_ char *p = submit(&cl, "/ping");
        g_free(wait_completed(&cl, p, 5 * USEC_PER_SEC));

        client_done(&cl);
        server_done(&sv);
}

static void test_sender_quota(void) {
        Server sv;
        Client cl = {};
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        server_init_quota(&sv, 1, 3);
        g_assert_cmpint(client_connect(&cl, &sv), >=, 0);

        /* One running, two queued: the caller's quota of 3 unfinished tasks is used up. */
        _cleanup_free_ char *a = submit(&cl, "sleep 30"), *b = submit(&cl, "sleep 30"), *c = submit(&cl, "echo c");
        wait_status(&cl, a, "working");
        char *id = NULL;
        g_assert_cmpint(call_submit(&cl, "echo d", &id, &e), ==, -EUSERS);
        g_assert_null(id);
        g_assert_cmpstr(e.name, ==, CON_ERROR_SENDER_QUOTA);
        g_autofree char *want = g_strdup_printf("already has 3 unfinished tasks at agent 'worker', the limit per "
                                                "sender (system.max_queued_per_sender in test.yaml)");
        if (!strstr(e.message, want))
                g_error("unexpected message: %s", e.message);
        sd_bus_error_free(&e);
        /* The same through Deliver; a redelivery of a known id is never refused. */
        g_assert_cmpint(deliver(&cl, &e, NULL, "text", "s", "echo e", NULL), ==, -EUSERS);
        g_assert_cmpstr(e.name, ==, CON_ERROR_SENDER_QUOTA);
        sd_bus_error_free(&e);
        _cleanup_free_ char *again = NULL;
        g_assert_cmpint(deliver(&cl, &e, &again, "text", "s", "echo c", "id", "s", c, NULL), ==, 0);
        g_assert_cmpstr(again, ==, c);
        /* Another sender (root delivering a file of nobody's) is not affected. */
        if (geteuid() == 0) {
                _cleanup_free_ char *other = NULL;
                g_assert_cmpint(deliver(&cl, &e, &other, "text", "s", "/ping", "sender_uid", "u", 65534, NULL), ==, 0);
                g_free(wait_completed(&cl, other, 5 * USEC_PER_SEC));
        }
        /* One finishes: room for one more. */
        g_assert_cmpint(sd_bus_call_method(cl.bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Cancel", &e, NULL,
                                           "s", b), >=, 0);
        g_free(wait_completed(&cl, b, 5 * USEC_PER_SEC));
        _cleanup_free_ char *d = submit(&cl, "echo d");
        g_assert_cmpint(call_submit(&cl, "echo f", &id, &e), ==, -EUSERS);
        sd_bus_error_free(&e);

        g_assert_cmpint(sd_bus_call_method(cl.bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Cancel", &e, NULL,
                                           "s", a), >=, 0);
        g_free(wait_completed(&cl, d, 10 * USEC_PER_SEC));
        client_done(&cl);
        server_done(&sv);
}

static void test_kill_sessions(void) {
        Server sv;
        Client cl = {};
        uint32_t killed = 99;
        server_init(&sv, 2);
        g_assert_cmpint(client_connect(&cl, &sv), >=, 0);

        call_reason(&cl, "KillSessions", "nothing running", &killed);
        g_assert_cmpuint(killed, ==, 0);
        _cleanup_free_ char *a = submit(&cl, "sleep 30");
        _cleanup_free_ char *b = submit(&cl, "sleep 30 & sleep 31; wait");
        wait_status(&cl, a, "working");
        wait_status(&cl, b, "working");
        const char *why = "killed by contract CON-SYS-004: session ran longer than 30 min";
        call_reason(&cl, "KillSessions", why, &killed);
        g_assert_cmpuint(killed, ==, 2);
        g_autofree char *ea = wait_completed(&cl, a, 5 * USEC_PER_SEC);
        g_autofree char *eb = wait_completed(&cl, b, 5 * USEC_PER_SEC);
        g_assert_cmpstr(ea, ==, "failed");
        g_assert_cmpstr(eb, ==, "failed");
        assert_result(&cl, a, "failed", why);
        assert_result(&cl, b, "failed", why);
        /* The service survives and keeps working. */
        wait_state(&cl, "idle");
        _cleanup_free_ char *p = submit(&cl, "echo still here");
        g_free(wait_completed(&cl, p, 5 * USEC_PER_SEC));
        assert_result(&cl, p, "completed", "still here");

        client_done(&cl);
        server_done(&sv);
}

/* A session ends (exits, is canceled, is killed by KillSessions) while a process of its cgroup is
 * still exiting: populated at the first look, empty at the next one a moment later. The task ends
 * once, with the session's whole output, and the service lives on. (It used to finish the task
 * from inside the check, free the session and go on reading it: a use-after-free that killed
 * con-agentd just after it answered Cancel; the next call activated it again and it ran the
 * interrupted task again, test-transcript's and test-hostile-session's flake.) */
static void test_cgroup_emptying(void) {
        _cleanup_free_ char *own = NULL, *dir = NULL;
        if (geteuid() != 0 || con_cgroup_own_dir(&own) < 0) {
                con_test_skip("needs root and cgroup2");
                return;
        }
        g_assert_cmpint(asprintf(&dir, "%s/con-vtable-%d", own, (int) getpid()), >, 0);
        if (mkdir(dir, 0755) < 0) {
                g_assert_true(errno == EACCES || errno == EROFS || errno == EPERM);
                con_test_skip("cannot create a cgroup here");
                return;
        }
        Server sv;
        Client cl = {};
        uint32_t killed = 0;
        server_init(&sv, 2);
        server_stop(&sv, SIGTERM);
        sv.cgroup_dir = dir;
        fake_tool_still_exiting = true;
        server_start(&sv);
        fake_tool_still_exiting = false;
        g_assert_cmpint(client_connect(&cl, &sv), >=, 0);

        for (int i = 0; i < 3; i++) {
                _cleanup_free_ char *done = submit(&cl, "echo all of it; sleep 30 & exit 0");
                g_autofree char *sd = wait_completed(&cl, done, 10 * USEC_PER_SEC);
                g_assert_cmpstr(sd, ==, "completed");
                assert_result(&cl, done, "completed", "all of it");

                _cleanup_free_ char *victim = submit(&cl, "sleep 30 & sleep 31; echo never");
                wait_status(&cl, victim, "working");
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                g_assert_cmpint(sd_bus_call_method(cl.bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Cancel", &e,
                                                   NULL, "s", victim), >=, 0);
                g_autofree char *sv6 = wait_completed(&cl, victim, 10 * USEC_PER_SEC);
                g_assert_cmpstr(sv6, ==, "canceled");
                assert_result(&cl, victim, "canceled", "cancelled by root");

                _cleanup_free_ char *k = submit(&cl, "sleep 30 & sleep 32; wait");
                wait_status(&cl, k, "working");
                call_reason(&cl, "KillSessions", "cgroup test", &killed);
                g_assert_cmpuint(killed, ==, 1);
                g_autofree char *sk = wait_completed(&cl, k, 10 * USEC_PER_SEC);
                g_assert_cmpstr(sk, ==, "failed");
                assert_result(&cl, k, "failed", "cgroup test");
        }
        /* Still the same service: it never died and came back. */
        int status = 0;
        g_assert_cmpint(waitpid(sv.pid, &status, WNOHANG), ==, 0);
        client_done(&cl);
        server_done(&sv);
        (void) rmdir(dir);
}

static void test_quarantine(void) {
        Server sv;
        Client cl = {};
        int status;
        server_init(&sv, 1);
        g_assert_cmpint(client_connect(&cl, &sv), >=, 0);

        _cleanup_free_ char *running = submit(&cl, "sleep 30");
        wait_status(&cl, running, "working");
        call_reason(&cl, "Quarantine", "exfiltration suspected", NULL);
        /* It exits 0 on its own, files kept. */
        g_assert_cmpint(waitpid(sv.pid, &status, 0), ==, sv.pid);
        sv.pid = 0;
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 0);
        client_done(&cl);

        /* Its task failed with the reason (journal), seen after a restart. */
        server_start(&sv);
        g_assert_cmpint(client_connect(&cl, &sv), >=, 0);
        assert_result(&cl, running, "failed", "agent quarantined: exfiltration suspected (by root)");
        client_done(&cl);
        server_done(&sv);
}

static void write_marker(const char *dir, const char *name, const char *text) {
        g_autofree char *p = g_build_filename(dir, name, NULL);
        g_autofree char *tmp = g_strconcat(p, ".tmp", NULL);
        g_assert_true(g_file_set_contents(tmp, text, -1, NULL));
        g_assert_cmpint(rename(tmp, p), ==, 0);
}

static void test_markers(void) {
        Server sv;
        Client cl = {};
        int status;

        /* No state folder at all: nothing halted; creating it later is noticed. */
        server_init(&sv, 1);
        g_assert_cmpint(client_connect(&cl, &sv), >=, 0);
        _cleanup_free_ char *p = submit(&cl, "/ping");
        g_free(wait_completed(&cl, p, 5 * USEC_PER_SEC));
        g_assert_cmpint(mkdir(sv.state, 0755), ==, 0);
        g_autofree char *qdir = g_build_filename(sv.state, "quarantine", NULL);
        g_assert_cmpint(mkdir(qdir, 0755), ==, 0);
        write_marker(sv.state, "halt", "contract CON-SYS-001 failed: disk full\n");
        wait_state(&cl, "halted");
        assert_submit_refused(&cl, CON_ERROR_HALTED, "contract CON-SYS-001 failed: disk full");
        /* Resume cannot lift a sticky halt. */
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        int r = sd_bus_call_method(cl.bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, "Resume", &e, NULL, "");
        assert_invalid(&cl, r, &e, CON_ERROR_HALTED, "con resume");
        g_autofree char *halt = g_build_filename(sv.state, "halt", NULL);
        g_assert_cmpint(unlink(halt), ==, 0);
        wait_state(&cl, "idle");
        _cleanup_free_ char *p2 = submit(&cl, "/ping");
        g_free(wait_completed(&cl, p2, 5 * USEC_PER_SEC));

        /* halt-workers: this agent has tier worker. */
        write_marker(sv.state, "halt-workers", "workers off");
        wait_state(&cl, "halted");
        assert_submit_refused(&cl, CON_ERROR_HALTED, "workers off");
        g_autofree char *hw = g_build_filename(sv.state, "halt-workers", NULL);
        g_assert_cmpint(unlink(hw), ==, 0);
        wait_state(&cl, "idle");

        /* A quarantine marker while running: sessions killed, the service exits 0. */
        _cleanup_free_ char *running = submit(&cl, "sleep 30");
        wait_status(&cl, running, "working");
        write_marker(qdir, "worker", "contract CON-AGENT-002");
        g_assert_cmpint(waitpid(sv.pid, &status, 0), ==, sv.pid);
        sv.pid = 0;
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 0);
        client_done(&cl);

        /* ... and with the marker present it does not start (exit non-zero, no socket). */
        (void) unlink(sv.sock);
        fflush(NULL);
        pid_t pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0)
                server_main(&sv);
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 98);
        g_assert_cmpint(access(sv.sock, F_OK), <, 0);

        /* Released: starts, and the killed task is failed with the reason. */
        g_autofree char *q = g_build_filename(qdir, "worker", NULL);
        g_assert_cmpint(unlink(q), ==, 0);
        server_start(&sv);
        g_assert_cmpint(client_connect(&cl, &sv), >=, 0);
        assert_result(&cl, running, "failed", "agent quarantined: contract CON-AGENT-002");
        client_done(&cl);
        server_done(&sv);
}

static void test_picoclaw_not_configured(void) {
        Server sv;
        Client cl = {};
        server_init(&sv, 1);
        server_stop(&sv, SIGTERM);
        sv.agent = "thinker";
        server_start(&sv);
        g_assert_cmpint(client_connect(&cl, &sv), >=, 0);
        _cleanup_free_ char *id = submit(&cl, "write a poem");
        g_autofree char *st = wait_completed(&cl, id, 5 * USEC_PER_SEC);
        g_assert_cmpstr(st, ==, "failed");
        assert_result(&cl, id, "failed",
                      "agent 'thinker' has no model configured: set agents[1].model or base.model in test.yaml "
                      "and put the key in /etc/con/env (CON_API_KEY)");
        _cleanup_free_ char *p = submit(&cl, "/ping");
        g_free(wait_completed(&cl, p, 5 * USEC_PER_SEC));
        assert_result(&cl, p, "completed", "pong");
        client_done(&cl);
        server_done(&sv);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        (void) con_bus_errors_register();
        signal(SIGPIPE, SIG_IGN);
        g_test_add_func("/agent-vtable/ping-help-unknown", test_ping_help_unknown);
        g_test_add_func("/agent-vtable/deliver", test_deliver);
        g_test_add_func("/agent-vtable/exec", test_exec);
        g_test_add_func("/agent-vtable/restart-resumes", test_restart_resumes);
        g_test_add_func("/agent-vtable/access", test_access);
        g_test_add_func("/agent-vtable/id-scope", test_id_scope);
        g_test_add_func("/agent-vtable/halt-resume", test_halt_resume);
        g_test_add_func("/agent-vtable/kill-sessions", test_kill_sessions);
        g_test_add_func("/agent-vtable/sender-quota", test_sender_quota);
        g_test_add_func("/agent-vtable/cgroup-emptying", test_cgroup_emptying);
        g_test_add_func("/agent-vtable/quarantine", test_quarantine);
        g_test_add_func("/agent-vtable/markers", test_markers);
        g_test_add_func("/agent-vtable/picoclaw-not-configured", test_picoclaw_not_configured);
        return con_test_run();
}
