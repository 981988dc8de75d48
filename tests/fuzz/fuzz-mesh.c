/* SPDX-License-Identifier: MIT */
/* The mesh's messages as they come off NATS (services/meshd/mesh-util.c): anything a NATS client
 * could publish on con.task.<host> or con.result.<host>. A message that parses must hold only
 * valid fields (a task's priority and deadline too) and must write back to a message that parses
 * to the same fields. Input: one byte
 * ('s': a state event; 'S': a state event's subject, a newline, then the event, checked as the
 * gateway checks it (mesh_state_check) and recorded in a small table; 'c': a cancel on
 * con.cancel.<host>.<from>; else bit 1: the rest is the message's subject
 * instead, whose sending host must be a valid host name that makes the same subject again; else
 * bit 0: a result, else a task), then the message. */
#undef NDEBUG
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "mesh-state.h"
#include "mesh-util.h"
#include "names.h"
#include "policy-vocab.h"
#include "task.h"
#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_task(const char *d, size_t n) {
        MeshTask t = {}, back = {};
        _cleanup_free_ char *json = NULL;
        int r = mesh_task_from_json(d, n, &t);
        if (r < 0) {
                assert(r == -EBADMSG || r == -ENOMEM);
                assert(!t.id && !t.text);
                return;
        }
        assert(con_task_id_valid(t.id) && con_agent_name_valid(t.agent) && con_mesh_host_valid(t.origin));
        assert(con_remote_sender_valid(t.from) && streq(strrchr(t.from, '@') + 1, t.origin));
        assert(con_utf8_valid(t.text, strlen(t.text)));
        assert(con_task_priority_valid(t.priority) && mesh_deadline_valid(t.deadline_usec));
        r = mesh_task_to_json(&t, &json);
        if (r == 0) {
                assert(mesh_task_from_json(json, strlen(json), &back) == 0);
                assert(streq(back.id, t.id) && streq(back.from, t.from) && streq(back.text, t.text));
                assert(back.priority == t.priority && back.deadline_usec == t.deadline_usec);
                mesh_task_done(&back);
        } else
                assert(r == -ENOMEM);
        mesh_task_done(&t);
}

static void check_result(const char *d, size_t n) {
        MeshResult m = {}, back = {};
        _cleanup_free_ char *json = NULL;
        int r = mesh_result_from_json(d, n, &m);
        if (r < 0) {
                assert(r == -EBADMSG || r == -ENOMEM);
                assert(!m.id && !m.text);
                return;
        }
        assert(con_task_id_valid(m.id) && con_mesh_host_valid(m.host) && con_remote_sender_valid(m.from));
        assert(con_utf8_valid(m.text, strlen(m.text)));
        r = mesh_result_to_json(&m, &json);
        if (r == 0) {
                assert(mesh_result_from_json(json, strlen(json), &back) == 0);
                assert(streq(back.status, m.status) && streq(back.text, m.text) && back.size == m.size);
                mesh_result_done(&back);
        } else
                assert(r == -ENOMEM);
        mesh_result_done(&m);
}

static void check_state(const char *d, size_t n) {
        MeshState m = {}, back = {};
        _cleanup_free_ char *json = NULL;
        int r = mesh_state_from_json(d, n, &m);
        if (r < 0) {
                assert(r == -EBADMSG || r == -ENOMEM);
                assert(!m.id && !m.state);
                return;
        }
        assert(con_task_id_valid(m.id) && con_mesh_host_valid(m.host) && con_remote_sender_valid(m.from));
        assert(con_agent_name_valid(m.agent) && mesh_state_rank(m.state) >= 0);
        r = mesh_state_to_json(&m, &json);
        if (r == 0) {
                assert(mesh_state_from_json(json, strlen(json), &back) == 0);
                assert(streq(back.id, m.id) && streq(back.from, m.from) && streq(back.state, m.state));
                mesh_state_done(&back);
        } else
                assert(r == -ENOMEM);
        mesh_state_done(&m);
}

static void check_cancel(const char *d, size_t n) {
        MeshCancel c = {}, back = {};
        _cleanup_free_ char *json = NULL;
        int r = mesh_cancel_from_json(d, n, &c);
        if (r < 0) {
                assert(r == -EBADMSG || r == -ENOMEM);
                assert(!c.id && !c.by);
                return;
        }
        assert(con_task_id_valid(c.id) && con_agent_name_valid(c.agent));
        assert(con_remote_sender_valid(c.from) && con_remote_sender_valid(c.by));
        assert(streq(strrchr(c.from, '@'), strrchr(c.by, '@')));
        /* A request to send the result again is the sender's own, through its gateway. */
        if (c.resend)
                assert(streq(c.from, c.by));
        /* Allowed: the sender itself or root of its host, never another. */
        if (mesh_cancel_allowed(c.from, c.by))
                assert(streq(c.from, c.by) || startswith(c.by, "root@"));
        r = mesh_cancel_to_json(&c, &json);
        if (r == 0) {
                assert(mesh_cancel_from_json(json, strlen(json), &back) == 0);
                assert(streq(back.id, c.id) && streq(back.agent, c.agent) && streq(back.from, c.from) &&
                       streq(back.by, c.by) && back.resend == c.resend);
                mesh_cancel_done(&back);
        } else
                assert(r == -ENOMEM);
        mesh_cancel_done(&c);
}

static MeshStateTable table = { .max = 4 };

static void check_state_subject(const char *d, size_t n) {
        const char *nl = memchr(d, '\n', n);
        if (!nl)
                return;
        _cleanup_free_ char *subject = strndup(d, (size_t) (nl - d)), *origin = NULL, *publisher = NULL, *id = NULL,
                            *again = NULL, *who = NULL;
        assert(subject);
        int r = mesh_state_subject_parse(subject, &origin, &publisher, &id);
        if (r < 0) {
                assert(r == -EBADMSG || r == -ENOMEM);
                assert(!origin && !publisher && !id);
        } else {
                assert(con_mesh_host_valid(origin) && con_mesh_host_valid(publisher) && con_task_id_valid(id));
                assert(mesh_state_subject(origin, publisher, id, &again) == 0);
                assert(streq(again, subject));
        }
        MeshState m = {};
        if (mesh_state_from_json(nl + 1, n - (size_t) (nl + 1 - d), &m) < 0)
                return;
        const char *why = NULL;
        r = mesh_state_check(subject, &m, &who, &why);
        assert(r == 0 || r == -EBADMSG || r == -EPERM || r == -ENOMEM);
        assert((r == -EPERM) == (why != NULL));
        if (r == -EBADMSG)
                assert(!origin);
        if (r == 0) {
                /* Believed: the subject is about this task, from its origin or the host running it. */
                assert(origin && streq(id, m.id) && streq(strrchr(m.from, '@') + 1, origin));
                assert(streq(publisher, m.host) || (streq(publisher, origin) && streq(m.state, "submitted")));
                r = mesh_state_table_apply(&table, &m, n);
                assert(r >= 0 || r == -ENOMEM);
                const MeshStateEntry *e = mesh_state_table_find(&table, m.id, m.host, m.agent, m.from);
                assert(r == -ENOMEM || (e && mesh_state_rank(e->state) >= mesh_state_rank(m.state)));
                assert(table.n <= 4);
                /* Every row is charged to one host, and the counts add up. */
                size_t sum = 0;
                for (size_t i = 0; i < table.n_owners; i++)
                        sum += table.owners[i].n;
                assert(sum == table.n);
                for (size_t i = 0; i < table.n; i++)
                        assert(mesh_state_table_owned(&table, table.entries[i].owner) > 0);
        }
        mesh_state_done(&m);
}

static void check_subject(MeshKind k, const char *d, size_t n) {
        _cleanup_free_ char *subject = strndup(d, n), *again = NULL;
        const char *from = NULL;
        assert(subject);
        if (mesh_subject_sender(k, "host-b", subject, &from) < 0)
                return;
        assert(con_mesh_host_valid(from));
        assert(mesh_subject(k, "host-b", from, &again) == 0);
        assert(streq(again, subject));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1 || size > 64 * 1024)
                return 0;
        if (data[0] == 's')
                check_state((const char *) data + 1, size - 1);
        else if (data[0] == 'c')
                check_cancel((const char *) data + 1, size - 1);
        else if (data[0] == 'S')
                check_state_subject((const char *) data + 1, size - 1);
        else if (data[0] & 2)
                check_subject(data[0] & 1 ? MESH_KIND_RESULT : MESH_KIND_TASK, (const char *) data + 1, size - 1);
        else if (data[0] & 1)
                check_result((const char *) data + 1, size - 1);
        else
                check_task((const char *) data + 1, size - 1);
        return 0;
}
