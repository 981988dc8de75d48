/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Delegation chains (docs/AGENT.md "Delegation"): pure logic, no bus, no logging.
 *
 * A task that an agent's session sends to another agent carries the chain of the task that
 * session is running: "AGENT/TASK AGENT/TASK ...", the root task first and the direct parent
 * last; its length is the hop count. The chain is never taken from the caller: the receiving
 * service derives it from the records the sending agent's service keeps of its running tasks,
 * queue/running/<id>.json below that agent's folder (root's files, like the rest of queue/):
 *
 *   {"id":"TASK","chain":"A/T1 B/T2","deadline":USEC}
 *
 * deadline (CLOCK_REALTIME) is when the running task must be over: its own deadline, or the end
 * of its session's wall clock, whichever comes first. A child never gets a later one. */

#define AGENT_CHAIN_RUNNING_DIR "queue/running"
/* The task of an entry for a call of an agent user that runs no task (a process outside any
 * session, e.g. an administrator's runuser): "AGENT/-", still one hop. */
#define AGENT_CHAIN_NO_TASK "-"
#define AGENT_CHAIN_RECORD_MAX 65536

size_t agent_chain_hops(const char *chain);
bool agent_chain_has_agent(const char *chain, const char *agent);
/* chain + " AGENT/TASK" (or "AGENT/TASK" when chain is empty or NULL). */
int agent_chain_append(const char *chain, const char *agent, const char *task, char **ret);
/* Whether s has the syntax of a chain (entries of an agent name, '/', a task id). NULL and "" are. */
bool agent_chain_valid(const char *s);

/* The record of a running task, as written to queue/running/<id>.json. */
int agent_chain_record_format(const char *id, const char *chain, uint64_t deadline_usec, char **ret);
/* Parses a record: 0 and the fields (owned), -EBADMSG when it is not one. */
int agent_chain_record_parse(const char *data, size_t len, char **ret_id, char **ret_chain,
                             uint64_t *ret_deadline_usec);

/* What a child task inherits from the agent that sends it. */
typedef struct AgentChainParent {
        char *task;             /* the parent task (the running one with the longest chain) */
        char *chain;            /* the child's chain: the parent's chain plus "AGENT/TASK" */
        char *agents;           /* every agent in the chains of the sender's running tasks, space-separated */
        uint64_t deadline_usec; /* the earliest deadline among them; 0 = none */
        size_t n_running;
} AgentChainParent;

void agent_chain_parent_done(AgentChainParent *p);

/* Reads the running records of agent (AGENTS_DIR/AGENT/queue/running/, only files owned by
 * owner and not writable by group or others, no symlinks) and fills ret. When the agent runs
 * several tasks, the child gets the longest chain, every agent of all of them counts for the
 * cycle check and the earliest deadline applies: a session cannot pick a shorter chain than the
 * one of any task of its agent. n_running 0 when none is running (or none could be read). */
int agent_chain_parent_read(const char *agents_dir, const char *agent, uid_t owner, AgentChainParent *ret);

/* Writes (0600, atomically) or removes queue/running/<id>.json below data_dir_fd. */
int agent_chain_running_write(int data_dir_fd, const char *id, const char *chain, uint64_t deadline_usec);
int agent_chain_running_remove(int data_dir_fd, const char *id);
/* Removes every record (at start: nothing runs yet). Creates the folder (0700) when missing. */
int agent_chain_running_clear(int data_dir_fd);
