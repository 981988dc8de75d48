/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"

/* The seam between the agent service and what runs a task in a session (agent-session.h): what a
 * runtime is told, who it runs as, and the runtimes (exec in agent-session.c, the LLM loop in
 * agent-llm.c). */

/* What a runtime gets about the task: no bus, no queue. */
typedef struct ConRuntimeTask {
        const char *id;
        const char *text;
        const char *sender;
        uid_t sender_uid;
        int priority;
        const char *reply_to;
        uint64_t deadline_usec;
        /* The sender's conversation, chosen and read by the service before the fork (agent-history.h):
         * its id (NULL: the turn is not kept), and its file text (NULL: a new one, or unreadable). */
        const char *conversation;
        const char *history;
        size_t history_len;
        int turn_fd;                    /* in the session: where the completed turn goes; < 0: nowhere */
        int progress_fd;                /* in the session: one JSON line per step for the transcript
                                         * (agent-transcript.h); < 0: nowhere */
} ConRuntimeTask;

/* Who a session runs as: the agent user, entered by the root service after forking. */
typedef struct ConSessionUser {
        const char *name;
        uid_t uid;
        gid_t gid;
        const gid_t *groups;    /* supplementary groups (the tier groups), from the user database */
        size_t n_groups;
} ConSessionUser;

typedef struct ConRuntimeEnv {
        const ConAgent *agent;
        const ConConfig *config;
        const char *workspace;  /* cwd of the session */
        const char *skills_dir; /* root-owned skills (DATA/skills); NULL: DATA/../skills of workspace */
        const ConSessionUser *user; /* NULL: the session keeps the service's identity (tests) */
        int cgroup_fd;          /* the agent's cgroup2 folder, each session gets a child; < 0: none,
                                 * sessions are contained by their process group only */
} ConRuntimeEnv;

/* The seam between the agent service and what runs a task (exec, the LLM loop, ...). */
typedef struct ConRuntime {
        const char *name;
        /* In the service, before forking: 0 when the task can run, or -errno with *ret_reason
         * (allocated) saying what is missing; the task then fails without a session. May be NULL. */
        int (*check)(const ConRuntimeEnv *env, char **ret_reason);
        /* In the session child, after setsid(): write the response to result_fd, reasons to
         * stderr (fd 2), return the exit status (0 = done). May exec instead of returning. */
        int (*run)(const ConRuntimeTask *t, const ConRuntimeEnv *env, int result_fd);
        /* Wall clock for one session of this runtime. */
        uint64_t (*timeout)(const ConRuntimeEnv *env);
        /* Keeps conversations: the service hands the session its conversation and stores the
         * turn the session sends back on ConRuntimeTask.turn_fd. */
        bool conversations;
} ConRuntime;

/* The runtime for an agent's runner: exec, claude and codex run the configured command;
 * picoclaw is the LLM loop. NULL for an unknown runner. */
const ConRuntime *con_runtime_for_agent(const ConAgent *a);
extern const ConRuntime con_runtime_exec;
extern const ConRuntime con_runtime_picoclaw;
