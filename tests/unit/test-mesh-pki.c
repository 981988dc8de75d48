/* SPDX-License-Identifier: MIT */
/* The mesh's certificates and nats-server configuration (bus/provision/mesh-pki.c,
 * docs/MULTIHOST.md): the server certificate serves both ends of a cluster's routes and carries
 * the route name no host certificate can; the cluster block has TLS on the routes. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "macro.h"
#include "mesh-pki.h"
#include "names.h"
#include "test-util.h"

/* DIR/NAME's extended key usage flags and whether its SANs name the route name. */
static void cert_props(const char *dir, const char *name, uint32_t *ret_xku, bool *ret_route) {
        g_autofree char *p = g_strdup_printf("%s/%s", dir, name);
        FILE *f = fopen(p, "re");
        g_assert_nonnull(f);
        X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
        fclose(f);
        g_assert_nonnull(x);
        *ret_xku = X509_get_extended_key_usage(x);
        *ret_route = X509_check_host(x, CON_MESH_ROUTE_NAME, 0, X509_CHECK_FLAG_NO_WILDCARDS, NULL) == 1;
        X509_free(x);
}

static void test_certs(void) {
        g_autofree char *tmp = test_tmpdir_new();
        g_autofree char *ca = g_strdup_printf("%s/ca", tmp), *srv = g_strdup_printf("%s/srv", tmp),
                        *host = g_strdup_printf("%s/host", tmp);
        char *sans[] = { (char *) "10.0.0.2", NULL };
        uint32_t xku;
        bool route;

        g_assert_cmpint(con_mesh_ca_init(ca), ==, 0);
        g_assert_cmpint(con_mesh_issue(ca, CON_MESH_CERT_SERVER, "server", sans, srv, "server"), ==, 0);
        cert_props(srv, "server.crt", &xku, &route);
        g_assert_true(xku & XKU_SSL_SERVER);
        g_assert_true(xku & XKU_SSL_CLIENT);    /* it dials the other nodes' routes */
        g_assert_true(route);
        g_assert_cmpint(con_mesh_issue(ca, CON_MESH_CERT_HOST, "host-a", NULL, host, "host"), ==, 0);
        cert_props(host, "host.crt", &xku, &route);
        g_assert_true(xku & XKU_SSL_CLIENT);
        g_assert_false(xku & XKU_SSL_SERVER);
        g_assert_false(route);                  /* a host cannot be a route */
        g_assert_false(con_mesh_host_valid(CON_MESH_ROUTE_NAME));
        test_tmpdir_remove(tmp);
}

static void test_server_config(void) {
        char *hosts[] = { (char *) "host-a", (char *) "host-b", NULL };
        char *routes[] = { (char *) "10.0.0.1:6222", (char *) "10.0.0.3:6222", NULL };
        char *none[] = { NULL };
        _cleanup_free_ char *c = NULL;

        g_assert_cmpint(con_mesh_server_config(hosts, "10.0.0.2:4222", "/js", "/tls", NULL, NULL, &c), ==, 0);
        g_assert_null(strstr(c, "cluster {"));
        free(c);
        c = NULL;
        g_assert_cmpint(con_mesh_server_config(hosts, "10.0.0.2:4222", "/js", "/tls", "10.0.0.2:6222", routes, &c),
                        ==, 0);
        const char *cl = strstr(c, "cluster {");
        g_assert_nonnull(cl);
        g_assert_nonnull(strstr(cl, "  listen: \"10.0.0.2:6222\"\n"));
        g_assert_nonnull(strstr(cl, "  routes: [\"nats://10.0.0.1:6222\", \"nats://10.0.0.3:6222\"]\n"));
        g_assert_nonnull(strstr(cl, "    cert_file: \"/tls/server.crt\"\n"));
        g_assert_nonnull(strstr(cl, "    ca_file: \"/tls/ca.crt\"\n"));
        g_assert_nonnull(strstr(cl, "    verify_and_map: true\n"));
        g_assert_nonnull(strstr(cl, "    user: \"" CON_MESH_ROUTE_NAME "\"\n"));
        free(c);
        c = NULL;
        g_assert_cmpint(con_mesh_server_config(hosts, "10.0.0.2:4222", "/js", "/tls", "10.0.0.2:6222", none, &c),
                        ==, 0);
        g_assert_nonnull(strstr(c, "  routes: []\n"));
        free(c);
        c = NULL;

        /* routes without a cluster; not HOST:PORT; quotes */
        g_assert_cmpint(con_mesh_server_config(hosts, "a:1", "/js", "/tls", NULL, routes, &c), ==, -EINVAL);
        const char *bad[] = { "10.0.0.1", ":6222", "10.0.0.1:", "10.0.0.1:62x", "a\"b:1", "nats://a:1", "a b:1" };
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                char *r[] = { (char *) bad[i], NULL };
                g_assert_cmpint(con_mesh_server_config(hosts, "a:1", "/js", "/tls", bad[i], NULL, &c), ==, -EINVAL);
                g_assert_cmpint(con_mesh_server_config(hosts, "a:1", "/js", "/tls", "a:2", r, &c), ==, -EINVAL);
        }
        g_assert_null(c);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/mesh-pki/certs", test_certs);
        g_test_add_func("/mesh-pki/server-config", test_server_config);
        return con_test_run();
}
