/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* Crontab schedules: the five-field expressions of the `cron:` key of an agent.
 *
 *   minute hour day-of-month month day-of-week
 *
 * Each field is "*" or a comma-separated list of items "N", "A-B", "*" followed by an optional
 * step "/S" ("*" + "/15", "9-17/2"). Months accept jan..dec, days of the week sun..sat (case
 * does not matter); day-of-week 0 and 7 are both Sunday. The shorthands @yearly (@annually),
 * @monthly, @weekly, @daily (@midnight) and @hourly are accepted; @reboot is not.
 *
 * Day matching follows Vixie cron: when both day-of-month and day-of-week are restricted, a day
 * matches if EITHER matches; if one of them starts with "*" (including "*" + "/2"), both must match.
 *
 * Two consumers: the fabric scheduler on hosts without systemd (con_cron_next) and the generated
 * systemd timers (con_cron_to_oncalendar). Both work in local time, as cron and systemd timers do. */

typedef struct ConCron {
        uint64_t minutes;       /* bit m set: minute m (0..59) */
        uint32_t hours;         /* bit h: hour h (0..23) */
        uint32_t days;          /* bit d: day of month d (1..31) */
        uint16_t months;        /* bit m: month m (1..12) */
        uint8_t weekdays;       /* bit w: day of week w (0..6, 0 = Sunday) */
        bool dom_star;          /* day-of-month field started with '*' */
        bool dow_star;          /* day-of-week field started with '*' */
} ConCron;

/* Parses expr. On -EINVAL, *ret_error (if ret_error is not NULL) receives a sentence naming the
 * field and what is allowed, e.g. "hour field \"25\": 25 is out of range 0-23". Returns 0,
 * -EINVAL or -ENOMEM. */
int con_cron_parse(const char *expr, ConCron *ret, char **ret_error);

/* True when the broken-down local (or UTC) time tm matches c (seconds are ignored). */
bool con_cron_matches(const ConCron *c, const struct tm *tm);

/* The first time strictly after `after`, at second 0 of a matching minute. utc selects UTC
 * instead of the local time zone (TZ, as localtime_r() sees it). Around DST changes: local times
 * that do not exist are skipped (like systemd, unlike Vixie cron, which runs them late); a time in
 * the hour repeated when DST ends fires at its first occurrence (schedules matching consecutive
 * minutes may keep firing through the repeat). Returns 0, or -ERANGE when nothing matches in the
 * next 400 years (cannot happen for a parsed expression: "0 0 29 2 sun" is rare but recurs) or
 * the time overflows. */
int con_cron_next(const ConCron *c, time_t after, bool utc, time_t *ret);

/* The equivalent systemd OnCalendar= values, one per line to write (two when Vixie's OR rule
 * applies, since systemd ANDs the weekday with the date), e.g. "0 8 * * *" ->
 * { "*-*-* 08:00:00" }. Deterministic and normalised from the parsed sets, not from the text. */
int con_cron_to_oncalendar(const ConCron *c, char ***ret);
