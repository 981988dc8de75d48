/* SPDX-License-Identifier: MIT */
/* The mesh's certificates and nats-server configuration (bus/provision/mesh-pki.c,
 * docs/MULTIHOST.md): the server certificate serves both ends of a cluster's routes and carries
 * the route name no host certificate can; the cluster block has TLS on the routes. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "macro.h"
#include "mesh-pki.h"
#include "names.h"
#include "strv.h"
#include "test-util.h"

/* DIR/NAME's extended key usage flags and whether its SANs name the route name (the
 * administrator's name: ret_admin, may be NULL). */
static void cert_props_admin(const char *dir, const char *name, uint32_t *ret_xku, bool *ret_route, bool *ret_admin);
static void cert_props(const char *dir, const char *name, uint32_t *ret_xku, bool *ret_route) {
        cert_props_admin(dir, name, ret_xku, ret_route, NULL);
}
static void cert_props_admin(const char *dir, const char *name, uint32_t *ret_xku, bool *ret_route, bool *ret_admin) {
        g_autofree char *p = g_strdup_printf("%s/%s", dir, name);
        FILE *f = fopen(p, "re");
        g_assert_nonnull(f);
        X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
        fclose(f);
        g_assert_nonnull(x);
        *ret_xku = X509_get_extended_key_usage(x);
        *ret_route = X509_check_host(x, CON_MESH_ROUTE_NAME, 0, X509_CHECK_FLAG_NO_WILDCARDS, NULL) == 1;
        if (ret_admin)
                *ret_admin = X509_check_host(x, CON_MESH_ADMIN_NAME, 0, X509_CHECK_FLAG_NO_WILDCARDS, NULL) == 1;
        X509_free(x);
}

/* The list of hosts server-config records for con mesh streams. */
static void test_hosts(void) {
        char *hosts[] = { (char *) "host-a", (char *) "host-b", NULL };
        _cleanup_free_ char *t = NULL;
        _cleanup_strv_free_ char **back = NULL;

        g_assert_cmpint(con_mesh_hosts_format(hosts, &t), ==, 0);
        g_assert_cmpstr(t, ==, "host-a\nhost-b\n");
        g_assert_cmpint(con_mesh_hosts_parse(t, &back), ==, 0);
        g_assert_true(strv_equal(back, hosts));
        back = strv_free(back);
        g_assert_cmpint(con_mesh_hosts_parse("\nhost-a\n\nhost-b", &back), ==, 0);      /* empty lines, no last \n */
        g_assert_true(strv_equal(back, hosts));
        back = strv_free(back);
        g_assert_cmpint(con_mesh_hosts_parse("", &back), ==, 0);
        g_assert_null(back);
        const char *bad[] = { "host-a\nhost-a\n", "Host-a\n", "host-a \n", "host.a\n", "-a\n",
                              CON_MESH_ADMIN_NAME "\n", "host-a\r\n" };
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
                g_assert_cmpint(con_mesh_hosts_parse(bad[i], &back), ==, -EBADMSG);
        char *invalid[] = { (char *) "host a", NULL };
        free(t);
        t = NULL;
        g_assert_cmpint(con_mesh_hosts_format(invalid, &t), ==, -EINVAL);
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

        /* The administrator: its reserved name (no host's), client authentication only. */
        bool admin;
        g_assert_false(con_mesh_host_valid(CON_MESH_ADMIN_NAME));
        g_assert_cmpint(con_mesh_issue(ca, CON_MESH_CERT_ADMIN, CON_MESH_ADMIN_NAME, NULL, ca, "admin"), ==, 0);
        cert_props_admin(ca, "admin.crt", &xku, &route, &admin);
        g_assert_true(admin);
        g_assert_true(xku & XKU_SSL_CLIENT);
        g_assert_false(xku & XKU_SSL_SERVER);
        g_assert_false(route);
        g_assert_cmpint(con_mesh_issue(ca, CON_MESH_CERT_ADMIN, CON_MESH_ADMIN_NAME, NULL, ca, "admin"), ==, -EEXIST);
        g_assert_cmpint(con_mesh_issue(ca, CON_MESH_CERT_ADMIN, "host-a", NULL, ca, "admin2"), ==, -EINVAL);
        g_assert_cmpint(con_mesh_issue(ca, CON_MESH_CERT_HOST, CON_MESH_ADMIN_NAME, NULL, ca, "admin3"), ==, -EINVAL);
        cert_props_admin(host, "host.crt", &xku, &route, &admin);
        g_assert_false(admin);
        cert_props_admin(srv, "server.crt", &xku, &route, &admin);
        g_assert_false(admin);
        /* The server's certificate may not carry it (it would map to the administrator). */
        char *admin_san[] = { (char *) "ADMIN.con-mesh.invalid", NULL };
        g_assert_cmpint(con_mesh_issue(ca, CON_MESH_CERT_SERVER, "server", admin_san, tmp, "srv2"), ==, -EINVAL);
        test_tmpdir_remove(tmp);
}

static void test_server_config(void) {
        char *hosts[] = { (char *) "host-a", (char *) "host-b", NULL };
        char *routes[] = { (char *) "10.0.0.1:6222", (char *) "10.0.0.3:6222", NULL };
        char *none[] = { NULL };
        _cleanup_free_ char *c = NULL;

        g_assert_cmpint(con_mesh_server_config(hosts, "10.0.0.2:4222", "/js", "/tls", NULL, NULL, &c), ==, 0);
        g_assert_null(strstr(c, "cluster {"));
        /* No host may make, change or remove a stream; the administrator may, the mesh's only. */
        const char *adm = strstr(c, "user: \"" CON_MESH_ADMIN_NAME "\"");
        g_assert_nonnull(adm);
        g_autofree char *users = g_strndup(c, (size_t) (adm - c));
        g_assert_null(strstr(users, "$JS.API.STREAM.CREATE"));
        g_assert_null(strstr(users, "$JS.API.STREAM.UPDATE"));
        g_assert_null(strstr(users, "$JS.API.STREAM.DELETE"));
        g_assert_nonnull(strstr(users, "\"$JS.API.CONSUMER.DURABLE.CREATE.con-task-host-a.con-meshd\""));
        const char *ops[] = { "CREATE", "UPDATE", "DELETE", "INFO" };
        for (size_t i = 0; i < G_N_ELEMENTS(ops); i++) {
                g_autofree char *st = g_strdup_printf("\"$JS.API.STREAM.%s.con-state\", "
                                                      "\"$JS.API.STREAM.%s.con-task-host-a\", "
                                                      "\"$JS.API.STREAM.%s.con-result-host-a\", "
                                                      "\"$JS.API.STREAM.%s.con-task-host-b\", "
                                                      "\"$JS.API.STREAM.%s.con-result-host-b\"",
                                                      ops[i], ops[i], ops[i], ops[i], ops[i]);
                g_assert_nonnull(strstr(adm, st));
        }
        g_assert_null(strstr(adm, "STREAM.CREATE.*"));
        g_assert_null(strstr(adm, "\"con."));          /* no subject of the mesh */
        g_assert_null(strstr(adm, "CONSUMER"));
        g_assert_nonnull(strstr(adm, "subscribe: { allow: [\"" CON_MESH_ADMIN_INBOX ".>\"] }"));
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

/* A self-signed certificate CN=host-a, DNS:host-a, without an extended key usage: no client
 * certificate of the mesh (made with OpenSSL directly; con mesh makes none such). */
static char *plain_cert(void) {
        EVP_PKEY *k = EVP_EC_gen("P-256");
        X509 *x = X509_new();
        BIO *b = BIO_new(BIO_s_mem());
        g_assert_true(k && x && b);
        g_assert_true(X509_set_version(x, 2) && ASN1_INTEGER_set(X509_get_serialNumber(x), 7));
        g_assert_true(X509_gmtime_adj(X509_getm_notBefore(x), -60) && X509_gmtime_adj(X509_getm_notAfter(x), 86400));
        g_assert_true(X509_set_pubkey(x, k));
        X509_NAME *n = X509_get_subject_name(x);
        g_assert_true(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *) "host-a", -1, -1, 0));
        g_assert_true(X509_set_issuer_name(x, n));
        X509V3_CTX ctx;
        X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, "DNS:host-a");
        g_assert_nonnull(e);
        g_assert_true(X509_add_ext(x, e, -1));
        X509_EXTENSION_free(e);
        g_assert_true(X509_sign(x, k, EVP_sha256()));
        g_assert_true(PEM_write_bio_X509(b, x));
        char *data;
        long len = BIO_get_mem_data(b, &data);
        char *s = g_strndup(data, (size_t) len);
        BIO_free(b);
        X509_free(x);
        EVP_PKEY_free(k);
        return s;
}

/* This host's certificate as con bootstrap checks it: name, CA, key, dates. */
static void test_check(void) {
        g_autofree char *tmp = test_tmpdir_new();
        g_autofree char *ca = g_strdup_printf("%s/ca", tmp), *rogue = g_strdup_printf("%s/rogue", tmp);
        char *key = NULL, *crt = NULL, *capem = NULL, *rkey = NULL, *rcrt = NULL, *rcapem = NULL, *name = NULL;
        char *again = NULL, *crt2 = NULL, *capem2 = NULL;
        time_t now = time(NULL), end = 0;
        const time_t day = 24 * 3600;

        g_assert_cmpint(con_mesh_ca_init(ca), ==, 0);
        g_assert_cmpint(con_mesh_ca_init(rogue), ==, 0);
        time_t issued_before = time(NULL);
        g_assert_cmpint(con_mesh_issue_host_pem(ca, "host-a", NULL, &key, &crt, &capem), ==, 0);
        time_t issued_after = time(NULL);
        g_assert_nonnull(strstr(key, "PRIVATE KEY"));
        g_assert_cmpint(con_mesh_issue_host_pem(rogue, "host-a", NULL, &rkey, &rcrt, &rcapem), ==, 0);
        g_assert_cmpint(con_mesh_issue_host_pem(ca, "Host_A", NULL, &again, &crt2, &capem2), ==, -EINVAL);
        g_assert_cmpint(con_mesh_issue_host_pem(tmp, "host-a", NULL, &again, &crt2, &capem2), ==, -ENOENT);

#define CHECK(c, k, a, h, t, want) do {                                                         \
                g_assert_cmpint(con_mesh_check_host_cert(c, k, a, h, t, &name, &end), ==, want); \
                free(name);                                                                     \
                name = NULL;                                                                    \
        } while (0)
        CHECK(crt, key, capem, "host-a", now, CON_MESH_CERT_OK);
        CHECK(crt, NULL, capem, "host-a", now, CON_MESH_CERT_OK);
        g_assert_cmpint(con_mesh_check_host_cert(crt, key, capem, "host-b", now, &name, &end), ==,
                        CON_MESH_CERT_WRONG_HOST);
        g_assert_cmpstr(name, ==, "host-a");    /* for the message */
        /* Valid for CON_MESH_CERT_DAYS from its issue (bounded by the clock read on either side of
         * it: under load the issue may end seconds after now was read). */
        g_assert_cmpint(end, >=, issued_before + CON_MESH_CERT_DAYS * day);
        g_assert_cmpint(end, <=, issued_after + CON_MESH_CERT_DAYS * day);
        free(name);
        name = NULL;
        CHECK(rcrt, rkey, capem, "host-a", now, CON_MESH_CERT_OTHER_CA);
        CHECK(crt, key, rcapem, "host-a", now, CON_MESH_CERT_OTHER_CA);
        CHECK(crt, rkey, capem, "host-a", now, CON_MESH_CERT_WRONG_KEY);
        CHECK(crt, "junk", capem, "host-a", now, CON_MESH_CERT_KEY_UNREADABLE);
        CHECK(crt, key, "junk", "host-a", now, CON_MESH_CERT_CA_UNREADABLE);
        CHECK("junk", key, capem, "host-a", now, CON_MESH_CERT_UNREADABLE);
        CHECK(capem, key, capem, "host-a", now, CON_MESH_CERT_WRONG_HOST);     /* the CA's own */
        g_autofree char *plain = plain_cert();
        CHECK(plain, NULL, plain, "host-a", now, CON_MESH_CERT_NOT_CLIENT);
        CHECK(crt, key, capem, "host-a", now + (CON_MESH_CERT_DAYS - CON_MESH_CERT_RENEW_DAYS - 2) * day,
              CON_MESH_CERT_OK);
        CHECK(crt, key, capem, "host-a", now + (CON_MESH_CERT_DAYS - CON_MESH_CERT_RENEW_DAYS + 1) * day,
              CON_MESH_CERT_EXPIRING);
        CHECK(crt, key, capem, "host-a", now + (CON_MESH_CERT_DAYS + 1) * day, CON_MESH_CERT_EXPIRED);

        /* A new certificate for the same key (what bootstrap does on the CA's host when only the
         * certificate is missing): no new key. */
        g_assert_cmpint(con_mesh_issue_host_pem(ca, "host-a", key, &again, &crt2, &capem2), ==, 0);
        g_assert_null(again);
        g_assert_cmpstr(capem2, ==, capem);
        CHECK(crt2, key, capem, "host-a", now, CON_MESH_CERT_OK);
        g_assert_cmpint(con_mesh_issue_host_pem(ca, "host-a", "junk", &again, &crt2, &capem2), ==, -EBADMSG);

        con_mesh_pem_erase(key);
        con_mesh_pem_erase(rkey);
        free(crt);
        free(capem);
        free(rcrt);
        free(rcapem);
        free(crt2);
        free(capem2);
        test_tmpdir_remove(tmp);
}

/* A request made with OpenSSL directly, subject CN=CN (NULL: none). */
static char *foreign_csr(const char *cn) {
        EVP_PKEY *k = EVP_EC_gen("P-256");
        X509_REQ *req = X509_REQ_new();
        BIO *b = BIO_new(BIO_s_mem());
        g_assert_true(k && req && b);
        g_assert_true(X509_REQ_set_pubkey(req, k));
        if (cn)
                g_assert_true(X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN", MBSTRING_UTF8,
                                                         (const unsigned char *) cn, -1, -1, 0));
        g_assert_true(X509_REQ_sign(req, k, EVP_sha256()));
        g_assert_true(PEM_write_bio_X509_REQ(b, req));
        char *data;
        long n = BIO_get_mem_data(b, &data);
        char *s = g_strndup(data, (size_t) n);
        BIO_free(b);
        X509_REQ_free(req);
        EVP_PKEY_free(k);
        return s;
}

/* The key and request of a host without the CA, and con mesh sign. */
static void test_csr(void) {
        g_autofree char *tmp = test_tmpdir_new();
        g_autofree char *ca = g_strdup_printf("%s/ca", tmp);
        char *key = NULL, *csr = NULL, *host = NULL, *crt = NULL, *name = NULL, *none = NULL, *csr2 = NULL;
        g_autofree char *capem = NULL;
        time_t end;

        g_assert_cmpint(con_mesh_ca_init(ca), ==, 0);
        g_autofree char *cafile = g_strdup_printf("%s/ca.crt", ca);
        g_assert_true(g_file_get_contents(cafile, &capem, NULL, NULL));
        g_assert_cmpint(con_mesh_csr_new("Host_B", NULL, &key, &csr), ==, -EINVAL);
        g_assert_cmpint(con_mesh_csr_new("host-b", NULL, &key, &csr), ==, 0);
        g_assert_nonnull(strstr(key, "PRIVATE KEY"));
        g_assert_nonnull(strstr(csr, "CERTIFICATE REQUEST"));
        g_assert_null(strstr(csr, "PRIVATE"));
        g_assert_cmpint(con_mesh_csr_matches(csr, key, "host-b"), ==, 1);
        g_assert_cmpint(con_mesh_csr_matches(csr, key, "host-c"), ==, 0);
        /* The same key again: no new key. */
        g_assert_cmpint(con_mesh_csr_new("host-b", key, &none, &csr2), ==, 0);
        g_assert_null(none);
        g_assert_cmpint(con_mesh_csr_matches(csr2, key, "host-b"), ==, 1);

        g_assert_cmpint(con_mesh_sign_csr(ca, csr, strlen(csr), &host, &crt), ==, 0);
        g_assert_cmpstr(host, ==, "host-b");
        g_assert_cmpint(con_mesh_check_host_cert(crt, key, capem, "host-b", time(NULL), &name, &end), ==,
                        CON_MESH_CERT_OK);
        free(name);
        free(host);
        free(crt);
        host = crt = NULL;

        /* Refused: not a request, a broken signature, no CN, a CN that is no host name, no CA. */
        g_assert_cmpint(con_mesh_sign_csr(ca, "junk", 4, &host, &crt), ==, -EBADMSG);
        g_assert_null(host);
        g_autofree char *broken = g_strdup(csr);
        char *mid = broken + strlen("-----BEGIN CERTIFICATE REQUEST-----\n") + 150;
        *mid = *mid == 'A' ? 'B' : 'A';
        g_assert_cmpint(con_mesh_sign_csr(ca, broken, strlen(broken), &host, &crt), ==, -EBADMSG);
        g_autofree char *nocn = foreign_csr(NULL), *dotted = foreign_csr("nats.example.com"),
                        *good = foreign_csr("host-c");
        g_assert_cmpint(con_mesh_sign_csr(ca, nocn, strlen(nocn), &host, &crt), ==, -EINVAL);
        g_assert_null(host);
        g_assert_cmpint(con_mesh_sign_csr(ca, dotted, strlen(dotted), &host, &crt), ==, -EINVAL);
        g_assert_cmpstr(host, ==, "nats.example.com");
        free(host);
        host = NULL;
        g_assert_cmpint(con_mesh_sign_csr(tmp, good, strlen(good), &host, &crt), ==, -ENOENT);
        free(host);
        host = NULL;
        g_assert_cmpint(con_mesh_sign_csr(ca, good, strlen(good), &host, &crt), ==, 0);
        g_assert_cmpstr(host, ==, "host-c");
        free(host);
        free(crt);

        con_mesh_pem_erase(key);
        free(csr);
        free(csr2);
        test_tmpdir_remove(tmp);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/mesh-pki/certs", test_certs);
        g_test_add_func("/mesh-pki/hosts", test_hosts);
        g_test_add_func("/mesh-pki/server-config", test_server_config);
        g_test_add_func("/mesh-pki/check", test_check);
        g_test_add_func("/mesh-pki/csr", test_csr);
        return con_test_run();
}
