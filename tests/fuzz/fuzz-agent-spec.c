/* SPDX-License-Identifier: MIT */
/* A commission's spec (org.conspiracy.Provisioner1.CommissionAgent) comes from a caller: hostile
 * by assumption. Whatever its strings, the drop-in written for it must parse back to exactly one
 * agent of that name, with the instructions and model byte for byte as given (no value can add
 * a key, an agent or a document), or be refused with a message naming the drop-in.
 * Input: the spec's fields separated by NUL bytes: name, tier, mode, cron, cron_task,
 * instructions, runner, provider, model, then lists (entries separated by '\n'): roles,
 * may_task, tasked_by, network. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent-spec.h"
#include "config.h"
#include "macro.h"
#include "strv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *main_path;
static char main_dir[] = "/tmp/fuzz-agent-spec.XXXXXX";

static void remove_main(void) {
        if (main_path) {
                (void) unlink(main_path);
                (void) rmdir(main_dir);
        }
}

static const char *main_file(void) {
        if (main_path)
                return main_path;
        if (!mkdtemp(main_dir))
                abort();
        if (asprintf(&main_path, "%s/con.yaml", main_dir) < 0)
                abort();
        atexit(remove_main);
        FILE *f = fopen(main_path, "we");
        if (!f || fputs("agents:\n  - name: concierge\n  - name: sysadmin\n", f) < 0 || fclose(f) != 0)
                abort();
        return main_path;
}

static char **split_list(const char *s) {
        char **l = NULL;
        if (!s || !*s)
                return NULL;
        _cleanup_free_ char *copy = strdup(s);
        if (!copy)
                abort();
        char *save = NULL;
        for (char *t = strtok_r(copy, "\n", &save); t; t = strtok_r(NULL, "\n", &save))
                if (strv_extend(&l, t) < 0)
                        abort();
        return l;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *fields[13] = {};
        size_t n = 0, at = 0;

        if (size > 128 * 1024)
                return 0;
        _cleanup_free_ char *buf = malloc(size + 1);
        if (!buf)
                return 0;
        memcpy(buf, data, size);
        buf[size] = 0;
        while (n < ELEMENTSOF(fields) && at <= size) {
                fields[n++] = buf + at;
                at += strlen(buf + at) + 1;
        }
        ConAgentSpec s = {
                .name = fields[0],
                .tier = fields[1] && *fields[1] ? fields[1] : NULL,
                .mode = fields[2] && *fields[2] ? fields[2] : NULL,
                .cron = fields[3] && *fields[3] ? fields[3] : NULL,
                .cron_task = fields[4] && *fields[4] ? fields[4] : NULL,
                .instructions = fields[5] && *fields[5] ? fields[5] : NULL,
                .runner = fields[6] && *fields[6] ? fields[6] : NULL,
                .provider = fields[7] && *fields[7] ? fields[7] : NULL,
                .model = fields[8] && *fields[8] ? fields[8] : NULL,
        };
        _cleanup_strv_free_ char **roles = split_list(fields[9]), **may = split_list(fields[10]),
                                 **by = split_list(fields[11]), **net = split_list(fields[12]);
        s.roles = roles;
        s.may_task = may;
        s.tasked_by = by;
        s.network = net;

        _cleanup_free_ char *error = NULL, *yaml = NULL, *file = NULL;
        if (con_agent_spec_check(&s, &error) < 0) {
                if (!error)
                        abort();
                return 0;
        }
        int r = con_agent_spec_to_yaml(&s, &yaml);
        if (r == -ENOMEM)
                return 0;
        if (r < 0 || !yaml)
                abort();    /* a checked spec always has a drop-in */
        if (asprintf(&file, "%s.yaml", s.name) < 0)
                return 0;

        _cleanup_(con_config_freep) ConConfig *c = NULL;
        ConErrorDetail e = {};
        r = con_config_load_full(&(ConConfigLoad) { .path = main_file(), .extra_dropin_name = file,
                                                    .extra_dropin_text = yaml, .extra_dropin_len = strlen(yaml) },
                                 &c, &e);
        if (r == -ENOMEM) {
                con_error_detail_done(&e);
                return 0;
        }
        if (r < 0) {
                /* Refused by the loader: it names the drop-in. */
                if (r != -EINVAL || !e.file || !strstr(e.file, file) || !e.message)
                        abort();
                con_error_detail_done(&e);
                return 0;
        }
        if (c->n_agents != 3 || !streq(c->agents[2].name, s.name) || !c->agents[2].file ||
            !strstr(c->agents[2].file, file))
                abort();
        const ConAgent *a = &c->agents[2];
        if (!streq_ptr(a->instructions, s.instructions))
                abort();
        if (s.model && !streq_ptr(a->rt.model, s.model))
                abort();
        if (c->n_policy_grants != strv_length(may) + strv_length(by))
                abort();
        return 0;
}
