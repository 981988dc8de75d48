/* SPDX-License-Identifier: MIT */
/* /proc/self/mountinfo and /proc/self/cgroup decide where con-agentd creates session cgroups:
 * any text (split at the first NUL into the two files) parses or is refused, and what parses is
 * an absolute path without "..". */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cgroup-util.h"
#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > 65536)
                return 0;
        _cleanup_free_ char *s = malloc(size + 2);
        if (!s)
                return 0;
        memcpy(s, data, size);
        s[size] = s[size + 1] = 0;
        const char *mountinfo = s, *cgroup = s + strlen(s) + 1;
        if (cgroup > s + size)
                cgroup = s + size + 1;
        _cleanup_free_ char *dir = NULL;
        int r = con_cgroup_parse_own(mountinfo, cgroup, &dir);
        if (r < 0) {
                if (dir)
                        abort();
                return 0;
        }
        if (!dir || dir[0] != '/' || strstr(dir, "/../") || endswith(dir, "/.."))
                abort();
        return 0;
}
