/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "log.h"
#include "time-util.h"

static const char *log_ident = "con";
static int log_max_level = LOG_INFO;
static ConLogTarget log_target = CON_LOG_TARGET_CONSOLE;
static char *log_file_path;

static const char *const level_names[] = {
        [LOG_EMERG] = "emerg", [LOG_ALERT] = "alert",   [LOG_CRIT] = "crit",  [LOG_ERR] = "err",
        [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice", [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

int log_level_from_string(const char *s) {
        if (!s || !*s)
                return -EINVAL;
        if (s[0] >= '0' && s[0] <= '7' && s[1] == '\0')
                return s[0] - '0';
        for (int i = 0; i < (int) ELEMENTSOF(level_names); i++)
                if (streq(s, level_names[i]))
                        return i;
        if (streq(s, "error"))
                return LOG_ERR;
        if (streq(s, "warn"))
                return LOG_WARNING;
        return -EINVAL;
}

const char *log_level_to_string(int level) {
        if (level < 0 || level >= (int) ELEMENTSOF(level_names))
                return NULL;
        return level_names[level];
}

void log_set_max_level(int level) {
        if (level >= LOG_EMERG && level <= LOG_DEBUG)
                log_max_level = level;
}

int log_get_max_level(void) {
        return log_max_level;
}

void log_set_target(ConLogTarget t) {
        if (t >= 0 && t < _CON_LOG_TARGET_MAX)
                log_target = t;
}

ConLogTarget log_get_target(void) {
        return log_target;
}

ConLogTarget log_target_for_fd(int fd, const char *journal_stream) {
        struct stat st;
        if (fstat(fd, &st) < 0)
                return CON_LOG_TARGET_FILE;
        if (journal_stream) {
                /* "DEV:INO" as systemd writes it: the journal is ours only if it is still stderr
                 * (a child that redirected stderr to a file inherits the variable). */
                unsigned long long dev, ino;
                int n = 0;
                if (sscanf(journal_stream, "%llu:%llu%n", &dev, &ino, &n) == 2 && journal_stream[n] == '\0' &&
                    (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino)
                        return CON_LOG_TARGET_JOURNAL;
        }
        if (isatty(fd))
                return CON_LOG_TARGET_CONSOLE;
        return CON_LOG_TARGET_FILE;
}

void log_setup(const char *ident) {
        if (ident)
                log_ident = ident;
        int l = log_level_from_string(getenv("CON_LOG_LEVEL"));
        if (l >= 0)
                log_max_level = l;
        log_target = log_target_for_fd(STDERR_FILENO, getenv("JOURNAL_STREAM"));
}

static int open_log_file(const char *path) {
        _cleanup_free_ char *dir = strdup(path);
        if (!dir)
                return -ENOMEM;
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
                *slash = '\0';
                if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                        return -errno;
        }
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0640);
        if (fd < 0)
                return -errno;
        if (dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        if (fd > STDERR_FILENO)
                close(fd);
        return 0;
}

int log_open_file(const char *path) {
        char *p = strdup(path);
        if (!p)
                return -ENOMEM;
        int r = open_log_file(path);
        if (r < 0) {
                free(p);
                return r;
        }
        free(log_file_path);
        log_file_path = p;
        log_target = CON_LOG_TARGET_FILE;
        return 0;
}

int log_reopen(void) {
        if (!log_file_path)
                return 0;
        return open_log_file(log_file_path);
}

char *log_format_line(char *buf, size_t size, ConLogTarget target, int level, const char *ident, int pid,
                      unsigned long long realtime_usec, const char *message) {
        if (size == 0)
                return buf;
        switch (target) {
        case CON_LOG_TARGET_JOURNAL:
                (void) snprintf(buf, size, "<%d>%s", level & LOG_PRIMASK, message);
                break;
        case CON_LOG_TARGET_FILE: {
                char ts[CON_TIMESTAMP_MAX];
                (void) con_format_timestamp(realtime_usec, ts);
                (void) snprintf(buf, size, "%s %s[%d] %s: %s", ts, ident, pid,
                                strempty(log_level_to_string(level & LOG_PRIMASK)), message);
                break;
        }
        default:
                (void) snprintf(buf, size, "%s: %s", ident, message);
        }
        return buf;
}

static void write_line(int level, const char *message) {
        char buf[8192];
        log_format_line(buf, sizeof buf - 1, log_target, level, log_ident, (int) getpid(), con_now(CLOCK_REALTIME),
                        message);
        size_t n = strlen(buf);
        /* One message, one line: a newline (or another control character) inside a message, which
         * may quote something an agent sent, cannot start a forged line or priority prefix. */
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) buf[i] < 0x20 && buf[i] != '\t')
                        buf[i] = ' ';
        buf[n++] = '\n';
        /* One write per line: lines of concurrent writers (O_APPEND) do not interleave. */
        (void) !write(STDERR_FILENO, buf, n);
}

_printf_(2, 0)
static char *format_message(int errnum, const char *fmt, va_list ap) {
        char *m = NULL;
        if (errnum != 0)
                errno = errnum > 0 ? errnum : -errnum;     /* for %m */
        if (vasprintf(&m, fmt, ap) < 0)
                return NULL;
        return m;
}

int log_internal(int level, int errnum, const char *fmt, ...) {
        int saved = errno;
        errnum = errnum < 0 ? -errnum : errnum;
        if ((level & LOG_PRIMASK) <= log_max_level) {
                va_list ap;
                va_start(ap, fmt);
                _cleanup_free_ char *m = format_message(errnum, fmt, ap);
                va_end(ap);
                write_line(level, m ?: fmt);
        }
        errno = saved;
        return -errnum;
}

/* Fixed ids, one per event kind (random once; never change them: they are a public interface,
 * listed in docs/LOGGING.md). */
static const struct {
        const char *name;
        const char *id;
} events[_CON_EVENT_MAX] = {
        [CON_EVENT_TASK_ACCEPTED]     = { "task.accepted",     "c8bf5142e01eeb06ca4168f307d7d34d" },
        [CON_EVENT_TASK_COMPLETED]    = { "task.completed",    "b2be746bd3ab4ae343744ff2177cfb7a" },
        [CON_EVENT_TASK_FAILED]       = { "task.failed",       "2ec810e71b5e2cce56667853f66ca172" },
        [CON_EVENT_TASK_ROUTED]       = { "task.routed",       "dad9422e135fb9f41f2d7f4e2c402772" },
        [CON_EVENT_TASK_REJECTED]     = { "task.rejected",     "70b0f0107f61152a0b43e5ca014b4ee8" },
        [CON_EVENT_VIOLATION_RAISED]  = { "violation.raised",  "2e6f37c75a8f55761f59292c246710d6" },
        [CON_EVENT_VIOLATION_CLEARED] = { "violation.cleared", "1dc77d6473cd040b863f9ef34ccd8d3c" },
        [CON_EVENT_ACTION_TAKEN]      = { "action.taken",      "ffe10889b74f0cb3e2c1e79a86673f2c" },
};

const char *log_event_message_id(ConLogEvent e) {
        return e >= 0 && e < _CON_EVENT_MAX ? events[e].id : NULL;
}

const char *log_event_to_string(ConLogEvent e) {
        return e >= 0 && e < _CON_EVENT_MAX ? events[e].name : NULL;
}

static void free_strings(char *(*v)[16]) {
        for (size_t i = 0; i < ELEMENTSOF(*v); i++)
                free((*v)[i]);
}

static int journal_send_event(ConLogEvent e, int level, const ConLogFields *f, const char *message) {
        _cleanup_(free_strings) char *s[16] = {};
        struct iovec iov[16];
        size_t n = 0;
        const struct {
                const char *key, *value;
        } fields[] = {
                { "CON_TASK_ID", f ? f->task_id : NULL },   { "CON_AGENT", f ? f->agent : NULL },
                { "CON_SENDER", f ? f->sender : NULL },     { "CON_STATUS", f ? f->status : NULL },
                { "CON_CONTRACT", f ? f->contract : NULL }, { "CON_ACTION", f ? f->action : NULL },
        };

        if (asprintf(&s[n++], "MESSAGE=%s", message) < 0 ||
            asprintf(&s[n++], "MESSAGE_ID=%s", events[e].id) < 0 ||
            asprintf(&s[n++], "PRIORITY=%d", level & LOG_PRIMASK) < 0 ||
            asprintf(&s[n++], "SYSLOG_IDENTIFIER=%s", log_ident) < 0 ||
            asprintf(&s[n++], "CON_EVENT=%s", events[e].name) < 0)
                return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                if (fields[i].value && asprintf(&s[n++], "%s=%s", fields[i].key, fields[i].value) < 0)
                        return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                iov[i] = (struct iovec) { .iov_base = s[i], .iov_len = strlen(s[i]) };
        return sd_journal_sendv(iov, (int) n);
}

void log_event(ConLogEvent e, int level, const ConLogFields *f, const char *fmt, ...) {
        int saved = errno;
        if (e < 0 || e >= _CON_EVENT_MAX || (level & LOG_PRIMASK) > log_max_level) {
                errno = saved;
                return;
        }
        va_list ap;
        va_start(ap, fmt);
        _cleanup_free_ char *m = format_message(0, fmt, ap);
        va_end(ap);
        if (log_target != CON_LOG_TARGET_JOURNAL || journal_send_event(e, level, f, m ?: fmt) < 0)
                write_line(level, m ?: fmt);
        errno = saved;
}
