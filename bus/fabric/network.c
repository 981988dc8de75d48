/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "macro.h"
#include "network.h"

static bool host_label_char(char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

/* RFC 1123 host name in lower case: labels of 1..63 characters, no leading or trailing '-',
 * at most 253 characters, at least one dot (a bare name would be resolved by a search list). */
static const char *host_check(const char *s) {
        size_t n = strlen(s), label = 0;
        bool dot = false;

        if (n == 0 || n > 253)
                return "is not a valid host name; use 1 to 253 characters";
        for (size_t i = 0; i <= n; i++) {
                char c = s[i];
                if (c == '.' || c == 0) {
                        if (label == 0 || s[i - 1] == '-')
                                return "is not a valid host name; each label between dots needs 1 to 63 letters, digits "
                                       "or '-', not starting or ending with '-'";
                        if (c == '.')
                                dot = true;
                        label = 0;
                        continue;
                }
                if (c >= 'A' && c <= 'Z')
                        return "is not allowed; write host names in lower case";
                if (!host_label_char(c))
                        return "is not a valid host name, address or CIDR; use e.g. api.example.com, *.example.com, "
                               "10.0.0.0/8 or [fd00::/64], each with an optional :PORT or :PORT-PORT";
                if (label == 0 && c == '-')
                        return "is not a valid host name; a label must not start with '-'";
                if (++label > 63)
                        return "is not a valid host name; a label is at most 63 characters";
        }
        if (!dot)
                return "is not allowed; give a fully qualified host name with at least one dot (e.g. api.example.com)";
        return NULL;
}

static int parse_port(const char *s, size_t len, uint16_t *ret) {
        unsigned v = 0;
        if (len == 0 || len > 5)
                return -EINVAL;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                v = v * 10 + (unsigned) (s[i] - '0');
        }
        if (v < 1 || v > 65535)
                return -EINVAL;
        *ret = (uint16_t) v;
        return 0;
}

static bool host_bits_zero(const uint8_t *a, unsigned bits, unsigned prefix) {
        for (unsigned i = prefix; i < bits; i++)
                if (a[i / 8] & (0x80 >> (i % 8)))
                        return false;
        return true;
}

int con_net_allow_parse(const char *s, ConNetAllow *ret, const char **ret_problem) {
        ConNetAllow a = {};
        _cleanup_free_ char *addr = NULL;
        const char *port = NULL, *colon;
        bool bracket = false;

        *ret_problem = NULL;
        if (!s || !*s) {
                *ret_problem = "is empty; give a host name, an address or a CIDR";
                return -EINVAL;
        }
        if (s[0] == '[') {
                const char *end = strchr(s, ']');
                if (!end || end == s + 1 || (end[1] && end[1] != ':')) {
                        *ret_problem = "is not valid; write an IPv6 address or CIDR in brackets, optionally followed by "
                                       ":PORT, e.g. [fd00::/64]:443";
                        return -EINVAL;
                }
                addr = strndup(s + 1, (size_t) (end - s - 1));
                port = end[1] ? end + 2 : NULL;
                bracket = true;
        } else if ((colon = strchr(s, ':')) && !strchr(colon + 1, ':')) {
                addr = strndup(s, (size_t) (colon - s));
                port = colon + 1;
        } else
                addr = strdup(s);       /* no port; an IPv6 address without brackets */
        if (!addr)
                return -ENOMEM;

        if (port) {
                const char *dash = strchr(port, '-');
                size_t l1 = dash ? (size_t) (dash - port) : strlen(port);
                if (parse_port(port, l1, &a.port_min) < 0 ||
                    (dash && parse_port(dash + 1, strlen(dash + 1), &a.port_max) < 0)) {
                        *ret_problem = "has an invalid port; use :PORT or :PORT-PORT with ports 1 to 65535";
                        return -EINVAL;
                }
                if (!dash)
                        a.port_max = a.port_min;
                if (a.port_max < a.port_min) {
                        *ret_problem = "has a port range that ends before it starts";
                        return -EINVAL;
                }
        }

        /* An address or a CIDR? */
        char *slash = strchr(addr, '/');
        if (slash)
                *slash = 0;
        if (inet_pton(AF_INET, addr, a.addr) == 1)
                a.family = AF_INET;
        else if (inet_pton(AF_INET6, addr, a.addr) == 1)
                a.family = AF_INET6;
        if (a.family == AF_INET6 && port && !bracket) {
                *ret_problem = "is ambiguous; write an IPv6 address with a port in brackets, e.g. [fd00::1]:443";
                return -EINVAL;
        }
        if (a.family) {
                unsigned bits = a.family == AF_INET ? 32 : 128;
                a.prefix = bits;
                if (slash) {
                        const char *p = slash + 1;
                        unsigned v = 0;
                        size_t l = strlen(p);
                        bool ok = l >= 1 && l <= 3;
                        for (size_t i = 0; ok && i < l; i++) {
                                ok = p[i] >= '0' && p[i] <= '9';
                                v = v * 10 + (unsigned) (p[i] - '0');
                        }
                        if (!ok || v > bits) {
                                *ret_problem = a.family == AF_INET ? "has an invalid prefix length; use /0 to /32"
                                                                   : "has an invalid prefix length; use /0 to /128";
                                return -EINVAL;
                        }
                        a.prefix = v;
                }
                if (!host_bits_zero(a.addr, bits, a.prefix)) {
                        *ret_problem = "has bits set after the prefix length; write the network address "
                                       "(e.g. 10.0.0.0/8, not 10.1.2.3/8)";
                        return -EINVAL;
                }
                *ret = a;
                return 0;
        }
        if (slash || bracket) {
                *ret_problem = "is not a valid address or CIDR; use e.g. 10.0.0.0/8 or [fd00::/64]";
                return -EINVAL;
        }
        const char *name = addr;
        if (name[0] == '*') {
                if (name[1] != '.') {
                        *ret_problem = "is not allowed; a wildcard is only allowed as a whole first label, "
                                       "e.g. *.example.com";
                        return -EINVAL;
                }
                name += 2;
        }
        *ret_problem = host_check(name);
        if (*ret_problem)
                return -EINVAL;
        a.host = TAKE_PTR(addr);
        *ret = a;
        return 0;
}

char *con_net_allow_format(const ConNetAllow *a) {
        char buf[INET6_ADDRSTRLEN], ports[16] = "";
        char *s;

        if (a->port_min && a->port_min == a->port_max)
                snprintf(ports, sizeof ports, ":%u", a->port_min);
        else if (a->port_min)
                snprintf(ports, sizeof ports, ":%u-%u", a->port_min, a->port_max);
        if (a->host)
                return asprintf(&s, "%s%s", a->host, ports) < 0 ? NULL : s;
        if (!inet_ntop(a->family, a->addr, buf, sizeof buf))
                return NULL;
        unsigned bits = a->family == AF_INET ? 32 : 128;
        char pfx[8] = "";
        if (a->prefix != bits)
                snprintf(pfx, sizeof pfx, "/%u", a->prefix);
        if (a->family == AF_INET6 && *ports)
                return asprintf(&s, "[%s%s]%s", buf, pfx, ports) < 0 ? NULL : s;
        return asprintf(&s, "%s%s%s", buf, pfx, ports) < 0 ? NULL : s;
}

void con_net_allow_done(ConNetAllow *a) {
        free(a->host);
        *a = (ConNetAllow) {};
}

const char *con_network_mode_to_string(ConNetworkMode m) {
        static const char * const t[_CON_NETWORK_MODE_MAX] = {
                [CON_NETWORK_UNSET] = "unset",
                [CON_NETWORK_NONE] = "none",
                [CON_NETWORK_GATEWAY] = "gateway",
                [CON_NETWORK_ALLOW] = "allow-list",
        };
        return m >= 0 && m < _CON_NETWORK_MODE_MAX ? t[m] : NULL;
}

void con_network_done(ConNetwork *n) {
        for (size_t i = 0; i < n->n_allow; i++)
                con_net_allow_done(&n->allow[i]);
        free(n->allow);
        *n = (ConNetwork) {};
}

int con_network_copy(ConNetwork *dst, const ConNetwork *src) {
        ConNetwork n = { .mode = src->mode };
        if (src->n_allow) {
                n.allow = calloc(src->n_allow, sizeof(ConNetAllow));
                if (!n.allow)
                        return -ENOMEM;
                for (size_t i = 0; i < src->n_allow; i++) {
                        n.allow[i] = src->allow[i];
                        n.allow[i].host = NULL;
                        n.n_allow++;
                        if (src->allow[i].host && !(n.allow[i].host = strdup(src->allow[i].host))) {
                                con_network_done(&n);
                                return -ENOMEM;
                        }
                }
        }
        con_network_done(dst);
        *dst = n;
        return 0;
}
