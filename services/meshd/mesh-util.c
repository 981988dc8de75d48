/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json-util.h"
#include "macro.h"
#include "mesh-util.h"
#include "names.h"
#include "policy-vocab.h"
#include "task.h"
#include "time-util.h"
#include "utf8.h"

static const char *kind_word(MeshKind k) {
        return k == MESH_KIND_TASK ? "task" : "result";
}

int mesh_subject(MeshKind k, const char *to, const char *from, char **ret) {
        if (!con_mesh_host_valid(to) || !con_mesh_host_valid(from))
                return -EINVAL;
        return asprintf(ret, "con.%s.%s.%s", kind_word(k), to, from) < 0 ? -ENOMEM : 0;
}

int mesh_subject_filter(MeshKind k, const char *host, char **ret) {
        if (!con_mesh_host_valid(host))
                return -EINVAL;
        return asprintf(ret, "con.%s.%s.*", kind_word(k), host) < 0 ? -ENOMEM : 0;
}

int mesh_subject_sender(MeshKind k, const char *me, const char *subject, const char **ret_from) {
        const char *p = subject ? startswith(subject, "con.") : NULL;
        p = p ? startswith(p, kind_word(k)) : NULL;
        p = p && *p == '.' ? startswith(p + 1, strempty(me)) : NULL;
        if (!p || *p != '.' || !con_mesh_host_valid(p + 1))
                return -EBADMSG;
        *ret_from = p + 1;
        return 0;
}

int mesh_stream(MeshKind k, const char *host, char **ret) {
        if (!con_mesh_host_valid(host))
                return -EINVAL;
        return asprintf(ret, "con-%s-%s", k == MESH_KIND_TASK ? "task" : "result", host) < 0 ? -ENOMEM : 0;
}

int mesh_stream_parse(const char *name, MeshKind *ret_kind, char **ret_host) {
        static const struct {
                const char *prefix;
                MeshKind kind;
        } kinds[] = { { "con-task-", MESH_KIND_TASK }, { "con-result-", MESH_KIND_RESULT } };

        if (!name)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(kinds); i++) {
                const char *host = startswith(name, kinds[i].prefix);
                if (!host || !con_mesh_host_valid(host))
                        continue;
                char *h = strdup(host);
                if (!h)
                        return -ENOMEM;
                *ret_kind = kinds[i].kind;
                *ret_host = h;
                return 0;
        }
        return -EINVAL;
}

void mesh_stream_status_free_many(MeshStreamStatus *s, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(s[i].name);
                free(s[i].host);
        }
        free(s);
}

int mesh_state_subject(const char *origin, const char *publisher, const char *id, char **ret) {
        if (!con_mesh_host_valid(origin) || !con_mesh_host_valid(publisher) || !con_task_id_valid(id) ||
            strchr(id, '~'))
                return -EINVAL;
        char *s = NULL;
        if (asprintf(&s, "con.state.%s.%s.%s", origin, publisher, id) < 0)
                return -ENOMEM;
        for (char *p = s + strlen(s) - strlen(id); *p; p++)
                if (*p == '.')
                        *p = '~';
        *ret = s;
        return 0;
}

int mesh_state_subject_parse(const char *subject, char **ret_origin, char **ret_publisher, char **ret_id) {
        const char *p = subject ? startswith(subject, "con.state.") : NULL;
        const char *d1 = p ? strchr(p, '.') : NULL, *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
        if (!d2 || strchr(d2 + 1, '.'))
                return -EBADMSG;
        _cleanup_free_ char *origin = strndup(p, (size_t) (d1 - p)), *publisher = strndup(d1 + 1, (size_t) (d2 - d1 - 1)),
                            *id = strdup(d2 + 1);
        if (!origin || !publisher || !id)
                return -ENOMEM;
        if (strchr(id, '.'))
                return -EBADMSG;
        for (char *q = id; *q; q++)
                if (*q == '~')
                        *q = '.';
        if (!con_mesh_host_valid(origin) || !con_mesh_host_valid(publisher) || !con_task_id_valid(id))
                return -EBADMSG;
        *ret_origin = TAKE_PTR(origin);
        *ret_publisher = TAKE_PTR(publisher);
        *ret_id = TAKE_PTR(id);
        return 0;
}

void mesh_state_done(MeshState *s) {
        free(s->id);
        free(s->host);
        free(s->agent);
        free(s->from);
        free(s->state);
        *s = (MeshState) {};
}

void mesh_task_done(MeshTask *t) {
        free(t->id);
        free(t->from);
        free(t->origin);
        free(t->agent);
        free(t->text);
        *t = (MeshTask) {};
}

void mesh_result_done(MeshResult *r) {
        free(r->id);
        free(r->host);
        free(r->agent);
        free(r->from);
        free(r->status);
        free(r->text);
        *r = (MeshResult) {};
}

static bool text_ok(const char *s) {
        return s && con_utf8_valid(s, strlen(s));
}

bool mesh_deadline_valid(uint64_t usec) {
        char buf[CON_TIMESTAMP_MAX];
        uint64_t back = 0;
        return usec == 0 || (con_format_timestamp(usec, buf) >= 0 &&
                             con_task_deadline_parse(buf, strlen(buf), &back) >= 0 && back == usec);
}

static bool task_valid(const MeshTask *t) {
        const char *at = t->from ? strrchr(t->from, '@') : NULL;
        return con_task_priority_valid(t->priority) && mesh_deadline_valid(t->deadline_usec) &&
                con_task_id_valid(t->id) && con_remote_sender_valid(t->from) && con_mesh_host_valid(t->origin) &&
                at && streq(at + 1, t->origin) && con_agent_name_valid(t->agent) && text_ok(t->text) &&
                t->text[strspn(t->text, " \t\r\n")] != 0;
}

static bool status_valid(const char *s) {
        return s && (streq(s, "completed") || streq(s, "failed") || streq(s, "canceled"));
}

static bool result_valid(const MeshResult *r) {
        return con_task_id_valid(r->id) && con_mesh_host_valid(r->host) && con_agent_name_valid(r->agent) &&
                con_remote_sender_valid(r->from) && status_valid(r->status) && text_ok(r->text);
}

static bool state_valid(const MeshState *m) {
        return con_task_id_valid(m->id) && con_mesh_host_valid(m->host) && con_agent_name_valid(m->agent) &&
                con_remote_sender_valid(m->from) && m->state &&
                (streq(m->state, "submitted") || streq(m->state, "accepted") || streq(m->state, "working") ||
                 status_valid(m->state));
}

static int print_json(cJSON *o, char **ret) {
        char *s = cJSON_PrintUnformatted(o);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

int mesh_task_to_json(const MeshTask *t, char **ret) {
        if (!task_valid(t))
                return -EINVAL;
        _cleanup_cjson_ cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddNumberToObject(o, "v", 1) || !cJSON_AddStringToObject(o, "id", t->id) ||
            !cJSON_AddStringToObject(o, "from", t->from) || !cJSON_AddStringToObject(o, "origin", t->origin) ||
            !cJSON_AddStringToObject(o, "agent", t->agent) || !cJSON_AddStringToObject(o, "text", t->text))
                return -ENOMEM;
        if (t->priority != CON_TASK_PRIORITY_DEFAULT && !cJSON_AddNumberToObject(o, "priority", t->priority))
                return -ENOMEM;
        if (t->deadline_usec > 0) {
                char ts[CON_TIMESTAMP_MAX];
                if (con_format_timestamp(t->deadline_usec, ts) < 0)
                        return -EINVAL;
                if (!cJSON_AddStringToObject(o, "deadline", ts))
                        return -ENOMEM;
        }
        return print_json(o, ret);
}

int mesh_result_to_json(const MeshResult *r, char **ret) {
        if (!result_valid(r))
                return -EINVAL;
        _cleanup_cjson_ cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddNumberToObject(o, "v", 1) || !cJSON_AddStringToObject(o, "id", r->id) ||
            !cJSON_AddStringToObject(o, "host", r->host) || !cJSON_AddStringToObject(o, "agent", r->agent) ||
            !cJSON_AddStringToObject(o, "from", r->from) || !cJSON_AddStringToObject(o, "status", r->status) ||
            !cJSON_AddStringToObject(o, "text", r->text) || !cJSON_AddBoolToObject(o, "truncated", r->truncated) ||
            !cJSON_AddBoolToObject(o, "replaced", r->replaced) || !con_json_add_u64(o, "size", r->size))
                return -ENOMEM;
        return print_json(o, ret);
}

/* One object of known keys only, "v": 1. */
static int parse_object(const char *data, size_t len, const char * const *keys, cJSON **ret) {
        if (!data || len == 0 || len > MESH_PAYLOAD_MAX)
                return -EBADMSG;
        cJSON *o = cJSON_ParseWithLength(data, len);
        if (!o)
                return cJSON_GetErrorPtr() ? -EBADMSG : -ENOMEM;
        _cleanup_cjson_ cJSON *owned = o;
        if (!cJSON_IsObject(o))
                return -EBADMSG;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "v");
        if (!cJSON_IsNumber(v) || v->valuedouble != 1)
                return -EBADMSG;
        const cJSON *it;
        cJSON_ArrayForEach(it, o) {
                bool known = streq(it->string, "v");
                for (size_t i = 0; keys[i] && !known; i++)
                        known = streq(it->string, keys[i]);
                if (!known)
                        return -EBADMSG;
                /* A key twice: cJSON keeps both; refuse. */
                size_t n = 0;
                const cJSON *j;
                cJSON_ArrayForEach(j, o)
                        n += streq(j->string, it->string);
                if (n != 1)
                        return -EBADMSG;
        }
        *ret = TAKE_PTR(owned);
        return 0;
}

static int get_string(const cJSON *o, const char *key, char **ret) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
        if (!cJSON_IsString(v) || !v->valuestring)
                return -EBADMSG;
        *ret = strdup(v->valuestring);
        return *ret ? 0 : -ENOMEM;
}

/* The optional priority and deadline of a task message, checked as a task file's are. */
static int get_task_options(const cJSON *o, MeshTask *t) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "priority"),
                    *d = cJSON_GetObjectItemCaseSensitive(o, "deadline");
        if (p) {
                /* The range first: a double out of range converted to an integer is undefined. */
                if (!cJSON_IsNumber(p) || !(p->valuedouble >= 0 && p->valuedouble <= CON_TASK_PRIORITY_MAX) ||
                    p->valuedouble != (double) (int) p->valuedouble || !con_task_priority_valid((int) p->valuedouble))
                        return -EBADMSG;
                t->priority = (int) p->valuedouble;
        }
        if (d) {
                if (!cJSON_IsString(d) || !d->valuestring ||
                    con_task_deadline_parse(d->valuestring, strlen(d->valuestring), &t->deadline_usec) < 0 ||
                    t->deadline_usec == 0)
                        return -EBADMSG;
        }
        return 0;
}

int mesh_task_from_json(const char *data, size_t len, MeshTask *ret) {
        static const char * const keys[] = { "id", "from", "origin", "agent", "text", "priority", "deadline", NULL };
        _cleanup_cjson_ cJSON *o = NULL;
        MeshTask t = { .priority = CON_TASK_PRIORITY_DEFAULT };
        int r;

        r = parse_object(data, len, keys, &o);
        if (r < 0)
                return r;
        if ((r = get_task_options(o, &t)) < 0 || (r = get_string(o, "id", &t.id)) < 0 || (r = get_string(o, "from", &t.from)) < 0 ||
            (r = get_string(o, "origin", &t.origin)) < 0 || (r = get_string(o, "agent", &t.agent)) < 0 ||
            (r = get_string(o, "text", &t.text)) < 0 || (!task_valid(&t) && (r = -EBADMSG) < 0)) {
                mesh_task_done(&t);
                return r;
        }
        *ret = t;
        return 0;
}

int mesh_result_from_json(const char *data, size_t len, MeshResult *ret) {
        static const char * const keys[] = { "id", "host", "agent", "from", "status", "text", "truncated",
                                             "replaced", "size", NULL };
        _cleanup_cjson_ cJSON *o = NULL;
        MeshResult m = {};
        int r;

        r = parse_object(data, len, keys, &o);
        if (r < 0)
                return r;
        const cJSON *tr = cJSON_GetObjectItemCaseSensitive(o, "truncated"),
                    *rp = cJSON_GetObjectItemCaseSensitive(o, "replaced"),
                    *sz = cJSON_GetObjectItemCaseSensitive(o, "size");
        if ((r = get_string(o, "id", &m.id)) < 0 || (r = get_string(o, "host", &m.host)) < 0 ||
            (r = get_string(o, "agent", &m.agent)) < 0 || (r = get_string(o, "from", &m.from)) < 0 ||
            (r = get_string(o, "status", &m.status)) < 0 || (r = get_string(o, "text", &m.text)) < 0 ||
            ((!cJSON_IsBool(tr) || !cJSON_IsBool(rp) || !cJSON_IsNumber(sz) || sz->valuedouble < 0) &&
             (r = -EBADMSG) < 0) || (!result_valid(&m) && (r = -EBADMSG) < 0)) {
                mesh_result_done(&m);
                return r;
        }
        m.truncated = cJSON_IsTrue(tr);
        m.replaced = cJSON_IsTrue(rp);
        m.size = con_json_get_u64(sz);
        *ret = m;
        return 0;
}

int mesh_state_to_json(const MeshState *m, char **ret) {
        if (!state_valid(m))
                return -EINVAL;
        _cleanup_cjson_ cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddNumberToObject(o, "v", 1) || !cJSON_AddStringToObject(o, "id", m->id) ||
            !cJSON_AddStringToObject(o, "host", m->host) || !cJSON_AddStringToObject(o, "agent", m->agent) ||
            !cJSON_AddStringToObject(o, "from", m->from) || !cJSON_AddStringToObject(o, "state", m->state))
                return -ENOMEM;
        return print_json(o, ret);
}

int mesh_state_from_json(const char *data, size_t len, MeshState *ret) {
        static const char * const keys[] = { "id", "host", "agent", "from", "state", NULL };
        _cleanup_cjson_ cJSON *o = NULL;
        MeshState m = {};
        int r;

        r = parse_object(data, len, keys, &o);
        if (r < 0)
                return r;
        if ((r = get_string(o, "id", &m.id)) < 0 || (r = get_string(o, "host", &m.host)) < 0 ||
            (r = get_string(o, "agent", &m.agent)) < 0 || (r = get_string(o, "from", &m.from)) < 0 ||
            (r = get_string(o, "state", &m.state)) < 0 || (!state_valid(&m) && (r = -EBADMSG) < 0)) {
                mesh_state_done(&m);
                return r;
        }
        *ret = m;
        return 0;
}

int mesh_cancel_subject(const char *to, const char *from, char **ret) {
        if (!con_mesh_host_valid(to) || (from && !con_mesh_host_valid(from)))
                return -EINVAL;
        return asprintf(ret, "con.cancel.%s.%s", to, from ?: "*") < 0 ? -ENOMEM : 0;
}

const char *mesh_cancel_subject_host(const char *subject, const char *me) {
        const char *p = subject ? startswith(subject, "con.cancel.") : NULL;
        p = p && me ? startswith(p, me) : NULL;
        if (!p || *p != '.' || !con_mesh_host_valid(p + 1))
                return NULL;
        return p + 1;
}

void mesh_cancel_done(MeshCancel *c) {
        free(c->id);
        free(c->agent);
        free(c->from);
        free(c->by);
        *c = (MeshCancel) {};
}

static const char *sender_host(const char *s) {
        const char *at = s ? strrchr(s, '@') : NULL;
        return at ? at + 1 : NULL;
}

static bool cancel_valid(const MeshCancel *c) {
        return con_task_id_valid(c->id) && con_agent_name_valid(c->agent) && con_remote_sender_valid(c->from) &&
                con_remote_sender_valid(c->by) && streq(sender_host(c->from), sender_host(c->by)) &&
                (!c->resend || streq(c->from, c->by));
}

bool mesh_cancel_allowed(const char *from, const char *by) {
        const char *h = sender_host(from);
        if (!con_remote_sender_valid(from) || !con_remote_sender_valid(by) || !streq_ptr(h, sender_host(by)))
                return false;
        return streq(from, by) || (startswith(by, "root@") && streq(by + strlen("root@"), h));
}

int mesh_cancel_to_json(const MeshCancel *c, char **ret) {
        if (!cancel_valid(c))
                return -EINVAL;
        _cleanup_cjson_ cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddNumberToObject(o, "v", 1) || !cJSON_AddStringToObject(o, "id", c->id) ||
            !cJSON_AddStringToObject(o, "agent", c->agent) || !cJSON_AddStringToObject(o, "from", c->from) ||
            !cJSON_AddStringToObject(o, "by", c->by) || (c->resend && !cJSON_AddTrueToObject(o, "resend")))
                return -ENOMEM;
        return print_json(o, ret);
}

int mesh_cancel_from_json(const char *data, size_t len, MeshCancel *ret) {
        static const char * const keys[] = { "id", "agent", "from", "by", "resend", NULL };
        _cleanup_cjson_ cJSON *o = NULL;
        MeshCancel c = {};
        int r;

        r = parse_object(data, len, keys, &o);
        if (r < 0)
                return r;
        /* "resend" only as true: one spelling for each message. */
        const cJSON *rs = cJSON_GetObjectItemCaseSensitive(o, "resend");
        if (rs && !cJSON_IsTrue(rs))
                return -EBADMSG;
        c.resend = rs != NULL;
        if ((r = get_string(o, "id", &c.id)) < 0 || (r = get_string(o, "agent", &c.agent)) < 0 ||
            (r = get_string(o, "from", &c.from)) < 0 || (r = get_string(o, "by", &c.by)) < 0 ||
            (!cancel_valid(&c) && (r = -EBADMSG) < 0)) {
                mesh_cancel_done(&c);
                return r;
        }
        *ret = c;
        return 0;
}

static void limit_text(FILE *f, const char *what, int64_t v) {
        if (v < 0)
                fprintf(f, "no %s, ", what);
        else
                fprintf(f, "%s %" PRIi64 ", ", what, v);
}

/* "max bytes 134217728, max messages per subject 10000, ..., discard new per subject" */
static int limits_text(const MeshStreamShape *s, char **ret) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        limit_text(f, "max messages", s->max_msgs);
        limit_text(f, "max messages per subject", s->max_msgs_per_subject);
        limit_text(f, "max bytes", s->max_bytes);
        limit_text(f, "max message size", s->max_msg_size);
        fprintf(f, "discard %s%s", s->discard == 1 ? "new" : "old", s->discard_new_per_subject ? " per subject" : "");
        if (fclose(f) != 0)
                return -ENOMEM;
        *ret = TAKE_PTR(buf);
        return 0;
}

int mesh_stream_shape_check(const char *name, const MeshStreamShape *have, const MeshStreamShape *want,
                            char **ret_text) {
        char *t = NULL;
        bool subjects_ok = have->n_subjects == want->n_subjects;

        *ret_text = NULL;
        for (size_t i = 0; subjects_ok && i < want->n_subjects; i++)
                subjects_ok = have->subjects[i] && streq(have->subjects[i], want->subjects[i]);
        const char *wrong = have->mirror ? "mirrors another stream" :
                            have->n_sources > 0 ? "has sources (it copies other streams)" :
                            have->republish ? "republishes its messages on other subjects" :
                            !subjects_ok ? "does not take exactly the mesh's subjects" :
                            have->retention != want->retention ? "has another retention policy" :
                            have->storage != want->storage ? "has another storage" : NULL;
        if (wrong) {
                if (asprintf(&t, "stream %s %s; not the mesh's stream (only the mesh's administrator makes them, "
                             "with con mesh streams: docs/MULTIHOST.md)", name, wrong) < 0)
                        return -ENOMEM;
                *ret_text = t;
                return -EPERM;
        }
        bool age = want->max_age_ns >= 0 && have->max_age_ns != want->max_age_ns;
        bool rep = want->replicas >= 0 && have->replicas != want->replicas;
        bool dup = want->duplicates_ns >= 0 && have->duplicates_ns != want->duplicates_ns;
        bool lim = have->max_msgs != want->max_msgs || have->max_msgs_per_subject != want->max_msgs_per_subject ||
                   have->max_bytes != want->max_bytes || have->max_msg_size != want->max_msg_size ||
                   have->discard != want->discard || have->discard_new_per_subject != want->discard_new_per_subject;
        if (!age && !rep && !dup && !lim)
                return 0;
        _cleanup_free_ char *have_lim = NULL, *want_lim = NULL;
        if (lim && (limits_text(have, &have_lim) < 0 || limits_text(want, &want_lim) < 0))
                return -ENOMEM;
        if (asprintf(&t, "stream %s has max age %" PRIi64 " s, %" PRIi64 " replica(s), duplicate window %" PRIi64
                     " s%s%s%s, not %" PRIi64 " s and %" PRIi64 " replica(s) (mesh.retention, mesh.replicas)%s%s%s%s: "
                     "the mesh's administrator sets them with con mesh streams (docs/MULTIHOST.md)", name,
                     have->max_age_ns / 1000000000, have->replicas, have->duplicates_ns / 1000000000,
                     lim ? " and other limits (" : "", strempty(have_lim), lim ? ")" : "",
                     want->max_age_ns / 1000000000, want->replicas,
                     dup ? " and a duplicate window of other length" : "",
                     lim ? " and the limits " : "", strempty(want_lim),
                     lim ? " (mesh.stream_max_bytes, mesh.stream_max_per_host)" : "") < 0)
                return -ENOMEM;
        *ret_text = t;
        return 1;
}
