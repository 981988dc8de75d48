/* SPDX-License-Identifier: MIT */
/* The one YAML reader itself (bus/fabric/yaml-reader.h), over a schema with every field type:
 * anything is either read or refused with a formatted FILE:LINE:COLUMN message; nothing leaks,
 * nothing loops (aliases, nesting), and the values read respect the schema's limits. Both with
 * aliases allowed (con.yaml, contracts) and refused (task front matter). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "strv.h"
#include "yaml-reader.h"

typedef struct Inner {
        unsigned n;
        char **list;
} Inner;

typedef struct Fuzz {
        char *s;
        bool b;
        unsigned u;
        double d;
        uint64_t dur, size;
        int e;
        char **ids;
        Inner inner;
        char *c;
} Fuzz;

static const char * const names[] = { "a", "b", "c", NULL };

static const char *check_short(const char *s) {
        return strlen(s) > 8 ? "is too long; use at most 8 characters" : NULL;
}

static int parse_custom(ConYamlReader *y, const yaml_node_t *v, const char *path, void *dest, void *userdata _unused_) {
        /* A custom field that reads a nested list of mappings of its own. */
        yaml_node_t *it;
        size_t i = 0;
        if (con_yaml_node_is_null(v) || v->type != YAML_SEQUENCE_NODE)
                return con_yaml_get_string(y, v, path, dest);
        CON_YAML_SEQUENCE_FOREACH(y->doc, v, it) {
                static const ConYamlField f[] = {
                        { "n", .type = CON_YAML_UINT, .offset = offsetof(Inner, n), .max = 5 },
                        { "list", .type = CON_YAML_STRV, .offset = offsetof(Inner, list), .max = 4 },
                        {}
                };
                _cleanup_free_ char *p = con_yaml_path_index(path, i++);
                Inner in = {};
                if (!p)
                        return -ENOMEM;
                int r = con_yaml_read_mapping(y, it, p, f, &in, NULL, NULL);
                strv_free(in.list);
                if (r < 0)
                        return r;
                if (in.n > 5)
                        abort();
        }
        return 0;
}

static const ConYamlField inner_fields[] = {
        { "n", .type = CON_YAML_UINT, .offset = offsetof(Inner, n), .min = 1, .max = 9, .flags = CON_YAML_REQUIRED },
        { "list", .type = CON_YAML_STRV, .offset = offsetof(Inner, list) },
        {}
};

static const ConYamlField fields[] = {
        { "s", .alias = "S", .type = CON_YAML_STRING, .offset = offsetof(Fuzz, s), .check = check_short },
        { "b", .type = CON_YAML_BOOL, .offset = offsetof(Fuzz, b) },
        { "u", .type = CON_YAML_UINT, .offset = offsetof(Fuzz, u), .min = 2, .max = 100 },
        { "d", .type = CON_YAML_DOUBLE, .offset = offsetof(Fuzz, d), .min = 1, .max = 10 },
        { "dur", .type = CON_YAML_DURATION, .offset = offsetof(Fuzz, dur), .flags = CON_YAML_ZERO_OK },
        { "size", .type = CON_YAML_SIZE, .offset = offsetof(Fuzz, size), .max = 1 << 30 },
        { "e", .type = CON_YAML_ENUM, .offset = offsetof(Fuzz, e), .names = names, .hint = "use a, b or c" },
        { "ids", .type = CON_YAML_STRV, .offset = offsetof(Fuzz, ids), .flags = CON_YAML_IDENTIFIERS, .max = 8 },
        { "inner", .type = CON_YAML_MAPPING, .offset = offsetof(Fuzz, inner), .fields = inner_fields },
        { "c", .type = CON_YAML_CUSTOM, .offset = offsetof(Fuzz, c), .parse = parse_custom },
        { "x", .type = CON_YAML_IGNORE },
        {}
};

static void one(const uint8_t *data, size_t size, bool no_aliases) {
        ConErrorDetail e = {};
        ConYamlReader y = { .file = "fuzz.yaml", .err = &e, .no_aliases = no_aliases };
        Fuzz f = { .e = -1 };
        int r;

        r = con_yaml_open(&y, (const char *) data, size, NULL);
        if (r >= 0)
                r = con_yaml_read_mapping(&y, yaml_document_get_root_node(y.doc), NULL, fields, &f, NULL, NULL);
        if (r >= 0) {
                if (e.message || (f.u != 0 && (f.u < 2 || f.u > 100)) || (f.d != 0 && (f.d < 1 || f.d > 10)) ||
                    f.size > (1 << 30) || f.e < -1 || f.e > 2 || (f.s && strlen(f.s) > 8) || strv_length(f.ids) > 8 ||
                    (f.inner.n != 0 && (f.inner.n < 1 || f.inner.n > 9)))
                        abort();
        } else if (r != -ENOMEM) {
                if ((r != -EINVAL && r != -ENODATA) || !e.message)
                        abort();
                char *s = con_error_detail_format(&e);
                if (!s || strncmp(s, "fuzz.yaml", 9) != 0)
                        abort();
                free(s);
        }
        free(f.s);
        strv_free(f.ids);
        strv_free(f.inner.list);
        free(f.c);
        con_yaml_reader_done(&y);
        con_error_detail_done(&e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > 64 * 1024)
                return 0;
        one(data, size, false);
        one(data, size, true);
        return 0;
}
