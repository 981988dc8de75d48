/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "model-util.h"
#include "strv.h"
#include "test-util.h"

static void test_env(void) {
        char **env = NULL;
        unsigned bad = 0;
        const char *t = "# keys\n\nCON_API_KEY=sk-1\nexport CON_AUTH_ANTHROPIC=\"ant 2\"\nCON_X='q'\r\n";
        g_assert_cmpint(con_env_parse(t, strlen(t), &env, &bad), ==, 0);
        g_assert_cmpstr(con_env_get(env, "CON_API_KEY"), ==, "sk-1");
        g_assert_cmpstr(con_env_get(env, "CON_AUTH_ANTHROPIC"), ==, "ant 2");
        g_assert_cmpstr(con_env_get(env, "CON_X"), ==, "q");
        g_assert_null(con_env_get(env, "CON_API"));
        strv_free(env);
        env = NULL;
        t = "A=1\nnot a line\n";
        g_assert_cmpint(con_env_parse(t, strlen(t), &env, &bad), ==, -EINVAL);
        g_assert_cmpuint(bad, ==, 2);
        t = "A=\"unterminated\n";
        g_assert_cmpint(con_env_parse(t, strlen(t), &env, &bad), ==, -EINVAL);
}

static void test_env_keep(void) {
        char **env = NULL;
        const char *t = "CON_API_KEY=sk-1\nGITHUB_TOKEN=gh\nCON_AUTH_ANTHROPIC=ant\nGITHUB=short\nGITHUB_TOKEN=gh2\n";
        const char *names[] = { "GITHUB_TOKEN", "NOT_SET", NULL };
        g_assert_cmpint(con_env_parse(t, strlen(t), &env, NULL), ==, 0);
        g_assert_cmpuint(con_env_keep(env, names, 3), ==, 2);
        g_assert_cmpuint(strv_length(env), ==, 2);
        g_assert_cmpstr(env[0], ==, "GITHUB_TOKEN=gh");
        g_assert_cmpstr(con_env_get(env, "GITHUB_TOKEN"), ==, "gh2"); /* the last one still wins */
        g_assert_null(con_env_get(env, "CON_API_KEY"));
        g_assert_null(con_env_get(env, "GITHUB"));
        g_assert_cmpuint(con_env_keep(env, NULL, 0), ==, 0);
        g_assert_null(env[0]);
        g_assert_null(con_env_free(env));
        g_assert_cmpuint(con_env_keep(NULL, names, 2), ==, 0);
}

static void test_keys(void) {
        char *env[] = { "CON_API_KEY=global", "CON_OPERATOR_API_KEY=tier", "CON_AUTH_ANTHROPIC=ant",
                        "CON_OPENROUTER_API_KEY=or", "MY_KEY=mine", NULL };
        char *only_generic[] = { "CON_API_KEY=global", NULL };
        const char *key, *var;
        ConAgent a = { .name = "x", .tier = CON_TIER_OPERATOR,
                       .rt = { .provider = "openrouter", .api_key_env = "CON_API_KEY" } };
        g_assert_cmpint(model_resolve_key(env, &a, NULL, &key, &var), ==, 0);
        g_assert_cmpstr(key, ==, "tier");
        a.tier = CON_TIER_WORKER;
        g_assert_cmpint(model_resolve_key(env, &a, NULL, &key, &var), ==, 0);
        g_assert_cmpstr(key, ==, "global");

        /* The generic key is the owner's only: with both set, anthropic gets its own. */
        a.rt.provider = "anthropic";
        g_assert_cmpint(model_resolve_key(env, &a, NULL, &key, &var), ==, 0);
        g_assert_cmpstr(var, ==, "CON_AUTH_ANTHROPIC");
        g_assert_cmpstr(key, ==, "ant");
        /* ... and without its own, none: the variable to set is named. */
        g_assert_cmpint(model_resolve_key(only_generic, &a, NULL, &key, &var), ==, -ENOKEY);
        g_assert_null(key);
        g_assert_cmpstr(var, ==, "CON_AUTH_ANTHROPIC");
        /* Unless the config names anthropic as the generic key's owner. */
        g_assert_cmpint(model_resolve_key(only_generic, &a, "anthropic", &key, &var), ==, 0);
        g_assert_cmpstr(key, ==, "global");
        a.rt.provider = "openrouter";
        g_assert_cmpint(model_resolve_key(only_generic, &a, "anthropic", &key, &var), ==, -ENOKEY);
        g_assert_cmpint(model_resolve_key(env, &a, "anthropic", &key, &var), ==, 0);
        g_assert_cmpstr(var, ==, "CON_OPENROUTER_API_KEY");
        a.rt.provider = "openai";
        g_assert_cmpint(model_resolve_key(env, &a, NULL, &key, &var), ==, -ENOKEY);
        g_assert_cmpstr(var, ==, "CON_AUTH_OPENAI");

        /* An agent's own variable is its choice; a fallback to its provider's. */
        a.rt.api_key_env = "MY_KEY";
        a.rt.provider = "anthropic";
        g_assert_cmpint(model_resolve_key(env, &a, NULL, &key, &var), ==, 0);
        g_assert_cmpstr(key, ==, "mine");
        a.rt.api_key_env = "CON_SYSADMIN_API_KEY";
        g_assert_cmpint(model_resolve_key(env, &a, NULL, &key, &var), ==, 0);
        g_assert_cmpstr(var, ==, "CON_AUTH_ANTHROPIC");
        /* A provider's variable named for another provider is never used. */
        a.rt.api_key_env = "CON_AUTH_ANTHROPIC";
        a.rt.provider = "openai";
        g_assert_cmpint(model_resolve_key(env, &a, NULL, &key, &var), ==, -ENOKEY);
        g_assert_cmpstr(var, ==, "CON_AUTH_OPENAI");
        /* Local providers get no generic key unless they own it. */
        a.rt.api_key_env = "CON_API_KEY";
        a.rt.provider = "compatible";
        g_assert_cmpint(model_resolve_key(env, &a, NULL, &key, &var), ==, -ENOKEY);
        g_assert_null(var);
        g_assert_cmpint(model_resolve_key(env, &a, "compatible", &key, &var), ==, 0);
        g_assert_cmpstr(key, ==, "global");

        g_assert_true(model_key_var_is_generic("CON_OFFICER_API_KEY"));
        g_assert_false(model_key_var_is_generic("CON_AUTH_OPENAI"));
        g_assert_cmpstr(model_key_var_provider("CON_API_KEY", NULL), ==, "openrouter");
        g_assert_null(model_key_var_provider("MY_KEY", NULL));
}

static void test_request(void) {
        ModelRequest *r = NULL;
        char *err = NULL;
        const char *ok = "{\"system\":\"s\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
                         "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"name\":\"exec\","
                         "\"arguments\":{\"a\":1}}]},{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"out\"}],"
                         "\"max_tokens\":10,\"task_id\":\"t1\"}";
        g_assert_cmpint(model_request_parse(ok, strlen(ok), &r, &err), ==, 0);
        g_assert_cmpuint(r->conv->n_messages, ==, 3);
        g_assert_cmpuint(r->max_tokens, ==, 10);
        g_assert_cmpstr(r->task_id, ==, "t1");
        g_assert_cmpfloat(r->temperature, <, 0);
        model_request_free(r);

        static const struct { const char *json, *msg; } bad[] = {
                { "[]", "must be a JSON object" },
                { "{\"messages\":[]}", "messages: empty" },
                { "{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", "messages[0].role" },
                { "{\"messages\":[{\"role\":\"user\"}]}", "messages[0].content: missing" },
                { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"foo\":1}", "foo: unknown key" },
                { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":-1}", "max_tokens" },
                { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"name\":\"rm -rf\"}]}", "tools[0]" },
                { "{\"messages\":[", "not valid JSON" },
                { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"agent\":\"../x\"}", "agent" },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                r = NULL;
                g_assert_cmpint(model_request_parse(bad[i].json, strlen(bad[i].json), &r, &err), ==, -EINVAL);
                g_assert_null(r);
                g_assert_nonnull(strstr(err, bad[i].msg));
                free(err);
                err = NULL;
        }
}

static void test_response(void) {
        ConLlmToolCall tc = { .id = "c1", .name = "exec", .arguments = "{\"cmd\":\"ls\"}" };
        ConLlmResponse resp = { .text = NULL, .tool_calls = &tc, .n_tool_calls = 1, .stop = CON_LLM_STOP_TOOL_USE,
                                .has_usage = true, .input_tokens = 3, .output_tokens = 4 };
        char *j = NULL;
        g_assert_cmpint(model_response_to_json(&resp, &j), ==, 0);
        g_assert_cmpstr(j, ==, "{\"text\":null,\"tool_calls\":[{\"id\":\"c1\",\"name\":\"exec\",\"arguments\":"
                        "{\"cmd\":\"ls\"}}],\"stop_reason\":\"tool_use\",\"provider_stop_reason\":null,"
                        "\"usage\":{\"input_tokens\":3,\"output_tokens\":4},\"model\":null}");
        free(j);
}

static void test_budget(void) {
        ModelLedger *l = model_ledger_new();
        ConModelBudget b = { .tokens_per_task = 100, .tokens_per_day = 1000 };
        const char *which;
        char *msg = NULL;
        g_assert_cmpint(model_ledger_check(l, 5, "a", "t1", &b, &which, &msg), ==, 0);
        g_assert_cmpint(model_ledger_add(l, 5, "a", "t1", 60, 40, &b), ==, 0);
        g_assert_cmpint(model_ledger_check(l, 5, "a", "t1", &b, &which, &msg), ==, -EDQUOT);
        g_assert_cmpstr(which, ==, "budget_tokens_per_task");
        g_assert_nonnull(strstr(msg, "agent 'a' used 100 tokens on task t1"));
        free(msg);
        g_assert_cmpint(model_ledger_check(l, 5, "a", "t2", &b, &which, NULL), ==, 0);
        g_assert_cmpint(model_ledger_add(l, 5, "a", NULL, 900, 0, &b), ==, 0);
        g_assert_cmpint(model_ledger_check(l, 5, "a", "t2", &b, &which, NULL), ==, -EDQUOT);
        g_assert_cmpstr(which, ==, "budget_tokens_per_day");
        g_assert_cmpint(model_ledger_check(l, 5, "b", NULL, &b, &which, NULL), ==, 0);
        g_assert_cmpint(model_ledger_check(l, 6, "a", "t3", &b, &which, NULL), ==, 0); /* a new day */
        /* Cost: only with both prices. */
        ConModelBudget c = { .cost_per_day = 1.0 };
        g_assert_cmpfloat(model_cost(&c, 1000000, 0), <, 0);
        c.price_per_mtok_in = 2;
        c.price_per_mtok_out = 10;
        g_assert_cmpint(model_ledger_add(l, 7, "a", NULL, 500000, 0, &c), ==, 0);
        g_assert_cmpint(model_ledger_check(l, 7, "a", NULL, &c, &which, NULL), ==, -EDQUOT);
        g_assert_cmpstr(which, ==, "budget_cost_per_day");
        model_ledger_free(l);
}

/* Budgets by what the gateway knows: fresh task ids buy nothing. */
static void test_budget_registered(void) {
        ModelLedger *l = model_ledger_new();
        ConModelBudget b = { .tokens_per_task = 100 };
        const char *which;
        char *msg = NULL;

        g_assert_false(model_ledger_registered(l, "a", "t1"));
        g_assert_cmpint(model_ledger_register(l, "a", "t1"), ==, 0);
        g_assert_true(model_ledger_registered(l, "a", "t1"));
        g_assert_false(model_ledger_registered(l, "b", "t1"));  /* another agent's task is not a's */
        g_assert_cmpuint(model_ledger_n_registered(l, "a"), ==, 1);

        /* A registered task has its own budget. */
        g_assert_cmpint(model_ledger_add(l, 5, "a", "t1", 90, 10, &b), ==, 0);
        g_assert_cmpint(model_ledger_check(l, 5, "a", "t1", &b, &which, NULL), ==, -EDQUOT);
        /* Calls naming no registered task share one more budget a day: 20 fresh ids, 10 tokens each. */
        unsigned refused = 0;
        for (int i = 0; i < 20; i++) {
                if (model_ledger_check(l, 5, "a", NULL, &b, &which, i == 19 ? &msg : NULL) == -EDQUOT) {
                        refused++;
                        continue;
                }
                g_assert_cmpint(model_ledger_add(l, 5, "a", NULL, 5, 5, &b), ==, 0);
        }
        g_assert_cmpuint(refused, ==, 10);
        g_assert_cmpstr(which, ==, "budget_tokens_per_task");
        g_assert_nonnull(strstr(msg, "name no task its agent service registered"));
        free(msg);
        /* Another agent is not charged, and the next day starts afresh. */
        g_assert_cmpint(model_ledger_check(l, 5, "b", NULL, &b, &which, NULL), ==, 0);
        g_assert_cmpint(model_ledger_check(l, 6, "a", NULL, &b, &which, NULL), ==, 0);
        /* Every call counts for the day as well. */
        uint64_t in, out;
        model_ledger_get(l, 5, "a", &in, &out, NULL);
        g_assert_cmpuint(in + out, ==, 200);

        /* Ended: no longer registered; running again continues the count. */
        g_assert_cmpint(model_ledger_unregister(l, "a", "t1"), ==, 0);
        g_assert_cmpint(model_ledger_unregister(l, "a", "t1"), ==, -ENOENT);
        g_assert_false(model_ledger_registered(l, "a", "t1"));
        g_assert_cmpint(model_ledger_register(l, "a", "t1"), ==, 0);
        g_assert_cmpint(model_ledger_check(l, 5, "a", "t1", &b, &which, NULL), ==, -EDQUOT);

        /* Registrations never ended do not pile up: an agent keeps its newest 256. */
        char id[32];
        for (unsigned i = 0; i < MODEL_TASKS_REGISTERED_MAX; i++) {
                snprintf(id, sizeof id, "r%u", i);
                g_assert_cmpint(model_ledger_register(l, "a", id), ==, 0);
        }
        g_assert_cmpuint(model_ledger_n_registered(l, "a"), ==, MODEL_TASKS_REGISTERED_MAX);
        g_assert_false(model_ledger_registered(l, "a", "t1"));          /* the oldest went */
        g_assert_true(model_ledger_registered(l, "a", "r0"));
        g_assert_true(model_ledger_registered(l, "a", "r255"));
        /* Many agents: when every tracked entry is registered, the least recently used goes. */
        for (unsigned k = 0; k < 5; k++)
                for (unsigned i = 0; i < MODEL_TASKS_REGISTERED_MAX; i++) {
                        char agent[16];
                        snprintf(agent, sizeof agent, "x%u", k);
                        snprintf(id, sizeof id, "q%u", i);
                        g_assert_cmpint(model_ledger_register(l, agent, id), ==, 0);
                }
        g_assert_true(model_ledger_registered(l, "x4", "q255"));
        g_assert_false(model_ledger_registered(l, "a", "r0"));
        g_assert_cmpuint(model_ledger_n_registered(l, NULL), <=, MODEL_TASKS_TRACKED);
        model_ledger_free(l);
}

static void test_rate(void) {
        ModelRate *r = model_rate_new(2, 100);
        uint64_t t = 1000000000;
        g_assert_cmpuint(model_rate_admit(r, t), ==, 0);
        g_assert_cmpuint(model_rate_admit(r, t + 1), ==, 0);
        g_assert_cmpuint(model_rate_admit(r, t + 2), ==, 60000000 - 2);
        g_assert_cmpuint(model_rate_admit(r, t + 60000000), ==, 0);
        model_rate_add_tokens(r, t + 60000001, 100);
        g_assert_cmpuint(model_rate_admit(r, t + 120000000), >, 0); /* tokens of the last minute */
        model_rate_free(r);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/model-util/env", test_env);
        g_test_add_func("/model-util/env-keep", test_env_keep);
        g_test_add_func("/model-util/keys", test_keys);
        g_test_add_func("/model-util/request", test_request);
        g_test_add_func("/model-util/response", test_response);
        g_test_add_func("/model-util/budget", test_budget);
        g_test_add_func("/model-util/budget-registered", test_budget_registered);
        g_test_add_func("/model-util/rate", test_rate);
        return con_test_run();
}
