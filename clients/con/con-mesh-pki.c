/* SPDX-License-Identifier: MIT */
/* con mesh init | issue | sign | server-config: the mesh's credentials (docs/MULTIHOST.md, "Identity");
 * con mesh status is con-mesh.c. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "con.h"
#include "config.h"
#include "fileio.h"
#include "macro.h"
#include "mesh-pki.h"
#include "names.h"
#include "strv.h"

void con_mesh_pki_help(FILE *f) {
        fputs("       con mesh init [--ca-dir DIR]\n"
              "       con mesh issue HOST [--ca-dir DIR] [--out DIR]\n"
              "       con mesh sign CSR [--ca-dir DIR] [--out FILE]\n"
              "       con mesh server-config --listen ADDR:PORT [--address ADDR]... [--store DIR]\n"
              "                              [--tls-dir DIR] [--out DIR]\n"
              "                              [--cluster-listen ADDR:PORT [--route ADDR:PORT]...] HOST...\n"
              "\n"
              "  init           make the mesh's certificate authority in DIR (default " CON_MESH_CA_DIR "):\n"
              "                 ca.key (0600, keep it on this host only) and ca.crt; once per mesh\n"
              "  issue          HOST's TLS client certificate: DIR/host.key, DIR/host.crt and DIR/ca.crt\n"
              "                 (default DIR ./mesh-HOST); copy the folder to HOST's " CON_MESH_TLS_DIR "/,\n"
              "                 where con bootstrap gives the key to the gateway's user only (con bootstrap\n"
              "                 does this itself on the CA's host)\n"
              "  sign           the certificate of the host named in CSR, the signing request con bootstrap\n"
              "                 wrote on a host without the CA (" CON_MESH_TLS_DIR "/host.csr): the same\n"
              "                 certificate as issue's, for the host's own key; written to FILE (default\n"
              "                 ./HOST.crt); copy it and DIR/ca.crt to HOST's " CON_MESH_TLS_DIR "/\n"
              "  server-config  the NATS server's certificate (DIR/server.key, DIR/server.crt, with the\n"
              "                 --address names and IP addresses, default the --listen host) and DIR/nats.conf\n"
              "                 (default DIR ./mesh-server): TLS required, verify_and_map, one user per HOST\n"
              "                 allowed to publish only under its own name; run\n"
              "                 nats-server -c DIR/nats.conf (--tls-dir: where DIR will be on the server,\n"
              "                 default the --out folder; --store: JetStream's folder, default /var/lib/nats);\n"
              "                 --cluster-listen: a node of a cluster \"con\" whose routes (--route, the\n"
              "                 other nodes' ADDR:PORT) use TLS with this certificate, verified both ways:\n"
              "                 a node without a server certificate of the mesh's CA cannot join\n",
              f);
}

static int fail_errno(int r, const char *what, const char *where) {
        if (r == -EEXIST)
                return con_fail(CON_EXIT_FAILURE, "mesh: %s: %s already exists; refusing to overwrite it", what, where);
        if (r == -EINVAL)
                return con_fail(CON_EXIT_USAGE, "mesh: %s: invalid name or address", what);
        return con_fail(CON_EXIT_FAILURE, "mesh: %s in %s: %s", what, where, strerror(-r));
}

static int mesh_init(const char *ca_dir) {
        int r = con_mesh_ca_init(ca_dir);
        if (r < 0)
                return fail_errno(r, "cannot make the CA", ca_dir);
        printf("mesh CA made: %s/ca.crt (key %s/ca.key: keep it here)\n", ca_dir, ca_dir);
        return CON_EXIT_OK;
}

static int mesh_issue(const char *ca_dir, const char *host, const char *out) {
        _cleanup_free_ char *def = NULL;
        if (!con_mesh_host_valid(host))
                return con_fail(CON_EXIT_USAGE, "mesh issue: '%s' is not a valid host name (a-z, 0-9 and -, "
                                "starting with a letter)", host);
        if (!out) {
                if (asprintf(&def, "mesh-%s", host) < 0)
                        return con_fail(CON_EXIT_FAILURE, "mesh issue: out of memory");
                out = def;
        }
        int r = con_mesh_issue(ca_dir, CON_MESH_CERT_HOST, host, NULL, out, "host");
        if (r == -ENOENT)
                return con_fail(CON_EXIT_FAILURE, "mesh issue: no CA in %s; make it first with con mesh init", ca_dir);
        if (r < 0)
                return fail_errno(r, "cannot issue the certificate", out);
        printf("%s/host.key, %s/host.crt, %s/ca.crt: copy them to %s's %s/\n", out, out, out, host, CON_MESH_TLS_DIR);
        return CON_EXIT_OK;
}

/* PATH made (never overwriting, never following a link) with DATA, 0644. */
static int write_file_new(const char *path, const char *data, size_t len) {
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        int r = con_write_all(fd, data, len);
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r < 0)
                (void) unlink(path);
        return r;
}

static int mesh_sign(const char *ca_dir, const char *csr_path, const char *out) {
        _cleanup_free_ char *csr = NULL, *host = NULL, *crt = NULL, *def = NULL;
        size_t len;
        int r;

        _cleanup_close_ int fd = open(csr_path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        r = fd < 0 ? -errno : read_fd(fd, 64U << 10, &csr, &len);
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "mesh sign: cannot read %s: %s", csr_path, strerror(-r));
        r = con_mesh_sign_csr(ca_dir, csr, len, &host, &crt);
        if (r == -EBADMSG)
                return con_fail(CON_EXIT_FAILURE, "mesh sign: %s is not a certificate signing request, or its "
                                "signature is wrong", csr_path);
        if (r == -EINVAL)
                return con_fail(CON_EXIT_FAILURE, "mesh sign: %s asks for '%s', not a valid host name (a-z, 0-9 "
                                "and -, starting with a letter); refusing to sign it", csr_path, strempty(host));
        if (r == -ENOENT)
                return con_fail(CON_EXIT_FAILURE, "mesh sign: no CA in %s; make it first with con mesh init", ca_dir);
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "mesh sign: cannot sign %s: %s", csr_path, strerror(-r));
        if (!out) {
                if (asprintf(&def, "%s.crt", host) < 0)
                        return con_fail(CON_EXIT_FAILURE, "mesh sign: out of memory");
                out = def;
        }
        r = write_file_new(out, crt, strlen(crt));
        if (r < 0)
                return fail_errno(r, "cannot write the certificate", out);
        printf("%s: the certificate of %s; copy it to %s's %s/host.crt and %s/ca.crt to its %s/ca.crt, then run "
               "con bootstrap there again\n", out, host, host, CON_MESH_TLS_DIR, ca_dir, CON_MESH_TLS_DIR);
        return CON_EXIT_OK;
}

static int mesh_server_config(const char *ca_dir, const char *listen, char **addresses, const char *store,
                              const char *tls_dir, const char *cluster_listen, char **routes, const char *out,
                              char **hosts) {
        _cleanup_strv_free_ char **sans = NULL;
        _cleanup_free_ char *conf = NULL, *path = NULL, *abs_out = NULL;
        int r;

        if (!listen)
                return con_fail(CON_EXIT_USAGE, "mesh server-config: --listen ADDR:PORT is required");
        const char *colon = strrchr(listen, ':');
        if (!colon || colon == listen)
                return con_fail(CON_EXIT_USAGE, "mesh server-config: --listen '%s' is not ADDR:PORT", listen);
        if (strv_length(hosts) == 0)
                return con_fail(CON_EXIT_USAGE, "mesh server-config: name the hosts of the mesh (HOST...)");
        STRV_FOREACH(h, hosts)
                if (!con_mesh_host_valid(*h))
                        return con_fail(CON_EXIT_USAGE, "mesh server-config: '%s' is not a valid host name", *h);
        if (strv_length(routes) > 0 && !cluster_listen)
                return con_fail(CON_EXIT_USAGE, "mesh server-config: --route needs --cluster-listen");
        /* Everything checked before the certificate is issued (the TLS folder is not known yet). */
        r = con_mesh_server_config(hosts, listen, store ?: "/var/lib/nats", tls_dir ?: ".", cluster_listen, routes,
                                   &conf);
        if (r == -EINVAL)
                return con_fail(CON_EXIT_USAGE, "mesh server-config: --listen, --store, --tls-dir, --cluster-listen "
                                "or --route invalid (ADDR:PORT, no quotes)");
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "mesh server-config: %s", strerror(-r));
        free(conf);
        conf = NULL;
        if (strv_length(addresses) == 0) {
                char *a = strndup(listen, (size_t) (colon - listen));
                if (!a || strv_consume(&sans, a) < 0) {
                        free(a);
                        return con_fail(CON_EXIT_FAILURE, "mesh server-config: out of memory");
                }
                addresses = sans;
        }
        if (!out)
                out = "mesh-server";
        r = con_mesh_issue(ca_dir, CON_MESH_CERT_SERVER, "ConspiracyOS mesh NATS server", addresses, out, "server");
        if (r == -ENOENT)
                return con_fail(CON_EXIT_FAILURE, "mesh server-config: no CA in %s; make it first with con mesh init",
                                ca_dir);
        if (r < 0)
                return fail_errno(r, "cannot issue the server's certificate", out);
        if (!tls_dir) {
                abs_out = realpath(out, NULL);
                if (!abs_out)
                        return con_fail(CON_EXIT_FAILURE, "mesh server-config: %s: %m", out);
                tls_dir = abs_out;
        }
        r = con_mesh_server_config(hosts, listen, store ?: "/var/lib/nats", tls_dir, cluster_listen, routes, &conf);
        if (r < 0)
                return fail_errno(r, "cannot write the server configuration", out);
        if (asprintf(&path, "%s/nats.conf", out) < 0)
                return con_fail(CON_EXIT_FAILURE, "mesh server-config: out of memory");
        r = write_file_atomic(path, conf, strlen(conf), 0644, (uid_t) -1, (gid_t) -1);
        if (r < 0)
                return fail_errno(r, "cannot write", path);
        printf("%s: nats-server -c %s (server certificate %s/server.crt)\n", path, path, out);
        return CON_EXIT_OK;
}

bool con_mesh_pki_subcommand(const char *sub) {
        return streq(sub, "init") || streq(sub, "issue") || streq(sub, "sign") || streq(sub, "server-config");
}

int con_mesh_pki(int argc, char *argv[]) {
        enum { ARG_CA_DIR = 0x100, ARG_OUT, ARG_LISTEN, ARG_ADDRESS, ARG_STORE, ARG_TLS_DIR, ARG_CLUSTER_LISTEN, ARG_ROUTE };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "ca-dir", required_argument, NULL, ARG_CA_DIR },
                { "out", required_argument, NULL, ARG_OUT },
                { "listen", required_argument, NULL, ARG_LISTEN },
                { "address", required_argument, NULL, ARG_ADDRESS },
                { "store", required_argument, NULL, ARG_STORE },
                { "tls-dir", required_argument, NULL, ARG_TLS_DIR },
                { "cluster-listen", required_argument, NULL, ARG_CLUSTER_LISTEN },
                { "route", required_argument, NULL, ARG_ROUTE },
                {}
        };
        _cleanup_strv_free_ char **addresses = NULL, **routes = NULL;
        const char *ca_dir = CON_MESH_CA_DIR, *out = NULL, *listen = NULL, *store = NULL, *tls_dir = NULL,
                   *cluster_listen = NULL;
        int c;

        optind = 1;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        con_mesh_pki_help(stdout);
                        return CON_EXIT_OK;
                case ARG_CA_DIR:
                        ca_dir = optarg;
                        break;
                case ARG_OUT:
                        out = optarg;
                        break;
                case ARG_LISTEN:
                        listen = optarg;
                        break;
                case ARG_ADDRESS:
                        if (strv_extend(&addresses, optarg) < 0)
                                return con_fail(CON_EXIT_FAILURE, "mesh: out of memory");
                        break;
                case ARG_STORE:
                        store = optarg;
                        break;
                case ARG_TLS_DIR:
                        tls_dir = optarg;
                        break;
                case ARG_CLUSTER_LISTEN:
                        cluster_listen = optarg;
                        break;
                case ARG_ROUTE:
                        if (strv_extend(&routes, optarg) < 0)
                                return con_fail(CON_EXIT_FAILURE, "mesh: out of memory");
                        break;
                default:
                        return CON_EXIT_USAGE;
                }
        if (optind >= argc)
                return con_fail(CON_EXIT_USAGE, "mesh: missing subcommand: init, issue, sign or server-config "
                                "(see 'con mesh --help')");
        const char *sub = argv[optind++];
        char **args = argv + optind;
        size_t n_args = (size_t) (argc - optind);

        if (streq(sub, "init")) {
                if (n_args > 0)
                        return con_fail(CON_EXIT_USAGE, "mesh init: unexpected argument '%s'", args[0]);
                return mesh_init(ca_dir);
        }
        if (streq(sub, "issue")) {
                if (n_args != 1)
                        return con_fail(CON_EXIT_USAGE, "mesh issue: name one host: con mesh issue HOST");
                return mesh_issue(ca_dir, args[0], out);
        }
        if (streq(sub, "sign")) {
                if (n_args != 1)
                        return con_fail(CON_EXIT_USAGE, "mesh sign: name one signing request: con mesh sign CSR");
                return mesh_sign(ca_dir, args[0], out);
        }
        if (streq(sub, "server-config"))
                return mesh_server_config(ca_dir, listen, addresses, store, tls_dir, cluster_listen, routes, out, args);
        return con_fail(CON_EXIT_USAGE, "mesh: unknown subcommand '%s': init, issue, sign or server-config", sub);
}
