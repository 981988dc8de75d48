/* SPDX-License-Identifier: MIT */
/* Tool call arguments as the model sends them: "<tool>\n<JSON arguments>". */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent-tools.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *s = malloc(size + 1);
        if (!s)
                return 0;
        memcpy(s, data, size);
        s[size] = 0;
        char *nl = strchr(s, '\n');
        const char *tool = s, *json = "";
        if (nl) {
                *nl = 0;
                json = nl + 1;
        }
        AgentToolArgs a = {};
        char *err = NULL;
        int r = agent_tool_args_parse(tool, json, &a, &err);
        if (r < 0 && r != -ENOMEM && !err)
                abort(); /* every refusal carries a message for the model */
        free(err);
        agent_tool_args_done(&a);
        free(s);
        return 0;
}
