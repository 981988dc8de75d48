/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

/* NULL-terminated string vectors. NULL is a valid empty vector everywhere. */

/* A NULL-terminated list literal. */
#define STRV_MAKE(...) ((char *[]) { __VA_ARGS__, NULL })

char **strv_free(char **l);
static inline void strv_freep(char ***l) {
        strv_free(*l);
}
#define _cleanup_strv_free_ _cleanup_(strv_freep)

size_t strv_length(char * const *l);
bool strv_contains(char * const *l, const char *s);
/* Appends s (taking ownership on success). */
int strv_consume(char ***l, char *s);
/* Appends a copy of s. */
int strv_extend(char ***l, const char *s);
/* Appends a newly formatted string. */
int strv_extendf(char ***l, const char *fmt, ...) _printf_(2, 3);
int strv_copy(char * const *l, char ***ret);
bool strv_equal(char * const *a, char * const *b);
/* Joins with sep; returns a newly allocated string or NULL on OOM. */
char *strv_join(char * const *l, const char *sep);

#define STRV_FOREACH(s, l) for (char * const *s = (l); s && *s; s++)
