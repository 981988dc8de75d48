/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "macro.h"
#include "units.h"


static int parse_u64_prefix(const char **p, uint64_t *ret) {
        uint64_t v = 0;
        const char *s = *p;

        if (!isdigit((unsigned char) *s))
                return -EINVAL;
        for (; isdigit((unsigned char) *s); s++)
                if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, (uint64_t) (*s - '0'), &v))
                        return -ERANGE;
        *p = s;
        *ret = v;
        return 0;
}

int con_parse_duration(const char *s, uint64_t *ret_usec) {
        static const struct {
                const char *suffix;
                uint64_t usec;
        } units[] = {
                /* "ms" before "m" so the longer suffix wins. */
                { "ms", USEC_PER_MSEC },
                { "s", USEC_PER_SEC },
                { "m", 60 * USEC_PER_SEC },
                { "h", 3600 * USEC_PER_SEC },
                { "d", 86400 * USEC_PER_SEC },
        };
        uint64_t total = 0;
        int r;

        if (isempty(s))
                return -EINVAL;

        /* A bare number is seconds; it cannot be combined with other parts. */
        const char *p = s;
        uint64_t v;
        r = parse_u64_prefix(&p, &v);
        if (r < 0)
                return r;
        if (*p == 0) {
                if (__builtin_mul_overflow(v, USEC_PER_SEC, &total))
                        return -ERANGE;
                *ret_usec = total;
                return 0;
        }

        p = s;
        while (*p) {
                uint64_t part;
                size_t i;

                r = parse_u64_prefix(&p, &v);
                if (r < 0)
                        return r;
                for (i = 0; i < ELEMENTSOF(units); i++)
                        if (startswith(p, units[i].suffix))
                                break;
                if (i >= ELEMENTSOF(units))
                        return -EINVAL;
                p += strlen(units[i].suffix);
                if (__builtin_mul_overflow(v, units[i].usec, &part) ||
                    __builtin_add_overflow(total, part, &total))
                        return -ERANGE;
        }
        *ret_usec = total;
        return 0;
}

int con_parse_size(const char *s, uint64_t *ret_bytes) {
        static const struct {
                const char *suffix;
                unsigned shift;
        } units[] = {
                { "", 0 }, { "B", 0 },
                { "K", 10 }, { "KiB", 10 },
                { "M", 20 }, { "MiB", 20 },
                { "G", 30 }, { "GiB", 30 },
                { "T", 40 }, { "TiB", 40 },
        };
        const char *p = s;
        uint64_t v;
        int r;

        if (isempty(s))
                return -EINVAL;
        r = parse_u64_prefix(&p, &v);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(units); i++) {
                if (!streq(p, units[i].suffix))
                        continue;
                if (units[i].shift > 0 && v > (UINT64_MAX >> units[i].shift))
                        return -ERANGE;
                *ret_bytes = v << units[i].shift;
                return 0;
        }
        return -EINVAL;
}

