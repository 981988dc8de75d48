/* SPDX-License-Identifier: MIT */
/* The sending gateway's records of the tasks it sent (mesh-sent.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "json-util.h"
#include "macro.h"
#include "mesh-sent.h"
#include "names.h"
#include "policy-vocab.h"
#include "spool.h"
#include "task.h"

void mesh_sent_done(MeshSent *s) {
        free(s->id);
        free(s->agent);
        free(s->host);
        free(s->sender);
        mesh_result_done(&s->result);
        *s = (MeshSent) {};
}

void mesh_sent_free_many(MeshSent *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                mesh_sent_done(&s[i]);
        free(s);
}

static const char *state_static(const char *s) {
        static const char * const states[] = { "submitted", "accepted", "working" };
        for (size_t i = 0; s && i < ELEMENTSOF(states); i++)
                if (streq(s, states[i]))
                        return states[i];
        return NULL;
}

/* The sender as the result names it: USER@ME, a valid remote principal. */
static int sender_at(const char *user, const char *me, char **ret) {
        if (!user || !con_mesh_host_valid(me))
                return -EINVAL;
        if (asprintf(ret, "%s@%s", user, me) < 0)
                return -ENOMEM;
        if (!con_remote_sender_valid(*ret)) {
                free(*ret);
                *ret = NULL;
                return -EINVAL;
        }
        return 0;
}

static bool result_is(const MeshSent *s, const char *from) {
        const MeshResult *r = &s->result;
        return streq_ptr(r->id, s->id) && streq_ptr(r->host, s->host) && streq_ptr(r->agent, s->agent) &&
                streq_ptr(r->from, from);
}

static bool head_valid(const MeshSent *s) {
        return con_task_id_valid(s->id) && con_agent_name_valid(s->agent) && con_mesh_host_valid(s->host) &&
                state_static(s->state) && s->uid != (uid_t) -1;
}

int mesh_sent_to_text(const MeshSent *s, const char *me, char **ret) {
        _cleanup_free_ char *from = NULL, *head = NULL, *result = NULL;
        int r;

        if (!head_valid(s))
                return -EINVAL;
        r = sender_at(s->sender, me, &from);
        if (r < 0)
                return r;
        if (s->done) {
                if (!result_is(s, from))
                        return -EINVAL;
                r = mesh_result_to_json(&s->result, &result);
                if (r < 0)
                        return r;
        }
        _cleanup_cjson_ cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddNumberToObject(o, "v", 1) || !cJSON_AddStringToObject(o, "id", s->id) ||
            !cJSON_AddStringToObject(o, "agent", s->agent) || !cJSON_AddStringToObject(o, "host", s->host) ||
            !con_json_add_u64(o, "uid", s->uid) || !cJSON_AddStringToObject(o, "sender", s->sender) ||
            !cJSON_AddStringToObject(o, "state", s->state) || !con_json_add_u64(o, "ts", s->submitted_usec) ||
            (s->stored && !cJSON_AddTrueToObject(o, "stored")) || (s->done && !con_json_add_u64(o, "end", s->ended_usec)))
                return -ENOMEM;
        head = cJSON_PrintUnformatted(o);
        if (!head)
                return -ENOMEM;
        if (asprintf(ret, "%s\n%s%s", head, strempty(result), result ? "\n" : "") < 0)
                return -ENOMEM;
        return 0;
}

static int get_str(const cJSON *o, const char *key, char **ret) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
        if (!cJSON_IsString(v) || !v->valuestring)
                return -EBADMSG;
        *ret = strdup(v->valuestring);
        return *ret ? 0 : -ENOMEM;
}

/* A non-negative integer (con_json_get_u64's range). */
static int get_u64(const cJSON *o, const char *key, bool required, uint64_t *ret) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
        if (!v && !required) {
                *ret = 0;
                return 0;
        }
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9007199254740992.0 ||
            v->valuedouble != (double) (uint64_t) v->valuedouble)
                return -EBADMSG;
        *ret = con_json_get_u64(v);
        return 0;
}

int mesh_sent_from_text(const char *data, size_t len, const char *me, MeshSent *ret) {
        _cleanup_free_ char *from = NULL;
        _cleanup_cjson_ cJSON *o = NULL;
        _cleanup_(mesh_sent_done) MeshSent s = { .uid = (uid_t) -1 };
        uint64_t uid = 0;
        int r;

        if (!data || len == 0 || len > MESH_SENT_FILE_MAX || memchr(data, 0, len))
                return -EBADMSG;
        const char *nl = memchr(data, '\n', len);
        if (!nl)
                return -EBADMSG;        /* a record always ends its line */
        size_t head_len = (size_t) (nl - data), rest = len - head_len - 1;
        o = cJSON_ParseWithLength(data, head_len);
        if (!o)
                return cJSON_GetErrorPtr() ? -EBADMSG : -ENOMEM;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "v"),
                    *st = cJSON_GetObjectItemCaseSensitive(o, "state"),
                    *stored = cJSON_GetObjectItemCaseSensitive(o, "stored");
        if (!cJSON_IsObject(o) || !cJSON_IsNumber(v) || v->valuedouble != 1 || !cJSON_IsString(st) ||
            (stored && !cJSON_IsBool(stored)))
                return -EBADMSG;
        s.stored = cJSON_IsTrue(stored);
        s.state = state_static(st->valuestring);
        if ((r = get_str(o, "id", &s.id)) < 0 || (r = get_str(o, "agent", &s.agent)) < 0 ||
            (r = get_str(o, "host", &s.host)) < 0 || (r = get_str(o, "sender", &s.sender)) < 0 ||
            (r = get_u64(o, "uid", true, &uid)) < 0 || (r = get_u64(o, "ts", true, &s.submitted_usec)) < 0 ||
            (r = get_u64(o, "end", false, &s.ended_usec)) < 0)
                return r;
        if (uid >= (uid_t) -1)
                return -EBADMSG;
        s.uid = (uid_t) uid;
        if (!head_valid(&s))
                return -EBADMSG;
        r = sender_at(s.sender, me, &from);
        if (r < 0)
                return r == -ENOMEM ? r : -EBADMSG;
        if (rest > 0) {
                /* The result: one line, and the last. */
                const char *res = nl + 1;
                if (res[rest - 1] != '\n' || memchr(res, '\n', rest - 1))
                        return -EBADMSG;
                r = mesh_result_from_json(res, rest - 1, &s.result);
                if (r < 0)
                        return r;
                if (!result_is(&s, from))
                        return -EBADMSG;
                s.done = true;
        } else if (s.ended_usec != 0)
                return -EBADMSG;        /* ended, but no result */
        *ret = s;
        s = (MeshSent) {};
        return 0;
}

bool mesh_sent_expired(const MeshSent *s, uint64_t now_usec, uint64_t keep_usec, uint64_t wait_usec) {
        uint64_t from = s->done ? s->ended_usec : s->submitted_usec;
        uint64_t span = s->done ? keep_usec : keep_usec + wait_usec;
        if (span < keep_usec)   /* overflow: never */
                return false;
        return now_usec > from && now_usec - from > span;
}

int mesh_sent_open_dir(int parent_fd, const char *name) {
        struct stat st;
        if (mkdirat(parent_fd, name, 0700) < 0 && errno != EEXIST)
                return -errno;
        _cleanup_close_ int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (st.st_uid != geteuid() || (st.st_mode & 077))
                return -EPERM;
        return TAKE_FD(fd);
}

static int file_name(const char *id, char *buf, size_t size) {
        if (!con_task_id_valid(id))
                return -EINVAL;
        int n = snprintf(buf, size, "%s%s", id, MESH_SENT_SUFFIX);
        return n < 0 || (size_t) n >= size ? -ENAMETOOLONG : 0;
}

int mesh_sent_write(int dir_fd, const MeshSent *s, const char *me, bool sync) {
        _cleanup_free_ char *text = NULL;
        char name[CON_TASK_ID_MAX + sizeof(MESH_SENT_SUFFIX)];
        int r = file_name(s->id, name, sizeof(name));
        if (r < 0)
                return r;
        r = mesh_sent_to_text(s, me, &text);
        if (r < 0)
                return r;
        ConSpoolWrite w = { .mode = 0600, .uid = (uid_t) -1, .gid = (gid_t) -1, .sync = sync };
        return con_spool_write(dir_fd, name, text, strlen(text), &w);
}

int mesh_sent_sync(int dir_fd, char * const *ids) {
        char name[CON_TASK_ID_MAX + sizeof(MESH_SENT_SUFFIX)];
        for (size_t i = 0; ids && ids[i]; i++) {
                int r = file_name(ids[i], name, sizeof(name));
                if (r < 0)
                        return r;
                _cleanup_close_ int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
                if (fd < 0) {
                        if (errno == ENOENT)
                                continue;       /* forgotten meanwhile */
                        return -errno;
                }
                if (fdatasync(fd) < 0)
                        return -errno;
        }
        return con_spool_sync_dir(dir_fd);
}

int mesh_sent_remove(int dir_fd, const char *id) {
        char name[CON_TASK_ID_MAX + sizeof(MESH_SENT_SUFFIX)];
        int r = file_name(id, name, sizeof(name));
        if (r < 0)
                return r;
        if (unlinkat(dir_fd, name, 0) < 0 && errno != ENOENT)
                return -errno;
        return 0;
}

static int cmp_sent(const void *a, const void *b) {
        const MeshSent *x = a, *y = b;
        if (x->submitted_usec != y->submitted_usec)
                return x->submitted_usec < y->submitted_usec ? -1 : 1;
        return strcmp(x->id, y->id);
}

int mesh_sent_load(int dir_fd, const char *me, MeshSent **ret, size_t *ret_n, unsigned *ret_bad) {
        MeshSent *all = NULL;
        size_t n = 0, alloc = 0;
        unsigned bad = 0;
        int r = con_spool_remove_temps(dir_fd);
        if (r < 0)
                return r;
        _cleanup_closedir_ DIR *d = NULL;
        r = con_opendir_dup(dir_fd, &d);
        if (r < 0)
                return r;
        for (struct dirent *de; (de = readdir(d)); ) {
                _cleanup_free_ char *data = NULL;
                size_t len = 0;
                if (!con_spool_name_is_candidate(de->d_name, MESH_SENT_SUFFIX))
                        continue;
                MeshSent s = {};
                r = con_spool_read_untrusted(dir_fd, de->d_name, MESH_SENT_FILE_MAX, &data, &len, NULL);
                if (r >= 0)
                        r = mesh_sent_from_text(data, len, me, &s);
                if (r == -ENOMEM)
                        break;
                /* The name must be its id's: a record is found again by its name. */
                const char *suffix = r >= 0 ? startswith(de->d_name, s.id) : NULL;
                if (r < 0 || !streq_ptr(suffix, MESH_SENT_SUFFIX)) {
                        mesh_sent_done(&s);
                        bad++;
                        r = 0;
                        continue;
                }
                if (n == alloc) {
                        MeshSent *a = reallocarray(all, alloc ? alloc * 2 : 64, sizeof(*a));
                        if (!a) {
                                mesh_sent_done(&s);
                                r = -ENOMEM;
                                break;
                        }
                        all = a;
                        alloc = alloc ? alloc * 2 : 64;
                }
                all[n++] = s;
        }
        if (r < 0) {
                mesh_sent_free_many(all, n);
                return r;
        }
        if (n > 0)
                qsort(all, n, sizeof(*all), cmp_sent);
        *ret = all;
        *ret_n = n;
        *ret_bad = bad;
        return 0;
}
