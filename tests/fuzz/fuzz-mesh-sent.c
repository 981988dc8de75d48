/* SPDX-License-Identifier: MIT */
/* The sending gateway's records of sent tasks as it reads them back at start-up
 * (services/meshd/mesh-sent.c), whatever a damaged disk may hold: CON_MESH_SENT_DIR/journal and an
 * earlier version's <id>.sent files. A record that parses must hold only valid fields, and must
 * write back to the same record. Input (this host: host-a): 'J' then a journal's bytes (replayed
 * from a file, as at start-up); 'R' then one journal line; else an earlier version's file text. */
#undef NDEBUG
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-util.h"
#include "macro.h"
#include "mesh-sent.h"
#include "names.h"
#include "policy-vocab.h"
#include "task.h"
#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_valid(const MeshSent *s) {
        assert(con_task_id_valid(s->id) && con_agent_name_valid(s->agent) && con_mesh_host_valid(s->host));
        assert(s->state && s->uid != (uid_t) -1 && s->sender);
        assert(s->done == (s->result.text != NULL));
        if (s->done) {
                assert(streq(s->result.id, s->id) && streq(s->result.host, s->host) && streq(s->result.agent, s->agent));
                assert(con_utf8_valid(s->result.text, strlen(s->result.text)));
        } else
                assert(s->ended_usec == 0);
        if (s->cancel_by)
                assert(con_remote_sender_valid(s->cancel_by) && endswith(s->cancel_by, "@host-a"));
}

static void check_same(const MeshSent *a, const MeshSent *b) {
        assert(streq(a->id, b->id) && streq(a->sender, b->sender) && streq(a->state, b->state));
        assert(a->uid == b->uid && a->submitted_usec == b->submitted_usec && a->done == b->done);
        assert(a->ended_usec == b->ended_usec && a->stored == b->stored && streq_ptr(a->cancel_by, b->cancel_by));
        if (a->done)
                assert(streq(a->result.text, b->result.text) && a->result.size == b->result.size);
}

/* One journal line: a put writes back to the same record, a forget names a valid id. */
static void one_record(const char *data, size_t size) {
        MeshSent s = {}, back = {};
        _cleanup_free_ char *line = NULL;
        int r = mesh_sent_from_record(data, size, "host-a", &s);
        if (r < 0) {
                assert(r == -EBADMSG || r == -ENOMEM);
                assert(!s.id && !s.sender && !s.result.text && !s.cancel_by);
                return;
        }
        if (r == 1) {
                assert(con_task_id_valid(s.id) && !s.sender);
                mesh_sent_done(&s);
                return;
        }
        check_valid(&s);
        r = mesh_sent_to_record(&s, "host-a", &line);
        if (r == 0) {
                assert(!strchr(line, '\n'));
                assert(mesh_sent_from_record(line, strlen(line), "host-a", &back) == 0);
                check_same(&s, &back);
                mesh_sent_done(&back);
        } else
                assert(r == -ENOMEM);
        mesh_sent_done(&s);
}

/* A whole journal, replayed from its file as at start-up: every record valid, ids unique. */
static void journal(const uint8_t *data, size_t size) {
        MeshSentJournal *j = NULL;
        MeshSent *all = NULL;
        size_t n = 0;
        MeshSentLoadStats st = {};
        fuzz_dir_put(MESH_SENT_JOURNAL, data, size);
        int r = mesh_sent_journal_open(fuzz_dir_dfd(), "host-a", &j, &all, &n, &st);
        if (r < 0) {
                assert(r == -ENOMEM);
                return;
        }
        for (size_t i = 0; i < n; i++) {
                check_valid(&all[i]);
                for (size_t k = 0; k < i; k++)
                        assert(!streq(all[i].id, all[k].id));
                if (i > 0)
                        assert(all[i - 1].submitted_usec <= all[i].submitted_usec);
        }
        /* A torn tail is cut off: what stays ends with a line. */
        assert(mesh_sent_journal_size(j) <= size);
        assert(st.torn_tail == (size > 0 && mesh_sent_journal_size(j) < size));
        mesh_sent_free_many(all, n);
        mesh_sent_journal_free(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        MeshSent s = {}, back = {};
        _cleanup_free_ char *text = NULL;

        if (size > 64 * 1024)
                return 0;
        if (size > 0 && data[0] == 'J') {
                journal(data + 1, size - 1);
                return 0;
        }
        if (size > 0 && data[0] == 'R') {
                one_record((const char *) data + 1, size - 1);
                return 0;
        }
        int r = mesh_sent_from_text((const char *) data, size, "host-a", &s);
        if (r < 0) {
                assert(r == -EBADMSG || r == -ENOMEM);
                assert(!s.id && !s.sender && !s.result.text);
                return 0;
        }
        assert(con_task_id_valid(s.id) && con_agent_name_valid(s.agent) && con_mesh_host_valid(s.host));
        assert(s.state && s.uid != (uid_t) -1 && s.sender);
        assert(s.done == (s.result.text != NULL));
        if (s.done) {
                assert(streq(s.result.id, s.id) && streq(s.result.host, s.host) && streq(s.result.agent, s.agent));
                assert(con_utf8_valid(s.result.text, strlen(s.result.text)));
        } else
                assert(s.ended_usec == 0);
        r = mesh_sent_to_text(&s, "host-a", &text);
        if (r == 0) {
                assert(mesh_sent_from_text(text, strlen(text), "host-a", &back) == 0);
                assert(streq(back.id, s.id) && streq(back.sender, s.sender) && streq(back.state, s.state));
                assert(back.uid == s.uid && back.submitted_usec == s.submitted_usec && back.done == s.done);
                assert(back.ended_usec == s.ended_usec && back.stored == s.stored);
                if (s.done)
                        assert(streq(back.result.text, s.result.text) && back.result.size == s.result.size);
                mesh_sent_done(&back);
        } else
                assert(r == -ENOMEM);
        mesh_sent_done(&s);
        return 0;
}
