/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error-detail.h"

/* The task envelope. A .task file is UTF-8 text, as in the original. It may start with a
 * YAML front-matter block:
 *
 *     ---
 *     priority: 7
 *     reply-to: sysadmin
 *     deadline: 2026-12-01T10:00:00Z
 *     conversation: latest
 *     to: sysadmin@host-b
 *     ---
 *     the task text
 *
 * The sender is never read from the file: it is the file's owner or the bus caller.
 * Library code: no logging; errors come back in a ConErrorDetail. */

#define CON_TASK_DEFAULT_MAX_SIZE (1024 * 1024)
#define CON_TASK_PRIORITY_DEFAULT 5
#define CON_TASK_PRIORITY_MAX 9
#define CON_TASK_ID_MAX 128

typedef struct ConTaskMeta {
        int priority;           /* 0..9, higher runs first; CON_TASK_PRIORITY_DEFAULT when absent */
        char *reply_to;         /* agent name (validated) or NULL */
        uint64_t deadline_usec; /* CLOCK_REALTIME usec, 0 = none */
        char *conversation;     /* the sender's conversation to continue (con_conversation_id_valid), or NULL */
        char *to;               /* "AGENT@HOST": an agent of another host, through the mesh gateway
                                 * (con_mesh_target_split), or NULL */
} ConTaskMeta;

typedef struct ConTask {
        ConTaskMeta meta;
        char *text;             /* body without front matter, NUL-terminated */
        size_t text_len;
} ConTask;

/* What con_utf8_check() found. */
typedef enum ConTaskProblem {
        CON_TASK_OK,
        CON_TASK_NUL_BYTE,
        CON_TASK_BAD_UTF8,
} ConTaskProblem;

/* Parses buf (not necessarily NUL-terminated). max_size 0 means the default. The front matter is
 * read with the one YAML reader (yaml-reader.h: the same rules as con.yaml); reterr gets the line
 * and column in the file, the key and the byte offset (no file name: the caller knows it).
 * Returns 0, -EFBIG (too large), -EBADMSG (any other problem; err filled in), -ENOMEM. */
int con_task_parse(const char *buf, size_t len, size_t max_size, ConTask **ret, ConErrorDetail *reterr);
ConTask *con_task_free(ConTask *t);
static inline void con_task_freep(ConTask **t) {
        con_task_free(*t);
}

/* Whether buf is task text (valid text in the sense of bus/basic/utf8.h): CON_TASK_OK, or
 * CON_TASK_NUL_BYTE or CON_TASK_BAD_UTF8 with *ret_offset at the first offending byte. */
ConTaskProblem con_utf8_check(const char *buf, size_t len, size_t *ret_offset);

/* Serialises meta + text back into the file format (front matter only when meta differs from
 * the defaults). Returns a newly allocated NUL-terminated string. */
int con_task_format(const ConTask *t, char **ret, size_t *ret_len);

/* A task's priority, the one range of every door (front matter, Deliver, the mesh). */
static inline bool con_task_priority_valid(long p) {
        return p >= 0 && p <= CON_TASK_PRIORITY_MAX;
}
/* A deadline as the front matter's deadline: key takes it (RFC 3339 with a zone, years
 * 1970..9999, fraction kept to the microsecond): CLOCK_REALTIME usec. s need not be
 * NUL-terminated. -EINVAL when it is not such a timestamp. The mesh carries deadlines in this
 * form (con_format_timestamp() writes it). */
int con_task_deadline_parse(const char *s, size_t len, uint64_t *ret);

/* Task ids. A new id sorts by creation time and never collides (time + pid + counter +
 * random): "20261129T113045.123456Z-1a2b3c-0001". A dropped NAME.task keeps NAME as its id
 * when NAME is a valid id. Valid ids: ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$, no "..". */
bool con_task_id_valid(const char *id);
/* Task states on the bus and in JSON are the names of the A2A protocol and MCP tasks: submitted,
 * working, input-required, completed, failed, canceled. The names before them (queued, running,
 * done, cancelled) are accepted for one release (docs/AGENT.md). Returns the A2A name for either,
 * NULL for anything else. */
const char *con_task_state_a2a(const char *s);
/* completed, failed or canceled (or an old name of one). */
bool con_task_state_is_final(const char *s);
/* A conversation id names one of the sender's conversations with an agent (docs/AGENT.md): the id
 * of the task that started it, or CON_CONVERSATION_LATEST for the sender's most recent one. It is
 * a path component, so it has the syntax of a task id. */
#define CON_CONVERSATION_LATEST "latest"
bool con_conversation_id_valid(const char *id);
int con_task_id_new(char **ret);
/* "hello.task" -> "hello"; -EINVAL when the name does not end in .task or NAME is invalid. */
int con_task_id_from_filename(const char *filename, char **ret);
