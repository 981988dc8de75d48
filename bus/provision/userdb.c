/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <shadow.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fileio.h"
#include "macro.h"
#include "names.h"
#include "strv.h"
#include "userdb.h"

#define USERDB_FILE_MAX (64U * 1024U * 1024U)

void con_passwd_entry_done(ConPasswdEntry *e) {
        free(e->name);
        free(e->gecos);
        free(e->home);
        free(e->shell);
        *e = (ConPasswdEntry) {};
}

/* Splits on ':' keeping empty fields. */
static int split_fields(const char *line, char ***ret) {
        _cleanup_strv_free_ char **l = calloc(1, sizeof(char *));
        const char *p = line;

        if (!l)
                return -ENOMEM;
        for (;;) {
                size_t n = strcspn(p, ":");
                char *f = strndup(p, n);
                int r;

                if (!f)
                        return -ENOMEM;
                r = strv_consume(&l, f);
                if (r < 0)
                        return r;
                if (!p[n])
                        break;
                p += n + 1;
        }
        *ret = TAKE_PTR(l);
        return 0;
}

/* Splits a comma-separated member list; "" gives an empty vector. */
static int split_members(const char *s, char ***ret) {
        _cleanup_strv_free_ char **l = calloc(1, sizeof(char *));
        const char *p = s;

        if (!l)
                return -ENOMEM;
        while (*p) {
                size_t n = strcspn(p, ",");
                if (n > 0) {
                        char *m = strndup(p, n);
                        int r;
                        if (!m)
                                return -ENOMEM;
                        r = strv_consume(&l, m);
                        if (r < 0)
                                return r;
                }
                p += n;
                if (*p == ',')
                        p++;
        }
        *ret = TAKE_PTR(l);
        return 0;
}

static bool line_is_entry(const char *line) {
        return line[0] && line[0] != '#' && line[0] != '+' && line[0] != '-';
}

/* The line index of name in f (first field), or -ENOENT. */
static int find_line(const ConUserDbFile *f, const char *name) {
        size_t nl = strlen(name);

        for (size_t i = 0; f->lines && f->lines[i]; i++) {
                const char *l = f->lines[i];
                if (line_is_entry(l) && strncmp(l, name, nl) == 0 && l[nl] == ':')
                        return (int) i;
        }
        return -ENOENT;
}

static int parse_id(const char *s, uint32_t *ret) {
        char *end;
        unsigned long v;

        if (isempty(s) || !isdigit((unsigned char) s[0]))
                return -EINVAL;
        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno != 0 || *end || v >= UINT32_MAX)
                return -EINVAL;
        *ret = (uint32_t) v;
        return 0;
}

static int load_file(ConUserDbFile *f, const char *root, const char *name, bool required, mode_t def_mode,
                     gid_t def_gid) {
        _cleanup_free_ char *buf = NULL;
        _cleanup_close_ int fd = -EBADF;
        struct stat st;
        size_t len;
        int r;

        if (asprintf(&f->path, "%s/etc/%s", root, name) < 0) {
                f->path = NULL;
                return -ENOMEM;
        }
        f->lines = calloc(1, sizeof(char *));
        if (!f->lines)
                return -ENOMEM;
        f->uid = 0;
        f->gid = def_gid;
        f->mode = def_mode;

        fd = open_nofollow(f->path, O_RDONLY, 0);
        if (fd == -ENOENT && !required)
                return 0;
        if (fd < 0)
                return fd;
        if (fstat(fd, &st) < 0)
                return negative_errno();
        f->present = true;
        f->uid = st.st_uid;
        f->gid = st.st_gid;
        f->mode = st.st_mode & 07777;
        r = read_fd(fd, USERDB_FILE_MAX, &buf, &len);
        if (r < 0)
                return r;
        if (memchr(buf, 0, len))
                return -EBADMSG;

        for (char *p = buf; *p;) {
                size_t n = strcspn(p, "\n");
                char *l = strndup(p, n);
                if (!l)
                        return -ENOMEM;
                r = strv_consume(&f->lines, l);
                if (r < 0)
                        return r;
                p += n;
                if (*p == '\n')
                        p++;
        }
        return 0;
}

static void file_done(ConUserDbFile *f) {
        free(f->path);
        strv_free(f->lines);
}

static void load_login_defs(ConUserDb *db) {
        _cleanup_free_ char *path = NULL, *buf = NULL;

        db->sys_uid_min = db->sys_gid_min = 100;
        db->sys_uid_max = db->sys_gid_max = 999;
        if (asprintf(&path, "%s/etc/login.defs", db->root) < 0) {
                path = NULL;
                return;
        }
        if (read_file_nofollow(path, USERDB_FILE_MAX, &buf, NULL) < 0)
                return;
        for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
                char key[32];
                unsigned long v;

                while (*line == ' ' || *line == '\t')
                        line++;
                if (*line == '#')
                        continue;
                if (sscanf(line, "%31s %lu", key, &v) != 2 || v >= UINT32_MAX)
                        continue;
                if (streq(key, "SYS_UID_MIN"))
                        db->sys_uid_min = (uint32_t) v;
                else if (streq(key, "SYS_UID_MAX"))
                        db->sys_uid_max = (uint32_t) v;
                else if (streq(key, "SYS_GID_MIN"))
                        db->sys_gid_min = (uint32_t) v;
                else if (streq(key, "SYS_GID_MAX"))
                        db->sys_gid_max = (uint32_t) v;
        }
}

int con_userdb_load(const char *root, ConUserDb **ret) {
        _cleanup_(con_userdb_freep) ConUserDb *db = NULL;
        struct group *shadow_grp;
        gid_t shadow_gid = 0;
        int r;

        db = calloc(1, sizeof(*db));
        if (!db)
                return -ENOMEM;
        if (!root || streq(root, "/"))
                root = "";
        db->root = strdup(root);
        if (!db->root)
                return -ENOMEM;

        /* Debian ships shadow files as root:shadow 0640. */
        shadow_grp = getgrnam("shadow");
        if (shadow_grp)
                shadow_gid = shadow_grp->gr_gid;

        r = load_file(&db->passwd, root, "passwd", true, 0644, 0);
        if (r < 0)
                return r;
        r = load_file(&db->group, root, "group", true, 0644, 0);
        if (r < 0)
                return r;
        r = load_file(&db->shadow, root, "shadow", false, 0640, shadow_gid);
        if (r < 0)
                return r;
        r = load_file(&db->gshadow, root, "gshadow", false, 0640, shadow_gid);
        if (r < 0)
                return r;
        load_login_defs(db);
        *ret = TAKE_PTR(db);
        return 0;
}

ConUserDb *con_userdb_free(ConUserDb *db) {
        if (!db)
                return NULL;
        file_done(&db->passwd);
        file_done(&db->group);
        file_done(&db->shadow);
        file_done(&db->gshadow);
        free(db->root);
        free(db);
        return NULL;
}

int con_userdb_lock(const char *root, ConUserDbLock *ret) {
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = -EBADF;
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };

        if (!root || streq(root, "") || streq(root, "/")) {
                if (lckpwdf() < 0)
                        return negative_errno();
                *ret = (ConUserDbLock) { .fd = -EBADF, .pwdf = true };
                return 0;
        }
        if (asprintf(&path, "%s/etc/.pwd.lock", root) < 0) {
                path = NULL;
                return -ENOMEM;
        }
        fd = open_nofollow(path, O_WRONLY | O_CREAT, 0600);
        if (fd < 0)
                return fd;
        if (fcntl(fd, F_SETLKW, &fl) < 0)
                return negative_errno();
        *ret = (ConUserDbLock) { .fd = TAKE_FD(fd) };
        return 0;
}

void con_userdb_unlock(ConUserDbLock *l) {
        if (l->pwdf)
                (void) ulckpwdf();
        l->pwdf = false;
        l->fd = safe_close(l->fd);
}

static int save_file(ConUserDbFile *f) {
        _cleanup_free_ char *text = NULL, *backup = NULL, *old = NULL;
        size_t oldlen = 0;
        int r;

        if (!f->dirty)
                return 0;
        /* Keep the previous version as "<file>-", as shadow-utils does. */
        if (f->present) {
                r = read_file_nofollow(f->path, USERDB_FILE_MAX, &old, &oldlen);
                if (r < 0)
                        return r;
                if (asprintf(&backup, "%s-", f->path) < 0) {
                        backup = NULL;
                        return -ENOMEM;
                }
                r = write_file_atomic(backup, old, oldlen, f->mode, f->uid, f->gid);
                if (r < 0)
                        return r;
        }
        text = strv_join(f->lines, "\n");
        if (!text)
                return -ENOMEM;
        if (!isempty(text)) {
                char *t = NULL;
                if (asprintf(&t, "%s\n", text) < 0)
                        return -ENOMEM;
                free(text);
                text = t;
        }
        r = write_file_atomic(f->path, text, strlen(text), f->mode, f->uid, f->gid);
        if (r < 0)
                return r;
        f->dirty = false;
        f->present = true;
        return 0;
}

bool con_userdb_dirty(const ConUserDb *db) {
        return db->passwd.dirty || db->group.dirty || db->shadow.dirty || db->gshadow.dirty;
}

int con_userdb_save(ConUserDb *db) {
        int r;

        /* Order as shadow-utils: the shadow files first, so an entry never appears in passwd
         * before its password entry exists. */
        r = save_file(&db->gshadow);
        if (r < 0)
                return r;
        r = save_file(&db->group);
        if (r < 0)
                return r;
        r = save_file(&db->shadow);
        if (r < 0)
                return r;
        return save_file(&db->passwd);
}

int con_userdb_get_user(const ConUserDb *db, const char *name, ConPasswdEntry *ret) {
        _cleanup_strv_free_ char **f = NULL;
        uint32_t uid, gid;
        int i, r;

        i = find_line(&db->passwd, name);
        if (i < 0)
                return i;
        r = split_fields(db->passwd.lines[i], &f);
        if (r < 0)
                return r;
        if (strv_length(f) != 7 || parse_id(f[2], &uid) < 0 || parse_id(f[3], &gid) < 0)
                return -EBADMSG;
        *ret = (ConPasswdEntry) {
                .uid = uid,
                .gid = gid,
                .name = strdup(f[0]),
                .gecos = strdup(f[4]),
                .home = strdup(f[5]),
                .shell = strdup(f[6]),
        };
        if (!ret->name || !ret->gecos || !ret->home || !ret->shell) {
                con_passwd_entry_done(ret);
                return -ENOMEM;
        }
        return 0;
}

int con_userdb_get_group(const ConUserDb *db, const char *name, gid_t *ret_gid, char ***ret_members) {
        _cleanup_strv_free_ char **f = NULL;
        uint32_t gid;
        int i, r;

        i = find_line(&db->group, name);
        if (i < 0)
                return i;
        r = split_fields(db->group.lines[i], &f);
        if (r < 0)
                return r;
        if (strv_length(f) != 4 || parse_id(f[2], &gid) < 0)
                return -EBADMSG;
        if (ret_members) {
                r = split_members(f[3], ret_members);
                if (r < 0)
                        return r;
        }
        if (ret_gid)
                *ret_gid = gid;
        return 0;
}

/* The id field (index idx) of each entry line. */
static unsigned id_count(const ConUserDbFile *f, unsigned idx, uint32_t id) {
        unsigned n = 0;

        for (size_t i = 0; f->lines && f->lines[i]; i++) {
                const char *p = f->lines[i];
                uint32_t v;
                char buf[16];
                size_t l;

                if (!line_is_entry(p))
                        continue;
                for (unsigned k = 0; k < idx && p; k++) {
                        p = strchr(p, ':');
                        if (p)
                                p++;
                }
                if (!p)
                        continue;
                l = strcspn(p, ":");
                if (l == 0 || l >= sizeof(buf))
                        continue;
                memcpy(buf, p, l);
                buf[l] = 0;
                if (parse_id(buf, &v) >= 0 && v == id)
                        n++;
        }
        return n;
}

unsigned con_userdb_uid_count(const ConUserDb *db, uid_t uid) {
        return id_count(&db->passwd, 2, uid);
}

unsigned con_userdb_gid_count(const ConUserDb *db, gid_t gid) {
        return id_count(&db->group, 2, gid);
}

int con_userdb_user_by_uid(const ConUserDb *db, uid_t uid, char **ret_name) {
        for (size_t i = 0; db->passwd.lines[i]; i++) {
                const char *l = db->passwd.lines[i];
                ConUserDbFile one = { .lines = (char *[]) { (char *) l, NULL } };

                if (!line_is_entry(l) || id_count(&one, 2, uid) == 0)
                        continue;
                *ret_name = strndup(l, strcspn(l, ":"));
                return *ret_name ? 0 : -ENOMEM;
        }
        return -ENOENT;
}

int con_userdb_alloc_id(const ConUserDb *db, uint32_t min, uint32_t max, uint32_t *ret) {
        if (min > max)
                return -EINVAL;
        for (uint32_t id = max;; id--) {
                if (con_userdb_uid_count(db, id) == 0 && con_userdb_gid_count(db, id) == 0) {
                        *ret = id;
                        return 0;
                }
                if (id == min)
                        break;
        }
        return -ENOSPC;
}

int con_userdb_alloc_id_up(const ConUserDb *db, uint32_t min, uint32_t max, uint32_t *ret) {
        if (min > max)
                return -EINVAL;
        for (uint32_t id = min;; id++) {
                if (con_userdb_uid_count(db, id) == 0 && con_userdb_gid_count(db, id) == 0) {
                        *ret = id;
                        return 0;
                }
                if (id == max)
                        break;
        }
        return -ENOSPC;
}

static bool field_valid(const char *s) {
        return s && !strpbrk(s, ":\n");
}

static int append_line(ConUserDbFile *f, char *line) {
        int r = strv_consume(&f->lines, line);
        if (r < 0)
                return r;
        f->dirty = true;
        return 0;
}

static int set_line(ConUserDbFile *f, size_t i, char **fields) {
        char *l = strv_join(fields, ":");
        if (!l)
                return -ENOMEM;
        free(f->lines[i]);
        f->lines[i] = l;
        f->dirty = true;
        return 0;
}

int con_userdb_add_group(ConUserDb *db, const char *name, gid_t gid) {
        char *l;
        int r;

        if (!con_unix_name_valid(name))
                return -EINVAL;
        if (find_line(&db->group, name) >= 0 || con_userdb_gid_count(db, gid) > 0)
                return -EEXIST;

        if (asprintf(&l, "%s:x:%u:", name, (unsigned) gid) < 0)
                return -ENOMEM;
        r = append_line(&db->group, l);
        if (r < 0)
                return r;
        if (db->gshadow.present && find_line(&db->gshadow, name) < 0) {
                if (asprintf(&l, "%s:!::", name) < 0)
                        return -ENOMEM;
                r = append_line(&db->gshadow, l);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int add_shadow(ConUserDb *db, const char *name) {
        char *l;

        if (!db->shadow.present || find_line(&db->shadow, name) >= 0)
                return 0;
        /* Locked password ("!"), last change today, no aging: what useradd -r writes. */
        if (asprintf(&l, "%s:!:%lld::::::", name, (long long) (time(NULL) / 86400)) < 0)
                return -ENOMEM;
        return append_line(&db->shadow, l);
}

int con_userdb_add_user(ConUserDb *db, const char *name, uid_t uid, gid_t gid, const char *gecos,
                        const char *home, const char *shell) {
        char *l;
        int r;

        if (!con_unix_name_valid(name) || !field_valid(gecos) || !field_valid(home) || !field_valid(shell))
                return -EINVAL;
        if (find_line(&db->passwd, name) >= 0 || con_userdb_uid_count(db, uid) > 0)
                return -EEXIST;

        if (asprintf(&l, "%s:x:%u:%u:%s:%s:%s", name, (unsigned) uid, (unsigned) gid, gecos, home, shell) < 0)
                return -ENOMEM;
        r = append_line(&db->passwd, l);
        if (r < 0)
                return r;
        return add_shadow(db, name);
}

int con_userdb_fix_user(ConUserDb *db, const char *name, gid_t gid, const char *home, const char *shell) {
        _cleanup_strv_free_ char **f = NULL;
        char gidbuf[16];
        bool changed = false;
        int i, r;

        if (!field_valid(home) || !field_valid(shell))
                return -EINVAL;
        i = find_line(&db->passwd, name);
        if (i < 0)
                return i;
        r = split_fields(db->passwd.lines[i], &f);
        if (r < 0)
                return r;
        if (strv_length(f) != 7)
                return -EBADMSG;

        snprintf(gidbuf, sizeof(gidbuf), "%u", (unsigned) gid);
        const char *want[7] = { [3] = gidbuf, [5] = home, [6] = shell };
        for (unsigned k = 0; k < 7; k++) {
                char *c;
                if (!want[k] || streq(f[k], want[k]))
                        continue;
                c = strdup(want[k]);
                if (!c)
                        return -ENOMEM;
                free(f[k]);
                f[k] = c;
                changed = true;
        }
        if (changed) {
                r = set_line(&db->passwd, (size_t) i, f);
                if (r < 0)
                        return r;
        }
        if (db->shadow.present && find_line(&db->shadow, name) < 0) {
                r = add_shadow(db, name);
                if (r < 0)
                        return r;
                changed = true;
        }
        return changed;
}

/* Adds or removes user in the member field (index idx) of the line of group in f. */
static int set_member_in(ConUserDbFile *f, unsigned idx, const char *group, const char *user, bool member) {
        _cleanup_strv_free_ char **fields = NULL, **members = NULL, **kept = NULL;
        char *joined;
        bool has;
        int i, r;

        i = find_line(f, group);
        if (i < 0)
                return i;
        r = split_fields(f->lines[i], &fields);
        if (r < 0)
                return r;
        if (strv_length(fields) != idx + 1)
                return -EBADMSG;
        r = split_members(fields[idx], &members);
        if (r < 0)
                return r;
        has = strv_contains(members, user);
        if (has == member)
                return 0;
        if (member) {
                r = strv_extend(&members, user);
                if (r < 0)
                        return r;
        } else {
                kept = calloc(1, sizeof(char *));
                if (!kept)
                        return -ENOMEM;
                STRV_FOREACH(m, members)
                        if (!streq(*m, user)) {
                                r = strv_extend(&kept, *m);
                                if (r < 0)
                                        return r;
                        }
                strv_free(members);
                members = TAKE_PTR(kept);
        }
        joined = strv_join(members, ",");
        if (!joined)
                return -ENOMEM;
        free(fields[idx]);
        fields[idx] = joined;
        r = set_line(f, (size_t) i, fields);
        if (r < 0)
                return r;
        return 1;
}

static int drop_line(ConUserDbFile *f, const char *name) {
        int i;

        if (!f->present)
                return 0;
        i = find_line(f, name);
        if (i < 0)
                return 0;
        free(f->lines[i]);
        for (size_t k = (size_t) i; f->lines[k]; k++)
                f->lines[k] = f->lines[k + 1];
        f->dirty = true;
        return 1;
}

int con_userdb_remove_user(ConUserDb *db, const char *name) {
        int a, b;

        if (!con_unix_name_valid(name))
                return -EINVAL;
        a = drop_line(&db->passwd, name);
        b = drop_line(&db->shadow, name);
        return a || b;
}

int con_userdb_remove_group(ConUserDb *db, const char *name) {
        int a, b;

        if (!con_unix_name_valid(name))
                return -EINVAL;
        a = drop_line(&db->group, name);
        b = drop_line(&db->gshadow, name);
        return a || b;
}

int con_userdb_set_member(ConUserDb *db, const char *group, const char *user, bool member) {
        int r, changed;

        if (!con_unix_name_valid(user))
                return -EINVAL;
        changed = set_member_in(&db->group, 3, group, user, member);
        if (changed < 0)
                return changed;
        /* gshadow: name:password:admins:members */
        if (db->gshadow.present) {
                r = set_member_in(&db->gshadow, 3, group, user, member);
                if (r == -ENOENT && member) {
                        char *l;
                        if (asprintf(&l, "%s:!::%s", group, user) < 0)
                                return -ENOMEM;
                        r = append_line(&db->gshadow, l);
                        if (r >= 0)
                                r = 1;
                } else if (r == -ENOENT)
                        r = 0;
                if (r < 0)
                        return r;
                changed = changed || r;
        }
        return changed;
}
