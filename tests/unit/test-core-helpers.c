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

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/core/write-read-full", test_write_read_full);
        g_test_add_func("/core/strv-extendf", test_strv_extendf);
        g_test_add_func("/core/json-kind", test_json_kind);
        return con_test_run();
}
