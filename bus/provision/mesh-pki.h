/* SPDX-License-Identifier: MIT */
#pragma once

/* The mesh's credentials (docs/MULTIHOST.md, "Identity"): a certificate authority of the mesh,
 * one TLS client certificate per host (its name in the subject's CN and as a DNS SAN: what the
 * NATS server's verify_and_map maps to that host's user) and the NATS server's certificate; and
 * the nats-server configuration that gives each host publish rights only on subjects carrying its
 * own name. Keys are ECDSA P-256, made with OpenSSL's libcrypto. Library code: no logging. */

#include <stdbool.h>

#define CON_MESH_CA_DIR "/etc/con/mesh-ca"              /* ca.key (0600) and ca.crt, on one host */
#define CON_MESH_CA_DAYS 3650
#define CON_MESH_CERT_DAYS 825

typedef enum ConMeshCertKind {
        CON_MESH_CERT_HOST,     /* a host's client certificate: CN and DNS SAN = the host name */
        CON_MESH_CERT_SERVER,   /* the NATS server's: SANs = its addresses and names, plus
                                 * CON_MESH_ROUTE_NAME; server and client auth (cluster routes) */
} ConMeshCertKind;

/* The DNS SAN every server certificate carries and the one user a cluster's routes map to
 * (verify_and_map): not a valid host name (it has dots), so no host certificate can join a
 * cluster as a route, whatever CA signed it. */
#define CON_MESH_ROUTE_NAME "route.con-mesh.invalid"

/* Makes DIR (0700, when missing) with ca.key (0600) and ca.crt (0644). -EEXIST when DIR/ca.key
 * exists: a mesh has one CA, made once. Other negative errnos: I/O; -EIO: OpenSSL failed. */
int con_mesh_ca_init(const char *dir);

/* Issues a certificate signed by the CA in CA_DIR and writes OUT_DIR/BASE.key (0600),
 * OUT_DIR/BASE.crt and a copy of OUT_DIR/ca.crt (0644; made when missing, refused with -EEXIST
 * when a different one is there). OUT_DIR is made (0700) when missing. NAME: the host's mesh
 * name (con_mesh_host_valid) for a host, a label for the server. SANS (server only): IP
 * addresses and DNS names, NULL-terminated, at least one. -EEXIST when BASE.key or BASE.crt
 * exists, -ENOENT without a CA, -EINVAL for an invalid name or SAN. */
int con_mesh_issue(const char *ca_dir, ConMeshCertKind kind, const char *name, char * const *sans,
                   const char *out_dir, const char *base);

/* The nats-server configuration of the mesh: LISTEN (HOST:PORT), JetStream under STORE_DIR, TLS
 * required with the server's certificate, key and the CA in TLS_DIR (server.crt, server.key,
 * ca.crt), verify_and_map, and one user per host of HOSTS (NULL-terminated, valid mesh names)
 * with publish and subscribe permissions limited to its own subjects. CLUSTER_LISTEN (HOST:PORT,
 * NULL: no cluster): a cluster block named "con" listening there, with ROUTES (HOST:PORT,
 * NULL-terminated, may be empty) and TLS on the routes: the same certificate, verify_and_map, the
 * one route user CON_MESH_ROUTE_NAME. -EINVAL for an invalid host name, an empty list or a
 * listen address or route that is not HOST:PORT. */
int con_mesh_server_config(char * const *hosts, const char *listen, const char *store_dir, const char *tls_dir,
                           const char *cluster_listen, char * const *routes, char **ret);
