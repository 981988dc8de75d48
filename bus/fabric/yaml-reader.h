/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#include "error-detail.h"
#include "macro.h"
#include "yaml-util.h"

/* The one schema-driven YAML reader, for con.yaml, contract files and task front matter.
 *
 * A caller describes a mapping as a table of ConYamlField (key, type, where the value goes,
 * limits, required) and calls con_yaml_read_mapping(); values that need more than a type (cross
 * checks, lists of mappings) use the typed getters below, or a CON_YAML_CUSTOM field. One set of
 * scalar rules for every file (docs/CONFIG.md, "YAML rules"), close to YAML 1.2's core schema:
 *
 *   null       a plain empty value, ~, null, Null or NULL: the key counts as not given
 *   boolean    exactly true or false, unquoted (yes/no/on/off/True/FALSE are refused with a hint)
 *   integer    decimal digits only, within the key's range
 *   number     decimal, e.g. 2, 2.5, 0.75 (no hex, inf or nan), within the key's range
 *   duration   90 (seconds), 250ms, 90s, 5m, 1h, 2d, 1h30m
 *   size       bytes, or 512K, 1M, 1MiB, 1G, 1T (powers of 1024)
 *   string     any scalar, as written (quote it to keep leading/trailing spaces); no NUL bytes
 *
 * Keys are plain strings and appear once; an unknown key is an error that lists the allowed ones.
 * Aliases (*name) are read as a copy of their anchor's value; an alias inside its own anchor is
 * refused, and so is a file whose aliases expand to more than CON_YAML_ALIAS_EXPANSION_MAX times
 * its own nodes; readers with no_aliases refuse anchors and aliases outright. Nesting is bounded
 * (CON_YAML_DEPTH_MAX). con_yaml_open() checks all of this before any schema is applied.
 * Every error is one ConErrorDetail: FILE:LINE:COLUMN: key.path: what is wrong (what to do).
 * Library code: never logs. */

#define CON_YAML_DEPTH_MAX CON_YAML_LOAD_DEPTH_MAX
#define CON_YAML_ALIAS_EXPANSION_MAX 8

typedef struct ConYamlReader {
        yaml_document_t *doc;
        const char *file;       /* for messages; may be NULL */
        unsigned line_base;     /* added to node lines: lines of the file before the YAML text */
        size_t offset_base;     /* added to node offsets */
        ConErrorDetail *err;    /* may be NULL */
        bool no_aliases;        /* refuse anchors and aliases outright */
} ConYamlReader;

/* Loads one document (con_yaml_load()), then checks aliases and nesting as said above. Returns 0; -ENODATA (no document: empty or only comments) with err filled in
 * with empty_message; -EINVAL (err filled in); -ENOMEM. The reader's doc is owned by the caller
 * (con_yaml_reader_done()). */
int con_yaml_open(ConYamlReader *y, const char *text, size_t len, const char *empty_message);
void con_yaml_reader_done(ConYamlReader *y);

/* Fills in y->err for node `at` (its line and column) and key path `key` (may be NULL).
 * Returns -EINVAL, or -ENOMEM. */
_printf_(4, 5)
int con_yaml_fail(ConYamlReader *y, const yaml_node_t *at, const char *key, const char *fmt, ...);

/* A scalar for a message: con_utf8_quote() of its text (in single quotes, control characters
 * escaped, cut after 64 bytes on a character boundary). */
#define CON_YAML_QUOTE_MAX 64
char *con_yaml_quote(const yaml_node_t *n);

/* Key paths: "prefix.key" (the key node's text, made printable), "prefix.name", "prefix[i]". */
char *con_yaml_path_key(const char *prefix, const yaml_node_t *k);
char *con_yaml_path_child(const char *prefix, const char *name);
char *con_yaml_path_index(const char *prefix, size_t i);

/* Keys of map are plain strings without NUL bytes and appear once. */
int con_yaml_check_mapping(ConYamlReader *y, const yaml_node_t *map, const char *path);
/* n is a mapping (then checked as above); else "expected a mapping of WHAT, got ...". */
int con_yaml_expect_mapping(ConYamlReader *y, const yaml_node_t *n, const char *path, const char *what);
int con_yaml_unknown_key(ConYamlReader *y, const yaml_node_t *k, const char *path, const char *allowed);

/* Typed getters. A YAML null leaves *ret untouched (the key counts as not given). */
int con_yaml_get_string(ConYamlReader *y, const yaml_node_t *v, const char *path, char **ret);
int con_yaml_get_bool(ConYamlReader *y, const yaml_node_t *v, const char *path, bool *ret);
int con_yaml_get_uint(ConYamlReader *y, const yaml_node_t *v, const char *path, unsigned min, unsigned max,
                      unsigned *ret);
/* min_exclusive: the value must be greater than min (else at least min). */
int con_yaml_get_double(ConYamlReader *y, const yaml_node_t *v, const char *path, double min, bool min_exclusive,
                        double max, double *ret);
/* zero_ok: 0 is allowed (else the duration must be longer than 0). */
int con_yaml_get_duration(ConYamlReader *y, const yaml_node_t *v, const char *path, bool zero_ok, uint64_t *ret);
int con_yaml_get_size(ConYamlReader *y, const yaml_node_t *v, const char *path, uint64_t max, uint64_t *ret);
/* names: NULL-terminated; hint: "use a, b or c". *ret is the index. */
int con_yaml_get_enum(ConYamlReader *y, const yaml_node_t *v, const char *path, const char * const *names,
                      const char *hint, int *ret);
/* A list of strings. identifiers: each passes con_identifier_valid() and appears once.
 * max: 0 = unlimited. An empty list gives NULL. */
int con_yaml_get_strv(ConYamlReader *y, const yaml_node_t *v, const char *path, bool identifiers, size_t max,
                      char ***ret);

/* ---- schemas ---- */

typedef enum ConYamlType {
        CON_YAML_STRING,        /* char *; .check validates further */
        CON_YAML_BOOL,          /* bool */
        CON_YAML_UINT,          /* unsigned in [.min, .max] */
        CON_YAML_DOUBLE,        /* double in [.min, .max] (CON_YAML_MIN_EXCLUSIVE: > .min) */
        CON_YAML_DURATION,      /* uint64_t usec (CON_YAML_ZERO_OK: 0 allowed) */
        CON_YAML_SIZE,          /* uint64_t bytes in [1, .max] */
        CON_YAML_ENUM,          /* int: the index in .names; .hint lists them */
        CON_YAML_STRV,          /* char **; CON_YAML_IDENTIFIERS; at most .max entries (0: any) */
        CON_YAML_MAPPING,       /* a nested mapping read with .fields into the same struct at .offset */
        CON_YAML_CUSTOM,        /* .parse(y, value, path, dest, userdata) */
        CON_YAML_IGNORE,        /* allowed and skipped */
} ConYamlType;

enum {
        CON_YAML_REQUIRED       = 1 << 0,       /* missing (or null) is an error */
        CON_YAML_ZERO_OK        = 1 << 1,
        CON_YAML_MIN_EXCLUSIVE  = 1 << 2,
        CON_YAML_IDENTIFIERS    = 1 << 3,
};

typedef int (*ConYamlParseFunc)(ConYamlReader *y, const yaml_node_t *v, const char *path, void *dest,
                                void *userdata);
/* NULL when s is fine; else the rest of the sentence "'VALUE' ...", e.g. "is not a valid group
 * name; use ...". */
typedef const char *(*ConYamlCheckFunc)(const char *s);

typedef struct ConYamlField {
        const char *key;
        const char *alias;              /* another spelling of the key (both given: an error) */
        ConYamlType type;
        size_t offset;                  /* of the destination in the caller's struct */
        unsigned flags;
        double min, max;
        const char * const *names;      /* ENUM */
        const char *hint;               /* ENUM: "use a, b or c"; REQUIRED: what to write */
        ConYamlCheckFunc check;         /* STRING */
        const struct ConYamlField *fields; /* MAPPING, terminated by a field with key NULL */
        ConYamlParseFunc parse;         /* CUSTOM */
} ConYamlField;

/* Reads mapping `map` (a null value counts as an empty mapping) at key path `path` (NULL for the
 * top level) into dest by the table `fields` (terminated by { .key = NULL }). Keys not in the
 * table are errors listing the allowed ones. ret_seen, when not NULL, gets for each field whether
 * it was given (an array as long as the table). */
int con_yaml_read_mapping(ConYamlReader *y, const yaml_node_t *map, const char *path, const ConYamlField *fields,
                          void *dest, void *userdata, bool *ret_seen);
