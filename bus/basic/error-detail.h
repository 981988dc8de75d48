/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdarg.h>
#include <stddef.h>

#include "macro.h"

/* The one error-detail structure for problems found in outside input (con.yaml, contract files,
 * task front matter, model responses): where (file, line, column), which key (a dotted path such
 * as "agents[1].tier") and what is wrong, with what to do. Every part but the message is
 * optional. Library code fills it in and never logs; callers print con_error_detail_format(). */
typedef struct ConErrorDetail {
        char *file;             /* NULL when not about a file */
        unsigned line, column;  /* 1-based; 0 when unknown */
        size_t offset;          /* byte offset in the input, when meaningful (task files); else 0 */
        char *key;              /* dotted key path; NULL when not about a key */
        char *message;          /* "what is wrong (what to do)" */
} ConErrorDetail;

void con_error_detail_done(ConErrorDetail *e);

/* Replaces *e (when e is not NULL): file and key are copied, the message is formatted.
 * Returns -EINVAL (the error the detail describes), or -ENOMEM. */
_printf_(6, 7)
int con_error_detail_set(ConErrorDetail *e, const char *file, unsigned line, unsigned column, const char *key,
                         const char *fmt, ...);
_printf_(6, 0)
int con_error_detail_setv(ConErrorDetail *e, const char *file, unsigned line, unsigned column, const char *key,
                          const char *fmt, va_list ap);

/* For functions that report why in a plain text (char **ret_error): replaces *ret_error (the old
 * text is freed, so it must be NULL or allocated) with the formatted message when ret_error is not
 * NULL, and returns r; -ENOMEM when the message cannot be made. */
_printf_(3, 4)
int con_error_textf(char **ret_error, int r, const char *fmt, ...);

/* "FILE:LINE:COLUMN: KEY: MESSAGE", each part left out when unknown. NULL on OOM. */
char *con_error_detail_format(const ConErrorDetail *e);
