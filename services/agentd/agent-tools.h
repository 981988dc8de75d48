/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

#include "config.h"
#include "llm.h"

/* The tools of the picoclaw runtime (the LLM tool loop, agent-llm.h), run in the session child
 * as the agent user. The OS decides what a tool may touch: there is no path sandbox here, a
 * refused open() is the answer. Arguments come from the model as JSON text and are checked
 * strictly (agent_tool_args_parse, fuzzed by tests/fuzz/fuzz-tool-args.c); every problem is
 * a sentence returned to the model as the tool result. */

#define AGENT_TOOL_OUTPUT_MAX        (1024U * 1024U)    /* bytes of a tool result (exec: stdout, stderr
                                                         * and the exit code together); above 16 KiB the
                                                         * tool loop stores it in the workspace
                                                         * (agent-history.h) */
/* The line a tool result ends with (before exec's "Exit code:") when bytes were not UTF-8. */
#define AGENT_TOOL_REPLACED_NOTE     "[bytes that were not valid UTF-8 are shown as U+FFFD]"
#define AGENT_TOOL_ARGS_MAX          (4U * 1024U * 1024U) /* bytes of one call's arguments */
#define AGENT_TOOL_EXEC_TIMEOUT      60U                /* seconds, default of exec */
#define AGENT_TOOL_EXEC_TIMEOUT_MAX  600U
#define AGENT_TOOL_SEND_TEXT_MAX     (1024U * 1024U)
#define AGENT_TOOL_SEND_WAIT_USEC    (10U * 60U * 1000000ULL) /* send_task wait: 10 minutes */
#define AGENT_TOOL_COMMISSION_USEC   (10U * 60U * 1000000ULL) /* commission_agent: at most 10 minutes */

typedef enum AgentToolKind {
        AGENT_TOOL_EXEC,
        AGENT_TOOL_READ_FILE,
        AGENT_TOOL_WRITE_FILE,
        AGENT_TOOL_EDIT_FILE,
        AGENT_TOOL_APPEND_FILE,
        AGENT_TOOL_LIST_DIR,
        AGENT_TOOL_LIST_AGENTS,
        AGENT_TOOL_SEND_TASK,
        AGENT_TOOL_COMMISSION_AGENT,    /* offered only to agents the policy lets commission */
        _AGENT_TOOL_MAX,
        _AGENT_TOOL_INVALID = -22,
} AgentToolKind;

typedef struct AgentToolArgs {
        AgentToolKind kind;
        char *path;             /* read/write/edit/append_file, list_dir (default ".") */
        char *content;          /* write_file, append_file */
        char *old_text, *new_text; /* edit_file */
        char *command;          /* exec: shell command (sh -c) ... */
        char **argv;            /* ... or argv (no shell); exactly one of both */
        char *working_dir;      /* exec, optional */
        unsigned timeout_sec;   /* exec, default AGENT_TOOL_EXEC_TIMEOUT */
        char *agent, *text;     /* send_task; commission_agent: agent is the new agent's name */
        bool wait;              /* send_task, default true */
        char *tier, *mode, *instructions, *model; /* commission_agent */
        char **roles, **may_task, **tasked_by, **network;
} AgentToolArgs;

void agent_tool_args_done(AgentToolArgs *a);

const char *agent_tool_kind_to_string(AgentToolKind k);
AgentToolKind agent_tool_kind_from_string(const char *s);

/* Parses and checks the arguments of one tool call. json NULL or "" means {}.
 * 0, or -EINVAL with *ret_error ("exec: argument \"timeout\" must be an integer from 1 to 600,
 * got a string"), -ENOENT for an unknown tool (with message), -ENOMEM. */
int agent_tool_args_parse(const char *tool, const char *json, AgentToolArgs *ret, char **ret_error);

/* Adds the JSON schemas of the tools to a conversation: every tool, commission_agent only when
 * the policy of config lets agent (NULL: nobody) commission agents (docs/PROVISIONING.md). */
int agent_tools_register(ConLlmConversation *c, const ConConfig *config, const ConAgent *agent);

/* Where the tools run. */
typedef struct AgentToolContext {
        const ConAgent *agent;
        const ConConfig *config;
        const char *workspace;
        sd_bus *bus;                    /* the session's own system bus connection; NULL: no bus tools */
        uint64_t deadline_usec;         /* CLOCK_MONOTONIC; 0: none. Tools never run past it */
        uint64_t send_wait_usec;        /* 0: AGENT_TOOL_SEND_WAIT_USEC */
} AgentToolContext;

/* Runs one tool call. Always produces *ret_output (also for failures: the model reads it), valid
 * text (bus/basic/utf8.h; bytes that were not UTF-8 become U+FFFD with AGENT_TOOL_REPLACED_NOTE), and
 * *ret_is_error; returns -ENOMEM only. */
int agent_tool_run(const AgentToolContext *ctx, const char *tool, const char *args_json, char **ret_output,
                   bool *ret_is_error);

/* Runs one tool with already parsed arguments. */
int agent_tool_dispatch(const AgentToolContext *ctx, const AgentToolArgs *a, char **ret_output, bool *ret_is_error);

/* Runs argv (or "/bin/sh -c command") as the caller, cwd dir, clean environment, with a
 * timeout, capturing stdout and stderr. The result text is at most AGENT_TOOL_OUTPUT_MAX bytes
 * and always ends with "Exit code: N": a stream that does not fit keeps its start and its end,
 * and a line before the exit code gives the true sizes. Exposed for tests. */
int agent_tool_exec(const AgentToolContext *ctx, const AgentToolArgs *a, char **ret_output, bool *ret_is_error);

/* Makes text valid text of at most max bytes: when longer, its start and its end, cut on
 * character boundaries, with a marker giving the true size between them. */
int agent_tool_cap_output(char **text, size_t max);
