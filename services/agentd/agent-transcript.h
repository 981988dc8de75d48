/* SPDX-License-Identifier: MIT */
#pragma once

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Per-task transcripts (docs/AGENT.md "Transcripts"): pure logic, no bus, no logging.
 *
 * A session of the tool loop writes one JSON line per step on its progress pipe:
 *
 *   {"ev":"phase","turn":N,"phase":"model"|"tool"}          about to call the model, run a tool
 *   {"ev":"model","turn":N,"model":s,"stop":s,"in":t,"out":t,"ms":t[,"error":true]}
 *   {"ev":"tool","turn":N,"tool":s,"args":s,"args_bytes":t,"error":b,"bytes":t,"ms":t[,"exit":n]}
 *
 * A step whose line would pass AGENT_TRANSCRIPT_LINE_MAX is sent without its arguments (and with
 * its names cut) and "truncated":true, never left out.
 *
 * The service checks each line (the session is not trusted: unknown events and keys are dropped,
 * strings are cut and made valid UTF-8, numbers bounded), keeps the steps (at most
 * AGENT_TRANSCRIPT_STEPS_MAX) and sums them up, and writes the result when the session ends to
 * queue/transcripts/<id>.json, root's file in root's folder: the agent user cannot read or change
 * it. Arguments are kept up to AGENT_TRANSCRIPT_ARGS_MAX bytes with their full size; outputs only
 * by size. */

#define AGENT_TRANSCRIPT_LINE_MAX 4096
#define AGENT_TRANSCRIPT_ARGS_MAX 512
#define AGENT_TRANSCRIPT_STEPS_MAX 1000
#define AGENT_TRANSCRIPT_DIR "queue/transcripts"
#define AGENT_TRANSCRIPT_KEEP 2000      /* transcript files kept per agent (newest) */

typedef struct AgentTranscript {
        cJSON *steps;           /* array of checked steps (model and tool events) */
        size_t n_dropped;       /* steps beyond the limit, or malformed lines */
        size_t n_phases;        /* phase lines (TaskProgress); beyond 2 * AGENT_TRANSCRIPT_STEPS_MAX
                                 * they are not signalled: a session cannot flood the bus */
        unsigned turns;
        unsigned tool_calls;
        uint64_t tokens_in, tokens_out;
        char *model;            /* the model that answered last */
        uint64_t started_usec, ended_usec; /* CLOCK_REALTIME, of the session */
} AgentTranscript;

void agent_transcript_done(AgentTranscript *t);

/* Adds one line the session wrote. Returns 1 and *ret_turn, *ret_phase (static) for a phase event
 * to signal (TaskProgress; at most 2 * AGENT_TRANSCRIPT_STEPS_MAX per task), 0 for a step kept or
 * a line dropped, -ENOMEM. */
int agent_transcript_add_line(AgentTranscript *t, const char *line, size_t len, unsigned *ret_turn,
                              const char **ret_phase);

/* The line a session writes for step j (a "phase", "model" or "tool" object): its JSON and a
 * newline, at most AGENT_TRANSCRIPT_LINE_MAX bytes. A step too long for that (a model's tool name
 * of any length, arguments that escape to 6 bytes a byte) goes without its arguments, with its
 * names cut to AGENT_TRANSCRIPT_NAME_MAX bytes on a character boundary and "truncated":true;
 * j is changed then. NULL on out of memory. */
#define AGENT_TRANSCRIPT_NAME_MAX 64
char *agent_transcript_step_line(cJSON *j);

/* The session part as a JSON object: {"model","turns","tool_calls","tokens_in","tokens_out",
 * "started","ended","steps":[...],"dropped"}. */
cJSON *agent_transcript_to_json(const AgentTranscript *t);

/* queue/transcripts/<id>.json below data_dir_fd: written atomically (0600, folder 0700, keeping the
 * newest AGENT_TRANSCRIPT_KEEP) with the uid of the task's sender, read back only when it is the
 * service's own file and of the same sender as the task asked about: a task id is the sender's
 * only while its records last, and the transcript of an earlier task under that id (another
 * sender's, kept longer) must not be served (-EACCES). The sender's uid is not in *ret. */
int agent_transcript_write(int data_dir_fd, const char *id, uid_t sender_uid, const cJSON *j);
int agent_transcript_read(int data_dir_fd, const char *id, uid_t sender_uid, cJSON **ret);
