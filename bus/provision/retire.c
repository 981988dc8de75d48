/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "con-paths.h"
#include "error-detail.h"
#include "fileio.h"
#include "macro.h"
#include "names.h"
#include "retire.h"
#include "userdb.h"

#define RM_DEPTH_MAX 128

static int rm_tree_depth(int parent_fd, const char *name, unsigned depth) {
        struct stat st;

        if (fstatat(parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 0 : negative_errno();
        if (!S_ISDIR(st.st_mode))
                return unlinkat(parent_fd, name, 0) < 0 && errno != ENOENT ? negative_errno() : 0;
        if (depth > RM_DEPTH_MAX)
                return -ELOOP;

        int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        _cleanup_(closedirp) DIR *d = fdopendir(fd);
        if (!d) {
                int r = negative_errno();
                close(fd);
                return r;
        }
        struct dirent *de;
        while ((errno = 0, de = readdir(d))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                int r = rm_tree_depth(dirfd(d), de->d_name, depth + 1);
                if (r < 0)
                        return r;
        }
        if (errno != 0)
                return negative_errno();
        return unlinkat(parent_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT ? negative_errno() : 0;
}

int con_rm_tree_at(int dirfd, const char *name) {
        return rm_tree_depth(dirfd, name, 0);
}

static int open_dir(const char *root, const char *path, int *ret) {
        _cleanup_free_ char *full = NULL;
        if (asprintf(&full, "%s%s", root, path) < 0)
                return -ENOMEM;
        int fd = open_nofollow(full, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (fd < 0)
                return fd;
        *ret = fd;
        return 0;
}

int con_retire_agent(const ConRetireOptions *o, char **ret_archive, char **ret_error) {
        const char *root = !o->root || streq(o->root, "/") ? "" : o->root;
        _cleanup_free_ char *user = NULL, *archive = NULL;
        _cleanup_close_ int agents_fd = -EBADF, srv_fd = -EBADF, home_fd = -EBADF;
        int r;

        if (!con_agent_name_valid(o->name))
                return con_error_textf(ret_error, -EINVAL, "'%s' is not a valid agent name", o->name);
        r = con_agent_user(o->name, &user);
        if (r < 0)
                return r;

        /* The folder: archived (a rename, so nothing is copied or lost) or removed. */
        r = open_dir(root, CON_SRV_DIR "/agents", &agents_fd);
        if (r < 0 && r != -ENOENT)
                return con_error_textf(ret_error, r, "cannot open " CON_SRV_DIR "/agents: %s", strerror(-r));
        if (agents_fd >= 0 && faccessat(agents_fd, o->name, F_OK, AT_SYMLINK_NOFOLLOW) >= 0) {
                if (o->archive) {
                        char stamp[32];
                        time_t t = (time_t) (o->now_usec / 1000000);
                        struct tm tm;
                        if (!gmtime_r(&t, &tm) || strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm) == 0)
                                return -EINVAL;
                        r = open_dir(root, CON_SRV_DIR, &srv_fd);
                        if (r < 0)
                                return con_error_textf(ret_error, r, "cannot open " CON_SRV_DIR ": %s", strerror(-r));
                        if (mkdirat(srv_fd, CON_ARCHIVE_DIR_NAME, 0700) < 0 && errno != EEXIST)
                                return con_error_textf(ret_error, negative_errno(), "cannot create " CON_SRV_DIR "/"
                                                       CON_ARCHIVE_DIR_NAME ": %m");
                        _cleanup_close_ int archive_fd = openat(srv_fd, CON_ARCHIVE_DIR_NAME,
                                                                O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (archive_fd < 0)
                                return con_error_textf(ret_error, negative_errno(), "cannot open " CON_SRV_DIR "/"
                                                       CON_ARCHIVE_DIR_NAME ": %m");
                        _cleanup_free_ char *aname = NULL;
                        if (asprintf(&aname, "%s-%s", o->name, stamp) < 0 ||
                            asprintf(&archive, CON_SRV_DIR "/" CON_ARCHIVE_DIR_NAME "/%s", aname) < 0)
                                return -ENOMEM;
                        if (renameat(agents_fd, o->name, archive_fd, aname) < 0)
                                return con_error_textf(ret_error, negative_errno(), "cannot move " CON_SRV_DIR
                                                       "/agents/%s to %s: %m", o->name, archive);
                } else {
                        r = con_rm_tree_at(agents_fd, o->name);
                        if (r < 0)
                                return con_error_textf(ret_error, r, "cannot remove " CON_SRV_DIR "/agents/%s: %s",
                                                       o->name, strerror(-r));
                }
        }

        /* The home: root's, it holds the generated AGENTS.md only. */
        r = open_dir(root, CON_HOME_ROOT, &home_fd);
        if (r >= 0) {
                r = con_rm_tree_at(home_fd, user);
                if (r < 0)
                        return con_error_textf(ret_error, r, "cannot remove " CON_HOME_ROOT "/%s: %s", user, strerror(-r));
        }

        /* The user and its memberships. */
        {
                _cleanup_(con_userdb_freep) ConUserDb *db = NULL;
                ConUserDbLock lock = CON_USERDB_LOCK_INIT;
                r = con_userdb_lock(root, &lock);
                if (r < 0)
                        return con_error_textf(ret_error, r, "cannot lock the user database: %s", strerror(-r));
                r = con_userdb_load(root, &db);
                if (r >= 0) {
                        static const char * const groups[] = { "officers", "operators", "workers", "trusted", "agents" };
                        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(groups); i++) {
                                r = con_userdb_set_member(db, groups[i], user, false);
                                if (r == -ENOENT)
                                        r = 0;  /* no such group here */
                        }
                }
                if (r >= 0)
                        r = con_userdb_remove_user(db, user);
                if (r >= 0 && con_userdb_dirty(db))
                        r = con_userdb_save(db);
                con_userdb_unlock(&lock);
                if (r < 0)
                        return con_error_textf(ret_error, r, "cannot remove the user %s: %s", user, strerror(-r));
        }

        if (ret_archive)
                *ret_archive = TAKE_PTR(archive);
        return 0;
}
