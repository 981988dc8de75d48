/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/acl.h>
#include <sys/types.h>

#include "macro.h"

/* POSIX ACLs through libacl, on file descriptors (opened with O_NOFOLLOW by the caller), never
 * through the setfacl command. An ACL is described as the base mode's owner/group/other bits
 * plus a list of named entries; the mask is computed with acl_calc_mask(). Library code: no
 * logging. */

#define CON_ACL_R 4U
#define CON_ACL_W 2U
#define CON_ACL_X 1U

typedef struct ConAclEntry {
        acl_tag_t tag;          /* ACL_USER or ACL_GROUP */
        uint32_t id;            /* uid or gid */
        unsigned perms;         /* CON_ACL_R | CON_ACL_W | CON_ACL_X */
} ConAclEntry;

static inline void acl_freep(acl_t *a) {
        if (*a)
                (void) acl_free(*a);
}
#define _cleanup_acl_free_ _cleanup_(acl_freep)

/* An ACL from the owner/group/other bits of mode plus named entries (duplicates refused with
 * -EINVAL). With named entries a mask is added, computed with acl_calc_mask(). n == 0 gives the
 * minimal ACL equivalent to mode. */
int con_acl_build(mode_t mode, const ConAclEntry *entries, size_t n, acl_t *ret);

/* The permission bits (0777) the kernel reports in st_mode for a file carrying acl: the group
 * bits are the mask when there is one. */
int con_acl_mode_bits(acl_t acl, mode_t *ret);

/* Whether the fd's ACL of type (ACL_TYPE_ACCESS or ACL_TYPE_DEFAULT) equals want. want NULL
 * means "no default ACL" (only valid with ACL_TYPE_DEFAULT). Returns 1 equal, 0 different. */
int con_acl_fd_matches(int fd, acl_type_t type, acl_t want);
/* Sets the fd's ACL of type to want; want NULL removes the default ACL. */
int con_acl_fd_apply(int fd, acl_type_t type, acl_t want);

/* Short text form with numeric ids ("u::rwx,u:998:-wx,g::---,m::-wx,o::---"), for messages.
 * NULL on OOM. */
char *con_acl_to_short_text(acl_t acl);
