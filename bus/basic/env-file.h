/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>

/* The key file, /etc/con/env: the model gateway's provider keys and the egress gateway's
 * service secrets. Library code: no logging. */

/* Parses "NAME=value" lines (blank lines and '#' comments skipped, an optional "export " prefix,
 * values optionally in matching single or double quotes, no escapes). Returns a strv of
 * "NAME=value", or -EINVAL with *ret_bad_line set (1-based) for a line that is none of these. */
int con_env_parse(const char *text, size_t len, char ***ret_env, unsigned *ret_bad_line);
/* The value of name in env, NULL when absent or empty. */
const char *con_env_get(char * const *env, const char *name);
