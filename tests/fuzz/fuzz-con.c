/* SPDX-License-Identifier: MIT */
/* `con`'s own handling of the files it reads, compiled from the clients/con sources and run through its
 * main(): `con audit [verify] [--json] [-n N]` over an audit log (a file root may not have
 * written), and `con policy show|query` over a con.yaml. Input: one byte (even: audit, odd:
 * policy), NUL-separated arguments, an empty argument, then the file (for audit, "\n#head\n"
 * starts audit.head). The file comes first on the command line (--dir / --config); arguments
 * that would name another file, and `policy check` (which reads this machine's doors), are
 * dropped. Checks: only the exit codes those verbs document. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../clients/con/con.h"
#include "audit.h"
#include "fuzz-util.h"
#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int con_client_main(int argc, char *argv[]); /* clients/con/con.c, main renamed */

#define MAX_ARGS 32
#define HEAD_SEP "\n#head\n"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *argv[MAX_ARGS + 5];
        int argc = 0;
        _cleanup_free_ char *path = NULL;

        if (size < 1 || size > 256 * 1024)
                return 0;
        bool policy = data[0] & 1;

        _cleanup_free_ char *copy = malloc(size);
        if (!copy)
                return 0;
        memcpy(copy, data + 1, size - 1);
        copy[size - 1] = 0;

        argv[argc++] = (char *) "con";
        argv[argc++] = (char *) (policy ? "policy" : "audit");
        argv[argc++] = (char *) (policy ? "--config" : "--dir");
        if (policy ? asprintf(&path, "%s/con.yaml", fuzz_dir()) < 0 : !(path = strdup(fuzz_dir())))
                return 0;
        argv[argc++] = path;

        char *p = copy, *end = copy + size - 1;
        const char *file = "";
        size_t file_len = 0;
        while (p < end) {
                size_t l = strlen(p);
                if (l == 0) {
                        file = p + 1;
                        file_len = (size_t) (end - file);
                        break;
                }
                if (argc >= MAX_ARGS)
                        return 0;
                if (startswith(p, "--c") || startswith(p, "--d") || startswith(p, "-c") || streq(p, "check"))
                        return 0; /* another file, or this machine's doors */
                argv[argc++] = p;
                p += l + 1;
        }
        argv[argc] = NULL;

        if (policy)
                fuzz_dir_put("con.yaml", file, file_len);
        else {
                const char *sep = memmem(file, file_len, HEAD_SEP, strlen(HEAD_SEP));
                size_t log_len = sep ? (size_t) (sep - file) + 1 : file_len;
                fuzz_dir_put(CON_AUDIT_LOG_NAME, file, log_len);
                if (sep)
                        fuzz_dir_put(CON_AUDIT_HEAD_NAME, sep + strlen(HEAD_SEP),
                                     file_len - (size_t) (sep - file) - strlen(HEAD_SEP));
                else
                        fuzz_dir_put(CON_AUDIT_HEAD_NAME, NULL, 0);
        }

        /* A fresh getopt: a cluster like "-hn" left half-read by the last run must not point
         * into its freed arguments (the verbs only set optind = 1, enough once per process). */
        optind = 0;
        (void) getopt(1, (char *[]) { (char *) "con", NULL }, "");

        FILE *saved_out = stdout, *saved_err = stderr;
        FILE *fnull = fopen("/dev/null", "we");
        if (!fnull)
                abort();
        stdout = stderr = fnull;
        int r = con_client_main(argc, argv);
        stdout = saved_out;
        stderr = saved_err;
        fclose(fnull);

        if (r != CON_EXIT_OK && r != CON_EXIT_FAILURE && r != CON_EXIT_USAGE && !(policy && r == CON_EXIT_CONFIG))
                abort();
        return 0;
}
