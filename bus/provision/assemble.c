/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "assemble.h"
#include "con-paths.h"
#include "fileio.h"
#include "macro.h"
#include "names.h"
#include "strv.h"

/* A layer file larger than this is refused rather than pasted into a prompt. */
#define AGENTS_MD_LAYER_MAX (UINT64_C(1) << 20)

#define PART_SEPARATOR "\n\n---\n\n"

static const char * const default_roots[] = { CON_ETC_DIR, CON_SRV_DIR "/config", NULL };
/* As in the original, skills come from the outer config only: the inner one is agent-writable. */
static const char * const default_skill_roots[] = { CON_ETC_DIR, NULL };

static bool errno_is_absent(int r) {
        /* ELOOP/ENOTDIR: a symlink where O_NOFOLLOW refuses one; treated like a missing layer. */
        return r == -ENOENT || r == -ELOOP || r == -ENOTDIR;
}

/* Opens <root>/<c0>/<c1>/... without following a symlink below root (root itself is trusted).
 * All components but the last are directories; the last one is opened with last_flags. */
static int open_below(const char *root, char * const *components, int last_flags, int *ret_fd) {
        _cleanup_close_ int fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        size_t n = strv_length(components);
        for (size_t i = 0; i < n; i++) {
                bool last = i + 1 == n;
                int flags = last ? last_flags : O_PATH | O_DIRECTORY;
                int nfd = openat(fd, components[i], flags | O_NOFOLLOW | O_CLOEXEC);
                if (nfd < 0)
                        return negative_errno();
                safe_close(fd);
                fd = nfd;
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* Reads a regular file below root. Returns 1 and the content, 0 when it is absent (or a
 * symlink, or not a regular file), or a negative errno. */
static int read_layer(const char *root, char * const *components, char **ret) {
        _cleanup_close_ int fd = -EBADF;
        int r = open_below(root, components, O_RDONLY | O_NONBLOCK | O_NOCTTY, &fd);
        if (r < 0)
                return errno_is_absent(r) ? 0 : r;

        struct stat st;
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return 0;
        if ((uint64_t) st.st_size > AGENTS_MD_LAYER_MAX)
                return -EFBIG;

        size_t size = (size_t) st.st_size;
        _cleanup_free_ char *buf = malloc(size + 1);
        if (!buf)
                return -ENOMEM;
        /* A file that grows meanwhile is cut at its size when we looked. */
        ssize_t k = con_read_full(fd, buf, size);
        if (k < 0)
                return (int) k;
        size_t n = (size_t) k;
        buf[n] = 0;
        if (memchr(buf, 0, n))
                return -EBADMSG;
        *ret = TAKE_PTR(buf);
        return 1;
}

/* Returns a trimmed copy of s, or NULL in *ret when nothing is left. */
static int trimmed_dup(const char *s, char **ret) {
        while (*s && isspace((unsigned char) *s))
                s++;
        size_t l = strlen(s);
        while (l > 0 && isspace((unsigned char) s[l - 1]))
                l--;
        if (l == 0) {
                *ret = NULL;
                return 0;
        }
        char *c = strndup(s, l);
        if (!c)
                return -ENOMEM;
        *ret = c;
        return 0;
}

static int add_part(char ***parts, const char *text) {
        _cleanup_free_ char *t = NULL;
        int r = trimmed_dup(text, &t);
        if (r < 0 || !t)
                return r;
        return strv_consume(parts, TAKE_PTR(t));
}

/* One layer: "base" (arg NULL) or "<kind>/<arg>". */
static int add_layer(char ***parts, const char * const *roots, const char *kind, const char *arg) {
        char *components[4] = { (char *) kind, (char *) arg, (char *) "AGENTS.md", NULL };
        if (!arg) {
                components[1] = (char *) "AGENTS.md";
                components[2] = NULL;
        }
        for (const char * const *root = roots; *root; root++) {
                _cleanup_free_ char *content = NULL;
                int r = read_layer(*root, components, &content);
                if (r < 0)
                        return r;
                if (r == 0)
                        continue;
                r = add_part(parts, content);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int add_layers(char ***parts, const char * const *roots, const char *kind, char * const *args) {
        STRV_FOREACH(a, args) {
                if (!con_identifier_valid(*a))
                        return -EINVAL;
                int r = add_layer(parts, roots, kind, *a);
                if (r < 0)
                        return r;
        }
        return 0;
}

int con_agents_md_assemble(const ConAgent *a, const char * const *roots, char **ret) {
        if (!a || !ret || !con_agent_name_valid(a->name))
                return -EINVAL;
        if (!roots)
                roots = default_roots;

        const char *tier = NULL;
        if (a->tier != CON_TIER_NONE) {
                if (a->tier < 0 || a->tier >= _CON_TIER_MAX)
                        return -EINVAL;
                tier = con_tier_to_string(a->tier);
                if (!con_identifier_valid(tier))
                        return -EINVAL;
        }

        _cleanup_strv_free_ char **parts = NULL;
        int r = add_layer(&parts, roots, "base", NULL);
        if (r >= 0 && tier)
                r = add_layer(&parts, roots, "tiers", tier);
        if (r >= 0)
                r = add_layers(&parts, roots, "groups", a->groups);
        if (r >= 0)
                r = add_layers(&parts, roots, "roles", a->roles);
        if (r >= 0)
                r = add_layers(&parts, roots, "scopes", a->scopes);
        if (r >= 0)
                r = add_layer(&parts, roots, "agents", a->name);
        if (r >= 0 && a->instructions)
                r = add_part(&parts, a->instructions);
        if (r < 0)
                return r;
        if (strv_length(parts) == 0)
                return -ENODATA;

        _cleanup_free_ char *joined = strv_join(parts, PART_SEPARATOR);
        if (!joined)
                return -ENOMEM;
        size_t l = strlen(joined);
        char *s = realloc(joined, l + 2);
        if (!s)
                return -ENOMEM;
        joined = NULL;
        s[l] = '\n';
        s[l + 1] = 0;
        *ret = s;
        return 0;
}

typedef struct Skill {
        char *name;
        char *path;
} Skill;

typedef struct SkillSet {
        Skill *items;
        size_t n;
} SkillSet;

static void skill_set_done(SkillSet *s) {
        for (size_t i = 0; i < s->n; i++) {
                free(s->items[i].name);
                free(s->items[i].path);
        }
        free(s->items);
}

static int skill_set_put(SkillSet *s, const char *name, char *path) {
        for (size_t i = 0; i < s->n; i++)
                if (streq(s->items[i].name, name)) {
                        free(s->items[i].path);
                        s->items[i].path = path;
                        return 0;
                }
        _cleanup_free_ char *n = strdup(name);
        if (!n) {
                free(path);
                return -ENOMEM;
        }
        Skill *items = realloc(s->items, sizeof(Skill) * (s->n + 1));
        if (!items) {
                free(path);
                return -ENOMEM;
        }
        s->items = items;
        s->items[s->n++] = (Skill) { .name = TAKE_PTR(n), .path = path };
        return 0;
}

/* Adds the regular *.md files of <root>/<kind>/<arg>/skills/ to s. */
static int scan_skills(SkillSet *s, const char *root, const char *kind, const char *arg) {
        char *components[] = { (char *) kind, (char *) arg, (char *) "skills", NULL };
        _cleanup_close_ int fd = -EBADF;
        int r = open_below(root, components, O_RDONLY | O_DIRECTORY, &fd);
        if (r < 0)
                return errno_is_absent(r) ? 0 : r;

        _cleanup_closedir_ DIR *d = fdopendir(fd);
        if (!d)
                return negative_errno();
        fd = -EBADF; /* owned by d now */

        for (;;) {
                errno = 0;
                struct dirent *de = readdir(d);
                if (!de) {
                        if (errno != 0)
                                return negative_errno();
                        break;
                }
                const char *e = endswith(de->d_name, ".md");
                if (!e || e == de->d_name || !con_identifier_valid(de->d_name))
                        continue;
                struct stat st;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (errno == ENOENT)
                                continue;
                        return negative_errno();
                }
                if (!S_ISREG(st.st_mode))
                        continue;
                char *path = NULL;
                if (asprintf(&path, "%s/%s/%s/skills/%s", root, kind, arg, de->d_name) < 0)
                        return -ENOMEM;
                r = skill_set_put(s, de->d_name, path);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int skill_cmp(const void *a, const void *b) {
        return strcmp(((const Skill *) a)->name, ((const Skill *) b)->name);
}

int con_agent_skills(const ConAgent *a, const char * const *roots, char ***ret_names, char ***ret_paths) {
        if (!a || !ret_names || !ret_paths || !con_agent_name_valid(a->name))
                return -EINVAL;
        if (!roots)
                roots = default_skill_roots;
        STRV_FOREACH(r, a->roles)
                if (!con_identifier_valid(*r))
                        return -EINVAL;

        _cleanup_(skill_set_done) SkillSet set = {};
        int r;
        STRV_FOREACH(role, a->roles)
                for (const char * const *root = roots; *root; root++)
                        if ((r = scan_skills(&set, *root, "roles", *role)) < 0)
                                return r;
        for (const char * const *root = roots; *root; root++)
                if ((r = scan_skills(&set, *root, "agents", a->name)) < 0)
                        return r;

        if (set.n > 0)
                qsort(set.items, set.n, sizeof(Skill), skill_cmp);

        _cleanup_strv_free_ char **names = calloc(set.n + 1, sizeof(char *));
        _cleanup_strv_free_ char **paths = calloc(set.n + 1, sizeof(char *));
        if (!names || !paths)
                return -ENOMEM;
        for (size_t i = 0; i < set.n; i++) {
                names[i] = TAKE_PTR(set.items[i].name);
                paths[i] = TAKE_PTR(set.items[i].path);
        }
        *ret_names = TAKE_PTR(names);
        *ret_paths = TAKE_PTR(paths);
        return 0;
}
