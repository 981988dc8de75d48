/* SPDX-License-Identifier: MIT */
/* Replays a checked-in corpus through a libFuzzer target, so every fuzz target also runs in the
 * normal test suite without clang. Arguments: files or directories (non-recursive). An empty
 * corpus is an error: a test that feeds nothing would pass vacuously. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
        FILE *f = fopen(path, "rbe");
        if (!f) {
                fprintf(stderr, "%s: cannot open: %m\n", path);
                return -1;
        }
        size_t cap = 4096, n = 0;
        uint8_t *buf = malloc(cap);
        for (;;) {
                if (!buf) {
                        fclose(f);
                        return -1;
                }
                n += fread(buf + n, 1, cap - n, f);
                if (n < cap)
                        break;
                cap *= 2;
                buf = realloc(buf, cap);
        }
        int bad = ferror(f);
        fclose(f);
        if (bad) {
                free(buf);
                fprintf(stderr, "%s: read error\n", path);
                return -1;
        }
        /* An exact-size copy, so ASan catches reads past the end of the input. */
        uint8_t *exact = malloc(n ? n : 1);
        if (!exact) {
                free(buf);
                return -1;
        }
        memcpy(exact, buf, n);
        free(buf);
        (void) LLVMFuzzerTestOneInput(exact, n);
        free(exact);
        return 0;
}

int main(int argc, char *argv[]) {
        unsigned count = 0;
        for (int i = 1; i < argc; i++) {
                struct stat st;
                if (stat(argv[i], &st) < 0) {
                        fprintf(stderr, "%s: %m\n", argv[i]);
                        return 1;
                }
                if (!S_ISDIR(st.st_mode)) {
                        if (run_file(argv[i]) < 0)
                                return 1;
                        count++;
                        continue;
                }
                struct dirent **entries = NULL;
                int n = scandir(argv[i], &entries, NULL, alphasort);
                if (n < 0) {
                        fprintf(stderr, "%s: %m\n", argv[i]);
                        return 1;
                }
                for (int j = 0; j < n; j++) {
                        if (entries[j]->d_name[0] != '.') {
                                char path[4096];
                                snprintf(path, sizeof path, "%s/%s", argv[i], entries[j]->d_name);
                                if (run_file(path) < 0)
                                        return 1;
                                count++;
                        }
                        free(entries[j]);
                }
                free(entries);
        }
        if (count == 0) {
                fprintf(stderr, "no corpus files given\n");
                return 1;
        }
        printf("%u inputs replayed\n", count);
        return 0;
}
