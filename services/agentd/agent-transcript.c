/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent-history.h"
#include "agent-transcript.h"
#include "fileio.h"
#include "json-util.h"
#include "macro.h"
#include "spool.h"
#include "task.h"
#include "utf8.h"

#define TRANSCRIPT_FILE_MAX (4U * 1024U * 1024U)

void agent_transcript_done(AgentTranscript *t) {
        cJSON_Delete(t->steps);
        free(t->model);
        *t = (AgentTranscript) {};
}

/* A number member within [0, max], whole; false when missing or out of range. */
static bool get_count(const cJSON *j, const char *key, double max, double *ret) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 || v->valuedouble > max ||
            v->valuedouble != (double) (uint64_t) v->valuedouble)
                return false;
        *ret = v->valuedouble;
        return true;
}

/* Copies a string member as valid UTF-8 of at most max bytes; absent stays absent. */
static int copy_str(cJSON *to, const cJSON *from, const char *key, size_t max) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(from, key);
        if (!cJSON_IsString(v))
                return 0;
        _cleanup_free_ char *clean = NULL;
        size_t l = 0;
        if (con_utf8_sanitize(v->valuestring, strlen(v->valuestring), &clean, &l) < 0)
                return -ENOMEM;
        clean[con_utf8_cut(clean, l, max)] = 0;
        return cJSON_AddStringToObject(to, key, clean) ? 0 : -ENOMEM;
}

static int copy_num(cJSON *to, const cJSON *from, const char *key, double max, double *ret) {
        double v;
        if (!get_count(from, key, max, &v))
                return 0;
        if (ret)
                *ret = v;
        return cJSON_AddNumberToObject(to, key, v) ? 1 : -ENOMEM;
}

static int copy_bool(cJSON *to, const cJSON *from, const char *key) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(from, key);
        if (!cJSON_IsBool(v))
                return 0;
        return cJSON_AddBoolToObject(to, key, cJSON_IsTrue(v)) ? 0 : -ENOMEM;
}

int agent_transcript_add_line(AgentTranscript *t, const char *line, size_t len, unsigned *ret_turn,
                              const char **ret_phase) {
        _cleanup_(cJSON_Deletep) cJSON *j = NULL, *step = NULL;
        double turn, v;
        int r;

        if (len > AGENT_TRANSCRIPT_LINE_MAX || !(j = cJSON_ParseWithLength(line, len)) || !cJSON_IsObject(j) ||
            !get_count(j, "turn", 1000, &turn) || turn < 1) {
                t->n_dropped++;
                return 0;
        }
        const cJSON *ev = cJSON_GetObjectItemCaseSensitive(j, "ev");
        const char *e = cJSON_IsString(ev) ? ev->valuestring : "";
        if (streq(e, "phase")) {
                const cJSON *ph = cJSON_GetObjectItemCaseSensitive(j, "phase");
                if (!cJSON_IsString(ph) || !(streq(ph->valuestring, "model") || streq(ph->valuestring, "tool"))) {
                        t->n_dropped++;
                        return 0;
                }
                if (++t->n_phases > 2 * AGENT_TRANSCRIPT_STEPS_MAX)
                        return 0;
                *ret_turn = (unsigned) turn;
                *ret_phase = streq(ph->valuestring, "model") ? "model" : "tool";
                return 1;
        }
        if (!streq(e, "model") && !streq(e, "tool")) {
                t->n_dropped++;
                return 0;
        }
        if (!t->steps && !(t->steps = cJSON_CreateArray()))
                return -ENOMEM;
        if ((size_t) cJSON_GetArraySize(t->steps) >= AGENT_TRANSCRIPT_STEPS_MAX) {
                t->n_dropped++;
                return 0;
        }
        step = cJSON_CreateObject();
        if (!step || !cJSON_AddStringToObject(step, "ev", e) || !cJSON_AddNumberToObject(step, "turn", turn))
                return -ENOMEM;
        if ((unsigned) turn > t->turns)
                t->turns = (unsigned) turn;
        if (streq(e, "model")) {
                if ((r = copy_str(step, j, "model", 128)) < 0 || (r = copy_str(step, j, "stop", 32)) < 0 ||
                    (r = copy_num(step, j, "ms", 1e10, NULL)) < 0 || (r = copy_bool(step, j, "error")) < 0 ||
                    (r = copy_bool(step, j, "truncated")) < 0)
                        return r;
                if ((r = copy_num(step, j, "in", 1e12, &v)) < 0)
                        return r;
                if (r > 0)
                        t->tokens_in += (uint64_t) v;
                if ((r = copy_num(step, j, "out", 1e12, &v)) < 0)
                        return r;
                if (r > 0)
                        t->tokens_out += (uint64_t) v;
                const cJSON *m = cJSON_GetObjectItemCaseSensitive(step, "model");
                if (cJSON_IsString(m) && *m->valuestring) {
                        char *copy = strdup(m->valuestring);
                        if (!copy)
                                return -ENOMEM;
                        free(t->model);
                        t->model = copy;
                }
        } else {
                if ((r = copy_str(step, j, "tool", 64)) < 0 ||
                    (r = copy_str(step, j, "args", AGENT_TRANSCRIPT_ARGS_MAX)) < 0 ||
                    (r = copy_num(step, j, "args_bytes", 1e12, NULL)) < 0 || (r = copy_bool(step, j, "error")) < 0 ||
                    (r = copy_num(step, j, "bytes", 1e12, NULL)) < 0 || (r = copy_num(step, j, "ms", 1e10, NULL)) < 0 ||
                    (r = copy_num(step, j, "exit", 255, NULL)) < 0 || (r = copy_bool(step, j, "truncated")) < 0)
                        return r;
                t->tool_calls++;
        }
        cJSON_AddItemToArray(t->steps, TAKE_PTR(step));
        return 0;
}

static int cut_name(cJSON *j, const char *key) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
        if (!cJSON_IsString(v))
                return 0;
        size_t n = con_utf8_cut(v->valuestring, strlen(v->valuestring), AGENT_TRANSCRIPT_NAME_MAX);
        _cleanup_free_ char *cut = strndup(v->valuestring, n);
        if (!cut)
                return -ENOMEM;
        return cJSON_ReplaceItemInObjectCaseSensitive(j, key, cJSON_CreateString(cut)) ? 0 : -ENOMEM;
}

char *agent_transcript_step_line(cJSON *j) {
        for (unsigned attempt = 0; attempt < 2; attempt++) {
                _cleanup_free_ char *line = cJSON_PrintUnformatted(j);
                if (!line)
                        return NULL;
                size_t l = strlen(line);
                if (l + 1 <= AGENT_TRANSCRIPT_LINE_MAX) {
                        char *s = realloc(line, l + 2);
                        if (!s)
                                return NULL;
                        TAKE_PTR(line);
                        s[l] = '\n';
                        s[l + 1] = 0;
                        return s;
                }
                /* Too long: kept, marked, without what made it long (args_bytes keeps the size). */
                cJSON_DeleteItemFromObjectCaseSensitive(j, "args");
                if (cut_name(j, "tool") < 0 || cut_name(j, "model") < 0 || cut_name(j, "stop") < 0)
                        return NULL;
                cJSON_DeleteItemFromObjectCaseSensitive(j, "truncated");
                if (!cJSON_AddTrueToObject(j, "truncated"))
                        return NULL;
        }
        return NULL;    /* numbers and cut names always fit; not reached */
}

cJSON *agent_transcript_to_json(const AgentTranscript *t) {
        _cleanup_(cJSON_Deletep) cJSON *j = cJSON_CreateObject();
        if (!j)
                return NULL;
        cJSON *steps = t->steps ? cJSON_Duplicate(t->steps, true) : cJSON_CreateArray();
        if (!steps)
                return NULL;
        cJSON_AddItemToObject(j, "steps", steps);
        if ((t->model ? !cJSON_AddStringToObject(j, "model", t->model) : !cJSON_AddNullToObject(j, "model")) ||
            !cJSON_AddNumberToObject(j, "turns", t->turns) || !cJSON_AddNumberToObject(j, "tool_calls", t->tool_calls) ||
            !cJSON_AddNumberToObject(j, "tokens_in", (double) t->tokens_in) ||
            !cJSON_AddNumberToObject(j, "tokens_out", (double) t->tokens_out) ||
            !con_json_add_u64(j, "started", t->started_usec) || !con_json_add_u64(j, "ended", t->ended_usec) ||
            !cJSON_AddNumberToObject(j, "dropped", (double) t->n_dropped))
                return NULL;
        return TAKE_PTR(j);
}

static int transcript_dir(int data_dir_fd, bool create) {
        if (create && mkdirat(data_dir_fd, AGENT_TRANSCRIPT_DIR, 0700) < 0 && errno != EEXIST)
                return -errno;
        int fd = openat(data_dir_fd, AGENT_TRANSCRIPT_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        struct stat st;
        if (fstat(fd, &st) < 0 || st.st_uid != geteuid() || (st.st_mode & 0077)) {
                safe_close(fd);
                return -EPERM;
        }
        return fd;
}

#define SENDER_UID_KEY "sender_uid"

int agent_transcript_write(int data_dir_fd, const char *id, uid_t sender_uid, const cJSON *j) {
        _cleanup_free_ char *data = NULL, *name = NULL;
        _cleanup_(cJSON_Deletep) cJSON *copy = NULL;
        if (!con_task_id_valid(id))
                return -EINVAL;
        _cleanup_close_ int dfd = transcript_dir(data_dir_fd, true);
        if (dfd < 0)
                return dfd;
        copy = cJSON_Duplicate(j, true);
        if (!copy)
                return -ENOMEM;
        cJSON_DeleteItemFromObjectCaseSensitive(copy, SENDER_UID_KEY);
        if (!con_json_add_u64(copy, SENDER_UID_KEY, (uint64_t) sender_uid))
                return -ENOMEM;
        data = cJSON_PrintUnformatted(copy);
        if (!data || asprintf(&name, "%s.json", id) < 0)
                return -ENOMEM;
        ConSpoolWrite o = { .mode = 0600, .uid = (uid_t) -1, .gid = (gid_t) -1, .reader = (uid_t) -1 };
        int r = con_spool_write(dfd, name, data, strlen(data), &o);
        if (r < 0)
                return r;
        (void) agent_history_prune(dfd, ".json", AGENT_TRANSCRIPT_KEEP, name);
        return 0;
}

int agent_transcript_read(int data_dir_fd, const char *id, uid_t sender_uid, cJSON **ret) {
        _cleanup_free_ char *name = NULL, *buf = NULL;
        size_t len;
        struct stat st;
        if (!con_task_id_valid(id))
                return -EINVAL;
        _cleanup_close_ int dfd = transcript_dir(data_dir_fd, false);
        if (dfd < 0)
                return dfd;
        if (asprintf(&name, "%s.json", id) < 0)
                return -ENOMEM;
        int r = con_spool_read_untrusted(dfd, name, TRANSCRIPT_FILE_MAX, &buf, &len, &st);
        if (r < 0)
                return r;
        if (st.st_uid != geteuid() || (st.st_mode & 0077))
                return -EPERM;
        _cleanup_(cJSON_Deletep) cJSON *j = cJSON_ParseWithLength(buf, len);
        if (!j || !cJSON_IsObject(j))
                return -EBADMSG;
        /* Like a result: only the task's sender's (GetTranscript authorised the caller for the task,
         * not for whatever file bears its id). A file without the uid is not believed either. */
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, SENDER_UID_KEY);
        if (!cJSON_IsNumber(u) || con_json_get_u64(u) != (uint64_t) sender_uid)
                return -EACCES;
        cJSON_DeleteItemFromObjectCaseSensitive(j, SENDER_UID_KEY);
        *ret = TAKE_PTR(j);
        return 0;
}
