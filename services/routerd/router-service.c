/* SPDX-License-Identifier: MIT */
/* The Router object: set-up, the bus object and its properties, the audit records, agent signals. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/queue.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "audit-writer.h"
#include "authz.h"
#include "bus-util.h"
#include "con-paths.h"
#include "config.h"
#include "cron.h"
#include "error-detail.h"
#include "errors.h"
#include "log.h"
#include "macro.h"
#include "name-owners.h"
#include "names.h"
#include "router-internal.h"
#include "router.h"
#include "router-util.h"
#include "spool.h"
#include "strv.h"
#include "task.h"
#include "time-util.h"


/* ---- audit ---- */

void router_audit(Router *r, const char *service, const char *event, cJSON *fields) {
        bool first = false;
        int k = r->audit ? con_audit_writer_append(r->audit, service, event, fields, &first) : 0;
        cJSON_Delete(fields);
        if (k < 0 && first)
                log_error("Failed to append to the audit log %s/%s: %s%s", r->audit_dir,
                          CON_AUDIT_LOG_NAME, strerror(-k),
                          k == -EBADMSG ? " (the log ends with a damaged record: run 'con audit verify')" : "");
}

/* ---- properties ---- */

void router_props_changed(Router *r) {
        r->props_dirty = true;
        if (r->props_timer && !r->opts.once) {
                int enabled = SD_EVENT_OFF;
                (void) sd_event_source_get_enabled(r->props_timer, &enabled);
                if (enabled == SD_EVENT_OFF) {
                        uint64_t now;
                        (void) sd_event_now(r->event, CLOCK_MONOTONIC, &now);
                        (void) sd_event_source_set_time(r->props_timer, now + PROPERTIES_COALESCE_USEC);
                        (void) sd_event_source_set_enabled(r->props_timer, SD_EVENT_ONESHOT);
                }
        }
}

static int on_props_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Router *r = userdata;
        if (!r->props_dirty)
                return 0;
        r->props_dirty = false;
        int k = sd_bus_emit_properties_changed(r->bus, CON_ROUTER_PATH, CON_ROUTER_INTERFACE, "Routed", "Rejected",
                                               "InFlight", "Backlog", NULL);
        if (k < 0)
                log_warning("Failed to emit PropertiesChanged, ignoring: %s", strerror(-k));
        return 0;
}

static int property_get(sd_bus *bus, const char *path, const char *interface, const char *property,
                        sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Router *r = userdata;
        if (streq(property, "Routed"))
                return sd_bus_message_append(reply, "t", r->routed);
        if (streq(property, "Rejected"))
                return sd_bus_message_append(reply, "t", r->rejected);
        if (streq(property, "InFlight"))
                return sd_bus_message_append(reply, "u", r->window.in_flight);
        if (streq(property, "Backlog"))
                return sd_bus_message_append(reply, "u", (uint32_t) r->backlog);
        if (streq(property, "ConfigError"))
                return sd_bus_message_append(reply, "s", strempty(r->config_error));
        return -ENOENT;
}

/* ---- agent signals: quota credits ---- */

static Target *target_by_bus_name(Router *r, const char *name) {
        for (size_t i = 0; i < r->n_targets; i++)
                if (streq(r->targets[i]->bus_name, name))
                        return r->targets[i];
        return NULL;
}

static int on_agent_signal(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Router *r = userdata;
        const char *task_id = NULL, *sender = NULL, *status = NULL;

        /* Only the current owner of a configured agent's name speaks for that agent. The agents
         * audit their own task events (con-agentd); the router only needs to know that a sender
         * held back for its quota has room for one more task. */
        const char *name = con_name_owners_name_of(r->owners, sd_bus_message_get_sender(m));
        Target *t = name ? target_by_bus_name(r, name) : NULL;
        if (!t || !streq_ptr(sd_bus_message_get_member(m), "TaskCompleted"))
                return 0;
        if (sd_bus_message_read(m, "sss", &task_id, &sender, &status) < 0 || !sender)
                return 0;
        for (size_t i = 0; i < t->n_lanes; i++)
                if (t->lanes[i]->over_quota && streq(t->lanes[i]->user, sender) &&
                    t->lanes[i]->credits < LANE_TRACK_MAX) {
                        t->lanes[i]->credits++;
                        router_kick(r);
                }
        return 0;
}

static int on_match_installed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Router *r = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);
        if (!e)
                return 0;
        log_warning("Failed to subscribe to TaskCompleted, the quota timer alone will let held-back "
                    "files go: %s", e->message ?: e->name);
        /* Drop the failed match so that the next router_quota_watch() tries again. sd-bus holds its
         * own reference on the match slot while this install callback runs. */
        r->match_signals = sd_bus_slot_unref(r->match_signals);
        return 0;
}

/* A lane went over its quota (over) or left it. The agents' TaskCompleted signals are only needed
 * while some lane waits for them: without the match the bus does not wake the router once per
 * task of every agent. A signal sent before the match is in place is missed; the lane's probe
 * timer covers that, as it covers a signal lost any other way. */
void router_quota_watch(Router *r, bool over) {
        if (over)
                r->n_over_quota++;
        else if (r->n_over_quota > 0)
                r->n_over_quota--;
        if (r->n_over_quota == 0) {
                r->match_signals = sd_bus_slot_unref(r->match_signals);
                return;
        }
        if (r->match_signals || !r->watch_agents || r->shutting_down)
                return;
        int k = sd_bus_match_signal_async(r->bus, &r->match_signals, NULL, CON_AGENT_PATH, CON_AGENT_INTERFACE,
                                          "TaskCompleted", on_agent_signal, on_match_installed, r);
        if (k < 0)
                log_warning("Failed to subscribe to TaskCompleted, the quota timer alone will let held-back "
                            "files go: %s", strerror(-k));
}

static int router_watch_agents(Router *r) {
        int k;

        /* The agents' names only (arg0namespace): not every connection coming and going on the bus. */
        k = con_name_owners_new(r->bus, "org.conspiracy", true, NULL, NULL, &r->owners);
        if (k < 0)
                return k;
        r->watch_agents = true;
        for (size_t i = 0; i < r->n_targets; i++) {
                k = con_name_owners_add(r->owners, r->targets[i]->bus_name);
                if (k < 0)
                        return k;
        }
        return 0;
}

/* ---- bus object ---- */

static int method_rescan(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        router_rescan(userdata);
        return sd_bus_reply_method_return(m, NULL);
}

/* Reload: root only (the bus policy lets anyone call the router). Replies once the config is
 * applied, or with the reason it was refused (the running one is kept). */
static int method_reload(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Router *r = userdata;
        uid_t uid;
        int k;

        k = con_authz_caller_uid(r->authz, m, &uid, error);
        if (k <= 0)
                return k < 0 ? k : 1;
        if (uid != 0)
                return con_bus_error_setf(error, CON_ERROR_ACCESS_DENIED, "only root may reload the router");
        k = router_reload(r);
        if (k == -ENOMEM)
                return k;
        if (k < 0)
                return con_bus_error_setf(error, CON_ERROR_INVALID_CONFIG, "%s: %s; the running configuration is kept",
                                          r->config_path, r->config_error ?: strerror(-k));
        return sd_bus_reply_method_return(m, NULL);
}

static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        (void) router_reload(userdata);
        return 0;
}

const sd_bus_vtable router_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("Rescan", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_rescan,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Reload", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_reload,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("TaskRouted", SD_BUS_ARGS("s", task_id, "s", agent, "s", sender), 0),
        SD_BUS_SIGNAL_WITH_ARGS("TaskRejected", SD_BUS_ARGS("s", file, "s", reason), 0),
        SD_BUS_PROPERTY("Routed", "t", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Rejected", "t", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("InFlight", "u", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Backlog", "u", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ConfigError", "s", property_get, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_VTABLE_END,
};

/* ---- set-up and reload ---- */

static Target *target_find(Router *r, const char *agent) {
        for (size_t i = 0; i < r->n_targets; i++)
                if (streq(r->targets[i]->agent, agent))
                        return r->targets[i];
        return NULL;
}

/* Targets and inboxes are never freed before the router: items, lanes and event sources point
 * at them. One that leaves the config is retired (not watched, not scanned, not scheduled), and
 * comes back to life when it returns. */
static int target_get(Router *r, const char *agent, Target **ret) {
        Target *t = target_find(r, agent);
        int k;

        if (t) {
                *ret = t;
                return 0;
        }
        Target **n = realloc(r->targets, sizeof(*n) * (r->n_targets + 1));
        if (!n)
                return -ENOMEM;
        r->targets = n;
        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        r->targets[r->n_targets++] = t;
        t->router = r;
        if (!(t->agent = strdup(agent)))
                return -ENOMEM;
        k = con_agent_bus_name(agent, &t->bus_name);
        if (k < 0)
                return k;
        *ret = t;
        return 0;
}

static int inbox_get(Router *r, const char *rel, Target *t, Inbox **ret) {
        Inbox *in;

        for (size_t i = 0; i < r->n_inboxes; i++)
                if (streq(r->inboxes[i]->rel, rel)) {
                        *ret = r->inboxes[i];
                        return 0;
                }
        Inbox **n = realloc(r->inboxes, sizeof(*n) * (r->n_inboxes + 1));
        if (!n)
                return -ENOMEM;
        r->inboxes = n;
        in = calloc(1, sizeof(*in));
        if (!in)
                return -ENOMEM;
        r->inboxes[r->n_inboxes++] = in;
        *in = (Inbox) { .router = r, .target = t, .fd = -EBADF, .retired = true };
        if (!(in->rel = strdup(rel)) || asprintf(&in->path, "%s/%s", r->srv_dir, rel) < 0)
                return -ENOMEM;
        int k = router_inbox_label(rel, &in->label);
        if (k < 0)
                return k;
        *ret = in;
        return 0;
}

static bool cron_wanted(const Router *r) {
        return !r->opts.once && (r->opts.cron_mode > 0 || (r->opts.cron_mode < 0 && sd_booted() <= 0));
}

/* The schedule of a cron agent, from its config entry (NULL: none). */
static int target_set_cron(Target *t, const ConAgent *a) {
        Router *r = t->router;

        t->has_cron = false;
        free(t->cron_task);
        t->cron_task = NULL;
        if (a && a->mode == CON_MODE_CRON && a->cron) {
                _cleanup_free_ char *cron_err = NULL;
                int k = con_cron_parse(a->cron, &t->cron, &cron_err);
                if (k < 0)
                        log_warning("Agent %s: cron \"%s\": %s; not scheduling it", a->name, a->cron,
                                    cron_err ?: strerror(-k));
                else
                        t->has_cron = true;
                if (a->cron_task && !(t->cron_task = strdup(a->cron_task)))
                        return -ENOMEM;
        }
        if (!r->started)
                return 0;
        if (t->has_cron && cron_wanted(r)) {
                int k = router_cron_arm(t);
                if (k < 0)
                        log_warning("Failed to schedule %s: %s", t->agent, strerror(-k));
        } else if (t->cron_timer)
                (void) sd_event_source_set_enabled(t->cron_timer, SD_EVENT_OFF);
        return 0;
}

/* Starts watching an inbox (once the router runs). A missing folder is looked for again on every
 * rescan. */
static void inbox_activate(Inbox *in) {
        Router *r = in->router;
        int k;

        in->retired = false;
        if (!r->started)
                return;
        k = router_inbox_open(in);
        if (k < 0) {
                log_warning("Inbox %s is not there yet (%s); looking again on every rescan", in->path, strerror(-k));
                return;
        }
        k = router_inbox_watch(in);
        if (k < 0)
                log_warning("Failed to watch %s: %s", in->path, strerror(-k));
}

/* Files already taken from a retired inbox are still delivered (its descriptor stays open for
 * them); nothing new is taken from it. */
static void inbox_retire(Inbox *in) {
        in->retired = true;
        in->watch = sd_event_source_disable_unref(in->watch);
}

/* Makes targets and inboxes match cfg: one per configured agent, plus the concierge for the outer
 * inbox; the others are retired. Returns the number of inboxes added and retired in *ret_changes. */
static int router_apply_config(Router *r, const ConConfig *cfg, unsigned *ret_added, unsigned *ret_retired) {
        unsigned added = 0, retired = 0;
        Target *concierge;
        Inbox *in;
        int k;

        for (size_t i = 0; i < r->n_targets; i++)
                r->targets[i]->configured = false;
        for (size_t i = 0; i < cfg->n_agents; i++) {
                const ConAgent *a = &cfg->agents[i];
                _cleanup_free_ char *rel = NULL;
                Target *t;

                k = target_get(r, a->name, &t);
                if (k < 0)
                        return k;
                if (!t->configured && r->owners) {
                        /* A target added by a reload: who owns its name (only the quota credits need it). */
                        k = con_name_owners_add(r->owners, t->bus_name);
                        if (k < 0)
                                return k;
                }
                t->configured = true;
                k = target_set_cron(t, a);
                if (k < 0)
                        return k;
                if (asprintf(&rel, "agents/%s/inbox", a->name) < 0)
                        return -ENOMEM;
                k = inbox_get(r, rel, t, &in);
                if (k < 0)
                        return k;
                if (in->retired) {
                        inbox_activate(in);
                        added++;
                }
        }
        /* The outer inbox goes to the concierge, configured or not (its files wait then). */
        k = target_get(r, ROUTER_OUTER_AGENT, &concierge);
        if (k < 0)
                return k;
        k = inbox_get(r, "inbox", concierge, &in);
        if (k < 0)
                return k;
        if (in->retired)
                inbox_activate(in);
        for (size_t i = 0; i < r->n_targets; i++) {
                Target *t = r->targets[i];
                if (t->configured)
                        continue;
                k = target_set_cron(t, NULL);
                if (k < 0)
                        return k;
        }
        for (size_t i = 0; i < r->n_inboxes; i++) {
                in = r->inboxes[i];
                if (!in->retired && in->target != concierge && !in->target->configured) {
                        inbox_retire(in);
                        retired++;
                } else if (!in->retired && in->target == concierge && !streq(in->rel, "inbox") &&
                           !concierge->configured) {
                        inbox_retire(in);
                        retired++;
                }
        }
        if (ret_added)
                *ret_added = added;
        if (ret_retired)
                *ret_retired = retired;
        return 0;
}

static int config_load(Router *r, ConConfig **ret, char **ret_error) {
        _cleanup_(con_error_detail_done) ConErrorDetail cerr = {};
        int k = con_config_load(r->config_path, ret, &cerr);
        if (k < 0) {
                _cleanup_free_ char *msg = con_error_detail_format(&cerr);
                if (asprintf(ret_error, "%s", msg ?: strerror(-k)) < 0)
                        *ret_error = NULL;
                return k;
        }
        if (!con_config_find_agent(*ret, ROUTER_OUTER_AGENT))
                log_warning("No agent 'concierge' in %s: files in %s/inbox will wait until one is configured",
                            r->config_path, r->srv_dir);
        return 0;
}

int router_reload(Router *r) {
        _cleanup_(con_config_freep) ConConfig *cfg = NULL;
        _cleanup_free_ char *error = NULL;
        unsigned added = 0, retired = 0;
        int k;

        k = config_load(r, &cfg, &error);
        if (k < 0) {
                log_error("Reload: %s is not valid, keeping the configuration loaded before: %s", r->config_path,
                          error ?: strerror(-k));
                free(r->config_error);
                r->config_error = TAKE_PTR(error);
                if (!r->config_error)
                        r->config_error = strdup("cannot load the configuration");
                (void) sd_bus_emit_properties_changed(r->bus, CON_ROUTER_PATH, CON_ROUTER_INTERFACE, "ConfigError",
                                                      NULL);
                return k;
        }
        k = router_apply_config(r, cfg, &added, &retired);
        if (k < 0) {
                log_error("Reload: cannot apply %s: %s", r->config_path, strerror(-k));
                return k;
        }
        con_config_free(r->config);
        r->config = TAKE_PTR(cfg);
        if (r->config_error) {
                free(r->config_error);
                r->config_error = NULL;
                (void) sd_bus_emit_properties_changed(r->bus, CON_ROUTER_PATH, CON_ROUTER_INTERFACE, "ConfigError",
                                                      NULL);
        }
        log_info("Reloaded %s: %zu agents, %u inbox%s added, %u retired", r->config_path, r->config->n_agents, added,
                 added == 1 ? "" : "es", retired);
        router_rescan(r);
        router_kick(r);
        return 0;
}

int router_new(const RouterOptions *o, sd_event *event, sd_bus *bus, Router **ret) {
        _cleanup_(router_freep) Router *r = NULL;
        _cleanup_free_ char *error = NULL;
        int k;

        r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        r->opts = *o;
        r->rejected_fd = -EBADF;
        TAILQ_INIT(&r->in_flight);
        r->window.max = o->window > 0 && o->window < 128 ? o->window : ROUTER_WINDOW_DEFAULT;
        if (r->opts.rescan_usec == 0)
                r->opts.rescan_usec = 30 * USEC_PER_SEC;
        if (r->opts.once_timeout_usec == 0)
                r->opts.once_timeout_usec = 60 * USEC_PER_SEC;
        if (!(r->srv_dir = strdup(o->srv_dir ?: CON_SRV_DIR)) || !(r->config_path = strdup(o->config_path ?: CON_CONFIG_PATH)))
                return -ENOMEM;
        if (o->audit_dir ? !(r->audit_dir = strdup(o->audit_dir)) : asprintf(&r->audit_dir, "%s/logs/audit", r->srv_dir) < 0)
                return -ENOMEM;
        if (!(r->known = router_map_new()) || !(r->used_ids = router_map_new()))
                return -ENOMEM;

        k = config_load(r, &r->config, &error);
        if (k < 0) {
                log_error("Failed to load the configuration: %s", error ?: strerror(-k));
                return k;
        }
        k = router_apply_config(r, r->config, NULL, NULL);
        if (k < 0)
                return k;

        r->event = sd_event_ref(event);
        r->bus = sd_bus_ref(bus);
        k = con_audit_writer_new(r->event, r->audit_dir, &r->audit);
        if (k < 0)
                log_error("Failed to open the audit log in %s, routing without it: %s", r->audit_dir, strerror(-k));
        *ret = TAKE_PTR(r);
        return 0;
}

int router_start(Router *r) {
        int k;

        k = sd_event_add_defer(r->event, &r->dispatch, router_on_dispatch, r);
        if (k < 0)
                return k;
        (void) sd_event_source_set_enabled(r->dispatch, SD_EVENT_OFF);

        if (!r->opts.once) {
                k = sd_bus_add_object_vtable(r->bus, NULL, CON_ROUTER_PATH, CON_ROUTER_INTERFACE, router_vtable, r);
                if (k < 0)
                        return k;
                k = router_watch_agents(r);
                if (k < 0) {
                        log_error("Failed to subscribe to the agents' signals: %s", strerror(-k));
                        return k;
                }
                k = sd_bus_request_name(r->bus, CON_ROUTER_BUS_NAME, 0);
                if (k < 0) {
                        log_error("Failed to own %s (%s)%s", CON_ROUTER_BUS_NAME, strerror(-k),
                                  k == -EEXIST ? ": another con-routerd is running" :
                                  k == -EACCES ? ": the bus policy lets only root own it" : "");
                        return k;
                }
                k = sd_event_add_time_relative(r->event, &r->rescan_timer, CLOCK_MONOTONIC, r->opts.rescan_usec,
                                               USEC_PER_SEC, router_on_rescan_timer, r);
                if (k < 0)
                        return k;
                k = sd_event_add_time_relative(r->event, &r->settle_timer, CLOCK_MONOTONIC, RESCAN_SETTLE_USEC,
                                               0, router_on_settle_timer, r);
                if (k < 0)
                        return k;
                (void) sd_event_source_set_enabled(r->settle_timer, SD_EVENT_OFF);
                k = sd_event_add_time_relative(r->event, &r->props_timer, CLOCK_MONOTONIC, PROPERTIES_COALESCE_USEC,
                                               0, on_props_timer, r);
                if (k < 0)
                        return k;
                (void) sd_event_source_set_enabled(r->props_timer, SD_EVENT_OFF);

                for (size_t i = 0; cron_wanted(r) && i < r->n_targets; i++)
                        if (r->targets[i]->has_cron && r->targets[i]->configured) {
                                k = router_cron_arm(r->targets[i]);
                                if (k < 0)
                                        log_warning("Failed to schedule %s: %s", r->targets[i]->agent, strerror(-k));
                        }
                /* SIGHUP and Reload: the config again, without a restart. */
                sigset_t ss;
                sigemptyset(&ss);
                sigaddset(&ss, SIGHUP);
                (void) sigprocmask(SIG_BLOCK, &ss, NULL);
                k = sd_event_add_signal(r->event, &r->sighup, SIGHUP, on_sighup, r);
                if (k < 0)
                        return k;
                ConAuthzOptions ao = { .root_policy = CON_AUTHZ_ROOT_ALLOW, .no_cache = true,
                                       .watch_dirs = (char * const[]) { NULL } };
                k = con_authz_new(r->bus, r->event, &ao, &r->authz);
                if (k < 0)
                        return k;
        } else {
                k = sd_event_add_time_relative(r->event, &r->once_timer, CLOCK_MONOTONIC, r->opts.once_timeout_usec,
                                               0, router_on_once_timeout, r);
                if (k < 0)
                        return k;
        }
        /* Watches first, then the scan: a file arriving in between is seen at least once. */
        r->started = true;
        for (size_t i = 0; i < r->n_inboxes; i++)
                if (!r->inboxes[i]->retired)
                        inbox_activate(r->inboxes[i]);
        router_rescan(r);
        router_kick(r);
        return 0;
}

int router_stop(Router *r, int loop_result) {
        r->shutting_down = true;
        (void) con_audit_writer_flush(r->audit);
        if (loop_result < 0)
                return loop_result;
        return r->exit_status;
}

int router_introspect_xml(char **ret) {
        return con_bus_introspect_vtable(CON_ROUTER_PATH, CON_ROUTER_INTERFACE, router_vtable, ret);
}

Router *router_free(Router *r) {
        if (!r)
                return NULL;
        r->shutting_down = true;
        for (size_t i = 0; i < r->n_targets; i++)
                for (size_t j = 0; j < r->targets[i]->n_lanes; j++) {
                        Lane *l = r->targets[i]->lanes[j];
                        Item *it;
                        while ((it = TAILQ_FIRST(&l->queue))) {
                                TAILQ_REMOVE(&l->queue, it, link);
                                router_item_free(it);
                        }
                }
        Item *it;
        while ((it = TAILQ_FIRST(&r->in_flight))) {
                TAILQ_REMOVE(&r->in_flight, it, link);
                router_item_free(it);
        }
        for (size_t i = 0; i < r->n_targets; i++) {
                Target *t = r->targets[i];
                for (size_t j = 0; j < t->n_lanes; j++)
                        router_lane_free(t->lanes[j]);
                free(t->lanes);
                sd_event_source_disable_unref(t->backoff);
                sd_event_source_disable_unref(t->cron_timer);
                free(t->agent);
                free(t->bus_name);
                free(t->cron_task);
                free(t);
        }
        free(r->targets);
        for (size_t i = 0; i < r->n_inboxes; i++) {
                Inbox *in = r->inboxes[i];
                sd_event_source_disable_unref(in->watch);
                safe_close(in->fd);
                free(in->rel);
                free(in->path);
                free(in->label);
                free(in);
        }
        free(r->inboxes);
        sd_event_source_disable_unref(r->sighup);
        con_authz_free(r->authz);
        free(r->config_error);
        free(r->config_path);
        sd_event_source_disable_unref(r->dispatch);
        sd_event_source_disable_unref(r->rescan_timer);
        sd_event_source_disable_unref(r->settle_timer);
        sd_event_source_disable_unref(r->props_timer);
        sd_event_source_disable_unref(r->once_timer);
        r->match_signals = sd_bus_slot_unref(r->match_signals);
        con_name_owners_free(r->owners);
        sd_bus_flush_close_unref(r->bus);
        con_audit_writer_free(r->audit);
        sd_event_unref(r->event);
        con_config_free(r->config);
        router_map_free(r->known);
        router_map_free(r->used_ids);
        safe_close(r->rejected_fd);
        free(r->srv_dir);
        free(r->audit_dir);
        free(r);
        return NULL;
}
