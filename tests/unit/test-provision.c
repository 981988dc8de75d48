/* SPDX-License-Identifier: MIT */
/* The provisioning engine, plan then apply, below a test root: a temp folder with its own
 * etc/passwd and etc/group, so nothing of this machine is touched. Applying (chown to the
 * allocated ids, ACLs) needs root; planning and the dry run do not. */
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "con-paths.h"
#include "macro.h"
#include "provision.h"
#include "strv.h"
#include "test-util.h"
#include "userdb.h"

static const char config_text[] =
        "system:\n"
        "  name: provtest\n"
        "  submitters_group: con\n"
        "agents:\n"
        "  - name: concierge\n"
        "  - name: coder\n"
        "    tier: worker\n"
        "policy:\n"
        "  defaults: true\n"
        "  grants:\n"
        "    - {who: coder, may: [task], to: [concierge]}\n";

typedef struct Fixture {
        char *tmp, *root, *config, *profiles;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data) {
        g_autofree char *etc = NULL, *p = NULL;

        f->tmp = test_tmpdir_new();
        f->root = g_build_filename(f->tmp, "root", NULL);
        f->config = g_build_filename(f->tmp, "con.yaml", NULL);
        etc = g_build_filename(f->root, "etc", NULL);
        g_assert_cmpint(g_mkdir_with_parents(etc, 0755), ==, 0);
        p = g_build_filename(etc, "passwd", NULL);
        test_write_file(p, "root:x:0:0:root:/root:/bin/bash\nolduser:x:999:999::/home/olduser:/bin/sh\n");
        g_free(p);
        p = g_build_filename(etc, "group", NULL);
        test_write_file(p, "root:x:0:\nolduser:x:999:\n");
        g_free(p);
        p = g_build_filename(etc, "shadow", NULL);
        test_write_file(p, "root:*:19000:0:99999:7:::\nolduser:!:19000::::::\n");
        test_write_file(f->config, config_text);
        /* a default profile with one health contract and no con.yaml of its own */
        f->profiles = g_build_filename(f->tmp, "profiles", NULL);
        g_free(p);
        p = g_build_filename(f->profiles, "default", "contracts", NULL);
        g_assert_cmpint(g_mkdir_with_parents(p, 0755), ==, 0);
        g_free(p);
        p = g_build_filename(f->profiles, "default", "contracts", "CON-TEST-001.yaml", NULL);
        test_write_file(p, "id: CON-TEST-001\n");
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        test_tmpdir_remove(f->tmp);
        g_free(f->tmp);
        g_free(f->root);
        g_free(f->config);
        g_free(f->profiles);
}

static void collect(const char *change, void *userdata) {
        g_assert_cmpint(strv_extend(userdata, change), ==, 0);
}

/* Plans and runs once; returns the changes reported. */
static char **run(const Fixture *f, bool dry_run, unsigned *ret_changed, int *ret_r, char **ret_error) {
        ConProvisionOptions o = { .config_path = f->config, .root = f->root, .dry_run = dry_run,
                                  .profiles_dir = f->profiles };
        _cleanup_(con_provision_freep) ConProvision *p = NULL;
        _cleanup_free_ char *error = NULL;
        char **changes = NULL;
        unsigned checked = 0, changed = 0;
        int r;

        r = con_provision_new(&o, &p, &error);
        g_assert_cmpint(r, ==, 0);
        g_assert_null(error);
        r = con_provision_run(p, dry_run, collect, &changes, &checked, &changed, &error);
        if (ret_r)
                *ret_r = r;
        else {
                g_assert_cmpint(r, ==, 0);
                g_assert_cmpuint(checked, >, 0);
        }
        if (ret_error)
                *ret_error = TAKE_PTR(error);
        if (ret_changed)
                *ret_changed = changed;
        return changes;
}

static char *in_root(const Fixture *f, const char *path) {
        return g_strconcat(f->root, path, NULL);
}

static bool has_change(char **changes, const char *prefix) {
        STRV_FOREACH(c, changes)
                if (g_str_has_prefix(*c, prefix))
                        return true;
        return false;
}

/* Planning and the dry run report every change and write nothing. */
static void test_plan(Fixture *f, gconstpointer data) {
        g_autofree char *srv = in_root(f, CON_SRV_DIR), *agent_dir = NULL, *want = NULL;
        _cleanup_strv_free_ char **changes = NULL;
        g_autofree char *passwd_before = NULL, *passwd_after = NULL, *pw = in_root(f, "/etc/passwd");
        unsigned changed = 0;

        g_assert_true(g_file_get_contents(pw, &passwd_before, NULL, NULL));
        changes = run(f, true, &changed, NULL, NULL);
        g_assert_cmpuint(changed, >, 0);
        g_assert_true(has_change(changes, "create group agents (gid "));
        g_assert_true(has_change(changes, "create group workers (gid "));
        g_assert_true(has_change(changes, "create user a-concierge (uid "));
        g_assert_true(has_change(changes, "create user a-coder (uid "));
        /* --config FILE without contracts in /etc/con: the default profile's */
        want = g_strdup_printf("write %s%s/contracts/CON-TEST-001.yaml", f->root, CON_SRV_DIR);
        g_assert_true(has_change(changes, want));
        g_free(want);
        want = g_strdup_printf("write %s%s/contracts/CON-TEST-001.yaml", f->root, CON_ETC_DIR);
        g_assert_true(has_change(changes, want));
        g_free(want);
        agent_dir = in_root(f, CON_SRV_DIR "/agents/coder/workspace");
        want = g_strdup_printf("create directory %s (a-coder:agents 0700)", agent_dir);
        g_assert_true(strv_contains(changes, want));
        /* every path is below the root */
        STRV_FOREACH(c, changes) {
                const char *slash = strchr(*c, '/');
                if (slash)
                        g_assert_true(g_str_has_prefix(slash, f->root));
        }
        /* nothing written */
        g_assert_cmpint(access(srv, F_OK), ==, -1);
        g_assert_true(g_file_get_contents(pw, &passwd_after, NULL, NULL));
        g_assert_cmpstr(passwd_before, ==, passwd_after);
}

/* An invalid config fails while planning, before any change. */
static void test_bad_config(Fixture *f, gconstpointer data) {
        ConProvisionOptions o = { .config_path = f->config, .root = f->root };
        _cleanup_(con_provision_freep) ConProvision *p = NULL;
        _cleanup_free_ char *error = NULL;
        g_autofree char *etc_con = in_root(f, CON_ETC_DIR);

        test_write_file(f->config, "agents:\n  - name: coder\npolicy:\n  grants:\n    - {who: coder, may: [task], to: [nobody]}\n");
        g_assert_cmpint(con_provision_new(&o, &p, &error), ==, -ENOEXEC);
        g_assert_nonnull(error);
        g_assert_nonnull(strstr(error, "con.yaml:5:"));
        g_assert_null(p);
        g_assert_cmpint(access(etc_con, F_OK), ==, -1);
}

/* Agent users come from system.agent_uid_min..agent_uid_max, filled upward, skipping a number any
 * user or group holds; a full range fails while planning. */
static void test_agent_uid_range(Fixture *f, gconstpointer data) {
        static const char two[] =
                "system:\n"
                "  agent_uid_min: 61000\n"
                "  agent_uid_max: 61003\n"
                "agents:\n"
                "  - name: concierge\n"
                "  - name: coder\n";
        ConProvisionOptions o = { .config_path = f->config, .root = f->root, .dry_run = true };
        _cleanup_(con_provision_freep) ConProvision *p = NULL;
        _cleanup_strv_free_ char **changes = NULL;
        _cleanup_free_ char *error = NULL;
        g_autofree char *three = NULL;
        g_autofree char *pw = in_root(f, "/etc/passwd"), *gr = in_root(f, "/etc/group");

        /* 61000 is a user's UID, 61002 a group's GID */
        test_write_file(pw, "root:x:0:0:root:/root:/bin/bash\nsquatter:x:61000:100::/:/bin/sh\n");
        test_write_file(gr, "root:x:0:\nsquad:x:61002:\n");
        test_write_file(f->config, two);
        changes = run(f, true, NULL, NULL, NULL);
        g_assert_true(strv_contains(changes, "create user a-concierge (uid 61001)"));
        g_assert_true(strv_contains(changes, "create user a-coder (uid 61003)"));

        /* a third agent finds no room: the plan fails, naming the range */
        three = g_strconcat(two, "  - name: tester\n", NULL);
        test_write_file(f->config, three);
        g_assert_cmpint(con_provision_new(&o, &p, &error), ==, -ENOSPC);
        g_assert_nonnull(error);
        g_assert_nonnull(strstr(error, "no free agent UID in 61000..61003"));
}

/* A run that fails (a failure injected before change N) is rolled back: no user or group it
 * created is left, no file or folder it made; at N = 1 (nothing done yet) and at an N after the
 * user database was written and folders were chowned to the new users. */
static void test_rollback(Fixture *f, gconstpointer data) {
        static const unsigned at[] = { 1, 20, 40 };
        g_autofree char *srv = in_root(f, CON_SRV_DIR), *installed = in_root(f, CON_CONFIG_PATH);
        g_autofree char *sysusers = in_root(f, "/etc/sysusers.d/conspiracyos.conf");

        if (geteuid() != 0) {
                con_test_skip("applying chowns to the allocated ids: needs root");
                return;
        }
        for (size_t i = 0; i < G_N_ELEMENTS(at); i++) {
                ConProvisionOptions o = { .config_path = f->config, .root = f->root, .profiles_dir = f->profiles,
                                          .fail_after = at[i] };
                _cleanup_(con_provision_freep) ConProvision *p = NULL;
                _cleanup_(con_userdb_freep) ConUserDb *db = NULL;
                _cleanup_(con_passwd_entry_done) ConPasswdEntry pw = {};
                _cleanup_free_ char *error = NULL;
                unsigned changed = 0;

                g_assert_cmpint(con_provision_new(&o, &p, &error), ==, 0);
                g_assert_cmpint(con_provision_run(p, false, NULL, NULL, NULL, &changed, &error), ==, -EIO);
                g_assert_nonnull(strstr(error, "failure injected"));
                g_assert_nonnull(strstr(error, "; rolled back ("));
                g_test_message("N = %u: %s", at[i], error);
                g_assert_cmpint(con_userdb_load(f->root, &db), ==, 0);
                g_assert_cmpint(con_userdb_get_user(db, "a-coder", &pw), ==, -ENOENT);
                g_assert_cmpint(con_userdb_get_user(db, "a-concierge", &pw), ==, -ENOENT);
                g_assert_cmpint(con_userdb_get_user(db, "con-models", &pw), ==, -ENOENT);
                g_assert_cmpint(con_userdb_get_group(db, "agents", NULL, NULL), ==, -ENOENT);
                g_assert_cmpint(con_userdb_get_group(db, "workers", NULL, NULL), ==, -ENOENT);
                g_assert_cmpint(con_userdb_get_user(db, "olduser", &pw), ==, 0);   /* what was there stays */
                g_assert_cmpint(access(srv, F_OK), ==, -1);
                g_assert_cmpint(access(installed, F_OK), ==, -1);
                g_assert_cmpint(access(sysusers, F_OK), ==, -1);
        }
        /* and then a run without the failure works */
        _cleanup_strv_free_ char **changes = run(f, false, NULL, NULL, NULL);
        g_assert_true(has_change(changes, "create user a-coder (uid "));
}

/* Apply, then a second run changes nothing; a changed mode is found and repaired; a symlink
 * where the engine writes stops it. */
static void test_apply(Fixture *f, gconstpointer data) {
        _cleanup_strv_free_ char **changes = NULL, **again = NULL, **drift = NULL, **repair = NULL;
        _cleanup_(con_userdb_freep) ConUserDb *db = NULL;
        _cleanup_(con_passwd_entry_done) ConPasswdEntry pw = {};
        _cleanup_free_ char *error = NULL;
        g_autofree char *ws = in_root(f, CON_SRV_DIR "/agents/coder/workspace");
        g_autofree char *busconf = in_root(f, CON_DBUS_POLICY_DIR "/org.conspiracy.conf");
        g_autofree char *installed = in_root(f, CON_CONFIG_PATH), *text = NULL;
        g_autofree char *want = NULL, *inbox = NULL, *elsewhere = NULL;
        gid_t agents_gid;
        unsigned changed = 0;
        struct stat st;
        int r;

        if (geteuid() != 0) {
                con_test_skip("applying chowns to the allocated ids: needs root");
                return;
        }
        changes = run(f, false, &changed, NULL, NULL);
        g_assert_cmpuint(changed, >, 0);

        /* the user database below the root */
        g_assert_cmpint(con_userdb_load(f->root, &db), ==, 0);
        g_assert_cmpint(con_userdb_get_user(db, "a-coder", &pw), ==, 0);
        g_assert_cmpint(con_userdb_get_group(db, "agents", &agents_gid, NULL), ==, 0);
        g_assert_cmpuint(pw.uid, >=, CON_AGENT_UID_MIN_DEFAULT);  /* the agents' block, not 100..999 */
        g_assert_cmpuint(pw.uid, <=, CON_AGENT_UID_MAX_DEFAULT);
        g_assert_cmpuint(pw.gid, ==, agents_gid);
        g_assert_cmpstr(pw.shell, ==, "/usr/sbin/nologin");

        /* the files below the root */
        g_assert_cmpint(lstat(ws, &st), ==, 0);
        g_assert_true(S_ISDIR(st.st_mode));
        g_assert_cmpuint(st.st_uid, ==, pw.uid);
        g_assert_cmpuint(st.st_gid, ==, agents_gid);
        g_assert_cmpuint(st.st_mode & 07777, ==, 0700);
        g_assert_cmpint(access(busconf, F_OK), ==, 0);
        g_assert_true(g_file_get_contents(installed, &text, NULL, NULL));
        g_assert_cmpstr(text, ==, config_text);

        /* created by systemd-sysusers from the generated declaration ("!*": its locked password) */
        g_autofree char *decl = in_root(f, "/etc/sysusers.d/conspiracyos.conf"), *decl_text = NULL;
        g_autofree char *shadow = in_root(f, "/etc/shadow"), *shadow_text = NULL;
        g_assert_true(g_file_get_contents(decl, &decl_text, NULL, NULL));
        g_autofree char *uline = g_strdup_printf("\nu a-coder %u:agents \"ConspiracyOS agent coder\" /home/a-coder "
                                                 "/usr/sbin/nologin\n", (unsigned) pw.uid);
        g_assert_nonnull(strstr(decl_text, uline));
        g_assert_nonnull(strstr(decl_text, "\nm a-coder workers\n"));
        g_assert_true(g_file_get_contents(shadow, &shadow_text, NULL, NULL));
        g_assert_nonnull(strstr(shadow_text, "\na-coder:!*:"));

        /* idempotent */
        again = run(f, false, &changed, NULL, NULL);
        g_assert_cmpuint(changed, ==, 0);
        g_assert_null(again);

        /* drift: the workspace opened to others is found by a dry run and repaired by a run */
        g_assert_cmpint(chmod(ws, 0755), ==, 0);
        want = g_strdup_printf("set mode %s (0700)", ws);
        drift = run(f, true, &changed, NULL, NULL);
        g_assert_cmpuint(changed, ==, 1);            /* one action: mode (and the ACL the group bits show in) */
        g_assert_true(strv_contains(drift, want));
        repair = run(f, false, &changed, NULL, NULL);
        g_assert_cmpuint(changed, ==, 1);
        g_assert_cmpint(lstat(ws, &st), ==, 0);
        g_assert_cmpuint(st.st_mode & 07777, ==, 0700);

        /* a symlink where the engine writes is an error, never followed */
        inbox = in_root(f, CON_SRV_DIR "/agents/coder/inbox");
        elsewhere = g_build_filename(f->tmp, "elsewhere", NULL);
        g_assert_cmpint(rename(inbox, elsewhere), ==, 0);
        g_assert_cmpint(symlink(elsewhere, inbox), ==, 0);
        strv_free(run(f, false, NULL, &r, &error));
        g_assert_cmpint(r, <, 0);
        g_assert_nonnull(error);
        g_assert_nonnull(strstr(error, inbox));
}

/* What systemd-sysusers never does, done after it: an existing agent user with another primary
 * group and shell, in the wrong tier group. */
static void test_fixups(Fixture *f, gconstpointer data) {
        _cleanup_strv_free_ char **changes = NULL, **members = NULL, **again = NULL;
        _cleanup_(con_userdb_freep) ConUserDb *db = NULL;
        _cleanup_(con_passwd_entry_done) ConPasswdEntry pw = {};
        g_autofree char *passwd = in_root(f, "/etc/passwd"), *group = in_root(f, "/etc/group");
        gid_t agents_gid;
        unsigned changed = 0;

        if (geteuid() != 0) {
                con_test_skip("applying chowns to the allocated ids: needs root");
                return;
        }
        test_write_file(passwd, "root:x:0:0:root:/root:/bin/bash\na-coder:x:500:500::/home/elsewhere:/bin/bash\n");
        test_write_file(group, "root:x:0:\na-coder:x:500:\noperators:x:401:a-coder\n");
        changes = run(f, false, &changed, NULL, NULL);
        g_assert_true(has_change(changes, "fix user a-coder (primary group agents, home /home/a-coder"));
        g_assert_true(strv_contains(changes, "remove a-coder from group operators"));
        g_assert_true(strv_contains(changes, "add a-coder to group workers"));

        g_assert_cmpint(con_userdb_load(f->root, &db), ==, 0);
        g_assert_cmpint(con_userdb_get_user(db, "a-coder", &pw), ==, 0);
        g_assert_cmpint(con_userdb_get_group(db, "agents", &agents_gid, NULL), ==, 0);
        g_assert_cmpuint(pw.uid, ==, 500);
        g_assert_cmpuint(pw.gid, ==, agents_gid);
        g_assert_cmpstr(pw.home, ==, "/home/a-coder");
        g_assert_cmpstr(pw.shell, ==, "/usr/sbin/nologin");
        g_assert_cmpint(con_userdb_get_group(db, "operators", NULL, &members), ==, 0);
        g_assert_false(strv_contains(members, "a-coder"));
        members = strv_free(members);
        g_assert_cmpint(con_userdb_get_group(db, "workers", NULL, &members), ==, 0);
        g_assert_true(strv_contains(members, "a-coder"));

        again = run(f, false, &changed, NULL, NULL);
        g_assert_cmpuint(changed, ==, 0);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add("/provision/plan", Fixture, NULL, fixture_setup, test_plan, fixture_teardown);
        g_test_add("/provision/bad-config", Fixture, NULL, fixture_setup, test_bad_config, fixture_teardown);
        g_test_add("/provision/agent-uid-range", Fixture, NULL, fixture_setup, test_agent_uid_range, fixture_teardown);
        g_test_add("/provision/rollback", Fixture, NULL, fixture_setup, test_rollback, fixture_teardown);
        g_test_add("/provision/apply", Fixture, NULL, fixture_setup, test_apply, fixture_teardown);
        g_test_add("/provision/fixups", Fixture, NULL, fixture_setup, test_fixups, fixture_teardown);
        return con_test_run();
}
