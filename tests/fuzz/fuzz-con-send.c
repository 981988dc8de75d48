/* SPDX-License-Identifier: MIT */
/* con-send's own parsing, compiled from clients/con-send/con-send.c: the command line (options,
 * agent name, duration, the words of the message) and the task read from standard input, up to
 * the point where it would connect to the system bus (pointed at nothing here, so it stops
 * there). --scheduled reads the cron_task from a fixed config. Input: NUL-separated arguments,
 * then an empty argument, then standard input. Options that name another config are dropped.
 * Checks: only the exit codes con-send can give without a bus (0 for --help/--version, 2 usage,
 * 3 refused, 5 unavailable). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int con_send_main(int argc, char *argv[]);
#define main con_send_main
#include "../../clients/con-send/con-send.c"
#undef main

#include "fuzz-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ARGS 32

static const char CONFIG[] =
        "agents:\n"
        "  - name: concierge\n"
        "  - name: reporter\n"
        "    mode: cron\n"
        "    cron: \"0 7 * * *\"\n"
        "    cron_task: morning report\n";

static char *config_path;

static void setup(void) {
        fuzz_dir_put("con.yaml", CONFIG, strlen(CONFIG));
        if (asprintf(&config_path, "%s/con.yaml", fuzz_dir()) < 0)
                abort();
        /* No bus: con-send stops where it would connect. */
        setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/con-fuzz-no-bus", 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *argv[MAX_ARGS + 4];
        int argc = 0;

        if (size > 256 * 1024)
                return 0;
        if (!config_path)
                setup();

        _cleanup_free_ char *copy = malloc(size + 1);
        if (!copy)
                return 0;
        memcpy(copy, data, size);
        copy[size] = 0;

        argv[argc++] = (char *) "con-send";
        argv[argc++] = (char *) "--config";
        argv[argc++] = config_path;
        char *p = copy, *end = copy + size;
        const char *in = NULL;
        size_t in_len = 0;
        while (p < end) {
                size_t l = strlen(p);
                if (l == 0) {
                        in = p + 1;
                        in_len = (size_t) (end - in);
                        break;
                }
                if (argc >= MAX_ARGS)
                        return 0;
                if (startswith(p, "--c"))
                        return 0; /* another config: any file of this machine */
                argv[argc++] = p;
                p += l + 1;
        }
        argv[argc] = NULL;

        /* con-send's state, as at the start of the program. */
        arg_to = "concierge";
        arg_wait = true;
        arg_timeout_usec = 0;
        arg_json = false;
        arg_scheduled = false;
        arg_config = CON_CONFIG_PATH;
        optind = 0;

        FILE *saved_in = stdin, *saved_out = stdout, *saved_err = stderr;
        FILE *fin = in_len > 0 ? fmemopen((void *) in, in_len, "r") : fopen("/dev/null", "re");
        FILE *fnull = fopen("/dev/null", "we");
        if (!fin || !fnull)
                abort();
        stdin = fin;
        stdout = stderr = fnull;
        int r = con_send_main(argc, argv);
        stdin = saved_in;
        stdout = saved_out;
        stderr = saved_err;
        fclose(fin);
        fclose(fnull);

        if (r != EXIT_DONE && r != EXIT_USAGE && r != EXIT_REFUSED && r != EXIT_UNAVAILABLE)
                abort();
        return 0;
}
