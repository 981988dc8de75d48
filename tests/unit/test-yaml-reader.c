/* SPDX-License-Identifier: MIT */
/* The one YAML reader (bus/fabric/yaml-reader.h): each type, each message with its line and column,
 * unknown and duplicate keys, required keys, aliases (copies allowed, cycles and blow-ups refused,
 * or refused outright) and bounded nesting. */
#include <errno.h>

#include "macro.h"
#include "strv.h"
#include "test-util.h"
#include "yaml-reader.h"

typedef struct Inner {
        unsigned n;
        char *s;
} Inner;

typedef struct Sample {
        char *name;
        bool flag;
        unsigned count;
        double ratio;
        uint64_t wait_usec;
        uint64_t size;
        int color;
        char **tags;
        Inner inner;
        char *upper;
        char *custom;
} Sample;

static const char * const colors[] = { "red", "green", "blue", NULL };

static const char *upper_check(const char *s) {
        for (; *s; s++)
                if (*s < 'A' || *s > 'Z')
                        return "is not upper-case; use A-Z only";
        return NULL;
}

static int parse_custom(ConYamlReader *y, const yaml_node_t *v, const char *path, void *dest, void *userdata) {
        g_assert_true(userdata == (void *) colors);
        int r = con_yaml_get_string(y, v, path, dest);
        if (r >= 0 && *(char **) dest && streq(*(char **) dest, "bad"))
                return con_yaml_fail(y, v, path, "custom says no (write good)");
        return r;
}

static const ConYamlField inner_fields[] = {
        { "n", .type = CON_YAML_UINT, .offset = offsetof(Inner, n), .min = 1, .max = 9 },
        { "s", .type = CON_YAML_STRING, .offset = offsetof(Inner, s), .flags = CON_YAML_REQUIRED, .hint = "s: text" },
        {}
};

static const ConYamlField sample_fields[] = {
        { "name", .type = CON_YAML_STRING, .offset = offsetof(Sample, name), .flags = CON_YAML_REQUIRED },
        { "flag", .alias = "flag_old", .type = CON_YAML_BOOL, .offset = offsetof(Sample, flag) },
        { "count", .type = CON_YAML_UINT, .offset = offsetof(Sample, count), .min = 2, .max = 10 },
        { "ratio", .type = CON_YAML_DOUBLE, .offset = offsetof(Sample, ratio), .max = 5, .flags = CON_YAML_MIN_EXCLUSIVE },
        { "wait", .type = CON_YAML_DURATION, .offset = offsetof(Sample, wait_usec) },
        { "size", .type = CON_YAML_SIZE, .offset = offsetof(Sample, size), .max = 1 << 20 },
        { "color", .type = CON_YAML_ENUM, .offset = offsetof(Sample, color), .names = colors,
          .hint = "use red, green or blue" },
        { "tags", .type = CON_YAML_STRV, .offset = offsetof(Sample, tags), .flags = CON_YAML_IDENTIFIERS, .max = 3 },
        { "inner", .type = CON_YAML_MAPPING, .offset = offsetof(Sample, inner), .fields = inner_fields },
        { "upper", .type = CON_YAML_STRING, .offset = offsetof(Sample, upper), .check = upper_check },
        { "custom", .type = CON_YAML_CUSTOM, .offset = offsetof(Sample, custom), .parse = parse_custom },
        { "ignored", .type = CON_YAML_IGNORE },
        {}
};

static void sample_done(Sample *s) {
        free(s->name);
        strv_free(s->tags);
        free(s->inner.s);
        free(s->upper);
        free(s->custom);
}

/* Reads text; returns the formatted error ("" when it succeeded). */
static char *read_sample(const char *text, Sample *s, bool no_aliases) {
        ConErrorDetail e = {};
        _cleanup_(con_yaml_reader_done) ConYamlReader y = { .file = "s.yaml", .err = &e, .no_aliases = no_aliases };
        int r;

        *s = (Sample) { .color = -1 };
        r = con_yaml_open(&y, text, strlen(text), "empty");
        if (r >= 0)
                r = con_yaml_read_mapping(&y, yaml_document_get_root_node(y.doc), NULL, sample_fields, s,
                                          (void *) colors, NULL);
        if (r >= 0) {
                g_assert_null(e.message);
                return g_strdup("");
        }
        g_assert_true(r == -EINVAL || r == -ENODATA);
        char *f = con_error_detail_format(&e);
        g_assert_nonnull(f);
        con_error_detail_done(&e);
        return f;
}

static void assert_error(const char *text, const char *expected) {
        Sample s;
        _cleanup_free_ char *f = read_sample(text, &s, false);
        sample_done(&s);
        g_assert_cmpstr(f, ==, expected);
}

static void test_types(void) {
        Sample s;
        _cleanup_free_ char *f = read_sample(
                "name: x\nflag: true\ncount: 7\nratio: 2.5\nwait: 1h30m\nsize: 512K\ncolor: blue\n"
                "tags: [a, b.c]\ninner: {n: 3, s: hi}\nupper: ABC\ncustom: good\nignored: {any: [thing]}\n",
                &s, false);
        g_assert_cmpstr(f, ==, "");
        g_assert_cmpstr(s.name, ==, "x");
        g_assert_true(s.flag);
        g_assert_cmpuint(s.count, ==, 7);
        g_assert_cmpfloat(s.ratio, ==, 2.5);
        g_assert_cmpuint(s.wait_usec, ==, 5400 * USEC_PER_SEC);
        g_assert_cmpuint(s.size, ==, 512 * 1024);
        g_assert_cmpint(s.color, ==, 2);
        g_assert_true(strv_equal(s.tags, (char *[]) { (char *) "a", (char *) "b.c", NULL }));
        g_assert_cmpuint(s.inner.n, ==, 3);
        g_assert_cmpstr(s.inner.s, ==, "hi");
        g_assert_cmpstr(s.upper, ==, "ABC");
        g_assert_cmpstr(s.custom, ==, "good");
        sample_done(&s);

        /* null (empty, ~, null) leaves a key unset; false is false; the alias spelling works. */
        _cleanup_free_ char *g = read_sample("name: y\nflag_old: false\ncount:\nwait: ~\ntags: null\n", &s, false);
        g_assert_cmpstr(g, ==, "");
        g_assert_false(s.flag);
        g_assert_cmpuint(s.count, ==, 0);
        g_assert_null(s.tags);
        g_assert_cmpint(s.color, ==, -1);
        sample_done(&s);
}

static void test_booleans(void) {
        assert_error("name: x\nflag: True\n", "s.yaml:2:7: flag: 'True' is not a boolean here (write true: booleans are "
                     "exactly true or false, lower-case)");
        assert_error("name: x\nflag: yes\n", "s.yaml:2:7: flag: 'yes' is not a boolean here (write true: booleans are "
                     "exactly true or false, lower-case)");
        assert_error("name: x\nflag: off\n", "s.yaml:2:7: flag: 'off' is not a boolean here (write false: booleans are "
                     "exactly true or false, lower-case)");
        assert_error("name: x\nflag: FALSE\n", "s.yaml:2:7: flag: 'FALSE' is not a boolean here (write false: booleans "
                     "are exactly true or false, lower-case)");
        assert_error("name: x\nflag: \"true\"\n", "s.yaml:2:7: flag: 'true' is a quoted string, not a boolean (write true "
                     "without quotes)");
        assert_error("name: x\nflag: 1\n", "s.yaml:2:7: flag: '1' is not allowed; use true or false");
        assert_error("name: x\nflag: [true]\n", "s.yaml:2:7: flag: expected true or false, got a list");
}

static void test_errors(void) {
        assert_error("", "s.yaml: empty");
        assert_error("# only a comment\n", "s.yaml: empty");
        assert_error("name: [\n", "s.yaml:2:1: did not find expected node content (while parsing a flow node that "
                     "starts at line 2, column 1)");
        assert_error("- a\n", "s.yaml:1:1: expected a mapping of name, flag, count, ratio, wait, size, color, tags, "
                     "inner, upper, custom and ignored, got a list");
        assert_error("flag: true\n", "s.yaml:1:1: name: missing; this key is required");
        assert_error("name: x\nnmae: y\n", "s.yaml:2:1: nmae: unknown key; allowed keys are name, flag, count, ratio, "
                     "wait, size, color, tags, inner, upper, custom and ignored");
        assert_error("name: x\nname: y\n", "s.yaml:2:1: name: duplicate key; it was already given at line 1");
        assert_error("name: x\nflag: true\nflag_old: true\n", "s.yaml:3:1: flag_old: flag and flag_old are the same "
                     "key; keep flag");
        assert_error("name: x\n[a]: 1\n", "s.yaml:2:1: keys must be plain strings, got a list");
        assert_error("name: x\n\"a\\0b\": 1\n", "s.yaml:2:1: a\\x00b: the key contains a NUL byte");
        assert_error("name: \"a\\0b\"\n", "s.yaml:1:7: name: the value contains a NUL byte");
        assert_error("name: {a: b}\n", "s.yaml:1:7: name: expected a string, got a mapping");
        assert_error("name: x\ncount: 11\n", "s.yaml:2:8: count: '11' is not allowed; use a whole number from 2 to 10");
        assert_error("name: x\ncount: 0x5\n", "s.yaml:2:8: count: '0x5' is not allowed; use a whole number from 2 to 10");
        assert_error("name: x\ncount: 99999999999999999999999\n",
                     "s.yaml:2:8: count: '99999999999999999999999' is not allowed; use a whole number from 2 to 10");
        assert_error("name: x\nratio: 0\n", "s.yaml:2:8: ratio: '0' is not allowed; use a number greater than 0 and at "
                     "most 5");
        assert_error("name: x\nratio: inf\n", "s.yaml:2:8: ratio: 'inf' is not allowed; use a number greater than 0 and "
                     "at most 5");
        assert_error("name: x\nwait: soon\n", "s.yaml:2:7: wait: 'soon' is not a valid duration; use seconds (90) or a "
                     "number with a unit: 250ms, 90s, 5m, 1h, 2d, 1h30m");
        assert_error("name: x\nwait: 0s\n", "s.yaml:2:7: wait: '0s' is not allowed; the duration must be longer than 0");
        assert_error("name: x\nsize: 2M\n", "s.yaml:2:7: size: '2M' is not allowed; use a size from 1 byte to 1 MiB");
        assert_error("name: x\nsize: lots\n", "s.yaml:2:7: size: 'lots' is not a valid size; use bytes (1048576) or a "
                     "number with a unit: 512K, 1M, 1MiB, 1G (powers of 1024)");
        assert_error("name: x\ncolor: Red\n", "s.yaml:2:8: color: 'Red' is not allowed; use red, green or blue");
        assert_error("name: x\ntags: a\n", "s.yaml:2:7: tags: expected a list of strings, got a string");
        assert_error("name: x\ntags: [a, b, c, d]\n", "s.yaml:2:7: tags: the list has 4 entries; at most 3 are allowed");
        assert_error("name: x\ntags: [a, A]\n", "s.yaml:2:11: tags[1]: 'A' is not a valid name; use 1 to 64 characters "
                     "from a-z, 0-9, '.', '_' and '-', starting with a letter or digit");
        assert_error("name: x\ntags: [a, a]\n", "s.yaml:2:11: tags[1]: 'a' is listed twice");
        assert_error("name: x\ntags: [a, [b]]\n", "s.yaml:2:11: tags[1]: expected a string, got a list");
        assert_error("name: x\ninner: {n: 3}\n", "s.yaml:2:8: inner.s: missing; this key is required (s: text)");
        assert_error("name: x\ninner: {s: a, n: 0}\n", "s.yaml:2:18: inner.n: '0' is not allowed; use a whole number "
                     "from 1 to 9");
        assert_error("name: x\ninner:\n  s: a\n  t: b\n", "s.yaml:4:3: inner.t: unknown key; allowed keys are n and s");
        assert_error("name: x\ninner: 3\n", "s.yaml:2:8: inner: expected a mapping of n and s, got a string");
        assert_error("name: x\nupper: abc\n", "s.yaml:2:8: upper: 'abc' is not upper-case; use A-Z only");
        assert_error("name: x\ncustom: bad\n", "s.yaml:2:9: custom: custom says no (write good)");
        /* Long and unprintable values are quoted cut and escaped. */
        assert_error("name: x\ncolor: \"a\\tb\\n0123456789012345678901234567890123456789012345678901234567890123\"\n",
                     "s.yaml:2:8: color: 'a\\tb\\n012345678901234567890123456789012345678901234567890123456789...' is "
                     "not allowed; use red, green or blue");
}

static void test_aliases(void) {
        Sample s;

        /* An alias is a copy of its anchor's value. */
        _cleanup_free_ char *f = read_sample("name: &n x\nupper: &u ABC\ncustom: *n\ninner: {s: *u}\n", &s, false);
        g_assert_cmpstr(f, ==, "");
        g_assert_cmpstr(s.custom, ==, "x");
        g_assert_cmpstr(s.inner.s, ==, "ABC");
        sample_done(&s);

        /* ... unless the reader refuses them. */
        _cleanup_free_ char *g = read_sample("name: &n x\ncustom: *n\n", &s, true);
        sample_done(&s);
        g_assert_cmpstr(g, ==, "s.yaml:1:7: anchors and aliases (&name, *name) are not supported here (write the value "
                        "out)");

        /* An alias inside its own anchor. */
        assert_error("name: x\nignored: &a [1, *a]\n",
                     "s.yaml:2:10: an alias refers to the mapping or list that contains it (write the value out)");
        assert_error("&a {name: x, ignored: *a}\n",
                     "s.yaml:1:1: an alias refers to the mapping or list that contains it (write the value out)");

        /* A "billion laughs": each level doubles; the expansion budget stops it early. */
        GString *t = g_string_new("a0: &a0 [x, x]\n");
        for (int i = 1; i < 30; i++)
                g_string_append_printf(t, "a%d: &a%d [*a%d, *a%d]\n", i, i, i - 1, i - 1);
        g_string_append(t, "name: x\n");
        _cleanup_free_ char *h = read_sample(t->str, &s, false);
        sample_done(&s);
        g_string_free(t, TRUE);
        g_assert_true(g_str_has_suffix(h, ": aliases expand to too many values (write the values out)"));
        g_assert_true(g_str_has_prefix(h, "s.yaml:"));
}

static void test_depth(void) {
        /* 32 levels are fine (here under an ignored key), 33 are not. */
        for (int depth = 30; depth <= 34; depth++) {
                GString *t = g_string_new("name: x\nignored: ");
                for (int i = 1; i < depth; i++)
                        g_string_append_c(t, '[');
                for (int i = 1; i < depth; i++)
                        g_string_append_c(t, ']');
                g_string_append_c(t, '\n');
                Sample s;
                _cleanup_free_ char *f = read_sample(t->str, &s, false);
                sample_done(&s);
                g_test_message("depth %d: %s", depth, f);
                if (depth <= CON_YAML_DEPTH_MAX)
                        g_assert_cmpstr(f, ==, "");
                else {
                        _cleanup_free_ char *want = g_strdup_printf("s.yaml:2:%d: nested more than 32 levels deep "
                                                                    "(flatten it)", 9 + 32);
                        g_assert_cmpstr(f, ==, want);
                }
                g_string_free(t, TRUE);
        }

        /* Very deep input is refused at the 33rd level, before libyaml's scanner (O(depth) per token in
         * flow context) sees the rest: this took minutes when the whole document was built first. */
        GString *t = g_string_new("name: x\nignored: ");
        for (int i = 0; i < 100000; i++)
                g_string_append_c(t, '[');
        Sample s;
        _cleanup_free_ char *f = read_sample(t->str, &s, false);
        sample_done(&s);
        g_string_free(t, TRUE);
        g_assert_cmpstr(f, ==, "s.yaml:2:41: nested more than 32 levels deep (flatten it)");
}

static void test_error_detail_format(void) {
        ConErrorDetail e = { .message = (char *) "m" };
        _cleanup_free_ char *a = con_error_detail_format(&e);
        g_assert_cmpstr(a, ==, "m");
        e.key = (char *) "k.x[0]";
        _cleanup_free_ char *b = con_error_detail_format(&e);
        g_assert_cmpstr(b, ==, "k.x[0]: m");
        e.line = 3;
        _cleanup_free_ char *c = con_error_detail_format(&e);
        g_assert_cmpstr(c, ==, "3: k.x[0]: m");
        e.column = 4;
        _cleanup_free_ char *d = con_error_detail_format(&e);
        g_assert_cmpstr(d, ==, "3:4: k.x[0]: m");
        e.file = (char *) "f";
        _cleanup_free_ char *f = con_error_detail_format(&e);
        g_assert_cmpstr(f, ==, "f:3:4: k.x[0]: m");
        e.line = e.column = 0;
        _cleanup_free_ char *g = con_error_detail_format(&e);
        g_assert_cmpstr(g, ==, "f: k.x[0]: m");

        ConErrorDetail h = {};
        g_assert_cmpint(con_error_detail_set(&h, "x", 1, 2, "k", "n=%d", 5), ==, -EINVAL);
        _cleanup_free_ char *i = con_error_detail_format(&h);
        g_assert_cmpstr(i, ==, "x:1:2: k: n=5");
        con_error_detail_done(&h);
        g_assert_null(h.message);
        g_assert_cmpint(con_error_detail_set(NULL, "x", 1, 2, "k", "n"), ==, -EINVAL);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/yaml-reader/types", test_types);
        g_test_add_func("/yaml-reader/booleans", test_booleans);
        g_test_add_func("/yaml-reader/errors", test_errors);
        g_test_add_func("/yaml-reader/aliases", test_aliases);
        g_test_add_func("/yaml-reader/depth", test_depth);
        g_test_add_func("/yaml-reader/error-detail", test_error_detail_format);
        return con_test_run();
}
