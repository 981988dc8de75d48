/* SPDX-License-Identifier: MIT */
#pragma once

#include <glib.h>
#include <stdbool.h>

/* Helpers shared by the g_test programs. */

/* A fresh private temp folder, removed by test_tmpdir_remove(). */
char *test_tmpdir_new(void);
void test_tmpdir_remove(const char *path);
/* Source tree root (CON_SOURCE_DIR, set by ctest). */
const char *test_source_dir(void);
/* Writes a file; aborts the test on failure. */
void test_write_file(const char *path, const char *content);
