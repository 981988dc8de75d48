/* SPDX-License-Identifier: MIT */
/* The mesh's names and messages (services/meshd/mesh-util.c, docs/MULTIHOST.md). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "mesh-state.h"
#include "mesh-util.h"
#include "names.h"
#include "task.h"
#include "test-util.h"

static void test_names(void) {
        _cleanup_free_ char *agent = NULL, *host = NULL, *s = NULL;

        g_assert_true(con_mesh_target_valid("sysadmin@host-b"));
        g_assert_false(con_mesh_target_valid(NULL));
        /* The agent part's length cap (CON_AGENT_NAME_MAX, 29) holds without a copy too. */
        g_assert_true(con_mesh_target_valid("abcdefghijklmnopqrstuvwxyzabc@h"));
        g_assert_false(con_mesh_target_valid("abcdefghijklmnopqrstuvwxyzabcd@h"));
        g_assert_cmpint(con_mesh_target_split("sysadmin@host-b", &agent, &host), ==, 0);
        g_assert_cmpstr(agent, ==, "sysadmin");
        g_assert_cmpstr(host, ==, "host-b");
        const char *bad[] = { "sysadmin", "@host-b", "sysadmin@", "Sys@host-b", "sysadmin@Host", "root@host-b",
                              "a@b.c", "a@b@c", "a@b-", "" };
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                char *a = NULL, *h = NULL;
                g_assert_false(con_mesh_target_valid(bad[i]));
                g_assert_cmpint(con_mesh_target_split(bad[i], &a, &h), ==, -EINVAL);
                g_assert_null(a);
                g_assert_null(h);
        }
        g_assert_cmpint(mesh_subject(MESH_KIND_TASK, "host-b", "host-a", &s), ==, 0);
        g_assert_cmpstr(s, ==, "con.task.host-b.host-a");
        free(s);
        g_assert_cmpint(mesh_subject(MESH_KIND_RESULT, "a", "b", &s), ==, 0);
        g_assert_cmpstr(s, ==, "con.result.a.b");
        free(s);
        g_assert_cmpint(mesh_subject_filter(MESH_KIND_TASK, "host-b", &s), ==, 0);
        g_assert_cmpstr(s, ==, "con.task.host-b.*");
        free(s);
        /* stream names back to kind and host (GetStatus lists JetStream's streams) */
        MeshKind k = MESH_KIND_RESULT;
        char *h = NULL;
        g_assert_cmpint(mesh_stream_parse("con-task-host-b", &k, &h), ==, 0);
        g_assert_cmpint(k, ==, MESH_KIND_TASK);
        g_assert_cmpstr(h, ==, "host-b");
        free(h);
        g_assert_cmpint(mesh_stream_parse("con-result-a", &k, &h), ==, 0);
        g_assert_cmpint(k, ==, MESH_KIND_RESULT);
        g_assert_cmpstr(h, ==, "a");
        free(h);
        const char *not_ours[] = { "con-task-", "con-task-Host", "con-task-host-", "con-results-a", "orders",
                                   "con-task-a.b", "xcon-task-a", "" };
        for (size_t i = 0; i < G_N_ELEMENTS(not_ours); i++) {
                h = NULL;
                g_assert_cmpint(mesh_stream_parse(not_ours[i], &k, &h), ==, -EINVAL);
                g_assert_null(h);
        }
        g_assert_cmpint(mesh_stream(MESH_KIND_TASK, "host-b", &s), ==, 0);
        g_assert_cmpstr(s, ==, "con-task-host-b");
        free(s);
        s = NULL;
        /* Never a subject wildcard or a token separator. */
        g_assert_cmpint(mesh_subject(MESH_KIND_TASK, "*", "a", &s), ==, -EINVAL);
        g_assert_cmpint(mesh_subject(MESH_KIND_TASK, "a", ">", &s), ==, -EINVAL);
        g_assert_cmpint(mesh_subject(MESH_KIND_TASK, "a.b", "c", &s), ==, -EINVAL);
        g_assert_cmpint(mesh_subject_filter(MESH_KIND_TASK, "a.*", &s), ==, -EINVAL);
        g_assert_cmpint(mesh_stream(MESH_KIND_TASK, ">", &s), ==, -EINVAL);
        /* The sender's host, as the subject (the server's permissions) says. */
        const char *from = NULL;
        g_assert_cmpint(mesh_subject_sender(MESH_KIND_TASK, "host-b", "con.task.host-b.host-a", &from), ==, 0);
        g_assert_cmpstr(from, ==, "host-a");
        g_assert_cmpint(mesh_subject_sender(MESH_KIND_RESULT, "a", "con.result.a.b", &from), ==, 0);
        g_assert_cmpstr(from, ==, "b");
        const char *bad_subjects[] = { "con.task.host-b", "con.task.host-b.", "con.task.host-b.host-a.x",
                                       "con.result.host-b.host-a", "con.task.host-bb.host-a", "con.task.host-c.host-a",
                                       "con.task.host-b.*", "con.task.host-b.Host-A", "xcon.task.host-b.a", "" };
        for (size_t i = 0; i < G_N_ELEMENTS(bad_subjects); i++)
                g_assert_cmpint(mesh_subject_sender(MESH_KIND_TASK, "host-b", bad_subjects[i], &from), ==, -EBADMSG);
        g_assert_cmpint(mesh_subject_sender(MESH_KIND_TASK, "host-b", NULL, &from), ==, -EBADMSG);
        g_assert_null(s);
}

static void test_task(void) {
        MeshTask t = { .id = (char *) "t-1", .from = (char *) "alice@host-a", .origin = (char *) "host-a",
                       .agent = (char *) "sysadmin", .text = (char *) "héllo \"quoted\"\n{\"from\":\"root@x\"}" };
        _cleanup_free_ char *json = NULL;
        MeshTask back = {};

        g_assert_cmpint(mesh_task_to_json(&t, &json), ==, 0);
        g_assert_cmpint(mesh_task_from_json(json, strlen(json), &back), ==, 0);
        g_assert_cmpstr(back.id, ==, "t-1");
        g_assert_cmpstr(back.from, ==, "alice@host-a");
        g_assert_cmpstr(back.origin, ==, "host-a");
        g_assert_cmpstr(back.agent, ==, "sysadmin");
        g_assert_cmpstr(back.text, ==, t.text);
        g_assert_cmpint(back.priority, ==, 0);
        g_assert_cmpuint(back.deadline_usec, ==, 0);
        mesh_task_done(&back);
        g_clear_pointer(&json, free);

        /* Priority and deadline: written only when not the default, read back the same; a
         * message without them is priority 5, no deadline. */
        MeshTask pd = t;
        pd.priority = 7;
        pd.deadline_usec = UINT64_C(1796119200250000);        /* 2026-12-01T10:00:00.25Z */
        g_assert_cmpint(mesh_task_to_json(&pd, &json), ==, 0);
        g_assert_nonnull(strstr(json, "\"priority\":7"));
        g_assert_nonnull(strstr(json, "\"deadline\":\"2026-12-01T10:00:00.250000Z\""));
        g_assert_cmpint(mesh_task_from_json(json, strlen(json), &back), ==, 0);
        g_assert_cmpint(back.priority, ==, 7);
        g_assert_cmpuint(back.deadline_usec, ==, pd.deadline_usec);
        mesh_task_done(&back);
        g_clear_pointer(&json, free);
        pd.priority = CON_TASK_PRIORITY_DEFAULT;
        pd.deadline_usec = 0;
        g_assert_cmpint(mesh_task_to_json(&pd, &json), ==, 0);
        g_assert_null(strstr(json, "priority"));
        g_assert_null(strstr(json, "deadline"));
        g_clear_pointer(&json, free);
        const char *base = "{\"v\":1,\"id\":\"t\",\"from\":\"a@h\",\"origin\":\"h\",\"agent\":\"x\",\"text\":\"y\"";
        struct {
                const char *extra;
                int priority;
                uint64_t deadline;
        } good[] = {
                { "", 5, 0 },
                { ",\"priority\":0", 0, 0 },
                { ",\"priority\":9", 9, 0 },
                { ",\"deadline\":\"2026-12-01T11:00:00+01:00\"", 5, UINT64_C(1796119200000000) },
                { ",\"deadline\":\"1970-01-01t00:00:01.0000019z\"", 5, UINT64_C(1000001) },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(good); i++) {
                g_autofree char *j = g_strdup_printf("%s%s}", base, good[i].extra);
                MeshTask x = {};
                g_assert_cmpint(mesh_task_from_json(j, strlen(j), &x), ==, 0);
                g_assert_cmpint(x.priority, ==, good[i].priority);
                g_assert_cmpuint(x.deadline_usec, ==, good[i].deadline);
                mesh_task_done(&x);
        }
        /* Refused as a task file's would be (con_task_priority_valid, con_task_deadline_parse). */
        const char *bad_options[] = {
                ",\"priority\":10", ",\"priority\":-1", ",\"priority\":1.5", ",\"priority\":\"7\"",
                ",\"priority\":1e999", ",\"priority\":null", ",\"priority\":5,\"priority\":5",
                ",\"deadline\":\"tomorrow\"", ",\"deadline\":1796119200000000", ",\"deadline\":\"\"",
                ",\"deadline\":\"1970-01-01T00:00:00Z\"", ",\"deadline\":\"2026-02-30T10:00:00Z\"",
                ",\"deadline\":\"9999-12-31T23:59:59-01:00\"",      /* the year 10000 in UTC */
        };
        for (size_t i = 0; i < G_N_ELEMENTS(bad_options); i++) {
                g_autofree char *j = g_strdup_printf("%s%s}", base, bad_options[i]);
                MeshTask x = {};
                g_assert_cmpint(mesh_task_from_json(j, strlen(j), &x), ==, -EBADMSG);
                g_assert_null(x.id);
        }
        /* What Submit may send. */
        g_assert_true(mesh_deadline_valid(0));
        g_assert_true(mesh_deadline_valid(USEC_PER_SEC));
        g_assert_true(mesh_deadline_valid(UINT64_C(253402300799999999)));     /* 9999-12-31T23:59:59.999999Z */
        g_assert_false(mesh_deadline_valid(1));
        g_assert_false(mesh_deadline_valid(UINT64_C(253402300800000000)));
        g_assert_false(mesh_deadline_valid(UINT64_MAX));
        MeshTask wrong = t;
        wrong.priority = 10;
        g_assert_cmpint(mesh_task_to_json(&wrong, &json), ==, -EINVAL);
        wrong = t;
        wrong.deadline_usec = 1;
        g_assert_cmpint(mesh_task_to_json(&wrong, &json), ==, -EINVAL);

        /* The sender's host must be the origin; every field valid. */
        wrong = t;
        wrong.from = (char *) "alice@host-c";
        g_assert_cmpint(mesh_task_to_json(&wrong, &json), ==, -EINVAL);
        wrong = t;
        wrong.text = (char *) " \n";
        g_assert_cmpint(mesh_task_to_json(&wrong, &json), ==, -EINVAL);

        const char *bad[] = {
                "",
                "[]",
                "{\"v\":1,\"id\":\"t\",\"from\":\"a@h\",\"origin\":\"h\",\"agent\":\"x\"}",                    /* no text */
                "{\"v\":2,\"id\":\"t\",\"from\":\"a@h\",\"origin\":\"h\",\"agent\":\"x\",\"text\":\"y\"}",      /* version */
                "{\"v\":1,\"id\":\"t\",\"from\":\"a@h\",\"origin\":\"g\",\"agent\":\"x\",\"text\":\"y\"}",      /* host */
                "{\"v\":1,\"id\":\"t\",\"from\":\"a@h\",\"origin\":\"h\",\"agent\":\"x\",\"text\":\"y\",\"z\":1}", /* key */
                "{\"v\":1,\"id\":\"t\",\"id\":\"u\",\"from\":\"a@h\",\"origin\":\"h\",\"agent\":\"x\",\"text\":\"y\"}",
                "{\"v\":1,\"id\":\"../t\",\"from\":\"a@h\",\"origin\":\"h\",\"agent\":\"x\",\"text\":\"y\"}",
                "{\"v\":1,\"id\":\"t\",\"from\":\"A@h\",\"origin\":\"h\",\"agent\":\"x\",\"text\":\"y\"}",
                "{\"v\":1,\"id\":\"t\",\"from\":\"a@h\",\"origin\":\"h\",\"agent\":\"root\",\"text\":\"y\"}",
                "{\"v\":1,\"id\":\"t\",\"from\":\"a@h\",\"origin\":\"h\",\"agent\":\"x\",\"text\":7}",
        };
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                MeshTask x = {};
                g_assert_cmpint(mesh_task_from_json(bad[i], strlen(bad[i]), &x), ==, -EBADMSG);
                g_assert_null(x.id);
        }
        const char nul[] = "{\"v\":1,\"id\":\"t\",\"from\":\"a@h\",\"origin\":\"h\",\"agent\":\"x\",\"text\":\"y\\u0000z\"}";
        MeshTask x = {};
        int r = mesh_task_from_json(nul, strlen(nul), &x);
        if (r == 0) {   /* cJSON stops at the NUL: the text is what precedes it */
                g_assert_cmpstr(x.text, ==, "y");
                mesh_task_done(&x);
        }
}

static void test_result(void) {
        MeshResult res = { .id = (char *) "t-1", .host = (char *) "host-b", .agent = (char *) "sysadmin",
                           .from = (char *) "alice@host-a", .status = (char *) "completed", .text = (char *) "",
                           .truncated = true, .size = 3000000 };
        _cleanup_free_ char *json = NULL;
        MeshResult back = {};

        g_assert_cmpint(mesh_result_to_json(&res, &json), ==, 0);
        g_assert_cmpint(mesh_result_from_json(json, strlen(json), &back), ==, 0);
        g_assert_cmpstr(back.status, ==, "completed");
        g_assert_cmpstr(back.text, ==, "");
        g_assert_true(back.truncated);
        g_assert_false(back.replaced);
        g_assert_cmpuint(back.size, ==, 3000000);
        mesh_result_done(&back);

        res.status = (char *) "done";   /* only the A2A names travel */
        g_assert_cmpint(mesh_result_to_json(&res, &json), ==, -EINVAL);
        const char *bad = "{\"v\":1,\"id\":\"t\",\"host\":\"h\",\"agent\":\"x\",\"from\":\"a@g\",\"status\":\"completed\","
                          "\"text\":\"\",\"truncated\":false,\"replaced\":false,\"size\":-1}";
        g_assert_cmpint(mesh_result_from_json(bad, strlen(bad), &back), ==, -EBADMSG);
}

static void test_state(void) {
        _cleanup_free_ char *json = NULL, *subject = NULL;
        MeshState st = { .id = (char *) "t-1", .host = (char *) "host-b", .agent = (char *) "sysadmin",
                         .from = (char *) "alice@host-a", .state = (char *) "accepted" };
        MeshState back = {};

        _cleanup_free_ char *origin = NULL, *publisher = NULL, *id = NULL;
        g_assert_cmpint(mesh_state_subject("host-a", "host-b", "t-1", &subject), ==, 0);
        g_assert_cmpstr(subject, ==, "con.state.host-a.host-b.t-1");
        free(subject);
        /* A task id's dots are one token's tildes, and come back. */
        g_assert_cmpint(mesh_state_subject("host-a", "host-b", "a.b..c.", &subject), ==, -EINVAL);
        g_assert_cmpint(mesh_state_subject("host-a", "host-b", "a.b.c", &subject), ==, 0);
        g_assert_cmpstr(subject, ==, "con.state.host-a.host-b.a~b~c");
        g_assert_cmpint(mesh_state_subject_parse(subject, &origin, &publisher, &id), ==, 0);
        g_assert_cmpstr(origin, ==, "host-a");
        g_assert_cmpstr(publisher, ==, "host-b");
        g_assert_cmpstr(id, ==, "a.b.c");
        free(subject);
        subject = NULL;
        g_assert_cmpint(mesh_state_subject("Host", "b", "t", &subject), ==, -EINVAL);
        g_assert_cmpint(mesh_state_subject("a", "B", "t", &subject), ==, -EINVAL);
        g_assert_cmpint(mesh_state_subject("a", "b", "t~1", &subject), ==, -EINVAL);
        g_assert_cmpint(mesh_state_subject("a", "b", "../t", &subject), ==, -EINVAL);
        const char *bad_subjects[] = {
                "con.state.host-a.host-b", "con.state.host-a.host-b.", "con.state.host-a.host-b.t.x",
                "con.state.host-a..t", "con.state..host-b.t", "con.task.host-a.host-b.t", "con.state.Host.b.t",
                "con.state.a.b.~t", "con.state.a.b.t*", "con.state.a.b.>", "",
        };
        for (size_t i = 0; i < G_N_ELEMENTS(bad_subjects); i++) {
                char *o = NULL, *p = NULL, *t = NULL;
                g_assert_cmpint(mesh_state_subject_parse(bad_subjects[i], &o, &p, &t), ==, -EBADMSG);
                g_assert_null(o);
        }
        g_assert_cmpint(mesh_state_to_json(&st, &json), ==, 0);
        g_assert_cmpstr(json, ==, "{\"v\":1,\"id\":\"t-1\",\"host\":\"host-b\",\"agent\":\"sysadmin\","
                        "\"from\":\"alice@host-a\",\"state\":\"accepted\"}");
        g_assert_cmpint(mesh_state_from_json(json, strlen(json), &back), ==, 0);
        g_assert_cmpstr(back.state, ==, "accepted");
        g_assert_cmpstr(back.from, ==, "alice@host-a");
        mesh_state_done(&back);

        free(json);
        json = NULL;
        st.state = (char *) "completed";        /* the end too (no text) */
        g_assert_cmpint(mesh_state_to_json(&st, &json), ==, 0);
        free(json);
        json = NULL;
        st.state = (char *) "done";
        g_assert_cmpint(mesh_state_to_json(&st, &json), ==, -EINVAL);
        const char *bad[] = {
                "{\"v\":1,\"id\":\"t\",\"host\":\"b\",\"agent\":\"sysadmin\",\"from\":\"a@a\",\"state\":\"done\"}",
                "{\"v\":1,\"id\":\"t\",\"host\":\"b\",\"agent\":\"sysadmin\",\"from\":\"a@a\",\"state\":\"working\","
                "\"text\":\"secret\"}",
                "{\"v\":2,\"id\":\"t\",\"host\":\"b\",\"agent\":\"sysadmin\",\"from\":\"a@a\",\"state\":\"working\"}",
                "{\"v\":1,\"id\":\"t\",\"host\":\"b\",\"agent\":\"sysadmin\",\"state\":\"working\"}",
                "{\"v\":1,\"id\":\"../t\",\"host\":\"b\",\"agent\":\"sysadmin\",\"from\":\"a@a\",\"state\":\"working\"}",
                "[]", "",
        };
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                MeshState m = {};
                g_assert_cmpint(mesh_state_from_json(bad[i], strlen(bad[i]), &m), ==, -EBADMSG);
                g_assert_null(m.id);
        }
        const char *ok = "{\"v\":1,\"id\":\"t\",\"host\":\"b\",\"agent\":\"sysadmin\",\"from\":\"a@a\",\"state\":\"working\"}";
        g_assert_cmpint(mesh_state_from_json(ok, strlen(ok), &back), ==, 0);
        g_assert_cmpstr(back.state, ==, "working");
        mesh_state_done(&back);
}

static void test_cancel(void) {
        _cleanup_free_ char *subject = NULL, *all = NULL, *json = NULL;

        g_assert_cmpint(mesh_cancel_subject("host-b", "host-a", &subject), ==, 0);
        g_assert_cmpstr(subject, ==, "con.cancel.host-b.host-a");
        g_assert_cmpint(mesh_cancel_subject("host-b", NULL, &all), ==, 0);
        g_assert_cmpstr(all, ==, "con.cancel.host-b.*");
        g_assert_cmpint(mesh_cancel_subject("host-b", "Host-A", &json), ==, -EINVAL);
        g_assert_cmpstr(mesh_cancel_subject_host("con.cancel.host-b.host-a", "host-b"), ==, "host-a");
        g_assert_null(mesh_cancel_subject_host("con.cancel.host-c.host-a", "host-b"));
        g_assert_null(mesh_cancel_subject_host("con.state.host-b.host-a", "host-b"));
        g_assert_null(mesh_cancel_subject_host("con.cancel.host-b.host-a.x", "host-b"));
        g_assert_null(mesh_cancel_subject_host("con.cancel.host-b", "host-b"));

        MeshCancel c = { .id = (char *) "t-1", .agent = (char *) "sysadmin", .from = (char *) "alice@host-a",
                         .by = (char *) "root@host-a" }, back = {};
        g_assert_cmpint(mesh_cancel_to_json(&c, &json), ==, 0);
        g_assert_cmpint(mesh_cancel_from_json(json, strlen(json), &back), ==, 0);
        g_assert_cmpstr(back.id, ==, "t-1");
        g_assert_cmpstr(back.agent, ==, "sysadmin");
        g_assert_cmpstr(back.from, ==, "alice@host-a");
        g_assert_cmpstr(back.by, ==, "root@host-a");
        g_assert_false(back.resend);
        g_assert_null(strstr(json, "resend"));
        mesh_cancel_done(&back);
        g_clear_pointer(&json, free);
        MeshCancel wrong = c;
        wrong.by = (char *) "root@host-b";     /* from and by of one host */
        g_assert_cmpint(mesh_cancel_to_json(&wrong, &json), ==, -EINVAL);

        /* A request to send the result again: "resend": true, by the task's sender. */
        MeshCancel ask = { .id = (char *) "t-1", .agent = (char *) "sysadmin", .from = (char *) "alice@host-a",
                           .by = (char *) "alice@host-a", .resend = true };
        g_assert_cmpint(mesh_cancel_to_json(&ask, &json), ==, 0);
        g_assert_cmpstr(json, ==, "{\"v\":1,\"id\":\"t-1\",\"agent\":\"sysadmin\",\"from\":\"alice@host-a\","
                        "\"by\":\"alice@host-a\",\"resend\":true}");
        g_assert_cmpint(mesh_cancel_from_json(json, strlen(json), &back), ==, 0);
        g_assert_true(back.resend);
        g_assert_cmpstr(back.from, ==, "alice@host-a");
        g_assert_cmpstr(back.by, ==, "alice@host-a");
        mesh_cancel_done(&back);
        g_clear_pointer(&json, free);
        ask.by = (char *) "root@host-a";        /* asked by another than the sender: not one */
        g_assert_cmpint(mesh_cancel_to_json(&ask, &json), ==, -EINVAL);

        const char *bad[] = {
                "{\"v\":1,\"id\":\"t\",\"agent\":\"x\",\"from\":\"a@h\"}",
                "{\"v\":1,\"id\":\"t\",\"agent\":\"x\",\"from\":\"a@h\",\"by\":\"a@g\"}",
                "{\"v\":1,\"id\":\"t\",\"agent\":\"x\",\"from\":\"a@h\",\"by\":\"a@h\",\"text\":\"y\"}",
                "{\"v\":2,\"id\":\"t\",\"agent\":\"x\",\"from\":\"a@h\",\"by\":\"a@h\"}",
                "{\"v\":1,\"id\":\"../t\",\"agent\":\"x\",\"from\":\"a@h\",\"by\":\"a@h\"}",
                "{\"v\":1,\"id\":\"t\",\"agent\":\"root\",\"from\":\"a@h\",\"by\":\"a@h\"}",
                "{\"v\":1,\"id\":\"t\",\"agent\":\"x\",\"from\":\"a@h\",\"by\":\"a@h\",\"by\":\"a@h\"}",
                "{\"v\":1,\"id\":\"t\",\"agent\":\"x\",\"from\":\"a@h\",\"by\":7}",
                "{\"v\":1,\"id\":\"t\",\"agent\":\"x\",\"from\":\"a@h\",\"by\":\"a@h\",\"resend\":false}",
                "{\"v\":1,\"id\":\"t\",\"agent\":\"x\",\"from\":\"a@h\",\"by\":\"a@h\",\"resend\":1}",
                "{\"v\":1,\"id\":\"t\",\"agent\":\"x\",\"from\":\"a@h\",\"by\":\"a@h\",\"resend\":\"true\"}",
                "{\"v\":1,\"id\":\"t\",\"agent\":\"x\",\"from\":\"a@h\",\"by\":\"root@h\",\"resend\":true}",
                "{\"v\":1,\"id\":\"t\",\"agent\":\"x\",\"from\":\"a@h\",\"by\":\"a@h\",\"resend\":true,\"resend\":true}",
        };
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                MeshCancel x = {};
                g_assert_cmpint(mesh_cancel_from_json(bad[i], strlen(bad[i]), &x), ==, -EBADMSG);
                g_assert_null(x.id);
        }

        /* Only the sender, or root of the sender's host. */
        g_assert_true(mesh_cancel_allowed("alice@host-a", "alice@host-a"));
        g_assert_true(mesh_cancel_allowed("alice@host-a", "root@host-a"));
        g_assert_false(mesh_cancel_allowed("alice@host-a", "bob@host-a"));
        g_assert_false(mesh_cancel_allowed("alice@host-a", "root@host-b"));
        g_assert_false(mesh_cancel_allowed("alice@host-a", "alice@host-b"));
        g_assert_false(mesh_cancel_allowed("alice@host-a", "rooted@host-a"));
        g_assert_false(mesh_cancel_allowed("alice@host-a", "root@host-ab"));
        g_assert_false(mesh_cancel_allowed(NULL, "root@host-a"));
}

static void test_state_check(void) {
        MeshState st = { .id = (char *) "t.1", .host = (char *) "host-b", .agent = (char *) "sysadmin",
                         .from = (char *) "alice@host-a", .state = (char *) "working" };
        const struct {
                const char *subject, *state, *host;
                int r;
                const char *publisher;
        } cases[] = {
                { "con.state.host-a.host-b.t~1", "working", "host-b", 0, NULL },
                { "con.state.host-a.host-b.t~1", "accepted", "host-b", 0, NULL },
                { "con.state.host-a.host-b.t~1", "completed", "host-b", 0, NULL },
                { "con.state.host-a.host-a.t~1", "submitted", "host-b", 0, NULL },
                /* The origin says only submitted, the host that runs it everything else. */
                { "con.state.host-a.host-a.t~1", "working", "host-b", -EPERM, "host-a" },
                { "con.state.host-a.host-b.t~1", "submitted", "host-b", -EPERM, "host-b" },
                /* A third host says nothing about the pair's task. */
                { "con.state.host-a.host-c.t~1", "working", "host-b", -EPERM, "host-c" },
                /* The payload's host is not the publisher's (and the publisher is not the origin). */
                { "con.state.host-a.host-b.t~1", "working", "host-c", -EPERM, "host-b" },
                /* Another task's subject; another origin than the sender's host. */
                { "con.state.host-a.host-b.t~2", "working", "host-b", -EPERM, "host-b" },
                { "con.state.host-c.host-b.t~1", "working", "host-b", -EPERM, "host-b" },
                /* A host does not send to itself. */
                { "con.state.host-a.host-a.t~1", "working", "host-a", -EPERM, "host-a" },
                { "con.state.host-a.host-b", "working", "host-b", -EBADMSG, NULL },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                _cleanup_free_ char *publisher = NULL;
                const char *why = NULL;
                st.state = (char *) cases[i].state;
                st.host = (char *) cases[i].host;
                g_assert_cmpint(mesh_state_check(cases[i].subject, &st, &publisher, &why), ==, cases[i].r);
                g_assert_cmpstr(publisher, ==, cases[i].publisher);
                g_assert_true((why != NULL) == (cases[i].r == -EPERM));
        }
        g_assert_cmpint(mesh_state_rank("submitted"), ==, 0);
        g_assert_cmpint(mesh_state_rank("working"), ==, 2);
        g_assert_cmpint(mesh_state_rank("canceled"), ==, 3);
        g_assert_cmpint(mesh_state_rank("queued"), ==, -1);
        g_assert_cmpint(mesh_state_rank(NULL), ==, -1);
}

static void test_state_table(void) {
        MeshStateTable t = { .max = 3 };
        MeshState st = { .id = (char *) "t-1", .host = (char *) "host-b", .agent = (char *) "sysadmin",
                         .from = (char *) "alice@host-a", .state = (char *) "working" };
        g_assert_cmpint(mesh_state_table_apply(&t, &st, 200), ==, 1);
        /* Read again, or an older event after it: nothing changes but the first time seen. */
        g_assert_cmpint(mesh_state_table_apply(&t, &st, 300), ==, 0);
        st.state = (char *) "accepted";
        g_assert_cmpint(mesh_state_table_apply(&t, &st, 250), ==, 0);
        st.state = (char *) "submitted";
        g_assert_cmpint(mesh_state_table_apply(&t, &st, 100), ==, 1);
        const MeshStateEntry *e = mesh_state_table_find(&t, "t-1", "host-b", "sysadmin", "alice@host-a");
        g_assert_nonnull(e);
        g_assert_cmpstr(e->state, ==, "working");
        g_assert_cmpuint(e->since_usec, ==, 100);
        g_assert_cmpuint(e->updated_usec, ==, 200);
        /* The end is final: another end does not replace it. */
        st.state = (char *) "failed";
        g_assert_cmpint(mesh_state_table_apply(&t, &st, 400), ==, 1);
        st.state = (char *) "completed";
        g_assert_cmpint(mesh_state_table_apply(&t, &st, 500), ==, 0);
        g_assert_cmpstr(e->state, ==, "failed");
        g_assert_cmpuint(e->updated_usec, ==, 400);
        g_assert_cmpuint(t.n, ==, 1);
        /* Another claim about the same id (another sender, agent or host) is another entry. */
        st.from = (char *) "bob@host-a";
        g_assert_cmpint(mesh_state_table_apply(&t, &st, 600), ==, 1);
        st.host = (char *) "host-c";
        g_assert_cmpint(mesh_state_table_apply(&t, &st, 700), ==, 1);
        g_assert_cmpuint(t.n, ==, 3);
        /* Bounded: the oldest goes. */
        st.id = (char *) "t-2";
        g_assert_cmpint(mesh_state_table_apply(&t, &st, 800), ==, 1);
        g_assert_cmpuint(t.n, ==, 3);
        g_assert_null(mesh_state_table_find(&t, "t-1", "host-b", "sysadmin", "alice@host-a"));
        g_assert_nonnull(mesh_state_table_find(&t, "t-2", "host-c", "sysadmin", "bob@host-a"));
        st.state = (char *) "nonsense";
        g_assert_cmpint(mesh_state_table_apply(&t, &st, 900), ==, 0);
        mesh_state_table_done(&t);
        g_assert_cmpuint(t.n, ==, 0);
        g_assert_cmpuint(t.max, ==, 3);
}

static void apply_state(MeshStateTable *t, const char *id, const char *host, const char *from, const char *state,
                        uint64_t when) {
        MeshState st = { .id = (char *) id, .host = (char *) host, .agent = (char *) "sysadmin",
                         .from = (char *) from, .state = (char *) state };
        g_assert_cmpint(mesh_state_table_apply(t, &st, when), ==, 1);
}

/* Fair per publishing host: a host flooding the full table pushes out only its own rows. */
static void test_state_table_fair(void) {
        MeshStateTable t = { .max = 10 };
        char id[32];
        /* host-a's tasks: 3 to host-b (submitted, said by host-a), 1 to host-c that host-c's event
         * was read of first (charged to host-c until host-a's submitted). */
        for (int i = 0; i < 3; i++) {
                snprintf(id, sizeof(id), "a-%d", i);
                apply_state(&t, id, "host-b", "alice@host-a", "submitted", 100 + i);
        }
        apply_state(&t, "a-c", "host-c", "alice@host-a", "working", 110);
        g_assert_cmpuint(mesh_state_table_owned(&t, "host-a"), ==, 3);
        g_assert_cmpuint(mesh_state_table_owned(&t, "host-c"), ==, 1);
        MeshState st = { .id = (char *) "a-c", .host = (char *) "host-c", .agent = (char *) "sysadmin",
                         .from = (char *) "alice@host-a", .state = (char *) "submitted" };
        g_assert_cmpint(mesh_state_table_apply(&t, &st, 120), ==, 0);
        g_assert_cmpuint(mesh_state_table_owned(&t, "host-a"), ==, 4);
        g_assert_cmpuint(mesh_state_table_owned(&t, "host-c"), ==, 0);
        g_assert_cmpuint(t.n_owners, ==, 1);
        /* host-b says how host-a's tasks go: still host-a's rows. */
        st = (MeshState) { .id = (char *) "a-0", .host = (char *) "host-b", .agent = (char *) "sysadmin",
                           .from = (char *) "alice@host-a", .state = (char *) "working" };
        g_assert_cmpint(mesh_state_table_apply(&t, &st, 130), ==, 1);
        g_assert_cmpuint(mesh_state_table_owned(&t, "host-a"), ==, 4);
        /* host-c's one task to host-b. */
        apply_state(&t, "c-0", "host-b", "carol@host-c", "submitted", 140);
        /* host-b floods: 1000 tasks it claims to run for host-a's users and 1000 it claims to send. */
        for (int i = 0; i < 2000; i++) {
                snprintf(id, sizeof(id), "flood-%d", i);
                if (i % 2)
                        apply_state(&t, id, "host-b", "mallory@host-a", "working", 1000 + i);
                else
                        apply_state(&t, id, "host-c", "mallory@host-b", "submitted", 1000 + i);
                g_assert_cmpuint(t.n, <=, 10);
        }
        g_assert_cmpuint(t.n, ==, 10);
        g_assert_cmpuint(mesh_state_table_owned(&t, "host-a"), ==, 4);
        g_assert_cmpuint(mesh_state_table_owned(&t, "host-c"), ==, 1);
        g_assert_cmpuint(mesh_state_table_owned(&t, "host-b"), ==, 5);
        for (int i = 0; i < 3; i++) {
                snprintf(id, sizeof(id), "a-%d", i);
                g_assert_nonnull(mesh_state_table_find(&t, id, "host-b", "sysadmin", "alice@host-a"));
        }
        g_assert_nonnull(mesh_state_table_find(&t, "a-c", "host-c", "sysadmin", "alice@host-a"));
        g_assert_nonnull(mesh_state_table_find(&t, "c-0", "host-b", "sysadmin", "carol@host-c"));
        /* host-b's newest rows are the ones kept: its oldest went. */
        g_assert_null(mesh_state_table_find(&t, "flood-0", "host-c", "sysadmin", "mallory@host-b"));
        g_assert_nonnull(mesh_state_table_find(&t, "flood-1999", "host-b", "sysadmin", "mallory@host-a"));
        /* host-a sends more: its first new row takes one of host-b's (the host with the most);
         * then host-a holds the most, and its own oldest rows go. */
        for (int i = 0; i < 6; i++) {
                snprintf(id, sizeof(id), "a-more-%d", i);
                apply_state(&t, id, "host-b", "alice@host-a", "submitted", 5000 + i);
        }
        g_assert_cmpuint(mesh_state_table_owned(&t, "host-c"), ==, 1);
        g_assert_cmpuint(mesh_state_table_owned(&t, "host-a"), ==, 5);
        g_assert_cmpuint(mesh_state_table_owned(&t, "host-b"), ==, 4);
        g_assert_null(mesh_state_table_find(&t, "a-0", "host-b", "sysadmin", "alice@host-a"));
        g_assert_nonnull(mesh_state_table_find(&t, "a-more-5", "host-b", "sysadmin", "alice@host-a"));
        /* Every row's owner is counted, and the counts add up. */
        size_t sum = 0;
        for (size_t i = 0; i < t.n_owners; i++)
                sum += t.owners[i].n;
        g_assert_cmpuint(sum, ==, t.n);
        for (size_t i = 0; i < t.n; i++)
                g_assert_cmpuint(mesh_state_table_owned(&t, t.entries[i].owner), >, 0);
        mesh_state_table_done(&t);
        g_assert_cmpuint(t.n_owners, ==, 0);
        g_assert_null(t.owners);
}

/* The existing stream's shape: tampering refused, other settings only warned about. */
static void test_stream_shape(void) {
        const char *filter[] = { "con.task.host-b.*" };
        const char *other[] = { "con.task.host-c.*" };
        const char *two[] = { "con.task.host-b.*", "con.task.host-c.*" };
        /* 2: js_WorkQueuePolicy's value does not matter here, only that it is compared. */
        const MeshStreamShape want = { .subjects = filter, .n_subjects = 1, .retention = 2,
                                       .max_age_ns = 7 * 86400 * 1000000000LL, .replicas = 1,
                                       .duplicates_ns = 120 * 1000000000LL };
        MeshStreamShape have = want;
        char *text = NULL;

        g_assert_cmpint(mesh_stream_shape_check("con-task-host-b", &have, &want, &text), ==, 0);
        g_assert_null(text);

        have.n_sources = 1;
        g_assert_cmpint(mesh_stream_shape_check("con-task-host-b", &have, &want, &text), ==, -EPERM);
        g_assert_nonnull(strstr(text, "stream con-task-host-b has sources"));
        free(text);
        have = want;
        have.mirror = true;
        g_assert_cmpint(mesh_stream_shape_check("con-task-host-b", &have, &want, &text), ==, -EPERM);
        g_assert_nonnull(strstr(text, "mirrors another stream"));
        free(text);
        have = want;
        have.subjects = other;
        g_assert_cmpint(mesh_stream_shape_check("con-task-host-b", &have, &want, &text), ==, -EPERM);
        g_assert_nonnull(strstr(text, "does not take exactly"));
        free(text);
        have = want;
        have.subjects = two;
        have.n_subjects = 2;
        g_assert_cmpint(mesh_stream_shape_check("con-task-host-b", &have, &want, &text), ==, -EPERM);
        free(text);
        have = want;
        have.n_subjects = 0;
        g_assert_cmpint(mesh_stream_shape_check("con-task-host-b", &have, &want, &text), ==, -EPERM);
        free(text);
        have = want;
        have.retention = 0;
        g_assert_cmpint(mesh_stream_shape_check("con-task-host-b", &have, &want, &text), ==, -EPERM);
        g_assert_nonnull(strstr(text, "another retention policy"));
        free(text);
        have = want;
        have.republish = true;
        g_assert_cmpint(mesh_stream_shape_check("con-task-host-b", &have, &want, &text), ==, -EPERM);
        g_assert_nonnull(strstr(text, "republishes its messages"));
        free(text);
        have = want;
        have.storage = 1;       /* memory: the tasks would not survive a restart of the server */
        g_assert_cmpint(mesh_stream_shape_check("con-task-host-b", &have, &want, &text), ==, -EPERM);
        g_assert_nonnull(strstr(text, "another storage"));
        free(text);
        /* Tampering wins over settings. */
        have.max_age_ns = 1;
        have.n_sources = 2;
        g_assert_cmpint(mesh_stream_shape_check("con-task-host-b", &have, &want, &text), ==, -EPERM);
        free(text);

        have = want;
        have.max_age_ns = 86400 * 1000000000LL;
        g_assert_cmpint(mesh_stream_shape_check("con-task-host-b", &have, &want, &text), ==, 1);
        g_assert_nonnull(strstr(text, "stream con-task-host-b has max age 86400 s"));
        g_assert_nonnull(strstr(text, "not 604800 s and 1 replica(s) (mesh.retention"));
        g_assert_nonnull(strstr(text, "con mesh streams"));
        free(text);
        have = want;
        have.replicas = 3;
        g_assert_cmpint(mesh_stream_shape_check("con-task-host-b", &have, &want, &text), ==, 1);
        free(text);
        have = want;
        have.duplicates_ns = 60 * 1000000000LL;
        g_assert_cmpint(mesh_stream_shape_check("con-task-host-b", &have, &want, &text), ==, 1);
        free(text);
        have = want;
        have.max_msgs_per_subject = 5;  /* con-state's limits: settings too */
        g_assert_cmpint(mesh_stream_shape_check("con-state", &have, &want, &text), ==, 1);
        g_assert_nonnull(strstr(text, "other limits"));
        free(text);
        /* The byte limits (docs/MULTIHOST.md, "Floods"): none, or others, are settings too. */
        MeshStreamShape want_state = want;
        want_state.max_bytes = 40000 * 1024;
        want_state.max_msg_size = 1024;
        have = want_state;
        g_assert_cmpint(mesh_stream_shape_check("con-state", &have, &want_state, &text), ==, 0);
        g_assert_null(text);
        have.max_bytes = -1;
        g_assert_cmpint(mesh_stream_shape_check("con-state", &have, &want_state, &text), ==, 1);
        g_assert_nonnull(strstr(text, "other limits"));
        free(text);
        have = want_state;
        have.max_msg_size = 1024 * 1024;
        g_assert_cmpint(mesh_stream_shape_check("con-state", &have, &want_state, &text), ==, 1);
        g_assert_nonnull(strstr(text, "other limits"));
        free(text);
        /* The task and result streams' limits (docs/MULTIHOST.md, "Floods"): a stream of before
         * without them (no byte or per-host limit, discard old) is the mesh's, with other settings;
         * the text names both. */
        MeshStreamShape want_task = want;
        want_task.max_msgs = -1;       /* as shape_of() writes an unlimited one */
        want_task.max_bytes = 128LL << 20;
        want_task.max_msgs_per_subject = 10000;
        want_task.max_msg_size = 2101248;
        want_task.discard = 1;
        want_task.discard_new_per_subject = true;
        have = want_task;
        g_assert_cmpint(mesh_stream_shape_check("con-task-host-b", &have, &want_task, &text), ==, 0);
        g_assert_null(text);
        have.discard_new_per_subject = false;
        g_assert_cmpint(mesh_stream_shape_check("con-task-host-b", &have, &want_task, &text), ==, 1);
        g_assert_nonnull(strstr(text, "discard new), not"));
        free(text);
        have = want_task;
        have.max_bytes = have.max_msgs_per_subject = -1;
        have.discard = 0;
        have.discard_new_per_subject = false;
        g_assert_cmpint(mesh_stream_shape_check("con-task-host-b", &have, &want_task, &text), ==, 1);
        g_assert_nonnull(strstr(text, "and other limits (no max messages, no max messages per subject, no max bytes, "
                                      "max message size 2101248, discard old), not "));
        g_assert_nonnull(strstr(text, "and the limits no max messages, max messages per subject 10000, max bytes "
                                      "134217728, max message size 2101248, discard new per subject "
                                      "(mesh.stream_max_bytes, mesh.stream_max_per_host): the mesh's administrator "
                                      "sets them with con mesh streams"));
        free(text);
        have = want;
        have.duplicates_ns = 60 * 1000000000LL;
        /* A negative wanted setting is not compared (con-state's duplicate window). */
        MeshStreamShape want2 = want;
        want2.duplicates_ns = -1;
        g_assert_cmpint(mesh_stream_shape_check("con-state", &have, &want2, &text), ==, 0);
        g_assert_null(text);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/mesh/names", test_names);
        g_test_add_func("/mesh/task", test_task);
        g_test_add_func("/mesh/result", test_result);
        g_test_add_func("/mesh/state", test_state);
        g_test_add_func("/mesh/cancel", test_cancel);
        g_test_add_func("/mesh/state-check", test_state_check);
        g_test_add_func("/mesh/state-table", test_state_table);
        g_test_add_func("/mesh/state-table-fair", test_state_table_fair);
        g_test_add_func("/mesh/stream-shape", test_stream_shape);
        return con_test_run();
}
