/* SPDX-License-Identifier: MIT */
/* /etc/con/con.yaml is edited by hand: parse anything. A refusal must come with a message that
 * formats; an accepted config must be fully resolved (runner, provider and api_key_env set on every
 * agent, names unique and findable, command set exactly for exec and the deprecated cli_args). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "macro.h"
#include "names.h"
#include "strv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(con_config_freep) ConConfig *c = NULL;
        ConErrorDetail e = {};

        if (size > 64 * 1024)
                return 0;

        int r = con_config_parse((const char *) data, size, "fuzz.yaml", &c, &e);
        if (r == -ENOMEM) {
                con_error_detail_done(&e);
                return 0;
        }
        if (r < 0) {
                if (r != -EINVAL || c || !e.message)
                        abort();
                _cleanup_free_ char *s = con_error_detail_format(&e);
                if (!s || strchr(e.message, '\n'))
                        abort(); /* one line per error, even for values with newlines */
                con_error_detail_done(&e);
                return 0;
        }
        if (r != 0 || !c || e.message || c->n_agents == 0)
                abort();

        for (size_t i = 0; i < c->n_agents; i++) {
                const ConAgent *a = &c->agents[i];
                if (!con_agent_name_valid(a->name) || con_config_find_agent(c, a->name) != a)
                        abort();
                if (!a->rt.runner || !a->rt.provider || !a->rt.api_key_env || !a->cron_task)
                        abort();
                if (a->mode == CON_MODE_CRON && !a->cron)
                        abort();
                if (a->max_sessions < 1 || a->max_sessions > 64 || a->exec_timeout_usec == 0 ||
                    a->idle_exit_usec == 0)
                        abort();
                if (streq(a->rt.runner, "exec") && (!a->command || a->command[0][0] != '/'))
                        abort();
                if (a->command && !streq(a->rt.runner, "exec") && !streq(a->rt.runner, "claude") &&
                    !streq(a->rt.runner, "codex"))
                        abort();
                if (!con_tier_to_string(a->tier) || !con_mode_to_string(a->mode))
                        abort();
        }
        return 0;
}
