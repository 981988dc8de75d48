/* SPDX-License-Identifier: MIT */
/* The progress lines a session writes (services/agentd/agent-transcript.h), as the service reads
 * them: any bytes, split into lines. Whatever they hold, the transcript keeps at most its limit of
 * steps, every phase reported is one of the fixed words, and the JSON it yields is valid UTF-8
 * that parses back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent-transcript.h"
#include "macro.h"
#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        AgentTranscript t = {};
        const char *p = (const char *) data, *end = p + size;

        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                size_t len = nl ? (size_t) (nl - p) : (size_t) (end - p);
                unsigned turn = 0;
                const char *phase = NULL;
                int r = agent_transcript_add_line(&t, p, len, &turn, &phase);
                if (r == 1 && (!phase || (strcmp(phase, "model") != 0 && strcmp(phase, "tool") != 0) || turn < 1 ||
                               turn > 1000))
                        abort();
                if (r < 0 && r != -ENOMEM)
                        abort();
                p += len + 1;
        }
        if (t.steps && cJSON_GetArraySize(t.steps) > AGENT_TRANSCRIPT_STEPS_MAX)
                abort();
        cJSON *j = agent_transcript_to_json(&t);
        if (j) {
                char *s = cJSON_PrintUnformatted(j);
                if (s) {
                        if (!con_utf8_valid(s, strlen(s)))
                                abort();
                        cJSON *back = cJSON_Parse(s);
                        if (!back)
                                abort();
                        cJSON_Delete(back);
                        free(s);
                }
                cJSON_Delete(j);
        }
        agent_transcript_done(&t);
        return 0;
}
