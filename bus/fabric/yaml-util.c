/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "yaml-util.h"

yaml_parser_t *con_yaml_parser_free(yaml_parser_t *p) {
        if (!p)
                return NULL;
        yaml_parser_delete(p);
        free(p);
        return NULL;
}

yaml_document_t *con_yaml_document_free(yaml_document_t *d) {
        if (!d)
                return NULL;
        /* Safe on a zeroed document too: that is what a failed yaml_parser_load() leaves. */
        yaml_document_delete(d);
        free(d);
        return NULL;
}

static int problem_set(ConErrorDetail *p, unsigned line, unsigned column, char *message) {
        if (!message)
                return -ENOMEM;
        if (!p) {
                free(message);
                return 0;
        }
        con_error_detail_done(p);
        *p = (ConErrorDetail) { .line = line, .column = column, .message = message };
        return 0;
}

/* libyaml's problem text, with the context ("while parsing a block mapping") when there is one. */
static int problem_from_parser(ConErrorDetail *p, const yaml_parser_t *parser, const char *text, size_t len,
                               unsigned line_base) {
        char *m = NULL;
        const char *problem = parser->problem ?: "invalid YAML";

        if (parser->error == YAML_MEMORY_ERROR)
                return -ENOMEM;

        if (parser->context) {
                if (asprintf(&m, "%s (%s that starts at line %zu, column %zu)", problem, parser->context,
                             parser->context_mark.line + 1 + line_base, parser->context_mark.column + 1) < 0)
                        m = NULL;
        } else
                m = strdup(problem);

        /* Reader errors (bad UTF-8, control characters) carry a byte offset, not a mark: count the
         * lines up to it ourselves. The column counts bytes. */
        if (parser->error == YAML_READER_ERROR) {
                unsigned line = 1, column = 1;
                for (size_t i = 0; text && i < parser->problem_offset && i < len; i++) {
                        if (text[i] == '\n') {
                                line++;
                                column = 1;
                        } else
                                column++;
                }
                return problem_set(p, line, column, m) ?: -EINVAL;
        }

        return problem_set(p, (unsigned) parser->problem_mark.line + 1,
                           (unsigned) parser->problem_mark.column + 1, m) ?: -EINVAL;
}

/* Nesting beyond max_depth is refused by a pass over the events before the document is built:
 * libyaml's scanner costs O(depth) per token in flow context, so a few hundred KiB of '[' would
 * cost minutes; the event parser stops at the first node too deep. Syntax errors are left to the
 * load that follows, which reports them with their context. */
static int check_depth(const char *text, size_t len, unsigned max_depth, ConErrorDetail *ret_problem) {
        yaml_parser_t parser;
        unsigned depth = 0;
        int r = 0;

        if (!yaml_parser_initialize(&parser))
                return -ENOMEM;
        yaml_parser_set_input_string(&parser, (const unsigned char *) (text ?: ""), text ? len : 0);
        for (;;) {
                yaml_event_t ev;
                if (!yaml_parser_parse(&parser, &ev)) {
                        r = parser.error == YAML_MEMORY_ERROR ? -ENOMEM : 0;
                        break;
                }
                yaml_event_type_t t = ev.type;
                if (t == YAML_SEQUENCE_START_EVENT || t == YAML_MAPPING_START_EVENT)
                        depth++;
                else if (t == YAML_SEQUENCE_END_EVENT || t == YAML_MAPPING_END_EVENT)
                        depth--;
                if (depth > max_depth) {
                        char *m = NULL;
                        if (asprintf(&m, "nested more than %u levels deep (flatten it)", max_depth) < 0)
                                m = NULL;
                        r = problem_set(ret_problem, (unsigned) ev.start_mark.line + 1,
                                        (unsigned) ev.start_mark.column + 1, m) ?: -EINVAL;
                }
                yaml_event_delete(&ev);
                if (r < 0 || t == YAML_STREAM_END_EVENT)
                        break;
        }
        yaml_parser_delete(&parser);
        return r;
}

int con_yaml_load(const char *text, size_t len, unsigned line_base, yaml_document_t **ret,
                  ConErrorDetail *ret_problem) {
        _cleanup_(con_yaml_parser_freep) yaml_parser_t *parser = NULL;
        _cleanup_(con_yaml_document_freep) yaml_document_t *doc = NULL, *next = NULL;
        int r;

        r = check_depth(text, len, CON_YAML_LOAD_DEPTH_MAX, ret_problem);
        if (r < 0)
                return r;

        parser = calloc(1, sizeof(*parser));
        if (!parser)
                return -ENOMEM;
        if (!yaml_parser_initialize(parser)) {
                free(TAKE_PTR(parser));
                return -ENOMEM;
        }
        yaml_parser_set_input_string(parser, (const unsigned char *) (text ?: ""), text ? len : 0);

        doc = calloc(1, sizeof(*doc));
        if (!doc)
                return -ENOMEM;
        if (!yaml_parser_load(parser, doc))
                return problem_from_parser(ret_problem, parser, text, len, line_base);

        yaml_node_t *root = yaml_document_get_root_node(doc);
        if (!root) {
                r = problem_set(ret_problem, 0, 0, strdup("the file holds no YAML document"));
                return r < 0 ? r : -ENODATA;
        }

        /* A second document is refused rather than ignored: it is almost always a stray "---". */
        next = calloc(1, sizeof(*next));
        if (!next)
                return -ENOMEM;
        if (!yaml_parser_load(parser, next))
                return problem_from_parser(ret_problem, parser, text, len, line_base);
        yaml_node_t *second = yaml_document_get_root_node(next);
        if (second) {
                /* Where the second document starts: its "---" line. */
                r = problem_set(ret_problem, (unsigned) next->start_mark.line + 1,
                                (unsigned) next->start_mark.column + 1,
                                strdup("only one YAML document is allowed; remove the second '---'"));
                return r < 0 ? r : -EINVAL;
        }

        *ret = TAKE_PTR(doc);
        return 0;
}

const char *con_yaml_node_kind_to_string(const yaml_node_t *n) {
        if (!n)
                return "nothing";
        switch (n->type) {
        case YAML_SCALAR_NODE:
                return con_yaml_node_is_null(n) ? "an empty value" : "a string";
        case YAML_SEQUENCE_NODE:
                return "a list";
        case YAML_MAPPING_NODE:
                return "a mapping";
        default:
                return "nothing";
        }
}

bool con_yaml_node_is_null(const yaml_node_t *n) {
        if (!n || n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
                return false;
        /* An explicit tag other than !!null makes it a value (e.g. !!str ""). */
        if (n->tag && strcmp((const char *) n->tag, YAML_NULL_TAG) != 0 &&
            strcmp((const char *) n->tag, YAML_DEFAULT_SCALAR_TAG) != 0)
                return false;
        return n->data.scalar.length == 0 || con_yaml_word_is_null((const char *) n->data.scalar.value);
}

bool con_yaml_word_is_null(const char *v) {
        return v && (v[0] == 0 || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
                     strcmp(v, "NULL") == 0);
}

bool con_yaml_scalar_has_nul(const yaml_node_t *n) {
        if (!n || n->type != YAML_SCALAR_NODE)
                return false;
        return memchr(n->data.scalar.value, 0, n->data.scalar.length) != NULL;
}

static bool key_equal(const yaml_node_t *a, const yaml_node_t *b) {
        return a->data.scalar.length == b->data.scalar.length &&
                memcmp(a->data.scalar.value, b->data.scalar.value, a->data.scalar.length) == 0;
}

yaml_node_t *con_yaml_mapping_get(yaml_document_t *doc, const yaml_node_t *map, const char *key,
                                  yaml_node_t **ret_key) {
        yaml_node_t *k, *v;

        if (!map || map->type != YAML_MAPPING_NODE)
                return NULL;
        CON_YAML_MAPPING_FOREACH(doc, map, k, v) {
                if (!k || k->type != YAML_SCALAR_NODE)
                        continue;
                if (k->data.scalar.length == strlen(key) && memcmp(k->data.scalar.value, key, strlen(key)) == 0) {
                        if (ret_key)
                                *ret_key = k;
                        return v;
                }
        }
        return NULL;
}

typedef struct KeyRef {
        yaml_node_t *node;
        size_t index;
} KeyRef;

static int keyref_compare(const void *a, const void *b) {
        const KeyRef *x = a, *y = b;
        size_t lx = x->node->data.scalar.length, ly = y->node->data.scalar.length;
        int c = memcmp(x->node->data.scalar.value, y->node->data.scalar.value, lx < ly ? lx : ly);
        if (c != 0)
                return c;
        if (lx != ly)
                return lx < ly ? -1 : 1;
        return x->index < y->index ? -1 : x->index > y->index;
}

int con_yaml_mapping_check_keys(yaml_document_t *doc, const yaml_node_t *map,
                                yaml_node_t **ret_bad, yaml_node_t **ret_first) {
        _cleanup_free_ KeyRef *keys = NULL;
        yaml_node_t *k, *v _unused_;
        size_t n = 0, total;

        if (!map || map->type != YAML_MAPPING_NODE)
                return 0;
        total = (size_t) (map->data.mapping.pairs.top - map->data.mapping.pairs.start);

        CON_YAML_MAPPING_FOREACH(doc, map, k, v) {
                if (!k || k->type != YAML_SCALAR_NODE) {
                        *ret_bad = k;
                        *ret_first = NULL;
                        return -EBADMSG;
                }
        }
        if (total < 2)
                return 0;

        /* Sort (key, position) so a large mapping costs n log n, not n². */
        keys = calloc(total, sizeof(KeyRef));
        if (!keys)
                return -ENOMEM;
        CON_YAML_MAPPING_FOREACH(doc, map, k, v) {
                keys[n] = (KeyRef) { .node = k, .index = n };
                n++;
        }
        qsort(keys, n, sizeof(KeyRef), keyref_compare);

        /* Report the duplicate that comes first in the file, paired with the key's first use. */
        const KeyRef *best_dup = NULL, *best_first = NULL;
        for (size_t i = 1, group = 0; i < n; i++) {
                if (!key_equal(keys[i - 1].node, keys[i].node)) {
                        group = i;
                        continue;
                }
                if (!best_dup || keys[i].index < best_dup->index) {
                        best_dup = &keys[i];
                        best_first = &keys[group];
                }
        }
        if (best_dup) {
                *ret_bad = best_dup->node;
                *ret_first = best_first->node;
                return -ENOTUNIQ;
        }
        return 0;
}
