/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent-runtime.h"
#include "llm.h"
#include "names.h"

/* The picoclaw runtime: the LLM tool loop of one task, run in the session child as the agent
 * user (docs/AGENT.md "The tool loop"). The session holds no key: every model turn is a call of
 * org.conspiracy.Models1.Complete on the system bus (con-modeld picks provider, model and key
 * for the calling agent from its bus credentials). The pure parts (prompt, loop guard, the
 * neutral JSON) are exposed for tests; conversations and context bounds are agent-history.h. */

#define AGENT_LLM_MAX_ITERATIONS   50U
#define AGENT_LLM_MAX_TOKENS       8192U
#define AGENT_LLM_LOOP_REPEAT      3U          /* the same call this many times in a row: stop */
#define AGENT_LLM_CALL_TIMEOUT     (300U * 1000000ULL) /* one Complete call */
#define AGENT_LLM_NO_RESPONSE      "I've completed processing but have no response to give."


/* ---- prompt ---- */

/* Reads dir/ *.md (sorted, not recursive, regular files only) into names (basename without .md)
 * and texts. A missing directory gives empty lists. Only files of owner (root in the service)
 * that group and others cannot write, in such a folder, are read; the others are listed in
 * *ret_skipped (may be NULL) with their owner and mode. */
int agent_llm_load_skills(const char *dir, uid_t owner, char ***ret_names, char ***ret_texts, char ***ret_skipped);
/* The system prompt: who the agent is, its AGENTS.md (agents_md may be NULL) and its skills,
 * each as a "## Skill: <name>" section. */
int agent_llm_system_prompt(const char *agent, const char *workspace, const char *agents_md,
                            char * const *skill_names, char * const *skill_texts, char **ret);
/* The user message of a task, framed by its provenance (verified: root or group trusted). */
int agent_llm_task_message(const char *text, const char *sender, bool verified, char **ret);
/* Root, or a member of the group "trusted" (primary or supplementary). */
bool agent_llm_sender_verified(uid_t uid);

/* ---- loop detection ---- */

typedef struct AgentLoopGuard {
        char *last;             /* name NUL canonical-arguments of the previous call */
        size_t last_len;
        unsigned count;         /* how many times in a row */
} AgentLoopGuard;

void agent_loop_guard_done(AgentLoopGuard *g);
/* Records a call. Returns 1 when it is the limit-th identical call in a row (same tool, same
 * arguments after JSON canonicalisation: key order and spacing do not matter), 0 otherwise. */
int agent_loop_guard_push(AgentLoopGuard *g, const char *name, const char *arguments, unsigned limit);

/* ---- the neutral JSON of org.conspiracy.Models1.Complete ---- */

/* messages from index `from` on. */
int agent_llm_request_json(const ConLlmConversation *c, size_t from, unsigned max_tokens, const char *task_id,
                           char **ret);
/* -EBADMSG with *ret_error naming the field. */
int agent_llm_response_parse(const char *json, ConLlmResponse **ret, char **ret_error);

/* ---- stop reasons ---- */

/* Does this answer end the task as failed? 1 with *ret_reason (a sentence for `con task`) when the
 * model's final answer was cut off by the token limit ("length", "max_tokens"), stopped by a
 * content filter ("content_filter") or refused ("refusal"); 0 for a usable answer or tool calls. */
int agent_llm_stop_reason(const ConLlmResponse *resp, unsigned max_tokens, char **ret_reason);

/* ---- the runtime ---- */

typedef struct AgentLlmOptions {
        unsigned max_iterations;
        unsigned max_tokens;
        uint64_t wall_usec;     /* 0: no own deadline */
        const char *agents_md_path; /* NULL: /home/a-<name>/AGENTS.md */
} AgentLlmOptions;

/* ConRuntime.run of picoclaw: the final answer to result_fd, the failure reason to stderr. */
int agent_llm_run(const ConRuntimeTask *t, const ConRuntimeEnv *env, int result_fd);
