/* SPDX-License-Identifier: MIT */
/* The sending gateway's records of sent tasks as it reads them back at start-up
 * (services/meshd/mesh-sent.c): CON_MESH_SENT_DIR/<id>.sent, whatever a damaged disk may hold. A
 * record that parses must hold only valid fields, and must write back to the same record. Input:
 * the file's text (this host: host-a). */
#undef NDEBUG
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "mesh-sent.h"
#include "names.h"
#include "task.h"
#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        MeshSent s = {}, back = {};
        _cleanup_free_ char *text = NULL;

        if (size > 64 * 1024)
                return 0;
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
