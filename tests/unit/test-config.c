/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "cron.h"
#include "macro.h"
#include "names.h"
#include "strv.h"
#include "test-util.h"

#define A0 "agents:\n  - name: a\n"

static ConConfig *parse_ok(const char *yaml) {
        ConConfig *c = NULL;
        ConErrorDetail e = {};
        int r = con_config_parse(yaml, strlen(yaml), "con.yaml", &c, &e);
        if (r < 0) {
                _cleanup_free_ char *s = con_error_detail_format(&e);
                g_test_message("unexpected error: %s", s);
        }
        g_assert_cmpint(r, ==, 0);
        g_assert_nonnull(c);
        g_assert_null(e.message);
        return c;
}

/* The exact line a user would see for a refused file. */
static char *parse_error_len(const char *yaml, size_t len) {
        ConConfig *c = NULL;
        ConErrorDetail e = {};
        int r = con_config_parse(yaml, len, "con.yaml", &c, &e);
        g_assert_cmpint(r, ==, -EINVAL);
        g_assert_null(c);
        g_assert_nonnull(e.message);
        char *s = con_error_detail_format(&e);
        g_assert_nonnull(s);
        con_error_detail_done(&e);
        g_assert_null(e.message);
        return s;
}

static void assert_error(const char *yaml, const char *expected) {
        _cleanup_free_ char *s = parse_error_len(yaml, strlen(yaml));
        if (!streq(s, expected))
                g_test_message("input:\n%s", yaml);
        g_assert_cmpstr(s, ==, expected);
}

static void test_errors_syntax(void) {
        assert_error("", "con.yaml: the file is empty (or only comments); it needs at least an agents: list");
        assert_error("# nothing\n\n",
                     "con.yaml: the file is empty (or only comments); it needs at least an agents: list");
        assert_error("foo: [\n",
                     "con.yaml:2:1: did not find expected node content "
                     "(while parsing a flow node that starts at line 2, column 1)");
        assert_error("a: b\n c: d\n", "con.yaml:2:3: mapping values are not allowed in this context");
        assert_error("agents:\n  - name: \xff\n", "con.yaml:2:11: invalid leading UTF-8 octet");
        assert_error(A0 "---\nfoo: 1\n", "con.yaml:3:1: only one YAML document is allowed; remove the second '---'");
        assert_error("- a\n",
                     "con.yaml:1:1: expected a mapping with system:, base:, contracts: and agents: at the top "
                     "level, got a list");
        assert_error("hello\n",
                     "con.yaml:1:1: expected a mapping with system:, base:, contracts: and agents: at the top "
                     "level, got a string");
        assert_error("? [a]\n: b\n", "con.yaml:1:3: keys must be plain strings, got a list");
        assert_error("agents:\n  - name: a\n    roles: [x]\n    roles: [y]\n",
                     "con.yaml:4:5: agents[0].roles: duplicate key; it was already given at line 3");
        assert_error("system:\n  name: x\n  name: y\n" A0,
                     "con.yaml:3:3: system.name: duplicate key; it was already given at line 2");
        assert_error("agents:\n  - name: a\nagents:\n  - name: b\n",
                     "con.yaml:3:1: agents: duplicate key; it was already given at line 1");

        /* A NUL byte inside the text (not only at its end). */
        static const char nul[] = "agents:\n  - name: a\0\n";
        _cleanup_free_ char *s = parse_error_len(nul, sizeof(nul) - 1);
        g_assert_cmpstr(s, ==, "con.yaml:2:12: control characters are not allowed");
        assert_error("agents:\n  - name: \"a\\0b\"\n", "con.yaml:2:11: agents[0].name: the value contains a NUL byte");
        assert_error("agents:\n  - name: a\n    \"tier\\0x\": officer\n",
                     "con.yaml:3:5: agents[0].tier\\x00x: the key contains a NUL byte");
}

static void test_generic_key_provider(void) {
        ConConfig *c = parse_ok(A0);
        g_assert_null(c->models.generic_key_provider);        /* the gateway's default: openrouter */
        con_config_free(c);
        c = parse_ok("models:\n  generic_key_provider: anthropic\n" A0);
        g_assert_cmpstr(c->models.generic_key_provider, ==, "anthropic");
        con_config_free(c);
        assert_error("models:\n  generic_key_provider: claude_code\n" A0,
                     "con.yaml:2:25: models.generic_key_provider: 'claude_code' is not allowed; use openrouter, "
                     "anthropic, openai, ollama or compatible (the provider that CON_API_KEY is for)");
        _cleanup_free_ char *e = parse_error_len("models:\n  generic_key_provider: acme\n" A0,
                                                 strlen("models:\n  generic_key_provider: acme\n" A0));
        g_assert_nonnull(strstr(e, "models.generic_key_provider: 'acme' is not allowed"));
}

/* network: none, gateway (the default) or an allow-list; resolved agent, base.<tier>, base. */
static void test_network(void) {
        ConConfig *c = parse_ok(A0);
        g_assert_cmpint(c->agents[0].rt.network.mode, ==, CON_NETWORK_GATEWAY);
        con_config_free(c);

        c = parse_ok("base:\n  network: none\n  worker:\n    network: [\"10.0.0.0/8:443\", \"*.example.com\"]\n"
                     "agents:\n  - name: a\n  - name: b\n    tier: worker\n"
                     "  - name: c\n    tier: worker\n    network: gateway\n"
                     "  - name: d\n    network: [\"[fd00::/64]:80-90\", 192.168.1.7]\n");
        g_assert_cmpint(c->agents[0].rt.network.mode, ==, CON_NETWORK_NONE);
        const ConNetwork *n = &c->agents[1].rt.network;
        g_assert_cmpint(n->mode, ==, CON_NETWORK_ALLOW);
        g_assert_cmpuint(n->n_allow, ==, 2);
        g_assert_cmpuint(n->allow[0].prefix, ==, 8);
        g_assert_cmpuint(n->allow[0].port_min, ==, 443);
        g_assert_cmpstr(n->allow[1].host, ==, "*.example.com");
        g_assert_cmpint(c->agents[2].rt.network.mode, ==, CON_NETWORK_GATEWAY);
        n = &c->agents[3].rt.network;
        g_assert_cmpuint(n->n_allow, ==, 2);
        _cleanup_free_ char *f0 = con_net_allow_format(&n->allow[0]), *f1 = con_net_allow_format(&n->allow[1]);
        g_assert_cmpstr(f0, ==, "[fd00::/64]:80-90");
        g_assert_cmpstr(f1, ==, "192.168.1.7");
        con_config_free(c);

        assert_error("agents:\n  - name: a\n    network: open\n",
                     "con.yaml:3:14: agents[0].network: 'open' is not allowed; use none, gateway, or a list of allowed "
                     "hosts, addresses and CIDRs (e.g. [10.0.0.0/8:443, '*.example.com:443'])");
        assert_error("agents:\n  - name: a\n    network: []\n",
                     "con.yaml:3:14: agents[0].network: the list is empty; to allow nothing write none");
        assert_error("agents:\n  - name: a\n    network: [10.1.2.3/8]\n",
                     "con.yaml:3:15: agents[0].network[0]: '10.1.2.3/8' has bits set after the prefix length; write "
                     "the network address (e.g. 10.0.0.0/8, not 10.1.2.3/8)");
        assert_error("agents:\n  - name: a\n    network: [\"10.0.0.0/8:0\"]\n",
                     "con.yaml:3:15: agents[0].network[0]: '10.0.0.0/8:0' has an invalid port; use :PORT or "
                     ":PORT-PORT with ports 1 to 65535");
        assert_error("base:\n  officer:\n    network: {a: b}\n" A0,
                     "con.yaml:3:14: base.officer.network: expected none, gateway or a list of allowed destinations, "
                     "got a mapping");
}

/* Every entry form and every refusal of the allow-list parser. */
static void test_network_entries(void) {
        static const struct { const char *in, *out; } ok[] = {
                { "api.example.com", "api.example.com" },
                { "api.example.com:443", "api.example.com:443" },
                { "*.example.com:8000-8100", "*.example.com:8000-8100" },
                { "10.0.0.0/8", "10.0.0.0/8" },
                { "10.0.0.1/32:53", "10.0.0.1:53" },
                { "0.0.0.0/0:443", "0.0.0.0/0:443" },
                { "fd00::/8", "fd00::/8" },
                { "::1", "::1" },
                { "[::1]:8080", "[::1]:8080" },
                { "[2001:db8::/32]:443", "[2001:db8::/32]:443" },
        };
        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                ConNetAllow a = {};
                const char *problem = NULL;
                int r = con_net_allow_parse(ok[i].in, &a, &problem);
                if (r < 0)
                        g_test_message("%s: %s", ok[i].in, problem);
                g_assert_cmpint(r, ==, 0);
                _cleanup_free_ char *f = con_net_allow_format(&a);
                g_assert_cmpstr(f, ==, ok[i].out);
                con_net_allow_done(&a);
        }
        static const struct { const char *in, *problem; } bad[] = {
                { "", "is empty; give a host name, an address or a CIDR" },
                { "Example.com", "is not allowed; write host names in lower case" },
                { "localhost", "is not allowed; give a fully qualified host name with at least one dot (e.g. api.example.com)" },
                { "a..b", "is not a valid host name; each label between dots needs 1 to 63 letters, digits or '-', "
                          "not starting or ending with '-'" },
                { "-a.b", "is not a valid host name; a label must not start with '-'" },
                { "a_b.c", "is not a valid host name, address or CIDR; use e.g. api.example.com, *.example.com, "
                           "10.0.0.0/8 or [fd00::/64], each with an optional :PORT or :PORT-PORT" },
                { "*example.com", "is not allowed; a wildcard is only allowed as a whole first label, e.g. *.example.com" },
                { "a.*.com", "is not a valid host name, address or CIDR; use e.g. api.example.com, *.example.com, "
                             "10.0.0.0/8 or [fd00::/64], each with an optional :PORT or :PORT-PORT" },
                { "10.0.0.0/33", "has an invalid prefix length; use /0 to /32" },
                { "fd00::/129", "has an invalid prefix length; use /0 to /128" },
                { "10.0.0.0/8:70000", "has an invalid port; use :PORT or :PORT-PORT with ports 1 to 65535" },
                { "10.0.0.0/8:90-80", "has a port range that ends before it starts" },
                { "10.0.0.0/8:", "has an invalid port; use :PORT or :PORT-PORT with ports 1 to 65535" },
                { "[fd00::1", "is not valid; write an IPv6 address or CIDR in brackets, optionally followed by :PORT, "
                              "e.g. [fd00::/64]:443" },
                { "[a.example.com]:443", "is not a valid address or CIDR; use e.g. 10.0.0.0/8 or [fd00::/64]" },
                { "example.com/8", "is not a valid address or CIDR; use e.g. 10.0.0.0/8 or [fd00::/64]" },
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                ConNetAllow a = {};
                const char *problem = NULL;
                g_assert_cmpint(con_net_allow_parse(bad[i].in, &a, &problem), ==, -EINVAL);
                g_assert_cmpstr(problem, ==, bad[i].problem);
                g_assert_null(a.host);
        }
}

static void test_mesh(void) {
        _cleanup_(con_config_freep) ConConfig *c = parse_ok(A0);
        g_assert_false(c->mesh.enabled);
        g_assert_null(c->mesh.host);
        g_assert_null(c->mesh.servers);
        g_assert_null(c->mesh.key);
        con_config_free(c);

        /* TLS by default: the CA, certificate and key in /etc/con/mesh. */
        c = parse_ok("mesh:\n  host: host-a\n  servers: [tls://10.77.0.1:4222, \"tls://[fd00::1]:4222\"]\n"
                     "  credentials: /etc/con/mesh.creds\n  retention: 2d\n  replicas: 3\n  sent_retention: 90s\n"
                     "  sent_max: 50\n  stream_max_bytes: 512MiB\n  stream_max_per_host: 500\n  result_wait: 5s\n" A0);
        g_assert_true(c->mesh.enabled);
        g_assert_cmpstr(c->mesh.host, ==, "host-a");
        g_assert_cmpuint(strv_length(c->mesh.servers), ==, 2);
        g_assert_cmpstr(c->mesh.servers[1], ==, "tls://[fd00::1]:4222");
        g_assert_cmpstr(c->mesh.credentials, ==, "/etc/con/mesh.creds");
        g_assert_cmpuint(c->mesh.retention_usec, ==, 2ULL * 24 * 3600 * 1000000);
        g_assert_cmpuint(c->mesh.replicas, ==, 3);
        g_assert_cmpuint(c->mesh.sent_retention_usec, ==, 90ULL * 1000000);
        g_assert_cmpuint(c->mesh.sent_max, ==, 50);
        g_assert_cmpuint(c->mesh.stream_max_bytes, ==, 512ULL << 20);
        g_assert_cmpuint(c->mesh.stream_max_per_host, ==, 500);
        g_assert_cmpuint(c->mesh.result_wait_usec, ==, 5ULL * 1000000);
        g_assert_false(c->mesh.insecure);
        g_assert_cmpstr(c->mesh.ca, ==, CON_MESH_TLS_DIR "/ca.crt");
        g_assert_cmpstr(c->mesh.cert, ==, CON_MESH_TLS_DIR "/host.crt");
        g_assert_cmpstr(c->mesh.key, ==, CON_MESH_TLS_DIR "/host.key");
        con_config_free(c);

        c = parse_ok("mesh:\n  host: a\n  servers: [tls://x:1]\n  ca: /srv/ca.pem\n  cert: /srv/a.pem\n"
                     "  key: /srv/a.key\n" A0);
        g_assert_cmpstr(c->mesh.ca, ==, "/srv/ca.pem");
        g_assert_cmpstr(c->mesh.cert, ==, "/srv/a.pem");
        g_assert_cmpstr(c->mesh.key, ==, "/srv/a.key");
        con_config_free(c);

        /* Plaintext only with insecure: true; then no certificate unless one is named. */
        c = parse_ok("mesh: {host: b, servers: [nats://127.0.0.1:4222], insecure: true}\n" A0);
        g_assert_true(c->mesh.enabled);
        g_assert_true(c->mesh.insecure);
        g_assert_null(c->mesh.credentials);
        g_assert_null(c->mesh.ca);
        g_assert_null(c->mesh.cert);
        g_assert_null(c->mesh.key);
        g_assert_cmpuint(c->mesh.retention_usec, ==, CON_MESH_RETENTION_DEFAULT_USEC);
        g_assert_cmpuint(c->mesh.replicas, ==, 1);
        g_assert_cmpuint(c->mesh.sent_retention_usec, ==, CON_MESH_SENT_RETENTION_DEFAULT_USEC);
        g_assert_cmpuint(c->mesh.sent_max, ==, CON_MESH_SENT_MAX_DEFAULT);
        g_assert_cmpuint(c->mesh.stream_max_bytes, ==, CON_MESH_STREAM_MAX_BYTES_DEFAULT);
        g_assert_cmpuint(c->mesh.stream_max_bytes, ==, 128ULL << 20);
        g_assert_cmpuint(c->mesh.stream_max_per_host, ==, CON_MESH_STREAM_MAX_PER_HOST_DEFAULT);
        g_assert_cmpuint(c->mesh.stream_max_per_host, ==, 10000);
        g_assert_cmpuint(c->mesh.result_wait_usec, ==, CON_MESH_RESULT_WAIT_DEFAULT_USEC);
        con_config_free(c);
        c = parse_ok("mesh: {host: b, servers: [nats://x:1, tls://y:2], insecure: true, ca: /c.pem}\n" A0);
        g_assert_cmpstr(c->mesh.ca, ==, "/c.pem");
        g_assert_cmpstr(c->mesh.key, ==, CON_MESH_TLS_DIR "/host.key");
        con_config_free(c);
        c = NULL;

        assert_error("mesh:\n" A0, "con.yaml:1:6: mesh: expected a mapping with host: and servers:, got an empty value");
        assert_error("mesh:\n  servers: [tls://a:1]\n" A0,
                     "con.yaml:2:3: mesh.host: missing; this key is required (this host's name in the mesh, e.g. host: host-a)");
        assert_error("mesh:\n  host: Host_A\n  servers: [tls://a:1]\n" A0,
                     "con.yaml:2:9: mesh.host: 'Host_A' is not a valid host name; use 1 to 63 characters from a-z, "
                     "0-9 and -, starting with a letter, not ending with -");
        assert_error("mesh:\n  host: a\n" A0,
                     "con.yaml:2:3: mesh: servers: missing; at least one NATS server is needed, e.g. servers: "
                     "[tls://10.0.0.1:4222]");
        /* nats:// without insecure: true, wherever it is in the list, before or after the key. */
        assert_error("mesh:\n  host: a\n  servers: [nats://10.0.0.1:4222]\n" A0,
                     "con.yaml:3:13: mesh.servers[0]: 'nats://10.0.0.1:4222' is plaintext; the mesh uses TLS: write "
                     "tls://10.0.0.1:4222 (with this host's certificate, which con bootstrap makes), or set mesh.insecure: "
                     "true to send tasks unencrypted and unauthenticated");
        assert_error("mesh:\n  host: a\n  insecure: false\n  servers:\n    - tls://x:1\n    - nats://y:2\n" A0,
                     "con.yaml:6:7: mesh.servers[1]: 'nats://y:2' is plaintext; the mesh uses TLS: write "
                     "tls://y:2 (with this host's certificate, which con bootstrap makes), or set mesh.insecure: "
                     "true to send tasks unencrypted and unauthenticated");
        assert_error("mesh:\n  host: a\n  servers: [tls://x:1]\n  insecure: yes please\n" A0,
                     "con.yaml:4:13: mesh.insecure: 'yes please' is not allowed; use true or false");
        assert_error("mesh:\n  host: a\n  servers: [tls://x:1]\n  key: host.key\n" A0,
                     "con.yaml:4:8: mesh.key: 'host.key' is not an absolute path; write the full path of "
                     "the file, e.g. /etc/con/mesh.creds");
        assert_error("mesh:\n  host: a\n  servers: [http://x:1]\n" A0,
                     "con.yaml:3:13: mesh.servers[0]: 'http://x:1' is not a NATS server URL; use nats://HOST:PORT "
                     "or tls://HOST:PORT");
        assert_error("mesh:\n  host: a\n  servers: [tls://x:1, tls://x]\n" A0,
                     "con.yaml:3:24: mesh.servers[1]: 'tls://x' has no port; use tls://HOST:PORT, e.g. "
                     "tls://10.0.0.1:4222");
        assert_error("mesh:\n  host: a\n  servers: [nats://x:99999]\n  insecure: true\n" A0,
                     "con.yaml:3:13: mesh.servers[0]: 'nats://x:99999' has no valid port; use tls://HOST:PORT with "
                     "a port from 1 to 65535");
        assert_error("mesh:\n  host: a\n  servers: [\"tls://u:p@x:1\"]\n" A0,
                     "con.yaml:3:13: mesh.servers[0]: 'tls://u:p@x:1' is not a NATS server URL; use "
                     "nats://HOST:PORT or tls://HOST:PORT (no user, password or path: credentials go in "
                     "mesh.credentials)");
        assert_error("mesh:\n  host: a\n  servers: [tls://x:1]\n  credentials: mesh.creds\n" A0,
                     "con.yaml:4:16: mesh.credentials: 'mesh.creds' is not an absolute path; write the full path of "
                     "the file, e.g. /etc/con/mesh.creds");
        assert_error("mesh:\n  host: a\n  servers: [tls://x:1]\n  port: 4222\n" A0,
                     "con.yaml:4:3: mesh.port: unknown key; allowed keys are host, servers, credentials, retention, "
                     "replicas, ca, cert, key, insecure, sent_retention, sent_max, stream_max_bytes, "
                     "stream_max_per_host and result_wait");
        assert_error("mesh:\n  host: a\n  servers: [tls://x:1]\n  result_wait: 0\n" A0,
                     "con.yaml:4:16: mesh.result_wait: '0' is not allowed; the duration must be longer than 0");
        assert_error("mesh:\n  host: a\n  servers: [tls://x:1]\n  sent_max: 0\n" A0,
                     "con.yaml:4:13: mesh.sent_max: '0' is not allowed; use a whole number from 1 to 1000000");
        assert_error("mesh:\n  host: a\n  servers: [tls://x:1]\n  stream_max_per_host: 0\n" A0,
                     "con.yaml:4:24: mesh.stream_max_per_host: '0' is not allowed; use a whole number from 1 to 10000000");
        /* At least one task of the largest size fits (MESH_STREAM_MSG_MAX, 2 MiB and its headers). */
        assert_error("mesh:\n  host: a\n  servers: [tls://x:1]\n  stream_max_bytes: 1MiB\n" A0,
                     "con.yaml:4:21: mesh.stream_max_bytes: 1048576 bytes is too small; at least 4194304 (4MiB: one "
                     "task of the largest size fits)");
        assert_error("mesh:\n  host: a\n  servers: [tls://x:1]\n  replicas: 7\n" A0,
                     "con.yaml:4:13: mesh.replicas: '7' is not allowed; use a whole number from 1 to 5");
        /* JetStream's MaxAge is int64 nanoseconds: a retention beyond ten years is refused, not wrapped. */
        assert_error("mesh:\n  host: a\n  servers: [tls://x:1]\n  retention: 300000d\n" A0,
                     "con.yaml:4:14: mesh.retention: '300000d' is too long; at most 3650 days");
        c = parse_ok("mesh: {host: b, servers: [tls://x:1], retention: 3650d}\n" A0);
        g_assert_cmpuint(c->mesh.retention_usec, ==, CON_MESH_RETENTION_MAX_USEC);
        con_config_free(c);
        c = NULL;
}

static void test_dashboard(void) {
        ConConfig *c = parse_ok(A0);
        g_assert_false(c->dashboard.enabled);
        g_assert_cmpstr(c->dashboard.bind, ==, "127.0.0.1");
        g_assert_cmpuint(c->dashboard.port, ==, 8080);
        con_config_free(c);
        c = parse_ok("dashboard:\n  enabled: true\n  bind: \"::1\"\n  port: 9090\n" A0);
        g_assert_true(c->dashboard.enabled);
        g_assert_cmpstr(c->dashboard.bind, ==, "::1");
        g_assert_cmpuint(c->dashboard.port, ==, 9090);
        con_config_free(c);
        c = parse_ok("dashboard: {enabled: false, bind: 0.0.0.0}\n" A0);
        g_assert_cmpstr(c->dashboard.bind, ==, "0.0.0.0");
        con_config_free(c);
        assert_error("dashboard:\n  port: 0\n" A0,
                     "con.yaml:2:9: dashboard.port: '0' is not allowed; use a whole number from 1 to 65535");
        assert_error("dashboard:\n  bind: localhost\n" A0,
                     "con.yaml:2:9: dashboard.bind: 'localhost' is not allowed; use an IPv4 or IPv6 address "
                     "(127.0.0.1, ::1, 0.0.0.0, ...)");
        assert_error("dashboard:\n  enabled: yes please\n" A0,
                     "con.yaml:2:12: dashboard.enabled: 'yes please' is not allowed; use true or false");
        assert_error("dashboard:\n  listen: 1\n" A0,
                     "con.yaml:2:3: dashboard.listen: unknown key; allowed keys are enabled, bind and port");
}

static void test_errors_top(void) {
        assert_error("a: 1\n" A0,
                     "con.yaml:1:1: a: unknown key; allowed keys are system, base, defaults (deprecated), "
                     "contracts, models, dashboard, egress, mesh, policy and agents");
        assert_error("system: {}\n", "con.yaml:1:1: agents: missing; at least one agent is required");
        assert_error("agents: []\n", "con.yaml:1:9: agents: the list is empty; at least one agent is required");
        assert_error("agents:\n", "con.yaml:1:8: agents: the list is empty; at least one agent is required");
        assert_error("agents: {name: a}\n",
                     "con.yaml:1:9: agents: expected a list of agents (- name: ...), got a mapping");
        assert_error("system: x\n" A0,
                     "con.yaml:1:9: system: expected a mapping of name, submitters_group, task_max_size, "
                     "max_queued_per_sender, max_delegation_hops, result_retention, result_max, agent_uid_min and "
                     "agent_uid_max, got a string");
        assert_error("system:\n  nmae: x\n" A0,
                     "con.yaml:2:3: system.nmae: unknown key; allowed keys are name, submitters_group, "
                     "task_max_size, max_queued_per_sender, max_delegation_hops, result_retention, result_max, "
                     "agent_uid_min and agent_uid_max");
        assert_error("system:\n  name: [x]\n" A0, "con.yaml:2:9: system.name: expected a string, got a list");
        assert_error("system:\n  name: \"\"\n" A0,
                     "con.yaml:2:9: system.name: '' is not allowed; use 1 to 64 printable characters");
        assert_error("system:\n  submitters_group: Humans\n" A0,
                     "con.yaml:2:21: system.submitters_group: 'Humans' is not a valid group name; use 1 to 31 "
                     "characters from a-z, 0-9, '_' and '-', starting with a letter or '_' (con bootstrap creates "
                     "the group with systemd-sysusers, which refuses longer names)");
        /* The limit is the one con bootstrap can create (systemd-sysusers: 31), not useradd's 32. */
        assert_error("system:\n  submitters_group: abcdefghijklmnopqrstuvwxyz012345\n" A0,
                     "con.yaml:2:21: system.submitters_group: 'abcdefghijklmnopqrstuvwxyz012345' is not a valid "
                     "group name; use 1 to 31 characters from a-z, 0-9, '_' and '-', starting with a letter or '_' "
                     "(con bootstrap creates the group with systemd-sysusers, which refuses longer names)");
        {
                _cleanup_(con_config_freep) ConConfig *c31 =
                        parse_ok("system:\n  submitters_group: abcdefghijklmnopqrstuvwxyz01234\n" A0);
                g_assert_cmpstr(c31->submitters_group, ==, "abcdefghijklmnopqrstuvwxyz01234");
        }
        assert_error(A0 "policy:\n  grants:\n    - {who: 'group:abcdefghijklmnopqrstuvwxyz012345', may: [task], to: [a]}\n",
                     "con.yaml:5:13: policy.grants[0].who: 'group:abcdefghijklmnopqrstuvwxyz012345' is not a valid "
                     "principal; use an agent name, group:NAME, user:NAME (a Linux group or user name: 1 to 31 "
                     "characters from a-z, 0-9, '_' and '-', starting with a letter or '_'), root, or AGENT@HOST or "
                     "user:NAME@HOST for a principal of another host of the mesh");
        assert_error("system:\n  task_max_size: 2G\n" A0,
                     "con.yaml:2:18: system.task_max_size: '2G' is not allowed; use a size from 1 byte to 1024 MiB");
        assert_error("system:\n  task_max_size: 1MB\n" A0,
                     "con.yaml:2:18: system.task_max_size: '1MB' is not a valid size; use bytes (1048576) or a "
                     "number with a unit: 512K, 1M, 1MiB, 1G (powers of 1024)");
        assert_error("system:\n  task_max_size: 0\n" A0,
                     "con.yaml:2:18: system.task_max_size: '0' is not allowed; use a size from 1 byte to 1024 MiB");
        assert_error("system:\n  max_queued_per_sender: 0\n" A0,
                     "con.yaml:2:26: system.max_queued_per_sender: '0' is not allowed; use a whole number from 1 "
                     "to 100000");
        assert_error("system:\n  max_queued_per_sender: 100001\n" A0,
                     "con.yaml:2:26: system.max_queued_per_sender: '100001' is not allowed; use a whole number from "
                     "1 to 100000");
        assert_error("system:\n  max_delegation_hops: 33\n" A0,
                     "con.yaml:2:24: system.max_delegation_hops: '33' is not allowed; use a whole number from 0 "
                     "to 32");
        assert_error("system:\n  result_retention: 0\n" A0,
                     "con.yaml:2:21: system.result_retention: '0' is not allowed; the duration must be longer than 0");
        assert_error("system:\n  result_retention: 30 days\n" A0,
                     "con.yaml:2:21: system.result_retention: '30 days' is not a valid duration; use seconds (90) "
                     "or a number with a unit: 250ms, 90s, 5m, 1h, 2d, 1h30m");
        assert_error("system:\n  result_max: 0\n" A0,
                     "con.yaml:2:15: system.result_max: '0' is not allowed; use a whole number from 1 to 1000000");
        assert_error("system:\n  result_max: 1000001\n" A0,
                     "con.yaml:2:15: system.result_max: '1000001' is not allowed; use a whole number from 1 to "
                     "1000000");
        assert_error("system:\n  agent_uid_min: 999\n" A0,
                     "con.yaml:2:18: system.agent_uid_min: '999' is not allowed; use a whole number from 1000 "
                     "to 2147483646");
        assert_error("system:\n  agent_uid_min: 61000\n  agent_uid_max: 60000\n" A0,
                     "con.yaml:2:3: system.agent_uid_min: the agent UID range 61000..60000 is empty; "
                     "agent_uid_min must not exceed agent_uid_max");
        assert_error("system:\n  agent_uid_min: 65000\n  agent_uid_max: 66000\n" A0,
                     "con.yaml:2:3: system.agent_uid_min: the agent UID range 65000..66000 contains 65534 "
                     "(nobody) or 65535; use a range below 65534 or above 65535");
}

static void test_errors_base(void) {
        assert_error("base:\n  worker:\n    runner: x\n" A0,
                     "con.yaml:3:13: base.worker.runner: 'x' is not allowed; use picoclaw, exec, claude or codex");
        assert_error("base:\n  provider: groq\n" A0,
                     "con.yaml:2:13: base.provider: 'groq' is not allowed; use openrouter, anthropic, openai, "
                     "claude_code, ollama or compatible");
        assert_error("base:\n  boss:\n    model: x\n" A0,
                     "con.yaml:2:3: base.boss: unknown key; allowed keys are runner, provider, model, api_key_env, "
                     "base_url, context_window, network, officer, operator and worker");
        assert_error("base:\n  officer:\n    officer: {}\n" A0,
                     "con.yaml:3:5: base.officer.officer: unknown key; allowed keys are runner, provider, model, "
                     "api_key_env, base_url, context_window and network");
        assert_error("base:\n  officer: x\n" A0,
                     "con.yaml:2:12: base.officer: expected a mapping of runner, provider, model, api_key_env, "
                     "base_url, context_window, network, got a string");
        assert_error("base:\n  model: \"two words\"\n" A0,
                     "con.yaml:2:10: base.model: 'two words' is not a valid model name; it must not be empty or "
                     "contain spaces");
        assert_error("defaults: [officer]\n" A0,
                     "con.yaml:1:11: defaults: expected a mapping of officer, operator, worker, got a list");
        assert_error("defaults:\n  runner: x\n" A0,
                     "con.yaml:2:3: defaults.runner: unknown key; allowed keys are officer, operator and worker");
        assert_error("defaults:\n  officer:\n    provider: x\n" A0,
                     "con.yaml:3:15: defaults.officer.provider: 'x' is not allowed; use openrouter, anthropic, "
                     "openai, claude_code, ollama or compatible");
}

static void test_errors_contracts(void) {
        assert_error("contracts:\n  disk_min_free_pct: 5\n" A0,
                     "con.yaml:2:3: contracts.disk_min_free_pct: unknown key; allowed keys are system");
        assert_error("contracts:\n  system:\n    healthcheck_intervl: 1\n" A0,
                     "con.yaml:3:5: contracts.system.healthcheck_intervl: unknown key; allowed keys are "
                     "disk_min_free_pct, mem_min_free_pct, max_load_factor, max_session_min and healthcheck_interval");
        assert_error("contracts:\n  system:\n    max_load_factor: -1\n" A0,
                     "con.yaml:3:22: contracts.system.max_load_factor: '-1' is not allowed; use a number greater "
                     "than 0 and at most 1000");
        assert_error("contracts:\n  system:\n    max_load_factor: nan\n" A0,
                     "con.yaml:3:22: contracts.system.max_load_factor: 'nan' is not allowed; use a number greater "
                     "than 0 and at most 1000");
        assert_error("contracts:\n  system:\n    disk_min_free_pct: 101\n" A0,
                     "con.yaml:3:24: contracts.system.disk_min_free_pct: '101' is not allowed; use a whole number "
                     "from 0 to 100");
        assert_error("contracts:\n  system:\n    mem_min_free_pct: 1.5\n" A0,
                     "con.yaml:3:23: contracts.system.mem_min_free_pct: '1.5' is not allowed; use a whole number "
                     "from 0 to 100");
        assert_error("contracts:\n  system:\n    max_session_min: [1]\n" A0,
                     "con.yaml:3:22: contracts.system.max_session_min: expected a whole number, got a list");
        assert_error("contracts:\n  system:\n    healthcheck_interval: 1 minute\n" A0,
                     "con.yaml:3:27: contracts.system.healthcheck_interval: '1 minute' is not a valid duration; "
                     "use seconds (90) or a number with a unit: 250ms, 90s, 5m, 1h, 2d, 1h30m");
        assert_error("contracts:\n  system:\n    healthcheck_interval: 99999999999999999d\n" A0,
                     "con.yaml:3:27: contracts.system.healthcheck_interval: '99999999999999999d' is too long a "
                     "duration");
}

#define AG "agents:\n  - name: a\n"

static void test_errors_agent(void) {
        assert_error("agents:\n  - x\n",
                     "con.yaml:2:5: agents[0]: expected a mapping of agent settings (at least name:), got a string");
        assert_error("agents:\n  - tier: officer\n",
                     "con.yaml:2:5: agents[0].name: missing; every agent needs a name");
        assert_error("agents:\n  - name:\n", "con.yaml:2:10: agents[0].name: an agent name is required");
        /* The sentence after the colon is names.c's (con_name_problem_to_string). */
        static const struct {
                const char *yaml, *value;
                ConNameProblem p;
        } names[] = {
                { "agents:\n  - name: Bad\n", "'Bad'", CON_NAME_BAD_FIRST_CHAR },
                { "agents:\n  - name: router\n", "'router'", CON_NAME_RESERVED },
                { "agents:\n  - name: \"\"\n", "''", CON_NAME_EMPTY },
                { "agents:\n  - name: a_b\n", "'a_b'", CON_NAME_BAD_CHAR },
                { "agents:\n  - name: a-\n", "'a-'", CON_NAME_BAD_HYPHEN },
                { "agents:\n  - name: abcdefghijklmnopqrstuvwxyz0123456789\n", "'abcdefghijklmnopqrstuvwxyz0123456789'",
                  CON_NAME_TOO_LONG },
        };
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                _cleanup_free_ char *expected = NULL;
                g_assert_cmpint(asprintf(&expected, "con.yaml:2:11: agents[0].name: %s is not a valid agent name: %s",
                                         names[i].value, con_name_problem_to_string(names[i].p)), >, 0);
                assert_error(names[i].yaml, expected);
        }
        assert_error("agents:\n  - name: Bad\n",
                     "con.yaml:2:11: agents[0].name: 'Bad' is not a valid agent name: the name must start with a "
                     "lower-case letter a-z");
        assert_error("agents:\n  - name: a\n  - name: b\n  - name: a\n",
                     "con.yaml:4:11: agents[2].name: 'a' is already used by agents[0] (line 2); agent names must "
                     "be unique");
        assert_error("agents:\n  - name: a\n  - name: b\n    tier: boss\n",
                     "con.yaml:4:11: agents[1].tier: 'boss' is not allowed; use officer, operator or worker");
        assert_error(AG "    nmae: x\n",
                     "con.yaml:3:5: agents[0].nmae: unknown key; allowed keys are name, tier, mode, cron, "
                     "cron_task, roles, groups, scopes, runner, provider, model, api_key_env, base_url, context_window, "
                     "network, command, "
                     "exec_timeout, max_sessions, idle_exit, instructions (deprecated: cli, cli_args)");
        assert_error(AG "    mode: sometimes\n",
                     "con.yaml:3:11: agents[0].mode: 'sometimes' is not allowed; use on-demand, always or cron "
                     "(continuous is accepted for always)");
        assert_error(AG "    mode: cron\n",
                     "con.yaml:3:11: agents[0].cron: missing; mode cron needs a cron expression such as "
                     "'0 8 * * 1-5'");
        assert_error(AG "    cron: \"* * * * *\"\n",
                     "con.yaml:3:11: agents[0].cron: only allowed with mode cron (this agent's mode is on-demand)");
        assert_error(AG "    mode: always\n    cron_task: go\n",
                     "con.yaml:4:16: agents[0].cron_task: only allowed with mode cron (this agent's mode is always)");
        assert_error(AG "    mode: cron\n    cron: \"0 8 * * *\"\n    cron_task: \"\"\n",
                     "con.yaml:5:16: agents[0].cron_task: the scheduled task text must not be empty");
        assert_error(AG "    roles: x\n", "con.yaml:3:12: agents[0].roles: expected a list of strings, got a string");
        assert_error(AG "    groups: [{a: b}]\n",
                     "con.yaml:3:14: agents[0].groups[0]: expected a string, got a mapping");
        assert_error(AG "    scopes: [ok, \"\"]\n",
                     "con.yaml:3:18: agents[0].scopes[1]: '' is not a valid name; use 1 to 64 characters from "
                     "a-z, 0-9, '.', '_' and '-', starting with a letter or digit");
        assert_error(AG "    roles: [Bad Role]\n",
                     "con.yaml:3:13: agents[0].roles[0]: 'Bad Role' is not a valid name; use 1 to 64 characters "
                     "from a-z, 0-9, '.', '_' and '-', starting with a letter or digit");
        assert_error(AG "    roles: [\"..\"]\n",
                     "con.yaml:3:13: agents[0].roles[0]: '..' is not a valid name; use 1 to 64 characters "
                     "from a-z, 0-9, '.', '_' and '-', starting with a letter or digit");
        assert_error(AG "    roles: [x, x]\n", "con.yaml:3:16: agents[0].roles[1]: 'x' is listed twice");
        assert_error(AG "    roles: [a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q,r,s,t,u,v,w,x,y,z,a0,b0,c0,d0,e0,f0,g0,h0,i0,j0,"
                        "k0,l0,m0,n0,o0,p0,q0,r0,s0,t0,u0,v0,w0,x0,y0,z0,a1,b1,c1,d1,e1,f1,g1,h1,i1,j1,k1,l1,m1]\n",
                     "con.yaml:3:12: agents[0].roles: the list has 65 entries; at most 64 are allowed");
        assert_error(AG "    runner: cli\n",
                     "con.yaml:3:13: agents[0].runner: 'cli' is not allowed; use picoclaw, exec, claude or codex");
        assert_error(AG "    cli: x\n",
                     "con.yaml:3:10: agents[0].cli: 'x' is not allowed; use picoclaw, exec, claude or codex");
        assert_error(AG "    cli: codex\n    runner: codex\n",
                     "con.yaml:4:5: agents[0].runner: runner and cli (its deprecated name) are both given; keep runner");
        assert_error(AG "    provider: x\n",
                     "con.yaml:3:15: agents[0].provider: 'x' is not allowed; use openrouter, anthropic, openai, "
                     "claude_code, ollama or compatible");
        assert_error(AG "    model: \"\"\n",
                     "con.yaml:3:12: agents[0].model: '' is not a valid model name; it must not be empty or contain "
                     "spaces");
        assert_error(AG "    api_key_env: foo\n",
                     "con.yaml:3:18: agents[0].api_key_env: 'foo' is not a valid environment variable name; use A-Z, "
                     "0-9 and '_', not starting with a digit (e.g. CON_API_KEY)");
        assert_error(AG "    api_key_env: 1KEY\n",
                     "con.yaml:3:18: agents[0].api_key_env: '1KEY' is not a valid environment variable name; use "
                     "A-Z, 0-9 and '_', not starting with a digit (e.g. CON_API_KEY)");
        assert_error(AG "    base_url: ftp://x\n",
                     "con.yaml:3:15: agents[0].base_url: 'ftp://x' is not allowed; the URL must start with http:// "
                     "or https://");
        assert_error(AG "    base_url: https://\n",
                     "con.yaml:3:15: agents[0].base_url: 'https://' is not allowed; the URL must start with http:// "
                     "or https://");
        assert_error(AG "    max_sessions: 65\n",
                     "con.yaml:3:19: agents[0].max_sessions: '65' is not allowed; use a whole number from 1 to 64");
        assert_error(AG "    max_sessions: 0\n",
                     "con.yaml:3:19: agents[0].max_sessions: '0' is not allowed; use a whole number from 1 to 64");
        assert_error(AG "    max_sessions: 99999999999999999999999\n",
                     "con.yaml:3:19: agents[0].max_sessions: '99999999999999999999999' is not allowed; use a whole "
                     "number from 1 to 64");
        assert_error(AG "    exec_timeout: 5x\n",
                     "con.yaml:3:19: agents[0].exec_timeout: '5x' is not a valid duration; use seconds (90) or a "
                     "number with a unit: 250ms, 90s, 5m, 1h, 2d, 1h30m");
        assert_error(AG "    idle_exit: 0\n",
                     "con.yaml:3:16: agents[0].idle_exit: '0' is not allowed; the duration must be longer than 0");
        assert_error(AG "    instructions: {a: b}\n",
                     "con.yaml:3:19: agents[0].instructions: expected a string, got a mapping");
        /* Long and odd values are escaped and cut in messages. */
        assert_error(AG "    tier: \"x\\ty\\u0001zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\"\n",
                     "con.yaml:3:11: agents[0].tier: 'x\\ty\\x01zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"
                     "...' is not allowed; use officer, operator or worker");
}

static void test_errors_cron(void) {
        /* The sentence after the colon comes from the scheduler's parser (bus/fabric/cron.c), so the config
         * accepts exactly what will run; here we check how it is placed in the message. */
        static const char * const bad[] = {
                "0 8 * *", "0 8 * * * *", "61 8 * * *", "0 24 * * *", "0 0 0 * *", "0 0 1 13 *", "0 0 * * 8",
                "*/0 * * * *", "5-1 * * * *", "0 0 * foo *", "0 0 * * monday", "1,,2 * * * *", "@reboot", "",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_free_ char *yaml = NULL, *expected = NULL, *problem = NULL;
                ConCron cron;
                g_assert_cmpint(con_cron_parse(bad[i], &cron, &problem), ==, -EINVAL);
                g_assert_nonnull(problem);
                g_assert_cmpint(asprintf(&yaml, AG "    mode: cron\n    cron: \"%s\"\n", bad[i]), >, 0);
                g_assert_cmpint(asprintf(&expected, "con.yaml:4:11: agents[0].cron: '%s' is not a valid cron "
                                         "expression: %s", bad[i], problem), >, 0);
                assert_error(yaml, expected);
        }
        assert_error(AG "    mode: cron\n    cron: [0, 8]\n",
                     "con.yaml:4:11: agents[0].cron: expected a string, got a list");

        static const char * const good[] = {
                "0 8 * * *", "*/15 * * * *", "0 8 * * 1-5", "0 8 * * mon-fri", "0 0 1 jan,jul *",
                "0-59/5 0-23/2 1-31 1-12 0-7", "30 4 1,15 * 5", "0 0 * * SUN", "0\t8 * * *", "@daily",
        };
        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                _cleanup_free_ char *yaml = NULL;
                g_assert_cmpint(asprintf(&yaml, AG "    mode: cron\n    cron: \"%s\"\n", good[i]), >, 0);
                _cleanup_(con_config_freep) ConConfig *c = parse_ok(yaml);
                g_assert_cmpint(c->agents[0].mode, ==, CON_MODE_CRON);
                g_assert_cmpstr(c->agents[0].cron, ==, good[i]);
                g_assert_cmpstr(c->agents[0].cron_task, ==, "/status");
        }
}

static void test_errors_runner(void) {
        assert_error(AG "    runner: claude\n",
                     "con.yaml:3:13: agents[0].provider: runner claude needs provider anthropic or claude_code; here "
                     "the runner is claude (set on the agent) and the provider is openrouter (the built-in default)");
        assert_error("base:\n  provider: anthropic\n  operator:\n    runner: codex\n"
                     "agents:\n  - name: a\n    tier: operator\n",
                     "con.yaml:6:5: agents[0].provider: runner codex needs provider openai; here the runner is codex "
                     "(from base.operator) and the provider is anthropic (from base)");
        assert_error(AG "    provider: claude_code\n",
                     "con.yaml:3:15: agents[0].provider: runner picoclaw cannot use provider claude_code (it is for "
                     "runner claude); here the runner is picoclaw (the built-in default) and the provider is "
                     "claude_code (set on the agent)");
        assert_error(AG "    runner: exec\n",
                     "con.yaml:3:13: agents[0].command: missing; runner exec needs the program to run, e.g. "
                     "[/usr/local/bin/tool, --flag]");
        assert_error(AG "    runner: exec\n    command: []\n",
                     "con.yaml:4:14: agents[0].command: the list is empty; give the program's absolute path first");
        assert_error(AG "    runner: exec\n    command: [ls]\n",
                     "con.yaml:4:15: agents[0].command[0]: 'ls' is not allowed; the program must be given as an "
                     "absolute path");
        assert_error(AG "    command: [/bin/x]\n",
                     "con.yaml:3:14: agents[0].command: only allowed with runner exec (this agent's runner is "
                     "picoclaw, the built-in default)");
        assert_error(AG "    cli_args: [x]\n",
                     "con.yaml:3:15: agents[0].cli_args: only allowed with runner claude or codex (this agent's "
                     "runner is picoclaw, the built-in default); for the exec runner use command");
        assert_error(AG "    runner: claude\n    provider: anthropic\n    cli_args: [-p]\n    command: [/x]\n",
                     "con.yaml:5:15: agents[0].cli_args: cli_args (deprecated) and command are both given; keep one");

        /* argv length is capped (aliases could otherwise multiply one long list across agents). */
        GString *y = g_string_new(AG "    runner: exec\n    command: [/bin/x");
        for (unsigned i = 0; i < 256; i++)
                g_string_append(y, ", a");
        g_string_append(y, "]\n");
        assert_error(y->str, "con.yaml:4:14: agents[0].command: the list has 257 entries; at most 256 are allowed");
        g_string_free(y, TRUE);
}

static void test_error_format(void) {
        ConErrorDetail e = {};
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL, *d = NULL;

        e.message = (char *) "m";
        g_assert_nonnull(d = con_error_detail_format(&e));
        g_assert_cmpstr(d, ==, "m");
        e.key = (char *) "k";
        g_assert_nonnull(a = con_error_detail_format(&e));
        g_assert_cmpstr(a, ==, "k: m");
        e.file = (char *) "f";
        g_assert_nonnull(b = con_error_detail_format(&e));
        g_assert_cmpstr(b, ==, "f: k: m");
        e.line = 3;
        e.column = 4;
        g_assert_nonnull(c = con_error_detail_format(&e));
        g_assert_cmpstr(c, ==, "f:3:4: k: m");
        g_assert_null(con_error_detail_format(NULL));

        /* No error struct: the return value still says what happened. */
        ConConfig *cfg = NULL;
        g_assert_cmpint(con_config_parse("x: 1\n", 5, "con.yaml", &cfg, NULL), ==, -EINVAL);
        g_assert_null(cfg);
        g_assert_cmpint(con_config_parse("", 0, NULL, &cfg, NULL), ==, -EINVAL);
        ConErrorDetail e2 = {};
        g_assert_cmpint(con_config_parse("x: 1\n", 5, NULL, &cfg, &e2), ==, -EINVAL);
        _cleanup_free_ char *s = con_error_detail_format(&e2);
        g_assert_cmpstr(s, ==, "1:1: x: unknown key; allowed keys are system, base, defaults (deprecated), contracts, "
                        "models, dashboard, egress, mesh, policy and agents");
        con_error_detail_done(&e2);
        con_error_detail_done(NULL);
}

static void test_defaults(void) {
        _cleanup_(con_config_freep) ConConfig *c = parse_ok("# comment\n" A0);

        g_assert_cmpstr(c->path, ==, "con.yaml");
        g_assert_cmpstr(c->system_name, ==, "conspiracy");
        g_assert_cmpstr(c->submitters_group, ==, "con");
        g_assert_cmpuint(c->task_max_size, ==, 1024 * 1024);
        g_assert_cmpuint(c->max_queued_per_sender, ==, 1000);
        g_assert_cmpuint(c->max_delegation_hops, ==, 4);
        g_assert_cmpuint(c->result_retention_usec, ==, 30ULL * 24 * 3600 * USEC_PER_SEC);
        g_assert_cmpuint(c->result_max, ==, 10000);
        g_assert_cmpuint(c->agent_uid_min, ==, 60000);
        g_assert_cmpuint(c->agent_uid_max, ==, 60999);
        g_assert_cmpuint(c->contracts.disk_min_free_pct, ==, 15);
        g_assert_cmpuint(c->contracts.mem_min_free_pct, ==, 10);
        g_assert_cmpfloat(c->contracts.max_load_factor, ==, 2.0);
        g_assert_cmpuint(c->contracts.max_session_min, ==, 30);
        g_assert_cmpuint(c->contracts.healthcheck_interval_usec, ==, 60 * USEC_PER_SEC);
        g_assert_null(c->base.runner);
        g_assert_null(c->tiers[CON_TIER_OFFICER].model);

        g_assert_cmpuint(c->n_agents, ==, 1);
        const ConAgent *a = &c->agents[0];
        g_assert_cmpstr(a->name, ==, "a");
        g_assert_cmpint(a->tier, ==, CON_TIER_NONE);
        g_assert_cmpint(a->mode, ==, CON_MODE_ON_DEMAND);
        g_assert_null(a->cron);
        g_assert_cmpstr(a->cron_task, ==, "/status");
        g_assert_null(a->roles);
        g_assert_null(a->groups);
        g_assert_null(a->scopes);
        g_assert_cmpstr(a->rt.runner, ==, "picoclaw");
        g_assert_cmpstr(a->rt.provider, ==, "openrouter");
        g_assert_null(a->rt.model);
        g_assert_cmpstr(a->rt.api_key_env, ==, "CON_API_KEY");
        g_assert_null(a->rt.base_url);
        g_assert_null(a->command);
        g_assert_cmpuint(a->exec_timeout_usec, ==, 300 * USEC_PER_SEC);
        g_assert_cmpuint(a->max_sessions, ==, 1);
        g_assert_cmpuint(a->idle_exit_usec, ==, 30 * USEC_PER_SEC);
        g_assert_null(a->instructions);
        g_assert_cmpuint(a->line, ==, 3);
        g_assert_cmpuint(a->column, ==, 5);

        g_assert_true(con_config_find_agent(c, "a") == a);
        g_assert_null(con_config_find_agent(c, "b"));
        g_assert_null(con_config_find_agent(c, NULL));
        g_assert_null(con_config_find_agent(NULL, "a"));

        /* Empty values count as not given. */
        _cleanup_(con_config_freep) ConConfig *n = parse_ok("system:\nbase:\ncontracts:\n  system:\n"
                                                             "agents:\n  - name: a\n    tier:\n    model: ~\n"
                                                             "    roles:\n    max_sessions: null\n");
        g_assert_cmpstr(n->system_name, ==, "conspiracy");
        g_assert_cmpint(n->agents[0].tier, ==, CON_TIER_NONE);
        g_assert_null(n->agents[0].rt.model);
        g_assert_cmpuint(n->agents[0].max_sessions, ==, 1);
}

static void test_all_keys(void) {
        _cleanup_(con_config_freep) ConConfig *c = parse_ok(
                "system:\n"
                "  name: my-box\n"
                "  submitters_group: humans\n"
                "  task_max_size: 512K\n"
                "  max_queued_per_sender: 250\n"
                "  max_delegation_hops: 2\n"
                "  result_retention: 7d12h\n"
                "  result_max: 500\n"
                "contracts:\n"
                "  system:\n"
                "    disk_min_free_pct: 20\n"
                "    mem_min_free_pct: 5\n"
                "    max_load_factor: 4.5\n"
                "    max_session_min: 90\n"
                "    healthcheck_interval: 5m\n"
                "agents:\n"
                "  - name: runner-one\n"
                "    tier: worker\n"
                "    mode: cron\n"
                "    cron: \"0 8 * * 1-5\"\n"
                "    cron_task: Write the report.\n"
                "    roles: [sysadmin, dev.ops]\n"
                "    groups:\n"
                "      - team_a\n"
                "    scopes: [repo-x]\n"
                "    runner: exec\n"
                "    provider: ollama\n"
                "    model: llama3:8b\n"
                "    api_key_env: MY_KEY_2\n"
                "    base_url: http://localhost:11434\n"
                "    command: [/usr/local/bin/tool, --json, \"two words\"]\n"
                "    exec_timeout: 1h30m\n"
                "    max_sessions: 64\n"
                "    idle_exit: 250ms\n"
                "    instructions: |\n"
                "      Line one.\n"
                "      Line two.\n");

        g_assert_cmpstr(c->system_name, ==, "my-box");
        g_assert_cmpstr(c->submitters_group, ==, "humans");
        g_assert_cmpuint(c->task_max_size, ==, 512 * 1024);
        g_assert_cmpuint(c->max_queued_per_sender, ==, 250);
        g_assert_cmpuint(c->max_delegation_hops, ==, 2);
        g_assert_cmpuint(c->result_retention_usec, ==, (7ULL * 24 + 12) * 3600 * USEC_PER_SEC);
        g_assert_cmpuint(c->result_max, ==, 500);
        g_assert_cmpuint(c->contracts.disk_min_free_pct, ==, 20);
        g_assert_cmpuint(c->contracts.mem_min_free_pct, ==, 5);
        g_assert_cmpfloat(c->contracts.max_load_factor, ==, 4.5);
        g_assert_cmpuint(c->contracts.max_session_min, ==, 90);
        g_assert_cmpuint(c->contracts.healthcheck_interval_usec, ==, 300 * USEC_PER_SEC);

        const ConAgent *a = &c->agents[0];
        g_assert_cmpstr(a->name, ==, "runner-one");
        g_assert_cmpint(a->tier, ==, CON_TIER_WORKER);
        g_assert_cmpint(a->mode, ==, CON_MODE_CRON);
        g_assert_cmpstr(a->cron, ==, "0 8 * * 1-5");
        g_assert_cmpstr(a->cron_task, ==, "Write the report.");
        g_assert_true(strv_equal(a->roles, (char *[]) { (char *) "sysadmin", (char *) "dev.ops", NULL }));
        g_assert_true(strv_equal(a->groups, (char *[]) { (char *) "team_a", NULL }));
        g_assert_true(strv_equal(a->scopes, (char *[]) { (char *) "repo-x", NULL }));
        g_assert_cmpstr(a->rt.runner, ==, "exec");
        g_assert_cmpstr(a->rt.provider, ==, "ollama");
        g_assert_cmpstr(a->rt.model, ==, "llama3:8b");
        g_assert_cmpstr(a->rt.api_key_env, ==, "MY_KEY_2");
        g_assert_cmpstr(a->rt.base_url, ==, "http://localhost:11434");
        g_assert_true(strv_equal(a->command, (char *[]) { (char *) "/usr/local/bin/tool", (char *) "--json",
                                                          (char *) "two words", NULL }));
        g_assert_cmpuint(a->exec_timeout_usec, ==, 5400 * USEC_PER_SEC);
        g_assert_cmpuint(a->max_sessions, ==, 64);
        g_assert_cmpuint(a->idle_exit_usec, ==, 250 * USEC_PER_MSEC);
        g_assert_cmpstr(a->instructions, ==, "Line one.\nLine two.\n");
}

static void test_resolution(void) {
        _cleanup_(con_config_freep) ConConfig *c = parse_ok(
                "base:\n"
                "  runner: picoclaw\n"
                "  provider: anthropic\n"
                "  model: base-model\n"
                "  api_key_env: BASE_KEY\n"
                "  base_url: https://base.example\n"
                "  context_window: 200000\n"
                "  officer:\n"
                "    model: officer-model\n"
                "    api_key_env: OFFICER_KEY\n"
                "    context_window: 1000000\n"
                "  worker:\n"
                "    runner: claude\n"
                "agents:\n"
                "  - name: boss\n"
                "    tier: officer\n"
                "  - name: hand\n"
                "    tier: worker\n"
                "    provider: claude_code\n"
                "  - name: plain\n"
                "  - name: own\n"
                "    tier: officer\n"
                "    model: own-model\n"
                "    api_key_env: OWN_KEY\n"
                "    base_url: http://own\n"
                "    context_window: 32000\n"
                "    mode: continuous\n"
                "    cli: codex\n"
                "    provider: openai\n");

        const ConAgent *boss = con_config_find_agent(c, "boss");
        g_assert_nonnull(boss);
        g_assert_cmpstr(boss->rt.runner, ==, "picoclaw");
        g_assert_cmpstr(boss->rt.provider, ==, "anthropic");
        g_assert_cmpstr(boss->rt.model, ==, "officer-model");
        g_assert_cmpstr(boss->rt.api_key_env, ==, "OFFICER_KEY");
        g_assert_cmpstr(boss->rt.base_url, ==, "https://base.example");
        g_assert_cmpuint(boss->rt.context_window, ==, 1000000);

        const ConAgent *hand = con_config_find_agent(c, "hand");
        g_assert_cmpstr(hand->rt.runner, ==, "claude");
        g_assert_cmpstr(hand->rt.provider, ==, "claude_code");
        g_assert_cmpstr(hand->rt.model, ==, "base-model");
        g_assert_cmpstr(hand->rt.api_key_env, ==, "BASE_KEY");

        const ConAgent *plain = con_config_find_agent(c, "plain");
        g_assert_cmpstr(plain->rt.model, ==, "base-model");
        g_assert_cmpstr(plain->rt.api_key_env, ==, "BASE_KEY");
        g_assert_cmpuint(plain->rt.context_window, ==, 200000);

        const ConAgent *own = con_config_find_agent(c, "own");
        g_assert_cmpint(own->mode, ==, CON_MODE_ALWAYS);
        g_assert_cmpstr(own->rt.runner, ==, "codex");
        g_assert_cmpstr(own->rt.provider, ==, "openai");
        g_assert_cmpstr(own->rt.model, ==, "own-model");
        g_assert_cmpstr(own->rt.api_key_env, ==, "OWN_KEY");
        g_assert_cmpstr(own->rt.base_url, ==, "http://own");
        g_assert_cmpuint(own->rt.context_window, ==, 32000);
        g_assert_null(own->command);

        /* base is kept as written. */
        g_assert_cmpstr(c->base.model, ==, "base-model");
        g_assert_cmpstr(c->tiers[CON_TIER_OFFICER].model, ==, "officer-model");
        g_assert_null(c->tiers[CON_TIER_OPERATOR].model);

        /* nothing set: the default window */
        _cleanup_(con_config_freep) ConConfig *w = parse_ok(AG);
        g_assert_cmpuint(w->agents[0].rt.context_window, ==, CON_CONTEXT_WINDOW_DEFAULT);
        assert_error("base:\n  context_window: 100\n" AG,
                     "con.yaml:2:19: base.context_window: '100' is not allowed; use a whole number from 4096 to 100000000");

        /* cli_args (deprecated) become the command: [runner, args...], no PATH lookup. */
        _cleanup_(con_config_freep) ConConfig *d = parse_ok(
                AG "    runner: claude\n    provider: anthropic\n    cli_args: [-p, --verbose]\n"
                "  - name: b\n    runner: codex\n    provider: openai\n    cli_args: []\n");
        g_assert_true(strv_equal(d->agents[0].command, (char *[]) { (char *) "claude", (char *) "-p",
                                                                    (char *) "--verbose", NULL }));
        g_assert_true(strv_equal(d->agents[1].command, (char *[]) { (char *) "codex", NULL }));
}

static void test_legacy_defaults(void) {
        _cleanup_(con_config_freep) ConConfig *c = parse_ok(
                "defaults:\n"
                "  officer:\n"
                "    model: legacy-officer\n"
                "    provider: anthropic\n"
                "  worker:\n"
                "    model: legacy-worker\n"
                "base:\n"
                "  worker:\n"
                "    api_key_env: WORKER_KEY\n"
                "agents:\n"
                "  - name: boss\n"
                "    tier: officer\n"
                "  - name: hand\n"
                "    tier: worker\n");

        /* base.officer was empty: migrated whole. */
        g_assert_cmpstr(c->tiers[CON_TIER_OFFICER].model, ==, "legacy-officer");
        g_assert_cmpstr(c->tiers[CON_TIER_OFFICER].provider, ==, "anthropic");
        g_assert_cmpstr(c->agents[0].rt.model, ==, "legacy-officer");
        g_assert_cmpstr(c->agents[0].rt.provider, ==, "anthropic");
        /* base.worker said something: the legacy tier is ignored, not merged. */
        g_assert_null(c->tiers[CON_TIER_WORKER].model);
        g_assert_cmpstr(c->tiers[CON_TIER_WORKER].api_key_env, ==, "WORKER_KEY");
        g_assert_null(c->agents[1].rt.model);
        g_assert_cmpstr(c->agents[1].rt.api_key_env, ==, "WORKER_KEY");
}

static void test_profiles(void) {
        static const char * const profiles[] = { "default", "minimal" };

        for (size_t i = 0; i < ELEMENTSOF(profiles); i++) {
                _cleanup_free_ char *path = NULL;
                _cleanup_(con_config_freep) ConConfig *c = NULL;
                ConErrorDetail e = {};

                g_assert_cmpint(asprintf(&path, "%s/configs/%s/con.yaml", test_source_dir(), profiles[i]), >, 0);
                int r = con_config_load(path, &c, &e);
                if (r < 0) {
                        _cleanup_free_ char *s = con_error_detail_format(&e);
                        g_test_message("%s", s);
                }
                g_assert_cmpint(r, ==, 0);
                g_assert_cmpstr(c->path, ==, path);
                g_assert_cmpstr(c->system_name, ==, "conspiracyos");

                const ConAgent *concierge = con_config_find_agent(c, "concierge");
                g_assert_nonnull(concierge);
                g_assert_cmpint(concierge->mode, ==, CON_MODE_ON_DEMAND);
                g_assert_cmpstr(concierge->rt.runner, ==, "picoclaw");
                g_assert_cmpstr(concierge->rt.provider, ==, "openrouter");
                g_assert_cmpstr(concierge->rt.api_key_env, ==, "CON_API_KEY");
                g_assert_cmpstr(concierge->rt.model, ==, "anthropic/claude-sonnet-4.6");
                g_assert_nonnull(concierge->instructions);

                if (streq(profiles[i], "default")) {
                        g_assert_cmpuint(c->n_agents, ==, 2);
                        g_assert_cmpint(concierge->tier, ==, CON_TIER_OPERATOR);
                        g_assert_cmpstr(c->tiers[CON_TIER_OFFICER].model, ==, "anthropic/claude-opus-4-6");
                        g_assert_cmpstr(c->tiers[CON_TIER_OPERATOR].model, ==, "anthropic/claude-sonnet-4.6");
                        const ConAgent *s = con_config_find_agent(c, "sysadmin");
                        g_assert_nonnull(s);
                        g_assert_cmpint(s->tier, ==, CON_TIER_OPERATOR);
                        g_assert_cmpint(s->mode, ==, CON_MODE_ON_DEMAND);
                        g_assert_true(strv_equal(s->roles, (char *[]) { (char *) "sysadmin", NULL }));
                        g_assert_cmpuint(c->contracts.disk_min_free_pct, ==, 15);
                        g_assert_cmpuint(c->contracts.healthcheck_interval_usec, ==, 60 * USEC_PER_SEC);
                } else
                        g_assert_cmpuint(c->n_agents, ==, 1);
        }
}

static void test_load_errors(void) {
        _cleanup_free_ char *dir = test_tmpdir_new(), *missing = NULL, *empty = NULL, *bad = NULL;
        _cleanup_free_ char *s1 = NULL, *s2 = NULL, *s3 = NULL, *s4 = NULL, *x1 = NULL, *x2 = NULL, *x3 = NULL,
                            *x4 = NULL;
        ConConfig *c = NULL;
        ConErrorDetail e = {};

        missing = g_strdup_printf("%s/nope.yaml", dir);
        g_assert_cmpint(con_config_load(missing, &c, &e), ==, -ENOENT);
        s1 = con_error_detail_format(&e);
        x1 = g_strdup_printf("%s: cannot open the file: No such file or directory", missing);
        g_assert_cmpstr(s1, ==, x1);

        g_assert_cmpint(con_config_load(dir, &c, &e), ==, -EINVAL);
        s2 = con_error_detail_format(&e);
        x2 = g_strdup_printf("%s: not a regular file", dir);
        g_assert_cmpstr(s2, ==, x2);

        empty = g_strdup_printf("%s/empty.yaml", dir);
        test_write_file(empty, "");
        g_assert_cmpint(con_config_load(empty, &c, &e), ==, -EINVAL);
        s3 = con_error_detail_format(&e);
        x3 = g_strdup_printf("%s: the file is empty (or only comments); it needs at least an agents: list", empty);
        g_assert_cmpstr(s3, ==, x3);

        bad = g_strdup_printf("%s/bad.yaml", dir);
        test_write_file(bad, "agents:\n  - name: a\n    tier: boss\n");
        g_assert_cmpint(con_config_load(bad, &c, &e), ==, -EINVAL);
        s4 = con_error_detail_format(&e);
        x4 = g_strdup_printf("%s:3:11: agents[0].tier: 'boss' is not allowed; use officer, operator or worker", bad);
        g_assert_cmpstr(s4, ==, x4);
        g_assert_null(c);

        con_error_detail_done(&e);
        test_tmpdir_remove(dir);
}

static void test_duration(void) {
        static const struct {
                const char *s;
                uint64_t usec;
        } good[] = {
                { "0", 0 },
                { "90", 90 * USEC_PER_SEC },
                { "90s", 90 * USEC_PER_SEC },
                { "250ms", 250 * USEC_PER_MSEC },
                { "5m", 300 * USEC_PER_SEC },
                { "1h", 3600 * USEC_PER_SEC },
                { "1h30m", 5400 * USEC_PER_SEC },
                { "2d", 2 * 86400 * USEC_PER_SEC },
                { "1m30s500ms", 90 * USEC_PER_SEC + 500 * USEC_PER_MSEC },
                { "007s", 7 * USEC_PER_SEC },
                { "18446744073709s", UINT64_C(18446744073709) * USEC_PER_SEC },
        };
        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                uint64_t u = 1;
                g_assert_cmpint(con_parse_duration(good[i].s, &u), ==, 0);
                g_assert_cmpuint(u, ==, good[i].usec);
        }

        static const char * const bad[] = {
                "", "-1", "-5s", "s", "1x", "1 s", " 1s", "1s ", "1.5h", "1h30", "h1", "1S", "1e3", "+1", "ms",
                "1sm", "0x10",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                uint64_t u = 7;
                g_assert_cmpint(con_parse_duration(bad[i], &u), ==, -EINVAL);
                g_assert_cmpuint(u, ==, 7);
        }
        uint64_t u = 7;
        g_assert_cmpint(con_parse_duration(NULL, &u), ==, -EINVAL);
        g_assert_cmpint(con_parse_duration("18446744073710", &u), ==, -ERANGE);
        g_assert_cmpint(con_parse_duration("99999999999999999999", &u), ==, -ERANGE);
        g_assert_cmpint(con_parse_duration("213503983d", &u), ==, -ERANGE);
        g_assert_cmpint(con_parse_duration("213503981d213503981d", &u), ==, -ERANGE);
        g_assert_cmpuint(u, ==, 7);
}

static void test_size(void) {
        static const struct {
                const char *s;
                uint64_t bytes;
        } good[] = {
                { "0", 0 },
                { "1048576", 1048576 },
                { "100B", 100 },
                { "512K", 512 * 1024 },
                { "512KiB", 512 * 1024 },
                { "1M", 1024 * 1024 },
                { "1MiB", 1024 * 1024 },
                { "1G", UINT64_C(1) << 30 },
                { "2GiB", UINT64_C(2) << 30 },
                { "3T", UINT64_C(3) << 40 },
                { "1TiB", UINT64_C(1) << 40 },
                { "18446744073709551615", UINT64_MAX },
        };
        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                uint64_t b = 1;
                g_assert_cmpint(con_parse_size(good[i].s, &b), ==, 0);
                g_assert_cmpuint(b, ==, good[i].bytes);
        }

        static const char * const bad[] = {
                "", "-1", "1k", "1KB", "1MB", "1 M", "1.5M", "M", "1Mi", "1MiBs", " 1", "1b", "0x10",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                uint64_t b = 7;
                g_assert_cmpint(con_parse_size(bad[i], &b), ==, -EINVAL);
                g_assert_cmpuint(b, ==, 7);
        }
        uint64_t b = 7;
        g_assert_cmpint(con_parse_size(NULL, &b), ==, -EINVAL);
        g_assert_cmpint(con_parse_size("18446744073709551616", &b), ==, -ERANGE);
        g_assert_cmpint(con_parse_size("16777216T", &b), ==, -ERANGE);
        g_assert_cmpint(con_parse_size("17179869184G", &b), ==, -ERANGE);
        g_assert_cmpuint(b, ==, 7);
        g_assert_cmpint(con_parse_size("16777215T", &b), ==, 0);
}

static void test_enums(void) {
        g_assert_cmpstr(con_tier_to_string(CON_TIER_NONE), ==, "");
        g_assert_cmpstr(con_tier_to_string(CON_TIER_OFFICER), ==, "officer");
        g_assert_cmpstr(con_tier_to_string(CON_TIER_OPERATOR), ==, "operator");
        g_assert_cmpstr(con_tier_to_string(CON_TIER_WORKER), ==, "worker");
        g_assert_null(con_tier_to_string(_CON_TIER_MAX));
        g_assert_null(con_tier_to_string(_CON_TIER_INVALID));
        g_assert_cmpint(con_tier_from_string("officer"), ==, CON_TIER_OFFICER);
        g_assert_cmpint(con_tier_from_string(""), ==, CON_TIER_NONE);
        g_assert_cmpint(con_tier_from_string("Officer"), ==, _CON_TIER_INVALID);
        g_assert_cmpint(con_tier_from_string(NULL), ==, _CON_TIER_INVALID);

        g_assert_cmpstr(con_mode_to_string(CON_MODE_ON_DEMAND), ==, "on-demand");
        g_assert_cmpstr(con_mode_to_string(CON_MODE_ALWAYS), ==, "always");
        g_assert_cmpstr(con_mode_to_string(CON_MODE_CRON), ==, "cron");
        g_assert_null(con_mode_to_string(_CON_MODE_MAX));
        g_assert_cmpint(con_mode_from_string("continuous"), ==, CON_MODE_ALWAYS);
        g_assert_cmpint(con_mode_from_string("always"), ==, CON_MODE_ALWAYS);
        g_assert_cmpint(con_mode_from_string("on-demand"), ==, CON_MODE_ON_DEMAND);
        g_assert_cmpint(con_mode_from_string("cron"), ==, CON_MODE_CRON);
        g_assert_cmpint(con_mode_from_string("ondemand"), ==, _CON_MODE_INVALID);
        g_assert_cmpint(con_mode_from_string(NULL), ==, _CON_MODE_INVALID);
}

static void test_yaml_features(void) {
        /* Anchors and aliases, flow style, quoting and explicit tags all work as plain YAML. */
        _cleanup_(con_config_freep) ConConfig *c = parse_ok(
                "base: {runner: picoclaw, model: &m \"shared/model\"}\n"
                "agents:\n"
                "  - {name: a, model: *m, roles: &r [x, y]}\n"
                "  - name: 'b'\n"
                "    roles: *r\n"
                "    max_sessions: !!int 3\n");
        g_assert_cmpstr(c->agents[0].rt.model, ==, "shared/model");
        g_assert_true(strv_equal(c->agents[1].roles, (char *[]) { (char *) "x", (char *) "y", NULL }));
        g_assert_cmpuint(c->agents[1].max_sessions, ==, 3);

        /* A self-referencing alias is refused before any schema walks it. */
        assert_error("agents: &a\n  - name: a\n    roles: *a\n",
                     "con.yaml:1:9: an alias refers to the mapping or list that contains it (write the value out)");
}

/* Drop-ins: con.yaml.d/NAME.yaml add agents and grants; conflicts name the file, line and key. */
static char *load_error(const char *path) {
        ConConfig *c = NULL;
        ConErrorDetail e = {};
        int r = con_config_load(path, &c, &e);
        g_assert_cmpint(r, <, 0);
        g_assert_null(c);
        char *s = con_error_detail_format(&e);
        con_error_detail_done(&e);
        return s;
}

static void test_dropins(void) {
        _cleanup_free_ char *dir = test_tmpdir_new(), *main = NULL, *d = NULL, *f1 = NULL, *f2 = NULL, *f3 = NULL,
                            *ign = NULL, *link = NULL;
        ConErrorDetail e = {};
        ConConfig *c = NULL;

        g_assert_nonnull(main = g_strdup_printf("%s/con.yaml", dir));
        g_assert_nonnull(d = g_strdup_printf("%s/con.yaml.d", dir));
        g_assert_nonnull(f1 = g_strdup_printf("%s/researcher.yaml", d));
        g_assert_nonnull(f2 = g_strdup_printf("%s/writer.yaml", d));
        g_assert_nonnull(ign = g_strdup_printf("%s/notes.txt", d));
        test_write_file(main, "base:\n  worker:\n    model: small/m\nagents:\n  - name: concierge\n  - name: sysadmin\n");

        /* No folder: con.yaml alone. */
        g_assert_cmpint(con_config_load(main, &c, &e), ==, 0);
        g_assert_cmpuint(c->n_agents, ==, 2);
        g_assert_cmpstr(c->agents[0].file, ==, main);
        c = con_config_free(c);

        g_assert_cmpint(mkdir(d, 0755), ==, 0);
        test_write_file(f2, "agents:\n  - name: writer\n");
        test_write_file(f1, "agents:\n  - name: researcher\n    tier: worker\n"
                            "policy:\n  grants:\n    - {who: researcher, may: [task], to: [writer]}\n"
                            "    - {who: sysadmin, may: [task, halt], to: [researcher]}\n");
        test_write_file(ign, "agents: [this is not read\n");
        g_assert_cmpint(con_config_load(main, &c, &e), ==, 0);
        g_assert_cmpuint(c->n_agents, ==, 4);
        /* In the order of the file names; resolved against con.yaml's base:. */
        g_assert_cmpstr(c->agents[2].name, ==, "researcher");
        g_assert_cmpstr(c->agents[2].file, ==, f1);
        g_assert_cmpstr(c->agents[2].rt.model, ==, "small/m");
        g_assert_cmpstr(c->agents[3].name, ==, "writer");
        g_assert_cmpuint(c->n_policy_grants, ==, 2);
        g_assert_cmpstr(c->policy_grants[1].who, ==, "sysadmin");
        g_assert_cmpstr(c->policy_grants[0].to[0], ==, "writer");
        c = con_config_free(c);

        /* What the provisioner plans with: one drop-in not written yet, one left out. */
        const char *extra = "agents:\n  - name: coder\n";
        g_assert_cmpint(con_config_load_full(&(ConConfigLoad) { .path = main, .extra_dropin_name = "coder.yaml",
                                .extra_dropin_text = extra, .extra_dropin_len = strlen(extra),
                                .omit_dropin = "researcher.yaml" }, &c, &e), ==, 0);
        g_assert_cmpuint(c->n_agents, ==, 4);
        g_assert_null(con_config_find_agent(c, "researcher"));
        /* In the order of the names, as once it is written. */
        g_assert_cmpstr(c->agents[2].name, ==, "coder");
        g_assert_cmpstr(c->agents[3].name, ==, "writer");
        c = con_config_free(c);
        /* Without the writer, the researcher's grant names an unknown agent. */
        g_assert_cmpint(con_config_load_full(&(ConConfigLoad) { .path = main, .omit_dropin = "writer.yaml" }, &c, &e),
                        ==, -EINVAL);
        con_error_detail_done(&e);

        /* An agent defined twice, across files. */
        g_assert_nonnull(f3 = g_strdup_printf("%s/zz.yaml", d));
        test_write_file(f3, "agents:\n  - name: x1\n  - name: sysadmin\n");
        _cleanup_free_ char *want = g_strdup_printf("%s:3:11: agents[1].name: 'sysadmin' is already defined in %s:6; "
                                                    "an agent is defined once, in con.yaml or in one drop-in", f3, main);
        char *got = load_error(main);
        g_assert_cmpstr(got, ==, want);
        free(got);
        test_write_file(f3, "agents:\n  - name: researcher\n");
        got = load_error(main);
        free(want);
        want = g_strdup_printf("%s:2:11: agents[0].name: 'researcher' is already defined in %s:2; an agent is defined "
                               "once, in con.yaml or in one drop-in", f3, f1);
        g_assert_cmpstr(got, ==, want);
        free(got);

        /* Only agents and policy.grants; everything else belongs to con.yaml. */
        test_write_file(f3, "system:\n  name: x\nagents:\n  - name: x1\n");
        got = load_error(main);
        free(want);
        want = g_strdup_printf("%s:1:1: system: unknown key; allowed keys are agents and policy (a drop-in adds agents "
                               "and grants; system, base, contracts, models and dashboard belong in con.yaml)", f3);
        g_assert_cmpstr(got, ==, want);
        free(got);
        test_write_file(f3, "policy:\n  defaults: false\n");
        got = load_error(main);
        free(want);
        want = g_strdup_printf("%s:2:3: policy.defaults: only allowed in con.yaml; a drop-in adds grants (policy.grants)", f3);
        g_assert_cmpstr(got, ==, want);
        free(got);
        test_write_file(f3, "# nothing\n");
        got = load_error(main);
        g_assert_nonnull(strstr(got, "the drop-in is empty"));
        free(got);
        /* An error inside a drop-in names the drop-in. */
        test_write_file(f3, "agents:\n  - name: x1\n    tier: boss\n");
        got = load_error(main);
        free(want);
        want = g_strdup_printf("%s:3:11: agents[0].tier: 'boss' is not allowed; use officer, operator or worker", f3);
        g_assert_cmpstr(got, ==, want);
        free(got);
        g_assert_cmpint(unlink(f3), ==, 0);

        /* A symlinked drop-in is refused, not followed. */
        g_assert_nonnull(link = g_strdup_printf("%s/link.yaml", d));
        g_assert_cmpint(symlink(f2, link), ==, 0);
        got = load_error(main);
        g_assert_nonnull(strstr(got, "link.yaml: a symbolic link; drop-ins must be regular files"));
        free(got);
        g_assert_cmpint(unlink(link), ==, 0);

        g_assert_true(con_config_dropin_name_valid("researcher.yaml"));
        g_assert_false(con_config_dropin_name_valid(".hidden.yaml"));
        g_assert_false(con_config_dropin_name_valid("x.yml"));
        g_assert_false(con_config_dropin_name_valid(".yaml"));
        g_assert_false(con_config_dropin_name_valid("A.yaml"));
        g_assert_false(con_config_dropin_name_valid("a/b.yaml"));
        test_tmpdir_remove(dir);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/config/errors/syntax", test_errors_syntax);
        g_test_add_func("/config/errors/top", test_errors_top);
        g_test_add_func("/config/generic-key-provider", test_generic_key_provider);
        g_test_add_func("/config/errors/base", test_errors_base);
        g_test_add_func("/config/errors/contracts", test_errors_contracts);
        g_test_add_func("/config/errors/agent", test_errors_agent);
        g_test_add_func("/config/errors/cron", test_errors_cron);
        g_test_add_func("/config/errors/runner", test_errors_runner);
        g_test_add_func("/config/error-format", test_error_format);
        g_test_add_func("/config/defaults", test_defaults);
        g_test_add_func("/config/all-keys", test_all_keys);
        g_test_add_func("/config/resolution", test_resolution);
        g_test_add_func("/config/legacy-defaults", test_legacy_defaults);
        g_test_add_func("/config/profiles", test_profiles);
        g_test_add_func("/config/load-errors", test_load_errors);
        g_test_add_func("/config/duration", test_duration);
        g_test_add_func("/config/size", test_size);
        g_test_add_func("/config/dashboard", test_dashboard);
        g_test_add_func("/config/mesh", test_mesh);
        g_test_add_func("/config/network", test_network);
        g_test_add_func("/config/network-entries", test_network_entries);
        g_test_add_func("/config/enums", test_enums);
        g_test_add_func("/config/yaml-features", test_yaml_features);
        g_test_add_func("/config/dropins", test_dropins);
        return con_test_run();
}
