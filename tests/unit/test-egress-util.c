/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/netlink.h>
#include <linux/sock_diag.h>

#include "config.h"
#include "egress-util.h"
#include "macro.h"
#include "test-util.h"

static int parse(const char *s, EgressRequest *req, const char **problem) {
        return egress_parse_request(s, strlen(s), req, problem);
}

static void test_parse(void) {
        EgressRequest r;
        const char *p = NULL;

        g_assert_cmpint(parse("CONNECT API.GitHub.com:443 HTTP/1.1\r\nHost: x\r\n\r\nrest", &r, &p), ==, 1);
        g_assert_cmpint(r.form, ==, EGRESS_FORM_CONNECT);
        g_assert_cmpstr(r.host, ==, "api.github.com");
        g_assert_cmpint(r.port, ==, 443);
        g_assert_cmpint(r.head_len, ==, strlen("CONNECT API.GitHub.com:443 HTTP/1.1\r\nHost: x\r\n\r\n"));

        g_assert_cmpint(parse("CONNECT [2001:DB8:0::1]:8443 HTTP/1.0\n\n", &r, &p), ==, 1);
        g_assert_cmpstr(r.host, ==, "2001:db8::1");
        g_assert_cmpint(r.port, ==, 8443);
        g_assert_cmpint(r.minor, ==, 0);

        g_assert_cmpint(parse("GET http://example.com/a?b HTTP/1.1\r\n\r\n", &r, &p), ==, 1);
        g_assert_cmpint(r.form, ==, EGRESS_FORM_ABSOLUTE);
        g_assert_cmpstr(r.host, ==, "example.com");
        g_assert_cmpint(r.port, ==, 80);
        g_assert_cmpint(r.target_len, ==, 4);
        g_assert_true(strncmp(r.target, "/a?b", 4) == 0);

        g_assert_cmpint(parse("GET HTTP://example.com:8080 HTTP/1.1\r\n\r\n", &r, &p), ==, 1);
        g_assert_cmpint(r.port, ==, 8080);
        g_assert_cmpint(r.target_len, ==, 0);

        g_assert_cmpint(parse("GET /github/x HTTP/1.1\r\n\r\n", &r, &p), ==, 1);
        g_assert_cmpint(r.form, ==, EGRESS_FORM_ORIGIN);

        /* Incomplete heads ask for more. */
        g_assert_cmpint(parse("CONNECT a.test:443 HTTP/1.1\r\nHost: a", &r, &p), ==, 0);
        g_assert_cmpint(parse("CONNECT a.test:443 HTTP/1.1\r", &r, &p), ==, 0);
        g_assert_cmpint(parse("", &r, &p), ==, 0);

        /* Refusals, each with a reason. */
        static const char * const bad[] = {
                "CONNECT a.test HTTP/1.1\r\n\r\n",              /* no port */
                "CONNECT a.test:0 HTTP/1.1\r\n\r\n",
                "CONNECT a.test:65536 HTTP/1.1\r\n\r\n",
                "CONNECT a_b.test:443 HTTP/1.1\r\n\r\n",
                "CONNECT [::1:443 HTTP/1.1\r\n\r\n",
                "GET https://a.test/ HTTP/1.1\r\n\r\n",         /* https goes through CONNECT */
                "GET http://user@a.test/ HTTP/1.1\r\n\r\n",
                "GET http://a.test/ HTTP/2.0\r\n\r\n",
                "GET http://a.test/ HTTP/1.1\r\nX: a\rb\r\n\r\n", /* bare CR */
                "GET http://a.test/ HTTP/1.1\r\n folded\r\n\r\n",
                "GET  http://a.test/ HTTP/1.1\r\n\r\n",
                "\r\n\r\n",
                "G(T http://a.test/ HTTP/1.1\r\n\r\n",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                p = NULL;
                g_assert_cmpint(parse(bad[i], &r, &p), ==, -EINVAL);
                g_assert_nonnull(p);
        }
        static const char nul[] = "GET http://a.test/ HTTP/1.1\r\nX: \0\r\n\r\n";
        g_assert_cmpint(egress_parse_request(nul, sizeof nul - 1, &r, &p), ==, -EINVAL);
        g_assert_cmpint(egress_parse_request(nul, sizeof nul - 5, &r, &p), ==, -EINVAL);   /* also unfinished */

        /* Too long, too many headers. */
        _cleanup_free_ char *big = malloc(EGRESS_HEAD_MAX + 10);
        memset(big, 'a', EGRESS_HEAD_MAX + 9);
        big[EGRESS_HEAD_MAX + 9] = 0;
        g_assert_cmpint(parse(big, &r, &p), ==, -E2BIG);
        GString *many = g_string_new("GET http://a.test/ HTTP/1.1\r\n");
        for (unsigned i = 0; i < EGRESS_HEADERS_MAX + 2; i++)
                g_string_append(many, "X: y\r\n");
        g_string_append(many, "\r\n");
        g_assert_cmpint(parse(many->str, &r, &p), ==, -E2BIG);
        g_string_free(many, true);
}

static void test_rewrite(void) {
        const char *head = "GET http://a.test:8080/x?y HTTP/1.1\r\nHost: a.test:8080\r\nProxy-Connection: keep-alive\r\n"
                           "connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\nAccept: */*\r\n\r\n";
        EgressRequest r;
        _cleanup_free_ char *out = NULL;
        size_t len;

        g_assert_cmpint(parse(head, &r, NULL), ==, 1);
        g_assert_cmpint(egress_rewrite_request(head, &r, &out, &len), ==, 0);
        g_assert_cmpstr(out, ==, "GET /x?y HTTP/1.1\r\nHost: a.test:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n");

        /* A Host of its own is replaced by the one that was checked. */
        free(TAKE_PTR(out));
        const char *fronted = "GET http://a.test/ HTTP/1.1\r\nHost: evil.example\r\n\r\n";
        g_assert_cmpint(parse(fronted, &r, NULL), ==, 1);
        g_assert_cmpint(egress_rewrite_request(fronted, &r, &out, &len), ==, 0);
        g_assert_cmpstr(out, ==, "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
        g_assert_cmpint(len, ==, strlen(out));

        free(TAKE_PTR(out));
        g_assert_cmpint(parse("GET http://a.test HTTP/1.0\r\n\r\n", &r, NULL), ==, 1);
        g_assert_cmpint(egress_rewrite_request("GET http://a.test HTTP/1.0\r\n\r\n", &r, &out, &len), ==, 0);
        g_assert_cmpstr(out, ==, "GET / HTTP/1.0\r\nHost: a.test\r\nConnection: close\r\n\r\n");
}

static void test_service_parts(void) {
        const char *head = "POST /github/repos/x?y=1 HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-length:  12 \r\n"
                           "Accept: application/json\r\n\r\n";
        EgressRequest r;
        char v[16], name[16];
        const char *rest;
        size_t rest_len;

        g_assert_cmpint(parse(head, &r, NULL), ==, 1);
        g_assert_cmpint(egress_header_value(head, &r, "Content-Length", v, sizeof v), ==, 1);
        g_assert_cmpstr(v, ==, "12");
        g_assert_cmpint(egress_header_value(head, &r, "Accept", v, 4), ==, -E2BIG);
        g_assert_cmpint(egress_header_value(head, &r, "Transfer-Encoding", v, sizeof v), ==, 0);
        g_assert_cmpint(egress_service_split(&r, name, sizeof name, &rest, &rest_len), ==, 0);
        g_assert_cmpstr(name, ==, "github");
        g_assert_cmpint(rest_len, ==, strlen("/repos/x?y=1"));
        g_assert_true(strncmp(rest, "/repos/x?y=1", rest_len) == 0);

        g_assert_cmpint(parse("GET /svc HTTP/1.1\r\n\r\n", &r, NULL), ==, 1);
        g_assert_cmpint(egress_service_split(&r, name, sizeof name, &rest, &rest_len), ==, 0);
        g_assert_cmpint(rest_len, ==, 0);
        static const char * const bad[] = { "GET / HTTP/1.1\r\n\r\n", "GET //x HTTP/1.1\r\n\r\n",
                                             "GET /Git/x HTTP/1.1\r\n\r\n", "GET /a.b/x HTTP/1.1\r\n\r\n",
                                             "GET /aaaaaaaaaaaaaaaaaaaa/x HTTP/1.1\r\n\r\n" };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                g_assert_cmpint(parse(bad[i], &r, NULL), ==, 1);
                g_assert_cmpint(egress_service_split(&r, name, sizeof name, &rest, &rest_len), ==, -EINVAL);
        }
}

static void test_services_config(void) {
        ConConfig *c = NULL;
        ConErrorDetail e = {};
        const char *yaml = "egress:\n"
                           "  port: 4000\n"
                           "  services:\n"
                           "    github: {base_url: https://api.github.com, header: Authorization, prefix: \"Bearer \",\n"
                           "             secret: GITHUB_TOKEN, agents: [coder]}\n"
                           "agents:\n"
                           "  - name: coder\n"
                           "  - name: other\n"
                           "  - name: shut\n"
                           "    network: none\n";
        g_assert_cmpint(con_config_parse(yaml, strlen(yaml), "con.yaml", &c, &e), ==, 0);
        g_assert_cmpint(c->egress.port, ==, 4000);
        g_assert_cmpint(c->egress.n_services, ==, 1);
        g_assert_cmpstr(c->egress.services[0].prefix, ==, "Bearer ");
        g_assert_nonnull(con_config_egress_service(c, "coder", "github"));
        g_assert_null(con_config_egress_service(c, "other", "github"));
        g_assert_null(con_config_egress_service(c, "coder", "gitlab"));
        /* A service makes a gateway agent use the egress gateway; none stays none. */
        g_assert_true(con_config_agent_uses_egress(c, &c->agents[0]));
        g_assert_false(con_config_agent_uses_egress(c, &c->agents[1]));
        g_assert_false(con_config_agent_uses_egress(c, &c->agents[2]));
        g_assert_true(con_config_needs_egress(c));
        char url[64];
        g_assert_true(con_config_agent_proxy(c, &c->agents[0], url, sizeof url));
        g_assert_cmpstr(url, ==, "http://127.0.0.1:4000");
        con_config_free(c);

        static const char * const bad[] = {
                "egress: {services: {gh: {header: A, secret: B}}}\nagents: [{name: a}]\n",
                "egress: {services: {gh: {base_url: ftp://x, header: A, secret: B}}}\nagents: [{name: a}]\n",
                "egress: {services: {gh: {base_url: https://x/, header: A, secret: B}}}\nagents: [{name: a}]\n",
                "egress: {services: {gh: {base_url: https://u@x, header: A, secret: B}}}\nagents: [{name: a}]\n",
                "egress: {services: {gh: {base_url: https://x, header: \"A B\", secret: B}}}\nagents: [{name: a}]\n",
                "egress: {services: {gh: {base_url: https://x, header: A, secret: 1B}}}\nagents: [{name: a}]\n",
                "egress: {services: {Gh: {base_url: https://x, header: A, secret: B}}}\nagents: [{name: a}]\n",
                "egress: {services: {gh: {base_url: https://x, header: A, secret: B, x: 1}}}\nagents: [{name: a}]\n",
                "egress: {port: 0}\nagents: [{name: a}]\n",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                ConConfig *b = NULL;
                g_assert_cmpint(con_config_parse(bad[i], strlen(bad[i]), "con.yaml", &b, &e), ==, -EINVAL);
                g_assert_null(b);
                con_error_detail_done(&e);
        }
}

static void test_allow(void) {
        ConConfig *c = NULL;
        ConErrorDetail e = {};
        const char *yaml = "agents:\n"
                           "  - name: coder\n"
                           "    network: [\"api.github.com:443\", \"*.example.com\", \"10.0.0.0/8:80-90\", \"[fd00::/64]:443\"]\n";
        g_assert_cmpint(con_config_parse(yaml, strlen(yaml), "con.yaml", &c, &e), ==, 0);
        const ConNetwork *n = &c->agents[0].rt.network;

        g_assert_true(egress_host_allowed(n, "api.github.com", 443));
        g_assert_false(egress_host_allowed(n, "api.github.com", 80));
        g_assert_false(egress_host_allowed(n, "github.com", 443));
        g_assert_false(egress_host_allowed(n, "xapi.github.com", 443));
        g_assert_true(egress_host_allowed(n, "a.example.com", 1));
        g_assert_true(egress_host_allowed(n, "a.b.example.com", 65535));
        g_assert_false(egress_host_allowed(n, "example.com", 443));
        g_assert_false(egress_host_allowed(n, "aexample.com", 443));
        g_assert_false(egress_host_allowed(n, "10.1.2.3", 80));         /* an address is no name */

        uint8_t a4[4], a6[16];
        inet_pton(AF_INET, "10.1.2.3", a4);
        g_assert_true(egress_addr_allowed(n, AF_INET, a4, 85));
        g_assert_false(egress_addr_allowed(n, AF_INET, a4, 91));
        inet_pton(AF_INET6, "::ffff:10.1.2.3", a6);                     /* mapped: matched as IPv4 */
        g_assert_true(egress_addr_allowed(n, AF_INET6, a6, 80));
        inet_pton(AF_INET6, "fd00::5", a6);
        g_assert_true(egress_addr_allowed(n, AF_INET6, a6, 443));
        inet_pton(AF_INET6, "fd00:0:0:1::5", a6);
        g_assert_false(egress_addr_allowed(n, AF_INET6, a6, 443));
        inet_pton(AF_INET, "11.1.2.3", a4);
        g_assert_false(egress_addr_allowed(n, AF_INET, a4, 80));

        static const char * const local[] = { "127.0.0.1", "0.0.0.0", "169.254.1.1", "224.0.0.1", "::1", "::",
                                              "fe80::1", "ff02::1", "::ffff:127.0.0.1" };
        for (size_t i = 0; i < ELEMENTSOF(local); i++) {
                int fam = strchr(local[i], ':') ? AF_INET6 : AF_INET;
                g_assert_cmpint(inet_pton(fam, local[i], a6), ==, 1);
                g_assert_true(egress_addr_is_local(fam, a6));
        }
        inet_pton(AF_INET, "10.77.0.2", a4);
        g_assert_false(egress_addr_is_local(AF_INET, a4));
        con_config_free(c);
}

/* The kernel's word: a connection of ours on loopback is ours. */
static void test_socket_uid(void) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        struct sockaddr_storage client, server;
        socklen_t l = sizeof sa, cl = sizeof client, sl = sizeof server;
        uid_t uid = (uid_t) -1;

        int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(ls, >=, 0);
        g_assert_cmpint(bind(ls, (struct sockaddr *) &sa, sizeof sa), ==, 0);
        g_assert_cmpint(listen(ls, 4), ==, 0);
        g_assert_cmpint(getsockname(ls, (struct sockaddr *) &sa, &l), ==, 0);
        int cs = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(connect(cs, (struct sockaddr *) &sa, sizeof sa), ==, 0);
        int as = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        g_assert_cmpint(as, >=, 0);
        g_assert_cmpint(getpeername(as, (struct sockaddr *) &client, &cl), ==, 0);
        g_assert_cmpint(getsockname(as, (struct sockaddr *) &server, &sl), ==, 0);
        int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        g_assert_cmpint(nl, >=, 0);
        g_assert_cmpint(egress_socket_uid(nl, &client, &server, &uid), ==, 0);
        g_assert_cmpint(uid, ==, geteuid());
        /* A 4-tuple nobody has: no answer. */
        ((struct sockaddr_in *) &client)->sin_port = htons(ntohs(((struct sockaddr_in *) &client)->sin_port) ^ 1);
        g_assert_cmpint(egress_socket_uid(nl, &client, &server, &uid), ==, -ENOENT);
        close(nl);
        close(as);
        close(cs);
        close(ls);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/egress/parse", test_parse);
        g_test_add_func("/egress/rewrite", test_rewrite);
        g_test_add_func("/egress/allow", test_allow);
        g_test_add_func("/egress/service-parts", test_service_parts);
        g_test_add_func("/egress/services-config", test_services_config);
        g_test_add_func("/egress/socket-uid", test_socket_uid);
        return con_test_run();
}
