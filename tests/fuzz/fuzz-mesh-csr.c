/* SPDX-License-Identifier: MIT */
/* con mesh sign's input (bus/provision/mesh-pki.c, con_mesh_sign_csr): a certificate signing
 * request from another host, whatever it holds. One that is signed must name a valid host, and
 * its certificate must be that host's client certificate of the CA (con_mesh_check_host_cert);
 * anything else is refused with -EBADMSG or -EINVAL. The same input as con bootstrap's existing
 * request (con_mesh_csr_matches) is refused cleanly too. The CA is made once, in a temporary
 * folder removed at exit. */
#undef NDEBUG
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "mesh-pki.h"
#include "names.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char ca_dir[64];
static char *ca_pem, *key_pem;

static void remove_ca(void) {
        char p[96];
        snprintf(p, sizeof(p), "%s/ca.key", ca_dir);
        (void) unlink(p);
        snprintf(p, sizeof(p), "%s/ca.crt", ca_dir);
        (void) unlink(p);
        (void) rmdir(ca_dir);
}

static void setup(void) {
        char *crt = NULL;
        snprintf(ca_dir, sizeof(ca_dir), "/tmp/fuzz-mesh-csr.XXXXXX");
        assert(mkdtemp(ca_dir));
        atexit(remove_ca);
        assert(con_mesh_ca_init(ca_dir) == 0);
        assert(con_mesh_issue_host_pem(ca_dir, "host-a", NULL, &key_pem, &crt, &ca_pem) == 0);
        free(crt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *host = NULL, *crt = NULL, *name = NULL, *text = NULL;
        time_t end;

        if (!ca_pem)
                setup();
        int r = con_mesh_sign_csr(ca_dir, (const char *) data, size, &host, &crt);
        if (r == 0) {
                assert(host && con_mesh_host_valid(host));
                assert(con_mesh_check_host_cert(crt, NULL, ca_pem, host, time(NULL), &name, &end) == CON_MESH_CERT_OK);
                assert(name && strcmp(name, host) == 0);
        } else {
                assert(r == -EBADMSG || r == -EINVAL || r == -ENOMEM);
                assert(!crt);
                assert(!host || r == -EINVAL);
        }
        text = strndup((const char *) data, size);
        if (text) {
                r = con_mesh_csr_matches(text, key_pem, "host-a");
                assert(r == 0 || r == 1 || r == -EBADMSG || r == -ENOMEM);
        }
        return 0;
}
