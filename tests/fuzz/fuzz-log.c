/* SPDX-License-Identifier: MIT */
/* The log module reads two things from its environment: $CON_LOG_LEVEL (a level name or number)
 * and $JOURNAL_STREAM ("DEV:INO"), and formats any message. Input: LEVEL \n STREAM \n MESSAGE. */
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static int fd = -1;
        if (size > 8192)
                return 0;
        _cleanup_free_ char *s = strndup((const char *) data, size);
        if (!s)
                return 0;
        char *stream = strchr(s, '\n');
        if (stream)
                *stream++ = '\0';
        char *message = stream ? strchr(stream, '\n') : NULL;
        if (message)
                *message++ = '\0';

        int level = log_level_from_string(s);
        if (level != -EINVAL && (level < LOG_EMERG || level > LOG_DEBUG))
                abort();
        if (level >= 0 && !log_level_to_string(level))
                abort();

        if (fd < 0)
                fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
        /* /dev/null is a character device, never a terminal: the journal only when the stream
         * names exactly its device and inode. */
        ConLogTarget t = log_target_for_fd(fd, stream);
        if (t != CON_LOG_TARGET_FILE && t != CON_LOG_TARGET_JOURNAL)
                abort();

        char buf[256];
        for (ConLogTarget k = 0; k < _CON_LOG_TARGET_MAX; k++) {
                memset(buf, 'x', sizeof buf);
                log_format_line(buf, sizeof buf, k, level < 0 ? LOG_INFO : level, "con-fuzz", 1,
                                1764412110123456ULL, strempty(message));
                if (!memchr(buf, '\0', sizeof buf))
                        abort();
        }
        return 0;
}
