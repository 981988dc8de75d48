/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "names.h"
#include "strv.h"
#include "units.h"
#include "utf8.h"
#include "yaml-reader.h"

#define DURATION_HINT "use seconds (90) or a number with a unit: 250ms, 90s, 5m, 1h, 2d, 1h30m"
#define SIZE_HINT "use bytes (1048576) or a number with a unit: 512K, 1M, 1MiB, 1G (powers of 1024)"

/* ---- loading ---- */

/* Walks the tree from node id as the schema walk would see it. An alias shares its anchor's node:
 * that is refused when y->no_aliases; otherwise it is refused when it points at one of its own
 * ancestors (a cycle), and the expansion is bounded (*budget visits in all, so a chain of aliases
 * cannot make a small file cost exponential time). on_path and seen are indexed by node id - 1. */
static int check_tree(ConYamlReader *y, int id, unsigned depth, bool *on_path, bool *seen, size_t n_nodes,
                      size_t *budget) {
        yaml_node_t *n = yaml_document_get_node(y->doc, id);
        int r = 0;

        if (!n || id < 1 || (size_t) id > n_nodes)
                return 0;
        if (on_path[id - 1])
                return con_yaml_fail(y, n, NULL, "an alias refers to the mapping or list that contains it "
                                     "(write the value out)");
        if (seen[id - 1] && y->no_aliases)
                return con_yaml_fail(y, n, NULL, "anchors and aliases (&name, *name) are not supported here "
                                     "(write the value out)");
        if (*budget == 0)
                return con_yaml_fail(y, n, NULL, "aliases expand to too many values (write the values out)");
        (*budget)--;
        seen[id - 1] = true;
        if (depth > CON_YAML_DEPTH_MAX && n->type != YAML_SCALAR_NODE)
                return con_yaml_fail(y, n, NULL, "nested more than %u levels deep (flatten it)", CON_YAML_DEPTH_MAX);
        on_path[id - 1] = true;
        if (n->type == YAML_SEQUENCE_NODE)
                for (yaml_node_item_t *i = n->data.sequence.items.start; r >= 0 && i < n->data.sequence.items.top; i++)
                        r = check_tree(y, *i, depth + 1, on_path, seen, n_nodes, budget);
        else if (n->type == YAML_MAPPING_NODE)
                for (yaml_node_pair_t *p = n->data.mapping.pairs.start; r >= 0 && p < n->data.mapping.pairs.top; p++) {
                        r = check_tree(y, p->key, depth + 1, on_path, seen, n_nodes, budget);
                        if (r >= 0)
                                r = check_tree(y, p->value, depth + 1, on_path, seen, n_nodes, budget);
                }
        on_path[id - 1] = false;
        return r;
}

int con_yaml_open(ConYamlReader *y, const char *text, size_t len, const char *empty_message) {
        _cleanup_(con_error_detail_done) ConErrorDetail problem = {};
        _cleanup_free_ bool *on_path = NULL, *seen = NULL;
        int r;

        y->doc = NULL;
        r = con_yaml_load(text, len, y->line_base, &y->doc, &problem);
        if (r == -ENOMEM)
                return r;
        if (r == -ENODATA) {
                r = con_error_detail_set(y->err, y->file, 0, 0, NULL, "%s",
                                         empty_message ?: "the file holds no YAML document");
                return r == -ENOMEM ? r : -ENODATA;
        }
        if (r < 0) {
                unsigned line = problem.line > 0 ? problem.line + y->line_base : 0;
                return con_error_detail_set(y->err, y->file, line, problem.column, NULL, "%s",
                                            strempty(problem.message));
        }

        size_t n_nodes = (size_t) (y->doc->nodes.top - y->doc->nodes.start);
        on_path = calloc(n_nodes ?: 1, sizeof(bool));
        seen = calloc(n_nodes ?: 1, sizeof(bool));
        if (!on_path || !seen)
                return -ENOMEM;
        size_t budget = n_nodes * CON_YAML_ALIAS_EXPANSION_MAX;
        /* The root is node 1. */
        return check_tree(y, 1, 1, on_path, seen, n_nodes, &budget);
}

void con_yaml_reader_done(ConYamlReader *y) {
        if (!y)
                return;
        y->doc = con_yaml_document_free(y->doc);
}

int con_yaml_fail(ConYamlReader *y, const yaml_node_t *at, const char *key, const char *fmt, ...) {
        va_list ap;
        int r;

        if (!y->err)
                return -EINVAL;
        va_start(ap, fmt);
        r = con_error_detail_setv(y->err, y->file, at ? con_yaml_node_line(at) + y->line_base : 0,
                                  con_yaml_node_column(at), key, fmt, ap);
        va_end(ap);
        if (at)
                y->err->offset = y->offset_base + at->start_mark.index;
        return r;
}

/* ---- messages ---- */

char *con_yaml_quote(const yaml_node_t *n) {
        if (!n || n->type != YAML_SCALAR_NODE)
                return strdup("''");
        return con_utf8_quote((const char *) n->data.scalar.value, n->data.scalar.length, CON_YAML_QUOTE_MAX);
}

/* A key segment for a dotted path: printable, cut when long (it may be an unknown key). */
static char *key_segment(const yaml_node_t *k) {
        const char *v = k && k->type == YAML_SCALAR_NODE ? (const char *) k->data.scalar.value : "?";
        size_t n = k && k->type == YAML_SCALAR_NODE ? k->data.scalar.length : 1, max = 64;
        char *s = malloc(max * 4 + 4), *p = s;

        if (!s)
                return NULL;
        for (size_t i = 0; i < n && i < max; i++) {
                unsigned char ch = (unsigned char) v[i];
                if (ch < 0x20 || ch == 0x7f)
                        p += sprintf(p, "\\x%02x", ch);
                else
                        *p++ = (char) ch;
        }
        if (n > max)
                p = stpcpy(p, "...");
        *p = 0;
        return s;
}

char *con_yaml_path_key(const char *prefix, const yaml_node_t *k) {
        _cleanup_free_ char *seg = key_segment(k);
        char *s = NULL;

        if (!seg)
                return NULL;
        if (!prefix)
                return TAKE_PTR(seg);
        return asprintf(&s, "%s.%s", prefix, seg) < 0 ? NULL : s;
}

char *con_yaml_path_child(const char *prefix, const char *name) {
        char *s = NULL;
        if (!prefix)
                return strdup(name);
        return asprintf(&s, "%s.%s", prefix, name) < 0 ? NULL : s;
}

char *con_yaml_path_index(const char *prefix, size_t i) {
        char *s = NULL;
        return asprintf(&s, "%s[%zu]", strempty(prefix), i) < 0 ? NULL : s;
}

/* ---- mappings ---- */

int con_yaml_check_mapping(ConYamlReader *y, const yaml_node_t *map, const char *path) {
        yaml_node_t *bad = NULL, *first = NULL;
        int r;

        r = con_yaml_mapping_check_keys(y->doc, map, &bad, &first);
        if (r == -ENOTUNIQ) {
                _cleanup_free_ char *p = con_yaml_path_key(path, bad);
                if (!p)
                        return -ENOMEM;
                return con_yaml_fail(y, bad, p, "duplicate key; it was already given at line %u",
                                     con_yaml_node_line(first) + y->line_base);
        }
        if (r == -EBADMSG)
                return con_yaml_fail(y, bad, path, "keys must be plain strings, got %s",
                                     con_yaml_node_kind_to_string(bad));
        if (r < 0)
                return r;

        /* "name\0x" must not pass for "name" in C string comparisons. */
        yaml_node_t *k, *v _unused_;
        CON_YAML_MAPPING_FOREACH(y->doc, map, k, v)
                if (con_yaml_scalar_has_nul(k)) {
                        _cleanup_free_ char *p = con_yaml_path_key(path, k);
                        return p ? con_yaml_fail(y, k, p, "the key contains a NUL byte") : -ENOMEM;
                }
        return 0;
}

int con_yaml_expect_mapping(ConYamlReader *y, const yaml_node_t *n, const char *path, const char *what) {
        if (n && n->type == YAML_MAPPING_NODE)
                return con_yaml_check_mapping(y, n, path);
        return con_yaml_fail(y, n, path, "expected a mapping of %s, got %s", what, con_yaml_node_kind_to_string(n));
}

int con_yaml_unknown_key(ConYamlReader *y, const yaml_node_t *k, const char *path, const char *allowed) {
        return con_yaml_fail(y, k, path, "unknown key; allowed keys are %s", allowed);
}

/* ---- typed values ---- */

int con_yaml_get_string(ConYamlReader *y, const yaml_node_t *v, const char *path, char **ret) {
        if (con_yaml_node_is_null(v))
                return 0;
        if (!v || v->type != YAML_SCALAR_NODE)
                return con_yaml_fail(y, v, path, "expected a string, got %s", con_yaml_node_kind_to_string(v));
        if (con_yaml_scalar_has_nul(v))
                return con_yaml_fail(y, v, path, "the value contains a NUL byte");
        char *s = strdup(con_yaml_scalar(v));
        if (!s)
                return -ENOMEM;
        free(*ret);
        *ret = s;
        return 0;
}

/* A scalar's text for number-like values; NULL (and 0) for YAML null. */
static int get_scalar_text(ConYamlReader *y, const yaml_node_t *v, const char *path, const char *expected,
                           const char **ret) {
        *ret = NULL;
        if (con_yaml_node_is_null(v))
                return 0;
        if (!v || v->type != YAML_SCALAR_NODE)
                return con_yaml_fail(y, v, path, "expected %s, got %s", expected, con_yaml_node_kind_to_string(v));
        if (con_yaml_scalar_has_nul(v))
                return con_yaml_fail(y, v, path, "the value contains a NUL byte");
        *ret = con_yaml_scalar(v);
        return 0;
}

int con_yaml_get_bool(ConYamlReader *y, const yaml_node_t *v, const char *path, bool *ret) {
        static const char * const other_true[] = { "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", "y", "Y", NULL };
        static const char * const other_false[] = { "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF", "n", "N", NULL };
        const char *s;
        int r;

        r = get_scalar_text(y, v, path, "true or false", &s);
        if (r < 0 || !s)
                return r;
        _cleanup_free_ char *q = con_yaml_quote(v);
        if (!q)
                return -ENOMEM;
        bool plain = v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        if (plain && streq(s, "true"))
                *ret = true;
        else if (plain && streq(s, "false"))
                *ret = false;
        else if (!plain && (streq(s, "true") || streq(s, "false")))
                return con_yaml_fail(y, v, path, "%s is a quoted string, not a boolean (write %s without quotes)",
                                     q, s);
        else if (strv_contains((char **) other_true, s) || strv_contains((char **) other_false, s))
                return con_yaml_fail(y, v, path, "%s is not a boolean here (write %s: booleans are exactly true "
                                     "or false, lower-case)", q, strv_contains((char **) other_true, s) ? "true" : "false");
        else
                return con_yaml_fail(y, v, path, "%s is not allowed; use true or false", q);
        return 0;
}

static int parse_u64_digits(const char *s, uint64_t *ret) {
        uint64_t v = 0;

        if (!isdigit((unsigned char) *s))
                return -EINVAL;
        for (; isdigit((unsigned char) *s); s++)
                if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, (uint64_t) (*s - '0'), &v))
                        return -ERANGE;
        if (*s)
                return -EINVAL;
        *ret = v;
        return 0;
}

int con_yaml_get_uint(ConYamlReader *y, const yaml_node_t *v, const char *path, unsigned min, unsigned max,
                      unsigned *ret) {
        const char *s;
        uint64_t n;
        int r;

        r = get_scalar_text(y, v, path, "a whole number", &s);
        if (r < 0 || !s)
                return r;
        if (parse_u64_digits(s, &n) < 0 || n < min || n > max) {
                _cleanup_free_ char *q = con_yaml_quote(v);
                if (!q)
                        return -ENOMEM;
                return con_yaml_fail(y, v, path, "%s is not allowed; use a whole number from %u to %u", q, min, max);
        }
        *ret = (unsigned) n;
        return 0;
}

static bool decimal_syntax(const char *s) {
        if (!isdigit((unsigned char) s[0]) && !(s[0] == '.' && isdigit((unsigned char) s[1])))
                return false;
        for (; *s; s++)
                if (!isdigit((unsigned char) *s) && !strchr(".eE+-", *s))
                        return false;
        return true;
}

int con_yaml_get_double(ConYamlReader *y, const yaml_node_t *v, const char *path, double min, bool min_exclusive,
                        double max, double *ret) {
        const char *s;
        char *end = NULL;
        int r;

        r = get_scalar_text(y, v, path, "a number", &s);
        if (r < 0 || !s)
                return r;
        errno = 0;
        double d = decimal_syntax(s) ? strtod(s, &end) : NAN;
        if (errno != 0 || !end || *end != 0 || !isfinite(d) || d < min || (min_exclusive && d <= min) || d > max) {
                _cleanup_free_ char *q = con_yaml_quote(v);
                if (!q)
                        return -ENOMEM;
                if (min_exclusive)
                        return con_yaml_fail(y, v, path, "%s is not allowed; use a number greater than %g and at most %g",
                                             q, min, max);
                return con_yaml_fail(y, v, path, "%s is not allowed; use a number from %g to %g", q, min, max);
        }
        *ret = d;
        return 0;
}

int con_yaml_get_duration(ConYamlReader *y, const yaml_node_t *v, const char *path, bool zero_ok, uint64_t *ret) {
        const char *s;
        uint64_t u;
        int r;

        r = get_scalar_text(y, v, path, "a duration", &s);
        if (r < 0 || !s)
                return r;
        r = con_parse_duration(s, &u);
        if (r < 0 || (u == 0 && !zero_ok)) {
                _cleanup_free_ char *q = con_yaml_quote(v);
                if (!q)
                        return -ENOMEM;
                if (r == -ERANGE)
                        return con_yaml_fail(y, v, path, "%s is too long a duration", q);
                if (r < 0)
                        return con_yaml_fail(y, v, path, "%s is not a valid duration; %s", q, DURATION_HINT);
                return con_yaml_fail(y, v, path, "%s is not allowed; the duration must be longer than 0", q);
        }
        *ret = u;
        return 0;
}

int con_yaml_get_size(ConYamlReader *y, const yaml_node_t *v, const char *path, uint64_t max, uint64_t *ret) {
        const char *s;
        uint64_t u;
        int r;

        r = get_scalar_text(y, v, path, "a size", &s);
        if (r < 0 || !s)
                return r;
        r = con_parse_size(s, &u);
        if (r < 0 || u == 0 || u > max) {
                _cleanup_free_ char *q = con_yaml_quote(v);
                if (!q)
                        return -ENOMEM;
                if (r == -EINVAL)
                        return con_yaml_fail(y, v, path, "%s is not a valid size; %s", q, SIZE_HINT);
                return con_yaml_fail(y, v, path, "%s is not allowed; use a size from 1 byte to %" PRIu64 " MiB", q,
                                     max >> 20);
        }
        *ret = u;
        return 0;
}

int con_yaml_get_enum(ConYamlReader *y, const yaml_node_t *v, const char *path, const char * const *names,
                      const char *hint, int *ret) {
        const char *s;
        int r;

        r = get_scalar_text(y, v, path, "a string", &s);
        if (r < 0 || !s)
                return r;
        for (int i = 0; names[i]; i++)
                if (streq(names[i], s)) {
                        *ret = i;
                        return 0;
                }
        _cleanup_free_ char *q = con_yaml_quote(v);
        return q ? con_yaml_fail(y, v, path, "%s is not allowed; %s", q, hint) : -ENOMEM;
}

int con_yaml_get_strv(ConYamlReader *y, const yaml_node_t *v, const char *path, bool identifiers, size_t max,
                      char ***ret) {
        _cleanup_strv_free_ char **l = NULL;
        yaml_node_t *item;
        size_t n = 0;

        if (con_yaml_node_is_null(v))
                return 0;
        if (!v || v->type != YAML_SEQUENCE_NODE)
                return con_yaml_fail(y, v, path, "expected a list of strings, got %s", con_yaml_node_kind_to_string(v));
        size_t len = con_yaml_sequence_length(v);
        if (max > 0 && len > max)
                return con_yaml_fail(y, v, path, "the list has %zu entries; at most %zu are allowed", len, max);

        l = calloc(len + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        CON_YAML_SEQUENCE_FOREACH(y->doc, v, item) {
                _cleanup_free_ char *ipath = con_yaml_path_index(path, n);
                if (!ipath)
                        return -ENOMEM;
                if (!item || item->type != YAML_SCALAR_NODE || con_yaml_node_is_null(item))
                        return con_yaml_fail(y, item, ipath, "expected a string, got %s",
                                             con_yaml_node_kind_to_string(item));
                if (con_yaml_scalar_has_nul(item))
                        return con_yaml_fail(y, item, ipath, "the value contains a NUL byte");
                const char *s = con_yaml_scalar(item);
                if (identifiers) {
                        _cleanup_free_ char *q = con_yaml_quote(item);
                        if (!q)
                                return -ENOMEM;
                        if (!con_identifier_valid(s))
                                return con_yaml_fail(y, item, ipath,
                                                     "%s is not a valid name; use 1 to 64 characters from a-z, 0-9, "
                                                     "'.', '_' and '-', starting with a letter or digit", q);
                        if (strv_contains(l, s))
                                return con_yaml_fail(y, item, ipath, "%s is listed twice", q);
                }
                if (!(l[n] = strdup(s)))
                        return -ENOMEM;
                n++;
        }
        strv_free(*ret);
        *ret = n > 0 ? TAKE_PTR(l) : NULL;
        return 0;
}

/* ---- schemas ---- */

/* "a, b and c" from the table's keys. */
static char *allowed_keys(const ConYamlField *fields) {
        _cleanup_free_ char *s = NULL;
        size_t n = 0;
        FILE *f;

        for (const ConYamlField *fl = fields; fl->key; fl++)
                n++;
        f = open_memstream(&s, &(size_t) { 0 });
        if (!f)
                return NULL;
        size_t i = 0;
        for (const ConYamlField *fl = fields; fl->key; fl++, i++)
                fprintf(f, "%s%s", i == 0 ? "" : i + 1 == n ? " and " : ", ", fl->key);
        if (fclose(f) != 0)
                return NULL;
        return TAKE_PTR(s);
}

static int read_field(ConYamlReader *y, const ConYamlField *fl, const yaml_node_t *v, const char *path, void *dest,
                      void *userdata) {
        void *p = (char *) dest + fl->offset;
        int r;

        switch (fl->type) {
        case CON_YAML_STRING: {
                _cleanup_free_ char *s = NULL;
                r = con_yaml_get_string(y, v, path, &s);
                if (r < 0 || !s)
                        return r;
                const char *problem = fl->check ? fl->check(s) : NULL;
                if (problem) {
                        _cleanup_free_ char *q = con_yaml_quote(v);
                        return q ? con_yaml_fail(y, v, path, "%s %s", q, problem) : -ENOMEM;
                }
                free(*(char **) p);
                *(char **) p = TAKE_PTR(s);
                return 0;
        }
        case CON_YAML_BOOL:
                return con_yaml_get_bool(y, v, path, p);
        case CON_YAML_UINT:
                return con_yaml_get_uint(y, v, path, (unsigned) fl->min, (unsigned) fl->max, p);
        case CON_YAML_DOUBLE:
                return con_yaml_get_double(y, v, path, fl->min, fl->flags & CON_YAML_MIN_EXCLUSIVE, fl->max, p);
        case CON_YAML_DURATION: {
                uint64_t u = *(uint64_t *) p;  /* no value: the default stays */
                r = con_yaml_get_duration(y, v, path, fl->flags & CON_YAML_ZERO_OK, &u);
                if (r < 0)
                        return r;
                if (fl->max > 0 && u > (uint64_t) fl->max) {
                        _cleanup_free_ char *q = con_yaml_quote(v);
                        if (!q)
                                return -ENOMEM;
                        return con_yaml_fail(y, v, path, "%s is too long; at most %" PRIu64 " days", q,
                                             (uint64_t) (fl->max / (24.0 * 3600 * 1000000)));
                }
                *(uint64_t *) p = u;
                return 0;
        }
        case CON_YAML_SIZE:
                return con_yaml_get_size(y, v, path, (uint64_t) fl->max, p);
        case CON_YAML_ENUM:
                return con_yaml_get_enum(y, v, path, fl->names, fl->hint, p);
        case CON_YAML_STRV:
                return con_yaml_get_strv(y, v, path, fl->flags & CON_YAML_IDENTIFIERS, (size_t) fl->max, p);
        case CON_YAML_MAPPING:
                return con_yaml_read_mapping(y, v, path, fl->fields, p, userdata, NULL);
        case CON_YAML_CUSTOM:
                return fl->parse(y, v, path, p, userdata);
        case CON_YAML_IGNORE:
                return 0;
        }
        return -EINVAL;
}

int con_yaml_read_mapping(ConYamlReader *y, const yaml_node_t *map, const char *path, const ConYamlField *fields,
                          void *dest, void *userdata, bool *ret_seen) {
        _cleanup_free_ char *allowed = NULL;
        _cleanup_free_ const yaml_node_t **given = NULL;
        yaml_node_t *k, *v;
        size_t n = 0;
        int r;

        for (const ConYamlField *fl = fields; fl->key; fl++)
                n++;
        given = calloc(n ?: 1, sizeof(yaml_node_t *));
        allowed = allowed_keys(fields);
        if (!given || !allowed)
                return -ENOMEM;

        if (!con_yaml_node_is_null(map)) {
                r = con_yaml_expect_mapping(y, map, path, allowed);
                if (r < 0)
                        return r;
                CON_YAML_MAPPING_FOREACH(y->doc, map, k, v) {
                        const char *key = con_yaml_scalar(k);
                        _cleanup_free_ char *kpath = con_yaml_path_key(path, k);
                        size_t i;

                        if (!kpath)
                                return -ENOMEM;
                        for (i = 0; i < n; i++)
                                if (streq(fields[i].key, key) || (fields[i].alias && streq(fields[i].alias, key)))
                                        break;
                        if (i >= n)
                                return con_yaml_unknown_key(y, k, kpath, allowed);
                        if (given[i])
                                return con_yaml_fail(y, k, kpath, "%s and %s are the same key; keep %s", fields[i].key,
                                                     fields[i].alias, fields[i].key);
                        given[i] = k;
                        r = read_field(y, &fields[i], v, kpath, dest, userdata);
                        if (r < 0)
                                return r;
                        if (con_yaml_node_is_null(v) && fields[i].type != CON_YAML_MAPPING &&
                            fields[i].type != CON_YAML_CUSTOM)
                                given[i] = NULL;        /* null: not given */
                }
        }

        for (size_t i = 0; i < n; i++) {
                if (ret_seen)
                        ret_seen[i] = given[i];
                if (given[i] || !(fields[i].flags & CON_YAML_REQUIRED))
                        continue;
                _cleanup_free_ char *kpath = con_yaml_path_child(path, fields[i].key);
                if (!kpath)
                        return -ENOMEM;
                return con_yaml_fail(y, map, kpath, "missing; this key is required%s%s%s",
                                     fields[i].hint ? " (" : "", strempty(fields[i].hint), fields[i].hint ? ")" : "");
        }
        return 0;
}
