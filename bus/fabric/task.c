/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "names.h"
#include "task.h"
#include "time-util.h"
#include "utf8.h"
#include "yaml-reader.h"


ConTask *con_task_free(ConTask *t) {
        if (!t)
                return NULL;
        free(t->meta.reply_to);
        free(t->meta.conversation);
        free(t->meta.to);
        free(t->text);
        free(t);
        return NULL;
}

ConTaskProblem con_utf8_check(const char *buf, size_t len, size_t *ret_offset) {
        size_t off = con_utf8_invalid_offset(buf, len);

        if (ret_offset)
                *ret_offset = off;
        if (off == len)
                return CON_TASK_OK;
        return buf[off] == 0 ? CON_TASK_NUL_BYTE : CON_TASK_BAD_UTF8;
}

_printf_(4, 5)
static int task_fail(ConErrorDetail *e, int r, size_t offset, const char *fmt, ...) {
        va_list ap;
        int k;

        if (!e)
                return r;
        va_start(ap, fmt);
        k = con_error_detail_setv(e, NULL, 0, 0, NULL, fmt, ap);
        va_end(ap);
        if (k == -ENOMEM)
                return k;
        e->offset = offset;
        return r;
}

/* A line is "---" followed by "\n", "\r\n" or the end of the buffer. Returns the length of the
 * line including its terminator, or 0 when it is not a delimiter. */
static size_t delimiter_line(const char *p, size_t len) {
        if (len < 3 || memcmp(p, "---", 3) != 0)
                return 0;
        if (len == 3)
                return 3;
        if (p[3] == '\n')
                return 4;
        if (p[3] == '\r' && (len == 4 || p[4] == '\n'))
                return len == 4 ? 4 : 5;
        return 0;
}

static bool leap_year(unsigned y) {
        return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(unsigned y, unsigned m) {
        static const unsigned d[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
        return m == 2 && leap_year(y) ? 29 : d[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date (civil-from-days inverse). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
        y -= m <= 2;
        int64_t era = (y >= 0 ? y : y - 399) / 400;
        int64_t yoe = y - era * 400;
        int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
        int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + doe - 719468;
}

static bool digits(const char *s, size_t n, unsigned *ret) {
        unsigned v = 0;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (unsigned) (s[i] - '0');
        }
        *ret = v;
        return true;
}

/* RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM). 'T' and 'Z' may be lower
 * case (RFC 3339 section 5.6). Fractions beyond microseconds are truncated. Years 1970..9999. */
int con_task_deadline_parse(const char *s, size_t len, uint64_t *ret) {
        unsigned Y, M, D, h, m, sec, oh = 0, om = 0;
        uint64_t usec = 0;
        size_t i;
        int sign = 0;

        if (len < 20 || !digits(s, 4, &Y) || s[4] != '-' || !digits(s + 5, 2, &M) || s[7] != '-' ||
            !digits(s + 8, 2, &D) || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2, &h) ||
            s[13] != ':' || !digits(s + 14, 2, &m) || s[16] != ':' || !digits(s + 17, 2, &sec))
                return -EINVAL;
        i = 19;
        if (s[i] == '.') {
                unsigned nd = 0;
                i++;
                while (i < len && s[i] >= '0' && s[i] <= '9') {
                        if (nd < 6)
                                usec = usec * 10 + (uint64_t) (s[i] - '0');
                        nd++;
                        i++;
                }
                if (nd == 0)
                        return -EINVAL;
                for (; nd < 6; nd++)
                        usec *= 10;
        }
        if (i < len && (s[i] == 'Z' || s[i] == 'z') && i + 1 == len)
                sign = 0;
        else if (i < len && (s[i] == '+' || s[i] == '-') && len - i == 6 && digits(s + i + 1, 2, &oh) &&
                 s[i + 3] == ':' && digits(s + i + 4, 2, &om))
                sign = s[i] == '+' ? 1 : -1;
        else
                return -EINVAL;

        if (Y < 1970 || M < 1 || M > 12 || D < 1 || D > days_in_month(Y, M) || h > 23 || m > 59 ||
            sec > 60 || oh > 23 || om > 59)
                return -EINVAL;

        /* A leap second (:60) counts as the first second of the next minute. */
        int64_t t = days_from_civil(Y, M, D) * 86400 + h * 3600 + m * 60 + sec;
        t -= sign * (int64_t) (oh * 3600 + om * 60);
        if (t <= 0)
                return -EINVAL;
        *ret = (uint64_t) t * USEC_PER_SEC + usec;
        return 0;
}

/* ---- front matter, read with the one YAML reader (yaml-reader.h) ---- */

static int parse_priority(ConYamlReader *y, const yaml_node_t *v, const char *path, void *dest,
                          void *userdata _unused_) {
        unsigned u = CON_TASK_PRIORITY_DEFAULT;
        int r;

        if (con_yaml_node_is_null(v))
                return con_yaml_fail(y, v, path, "the value is empty; use a whole number from 0 to %d "
                                     "(higher runs first)", CON_TASK_PRIORITY_MAX);
        r = con_yaml_get_uint(y, v, path, 0, CON_TASK_PRIORITY_MAX, &u);
        if (r < 0)
                return r;
        *(int *) dest = (int) u;
        return 0;
}

/* The string value of a front-matter key; an empty value is refused (it would mean nothing). */
static int fm_string(ConYamlReader *y, const yaml_node_t *v, const char *path, const char *what, char **ret) {
        if (con_yaml_node_is_null(v))
                return con_yaml_fail(y, v, path, "the value is empty; give %s or leave the key out", what);
        return con_yaml_get_string(y, v, path, ret);
}

static int parse_reply_to(ConYamlReader *y, const yaml_node_t *v, const char *path, void *dest,
                          void *userdata _unused_) {
        _cleanup_free_ char *s = NULL;
        int r;

        r = fm_string(y, v, path, "an agent name", &s);
        if (r < 0)
                return r;
        ConNameProblem np = con_agent_name_check(s);
        if (np != CON_NAME_OK) {
                _cleanup_free_ char *q = con_yaml_quote(v);
                return q ? con_yaml_fail(y, v, path, "%s is not a valid agent name: %s", q,
                                         con_name_problem_to_string(np)) : -ENOMEM;
        }
        free(*(char **) dest);
        *(char **) dest = TAKE_PTR(s);
        return 0;
}

static int parse_deadline(ConYamlReader *y, const yaml_node_t *v, const char *path, void *dest,
                          void *userdata _unused_) {
        _cleanup_free_ char *s = NULL;
        int r;

        r = fm_string(y, v, path, "a timestamp", &s);
        if (r < 0)
                return r;
        if (con_task_deadline_parse(s, strlen(s), dest) < 0) {
                _cleanup_free_ char *q = con_yaml_quote(v);
                return q ? con_yaml_fail(y, v, path, "%s is not an RFC 3339 timestamp; write it like "
                                         "2026-12-01T10:00:00Z or 2026-12-01T11:00:00+01:00", q) : -ENOMEM;
        }
        return 0;
}

static int parse_conversation(ConYamlReader *y, const yaml_node_t *v, const char *path, void *dest,
                              void *userdata _unused_) {
        _cleanup_free_ char *s = NULL;
        int r;

        r = fm_string(y, v, path, "a conversation id", &s);
        if (r < 0)
                return r;
        if (!con_conversation_id_valid(s)) {
                _cleanup_free_ char *q = con_yaml_quote(v);
                return q ? con_yaml_fail(y, v, path, "%s is not a conversation id; use the id of the task that "
                                         "started it, or '" CON_CONVERSATION_LATEST "'", q) : -ENOMEM;
        }
        free(*(char **) dest);
        *(char **) dest = TAKE_PTR(s);
        return 0;
}

static int parse_to(ConYamlReader *y, const yaml_node_t *v, const char *path, void *dest, void *userdata _unused_) {
        _cleanup_free_ char *s = NULL;
        int r;

        r = fm_string(y, v, path, "AGENT@HOST", &s);
        if (r < 0)
                return r;
        if (!con_mesh_target_valid(s)) {
                _cleanup_free_ char *q = con_yaml_quote(v);
                return q ? con_yaml_fail(y, v, path, "%s is not AGENT@HOST (an agent name, '@' and the name of a host "
                                         "of the mesh, e.g. sysadmin@host-b)", q) : -ENOMEM;
        }
        free(*(char **) dest);
        *(char **) dest = TAKE_PTR(s);
        return 0;
}

static const ConYamlField front_matter_fields[] = {
        { "priority", .type = CON_YAML_CUSTOM, .offset = offsetof(ConTaskMeta, priority), .parse = parse_priority },
        { "reply-to", .alias = "reply_to", .type = CON_YAML_CUSTOM, .offset = offsetof(ConTaskMeta, reply_to),
          .parse = parse_reply_to },
        { "deadline", .type = CON_YAML_CUSTOM, .offset = offsetof(ConTaskMeta, deadline_usec), .parse = parse_deadline },
        { "conversation", .type = CON_YAML_CUSTOM, .offset = offsetof(ConTaskMeta, conversation),
          .parse = parse_conversation },
        { "to", .type = CON_YAML_CUSTOM, .offset = offsetof(ConTaskMeta, to), .parse = parse_to },
        {}
};

/* text: the YAML between the delimiter lines, which starts on the file's second line at offset. */
static int fm_parse(const char *text, size_t len, size_t offset, ConTaskMeta *meta, ConErrorDetail *e) {
        _cleanup_(con_yaml_reader_done) ConYamlReader y = {
                .line_base = 1, .offset_base = offset, .err = e, .no_aliases = true,
        };
        int r;

        r = con_yaml_open(&y, text, len, NULL);
        if (r == -ENODATA) {    /* empty front matter, or only comments */
                con_error_detail_done(e);
                return 0;
        }
        if (r < 0)
                return r == -ENOMEM ? r : -EBADMSG;
        r = con_yaml_read_mapping(&y, yaml_document_get_root_node(y.doc), NULL, front_matter_fields, meta, NULL, NULL);
        if (r < 0)
                return r == -ENOMEM ? r : -EBADMSG;
        return 0;
}

static bool is_blank(const char *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (!strchr(" \t\r\n\v\f", s[i]))
                        return false;
        return true;
}

int con_task_parse(const char *buf, size_t len, size_t max_size, ConTask **ret, ConErrorDetail *reterr) {
        _cleanup_(con_task_freep) ConTask *t = NULL;
        ConTaskProblem p;
        size_t off, body = 0;
        int r;

        if (!buf && len > 0)
                return -EINVAL;
        if (reterr)
                con_error_detail_done(reterr);
        if (max_size == 0)
                max_size = CON_TASK_DEFAULT_MAX_SIZE;

        if (len > max_size)
                return task_fail(reterr, -EFBIG, max_size,
                                 "task is %zu bytes; task files may be at most %zu bytes", len, max_size);

        p = con_utf8_check(buf, len, &off);
        if (p == CON_TASK_NUL_BYTE)
                return task_fail(reterr, -EBADMSG, off, "NUL byte at offset %zu; task files must be text", off);
        if (p == CON_TASK_BAD_UTF8)
                return task_fail(reterr, -EBADMSG, off, "invalid UTF-8 at byte %zu; task files must be UTF-8 text", off);

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->meta.priority = CON_TASK_PRIORITY_DEFAULT;

        size_t d = delimiter_line(buf, len);
        if (d > 0) {
                /* Front matter: look for the closing delimiter line. */
                size_t pos = d, close = SIZE_MAX;

                while (pos < len) {
                        size_t cl = delimiter_line(buf + pos, len - pos);
                        if (cl > 0) {
                                close = pos;
                                body = pos + cl;
                                break;
                        }
                        const char *nl = memchr(buf + pos, '\n', len - pos);
                        if (!nl)
                                break;
                        pos = (size_t) (nl - buf) + 1;
                }
                if (close == SIZE_MAX) {
                        r = task_fail(reterr, -EBADMSG, 0, "front matter starts with '---' but has no closing '---' line "
                                      "(add one after the last key)");
                        if (reterr)
                                reterr->line = 1;
                        return r;
                }

                r = fm_parse(buf + d, close - d, d, &t->meta, reterr);
                if (r < 0)
                        return r;
        }

        if (body == len)
                return task_fail(reterr, -EBADMSG, body, "task text is empty");
        if (is_blank(buf + body, len - body))
                return task_fail(reterr, -EBADMSG, body, "task text is only whitespace");

        t->text_len = len - body;
        t->text = strndup(buf + body, t->text_len);
        if (!t->text)
                return -ENOMEM;

        if (ret)
                *ret = TAKE_PTR(t);
        return 0;
}

static int format_rfc3339(uint64_t usec, char ret[64]) {
        struct tm tm;
        time_t s = (time_t) (usec / USEC_PER_SEC);
        unsigned frac = (unsigned) (usec % USEC_PER_SEC);
        size_t n;

        if (!gmtime_r(&s, &tm))
                return -ERANGE;
        n = strftime(ret, 64, "%Y-%m-%dT%H:%M:%S", &tm);
        if (n == 0)
                return -ERANGE;
        if (frac > 0)
                snprintf(ret + n, 64 - n, ".%06uZ", frac);
        else
                snprintf(ret + n, 64 - n, "Z");
        return 0;
}

/* One front-matter line. Names and ids have no character YAML would have to escape, but a plain
 * "null" or "Null" (a valid agent name, a valid conversation id) reads back as an empty value:
 * such a value is written quoted (found by fuzz-task). */
static void fm_put(FILE *f, const char *key, const char *value) {
        if (con_yaml_word_is_null(value))
                fprintf(f, "%s: \"%s\"\n", key, value);
        else
                fprintf(f, "%s: %s\n", key, value);
}

int con_task_format(const ConTask *t, char **ret, size_t *ret_len) {
        _cleanup_free_ char *out = NULL;
        size_t out_len = 0;
        bool fm;
        FILE *f;

        if (!t || !ret || (!t->text && t->text_len > 0))
                return -EINVAL;
        if (t->meta.priority < 0 || t->meta.priority > CON_TASK_PRIORITY_MAX)
                return -EINVAL;
        if (t->meta.reply_to && !con_agent_name_valid(t->meta.reply_to))
                return -EINVAL;
        if (t->meta.conversation && !con_conversation_id_valid(t->meta.conversation))
                return -EINVAL;
        if (t->meta.to && !con_mesh_target_valid(t->meta.to))
                return -EINVAL;

        /* Front matter when the meta differs from the defaults, and also when the text itself
         * starts with a '---' line: without it the text would be read back as front matter. */
        fm = t->meta.priority != CON_TASK_PRIORITY_DEFAULT || t->meta.reply_to || t->meta.deadline_usec > 0 ||
             t->meta.conversation || t->meta.to ||
             (t->text && delimiter_line(t->text, t->text_len) > 0);

        f = open_memstream(&out, &out_len);
        if (!f)
                return -ENOMEM;
        if (fm) {
                fputs("---\n", f);
                if (t->meta.priority != CON_TASK_PRIORITY_DEFAULT)
                        fprintf(f, "priority: %d\n", t->meta.priority);
                if (t->meta.reply_to)
                        fm_put(f, "reply-to", t->meta.reply_to);
                if (t->meta.deadline_usec > 0) {
                        char ts[64];
                        if (format_rfc3339(t->meta.deadline_usec, ts) < 0) {
                                fclose(f);
                                return -ERANGE;
                        }
                        fprintf(f, "deadline: %s\n", ts);
                }
                if (t->meta.conversation)
                        fm_put(f, "conversation", t->meta.conversation);
                if (t->meta.to)
                        fm_put(f, "to", t->meta.to);
                fputs("---\n", f);
        }
        if (t->text_len > 0)
                fwrite(t->text, 1, t->text_len, f);
        if (fclose(f) != 0 || !out)
                return -ENOMEM;

        if (ret_len)
                *ret_len = out_len;
        *ret = TAKE_PTR(out);
        return 0;
}

const char *con_task_state_a2a(const char *s) {
        static const char * const map[][2] = {
                { "submitted", "submitted" }, { "queued", "submitted" },
                { "working", "working" },     { "running", "working" },
                { "input-required", "input-required" },
                { "completed", "completed" }, { "done", "completed" },
                { "failed", "failed" },
                { "canceled", "canceled" },   { "cancelled", "canceled" },
        };
        for (size_t i = 0; s && i < ELEMENTSOF(map); i++)
                if (streq(map[i][0], s))
                        return map[i][1];
        return NULL;
}

bool con_task_state_is_final(const char *s) {
        const char *a = con_task_state_a2a(s);
        return a && (streq(a, "completed") || streq(a, "failed") || streq(a, "canceled"));
}

bool con_task_id_valid(const char *id) {
        size_t n;

        if (!id)
                return false;
        n = strlen(id);
        if (n == 0 || n > CON_TASK_ID_MAX)
                return false;
        if (!((id[0] >= 'A' && id[0] <= 'Z') || (id[0] >= 'a' && id[0] <= 'z') || (id[0] >= '0' && id[0] <= '9')))
                return false;
        for (size_t i = 1; i < n; i++) {
                char c = id[i];
                if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '-'))
                        return false;
        }
        return !strstr(id, "..");
}

bool con_conversation_id_valid(const char *id) {
        return con_task_id_valid(id);
}

static pthread_mutex_t id_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t id_last_usec;
static uint32_t id_counter;

int con_task_id_new(char **ret) {
        uint64_t now, usec;
        uint32_t counter, rnd = 0;
        struct tm tm;
        time_t s;
        char buf[32];

        if (!ret)
                return -EINVAL;
        now = con_now(CLOCK_REALTIME);

        /* Within a process ids strictly increase even when the clock steps back: never go below
         * the last time used, and order equal times by the counter. Across processes the pid
         * separates them, and the random part separates pids reused across pid namespaces. */
        pthread_mutex_lock(&id_lock);
        usec = now > id_last_usec ? now : id_last_usec;
        id_last_usec = usec;
        counter = id_counter++;
        pthread_mutex_unlock(&id_lock);

        if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t) sizeof(rnd))
                rnd = (uint32_t) (now ^ (now >> 32)) * 2654435761u;

        s = (time_t) (usec / USEC_PER_SEC);
        if (!gmtime_r(&s, &tm) || strftime(buf, sizeof(buf), "%Y%m%dT%H%M%S", &tm) == 0)
                return -ERANGE;
        if (asprintf(ret, "%s.%06" PRIu64 "Z-%06x-%08" PRIx32 "-%08" PRIx32, buf, usec % USEC_PER_SEC,
                     (unsigned) getpid(), counter, rnd) < 0)
                return -ENOMEM;
        return 0;
}

int con_task_id_from_filename(const char *filename, char **ret) {
        const char *e;
        char *id;

        if (!filename || !ret)
                return -EINVAL;
        e = endswith(filename, ".task");
        if (!e)
                return -EINVAL;
        id = strndup(filename, (size_t) (e - filename));
        if (!id)
                return -ENOMEM;
        if (!con_task_id_valid(id)) {
                free(id);
                return -EINVAL;
        }
        *ret = id;
        return 0;
}
