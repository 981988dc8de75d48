/* SPDX-License-Identifier: MIT */
#include <sys/stat.h>

#include "macro.h"
#include "names.h"
#include "strv.h"
#include "test-util.h"
#include "userdb.h"

/* A small /etc below a temp root, with a comment, a NIS line and a malformed line that must
 * survive edits byte for byte. */
static char *make_root(void) {
        char *root = test_tmpdir_new();
        g_autofree char *etc = g_build_filename(root, "etc", NULL);
        g_autofree char *p = NULL;

        g_assert_cmpint(mkdir(etc, 0755), ==, 0);
        p = g_build_filename(etc, "passwd", NULL);
        test_write_file(p,
                        "root:x:0:0:root:/root:/bin/bash\n"
                        "# a comment\n"
                        "systemd-network:x:998:998:systemd Network Management:/:/usr/sbin/nologin\n"
                        "polkitd:x:996:996:polkit:/nonexistent:/usr/sbin/nologin\n"
                        "broken line without fields\n"
                        "+nisuser\n"
                        "olduser:x:500:500::/home/olduser:/bin/bash\n");
        g_free(p);
        p = g_build_filename(etc, "group", NULL);
        test_write_file(p,
                        "root:x:0:\n"
                        "systemd-network:x:998:\n"
                        "polkitd:x:996:\n"
                        "shadowish:x:997:\n"
                        "operators:x:400:olduser\n"
                        "workers:x:401:\n");
        g_free(p);
        p = g_build_filename(etc, "shadow", NULL);
        test_write_file(p, "root:*:19000:0:99999:7:::\nolduser:!:19000::::::\n");
        g_assert_cmpint(chmod(p, 0640), ==, 0);
        g_free(p);
        p = g_build_filename(etc, "gshadow", NULL);
        test_write_file(p, "root:*::\noperators:!::olduser\nworkers:!::\n");
        g_assert_cmpint(chmod(p, 0600), ==, 0);
        g_free(p);
        p = g_build_filename(etc, "login.defs", NULL);
        test_write_file(p, "# defs\nSYS_UID_MIN\t\t  100\nSYS_UID_MAX  999\n#SYS_GID_MAX 5\n");
        return root;
}

static char *read_etc(const char *root, const char *name) {
        g_autofree char *p = g_build_filename(root, "etc", name, NULL);
        char *c = NULL;
        g_assert_true(g_file_get_contents(p, &c, NULL, NULL));
        return c;
}

static void test_names(void) {
        g_assert_true(con_unix_name_valid("agents"));
        g_assert_true(con_unix_name_valid("a-concierge"));
        g_assert_true(con_unix_name_valid("_x1"));
        g_assert_true(con_unix_name_valid("abcdefghijklmnopqrstuvwxyz01234")); /* 31 */
        g_assert_false(con_unix_name_valid("abcdefghijklmnopqrstuvwxyz012345"));
        g_assert_false(con_unix_name_valid(""));
        g_assert_false(con_unix_name_valid(NULL));
        g_assert_false(con_unix_name_valid("-x"));
        g_assert_false(con_unix_name_valid("1x"));
        g_assert_false(con_unix_name_valid("Root"));
        g_assert_false(con_unix_name_valid("a:b"));
        g_assert_false(con_unix_name_valid("a\nb"));
        g_assert_false(con_unix_name_valid("a b"));
}

static void test_load_lookup(void) {
        g_autofree char *root = make_root();
        _cleanup_(con_userdb_freep) ConUserDb *db = NULL;
        _cleanup_(con_passwd_entry_done) ConPasswdEntry pw = {};
        _cleanup_strv_free_ char **members = NULL;
        _cleanup_free_ char *name = NULL;
        gid_t gid;

        g_assert_cmpint(con_userdb_load(root, &db), ==, 0);
        g_assert_cmpuint(db->sys_uid_min, ==, 100);
        g_assert_cmpuint(db->sys_uid_max, ==, 999);
        g_assert_cmpuint(db->sys_gid_max, ==, 999); /* commented out: default */

        g_assert_cmpint(con_userdb_get_user(db, "olduser", &pw), ==, 0);
        g_assert_cmpuint(pw.uid, ==, 500);
        g_assert_cmpuint(pw.gid, ==, 500);
        g_assert_cmpstr(pw.home, ==, "/home/olduser");
        g_assert_cmpstr(pw.shell, ==, "/bin/bash");
        g_assert_cmpint(con_userdb_get_user(db, "nobody-here", &pw), ==, -ENOENT);
        /* A prefix of an existing name is not that name. */
        g_assert_cmpint(con_userdb_get_user(db, "old", &pw), ==, -ENOENT);
        g_assert_cmpint(con_userdb_get_user(db, "broken line without fields", &pw), ==, -ENOENT);

        g_assert_cmpint(con_userdb_get_group(db, "operators", &gid, &members), ==, 0);
        g_assert_cmpuint(gid, ==, 400);
        g_assert_cmpuint(strv_length(members), ==, 1);
        g_assert_cmpstr(members[0], ==, "olduser");

        g_assert_cmpuint(con_userdb_uid_count(db, 998), ==, 1);
        g_assert_cmpuint(con_userdb_uid_count(db, 997), ==, 0);
        g_assert_cmpuint(con_userdb_gid_count(db, 997), ==, 1);
        g_assert_cmpint(con_userdb_user_by_uid(db, 996, &name), ==, 0);
        g_assert_cmpstr(name, ==, "polkitd");
        test_tmpdir_remove(root);
}

static void test_alloc(void) {
        g_autofree char *root = make_root();
        _cleanup_(con_userdb_freep) ConUserDb *db = NULL;
        uint32_t id;

        g_assert_cmpint(con_userdb_load(root, &db), ==, 0);
        /* 999 is free as uid and gid. */
        g_assert_cmpint(con_userdb_alloc_id(db, 100, 999, &id), ==, 0);
        g_assert_cmpuint(id, ==, 999);
        g_assert_cmpint(con_userdb_add_group(db, "agents", id), ==, 0);
        /* 998 is a uid and gid, 997 a gid only, 996 both: next is 995. */
        g_assert_cmpint(con_userdb_alloc_id(db, 100, 999, &id), ==, 0);
        g_assert_cmpuint(id, ==, 995);
        g_assert_cmpint(con_userdb_alloc_id(db, 996, 999, &id), ==, -ENOSPC);
        g_assert_cmpint(con_userdb_alloc_id(db, 10, 5, &id), ==, -EINVAL);
        test_tmpdir_remove(root);
}

static void test_add_save(void) {
        g_autofree char *root = make_root();
        _cleanup_(con_userdb_freep) ConUserDb *db = NULL, *db2 = NULL;
        _cleanup_(con_passwd_entry_done) ConPasswdEntry pw = {};
        _cleanup_strv_free_ char **members = NULL;
        g_autofree char *passwd = NULL, *group = NULL, *shadow = NULL, *gshadow = NULL, *backup = NULL;
        g_autofree char *sp = g_build_filename(root, "etc", "shadow", NULL);
        g_autofree char *gsp = g_build_filename(root, "etc", "gshadow", NULL);
        ConUserDbLock lock = CON_USERDB_LOCK_INIT;
        struct stat st;
        gid_t gid;

        g_assert_cmpint(con_userdb_lock(root, &lock), ==, 0);
        g_assert_cmpint(con_userdb_load(root, &db), ==, 0);
        g_assert_false(con_userdb_dirty(db));

        g_assert_cmpint(con_userdb_add_group(db, "agents", 990), ==, 0);
        g_assert_cmpint(con_userdb_add_group(db, "agents", 991), ==, -EEXIST);
        g_assert_cmpint(con_userdb_add_group(db, "other", 990), ==, -EEXIST); /* gid taken */
        g_assert_cmpint(con_userdb_add_group(db, "bad:name", 992), ==, -EINVAL);
        g_assert_cmpint(con_userdb_add_user(db, "a-x", 989, 990, "agent x", "/home/a-x", "/usr/sbin/nologin"), ==, 0);
        g_assert_cmpint(con_userdb_add_user(db, "a-x", 988, 990, "", "/home/a-x", "/bin/sh"), ==, -EEXIST);
        g_assert_cmpint(con_userdb_add_user(db, "a-y", 500, 990, "", "/home/a-y", "/bin/sh"), ==, -EEXIST);
        g_assert_cmpint(con_userdb_add_user(db, "a-y", 987, 990, "evil:gecos", "/h", "/bin/sh"), ==, -EINVAL);
        g_assert_cmpint(con_userdb_add_user(db, "a-y", 987, 990, "x", "/h\n", "/bin/sh"), ==, -EINVAL);
        g_assert_true(con_userdb_dirty(db));

        /* Membership: add once, second time is no change; removal keeps the others. */
        g_assert_cmpint(con_userdb_set_member(db, "operators", "a-x", true), ==, 1);
        g_assert_cmpint(con_userdb_set_member(db, "operators", "a-x", true), ==, 0);
        g_assert_cmpint(con_userdb_set_member(db, "workers", "a-x", false), ==, 0);
        g_assert_cmpint(con_userdb_set_member(db, "operators", "olduser", false), ==, 1);
        g_assert_cmpint(con_userdb_set_member(db, "nosuchgroup", "a-x", true), ==, -ENOENT);
        /* An existing user fixed: primary group, home and shell. */
        g_assert_cmpint(con_userdb_fix_user(db, "olduser", 990, "/home/olduser", "/usr/sbin/nologin"), ==, 1);
        g_assert_cmpint(con_userdb_fix_user(db, "olduser", 990, "/home/olduser", "/usr/sbin/nologin"), ==, 0);

        g_assert_cmpint(con_userdb_save(db), ==, 0);
        g_assert_false(con_userdb_dirty(db));
        con_userdb_unlock(&lock);

        passwd = read_etc(root, "passwd");
        g_assert_cmpstr(passwd, ==,
                        "root:x:0:0:root:/root:/bin/bash\n"
                        "# a comment\n"
                        "systemd-network:x:998:998:systemd Network Management:/:/usr/sbin/nologin\n"
                        "polkitd:x:996:996:polkit:/nonexistent:/usr/sbin/nologin\n"
                        "broken line without fields\n"
                        "+nisuser\n"
                        "olduser:x:500:990::/home/olduser:/usr/sbin/nologin\n"
                        "a-x:x:989:990:agent x:/home/a-x:/usr/sbin/nologin\n");
        group = read_etc(root, "group");
        g_assert_cmpstr(group, ==,
                        "root:x:0:\n"
                        "systemd-network:x:998:\n"
                        "polkitd:x:996:\n"
                        "shadowish:x:997:\n"
                        "operators:x:400:a-x\n"
                        "workers:x:401:\n"
                        "agents:x:990:\n");
        gshadow = read_etc(root, "gshadow");
        g_assert_cmpstr(gshadow, ==, "root:*::\noperators:!::a-x\nworkers:!::\nagents:!::\n");
        shadow = read_etc(root, "shadow");
        g_assert_true(g_str_has_prefix(shadow, "root:*:19000:0:99999:7:::\nolduser:!:19000::::::\na-x:!:"));
        g_assert_true(g_str_has_suffix(shadow, "::::::\n"));
        /* Modes of the originals are kept; the previous version is kept as "<file>-". */
        g_assert_cmpint(stat(sp, &st), ==, 0);
        g_assert_cmpuint(st.st_mode & 07777, ==, 0640);
        g_assert_cmpint(stat(gsp, &st), ==, 0);
        g_assert_cmpuint(st.st_mode & 07777, ==, 0600);
        backup = read_etc(root, "shadow-");
        g_assert_cmpstr(backup, ==, "root:*:19000:0:99999:7:::\nolduser:!:19000::::::\n");

        /* Reload sees everything. */
        g_assert_cmpint(con_userdb_load(root, &db2), ==, 0);
        g_assert_cmpint(con_userdb_get_user(db2, "a-x", &pw), ==, 0);
        g_assert_cmpuint(pw.uid, ==, 989);
        g_assert_cmpint(con_userdb_get_group(db2, "operators", &gid, &members), ==, 0);
        g_assert_cmpuint(strv_length(members), ==, 1);
        test_tmpdir_remove(root);
}

static void test_symlink_refused(void) {
        g_autofree char *root = make_root();
        g_autofree char *etc = g_build_filename(root, "etc", NULL);
        g_autofree char *real = g_build_filename(root, "real-passwd", NULL);
        g_autofree char *link = g_build_filename(etc, "passwd", NULL);
        _cleanup_(con_userdb_freep) ConUserDb *db = NULL;

        g_assert_cmpint(rename(link, real), ==, 0);
        g_assert_cmpint(symlink(real, link), ==, 0);
        g_assert_cmpint(con_userdb_load(root, &db), ==, -ELOOP);
        test_tmpdir_remove(root);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/userdb/names", test_names);
        g_test_add_func("/userdb/load-lookup", test_load_lookup);
        g_test_add_func("/userdb/alloc", test_alloc);
        g_test_add_func("/userdb/add-save", test_add_save);
        g_test_add_func("/userdb/symlink-refused", test_symlink_refused);
        return con_test_run();
}
