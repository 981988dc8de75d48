/* SPDX-License-Identifier: MIT */
#pragma once

#include <cjson/cJSON.h>

#include "macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(cJSON *, cJSON_Delete);
#define _cleanup_cjson_ _cleanup_(cJSON_Deletep)

/* The kind of a JSON value for error messages: "an object", "an array", "a string", "a number",
 * "a boolean", "null"; "nothing" for NULL (a missing member), "something else" otherwise. */
const char *con_json_kind(const cJSON *j);
