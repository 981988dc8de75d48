/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdint.h>

/* Duration and size parsing used by the config and the contract files (docs/CONFIG.md):
 * "90" (seconds), "90s", "5m", "1h", "2d", "250ms", "1h30m"; sizes "1048576", "100B", "512K",
 * "1M", "1MiB", "1G", "1T" (powers of 1024). -EINVAL for junk, -ERANGE on overflow. */
int con_parse_duration(const char *s, uint64_t *ret_usec);
int con_parse_size(const char *s, uint64_t *ret_bytes);
