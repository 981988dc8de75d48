/* SPDX-License-Identifier: MIT */
#pragma once

#include <cjson/cJSON.h>

/* The kind of a JSON value for error messages: "an object", "an array", "a string", "a number",
 * "a boolean", "null"; "nothing" for NULL (a missing member), "something else" otherwise. */
const char *con_json_kind(const cJSON *j);
