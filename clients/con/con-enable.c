/* SPDX-License-Identifier: MIT */
/* con bootstrap's last step: enable the fabric under systemd. It writes the same symlinks
 * `systemctl enable` would (so it also works in a root that is not booted, such as an image
 * being built), and only when systemd is PID 1 asks it to reload and start them. */
#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "con-paths.h"
#include "con.h"
#include "config.h"
#include "macro.h"
#include "netdoor.h"
#include "platform.h"
#include "strv.h"

#define TARGET "conspiracyos.target"

/* The fabric's own services, enabled into TARGET. */
static const char * const fabric_services[] = {
        "con-routerd.service", "con-contractd.service", "con-modeld.service", NULL,
};

#define WEBD_SERVICE "con-webd.service"
#define EGRESSD_SERVICE "con-egressd.service"

static int link_unit(const char *dir, const char *name, const char *target, bool dry_run, unsigned *checked,
                     unsigned *changed) {
        _cleanup_free_ char *path = NULL;
        char buf[PATH_MAX];

        (*checked)++;

        if (asprintf(&path, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        ssize_t n = readlink(path, buf, sizeof buf - 1);
        if (n >= 0) {
                buf[n] = 0;
                if (streq(buf, target))
                        return 0;
        }
        printf("%slink %s -> %s\n", dry_run ? "would " : "", path, target);
        (*changed)++;
        if (dry_run)
                return 0;
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return -errno;
        if (unlink(path) < 0 && errno != ENOENT)
                return -errno;
        if (symlink(target, path) < 0)
                return -errno;
        return 0;
}

/* Removes links in DIR named PREFIX*SUFFIX that are not in KEEP: agents no longer configured. */
static int unlink_stale(const char *dir, const char *prefix, const char *suffix, char **keep, bool dry_run,
                        unsigned *changed) {
        _cleanup_(closedirp) DIR *d = opendir(dir);
        struct dirent *de;

        if (!d)
                return errno == ENOENT ? 0 : -errno;
        while ((de = readdir(d))) {
                size_t l = strlen(de->d_name);
                if (!startswith(de->d_name, prefix) || l < strlen(suffix) ||
                    !streq(de->d_name + l - strlen(suffix), suffix) || strv_contains(keep, de->d_name))
                        continue;
                printf("%sremove %s/%s\n", dry_run ? "would " : "", dir, de->d_name);
                (*changed)++;
                if (!dry_run && unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT)
                        return -errno;
        }
        return 0;
}

/* The network drop-in (bus/provision/platform.c) of an agent that no longer uses the egress gateway,
 * or no longer exists, goes: its unit is back to no network at all. Its agent is added to restart. */
static int unlink_stale_network(const ConConfig *config, bool dry_run, unsigned *changed, char ***restart) {
        _cleanup_strv_free_ char **names = NULL;
        int r = con_netdoor_dropin_agents(&names);

        STRV_FOREACH(name, names) {
                _cleanup_free_ char *dir = NULL, *path = NULL;
                if (r < 0)
                        break;
                if (isempty(*name))     /* the template's folder: not an agent's */
                        continue;
                const ConAgent *a = con_config_find_agent(config, *name);
                if (a && con_config_agent_uses_egress(config, a))
                        continue;
                r = con_netdoor_dropin_path(*name, &dir, &path);
                if (r < 0)
                        break;
                printf("%sremove %s\n", dry_run ? "would " : "", path);
                (*changed)++;
                if (dry_run)
                        continue;
                if (unlink(path) < 0 && errno != ENOENT)
                        return -errno;
                /* The folder, when nothing else (an admin's own drop-in) is in it. */
                (void) rmdir(dir);
                r = strv_extend(restart, *name);
        }
        return r;
}

int con_enable_fabric(const char *config_path, bool dry_run, unsigned *checked, unsigned *changed, char ***restart) {
        _cleanup_(con_config_freep) ConConfig *config = NULL;
        _cleanup_(con_error_detail_done) ConErrorDetail e = {};
        _cleanup_strv_free_ char **agents = NULL, **timers = NULL;
        _cleanup_strv_free_ char **start = NULL;
        int r;

        r = con_config_load(config_path, &config, &e);
        if (r < 0)
                return con_fail(CON_EXIT_CONFIG, "bootstrap: cannot read %s again to enable units: %s", config_path,
                                strerror(-r));
        for (size_t i = 0; i < config->n_agents; i++) {
                const ConAgent *a = &config->agents[i];
                char *u = NULL;
                if (a->mode == CON_MODE_ALWAYS)
                        r = asprintf(&u, "con-agent@%s.service", a->name) < 0 ? -ENOMEM : strv_consume(&agents, u);
                else if (a->mode == CON_MODE_CRON)
                        r = asprintf(&u, "con-cron-%s.timer", a->name) < 0 ? -ENOMEM : strv_consume(&timers, u);
                if (r < 0)
                        return con_fail(CON_EXIT_FAILURE, "out of memory");
        }

        /* A machine without systemd installed may lack the folder; the links wait in it anyway. */
        if (!dry_run && (mkdir("/etc/systemd", 0755) < 0 && errno != EEXIST))
                return con_fail(CON_EXIT_FAILURE, "bootstrap: cannot create /etc/systemd: %m");
        if (!dry_run && (mkdir(CON_SYSTEMD_UNIT_DIR, 0755) < 0 && errno != EEXIST))
                return con_fail(CON_EXIT_FAILURE, "bootstrap: cannot create " CON_SYSTEMD_UNIT_DIR ": %m");
        r = link_unit(CON_SYSTEMD_UNIT_DIR "/multi-user.target.wants", TARGET, CON_SHIPPED_UNIT_DIR "/" TARGET,
                      dry_run, checked, changed);
        /* What `systemctl enable` makes of the services' WantedBy=conspiracyos.target. */
        for (const char * const *u = fabric_services; *u && r >= 0; u++) {
                _cleanup_free_ char *t = NULL;
                if (asprintf(&t, CON_SHIPPED_UNIT_DIR "/%s", *u) < 0)
                        return con_fail(CON_EXIT_FAILURE, "out of memory");
                r = link_unit(CON_SYSTEMD_UNIT_DIR "/" TARGET ".wants", *u, t, dry_run, checked, changed);
        }
        /* The status page when dashboard.enabled; its link goes when it is turned off. */
        if (r >= 0 && config->dashboard.enabled)
                r = link_unit(CON_SYSTEMD_UNIT_DIR "/" TARGET ".wants", WEBD_SERVICE,
                              CON_SHIPPED_UNIT_DIR "/" WEBD_SERVICE, dry_run, checked, changed);
        else if (r >= 0)
                r = unlink_stale(CON_SYSTEMD_UNIT_DIR "/" TARGET ".wants", "con-webd", ".service", NULL, dry_run,
                                 changed);
        /* The egress gateway when an agent has a network allow-list. */
        if (r >= 0 && con_config_needs_egress(config))
                r = link_unit(CON_SYSTEMD_UNIT_DIR "/" TARGET ".wants", EGRESSD_SERVICE,
                              CON_SHIPPED_UNIT_DIR "/" EGRESSD_SERVICE, dry_run, checked, changed);
        else if (r >= 0)
                r = unlink_stale(CON_SYSTEMD_UNIT_DIR "/" TARGET ".wants", "con-egressd", ".service", NULL, dry_run,
                                 changed);
        /* The mesh gateway when the config has a mesh: section. */
        if (r >= 0 && config->mesh.enabled)
                r = link_unit(CON_SYSTEMD_UNIT_DIR "/" TARGET ".wants", "con-meshd.service",
                              CON_SHIPPED_UNIT_DIR "/con-meshd.service", dry_run, checked, changed);
        else if (r >= 0)
                r = unlink_stale(CON_SYSTEMD_UNIT_DIR "/" TARGET ".wants", "con-meshd", ".service", NULL, dry_run,
                                 changed);
        STRV_FOREACH(u, agents)
                if (r >= 0)
                        r = link_unit(CON_SYSTEMD_UNIT_DIR "/" TARGET ".wants", *u,
                                      CON_SHIPPED_UNIT_DIR "/con-agent@.service", dry_run, checked, changed);
        STRV_FOREACH(u, timers)
                if (r >= 0) {
                        _cleanup_free_ char *t = NULL;
                        if (asprintf(&t, CON_SYSTEMD_UNIT_DIR "/%s", *u) < 0)
                                return con_fail(CON_EXIT_FAILURE, "out of memory");
                        r = link_unit(CON_SYSTEMD_UNIT_DIR "/timers.target.wants", *u, t, dry_run, checked, changed);
                }
        if (r >= 0)
                r = unlink_stale(CON_SYSTEMD_UNIT_DIR "/" TARGET ".wants", "con-agent@", ".service", agents, dry_run,
                                 changed);
        if (r >= 0)
                r = unlink_stale(CON_SYSTEMD_UNIT_DIR "/timers.target.wants", "con-cron-", ".timer", timers, dry_run,
                                 changed);
        if (r >= 0)
                r = unlink_stale_network(config, dry_run, changed, restart);
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "bootstrap: cannot enable the fabric's units in " CON_SYSTEMD_UNIT_DIR
                                ": %s", strerror(-r));

        /* Without systemd as PID 1 (the test sandbox, a root being built) the links wait for the
         * first boot; `con up` starts the fabric meanwhile. */
        if (dry_run || sd_booted() <= 0)
                return 0;
        r = con_run_command((char *[]) { (char *) "systemctl", (char *) "daemon-reload", NULL });
        if (r != 0)
                return con_fail(CON_EXIT_FAILURE, "bootstrap: systemctl daemon-reload failed (exit status %d)", r);
        if (strv_extend(&start, "systemctl") < 0 || strv_extend(&start, "start") < 0 ||
            strv_extend(&start, TARGET) < 0)
                return con_fail(CON_EXIT_FAILURE, "out of memory");
        STRV_FOREACH(u, timers)
                if (strv_extend(&start, *u) < 0)
                        return con_fail(CON_EXIT_FAILURE, "out of memory");
        r = con_run_command(start);
        if (r != 0)
                return con_fail(CON_EXIT_FAILURE, "bootstrap: systemctl start " TARGET " failed (exit status %d)", r);
        printf("bootstrap: " TARGET " enabled and started (%zu always agents, %zu timers)\n", strv_length(agents),
               strv_length(timers));
        /* A running agent whose unit's network changed gets it now (its sessions in flight end;
         * the queue is the keeper's and survives). try-restart: a stopped unit stays stopped. */
        if (strv_length(*restart) == 0)
                return 0;
        _cleanup_strv_free_ char **units = NULL, **cmd = NULL;
        STRV_FOREACH(a, *restart)
                if (strv_extendf(&units, "con-agent@%s.service", *a) < 0)
                        return con_fail(CON_EXIT_FAILURE, "out of memory");
        if (strv_extend(&cmd, "systemctl") < 0 || strv_extend(&cmd, "try-restart") < 0)
                return con_fail(CON_EXIT_FAILURE, "out of memory");
        STRV_FOREACH(u, units)
                if (strv_extend(&cmd, *u) < 0)
                        return con_fail(CON_EXIT_FAILURE, "out of memory");
        r = con_run_command(cmd);
        if (r != 0) {
                _cleanup_free_ char *all = strv_join(units, " ");
                return con_fail(CON_EXIT_FAILURE, "bootstrap: systemctl try-restart %s failed (exit status %d)",
                                strempty(all), r);
        }
        STRV_FOREACH(u, units)
                printf("try-restart %s (its network changed)\n", *u);
        return 0;
}
