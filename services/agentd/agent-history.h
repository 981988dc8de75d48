/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "llm.h"

/* Conversations of the picoclaw runtime (docs/AGENT.md "Conversations"): what the model is given
 * of earlier tasks. A conversation belongs to one sender (uid) and one agent; it is kept by the
 * root service, in its own state, never in the agent user's workspace:
 *
 *     <agent dir>/queue/conversations/<uid>/<conversation-id>.json   {"version":2,"messages":[...]}
 *     <agent dir>/queue/conversations/<uid>/.latest                   the id of the sender's latest one
 *     <agent dir>/queue/conversations/<uid>/.lock                     flock()ed while a turn is appended
 *
 * The service reads the task's conversation before it forks the session and hands over its text;
 * the session sends back the completed turn, which the service validates (agent_history_parse)
 * and appends. The id of a conversation is the id of the task that started it. A task starts a
 * new conversation unless it names one of its own sender's (a conversation id is only ever looked
 * up in the sender's own directory, so naming another sender's id finds nothing). Only completed
 * turns are appended; files are replaced atomically (temp + rename) under the lock, after
 * re-reading, so two sessions of the same conversation never lose each other's turns.
 *
 * Context management: a conversation is cut to the model's window before every model call and
 * when it is saved: the oldest whole turns go first and the first kept user message carries
 * AGENT_HISTORY_MARKER. Large tool results are stored in <workspace>/tool-output/<uid>/ (the
 * session's own files) and replaced by their head and tail and the file's path.
 *
 * Library code: no logging. */

#define AGENT_HISTORY_DIR             "conversations" /* in the service's queue/ folder */
#define AGENT_HISTORY_LEGACY_DIR      "sessions"      /* in the workspace: removed unread */
#define AGENT_HISTORY_SPILL_DIR       "tool-output"
#define AGENT_HISTORY_FILE_MAX        (16U * 1024U * 1024U) /* bytes of one conversation file */
#define AGENT_HISTORY_MESSAGES_MAX    1000U      /* messages of one conversation file */
#define AGENT_HISTORY_KEEP            100U       /* conversations kept per sender (the newest) */
#define AGENT_HISTORY_SPILL_KEEP      200U       /* files kept in tool-output/ (the newest) */
#define AGENT_HISTORY_BYTES_PER_TOKEN 3U         /* estimate, on the safe side for JSON text */
#define AGENT_HISTORY_INLINE_MAX      (16U * 1024U) /* a tool result above this is stored as a file */
#define AGENT_HISTORY_INLINE_HEAD     (6U * 1024U)
#define AGENT_HISTORY_INLINE_TAIL     (6U * 1024U)
#define AGENT_HISTORY_MARKER          "[Earlier messages of this conversation were left out to fit the model's " \
                                      "context window.]"

/* ---- the file format (pure; fuzzed by tests/fuzz/fuzz-history.c) ---- */

/* Appends the messages of a conversation file's text to c. The text must be a JSON object with a
 * "messages" array that starts with a user message, whose tool results answer the calls of the
 * assistant message before them, at most AGENT_HISTORY_MESSAGES_MAX messages. 0, -EBADMSG with
 * *ret_error (c unchanged), or -ENOMEM. */
int agent_history_parse(const char *text, size_t len, ConLlmConversation *c, char **ret_error);
/* The file text of c's messages from index from on. */
int agent_history_format(const ConLlmConversation *c, size_t from, char **ret);

/* ---- context bounds (pure) ---- */

/* The window in bytes for a model window of window_tokens, minus room for the answer. */
size_t agent_history_budget(unsigned window_tokens, unsigned max_tokens);
/* Estimated request bytes of c (system prompt, tool schemas, messages from index from on). */
size_t agent_history_estimate(const ConLlmConversation *c, size_t from);
/* Index where the turn containing message i starts (the user message at or before i), 0 if none. */
size_t agent_history_turn_start(const ConLlmConversation *c, size_t i);
/* Makes c fit budget bytes: drops the oldest whole turns before index *protect (the current
 * turn, never dropped; *protect is moved down by the number dropped) and marks the first kept
 * user message with AGENT_HISTORY_MARKER. When that is not enough, tool results of the current
 * turn (oldest first) and then its user message are cut to head and tail. *ret_dropped: messages
 * dropped. 0 or -ENOMEM; c may still be over budget when even that was not enough. */
int agent_history_fit(ConLlmConversation *c, size_t *protect, size_t budget, size_t *ret_dropped);
/* text cut to its first head and last tail bytes (at UTF-8 boundaries) with a line between them
 * saying how much was left out and, when where is not NULL, where the whole text is. */
int agent_history_head_tail(const char *text, size_t head, size_t tail, const char *where, char **ret);

/* ---- the store ---- */

/* Opens (creating with create, root too) <root>/<uid>/, 0700, without following symlinks. root
 * is the service's conversations folder. -ENOENT when it does not exist and create is false. */
int agent_history_open_dir(const char *root, uid_t uid, bool create, int *ret_fd);
/* Which conversation a task belongs to. requested NULL: a new one, id task_id.
 * CON_CONVERSATION_LATEST: the sender's latest, or a new one when there is none. Another id: it
 * must exist in the sender's directory, else -ENOENT. *ret_new says whether it is new. */
int agent_history_resolve(int dfd, const char *requested, const char *task_id, char **ret_id, bool *ret_new);
/* The text of conversation id in dfd, checked with agent_history_parse: -ENOENT when there is
 * none, -EBADMSG with *ret_error when the file is unreadable. */
int agent_history_read(int dfd, const char *id, char **ret_text, size_t *ret_len, char **ret_error);
/* Appends the messages of conversation id in dfd to c: -ENOENT when there is none, -EBADMSG with
 * *ret_error when the file is unreadable. */
int agent_history_load(int dfd, const char *id, ConLlmConversation *c, char **ret_error);
/* Appends the turn c->messages[turn_start..] to conversation id (under the lock, re-reading the
 * file first), cuts it to budget bytes, writes it atomically (0600) and makes it the latest.
 * Beyond AGENT_HISTORY_KEEP conversations of the sender, the least recently used are deleted. */
int agent_history_commit(int dfd, const char *id, const ConLlmConversation *c, size_t turn_start, size_t budget);
/* The same for a turn sent by a session as file text (agent_history_format): at most
 * AGENT_HISTORY_FILE_MAX bytes, checked with agent_history_parse (-EBADMSG with *ret_error). */
int agent_history_store_turn(int dfd, const char *id, const char *text, size_t len, size_t budget,
                              char **ret_error);
/* /new: the sender's next --continue without an id starts a new conversation. */
int agent_history_end_latest(const char *root, uid_t uid);
/* Deletes the regular files ending in suffix (not starting with '.') of directory dfd beyond the
 * keep most recently modified ones, never the one named except (con_spool_prune() without an age).
 * Returns how many were deleted. */
int agent_history_prune(int dfd, const char *suffix, size_t keep, const char *except);
/* /forget: deletes the sender's conversations. Returns how many were deleted. */
int agent_history_forget(const char *root, uid_t uid);
/* Removes <workspace>/sessions/ of earlier versions (written by the sessions, so never read),
 * without following symlinks. 1 when there was one, 0 when not, or -errno. */
int agent_history_remove_legacy(const char *workspace);

/* Stores text as <workspace>/tool-output/<uid>/<name> (0600, created exclusively) and returns its
 * path. Beyond AGENT_HISTORY_SPILL_KEEP files there, the oldest are deleted. */
int agent_history_spill(const char *workspace, uid_t uid, const char *name, const char *text, char **ret_path);
