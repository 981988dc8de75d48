/* SPDX-License-Identifier: MIT */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

/* The local user database: /etc/passwd, /etc/group, /etc/shadow and /etc/gshadow, read and
 * changed the way shadow-utils does it (lock, read, change lines, write a temp file and rename it
 * over the original, keeping the original's owner and mode). No useradd/groupadd.
 *
 * con bootstrap creates users, groups and memberships with systemd-sysusers (provision.c); this
 * module is what that tool cannot do: the plan (the ID choice in memory, so a dry run names the
 * IDs and the declaration pins them) and, after systemd-sysusers, the changes to existing users
 * (primary group, home, shell) and leaving a group (docs/BOOTSTRAP.md).
 *
 * Every function works below a root prefix ("" or "/" for the real system, a temp folder in
 * tests), so it can be unit-tested without root. Lines this code does not understand (comments,
 * NIS "+" entries, malformed lines) are kept byte for byte and ignored by lookups. Changes stay
 * in memory until con_userdb_save(). Library code: no logging. */

typedef struct ConUserDbFile {
        char *path;             /* full path, root prefix included */
        char **lines;           /* without the trailing newline */
        bool present;           /* the file existed when loaded */
        bool dirty;
        uid_t uid;              /* owner and mode of the original (or the defaults for a new file) */
        gid_t gid;
        mode_t mode;
} ConUserDbFile;

typedef struct ConUserDb {
        char *root;             /* "" for the real system */
        ConUserDbFile passwd, group, shadow, gshadow;
        uint32_t sys_uid_min, sys_uid_max;      /* SYS_UID_MIN/MAX of login.defs, default 100..999 */
        uint32_t sys_gid_min, sys_gid_max;
} ConUserDb;

typedef struct ConPasswdEntry {
        char *name;
        uid_t uid;
        gid_t gid;
        char *gecos, *home, *shell;
} ConPasswdEntry;

void con_passwd_entry_done(ConPasswdEntry *e);

/* What this code ever writes as a user or group: con_unix_name_valid() (names.h). */

/* Reads the four files (shadow and gshadow may be missing) and login.defs below root.
 * -ENOENT when passwd or group is missing. */
int con_userdb_load(const char *root, ConUserDb **ret);
ConUserDb *con_userdb_free(ConUserDb *db);
static inline void con_userdb_freep(ConUserDb **db) {
        con_userdb_free(*db);
}

/* The shadow-utils lock: lckpwdf() for the real system, an fcntl lock on <root>/etc/.pwd.lock
 * otherwise. Take it before con_userdb_load() when you intend to save. */
typedef struct ConUserDbLock {
        int fd;
        bool pwdf;
} ConUserDbLock;
#define CON_USERDB_LOCK_INIT ((ConUserDbLock) { .fd = -EBADF })
int con_userdb_lock(const char *root, ConUserDbLock *ret);
void con_userdb_unlock(ConUserDbLock *l);

/* Writes every changed file atomically (temp + fsync + rename, owner and mode of the original;
 * shadow files default to root:shadow 0640 when created). The previous content is kept as
 * "<file>-" like shadow-utils does. */
int con_userdb_save(ConUserDb *db);
bool con_userdb_dirty(const ConUserDb *db);

/* Lookups. -ENOENT when absent. */
int con_userdb_get_user(const ConUserDb *db, const char *name, ConPasswdEntry *ret);
int con_userdb_get_group(const ConUserDb *db, const char *name, gid_t *ret_gid, char ***ret_members);
/* How many passwd (group) entries use this id. */
unsigned con_userdb_uid_count(const ConUserDb *db, uid_t uid);
unsigned con_userdb_gid_count(const ConUserDb *db, gid_t gid);
/* The user (group) name of an id, or NULL. Points into a static-free copy: caller frees. */
int con_userdb_user_by_uid(const ConUserDb *db, uid_t uid, char **ret_name);

/* The highest id in [min, max] used neither as a UID nor as a GID (useradd -r allocates
 * downward from the maximum). -ENOSPC when the range is full. */
int con_userdb_alloc_id(const ConUserDb *db, uint32_t min, uint32_t max, uint32_t *ret);
/* The lowest id in [min, max] used neither as a UID nor as a GID (the agent range is filled upward,
 * so a caller allocating many keeps the last one + 1 as the next min). -ENOSPC when none. */
int con_userdb_alloc_id_up(const ConUserDb *db, uint32_t min, uint32_t max, uint32_t *ret);

/* Changes (in memory). -EEXIST when the name or id is taken, -EINVAL for a bad name or a field
 * containing ':' or a newline. */
int con_userdb_add_group(ConUserDb *db, const char *name, gid_t gid);
int con_userdb_add_user(ConUserDb *db, const char *name, uid_t uid, gid_t gid, const char *gecos,
                        const char *home, const char *shell);
/* Sets primary group, home and shell of an existing user; adds a missing shadow entry.
 * Returns 1 when something changed, 0 when not. */
int con_userdb_fix_user(ConUserDb *db, const char *name, gid_t gid, const char *home, const char *shell);
/* Removes a user (passwd and shadow lines) or a group (group and gshadow lines), as a rollback
 * does; memberships of a removed user are the caller's (con_userdb_set_member). 1 removed, 0 not
 * there, -EINVAL for an invalid name. */
int con_userdb_remove_user(ConUserDb *db, const char *name);
int con_userdb_remove_group(ConUserDb *db, const char *name);
/* Adds or removes user from the member lists of group in group and gshadow.
 * Returns 1 when something changed, 0 when not. */
int con_userdb_set_member(ConUserDb *db, const char *group, const char *user, bool member);
