/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "agent-runtime.h"
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

/* The fuzz build (tests/fuzz, FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION, the macro OSS-Fuzz defines)
 * scales this and AGENT_QUEUE_RESULT_MAX down together, keeping their relations to each other and to
 * the smaller limits, so that a fuzzer's 1 MiB round trip costs 1/16 of the time
 * (docs/RELIABILITY.md, "Why `result` was slow"). Every other build has the real limits. */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define AGENT_SESSION_OUTPUT_MAX (64 * 1024)
#else
#define AGENT_SESSION_OUTPUT_MAX (1024 * 1024)
#endif
#define AGENT_SESSION_STDERR_TAIL 4096
#define AGENT_SESSION_TURN_MAX (16U * 1024U * 1024U) /* = AGENT_HISTORY_FILE_MAX */

typedef enum AgentSessionEnd {
        AGENT_SESSION_EXITED,   /* exit_status is valid */
        AGENT_SESSION_KILLED,   /* died by a signal we did not send: signal is valid */
        AGENT_SESSION_TIMEOUT,
        AGENT_SESSION_CANCELLED,
} AgentSessionEnd;

typedef struct AgentSession AgentSession;
typedef void (*agent_session_done_t)(AgentSession *s, void *userdata);
/* One line of the progress pipe (without its newline; lines over AGENT_SESSION_PROGRESS_LINE_MAX
 * are dropped whole). */
typedef void (*agent_session_line_t)(AgentSession *s, const char *line, size_t len, void *userdata);
#define AGENT_SESSION_PROGRESS_LINE_MAX 4096

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
        int progress_fd;        /* the progress pipe of a runtime that keeps conversations */
        sd_event_source *progress_source;
        char progress[AGENT_SESSION_PROGRESS_LINE_MAX];
        size_t progress_len;
        bool progress_skip;     /* inside a line that was too long */
        agent_session_line_t on_line;   /* set by the caller right after spawning; may be NULL */
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
