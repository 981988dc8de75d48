/* SPDX-License-Identifier: MIT */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fileio.h"
#include "json-util.h"
#include "macro.h"
#include "strv.h"
#include "time-util.h"
#include "test-util.h"


static void test_write_read_full(void) {
        int p[2];
        char big[200000], back[sizeof(big) + 10];

        for (size_t i = 0; i < sizeof(big); i++)
                big[i] = (char) ('a' + i % 26);
        /* A memfd takes everything in one go; a pipe would need a reader. */
        _cleanup_close_ int fd = memfd_create("t", MFD_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(con_write_all(fd, big, sizeof(big)), ==, 0);
        g_assert_cmpint(lseek(fd, 0, SEEK_SET), ==, 0);
        /* Asking for more than there is stops at end of file. */
        g_assert_cmpint(con_read_full(fd, back, sizeof(back)), ==, (ssize_t) sizeof(big));
        g_assert_cmpmem(back, sizeof(big), big, sizeof(big));
        g_assert_cmpint(lseek(fd, 0, SEEK_SET), ==, 0);
        g_assert_cmpint(con_read_full(fd, back, 10), ==, 10);
        g_assert_cmpint(con_read_full(fd, back, 0), ==, 0);

        g_assert_cmpint(pipe2(p, O_CLOEXEC), ==, 0);
        _cleanup_close_ int r = p[0], w = p[1];
        g_assert_cmpint(con_write_all(r, "x", 1), ==, -EBADF);
        g_assert_cmpint(con_read_full(w, back, 1), ==, -EBADF);
        g_assert_cmpint(con_write_all(w, "abc", 3), ==, 0);
        w = safe_close(w);
        g_assert_cmpint(con_read_full(r, back, sizeof(back)), ==, 3);
}

static void test_strv_extendf(void) {
        _cleanup_strv_free_ char **l = NULL;

        g_assert_cmpint(strv_extendf(&l, "%s=%d", "a", 1), ==, 0);
        g_assert_cmpint(strv_extendf(&l, "b"), ==, 0);
        g_assert_cmpuint(strv_length(l), ==, 2);
        g_assert_cmpstr(l[0], ==, "a=1");
        g_assert_cmpstr(l[1], ==, "b");
}

static void test_json_kind(void) {
        _cleanup_(cJSON_Deletep) cJSON *o = cJSON_Parse("{\"s\":\"x\",\"n\":1,\"b\":true,\"z\":null,\"a\":[],\"o\":{}}");
        g_assert_nonnull(o);
        g_assert_cmpstr(con_json_kind(NULL), ==, "nothing");
        g_assert_cmpstr(con_json_kind(o), ==, "an object");
        g_assert_cmpstr(con_json_kind(cJSON_GetObjectItem(o, "s")), ==, "a string");
        g_assert_cmpstr(con_json_kind(cJSON_GetObjectItem(o, "n")), ==, "a number");
        g_assert_cmpstr(con_json_kind(cJSON_GetObjectItem(o, "b")), ==, "a boolean");
        g_assert_cmpstr(con_json_kind(cJSON_GetObjectItem(o, "z")), ==, "null");
        g_assert_cmpstr(con_json_kind(cJSON_GetObjectItem(o, "a")), ==, "an array");
        g_assert_cmpstr(con_json_kind(cJSON_GetObjectItem(o, "o")), ==, "an object");
        g_assert_cmpstr(con_json_kind(cJSON_GetObjectItem(o, "missing")), ==, "nothing");
}

/* Microsecond timestamps print as integers, not as 1.79641781710264e+15 (what a double gives). */
static void test_json_u64(void) {
        _cleanup_(cJSON_Deletep) cJSON *o = cJSON_CreateObject();
        g_assert_nonnull(con_json_add_u64(o, "t", UINT64_C(1796417817102640)));
        g_assert_nonnull(con_json_add_u64(o, "big", UINT64_MAX));
        g_assert_nonnull(con_json_add_u64(o, "zero", 0));
        _cleanup_free_ char *s = cJSON_PrintUnformatted(o);
        g_assert_cmpstr(s, ==, "{\"t\":1796417817102640,\"big\":18446744073709551615,\"zero\":0}");
        /* What cJSON itself does with the same value: the bug this helper avoids. */
        _cleanup_(cJSON_Deletep) cJSON *d = cJSON_CreateNumber(1796417817102640.0);
        _cleanup_free_ char *ds = cJSON_PrintUnformatted(d);
        g_assert_cmpstr(ds, ==, "1.79641781710264e+15");
        g_assert_cmpuint(con_json_get_u64(cJSON_GetObjectItem(o, "t")), ==, UINT64_C(1796417817102640));
        g_assert_cmpuint(con_json_get_u64(cJSON_GetObjectItem(o, "big")), ==, UINT64_MAX);
        /* Read back after a round trip through text: a number again. */
        _cleanup_(cJSON_Deletep) cJSON *p = cJSON_Parse(s);
        g_assert_cmpuint(con_json_get_u64(cJSON_GetObjectItem(p, "t")), ==, UINT64_C(1796417817102640));
        _cleanup_(cJSON_Deletep) cJSON *bad = cJSON_Parse("{\"neg\":-1,\"frac\":1.5,\"s\":\"7\"}");
        g_assert_cmpuint(con_json_get_u64(cJSON_GetObjectItem(bad, "neg")), ==, 0);
        g_assert_cmpuint(con_json_get_u64(cJSON_GetObjectItem(bad, "frac")), ==, 0);
        g_assert_cmpuint(con_json_get_u64(cJSON_GetObjectItem(bad, "s")), ==, 0);
        g_assert_cmpuint(con_json_get_u64(NULL), ==, 0);
}

static void test_timestamp(void) {
        char ts[CON_TIMESTAMP_MAX];
        g_assert_cmpint(con_format_timestamp(UINT64_C(1796543064000042), ts), ==, 0);
        g_assert_cmpstr(ts, ==, "2026-12-06T07:44:24.000042Z");
        g_assert_cmpint(con_format_timestamp(0, ts), ==, 0);
        g_assert_cmpstr(ts, ==, "1970-01-01T00:00:00.000000Z");
        g_assert_cmpint(con_format_timestamp(UINT64_C(999999), ts), ==, 0);
        g_assert_cmpstr(ts, ==, "1970-01-01T00:00:00.999999Z");
        /* The largest time still fits (year 586912): never a cut string. */
        g_assert_cmpint(con_format_timestamp(UINT64_MAX, ts), ==, 0);
        g_assert_true(g_str_has_suffix(ts, ".551615Z"));
        g_assert_cmpint(con_format_timestamp(con_now(CLOCK_REALTIME), ts), ==, 0);
        g_assert_true(g_regex_match_simple("^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{6}Z$", ts, 0, 0));
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/core/write-read-full", test_write_read_full);
        g_test_add_func("/core/strv-extendf", test_strv_extendf);
        g_test_add_func("/core/json-kind", test_json_kind);
        g_test_add_func("/core/json-u64", test_json_u64);
        g_test_add_func("/core/timestamp", test_timestamp);
        return con_test_run();
}
