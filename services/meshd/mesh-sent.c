/* SPDX-License-Identifier: MIT */
/* The sending gateway's records of the tasks it sent (mesh-sent.h). */
#include <dirent.h>
#include <search.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "journal.h"
#include "json-util.h"
#include "macro.h"
#include "mesh-sent.h"
#include "names.h"
#include "policy-vocab.h"
#include "spool.h"
#include "strv.h"
#include "task.h"

void mesh_sent_done(MeshSent *s) {
        free(s->id);
        free(s->agent);
        free(s->host);
        free(s->sender);
        free(s->cancel_by);
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

/* The record's head as an object, "op" OP after "v" when not NULL (with the result's text in
 * *RET_RESULT when done). */
static int head_object(const MeshSent *s, const char *me, const char *op, cJSON **ret, char **ret_result) {
        _cleanup_free_ char *from = NULL, *result = NULL;
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
        if (!o || !cJSON_AddNumberToObject(o, "v", 1) || (op && !cJSON_AddStringToObject(o, "op", op)) ||
            !cJSON_AddStringToObject(o, "id", s->id) ||
            !cJSON_AddStringToObject(o, "agent", s->agent) || !cJSON_AddStringToObject(o, "host", s->host) ||
            !con_json_add_u64(o, "uid", s->uid) || !cJSON_AddStringToObject(o, "sender", s->sender) ||
            !cJSON_AddStringToObject(o, "state", s->state) || !con_json_add_u64(o, "ts", s->submitted_usec) ||
            (s->stored && !cJSON_AddTrueToObject(o, "stored")) || (s->done && !con_json_add_u64(o, "end", s->ended_usec)))
                return -ENOMEM;
        *ret = TAKE_PTR(o);
        *ret_result = TAKE_PTR(result);
        return 0;
}

int mesh_sent_to_text(const MeshSent *s, const char *me, char **ret) {
        _cleanup_free_ char *head = NULL, *result = NULL;
        _cleanup_cjson_ cJSON *o = NULL;
        int r = head_object(s, me, NULL, &o, &result);
        if (r < 0)
                return r;
        head = cJSON_PrintUnformatted(o);
        if (!head)
                return -ENOMEM;
        if (asprintf(ret, "%s\n%s%s", head, strempty(result), result ? "\n" : "") < 0)
                return -ENOMEM;
        return 0;
}

/* A cancel's asker: USER@ME, the task's sender or root (mesh_cancel_allowed). */
static bool cancel_by_valid(const char *by, const char *from) {
        return con_remote_sender_valid(by) && mesh_cancel_allowed(from, by) &&
                streq(strrchr(by, '@'), strrchr(from, '@'));
}

int mesh_sent_to_record(const MeshSent *s, const char *me, char **ret) {
        _cleanup_free_ char *result = NULL, *from = NULL;
        _cleanup_cjson_ cJSON *o = NULL;
        int r = head_object(s, me, "put", &o, &result);
        if (r < 0)
                return r;
        if (s->cancel_by) {
                if ((r = sender_at(s->sender, me, &from)) < 0)
                        return r;
                if (!cancel_by_valid(s->cancel_by, from))
                        return -EINVAL;
        }
        if ((s->cancel_by && !cJSON_AddStringToObject(o, "cancel", s->cancel_by)) ||
            (result && !cJSON_AddStringToObject(o, "result", result)))
                return -ENOMEM;
        *ret = cJSON_PrintUnformatted(o);
        return *ret ? 0 : -ENOMEM;
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

/* The head's fields from O into S (valid ones only); *RET_FROM: USER@ME. */
static int head_parse(const cJSON *o, const char *me, MeshSent *s, char **ret_from) {
        uint64_t uid = 0;
        int r;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "v"),
                    *st = cJSON_GetObjectItemCaseSensitive(o, "state"),
                    *stored = cJSON_GetObjectItemCaseSensitive(o, "stored");
        if (!cJSON_IsObject(o) || !cJSON_IsNumber(v) || v->valuedouble != 1 || !cJSON_IsString(st) ||
            (stored && !cJSON_IsBool(stored)))
                return -EBADMSG;
        s->stored = cJSON_IsTrue(stored);
        s->state = state_static(st->valuestring);
        if ((r = get_str(o, "id", &s->id)) < 0 || (r = get_str(o, "agent", &s->agent)) < 0 ||
            (r = get_str(o, "host", &s->host)) < 0 || (r = get_str(o, "sender", &s->sender)) < 0 ||
            (r = get_u64(o, "uid", true, &uid)) < 0 || (r = get_u64(o, "ts", true, &s->submitted_usec)) < 0 ||
            (r = get_u64(o, "end", false, &s->ended_usec)) < 0)
                return r;
        if (uid >= (uid_t) -1)
                return -EBADMSG;
        s->uid = (uid_t) uid;
        if (!head_valid(s))
                return -EBADMSG;
        r = sender_at(s->sender, me, ret_from);
        if (r < 0)
                return r == -ENOMEM ? r : -EBADMSG;
        return 0;
}

/* The result message's text RES (LEN bytes, no '\n') into S, which must be its task's. */
static int result_parse(const char *res, size_t len, const char *from, MeshSent *s) {
        int r = mesh_result_from_json(res, len, &s->result);
        if (r < 0)
                return r;
        if (!result_is(s, from))
                return -EBADMSG;
        s->done = true;
        return 0;
}

int mesh_sent_from_text(const char *data, size_t len, const char *me, MeshSent *ret) {
        _cleanup_free_ char *from = NULL;
        _cleanup_cjson_ cJSON *o = NULL;
        _cleanup_(mesh_sent_done) MeshSent s = { .uid = (uid_t) -1 };
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
        r = head_parse(o, me, &s, &from);
        if (r < 0)
                return r;
        if (rest > 0) {
                /* The result: one line, and the last. */
                const char *res = nl + 1;
                if (res[rest - 1] != '\n' || memchr(res, '\n', rest - 1))
                        return -EBADMSG;
                r = result_parse(res, rest - 1, from, &s);
                if (r < 0)
                        return r;
        } else if (s.ended_usec != 0)
                return -EBADMSG;        /* ended, but no result */
        *ret = s;
        s = (MeshSent) {};
        return 0;
}

int mesh_sent_from_record(const char *line, size_t len, const char *me, MeshSent *ret) {
        _cleanup_free_ char *from = NULL;
        _cleanup_cjson_ cJSON *o = NULL;
        _cleanup_(mesh_sent_done) MeshSent s = { .uid = (uid_t) -1 };
        int r;

        if (!line || len == 0 || len > MESH_SENT_RECORD_MAX || memchr(line, 0, len) || memchr(line, '\n', len))
                return -EBADMSG;
        o = cJSON_ParseWithLength(line, len);
        if (!o)
                return cJSON_GetErrorPtr() ? -EBADMSG : -ENOMEM;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "v"),
                    *op = cJSON_GetObjectItemCaseSensitive(o, "op"),
                    *cancel = cJSON_GetObjectItemCaseSensitive(o, "cancel"),
                    *res = cJSON_GetObjectItemCaseSensitive(o, "result");
        if (!cJSON_IsObject(o) || !cJSON_IsNumber(v) || v->valuedouble != 1 || !cJSON_IsString(op) || !op->valuestring)
                return -EBADMSG;
        if (streq(op->valuestring, "forget")) {
                if ((r = get_str(o, "id", &s.id)) < 0)
                        return r;
                if (!con_task_id_valid(s.id))
                        return -EBADMSG;
                *ret = s;
                s = (MeshSent) {};
                return 1;
        }
        if (!streq(op->valuestring, "put"))
                return -EBADMSG;
        r = head_parse(o, me, &s, &from);
        if (r < 0)
                return r;
        if (cancel) {
                if (!cJSON_IsString(cancel) || !cancel->valuestring || !cancel_by_valid(cancel->valuestring, from))
                        return -EBADMSG;
                s.cancel_by = strdup(cancel->valuestring);
                if (!s.cancel_by)
                        return -ENOMEM;
        }
        if (res) {
                if (!cJSON_IsString(res) || !res->valuestring)
                        return -EBADMSG;
                size_t l = strlen(res->valuestring);
                if (l == 0 || memchr(res->valuestring, '\n', l))
                        return -EBADMSG;
                r = result_parse(res->valuestring, l, from, &s);
                if (r < 0)
                        return r;
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
                if (GROW_ONE(all, n, alloc) < 0) {
                        mesh_sent_done(&s);
                        r = -ENOMEM;
                        break;
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

/* ---- the journal ---- */

struct MeshSentJournal {
        ConJournal *journal;
        char *me;
        uint64_t n_records;     /* lines in the journal, committed or in the batch */
};

MeshSentJournal *mesh_sent_journal_free(MeshSentJournal *j) {
        if (!j)
                return NULL;
        con_journal_free(j->journal);
        free(j->me);
        free(j);
        return NULL;
}

static int cmp_id(const void *a, const void *b) {
        return strcmp(((const MeshSent *) a)->id, ((const MeshSent *) b)->id);
}

/* Replay: the records by id (a tsearch() tree of MeshSent*), in the order first seen. */
typedef struct Replay {
        const char *me;
        MeshSent **all;         /* owned; a forgotten one is freed and NULL */
        size_t n, alloc;
        void *index;
} Replay;

static void noop_free(void *p _unused_) {
}

static void replay_done(Replay *rp) {
        tdestroy(rp->index, noop_free);
        for (size_t i = 0; i < rp->n; i++)
                if (rp->all[i]) {
                        mesh_sent_done(rp->all[i]);
                        free(rp->all[i]);
                }
        free(rp->all);
        *rp = (Replay) {};
}

/* Takes S: replaces the record of its id, or adds it. */
static int replay_put(Replay *rp, MeshSent *s) {
        MeshSent **found = tfind(s, &rp->index, cmp_id);
        if (found) {
                mesh_sent_done(*found);
                **found = *s;   /* the tree's key (the id) is compared by value: same id */
                *s = (MeshSent) {};
                return 0;
        }
        if (rp->n == rp->alloc) {
                size_t a = rp->alloc ? rp->alloc * 2 : 64;
                MeshSent **p = reallocarray(rp->all, a, sizeof(*p));
                if (!p)
                        return -ENOMEM;
                rp->all = p;
                rp->alloc = a;
        }
        MeshSent *e = malloc(sizeof(*e));
        if (!e)
                return -ENOMEM;
        *e = *s;
        if (!tsearch(e, &rp->index, cmp_id)) {
                free(e);
                return -ENOMEM;
        }
        *s = (MeshSent) {};
        rp->all[rp->n++] = e;
        return 0;
}

static void replay_forget(Replay *rp, const MeshSent *key) {
        MeshSent **found = tfind(key, &rp->index, cmp_id);
        if (!found)
                return;
        MeshSent *e = *found;
        (void) tdelete(key, &rp->index, cmp_id);
        for (size_t i = 0; i < rp->n; i++)
                if (rp->all[i] == e) {
                        rp->all[i] = NULL;
                        break;
                }
        mesh_sent_done(e);
        free(e);
}

static int replay_line(char *line, size_t len, void *userdata) {
        Replay *rp = userdata;
        _cleanup_(mesh_sent_done) MeshSent s = {};
        int r = mesh_sent_from_record(line, len, rp->me, &s);
        if (r < 0)
                return r;
        if (r == 1) {
                replay_forget(rp, &s);
                return 0;
        }
        return replay_put(rp, &s);
}

/* The earlier version's <id>.sent files: into the journal (synced), then removed. */
static int migrate(MeshSentJournal *j, int dir_fd, Replay *rp, MeshSentLoadStats *st) {
        MeshSent *files = NULL;
        size_t n = 0;
        _cleanup_strv_free_ char **ids = NULL;
        int r = mesh_sent_load(dir_fd, j->me, &files, &n, &st->n_bad_files);
        if (r < 0)
                return r;
        for (size_t i = 0; r >= 0 && i < n; i++) {
                r = strv_extend(&ids, files[i].id);
                if (r < 0)
                        break;
                /* A migration cut short left files the journal holds already: the journal's win. */
                if (tfind(&files[i], &rp->index, cmp_id))
                        continue;
                r = mesh_sent_journal_put(j, &files[i]);
                if (r >= 0)
                        r = replay_put(rp, &files[i]);
        }
        mesh_sent_free_many(files, n);
        if (r >= 0)
                r = mesh_sent_journal_commit(j, true);
        if (r < 0)
                return r;
        /* On disk in the journal: the files go. */
        for (size_t i = 0; ids && ids[i]; i++) {
                char name[CON_TASK_ID_MAX + sizeof(MESH_SENT_SUFFIX)];
                (void) snprintf(name, sizeof(name), "%s%s", ids[i], MESH_SENT_SUFFIX);
                if (unlinkat(dir_fd, name, 0) < 0 && errno != ENOENT)
                        return -errno;
        }
        if (n > 0 && fsync(dir_fd) < 0)
                return -errno;
        st->n_migrated = n;
        return 0;
}

static int cmp_sent_ptr(const void *a, const void *b) {
        return cmp_sent(*(const MeshSent * const *) a, *(const MeshSent * const *) b);
}

int mesh_sent_journal_open(int dir_fd, const char *me, MeshSentJournal **ret, MeshSent **ret_all,
                           size_t *ret_n, MeshSentLoadStats *ret_stats) {
        _cleanup_(mesh_sent_journal_freep) MeshSentJournal *j = calloc(1, sizeof(*j));
        _cleanup_(replay_done) Replay rp = { .me = me };
        MeshSentLoadStats st = {};
        ConJournalReplay jr = {};

        if (!j)
                return -ENOMEM;
        if (!con_mesh_host_valid(me))
                return -EINVAL;
        j->me = strdup(me);
        if (!j->me)
                return -ENOMEM;
        int r = con_journal_open(dir_fd, MESH_SENT_JOURNAL, &j->journal, &st.set_aside);
        if (r < 0)
                return r;
        r = con_journal_replay(j->journal, MESH_SENT_RECORD_MAX, replay_line, &rp, &jr);
        if (r < 0)
                return r;
        j->n_records = jr.n_lines + jr.n_corrupt;
        st.n_corrupt = jr.n_corrupt;
        st.torn_tail = jr.torn_tail;
        r = migrate(j, dir_fd, &rp, &st);
        if (r < 0)
                return r;

        /* The records, in the order they were sent. */
        size_t n = 0;
        for (size_t i = 0; i < rp.n; i++)
                if (rp.all[i])
                        rp.all[n++] = rp.all[i];
        rp.n = n;
        if (n > 0)
                qsort(rp.all, n, sizeof(*rp.all), cmp_sent_ptr);
        MeshSent *all = calloc(n ?: 1, sizeof(*all));
        if (!all)
                return -ENOMEM;
        tdestroy(rp.index, noop_free);
        rp.index = NULL;
        for (size_t i = 0; i < n; i++) {
                all[i] = *rp.all[i];
                free(rp.all[i]);
                rp.all[i] = NULL;
        }
        *ret = TAKE_PTR(j);
        *ret_all = all;
        *ret_n = n;
        if (ret_stats)
                *ret_stats = st;
        return 0;
}

int mesh_sent_journal_put(MeshSentJournal *j, const MeshSent *s) {
        _cleanup_free_ char *line = NULL;
        int r = mesh_sent_to_record(s, j->me, &line);
        if (r < 0)
                return r;
        r = con_journal_append(j->journal, line);
        if (r < 0)
                return r;
        j->n_records++;
        return 0;
}

int mesh_sent_journal_forget(MeshSentJournal *j, const char *id) {
        _cleanup_free_ char *line = NULL;
        if (!con_task_id_valid(id))
                return -EINVAL;
        _cleanup_cjson_ cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddNumberToObject(o, "v", 1) || !cJSON_AddStringToObject(o, "op", "forget") ||
            !cJSON_AddStringToObject(o, "id", id))
                return -ENOMEM;
        line = cJSON_PrintUnformatted(o);
        if (!line)
                return -ENOMEM;
        int r = con_journal_append(j->journal, line);
        if (r < 0)
                return r;
        j->n_records++;
        return 0;
}

bool mesh_sent_journal_has_batch(const MeshSentJournal *j) {
        return con_journal_has_batch(j->journal);
}

int mesh_sent_journal_commit(MeshSentJournal *j, bool sync) {
        return con_journal_commit(j->journal, sync);
}

uint64_t mesh_sent_journal_size(const MeshSentJournal *j) {
        return con_journal_size(j->journal);
}

bool mesh_sent_journal_want_compact(const MeshSentJournal *j, size_t n_live) {
        /* A task takes about five records (sent, stored, accepted, working, result) and a forget:
         * rewritten once the dead ones clearly outnumber the live. */
        return !con_journal_has_batch(j->journal) && j->n_records > 4 * (uint64_t) n_live + 4096;
}

typedef struct CompactArgs {
        MeshSentJournal *j;
        const MeshSent *all;
        size_t n;
        uint64_t n_written;
} CompactArgs;

static int write_compacted(FILE *f, void *userdata) {
        CompactArgs *a = userdata;
        for (size_t i = 0; i < a->n; i++) {
                _cleanup_free_ char *line = NULL;
                int r = mesh_sent_to_record(&a->all[i], a->j->me, &line);
                if (r == -EINVAL)
                        continue;       /* never written either */
                if (r < 0)
                        return r;
                r = con_journal_put(f, line);
                if (r < 0)
                        return r;
                a->n_written++;
        }
        return 0;
}

int mesh_sent_journal_compact(MeshSentJournal *j, const MeshSent *all, size_t n) {
        CompactArgs a = { .j = j, .all = all, .n = n };
        int r = con_journal_rewrite(j->journal, write_compacted, &a);
        if (r < 0)
                return r;
        j->n_records = a.n_written;
        return 0;
}
