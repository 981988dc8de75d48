/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <yaml.h>

#include "error-detail.h"
#include "macro.h"

/* Small helpers over libyaml's document API: loading one document with a usable error, cleanup
 * wrappers, typed node access and 1-based positions for messages. Library code: never logs.
 *
 * Loading goes through yaml_parser_load(), so aliases refer to the anchored node (no expansion,
 * memory stays linear in the input). Walk documents with a schema of bounded depth: an alias
 * can make a node its own descendant. */

#define CON_YAML_LOAD_DEPTH_MAX 32

/* Heap-allocated parser and document; the free functions accept NULL and return NULL. */
yaml_parser_t *con_yaml_parser_free(yaml_parser_t *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(yaml_parser_t *, con_yaml_parser_free)
yaml_document_t *con_yaml_document_free(yaml_document_t *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(yaml_document_t *, con_yaml_document_free)

/* Loads exactly one YAML document from memory; nesting deeper than CON_YAML_LOAD_DEPTH_MAX is
 * refused (-EINVAL) before the document is built. line_base is added to the line numbers quoted in
 * the message (the lines of a file before the YAML text); ret_problem gets the line and column in
 * the YAML text itself, and the message (no file, no key).
 * Returns 0 and the document; -EINVAL for a syntax error or more than one document, -ENODATA
 * when the input holds no document at all (empty, only comments), both with ret_problem filled
 * in; -ENOMEM. ret_problem may be NULL. */
int con_yaml_load(const char *text, size_t len, unsigned line_base, yaml_document_t **ret,
                  ConErrorDetail *ret_problem);

static inline unsigned con_yaml_node_line(const yaml_node_t *n) {
        return n ? (unsigned) n->start_mark.line + 1 : 0;
}
static inline unsigned con_yaml_node_column(const yaml_node_t *n) {
        return n ? (unsigned) n->start_mark.column + 1 : 0;
}

/* "a string", "a list", "a mapping" (for "expected X, got Y" messages). */
const char *con_yaml_node_kind_to_string(const yaml_node_t *n);

/* A plain (unquoted) "", "~", "null", "Null" or "NULL": YAML's null. */
bool con_yaml_node_is_null(const yaml_node_t *n);

/* Whether the text, written as a plain scalar, reads as YAML's null (the words above): a writer
 * quotes such a value. */
bool con_yaml_word_is_null(const char *v);

/* The scalar's text, or NULL when the node is not a scalar. */
static inline const char *con_yaml_scalar(const yaml_node_t *n) {
        return n && n->type == YAML_SCALAR_NODE ? (const char *) n->data.scalar.value : NULL;
}
/* True when the scalar's text contains a NUL byte ("\0" in a double-quoted string), which would
 * silently cut every C string made from it. */
bool con_yaml_scalar_has_nul(const yaml_node_t *n);

#define CON_YAML_CONCAT_(a, b) a##b
#define CON_YAML_CONCAT(a, b) CON_YAML_CONCAT_(a, b)

/* Iterate the pairs of a mapping node: kn and vn are yaml_node_t pointers (key and value). */
#define CON_YAML_MAPPING_FOREACH(doc, map, kn, vn)                                                \
        _CON_YAML_MAPPING_FOREACH(doc, map, kn, vn, CON_YAML_CONCAT(_pair_, __COUNTER__))
#define _CON_YAML_MAPPING_FOREACH(doc, map, kn, vn, p)                                            \
        for (yaml_node_pair_t *p = (map)->data.mapping.pairs.start;                                \
             p < (map)->data.mapping.pairs.top &&                                                  \
             ((kn) = yaml_document_get_node((doc), p->key),                                        \
              (vn) = yaml_document_get_node((doc), p->value), true);                               \
             p++)

/* Iterate the items of a sequence node. */
#define CON_YAML_SEQUENCE_FOREACH(doc, seq, item)                                                 \
        _CON_YAML_SEQUENCE_FOREACH(doc, seq, item, CON_YAML_CONCAT(_item_, __COUNTER__))
#define _CON_YAML_SEQUENCE_FOREACH(doc, seq, item, i)                                             \
        for (yaml_node_item_t *i = (seq)->data.sequence.items.start;                               \
             i < (seq)->data.sequence.items.top &&                                                 \
             ((item) = yaml_document_get_node((doc), *i), true);                                   \
             i++)

static inline size_t con_yaml_sequence_length(const yaml_node_t *seq) {
        return seq && seq->type == YAML_SEQUENCE_NODE ?
                (size_t) (seq->data.sequence.items.top - seq->data.sequence.items.start) : 0;
}

/* The value of the first pair whose key is the scalar `key`, or NULL. Optionally the key node. */
yaml_node_t *con_yaml_mapping_get(yaml_document_t *doc, const yaml_node_t *map, const char *key,
                                  yaml_node_t **ret_key);

/* Checks that every key of a mapping is a scalar and that no key appears twice.
 * Returns 0 when fine; -ENOTUNIQ with *ret_bad = the second occurrence and *ret_first = the first;
 * -EBADMSG with *ret_bad = a key that is not a scalar (*ret_first = NULL). */
int con_yaml_mapping_check_keys(yaml_document_t *doc, const yaml_node_t *map,
                                yaml_node_t **ret_bad, yaml_node_t **ret_first);
