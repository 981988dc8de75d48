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
/* Keeps in env (in place, order kept) only the variables whose name is one of names[0..n_names);
 * the others are wiped (explicit_bzero) and freed. Returns how many were kept. */
size_t con_env_keep(char **env, const char * const *names, size_t n_names);
/* Wipes (explicit_bzero) and frees env; NULL. */
char **con_env_free(char **env);
