/* SPDX-License-Identifier: MIT */
/* The pure parts of the picoclaw runtime: tool argument checks, the loop guard,
 * prompt assembly, the neutral JSON of Models1.Complete, and the local tools (exec, files). */
#include <sys/stat.h>
#include <unistd.h>

#include "agent-history.h"
#include "agent-llm.h"
#include "agent-tools.h"
#include "macro.h"
#include "strv.h"
#include "task.h"
#include "test-util.h"

static char *parse_err(const char *tool, const char *json, int want) {
        AgentToolArgs a = {};
        char *err = NULL;
        int r = agent_tool_args_parse(tool, json, &a, &err);
        g_assert_cmpint(r, ==, want);
        agent_tool_args_done(&a);
        if (want < 0)
                g_assert_nonnull(err);
        return err;
}

static void assert_err(const char *tool, const char *json, const char *substr) {
        _cleanup_free_ char *err = parse_err(tool, json, -EINVAL);
        if (!strstr(err, substr))
                g_error("%s %s: error \"%s\" does not contain \"%s\"", tool, json, err, substr);
}

static void test_args_valid(void) {
        AgentToolArgs a = {};
        char *err = NULL;

        g_assert_cmpint(agent_tool_args_parse("exec", "{\"command\":\"ls -l\"}", &a, &err), ==, 0);
        g_assert_cmpstr(a.command, ==, "ls -l");
        g_assert_cmpuint(a.timeout_sec, ==, 60);
        agent_tool_args_done(&a);

        g_assert_cmpint(agent_tool_args_parse("exec", "{\"argv\":[\"/bin/echo\",\"x\"],\"timeout\":5}", &a, &err), ==, 0);
        g_assert_cmpstr(a.argv[1], ==, "x");
        g_assert_cmpuint(a.timeout_sec, ==, 5);
        agent_tool_args_done(&a);

        g_assert_cmpint(agent_tool_args_parse("send_task", "{\"agent\":\"sysadmin\",\"text\":\"hi\"}", &a, &err), ==, 0);
        g_assert_true(a.wait);
        agent_tool_args_done(&a);
        g_assert_cmpint(agent_tool_args_parse("send_task", "{\"agent\":\"sysadmin\",\"text\":\"hi\",\"wait\":false}", &a,
                                              &err), ==, 0);
        g_assert_false(a.wait);
        agent_tool_args_done(&a);
        /* an agent of another host: AGENT@HOST, through the mesh gateway */
        g_assert_cmpint(agent_tool_args_parse("send_task", "{\"agent\":\"sysadmin@host-b\",\"text\":\"hi\"}", &a, &err),
                        ==, 0);
        g_assert_cmpstr(a.agent, ==, "sysadmin@host-b");
        agent_tool_args_done(&a);

        g_assert_cmpint(agent_tool_args_parse("commission_agent", "{\"name\":\"researcher\",\"tier\":\"worker\","
                                              "\"instructions\":\"x\",\"may_task\":[\"concierge\"],\"network\":[\"none\"]}",
                                              &a, &err), ==, 0);
        g_assert_cmpstr(a.agent, ==, "researcher");
        g_assert_cmpstr(a.tier, ==, "worker");
        g_assert_cmpstr(a.may_task[0], ==, "concierge");
        g_assert_cmpstr(a.network[0], ==, "none");
        agent_tool_args_done(&a);
        g_assert_cmpint(agent_tool_args_parse("commission_agent", "{\"name\":\"../etc\"}", &a, &err), ==, -EINVAL);
        g_assert_nonnull(strstr(err, "is not a valid agent name"));
        g_assert_cmpint(agent_tool_args_parse("commission_agent", "{\"tier\":\"worker\"}", &a, &err), ==, -EINVAL);
        free(err);
        err = NULL;

        g_assert_cmpint(agent_tool_args_parse("list_agents", "", &a, &err), ==, 0);
        agent_tool_args_done(&a);
        g_assert_cmpint(agent_tool_args_parse("list_dir", NULL, &a, &err), ==, 0);
        g_assert_null(a.path);
        agent_tool_args_done(&a);
        g_assert_cmpint(agent_tool_args_parse("edit_file", "{\"path\":\"a\",\"old_text\":\"x\",\"new_text\":\"\"}", &a,
                                              &err), ==, 0);
        agent_tool_args_done(&a);
        g_assert_null(err);
}

static void test_args_invalid(void) {
        _cleanup_free_ char *e = parse_err("rm", "{}", -ENOENT);
        g_assert_nonnull(strstr(e, "unknown tool \"rm\""));

        assert_err("exec", "{}", "exactly one of \"command\"");
        assert_err("exec", "{\"command\":\"ls\",\"argv\":[\"ls\"]}", "exactly one of");
        assert_err("exec", "{\"command\":\"\"}", "\"command\" must not be empty");
        assert_err("exec", "{\"command\":1}", "\"command\" must be a string, got a number");
        assert_err("exec", "{\"argv\":[]}", "\"argv\" must not be empty");
        assert_err("exec", "{\"argv\":[\"ls\",3]}", "\"argv\"[1] must be a string");
        assert_err("exec", "{\"command\":\"ls\",\"timeout\":0}", "integer from 1 to 600");
        assert_err("exec", "{\"command\":\"ls\",\"timeout\":1.5}", "integer from 1 to 600");
        assert_err("exec", "{\"command\":\"ls\",\"timeout\":\"5\"}", "got a string");
        assert_err("exec", "{\"command\":\"ls\",\"cwd\":\"/\"}", "unknown argument \"cwd\" (allowed: command, argv");
        assert_err("exec", "{\"command\":\"ls\",\"command\":\"id\"}", "given twice");
        assert_err("exec", "[1]", "must be a JSON object, got an array");
        /* what the gateway makes of arguments that were no JSON object (bus/fabric/llm.h) */
        assert_err("exec", "{\"" CON_LLM_MALFORMED_ARGUMENTS "\":\"{\\\"command\\\": ls\"}",
                   "exec: the arguments are not a JSON object (invalid JSON): {\"command\": ls -- call exec again");
        assert_err("read_file", "{\"" CON_LLM_MALFORMED_ARGUMENTS "\":\"[1]\"}", "not a JSON object (an array)");
        assert_err("exec", "{\"command\":", "not valid JSON");
        assert_err("read_file", "{}", "missing required argument \"path\"");
        assert_err("read_file", "{\"path\":\"\"}", "\"path\" must not be empty");
        assert_err("write_file", "{\"path\":\"x\"}", "missing required argument \"content\"");
        assert_err("send_task", "{\"agent\":\"../etc\",\"text\":\"x\"}", "is not an agent name");
        assert_err("send_task", "{\"agent\":\"sysadmin\",\"text\":\"  \"}", "\"text\" must not be empty");
        assert_err("send_task", "{\"agent\":\"sysadmin@Host-B\",\"text\":\"x\"}", "is not AGENT@HOST");
        assert_err("send_task", "{\"agent\":\"@host-b\",\"text\":\"x\"}", "is not AGENT@HOST");
        assert_err("send_task", "{\"agent\":\"root@host-b\",\"text\":\"x\"}", "is not AGENT@HOST");
        assert_err("send_task", "{\"agent\":\"sysadmin@host.b\",\"text\":\"x\"}", "is not AGENT@HOST");
        assert_err("send_task", "{\"agent\":\"sysadmin\",\"text\":\"x\",\"wait\":\"yes\"}", "true or false");
        assert_err("list_agents", "{\"x\":1}", "allowed: none");
}

static void test_loop_guard(void) {
        _cleanup_(agent_loop_guard_done) AgentLoopGuard g = {};
        g_assert_cmpint(agent_loop_guard_push(&g, "exec", "{\"command\":\"ls\",\"timeout\":5}", 3), ==, 0);
        g_assert_cmpint(agent_loop_guard_push(&g, "exec", "{ \"timeout\": 5, \"command\": \"ls\" }", 3), ==, 0);
        g_assert_cmpint(agent_loop_guard_push(&g, "exec", "{\"command\":\"ls\",\"timeout\":5}", 3), ==, 1);
        /* another call resets the run */
        g_assert_cmpint(agent_loop_guard_push(&g, "exec", "{\"command\":\"id\"}", 3), ==, 0);
        g_assert_cmpint(agent_loop_guard_push(&g, "read_file", "{\"command\":\"id\"}", 3), ==, 0);
        g_assert_cmpint(agent_loop_guard_push(&g, "exec", "{\"command\":\"ls\",\"timeout\":5}", 3), ==, 0);
        g_assert_cmpint(agent_loop_guard_push(&g, "exec", "{\"command\":\"ls\",\"timeout\":5}", 3), ==, 0);
        g_assert_cmpint(agent_loop_guard_push(&g, "exec", "{\"command\":\"ls\",\"timeout\":5}", 3), ==, 1);
}

static void test_prompt(void) {
        _cleanup_free_ char *dir = test_tmpdir_new();
        _cleanup_free_ char *b = g_strdup_printf("%s/b-skill.md", dir), *a = g_strdup_printf("%s/a-skill.md", dir),
                            *t = g_strdup_printf("%s/notes.txt", dir);
        _cleanup_strv_free_ char **names = NULL, **texts = NULL;
        _cleanup_free_ char *sys = NULL, *ver = NULL, *unver = NULL;

        test_write_file(b, "Second skill.\n");
        test_write_file(a, "First skill.\n");
        test_write_file(t, "not a skill");
        g_assert_cmpint(chmod(dir, 0755), ==, 0);
        g_assert_cmpint(agent_llm_load_skills(dir, geteuid(), &names, &texts, NULL), ==, 0);
        g_assert_cmpuint(strv_length(names), ==, 2);
        g_assert_cmpstr(names[0], ==, "a-skill");
        g_assert_cmpstr(names[1], ==, "b-skill");

        g_assert_cmpint(agent_llm_system_prompt("concierge", "/srv/con/agents/concierge/workspace", "# Concierge\nRoute.\n",
                                                names, texts, &sys), ==, 0);
        g_assert_nonnull(strstr(sys, "# Concierge\nRoute."));
        const char *sa = strstr(sys, "## Skill: a-skill\n\nFirst skill."), *sb = strstr(sys, "## Skill: b-skill");
        g_assert_nonnull(sa);
        g_assert_nonnull(sb);
        g_assert_true(sa < sb);
        g_assert_true(strstr(sys, "# Concierge") < sa);

        g_assert_cmpint(agent_llm_task_message("do it", "root", true, &ver), ==, 0);
        g_assert_nonnull(strstr(ver, "Task from verified source"));
        g_assert_true(g_str_has_suffix(ver, "\n\ndo it"));
        g_assert_null(strstr(ver, "unverified"));
        g_assert_cmpint(agent_llm_task_message("do it", "a-concierge", false, &unver), ==, 0);
        g_assert_nonnull(strstr(unver, "unverified source"));
        g_assert_nonnull(strstr(unver, "xercise additional scrutiny"));
        g_assert_nonnull(strstr(unver, "a-concierge"));

        g_assert_true(agent_llm_sender_verified(0));

        _cleanup_strv_free_ char **n2 = NULL, **t2 = NULL;
        g_assert_cmpint(agent_llm_load_skills("/nonexistent/skills", geteuid(), &n2, &t2, NULL), ==, 0);
        g_assert_null(n2);

        /* Only the trusted owner's files that nobody else can write reach the prompt. */
        _cleanup_strv_free_ char **n3 = NULL, **t3 = NULL, **skipped = NULL;
        g_assert_cmpint(chmod(b, 0666), ==, 0);
        g_assert_cmpint(agent_llm_load_skills(dir, geteuid(), &n3, &t3, &skipped), ==, 0);
        g_assert_cmpuint(strv_length(n3), ==, 1);
        g_assert_cmpstr(n3[0], ==, "a-skill");
        g_assert_cmpuint(strv_length(skipped), ==, 1);
        g_assert_nonnull(strstr(skipped[0], "b-skill.md"));
        _cleanup_strv_free_ char **n4 = NULL, **t4 = NULL, **s4 = NULL;
        g_assert_cmpint(agent_llm_load_skills(dir, geteuid() + 1, &n4, &t4, &s4), ==, 0);
        g_assert_null(n4); /* the folder is not the trusted owner's: nothing from it */
        g_assert_cmpuint(strv_length(s4), ==, 1);
        _cleanup_strv_free_ char **n5 = NULL, **t5 = NULL, **s5 = NULL;
        g_assert_cmpint(chmod(dir, 0777), ==, 0);
        g_assert_cmpint(agent_llm_load_skills(dir, geteuid(), &n5, &t5, &s5), ==, 0);
        g_assert_null(n5); /* a folder others can write: nothing from it */
        g_assert_cmpint(chmod(dir, 0755), ==, 0);
        test_tmpdir_remove(dir);
}

static ConLlmConversation *sample_conversation(void) {
        ConLlmConversation *c = con_llm_conversation_new();
        ConLlmToolCall call = { .id = (char *) "c1", .name = (char *) "exec", .arguments = (char *) "{\"command\":\"ls\"}" };
        g_assert_cmpint(con_llm_conversation_add_user(c, "task 1"), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_assistant(c, NULL, &call, 1), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_tool_result(c, "c1", "file-a\nfile-b", false), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_assistant(c, "done 1", NULL, 0), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_user(c, "task 2"), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_assistant(c, "done 2", NULL, 0), ==, 0);
        return c;
}

static void test_neutral_json(void) {
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *c = sample_conversation();
        _cleanup_free_ char *req = NULL, *err = NULL;
        g_assert_cmpint(con_llm_conversation_set_system(c, "sys"), ==, 0);
        g_assert_cmpint(agent_tools_register(c, NULL, NULL), ==, 0);
        g_assert_cmpuint(c->n_tools, ==, 8);    /* commission_agent only where the policy allows it */
        {
                const char *yaml = "agents:\n  - name: concierge\n  - name: sysadmin\n";
                _cleanup_(con_config_freep) ConConfig *cfg = NULL;
                ConErrorDetail e = {};
                g_assert_cmpint(con_config_parse(yaml, strlen(yaml), "con.yaml", &cfg, &e), ==, 0);
                _cleanup_(con_llm_conversation_freep) ConLlmConversation *s1 = sample_conversation(),
                                                                          *s2 = sample_conversation();
                g_assert_cmpint(agent_tools_register(s1, cfg, con_config_find_agent(cfg, "sysadmin")), ==, 0);
                g_assert_cmpuint(s1->n_tools, ==, 9);
                g_assert_cmpstr(s1->tools[8].name, ==, "commission_agent");
                g_assert_cmpint(agent_tools_register(s2, cfg, con_config_find_agent(cfg, "concierge")), ==, 0);
                g_assert_cmpuint(s2->n_tools, ==, 8);
        }
        g_assert_cmpint(agent_llm_request_json(c, 0, 8192, "t-1", &req), ==, 0);
        g_assert_nonnull(strstr(req, "\"system\":\"sys\""));
        g_assert_nonnull(strstr(req, "\"arguments\":{\"command\":\"ls\"}"));
        g_assert_nonnull(strstr(req, "\"tool_call_id\":\"c1\""));
        g_assert_nonnull(strstr(req, "\"name\":\"send_task\""));
        g_assert_nonnull(strstr(req, "\"max_tokens\":8192"));
        g_assert_nonnull(strstr(req, "\"task_id\":\"t-1\""));

        _cleanup_(con_llm_response_freep) ConLlmResponse *r = NULL;
        g_assert_cmpint(agent_llm_response_parse("{\"text\":null,\"tool_calls\":[{\"id\":\"x\",\"name\":\"exec\","
                                                 "\"arguments\":{\"command\":\"false\"}}],\"stop_reason\":\"tool_use\","
                                                 "\"usage\":{\"input_tokens\":3,\"output_tokens\":4},\"model\":\"m\"}",
                                                 &r, &err), ==, 0);
        g_assert_null(r->text);
        g_assert_cmpuint(r->n_tool_calls, ==, 1);
        g_assert_cmpstr(r->tool_calls[0].arguments, ==, "{\"command\":\"false\"}");
        g_assert_cmpint(r->stop, ==, CON_LLM_STOP_TOOL_USE);
        g_assert_true(r->has_usage);
        g_assert_cmpuint(r->output_tokens, ==, 4);

        /* Usage figures out of uint64_t's range (1e999 is infinity) are no usage, not undefined
         * conversions (UBSan fails this case on the code before). */
        static const char *const huge[] = { "1e30", "1e999", "18446744073709551616" };
        for (size_t i = 0; i < G_N_ELEMENTS(huge); i++) {
                _cleanup_(con_llm_response_freep) ConLlmResponse *h = NULL;
                _cleanup_free_ char *json = g_strdup_printf("{\"text\":\"t\",\"usage\":{\"input_tokens\":%s,"
                                                            "\"output_tokens\":1}}", huge[i]);
                g_assert_cmpint(agent_llm_response_parse(json, &h, &err), ==, 0);
                g_assert_false(h->has_usage);
        }

        ConLlmResponse *bad = NULL;
        g_assert_cmpint(agent_llm_response_parse("[]", &bad, &err), ==, -EBADMSG);
        free(err);
        err = NULL;
        g_assert_cmpint(agent_llm_response_parse("{\"tool_calls\":[{\"id\":\"x\"}]}", &bad, &err), ==, -EBADMSG);
        g_assert_nonnull(strstr(err, "tool_calls[0]"));
        free(err);
        err = NULL;
        g_assert_cmpint(agent_llm_response_parse("{\"text\":5}", &bad, &err), ==, -EBADMSG);
        g_assert_null(bad);
}

static char *run_tool(const char *dir, const char *tool, const char *args, bool *is_error) {
        AgentToolContext ctx = { .workspace = dir };
        char *out = NULL;
        g_assert_cmpint(agent_tool_run(&ctx, tool, args, &out, is_error), ==, 0);
        g_assert_nonnull(out);
        return out;
}

static void test_exec_tool(void) {
        _cleanup_free_ char *dir = test_tmpdir_new();
        bool is_error;

        _cleanup_free_ char *o1 = run_tool(dir, "exec", "{\"command\":\"pwd; echo oops >&2; exit 3\"}", &is_error);
        g_assert_true(is_error);
        g_assert_nonnull(strstr(o1, dir));
        g_assert_nonnull(strstr(o1, "STDERR:\noops\n"));
        g_assert_true(g_str_has_suffix(o1, "Exit code: 3"));

        _cleanup_free_ char *o2 = run_tool(dir, "exec", "{\"argv\":[\"echo\",\"$HOME\"]}", &is_error);
        g_assert_false(is_error);
        g_assert_cmpstr(o2, ==, "$HOME\nExit code: 0");

        /* a clean environment */
        g_setenv("CON_API_KEY", "sk-secret", TRUE);
        _cleanup_free_ char *o3 = run_tool(dir, "exec", "{\"command\":\"env\"}", &is_error);
        g_assert_null(strstr(o3, "sk-secret"));
        g_unsetenv("CON_API_KEY");

        _cleanup_free_ char *o4 = run_tool(dir, "exec", "{\"command\":\"sleep 30 & sleep 30\",\"timeout\":1}", &is_error);
        g_assert_true(is_error);
        g_assert_nonnull(strstr(o4, "killed after the timeout of 1s"));

        _cleanup_free_ char *o5 = run_tool(dir, "exec", "{\"command\":\"head -c 1200000 /dev/zero | tr '\\\\0' a\"}",
                                           &is_error);
        g_assert_cmpuint(strlen(o5), <, AGENT_TOOL_OUTPUT_MAX + 100);
        g_assert_nonnull(strstr(o5, "output cut"));
        g_assert_true(g_str_has_suffix(o5, "Exit code: 0")); /* the exit code survives the cut */

        _cleanup_free_ char *o6 = run_tool(dir, "exec", "{\"argv\":[\"/nonexistent/prog\"]}", &is_error);
        g_assert_true(is_error);
        g_assert_nonnull(strstr(o6, "Exit code: 127"));

        _cleanup_free_ char *o7 = run_tool(dir, "exec", "{\"command\":3}", &is_error);
        g_assert_true(is_error);
        g_assert_nonnull(strstr(o7, "must be a string"));
        test_tmpdir_remove(dir);
}

/* Bytes of "seq 1 n". */
static size_t seq_bytes(unsigned n) {
        size_t b = 0;
        for (unsigned i = 1; i <= n; i++)
                b += (size_t) snprintf(NULL, 0, "%u\n", i);
        return b;
}

/* Tool output larger than the limit keeps its start, its end, the true sizes and the exit code;
 * bytes that are not UTF-8 reach the model as U+FFFD with a note, never as raw bytes. */
static void test_exec_output_cut(void) {
        _cleanup_free_ char *dir = test_tmpdir_new();
        bool is_error;

        _cleanup_free_ char *o1 = run_tool(dir, "exec", "{\"command\":\"echo START; head -c 3000000 /dev/zero | "
                                           "tr '\\\\0' a; echo; echo END; exit 4\"}", &is_error);
        g_assert_true(is_error);
        g_assert_cmpuint(strlen(o1), <=, AGENT_TOOL_OUTPUT_MAX);
        g_assert_cmpuint(strlen(o1), >, AGENT_TOOL_OUTPUT_MAX - 200);
        g_assert_true(g_str_has_prefix(o1, "START\naaa"));
        g_assert_nonnull(strstr(o1, "\n[... cut: 3000011 bytes in all, the start and the end are shown ...]\n"));
        g_assert_nonnull(strstr(o1, "aaa\nEND\n[output cut: stdout 3000011 bytes, stderr 0 bytes in all;"));
        g_assert_true(g_str_has_suffix(o1, "Exit code: 4"));

        /* Both streams large: each keeps its start and end, stdout two thirds of the room. */
        _cleanup_free_ char *o2 = run_tool(dir, "exec", "{\"command\":\"seq 1 200000; seq 1 300000 >&2\"}", &is_error);
        g_assert_false(is_error);
        g_assert_cmpuint(strlen(o2), <=, AGENT_TOOL_OUTPUT_MAX);
        g_assert_true(g_str_has_prefix(o2, "1\n2\n3\n"));
        g_assert_nonnull(strstr(o2, "199999\n200000\nSTDERR:\n1\n2\n"));
        g_autofree char *sizes = g_strdup_printf("299999\n300000\n[output cut: stdout %zu bytes, stderr %zu bytes in all;",
                                                 seq_bytes(200000), seq_bytes(300000));
        g_assert_nonnull(strstr(o2, sizes));
        g_assert_true(g_str_has_suffix(o2, "Exit code: 0"));
        const char *se = strstr(o2, "STDERR:\n");
        g_assert_cmpuint((size_t) (se - o2), >, strlen(se));

        /* Multi-byte characters at every possible cut: always valid text. */
        _cleanup_free_ char *o3 = run_tool(dir, "exec", "{\"command\":\"printf a; c=$(printf '\\\\303\\\\251\\\\360\\\\237"
                                           "\\\\230\\\\200'); yes \\\"$c\\\" | head -n 300000 | tr -d '\\\\n'\"}", &is_error);
        g_assert_cmpuint(strlen(o3), <=, AGENT_TOOL_OUTPUT_MAX);
        g_assert_true(g_utf8_validate(o3, -1, NULL));
        g_assert_nonnull(strstr(o3, "[output cut: stdout 1800001 bytes"));
        g_assert_null(strstr(o3, AGENT_TOOL_REPLACED_NOTE));
        g_assert_true(g_str_has_suffix(o3, "Exit code: 0"));

        /* Raw bytes. */
        _cleanup_free_ char *o4 = run_tool(dir, "exec", "{\"command\":\"printf '\\\\377'; printf 'x\\\\300y' >&2\"}",
                                           &is_error);
        g_assert_true(g_utf8_validate(o4, -1, NULL));
        g_assert_cmpstr(o4, ==, "\xef\xbf\xbd\nSTDERR:\nx\xef\xbf\xbdy\n" AGENT_TOOL_REPLACED_NOTE "\nExit code: 0");

        /* Exactly at the limit of what fits, and one byte more. */
        for (int extra = -1; extra <= 1; extra++) {
                g_autofree char *args = g_strdup_printf("{\"command\":\"head -c %d /dev/zero | tr '\\\\0' b\"}",
                                                        (int) AGENT_TOOL_OUTPUT_MAX - 13 + extra);
                _cleanup_free_ char *o = run_tool(dir, "exec", args, &is_error);
                g_assert_cmpuint(strlen(o), <=, AGENT_TOOL_OUTPUT_MAX);
                g_assert_true(g_str_has_suffix(o, "Exit code: 0"));
                g_assert_true((strstr(o, "[output cut:") != NULL) == (extra > 0));
        }
        test_tmpdir_remove(dir);
}

static void test_tools_invalid_utf8(void) {
        _cleanup_free_ char *dir = test_tmpdir_new();
        _cleanup_free_ char *latin1 = g_strdup_printf("%s/latin1.txt", dir);
        _cleanup_free_ char *odd = g_strdup_printf("%s/sub/n\xe9.txt", dir);
        _cleanup_free_ char *args = NULL;
        bool is_error;

        test_write_file(latin1, "caf\xe9 cr\xe8me\n");
        args = g_strdup_printf("{\"path\":\"%s\"}", latin1);
        _cleanup_free_ char *o1 = run_tool(dir, "read_file", args, &is_error);
        g_assert_false(is_error);
        g_assert_cmpstr(o1, ==, "caf\xef\xbf\xbd cr\xef\xbf\xbdme\n\n" AGENT_TOOL_REPLACED_NOTE);

        /* A file name that is not UTF-8. */
        g_autofree char *sub = g_path_get_dirname(odd);
        g_assert_cmpint(g_mkdir_with_parents(sub, 0700), ==, 0);
        test_write_file(odd, "x");
        free(args);
        args = g_strdup_printf("{\"path\":\"%s/sub\"}", dir);
        _cleanup_free_ char *o2 = run_tool(dir, "list_dir", args, &is_error);
        g_assert_true(g_utf8_validate(o2, -1, NULL));
        g_assert_true(g_str_has_prefix(o2, "FILE: n\xef\xbf\xbd.txt"));

        /* Into the conversation and out as a request: valid, and the raw bytes never saved. */
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *c = con_llm_conversation_new();
        ConLlmToolCall call = { .id = (char *) "c1", .name = (char *) "exec", .arguments = (char *) "{}" };
        g_assert_cmpint(con_llm_conversation_add_user(c, "task"), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_assistant(c, NULL, &call, 1), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_tool_result(c, "c1", "\xff\xfe", false), ==, 0);
        g_assert_cmpstr(c->messages[2].content, ==, "\xef\xbf\xbd\xef\xbf\xbd");
        _cleanup_free_ char *req = NULL;
        g_assert_cmpint(agent_llm_request_json(c, 0, 100, "t1", &req), ==, 0);
        g_assert_true(g_utf8_validate(req, -1, NULL));
        test_tmpdir_remove(dir);
}

/* A conversation file saved before tool results were made text: read with U+FFFD, not refused. */
static void test_history_invalid_utf8(void) {
        const char *text = "{\"version\":2,\"messages\":[{\"role\":\"user\",\"content\":\"t\xe9\"},"
                           "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c\xff\",\"name\":"
                           "\"exec\",\"arguments\":{\"command\":\"printf '\xff'\"}}]},{\"role\":\"tool\","
                           "\"tool_call_id\":\"c\xff\",\"content\":\"\xff\"},{\"role\":\"assistant\","
                           "\"content\":\"ok \xc3\"}]}";
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *c = con_llm_conversation_new();
        _cleanup_free_ char *err = NULL, *req = NULL, *saved = NULL;

        g_assert_cmpint(agent_history_parse(text, strlen(text), c, &err), ==, 0);
        g_assert_cmpuint(c->n_messages, ==, 4);
        g_assert_cmpstr(c->messages[0].content, ==, "t\xef\xbf\xbd");
        g_assert_cmpstr(c->messages[2].content, ==, "\xef\xbf\xbd");
        g_assert_cmpstr(c->messages[2].tool_call_id, ==, "c\xef\xbf\xbd");
        g_assert_cmpstr(c->messages[3].content, ==, "ok \xef\xbf\xbd");
        g_assert_cmpint(agent_llm_request_json(c, 0, 100, "t1", &req), ==, 0);
        g_assert_true(g_utf8_validate(req, -1, NULL));
        /* Written back: valid text only. */
        g_assert_cmpint(agent_history_format(c, 0, &saved), ==, 0);
        g_assert_true(g_utf8_validate(saved, -1, NULL));
}

static void test_file_tools(void) {
        _cleanup_free_ char *dir = test_tmpdir_new();
        _cleanup_free_ char *f = g_strdup_printf("%s/sub/dir/a.txt", dir);
        _cleanup_free_ char *args = NULL, *o = NULL;
        bool is_error;

#define RUN(tool, fmt, ...)                                                     \
        do {                                                                    \
                free(args);                                                     \
                free(o);                                                        \
                args = g_strdup_printf(fmt, __VA_ARGS__);                       \
                o = run_tool(dir, tool, args, &is_error);                       \
        } while (0)

        RUN("write_file", "{\"path\":\"%s\",\"content\":\"one two two\\n\"}", f);
        g_assert_false(is_error);
        RUN("read_file", "{\"path\":\"%s\"}", f);
        g_assert_cmpstr(o, ==, "one two two\n");
        RUN("edit_file", "{\"path\":\"%s\",\"old_text\":\"two\",\"new_text\":\"x\"}", f);
        g_assert_true(is_error);
        g_assert_nonnull(strstr(o, "occurs 2 times"));
        RUN("edit_file", "{\"path\":\"%s\",\"old_text\":\"one\",\"new_text\":\"1\"}", f);
        g_assert_false(is_error);
        RUN("append_file", "{\"path\":\"%s\",\"content\":\"end\"}", f);
        RUN("read_file", "{\"path\":\"%s\"}", f);
        g_assert_cmpstr(o, ==, "1 two two\nend");
        RUN("list_dir", "{\"path\":\"%s/sub\"}", dir);
        g_assert_cmpstr(o, ==, "DIR:  dir");
        RUN("read_file", "{\"path\":\"%s/missing\"}", dir);
        g_assert_true(is_error);
        g_assert_nonnull(strstr(o, "No such file"));
        RUN("read_file", "{\"path\":\"%s/sub\"}", dir);
        g_assert_true(is_error);
        test_tmpdir_remove(dir);
}

static void test_stop_reasons(void) {
        static const struct {
                const char *json, *want;        /* want NULL: a usable answer */
        } t[] = {
                { "{\"text\":\"ok\",\"stop_reason\":\"end\",\"provider_stop_reason\":\"stop\"}", NULL },
                { "{\"text\":\"half an ans\",\"stop_reason\":\"max_tokens\",\"provider_stop_reason\":\"length\"}",
                  "truncated: the model's answer was cut off at the token limit (stop reason \"length\", max_tokens 8192) after 11 bytes" },
                { "{\"text\":\"x\",\"stop_reason\":\"max_tokens\"}", "stop reason \"max_tokens\"" },
                { "{\"text\":null,\"stop_reason\":\"filtered\",\"provider_stop_reason\":\"content_filter\"}",
                  "filtered: the provider's content filter stopped the answer (stop reason \"content_filter\")" },
                { "{\"text\":\"I won't\",\"stop_reason\":\"filtered\",\"provider_stop_reason\":\"refusal\"}",
                  "refused: the model declined to answer (stop reason \"refusal\"): I won't" },
                { "{\"text\":\"x\",\"stop_reason\":\"other\",\"provider_stop_reason\":\"pause_turn\"}", NULL },
                /* Tool calls are run whatever the stop says. */
                { "{\"text\":null,\"tool_calls\":[{\"id\":\"c\",\"name\":\"exec\",\"arguments\":{}}],"
                  "\"stop_reason\":\"tool_use\",\"provider_stop_reason\":\"length\"}", NULL },
        };
        /* A long refusal is cut on a character boundary: "x" then é (2 bytes) puts byte 300 inside one. */
        char text[512] = "x";
        for (int k = 0; k < 200; k++)
                strcat(text, "\xc3\xa9");
        ConLlmResponse long_refusal = { .text = text, .stop = CON_LLM_STOP_FILTERED, .stop_raw = (char *) "refusal" };
        char *lr = NULL;
        g_assert_cmpint(agent_llm_stop_reason(&long_refusal, 8192, &lr), ==, 1);
        size_t bad = 0;
        g_assert_cmpint(con_utf8_check(lr, strlen(lr), &bad), ==, CON_TASK_OK);
        g_assert_nonnull(strstr(lr, ": x\xc3\xa9"));
        free(lr);
        for (size_t i = 0; i < G_N_ELEMENTS(t); i++) {
                _cleanup_(con_llm_response_freep) ConLlmResponse *r = NULL;
                char *err = NULL, *reason = NULL;
                g_assert_cmpint(agent_llm_response_parse(t[i].json, &r, &err), ==, 0);
                int k = agent_llm_stop_reason(r, 8192, &reason);
                if (!t[i].want) {
                        g_assert_cmpint(k, ==, 0);
                        g_assert_null(reason);
                } else {
                        g_assert_cmpint(k, ==, 1);
                        if (!strstr(reason, t[i].want))
                                g_error("case %zu: \"%s\" lacks \"%s\"", i, reason, t[i].want);
                        free(reason);
                }
        }
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/agent-llm/args-valid", test_args_valid);
        g_test_add_func("/agent-llm/args-invalid", test_args_invalid);
        g_test_add_func("/agent-llm/loop-guard", test_loop_guard);
        g_test_add_func("/agent-llm/prompt", test_prompt);
        g_test_add_func("/agent-llm/neutral-json", test_neutral_json);
        g_test_add_func("/agent-llm/stop-reasons", test_stop_reasons);
        g_test_add_func("/agent-llm/exec-tool", test_exec_tool);
        g_test_add_func("/agent-llm/file-tools", test_file_tools);
        g_test_add_func("/agent-llm/exec-output-cut", test_exec_output_cut);
        g_test_add_func("/agent-llm/tools-invalid-utf8", test_tools_invalid_utf8);
        g_test_add_func("/agent-llm/history-invalid-utf8", test_history_invalid_utf8);
        return con_test_run();
}
