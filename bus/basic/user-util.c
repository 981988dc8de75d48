/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "macro.h"
#include "strv.h"
#include "user-util.h"

#define GROUPS_MAX 65536

/* Runs getpwuid_r or getgrgid_r with a buffer grown until the entry fits. */
#define NSS_LOOKUP(fn, id, ent, res, buf)                                               \
        ({                                                                              \
                int _r = 0;                                                             \
                for (size_t _size = 1024;; _size *= 2) {                                \
                        free(buf);                                                      \
                        (buf) = malloc(_size);                                          \
                        if (!(buf)) {                                                   \
                                _r = ENOMEM;                                            \
                                break;                                                  \
                        }                                                               \
                        _r = fn((id), (ent), (buf), _size, (res));                      \
                        if (_r != ERANGE || _size >= (1u << 20))                        \
                                break;                                                  \
                }                                                                       \
                _r;                                                                     \
        })

int con_user_by_uid(uid_t uid, char **ret_name, gid_t *ret_gid) {
        _cleanup_free_ char *buf = NULL;
        struct passwd pw, *res = NULL;

        int r = NSS_LOOKUP(getpwuid_r, uid, &pw, &res, buf);
        if (r == ENOMEM)
                return -ENOMEM;
        if (r != 0 || !res)
                return -ESRCH;  /* no entry, or the database cannot be read: no name either way */
        if (ret_name) {
                *ret_name = strdup(res->pw_name);
                if (!*ret_name)
                        return -ENOMEM;
        }
        if (ret_gid)
                *ret_gid = res->pw_gid;
        return 0;
}

int con_uid_to_name(uid_t uid, char **ret) {
        int r = con_user_by_uid(uid, ret, NULL);
        if (r != -ESRCH)
                return r;
        return asprintf(ret, "%u", (unsigned) uid) < 0 ? -ENOMEM : 0;
}

int con_user_gids(const char *user, gid_t gid, gid_t **ret, size_t *ret_n) {
        _cleanup_free_ gid_t *gids = NULL;
        int n = 64;

        if (!user || !ret || !ret_n)
                return -EINVAL;
        for (;;) {
                gid_t *g = reallocarray(gids, (size_t) n, sizeof(gid_t));
                if (!g)
                        return -ENOMEM;
                gids = g;
                int want = n;
                if (getgrouplist(user, gid, gids, &want) >= 0) {
                        n = want;
                        break;
                }
                /* glibc says how many there are; grow to that (or double, if it did not say). */
                int next = want > n ? want : n * 2;
                if (next > GROUPS_MAX)
                        return -E2BIG;
                n = next;
        }
        *ret = TAKE_PTR(gids);
        *ret_n = (size_t) n;
        return 0;
}

int con_user_group_names(const char *user, gid_t gid, char ***ret) {
        _cleanup_strv_free_ char **l = NULL;
        _cleanup_free_ gid_t *gids = NULL;
        _cleanup_free_ char *buf = NULL;
        size_t n;

        int r = con_user_gids(user, gid, &gids, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                struct group gr, *res = NULL;
                r = NSS_LOOKUP(getgrgid_r, gids[i], &gr, &res, buf);
                if (r == ENOMEM)
                        return -ENOMEM;
                if (r != 0 || !res || strv_contains(l, res->gr_name))
                        continue;
                r = strv_extend(&l, res->gr_name);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(l);
        return 0;
}
