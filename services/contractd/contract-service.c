/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "audit.h"
#include "authz.h"
#include "bus-util.h"
#include "con-paths.h"
#include "config.h"
#include "contract-service.h"
#include "contract-util.h"
#include "errors.h"
#include "fileio.h"
#include "log.h"
#include "macro.h"
#include "markers.h"
#include "name-owners.h"
#include "names.h"
#include "netdoor.h"
#include "strv.h"
#include "time-util.h"
#include "user-util.h"

#define RELOAD_SETTLE_USEC (300 * USEC_PER_MSEC)
#define FIRST_RUN_USEC (200 * USEC_PER_MSEC)
#define AGENT_CALL_TIMEOUT_USEC (10 * USEC_PER_SEC)
/* A native check's worker is killed after this (a drift scan of 1,001 agents takes 1.6 s). */
#define NATIVE_CHECK_TIMEOUT_USEC (120 * USEC_PER_SEC)
#define ESCALATION_AGENT_DEFAULT "sysadmin"
#define BUDGET_NOTICE_INTERVAL_USEC (3600 * USEC_PER_SEC)
#define BUDGET_NOTICES_MAX 1024         /* (agent, budget) pairs remembered */

typedef struct Entry Entry;

typedef struct CheckResult {
        int status;                     /* -1 not run yet, 0 pass, 1 fail, 2 skip */
        char *message;
        uint64_t time_usec;             /* CLOCK_REALTIME of the end */
        uint64_t duration_usec;
} CheckResult;

struct Entry {
        Manager *manager;
        Contract *contract;
        CheckResult *results;           /* n_checks, or 1 for a preventive contract */
        size_t n_results;
        sd_event_source *timer;
        bool running;
        size_t next;                    /* next check to run */
        uint64_t started;               /* CLOCK_MONOTONIC of the current check's start */
        /* the child in progress: a shell check, or the worker of a native one */
        pid_t pid;
        int out_fd;
        char output[CONTRACT_OUTPUT_MAX + 1];
        size_t output_len;
        bool timed_out;
        sd_event_source *child_src, *io_src, *timeout_src;
};

/* The last notice to the sysadmin of one agent's exhausted budget. */
typedef struct BudgetNotice {
        char *key;                      /* "<agent>/<budget>" */
        uint64_t sent_usec;             /* CLOCK_MONOTONIC */
} BudgetNotice;

typedef struct ViolationSlot {
        char *key;                      /* "<id>/<check>" */
        Violation v;
} ViolationSlot;

struct Manager {
        ContractsOptions opts;
        char *contracts_dir, *state_dir, *audit_dir, *activation_dir, *bus_policy_dir, *polkit_rules_dir;
        const char *config_path;
        char *config_error;     /* why the last load of config_path was refused; NULL when it was not */
        sd_event_source *sighup;
        sd_event *event;
        sd_bus *bus;
        ConConfig *config;
        ConAudit *audit;
        ConAuthz *authz;                /* polkit checks of org.conspiracy.contracts.admin */
        bool audit_broken_logged;

        Entry *entries;
        size_t n_entries;
        char **invalid;                 /* pairs: location, reason */
        ViolationSlot *violations;
        size_t n_violations;
        char **quarantined;
        char *halted;                   /* "", "all", "workers" */

        sd_bus_message **evals;         /* Evaluate calls waiting for the sweep */
        size_t n_evals;
        bool starting_sweep;            /* Evaluate is starting every entry: do not answer yet */
        bool reload_pending;
        /* Digest of the contract files and con.yaml taken just before the last load: Evaluate
         * compares it with the files on disk and reloads first when they changed. */
        uint8_t loaded_fp[CONTRACT_FINGERPRINT_SIZE];
        bool have_loaded_fp;

        sd_event_source *inotify_src, *reload_timer;

        /* The model gateway's BudgetExhausted signals: only from the current owner of its name. */
        ConNameOwners *models_owner;
        sd_bus_slot *budget_match;
        BudgetNotice *budget_notices;
        size_t n_budget_notices;
};


static void entry_run_next(Entry *e);
static void manager_reload(Manager *m);

/* ---- audit ---- */

static void audit_record(Manager *m, const char *event, cJSON *fields) {
        if (!m->audit) {
                cJSON_Delete(fields);
                return;
        }
        int k = con_audit_append(m->audit, "contracts", event, fields);
        cJSON_Delete(fields);
        if (k < 0) {
                if (!m->audit_broken_logged)
                        log_error("Failed to append to the audit log %s: %s", m->audit_dir, strerror(-k));
                m->audit_broken_logged = true;
        } else
                m->audit_broken_logged = false;
}

static cJSON *fields(const char *key, ...) {
        cJSON *f = cJSON_CreateObject();
        va_list ap;
        va_start(ap, key);
        for (const char *k = key; f && k; k = va_arg(ap, const char *)) {
                const char *v = va_arg(ap, const char *);
                if (v)
                        cJSON_AddStringToObject(f, k, v);
        }
        va_end(ap);
        return f;
}

/* ---- agent calls ---- */

static int on_agent_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        char *what = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        if (e && !sd_bus_error_has_names(e, SD_BUS_ERROR_NAME_HAS_NO_OWNER, SD_BUS_ERROR_SERVICE_UNKNOWN))
                log_warning("%s: %s", what, e->message ?: e->name);
        free(what);
        return 0;
}

/* Calls method on an agent; auto_start false: only a running agent is reached. */
static int call_agent(Manager *m, const char *agent, const char *method, bool auto_start, const char *types, ...) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *msg = NULL;
        _cleanup_free_ char *bn = NULL;
        char *what = NULL;
        va_list ap;
        int k = con_agent_bus_name(agent, &bn);
        if (k < 0)
                return k;
        k = sd_bus_message_new_method_call(m->bus, &msg, bn, CON_AGENT_PATH, CON_AGENT_INTERFACE, method);
        if (k < 0)
                return k;
        (void) sd_bus_message_set_auto_start(msg, auto_start);
        if (types) {
                va_start(ap, types);
                k = sd_bus_message_appendv(msg, types, ap);
                va_end(ap);
                if (k < 0)
                        return k;
        }
        if (asprintf(&what, "%s on agent %s", method, agent) < 0)
                return -ENOMEM;
        k = sd_bus_call_async(m->bus, NULL, msg, on_agent_reply, what, AGENT_CALL_TIMEOUT_USEC);
        if (k < 0)
                free(what);
        return k;
}

static void dbus_reload_config(Manager *m) {
        int k = sd_bus_call_method_async(m->bus, NULL, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                         "org.freedesktop.DBus", "ReloadConfig", NULL, NULL, NULL);
        if (k < 0)
                log_warning("Failed to ask the bus to reload its policy: %s", strerror(-k));
}

/* ---- sticky state: halt and quarantine markers ---- */

static int ensure_dir(const char *path) {
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

/* The markers (bus/fabric/markers.h) as the agents see them: the same trust rule, so a file an
 * agent user planted in the state folder is neither reported nor acted on here. */
static int on_network_cut_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        if (si->si_code != CLD_EXITED || si->si_status != 0)
                log_error("Could not update the network door (nftables table inet conspiracyos) after a halt or "
                          "quarantine change; see above. Run con bootstrap.");
        return 0;
}

/* The markers changed: the network door follows them (a halted or quarantined agent sends
 * nothing, at once). nft blocks, so a child does it; only with the default state folder (the one
 * the table is rendered from) and only when the table exists. */
static void network_cut_sync(Manager *m) {
        _cleanup_(sd_event_source_unrefp) sd_event_source *src = NULL;

        if (!m->config || !streq(m->state_dir, CON_NETDOOR_STATE_DIR) || geteuid() != 0)
                return;
        pid_t pid = fork();
        if (pid < 0) {
                log_error_errno(-errno, "Cannot fork to update the network door: %m");
                return;
        }
        if (pid == 0) {
                _cleanup_free_ char *change = NULL, *error = NULL;
                int r = con_netdoor_refresh(m->config, &change, &error);
                if (r < 0) {
                        log_error("network door: %s", error ?: strerror(-r));
                        _exit(EXIT_FAILURE);
                }
                if (change)
                        log_info("network door: %s", change);
                _exit(EXIT_SUCCESS);
        }
        if (sd_event_add_child(m->event, &src, pid, WEXITED, on_network_cut_exit, m) < 0 ||
            sd_event_source_set_floating(src, true) < 0) {
                (void) waitpid(pid, NULL, 0);
                return;
        }
}

static void load_state(Manager *m) {
        _cleanup_strv_free_ char **q = NULL;
        const char *h = "";
        int k = con_marker_halted(m->state_dir, &h);
        if (k < 0)
                log_warning("Cannot read the halt markers in %s: %s", m->state_dir, strerror(-k));
        free(m->halted);
        m->halted = strdup(h);
        k = con_marker_list_quarantined(m->state_dir, &q);
        if (k < 0)
                log_warning("Cannot read the quarantine markers in %s: %s", m->state_dir, strerror(-k));
        strv_free(m->quarantined);
        m->quarantined = TAKE_PTR(q);
}

static void emit_state_changed(Manager *m) {
        (void) sd_bus_emit_properties_changed(m->bus, CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE, "Halted",
                                              "Quarantined", NULL);
}

static void emit_action(Manager *m, const char *action, const char *target, const char *id) {
        (void) sd_bus_emit_signal(m->bus, CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE, "ActionTaken", "sss", action,
                                  target, strempty(id));
        log_event(CON_EVENT_ACTION_TAKEN, LOG_NOTICE,
                  &(ConLogFields) { .contract = id && *id ? id : NULL, .action = action, .agent = target },
                  "Action %s on %s%s%s", action, target, id && *id ? " for contract " : "", strempty(id));
}

static bool agent_is_worker(Manager *m, const char *name) {
        const ConAgent *a = m->config ? con_config_find_agent(m->config, name) : NULL;
        return a && a->tier == CON_TIER_WORKER;
}

static int do_halt(Manager *m, bool workers, const char *reason, const char *id) {
        int k = con_marker_write(m->state_dir, workers ? CON_MARKER_HALT_WORKERS : CON_MARKER_HALT, NULL, reason);
        if (k < 0)
                log_error("Failed to write the halt marker in %s: %s", m->state_dir, strerror(-k));
        unsigned n = 0;
        for (size_t i = 0; m->config && i < m->config->n_agents; i++) {
                const char *a = m->config->agents[i].name;
                if (workers && !agent_is_worker(m, a))
                        continue;
                (void) call_agent(m, a, "Halt", false, "s", reason);
                n++;
        }
        load_state(m);
        network_cut_sync(m);
        audit_record(m, workers ? "action.halt_workers" : "action.halt_agents",
                     fields("contract", id, "reason", reason, "marker", k < 0 ? strerror(-k) : "written", NULL));
        emit_action(m, workers ? "halt_workers" : "halt_agents", workers ? "workers" : "all", id);
        emit_state_changed(m);
        log_info("Halted %s agents (%u called): %s", workers ? "worker" : "all", n, reason);
        return k;
}

static int do_resume(Manager *m, const char *by) {
        int k = con_marker_remove(m->state_dir, CON_MARKER_HALT, NULL);
        if (k < 0)
                return k;
        k = con_marker_remove(m->state_dir, CON_MARKER_HALT_WORKERS, NULL);
        if (k < 0)
                return k;
        for (size_t i = 0; m->config && i < m->config->n_agents; i++)
                (void) call_agent(m, m->config->agents[i].name, "Resume", false, NULL);
        load_state(m);
        network_cut_sync(m);
        audit_record(m, "resume", fields("by", by, NULL));
        emit_action(m, "resume", "all", "");
        emit_state_changed(m);
        log_info("Resumed the agents (by %s)", by);
        return 0;
}

/* Moves a file, also across file systems (/usr and /srv may differ). */
static int move_file(const char *from, const char *to) {
        _cleanup_free_ char *data = NULL;
        size_t len;
        if (rename(from, to) == 0)
                return 0;
        if (errno != EXDEV)
                return -errno;
        int k = read_file_nofollow(from, CON_FILE_MAX, &data, &len);
        if (k < 0)
                return k;
        k = write_file_atomic(to, data, len, 0644, 0, 0);
        if (k < 0)
                return k;
        return unlink(from) < 0 ? -errno : 0;
}

static int write_or_remove(const char *dir, const char *name, const char *text) {
        _cleanup_free_ char *p = NULL;
        if (asprintf(&p, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        if (!text)
                return unlink(p) < 0 && errno != ENOENT ? -errno : 0;
        if (ensure_dir(dir) < 0)
                return -errno;
        return write_file_atomic(p, text, strlen(text), 0644, 0, 0);
}

static int write_quarantine_files(Manager *m) {
        _cleanup_free_ char *policy = NULL, *rules = NULL;
        int k = contract_quarantine_bus_policy(m->quarantined, &policy);
        if (k >= 0)
                k = contract_quarantine_polkit_rules(m->quarantined, &rules);
        if (k < 0)
                return k;
        k = write_or_remove(m->bus_policy_dir, "org.conspiracy.quarantine.conf", policy);
        if (k < 0)
                return k;
        k = write_or_remove(m->polkit_rules_dir, "40-conspiracy-quarantine.rules", rules);
        dbus_reload_config(m);
        return k;
}

static int activation_paths(Manager *m, const char *agent, char **ret_active, char **ret_aside) {
        _cleanup_free_ char *camel = NULL;
        if (con_agent_camel(agent, &camel) < 0)
                return -EINVAL;
        if (asprintf(ret_active, "%s/org.conspiracy.%s.service", m->activation_dir, camel) < 0 ||
            asprintf(ret_aside, "%s/quarantine/%s.service", m->state_dir, agent) < 0)
                return -ENOMEM;
        return 0;
}

static int do_quarantine(Manager *m, const char *agent, const char *reason, const char *id, sd_bus_error *error) {
        _cleanup_free_ char *active = NULL, *aside = NULL;
        int k;
        if (!con_agent_name_valid(agent))
                return con_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "'%s' is not an agent name: %s", agent,
                                          con_name_problem_to_string(con_agent_name_check(agent)));
        if (m->config && !con_config_find_agent(m->config, agent))
                return con_bus_error_setf(error, CON_ERROR_NO_SUCH_AGENT, "no agent '%s' in %s", agent, m->config_path);
        if (activation_paths(m, agent, &active, &aside) < 0)
                return -ENOMEM;
        k = con_marker_write(m->state_dir, CON_MARKER_QUARANTINE, agent, reason);
        if (k < 0)
                return sd_bus_error_set_errnof(error, -k, "cannot write the quarantine marker in %s: %m", m->state_dir);
        k = move_file(active, aside);
        if (k < 0 && k != -ENOENT)
                log_warning("Failed to move %s aside: %s", active, strerror(-k));
        load_state(m);
        network_cut_sync(m);
        (void) call_agent(m, agent, "Quarantine", false, "s", reason);
        k = write_quarantine_files(m);
        if (k < 0)
                log_error("Failed to write the quarantine policy files: %s", strerror(-k));
        audit_record(m, "action.quarantine", fields("agent", agent, "contract", id, "reason", reason, NULL));
        emit_action(m, "quarantine", agent, id);
        emit_state_changed(m);
        log_info("Quarantined agent %s: %s", agent, reason);
        return 0;
}

static int do_release(Manager *m, const char *agent, const char *by, sd_bus_error *error) {
        _cleanup_free_ char *active = NULL, *aside = NULL;
        if (!con_agent_name_valid(agent))
                return con_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "'%s' is not an agent name", agent);
        if (!strv_contains(m->quarantined, agent))
                return con_bus_error_setf(error, CON_ERROR_NO_SUCH_AGENT, "agent '%s' is not quarantined", agent);
        if (activation_paths(m, agent, &active, &aside) < 0)
                return -ENOMEM;
        int k = move_file(aside, active);
        if (k < 0 && k != -ENOENT)
                return sd_bus_error_set_errnof(error, -k, "cannot restore %s: %m", active);
        k = con_marker_remove(m->state_dir, CON_MARKER_QUARANTINE, agent);
        if (k < 0)
                return sd_bus_error_set_errnof(error, -k, "cannot remove the quarantine marker of %s in %s: %m", agent,
                                               m->state_dir);
        load_state(m);
        network_cut_sync(m);
        k = write_quarantine_files(m);
        if (k < 0)
                log_error("Failed to rewrite the quarantine policy files: %s", strerror(-k));
        audit_record(m, "release", fields("agent", agent, "by", by, NULL));
        emit_action(m, "release", agent, "");
        emit_state_changed(m);
        log_info("Released agent %s (by %s)", agent, by);
        return 0;
}

/* ---- violations and actions ---- */

static Violation *violation_get(Manager *m, const char *id, const char *check) {
        _cleanup_free_ char *key = NULL;
        if (asprintf(&key, "%s/%s", id, check) < 0)
                return NULL;
        for (size_t i = 0; i < m->n_violations; i++)
                if (streq(m->violations[i].key, key))
                        return &m->violations[i].v;
        ViolationSlot *n = realloc(m->violations, (m->n_violations + 1) * sizeof *n);
        if (!n)
                return NULL;
        m->violations = n;
        n[m->n_violations] = (ViolationSlot) { .key = TAKE_PTR(key) };
        return &n[m->n_violations++].v;
}

/* One escalation task on its way to an agent. Its id is predictable (contract, check, since): when
 * another sender took it first, the agent says DuplicateTask and it goes again under a random id. */
#define ESCALATION_ATTEMPTS_MAX 4
typedef struct Escalation {
        Manager *m;
        char *agent, *text, *tid, *contract, *check;
        unsigned attempt;
} Escalation;

static Escalation *escalation_free(Escalation *x) {
        if (!x)
                return NULL;
        free(x->agent);
        free(x->text);
        free(x->tid);
        free(x->contract);
        free(x->check);
        free(x);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Escalation *, escalation_free);

static void escalation_destroy(void *userdata) {
        escalation_free(userdata);
}

static int escalation_send(Escalation *x);

/* x belongs to the call's slot (freed when it goes, also when the bus closes first). */
static int on_escalation_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Escalation *x = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        uint64_t rnd;

        if (!e)
                return 0;
        if (!sd_bus_error_has_name(e, CON_ERROR_DUPLICATE_TASK) || x->attempt + 1 >= ESCALATION_ATTEMPTS_MAX) {
                log_warning("Escalation %s to agent %s: %s", x->tid, x->agent, e->message ?: e->name);
                return 0;
        }
        audit_record(x->m, "escalation.id_taken", fields("contract", x->contract, "check", x->check, "agent",
                                                         x->agent, "task_id", x->tid, NULL));
        _cleanup_(escalation_freep) Escalation *next = calloc(1, sizeof(Escalation));
        if (!next)
                return 0;
        if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t) sizeof(rnd))
                rnd = (uint64_t) time(NULL) * 2654435761u ^ (uint64_t) x->attempt;
        if (contract_escalation_retry_id(x->tid, rnd, &next->tid) < 0)
                return 0;
        log_warning("Escalation id %s is taken on agent %s by another sender; sending it as %s", x->tid, x->agent,
                    next->tid);
        next->m = x->m;
        next->attempt = x->attempt + 1;
        next->agent = TAKE_PTR(x->agent);
        next->text = TAKE_PTR(x->text);
        next->contract = TAKE_PTR(x->contract);
        next->check = TAKE_PTR(x->check);
        if (escalation_send(next) >= 0)
                TAKE_PTR(next);
        return 0;
}

/* Sends x; on success the call's slot owns it. */
static int escalation_send(Escalation *x) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *msg = NULL;
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        _cleanup_free_ char *bn = NULL;
        int k = con_agent_bus_name(x->agent, &bn);
        if (k >= 0)
                k = sd_bus_message_new_method_call(x->m->bus, &msg, bn, CON_AGENT_PATH, CON_AGENT_INTERFACE,
                                                   "Deliver");
        if (k >= 0)
                k = sd_bus_message_append(msg, "a{sv}", 3, "text", "s", x->text, "id", "s", x->tid, "priority",
                                          "y", (uint8_t) 7);
        if (k >= 0)
                k = sd_bus_call_async(x->m->bus, &slot, msg, on_escalation_reply, x, AGENT_CALL_TIMEOUT_USEC);
        if (k < 0) {
                log_warning("Failed to send escalation %s to agent %s: %s", x->tid, x->agent, strerror(-k));
                return k;
        }
        audit_record(x->m, "escalation", fields("contract", x->contract, "check", x->check, "agent", x->agent,
                                                "task_id", x->tid, NULL));
        (void) sd_bus_slot_set_destroy_callback(slot, escalation_destroy);
        (void) sd_bus_slot_set_floating(slot, 1);
        return 0;
}

static void escalate(Manager *m, const Contract *c, const ContractCheck *ch, const Violation *v, const char *found) {
        _cleanup_free_ char *tid = NULL, *text = NULL;
        const char *agent = ch->escalate ?: ESCALATION_AGENT_DEFAULT;
        if (m->config && !con_config_find_agent(m->config, agent)) {
                log_warning("Contract %s/%s: escalation agent '%s' is not configured; not escalating", c->id, ch->name, agent);
                return;
        }
        if (contract_escalation_id(c->id, ch->name, v->since_usec, &tid) < 0 ||
            asprintf(&text, "Health contract %s, check %s, failed: %s.\nAction taken: %s.\n%s%s\nContract file: %s\n",
                     c->id, ch->name, found, ch->action ? contract_action_to_string(ch->action) : "none (report only)",
                     strempty(ch->message), ch->message ? "\n" : "", c->file) < 0)
                return;
        _cleanup_(escalation_freep) Escalation *x = calloc(1, sizeof(Escalation));
        if (!x)
                return;
        x->m = m;
        x->tid = TAKE_PTR(tid);
        x->text = TAKE_PTR(text);
        x->agent = strdup(agent);
        x->contract = strdup(c->id);
        x->check = strdup(ch->name);
        if (!x->agent || !x->contract || !x->check)
                return;
        if (escalation_send(x) >= 0)
                TAKE_PTR(x);
}

/* ---- budget notices ---- */

static bool budget_key_valid(const char *budget) {
        return streq(budget, "budget_tokens_per_task") || streq(budget, "budget_tokens_per_day") ||
                streq(budget, "budget_cost_per_day");
}

/* True when agent/budget was not noticed within the interval (and records now). */
static bool budget_notice_take(Manager *m, const char *agent, const char *budget) {
        _cleanup_free_ char *key = NULL;
        uint64_t now = con_now(CLOCK_MONOTONIC);
        size_t oldest = 0;

        if (asprintf(&key, "%s/%s", agent, budget) < 0)
                return false;
        for (size_t i = 0; i < m->n_budget_notices; i++) {
                BudgetNotice *n = &m->budget_notices[i];
                if (streq(n->key, key)) {
                        if (now - n->sent_usec < BUDGET_NOTICE_INTERVAL_USEC)
                                return false;
                        n->sent_usec = now;
                        return true;
                }
                if (n->sent_usec < m->budget_notices[oldest].sent_usec)
                        oldest = i;
        }
        if (m->n_budget_notices >= BUDGET_NOTICES_MAX) {
                /* Full: the oldest slot goes (agents and budgets are few; this bounds a long run). */
                free(m->budget_notices[oldest].key);
                m->budget_notices[oldest] = (BudgetNotice) { .key = TAKE_PTR(key), .sent_usec = now };
                return true;
        }
        BudgetNotice *n = realloc(m->budget_notices, (m->n_budget_notices + 1) * sizeof *n);
        if (!n)
                return false;
        m->budget_notices = n;
        n[m->n_budget_notices++] = (BudgetNotice) { .key = TAKE_PTR(key), .sent_usec = now };
        return true;
}

/* BudgetExhausted(agent, budget) from the model gateway: one task to the sysadmin per agent and
 * budget an hour, from this root service, whatever the policy lets the agent do. */
static int on_budget_exhausted(sd_bus_message *msg, void *userdata, sd_bus_error *ret_error) {
        Manager *m = userdata;
        const char *agent, *budget, *to = ESCALATION_AGENT_DEFAULT;
        _cleanup_free_ char *tid = NULL, *text = NULL;

        const char *owner = con_name_owners_get(m->models_owner, CON_MODELS_BUS_NAME);
        if (!owner || !streq_ptr(sd_bus_message_get_sender(msg), owner))
                return 0;       /* not the gateway: anyone can emit a signal */
        if (sd_bus_message_read(msg, "ss", &agent, &budget) < 0 || !budget_key_valid(budget) ||
            !m->config || !con_config_find_agent(m->config, agent))
                return 0;
        if (!budget_notice_take(m, agent, budget))
                return 0;
        audit_record(m, "budget.exhausted", fields("agent", agent, "budget", budget, NULL));
        if (streq(agent, to) || !con_config_find_agent(m->config, to)) {
                log_warning("Agent %s used up its %s; no other sysadmin agent to tell", agent, budget);
                return 0;
        }
        if (asprintf(&tid, "budget-%s-%s-%" PRIu64, agent, budget, con_now(CLOCK_REALTIME) / USEC_PER_SEC) < 0 ||
            asprintf(&text, "Model budget exhausted: agent '%s' used up its %s. Its model calls are refused "
                     "(its tasks pause) until the budget allows more (models: in %s).\n"
                     "Sent by con-contractd, at most once an hour per agent and budget.\n",
                     agent, budget, m->config_path) < 0)
                return 0;
        _cleanup_(escalation_freep) Escalation *x = calloc(1, sizeof(Escalation));
        if (!x)
                return 0;
        x->m = m;
        x->tid = TAKE_PTR(tid);
        x->text = TAKE_PTR(text);
        x->agent = strdup(to);
        x->contract = strdup("budget");
        x->check = strdup(budget);
        if (!x->agent || !x->contract || !x->check)
                return 0;
        log_info("Agent %s used up its %s; telling %s", agent, budget, to);
        if (escalation_send(x) >= 0)
                TAKE_PTR(x);
        return 0;
}

static int manager_watch_models(Manager *m) {
        int k = con_name_owners_new(m->bus, CON_MODELS_BUS_NAME, false, NULL, NULL, &m->models_owner);
        if (k < 0)
                return k;
        k = con_name_owners_add(m->models_owner, CON_MODELS_BUS_NAME);
        if (k < 0)
                return k;
        return sd_bus_match_signal_async(m->bus, &m->budget_match, NULL, CON_MODELS_PATH, CON_MODELS_INTERFACE,
                                         "BudgetExhausted", on_budget_exhausted, NULL, m);
}

static void run_action(Manager *m, const Contract *c, const ContractCheck *ch, const char *found) {
        _cleanup_free_ char *reason = NULL;
        if (asprintf(&reason, "contract %s (%s) failed: %s", c->id, ch->name, found) < 0)
                return;
        switch (ch->action) {
        case CONTRACT_ACTION_HALT_AGENTS:
        case CONTRACT_ACTION_HALT_WORKERS:
                (void) do_halt(m, ch->action == CONTRACT_ACTION_HALT_WORKERS, reason, c->id);
                break;
        case CONTRACT_ACTION_QUARANTINE: {
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                if (do_quarantine(m, c->scope_agent, reason, c->id, &e) < 0)
                        log_error("Contract %s: quarantine of %s failed: %s", c->id, c->scope_agent, e.message);
                break;
        }
        case CONTRACT_ACTION_KILL_SESSION: {
                unsigned n = 0;
                for (size_t i = 0; m->config && i < m->config->n_agents; i++) {
                        const char *a = m->config->agents[i].name;
                        if (c->scope_agent && !streq(a, c->scope_agent))
                                continue;
                        (void) call_agent(m, a, "KillSessions", false, "s", reason);
                        n++;
                }
                audit_record(m, "action.kill_session", fields("contract", c->id, "check", ch->name,
                                                              "agent", c->scope_agent ?: "*", NULL));
                emit_action(m, "kill_session", c->scope_agent ?: "all", c->id);
                log_info("Contract %s: killed the sessions of %s", c->id, c->scope_agent ?: "every agent");
                break;
        }
        case CONTRACT_ACTION_ALERT:
                audit_record(m, "action.alert", fields("contract", c->id, "check", ch->name, NULL));
                emit_action(m, "alert", ch->escalate ?: ESCALATION_AGENT_DEFAULT, c->id);
                break;
        default:
                break;
        }
}

static void entry_record(Entry *e, size_t idx, int status, const char *message, const char *output) {
        Manager *m = e->manager;
        const Contract *c = e->contract;
        CheckResult *res = &e->results[idx];
        free(res->message);
        res->message = strdup(message);
        res->status = status;
        res->time_usec = con_now(CLOCK_REALTIME);
        res->duration_usec = con_now(CLOCK_MONOTONIC) - e->started;
        if (c->type == CONTRACT_PREVENTIVE)
                return;
        const ContractCheck *ch = &c->checks[idx];
        Violation *v = violation_get(m, c->id, ch->name);
        if (!v)
                return;
        switch (violation_update(v, status == 0, res->time_usec)) {
        case VIOLATION_DETECTED: {
                /* Signals carry the contract's own words or the native finding, never shell output. */
                const char *said = ch->message ?: (check_kind_is_shell(ch->kind) ? "the check failed" : message);
                const char *action = ch->action ? contract_action_to_string(ch->action) : "none";
                log_event(CON_EVENT_VIOLATION_RAISED, LOG_WARNING,
                          &(ConLogFields) { .contract = c->id, .agent = c->scope_agent, .action = action },
                          "Contract %s check %s failed: %s (action %s)", c->id, ch->name, message, action);
                audit_record(m, "violation.detected",
                             fields("contract", c->id, "check", ch->name, "file", c->file, "severity",
                                    contract_action_severity(ch->action), "action", action, "finding", message,
                                    "output", output && *output ? output : NULL, NULL));
                (void) sd_bus_emit_signal(m->bus, CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE, "ViolationDetected",
                                          "sssss", c->id, ch->name, contract_action_severity(ch->action), said, action);
                run_action(m, c, ch, message);
                if (violation_take_escalation(v))
                        escalate(m, c, ch, v, message);
                break;
        }
        case VIOLATION_CLEARED:
                log_event(CON_EVENT_VIOLATION_CLEARED, LOG_INFO,
                          &(ConLogFields) { .contract = c->id, .agent = c->scope_agent },
                          "Contract %s check %s passes again", c->id, ch->name);
                audit_record(m, "violation.cleared", fields("contract", c->id, "check", ch->name, "finding", message, NULL));
                (void) sd_bus_emit_signal(m->bus, CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE, "ViolationCleared",
                                          "ss", c->id, ch->name);
                break;
        default:
                break;
        }
}

/* ---- evaluation ---- */

static int reply_results(Manager *m, sd_bus_message *call);

static void manager_sweep_done(Manager *m) {
        /* A check that cannot start is recorded inside entry_start(): while Evaluate is still
         * starting the entries, the ones not started yet are not "running" and would be reported
         * pending. */
        if (m->starting_sweep)
                return;
        for (size_t i = 0; i < m->n_entries; i++)
                if (m->entries[i].running)
                        return;
        for (size_t i = 0; i < m->n_evals; i++) {
                int k = reply_results(m, m->evals[i]);
                if (k < 0)
                        (void) sd_bus_reply_method_errnof(m->evals[i], -k, "Failed to send the results: %m");
                sd_bus_message_unref(m->evals[i]);
        }
        m->n_evals = 0;
        (void) sd_bus_emit_properties_changed(m->bus, CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE, "Results", NULL);
        if (m->reload_pending)
                manager_reload(m);
}

static void entry_shell_cleanup(Entry *e) {
        e->child_src = sd_event_source_disable_unref(e->child_src);
        e->io_src = sd_event_source_disable_unref(e->io_src);
        e->timeout_src = sd_event_source_disable_unref(e->timeout_src);
        e->out_fd = safe_close(e->out_fd);
        if (e->pid > 0)
                (void) kill(-e->pid, SIGKILL);  /* whatever the check left behind */
        e->pid = 0;
}

static void entry_drain(Entry *e) {
        char buf[4096];
        ssize_t n;
        while (e->out_fd >= 0 && (n = read(e->out_fd, buf, sizeof buf)) > 0) {
                size_t room = CONTRACT_OUTPUT_MAX - e->output_len, take = (size_t) n < room ? (size_t) n : room;
                memcpy(e->output + e->output_len, buf, take);
                e->output_len += take;
        }
        e->output[e->output_len] = 0;
}

static int on_output(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Entry *e = userdata;
        entry_drain(e);
        if (revents & (EPOLLHUP | EPOLLERR))
                e->io_src = sd_event_source_disable_unref(e->io_src);
        return 0;
}

static int on_check_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Entry *e = userdata;
        e->timed_out = true;
        if (e->pid > 0)
                (void) kill(-e->pid, SIGKILL);
        return 0;
}

/* What a native check's worker said: its result, or why there is none. */
static int native_outcome(Entry *e, const siginfo_t *si, char **ret_message) {
        int r;
        if (e->timed_out)
                return asprintf(ret_message, "timed out after %" PRIu64 " s and was killed",
                                NATIVE_CHECK_TIMEOUT_USEC / USEC_PER_SEC) < 0 ? -ENOMEM : 0;
        if (si->si_code != CLD_EXITED)
                return asprintf(ret_message, "the check's worker was killed by signal %s",
                                strsignal(si->si_status)) < 0 ? -ENOMEM : 0;
        if (si->si_status != 0 || contract_native_parse(e->output, e->output_len, &r, ret_message) < 0)
                return asprintf(ret_message, "the check's worker failed (exit status %d)", si->si_status) < 0 ?
                        -ENOMEM : 0;
        return r > 0 ? 1 : 0;
}

static int on_check_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        Entry *e = userdata;
        const ContractCheck *ch = &e->contract->checks[e->next];
        _cleanup_free_ char *message = NULL;
        bool shell = check_kind_is_shell(ch->kind);
        int status = 1;
        entry_drain(e);
        if (!shell)
                status = native_outcome(e, si, &message) > 0 ? 0 : 1;
        else {
                /* Strip a trailing newline for the audit record. */
                while (e->output_len > 0 && e->output[e->output_len - 1] == '\n')
                        e->output[--e->output_len] = 0;
                if (e->timed_out)
                        (void) asprintf(&message, "timed out after %" PRIu64 " s and was killed",
                                        ch->timeout_usec / USEC_PER_SEC);
                else if (si->si_code == CLD_EXITED && si->si_status == 0) {
                        status = 0;
                        message = strdup("exit status 0");
                } else if (si->si_code == CLD_EXITED)
                        (void) asprintf(&message, "exit status %d", si->si_status);
                else
                        (void) asprintf(&message, "killed by signal %s", strsignal(si->si_status));
        }
        e->child_src = sd_event_source_disable_unref(e->child_src);
        entry_shell_cleanup(e);
        /* Only a shell check's output goes to the audit record (a native check's is its message). */
        entry_record(e, e->next, status, message ?: "failed", shell ? e->output : NULL);
        e->next++;
        entry_run_next(e);
        return 0;
}

static const CheckContext *manager_context(Manager *m, CheckContext *ctx);

/* Starts the child of a check: the shell, or the worker that runs a native check (drift scans,
 * the policy check, /proc walks: nothing slow runs in the event loop). on_check_exit continues. */
static int entry_start_child(Entry *e, const ContractCheck *ch) {
        Manager *m = e->manager;
        CheckContext ctx;
        bool shell = check_kind_is_shell(ch->kind);
        int k = shell ? contract_shell_spawn(ch, m->contracts_dir, &e->pid, &e->out_fd) :
                contract_native_spawn(e->contract, ch, manager_context(m, &ctx), &e->pid, &e->out_fd);
        if (k < 0)
                return k;
        e->output_len = 0;
        e->output[0] = 0;
        e->timed_out = false;
        k = sd_event_add_child(m->event, &e->child_src, e->pid, WEXITED, on_check_exit, e);
        if (k < 0) {
                (void) kill(-e->pid, SIGKILL);
                (void) waitpid(e->pid, NULL, 0);
                e->pid = 0;
                e->out_fd = safe_close(e->out_fd);
                return k;
        }
        (void) sd_event_add_io(m->event, &e->io_src, e->out_fd, EPOLLIN, on_output, e);
        (void) sd_event_add_time_relative(m->event, &e->timeout_src, CLOCK_MONOTONIC,
                                          shell ? ch->timeout_usec : NATIVE_CHECK_TIMEOUT_USEC, 0,
                                          on_check_timeout, e);
        return 0;
}

static const CheckContext *manager_context(Manager *m, CheckContext *ctx) {
        *ctx = (CheckContext) { .config = m->config, .config_path = m->config_path, .quarantined = m->quarantined };
        return ctx;
}

static void entry_rearm(Entry *e) {
        Manager *m = e->manager;
        uint64_t freq = e->contract->frequency_usec;
        if (!freq)
                freq = m->config ? m->config->contracts.healthcheck_interval_usec : 60 * USEC_PER_SEC;
        if (!freq)
                freq = 60 * USEC_PER_SEC;
        (void) sd_event_source_set_time_relative(e->timer, freq);
        (void) sd_event_source_set_enabled(e->timer, SD_EVENT_ONESHOT);
}

static void entry_run_next(Entry *e) {
        Contract *c = e->contract;
        while (e->next < c->n_checks) {
                const ContractCheck *ch = &c->checks[e->next];
                e->started = con_now(CLOCK_MONOTONIC);
                int k = entry_start_child(e, ch);
                if (k >= 0)
                        return;         /* on_check_exit continues */
                _cleanup_free_ char *mm = NULL;
                (void) asprintf(&mm, "cannot start the check: %s", strerror(-k));
                entry_record(e, e->next, 1, mm ?: "cannot start the check", NULL);
                e->next++;
        }
        e->running = false;
        entry_rearm(e);
        manager_sweep_done(e->manager);
}

static void entry_start(Entry *e) {
        if (e->running)
                return;
        if (e->contract->type == CONTRACT_PREVENTIVE) {
                e->started = con_now(CLOCK_MONOTONIC);
                entry_record(e, 0, 2, "preventive contract: registry only, not evaluated", NULL);
                entry_rearm(e);
                return;
        }
        e->running = true;
        e->next = 0;
        entry_run_next(e);
}

static int on_entry_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Entry *e = userdata;
        entry_start(e);
        return 0;
}

/* ---- loading ---- */

static void entry_done(Entry *e) {
        entry_shell_cleanup(e);
        e->timer = sd_event_source_disable_unref(e->timer);
        for (size_t i = 0; i < e->n_results; i++)
                free(e->results[i].message);
        free(e->results);
        contract_free(e->contract);
}

static void manager_clear_entries(Manager *m) {
        for (size_t i = 0; i < m->n_entries; i++)
                entry_done(&m->entries[i]);
        free(m->entries);
        m->entries = NULL;
        m->n_entries = 0;
}

static void manager_load(Manager *m) {
        _cleanup_strv_free_ char **files = NULL, **old_invalid = TAKE_PTR(m->invalid);
        _cleanup_(con_error_detail_done) ConErrorDetail cerr = {};
        ConConfig *cfg = NULL;
        int k;

        /* Before reading: a change made during the load then shows as a difference later. */
        m->have_loaded_fp = contract_dir_fingerprint(m->contracts_dir, m->config_path, m->loaded_fp) >= 0;
        k = con_config_load(m->config_path, &cfg, &cerr);
        if (k < 0) {
                _cleanup_free_ char *s = con_error_detail_format(&cerr);
                log_error("Failed to load %s, keeping the previous thresholds and agents: %s", m->config_path,
                          s ?: strerror(-k));
                if (!streq_ptr(m->config_error, s ?: strerror(-k))) {
                        free(m->config_error);
                        m->config_error = strdup(s ?: strerror(-k));
                        (void) sd_bus_emit_properties_changed(m->bus, CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE,
                                                              "ConfigError", NULL);
                }
        } else {
                if (m->config_error) {
                        free(m->config_error);
                        m->config_error = NULL;
                        (void) sd_bus_emit_properties_changed(m->bus, CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE,
                                                              "ConfigError", NULL);
                }
                con_config_free(m->config);
                m->config = cfg;
        }
        load_state(m);

        manager_clear_entries(m);
        k = contract_dir_list(m->contracts_dir, &files);
        if (k < 0) {
                log_warning("No contracts: cannot read %s: %s", m->contracts_dir, strerror(-k));
                return;
        }
        m->entries = calloc(strv_length(files) + 1, sizeof *m->entries);
        if (!m->entries)
                return;
        STRV_FOREACH(f, files) {
                _cleanup_(con_error_detail_done) ConErrorDetail err = {};
                Contract *c = NULL;
                k = contract_load_file(*f, &c, &err);
                if (k >= 0)
                        for (size_t i = 0; i < m->n_entries; i++)
                                if (streq(m->entries[i].contract->id, c->id)) {
                                        con_error_detail_done(&err);
                                        err.file = strdup(*f);
                                        (void) asprintf(&err.message, "id %s is already used by %s", c->id,
                                                        m->entries[i].contract->file);
                                        c = contract_free(c);
                                        k = -EINVAL;
                                        break;
                                }
                if (k < 0) {
                        _cleanup_free_ char *loc = NULL;
                        if (err.line > 0)
                                (void) asprintf(&loc, "%s:%u", *f, err.line);
                        else
                                loc = strdup(*f);
                        /* FILE:LINE, and the reason with its key path ("checks[0].name: ..."). */
                        ConErrorDetail why = { .key = err.key, .message = err.message };
                        _cleanup_free_ char *formatted = err.message ? con_error_detail_format(&why) : NULL;
                        const char *reason = formatted ?: strerror(-k);
                        bool known = false;
                        for (size_t i = 0; old_invalid && old_invalid[i] && old_invalid[i + 1]; i += 2)
                                if (streq(old_invalid[i], strempty(loc)) && streq(old_invalid[i + 1], reason))
                                        known = true;
                        (void) strv_extend(&m->invalid, strempty(loc));
                        (void) strv_extend(&m->invalid, reason);
                        if (!known) {
                                log_error("Invalid contract %s: %s (the other contracts keep running)", strempty(loc), reason);
                                audit_record(m, "contract.invalid", fields("file", strempty(loc), "reason", reason, NULL));
                                (void) sd_bus_emit_signal(m->bus, CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE,
                                                          "ContractInvalid", "ss", strempty(loc), reason);
                        }
                        continue;
                }
                Entry *e = &m->entries[m->n_entries++];
                *e = (Entry) { .manager = m, .contract = c, .out_fd = -EBADF };
                e->n_results = c->type == CONTRACT_PREVENTIVE ? 1 : c->n_checks;
                e->results = calloc(e->n_results, sizeof *e->results);
                for (size_t i = 0; e->results && i < e->n_results; i++)
                        e->results[i].status = -1;
                k = sd_event_add_time_relative(m->event, &e->timer, CLOCK_MONOTONIC, FIRST_RUN_USEC, 0, on_entry_timer, e);
                if (k < 0 || !e->results)
                        log_error("Failed to schedule contract %s: %s", c->id, strerror(k < 0 ? -k : ENOMEM));
        }
        log_info("Loaded %zu contracts from %s (%zu invalid)", m->n_entries, m->contracts_dir, strv_length(m->invalid) / 2);
        (void) sd_bus_emit_properties_changed(m->bus, CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE, "Results", "Invalid", NULL);
}

static void manager_reload(Manager *m) {
        for (size_t i = 0; i < m->n_entries; i++)
                if (m->entries[i].running) {
                        m->reload_pending = true;
                        return;
                }
        m->reload_pending = false;
        manager_load(m);
}

static int on_reload_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        manager_reload(userdata);
        return 0;
}

static int on_contracts_changed(sd_event_source *s, const struct inotify_event *ev, void *userdata) {
        Manager *m = userdata;
        (void) sd_event_source_set_time_relative(m->reload_timer, RELOAD_SETTLE_USEC);
        (void) sd_event_source_set_enabled(m->reload_timer, SD_EVENT_ONESHOT);
        return 0;
}

/* ---- bus ---- */

/* Who may change state: the policy's contracts-admin verb, i.e. polkit's
 * org.conspiracy.contracts.admin, asked asynchronously with the caller's bus name as subject
 * (details: "verb", and "agent" where there is one). Root is allowed by the service itself (polkit
 * says yes to root before any rule). Returns 1 allowed, 0 parked (the handler returns 1 and runs
 * again when polkit answered), negative with error set when denied. Reads (List, properties) stay
 * open. */
static int contracts_authorize(Manager *m, sd_bus_message *msg, const char *verb, const char *agent,
                               sd_bus_error *error, char **ret_user) {
        const char *details[5] = { "verb", verb, agent ? "agent" : NULL, agent, NULL };
        int k = con_authz_verify(m->authz, msg, "org.conspiracy.contracts.admin", (char * const *) details, error);
        if (k <= 0)
                return k;
        if (ret_user) {
                /* For the audit record: who, as the bus driver said for the check just made (kept
                 * per unique name, so this answers at once; 0 parks like the check). */
                uid_t uid;
                k = con_authz_caller_uid(m->authz, msg, &uid, error);
                if (k <= 0)
                        return k;
                k = con_uid_to_name(uid, ret_user);
                if (k < 0)
                        return k;
        }
        return 1;
}

static int append_results(Manager *m, sd_bus_message *reply) {
        int k = sd_bus_message_open_container(reply, 'a', "(sssstt)");
        if (k < 0)
                return k;
        static const char * const st[] = { "pass", "fail", "skip" };
        for (size_t i = 0; i < m->n_entries; i++) {
                Entry *e = &m->entries[i];
                for (size_t j = 0; j < e->n_results; j++) {
                        CheckResult *r = &e->results[j];
                        const char *name = e->contract->type == CONTRACT_PREVENTIVE ? "" : e->contract->checks[j].name;
                        k = sd_bus_message_append(reply, "(sssstt)", e->contract->id, name,
                                                  r->status >= 0 && r->status <= 2 ? st[r->status] : "pending",
                                                  strempty(r->message), r->time_usec, r->duration_usec);
                        if (k < 0)
                                return k;
                }
        }
        return sd_bus_message_close_container(reply);
}

static int reply_results(Manager *m, sd_bus_message *call) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int k = sd_bus_message_new_method_return(call, &reply);
        if (k < 0)
                return k;
        k = append_results(m, reply);
        if (k < 0)
                return k;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_evaluate(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        int k = contracts_authorize(m, msg, "evaluate", NULL, error, NULL);
        if (k <= 0)
                return k < 0 ? k : 1;
        sd_bus_message **n = realloc(m->evals, (m->n_evals + 1) * sizeof *n);
        if (!n)
                return -ENOMEM;
        m->evals = n;
        m->evals[m->n_evals++] = sd_bus_message_ref(msg);
        /* Evaluate the files as they are now, not as the inotify debounce last saw them: when
         * anything changed since the last load, reload first (stopping a sweep in progress; the
         * calls waiting for it get the results of the new one). */
        uint8_t fp[CONTRACT_FINGERPRINT_SIZE];
        k = contract_dir_fingerprint(m->contracts_dir, m->config_path, fp);
        if (k < 0 || !m->have_loaded_fp || memcmp(fp, m->loaded_fp, sizeof fp) != 0) {
                log_info("Contracts or %s changed on disk; reloading before evaluating", m->config_path);
                m->reload_pending = false;
                (void) sd_event_source_set_enabled(m->reload_timer, SD_EVENT_OFF);
                manager_load(m);
        }
        m->starting_sweep = true;
        for (size_t i = 0; i < m->n_entries; i++)
                entry_start(&m->entries[i]);
        m->starting_sweep = false;
        manager_sweep_done(m);
        return 1;
}

static int method_list(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int k = sd_bus_message_new_method_return(msg, &reply);
        if (k < 0)
                return k;
        k = sd_bus_message_open_container(reply, 'a', "(ssssts)");
        if (k < 0)
                return k;
        for (size_t i = 0; i < m->n_entries; i++) {
                const Contract *c = m->entries[i].contract;
                _cleanup_free_ char *scope = NULL;
                if (c->scope_agent ? asprintf(&scope, "agent:%s", c->scope_agent) < 0 : !(scope = strdup("system")))
                        return -ENOMEM;
                uint64_t freq = c->frequency_usec ?: (m->config ? m->config->contracts.healthcheck_interval_usec : 0);
                k = sd_bus_message_append(reply, "(ssssts)", c->id, c->file, contract_type_to_string(c->type), scope,
                                          freq, strempty(c->description));
                if (k < 0)
                        return k;
        }
        k = sd_bus_message_close_container(reply);
        if (k < 0)
                return k;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_resume(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        _cleanup_free_ char *by = NULL;
        int k = contracts_authorize(m, msg, "resume", NULL, error, &by);
        if (k <= 0)
                return k < 0 ? k : 1;
        k = do_resume(m, by);
        if (k < 0)
                return sd_bus_error_set_errnof(error, -k, "cannot remove the halt markers in %s: %m", m->state_dir);
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_quarantine(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *agent, *reason;
        _cleanup_free_ char *by = NULL, *full = NULL;
        int k = sd_bus_message_read(msg, "ss", &agent, &reason);
        if (k < 0)
                return k;
        k = contracts_authorize(m, msg, "quarantine", agent, error, &by);
        if (k <= 0)
                return k < 0 ? k : 1;
        if (asprintf(&full, "quarantined by %s: %s", by, isempty(reason) ? "no reason given" : reason) < 0)
                return -ENOMEM;
        k = do_quarantine(m, agent, full, NULL, error);
        if (k < 0)
                return k;
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_release(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *agent;
        _cleanup_free_ char *by = NULL;
        int k = sd_bus_message_read(msg, "s", &agent);
        if (k < 0)
                return k;
        k = contracts_authorize(m, msg, "release", agent, error, &by);
        if (k <= 0)
                return k < 0 ? k : 1;
        k = do_release(m, agent, by, error);
        if (k < 0)
                return k;
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_reload(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        int k = contracts_authorize(m, msg, "reload", NULL, error, NULL);
        if (k <= 0)
                return k < 0 ? k : 1;
        manager_reload(m);
        if (!m->reload_pending && m->config_error)
                return con_bus_error_setf(error, CON_ERROR_INVALID_CONFIG, "%s: %s; the running configuration is kept",
                                          m->config_path, m->config_error);
        return sd_bus_reply_method_return(msg, NULL);
}

static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        manager_reload(userdata);
        return 0;
}

static int property_get(sd_bus *bus, const char *path, const char *interface, const char *property,
                        sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        if (streq(property, "Results"))
                return append_results(m, reply);
        if (streq(property, "Halted"))
                return sd_bus_message_append(reply, "s", strempty(m->halted));
        if (streq(property, "ConfigError"))
                return sd_bus_message_append(reply, "s", strempty(m->config_error));
        if (streq(property, "Quarantined"))
                return sd_bus_message_append_strv(reply, m->quarantined);
        if (streq(property, "Invalid")) {
                int k = sd_bus_message_open_container(reply, 'a', "(ss)");
                for (size_t i = 0; k >= 0 && m->invalid && m->invalid[i] && m->invalid[i + 1]; i += 2)
                        k = sd_bus_message_append(reply, "(ss)", m->invalid[i], m->invalid[i + 1]);
                return k < 0 ? k : sd_bus_message_close_container(reply);
        }
        return -ENOENT;
}

const sd_bus_vtable contracts_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("Evaluate", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sssstt)", results), method_evaluate,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("List", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(ssssts)", contracts), method_list,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Resume", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_resume, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Quarantine", SD_BUS_ARGS("s", agent, "s", reason), SD_BUS_NO_RESULT, method_quarantine,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Release", SD_BUS_ARGS("s", agent), SD_BUS_NO_RESULT, method_release,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Reload", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_reload, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("ViolationDetected",
                                SD_BUS_ARGS("s", id, "s", check, "s", severity, "s", message, "s", action), 0),
        SD_BUS_SIGNAL_WITH_ARGS("ViolationCleared", SD_BUS_ARGS("s", id, "s", check), 0),
        SD_BUS_SIGNAL_WITH_ARGS("ContractInvalid", SD_BUS_ARGS("s", file, "s", reason), 0),
        SD_BUS_SIGNAL_WITH_ARGS("ActionTaken", SD_BUS_ARGS("s", action, "s", target, "s", id), 0),
        SD_BUS_PROPERTY("Results", "a(sssstt)", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
        SD_BUS_PROPERTY("Invalid", "a(ss)", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
        SD_BUS_PROPERTY("Halted", "s", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Quarantined", "as", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ConfigError", "s", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_VTABLE_END,
};

/* ---- set-up ---- */

static int dup_or(const char *v, const char *dflt, char **ret) {
        *ret = strdup(v ?: dflt);
        return *ret ? 0 : -ENOMEM;
}

int manager_new(const ContractsOptions *o, sd_event *event, sd_bus *bus, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int k;

        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        m->opts = *o;
        m->config_path = o->config_path ?: CON_CONFIG_PATH;
        if (dup_or(o->contracts_dir, CONTRACT_DIR_DEFAULT, &m->contracts_dir) < 0 ||
            dup_or(o->state_dir, CONTRACT_STATE_DIR_DEFAULT, &m->state_dir) < 0 ||
            dup_or(o->audit_dir, CON_AUDIT_DIR_DEFAULT, &m->audit_dir) < 0 ||
            dup_or(o->activation_dir, CON_DBUS_SERVICE_DIR, &m->activation_dir) < 0 ||
            dup_or(o->bus_policy_dir, CON_DBUS_POLICY_DIR, &m->bus_policy_dir) < 0 ||
            dup_or(o->polkit_rules_dir, CON_POLKIT_RULES_DIR, &m->polkit_rules_dir) < 0)
                return -ENOMEM;

        k = con_audit_open(m->audit_dir, &m->audit);
        if (k < 0)
                log_error("Failed to open the audit log in %s, running without it: %s", m->audit_dir, strerror(-k));

        /* sd_event_add_child() needs SIGCHLD blocked; children unblock everything. */
        sigset_t ss;
        sigemptyset(&ss);
        sigaddset(&ss, SIGCHLD);
        (void) sigprocmask(SIG_BLOCK, &ss, NULL);

        m->event = sd_event_ref(event);
        m->bus = sd_bus_ref(bus);
        *ret = TAKE_PTR(m);
        return 0;
}

int manager_start(Manager *m) {
        int k;

        k = sd_bus_add_object_vtable(m->bus, NULL, CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE, contracts_vtable, m);
        if (k < 0)
                return k;
        k = con_authz_new(m->bus, m->event, &(ConAuthzOptions) { .root_policy = CON_AUTHZ_ROOT_ALLOW }, &m->authz);
        if (k < 0)
                return k;
        k = sd_event_add_time_relative(m->event, &m->reload_timer, CLOCK_MONOTONIC, RELOAD_SETTLE_USEC, 0,
                                       on_reload_timer, m);
        if (k < 0)
                return k;
        (void) sd_event_source_set_enabled(m->reload_timer, SD_EVENT_OFF);
        sigset_t ss;
        sigemptyset(&ss);
        sigaddset(&ss, SIGHUP);
        (void) sigprocmask(SIG_BLOCK, &ss, NULL);
        k = sd_event_add_signal(m->event, &m->sighup, SIGHUP, on_sighup, m);
        if (k < 0)
                return k;
        k = sd_event_add_inotify(m->event, &m->inotify_src, m->contracts_dir,
                                 IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ATTRIB | IN_ONLYDIR,
                                 on_contracts_changed, m);
        if (k < 0)
                log_warning("Failed to watch %s (%s): changes are picked up by Reload() or a restart only",
                            m->contracts_dir, strerror(-k));
        /* Marker files of an earlier version become folders, which no hard link can hide. */
        k = con_marker_upgrade(m->state_dir);
        if (k < 0 && k != -ENOENT)
                log_warning("Failed to rewrite the markers in %s as folders: %s", m->state_dir, strerror(-k));
        manager_load(m);
        k = manager_watch_models(m);
        if (k < 0)
                return k;

        k = sd_bus_request_name(m->bus, CON_CONTRACTS_BUS_NAME, 0);
        if (k < 0) {
                log_error("Failed to own %s (%s)%s", CON_CONTRACTS_BUS_NAME, strerror(-k),
                          k == -EEXIST ? ": another con-contractd is running" :
                          k == -EACCES ? ": the bus policy lets only root own it" : "");
                return k;
        }
        return 0;
}

int manager_introspect_xml(char **ret) {
        return con_bus_introspect_vtable(CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE, contracts_vtable, ret);
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        manager_clear_entries(m);
        for (size_t i = 0; i < m->n_evals; i++)
                sd_bus_message_unref(m->evals[i]);
        free(m->evals);
        for (size_t i = 0; i < m->n_violations; i++)
                free(m->violations[i].key);
        free(m->violations);
        for (size_t i = 0; i < m->n_budget_notices; i++)
                free(m->budget_notices[i].key);
        free(m->budget_notices);
        sd_bus_slot_unref(m->budget_match);
        con_name_owners_free(m->models_owner);
        strv_free(m->invalid);
        strv_free(m->quarantined);
        free(m->halted);
        free(m->config_error);
        sd_event_source_disable_unref(m->sighup);
        sd_event_source_disable_unref(m->inotify_src);
        sd_event_source_disable_unref(m->reload_timer);
        con_authz_free(m->authz);
        sd_bus_flush_close_unref(m->bus);
        sd_event_unref(m->event);
        con_audit_close(m->audit);
        con_config_free(m->config);
        free(m->contracts_dir);
        free(m->state_dir);
        free(m->audit_dir);
        free(m->activation_dir);
        free(m->bus_policy_dir);
        free(m->polkit_rules_dir);
        free(m);
        return NULL;
}
