/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "assemble.h"
#include "strv.h"
#include "test-util.h"

typedef struct Tree {
        char *dir;
        char *outer;
        char *inner;
        const char *roots[3];
} Tree;

static void tree_new(Tree *t) {
        t->dir = test_tmpdir_new();
        t->outer = g_build_filename(t->dir, "etc-con", NULL);
        t->inner = g_build_filename(t->dir, "srv-con-config", NULL);
        g_assert_cmpint(g_mkdir_with_parents(t->outer, 0755), ==, 0);
        g_assert_cmpint(g_mkdir_with_parents(t->inner, 0755), ==, 0);
        t->roots[0] = t->outer;
        t->roots[1] = t->inner;
        t->roots[2] = NULL;
}

static void tree_free(Tree *t) {
        test_tmpdir_remove(t->dir);
        g_free(t->dir);
        g_free(t->outer);
        g_free(t->inner);
}

/* Writes <root>/<rel> with its parent folders. */
static void put(const char *root, const char *rel, const char *content) {
        char *path = g_build_filename(root, rel, NULL);
        char *parent = g_path_get_dirname(path);
        g_assert_cmpint(g_mkdir_with_parents(parent, 0755), ==, 0);
        test_write_file(path, content);
        g_free(parent);
        g_free(path);
}

static void link_at(const char *root, const char *rel, const char *target) {
        char *path = g_build_filename(root, rel, NULL);
        char *parent = g_path_get_dirname(path);
        g_assert_cmpint(g_mkdir_with_parents(parent, 0755), ==, 0);
        g_assert_cmpint(symlink(target, path), ==, 0);
        g_free(parent);
        g_free(path);
}

static void test_layer_order(void) {
        Tree t;
        tree_new(&t);
        put(t.outer, "base/AGENTS.md", "  \n# Base (outer)\n\n");
        put(t.inner, "base/AGENTS.md", "base inner");
        put(t.outer, "tiers/operator/AGENTS.md", "\ttier operator\n");
        put(t.outer, "tiers/worker/AGENTS.md", "not my tier");
        put(t.inner, "groups/g1/AGENTS.md", "group g1");
        put(t.outer, "groups/g2/AGENTS.md", "group g2");
        put(t.inner, "roles/r1/AGENTS.md", "role r1 inner");
        put(t.outer, "roles/r1/AGENTS.md", "role r1 outer");
        put(t.outer, "roles/r2/AGENTS.md", "role r2");
        put(t.outer, "scopes/s1/AGENTS.md", "scope s1\n\nsecond paragraph");
        put(t.outer, "agents/alice/AGENTS.md", "alice outer");
        put(t.inner, "agents/alice/AGENTS.md", "alice inner\n");
        put(t.outer, "agents/bob/AGENTS.md", "bob");
        put(t.outer, "roles/unused/AGENTS.md", "unused role");

        char *groups[] = { (char *) "g1", (char *) "g2", NULL };
        char *roles[] = { (char *) "r1", (char *) "r2", NULL };
        char *scopes[] = { (char *) "s1", NULL };
        ConAgent a = {
                .name = (char *) "alice", .tier = CON_TIER_OPERATOR,
                .groups = groups, .roles = roles, .scopes = scopes,
                .instructions = (char *) "\n  Inline instructions.  \n\n",
        };
        _cleanup_free_ char *md = NULL;
        g_assert_cmpint(con_agents_md_assemble(&a, t.roots, &md), ==, 0);
        g_assert_cmpstr(md, ==,
                        "# Base (outer)\n\n---\n\n"
                        "base inner\n\n---\n\n"
                        "tier operator\n\n---\n\n"
                        "group g1\n\n---\n\n"
                        "group g2\n\n---\n\n"
                        "role r1 outer\n\n---\n\n"
                        "role r1 inner\n\n---\n\n"
                        "role r2\n\n---\n\n"
                        "scope s1\n\nsecond paragraph\n\n---\n\n"
                        "alice outer\n\n---\n\n"
                        "alice inner\n\n---\n\n"
                        "Inline instructions.\n");

        /* Same agent without tier and inline text, and roots given once: layers drop out. */
        a.tier = CON_TIER_NONE;
        a.instructions = NULL;
        a.groups = a.scopes = NULL;
        const char *outer_only[] = { t.outer, NULL };
        free(md);
        md = NULL;
        g_assert_cmpint(con_agents_md_assemble(&a, outer_only, &md), ==, 0);
        g_assert_cmpstr(md, ==, "# Base (outer)\n\n---\n\nrole r1 outer\n\n---\n\nrole r2\n\n---\n\nalice outer\n");
        tree_free(&t);
}

static void test_missing_layers(void) {
        Tree t;
        tree_new(&t);
        ConAgent a = { .name = (char *) "carol", .tier = CON_TIER_WORKER };
        _cleanup_free_ char *md = NULL;

        /* Nothing at all. */
        g_assert_cmpint(con_agents_md_assemble(&a, t.roots, &md), ==, -ENODATA);
        g_assert_null(md);

        /* Whitespace-only files count as missing. */
        put(t.outer, "base/AGENTS.md", " \n\t\n");
        g_assert_cmpint(con_agents_md_assemble(&a, t.roots, &md), ==, -ENODATA);

        /* Only the inline layer. */
        a.instructions = (char *) "only inline";
        g_assert_cmpint(con_agents_md_assemble(&a, t.roots, &md), ==, 0);
        g_assert_cmpstr(md, ==, "only inline\n");
        free(md);
        md = NULL;

        /* Only the agent layer, from the inner root; roots that do not exist are skipped. */
        a.instructions = NULL;
        put(t.inner, "agents/carol/AGENTS.md", "carol");
        char *nowhere = g_build_filename(t.dir, "nowhere", NULL);
        const char *roots[] = { nowhere, t.outer, t.inner, NULL };
        g_assert_cmpint(con_agents_md_assemble(&a, roots, &md), ==, 0);
        g_assert_cmpstr(md, ==, "carol\n");
        g_free(nowhere);
        tree_free(&t);
}

static void test_invalid_names(void) {
        Tree t;
        tree_new(&t);
        put(t.outer, "base/AGENTS.md", "base");
        put(t.dir, "secret/AGENTS.md", "SECRET");
        _cleanup_free_ char *md = NULL;

        char *bad[] = { (char *) "../secret", NULL };
        char *dots[] = { (char *) "..", NULL };
        char *slash[] = { (char *) "a/b", NULL };
        char *upper[] = { (char *) "Admin", NULL };
        char *empty[] = { (char *) "", NULL };
        char **cases[] = { bad, dots, slash, upper, empty };
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                ConAgent a = { .name = (char *) "alice", .roles = cases[i] };
                g_assert_cmpint(con_agents_md_assemble(&a, t.roots, &md), ==, -EINVAL);
                ConAgent b = { .name = (char *) "alice", .groups = cases[i] };
                g_assert_cmpint(con_agents_md_assemble(&b, t.roots, &md), ==, -EINVAL);
                ConAgent c = { .name = (char *) "alice", .scopes = cases[i] };
                g_assert_cmpint(con_agents_md_assemble(&c, t.roots, &md), ==, -EINVAL);
                char **names = NULL, **paths = NULL;
                g_assert_cmpint(con_agent_skills(&a, t.roots, &names, &paths), ==, -EINVAL);
                g_assert_null(names);
        }
        const char *bad_agents[] = { "../secret", "Alice", "", "a--b", "router" };
        for (size_t i = 0; i < G_N_ELEMENTS(bad_agents); i++) {
                ConAgent a = { .name = (char *) bad_agents[i] };
                g_assert_cmpint(con_agents_md_assemble(&a, t.roots, &md), ==, -EINVAL);
        }
        ConAgent none = {};
        g_assert_cmpint(con_agents_md_assemble(&none, t.roots, &md), ==, -EINVAL);
        ConAgent tier = { .name = (char *) "alice", .tier = _CON_TIER_MAX };
        g_assert_cmpint(con_agents_md_assemble(&tier, t.roots, &md), ==, -EINVAL);
        g_assert_null(md);
        tree_free(&t);
}

/* The inner root is writable by the sysadmin agent: a symlink there must not pull in a file the
 * agent cannot read, and a FIFO must not hang the bootstrap. */
static void test_symlinks_refused(void) {
        Tree t;
        tree_new(&t);
        char *secret = g_build_filename(t.dir, "shadow", NULL);
        test_write_file(secret, "root:SECRET");
        char *secret_dir = g_build_filename(t.dir, "private", NULL);
        put(secret_dir, "AGENTS.md", "PRIVATE");
        put(secret_dir, "alice/AGENTS.md", "PRIVATE ALICE");

        put(t.outer, "base/AGENTS.md", "base");
        link_at(t.inner, "base/AGENTS.md", secret);
        link_at(t.inner, "roles/r1", secret_dir);               /* a symlinked layer folder */
        link_at(t.inner, "agents", secret_dir);                 /* a symlinked kind folder */
        char *fifo_dir = g_build_filename(t.outer, "groups", "g1", NULL);
        g_assert_cmpint(g_mkdir_with_parents(fifo_dir, 0755), ==, 0);
        char *fifo = g_build_filename(fifo_dir, "AGENTS.md", NULL);
        g_assert_cmpint(mkfifo(fifo, 0644), ==, 0);
        put(t.outer, "scopes/s1/AGENTS.md/x", "a folder named AGENTS.md");

        char *roles[] = { (char *) "r1", NULL };
        char *groups[] = { (char *) "g1", NULL };
        char *scopes[] = { (char *) "s1", NULL };
        ConAgent a = { .name = (char *) "alice", .roles = roles, .groups = groups, .scopes = scopes };
        _cleanup_free_ char *md = NULL;
        g_assert_cmpint(con_agents_md_assemble(&a, t.roots, &md), ==, 0);
        g_assert_cmpstr(md, ==, "base\n");

        g_free(fifo);
        g_free(fifo_dir);
        g_free(secret_dir);
        g_free(secret);
        tree_free(&t);
}

static void test_too_large(void) {
        Tree t;
        tree_new(&t);
        char *big = g_malloc((1 << 20) + 2);
        memset(big, 'x', (1 << 20) + 1);
        big[(1 << 20) + 1] = 0;
        put(t.outer, "base/AGENTS.md", big);
        ConAgent a = { .name = (char *) "alice" };
        _cleanup_free_ char *md = NULL;
        g_assert_cmpint(con_agents_md_assemble(&a, t.roots, &md), ==, -EFBIG);
        g_free(big);
        tree_free(&t);
}

static void test_skills(void) {
        Tree t;
        tree_new(&t);
        put(t.outer, "roles/r1/skills/a.md", "a from r1");
        put(t.outer, "roles/r1/skills/b.md", "b from r1");
        put(t.outer, "roles/r1/skills/notes.txt", "not a skill");
        put(t.outer, "roles/r1/skills/Upper.md", "not a valid name");
        put(t.outer, "roles/r1/skills/.md", "no name");
        put(t.outer, "roles/r2/skills/b.md", "b from r2");
        put(t.outer, "roles/r2/skills/d.md/inside", "a folder named d.md");
        put(t.inner, "roles/r2/skills/e.md", "e from the inner root");
        put(t.outer, "agents/alice/skills/a.md", "a from alice");
        put(t.outer, "agents/bob/skills/z.md", "bob's");
        char *secret = g_build_filename(t.dir, "shadow", NULL);
        test_write_file(secret, "root:SECRET");
        link_at(t.outer, "roles/r1/skills/c.md", secret);
        char *elsewhere = g_build_filename(t.dir, "elsewhere", NULL);
        put(elsewhere, "f.md", "via a symlinked skills folder");
        link_at(t.outer, "roles/r3/skills", elsewhere);

        char *roles[] = { (char *) "r1", (char *) "r2", (char *) "r3", (char *) "missing", NULL };
        ConAgent a = { .name = (char *) "alice", .roles = roles };
        _cleanup_strv_free_ char **names = NULL, **paths = NULL;
        g_assert_cmpint(con_agent_skills(&a, t.roots, &names, &paths), ==, 0);

        _cleanup_free_ char *pa = g_build_filename(t.outer, "agents/alice/skills/a.md", NULL);
        _cleanup_free_ char *pb = g_build_filename(t.outer, "roles/r2/skills/b.md", NULL);
        _cleanup_free_ char *pe = g_build_filename(t.inner, "roles/r2/skills/e.md", NULL);
        char *expected_names[] = { (char *) "a.md", (char *) "b.md", (char *) "e.md", NULL };
        char *expected_paths[] = { pa, pb, pe, NULL };
        g_assert_true(strv_equal(names, expected_names));
        g_assert_true(strv_equal(paths, expected_paths));

        /* Outer root only, as the bootstrap uses it by default. */
        strv_free(names);
        strv_free(paths);
        const char *outer_only[] = { t.outer, NULL };
        g_assert_cmpint(con_agent_skills(&a, outer_only, &names, &paths), ==, 0);
        g_assert_cmpuint(strv_length(names), ==, 2);

        /* No skills at all: empty vectors. */
        strv_free(names);
        strv_free(paths);
        ConAgent c = { .name = (char *) "carol" };
        g_assert_cmpint(con_agent_skills(&c, t.roots, &names, &paths), ==, 0);
        g_assert_cmpuint(strv_length(names), ==, 0);
        g_assert_cmpuint(strv_length(paths), ==, 0);

        g_free(elsewhere);
        g_free(secret);
        tree_free(&t);
}

/* The shipped default profile assembles as the bootstrap will see it. */
static void test_shipped_profile(void) {
        _cleanup_free_ char *root = g_build_filename(test_source_dir(), "configs", "default", NULL);
        const char *roots[] = { root, NULL };
        char *roles[] = { (char *) "sysadmin", NULL };
        ConAgent sysadmin = { .name = (char *) "sysadmin", .tier = CON_TIER_OPERATOR, .roles = roles };
        _cleanup_free_ char *md = NULL;
        g_assert_cmpint(con_agents_md_assemble(&sysadmin, roots, &md), ==, 0);
        g_assert_nonnull(strstr(md, "\n\n---\n\n"));
        g_assert_true(g_str_has_suffix(md, "\n") && !g_str_has_suffix(md, "\n\n"));

        _cleanup_strv_free_ char **names = NULL, **paths = NULL;
        g_assert_cmpint(con_agent_skills(&sysadmin, roots, &names, &paths), ==, 0);
        char *expected[] = { (char *) "commission-agent.md", (char *) "evaluate-request.md",
                             (char *) "heartbeat-audit.md", (char *) "writing-contracts.md", NULL };
        g_assert_true(strv_equal(names, expected));

        _cleanup_free_ char *minimal = g_build_filename(test_source_dir(), "configs", "minimal", NULL);
        const char *mroots[] = { minimal, NULL };
        ConAgent concierge = { .name = (char *) "concierge", .tier = CON_TIER_OPERATOR };
        free(md);
        md = NULL;
        g_assert_cmpint(con_agents_md_assemble(&concierge, mroots, &md), ==, 0);
        g_assert_nonnull(strstr(md, "\n\n---\n\n"));
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/assemble/layer-order", test_layer_order);
        g_test_add_func("/assemble/missing-layers", test_missing_layers);
        g_test_add_func("/assemble/invalid-names", test_invalid_names);
        g_test_add_func("/assemble/symlinks-refused", test_symlinks_refused);
        g_test_add_func("/assemble/too-large", test_too_large);
        g_test_add_func("/assemble/skills", test_skills);
        g_test_add_func("/assemble/shipped-profile", test_shipped_profile);
        return con_test_run();
}
