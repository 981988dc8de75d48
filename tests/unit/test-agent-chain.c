/* SPDX-License-Identifier: MIT */
/* Delegation chains (services/agentd/agent-chain.[ch], docs/AGENT.md "Delegation"). */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent-chain.h"
#include "macro.h"
#include "test-util.h"

static void test_strings(void) {
        _cleanup_free_ char *a = NULL, *b = NULL;

        g_assert_cmpuint(agent_chain_hops(NULL), ==, 0);
        g_assert_cmpuint(agent_chain_hops(""), ==, 0);
        g_assert_cmpint(agent_chain_append(NULL, "alpha", "t1", &a), ==, 0);
        g_assert_cmpstr(a, ==, "alpha/t1");
        g_assert_cmpint(agent_chain_append(a, "beta", "t2", &b), ==, 0);
        g_assert_cmpstr(b, ==, "alpha/t1 beta/t2");
        g_assert_cmpuint(agent_chain_hops(b), ==, 2);
        g_assert_true(agent_chain_has_agent(b, "alpha"));
        g_assert_true(agent_chain_has_agent(b, "beta"));
        g_assert_false(agent_chain_has_agent(b, "alph"));
        g_assert_false(agent_chain_has_agent(b, "t1"));
        g_assert_false(agent_chain_has_agent(NULL, "alpha"));

        g_assert_true(agent_chain_valid(NULL));
        g_assert_true(agent_chain_valid(""));
        g_assert_true(agent_chain_valid(b));
        g_assert_true(agent_chain_valid("alpha/-"));
        g_assert_false(agent_chain_valid("alpha"));
        g_assert_false(agent_chain_valid("Alpha/t1"));
        g_assert_false(agent_chain_valid("alpha/../x"));
        g_assert_false(agent_chain_valid("alpha/t1/x"));
}

static void test_record(void) {
        _cleanup_free_ char *s = NULL, *id = NULL, *chain = NULL;
        uint64_t dl = 0;

        g_assert_cmpint(agent_chain_record_format("t9", "alpha/t1", 1700000000000000ULL, &s), ==, 0);
        g_assert_cmpint(agent_chain_record_parse(s, strlen(s), &id, &chain, &dl), ==, 0);
        g_assert_cmpstr(id, ==, "t9");
        g_assert_cmpstr(chain, ==, "alpha/t1");
        g_assert_cmpuint(dl, ==, 1700000000000000ULL);

        static const char *bad[] = {
                "", "[]", "{}", "{\"id\":\"../x\",\"chain\":\"\",\"deadline\":0}",
                "{\"id\":\"t\",\"chain\":\"nope\",\"deadline\":0}", "{\"id\":\"t\",\"chain\":\"\",\"deadline\":-1}",
                "{\"id\":\"t\",\"chain\":\"\"}",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                char *x = NULL, *y = NULL;
                g_assert_cmpint(agent_chain_record_parse(bad[i], strlen(bad[i]), &x, &y, &dl), ==, -EBADMSG);
        }
}

static void test_running(void) {
        char *dir = test_tmpdir_new();
        _cleanup_free_ char *adir = NULL, *path = NULL;
        AgentChainParent p = {};

        g_assert_nonnull(asprintf(&adir, "%s/alpha", dir) > 0 ? adir : NULL);
        g_assert_cmpint(mkdir(adir, 0700), ==, 0);
        int dfd = open(adir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        g_assert_cmpint(dfd, >=, 0);
        g_assert_cmpint(mkdirat(dfd, "queue", 0700), ==, 0);

        /* Nothing runs: no parent. */
        g_assert_cmpint(agent_chain_parent_read(dir, "alpha", geteuid(), &p), ==, 0);
        g_assert_cmpuint(p.n_running, ==, 0);
        agent_chain_parent_done(&p);

        g_assert_cmpint(agent_chain_running_clear(dfd), ==, 0);
        g_assert_cmpint(agent_chain_running_write(dfd, "short", NULL, 3000), ==, 0);
        g_assert_cmpint(agent_chain_running_write(dfd, "long", "gamma/g1 beta/b1", 5000), ==, 0);
        g_assert_cmpint(agent_chain_parent_read(dir, "alpha", geteuid(), &p), ==, 0);
        g_assert_cmpuint(p.n_running, ==, 2);
        /* The longest chain, every agent of both, the earliest deadline. */
        g_assert_cmpstr(p.task, ==, "long");
        g_assert_cmpstr(p.chain, ==, "gamma/g1 beta/b1 alpha/long");
        g_assert_true(agent_chain_has_agent(p.agents, "gamma"));
        g_assert_true(agent_chain_has_agent(p.agents, "beta"));
        g_assert_true(agent_chain_has_agent(p.agents, "alpha"));
        g_assert_false(agent_chain_has_agent(p.agents, "delta"));
        g_assert_cmpuint(p.deadline_usec, ==, 3000);
        agent_chain_parent_done(&p);

        /* A record anyone could have written is not believed. */
        g_assert_cmpint(asprintf(&path, "%s/queue/running/forged.json", adir) > 0, ==, 1);
        FILE *f = fopen(path, "w");
        g_assert_nonnull(f);
        fputs("{\"id\":\"forged\",\"chain\":\"\",\"deadline\":1}", f);
        fclose(f);
        g_assert_cmpint(chmod(path, 0666), ==, 0);
        g_assert_cmpint(agent_chain_parent_read(dir, "alpha", geteuid(), &p), ==, 0);
        g_assert_cmpuint(p.n_running, ==, 2);
        g_assert_cmpuint(p.deadline_usec, ==, 3000);
        agent_chain_parent_done(&p);

        /* Removed when the task ends, all of them at start. */
        g_assert_cmpint(agent_chain_running_remove(dfd, "long"), ==, 0);
        g_assert_cmpint(agent_chain_parent_read(dir, "alpha", geteuid(), &p), ==, 0);
        g_assert_cmpuint(p.n_running, ==, 1);
        g_assert_cmpstr(p.chain, ==, "alpha/short");
        agent_chain_parent_done(&p);
        g_assert_cmpint(agent_chain_running_clear(dfd), ==, 0);
        g_assert_cmpint(agent_chain_parent_read(dir, "alpha", geteuid(), &p), ==, 0);
        g_assert_cmpuint(p.n_running, ==, 0);
        agent_chain_parent_done(&p);

        /* A running folder others may write is refused altogether. */
        g_assert_cmpint(fchmodat(dfd, AGENT_CHAIN_RUNNING_DIR, 0777, 0), ==, 0);
        g_assert_cmpint(agent_chain_parent_read(dir, "alpha", geteuid(), &p), ==, -EPERM);
        agent_chain_parent_done(&p);
        g_assert_cmpint(agent_chain_parent_read(dir, "../x", geteuid(), &p), ==, -EINVAL);

        safe_close(dfd);
        test_tmpdir_remove(dir);
        free(dir);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/agent-chain/strings", test_strings);
        g_test_add_func("/agent-chain/record", test_record);
        g_test_add_func("/agent-chain/running", test_running);
        return con_test_run();
}
