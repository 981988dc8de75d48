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

/* A private dbus-daemon listening on dir/bus, anyone may own and send anything: its address
 * (g_free it) and pid (kill it with SIGTERM when done). Aborts the test on failure. */
char *test_bus_daemon_start(const char *dir, int *ret_pid);

/* Skipping and running: every test program uses these instead of g_test_skip() and
 * g_test_run() (tests/check-test-sources enforces it). A skip is never a pass: a program with
 * any skipped case exits 77, which ctest shows as skipped; with CI=true a skip fails the case,
 * so CI cannot pass by skipping. */
void con_test_skip(const char *why);
int con_test_run(void);
