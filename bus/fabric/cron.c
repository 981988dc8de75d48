/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>

#include "error-detail.h"
#include "cron.h"
#include "macro.h"
#include "strv.h"
#include "utf8.h"

enum { FIELD_MINUTE, FIELD_HOUR, FIELD_DOM, FIELD_MONTH, FIELD_DOW, _FIELD_MAX };

static const char * const month_names[] = {
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec", NULL,
};
static const char * const day_names[] = { "sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL };

static const struct {
        const char *name;
        unsigned min, max;              /* accepted values; day-of-week accepts 7 for Sunday */
        unsigned star_max;              /* upper end of "*" */
        const char * const *names;      /* names[i] means min + i */
        const char *names_hint;
} fields[_FIELD_MAX] = {
        [FIELD_MINUTE] = { "minute", 0, 59, 59, NULL, NULL },
        [FIELD_HOUR] = { "hour", 0, 23, 23, NULL, NULL },
        [FIELD_DOM] = { "day-of-month", 1, 31, 31, NULL, NULL },
        [FIELD_MONTH] = { "month", 1, 12, 12, month_names, " or jan..dec" },
        [FIELD_DOW] = { "day-of-week", 0, 7, 6, day_names, " or sun..sat (0 and 7 are Sunday)" },
};

#define FIELDS_HINT "minute hour day-of-month month day-of-week"

static const struct {
        const char *name;
        const char *expr;
} shorthands[] = {
        { "@yearly", "0 0 1 1 *" },
        { "@annually", "0 0 1 1 *" },
        { "@monthly", "0 0 1 * *" },
        { "@weekly", "0 0 * * 0" },
        { "@daily", "0 0 * * *" },
        { "@midnight", "0 0 * * *" },
        { "@hourly", "0 * * * *" },
};

static int field_error(char **ret_error, unsigned f, const char *text, size_t len, const char *fmt, ...)
        _printf_(5, 6);
static int field_error(char **ret_error, unsigned f, const char *text, size_t len, const char *fmt, ...) {
        if (!ret_error)
                return -EINVAL;
        _cleanup_free_ char *quoted = con_utf8_quote(text, len, 64);
        if (!quoted)
                return -ENOMEM;
        va_list ap;
        va_start(ap, fmt);
        _cleanup_free_ char *why = NULL;
        int r = vasprintf(&why, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        return con_error_textf(ret_error, -EINVAL, "%s field %s: %s", fields[f].name, quoted, why);
}

/* Reads one value (number or name) from [*p, end). */
static int parse_value(unsigned f, const char *text, size_t text_len, const char **p, const char *end,
                       unsigned *ret, char **ret_error) {
        const char *s = *p;
        if (s < end && isdigit((unsigned char) *s)) {
                unsigned v = 0;
                size_t n = 0;
                for (; s < end && isdigit((unsigned char) *s); s++, n++) {
                        if (n >= 3)
                                return field_error(ret_error, f, text, text_len, "number too long; allowed: %u-%u%s",
                                                   fields[f].min, fields[f].max, strempty(fields[f].names_hint));
                        v = v * 10 + (unsigned) (*s - '0');
                }
                if (v < fields[f].min || v > fields[f].max)
                        return field_error(ret_error, f, text, text_len, "%u is out of range %u-%u%s", v,
                                           fields[f].min, fields[f].max, strempty(fields[f].names_hint));
                *p = s;
                *ret = v;
                return 0;
        }
        if (fields[f].names && end - s >= 3) {
                for (unsigned i = 0; fields[f].names[i]; i++)
                        if (strncasecmp(s, fields[f].names[i], 3) == 0 &&
                            (end - s == 3 || !isalpha((unsigned char) s[3]))) {
                                *p = s + 3;
                                *ret = fields[f].min + i;
                                return 0;
                        }
        }
        return field_error(ret_error, f, text, text_len, "expected a number %u-%u%s, '*', a range A-B or a step /N",
                           fields[f].min, fields[f].max, strempty(fields[f].names_hint));
}

static int parse_field(unsigned f, const char *text, size_t len, uint64_t *ret_bits, char **ret_error) {
        const char *end = text + len;
        uint64_t bits = 0;

        for (const char *item = text; item <= end;) {
                const char *item_end = memchr(item, ',', (size_t) (end - item)) ?: end;
                const char *p = item;
                unsigned lo, hi, step = 1;
                bool star = false;
                int r;

                if (p == item_end)
                        return field_error(ret_error, f, text, len, "empty list item; separate values with a single ','");

                if (*p == '*') {
                        star = true;
                        lo = fields[f].min;
                        hi = fields[f].star_max;
                        p++;
                } else {
                        r = parse_value(f, text, len, &p, item_end, &lo, ret_error);
                        if (r < 0)
                                return r;
                        hi = lo;
                        if (p < item_end && *p == '-') {
                                p++;
                                r = parse_value(f, text, len, &p, item_end, &hi, ret_error);
                                if (r < 0)
                                        return r;
                                /* "fri-sun": Sunday written last means 7, the end of the week. */
                                if (f == FIELD_DOW && hi == 0 && lo > 0)
                                        hi = 7;
                                if (hi < lo)
                                        return field_error(ret_error, f, text, len,
                                                           "range %u-%u runs backwards; write the smaller value first", lo, hi);
                        }
                }
                if (p < item_end && *p == '/') {
                        if (!star && lo == hi)
                                return field_error(ret_error, f, text, len,
                                                   "a step needs a range or '*' before it, e.g. %u-%u/N or */N",
                                                   lo, fields[f].star_max);
                        p++;
                        step = 0;
                        size_t n = 0;
                        for (; p < item_end && isdigit((unsigned char) *p) && n < 3; p++, n++)
                                step = step * 10 + (unsigned) (*p - '0');
                        if (n == 0 || (p < item_end && isdigit((unsigned char) *p)) || step < 1 ||
                            step > fields[f].max - fields[f].min + 1)
                                return field_error(ret_error, f, text, len, "the step after '/' must be a number 1-%u",
                                                   fields[f].max - fields[f].min + 1);
                }
                if (p != item_end)
                        return field_error(ret_error, f, text, len, "unexpected '%c'; allowed: numbers %u-%u%s, '*', "
                                           "ranges A-B, steps /N and lists separated by ','",
                                           isprint((unsigned char) *p) ? *p : '?', fields[f].min, fields[f].max,
                                           strempty(fields[f].names_hint));

                for (unsigned v = lo; v <= hi; v += step)
                        bits |= UINT64_C(1) << (f == FIELD_DOW && v == 7 ? 0 : v);

                item = item_end + 1;
        }
        *ret_bits = bits;
        return 0;
}

static bool is_space(char c) {
        return c == ' ' || c == '\t';
}

static unsigned days_in_month_max(unsigned month) {
        static const unsigned d[13] = { 0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
        return d[month];
}

int con_cron_parse(const char *expr, ConCron *ret, char **ret_error) {
        if (!expr || !ret)
                return -EINVAL;

        const char *s = expr;
        while (is_space(*s))
                s++;
        if (*s == '@') {
                size_t l = strcspn(s, " \t");
                const char *rest = s + l;
                while (is_space(*rest))
                        rest++;
                for (size_t i = 0; i < ELEMENTSOF(shorthands); i++)
                        if (strlen(shorthands[i].name) == l && strncasecmp(s, shorthands[i].name, l) == 0 && !*rest)
                                return con_cron_parse(shorthands[i].expr, ret, ret_error);
                _cleanup_free_ char *quoted = con_utf8_quote(s, strlen(s), 64);
                if (!quoted)
                        return -ENOMEM;
                return con_error_textf(ret_error, -EINVAL, "unknown schedule %s; allowed shorthands: @yearly, @annually, "
                                 "@monthly, @weekly, @daily, @midnight, @hourly (@reboot is not supported)", quoted);
        }

        const char *tok[_FIELD_MAX];
        size_t tok_len[_FIELD_MAX], n = 0;
        for (const char *p = s; *p;) {
                size_t l = strcspn(p, " \t");
                for (size_t i = 0; i < l; i++)
                        if (!isprint((unsigned char) p[i]))
                                return con_error_textf(ret_error, -EINVAL, "the schedule contains a control character; expected 5 "
                                                 "fields separated by spaces: " FIELDS_HINT);
                if (n < _FIELD_MAX) {
                        tok[n] = p;
                        tok_len[n] = l;
                }
                n++;
                p += l;
                while (is_space(*p))
                        p++;
        }
        if (n != _FIELD_MAX)
                return con_error_textf(ret_error, -EINVAL, "expected 5 fields (" FIELDS_HINT ") or a shorthand like @daily, found %zu", n);

        uint64_t bits[_FIELD_MAX];
        for (unsigned f = 0; f < _FIELD_MAX; f++) {
                int r = parse_field(f, tok[f], tok_len[f], &bits[f], ret_error);
                if (r < 0)
                        return r;
        }

        ConCron c = {
                .minutes = bits[FIELD_MINUTE],
                .hours = (uint32_t) bits[FIELD_HOUR],
                .days = (uint32_t) bits[FIELD_DOM],
                .months = (uint16_t) bits[FIELD_MONTH],
                .weekdays = (uint8_t) bits[FIELD_DOW],
                .dom_star = tok[FIELD_DOM][0] == '*',
                .dow_star = tok[FIELD_DOW][0] == '*',
        };

        /* When the days are ANDed with a "*" weekday, a date like 30 February never comes. */
        if (c.dow_star) {
                bool possible = false;
                for (unsigned m = 1; m <= 12 && !possible; m++)
                        if (c.months & (1U << m))
                                for (unsigned d = 1; d <= days_in_month_max(m); d++)
                                        if (c.days & (UINT32_C(1) << d)) {
                                                possible = true;
                                                break;
                                        }
                if (!possible) {
                        _cleanup_free_ char *month = con_utf8_quote(tok[FIELD_MONTH], tok_len[FIELD_MONTH], 64);
                        if (!month)
                                return -ENOMEM;
                        return field_error(ret_error, FIELD_DOM, tok[FIELD_DOM], tok_len[FIELD_DOM],
                                           "no such day in the selected months (month field %s)", month);
                }
        }

        *ret = c;
        return 0;
}

static bool day_matches(const ConCron *c, int mday, int wday) {
        bool dom = c->days & (UINT32_C(1) << mday);
        bool dow = c->weekdays & (1U << wday);
        if (c->dom_star || c->dow_star)
                return dom && dow;
        return dom || dow;
}

bool con_cron_matches(const ConCron *c, const struct tm *tm) {
        return (c->months & (1U << (tm->tm_mon + 1))) && day_matches(c, tm->tm_mday, tm->tm_wday) &&
               (c->hours & (UINT32_C(1) << tm->tm_hour)) && (c->minutes & (UINT64_C(1) << tm->tm_min));
}

static bool breakdown(time_t t, bool utc, struct tm *tm) {
        return utc ? gmtime_r(&t, tm) != NULL : localtime_r(&t, tm) != NULL;
}

int con_cron_next(const ConCron *c, time_t after, bool utc, time_t *ret) {
        if (!c || !ret)
                return -EINVAL;
        if (after > (time_t) (INT64_MAX / 2) || after < -(time_t) (INT64_MAX / 2))
                return -ERANGE;

        time_t t = after - (((after % 60) + 60) % 60) + 60;
        /* Every feasible day (even 29 February on a given weekday) recurs within the 400-year
         * Gregorian cycle. */
        time_t limit = t + (time_t) 401 * 366 * 24 * 3600;
        struct tm tm;
        if (!breakdown(t, utc, &tm))
                return -ERANGE;

        /* Advance the most significant mismatching field and let mktime()/timegm() normalise. Each
         * step moves forward by at least a minute; at most ~45 steps per year are spent on months and
         * days, and at most 24 + 60 on the matching day. */
        for (unsigned iter = 0; iter < 1000000; iter++) {
                if (t > limit)
                        return -ERANGE;
                if (!(c->months & (1U << (tm.tm_mon + 1)))) {
                        tm.tm_mon++;
                        tm.tm_mday = 1;
                        tm.tm_hour = tm.tm_min = 0;
                } else if (!day_matches(c, tm.tm_mday, tm.tm_wday)) {
                        tm.tm_mday++;
                        tm.tm_hour = tm.tm_min = 0;
                } else if (!(c->hours & (UINT32_C(1) << tm.tm_hour))) {
                        tm.tm_hour++;
                        tm.tm_min = 0;
                } else if (!(c->minutes & (UINT64_C(1) << tm.tm_min))) {
                        tm.tm_min++;
                } else {
                        *ret = t;
                        return 0;
                }
                tm.tm_sec = 0;
                tm.tm_isdst = -1;
                errno = 0;
                time_t n = utc ? timegm(&tm) : mktime(&tm);
                if (n == (time_t) -1 && errno == EOVERFLOW)
                        return -ERANGE;
                /* Around a DST change mktime() may resolve to an earlier instant: step a minute. */
                if (n <= t)
                        n = t + 60;
                t = n;
                if (!breakdown(t, utc, &tm))
                        return -ERANGE;
        }
        return -ERANGE;
}

/* Appends the systemd form of the values in bits (min..max): "*", "SS/N", "AA..BB/N", or a list of
 * values and "AA..BB" runs, two digits each. */
static int encode_set(uint64_t bits, unsigned min, unsigned max, FILE *f) {
        unsigned vals[64], n = 0;
        for (unsigned v = min; v <= max; v++)
                if (bits & (UINT64_C(1) << v))
                        vals[n++] = v;
        if (n == 0)
                return -EINVAL;
        if (n == max - min + 1) {
                fputc('*', f);
                return 0;
        }
        if (n >= 3) {
                unsigned step = vals[1] - vals[0];
                bool progression = step >= 2;
                for (unsigned i = 2; i < n && progression; i++)
                        progression = vals[i] - vals[i - 1] == step;
                if (progression) {
                        if (vals[n - 1] + step > max)
                                fprintf(f, "%02u/%u", vals[0], step);
                        else
                                fprintf(f, "%02u..%02u/%u", vals[0], vals[n - 1], step);
                        return 0;
                }
        }
        for (unsigned i = 0; i < n;) {
                unsigned j = i;
                while (j + 1 < n && vals[j + 1] == vals[j] + 1)
                        j++;
                if (i > 0)
                        fputc(',', f);
                if (j - i >= 2) {
                        fprintf(f, "%02u..%02u", vals[i], vals[j]);
                        i = j + 1;
                } else {
                        fprintf(f, "%02u", vals[i]);
                        i++;
                }
        }
        return 0;
}

/* Weekdays in systemd's order, Monday first, runs of three or more as "A..B". */
static void encode_weekdays(uint8_t weekdays, FILE *f) {
        static const char * const names[7] = { "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun" };
        bool in[7];
        for (unsigned i = 0; i < 7; i++)
                in[i] = weekdays & (1U << ((i + 1) % 7));
        bool first = true;
        for (unsigned i = 0; i < 7;) {
                if (!in[i]) {
                        i++;
                        continue;
                }
                unsigned j = i;
                while (j + 1 < 7 && in[j + 1])
                        j++;
                if (!first)
                        fputc(',', f);
                first = false;
                if (j - i >= 2) {
                        fprintf(f, "%s..%s", names[i], names[j]);
                        i = j + 1;
                } else {
                        fputs(names[i], f);
                        i++;
                }
        }
        fputc(' ', f);
}

static int render_line(const ConCron *c, bool with_weekdays, bool with_days, char **ret) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        _cleanup_fclose_ FILE *f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        int r;

        if (with_weekdays && (c->weekdays & 0x7f) != 0x7f)
                encode_weekdays(c->weekdays, f);
        fputs("*-", f);
        if ((r = encode_set(c->months, 1, 12, f)) < 0)
                return r;
        fputc('-', f);
        if (with_days) {
                if ((r = encode_set(c->days, 1, 31, f)) < 0)
                        return r;
        } else
                fputc('*', f);
        fputc(' ', f);
        if ((r = encode_set(c->hours, 0, 23, f)) < 0)
                return r;
        fputc(':', f);
        if ((r = encode_set(c->minutes, 0, 59, f)) < 0)
                return r;
        fputs(":00", f);
        if (fflush(f) != 0 || ferror(f))
                return -ENOMEM;
        f = (fclose(f), NULL);
        *ret = TAKE_PTR(buf);
        return 0;
}

int con_cron_to_oncalendar(const ConCron *c, char ***ret) {
        if (!c || !ret || !c->minutes || !c->hours || !c->days || !c->months || !(c->weekdays & 0x7f))
                return -EINVAL;

        _cleanup_strv_free_ char **l = NULL;
        char *line = NULL;
        int r;
        bool all_days = c->days == UINT32_C(0xfffffffe), all_weekdays = (c->weekdays & 0x7f) == 0x7f;

        if (!c->dom_star && !c->dow_star && !all_days && !all_weekdays) {
                /* Vixie: either day field may match. systemd ANDs them, so write two lines. */
                r = render_line(c, true, false, &line);
                if (r < 0)
                        return r;
                r = strv_consume(&l, line);
                if (r < 0)
                        return r;
                r = render_line(c, false, true, &line);
        } else if (!c->dom_star && !c->dow_star)
                /* One of the OR'ed day fields covers every day. */
                r = render_line(c, false, false, &line);
        else
                r = render_line(c, true, true, &line);
        if (r < 0)
                return r;
        r = strv_consume(&l, line);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(l);
        return 0;
}
