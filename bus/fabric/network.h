/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The network door's policy (docs/NETWORK.md): what an agent's user may send on the network.
 * Written in con.yaml as `network:` on an agent, on base.<tier> or on base:
 *
 *   none        nothing at all
 *   gateway     only the local model gateway, which is reached over the bus (the default)
 *   [entries]   an allow-list; each entry is HOST, CIDR or ADDRESS, each with an optional
 *               :PORT or :PORT-PORT (IPv6 in brackets when a port follows: [2001:db8::/32]:443)
 *               HOST is exact (api.example.com) or a suffix (*.example.com)
 *
 * The kernel (bus/provision/netdoor.h) enforces `none`, `gateway` and the address entries;
 * host-name entries need the egress gateway and are refused by the kernel until it exists.
 * Pure library code: no logging. */

typedef enum ConNetworkMode {
        CON_NETWORK_UNSET,      /* not written at this level */
        CON_NETWORK_NONE,
        CON_NETWORK_GATEWAY,
        CON_NETWORK_ALLOW,
        _CON_NETWORK_MODE_MAX,
} ConNetworkMode;

typedef struct ConNetAllow {
        char *host;             /* lower-case host name ("*.example.com" for a suffix); NULL for an address */
        int family;             /* AF_INET or AF_INET6 for an address, 0 for a host */
        uint8_t addr[16];       /* network address (host bits zero) */
        unsigned prefix;        /* 0..32 or 0..128 */
        uint16_t port_min, port_max; /* 0, 0: any port */
} ConNetAllow;

typedef struct ConNetwork {
        ConNetworkMode mode;
        ConNetAllow *allow;     /* CON_NETWORK_ALLOW: at least one entry */
        size_t n_allow;
} ConNetwork;

#define CON_NETWORK_ALLOW_MAX 256U

/* Parses one allow-list entry. Returns 0, -EINVAL with *ret_problem set to a static sentence
 * fragment ("is not ...; use ..."), or -ENOMEM. */
int con_net_allow_parse(const char *s, ConNetAllow *ret, const char **ret_problem);
/* The entry as it would be written (canonical), e.g. "10.0.0.0/8:443", "[fd00::/64]:80-90". */
char *con_net_allow_format(const ConNetAllow *a);
void con_net_allow_done(ConNetAllow *a);

const char *con_network_mode_to_string(ConNetworkMode m);   /* "none", "gateway", "allow-list" */
void con_network_done(ConNetwork *n);
int con_network_copy(ConNetwork *dst, const ConNetwork *src);
