/* SPDX-License-Identifier: MIT */
/* Contract files: the YAML parser with the original's schema and the native kinds. */
#include <stdint.h>
#include <stdlib.h>

#include "contract-check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Contract *c = NULL;
        ConErrorDetail e = {};
        if (size > 64 * 1024)
                return 0;
        if (contract_parse((const char *) data, size, "fuzz.yaml", &c, &e) >= 0) {
                for (size_t i = 0; i < c->n_checks; i++) {
                        char **argv = NULL;
                        if (check_kind_is_shell(c->checks[i].kind) && contract_shell_argv(&c->checks[i], "/x", &argv) >= 0)
                                for (char **a = argv; *a; a++)
                                        free(*a);
                        free(argv);
                }
                contract_free(c);
        } else
                free(con_error_detail_format(&e));
        con_error_detail_done(&e);
        return 0;
}
