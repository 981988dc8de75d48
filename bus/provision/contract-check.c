/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <signal.h>
#include <math.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <linux/capability.h>
#include <sys/acl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "acl-util.h"
#include "audit.h"
#include "contract-check.h"
#include "fileio.h"
#include "names.h"
#include "netdoor.h"
#include "policy-check.h"
#include "provision.h"
#include "sha256.h"
#include "strv.h"
#include "user-util.h"
#include "utf8.h"

/* ---- native checks ---- */

static const ConContractThresholds default_thresholds = {
        .disk_min_free_pct = 15, .mem_min_free_pct = 10, .max_load_factor = 2.0, .max_session_min = 30,
        .healthcheck_interval_usec = 60 * USEC_PER_SEC,
};

static const ConContractThresholds *thresholds(const CheckContext *ctx) {
        return ctx->config ? &ctx->config->contracts : &default_thresholds;
}

#define SRV(ctx) ((ctx)->srv_dir ?: "/srv/con")
#define HOME(ctx) ((ctx)->home_root ?: "/home")

static int msg(char **ret, const char *fmt, ...) _printf_(2, 3);
static int msg(char **ret, const char *fmt, ...) {
        va_list ap;
        char *s;
        va_start(ap, fmt);
        int r = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        free(*ret);
        *ret = s;
        return 0;
}

static int check_disk_free(const ContractCheck *ch, const CheckContext *ctx, char **m) {
        const char *path = ch->path ?: SRV(ctx);
        double min = ch->threshold >= 0 ? ch->threshold : thresholds(ctx)->disk_min_free_pct;
        struct statvfs sv;
        if (statvfs(path, &sv) < 0) {
                int r = -errno;
                (void) msg(m, "cannot statvfs %s: %s", path, strerror(errno));
                return r;
        }
        /* As df: available to unprivileged users over what they could use. */
        double used = (double) (sv.f_blocks - sv.f_bfree), avail = (double) sv.f_bavail;
        double pct = used + avail > 0 ? avail * 100.0 / (used + avail) : 100.0;
        if (msg(m, "%.0f%% free on %s (minimum %g%%)", floor(pct), path, min) < 0)
                return -ENOMEM;
        return pct >= min;
}

static int check_memory(const ContractCheck *ch, const CheckContext *ctx, char **m) {
        double min = ch->threshold >= 0 ? ch->threshold : thresholds(ctx)->mem_min_free_pct;
        char buf[4096];
        unsigned long long total = 0, avail = 0;
        _cleanup_close_ int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return (void) msg(m, "cannot read /proc/meminfo: %s", strerror(errno)), -errno;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        if (n <= 0)
                return (void) msg(m, "cannot read /proc/meminfo"), -EIO;
        buf[n] = 0;
        const char *t = strstr(buf, "MemTotal:"), *a = strstr(buf, "MemAvailable:");
        if (!t || !a || sscanf(t, "MemTotal: %llu", &total) != 1 || sscanf(a, "MemAvailable: %llu", &avail) != 1 || !total)
                return (void) msg(m, "/proc/meminfo has no MemTotal/MemAvailable"), -EBADMSG;
        double pct = (double) avail * 100.0 / (double) total;
        if (msg(m, "%.0f%% of memory available (minimum %g%%)", floor(pct), min) < 0)
                return -ENOMEM;
        return pct >= min;
}

static int check_load(const ContractCheck *ch, const CheckContext *ctx, char **m) {
        double max = ch->threshold >= 0 ? ch->threshold : thresholds(ctx)->max_load_factor, load;
        char buf[256];
        _cleanup_close_ int fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return (void) msg(m, "cannot read /proc/loadavg: %s", strerror(errno)), -errno;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        if (n <= 0)
                return -EIO;
        buf[n] = 0;
        if (sscanf(buf, "%lf", &load) != 1)
                return (void) msg(m, "/proc/loadavg is unreadable"), -EBADMSG;
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        if (cpus < 1)
                cpus = 1;
        double f = load / (double) cpus;
        if (msg(m, "load %.2f on %ld CPUs = %.2f per CPU (maximum %g)", load, cpus, f, max) < 0)
                return -ENOMEM;
        return f <= max;
}

static bool user_is_agent(uid_t uid, const char *only, char name[static 64]) {
        _cleanup_free_ char *user = NULL;
        if (con_user_by_uid(uid, &user, NULL) < 0 || !startswith(user, CON_USER_PREFIX) || strlen(user) >= 64)
                return false;
        if (only && !streq(user + strlen(CON_USER_PREFIX), only))
                return false;
        strcpy(name, user);
        return true;
}

static int check_sessions(const Contract *c, const ContractCheck *ch, const CheckContext *ctx, char **m) {
        uint64_t max = ch->max_usec ?: (uint64_t) thresholds(ctx)->max_session_min * 60 * USEC_PER_SEC;
        _cleanup_closedir_ DIR *d = opendir("/proc");
        struct dirent *de;
        double uptime = 0;
        long hz = sysconf(_SC_CLK_TCK);
        unsigned found = 0;
        struct { uid_t uid; bool agent; char user[64]; } cache[32];
        size_t n_cache = 0;
        _cleanup_fclose_ FILE *u = fopen("/proc/uptime", "re");
        if (!d || !u || fscanf(u, "%lf", &uptime) != 1)
                return (void) msg(m, "cannot read /proc"), -EIO;
        if (msg(m, "no agent process older than %" PRIu64 " s", max / USEC_PER_SEC) < 0)
                return -ENOMEM;
        while ((de = readdir(d))) {
                char path[300], buf[1024], comm[64] = "", user[64];
                struct stat st;
                if (!isdigit((unsigned char) de->d_name[0]))
                        continue;
                if (fstatat(dirfd(d), de->d_name, &st, 0) < 0 || st.st_uid == 0)
                        continue;
                /* One user database lookup per uid, not per process. */
                size_t ci;
                for (ci = 0; ci < n_cache && cache[ci].uid != st.st_uid; ci++)
                        ;
                if (ci == n_cache) {
                        if (n_cache == ELEMENTSOF(cache))
                                n_cache = 0;
                        ci = n_cache++;
                        cache[ci].uid = st.st_uid;
                        cache[ci].agent = user_is_agent(st.st_uid, c->scope_agent, cache[ci].user);
                }
                if (!cache[ci].agent)
                        continue;
                strcpy(user, cache[ci].user);
                snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
                _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
                ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
                if (n <= 0)
                        continue;
                buf[n] = 0;
                /* pid (comm) state ppid ... field 22 starttime; comm may contain spaces and ')'. */
                char *lp = strchr(buf, '('), *rp = strrchr(buf, ')');
                if (!lp || !rp || rp < lp)
                        continue;
                snprintf(comm, sizeof comm, "%.*s", (int) (rp - lp - 1), lp + 1);
                unsigned long long start = 0;
                char *f = rp + 2;
                for (int i = 3; i < 22 && f; i++) {
                        f = strchr(f, ' ');
                        if (f)
                                f++;
                }
                if (!f || sscanf(f, "%llu", &start) != 1)
                        continue;
                double age = uptime - (double) start / (double) hz;
                if (age * USEC_PER_SEC <= (double) max)
                        continue;
                if (found++ == 0 && msg(m, "%s: pid %s (%s) running for %.0f s (maximum %" PRIu64 " s)", user,
                                        de->d_name, comm, age, max / USEC_PER_SEC) < 0)
                        return -ENOMEM;
        }
        if (found > 1) {
                _cleanup_free_ char *first = TAKE_PTR(*m);
                if (msg(m, "%s, and %u more", first, found - 1) < 0)
                        return -ENOMEM;
        }
        return found == 0;
}

/* Owner/group/mode/ACL of one path, appending problems to *problems. 1 good, 0 not. */
static int path_matches(int fd, const char *path, const char *owner, const char *group, int mode, int acl,
                        char **problems) {
        struct stat st;
        int good = 1;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (owner) {
                struct passwd *pw = getpwnam(owner);
                if (!pw || pw->pw_uid != st.st_uid) {
                        _cleanup_free_ char *p = TAKE_PTR(*problems);
                        if (msg(problems, "%s%s%s is owned by uid %u, not %s", strempty(p), p ? "; " : "", path,
                                (unsigned) st.st_uid, owner) < 0)
                                return -ENOMEM;
                        good = 0;
                }
        }
        if (group) {
                struct group *gr = getgrnam(group);
                if (!gr || gr->gr_gid != st.st_gid) {
                        _cleanup_free_ char *p = TAKE_PTR(*problems);
                        if (msg(problems, "%s%s%s has gid %u, not group %s", strempty(p), p ? "; " : "", path,
                                (unsigned) st.st_gid, group) < 0)
                                return -ENOMEM;
                        good = 0;
                }
        }
        if (mode >= 0 && (int) (st.st_mode & 07777) != mode) {
                _cleanup_free_ char *p = TAKE_PTR(*problems);
                if (msg(problems, "%s%s%s has mode %04o, not %04o", strempty(p), p ? "; " : "", path,
                        (unsigned) (st.st_mode & 07777), (unsigned) mode) < 0)
                        return -ENOMEM;
                good = 0;
        }
        if (acl >= 0 && !S_ISLNK(st.st_mode)) {
                _cleanup_acl_free_ acl_t a = acl_get_fd(fd);
                int extended = 0;
                if (a) {
                        acl_entry_t e;
                        for (int k = acl_get_entry(a, ACL_FIRST_ENTRY, &e); k > 0; k = acl_get_entry(a, ACL_NEXT_ENTRY, &e)) {
                                acl_tag_t tag;
                                if (acl_get_tag_type(e, &tag) == 0 && (tag == ACL_USER || tag == ACL_GROUP || tag == ACL_MASK))
                                        extended = 1;
                        }
                }
                if (extended != acl) {
                        _cleanup_free_ char *p = TAKE_PTR(*problems);
                        if (msg(problems, "%s%s%s %s", strempty(p), p ? "; " : "", path,
                                extended ? "carries an extended ACL" : "has no extended ACL") < 0)
                                return -ENOMEM;
                        good = 0;
                }
        }
        return good;
}

static int check_path(const ContractCheck *ch, char **m) {
        _cleanup_free_ char *problems = NULL;
        _cleanup_close_ int fd = open_nofollow(ch->path, O_RDONLY | O_PATH, 0);
        if (fd == -ENOENT && ch->missing_ok)
                return msg(m, "%s is absent", ch->path) < 0 ? -ENOMEM : 1;
        if (fd < 0) {
                (void) msg(m, "%s: %s", ch->path, fd == -ELOOP ? "a symbolic link is on the way" : strerror(-fd));
                return 0;
        }
        if (ch->acl >= 0) {
                /* ACLs need a real descriptor; reopen (still no symlinks). */
                int fd2 = open_nofollow(ch->path, O_RDONLY | O_NONBLOCK, 0);
                if (fd2 >= 0) {
                        safe_close(fd);
                        fd = fd2;
                }
        }
        int r = path_matches(fd, ch->path, ch->owner, ch->group, ch->mode, ch->acl, &problems);
        if (r < 0)
                return r;
        if (r == 0) {
                free(*m);
                *m = TAKE_PTR(problems);
                return 0;
        }
        return msg(m, "%s as required", ch->path) < 0 ? -ENOMEM : 1;
}

/* Exactly what con bootstrap sets (bus/provision/provision.c): root:con-models 0640, no ACL entries, so the
 * model gateway reads the keys and no agent can. Absent is fine (no provider keys). */
static int check_env_file(const ContractCheck *ch, const CheckContext *ctx, char **m) {
        ContractCheck p = { .path = (char *) (ch->path ?: ctx->env_path ?: "/etc/con/env"), .owner = (char *) "root",
                            .group = (char *) "con-models", .mode = 0640, .acl = 0, .missing_ok = true };
        return check_path(&p, m);
}

static bool agent_in_scope(const Contract *c, const char *name) {
        return !c->scope_agent || streq(c->scope_agent, name);
}

static int append(char **problems, const char *fmt, ...) _printf_(2, 3);
static int append(char **problems, const char *fmt, ...) {
        va_list ap;
        _cleanup_free_ char *add = NULL, *old = TAKE_PTR(*problems);
        va_start(ap, fmt);
        int r = vasprintf(&add, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        return msg(problems, "%s%s%s", strempty(old), old ? "; " : "", add);
}

static int check_agents_md(const Contract *c, const CheckContext *ctx, char **m) {
        _cleanup_free_ char *problems = NULL;
        unsigned n = 0;
        for (size_t i = 0; ctx->config && i < ctx->config->n_agents; i++) {
                const char *name = ctx->config->agents[i].name;
                _cleanup_free_ char *path = NULL, *sumpath = NULL, *text = NULL, *sum = NULL;
                size_t len;
                if (!agent_in_scope(c, name))
                        continue;
                n++;
                if (asprintf(&path, "%s/a-%s/AGENTS.md", HOME(ctx), name) < 0 || asprintf(&sumpath, "%s.sha256", path) < 0)
                        return -ENOMEM;
                _cleanup_close_ int fd = open_nofollow(path, O_RDONLY, 0);
                if (fd < 0) {
                        if (append(&problems, "%s: %s", path, strerror(-fd)) < 0)
                                return -ENOMEM;
                        continue;
                }
                int r = path_matches(fd, path, "root", "root", 0444, -1, &problems);
                if (r < 0)
                        return r;
                r = read_fd(fd, CON_FILE_MAX, &text, &len);
                if (r >= 0)
                        r = read_file_nofollow(sumpath, 4096, &sum, NULL);
                if (r < 0) {
                        if (append(&problems, "%s: cannot read it or its .sha256: %s", path, strerror(-r)) < 0)
                                return -ENOMEM;
                        continue;
                }
                char hex[CON_SHA256_HEX_SIZE];
                r = con_sha256_hex(text, len, hex);
                if (r < 0)
                        return r;
                if (strncmp(sum, hex, 64) != 0 && append(&problems, "%s does not match %s", path, sumpath) < 0)
                        return -ENOMEM;
        }
        if (problems) {
                free(*m);
                *m = TAKE_PTR(problems);
                return 0;
        }
        return msg(m, "%u AGENTS.md files intact", n) < 0 ? -ENOMEM : 1;
}

/* The keeper's layout (docs/SECURITY.md): the agent folder and the service's state are root's and
 * not writable by the agent; only the workspace is the agent user's. */
static int check_agent_dirs(const Contract *c, const CheckContext *ctx, char **m) {
        static const struct {
                const char *sub;
                mode_t forbidden;       /* the inbox's group bits are the peers' -wx ACL mask */
                bool optional;          /* created by the service on first use */
        } root_dirs[] = {
                { "inbox", 002, false }, { "outbox", 022, false }, { "processed", 022, false },
                { "queue", 077, true }, { "failed", 022, true }, { "skills", 022, true },
        };
        _cleanup_free_ char *problems = NULL;
        unsigned n = 0;
        for (size_t i = 0; ctx->config && i < ctx->config->n_agents; i++) {
                const char *name = ctx->config->agents[i].name;
                _cleanup_free_ char *user = NULL, *base = NULL, *ws = NULL;
                struct stat st;
                if (!agent_in_scope(c, name))
                        continue;
                n++;
                if (con_agent_user(name, &user) < 0 || asprintf(&base, "%s/agents/%s", SRV(ctx), name) < 0 ||
                    asprintf(&ws, "%s/workspace", base) < 0)
                        return -ENOMEM;
                struct passwd *pw = getpwnam(user);
                if (!pw) {
                        if (append(&problems, "user %s does not exist", user) < 0)
                                return -ENOMEM;
                        continue;
                }
                if (lstat(base, &st) < 0 || !S_ISDIR(st.st_mode)) {
                        if (append(&problems, "%s is missing or not a folder", base) < 0)
                                return -ENOMEM;
                        continue;
                }
                if (st.st_uid != 0 && append(&problems, "%s is not owned by root (its keeper, the agent service)",
                                             base) < 0)
                        return -ENOMEM;
                if ((st.st_mode & 066) && append(&problems, "%s has group/other read or write bits (%04o)", base,
                                                 (unsigned) (st.st_mode & 07777)) < 0)
                        return -ENOMEM;
                for (size_t j = 0; j < ELEMENTSOF(root_dirs); j++) {
                        _cleanup_free_ char *sub = NULL;
                        if (asprintf(&sub, "%s/%s", base, root_dirs[j].sub) < 0)
                                return -ENOMEM;
                        if (lstat(sub, &st) < 0 && errno == ENOENT && root_dirs[j].optional)
                                continue;
                        if (lstat(sub, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != 0 ||
                            (st.st_mode & root_dirs[j].forbidden))
                                if (append(&problems, "%s is missing, not owned by root or writable by others",
                                           sub) < 0)
                                        return -ENOMEM;
                }
                if (lstat(ws, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != pw->pw_uid)
                        if (append(&problems, "%s is missing or not owned by %s", ws, user) < 0)
                                return -ENOMEM;
        }
        if (problems) {
                free(*m);
                *m = TAKE_PTR(problems);
                return 0;
        }
        return msg(m, "%u agent folders as provisioned", n) < 0 ? -ENOMEM : 1;
}

static int check_audit_chain(const ContractCheck *ch, const CheckContext *ctx, char **m) {
        _cleanup_free_ char *dflt = NULL;
        ConAuditVerify v = {};
        if (!ch->path && asprintf(&dflt, "%s/logs/audit", SRV(ctx)) < 0)
                return -ENOMEM;
        const char *dir = ch->path ?: dflt;
        int r = con_audit_verify(dir, &v);
        if (r == -ENOENT)
                return msg(m, "no audit log in %s yet", dir) < 0 ? -ENOMEM : 1;
        if (r == -EBADMSG)
                return msg(m, "audit chain in %s broken at line %" PRIu64 ": %s", dir, v.bad_line, v.reason) < 0 ? -ENOMEM : 0;
        if (r < 0)
                return (void) msg(m, "cannot verify the audit log in %s: %s", dir, strerror(-r)), r;
        return msg(m, "audit chain intact (%" PRIu64 " records)", v.records) < 0 ? -ENOMEM : 1;
}

static int check_audit_writable(const ContractCheck *ch, const CheckContext *ctx, char **m) {
        _cleanup_free_ char *dflt = NULL;
        if (!ch->path && asprintf(&dflt, "%s/logs/audit", SRV(ctx)) < 0)
                return -ENOMEM;
        const char *dir = ch->path ?: dflt;
        _cleanup_close_ int dfd = open_nofollow(dir, O_RDONLY | O_DIRECTORY, 0);
        if (dfd < 0)
                return msg(m, "%s: %s", dir, strerror(-dfd)) < 0 ? -ENOMEM : 0;
        /* An unnamed file in the folder: proves the file system accepts writes there. */
        _cleanup_close_ int fd = openat(dfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
        if (fd < 0 && errno == EOPNOTSUPP) {
                fd = openat(dfd, ".healthcheck-probe", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
                if (fd >= 0)
                        (void) unlinkat(dfd, ".healthcheck-probe", 0);
        }
        if (fd < 0 || write(fd, "ok\n", 3) != 3)
                return msg(m, "%s is not writable: %s", dir, strerror(errno)) < 0 ? -ENOMEM : 0;
        return msg(m, "%s is writable", dir) < 0 ? -ENOMEM : 1;
}

/* The first five changes, joined, for a message. */
static int drift_scan(const CheckContext *ctx, char * const *paths, char ***ret_changes, char **m) {
        _cleanup_free_ char *error = NULL;
        int r = con_drift_scan(ctx->config_path ?: "/etc/con/con.yaml", paths, ctx->quarantined, ret_changes, &error);
        if (r < 0)
                (void) msg(m, "cannot compare with the provisioned state: %s", error ?: strerror(-r));
        return r;
}

static int drift_text(char * const *changes, char **ret) {
        size_t n = strv_length(changes);
        _cleanup_free_ char *t = NULL;
        for (size_t i = 0; i < n && i < 5; i++)
                if (append(&t, "%s", changes[i]) < 0)
                        return -ENOMEM;
        *ret = TAKE_PTR(t);
        return 0;
}

static int check_drift(const ContractCheck *ch, const CheckContext *ctx, char **m) {
        _cleanup_strv_free_ char **changes = NULL;
        _cleanup_free_ char *text = NULL;
        int r = drift_scan(ctx, ch->paths, &changes, m);
        if (r < 0)
                return r;
        size_t n = strv_length(changes);
        if (n > 0) {
                if (drift_text(changes, &text) < 0)
                        return -ENOMEM;
                r = msg(m, "%zu difference%s from what con bootstrap provisions: %s%s", n, n == 1 ? "" : "s", text,
                        n > 5 ? "; ..." : "");
                return r < 0 ? r : 0;
        }
        return msg(m, "in sync with con bootstrap") < 0 ? -ENOMEM : 1;
}

static int check_skills(const Contract *c, const CheckContext *ctx, char **m) {
        _cleanup_free_ char *problems = NULL;
        unsigned files = 0;
        /* Extra or changed files: everything in the agent's skills folder is root:root 0444. */
        for (size_t i = 0; ctx->config && i < ctx->config->n_agents; i++) {
                const char *name = ctx->config->agents[i].name;
                _cleanup_free_ char *dir = NULL;
                if (!agent_in_scope(c, name))
                        continue;
                if (asprintf(&dir, "%s/agents/%s/skills", SRV(ctx), name) < 0)
                        return -ENOMEM;
                _cleanup_close_ int dfd = open_nofollow(dir, O_RDONLY | O_DIRECTORY, 0);
                if (dfd == -ENOENT)
                        continue;
                if (dfd < 0) {
                        if (append(&problems, "%s: %s", dir, dfd == -ELOOP ? "a symbolic link" : strerror(-dfd)) < 0)
                                return -ENOMEM;
                        continue;
                }
                int r = path_matches(dfd, dir, "root", "root", 0755, -1, &problems);
                if (r < 0)
                        return r;
                _cleanup_closedir_ DIR *d = NULL;
                (void) con_opendir_dup(dfd, &d); /* unreadable: its files are not listed, as before */
                struct dirent *de;
                while (d && (de = readdir(d))) {
                        struct stat st;
                        if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                                continue;
                        files++;
                        if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
                            st.st_uid != 0 || st.st_gid != 0 || (st.st_mode & 07777) != 0444)
                                if (append(&problems, "%s/%s is not a root:root 0444 file", dir, de->d_name) < 0)
                                        return -ENOMEM;
                }
        }
        /* Changed content or missing files: what the bootstrap would write there. */
        _cleanup_strv_free_ char **paths = NULL;
        if (strv_extend(&paths, SRV(ctx)) < 0)
                return -ENOMEM;
        _cleanup_strv_free_ char **changes = NULL;
        _cleanup_free_ char *drift = NULL;
        int r = drift_scan(ctx, paths, &changes, m);
        if (r < 0)
                return r;
        if (drift_text(changes, &drift) < 0)
                return -ENOMEM;
        if (drift && strstr(drift, "/skills") && append(&problems, "%s", drift) < 0)
                return -ENOMEM;
        if (problems) {
                free(*m);
                *m = TAKE_PTR(problems);
                return 0;
        }
        return msg(m, "%u skill files unchanged", files) < 0 ? -ENOMEM : 1;
}

static int check_policy_sync(const CheckContext *ctx, char **m) {
        _cleanup_strv_free_ char **drift = NULL;
        _cleanup_free_ char *error = NULL;
        if (!ctx->config)
                return (void) msg(m, "no configuration to compare with"), -ENOMEDIUM;
        int r = con_policy_check(ctx->config, &drift, &error);
        if (r < 0)
                return (void) msg(m, "cannot check the policy: %s", error ?: strerror(-r)), r;
        size_t n = strv_length(drift);
        if (n == 0)
                return msg(m, "the three doors match the policy") < 0 ? -ENOMEM : 1;
        _cleanup_free_ char *j = strv_join(drift, "; ");
        return msg(m, "%zu difference%s between the doors and the policy: %.600s", n, n == 1 ? "" : "s", strempty(j)) < 0 ?
                -ENOMEM : 0;
}

/* The network door's table is the host's: a service in a network namespace of its own sees another
 * table set, so it says so instead of reporting the table missing (con-contractd's unit keeps the
 * host's namespace and CAP_NET_ADMIN for this check and the cut: docs/NETWORK.md). Without nft
 * (package nftables) con bootstrap has made no table, so there is nothing to compare: not
 * applicable, a pass that says so, never an alarm. */
static int check_network_drift(const CheckContext *ctx, char **m) {
        _cleanup_strv_free_ char **drift = NULL;
        _cleanup_free_ char *error = NULL;
        struct stat self, init;
        if (!ctx->config)
                return (void) msg(m, "no configuration to compare with"), -ENOMEDIUM;
        if (stat("/proc/self/ns/net", &self) == 0 && stat("/proc/1/ns/net", &init) == 0 &&
            (self.st_ino != init.st_ino || self.st_dev != init.st_dev))
                return (void) msg(m, "this service runs in a network namespace of its own and cannot "
                                  "see the host's nftables table; run con policy check"), -ENOMEDIUM;
        if (!con_netdoor_nft_available())
                return msg(m, "not applicable: nft (package nftables) is not installed, so con bootstrap made no "
                           "table here") < 0 ? -ENOMEM : 1;
        int r = con_netdoor_check(ctx->config, &drift, &error);
        if (r < 0)
                return (void) msg(m, "cannot check the network door: %s", error ?: strerror(-r)), r;
        size_t n = strv_length(drift);
        if (n == 0)
                return msg(m, "the nftables table inet conspiracyos is what the config generates") < 0 ? -ENOMEM : 1;
        _cleanup_free_ char *j = strv_join(drift, "; ");
        return msg(m, "%.600s", strempty(j)) < 0 ? -ENOMEM : 0;
}

int contract_check_native(const Contract *c, const ContractCheck *ch, const CheckContext *ctx, char **ret_message) {
        _cleanup_free_ char *m = NULL;
        int r;
        switch (ch->kind) {
        case CHECK_DISK_FREE:
                r = check_disk_free(ch, ctx, &m);
                break;
        case CHECK_MEMORY_AVAILABLE:
                r = check_memory(ch, ctx, &m);
                break;
        case CHECK_LOAD_PER_CORE:
                r = check_load(ch, ctx, &m);
                break;
        case CHECK_SESSION_DURATION:
                r = check_sessions(c, ch, ctx, &m);
                break;
        case CHECK_PATH:
                r = check_path(ch, &m);
                break;
        case CHECK_AGENTS_MD:
                r = check_agents_md(c, ctx, &m);
                break;
        case CHECK_AGENT_DIRS:
                r = check_agent_dirs(c, ctx, &m);
                break;
        case CHECK_AUDIT_CHAIN:
                r = check_audit_chain(ch, ctx, &m);
                break;
        case CHECK_AUDIT_WRITABLE:
                r = check_audit_writable(ch, ctx, &m);
                break;
        case CHECK_ENV_FILE:
                r = check_env_file(ch, ctx, &m);
                break;
        case CHECK_DRIFT:
                r = check_drift(ch, ctx, &m);
                break;
        case CHECK_SKILLS:
                r = check_skills(c, ctx, &m);
                break;
        case CHECK_POLICY_SYNC:
                r = check_policy_sync(ctx, &m);
                break;
        case CHECK_NETWORK_DRIFT:
                r = check_network_drift(ctx, &m);
                break;
        default:
                return -EOPNOTSUPP;
        }
        if (!m && msg(&m, "%s", r == -ENOMEM ? "out of memory" : r < 0 ? strerror(-r) : "ok") < 0)
                return -ENOMEM;
        *ret_message = TAKE_PTR(m);
        return r;
}

/* ---- shell checks ---- */

int contract_shell_argv(const ContractCheck *ch, const char *contracts_dir, char ***ret) {
        _cleanup_strv_free_ char **argv = NULL;
        char *s = NULL;
        if (strv_extend(&argv, "/bin/sh") < 0)
                return -ENOMEM;
        if (ch->kind == CHECK_COMMAND) {
                /* As the original: RESULT=$(run); test. The value also goes to the output so the
                 * audit record shows what was measured. */
                if (ch->test)
                        (void) asprintf(&s, "RESULT=$(%s)\nprintf 'RESULT=%%s\\n' \"$RESULT\"\n%s\n", ch->run, ch->test);
                else
                        s = strdup(ch->run);
                if (!s || strv_extend(&argv, "-c") < 0 || strv_consume(&argv, s) < 0)
                        return -ENOMEM;
        } else if (ch->kind == CHECK_SCRIPT) {
                if (ch->script[0] == '/')
                        s = strdup(ch->script);
                else
                        (void) asprintf(&s, "%s/%s", contracts_dir, ch->script);
                if (!s || strv_consume(&argv, s) < 0)
                        return -ENOMEM;
        } else
                return -EINVAL;
        *ret = TAKE_PTR(argv);
        return 0;
}

/* Forks a check's child: new session and process group (so a kill of -pid reaches whatever it
 * starts), default signals and an empty mask, stdin /dev/null, stdout and stderr to one pipe,
 * cwd dir. Returns 0 in the child, the pid (> 0) in the parent with *ret_fd the pipe's read end
 * (non-blocking, close-on-exec), negative errno. */
static int check_fork(const char *dir, int *ret_fd) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        pid_t pid = fork();
        if (pid < 0) {
                int r = -errno;
                safe_close(p[0]);
                safe_close(p[1]);
                return r;
        }
        if (pid == 0) {
                sigset_t all;
                (void) setsid();
                sigemptyset(&all);
                (void) sigprocmask(SIG_SETMASK, &all, NULL);
                for (int sig = 1; sig < _NSIG; sig++)
                        (void) signal(sig, SIG_DFL);
                int null = open("/dev/null", O_RDONLY);
                if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(p[1], STDOUT_FILENO) < 0 ||
                    dup2(p[1], STDERR_FILENO) < 0)
                        _exit(126);
                if (!dir || chdir(dir) < 0)
                        (void) chdir("/");
                return 0;
        }
        safe_close(p[1]);
        (void) fcntl(p[0], F_SETFL, O_NONBLOCK);
        *ret_fd = p[0];
        return pid;
}

/* In a shell check's child before its exec: CAP_NET_ADMIN (con-contractd's, for the network_drift
 * check and the cut, docs/NETWORK.md) goes from every set. The bounding set needs CAP_SETPCAP,
 * which the service's unit does not give; no_new_privs (the unit's NoNewPrivileges=yes, set here
 * too) keeps root's exec from regaining it: the new permitted set is then at most the old one. */
static int drop_net_admin(void) {
        struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
        struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = {};
        const unsigned i = CAP_TO_INDEX(CAP_NET_ADMIN);
        const uint32_t bit = CAP_TO_MASK(CAP_NET_ADMIN);

        if (prctl(PR_CAPBSET_DROP, CAP_NET_ADMIN, 0, 0, 0) < 0 && errno != EPERM && errno != EINVAL)
                return -errno;
        (void) prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_LOWER, CAP_NET_ADMIN, 0, 0);
        if (syscall(SYS_capget, &h, d) < 0)
                return -errno;
        d[i].effective &= ~bit;
        d[i].permitted &= ~bit;
        d[i].inheritable &= ~bit;
        if (syscall(SYS_capset, &h, d) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return -errno;
        return 0;
}

int contract_shell_spawn(const ContractCheck *ch, const char *contracts_dir, pid_t *ret_pid, int *ret_fd) {
        _cleanup_strv_free_ char **argv = NULL;
        int r = contract_shell_argv(ch, contracts_dir, &argv);
        if (r < 0)
                return r;
        r = check_fork(contracts_dir, ret_fd);
        if (r < 0)
                return r;
        if (r == 0) {
                char *envp[] = { (char *) "PATH=" CONTRACT_CHECK_PATH, NULL };
                r = drop_net_admin();
                if (r < 0) {
                        dprintf(STDERR_FILENO, "cannot drop CAP_NET_ADMIN before running %s: %s\n", argv[0], strerror(-r));
                        _exit(126);
                }
                execve(argv[0], argv, envp);
                dprintf(STDERR_FILENO, "cannot run %s: %s\n", argv[0], strerror(errno));
                _exit(127);
        }
        *ret_pid = r;
        return 0;
}

/* ---- native checks in a worker process ---- */

int contract_native_spawn(const Contract *c, const ContractCheck *ch, const CheckContext *ctx, pid_t *ret_pid,
                          int *ret_fd) {
        int r = check_fork("/", ret_fd);
        if (r < 0)
                return r;
        if (r == 0) {
                _cleanup_free_ char *m = NULL;
                int k = contract_check_native(c, ch, ctx, &m);
                size_t n = m ? con_utf8_cut(m, strlen(m), CONTRACT_NATIVE_MESSAGE_MAX) : 0;
                _exit(dprintf(STDOUT_FILENO, "%d\n%.*s", k, (int) n, strempty(m)) < 0 ? 125 : 0);
        }
        *ret_pid = r;
        return 0;
}

int contract_native_parse(const char *out, size_t len, int *ret_result, char **ret_message) {
        const char *nl = memchr(out, '\n', len);
        char num[16], *end;
        if (!nl || nl == out || (size_t) (nl - out) >= sizeof num)
                return -EBADMSG;
        memcpy(num, out, nl - out);
        num[nl - out] = 0;
        errno = 0;
        long v = strtol(num, &end, 10);
        if (errno != 0 || *end || v < -4095 || v > 1)
                return -EBADMSG;
        size_t mlen = len - (size_t) (nl + 1 - out);
        if (memchr(nl + 1, 0, mlen) || !con_utf8_valid(nl + 1, mlen))
                return -EBADMSG;
        char *m = mlen > 0 ? strndup(nl + 1, mlen) : strdup(v < 0 ? strerror((int) -v) : "ok");
        if (!m)
                return -ENOMEM;
        *ret_result = (int) v;
        *ret_message = m;
        return 0;
}
