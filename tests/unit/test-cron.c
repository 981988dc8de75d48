/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <time.h>

#include "cron.h"
#include "strv.h"
#include "test-util.h"

static ConCron parse_ok(const char *expr) {
        ConCron c = {};
        _cleanup_free_ char *err = NULL;
        int r = con_cron_parse(expr, &c, &err);
        if (r < 0)
                g_error("\"%s\" refused: %s", expr, strempty(err));
        g_assert_null(err);
        return c;
}

static bool cron_eq(const ConCron *a, const ConCron *b) {
        return a->minutes == b->minutes && a->hours == b->hours && a->days == b->days && a->months == b->months &&
               a->weekdays == b->weekdays && a->dom_star == b->dom_star && a->dow_star == b->dow_star;
}

static void test_parse(void) {
        ConCron c = parse_ok("0 8 * * *");
        g_assert_cmpuint(c.minutes, ==, 1);
        g_assert_cmpuint(c.hours, ==, 1U << 8);
        g_assert_cmpuint(c.days, ==, 0xfffffffeU);
        g_assert_cmpuint(c.months, ==, 0x1ffe);
        g_assert_cmpuint(c.weekdays, ==, 0x7f);
        g_assert_true(c.dom_star && c.dow_star);

        c = parse_ok("*/15 9-17 * * mon-fri");
        g_assert_cmpuint(c.minutes, ==, (1ULL << 0) | (1ULL << 15) | (1ULL << 30) | (1ULL << 45));
        g_assert_cmpuint(c.hours, ==, 0x3fe00);
        g_assert_cmpuint(c.weekdays, ==, 0x3e);
        g_assert_true(c.dom_star && !c.dow_star);

        c = parse_ok("23 0-20/2 1,15 jan,JUL-Aug *");
        g_assert_cmpuint(c.minutes, ==, 1ULL << 23);
        g_assert_cmpuint(c.hours, ==, 0x155555);
        g_assert_cmpuint(c.days, ==, (1U << 1) | (1U << 15));
        g_assert_cmpuint(c.months, ==, (1U << 1) | (1U << 7) | (1U << 8));
        g_assert_true(!c.dom_star && c.dow_star);

        /* 7 and 0 are both Sunday; "fri-sun" wraps to the end of the week. */
        ConCron a = parse_ok("5 4 * * 7"), b = parse_ok("5 4 * * sun");
        g_assert_true(cron_eq(&a, &b));
        g_assert_cmpuint(a.weekdays, ==, 1);
        g_assert_cmpuint(parse_ok("0 0 * * fri-sun").weekdays, ==, 0x61);
        g_assert_cmpuint(parse_ok("0 0 * * 5-7").weekdays, ==, 0x61);
        g_assert_cmpuint(parse_ok("0 0 * * 0-7").weekdays, ==, 0x7f);

        /* Shorthands and odd spacing. */
        a = parse_ok("@daily");
        b = parse_ok("  0\t 0 *  * *  ");
        g_assert_true(cron_eq(&a, &b));
        a = parse_ok("@HOURLY");
        b = parse_ok("0 * * * *");
        g_assert_true(cron_eq(&a, &b));

        c = parse_ok("0 0 29 2 *"); /* leap days exist */
        g_assert_cmpuint(c.days, ==, 1U << 29);
        c = parse_ok("0 0 1-31/2 * *");
        g_assert_false(c.dom_star);
        g_assert_cmpuint(c.days, ==, 0xaaaaaaaaU);
        c = parse_ok("0-59/60 * * * *");
        g_assert_cmpuint(c.minutes, ==, 1);
}

static void check_error(const char *expr, const char *expected) {
        ConCron c = {};
        _cleanup_free_ char *err = NULL;
        g_assert_cmpint(con_cron_parse(expr, &c, &err), ==, -EINVAL);
        g_assert_nonnull(err);
        if (!strstr(err, expected))
                g_error("\"%s\": message \"%s\" does not contain \"%s\"", expr, err, expected);
        /* Callers may pass no error pointer. */
        g_assert_cmpint(con_cron_parse(expr, &c, NULL), ==, -EINVAL);
}

static void test_errors(void) {
        check_error("", "expected 5 fields (minute hour day-of-month month day-of-week) or a shorthand like "
                    "@daily, found 0");
        check_error("0 8 * *", "found 4");
        check_error("0 8 * * * *", "found 6");
        check_error("60 * * * *", "minute field '60': 60 is out of range 0-59");
        check_error("* 24 * * *", "hour field '24': 24 is out of range 0-23");
        check_error("* * 0 * *", "day-of-month field '0': 0 is out of range 1-31");
        check_error("* * * 13 *", "month field '13': 13 is out of range 1-12 or jan..dec");
        check_error("* * * * 8", "day-of-week field '8': 8 is out of range 0-7 or sun..sat (0 and 7 are Sunday)");
        check_error("* * * foo *", "month field 'foo': expected a number 1-12 or jan..dec");
        check_error("* * * * monday", "day-of-week field 'monday': expected a number");
        check_error("*/0 * * * *", "minute field '*/0': the step after '/' must be a number 1-60");
        check_error("*/61 * * * *", "the step after '/' must be a number 1-60");
        check_error("*/ * * * *", "the step after '/' must be a number 1-60");
        check_error("5-1 * * * *", "minute field '5-1': range 5-1 runs backwards");
        check_error("1,,2 * * * *", "minute field '1,,2': empty list item");
        check_error("1, * * * *", "empty list item");
        check_error("5/10 * * * *", "a step needs a range or '*' before it, e.g. 5-59/N or */N");
        check_error("1-2-3 * * * *", "minute field '1-2-3': unexpected '-'");
        check_error("* * * * mon-", "day-of-week field 'mon-': expected a number");
        check_error("0007 * * * *", "number too long");
        check_error("0 0 30 feb *", "day-of-month field '30': no such day in the selected months (month field 'feb')");
        check_error("0 0 31 4,6,9,11 *", "no such day in the selected months");
        check_error("@reboot", "unknown schedule '@reboot'");
        check_error("@daily 5", "unknown schedule");
        check_error("0 8 * * *\n", "control character");
        check_error("0 8\x01 * * *", "control character");

        /* Long fields are cut in messages. */
        GString *g = g_string_new(NULL);
        for (unsigned i = 0; i < 50; i++)
                g_string_append(g, "1,");
        g_string_append(g, "x * * * *");
        check_error(g->str, "minute field '1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,...': "
                    "expected a number 0-59");
        g_string_free(g, true);
}

static time_t utc(int y, int mo, int d, int h, int mi, int s) {
        struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = s };
        return timegm(&tm);
}

static void check_next(const char *expr, time_t after, time_t expected) {
        ConCron c = parse_ok(expr);
        time_t t = 0;
        g_assert_cmpint(con_cron_next(&c, after, true, &t), ==, 0);
        if (t != expected) {
                char a[64], b[64];
                struct tm tm;
                strftime(a, sizeof a, "%F %T %a", gmtime_r(&t, &tm));
                strftime(b, sizeof b, "%F %T %a", gmtime_r(&expected, &tm));
                g_error("\"%s\": next is %s, expected %s", expr, a, b);
        }
}

static void test_next(void) {
        time_t now = utc(2026, 11, 29, 11, 28, 30); /* a Sunday */

        check_next("0 8 * * *", now, utc(2026, 11, 30, 8, 0, 0));
        check_next("* * * * *", now, utc(2026, 11, 29, 11, 29, 0));
        /* Strictly after: a matching instant itself is not returned. */
        check_next("0 8 * * *", utc(2026, 11, 30, 8, 0, 0), utc(2026, 12, 1, 8, 0, 0));
        check_next("0 8 * * *", utc(2026, 11, 30, 7, 59, 59), utc(2026, 11, 30, 8, 0, 0));
        check_next("*/15 9-17 * * mon-fri", utc(2026, 11, 27, 17, 50, 0), utc(2026, 11, 30, 9, 0, 0));
        check_next("*/15 9-17 * * mon-fri", utc(2026, 11, 30, 9, 7, 0), utc(2026, 11, 30, 9, 15, 0));
        check_next("0 0 29 2 *", utc(2026, 3, 1, 0, 0, 0), utc(2028, 2, 29, 0, 0, 0));
        /* '*' + "/7" is Sunday only and ANDs with the date: 29 February on a Sunday is rare. */
        check_next("0 0 29 2 */7", utc(2026, 3, 1, 0, 0, 0), utc(2032, 2, 29, 0, 0, 0));
        check_next("0 0 29 2 */7", utc(2032, 3, 1, 0, 0, 0), utc(2060, 2, 29, 0, 0, 0));
        check_next("0 0 1 1 *", now, utc(2027, 1, 1, 0, 0, 0));
        check_next("59 23 31 12 *", now, utc(2026, 12, 31, 23, 59, 0));
        /* Vixie OR: the 1st or a Monday. */
        check_next("0 0 1 * mon", now, utc(2026, 11, 30, 0, 0, 0));
        check_next("0 0 1 * mon", utc(2026, 11, 30, 0, 0, 0), utc(2026, 12, 1, 0, 0, 0));
        check_next("0 0 1 * mon", utc(2026, 12, 1, 0, 0, 0), utc(2026, 12, 7, 0, 0, 0));
        /* A field starting with '*' makes it AND: Mondays on odd days. 2026-12-07 is odd, 11-30 is not. */
        check_next("0 0 */2 * mon", now, utc(2026, 12, 7, 0, 0, 0));
        check_next("0 12 * jan,jul *", now, utc(2027, 1, 1, 12, 0, 0));
        check_next("0 0 * * 7", now, utc(2026, 12, 6, 0, 0, 0));
        /* Before 1970 works too. */
        check_next("0 0 * * *", utc(1969, 12, 31, 12, 0, 30), utc(1970, 1, 1, 0, 0, 0));

        ConCron c = parse_ok("0 0 * * *");
        time_t t;
        g_assert_cmpint(con_cron_next(&c, (time_t) INT64_MAX, true, &t), ==, -ERANGE);
}

/* Local time across DST changes in New York: 2026-03-08 02:00 -> 03:00, 2026-11-01 02:00 -> 01:00. */
static void test_next_local_dst(void) {
        g_assert_true(g_setenv("TZ", "America/New_York", true));
        tzset();

        ConCron c = parse_ok("30 2 * * *");
        time_t t;
        /* 02:30 does not exist on 8 March: the next run is on the 9th, 02:30 EDT = 06:30 UTC. */
        g_assert_cmpint(con_cron_next(&c, utc(2026, 3, 8, 5, 0, 0), false, &t), ==, 0);
        g_assert_cmpint(t, ==, utc(2026, 3, 9, 6, 30, 0));

        c = parse_ok("0 9 * * *");
        g_assert_cmpint(con_cron_next(&c, utc(2026, 3, 7, 15, 0, 0), false, &t), ==, 0);
        g_assert_cmpint(t, ==, utc(2026, 3, 8, 13, 0, 0)); /* 09:00 EDT */

        /* 01:30 happens twice on 1 November; every answer must be later and a real 01:30, and the
         * first one is the first 01:30 (EDT). */
        c = parse_ok("30 1 * * *");
        time_t after = utc(2026, 11, 1, 4, 0, 0); /* 00:00 EDT */
        g_assert_cmpint(con_cron_next(&c, after, false, &t), ==, 0);
        g_assert_cmpint(t, ==, utc(2026, 11, 1, 5, 30, 0));
        for (unsigned i = 0; i < 3; i++) {
                g_assert_cmpint(con_cron_next(&c, after, false, &t), ==, 0);
                g_assert_cmpint(t, >, after);
                struct tm tm;
                localtime_r(&t, &tm);
                g_assert_cmpint(tm.tm_hour, ==, 1);
                g_assert_cmpint(tm.tm_min, ==, 30);
                after = t;
        }
        g_assert_cmpint(t, <=, utc(2026, 11, 3, 6, 30, 0));

        /* Every minute through the fall-back hour terminates and moves forward. */
        c = parse_ok("* * * * *");
        after = utc(2026, 11, 1, 5, 0, 0);
        for (unsigned i = 0; i < 150; i++) {
                g_assert_cmpint(con_cron_next(&c, after, false, &t), ==, 0);
                g_assert_cmpint(t, ==, after + 60);
                after = t;
        }

        g_assert_true(g_setenv("TZ", "UTC", true));
        tzset();
}

static void check_calendar(const char *expr, const char *line1, const char *line2) {
        ConCron c = parse_ok(expr);
        _cleanup_strv_free_ char **l = NULL;
        g_assert_cmpint(con_cron_to_oncalendar(&c, &l), ==, 0);
        char *expected[] = { (char *) line1, (char *) line2, NULL };
        if (!strv_equal(l, expected)) {
                _cleanup_free_ char *got = strv_join(l, " | ");
                g_error("\"%s\": got \"%s\", expected \"%s%s%s\"", expr, got, line1, line2 ? " | " : "",
                        strempty(line2));
        }
}

static void test_oncalendar(void) {
        /* The original passed "0 8 * * *" to OnCalendar= verbatim, which systemd refuses. */
        check_calendar("0 8 * * *", "*-*-* 08:00:00", NULL);
        check_calendar("*/15 9-17 * * mon-fri", "Mon..Fri *-*-* 09..17:00/15:00", NULL);
        check_calendar("0 0 1,15 * *", "*-*-01,15 00:00:00", NULL);
        check_calendar("30 4 1 * mon", "Mon *-*-* 04:30:00", "*-*-01 04:30:00");
        check_calendar("30 4 1,15 jan-mar tue,thu", "Tue,Thu *-01..03-* 04:30:00", "*-01..03-01,15 04:30:00");
        check_calendar("0 0 * * 0", "Sun *-*-* 00:00:00", NULL);
        check_calendar("0 0 * * fri-sun", "Fri..Sun *-*-* 00:00:00", NULL);
        check_calendar("0 0 * * 6,0", "Sat,Sun *-*-* 00:00:00", NULL);
        check_calendar("0 0 * * sun,mon,wed", "Mon,Wed,Sun *-*-* 00:00:00", NULL);
        check_calendar("0 12 * jan,jun-aug *", "*-01,06..08-* 12:00:00", NULL);
        check_calendar("23 0-20/2 * * *", "*-*-* 00..20/2:23:00", NULL);
        check_calendar("0 */2 * * *", "*-*-* 00/2:00:00", NULL);
        check_calendar("5-59/10 * * * *", "*-*-* *:05/10:00", NULL);
        check_calendar("0 0 */2 * mon", "Mon *-*-01/2 00:00:00", NULL);
        check_calendar("0 9 1-31 * mon", "*-*-* 09:00:00", NULL);
        check_calendar("0 9 15 * 0-6", "*-*-* 09:00:00", NULL);
        check_calendar("5,10 * * * *", "*-*-* *:05,10:00", NULL);
        check_calendar("0,1,2,10,30-32 * * * *", "*-*-* *:00..02,10,30..32:00", NULL);
        check_calendar("*/30 * * * *", "*-*-* *:00,30:00", NULL);
        check_calendar("@hourly", "*-*-* *:00:00", NULL);
        check_calendar("@yearly", "*-01-01 00:00:00", NULL);
        check_calendar("@weekly", "Sun *-*-* 00:00:00", NULL);
        check_calendar("0 0 29 2 *", "*-02-29 00:00:00", NULL);

        ConCron empty = {};
        char **l = NULL;
        g_assert_cmpint(con_cron_to_oncalendar(&empty, &l), ==, -EINVAL);
        g_assert_null(l);
}

/* Parses "Mon 2026-11-30 09:00:00 UTC" from a line of systemd-analyze output. */
static bool parse_elapse(const char *line, time_t *ret) {
        const char *p = strstr(line, "Next elapse: ") ?: strstr(line, "Iter. #");
        if (!p)
                return false;
        p = strchr(p, ':');
        if (!p)
                return false;
        struct tm tm = {};
        if (!strptime(p + 2, "%a %Y-%m-%d %H:%M:%S UTC", &tm))
                return false;
        *ret = timegm(&tm);
        return true;
}

static int time_cmp(gconstpointer a, gconstpointer b) {
        time_t x = *(const time_t *) a, y = *(const time_t *) b;
        return x < y ? -1 : x > y;
}

/* Our OnCalendar= lines as systemd reads them: same normalised form, and the same next runs as
 * con_cron_next() (union of the lines, UTC). */
static void test_against_systemd(void) {
        static const char * const exprs[] = {
                "0 8 * * *", "*/15 9-17 * * mon-fri", "0 0 1,15 * *", "30 4 1 * mon", "30 4 1,15 jan-mar tue,thu",
                "0 0 * * fri-sun", "0 0 * * 6,0", "0 12 * jan,jun-aug *", "23 0-20/2 * * *", "5-59/10 * * * *",
                "0 0 */2 * mon", "0 9 1-31 * mon", "0,1,2,10,30-32 * * * *", "@weekly", "0 0 29 2 *",
                "7 3 13 * fri", "0 6-23/5 * 2-11/3 *", "45 23 * * sat",
        };
        _cleanup_free_ char *tool = g_find_program_in_path("systemd-analyze");
        if (!tool) {
                con_test_skip("systemd-analyze is not installed");
                return;
        }
        time_t base = 1764412110; /* Sat 2025-11-29 10:28:30 UTC */

        for (size_t i = 0; i < G_N_ELEMENTS(exprs); i++) {
                ConCron c = parse_ok(exprs[i]);
                _cleanup_strv_free_ char **lines = NULL;
                g_assert_cmpint(con_cron_to_oncalendar(&c, &lines), ==, 0);

                GArray *times = g_array_new(false, false, sizeof(time_t));
                STRV_FOREACH(l, lines) {
                        _cleanup_free_ char *base_arg = g_strdup_printf("--base-time=@%lld", (long long) base);
                        const char *argv[] = { tool, "calendar", base_arg, "--iterations=6", *l, NULL };
                        char *out = NULL, *errout = NULL;
                        int status = 0;
                        GError *e = NULL;
                        char **envp = g_environ_setenv(g_get_environ(), "TZ", "UTC", true);
                        g_assert_true(g_spawn_sync(NULL, (char **) argv, envp, G_SPAWN_DEFAULT, NULL, NULL, &out,
                                                   &errout, &status, &e));
                        g_strfreev(envp);
                        g_assert_no_error(e);
                        if (status != 0)
                                g_error("systemd-analyze refused \"%s\" (from \"%s\"): %s", *l, exprs[i], errout);
                        _cleanup_free_ char *normalized = g_strdup_printf("Normalized form: %s\n", *l);
                        if (!strstr(out, normalized))
                                g_error("systemd normalises \"%s\" differently:\n%s", *l, out);
                        char **outl = g_strsplit(out, "\n", -1);
                        for (char **o = outl; *o; o++) {
                                time_t t;
                                if (parse_elapse(*o, &t))
                                        g_array_append_val(times, t);
                        }
                        g_strfreev(outl);
                        g_free(out);
                        g_free(errout);
                }
                g_array_sort(times, time_cmp);

                time_t after = base;
                for (unsigned k = 0, j = 0; k < 6; k++) {
                        time_t t;
                        g_assert_cmpint(con_cron_next(&c, after, true, &t), ==, 0);
                        while (j < times->len && g_array_index(times, time_t, j) <= after)
                                j++;
                        g_assert_cmpuint(j, <, times->len);
                        if (t != g_array_index(times, time_t, j))
                                g_error("\"%s\" run %u: we say %lld, systemd says %lld", exprs[i], k, (long long) t,
                                        (long long) g_array_index(times, time_t, j));
                        after = t;
                }
                g_array_free(times, true);
        }
}

int main(int argc, char *argv[]) {
        g_setenv("TZ", "UTC", true);
        tzset();
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/cron/parse", test_parse);
        g_test_add_func("/cron/errors", test_errors);
        g_test_add_func("/cron/next", test_next);
        g_test_add_func("/cron/next-local-dst", test_next_local_dst);
        g_test_add_func("/cron/oncalendar", test_oncalendar);
        g_test_add_func("/cron/against-systemd", test_against_systemd);
        return con_test_run();
}
