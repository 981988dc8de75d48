/* SPDX-License-Identifier: MIT */
/* con_task_parse over arbitrary bytes: no crash, no leak, and every accepted task survives
 * con_task_format + con_task_parse unchanged. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "names.h"
#include "task.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_roundtrip(const ConTask *t) {
        _cleanup_(con_task_freep) ConTask *t2 = NULL;
        _cleanup_free_ char *out = NULL;
        size_t len = 0;
        ConErrorDetail e = {};

        if (con_task_format(t, &out, &len) < 0)
                abort();
        if (con_task_parse(out, len, len, &t2, &e) < 0)
                abort();
        if (t2->meta.priority != t->meta.priority || !streq_ptr(t2->meta.reply_to, t->meta.reply_to) ||
            !streq_ptr(t2->meta.conversation, t->meta.conversation) || !streq_ptr(t2->meta.to, t->meta.to) ||
            t2->meta.deadline_usec != t->meta.deadline_usec || t2->text_len != t->text_len ||
            memcmp(t2->text, t->text, t->text_len) != 0)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(con_task_freep) ConTask *t = NULL;
        ConErrorDetail e = {};
        size_t off;
        int r;

        r = con_task_parse((const char *) data, size, 0, &t, &e);
        if (r < 0) {
                /* every failure explains itself */
                if (r != -ENOMEM && r != -EFBIG && r != -EBADMSG)
                        abort();
                if (r != -ENOMEM && (!e.message || e.offset > size))
                        abort();
                free(con_error_detail_format(&e));
                con_error_detail_done(&e);
        } else {
                if (!t || e.message || strlen(t->text) != t->text_len)
                        abort();
                if (con_utf8_check(t->text, t->text_len, &off) != CON_TASK_OK)
                        abort();
                if (t->meta.priority < 0 || t->meta.priority > CON_TASK_PRIORITY_MAX)
                        abort();
                /* to: always a valid AGENT@HOST */
                if (t->meta.to) {
                        _cleanup_free_ char *agent = NULL, *host = NULL;
                        if (con_mesh_target_split(t->meta.to, &agent, &host) < 0)
                                abort();
                }
                check_roundtrip(t);
        }

        /* A small cap takes the size path on the same input. */
        _cleanup_(con_task_freep) ConTask *small = NULL;
        r = con_task_parse((const char *) data, size, 16, &small, &e);
        if (size > 16 && r != -EFBIG)
                abort();
        con_error_detail_done(&e);

        /* Ids from file names. */
        if (size < 300) {
                _cleanup_free_ char *name = strndup((const char *) data, size);
                _cleanup_free_ char *id = NULL;
                if (name && con_task_id_from_filename(name, &id) == 0 && !con_task_id_valid(id))
                        abort();
        }
        return 0;
}
