/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdio.h>
#include <syslog.h>

#include "macro.h"

/* The one logger of the services (docs/LOGGING.md). Programs call log_setup() once; library code
 * in bus/ still never logs (it returns errors and the program logs them where it handles them).
 *
 * Where a line goes and how it looks depends on what stderr is:
 *   the journal (JOURNAL_STREAM names stderr's dev:ino)  "<N>message"  (the journal adds time,
 *                                                        identifier and pid; N sets the priority)
 *   a terminal                                           "ident: message"
 *   anything else (a log file, a pipe)                   "2026-12-06T07:44:24.123456+0000 ident[pid]
 *                                                        warning: message"
 * Lines above the maximum level (LOG_INFO by default; --log-level or CON_LOG_LEVEL) are dropped. */

typedef enum ConLogTarget {
        CON_LOG_TARGET_CONSOLE,         /* a terminal: "ident: message" */
        CON_LOG_TARGET_JOURNAL,         /* stderr is a journal stream: "<N>message" */
        CON_LOG_TARGET_FILE,            /* a file or pipe: timestamp, ident[pid], priority name */
        _CON_LOG_TARGET_MAX,
} ConLogTarget;

/* ident: the program name shown in lines ("con-routerd"). Reads CON_LOG_LEVEL (a name or number,
 * ignored when invalid) and picks the target from stderr. */
void log_setup(const char *ident);

/* Sends stdout and stderr to path (appending, created 0640; parent folder created 0700), so that
 * everything the process writes there, sanitizer reports included, lands in the file. Remembers
 * the path for log_reopen(). Returns 0 or a negative errno (stderr is then left as it was). */
int log_open_file(const char *path);
/* After logrotate moved the file (SIGHUP): open the remembered path again. No-op without one. */
int log_reopen(void);

/* The target chosen from stderr: CON_LOG_TARGET_JOURNAL when $JOURNAL_STREAM ("DEV:INO") names
 * the file fd is open on, CONSOLE for a terminal, FILE otherwise. Exposed for the tests. */
ConLogTarget log_target_for_fd(int fd, const char *journal_stream);
void log_set_target(ConLogTarget t);
ConLogTarget log_get_target(void);

/* "debug", "info", "notice", "warning" (or "warn"), "err" (or "error"), "crit", "alert", "emerg",
 * or 0..7. Returns the level or -EINVAL. */
int log_level_from_string(const char *s);
const char *log_level_to_string(int level);
void log_set_max_level(int level);
int log_get_max_level(void);

/* Formats one line (without the newline) as the target wants it, into buf; realtime_usec and pid
 * are used by the file target only. Exposed for the tests. Returns buf. */
char *log_format_line(char *buf, size_t size, ConLogTarget target, int level, const char *ident, int pid,
                      unsigned long long realtime_usec, const char *message);

/* Writes one line when level passes the maximum. Returns -errnum (or 0 when errnum is 0), so
 * callers can write `return log_error_errno(r, "...: %m")`-style code; %m is supported. */
int log_internal(int level, int errnum, const char *fmt, ...) _printf_(3, 4);

#define log_full_errno(level, error, ...) log_internal((level), (error), __VA_ARGS__)
#define log_full(level, ...) (void) log_internal((level), 0, __VA_ARGS__)

#define log_debug(...)   log_full(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)    log_full(LOG_INFO, __VA_ARGS__)
#define log_notice(...)  log_full(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, __VA_ARGS__)
#define log_error(...)   log_full(LOG_ERR, __VA_ARGS__)

#define log_warning_errno(error, ...) log_full_errno(LOG_WARNING, error, __VA_ARGS__)
#define log_error_errno(error, ...)   log_full_errno(LOG_ERR, error, __VA_ARGS__)

/* Structured events: task and violation events carry a fixed MESSAGE_ID per kind so that
 * `journalctl MESSAGE_ID=...` finds them (the ids are listed in docs/LOGGING.md). Under the
 * journal they are sent with sd_journal_send() and these fields only: identifiers, names and
 * statuses, never task text, results or secrets. Elsewhere they are an ordinary line. */
typedef enum ConLogEvent {
        CON_EVENT_TASK_ACCEPTED,
        CON_EVENT_TASK_COMPLETED,
        CON_EVENT_TASK_FAILED,
        CON_EVENT_TASK_ROUTED,
        CON_EVENT_TASK_REJECTED,
        CON_EVENT_VIOLATION_RAISED,
        CON_EVENT_VIOLATION_CLEARED,
        CON_EVENT_ACTION_TAKEN,
        _CON_EVENT_MAX,
} ConLogEvent;

typedef struct ConLogFields {
        const char *task_id;    /* CON_TASK_ID */
        const char *agent;      /* CON_AGENT */
        const char *sender;     /* CON_SENDER: a user name or uid */
        const char *status;     /* CON_STATUS: completed, failed, cancelled, ... */
        const char *contract;   /* CON_CONTRACT */
        const char *action;     /* CON_ACTION: alert, kill_session, quarantine, ... */
} ConLogFields;

/* The 32 hex digits of the event's MESSAGE_ID, NULL when out of range. */
const char *log_event_message_id(ConLogEvent e);
const char *log_event_to_string(ConLogEvent e);

void log_event(ConLogEvent e, int level, const ConLogFields *f, const char *fmt, ...) _printf_(4, 5);
