/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "network.h"

/* The pure parts of the egress gateway, con-egressd (docs/NETWORK.md): the proxy request's head,
 * the allow-list decision and the kernel's word on who opened a loopback connection. Library
 * code: no logging. */

#define EGRESS_HEAD_MAX   (16U * 1024U) /* request line and headers */
#define EGRESS_HEADERS_MAX 100U
#define EGRESS_HOST_MAX   253U

typedef enum EgressForm {
        EGRESS_FORM_CONNECT,    /* CONNECT host:port HTTP/1.x: a tunnel */
        EGRESS_FORM_ABSOLUTE,   /* GET http://host[:port]/path HTTP/1.x: plain HTTP through the proxy */
        EGRESS_FORM_ORIGIN,     /* GET /path HTTP/1.x: addressed to the gateway itself */
} EgressForm;

typedef struct EgressRequest {
        EgressForm form;
        char method[24];
        char host[EGRESS_HOST_MAX + 1]; /* lower case; an IPv6 literal without brackets */
        uint16_t port;
        const char *target;             /* into the head: the path and query (ABSOLUTE, ORIGIN) */
        size_t target_len;
        unsigned minor;                 /* HTTP/1.minor */
        size_t head_len;                /* bytes of the head, through the empty line */
        size_t headers_start;           /* offset of the first header line */
} EgressRequest;

/* Parses the request head at the start of buf[0..len). Returns 1 with *ret filled when the head is
 * complete, 0 when more bytes are needed, -E2BIG when the head is longer than EGRESS_HEAD_MAX or
 * has too many headers, -EINVAL when it is malformed (*ret_problem: a static sentence fragment
 * for the 400 answer). */
int egress_parse_request(const char *buf, size_t len, EgressRequest *ret, const char **ret_problem);

/* The head for the upstream server of a plain-HTTP (ABSOLUTE) request: origin form
 * ("GET /path HTTP/1.1"), "Host:" the URL's host and port (the client's Host is dropped), the
 * client's other headers without the hop-by-hop and proxy ones (Connection, Keep-Alive, Proxy-*,
 * TE, Upgrade), then "Connection: close". */
int egress_rewrite_request(const char *head, const EgressRequest *req, char **ret, size_t *ret_len);

/* The value of the first header `name` (case-insensitive) of a parsed head, blanks trimmed, into
 * buf (at most size - 1 bytes; longer values are refused). Returns 1, 0 when absent, -E2BIG. */
int egress_header_value(const char *head, const EgressRequest *req, const char *name, char *buf, size_t size);

/* For an ORIGIN request "/<service>/rest": the service name into name (size bytes) and *ret_rest
 * (into the head: "/rest", "?query" or "" with its length). Returns 0 or -EINVAL. */
int egress_service_split(const EgressRequest *req, char *name, size_t size, const char **ret_rest, size_t *ret_rest_len);

/* Whether host (a name, not an address literal) and port are on the allow-list's host entries
 * (exact, or *.suffix for names below the suffix). */
bool egress_host_allowed(const ConNetwork *n, const char *host, uint16_t port);
/* Whether the address (AF_INET: 4 bytes, AF_INET6: 16) and port are in an address entry.
 * IPv4-mapped IPv6 addresses are matched as IPv4. */
bool egress_addr_allowed(const ConNetwork *n, int family, const void *addr, uint16_t port);
/* Loopback, unspecified, link-local or multicast (IPv4-mapped included): a name on the list that
 * resolves to one is not connected to unless an address entry names it. */
bool egress_addr_is_local(int family, const void *addr);

/* Whether s is an IPv4 or IPv6 literal (no brackets). */
bool egress_host_is_address(const char *s);

/* The UID that owns the TCP socket whose local end is `client` and remote end `server` (the
 * client's side of a connection accepted on a loopback listener), asked of the kernel with
 * NETLINK_SOCK_DIAG (inet_diag, the exact 4-tuple). nl_fd: a NETLINK_SOCK_DIAG socket.
 * Returns 0, -ENOENT (no such socket: it is gone), or a negative errno. */
int egress_socket_uid(int nl_fd, const struct sockaddr_storage *client, const struct sockaddr_storage *server,
                      uid_t *ret);
