/* SPDX-License-Identifier: MIT */
#include <acl/libacl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "error-detail.h"
#include "acl-util.h"
#include "assemble.h"
#include "con-paths.h"
#include "conffile.h"
#include "fileio.h"
#include "macro.h"
#include "mesh-pki.h"
#include "names.h"
#include "platform.h"
#include "policy.h"
#include "provision.h"
#include "sha256.h"
#include "strv.h"
#include "userdb.h"

#define AGENTS_GROUP "agents"
#define TRUSTED_GROUP "trusted"
#define AGENT_SHELL "/usr/sbin/nologin"
#define SOURCE_FILE_MAX (4U * 1024U * 1024U)
/* The users and groups, declared for systemd-sysusers (sysusers.d(5)); kept, so the declaration
 * is what a package would ship and systemd-sysusers.service re-creates a deleted agent user. */
#define SYSUSERS_PATH "/etc/sysusers.d/conspiracyos.conf"
#define SYSTEMD_SYSUSERS "/usr/bin/systemd-sysusers"

static const char * const tier_groups[_CON_TIER_MAX] = {
        [CON_TIER_OFFICER] = "officers",
        [CON_TIER_OPERATOR] = "operators",
        [CON_TIER_WORKER] = "workers",
};

typedef enum ActionKind {
        ACTION_USERDB,          /* a user database item, already decided while planning */
        ACTION_DIR,
        ACTION_FILE,
        ACTION_ATTRS,           /* a file whose contents belong to the admin: created empty when
                                 * missing, otherwise only owner, mode and ACL are set */
        ACTION_REMOVE,          /* a file bootstrap installed that is no longer wanted: removed */
} ActionKind;

typedef struct Action {
        ActionKind kind;
        char *path;
        char *change;           /* USERDB: the change, NULL when the item is up to date */
        uid_t uid;
        gid_t gid;
        char *owner;            /* "user:group" for messages */
        mode_t mode;            /* wanted st_mode & 07777 (group bits = ACL mask) */
        bool create_only;       /* DIR: create when missing, never touch an existing one */
        acl_t access;           /* wanted access ACL, always set */
        acl_t def;              /* DIR: wanted default ACL, NULL = none */
        char *content;          /* FILE */
        size_t len;
        const char *verb;       /* FILE: what replacing an existing file is called ("write") */
        const char *why;        /* FILE, REMOVE: said in parentheses after the path, or NULL */
        bool secret;            /* FILE: content is a private key, zeroed when freed */
} Action;

/* One change a failed run reverts: a path it created (removed again), or a file it replaced
 * (written back with its old content, owner and mode). */
typedef struct Undo {
        char *path;
        bool created;
        char *content;
        size_t len;
        struct stat st;
} Undo;

typedef struct AclList {
        ConAclEntry *e;
        size_t n;
} AclList;

/* A change to an existing user systemd-sysusers never makes: primary group, home and shell of a
 * user (fix), or leaving a group (remove). */
typedef struct Fixup {
        char *user;
        char *group;            /* remove: the group to leave; NULL for a fix */
        gid_t gid;
        char *home;
        char *shell;
} Fixup;

struct ConProvision {
        char *root;             /* "" for the real system; a test folder in the unit test */
        char *profiles_dir;     /* where the profiles are (CON_PROFILESDIR) */
        ConConfig *config;
        char *config_path;
        char *outer_root;       /* where layers, skills and contracts come from */
        char *profile_dir;      /* the profile installed to /etc/con, or NULL */
        ConUserDb *db;
        ConUserDbLock lock;
        Action *actions;
        size_t n_actions;
        size_t userdb_end;      /* index after the last USERDB action */
        char **warnings;
        char **dirs_seen;       /* create_only parents already planned */
        char *sysusers;         /* the sysusers.d lines of every user, group and membership */
        Fixup *fixups;          /* what systemd-sysusers cannot do, applied by userdb.c after it */
        size_t n_fixups;
        uint32_t next_agent_uid;  /* where the search for the next agent UID starts; 0 before the first */
        char **created_users;   /* planned "create user" items: what a rollback removes */
        char **created_groups;
        Undo *undo;             /* what the run changed on disk, in order: a rollback reverts it */
        size_t n_undo;
        bool userdb_applied;
        unsigned fail_after;    /* test hook: fail before the Nth change (0: never) */
        bool force;             /* --force: files changed here are replaced too */
        bool mesh_credentials;  /* make or check this host's mesh certificate (con bootstrap) */
        char *mesh_request;     /* this host's certificate must come from the CA's host: what to do */
        /* What bootstrap installed into /etc/con (conffile.h), read when a profile or --config
         * FILE is installed: the record (updated by the plan and written last), whether it
         * existed, the earlier versions of the profiles' files (paths below /etc/con), and the
         * paths this run installs. */
        bool record_loaded;
        bool record_existed;
        ConFileHashes record;
        ConFileHashes history;
        char **conffiles;
};

static const char *path_error(int r) {
        switch (r) {
        case -ELOOP:
                return "it or one of its parent directories is a symbolic link; refusing to follow it";
        case -ENOTDIR:
                return "a parent is not a directory";
        default:
                return strerror(-r);
        }
}

/* ---- policy ---------------------------------------------------------------------------- */

static int acl_list_add(AclList *l, acl_tag_t tag, uint32_t id, unsigned perms) {
        ConAclEntry *ne;

        for (size_t i = 0; i < l->n; i++)
                if (l->e[i].tag == tag && l->e[i].id == id) {
                        l->e[i].perms |= perms;
                        return 0;
                }
        ne = realloc(l->e, sizeof(*ne) * (l->n + 1));
        if (!ne)
                return -ENOMEM;
        l->e = ne;
        l->e[l->n++] = (ConAclEntry) { .tag = tag, .id = id, .perms = perms };
        return 0;
}

/* ---- actions --------------------------------------------------------------------------- */

static void action_done(Action *a) {
        free(a->path);
        free(a->change);
        free(a->owner);
        if (a->access)
                acl_free(a->access);
        if (a->def)
                acl_free(a->def);
        if (a->secret && a->content)
                explicit_bzero(a->content, a->len);
        free(a->content);
}

/* path below the root the system is provisioned in. */
static int rooted(const ConProvision *p, const char *path, char **ret) {
        if (asprintf(ret, "%s%s", p->root, path) < 0) {
                *ret = NULL;
                return -ENOMEM;
        }
        return 0;
}

static Action *action_new(ConProvision *p, ActionKind kind, const char *path) {
        Action *na = realloc(p->actions, sizeof(*na) * (p->n_actions + 1));
        Action *a;

        if (!na)
                return NULL;
        p->actions = na;
        a = &na[p->n_actions];
        *a = (Action) { .kind = kind };
        if (path && rooted(p, path, &a->path) < 0)
                return NULL;
        p->n_actions++;
        return a;
}

static int userdb_item(ConProvision *p, char *change_or_null) {
        Action *a = action_new(p, ACTION_USERDB, NULL);
        if (!a) {
                free(change_or_null);
                return -ENOMEM;
        }
        a->change = change_or_null;
        return 0;
}

static int sysusers_line(ConProvision *p, const char *fmt, ...) _printf_(2, 3);
static int sysusers_line(ConProvision *p, const char *fmt, ...) {
        _cleanup_free_ char *line = NULL;
        char *n;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&line, fmt, ap);
        va_end(ap);
        if (r < 0) {
                line = NULL;
                return -ENOMEM;
        }
        if (asprintf(&n, "%s%s\n", strempty(p->sysusers), line) < 0)
                return -ENOMEM;
        free(p->sysusers);
        p->sysusers = n;
        return 0;
}

static int fixup_add(ConProvision *p, const char *user, const char *group, gid_t gid, const char *home,
                     const char *shell) {
        Fixup *n = realloc(p->fixups, sizeof(*n) * (p->n_fixups + 1));
        Fixup *f;

        if (!n)
                return -ENOMEM;
        p->fixups = n;
        f = &n[p->n_fixups++];
        *f = (Fixup) {
                .user = strdup(user),
                .group = group ? strdup(group) : NULL,
                .gid = gid,
                .home = home ? strdup(home) : NULL,
                .shell = shell ? strdup(shell) : NULL,
        };
        if (!f->user || (group && !f->group) || (home && !f->home) || (shell && !f->shell))
                return -ENOMEM;
        return 0;
}

static int owner_names(const char *user, const char *group, char **ret) {
        return asprintf(ret, "%s:%s", user, group) < 0 ? -ENOMEM : 0;
}

static int resolve(ConProvision *p, const char *user, const char *group, uid_t *ret_uid, gid_t *ret_gid) {
        _cleanup_(con_passwd_entry_done) ConPasswdEntry pw = {};
        int r;

        if (streq(user, "root"))
                *ret_uid = 0;
        else {
                r = con_userdb_get_user(p->db, user, &pw);
                if (r < 0)
                        return r;
                *ret_uid = pw.uid;
        }
        if (streq(group, "root"))
                *ret_gid = 0;
        else {
                r = con_userdb_get_group(p->db, group, ret_gid, NULL);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Owner (names and resolved ids) and, for plain files, mode and an ACL without named entries. */
static int action_set_owner(ConProvision *p, Action *a, const char *user, const char *group) {
        int r = resolve(p, user, group, &a->uid, &a->gid);
        if (r < 0)
                return r;
        return owner_names(user, group, &a->owner);
}

static int action_set_file_mode(ConProvision *p, Action *a, const char *user, const char *group, mode_t mode) {
        a->mode = mode & 07777;
        int r = action_set_owner(p, a, user, group);
        if (r < 0)
                return r;
        return con_acl_build(mode, NULL, 0, &a->access);
}

/* A managed directory: owner, mode (special bits + base rwx), named access entries, and an
 * optional default ACL (base bits + named entries). */
static int add_dir(ConProvision *p, const char *path, const char *user, const char *group, mode_t mode,
                   const AclList *access, const AclList *def_list, mode_t def_mode, bool create_only) {
        Action *a;
        mode_t bits;
        int r;

        a = action_new(p, ACTION_DIR, path);
        if (!a)
                return -ENOMEM;
        a->create_only = create_only;
        r = action_set_owner(p, a, user, group);
        if (r < 0)
                return r;
        r = con_acl_build(mode, access ? access->e : NULL, access ? access->n : 0, &a->access);
        if (r < 0)
                return r;
        r = con_acl_mode_bits(a->access, &bits);
        if (r < 0)
                return r;
        a->mode = (mode & 07000) | bits;
        if (def_list) {
                r = con_acl_build(def_mode, def_list->e, def_list->n, &a->def);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Takes ownership of content. */
static int add_file(ConProvision *p, const char *path, char *content, size_t len, const char *user,
                    const char *group, mode_t mode) {
        Action *a = action_new(p, ACTION_FILE, path);

        if (!a) {
                free(content);
                return -ENOMEM;
        }
        a->content = content;
        a->len = len;
        return action_set_file_mode(p, a, user, group, mode);
}

/* A file the admin fills (e.g. the key file): bootstrap never reads or writes its contents. */
static int add_attrs(ConProvision *p, const char *path, const char *user, const char *group, mode_t mode) {
        Action *a = action_new(p, ACTION_ATTRS, path);

        if (!a)
                return -ENOMEM;
        return action_set_file_mode(p, a, user, group, mode);
}

/* Every missing ancestor of path (not path itself): created root:root 0755, existing ones are
 * left alone. */
static int add_parents(ConProvision *p, const char *path) {
        _cleanup_free_ char *copy = strdup(path);

        if (!copy)
                return -ENOMEM;
        for (char *s = strchr(copy + 1, '/'); s; s = strchr(s + 1, '/')) {
                int r;

                *s = 0;
                if (!strv_contains(p->dirs_seen, copy)) {
                        r = strv_extend(&p->dirs_seen, copy);
                        if (r < 0)
                                return r;
                        r = add_dir(p, copy, "root", "root", 0755, NULL, NULL, 0, true);
                        if (r < 0)
                                return r;
                }
                *s = '/';
        }
        return 0;
}

/* ---- checks and applies ---------------------------------------------------------------- */

static int check_attrs(const Action *a, int fd, const struct stat *st, char ***changes) {
        int r;

        if (st->st_uid != a->uid || st->st_gid != a->gid) {
                r = strv_extendf(changes, "set owner %s (%s)", a->path, a->owner);
                if (r < 0)
                        return r;
        }
        if ((st->st_mode & 07777) != a->mode) {
                r = strv_extendf(changes, "set mode %s (%04o)", a->path, (unsigned) a->mode);
                if (r < 0)
                        return r;
        }
        r = con_acl_fd_matches(fd, ACL_TYPE_ACCESS, a->access);
        if (r < 0)
                return r;
        if (r == 0) {
                r = strv_extendf(changes, "set acl %s", a->path);
                if (r < 0)
                        return r;
        }
        if (a->kind == ACTION_DIR) {
                r = con_acl_fd_matches(fd, ACL_TYPE_DEFAULT, a->def);
                if (r < 0)
                        return r;
                if (r == 0) {
                        r = strv_extendf(changes, a->def ? "set default acl %s" : "remove default acl %s", a->path);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int apply_attrs(const Action *a, int fd) {
        int r;

        if (fchown(fd, a->uid, a->gid) < 0)
                return negative_errno();
        /* After fchown, which may clear special bits. */
        if (fchmod(fd, a->mode) < 0)
                return negative_errno();
        r = con_acl_fd_matches(fd, ACL_TYPE_ACCESS, a->access);
        if (r == 0)
                r = con_acl_fd_apply(fd, ACL_TYPE_ACCESS, a->access);
        if (r < 0)
                return r;
        if (a->kind == ACTION_DIR) {
                r = con_acl_fd_matches(fd, ACL_TYPE_DEFAULT, a->def);
                if (r == 0)
                        r = con_acl_fd_apply(fd, ACL_TYPE_DEFAULT, a->def);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Opens the managed path: fd >= 0, -ENOENT when it (or a parent) is missing, or an error with
 * a message. */
static int open_managed(const Action *a, char **ret_error) {
        struct stat st;
        int fd;

        fd = open_nofollow(a->path, a->kind == ACTION_DIR ? O_RDONLY | O_DIRECTORY : O_RDONLY | O_NONBLOCK, 0);
        if (fd == -ENOENT)
                return fd;
        if (fd == -ENOTDIR && a->kind == ACTION_DIR)
                return con_error_textf(ret_error, -ENOTDIR, "%s: exists and is not a directory (or a parent is not one)",
                              a->path);
        if (fd < 0)
                return con_error_textf(ret_error, fd, "%s: %s", a->path, path_error(fd));
        if (a->kind != ACTION_DIR && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
                safe_close(fd);
                return con_error_textf(ret_error, -EISDIR, "%s: exists and is not a regular file", a->path);
        }
        return fd;
}

static int action_check(const Action *a, char ***changes, char **ret_error) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *cur = NULL;
        struct stat st;
        size_t len;
        int r;

        if (a->kind == ACTION_USERDB)
                return a->change ? strv_extend(changes, a->change) : 0;

        fd = open_managed(a, ret_error);
        if (fd == -ENOENT) {
                if (a->kind == ACTION_DIR) {
                        r = strv_extendf(changes, "create directory %s (%s %04o)", a->path, a->owner,
                                         (unsigned) a->mode);
                        if (r >= 0 && acl_entries(a->access) > 3)
                                r = strv_extendf(changes, "set acl %s", a->path);
                        if (r >= 0 && a->def)
                                r = strv_extendf(changes, "set default acl %s", a->path);
                        return r;
                }
                if (a->kind == ACTION_ATTRS)
                        return strv_extendf(changes, "create empty %s (%s %04o)", a->path, a->owner,
                                            (unsigned) a->mode);
                if (a->kind == ACTION_REMOVE)
                        return 0;
                return strv_extendf(changes, "write %s", a->path);
        }
        if (fd < 0)
                return fd;
        if (a->kind == ACTION_REMOVE)
                return strv_extendf(changes, "remove %s%s%s%s", a->path, a->why ? " (" : "", strempty(a->why),
                                    a->why ? ")" : "");
        if (fstat(fd, &st) < 0)
                return con_error_textf(ret_error, negative_errno(), "%s: %m", a->path);
        if (a->kind == ACTION_DIR && a->create_only)
                return 0;
        if (a->kind == ACTION_FILE) {
                r = read_fd(fd, a->len + 1, &cur, &len);
                if (r < 0 && r != -EFBIG)
                        return con_error_textf(ret_error, r, "%s: %s", a->path, strerror(-r));
                if (r == -EFBIG || len != a->len || memcmp(cur, a->content, len) != 0)
                        return strv_extendf(changes, "%s %s%s%s%s", a->verb ?: "write", a->path, a->why ? " (" : "",
                                            strempty(a->why), a->why ? ")" : "");
        }
        r = check_attrs(a, fd, &st, changes);
        if (r < 0)
                return con_error_textf(ret_error, r, "%s: cannot read owner, mode or ACL: %s", a->path, strerror(-r));
        return 0;
}

static int action_apply(const Action *a, char **ret_error) {
        _cleanup_close_ int fd = -EBADF, dfd = -EBADF;
        const char *name;
        int r;

        if (a->kind == ACTION_USERDB)
                return 0;

        if (a->kind == ACTION_REMOVE) {
                dfd = open_parent_nofollow(a->path, &name);
                if (dfd == -ENOENT)
                        return 0;
                if (dfd < 0)
                        return con_error_textf(ret_error, dfd, "%s: cannot open parent directory: %s", a->path,
                                      path_error(dfd));
                if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
                        return con_error_textf(ret_error, negative_errno(), "%s: cannot remove: %m", a->path);
                return 0;
        }

        if (a->kind == ACTION_ATTRS) {
                fd = open_managed(a, ret_error);
                if (fd == -ENOENT) {
                        /* O_EXCL: a file that appeared meanwhile is never truncated. */
                        dfd = open_parent_nofollow(a->path, &name);
                        if (dfd < 0)
                                return con_error_textf(ret_error, dfd, "%s: cannot open parent directory: %s", a->path,
                                              path_error(dfd));
                        fd = openat(dfd, name, O_RDONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0);
                        if (fd < 0 && errno == EEXIST)
                                fd = open_managed(a, ret_error);
                        else if (fd < 0)
                                return con_error_textf(ret_error, negative_errno(), "%s: cannot create: %m", a->path);
                }
                if (fd < 0)
                        return fd;
                r = apply_attrs(a, fd);
                if (r < 0)
                        return con_error_textf(ret_error, r, "%s: cannot set owner, mode or ACL: %s", a->path, strerror(-r));
                return 0;
        }

        if (a->kind == ACTION_FILE) {
                fd = open_managed(a, ret_error);
                if (fd < 0 && fd != -ENOENT)
                        return fd;
                if (fd >= 0) {
                        _cleanup_free_ char *cur = NULL;
                        size_t len;
                        r = read_fd(fd, a->len + 1, &cur, &len);
                        if (r >= 0 && len == a->len && memcmp(cur, a->content, len) == 0) {
                                r = apply_attrs(a, fd);
                                if (r < 0)
                                        return con_error_textf(ret_error, r, "%s: %s", a->path, strerror(-r));
                                return 0;
                        }
                }
                r = write_file_atomic(a->path, a->content, a->len, a->mode, a->uid, a->gid);
                if (r < 0)
                        return con_error_textf(ret_error, r, "%s: cannot write: %s", a->path, path_error(r));
                /* A default ACL of the directory may have been inherited by the new file. */
                safe_close(TAKE_FD(fd));
                fd = open_managed(a, ret_error);
                if (fd < 0)
                        return fd;
                r = apply_attrs(a, fd);
                if (r < 0)
                        return con_error_textf(ret_error, r, "%s: %s", a->path, strerror(-r));
                return 0;
        }

        dfd = open_parent_nofollow(a->path, &name);
        if (dfd < 0)
                return con_error_textf(ret_error, dfd, "%s: cannot open parent directory: %s", a->path, path_error(dfd));
        if (mkdirat(dfd, name, 0700) < 0) {
                if (errno != EEXIST)
                        return con_error_textf(ret_error, negative_errno(), "%s: cannot create directory: %m", a->path);
                if (a->create_only)
                        return 0;
        }
        fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                r = errno == ENOTDIR ? enotdir_or_eloop(dfd, name) : negative_errno();
                return con_error_textf(ret_error, r, "%s: %s", a->path,
                              r == -ENOTDIR ? "exists and is not a directory" : path_error(r));
        }
        r = apply_attrs(a, fd);
        if (r < 0)
                return con_error_textf(ret_error, r, "%s: cannot set owner, mode or ACL: %s", a->path, strerror(-r));
        return 0;
}

/* Runs systemd-sysusers on the declaration (written by the action before this point) and
 * waits for it. Its messages ("Creating user ...") are the caller's to see: stdout is dropped,
 * stderr kept for the error. */
static int run_sysusers(ConProvision *p, char **ret_error) {
        _cleanup_free_ char *conf = NULL, *rootarg = NULL;
        _cleanup_close_ int rfd = -EBADF;
        int pipefd[2], status;
        char err[512] = "";
        size_t n = 0;
        pid_t pid;
        int r;

        r = rooted(p, SYSUSERS_PATH, &conf);
        if (r < 0)
                return r;
        if (!isempty(p->root) && asprintf(&rootarg, "--root=%s", p->root) < 0) {
                rootarg = NULL;
                return -ENOMEM;
        }
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return negative_errno();
        pid = fork();
        if (pid < 0) {
                r = negative_errno();
                safe_close(pipefd[0]);
                safe_close(pipefd[1]);
                return r;
        }
        if (pid == 0) {
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(null, STDOUT_FILENO) < 0 ||
                    dup2(pipefd[1], STDERR_FILENO) < 0)
                        _exit(127);
                if (rootarg)
                        execl(SYSTEMD_SYSUSERS, SYSTEMD_SYSUSERS, rootarg, conf, (char *) NULL);
                else
                        execl(SYSTEMD_SYSUSERS, SYSTEMD_SYSUSERS, conf, (char *) NULL);
                _exit(127);
        }
        safe_close(pipefd[1]);
        rfd = pipefd[0];
        for (;;) {
                char buf[256];
                ssize_t k = read(rfd, buf, sizeof buf);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                size_t room = sizeof(err) - 1 - n, take = (size_t) k < room ? (size_t) k : room;
                memcpy(err + n, buf, take);
                n += take;
        }
        err[n] = 0;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return con_error_textf(ret_error, negative_errno(), "cannot wait for " SYSTEMD_SYSUSERS ": %m");
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                /* keep the last line: systemd-sysusers says what it refused there */
                while (n > 0 && err[n - 1] == '\n')
                        err[--n] = 0;
                const char *last = strrchr(err, '\n');
                return con_error_textf(ret_error, -EIO, SYSTEMD_SYSUSERS " %s failed (%s %d)%s%s", conf,
                              WIFEXITED(status) ? "exit status" : "signal",
                              WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), n ? ": " : "",
                              last ? last + 1 : err);
        }
        return 0;
}

/* The user database: systemd-sysusers creates the users, groups and memberships of the
 * declaration (it takes the shadow-utils lock itself, so ours is released first); what it never
 * does (changing an existing user, leaving a group) is then applied with userdb.c under the lock
 * again, on the files as systemd-sysusers left them. */
static int apply_userdb(ConProvision *p, char **ret_error) {
        _cleanup_(con_userdb_freep) ConUserDb *db = NULL;
        int r;

        con_userdb_unlock(&p->lock);
        r = run_sysusers(p, ret_error);
        if (r < 0)
                return r;
        if (p->n_fixups == 0)
                return 0;
        r = con_userdb_lock(p->root, &p->lock);
        if (r < 0)
                return con_error_textf(ret_error, r, "cannot lock the user database (%s/etc/.pwd.lock): %s", p->root,
                              strerror(-r));
        r = con_userdb_load(p->root, &db);
        if (r < 0)
                return con_error_textf(ret_error, r, "cannot read the user database in %s/etc: %s", p->root, strerror(-r));
        for (size_t i = 0; i < p->n_fixups; i++) {
                const Fixup *f = &p->fixups[i];
                r = f->group ? con_userdb_set_member(db, f->group, f->user, false)
                             : con_userdb_fix_user(db, f->user, f->gid, f->home, f->shell);
                if (r < 0)
                        return con_error_textf(ret_error, r, "cannot update user '%s': %s", f->user, strerror(-r));
        }
        r = con_userdb_save(db);
        if (r < 0)
                return con_error_textf(ret_error, r, "cannot write the user database below %s/etc: %s", p->root, strerror(-r));
        return 0;
}

/* Before an action changes a path: what reverts it. Paths that exist and are not regular files
 * (folders, whose owner, mode or ACL change) are left as they are by a rollback. */
static int undo_record(ConProvision *p, const Action *a) {
        _cleanup_free_ char *content = NULL;
        Undo *n, u = {};
        size_t len = 0;
        int r;

        if (a->kind == ACTION_USERDB)
                return 0;
        if (lstat(a->path, &u.st) < 0) {
                if (errno != ENOENT || a->kind == ACTION_REMOVE)
                        return 0;
                u.created = true;
        } else if ((a->kind == ACTION_FILE || a->kind == ACTION_REMOVE) && S_ISREG(u.st.st_mode)) {
                _cleanup_close_ int fd = open(a->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
                if (fd < 0)
                        return 0;
                r = read_fd(fd, SOURCE_FILE_MAX, &content, &len);
                if (r < 0)
                        return 0;
        } else
                return 0;
        n = realloc(p->undo, sizeof(*n) * (p->n_undo + 1));
        if (!n)
                return -ENOMEM;
        p->undo = n;
        u.path = strdup(a->path);
        if (!u.path)
                return -ENOMEM;
        u.content = TAKE_PTR(content);
        u.len = len;
        p->undo[p->n_undo++] = u;
        return 0;
}

/* Reverts a failed run: files written back, paths it created removed (last first, so folders are
 * empty by then), then the users and groups it created removed from the user database. Returns
 * how many things it could not revert. */
static unsigned rollback(ConProvision *p, unsigned *ret_reverted) {
        unsigned failed = 0, reverted = 0;
        int r;

        for (size_t i = p->n_undo; i > 0; i--) {
                const Undo *u = &p->undo[i - 1];
                if (u->created)
                        r = (unlink(u->path) < 0 && (errno != EISDIR || rmdir(u->path) < 0)) ? -errno : 0;
                else
                        r = write_file_atomic(u->path, u->content, u->len, u->st.st_mode & 07777, u->st.st_uid,
                                              u->st.st_gid);
                if (r < 0 && r != -ENOENT)
                        failed++;
                else
                        reverted++;
        }
        if (p->userdb_applied && (p->created_users || p->created_groups)) {
                _cleanup_(con_userdb_freep) ConUserDb *db = NULL;
                bool locked = p->lock.pwdf || p->lock.fd >= 0 || con_userdb_lock(p->root, &p->lock) >= 0;

                r = locked ? con_userdb_load(p->root, &db) : -EBUSY;
                if (r < 0)
                        failed += strv_length(p->created_users) + strv_length(p->created_groups);
                else {
                        STRV_FOREACH(u, p->created_users) {
                                for (ConTier t = CON_TIER_OFFICER; t < _CON_TIER_MAX; t++)
                                        (void) con_userdb_set_member(db, tier_groups[t], *u, false);
                                if (con_userdb_remove_user(db, *u) > 0)
                                        reverted++;
                        }
                        STRV_FOREACH(g, p->created_groups)
                                if (con_userdb_remove_group(db, *g) > 0)
                                        reverted++;
                        if (con_userdb_dirty(db) && con_userdb_save(db) < 0)
                                failed += strv_length(p->created_users) + strv_length(p->created_groups);
                }
        }
        if (ret_reverted)
                *ret_reverted = reverted;
        return failed;
}

static int provision_apply(ConProvision *p, bool dry_run, ConProvisionReportFn report, void *userdata,
                           unsigned *ret_checked, unsigned *ret_changed, char **ret_error);

int con_provision_run(ConProvision *p, bool dry_run, ConProvisionReportFn report, void *userdata,
                      unsigned *ret_checked, unsigned *ret_changed, char **ret_error) {
        unsigned reverted = 0, failed;
        char *e;
        int r;

        r = provision_apply(p, dry_run, report, userdata, ret_checked, ret_changed, ret_error);
        if (r >= 0 || dry_run)
                return r;
        failed = rollback(p, &reverted);
        if (ret_error && *ret_error) {
                if (asprintf(&e, "%s; %s (%u change%s reverted%s)", *ret_error,
                             failed ? "rolling back failed in part" : "rolled back", reverted, reverted == 1 ? "" : "s",
                             failed ? ", some could not be: see above" : "") >= 0) {
                        free(*ret_error);
                        *ret_error = e;
                }
        }
        return r;
}

static int provision_apply(ConProvision *p, bool dry_run, ConProvisionReportFn report, void *userdata,
                           unsigned *ret_checked, unsigned *ret_changed, char **ret_error) {
        unsigned checked = 0, changed = 0;
        int r;

        for (size_t i = 0; i <= p->n_actions; i++) {
                _cleanup_strv_free_ char **changes = NULL;

                /* The user database is written in one go after its last item, before any
                 * directory is chowned to a new user. */
                if (i == p->userdb_end && !dry_run && con_userdb_dirty(p->db)) {
                        p->userdb_applied = true;
                        r = apply_userdb(p, ret_error);
                        if (r < 0)
                                return r;
                }
                if (i == p->n_actions)
                        break;

                r = action_check(&p->actions[i], &changes, ret_error);
                if (r == -ENOMEM)
                        return con_error_textf(ret_error, r, "out of memory");
                if (r < 0)
                        return r;
                checked++;
                if (!changes)
                        continue;
                changed++;
                STRV_FOREACH(c, changes)
                        if (report)
                                report(*c, userdata);
                if (dry_run)
                        continue;
                if (p->fail_after > 0 && changed >= p->fail_after)
                        return con_error_textf(ret_error, -EIO, "%s: failure injected before change %u (test)",
                                      p->actions[i].path, changed);
                r = undo_record(p, &p->actions[i]);
                if (r < 0)
                        return con_error_textf(ret_error, r, "out of memory");
                r = action_apply(&p->actions[i], ret_error);
                if (r < 0)
                        return r;
        }
        if (ret_checked)
                *ret_checked = checked;
        if (ret_changed)
                *ret_changed = changed;
        return 0;
}

/* ---- planning -------------------------------------------------------------------------- */

static int read_source(const char *path, char **ret, size_t *ret_len) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
                return negative_errno();
        return read_fd(fd, SOURCE_FILE_MAX, ret, ret_len);
}

static int plan_group(ConProvision *p, const char *name, char **ret_error) {
        uint32_t gid;
        char *c;
        int r;

        if (!con_unix_name_valid(name))
                return con_error_textf(ret_error, -EINVAL,
                              "invalid group name '%s': allowed are ^[a-z_][a-z0-9_-]*$, at most 31 characters "
                              "(systemd-sysusers refuses longer names)", name);
        r = con_userdb_get_group(p->db, name, &gid, NULL);
        if (r >= 0) {
                r = sysusers_line(p, "g %s %u", name, (unsigned) gid);
                return r < 0 ? r : userdb_item(p, NULL);
        }
        if (r != -ENOENT)
                return con_error_textf(ret_error, r, "group '%s' in %s: %s", name, p->db->group.path, strerror(-r));
        r = con_userdb_alloc_id(p->db, p->db->sys_gid_min, p->db->sys_gid_max, &gid);
        if (r < 0)
                return con_error_textf(ret_error, r, "no free system GID in %u..%u for group '%s'", p->db->sys_gid_min,
                              p->db->sys_gid_max, name);
        r = con_userdb_add_group(p->db, name, gid);
        if (r < 0)
                return con_error_textf(ret_error, r, "cannot add group '%s': %s", name, strerror(-r));
        r = sysusers_line(p, "g %s %u", name, (unsigned) gid);
        if (r < 0)
                return r;
        r = strv_extend(&p->created_groups, name);
        if (r < 0)
                return r;
        if (asprintf(&c, "create group %s (gid %u)", name, gid) < 0)
                return -ENOMEM;
        return userdb_item(p, c);
}

/* A service's own system user and group (no login, no home). The model gateway's, con-models,
 * alone reads the provider keys (/etc/con/env, root:con-models 0640, set by plan_env_file) and
 * writes /srv/con/logs/models; the status page's is con-web, the egress gateway's con-egress, the
 * mesh gateway's CON_MESH_USER (docs/MULTIHOST.md). All of them are made on every run, like a
 * Debian package's postinst makes its service users, whether or not the config enables the
 * service: the installed bus policy files (org.conspiracy.{Web,Egress,Mesh}.conf) name them, and
 * dbus-daemon warns at every start about a user it cannot find. A user no service runs as owns
 * nothing and can log in nowhere (AGENT_SHELL, no home); which services run is decided by
 * con up and con enable from the config alone. */
#define MODELS_USER "con-models"
#define WEB_USER "con-web"
#define EGRESS_USER "con-egress"
static int plan_service_user(ConProvision *p, const char *name, const char *gecos, char **ret_error) {
        _cleanup_(con_passwd_entry_done) ConPasswdEntry pw = {};
        gid_t gid;
        uint32_t uid;
        char *c;
        int r;

        r = plan_group(p, name, ret_error);
        if (r < 0)
                return r;
        r = con_userdb_get_group(p->db, name, &gid, NULL);
        if (r < 0)
                return r;
        r = con_userdb_get_user(p->db, name, &pw);
        if (r >= 0) {
                r = sysusers_line(p, "u %s %u:%s \"%s\" /nonexistent %s", name, (unsigned) pw.uid, name, gecos,
                                  AGENT_SHELL);
                return r < 0 ? r : userdb_item(p, NULL);
        }
        if (r != -ENOENT)
                return con_error_textf(ret_error, r, "user '%s' in %s: %s", name, p->db->passwd.path, strerror(-r));
        r = con_userdb_alloc_id(p->db, p->db->sys_uid_min, p->db->sys_uid_max, &uid);
        if (r < 0)
                return con_error_textf(ret_error, r, "no free system UID in %u..%u for user '%s'", p->db->sys_uid_min,
                                       p->db->sys_uid_max, name);
        r = con_userdb_add_user(p->db, name, uid, gid, gecos, "/nonexistent", AGENT_SHELL);
        if (r < 0)
                return con_error_textf(ret_error, r, "cannot add user '%s': %s", name, strerror(-r));
        r = sysusers_line(p, "u %s %u:%s \"%s\" /nonexistent %s", name, uid, name, gecos, AGENT_SHELL);
        if (r < 0)
                return r;
        r = strv_extend(&p->created_users, name);
        if (r < 0)
                return r;
        if (asprintf(&c, "create user %s (uid %u)", name, uid) < 0)
                return -ENOMEM;
        return userdb_item(p, c);
}

static int plan_sysusers_file(ConProvision *p) {
        _cleanup_free_ char *text = NULL;
        int r;

        if (asprintf(&text, "# Generated by con bootstrap from the config; edits are overwritten.\n"
                            "# The agent users and groups of ConspiracyOS (sysusers.d(5)).\n%s",
                     strempty(p->sysusers)) < 0)
                return -ENOMEM;
        r = add_parents(p, SYSUSERS_PATH);
        if (r < 0)
                return r;
        size_t len = strlen(text);
        return add_file(p, SYSUSERS_PATH, TAKE_PTR(text), len, "root", "root", 0644);
}

/* The key file: root:con-models 0640 without ACL entries, so the gateway reads it and no agent
 * can (agents are not in group con-models). Created empty when missing, so the admin finds
 * where the keys go and writing them (printf ... >/etc/con/env) keeps the owner and mode. Its
 * contents are never read or changed. */
static int plan_env_file(ConProvision *p) {
        int r = add_parents(p, CON_ENV_PATH);
        if (r < 0)
                return r;
        return add_attrs(p, CON_ENV_PATH, "root", MODELS_USER, 0640);
}

/* A mesh credential file below the root: its content, or NULL when it is missing or empty (con
 * bootstrap creates them empty). */
static int read_mesh_file(ConProvision *p, const char *path, char **ret) {
        _cleanup_free_ char *full = NULL, *s = NULL;
        size_t len;
        int r;

        *ret = NULL;
        r = rooted(p, path, &full);
        if (r < 0)
                return r;
        r = read_file_nofollow(full, 1U << 20, &s, &len);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        if (len == 0 || strlen(s) != len) {
                explicit_bzero(s, len);
                return len == 0 ? 0 : -EBADMSG;
        }
        *ret = TAKE_PTR(s);
        return 0;
}

/* A mesh credential file bootstrap makes (takes CONTENT; a SECRET one is zeroed when freed). */
static int add_mesh_file(ConProvision *p, const char *path, char *content, const char *group, mode_t mode,
                         bool secret) {
        size_t len = strlen(content);
        int r = add_parents(p, path);
        Action *a = r < 0 ? NULL : action_new(p, ACTION_FILE, path);

        if (!a) {
                if (secret)
                        explicit_bzero(content, len);
                free(content);
                return r < 0 ? r : -ENOMEM;
        }
        a->content = content;
        a->len = len;
        a->secret = secret;
        return action_set_file_mode(p, a, "root", group, mode);
}

/* Where con bootstrap writes this host's certificate signing request: next to the certificate,
 * .crt replaced by .csr (default CON_MESH_TLS_DIR/host.csr). */
static int mesh_csr_path(const char *cert, char **ret) {
        const char *e = endswith(cert, ".crt");
        if (asprintf(ret, "%.*s.csr", (int) (e ? (size_t) (e - cert) : strlen(cert)), cert) < 0)
                return -ENOMEM;
        return 0;
}

static const char *mesh_fix(void) {
        return "remove it and run con bootstrap again: it issues a new certificate for this host's key "
               "(on the CA's host) or writes a signing request for it";
}

/* This host's mesh certificate (docs/MULTIHOST.md, "Setting it up"). Missing: issued here when
 * the CA's key is in CON_MESH_CA_DIR (con_mesh_issue_host_pem, what con mesh issue does), else
 * this host's key and a signing request are written and p->mesh_request says what to run on the
 * CA's host. Present: checked (host name, CA, key, dates). The files are FILE actions, so a failed
 * run removes what it wrote. *ret_written: the paths written (their ATTRS actions are skipped). */
static int plan_mesh_credentials(ConProvision *p, char ***ret_written, char **ret_error) {
        const ConMeshConfig *m = &p->config->mesh;
        _cleanup_(con_mesh_pem_erasep) char *key = NULL, *newkey = NULL;
        _cleanup_free_ char *crt = NULL, *ca = NULL, *name = NULL, *ca_dir = NULL, *ca_key_path = NULL,
                            *newcrt = NULL, *newca = NULL, *csr_path = NULL, *csr = NULL;
        time_t not_after = 0;
        int r;

        if (!p->mesh_credentials || !m->enabled || !m->ca || !m->cert || !m->key)
                return 0;
        if ((r = read_mesh_file(p, m->cert, &crt)) < 0)
                return con_error_textf(ret_error, r, "mesh: %s: cannot read: %s", m->cert, path_error(r));
        if ((r = read_mesh_file(p, m->key, &key)) < 0)
                return con_error_textf(ret_error, r, "mesh: %s: cannot read: %s", m->key, path_error(r));
        if ((r = read_mesh_file(p, m->ca, &ca)) < 0)
                return con_error_textf(ret_error, r, "mesh: %s: cannot read: %s", m->ca, path_error(r));

        if (crt) {
                if (!key)
                        return con_error_textf(ret_error, -ENOKEY, "mesh: %s is there but this host's key %s is "
                                               "missing or empty: copy the key issued with it, or %s",
                                               m->cert, m->key, mesh_fix());
                if (!ca)
                        return con_error_textf(ret_error, -ENOENT, "mesh: %s is missing or empty: copy the mesh "
                                               "CA's ca.crt there (from the host where con mesh init ran)", m->ca);
                ConMeshCertState st = con_mesh_check_host_cert(crt, key, ca, m->host, time(NULL), &name, &not_after);
                char end[32] = "?";
                struct tm tm;
                if (not_after > 0 && gmtime_r(&not_after, &tm))
                        strftime(end, sizeof(end), "%Y-%m-%d", &tm);
                switch (st) {
                case CON_MESH_CERT_OK:
                        return 0;
                case CON_MESH_CERT_EXPIRING:
                        return strv_extendf(&p->warnings, "mesh: %s expires on %s (in less than %d days): %s",
                                            m->cert, end, CON_MESH_CERT_RENEW_DAYS, mesh_fix());
                case CON_MESH_CERT_UNREADABLE:
                        return con_error_textf(ret_error, -EBADMSG, "mesh: %s is not a PEM certificate: %s",
                                               m->cert, mesh_fix());
                case CON_MESH_CERT_WRONG_HOST:
                        return con_error_textf(ret_error, -EKEYREJECTED, "mesh: %s is the certificate of '%s', not of "
                                               "this host (mesh.host: %s): %s", m->cert, name ?: "?", m->host,
                                               mesh_fix());
                case CON_MESH_CERT_NOT_CLIENT:
                        return con_error_textf(ret_error, -EKEYREJECTED, "mesh: %s is not a host's certificate of "
                                               "the mesh (a CA, or not for TLS client authentication): %s",
                                               m->cert, mesh_fix());
                case CON_MESH_CERT_CA_UNREADABLE:
                        return con_error_textf(ret_error, -EBADMSG, "mesh: %s is not a PEM certificate: copy the mesh "
                                               "CA's ca.crt there (from the host where con mesh init ran)", m->ca);
                case CON_MESH_CERT_OTHER_CA:
                        return con_error_textf(ret_error, -EKEYREJECTED, "mesh: %s is not signed by the mesh's CA "
                                               "(%s): it comes from another CA; %s", m->cert, m->ca, mesh_fix());
                case CON_MESH_CERT_KEY_UNREADABLE:
                        return con_error_textf(ret_error, -EBADMSG, "mesh: %s is not a PEM private key: copy the "
                                               "key issued with %s, or remove both and run con bootstrap again",
                                               m->key, m->cert);
                case CON_MESH_CERT_WRONG_KEY:
                        return con_error_textf(ret_error, -EKEYREJECTED, "mesh: %s does not belong to the key %s: "
                                               "copy the key issued with it, or %s", m->cert, m->key, mesh_fix());
                case CON_MESH_CERT_EXPIRED:
                        return con_error_textf(ret_error, -EKEYEXPIRED, "mesh: %s expired on %s: %s", m->cert, end,
                                               mesh_fix());
                }
                return -EINVAL;
        }

        /* No certificate yet: the CA's key on this host? */
        if (rooted(p, CON_MESH_CA_DIR, &ca_dir) < 0 || asprintf(&ca_key_path, "%s/ca.key", ca_dir) < 0)
                return -ENOMEM;
        if (access(ca_key_path, F_OK) >= 0) {
                r = con_mesh_issue_host_pem(ca_dir, m->host, key, &newkey, &newcrt, &newca);
                if (r == -EBADMSG)
                        return con_error_textf(ret_error, r, "mesh: %s is not a PEM private key: remove it and run "
                                               "con bootstrap again (it makes a new one)", m->key);
                if (r < 0)
                        return con_error_textf(ret_error, r, "mesh: cannot issue this host's certificate with the CA "
                                               "in %s: %s", CON_MESH_CA_DIR, strerror(-r));
                if (ca && !streq(ca, newca))
                        return con_error_textf(ret_error, -EKEYREJECTED, "mesh: %s is not the certificate of the CA "
                                               "in %s: copy %s/ca.crt there, or remove it", m->ca,
                                               CON_MESH_CA_DIR, CON_MESH_CA_DIR);
                if (newkey) {
                        r = add_mesh_file(p, m->key, TAKE_PTR(newkey), CON_MESH_USER, 0640, true);
                        if (r >= 0)
                                r = strv_extend(ret_written, m->key);
                }
                if (r >= 0)
                        r = add_mesh_file(p, m->cert, TAKE_PTR(newcrt), "root", 0644, false);
                if (r >= 0)
                        r = strv_extend(ret_written, m->cert);
                if (r >= 0 && !ca) {
                        r = add_mesh_file(p, m->ca, TAKE_PTR(newca), "root", 0644, false);
                        if (r >= 0)
                                r = strv_extend(ret_written, m->ca);
                }
                return r;
        }

        /* Not the CA's host: this host's key (made here, never sent) and a signing request. */
        r = mesh_csr_path(m->cert, &csr_path);
        if (r < 0)
                return r;
        r = read_mesh_file(p, csr_path, &csr);
        if (r < 0)
                return con_error_textf(ret_error, r, "mesh: %s: cannot read: %s", csr_path, path_error(r));
        if (csr && key && con_mesh_csr_matches(csr, key, m->host) <= 0) {
                free(csr);
                csr = NULL;
        }
        if (!key || !csr) {
                _cleanup_free_ char *newcsr = NULL;
                r = con_mesh_csr_new(m->host, key, &newkey, &newcsr);
                if (r == -EBADMSG)
                        return con_error_textf(ret_error, r, "mesh: %s is not a PEM private key: remove it and run "
                                               "con bootstrap again (it makes a new one)", m->key);
                if (r < 0)
                        return con_error_textf(ret_error, r, "mesh: cannot make this host's key and signing request: %s",
                                               strerror(-r));
                if (newkey) {
                        r = add_mesh_file(p, m->key, TAKE_PTR(newkey), CON_MESH_USER, 0640, true);
                        if (r >= 0)
                                r = strv_extend(ret_written, m->key);
                        if (r < 0)
                                return r;
                }
                r = add_mesh_file(p, csr_path, TAKE_PTR(newcsr), "root", 0644, false);
                if (r < 0)
                        return r;
        }
        if (asprintf(&p->mesh_request,
                     "mesh: this host (%s) has no certificate yet and the mesh's CA is not here (no %s/ca.key). "
                     "Its key stays in %s; its signing request is %s. Copy that file to the CA's host and run there:\n"
                     "    con mesh sign %s.csr --out %s.crt\n"
                     "then copy %s.crt to this host's %s and the CA's ca.crt (%s/ca.crt there) to %s, and run "
                     "con bootstrap again",
                     m->host, CON_MESH_CA_DIR, m->key, csr_path, m->host, m->host, m->host, m->cert, CON_MESH_CA_DIR,
                     m->ca) < 0)
                return -ENOMEM;
        return 0;
}

/* The mesh's TLS files (docs/MULTIHOST.md): the CA's and this host's certificate root:root 0644,
 * this host's key root:con-mesh 0640 without ACL entries, so the gateway reads it and no agent
 * can. Made or checked by plan_mesh_credentials (con bootstrap); otherwise created empty when
 * missing, so copying the files con mesh issue wrote over them keeps owner and mode. Only in
 * CON_MESH_TLS_DIR: files configured elsewhere are the admin's to protect. */
static int plan_mesh_files(ConProvision *p, char **ret_error) {
        const ConMeshConfig *m = &p->config->mesh;
        const struct { const char *path, *group; mode_t mode; } files[] = {
                { m->ca, "root", 0644 }, { m->cert, "root", 0644 }, { m->key, CON_MESH_USER, 0640 },
        };
        _cleanup_strv_free_ char **written = NULL;
        int r;

        if (!m->enabled || !m->key)
                return 0;
        r = add_parents(p, CON_MESH_TLS_DIR "/x");
        if (r >= 0)
                r = plan_mesh_credentials(p, &written, ret_error);
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(files); i++) {
                const char *name = files[i].path ? startswith(files[i].path, CON_MESH_TLS_DIR "/") : NULL;
                if (name && *name && !strchr(name, '/') && !streq(name, "..") && !strv_contains(written, files[i].path))
                        r = add_attrs(p, files[i].path, "root", files[i].group, files[i].mode);
        }
        return r;
}

static int plan_user(ConProvision *p, const ConAgent *a, char **ret_error) {
        _cleanup_(con_passwd_entry_done) ConPasswdEntry pw = {};
        _cleanup_free_ char *user = NULL, *home = NULL, *gecos = NULL;
        gid_t agents_gid;
        uint32_t uid;
        char *c;
        int r;

        r = con_agent_user(a->name, &user);
        if (r < 0)
                return con_error_textf(ret_error, r, "invalid agent name '%s'", a->name);
        if (!con_unix_name_valid(user))
                return con_error_textf(ret_error, -EINVAL,
                              "agent '%s': user name '%s' is longer than 31 characters (the systemd limit); use an agent name of at most 29 characters",
                              a->name, user);
        if (asprintf(&home, CON_HOME_ROOT "/%s", user) < 0 || asprintf(&gecos, "ConspiracyOS agent %s", a->name) < 0)
                return -ENOMEM;
        r = con_userdb_get_group(p->db, AGENTS_GROUP, &agents_gid, NULL);
        if (r < 0)
                return r;

        r = con_userdb_get_user(p->db, user, &pw);
        if (r == -ENOENT) {
                /* Agent users come from their own block (system.agent_uid_min/max), filled
                 * upward; a number used by any user or group is skipped, never shared. */
                if (p->next_agent_uid == 0)
                        p->next_agent_uid = p->config->agent_uid_min;
                r = p->next_agent_uid > p->config->agent_uid_max ? -ENOSPC :
                        con_userdb_alloc_id_up(p->db, p->next_agent_uid, p->config->agent_uid_max, &uid);
                if (r < 0)
                        return con_error_textf(ret_error, r,
                                      "no free agent UID in %u..%u (system.agent_uid_min..agent_uid_max) for user '%s'; "
                                      "widen the range",
                                      p->config->agent_uid_min, p->config->agent_uid_max, user);
                p->next_agent_uid = uid + 1;
                r = con_userdb_add_user(p->db, user, uid, agents_gid, gecos, home, AGENT_SHELL);
                if (r < 0)
                        return con_error_textf(ret_error, r, "cannot add user '%s': %s", user, strerror(-r));
                r = sysusers_line(p, "u %s %u:%s \"%s\" %s %s", user, uid, AGENTS_GROUP, gecos, home, AGENT_SHELL);
                if (r < 0)
                        return r;
                r = strv_extend(&p->created_users, user);
                if (r < 0)
                        return r;
                if (asprintf(&c, "create user %s (uid %u)", user, uid) < 0)
                        return -ENOMEM;
                r = userdb_item(p, c);
        } else if (r < 0)
                return con_error_textf(ret_error, r, "user '%s' in %s: %s", user, p->db->passwd.path, strerror(-r));
        else {
                /* Two names on one UID would let one agent act as another (and crash
                 * dbus-daemon 1.14, CVE-2020-35512). */
                if (con_userdb_uid_count(p->db, pw.uid) > 1)
                        return con_error_textf(ret_error, -EEXIST,
                                      "user '%s' shares uid %u with another user in %s; give it a unique uid first",
                                      user, (unsigned) pw.uid, p->db->passwd.path);
                r = con_userdb_fix_user(p->db, user, agents_gid, home, AGENT_SHELL);
                if (r < 0)
                        return con_error_textf(ret_error, r, "cannot update user '%s': %s", user, strerror(-r));
                int k = sysusers_line(p, "u %s %u:%s \"%s\" %s %s", user, (unsigned) pw.uid, AGENTS_GROUP, gecos, home,
                                      AGENT_SHELL);
                if (k >= 0 && r > 0)
                        k = fixup_add(p, user, NULL, agents_gid, home, AGENT_SHELL);
                if (k < 0)
                        return k;
                c = NULL;
                if (r > 0 && asprintf(&c, "fix user %s (primary group %s, home %s, shell %s)", user, AGENTS_GROUP,
                                      home, AGENT_SHELL) < 0)
                        return -ENOMEM;
                r = userdb_item(p, c);
        }
        if (r < 0)
                return r;

        for (ConTier t = CON_TIER_OFFICER; t < _CON_TIER_MAX; t++) {
                bool want = a->tier == t;
                r = con_userdb_set_member(p->db, tier_groups[t], user, want);
                if (r < 0)
                        return con_error_textf(ret_error, r, "cannot update group '%s': %s", tier_groups[t], strerror(-r));
                int k = want ? sysusers_line(p, "m %s %s", user, tier_groups[t])
                             : r > 0 ? fixup_add(p, user, tier_groups[t], 0, NULL, NULL) : 0;
                if (k < 0)
                        return k;
                c = NULL;
                if (r > 0 && asprintf(&c, want ? "add %s to group %s" : "remove %s from group %s", user,
                                      tier_groups[t]) < 0)
                        return -ENOMEM;
                r = userdb_item(p, c);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int uid_of_agent(ConProvision *p, const char *agent, uid_t *ret) {
        _cleanup_(con_passwd_entry_done) ConPasswdEntry pw = {};
        _cleanup_free_ char *user = NULL;
        int r;

        r = con_agent_user(agent, &user);
        if (r < 0)
                return r;
        r = con_userdb_get_user(p->db, user, &pw);
        if (r < 0)
                return r;
        *ret = pw.uid;
        return 0;
}

typedef struct AgentAcls {
        AclList dir, inbox;
} AgentAcls;

/* Named entries of one path, by name from the policy, to ids from the user database (which
 * already holds the agent users this run creates). */
static int policy_acl(ConProvision *p, const ConPolicy *policy, const char *target, bool inbox, AclList *l,
                      char **ret_error) {
        ConPolicyAclEntry *e = NULL;
        size_t n = 0;
        int r;

        r = con_policy_acl_entries(policy, target, inbox, &e, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; r >= 0 && i < n; i++) {
                if (e[i].group) {
                        gid_t gid;
                        r = con_userdb_get_group(p->db, e[i].name, &gid, NULL);
                        if (r < 0)
                                r = con_error_textf(ret_error, r, "policy: group '%s' (allowed to task %s) does not exist in %s; "
                                           "create it first or remove the grant", e[i].name,
                                           target ?: "the outer inbox", p->db->group.path);
                        else
                                r = acl_list_add(l, ACL_GROUP, gid, e[i].perms);
                } else {
                        _cleanup_(con_passwd_entry_done) ConPasswdEntry pw = {};
                        r = con_userdb_get_user(p->db, e[i].name, &pw);
                        if (r < 0)
                                r = con_error_textf(ret_error, r, "policy: user '%s' (allowed to task %s) does not exist in %s; "
                                           "create it first or remove the grant", e[i].name,
                                           target ?: "the outer inbox", p->db->passwd.path);
                        else
                                r = acl_list_add(l, ACL_USER, pw.uid, e[i].perms);
                }
        }
        con_policy_acl_entries_free(e, n);
        return r;
}

static int plan_policy(ConProvision *p, AgentAcls *acls, AclList *outer, char **ret_error) {
        _cleanup_(con_policy_freep) ConPolicy *policy = NULL;
        int r;

        r = con_policy_from_config(p->config, &policy);
        if (r < 0)
                return con_error_textf(ret_error, r, "%s: cannot build the access policy: %s", p->config_path, strerror(-r));
        for (size_t i = 0; i < p->config->n_agents; i++) {
                const char *name = p->config->agents[i].name;
                r = policy_acl(p, policy, name, false, &acls[i].dir, ret_error);
                if (r >= 0)
                        r = policy_acl(p, policy, name, true, &acls[i].inbox, ret_error);
                if (r < 0)
                        return r;
        }
        return policy_acl(p, policy, NULL, true, outer, ret_error);
}

static int plan_agent(ConProvision *p, const ConAgent *a, const AgentAcls *acls, char **ret_error) {
        _cleanup_free_ char *user = NULL, *base = NULL, *home = NULL, *md = NULL, *srv_config = NULL;
        _cleanup_strv_free_ char **skill_names = NULL, **skill_paths = NULL;
        const char * const skill_roots[] = { p->outer_root, NULL };
        AclList home_acl = {};
        uid_t uid;
        int r;

        r = rooted(p, CON_SRV_DIR "/config", &srv_config);
        if (r < 0)
                return r;
        const char * const roots[] = { p->outer_root, srv_config, NULL };

        r = con_agent_user(a->name, &user);
        if (r < 0)
                return r;
        r = uid_of_agent(p, a->name, &uid);
        if (r < 0)
                return r;
        if (asprintf(&base, CON_SRV_DIR "/agents/%s", a->name) < 0 ||
            asprintf(&home, CON_HOME_ROOT "/%s", user) < 0)
                return -ENOMEM;

        /* The agent's folder belongs to its keeper, the agent service (root), so a session (the
         * agent user) can rename or replace nothing in it. Traversable, not listable: peers reach
         * the inbox, senders their own responses. */
        r = add_dir(p, base, "root", "root", 0711, &acls->dir, NULL, 0, false);
        if (r < 0)
                return r;

        /* The inbox: root's (the router reads it), sticky so senders cannot delete each other's
         * files, o::--- by default so nobody but root reads what a sender drops. */
        {
                _cleanup_free_ char *inbox = NULL;
                const AclList none = {};
                if (asprintf(&inbox, "%s/inbox", base) < 0)
                        return -ENOMEM;
                r = add_dir(p, inbox, "root", "root", 01700, &acls->inbox, &none, 0700, false);
                if (r < 0)
                        return r;
        }
        /* The service's state: the queue (journal, lock, finished records, the senders'
         * conversations) is root's alone; the outbox, processed/ and failed/ are traversable,
         * each file readable by its task's sender only (an ACL entry the service sets). */
        {
                static const struct {
                        const char *name;
                        mode_t mode;
                } state[] = { { "queue", 0700 }, { "queue/conversations", 0700 }, { "outbox", 0711 },
                              { "processed", 0711 }, { "failed", 0711 } };
                for (size_t i = 0; i < ELEMENTSOF(state); i++) {
                        _cleanup_free_ char *d = NULL;
                        if (asprintf(&d, "%s/%s", base, state[i].name) < 0)
                                return -ENOMEM;
                        r = add_dir(p, d, "root", "root", state[i].mode, NULL, NULL, 0, false);
                        if (r < 0)
                                return r;
                }
        }
        /* The agent's own: the sessions' working folder (conversations are not in it: the
         * service removes a workspace/sessions/ of earlier versions unread). */
        {
                _cleanup_free_ char *d = NULL;
                if (asprintf(&d, "%s/workspace", base) < 0)
                        return -ENOMEM;
                r = add_dir(p, d, user, AGENTS_GROUP, 0700, NULL, NULL, 0, false);
                if (r < 0)
                        return r;
        }

        /* Skills: root-owned, outside the workspace, in the root-owned agent folder: the agent
         * reads them but can neither change, rename nor replace them. */
        {
                _cleanup_free_ char *sdir = NULL;
                if (asprintf(&sdir, "%s/skills", base) < 0)
                        return -ENOMEM;
                r = add_dir(p, sdir, "root", "root", 0755, NULL, NULL, 0, false);
                if (r < 0)
                        return r;
                r = con_agent_skills(a, skill_roots, &skill_names, &skill_paths);
                if (r < 0 && r != -ENOENT)
                        return con_error_textf(ret_error, r, "agent '%s': cannot list skills below %s: %s", a->name,
                                      p->outer_root, strerror(-r));
                for (size_t i = 0; skill_names && skill_names[i]; i++) {
                        _cleanup_free_ char *dst = NULL;
                        char *content;
                        size_t len;

                        if (strchr(skill_names[i], '/') || !con_identifier_valid(skill_names[i]))
                                return con_error_textf(ret_error, -EINVAL, "%s: invalid skill file name", skill_paths[i]);
                        r = read_source(skill_paths[i], &content, &len);
                        if (r < 0)
                                return con_error_textf(ret_error, r, "%s: %s", skill_paths[i], strerror(-r));
                        if (asprintf(&dst, "%s/%s", sdir, skill_names[i]) < 0) {
                                free(content);
                                return -ENOMEM;
                        }
                        r = add_file(p, dst, content, len, "root", "root", 0444);
                        if (r < 0)
                                return r;
                }
        }

        /* Home: owned by root so the agent cannot replace AGENTS.md (owning the folder would
         * let it unlink or rename the file); private, readable by the agent through its ACL. */
        r = acl_list_add(&home_acl, ACL_USER, uid, CON_ACL_R | CON_ACL_X);
        if (r >= 0)
                r = add_dir(p, home, "root", "root", 0700, &home_acl, NULL, 0, false);
        free(home_acl.e);
        if (r < 0)
                return r;

        r = con_agents_md_assemble(a, roots, &md);
        if (r == -ENODATA) {
                char *w;
                if (asprintf(&w, "agent '%s': no AGENTS.md layer found below %s or %s/config; %s/AGENTS.md not written",
                             a->name, p->outer_root, CON_SRV_DIR, home) < 0)
                        return -ENOMEM;
                return strv_consume(&p->warnings, w);
        }
        if (r < 0)
                return con_error_textf(ret_error, r, "agent '%s': cannot assemble AGENTS.md: %s", a->name, strerror(-r));
        {
                _cleanup_free_ char *path = NULL, *sumpath = NULL;
                char hex[CON_SHA256_HEX_SIZE], *sum;
                size_t len = strlen(md);

                r = con_sha256_hex(md, len, hex);
                if (r < 0)
                        return con_error_textf(ret_error, r, "agent '%s': cannot hash AGENTS.md: %s", a->name, strerror(-r));
                if (asprintf(&path, "%s/AGENTS.md", home) < 0 || asprintf(&sumpath, "%s/AGENTS.md.sha256", home) < 0 ||
                    asprintf(&sum, "%s\n", hex) < 0)
                        return -ENOMEM;
                r = add_file(p, path, TAKE_PTR(md), len, "root", "root", 0444);
                if (r < 0) {
                        free(sum);
                        return r;
                }
                r = add_file(p, sumpath, sum, strlen(sum), "root", "root", 0444);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int sort_names(const struct dirent **a, const struct dirent **b) {
        return strcmp((*a)->d_name, (*b)->d_name);
}

/* ---- files installed from a profile (conffile.h, docs/BOOTSTRAP.md "Upgrades") ----------- */

/* Reads the record of what earlier runs installed and the shipped history of the profiles'
 * files, once. A malformed file is ignored with a warning: without it, files that differ from
 * the profile are refused as edits, which is safe. */
static int load_conffile_state(ConProvision *p) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        ConFileHashes h = {};
        size_t len, line;
        int r;

        if (p->record_loaded)
                return 0;
        p->record_loaded = true;

        r = rooted(p, CON_INSTALLED_FILES_PATH, &path);
        if (r < 0)
                return r;
        r = read_file_nofollow(path, SOURCE_FILE_MAX, &text, &len);
        if (r == -ENOMEM)
                return r;
        if (r >= 0) {
                p->record_existed = true;
                r = con_file_hashes_parse(text, len, &p->record, &line);
                if (r == -ENOMEM)
                        return r;
                if (r < 0 && strv_extendf(&p->warnings, "%s:%zu: not a line 'SHA256  PATH'; the record of installed "
                                          "files is ignored and written anew", path, line) < 0)
                        return -ENOMEM;
        } else if (r != -ENOENT &&
                   strv_extendf(&p->warnings, "%s: cannot read the record of installed files: %s; it is written anew",
                                path, r == -ELOOP ? path_error(r) : strerror(-r)) < 0)
                return -ENOMEM;

        free(path);
        free(text);
        text = NULL;
        if (asprintf(&path, "%s/" CON_PROFILE_HISTORY_NAME, p->profiles_dir) < 0) {
                path = NULL;
                return -ENOMEM;
        }
        r = read_file_nofollow(path, SOURCE_FILE_MAX, &text, &len);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                /* Shipped with the profiles; a test root without it has no earlier versions. */
                if (r != -ENOENT && strv_extendf(&p->warnings, "%s: cannot read: %s", path, strerror(-r)) < 0)
                        return -ENOMEM;
                return 0;
        }
        r = con_file_hashes_parse(text, len, &h, &line);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return strv_extendf(&p->warnings, "%s:%zu: not a line 'SHA256  PROFILE/PATH'; earlier versions of "
                                    "the profiles' files are not recognised", path, line);
        /* PROFILE/PATH -> /etc/con/PATH: which profile installed a file is not known. */
        for (size_t i = 0; r >= 0 && i < h.n; i++) {
                _cleanup_free_ char *etc = NULL;
                const char *rel = strchr(h.e[i].path, '/');
                if (!rel || !rel[1])
                        continue;
                if (asprintf(&etc, CON_ETC_DIR "%s", rel) < 0)
                        r = -ENOMEM;
                else
                        r = con_file_hashes_add(&p->history, etc, h.e[i].hash);
                if (r == -EINVAL)       /* parsed, so valid: never; skipped if ever */
                        r = 0;
        }
        con_file_hashes_done(&h);
        return r;
}

/* The SHA-256 (hex) of the file at the rooted path rpath now: 1 with ret filled, 0 when it does
 * not exist, or an error (-ELOOP, -EISDIR, ...). A file too large for a profile file gets a hash
 * no version has. */
static int current_hash(const char *rpath, char ret[CON_SHA256_HEX_SIZE]) {
        _cleanup_free_ char *cur = NULL;
        size_t len;
        int r = read_file_nofollow(rpath, SOURCE_FILE_MAX, &cur, &len);

        if (r == -ENOENT)
                return 0;
        if (r == -EFBIG) {
                strcpy(ret, "too-large");
                return 1;
        }
        if (r < 0)
                return r;
        r = con_sha256_hex(cur, len, ret);
        return r < 0 ? r : 1;
}

/* Plans dst as a root-owned copy of the regular file src. With conflicts, dst is a file bootstrap
 * installs from a profile or --config FILE, upgraded as conffile.h says: a dst changed here is
 * added to the list (unless --force), and the record gets what is written. */
static int plan_copy_file(ConProvision *p, const char *src, const char *dst, mode_t mode, char ***conflicts,
                          char **ret_error) {
        _cleanup_free_ char *rdst = NULL;
        char cur[CON_SHA256_HEX_SIZE], want[CON_SHA256_HEX_SIZE];
        const char *verb = NULL, *why = NULL;
        char *content;
        size_t len;
        int r = read_source(src, &content, &len);
        if (r < 0)
                return con_error_textf(ret_error, r, "%s: %s", src, strerror(-r));
        if (conflicts) {
                r = load_conffile_state(p);
                if (r >= 0)
                        r = rooted(p, dst, &rdst);
                if (r >= 0)
                        r = con_sha256_hex(content, len, want);
                if (r < 0) {
                        free(content);
                        return r;
                }
                r = current_hash(rdst, cur);
                if (r < 0) {
                        free(content);
                        return con_error_textf(ret_error, r, "%s: %s", rdst, path_error(r));
                }
                switch (con_conffile_decide(r > 0 ? cur : NULL, want, con_file_hashes_get(&p->record, dst),
                                            r > 0 && con_file_hashes_contains(&p->history, dst, cur))) {
                case CON_CONFFILE_INSTALL:
                case CON_CONFFILE_SAME:
                        break;
                case CON_CONFFILE_UPDATE:
                        verb = "update";
                        why = p->profile_dir ? "unedited since installed, profile changed" : "unedited since installed";
                        break;
                case CON_CONFFILE_EDITED:
                        verb = "replace";
                        why = "changed here; --force";
                        if (!p->force)
                                r = strv_extend(conflicts, rdst);
                        break;
                }
                if (r >= 0)
                        r = strv_extend(&p->conffiles, dst);
                /* A name the record cannot hold is simply not recorded: a later change of it is
                 * taken for an edit. */
                if (r >= 0 && con_file_hashes_path_valid(dst))
                        r = con_file_hashes_set(&p->record, dst, want);
                if (r < 0) {
                        free(content);
                        return r;
                }
        }
        r = add_file(p, dst, content, len, "root", "root", mode);
        if (r < 0)
                return r;
        p->actions[p->n_actions - 1].verb = verb;
        p->actions[p->n_actions - 1].why = why;
        return 0;
}

/* Files an earlier run installed (the record) or, on a machine with no record yet, an earlier
 * profile version had (the history) that the profile installed now no longer has: removed when
 * unedited, kept with a warning when changed here (once: the record forgets them). With a
 * record, a file it does not list is not bootstrap's to remove, whatever its content. */
static int plan_obsolete(ConProvision *p) {
        _cleanup_strv_free_ char **candidates = NULL;
        int r;

        r = load_conffile_state(p);
        if (r < 0)
                return r;
        /* Collected first: deciding drops entries from the record. */
        for (int pass = 0; pass < (p->record_existed ? 1 : 2); pass++) {
                const ConFileHashes *h = pass == 0 ? &p->record : &p->history;
                for (size_t i = 0; i < h->n; i++) {
                        const char *path = h->e[i].path;
                        /* Only a path that names the file it says (no "..": it removes files). */
                        if (!startswith(path, CON_ETC_DIR "/") || !con_file_hashes_path_valid(path) ||
                            strv_contains(p->conffiles, path) || strv_contains(candidates, path))
                                continue;
                        r = strv_extend(&candidates, path);
                        if (r < 0)
                                return r;
                }
        }
        STRV_FOREACH(path, candidates) {
                _cleanup_free_ char *rpath = NULL;
                char cur[CON_SHA256_HEX_SIZE];
                const char *recorded;

                r = rooted(p, *path, &rpath);
                if (r < 0)
                        return r;
                recorded = con_file_hashes_get(&p->record, *path);
                r = current_hash(rpath, cur);
                if (r == -ENOMEM)
                        return r;
                switch (r < 0 ? CON_OBSOLETE_KEEP :
                        con_obsolete_decide(r > 0 ? cur : NULL, recorded,
                                            r > 0 && con_file_hashes_contains(&p->history, *path, cur))) {
                case CON_OBSOLETE_GONE:
                        break;
                case CON_OBSOLETE_REMOVE: {
                        Action *a = action_new(p, ACTION_REMOVE, *path);
                        if (!a)
                                return -ENOMEM;
                        a->why = "unedited since installed, no longer in the profile";
                        break;
                }
                case CON_OBSOLETE_KEEP:
                        if ((recorded || !p->record_existed) &&
                            strv_extendf(&p->warnings, "%s is no longer in the profile, but was changed here: "
                                         "kept (remove it if nothing needs it)", rpath) < 0)
                                return -ENOMEM;
                        break;
                }
                con_file_hashes_remove(&p->record, *path);
        }
        return 0;
}

/* The record, last of all changes, when this run installs files from a profile or FILE. */
static int plan_record(ConProvision *p) {
        char *text;
        int r;

        if (!p->record_loaded)
                return 0;
        r = con_file_hashes_format(&p->record, "con bootstrap: the files it installed from a profile or --config "
                                   "FILE, with the SHA-256 of what it wrote (docs/BOOTSTRAP.md). Do not edit.", &text);
        if (r < 0)
                return r;
        r = add_parents(p, CON_INSTALLED_FILES_PATH);
        if (r < 0) {
                free(text);
                return r;
        }
        return add_file(p, CON_INSTALLED_FILES_PATH, text, strlen(text), "root", "root", 0600);
}

/* --config FILE: the services read /etc/con/con.yaml, so FILE is installed there. */
static int plan_config_file(ConProvision *p, char **ret_error) {
        _cleanup_strv_free_ char **conflicts = NULL;
        _cleanup_free_ char *installed = NULL;
        struct stat a, b;
        int r;

        r = rooted(p, CON_CONFIG_PATH, &installed);
        if (r < 0)
                return r;
        if (stat(p->config_path, &a) >= 0 && stat(installed, &b) >= 0 && a.st_dev == b.st_dev &&
            a.st_ino == b.st_ino)
                return 0;
        r = add_dir(p, CON_ETC_DIR, "root", "root", 0755, NULL, NULL, 0, false);
        if (r < 0)
                return r;
        r = plan_copy_file(p, p->config_path, CON_CONFIG_PATH, 0644, &conflicts, ret_error);
        if (r < 0)
                return r;
        if (conflicts)
                return con_error_textf(ret_error, -EEXIST,
                              CON_CONFIG_PATH " differs from %s and was changed here; "
                              "the services read " CON_CONFIG_PATH ", so --config installs the file there. "
                              "See the difference with 'diff -u %s %s'; add --force to replace it with %s, or "
                              "run 'con bootstrap' without --config to keep it",
                              p->config_path, p->config_path, installed, p->config_path);
        return 0;
}

static int plan_tree(ConProvision *p, const char *src, const char *dst, char ***conflicts, char **ret_error) {
        struct dirent **de = NULL;
        int n, r = 0;

        n = scandir(src, &de, NULL, sort_names);
        if (n < 0)
                return con_error_textf(ret_error, negative_errno(), "%s: cannot read directory: %m", src);
        for (int i = 0; i < n; i++) {
                _cleanup_free_ char *s = NULL, *d = NULL;
                struct stat st;

                if (r < 0 || streq(de[i]->d_name, ".") || streq(de[i]->d_name, ".."))
                        goto next;
                if (asprintf(&s, "%s/%s", src, de[i]->d_name) < 0 || asprintf(&d, "%s/%s", dst, de[i]->d_name) < 0) {
                        r = -ENOMEM;
                        goto next;
                }
                if (lstat(s, &st) < 0) {
                        r = con_error_textf(ret_error, negative_errno(), "%s: %m", s);
                        goto next;
                }
                if (S_ISDIR(st.st_mode)) {
                        r = add_dir(p, d, "root", "root", 0755, NULL, NULL, 0, false);
                        if (r >= 0)
                                r = plan_tree(p, s, d, conflicts, ret_error);
                } else if (S_ISREG(st.st_mode)) {
                        r = plan_copy_file(p, s, d, (st.st_mode & 0111) ? 0755 : 0644, conflicts, ret_error);
                } else {
                        char *w;
                        if (asprintf(&w, "%s: not a regular file or directory; not copied", s) < 0)
                                r = -ENOMEM;
                        else
                                r = strv_consume(&p->warnings, w);
                }
        next:
                free(de[i]);
        }
        free(de);
        return r;
}

static int plan_profile(ConProvision *p, char **ret_error) {
        _cleanup_strv_free_ char **conflicts = NULL, **diffs = NULL;
        _cleanup_free_ char *etc = NULL;
        size_t n;
        int r;

        r = add_dir(p, CON_ETC_DIR, "root", "root", 0755, NULL, NULL, 0, false);
        if (r < 0)
                return r;
        r = plan_tree(p, p->profile_dir, CON_ETC_DIR, &conflicts, ret_error);
        if (r < 0)
                return r;
        n = strv_length(conflicts);
        if (n > 0) {
                _cleanup_free_ char *list = NULL, *cmds = NULL;
                r = rooted(p, CON_ETC_DIR, &etc);
                if (r < 0)
                        return r;
                STRV_FOREACH(c, conflicts) {
                        r = strv_extendf(&diffs, "diff -u %s%s %s", p->profile_dir, *c + strlen(etc), *c);
                        if (r < 0)
                                return r;
                }
                list = strv_join(conflicts, ", ");
                cmds = strv_join(diffs, "; ");
                if (!list || !cmds)
                        return -ENOMEM;
                return con_error_textf(ret_error, -EEXIST,
                              "%zu file%s in " CON_ETC_DIR " %s changed here and differ%s "
                              "from the profile in %s: %s. See the differences with: %s. Then either add --force to "
                              "replace %s with the profile's version (the changes are lost), or keep %s: run "
                              "'con bootstrap' without --profile, which provisions from " CON_ETC_DIR " as it is",
                              n, n == 1 ? "" : "s", n == 1 ? "was" : "were", n == 1 ? "s" : "", p->profile_dir, list, cmds, n == 1 ? "it" : "them",
                              n == 1 ? "it" : "them");
        }
        return plan_obsolete(p);
}

static int plan_srv(ConProvision *p, const AclList *outer, char **ret_error) {
        static const struct {
                const char *path;
                mode_t mode;
        } dirs[] = {
                { CON_SRV_DIR "/agents", 0755 },
                { CON_SRV_DIR "/config", 0755 },
                { CON_SRV_DIR "/contracts", 0755 }, /* root only: contracts run as root */
                { CON_SRV_DIR "/logs", 0755 },
                { CON_SRV_DIR "/logs/audit", 0750 }, /* written by root services only */
                { CON_DAEMON_LOG_DIR, 0700 },        /* the daemons' logs without systemd: root only */
        };
        int r;

        r = add_parents(p, CON_SRV_DIR);
        if (r < 0)
                return r;
        r = add_dir(p, CON_SRV_DIR, "root", "root", 0755, NULL, NULL, 0, false);
        if (r < 0)
                return r;
        /* The outer inbox: the router (root) reads it; the policy's principals may drop files
         * (write + traverse, no listing); sticky, so they cannot delete each other's files. */
        {
                /* Files dropped there are private to their sender and root (o::---), whatever the
                 * sender's umask. */
                const AclList none = {};
                r = add_dir(p, CON_SRV_DIR "/inbox", "root", "root", 01700, outer, &none, 0700, false);
        }
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                r = add_dir(p, dirs[i].path, "root", "root", dirs[i].mode, NULL, NULL, 0, false);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int plan_contracts(ConProvision *p, bool config_file, char **ret_error) {
        _cleanup_free_ char *src = NULL;
        struct stat st;
        int r;

        if (asprintf(&src, "%s/contracts", p->outer_root) < 0)
                return -ENOMEM;
        if (stat(src, &st) < 0 || !S_ISDIR(st.st_mode)) {
                /* --config FILE without a profile in /etc/con: the default profile's health
                 * contracts, installed into /etc/con/contracts too, so later runs keep them. */
                _cleanup_free_ char *dflt = NULL;

                if (!config_file)
                        return 0;
                if (asprintf(&dflt, "%s/default/contracts", p->profiles_dir) < 0)
                        return -ENOMEM;
                if (stat(dflt, &st) < 0 || !S_ISDIR(st.st_mode))
                        return 0;
                r = add_dir(p, CON_ETC_DIR "/contracts", "root", "root", 0755, NULL, NULL, 0, false);
                if (r >= 0)
                        r = plan_tree(p, dflt, CON_ETC_DIR "/contracts", NULL, ret_error);
                if (r < 0)
                        return r;
                free(src);
                src = TAKE_PTR(dflt);
        }
        return plan_tree(p, src, CON_SRV_DIR "/contracts", NULL, ret_error);
}

static int plan_platform(ConProvision *p, char **ret_error) {
        ConPlatformOptions o = {};
        ConPlatformFile *f = NULL;
        size_t n = 0;
        int r;

        r = con_platform_render(p->config, &o, &f, &n);
        if (r < 0)
                return con_error_textf(ret_error, r, "cannot render the platform files: %s", strerror(-r));
        for (size_t i = 0; r >= 0 && i < n; i++) {
                if (!f[i].path || f[i].path[0] != '/' || strstr(f[i].path, "/../") || endswith(f[i].path, "/..")) {
                        r = con_error_textf(ret_error, -EINVAL, "platform file with an invalid path '%s'", strempty(f[i].path));
                        break;
                }
                r = add_parents(p, f[i].path);
                if (r >= 0)
                        r = add_file(p, f[i].path, TAKE_PTR(f[i].content), strlen(f[i].content ?: ""), "root",
                                     "root", f[i].mode ?: 0644);
        }
        con_platform_files_free(f, n);
        return r;
}

static int choose_config(ConProvision *p, const ConProvisionOptions *o, char **ret_error) {
        const char *dir = o->profiles_dir ?: CON_PROFILESDIR;
        const char *profile = o->profile;
        struct stat st;

        if (o->config_path && o->profile)
                return con_error_textf(ret_error, -EINVAL, "--config and --profile cannot be combined");
        _cleanup_free_ char *installed = NULL;
        int r;

        if (o->config_path) {
                p->config_path = strdup(o->config_path);
                r = rooted(p, CON_ETC_DIR, &p->outer_root);
                return p->config_path && r >= 0 ? 0 : -ENOMEM;
        }
        r = rooted(p, CON_CONFIG_PATH, &installed);
        if (r < 0)
                return r;
        if (!profile && stat(installed, &st) >= 0) {
                p->config_path = TAKE_PTR(installed);
                return rooted(p, CON_ETC_DIR, &p->outer_root);
        }
        if (!profile)
                profile = "default";
        if (!con_identifier_valid(profile))
                return con_error_textf(ret_error, -EINVAL, "invalid profile name '%s'", profile);
        if (asprintf(&p->profile_dir, "%s/%s", dir, profile) < 0) {
                p->profile_dir = NULL;
                return -ENOMEM;
        }
        if (stat(p->profile_dir, &st) < 0 || !S_ISDIR(st.st_mode))
                return con_error_textf(ret_error, -ENOENT, "unknown profile '%s': %s is not a directory", profile,
                              p->profile_dir);
        if (asprintf(&p->config_path, "%s/con.yaml", p->profile_dir) < 0) {
                p->config_path = NULL;
                return -ENOMEM;
        }
        p->outer_root = strdup(p->profile_dir);
        return p->outer_root ? 0 : -ENOMEM;
}

int con_provision_new(const ConProvisionOptions *o, ConProvision **ret, char **ret_error) {
        _cleanup_(con_provision_freep) ConProvision *p = NULL;
        AgentAcls *acls = NULL;
        AclList outer = {};
        const char *submitters;
        int r;

        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->lock = CON_USERDB_LOCK_INIT;
        p->root = strdup(!o->root || streq(o->root, "/") ? "" : o->root);
        p->profiles_dir = strdup(o->profiles_dir ?: CON_PROFILESDIR);
        p->fail_after = o->fail_after;
        p->force = o->force;
        p->mesh_credentials = o->mesh_credentials;
        if (!p->root || !p->profiles_dir)
                return -ENOMEM;

        r = choose_config(p, o, ret_error);
        if (r < 0)
                return r;
        {
                /* The drop-ins are the installed ones, whichever con.yaml is provisioned from: they
                 * are what the services read next to /etc/con/con.yaml. */
                _cleanup_free_ char *dropins = NULL;
                ConErrorDetail e = {};
                r = rooted(p, CON_DROPIN_DIR, &dropins);
                if (r < 0)
                        return r;
                r = con_config_load_full(&(ConConfigLoad) {
                                .path = p->config_path,
                                .dropin_dir = dropins,
                                .extra_dropin_name = o->extra_dropin_name,
                                .extra_dropin_text = o->extra_dropin_text,
                                .extra_dropin_len = o->extra_dropin_text ? strlen(o->extra_dropin_text) : 0,
                                .omit_dropin = o->omit_dropin,
                        }, &p->config, &e);
                if (r < 0) {
                        _cleanup_free_ char *m = con_error_detail_format(&e);
                        con_error_detail_done(&e);
                        if (r == -ENOMEM)
                                return r;
                        return con_error_textf(ret_error, r == -EINVAL ? -ENOEXEC : r, "%s",
                                      m ?: "cannot load the configuration");
                }
        }
        submitters = p->config->submitters_group ?: "con";
        if (!con_unix_name_valid(submitters))
                return con_error_textf(ret_error, -ENOEXEC,
                              "%s: system.submitters_group: invalid group name '%s': allowed are ^[a-z_][a-z0-9_-]*$, "
                              "at most 31 characters", p->config_path, submitters);

        if (!o->dry_run) {
                r = con_userdb_lock(p->root, &p->lock);
                if (r < 0)
                        return con_error_textf(ret_error, r, "cannot lock the user database (%s/etc/.pwd.lock): %s", p->root,
                                      strerror(-r));
        }
        r = con_userdb_load(p->root, &p->db);
        if (r < 0)
                return con_error_textf(ret_error, r, "cannot read the user database in %s/etc: %s", p->root, strerror(-r));

        if (p->profile_dir) {
                r = plan_profile(p, ret_error);
                if (r < 0)
                        return r;
        } else if (o->config_path) {
                r = plan_config_file(p, ret_error);
                if (r < 0)
                        return r;
        }

        /* Groups, then users: the allocation order makes IDs predictable. */
        {
                const char *groups[] = { AGENTS_GROUP, tier_groups[CON_TIER_OFFICER], tier_groups[CON_TIER_OPERATOR],
                                         tier_groups[CON_TIER_WORKER], TRUSTED_GROUP, submitters, NULL };
                for (size_t i = 0; groups[i]; i++) {
                        bool dup = false;
                        for (size_t j = 0; j < i; j++)
                                dup = dup || streq(groups[i], groups[j]);
                        if (dup)
                                continue;
                        r = plan_group(p, groups[i], ret_error);
                        if (r < 0)
                                return r;
                }
        }
        for (size_t i = 0; i < p->config->n_agents; i++) {
                r = plan_user(p, &p->config->agents[i], ret_error);
                if (r < 0)
                        return r;
        }
        r = plan_service_user(p, MODELS_USER, "ConspiracyOS model gateway", ret_error);
        if (r >= 0)
                r = plan_service_user(p, WEB_USER, "ConspiracyOS status page", ret_error);
        if (r >= 0)
                r = plan_service_user(p, EGRESS_USER, "ConspiracyOS egress gateway", ret_error);
        if (r >= 0)
                r = plan_service_user(p, CON_MESH_USER, "ConspiracyOS mesh gateway", ret_error);
        if (r < 0)
                return r;
        r = plan_sysusers_file(p);
        if (r < 0)
                return r;
        p->userdb_end = p->n_actions;

        acls = calloc(p->config->n_agents + 1, sizeof(*acls));
        if (!acls)
                return -ENOMEM;
        r = plan_policy(p, acls, &outer, ret_error);
        if (r >= 0)
                r = plan_srv(p, &outer, ret_error);
        if (r >= 0)
                r = add_dir(p, CON_SRV_DIR "/logs/models", MODELS_USER, MODELS_USER, 0750, NULL, NULL, 0, false);
        /* The mesh gateway's answers to .task files sent to other hosts (docs/MULTIHOST.md): its
         * own folders, 0711 like an agent's outbox (each file readable by its sender alone). */
        if (r >= 0 && p->config->mesh.enabled)
                r = add_dir(p, CON_MESH_DIR, CON_MESH_USER, CON_MESH_USER, 0711, NULL, NULL, 0, false);
        if (r >= 0 && p->config->mesh.enabled)
                r = add_dir(p, CON_MESH_OUTBOX_DIR, CON_MESH_USER, CON_MESH_USER, 0711, NULL, NULL, 0, false);
        if (r >= 0 && p->config->mesh.enabled)
                r = add_dir(p, CON_MESH_FAILED_DIR, CON_MESH_USER, CON_MESH_USER, 0711, NULL, NULL, 0, false);
        /* Its records of the tasks sent from here: the gateway's alone. */
        if (r >= 0 && p->config->mesh.enabled)
                r = add_dir(p, CON_MESH_SENT_DIR, CON_MESH_USER, CON_MESH_USER, 0700, NULL, NULL, 0, false);
        if (r >= 0)
                r = plan_env_file(p);
        if (r >= 0)
                r = plan_mesh_files(p, ret_error);
        if (r >= 0)
                r = add_parents(p, CON_HOME_ROOT "/x");
        for (size_t i = 0; r >= 0 && i < p->config->n_agents; i++)
                r = plan_agent(p, &p->config->agents[i], &acls[i], ret_error);
        if (r >= 0)
                r = plan_contracts(p, o->config_path && !p->profile_dir, ret_error);
        if (r >= 0)
                r = plan_platform(p, ret_error);
        /* Last, so the services see the new agent only once everything else is in place. */
        if (r >= 0 && o->extra_dropin_name) {
                _cleanup_free_ char *path = NULL, *content = strdup(o->extra_dropin_text ?: "");
                if (!content || asprintf(&path, CON_DROPIN_DIR "/%s", o->extra_dropin_name) < 0)
                        r = -ENOMEM;
                if (r >= 0)
                        r = add_dir(p, CON_DROPIN_DIR, "root", "root", 0755, NULL, NULL, 0, false);
                if (r >= 0) {
                        size_t len = strlen(content);
                        r = add_file(p, path, TAKE_PTR(content), len, "root", "root", 0644);
                }
        }
        /* After everything it describes. */
        if (r >= 0)
                r = plan_record(p);

        for (size_t i = 0; i < p->config->n_agents; i++) {
                free(acls[i].dir.e);
                free(acls[i].inbox.e);
        }
        free(acls);
        free(outer.e);
        if (r == -ENOMEM)
                return con_error_textf(ret_error, r, "out of memory");
        if (r < 0) {
                if (ret_error && !*ret_error)
                        return con_error_textf(ret_error, r, "cannot plan the bootstrap: %s", strerror(-r));
                return r;
        }
        *ret = TAKE_PTR(p);
        return 0;
}

ConProvision *con_provision_free(ConProvision *p) {
        if (!p)
                return NULL;
        for (size_t i = 0; i < p->n_actions; i++)
                action_done(&p->actions[i]);
        free(p->actions);
        con_userdb_free(p->db);
        con_userdb_unlock(&p->lock);
        con_config_free(p->config);
        free(p->config_path);
        free(p->mesh_request);
        free(p->outer_root);
        free(p->profile_dir);
        free(p->root);
        free(p->sysusers);
        for (size_t i = 0; i < p->n_fixups; i++) {
                free(p->fixups[i].user);
                free(p->fixups[i].group);
                free(p->fixups[i].home);
                free(p->fixups[i].shell);
        }
        free(p->fixups);
        free(p->profiles_dir);
        strv_free(p->created_users);
        strv_free(p->created_groups);
        for (size_t i = 0; i < p->n_undo; i++) {
                free(p->undo[i].path);
                free(p->undo[i].content);
        }
        free(p->undo);
        strv_free(p->warnings);
        strv_free(p->dirs_seen);
        con_file_hashes_done(&p->record);
        con_file_hashes_done(&p->history);
        strv_free(p->conffiles);
        free(p);
        return NULL;
}

const char *con_provision_config_path(const ConProvision *p) {
        return p->config_path;
}

const char *con_provision_profile_dir(const ConProvision *p) {
        return p->profile_dir;
}

const ConConfig *con_provision_config(const ConProvision *p) {
        return p->config;
}

char * const *con_provision_warnings(const ConProvision *p) {
        return p->warnings;
}

const char *con_provision_mesh_request(const ConProvision *p) {
        return p->mesh_request;
}
