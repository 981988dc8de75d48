/* SPDX-License-Identifier: MIT */
/* Transcripts (services/agentd/agent-transcript.[ch], docs/AGENT.md "Transcripts"). */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent-transcript.h"
#include "json-util.h"
#include "macro.h"
#include "test-util.h"
#include "utf8.h"

static int add(AgentTranscript *t, const char *line, unsigned *turn, const char **phase) {
        return agent_transcript_add_line(t, line, strlen(line), turn, phase);
}

static void test_lines(void) {
        AgentTranscript t = {};
        unsigned turn = 0;
        const char *phase = NULL;

        g_assert_cmpint(add(&t, "{\"ev\":\"phase\",\"turn\":1,\"phase\":\"model\"}", &turn, &phase), ==, 1);
        g_assert_cmpuint(turn, ==, 1);
        g_assert_cmpstr(phase, ==, "model");
        g_assert_cmpint(add(&t, "{\"ev\":\"model\",\"turn\":1,\"model\":\"m1\",\"stop\":\"tool_use\",\"in\":7,\"out\":3,"
                                "\"ms\":12,\"secret\":\"dropped\"}", &turn, &phase), ==, 0);
        g_assert_cmpint(add(&t, "{\"ev\":\"tool\",\"turn\":1,\"tool\":\"exec\",\"args\":\"{\\\"command\\\":\\\"ls\\\"}\","
                                "\"args_bytes\":16,\"error\":false,\"bytes\":40,\"ms\":3,\"exit\":2}", &turn, &phase), ==, 0);
        g_assert_cmpint(add(&t, "{\"ev\":\"model\",\"turn\":2,\"model\":\"m2\",\"in\":5,\"out\":5}", &turn, &phase), ==, 0);
        /* Dropped: not JSON, an unknown event, a bad turn, a phase that is not one of the words. */
        g_assert_cmpint(add(&t, "not json", &turn, &phase), ==, 0);
        g_assert_cmpint(add(&t, "{\"ev\":\"secret\",\"turn\":1}", &turn, &phase), ==, 0);
        g_assert_cmpint(add(&t, "{\"ev\":\"model\",\"turn\":0}", &turn, &phase), ==, 0);
        g_assert_cmpint(add(&t, "{\"ev\":\"phase\",\"turn\":1,\"phase\":\"reading your mail\"}", &turn, &phase), ==, 0);
        g_assert_cmpuint(t.n_dropped, ==, 4);
        g_assert_cmpuint(t.turns, ==, 2);
        g_assert_cmpuint(t.tool_calls, ==, 1);
        g_assert_cmpuint(t.tokens_in, ==, 12);
        g_assert_cmpuint(t.tokens_out, ==, 8);
        g_assert_cmpstr(t.model, ==, "m2");

        _cleanup_cjson_ cJSON *j = agent_transcript_to_json(&t);
        g_assert_nonnull(j);
        _cleanup_free_ char *s = cJSON_PrintUnformatted(j);
        g_assert_nonnull(strstr(s, "\"exit\":2"));
        g_assert_null(strstr(s, "secret"));
        g_assert_cmpint(cJSON_GetArraySize(cJSON_GetObjectItem(j, "steps")), ==, 3);
        agent_transcript_done(&t);
}

static void test_text_and_bounds(void) {
        AgentTranscript t = {};
        unsigned turn = 0;
        const char *phase = NULL;
        char line[8192];

        /* Bytes that are not UTF-8 become U+FFFD; long arguments are cut. */
        g_assert_cmpint(add(&t, "{\"ev\":\"tool\",\"turn\":1,\"tool\":\"\xff\",\"args\":\"\xc3\"}", &turn, &phase), ==, 0);
        memset(line, 0, sizeof(line));
        strcpy(line, "{\"ev\":\"tool\",\"turn\":1,\"tool\":\"exec\",\"args\":\"");
        memset(line + strlen(line), 'a', 2000);
        strcat(line, "\"}");
        g_assert_cmpint(add(&t, line, &turn, &phase), ==, 0);
        _cleanup_cjson_ cJSON *j = agent_transcript_to_json(&t);
        _cleanup_free_ char *s = cJSON_PrintUnformatted(j);
        g_assert_true(con_utf8_valid(s, strlen(s)));
        const cJSON *second = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "steps"), 1);
        g_assert_cmpuint(strlen(cJSON_GetObjectItem(second, "args")->valuestring), ==, AGENT_TRANSCRIPT_ARGS_MAX);

        /* At most the limit of steps, and of progress signals. */
        for (unsigned i = 0; i < AGENT_TRANSCRIPT_STEPS_MAX + 10; i++)
                (void) add(&t, "{\"ev\":\"model\",\"turn\":1}", &turn, &phase);
        g_assert_cmpint(cJSON_GetArraySize(t.steps), ==, AGENT_TRANSCRIPT_STEPS_MAX);
        unsigned signalled = 0;
        for (unsigned i = 0; i < 3 * AGENT_TRANSCRIPT_STEPS_MAX; i++)
                signalled += add(&t, "{\"ev\":\"phase\",\"turn\":1,\"phase\":\"tool\"}", &turn, &phase) == 1;
        g_assert_cmpuint(signalled, ==, 2 * AGENT_TRANSCRIPT_STEPS_MAX);
        agent_transcript_done(&t);
}

/* A line of valid JSON longer than AGENT_TRANSCRIPT_LINE_MAX is dropped whole; one of exactly
 * that length is read (the fuzz target's 4096-byte inputs cannot reach the first case). */
static void test_line_max(void) {
        AgentTranscript t = {};
        unsigned turn = 0;
        const char *phase = NULL;
        const char *head = "{\"ev\":\"model\",\"turn\":1,\"model\":\"m\",\"pad\":\"";
        const char *tail = "\"}";
        _cleanup_free_ char *line = malloc(AGENT_TRANSCRIPT_LINE_MAX + 2);
        g_assert_nonnull(line);

        for (size_t len = AGENT_TRANSCRIPT_LINE_MAX; len <= AGENT_TRANSCRIPT_LINE_MAX + 1; len++) {
                size_t pad = len - strlen(head) - strlen(tail);
                strcpy(line, head);
                memset(line + strlen(head), 'x', pad);
                strcpy(line + strlen(head) + pad, tail);
                g_assert_cmpuint(strlen(line), ==, len);
                g_assert_cmpint(agent_transcript_add_line(&t, line, len, &turn, &phase), ==, 0);
        }
        g_assert_cmpint(cJSON_GetArraySize(t.steps), ==, 1);
        g_assert_cmpuint(t.n_dropped, ==, 1);
        g_assert_cmpuint(t.turns, ==, 1);
        agent_transcript_done(&t);
}

static void test_files(void) {
        char *dir = test_tmpdir_new();
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        g_assert_cmpint(dfd, >=, 0);
        g_assert_cmpint(mkdirat(dfd, "queue", 0700), ==, 0);
        AgentTranscript t = { .turns = 3 };
        _cleanup_cjson_ cJSON *j = agent_transcript_to_json(&t), *back = NULL;
        g_assert_cmpint(agent_transcript_write(dfd, "t1", 1000, j), ==, 0);
        g_assert_cmpint(agent_transcript_write(dfd, "../x", 1000, j), ==, -EINVAL);
        g_assert_cmpint(agent_transcript_read(dfd, "t1", 1000, &back), ==, 0);
        g_assert_cmpint(cJSON_GetObjectItem(back, "turns")->valueint, ==, 3);
        g_assert_null(cJSON_GetObjectItem(back, "sender_uid"));     /* internal: not shown */
        /* The same id asked for another sender's task (an id reused after the first task's records
         * went): not served, whoever is asking. */
        cJSON *other = NULL;
        g_assert_cmpint(agent_transcript_read(dfd, "t1", 1001, &other), ==, -EACCES);
        g_assert_null(other);
        /* A file without the sender (an older version's) is not believed. */
        int fd = openat(dfd, AGENT_TRANSCRIPT_DIR "/t3.json", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(write(fd, "{\"turns\":1}", 11), ==, 11);
        safe_close(fd);
        g_assert_cmpint(agent_transcript_read(dfd, "t3", 1000, &other), ==, -EACCES);
        struct stat st;
        g_assert_cmpint(fstatat(dfd, AGENT_TRANSCRIPT_DIR "/t1.json", &st, 0), ==, 0);
        g_assert_cmpint(st.st_mode & 0777, ==, 0600);
        g_assert_cmpint(fstatat(dfd, AGENT_TRANSCRIPT_DIR, &st, 0), ==, 0);
        g_assert_cmpint(st.st_mode & 0777, ==, 0700);
        /* A file others may write is not believed. */
        g_assert_cmpint(fchmodat(dfd, AGENT_TRANSCRIPT_DIR "/t1.json", 0666, 0), ==, 0);
        cJSON *x = NULL;
        g_assert_cmpint(agent_transcript_read(dfd, "t1", 1000, &x), ==, -EPERM);
        g_assert_cmpint(agent_transcript_read(dfd, "t2", 1000, &x), ==, -ENOENT);
        safe_close(dfd);
        test_tmpdir_remove(dir);
        free(dir);
}

/* A step too long for one line is sent marked, never left out; the service keeps the mark. */
static void test_step_line(void) {
        AgentTranscript t = {};
        unsigned turn = 0;
        const char *phase = NULL;

        /* A normal step: its JSON and a newline, unchanged. */
        _cleanup_cjson_ cJSON *small = cJSON_Parse("{\"ev\":\"tool\",\"turn\":1,\"tool\":\"exec\",\"args\":\"ls\"}");
        _cleanup_free_ char *l1 = agent_transcript_step_line(small);
        g_assert_cmpstr(l1, ==, "{\"ev\":\"tool\",\"turn\":1,\"tool\":\"exec\",\"args\":\"ls\"}\n");

        /* A tool name of 5000 "é" and 512 bytes of control characters (6 bytes each in JSON). */
        GString *name = g_string_new(NULL);
        for (unsigned i = 0; i < 5000; i++)
                g_string_append(name, "\xc3\xa9");
        char args[AGENT_TRANSCRIPT_ARGS_MAX + 1];
        memset(args, 1, AGENT_TRANSCRIPT_ARGS_MAX);
        args[AGENT_TRANSCRIPT_ARGS_MAX] = 0;
        _cleanup_cjson_ cJSON *big = cJSON_CreateObject();
        cJSON_AddStringToObject(big, "ev", "tool");
        cJSON_AddNumberToObject(big, "turn", 2);
        cJSON_AddStringToObject(big, "tool", name->str);
        cJSON_AddStringToObject(big, "args", args);
        cJSON_AddNumberToObject(big, "args_bytes", 9999);
        cJSON_AddNumberToObject(big, "bytes", 7);
        g_string_free(name, true);
        _cleanup_free_ char *l2 = agent_transcript_step_line(big);
        g_assert_nonnull(l2);
        size_t n = strlen(l2);
        g_assert_cmpuint(n, <=, AGENT_TRANSCRIPT_LINE_MAX);
        g_assert_true(con_utf8_valid(l2, n));
        g_assert_cmpint(l2[n - 1], ==, '\n');

        g_assert_cmpint(agent_transcript_add_line(&t, l2, n - 1, &turn, &phase), ==, 0);
        g_assert_cmpuint(t.n_dropped, ==, 0);
        g_assert_cmpuint(t.tool_calls, ==, 1);
        const cJSON *step = cJSON_GetArrayItem(t.steps, 0);
        g_assert_true(cJSON_IsTrue(cJSON_GetObjectItem(step, "truncated")));
        g_assert_null(cJSON_GetObjectItem(step, "args"));
        g_assert_cmpint(cJSON_GetObjectItem(step, "args_bytes")->valueint, ==, 9999);
        const char *tool = cJSON_GetObjectItem(step, "tool")->valuestring;
        g_assert_cmpuint(strlen(tool), ==, AGENT_TRANSCRIPT_NAME_MAX);   /* 32 whole "é" */
        g_assert_true(con_utf8_valid(tool, strlen(tool)));
        agent_transcript_done(&t);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/agent-transcript/lines", test_lines);
        g_test_add_func("/agent-transcript/text-and-bounds", test_text_and_bounds);
        g_test_add_func("/agent-transcript/line-max", test_line_max);
        g_test_add_func("/agent-transcript/files", test_files);
        g_test_add_func("/agent-transcript/step-line", test_step_line);
        return con_test_run();
}
