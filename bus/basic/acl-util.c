/* SPDX-License-Identifier: MIT */
#include <acl/libacl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl-util.h"
#include "macro.h"

static int add_entry(acl_t *acl, acl_tag_t tag, const uint32_t *id, unsigned perms) {
        acl_entry_t e;
        acl_permset_t ps;

        if (acl_create_entry(acl, &e) < 0 || acl_set_tag_type(e, tag) < 0)
                return negative_errno();
        if (id && acl_set_qualifier(e, id) < 0)
                return negative_errno();
        if (acl_get_permset(e, &ps) < 0 || acl_clear_perms(ps) < 0)
                return negative_errno();
        if ((perms & CON_ACL_R) && acl_add_perm(ps, ACL_READ) < 0)
                return negative_errno();
        if ((perms & CON_ACL_W) && acl_add_perm(ps, ACL_WRITE) < 0)
                return negative_errno();
        if ((perms & CON_ACL_X) && acl_add_perm(ps, ACL_EXECUTE) < 0)
                return negative_errno();
        if (acl_set_permset(e, ps) < 0)
                return negative_errno();
        return 0;
}

int con_acl_build(mode_t mode, const ConAclEntry *entries, size_t n, acl_t *ret) {
        _cleanup_acl_free_ acl_t acl = NULL;
        int r;

        acl = acl_init((int) n + 4);
        if (!acl)
                return negative_errno();
        r = add_entry(&acl, ACL_USER_OBJ, NULL, (mode >> 6) & 7);
        if (r < 0)
                return r;
        r = add_entry(&acl, ACL_GROUP_OBJ, NULL, (mode >> 3) & 7);
        if (r < 0)
                return r;
        r = add_entry(&acl, ACL_OTHER, NULL, mode & 7);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                if (entries[i].tag != ACL_USER && entries[i].tag != ACL_GROUP)
                        return -EINVAL;
                for (size_t j = 0; j < i; j++)
                        if (entries[j].tag == entries[i].tag && entries[j].id == entries[i].id)
                                return -EINVAL;
                r = add_entry(&acl, entries[i].tag, &entries[i].id, entries[i].perms & 7);
                if (r < 0)
                        return r;
        }
        if (n > 0 && acl_calc_mask(&acl) < 0)
                return negative_errno();
        if (acl_valid(acl) < 0)
                return -EINVAL;
        *ret = TAKE_PTR(acl);
        return 0;
}

static unsigned entry_perms(acl_entry_t e) {
        acl_permset_t ps;
        unsigned p = 0;

        if (acl_get_permset(e, &ps) < 0)
                return 0;
        if (acl_get_perm(ps, ACL_READ) > 0)
                p |= CON_ACL_R;
        if (acl_get_perm(ps, ACL_WRITE) > 0)
                p |= CON_ACL_W;
        if (acl_get_perm(ps, ACL_EXECUTE) > 0)
                p |= CON_ACL_X;
        return p;
}

int con_acl_mode_bits(acl_t acl, mode_t *ret) {
        unsigned u = 0, g = 0, o = 0, m = 0;
        bool has_mask = false;
        acl_entry_t e;
        int r;

        for (r = acl_get_entry(acl, ACL_FIRST_ENTRY, &e); r > 0; r = acl_get_entry(acl, ACL_NEXT_ENTRY, &e)) {
                acl_tag_t tag;

                if (acl_get_tag_type(e, &tag) < 0)
                        return negative_errno();
                switch (tag) {
                case ACL_USER_OBJ:
                        u = entry_perms(e);
                        break;
                case ACL_GROUP_OBJ:
                        g = entry_perms(e);
                        break;
                case ACL_OTHER:
                        o = entry_perms(e);
                        break;
                case ACL_MASK:
                        m = entry_perms(e);
                        has_mask = true;
                        break;
                default:
                        break;
                }
        }
        if (r < 0)
                return negative_errno();
        *ret = (mode_t) (u << 6 | (has_mask ? m : g) << 3 | o);
        return 0;
}

static int fd_proc_path(int fd, char buf[static 64]) {
        if (fd < 0)
                return -EBADF;
        snprintf(buf, 64, "/proc/self/fd/%i", fd);
        return 0;
}

static int fd_get(int fd, acl_type_t type, acl_t *ret) {
        char p[64];
        int r;

        if (type == ACL_TYPE_ACCESS)
                *ret = acl_get_fd(fd);
        else {
                /* libacl has no fd call for default ACLs: go through the fd's /proc link,
                 * which names the very inode the fd refers to. */
                r = fd_proc_path(fd, p);
                if (r < 0)
                        return r;
                *ret = acl_get_file(p, type);
        }
        return *ret ? 0 : negative_errno();
}

int con_acl_fd_matches(int fd, acl_type_t type, acl_t want) {
        _cleanup_acl_free_ acl_t cur = NULL;
        int r;

        if (!want && type != ACL_TYPE_DEFAULT)
                return -EINVAL;
        r = fd_get(fd, type, &cur);
        if (r < 0)
                return r;
        if (!want)
                return acl_entries(cur) == 0;
        if (acl_entries(cur) == 0)
                return 0;
        r = acl_cmp(cur, want);
        if (r < 0)
                return negative_errno();
        return r == 0;
}

int con_acl_fd_apply(int fd, acl_type_t type, acl_t want) {
        char p[64];
        int r;

        if (type == ACL_TYPE_ACCESS) {
                if (!want)
                        return -EINVAL;
                return acl_set_fd(fd, want) < 0 ? negative_errno() : 0;
        }
        r = fd_proc_path(fd, p);
        if (r < 0)
                return r;
        if (!want)
                return acl_delete_def_file(p) < 0 ? negative_errno() : 0;
        return acl_set_file(p, type, want) < 0 ? negative_errno() : 0;
}

char *con_acl_to_short_text(acl_t acl) {
        char *t = acl_to_any_text(acl, NULL, ',', TEXT_ABBREVIATE | TEXT_NUMERIC_IDS);
        char *c;

        if (!t)
                return NULL;
        c = strdup(t);
        acl_free(t);
        return c;
}
