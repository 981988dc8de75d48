/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error-detail.h"

void con_error_detail_done(ConErrorDetail *e) {
        if (!e)
                return;
        free(e->file);
        free(e->key);
        free(e->message);
        *e = (ConErrorDetail) {};
}

int con_error_detail_setv(ConErrorDetail *e, const char *file, unsigned line, unsigned column, const char *key,
                          const char *fmt, va_list ap) {
        char *m = NULL;

        if (!e)
                return -EINVAL;
        if (vasprintf(&m, fmt, ap) < 0)
                return -ENOMEM;
        con_error_detail_done(e);
        *e = (ConErrorDetail) { .line = line, .column = column, .message = m };
        if (file && !(e->file = strdup(file)))
                return -ENOMEM;
        if (key && !(e->key = strdup(key)))
                return -ENOMEM;
        return -EINVAL;
}

int con_error_detail_set(ConErrorDetail *e, const char *file, unsigned line, unsigned column, const char *key,
                         const char *fmt, ...) {
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = con_error_detail_setv(e, file, line, column, key, fmt, ap);
        va_end(ap);
        return r;
}

char *con_error_detail_format(const ConErrorDetail *e) {
        char *s = NULL;
        char where[64] = "";

        if (!e)
                return NULL;
        if (e->line > 0 && e->column > 0)
                snprintf(where, sizeof where, "%u:%u: ", e->line, e->column);
        else if (e->line > 0)
                snprintf(where, sizeof where, "%u: ", e->line);
        if (asprintf(&s, "%s%s%s%s%s%s", e->file ?: "", e->file ? (*where ? ":" : ": ") : "", where,
                     e->key ?: "", e->key ? ": " : "", e->message ?: "invalid input") < 0)
                return NULL;
        return s;
}

int con_error_textf(char **ret_error, int r, const char *fmt, ...) {
        char *m = NULL;
        va_list ap;

        if (!ret_error)
                return r;
        va_start(ap, fmt);
        int k = vasprintf(&m, fmt, ap);
        va_end(ap);
        if (k < 0)
                return -ENOMEM;
        free(*ret_error);
        *ret_error = m;
        return r;
}
