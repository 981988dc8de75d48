/* SPDX-License-Identifier: MIT */
/* Crontab expressions come from the config: parse anything, and for what parses, render the
 * OnCalendar= lines and compute a few next runs (which must move forward and match). */
#include <stdint.h>
#include <string.h>

#include "cron.h"
#include "macro.h"
#include "strv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > 4096)
                return 0;
        _cleanup_free_ char *s = strndup((const char *) data, size);
        if (!s)
                return 0;

        ConCron c;
        _cleanup_free_ char *err = NULL;
        int r = con_cron_parse(s, &c, &err);
        if (r < 0) {
                if (r == -EINVAL && !err)
                        abort(); /* every refusal says why */
                return 0;
        }
        if (err)
                abort();

        _cleanup_strv_free_ char **lines = NULL;
        if (con_cron_to_oncalendar(&c, &lines) < 0 || strv_length(lines) < 1 || strv_length(lines) > 2)
                abort();

        time_t t = 1764412110; /* fixed: results must not depend on the clock */
        for (unsigned i = 0; i < 4; i++) {
                time_t n;
                if (con_cron_next(&c, t, true, &n) < 0)
                        abort();
                struct tm tm;
                if (n <= t || n % 60 != 0 || !gmtime_r(&n, &tm) || !con_cron_matches(&c, &tm))
                        abort();
                t = n;
        }
        return 0;
}
