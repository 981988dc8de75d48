/* SPDX-License-Identifier: MIT */
/* A halt marker's content is read by every agent service (bus/fabric/markers.c): whatever bytes
 * are in it, the reason is one line of valid text without control characters, never empty, and
 * at most what the cut allows (U+FFFD replacements count 3 bytes each). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-util.h"
#include "macro.h"
#include "markers.h"
#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *reason = NULL;

        if (size > 8192)
                return 0;
        fuzz_dir_put("halt", data, size);
        if (con_marker_read(fuzz_dir(), CON_MARKER_HALT, NULL, &reason) != 1 || !reason)
                abort();
        size_t n = strlen(reason);
        if (n == 0 || n > 3 * CON_MARKER_REASON_MAX || !con_utf8_valid(reason, n))
                abort();
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) reason[i] < 0x20)
                        abort();
        return 0;
}
