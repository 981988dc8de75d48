/* SPDX-License-Identifier: MIT */
/* The request_json of org.conspiracy.Models1.Complete (services/modeld/model-util.c): parse, and
 * when it parses, build both wire formats from it and map a response back. */
#include <stdint.h>
#include <stdlib.h>

#include "model-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        ModelRequest *req = NULL;
        char *err = NULL;
        if (model_request_parse((const char *) data, size, &req, &err) >= 0) {
                for (ConLlmWire w = 0; w < _CON_LLM_WIRE_MAX; w++) {
                        ConLlmParams p = { .model = "m", .max_tokens = req->max_tokens ? req->max_tokens : 100,
                                           .temperature = req->temperature > 1 ? 1 : req->temperature };
                        ConErrorDetail e = {};
                        char *body = NULL;
                        (void) con_llm_build_request(w, req->conv, &p, &body, &e);
                        free(body);
                        con_error_detail_done(&e);
                }
        }
        model_request_free(req);
        free(err);
        return 0;
}
