/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "con-paths.h"
#include "config.h"

/* The network door in the kernel (docs/NETWORK.md): one nftables table owned by the project,
 * `table inet conspiracyos`, whose output chain matches packets by the sending socket's owner
 * (`meta skuid`): agents with network none or gateway send nothing; allow-list agents send only
 * to the egress gateway (127.0.0.1, egress.port) and to their address entries; agents a credentialed service names reach the gateway too. Root, the gateways and every other user are not matched.
 *
 * con_netdoor_render() is pure (config and UIDs in, text out): the script for `nft -f` replaces
 * the table atomically (one transaction: create, delete, create with the rules); the listing is
 * the table exactly as `nft -n list table inet conspiracyos` prints it, so drift is one string
 * comparison. */

#define CON_NFT_FAMILY "inet"
#define CON_NFT_TABLE "conspiracyos"

typedef struct ConNetdoorAgent {
        const char *name;
        uid_t uid;
        const ConNetwork *network;      /* resolved */
        bool egress;                    /* reaches the egress gateway although not an allow-list
                                         * (a credentialed service names it) */
        const char *cut;                /* "halted" or "quarantined": nothing at all, whatever the
                                         * policy says; NULL: the policy */
} ConNetdoorAgent;

/* ret_script: for `nft -f -`; ret_listing: what `nft -n list table inet conspiracyos` prints.
 * Agents are matched in the order given; host-name entries are left out (the kernel cannot
 * match names: the egress gateway does). proxy_port (0: none): allow-list agents may reach the
 * egress gateway on 127.0.0.1:proxy_port (TCP). */
int con_netdoor_render(const ConNetdoorAgent *agents, size_t n, unsigned proxy_port, char **ret_script, char **ret_listing);

/* From the config, the agent users that exist now (getpwnam) and the halt and quarantine
 * markers (bus/fabric/markers.h, in CON_NETDOOR_STATE_DIR): a halted or quarantined agent is cut
 * off entirely. Agents whose user does not exist yet are left out and named in *ret_missing (may
 * be NULL). */
#define CON_NETDOOR_STATE_DIR CON_SRV_DIR "/state"
int con_netdoor_render_config(const ConConfig *c, char **ret_script, char **ret_listing, char ***ret_missing);

/* Whether nft is installed where run_nft() looks (/usr/sbin/nft, /sbin/nft). */
bool con_netdoor_nft_available(void);
/* Running nft (CON_NFT_PATH or nft in PATH). Errors come back as text. */
int con_netdoor_apply(const char *script, char **ret_error);
/* The table as `nft -n list` prints it; -ENOENT when there is no such table. */
int con_netdoor_list(char **ret_listing, char **ret_error);
/* `nft delete table inet conspiracyos`; 0 also when there was none. */
int con_netdoor_remove(char **ret_error);

/* Drift of the table: appends "nftables table inet conspiracyos: ..." lines to *drift (missing,
 * or the first line that differs). Agents whose user does not exist are left out of what is
 * expected (the file door check names them). */
int con_netdoor_check(const ConConfig *c, char ***drift, char **ret_error);
/* The second layer, part of con_netdoor_check(): each agent unit's network drop-in
 * (CON_AGENT_NETWORK_DROPIN, bus/provision/platform.c) is what the config generates, and no agent
 * that no longer uses the egress gateway keeps one. */
int con_netdoor_check_units(const ConConfig *c, char ***drift);
/* The agents whose unit folder in CON_SYSTEMD_UNIT_DIR (con-agent@NAME.service.d) holds a network
 * drop-in now, by NAME ("" for the template's con-agent@.service.d), in directory order: what
 * con_netdoor_check_units() and con bootstrap look for when a drop-in is no longer generated. */
int con_netdoor_dropin_agents(char ***ret);
/* CON_SYSTEMD_UNIT_DIR "/con-agent@NAME.service.d", and the network drop-in in it. */
int con_netdoor_dropin_path(const char *name, char **ret_dir, char **ret_path);

/* What con bootstrap does: renders the table from c and the agent users, compares it with the
 * kernel's and, unless dry_run, replaces it when it differs. *ret_change (NULL when nothing
 * differs) describes the change. */
int con_netdoor_sync(const ConConfig *c, bool dry_run, char **ret_change, char **ret_error);

/* What the contract service does after a halt, resume, quarantine or release: the same as
 * con_netdoor_sync() when the table exists (the markers changed, so the cut agents did), nothing
 * when there is none (creating the table is con bootstrap's). Blocks on nft: call it from a child. */
int con_netdoor_refresh(const ConConfig *c, char **ret_change, char **ret_error);
