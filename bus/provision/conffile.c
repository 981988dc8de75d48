/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conffile.h"
#include "macro.h"

#define HEX_LEN (CON_SHA256_HEX_SIZE - 1)

void con_file_hashes_done(ConFileHashes *h) {
        for (size_t i = 0; i < h->n; i++)
                free(h->e[i].path);
        free(h->e);
        *h = (ConFileHashes) {};
}

/* len bytes at path: not empty, no control character (NUL included), no "." or ".." segment. */
static bool path_valid(const char *path, size_t len) {
        size_t seg = 0;         /* where the current segment starts */

        if (len == 0)
                return false;
        for (size_t i = 0; i <= len; i++) {
                if (i < len && ((unsigned char) path[i] < 0x20 || path[i] == 0x7f))
                        return false;
                if (i < len && path[i] != '/')
                        continue;
                size_t n = i - seg;
                if ((n == 1 && path[seg] == '.') || (n == 2 && path[seg] == '.' && path[seg + 1] == '.'))
                        return false;
                seg = i + 1;
        }
        return true;
}

bool con_file_hashes_path_valid(const char *path) {
        return path && path_valid(path, strlen(path));
}

static int add(ConFileHashes *h, const char *path, size_t path_len, const char *hash) {
        ConFileHash *n = realloc(h->e, sizeof(*n) * (h->n + 1));
        if (!n)
                return -ENOMEM;
        h->e = n;
        n[h->n].path = strndup(path, path_len);
        if (!n[h->n].path)
                return -ENOMEM;
        memcpy(n[h->n].hash, hash, HEX_LEN);
        n[h->n].hash[HEX_LEN] = 0;
        h->n++;
        return 0;
}

int con_file_hashes_parse(const char *text, size_t len, ConFileHashes *ret, size_t *ret_line) {
        ConFileHashes h = {};
        size_t line = 0;
        int r;

        if (ret_line)
                *ret_line = 0;
        for (size_t pos = 0; pos < len;) {
                const char *s = text + pos, *nl = memchr(s, '\n', len - pos);
                size_t l = nl ? (size_t) (nl - s) : len - pos;

                pos += l + (nl ? 1 : 0);
                line++;
                if (l == 0 || s[0] == '#')
                        continue;
                /* HEX, two spaces (sha256sum's text mode), a path con_file_hashes_path_valid() takes */
                bool ok = l > HEX_LEN + 2 && con_sha256_hex_valid(s, HEX_LEN) && s[HEX_LEN] == ' ' && s[HEX_LEN + 1] == ' ' &&
                          path_valid(s + HEX_LEN + 2, l - HEX_LEN - 2);
                if (!ok) {
                        con_file_hashes_done(&h);
                        if (ret_line)
                                *ret_line = line;
                        return -EBADMSG;
                }
                r = add(&h, s + HEX_LEN + 2, l - HEX_LEN - 2, s);
                if (r < 0) {
                        con_file_hashes_done(&h);
                        return r;
                }
        }
        *ret = h;
        return 0;
}

const char *con_file_hashes_get(const ConFileHashes *h, const char *path) {
        for (size_t i = 0; i < h->n; i++)
                if (streq(h->e[i].path, path))
                        return h->e[i].hash;
        return NULL;
}

bool con_file_hashes_contains(const ConFileHashes *h, const char *path, const char *hash) {
        if (!hash)
                return false;
        for (size_t i = 0; i < h->n; i++)
                if (streq(h->e[i].path, path) && streq(h->e[i].hash, hash))
                        return true;
        return false;
}

void con_file_hashes_remove(ConFileHashes *h, const char *path) {
        size_t j = 0;

        for (size_t i = 0; i < h->n; i++) {
                if (streq(h->e[i].path, path))
                        free(h->e[i].path);
                else
                        h->e[j++] = h->e[i];
        }
        h->n = j;
}

int con_file_hashes_add(ConFileHashes *h, const char *path, const char *hash) {
        if (!con_file_hashes_path_valid(path) || !hash || !con_sha256_hex_valid(hash, strlen(hash)))
                return -EINVAL;
        return add(h, path, strlen(path), hash);
}

int con_file_hashes_set(ConFileHashes *h, const char *path, const char *hash) {
        if (!con_file_hashes_path_valid(path) || !hash || !con_sha256_hex_valid(hash, strlen(hash)))
                return -EINVAL;
        con_file_hashes_remove(h, path);
        return add(h, path, strlen(path), hash);
}

static int entry_cmp(const void *a, const void *b) {
        const ConFileHash *x = a, *y = b;
        int c = strcmp(x->path, y->path);
        return c != 0 ? c : strcmp(x->hash, y->hash);
}

int con_file_hashes_format(const ConFileHashes *h, const char *header, char **ret) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        FILE *f;

        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        if (header)
                fprintf(f, "# %s\n", header);
        if (h->n > 0) {
                ConFileHash *copy = malloc(sizeof(*copy) * h->n);
                if (!copy) {
                        fclose(f);
                        return -ENOMEM;
                }
                memcpy(copy, h->e, sizeof(*copy) * h->n);
                qsort(copy, h->n, sizeof(*copy), entry_cmp);
                for (size_t i = 0; i < h->n; i++)
                        fprintf(f, "%s  %s\n", copy[i].hash, copy[i].path);
                free(copy);
        }
        if (fclose(f) != 0 || !buf)
                return -ENOMEM;
        *ret = TAKE_PTR(buf);
        return 0;
}

ConConffileDecision con_conffile_decide(const char *current, const char *wanted, const char *recorded, bool earlier) {
        if (!current)
                return CON_CONFFILE_INSTALL;
        if (streq(current, wanted))
                return CON_CONFFILE_SAME;
        if ((recorded && streq(current, recorded)) || earlier)
                return CON_CONFFILE_UPDATE;
        return CON_CONFFILE_EDITED;
}

ConObsoleDecision con_obsolete_decide(const char *current, const char *recorded, bool earlier) {
        if (!current)
                return CON_OBSOLETE_GONE;
        if ((recorded && streq(current, recorded)) || earlier)
                return CON_OBSOLETE_REMOVE;
        return CON_OBSOLETE_KEEP;
}
