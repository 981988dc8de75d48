/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "config.h"

/* Session processes and runtimes.
 *
 * Every task that is not a built-in command runs in its own session: a forked child in its own
 * session and process group (setsid) and, where cgroup v2 is available, its own cgroup, entered
 * before the child drops the service's root identity for the agent user. Cancel, the timeout and
 * the end of the main process kill the whole cgroup (the process group without cgroup v2), so
 * double-forked daemons and tools in their own process groups die with the session. The child's
 * stdout (fd 1 for exec, the result fd for in-process runtimes) is the response, its stderr the
 * failure reason; exit status 0 means done. A runtime that keeps conversations writes the completed
 * turn on ConRuntimeTask.turn_fd (a pipe to the service, inherited across the privilege drop).
 * The parent watches the child with sd_event_add_child(), the pipes with io sources, and a
 * wall-clock timer. */

#define AGENT_SESSION_OUTPUT_MAX (1024 * 1024)
#define AGENT_SESSION_STDERR_TAIL 4096
#define AGENT_SESSION_TURN_MAX (16U * 1024U * 1024U) /* = AGENT_HISTORY_FILE_MAX */

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

typedef enum AgentSessionEnd {
        AGENT_SESSION_EXITED,   /* exit_status is valid */
        AGENT_SESSION_KILLED,   /* died by a signal we did not send: signal is valid */
        AGENT_SESSION_TIMEOUT,
        AGENT_SESSION_CANCELLED,
} AgentSessionEnd;

typedef struct AgentSession AgentSession;
typedef void (*agent_session_done_t)(AgentSession *s, void *userdata);

struct AgentSession {
        sd_event *event;
        pid_t pid;
        int out_fd, err_fd;
        sd_event_source *child_source, *out_source, *err_source, *timer_source;
        char *out;              /* the first AGENT_SESSION_OUTPUT_MAX bytes, any bytes */
        size_t out_len;
        uint64_t out_size;      /* bytes the session wrote in all (more than out_len: cut) */
        int turn_fd;            /* the completed turn of a runtime that keeps conversations */
        sd_event_source *turn_source;
        char *turn;
        size_t turn_len;
        uint64_t turn_size;     /* bytes sent in all (more than turn_len: over the limit) */
        bool turn_eof;
        char err[AGENT_SESSION_STDERR_TAIL];
        size_t err_len;         /* the last AGENT_SESSION_STDERR_TAIL bytes, ring-free: shifted */
        uint64_t err_size;
        bool exited, timed_out, cancelled, finished;
        int exit_status, signal;
        uint64_t timeout_usec;
        int cg_parent_fd;       /* not owned: ConRuntimeEnv.cgroup_fd */
        int cg_fd, cg_events_fd;
        char *cg_name;
        sd_event_source *cg_source;
        bool cg_waiting;        /* the main process exited, waiting for the cgroup to empty */
        agent_session_done_t done;
        void *userdata;
};

/* Forks the session. The callback runs once, after the child exited and its pipes are drained;
 * the session stays valid until agent_session_free(). */
int agent_session_spawn(sd_event *e, const ConRuntime *rt, const ConRuntimeTask *t, const ConRuntimeEnv *env,
                        agent_session_done_t done, void *userdata, AgentSession **ret);
/* SIGKILLs every process of the session (its cgroup, or its process group without one); the done
 * callback follows once they are gone. */
void agent_session_cancel(AgentSession *s);
AgentSession *agent_session_free(AgentSession *s);
AgentSessionEnd agent_session_end(const AgentSession *s);
/* Why a session that exited with a non-zero status failed: "LABEL exited with status N: " and its
 * stderr tail, trimmed, starting with "... " and a whole character when the front was dropped (or
 * "... and wrote nothing on stderr"). The tail is any bytes, NULs included: *ret_len counts them
 * and the queue (agent_queue_finish_output()) makes them text and marks what it replaced. */
int agent_session_exit_reason(const AgentSession *s, const char *label, char **ret, size_t *ret_len);
