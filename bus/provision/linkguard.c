/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "linkguard.h"
#include "macro.h"
#include "strv.h"

static const char * const settings[] = {
        "fs/protected_hardlinks",
        NULL,
};

/* "fs/protected_hardlinks" -> "fs.protected_hardlinks" */
static char *sysctl_name(const char *key) {
        char *n = strdup(key);

        if (n)
                for (char *p = n; *p; p++)
                        if (*p == '/')
                                *p = '.';
        return n;
}

/* 1 when the setting is 1, 0 when it is something else (*ret_value), negative errno when it
 * cannot be read. */
static int read_setting(const char *proc_sys, const char *key, char ret_value[16]) {
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = -EBADF;
        char text[64];
        ssize_t l;

        if (asprintf(&path, "%s/%s", proc_sys, key) < 0) {
                path = NULL;
                return -ENOMEM;
        }
        /* Not read_file_nofollow(): proc files have no size. */
        fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        l = read(fd, text, sizeof(text) - 1);
        if (l < 0)
                return -errno;
        text[l] = 0;
        text[strcspn(text, " \t\r\n")] = 0;
        snprintf(ret_value, 16, "%.15s", *text ? text : "empty");
        return streq(text, "1");
}

int con_linkguard_check(const char *proc_sys, char ***drift) {
        if (!proc_sys || !drift)
                return -EINVAL;
        for (const char * const *k = settings; *k; k++) {
                _cleanup_free_ char *name = sysctl_name(*k), *line = NULL;
                char value[16];
                int r;

                if (!name)
                        return -ENOMEM;
                r = read_setting(proc_sys, *k, value);
                if (r == 1)
                        continue;
                if (r < 0)
                        r = asprintf(&line, "kernel: %s cannot be read (%s); want 1", name, strerror(-r));
                else
                        r = asprintf(&line,
                                     "kernel: %s is %s, want 1 (without it an agent can hard-link any "
                                     "root-owned file it can read, such as a marker file of an earlier "
                                     "version)", name, value);
                if (r < 0 || strv_consume(drift, TAKE_PTR(line)) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static int write_setting(const char *proc_sys, const char *key) {
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = -EBADF;

        if (asprintf(&path, "%s/%s", proc_sys, key) < 0) {
                path = NULL;
                return -ENOMEM;
        }
        fd = open(path, O_WRONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        if (write(fd, "1\n", 2) != 2)
                return errno > 0 ? -errno : -EIO;
        return 0;
}

int con_linkguard_sync(const char *proc_sys, bool dry_run, char **ret_change, char **ret_error) {
        _cleanup_strv_free_ char **set = NULL;

        if (!proc_sys || !ret_change)
                return -EINVAL;
        *ret_change = NULL;
        for (const char * const *k = settings; *k; k++) {
                _cleanup_free_ char *name = sysctl_name(*k);
                char value[16];
                int r;

                if (!name)
                        return -ENOMEM;
                r = read_setting(proc_sys, *k, value);
                if (r == 1)
                        continue;
                if (r == 0 && !dry_run)
                        r = write_setting(proc_sys, *k);
                if (r < 0) {
                        if (ret_error &&
                            asprintf(ret_error, "cannot set %s to 1 in %s: %s (the halt and quarantine "
                                     "markers rely on it; set it with sysctl and run bootstrap again)",
                                     name, proc_sys, strerror(-r)) < 0)
                                *ret_error = NULL;
                        return r;
                }
                if (strv_extend(&set, name) < 0)
                        return -ENOMEM;
        }
        if (set) {
                _cleanup_free_ char *list = strv_join(set, ", ");
                if (!list || asprintf(ret_change, "set %s to 1 (kernel link protection)", list) < 0) {
                        *ret_change = NULL;
                        return -ENOMEM;
                }
        }
        return 0;
}
