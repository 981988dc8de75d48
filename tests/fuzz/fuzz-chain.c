/* SPDX-License-Identifier: MIT */
/* A running-task record (services/agentd/agent-chain.h) as another agent's service reads it: the
 * parser refuses it or yields a valid id and chain, and the chain formats and parses back to the
 * same record. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent-chain.h"
#include "macro.h"
#include "task.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *id = NULL, *chain = NULL, *again = NULL, *id2 = NULL, *chain2 = NULL, *child = NULL;
        uint64_t dl = 0, dl2 = 0;

        int r = agent_chain_record_parse((const char *) data, size, &id, &chain, &dl);
        if (r == -ENOMEM)
                return 0;
        if (r < 0) {
                if (r != -EBADMSG)
                        abort();
                return 0;
        }
        if (!con_task_id_valid(id) || !agent_chain_valid(chain))
                abort();
        if (agent_chain_record_format(id, chain, dl, &again) < 0)
                return 0;
        if (agent_chain_record_parse(again, strlen(again), &id2, &chain2, &dl2) < 0 || !streq(id, id2) ||
            !streq(chain, chain2))
                abort();
        if (agent_chain_append(chain, "x", id, &child) < 0)
                return 0;
        if (agent_chain_hops(child) != agent_chain_hops(chain) + 1 || !agent_chain_has_agent(child, "x") ||
            !agent_chain_valid(child))
                abort();
        return 0;
}
