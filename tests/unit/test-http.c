/* SPDX-License-Identifier: MIT */
/* con_http against the scripted fake LLM server (tests/fake-llm), on 127.0.0.1. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

#include "json-util.h"
#include "http.h"
#include "llm.h"
#include "strv.h"
#include "test-util.h"
#include "time-util.h"

#ifndef CON_FAKE_LLM_PATH
#error "CON_FAKE_LLM_PATH must point to the con-fake-llm binary"
#endif


/* The fake server goes away with the test, even when the test aborts. */
static void child_setup(gpointer data) {
        (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
}

typedef struct Server {
        char *dir;
        char *log;
        GPid pid;
        unsigned port;
} Server;

static void server_start(Server *s, const char *script) {
        _cleanup_free_ char *script_path = NULL;
        GError *e = NULL;
        int out_fd = -1;
        char buf[32] = {};
        size_t n = 0;

        s->dir = test_tmpdir_new();
        script_path = g_build_filename(s->dir, "script.json", NULL);
        s->log = g_build_filename(s->dir, "requests.jsonl", NULL);
        test_write_file(script_path, script);
        char *argv[] = { (char *) CON_FAKE_LLM_PATH, (char *) "--script", script_path, (char *) "--log", s->log,
                         (char *) "--idle-timeout", (char *) "60", NULL };
        g_assert_true(g_spawn_async_with_pipes(NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD, child_setup, NULL, &s->pid,
                                               NULL, &out_fd, NULL, &e));
        g_assert_no_error(e);
        while (n < sizeof(buf) - 1) {
                ssize_t k = read(out_fd, buf + n, 1);
                g_assert_cmpint(k, ==, 1);
                if (buf[n] == '\n')
                        break;
                n++;
        }
        close(out_fd);
        s->port = (unsigned) strtoul(buf, NULL, 10);
        g_assert_cmpuint(s->port, >, 0);
}

static void server_stop(Server *s) {
        int status = 0;
        g_assert_cmpint(kill(s->pid, SIGTERM), ==, 0);
        g_assert_cmpint(waitpid(s->pid, &status, 0), ==, s->pid);
        g_spawn_close_pid(s->pid);
        /* It exits cleanly on SIGTERM. */
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 0);
        test_tmpdir_remove(s->dir);
        g_free(s->dir);
        g_free(s->log);
}

static char *server_url(const Server *s, const char *path) {
        return g_strdup_printf("http://127.0.0.1:%u%s", s->port, path);
}

/* The log lines as parsed JSON (an array). */
static cJSON *server_log(const Server *s) {
        _cleanup_free_ char *text = NULL;
        GError *e = NULL;
        cJSON *arr = cJSON_CreateArray();

        if (!g_file_get_contents(s->log, &text, NULL, &e)) {
                g_clear_error(&e);
                return arr;
        }
        _cleanup_strv_free_ char **lines = g_strsplit(text, "\n", -1);
        STRV_FOREACH(l, lines)
                if (**l) {
                        cJSON *j = cJSON_Parse(*l);
                        g_assert_nonnull(j);
                        cJSON_AddItemToArray(arr, j);
                }
        return arr;
}

static const cJSON *jget(const cJSON *root, const char *path) {
        _cleanup_free_ char *copy = g_strdup(path);
        const cJSON *j = root;
        char *save = NULL;
        for (char *k = strtok_r(copy, ".", &save); k && j; k = strtok_r(NULL, ".", &save))
                j = g_ascii_isdigit(*k) ? cJSON_GetArrayItem(j, atoi(k)) : cJSON_GetObjectItemCaseSensitive(j, k);
        return j;
}

static const char *jstr(const cJSON *root, const char *path) {
        const cJSON *j = jget(root, path);
        if (!cJSON_IsString(j))
                g_error("%s: not a string", path);
        return j->valuestring;
}

/* ---- running requests ---- */

typedef struct Result {
        bool called;
        int r;
        long status;
        char *body;
        size_t body_size;
        char *fake_header;
        bool has_retry_after;
        uint64_t retry_after_usec;
        sd_event *event;
        unsigned *pending;
} Result;

static void result_done(Result *res) {
        g_free(res->body);
        g_free(res->fake_header);
}

static void on_done(ConHttpSlot *slot, int r, ConHttpResponse *resp, void *userdata) {
        Result *res = userdata;
        g_assert_false(res->called);
        res->called = true;
        res->r = r;
        res->status = resp->status;
        res->body = TAKE_PTR(resp->body);   /* taking ownership is allowed */
        res->body_size = resp->body_size;
        res->fake_header = g_strdup(con_http_response_header(resp, "X-Fake"));
        res->has_retry_after = resp->has_retry_after;
        res->retry_after_usec = resp->retry_after_usec;
        if (r < 0)
                g_assert_nonnull(resp->error);
        if (res->pending && --*res->pending == 0)
                sd_event_exit(res->event, 0);
}

static int on_watchdog(sd_event_source *s, uint64_t usec, void *userdata) {
        g_error("event loop did not finish in time");
        return 0;
}

/* One request, run to completion. */
static void run_one(const Server *s, const char *path, char * const *headers, const char *body,
                    uint64_t timeout_usec, size_t max_bytes, Result *res) {
        _cleanup_(sd_event_unrefp) sd_event *ev = NULL;
        _cleanup_(con_http_freep) ConHttp *h = NULL;
        _cleanup_(con_http_slot_freep) ConHttpSlot *slot = NULL;
        _cleanup_free_ char *url = server_url(s, path);
        unsigned pending = 1;

        g_assert_cmpint(sd_event_new(&ev), >=, 0);
        g_assert_cmpint(sd_event_add_time_relative(ev, NULL, CLOCK_MONOTONIC, 30 * USEC_PER_SEC, 0, on_watchdog, NULL), >=, 0);
        g_assert_cmpint(con_http_new(ev, &h), ==, 0);
        res->event = ev;
        res->pending = &pending;
        g_assert_cmpint(con_http_request(h, url, headers, body, body ? strlen(body) : 0, timeout_usec, max_bytes,
                                         on_done, res, &slot), ==, 0);
        g_assert_cmpint(sd_event_loop(ev), ==, 0);
        g_assert_true(res->called);
}

static const char *const SCRIPT =
        "{\"rules\":["
        /* OpenAI wire: first a tool call, then (when the tool result came back) the final answer */
        "{\"path\":\"/v1/chat/completions\",\"match\":\"tool-output-42\",\"headers\":{\"X-Fake\":\"final\"},"
        " \"body\":{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"All done.\"},"
        "           \"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":4}}},"
        "{\"path\":\"/v1/chat/completions\",\"headers\":{\"X-Fake\":\"tool\"},"
        " \"body\":{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
        "   {\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"read_file\","
        "    \"arguments\":\"{\\\"path\\\":\\\"/etc/hostname\\\"}\"}}]},\"finish_reason\":\"tool_calls\"}]}},"
        /* Anthropic wire */
        "{\"path\":\"/v1/messages\",\"match\":\"tool-output-42\","
        " \"body\":{\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Bye.\"}],"
        "           \"stop_reason\":\"end_turn\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}},"
        "{\"path\":\"/429\",\"status\":429,\"headers\":{\"Retry-After\":\"3\"},"
        " \"body\":{\"error\":{\"message\":\"Rate limit exceeded\"}}},"
        "{\"path\":\"/429-date\",\"status\":429,\"headers\":{\"Retry-After\":\"Thu, 01 Jan 1970 00:00:00 GMT\"},\"body\":\"\"},"
        "{\"path\":\"/500\",\"status\":500,\"body\":{\"error\":{\"type\":\"api_error\",\"message\":\"boom\"}}},"
        "{\"path\":\"/hang\",\"behaviour\":\"hang\"},"
        "{\"path\":\"/slow\",\"behaviour\":\"slow\",\"delay_ms\":300,\"body\":\"slow-ok\"},"
        "{\"path\":\"/big\",\"behaviour\":\"oversize\",\"size\":2097152},"
        "{\"path\":\"/cut\",\"behaviour\":\"close-mid-body\",\"body\":\"0123456789abcdefghij\"},"
        "{\"path\":\"/malformed\",\"behaviour\":\"malformed\","
        " \"body\":{\"choices\":[{\"message\":{\"content\":\"hello there\"}}]}},"
        "{\"path\":\"/once\",\"times\":1,\"status\":503,\"body\":\"first\"},"
        "{\"path\":\"/once\",\"body\":\"second\"}"
        "]}";

static void test_openai_tool_loop(void) {
        Server s;
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *c = con_llm_conversation_new();
        _cleanup_strv_free_ char **headers = NULL;
        ConLlmParams p = { .model = "test/model", .max_tokens = 8192, .temperature = 0.7 };
        ConErrorDetail e = {};

        server_start(&s, SCRIPT);
        g_assert_cmpint(con_llm_build_headers(CON_LLM_WIRE_OPENAI, "sk-test", &headers), ==, 0);
        g_assert_cmpint(con_llm_conversation_set_system(c, "system prompt"), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_user(c, "what is the hostname?"), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_tool(c, "read_file", "Read a file", NULL, &e), ==, 0);

        /* turn 1: a tool call */
        _cleanup_free_ char *body1 = NULL;
        Result r1 = {};
        g_assert_cmpint(con_llm_build_request(CON_LLM_WIRE_OPENAI, c, &p, &body1, &e), ==, 0);
        run_one(&s, "/v1/chat/completions", headers, body1, 10 * USEC_PER_SEC, CON_LLM_RESPONSE_MAX, &r1);
        g_assert_cmpint(r1.r, ==, 0);
        g_assert_cmpint(r1.status, ==, 200);
        g_assert_cmpstr(r1.fake_header, ==, "tool");
        _cleanup_(con_llm_response_freep) ConLlmResponse *a1 = NULL;
        g_assert_cmpint(con_llm_parse_response(CON_LLM_WIRE_OPENAI, r1.body, r1.body_size, &a1, &e), ==, 0);
        g_assert_cmpint(a1->stop, ==, CON_LLM_STOP_TOOL_USE);
        g_assert_cmpint(a1->n_tool_calls, ==, 1);
        g_assert_cmpstr(a1->tool_calls[0].name, ==, "read_file");

        /* turn 2: the tool result goes back, the final answer comes */
        g_assert_cmpint(con_llm_conversation_add_response(c, a1), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_tool_result(c, "call_a", "tool-output-42", false), ==, 0);
        _cleanup_free_ char *body2 = NULL;
        Result r2 = {};
        g_assert_cmpint(con_llm_build_request(CON_LLM_WIRE_OPENAI, c, &p, &body2, &e), ==, 0);
        run_one(&s, "/v1/chat/completions", headers, body2, 10 * USEC_PER_SEC, CON_LLM_RESPONSE_MAX, &r2);
        g_assert_cmpint(r2.r, ==, 0);
        g_assert_cmpstr(r2.fake_header, ==, "final");
        _cleanup_(con_llm_response_freep) ConLlmResponse *a2 = NULL;
        g_assert_cmpint(con_llm_parse_response(CON_LLM_WIRE_OPENAI, r2.body, r2.body_size, &a2, &e), ==, 0);
        g_assert_cmpstr(a2->text, ==, "All done.");
        g_assert_cmpuint(a2->input_tokens, ==, 30);

        /* what the client sent */
        _cleanup_(cJSON_Deletep) cJSON *log = server_log(&s);
        g_assert_cmpint(cJSON_GetArraySize(log), ==, 2);
        g_assert_cmpstr(jstr(log, "0.method"), ==, "POST");
        g_assert_cmpstr(jstr(log, "0.headers.authorization"), ==, "Bearer sk-test");
        g_assert_null(jget(log, "0.headers.x-api-key"));
        g_assert_cmpstr(jstr(log, "0.headers.content-type"), ==, "application/json");
        g_assert_null(jget(log, "0.headers.expect"));
        g_assert_cmpstr(jstr(log, "0.body.model"), ==, "test/model");
        g_assert_cmpstr(jstr(log, "0.body.tool_choice"), ==, "auto");
        g_assert_cmpstr(jstr(log, "1.body.messages.3.role"), ==, "tool");
        g_assert_cmpstr(jstr(log, "1.body.messages.3.tool_call_id"), ==, "call_a");
        g_assert_cmpstr(jstr(log, "1.body.messages.3.content"), ==, "tool-output-42");
        g_assert_cmpstr(jstr(log, "1.body.messages.2.tool_calls.0.function.arguments"), ==, "{\"path\":\"/etc/hostname\"}");

        result_done(&r1);
        result_done(&r2);
        con_error_detail_done(&e);
        server_stop(&s);
}

static void test_anthropic(void) {
        Server s;
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *c = con_llm_conversation_new();
        _cleanup_strv_free_ char **headers = NULL;
        ConLlmParams p = { .model = "claude-test", .max_tokens = 1024, .temperature = -1 };
        ConLlmToolCall call = { .id = "toolu_1", .name = "exec", .arguments = "{\"command\":\"hostname\"}" };
        _cleanup_free_ char *body = NULL;
        Result res = {};

        server_start(&s, SCRIPT);
        g_assert_cmpint(con_llm_build_headers(CON_LLM_WIRE_ANTHROPIC, "ak-secret", &headers), ==, 0);
        g_assert_cmpint(con_llm_conversation_set_system(c, "sys"), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_user(c, "hi"), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_assistant(c, NULL, &call, 1), ==, 0);
        g_assert_cmpint(con_llm_conversation_add_tool_result(c, "toolu_1", "tool-output-42", false), ==, 0);
        g_assert_cmpint(con_llm_build_request(CON_LLM_WIRE_ANTHROPIC, c, &p, &body, NULL), ==, 0);
        run_one(&s, "/v1/messages", headers, body, 10 * USEC_PER_SEC, CON_LLM_RESPONSE_MAX, &res);
        g_assert_cmpint(res.r, ==, 0);
        g_assert_cmpint(res.status, ==, 200);
        _cleanup_(con_llm_response_freep) ConLlmResponse *a = NULL;
        g_assert_cmpint(con_llm_parse_response(CON_LLM_WIRE_ANTHROPIC, res.body, res.body_size, &a, NULL), ==, 0);
        g_assert_cmpstr(a->text, ==, "Bye.");

        _cleanup_(cJSON_Deletep) cJSON *log = server_log(&s);
        g_assert_cmpint(cJSON_GetArraySize(log), ==, 1);
        g_assert_cmpstr(jstr(log, "0.headers.x-api-key"), ==, "ak-secret");
        g_assert_cmpstr(jstr(log, "0.headers.anthropic-version"), ==, CON_LLM_ANTHROPIC_VERSION);
        g_assert_null(jget(log, "0.headers.authorization"));
        g_assert_cmpstr(jstr(log, "0.body.system"), ==, "sys");
        g_assert_cmpstr(jstr(log, "0.body.messages.2.content.0.type"), ==, "tool_result");
        g_assert_cmpstr(jstr(log, "0.body.messages.2.content.0.tool_use_id"), ==, "toolu_1");
        result_done(&res);
        server_stop(&s);
}

static void test_429_retry_after(void) {
        Server s;
        Result a = {}, b = {};
        uint64_t delay = 0;

        server_start(&s, SCRIPT);
        run_one(&s, "/429", NULL, "{}", 10 * USEC_PER_SEC, 4096, &a);
        g_assert_cmpint(a.r, ==, 0);
        g_assert_cmpint(a.status, ==, 429);
        g_assert_true(a.has_retry_after);
        g_assert_cmpuint(a.retry_after_usec, ==, 3 * USEC_PER_SEC);
        g_assert_cmpint(con_llm_retry_decide(a.status, a.r, a.has_retry_after, a.retry_after_usec, 0, &delay), ==, 1);
        g_assert_cmpuint(delay, ==, 3 * USEC_PER_SEC);

        run_one(&s, "/429-date", NULL, "{}", 10 * USEC_PER_SEC, 4096, &b);
        g_assert_cmpint(b.status, ==, 429);
        g_assert_true(b.has_retry_after);
        g_assert_cmpuint(b.retry_after_usec, ==, 0);   /* a date in the past */
        g_assert_cmpstr(b.body, ==, "");
        result_done(&a);
        result_done(&b);
        server_stop(&s);
}

static void test_500(void) {
        Server s;
        Result a = {}, b = {}, c = {};
        _cleanup_free_ char *msg = NULL;
        uint64_t delay;

        server_start(&s, SCRIPT);
        run_one(&s, "/500", NULL, NULL, 10 * USEC_PER_SEC, 4096, &a);
        g_assert_cmpint(a.r, ==, 0);
        g_assert_cmpint(a.status, ==, 500);
        g_assert_false(a.has_retry_after);
        g_assert_cmpint(con_llm_parse_error(a.body, a.body_size, &msg), ==, 0);
        g_assert_cmpstr(msg, ==, "api_error: boom");
        g_assert_cmpint(con_llm_retry_decide(a.status, a.r, false, 0, 0, &delay), ==, 1);

        /* times: 1, then the next rule */
        run_one(&s, "/once", NULL, NULL, 10 * USEC_PER_SEC, 4096, &b);
        run_one(&s, "/once", NULL, NULL, 10 * USEC_PER_SEC, 4096, &c);
        g_assert_cmpint(b.status, ==, 503);
        g_assert_cmpstr(b.body, ==, "first");
        g_assert_cmpint(c.status, ==, 200);
        g_assert_cmpstr(c.body, ==, "second");
        result_done(&a);
        result_done(&b);
        result_done(&c);

        /* no rule: 404 from the fake, logged with rule -1 */
        Result d = {};
        run_one(&s, "/nothing-here", NULL, NULL, 10 * USEC_PER_SEC, 4096, &d);
        g_assert_cmpint(d.status, ==, 404);
        _cleanup_(cJSON_Deletep) cJSON *log = server_log(&s);
        g_assert_cmpint(cJSON_GetArraySize(log), ==, 4);
        g_assert_cmpint((int) jget(log, "3.rule")->valuedouble, ==, -1);
        g_assert_cmpstr(jstr(log, "0.method"), ==, "GET");
        result_done(&d);
        server_stop(&s);
}

static void test_hang_timeout(void) {
        Server s;
        Result a = {};
        uint64_t t0;

        server_start(&s, SCRIPT);
        t0 = con_now(CLOCK_MONOTONIC);
        run_one(&s, "/hang", NULL, "{}", 500 * USEC_PER_MSEC, 4096, &a);
        g_assert_cmpint(a.r, ==, -ETIMEDOUT);
        g_assert_cmpint(a.status, ==, 0);
        g_assert_cmpuint(con_now(CLOCK_MONOTONIC) - t0, >=, 450 * USEC_PER_MSEC);
        g_assert_cmpuint(con_now(CLOCK_MONOTONIC) - t0, <, 5 * USEC_PER_SEC);
        result_done(&a);
        server_stop(&s);
}

static void test_slow(void) {
        Server s;
        Result a = {};
        uint64_t t0;

        server_start(&s, SCRIPT);
        t0 = con_now(CLOCK_MONOTONIC);
        run_one(&s, "/slow", NULL, NULL, 5 * USEC_PER_SEC, 4096, &a);
        g_assert_cmpint(a.r, ==, 0);
        g_assert_cmpstr(a.body, ==, "slow-ok");
        g_assert_cmpuint(con_now(CLOCK_MONOTONIC) - t0, >=, 290 * USEC_PER_MSEC);
        result_done(&a);
        server_stop(&s);
}

static void test_oversize(void) {
        Server s;
        Result a = {}, b = {};

        server_start(&s, SCRIPT);
        run_one(&s, "/big", NULL, NULL, 10 * USEC_PER_SEC, 1024 * 1024, &a);
        g_assert_cmpint(a.r, ==, -EFBIG);
        /* the same body under a larger cap arrives whole */
        run_one(&s, "/big", NULL, NULL, 10 * USEC_PER_SEC, 4 * 1024 * 1024, &b);
        g_assert_cmpint(b.r, ==, 0);
        g_assert_cmpuint(b.body_size, ==, 2097152);
        result_done(&a);
        result_done(&b);
        server_stop(&s);
}

static void test_cut_and_malformed(void) {
        Server s;
        Result a = {}, b = {};
        ConErrorDetail e = {};
        ConLlmResponse *resp = NULL;

        server_start(&s, SCRIPT);
        run_one(&s, "/cut", NULL, NULL, 10 * USEC_PER_SEC, 4096, &a);
        g_assert_cmpint(a.r, ==, -ECONNRESET);
        run_one(&s, "/malformed", NULL, NULL, 10 * USEC_PER_SEC, 4096, &b);
        g_assert_cmpint(b.r, ==, 0);
        g_assert_cmpint(con_llm_parse_response(CON_LLM_WIRE_OPENAI, b.body, b.body_size, &resp, &e), ==, -EBADMSG);
        g_assert_null(resp);
        g_assert_nonnull(strstr(e.message, "response is not valid JSON"));
        con_error_detail_done(&e);
        result_done(&a);
        result_done(&b);
        server_stop(&s);
}

/* ---- cancellation, concurrency, refusal, argument checks ---- */

typedef struct Cancel {
        ConHttpSlot **slot;
        sd_event *event;
} Cancel;

static int on_cancel(sd_event_source *src, uint64_t usec, void *userdata) {
        Cancel *c = userdata;
        *c->slot = con_http_slot_free(*c->slot);
        return 0;
}

static int on_exit_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        return sd_event_exit(userdata, 0);
}

static void test_cancel(void) {
        Server s;
        _cleanup_(sd_event_unrefp) sd_event *ev = NULL;
        _cleanup_(con_http_freep) ConHttp *h = NULL;
        ConHttpSlot *slot = NULL, *slot2 = NULL;
        _cleanup_free_ char *url = NULL;
        Result a = {}, b = {};
        Cancel cancel = { .slot = &slot };

        server_start(&s, SCRIPT);
        url = server_url(&s, "/hang");
        g_assert_cmpint(sd_event_new(&ev), >=, 0);
        g_assert_cmpint(con_http_new(ev, &h), ==, 0);
        g_assert_cmpint(con_http_request(h, url, NULL, "{}", 2, 0, 4096, on_done, &a, &slot), ==, 0);
        g_assert_true(con_http_slot_get_userdata(slot) == &a);
        /* a second request stays pending when the ConHttp goes away */
        g_assert_cmpint(con_http_request(h, url, NULL, NULL, 0, 0, 4096, on_done, &b, &slot2), ==, 0);
        g_assert_cmpint(sd_event_add_time_relative(ev, NULL, CLOCK_MONOTONIC, 200 * USEC_PER_MSEC, 1, on_cancel,
                                                   &cancel), >=, 0);
        g_assert_cmpint(sd_event_add_time_relative(ev, NULL, CLOCK_MONOTONIC, 600 * USEC_PER_MSEC, 1, on_exit_timer,
                                                   ev), >=, 0);
        g_assert_cmpint(sd_event_loop(ev), ==, 0);
        g_assert_null(slot);
        g_assert_false(a.called);
        g_assert_false(b.called);
        h = con_http_free(h);          /* cancels the second one */
        g_assert_false(b.called);
        con_http_slot_free(slot2);     /* the slot outlives its ConHttp */

        /* the server saw both requests */
        _cleanup_(cJSON_Deletep) cJSON *log = server_log(&s);
        g_assert_cmpint(cJSON_GetArraySize(log), ==, 2);
        server_stop(&s);
}

static void test_parallel_floating(void) {
        Server s;
        _cleanup_(sd_event_unrefp) sd_event *ev = NULL;
        _cleanup_(con_http_freep) ConHttp *h = NULL;
        _cleanup_free_ char *u1 = NULL, *u2 = NULL;
        Result a = {}, b = {};
        unsigned pending = 2;

        server_start(&s, SCRIPT);
        u1 = server_url(&s, "/slow");
        u2 = server_url(&s, "/500");
        g_assert_cmpint(sd_event_new(&ev), >=, 0);
        g_assert_cmpint(sd_event_add_time_relative(ev, NULL, CLOCK_MONOTONIC, 30 * USEC_PER_SEC, 0, on_watchdog, NULL), >=, 0);
        g_assert_cmpint(con_http_new(ev, &h), ==, 0);
        a = (Result) { .event = ev, .pending = &pending };
        b = (Result) { .event = ev, .pending = &pending };
        /* floating slots: owned by h */
        g_assert_cmpint(con_http_request(h, u1, NULL, NULL, 0, 5 * USEC_PER_SEC, 4096, on_done, &a, NULL), ==, 0);
        g_assert_cmpint(con_http_request(h, u2, NULL, NULL, 0, 5 * USEC_PER_SEC, 4096, on_done, &b, NULL), ==, 0);
        g_assert_cmpint(sd_event_loop(ev), ==, 0);
        g_assert_cmpint(a.status, ==, 200);
        g_assert_cmpint(b.status, ==, 500);
        result_done(&a);
        result_done(&b);
        server_stop(&s);
}

static void test_refused_and_args(void) {
        _cleanup_(sd_event_unrefp) sd_event *ev = NULL;
        _cleanup_(con_http_freep) ConHttp *h = NULL;
        _cleanup_free_ char *url = NULL;
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t sl = sizeof(sin);
        Result a = {};
        unsigned pending = 1;
        char *bad_headers[] = { (char *) "X-Ok: 1", (char *) "X-Evil: 1\r\nHost: other", NULL };
        char *no_colon[] = { (char *) "NoColon", NULL };

        /* a port nobody listens on */
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        g_assert_cmpint(bind(fd, (struct sockaddr *) &sin, sizeof(sin)), ==, 0);
        g_assert_cmpint(getsockname(fd, (struct sockaddr *) &sin, &sl), ==, 0);
        close(fd);
        url = g_strdup_printf("http://127.0.0.1:%u/", ntohs(sin.sin_port));

        g_assert_cmpint(sd_event_new(&ev), >=, 0);
        g_assert_cmpint(con_http_new(ev, &h), ==, 0);
        a = (Result) { .event = ev, .pending = &pending };
        g_assert_cmpint(con_http_request(h, url, NULL, NULL, 0, 5 * USEC_PER_SEC, 0, on_done, &a, NULL), ==, 0);
        g_assert_cmpint(sd_event_loop(ev), ==, 0);
        g_assert_cmpint(a.r, ==, -ECONNREFUSED);
        result_done(&a);

        g_assert_cmpint(con_http_request(h, "file:///etc/passwd", NULL, NULL, 0, 0, 0, on_done, &a, NULL), ==,
                        -EPROTONOSUPPORT);
        g_assert_cmpint(con_http_request(h, "ftp://127.0.0.1/", NULL, NULL, 0, 0, 0, on_done, &a, NULL), ==,
                        -EPROTONOSUPPORT);
        g_assert_cmpint(con_http_request(h, url, bad_headers, NULL, 0, 0, 0, on_done, &a, NULL), ==, -EINVAL);
        g_assert_cmpint(con_http_request(h, url, no_colon, NULL, 0, 0, 0, on_done, &a, NULL), ==, -EINVAL);
        g_assert_cmpint(con_http_request(h, "http://x/ y", NULL, NULL, 0, 0, 0, on_done, &a, NULL), ==, -EINVAL);
        g_assert_cmpint(con_http_request(h, url, NULL, NULL, 0, 0, 0, NULL, NULL, NULL), ==, -EINVAL);
}

/* Freeing the ConHttp from inside a completion callback must be safe. */
typedef struct FreeInCb {
        ConHttp *h;
        sd_event *event;
        bool called;
} FreeInCb;

static void on_done_free(ConHttpSlot *slot, int r, ConHttpResponse *resp, void *userdata) {
        FreeInCb *f = userdata;
        f->called = true;
        con_http_slot_free(slot);
        f->h = con_http_free(f->h);
        sd_event_exit(f->event, 0);
}

static void test_free_in_callback(void) {
        Server s;
        _cleanup_(sd_event_unrefp) sd_event *ev = NULL;
        _cleanup_free_ char *u1 = NULL, *u2 = NULL;
        FreeInCb f = {};
        Result other = {};
        ConHttpSlot *slot = NULL;

        server_start(&s, SCRIPT);
        u1 = server_url(&s, "/500");
        u2 = server_url(&s, "/hang");
        g_assert_cmpint(sd_event_new(&ev), >=, 0);
        g_assert_cmpint(sd_event_add_time_relative(ev, NULL, CLOCK_MONOTONIC, 30 * USEC_PER_SEC, 0, on_watchdog, NULL), >=, 0);
        g_assert_cmpint(con_http_new(ev, &f.h), ==, 0);
        f.event = ev;
        g_assert_cmpint(con_http_request(f.h, u2, NULL, NULL, 0, 0, 0, on_done, &other, NULL), ==, 0);
        g_assert_cmpint(con_http_request(f.h, u1, NULL, NULL, 0, 0, 0, on_done_free, &f, &slot), ==, 0);
        g_assert_cmpint(sd_event_loop(ev), ==, 0);
        g_assert_true(f.called);
        g_assert_null(f.h);
        g_assert_false(other.called);
        server_stop(&s);
}

/* A one-shot server thread that sends raw bytes as the reply (what the fake LLM cannot send). */
typedef struct RawServer {
        int fd;
        const char *reply;
        size_t len;
} RawServer;

static gpointer raw_server(gpointer data) {
        RawServer *s = data;
        char buf[4096];
        size_t got = 0;
        int c = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
        g_assert_cmpint(c, >=, 0);
        while (got < sizeof(buf) - 1 && !g_strstr_len(buf, (gssize) got, "\r\n\r\n")) {
                ssize_t k = read(c, buf + got, sizeof(buf) - 1 - got);
                g_assert_cmpint(k, >, 0);
                got += (size_t) k;
        }
        g_assert_cmpint(write(c, s->reply, s->len), ==, (ssize_t) s->len);
        shutdown(c, SHUT_WR);
        while (read(c, buf, sizeof(buf)) > 0)
                ;
        close(c);
        return NULL;
}

typedef struct RawResult {
        int r;
        char *retry_after, *x_a, *body;
        size_t n_headers;
        bool has_retry_after;
        sd_event *event;
} RawResult;

static void on_raw_done(ConHttpSlot *slot, int r, ConHttpResponse *resp, void *userdata) {
        RawResult *res = userdata;
        res->r = r;
        res->retry_after = g_strdup(con_http_response_header(resp, "Retry-After"));
        res->x_a = g_strdup(con_http_response_header(resp, "X-A"));
        res->has_retry_after = resp->has_retry_after;
        res->n_headers = strv_length(resp->headers);
        res->body = g_strdup(resp->body);
        sd_event_exit(res->event, 0);
}

/* A CR inside a header line becomes a space (RFC 9110 5.5), and the line that ends the header
 * block is no header, whatever follows its CR (it was kept as "\r"). Found by
 * fuzz-http-response. */
static void test_header_cr(void) {
        static const char reply[] = "HTTP/1.1 200 OK\r\nX-A: a\rb\r\nRetry-After: 7\r\n\r\0\0" "5\nok";
        _cleanup_(sd_event_unrefp) sd_event *ev = NULL;
        _cleanup_(con_http_freep) ConHttp *h = NULL;
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t sl = sizeof(sin);
        RawServer srv = { .reply = reply, .len = sizeof(reply) - 1 };
        RawResult res = { .r = 1 };

        srv.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(bind(srv.fd, (struct sockaddr *) &sin, sizeof(sin)), ==, 0);
        g_assert_cmpint(listen(srv.fd, 1), ==, 0);
        g_assert_cmpint(getsockname(srv.fd, (struct sockaddr *) &sin, &sl), ==, 0);
        GThread *t = g_thread_new("raw-server", raw_server, &srv);
        g_autofree char *url = g_strdup_printf("http://127.0.0.1:%u/", ntohs(sin.sin_port));

        g_assert_cmpint(sd_event_new(&ev), >=, 0);
        g_assert_cmpint(sd_event_add_time_relative(ev, NULL, CLOCK_MONOTONIC, 30 * USEC_PER_SEC, 0, on_watchdog, NULL), >=, 0);
        g_assert_cmpint(con_http_new(ev, &h), ==, 0);
        res.event = ev;
        g_assert_cmpint(con_http_request(h, url, NULL, NULL, 0, 10 * USEC_PER_SEC, 0, on_raw_done, &res, NULL), ==, 0);
        g_assert_cmpint(sd_event_loop(ev), ==, 0);
        g_thread_join(t);
        close(srv.fd);

        g_assert_cmpint(res.r, ==, 0);
        g_assert_cmpstr(res.x_a, ==, "a b");
        g_assert_cmpstr(res.retry_after, ==, "7");
        g_assert_true(res.has_retry_after);
        g_assert_cmpuint(res.n_headers, ==, 2);
        g_assert_cmpstr(res.body, ==, "ok");
        g_free(res.retry_after);
        g_free(res.x_a);
        g_free(res.body);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/http/openai-tool-loop", test_openai_tool_loop);
        g_test_add_func("/http/anthropic", test_anthropic);
        g_test_add_func("/http/429-retry-after", test_429_retry_after);
        g_test_add_func("/http/500", test_500);
        g_test_add_func("/http/hang-timeout", test_hang_timeout);
        g_test_add_func("/http/slow", test_slow);
        g_test_add_func("/http/oversize", test_oversize);
        g_test_add_func("/http/cut-and-malformed", test_cut_and_malformed);
        g_test_add_func("/http/cancel", test_cancel);
        g_test_add_func("/http/parallel-floating", test_parallel_floating);
        g_test_add_func("/http/refused-and-args", test_refused_and_args);
        g_test_add_func("/http/free-in-callback", test_free_in_callback);
        g_test_add_func("/http/header-cr", test_header_cr);
        return con_test_run();
}
