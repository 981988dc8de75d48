/* SPDX-License-Identifier: MIT */
#pragma once

/* The mesh's credentials (docs/MULTIHOST.md, "Identity"): a certificate authority of the mesh,
 * one TLS client certificate per host (its name in the subject's CN and as a DNS SAN: what the
 * NATS server's verify_and_map maps to that host's user) and the NATS server's certificate; and
 * the nats-server configuration that gives each host publish rights only on subjects carrying its
 * own name. Keys are ECDSA P-256, made with OpenSSL's libcrypto. Library code: no logging. */

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define CON_MESH_CA_DIR "/etc/con/mesh-ca"              /* ca.key (0600) and ca.crt, on one host */
#define CON_MESH_CA_DAYS 3650
#define CON_MESH_CERT_DAYS 825
#define CON_MESH_CERT_RENEW_DAYS 30           /* con bootstrap warns this long before the end */

typedef enum ConMeshCertKind {
        CON_MESH_CERT_HOST,     /* a host's client certificate: CN and DNS SAN = the host name */
        CON_MESH_CERT_SERVER,   /* the NATS server's: SANs = its addresses and names, plus
                                 * CON_MESH_ROUTE_NAME; server and client auth (cluster routes) */
        CON_MESH_CERT_ADMIN,    /* the mesh's administrator: CN and DNS SAN CON_MESH_ADMIN_NAME,
                                 * client auth; the only identity that makes and changes streams */
} ConMeshCertKind;

/* The DNS SAN every server certificate carries and the one user a cluster's routes map to
 * (verify_and_map): not a valid host name (it has dots), so no host certificate can join a
 * cluster as a route, whatever CA signed it. */
#define CON_MESH_ROUTE_NAME "route.con-mesh.invalid"

/* The administrator's NATS user (its certificate's CN and DNS SAN; docs/MULTIHOST.md, "Who makes
 * the streams"): not a valid host name either, so no host certificate maps to it, and no server
 * certificate carries it (refused as an --address). Its key and certificate live beside the CA's
 * (CON_MESH_CA_DIR/admin.key, admin.crt); its inboxes are CON_MESH_ADMIN_INBOX (a host's are
 * _INBOX.<host>, and a host name has no '_'). */
#define CON_MESH_ADMIN_NAME "admin.con-mesh.invalid"
#define CON_MESH_ADMIN_INBOX "_INBOX._admin"

/* Makes DIR (0700, when missing) with ca.key (0600) and ca.crt (0644). -EEXIST when DIR/ca.key
 * exists: a mesh has one CA, made once. Other negative errnos: I/O; -EIO: OpenSSL failed. */
int con_mesh_ca_init(const char *dir);

/* Issues a certificate signed by the CA in CA_DIR and writes OUT_DIR/BASE.key (0600),
 * OUT_DIR/BASE.crt and a copy of OUT_DIR/ca.crt (0644; made when missing, refused with -EEXIST
 * when a different one is there). OUT_DIR is made (0700) when missing. NAME: the host's mesh
 * name (con_mesh_host_valid) for a host, a label for the server, CON_MESH_ADMIN_NAME for the
 * administrator. SANS (server only): IP
 * addresses and DNS names, NULL-terminated, at least one. -EEXIST when BASE.key or BASE.crt
 * exists, -ENOENT without a CA, -EINVAL for an invalid name or SAN. */
int con_mesh_issue(const char *ca_dir, ConMeshCertKind kind, const char *name, char * const *sans,
                   const char *out_dir, const char *base);

/* The same in memory, for con bootstrap on the CA's host (docs/MULTIHOST.md, "Setting it up"):
 * HOST's client certificate signed by the CA in CA_DIR, for the key KEY_PEM (PEM), or for a new
 * key when KEY_PEM is NULL (then *ret_new_key_pem is it, else NULL; free it with
 * con_mesh_pem_erase). *ret_crt_pem: the certificate, *ret_ca_pem: the CA's. -ENOENT without a
 * CA, -EINVAL for an invalid host name, -EBADMSG for a KEY_PEM that is no key. */
int con_mesh_issue_host_pem(const char *ca_dir, const char *host, const char *key_pem, char **ret_new_key_pem,
                            char **ret_crt_pem, char **ret_ca_pem);

/* A certificate signing request for HOST (subject O=ConspiracyOS mesh, CN=HOST), for the key
 * KEY_PEM or a new one (as con_mesh_issue_host_pem). What con bootstrap writes on a host without
 * the CA; con mesh sign turns it into the certificate. */
int con_mesh_csr_new(const char *host, const char *key_pem, char **ret_new_key_pem, char **ret_csr_pem);

/* Signs the request CSR_PEM (LEN bytes, from another host: outside input) with the CA in
 * CA_DIR: a host certificate exactly like con_mesh_issue's for the subject's CN and the
 * request's public key; nothing else of the request (extensions, other names) is used.
 * *ret_host: the CN (also on -EINVAL when there is one). -EBADMSG: not a request, or its
 * signature is wrong; -EINVAL: no single CN, or not a valid host name; -ENOENT: no CA. */
int con_mesh_sign_csr(const char *ca_dir, const char *csr_pem, size_t len, char **ret_host, char **ret_crt_pem);

/* Zeroes and frees a PEM string that may hold a private key (NULL: nothing). */
void con_mesh_pem_erase(char *pem);
static inline void con_mesh_pem_erasep(char **pem) {
        con_mesh_pem_erase(*pem);
}

/* 1 when the request CSR_PEM is HOST's, for the key KEY_PEM; 0 when not; -EBADMSG. */
int con_mesh_csr_matches(const char *csr_pem, const char *key_pem, const char *host);

/* What con bootstrap finds of this host's certificate (the first problem, in this order). */
typedef enum ConMeshCertState {
        CON_MESH_CERT_OK,
        CON_MESH_CERT_UNREADABLE,       /* not a PEM certificate */
        CON_MESH_CERT_WRONG_HOST,       /* its CN or DNS name is not HOST */
        CON_MESH_CERT_NOT_CLIENT,       /* a CA, or not for TLS client authentication */
        CON_MESH_CERT_CA_UNREADABLE,    /* the CA's certificate is not a PEM certificate */
        CON_MESH_CERT_OTHER_CA,         /* not signed by that CA */
        CON_MESH_CERT_KEY_UNREADABLE,   /* the key is not a PEM private key */
        CON_MESH_CERT_WRONG_KEY,        /* the key is not the certificate's */
        CON_MESH_CERT_EXPIRED,          /* at NOW */
        CON_MESH_CERT_EXPIRING,         /* within CON_MESH_CERT_RENEW_DAYS of NOW (a warning) */
} ConMeshCertState;

/* Checks HOST's certificate CRT_PEM against the CA's certificate CA_PEM and the key KEY_PEM
 * (NULL: not checked) at time NOW. *ret_name: the certificate's CN (NULL when unreadable or
 * none; to free), *ret_not_after: its end (0 when unreadable). Pure: no files. */
ConMeshCertState con_mesh_check_host_cert(const char *crt_pem, const char *key_pem, const char *ca_pem,
                                          const char *host, time_t now, char **ret_name, time_t *ret_not_after);

/* The nats-server configuration of the mesh: LISTEN (HOST:PORT), JetStream under STORE_DIR, TLS
 * required with the server's certificate, key and the CA in TLS_DIR (server.crt, server.key,
 * ca.crt), verify_and_map, and one user per host of HOSTS (NULL-terminated, valid mesh names)
 * with publish and subscribe permissions limited to its own subjects and no way to make, change
 * or remove a stream; plus the administrator CON_MESH_ADMIN_NAME, who may make, change, remove and
 * read the configuration of the mesh's streams (each host's two and con-state) and nothing else. CLUSTER_LISTEN (HOST:PORT,
 * NULL: no cluster): a cluster block named "con" listening there, with ROUTES (HOST:PORT,
 * NULL-terminated, may be empty) and TLS on the routes: the same certificate, verify_and_map, the
 * one route user CON_MESH_ROUTE_NAME. -EINVAL for an invalid host name, an empty list or a
 * listen address or route that is not HOST:PORT. */
/* The hosts of HOSTS (NULL-terminated, valid names) as the file CON_MESH_CA_DIR/hosts holds them:
 * one name a line (what con mesh server-config was last given; con mesh streams reads it back). */
int con_mesh_hosts_format(char * const *hosts, char **ret);
/* The inverse: every non-empty line a valid host name, at most once; -EBADMSG otherwise, -ENOMEM. */
int con_mesh_hosts_parse(const char *text, char ***ret);

int con_mesh_server_config(char * const *hosts, const char *listen, const char *store_dir, const char *tls_dir,
                           const char *cluster_listen, char * const *routes, char **ret);
