/* SPDX-License-Identifier: MIT */
/* The mesh's CA, certificates and nats-server configuration (mesh-pki.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
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
                /* The server's key must not make it the administrator (verify_and_map). */
                if (!ip && strcasecmp(*p, CON_MESH_ADMIN_NAME) == 0)
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

/* The subject alternative names of a certificate of KIND for NAME (SANS: the server's). */
static int cert_sans(ConMeshCertKind kind, const char *name, char * const *sans, char **ret) {
        _cleanup_free_ char *san = NULL;
        int r;

        if (kind == CON_MESH_CERT_HOST || kind == CON_MESH_CERT_ADMIN) {
                if ((kind == CON_MESH_CERT_HOST ? !con_mesh_host_valid(name) : !streq_ptr(name, CON_MESH_ADMIN_NAME)) ||
                    (sans && sans[0]))
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
        *ret = TAKE_PTR(san);
        return 0;
}

/* The one place a certificate of the mesh is issued (con mesh issue, con mesh sign, con
 * bootstrap): for the public key of KEY, subject CN=NAME, SAN, signed by CAKEY/CA. */
static int sign_cert(EVP_PKEY *cakey, X509 *ca, ConMeshCertKind kind, const char *name, const char *san,
                     EVP_PKEY *key, X509 **ret) {
        _cleanup_(X509_freep) X509 *x = NULL;
        int r;

        r = new_cert(key, name, ca, CON_MESH_CERT_DAYS, &x);
        if (r < 0)
                return r;
        if ((r = add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE")) < 0 ||
            (r = add_ext(x, ca, NID_key_usage, "critical,digitalSignature")) < 0 ||
            (r = add_ext(x, ca, NID_ext_key_usage, kind == CON_MESH_CERT_SERVER ? "serverAuth,clientAuth" : "clientAuth")) < 0 ||
            (r = add_ext(x, ca, NID_subject_alt_name, san)) < 0 ||
            (r = add_ext(x, ca, NID_subject_key_identifier, "hash")) < 0 ||
            (r = add_ext(x, ca, NID_authority_key_identifier, "keyid")) < 0)
                return r;
        if (!X509_sign(x, cakey, EVP_sha256()))
                return -EIO;
        *ret = TAKE_PTR(x);
        return 0;
}

static int read_ca(const char *ca_dir, EVP_PKEY **ret_key, X509 **ret_cert) {
        int r = read_pem(ca_dir, "ca.key", ret_key, NULL);
        if (r >= 0)
                r = read_pem(ca_dir, "ca.crt", NULL, ret_cert);
        return r;
}

int con_mesh_issue(const char *ca_dir, ConMeshCertKind kind, const char *name, char * const *sans,
                   const char *out_dir, const char *base) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *cakey = NULL, *k = NULL;
        _cleanup_(X509_freep) X509 *ca = NULL, *x = NULL;
        _cleanup_free_ char *san = NULL, *keyname = NULL, *crtname = NULL, *keypath = NULL, *crtpath = NULL;
        int r;

        r = cert_sans(kind, name, sans, &san);
        if (r < 0)
                return r;
        if (!base || !*base || strchr(base, '/'))
                return -EINVAL;
        r = read_ca(ca_dir, &cakey, &ca);
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
        r = sign_cert(cakey, ca, kind, name, san, k, &x);
        if (r < 0)
                return r;
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

/* ---- in memory: con bootstrap and con mesh sign -------------------------------------------- */

DEFINE_TRIVIAL_CLEANUP_FUNC(BIO *, BIO_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_REQ *, X509_REQ_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_STORE *, X509_STORE_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_STORE_CTX *, X509_STORE_CTX_free);

void con_mesh_pem_erase(char *s) {
        if (s) {
                explicit_bzero(s, strlen(s));
                free(s);
        }
}

/* What BIO B holds, as a string. */
static int bio_string(BIO *b, char **ret) {
        char *data;
        long n = BIO_get_mem_data(b, &data);
        if (n < 0)
                return -EIO;
        char *s = strndup(data, (size_t) n);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

static BIO *bio_of(const char *pem) {
        return pem ? BIO_new_mem_buf(pem, -1) : NULL;
}

static int key_from_pem(const char *pem, EVP_PKEY **ret) {
        _cleanup_(BIO_freep) BIO *b = bio_of(pem);
        if (!b)
                return -ENOMEM;
        *ret = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
        return *ret ? 0 : -EBADMSG;
}

static int cert_from_pem(const char *pem, X509 **ret) {
        _cleanup_(BIO_freep) BIO *b = bio_of(pem);
        if (!b)
                return -ENOMEM;
        *ret = PEM_read_bio_X509(b, NULL, NULL, NULL);
        return *ret ? 0 : -EBADMSG;
}

static int key_to_pem(EVP_PKEY *k, char **ret) {
        _cleanup_(BIO_freep) BIO *b = BIO_new(BIO_s_mem());
        if (!b)
                return -ENOMEM;
        if (PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) != 1)
                return -EIO;
        int r = bio_string(b, ret);
        /* The BIO's buffer held the key too. */
        char *data;
        long n = BIO_get_mem_data(b, &data);
        if (n > 0)
                explicit_bzero(data, (size_t) n);
        return r;
}

static int cert_to_pem(X509 *x, char **ret) {
        _cleanup_(BIO_freep) BIO *b = BIO_new(BIO_s_mem());
        if (!b)
                return -ENOMEM;
        if (PEM_write_bio_X509(b, x) != 1)
                return -EIO;
        return bio_string(b, ret);
}

/* KEY_PEM's key, or a new one (then *ret_new_pem is its PEM, else NULL). */
static int key_or_new(const char *key_pem, EVP_PKEY **ret, char **ret_new_pem) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;
        int r;

        *ret_new_pem = NULL;
        if (key_pem)
                return key_from_pem(key_pem, ret);
        k = EVP_EC_gen("P-256");
        if (!k)
                return -EIO;
        r = key_to_pem(k, ret_new_pem);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(k);
        return 0;
}

int con_mesh_issue_host_pem(const char *ca_dir, const char *host, const char *key_pem, char **ret_new_key_pem,
                            char **ret_crt_pem, char **ret_ca_pem) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *cakey = NULL, *k = NULL;
        _cleanup_(X509_freep) X509 *ca = NULL, *x = NULL;
        _cleanup_free_ char *san = NULL, *crt = NULL, *capem = NULL;
        char *newkey = NULL;
        int r;

        r = cert_sans(CON_MESH_CERT_HOST, host, NULL, &san);
        if (r < 0)
                return r;
        r = read_ca(ca_dir, &cakey, &ca);
        if (r < 0)
                return r;
        r = key_or_new(key_pem, &k, &newkey);
        if (r >= 0)
                r = sign_cert(cakey, ca, CON_MESH_CERT_HOST, host, san, k, &x);
        if (r >= 0)
                r = cert_to_pem(x, &crt);
        if (r >= 0)
                r = cert_to_pem(ca, &capem);
        if (r < 0) {
                con_mesh_pem_erase(newkey);
                return r;
        }
        *ret_new_key_pem = newkey;
        *ret_crt_pem = TAKE_PTR(crt);
        *ret_ca_pem = TAKE_PTR(capem);
        return 0;
}

int con_mesh_csr_new(const char *host, const char *key_pem, char **ret_new_key_pem, char **ret_csr_pem) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;
        _cleanup_(BIO_freep) BIO *b = NULL;
        _cleanup_free_ char *csr = NULL;
        char *newkey = NULL;
        int r;

        if (!con_mesh_host_valid(host))
                return -EINVAL;
        r = key_or_new(key_pem, &k, &newkey);
        if (r < 0)
                return r;
        req = X509_REQ_new();
        b = BIO_new(BIO_s_mem());
        if (!req || !b)
                r = -ENOMEM;
        X509_NAME *n = req ? X509_REQ_get_subject_name(req) : NULL;
        if (r >= 0 && (!X509_REQ_set_version(req, 0) || !X509_REQ_set_pubkey(req, k) ||
                       !X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, (const unsigned char *) "ConspiracyOS mesh", -1, -1, 0) ||
                       !X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *) host, -1, -1, 0) ||
                       !X509_REQ_sign(req, k, EVP_sha256()) || PEM_write_bio_X509_REQ(b, req) != 1))
                r = -EIO;
        if (r >= 0)
                r = bio_string(b, &csr);
        if (r < 0) {
                con_mesh_pem_erase(newkey);
                return r;
        }
        *ret_new_key_pem = newkey;
        *ret_csr_pem = TAKE_PTR(csr);
        return 0;
}

/* The one CN of subject N, or NULL (none, several, or not text). */
static char *subject_cn(const X509_NAME *n) {
        int i = X509_NAME_get_index_by_NID(n, NID_commonName, -1);
        if (i < 0 || X509_NAME_get_index_by_NID(n, NID_commonName, i) >= 0)
                return NULL;
        const ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, i));
        unsigned char *utf8 = NULL;
        int len = ASN1_STRING_to_UTF8(&utf8, s);
        if (len < 0)
                return NULL;
        char *cn = memchr(utf8, 0, (size_t) len) ? NULL : strndup((const char *) utf8, (size_t) len);
        OPENSSL_free(utf8);
        return cn;
}

/* CSR_PEM's request, its signature checked, and its subject's CN in *ret_name (NULL if none). */
static int csr_read(const char *csr_pem, size_t len, X509_REQ **ret, char **ret_name) {
        _cleanup_(BIO_freep) BIO *b = NULL;
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;

        /* OpenSSL's queue of errors grows with every refused input; nobody reads it here. */
        ERR_clear_error();
        if (len > INT_MAX)
                return -EBADMSG;
        b = BIO_new_mem_buf(csr_pem, (int) len);
        if (!b)
                return -ENOMEM;
        req = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
        if (!req)
                return -EBADMSG;
        EVP_PKEY *pub = X509_REQ_get0_pubkey(req);
        if (!pub || X509_REQ_verify(req, pub) != 1)
                return -EBADMSG;
        *ret_name = subject_cn(X509_REQ_get_subject_name(req));
        *ret = TAKE_PTR(req);
        return 0;
}

int con_mesh_sign_csr(const char *ca_dir, const char *csr_pem, size_t len, char **ret_host, char **ret_crt_pem) {
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *cakey = NULL;
        _cleanup_(X509_freep) X509 *ca = NULL, *x = NULL;
        _cleanup_free_ char *name = NULL, *san = NULL;
        int r;

        *ret_host = NULL;
        r = csr_read(csr_pem, len, &req, &name);
        if (r < 0)
                return r;
        if (!name || !con_mesh_host_valid(name)) {
                *ret_host = TAKE_PTR(name);
                return -EINVAL;
        }
        r = cert_sans(CON_MESH_CERT_HOST, name, NULL, &san);
        if (r >= 0)
                r = read_ca(ca_dir, &cakey, &ca);
        if (r >= 0)
                r = sign_cert(cakey, ca, CON_MESH_CERT_HOST, name, san, X509_REQ_get0_pubkey(req), &x);
        if (r >= 0)
                r = cert_to_pem(x, ret_crt_pem);
        if (r < 0)
                return r;
        *ret_host = TAKE_PTR(name);
        return 0;
}

int con_mesh_csr_matches(const char *csr_pem, const char *key_pem, const char *host) {
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;
        _cleanup_free_ char *name = NULL;
        int r;

        r = csr_read(csr_pem, strlen(csr_pem), &req, &name);
        if (r < 0)
                return r;
        r = key_from_pem(key_pem, &k);
        if (r < 0)
                return r;
        return name && streq(name, host) && EVP_PKEY_eq(X509_REQ_get0_pubkey(req), k) == 1;
}

ConMeshCertState con_mesh_check_host_cert(const char *crt_pem, const char *key_pem, const char *ca_pem,
                                          const char *host, time_t now, char **ret_name, time_t *ret_not_after) {
        _cleanup_(X509_freep) X509 *x = NULL, *ca = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;
        _cleanup_(X509_STORE_freep) X509_STORE *store = NULL;
        _cleanup_(X509_STORE_CTX_freep) X509_STORE_CTX *ctx = NULL;
        struct tm tm;

        *ret_name = NULL;
        *ret_not_after = 0;
        ERR_clear_error();
        if (cert_from_pem(crt_pem, &x) < 0)
                return CON_MESH_CERT_UNREADABLE;
        *ret_name = subject_cn(X509_get_subject_name(x));
        if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
                *ret_not_after = timegm(&tm);
        if (!con_mesh_host_valid(host) ||
            X509_check_host(x, host, strlen(host), X509_CHECK_FLAG_NO_WILDCARDS, NULL) != 1 ||
            !*ret_name || !streq(*ret_name, host))
                return CON_MESH_CERT_WRONG_HOST;
        if (!(X509_get_extension_flags(x) & EXFLAG_XKUSAGE) || !(X509_get_extended_key_usage(x) & XKU_SSL_CLIENT) ||
            X509_check_ca(x) != 0)
                return CON_MESH_CERT_NOT_CLIENT;
        if (cert_from_pem(ca_pem, &ca) < 0)
                return CON_MESH_CERT_CA_UNREADABLE;
        store = X509_STORE_new();
        ctx = X509_STORE_CTX_new();
        if (!store || !ctx || X509_STORE_add_cert(store, ca) != 1 || X509_STORE_CTX_init(ctx, store, x, NULL) != 1)
                return CON_MESH_CERT_OTHER_CA;
        /* Whether the CA signed it, whatever the time: the dates are the next checks. */
        X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_NO_CHECK_TIME);
        X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
        if (X509_verify_cert(ctx) != 1)
                return CON_MESH_CERT_OTHER_CA;
        if (key_pem) {
                if (key_from_pem(key_pem, &k) < 0)
                        return CON_MESH_CERT_KEY_UNREADABLE;
                if (X509_check_private_key(x, k) != 1)
                        return CON_MESH_CERT_WRONG_KEY;
        }
        time_t t = now;
        if (X509_cmp_time(X509_get0_notAfter(x), &t) <= 0)
                return CON_MESH_CERT_EXPIRED;
        t = now + (time_t) CON_MESH_CERT_RENEW_DAYS * 24 * 3600;
        if (X509_cmp_time(X509_get0_notAfter(x), &t) <= 0)
                return CON_MESH_CERT_EXPIRING;
        return CON_MESH_CERT_OK;
}

/* The permissions of host H (docs/MULTIHOST.md, "Identity"). No stream API that makes, changes or
 * removes a stream (NATS permissions name the API subject, never the request's body: a host
 * allowed to make its own stream could give it "sources" and copy other hosts' tasks into it);
 * the administrator makes them (append_admin). Publish: tasks, results, state
 * events (con.state.<origin>.H.<id>) and cancels that carry H as the sender; H's own pull consumer on
 * the shared state stream con-state (con-meshd-H: made, deleted
 * and made again at each start, read, acknowledged); the JetStream API for H's own two streams and their consumer only, and
 * the information of any stream and of any stream's con-meshd consumer (a sender checks the
 * receiver's stream before it publishes; con mesh status shows every host's depth and lag; a
 * NATS wildcard is a whole token, so "con-task-*" could not say "the mesh's streams"). Subscribe: H's own inboxes only (nats.c's inbox prefix _INBOX.H, which
 * con-meshd sets): a host never sees another's replies, fetched messages or tasks (the state
 * events come through its consumer, in its inboxes); and the cancels addressed to H. */
static void append_user(FILE *f, const char *h) {
        fprintf(f, "    {\n      user: \"%s\"\n      permissions: {\n        publish: {\n          allow: [\n", h);
        fprintf(f, "            \"con.task.*.%s\", \"con.result.*.%s\", \"con.state.*.%s.*\",\n", h, h, h);
        fprintf(f, "            \"$JS.API.CONSUMER.DURABLE.CREATE.con-state.con-meshd-%s\", "
                "\"$JS.API.CONSUMER.CREATE.con-state.con-meshd-%s\",\n", h, h);
        fprintf(f, "            \"$JS.API.CONSUMER.CREATE.con-state.con-meshd-%s.>\", "
                "\"$JS.API.CONSUMER.INFO.con-state.con-meshd-%s\",\n", h, h);
        fprintf(f, "            \"$JS.API.CONSUMER.DELETE.con-state.con-meshd-%s\", "
                "\"$JS.API.CONSUMER.MSG.NEXT.con-state.con-meshd-%s\",\n", h, h);
        fprintf(f, "            \"$JS.ACK.con-state.con-meshd-%s.>\",\n", h);
        fprintf(f, "            \"con.cancel.*.%s\",\n", h);
        fprintf(f, "            \"$JS.API.INFO\",\n");
        fprintf(f, "            \"$JS.API.STREAM.INFO.*\", \"$JS.API.STREAM.LIST\", \"$JS.API.STREAM.NAMES\",\n");
        fprintf(f, "            \"$JS.API.CONSUMER.INFO.*.con-meshd\",\n");
        for (int i = 0; i < 2; i++) {
                const char *s = i == 0 ? "task" : "result";
                fprintf(f, "            \"$JS.API.CONSUMER.DURABLE.CREATE.con-%s-%s.con-meshd\",\n", s, h);
                fprintf(f, "            \"$JS.API.CONSUMER.CREATE.con-%s-%s.con-meshd\", "
                        "\"$JS.API.CONSUMER.CREATE.con-%s-%s.con-meshd.>\",\n", s, h, s, h);
                fprintf(f, "            \"$JS.API.CONSUMER.MSG.NEXT.con-%s-%s.con-meshd\", "
                        "\"$JS.ACK.con-%s-%s.con-meshd.>\"%s\n", s, h, s, h, i == 0 ? "," : "");
        }
        fprintf(f, "          ]\n        }\n        subscribe: { allow: [\"_INBOX.%s.>\", \"con.cancel.%s.*\"] }\n"
                "      }\n    }\n", h, h);
}

/* The administrator (CON_MESH_ADMIN_NAME): makes, changes, removes and reads the configuration of
 * the mesh's streams (con mesh streams), by name: each host's two and con-state, no other stream;
 * no consumer, no message, no subject of the mesh. Subscribe: its own inboxes. */
static void append_admin(FILE *f, char * const *hosts) {
        static const char * const ops[] = { "CREATE", "UPDATE", "DELETE", "INFO" };

        fprintf(f, "    {\n      user: \"" CON_MESH_ADMIN_NAME "\"\n      permissions: {\n        publish: {\n"
                   "          allow: [\n            \"$JS.API.INFO\", \"$JS.API.STREAM.NAMES\", \"$JS.API.STREAM.LIST\",\n");
        for (size_t o = 0; o < ELEMENTSOF(ops); o++) {
                fprintf(f, "            \"$JS.API.STREAM.%s.con-state\"", ops[o]);
                STRV_FOREACH(h, (char **) hosts)
                        fprintf(f, ", \"$JS.API.STREAM.%s.con-task-%s\", \"$JS.API.STREAM.%s.con-result-%s\"",
                                ops[o], *h, ops[o], *h);
                fprintf(f, "%s\n", o + 1 < ELEMENTSOF(ops) ? "," : "");
        }
        fprintf(f, "          ]\n        }\n        subscribe: { allow: [\"" CON_MESH_ADMIN_INBOX ".>\"] }\n"
                   "      }\n    }\n");
}

int con_mesh_hosts_format(char * const *hosts, char **ret) {
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;

        STRV_FOREACH(h, (char **) hosts)
                if (!con_mesh_host_valid(*h))
                        return -EINVAL;
        FILE *f = open_memstream(&buf, &len);
        if (!f)
                return -ENOMEM;
        STRV_FOREACH(h, (char **) hosts)
                fprintf(f, "%s\n", *h);
        if (fclose(f) != 0)
                return -ENOMEM;
        *ret = TAKE_PTR(buf);
        return 0;
}

int con_mesh_hosts_parse(const char *text, char ***ret) {
        _cleanup_strv_free_ char **hosts = NULL;

        for (const char *p = text; *p;) {
                size_t n = strcspn(p, "\n");
                if (n > 0) {
                        _cleanup_free_ char *h = strndup(p, n);
                        if (!h)
                                return -ENOMEM;
                        if (!con_mesh_host_valid(h) || strv_contains(hosts, h))
                                return -EBADMSG;
                        if (strv_consume(&hosts, TAKE_PTR(h)) < 0)
                                return -ENOMEM;
                }
                p += n + (p[n] == '\n');
        }
        *ret = TAKE_PTR(hosts);   /* NULL: none */
        return 0;
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
        append_admin(f, hosts);
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
