/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "con-paths.h"
#include "con.h"
#include "fileio.h"
#include "macro.h"
#include "linkguard.h"
#include "mesh-pki.h"
#include "netdoor.h"
#include "provision.h"
#include "strv.h"

/* Best effort: no bus running (a root being built) is fine. */
static void reload_bus_config(void) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        if (sd_bus_open_system(&bus) < 0)
                return;
        int r = sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                   "ReloadConfig", &e, NULL, NULL);
        if (r < 0 && r != -ENOENT && r != -ECONNREFUSED)
                fprintf(stderr, "con: bootstrap: warning: the system bus did not reload its policy: %s\n",
                        e.message ?: strerror(-r));
}

static void bootstrap_help(FILE *f) {
        fputs("Usage: con bootstrap [--profile default|minimal] [--config FILE] [--force] [--dry-run]\n"
              "\n"
              "Provision this machine from the configuration: groups, agent users, /srv/con, ACLs,\n"
              "AGENTS.md, skills, contracts, platform files and the network door (nftables table\n"
              "inet conspiracyos, docs/NETWORK.md), and enable the fabric's systemd units\n"
              "(conspiracyos.target, 'always' agents, cron timers) with links in /etc/systemd/system.\n"
              "Under systemd it then runs systemctl daemon-reload and starts them. Only what differs\n"
              "is changed; when something did, the running services reload their configuration\n"
              "(the egress gateway always: its secrets in /etc/con/env are not bootstrap's to compare).\n"
              "With a mesh: section, also this host's TLS key and certificate for the mesh when missing:\n"
              "issued here when the mesh's CA is here (" CON_MESH_CA_DIR "), else a key and a signing\n"
              "request, then it stops saying what to run on the CA's host (con mesh sign); an existing\n"
              "certificate is checked (host name, CA, key, dates).\n"
              "\n"
              "  --config FILE    provision from FILE and install it as /etc/con/con.yaml (the services read that)\n"
              "  --profile NAME   install profile NAME to /etc/con and use it\n"
              "                   (default when /etc/con/con.yaml does not exist: 'default')\n"
              "  --force          overwrite /etc/con files changed here that differ from the profile or\n"
              "                   FILE (files unedited since bootstrap installed them are updated without it)\n"
              "  --dry-run        print what would change, change nothing\n"
              "  --add-dropin FILE     also provision FILE (an agent's drop-in) and install it as\n"
              "                        " CON_DROPIN_DIR "/NAME.yaml, NAME.yaml being FILE's name\n"
              "  --remove-dropin NAME.yaml  provision without that drop-in, then remove it\n"
              "                        (con-provisiond commissions and retires agents with these)\n"
              "\n"
              "Exit status: 0 ok, 1 failure, 2 usage error, 3 not root, 4 invalid configuration.\n",
              f);
}

typedef struct Changes {
        bool dry_run;
        char **restart;         /* agents whose unit's network drop-in was written */
} Changes;

static void changes_done(Changes *c) {
        strv_free(c->restart);
}

static void print_change(const char *change, void *userdata) {
        Changes *c = userdata;
        printf("%s%s\n", c->dry_run ? "would " : "", change);
        fflush(stdout);
        /* A running agent unit gets a changed network drop-in (its namespace, its address
         * families) only when it starts again: con_enable_fabric() restarts it. */
        const char *n = startswith(change, "write " CON_SYSTEMD_UNIT_DIR "/con-agent@");
        const char *e = n ? strstr(n, ".service.d/") : NULL;
        if (e && !c->dry_run) {
                char *a = strndup(n, e - n);
                if (a && strv_contains(c->restart, a))
                        free(a);
                else if (!a || strv_consume(&c->restart, a) < 0)
                        fprintf(stderr, "con: bootstrap: warning: out of memory; restart con-agent@%.*s yourself\n",
                                (int) (e - n), n);
        }
}

int verb_bootstrap(int argc, char *argv[]) {
        enum { ARG_FORCE = 0x100, ARG_DRY_RUN, ARG_ADD_DROPIN, ARG_REMOVE_DROPIN };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "config", required_argument, NULL, 'c' },
                { "profile", required_argument, NULL, 'p' },
                { "force", no_argument, NULL, ARG_FORCE },
                { "dry-run", no_argument, NULL, ARG_DRY_RUN },
                { "add-dropin", required_argument, NULL, ARG_ADD_DROPIN },
                { "remove-dropin", required_argument, NULL, ARG_REMOVE_DROPIN },
                {}
        };
        _cleanup_(con_provision_freep) ConProvision *p = NULL;
        _cleanup_free_ char *error = NULL, *dropin_text = NULL;
        const char *add_dropin = NULL;
        ConProvisionOptions o = {};
        unsigned checked = 0, changed = 0;
        _cleanup_(changes_done) Changes ch = {};
        int c, r;

        optind = 1;
        while ((c = getopt_long(argc, argv, "hc:p:", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        bootstrap_help(stdout);
                        return CON_EXIT_OK;
                case 'c':
                        o.config_path = optarg;
                        break;
                case 'p':
                        o.profile = optarg;
                        break;
                case ARG_FORCE:
                        o.force = true;
                        break;
                case ARG_DRY_RUN:
                        o.dry_run = true;
                        break;
                case ARG_ADD_DROPIN:
                        add_dropin = optarg;
                        break;
                case ARG_REMOVE_DROPIN:
                        if (!con_config_dropin_name_valid(optarg))
                                return con_fail(CON_EXIT_USAGE, "bootstrap: --remove-dropin: '%s' is not a drop-in's "
                                                "name (NAME.yaml)", optarg);
                        o.omit_dropin = optarg;
                        break;
                default:
                        return CON_EXIT_USAGE;
                }
        if (optind < argc)
                return con_fail(CON_EXIT_USAGE, "bootstrap: unexpected argument '%s' (see 'con bootstrap --help')",
                                argv[optind]);
        if (o.config_path && o.profile)
                return con_fail(CON_EXIT_USAGE, "bootstrap: --config and --profile cannot be combined");
        if (add_dropin) {
                const char *base = strrchr(add_dropin, '/');
                base = base ? base + 1 : add_dropin;
                if (!con_config_dropin_name_valid(base))
                        return con_fail(CON_EXIT_USAGE, "bootstrap: --add-dropin: '%s' is not a drop-in's name (NAME.yaml)",
                                        base);
                if (o.omit_dropin && streq(o.omit_dropin, base))
                        return con_fail(CON_EXIT_USAGE, "bootstrap: --add-dropin and --remove-dropin name the same file");
                o.extra_dropin_name = base;
        }

        if (geteuid() != 0)
                return con_fail(CON_EXIT_NOT_ROOT,
                                "bootstrap: must run as root (it edits /etc/passwd and /etc/shadow and owns "
                                "/srv/con); try 'sudo con bootstrap'");

        /* Tests only: fail before the Nth change, to check that a failed run is rolled back. */
        const char *fail = getenv("CON_TEST_BOOTSTRAP_FAIL_AT");
        if (fail)
                o.fail_after = (unsigned) strtoul(fail, NULL, 10);

        if (add_dropin) {
                r = read_file_nofollow(add_dropin, 16U << 20, &dropin_text, NULL);
                if (r < 0)
                        return con_fail(CON_EXIT_FAILURE, "bootstrap: --add-dropin: cannot read %s: %s", add_dropin,
                                        strerror(-r));
                if (strlen(dropin_text) == 0 || memchr(dropin_text, 0, strlen(dropin_text)) != NULL)
                        return con_fail(CON_EXIT_CONFIG, "bootstrap: --add-dropin: %s is empty", add_dropin);
                o.extra_dropin_text = dropin_text;
        }

        o.mesh_credentials = true;
        r = con_provision_new(&o, &p, &error);
        if (r < 0)
                return con_fail(r == -ENOEXEC ? CON_EXIT_CONFIG : CON_EXIT_FAILURE, "bootstrap: %s%s",
                                error ?: strerror(-r), r == -ENOEXEC ? " (nothing was changed)" : "");

        printf("bootstrap: config %s%s%s\n", con_provision_config_path(p),
               con_provision_profile_dir(p) ? ", installing profile into /etc/con" : "",
               o.dry_run ? " (dry run)" : "");
        STRV_FOREACH(w, con_provision_warnings(p))
                fprintf(stderr, "con: bootstrap: warning: %s\n", *w);

        ch.dry_run = o.dry_run;
        r = con_provision_run(p, o.dry_run, print_change, &ch, &checked, &changed, &error);
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "bootstrap: %s", error ?: strerror(-r));

        /* This host's mesh key and signing request are written; its certificate comes from the
         * CA's host. The gateway cannot connect without it: stop before the units are enabled. */
        if (con_provision_mesh_request(p)) {
                if (o.dry_run)
                        fprintf(stderr, "con: bootstrap: would stop here: %s\n", con_provision_mesh_request(p));
                else
                        return con_fail(CON_EXIT_FAILURE, "bootstrap: %s", con_provision_mesh_request(p));
        }

        /* A retired agent's drop-in goes once everything was provisioned without it, before the
         * services reload. */
        if (o.omit_dropin) {
                _cleanup_free_ char *path = NULL;
                if (asprintf(&path, CON_DROPIN_DIR "/%s", o.omit_dropin) < 0)
                        return con_fail(CON_EXIT_FAILURE, "bootstrap: out of memory");
                checked++;
                if (access(path, F_OK) >= 0) {
                        _cleanup_free_ char *change = NULL;
                        if (asprintf(&change, "remove %s", path) < 0)
                                return con_fail(CON_EXIT_FAILURE, "bootstrap: out of memory");
                        print_change(change, &ch);
                        changed++;
                        if (!o.dry_run && unlink(path) < 0)
                                return con_fail(CON_EXIT_FAILURE, "bootstrap: cannot remove %s: %m", path);
                }
        }

        /* dbus-daemon reloads its policy when a policy file changes, not when a user it names
         * appears: a run that only created a user (con-web, on the first run after an upgrade from a
         * version that made it only with dashboard.enabled) would leave that user's
         * <policy user=...> ignored. Ask it to read its files again. */
        if (!o.dry_run && changed > 0)
                reload_bus_config();

        /* The network door: the nftables table of the agents' users, replaced atomically. */
        {
                _cleanup_free_ char *change = NULL;
                r = con_netdoor_sync(con_provision_config(p), o.dry_run, &change, &error);
                if (r < 0)
                        return con_fail(CON_EXIT_FAILURE, "bootstrap: network door: %s", error ?: strerror(-r));
                checked++;
                if (change) {
                        print_change(change, &ch);
                        changed++;
                }
        }

        /* The kernel's link protections, which the halt and quarantine markers rely on. */
        {
                _cleanup_free_ char *change = NULL;
                r = con_linkguard_sync(CON_PROC_SYS, o.dry_run, &change, &error);
                if (r < 0)
                        return con_fail(CON_EXIT_FAILURE, "bootstrap: %s", error ?: strerror(-r));
                checked++;
                if (change) {
                        print_change(change, &ch);
                        changed++;
                }
        }

        /* The units: enabled (and started, under systemd) from the config just installed. */
        r = con_enable_fabric(o.dry_run ? con_provision_config_path(p) : CON_CONFIG_PATH, o.dry_run, &checked, &changed,
                              &ch.restart);
        if (r != 0)
                return r;

        /* Running services pick the change up now, without a restart. The egress gateway is told
         * even when nothing here changed: a changed secret in /etc/con/env or a host-name entry
         * edited in /etc/con/con.yaml is nothing bootstrap writes. */
        if (!o.dry_run) {
                r = changed > 0 ? con_reload_services() : con_reload_egress();
                if (r != 0)
                        return r;
        }

        if (changed == 0)
                printf("bootstrap: nothing to change (%u items checked)\n", checked);
        else
                printf("bootstrap: %s %u of %u items\n", o.dry_run ? "would change" : "changed", changed, checked);
        return CON_EXIT_OK;
}
