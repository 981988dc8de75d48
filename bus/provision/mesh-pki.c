/* SPDX-License-Identifier: MIT */
/* The mesh's CA, certificates and nats-server configuration (mesh-pki.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "fileio.h"
#include "macro.h"
#include "mesh-pki.h"
#include "names.h"
#include "strv.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509 *, X509_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(BIGNUM *, BN_free);

/* DIR (0700) and its missing parents (0755). */
static int ensure_dir(const char *dir) {
        _cleanup_free_ char *copy = strdup(dir);
        if (!copy)
                return -ENOMEM;
        for (char *s = strchr(copy + 1, '/'); s; s = strchr(s + 1, '/')) {
                *s = 0;
                if (mkdir(copy, 0755) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return -errno;
        struct stat st;
        if (lstat(dir, &st) < 0)
                return -errno;
        return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* Creates DIR/NAME (never overwriting, never following a link) with MODE and opens it. */
static int create_file(const char *dir, const char *name, mode_t mode, FILE **ret) {
        _cleanup_free_ char *p = NULL;
        if (asprintf(&p, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
        if (fd < 0)
                return -errno;
        if (fchmod(fd, mode) < 0) {     /* whatever the umask */
                int r = -errno;
                close(fd);
                return r;
        }
        FILE *f = fdopen(fd, "w");
        if (!f) {
                int r = -errno;
                close(fd);
                return r;
        }
        *ret = f;
        return 0;
}

static int finish_file(FILE *f, bool ok) {
        int r = ok ? 0 : -EIO;
        if (fflush(f) != 0 && r == 0)
                r = -errno;
        if (r == 0 && fsync(fileno(f)) < 0)
                r = -errno;
        if (fclose(f) != 0 && r == 0)
                r = -errno;
        return r;
}

static int write_key(const char *dir, const char *name, EVP_PKEY *k) {
        FILE *f = NULL;
        int r = create_file(dir, name, 0600, &f);
        if (r < 0)
                return r;
        return finish_file(f, PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) == 1);
}

static int write_cert(const char *dir, const char *name, X509 *x) {
        FILE *f = NULL;
        int r = create_file(dir, name, 0644, &f);
        if (r < 0)
                return r;
        return finish_file(f, PEM_write_X509(f, x) == 1);
}

static int read_pem(const char *dir, const char *name, EVP_PKEY **ret_key, X509 **ret_cert) {
        _cleanup_free_ char *p = NULL;
        if (asprintf(&p, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        int fd = open(p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        _cleanup_(fclosep) FILE *f = fdopen(fd, "r");
        if (!f) {
                close(fd);
                return -ENOMEM;
        }
        if (ret_key)
                *ret_key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        else
                *ret_cert = PEM_read_X509(f, NULL, NULL, NULL);
        return (ret_key ? (void *) *ret_key : (void *) *ret_cert) ? 0 : -EBADMSG;
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value) {
        X509V3_CTX ctx;
        X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
        if (!e)
                return -EINVAL;
        int ok = X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
        return ok ? 0 : -EIO;
}

/* A new certificate for KEY, subject CN=cn, O=ConspiracyOS mesh, valid DAYS; issuer: CA (NULL:
 * itself). Extensions set by the caller; signed by the caller. */
static int new_cert(EVP_PKEY *key, const char *cn, X509 *ca, unsigned days, X509 **ret) {
        _cleanup_(X509_freep) X509 *x = X509_new();
        _cleanup_(BN_freep) BIGNUM *serial = BN_new();
        if (!x || !serial)
                return -ENOMEM;
        if (!BN_rand(serial, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
            !BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) || !X509_set_version(x, 2) ||
            !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
            !X509_gmtime_adj(X509_getm_notAfter(x), (long) days * 24 * 3600) || !X509_set_pubkey(x, key))
                return -EIO;
        X509_NAME *n = X509_get_subject_name(x);
        if (!X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, (const unsigned char *) "ConspiracyOS mesh", -1, -1, 0) ||
            !X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *) cn, -1, -1, 0) ||
            !X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : n))
                return -EIO;
        *ret = TAKE_PTR(x);
        return 0;
}

int con_mesh_ca_init(const char *dir) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;
        _cleanup_(X509_freep) X509 *x = NULL;
        _cleanup_free_ char *keypath = NULL;
        int r;

        r = ensure_dir(dir);
        if (r < 0)
                return r;
        if (asprintf(&keypath, "%s/ca.key", dir) < 0)
                return -ENOMEM;
        if (access(keypath, F_OK) == 0)
                return -EEXIST;
        k = EVP_EC_gen("P-256");
        if (!k)
                return -EIO;
        r = new_cert(k, "ConspiracyOS mesh CA", NULL, CON_MESH_CA_DAYS, &x);
        if (r < 0)
                return r;
        if ((r = add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0")) < 0 ||
            (r = add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign")) < 0 ||
            (r = add_ext(x, x, NID_subject_key_identifier, "hash")) < 0)
                return r;
        if (!X509_sign(x, k, EVP_sha256()))
                return -EIO;
        r = write_key(dir, "ca.key", k);
        if (r < 0)
                return r;
        return write_cert(dir, "ca.crt", x);
}

/* "IP:10.0.0.1,DNS:nats.example" from addresses and names; -EINVAL for anything else. */
static int san_list(char * const *sans, char **ret) {
        _cleanup_free_ char *s = NULL;
        size_t n = 0;

        STRV_FOREACH(p, sans) {
                unsigned char buf[16];
                bool ip = inet_pton(AF_INET, *p, buf) == 1 || inet_pton(AF_INET6, *p, buf) == 1;
                /* A DNS name: letters, digits, - and . only (nothing OpenSSL's parser would split). */
                if (!ip && (!**p || strlen(*p) > 253 ||
                            (*p)[strspn(*p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")]))
                        return -EINVAL;
                char *t = NULL;
                if (asprintf(&t, "%s%s%s:%s", strempty(s), s ? "," : "", ip ? "IP" : "DNS", *p) < 0)
                        return -ENOMEM;
                free(s);
                s = t;
                n++;
        }
        if (n == 0)
                return -EINVAL;
        *ret = TAKE_PTR(s);
        return 0;
}

/* OUT_DIR/ca.crt: written when missing, else it must be the same certificate. */
static int copy_ca(const char *out_dir, X509 *ca) {
        _cleanup_(X509_freep) X509 *there = NULL;
        int r = read_pem(out_dir, "ca.crt", NULL, &there);
        if (r == -ENOENT)
                return write_cert(out_dir, "ca.crt", ca);
        if (r < 0)
                return r;
        return X509_cmp(there, ca) == 0 ? 0 : -EEXIST;
}

int con_mesh_issue(const char *ca_dir, ConMeshCertKind kind, const char *name, char * const *sans,
                   const char *out_dir, const char *base) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *cakey = NULL, *k = NULL;
        _cleanup_(X509_freep) X509 *ca = NULL, *x = NULL;
        _cleanup_free_ char *san = NULL, *keyname = NULL, *crtname = NULL, *keypath = NULL, *crtpath = NULL;
        int r;

        if (kind == CON_MESH_CERT_HOST) {
                if (!con_mesh_host_valid(name) || (sans && sans[0]))
                        return -EINVAL;
                if (asprintf(&san, "DNS:%s", name) < 0)
                        return -ENOMEM;
        } else {
                if (!name || !*name || strlen(name) > 64 || strchr(name, '/'))
                        return -EINVAL;
                r = san_list(sans, &san);
                if (r < 0)
                        return r;
                char *t = NULL;
                if (asprintf(&t, "%s,DNS:" CON_MESH_ROUTE_NAME, san) < 0)
                        return -ENOMEM;
                free(san);
                san = t;
        }
        if (!base || !*base || strchr(base, '/'))
                return -EINVAL;
        r = read_pem(ca_dir, "ca.key", &cakey, NULL);
        if (r >= 0)
                r = read_pem(ca_dir, "ca.crt", NULL, &ca);
        if (r < 0)
                return r;
        r = ensure_dir(out_dir);
        if (r < 0)
                return r;
        if (asprintf(&keyname, "%s.key", base) < 0 || asprintf(&crtname, "%s.crt", base) < 0 ||
            asprintf(&keypath, "%s/%s", out_dir, keyname) < 0 || asprintf(&crtpath, "%s/%s", out_dir, crtname) < 0)
                return -ENOMEM;
        if (access(keypath, F_OK) == 0 || access(crtpath, F_OK) == 0)
                return -EEXIST;
        k = EVP_EC_gen("P-256");
        if (!k)
                return -EIO;
        r = new_cert(k, name, ca, CON_MESH_CERT_DAYS, &x);
        if (r < 0)
                return r;
        if ((r = add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE")) < 0 ||
            (r = add_ext(x, ca, NID_key_usage, "critical,digitalSignature")) < 0 ||
            (r = add_ext(x, ca, NID_ext_key_usage, kind == CON_MESH_CERT_HOST ? "clientAuth" : "serverAuth,clientAuth")) < 0 ||
            (r = add_ext(x, ca, NID_subject_alt_name, san)) < 0 ||
            (r = add_ext(x, ca, NID_subject_key_identifier, "hash")) < 0 ||
            (r = add_ext(x, ca, NID_authority_key_identifier, "keyid")) < 0)
                return r;
        if (!X509_sign(x, cakey, EVP_sha256()))
                return -EIO;
        r = copy_ca(out_dir, ca);
        if (r < 0)
                return r;
        r = write_key(out_dir, keyname, k);
        if (r < 0)
                return r;
        r = write_cert(out_dir, crtname, x);
        if (r < 0)
                (void) unlink(keypath);
        return r;
}

/* The permissions of host H (docs/MULTIHOST.md, "Identity"). Publish: tasks, results and state
 * events that carry H as the sender; the JetStream API for H's own two streams and their consumer only, and
 * the information of any stream and of any stream's con-meshd consumer (a sender checks the
 * receiver's stream before it publishes; con mesh status shows every host's depth and lag; a
 * NATS wildcard is a whole token, so "con-task-*" could not say "the mesh's streams"). Subscribe: H's own inboxes only (nats.c's inbox prefix _INBOX.H, which
 * con-meshd sets): a host never sees another's replies, fetched messages or tasks. */
static void append_user(FILE *f, const char *h) {
        fprintf(f, "    {\n      user: \"%s\"\n      permissions: {\n        publish: {\n          allow: [\n", h);
        fprintf(f, "            \"con.task.*.%s\", \"con.result.*.%s\", \"con.state.*.%s\",\n", h, h, h);
        fprintf(f, "            \"$JS.API.INFO\",\n");
        fprintf(f, "            \"$JS.API.STREAM.INFO.*\", \"$JS.API.STREAM.LIST\", \"$JS.API.STREAM.NAMES\",\n");
        fprintf(f, "            \"$JS.API.CONSUMER.INFO.*.con-meshd\",\n");
        for (int i = 0; i < 2; i++) {
                const char *s = i == 0 ? "task" : "result";
                fprintf(f, "            \"$JS.API.STREAM.CREATE.con-%s-%s\", \"$JS.API.STREAM.UPDATE.con-%s-%s\",\n",
                        s, h, s, h);
                fprintf(f, "            \"$JS.API.CONSUMER.DURABLE.CREATE.con-%s-%s.con-meshd\",\n", s, h);
                fprintf(f, "            \"$JS.API.CONSUMER.CREATE.con-%s-%s.con-meshd\", "
                        "\"$JS.API.CONSUMER.CREATE.con-%s-%s.con-meshd.>\",\n", s, h, s, h);
                fprintf(f, "            \"$JS.API.CONSUMER.MSG.NEXT.con-%s-%s.con-meshd\", "
                        "\"$JS.ACK.con-%s-%s.con-meshd.>\"%s\n", s, h, s, h, i == 0 ? "," : "");
        }
        fprintf(f, "          ]\n        }\n        subscribe: { allow: [\"_INBOX.%s.>\", \"con.state.%s.*\"] }\n      }\n    }\n",
                h, h);
}

/* HOST:PORT, nothing a quoted nats-server string could not hold. */
static bool host_port_valid(const char *s) {
        const char *colon = s ? strrchr(s, ':') : NULL;
        return colon && colon != s && colon[1] && !colon[1 + strspn(colon + 1, "0123456789")] &&
                !strpbrk(s, "\"\\\n/ ");
}

int con_mesh_server_config(char * const *hosts, const char *listen, const char *store_dir, const char *tls_dir,
                           const char *cluster_listen, char * const *routes, char **ret) {
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;

        if (!hosts || !hosts[0] || !listen || strpbrk(listen, "\"\\\n") || !store_dir ||
            strpbrk(store_dir, "\"\\\n") || !tls_dir || strpbrk(tls_dir, "\"\\\n"))
                return -EINVAL;
        if (cluster_listen && !host_port_valid(cluster_listen))
                return -EINVAL;
        if (!cluster_listen && routes && routes[0])
                return -EINVAL;
        STRV_FOREACH(r, (char **) routes)
                if (!host_port_valid(*r))
                        return -EINVAL;
        STRV_FOREACH(h, (char **) hosts)
                if (!con_mesh_host_valid(*h))
                        return -EINVAL;
        FILE *f = open_memstream(&buf, &len);
        if (!f)
                return -ENOMEM;
        fprintf(f, "# nats-server configuration of a ConspiracyOS mesh, made by con mesh server-config\n"
                   "# (docs/MULTIHOST.md). TLS is required and every client must present a certificate of\n"
                   "# the mesh's CA; its name (the DNS SAN con mesh issue wrote) is its user below, whose\n"
                   "# permissions let it publish only tasks and results carrying its own host name.\n"
                   "# A host not listed here cannot connect, whatever its certificate.\n\n");
        fprintf(f, "listen: \"%s\"\n\njetstream {\n  store_dir: \"%s\"\n}\n\n", listen, store_dir);
        fprintf(f, "tls {\n  cert_file: \"%s/server.crt\"\n  key_file: \"%s/server.key\"\n  ca_file: \"%s/ca.crt\"\n"
                   "  verify_and_map: true\n  timeout: 5\n}\n\n", tls_dir, tls_dir, tls_dir);
        fprintf(f, "authorization {\n  users = [\n");
        STRV_FOREACH(h, (char **) hosts)
                append_user(f, *h);
        fprintf(f, "  ]\n}\n");
        if (cluster_listen) {
                fprintf(f, "\n# The cluster's routes: TLS both ways with this node's certificate; a node must present\n"
                           "# a server certificate of the mesh's CA (its DNS SAN " CON_MESH_ROUTE_NAME ", which\n"
                           "# no host certificate carries), else its route is refused.\n"
                           "cluster {\n  name: \"con\"\n  listen: \"%s\"\n  routes: [", cluster_listen);
                STRV_FOREACH(r, (char **) routes)
                        fprintf(f, "%s\"nats://%s\"", r == routes ? "" : ", ", *r);
                fprintf(f, "]\n  tls {\n    cert_file: \"%s/server.crt\"\n    key_file: \"%s/server.key\"\n"
                           "    ca_file: \"%s/ca.crt\"\n    verify_and_map: true\n    timeout: 5\n  }\n"
                           "  authorization {\n    user: \"" CON_MESH_ROUTE_NAME "\"\n  }\n}\n",
                        tls_dir, tls_dir, tls_dir);
        }
        if (fclose(f) != 0)
                return -ENOMEM;
        *ret = TAKE_PTR(buf);
        return 0;
}
