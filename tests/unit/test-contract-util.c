/* SPDX-License-Identifier: MIT */
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "contract-util.h"
#include "macro.h"
#include "strv.h"
#include "task.h"
#include "test-util.h"

static Contract *parse_ok(const char *text) {
        Contract *c = NULL;
        ConErrorDetail e = {};
        int r = contract_parse(text, strlen(text), "t.yaml", &c, &e);
        if (r < 0)
                g_error("parse failed: %s:%u: %s", strempty(e.file), e.line, strempty(e.message));
        con_error_detail_done(&e);
        return c;
}

static char *parse_err(const char *text, unsigned *ret_line) {
        Contract *c = NULL;
        ConErrorDetail e = {};
        g_assert_cmpint(contract_parse(text, strlen(text), "t.yaml", &c, &e), ==, -EINVAL);
        g_assert_null(c);
        g_assert_nonnull(e.message);
        char *s = con_error_detail_format(&e);
        if (ret_line)
                *ret_line = e.line;
        con_error_detail_done(&e);
        return s;
}

static void test_original_schema(void) {
        _cleanup_(contract_freep) Contract *c = parse_ok(
                "id: CON-SYS-005\n"
                "description: x\n"
                "type: detective\n"
                "frequency: 60s\n"
                "scope: system\n"
                "checks:\n"
                "  - name: audit_log_writable\n"
                "    command:\n"
                "      run: \"echo ok\"\n"
                "      test: '[ \"$RESULT\" = \"ok\" ]'\n"
                "    on_fail:\n"
                "      action: halt_agents\n"
                "      escalate: sysadmin\n"
                "      message: \"halted\"\n"
                "  - name: perms\n"
                "    script:\n"
                "      path: scripts/x.sh\n"
                "      timeout: 3s\n");
        g_assert_cmpstr(c->id, ==, "CON-SYS-005");
        g_assert_cmpint(c->frequency_usec, ==, 60 * USEC_PER_SEC);
        g_assert_null(c->scope_agent);
        g_assert_cmpuint(c->n_checks, ==, 2);
        g_assert_cmpint(c->checks[0].kind, ==, CHECK_COMMAND);
        g_assert_cmpint(c->checks[0].action, ==, CONTRACT_ACTION_HALT_AGENTS);
        g_assert_cmpstr(c->checks[0].escalate, ==, "sysadmin");
        g_assert_cmpstr(c->checks[0].message, ==, "halted");
        g_assert_cmpint(c->checks[1].kind, ==, CHECK_SCRIPT);
        g_assert_cmpint(c->checks[1].timeout_usec, ==, 3 * USEC_PER_SEC);
        g_assert_cmpint(c->checks[1].action, ==, CONTRACT_ACTION_NONE);
        g_assert_cmpstr(contract_action_severity(c->checks[0].action), ==, "critical");
}

static void test_original_test_suite_variants(void) {
        /* e2e 10/27 of the original: scalar on_fail and test: exit_code_zero. */
        _cleanup_(contract_freep) Contract *c = parse_ok(
                "id: CON-SYS-005\ntype: detective\nchecks:\n"
                "  - name: audit_log_writable\n"
                "    command:\n"
                "      run: \"test -w /srv/con/logs/audit/NONEXISTENT_DIR_FOR_TEST\"\n"
                "      test: exit_code_zero\n"
                "    on_fail: escalate\n");
        g_assert_null(c->checks[0].test);
        g_assert_cmpint(c->checks[0].action, ==, CONTRACT_ACTION_ALERT);
        _cleanup_strv_free_ char **argv = NULL;
        g_assert_cmpint(contract_shell_argv(&c->checks[0], "/srv/con/contracts", &argv), ==, 0);
        g_assert_cmpstr(argv[0], ==, "/bin/sh");
        g_assert_cmpstr(argv[2], ==, "test -w /srv/con/logs/audit/NONEXISTENT_DIR_FOR_TEST");
}

static void test_native_kinds(void) {
        _cleanup_(contract_freep) Contract *c = parse_ok(
                "id: T-1\ntype: detective\nfrequency: 5m\nscope: agent:code-reviewer\nchecks:\n"
                "  - name: disk\n    disk_free: {path: /srv/con, min_pct: 20}\n"
                "  - name: mem\n    memory_available: {}\n"
                "  - name: load\n    load_per_core:\n      max: 1.5\n"
                "  - name: sess\n    session_duration: {max: 2s}\n    on_fail: {action: kill_session}\n"
                "  - name: p\n    path: {path: /etc/con/env, owner: root, group: root, mode: \"0600\", acl: none, missing_ok: true}\n"
                "  - name: drift\n    drift: {paths: [/srv/con/agents]}\n"
                "  - name: md\n    agents_md:\n    on_fail: quarantine\n");
        g_assert_cmpstr(c->scope_agent, ==, "code-reviewer");
        g_assert_cmpint(c->frequency_usec, ==, 300 * USEC_PER_SEC);
        g_assert_cmpint(c->checks[0].kind, ==, CHECK_DISK_FREE);
        g_assert_cmpfloat(c->checks[0].threshold, ==, 20);
        g_assert_cmpfloat(c->checks[1].threshold, <, 0);
        g_assert_cmpfloat(c->checks[2].threshold, ==, 1.5);
        g_assert_cmpint(c->checks[3].max_usec, ==, 2 * USEC_PER_SEC);
        g_assert_cmpint(c->checks[3].action, ==, CONTRACT_ACTION_KILL_SESSION);
        g_assert_cmpint(c->checks[4].mode, ==, 0600);
        g_assert_cmpint(c->checks[4].acl, ==, 0);
        g_assert_true(c->checks[4].missing_ok);
        g_assert_cmpstr(c->checks[5].paths[0], ==, "/srv/con/agents");
        g_assert_cmpint(c->checks[6].kind, ==, CHECK_AGENTS_MD);
        g_assert_cmpint(c->checks[6].action, ==, CONTRACT_ACTION_QUARANTINE);
}

static void test_preventive(void) {
        _cleanup_(contract_freep) Contract *c = parse_ok(
                "id: CON-PREV-1\ntype: preventive\nmechanism: acl\nagent: concierge\nenforcement: |\n  setfacl ...\n");
        g_assert_cmpint(c->type, ==, CONTRACT_PREVENTIVE);
        g_assert_cmpuint(c->n_checks, ==, 0);
}

static void test_errors(void) {
        /* The exact line a user sees: FILE:LINE:COLUMN: key.path: what is wrong (what to do). */
        static const struct {
                const char *text;
                const char *expected;
        } cases[] = {
                { "id: X\ntype: detective\nchecks:\n  - name: a\n    command: {run: x}\n    on_fail: {action: explode}\n",
                  "t.yaml:6:23: checks[0].on_fail.action: 'explode' is not allowed; use alert, kill_session, "
                  "quarantine, halt_agents or halt_workers (or escalate, the same as alert)" },
                { "id: X\ntype: sometimes\n", "t.yaml:2:7: type: 'sometimes' is not allowed; use detective or preventive" },
                { "type: detective\nchecks: []\n", "t.yaml:1:1: id: missing; this key is required (e.g. id: CON-SYS-001)" },
                { "id: X\ntype: detective\n", "t.yaml:1:1: checks: a detective contract needs a list of at least one check" },
                { "id: X\ntype: detective\nchecks:\n  - name: a\n",
                  "t.yaml:4:5: checks[0]: needs exactly one check, found 0 (give one of command, script, disk_free, "
                  "memory_available, load_per_core, session_duration, path, agents_md, agent_dirs, audit_chain, "
                  "audit_writable, env_file, drift, skills, policy_sync or network_drift)" },
                { "id: X\ntype: detective\nchecks:\n  - name: a\n    disk_free: {}\n    memory_available: {}\n",
                  "t.yaml:4:5: checks[0]: needs exactly one check, found 2 (give one of command, script, disk_free, "
                  "memory_available, load_per_core, session_duration, path, agents_md, agent_dirs, audit_chain, "
                  "audit_writable, env_file, drift, skills, policy_sync or network_drift)" },
                { "id: X\ntype: detective\nchecks:\n  - name: a\n    bogus: 1\n",
                  "t.yaml:5:5: checks[0].bogus: unknown key; allowed keys are name, on_fail, command, script, "
                  "disk_free, memory_available, load_per_core, session_duration, path, agents_md, agent_dirs, "
                  "audit_chain, audit_writable, env_file, drift, skills, policy_sync and network_drift" },
                { "id: X\ntype: detective\nchecks:\n  - name: a\n    disk_free: {min_pct: 150}\n",
                  "t.yaml:5:26: checks[0].disk_free.min_pct: '150' is not allowed; use a number from 0 to 100" },
                { "id: X\ntype: detective\nfrequency: soon\nchecks:\n  - name: a\n    disk_free:\n",
                  "t.yaml:3:12: frequency: 'soon' is not a valid duration; use seconds (90) or a number with a unit: "
                  "250ms, 90s, 5m, 1h, 2d, 1h30m" },
                { "id: X\ntype: detective\nfrequency: 500ms\nchecks:\n  - name: a\n    disk_free:\n",
                  "t.yaml:3:12: frequency: is shorter than 1s; contracts run at most once a second" },
                { "id: X\ntype: detective\nscope: agent:Bad_Name\nchecks:\n  - name: a\n    disk_free:\n",
                  "t.yaml:3:8: scope: 'agent:Bad_Name' names no valid agent: the name must start with a lower-case "
                  "letter a-z" },
                { "id: X\ntype: detective\nscope: everywhere\nchecks:\n  - name: a\n    disk_free:\n",
                  "t.yaml:3:8: scope: 'everywhere' is not allowed; use system or agent:NAME" },
                { "id: X\ntype: detective\nscope: system\nchecks:\n  - name: a\n    disk_free:\n    on_fail: quarantine\n",
                  "t.yaml:7:14: checks[0].on_fail: quarantine needs a contract with scope: agent:NAME (set scope, or "
                  "use another action)" },
                { "id: X\ntype: detective\nchecks:\n  - name: a\n    disk_free:\n  - name: a\n    disk_free:\n",
                  "t.yaml:6:5: checks[1].name: 'a' is already the name of checks[0] (line 4); check names must be "
                  "unique in a contract" },
                { "id: X\ntype: detective\nchecks:\n  - name: a\n    path: {mode: \"0644\"}\n",
                  "t.yaml:5:11: checks[0].path.path: missing; this key is required (the absolute path to check)" },
                { "id: X\ntype: detective\nchecks:\n  - name: a\n    path: {path: /x, mode: \"644x\"}\n",
                  "t.yaml:5:28: checks[0].path.mode: '644x' is not an octal mode; write it like \"0644\" (quoted)" },
                { "id: X\ntype: detective\nchecks:\n  - name: a\n    path: {path: x}\n",
                  "t.yaml:5:18: checks[0].path.path: 'x' is not an absolute path; start it with /" },
                { "id: X\ntype: detective\nchecks:\n  - name: a\n    path: {path: /x, missing_ok: yes}\n",
                  "t.yaml:5:34: checks[0].path.missing_ok: 'yes' is not a boolean here (write true: booleans are "
                  "exactly true or false, lower-case)" },
                { "id: X\ntype: detective\nchecks:\n  - name: a\n    drift: {paths: [/a, b]}\n",
                  "t.yaml:5:25: checks[0].drift.paths[1]: 'b' is not an absolute path; start it with /" },
                { "id: X\ntype: detective\nchecks:\n  - name: a\n    command:\n",
                  "t.yaml:5:13: checks[0].command: expected a mapping of run, test and timeout" },
                { "id: [\n", "t.yaml:2:1: did not find expected node content (while parsing a flow node that starts "
                  "at line 2, column 1)" },
                { "", "t.yaml: the file holds no contract (write id:, type: and checks:)" },
                { "id: X\nid: Y\n", "t.yaml:2:1: id: duplicate key; it was already given at line 1" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *s = parse_err(cases[i].text, NULL);
                g_assert_cmpstr(s, ==, cases[i].expected);
        }
}

static void test_violation_state(void) {
        Violation v = {};
        g_assert_cmpint(violation_update(&v, true, 1), ==, VIOLATION_NONE);
        g_assert_cmpint(violation_update(&v, false, 5), ==, VIOLATION_DETECTED);
        g_assert_cmpint(v.since_usec, ==, 5);
        g_assert_true(violation_take_escalation(&v));
        g_assert_false(violation_take_escalation(&v));
        g_assert_cmpint(violation_update(&v, false, 6), ==, VIOLATION_NONE);
        g_assert_cmpint(violation_update(&v, false, 7), ==, VIOLATION_NONE);
        g_assert_false(violation_take_escalation(&v));
        g_assert_cmpint(violation_update(&v, true, 8), ==, VIOLATION_CLEARED);
        g_assert_false(violation_take_escalation(&v));
        g_assert_cmpint(violation_update(&v, false, 9), ==, VIOLATION_DETECTED);
        g_assert_true(violation_take_escalation(&v));
}

static void test_escalation_id(void) {
        _cleanup_free_ char *id = NULL;
        g_assert_cmpint(contract_escalation_id("CON-SYS-001", "disk free/x", 12 * USEC_PER_SEC, &id), ==, 0);
        g_assert_cmpstr(id, ==, "contract-CON-SYS-001-disk-free-x-12");
        /* Taken by another sender: a random suffix, and still a valid id when the tid is long. */
        _cleanup_free_ char *retry = NULL, *longest = NULL, *lr = NULL;
        g_assert_cmpint(contract_escalation_retry_id(id, 0x1234, &retry), ==, 0);
        g_assert_cmpstr(retry, ==, "contract-CON-SYS-001-disk-free-x-12-0000000000001234");
        g_assert_true(con_task_id_valid(retry));
        g_autofree char *check = g_strnfill(200, 'c');
        g_assert_cmpint(contract_escalation_id("CON-X", check, 0, &longest), ==, 0);
        g_assert_cmpuint(strlen(longest), ==, 128);
        g_assert_cmpint(contract_escalation_retry_id(longest, UINT64_MAX, &lr), ==, 0);
        g_assert_cmpuint(strlen(lr), ==, 128);
        g_assert_true(g_str_has_suffix(lr, "-ffffffffffffffff"));
        g_assert_true(con_task_id_valid(lr));
}

static void test_quarantine_files(void) {
        _cleanup_free_ char *policy = NULL, *rules = NULL, *none = NULL;
        char *agents[] = { (char *) "code-reviewer", (char *) "x", NULL };
        g_assert_cmpint(contract_quarantine_bus_policy(agents, &policy), ==, 0);
        g_assert_nonnull(strstr(policy, "<policy user=\"root\">")); /* the agent services' identity */
        g_assert_nonnull(strstr(policy, "<deny own=\"org.conspiracy.CodeReviewer\"/>"));
        g_assert_cmpint(contract_quarantine_polkit_rules(agents, &rules), ==, 0);
        g_assert_nonnull(strstr(rules, "[\"a-code-reviewer\", \"a-x\"]"));
        g_assert_nonnull(strstr(rules, "polkit.Result.NO"));
        g_assert_cmpint(contract_quarantine_bus_policy(NULL, &none), ==, 0);
        g_assert_null(none);
        char *bad[] = { (char *) "Evil\"", NULL };
        g_assert_cmpint(contract_quarantine_polkit_rules(bad, &none), ==, -EINVAL);
}

static int native(const char *text, char **ret_msg) {
        _cleanup_(contract_freep) Contract *c = parse_ok(text);
        CheckContext ctx = {};
        return contract_check_native(c, &c->checks[0], &ctx, ret_msg);
}

/* A native check in its worker: the same result and message as in-process, through the pipe. */
static int native_in_worker(const char *text, char **ret_msg) {
        _cleanup_(contract_freep) Contract *c = parse_ok(text);
        CheckContext ctx = {};
        char buf[CONTRACT_OUTPUT_MAX + 1];
        size_t len = 0;
        pid_t pid;
        int fd, st, r;
        g_assert_cmpint(contract_native_spawn(c, &c->checks[0], &ctx, &pid, &fd), ==, 0);
        for (;;) {
                ssize_t n = read(fd, buf + len, sizeof buf - len);
                if (n < 0 && errno == EAGAIN) {
                        g_usleep(1000);
                        continue;
                }
                g_assert_cmpint(n, >=, 0);
                if (n == 0)
                        break;
                len += (size_t) n;
                g_assert_cmpuint(len, <, sizeof buf);
        }
        close(fd);
        g_assert_cmpint(waitpid(pid, &st, 0), ==, pid);
        g_assert_true(WIFEXITED(st));
        g_assert_cmpint(WEXITSTATUS(st), ==, 0);
        g_assert_cmpint(contract_native_parse(buf, len, &r, ret_msg), ==, 0);
        return r;
}

static void test_native_worker(void) {
        static const char * const checks[] = {
                "id: T\ntype: detective\nchecks:\n  - name: a\n    path: {path: /}\n",
                "id: T\ntype: detective\nchecks:\n  - name: a\n    path: {path: /nonexistent/\xc3\xa9t\xc3\xa9}\n",
                "id: T\ntype: detective\nchecks:\n  - name: a\n    disk_free: {path: /nonexistent, min_pct: 1}\n",
        };
        for (size_t i = 0; i < ELEMENTSOF(checks); i++) {
                _cleanup_free_ char *inproc = NULL, *worker = NULL;
                int a = native(checks[i], &inproc), b = native_in_worker(checks[i], &worker);
                g_assert_cmpint(a, ==, b);
                g_assert_cmpstr(inproc, ==, worker);
        }

        _cleanup_free_ char *m = NULL;
        int r = 7;
        g_assert_cmpint(contract_native_parse("1\nfine", 6, &r, &m), ==, 0);
        g_assert_cmpint(r, ==, 1);
        g_assert_cmpstr(m, ==, "fine");
        free(m);
        m = NULL;
        g_assert_cmpint(contract_native_parse("-2\n", 3, &r, &m), ==, 0);
        g_assert_cmpint(r, ==, -ENOENT);
        g_assert_cmpstr(m, ==, strerror(ENOENT));
        free(m);
        m = NULL;
        static const char * const bad[] = { "", "1", "\nx", "2\nx", "x\ny", "1 \nx", "-99999\nx", "1\n\xc3", "1\n\xff" };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                g_assert_cmpint(contract_native_parse(bad[i], strlen(bad[i]), &r, &m), ==, -EBADMSG);
        g_assert_cmpint(contract_native_parse("1\na\0b", 5, &r, &m), ==, -EBADMSG);
        g_assert_null(m);
}

static void test_native_checks(void) {
        _cleanup_free_ char *dir = test_tmpdir_new(), *f = NULL, *y = NULL, *m1 = NULL, *m2 = NULL, *m3 = NULL, *m4 = NULL,
                            *m5 = NULL, *m6 = NULL, *m7 = NULL;
        g_assert_cmpint(native("id: T\ntype: detective\nchecks:\n  - name: a\n    disk_free: {path: /, min_pct: 0}\n", &m1), ==, 1);
        g_assert_nonnull(strstr(m1, "free on /"));
        g_assert_cmpint(native("id: T\ntype: detective\nchecks:\n  - name: a\n    memory_available: {min_pct: 100.0}\n", &m2), ==, 0);
        g_assert_cmpint(native("id: T\ntype: detective\nchecks:\n  - name: a\n    load_per_core: {max: 1000000}\n", &m3), ==, 1);

        f = g_build_filename(dir, "env", NULL);
        y = g_strdup_printf("id: T\ntype: detective\nchecks:\n  - name: a\n    env_file: {path: %s}\n", f);
        g_assert_cmpint(native(y, &m4), ==, 1);         /* absent is fine */
        g_assert_true(g_file_set_contents(f, "K=V\n", -1, NULL));
        g_assert_cmpint(chmod(f, 0644), ==, 0);
        g_assert_cmpint(native(y, &m5), ==, 0);
        g_assert_nonnull(strstr(m5, "has mode 0644, not 0640"));
        g_assert_nonnull(strstr(m5, "not group con-models"));
        if (geteuid() == 0) {
                /* What con bootstrap sets: root:con-models 0640 (the model gateway reads it). */
                struct group *gr = getgrnam("con-models");
                g_assert_cmpint(chmod(f, 0640), ==, 0);
                if (gr) {
                        g_assert_cmpint(chown(f, 0, gr->gr_gid), ==, 0);
                        g_assert_cmpint(native(y, &m6), ==, 1);
                } else {
                        g_assert_cmpint(native(y, &m6), ==, 0);
                        g_assert_nonnull(strstr(m6, "not group con-models"));
                }
        }
        g_free(y);
        y = g_strdup_printf("id: T\ntype: detective\nchecks:\n  - name: a\n    session_duration: {max: 1000d}\n");
        g_assert_cmpint(native(y, &m7), ==, 1);
        test_tmpdir_remove(dir);
}

static void test_dir_list(void) {
        _cleanup_free_ char *dir = test_tmpdir_new();
        _cleanup_strv_free_ char **l = NULL;
        char *p;
        const char *names[] = { "b.yaml", "a.yaml", "c.yml", ".hidden.yaml" };
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                p = g_build_filename(dir, names[i], NULL);
                g_assert_true(g_file_set_contents(p, "x", -1, NULL));
                g_free(p);
        }
        p = g_build_filename(dir, "d.yaml", NULL);
        g_assert_cmpint(mkdir(p, 0755), ==, 0);
        g_free(p);
        g_assert_cmpint(contract_dir_list(dir, &l), ==, 0);
        g_assert_cmpuint(strv_length(l), ==, 2);
        g_assert_true(g_str_has_suffix(l[0], "/a.yaml"));
        g_assert_true(g_str_has_suffix(l[1], "/b.yaml"));
        test_tmpdir_remove(dir);
}

static void fp_set(const char *dir, const char *name, const char *content) {
        _cleanup_free_ char *p = g_build_filename(dir, name, NULL);
        test_write_file(p, content);
}

static void test_dir_fingerprint(void) {
        _cleanup_free_ char *dir = test_tmpdir_new();
        _cleanup_free_ char *cfg = g_build_filename(dir, "con.yaml", NULL), *cdir = g_build_filename(dir, "c", NULL);
        uint8_t a[CONTRACT_FINGERPRINT_SIZE], b[CONTRACT_FINGERPRINT_SIZE], c[CONTRACT_FINGERPRINT_SIZE];

        g_assert_cmpint(mkdir(cdir, 0755), ==, 0);
        test_write_file(cfg, "system: {}\n");
        fp_set(cdir, "a.yaml", "id: A\n");
        g_assert_cmpint(contract_dir_fingerprint(cdir, cfg, a), ==, 0);
        g_assert_cmpint(contract_dir_fingerprint(cdir, cfg, b), ==, 0);
        g_assert_cmpmem(a, sizeof a, b, sizeof b);                     /* stable */

        /* Same size, same inode, written at once: the content decides, not the time stamps. */
        fp_set(cdir, "a.yaml", "id: B\n");
        g_assert_cmpint(contract_dir_fingerprint(cdir, cfg, b), ==, 0);
        g_assert_true(memcmp(a, b, sizeof a) != 0);
        fp_set(cdir, "a.yaml", "id: A\n");
        g_assert_cmpint(contract_dir_fingerprint(cdir, cfg, c), ==, 0);
        g_assert_cmpmem(a, sizeof a, c, sizeof c);                     /* back to the first */

        fp_set(cdir, "b.yaml", "");                                     /* a new, empty file */
        g_assert_cmpint(contract_dir_fingerprint(cdir, cfg, b), ==, 0);
        g_assert_true(memcmp(a, b, sizeof a) != 0);
        fp_set(cdir, ".b.yaml.tmp", "ignored");                         /* not a contract file */
        g_assert_cmpint(contract_dir_fingerprint(cdir, cfg, c), ==, 0);
        g_assert_cmpmem(b, sizeof b, c, sizeof c);

        test_write_file(cfg, "system: {name: x}\n");                   /* con.yaml counts too */
        g_assert_cmpint(contract_dir_fingerprint(cdir, cfg, c), ==, 0);
        g_assert_true(memcmp(b, c, sizeof b) != 0);
        g_assert_cmpint(contract_dir_fingerprint(cdir, NULL, a), ==, 0);
        g_assert_true(memcmp(a, c, sizeof a) != 0);

        /* A missing folder is a state of its own, not an error. */
        _cleanup_free_ char *missing = g_build_filename(dir, "missing", NULL);
        g_assert_cmpint(contract_dir_fingerprint(missing, cfg, a), ==, 0);
        g_assert_true(memcmp(a, c, sizeof a) != 0);
        test_tmpdir_remove(dir);
}

static void test_shipped_contracts(void) {
        _cleanup_free_ char *dir = g_build_filename(test_source_dir(), "configs", "default", "contracts", NULL);
        _cleanup_strv_free_ char **l = NULL;
        g_assert_cmpint(contract_dir_list(dir, &l), ==, 0);
        g_assert_cmpuint(strv_length(l), >=, 8);
        STRV_FOREACH(f, l) {
                _cleanup_(contract_freep) Contract *c = NULL;
                _cleanup_(con_error_detail_done) ConErrorDetail e = {};
                if (contract_load_file(*f, &c, &e) < 0)
                        g_error("%s: line %u: %s", *f, e.line, e.message);
                for (size_t i = 0; i < c->n_checks; i++)
                        g_assert_false(check_kind_is_shell(c->checks[i].kind));      /* all native */
        }
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/contract/original-schema", test_original_schema);
        g_test_add_func("/contract/original-test-suite-variants", test_original_test_suite_variants);
        g_test_add_func("/contract/native-kinds", test_native_kinds);
        g_test_add_func("/contract/preventive", test_preventive);
        g_test_add_func("/contract/errors", test_errors);
        g_test_add_func("/contract/violation-state", test_violation_state);
        g_test_add_func("/contract/escalation-id", test_escalation_id);
        g_test_add_func("/contract/quarantine-files", test_quarantine_files);
        g_test_add_func("/contract/native-checks", test_native_checks);
        g_test_add_func("/contract/native-worker", test_native_worker);
        g_test_add_func("/contract/dir-list", test_dir_list);
        g_test_add_func("/contract/dir-fingerprint", test_dir_fingerprint);
        g_test_add_func("/contract/shipped", test_shipped_contracts);
        return con_test_run();
}
