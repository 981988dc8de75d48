/* SPDX-License-Identifier: MIT */
/* con mesh init | issue | sign | server-config | streams: the mesh's credentials and streams
 * (docs/MULTIHOST.md, "Identity", "Who makes the streams"); con mesh status is con-mesh.c. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "con-paths.h"
#include "con.h"
#include "config.h"
#include "error-detail.h"
#include "fileio.h"
#include "macro.h"
#include "mesh-pki.h"
#include "names.h"
#include "strv.h"
#include "time-util.h"
#include "units.h"

void con_mesh_pki_help(FILE *f) {
        fputs("       con mesh init [--ca-dir DIR]\n"
              "       con mesh issue HOST [--ca-dir DIR] [--out DIR]\n"
              "       con mesh issue --admin [--ca-dir DIR]\n"
              "       con mesh sign CSR [--ca-dir DIR] [--out FILE]\n"
              "       con mesh server-config --listen ADDR:PORT [--address ADDR]... [--store DIR]\n"
              "                              [--tls-dir DIR] [--out DIR]\n"
              "                              [--cluster-listen ADDR:PORT [--route ADDR:PORT]...] HOST...\n"
              "       con mesh streams [--check | --replace] [--server URL]... [--retention DURATION]\n"
              "                        [--replicas N] [--max-bytes SIZE] [--max-per-host N]\n"
              "                        [--config FILE] [--ca-dir DIR] [HOST...]\n"
              "\n"
              "  init           make the mesh's certificate authority in DIR (default " CON_MESH_CA_DIR "):\n"
              "                 ca.key (0600, keep it on this host only) and ca.crt; once per mesh; and\n"
              "                 the administrator's credentials, DIR/admin.key (0600) and DIR/admin.crt\n"
              "  issue          HOST's TLS client certificate: DIR/host.key, DIR/host.crt and DIR/ca.crt\n"
              "                 (default DIR ./mesh-HOST); copy the folder to HOST's " CON_MESH_TLS_DIR "/,\n"
              "                 where con bootstrap gives the key to the gateway's user only (con bootstrap\n"
              "                 does this itself on the CA's host); --admin: the administrator's credentials\n"
              "                 (" CON_MESH_ADMIN_NAME ") in DIR, for a CA made before they existed\n"
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
              "                 a node without a server certificate of the mesh's CA cannot join;\n"
              "                 it also records the hosts in DIR/hosts (the CA's folder) for streams\n"
              "  streams        make every host's task and result streams and con-state in JetStream,\n"
              "                 exactly as the mesh needs them, with the administrator's credentials\n"
              "                 (hosts may not make or change streams): missing ones made, settings\n"
              "                 changed (max age --retention, default mesh.retention of this host's\n"
              "                 con.yaml or 7d; --replicas, default mesh.replicas or 1; the task and\n"
              "                 result streams' bytes --max-bytes, default mesh.stream_max_bytes or 128MiB,\n"
              "                 and messages of one sending host --max-per-host, default\n"
              "                 mesh.stream_max_per_host or 10000: full, a new one is refused,\n"
              "                 none stored is dropped), a stream that is\n"
              "                 not the mesh's (sources, a mirror, other subjects...) reported, or with\n"
              "                 --replace removed (with its messages) and made anew; --check changes\n"
              "                 nothing. HOST...: default the hosts server-config recorded; --server:\n"
              "                 default mesh.servers of this host's con.yaml (--config)\n",
              f);
}

static int fail_errno(int r, const char *what, const char *where) {
        if (r == -EEXIST)
                return con_fail(CON_EXIT_FAILURE, "mesh: %s: %s already exists; refusing to overwrite it", what, where);
        if (r == -EINVAL)
                return con_fail(CON_EXIT_USAGE, "mesh: %s: invalid name or address", what);
        return con_fail(CON_EXIT_FAILURE, "mesh: %s in %s: %s", what, where, strerror(-r));
}

static int mesh_issue_admin(const char *ca_dir) {
        int r = con_mesh_issue(ca_dir, CON_MESH_CERT_ADMIN, CON_MESH_ADMIN_NAME, NULL, ca_dir, "admin");
        if (r == -ENOENT)
                return con_fail(CON_EXIT_FAILURE, "mesh issue: no CA in %s; make it first with con mesh init", ca_dir);
        if (r < 0)
                return fail_errno(r, "cannot issue the administrator's certificate", ca_dir);
        printf("%s/admin.key, %s/admin.crt: the mesh's administrator (con mesh streams); keep them here\n", ca_dir,
               ca_dir);
        return CON_EXIT_OK;
}

static int mesh_init(const char *ca_dir) {
        int r = con_mesh_ca_init(ca_dir);
        if (r < 0)
                return fail_errno(r, "cannot make the CA", ca_dir);
        printf("mesh CA made: %s/ca.crt (key %s/ca.key: keep it here)\n", ca_dir, ca_dir);
        return mesh_issue_admin(ca_dir);
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
        /* The hosts, for con mesh streams (the one list of them the CA's host keeps). */
        _cleanup_free_ char *list = NULL, *hosts_path = NULL;
        if (con_mesh_hosts_format(hosts, &list) < 0 || asprintf(&hosts_path, "%s/hosts", ca_dir) < 0)
                return con_fail(CON_EXIT_FAILURE, "mesh server-config: out of memory");
        r = write_file_atomic(hosts_path, list, strlen(list), 0644, (uid_t) -1, (gid_t) -1);
        if (r < 0)
                return fail_errno(r, "cannot write", hosts_path);
        return CON_EXIT_OK;
}

typedef struct StreamsArgs {
        bool check, replace;
        char **servers;
        const char *retention, *replicas, *max_bytes, *max_per_host, *config;
} StreamsArgs;

/* con mesh streams: finds the credentials, the hosts, the servers and the settings, then runs
 * con-mesh-streams (services/meshd: the NATS side) with them. */
static int mesh_streams(const char *ca_dir, const StreamsArgs *a, char **args) {
        _cleanup_(con_config_freep) ConConfig *config = NULL;
        _cleanup_strv_free_ char **hosts = NULL, **argv = NULL;
        _cleanup_free_ char *ca = NULL, *cert = NULL, *key = NULL, *hosts_path = NULL, *text = NULL;
        uint64_t retention_usec = CON_MESH_RETENTION_DEFAULT_USEC;
        unsigned replicas = 1;
        uint64_t max_bytes = CON_MESH_STREAM_MAX_BYTES_DEFAULT;
        unsigned max_per_host = CON_MESH_STREAM_MAX_PER_HOST_DEFAULT;
        char * const *servers = a->servers;
        _cleanup_(con_error_detail_done) ConErrorDetail e = {};
        size_t len;
        int r;

        if (a->check && a->replace)
                return con_fail(CON_EXIT_USAGE, "mesh streams: --check changes nothing; not with --replace");
        /* This host's mesh: section, when it has one, gives the defaults. */
        r = con_config_load(a->config ?: CON_CONFIG_PATH, &config, &e);
        if (r < 0 && a->config)
                return con_fail(CON_EXIT_CONFIG, "mesh streams: %s: %s", a->config, strempty(e.message));
        con_error_detail_done(&e);
        if (config && config->mesh.enabled) {
                retention_usec = config->mesh.retention_usec;
                replicas = config->mesh.replicas;
                max_bytes = config->mesh.stream_max_bytes;
                max_per_host = config->mesh.stream_max_per_host;
                if (!servers)
                        servers = config->mesh.servers;
        }
        if (a->retention && (con_parse_duration(a->retention, &retention_usec) < 0 || retention_usec < USEC_PER_SEC ||
                             retention_usec > CON_MESH_RETENTION_MAX_USEC))
                return con_fail(CON_EXIT_USAGE, "mesh streams: --retention '%s' is not a duration from 1s to %llud "
                                "(7d, 12h, 30m...)", a->retention,
                                CON_MESH_RETENTION_MAX_USEC / (24ULL * 3600 * USEC_PER_SEC));
        if (a->replicas) {
                char *end = NULL;
                unsigned long n = strtoul(a->replicas, &end, 10);
                if (!*a->replicas || *end || n < 1 || n > CON_MESH_REPLICAS_MAX)
                        return con_fail(CON_EXIT_USAGE, "mesh streams: --replicas '%s' is not 1 to %u", a->replicas,
                                        CON_MESH_REPLICAS_MAX);
                replicas = (unsigned) n;
        }
        if (a->max_bytes && (con_parse_size(a->max_bytes, &max_bytes) < 0 || max_bytes < CON_MESH_STREAM_MAX_BYTES_MIN ||
                             max_bytes > CON_MESH_STREAM_MAX_BYTES_MAX))
                return con_fail(CON_EXIT_USAGE, "mesh streams: --max-bytes '%s' is not a size from 4MiB to 1TiB "
                                "(512MiB, 1GiB, 10G...)", a->max_bytes);
        if (a->max_per_host) {
                char *end = NULL;
                unsigned long n = strtoul(a->max_per_host, &end, 10);
                if (!*a->max_per_host || *end || *a->max_per_host == '-' || n < 1 || n > CON_MESH_STREAM_MAX_PER_HOST_MAX)
                        return con_fail(CON_EXIT_USAGE, "mesh streams: --max-per-host '%s' is not 1 to %u",
                                        a->max_per_host, CON_MESH_STREAM_MAX_PER_HOST_MAX);
                max_per_host = (unsigned) n;
        }
        if (!servers || !servers[0])
                return con_fail(CON_EXIT_USAGE, "mesh streams: name the NATS server (--server tls://ADDR:PORT; "
                                "default mesh.servers of this host's con.yaml, which has none)");
        if (args && args[0]) {
                STRV_FOREACH(h, args)
                        if (!con_mesh_host_valid(*h))
                                return con_fail(CON_EXIT_USAGE, "mesh streams: '%s' is not a valid host name", *h);
                if (strv_copy(args, &hosts) < 0)
                        return con_fail(CON_EXIT_FAILURE, "mesh streams: out of memory");
        } else {
                if (asprintf(&hosts_path, "%s/hosts", ca_dir) < 0)
                        return con_fail(CON_EXIT_FAILURE, "mesh streams: out of memory");
                _cleanup_close_ int fd = open(hosts_path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
                r = fd < 0 ? -errno : read_fd(fd, 1U << 20, &text, &len);
                if (r == -ENOENT)
                        return con_fail(CON_EXIT_USAGE, "mesh streams: no list of hosts in %s (con mesh server-config "
                                        "writes it); name them: con mesh streams HOST...", hosts_path);
                if (r < 0)
                        return con_fail(CON_EXIT_FAILURE, "mesh streams: cannot read %s: %s", hosts_path, strerror(-r));
                if (strlen(text) != len || con_mesh_hosts_parse(text, &hosts) < 0 || !hosts)
                        return con_fail(CON_EXIT_FAILURE, "mesh streams: %s is not a list of host names, one a line",
                                        hosts_path);
        }
        /* Plaintext (nats://, a mesh with insecure: true: anybody may do anything there) without
         * credentials; TLS with the administrator's. */
        bool plain = true;
        STRV_FOREACH(u, (char **) servers)
                plain = plain && startswith(*u, "nats://");
        if (asprintf(&ca, "%s/ca.crt", ca_dir) < 0 || asprintf(&cert, "%s/admin.crt", ca_dir) < 0 ||
            asprintf(&key, "%s/admin.key", ca_dir) < 0)
                return con_fail(CON_EXIT_FAILURE, "mesh streams: out of memory");
        if (!plain && (access(cert, R_OK) < 0 || access(key, R_OK) < 0))
                return con_fail(CON_EXIT_FAILURE, "mesh streams: cannot read the administrator's credentials %s and "
                                "%s (%m); on the CA's host, as root; a CA made before them gets them with con mesh "
                                "issue --admin (and con mesh server-config again)", cert, key);
        r = strv_extend(&argv, CON_LIBEXECDIR "/con-mesh-streams");
        if (r >= 0 && !plain)
                r = strv_extendf(&argv, "--ca=%s", ca);
        if (r >= 0 && !plain)
                r = strv_extendf(&argv, "--cert=%s", cert);
        if (r >= 0 && !plain)
                r = strv_extendf(&argv, "--key=%s", key);
        if (r >= 0)
                r = strv_extend(&argv, "--inbox=" CON_MESH_ADMIN_INBOX);
        STRV_FOREACH(u, (char **) servers)
                if (r >= 0)
                        r = strv_extendf(&argv, "--server=%s", *u);
        if (r >= 0)
                r = strv_extendf(&argv, "--retention-usec=%" PRIu64, retention_usec);
        if (r >= 0)
                r = strv_extendf(&argv, "--replicas=%u", replicas);
        if (r >= 0)
                r = strv_extendf(&argv, "--max-bytes=%" PRIu64, max_bytes);
        if (r >= 0)
                r = strv_extendf(&argv, "--max-per-host=%u", max_per_host);
        if (r >= 0 && a->check)
                r = strv_extend(&argv, "--check");
        if (r >= 0 && a->replace)
                r = strv_extend(&argv, "--replace");
        if (r >= 0)
                r = strv_extend(&argv, "--");
        STRV_FOREACH(h, hosts)
                if (r >= 0)
                        r = strv_extend(&argv, *h);
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "mesh streams: out of memory");
        fflush(stdout);
        execv(argv[0], argv);
        return con_fail(CON_EXIT_FAILURE, "mesh streams: cannot run %s: %m", argv[0]);
}

bool con_mesh_pki_subcommand(const char *sub) {
        return streq(sub, "init") || streq(sub, "issue") || streq(sub, "sign") || streq(sub, "server-config") ||
                streq(sub, "streams");
}

int con_mesh_pki(int argc, char *argv[]) {
        enum { ARG_CA_DIR = 0x100, ARG_OUT, ARG_LISTEN, ARG_ADDRESS, ARG_STORE, ARG_TLS_DIR, ARG_CLUSTER_LISTEN, ARG_ROUTE,
               ARG_ADMIN, ARG_CHECK, ARG_REPLACE, ARG_SERVER, ARG_RETENTION, ARG_REPLICAS, ARG_CONFIG,
               ARG_MAX_BYTES, ARG_MAX_PER_HOST };
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
                { "admin", no_argument, NULL, ARG_ADMIN },
                { "check", no_argument, NULL, ARG_CHECK },
                { "replace", no_argument, NULL, ARG_REPLACE },
                { "server", required_argument, NULL, ARG_SERVER },
                { "retention", required_argument, NULL, ARG_RETENTION },
                { "replicas", required_argument, NULL, ARG_REPLICAS },
                { "max-bytes", required_argument, NULL, ARG_MAX_BYTES },
                { "max-per-host", required_argument, NULL, ARG_MAX_PER_HOST },
                { "config", required_argument, NULL, ARG_CONFIG },
                {}
        };
        _cleanup_strv_free_ char **addresses = NULL, **routes = NULL, **servers = NULL;
        StreamsArgs sa = {};
        bool admin = false;
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
                case ARG_ADMIN:
                        admin = true;
                        break;
                case ARG_CHECK:
                        sa.check = true;
                        break;
                case ARG_REPLACE:
                        sa.replace = true;
                        break;
                case ARG_SERVER:
                        if (strv_extend(&servers, optarg) < 0)
                                return con_fail(CON_EXIT_FAILURE, "mesh: out of memory");
                        break;
                case ARG_RETENTION:
                        sa.retention = optarg;
                        break;
                case ARG_REPLICAS:
                        sa.replicas = optarg;
                        break;
                case ARG_MAX_BYTES:
                        sa.max_bytes = optarg;
                        break;
                case ARG_MAX_PER_HOST:
                        sa.max_per_host = optarg;
                        break;
                case ARG_CONFIG:
                        sa.config = optarg;
                        break;
                default:
                        return CON_EXIT_USAGE;
                }
        if (optind >= argc)
                return con_fail(CON_EXIT_USAGE, "mesh: missing subcommand: init, issue, sign, server-config or "
                                "streams (see 'con mesh --help')");
        const char *sub = argv[optind++];
        char **args = argv + optind;
        size_t n_args = (size_t) (argc - optind);

        if (streq(sub, "init")) {
                if (n_args > 0)
                        return con_fail(CON_EXIT_USAGE, "mesh init: unexpected argument '%s'", args[0]);
                return mesh_init(ca_dir);
        }
        if (streq(sub, "issue") && admin) {
                if (n_args > 0)
                        return con_fail(CON_EXIT_USAGE, "mesh issue --admin: unexpected argument '%s'", args[0]);
                return mesh_issue_admin(ca_dir);
        }
        if (streq(sub, "streams")) {
                sa.servers = servers;
                return mesh_streams(ca_dir, &sa, args);
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
        return con_fail(CON_EXIT_USAGE, "mesh: unknown subcommand '%s': init, issue, sign, server-config or streams",
                        sub);
}
