/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "egress-util.h"
#include "macro.h"

/* RFC 9110 token characters (methods, header names). */
static bool is_tchar(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                strchr("!#$%&'*+-.^_`|~", c);
}

bool egress_host_is_address(const char *s) {
        unsigned char buf[sizeof(struct in6_addr)];
        return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* A host name as the allow-list writes them: letters, digits, '-' and '.', lower-cased into out. */
static bool host_name_take(const char *s, size_t len, char *out) {
        if (len == 0 || len > EGRESS_HOST_MAX || s[0] == '.' || s[0] == '-' || s[len - 1] == '.')
                return false;
        for (size_t i = 0; i < len; i++) {
                char c = s[i];
                if (c >= 'A' && c <= 'Z')
                        c = (char) (c - 'A' + 'a');
                if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
                        return false;
                if (c == '.' && i > 0 && s[i - 1] == '.')
                        return false;
                out[i] = c;
        }
        out[len] = 0;
        return true;
}

static bool port_take(const char *s, size_t len, uint16_t *ret) {
        unsigned v = 0;
        if (len == 0 || len > 5)
                return false;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (unsigned) (s[i] - '0');
        }
        if (v == 0 || v > 65535)
                return false;
        *ret = (uint16_t) v;
        return true;
}

/* host, host:port, [v6] or [v6]:port; default_port 0: the port is required. */
static int authority_take(const char *s, size_t len, uint16_t default_port, EgressRequest *req, const char **problem) {
        const char *hs, *colon = NULL;
        size_t hl;

        if (len > 0 && s[0] == '[') {
                const char *end = memchr(s, ']', len);
                if (!end) {
                        *problem = "has an IPv6 address without its closing bracket";
                        return -EINVAL;
                }
                hs = s + 1;
                hl = (size_t) (end - hs);
                if (end + 1 < s + len) {
                        if (end[1] != ':') {
                                *problem = "has something after the IPv6 address that is not :PORT";
                                return -EINVAL;
                        }
                        colon = end + 1;
                }
                if (hl == 0 || hl >= INET6_ADDRSTRLEN) {
                        *problem = "has an invalid IPv6 address";
                        return -EINVAL;
                }
                memcpy(req->host, hs, hl);
                req->host[hl] = 0;
                struct in6_addr a;
                if (inet_pton(AF_INET6, req->host, &a) != 1) {
                        *problem = "has an invalid IPv6 address";
                        return -EINVAL;
                }
                /* The canonical spelling, so the allow-list and the audit see one form. */
                if (!inet_ntop(AF_INET6, &a, req->host, sizeof req->host))
                        return -EINVAL;
        } else {
                colon = memrchr(s, ':', len);
                hs = s;
                hl = colon ? (size_t) (colon - s) : len;
                if (hl > EGRESS_HOST_MAX) {
                        *problem = "names a host longer than 253 characters";
                        return -EINVAL;
                }
                if (!host_name_take(hs, hl, req->host)) {
                        *problem = "names no valid host (letters, digits, '-' and '.', or an address)";
                        return -EINVAL;
                }
        }
        if (colon) {
                if (!port_take(colon + 1, (size_t) (s + len - colon - 1), &req->port)) {
                        *problem = "has an invalid port (1-65535)";
                        return -EINVAL;
                }
        } else if (default_port)
                req->port = default_port;
        else {
                *problem = "has no port (CONNECT host:port)";
                return -EINVAL;
        }
        return 0;
}

int egress_parse_request(const char *buf, size_t len, EgressRequest *ret, const char **ret_problem) {
        EgressRequest req = {};
        const char *problem = NULL;
        size_t lines = 0, pos = 0, line_end = 0;
        int r;

        if (!ret_problem)
                ret_problem = &problem;
        *ret_problem = NULL;

        /* Find the end of the head: an empty line. Lines end with CRLF; a bare LF is accepted,
         * a bare CR or a NUL is not (they are how requests are smuggled past a parser). */
        for (;;) {
                const char *nl = memchr(buf + pos, '\n', len - pos);
                if (nl && (size_t) (nl - buf) >= EGRESS_HEAD_MAX)
                        return -E2BIG;
                if (!nl) {
                        if (len >= EGRESS_HEAD_MAX)
                                return -E2BIG;
                        size_t tail = len - pos;
                        const char *cr = memchr(buf + pos, '\r', tail);
                        if (memchr(buf + pos, 0, tail) || (cr && cr != buf + len - 1)) {
                                *ret_problem = "has a NUL or a bare carriage return";
                                return -EINVAL;
                        }
                        return 0;
                }
                size_t end = (size_t) (nl - buf);
                size_t content_end = end > pos && buf[end - 1] == '\r' ? end - 1 : end;
                if (memchr(buf + pos, 0, content_end - pos) || memchr(buf + pos, '\r', content_end - pos)) {
                        *ret_problem = "has a NUL or a bare carriage return";
                        return -EINVAL;
                }
                if (content_end == pos) {
                        if (lines == 0) {
                                *ret_problem = "starts with an empty line";
                                return -EINVAL;
                        }
                        req.head_len = end + 1;
                        break;
                }
                if (lines == 0)
                        line_end = content_end;
                else if (lines > EGRESS_HEADERS_MAX)
                        return -E2BIG;
                else {
                        /* name: value, the name a token, no obsolete line folding. */
                        size_t k = pos;
                        while (k < content_end && is_tchar(buf[k]))
                                k++;
                        if (k == pos || k >= content_end || buf[k] != ':') {
                                *ret_problem = "has a header line that is not NAME: VALUE";
                                return -EINVAL;
                        }
                        if (lines == 1)
                                req.headers_start = pos;
                }
                lines++;
                pos = end + 1;
        }

        /* The request line: METHOD SP TARGET SP HTTP/1.x */
        const char *line = buf, *sp1 = memchr(line, ' ', line_end);
        if (!sp1) {
                *ret_problem = "has no request line (METHOD TARGET HTTP/1.1)";
                return -EINVAL;
        }
        size_t ml = (size_t) (sp1 - line);
        if (ml == 0 || ml >= sizeof req.method) {
                *ret_problem = "has an invalid method";
                return -EINVAL;
        }
        for (size_t i = 0; i < ml; i++)
                if (!is_tchar(line[i])) {
                        *ret_problem = "has an invalid method";
                        return -EINVAL;
                }
        memcpy(req.method, line, ml);
        req.method[ml] = 0;
        const char *target = sp1 + 1, *sp2 = memchr(target, ' ', (size_t) (line + line_end - target));
        if (!sp2 || sp2 == target) {
                *ret_problem = "has no request line (METHOD TARGET HTTP/1.1)";
                return -EINVAL;
        }
        size_t tl = (size_t) (sp2 - target), vl = (size_t) (line + line_end - sp2 - 1);
        if (vl != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 || (sp2[8] != '0' && sp2[8] != '1')) {
                *ret_problem = "is not HTTP/1.0 or HTTP/1.1";
                return -EINVAL;
        }
        req.minor = (unsigned) (sp2[8] - '0');
        for (size_t i = 0; i < tl; i++)
                if ((unsigned char) target[i] <= ' ' || (unsigned char) target[i] >= 0x7f) {
                        *ret_problem = "has a target with spaces or control characters";
                        return -EINVAL;
                }

        if (streq(req.method, "CONNECT")) {
                req.form = EGRESS_FORM_CONNECT;
                r = authority_take(target, tl, 0, &req, ret_problem);
                if (r < 0)
                        return r;
        } else if (tl >= 7 && strncasecmp(target, "http://", 7) == 0) {
                req.form = EGRESS_FORM_ABSOLUTE;
                const char *a = target + 7, *end = target + tl;
                const char *path = a;
                while (path < end && *path != '/' && *path != '?' && *path != '#')
                        path++;
                if (memchr(a, '@', (size_t) (path - a))) {
                        *ret_problem = "has user information in the URL (user@host is not accepted)";
                        return -EINVAL;
                }
                r = authority_take(a, (size_t) (path - a), 80, &req, ret_problem);
                if (r < 0)
                        return r;
                req.target = path;
                req.target_len = (size_t) (end - path);
        } else if (tl > 0 && target[0] == '/') {
                req.form = EGRESS_FORM_ORIGIN;
                req.target = target;
                req.target_len = tl;
        } else {
                *ret_problem = "has a target that is neither host:port (CONNECT), http://host/path nor /path "
                               "(https:// URLs go through CONNECT)";
                return -EINVAL;
        }
        *ret = req;
        return 1;
}

static bool header_is(const char *line, size_t len, const char *name) {
        size_t n = strlen(name);
        return len > n && line[n] == ':' && strncasecmp(line, name, n) == 0;
}

int egress_rewrite_request(const char *head, const EgressRequest *req, char **ret, size_t *ret_len) {
        _cleanup_free_ char *out = NULL;
        size_t len = 0;
        FILE *f;

        if (req->form != EGRESS_FORM_ABSOLUTE)
                return -EINVAL;
        f = open_memstream(&out, &len);
        if (!f)
                return -ENOMEM;
        fprintf(f, "%s ", req->method);
        if (req->target_len == 0)
                fputc('/', f);
        else {
                if (req->target[0] != '/')
                        fputc('/', f);
                fwrite(req->target, 1, req->target_len, f);
        }
        fprintf(f, " HTTP/1.%u\r\n", req->minor);
        /* The Host the check allowed, never the client's own (a different Host on the same address
         * is another site on a shared front end). */
        bool v6 = strchr(req->host, ':');
        fprintf(f, "Host: %s%s%s", v6 ? "[" : "", req->host, v6 ? "]" : "");
        if (req->port != 80)
                fprintf(f, ":%u", (unsigned) req->port);
        fputs("\r\n", f);
        if (req->headers_start > 0)
                for (size_t pos = req->headers_start; pos < req->head_len;) {
                        const char *l = head + pos, *nl = memchr(l, '\n', req->head_len - pos);
                        size_t full = nl ? (size_t) (nl - l) + 1 : req->head_len - pos;
                        size_t content = full - (nl ? 1 : 0);
                        if (content > 0 && l[content - 1] == '\r')
                                content--;
                        pos += full;
                        if (content == 0)
                                break;
                        if (header_is(l, content, "Host") || header_is(l, content, "Connection") || header_is(l, content, "Keep-Alive") ||
                            header_is(l, content, "Proxy-Connection") || header_is(l, content, "Proxy-Authorization") ||
                            header_is(l, content, "Proxy-Authenticate") || header_is(l, content, "TE") ||
                            header_is(l, content, "Upgrade"))
                                continue;
                        fwrite(l, 1, content, f);
                        fputs("\r\n", f);
                }
        fputs("Connection: close\r\n\r\n", f);
        if (fclose(f) != 0 || !out)
                return -ENOMEM;
        *ret_len = len;
        *ret = TAKE_PTR(out);
        return 0;
}

int egress_header_value(const char *head, const EgressRequest *req, const char *name, char *buf, size_t size) {
        if (req->headers_start == 0)
                return 0;
        for (size_t pos = req->headers_start; pos < req->head_len;) {
                const char *l = head + pos, *nl = memchr(l, '\n', req->head_len - pos);
                size_t full = nl ? (size_t) (nl - l) + 1 : req->head_len - pos;
                size_t content = full - (nl ? 1 : 0);
                if (content > 0 && l[content - 1] == '\r')
                        content--;
                pos += full;
                if (content == 0)
                        break;
                if (!header_is(l, content, name))
                        continue;
                const char *v = l + strlen(name) + 1, *end = l + content;
                while (v < end && (*v == ' ' || *v == '\t'))
                        v++;
                while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
                        end--;
                if ((size_t) (end - v) >= size)
                        return -E2BIG;
                memcpy(buf, v, (size_t) (end - v));
                buf[end - v] = 0;
                return 1;
        }
        return 0;
}

int egress_service_split(const EgressRequest *req, char *name, size_t size, const char **ret_rest, size_t *ret_rest_len) {
        if (req->form != EGRESS_FORM_ORIGIN || req->target_len < 2 || req->target[0] != '/')
                return -EINVAL;
        const char *s = req->target + 1, *end = req->target + req->target_len, *p = s;
        while (p < end && *p != '/' && *p != '?')
                p++;
        size_t n = (size_t) (p - s);
        if (n == 0 || n >= size)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_'))
                        return -EINVAL;
        memcpy(name, s, n);
        name[n] = 0;
        *ret_rest = p;
        *ret_rest_len = (size_t) (end - p);
        return 0;
}

static bool port_in(const ConNetAllow *a, uint16_t port) {
        return a->port_min == 0 || (port >= a->port_min && port <= a->port_max);
}

bool egress_host_allowed(const ConNetwork *n, const char *host, uint16_t port) {
        if (!n || n->mode != CON_NETWORK_ALLOW || egress_host_is_address(host))
                return false;
        size_t hl = strlen(host);
        for (size_t i = 0; i < n->n_allow; i++) {
                const ConNetAllow *a = &n->allow[i];
                if (!a->host || !port_in(a, port))
                        continue;
                if (a->host[0] == '*' && a->host[1] == '.') {
                        const char *suffix = a->host + 1;       /* ".example.com" */
                        size_t sl = strlen(suffix);
                        if (hl > sl && strcmp(host + hl - sl, suffix) == 0)
                                return true;
                } else if (streq(a->host, host))
                        return true;
        }
        return false;
}

static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

/* IPv4-mapped IPv6 becomes IPv4. */
static void addr_normalize(int *family, const uint8_t **addr) {
        if (*family == AF_INET6 && memcmp(*addr, v4mapped, 12) == 0) {
                *family = AF_INET;
                *addr += 12;
        }
}

static bool prefix_match(const uint8_t *net, const uint8_t *addr, unsigned prefix) {
        unsigned full = prefix / 8, rest = prefix % 8;
        if (memcmp(net, addr, full) != 0)
                return false;
        if (rest == 0)
                return true;
        uint8_t mask = (uint8_t) (0xff << (8 - rest));
        return (net[full] & mask) == (addr[full] & mask);
}

bool egress_addr_allowed(const ConNetwork *n, int family, const void *addr, uint16_t port) {
        const uint8_t *a = addr;
        if (!n || n->mode != CON_NETWORK_ALLOW)
                return false;
        addr_normalize(&family, &a);
        for (size_t i = 0; i < n->n_allow; i++) {
                const ConNetAllow *e = &n->allow[i];
                if (e->host || e->family != family || !port_in(e, port))
                        continue;
                if (prefix_match(e->addr, a, e->prefix))
                        return true;
        }
        return false;
}

bool egress_addr_is_local(int family, const void *addr) {
        const uint8_t *a = addr;
        addr_normalize(&family, &a);
        if (family == AF_INET)
                return a[0] == 127 || a[0] == 0 || (a[0] == 169 && a[1] == 254) || a[0] >= 224;
        if (family == AF_INET6) {
                static const uint8_t zero[16];
                if (memcmp(a, zero, 15) == 0 && (a[15] == 0 || a[15] == 1))
                        return true;                    /* :: and ::1 */
                return (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) || a[0] == 0xff; /* fe80::/10, ff00::/8 */
        }
        return true;
}

int egress_socket_uid(int nl_fd, const struct sockaddr_storage *client, const struct sockaddr_storage *server,
                      uid_t *ret) {
        struct {
                struct nlmsghdr nlh;
                struct inet_diag_req_v2 req;
        } msg = {
                .nlh = {
                        .nlmsg_len = sizeof msg,
                        .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                        .nlmsg_flags = NLM_F_REQUEST,
                        .nlmsg_seq = 1,
                },
                .req = {
                        .sdiag_protocol = IPPROTO_TCP,
                        .idiag_states = ~0U,
                        .id.idiag_cookie = { INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE },
                },
        };
        struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
        union {
                struct nlmsghdr h;
                char buf[4096];
        } reply;

        if (client->ss_family != server->ss_family)
                return -EAFNOSUPPORT;
        msg.req.sdiag_family = (uint8_t) client->ss_family;
        if (client->ss_family == AF_INET) {
                const struct sockaddr_in *c = (const struct sockaddr_in *) client, *s = (const struct sockaddr_in *) server;
                msg.req.id.idiag_sport = c->sin_port;
                msg.req.id.idiag_dport = s->sin_port;
                memcpy(msg.req.id.idiag_src, &c->sin_addr, 4);
                memcpy(msg.req.id.idiag_dst, &s->sin_addr, 4);
        } else if (client->ss_family == AF_INET6) {
                const struct sockaddr_in6 *c = (const struct sockaddr_in6 *) client, *s = (const struct sockaddr_in6 *) server;
                msg.req.id.idiag_sport = c->sin6_port;
                msg.req.id.idiag_dport = s->sin6_port;
                memcpy(msg.req.id.idiag_src, &c->sin6_addr, 16);
                memcpy(msg.req.id.idiag_dst, &s->sin6_addr, 16);
        } else
                return -EAFNOSUPPORT;

        if (sendto(nl_fd, &msg, sizeof msg, 0, (struct sockaddr *) &kernel, sizeof kernel) < 0)
                return -errno;
        /* The kernel answers an exact lookup at once, within the sendto(). */
        for (;;) {
                ssize_t n = recv(nl_fd, &reply, sizeof reply, MSG_DONTWAIT);
                if (n < 0)
                        return errno == EAGAIN ? -ETIMEDOUT : -errno;
                for (struct nlmsghdr *h = &reply.h; NLMSG_OK(h, (size_t) n); h = NLMSG_NEXT(h, n)) {
                        if (h->nlmsg_seq != 1)
                                continue;
                        if (h->nlmsg_type == NLMSG_ERROR) {
                                const struct nlmsgerr *e = NLMSG_DATA(h);
                                if (h->nlmsg_len < NLMSG_LENGTH(sizeof *e))
                                        return -EBADMSG;
                                return e->error < 0 ? e->error : -ENOENT;
                        }
                        if (h->nlmsg_type == NLMSG_DONE)
                                return -ENOENT;
                        if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
                                return -EBADMSG;
                        const struct inet_diag_msg *d = NLMSG_DATA(h);
                        /* The kernel matched the 4-tuple; check it said the same. */
                        if (d->id.idiag_sport != msg.req.id.idiag_sport || d->id.idiag_dport != msg.req.id.idiag_dport)
                                return -ENOENT;
                        *ret = (uid_t) d->idiag_uid;
                        return 0;
                }
        }
}
