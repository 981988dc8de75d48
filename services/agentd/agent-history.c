/* SPDX-License-Identifier: MIT */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/param.h>
#include <sys/stat.h>

#include "error-detail.h"
#include "json-util.h"
#include "agent-history.h"
#include "agent-wire.h"
#include "fileio.h"
#include "macro.h"
#include "spool.h"
#include "strv.h"
#include "task.h"
#include "utf8.h"


#define HISTORY_VERSION 2
#define LATEST_NAME ".latest"
#define LOCK_NAME ".lock"
#define MESSAGE_OVERHEAD 64U    /* JSON keys and quotes around one message */
#define CUT_HEAD 1024U          /* what fit() keeps of a tool result when nothing else helps */
#define CUT_TAIL 1024U

static int copy_message(ConLlmConversation *dst, const ConLlmMessage *x) {
        switch (x->role) {
        case CON_LLM_ROLE_USER:
                return con_llm_conversation_add_user(dst, x->content);
        case CON_LLM_ROLE_ASSISTANT:
                return con_llm_conversation_add_assistant(dst, x->content, x->tool_calls, x->n_tool_calls);
        default:
                return con_llm_conversation_add_tool_result(dst, x->tool_call_id, x->content, x->is_error);
        }
}

/* ---- the file format ---- */

int agent_history_parse(const char *text, size_t len, ConLlmConversation *c, char **ret_error) {
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *tmp = con_llm_conversation_new();
        int r;

        if (!tmp)
                return -ENOMEM;
        if (!text || len == 0 || memchr(text, 0, len))
                return con_error_textf(ret_error, -EBADMSG, "not a conversation (empty, or a NUL byte in it)");
        _cleanup_cjson_ cJSON *o = cJSON_ParseWithLength(text, len);
        const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(o, "messages");
        if (!cJSON_IsObject(o) || !cJSON_IsArray(msgs))
                return con_error_textf(ret_error, -EBADMSG, "not a conversation (no messages array)");
        const cJSON *version = cJSON_GetObjectItemCaseSensitive(o, "version");
        if (version && (!cJSON_IsNumber(version) || version->valuedouble < 1 || version->valuedouble > HISTORY_VERSION))
                return con_error_textf(ret_error, -EBADMSG, "conversation version must be 1 to %d", HISTORY_VERSION);
        if (cJSON_GetArraySize(msgs) > (int) AGENT_HISTORY_MESSAGES_MAX)
                return con_error_textf(ret_error, -EBADMSG, "more than %u messages", AGENT_HISTORY_MESSAGES_MAX);

        /* Tool results must answer the calls of the assistant message before them. */
        _cleanup_strv_free_ char **open_calls = NULL;
        int i = 0;
        const cJSON *m;
        cJSON_ArrayForEach(m, msgs) {
                const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
                const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
                const char *ct = cJSON_IsString(content) ? content->valuestring : NULL;
                const char *rs = cJSON_IsString(role) ? role->valuestring : "";
                if (!cJSON_IsObject(m))
                        return con_error_textf(ret_error, -EBADMSG, "messages[%d] is not an object", i);
                if (content && !cJSON_IsNull(content) && !ct)
                        return con_error_textf(ret_error, -EBADMSG, "messages[%d].content must be a string", i);
                if (i == 0 && !streq(rs, "user"))
                        return con_error_textf(ret_error, -EBADMSG, "messages[0] is not a user message");
                if (streq(rs, "user")) {
                        if (!ct)
                                return con_error_textf(ret_error, -EBADMSG, "messages[%d].content missing", i);
                        r = con_llm_conversation_add_user(tmp, ct);
                        open_calls = strv_free(open_calls);
                } else if (streq(rs, "assistant")) {
                        const cJSON *calls = cJSON_GetObjectItemCaseSensitive(m, "tool_calls"), *tc;
                        if (calls && !cJSON_IsNull(calls) && !cJSON_IsArray(calls))
                                return con_error_textf(ret_error, -EBADMSG, "messages[%d].tool_calls must be an array", i);
                        int k = cJSON_IsArray(calls) ? cJSON_GetArraySize(calls) : 0;
                        if (k > (int) CON_LLM_TOOL_CALLS_MAX)
                                return con_error_textf(ret_error, -EBADMSG, "messages[%d]: more than %u tool calls", i,
                                                 CON_LLM_TOOL_CALLS_MAX);
                        _cleanup_free_ ConLlmToolCall *tcs = calloc((size_t) k + 1, sizeof(ConLlmToolCall));
                        _cleanup_strv_free_ char **args_keep = NULL;
                        size_t n = 0;
                        if (!tcs)
                                return -ENOMEM;
                        open_calls = strv_free(open_calls);
                        const cJSON *list = cJSON_IsArray(calls) ? calls : NULL;
                        cJSON_ArrayForEach(tc, list) {
                                const cJSON *id = cJSON_GetObjectItemCaseSensitive(tc, "id");
                                const cJSON *name = cJSON_GetObjectItemCaseSensitive(tc, "name");
                                const cJSON *args = cJSON_GetObjectItemCaseSensitive(tc, "arguments");
                                if (!cJSON_IsString(id) || isempty(id->valuestring) || !cJSON_IsString(name) ||
                                    isempty(name->valuestring) || (args && !cJSON_IsObject(args)))
                                        return con_error_textf(ret_error, -EBADMSG, "messages[%d].tool_calls malformed", i);
                                /* Ids are compared as the conversation will hold them: bad bytes become
                                 * U+FFFD, so two ids that differ only there are the same id. */
                                _cleanup_free_ char *sid = NULL;
                                if (con_utf8_sanitize(id->valuestring, strlen(id->valuestring), &sid, NULL) < 0)
                                        return -ENOMEM;
                                if (strv_contains(open_calls, sid))
                                        return con_error_textf(ret_error, -EBADMSG, "messages[%d]: tool call id \"%s\" used twice",
                                                         i, sid);
                                char *a = args ? cJSON_PrintUnformatted(args) : strdup("{}");
                                if (!a || strv_consume(&args_keep, a) < 0 || strv_extend(&open_calls, sid) < 0)
                                        return -ENOMEM;
                                tcs[n++] = (ConLlmToolCall) { .id = id->valuestring, .name = name->valuestring,
                                                              .arguments = a };
                        }
                        r = con_llm_conversation_add_assistant(tmp, ct, tcs, n);
                } else if (streq(rs, "tool")) {
                        const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "tool_call_id");
                        _cleanup_free_ char *sid = NULL;
                        if (cJSON_IsString(id) &&
                            con_utf8_sanitize(id->valuestring, strlen(id->valuestring), &sid, NULL) < 0)
                                return -ENOMEM;
                        if (!sid || !strv_contains(open_calls, sid) || !ct)
                                return con_error_textf(ret_error, -EBADMSG,
                                                 "messages[%d] is a tool result that answers no earlier call", i);
                        r = con_llm_conversation_add_tool_result(tmp, id->valuestring, ct,
                                                                 cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "is_error")));
                } else
                        return con_error_textf(ret_error, -EBADMSG, "messages[%d].role must be user, assistant or tool", i);
                if (r < 0)
                        return r;
                i++;
        }
        for (size_t k = 0; k < tmp->n_messages; k++) {
                r = copy_message(c, &tmp->messages[k]);
                if (r < 0)
                        return r;
        }
        return 0;
}

int agent_history_format(const ConLlmConversation *c, size_t from, char **ret) {
        _cleanup_cjson_ cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddNumberToObject(o, "version", HISTORY_VERSION))
                return -ENOMEM;
        cJSON *msgs = cJSON_AddArrayToObject(o, "messages");
        if (!msgs)
                return -ENOMEM;
        int r = agent_llm_messages_json(c, from, msgs);
        if (r < 0)
                return r;
        *ret = cJSON_PrintUnformatted(o);
        return *ret ? 0 : -ENOMEM;
}

/* ---- context bounds ---- */

size_t agent_history_budget(unsigned window_tokens, unsigned max_tokens) {
        unsigned usable = window_tokens > 2 * max_tokens ? window_tokens - max_tokens : window_tokens / 2;
        return (size_t) usable * AGENT_HISTORY_BYTES_PER_TOKEN;
}

static size_t message_size(const ConLlmMessage *m) {
        size_t s = MESSAGE_OVERHEAD + strlen(strempty(m->content)) + strlen(strempty(m->tool_call_id));
        for (size_t i = 0; i < m->n_tool_calls; i++)
                s += MESSAGE_OVERHEAD + strlen(strempty(m->tool_calls[i].id)) + strlen(strempty(m->tool_calls[i].name)) +
                     strlen(strempty(m->tool_calls[i].arguments));
        return s;
}

static size_t fixed_size(const ConLlmConversation *c) {
        size_t s = MESSAGE_OVERHEAD + strlen(strempty(c->system));
        for (size_t i = 0; i < c->n_tools; i++)
                s += MESSAGE_OVERHEAD + strlen(strempty(c->tools[i].name)) + strlen(strempty(c->tools[i].description)) +
                     strlen(strempty(c->tools[i].parameters));
        return s;
}

size_t agent_history_estimate(const ConLlmConversation *c, size_t from) {
        size_t s = fixed_size(c);
        for (size_t i = from; i < c->n_messages; i++)
                s += message_size(&c->messages[i]);
        return s;
}

size_t agent_history_turn_start(const ConLlmConversation *c, size_t i) {
        if (c->n_messages == 0)
                return 0;
        if (i >= c->n_messages)
                i = c->n_messages - 1;
        for (;; i--) {
                if (c->messages[i].role == CON_LLM_ROLE_USER || i == 0)
                        return i;
        }
}

int agent_history_head_tail(const char *text, size_t head, size_t tail, const char *where, char **ret) {
        size_t l = strlen(text);
        if (l <= head + tail) {
                *ret = strdup(text);
                return *ret ? 0 : -ENOMEM;
        }
        size_t h = con_utf8_cut(text, l, head), t = con_utf8_tail_start(text, l, tail);
        int r;
        if (where)
                r = asprintf(ret, "[%zu bytes; the whole text is in %s. Shown: the first %zu and the last %zu bytes.]\n"
                             "%.*s\n[... %zu bytes left out ...]\n%s",
                             l, where, h, l - t, (int) h, text, t - h, text + t);
        else
                r = asprintf(ret, "%.*s\n[... %zu of %zu bytes left out to fit the context window ...]\n%s",
                             (int) h, text, t - h, l, text + t);
        return r < 0 ? -ENOMEM : 0;
}

static int mark_first(ConLlmConversation *c) {
        if (c->n_messages == 0 || c->messages[0].role != CON_LLM_ROLE_USER)
                return 0;
        ConLlmMessage *m = &c->messages[0];
        if (startswith(strempty(m->content), AGENT_HISTORY_MARKER))
                return 0;
        char *n = NULL;
        if (asprintf(&n, AGENT_HISTORY_MARKER "\n\n%s", strempty(m->content)) < 0)
                return -ENOMEM;
        free(m->content);
        m->content = n;
        return 0;
}

static int cut_content(ConLlmMessage *m, size_t head, size_t tail) {
        _cleanup_free_ char *n = NULL;
        int r = agent_history_head_tail(strempty(m->content), head, tail, NULL, &n);
        if (r < 0)
                return r;
        free(m->content);
        m->content = TAKE_PTR(n);
        return 0;
}

int agent_history_fit(ConLlmConversation *c, size_t *protect, size_t budget, size_t *ret_dropped) {
        size_t total = agent_history_estimate(c, 0), dropped = 0;
        size_t p = MIN(*protect, c->n_messages);
        int r;

        if (ret_dropped)
                *ret_dropped = 0;
        if (total <= budget)
                return 0;

        /* The oldest whole turns before the protected one. */
        size_t cut = 0, removed = 0, marker = strlen(AGENT_HISTORY_MARKER) + 2;
        while (cut < p && total - removed + marker > budget) {
                removed += message_size(&c->messages[cut++]);
                while (cut < p && c->messages[cut].role != CON_LLM_ROLE_USER)
                        removed += message_size(&c->messages[cut++]);
        }
        if (cut > 0) {
                con_llm_conversation_remove(c, 0, cut);
                dropped = cut;
                p -= cut;
                r = mark_first(c);
                if (r < 0)
                        return r;
        }

        /* Still too large: cut the results of the current turn's tool calls, oldest first, then
         * its task text. The whole tool outputs are in the workspace already when large. */
        size_t est = agent_history_estimate(c, 0);
        for (size_t i = p; i < c->n_messages && est > budget; i++) {
                ConLlmMessage *m = &c->messages[i];
                if (m->role == CON_LLM_ROLE_TOOL && strlen(strempty(m->content)) > 4 * (CUT_HEAD + CUT_TAIL)) {
                        size_t before = message_size(m);
                        r = cut_content(m, CUT_HEAD, CUT_TAIL);
                        if (r < 0)
                                return r;
                        est = est - before + message_size(m);
                }
        }
        if (est > budget && p < c->n_messages && c->messages[p].role == CON_LLM_ROLE_USER) {
                size_t own = strlen(strempty(c->messages[p].content)), over = est - budget;
                if (own > over + 2 * CUT_HEAD) {
                        size_t keep = own - over - CUT_HEAD; /* room for the note */
                        r = cut_content(&c->messages[p], keep / 2, keep / 2);
                        if (r < 0)
                                return r;
                }
        }
        *protect = p;
        if (ret_dropped)
                *ret_dropped = dropped;
        return 0;
}

/* ---- the store ---- */

static int open_subdir(int dfd, const char *name, bool create, int *ret_fd) {
        if (create && mkdirat(dfd, name, 0700) < 0 && errno != EEXIST)
                return -errno;
        int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOTDIR ? enotdir_or_eloop(dfd, name) : -errno;
        *ret_fd = fd;
        return 0;
}

int agent_history_open_dir(const char *root, uid_t uid, bool create, int *ret_fd) {
        _cleanup_close_ int rfd = -EBADF;
        char name[32];

        if (create && mkdir(root, 0700) < 0 && errno != EEXIST)
                return -errno;
        rfd = open_nofollow(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (rfd < 0)
                return rfd;
        (void) snprintf(name, sizeof(name), "%u", (unsigned) uid);
        return open_subdir(rfd, name, create, ret_fd);
}

static bool conversation_exists(int dfd, const char *id) {
        char name[CON_TASK_ID_MAX + 8];
        struct stat st;
        if (!con_conversation_id_valid(id))
                return false;
        (void) snprintf(name, sizeof(name), "%s.json", id);
        return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

int agent_history_resolve(int dfd, const char *requested, const char *task_id, char **ret_id, bool *ret_new) {
        const char *id = NULL;
        _cleanup_free_ char *latest = NULL;

        if (!con_task_id_valid(task_id))
                return -EINVAL;
        if (requested && streq(requested, CON_CONVERSATION_LATEST)) {
                size_t l;
                if (dfd >= 0 && read_file_at(dfd, LATEST_NAME, CON_TASK_ID_MAX + 2, &latest, &l) >= 0) {
                        latest[strcspn(latest, "\n")] = 0;
                        if (conversation_exists(dfd, latest))
                                id = latest;
                }
        } else if (requested) {
                if (!con_conversation_id_valid(requested))
                        return -EINVAL;
                if (dfd < 0 || !conversation_exists(dfd, requested))
                        return -ENOENT;
                id = requested;
        }
        *ret_new = !id;
        *ret_id = strdup(id ?: task_id);
        return *ret_id ? 0 : -ENOMEM;
}

int agent_history_read(int dfd, const char *id, char **ret_text, size_t *ret_len, char **ret_error) {
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *c = con_llm_conversation_new();
        char name[CON_TASK_ID_MAX + 8];
        _cleanup_free_ char *text = NULL;
        _cleanup_free_ char *err = NULL;
        size_t len;

        if (!c)
                return -ENOMEM;
        if (!con_conversation_id_valid(id))
                return -EINVAL;
        (void) snprintf(name, sizeof(name), "%s.json", id);
        int r = read_file_at(dfd, name, AGENT_HISTORY_FILE_MAX, &text, &len);
        if (r == -ENOENT)
                return r;
        if (r < 0)
                return con_error_textf(ret_error, -EBADMSG, "%s: cannot read: %s", name, strerror(-r));
        r = agent_history_parse(text, len, c, &err);
        if (r == -EBADMSG)
                return con_error_textf(ret_error, r, "%s: %s", name, strempty(err));
        if (r < 0)
                return r;
        *ret_text = TAKE_PTR(text);
        *ret_len = len;
        return 0;
}

int agent_history_load(int dfd, const char *id, ConLlmConversation *c, char **ret_error) {
        _cleanup_free_ char *text = NULL;
        size_t len;

        int r = agent_history_read(dfd, id, &text, &len, ret_error);
        if (r < 0)
                return r;
        return agent_history_parse(text, len, c, ret_error);
}

int agent_history_commit(int dfd, const char *id, const ConLlmConversation *c, size_t turn_start, size_t budget) {
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *all = con_llm_conversation_new();
        _cleanup_free_ char *text = NULL, *err = NULL;
        char name[CON_TASK_ID_MAX + 8];
        int r;

        if (!all)
                return -ENOMEM;
        if (!con_conversation_id_valid(id) || turn_start >= c->n_messages ||
            c->messages[turn_start].role != CON_LLM_ROLE_USER)
                return -EINVAL;
        _cleanup_close_ int lock = openat(dfd, LOCK_NAME, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (lock < 0)
                return -errno;
        if (flock(lock, LOCK_EX) < 0)
                return -errno;

        /* Re-read under the lock: another session may have added a turn since this one loaded. */
        r = agent_history_load(dfd, id, all, &err);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                /* None yet, or unreadable: this turn starts it afresh. */
                con_llm_conversation_free(all);
                if (!(all = con_llm_conversation_new()))
                        return -ENOMEM;
        }
        size_t protect = all->n_messages;
        for (size_t i = turn_start; i < c->n_messages; i++) {
                r = copy_message(all, &c->messages[i]);
                if (r < 0)
                        return r;
        }
        r = agent_history_fit(all, &protect, budget, NULL);
        if (r < 0)
                return r;
        /* A bound on the number of messages too (the reader's limit): whole turns, oldest first. */
        while (all->n_messages > AGENT_HISTORY_MESSAGES_MAX && protect > 0) {
                size_t next = 1;
                while (next < protect && all->messages[next].role != CON_LLM_ROLE_USER)
                        next++;
                con_llm_conversation_remove(all, 0, next);
                protect -= next;
                r = mark_first(all);
                if (r < 0)
                        return r;
        }
        if (all->n_messages > AGENT_HISTORY_MESSAGES_MAX)
                return -E2BIG;
        r = agent_history_format(all, 0, &text);
        if (r < 0)
                return r;
        if (strlen(text) > AGENT_HISTORY_FILE_MAX)
                return -E2BIG;
        ConSpoolWrite o = { .mode = 0600, .uid = (uid_t) -1, .gid = (gid_t) -1, .sync = false };
        (void) snprintf(name, sizeof(name), "%s.json", id);
        r = con_spool_write(dfd, name, text, strlen(text), &o);
        if (r < 0)
                return r;
        _cleanup_free_ char *line = NULL;
        if (asprintf(&line, "%s\n", id) < 0)
                return -ENOMEM;
        r = con_spool_write(dfd, LATEST_NAME, line, strlen(line), &o);
        if (r < 0)
                return r;
        /* Every task starts a conversation: keep the sender's most recently used ones. */
        r = agent_history_prune(dfd, ".json", AGENT_HISTORY_KEEP - 1, name);
        return r == -ENOMEM ? r : 0;
}

int agent_history_store_turn(int dfd, const char *id, const char *text, size_t len, size_t budget,
                              char **ret_error) {
        _cleanup_(con_llm_conversation_freep) ConLlmConversation *turn = con_llm_conversation_new();
        _cleanup_free_ char *err = NULL;

        if (!turn)
                return -ENOMEM;
        if (len > AGENT_HISTORY_FILE_MAX)
                return con_error_textf(ret_error, -E2BIG, "the turn is larger than %u bytes", AGENT_HISTORY_FILE_MAX);
        int r = agent_history_parse(text, len, turn, &err);
        if (r == -EBADMSG)
                return con_error_textf(ret_error, r, "%s", strempty(err));
        if (r < 0)
                return r;
        if (turn->n_messages == 0)
                return con_error_textf(ret_error, -EBADMSG, "the turn has no messages");
        return agent_history_commit(dfd, id, turn, 0, budget);
}

int agent_history_prune(int dfd, const char *suffix, size_t keep, const char *except) {
        return con_spool_prune(dfd, suffix, keep, 0, except);
}

int agent_history_end_latest(const char *root, uid_t uid) {
        _cleanup_close_ int dfd = -EBADF;
        int r = agent_history_open_dir(root, uid, false, &dfd);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        if (unlinkat(dfd, LATEST_NAME, 0) < 0 && errno != ENOENT)
                return -errno;
        return 0;
}

int agent_history_forget(const char *root, uid_t uid) {
        _cleanup_close_ int rfd = -EBADF;
        char name[32];
        int n = 0;

        rfd = open_nofollow(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (rfd < 0)
                return rfd == -ENOENT ? 0 : rfd;
        (void) snprintf(name, sizeof(name), "%u", (unsigned) uid);
        int fd = openat(rfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? 0 : errno == ENOTDIR ? enotdir_or_eloop(rfd, name) : -errno;
        _cleanup_closedir_ DIR *d = fdopendir(fd);
        if (!d) {
                safe_close(fd);
                return -errno;
        }
        struct dirent *de;
        while ((de = readdir(d))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                /* unlinkat never follows a symlink; a directory in here is not ours to remove. */
                if (unlinkat(dirfd(d), de->d_name, 0) < 0) {
                        if (errno == ENOENT || errno == EISDIR || errno == EPERM)
                                continue;
                        return -errno;
                }
                if (endswith(de->d_name, ".json") && de->d_name[0] != '.')
                        n++;
        }
        d = (closedir(d), NULL);
        if (unlinkat(rfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT && errno != ENOTEMPTY)
                return -errno;
        return n;
}

/* Removes name in dfd and, for a directory, everything below it (at most depth levels), never
 * following a symlink. */
static int remove_tree_at(int dfd, const char *name, unsigned depth) {
        if (unlinkat(dfd, name, 0) >= 0 || errno == ENOENT)
                return 0;
        if (errno != EISDIR && errno != EPERM)
                return -errno;
        if (depth == 0)
                return -ELOOP;
        int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        _cleanup_closedir_ DIR *d = fdopendir(fd);
        if (!d) {
                safe_close(fd);
                return -errno;
        }
        struct dirent *de;
        int r = 0;
        while ((de = readdir(d))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                int k = remove_tree_at(dirfd(d), de->d_name, depth - 1);
                if (k < 0 && r == 0)
                        r = k;
        }
        d = (closedir(d), NULL);
        if (unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
                return r < 0 ? r : -errno;
        return r;
}

int agent_history_remove_legacy(const char *workspace) {
        _cleanup_close_ int ws = open_nofollow(workspace, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        struct stat st;

        if (ws < 0)
                return ws == -ENOENT ? 0 : ws;
        if (fstatat(ws, AGENT_HISTORY_LEGACY_DIR, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 0 : -errno;
        int r = remove_tree_at(ws, AGENT_HISTORY_LEGACY_DIR, 8);
        return r < 0 ? r : 1;
}

int agent_history_spill(const char *workspace, uid_t uid, const char *name, const char *text, char **ret_path) {
        _cleanup_close_ int ws = -EBADF, top = -EBADF, dir = -EBADF;
        _cleanup_free_ char *path = NULL;
        char sender[32];
        int r;

        ws = open_nofollow(workspace, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (ws < 0)
                return ws;
        r = open_subdir(ws, AGENT_HISTORY_SPILL_DIR, true, &top);
        if (r < 0)
                return r;
        (void) snprintf(sender, sizeof(sender), "%u", (unsigned) uid);
        r = open_subdir(top, sender, true, &dir);
        if (r < 0)
                return r;
        if (asprintf(&path, "%s/" AGENT_HISTORY_SPILL_DIR "/%s/%s", workspace, sender, name) < 0)
                return -ENOMEM;
        ConSpoolWrite o = { .mode = 0600, .uid = (uid_t) -1, .gid = (gid_t) -1, .sync = false, .noreplace = true };
        r = con_spool_write(dir, name, text, strlen(text), &o);
        if (r < 0)
                return r;
        r = agent_history_prune(dir, "", AGENT_HISTORY_SPILL_KEEP - 1, name);
        if (r == -ENOMEM)
                return r;
        *ret_path = TAKE_PTR(path);
        return 0;
}
