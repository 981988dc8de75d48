/* SPDX-License-Identifier: MIT */
/* conffile.h: the record/history format, the upgrade decisions, and the shipped history
 * (configs/profile-history.sha256) against the profiles in the checkout. The two files parsed are
 * written by root (the record, 0600) or shipped with the package (the history); the parser has a
 * fuzz target too (tests/fuzz/fuzz-conffile.c). */
#include <errno.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>

#include "conffile.h"
#include "fileio.h"
#include "macro.h"
#include "test-util.h"

#define H1 "1111111111111111111111111111111111111111111111111111111111111111"
#define H2 "2222222222222222222222222222222222222222222222222222222222222222"
#define H3 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

/* configs/default/agents/sysadmin/AGENTS.md and roles/sysadmin/skills/commission-agent.md as of
 * commit 55f2e39: what machines provisioned then hold in /etc/con (the upgrade that used to be
 * refused, docs/BOOTSTRAP.md "Upgrades"). */
#define SYSADMIN_AGENTS_55F2E39 "b2e087c2db29ef845c1478e8f196d71bdbaf6bd07121854328b8a39f7439e466"
#define COMMISSION_AGENT_55F2E39 "fb373f7dc27728a086208b96b378b6b71dbab1b46c4e18dcbd10ee3b9ca2f153"

static size_t parse_fails(const char *text) {
        ConFileHashes h = { .n = 12345 };
        size_t line = 0;
        g_assert_cmpint(con_file_hashes_parse(text, strlen(text), &h, &line), ==, -EBADMSG);
        g_assert_cmpuint(h.n, ==, 12345);       /* untouched on failure */
        return line;
}

static void test_parse(void) {
        ConFileHashes h = {};
        size_t line = 99;
        const char *text = "# header\n\n" H1 "  /etc/con/a b\n" H2 "  default/x\n" H3 "  default/x";

        g_assert_cmpint(con_file_hashes_parse(text, strlen(text), &h, &line), ==, 0);
        g_assert_cmpuint(line, ==, 0);
        g_assert_cmpuint(h.n, ==, 3);
        g_assert_cmpstr(h.e[0].path, ==, "/etc/con/a b");
        g_assert_cmpstr(h.e[0].hash, ==, H1);
        g_assert_cmpstr(con_file_hashes_get(&h, "default/x"), ==, H2);
        g_assert_true(con_file_hashes_contains(&h, "default/x", H3));   /* last line, no newline */
        g_assert_false(con_file_hashes_contains(&h, "default/x", H1));
        g_assert_false(con_file_hashes_contains(&h, "default/x", NULL));
        g_assert_null(con_file_hashes_get(&h, "default/y"));
        con_file_hashes_done(&h);

        g_assert_cmpint(con_file_hashes_parse("", 0, &h, NULL), ==, 0);
        g_assert_cmpuint(h.n, ==, 0);
        con_file_hashes_done(&h);

        g_assert_cmpuint(parse_fails("# ok\n" H1 " /one-space\n"), ==, 2);
        g_assert_cmpuint(parse_fails(H1 "  \n"), ==, 1);                         /* no path */
        g_assert_cmpuint(parse_fails("11  /short-hash\n"), ==, 1);
        g_assert_cmpuint(parse_fails("1111111111111111111111111111111111111111111111111111111111111111A  /x\n"), ==, 1);
        g_assert_cmpuint(parse_fails("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA  /upper\n"), ==, 1);
        g_assert_cmpuint(parse_fails(H1 "  /tab\there\n"), ==, 1);
        g_assert_cmpuint(parse_fails(H1 "  /cr\r\n"), ==, 1);
        g_assert_cmpuint(parse_fails(" " H1 "  /indented\n"), ==, 1);
        /* a path that does not name the file it says: "." and ".." segments */
        g_assert_cmpuint(parse_fails(H1 "  /etc/con/../../etc/shadow\n"), ==, 1);
        g_assert_cmpuint(parse_fails("# ok\n" H1 "  default/../../x\n"), ==, 2);
        g_assert_cmpuint(parse_fails(H1 "  /etc/con/./x\n"), ==, 1);
        g_assert_cmpuint(parse_fails(H1 "  /etc/con/..\n"), ==, 1);
        g_assert_cmpuint(parse_fails(H1 "  /etc/con/.\n"), ==, 1);
        g_assert_cmpuint(parse_fails(H1 "  ../x\n"), ==, 1);
        g_assert_cmpuint(parse_fails(H1 "  ./x\n"), ==, 1);
        g_assert_cmpuint(parse_fails(H1 "  ..\n"), ==, 1);
        {
                const char nul[] = H1 "  /n\0ul\n";
                g_assert_cmpint(con_file_hashes_parse(nul, sizeof(nul) - 1, &h, &line), ==, -EBADMSG);
        }
}

static void test_set_format(void) {
        _cleanup_free_ char *text = NULL, *again = NULL;
        ConFileHashes h = {}, back = {};

        g_assert_cmpint(con_file_hashes_set(&h, "/etc/con/z", H1), ==, 0);
        g_assert_cmpint(con_file_hashes_set(&h, "/etc/con/a", H2), ==, 0);
        g_assert_cmpint(con_file_hashes_set(&h, "/etc/con/z", H3), ==, 0);      /* replaces */
        g_assert_cmpuint(h.n, ==, 2);
        g_assert_cmpstr(con_file_hashes_get(&h, "/etc/con/z"), ==, H3);
        g_assert_cmpint(con_file_hashes_set(&h, "/etc/con/new\nline", H1), ==, -EINVAL);
        g_assert_cmpint(con_file_hashes_set(&h, "", H1), ==, -EINVAL);
        g_assert_cmpint(con_file_hashes_set(&h, "/etc/con/../passwd", H1), ==, -EINVAL);
        g_assert_false(con_file_hashes_path_valid(NULL));
        g_assert_false(con_file_hashes_path_valid("/etc/con/x/.."));
        g_assert_false(con_file_hashes_path_valid("/etc/con/./x"));
        /* dots inside a name are a name */
        g_assert_true(con_file_hashes_path_valid("/etc/con/.hidden/..x/x../a.b/..."));
        g_assert_true(con_file_hashes_path_valid("default/roles/x.md"));
        g_assert_cmpint(con_file_hashes_set(&h, "/x", "123"), ==, -EINVAL);
        g_assert_cmpuint(h.n, ==, 2);

        g_assert_cmpint(con_file_hashes_format(&h, "head", &text), ==, 0);
        g_assert_cmpstr(text, ==, "# head\n" H2 "  /etc/con/a\n" H3 "  /etc/con/z\n");
        g_assert_cmpint(con_file_hashes_parse(text, strlen(text), &back, NULL), ==, 0);
        g_assert_cmpint(con_file_hashes_format(&back, "head", &again), ==, 0);
        g_assert_cmpstr(again, ==, text);

        g_assert_cmpint(con_file_hashes_add(&h, "/etc/con/z", H2), ==, 0);      /* one more entry */
        g_assert_cmpuint(h.n, ==, 3);
        g_assert_true(con_file_hashes_contains(&h, "/etc/con/z", H2));
        g_assert_true(con_file_hashes_contains(&h, "/etc/con/z", H3));
        g_assert_cmpint(con_file_hashes_add(&h, "/etc/con/./z", H2), ==, -EINVAL);
        g_assert_cmpint(con_file_hashes_add(&h, "/etc/con/z", "A" H2), ==, -EINVAL);
        con_file_hashes_remove(&h, "/etc/con/z");
        g_assert_cmpuint(h.n, ==, 1);
        g_assert_cmpint(con_file_hashes_set(&h, "/etc/con/z", H3), ==, 0);

        con_file_hashes_remove(&h, "/etc/con/a");
        con_file_hashes_remove(&h, "/etc/con/missing");
        g_assert_cmpuint(h.n, ==, 1);
        g_assert_null(con_file_hashes_get(&h, "/etc/con/a"));
        con_file_hashes_done(&h);
        con_file_hashes_done(&back);
}

static void test_decide(void) {
        /* absent */
        g_assert_cmpint(con_conffile_decide(NULL, H1, NULL, false), ==, CON_CONFFILE_INSTALL);
        g_assert_cmpint(con_conffile_decide(NULL, H1, H2, true), ==, CON_CONFFILE_INSTALL);
        /* the new version already */
        g_assert_cmpint(con_conffile_decide(H1, H1, NULL, false), ==, CON_CONFFILE_SAME);
        g_assert_cmpint(con_conffile_decide(H1, H1, H2, false), ==, CON_CONFFILE_SAME);
        /* unedited since installed: the record says so, or (no record) an earlier version */
        g_assert_cmpint(con_conffile_decide(H2, H1, H2, false), ==, CON_CONFFILE_UPDATE);
        g_assert_cmpint(con_conffile_decide(H2, H1, NULL, true), ==, CON_CONFFILE_UPDATE);
        g_assert_cmpint(con_conffile_decide(H2, H1, H3, true), ==, CON_CONFFILE_UPDATE);
        /* changed here */
        g_assert_cmpint(con_conffile_decide(H2, H1, NULL, false), ==, CON_CONFFILE_EDITED);
        g_assert_cmpint(con_conffile_decide(H2, H1, H3, false), ==, CON_CONFFILE_EDITED);

        g_assert_cmpint(con_obsolete_decide(NULL, H1, true), ==, CON_OBSOLETE_GONE);
        g_assert_cmpint(con_obsolete_decide(H1, H1, false), ==, CON_OBSOLETE_REMOVE);
        g_assert_cmpint(con_obsolete_decide(H1, NULL, true), ==, CON_OBSOLETE_REMOVE);
        g_assert_cmpint(con_obsolete_decide(H1, H2, false), ==, CON_OBSOLETE_KEEP);
        g_assert_cmpint(con_obsolete_decide(H1, NULL, false), ==, CON_OBSOLETE_KEEP);
}

static ConFileHashes shipped;
static const char *configs_dir;
static unsigned profile_files, missing;

static int check_profile_file(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        _cleanup_free_ char *text = NULL;
        char hash[CON_SHA256_HEX_SIZE];
        size_t len;

        (void) st;
        (void) ftw;
        if (type != FTW_F)
                return 0;
        g_assert_cmpint(read_file_nofollow(path, 16U << 20, &text, &len), ==, 0);
        g_assert_cmpint(con_sha256_hex(text, len, hash), ==, 0);
        profile_files++;
        if (!con_file_hashes_contains(&shipped, path + strlen(configs_dir) + 1, hash)) {
                g_printerr("%s: its current version (%s) is not in configs/" CON_PROFILE_HISTORY_NAME
                           ": run scripts/profile-history.sh and commit the result\n", path, hash);
                missing++;
        }
        return 0;
}

static void test_shipped_history(void) {
        g_autofree char *path = NULL, *configs = NULL, *def = NULL, *min = NULL;
        _cleanup_free_ char *text = NULL;
        size_t len, line = 0;

        configs = g_build_filename(test_source_dir(), "configs", NULL);
        path = g_build_filename(configs, CON_PROFILE_HISTORY_NAME, NULL);
        g_assert_cmpint(read_file_nofollow(path, 16U << 20, &text, &len), ==, 0);
        g_assert_cmpint(con_file_hashes_parse(text, len, &shipped, &line), ==, 0);
        for (size_t i = 0; i < shipped.n; i++)
                g_assert_true(g_str_has_prefix(shipped.e[i].path, "default/") ||
                              g_str_has_prefix(shipped.e[i].path, "minimal/"));

        /* The upgrade that used to be refused: /etc/con as the default profile installed it at
         * 55f2e39. */
        g_assert_true(con_file_hashes_contains(&shipped, "default/agents/sysadmin/AGENTS.md", SYSADMIN_AGENTS_55F2E39));
        g_assert_true(con_file_hashes_contains(&shipped, "default/roles/sysadmin/skills/commission-agent.md",
                                               COMMISSION_AGENT_55F2E39));

        /* Every profile file's current version is listed: a change without a regenerated history
         * would leave the machines that installed this version stuck on the next upgrade. */
        configs_dir = configs;
        def = g_build_filename(configs, "default", NULL);
        min = g_build_filename(configs, "minimal", NULL);
        g_assert_cmpint(nftw(def, check_profile_file, 16, FTW_PHYS), ==, 0);
        g_assert_cmpint(nftw(min, check_profile_file, 16, FTW_PHYS), ==, 0);
        g_assert_cmpuint(profile_files, >=, 20);
        g_assert_cmpuint(missing, ==, 0);
        con_file_hashes_done(&shipped);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/conffile/parse", test_parse);
        g_test_add_func("/conffile/set-format", test_set_format);
        g_test_add_func("/conffile/decide", test_decide);
        g_test_add_func("/conffile/shipped-history", test_shipped_history);
        return con_test_run();
}
