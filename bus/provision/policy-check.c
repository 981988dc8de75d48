/* SPDX-License-Identifier: MIT */
#include <acl/libacl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/acl.h>
#include <sys/stat.h>

#include "acl-util.h"
#include "con-paths.h"
#include "fileio.h"
#include "macro.h"
#include "names.h"
#include "platform.h"
#include "linkguard.h"
#include "policy-check.h"
#include "policy.h"
#include "provision.h"
#include "strv.h"
#include "userdb.h"
#include "utf8.h"

#define GENERATED_FILE_MAX (4U * 1024U * 1024U)

/* The generated files that make up the bus doors. */
static const char * const door_files[] = {
        CON_DBUS_POLICY_DIR "/org.conspiracy.conf",
        CON_POLKIT_RULES_DIR "/50-conspiracy.rules",
        NULL,
};

static void perms_text(unsigned perms, char out[4]) {
        out[0] = perms & CON_ACL_R ? 'r' : '-';
        out[1] = perms & CON_ACL_W ? 'w' : '-';
        out[2] = perms & CON_ACL_X ? 'x' : '-';
        out[3] = 0;
}

/* A group's name from the loaded group file ("name:x:gid:members"), or NULL. */
static char *group_name_of(const ConUserDb *db, gid_t gid) {
        STRV_FOREACH(l, db->group.lines) {
                const char *c1 = strchr(*l, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
                if (!c1 || !c2)
                        continue;
                char *end = NULL;
                unsigned long v = strtoul(c2 + 1, &end, 10);
                if (end && end != c2 + 1 && *end == ':' && v == gid)
                        return strndup(*l, (size_t) (c1 - *l));
        }
        return NULL;
}

/* "u:NAME:-wx" / "g:NAME:-wx", with the number when the id has no name. */
static char *entry_text(const ConUserDb *db, const ConAclEntry *e) {
        _cleanup_free_ char *name = NULL;
        char p[4], *s = NULL;

        if (e->tag == ACL_USER)
                (void) con_userdb_user_by_uid(db, e->id, &name);
        else
                name = group_name_of(db, e->id);
        perms_text(e->perms, p);
        int r = name ? asprintf(&s, "%s:%s:%s", e->tag == ACL_USER ? "u" : "g", name, p)
                     : asprintf(&s, "%s:%u:%s", e->tag == ACL_USER ? "u" : "g", (unsigned) e->id, p);
        if (r < 0)
                return NULL;
        return s;
}

/* The named entries of the access ACL of path with their effective (masked) permissions. */
static int read_named_entries(const char *path, ConAclEntry **ret, size_t *ret_n) {
        _cleanup_close_ int fd = open_nofollow(path, O_RDONLY | O_DIRECTORY, 0);
        _cleanup_acl_free_ acl_t acl = NULL;
        _cleanup_free_ ConAclEntry *l = NULL;
        unsigned mask = 7;
        size_t n = 0;
        acl_entry_t e;

        if (fd < 0)
                return fd;
        acl = acl_get_fd(fd);
        if (!acl)
                return negative_errno();
        for (int w = ACL_FIRST_ENTRY; acl_get_entry(acl, w, &e) == 1; w = ACL_NEXT_ENTRY) {
                acl_tag_t tag;
                acl_permset_t ps;
                unsigned perms = 0;

                if (acl_get_tag_type(e, &tag) < 0 || acl_get_permset(e, &ps) < 0)
                        return negative_errno();
                perms = (acl_get_perm(ps, ACL_READ) == 1 ? CON_ACL_R : 0) |
                        (acl_get_perm(ps, ACL_WRITE) == 1 ? CON_ACL_W : 0) |
                        (acl_get_perm(ps, ACL_EXECUTE) == 1 ? CON_ACL_X : 0);
                if (tag == ACL_MASK) {
                        mask = perms;
                        continue;
                }
                if (tag != ACL_USER && tag != ACL_GROUP)
                        continue;
                void *q = acl_get_qualifier(e);
                if (!q)
                        return negative_errno();
                uint32_t id = tag == ACL_USER ? (uint32_t) *(uid_t *) q : (uint32_t) *(gid_t *) q;
                acl_free(q);
                ConAclEntry *nl = realloc(l, sizeof(*nl) * (n + 1));
                if (!nl)
                        return -ENOMEM;
                l = nl;
                l[n++] = (ConAclEntry) { .tag = tag, .id = id, .perms = perms };
        }
        for (size_t i = 0; i < n; i++)
                l[i].perms &= mask;
        *ret = TAKE_PTR(l);
        *ret_n = n;
        return 0;
}

static int check_acl_path(const ConPolicy *policy, const ConUserDb *db, const char *target, bool inbox,
                          const char *path, char ***drift) {
        _cleanup_free_ ConAclEntry *have = NULL, *want = NULL;
        ConPolicyAclEntry *pe = NULL;
        size_t n_have = 0, n_want = 0, n_pe = 0;
        int r;

        r = read_named_entries(path, &have, &n_have);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return strv_extendf(drift, "%s: cannot read its ACL (%s); run con bootstrap", path,
                                    r == -ELOOP ? "it or a parent is a symbolic link" : strerror(-r));

        r = con_policy_acl_entries(policy, target, inbox, &pe, &n_pe);
        if (r < 0)
                return r;
        want = calloc(n_pe ?: 1, sizeof(ConAclEntry));
        for (size_t i = 0; want && r >= 0 && i < n_pe; i++) {
                char p[4];
                perms_text(pe[i].perms, p);
                if (pe[i].group) {
                        gid_t gid;
                        if (con_userdb_get_group(db, pe[i].name, &gid, NULL) < 0) {
                                r = strv_extendf(drift, "%s: the policy grants g:%s:%s but group '%s' does not exist",
                                                 path, pe[i].name, p, pe[i].name);
                                continue;
                        }
                        want[n_want++] = (ConAclEntry) { .tag = ACL_GROUP, .id = gid, .perms = pe[i].perms };
                } else {
                        _cleanup_(con_passwd_entry_done) ConPasswdEntry pw = {};
                        if (con_userdb_get_user(db, pe[i].name, &pw) < 0) {
                                r = strv_extendf(drift, "%s: the policy grants u:%s:%s but user '%s' does not exist",
                                                 path, pe[i].name, p, pe[i].name);
                                continue;
                        }
                        want[n_want++] = (ConAclEntry) { .tag = ACL_USER, .id = pw.uid, .perms = pe[i].perms };
                }
        }
        con_policy_acl_entries_free(pe, n_pe);
        if (!want)
                return -ENOMEM;
        if (r < 0)
                return r;

        for (size_t i = 0; i < n_have; i++) {
                const ConAclEntry *w = NULL;
                for (size_t j = 0; j < n_want && !w; j++)
                        if (want[j].tag == have[i].tag && want[j].id == have[i].id)
                                w = &want[j];
                if (w && w->perms == have[i].perms)
                        continue;
                _cleanup_free_ char *h = entry_text(db, &have[i]), *x = w ? entry_text(db, w) : NULL;
                if (!h || (w && !x))
                        return -ENOMEM;
                r = w ? strv_extendf(drift, "%s: ACL has %s where the policy grants %s", path, h, x)
                      : strv_extendf(drift, "%s: ACL has %s which the policy does not grant", path, h);
                if (r < 0)
                        return r;
        }
        for (size_t j = 0; j < n_want; j++) {
                bool found = false;
                for (size_t i = 0; i < n_have && !found; i++)
                        found = want[j].tag == have[i].tag && want[j].id == have[i].id;
                if (found)
                        continue;
                _cleanup_free_ char *x = entry_text(db, &want[j]);
                if (!x)
                        return -ENOMEM;
                r = strv_extendf(drift, "%s: ACL lacks %s which the policy grants", path, x);
                if (r < 0)
                        return r;
        }
        return 0;
}

#define LINE_QUOTE_MAX 100     /* bytes of a differing line shown */

int con_generated_file_check(const char *path, const char *want, char ***drift) {
        _cleanup_free_ char *have = NULL;
        size_t len = 0;
        int r;

        r = read_file_nofollow(path, GENERATED_FILE_MAX, &have, &len);
        if (r == -ENOENT)
                return strv_extendf(drift, "%s: missing; the config generates it (run con bootstrap)", path);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return strv_extendf(drift, "%s: cannot be read: %s", path,
                                    r == -ELOOP ? "it or a parent is a symbolic link" : strerror(-r));
        if (len == strlen(want) && memcmp(have, want, len) == 0)
                return 0;

        /* Name the first line that differs. */
        const char *a = have, *b = want, *aend = have + len;
        unsigned line = 1;
        for (;;) {
                const char *ae = memchr(a, '\n', (size_t) (aend - a)), *be = strchr(b, '\n');
                size_t al = ae ? (size_t) (ae - a) : (size_t) (aend - a), bl = be ? (size_t) (be - b) : strlen(b);
                bool a_eof = a >= aend, b_eof = *b == 0;
                if (a_eof || b_eof || al != bl || memcmp(a, b, al) != 0) {
                        _cleanup_free_ char *qa = a_eof ? strdup("end of file") : con_utf8_quote(a, al, LINE_QUOTE_MAX),
                                            *qb = b_eof ? strdup("end of file") : con_utf8_quote(b, bl, LINE_QUOTE_MAX);
                        if (!qa || !qb)
                                return -ENOMEM;
                        return strv_extendf(drift, "%s: line %u differs from what the config generates: found %s, "
                                            "expected %s", path, line, qa, qb);
                }
                a = ae ? ae + 1 : aend;
                b = be ? be + 1 : b + bl;
                line++;
        }
}

/* The keeper's layout (docs/SECURITY.md): the agent folder and the service's state are root's and
 * not writable by the agent user; only the workspace is the agent's. */
static int check_keeper_layout(const ConUserDb *db, const char *name, char ***drift) {
        static const struct {
                const char *sub;
                bool group_may_write; /* the inbox: peers' -wx shows as the ACL mask */
        } root_dirs[] = {
                { "", false }, { "/inbox", true }, { "/queue", false }, { "/outbox", false },
                { "/processed", false }, { "/failed", false }, { "/skills", false },
        };
        _cleanup_(con_passwd_entry_done) ConPasswdEntry pw = {};
        _cleanup_free_ char *user = NULL, *ws = NULL;
        struct stat st;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(root_dirs); i++) {
                _cleanup_free_ char *path = NULL;
                if (asprintf(&path, CON_SRV_DIR "/agents/%s%s", name, root_dirs[i].sub) < 0)
                        return -ENOMEM;
                if (lstat(path, &st) < 0) {
                        if (errno == ENOENT && !streq(root_dirs[i].sub, "")) /* created on first use */
                                continue;
                        r = strv_extendf(drift, "%s: %m; run con bootstrap", path);
                } else if (!S_ISDIR(st.st_mode) || st.st_uid != 0 ||
                           (st.st_mode & (root_dirs[i].group_may_write ? 002 : 022)))
                        r = strv_extendf(drift, "%s: must be a folder of root's that the agent cannot write (it is "
                                         "uid %u, mode %04o); run con bootstrap", path, (unsigned) st.st_uid,
                                         (unsigned) (st.st_mode & 07777));
                else
                        r = 0;
                if (r < 0)
                        return r;
        }
        if (con_agent_user(name, &user) < 0 || asprintf(&ws, CON_SRV_DIR "/agents/%s/workspace", name) < 0)
                return -ENOMEM;
        if (con_userdb_get_user(db, user, &pw) < 0 || lstat(ws, &st) < 0)
                return 0; /* reported elsewhere (bootstrap, CON-AGENT-001) */
        if (!S_ISDIR(st.st_mode) || st.st_uid != pw.uid)
                return strv_extendf(drift, "%s: must be a folder of %s (it is uid %u); run con bootstrap", ws, user,
                                    (unsigned) st.st_uid);
        return 0;
}

typedef struct DriftScan {
        char * const *paths;
        char * const *quarantined;
        char **changes;
        int r;
} DriftScan;

/* The path a provisioning change line names ("set mode /srv/x (0700)" -> "/srv/x"), or NULL. */
static const char *change_path(const char *change, size_t *ret_len) {
        const char *p = strchr(change, '/');
        if (p)
                *ret_len = strcspn(p, " ");
        return p;
}

static void drift_report(const char *change, void *userdata) {
        DriftScan *s = userdata;
        size_t len = 0;
        const char *p = change_path(change, &len);
        bool hit = !s->paths;

        if (s->r < 0)
                return;
        STRV_FOREACH(prefix, s->paths) {
                const char *rest = p ? startswith(p, *prefix) : NULL;
                if (rest && (endswith(*prefix, "/") || *rest == '/' || *rest == ' ' || *rest == 0)) /* whole components */
                        hit = true;
        }
        /* The activation file of a quarantined agent is moved aside on purpose. */
        STRV_FOREACH(q, s->quarantined) {
                _cleanup_free_ char *camel = NULL, *file = NULL;
                if (con_agent_camel(*q, &camel) >= 0 && asprintf(&file, "/org.conspiracy.%s.service", camel) >= 0 &&
                    p && len >= strlen(file) && strncmp(p + len - strlen(file), file, strlen(file)) == 0)
                        hit = false;
        }
        if (hit)
                s->r = strv_extend(&s->changes, change);
}

int con_drift_scan(const char *config_path, char * const *paths, char * const *quarantined, char ***ret_changes,
                   char **ret_error) {
        ConProvisionOptions o = { .config_path = config_path, .dry_run = true };
        _cleanup_(con_provision_freep) ConProvision *p = NULL;
        DriftScan s = { .paths = paths, .quarantined = quarantined };
        int r;

        if (!config_path || !ret_changes)
                return -EINVAL;
        r = con_provision_new(&o, &p, ret_error);
        if (r >= 0)
                r = con_provision_run(p, true, drift_report, &s, NULL, NULL, ret_error);
        if (r >= 0)
                r = s.r;
        if (r < 0) {
                strv_free(s.changes);
                return r;
        }
        *ret_changes = s.changes;
        return 0;
}

/* Whether a drift line already names path ("PATH: ..."). */
static bool drift_names(char * const *drift, const char *path, size_t len) {
        STRV_FOREACH(d, drift)
                if (strncmp(*d, path, len) == 0 && (*d)[len] == ':')
                        return true;
        return false;
}

/* The file door through the drift checker: what con bootstrap would change below it. */
static int check_file_door_drift(const ConConfig *c, char ***drift, char **ret_error) {
        char * const paths[] = CON_FILE_DOOR_PATHS;
        _cleanup_strv_free_ char **changes = NULL, **add = NULL;
        int r;

        r = con_drift_scan(c->path, paths, NULL, &changes, ret_error);
        if (r < 0)
                return r;
        STRV_FOREACH(ch, changes) {
                size_t len = 0;
                const char *p = change_path(*ch, &len);
                if (!p || drift_names(*drift, p, len))
                        continue;
                r = strv_extendf(&add, "%.*s: differs from what con bootstrap provisions (it would %s)", (int) len, p,
                                 *ch);
                if (r < 0)
                        return r;
        }
        STRV_FOREACH(a, add) {
                r = strv_extend(drift, *a);
                if (r < 0)
                        return r;
        }
        return 0;
}

int con_policy_check(const ConConfig *c, char ***ret_drift, char **ret_error) {
        _cleanup_(con_policy_freep) ConPolicy *policy = NULL;
        _cleanup_(con_userdb_freep) ConUserDb *db = NULL;
        _cleanup_strv_free_ char **drift = NULL;
        ConPlatformFile *files = NULL;
        size_t n_files = 0;
        int r;

        if (!c || !ret_drift)
                return -EINVAL;
        r = con_policy_from_config(c, &policy);
        if (r < 0) {
                if (ret_error && asprintf(ret_error, "cannot build the access policy: %s", strerror(-r)) < 0)
                        *ret_error = NULL;
                return r;
        }
        r = con_userdb_load("", &db);
        if (r < 0) {
                if (ret_error && asprintf(ret_error, "cannot read the user database in /etc: %s", strerror(-r)) < 0)
                        *ret_error = NULL;
                return r;
        }

        /* The file door. */
        r = check_acl_path(policy, db, NULL, true, CON_SRV_DIR "/inbox", &drift);
        for (size_t i = 0; r >= 0 && i < c->n_agents; i++) {
                _cleanup_free_ char *dir = NULL, *inbox = NULL;
                const char *name = c->agents[i].name;
                if (asprintf(&dir, CON_SRV_DIR "/agents/%s", name) < 0 ||
                    asprintf(&inbox, CON_SRV_DIR "/agents/%s/inbox", name) < 0)
                        return -ENOMEM;
                r = check_acl_path(policy, db, name, false, dir, &drift);
                if (r >= 0)
                        r = check_acl_path(policy, db, name, true, inbox, &drift);
                if (r >= 0)
                        r = check_keeper_layout(db, name, &drift);
        }
        if (r < 0)
                return r;
        r = check_file_door_drift(c, &drift, ret_error);
        if (r < 0)
                return r;
        /* What the markers and the file door rely on in the kernel. */
        r = con_linkguard_check(CON_PROC_SYS, &drift);
        if (r < 0)
                return r;

        /* The bus doors. */
        r = con_platform_render(c, NULL, &files, &n_files);
        if (r < 0) {
                if (ret_error && asprintf(ret_error, "cannot render the platform files: %s", strerror(-r)) < 0)
                        *ret_error = NULL;
                return r;
        }
        for (const char * const *p = door_files; r >= 0 && *p; p++) {
                const char *want = NULL;
                for (size_t i = 0; i < n_files && !want; i++)
                        if (streq(files[i].path, *p))
                                want = files[i].content;
                r = want ? con_generated_file_check(*p, want, &drift) : -EINVAL;
        }
        con_platform_files_free(files, n_files);
        if (r < 0)
                return r;
        *ret_drift = TAKE_PTR(drift);
        return 0;
}
