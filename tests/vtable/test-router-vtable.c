/* SPDX-License-Identifier: MIT */
/* con-routerd against a mock concierge on a private dbus-daemon (no root needed): delivery,
 * ids, rejection of every bad-file kind, refusals, retries while the agent fails, the audit
 * trail, and the daemon mode's inotify path and signals. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "audit.h"
#include "errors.h"
#include "macro.h"
#include "names.h"
#include "test-util.h"

typedef struct Mock {
        GMutex lock;
        GHashTable *delivered;  /* id -> text */
        unsigned transient_failures;
        unsigned duplicates;    /* "DUP..." tasks: refused as DuplicateTask this many times */
        GPtrArray *dup_ids;     /* ids the "DUP..." tasks were offered under */
        unsigned calls;
        volatile bool stop;
        char *address;
        GThread *thread;
        volatile bool ready;
} Mock;

static int mock_deliver(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Mock *mock = userdata;
        const char *key, *text = NULL, *id = NULL;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;
                if (streq(key, "text"))
                        r = sd_bus_message_read(m, "v", "s", &text);
                else if (streq(key, "id"))
                        r = sd_bus_message_read(m, "v", "s", &id);
                else
                        r = sd_bus_message_skip(m, "v");
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        g_mutex_lock(&mock->lock);
        mock->calls++;
        if (mock->transient_failures > 0) {
                mock->transient_failures--;
                g_mutex_unlock(&mock->lock);
                return sd_bus_error_set(error, CON_ERROR_QUEUE_FULL, "mock: queue full, try later");
        }
        if (text && g_str_has_prefix(text, "DUP")) {
                /* Another sender holds the id (task ids are scoped by sender). */
                g_ptr_array_add(mock->dup_ids, g_strdup(id));
                if (mock->duplicates > 0 || g_str_has_prefix(text, "DUPALWAYS")) {
                        if (mock->duplicates > 0)
                                mock->duplicates--;
                        g_mutex_unlock(&mock->lock);
                        return sd_bus_error_setf(error, CON_ERROR_DUPLICATE_TASK,
                                                 "mock: task id '%s' is already used by another sender", id);
                }
        }
        if (text && g_str_has_prefix(text, "REFUSE")) {
                g_mutex_unlock(&mock->lock);
                return sd_bus_error_set(error, CON_ERROR_INVALID_TASK, "mock: this task is refused");
        }
        g_hash_table_replace(mock->delivered, g_strdup(id), g_strdup(text));
        g_mutex_unlock(&mock->lock);
        return sd_bus_reply_method_return(m, "s", id);
}

static const sd_bus_vtable mock_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("Deliver", "a{sv}", "s", mock_deliver, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

static gpointer mock_thread(gpointer data) {
        Mock *mock = data;
        sd_bus *bus = NULL;

        g_assert_cmpint(sd_bus_new(&bus), >=, 0);
        g_assert_cmpint(sd_bus_set_address(bus, mock->address), >=, 0);
        g_assert_cmpint(sd_bus_set_bus_client(bus, true), >=, 0);
        g_assert_cmpint(sd_bus_start(bus), >=, 0);
        g_assert_cmpint(sd_bus_add_object_vtable(bus, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE, mock_vtable, mock), >=, 0);
        g_assert_cmpint(sd_bus_request_name(bus, "org.conspiracy.Concierge", 0), >=, 0);
        mock->ready = true;
        while (!mock->stop) {
                int r = sd_bus_process(bus, NULL);
                g_assert_cmpint(r, >=, 0);
                if (r == 0)
                        (void) sd_bus_wait(bus, 50 * 1000);
        }
        sd_bus_flush_close_unref(bus);
        return NULL;
}

typedef struct Env {
        char *dir;
        char *srv;
        char *config;
        char *audit;
        char *address;
        pid_t bus_pid;
        Mock mock;
} Env;

static void env_start(Env *e) {
        e->dir = test_tmpdir_new();
        e->srv = g_strdup_printf("%s/srv", e->dir);
        e->config = g_strdup_printf("%s/con.yaml", e->dir);
        e->audit = g_strdup_printf("%s/audit", e->dir);
        g_assert_cmpint(mkdir(e->srv, 0755), ==, 0);
        g_assert_cmpint(mkdir(e->audit, 0750), ==, 0);
        _cleanup_free_ char *inbox = g_strdup_printf("%s/inbox", e->srv);
        g_assert_cmpint(mkdir(inbox, 0755), ==, 0);
        test_write_file(e->config, "system:\n  name: test\nagents:\n  - name: concierge\n");

        int pid;
        e->address = test_bus_daemon_start(e->dir, &pid);
        e->bus_pid = (pid_t) pid;
        g_setenv("DBUS_SYSTEM_BUS_ADDRESS", e->address, true);

        g_mutex_init(&e->mock.lock);
        e->mock.delivered = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        e->mock.dup_ids = g_ptr_array_new_with_free_func(g_free);
        e->mock.address = e->address;
        e->mock.thread = g_thread_new("mock-agent", mock_thread, &e->mock);
        while (!e->mock.ready)
                g_usleep(10 * 1000);
}

static void env_stop(Env *e) {
        e->mock.stop = true;
        if (e->mock.thread)
                g_thread_join(e->mock.thread);
        g_hash_table_unref(e->mock.delivered);
        g_ptr_array_unref(e->mock.dup_ids);
        g_mutex_clear(&e->mock.lock);
        (void) kill(e->bus_pid, SIGTERM);
        test_tmpdir_remove(e->dir);
        g_free(e->dir);
        g_free(e->srv);
        g_free(e->config);
        g_free(e->audit);
        g_free(e->address);
}

static void drop(const Env *e, const char *name, const char *content, size_t len) {
        _cleanup_free_ char *p = g_strdup_printf("%s/inbox/%s", e->srv, name);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(write(fd, content, len), ==, (ssize_t) len);
        close(fd);
}

static bool inbox_has(const Env *e, const char *name) {
        _cleanup_free_ char *p = g_strdup_printf("%s/inbox/%s", e->srv, name);
        struct stat st;
        return lstat(p, &st) >= 0;
}

static char *rejected_reason(const Env *e, const char *name) {
        _cleanup_free_ char *d = g_strdup_printf("%s/rejected", e->srv);
        _cleanup_free_ char *suffix = g_strdup_printf("-inbox-%s.reason", name);
        GDir *dir = g_dir_open(d, 0, NULL);
        const char *n;
        char *content = NULL;
        if (!dir)
                return NULL;
        while ((n = g_dir_read_name(dir)))
                if (g_str_has_suffix(n, suffix)) {
                        _cleanup_free_ char *p = g_strdup_printf("%s/%s", d, n);
                        g_assert_true(g_file_get_contents(p, &content, NULL, NULL));
                        break;
                }
        g_dir_close(dir);
        return content;
}

static int run_router_once(const Env *e) {
        char *argv[] = { (char *) ROUTERD_PATH, (char *) "--once", (char *) "--config", e->config, (char *) "--srv-dir",
                         e->srv, (char *) "--audit-dir", e->audit, (char *) "--timeout", (char *) "20", NULL };
        int status = -1;
        GError *err = NULL;
        g_assert_true(g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, NULL, NULL, &status, &err));
        g_assert_no_error(err);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_once(void) {
        Env e = {};
        env_start(&e);

        drop(&e, "hello.task", "hello there", 11);
        drop(&e, "prio.task", "---\npriority: 7\n---\nurgent thing\n", 32);
        drop(&e, ".hidden.task", "not yet", 7);
        drop(&e, "partial.task.tmp", "not yet", 7);
        drop(&e, "note.txt", "not a task", 10);
        drop(&e, "nul.task", "a\0b", 3);
        drop(&e, "utf8.task", "bad \xff byte", 10);
        drop(&e, "refuse.task", "REFUSE me", 9);
        drop(&e, "bad name!.task", "odd name", 8);

        /* A symlink to a secret, a hard link to a file elsewhere, a fifo. */
        _cleanup_free_ char *secret = g_strdup_printf("%s/secret", e.dir);
        test_write_file(secret, "secret content");
        _cleanup_free_ char *l1 = g_strdup_printf("%s/inbox/link.task", e.srv);
        _cleanup_free_ char *l2 = g_strdup_printf("%s/inbox/hard.task", e.srv);
        _cleanup_free_ char *l3 = g_strdup_printf("%s/inbox/fifo.task", e.srv);
        g_assert_cmpint(symlink(secret, l1), ==, 0);
        g_assert_cmpint(link(secret, l2), ==, 0);
        g_assert_cmpint(mkfifo(l3, 0644), ==, 0);

        g_assert_cmpint(run_router_once(&e), ==, 0);

        /* Delivered with NAME as id, front matter stripped, files gone. */
        g_assert_cmpstr(g_hash_table_lookup(e.mock.delivered, "hello"), ==, "hello there");
        g_assert_cmpstr(g_hash_table_lookup(e.mock.delivered, "prio"), ==, "urgent thing");
        g_assert_false(inbox_has(&e, "hello.task"));
        g_assert_false(inbox_has(&e, "prio.task"));
        g_assert_false(inbox_has(&e, "bad name!.task"));
        g_assert_cmpuint(g_hash_table_size(e.mock.delivered), ==, 3);
        /* Ignored names stay. */
        g_assert_true(inbox_has(&e, ".hidden.task"));
        g_assert_true(inbox_has(&e, "partial.task.tmp"));
        g_assert_true(inbox_has(&e, "note.txt"));

        /* Every bad kind is rejected with a reason, and the targets are untouched. */
        const char *bad[] = { "nul.task", "utf8.task", "refuse.task", "link.task", "hard.task", "fifo.task" };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_free_ char *reason = rejected_reason(&e, bad[i]);
                if (!reason)
                        g_error("no reason file for %s", bad[i]);
                g_assert_true(strstr(reason, "reason: ") != NULL);
                g_assert_false(inbox_has(&e, bad[i]));
        }
        _cleanup_free_ char *r_refuse = rejected_reason(&e, "refuse.task");
        g_assert_nonnull(strstr(r_refuse, "mock: this task is refused"));
        _cleanup_free_ char *content = NULL;
        g_assert_true(g_file_get_contents(secret, &content, NULL, NULL));
        g_assert_cmpstr(content, ==, "secret content");
        struct stat st;
        g_assert_cmpint(lstat(secret, &st), ==, 0);
        g_assert_cmpuint(st.st_nlink, ==, 2); /* the hard link moved, not copied or followed */

        /* The audit trail is intact and holds one record per routing and rejection. */
        ConAuditVerify v = {};
        g_assert_cmpint(con_audit_verify(e.audit, &v), ==, 0);
        g_assert_cmpuint(v.records, ==, 3 + ELEMENTSOF(bad));
        _cleanup_free_ char *log = NULL, *logpath = g_strdup_printf("%s/audit.jsonl", e.audit);
        g_assert_true(g_file_get_contents(logpath, &log, NULL, NULL));
        g_assert_null(strstr(log, "hello there"));      /* never task text */
        g_assert_nonnull(strstr(log, "task.routed"));
        g_assert_nonnull(strstr(log, "task.rejected"));

        env_stop(&e);
}

static void test_retry(void) {
        Env e = {};
        env_start(&e);
        e.mock.transient_failures = 3;
        drop(&e, "later.task", "deliver me eventually", 21);

        g_assert_cmpint(run_router_once(&e), ==, 0);
        g_assert_cmpstr(g_hash_table_lookup(e.mock.delivered, "later"), ==, "deliver me eventually");
        g_assert_cmpuint(e.mock.calls, ==, 4);
        g_assert_false(inbox_has(&e, "later.task"));
        env_stop(&e);
}

/* The agent says another sender holds the id: the file goes again under NAME-<identity>, then
 * NAME-<random>; it is never dropped, and rejected (kept) only after ROUTER_ID_ATTEMPTS_MAX (8). */
static void test_duplicate_id(void) {
        Env e = {};
        env_start(&e);
        e.mock.duplicates = 2;
        drop(&e, "dup.task", "DUP twice", 9);
        g_assert_cmpint(run_router_once(&e), ==, 0);
        g_assert_cmpuint(e.mock.dup_ids->len, ==, 3);
        const char *a0 = g_ptr_array_index(e.mock.dup_ids, 0), *a1 = g_ptr_array_index(e.mock.dup_ids, 1),
                *a2 = g_ptr_array_index(e.mock.dup_ids, 2);
        g_assert_cmpstr(a0, ==, "dup");
        g_assert_true(g_regex_match_simple("^dup-[0-9a-f]{16}$", a1, 0, 0));
        g_assert_true(g_regex_match_simple("^dup-[0-9a-f]{16}$", a2, 0, 0));
        g_assert_cmpstr(a1, !=, a2);
        g_assert_cmpstr(g_hash_table_lookup(e.mock.delivered, a2), ==, "DUP twice");
        g_assert_false(inbox_has(&e, "dup.task"));
        _cleanup_free_ char *none = rejected_reason(&e, "dup.task");
        g_assert_null(none);

        /* Refused under every id: kept in rejected/ with the reason, after 8 attempts. */
        g_ptr_array_set_size(e.mock.dup_ids, 0);
        drop(&e, "always.task", "DUPALWAYS", 9);
        g_assert_cmpint(run_router_once(&e), ==, 0);
        g_assert_cmpuint(e.mock.dup_ids->len, ==, 8);
        g_assert_false(inbox_has(&e, "always.task"));
        _cleanup_free_ char *reason = rejected_reason(&e, "always.task");
        g_assert_nonnull(reason);
        g_assert_nonnull(strstr(reason, "is already used by another sender"));
        _cleanup_free_ char *content = NULL, *rejected = NULL;
        _cleanup_free_ char *d = g_strdup_printf("%s/rejected", e.srv);
        GDir *dir = g_dir_open(d, 0, NULL);
        g_assert_nonnull(dir);
        for (const char *n; (n = g_dir_read_name(dir));)
                if (g_str_has_suffix(n, "-inbox-always.task"))
                        rejected = g_strdup_printf("%s/%s", d, n);
        g_dir_close(dir);
        g_assert_nonnull(rejected);
        g_assert_true(g_file_get_contents(rejected, &content, NULL, NULL));
        g_assert_cmpstr(content, ==, "DUPALWAYS");

        /* Each collision is in the audit trail. */
        _cleanup_free_ char *log = NULL, *logpath = g_strdup_printf("%s/audit.jsonl", e.audit);
        g_assert_true(g_file_get_contents(logpath, &log, NULL, NULL));
        unsigned taken = 0;
        for (const char *p = log; (p = strstr(p, "task.id_taken")); p++)
                taken++;
        g_assert_cmpuint(taken, ==, 2 + 8);
        env_stop(&e);
}

typedef struct Signals {
        unsigned routed, rejected;
} Signals;

static int on_signal(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Signals *s = userdata;
        if (sd_bus_message_is_signal(m, CON_ROUTER_INTERFACE, "TaskRouted"))
                s->routed++;
        else if (sd_bus_message_is_signal(m, CON_ROUTER_INTERFACE, "TaskRejected"))
                s->rejected++;
        return 0;
}

static void test_daemon(void) {
        Env e = {};
        sd_bus *bus = NULL;
        Signals sig = {};
        env_start(&e);

        g_assert_cmpint(sd_bus_open_system(&bus), >=, 0);
        g_assert_cmpint(sd_bus_match_signal(bus, NULL, NULL, CON_ROUTER_PATH, CON_ROUTER_INTERFACE, NULL, on_signal, &sig),
                        >=, 0);

        /* A file present before the start is found by the first scan even when it is fresh. */
        drop(&e, "early.task", "early", 5);
        pid_t pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
                (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
                execl(ROUTERD_PATH, "con-routerd", "--config", e.config, "--srv-dir", e.srv, "--audit-dir", e.audit,
                      (char *) NULL);
                _exit(127);
        }
        /* Wait for the router's name. */
        for (unsigned i = 0; i < 200; i++) {
                if (sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                       "GetNameOwner", NULL, NULL, "s", CON_ROUTER_BUS_NAME) >= 0)
                        break;
                g_usleep(25 * 1000);
        }
        /* Written in place (IN_CLOSE_WRITE) and renamed in (IN_MOVED_TO). */
        for (unsigned i = 0; i < 50; i++) {
                char name[32], text[32];
                snprintf(name, sizeof name, "t%u.task", i);
                snprintf(text, sizeof text, "task %u", i);
                drop(&e, name, text, strlen(text));
        }
        _cleanup_free_ char *tmp = g_strdup_printf("%s/inbox/.moved.task.tmp", e.srv);
        _cleanup_free_ char *dst = g_strdup_printf("%s/inbox/moved.task", e.srv);
        test_write_file(tmp, "moved in");
        g_assert_cmpint(rename(tmp, dst), ==, 0);
        drop(&e, "zbad.task", "\xc0\x80", 2);

        for (unsigned i = 0; i < 400 && (sig.routed < 52 || sig.rejected < 1); i++) {
                while (sd_bus_process(bus, NULL) > 0)
                        ;
                (void) sd_bus_wait(bus, 25 * 1000);
        }
        /* The early file may take up to the settle delay: its mtime is fresh at start. */
        if (sig.routed != 52) {
                GList *keys = g_hash_table_get_keys(e.mock.delivered);
                for (GList *k = keys; k; k = k->next)
                        g_test_message("delivered: %s", (const char *) k->data);
                g_list_free(keys);
        }
        g_assert_cmpuint(sig.routed, ==, 52);
        g_assert_cmpuint(sig.rejected, ==, 1);
        g_assert_nonnull(g_hash_table_lookup(e.mock.delivered, "early"));
        g_assert_nonnull(g_hash_table_lookup(e.mock.delivered, "moved"));
        g_assert_nonnull(g_hash_table_lookup(e.mock.delivered, "t49"));

        uint64_t routed = 0;
        g_assert_cmpint(sd_bus_get_property_trivial(bus, CON_ROUTER_BUS_NAME, CON_ROUTER_PATH, CON_ROUTER_INTERFACE,
                                                    "Routed", NULL, 't', &routed), >=, 0);
        g_assert_cmpuint(routed, ==, 52);
        g_assert_cmpint(sd_bus_call_method(bus, CON_ROUTER_BUS_NAME, CON_ROUTER_PATH, CON_ROUTER_INTERFACE, "Rescan",
                                           NULL, NULL, NULL), >=, 0);

        g_assert_cmpint(kill(pid, SIGTERM), ==, 0);
        int status;
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 0);
        sd_bus_flush_close_unref(bus);
        env_stop(&e);
}

static uint32_t router_backlog(sd_bus *bus) {
        uint32_t v = UINT32_MAX;
        g_assert_cmpint(sd_bus_get_property_trivial(bus, CON_ROUTER_BUS_NAME, CON_ROUTER_PATH, CON_ROUTER_INTERFACE,
                                                    "Backlog", NULL, 'u', &v), >=, 0);
        return v;
}

static char *router_config_error(sd_bus *bus) {
        char *s = NULL;
        g_assert_cmpint(sd_bus_get_property_string(bus, CON_ROUTER_BUS_NAME, CON_ROUTER_PATH, CON_ROUTER_INTERFACE,
                                                   "ConfigError", NULL, &s), >=, 0);
        return s;
}

static bool wait_backlog(sd_bus *bus, uint32_t want) {
        for (unsigned i = 0; i < 120; i++) {
                if (router_backlog(bus) == want)
                        return true;
                g_usleep(25 * 1000);
        }
        return false;
}

static bool wait_config_error(sd_bus *bus, bool want_error) {
        for (unsigned i = 0; i < 120; i++) {
                _cleanup_free_ char *s = router_config_error(bus);
                if (isempty(s) != want_error)
                        return true;
                g_usleep(25 * 1000);
        }
        return false;
}

/* SIGHUP and Reload: an agent added to the config gets its inbox watched (its file is queued:
 * Backlog, as no agent answers for it here), a broken config is refused (ConfigError, the
 * concierge's inbox still routed), an agent removed is forgotten (a new file there is not
 * taken). */
static void test_reload(void) {
        static const char one[] = "system:\n  name: test\nagents:\n  - name: concierge\n";
        static const char two[] = "system:\n  name: test\nagents:\n  - name: concierge\n  - name: helper\n";
        Env e = {};
        sd_bus *bus = NULL;
        Signals sig = {};
        env_start(&e);
        _cleanup_free_ char *hinbox = g_strdup_printf("%s/agents/helper/inbox", e.srv);
        _cleanup_free_ char *h1 = g_strdup_printf("%s/h1.task", hinbox), *h2 = g_strdup_printf("%s/h2.task", hinbox);
        g_assert_cmpint(g_mkdir_with_parents(hinbox, 0755), ==, 0);
        test_write_file(h1, "for helper");

        g_assert_cmpint(sd_bus_open_system(&bus), >=, 0);
        g_assert_cmpint(sd_bus_match_signal(bus, NULL, NULL, CON_ROUTER_PATH, CON_ROUTER_INTERFACE, NULL, on_signal, &sig),
                        >=, 0);
        pid_t pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
                (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
                execl(ROUTERD_PATH, "con-routerd", "--config", e.config, "--srv-dir", e.srv, "--audit-dir", e.audit,
                      (char *) NULL);
                _exit(127);
        }
        for (unsigned i = 0; i < 200; i++) {
                if (sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                       "GetNameOwner", NULL, NULL, "s", CON_ROUTER_BUS_NAME) >= 0)
                        break;
                g_usleep(25 * 1000);
        }
        g_usleep(300 * 1000);
        g_assert_cmpuint(router_backlog(bus), ==, 0);   /* helper is not configured: not watched */

        test_write_file(e.config, two);
        g_assert_cmpint(kill(pid, SIGHUP), ==, 0);
        g_assert_true(wait_backlog(bus, 1));            /* its inbox scanned: the file is queued */
        g_assert_true(wait_config_error(bus, false));

        test_write_file(e.config, "system:\n  nmae: x\nagents:\n  - name: concierge\n");
        g_assert_cmpint(kill(pid, SIGHUP), ==, 0);
        g_assert_true(wait_config_error(bus, true));
        _cleanup_free_ char *err = router_config_error(bus);
        g_assert_nonnull(strstr(err, "system.nmae"));
        _cleanup_(sd_bus_error_free) sd_bus_error be = SD_BUS_ERROR_NULL;
        g_assert_cmpint(sd_bus_call_method(bus, CON_ROUTER_BUS_NAME, CON_ROUTER_PATH, CON_ROUTER_INTERFACE, "Reload",
                                           &be, NULL, NULL), <, 0);
        g_assert_cmpstr(be.name, ==, geteuid() == 0 ? CON_ERROR_INVALID_CONFIG : CON_ERROR_ACCESS_DENIED);
        /* the configuration loaded before is kept: the concierge's inbox is routed */
        drop(&e, "kept.task", "kept", 4);
        for (unsigned i = 0; i < 200 && sig.routed < 1; i++) {
                while (sd_bus_process(bus, NULL) > 0)
                        ;
                (void) sd_bus_wait(bus, 25 * 1000);
        }
        g_assert_cmpuint(sig.routed, ==, 1);
        g_assert_nonnull(g_hash_table_lookup(e.mock.delivered, "kept"));

        test_write_file(e.config, one);
        g_assert_cmpint(kill(pid, SIGHUP), ==, 0);
        g_assert_true(wait_config_error(bus, false));
        test_write_file(h2, "after removal");
        g_usleep(500 * 1000);
        g_assert_cmpuint(router_backlog(bus), ==, 1);   /* h1 still queued, h2 not taken */

        g_assert_cmpint(kill(pid, SIGTERM), ==, 0);
        int status;
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 0);
        sd_bus_flush_close_unref(bus);
        env_stop(&e);
}

static void test_bus_gone(void) {
        /* The bus daemon dies (a restart): the router exits non-zero instead of serving a dead
         * connection forever, so con up or systemd can start one on the new bus. */
        Env e = {};
        sd_bus *bus = NULL;
        env_start(&e);
        g_assert_cmpint(sd_bus_open_system(&bus), >=, 0);
        pid_t pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
                (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
                execl(ROUTERD_PATH, "con-routerd", "--config", e.config, "--srv-dir", e.srv, "--audit-dir", e.audit,
                      (char *) NULL);
                _exit(127);
        }
        bool up = false;
        for (unsigned i = 0; i < 200 && !up; i++) {
                up = sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                        "GetNameOwner", NULL, NULL, "s", CON_ROUTER_BUS_NAME) >= 0;
                if (!up)
                        g_usleep(25 * 1000);
        }
        g_assert_true(up);
        sd_bus_flush_close_unref(bus);
        e.mock.stop = true;
        g_thread_join(e.mock.thread);
        e.mock.thread = NULL;

        g_assert_cmpint(kill(e.bus_pid, SIGKILL), ==, 0);
        int status = 0;
        pid_t got = 0;
        for (unsigned i = 0; i < 200 && got == 0; i++) {
                got = waitpid(pid, &status, WNOHANG);
                if (got == 0)
                        g_usleep(25 * 1000);
        }
        if (got == 0)
                (void) kill(pid, SIGKILL);
        g_assert_cmpint(got, ==, pid);
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 1);
        env_stop(&e);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        if (access("/usr/bin/dbus-daemon", X_OK) < 0) {
                g_print("dbus-daemon is not installed; skipping\n");
                return 77;
        }
        g_test_add_func("/router/once", test_once);
        g_test_add_func("/router/retry", test_retry);
        g_test_add_func("/router/duplicate-id", test_duplicate_id);
        g_test_add_func("/router/daemon", test_daemon);
        g_test_add_func("/router/reload", test_reload);
        g_test_add_func("/router/bus-gone", test_bus_gone);
        return con_test_run();
}
