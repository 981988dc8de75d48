/* SPDX-License-Identifier: MIT */
/* The "SHA256  PATH" lists of conffile.h: con bootstrap's record of installed files (root's, 0600)
 * and the shipped profile history. Neither is written by anyone but root or the package, but a
 * corrupt one must still be refused cleanly: parse anything; for what parses, the entries are
 * well-formed, formatting and parsing again gives the same list, and setting and removing
 * entries keeps it so. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conffile.h"
#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool well_formed(const ConFileHashes *h) {
        for (size_t i = 0; i < h->n; i++) {
                if (!con_file_hashes_path_valid(h->e[i].path) || strlen(h->e[i].hash) != CON_SHA256_HEX_SIZE - 1)
                        return false;
                if (!con_file_hashes_contains(h, h->e[i].path, h->e[i].hash))
                        return false;
        }
        return true;
}

static void round_trip(const ConFileHashes *h) {
        _cleanup_free_ char *text = NULL, *again = NULL;
        ConFileHashes back = {};

        if (con_file_hashes_format(h, "fuzz", &text) < 0)
                return; /* out of memory only */
        if (con_file_hashes_parse(text, strlen(text), &back, NULL) != 0 || back.n != h->n || !well_formed(&back))
                abort();
        for (size_t i = 0; i < h->n; i++)
                if (!con_file_hashes_contains(&back, h->e[i].path, h->e[i].hash))
                        abort();
        if (con_file_hashes_format(&back, "fuzz", &again) < 0 || strcmp(text, again) != 0)
                abort();
        con_file_hashes_done(&back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        ConFileHashes h = {};
        size_t line = 0;
        int r;

        if (size > 65536)
                return 0;
        r = con_file_hashes_parse((const char *) data, size, &h, &line);
        if (r == -EBADMSG) {
                if (line < 1 || line > size + 1)
                        abort();
                return 0;
        }
        if (r < 0)
                return 0;
        if (line != 0 || !well_formed(&h))
                abort();
        round_trip(&h);

        /* The first entry's path set to another hash: one entry left for it, the others kept. */
        if (h.n > 0) {
                _cleanup_free_ char *path = strdup(h.e[0].path);
                const char *hash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
                size_t others = 0;
                if (!path)
                        abort();
                for (size_t i = 0; i < h.n; i++)
                        others += !streq(h.e[i].path, path);
                if (con_file_hashes_set(&h, path, hash) < 0)
                        abort();
                if (h.n != others + 1 || !streq(con_file_hashes_get(&h, path), hash) || !well_formed(&h))
                        abort();
                round_trip(&h);
                con_file_hashes_remove(&h, path);
                if (h.n != others || con_file_hashes_get(&h, path))
                        abort();
        }
        con_file_hashes_done(&h);
        return 0;
}
