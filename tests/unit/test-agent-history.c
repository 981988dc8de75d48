/* SPDX-License-Identifier: MIT */
/* Conversations of the picoclaw runtime: the file format, per-sender lookup, commit (only whole
 * turns, merged under the lock), context bounds with the marker, head-and-tail cuts, /new and
 * /forget. */
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent-history.h"
#include "macro.h"
#include "task.h"
#include "test-util.h"

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

static void expect_bad(const char *text, const char *substr) {
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *c = con_llm_conversation_new();
        _cleanup_free_ char *err = NULL;
        g_assert_cmpint(agent_history_parse(text, strlen(text), c, &err), ==, -EBADMSG);
        g_assert_cmpuint(c->n_messages, ==, 0); /* never half-loaded */
        if (!strstr(strempty(err), substr))
                g_error("\"%s\": error \"%s\" does not contain \"%s\"", text, strempty(err), substr);
}

static void test_format_parse(void) {
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *c = sample_conversation();
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *d = con_llm_conversation_new();
        _cleanup_free_ char *text = NULL, *err = NULL;

        g_assert_cmpint(agent_history_format(c, 0, &text), ==, 0);
        g_assert_cmpint(agent_history_parse(text, strlen(text), d, &err), ==, 0);
        g_assert_cmpuint(d->n_messages, ==, 6);
        g_assert_cmpstr(d->messages[1].tool_calls[0].name, ==, "exec");
        g_assert_cmpstr(d->messages[1].tool_calls[0].arguments, ==, "{\"command\":\"ls\"}");
        g_assert_cmpstr(d->messages[2].content, ==, "file-a\nfile-b");
        g_assert_cmpstr(d->messages[5].content, ==, "done 2");

        expect_bad("", "not a conversation");
        expect_bad("not json", "no messages array");
        expect_bad("{\"messages\":{}}", "no messages array");
        expect_bad("{\"version\":9,\"messages\":[]}", "version must be 1 to 2");
        expect_bad("{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\"}]}", "messages[0] is not a user message");
        expect_bad("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"tool\","
                   "\"tool_call_id\":\"zz\",\"content\":\"y\"}]}", "answers no earlier call");
        expect_bad("{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "content must be a string");
        expect_bad("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"tool_calls\":"
                   "[{\"id\":\"a\",\"name\":\"x\"},{\"id\":\"a\",\"name\":\"y\"}]}]}", "used twice");
        expect_bad("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"tool_calls\":"
                   "[{\"id\":\"a\",\"name\":\"x\",\"arguments\":[1]}]}]}", "tool_calls malformed");
        expect_bad("{\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}", "messages[0] is not a user message");
        expect_bad("{\"messages\":[\"x\"]}", "not an object");
}

static void test_turn_and_estimate(void) {
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *c = sample_conversation();
        g_assert_cmpuint(agent_history_turn_start(c, 3), ==, 0);
        g_assert_cmpuint(agent_history_turn_start(c, 5), ==, 4);
        g_assert_cmpuint(agent_history_turn_start(c, 99), ==, 4);
        g_assert_cmpuint(agent_history_estimate(c, 4), <, agent_history_estimate(c, 0));
        /* 128000 tokens, 8192 for the answer, 3 bytes a token */
        g_assert_cmpuint(agent_history_budget(128000, 8192), ==, (128000 - 8192) * 3);
        g_assert_cmpuint(agent_history_budget(10000, 8192), ==, 5000 * 3);
}

static void test_fit(void) {
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *c = con_llm_conversation_new();
        _cleanup_free_ char *big = g_strnfill(3000, 'x');
        for (int i = 0; i < 5; i++) {
                _cleanup_free_ char *u = g_strdup_printf("turn %d %s", i, big);
                g_assert_cmpint(con_llm_conversation_add_user(c, u), ==, 0);
                ConLlmToolCall call = { .id = (char *) "t", .name = (char *) "exec", .arguments = (char *) "{}" };
                g_assert_cmpint(con_llm_conversation_add_assistant(c, NULL, &call, 1), ==, 0);
                g_assert_cmpint(con_llm_conversation_add_tool_result(c, "t", "ok", false), ==, 0);
                g_assert_cmpint(con_llm_conversation_add_assistant(c, "answer", NULL, 0), ==, 0);
        }
        size_t protect = 16, dropped = 99;

        /* within the budget: nothing changes */
        g_assert_cmpint(agent_history_fit(c, &protect, 1000000, &dropped), ==, 0);
        g_assert_cmpuint(dropped, ==, 0);
        g_assert_cmpuint(c->n_messages, ==, 20);

        /* room for about two turns: whole old turns go, the first kept one is marked */
        g_assert_cmpint(agent_history_fit(c, &protect, 7000, &dropped), ==, 0);
        g_assert_cmpuint(dropped % 4, ==, 0);
        g_assert_cmpuint(dropped, >=, 12);
        g_assert_cmpuint(c->n_messages, ==, 20 - dropped);
        g_assert_cmpuint(protect, ==, 16 - dropped);
        g_assert_cmpint(c->messages[0].role, ==, CON_LLM_ROLE_USER);
        g_assert_true(g_str_has_prefix(c->messages[0].content, AGENT_HISTORY_MARKER));
        g_assert_cmpuint(agent_history_estimate(c, 0), <=, 7000);
        g_assert_nonnull(strstr(c->messages[protect].content, "turn 4"));

        /* the current turn is never dropped: its text is cut to head and tail instead */
        g_assert_cmpint(agent_history_fit(c, &protect, 2500, &dropped), ==, 0);
        g_assert_cmpuint(protect, ==, 0);
        g_assert_cmpuint(c->n_messages, ==, 4);
        g_assert_true(g_str_has_prefix(c->messages[0].content, AGENT_HISTORY_MARKER "\n\nturn 4"));
        g_assert_nonnull(strstr(c->messages[0].content, "bytes left out to fit the context window"));
        g_assert_cmpuint(agent_history_estimate(c, 0), <=, 2500);
        /* the marker is not stacked */
        g_assert_null(strstr(c->messages[0].content + 1, AGENT_HISTORY_MARKER));
}

static void test_head_tail(void) {
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL;
        g_assert_cmpint(agent_history_head_tail("short", 10, 10, "/p", &a), ==, 0);
        g_assert_cmpstr(a, ==, "short");
        g_assert_cmpint(agent_history_head_tail("HEAD-middle-middle-middle-TAIL", 4, 4, "/w/f.txt", &b), ==, 0);
        g_assert_true(g_str_has_prefix(b, "[30 bytes; the whole text is in /w/f.txt."));
        g_assert_nonnull(strstr(b, "\nHEAD\n[... 22 bytes left out ...]\nTAIL"));
        /* UTF-8 boundaries: "é" is two bytes, never split */
        g_assert_cmpint(agent_history_head_tail("ééééééééééé", 3, 3, NULL, &c), ==, 0);
        g_assert_true(g_str_has_prefix(c, "é\n[..."));
        g_assert_true(g_str_has_suffix(c, "]\né"));
}

static void test_store(void) {
        _cleanup_free_ char *ws = test_tmpdir_new();
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *c = sample_conversation();
        _cleanup_free_ char *id = NULL, *err = NULL;
        _cleanup_free_ char *root = g_strdup_printf("%s/conversations", ws);
        int alice = -EBADF, bob = -EBADF;
        bool is_new = false;

        g_assert_cmpint(agent_history_open_dir(root, 1000, false, &alice), ==, -ENOENT);
        g_assert_cmpint(agent_history_open_dir(root, 1000, true, &alice), ==, 0);
        g_assert_cmpint(agent_history_open_dir(root, 1001, true, &bob), ==, 0);

        /* no conversation named: a new one, named after the task */
        g_assert_cmpint(agent_history_resolve(alice, NULL, "T1", &id, &is_new), ==, 0);
        g_assert_cmpstr(id, ==, "T1");
        g_assert_true(is_new);
        g_clear_pointer(&id, free);
        /* latest without any: new */
        g_assert_cmpint(agent_history_resolve(alice, CON_CONVERSATION_LATEST, "T1", &id, &is_new), ==, 0);
        g_assert_cmpstr(id, ==, "T1");
        g_assert_true(is_new);
        g_clear_pointer(&id, free);
        g_assert_cmpint(agent_history_resolve(alice, "nope", "T1", &id, &is_new), ==, -ENOENT);
        g_assert_cmpint(agent_history_resolve(alice, "../1001/T1", "T1", &id, &is_new), ==, -EINVAL);
        g_assert_cmpint(agent_history_resolve(alice, NULL, "../x", &id, &is_new), ==, -EINVAL);

        /* commit the second turn only (the first belongs to nobody here) */
        g_assert_cmpint(agent_history_commit(alice, "T1", c, 1, 1000000), ==, -EINVAL); /* not a turn start */
        g_assert_cmpint(agent_history_commit(alice, "T1", c, 4, 1000000), ==, 0);
        _cleanup_free_ char *path = g_strdup_printf("%s/conversations/1000/T1.json", ws);
        struct stat st;
        g_assert_cmpint(stat(path, &st), ==, 0);
        g_assert_cmpuint(st.st_mode & 0777, ==, 0600);

        /* alice finds it by id and as her latest; bob does not, by any name */
        g_assert_cmpint(agent_history_resolve(alice, "T1", "T2", &id, &is_new), ==, 0);
        g_assert_cmpstr(id, ==, "T1");
        g_assert_false(is_new);
        g_clear_pointer(&id, free);
        g_assert_cmpint(agent_history_resolve(alice, CON_CONVERSATION_LATEST, "T2", &id, &is_new), ==, 0);
        g_assert_cmpstr(id, ==, "T1");
        g_clear_pointer(&id, free);
        g_assert_cmpint(agent_history_resolve(bob, "T1", "T3", &id, &is_new), ==, -ENOENT);
        g_assert_cmpint(agent_history_resolve(bob, CON_CONVERSATION_LATEST, "T3", &id, &is_new), ==, 0);
        g_assert_cmpstr(id, ==, "T3");
        g_assert_true(is_new);
        g_clear_pointer(&id, free);

        /* two sessions of the same conversation: both turns are kept (re-read under the lock) */
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *s1 = con_llm_conversation_new();
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *s2 = con_llm_conversation_new();
        g_assert_cmpint(agent_history_load(alice, "T1", s1, &err), ==, 0);
        g_assert_cmpint(agent_history_load(alice, "T1", s2, &err), ==, 0);
        g_assert_cmpuint(s1->n_messages, ==, 2);
        g_assert_cmpint(con_llm_conversation_add_user(s1, "from session 1"), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_assistant(s1, "answer 1", NULL, 0), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_user(s2, "from session 2"), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_assistant(s2, "answer 2", NULL, 0), ==, 0);
        g_assert_cmpint(agent_history_commit(alice, "T1", s1, 2, 1000000), ==, 0);
        g_assert_cmpint(agent_history_commit(alice, "T1", s2, 2, 1000000), ==, 0);
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *m = con_llm_conversation_new();
        g_assert_cmpint(agent_history_load(alice, "T1", m, &err), ==, 0);
        g_assert_cmpuint(m->n_messages, ==, 6);
        g_assert_cmpstr(m->messages[2].content, ==, "from session 1");
        g_assert_cmpstr(m->messages[4].content, ==, "from session 2");

        /* a commit over the budget drops old turns and marks the first kept one */
        g_assert_cmpint(agent_history_commit(alice, "T1", s2, 2, 300), ==, 0);
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *cut = con_llm_conversation_new();
        g_assert_cmpint(agent_history_load(alice, "T1", cut, &err), ==, 0);
        g_assert_cmpuint(cut->n_messages, ==, 2);
        g_assert_true(g_str_has_prefix(cut->messages[0].content, AGENT_HISTORY_MARKER "\n\nfrom session 2"));

        /* an unreadable file: load says so, and a commit starts it afresh */
        _cleanup_free_ char *bad = g_strdup_printf("%s/conversations/1000/T9.json", ws);
        test_write_file(bad, "{\"messages\":[{\"role\":\"tool\"}]}");
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *b = con_llm_conversation_new();
        g_assert_cmpint(agent_history_load(alice, "T9", b, &err), ==, -EBADMSG);
        g_assert_cmpint(agent_history_load(alice, "T8", b, &err), ==, -ENOENT);

        /* /new: the next --continue without id starts afresh; ids still work */
        g_assert_cmpint(agent_history_end_latest(root, 1000), ==, 0);
        g_assert_cmpint(agent_history_resolve(alice, CON_CONVERSATION_LATEST, "T4", &id, &is_new), ==, 0);
        g_assert_cmpstr(id, ==, "T4");
        g_assert_true(is_new);
        g_clear_pointer(&id, free);
        g_assert_cmpint(agent_history_resolve(alice, "T1", "T4", &id, &is_new), ==, 0);
        g_clear_pointer(&id, free);

        /* /forget: alice's conversations go, bob's directory is untouched */
        g_assert_cmpint(agent_history_commit(bob, "B1", s1, 2, 1000000), ==, 0);
        g_assert_cmpint(agent_history_forget(root, 1000), ==, 2);
        g_assert_cmpint(stat(path, &st), ==, -1);
        g_assert_cmpint(agent_history_forget(root, 1000), ==, 0);
        _cleanup_free_ char *bpath = g_strdup_printf("%s/conversations/1001/B1.json", ws);
        g_assert_cmpint(stat(bpath, &st), ==, 0);

        /* a symlink for a sender's directory is refused, not followed */
        _cleanup_free_ char *link = g_strdup_printf("%s/conversations/1002", ws);
        _cleanup_free_ char *target = g_strdup_printf("%s/conversations/1001", ws);
        g_assert_cmpint(symlink(target, link), ==, 0);
        int x = -EBADF;
        g_assert_cmpint(agent_history_open_dir(root, 1002, true, &x), ==, -ELOOP);
        g_assert_cmpint(agent_history_forget(root, 1002), ==, -ELOOP);
        g_assert_cmpint(stat(bpath, &st), ==, 0);

        /* a turn sent back by a session: checked with the reader, then appended */
        _cleanup_free_ char *turn = NULL, *text = NULL;
        size_t len = 0;
        g_assert_cmpint(agent_history_format(c, 4, &turn), ==, 0);
        g_assert_cmpint(agent_history_store_turn(bob, "B1", turn, strlen(turn), 1000000, &err), ==, 0);
        g_assert_cmpint(agent_history_read(bob, "B1", &text, &len, &err), ==, 0);
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *bc = con_llm_conversation_new();
        g_assert_cmpint(agent_history_parse(text, len, bc, &err), ==, 0);
        g_assert_cmpuint(bc->n_messages, ==, 2 + c->n_messages - 4);
        g_clear_pointer(&err, free);
        /* not a turn (no user message first, not JSON, empty): refused, the file unchanged */
        const char *no_task = "{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\"}]}";
        g_assert_cmpint(agent_history_store_turn(bob, "B1", no_task, strlen(no_task), 1000000, &err), ==,
                        -EBADMSG);
        g_assert_nonnull(err);
        g_clear_pointer(&err, free);
        g_assert_cmpint(agent_history_store_turn(bob, "B1", "garbage", 7, 1000000, &err), ==, -EBADMSG);
        g_clear_pointer(&err, free);
        g_assert_cmpint(agent_history_store_turn(bob, "B1", "{\"messages\":[]}", 15, 1000000, &err), ==, -EBADMSG);
        g_clear_pointer(&err, free);
        g_assert_cmpint(agent_history_store_turn(bob, "../x", turn, strlen(turn), 1000000, &err), ==, -EINVAL);
        _cleanup_free_ char *text2 = NULL;
        g_assert_cmpint(agent_history_read(bob, "B1", &text2, &len, &err), ==, 0);
        g_assert_cmpstr(text, ==, text2);
        _cleanup_free_ char *bad2 = g_strdup_printf("%s/conversations/1001/B9.json", ws);
        test_write_file(bad2, "{\"messages\":[{\"role\":\"tool\"}]}");
        g_clear_pointer(&text2, free);
        g_assert_cmpint(agent_history_read(bob, "B9", &text2, &len, &err), ==, -EBADMSG);
        g_assert_null(text2);
        g_clear_pointer(&err, free);

        /* spill: a file in tool-output/<sender>/, never replaced */
        _cleanup_free_ char *sp = NULL, *sp2 = NULL;
        g_assert_cmpint(agent_history_spill(ws, 1000, "T1-1.txt", "whole output", &sp), ==, 0);
        g_assert_true(g_str_has_suffix(sp, "/tool-output/1000/T1-1.txt"));
        g_assert_cmpint(agent_history_spill(ws, 1000, "T1-1.txt", "other", &sp2), ==, -EEXIST);
        g_assert_cmpint(agent_history_spill(ws, 1001, "T1-1.txt", "bob's", &sp2), ==, 0);
        g_assert_true(g_str_has_suffix(sp2, "/tool-output/1001/T1-1.txt"));

        /* the workspace's sessions/ of earlier versions: removed unread, symlinks not followed */
        _cleanup_free_ char *legacy = g_strdup_printf("%s/sessions/1000", ws);
        _cleanup_free_ char *lfile = g_strdup_printf("%s/sessions/1000/X.json", ws);
        _cleanup_free_ char *llink = g_strdup_printf("%s/sessions/1000/escape", ws);
        g_assert_cmpint(g_mkdir_with_parents(legacy, 0700), ==, 0);
        test_write_file(lfile, "{}");
        g_assert_cmpint(symlink(root, llink), ==, 0);
        g_assert_cmpint(agent_history_remove_legacy(ws), ==, 1);
        _cleanup_free_ char *lsessions = g_strdup_printf("%s/sessions", ws);
        g_assert_cmpint(stat(lsessions, &st), ==, -1);
        g_assert_cmpint(stat(bpath, &st), ==, 0);
        g_assert_cmpint(agent_history_remove_legacy(ws), ==, 0);

        safe_close(alice);
        safe_close(bob);
        test_tmpdir_remove(ws);
}

static void test_prune(void) {
        _cleanup_free_ char *dir = test_tmpdir_new();
        for (int i = 0; i < 5; i++) {
                _cleanup_free_ char *p = g_strdup_printf("%s/c%d.json", dir, i);
                test_write_file(p, "{}");
                struct timespec ts[2] = { { .tv_sec = 1000 + i }, { .tv_sec = 1000 + i } };
                g_assert_cmpint(utimensat(AT_FDCWD, p, ts, 0), ==, 0);
        }
        _cleanup_free_ char *other = g_strdup_printf("%s/.latest", dir);
        test_write_file(other, "c0\n");
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        g_assert_cmpint(dfd, >=, 0);
        /* keep the 2 newest (c4, c3) and c0, the one in use */
        g_assert_cmpint(agent_history_prune(dfd, ".json", 2, "c0.json"), ==, 2);
        struct stat st;
        g_assert_cmpint(fstatat(dfd, "c4.json", &st, 0), ==, 0);
        g_assert_cmpint(fstatat(dfd, "c3.json", &st, 0), ==, 0);
        g_assert_cmpint(fstatat(dfd, "c0.json", &st, 0), ==, 0);
        g_assert_cmpint(fstatat(dfd, "c2.json", &st, 0), ==, -1);
        g_assert_cmpint(fstatat(dfd, "c1.json", &st, 0), ==, -1);
        g_assert_cmpint(fstatat(dfd, ".latest", &st, 0), ==, 0);
        g_assert_cmpint(agent_history_prune(dfd, ".json", 2, "c0.json"), ==, 0);
        safe_close(dfd);
        test_tmpdir_remove(dir);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/agent-history/format-parse", test_format_parse);
        g_test_add_func("/agent-history/turn-estimate", test_turn_and_estimate);
        g_test_add_func("/agent-history/fit", test_fit);
        g_test_add_func("/agent-history/head-tail", test_head_tail);
        g_test_add_func("/agent-history/store", test_store);
        g_test_add_func("/agent-history/prune", test_prune);
        return con_test_run();
}
