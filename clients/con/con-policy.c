/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "json-util.h"
#include "con-paths.h"
#include "con.h"
#include "macro.h"
#include "names.h"
#include "netdoor.h"
#include "network.h"
#include "policy-check.h"
#include "policy.h"
#include "strv.h"
#include "user-util.h"


/* con policy show | check | query: the one access policy of con.yaml (docs/POLICY.md). */

static void policy_help(FILE *f) {
        fputs("Usage: con policy show [--json] [--config FILE]\n"
              "       con policy check [--json] [--config FILE]\n"
              "       con policy query USER VERB AGENT [--json] [--config FILE]\n"
              "\n"
              "  show    every rule of the access policy: principal, verb, target agent, the doors that\n"
              "          enforce it and where it comes from (default grant or con.yaml line)\n"
              "  check   compare the four doors on this machine (inbox ACLs, polkit rules and actions,\n"
              "          D-Bus policy, nftables table inet conspiracyos) with what the config generates;\n"
              "          exit 1 and name every drift\n"
              "  query   whether the Unix user USER (with its groups) may VERB on AGENT: prints allow or\n"
              "          deny, exit 0 or 1\n"
              "\n"
              "--json prints one JSON document instead: show {rules, bus_names}, check {in_sync, drift,\n"
              "rules}, query {user, verb, agent, allow} (docs/CLI.md); the exit status stays the same.\n"
              "\n"
              "Verbs: " CON_POLICY_VERBS_ALLOWED ".\n"
              "Exit status: 0 ok (allow, no drift), 1 drift or deny or failure, 2 usage error, 3 not root,\n"
              "4 invalid configuration.\n",
              f);
}

static int load_config(const char *path, ConConfig **ret) {
        ConErrorDetail e = {};
        int r = con_config_load(path, ret, &e);
        if (r < 0) {
                _cleanup_free_ char *m = con_error_detail_format(&e);
                con_error_detail_done(&e);
                return con_fail(r == -EINVAL ? CON_EXIT_CONFIG : CON_EXIT_FAILURE, "policy: %s",
                                m ?: strerror(-r));
        }
        return 0;
}

/* Which doors enforce a rule. */
static const char * const *rule_doors(const ConPolicyRule *r) {
        static const char * const root[] = { "services", NULL };
        static const char * const task[] = { "acl", "polkit", NULL };
        static const char * const other[] = { "polkit", NULL };
        if (r->kind == CON_PRINCIPAL_ROOT || con_principal_is_remote(r->kind))
                return root;
        return r->verb == CON_POLICY_TASK ? task : other;
}

static char *rule_source(const ConConfig *c, const ConPolicyRule *r) {
        char *s = NULL;
        if (r->line == 0)
                return strdup("default");
        return asprintf(&s, "%s:%u", c->path ?: "con.yaml", r->line) < 0 ? NULL : s;
}

/* One JSON document on one line (docs/CLI.md, "JSON output"). */
static int print_json(const cJSON *o) {
        _cleanup_free_ char *s = cJSON_PrintUnformatted(o);
        if (!s)
                return -ENOMEM;
        puts(s);
        return 0;
}

/* The network door of one agent as text: the kernel's entries (addresses) and the host names,
 * which only the egress gateway lets through (docs/NETWORK.md). */
static int network_entries(const ConNetwork *n, bool host, char ***ret) {
        _cleanup_strv_free_ char **l = NULL;
        for (size_t i = 0; i < n->n_allow; i++) {
                if (!!n->allow[i].host != host)
                        continue;
                char *e = con_net_allow_format(&n->allow[i]);
                if (!e || strv_consume(&l, e) < 0)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(l);
        return 0;
}

static int show_json(const ConConfig *c, const ConPolicy *p) {
        _cleanup_(cJSON_Deletep) cJSON *root = cJSON_CreateObject();
        cJSON *rules = cJSON_AddArrayToObject(root, "rules"), *names = cJSON_AddArrayToObject(root, "bus_names");
        if (!root || !rules || !names)
                return con_fail(CON_EXIT_FAILURE, "policy: out of memory");
        for (size_t i = 0; i < p->n_rules; i++) {
                const ConPolicyRule *r = &p->rules[i];
                _cleanup_free_ char *who = con_policy_rule_principal(r), *src = rule_source(c, r);
                cJSON *o = cJSON_CreateObject();
                if (!who || !src || !o || !cJSON_AddItemToArray(rules, o))
                        return con_fail(CON_EXIT_FAILURE, "policy: out of memory");
                cJSON_AddStringToObject(o, "principal", who);
                cJSON_AddStringToObject(o, "verb", con_policy_verb_to_string(r->verb));
                if (r->target)
                        cJSON_AddStringToObject(o, "target", r->target);
                else
                        cJSON_AddNullToObject(o, "target");
                cJSON_AddStringToObject(o, "action", con_policy_verb_action(r->verb));
                cJSON *d = cJSON_AddArrayToObject(o, "doors");
                for (const char * const *x = rule_doors(r); d && *x; x++)
                        cJSON_AddItemToArray(d, cJSON_CreateString(*x));
                cJSON_AddStringToObject(o, "source", src);
        }
        for (size_t i = 0; i < c->n_agents; i++) {
                _cleanup_free_ char *user = NULL, *bus = NULL;
                cJSON *o = cJSON_CreateObject();
                if (con_agent_user(c->agents[i].name, &user) < 0 || con_agent_bus_name(c->agents[i].name, &bus) < 0 ||
                    !o || !cJSON_AddItemToArray(names, o))
                        return con_fail(CON_EXIT_FAILURE, "policy: out of memory");
                cJSON_AddStringToObject(o, "user", user);
                cJSON_AddStringToObject(o, "owns", bus);
                cJSON_AddStringToObject(o, "door", "dbus");
        }
        cJSON *net = cJSON_AddArrayToObject(root, "network");
        if (!net)
                return con_fail(CON_EXIT_FAILURE, "policy: out of memory");
        for (size_t i = 0; i < c->n_agents; i++) {
                const ConNetwork *n = &c->agents[i].rt.network;
                _cleanup_strv_free_ char **kernel = NULL, **hosts = NULL;
                _cleanup_free_ char *user = NULL;
                cJSON *o = cJSON_CreateObject(), *k, *h;
                if (con_agent_user(c->agents[i].name, &user) < 0 || network_entries(n, false, &kernel) < 0 ||
                    network_entries(n, true, &hosts) < 0 || !o || !cJSON_AddItemToArray(net, o) ||
                    !cJSON_AddStringToObject(o, "user", user) ||
                    !cJSON_AddStringToObject(o, "network", con_network_mode_to_string(n->mode)) ||
                    !(k = cJSON_AddArrayToObject(o, "kernel")) || !(h = cJSON_AddArrayToObject(o, "via_gateway")) ||
                    !cJSON_AddStringToObject(o, "door", "nft"))
                        return con_fail(CON_EXIT_FAILURE, "policy: out of memory");
                STRV_FOREACH(e, kernel)
                        cJSON_AddItemToArray(k, cJSON_CreateString(*e));
                STRV_FOREACH(e, hosts)
                        cJSON_AddItemToArray(h, cJSON_CreateString(*e));
        }
        _cleanup_free_ char *s = cJSON_PrintUnformatted(root);
        if (!s)
                return con_fail(CON_EXIT_FAILURE, "policy: out of memory");
        puts(s);
        return CON_EXIT_OK;
}

static int show_text(const ConConfig *c, const ConPolicy *p) {
        printf("%-24s %-16s %-20s %-12s %s\n", "PRINCIPAL", "VERB", "TARGET", "DOORS", "SOURCE");
        for (size_t i = 0; i < p->n_rules; i++) {
                const ConPolicyRule *r = &p->rules[i];
                _cleanup_free_ char *who = con_policy_rule_principal(r), *src = rule_source(c, r);
                _cleanup_free_ char *doors = strv_join((char * const *) rule_doors(r), ",");
                if (!who || !src || !doors)
                        return con_fail(CON_EXIT_FAILURE, "policy: out of memory");
                printf("%-24s %-16s %-20s %-12s %s\n", who, con_policy_verb_to_string(r->verb),
                       r->target ?: "(no agent)", doors, src);
        }
        printf("\n%-24s %-37s %s\n", "USER", "OWNS BUS NAME (only this user)", "DOOR");
        for (size_t i = 0; i < c->n_agents; i++) {
                _cleanup_free_ char *user = NULL, *bus = NULL;
                if (con_agent_user(c->agents[i].name, &user) < 0 || con_agent_bus_name(c->agents[i].name, &bus) < 0)
                        return con_fail(CON_EXIT_FAILURE, "policy: out of memory");
                printf("%-24s %-37s %s\n", user, bus, "dbus");
        }
        printf("\n%-24s %-12s %s\n", "USER", "NETWORK", "MAY SEND TO (DOOR nft)");
        for (size_t i = 0; i < c->n_agents; i++) {
                const ConNetwork *n = &c->agents[i].rt.network;
                _cleanup_strv_free_ char **kernel = NULL, **hosts = NULL;
                _cleanup_free_ char *user = NULL, *k = NULL, *h = NULL;
                if (con_agent_user(c->agents[i].name, &user) < 0 || network_entries(n, false, &kernel) < 0 ||
                    network_entries(n, true, &hosts) < 0 || !(k = strv_join(kernel, ", ")) || !(h = strv_join(hosts, ", ")))
                        return con_fail(CON_EXIT_FAILURE, "policy: out of memory");
                _cleanup_strv_free_ char **svc = NULL;
                _cleanup_free_ char *sv = NULL;
                for (size_t j = 0; j < c->egress.n_services; j++)
                        if (con_config_egress_service(c, c->agents[i].name, c->egress.services[j].name) &&
                            strv_extend(&svc, c->egress.services[j].name) < 0)
                                return con_fail(CON_EXIT_FAILURE, "policy: out of memory");
                if (!(sv = strv_join(svc, ", ")))
                        return con_fail(CON_EXIT_FAILURE, "policy: out of memory");
                if (con_config_agent_uses_egress(c, &c->agents[i]))
                        printf("%-24s %-12s %s%sthe egress gateway 127.0.0.1:%u%s%s%s%s\n", user,
                               con_network_mode_to_string(n->mode), kernel ? k : "", kernel ? ", " : "", c->egress.port,
                               hosts ? " for " : "", h, svc ? (hosts ? "; services: " : " for services: ") : "", sv);
                else
                        printf("%-24s %-12s nothing\n", user, con_network_mode_to_string(n->mode));
        }
        printf("\n%zu rules. Doors: acl = inbox ACLs (file drop), polkit = per-call check by the services,\n"
               "dbus = bus policy (name ownership), services = decided by the services (root),\n"
               "nft = the network door (nftables table inet conspiracyos, docs/NETWORK.md).\n",
               p->n_rules);
        return CON_EXIT_OK;
}

/* The user's group names, from the system's group database. */
static int user_groups(const char *user, char ***ret) {
        struct passwd *pw = getpwnam(user);
        if (!pw)
                return -ENOENT;
        return con_user_group_names(user, pw->pw_gid, ret);
}

int verb_policy(int argc, char *argv[]) {
        enum { ARG_JSON = 0x100 };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "config", required_argument, NULL, 'c' },
                { "json", no_argument, NULL, ARG_JSON },
                {}
        };
        _cleanup_(con_config_freep) ConConfig *cfg = NULL;
        _cleanup_(con_policy_freep) ConPolicy *policy = NULL;
        const char *config = CON_CONFIG_PATH;
        bool json = false;
        int c, r;

        /* Options anywhere: before or after the subcommand and its arguments. */
        optind = 1;
        while ((c = getopt_long(argc, argv, "hc:", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        policy_help(stdout);
                        return CON_EXIT_OK;
                case 'c':
                        config = optarg;
                        break;
                case ARG_JSON:
                        json = true;
                        break;
                default:
                        return CON_EXIT_USAGE;
                }
        if (optind >= argc)
                return con_fail(CON_EXIT_USAGE, "policy: missing subcommand: show, check or query (see 'con policy --help')");
        const char *sub = argv[optind++];
        char **args = argv + optind;
        size_t n_args = (size_t) (argc - optind);

        if (streq(sub, "show") || streq(sub, "check")) {
                if (n_args > 0)
                        return con_fail(CON_EXIT_USAGE, "policy %s: unexpected argument '%s'", sub, args[0]);
        } else if (streq(sub, "query")) {
                if (n_args != 3)
                        return con_fail(CON_EXIT_USAGE, "policy query: expected USER VERB AGENT, got %zu argument%s",
                                        n_args, n_args == 1 ? "" : "s");
        } else
                return con_fail(CON_EXIT_USAGE, "policy: unknown subcommand '%s' (use show, check or query)", sub);

        if (streq(sub, "check") && geteuid() != 0)
                return con_fail(CON_EXIT_NOT_ROOT,
                                "policy check: must run as root (the agents' folders and polkit's rules folder are "
                                "private); try 'sudo con policy check'");

        r = load_config(config, &cfg);
        if (r != 0)
                return r;
        r = con_policy_from_config(cfg, &policy);
        if (r < 0)
                return con_fail(CON_EXIT_CONFIG, "policy: %s: cannot build the access policy: %s", config, strerror(-r));

        if (streq(sub, "show"))
                return json ? show_json(cfg, policy) : show_text(cfg, policy);

        if (streq(sub, "query")) {
                ConPolicyVerb v = con_policy_verb_from_string(args[1]);
                if (v < 0)
                        return con_fail(CON_EXIT_USAGE, "policy query: '%s' is not a verb; use " CON_POLICY_VERBS_ALLOWED,
                                        args[1]);
                if (con_policy_verb_per_agent(v) && !con_config_find_agent(cfg, args[2]))
                        return con_fail(CON_EXIT_USAGE, "policy query: '%s' is not an agent in %s", args[2], config);
                _cleanup_strv_free_ char **groups = NULL;
                r = user_groups(args[0], &groups);
                if (r == -ENOENT)
                        return con_fail(CON_EXIT_USAGE, "policy query: no user '%s' on this machine", args[0]);
                if (r < 0)
                        return con_fail(CON_EXIT_FAILURE, "policy query: cannot read the groups of '%s': %s", args[0],
                                        strerror(-r));
                bool yes = con_policy_allows(policy, args[0], groups, v, args[2]);
                if (json) {
                        _cleanup_(cJSON_Deletep) cJSON *o = cJSON_CreateObject();
                        if (!o || !cJSON_AddStringToObject(o, "user", args[0]) ||
                            !cJSON_AddStringToObject(o, "verb", args[1]) ||
                            !(con_policy_verb_per_agent(v) ? cJSON_AddStringToObject(o, "agent", args[2]) :
                                                              cJSON_AddNullToObject(o, "agent")) ||
                            !cJSON_AddBoolToObject(o, "allow", yes) || print_json(o) < 0)
                                return con_fail(CON_EXIT_FAILURE, "policy: out of memory");
                } else
                        puts(yes ? "allow" : "deny");
                return yes ? CON_EXIT_OK : CON_EXIT_FAILURE;
        }

        /* check */
        _cleanup_strv_free_ char **drift = NULL;
        _cleanup_free_ char *error = NULL;
        r = con_policy_check(cfg, &drift, &error);
        if (r >= 0)
                r = con_netdoor_check(cfg, &drift, &error);
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "policy check: %s", error ?: strerror(-r));
        if (json) {
                _cleanup_(cJSON_Deletep) cJSON *o = cJSON_CreateObject();
                cJSON *a = o && cJSON_AddBoolToObject(o, "in_sync", !drift) ? cJSON_AddArrayToObject(o, "drift") : NULL;
                if (!a || !con_json_add_u64(o, "rules", policy->n_rules))
                        return con_fail(CON_EXIT_FAILURE, "policy: out of memory");
                STRV_FOREACH(d, drift)
                        if (!cJSON_AddItemToArray(a, cJSON_CreateString(*d)))
                                return con_fail(CON_EXIT_FAILURE, "policy: out of memory");
                if (print_json(o) < 0)
                        return con_fail(CON_EXIT_FAILURE, "policy: out of memory");
                return drift ? CON_EXIT_FAILURE : CON_EXIT_OK;
        }
        STRV_FOREACH(d, drift)
                printf("drift: %s\n", *d);
        if (drift) {
                size_t n = strv_length(drift);
                printf("policy: %zu difference%s between the doors and %s; 'con bootstrap' repairs them\n", n,
                       n == 1 ? "" : "s", config);
                return CON_EXIT_FAILURE;
        }
        printf("policy: all four doors match the config (%zu rules)\n", policy->n_rules);
        return CON_EXIT_OK;
}
