/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>

#include "time-util.h"

int con_format_timestamp(uint64_t usec, char buf[static CON_TIMESTAMP_MAX]) {
        time_t sec = (time_t) (usec / USEC_PER_SEC);
        struct tm tm;
        size_t n;

        buf[0] = 0;
        if ((uint64_t) sec != usec / USEC_PER_SEC || !gmtime_r(&sec, &tm))
                return -ERANGE;
        n = strftime(buf, CON_TIMESTAMP_MAX, "%Y-%m-%dT%H:%M:%S", &tm);
        if (n == 0 ||
            snprintf(buf + n, CON_TIMESTAMP_MAX - n, ".%06" PRIu64 "Z", usec % USEC_PER_SEC) >= (int) (CON_TIMESTAMP_MAX - n)) {
                buf[0] = 0;
                return -ERANGE;
        }
        return 0;
}
